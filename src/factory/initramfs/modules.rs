//! The `modules.dep` pseudo-extension (Talos `internal/pkg/extensions/kernel_modules.go`):
//! the base rootfs's kernel modules directory, overlaid with every extension's modules, run
//! through `depmod`, and the resulting `modules.*` files squashed into `modules.dep.sqsh`.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use backhand::InnerNode;
use backhand::compression::{CompressionAction, Compressor, DefaultCompressor};

use super::squash::{Bundle, PosWriter, ScanEntry, SquashParams, scan_tree, write_squashfs};
use super::{InitramfsError, Magic, io_err};

/// The `depmod` configuration Talos uses (`/etc/modules.d/10-extra-modules.conf`).
const DEPMOD_CONFIG: &str = "search extras built-in\n";

/// The result: `modules.dep.sqsh` and the kernel version it is for.
#[derive(Debug)]
pub(crate) struct ModulesDep {
    pub(crate) squashfs: PathBuf,
    pub(crate) kernel_version: String,
}

fn base_err(base: &Path, reason: impl Into<String>) -> InitramfsError {
    InitramfsError::Base {
        path: base.to_path_buf(),
        reason: reason.into(),
    }
}

/// Finds `depmod`: on `PATH`, else in the sbin directories (not on a normal user's `PATH`).
fn find_depmod() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("depmod"))
        .find(|p| p.is_file())
}

/// True if a `depmod` binary can be found.
pub fn depmod_available() -> bool {
    find_depmod().is_some()
}

/// Copies `rootfs.sqsh` out of the base initramfs into `dest` (streaming for zstd).
fn extract_rootfs_sqsh(base: &Path, magic: Magic, dest: &Path) -> Result<(), InitramfsError> {
    let file = File::open(base).map_err(io_err(format!("open {}", base.display())))?;
    let reader: Box<dyn Read> = match magic {
        Magic::Zstd => Box::new(
            zstd::stream::read::Decoder::new(file)
                .map_err(io_err(format!("zstd {}", base.display())))?,
        ),
        Magic::Xz => {
            // No streaming xz decoder among our direct dependencies: decode in memory through
            // backhand's liblzma (Talos < 1.8 bases only, and only with module extensions).
            let mut compressed = Vec::new();
            BufReader::new(file)
                .read_to_end(&mut compressed)
                .map_err(io_err(format!("read {}", base.display())))?;
            let mut out = Vec::new();
            DefaultCompressor
                .decompress(&compressed, &mut out, Compressor::Xz)
                .map_err(|e| base_err(base, format!("xz: {e}")))?;
            Box::new(io::Cursor::new(out))
        }
        Magic::Cpio => Box::new(BufReader::new(file)),
    };
    let mut cpio = crate::formats::cpio::CpioReader::new(reader);
    loop {
        match cpio.next_header() {
            Ok(Some(h)) if h.path() == "rootfs.sqsh" => {
                let mut out =
                    File::create(dest).map_err(io_err(format!("create {}", dest.display())))?;
                io::copy(&mut cpio.data(), &mut out)
                    .map_err(|e| base_err(base, format!("reading rootfs.sqsh: {e}")))?;
                return Ok(());
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err(base_err(base, "no rootfs.sqsh in the initramfs cpio")),
            Err(e) => return Err(base_err(base, format!("reading the initramfs cpio: {e}"))),
        }
    }
}

/// Extracts every entry of the squashfs `image` under `/<prefix>` into `dest_root/<prefix>`
/// (files replace existing ones). Returns the number of files written.
pub(crate) fn extract_squashfs_subtree(
    image: &Path,
    prefix: &Path,
    dest_root: &Path,
) -> Result<usize, InitramfsError> {
    super::contain_squashfs_panic(
        || format!("reading {}", image.display()),
        || extract_subtree(image, prefix, dest_root),
    )
}

fn extract_subtree(image: &Path, prefix: &Path, dest_root: &Path) -> Result<usize, InitramfsError> {
    let sq_err = |message: String| InitramfsError::Squashfs {
        context: format!("reading {}", image.display()),
        message,
    };
    let file = File::open(image).map_err(io_err(format!("open {}", image.display())))?;
    let fs = super::untrusted::open(BufReader::new(file)).map_err(sq_err)?;
    let want = Path::new("/").join(prefix);
    let mut files = 0;
    for node in fs.files() {
        let Ok(rel) = node.fullpath.strip_prefix("/") else {
            continue;
        };
        if !node.fullpath.starts_with(&want) {
            continue;
        }
        if rel.as_os_str().is_empty() {
            // The image's root directory: `dest_root` itself.
            continue;
        }
        // Image content is untrusted: no `..`, and never write through a symlink that an
        // earlier image (the base, another extension) put on the path.
        let rel =
            crate::contained::clean_relative(rel).ok_or_else(|| InitramfsError::Squashfs {
                context: format!("reading {}", image.display()),
                message: format!("unsafe path {:?}", node.fullpath),
            })?;
        crate::contained::check_no_symlink_parents(dest_root, &rel)
            .map_err(io_err(format!("extract {}", image.display())))?;
        let dest = dest_root.join(&rel);
        match &node.inner {
            InnerNode::Dir(_) => {
                fs::create_dir_all(&dest).map_err(io_err(format!("create {}", dest.display())))?;
            }
            InnerNode::File(f) => {
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent)
                        .map_err(io_err(format!("create {}", parent.display())))?;
                }
                super::check_squashfs_file(&fs, f).map_err(|message| InitramfsError::Squashfs {
                    context: format!("reading {}", image.display()),
                    message,
                })?;
                let _ = fs::remove_file(&dest);
                let mut out =
                    File::create(&dest).map_err(io_err(format!("create {}", dest.display())))?;
                copy_out(&mut fs.file(f).reader(), &mut out).map_err(|e| match e {
                    CopyError::Read(e) => InitramfsError::Squashfs {
                        context: format!("reading {}", image.display()),
                        message: format!("corrupt squashfs: {}: {e}", node.fullpath.display()),
                    },
                    CopyError::Write(e) => io_err(format!("write {}", dest.display()))(e),
                })?;
                fs::set_permissions(
                    &dest,
                    fs::Permissions::from_mode(u32::from(node.header.permissions) | 0o600),
                )
                .map_err(io_err(format!("chmod {}", dest.display())))?;
                files += 1;
            }
            InnerNode::Symlink(l) => {
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent)
                        .map_err(io_err(format!("create {}", parent.display())))?;
                }
                let _ = fs::remove_file(&dest);
                symlink(&l.link, &dest).map_err(io_err(format!("symlink {}", dest.display())))?;
            }
            _ => {}
        }
    }
    Ok(files)
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// `io::copy` that tells a read failure (the image's data is corrupt) from a write failure
/// (our disk: ENOSPC and friends keep their kind).
fn copy_out(from: &mut impl Read, to: &mut impl Write) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
}

