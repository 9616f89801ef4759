//! A YAML document parsed into a small node tree that keeps what go-yaml's decoder looks at:
//! the scalar's source text, whether it was quoted (or written as a block), its tag, and the
//! line it started on (for error messages). Aliases are expanded; only the first document of a
//! stream is read, like `yaml.Decoder.Decode` does.

use std::collections::HashMap;

use crate::gocompat::yaml::resolve::{ScalarValue, ShortTag, resolve_plain};

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// How a scalar was written in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    /// A plain (unquoted) scalar: its type is resolved from its text.
    Plain,
    /// Single- or double-quoted, literal or folded: always a string.
    Indicated,
}

/// One node of the parsed document.
#[derive(Debug, Clone)]
pub struct Node {
    /// What the node holds.
    pub kind: NodeKind,
    /// 1-based line where the node starts.
    pub line: usize,
}

/// The three YAML node kinds.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// A scalar with its text, style and short tag (`!!str`, `!!int`, …; `None` if untagged).
    Scalar {
        /// The scalar's value after YAML unescaping/folding.
        value: String,
        /// How the scalar was written.
        style: ScalarStyle,
        /// The explicit tag in short form, if any.
        tag: Option<String>,
    },
    /// A sequence of nodes.
    Sequence(Vec<Node>),
    /// A mapping as ordered key/value pairs (duplicates kept; the decoder reports them).
    Mapping(Vec<(Node, Node)>),
}

impl Node {
    /// True for a scalar written as a string on purpose (quoted, block, or tagged `!!str`).
    pub fn indicated_string(&self) -> bool {
        match &self.kind {
            NodeKind::Scalar { style, tag, .. } => match tag.as_deref() {
                Some("!!str") => true,
                None | Some("!") => *style == ScalarStyle::Indicated,
                _ => false,
            },
            _ => false,
        }
    }

    /// A short name of the node's YAML type, as go-yaml prints it in errors (`!!map`, …).
    pub fn describe(&self) -> String {
        match &self.kind {
            NodeKind::Sequence(_) => "!!seq".to_string(),
            NodeKind::Mapping(_) => "!!map".to_string(),
            NodeKind::Scalar { value, .. } => {
                let (tag, _) = resolve_node(self);
                let mut shown: String = value.chars().take(40).collect();
                if shown.len() < value.len() {
                    shown.push_str("...");
                }
                format!("{} `{}`", tag.as_str(), shown)
            }
        }
    }
}

/// Why a document could not be parsed as YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Human-readable description, including the position.
    pub message: String,
    /// True when the text is valid YAML but exceeds a resource limit (nesting depth, node
    /// count, or expanded size through aliases) rather than being malformed.
    pub limit: bool,
}

impl SyntaxError {
    fn limit(message: String) -> SyntaxError {
        SyntaxError {
            message,
            limit: true,
        }
    }
}

/// The result of reading the first document of a YAML stream.
#[derive(Debug)]
pub enum Document {
    /// The stream held no document at all (empty or only comments): go-yaml reports `EOF`.
    Empty,
    /// The root node of the first document.
    Root(Node),
}

/// Maximum nesting depth accepted, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 64;
/// Maximum number of nodes after alias expansion (a "billion laughs" guard).
pub const MAX_NODES: usize = 100_000;
/// Maximum total size in bytes of the scalar text (values and tags) after alias expansion:
/// an alias counts as many bytes as the node it repeats, checked *before* it is copied.
/// Without aliases the scalar text of a document is never longer than the document itself,
/// so this equals the document limit.
pub const MAX_EXPANDED_BYTES: usize = crate::schematic::MAX_SCHEMATIC_BYTES;

