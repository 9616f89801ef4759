//! System extension `manifest.yaml` files (imported content: every extension image carries
//! one), read by `factory::initramfs::manifest::parse_manifest` and written back into the
//! initramfs (`extensions.yaml`, the schematic's virtual extension) with the go-yaml-compatible
//! emitter.
//!
//! Properties: no panic; metadata that was read can be written and read back unchanged,
//! except where go-yaml itself loses data. go-yaml writes a value that starts with a line feed
//! as a literal block scalar (`|4-`, `|4+`) whose first line break is taken as the indicator's
//! own, so reading it back drops exactly that one leading line feed (gopkg.in/yaml.v3
//! v3.0.1: `"\n"` → `v: |4+` → `""`; `"\n!"` → `v: |4-` / `!` → `"!"`; `"\n\na"` → `"\na"`).
//! The emitter reproduces upstream's bytes, so upstream's initramfs carries the same loss; the
//! check allows that loss, for a field written as a block scalar, and nothing else. Metadata
//! whose written form does not read back at all is refused by the builder (`check_writable`).

use crate::factory::initramfs::{ExtensionMetadata, fuzz_check_writable, fuzz_parse_manifest};

/// Checks one `manifest.yaml`.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((_, metadata)) = fuzz_parse_manifest(text) else {
        return;
    };
    // Metadata whose written form does not read back is refused when a build loads the
    // extension (`check_writable`); everything else must round-trip.
    if fuzz_check_writable(&metadata).is_err() {
        return;
    }
    let written = metadata.manifest_yaml();
    let (version, again) = fuzz_parse_manifest(&written).unwrap_or_else(|e| {
        panic!("written manifest does not parse back: {e}\n--- written ---\n{written}")
    });
    assert_eq!(version, "v1alpha1");
    for ((key, wrote), (_, read)) in fields(&metadata).into_iter().zip(fields(&again)) {
        let go_yaml_loss = wrote.strip_prefix('\n') == Some(read)
            && written
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{key}: |")));
        assert!(
            read == wrote || go_yaml_loss,
            "written manifest reads back differently: {key} {wrote:?} → {read:?}\n\
             --- written ---\n{written}"
        );
    }
}

fn fields(m: &ExtensionMetadata) -> [(&'static str, &str); 6] {
    [
        ("name", &m.name),
        ("version", &m.version),
        ("author", &m.author),
        ("description", &m.description),
        ("version", &m.talos_version_constraint),
        ("extraInfo", &m.extra_info),
    ]
}