/// Removes every entry of the kernel's module directory that depmod would write through and
/// that is not a regular file: `modules.*` (its outputs and their `.tmp` files) as symlinks,
/// directories or anything else an image put there.
fn remove_planted_links(kver_dir: &Path) -> Result<(), InitramfsError> {
    let read = fs::read_dir(kver_dir).map_err(io_err(format!("list {}", kver_dir.display())))?;
    for e in read {
        let e = e.map_err(io_err(format!("list {}", kver_dir.display())))?;
        let name = e.file_name();
        if !name.to_string_lossy().starts_with("modules.") {
            continue;
        }
        let ft = e
            .file_type()
            .map_err(io_err(format!("stat {}", e.path().display())))?;
        if ft.is_file() {
            continue;
        }
        let path = e.path();
        tracing::warn!(path = %path.display(), "removing a non-file modules.* entry from image content before depmod");
        let removed = if ft.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(io_err(format!("remove {}", path.display())))?;
    }
    Ok(())
}

/// Builds `modules.dep.sqsh` in `work` from the base initramfs and the bundles of the
/// extensions that carry kernel modules.
pub(crate) fn build_modules_dep(
    base: &Path,
    magic: Magic,
    modules_rel: &Path,
    bundles: &[&Bundle],
    params: &SquashParams,
    work: &Path,
) -> Result<ModulesDep, InitramfsError> {
    let depmod = find_depmod().ok_or(InitramfsError::DepmodMissing)?;
    let root = work.join("modules-root");
    fs::create_dir_all(&root).map_err(io_err(format!("create {}", root.display())))?;

    let rootfs_sqsh = work.join("rootfs.sqsh");
    extract_rootfs_sqsh(base, magic, &rootfs_sqsh)?;
    extract_squashfs_subtree(&rootfs_sqsh, modules_rel, &root)?;
    let _ = fs::remove_file(&rootfs_sqsh);

    let modules_dir = root.join(modules_rel);
    let mut kvers = Vec::new();
    if let Ok(read) = fs::read_dir(&modules_dir) {
        for e in read.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                kvers.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let [kver] = kvers.as_slice() else {
        return Err(base_err(
            base,
            format!(
                "expected exactly one kernel version directory under /{} in rootfs.sqsh, found {kvers:?}",
                modules_rel.display()
            ),
        ));
    };
    let kver = kver.clone();
    let kver_rel = modules_rel.join(&kver);
    for b in bundles {
        extract_squashfs_subtree(&b.path, &kver_rel, &root)?;
    }
    // depmod writes `<kver dir>/modules.*.tmp` (following symlinks) and renames them over
    // `modules.*`: the directories on the way must be real, and no image may plant a link
    // there that points out of the tree.
    crate::contained::check_no_symlink_parents(&root, &kver_rel.join("modules.dep")).map_err(
        io_err(format!("kernel modules directory /{}", kver_rel.display())),
    )?;
    remove_planted_links(&root.join(&kver_rel))?;

    // depmod looks in `<basedir>/lib/modules/<kver>`: the basedir keeps any prefix before
    // `lib/modules` (`/usr` on Talos ≥ 1.10).
    let prefix = modules_rel
        .to_str()
        .and_then(|m| m.strip_suffix("lib/modules"))
        .ok_or_else(|| {
            InitramfsError::Depmod(format!(
                "kernel modules path /{} does not end in lib/modules",
                modules_rel.display()
            ))
        })?;
    let basedir = root.join(prefix.trim_end_matches('/'));
    let config = work.join("depmod.conf");
    fs::write(&config, DEPMOD_CONFIG).map_err(io_err(format!("write {}", config.display())))?;
    let config = std::path::absolute(&config).map_err(io_err("absolute depmod config path"))?;
    let basedir = std::path::absolute(&basedir).map_err(io_err("absolute depmod basedir"))?;
    let output = Command::new(&depmod)
        .arg("--all")
        .arg("--basedir")
        .arg(&basedir)
        .arg("--config")
        .arg(&config)
        .arg(&kver)
        .output()
        .map_err(io_err(format!("run {}", depmod.display())))?;
    if !output.status.success() {
        return Err(InitramfsError::Depmod(format!(
            "{} exited with {}: {}",
            depmod.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }

    // The pseudo-extension holds only the `modules.*` files of `<modules>/<kver>/`.
    let stage = work.join("modules.dep-rootfs");
    let stage_kver = stage.join(&kver_rel);
    fs::create_dir_all(&stage_kver).map_err(io_err(format!("create {}", stage_kver.display())))?;
    let mut names: Vec<_> = fs::read_dir(root.join(&kver_rel))
        .map_err(io_err("list depmod output"))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("modules."))
        .collect();
    names.sort();
    for n in &names {
        fs::copy(root.join(&kver_rel).join(n), stage_kver.join(n))
            .map_err(io_err(format!("copy {}", n.to_string_lossy())))?;
    }
    let mut entries: Vec<ScanEntry> = scan_tree(&stage, None)?;
    for e in &mut entries {
        e.mode = if matches!(e.kind, super::squash::EntryKind::Dir) {
            0o755
        } else {
            0o644
        };
    }
    let squashfs = work.join("modules.dep.sqsh");
    let file = File::create(&squashfs).map_err(io_err(format!("create {}", squashfs.display())))?;
    let mut w = PosWriter::new(file);
    let len = write_squashfs(&entries, 0o755, params, &mut w)?;
    let file = w.into_file().map_err(io_err("write modules.dep.sqsh"))?;
    file.set_len(len)
        .map_err(io_err("truncate modules.dep.sqsh"))?;
    let _ = fs::remove_dir_all(&root);
    let _ = fs::remove_dir_all(&stage);
    Ok(ModulesDep {
        squashfs,
        kernel_version: kver,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10, defect 2 (review finding): an image that plants `modules.dep.tmp → <a file of
    /// the appliance>` must not make depmod overwrite that file.
    #[test]
    fn planted_modules_links_are_removed_before_depmod() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("cache-signing-key.pem");
        fs::write(&secret, "KEY").unwrap();
        let kver = tmp.path().join("root/usr/lib/modules/6.12.57-talos");
        fs::create_dir_all(kver.join("modules.alias.tmp")).unwrap();
        fs::write(kver.join("modules.order"), "kernel/a.ko\n").unwrap();
        symlink(&secret, kver.join("modules.dep.tmp")).unwrap();
        symlink(&secret, kver.join("modules.dep")).unwrap();
        remove_planted_links(&kver).unwrap();
        let mut left: Vec<_> = fs::read_dir(&kver)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["modules.order"]);
        assert_eq!(fs::read_to_string(&secret).unwrap(), "KEY");
    }

    #[test]
    fn a_symlinked_modules_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::create_dir_all(tmp.path().join("elsewhere/6.12.57-talos")).unwrap();
        symlink(tmp.path().join("elsewhere"), root.join("usr/lib/modules")).unwrap();
        let rel = Path::new("usr/lib/modules/6.12.57-talos/modules.dep");
        assert!(crate::contained::check_no_symlink_parents(&root, rel).is_err());
    }
}