/// Parses the first YAML document of `input` into a [`Node`] tree.
///
/// Besides the YAML syntax itself, this refuses what libyaml (and so go-yaml) refuses but the
/// underlying Rust parser would let through: control characters in the stream, a `%YAML`
/// directive other than 1.1, and double-quoted escapes outside YAML 1.1's set (`\/`, lone
/// surrogates).
pub fn parse_first_document(input: &str) -> Result<Document, SyntaxError> {
    check_characters(input)?;
    check_yaml_directive(input)?;
    // libyaml treats CR, CRLF and NEL as line breaks like LF; the Rust parser only knows LF.
    let normalized;
    let input = if input.contains(['\r', '\u{85}']) {
        normalized = input.replace("\r\n", "\n").replace(['\r', '\u{85}'], "\n");
        normalized.as_str()
    } else {
        input
    };
    // LS and PS are line breaks to libyaml too, but, unlike LF, they stay in the scalar as
    // themselves. go-yaml writes them raw (`'a\u{2028}    b'`), so reading canonical YAML back
    // needs this: each becomes a sentinel followed by LF, and scalars map sentinels back.
    let sentinels = Sentinels::for_input(input)?;
    let marked;
    let input = match &sentinels {
        Some(s) => {
            marked = s.mark(input);
            marked.as_str()
        }
        None => input,
    };
    let mut parser = Parser::new_from_str(input);
    let mut builder = Builder {
        sentinels,
        ..Builder::default()
    };
    let document = parse_events(&mut parser, &mut builder)?;
    check_double_quoted_escapes(input, &builder.double_quoted_starts)?;
    Ok(document)
}

fn parse_events(
    parser: &mut Parser<std::str::Chars<'_>>,
    builder: &mut Builder,
) -> Result<Document, SyntaxError> {
    loop {
        let (event, mark) = parser.next_token().map_err(|e| SyntaxError {
            message: format!(
                "yaml: line {}: {}",
                e.marker().line(),
                e.info().trim_end_matches('.')
            ),
            limit: false,
        })?;
        match event {
            Event::StreamStart | Event::Nothing | Event::DocumentStart => {}
            Event::StreamEnd => return Ok(Document::Empty),
            Event::DocumentEnd => {
                return match builder.root.take() {
                    Some(root) => Ok(Document::Root(root)),
                    None => Ok(Document::Empty),
                };
            }
            other => builder.event(other, mark)?,
        }
    }
}

enum Open {
    Sequence {
        anchor: usize,
        line: usize,
        items: Vec<Node>,
    },
    Mapping {
        anchor: usize,
        line: usize,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
    },
}

/// An anchored node with its size, so an alias is charged before it is copied.
struct Anchored {
    node: Node,
    nodes: usize,
    bytes: usize,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    anchors: HashMap<usize, Anchored>,
    root: Option<Node>,
    /// Nodes so far, aliases counted at their expanded size.
    nodes: usize,
    /// Scalar bytes (values and tags) so far, aliases counted at their expanded size.
    bytes: usize,
    /// Nodes and bytes copied into the anchor table (nested anchors copy their subtrees
    /// again), bounded by the same limits separately.
    anchor_copies: (usize, usize),
    /// Character offsets of double-quoted scalars, checked against YAML 1.1's escapes.
    double_quoted_starts: Vec<usize>,
    /// Set when the input has raw LS/PS line breaks.
    sentinels: Option<Sentinels>,
}

/// Stand-ins for the raw line separators U+2028 (LS) and U+2029 (PS), which libyaml treats as
/// line breaks that a scalar keeps as they are (never folded into a space), while yaml-rust2
/// treats them as ordinary characters. Each becomes `sentinel + LF` for parsing; a scalar's
/// value then maps the sentinel and what the LF turned into back to the separator. Sentinels
/// are private-use characters absent from the input.
struct Sentinels {
    ls: char,
    ps: char,
}

impl Sentinels {
    fn for_input(input: &str) -> Result<Option<Sentinels>, SyntaxError> {
        if !input.contains(['\u{2028}', '\u{2029}']) {
            return Ok(None);
        }
        let used: std::collections::HashSet<char> = input
            .chars()
            .filter(|c| matches!(*c as u32, 0xE000..=0xF8FF | 0xF0000..=0x10FFFD))
            .collect();
        let mut free = (0xE000..=0xF8FF)
            .chain(0xF0000..=0x10FFFD)
            .filter_map(char::from_u32)
            .filter(|c| !used.contains(c));
        match (free.next(), free.next()) {
            (Some(ls), Some(ps)) => Ok(Some(Sentinels { ls, ps })),
            _ => Err(syntax(
                "raw U+2028/U+2029 line breaks cannot be read together with every \
                 private-use character",
            )),
        }
    }

