//! Go's `strconv` formatting, where upstream's error texts and outputs depend on it.

/// Code points Go's `strconv.IsPrint` rejects among assigned characters (Cc, Cf, Co, Cs,
/// Zl, Zp and Zs other than U+0020), plus the noncharacters. Unassigned code points are
/// otherwise treated as printable (Go would escape them; they depend on its Unicode version).
const NON_PRINTABLE: &[(u32, u32)] = &[
    (0x0000, 0x001F),
    (0x007F, 0x00A0),
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x1680, 0x1680),
    (0x180E, 0x180E),
    (0x2000, 0x200F),
    (0x2028, 0x202F),
    (0x205F, 0x2064),
    (0x2066, 0x206F),
    (0x3000, 0x3000),
    (0xD800, 0xF8FF),
    (0xFDD0, 0xFDEF),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
    (0xF0000, 0xFFFFD),
    (0x100000, 0x10FFFD),
];

fn is_print(c: char) -> bool {
    let u = c as u32;
    if u & 0xFFFE == 0xFFFE {
        return false; // U+xxFFFE / U+xxFFFF noncharacters
    }
    !NON_PRINTABLE.iter().any(|&(lo, hi)| (lo..=hi).contains(&u))
}

/// Go's `strconv.Quote` (what `%q` prints for a string): double quotes, `\"` and `\\`,
/// `\a \b \f \n \r \t \v`, `\xHH` for other control bytes and DEL, `\uHHHH`/`\UHHHHHHHH` for
/// other non-printable characters; printable characters verbatim.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_print(c) => out.push(c),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7F => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_like_go() {
        assert_eq!(quote("abc"), r#""abc""#);
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote("\t\n\r\u{7}\u{8}\u{b}\u{c}"), r#""\t\n\r\a\b\v\f""#);
        assert_eq!(quote("\u{0}\u{1f}\u{7f}"), r#""\x00\x1f\x7f""#);
        assert_eq!(
            quote("\u{80}\u{a0}\u{ad}é日"),
            "\"\\u0080\\u00a0\\u00adé日\""
        );
        assert_eq!(
            quote("\u{feff}\u{e0001}\u{1f600}"),
            "\"\\ufeff\\U000e0001\u{1f600}\""
        );
        assert_eq!(quote("\u{fffe}\u{10ffff}"), "\"\\ufffe\\U0010ffff\"");
        assert_eq!(quote(" "), r#"" ""#);
        assert_eq!(quote("\u{3000}"), r#""\u3000""#);
    }
}
