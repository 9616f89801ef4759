//! Squashfs images (written with backhand) and the per-extension *bundle*: everything the
//! initramfs needs from one extension, in one file that the cache can keep.
//!
//! # Bundle format (version 1)
//!
//! ```text
//! [squashfs image, 4 KiB padded]   exactly the bytes that become `<N>.sqsh`
//! [Intel microcode]                this extension's `<fw>/intel-ucode/*`, concatenated
//! [AMD microcode]                  this extension's `<fw>/amd-ucode/microcode_amd*.bin`
//! [firmware file data …]           the rest of `<fw>/`, file after file
//! [index: JSON]                    offsets, sizes, modes, firmware tree, flags
//! [footer: 24 bytes]               index offset (u64 LE), index length (u64 LE), "BFIRBND1"
//! ```
//!
//! A bundle starts with a valid squashfs image (backhand and the kernel ignore what follows
//! `bytes_used`), so kernel modules can be read back from it for `depmod` without the
//! extension tree. A cache hit therefore needs nothing from the extension but its
//! `manifest.yaml` (which is validated on every build, as compatibility depends on the target).

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use backhand::compression::{
    CompressionAction, CompressionOptions, Compressor, DefaultCompressor, Zstd,
};
use backhand::kind::Kind;
use backhand::{
    BackhandError, CompressionExtra, ExtraXz, FilesystemCompressor, FilesystemWriter, NodeHeader,
    SuperBlock,
};
use serde::{Deserialize, Serialize};

use super::{Compression, InitramfsError, io_err};

/// Squashfs data block size (the mksquashfs default Talos uses).
pub const SQUASHFS_BLOCK_SIZE: u32 = 128 * 1024;

/// Bundle layout version; part of every cache key.
pub(crate) const BUNDLE_FORMAT: &str = "bootfactory-initramfs-bundle/1";
const FOOTER_MAGIC: &[u8; 8] = b"BFIRBND1";
const FOOTER_LEN: u64 = 24;
/// Largest index we accept when reading a bundle back.
const MAX_INDEX: u64 = 64 << 20;

/// How squashfs images are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SquashParams {
    pub(crate) compression: Compression,
    /// zstd level (zstd only).
    pub(crate) zstd_level: i32,
    /// xz preset (xz only).
    pub(crate) xz_preset: u32,
    pub(crate) block_size: u32,
    pub(crate) mtime: u32,
}

