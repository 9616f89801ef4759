//! What the TFTP server serves and the path policy that guards it.
//!
//! A request names a file the way a firmware writes it (`ipxe.efi`, `/ipxe.efi`,
//! `pxelinux.cfg/default`). [`resolve_request`] turns that into a *served name* — a relative,
//! `/`-separated path with no `.`/`..`/empty components — or refuses it. Served names are looked
//! up first among the embedded files ([`TftpFiles`]), then under the optional extra directory
//! ([`ExtraDir`]), where the resolved file must stay inside the directory after symlinks are
//! followed and must be a regular file.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Longest request name accepted, in bytes. Firmware names are far shorter; the TFTP request
/// itself must fit one datagram.
pub const MAX_NAME_LEN: usize = 255;

/// Why a requested path was refused. Every refusal is answered with TFTP error 2
/// ("access violation") and counted in [`TftpStats::refused`](super::TftpStats::refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Nothing left after the one tolerated leading `/`.
    #[error("empty file name")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`] bytes.
    #[error("file name longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    /// An absolute path beyond the one tolerated leading `/` (e.g. `//etc/passwd`).
    #[error("absolute path")]
    Absolute,
    /// A `..` component.
    #[error("parent-directory component")]
    ParentDir,
    /// A `.` component or an empty one (`a//b`, trailing `/`).
    #[error("empty or '.' path component")]
    OddComponent,
    /// A backslash (a Windows separator or an escape).
    #[error("backslash in path")]
    Backslash,
    /// NUL or another control character.
    #[error("control character in path")]
    ControlChar,
    /// A `%`: percent-encoding (`%2e%2e`, `%2f`) is never decoded, so it is refused outright.
    #[error("percent sign in path (encoded names are not accepted)")]
    Percent,
    /// A Windows drive prefix (`C:`).
    #[error("drive letter in path")]
    DriveLetter,
    /// A request that is not valid UTF-8.
    #[error("file name is not UTF-8")]
    NotUtf8,
    /// In the extra directory: the name resolves (through a symlink) outside the directory.
    #[error("path leaves the served directory")]
    OutsideRoot,
    /// In the extra directory: a directory, device, FIFO, socket or other non-regular file.
    #[error("not a regular file")]
    NotRegularFile,
    /// A write request: the server is read-only.
    #[error("write requests are refused (read-only server)")]
    Write,
}

/// Normalises a client's requested path to a served name, or refuses it.
///
/// One leading `/` is tolerated and stripped (many firmwares send `/ipxe.efi`). Refused:
/// anything longer than [`MAX_NAME_LEN`], a second leading `/`, `..`, `.` and empty
/// components, backslashes, control characters (NUL included), any `%` (so `%2e%2e` and `%2f`
/// cannot smuggle separators) and Windows drive prefixes such as `C:`. The result is a relative
/// `/`-separated path; nothing is decoded or case-folded.
pub fn resolve_request(path: &str) -> Result<String, Refusal> {
    if path.len() > MAX_NAME_LEN {
        return Err(Refusal::TooLong);
    }
    let rest = path.strip_prefix('/').unwrap_or(path);
    if rest.is_empty() {
        return Err(Refusal::Empty);
    }
    if rest.starts_with('/') {
        return Err(Refusal::Absolute);
    }
    for c in rest.chars() {
        match c {
            '\\' => return Err(Refusal::Backslash),
            '%' => return Err(Refusal::Percent),
            c if c.is_control() => return Err(Refusal::ControlChar),
            _ => {}
        }
    }
    let b = rest.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Err(Refusal::DriveLetter);
    }
    for component in rest.split('/') {
        match component {
            ".." => return Err(Refusal::ParentDir),
            "" | "." => return Err(Refusal::OddComponent),
            _ => {}
        }
    }
    Ok(rest.to_owned())
}

/// The embedded files: served name → contents (usually `'static` data wrapped in [`Bytes`]).
#[derive(Debug, Clone, Default)]
pub struct TftpFiles {
    files: HashMap<String, Bytes>,
}

impl TftpFiles {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a file. `name` goes through [`resolve_request`], so `/ipxe.efi` and
    /// `ipxe.efi` are the same entry.
    ///
    /// # Panics
    /// If `name` is not a valid served name (e.g. contains `..`): names are fixed by the
    /// program, so that is a programming error.
    pub fn insert(&mut self, name: &str, data: Bytes) {
        let served = resolve_request(name)
            .unwrap_or_else(|e| panic!("invalid embedded TFTP file name {name:?}: {e}"));
        self.files.insert(served, data);
    }

    /// The contents of the file with this served name, if embedded.
    pub fn get(&self, served_name: &str) -> Option<&Bytes> {
        self.files.get(served_name)
    }

