//! A YAML emitter that writes exactly what Go's `gopkg.in/yaml.v3` `Marshal` writes (4-space
//! indent, unlimited width, Unicode output) for the node shapes a schematic can contain.
//!
//! Generic Rust YAML libraries indent sequences and pick quoting styles differently, and the
//! schematic ID is a hash of these bytes, so this module reproduces libyaml's emitter decisions
//! as go-yaml v3 modified them: the scalar analysis (which styles a string allows), the style
//! selection, the four scalar writers, and go-yaml's indentation rule ("round up to the next
//! multiple of the indent, except 2 past a sequence dash").

use super::resolve::can_use_plain;

/// go-yaml v3's default indentation.
const BEST_INDENT: i32 = 4;
/// libyaml's limit for a mapping key written inline (`key: value`) rather than as `? key`.
const MAX_SIMPLE_KEY_BYTES: usize = 128;

/// A node to emit.
#[derive(Debug, Clone)]
pub enum Out {
    /// A scalar and the style the encoder asks for.
    Scalar(String, Requested),
    /// A sequence (empty → `[]`).
    Seq(Vec<Out>),
    /// A mapping in the given order (empty → `{}`).
    Map(Vec<(Out, Out)>),
}

/// The scalar style go-yaml's encoder requests before the emitter's own checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// Plain, e.g. numbers, booleans, strings that read back as strings.
    Plain,
    /// Double-quoted: strings that would otherwise read back as another type.
    Double,
    /// Literal block (`|`): strings containing a line feed.
    Literal,
}

impl Out {
    /// A string, styled as go-yaml's `stringv` does.
    pub fn string(s: &str) -> Out {
        let style = if s.contains('\n') {
            Requested::Literal
        } else if can_use_plain(s) {
            Requested::Plain
        } else {
            Requested::Double
        };
        Out::Scalar(s.to_string(), style)
    }

    /// A scalar written plain when possible (numbers, booleans, `null`).
    pub fn plain(s: impl Into<String>) -> Out {
        Out::Scalar(s.into(), Requested::Plain)
    }
}

/// Emits `root` as a whole YAML document (always ending in a newline).
pub fn emit_document(root: &Out) -> String {
    emit_document_limited(root, usize::MAX).unwrap_or_default()
}

