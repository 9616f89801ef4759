//! Hostile schematics (issue 10, defects 1 and 5): alias expansion bounded in bytes, the
//! canonical output bounded, schematics that could be stored but never read back refused
//! before storing, and stored schematics always served — through the library and over a real
//! loopback server.

mod support;

use std::time::{Duration, Instant};

use bootfactory::schematic::storage::SchematicStoreError;
use bootfactory::schematic::{
    MAX_CANONICAL_BYTES, MAX_EXPANDED_BYTES, SchematicError, SchematicStore, id_of_canonical, parse,
};
use bootfactory::store::Store;
use support::TestServer;

/// The probe from issue 10: one 800 KB anchored string and 40,000 aliases of it (~960 KB,
/// under the 1 MiB body limit), i.e. 32 GB once expanded.
fn alias_bomb(anchored: usize, aliases: usize) -> Vec<u8> {
    let mut doc = format!(
        "customization: {{extraKernelArgs: [&a \"{}\"",
        "x".repeat(anchored)
    );
    for _ in 0..aliases {
        doc.push_str(", *a");
    }
    doc.push_str("]}\n");
    doc.into_bytes()
}

#[test]
fn alias_expansion_is_bounded_in_bytes() {
    for (anchored, aliases) in [(800_000, 40_000), (2_600, 40_000), (600_000, 1)] {
        let doc = alias_bomb(anchored, aliases);
        assert!(doc.len() <= 1024 * 1024);
        let started = Instant::now();
        let err = parse(&doc).unwrap_err();
        assert!(
            matches!(&err, SchematicError::Limit(m) if m.contains("expands to more than")),
            "{anchored}x{aliases}: {err}"
        );
        assert!(err.to_string().contains(&MAX_EXPANDED_BYTES.to_string()));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // Aliases within the limit still work, and expand like go-yaml's.
    let s = parse(&alias_bomb(1000, 100)).unwrap();
    assert_eq!(s.customization.extra_kernel_args.len(), 101);
    assert!(s.customization.extra_kernel_args[100] == "x".repeat(1000));
}

#[test]
fn nested_anchors_cannot_multiply_copies() {
    // Every level anchors (and so copies) the whole subtree below it: 60 × 100 KB.
    let mut doc = String::from("customization: {extraKernelArgs: ");
    for i in 0..60 {
        doc.push_str(&format!("&a{i} ["));
    }
    doc.push_str(&format!("\"{}\"", "y".repeat(100_000)));
    doc.push_str(&"]".repeat(60));
    doc.push_str("}\n");
    let err = parse(doc.as_bytes()).unwrap_err();
    assert!(matches!(err, SchematicError::Limit(_)), "{err}");
}

#[test]
fn canonical_output_is_bounded() {
    // 200,000 emoji: 800 KB of JSON, 2 MB of canonical YAML (`\U0001F600` each).
    let doc = format!(
        "{{\"customization\":{{\"extraKernelArgs\":[\"{}\"]}}}}",
        "\u{1F600}".repeat(200_000)
    );
    assert!(doc.len() < 1024 * 1024);
    let err = parse(doc.as_bytes()).unwrap_err();
    assert_eq!(
        err,
        SchematicError::CanonicalTooLarge {
            limit: MAX_CANONICAL_BYTES
        }
    );
    assert!(
        err.to_string()
            .contains("canonical YAML would be larger than")
    );
    // Indentation growth: deeply nested overlay options with many small leaves.
    let mut options = String::new();
    for _ in 0..40 {
        options.push_str("{a: ");
    }
    options.push('{');
    for i in 0..10_000 {
        options.push_str(&format!("k{i}: 1, "));
    }
    options.push('}');
    options.push_str(&"}".repeat(40));
    let doc = format!("overlay: {{name: n, image: i, options: {{o: {options}}}}}\n");
    assert!(doc.len() < 1024 * 1024, "{}", doc.len());
    assert!(matches!(
        parse(doc.as_bytes()).unwrap_err(),
        SchematicError::CanonicalTooLarge { .. }
    ));
    // A large but ordinary document is fine.
    let doc = format!(
        "customization: {{extraKernelArgs: [{}]}}",
        "z".repeat(900_000)
    );
    assert!(parse(doc.as_bytes()).is_ok());
}

/// Inputs that used to get 201 and then 500 on every read: go-yaml writes their canonical
/// YAML as block scalars (`- |4-`, a tab-indented first line) that no reader accepts.
const UNREADABLE_BACK: &[&str] = &[
    r#"{"customization":{"extraKernelArgs":["\n\t"]}}"#,
    r#"{"customization":{"extraKernelArgs":[" a\nb"]}}"#,
    r#"{"customization":{"extraKernelArgs":["\nfoo\n"]}}"#,
    // go-yaml drops the leading empty line of `|4` here: it would read back as "foo\n".
    r#"{"customization":{"embeddedMachineConfiguration":"\nfoo\n"}}"#,
    r#"{"customization":{"meta":[{"key":1,"value":"\n\tx"}]}}"#,
];

#[test]
fn schematics_that_do_not_read_back_are_refused() {
    for input in UNREADABLE_BACK {
        let err = parse(input.as_bytes()).unwrap_err();
        assert!(
            matches!(err, SchematicError::NotRoundTrip(_)),
            "{input}: {err}"
        );
        assert!(err.to_string().contains("does not read back"), "{err}");
    }
    // Leading spaces and line breaks that go-yaml writes readably are accepted and round-trip.
    for input in [
        r#"{"customization":{"extraKernelArgs":[" a", "\tb", "x\n", "\n"]}}"#,
        r#"{"customization":{"embeddedMachineConfiguration":" foo\nbar"}}"#,
        r#"{"overlay":{"name":"n","image":"i","options":{"a\nb":1," k":[{"x\ny":2}]}},"customization":{}}"#,
    ] {
        let s = parse(input.as_bytes()).unwrap_or_else(|e| panic!("{input}: {e}"));
        let canonical = s.canonical_yaml();
        let again = parse(canonical.as_bytes()).unwrap();
        assert_eq!(again.canonical_yaml(), canonical);
        assert_eq!(again.id(), s.id());
    }
}

#[tokio::test]
async fn refused_schematics_are_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let schematics = SchematicStore::new(store.clone());
    // `decode` accepts what upstream's decoder accepts; storing re-checks the round trip.
    let s = bootfactory::schematic::decode(UNREADABLE_BACK[0].as_bytes()).unwrap();
    let err = schematics.put(&s).await.unwrap_err();
    assert!(
        matches!(
            err,
            SchematicStoreError::Invalid(SchematicError::NotRoundTrip(_))
        ),
        "{err}"
    );
    assert!(schematics.list().unwrap().is_empty());
    assert!(store.list_blobs().unwrap().is_empty());
}

