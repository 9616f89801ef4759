//! The newc cpio reader ([`CpioReader`]), which reads the imager's base initramfs and the
//! factory's own archives.
//!
//! Properties: no panic; the reader never claims more bytes than it was given; each entry's
//! data is exactly its header's size; concatenated archives (the kernel's rule, used for
//! early-microcode initramfs images) read on without panicking; and every entry the writer can
//! express (directories, regular files, symlinks, devices; a name without NUL; the permission
//! and type bits only) reads back identically after [`CpioWriter`] writes it again.

use crate::formats::cpio::{
    CpioReader, CpioWriter, Entry, Metadata, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG,
};

/// Entries read per input at most (the corpus never needs more; keeps each run short).
const MAX_ENTRIES: usize = 4096;

/// Reads every archive of `data`; `Err` ends the reading (the entries before it still count).
fn read_all(data: &[u8]) -> (Vec<Entry>, u64) {
    let mut reader = CpioReader::new(data);
    let mut entries = Vec::new();
    loop {
        match reader.next_entry() {
            Ok(Some(e)) => {
                assert_eq!(e.data.len() as u64, e.header.size, "entry data is its size");
                entries.push(e);
                if entries.len() >= MAX_ENTRIES {
                    break;
                }
            }
            Ok(None) => {
                // A trailer, or a clean end after one: try the next concatenated archive.
                reader.continue_after_trailer();
                match reader.next_header() {
                    Ok(Some(h)) => {
                        let data = match reader.read_data() {
                            Ok(d) => d,
                            Err(_) => break,
                        };
                        entries.push(Entry { header: h, data });
                    }
                    _ => break,
                }
            }
            Err(_) => break,
        }
        assert!(
            reader.offset() <= data.len() as u64,
            "offset past the input"
        );
    }
    assert!(
        reader.offset() <= data.len() as u64,
        "offset past the input"
    );
    (entries, reader.offset())
}

/// Whether [`CpioWriter`] can write `e` back exactly.
fn expressible(e: &Entry) -> bool {
    let h = &e.header;
    let kind = h.mode & S_IFMT;
    let sized_ok = match kind {
        S_IFREG => true,
        S_IFLNK => std::str::from_utf8(&e.data).is_ok(),
        S_IFDIR | S_IFCHR | S_IFBLK => h.size == 0,
        _ => false,
    };
    sized_ok
        && h.mode & !(S_IFMT | 0o7777) == 0
        && !h.name.is_empty()
        && !h.name.contains('\0')
        && h.name != crate::formats::cpio::TRAILER
        && (kind == S_IFCHR || kind == S_IFBLK || h.rdev == (0, 0))
}

/// Checks one archive.
pub fn check(data: &[u8]) {
    let (entries, _) = read_all(data);
    let kept: Vec<&Entry> = entries.iter().filter(|e| expressible(e)).collect();
    let mut w = CpioWriter::new(Vec::new());
    for e in &kept {
        let h = &e.header;
        let meta = Metadata {
            mode: h.mode & 0o7777,
            uid: h.uid,
            gid: h.gid,
            mtime: h.mtime,
            ino: Some(h.ino),
            nlink: Some(h.nlink),
            dev_major: h.dev.0,
            dev_minor: h.dev.1,
        };
        let r = match h.mode & S_IFMT {
            S_IFDIR => w.add_dir(&h.name, &meta),
            S_IFREG => w.add_file(&h.name, &meta, &e.data),
            S_IFLNK => w.add_symlink(
                &h.name,
                &meta,
                std::str::from_utf8(&e.data).expect("checked"),
            ),
            kind => w.add_device(&h.name, &meta, kind == S_IFBLK, h.rdev.0, h.rdev.1),
        };
        r.expect("the writer accepts what the reader produced");
    }
    let written = w.finish().expect("finish");
    let (again, consumed) = read_all(&written);
    assert_eq!(
        consumed,
        written.len() as u64,
        "a written archive reads to its end"
    );
    assert_eq!(again.len(), kept.len(), "entry count after rewriting");
    for (a, b) in kept.iter().zip(&again) {
        let mut expected = a.header.clone();
        expected.check = 0;
        assert_eq!(b.header, expected, "header after rewriting");
        assert_eq!(a.data, b.data, "data after rewriting");
    }
}
