//! A scratch directory per check for the targets that write files, and the containment check:
//! everything in the sandbox outside the extraction directory must be exactly as it was.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

/// What a path is, as far as containment goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir(u32),
    /// Mode and SHA-256 of the content.
    File(u32, [u8; 32]),
    Symlink(PathBuf),
    Other,
}

/// A fresh directory under the system temp dir, removed (without following symlinks) on drop.
///
/// Layout: `<root>/dest` is where the parser may write; `<root>/outside` holds bait a hostile
/// archive may try to reach with `../outside/...` or through symlinks (`secret`, a directory
/// `dir` with `file`); `<root>/input` is for the fuzz input written as a file.
pub(crate) struct Sandbox {
    pub(crate) root: PathBuf,
}

impl Sandbox {
    pub(crate) fn new(name: &str) -> Sandbox {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "bootfactory-fuzz-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("dest")).expect("create sandbox dest");
        fs::create_dir_all(root.join("outside/dir")).expect("create sandbox outside");
        fs::create_dir_all(root.join("input")).expect("create sandbox input");
        fs::write(root.join("outside/secret"), b"secret").expect("write bait");
        fs::write(root.join("outside/dir/file"), b"bait").expect("write bait");
        Sandbox { root }
    }

    pub(crate) fn dest(&self) -> PathBuf {
        self.root.join("dest")
    }

    pub(crate) fn input(&self, name: &str) -> PathBuf {
        self.root.join("input").join(name)
    }

    /// Everything in the sandbox except `dest`'s contents, without following symlinks.
    pub(crate) fn outside_snapshot(&self) -> BTreeMap<PathBuf, Kind> {
        let mut out = BTreeMap::new();
        walk(&self.root, &self.root, &self.dest(), &mut out);
        out
    }

    /// Panics when anything outside `dest` differs from `before`, or when `dest` is no longer
    /// a real directory.
    pub(crate) fn assert_contained(&self, before: &BTreeMap<PathBuf, Kind>, what: &str) {
        let meta = fs::symlink_metadata(self.dest()).expect("dest vanished");
        assert!(
            meta.is_dir(),
            "{what}: the extraction directory was replaced by a non-directory"
        );
        let after = self.outside_snapshot();
        if &after != before {
            let changed: Vec<_> = before
                .keys()
                .chain(after.keys())
                .filter(|k| before.get(*k) != after.get(*k))
                .collect();
            panic!("{what}: wrote outside its destination directory: {changed:?}");
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Directories may have lost their write/exec bits (modes come from the archive).
        make_removable(&self.root);
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn make_removable(dir: &Path) {
    if let Ok(read) = fs::read_dir(dir) {
        for e in read.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o700));
                make_removable(&e.path());
            }
        }
    }
}

fn walk(root: &Path, dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, Kind>) {
    let Ok(read) = fs::read_dir(dir) else {
        return;
    };
    for e in read.flatten() {
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        let kind = if meta.file_type().is_symlink() {
            Kind::Symlink(fs::read_link(&path).unwrap_or_default())
        } else if meta.is_dir() {
            Kind::Dir(mode)
        } else if meta.is_file() {
            let mut h = Sha256::new();
            if let Ok(mut f) = fs::File::open(&path) {
                let mut buf = Vec::new();
                let _ = f.read_to_end(&mut buf);
                h.update(&buf);
            }
            Kind::File(mode, h.finalize().into())
        } else {
            Kind::Other
        };
        let is_dir = matches!(kind, Kind::Dir(_));
        out.insert(rel, kind);
        if is_dir && path != skip {
            walk(root, &path, skip, out);
        }
    }
}
