//! Squashfs images from imported content, read with backhand and extracted as the
//! `modules.dep` builder extracts the base `rootfs.sqsh` and each extension's squashfs
//! (`factory::initramfs::modules::extract_squashfs_subtree`).
//!
//! Properties: no panic (in backhand or in our extraction), and nothing outside the
//! destination directory is created, changed or removed — not through `..`, absolute names,
//! duplicate names, or a symlink that an earlier entry planted where a directory is expected.

use std::path::Path;

use crate::factory::initramfs::fuzz_extract_squashfs_subtree;

use super::sandbox::Sandbox;

/// Checks one image.
pub fn check(data: &[u8]) {
    let sandbox = Sandbox::new("squashfs");
    let image = sandbox.input("image.sqsh");
    std::fs::write(&image, data).expect("write image");
    let before = sandbox.outside_snapshot();
    // The whole tree, then the subtree the modules.dep builder asks for.
    let _ = super::with_contained_panics(|| {
        fuzz_extract_squashfs_subtree(&image, Path::new(""), &sandbox.dest())
    });
    sandbox.assert_contained(&before, "extract_squashfs_subtree (whole tree)");
    let _ = super::with_contained_panics(|| {
        fuzz_extract_squashfs_subtree(&image, Path::new("usr/lib/modules"), &sandbox.dest())
    });
    sandbox.assert_contained(&before, "extract_squashfs_subtree (usr/lib/modules)");
}
