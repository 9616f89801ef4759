//! Initramfs with system extensions, upstream's algorithm (talos-formats §2.4) in Rust:
//! `[early microcode cpio] ‖ base initramfs bytes verbatim ‖ compressed extension cpio`.
//!
//! Per extension (in upstream's string-sorted directory order): early microcode is split off,
//! firmware goes into the compressed cpio (not the squashfs), the rest of `rootfs/` becomes one
//! squashfs; `extensions.yaml` lists the layers; when extensions carry kernel modules a
//! `modules.dep` layer is built with `depmod`. Squashfs images of cacheable extensions are
//! kept (see [`SquashfsCache`]) so a new schematic only assembles the cpio. Everything is
//! streamed from disk; the output has fixed mtimes, so identical inputs give identical bytes.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::formats::cpio::{CpioReader, CpioWriter, Metadata};

/// One extension to include: a directory with `manifest.yaml` and `rootfs/`.
#[derive(Debug, Clone)]
pub struct ExtensionTree {
    /// The extension directory (read-only; nothing is moved out of it).
    pub dir: PathBuf,
    /// Stable identity of the content (an image manifest digest) for the squashfs cache;
    /// `None` = never cached (the schematic extension).
    pub cache_key: Option<String>,
}

/// Build parameters (from the target version's quirks).
#[derive(Debug, Clone)]
pub struct InitramfsOptions {
    /// Target Talos version, for extension compatibility constraints.
    pub talos_version: (u64, u64, u64),
    /// `/usr/lib/modules` (≥ 1.10) or `/lib/modules`.
    pub kernel_modules_path: String,
    /// `/usr/lib/firmware` (≥ 1.10) or `/lib/firmware`.
    pub firmware_path: String,
    /// zstd (≥ 1.8) or xz.
    pub compression: Compression,
    /// mtime of everything written.
    pub mtime: u32,
}

/// Squashfs and cpio compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd (Talos ≥ 1.8).
    Zstd,
    /// xz (older Talos).
    Xz,
}

/// Finished extension squashfs images, by key.
pub trait SquashfsCache: Send + Sync {
    /// A cached squashfs file for `key`.
    fn get(&self, key: &str) -> Option<PathBuf>;
    /// Stores a squashfs file under `key`.
    fn put(&self, key: &str, squashfs: &Path) -> io::Result<()>;
}

/// Why an initramfs could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// An extension is malformed or incompatible (the requester's problem).
    #[error("extension {name}: {message}")]
    Extension {
        /// Extension name (or directory).
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A needed external tool is missing.
    #[error("{0}")]
    MissingTool(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

fn other(context: &str) -> impl FnOnce(io::Error) -> InitramfsError + '_ {
    move |e| InitramfsError::Other(format!("{context}: {e}"))
}

/// Bump when the squashfs bytes we produce change.
const SQUASHFS_FORMAT: &str = "sq1";
/// zstd level of extension squashfs images (upstream: 18; see ARCHITECTURE.md for the choice).
const SQUASHFS_ZSTD_LEVEL: u32 = 9;
/// zstd level of the outer cpio, whose content (squashfs) is already compressed.
const CPIO_ZSTD_LEVEL: i32 = 3;

/// Reads an extension's `manifest.yaml` and checks its shape and compatibility.
fn load_manifest(
    ext: &ExtensionTree,
    target: (u64, u64, u64),
) -> Result<serde_yaml::Value, InitramfsError> {
    let shown = ext.dir.display().to_string();
    let text = fs::read_to_string(ext.dir.join("manifest.yaml")).map_err(|e| {
        InitramfsError::Extension {
            name: shown.clone(),
            message: format!("manifest.yaml: {e}"),
        }
    })?;
    let manifest: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| InitramfsError::Extension {
            name: shown.clone(),
            message: format!("manifest.yaml: {e}"),
        })?;
    let name = manifest["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let bad = |message: String| InitramfsError::Extension {
        name: if name.is_empty() {
            shown.clone()
        } else {
            name.clone()
        },
        message,
    };
    if manifest["version"].as_str() != Some("v1alpha1") {
        return Err(bad("manifest version must be v1alpha1".into()));
    }
    if name.is_empty() {
        return Err(bad("manifest has no metadata.name".into()));
    }
    for entry in fs::read_dir(&ext.dir).map_err(|e| bad(e.to_string()))? {
        let entry = entry.map_err(|e| bad(e.to_string()))?;
        let n = entry.file_name().to_string_lossy().to_string();
        if n != "manifest.yaml" && n != "rootfs" {
            return Err(bad(format!(
                "unexpected file {n:?} next to manifest.yaml and rootfs/"
            )));
        }
    }
    if !ext.dir.join("rootfs").is_dir() {
        return Err(bad("no rootfs/ directory".into()));
    }
    let constraint = manifest["metadata"]["compatibility"]["talos"]["version"]
        .as_str()
        .unwrap_or_default();
    if !constraint_matches(constraint, target).map_err(&bad)? {
        return Err(bad(format!(
            "not compatible with Talos v{}.{}.{} (requires {constraint:?})",
            target.0, target.1, target.2
        )));
    }
    Ok(manifest)
}

