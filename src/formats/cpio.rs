//! newc ("new ASCII", magic `070701`) cpio archives, as the Linux initramfs uses them.
//!
//! [`CpioWriter`] streams an archive the way GNU `cpio -o -H newc --reproducible` does:
//!
//! - a 110-byte ASCII header: the magic and 13 fields of 8 **upper-case** hex digits (`ino`,
//!   `mode`, `uid`, `gid`, `nlink`, `mtime`, `filesize`, `devmajor`, `devminor`, `rdevmajor`,
//!   `rdevminor`, `namesize` including the NUL, `check` = 0);
//! - the name and a NUL, padded with NULs so header + name is a multiple of 4;
//! - the data, padded with NULs to a multiple of 4 (a symlink's data is its target);
//! - a final `TRAILER!!!` entry (ino 0, mode 0, nlink 1) and NULs up to a multiple of 512
//!   bytes (GNU cpio's default block size; configurable with [`CpioWriter::set_block_size`]).
//!
//! Inodes are numbered automatically from 0 in write order (GNU `--renumber-inodes`), unless an
//! entry gives one explicitly; device numbers default to 0 (`--ignore-devno`). Hard links are not
//! modelled: each entry carries its own data.
//!
//! [`CpioReader`] iterates the entries of such an archive (either the `070701` or the `070702`
//! "crc" variant; the checksum is not verified).

use std::io::{self, Read, Write};

use super::read_full;

/// Magic of newc archives.
pub const NEWC_MAGIC: &[u8; 6] = b"070701";
/// Magic of the "crc" variant (same layout, `check` holds a byte sum).
pub const CRC_MAGIC: &[u8; 6] = b"070702";
/// Name of the entry that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";
/// Header length in bytes.
pub const HEADER_LEN: usize = 110;

/// File type mask of `mode`.
pub const S_IFMT: u32 = 0o170_000;
/// Directory.
pub const S_IFDIR: u32 = 0o040_000;
/// Regular file.
pub const S_IFREG: u32 = 0o100_000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120_000;
/// Character device.
pub const S_IFCHR: u32 = 0o020_000;
/// Block device.
pub const S_IFBLK: u32 = 0o060_000;
/// FIFO.
pub const S_IFIFO: u32 = 0o010_000;

/// Longest entry name the reader accepts (including the NUL).
const MAX_NAME: u64 = 64 * 1024;

/// Per-entry metadata given to the writer. `mode` is the permission bits (`0o7777` mask); the
/// writer adds the file type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// Permission bits, e.g. `0o755`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u32,
    /// Explicit inode number; `None` takes the writer's next automatic number.
    pub ino: Option<u32>,
    /// Explicit link count; `None` means 2 for directories and 1 otherwise.
    pub nlink: Option<u32>,
    /// Major number of the device holding the file (0 with `--ignore-devno`).
    pub dev_major: u32,
    /// Minor number of the device holding the file.
    pub dev_minor: u32,
}

impl Metadata {
    /// Permission bits `mode`, owner 0:0, mtime 0, automatic inode and link count.
    pub const fn new(mode: u32) -> Metadata {
        Metadata {
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            ino: None,
            nlink: None,
            dev_major: 0,
            dev_minor: 0,
        }
    }

    /// Sets the modification time.
    pub const fn mtime(mut self, mtime: u32) -> Metadata {
        self.mtime = mtime;
        self
    }

    /// Sets owner and group.
    pub const fn owner(mut self, uid: u32, gid: u32) -> Metadata {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Sets an explicit inode number.
    pub const fn ino(mut self, ino: u32) -> Metadata {
        self.ino = Some(ino);
        self
    }

    /// Sets an explicit link count.
    pub const fn nlink(mut self, nlink: u32) -> Metadata {
        self.nlink = Some(nlink);
        self
    }
}

fn too_big(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} does not fit a newc header"),
    )
}

fn pad4(n: u64) -> u64 {
    (4 - n % 4) % 4
}

const ZEROS: [u8; 512] = [0; 512];

/// Streams a newc archive into `W`.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    inner: W,
    offset: u64,
    next_ino: u32,
    block_size: u64,
}

impl<W: Write> CpioWriter<W> {
    /// A writer numbering inodes from 0 and padding the archive to 512 bytes, like GNU cpio.
    pub fn new(inner: W) -> CpioWriter<W> {
        CpioWriter {
            inner,
            offset: 0,
            next_ino: 0,
            block_size: 512,
        }
    }

