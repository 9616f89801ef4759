//! Reading an initramfs ([`parse_initramfs`]): concatenated uncompressed cpio, zstd frames and
//! xz streams with NUL padding, `extensions.yaml`, and the squashfs images it names — the reader
//! the factory uses on built output and that works on imported imager initramfs files.
//!
//! Properties: no panic; archives are reported in file order, non-overlapping and inside the
//! file; a reported archive's raw bytes can be read back; `extensions.yaml` is only reported
//! when the last archive has it; entries and squashfs listings can be read without panicking.

use crate::factory::initramfs::{ArchiveCompression, parse_initramfs};

use super::sandbox::Sandbox;

/// Entries and squashfs images opened per input at most.
const MAX_READS: usize = 8;

/// Checks one initramfs.
pub fn check(data: &[u8]) {
    let sandbox = Sandbox::new("initramfs");
    let path = sandbox.input("initramfs.xz");
    std::fs::write(&path, data).expect("write initramfs");
    super::with_contained_panics(|| check_file(data, &path));
}

fn check_file(data: &[u8], path: &std::path::Path) {
    let Ok(parsed) = parse_initramfs(path) else {
        return;
    };
    let len = data.len() as u64;
    let mut end = 0;
    for (i, a) in parsed.archives.iter().enumerate() {
        assert!(a.offset >= end, "archive {i} overlaps the one before");
        end = a.offset.checked_add(a.len).expect("archive end overflows");
        assert!(
            end <= len,
            "archive {i} ends at {end}, past the file ({len})"
        );
        if a.compression == ArchiveCompression::None {
            assert!(a.len > 0, "an uncompressed archive has a header");
        }
        let raw = parsed
            .archive_bytes(i)
            .expect("a reported archive is readable");
        assert_eq!(raw.len() as u64, a.len);
        assert_eq!(&raw[..], &data[a.offset as usize..end as usize]);
    }
    let last_has_yaml = parsed
        .last_archive()
        .is_some_and(|a| a.entries.iter().any(|e| e == "extensions.yaml"));
    assert_eq!(parsed.extensions_yaml.is_some(), last_has_yaml);
    if !last_has_yaml {
        assert!(parsed.layers.is_empty());
    }
    let Some(last) = parsed.last_archive() else {
        return;
    };
    let index = parsed.archives.len() - 1;
    for name in last.entries.iter().take(MAX_READS) {
        let _ = parsed.read_entry(index, name);
    }
    for name in last
        .entries
        .iter()
        .filter(|n| n.ends_with(".sqsh"))
        .take(MAX_READS)
    {
        if let Ok(paths) = parsed.squashfs_paths(name) {
            for p in paths.iter().take(MAX_READS) {
                let _ = parsed.squashfs_file(name, p);
            }
        }
    }
}
