//! The initramfs with system extensions: a pure-Rust rebuild of Talos's imager step
//! (`pkg/imager/imager.go` `buildInitramfs`, `pkg/imager/extensions`, `internal/pkg/extensions`;
//! `docs/formats.md` §Initramfs with extensions).
//!
//! [`build_initramfs`] takes the base `initramfs.xz` and flattened extension trees
//! (`manifest.yaml` + `rootfs/`) and streams:
//!
//! ```text
//! [early microcode: uncompressed newc cpio kernel/x86/microcode/{AuthenticAMD,GenuineIntel}.bin]  (if any)
//! [the base initramfs, byte for byte]
//! [zstd (≥ 1.8) / xz (< 1.8) newc cpio: 0.sqsh … N.sqsh, extensions.yaml, modules.dep.sqsh, <firmware>/…]
//! ```
//!
//! What it does like upstream: extension directories are named `0…N-1` in the order given and
//! processed sorted *as strings* (`0,1,10,11,2,…`), which is the layer order of
//! `extensions.yaml` and the overlay order at boot; microcode goes to the early archive,
//! the remaining firmware to the initramfs root (not the squashfs); each rootfs without its
//! firmware becomes a root-owned squashfs (128 KiB blocks); a `modules.dep` layer from
//! `depmod` is appended last whenever an extension carries kernel modules; manifests are
//! checked (`v1alpha1`, metadata, exactly `manifest.yaml` + `rootfs/`, the Talos version
//! constraint against the target version).
//!
//! What it does differently, on purpose:
//!
//! - **Reproducible**: every mtime is [`InitramfsOptions::mtime`], all entries are owned by
//!   0:0, and the squashfs images are written in a fixed order; the same inputs give the same
//!   bytes (upstream's mtimes are wall-clock).
//! - **Fast outer compression**: the appended archive is zstd at level
//!   [`CPIO_ZSTD_LEVEL`] instead of `zstd -T0 -18`. It mostly holds squashfs images that are
//!   already compressed, so level 18 spends most of the build time and saves almost nothing.
//!   The format is still a single zstd frame with the default window (no long mode), which the
//!   kernel accepts at any level.
//! - **Squashfs level**: zstd level [`SQUASHFS_ZSTD_LEVEL`] instead of 18 (see that constant).
//! - **Cached**: the squashfs and firmware/microcode split of an extension with a
//!   [`ExtensionTree::cache_key`] is kept through a [`SquashfsCache`]; a new schematic whose
//!   extensions were built before only assembles the archives.
//! - **Streamed**: the base initramfs, squashfs images and output are never held in memory.
//! - Firmware symlinks stay symlinks (upstream's move follows symlinks to directories).
//!
//! # Output contract
//!
//! Bytes go to `out` only after everything that can fail for a reason other than I/O (manifest
//! checks, squashfs builds, `depmod`) has succeeded. An I/O error or a kill while streaming
//! can still leave a prefix in `out` (the early archive and the base alone would even boot,
//! without the extensions), so **callers write `out` to a temporary file and commit (rename)
//! it only when [`build_initramfs`] returns `Ok`**; on `Err` the file is discarded. The work
//! directory is cleaned on return, on error and on panic (a killed process leaves it to the
//! caller's temporary directory).
//!
//! # Limits
//!
//! - The root directory inode of each squashfs has mtime 0 (backhand has no setter for it);
//!   every other inode has [`InitramfsOptions::mtime`]. Files are not deduplicated.
//! - liblzma is not a direct dependency: the xz archive (Talos < 1.8) is written by splicing
//!   backhand-compressed chunks into one stream, and an xz *base* is decompressed in memory
//!   when `modules.dep` has to be generated from it.

mod assemble;
mod constraint;
mod manifest;
mod modules;
#[cfg(any(feature = "testkit", feature = "fuzzing"))]
mod parse;
mod squash;
mod untrusted;
use crate::formats::xz;
mod yaml;

#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest as _, Sha256};

use assemble::{Source, Stage, write_archive};
use squash::{Bundle, FirmwareKind, Span, SquashParams, TreeLayout};
use yaml::Node;