    /// Sets the multiple the finished archive is padded to (GNU cpio: 512; 0 or 1: no padding
    /// after the trailer's own 4-byte alignment).
    pub fn set_block_size(&mut self, block_size: u64) {
        self.block_size = block_size;
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Adds a directory.
    pub fn add_dir(&mut self, name: &str, meta: &Metadata) -> io::Result<()> {
        self.entry(name, S_IFDIR, meta, 2, 0, (0, 0))
    }

    /// Adds a regular file with `data`.
    pub fn add_file(&mut self, name: &str, meta: &Metadata, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG, meta, 1, data.len() as u64, (0, 0))?;
        self.write_data(data)?;
        self.pad()
    }

    /// Adds a regular file of exactly `size` bytes read from `reader` (streamed).
    pub fn add_file_from_reader(
        &mut self,
        name: &str,
        meta: &Metadata,
        reader: impl Read,
        size: u64,
    ) -> io::Result<()> {
        self.entry(name, S_IFREG, meta, 1, size, (0, 0))?;
        let copied = io::copy(&mut reader.take(size), &mut self.inner)?;
        self.offset += copied;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: reader gave {copied} of {size} bytes"),
            ));
        }
        self.pad()
    }

    /// Adds a symbolic link to `target`.
    pub fn add_symlink(&mut self, name: &str, meta: &Metadata, target: &str) -> io::Result<()> {
        self.entry(name, S_IFLNK, meta, 1, target.len() as u64, (0, 0))?;
        self.write_data(target.as_bytes())?;
        self.pad()
    }

    /// Adds a character (`block == false`) or block device node `major:minor`.
    pub fn add_device(
        &mut self,
        name: &str,
        meta: &Metadata,
        block: bool,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        let kind = if block { S_IFBLK } else { S_IFCHR };
        self.entry(name, kind, meta, 1, 0, (major, minor))
    }

    /// Writes the trailer and the final padding, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, 0, 0, 0, 0, 1, 0, 0, (0, 0), (0, 0))?;
        if self.block_size > 1 {
            let mut rest = (self.block_size - self.offset % self.block_size) % self.block_size;
            while rest > 0 {
                let n = rest.min(ZEROS.len() as u64) as usize;
                self.write_data(&ZEROS[..n])?;
                rest -= n as u64;
            }
        }
        self.inner.flush()?;
        Ok(self.inner)
    }

    fn entry(
        &mut self,
        name: &str,
        kind: u32,
        meta: &Metadata,
        default_nlink: u32,
        size: u64,
        rdev: (u32, u32),
    ) -> io::Result<()> {
        if name.is_empty() || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid cpio entry name {name:?}"),
            ));
        }
        let size = u32::try_from(size).map_err(|_| too_big(name))?;
        let ino = match meta.ino {
            Some(ino) => ino,
            None => {
                let ino = self.next_ino;
                self.next_ino = self.next_ino.wrapping_add(1);
                ino
            }
        };
        self.header(
            name,
            ino,
            kind | (meta.mode & 0o7777),
            meta.uid,
            meta.gid,
            meta.nlink.unwrap_or(default_nlink),
            meta.mtime,
            size,
            (meta.dev_major, meta.dev_minor),
            rdev,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        uid: u32,
        gid: u32,
        nlink: u32,
        mtime: u32,
        size: u32,
        dev: (u32, u32),
        rdev: (u32, u32),
    ) -> io::Result<()> {
        let namesize = u32::try_from(name.len() + 1).map_err(|_| too_big("name"))?;
        let mut h = Vec::with_capacity(HEADER_LEN + name.len() + 4);
        h.extend_from_slice(NEWC_MAGIC);
        for v in [
            ino, mode, uid, gid, nlink, mtime, size, dev.0, dev.1, rdev.0, rdev.1, namesize, 0,
        ] {
            write!(h, "{v:08X}")?;
        }
        h.extend_from_slice(name.as_bytes());
        h.push(0);
        let pad = pad4(h.len() as u64) as usize;
        h.extend_from_slice(&ZEROS[..pad]);
        self.write_data(&h)
    }

    fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        self.inner.write_all(data)?;
        self.offset += data.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = pad4(self.offset) as usize;
        self.write_data(&ZEROS[..pad])
    }
}

