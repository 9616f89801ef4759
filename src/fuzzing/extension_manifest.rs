//! System extension `manifest.yaml` files (imported content: every extension image carries
//! one), read by `factory::initramfs::manifest::parse_manifest` and written back into the
//! initramfs (`extensions.yaml`, the schematic's virtual extension) with the go-yaml-compatible
//! emitter.
//!
//! Properties: no panic; metadata that was read can be written and read back unchanged.

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
        again, metadata,
        "written manifest reads back differently\n--- written ---\n{written}"
    );
}
