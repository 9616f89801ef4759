//! The `.xz` container: initramfs archives for Talos < 1.8 and `.raw.xz` disk images.
//!
//! liblzma is not a direct dependency of this crate; backhand (which links it) compresses a
//! buffer into a complete `.xz` stream. [`XzWriter`] compresses its input in independent
//! chunks that way and splices the chunks' blocks into **one** stream with a combined index,
//! because the kernel's initramfs unpacker expects each compressed archive to be a single
//! stream. Block headers and checks are copied verbatim; the stream header, index and footer
//! are ours (CRC32 from flate2).
//!
//! [`stream_start_before`] finds where the `.xz` stream that ends at a given offset begins,
//! by reading its footer and index backwards: this delimits xz archives inside a concatenated
//! initramfs without decoding them.

use std::io::{self, Write};

use super::sparse::ZeroWrite;
use backhand::compression::{CompressionAction, Compressor, DefaultCompressor};
use backhand::{CompressionExtra, ExtraXz, FilesystemCompressor};

/// `.xz` stream header magic.
pub const XZ_MAGIC: &[u8; 6] = b"\xFD7zXZ\0";
const FOOTER_MAGIC: &[u8; 2] = b"YZ";
/// Input compressed per chunk (and the LZMA2 dictionary size).
const CHUNK: usize = 1 << 20;