/// blang/semver range syntax as extension manifests use it: `>= v1.5.0`, `<1.0.0`,
/// `>=1.2.0 <2.0.0`, `A || B`; an empty range matches everything.
pub fn constraint_matches(range: &str, v: (u64, u64, u64)) -> Result<bool, String> {
    if range.trim().is_empty() {
        return Ok(true);
    }
    for alternative in range.split("||") {
        let mut all = true;
        let mut tokens = alternative.split_whitespace().peekable();
        let mut any = false;
        while let Some(tok) = tokens.next() {
            // Allow a space between operator and version (`>= v1.5.0`).
            let (op, rest) = split_op(tok);
            let ver_text = if rest.is_empty() {
                tokens
                    .next()
                    .ok_or_else(|| format!("invalid version constraint {range:?}"))?
            } else {
                rest
            };
            let ver = parse_plain_version(ver_text)
                .ok_or_else(|| format!("invalid version constraint {range:?}"))?;
            any = true;
            let ok = match op {
                ">=" => v >= ver,
                "<=" => v <= ver,
                ">" => v > ver,
                "<" => v < ver,
                "!=" => v != ver,
                _ => v == ver,
            };
            all &= ok;
        }
        if any && all {
            return Ok(true);
        }
    }
    Ok(false)
}

fn split_op(tok: &str) -> (&str, &str) {
    for op in [">=", "<=", "!=", "==", ">", "<", "="] {
        if let Some(rest) = tok.strip_prefix(op) {
            return (op, rest);
        }
    }
    ("=", tok)
}

fn parse_plain_version(s: &str) -> Option<(u64, u64, u64)> {
    let s = s.trim_start_matches('v');
    let core = s.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().unwrap_or("0").parse().ok()?;
    let patch = parts.next().unwrap_or("0").parse().ok()?;
    Some((major, minor, patch))
}

/// Opens a file only when first read and closes it at EOF, so the squashfs writer can be
/// given thousands of files without holding them all open.
struct LazyFile {
    path: PathBuf,
    file: Option<BufReader<File>>,
    done: bool,
}

impl Read for LazyFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.file.is_none() {
            self.file = Some(BufReader::with_capacity(
                256 * 1024,
                File::open(&self.path)?,
            ));
        }
        let n = self.file.as_mut().expect("opened").read(buf)?;
        if n == 0 {
            self.file = None;
            self.done = true;
        }
        Ok(n)
    }
}

