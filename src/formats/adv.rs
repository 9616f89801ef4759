//! The Talos ADV ("talos" format) that fills the META partition: two identical 256 KiB
//! blocks, each `magic1 | TLV… | zeros | sha256 | magic2`, big-endian (`docs/formats.md`
//! §META partition).

use sha2::{Digest as _, Sha256};

/// One ADV block.
pub const BLOCK: usize = 256 * 1024;
/// The META partition (both blocks, zeros, the legacy tail left zero).
pub const PARTITION: usize = 1024 * 1024;
const MAGIC1: u32 = 0x5a4b_3c2d;
const MAGIC2: u32 = 0xa5b4_c3d2;
const CHECKSUM_AT: usize = BLOCK - 36;
/// Bytes the tags may take in total (`8 + len` each).
pub const CAPACITY: usize = BLOCK - 40;

/// Why values do not fit or a block does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvError {
    /// The tags need more than [`CAPACITY`] bytes.
    #[error("META values take {0} bytes, more than the {CAPACITY} an ADV block holds")]
    TooLarge(usize),
    /// Tag 0 ends the list and cannot carry a value.
    #[error("META key 0 is the end marker and cannot hold a value")]
    EndTag,
    /// Neither copy has both magics and a matching checksum.
    #[error("no valid ADV copy")]
    Invalid,
}

/// One 256 KiB block holding `values` in the given order.
pub fn encode_block(values: &[(u8, &[u8])]) -> Result<Vec<u8>, AdvError> {
    let used: usize = values.iter().map(|(_, v)| 8 + v.len()).sum();
    if used > CAPACITY {
        return Err(AdvError::TooLarge(used));
    }
    let mut b = vec![0u8; BLOCK];
    b[..4].copy_from_slice(&MAGIC1.to_be_bytes());
    let mut at = 4;
    for (tag, value) in values {
        if *tag == 0 {
            return Err(AdvError::EndTag);
        }
        b[at..at + 4].copy_from_slice(&u32::from(*tag).to_be_bytes());
        b[at + 4..at + 8].copy_from_slice(&(value.len() as u32).to_be_bytes());
        b[at + 8..at + 8 + value.len()].copy_from_slice(value);
        at += 8 + value.len();
    }
    b[BLOCK - 4..].copy_from_slice(&MAGIC2.to_be_bytes());
    let sum = Sha256::digest(&b);
    b[CHECKSUM_AT..CHECKSUM_AT + 32].copy_from_slice(&sum);
    Ok(b)
}

/// The first 512 KiB of a META partition: two copies of the block (the rest stays zero).
pub fn encode_copies(values: &[(u8, &[u8])]) -> Result<Vec<u8>, AdvError> {
    let block = encode_block(values)?;
    let mut out = Vec::with_capacity(2 * BLOCK);
    out.extend_from_slice(&block);
    out.extend_from_slice(&block);
    Ok(out)
}

/// Parses one block: magics, checksum, then TLVs until tag 0 or fewer than 8 bytes remain.
pub fn decode_block(b: &[u8]) -> Result<Vec<(u32, Vec<u8>)>, AdvError> {
    if b.len() != BLOCK || b[..4] != MAGIC1.to_be_bytes() || b[BLOCK - 4..] != MAGIC2.to_be_bytes()
    {
        return Err(AdvError::Invalid);
    }
    let mut copy = b.to_vec();
    copy[CHECKSUM_AT..CHECKSUM_AT + 32].fill(0);
    if Sha256::digest(&copy)[..] != b[CHECKSUM_AT..CHECKSUM_AT + 32] {
        return Err(AdvError::Invalid);
    }
    let end = CHECKSUM_AT;
    let mut at = 4;
    let mut out = Vec::new();
    while at + 8 <= end {
        let tag = u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        if tag == 0 {
            break;
        }
        let len = u32::from_be_bytes([b[at + 4], b[at + 5], b[at + 6], b[at + 7]]) as usize;
        let Some(value) = b.get(at + 8..at + 8 + len).filter(|_| at + 8 + len <= end) else {
            return Err(AdvError::Invalid);
        };
        out.push((tag, value.to_vec()));
        at += 8 + len;
    }
    Ok(out)
}

/// Reads a META partition as Talos does: copy 1, else copy 2, else empty.
pub fn decode_partition(p: &[u8]) -> Vec<(u32, Vec<u8>)> {
    for copy in [p.get(..BLOCK), p.get(BLOCK..2 * BLOCK)]
        .into_iter()
        .flatten()
    {
        if let Ok(v) = decode_block(copy) {
            return v;
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let b = encode_block(&[(0x0a, b"addresses: []"), (0x0c, b"x")]).unwrap();
        assert_eq!(&b[..4], &[0x5a, 0x4b, 0x3c, 0x2d]);
        assert_eq!(&b[4..12], &[0, 0, 0, 0x0a, 0, 0, 0, 13]);
        assert_eq!(&b[BLOCK - 4..], &[0xa5, 0xb4, 0xc3, 0xd2]);
        assert_eq!(
            decode_block(&b).unwrap(),
            vec![(0x0a, b"addresses: []".to_vec()), (0x0c, b"x".to_vec())]
        );
        let p = encode_copies(&[(0x0c, b"v")]).unwrap();
        assert_eq!(p.len(), 2 * BLOCK);
        assert_eq!(p[..BLOCK], p[BLOCK..]);
    }

    #[test]
    fn checksum_is_checked_and_copy_two_used() {
        let mut p = encode_copies(&[(0x0c, b"v")]).unwrap();
        p.resize(PARTITION, 0);
        p[100] ^= 1;
        assert_eq!(decode_block(&p[..BLOCK]), Err(AdvError::Invalid));
        assert_eq!(decode_partition(&p), vec![(0x0c, b"v".to_vec())]);
        p[BLOCK + 100] ^= 1;
        assert!(decode_partition(&p).is_empty());
        assert!(decode_partition(&vec![0u8; PARTITION]).is_empty());
    }

    #[test]
    fn capacity_limit() {
        let big = vec![b'a'; CAPACITY - 8];
        assert!(encode_block(&[(0x0c, &big)]).is_ok());
        let bigger = vec![b'a'; CAPACITY - 7];
        assert_eq!(
            encode_block(&[(0x0c, &bigger)]),
            Err(AdvError::TooLarge(CAPACITY + 1))
        );
        assert_eq!(encode_block(&[(0, b"x")]), Err(AdvError::EndTag));
    }
}
