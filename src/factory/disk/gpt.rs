//! A GPT writer for the layouts [`super::layout`] plans (`docs/formats.md` §Disk images):
//! protective MBR, primary header at LBA 1 with 128 entries from LBA 2, backup entries and
//! header at the end, CRC32 over header and entries; LBAs of the plan's sector size (512 or
//! 4096: the entries take 32 or 4 sectors, each header a whole sector). GUIDs come from a
//! seed, so one asset always has the same bytes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;

use crate::formats::gpt::{self as table, Partition, Table};
pub use crate::formats::gpt::{derived_guid, guid_bytes};

use super::layout::{DiskPlan, entry_sectors};

/// The protective MBR (the first 512 bytes of LBA 0; `last_lba` in the disk's sectors).
pub fn protective_mbr(last_lba: u64) -> [u8; 512] {
    let mut m = [0u8; 512];
    let e = &mut m[446..462];
    e[0] = 0x00;
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    e[4] = 0xee;
    e[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    e[12..16].copy_from_slice(&(last_lba.min(0xffff_ffff) as u32).to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xaa;
    m
}

/// The 128-entry partition array of `plan` (partition GUIDs derived from `seed` and the
/// partition's name).
pub fn entry_array(plan: &DiskPlan, seed: &[u8]) -> io::Result<Vec<u8>> {
    let parts = plan
        .partitions
        .iter()
        .map(|p| {
            Ok(Partition {
                type_guid: guid_bytes(p.type_guid)
                    .ok_or_else(|| io::Error::other(format!("bad type GUID {}", p.type_guid)))?,
                guid: derived_guid(seed, p.name),
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                attributes: p.attributes,
                name: p.name,
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    table::entry_array(&parts)
}

/// A GPT header sector of `plan` (its sector size, zero after the 92 bytes).
pub fn header(plan: &DiskPlan, seed: &[u8], backup: bool, entries_crc: u32) -> Vec<u8> {
    let t = Table {
        sector_size: plan.sector_size,
        last_lba: plan.last_lba(),
        first_usable_lba: plan.first_usable_lba(),
        last_usable_lba: plan.last_usable_lba(),
        disk_guid: derived_guid(seed, "disk"),
    };
    table::header(&t, backup, entries_crc)
}

/// Writes the protective MBR and both GPT copies into `file` (already `plan`'s size).
pub fn write_gpt(file: &File, plan: &DiskPlan, seed: &[u8]) -> io::Result<()> {
    let last = plan.last_lba();
    let sector = plan.sector_size;
    let entries = entry_array(plan, seed)?;
    let crc = crc32fast::hash(&entries);
    file.write_all_at(&protective_mbr(last), 0)?;
    file.write_all_at(&header(plan, seed, false, crc), sector)?;
    file.write_all_at(&entries, 2 * sector)?;
    file.write_all_at(&entries, (last - entry_sectors(plan.sector_size)) * sector)?;
    file.write_all_at(&header(plan, seed, true, crc), last * sector)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factory::disk::layout::{DiskBootloader, TYPE_EFI, plan};
    use crate::factory::quirks::Quirks;

    #[test]
    fn guid_encoding() {
        let g = guid_bytes(TYPE_EFI).unwrap();
        assert_eq!(
            hex::encode(g),
            "2873 2ac1 1ff8 d211 ba4b 00a0c93ec93b".replace(' ', "")
        );
        assert!(guid_bytes("C12A7328-F81F-11D2-BA4B-00A0C93EC93").is_none());
        let d = derived_guid(b"s", "EFI");
        assert_eq!(d[7] >> 4, 4);
        assert_eq!(d[8] >> 6, 2);
        assert_ne!(d, derived_guid(b"s", "META"));
    }

    #[test]
    fn headers_and_mbr() {
        let p = plan(
            &Quirks::from_tag("v1.11.6"),
            DiskBootloader::SdBoot,
            1246,
            512,
        )
        .unwrap();
        let last = p.last_lba();
        let m = protective_mbr(last);
        assert_eq!(
            &m[446..462],
            &[
                0, 0, 2, 0, 0xee, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0xff, 0x2f, 0x46, 0
            ]
        );
        assert_eq!(&m[510..], &[0x55, 0xaa]);
        assert_eq!(
            u32::from_le_bytes(protective_mbr(1 << 40)[458..462].try_into().unwrap()),
            u32::MAX
        );
        let e = entry_array(&p, b"s").unwrap();
        assert_eq!(&e[56..62], &[b'E', 0, b'F', 0, b'I', 0]);
        assert_eq!(
            &e[128 + 56..128 + 64],
            &[b'M', 0, b'E', 0, b'T', 0, b'A', 0]
        );
        let crc = crc32fast::hash(&e);
        for backup in [false, true] {
            let h = header(&p, b"s", backup, crc);
            assert_eq!(h.len(), 512);
            let mut z = h.clone();
            z[16..20].fill(0);
            assert_eq!(crc32fast::hash(&z[..92]).to_le_bytes(), h[16..20]);
            let u = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap());
            assert_eq!(u(40), 2048);
            assert_eq!(u(48), last - 33);
            assert_eq!(u(72), if backup { last - 32 } else { 2 });
        }
    }

    /// 4096-byte sectors: 4096-byte headers, entries in 4 sectors from LBA 2, first usable
    /// 256, backup entries at `last − 4`, the PMBR's size in 4 KiB sectors; both CRCs hold.
    #[test]
    fn headers_with_4096_byte_sectors() {
        let p = plan(
            &Quirks::from_tag("v1.11.6"),
            DiskBootloader::SdBoot,
            1246,
            4096,
        )
        .unwrap();
        let last = p.last_lba();
        assert_eq!(last, 2246 * 256 - 1);
        let m = protective_mbr(last);
        assert_eq!(u32::from_le_bytes(m[458..462].try_into().unwrap()), 574975);
        let e = entry_array(&p, b"s").unwrap();
        assert_eq!(e.len(), 4 * 4096);
        let crc = crc32fast::hash(&e);
        for backup in [false, true] {
            let h = header(&p, b"s", backup, crc);
            assert_eq!(h.len(), 4096);
            assert!(h[92..].iter().all(|b| *b == 0));
            let mut z = h.clone();
            z[16..20].fill(0);
            assert_eq!(crc32fast::hash(&z[..92]).to_le_bytes(), h[16..20]);
            let u = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap());
            assert_eq!((u(24), u(32)), if backup { (last, 1) } else { (1, last) });
            assert_eq!(u(40), 256);
            assert_eq!(u(48), last - 5);
            assert_eq!(u(72), if backup { last - 4 } else { 2 });
            assert_eq!(
                u32::from_le_bytes(h[88..92].try_into().unwrap()),
                crc,
                "entries CRC"
            );
        }
        // Written out: header at byte 4096, entries at 8192, backup header in the last 4 KiB.
        let dir = tempfile::tempdir().unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("d"))
            .unwrap();
        f.set_len(p.size_bytes()).unwrap();
        write_gpt(&f, &p, b"s").unwrap();
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, 4096).unwrap();
        assert_eq!(&b, b"EFI PART");
        f.read_exact_at(&mut b, p.size_bytes() - 4096).unwrap();
        assert_eq!(&b, b"EFI PART");
        let mut first = [0u8; 32];
        f.read_exact_at(&mut first, 8192 + 32).unwrap();
        assert_eq!(u64::from_le_bytes(first[..8].try_into().unwrap()), 256);
    }
}