impl SquashParams {
    /// A stable description for cache keys.
    pub(crate) fn describe(&self) -> String {
        match self.compression {
            Compression::Zstd => format!(
                "squashfs:zstd-{}:block-{}:mtime-{}",
                self.zstd_level, self.block_size, self.mtime
            ),
            Compression::Xz => format!(
                "squashfs:xz-{}-dict100:block-{}:mtime-{}",
                self.xz_preset, self.block_size, self.mtime
            ),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Scanning a tree

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Dir,
    File { len: u64 },
    Symlink { target: PathBuf },
    CharDevice { rdev: u64 },
    BlockDevice { rdev: u64 },
    Fifo,
    Socket,
}

/// One entry of a scanned tree.
#[derive(Debug, Clone)]
pub(crate) struct ScanEntry {
    /// Path relative to the scanned root (never empty).
    pub(crate) rel: PathBuf,
    /// Where to read it.
    pub(crate) source: PathBuf,
    pub(crate) kind: EntryKind,
    /// Permission bits (`& 0o7777`).
    pub(crate) mode: u32,
}

/// Lists `root` depth-first, children sorted by name bytes, directories before their contents
/// (the order of Go's `filepath.Walk` and of backhand's node list). `skip` (relative) is left
/// out with everything below it.
pub(crate) fn scan_tree(
    root: &Path,
    skip: Option<&Path>,
) -> Result<Vec<ScanEntry>, InitramfsError> {
    let mut out = Vec::new();
    walk(root, Path::new(""), skip, &mut out)?;
    Ok(out)
}

fn walk(
    root: &Path,
    rel: &Path,
    skip: Option<&Path>,
    out: &mut Vec<ScanEntry>,
) -> Result<(), InitramfsError> {
    let dir = root.join(rel);
    let mut children: Vec<_> = fs::read_dir(&dir)
        .map_err(io_err(format!("list {}", dir.display())))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(format!("list {}", dir.display())))?;
    children.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in children {
        let child_rel = rel.join(&name);
        if skip.is_some_and(|s| s == child_rel) {
            continue;
        }
        let source = root.join(&child_rel);
        let md =
            fs::symlink_metadata(&source).map_err(io_err(format!("stat {}", source.display())))?;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File { len: md.len() }
        } else if ft.is_symlink() {
            let target =
                fs::read_link(&source).map_err(io_err(format!("readlink {}", source.display())))?;
            EntryKind::Symlink { target }
        } else if ft.is_char_device() {
            EntryKind::CharDevice { rdev: md.rdev() }
        } else if ft.is_block_device() {
            EntryKind::BlockDevice { rdev: md.rdev() }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else {
            EntryKind::Socket
        };
        let is_dir = kind == EntryKind::Dir;
        out.push(ScanEntry {
            rel: child_rel.clone(),
            source,
            kind,
            mode: md.mode() & 0o7777,
        });
        if is_dir {
            walk(root, &child_rel, skip, out)?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Writing squashfs images

/// zstd at a fixed level for backhand, reusing one compression context per thread (backhand's
/// default creates a new context for every 128 KiB block). One static per level, because
/// backhand's compressor trait object must be `'static` and cannot see the level it is asked for.
struct ZstdAction {
    level: i32,
}

static ZSTD_ACTIONS: [ZstdAction; 22] = {
    let mut a = [const { ZstdAction { level: 0 } }; 22];
    let mut i = 0;
    while i < 22 {
        a[i].level = i as i32 + 1;
        i += 1;
    }
    a
};

thread_local! {
    static ZSTD_CCTX: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

impl CompressionAction for ZstdAction {
    type Error = BackhandError;
    type Compressor = Compressor;
    type FilesystemCompressor = FilesystemCompressor;
    type SuperBlock = SuperBlock;

    fn decompress(
        &self,
        bytes: &[u8],
        out: &mut Vec<u8>,
        compressor: Compressor,
    ) -> Result<(), BackhandError> {
        DefaultCompressor.decompress(bytes, out, compressor)
    }

    fn compress(
        &self,
        bytes: &[u8],
        _fc: FilesystemCompressor,
        _block_size: u32,
    ) -> Result<Vec<u8>, BackhandError> {
        ZSTD_CCTX.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(l, _)| *l != self.level) {
                *slot = Some((self.level, zstd::bulk::Compressor::new(self.level)?));
            }
            let (_, cctx) = slot.as_mut().expect("set above");
            Ok(cctx.compress(bytes)?)
        })
    }

    fn compression_options(
        &self,
        superblock: &mut SuperBlock,
        kind: &Kind,
        fs_compressor: FilesystemCompressor,
    ) -> Result<Option<Vec<u8>>, BackhandError> {
        DefaultCompressor.compression_options(superblock, kind, fs_compressor)
    }
}

/// A file opened only when backhand first reads it, and closed at its end, so that a tree of
/// any size never holds more than one descriptor per writer.
struct LazyFile {
    path: PathBuf,
    file: Option<File>,
    done: bool,
}

impl Read for LazyFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.file.is_none() {
            let f = File::open(&self.path).map_err(|e| {
                io::Error::new(e.kind(), format!("open {}: {e}", self.path.display()))
            })?;
            self.file = Some(f);
        }
        let n = self.file.as_mut().expect("opened").read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.file = None;
            self.done = true;
        }
        Ok(n)
    }
}