pub use manifest::ExtensionMetadata;
pub use modules::depmod_available;
#[cfg(any(feature = "testkit", feature = "fuzzing"))]
pub use parse::{ArchiveCompression, ArchiveInfo, LayerInfo, ParsedInitramfs, parse_initramfs};
pub use squash::SQUASHFS_BLOCK_SIZE;
// The fuzzing harnesses (`crate::fuzzing`) drive these two readers of imported content.
#[cfg(feature = "fuzzing")]
pub(crate) use manifest::check_writable as fuzz_check_writable;
#[cfg(feature = "fuzzing")]
pub(crate) use manifest::parse_manifest as fuzz_parse_manifest;
#[cfg(feature = "fuzzing")]
pub(crate) use modules::extract_squashfs_subtree as fuzz_extract_squashfs_subtree;

/// zstd level of the extension squashfs images (Talos: 18).
///
/// backhand compresses one image on one thread, so the largest extension bounds a cold build
/// however many cores there are, while upstream's `mksquashfs` and `zstd -T0` scale with cores.
/// Level 18 runs at ≈ 4 MB/s per core (≈ 12 s for a 50 MB extension); level 9 at ≈ 37 MB/s
/// (≈ 1.5 s), for images ≈ 2 % larger on the benchmark data (`benches/README.md`, section
/// "initramfs": cold builds at ≈ 0.05× upstream's time on two cores). Images are cached per
/// extension, and the kernel decompresses any level at the same speed.
pub const SQUASHFS_ZSTD_LEVEL: i32 = 9;

/// zstd level of the appended (outer) cpio archive (Talos: `zstd -T0 -18`). The archive is
/// mostly already-compressed squashfs: on the benchmark, `-18` takes 30–40 s for the same
/// size `-1` reaches in 0.1 s. Level 3 is as fast on squashfs data and still compresses the
/// firmware files the archive carries.
pub const CPIO_ZSTD_LEVEL: i32 = 3;

/// xz preset of squashfs images for Talos < 1.8 (`mksquashfs -comp xz` default).
pub const SQUASHFS_XZ_PRESET: u32 = 6;

/// xz preset of the appended archive for Talos < 1.8 (Talos: `xz -0 -e`).
pub const CPIO_XZ_PRESET: u32 = 0;

/// A flattened extension image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionTree {
    /// Directory holding `manifest.yaml` and `rootfs/` (read, never modified).
    pub dir: PathBuf,
    /// Stable identity of the content (e.g. the image manifest digest) for the squashfs cache;
    /// `None` builds it every time.
    pub cache_key: Option<String>,
}

/// Compression of squashfs images and of the appended archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// zstd (Talos ≥ 1.8).
    Zstd,
    /// xz (Talos < 1.8).
    Xz,
}

/// Build parameters that depend on the target Talos version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitramfsOptions {
    /// Target Talos version `(major, minor, patch)`, checked against extension constraints.
    pub talos_version: (u64, u64, u64),
    /// Kernel modules directory in rootfs trees: `/usr/lib/modules` (≥ 1.10) or `/lib/modules`.
    pub kernel_modules_path: String,
    /// Firmware directory: `/usr/lib/firmware` (≥ 1.10) or `/lib/firmware`.
    pub firmware_path: String,
    /// Compression of the squashfs images: zstd (≥ 1.8) or xz.
    pub squashfs_compression: Compression,
    /// Compression of the appended cpio archive: zstd (≥ 1.8) or xz.
    pub cpio_compression: Compression,
    /// Modification time of everything written (archive entries, squashfs inodes).
    pub mtime: u32,
}

/// Keeps finished extension bundles (squashfs image + firmware/microcode split, one file per
/// key) across builds. Implementations must be safe to call from several threads.
pub trait SquashfsCache: Send + Sync {
    /// The file stored under `key`, if any. A file that is not a complete bundle is ignored
    /// (and replaced by a fresh `put`).
    fn get(&self, key: &str) -> Option<PathBuf>;
    /// Stores a copy of the file `squashfs` under `key` (the file is removed after the build).
    fn put(&self, key: &str, squashfs: &Path) -> io::Result<()>;
    /// Called as the build goes through the extensions' squashfs images: `done` of `total`
    /// (cached ones count as done at once). For progress reports; does nothing by default.
    fn squashfs_progress(&self, _done: usize, _total: usize) {}
}