fn crc32(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(data: &[u8], pos: &mut usize) -> io::Result<u64> {
    let mut v = 0u64;
    for i in 0..9 {
        let b = *data
            .get(*pos)
            .ok_or_else(|| invalid("truncated xz index"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(invalid("bad xz varint"))
}

fn round4(n: u64) -> u64 {
    n.div_ceil(4) * 4
}

/// The parts of one complete `.xz` stream held in memory.
struct StreamParts<'a> {
    flags: [u8; 2],
    blocks: &'a [u8],
    records: Vec<(u64, u64)>,
}

fn split_stream(s: &[u8]) -> io::Result<StreamParts<'_>> {
    if s.len() < 24 || &s[..6] != XZ_MAGIC || &s[s.len() - 2..] != FOOTER_MAGIC {
        return Err(invalid("not a single xz stream"));
    }
    let footer = &s[s.len() - 12..];
    let backward = u64::from(u32::from_le_bytes(
        footer[4..8].try_into().expect("4 bytes"),
    ));
    let index_len = (backward + 1) * 4;
    let index_start = (s.len() as u64)
        .checked_sub(12 + index_len)
        .filter(|&i| i >= 12)
        .ok_or_else(|| invalid("bad xz backward size"))? as usize;
    let index = &s[index_start..s.len() - 12];
    if index[0] != 0 {
        return Err(invalid("bad xz index indicator"));
    }
    let mut pos = 1;
    let count = get_varint(index, &mut pos)?;
    let mut records = Vec::new();
    for _ in 0..count {
        let unpadded = get_varint(index, &mut pos)?;
        let uncompressed = get_varint(index, &mut pos)?;
        records.push((unpadded, uncompressed));
    }
    let blocks = &s[12..index_start];
    let total: u64 = records.iter().map(|r| round4(r.0)).sum();
    if total != blocks.len() as u64 {
        return Err(invalid("xz index does not match the blocks"));
    }
    Ok(StreamParts {
        flags: [s[6], s[7]],
        blocks,
        records,
    })
}

/// Streams `.xz` output: one stream, independent blocks of up to 1 MiB of input, CRC32 checks.
pub struct XzWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    records: Vec<(u64, u64)>,
    flags: Option<[u8; 2]>,
    header_written: bool,
    preset: u32,
    /// The compressed block of one chunk of zeros and its index record, once made: every
    /// whole chunk of a hole compresses to the same bytes, so holes cost no compression.
    zero_block: Option<(Vec<u8>, (u64, u64))>,
    /// Full chunks waiting to be compressed together, one thread each.
    pending: Vec<Vec<u8>>,
    /// Chunks compressed at once (the cores, at most 4).
    parallel: usize,
}

/// One chunk compressed: the stream flags, its blocks and their index records.
type Compressed = ([u8; 2], Vec<u8>, Vec<(u64, u64)>);

/// Compresses `data` into one complete stream and returns its parts.
fn compress_block(data: &[u8], preset: u32) -> io::Result<Compressed> {
    let mut fc = FilesystemCompressor::new(Compressor::Xz, None).map_err(io::Error::other)?;
    let mut extra = ExtraXz::default();
    extra.level(preset).map_err(io::Error::other)?;
    fc.extra(CompressionExtra::Xz(extra))
        .map_err(io::Error::other)?;
    let stream = DefaultCompressor
        .compress(data, fc, CHUNK as u32)
        .map_err(io::Error::other)?;
    let parts = split_stream(&stream)?;
    Ok((parts.flags, parts.blocks.to_vec(), parts.records))
}

impl<W: Write> XzWriter<W> {
    /// A writer compressing with xz preset `preset` (0–9).
    pub fn new(inner: W, preset: u32) -> XzWriter<W> {
        XzWriter {
            inner,
            buf: Vec::with_capacity(CHUNK),
            records: Vec::new(),
            flags: None,
            header_written: false,
            preset,
            zero_block: None,
            pending: Vec::new(),
            parallel: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        }
    }

    /// Writes a compressed chunk's blocks and keeps its index records.
    fn emit(&mut self, (flags, blocks, records): Compressed) -> io::Result<()> {
        match self.flags {
            None => self.flags = Some(flags),
            Some(f) if f != flags => return Err(invalid("xz chunks with different checks")),
            Some(_) => {}
        }
        self.write_header()?;
        self.inner.write_all(&blocks)?;
        self.records.extend(records);
        Ok(())
    }

    /// Queues the buffered input as a chunk; compresses the queue when it is full or `all`.
    fn compress_chunk(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let next = Vec::with_capacity(CHUNK);
            self.pending.push(std::mem::replace(&mut self.buf, next));
        }
        if self.pending.len() >= self.parallel {
            self.compress_pending()?;
        }
        Ok(())
    }

    /// Compresses the queued chunks, one thread each, and writes them in order.
    fn compress_pending(&mut self) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let preset = self.preset;
        let results: Vec<io::Result<Compressed>> = if pending.len() == 1 {
            vec![compress_block(&pending[0], preset)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = pending
                    .iter()
                    .map(|d| s.spawn(move || compress_block(d, preset)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(io::Error::other("xz worker panicked")))
                    })
                    .collect()
            })
        };
        for r in results {
            self.emit(r?)?;
        }
        Ok(())
    }

    /// Writes one whole chunk of zeros as the cached block (made on first use).
    fn write_zero_chunk(&mut self) -> io::Result<()> {
        self.compress_pending()?;
        if self.zero_block.is_none() {
            let zeros = vec![0u8; CHUNK];
            let (flags, blocks, records) = compress_block(&zeros, self.preset)?;
            let [record] = records[..] else {
                return Err(invalid("a chunk did not compress to one xz block"));
            };
            self.zero_block = Some((blocks, record));
            // The flags are checked against the stream's like any chunk's.
            self.emit((flags, Vec::new(), Vec::new()))?;
        }
        self.write_header()?;
        let (blocks, record) = self.zero_block.as_ref().expect("made above");
        self.inner.write_all(blocks)?;
        self.records.push(*record);
        Ok(())
    }

    fn write_header(&mut self) -> io::Result<()> {
        if self.header_written {
            return Ok(());
        }
        // CRC32 check (what `xz -C crc32` and backhand use) unless a chunk told otherwise.
        let flags = *self.flags.get_or_insert([0, 1]);
        let mut h = XZ_MAGIC.to_vec();
        h.extend_from_slice(&flags);
        h.extend_from_slice(&crc32(&flags).to_le_bytes());
        self.inner.write_all(&h)?;
        self.header_written = true;
        Ok(())
    }

    /// Compresses what is buffered, writes the index and footer; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.compress_chunk()?;
        self.compress_pending()?;
        self.write_header()?;
        let mut index = vec![0u8];
        put_varint(&mut index, self.records.len() as u64);
        for (unpadded, uncompressed) in &self.records {
            put_varint(&mut index, *unpadded);
            put_varint(&mut index, *uncompressed);
        }
        while index.len() % 4 != 0 {
            index.push(0);
        }
        let crc = crc32(&index);
        index.extend_from_slice(&crc.to_le_bytes());
        self.inner.write_all(&index)?;
        let flags = self.flags.unwrap_or([0, 1]);
        let backward = (index.len() as u32 / 4) - 1;
        let mut tail = Vec::with_capacity(12);
        tail.extend_from_slice(&backward.to_le_bytes());
        tail.extend_from_slice(&flags);
        let crc = crc32(&tail);
        let mut footer = crc.to_le_bytes().to_vec();
        footer.extend_from_slice(&tail);
        footer.extend_from_slice(FOOTER_MAGIC);
        self.inner.write_all(&footer)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> ZeroWrite for XzWriter<W> {
    fn write_zeros(&mut self, mut n: u64) -> io::Result<()> {
        if !self.buf.is_empty() {
            let k = n.min((CHUNK - self.buf.len()) as u64) as usize;
            self.buf.resize(self.buf.len() + k, 0);
            n -= k as u64;
            if self.buf.len() == CHUNK {
                self.compress_chunk()?;
            }
        }
        while n >= CHUNK as u64 {
            self.write_zero_chunk()?;
            n -= CHUNK as u64;
        }
        // Less than a chunk is left and the buffer is empty unless `n` is 0 now.
        self.buf.resize(self.buf.len() + n as usize, 0);
        Ok(())
    }
}