/// A buffered file writer that knows its position, so backhand's frequent
/// `stream_position()` calls do not flush the buffer.
pub(crate) struct PosWriter {
    inner: BufWriter<File>,
    pos: u64,
}

impl PosWriter {
    pub(crate) fn new(file: File) -> PosWriter {
        PosWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            pos: 0,
        }
    }

    pub(crate) fn into_file(self) -> io::Result<File> {
        self.inner.into_inner().map_err(|e| e.into_error())
    }
}

impl Write for PosWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Seek for PosWriter {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        if pos == SeekFrom::Current(0) {
            return Ok(self.pos);
        }
        self.pos = self.inner.seek(pos)?;
        Ok(self.pos)
    }
}

/// squashfs `new_encode_dev` of a Linux `st_rdev`.
fn squashfs_dev(rdev: u64) -> u32 {
    let major = (((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)) as u32;
    let minor = ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as u32;
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

fn sq_err(context: String) -> impl FnOnce(BackhandError) -> InitramfsError {
    move |e| InitramfsError::Squashfs {
        context,
        message: e.to_string(),
    }
}

/// Writes `entries` (relative paths, parents first) as a squashfs image at the start of `out`:
/// every inode root-owned (`-all-root`), mtime `params.mtime`, no xattrs, no deduplication.
/// Returns the image length (padded to 4 KiB, like mksquashfs); `out` is left positioned there.
pub(crate) fn write_squashfs(
    entries: &[ScanEntry],
    root_mode: u32,
    params: &SquashParams,
    out: &mut PosWriter,
) -> Result<u64, InitramfsError> {
    let mut fs = FilesystemWriter::default();
    fs.set_block_size(params.block_size);
    fs.set_time(params.mtime);
    fs.set_root_mode(root_mode as u16);
    fs.set_root_uid(0);
    fs.set_root_gid(0);
    fs.set_only_root_id();
    // backhand's duplicate detection hashes only a file's first block: never trust it.
    fs.set_no_duplicate_files(false);
    let compressor = match params.compression {
        Compression::Zstd => {
            let level = params.zstd_level.clamp(1, 22);
            fs.set_kind(Kind::new_v4(&ZSTD_ACTIONS[level as usize - 1]));
            FilesystemCompressor::new(
                Compressor::Zstd,
                Some(CompressionOptions::Zstd(Zstd {
                    compression_level: level as u32,
                })),
            )
            .map_err(sq_err("squashfs compressor".into()))?
        }
        Compression::Xz => {
            // `-comp xz -Xdict-size 100%`: without options backhand uses a dictionary of one
            // block, which is also why mksquashfs writes no options block for it.
            let mut fc = FilesystemCompressor::new(Compressor::Xz, None)
                .map_err(sq_err("squashfs compressor".into()))?;
            let mut extra = ExtraXz::default();
            extra
                .level(params.xz_preset)
                .map_err(sq_err("xz preset".into()))?;
            fc.extra(CompressionExtra::Xz(extra))
                .map_err(sq_err("xz options".into()))?;
            fc
        }
    };
    fs.set_compressor(compressor);

    for e in entries {
        let header = NodeHeader::new(e.mode as u16, 0, 0, params.mtime);
        let ctx = || format!("squashfs entry {}", e.rel.display());
        match &e.kind {
            EntryKind::Dir => fs.push_dir(&e.rel, header),
            EntryKind::File { .. } => fs.push_file(
                LazyFile {
                    path: e.source.clone(),
                    file: None,
                    done: false,
                },
                &e.rel,
                header,
            ),
            EntryKind::Symlink { target } => fs.push_symlink(target.clone(), &e.rel, header),
            EntryKind::CharDevice { rdev } => {
                fs.push_char_device(squashfs_dev(*rdev), &e.rel, header)
            }
            EntryKind::BlockDevice { rdev } => {
                fs.push_block_device(squashfs_dev(*rdev), &e.rel, header)
            }
            EntryKind::Fifo => fs.push_fifo(&e.rel, header),
            EntryKind::Socket => fs.push_socket(&e.rel, header),
        }
        .map_err(sq_err(ctx()))?;
    }
    let (_, len) = fs
        .write(&mut *out)
        .map_err(sq_err("writing squashfs".into()))?;
    out.seek(SeekFrom::Start(len))
        .map_err(io_err("seek after squashfs"))?;
    Ok(len)
}

// ------------------------------------------------------------------------------------------
// Bundles

/// A byte range of a bundle file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Span {
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

/// One entry of the firmware tree (paths relative to the firmware directory; `""` is the
/// firmware directory itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FirmwareEntry {
    pub(crate) path: String,
    pub(crate) kind: FirmwareKind,
    pub(crate) mode: u32,
}

/// What a firmware entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FirmwareKind {
    Dir,
    File(Span),
    Symlink(String),
}

