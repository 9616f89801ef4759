//! Compressed streams of disk images (`.zst`, `.xz`, `.gz`) fed from sparse files: a hole is
//! handed to the compressor as a count of zeros ([`ZeroWrite`]), never read from disk.
//!
//! Settings and how they differ from upstream's command-line tools: `docs/formats.md`, "Disk
//! image formats".

use std::io::{self, Write};

use flate2::write::GzEncoder;

use super::sparse::{ZeroWrite, write_zeros_from_buffer};
use super::xz::XzWriter;

/// How an image stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// A zstd frame at `level` (1–22) with `threads` worker threads (0: compress in the
    /// caller's thread), with a content checksum and the content size in the header, as the
    /// `zstd` tool writes for a file.
    Zstd { level: i32, threads: u32 },
    /// One `.xz` stream at preset `preset` (0–9), independent blocks of 1 MiB input, CRC32.
    Xz { preset: u32 },
    /// One gzip member at `level` (0–9).
    Gzip { level: u32 },
}

impl Compression {
    /// zstd as bootfactory writes `.zst` images: level 3 (zstd's own default); on more than
    /// two cores one worker thread per core (at most 4), else in the caller's thread (on two
    /// shared cores the workers gained little and cost 50–100 MiB). Upstream runs
    /// `zstd -T0 -18`: on a disk image's mostly pre-compressed data that is a few KB smaller
    /// and many times slower, since the zeros of the holes go through the match finder too;
    /// figures in `docs/formats.md` "Disk image formats".
    pub fn zstd_default() -> Compression {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Compression::Zstd {
            level: ZSTD_DEFAULT_LEVEL,
            threads: if cores > 2 { cores.min(4) as u32 } else { 0 },
        }
    }

    /// xz as upstream's `xz -0`.
    pub const XZ_DEFAULT: Compression = Compression::Xz { preset: 0 };
    /// gzip as upstream's `pigz -6`.
    pub const GZIP_DEFAULT: Compression = Compression::Gzip { level: 6 };

    /// The file name suffix (`.zst`, `.xz`, `.gz`, or empty).
    pub fn suffix(&self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd { .. } => ".zst",
            Compression::Xz { .. } => ".xz",
            Compression::Gzip { .. } => ".gz",
        }
    }
}

/// The zstd level of [`Compression::zstd_default`].
pub const ZSTD_DEFAULT_LEVEL: i32 = 3;

/// Counts the bytes written through it.
#[derive(Debug)]
pub struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Counting<W> {
    /// Wraps `inner` with a count of 0.
    pub fn new(inner: W) -> Counting<W> {
        Counting { inner, count: 0 }
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> ZeroWrite for Counting<W> {}

/// A writer of one compressed (or plain) stream; `finish` ends the stream.
pub struct Compressor<W: Write> {
    kind: Kind<W>,
}

enum Kind<W: Write> {
    Plain(W),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Xz(XzWriter<W>),
    Gzip(GzEncoder<W>),
}

impl<W: Write> std::fmt::Debug for Compressor<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Plain(_) => "plain",
            Kind::Zstd(_) => "zstd",
            Kind::Xz(_) => "xz",
            Kind::Gzip(_) => "gzip",
        };
        f.debug_struct("Compressor").field("kind", &kind).finish()
    }
}

impl<W: Write> Compressor<W> {
    /// Starts a stream into `out`. `content_size`, when known, goes into the zstd frame
    /// header (and must then be exactly the number of bytes written).
    pub fn new(
        out: W,
        compression: Compression,
        content_size: Option<u64>,
    ) -> io::Result<Compressor<W>> {
        let kind = match compression {
            Compression::None => Kind::Plain(out),
            Compression::Zstd { level, threads } => {
                let mut e = zstd::stream::write::Encoder::new(out, level)?;
                e.include_checksum(true)?;
                if threads > 0 {
                    e.multithread(threads)?;
                }
                if content_size.is_some() {
                    e.set_pledged_src_size(content_size)?;
                }
                Kind::Zstd(e)
            }
            Compression::Xz { preset } => {
                if preset > 9 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("xz preset {preset} is not 0-9"),
                    ));
                }
                Kind::Xz(XzWriter::new(out, preset))
            }
            Compression::Gzip { level } => {
                if level > 9 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("gzip level {level} is not 0-9"),
                    ));
                }
                Kind::Gzip(GzEncoder::new(out, flate2::Compression::new(level)))
            }
        };
        Ok(Compressor { kind })
    }

    /// Ends the stream (trailers, checksums) and returns the output writer, flushed.
    pub fn finish(self) -> io::Result<W> {
        let mut w = match self.kind {
            Kind::Plain(w) => w,
            Kind::Zstd(e) => e.finish()?,
            Kind::Xz(x) => x.finish()?,
            Kind::Gzip(g) => g.finish()?,
        };
        w.flush()?;
        Ok(w)
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.kind {
            Kind::Plain(w) => w.write(buf),
            Kind::Zstd(e) => e.write(buf),
            Kind::Xz(x) => x.write(buf),
            Kind::Gzip(g) => g.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.kind {
            Kind::Plain(w) => w.flush(),
            Kind::Zstd(e) => e.flush(),
            Kind::Xz(x) => x.flush(),
            Kind::Gzip(g) => g.flush(),
        }
    }
}

impl<W: Write> ZeroWrite for Compressor<W> {
    fn write_zeros(&mut self, n: u64) -> io::Result<()> {
        match &mut self.kind {
            Kind::Xz(x) => x.write_zeros(n),
            _ => write_zeros_from_buffer(self, n),
        }
    }
}
