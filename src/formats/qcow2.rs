//! qcow2 version 3 images with 8 KiB clusters, written as a stream from a sparse raw disk:
//! what `qemu-img convert -f raw -O qcow2 -o cluster_size=8k` produces (upstream's `.qcow2`),
//! with only the non-zero clusters allocated.
//!
//! Two passes over the raw file's data extents (holes are never read): the first finds the
//! clusters that hold a non-zero byte (one bit per 8 KiB cluster kept: 176 KiB for an 11 GiB
//! disk), the second writes the file front to back:
//!
//! ```text
//! [header][L1 table][refcount table][refcount blocks][L2 tables][data clusters in disk order]
//! ```
//!
//! Every cluster of the file is used exactly once (refcount 1), so every L1 and L2 entry
//! carries the "copied" flag, and the refcount blocks say 1 for clusters `0..N`. Field by
//! field: `docs/formats.md`, "Disk image formats".

use std::fs::File;
use std::io::{self, Write};

use super::sparse::for_each_segment;

/// log2 of the cluster size.
pub const CLUSTER_BITS: u32 = 13;
/// Cluster size: 8 KiB, upstream's `cluster_size=8k`.
pub const CLUSTER: usize = 1 << CLUSTER_BITS;
const C: u64 = CLUSTER as u64;
/// 8-byte entries per L2 table (one cluster): one table maps 8 MiB of disk.
const L2_ENTRIES: u64 = C / 8;
/// 16-bit refcounts (refcount_order 4) per refcount block.
const REFCOUNTS_PER_BLOCK: u64 = C / 2;
/// "Copied" flag of L1/L2 entries: the cluster's refcount is exactly 1.
const COPIED: u64 = 1 << 63;
/// Offsets in L1/L2 entries are bits 9–55.
const MAX_OFFSET: u64 = (1 << 56) - 1;
const HEADER_LEN: usize = 104;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// One cluster's worth of a walk over the disk.
enum Clusters<'a> {
    /// `count` clusters from `first` that lie wholly in holes.
    Holes { first: u64, count: u64 },
    /// Cluster `index`, zero-padded at the end of the disk (it may still be all zeros).
    Data {
        index: u64,
        bytes: &'a [u8; CLUSTER],
    },
}

/// Walks `file` cluster by cluster (the disk is `virtual_size` bytes: the file zero-padded);
/// returns the bytes read.
fn for_each_cluster(
    file: &File,
    raw_size: u64,
    virtual_size: u64,
    mut f: impl FnMut(Clusters<'_>) -> io::Result<()>,
) -> io::Result<u64> {
    struct Acc {
        buf: Box<[u8; CLUSTER]>,
        fill: usize,
        index: u64,
        has_data: bool,
    }
    let acc = std::cell::RefCell::new(Acc {
        buf: Box::new([0u8; CLUSTER]),
        fill: 0,
        index: 0,
        has_data: false,
    });
    let f = std::cell::RefCell::new(&mut f);
    let emit = |a: &mut Acc| -> io::Result<()> {
        let mut f = f.borrow_mut();
        if a.has_data {
            f(Clusters::Data {
                index: a.index,
                bytes: &a.buf,
            })?;
        } else {
            f(Clusters::Holes {
                first: a.index,
                count: 1,
            })?;
        }
        a.index += 1;
        a.fill = 0;
        a.has_data = false;
        Ok(())
    };
    let zeros = |mut n: u64| -> io::Result<()> {
        let mut a = acc.borrow_mut();
        if a.fill > 0 {
            let k = n.min((CLUSTER - a.fill) as u64) as usize;
            let fill = a.fill;
            a.buf[fill..fill + k].fill(0);
            a.fill += k;
            n -= k as u64;
            if a.fill == CLUSTER {
                emit(&mut a)?;
            } else {
                // `n` ran out inside the cluster.
                return Ok(());
            }
        }
        let whole = n / C;
        if whole > 0 {
            (f.borrow_mut())(Clusters::Holes {
                first: a.index,
                count: whole,
            })?;
            a.index += whole;
        }
        let rest = (n % C) as usize;
        a.buf[..rest].fill(0);
        a.fill = rest;
        Ok(())
    };
    let stats = for_each_segment(
        file,
        |mut d| {
            let mut a = acc.borrow_mut();
            while !d.is_empty() {
                let fill = a.fill;
                let k = d.len().min(CLUSTER - fill);
                a.buf[fill..fill + k].copy_from_slice(&d[..k]);
                a.fill += k;
                a.has_data = true;
                d = &d[k..];
                if a.fill == CLUSTER {
                    emit(&mut a)?;
                }
            }
            Ok(())
        },
        zeros,
    )?;
    if stats.size != raw_size || virtual_size < raw_size {
        return Err(io::Error::other(
            "the raw file changed size while it was read",
        ));
    }
    zeros(virtual_size - stats.size)?;
    let mut a = acc.borrow_mut();
    if a.fill > 0 {
        let fill = a.fill;
        a.buf[fill..].fill(0);
        emit(&mut a)?;
    }
    Ok(stats.data_read)
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a | x) == 0
}

