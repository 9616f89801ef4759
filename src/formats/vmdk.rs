//! Stream-optimized VMDK (VMware "Virtual Disk Format 5.0", `createType="streamOptimized"`):
//! the disk of an `.ova`, as open-vmdk's `vmdk-convert` (what upstream runs) or `qemu-img
//! convert -O vmdk -o subformat=streamOptimized` write it, but as a true stream: nothing is
//! sought back to, so it can go into any writer.
//!
//! ```text
//! [header, gdOffset = GD_AT_END][descriptor (20 sectors)][zeros to sector 128]
//! [grain marker + zlib data, sector-padded]…  [GT marker][GT]  (after each 512 grains)
//! … [GD marker][GD] [footer marker][footer = header with gdOffset] [end-of-stream marker]
//! ```
//!
//! Grains are 64 KiB (128 sectors); only grains holding a non-zero byte are stored, each
//! deflated on its own (zlib format). The raw file's holes are never read
//! ([`super::sparse`]). A grain table (512 entries: 32 MiB of disk) is written as soon as its
//! grains are, so memory is one grain, its compressed form, one grain table and the grain
//! directory (4 bytes per 32 MiB of disk: 1,408 bytes for 11 GiB), plus the 1 MiB read buffer
//! and the deflate state. Field by field: `docs/formats.md`, "Disk image formats".

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};

use flate2::{Compress, Compression, FlushCompress, Status};

use super::sparse::for_each_segment;
use super::vhd::ContentDigest;

/// Sector size; every offset in the file is in sectors.
pub const SECTOR: u64 = 512;
/// Sectors per grain: 128 (64 KiB), the size every stream-optimized writer uses.
pub const GRAIN_SECTORS: u64 = 128;
/// Grain size in bytes.
pub const GRAIN: usize = (GRAIN_SECTORS * SECTOR) as usize;
/// Entries per grain table: 512 (the only value VMware's disk library accepts).
pub const GTES_PER_GT: u64 = 512;
/// Sectors of one grain table (512 four-byte entries).
pub const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;
/// Where the embedded descriptor starts, in sectors.
pub const DESCRIPTOR_OFFSET: u64 = 1;
/// Sectors reserved for the descriptor (as open-vmdk and qemu reserve).
pub const DESCRIPTOR_SECTORS: u64 = 20;
/// Sectors before the first grain (header and descriptor, padded to a whole grain).
pub const OVERHEAD: u64 = 128;
/// `gdOffset` in the leading header: the grain directory's place is in the footer.
pub const GD_AT_END: u64 = u64::MAX;
/// Header flags: valid newline detector (bit 0), compressed grains (16), markers (17).
pub const FLAGS: u32 = 1 | (1 << 16) | (1 << 17);
/// `compressAlgorithm` DEFLATE.
pub const COMPRESS_DEFLATE: u16 = 1;
/// The extent file name the descriptor names (the member name in an `.ova`).
pub const EXTENT_NAME: &str = "disk.vmdk";
/// open-vmdk's default deflate level (`Z_BEST_COMPRESSION`).
pub const DEFAULT_LEVEL: u32 = 9;

/// Marker types (the `type` field of a metadata marker).
pub mod marker {
    /// End of stream: an all-zero sector.
    pub const EOS: u32 = 0;
    /// A grain table follows.
    pub const GRAIN_TABLE: u32 = 1;
    /// The grain directory follows.
    pub const GRAIN_DIRECTORY: u32 = 2;
    /// The footer (a copy of the header with the real `gdOffset`) follows.
    pub const FOOTER: u32 = 3;
}

/// How the VMDK is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmdkOptions {
    /// Deflate level of each grain (0–9). Default 9, open-vmdk's.
    pub level: u32,
    /// The disk's content ID (`CID` is its first 4 bytes, `ddb.longContentID` all 16 in
    /// hex). `None`: derived from the disk's content (a first pass over the data extents), so
    /// the same disk gives the same file; open-vmdk and qemu write random ones.
    pub content_id: Option<[u8; 16]>,
}

