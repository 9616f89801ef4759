//! Fixed VHD (Microsoft Virtual Hard Disk, "vpc"): the raw disk followed by a 512-byte footer,
//! as `qemu-img convert -O vpc -o subformat=fixed,force_size` writes it (upstream's Azure
//! images). Field by field: `docs/formats.md`, "Disk image formats".

use sha2::{Digest, Sha256};

/// Footer length; also the sector size the disk is padded to.
pub const FOOTER_LEN: usize = 512;

/// Seconds from the Unix epoch to the VHD epoch (2000-01-01T00:00:00Z).
pub const VHD_EPOCH: u64 = 946_684_800;

/// What a footer says besides the size. The default: timestamp 0, UUID from the content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VhdOptions {
    /// Creation time in seconds since the VHD epoch. qemu writes the current time; the default
    /// 0 keeps images reproducible.
    pub timestamp: u32,
    /// The disk's unique ID. `None`: derived from the disk's content ([`ContentDigest`]), so the
    /// same bytes give the same ID. qemu writes a random one.
    pub uuid: Option<[u8; 16]>,
}

/// The disk size a raw image of `raw_size` bytes has in a VHD: rounded up to whole sectors
/// (the padding is zeros), as qemu-img rounds it.
pub fn disk_size(raw_size: u64) -> Option<u64> {
    raw_size.checked_next_multiple_of(FOOTER_LEN as u64)
}

/// The footer of a fixed VHD whose disk (the bytes before the footer) is `disk_size` bytes, a
/// multiple of 512.
pub fn footer(disk_size: u64, timestamp: u32, uuid: [u8; 16]) -> [u8; FOOTER_LEN] {
    let mut f = [0u8; FOOTER_LEN];
    f[0..8].copy_from_slice(b"conectix");
    // Features: "reserved", always set.
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    // File format version 1.0.
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    // Data offset: none for a fixed disk.
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    f[24..28].copy_from_slice(&timestamp.to_be_bytes());
    // Creator application: qemu writes "qem2" when force_size is set (the size field is
    // authoritative, not the geometry), "qemu" otherwise.
    f[28..32].copy_from_slice(b"qem2");
    // Creator version 5.3 (Virtual PC 2007) and host OS "Wi2k", as qemu writes them.
    f[32..36].copy_from_slice(&0x0005_0003u32.to_be_bytes());
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&disk_size.to_be_bytes());
    f[48..56].copy_from_slice(&disk_size.to_be_bytes());
    // Geometry: with force_size qemu writes the maximum CHS (65535/16/255) and keeps the
    // exact size instead of rounding it down to a geometry.
    f[56..58].copy_from_slice(&0xFFFFu16.to_be_bytes());
    f[58] = 16;
    f[59] = 255;
    // Disk type 2: fixed.
    f[60..64].copy_from_slice(&2u32.to_be_bytes());
    f[68..84].copy_from_slice(&uuid);
    // Saved state (84) and the reserved rest stay 0; the checksum covers all of it.
    let sum = checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The footer checksum: the ones' complement of the byte sum, checksum field taken as zero.
pub fn checksum(footer: &[u8; FOOTER_LEN]) -> u32 {
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, &b)| s.wrapping_add(u32::from(b)));
    !sum
}

/// Block size of [`ContentDigest`].
const DIGEST_BLOCK: usize = 4096;

/// A digest of a disk's content that does not depend on how it is stored: SHA-256 over the
/// index and bytes of every 4 KiB block that is not all zeros, then the size. Holes cost
/// nothing; data blocks of zeros count as holes.
#[derive(Debug, Clone)]
pub struct ContentDigest {
    hasher: Sha256,
    pos: u64,
    partial: Vec<u8>,
}

impl Default for ContentDigest {
    fn default() -> ContentDigest {
        ContentDigest {
            hasher: Sha256::new(),
            pos: 0,
            partial: Vec::with_capacity(DIGEST_BLOCK),
        }
    }
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a | x) == 0
}

impl ContentDigest {
    fn block(&mut self, index: u64, block: &[u8]) {
        if !is_zero(block) {
            self.hasher.update(index.to_le_bytes());
            self.hasher.update(block);
        }
    }

    fn flush_partial(&mut self) {
        if self.partial.len() == DIGEST_BLOCK {
            let index = (self.pos - DIGEST_BLOCK as u64) / DIGEST_BLOCK as u64;
            let block = std::mem::take(&mut self.partial);
            self.block(index, &block);
            self.partial = block;
            self.partial.clear();
        }
    }

    /// Adds bytes at the current position.
    pub fn data(&mut self, mut d: &[u8]) {
        if !self.partial.is_empty() {
            let k = d.len().min(DIGEST_BLOCK - self.partial.len());
            self.partial.extend_from_slice(&d[..k]);
            self.pos += k as u64;
            d = &d[k..];
            self.flush_partial();
        }
        while d.len() >= DIGEST_BLOCK {
            let index = self.pos / DIGEST_BLOCK as u64;
            self.block(index, &d[..DIGEST_BLOCK]);
            self.pos += DIGEST_BLOCK as u64;
            d = &d[DIGEST_BLOCK..];
        }
        self.partial.extend_from_slice(d);
        self.pos += d.len() as u64;
    }