/// Where everything goes: the result of the first pass.
#[derive(Debug, Clone)]
pub struct Layout {
    raw_size: u64,
    virtual_size: u64,
    /// Bit per disk cluster: holds a non-zero byte.
    allocated: Vec<u64>,
    l1_entries: u64,
    l1_clusters: u64,
    refcount_table_clusters: u64,
    refcount_blocks: u64,
    l2_tables: u64,
    data_clusters: u64,
    /// Bytes read by the first pass.
    data_read: u64,
}

impl Layout {
    /// The first pass: reads `file`'s data extents and finds the non-zero clusters.
    pub fn plan(file: &File) -> io::Result<Layout> {
        let raw_size = file.metadata()?.len();
        // qcow2 disks are whole sectors; the padding is zeros.
        let virtual_size = raw_size
            .checked_next_multiple_of(512)
            .ok_or_else(|| invalid("disk too large"))?;
        let clusters = virtual_size.div_ceil(C);
        let words =
            usize::try_from(clusters.div_ceil(64)).map_err(|_| invalid("disk too large"))?;
        let mut allocated = vec![0u64; words];
        let data_read = for_each_cluster(file, raw_size, virtual_size, |c| {
            if let Clusters::Data { index, bytes } = c
                && !is_zero(&bytes[..])
            {
                let word = allocated
                    .get_mut((index / 64) as usize)
                    .ok_or_else(|| invalid("the raw file grew while it was read"))?;
                *word |= 1 << (index % 64);
            }
            Ok(())
        })?;
        let data_clusters: u64 = allocated.iter().map(|w| u64::from(w.count_ones())).sum();
        let l1_entries = clusters.div_ceil(L2_ENTRIES);
        if l1_entries > u64::from(u32::MAX / 8) {
            return Err(invalid("disk too large for qcow2"));
        }
        let l2_tables = (0..l1_entries)
            .filter(|&r| region_has_data(&allocated, r, clusters))
            .count() as u64;
        let l1_clusters = (l1_entries * 8).div_ceil(C).max(1);
        // Refcount blocks cover every cluster of the file, themselves included: iterate.
        let fixed = 1 + l1_clusters + l2_tables + data_clusters;
        let mut refcount_blocks: u64 = 1;
        let mut refcount_table_clusters;
        loop {
            refcount_table_clusters = (refcount_blocks * 8).div_ceil(C);
            let total = fixed + refcount_table_clusters + refcount_blocks;
            let need = total.div_ceil(REFCOUNTS_PER_BLOCK);
            if need <= refcount_blocks {
                break;
            }
            refcount_blocks = need;
        }
        let layout = Layout {
            raw_size,
            virtual_size,
            allocated,
            l1_entries,
            l1_clusters,
            refcount_table_clusters,
            refcount_blocks,
            l2_tables,
            data_clusters,
            data_read,
        };
        if layout.file_size() > MAX_OFFSET {
            return Err(invalid("disk too large for qcow2"));
        }
        Ok(layout)
    }