/// Writes `root` (minus `skip`, relative) as a squashfs image to `out`.
fn write_squashfs(
    root: &Path,
    skip: Option<&Path>,
    out: &Path,
    compression: Compression,
    mtime: u32,
) -> Result<(), InitramfsError> {
    use backhand::compression::{CompressionOptions, Compressor, Zstd};
    use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};
    let mut fs_writer = FilesystemWriter::default();
    fs_writer.set_time(mtime);
    fs_writer.set_root_mode(0o755);
    fs_writer.set_root_uid(0);
    fs_writer.set_root_gid(0);
    let compressor = match compression {
        Compression::Zstd => FilesystemCompressor::new(
            Compressor::Zstd,
            Some(CompressionOptions::Zstd(Zstd {
                compression_level: SQUASHFS_ZSTD_LEVEL,
            })),
        ),
        Compression::Xz => FilesystemCompressor::new(Compressor::Xz, None),
    }
    .map_err(|e| InitramfsError::Other(format!("squashfs compressor: {e}")))?;
    fs_writer.set_compressor(compressor);
    let mut entries = Vec::new();
    walk(root, Path::new(""), &mut entries).map_err(other("read extension rootfs"))?;
    for (rel, meta) in entries {
        if skip.is_some_and(|s| rel.starts_with(s)) {
            continue;
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = (meta.permissions().mode() & 0o7777) as u16;
        let header = NodeHeader::new(mode, 0, 0, mtime);
        let full = root.join(&rel);
        let name = rel.to_string_lossy().to_string();
        let result = if meta.file_type().is_symlink() {
            let target = fs::read_link(&full).map_err(other("read symlink"))?;
            fs_writer.push_symlink(
                target.to_string_lossy().to_string(),
                &name,
                NodeHeader::new(0o777, 0, 0, mtime),
            )
        } else if meta.is_dir() {
            fs_writer.push_dir(&name, header)
        } else if meta.is_file() {
            fs_writer.push_file(
                LazyFile {
                    path: full.clone(),
                    file: None,
                    done: false,
                },
                &name,
                header,
            )
        } else {
            continue;
        };
        result.map_err(|e| InitramfsError::Other(format!("squashfs entry {name}: {e}")))?;
    }
    let tmp = out.with_extension("partial");
    let mut file = io::BufWriter::new(File::create(&tmp).map_err(other("create squashfs"))?);
    fs_writer
        .write(&mut file)
        .map_err(|e| InitramfsError::Other(format!("write squashfs: {e}")))?;
    file.into_inner()
        .map_err(|e| InitramfsError::Other(format!("write squashfs: {e}")))?;
    fs::rename(&tmp, out).map_err(other("finish squashfs"))?;
    Ok(())
}

/// Depth-first listing, children sorted by name, directories before their contents.
fn walk(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) -> io::Result<()> {
    let mut children: Vec<_> = fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let rel_child = rel.join(child.file_name());
        let meta = fs::symlink_metadata(child.path())?;
        let is_dir = meta.is_dir();
        out.push((rel_child.clone(), meta));
        if is_dir {
            walk(root, &rel_child, out)?;
        }
    }
    Ok(())
}

fn strip_root(p: &str) -> &Path {
    Path::new(p.trim_start_matches('/'))
}

