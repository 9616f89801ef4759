//! End-to-end builds on small synthetic inputs (a base initramfs made here, extension trees
//! written here). The fixture release and `depmod` are exercised by `tests/initramfs_build.rs`.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::squash::{PosWriter, scan_tree, write_squashfs};
use super::*;
use crate::formats::cpio::{CpioWriter, Metadata};

const MTIME: u32 = 1_559_424_892;

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn params(compression: Compression) -> SquashParams {
    SquashParams {
        compression,
        zstd_level: 3,
        xz_preset: 0,
        block_size: SQUASHFS_BLOCK_SIZE,
        mtime: MTIME,
    }
}

/// A base initramfs: (zstd|xz) newc cpio of `.`, `init`, `rootfs.sqsh`.
fn base(dir: &Path, compression: Compression) -> PathBuf {
    let rootfs = dir.join("base-rootfs");
    write(&rootfs, "usr/bin/init", b"machined");
    write(&rootfs, "usr/lib/modules/6.12.57-talos/modules.order", b"");
    let sq = dir.join("rootfs.sqsh");
    let mut w = PosWriter::new(fs::File::create(&sq).unwrap());
    let entries = scan_tree(&rootfs, None).unwrap();
    write_squashfs(&entries, 0o755, &params(compression), &mut w).unwrap();
    drop(w.into_file().unwrap());
    let mut cpio = CpioWriter::new(Vec::new());
    let m = |mode| Metadata::new(mode).mtime(MTIME);
    cpio.add_dir(".", &m(0o755)).unwrap();
    cpio.add_file("init", &m(0o755), b"#!/init\n").unwrap();
    cpio.add_file("rootfs.sqsh", &m(0o644), &fs::read(&sq).unwrap())
        .unwrap();
    let cpio = cpio.finish().unwrap();
    let bytes = match compression {
        Compression::Zstd => zstd::bulk::compress(&cpio, 3).unwrap(),
        Compression::Xz => {
            let mut w = xz::XzWriter::new(Vec::new(), 0);
            w.write_all(&cpio).unwrap();
            w.finish().unwrap()
        }
    };
    let path = dir.join(match compression {
        Compression::Zstd => "initramfs-zstd.xz",
        Compression::Xz => "initramfs-xz.xz",
    });
    fs::write(&path, bytes).unwrap();
    path
}

fn manifest(name: &str, constraint: &str) -> String {
    format!(
        "version: v1alpha1\nmetadata:\n  name: {name}\n  version: \"1.0\"\n  author: Test\n  \
         description: |\n    [test] {name}\n  compatibility:\n    talos:\n      version: \"{constraint}\"\n"
    )
}

