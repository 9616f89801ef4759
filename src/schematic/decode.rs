//! Decoding a parsed YAML/JSON document into a [`Schematic`] with go-yaml v3's rules
//! (`KnownFields(true)`): unknown fields and type mismatches are errors, any scalar is accepted
//! for a string field and kept as written, `null` leaves a field at its zero value (and is
//! dropped from string lists), integers accept YAML 1.1 spellings, merge keys and aliases work.
//! Every problem is reported with its line and the path of the offending field.

use std::collections::{HashMap, HashSet};

use super::model::{AnyValue, Bootloader, Customization, MetaValue, Overlay, Schematic};
use super::tree::{Node, NodeKind, resolve_node_checked};
use crate::gocompat::yaml::resolve::{ScalarValue, ShortTag};

/// One decoding problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// 1-based source line.
    pub line: usize,
    /// Dotted path of the offending field, e.g. `customization.meta[0].key`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(f, "line {}: {}: {}", self.line, self.path, self.message)
        }
    }
}

/// Decodes the root node of a schematic document. All problems are collected, not just the
/// first, like go-yaml does.
pub fn decode_schematic(root: &Node) -> Result<Schematic, Vec<FieldError>> {
    let mut d = Decoder::default();
    let mut s = Schematic::default();
    d.structure(
        root,
        "",
        "schematic",
        &mut |d, key, value, path| match key {
            "owner" => d.string(value, path, &mut s.owner),
            "overlay" => d.overlay(value, path, &mut s.overlay),
            "customization" => d.customization(value, path, &mut s.customization),
            _ => false,
        },
    );
    if d.suppressed > 0 {
        d.errors.push(FieldError {
            line: 0,
            path: String::new(),
            message: format!("{} more errors not shown", d.suppressed),
        });
    }
    if d.errors.is_empty() {
        Ok(s)
    } else {
        Err(d.errors)
    }
}

/// Decodes a standalone `map[string]any` document (the web UI's overlay options field) the
/// way go-yaml fills one: the same rules as `overlay.options` inside a schematic.
pub fn decode_options(root: &Node) -> Result<Vec<(String, AnyValue)>, Vec<FieldError>> {
    let mut d = Decoder::default();
    let mut out = Vec::new();
    d.options(root, "", &mut out);
    if d.errors.is_empty() {
        Ok(out)
    } else {
        Err(d.errors)
    }
}

/// At most this many field errors are reported (a hostile document can have millions of
/// duplicate keys); the rest are counted.
const MAX_FIELD_ERRORS: usize = 100;

#[derive(Default)]
struct Decoder {
    errors: Vec<FieldError>,
    suppressed: usize,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn is_null(node: &Node) -> bool {
    matches!(node.kind, NodeKind::Scalar { .. })
        && matches!(resolve_node_checked(node), Ok((ShortTag::Null, _)))
}

fn is_merge_key(node: &Node) -> bool {
    match &node.kind {
        NodeKind::Scalar { value, tag, .. } => {
            value == "<<"
                && !node.indicated_string()
                && matches!(tag.as_deref(), None | Some("!") | Some("!!merge"))
        }
        _ => false,
    }
}

fn scalar_value(node: &Node) -> Option<&str> {
    match &node.kind {
        NodeKind::Scalar { value, .. } => Some(value),
        _ => None,
    }
}

/// Flattens a mapping's merge key (`<<`): the mapping's own entries first, then entries of the
/// merged mappings whose keys are not yet present (earlier merge sources win), as go-yaml does.
fn merged_entries<'a>(
    entries: &'a [(Node, Node)],
    errors: &mut Vec<FieldError>,
    path: &str,
) -> Vec<&'a (Node, Node)> {
    let mut own: Vec<&(Node, Node)> = Vec::new();
    let mut merge: Option<&Node> = None;
    for entry in entries {
        if is_merge_key(&entry.0) {
            merge = Some(&entry.1);
        } else {
            own.push(entry);
        }
    }
    let Some(merge) = merge else { return own };
    let sources: Vec<&Node> = match &merge.kind {
        NodeKind::Mapping(_) => vec![merge],
        NodeKind::Sequence(items) => items.iter().collect(),
        NodeKind::Scalar { .. } => vec![merge],
    };
    let mut seen: HashSet<&str> = own.iter().filter_map(|(k, _)| scalar_value(k)).collect();
    for source in sources {
        let NodeKind::Mapping(src_entries) = &source.kind else {
            errors.push(FieldError {
                line: source.line,
                path: path.to_string(),
                message: "map merge requires map or sequence of maps as the value".to_string(),
            });
            continue;
        };
        for entry in merged_entries(src_entries, errors, path) {
            let key = scalar_value(&entry.0).unwrap_or_default();
            if seen.insert(key) {
                own.push(entry);
            }
        }
    }
    own
}