/// What a build did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// Layer names in `extensions.yaml` order (`metadata.name`, `modules.dep` last).
    pub layers: Vec<String>,
    /// Extensions whose bundle came from the cache.
    pub cache_hits: usize,
    /// Extensions whose squashfs was built.
    pub squashfs_built: usize,
    /// Cache `put`s that failed (the build still succeeded).
    pub cache_put_failures: usize,
    /// Kernel version of the `modules.dep` layer, if one was generated.
    pub modules_kernel_version: Option<String>,
    /// Bytes of the early (uncompressed) microcode archive.
    pub early_cpio_bytes: u64,
    /// Bytes of the base initramfs copied.
    pub base_bytes: u64,
    /// Bytes of the appended compressed archive.
    pub extensions_archive_bytes: u64,
    /// Uncompressed size of the appended archive.
    pub extensions_archive_uncompressed_bytes: u64,
    /// Total bytes written to `out`.
    pub total_bytes: u64,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// An extension was rejected; `extension` names it (manifest name, position, directory).
    #[error("extension {extension}: {reason}")]
    Extension {
        /// The extension: `"name" (#index, dir)`.
        extension: String,
        /// What is wrong.
        reason: String,
    },
    /// The base initramfs is unusable.
    #[error("base initramfs {path}: {reason}")]
    Base {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An extension has kernel modules, and `depmod` is not installed.
    #[error(
        "depmod (package kmod) is required for extensions with kernel modules, and it is not installed"
    )]
    DepmodMissing,
    /// `depmod` failed.
    #[error("depmod: {0}")]
    Depmod(String),
    /// Writing or reading a squashfs image failed.
    #[error("{context}: {message}")]
    Squashfs {
        /// What was being done.
        context: String,
        /// backhand's error.
        message: String,
    },
    /// The options are inconsistent.
    #[error("invalid initramfs options: {0}")]
    Options(String),
    /// An initramfs could not be parsed ([`parse_initramfs`]).
    #[error("{0}")]
    Format(String),
    /// A file operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Runs `read`, which reads a squashfs image with backhand, turning a panic into an
/// [`InitramfsError::Squashfs`]. backhand 0.23 indexed several on-disk values without bounds
/// checks (a fragment's index and its offset, found by fuzzing), and these images come from
/// imported, untrusted content: a corrupt one must fail the build, not panic its thread.
/// A stack overflow is not a panic and cannot be caught here: open images with
/// [`untrusted::open`], which bounds the recursion depth first.
pub(crate) fn contain_squashfs_panic<T>(
    context: impl FnOnce() -> String,
    read: impl FnOnce() -> Result<T, InitramfsError>,
) -> Result<T, InitramfsError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        Err(InitramfsError::Squashfs {
            context: context(),
            message: format!("corrupt squashfs (reader failed: {why})"),
        })
    })
}

/// Checks what backhand 0.23 indexed without a bounds check when a file's data is read (0.25
/// checks it; kept so that a regression cannot bring the panic back): its fragment index must
/// name an entry of the fragment table. Call before `FilesystemReader::file(..).reader()`.
pub(crate) fn check_squashfs_file(
    fs: &backhand::FilesystemReader,
    file: &backhand::SquashfsFileReader,
) -> Result<(), String> {
    let index = file.frag_index();
    if index == 0xffff_ffff {
        return Ok(());
    }
    match &fs.fragments {
        Some(table) if index >= table.len() => Err(format!(
            "corrupt squashfs: fragment index {index} beyond the fragment table ({} entries)",
            table.len()
        )),
        _ => Ok(()),
    }
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> InitramfsError {
    let context = context.into();
    move |source| InitramfsError::Io { context, source }
}

/// How an archive or initramfs file starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Magic {
    Zstd,
    Xz,
    Cpio,
}

