//! Go's `encoding/json` output, which upstream's API answers are written with.

use serde::Serialize;

/// `value` encoded like Go's `json.NewEncoder(w).Encode(value)`: compact, `<`, `>`, `&`, U+2028
/// and U+2029 escaped as `\u00XX`/`\u20XX`, and a trailing newline.
pub fn marshal<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let text = serde_json::to_string(value)?;
    let mut body = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '<' => body.push_str("\\u003c"),
            '>' => body.push_str("\\u003e"),
            '&' => body.push_str("\\u0026"),
            '\u{2028}' => body.push_str("\\u2028"),
            '\u{2029}' => body.push_str("\\u2029"),
            c => body.push(c),
        }
    }
    body.push('\n');
    Ok(body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_like_go() {
        let out = super::marshal(&serde_json::json!({"a": "<b>&\u{2028}\u{2029}é"})).unwrap();
        assert_eq!(out, "{\"a\":\"\\u003cb\\u003e\\u0026\\u2028\\u2029é\"}\n");
    }
}