    fn mark(&self, input: &str) -> String {
        let mut out = String::with_capacity(input.len() + 16);
        for c in input.chars() {
            match c {
                '\u{2028}' => {
                    out.push(self.ls);
                    out.push('\n');
                }
                '\u{2029}' => {
                    out.push(self.ps);
                    out.push('\n');
                }
                c => out.push(c),
            }
        }
        out
    }

    /// libyaml keeps the separator where the break was. In a literal block the LF that
    /// followed the sentinel is that break; in other styles the LF was folded into a space
    /// (dropped here) or, before empty lines, left out (the line feeds that follow are the
    /// empty lines, kept). A sentinel that ends the value was a break that ended the scalar.
    fn unmark(&self, value: String, literal: bool) -> String {
        if !value.contains([self.ls, self.ps]) {
            return value;
        }
        let mut out = String::with_capacity(value.len());
        let mut chars = value.chars().peekable();
        while let Some(c) = chars.next() {
            let separator = if c == self.ls {
                '\u{2028}'
            } else if c == self.ps {
                '\u{2029}'
            } else {
                out.push(c);
                continue;
            };
            match chars.peek() {
                None => {}
                Some('\n') if literal => {
                    chars.next();
                    out.push(separator);
                }
                Some(' ') if !literal => {
                    chars.next();
                    out.push(separator);
                }
                Some(_) => out.push(separator),
            }
        }
        out
    }
}

impl Builder {
    fn event(&mut self, event: Event, mark: Marker) -> Result<(), SyntaxError> {
        let line = mark.line();
        match event {
            Event::Scalar(value, style, anchor, tag) => {
                if style == TScalarStyle::DoubleQuoted {
                    self.double_quoted_starts.push(mark.index());
                }
                let value = match &self.sentinels {
                    Some(s) => s.unmark(value, style == TScalarStyle::Literal),
                    None => value,
                };
                let style = match style {
                    TScalarStyle::Plain => ScalarStyle::Plain,
                    _ => ScalarStyle::Indicated,
                };
                let tag = tag.map(short_tag);
                self.charge(0, value.len() + tag.as_ref().map_or(0, String::len))?;
                let node = Node {
                    kind: NodeKind::Scalar { value, style, tag },
                    line,
                };
                self.finish(node, anchor)
            }
            Event::Alias(id) => {
                let anchored = self.anchors.get(&id).ok_or_else(|| SyntaxError {
                    message: format!("yaml: line {line}: unknown anchor referenced"),
                    limit: false,
                })?;
                let (nodes, bytes) = (anchored.nodes, anchored.bytes);
                // Charge the whole expansion first: copying is what a hostile document
                // multiplies (issue 10: 40,000 aliases of an 800 KB string).
                self.charge(nodes.saturating_sub(1), bytes)?;
                let node = self.anchors[&id].node.clone();
                self.finish(node, 0)
            }
            Event::SequenceStart(anchor, _tag) => self.push(Open::Sequence {
                anchor,
                line,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _tag) => self.push(Open::Mapping {
                anchor,
                line,
                entries: Vec::new(),
                pending_key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let open = self.stack.pop().ok_or_else(|| SyntaxError {
                    message: "yaml: unbalanced collection end".to_string(),
                    limit: false,
                })?;
                let (node, anchor) = match open {
                    Open::Sequence {
                        anchor,
                        line,
                        items,
                    } => (
                        Node {
                            kind: NodeKind::Sequence(items),
                            line,
                        },
                        anchor,
                    ),
                    Open::Mapping {
                        anchor,
                        line,
                        entries,
                        ..
                    } => (
                        Node {
                            kind: NodeKind::Mapping(entries),
                            line,
                        },
                        anchor,
                    ),
                };
                self.finish(node, anchor)
            }
            _ => Ok(()),
        }
    }

    fn push(&mut self, open: Open) -> Result<(), SyntaxError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(SyntaxError::limit(format!(
                "yaml: document nested deeper than {MAX_DEPTH} levels"
            )));
        }
        self.stack.push(open);
        Ok(())
    }

