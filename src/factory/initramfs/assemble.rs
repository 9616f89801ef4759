//! The staging tree of the appended archives and its cpio listing (Talos `Compress`, steps 7–9
//! of `docs/formats.md` §Initramfs with extensions), kept virtual: entries point at bundle byte
//! ranges and files in the work directory, and are streamed into the archives, never copied
//! into a directory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::squash::Span;
use crate::formats::cpio::{CpioWriter, Metadata};

/// Where a staged file's bytes come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// In memory (small files such as `extensions.yaml`).
    Bytes(Vec<u8>),
    /// Byte ranges of files, concatenated in order.
    Ranges(Vec<(PathBuf, Span)>),
}

impl Source {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Source::Bytes(b) => b.len() as u64,
            Source::Ranges(r) => r.iter().map(|(_, s)| s.len).sum(),
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(Source),
    Symlink(String),
}

/// A staged entry.
#[derive(Debug, Clone)]
pub(crate) struct StageNode {
    mode: u32,
    kind: Kind,
    children: BTreeMap<String, StageNode>,
}

impl StageNode {
    fn dir(mode: u32) -> StageNode {
        StageNode {
            mode,
            kind: Kind::Dir,
            children: BTreeMap::new(),
        }
    }
}

/// Entries of an archive: path and node, in listing order.
pub(crate) type Listing<'a> = Vec<(String, &'a StageNode)>;

/// The staging directory: names sorted by bytes (Go's `os.ReadDir` order).
#[derive(Debug, Default)]
pub(crate) struct Stage {
    root: BTreeMap<String, StageNode>,
}

fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

impl Stage {
    /// The directory node at `path`, created (with mode `mode`, parents 0755) if missing. An
    /// existing directory keeps its mode; a non-directory in the way is replaced.
    fn dir_node(&mut self, path: &str, mode: u32) -> &mut BTreeMap<String, StageNode> {
        let parts: Vec<&str> = components(path).collect();
        let mut level = &mut self.root;
        for (i, part) in parts.iter().enumerate() {
            let m = if i + 1 == parts.len() { mode } else { 0o755 };
            let node = level
                .entry((*part).to_string())
                .or_insert_with(|| StageNode::dir(m));
            if !matches!(node.kind, Kind::Dir) {
                *node = StageNode::dir(m);
            }
            level = &mut node.children;
        }
        level
    }

    /// `mkdir -p` with `mode` for the last component (if created).
    pub(crate) fn add_dir(&mut self, path: &str, mode: u32) {
        self.dir_node(path, mode);
    }

    fn put(&mut self, path: &str, node: StageNode) {
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", path),
        };
        let level = self.dir_node(parent, 0o755);
        level.insert(name.to_string(), node);
    }

    /// Adds (or replaces) a regular file.
    pub(crate) fn add_file(&mut self, path: &str, mode: u32, source: Source) {
        self.put(
            path,
            StageNode {
                mode,
                kind: Kind::File(source),
                children: BTreeMap::new(),
            },
        );
    }

    /// Adds (or replaces) a symbolic link.
    pub(crate) fn add_symlink(&mut self, path: &str, target: &str) {
        self.put(
            path,
            StageNode {
                mode: 0o777,
                kind: Kind::Symlink(target.to_string()),
                children: BTreeMap::new(),
            },
        );
    }

    /// Depth-first listing (directories before their contents, children by name), split into
    /// the `kernel/…` entries (early, uncompressed archive) and the rest.
    pub(crate) fn listing(&self) -> (Listing<'_>, Listing<'_>) {
        let mut all = Vec::new();
        fn walk<'a>(
            prefix: &str,
            level: &'a BTreeMap<String, StageNode>,
            out: &mut Vec<(String, &'a StageNode)>,
        ) {
            for (name, node) in level {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                out.push((path.clone(), node));
                walk(&path, &node.children, out);
            }
        }
        walk("", &self.root, &mut all);
        all.into_iter()
            .partition(|(p, _)| p == "kernel" || p.starts_with("kernel/"))
    }
}

/// Writes `entries` as one newc archive (GNU `cpio -H newc --reproducible -R +0:+0`: inodes
/// renumbered from 0, uid/gid 0, NUL padding to 512 bytes) with every mtime `mtime`.
pub(crate) fn write_archive<W: Write>(
    entries: &[(String, &StageNode)],
    mtime: u32,
    w: W,
) -> io::Result<W> {
    let mut cpio = CpioWriter::new(w);
    let mut buf = vec![0u8; 1 << 20];
    for (path, node) in entries {
        let meta = Metadata::new(node.mode).mtime(mtime);
        match &node.kind {
            Kind::Dir => {
                let subdirs = node
                    .children
                    .values()
                    .filter(|c| matches!(c.kind, Kind::Dir))
                    .count() as u32;
                cpio.add_dir(path, &meta.nlink(2 + subdirs))?;
            }
            Kind::Symlink(target) => cpio.add_symlink(path, &meta, target)?,
            Kind::File(source) => {
                let reader = SourceReader::new(source, &mut buf);
                cpio.add_file_from_reader(path, &meta, reader, source.len())?;
            }
        }
    }
    cpio.finish()
}

