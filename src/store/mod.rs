//! Content-addressed store.
//!
//! Blobs are identified by their SHA-256 [`Digest`] and live in a data
//! directory:
//!
//! ```text
//! <dir>/blobs/sha256/<64 hex>   blob content (immutable once renamed in)
//! <dir>/tmp/                    in-progress writes; emptied by Store::open
//! <dir>/quarantine/             blobs whose content stopped matching
//! <dir>/index.sled              sled database: blob records, refs, pins,
//!                               children (and other modules' own trees)
//! <dir>/store-id                the store's identity, also kept in the index
//!                               (see `identity`: a lost index is detected)
//! ```
//!
//! Writes go to a random temp file while being hashed, are fsynced, checked,
//! renamed into place (the directory is fsynced too) and only then recorded
//! in the index. Each record remembers the file's (size, inode, mtime, ctime)
//! at the time it was last hashed; reads compare that stamp with a fresh
//! `stat` and re-hash only when it differs, so tampered or rewritten blobs
//! are detected without hashing on every read. A blob whose content no longer
//! matches is moved to `quarantine/`, dropped from the index and never served.
//!
//! Garbage collection keeps every blob that is pinned, named by a ref, a
//! (transitive) child of a kept blob (see [`Store::set_children`]) or younger
//! than the grace period; everything else is deleted.

mod blob;
mod digest;
mod error;
mod gc;
mod identity;
mod index;
mod ingest;
mod quick;
mod quota;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use serde::Serialize;

pub use blob::{Blob, BlobIdentity, BlobWriter, CorruptBlob, VerifyReport};
pub use digest::{ALGORITHM, Digest, ParseDigestError};
pub use error::{Result, StoreError, caused_by_no_space, is_no_space};
pub use gc::{BlobFacts, GcReport, RefEntry, StoreSnapshot};
pub use identity::{IndexProblem, RebuildReport, read_hex as read_identity};
pub use ingest::Ingest;
pub use quick::QuickCheck;
pub use quota::Quota;

use error::{io_ctx, join_err};
use index::{decode_digest, decode_digest_list, ref_key};

/// Number of lock stripes serialising index/file updates per digest.
const STRIPES: usize = 64;

/// Public information about one stored blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobInfo {
    /// The blob's digest.
    pub digest: Digest,
    /// Content length in bytes.
    pub size: u64,
    /// When the blob was first stored, in unix seconds.
    pub created: u64,
    /// Whether the blob is pinned (never garbage collected).
    pub pinned: bool,
}

/// A handle to the content-addressed store. Cheap to clone; all clones share
/// one database and directory.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Shared state behind [`Store`].
pub(crate) struct Inner {
    dir: PathBuf,
    blobs_dir: PathBuf,
    tmp_dir: PathBuf,
    quarantine_dir: PathBuf,
    db: sled::Db,
    blobs: sled::Tree,
    refs: sled::Tree,
    pins: sled::Tree,
    children: sled::Tree,
    meta: sled::Tree,
    /// Serialises everything that changes a digest's file or record.
    stripes: Box<[Mutex<()>]>,
    /// Limits on what the store may hold.
    quota: quota::QuotaState,
    /// Shared by operations that can make a blob live (commits, refs, pins,
    /// children); exclusive while GC decides what to delete.
    gc_lock: RwLock<()>,
}

impl Inner {
    /// Locks the stripe that serialises file/record changes of `d`.
    fn stripe(&self, d: &Digest) -> MutexGuard<'_, ()> {
        let i = usize::from(d.as_bytes()[0]) % self.stripes.len();
        self.stripes[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shared GC lock: held by operations that make blobs live.
    fn gc_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.gc_lock.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the content of `d` lives.
    fn blob_file(&self, d: &Digest) -> PathBuf {
        self.blobs_dir.join(d.hex())
    }

    /// A failed database write: [`StoreError::NoSpace`] when sled ran out of
    /// space, [`StoreError::Db`] otherwise.
    fn db_write_err(&self, e: sled::Error) -> StoreError {
        match e {
            sled::Error::Io(io) if error::is_no_space(&io) => {
                StoreError::from_write(&self.dir, "write index", &self.dir.join("index.sled"), io)
            }
            e => StoreError::Db(e),
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// Empties `tmp/`: at open time nothing can legitimately be in progress
/// (sled holds an exclusive lock on the database for the owning process).
fn clean_tmp(tmp_dir: &Path) -> Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(tmp_dir).map_err(|e| io_ctx("read dir", tmp_dir, e))? {
        let entry = entry.map_err(|e| io_ctx("read dir", tmp_dir, e))?;
        let path = entry.path();
        let res = match entry.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        match res {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_ctx("remove stale temp file", &path, e)),
        }
    }
    Ok(removed)
}

/// Sets `path`'s permission bits to `mode` unless they are already no wider.
fn restrict(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(path).map_err(|e| io_ctx("stat", path, e))?;
    if meta.permissions().mode() & 0o777 & !mode != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| io_ctx("chmod", path, e))?;
    }
    Ok(())
}

