//! TFTP read requests: the file name of an RRQ through the path policy
//! ([`resolve_request`](crate::tftp::resolve_request)) and the extra-directory lookup
//! (`ExtraDir::open`), as `tftp::server` runs them.
//!
//! Input: a raw TFTP packet (`00 01 <name> 00 <mode> 00 …`) or, when it does not start with
//! the RRQ opcode, the bytes up to the first NUL as the name. Properties: no panic; an
//! accepted name is relative, at most [`MAX_NAME_LEN`] bytes, made of normal components only,
//! free of `\`, `%`, control characters and drive prefixes, and equal to the request minus one
//! optional leading `/`; a lookup in a served directory whose symlinks point outside it never
//! opens a file outside it.

use std::os::unix::fs::symlink;
use std::path::{Component, Path};
use std::sync::OnceLock;

use crate::tftp::files::{DirLookup, ExtraDir, MAX_NAME_LEN, resolve_request};

/// The served directory, built once per process: files, a subdirectory, a symlink inside, and
/// symlinks (file and directory) that point outside at bait.
fn served_dir() -> &'static ExtraDir {
    static DIR: OnceLock<ExtraDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let base =
            std::env::temp_dir().join(format!("bootfactory-fuzz-tftp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("served");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("pxelinux.cfg")).expect("create served dir");
        std::fs::create_dir_all(&outside).expect("create outside dir");
        std::fs::write(outside.join("secret"), b"secret").expect("write bait");
        std::fs::write(root.join("ipxe.efi"), b"served").expect("write served file");
        std::fs::write(root.join("pxelinux.cfg/default"), b"served").expect("write served file");
        symlink("ipxe.efi", root.join("inside-link")).expect("symlink");
        symlink(outside.join("secret"), root.join("abs-link")).expect("symlink");
        symlink("../outside/secret", root.join("rel-link")).expect("symlink");
        symlink("../outside", root.join("dir-link")).expect("symlink");
        ExtraDir::new(&root).expect("served dir")
    })
}

/// The requested name of a packet.
fn requested_name(data: &[u8]) -> &[u8] {
    let body = data.strip_prefix(&[0, 1]).unwrap_or(data);
    body.split(|&b| b == 0).next().unwrap_or_default()
}

/// Checks one request.
pub fn check(data: &[u8]) {
    // The server hands async-tftp's `Path` to `to_str`; non-UTF-8 is refused before the policy.
    let Ok(name) = std::str::from_utf8(requested_name(data)) else {
        return;
    };
    let Ok(served) = resolve_request(name) else {
        return;
    };
    assert!(!served.is_empty() && served.len() <= MAX_NAME_LEN);
    assert_eq!(served, name.strip_prefix('/').unwrap_or(name));
    assert!(
        Path::new(&served)
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "accepted {served:?} has a non-normal component"
    );
    assert!(
        !served
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".."),
        "accepted {served:?}"
    );
    assert!(
        !served.contains(['\\', '%']) && !served.chars().any(char::is_control),
        "accepted {served:?}"
    );
    let b = served.as_bytes();
    assert!(
        !(b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'),
        "accepted drive prefix {served:?}"
    );
    let dir = served_dir();
    if let DirLookup::Found(file, size) = dir.open(&served) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let real = std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("fd path");
        assert!(
            real.starts_with(dir.root()),
            "{served:?} opened {} outside the served directory",
            real.display()
        );
        assert_eq!(size, 6, "only the served files are found");
    }
}