    /// Adds `nodes` nodes and `bytes` scalar bytes to the document's expanded size, refusing
    /// it once a limit is passed.
    fn charge(&mut self, nodes: usize, bytes: usize) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > MAX_NODES {
            return Err(SyntaxError::limit(format!(
                "yaml: document contains excessive aliasing or too many nodes (limit {MAX_NODES})"
            )));
        }
        if self.bytes > MAX_EXPANDED_BYTES {
            return Err(SyntaxError::limit(format!(
                "yaml: document expands to more than {MAX_EXPANDED_BYTES} bytes of text \
                 (aliases count as often as they are used)"
            )));
        }
        Ok(())
    }

    fn finish(&mut self, node: Node, anchor: usize) -> Result<(), SyntaxError> {
        self.charge(1, 0)?;
        if anchor != 0 {
            let (nodes, bytes) = size_of(&node);
            let copied = (
                self.anchor_copies.0.saturating_add(nodes),
                self.anchor_copies.1.saturating_add(bytes),
            );
            if copied.0 > MAX_NODES || copied.1 > MAX_EXPANDED_BYTES {
                return Err(SyntaxError::limit(
                    "yaml: document contains excessive aliasing (anchored nodes too large)"
                        .to_string(),
                ));
            }
            self.anchor_copies = copied;
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    nodes,
                    bytes,
                },
            );
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Sequence { items, .. }) => items.push(node),
            Some(Open::Mapping {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
        Ok(())
    }
}

fn syntax(message: &str) -> SyntaxError {
    SyntaxError {
        message: format!("yaml: {message}"),
        limit: false,
    }
}

