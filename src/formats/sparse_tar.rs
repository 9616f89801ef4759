//! A GNU tar archive holding one sparse file, `disk.raw`: what upstream's GCP images are
//! (`tar -cvf - --sparse disk.raw | pigz -6`, the `.tar.gz` asset). The old GNU sparse format
//! (type `S`): the header lists the file's data regions (4 in the header, 21 per extension
//! block), the archive stores only their bytes. Field by field: `docs/formats.md`, "Disk image
//! formats".

use std::fs::File;
use std::io::{self, Write};

use std::os::unix::fs::FileExt;

use super::sparse::{Extent, READ_CHUNK, ZEROS, data_extents};

const BLOCK: usize = 512;
/// GNU tar's default record: 20 blocks; the archive is padded to a whole record.
const RECORD: u64 = 20 * BLOCK as u64;
/// The member's name, as upstream renames the disk before archiving it.
pub const MEMBER_NAME: &str = "disk.raw";

/// The archive's plan: the data regions of the file, found before anything is written.
#[derive(Debug, Clone)]
pub struct Plan {
    size: u64,
    regions: Vec<Extent>,
}

impl Plan {
    /// Lists `file`'s data regions (one entry per extent: memory grows with the number of
    /// extents, not the size).
    pub fn new(file: &File) -> io::Result<Plan> {
        let extents = data_extents(file)?;
        let size = extents.size();
        let mut regions: Vec<Extent> = Vec::new();
        for e in extents {
            regions.push(e?);
        }
        Ok(Plan { size, regions })
    }

    /// The map as written: the regions, then an empty region at the end of the file when it
    /// ends in a hole (or is all hole), as GNU tar writes it.
    fn map(&self) -> Vec<(u64, u64)> {
        let mut m: Vec<(u64, u64)> = self.regions.iter().map(|e| (e.offset, e.len)).collect();
        if m.last().is_none_or(|&(o, l)| o + l < self.size) {
            m.push((self.size, 0));
        }
        m
    }

    fn stored(&self) -> u64 {
        self.regions.iter().map(|e| e.len).sum()
    }

    fn extension_blocks(&self) -> u64 {
        (self.map().len().saturating_sub(4) as u64).div_ceil(21)
    }

    /// Length of the archive.
    pub fn archive_size(&self) -> u64 {
        let blocks = 1 + self.extension_blocks() + self.stored().div_ceil(BLOCK as u64) + 2;
        (blocks * BLOCK as u64).next_multiple_of(RECORD)
    }

    /// Writes the archive of `file` (which must still be what [`Plan::new`] saw) to `out`;
    /// returns the bytes read.
    pub fn write(&self, file: &File, out: &mut impl Write) -> io::Result<u64> {
        let map = self.map();
        let mut header = [0u8; BLOCK];
        put_str(&mut header[0..100], MEMBER_NAME);
        put_num(&mut header[100..108], 0o644)?;
        put_num(&mut header[108..116], 0)?;
        put_num(&mut header[116..124], 0)?;
        put_num(&mut header[124..136], self.stored())?;
        // mtime 0: reproducible (GNU tar stores the file's).
        put_num(&mut header[136..148], 0)?;
        header[156] = b'S';
        header[257..263].copy_from_slice(b"ustar ");
        header[263..265].copy_from_slice(b" \0");
        put_str(&mut header[265..297], "root");
        put_str(&mut header[297..329], "root");
        for (i, &(o, l)) in map.iter().take(4).enumerate() {
            let at = 386 + 24 * i;
            put_num(&mut header[at..at + 12], o)?;
            put_num(&mut header[at + 12..at + 24], l)?;
        }
        header[482] = u8::from(map.len() > 4);
        put_num(&mut header[483..495], self.size)?;
        // Checksum: the header's byte sum with the field itself taken as spaces.
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(text.as_bytes());
        out.write_all(&header)?;
        let rest = map.get(4..).unwrap_or(&[]);
        let chunks: Vec<&[(u64, u64)]> = rest.chunks(21).collect();
        for (n, chunk) in chunks.iter().enumerate() {
            let mut ext = [0u8; BLOCK];
            for (i, &(o, l)) in chunk.iter().enumerate() {
                put_num(&mut ext[24 * i..24 * i + 12], o)?;
                put_num(&mut ext[24 * i + 12..24 * i + 24], l)?;
            }
            ext[504] = u8::from(n + 1 < chunks.len());
            out.write_all(&ext)?;
        }
        // The planned regions' bytes, back to back (the map in the header says where they go).
        let mut buf = vec![0u8; READ_CHUNK];
        let mut stored = 0u64;
        for e in &self.regions {
            let mut off = e.offset;
            while off < e.end() {
                let want = (e.end() - off).min(READ_CHUNK as u64) as usize;
                file.read_exact_at(&mut buf[..want], off)?;
                out.write_all(&buf[..want])?;
                off += want as u64;
                stored += want as u64;
            }
        }
        if file.metadata()?.len() != self.size {
            return Err(io::Error::other(
                "the raw file changed size while it was read",
            ));
        }
        let written = (1 + chunks.len() as u64) * BLOCK as u64 + stored;
        let end = self.archive_size();
        let mut pad = end - written;
        while pad > 0 {
            let k = pad.min(ZEROS.len() as u64) as usize;
            out.write_all(&ZEROS[..k])?;
            pad -= k as u64;
        }
        Ok(stored)
    }
}

fn put_str(field: &mut [u8], s: &str) {
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// A numeric field: octal digits and a NUL, or GNU's base-256 (top bit set, big-endian) when
/// the value does not fit (over 8 GiB in a 12-byte field).
fn put_num(field: &mut [u8], v: u64) -> io::Result<()> {
    let digits = field.len() - 1;
    let text = format!("{v:0digits$o}");
    if text.len() == digits {
        field[..digits].copy_from_slice(text.as_bytes());
        field[digits] = 0;
        return Ok(());
    }
    if field.len() < 9 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a tar number does not fit its field",
        ));
    }
    field.fill(0);
    let n = field.len();
    field[n - 8..].copy_from_slice(&v.to_be_bytes());
    field[0] |= 0x80;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_octal_or_base_256() {
        let mut f = [0u8; 12];
        put_num(&mut f, 0o644).unwrap();
        assert_eq!(&f, b"00000000644\0");
        put_num(&mut f, 11 << 30).unwrap();
        assert_eq!(f[0], 0x80);
        assert_eq!(u64::from_be_bytes(f[4..].try_into().unwrap()), 11 << 30);
        let mut small = [0u8; 8];
        assert!(put_num(&mut small, 1 << 40).is_err());
    }
}