/// A parsed newc header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Entry name as stored (GNU cpio strips a leading `./`).
    pub name: String,
    /// Inode number.
    pub ino: u32,
    /// File type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time.
    pub mtime: u32,
    /// Data size in bytes (a symlink's target length).
    pub size: u64,
    /// Device holding the file.
    pub dev: (u32, u32),
    /// Device number of a device node.
    pub rdev: (u32, u32),
    /// The `check` field (byte sum in the crc variant, else 0).
    pub check: u32,
}

impl Header {
    /// `mode & S_IFMT`.
    pub fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }

    /// Permission bits.
    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }

    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == S_IFDIR
    }

    /// True for a regular file.
    pub fn is_file(&self) -> bool {
        self.file_type() == S_IFREG
    }

    /// True for a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.file_type() == S_IFLNK
    }

    /// The name without a leading `./` (`.` stays `.`).
    pub fn path(&self) -> &str {
        match self.name.strip_prefix("./") {
            Some("") => ".",
            Some(rest) => rest,
            None => &self.name,
        }
    }
}

/// An entry with its data read into memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The header.
    pub header: Header,
    /// File content or symlink target.
    pub data: Vec<u8>,
}

/// Reads the entries of a newc archive.
#[derive(Debug)]
pub struct CpioReader<R: Read> {
    inner: R,
    offset: u64,
    /// Data bytes of the current entry not read yet.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    /// Set once the trailer has been read.
    done: bool,
    /// EOF before a header is a clean end (after [`CpioReader::continue_after_trailer`]).
    eof_ok: bool,
}

impl<R: Read> CpioReader<R> {
    /// Reads an archive starting at the current position of `inner`.
    pub fn new(inner: R) -> CpioReader<R> {
        CpioReader {
            inner,
            offset: 0,
            remaining: 0,
            padding: 0,
            done: false,
            eof_ok: false,
        }
    }

    /// Bytes consumed from the inner reader so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The inner reader (positioned after whatever has been consumed).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// After the trailer, goes on with a following archive in the same stream (as the kernel
    /// does with concatenated initramfs archives): NUL padding is skipped, and EOF then ends
    /// reading cleanly.
    pub fn continue_after_trailer(&mut self) {
        self.done = false;
        self.eof_ok = true;
    }

    /// Moves to the next entry (skipping any unread data of the current one). Returns `None`
    /// after the `TRAILER!!!` entry.
    pub fn next_header(&mut self) -> io::Result<Option<Header>> {
        if self.done {
            return Ok(None);
        }
        self.skip_current()?;
        // Leading NULs: padding between concatenated archives (4-byte aligned).
        let mut first = [0u8; 4];
        loop {
            match read_full(&mut self.inner, &mut first)? {
                0 if self.eof_ok => {
                    self.done = true;
                    return Ok(None);
                }
                4 => {}
                _ => return Err(eof("cpio header")),
            }
            self.offset += 4;
            if first != [0; 4] {
                break;
            }
        }
        self.eof_ok = false;
        let mut rest = [0u8; HEADER_LEN - 4];
        self.inner.read_exact(&mut rest)?;
        self.offset += rest.len() as u64;
        let mut raw = [0u8; HEADER_LEN];
        raw[..4].copy_from_slice(&first);
        raw[4..].copy_from_slice(&rest);
        if &raw[..6] != NEWC_MAGIC && &raw[..6] != CRC_MAGIC {
            return Err(invalid(format!(
                "not a newc cpio header at offset {} (magic {:?})",
                self.offset - HEADER_LEN as u64,
                String::from_utf8_lossy(&raw[..6])
            )));
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let field = &raw[6 + i * 8..14 + i * 8];
            let s = std::str::from_utf8(field).map_err(|_| invalid("non-ASCII cpio header"))?;
            *v = u32::from_str_radix(s, 16)
                .map_err(|_| invalid(format!("bad hex field {s:?} in cpio header")))?;
        }
        let namesize = f[11] as u64;
        if namesize == 0 || namesize > MAX_NAME {
            return Err(invalid(format!("bad cpio name size {namesize}")));
        }
        let mut name = vec![0u8; namesize as usize];
        self.inner.read_exact(&mut name)?;
        self.offset += namesize;
        let pad = pad4(HEADER_LEN as u64 + namesize);
        self.skip(pad)?;
        if name.pop() != Some(0) {
            return Err(invalid("cpio name not NUL-terminated"));
        }
        let name = String::from_utf8(name).map_err(|_| invalid("cpio name is not UTF-8"))?;
        let header = Header {
            name,
            ino: f[0],
            mode: f[1],
            uid: f[2],
            gid: f[3],
            nlink: f[4],
            mtime: f[5],
            size: f[6] as u64,
            dev: (f[7], f[8]),
            rdev: (f[9], f[10]),
            check: f[12],
        };
        if header.name == TRAILER {
            self.done = true;
            return Ok(None);
        }
        self.remaining = header.size;
        self.padding = pad4(header.size);
        Ok(Some(header))
    }