pub(crate) const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

pub(crate) fn magic_of(head: &[u8]) -> Option<Magic> {
    if head.starts_with(&ZSTD_MAGIC) {
        Some(Magic::Zstd)
    } else if head.starts_with(xz::XZ_MAGIC) {
        Some(Magic::Xz)
    } else if head.starts_with(b"07070") {
        Some(Magic::Cpio)
    } else {
        None
    }
}

/// `/usr/lib/firmware` → `usr/lib/firmware`, refusing anything that could leave the tree.
fn tree_path(what: &str, p: &str) -> Result<PathBuf, InitramfsError> {
    let rel = Path::new(p.trim_start_matches('/'));
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(InitramfsError::Options(format!(
            "{what} {p:?} is not an absolute path like /usr/lib/{what}"
        )));
    }
    Ok(rel.to_path_buf())
}

/// A private directory under the caller's work directory, removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn create(work_dir: &Path) -> Result<Scratch, InitramfsError> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        fs::create_dir_all(work_dir).map_err(io_err(format!("create {}", work_dir.display())))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = work_dir.join(format!(
            "initramfs-{}-{}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        Ok(Scratch { dir })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Counts bytes passed to the inner writer.
struct Counting<W: Write> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The cache key of an extension's bundle: its content identity plus every parameter the
/// bundle bytes depend on.
fn bundle_cache_key(content: &str, params: &SquashParams, layout: &TreeLayout) -> String {
    let mut h = Sha256::new();
    for line in [
        "bootfactory initramfs extension bundle".to_string(),
        squash::BUNDLE_FORMAT.to_string(),
        format!("content: {content}"),
        params.describe(),
        format!("firmware: /{}", layout.firmware.display()),
        format!("modules: /{}", layout.modules.display()),
    ] {
        h.update(line.as_bytes());
        h.update(b"\n");
    }
    format!("initramfs-bundle-{}", hex::encode(h.finalize()))
}

/// An extension after validation.
struct Loaded<'a> {
    tree: &'a ExtensionTree,
    /// Directory name upstream gives it (its position in the input).
    dir_name: String,
    metadata: ExtensionMetadata,
}

fn describe(index: usize, name: Option<&str>, dir: &Path) -> String {
    match name {
        Some(n) => format!("{n:?} (#{index}, {})", dir.display()),
        None => format!("#{index} ({})", dir.display()),
    }
}

/// Total size of regular files below `dir` (to schedule big builds first).
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(read) = fs::read_dir(&d) else { continue };
        for e in read.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Gets every extension's bundle: from the cache, or built (in parallel, biggest first).
fn resolve_bundles(
    loaded: &[Loaded<'_>],
    layout: &TreeLayout,
    params: &SquashParams,
    cache: Option<&dyn SquashfsCache>,
    scratch: &Path,
    stats: &mut BuildStats,
) -> Result<Vec<Bundle>, InitramfsError> {
    let mut bundles: Vec<Option<Bundle>> = vec![None; loaded.len()];
    let mut keys: Vec<Option<String>> = vec![None; loaded.len()];
    let mut jobs = Vec::new();
    for (i, l) in loaded.iter().enumerate() {
        let key = l
            .tree
            .cache_key
            .as_deref()
            .map(|k| bundle_cache_key(k, params, layout));
        if let (Some(cache), Some(key)) = (cache, &key)
            && let Some(path) = cache.get(key)
            && let Some(b) = squash::open_bundle(&path)
        {
            bundles[i] = Some(b);
            stats.cache_hits += 1;
            continue;
        }
        keys[i] = key;
        jobs.push((i, tree_bytes(&l.tree.dir.join("rootfs"))));
    }
    jobs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let total = loaded.len();
    let done = AtomicUsize::new(total - jobs.len());
    if let Some(cache) = cache {
        cache.squashfs_progress(done.load(Ordering::Relaxed), total);
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<Bundle, InitramfsError>)>> = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(jobs.len());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(i, _)) = jobs.get(j) else { break };
                    let l = &loaded[i];
                    let dest = scratch.join(format!("bundle-{i}"));
                    let r = squash::build_bundle(&l.tree.dir.join("rootfs"), layout, params, &dest)
                        .map_err(|e| match e {
                            InitramfsError::Extension { reason, .. } => InitramfsError::Extension {
                                extension: describe(i, Some(&l.metadata.name), &l.tree.dir),
                                reason,
                            },
                            other => InitramfsError::Extension {
                                extension: describe(i, Some(&l.metadata.name), &l.tree.dir),
                                reason: crate::errors::chain(&other),
                            },
                        });
                    let failed = r.is_err();
                    let mut finished = results.lock().expect("results lock");
                    finished.push((i, r));
                    // Reported under the lock, so reports arrive in order.
                    if let Some(cache) = cache {
                        cache.squashfs_progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
                    }
                    drop(finished);
                    if failed {
                        // Let the other workers stop after their current extension.
                        next.store(usize::MAX / 2, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|(i, _)| *i);
    for (i, r) in results {
        let b = r?;
        stats.squashfs_built += 1;
        if let (Some(cache), Some(key)) = (cache, &keys[i])
            && cache.put(key, &b.path).is_err()
        {
            stats.cache_put_failures += 1;
        }
        bundles[i] = Some(b);
    }
    bundles
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            b.ok_or_else(|| InitramfsError::Extension {
                extension: describe(i, Some(&loaded[i].metadata.name), &loaded[i].tree.dir),
                reason: "squashfs was not built".into(),
            })
        })
        .collect()
}

