//! Schematic IDs and canonical bytes against a corpus produced by Go's gopkg.in/yaml.v3 with a
//! replica of upstream's schematic struct (`tests/oracle/`): every `ok` case must give the same
//! canonical YAML and ID, and every refused case must be refused.

use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    name: String,
    input: String,
    ok: bool,
    canonical: Option<String>,
    id: Option<String>,
    #[allow(dead_code)]
    error: Option<String>,
}

fn vectors() -> Vec<Vector> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/schematic-ids.json"
    );
    let text = std::fs::read_to_string(path).expect("vector corpus");
    serde_json::from_str(&text).expect("vector corpus is JSON")
}

/// Inputs where our YAML parser is more lenient than libyaml's (go-yaml's) scanner, or that only
/// go-yaml can represent. Each is a deliberate, documented deviation (see ARCHITECTURE.md); the
/// test fails if one of them starts matching, so the list stays honest.
const KNOWN_DEVIATIONS: &[(&str, &str)] = &[
    (
        "decode/json/unquoted-colon-no-space-flow",
        "`{a:{b:[c]}}`: libyaml needs a space after `:` in flow mappings; we accept",
    ),
    (
        "decode/tabs/in-block-seq",
        "a tab after `-`: libyaml refuses, we accept",
    ),
    (
        "decode/tabs/indentation-after-spaces",
        "a tab in indentation: libyaml refuses, we accept",
    ),
    (
        "decode/syntax/implicit-key-over-1024-chars",
        "implicit keys over 1024 chars: libyaml refuses, we accept",
    ),
    (
        "decode/tag-binary-invalid-utf8-string-field",
        "!!binary that is not UTF-8: go-yaml keeps raw bytes, we refuse",
    ),
    (
        "opt/binary-invalid-utf8",
        "!!binary that is not UTF-8: go-yaml keeps raw bytes, we refuse",
    ),
    (
        "meta-value/!!binary /w==",
        "!!binary that is not UTF-8: go-yaml keeps raw bytes, we refuse",
    ),
];

#[test]
fn every_vector_matches_go_yaml() {
    let vectors = vectors();
    assert!(vectors.len() > 400, "corpus too small: {}", vectors.len());
    let mut failures = Vec::new();
    let mut deviations_seen = Vec::new();
    for v in &vectors {
        if KNOWN_DEVIATIONS.iter().any(|(name, _)| *name == v.name) {
            let ours =
                bootfactory::schematic::decode(v.input.as_bytes()).map(|s| s.canonical_yaml());
            let matches = match (&ours, v.ok) {
                (Ok(c), true) => Some(c.as_str()) == v.canonical.as_deref(),
                (Err(_), false) => true,
                _ => false,
            };
            assert!(
                !matches,
                "{} now matches go-yaml: drop it from KNOWN_DEVIATIONS",
                v.name
            );
            deviations_seen.push(v.name.clone());
            continue;
        }
        let result = bootfactory::schematic::decode(v.input.as_bytes());
        match (v.ok, result) {
            (true, Ok(s)) => {
                let canonical = s.canonical_yaml();
                let want = v.canonical.as_deref().unwrap_or_default();
                if canonical != want {
                    failures.push(format!(
                        "{}: input {:?}\n   got canonical {:?}\n  want canonical {:?}",
                        v.name, v.input, canonical, want
                    ));
                } else if Some(s.id().as_str()) != v.id.as_deref() {
                    failures.push(format!("{}: id {} != {:?}", v.name, s.id(), v.id));
                }
            }
            (true, Err(e)) => failures.push(format!(
                "{}: input {:?} refused ({e}) but go-yaml accepts it: {:?}",
                v.name, v.input, v.canonical
            )),
            (false, Ok(s)) => failures.push(format!(
                "{}: input {:?} accepted as {:?} but go-yaml refuses it: {:?}",
                v.name,
                v.input,
                s.canonical_yaml(),
                v.error
            )),
            (false, Err(_)) => {}
        }
    }
    assert_eq!(
        deviations_seen.len(),
        KNOWN_DEVIATIONS.len(),
        "a known deviation left the corpus"
    );
    assert!(
        failures.is_empty(),
        "{} of {} vectors differ:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}
