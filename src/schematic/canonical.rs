//! The canonical YAML of a schematic: what upstream's `yaml.Marshal(schematic)` produces, and
//! therefore what its ID hashes.

use std::cmp::Ordering;

use super::model::{AnyValue, Customization, Overlay, Schematic};
use crate::gocompat::yaml::emit::{Out, emit_document_limited};
use crate::gocompat::yaml::{format_float as go_format_float, string_key_less as go_string_less};

/// Renders the canonical YAML bytes (as a string; always valid UTF-8).
pub fn canonical_yaml(s: &Schematic) -> String {
    canonical_yaml_limited(s, usize::MAX).unwrap_or_default()
}

/// Renders the canonical YAML, or `None` if it would be longer than `limit` bytes (never
/// building more than `limit` bytes of output).
pub fn canonical_yaml_limited(s: &Schematic, limit: usize) -> Option<String> {
    let mut root = Vec::new();
    if !s.owner.is_empty() {
        root.push((Out::string("owner"), Out::string(&s.owner)));
    }
    if !s.overlay.is_empty() {
        root.push((Out::string("overlay"), overlay(&s.overlay)));
    }
    root.push((
        Out::string("customization"),
        customization(&s.customization),
    ));
    emit_document_limited(&Out::Map(root), limit)
}

/// `yaml.Marshal` of overlay options (a `map[string]any`), as the imager writes them to the
/// installer's `overlay/extra-options`: `{}` when there are none.
pub fn options_yaml(options: &[(String, AnyValue)]) -> String {
    crate::gocompat::yaml::emit::emit_document(&string_map(options))
}

fn string_seq(items: &[String]) -> Out {
    Out::Seq(items.iter().map(|s| Out::string(s)).collect())
}

fn overlay(o: &Overlay) -> Out {
    let mut m = vec![
        (Out::string("image"), Out::string(&o.image)),
        (Out::string("name"), Out::string(&o.name)),
    ];
    if !o.options.is_empty() {
        m.push((Out::string("options"), string_map(&o.options)));
    }
    Out::Map(m)
}

fn customization(c: &Customization) -> Out {
    let mut m = Vec::new();
    if !c.embedded_machine_configuration.is_empty() {
        m.push((
            Out::string("embeddedMachineConfiguration"),
            Out::string(&c.embedded_machine_configuration),
        ));
    }
    if !c.extra_kernel_args.is_empty() {
        m.push((
            Out::string("extraKernelArgs"),
            string_seq(&c.extra_kernel_args),
        ));
    }
    if !c.meta.is_empty() {
        let items = c
            .meta
            .iter()
            .map(|mv| {
                Out::Map(vec![
                    (Out::string("key"), Out::plain(mv.key.to_string())),
                    (Out::string("value"), Out::string(&mv.value)),
                ])
            })
            .collect();
        m.push((Out::string("meta"), Out::Seq(items)));
    }
    if !c.system_extensions.official_extensions.is_empty() {
        m.push((
            Out::string("systemExtensions"),
            Out::Map(vec![(
                Out::string("officialExtensions"),
                string_seq(&c.system_extensions.official_extensions),
            )]),
        ));
    }
    if c.bootloader != Default::default() {
        m.push((
            Out::string("bootloader"),
            Out::string(c.bootloader.as_str()),
        ));
    }
    let sb = &c.secureboot;
    if !sb.enroll_keys.is_empty() || sb.include_well_known_certificates {
        let mut sbm = Vec::new();
        if !sb.enroll_keys.is_empty() {
            sbm.push((Out::string("enrollKeys"), Out::string(&sb.enroll_keys)));
        }
        if sb.include_well_known_certificates {
            sbm.push((
                Out::string("includeWellKnownCertificates"),
                Out::plain("true"),
            ));
        }
        m.push((Out::string("secureboot"), Out::Map(sbm)));
    }
    if c.disk_image.sector_size != 0 {
        m.push((
            Out::string("diskImage"),
            Out::Map(vec![(
                Out::string("sectorSize"),
                Out::plain(c.disk_image.sector_size.to_string()),
            )]),
        ));
    }
    Out::Map(m)
}

fn string_map(entries: &[(String, AnyValue)]) -> Out {
    let mut sorted: Vec<&(String, AnyValue)> = entries.iter().collect();
    sorted.sort_by(|a, b| go_string_key_cmp(&a.0, &b.0));
    Out::Map(
        sorted
            .into_iter()
            .map(|(k, v)| (Out::string(k), any(v)))
            .collect(),
    )
}

