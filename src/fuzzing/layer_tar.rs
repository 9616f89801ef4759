//! Untrusted image layers applied into a directory
//! ([`flatten_layers`](crate::oci::flatten::flatten_layers)), as the factory does with imager
//! and extension images pulled from a registry or imported from a bundle.
//!
//! Input: one or more uncompressed tar layers, separated by a 512-byte block that starts with
//! [`LAYER_BREAK`] (so a later layer can whiteout or replace what an earlier one wrote).
//! Properties: no panic, and nothing outside the destination directory is created, changed or
//! removed — neither a sibling directory reachable with `../`, nor anything reachable through
//! a symlink an earlier entry planted — whether flattening succeeds or fails.

use crate::oci::flatten::{LayerFile, flatten_layers};
use crate::oci::manifest::media;

use super::sandbox::Sandbox;

/// Marks a 512-byte block that ends one layer and starts the next.
pub const LAYER_BREAK: &[u8] = b"--bootfactory-fuzz-layer-break--";

/// At most this many layers per input.
const MAX_LAYERS: usize = 4;

/// Splits the input into layers at [`LAYER_BREAK`] blocks.
pub fn split_layers(data: &[u8]) -> Vec<&[u8]> {
    let mut layers = Vec::new();
    let mut start = 0;
    let mut block = 0;
    while block + 512 <= data.len() {
        if data[block..].starts_with(LAYER_BREAK) && layers.len() + 1 < MAX_LAYERS {
            layers.push(&data[start..block]);
            start = block + 512;
        }
        block += 512;
    }
    layers.push(&data[start..]);
    layers
}

/// Checks one input.
pub fn check(data: &[u8]) {
    let sandbox = Sandbox::new("layer");
    let mut files = Vec::new();
    for (i, layer) in split_layers(data).into_iter().enumerate() {
        let path = sandbox.input(&format!("layer{i}.tar"));
        std::fs::write(&path, layer).expect("write layer");
        files.push(LayerFile {
            path,
            media_type: media::OCI_LAYER_TAR.to_string(),
        });
    }
    let before = sandbox.outside_snapshot();
    let _ = flatten_layers(&files, &sandbox.dest(), None);
    sandbox.assert_contained(&before, "flatten_layers");
    // The same layers again on top of the result (a cached tree being refreshed), and with
    // the prefix filter the factory uses for imager boot files.
    let _ = flatten_layers(
        &files,
        &sandbox.dest(),
        Some(std::path::Path::new("usr/install")),
    );
    sandbox.assert_contained(&before, "flatten_layers (second pass, prefix)");
}
