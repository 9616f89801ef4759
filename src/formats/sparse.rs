//! Sparse files: the data extents of a file (`SEEK_DATA`/`SEEK_HOLE`) and readers that yield
//! the file's bytes with its holes as zeros without reading them from disk.
//!
//! Disk images are written as sparse raw files that are mostly holes (a 4 GiB image holds a few
//! hundred MiB of data). Every converter in `formats` walks the file through [`for_each_segment`]:
//! data extents are read in bounded chunks, holes are handed on as a count of zero bytes
//! ([`ZeroWrite::write_zeros`]), which a compressor can feed from one shared zero buffer or
//! skip entirely.
//!
//! On a file system without `SEEK_DATA` (`EINVAL`) the whole file is one data extent: the
//! result is the same, only slower.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::unistd::{Whence, lseek};

/// Bytes read from a data extent at a time (the converters' read buffer).
pub const READ_CHUNK: usize = 1 << 20;

/// A shared buffer of zero bytes: holes are written from it, never allocated.
pub static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

/// A range of a file that holds data (it may still contain zero bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset in the file.
    pub offset: u64,
    /// Length in bytes (never 0).
    pub len: u64,
}

impl Extent {
    /// The offset just past the extent.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Iterator over the data extents of a file, in order, within the size the file had when the
/// iteration started. See [`data_extents`].
#[derive(Debug)]
pub struct DataExtents<'a> {
    file: &'a File,
    pos: u64,
    size: u64,
    /// `SEEK_DATA` refused: the rest of the file is one extent.
    whole: bool,
}

/// The data extents of `file` (holes are what lies between them). Falls back to the whole file
/// as one extent when the file system does not support `SEEK_DATA`.
///
/// Moves the file's offset (`lseek`); readers in this module use positioned reads.
pub fn data_extents(file: &File) -> io::Result<DataExtents<'_>> {
    let size = file.metadata()?.len();
    Ok(DataExtents {
        file,
        pos: 0,
        size,
        whole: false,
    })
}

fn to_off(v: u64) -> io::Result<i64> {
    i64::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
}

impl DataExtents<'_> {
    /// The file size the extents are bounded by.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn next_extent(&mut self) -> io::Result<Option<Extent>> {
        if self.pos >= self.size {
            return Ok(None);
        }
        if self.whole {
            let e = Extent {
                offset: self.pos,
                len: self.size - self.pos,
            };
            self.pos = self.size;
            return Ok(Some(e));
        }
        let start = match lseek(self.file, to_off(self.pos)?, Whence::SeekData) {
            Ok(s) => s as u64,
            // No data at or after `pos`: the rest is a hole.
            Err(Errno::ENXIO) => {
                self.pos = self.size;
                return Ok(None);
            }
            Err(Errno::EINVAL) | Err(Errno::EOPNOTSUPP) => {
                self.whole = true;
                return self.next_extent();
            }
            Err(e) => return Err(e.into()),
        };
        if start >= self.size {
            self.pos = self.size;
            return Ok(None);
        }
        let end = match lseek(self.file, to_off(start)?, Whence::SeekHole) {
            Ok(e) => (e as u64).min(self.size),
            // The file shrank under us: stop at what was there.
            Err(Errno::ENXIO) => self.size,
            Err(e) => return Err(e.into()),
        };
        if end <= start {
            // A file system that reports nonsense: take the rest as data.
            self.whole = true;
            self.pos = start;
            return self.next_extent();
        }
        self.pos = end;
        Ok(Some(Extent {
            offset: start,
            len: end - start,
        }))
    }
}

impl Iterator for DataExtents<'_> {
    type Item = io::Result<Extent>;

    fn next(&mut self) -> Option<io::Result<Extent>> {
        match self.next_extent() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => None,
            Err(e) => {
                self.pos = self.size;
                Some(Err(e))
            }
        }
    }
}

/// A writer that can be told "n zero bytes" without being handed them: compressors feed them
/// from [`ZEROS`] (or a cached compressed form), a sparse file output seeks over them.
pub trait ZeroWrite: Write {
    /// Writes `n` zero bytes.
    fn write_zeros(&mut self, n: u64) -> io::Result<()> {
        write_zeros_from_buffer(self, n)
    }
}

/// Writes `n` zeros to `w` from the shared [`ZEROS`] buffer.
pub fn write_zeros_from_buffer<W: Write + ?Sized>(w: &mut W, mut n: u64) -> io::Result<()> {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

impl<W: ZeroWrite + ?Sized> ZeroWrite for &mut W {
    fn write_zeros(&mut self, n: u64) -> io::Result<()> {
        (**self).write_zeros(n)
    }
}

/// What a walk over a sparse file did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Bytes of the file (data and holes).
    pub size: u64,
    /// Bytes read from disk (the data extents).
    pub data_read: u64,
}