fn copy_stream(from: &mut dyn Read, to: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Builds the initramfs with `extensions` (in schematic order, the virtual `schematic`
/// extension last) on top of `base`, streaming it into `out`.
///
/// `work_dir` is scratch space (created if missing; what the build puts there is removed
/// before it returns). Extension trees are only read. See the module documentation for the
/// output layout and for the contract on `out` when an error is returned.
pub fn build_initramfs(
    base: &Path,
    extensions: &[ExtensionTree],
    opts: &InitramfsOptions,
    cache: Option<&dyn SquashfsCache>,
    work_dir: &Path,
    out: &mut dyn Write,
) -> Result<BuildStats, InitramfsError> {
    let mut stats = BuildStats::default();
    let mut base_file = File::open(base).map_err(|e| InitramfsError::Base {
        path: base.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut head = [0u8; 6];
    let got = base_file
        .read(&mut head)
        .map_err(io_err(format!("read {}", base.display())))?;
    let magic = magic_of(&head[..got]).ok_or_else(|| InitramfsError::Base {
        path: base.to_path_buf(),
        reason: "not a zstd, xz or cpio archive".into(),
    })?;
    drop(base_file);

    if extensions.is_empty() {
        // Upstream uses the base unchanged when there is nothing to add.
        let mut f = File::open(base).map_err(io_err(format!("open {}", base.display())))?;
        stats.base_bytes = copy_stream(&mut f, out).map_err(io_err("write initramfs"))?;
        stats.total_bytes = stats.base_bytes;
        return Ok(stats);
    }

    let layout = TreeLayout {
        firmware: tree_path("firmware", &opts.firmware_path)?,
        modules: tree_path("modules", &opts.kernel_modules_path)?,
    };
    let params = SquashParams {
        compression: opts.squashfs_compression,
        zstd_level: SQUASHFS_ZSTD_LEVEL,
        xz_preset: SQUASHFS_XZ_PRESET,
        block_size: SQUASHFS_BLOCK_SIZE,
        mtime: opts.mtime,
    };

    // 1. Validate every extension before doing any work.
    let mut loaded = Vec::with_capacity(extensions.len());
    for (i, tree) in extensions.iter().enumerate() {
        let metadata = manifest::load_extension(&tree.dir, opts.talos_version).map_err(|r| {
            InitramfsError::Extension {
                extension: describe(i, r.name.as_deref(), &tree.dir),
                reason: r.reason,
            }
        })?;
        loaded.push(Loaded {
            tree,
            dir_name: i.to_string(),
            metadata,
        });
    }
    // 2. Upstream lists `<tmp>/extensions/` sorted by name: 0, 1, 10, 11, …, 2.
    let mut order: Vec<usize> = (0..loaded.len()).collect();
    order.sort_by(|&a, &b| loaded[a].dir_name.cmp(&loaded[b].dir_name));

    let scratch = Scratch::create(work_dir)?;
    // 3. Squashfs images and firmware/microcode splits.
    let bundles = resolve_bundles(&loaded, &layout, &params, cache, &scratch.dir, &mut stats)?;
    // 4. modules.dep, when any extension carries kernel modules.
    let with_modules: Vec<&Bundle> = order
        .iter()
        .map(|&i| &bundles[i])
        .filter(|b| b.index.has_modules)
        .collect();
    let modules_dep = if with_modules.is_empty() {
        None
    } else {
        Some(modules::build_modules_dep(
            base,
            magic,
            &layout.modules,
            &with_modules,
            &params,
            &scratch.dir,
        )?)
    };

    // 5. The staging tree and extensions.yaml.
    let mut stage = Stage::default();
    let mut layers = Vec::new();
    let mut intel = Vec::new();
    let mut amd = Vec::new();
    let fw_root = layout.firmware.to_string_lossy().into_owned();
    for &i in &order {
        let (l, b) = (&loaded[i], &bundles[i]);
        let image = format!("{}.sqsh", l.dir_name);
        stage.add_file(
            &image,
            0o644,
            Source::Ranges(vec![(
                b.path.clone(),
                Span {
                    offset: 0,
                    len: b.index.squashfs_len,
                },
            )]),
        );
        layers.push(Node::Map(vec![
            ("image", Node::str(&image)),
            ("metadata", l.metadata.to_node()),
        ]));
        stats.layers.push(l.metadata.name.clone());
        intel.extend(b.index.intel_ucode.map(|s| (b.path.clone(), s)));
        amd.extend(b.index.amd_ucode.map(|s| (b.path.clone(), s)));
        for e in &b.index.firmware {
            let path = if e.path.is_empty() {
                fw_root.clone()
            } else {
                format!("{fw_root}/{}", e.path)
            };
            match &e.kind {
                FirmwareKind::Dir => stage.add_dir(&path, e.mode),
                FirmwareKind::File(span) => {
                    stage.add_file(&path, e.mode, Source::Ranges(vec![(b.path.clone(), *span)]))
                }
                FirmwareKind::Symlink(target) => stage.add_symlink(&path, target),
            }
        }
    }
    if let Some(m) = &modules_dep {
        let len = fs::metadata(&m.squashfs)
            .map_err(io_err("stat modules.dep.sqsh"))?
            .len();
        stage.add_file(
            "modules.dep.sqsh",
            0o644,
            Source::Ranges(vec![(m.squashfs.clone(), Span { offset: 0, len })]),
        );
        let md = ExtensionMetadata {
            name: "modules.dep".into(),
            version: m.kernel_version.clone(),
            author: "Talos Machinery".into(),
            description: "Combined modules.dep for all extensions".into(),
            ..ExtensionMetadata::default()
        };
        layers.push(Node::Map(vec![
            ("image", Node::str("modules.dep.sqsh")),
            ("metadata", md.to_node()),
        ]));
        stats.layers.push(md.name);
        stats.modules_kernel_version = Some(m.kernel_version.clone());
    }
    let extensions_yaml = yaml::document(&[("layers", Node::Seq(layers))]);
    stage.add_file(
        "extensions.yaml",
        0o644,
        Source::Bytes(extensions_yaml.into_bytes()),
    );
    if !intel.is_empty() {
        stage.add_file(
            "kernel/x86/microcode/GenuineIntel.bin",
            0o644,
            Source::Ranges(intel),
        );
    }
    if !amd.is_empty() {
        stage.add_file(
            "kernel/x86/microcode/AuthenticAMD.bin",
            0o644,
            Source::Ranges(amd),
        );
    }
    let (early, rest) = stage.listing();

    // 6. Stream: early archive, base, compressed archive.
    let mut out = Counting {
        inner: out,
        count: 0,
    };
    if !early.is_empty() {
        write_archive(&early, opts.mtime, &mut out)
            .map_err(io_err("write early microcode archive"))?;
    }
    stats.early_cpio_bytes = out.count;
    let mut f = File::open(base).map_err(io_err(format!("open {}", base.display())))?;
    stats.base_bytes = copy_stream(&mut f, &mut out).map_err(io_err("copy base initramfs"))?;
    let before = out.count;
    let mut uncompressed = Counting {
        inner: io::sink(),
        count: 0,
    };
    match opts.cpio_compression {
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(&mut out, CPIO_ZSTD_LEVEL)
                .map_err(io_err("zstd encoder"))?;
            enc.include_checksum(true).map_err(io_err("zstd encoder"))?;
            let tee = Tee {
                a: enc,
                b: &mut uncompressed,
            };
            let tee = write_archive(&rest, opts.mtime, tee)
                .map_err(io_err("write extensions archive"))?;
            tee.a.finish().map_err(io_err("finish zstd frame"))?;
        }
        Compression::Xz => {
            let enc = xz::XzWriter::new(&mut out, CPIO_XZ_PRESET);
            let tee = Tee {
                a: enc,
                b: &mut uncompressed,
            };
            let tee = write_archive(&rest, opts.mtime, tee)
                .map_err(io_err("write extensions archive"))?;
            tee.a.finish().map_err(io_err("finish xz stream"))?;
        }
    }
    out.flush().map_err(io_err("flush initramfs"))?;
    stats.extensions_archive_bytes = out.count - before;
    stats.extensions_archive_uncompressed_bytes = uncompressed.count;
    stats.total_bytes = out.count;
    drop(scratch);
    Ok(stats)
}

/// Writes to `a`, and counts into `b`.
struct Tee<A: Write, B: Write> {
    a: A,
    b: B,
}

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.a.write(buf)?;
        self.b.write_all(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.a.flush()
    }
}

/// Author of the virtual extension: `Image Factory (<external URL>)` (factory HEAD).
fn schematic_author(external_url: &str) -> String {
    if external_url.is_empty() {
        "Image Factory".to_string()
    } else {
        format!("Image Factory ({external_url})")
    }
}

/// Writes the virtual `schematic` extension (image-factory `internal/artifacts/schematic.go`,
/// `docs/formats.md` §Schematic extension) into `dir` (created; must not hold another extension):
/// `manifest.yaml` (yaml.v3 `Marshal` of the manifest: name `schematic`, version = the ID,
/// author `Image Factory (<external_url>)`, constraint `>= 1.0.0`, and the canonical schematic
/// YAML as `extraInfo` when the target Talos supports overlays, i.e. ≥ 1.7) and the empty file
/// `rootfs/usr/local/share/schematic/<schematic_id>`.
pub fn write_schematic_extension(
    dir: &Path,
    schematic_id: &str,
    canonical_yaml: &str,
    external_url: &str,
    talos_supports_overlay: bool,
) -> Result<(), InitramfsError> {
    if schematic_id.is_empty()
        || schematic_id == "."
        || schematic_id == ".."
        || schematic_id.contains(['/', '\0'])
    {
        return Err(InitramfsError::Options(format!(
            "invalid schematic ID {schematic_id:?}"
        )));
    }
    let md = ExtensionMetadata {
        name: "schematic".into(),
        version: schematic_id.into(),
        author: schematic_author(external_url),
        description:
            "Virtual extension which specifies the schematic of the image built with schematic."
                .into(),
        talos_version_constraint: ">= 1.0.0".into(),
        extra_info: if talos_supports_overlay {
            canonical_yaml.into()
        } else {
            String::new()
        },
    };
    let share = dir.join("rootfs/usr/local/share/schematic");
    fs::create_dir_all(&share).map_err(io_err(format!("create {}", share.display())))?;
    fs::write(dir.join("manifest.yaml"), md.manifest_yaml())
        .map_err(io_err("write manifest.yaml"))?;
    fs::write(share.join(schematic_id), b"").map_err(io_err("write schematic marker"))?;
    Ok(())
}
