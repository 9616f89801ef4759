//! The store's identity, and rebuilding a lost index from the blob files.
//!
//! Everything that names content — schematics, refs, image tags, asset signatures — lives in
//! `index.sled`; the blob files alone are anonymous. Deleting or replacing `index.sled` under
//! a store would make a restarted server start with an empty index and silently forget every
//! schematic and image. So a store has an identity: 16 random bytes written both to
//! `<dir>/store-id` and into the index (`store/meta`, key `store-id`). [`check`] runs at every
//! open and refuses a store whose index is missing, empty or belongs to another store, naming
//! the way out: `bootfactory store verify --rebuild-index`, which re-hashes every blob file
//! into a fresh index ([`Store::rebuild_index`]) and lets the owning modules recover what the
//! content allows (schematic refs: a schematic blob's digest *is* its ID).

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::blob::hash_reader;
use super::error::{StoreError, io_ctx};
use super::index::{BlobRecord, FileStamp, now_ms};
use super::{Digest, Inner, Result, Store, sync_dir};

/// Name of the identity file in the data directory.
pub(crate) const ID_FILE: &str = "store-id";
/// Key of the identity in the `store/meta` tree.
const ID_KEY: &[u8] = b"store-id";

/// What the identity check found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexProblem {
    /// `index.sled` was deleted (or recreated empty) while blobs remain.
    Missing {
        /// Blob files present.
        blobs: usize,
    },
    /// `index.sled` belongs to another store.
    Replaced,
}

impl std::fmt::Display for IndexProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexProblem::Missing { blobs } => write!(
                f,
                "index.sled is missing or was recreated, but {blobs} blob files are present"
            ),
            IndexProblem::Replaced => write!(f, "index.sled belongs to another store"),
        }
    }
}

fn count_blob_files(blobs_dir: &Path) -> Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir(blobs_dir).map_err(|e| io_ctx("read dir", blobs_dir, e))? {
        let entry = entry.map_err(|e| io_ctx("read dir", blobs_dir, e))?;
        if entry.file_name().to_str().is_some_and(|s| s.len() == 64) {
            n += 1;
        }
    }
    Ok(n)
}

fn write_id_file(dir: &Path, id: &[u8]) -> Result<()> {
    let path = dir.join(ID_FILE);
    let tmp = dir.join(format!("{ID_FILE}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(|e| io_ctx("create", &tmp, e))?;
    f.write_all(hex::encode(id).as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.sync_all())
        .map_err(|e| io_ctx("write", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| io_ctx("rename", &path, e))?;
    sync_dir(dir)
}

fn read_id_file(dir: &Path) -> Result<Option<Vec<u8>>> {
    let path = dir.join(ID_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(hex::decode(s.trim()).ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_ctx("read", &path, e)),
    }
}

/// The identity in `<dir>/store-id` as hex, without opening the store (a command checks
/// that a server it talks to serves the data directory it was pointed at).
pub fn read_hex(dir: &Path) -> Option<String> {
    read_id_file(dir).ok().flatten().map(hex::encode)
}

/// Checks that the index belongs to the blobs beside it; gives a new store its identity.
/// `index_existed`: whether `index.sled` was there before sled opened (and maybe created) it.
pub(crate) fn check(inner: &Inner, index_existed: bool) -> Result<()> {
    let in_file = read_id_file(&inner.dir)?;
    let in_index = inner.meta.get(ID_KEY)?.map(|v| v.to_vec());
    match (in_file, in_index) {
        (Some(f), Some(i)) if f == i => Ok(()),
        (Some(_), Some(_)) => Err(StoreError::IndexProblem(IndexProblem::Replaced)),
        (Some(_), None) => Err(StoreError::IndexProblem(IndexProblem::Missing {
            blobs: count_blob_files(&inner.blobs_dir)?,
        })),
        // The identity file was lost; the index is ours (it has an identity).
        (None, Some(i)) => write_id_file(&inner.dir, &i),
        (None, None) => {
            // A store from before identities, or a new one: a new index beside existing
            // blob files is a lost index, not a new store.
            let blobs = count_blob_files(&inner.blobs_dir)?;
            if !index_existed && blobs > 0 {
                return Err(StoreError::IndexProblem(IndexProblem::Missing { blobs }));
            }
            assign_identity(inner)
        }
    }
}

/// Writes a fresh identity: index first (flushed), then the file, so a crash in between
/// leaves `(None, Some)`, which [`check`] repairs.
fn assign_identity(inner: &Inner) -> Result<()> {
    let id: [u8; 16] = rand::random();
    inner.meta.insert(ID_KEY, &id)?;
    inner.db.flush()?;
    write_id_file(&inner.dir, &id)
}

/// What [`Store::rebuild_index`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// Blob files whose content matched their name: indexed.
    pub indexed: usize,
    /// Of those, how many the index did not know.
    pub added: usize,
    /// Bytes hashed.
    pub bytes: u64,
    /// Files whose content did not match their name: quarantined.
    pub quarantined: Vec<String>,
    /// Files that are not blobs (bad names): left alone.
    pub ignored: Vec<String>,
}

impl Store {
    /// Re-hashes every file under `blobs/` into the index (records for good blobs, quarantine
    /// for bad ones) and gives the index this store's identity. Refs cannot be recovered here:
    /// the owning modules recover what content allows afterwards. Blocking; run it while no
    /// server uses the directory (the database lock guarantees that).
    pub fn rebuild_index(&self) -> Result<RebuildReport> {
        let inner = &self.inner;
        let mut report = RebuildReport::default();
        let mut names: Vec<_> = fs::read_dir(&inner.blobs_dir)
            .map_err(|e| io_ctx("read dir", &inner.blobs_dir, e))?
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| io_ctx("read dir", &inner.blobs_dir, e))?;
        names.sort_by_key(|e| e.file_name());
        for entry in names {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let Ok(digest) = Digest::from_hex(&name) else {
                report.ignored.push(name);
                continue;
            };
            let meta = fs::symlink_metadata(&path).map_err(|e| io_ctx("stat", &path, e))?;
            if !meta.is_file() {
                report.ignored.push(name);
                continue;
            }
            let file = fs::File::open(&path).map_err(|e| io_ctx("open", &path, e))?;
            let (actual, size) = hash_reader(file).map_err(|e| io_ctx("read", &path, e))?;
            report.bytes += size;
            if actual != digest {
                let q = inner
                    .quarantine_dir
                    .join(format!("{name}.rebuild-{}", now_ms()));
                fs::rename(&path, &q).map_err(|e| io_ctx("quarantine", &path, e))?;
                tracing::warn!(file = %name, %actual, "blob content does not match its name; quarantined");
                report.quarantined.push(name);
                continue;
            }
            let m = fs::metadata(&path).map_err(|e| io_ctx("stat", &path, e))?;
            let existing = inner.record(&digest)?;
            let now = now_ms();
            let rec = BlobRecord {
                size,
                created: existing
                    .as_ref()
                    .map_or(m.modified().ok().map_or(now / 1000, unix_secs), |r| {
                        r.created
                    }),
                touched_ms: now,
                stamp: FileStamp::of(&m),
            };
            if existing.is_none() {
                report.added += 1;
            }
            inner.write_record(&digest, &rec)?;
            report.indexed += 1;
        }
        let id = match read_id_file(&inner.dir)? {
            Some(id) => id,
            None => rand::random::<[u8; 16]>().to_vec(),
        };
        inner.meta.insert(ID_KEY, id.as_slice())?;
        inner.db.flush()?;
        write_id_file(&inner.dir, &id)?;
        Ok(report)
    }
}

fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