/// libyaml's reader accepts only these characters in a stream.
fn check_characters(input: &str) -> Result<(), SyntaxError> {
    let allowed = |c: char| {
        matches!(c as u32,
            0x09 | 0x0A | 0x0D | 0x20..=0x7E | 0x85 | 0xA0..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
    };
    if input.chars().all(allowed) {
        Ok(())
    } else {
        Err(syntax("control characters are not allowed"))
    }
}

/// go-yaml accepts only `%YAML 1.1` (or no directive).
fn check_yaml_directive(input: &str) -> Result<(), SyntaxError> {
    for line in input.lines() {
        let trimmed = line.trim_end();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some(rest) = trimmed.strip_prefix("%YAML") else {
            if trimmed.starts_with('%') {
                continue;
            }
            break;
        };
        let version = rest.split('#').next().unwrap_or_default().trim();
        if version != "1.1" {
            return Err(syntax("found incompatible YAML document"));
        }
    }
    Ok(())
}

/// Re-reads each double-quoted scalar from the source and refuses escapes YAML 1.1 lacks.
fn check_double_quoted_escapes(input: &str, starts: &[usize]) -> Result<(), SyntaxError> {
    if starts.is_empty() {
        return Ok(());
    }
    let chars: Vec<char> = input.chars().collect();
    for &start in starts {
        let mut i = start;
        if chars.get(i) != Some(&'"') {
            continue;
        }
        i += 1;
        while let Some(&c) = chars.get(i) {
            match c {
                '"' => break,
                '\\' => {
                    let Some(&e) = chars.get(i + 1) else { break };
                    i += 2;
                    let hex_len = match e {
                        'x' => 2,
                        'u' => 4,
                        'U' => 8,
                        '0' | 'a' | 'b' | 't' | '\t' | 'n' | 'v' | 'f' | 'r' | 'e' | ' ' | '"'
                        | '\'' | '\\' | 'N' | '_' | 'L' | 'P' => 0,
                        '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => 0,
                        _ => return Err(syntax("found unknown escape character")),
                    };
                    if hex_len > 0 {
                        let digits: String = chars.iter().skip(i).take(hex_len).collect();
                        let value = u32::from_str_radix(&digits, 16)
                            .map_err(|_| syntax("did not find expected hexdecimal number"))?;
                        if (0xD800..=0xDFFF).contains(&value) || value > 0x10FFFF {
                            return Err(syntax("found invalid Unicode character escape code"));
                        }
                        i += hex_len;
                    }
                }
                _ => i += 1,
            }
        }
    }
    Ok(())
}

/// The number of nodes and the scalar bytes (values and tags) of a subtree, as
/// [`Builder::charge`] counts them.
fn size_of(node: &Node) -> (usize, usize) {
    let add = |(n1, b1): (usize, usize), (n2, b2): (usize, usize)| {
        (n1.saturating_add(n2), b1.saturating_add(b2))
    };
    match &node.kind {
        NodeKind::Scalar { value, tag, .. } => {
            (1, value.len() + tag.as_ref().map_or(0, String::len))
        }
        NodeKind::Sequence(items) => items.iter().map(size_of).fold((1, 0), add),
        NodeKind::Mapping(entries) => entries
            .iter()
            .map(|(k, v)| add(size_of(k), size_of(v)))
            .fold((1, 0), add),
    }
}

/// Converts a parsed tag into go-yaml's short form (`tag:yaml.org,2002:int` → `!!int`).
fn short_tag(tag: Tag) -> String {
    const LONG: &str = "tag:yaml.org,2002:";
    if tag.handle == "!!" || tag.handle == LONG {
        format!("!!{}", tag.suffix)
    } else if let Some(rest) = tag.suffix.strip_prefix(LONG) {
        format!("!!{rest}")
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

/// Why an explicitly tagged scalar could not be decoded (`!!int abc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagMismatch {
    /// The message, worded like go-yaml's.
    pub message: String,
}

/// Resolves a scalar node the way go-yaml's decoder does, honouring quoting and explicit tags.
pub fn resolve_node(node: &Node) -> (ShortTag, ScalarValue) {
    match resolve_node_checked(node) {
        Ok(r) => r,
        Err(_) => (
            ShortTag::Str,
            ScalarValue::Str(scalar_text(node).to_string()),
        ),
    }
}

/// Like [`resolve_node`] but reports a value that contradicts its explicit tag.
pub fn resolve_node_checked(node: &Node) -> Result<(ShortTag, ScalarValue), TagMismatch> {
    let NodeKind::Scalar { value, tag, .. } = &node.kind else {
        return Ok((ShortTag::Other, ScalarValue::Str(String::new())));
    };
    if node.indicated_string() {
        return Ok((ShortTag::Str, ScalarValue::Str(value.clone())));
    }
    match tag.as_deref() {
        None | Some("!") => Ok(resolve_plain(value)),
        Some(t) => {
            let wanted = ShortTag::parse(t);
            match wanted {
                ShortTag::Null
                | ShortTag::Bool
                | ShortTag::Int
                | ShortTag::Float
                | ShortTag::Timestamp => {
                    let (got, v) = resolve_plain(value);
                    if got == wanted {
                        return Ok((got, v));
                    }
                    if wanted == ShortTag::Float {
                        match v {
                            ScalarValue::Int(i) => {
                                return Ok((ShortTag::Float, ScalarValue::Float(i as f64)));
                            }
                            ScalarValue::Uint(u) => {
                                return Ok((ShortTag::Float, ScalarValue::Float(u as f64)));
                            }
                            _ => {}
                        }
                    }
                    Err(TagMismatch {
                        message: format!(
                            "cannot decode {} `{}` as a {}",
                            got.as_str(),
                            value,
                            wanted.as_str()
                        ),
                    })
                }
                ShortTag::Binary => Ok((ShortTag::Binary, ScalarValue::Str(value.clone()))),
                _ => Ok((ShortTag::Other, ScalarValue::Str(value.clone()))),
            }
        }
    }
}

fn scalar_text(node: &Node) -> &str {
    match &node.kind {
        NodeKind::Scalar { value, .. } => value,
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(input: &str) -> Node {
        match parse_first_document(input).unwrap() {
            Document::Root(n) => n,
            Document::Empty => panic!("empty"),
        }
    }

    #[test]
    fn empty_and_comment_only_streams_are_empty() {
        assert!(matches!(parse_first_document("").unwrap(), Document::Empty));
        assert!(matches!(
            parse_first_document("# just a comment\n").unwrap(),
            Document::Empty
        ));
    }

    #[test]
    fn only_the_first_document_is_read() {
        let n = root("a: 1\n---\nb: [\n");
        let NodeKind::Mapping(entries) = n.kind else {
            panic!()
        };
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn aliases_are_expanded_and_styles_kept() {
        let n = root("a: &x 'q'\nb: *x\nc: !!str 5\n");
        let NodeKind::Mapping(entries) = n.kind else {
            panic!()
        };
        assert!(entries[1].1.indicated_string());
        assert!(entries[2].1.indicated_string());
        assert_eq!(entries[2].1.line, 3);
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let e = parse_first_document("a: [1, 2\nb: c\n").unwrap_err();
        assert!(e.message.starts_with("yaml: line "), "{}", e.message);
    }

    #[test]
    fn libyaml_refusals() {
        assert!(parse_first_document("a: \"x\\/y\"\n").is_err());
        assert!(parse_first_document("a: \"\\ud83d\\ude00\"\n").is_err());
        assert!(parse_first_document("a: [\"ok\\x41\", \"\\/\"]\n").is_err());
        assert!(parse_first_document("a: \"ok \\x41 \\u00e9 \\U0001F600\"\n").is_ok());
        assert!(parse_first_document("%YAML 1.2\n---\na: 1\n").is_err());
        assert!(parse_first_document("%YAML 1.1\n---\na: 1\n").is_ok());
        assert!(parse_first_document("a: \"x\u{7f}\"\n").is_err());
    }

    fn scalar(input: &str) -> String {
        let NodeKind::Mapping(entries) = root(input).kind else {
            panic!("not a mapping")
        };
        match &entries[0].1.kind {
            NodeKind::Scalar { value, .. } => value.clone(),
            NodeKind::Sequence(items) => match &items[0].kind {
                NodeKind::Scalar { value, .. } => value.clone(),
                _ => panic!("not a scalar"),
            },
            _ => panic!("not a scalar"),
        }
    }

    #[test]
    fn raw_line_separators_are_line_breaks_kept_in_the_value() {
        // What go-yaml writes for "a\u{2028}b" in each style, read as libyaml does.
        assert_eq!(scalar("k: 'a\u{2028}    b'\n"), "a\u{2028}b");
        assert_eq!(scalar("k:\n    - 'a\u{2029}      b'\n"), "a\u{2029}b");
        assert_eq!(scalar("k: |-\n    a\u{2028}    b\n"), "a\u{2028}b");
        assert_eq!(scalar("k: |\n    a\u{2028}    \tb\n"), "a\u{2028}\tb\n");
        assert_eq!(scalar("k: 'a\u{2028}\n\n    b'\n"), "a\u{2028}\n\nb");
        assert_eq!(scalar("k: a\u{2028}  b\n"), "a\u{2028}b");
        // A plain scalar ends at the break; the next line is the next key.
        let NodeKind::Mapping(entries) = root("a: x\u{2028}b: y\n").kind else {
            panic!()
        };
        assert_eq!(entries.len(), 2);
        // Escaped forms are unchanged, and sentinels never leak.
        assert_eq!(scalar("k: \"a\\Lb\"\n"), "a\u{2028}b");
        assert_eq!(
            scalar("k: 'a\u{2028}    \u{E000}b'\n"),
            "a\u{2028}\u{E000}b"
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let input = "[".repeat(200);
        assert!(parse_first_document(&input).is_err());
    }
}