/// sled creates its files with the process umask: directory 0700, files 0600.
fn restrict_tree(dir: &Path) -> Result<()> {
    restrict(dir, 0o700)?;
    for entry in fs::read_dir(dir).map_err(|e| io_ctx("read dir", dir, e))? {
        let entry = entry.map_err(|e| io_ctx("read dir", dir, e))?;
        let ft = entry
            .file_type()
            .map_err(|e| io_ctx("stat", &entry.path(), e))?;
        if ft.is_dir() {
            restrict_tree(&entry.path())?;
        } else if ft.is_file() {
            restrict(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

/// fsyncs a directory so that renames into it are durable.
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_ctx("fsync dir", dir, e))
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// Creates the directory layout, opens the sled database and deletes
    /// anything left in `tmp/` by a crash. It does not hash any blob.
    pub fn open(dir: &Path) -> Result<Store> {
        Self::open_inner(dir, false)
    }

    /// Opens the store for [`Store::rebuild_index`]: like [`Store::open`], but an index that
    /// does not belong to the blobs (see [`IndexProblem`]) is accepted.
    pub fn open_for_rebuild(dir: &Path) -> Result<Store> {
        Self::open_inner(dir, true)
    }

    fn open_inner(dir: &Path, rebuilding: bool) -> Result<Store> {
        let blobs_dir = dir.join("blobs").join(digest::ALGORITHM);
        let tmp_dir = dir.join("tmp");
        let quarantine_dir = dir.join("quarantine");
        for d in [&blobs_dir, &tmp_dir, &quarantine_dir] {
            fs::create_dir_all(d).map_err(|e| io_ctx("create dir", d, e))?;
        }
        // Private whatever the umask: blobs and the index are the service user's only.
        for d in [&dir.join("blobs"), &blobs_dir, &tmp_dir, &quarantine_dir] {
            restrict(d, 0o700)?;
        }
        // Open the database first: it takes an exclusive lock, so a second
        // process cannot wipe the temp files of the running one.
        let index_existed = dir.join("index.sled").exists();
        let index_dir = dir.join("index.sled");
        let db = sled::open(&index_dir).map_err(|e| error::open_db_error(&index_dir, e))?;
        restrict_tree(&dir.join("index.sled"))?;
        let stale = clean_tmp(&tmp_dir)?;
        if stale > 0 {
            tracing::info!(count = stale, dir = %tmp_dir.display(), "removed stale temp files");
        }
        let inner = Inner {
            dir: dir.to_path_buf(),
            blobs: db.open_tree(index::BLOBS_TREE)?,
            refs: db.open_tree(index::REFS_TREE)?,
            pins: db.open_tree(index::PINS_TREE)?,
            children: db.open_tree(index::CHILDREN_TREE)?,
            meta: db.open_tree(index::META_TREE)?,
            db,
            blobs_dir,
            tmp_dir,
            quarantine_dir,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            gc_lock: RwLock::new(()),
            quota: quota::QuotaState::default(),
        };
        if !rebuilding {
            identity::check(&inner, index_existed)?;
        }
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    /// Sets the limits new content is checked against (see [`Quota`]).
    pub fn set_quota(&self, quota: Quota) {
        self.inner.quota.set(quota);
    }

    /// Fails with [`StoreError::QuotaReached`] if new content would be refused now: for work
    /// that fills the data directory outside the store (extracting an image into the cache).
    pub fn check_quota(&self) -> Result<()> {
        self.inner.check_quota(0)
    }

    /// [`Store::check_quota`] for content of `incoming` bytes on its way into the store (a
    /// download in a scratch file): refused as soon as it would take the store over
    /// `store.maxBytes`, not only once it is whole.
    pub fn check_quota_for(&self, incoming: u64) -> Result<()> {
        self.inner.check_quota(incoming)
    }

    /// The data directory this store was opened on.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The sled database, for other modules' own trees. Tree names starting
    /// with `store/` are reserved for the store.
    pub fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// Flushes the database to disk. Blob writes already flush; refs, pins
    /// and children are otherwise flushed by sled in the background.
    pub async fn flush(&self) -> Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.db.flush())
            .await
            .map_err(join_err)??;
        Ok(())
    }

    /// Whether the index has a record for `d`. Does not touch the file; use
    /// [`Store::open_blob`] to find out whether it can actually be served.
    pub fn contains(&self, d: &Digest) -> bool {
        match self.inner.blobs.contains_key(d.as_bytes()) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(digest = %d, error = %crate::errors::chain(&e), "store index lookup failed");
                false
            }
        }
    }

    /// Information about a stored blob, or `None` if it is not stored.
    pub fn stat(&self, d: &Digest) -> Option<BlobInfo> {
        match self.inner.record(d) {
            Ok(Some(rec)) => Some(BlobInfo {
                digest: *d,
                size: rec.size,
                created: rec.created,
                pinned: self.is_pinned(d),
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(digest = %d, error = %crate::errors::chain(&e), "store index lookup failed");
                None
            }
        }
    }

    /// All stored blobs, ordered by digest.
    pub fn list_blobs(&self) -> Result<Vec<BlobInfo>> {
        self.inner
            .records()?
            .into_iter()
            .map(|(digest, rec)| {
                Ok(BlobInfo {
                    digest,
                    size: rec.size,
                    created: rec.created,
                    pinned: self.inner.pins.contains_key(digest.as_bytes())?,
                })
            })
            .collect()
    }

    /// Sum of the sizes of all stored blobs (a counter maintained together
    /// with the index records).
    pub fn total_size(&self) -> u64 {
        self.inner.total_size().unwrap_or_else(|e| {
            tracing::error!(error = %crate::errors::chain(&e), "reading store total size failed");
            0
        })
    }

    /// Pins `d` so that GC never removes it. The blob must be stored.
    pub fn pin(&self, d: &Digest) -> Result<()> {
        let _gc = self.inner.gc_shared();
        if !self.inner.blobs.contains_key(d.as_bytes())? {
            return Err(StoreError::NotFound(*d));
        }
        self.inner.pins.insert(d.as_bytes(), &[] as &[u8])?;
        Ok(())
    }

    /// Removes the pin on `d` (no-op if it was not pinned).
    pub fn unpin(&self, d: &Digest) -> Result<()> {
        self.inner.pins.remove(d.as_bytes())?;
        Ok(())
    }

    /// Whether `d` is pinned.
    pub fn is_pinned(&self, d: &Digest) -> bool {
        self.inner
            .pins
            .contains_key(d.as_bytes())
            .unwrap_or_else(|e| {
                tracing::error!(digest = %d, error = %crate::errors::chain(&e), "store pin lookup failed");
                false
            })
    }

    /// Points the ref `kind`/`key` at `d`, returning the previous target.
    ///
    /// `kind` must be non-empty without `/` or NUL; `key` must be non-empty
    /// without NUL. The blob must be stored (so GC cannot race the ref).
    pub fn set_ref(&self, kind: &str, key: &str, d: &Digest) -> Result<Option<Digest>> {
        let k = ref_key(kind, key)?;
        let _gc = self.inner.gc_shared();
        if !self.inner.blobs.contains_key(d.as_bytes())? {
            return Err(StoreError::NotFound(*d));
        }
        self.inner
            .refs
            .insert(k, &d.as_bytes()[..])?
            .map(|v| decode_digest(&v))
            .transpose()
    }

    /// The target of the ref `kind`/`key`, if set.
    pub fn get_ref(&self, kind: &str, key: &str) -> Result<Option<Digest>> {
        let k = ref_key(kind, key)?;
        self.inner
            .refs
            .get(k)?
            .map(|v| decode_digest(&v))
            .transpose()
    }

    /// Deletes the ref `kind`/`key`, returning its target if it was set.
    pub fn delete_ref(&self, kind: &str, key: &str) -> Result<Option<Digest>> {
        let k = ref_key(kind, key)?;
        self.inner
            .refs
            .remove(k)?
            .map(|v| decode_digest(&v))
            .transpose()
    }

    /// All refs of `kind` as `(key, target)`, sorted by key (bytewise).
    pub fn list_refs(&self, kind: &str) -> Result<Vec<(String, Digest)>> {
        // Validate the kind with a placeholder key.
        let mut prefix = ref_key(kind, "-")?;
        prefix.pop();
        self.inner
            .refs
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let key = std::str::from_utf8(&k[prefix.len()..])
                    .map_err(|_| StoreError::Index("ref key is not UTF-8".into()))?;
                Ok((key.to_owned(), decode_digest(&v)?))
            })
            .collect()
    }

    /// The refs of `kind` whose key starts with `key_prefix`, as `(key, target)`, sorted by
    /// key: a range scan of the index, so the cost follows the matches, not every ref of
    /// the kind.
    pub fn list_refs_with_prefix(
        &self,
        kind: &str,
        key_prefix: &str,
    ) -> Result<Vec<(String, Digest)>> {
        let mut kind_prefix = ref_key(kind, "-")?;
        kind_prefix.pop();
        if key_prefix.contains('\0') {
            return Ok(Vec::new());
        }
        let mut prefix = kind_prefix.clone();
        prefix.extend_from_slice(key_prefix.as_bytes());
        self.inner
            .refs
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let key = std::str::from_utf8(&k[kind_prefix.len()..])
                    .map_err(|_| StoreError::Index("ref key is not UTF-8".into()))?;
                Ok((key.to_owned(), decode_digest(&v)?))
            })
            .collect()
    }

    /// Declares that `parent` keeps `children` alive (e.g. an OCI manifest
    /// and its config and layers), replacing any previous list. GC keeps
    /// children of live blobs, transitively. The children need not be
    /// stored yet; the parent must be. An empty list removes the entry.
    pub fn set_children(&self, parent: &Digest, children: &[Digest]) -> Result<()> {
        let _gc = self.inner.gc_shared();
        if !self.inner.blobs.contains_key(parent.as_bytes())? {
            return Err(StoreError::NotFound(*parent));
        }
        if children.is_empty() {
            self.inner.children.remove(parent.as_bytes())?;
        } else {
            let v: Vec<u8> = children.iter().flat_map(|c| *c.as_bytes()).collect();
            self.inner.children.insert(parent.as_bytes(), v)?;
        }
        Ok(())
    }

    /// The children declared for `parent` (empty if none).
    pub fn children(&self, parent: &Digest) -> Result<Vec<Digest>> {
        match self.inner.children.get(parent.as_bytes())? {
            Some(v) => decode_digest_list(&v),
            None => Ok(Vec::new()),
        }
    }

    /// Deletes every blob that is not pinned, not the target of a ref, not a
    /// (transitive) child of a kept blob, and was last put at least `grace`
    /// ago. Blob files left without an index record by a crash are removed
    /// by the same rules (age measured by mtime).
    ///
    /// This does blocking file I/O: call it from `spawn_blocking`. While it
    /// decides what to delete, writers' commits and ref/pin/children updates
    /// wait for it.
    pub fn gc(&self, grace: std::time::Duration) -> Result<GcReport> {
        self.inner.gc(grace, false, &[])
    }

    /// Like [`Store::gc`], after removing the refs in `drop_refs` under the same exclusive
    /// lock (each only while it still names its `target`), so what they alone kept is swept
    /// in the same pass. With `dry_run` nothing changes and the report says what would.
    pub fn gc_dropping(
        &self,
        grace: std::time::Duration,
        dry_run: bool,
        drop_refs: &[RefEntry],
    ) -> Result<GcReport> {
        self.inner.gc(grace, dry_run, drop_refs)
    }

    /// A copy of the liveness data (sizes, refs, pins, children) for planning what to
    /// unname; see [`StoreSnapshot`]. Reads the whole index: call it from `spawn_blocking`.
    pub fn snapshot(&self) -> Result<StoreSnapshot> {
        self.inner.snapshot()
    }

    /// The store's identity (hex), as in `<dataDir>/store-id`.
    pub fn identity(&self) -> Option<String> {
        identity::read_hex(&self.inner.dir)
    }

    /// What [`Store::gc`] with the same `grace` would delete now, deleting nothing: the
    /// report counts the blobs and bytes a real run would remove.
    pub fn gc_dry_run(&self, grace: std::time::Duration) -> Result<GcReport> {
        self.inner.gc(grace, true, &[])
    }
}