    /// Reads the rest of the current entry's data into memory.
    pub fn read_data(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.remaining.min(1 << 26) as usize);
        self.data().read_to_end(&mut out)?;
        Ok(out)
    }

    /// A reader over the rest of the current entry's data.
    pub fn data(&mut self) -> DataReader<'_, R> {
        DataReader { r: self }
    }

    /// Reads the next entry with its data.
    pub fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        match self.next_header()? {
            Some(header) => {
                let data = self.read_data()?;
                Ok(Some(Entry { header, data }))
            }
            None => Ok(None),
        }
    }

    fn skip_current(&mut self) -> io::Result<()> {
        let n = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        self.skip(n)
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        self.offset += copied;
        if copied != n {
            return Err(eof("cpio data"));
        }
        Ok(())
    }
}

impl<R: Read> Iterator for CpioReader<R> {
    type Item = io::Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().transpose()
    }
}

/// Reads the current entry's data (see [`CpioReader::data`]).
#[derive(Debug)]
pub struct DataReader<'a, R: Read> {
    r: &'a mut CpioReader<R>,
}

impl<R: Read> Read for DataReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.r.remaining) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.r.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(eof("cpio data"));
        }
        self.r.remaining -= n as u64;
        self.r.offset += n as u64;
        Ok(n)
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn eof(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("truncated {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        let m = |mode| Metadata::new(mode).mtime(1_559_424_892);
        w.add_dir(".", &m(0o755)).unwrap();
        w.add_dir("bin", &m(0o755)).unwrap();
        w.add_file("bin/busybox", &m(0o755), b"\x7fELF....")
            .unwrap();
        w.add_symlink("bin/sh", &m(0o777), "busybox").unwrap();
        w.add_file("empty", &m(0o644), b"").unwrap();
        w.add_file_from_reader("init", &m(0o755), &b"#!/bin/sh\nexit 0\n"[..], 17)
            .unwrap();
        w.add_device("dev-console", &m(0o600), false, 5, 1).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        assert_eq!(bytes.len() % 512, 0);
        let entries: Vec<Entry> = CpioReader::new(&bytes[..])
            .collect::<io::Result<_>>()
            .unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.header.name.as_str()).collect();
        assert_eq!(
            names,
            [
                ".",
                "bin",
                "bin/busybox",
                "bin/sh",
                "empty",
                "init",
                "dev-console"
            ]
        );
        let inos: Vec<u32> = entries.iter().map(|e| e.header.ino).collect();
        assert_eq!(inos, [0, 1, 2, 3, 4, 5, 6]);
        assert!(entries[0].header.is_dir());
        assert_eq!(entries[0].header.nlink, 2);
        assert_eq!(entries[2].header.mode, S_IFREG | 0o755);
        assert_eq!(entries[2].data, b"\x7fELF....");
        assert!(entries[3].header.is_symlink());
        assert_eq!(entries[3].data, b"busybox");
        assert_eq!(entries[4].header.size, 0);
        assert_eq!(entries[5].data, b"#!/bin/sh\nexit 0\n");
        assert_eq!(entries[5].header.mtime, 1_559_424_892);
        assert_eq!(entries[6].header.file_type(), S_IFCHR);
        assert_eq!(entries[6].header.rdev, (5, 1));
    }

    #[test]
    fn reader_skips_unread_data_and_reads_concatenated_archives() {
        let mut two = sample();
        two.extend_from_slice(&[0u8; 8]);
        let mut second = CpioWriter::new(Vec::new());
        second.set_block_size(0);
        second
            .add_file("extensions.yaml", &Metadata::new(0o644), b"layers: []\n")
            .unwrap();
        two.extend_from_slice(&second.finish().unwrap());

        let mut r = CpioReader::new(&two[..]);
        let mut names = Vec::new();
        while let Some(h) = r.next_header().unwrap() {
            names.push(h.name);
        }
        // The trailer ends the entries; its block padding is left for the next archive.
        let end = r.offset() as usize;
        assert!(end <= sample().len());
        assert!(two[end..sample().len()].iter().all(|&b| b == 0));
        assert!(r.next_header().unwrap().is_none());
        r.continue_after_trailer();
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.header.name, "extensions.yaml");
        assert_eq!(e.data, b"layers: []\n");
        assert!(r.next_header().unwrap().is_none());
        r.continue_after_trailer();
        assert!(r.next_header().unwrap().is_none());
        assert_eq!(names.len(), 7);
    }

    #[test]
    fn reader_rejects_garbage_and_truncation() {
        assert!(
            CpioReader::new(&b"not a cpio archive at all, sorry......"[..])
                .next_header()
                .is_err()
        );
        let bytes = sample();
        let mut r = CpioReader::new(&bytes[..200]);
        let mut failed = false;
        loop {
            match r.next_entry() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed);
    }

    #[test]
    fn writer_rejects_short_reader() {
        let mut w = CpioWriter::new(Vec::new());
        let err = w
            .add_file_from_reader("x", &Metadata::new(0o644), &b"abc"[..], 10)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// Writes the same tree with GNU cpio and with [`CpioWriter`], byte for byte.
    #[test]
    fn matches_gnu_cpio_newc_reproducible() {
        use std::os::unix::fs::{MetadataExt, symlink};
        if Command::new("cpio").arg("--version").output().is_err() {
            eprintln!("skipping: GNU cpio is not installed (apt-get install -y cpio)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("usr/lib/modules")).unwrap();
        std::fs::create_dir_all(root.join("d2")).unwrap();
        for (i, name) in [
            "a",
            "b1",
            "c22",
            "d333",
            "usr/lib/e4444",
            "usr/lib/modules/x",
        ]
        .iter()
        .enumerate()
        {
            let data: Vec<u8> = (0..i * 3 + 1).map(|k| b'a' + (k % 26) as u8).collect();
            std::fs::write(root.join(name), data).unwrap();
        }
        std::fs::write(root.join("zero"), b"").unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("a", root.join("d2/link-with-a-longer-name")).unwrap();
        let status = Command::new("chmod")
            .args(["0750", "d2"])
            .current_dir(&root)
            .status()
            .unwrap();
        assert!(status.success());

        let gnu = Command::new("sh")
            .arg("-c")
            .arg("find . | LC_ALL=C sort | cpio --quiet --reproducible -H newc -o")
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            gnu.status.success(),
            "{}",
            String::from_utf8_lossy(&gnu.stderr)
        );

        let listing = Command::new("sh")
            .arg("-c")
            .arg("find . | LC_ALL=C sort")
            .current_dir(&root)
            .output()
            .unwrap();
        let mut w = CpioWriter::new(Vec::new());
        for line in String::from_utf8(listing.stdout).unwrap().lines() {
            let path = root.join(line);
            let md = std::fs::symlink_metadata(&path).unwrap();
            let name = match line.strip_prefix("./") {
                Some(rest) => rest,
                None => line,
            };
            let meta = Metadata::new(md.mode() & 0o7777)
                .owner(md.uid(), md.gid())
                .mtime(md.mtime() as u32)
                .nlink(md.nlink() as u32);
            let ft = md.file_type();
            if ft.is_dir() {
                w.add_dir(name, &meta).unwrap();
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                w.add_symlink(name, &meta, target.to_str().unwrap())
                    .unwrap();
            } else {
                let f = std::fs::File::open(&path).unwrap();
                w.add_file_from_reader(name, &meta, f, md.len()).unwrap();
            }
        }
        let ours = w.finish().unwrap();
        if ours != gnu.stdout {
            let dump = |p: &Path, b: &[u8]| std::fs::write(p, b).unwrap();
            dump(&dir.path().join("gnu.cpio"), &gnu.stdout);
            dump(&dir.path().join("ours.cpio"), &ours);
            let at = ours.iter().zip(&gnu.stdout).position(|(a, b)| a != b);
            panic!(
                "differs from GNU cpio at byte {at:?} (ours {} bytes, GNU {} bytes)",
                ours.len(),
                gnu.stdout.len()
            );
        }
    }
}