impl Default for VmdkOptions {
    fn default() -> VmdkOptions {
        VmdkOptions {
            level: DEFAULT_LEVEL,
            content_id: None,
        }
    }
}

/// What [`write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Length of the VMDK file.
    pub file_size: u64,
    /// Disk size in bytes (the raw size rounded up to whole sectors).
    pub capacity: u64,
    /// Grains stored (holding a non-zero byte).
    pub grains_stored: u64,
    /// Bytes read from the raw file (both passes when the content ID is derived).
    pub data_read: u64,
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

fn changed() -> io::Error {
    io::Error::other("the raw file changed size while it was read")
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a | x) == 0
}

/// The sparse extent header (512 bytes, little-endian) of a disk of `capacity` sectors.
/// `gd_offset` is [`GD_AT_END`] in the leading header, the grain directory's sector in the
/// footer.
pub fn header(capacity: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..4].copy_from_slice(b"KDMV");
    h[4..8].copy_from_slice(&3u32.to_le_bytes());
    h[8..12].copy_from_slice(&FLAGS.to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&DESCRIPTOR_OFFSET.to_le_bytes());
    h[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
    h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    // 48..56: no redundant grain directory.
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&OVERHEAD.to_le_bytes());
    // 72: uncleanShutdown 0; then the newline detector: "\n", " ", "\r\n".
    h[73] = b'\n';
    h[74] = b' ';
    h[75] = b'\r';
    h[76] = b'\n';
    h[77..79].copy_from_slice(&COMPRESS_DEFLATE.to_le_bytes());
    h
}

/// A metadata marker: `sectors` of metadata of `kind` follow (`size` is 0).
pub fn metadata_marker(sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[0..8].copy_from_slice(&sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// `CID` from a content ID: its first 4 bytes, avoiding `ffffffff` and `fffffffe` (read as
/// "no parent" and "all zeros" by some software).
pub fn cid(content_id: &[u8; 16]) -> u32 {
    let c = u32::from_be_bytes([content_id[0], content_id[1], content_id[2], content_id[3]]);
    c.min(0xFFFF_FFFD)
}

/// The embedded descriptor of a disk of `capacity` sectors.
pub fn descriptor(capacity: u64, content_id: &[u8; 16]) -> String {
    // 255 heads and 63 sectors per track, the cylinders capped at 65535, as open-vmdk does.
    let cylinders = capacity.div_ceil(255 * 63).min(65535);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity} SPARSE \"{EXTENT_NAME}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.adapterType = \"lsilogic\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.longContentID = \"{long}\"\n\
         ddb.toolsInstallType = \"4\"\n\
         ddb.toolsVersion = \"2147483647\"\n\
         ddb.virtualHWVersion = \"4\"\n",
        cid = cid(content_id),
        long = hex::encode(content_id),
    )
}

