//! The sled-backed index: blob records, the total-size counter, refs, pins
//! and parent/child edges.
//!
//! Trees (all prefixed `store/` so other modules can keep their own trees in
//! the same database):
//!
//! | tree             | key                    | value                         |
//! |------------------|------------------------|-------------------------------|
//! | `store/blobs`    | 32 digest bytes        | JSON [`BlobRecord`]           |
//! | `store/refs`     | `kind/key` (UTF-8)     | 32 digest bytes               |
//! | `store/pins`     | 32 digest bytes        | empty                         |
//! | `store/children` | 32 parent digest bytes | concatenated 32-byte digests  |
//! | `store/meta`     | `total_size`           | u64 big-endian                |

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::Inner;
use super::digest::Digest;
use super::error::{Result, StoreError};

pub(crate) const BLOBS_TREE: &str = "store/blobs";
pub(crate) const REFS_TREE: &str = "store/refs";
pub(crate) const PINS_TREE: &str = "store/pins";
pub(crate) const CHILDREN_TREE: &str = "store/children";
pub(crate) const META_TREE: &str = "store/meta";
const TOTAL_SIZE_KEY: &[u8] = b"total_size";

/// Identity of a blob file at the moment it was last known to be good.
///
/// Any write to a file changes its ctime (and usually its mtime and size),
/// and replacing the file changes its inode, so a matching stamp means the
/// file has not been touched since it was hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileStamp {
    pub(crate) size: u64,
    pub(crate) ino: u64,
    pub(crate) mtime_ns: i64,
    pub(crate) ctime_ns: i64,
}

impl FileStamp {
    /// The stamp of the file described by `m`.
    pub(crate) fn of(m: &Metadata) -> FileStamp {
        FileStamp {
            size: m.size(),
            ino: m.ino(),
            mtime_ns: m
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
            ctime_ns: m
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.ctime_nsec()),
        }
    }
}

/// What the index knows about one stored blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BlobRecord {
    /// Content length in bytes.
    pub(crate) size: u64,
    /// When the blob was first stored (unix seconds).
    pub(crate) created: u64,
    /// When the blob was last put (unix milliseconds); GC grace is measured
    /// from here so that re-putting an old blob protects it again.
    pub(crate) touched_ms: u64,
    /// The file's identity when its content was last verified.
    pub(crate) stamp: FileStamp,
}

/// Current time as milliseconds since the unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn decode_record(v: &[u8]) -> Result<BlobRecord> {
    serde_json::from_slice(v).map_err(|e| StoreError::Index(format!("bad blob record: {e}")))
}

fn encode_record(r: &BlobRecord) -> Vec<u8> {
    // Serialising a plain struct of integers cannot fail.
    serde_json::to_vec(r).expect("blob record serialises")
}

pub(crate) fn decode_digest(v: &[u8]) -> Result<Digest> {
    let bytes: [u8; 32] = v
        .try_into()
        .map_err(|_| StoreError::Index(format!("bad digest value of {} bytes", v.len())))?;
    Ok(Digest::from_bytes(bytes))
}

pub(crate) fn decode_digest_list(v: &[u8]) -> Result<Vec<Digest>> {
    if !v.len().is_multiple_of(32) {
        return Err(StoreError::Index(format!(
            "bad digest list of {} bytes",
            v.len()
        )));
    }
    v.chunks_exact(32).map(decode_digest).collect()
}

fn read_total(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Db(e),
    }
}

/// Checks a ref kind and key and builds the `kind/key` tree key.
pub(crate) fn ref_key(kind: &str, key: &str) -> Result<Vec<u8>> {
    if kind.is_empty() {
        return Err(StoreError::InvalidRef("ref kind is empty".into()));
    }
    if kind.contains('/') || kind.contains('\0') {
        return Err(StoreError::InvalidRef(format!(
            "ref kind {kind:?} must not contain '/' or NUL"
        )));
    }
    if key.is_empty() {
        return Err(StoreError::InvalidRef(format!(
            "empty key for ref kind {kind:?}"
        )));
    }
    if key.contains('\0') {
        return Err(StoreError::InvalidRef(format!(
            "ref key {key:?} must not contain NUL"
        )));
    }
    let mut k = Vec::with_capacity(kind.len() + 1 + key.len());
    k.extend_from_slice(kind.as_bytes());
    k.push(b'/');
    k.extend_from_slice(key.as_bytes());
    Ok(k)
}

impl Inner {
    /// The index record for `d`, if any.
    pub(crate) fn record(&self, d: &Digest) -> Result<Option<BlobRecord>> {
        match self.blobs.get(d.as_bytes())? {
            Some(v) => decode_record(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Inserts or replaces the record for `d`, adjusting the total size
    /// counter in the same transaction. The caller holds the digest's stripe
    /// lock.
    pub(crate) fn write_record(&self, d: &Digest, rec: &BlobRecord) -> Result<()> {
        let value = encode_record(rec);
        (&self.blobs, &self.meta)
            .transaction(|(blobs, meta)| -> sled::transaction::ConflictableTransactionResult<(), StoreError> {
                let old = blobs.insert(&d.as_bytes()[..], value.as_slice())?;
                let old_size = old
                    .map(|v| decode_record(&v).map(|r| r.size))
                    .transpose()
                    .map_err(ConflictableTransactionError::Abort)?
                    .unwrap_or(0);
                let total = read_total(meta.get(TOTAL_SIZE_KEY)?)
                    .saturating_sub(old_size)
                    .saturating_add(rec.size);
                meta.insert(TOTAL_SIZE_KEY, &total.to_be_bytes()[..])?;
                Ok(())
            })
            .map_err(tx_err)
    }

    /// Removes the record for `d` (if any), adjusting the total size counter
    /// in the same transaction. The caller holds the digest's stripe lock.
    pub(crate) fn remove_record(&self, d: &Digest) -> Result<Option<BlobRecord>> {
        (&self.blobs, &self.meta)
            .transaction(
                |(blobs, meta)| -> sled::transaction::ConflictableTransactionResult<
                    Option<BlobRecord>,
                    StoreError,
                > {
                    let Some(old) = blobs.remove(&d.as_bytes()[..])? else {
                        return Ok(None);
                    };
                    // An undecodable record is still removed; it just cannot
                    // contribute to the counter.
                    let old = decode_record(&old).ok();
                    let size = old.as_ref().map_or(0, |r| r.size);
                    let total = read_total(meta.get(TOTAL_SIZE_KEY)?).saturating_sub(size);
                    meta.insert(TOTAL_SIZE_KEY, &total.to_be_bytes()[..])?;
                    Ok(old)
                },
            )
            .map_err(tx_err)
    }

    /// The value of the total size counter.
    pub(crate) fn total_size(&self) -> Result<u64> {
        Ok(read_total(self.meta.get(TOTAL_SIZE_KEY)?))
    }

    /// All blob records, ordered by digest bytes.
    pub(crate) fn records(&self) -> Result<Vec<(Digest, BlobRecord)>> {
        self.blobs
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((decode_digest(&k)?, decode_record(&v)?))
            })
            .collect()
    }
}
