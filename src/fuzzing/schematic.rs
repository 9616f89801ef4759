//! Schematic parser + canonical emitter: whatever parses must emit canonical YAML that parses
//! back to the same schematic with the same ID (issue 10, defect 5: a stored schematic that
//! cannot be read back answers 500 forever).

use crate::schematic;

/// Parses `data` as a `POST /schematics` body; if accepted, checks the canonical round trip.
pub fn check(data: &[u8]) {
    let Ok(parsed) = schematic::parse(data) else {
        return;
    };
    let canonical = parsed.canonical_yaml();
    let id = parsed.id();
    assert_eq!(
        id,
        schematic::id_of_canonical(canonical.as_bytes()),
        "the ID is the hash of the canonical YAML"
    );
    let again = match schematic::parse(canonical.as_bytes()) {
        Ok(s) => s,
        Err(e) => panic!("canonical YAML does not parse back: {e}\n--- canonical ---\n{canonical}"),
    };
    // Overlay options are maps (at every level): the model keeps the input's order, the
    // canonical YAML sorts them, so compare them as maps. (A fuzz finding: nested maps were
    // compared in order.)
    let as_map = |s: &schematic::Schematic| {
        let mut s = s.clone();
        s.overlay
            .options
            .sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (_, v) in &mut s.overlay.options {
            sort_maps(v);
        }
        s
    };
    assert!(
        super::same(&as_map(&again), &as_map(&parsed)),
        "canonical YAML parses to a different schematic\n--- canonical ---\n{canonical}\n--- first ---\n{parsed:?}\n--- second ---\n{again:?}"
    );
    let canonical_again = again.canonical_yaml();
    assert_eq!(
        canonical_again, canonical,
        "canonical YAML is not a fixed point"
    );
    assert_eq!(again.id(), id, "the ID changes after a round trip");
}

/// Puts `v` in the form go-yaml reads back: every map sorted by key, recursively, so two
/// values compare as maps (go-yaml's own key order is checked separately: the canonical YAML
/// must be a fixed point), and integral floats as the integers they are written as.
fn sort_maps(v: &mut schematic::AnyValue) {
    match v {
        schematic::AnyValue::StrMap(entries) => {
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            for (_, v) in entries {
                sort_maps(v);
            }
        }
        schematic::AnyValue::AnyMap(entries) => {
            for (k, v) in entries.iter_mut() {
                sort_maps(k);
                sort_maps(v);
            }
            // A `map[any]any` whose keys all decoded as strings is written with string keys
            // and reads back as `map[string]any`: compare it as one.
            if entries
                .iter()
                .all(|(k, _)| matches!(k, schematic::AnyValue::Str(_)))
            {
                let mut as_str: Vec<(String, schematic::AnyValue)> = std::mem::take(entries)
                    .into_iter()
                    .map(|(k, v)| match k {
                        schematic::AnyValue::Str(k) => (k, v),
                        _ => unreachable!("checked above"),
                    })
                    .collect();
                as_str.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                *v = schematic::AnyValue::StrMap(as_str);
                return;
            }
            // Any total order will do for comparing: the keys' debug text.
            entries.sort_by_cached_key(|(k, _)| format!("{k:?}"));
        }
        schematic::AnyValue::Seq(items) => items.iter_mut().for_each(sort_maps),
        // go-yaml writes a float with Go's `FormatFloat(f, 'g', -1, 64)`: an integral value
        // such as 82.0 becomes `82`, which reads back as an integer (the canonical text, and
        // so the ID, is the same; upstream behaves alike). Compare what it reads back as.
        schematic::AnyValue::Float(f) => {
            let text = crate::gocompat::yaml::format_float(*f);
            if let Ok(i) = text.parse::<i64>() {
                *v = schematic::AnyValue::Int(i);
            } else if let Ok(u) = text.parse::<u64>() {
                *v = schematic::AnyValue::Uint(u);
            }
        }
        _ => {}
    }
}