/// Writes the stream-optimized VMDK of the sparse raw disk image `file` into `out`.
pub fn write(file: &File, opts: VmdkOptions, out: &mut impl Write) -> io::Result<WriteStats> {
    if opts.level > 9 {
        return Err(invalid("deflate level is not 0-9"));
    }
    let raw_size = file.metadata()?.len();
    let disk = raw_size
        .checked_next_multiple_of(SECTOR)
        .ok_or_else(|| invalid("disk too large"))?;
    let capacity = disk / SECTOR;
    let grains = capacity.div_ceil(GRAIN_SECTORS);
    let tables = grains.div_ceil(GTES_PER_GT);
    // Grain offsets are 32-bit sector numbers: the file stays under 2 TiB.
    if disk > (1u64 << 41) {
        return Err(invalid("disk too large for a stream-optimized VMDK"));
    }
    let (content_id, first_read) = match opts.content_id {
        Some(id) => (id, 0),
        None => {
            let digest = RefCell::new(ContentDigest::default());
            let stats = for_each_segment(
                file,
                |d| {
                    digest.borrow_mut().data(d);
                    Ok(())
                },
                |n| {
                    digest.borrow_mut().zeros(n);
                    Ok(())
                },
            )?;
            if stats.size != raw_size {
                return Err(changed());
            }
            let mut digest = digest.into_inner();
            digest.zeros(disk - raw_size);
            (digest.finish_uuid(), stats.data_read)
        }
    };
    let mut w = Grains {
        out,
        pos: 0,
        grains,
        index: 0,
        buf: vec![0u8; GRAIN],
        fill: 0,
        has_data: false,
        gt: vec![0u32; GTES_PER_GT as usize],
        gd: vec![0u32; tables as usize],
        z: Compress::new(Compression::new(opts.level), true),
        // The grain marker, the deflated grain (stored blocks grow it by a few bytes per
        // 16 KiB at worst) and the padding to a sector.
        zbuf: vec![0u8; GRAIN + 4096],
        stored: 0,
    };
    w.put(&header(capacity, GD_AT_END))?;
    let text = descriptor(capacity, &content_id);
    let mut desc = vec![0u8; (DESCRIPTOR_SECTORS * SECTOR) as usize];
    desc.get_mut(..text.len())
        .ok_or_else(|| invalid("descriptor too long"))?
        .copy_from_slice(text.as_bytes());
    w.put(&desc)?;
    w.put_zeros(OVERHEAD * SECTOR - w.pos)?;
    let w = RefCell::new(w);
    let stats = for_each_segment(
        file,
        |d| w.borrow_mut().data(d),
        |n| w.borrow_mut().zeros(n),
    )?;
    if stats.size != raw_size || file.metadata()?.len() != raw_size {
        return Err(changed());
    }
    let mut w = w.into_inner();
    w.zeros(disk - raw_size)?;
    let (file_size, grains_stored) = w.finish(capacity)?;
    Ok(WriteStats {
        file_size,
        capacity: disk,
        grains_stored,
        data_read: first_read + stats.data_read,
    })
}

/// The grain stream: fills one grain at a time, writes the non-zero ones and each grain
/// table once its 512 grains are past.
struct Grains<'a, W: Write> {
    out: &'a mut W,
    /// Bytes written so far.
    pos: u64,
    /// Grains of the disk.
    grains: u64,
    /// The grain being filled.
    index: u64,
    buf: Vec<u8>,
    fill: usize,
    /// Bytes from a data extent went into the grain (else it is zeros from holes).
    has_data: bool,
    /// The current grain table (grains `index / 512 * 512 ..`).
    gt: Vec<u32>,
    gd: Vec<u32>,
    z: Compress,
    zbuf: Vec<u8>,
    stored: u64,
}