impl<W: Write> Write for XzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.compress_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(any(feature = "testkit", feature = "fuzzing"))]
/// For the `.xz` stream whose footer ends at `end` in `r`, returns its start offset, or `None`
/// if the bytes before `end` are not the end of an xz stream.
pub(crate) fn stream_start_before<R: io::Read + io::Seek>(
    r: &mut R,
    end: u64,
) -> io::Result<Option<u64>> {
    if end < 24 {
        return Ok(None);
    }
    let mut footer = [0u8; 12];
    r.seek(io::SeekFrom::Start(end - 12))?;
    r.read_exact(&mut footer)?;
    if &footer[10..] != FOOTER_MAGIC
        || crc32(&footer[4..10]) != u32::from_le_bytes(footer[..4].try_into().expect("4"))
    {
        return Ok(None);
    }
    let backward = u64::from(u32::from_le_bytes(footer[4..8].try_into().expect("4")));
    let index_len = (backward + 1) * 4;
    let Some(index_start) = end.checked_sub(12 + index_len) else {
        return Ok(None);
    };
    let mut index = vec![0u8; index_len as usize];
    r.seek(io::SeekFrom::Start(index_start))?;
    r.read_exact(&mut index)?;
    if index[0] != 0 {
        return Ok(None);
    }
    let mut pos = 1;
    let count = get_varint(&index, &mut pos)?;
    let mut blocks = 0u64;
    for _ in 0..count {
        let unpadded = get_varint(&index, &mut pos)?;
        let _uncompressed = get_varint(&index, &mut pos)?;
        blocks += round4(unpadded);
    }
    let Some(start) = index_start.checked_sub(blocks + 12) else {
        return Ok(None);
    };
    let mut magic = [0u8; 6];
    r.seek(io::SeekFrom::Start(start))?;
    r.read_exact(&mut magic)?;
    Ok((&magic == XZ_MAGIC).then_some(start))
}

/// Decodes one complete `.xz` stream held in memory.
#[cfg(any(feature = "testkit", feature = "fuzzing"))]
pub(crate) fn decode(stream: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    DefaultCompressor
        .decompress(stream, &mut out, Compressor::Xz)
        .map_err(|e| invalid(format!("xz: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn sample(len: usize) -> Vec<u8> {
        let mut x = 0x1234_5678u32;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 3 == 0 {
                    b'a' + (i % 7) as u8
                } else {
                    x as u8
                }
            })
            .collect()
    }

    #[test]
    fn spliced_stream_round_trips() {
        let data = sample(CHUNK * 2 + 12345);
        let mut w = XzWriter::new(Vec::new(), 0);
        for piece in data.chunks(100_000) {
            w.write_all(piece).unwrap();
        }
        let xz = w.finish().unwrap();
        split_stream(&xz).unwrap();
        assert_eq!(decode(&xz).unwrap(), data);
        // The stream is found from its end, also behind other bytes.
        let mut cat = vec![1u8; 40];
        cat.extend_from_slice(&xz);
        let end = cat.len() as u64;
        assert_eq!(
            stream_start_before(&mut Cursor::new(&cat), end).unwrap(),
            Some(40)
        );
        assert_eq!(
            stream_start_before(&mut Cursor::new(&cat), end - 4).unwrap(),
            None
        );
        if let Ok(mut child) = std::process::Command::new("xz")
            .args(["-t", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
        {
            child.stdin.take().unwrap().write_all(&xz).unwrap();
            assert!(child.wait().unwrap().success(), "xz -t rejects the stream");
        }
    }

    #[test]
    fn zeros_written_as_cached_blocks_equal_zeros_compressed() {
        // Data, a long zero run starting mid-chunk, data again.
        let head = sample(CHUNK / 2 + 7);
        let zeros = (CHUNK * 3 + 999) as u64;
        let tail = sample(1000);
        let mut a = XzWriter::new(Vec::new(), 0);
        a.write_all(&head).unwrap();
        a.write_zeros(zeros).unwrap();
        a.write_all(&tail).unwrap();
        let a = a.finish().unwrap();
        let mut plain = head.clone();
        plain.resize(plain.len() + zeros as usize, 0);
        plain.extend_from_slice(&tail);
        let mut b = XzWriter::new(Vec::new(), 0);
        b.write_all(&plain).unwrap();
        assert_eq!(a, b.finish().unwrap());
        assert_eq!(decode(&a).unwrap(), plain);
    }

    #[test]
    fn empty_input_is_a_valid_stream() {
        let xz = XzWriter::new(Vec::new(), 0).finish().unwrap();
        assert_eq!(decode(&xz).unwrap(), b"");
    }
}