/// An extension tree `name` under `dir` with the given rootfs files.
fn ext(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> ExtensionTree {
    let d = dir.join("exts").join(name);
    fs::create_dir_all(d.join("rootfs")).unwrap();
    fs::write(d.join("manifest.yaml"), manifest(name, ">= v1.5.0")).unwrap();
    for (rel, data) in files {
        write(&d.join("rootfs"), rel, data);
    }
    ExtensionTree {
        dir: d,
        cache_key: Some(format!("sha256:{name}")),
    }
}

fn opts(compression: Compression) -> InitramfsOptions {
    InitramfsOptions {
        talos_version: if compression == Compression::Zstd {
            (1, 11, 6)
        } else {
            (1, 7, 0)
        },
        kernel_modules_path: "/usr/lib/modules".into(),
        firmware_path: "/usr/lib/firmware".into(),
        squashfs_compression: compression,
        cpio_compression: compression,
        mtime: MTIME,
    }
}

fn sample_exts(dir: &Path) -> Vec<ExtensionTree> {
    vec![
        ext(
            dir,
            "intel-ucode",
            &[("usr/lib/firmware/intel-ucode/06-8e-09", b"INTEL")],
        ),
        ext(
            dir,
            "amd-ucode",
            &[
                (
                    "usr/lib/firmware/amd-ucode/microcode_amd_fam17h.bin",
                    b"AMD17",
                ),
                (
                    "usr/lib/firmware/amd-ucode/microcode_amd_fam19h.bin",
                    b"AMD19",
                ),
            ],
        ),
        ext(
            dir,
            "tool",
            &[
                ("usr/local/bin/tool", b"#!/bin/sh\n"),
                ("usr/lib/firmware/vendor/x.bin", b"vendor firmware"),
            ],
        ),
    ]
}

/// Builds into memory; checks the work directory is left empty.
fn build_to_vec(
    base: &Path,
    exts: &[ExtensionTree],
    opts: &InitramfsOptions,
    cache: Option<&dyn SquashfsCache>,
    work: &Path,
) -> Result<(Vec<u8>, BuildStats), InitramfsError> {
    let mut out = Vec::new();
    let r = build_initramfs(base, exts, opts, cache, work, &mut out);
    if work.exists() {
        assert_eq!(
            fs::read_dir(work).unwrap().count(),
            0,
            "work dir not cleaned"
        );
    }
    r.map(|s| (out, s))
}

#[test]
fn synthetic_build_has_upstream_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base(tmp.path(), Compression::Zstd);
    let mut exts = sample_exts(tmp.path());
    let sch = tmp.path().join("schematic");
    let id = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
    write_schematic_extension(
        &sch,
        id,
        "customization: {}\n",
        "https://factory.talos.dev/",
        true,
    )
    .unwrap();
    exts.push(ExtensionTree {
        dir: sch,
        cache_key: None,
    });
    let work = tmp.path().join("work");
    let (bytes, stats) = build_to_vec(&base, &exts, &opts(Compression::Zstd), None, &work).unwrap();
    assert_eq!(
        stats.layers,
        ["intel-ucode", "amd-ucode", "tool", "schematic"]
    );
    assert_eq!(stats.total_bytes, bytes.len() as u64);
    let out = tmp.path().join("out");
    fs::write(&out, &bytes).unwrap();
    let p = parse_initramfs(&out).unwrap();
    assert_eq!(p.archives.len(), 3);
    assert_eq!(
        p.read_entry(0, "kernel/x86/microcode/GenuineIntel.bin")
            .unwrap(),
        b"INTEL"
    );
    assert_eq!(
        p.read_entry(0, "kernel/x86/microcode/AuthenticAMD.bin")
            .unwrap(),
        b"AMD17AMD19"
    );
    assert_eq!(p.archive_bytes(1).unwrap(), fs::read(&base).unwrap());
    assert_eq!(
        p.last_archive().unwrap().entries,
        [
            "0.sqsh",
            "1.sqsh",
            "2.sqsh",
            "3.sqsh",
            "extensions.yaml",
            "usr",
            "usr/lib",
            "usr/lib/firmware",
            "usr/lib/firmware/amd-ucode",
            "usr/lib/firmware/intel-ucode",
            "usr/lib/firmware/vendor",
            "usr/lib/firmware/vendor/x.bin"
        ]
    );
    assert_eq!(
        p.read_entry(2, "usr/lib/firmware/vendor/x.bin").unwrap(),
        b"vendor firmware"
    );
    assert_eq!(
        p.extensions_yaml.as_deref().unwrap(),
        "layers:\n    - image: 0.sqsh\n      metadata:\n        name: intel-ucode\n        version: \"1.0\"\n        \
         author: Test\n        description: |\n            [test] intel-ucode\n        compatibility:\n            \
         talos:\n                version: '>= v1.5.0'\n    - image: 1.sqsh\n      metadata:\n        name: amd-ucode\n        \
         version: \"1.0\"\n        author: Test\n        description: |\n            [test] amd-ucode\n        \
         compatibility:\n            talos:\n                version: '>= v1.5.0'\n    - image: 2.sqsh\n      \
         metadata:\n        name: tool\n        version: \"1.0\"\n        author: Test\n        description: |\n            \
         [test] tool\n        compatibility:\n            talos:\n                version: '>= v1.5.0'\n    \
         - image: 3.sqsh\n      metadata:\n        name: schematic\n        \
         version: 376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba\n        \
         author: Image Factory (https://factory.talos.dev/)\n        description: Virtual extension which specifies \
         the schematic of the image built with schematic.\n        compatibility:\n            talos:\n                \
         version: '>= 1.0.0'\n        extraInfo: |\n            customization: {}\n"
    );
    assert_eq!(
        p.squashfs_paths("2.sqsh").unwrap(),
        [
            "/",
            "/usr",
            "/usr/lib",
            "/usr/local",
            "/usr/local/bin",
            "/usr/local/bin/tool"
        ]
    );
    assert_eq!(
        p.squashfs_file("2.sqsh", "/usr/local/bin/tool").unwrap(),
        b"#!/bin/sh\n"
    );
    assert_eq!(
        p.squashfs_paths("0.sqsh").unwrap(),
        ["/", "/usr", "/usr/lib"]
    );
    // The input trees are untouched.
    assert!(
        exts[0]
            .dir
            .join("rootfs/usr/lib/firmware/intel-ucode/06-8e-09")
            .exists()
    );

    let (again, _) = build_to_vec(&base, &exts, &opts(Compression::Zstd), None, &work).unwrap();
    assert!(again == bytes, "not reproducible");
}