impl<W: Write> Grains<'_, W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn put_zeros(&mut self, n: u64) -> io::Result<()> {
        super::sparse::write_zeros_from_buffer(self.out, n)?;
        self.pos += n;
        Ok(())
    }

    /// The current sector, as grain tables and the directory store it.
    fn sector(&self) -> io::Result<u32> {
        u32::try_from(self.pos / SECTOR)
            .map_err(|_| invalid("a stream-optimized VMDK is limited to 2 TiB"))
    }

    fn data(&mut self, mut d: &[u8]) -> io::Result<()> {
        while !d.is_empty() {
            let k = d.len().min(GRAIN - self.fill);
            self.buf[self.fill..self.fill + k].copy_from_slice(&d[..k]);
            self.fill += k;
            self.has_data = true;
            d = &d[k..];
            if self.fill == GRAIN {
                self.end_grain()?;
            }
        }
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> io::Result<()> {
        if self.fill > 0 {
            let k = n.min((GRAIN - self.fill) as u64) as usize;
            self.buf[self.fill..self.fill + k].fill(0);
            self.fill += k;
            n -= k as u64;
            if self.fill < GRAIN {
                return Ok(());
            }
            self.end_grain()?;
        }
        // Whole grains of zeros are skipped; the grain tables they end are written.
        let mut whole = n / GRAIN as u64;
        while whole > 0 {
            let k = whole.min(GTES_PER_GT - self.index % GTES_PER_GT);
            if self.index + k > self.grains {
                return Err(changed());
            }
            self.index += k;
            whole -= k;
            if self.index.is_multiple_of(GTES_PER_GT) {
                self.end_table()?;
            }
        }
        let rest = (n % GRAIN as u64) as usize;
        self.buf[..rest].fill(0);
        self.fill = rest;
        Ok(())
    }

    /// The grain in `buf` is complete (zero-padded at the end of the disk).
    fn end_grain(&mut self) -> io::Result<()> {
        if self.index >= self.grains {
            return Err(changed());
        }
        if self.has_data && !is_zero(&self.buf) {
            let sector = self.sector()?;
            self.z.reset();
            let status = self
                .z
                .compress(&self.buf, &mut self.zbuf[12..], FlushCompress::Finish)
                .map_err(io::Error::other)?;
            if status != Status::StreamEnd || self.z.total_in() != GRAIN as u64 {
                return Err(io::Error::other("a deflated grain did not fit its buffer"));
            }
            let n = self.z.total_out() as usize;
            let len = (12 + n).next_multiple_of(SECTOR as usize);
            let zbuf = self
                .zbuf
                .get_mut(..len)
                .ok_or_else(|| io::Error::other("a deflated grain did not fit its buffer"))?;
            zbuf[0..8].copy_from_slice(&(self.index * GRAIN_SECTORS).to_le_bytes());
            zbuf[8..12].copy_from_slice(&(n as u32).to_le_bytes());
            zbuf[12 + n..].fill(0);
            self.out.write_all(zbuf)?;
            self.pos += len as u64;
            self.gt[(self.index % GTES_PER_GT) as usize] = sector;
            self.stored += 1;
        }
        self.index += 1;
        self.fill = 0;
        self.has_data = false;
        if self.index.is_multiple_of(GTES_PER_GT) {
            self.end_table()?;
        }
        Ok(())
    }

    /// Writes the grain table of the grains before `index` (a marker, then the table).
    fn end_table(&mut self) -> io::Result<()> {
        let Some(t) = self.index.checked_sub(1).map(|i| i / GTES_PER_GT) else {
            return Ok(());
        };
        self.put(&metadata_marker(GT_SECTORS, marker::GRAIN_TABLE))?;
        let sector = self.sector()?;
        let mut table = [0u8; (GTES_PER_GT * 4) as usize];
        for (i, e) in self.gt.iter().enumerate() {
            table[4 * i..4 * i + 4].copy_from_slice(&e.to_le_bytes());
        }
        self.put(&table)?;
        *self.gd.get_mut(t as usize).ok_or_else(changed)? = sector;
        self.gt.fill(0);
        Ok(())
    }

    /// Ends the stream: the last grain and table, the directory, the footer and the
    /// end-of-stream marker. Returns the file's length and the grains stored.
    fn finish(mut self, capacity: u64) -> io::Result<(u64, u64)> {
        if self.fill > 0 {
            let fill = self.fill;
            self.buf[fill..].fill(0);
            self.end_grain()?;
        }
        if self.index != self.grains {
            return Err(changed());
        }
        if !self.index.is_multiple_of(GTES_PER_GT) {
            self.end_table()?;
        }
        let gd_bytes = self.gd.len() as u64 * 4;
        let gd_sectors = gd_bytes.div_ceil(SECTOR);
        self.put(&metadata_marker(gd_sectors, marker::GRAIN_DIRECTORY))?;
        let gd_offset = u64::from(self.sector()?);
        let gd: Vec<u8> = self.gd.iter().flat_map(|e| e.to_le_bytes()).collect();
        self.put(&gd)?;
        self.put_zeros(gd_sectors * SECTOR - gd_bytes)?;
        self.put(&metadata_marker(1, marker::FOOTER))?;
        self.put(&header(capacity, gd_offset))?;
        self.put(&metadata_marker(0, marker::EOS))?;
        self.out.flush()?;
        Ok((self.pos, self.stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le64(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }
    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn header_fields() {
        let h = header(8_388_608, GD_AT_END);
        assert_eq!(&h[0..4], b"KDMV");
        assert_eq!(le32(&h, 4), 3);
        assert_eq!(le32(&h, 8), 0x0003_0001);
        assert_eq!(le64(&h, 12), 8_388_608);
        assert_eq!(le64(&h, 20), 128);
        assert_eq!(le64(&h, 28), 1);
        assert_eq!(le64(&h, 36), 20);
        assert_eq!(le32(&h, 44), 512);
        assert_eq!(le64(&h, 48), 0);
        assert_eq!(le64(&h, 56), u64::MAX);
        assert_eq!(le64(&h, 64), 128);
        assert_eq!(&h[72..79], b"\0\n \r\n\x01\0");
        assert!(h[79..].iter().all(|&b| b == 0));
        assert_eq!(le64(&header(1, 77), 56), 77);
    }

    #[test]
    fn markers_are_one_sector() {
        let m = metadata_marker(4, marker::GRAIN_TABLE);
        assert_eq!((le64(&m, 0), le32(&m, 8), le32(&m, 12)), (4, 0, 1));
        assert!(m[16..].iter().all(|&b| b == 0));
        assert!(metadata_marker(0, marker::EOS).iter().all(|&b| b == 0));
        assert_eq!(le32(&metadata_marker(1, marker::FOOTER), 12), 3);
        assert_eq!(le32(&metadata_marker(1, marker::GRAIN_DIRECTORY), 12), 2);
    }

    #[test]
    fn descriptor_and_cid() {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&[0x12, 0x34, 0x56, 0x78]);
        let d = descriptor(22_923_264, &id);
        assert!(d.contains("CID=12345678\n"), "{d}");
        assert!(d.contains("createType=\"streamOptimized\"\n"));
        assert!(d.contains("RW 22923264 SPARSE \"disk.vmdk\"\n"));
        // 22923264 / (255 * 63) rounded up.
        assert!(d.contains("ddb.geometry.cylinders = \"1427\"\n"), "{d}");
        assert!(d.contains("ddb.longContentID = \"12345678000000000000000000000000\"\n"));
        assert!(d.len() < (DESCRIPTOR_SECTORS * SECTOR) as usize);
        assert_eq!(cid(&[0xFF; 16]), 0xFFFF_FFFD);
        assert!(descriptor(u64::MAX / 512, &id).contains("cylinders = \"65535\""));
    }

    #[test]
    fn an_all_hole_disk_is_metadata_only() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(100 << 20).unwrap();
        let mut out = Vec::new();
        let st = write(&f, VmdkOptions::default(), &mut out).unwrap();
        assert_eq!(st.grains_stored, 0);
        assert_eq!(st.file_size, out.len() as u64);
        // Header area, 4 tables with their markers, directory marker and sector, footer
        // marker, footer, end of stream.
        assert_eq!(out.len() as u64, (128 + 4 * 5 + 2 + 3) * 512);
        let n = out.len();
        assert_eq!(le32(&out[n - 1536..], 12), marker::FOOTER);
        assert_eq!(&out[n - 1024..n - 1020], b"KDMV");
        let gd = le64(&out[n - 1024..], 56);
        assert_eq!(gd * 512, n as u64 - 2048);
        assert!(out[n - 512..].iter().all(|&b| b == 0));
        assert!(
            write(
                &f,
                VmdkOptions {
                    level: 10,
                    content_id: None
                },
                &mut Vec::new()
            )
            .is_err()
        );
    }
}
