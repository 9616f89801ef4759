//! The GUID Partition Table's on-disk pieces (UEFI 2.10 §5.3), shared by disk images and by
//! the GPT an ISO appends for its EFI partition: the 128-entry partition array and the header
//! (92 bytes, CRC32 over itself and over the array, padded to a whole sector), and GUIDs in
//! their mixed-endian on-disk form. Where the pieces go (LBA 1 and 2, the backup copies at the
//! end) is the caller's layout.

use std::io;

use sha2::{Digest as _, Sha256};

/// Entries in the partition array (the minimum the specification requires space for).
pub const ENTRIES: u64 = 128;
/// Bytes per entry.
pub const ENTRY_SIZE: u64 = 128;
/// Bytes of the whole array (16 KiB).
pub const ARRAY_BYTES: u64 = ENTRIES * ENTRY_SIZE;
/// UTF-16 code units of a partition name.
const NAME_UNITS: usize = 36;

/// Sectors the partition array takes (32 of 512 bytes, 4 of 4096).
pub fn array_sectors(sector_size: u64) -> u64 {
    ARRAY_BYTES.div_ceil(sector_size)
}

/// A GUID in its on-disk form (first three fields little-endian) from its text form
/// (`C12A7328-F81F-11D2-BA4B-00A0C93EC93B`); `None` when malformed.
pub fn guid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || text.len() != 36 {
        return None;
    }
    let raw = hex::decode(hex).ok()?;
    let mut g = [0u8; 16];
    g[..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
    g[4..6].copy_from_slice(&[raw[5], raw[4]]);
    g[6..8].copy_from_slice(&[raw[7], raw[6]]);
    g[8..].copy_from_slice(&raw[8..]);
    Some(g)
}

/// A version-4-shaped GUID (on-disk form) derived from `seed` and `what`: SHA-256 of
/// `seed ‖ 0 ‖ what`, so the same asset always has the same disk and partition GUIDs.
pub fn derived_guid(seed: &[u8], what: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(seed);
    h.update([0]);
    h.update(what.as_bytes());
    let d = h.finalize();
    let mut g = [0u8; 16];
    g.copy_from_slice(&d[..16]);
    // time_hi_and_version is stored little-endian: the version nibble is in byte 7.
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    g
}

/// One partition entry.
#[derive(Debug, Clone)]
pub struct Partition<'a> {
    /// Partition type GUID (on-disk form).
    pub type_guid: [u8; 16],
    /// Unique partition GUID (on-disk form).
    pub guid: [u8; 16],
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
    /// Attribute bits (bit 2: legacy BIOS bootable).
    pub attributes: u64,
    /// Name, at most 36 UTF-16 code units.
    pub name: &'a str,
}

/// The partition array: `parts` in order, the rest of the 128 entries zero. A name longer
/// than 36 UTF-16 units or more than 128 partitions is an error.
pub fn entry_array(parts: &[Partition<'_>]) -> io::Result<Vec<u8>> {
    if parts.len() as u64 > ENTRIES {
        return Err(io::Error::other("more than 128 GPT partitions"));
    }
    let mut a = vec![0u8; ARRAY_BYTES as usize];
    for (i, p) in parts.iter().enumerate() {
        let e = &mut a[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[..16].copy_from_slice(&p.type_guid);
        e[16..32].copy_from_slice(&p.guid);
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        let name: Vec<u16> = p.name.encode_utf16().collect();
        if name.len() > NAME_UNITS {
            return Err(io::Error::other(format!(
                "GPT partition name {:?} is longer than 36 UTF-16 units",
                p.name
            )));
        }
        for (j, c) in name.iter().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&c.to_le_bytes());
        }
    }
    Ok(a)
}

/// What a header says about the disk.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// Bytes per logical sector (512 or 4096).
    pub sector_size: u64,
    /// The disk's last LBA (where the backup header goes).
    pub last_lba: u64,
    /// First usable LBA.
    pub first_usable_lba: u64,
    /// Last usable LBA.
    pub last_usable_lba: u64,
    /// Disk GUID (on-disk form).
    pub disk_guid: [u8; 16],
}

/// A header sector (`sector_size` bytes, zero after the 92-byte header): the primary one
/// (at LBA 1, its array at LBA 2) or, with `backup`, the one at the last LBA (its array right
/// before it). `entries_crc` is the CRC32 of the array.
pub fn header(t: &Table, backup: bool, entries_crc: u32) -> Vec<u8> {
    let (my, alt, entries_at) = if backup {
        (t.last_lba, 1, t.last_lba - array_sectors(t.sector_size))
    } else {
        (1, t.last_lba, 2)
    };
    let mut h = vec![0u8; t.sector_size as usize];
    h[..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&my.to_le_bytes());
    h[32..40].copy_from_slice(&alt.to_le_bytes());
    h[40..48].copy_from_slice(&t.first_usable_lba.to_le_bytes());
    h[48..56].copy_from_slice(&t.last_usable_lba.to_le_bytes());
    h[56..72].copy_from_slice(&t.disk_guid);
    h[72..80].copy_from_slice(&entries_at.to_le_bytes());
    h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
    h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_to_disk_form() {
        let g = guid_bytes("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(hex::encode(g), "28732ac11ff8d211ba4b00a0c93ec93b");
        assert_eq!(guid_bytes("C12A7328F81F11D2BA4B00A0C93EC93B"), None);
        assert_eq!(guid_bytes("X12A7328-F81F-11D2-BA4B-00A0C93EC93B"), None);
        let d = derived_guid(b"seed", "disk");
        assert_eq!(d[7] >> 4, 4);
        assert_eq!(d[8] >> 6, 2);
        assert_ne!(d, derived_guid(b"seed", "EFI"));
    }

    #[test]
    fn header_and_array_checksums_hold() {
        let parts = [Partition {
            type_guid: [1; 16],
            guid: [2; 16],
            first_lba: 2048,
            last_lba: 4095,
            attributes: 4,
            name: "EFI",
        }];
        let a = entry_array(&parts).unwrap();
        assert_eq!(a.len(), 16384);
        assert_eq!(&a[56..62], &[b'E', 0, b'F', 0, b'I', 0]);
        let t = Table {
            sector_size: 4096,
            last_lba: 10_000,
            first_usable_lba: 256,
            last_usable_lba: 10_000 - 5,
            disk_guid: [3; 16],
        };
        for backup in [false, true] {
            let h = header(&t, backup, crc32fast::hash(&a));
            assert_eq!(h.len(), 4096);
            let mut z = h[..92].to_vec();
            z[16..20].fill(0);
            assert_eq!(h[16..20], crc32fast::hash(&z).to_le_bytes());
            let at = u64::from_le_bytes(h[72..80].try_into().unwrap());
            assert_eq!(at, if backup { 10_000 - 4 } else { 2 });
        }
        let long = Partition {
            name: "a name much longer than thirty-six units",
            ..parts[0].clone()
        };
        assert!(entry_array(&[long]).is_err());
    }
}
