//! TFTP packets from a client: the packet parser ([`packet::parse`]), option negotiation, the
//! file name of an RRQ through the path policy ([`resolve_request`](crate::tftp::resolve_request))
//! and the extra-directory lookup (`ExtraDir::open`), as `tftp::server` runs them.
//!
//! Input: a raw TFTP datagram (`00 01 <name> 00 <mode> 00 <opt> 00 <value> 00 …`, an ACK, an
//! ERROR, anything). Properties of the parser: no panic; a request's file name and mode come
//! from the datagram up to their NULs; every option it reports is in its RFC's range; the
//! options granted never exceed the server's caps, and the OACK and ERROR packets the server
//! would build from them parse back. When the datagram is not an RRQ, the bytes up to the first
//! NUL are tried as a name too. Properties of the path policy: an accepted name is relative, at
//! most [`MAX_NAME_LEN`] bytes, made of normal components only, free of `\`, `%`, control
//! characters and drive prefixes, and equal to the request minus one optional leading `/`; a
//! lookup in a served directory whose symlinks point outside it never opens a file outside it.

use std::os::unix::fs::symlink;
use std::path::{Component, Path};
use std::sync::OnceLock;

use crate::tftp::files::{DirLookup, ExtraDir, MAX_NAME_LEN, resolve_request};
use crate::tftp::packet::{self, ErrorCode, Packet};
use crate::tftp::server::negotiate;

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

/// The requested name of a datagram that is not a request: the bytes up to the first NUL.
fn requested_name(data: &[u8]) -> &[u8] {
    let body = data.strip_prefix(&[0, 1]).unwrap_or(data);
    body.split(|&b| b == 0).next().unwrap_or_default()
}

/// Checks what the parser and the negotiation make of one datagram; returns the request's file
/// name when it is a request.
fn check_packet(data: &[u8]) -> Option<&[u8]> {
    let parsed = packet::parse(data);
    let mut oack = Vec::new();
    match parsed {
        Ok(Packet::Request(r)) => {
            assert_eq!(data[..2], [0, if r.read { 1 } else { 2 }]);
            let body = &data[2..];
            assert!(body.starts_with(r.filename) && body[r.filename.len()] == 0);
            assert!(!r.filename.contains(&0));
            let o = r.options;
            assert!(o.blksize.is_none_or(|b| (8..=65464).contains(&b)), "{o:?}");
            assert!(o.timeout.is_none_or(|t| t >= 1), "{o:?}");
            assert!(o.windowsize.is_none_or(|w| w >= 1), "{o:?}");
            for (max_block, limit) in [(1468, 16), (8, 1), (65464, 0)] {
                let size = data.len() as u64 * 1000;
                let granted = negotiate(&o, size, max_block, limit);
                assert!(granted.blksize.is_none_or(|b| b <= max_block && b >= 8));
                assert!(
                    granted
                        .windowsize
                        .is_none_or(|w| w >= 1 && w <= limit.max(1))
                );
                assert_eq!(granted.tsize, o.tsize.map(|_| size));
                assert_eq!(
                    granted.is_empty(),
                    o.blksize.is_none() && o.tsize.is_none() && o.windowsize.is_none()
                );
                packet::encode_oack(&granted, &mut oack);
                assert_eq!(packet::parse(&oack), Ok(Packet::Other(packet::OACK)));
            }
            Some(r.filename)
        }
        Ok(Packet::Ack(n)) => {
            assert_eq!(data, [0, 4, (n >> 8) as u8, n as u8]);
            None
        }
        Ok(Packet::Error { code, message }) => {
            assert!(!message.contains(&0));
            let text = String::from_utf8_lossy(message);
            let back = packet::encode_error(ErrorCode::NotDefined, &text);
            assert!(matches!(
                packet::parse(&back),
                Ok(Packet::Error { code: 0, .. })
            ));
            let _ = code;
            None
        }
        Ok(Packet::Other(op)) => {
            assert!(op == packet::DATA || op == packet::OACK);
            None
        }
        Err(_) => None,
    }
}

/// Checks one datagram.
pub fn check(data: &[u8]) {
    let name = check_packet(data).unwrap_or_else(|| requested_name(data));
    // The server refuses a non-UTF-8 name (error 2) before the path policy.
    let Ok(name) = std::str::from_utf8(name) else {
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