    /// Number of embedded files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True if nothing is embedded.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The served names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.files.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// Outcome of looking a served name up in the extra directory.
#[derive(Debug)]
pub(crate) enum DirLookup {
    /// An open regular file inside the directory, and its size.
    Found(File, u64),
    /// No such file.
    NotFound,
    /// The name exists but may not be served.
    Refused(Refusal),
    /// Any other I/O error (permissions, EIO …).
    Error(io::Error),
}

/// A directory served read-only after the embedded files.
///
/// The root is canonicalised once at start-up. For each request the joined path is
/// canonicalised (following every symlink) and must still start with the root, then the
/// opened handle must be a regular file. Symlinks that stay inside the root are followed.
///
/// Race note: a local user who can write into the directory could swap a checked path for a
/// symlink between the check and the open; the directory is meant to be writable only by the
/// administrator. The opened handle is checked with `fstat`, so a swap to a directory or
/// device is still refused.
#[derive(Debug, Clone)]
pub(crate) struct ExtraDir {
    root: PathBuf,
}

impl ExtraDir {
    /// Canonicalises `dir`, which must be an existing directory.
    pub(crate) fn new(dir: &Path) -> anyhow::Result<Self> {
        let root = dir
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("TFTP extra directory {}: {e}", dir.display()))?;
        anyhow::ensure!(
            root.is_dir(),
            "TFTP extra directory {} is not a directory",
            dir.display()
        );
        Ok(Self { root })
    }

    /// The canonical root.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Looks up a name already normalised by [`resolve_request`].
    pub(crate) fn open(&self, served_name: &str) -> DirLookup {
        let joined = self.root.join(served_name);
        let real = match joined.canonicalize() {
            Ok(p) => p,
            Err(e) if is_missing(&e) => return DirLookup::NotFound,
            Err(e) => return DirLookup::Error(e),
        };
        if !real.starts_with(&self.root) {
            return DirLookup::Refused(Refusal::OutsideRoot);
        }
        // Check the type before opening: opening a FIFO for reading would block.
        match std::fs::metadata(&real) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return DirLookup::Refused(Refusal::NotRegularFile),
            Err(e) if is_missing(&e) => return DirLookup::NotFound,
            Err(e) => return DirLookup::Error(e),
        }
        open_regular(&real)
    }
}

/// Opens `path` for reading if it is a regular file, checked on the open descriptor (`fstat`).
///
/// The file is opened with `O_NONBLOCK` (std adds `O_CLOEXEC`): the type check before the open
/// races with a rename, and opening a FIFO swapped in meanwhile would otherwise block the TFTP
/// thread until a writer appears — forever. With `O_NONBLOCK` the open returns at once, `fstat`
/// sees the FIFO and the request is refused. Reads of regular files ignore the flag.
fn open_regular(path: &Path) -> DirLookup {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if is_missing(&e) => return DirLookup::NotFound,
        Err(e) => return DirLookup::Error(e),
    };
    match file.metadata() {
        Ok(m) if m.is_file() => DirLookup::Found(file, m.len()),
        Ok(_) => DirLookup::Refused(Refusal::NotRegularFile),
        Err(e) => DirLookup::Error(e),
    }
}