fn any(v: &AnyValue) -> Out {
    match v {
        AnyValue::Null => Out::plain("null"),
        AnyValue::Bool(b) => Out::plain(b.to_string()),
        AnyValue::Int(i) => Out::plain(i.to_string()),
        AnyValue::Uint(u) => Out::plain(u.to_string()),
        AnyValue::Float(f) => Out::plain(go_format_float(*f)),
        AnyValue::Timestamp(t) => Out::plain(t.clone()),
        AnyValue::Str(s) => Out::string(s),
        AnyValue::Seq(items) => Out::Seq(items.iter().map(any).collect()),
        AnyValue::StrMap(entries) => string_map(entries),
        AnyValue::AnyMap(entries) => {
            let mut sorted: Vec<&(AnyValue, AnyValue)> = entries.iter().collect();
            sorted.sort_by(|a, b| go_any_key_cmp(&a.0, &b.0));
            Out::Map(sorted.into_iter().map(|(k, v)| (any(k), any(v))).collect())
        }
    }
}

fn less_to_ordering<T>(a: &T, b: &T, less: impl Fn(&T, &T) -> bool) -> Ordering {
    if less(a, b) {
        Ordering::Less
    } else if less(b, a) {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

fn go_string_key_cmp(a: &str, b: &str) -> Ordering {
    less_to_ordering(&a, &b, |x, y| go_string_less(x, y))
}

/// Go `reflect.Kind` numbers of what a decoded `any` key can be, for go-yaml's mixed-key order.
fn go_kind(v: &AnyValue) -> u8 {
    match v {
        AnyValue::Bool(_) => 1,
        AnyValue::Int(_) => 2,
        AnyValue::Uint(_) => 11,
        AnyValue::Float(_) => 14,
        AnyValue::Null => 20,
        AnyValue::Seq(_) => 23,
        AnyValue::StrMap(_) | AnyValue::AnyMap(_) => 21,
        AnyValue::Str(_) => 24,
        AnyValue::Timestamp(_) => 25,
    }
}

fn key_float(v: &AnyValue) -> Option<f64> {
    match v {
        AnyValue::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        AnyValue::Int(i) => Some(*i as f64),
        AnyValue::Uint(u) => Some(*u as f64),
        AnyValue::Float(f) => Some(*f),
        _ => None,
    }
}

fn go_any_key_less(a: &AnyValue, b: &AnyValue) -> bool {
    let (ak, bk) = (go_kind(a), go_kind(b));
    if let (Some(af), Some(bf)) = (key_float(a), key_float(b)) {
        if af != bf {
            return af < bf;
        }
        if ak != bk {
            return ak < bk;
        }
        return match (a, b) {
            (AnyValue::Bool(x), AnyValue::Bool(y)) => !x & y,
            (AnyValue::Int(x), AnyValue::Int(y)) => x < y,
            (AnyValue::Uint(x), AnyValue::Uint(y)) => x < y,
            (AnyValue::Float(x), AnyValue::Float(y)) => x < y,
            _ => false,
        };
    }
    match (a, b) {
        (AnyValue::Str(x), AnyValue::Str(y)) => go_string_less(x, y),
        _ => ak < bk,
    }
}

fn go_any_key_cmp(a: &AnyValue, b: &AnyValue) -> Ordering {
    less_to_ordering(a, b, go_any_key_less)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_float_formatting() {
        assert_eq!(go_format_float(1000.0), "1000");
        assert_eq!(go_format_float(1e6), "1e+06");
        assert_eq!(go_format_float(1e21), "1e+21");
        assert_eq!(go_format_float(0.00001), "1e-05");
        assert_eq!(go_format_float(0.0001), "0.0001");
        assert_eq!(go_format_float(123456789.0), "1.23456789e+08");
        assert_eq!(go_format_float(1.5), "1.5");
        assert_eq!(go_format_float(100000.0), "100000");
        assert_eq!(go_format_float(-0.0), "-0");
        assert_eq!(go_format_float(f64::NEG_INFINITY), "-.inf");
    }

    #[test]
    fn natural_key_order() {
        let mut keys = vec![
            "b", "a10", "ab", "a2", "a_b", "a-b", "a", "B", "A", "10", "2", "1", "_x",
        ];
        keys.sort_by(|a, b| go_string_key_cmp(a, b));
        assert_eq!(
            keys,
            vec![
                "_x", "1", "2", "10", "A", "B", "a", "a-b", "a_b", "a2", "a10", "ab", "b"
            ]
        );
    }
}