/// Emits `root` like [`emit_document`], or `None` as soon as the output would exceed
/// `limit` bytes (the output never grows past the limit, whatever the tree).
pub fn emit_document_limited(root: &Out, limit: usize) -> Option<String> {
    let mut e = Emitter {
        out: String::new(),
        limit,
        overflow: false,
        column: 0,
        indent: -1,
        indents: Vec::new(),
        whitespace: true,
        indention: true,
        flow_level: 0,
    };
    e.node(root, false, false);
    // Document end: an implicit end still terminates the last line.
    e.indent = -1;
    e.write_indent();
    (!e.overflow).then_some(e.out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

/// What libyaml's scalar analysis allows for one value.
#[derive(Debug, Default)]
struct Analysis {
    multiline: bool,
    flow_plain_allowed: bool,
    block_plain_allowed: bool,
    single_quoted_allowed: bool,
    block_allowed: bool,
}

fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_blankz(c: char) -> bool {
    is_blank(c) || is_break(c) || c == '\0'
}

/// libyaml's `is_printable`: what may appear unescaped (tab is handled by the caller).
fn is_printable(c: char) -> bool {
    let c = c as u32;
    c == 0x0A
        || (0x20..=0x7E).contains(&c)
        || (0xA0..=0xD7FF).contains(&c)
        || ((0xE000..=0xFFFD).contains(&c) && c != 0xFEFF)
}

fn analyze(value: &str) -> Analysis {
    if value.is_empty() {
        return Analysis {
            multiline: false,
            flow_plain_allowed: false,
            block_plain_allowed: true,
            single_quoted_allowed: true,
            block_allowed: false,
        };
    }
    let mut block_indicators = false;
    let mut flow_indicators = false;
    let mut line_breaks = false;
    let mut special_characters = false;
    let mut tab_characters = false;
    let mut leading_space = false;
    let mut leading_break = false;
    let mut trailing_space = false;
    let mut trailing_break = false;
    let mut break_space = false;
    let mut space_break = false;
    let mut previous_space = false;
    let mut previous_break = false;

    if value.starts_with("---") || value.starts_with("...") {
        block_indicators = true;
        flow_indicators = true;
    }
    let chars: Vec<char> = value.chars().collect();
    let mut preceded_by_whitespace = true;
    for (i, &c) in chars.iter().enumerate() {
        let followed_by_whitespace = i + 1 >= chars.len() || is_blank(chars[i + 1]);
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => {
                    flow_indicators = true;
                    block_indicators = true;
                }
                '?' | ':' => {
                    flow_indicators = true;
                    if followed_by_whitespace {
                        block_indicators = true;
                    }
                }
                '-' if followed_by_whitespace => {
                    flow_indicators = true;
                    block_indicators = true;
                }
                _ => {}
            }
        } else {
            match c {
                ',' | '?' | '[' | ']' | '{' | '}' => flow_indicators = true,
                ':' => {
                    flow_indicators = true;
                    if followed_by_whitespace {
                        block_indicators = true;
                    }
                }
                '#' if preceded_by_whitespace => {
                    flow_indicators = true;
                    block_indicators = true;
                }
                _ => {}
            }
        }
        if c == '\t' {
            tab_characters = true;
        } else if !is_printable(c) {
            special_characters = true;
        }
        let last = i + 1 == chars.len();
        if c == ' ' {
            leading_space |= i == 0;
            trailing_space |= last;
            break_space |= previous_break;
            previous_space = true;
            previous_break = false;
        } else if is_break(c) {
            line_breaks = true;
            leading_break |= i == 0;
            trailing_break |= last;
            space_break |= previous_space;
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_whitespace = is_blankz(c);
    }

    let mut a = Analysis {
        multiline: line_breaks,
        flow_plain_allowed: true,
        block_plain_allowed: true,
        single_quoted_allowed: true,
        block_allowed: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.flow_plain_allowed = false;
        a.block_plain_allowed = false;
    }
    if trailing_space {
        a.block_allowed = false;
    }
    if break_space {
        a.flow_plain_allowed = false;
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
    }
    if space_break || tab_characters || special_characters {
        a.flow_plain_allowed = false;
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
    }
    if space_break || special_characters {
        a.block_allowed = false;
    }
    if line_breaks {
        a.flow_plain_allowed = false;
        a.block_plain_allowed = false;
    }
    if flow_indicators {
        a.flow_plain_allowed = false;
    }
    if block_indicators {
        a.block_plain_allowed = false;
    }
    a
}

struct Emitter {
    out: String,
    /// The most bytes `out` may hold; past it `overflow` is set and nothing more is written.
    limit: usize,
    overflow: bool,
    /// Current column in characters.
    column: usize,
    indent: i32,
    indents: Vec<i32>,
    /// The last thing written was whitespace (so an indicator needs no space before it).
    whitespace: bool,
    /// Only indentation has been written on the current line so far.
    indention: bool,
    flow_level: u32,
}

impl Emitter {
    /// go-yaml v3's `yaml_emitter_increase_indent`; `after_dash` is true when the enclosing
    /// state is a block sequence item.
    fn increase_indent(&mut self, flow: bool, after_dash: bool) {
        self.indents.push(self.indent);
        if self.indent < 0 {
            self.indent = if flow { BEST_INDENT } else { 0 };
        } else if after_dash {
            self.indent += 2;
        } else {
            self.indent = BEST_INDENT * ((self.indent + BEST_INDENT) / BEST_INDENT);
        }
    }

    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().unwrap_or(-1);
    }

    /// Appends `c` unless that would pass the output limit.
    fn push(&mut self, c: char) {
        if self.overflow || self.out.len() + c.len_utf8() > self.limit {
            self.overflow = true;
        } else {
            self.out.push(c);
        }
    }

    fn put(&mut self, c: char) {
        self.push(c);
        self.column += 1;
    }

    fn put_break(&mut self) {
        self.push('\n');
        self.column = 0;
        self.indention = true;
    }

    fn write_break(&mut self, c: char) {
        if c == '\n' {
            self.put_break();
        } else {
            self.push(c);
            self.column = 0;
            self.indention = true;
        }
    }

    fn write_indent(&mut self) {
        let indent = self.indent.max(0) as usize;
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.put_break();
        }
        while self.column < indent {
            self.put(' ');
        }
        self.whitespace = true;
    }

    fn write_indicator(
        &mut self,
        indicator: &str,
        need_whitespace: bool,
        is_whitespace: bool,
        is_indention: bool,
    ) {
        if need_whitespace && !self.whitespace {
            self.put(' ');
        }
        for c in indicator.chars() {
            self.put(c);
        }
        self.whitespace = is_whitespace;
        self.indention = self.indention && is_indention;
    }

    fn node(&mut self, node: &Out, after_dash: bool, simple_key: bool) {
        match node {
            Out::Scalar(value, requested) => self.scalar(value, *requested, after_dash, simple_key),
            Out::Seq(items) if items.is_empty() || self.flow_level > 0 => self.empty_flow("[", "]"),
            Out::Map(entries) if entries.is_empty() || self.flow_level > 0 => {
                self.empty_flow("{", "}")
            }
            Out::Seq(items) => self.block_sequence(items, after_dash),
            Out::Map(entries) => self.block_mapping(entries, after_dash),
        }
    }

    fn empty_flow(&mut self, open: &str, close: &str) {
        self.write_indicator(open, true, true, false);
        self.increase_indent(true, false);
        self.pop_indent();
        if self.column == 0 {
            self.write_indent();
        }
        self.write_indicator(close, false, false, false);
    }

    fn block_sequence(&mut self, items: &[Out], after_dash: bool) {
        self.increase_indent(false, after_dash);
        for item in items {
            self.write_indent();
            self.write_indicator("-", true, false, true);
            self.node(item, true, false);
        }
        self.pop_indent();
    }

    fn block_mapping(&mut self, entries: &[(Out, Out)], after_dash: bool) {
        self.increase_indent(false, after_dash);
        for (key, value) in entries {
            self.write_indent();
            if is_simple_key(key) {
                self.node(key, false, true);
                self.write_indicator(":", false, false, false);
            } else {
                self.write_indicator("?", true, false, true);
                self.node(key, false, false);
                self.write_indent();
                self.write_indicator(":", true, false, true);
            }
            self.node(value, false, false);
        }
        self.pop_indent();
    }

    fn scalar(&mut self, value: &str, requested: Requested, after_dash: bool, simple_key: bool) {
        let a = analyze(value);
        let style = self.select_style(value, requested, &a, simple_key);
        self.increase_indent(true, after_dash);
        match style {
            Style::Plain => self.write_plain(value),
            Style::Single => self.write_single_quoted(value),
            Style::Double => self.write_double_quoted(value),
            Style::Literal => self.write_literal(value),
        }
        self.pop_indent();
    }

    fn select_style(
        &self,
        value: &str,
        requested: Requested,
        a: &Analysis,
        simple_key: bool,
    ) -> Style {
        let mut style = match requested {
            Requested::Plain => Style::Plain,
            Requested::Double => Style::Double,
            Requested::Literal => Style::Literal,
        };
        if simple_key && a.multiline {
            style = Style::Double;
        }
        if style == Style::Plain {
            let flow = self.flow_level > 0;
            if (flow && !a.flow_plain_allowed) || (!flow && !a.block_plain_allowed) {
                style = Style::Single;
            }
            if value.is_empty() && (flow || simple_key) {
                style = Style::Single;
            }
        }
        if style == Style::Single && !a.single_quoted_allowed {
            style = Style::Double;
        }
        if style == Style::Literal && (!a.block_allowed || self.flow_level > 0 || simple_key) {
            style = Style::Double;
        }
        style
    }

    fn write_plain(&mut self, value: &str) {
        if !value.is_empty() && !self.whitespace {
            self.put(' ');
        }
        let mut breaks = false;
        for c in value.chars() {
            if c == ' ' {
                self.put(c);
            } else if is_break(c) {
                if !breaks && c == '\n' {
                    self.put_break();
                }
                self.write_break(c);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.put(c);
                self.indention = false;
                breaks = false;
            }
        }
        if !value.is_empty() {
            self.whitespace = false;
        }
        self.indention = false;
    }

    fn write_single_quoted(&mut self, value: &str) {
        self.write_indicator("'", true, false, false);
        let mut breaks = false;
        for c in value.chars() {
            if c == ' ' {
                self.put(c);
            } else if is_break(c) {
                if !breaks && c == '\n' {
                    self.put_break();
                }
                self.write_break(c);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                if c == '\'' {
                    self.put('\'');
                }
                self.put(c);
                self.indention = false;
                breaks = false;
            }
        }
        self.write_indicator("'", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_double_quoted(&mut self, value: &str) {
        self.write_indicator("\"", true, false, false);
        // libyaml checks for a byte-order mark at the start of the *value* for every
        // character, so a value that starts with U+FEFF has every character escaped.
        let starts_with_bom = value.starts_with('\u{FEFF}');
        for c in value.chars() {
            if !is_printable(c) || starts_with_bom || is_break(c) || c == '"' || c == '\\' {
                self.put('\\');
                let code = c as u32;
                let short = match code {
                    0x00 => Some('0'),
                    0x07 => Some('a'),
                    0x08 => Some('b'),
                    0x09 => Some('t'),
                    0x0A => Some('n'),
                    0x0B => Some('v'),
                    0x0C => Some('f'),
                    0x0D => Some('r'),
                    0x1B => Some('e'),
                    0x22 => Some('"'),
                    0x5C => Some('\\'),
                    0x85 => Some('N'),
                    0xA0 => Some('_'),
                    0x2028 => Some('L'),
                    0x2029 => Some('P'),
                    _ => None,
                };
                match short {
                    Some(s) => self.put(s),
                    None => {
                        let (marker, width) = if code <= 0xFF {
                            ('x', 2)
                        } else if code <= 0xFFFF {
                            ('u', 4)
                        } else {
                            ('U', 8)
                        };
                        self.put(marker);
                        for k in (0..width).rev() {
                            let digit = (code >> (k * 4)) & 0xF;
                            self.put(
                                char::from_digit(digit, 16)
                                    .unwrap_or('0')
                                    .to_ascii_uppercase(),
                            );
                        }
                    }
                }
            } else {
                self.put(c);
            }
        }
        self.write_indicator("\"", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_literal(&mut self, value: &str) {
        self.write_indicator("|", true, false, false);
        // Block scalar hints: an explicit indentation when the text starts with a space or a
        // break, and the chomping indicator from how many line breaks end it.
        let first = value.chars().next();
        if first.is_some_and(|c| c == ' ' || is_break(c)) {
            self.write_indicator(&BEST_INDENT.to_string(), false, false, false);
        }
        let mut rev = value.chars().rev();
        let chomp = match rev.next() {
            None => Some("-"),
            Some(last) if !is_break(last) => Some("-"),
            Some(_) => match rev.next() {
                None => Some("+"),
                Some(prev) if is_break(prev) => Some("+"),
                Some(_) => None,
            },
        };
        if let Some(chomp) = chomp {
            self.write_indicator(chomp, false, false, false);
        }
        self.whitespace = true;
        let mut breaks = true;
        for c in value.chars() {
            if is_break(c) {
                self.write_break(c);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.put(c);
                self.indention = false;
                breaks = false;
            }
        }
    }
}

/// libyaml's `check_simple_key` for the shapes we emit.
fn is_simple_key(key: &Out) -> bool {
    match key {
        Out::Scalar(value, _) => !analyze(value).multiline && value.len() <= MAX_SIMPLE_KEY_BYTES,
        Out::Seq(items) => items.is_empty(),
        Out::Map(entries) => entries.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc_with(value: &str) -> String {
        emit_document(&Out::Map(vec![(Out::string("k"), Out::string(value))]))
    }

    #[test]
    fn quoting_matches_go_yaml() {
        assert_eq!(doc_with("foo"), "k: foo\n");
        assert_eq!(doc_with(""), "k: \"\"\n");
        assert_eq!(doc_with("true"), "k: \"true\"\n");
        assert_eq!(doc_with("yes"), "k: \"yes\"\n");
        assert_eq!(doc_with("-"), "k: '-'\n");
        assert_eq!(doc_with("a: b"), "k: 'a: b'\n");
        assert_eq!(doc_with("it's: x"), "k: 'it''s: x'\n");
        assert_eq!(doc_with("tab\there"), "k: \"tab\\there\"\n");
        assert_eq!(doc_with("emoji\u{1F600}"), "k: \"emoji\\U0001F600\"\n");
        assert_eq!(doc_with("\u{FEFF}ab"), "k: \"\\uFEFF\\x61\\x62\"\n");
        assert_eq!(doc_with("a\u{2028}b"), "k: 'a\u{2028}    b'\n");
    }

    #[test]
    fn literal_blocks_match_go_yaml() {
        assert_eq!(doc_with("x\n"), "k: |\n    x\n");
        assert_eq!(doc_with("x"), "k: x\n");
        assert_eq!(doc_with("x\ny"), "k: |-\n    x\n    y\n");
        assert_eq!(doc_with("x\n\n"), "k: |+\n    x\n\n");
        assert_eq!(doc_with("\nfoo\n"), "k: |4\n    foo\n");
        assert_eq!(doc_with("\n\nfoo"), "k: |4-\n\n    foo\n");
        assert_eq!(doc_with(" a\nb"), "k: |4-\n     a\n    b\n");
        assert_eq!(doc_with("a: 1 \nb: 2\n"), "k: \"a: 1 \\nb: 2\\n\"\n");
    }

    #[test]
    fn nesting_and_empty_collections() {
        let doc = Out::Map(vec![(
            Out::string("a"),
            Out::Map(vec![
                (
                    Out::string("list"),
                    Out::Seq(vec![
                        Out::string("x"),
                        Out::Seq(vec![Out::string("y"), Out::string("z")]),
                    ]),
                ),
                (
                    Out::string("maps"),
                    Out::Seq(vec![Out::Map(vec![
                        (Out::string("p"), Out::plain("1")),
                        (
                            Out::string("q"),
                            Out::Map(vec![(Out::string("r"), Out::Seq(vec![]))]),
                        ),
                    ])]),
                ),
                (Out::string("empty"), Out::Map(vec![])),
            ]),
        )]);
        assert_eq!(
            emit_document(&doc),
            "a:\n    list:\n        - x\n        - - \"y\"\n          - z\n    maps:\n        - p: 1\n          q:\n            r: []\n    empty: {}\n"
        );
    }

    #[test]
    fn output_limit_stops_early() {
        let doc = Out::Map(vec![(Out::string("k"), Out::string(&"x".repeat(100)))]);
        let full = emit_document(&doc);
        assert_eq!(emit_document_limited(&doc, full.len()), Some(full.clone()));
        assert_eq!(emit_document_limited(&doc, full.len() - 1), None);
        assert_eq!(emit_document_limited(&doc, 0), None);
    }

    #[test]
    fn long_and_multiline_keys_are_complex() {
        let long = "k".repeat(129);
        let doc = Out::Map(vec![(Out::string(&long), Out::plain("1"))]);
        assert_eq!(emit_document(&doc), format!("? {long}\n: 1\n"));
    }
}