impl Decoder {
    fn error(&mut self, node: &Node, path: &str, message: impl Into<String>) {
        if self.errors.len() >= MAX_FIELD_ERRORS {
            self.suppressed += 1;
            return;
        }
        self.errors.push(FieldError {
            line: node.line,
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn mismatch(&mut self, node: &Node, path: &str, want: &str) {
        let msg = format!("cannot unmarshal {} into {want}", node.describe());
        self.error(node, path, msg);
    }

    /// Reports keys that appear twice in one mapping (go-yaml's unique-keys check: same kind
    /// and same text, so any two collection keys clash), in go-yaml's order: for each key,
    /// every later key equal to it. Linear in the number of keys plus reported errors.
    fn check_duplicates(&mut self, entries: &[(Node, Node)], path: &str) -> bool {
        fn identity(node: &Node) -> (u8, &str) {
            match &node.kind {
                NodeKind::Scalar { value, .. } => (0, value.as_str()),
                NodeKind::Sequence(_) => (1, ""),
                NodeKind::Mapping(_) => (2, ""),
            }
        }
        let mut groups: HashMap<(u8, &str), Vec<usize>> = HashMap::new();
        // Where each key sits in its group.
        let mut rank = Vec::with_capacity(entries.len());
        for (i, (k, _)) in entries.iter().enumerate() {
            let group = groups.entry(identity(k)).or_default();
            rank.push(group.len());
            group.push(i);
        }
        if groups.len() == entries.len() {
            return true;
        }
        for (i, (ki, _)) in entries.iter().enumerate() {
            let group = &groups[&identity(ki)];
            let at = rank[i];
            for &j in &group[at + 1..] {
                if self.errors.len() >= MAX_FIELD_ERRORS {
                    self.suppressed += group.len() - at - 1;
                    break;
                }
                let kj = &entries[j].0;
                let name = scalar_value(kj).unwrap_or_default();
                let msg = format!("mapping key {name:?} already defined at line {}", ki.line);
                self.error(kj, path, msg);
            }
        }
        false
    }

    /// Decodes a mapping into a struct: `field` returns false for names the struct lacks.
    fn structure(
        &mut self,
        node: &Node,
        path: &str,
        type_name: &str,
        field: &mut dyn FnMut(&mut Decoder, &str, &Node, &str) -> bool,
    ) {
        match &node.kind {
            NodeKind::Mapping(entries) => {
                if !self.check_duplicates(entries, path) {
                    return;
                }
                let mut errors = Vec::new();
                let entries = merged_entries(entries, &mut errors, path);
                self.errors.extend(errors);
                for (key, value) in entries {
                    if is_null(key) {
                        continue;
                    }
                    let Some(name) = scalar_value(key) else {
                        self.mismatch(key, path, "string");
                        continue;
                    };
                    let name = name.to_string();
                    let sub = join(path, &name);
                    if !field(self, &name, value, &sub) {
                        let msg = format!("field {name} not found in type {type_name}");
                        self.error(key, &sub, msg);
                    }
                }
            }
            _ if is_null(node) => {}
            _ => self.mismatch(node, path, type_name),
        }
    }

    fn string(&mut self, node: &Node, path: &str, out: &mut String) -> bool {
        match &node.kind {
            NodeKind::Scalar { value, tag, .. } => match resolve_node_checked(node) {
                Ok((ShortTag::Null, _)) => {}
                Ok((ShortTag::Binary, _)) if tag.as_deref() == Some("!!binary") => {
                    match decode_base64(value) {
                        Some(s) => *out = s,
                        None => {
                            self.error(node, path, "!!binary value contains invalid base64 data")
                        }
                    }
                }
                Ok(_) => *out = value.clone(),
                Err(e) => self.error(node, path, e.message),
            },
            _ => self.mismatch(node, path, "string"),
        }
        true
    }

    fn string_list(&mut self, node: &Node, path: &str, out: &mut Vec<String>) -> bool {
        match &node.kind {
            NodeKind::Sequence(items) => {
                out.clear();
                for (i, item) in items.iter().enumerate() {
                    if is_null(item) {
                        continue;
                    }
                    let mut s = String::new();
                    self.string(item, &format!("{path}[{i}]"), &mut s);
                    if matches!(item.kind, NodeKind::Scalar { .. }) {
                        out.push(s);
                    }
                }
            }
            _ if is_null(node) => out.clear(),
            _ => self.mismatch(node, path, "[]string"),
        }
        true
    }

    fn unsigned(&mut self, node: &Node, path: &str, max: u64, type_name: &str) -> Option<u64> {
        if !matches!(node.kind, NodeKind::Scalar { .. }) {
            self.mismatch(node, path, type_name);
            return None;
        }
        let resolved = match resolve_node_checked(node) {
            Ok((ShortTag::Null, _)) => return None,
            Ok((_, r)) => r,
            Err(e) => {
                self.error(node, path, e.message);
                return None;
            }
        };
        let value = match resolved {
            ScalarValue::Int(i) if i >= 0 => Some(i as u64),
            ScalarValue::Uint(u) => Some(u),
            ScalarValue::Float(f) if f <= u64::MAX as f64 => Some(go_amd64_float_to_u64(f)),
            _ => None,
        };
        match value {
            Some(v) if v <= max => Some(v),
            _ => {
                self.mismatch(node, path, type_name);
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, path: &str, out: &mut bool) -> bool {
        if !matches!(node.kind, NodeKind::Scalar { .. }) {
            self.mismatch(node, path, "bool");
            return true;
        }
        match resolve_node_checked(node) {
            Ok((ShortTag::Null, _)) => {}
            Ok((_, ScalarValue::Bool(b))) => *out = b,
            Ok((_, ScalarValue::Str(s))) => match s.as_str() {
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => *out = true,
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => *out = false,
                _ => self.mismatch(node, path, "bool"),
            },
            Ok(_) => self.mismatch(node, path, "bool"),
            Err(e) => self.error(node, path, e.message),
        }
        true
    }

    fn overlay(&mut self, node: &Node, path: &str, out: &mut Overlay) -> bool {
        self.structure(
            node,
            path,
            "schematic.Overlay",
            &mut |d, key, value, p| match key {
                "image" => d.string(value, p, &mut out.image),
                "name" => d.string(value, p, &mut out.name),
                "options" => d.options(value, p, &mut out.options),
                _ => false,
            },
        );
        true
    }

    fn options(&mut self, node: &Node, path: &str, out: &mut Vec<(String, AnyValue)>) -> bool {
        match &node.kind {
            NodeKind::Mapping(entries) => {
                if !self.check_duplicates(entries, path) {
                    return true;
                }
                let mut errors = Vec::new();
                let entries = merged_entries(entries, &mut errors, path);
                self.errors.extend(errors);
                out.clear();
                for (key, value) in entries {
                    if is_null(key) {
                        continue;
                    }
                    let Some(name) = scalar_value(key) else {
                        self.mismatch(key, path, "string");
                        continue;
                    };
                    let sub = join(path, name);
                    if let Some(v) = self.any(value, &sub) {
                        out.push((name.to_string(), v));
                    }
                }
            }
            _ if is_null(node) => out.clear(),
            _ => self.mismatch(node, path, "map[string]interface {}"),
        }
        true
    }

    /// Decodes a node into upstream's `any`, the way go-yaml fills an `interface{}`.
    fn any(&mut self, node: &Node, path: &str) -> Option<AnyValue> {
        match &node.kind {
            NodeKind::Scalar { value, tag, .. } => match resolve_node_checked(node) {
                Ok((_, ScalarValue::Null)) => Some(AnyValue::Null),
                Ok((_, ScalarValue::Bool(b))) => Some(AnyValue::Bool(b)),
                Ok((_, ScalarValue::Int(i))) => Some(AnyValue::Int(i)),
                Ok((_, ScalarValue::Uint(u))) => Some(AnyValue::Uint(u)),
                Ok((_, ScalarValue::Float(f))) => Some(AnyValue::Float(f)),
                Ok((_, ScalarValue::Timestamp(t))) => Some(AnyValue::Timestamp(t)),
                Ok((ShortTag::Binary, _)) if tag.as_deref() == Some("!!binary") => {
                    match decode_base64(value) {
                        Some(s) => Some(AnyValue::Str(s)),
                        None => {
                            self.error(node, path, "!!binary value contains invalid base64 data");
                            None
                        }
                    }
                }
                Ok((_, ScalarValue::Str(s))) => Some(AnyValue::Str(s)),
                Err(e) => {
                    self.error(node, path, e.message);
                    None
                }
            },
            NodeKind::Sequence(items) => Some(AnyValue::Seq(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| self.any(item, &format!("{path}[{i}]")))
                    .collect(),
            )),
            NodeKind::Mapping(entries) => {
                if !self.check_duplicates(entries, path) {
                    return None;
                }
                let mut errors = Vec::new();
                let merged = merged_entries(entries, &mut errors, path);
                self.errors.extend(errors);
                let string_keys = entries.iter().all(|(k, _)| {
                    matches!(k.kind, NodeKind::Scalar { .. })
                        && (is_merge_key(k)
                            || matches!(resolve_node_checked(k), Ok((ShortTag::Str, _))))
                });
                if string_keys {
                    let mut map = Vec::new();
                    for (k, v) in merged {
                        let name = scalar_value(k).unwrap_or_default();
                        if let Some(value) = self.any(v, &join(path, name)) {
                            map.push((name.to_string(), value));
                        }
                    }
                    Some(AnyValue::StrMap(map))
                } else {
                    let mut map = Vec::new();
                    for (k, v) in merged {
                        let key_path = join(path, scalar_value(k).unwrap_or("<key>"));
                        let Some(key) = self.any(k, &key_path) else {
                            continue;
                        };
                        if matches!(
                            key,
                            AnyValue::Seq(_) | AnyValue::StrMap(_) | AnyValue::AnyMap(_)
                        ) {
                            self.error(k, &key_path, "invalid map key");
                            continue;
                        }
                        if let Some(value) = self.any(v, &key_path) {
                            map.push((key, value));
                        }
                    }
                    Some(AnyValue::AnyMap(map))
                }
            }
        }
    }

    fn customization(&mut self, node: &Node, path: &str, out: &mut Customization) -> bool {
        self.structure(
            node,
            path,
            "schematic.Customization",
            &mut |d, key, value, p| match key {
                "embeddedMachineConfiguration" => {
                    d.string(value, p, &mut out.embedded_machine_configuration)
                }
                "extraKernelArgs" => d.string_list(value, p, &mut out.extra_kernel_args),
                "meta" => d.meta(value, p, &mut out.meta),
                "systemExtensions" => {
                    let exts = &mut out.system_extensions.official_extensions;
                    d.structure(
                        value,
                        p,
                        "schematic.SystemExtensions",
                        &mut |d, k, v, p2| match k {
                            "officialExtensions" => d.string_list(v, p2, exts),
                            _ => false,
                        },
                    );
                    true
                }
                "bootloader" => d.bootloader(value, p, &mut out.bootloader),
                "secureboot" => {
                    let sb = &mut out.secureboot;
                    d.structure(
                        value,
                        p,
                        "schematic.SecureBootCustomization",
                        &mut |d, k, v, p2| match k {
                            "enrollKeys" => d.string(v, p2, &mut sb.enroll_keys),
                            "includeWellKnownCertificates" => {
                                d.boolean(v, p2, &mut sb.include_well_known_certificates)
                            }
                            _ => false,
                        },
                    );
                    true
                }
                "diskImage" => {
                    let di = &mut out.disk_image;
                    d.structure(
                        value,
                        p,
                        "schematic.DiskImageCustomization",
                        &mut |d, k, v, p2| match k {
                            "sectorSize" => {
                                if let Some(n) = d.unsigned(v, p2, u64::MAX, "uint") {
                                    di.sector_size = n;
                                }
                                true
                            }
                            _ => false,
                        },
                    );
                    true
                }
                _ => false,
            },
        );
        true
    }

    fn meta(&mut self, node: &Node, path: &str, out: &mut Vec<MetaValue>) -> bool {
        match &node.kind {
            NodeKind::Sequence(items) => {
                out.clear();
                for (i, item) in items.iter().enumerate() {
                    if is_null(item) {
                        continue;
                    }
                    let p = format!("{path}[{i}]");
                    let mut mv = MetaValue::default();
                    self.structure(
                        item,
                        &p,
                        "schematic.MetaValue",
                        &mut |d, k, v, p2| match k {
                            "key" => {
                                if let Some(n) = d.unsigned(v, p2, u8::MAX as u64, "uint8") {
                                    mv.key = n as u8;
                                }
                                true
                            }
                            "value" => d.string(v, p2, &mut mv.value),
                            _ => false,
                        },
                    );
                    out.push(mv);
                }
            }
            _ if is_null(node) => out.clear(),
            _ => self.mismatch(node, path, "[]schematic.MetaValue"),
        }
        true
    }

    fn bootloader(&mut self, node: &Node, path: &str, out: &mut Bootloader) -> bool {
        match &node.kind {
            NodeKind::Scalar { value, tag, .. } => {
                if is_null(node) {
                    return true;
                }
                let text = if tag.as_deref() == Some("!!binary") {
                    match decode_base64(value) {
                        Some(t) => t,
                        None => {
                            self.error(node, path, "!!binary value contains invalid base64 data");
                            return true;
                        }
                    }
                } else {
                    value.clone()
                };
                let value = &text;
                match Bootloader::parse(value) {
                    Some(b) => *out = b,
                    None => self.error(
                        node,
                        path,
                        format!(
                            "{value} does not belong to BootloaderKind values (none, dual-boot, sd-boot, grub)"
                        ),
                    ),
                }
            }
            _ => self.mismatch(node, path, "BootloaderKind"),
        }
        true
    }
}

/// Go's `uint64(f)` as compiled for amd64 (what upstream's servers run): truncation toward
/// zero, with out-of-range values wrapping the way the CPU's conversion does (`-1.5` becomes
/// `u64::MAX`, `2^64` becomes `2^63`). go-yaml then range-checks the result for the field.
fn go_amd64_float_to_u64(f: f64) -> u64 {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    let cvt = |x: f64| -> i64 {
        if x.is_nan() || x >= TWO_63 || x <= -TWO_63 {
            i64::MIN
        } else {
            x.trunc() as i64
        }
    };
    if f < TWO_63 {
        cvt(f) as u64
    } else {
        cvt(f - TWO_63) as u64 | (1 << 63)
    }
}

/// Standard base64 (with padding, whitespace ignored) as go-yaml's `!!binary` expects.
fn decode_base64(text: &str) -> Option<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !clean.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let mut acc: u32 = 0;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if c == b'=' {
                if i < 2 {
                    return None;
                }
                pad += 1;
                0
            } else {
                if pad > 0 {
                    return None;
                }
                ALPHABET.iter().position(|&a| a == c)? as u32
            };
            acc = (acc << 6) | v;
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    String::from_utf8(out).ok()
}