/// Copies a tree (files, dirs, symlinks) from `from` into `to`.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let mut entries = Vec::new();
    walk(from, Path::new(""), &mut entries)?;
    fs::create_dir_all(to)?;
    for (rel, meta) in entries {
        let (src, dst) = (from.join(&rel), to.join(&rel));
        if meta.is_dir() {
            fs::create_dir_all(&dst)?;
        } else if meta.file_type().is_symlink() {
            let _ = fs::remove_file(&dst);
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else if meta.is_file() {
            fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Builds the initramfs into `out`. The caller writes `out` to a temp file and keeps it only
/// if this returns `Ok`; `work_dir` is scratch space (removed afterwards).
pub fn build_initramfs(
    base: &Path,
    extensions: &[ExtensionTree],
    opts: &InitramfsOptions,
    cache: Option<&dyn SquashfsCache>,
    work_dir: &Path,
    out: &mut dyn Write,
) -> Result<(), InitramfsError> {
    let _cleanup = RemoveOnDrop(work_dir.to_path_buf());
    let stage = work_dir.join("stage");
    fs::create_dir_all(&stage).map_err(other("create work dir"))?;
    let fw_rel = strip_root(&opts.firmware_path);
    let mod_rel = strip_root(&opts.kernel_modules_path);

    // Upstream names extension directories 0..n and lists them sorted as strings.
    let mut order: Vec<(String, usize)> =
        (0..extensions.len()).map(|i| (i.to_string(), i)).collect();
    order.sort();
    let mut layers: Vec<(String, serde_yaml::Value)> = Vec::new();
    let mut sqsh: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut intel = Vec::new();
    let mut amd = Vec::new();
    let mut module_trees = Vec::new();
    for (dir_name, i) in &order {
        let ext = &extensions[*i];
        let manifest = load_manifest(ext, opts.talos_version)?;
        let rootfs = ext.dir.join("rootfs");
        let fw = rootfs.join(fw_rel);
        // Early microcode, in glob (name) order.
        for (vendor, list) in [("intel-ucode", &mut intel), ("amd-ucode", &mut amd)] {
            if let Ok(read) = fs::read_dir(fw.join(vendor)) {
                let mut files: Vec<PathBuf> = read.flatten().map(|e| e.path()).collect();
                files.sort();
                for f in files {
                    let name = f
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    if f.is_file()
                        && (vendor == "intel-ucode"
                            || (name.starts_with("microcode_amd") && name.ends_with(".bin")))
                    {
                        list.push(f);
                    }
                }
            }
        }
        // Firmware other than microcode goes into the compressed cpio.
        if fw.is_dir() {
            let mut entries = Vec::new();
            walk(&fw, Path::new(""), &mut entries).map_err(other("read firmware"))?;
            for (rel, meta) in entries {
                let full = fw.join(&rel);
                if intel.contains(&full) || amd.contains(&full) {
                    continue;
                }
                let dst = stage.join(fw_rel).join(&rel);
                if meta.is_dir() {
                    fs::create_dir_all(&dst).map_err(other("stage firmware"))?;
                } else if meta.is_file() {
                    fs::create_dir_all(dst.parent().expect("parent"))
                        .map_err(other("stage firmware"))?;
                    fs::copy(fw.join(&rel), &dst).map_err(other("stage firmware"))?;
                } else if meta.file_type().is_symlink() {
                    fs::create_dir_all(dst.parent().expect("parent"))
                        .map_err(other("stage firmware"))?;
                    let target = fs::read_link(fw.join(&rel)).map_err(other("stage firmware"))?;
                    let _ = std::os::unix::fs::symlink(target, &dst);
                }
            }
        }
        if rootfs.join(mod_rel).is_dir() {
            module_trees.push(rootfs.join(mod_rel));
        }
        // The squashfs: cached, or built from rootfs minus firmware.
        let key = ext.cache_key.as_ref().map(|k| {
            format!(
                "{SQUASHFS_FORMAT}|{k}|{:?}|{SQUASHFS_ZSTD_LEVEL}|{}|{}",
                opts.compression, opts.firmware_path, opts.mtime
            )
        });
        let image = format!("{dir_name}.sqsh");
        let cached = key.as_ref().and_then(|k| cache.and_then(|c| c.get(k)));
        let path = match cached {
            Some(p) => p,
            None => {
                let p = work_dir.join(&image);
                write_squashfs(&rootfs, Some(fw_rel), &p, opts.compression, opts.mtime)?;
                if let (Some(k), Some(c)) = (&key, cache) {
                    if let Err(e) = c.put(k, &p) {
                        tracing::warn!(error = %e, "cannot cache extension squashfs");
                    }
                }
                p
            }
        };
        sqsh.insert(image.clone(), path);
        layers.push((image, manifest["metadata"].clone()));
    }

    if !module_trees.is_empty() {
        let (path, metadata) = modules_dep(base, &module_trees, opts, work_dir)?;
        sqsh.insert("modules.dep.sqsh".into(), path);
        layers.push(("modules.dep.sqsh".into(), metadata));
    }

    let extensions_yaml = serde_yaml::to_string(&serde_yaml::Value::Mapping(
        [(
            serde_yaml::Value::from("layers"),
            serde_yaml::Value::Sequence(
                layers
                    .iter()
                    .map(|(image, metadata)| {
                        let mut m = serde_yaml::Mapping::new();
                        m.insert("image".into(), image.clone().into());
                        m.insert("metadata".into(), metadata.clone());
                        serde_yaml::Value::Mapping(m)
                    })
                    .collect(),
            ),
        )]
        .into_iter()
        .collect(),
    ))
    .map_err(|e| InitramfsError::Other(format!("extensions.yaml: {e}")))?;
    fs::write(stage.join("extensions.yaml"), extensions_yaml)
        .map_err(other("write extensions.yaml"))?;

    let dir_meta = |_: ()| Metadata::new(0o755).mtime(opts.mtime);
    let file_meta = |mode: u32| Metadata::new(mode).mtime(opts.mtime);

    // 1. Early microcode: an uncompressed cpio first.
    if !intel.is_empty() || !amd.is_empty() {
        let mut early = CpioWriter::new(&mut *out);
        for d in ["kernel", "kernel/x86", "kernel/x86/microcode"] {
            early
                .add_dir(d, &dir_meta(()))
                .map_err(other("write early cpio"))?;
        }
        for (name, files) in [("AuthenticAMD.bin", &amd), ("GenuineIntel.bin", &intel)] {
            if files.is_empty() {
                continue;
            }
            let size: u64 = files
                .iter()
                .map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
                .sum();
            let mut chain: Box<dyn Read> = Box::new(io::empty());
            for f in files.iter() {
                chain = Box::new(chain.chain(File::open(f).map_err(other("read microcode"))?));
            }
            early
                .add_file_from_reader(
                    &format!("kernel/x86/microcode/{name}"),
                    &file_meta(0o644),
                    chain,
                    size,
                )
                .map_err(other("write early cpio"))?;
        }
        early.finish().map_err(other("write early cpio"))?;
    }

    // 2. The base initramfs, verbatim.
    io::copy(
        &mut File::open(base).map_err(other("open base initramfs"))?,
        out,
    )
    .map_err(other("copy base initramfs"))?;

    // 3. The compressed cpio: sqsh images, extensions.yaml, firmware.
    let mut names: Vec<(String, Option<PathBuf>)> = sqsh
        .iter()
        .map(|(n, p)| (n.clone(), Some(p.clone())))
        .collect();
    let mut staged = Vec::new();
    walk(&stage, Path::new(""), &mut staged).map_err(other("list stage"))?;
    for (rel, _) in &staged {
        names.push((rel.to_string_lossy().to_string(), None));
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let encoder: Box<dyn Write> = match opts.compression {
        Compression::Zstd => Box::new(
            zstd::stream::write::Encoder::new(&mut *out, CPIO_ZSTD_LEVEL)
                .map_err(other("zstd"))?
                .auto_finish(),
        ),
        Compression::Xz => {
            return Err(InitramfsError::Other(
                "xz-compressed initramfs (Talos < 1.8) is not supported yet".into(),
            ));
        }
    };
    let mut cpio = CpioWriter::new(encoder);
    for (name, source) in names {
        let (path, meta) = match &source {
            Some(p) => (p.clone(), fs::metadata(p).map_err(other("stat squashfs"))?),
            None => {
                let p = stage.join(&name);
                let m = fs::symlink_metadata(&p).map_err(other("stat staged"))?;
                (p, m)
            }
        };
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            cpio.add_dir(&name, &file_meta(mode))
                .map_err(other("write cpio"))?;
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(other("read link"))?;
            cpio.add_symlink(&name, &file_meta(0o777), &target.to_string_lossy())
                .map_err(other("write cpio"))?;
        } else {
            let reader =
                BufReader::with_capacity(1 << 20, File::open(&path).map_err(other("open"))?);
            cpio.add_file_from_reader(&name, &file_meta(mode), reader, meta.len())
                .map_err(other("write cpio"))?;
        }
    }
    let mut encoder = cpio.finish().map_err(other("finish cpio"))?;
    encoder.flush().map_err(other("finish cpio"))?;
    drop(encoder);
    Ok(())
}

/// The `modules.dep` layer: the base rootfs's modules tree plus every extension's, indexed
/// by `depmod`; only the `modules.*` index files go into the layer.
fn modules_dep(
    base: &Path,
    trees: &[PathBuf],
    opts: &InitramfsOptions,
    work_dir: &Path,
) -> Result<(PathBuf, serde_yaml::Value), InitramfsError> {
    let depmod = which("depmod").ok_or_else(|| {
        InitramfsError::MissingTool(
            "extensions with kernel modules need depmod to build modules.dep: install kmod (apt-get install kmod)".into(),
        )
    })?;
    let mod_rel = strip_root(&opts.kernel_modules_path);
    let root = work_dir.join("modules-root");
    // Extract the base rootfs.sqsh's modules tree.
    let sqsh_path = work_dir.join("rootfs.sqsh");
    extract_base_rootfs(base, &sqsh_path)?;
    {
        let file = BufReader::new(File::open(&sqsh_path).map_err(other("open rootfs.sqsh"))?);
        let fs_reader = backhand::FilesystemReader::from_reader(file)
            .map_err(|e| InitramfsError::Other(format!("read base rootfs.sqsh: {e}")))?;
        for node in fs_reader.files() {
            let full = node.fullpath.to_string_lossy().to_string();
            let rel = full.trim_start_matches('/');
            if !Path::new(rel).starts_with(mod_rel) {
                continue;
            }
            let dst = root.join(rel);
            match &node.inner {
                backhand::InnerNode::Dir(_) => {
                    fs::create_dir_all(&dst).map_err(other("extract modules"))?
                }
                backhand::InnerNode::File(f) => {
                    fs::create_dir_all(dst.parent().expect("parent"))
                        .map_err(other("extract modules"))?;
                    let mut out = File::create(&dst).map_err(other("extract modules"))?;
                    let mut reader = fs_reader.file(f).reader();
                    io::copy(&mut reader, &mut out).map_err(other("extract modules"))?;
                }
                _ => {}
            }
        }
    }
    let modules_dir = root.join(mod_rel);
    let kvers: Vec<String> = fs::read_dir(&modules_dir)
        .map_err(|e| {
            InitramfsError::Other(format!(
                "base rootfs has no {}: {e}",
                opts.kernel_modules_path
            ))
        })?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    let [kver] = kvers.as_slice() else {
        return Err(InitramfsError::Other(format!(
            "expected exactly one kernel version under {}, found {kvers:?}",
            opts.kernel_modules_path
        )));
    };
    for t in trees {
        let ext_kver = t.join(kver);
        if ext_kver.is_dir() {
            copy_tree(&ext_kver, &modules_dir.join(kver))
                .map_err(other("overlay extension modules"))?;
        }
    }
    let config = work_dir.join("depmod.conf");
    fs::write(&config, "search extras built-in\n").map_err(other("write depmod config"))?;
    // basedir is the directory that holds lib/modules (usr/ for >= 1.10).
    let basedir = if mod_rel.starts_with("usr") {
        root.join("usr")
    } else {
        root.clone()
    };
    let status = std::process::Command::new(depmod)
        .arg("--all")
        .arg("--basedir")
        .arg(&basedir)
        .arg("--config")
        .arg(&config)
        .arg(kver)
        .output()
        .map_err(other("run depmod"))?;
    if !status.status.success() {
        return Err(InitramfsError::Other(format!(
            "depmod failed: {}",
            String::from_utf8_lossy(&status.stderr).trim()
        )));
    }
    let layer = work_dir.join("modules.dep-root");
    let target = layer.join(mod_rel).join(kver);
    fs::create_dir_all(&target).map_err(other("stage modules.dep"))?;
    for e in fs::read_dir(modules_dir.join(kver))
        .map_err(other("read depmod output"))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("modules.") && e.path().is_file() {
            fs::copy(e.path(), target.join(&name)).map_err(other("stage modules.dep"))?;
        }
    }
    let out = work_dir.join("modules.dep.sqsh");
    write_squashfs(&layer, None, &out, opts.compression, opts.mtime)?;
    let metadata: serde_yaml::Value = serde_yaml::from_str(&format!(
        "name: modules.dep\nversion: {kver}\nauthor: Talos Machinery\ndescription: Combined modules.dep for all extensions\ncompatibility:\n  talos:\n    version: \"\"\n"
    ))
    .map_err(|e| InitramfsError::Other(e.to_string()))?;
    Ok((out, metadata))
}

fn which(tool: &str) -> Option<PathBuf> {
    for dir in [
        "/usr/sbin",
        "/sbin",
        "/usr/bin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ] {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// Decompresses the base initramfs (zstd or xz by magic) and writes its `rootfs.sqsh`.
fn extract_base_rootfs(base: &Path, out: &Path) -> Result<(), InitramfsError> {
    let mut file = BufReader::new(File::open(base).map_err(other("open base initramfs"))?);
    let mut magic = [0u8; 6];
    file.read_exact(&mut magic)
        .map_err(other("read base initramfs"))?;
    let file = BufReader::new(File::open(base).map_err(other("open base initramfs"))?);
    let reader: Box<dyn Read> = if magic[..4] == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::with_buffer(file).map_err(other("zstd"))?)
    } else {
        return Err(InitramfsError::Other(
            "base initramfs is not zstd-compressed (xz bases, Talos < 1.8, are not supported yet)"
                .into(),
        ));
    };
    let mut cpio = CpioReader::new(reader);
    while let Some(header) = cpio.next_header().map_err(other("read base cpio"))? {
        if header.name == "rootfs.sqsh" {
            let mut dst = File::create(out).map_err(other("write rootfs.sqsh"))?;
            io::copy(&mut cpio.data(), &mut dst).map_err(other("write rootfs.sqsh"))?;
            return Ok(());
        }
    }
    Err(InitramfsError::Other(
        "base initramfs has no rootfs.sqsh".into(),
    ))
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The virtual `schematic` extension (image-factory §5.5): `manifest.yaml` and an empty file
/// `rootfs/usr/local/share/schematic/<id>`.
pub fn write_schematic_extension(
    dir: &Path,
    schematic_id: &str,
    canonical_yaml: &str,
    external_url: &str,
    with_extra_info: bool,
) -> io::Result<()> {
    use crate::schematic::emit::{Out, emit_document};
    let mut meta = vec![
        (Out::string("name"), Out::string("schematic")),
        (Out::string("version"), Out::string(schematic_id)),
        (
            Out::string("author"),
            Out::string(&format!("Image Factory ({external_url})")),
        ),
        (
            Out::string("description"),
            Out::string(
                "Virtual extension which specifies the schematic of the image built with schematic.",
            ),
        ),
        (
            Out::string("compatibility"),
            Out::Map(vec![(
                Out::string("talos"),
                Out::Map(vec![(Out::string("version"), Out::string(">= 1.0.0"))]),
            )]),
        ),
    ];
    if with_extra_info {
        meta.push((Out::string("extraInfo"), Out::string(canonical_yaml)));
    }
    let manifest = emit_document(&Out::Map(vec![
        (Out::string("version"), Out::string("v1alpha1")),
        (Out::string("metadata"), Out::Map(meta)),
    ]));
    let share = dir.join("rootfs/usr/local/share/schematic");
    fs::create_dir_all(&share)?;
    fs::write(dir.join("manifest.yaml"), manifest)?;
    fs::write(share.join(schematic_id), b"")?;
    Ok(())
}

/// An initramfs split the way upstream's `assertInitramfs` test reads it.
#[derive(Debug, Clone, Default)]
pub struct ParsedInitramfs {
    /// Entry names of the early (uncompressed) cpio.
    pub early: Vec<String>,
    /// Entry names of every compressed cpio, in order.
    pub entries: Vec<String>,
    /// Layers of `extensions.yaml`.
    pub layers: Vec<Layer>,
}

/// One `extensions.yaml` layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Image file (`0.sqsh`).
    pub image: String,
    /// Extension name.
    pub name: String,
    /// Extension version.
    pub version: String,
}

/// Parses an initramfs built by [`build_initramfs`] (or upstream).
pub fn parse_initramfs(path: &Path) -> Result<ParsedInitramfs, InitramfsError> {
    let mut parsed = ParsedInitramfs::default();
    let mut file = BufReader::new(File::open(path).map_err(other("open initramfs"))?);
    let mut head = [0u8; 6];
    file.read_exact(&mut head)
        .map_err(other("read initramfs"))?;
    let mut file = BufReader::new(File::open(path).map_err(other("open initramfs"))?);
    if &head == b"070701" {
        let mut cpio = CpioReader::new(&mut file);
        while let Some(h) = cpio.next_header().map_err(other("read early cpio"))? {
            parsed.early.push(h.name.clone());
            io::copy(&mut cpio.data(), &mut io::sink()).map_err(other("read early cpio"))?;
        }
        let consumed = cpio.offset();
        // Skip the NUL padding up to the next archive.
        let mut rest = File::open(path).map_err(other("open initramfs"))?;
        let mut all = Vec::new();
        rest.read_to_end(&mut all)
            .map_err(other("read initramfs"))?;
        let mut pos = consumed as usize;
        while pos < all.len() && all[pos] == 0 {
            pos += 1;
        }
        return parse_compressed(&all[pos..], parsed);
    }
    let mut all = Vec::new();
    file.read_to_end(&mut all)
        .map_err(other("read initramfs"))?;
    parse_compressed(&all, parsed)
}

fn parse_compressed(
    data: &[u8],
    mut parsed: ParsedInitramfs,
) -> Result<ParsedInitramfs, InitramfsError> {
    let decoder = zstd::stream::read::Decoder::new(data).map_err(other("zstd"))?;
    let mut cpio = CpioReader::new(decoder);
    // Archives follow each other (base cpio, extension cpio): after each trailer go on with
    // the next, as the kernel does, until one yields nothing.
    loop {
        let mut read_any = false;
        while let Some(h) = cpio.next_header().map_err(other("read cpio"))? {
            read_any = true;
            if h.name == "extensions.yaml" {
                let bytes = cpio.read_data().map_err(other("read extensions.yaml"))?;
                parsed.layers = parse_layers(&bytes)?;
            } else {
                io::copy(&mut cpio.data(), &mut io::sink()).map_err(other("read cpio"))?;
            }
            parsed.entries.push(h.name.clone());
        }
        if !read_any {
            break;
        }
        cpio.continue_after_trailer();
    }
    Ok(parsed)
}

fn parse_layers(bytes: &[u8]) -> Result<Vec<Layer>, InitramfsError> {
    let doc: serde_yaml::Value =
        serde_yaml::from_slice(bytes).map_err(|e| InitramfsError::Other(e.to_string()))?;
    Ok(doc["layers"]
        .as_sequence()
        .map(|s| {
            s.iter()
                .map(|l| Layer {
                    image: l["image"].as_str().unwrap_or_default().to_string(),
                    name: l["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    version: l["metadata"]["version"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                })
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints() {
        assert!(constraint_matches(">= v1.5.0", (1, 11, 6)).unwrap());
        assert!(!constraint_matches("< v1.0.0", (1, 11, 6)).unwrap());
        assert!(constraint_matches(">=1.2.0 <2.0.0", (1, 8, 4)).unwrap());
        assert!(constraint_matches("< 1.0.0 || >= 1.8.0", (1, 8, 4)).unwrap());
        assert!(constraint_matches("", (1, 8, 4)).unwrap());
        assert!(constraint_matches(">= x", (1, 8, 4)).is_err());
    }
}