/// What an older version stored for `{"customization":{"extraKernelArgs":["\n\t"]}}`: intact
/// bytes (they hash to the ID) that do not decode.
const LEGACY_UNREADABLE: &str =
    "customization:\n    extraKernelArgs:\n        - |4-\n          \t\n";

async fn store_legacy(store: &Store) -> String {
    let digest = store.put_bytes(LEGACY_UNREADABLE.as_bytes()).await.unwrap();
    let id = id_of_canonical(LEGACY_UNREADABLE.as_bytes());
    assert_eq!(digest.hex(), id.as_str());
    store.set_ref("schematic", id.as_str(), &digest).unwrap();
    id.to_string()
}

#[tokio::test]
async fn legacy_unreadable_schematics_are_reported_truthfully() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = store_legacy(&store).await.parse().unwrap();
    let schematics = SchematicStore::new(store.clone());
    let err = schematics.get(&id).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, SchematicStoreError::Unreadable { .. }),
        "{text}"
    );
    assert!(!text.contains("corrupt"), "{text}");
    assert!(text.contains("intact"), "{text}");
    // The bytes are still there and served as they are.
    assert_eq!(
        schematics.get_canonical(&id).await.unwrap().as_deref(),
        Some(LEGACY_UNREADABLE)
    );
    // Nothing was quarantined or dropped.
    assert!(schematics.contains(&id));
    assert_eq!(store.list_blobs().unwrap().len(), 1);
}

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::new()
}

#[tokio::test]
async fn http_unreadable_schematic_is_400_and_never_stored() {
    let server = TestServer::start(&[]).await;
    for input in UNREADABLE_BACK {
        let resp = client()
            .post(format!("{}/schematics", server.url))
            .body(*input)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{input}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("does not read back"), "{text}");
    }
    // The ID upstream would give the first one is unknown here: 404, not 500.
    let id = id_of_canonical(LEGACY_UNREADABLE.as_bytes());
    for path in [
        format!("/schematics/{id}"),
        format!("/pxe/{id}/v1.10.0/metal-amd64"),
        format!("/image/{id}/v1.10.0/kernel-amd64"),
    ] {
        let resp = client()
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
    // A leading space round-trips: 201, then served byte for byte.
    let resp = client()
        .post(format!("{}/schematics", server.url))
        .body(r#"{"customization":{"extraKernelArgs":[" a", "\n"]}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: serde_json::Value = resp.json().await.unwrap();
    let got = client()
        .get(format!(
            "{}/schematics/{}",
            server.url,
            created["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(
        got.text().await.unwrap(),
        created["schematic"].as_str().unwrap()
    );
}

#[tokio::test]
async fn http_legacy_unreadable_schematic_is_served_and_never_500() {
    let server = TestServer::start(&[]).await;
    let data = server.stop().await;
    let id = {
        let store = Store::open(data.path()).unwrap();
        let id = store_legacy(&store).await;
        store.flush().await.unwrap();
        id
    };
    let server = TestServer::start_in(data, &[]).await;
    let got = client()
        .get(format!("{}/schematics/{id}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), LEGACY_UNREADABLE);
    let resp = client()
        .get(format!("{}/pxe/{id}/v1.10.0/metal-amd64", server.url))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("cannot be used"), "{text}");
    assert!(!text.contains("corrupt"), "{text}");
}

#[test]
fn many_keys_are_checked_in_linear_time() {
    // Duplicate-key detection was quadratic: 40,000 distinct keys took 21 s (debug build).
    let mut doc = String::from("overlay: {name: n, image: i, options: {");
    for i in 0..40_000 {
        doc.push_str(&format!("k{i}: 1, "));
    }
    doc.push_str("}}\n");
    let started = Instant::now();
    let s = parse(doc.as_bytes()).unwrap();
    assert_eq!(s.overlay.options.len(), 40_000);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // 40,000 copies of one key: 800 million pairs; reported briefly.
    let mut doc = String::from("overlay: {name: n, image: i, options: {");
    doc.push_str(&"k: 1, ".repeat(40_000));
    doc.push_str("}}\n");
    let started = Instant::now();
    let err = parse(doc.as_bytes()).unwrap_err().to_string();
    assert!(
        err.contains("mapping key \"k\" already defined at line 1"),
        "{err}"
    );
    assert!(err.contains("more errors not shown"), "{err}");
    assert!(err.len() < 20_000, "{}", err.len());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}
