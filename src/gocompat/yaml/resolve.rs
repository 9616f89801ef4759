//! Scalar resolution with go-yaml v3 semantics: which YAML type a plain scalar's text denotes.
//!
//! The same rules decide both how input is decoded (a plain `10` is an int, `"10"` is a string)
//! and how strings must be quoted on output (a string that would read back as anything but a
//! string is double-quoted). The rules are go-yaml's, not the YAML 1.2 core schema: YAML 1.1
//! octals (`010`), `0b`/`0o` prefixes, `_` separators and a handful of timestamp layouts.

/// A resolved scalar value.
#[derive(Debug, Clone, PartialEq)]
pub enum ScalarValue {
    /// `null`, `~`, the empty plain scalar.
    Null,
    /// `true`/`false` in three spellings each.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// An integer above `i64::MAX` that fits `u64`.
    Uint(u64),
    /// A float (including `.inf`, `.nan`).
    Float(f64),
    /// A timestamp, already formatted the way Go's `time.RFC3339Nano` prints it.
    Timestamp(String),
    /// Anything else: the text is a string.
    Str(String),
}

/// A YAML short tag as go-yaml names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortTag {
    /// `!!null`
    Null,
    /// `!!bool`
    Bool,
    /// `!!int`
    Int,
    /// `!!float`
    Float,
    /// `!!timestamp`
    Timestamp,
    /// `!!str`
    Str,
    /// `!!binary`
    Binary,
    /// `!!merge` (`<<`)
    Merge,
    /// Any other explicit tag (kept verbatim by the decoder).
    Other,
}

impl ShortTag {
    /// The tag as go-yaml prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            ShortTag::Null => "!!null",
            ShortTag::Bool => "!!bool",
            ShortTag::Int => "!!int",
            ShortTag::Float => "!!float",
            ShortTag::Timestamp => "!!timestamp",
            ShortTag::Str => "!!str",
            ShortTag::Binary => "!!binary",
            ShortTag::Merge => "!!merge",
            ShortTag::Other => "!<tag>",
        }
    }

    pub fn parse(tag: &str) -> ShortTag {
        match tag {
            "!!null" => ShortTag::Null,
            "!!bool" => ShortTag::Bool,
            "!!int" => ShortTag::Int,
            "!!float" => ShortTag::Float,
            "!!timestamp" => ShortTag::Timestamp,
            "!!str" => ShortTag::Str,
            "!!binary" => ShortTag::Binary,
            "!!merge" => ShortTag::Merge,
            _ => ShortTag::Other,
        }
    }
}

/// Resolves the text of an untagged plain scalar (go-yaml's `resolve("", s)`).
pub fn resolve_plain(s: &str) -> (ShortTag, ScalarValue) {
    let Some(&first) = s.as_bytes().first() else {
        return (ShortTag::Null, ScalarValue::Null);
    };
    match s {
        "true" | "True" | "TRUE" => return (ShortTag::Bool, ScalarValue::Bool(true)),
        "false" | "False" | "FALSE" => return (ShortTag::Bool, ScalarValue::Bool(false)),
        "~" | "null" | "Null" | "NULL" => return (ShortTag::Null, ScalarValue::Null),
        ".nan" | ".NaN" | ".NAN" => return (ShortTag::Float, ScalarValue::Float(f64::NAN)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return (ShortTag::Float, ScalarValue::Float(f64::INFINITY));
        }
        "-.inf" | "-.Inf" | "-.INF" => {
            return (ShortTag::Float, ScalarValue::Float(f64::NEG_INFINITY));
        }
        _ => {}
    }
    let str_result = || (ShortTag::Str, ScalarValue::Str(s.to_string()));
    match first {
        b'.' => match parse_dot_float(s) {
            Some(f) => (ShortTag::Float, ScalarValue::Float(f)),
            None => str_result(),
        },
        b'0'..=b'9' | b'+' | b'-' => {
            if let Some(ts) = parse_timestamp(s) {
                return (ShortTag::Timestamp, ScalarValue::Timestamp(ts));
            }
            let plain: String = s.chars().filter(|&c| c != '_').collect();
            if let Some(i) = parse_go_int_base0(&plain) {
                return (ShortTag::Int, int_value(i));
            }
            if is_yaml_style_float(&plain)
                && let Some(f) = parse_finite_f64(&plain)
            {
                return (ShortTag::Float, ScalarValue::Float(f));
            }
            if let Some(rest) = plain.strip_prefix("0b") {
                if let Some(i) = parse_signed_radix(rest, 2) {
                    return (ShortTag::Int, int_value(i));
                }
            } else if let Some(rest) = plain.strip_prefix("-0b")
                && let Some(i) = parse_signed_radix(&format!("-{rest}"), 2)
                && i >= i64::MIN as i128
            {
                return (ShortTag::Int, int_value(i));
            }
            if let Some(rest) = plain.strip_prefix("0o") {
                if let Some(i) = parse_signed_radix(rest, 8) {
                    return (ShortTag::Int, int_value(i));
                }
            } else if let Some(rest) = plain.strip_prefix("-0o")
                && let Some(i) = parse_signed_radix(&format!("-{rest}"), 8)
                && i >= i64::MIN as i128
            {
                return (ShortTag::Int, int_value(i));
            }
            str_result()
        }
        _ => str_result(),
    }
}