    /// Clusters in the file.
    fn total_clusters(&self) -> u64 {
        1 + self.l1_clusters
            + self.refcount_table_clusters
            + self.refcount_blocks
            + self.l2_tables
            + self.data_clusters
    }

    /// Length of the qcow2 file.
    pub fn file_size(&self) -> u64 {
        self.total_clusters() * C
    }

    /// The disk size the image declares (the raw size rounded up to 512 bytes).
    pub fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    /// Disk clusters that are stored.
    pub fn data_clusters(&self) -> u64 {
        self.data_clusters
    }

    fn l1_offset(&self) -> u64 {
        C
    }
    fn refcount_table_offset(&self) -> u64 {
        self.l1_offset() + self.l1_clusters * C
    }
    fn refcount_blocks_offset(&self) -> u64 {
        self.refcount_table_offset() + self.refcount_table_clusters * C
    }
    fn l2_offset(&self) -> u64 {
        self.refcount_blocks_offset() + self.refcount_blocks * C
    }
    fn data_offset(&self) -> u64 {
        self.l2_offset() + self.l2_tables * C
    }

    fn is_allocated(&self, cluster: u64) -> bool {
        // Past the planned disk (the file grew): never allocated, so data there is an error.
        self.allocated
            .get((cluster / 64) as usize)
            .is_some_and(|w| w & (1 << (cluster % 64)) != 0)
    }