#[test]
fn xz_build_for_old_talos() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base(tmp.path(), Compression::Xz);
    let exts = sample_exts(tmp.path());
    let work = tmp.path().join("work");
    let (bytes, _) = build_to_vec(&base, &exts, &opts(Compression::Xz), None, &work).unwrap();
    let out = tmp.path().join("out");
    fs::write(&out, &bytes).unwrap();
    let p = parse_initramfs(&out).unwrap();
    let kinds: Vec<_> = p.archives.iter().map(|a| a.compression).collect();
    assert_eq!(
        kinds,
        [
            ArchiveCompression::None,
            ArchiveCompression::Xz,
            ArchiveCompression::Xz
        ]
    );
    assert_eq!(p.archive_bytes(1).unwrap(), fs::read(&base).unwrap());
    assert_eq!(p.layer_names(), ["intel-ucode", "amd-ucode", "tool"]);
    assert_eq!(
        p.squashfs_file("2.sqsh", "/usr/local/bin/tool").unwrap(),
        b"#!/bin/sh\n"
    );
    assert_eq!(
        p.read_entry(0, "kernel/x86/microcode/AuthenticAMD.bin")
            .unwrap(),
        b"AMD17AMD19"
    );
}

#[test]
fn no_extensions_gives_the_base_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base(tmp.path(), Compression::Zstd);
    let (bytes, stats) = build_to_vec(
        &base,
        &[],
        &opts(Compression::Zstd),
        None,
        &tmp.path().join("work"),
    )
    .unwrap();
    assert_eq!(bytes, fs::read(&base).unwrap());
    assert!(stats.layers.is_empty());
}

#[test]
fn rejected_extension_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base(tmp.path(), Compression::Zstd);
    let mut exts = sample_exts(tmp.path());
    fs::write(
        exts[2].dir.join("manifest.yaml"),
        manifest("tool", "< v1.0.0"),
    )
    .unwrap();
    exts.swap(0, 2);
    let work = tmp.path().join("work");
    let mut out = Vec::new();
    let err = build_initramfs(
        &base,
        &exts,
        &opts(Compression::Zstd),
        None,
        &work,
        &mut out,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("\"tool\" (#0"), "{text}");
    assert!(
        text.contains("can't be satisfied with Talos version v1.11.6"),
        "{text}"
    );
    assert!(out.is_empty());

    let missing = tmp.path().join("nope");
    let err = build_initramfs(
        &missing,
        &exts,
        &opts(Compression::Zstd),
        None,
        &work,
        &mut out,
    )
    .unwrap_err();
    assert!(matches!(err, InitramfsError::Base { .. }), "{err}");
    let err = build_initramfs(
        &base,
        &exts,
        &InitramfsOptions {
            firmware_path: "/../x".into(),
            ..opts(Compression::Zstd)
        },
        None,
        &work,
        &mut out,
    )
    .unwrap_err();
    assert!(matches!(err, InitramfsError::Options(_)), "{err}");
}

/// An in-memory index over files kept in a directory.
#[derive(Default)]
struct MemCache {
    dir: PathBuf,
    entries: Mutex<HashMap<String, PathBuf>>,
}

impl SquashfsCache for MemCache {
    fn get(&self, key: &str) -> Option<PathBuf> {
        self.entries.lock().unwrap().get(key).cloned()
    }