/// The bundle index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BundleIndex {
    pub(crate) format: String,
    /// The squashfs image: `[0, squashfs_len)`.
    pub(crate) squashfs_len: u64,
    /// The rootfs has `<kernel modules path>`.
    pub(crate) has_modules: bool,
    pub(crate) intel_ucode: Option<Span>,
    pub(crate) amd_ucode: Option<Span>,
    /// Empty when the rootfs has no firmware directory.
    pub(crate) firmware: Vec<FirmwareEntry>,
}

/// A bundle on disk with its index.
#[derive(Debug, Clone)]
pub(crate) struct Bundle {
    pub(crate) path: PathBuf,
    pub(crate) index: BundleIndex,
}

/// Paths inside extension trees that the bundle depends on.
#[derive(Debug, Clone)]
pub(crate) struct TreeLayout {
    /// Firmware directory relative to the rootfs (`usr/lib/firmware`).
    pub(crate) firmware: PathBuf,
    /// Kernel modules directory relative to the rootfs (`usr/lib/modules`).
    pub(crate) modules: PathBuf,
}

/// Builds the bundle of the extension rootfs `rootfs` into the new file `dest`.
pub(crate) fn build_bundle(
    rootfs: &Path,
    layout: &TreeLayout,
    params: &SquashParams,
    dest: &Path,
) -> Result<Bundle, InitramfsError> {
    let root_mode = fs::metadata(rootfs)
        .map_err(io_err(format!("stat {}", rootfs.display())))?
        .mode()
        & 0o7777;
    let squash_entries = scan_tree(rootfs, Some(&layout.firmware))?;
    let fw_dir = rootfs.join(&layout.firmware);
    let fw_md = fs::symlink_metadata(&fw_dir).ok().filter(|m| m.is_dir());
    let (mut intel, mut amd, mut firmware) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(md) = &fw_md {
        for e in scan_tree(&fw_dir, None)? {
            let parts: Vec<&[u8]> = e.rel.iter().map(|c| c.as_bytes()).collect();
            // A microcode symlink is read through, but resolved as the extension sees its own
            // files: never out of its rootfs (see `crate::contained`).
            let file_source = match e.kind {
                EntryKind::File { .. } => Some(e.source.clone()),
                EntryKind::Symlink { .. } => {
                    crate::contained::regular_file(rootfs, &layout.firmware.join(&e.rel))
                }
                _ => None,
            };
            let is_microcode = match parts.as_slice() {
                [b"intel-ucode", _] => Some(&mut intel),
                [b"amd-ucode", name]
                    if name.starts_with(b"microcode_amd") && name.ends_with(b".bin") =>
                {
                    Some(&mut amd)
                }
                _ => None,
            };
            match (is_microcode, file_source) {
                (Some(list), Some(source)) => list.push(ScanEntry { source, ..e }),
                _ => firmware.push(e),
            }
        }
        firmware.insert(
            0,
            ScanEntry {
                rel: PathBuf::new(),
                source: fw_dir.clone(),
                kind: EntryKind::Dir,
                mode: md.mode() & 0o7777,
            },
        );
    }
    let has_modules = fs::symlink_metadata(rootfs.join(&layout.modules)).is_ok_and(|m| m.is_dir());

    let file = File::create(dest).map_err(io_err(format!("create {}", dest.display())))?;
    let mut w = PosWriter::new(file);
    let squashfs_len = write_squashfs(&squash_entries, root_mode, params, &mut w)?;

    let append_all =
        |w: &mut PosWriter, files: &[ScanEntry]| -> Result<Option<Span>, InitramfsError> {
            if files.is_empty() {
                return Ok(None);
            }
            let offset = w.pos;
            for f in files {
                let mut src = File::open(&f.source)
                    .map_err(io_err(format!("open {}", f.source.display())))?;
                io::copy(&mut src, w).map_err(io_err(format!("copy {}", f.source.display())))?;
            }
            Ok(Some(Span {
                offset,
                len: w.pos - offset,
            }))
        };
    let intel_ucode = append_all(&mut w, &intel)?;
    let amd_ucode = append_all(&mut w, &amd)?;
    let mut fw_entries = Vec::with_capacity(firmware.len());
    for e in &firmware {
        let path = e
            .rel
            .to_str()
            .ok_or_else(|| InitramfsError::Extension {
                extension: rootfs.display().to_string(),
                reason: format!("firmware path {:?} is not UTF-8", e.rel),
            })?
            .to_string();
        let kind = match &e.kind {
            EntryKind::Dir => FirmwareKind::Dir,
            EntryKind::Symlink { target } => FirmwareKind::Symlink(
                target
                    .to_str()
                    .ok_or_else(|| InitramfsError::Extension {
                        extension: rootfs.display().to_string(),
                        reason: format!("firmware symlink target {target:?} is not UTF-8"),
                    })?
                    .to_string(),
            ),
            EntryKind::File { .. } => FirmwareKind::File(
                append_all(&mut w, std::slice::from_ref(e))?.unwrap_or(Span {
                    offset: w.pos,
                    len: 0,
                }),
            ),
            // Device nodes, FIFOs and sockets have no place in the initramfs firmware tree.
            _ => continue,
        };
        fw_entries.push(FirmwareEntry {
            path,
            kind,
            mode: e.mode,
        });
    }
    // An empty file gives no span from append_all: record it as zero bytes.
    let index = BundleIndex {
        format: BUNDLE_FORMAT.to_string(),
        squashfs_len,
        has_modules,
        intel_ucode,
        amd_ucode,
        firmware: fw_entries,
    };
    let json = serde_json::to_vec(&index).map_err(|e| InitramfsError::Io {
        context: "bundle index".into(),
        source: io::Error::other(e),
    })?;
    let index_offset = w.pos;
    w.write_all(&json).map_err(io_err("write bundle index"))?;
    w.write_all(&index_offset.to_le_bytes())
        .map_err(io_err("write bundle footer"))?;
    w.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(io_err("write bundle footer"))?;
    w.write_all(FOOTER_MAGIC)
        .map_err(io_err("write bundle footer"))?;
    let file = w
        .into_file()
        .map_err(io_err(format!("write {}", dest.display())))?;
    file.sync_data()
        .map_err(io_err(format!("sync {}", dest.display())))?;
    Ok(Bundle {
        path: dest.to_path_buf(),
        index,
    })
}