    fn header(&self) -> [u8; CLUSTER] {
        let mut h = [0u8; CLUSTER];
        h[0..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        // 8..20: no backing file.
        h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
        h[24..32].copy_from_slice(&self.virtual_size.to_be_bytes());
        // 32..36: no encryption.
        h[36..40].copy_from_slice(&(self.l1_entries as u32).to_be_bytes());
        h[40..48].copy_from_slice(&self.l1_offset().to_be_bytes());
        h[48..56].copy_from_slice(&self.refcount_table_offset().to_be_bytes());
        h[56..60].copy_from_slice(&(self.refcount_table_clusters as u32).to_be_bytes());
        // 60..96: no snapshots, no incompatible, compatible or autoclear features.
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        h[100..104].copy_from_slice(&(HEADER_LEN as u32).to_be_bytes());
        // 104..112: the end-of-extensions marker (type 0, length 0) is the zeros there.
        h
    }

    /// The second pass: writes the image to `out`; returns the bytes read (both passes).
    pub fn write(&self, file: &File, out: &mut impl Write) -> io::Result<u64> {
        let clusters = self.virtual_size.div_ceil(C);
        let mut block = [0u8; CLUSTER];
        out.write_all(&self.header())?;
        // L1: one entry per 8 MiB region, pointing at its L2 table if it holds data.
        let mut l2_next = self.l2_offset();
        let mut table = TableWriter::new(out);
        for r in 0..self.l1_entries {
            if region_has_data(&self.allocated, r, clusters) {
                table.entry(l2_next | COPIED)?;
                l2_next += C;
            } else {
                table.entry(0)?;
            }
        }
        table.pad_to(self.l1_clusters * C)?;
        // Refcount table: the refcount blocks, back to back.
        let mut table = TableWriter::new(out);
        for b in 0..self.refcount_blocks {
            table.entry(self.refcount_blocks_offset() + b * C)?;
        }
        table.pad_to(self.refcount_table_clusters * C)?;
        // Refcount blocks: 1 for every cluster of the file.
        let total = self.total_clusters();
        for b in 0..self.refcount_blocks {
            block.fill(0);
            let first = b * REFCOUNTS_PER_BLOCK;
            let used = total.saturating_sub(first).min(REFCOUNTS_PER_BLOCK) as usize;
            for i in 0..used {
                block[2 * i..2 * i + 2].copy_from_slice(&1u16.to_be_bytes());
            }
            out.write_all(&block)?;
        }
        // L2 tables: data clusters are stored in disk order from `data_offset`.
        let mut next_data = self.data_offset();
        for r in 0..self.l1_entries {
            if !region_has_data(&self.allocated, r, clusters) {
                continue;
            }
            block.fill(0);
            let first = r * L2_ENTRIES;
            let end = (first + L2_ENTRIES).min(clusters);
            for c in first..end {
                if self.is_allocated(c) {
                    let i = ((c - first) * 8) as usize;
                    block[i..i + 8].copy_from_slice(&(next_data | COPIED).to_be_bytes());
                    next_data += C;
                }
            }
            out.write_all(&block)?;
        }
        // Data clusters, read again: they must be what the first pass saw.
        let mut written = 0u64;
        let read = for_each_cluster(file, self.raw_size, self.virtual_size, |c| match c {
            Clusters::Holes { first, count } => {
                // A cluster that held data in the first pass and is a hole now: its zeros.
                for i in first..first + count {
                    if self.is_allocated(i) {
                        out.write_all(&[0u8; CLUSTER])?;
                        written += 1;
                    }
                }
                Ok(())
            }
            Clusters::Data { index, bytes } => {
                if self.is_allocated(index) {
                    out.write_all(&bytes[..])?;
                    written += 1;
                    Ok(())
                } else if is_zero(&bytes[..]) {
                    Ok(())
                } else {
                    Err(io::Error::other(
                        "the raw file changed while it was converted",
                    ))
                }
            }
        })?;
        if written != self.data_clusters {
            return Err(io::Error::other(
                "the raw file changed while it was converted",
            ));
        }
        Ok(self.data_read + read)
    }
}

fn region_has_data(allocated: &[u64], region: u64, clusters: u64) -> bool {
    let first = region * L2_ENTRIES;
    let end = (first + L2_ENTRIES).min(clusters);
    // Regions are 1024 clusters = 16 whole bitmap words (the last one may be shorter).
    let w0 = (first / 64) as usize;
    let w1 = end.div_ceil(64) as usize;
    allocated[w0..w1.min(allocated.len())]
        .iter()
        .any(|&w| w != 0)
}

/// Writes big-endian u64 table entries through a small buffer.
struct TableWriter<'a, W: Write> {
    out: &'a mut W,
    buf: [u8; CLUSTER],
    fill: usize,
    written: u64,
}

impl<'a, W: Write> TableWriter<'a, W> {
    fn new(out: &'a mut W) -> TableWriter<'a, W> {
        TableWriter {
            out,
            buf: [0u8; CLUSTER],
            fill: 0,
            written: 0,
        }
    }

    fn entry(&mut self, v: u64) -> io::Result<()> {
        self.buf[self.fill..self.fill + 8].copy_from_slice(&v.to_be_bytes());
        self.fill += 8;
        if self.fill == CLUSTER {
            self.out.write_all(&self.buf)?;
            self.written += C;
            self.fill = 0;
        }
        Ok(())
    }

    /// Zero-pads the table to `len` bytes (a whole number of clusters).
    fn pad_to(mut self, len: u64) -> io::Result<()> {
        if self.fill > 0 {
            self.buf[self.fill..].fill(0);
            self.out.write_all(&self.buf)?;
            self.written += C;
        }
        while self.written < len {
            self.out.write_all(&[0u8; CLUSTER])?;
            self.written += C;
        }
        Ok(())
    }
}

/// Writes the qcow2 image of `file` into `out` (both passes); returns the layout.
pub fn write(file: &File, out: &mut impl Write) -> io::Result<WriteStats> {
    let layout = Layout::plan(file)?;
    let data_read = layout.write(file, out)?;
    Ok(WriteStats {
        file_size: layout.file_size(),
        data_read,
    })
}

/// What [`write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Length of the qcow2 file.
    pub file_size: u64,
    /// Bytes read from the raw file (both passes).
    pub data_read: u64,
}