    fn put(&self, key: &str, squashfs: &Path) -> io::Result<()> {
        let dest = self.dir.join(key);
        fs::copy(squashfs, &dest)?;
        self.entries.lock().unwrap().insert(key.to_string(), dest);
        Ok(())
    }
}

#[test]
fn cache_hits_skip_the_trees_and_damaged_entries_are_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base(tmp.path(), Compression::Zstd);
    let exts = sample_exts(tmp.path());
    let cache = MemCache {
        dir: tmp.path().to_path_buf(),
        ..MemCache::default()
    };
    let work = tmp.path().join("work");
    let o = opts(Compression::Zstd);
    let (cold, s) = build_to_vec(&base, &exts, &o, Some(&cache), &work).unwrap();
    assert_eq!((s.cache_hits, s.squashfs_built), (0, 3));
    assert_eq!(cache.entries.lock().unwrap().len(), 3);
    for e in &exts {
        fs::remove_dir_all(e.dir.join("rootfs")).unwrap();
        fs::create_dir(e.dir.join("rootfs")).unwrap();
    }
    let (warm, s) = build_to_vec(&base, &exts, &o, Some(&cache), &work).unwrap();
    assert_eq!((s.cache_hits, s.squashfs_built), (3, 0));
    assert!(cold == warm, "a warm build differs from the cold one");

    // A truncated entry is not used: the extension is built again (from the now empty tree).
    let key = cache.entries.lock().unwrap().keys().next().unwrap().clone();
    let path = cache.get(&key).unwrap();
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let (_, s) = build_to_vec(&base, &exts, &o, Some(&cache), &work).unwrap();
    assert_eq!((s.cache_hits, s.squashfs_built), (2, 1));
}

/// A cache that records the squashfs progress it is told, slowly for the first built image.
#[derive(Default)]
struct ProgressCache {
    inner: MemCache,
    seen: Mutex<Vec<(usize, usize)>>,
}

impl SquashfsCache for ProgressCache {
    fn get(&self, key: &str) -> Option<PathBuf> {
        self.inner.get(key)
    }

    fn put(&self, key: &str, squashfs: &Path) -> io::Result<()> {
        self.inner.put(key, squashfs)
    }

    fn squashfs_progress(&self, done: usize, total: usize) {
        if done == 1 {
            // Another worker finishing meanwhile must not overtake this report.
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        self.seen.lock().unwrap().push((done, total));
    }
}

/// Progress reports arrive in order (never `2/3` then `1/3`), ending at the total, however
/// the workers interleave.
#[test]
fn squashfs_progress_is_reported_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base(tmp.path(), Compression::Zstd);
    let exts = sample_exts(tmp.path());
    let cache = ProgressCache {
        inner: MemCache {
            dir: tmp.path().to_path_buf(),
            ..MemCache::default()
        },
        ..ProgressCache::default()
    };
    let work = tmp.path().join("work");
    build_to_vec(&base, &exts, &opts(Compression::Zstd), Some(&cache), &work).unwrap();
    let seen = cache.seen.into_inner().unwrap();
    assert_eq!(seen, vec![(0, 3), (1, 3), (2, 3), (3, 3)]);
}

#[test]
fn cache_keys_cover_build_parameters() {
    let layout = TreeLayout {
        firmware: "usr/lib/firmware".into(),
        modules: "usr/lib/modules".into(),
    };
    let p = params(Compression::Zstd);
    let k = bundle_cache_key("sha256:a", &p, &layout);
    assert_eq!(k, bundle_cache_key("sha256:a", &p, &layout));
    assert_ne!(k, bundle_cache_key("sha256:b", &p, &layout));
    assert_ne!(
        k,
        bundle_cache_key("sha256:a", &SquashParams { zstd_level: 4, ..p }, &layout)
    );
    assert_ne!(
        k,
        bundle_cache_key("sha256:a", &SquashParams { mtime: 1, ..p }, &layout)
    );
    assert_ne!(
        k,
        bundle_cache_key("sha256:a", &params(Compression::Xz), &layout)
    );
    let old = TreeLayout {
        firmware: "lib/firmware".into(),
        modules: "lib/modules".into(),
    };
    assert_ne!(k, bundle_cache_key("sha256:a", &p, &old));
}

