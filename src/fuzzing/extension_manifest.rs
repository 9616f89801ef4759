//! System extension `manifest.yaml` files (imported content: every extension image carries
//! one), read by `factory::initramfs::manifest::parse_manifest` and written back into the
//! initramfs (`extensions.yaml`, the schematic's virtual extension) with the go-yaml-compatible
//! emitter.
//!
//! Properties: no panic; metadata that was read can be written and read back unchanged,
//! except where go-yaml itself loses data: a value made only of `n` line feeds is written as
//! an empty `|4+` block scalar with `n` line breaks after the indicator, which reads back as
//! `n - 1` line feeds (gopkg.in/yaml.v3 v3.0.1: `"\n"` → `v: |4+` → `""`). The emitter
//! reproduces upstream's bytes, so upstream's initramfs carries the same loss.

use crate::factory::initramfs::fuzz_parse_manifest;

/// Checks one `manifest.yaml`.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((_, metadata)) = fuzz_parse_manifest(text) else {
        return;
    };
    let written = metadata.manifest_yaml();
    let (version, again) = fuzz_parse_manifest(&written).unwrap_or_else(|e| {
        panic!("written manifest does not parse back: {e}\n--- written ---\n{written}")
    });
    assert_eq!(version, "v1alpha1");
    assert_eq!(
        again,
        as_go_yaml_reads_back(metadata),
        "written manifest reads back differently\n--- written ---\n{written}"
    );
}

/// What gopkg.in/yaml.v3 reads back after writing `metadata` (see the module docs).
fn as_go_yaml_reads_back(
    mut metadata: crate::factory::initramfs::ExtensionMetadata,
) -> crate::factory::initramfs::ExtensionMetadata {
    for value in [
        &mut metadata.name,
        &mut metadata.version,
        &mut metadata.author,
        &mut metadata.description,
        &mut metadata.talos_version_constraint,
        &mut metadata.extra_info,
    ] {
        if !value.is_empty() && value.bytes().all(|b| b == b'\n') {
            value.pop();
        }
    }
    metadata
}