fn int_value(i: i128) -> ScalarValue {
    if i > i64::MAX as i128 {
        ScalarValue::Uint(i as u64)
    } else {
        ScalarValue::Int(i as i64)
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`, falling back to `ParseUint(s, 0, 64)`; the input has
/// no underscores. Returns the value if either accepts it.
fn parse_go_int_base0(s: &str) -> Option<i128> {
    let (neg, body) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let signed = s.starts_with(['+', '-']);
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    let magnitude = parse_unsigned_digits(digits, radix)?;
    if neg {
        let v = -(magnitude as i128);
        (v >= i64::MIN as i128).then_some(v)
    } else if magnitude <= i64::MAX as u128 || (!signed && magnitude <= u64::MAX as u128) {
        Some(magnitude as i128)
    } else {
        None
    }
}

fn parse_unsigned_digits(digits: &str, radix: u32) -> Option<u128> {
    if digits.is_empty() {
        return None;
    }
    let mut v: u128 = 0;
    for c in digits.chars() {
        let d = c.to_digit(radix)? as u128;
        v = v.checked_mul(radix as u128)?.checked_add(d)?;
        if v > u64::MAX as u128 {
            return None;
        }
    }
    Some(v)
}

/// Go's `ParseInt(s, radix, 64)` then `ParseUint(s, radix, 64)` for an explicit radix.
fn parse_signed_radix(s: &str, radix: u32) -> Option<i128> {
    let (neg, body) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let signed = s.starts_with(['+', '-']);
    let m = parse_unsigned_digits(body, radix)?;
    if neg {
        let v = -(m as i128);
        (v >= i64::MIN as i128).then_some(v)
    } else if m <= i64::MAX as u128 || (!signed && m <= u64::MAX as u128) {
        Some(m as i128)
    } else {
        None
    }
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
fn is_yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            digits(&mut i);
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Parses a decimal float the way Go's `ParseFloat` accepts it, rejecting overflow to ±Inf
/// (Go reports a range error there, which makes go-yaml treat the text as a string).
fn parse_finite_f64(s: &str) -> Option<f64> {
    let f: f64 = s.parse().ok()?;
    f.is_finite().then_some(f)
}

/// Go's `ParseFloat` on text starting with `.`: `.5`, `.5_0`, `.5e3` (underscores only between
/// digits).
fn parse_dot_float(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = 1;
    let digit_run = |i: &mut usize| -> bool {
        if *i >= b.len() || !b[*i].is_ascii_digit() {
            return false;
        }
        *i += 1;
        loop {
            if *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            } else if *i + 1 < b.len() && b[*i] == b'_' && b[*i + 1].is_ascii_digit() {
                *i += 2;
            } else {
                return true;
            }
        }
    };
    if !digit_run(&mut i) {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if !digit_run(&mut i) {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    parse_finite_f64(&s.replace('_', ""))
}

/// True for YAML 1.1 booleans that go-yaml v3 quotes on output for compatibility.
pub fn is_old_bool(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "on"
            | "On"
            | "ON"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// YAML 1.1 sexagesimal floats (`1:20`): `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`.
pub fn is_base60_float(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(&c) = b.first() else { return false };
    if !(c == b'+' || c == b'-' || c.is_ascii_digit()) || !s.contains(':') {
        return false;
    }
    let mut i = 0;
    if b[i] == b'+' || b[i] == b'-' {
        i += 1;
    }
    if i >= b.len() || !b[i].is_ascii_digit() {
        return false;
    }
    i += 1;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    let mut groups = 0;
    while i < b.len() && b[i] == b':' {
        i += 1;
        // [0-5]?[0-9]: one digit, or two digits where the first is 0-5.
        if i + 1 < b.len()
            && (b'0'..=b'5').contains(&b[i])
            && b[i + 1].is_ascii_digit()
            && !(i + 2 < b.len() && b[i + 2].is_ascii_digit())
        {
            i += 2;
        } else if i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        } else {
            return false;
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    i == b.len()
}

/// Whether go-yaml's encoder may write string `s` as a plain scalar: it must read back as a
/// string and not be a YAML 1.1 bool or base-60 float.
pub fn can_use_plain(s: &str) -> bool {
    resolve_plain(s).0 == ShortTag::Str && !(is_base60_float(s) || is_old_bool(s))
}

// ---------------------------------------------------------------------------------------------
// Timestamps: the four layouts go-yaml tries with Go's time.Parse.

struct ParsedTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    /// Offset from UTC in seconds; `None` for no zone (UTC).
    offset: Option<i32>,
}

/// go-yaml's `parseTimestamp`: returns the value formatted as RFC 3339 with nanoseconds.
pub fn parse_timestamp(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let year_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if year_digits != 4 || year_digits == b.len() || b[4] != b'-' {
        return None;
    }
    for layout in [
        Layout::UpperT,
        Layout::LowerT,
        Layout::Space,
        Layout::DateOnly,
    ] {
        if let Some(t) = parse_layout(s, layout) {
            return Some(format_rfc3339_nano(&t));
        }
    }
    None
}

#[derive(Clone, Copy)]
enum Layout {
    UpperT,
    LowerT,
    Space,
    DateOnly,
}

/// Go's `getnum(s, false)`: one or two leading digits.
fn getnum(s: &str) -> Option<(u32, &str)> {
    let b = s.as_bytes();
    if b.is_empty() || !b[0].is_ascii_digit() {
        return None;
    }
    if b.len() > 1 && b[1].is_ascii_digit() {
        Some((((b[0] - b'0') * 10 + (b[1] - b'0')) as u32, &s[2..]))
    } else {
        Some(((b[0] - b'0') as u32, &s[1..]))
    }
}

fn expect(s: &str, lit: u8) -> Option<&str> {
    (s.as_bytes().first() == Some(&lit)).then(|| &s[1..])
}

fn parse_layout(s: &str, layout: Layout) -> Option<ParsedTime> {
    let year: i64 = s[..4].parse().ok()?;
    let rest = expect(&s[4..], b'-')?;
    let (month, rest) = getnum(rest)?;
    let rest = expect(rest, b'-')?;
    let (day, mut rest) = getnum(rest)?;
    let mut t = ParsedTime {
        year,
        month,
        day,
        hour: 0,
        minute: 0,
        second: 0,
        nanos: 0,
        offset: None,
    };
    if !matches!(layout, Layout::DateOnly) {
        rest = match layout {
            Layout::UpperT => expect(rest, b'T')?,
            Layout::LowerT => expect(rest, b't')?,
            _ => {
                // Go's skip(): a layout space matches one or more spaces (or end of input).
                if !rest.is_empty() && !rest.starts_with(' ') {
                    return None;
                }
                rest.trim_start_matches(' ')
            }
        };
        let (hour, r) = getnum(rest)?;
        let r = expect(r, b':')?;
        let (minute, r) = getnum(r)?;
        let r = expect(r, b':')?;
        let (second, mut r) = getnum(r)?;
        // Fractional seconds: `.` or `,` then any number of digits (up to 9 significant).
        let rb = r.as_bytes();
        if rb.len() >= 2 && (rb[0] == b'.' || rb[0] == b',') && rb[1].is_ascii_digit() {
            // Go 1.19 takes at most nine digits here; more leave text the zone cannot match.
            let n = 1 + rb[1..]
                .iter()
                .take(9)
                .take_while(|c| c.is_ascii_digit())
                .count();
            let digits = &r[1..n];
            let mut nanos: u32 = digits.parse().ok()?;
            for _ in digits.len()..9 {
                nanos *= 10;
            }
            t.nanos = nanos;
            r = &r[n..];
        }
        if !matches!(layout, Layout::Space) {
            // Z07:00: `Z` or ±hh:mm.
            if let Some(after) = r.strip_prefix('Z') {
                t.offset = Some(0);
                r = after;
            } else {
                let zb = r.as_bytes();
                if zb.len() < 6 || zb[3] != b':' {
                    return None;
                }
                let two = |x: &[u8]| -> Option<i32> {
                    (x[0].is_ascii_digit() && x[1].is_ascii_digit())
                        .then(|| ((x[0] - b'0') * 10 + (x[1] - b'0')) as i32)
                };
                let hh = two(&zb[1..3])?;
                let mm = two(&zb[4..6])?;
                let off = (hh * 60 + mm) * 60;
                t.offset = Some(match zb[0] {
                    b'+' => off,
                    b'-' => -off,
                    _ => return None,
                });
                r = &r[6..];
            }
        }
        if hour >= 24 || minute >= 60 || second >= 60 {
            return None;
        }
        t.hour = hour;
        t.minute = minute;
        t.second = second;
        rest = r;
    }
    if !rest.is_empty() || !(1..=12).contains(&t.month) {
        return None;
    }
    if t.day < 1 || t.day > days_in_month(t.month, t.year) {
        return None;
    }
    Some(t)
}

fn days_in_month(month: u32, year: i64) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn format_rfc3339_nano(t: &ParsedTime) -> String {
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    );
    if t.nanos != 0 {
        let frac = format!("{:09}", t.nanos);
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    match t.offset {
        None | Some(0) => out.push('Z'),
        Some(off) => {
            let sign = if off < 0 { '-' } else { '+' };
            let a = off.abs();
            out.push_str(&format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> ShortTag {
        resolve_plain(s).0
    }

    #[test]
    fn core_words() {
        assert_eq!(tag(""), ShortTag::Null);
        assert_eq!(tag("~"), ShortTag::Null);
        assert_eq!(tag("True"), ShortTag::Bool);
        assert_eq!(tag("tRUE"), ShortTag::Str);
        assert_eq!(tag(".NaN"), ShortTag::Float);
        assert_eq!(tag("-.Inf"), ShortTag::Float);
        assert_eq!(tag("<<"), ShortTag::Str);
        assert_eq!(tag("yes"), ShortTag::Str);
    }

    #[test]
    fn integers_in_go_yaml_spellings() {
        assert_eq!(resolve_plain("0xa").1, ScalarValue::Int(10));
        assert_eq!(resolve_plain("010").1, ScalarValue::Int(8));
        assert_eq!(resolve_plain("0o12").1, ScalarValue::Int(10));
        assert_eq!(resolve_plain("0b11").1, ScalarValue::Int(3));
        assert_eq!(resolve_plain("1_0").1, ScalarValue::Int(10));
        assert_eq!(resolve_plain("1__").1, ScalarValue::Int(1));
        assert_eq!(resolve_plain("-0x10").1, ScalarValue::Int(-16));
        assert_eq!(
            resolve_plain("18446744073709551615").1,
            ScalarValue::Uint(u64::MAX)
        );
        assert_eq!(tag("18446744073709551616"), ShortTag::Float);
        assert_eq!(tag("08"), ShortTag::Float);
        assert_eq!(tag("0x"), ShortTag::Str);
        assert_eq!(resolve_plain("0b-1").1, ScalarValue::Int(-1));
        assert_eq!(tag("+"), ShortTag::Str);
        assert_eq!(tag("-"), ShortTag::Str);
    }

    #[test]
    fn floats() {
        assert_eq!(resolve_plain("1.").1, ScalarValue::Float(1.0));
        assert_eq!(resolve_plain(".5").1, ScalarValue::Float(0.5));
        assert_eq!(resolve_plain(".5_0").1, ScalarValue::Float(0.5));
        assert_eq!(resolve_plain("1e3").1, ScalarValue::Float(1000.0));
        assert_eq!(tag("1e999"), ShortTag::Str);
        assert_eq!(tag("._5"), ShortTag::Str);
        assert_eq!(tag("1.5.6"), ShortTag::Str);
        assert_eq!(tag("2001:db8::1"), ShortTag::Str);
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            parse_timestamp("2001-12-14").as_deref(),
            Some("2001-12-14T00:00:00Z")
        );
        assert_eq!(
            parse_timestamp("2001-12-14t21:59:43.10-05:00").as_deref(),
            Some("2001-12-14T21:59:43.1-05:00")
        );
        assert_eq!(
            parse_timestamp("2001-12-14   21:59:43,5").as_deref(),
            Some("2001-12-14T21:59:43.5Z")
        );
        assert_eq!(
            parse_timestamp("2001-12-14T21:59:43.10+00:00").as_deref(),
            Some("2001-12-14T21:59:43.1Z")
        );
        assert_eq!(parse_timestamp("2001-02-30"), None);
        assert_eq!(
            parse_timestamp("2000-02-29").as_deref(),
            Some("2000-02-29T00:00:00Z")
        );
        assert_eq!(
            parse_timestamp("2001-1-2").as_deref(),
            Some("2001-01-02T00:00:00Z")
        );
        assert_eq!(parse_timestamp("2001-12-14T21:59:43"), None);
        assert_eq!(parse_timestamp("20011-12-14"), None);
    }

    #[test]
    fn quoting_predicates() {
        assert!(is_base60_float("1:20"));
        assert!(is_base60_float("-1_0:5:59.5"));
        assert!(!is_base60_float("1:60"));
        assert!(!is_base60_float("1:123"));
        assert!(!is_base60_float("2001:db8::1"));
        assert!(is_old_bool("Off"));
        assert!(!can_use_plain("yes"));
        assert!(!can_use_plain("123"));
        assert!(can_use_plain("<<"));
        assert!(can_use_plain("foo bar"));
    }
}