#[test]
fn schematic_extension_matches_the_factory() {
    let tmp = tempfile::tempdir().unwrap();
    let id = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
    let dir = tmp.path().join("s");
    write_schematic_extension(
        &dir,
        id,
        "customization: {}\n",
        "https://factory.talos.dev/",
        true,
    )
    .unwrap();
    // docs/formats.md §Schematic extension, byte for byte.
    assert_eq!(
        fs::read_to_string(dir.join("manifest.yaml")).unwrap(),
        "version: v1alpha1\nmetadata:\n    name: schematic\n    \
         version: 376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba\n    \
         author: Image Factory (https://factory.talos.dev/)\n    description: Virtual extension which \
         specifies the schematic of the image built with schematic.\n    compatibility:\n        talos:\n            \
         version: '>= 1.0.0'\n    extraInfo: |\n        customization: {}\n"
    );
    let marker = dir.join("rootfs/usr/local/share/schematic").join(id);
    assert_eq!(fs::read(&marker).unwrap(), b"");
    let top: Vec<String> = {
        let mut v: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(top, ["manifest.yaml", "rootfs"]);
    assert_eq!(
        manifest::load_extension(&dir, (1, 11, 6)).unwrap().version,
        id
    );

    let old = tmp.path().join("old");
    write_schematic_extension(
        &old,
        id,
        "customization: {}\n",
        "https://factory.talos.dev/",
        false,
    )
    .unwrap();
    assert!(
        !fs::read_to_string(old.join("manifest.yaml"))
            .unwrap()
            .contains("extraInfo")
    );
    assert!(write_schematic_extension(&old, "../x", "", "", true).is_err());
}

/// Found by the `initramfs_parse` fuzz target: a squashfs whose file inode names a fragment
/// beyond the fragment table made backhand 0.23 panic (index out of bounds) when the file was
/// read — in `squashfs_file` and in the modules.dep builder's `extract_squashfs_subtree`, which
/// reads imported rootfs and extension squashfs images. Both now refuse it with an error.
#[test]
fn squashfs_fragment_index_out_of_range_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("initramfs");
    fs::write(
        &path,
        include_bytes!(
            "../../../fuzz/regressions/initramfs_parse/squashfs-fragment-index-out-of-range"
        ),
    )
    .unwrap();
    let parsed = parse_initramfs(&path).unwrap();
    let index = parsed.archives.len() - 1;
    let sqsh: Vec<String> = parsed.archives[index]
        .entries
        .iter()
        .filter(|e| e.ends_with(".sqsh"))
        .cloned()
        .collect();
    let mut refused = 0;
    for name in &sqsh {
        let Ok(paths) = parsed.squashfs_paths(name) else {
            continue;
        };
        for p in &paths {
            if let Err(e) = parsed.squashfs_file(name, p) {
                refused += usize::from(e.to_string().contains("fragment index"));
            }
        }
        let image = tmp.path().join(name);
        fs::write(&image, parsed.read_entry(index, name).unwrap()).unwrap();
        let dest = tmp.path().join(format!("{name}.out"));
        let err = modules::extract_squashfs_subtree(&image, Path::new(""), &dest).unwrap_err();
        assert!(err.to_string().contains("fragment index"), "{err}");
    }
    assert!(refused > 0, "no file of {sqsh:?} hit the fragment check");
}

/// Found by the `squashfs_extract` fuzz target: a fragment offset beyond the fragment made
/// backhand 0.23 panic (slice range out of bounds) while the modules.dep builder extracted an
/// imported squashfs. Any backhand panic is now contained, and backhand 0.25 reports this one
/// as a read error; either way it is a corrupt squashfs, not an I/O error of ours.
#[test]
fn squashfs_reader_panic_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image.sqsh");
    fs::write(
        &image,
        include_bytes!(
            "../../../fuzz/regressions/squashfs_extract/fragment-offset-out-of-range.sqsh"
        ),
    )
    .unwrap();
    let err = modules::extract_squashfs_subtree(&image, Path::new(""), &tmp.path().join("out"))
        .unwrap_err();
    assert!(
        matches!(&err, InitramfsError::Squashfs { message, .. } if message.contains("corrupt squashfs")),
        "{err}"
    );
}