/// Walks `file` from start to end: data extents are read in chunks of at most [`READ_CHUNK`]
/// and handed to `data`, holes to `zeros` as a length. The pieces are in file order and cover
/// the file exactly (its size when the walk started; a file that shrinks meanwhile is an
/// error, not a short result).
pub fn for_each_segment(
    file: &File,
    mut data: impl FnMut(&[u8]) -> io::Result<()>,
    mut zeros: impl FnMut(u64) -> io::Result<()>,
) -> io::Result<WalkStats> {
    let extents = data_extents(file)?;
    let size = extents.size();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut pos = 0u64;
    let mut data_read = 0u64;
    for extent in extents {
        let extent = extent?;
        if extent.offset > pos {
            zeros(extent.offset - pos)?;
        }
        let mut off = extent.offset;
        while off < extent.end() {
            let want = (extent.end() - off).min(READ_CHUNK as u64) as usize;
            let got = read_full_at(file, &mut buf[..want], off)?;
            if got < want {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was read",
                ));
            }
            data(&buf[..want])?;
            off += want as u64;
            data_read += want as u64;
        }
        pos = extent.end();
    }
    if size > pos {
        zeros(size - pos)?;
    }
    Ok(WalkStats { size, data_read })
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Copies the whole of `file` (holes as zeros) into `out`.
pub fn copy_sparse<W: ZeroWrite + ?Sized>(file: &File, out: &mut W) -> io::Result<WalkStats> {
    // Two closures need `out`; a RefCell-free way is to route both through one helper.
    let out = std::cell::RefCell::new(out);
    for_each_segment(
        file,
        |d| out.borrow_mut().write_all(d),
        |n| out.borrow_mut().write_zeros(n),
    )
}

/// A [`Read`] over a sparse file: its bytes in order, holes as zeros that are never read from
/// disk. Memory: none beyond the caller's buffer.
#[derive(Debug)]
pub struct SparseReader {
    file: File,
    size: u64,
    pos: u64,
    /// The data extent at or after `pos`, if any (cached lookup).
    next: Option<Extent>,
    /// `pos` from which `next` must be looked up again.
    looked_up_from: Option<u64>,
    whole: bool,
}

impl SparseReader {
    /// Reads `file` from its start to its current size.
    pub fn new(file: File) -> io::Result<SparseReader> {
        let size = file.metadata()?.len();
        Ok(SparseReader {
            file,
            size,
            pos: 0,
            next: None,
            looked_up_from: None,
            whole: false,
        })
    }

    /// The file size being read.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn extent_at_or_after(&mut self, pos: u64) -> io::Result<Option<Extent>> {
        if let (Some(from), Some(e)) = (self.looked_up_from, self.next)
            && from <= pos
            && pos < e.end()
        {
            return Ok(Some(e));
        }
        if self.whole {
            return Ok(Some(Extent {
                offset: pos,
                len: self.size - pos,
            }));
        }
        let mut it = DataExtents {
            file: &self.file,
            pos,
            size: self.size,
            whole: false,
        };
        let e = it.next_extent()?;
        if it.whole {
            self.whole = true;
        }
        self.looked_up_from = Some(pos);
        self.next = e;
        Ok(e)
    }
}

impl Read for SparseReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        let left = (self.size - self.pos).min(buf.len() as u64) as usize;
        let buf = &mut buf[..left];
        match self.extent_at_or_after(self.pos)? {
            Some(e) if e.offset <= self.pos => {
                let n = ((e.end() - self.pos) as usize).min(buf.len());
                let got = self.file.read_at(&mut buf[..n], self.pos)?;
                if got == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was read",
                    ));
                }
                self.pos += got as u64;
                Ok(got)
            }
            other => {
                let hole_end = other.map_or(self.size, |e| e.offset);
                let n = ((hole_end - self.pos) as usize).min(buf.len());
                buf[..n].fill(0);
                self.pos += n as u64;
                Ok(n)
            }
        }
    }
}

/// A file written front to back in which zero runs ([`ZeroWrite::write_zeros`]) become holes:
/// the offset moves on and nothing is written. [`SparseFileWriter::finish`] sets the length, so
/// a trailing hole counts.
#[derive(Debug)]
pub struct SparseFileWriter {
    file: File,
    pos: u64,
}

impl SparseFileWriter {
    /// Writes into `file` from offset 0 (`file` should be empty).
    pub fn new(file: File) -> SparseFileWriter {
        SparseFileWriter { file, pos: 0 }
    }

    /// Sets the file's length to what was written and returns it.
    pub fn finish(self) -> io::Result<File> {
        self.file.set_len(self.pos)?;
        Ok(self.file)
    }
}

impl Write for SparseFileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ZeroWrite for SparseFileWriter {
    fn write_zeros(&mut self, n: u64) -> io::Result<()> {
        self.pos = self
            .pos
            .checked_add(n)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "file too large"))?;
        Ok(())
    }
}