/// Reads a [`Source`] front to back.
struct SourceReader<'a> {
    bytes: &'a [u8],
    ranges: std::slice::Iter<'a, (PathBuf, Span)>,
    current: Option<io::Take<File>>,
    buf: &'a mut Vec<u8>,
    filled: usize,
    consumed: usize,
}

impl<'a> SourceReader<'a> {
    fn new(source: &'a Source, buf: &'a mut Vec<u8>) -> SourceReader<'a> {
        let (bytes, ranges): (&[u8], &[(PathBuf, Span)]) = match source {
            Source::Bytes(b) => (b, &[]),
            Source::Ranges(r) => (&[], r),
        };
        SourceReader {
            bytes,
            ranges: ranges.iter(),
            current: None,
            buf,
            filled: 0,
            consumed: 0,
        }
    }
}

impl Read for SourceReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.bytes.is_empty() {
            let n = out.len().min(self.bytes.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            return Ok(n);
        }
        loop {
            if self.consumed < self.filled {
                let n = out.len().min(self.filled - self.consumed);
                out[..n].copy_from_slice(&self.buf[self.consumed..self.consumed + n]);
                self.consumed += n;
                return Ok(n);
            }
            if self.current.is_none() {
                let Some((path, span)) = self.ranges.next() else {
                    return Ok(0);
                };
                let mut f = File::open(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("open {}: {e}", path.display()))
                })?;
                f.seek(SeekFrom::Start(span.offset))?;
                self.current = Some(f.take(span.len));
            }
            let n = self.current.as_mut().expect("set above").read(self.buf)?;
            if n == 0 {
                self.current = None;
            }
            self.filled = n;
            self.consumed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::cpio::CpioReader;

    #[test]
    fn listing_is_depth_first_and_splits_kernel() {
        let mut s = Stage::default();
        s.add_file(
            "extensions.yaml",
            0o644,
            Source::Bytes(b"layers: []\n".to_vec()),
        );
        s.add_file("10.sqsh", 0o644, Source::Bytes(vec![1]));
        s.add_file("2.sqsh", 0o644, Source::Bytes(vec![2]));
        s.add_file("1.sqsh", 0o644, Source::Bytes(vec![3]));
        s.add_dir("usr/lib/firmware", 0o755);
        s.add_file("usr/lib/firmware/a-b/x", 0o644, Source::Bytes(vec![]));
        s.add_file("usr/lib/firmware/a/x", 0o644, Source::Bytes(vec![]));
        s.add_file(
            "kernel/x86/microcode/GenuineIntel.bin",
            0o644,
            Source::Bytes(vec![4]),
        );
        s.add_symlink("usr/lib/firmware/link", "a/x");
        let (early, rest) = s.listing();
        let names =
            |v: &[(String, &StageNode)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&early),
            [
                "kernel",
                "kernel/x86",
                "kernel/x86/microcode",
                "kernel/x86/microcode/GenuineIntel.bin"
            ]
        );
        assert_eq!(
            names(&rest),
            [
                "1.sqsh",
                "10.sqsh",
                "2.sqsh",
                "extensions.yaml",
                "usr",
                "usr/lib",
                "usr/lib/firmware",
                "usr/lib/firmware/a",
                "usr/lib/firmware/a/x",
                "usr/lib/firmware/a-b",
                "usr/lib/firmware/a-b/x",
                "usr/lib/firmware/link"
            ]
        );
        let bytes = write_archive(&rest, 7, Vec::new()).unwrap();
        assert_eq!(bytes.len() % 512, 0);
        let entries: Vec<_> = CpioReader::new(&bytes[..])
            .collect::<io::Result<_>>()
            .unwrap();
        assert_eq!(entries[0].data, [3]);
        assert!(
            entries
                .iter()
                .all(|e| e.header.mtime == 7 && e.header.uid == 0)
        );
        let fw = entries
            .iter()
            .find(|e| e.header.name == "usr/lib/firmware")
            .unwrap();
        assert_eq!(fw.header.nlink, 4);
    }

    #[test]
    fn ranges_are_streamed_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let src = Source::Ranges(vec![
            (p.clone(), Span { offset: 7, len: 3 }),
            (p.clone(), Span { offset: 0, len: 2 }),
        ]);
        let mut buf = vec![0; 4];
        let mut out = Vec::new();
        SourceReader::new(&src, &mut buf)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"78901");
        assert_eq!(src.len(), 5);
    }
}