/// "Not there": a missing component, or a non-directory used as one (`file.efi/x`).
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO reaching the open (swapped in after the type check) is refused at once instead of
    /// blocking the TFTP thread until a writer appears.
    #[test]
    fn a_fifo_reaching_the_open_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert!(matches!(
            open_regular(&fifo),
            DirLookup::Refused(Refusal::NotRegularFile)
        ));
        let file = dir.path().join("file");
        std::fs::write(&file, b"abc").unwrap();
        assert!(matches!(open_regular(&file), DirLookup::Found(_, 3)));
    }

    #[test]
    fn accepts_and_normalises() {
        assert_eq!(resolve_request("ipxe.efi").unwrap(), "ipxe.efi");
        assert_eq!(resolve_request("/ipxe.efi").unwrap(), "ipxe.efi");
        assert_eq!(resolve_request("/undionly.kpxe").unwrap(), "undionly.kpxe");
        assert_eq!(
            resolve_request("pxelinux.cfg/01-aa-bb").unwrap(),
            "pxelinux.cfg/01-aa-bb"
        );
        assert_eq!(
            resolve_request("/arm64/ipxe.efi").unwrap(),
            "arm64/ipxe.efi"
        );
        // Dots inside names and names made only of dots other than `.`/`..` are fine.
        assert_eq!(resolve_request("a..b").unwrap(), "a..b");
        assert_eq!(resolve_request(".../x").unwrap(), ".../x");
        assert_eq!(resolve_request(".hidden").unwrap(), ".hidden");
        // Colons after the first component position are not drive letters (iPXE `${mac}`).
        assert_eq!(
            resolve_request("MAC-52:54:00:12:34:56.ipxe").unwrap(),
            "MAC-52:54:00:12:34:56.ipxe"
        );
        assert_eq!(resolve_request("ab:c").unwrap(), "ab:c");
        // Non-ASCII is only bytes on Linux: no separator can hide in it.
        assert_eq!(resolve_request("résumé.txt").unwrap(), "résumé.txt");
        let max = "a".repeat(MAX_NAME_LEN);
        assert_eq!(resolve_request(&max).unwrap(), max);
    }

    #[test]
    fn refusals() {
        use Refusal::*;
        let cases: &[(&str, Refusal)] = &[
            ("", Empty),
            ("/", Empty),
            ("//etc/passwd", Absolute),
            ("///ipxe.efi", Absolute),
            ("..", ParentDir),
            ("../etc/passwd", ParentDir),
            ("/../etc/passwd", ParentDir),
            ("a/../../etc/passwd", ParentDir),
            ("a/..", ParentDir),
            ("a/../ipxe.efi", ParentDir),
            (".", OddComponent),
            ("./ipxe.efi", OddComponent),
            ("a/./b", OddComponent),
            ("a//b", OddComponent),
            ("dir/", OddComponent),
            ("..\\windows\\win.ini", Backslash),
            ("\\\\server\\share", Backslash),
            ("a\\b", Backslash),
            ("ipxe.efi\0.png", ControlChar),
            ("ipxe\n.efi", ControlChar),
            ("ipxe\r", ControlChar),
            ("\x1b[2J", ControlChar),
            ("a\x7fb", ControlChar),
            ("a\u{85}b", ControlChar),
            ("%2e%2e/%2e%2e/etc/passwd", Percent),
            ("..%2fetc%2fpasswd", Percent),
            ("%2fetc/passwd", Percent),
            ("ipxe%00.efi", Percent),
            ("100%", Percent),
            ("C:", DriveLetter),
            ("C:/Windows/win.ini", DriveLetter),
            ("/c:/boot.ini", DriveLetter),
            ("z:ipxe.efi", DriveLetter),
        ];
        for (input, want) in cases {
            assert_eq!(
                resolve_request(input).as_ref(),
                Err(want),
                "input {input:?}"
            );
        }
        assert_eq!(resolve_request(&"a".repeat(MAX_NAME_LEN + 1)), Err(TooLong));
    }

    #[test]
    fn files_insert_normalises() {
        let mut f = TftpFiles::new();
        assert!(f.is_empty());
        f.insert("/ipxe.efi", Bytes::from_static(b"x"));
        f.insert("snponly.efi", Bytes::from_static(b"yy"));
        assert_eq!(f.len(), 2);
        assert_eq!(f.get("ipxe.efi").unwrap().as_ref(), b"x");
        assert_eq!(f.names(), vec!["ipxe.efi", "snponly.efi"]);
    }

    #[test]
    #[should_panic(expected = "invalid embedded TFTP file name")]
    fn files_insert_rejects_bad_names() {
        TftpFiles::new().insert("../x", Bytes::new());
    }

    #[test]
    fn extra_dir_lookup() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("boot.ipxe"), b"#!ipxe\n").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/file"), b"inner").unwrap();
        symlink(root.join("boot.ipxe"), root.join("inside-link")).unwrap();
        symlink("sub/file", root.join("relative-link")).unwrap();
        symlink(outside.path().join("secret"), root.join("escape")).unwrap();
        symlink(outside.path(), root.join("escape-dir")).unwrap();
        symlink("/", root.join("slash")).unwrap();
        symlink("missing-target", root.join("dangling")).unwrap();

        let dir = ExtraDir::new(root).unwrap();
        let found = |name: &str| match dir.open(name) {
            DirLookup::Found(_, size) => size,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(found("boot.ipxe"), 7);
        assert_eq!(found("sub/file"), 5);
        assert_eq!(found("inside-link"), 7);
        assert_eq!(found("relative-link"), 5);
        for name in ["nope", "sub/nope", "boot.ipxe/x", "dangling"] {
            assert!(matches!(dir.open(name), DirLookup::NotFound), "{name}");
        }
        for name in ["escape", "escape-dir/secret", "slash/etc/passwd"] {
            assert!(
                matches!(dir.open(name), DirLookup::Refused(Refusal::OutsideRoot)),
                "{name}"
            );
        }
        assert!(matches!(
            dir.open("sub"),
            DirLookup::Refused(Refusal::NotRegularFile)
        ));

        assert!(ExtraDir::new(&root.join("boot.ipxe")).is_err());
        assert!(ExtraDir::new(&root.join("absent")).is_err());
    }

    #[test]
    fn extra_dir_refuses_fifo() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("skipping: mkfifo unavailable");
            return;
        }
        // Opening a FIFO for reading would block without a writer: the check must happen
        // before the open.
        let dir = ExtraDir::new(tmp.path()).unwrap();
        assert!(matches!(
            dir.open("fifo"),
            DirLookup::Refused(Refusal::NotRegularFile)
        ));
    }
}