/// Copies the file `src` to a new file `dst` (created or truncated) as sparse as `src`: its
/// holes are not read and stay holes.
pub fn copy_file_sparse(src: &std::path::Path, dst: &std::path::Path) -> io::Result<WalkStats> {
    let input = File::open(src)?;
    let output = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)?;
    let mut w = SparseFileWriter::new(output);
    let stats = copy_sparse(&input, &mut w)?;
    w.finish()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom};

    /// A file with data at the given (offset, bytes) and `size` bytes in all.
    fn sparse_file(size: u64, data: &[(u64, &[u8])]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(size).unwrap();
        for (off, bytes) in data {
            f.seek(SeekFrom::Start(*off)).unwrap();
            f.write_all(bytes).unwrap();
        }
        f
    }

    fn expected(size: u64, data: &[(u64, &[u8])]) -> Vec<u8> {
        let mut v = vec![0u8; size as usize];
        for (off, bytes) in data {
            v[*off as usize..*off as usize + bytes.len()].copy_from_slice(bytes);
        }
        v
    }

    struct Collect(Vec<u8>, u64);
    impl Write for Collect {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl ZeroWrite for Collect {
        fn write_zeros(&mut self, n: u64) -> io::Result<()> {
            self.1 += n;
            self.0.resize(self.0.len() + n as usize, 0);
            Ok(())
        }
    }

    #[test]
    fn extents_cover_the_data_and_holes_read_as_zeros() {
        let block = vec![0xA5u8; 4096];
        let data: &[(u64, &[u8])] = &[(0, b"head"), (8 << 20, &block), (20 << 20, b"tail")];
        let size = (20 << 20) + 4;
        let f = sparse_file(size, data);
        let extents: Vec<Extent> = data_extents(&f).unwrap().map(Result::unwrap).collect();
        // Every written byte is inside an extent; the extents are ordered and disjoint.
        for (off, bytes) in data {
            assert!(
                extents
                    .iter()
                    .any(|e| e.offset <= *off && off + bytes.len() as u64 <= e.end()),
                "{off} not covered by {extents:?}"
            );
        }
        for w in extents.windows(2) {
            assert!(w[0].end() <= w[1].offset);
        }
        let mut out = Collect(Vec::new(), 0);
        let stats = copy_sparse(&f, &mut out).unwrap();
        assert_eq!(out.0, expected(size, data));
        assert_eq!(stats.size, size);
        // On a file system with SEEK_HOLE most of the 20 MiB was never read.
        let supported = extents.len() > 1;
        if supported {
            assert!(stats.data_read < 4 << 20, "{stats:?}");
            assert!(out.1 > 16 << 20);
        }
        let mut r = SparseReader::new(f.try_clone().unwrap()).unwrap();
        let mut all = Vec::new();
        let mut small = [0u8; 1000];
        loop {
            let n = r.read(&mut small).unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&small[..n]);
        }
        assert_eq!(all, expected(size, data));
    }

    #[test]
    fn without_seek_data_the_whole_file_is_one_extent() {
        // What a file system answering EINVAL to SEEK_DATA leads to.
        let f = sparse_file(5 << 20, &[(3 << 20, b"x")]);
        let mut it = DataExtents {
            file: &f,
            pos: 1 << 20,
            size: 5 << 20,
            whole: true,
        };
        assert_eq!(
            it.next().unwrap().unwrap(),
            Extent {
                offset: 1 << 20,
                len: 4 << 20
            }
        );
        assert!(it.next().is_none());
        let mut r = SparseReader::new(f).unwrap();
        r.whole = true;
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, expected(5 << 20, &[(3 << 20, b"x")]));
    }

    #[test]
    fn empty_and_all_hole_files() {
        let f = sparse_file(0, &[]);
        assert_eq!(data_extents(&f).unwrap().count(), 0);
        let mut out = Collect(Vec::new(), 0);
        assert_eq!(copy_sparse(&f, &mut out).unwrap().size, 0);
        let f = sparse_file(3 << 20, &[]);
        let mut out = Collect(Vec::new(), 0);
        copy_sparse(&f, &mut out).unwrap();
        assert_eq!(out.0.len(), 3 << 20);
        assert!(out.0.iter().all(|&b| b == 0));
        let mut s = Vec::new();
        SparseReader::new(f).unwrap().read_to_end(&mut s).unwrap();
        assert_eq!(s.len(), 3 << 20);
    }

    #[test]
    fn a_file_that_shrinks_is_an_error() {
        let f = sparse_file(4 << 20, &[(0, &[1u8; 3 << 20])]);
        let g = f.try_clone().unwrap();
        let mut first = true;
        let r = for_each_segment(
            &f,
            |_| {
                if first {
                    first = false;
                    g.set_len(1 << 20)?;
                }
                Ok(())
            },
            |_| Ok(()),
        );
        assert!(r.is_err());
    }

    #[test]
    fn copy_file_sparse_keeps_holes() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"middle", 32 << 20).unwrap();
        drop(f);
        let dst = dir.path().join("dst");
        let stats = copy_file_sparse(&src, &dst).unwrap();
        assert_eq!(stats.size, 64 << 20);
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        let md = std::fs::metadata(&dst).unwrap();
        assert_eq!(md.len(), 64 << 20);
        assert!(md.blocks() * 512 < 4 << 20, "{} blocks", md.blocks());
    }
}