    /// Adds `n` zero bytes at the current position.
    pub fn zeros(&mut self, mut n: u64) {
        if !self.partial.is_empty() {
            let k = n.min((DIGEST_BLOCK - self.partial.len()) as u64) as usize;
            self.partial.resize(self.partial.len() + k, 0);
            self.pos += k as u64;
            n -= k as u64;
            self.flush_partial();
            if !self.partial.is_empty() {
                // `n` ran out inside the block.
                return;
            }
        }
        let whole = n / DIGEST_BLOCK as u64 * DIGEST_BLOCK as u64;
        self.pos += whole;
        let rest = (n - whole) as usize;
        self.partial.resize(rest, 0);
        self.pos += rest as u64;
    }

    /// The digest of what was added.
    pub fn finish(mut self) -> [u8; 32] {
        if !self.partial.is_empty() {
            let index = self.pos / DIGEST_BLOCK as u64;
            let block = std::mem::take(&mut self.partial);
            self.block(index, &block);
        }
        self.hasher.update(self.pos.to_le_bytes());
        self.hasher.finalize().into()
    }

    /// A UUID made from the digest: its first 16 bytes with the version set to 8 (RFC 9562
    /// "custom") and the RFC variant.
    pub fn finish_uuid(self) -> [u8; 16] {
        let d = self.finish();
        let mut u: [u8; 16] = d[..16].try_into().expect("16 of 32 bytes");
        u[6] = (u[6] & 0x0F) | 0x80;
        u[8] = (u[8] & 0x3F) | 0x80;
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_fields_and_checksum() {
        let f = footer(10 << 20, 0x32a8_d7d7, [7u8; 16]);
        assert_eq!(&f[0..8], b"conectix");
        assert_eq!(&f[16..24], &[0xFF; 8]);
        assert_eq!(&f[28..32], b"qem2");
        assert_eq!(u64::from_be_bytes(f[48..56].try_into().unwrap()), 10 << 20);
        assert_eq!(&f[56..60], &[0xFF, 0xFF, 16, 0xFF]);
        assert_eq!(checksum(&f).to_be_bytes(), f[64..68]);
        // The sum of all bytes with the checksum's ones' complement added is all ones.
        let mut g = f;
        g[70] ^= 1;
        assert_ne!(checksum(&g).to_be_bytes(), g[64..68]);
    }

    #[test]
    fn footer_matches_qemu_img_apart_from_time_and_uuid() {
        // `qemu-img convert -f raw -O vpc -o subformat=fixed,force_size` (qemu 7.2) of a
        // 10,000,000-byte raw file: disk padded to 10,000,384, footer head as below.
        assert_eq!(disk_size(10_000_000), Some(10_000_384));
        let f = footer(10_000_384, 0x32a8_d7d7, [0; 16]);
        let qemu: [u8; 64] = [
            0x63, 0x6f, 0x6e, 0x65, 0x63, 0x74, 0x69, 0x78, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01,
            0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x32, 0xa8, 0xd7, 0xd7,
            0x71, 0x65, 0x6d, 0x32, 0x00, 0x05, 0x00, 0x03, 0x57, 0x69, 0x32, 0x6b, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x98, 0x98, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x98, 0x98, 0x00,
            0xff, 0xff, 0x10, 0xff, 0x00, 0x00, 0x00, 0x02,
        ];
        assert_eq!(f[..64], qemu);
        assert!(f[84..].iter().all(|&b| b == 0));
    }

    #[test]
    fn content_digest_ignores_the_storage_layout() {
        let mut data = vec![0u8; 3 * DIGEST_BLOCK + 100];
        data[5000] = 1;
        data[3 * DIGEST_BLOCK + 50] = 9;
        let mut a = ContentDigest::default();
        a.data(&data);
        let mut b = ContentDigest::default();
        b.zeros(4000);
        b.data(&data[4000..5001]);
        b.zeros((3 * DIGEST_BLOCK - 5001) as u64);
        b.data(&data[3 * DIGEST_BLOCK..]);
        assert_eq!(a.clone().finish(), b.finish());
        let mut c = ContentDigest::default();
        c.data(&data[..data.len() - 1]);
        c.zeros(1);
        assert_eq!(a.clone().finish(), c.finish());
        let mut d = ContentDigest::default();
        d.data(&data);
        d.zeros(1);
        assert_ne!(a.clone().finish(), d.finish());
        let u = a.finish_uuid();
        assert_eq!(u[6] >> 4, 8);
        assert_eq!(u[8] >> 6, 2);
    }
}
