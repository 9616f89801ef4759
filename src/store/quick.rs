//! A fast consistency check of the store: the index against the blob files, by `stat` only.
//!
//! [`Store::verify_all`] re-hashes every blob (minutes on a large store); this compares each
//! index record with its file's presence and size, counts files the index does not know and
//! blobs in quarantine, in the time a directory listing takes. `bootfactory doctor` shows it;
//! a clean result says nothing about content, which only a re-hash (`store verify`) checks.

use std::fs;

use serde::Serialize;

use super::error::io_ctx;
use super::{Digest, Result, Store};

/// Most digests listed per problem kind (the counts are always complete).
const MAX_LISTED: usize = 20;

/// What [`Store::quick_check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuickCheck {
    /// Blob records in the index.
    pub records: u64,
    /// Sum of the sizes the index records.
    pub indexed_bytes: u64,
    /// The store's running total (kept with the records; differs from `indexed_bytes` only
    /// when the index is inconsistent).
    pub total_size: u64,
    /// Records whose file is missing.
    pub missing: u64,
    /// Records whose file has another size than recorded.
    pub size_mismatch: u64,
    /// Up to 20 digests of missing or mis-sized blobs.
    pub problems: Vec<Digest>,
    /// Files under `blobs/sha256/` without an index record (left by a lost index or a
    /// crash; `store verify --rebuild-index` adopts them, `store gc` does not see them).
    pub unindexed_files: u64,
    /// Files in `quarantine/` (blobs whose content stopped matching).
    pub quarantined: u64,
}

impl QuickCheck {
    /// True when every record has its file with the recorded size.
    pub fn consistent(&self) -> bool {
        self.missing == 0 && self.size_mismatch == 0 && self.indexed_bytes == self.total_size
    }
}

impl Store {
    /// Compares the index with the blob files by `stat` (see the module docs). Reads only.
    pub fn quick_check(&self) -> Result<QuickCheck> {
        let inner = &self.inner;
        let mut out = QuickCheck {
            total_size: inner.total_size()?,
            ..QuickCheck::default()
        };
        let records = inner.records()?;
        let mut known = std::collections::HashSet::with_capacity(records.len());
        for (digest, rec) in records {
            out.records += 1;
            out.indexed_bytes = out.indexed_bytes.saturating_add(rec.size);
            known.insert(digest.hex());
            let path = inner.blob_file(&digest);
            let problem = match fs::metadata(&path) {
                Ok(m) if m.len() == rec.size => false,
                Ok(_) => {
                    out.size_mismatch += 1;
                    true
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    out.missing += 1;
                    true
                }
                Err(e) => return Err(io_ctx("stat", &path, e)),
            };
            if problem && out.problems.len() < MAX_LISTED {
                out.problems.push(digest);
            }
        }
        for entry in
            fs::read_dir(&inner.blobs_dir).map_err(|e| io_ctx("read dir", &inner.blobs_dir, e))?
        {
            let entry = entry.map_err(|e| io_ctx("read dir", &inner.blobs_dir, e))?;
            if !known.contains(entry.file_name().to_string_lossy().as_ref()) {
                out.unindexed_files += 1;
            }
        }
        out.quarantined = fs::read_dir(&inner.quarantine_dir)
            .map_err(|e| io_ctx("read dir", &inner.quarantine_dir, e))?
            .count() as u64;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index whose sizes add up past `u64::MAX` (a corrupt or hostile index) is reported,
    /// not a panic: the sum saturates like the store's own running total.
    #[tokio::test]
    async fn sizes_past_u64_max_saturate_and_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.put_bytes(b"one").await.unwrap();
        let b = store.put_bytes(b"two").await.unwrap();
        for d in [a, b] {
            let (_, mut rec) = store
                .inner
                .records()
                .unwrap()
                .into_iter()
                .find(|(x, _)| *x == d)
                .unwrap();
            rec.size = u64::MAX - 1;
            store
                .inner
                .blobs
                .insert(d.as_bytes(), serde_json::to_vec(&rec).unwrap())
                .unwrap();
        }
        let q = store.quick_check().unwrap();
        assert_eq!(q.records, 2);
        assert_eq!(q.indexed_bytes, u64::MAX);
        assert_eq!(q.size_mismatch, 2);
        assert!(!q.consistent());
    }
}