/// Reads a bundle's index, checking that it is one of ours and that every span lies inside
/// the file. `None` for anything that is not a complete, current-format bundle.
pub(crate) fn open_bundle(path: &Path) -> Option<Bundle> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    if len < FOOTER_LEN {
        return None;
    }
    f.seek(SeekFrom::Start(len - FOOTER_LEN)).ok()?;
    let mut footer = [0u8; FOOTER_LEN as usize];
    f.read_exact(&mut footer).ok()?;
    if &footer[16..] != FOOTER_MAGIC {
        return None;
    }
    let index_offset = u64::from_le_bytes(footer[..8].try_into().ok()?);
    let index_len = u64::from_le_bytes(footer[8..16].try_into().ok()?);
    if index_len > MAX_INDEX || index_offset.checked_add(index_len)? != len - FOOTER_LEN {
        return None;
    }
    f.seek(SeekFrom::Start(index_offset)).ok()?;
    let mut json = vec![0u8; index_len as usize];
    f.read_exact(&mut json).ok()?;
    let index: BundleIndex = serde_json::from_slice(&json).ok()?;
    if index.format != BUNDLE_FORMAT || index.squashfs_len > index_offset || index.squashfs_len < 96
    {
        return None;
    }
    let inside = |s: &Span| {
        s.offset
            .checked_add(s.len)
            .is_some_and(|end| end <= index_offset)
    };
    let spans_ok = index.intel_ucode.iter().chain(&index.amd_ucode).all(inside)
        && index.firmware.iter().all(|e| match &e.kind {
            FirmwareKind::File(s) => inside(s),
            _ => true,
        });
    spans_ok.then(|| Bundle {
        path: path.to_path_buf(),
        index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use backhand::{FilesystemReader, InnerNode};
    use std::io::BufReader;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn params() -> SquashParams {
        SquashParams {
            compression: Compression::Zstd,
            zstd_level: 3,
            xz_preset: 0,
            block_size: SQUASHFS_BLOCK_SIZE,
            mtime: 1_559_424_892,
        }
    }

    fn layout() -> TreeLayout {
        TreeLayout {
            firmware: "usr/lib/firmware".into(),
            modules: "usr/lib/modules".into(),
        }
    }

    fn tree(root: &Path) {
        let w = |p: &str, data: &[u8]| {
            let path = root.join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, data).unwrap();
        };
        w("usr/local/bin/tool", b"#!/bin/sh\n");
        fs::set_permissions(
            root.join("usr/local/bin/tool"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        // Two files with the same first block must stay distinct (backhand's dedup would alias them).
        let mut a = vec![7u8; SQUASHFS_BLOCK_SIZE as usize * 2];
        w("usr/local/share/a", &a);
        a[SQUASHFS_BLOCK_SIZE as usize + 5] = 8;
        w("usr/local/share/b", &a);
        w("usr/lib/firmware/intel-ucode/06-8e-09", b"INTEL1");
        w("usr/lib/firmware/intel-ucode/06-8e-0a", b"INTEL2");
        w(
            "usr/lib/firmware/amd-ucode/microcode_amd_fam17h.bin",
            b"AMD17",
        );
        w("usr/lib/firmware/amd-ucode/README", b"not microcode");
        w("usr/lib/firmware/i915/x.bin", b"i915 firmware");
        w("usr/lib/firmware/empty.bin", b"");
        symlink("i915/x.bin", root.join("usr/lib/firmware/alias.bin")).unwrap();
        w("usr/lib/modules/6.12.57-talos/extras/foo.ko", b"\x7fELF");
        fs::create_dir_all(root.join("usr/local/empty")).unwrap();
    }

    #[test]
    fn scan_order_is_depth_first_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        for p in ["a/b", "a-c", "a/a"] {
            fs::create_dir_all(tmp.path().join(p)).unwrap();
        }
        let names: Vec<String> = scan_tree(tmp.path(), None)
            .unwrap()
            .into_iter()
            .map(|e| e.rel.display().to_string())
            .collect();
        assert_eq!(names, ["a", "a/a", "a/b", "a-c"]);
    }

    /// Issue 10, defect 2: a microcode symlink is read as the extension sees it, never
    /// through the host's filesystem.
    #[test]
    fn microcode_symlinks_stay_inside_the_extension() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("secret.pem");
        fs::write(&secret, b"PRIVATE KEY").unwrap();
        let rootfs = tmp.path().join("rootfs");
        tree(&rootfs);
        let ucode = rootfs.join("usr/lib/firmware/intel-ucode");
        symlink(&secret, ucode.join("06-ff-01")).unwrap();
        // A link inside the tree is still followed, absolute targets from the rootfs' `/`.
        symlink(
            "/usr/lib/firmware/intel-ucode/06-8e-09",
            ucode.join("06-ff-02"),
        )
        .unwrap();
        let dest = tmp.path().join("x.bundle");
        let b = build_bundle(&rootfs, &layout(), &params(), &dest).unwrap();
        let span = b.index.intel_ucode.unwrap();
        let mut f = File::open(&dest).unwrap();
        f.seek(SeekFrom::Start(span.offset)).unwrap();
        let mut got = vec![0; span.len as usize];
        f.read_exact(&mut got).unwrap();
        assert_eq!(got, b"INTEL1INTEL2INTEL1");
        let bytes = fs::read(&dest).unwrap();
        assert!(!bytes.windows(11).any(|w| w == b"PRIVATE KEY"));
    }

    #[test]
    fn bundle_splits_firmware_and_microcode() {
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("rootfs");
        tree(&rootfs);
        let dest = tmp.path().join("x.bundle");
        let b = build_bundle(&rootfs, &layout(), &params(), &dest).unwrap();
        assert!(b.index.has_modules);
        let read = |s: Span| {
            let mut f = File::open(&dest).unwrap();
            f.seek(SeekFrom::Start(s.offset)).unwrap();
            let mut v = vec![0; s.len as usize];
            f.read_exact(&mut v).unwrap();
            v
        };
        assert_eq!(read(b.index.intel_ucode.unwrap()), b"INTEL1INTEL2");
        assert_eq!(read(b.index.amd_ucode.unwrap()), b"AMD17");
        let fw: Vec<&str> = b.index.firmware.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            fw,
            [
                "",
                "alias.bin",
                "amd-ucode",
                "amd-ucode/README",
                "empty.bin",
                "i915",
                "i915/x.bin",
                "intel-ucode"
            ]
        );
        assert_eq!(open_bundle(&dest).unwrap().index, b.index);

        // The bundle starts with the squashfs: no firmware, all root-owned, fixed mtime.
        let fs = FilesystemReader::from_reader(BufReader::new(File::open(&dest).unwrap())).unwrap();
        let mut paths = Vec::new();
        for node in fs.files() {
            assert_eq!((node.header.uid, node.header.gid), (0, 0));
            // backhand has no setter for the root inode's mtime (it stays 0).
            if node.fullpath != Path::new("/") {
                assert_eq!(
                    node.header.mtime,
                    1_559_424_892,
                    "{}",
                    node.fullpath.display()
                );
            }
            paths.push(node.fullpath.display().to_string());
            if let InnerNode::File(f) = &node.inner {
                let mut data = Vec::new();
                fs.file(f).reader().read_to_end(&mut data).unwrap();
                let want = fs::read(rootfs.join(node.fullpath.strip_prefix("/").unwrap())).unwrap();
                assert_eq!(data, want, "{}", node.fullpath.display());
            }
        }
        assert!(paths.contains(&"/usr/local/bin/tool".to_string()));
        assert!(paths.contains(&"/usr/local/empty".to_string()));
        assert!(paths.contains(&"/usr/lib".to_string()));
        assert!(!paths.iter().any(|p| p.contains("firmware")), "{paths:?}");
    }

    #[test]
    fn damaged_bundles_are_not_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("rootfs");
        tree(&rootfs);
        let dest = tmp.path().join("x.bundle");
        build_bundle(&rootfs, &layout(), &params(), &dest).unwrap();
        let bytes = fs::read(&dest).unwrap();
        let cut = tmp.path().join("cut");
        fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
        assert!(open_bundle(&cut).is_none());
        fs::write(&cut, b"short").unwrap();
        assert!(open_bundle(&cut).is_none());
        assert!(open_bundle(&tmp.path().join("missing")).is_none());
    }
}
