//! Files inside an untrusted tree: an image flattened into the cache, a squashfs extracted
//! into a scratch directory, an extension's rootfs.
//!
//! Everything inside such a tree came from an image somebody else built, symlinks included.
//! A symlink `usr/install/amd64/vmlinuz → /var/lib/bootfactory/cache-signing-key.pem` is a
//! perfectly valid layer entry; following it with the host's view of the filesystem would
//! serve the appliance's private key as a "kernel". The rules here:
//!
//! - **Reading** resolves a path the way the image itself sees it, as if `root` were `/`
//!   (a chroot): absolute link targets start again at `root`, `..` never climbs above it, and
//!   at most [`MAX_LINK_HOPS`] links are followed (a loop is an error, as `ELOOP` would be).
//!   The result is a path made of real directories below `root` ending in a regular file,
//!   opened with `O_NOFOLLOW`.
//! - **Writing** never goes through a symlink: every existing parent of the path written must
//!   be a real directory ([`check_no_symlink_parents`]).
//!
//! Only the appliance writes below the tree's root after extraction, so a path resolved here
//! stays valid for the build that asked for it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// The most symlinks followed while resolving one path (Linux's own limit is 40).
pub const MAX_LINK_HOPS: usize = 40;

fn escape_error(rel: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", rel.display()),
    )
}

/// Resolves `rel` below `root` as the image sees it (`root` is its `/`), following symlinks
/// only inside the tree. Returns the real path (no symlink components) below `root`.
///
/// Fails with `NotFound` when a component does not exist and `InvalidData` for a link loop.
pub fn resolve(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = VecDeque::new();
    push_components(&mut pending, rel);
    let mut resolved: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&name);
        let meta = fs::symlink_metadata(&candidate)?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_LINK_HOPS {
                return Err(escape_error(rel, "too many levels of symbolic links"));
            }
            let target = fs::read_link(&candidate)?;
            if target.is_absolute() {
                resolved.clear();
            }
            let mut front = VecDeque::new();
            push_components(&mut front, &target);
            while let Some(c) = front.pop_back() {
                pending.push_front(c);
            }
        } else {
            resolved.push(name);
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

/// Appends the components of `path` to `out`: `.` and the root are dropped, `..` is kept
/// (it pops the resolved path when reached).
fn push_components(out: &mut VecDeque<OsString>, path: &Path) {
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push_back(n.to_os_string()),
            Component::ParentDir => out.push_back(OsString::from("..")),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
}

/// Opens the regular file at `rel` inside `root` (see [`resolve`]); returns it with its real
/// path. Anything but a regular file (a directory, a device) is `InvalidInput`.
pub fn open_file(root: &Path, rel: &Path) -> io::Result<(File, PathBuf)> {
    let real = resolve(root, rel)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&real)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", rel.display()),
        ));
    }
    Ok((file, real))
}

/// The real path of the regular file at `rel` inside `root`, or `None` if there is none
/// (missing, a directory, a device, a link leading nowhere or looping).
pub fn regular_file(root: &Path, rel: &Path) -> Option<PathBuf> {
    open_file(root, rel).ok().map(|(_, real)| real)
}

/// Checks that no existing parent of `rel` below `root` is a symlink, so creating `rel` cannot
/// write outside `root`. `rel` must already be clean (relative, no `..`).
pub fn check_no_symlink_parents(root: &Path, rel: &Path) -> io::Result<()> {
    let mut cur = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(escape_error(rel, "a parent directory is a symbolic link"));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The clean relative form of an entry path (`./a/b` → `a/b`); `None` for an absolute path or
/// one with `..` (it could leave the tree), and for an empty one.
pub fn clean_relative(raw: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("secret.pem");
        fs::write(&outside, "PRIVATE KEY").unwrap();
        fs::create_dir_all(root.join("usr/install/amd64")).unwrap();
        fs::create_dir_all(root.join("boot")).unwrap();
        fs::write(root.join("boot/vmlinuz-6.1"), "kernel").unwrap();
        (dir, root, outside)
    }

    fn read(root: &Path, rel: &str) -> io::Result<String> {
        let (mut f, _) = open_file(root, Path::new(rel))?;
        let mut s = String::new();
        f.read_to_string(&mut s)?;
        Ok(s)
    }

    #[test]
    fn absolute_link_to_the_host_resolves_inside_the_tree() {
        let (_d, root, outside) = tree();
        symlink(&outside, root.join("usr/install/amd64/vmlinuz")).unwrap();
        // The image's view: <root>/<abs path of the secret>, which does not exist.
        let err = read(&root, "usr/install/amd64/vmlinuz").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(regular_file(&root, Path::new("usr/install/amd64/vmlinuz")).is_none());
    }

    #[test]
    fn dotdot_links_cannot_climb_above_the_root() {
        let (_d, root, _outside) = tree();
        symlink(
            "../../../../secret.pem",
            root.join("usr/install/amd64/vmlinuz"),
        )
        .unwrap();
        assert!(read(&root, "usr/install/amd64/vmlinuz").is_err());
        // A directory link that climbs: resolved at the root instead.
        symlink("../../../../../..", root.join("usr/up")).unwrap();
        assert_eq!(read(&root, "usr/up/boot/vmlinuz-6.1").unwrap(), "kernel");
    }

    #[test]
    fn links_inside_the_tree_work_like_in_the_image() {
        let (_d, root, _outside) = tree();
        symlink("/boot/vmlinuz-6.1", root.join("usr/install/amd64/vmlinuz")).unwrap();
        symlink("../../boot", root.join("usr/install/b")).unwrap();
        assert_eq!(read(&root, "usr/install/amd64/vmlinuz").unwrap(), "kernel");
        assert_eq!(read(&root, "usr/install/b/vmlinuz-6.1").unwrap(), "kernel");
        let real = regular_file(&root, Path::new("usr/install/amd64/vmlinuz")).unwrap();
        assert_eq!(real, root.join("boot/vmlinuz-6.1"));
    }

    #[test]
    fn loops_and_non_files_are_refused() {
        let (_d, root, _outside) = tree();
        symlink("b", root.join("a")).unwrap();
        symlink("a", root.join("b")).unwrap();
        assert!(read(&root, "a").is_err());
        assert!(read(&root, "boot").is_err());
        assert!(read(&root, "missing").is_err());
    }

    #[test]
    fn writes_through_symlinked_parents_are_refused() {
        let (_d, root, outside) = tree();
        symlink(outside.parent().unwrap(), root.join("usr/lib")).unwrap();
        assert!(check_no_symlink_parents(&root, Path::new("usr/lib/x.ko")).is_err());
        assert!(check_no_symlink_parents(&root, Path::new("usr/install/amd64/x")).is_ok());
        assert!(check_no_symlink_parents(&root, Path::new("new/dir/x")).is_ok());
        assert_eq!(
            clean_relative(Path::new("./a/./b")),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(clean_relative(Path::new("/a")), None);
        assert_eq!(clean_relative(Path::new("a/../b")), None);
    }
}
