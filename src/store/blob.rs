//! Writing blobs (async streams, bytes, a blocking writer) and reading them
//! back with stamp-based verification.

use std::fmt;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::digest::{Digest, Hasher};
use super::error::{Result, StoreError, io_ctx, join_err};
use super::index::{BlobRecord, FileStamp, now_ms};
use super::{Inner, Store, sync_dir};

/// Size of the copy/hash buffers.
const CHUNK: usize = 256 * 1024;
/// Blob files are readable by the service user only, whatever the umask (the store holds
/// schematics with embedded machine configuration, and cached assets).
pub(crate) const BLOB_FILE_MODE: u32 = 0o600;

/// How often a read retries when the file keeps changing under it.
const READ_ATTEMPTS: usize = 3;

/// A verified, open blob.
#[derive(Debug)]
pub struct Blob {
    /// The blob's digest.
    pub digest: Digest,
    /// Content length in bytes.
    pub size: u64,
    /// Path of the blob file (e.g. for `sendfile`-style serving).
    pub path: PathBuf,
    /// The open file, positioned at the start.
    pub file: tokio::fs::File,
    /// The identity of the open file when it was checked against the store's record.
    identity: BlobIdentity,
}

/// Which file a [`Blob`] is, as its store record knows it (inode, size, modification and
/// change times): equal identities mean the file was not replaced or modified in between.
/// Lets callers remember facts about a blob (e.g. a verified signature) only as long as the
/// file stays the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobIdentity(FileStamp);

impl Blob {
    /// The identity of the file this handle was checked as.
    pub fn identity(&self) -> BlobIdentity {
        self.identity
    }
}

/// A blob found corrupt by [`Store::verify_all`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorruptBlob {
    /// The digest the blob was stored under.
    pub digest: Digest,
    /// What its content hashed to.
    pub actual: Digest,
}

/// Result of [`Store::verify_all`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Number of index records examined.
    pub checked: usize,
    /// Blobs whose content matched their digest.
    pub ok: usize,
    /// Bytes hashed.
    pub bytes_hashed: u64,
    /// Blobs whose content did not match; they have been quarantined.
    pub corrupt: Vec<CorruptBlob>,
    /// Blobs whose file had disappeared; their records have been dropped.
    pub missing: Vec<Digest>,
    /// Blobs that could not be read (e.g. EIO), with the error; left alone.
    pub errors: Vec<(Digest, String)>,
}

/// A temp file path that is deleted on drop unless disarmed.
pub(crate) struct TempPath {
    path: PathBuf,
    armed: bool,
}

impl TempPath {
    /// A fresh random name in `tmp_dir` (the file is not created).
    pub(crate) fn new_in(tmp_dir: &Path) -> TempPath {
        let name = format!("{:032x}.tmp", rand::random::<u128>());
        TempPath {
            path: tmp_dir.join(name),
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }

    /// The temp file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "removing temp file failed");
        }
    }
}

/// Outcome of checking one blob against its record.
pub(crate) enum Check {
    /// Content matches; carries the size.
    Good(u64),
    /// No index record.
    NoRecord,
    /// The file was missing; the record has been dropped.
    Missing,
    /// The content hashed to another digest; the file is quarantined.
    Corrupt(Digest),
}

impl Check {
    fn into_result(self, d: &Digest) -> Result<u64> {
        match self {
            Check::Good(n) => Ok(n),
            Check::NoRecord | Check::Missing => Err(StoreError::NotFound(*d)),
            Check::Corrupt(actual) => Err(StoreError::Corrupt { digest: *d, actual }),
        }
    }
}

/// Hashes everything readable from `r`.
pub(crate) fn hash_reader(mut r: impl Read) -> io::Result<(Digest, u64)> {
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut n_total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        n_total += n as u64;
    }
    Ok((hasher.finish(), n_total))
}

/// SHA-256 and length of a file, its holes hashed from a shared zero buffer instead of being
/// read (`formats::sparse`: `SEEK_DATA`/`SEEK_HOLE`, the whole file where unsupported): a
/// sparse disk image's gigabytes of holes cost the hash, not the kernel's zero-filling and
/// copying. The same digest as [`hash_reader`] over the file.
pub(crate) fn hash_file(file: &fs::File) -> io::Result<(Digest, u64)> {
    use crate::formats::sparse::{ZEROS, for_each_segment};
    let hasher = std::cell::RefCell::new(Hasher::new());
    let walk = for_each_segment(
        file,
        |d| {
            hasher.borrow_mut().update(d);
            Ok(())
        },
        |mut n| {
            let mut h = hasher.borrow_mut();
            while n > 0 {
                let k = n.min(ZEROS.len() as u64) as usize;
                h.update(&ZEROS[..k]);
                n -= k as u64;
            }
            Ok(())
        },
    )?;
    Ok((hasher.into_inner().finish(), walk.size))
}

impl Inner {
    /// [`Store::put_file`], blocking.
    fn adopt_file(&self, path: &Path) -> Result<Digest> {
        use std::os::unix::fs::PermissionsExt as _;
        self.check_quota(0)?;
        let tmp = TempPath::new_in(&self.tmp_dir);
        // Readable by the service user only before it is in the store's directory.
        let moved = fs::set_permissions(path, fs::Permissions::from_mode(BLOB_FILE_MODE))
            .and_then(|()| fs::rename(path, &tmp.path));
        match moved {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                let copied = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(BLOB_FILE_MODE)
                    .open(&tmp.path)
                    .and_then(|mut out| copy_sparse(&mut fs::File::open(path)?, &mut out));
                let _ = fs::remove_file(path);
                copied.map_err(|e| {
                    StoreError::from_write(&self.dir, "copy into the store", &tmp.path, e)
                })?;
            }
            Err(e) => {
                let _ = fs::remove_file(path);
                return Err(StoreError::from_write(
                    &self.dir,
                    "move into the store",
                    path,
                    e,
                ));
            }
        }
        // From here the file is the armed temp file: removed on any failure.
        let file = fs::File::open(&tmp.path).map_err(|e| io_ctx("open", &tmp.path, e))?;
        let (digest, size) = hash_file(&file).map_err(|e| io_ctx("read", &tmp.path, e))?;
        file.sync_all()
            .map_err(|e| StoreError::from_write(&self.dir, "fsync temp file", &tmp.path, e))?;
        drop(file);
        self.commit_temp(tmp, digest, size)?;
        Ok(digest)
    }

    /// Moves a fully written, fsynced temp file holding content `digest` of
    /// `size` bytes into place and records it. Blocking.
    pub(crate) fn commit_temp(&self, mut tmp: TempPath, digest: Digest, size: u64) -> Result<()> {
        {
            let _gc = self.gc_shared();
            let _stripe = self.stripe(&digest);
            let dest = self.blob_file(&digest);
            let existing = self.record(&digest)?;
            let now = now_ms();
            if let Some(rec) = &existing
                && let Ok(m) = fs::metadata(&dest)
                && FileStamp::of(&m) == rec.stamp
            {
                // Already stored and untouched since verified: keep it and
                // just restart its GC grace period.
                drop(tmp);
                let rec = BlobRecord {
                    touched_ms: now,
                    ..rec.clone()
                };
                self.write_record(&digest, &rec)?;
                return Ok(());
            }
            if existing.is_none() {
                // New content: the limits apply (dropping `tmp` removes the temp file).
                self.check_quota(size.max(1))?;
            }
            // New, or the stored file was tampered with / lost its record:
            // our freshly hashed copy replaces it.
            fs::rename(&tmp.path, &dest)
                .map_err(|e| StoreError::from_write(&self.dir, "rename into place", &dest, e))?;
            tmp.disarm();
            sync_dir(&self.blobs_dir)?;
            let m = fs::metadata(&dest).map_err(|e| io_ctx("stat", &dest, e))?;
            let rec = BlobRecord {
                size,
                created: existing.map_or(now / 1000, |r| r.created),
                touched_ms: now,
                stamp: FileStamp::of(&m),
            };
            self.write_record(&digest, &rec)?;
        }
        self.db.flush().map_err(|e| self.db_write_err(e))?;
        Ok(())
    }

    /// Checks the blob `d` against its record; with `force`, re-hashes even
    /// when the stamp matches. Refreshes the stamp of good blobs, drops the
    /// record of missing ones and quarantines corrupt ones. Blocking.
    pub(crate) fn verify_one(&self, d: &Digest, force: bool) -> Result<Check> {
        let _stripe = self.stripe(d);
        let Some(rec) = self.record(d)? else {
            return Ok(Check::NoRecord);
        };
        let path = self.blob_file(d);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let file = match fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.remove_record(d)?;
                    tracing::warn!(digest = %d, "blob file is missing; dropped its index record");
                    return Ok(Check::Missing);
                }
                Err(e) => return Err(io_ctx("open blob", &path, e)),
            };
            let stat = |f: &fs::File| {
                f.metadata()
                    .map(|m| FileStamp::of(&m))
                    .map_err(|e| io_ctx("stat blob", &path, e))
            };
            let before = stat(&file)?;
            if !force && before == rec.stamp {
                return Ok(Check::Good(rec.size));
            }
            let hashed = hash_file(&file);
            let after = stat(&file)?;
            if hashed.is_err() && before != after && attempt < READ_ATTEMPTS {
                // Shrunk while we hashed (the sparse walk refuses that): look again.
                continue;
            }
            let (actual, size) = hashed.map_err(|e| io_ctx("read blob", &path, e))?;
            let now_at_path = fs::metadata(&path).map(|m| FileStamp::of(&m)).ok();
            if (before != after || now_at_path != Some(after)) && attempt < READ_ATTEMPTS {
                // Modified or replaced while we hashed: look again.
                continue;
            }
            if actual == *d {
                if after != rec.stamp || size != rec.size {
                    let rec = BlobRecord {
                        size,
                        stamp: after,
                        ..rec
                    };
                    self.write_record(d, &rec)?;
                }
                return Ok(Check::Good(size));
            }
            let qpath = self.quarantine_dir.join(format!(
                "{}.{}.{:08x}",
                d.hex(),
                now_ms(),
                rand::random::<u32>()
            ));
            fs::rename(&path, &qpath).map_err(|e| io_ctx("quarantine blob", &path, e))?;
            self.remove_record(d)?;
            tracing::error!(
                digest = %d,
                actual = %actual,
                quarantined = %qpath.display(),
                "blob content does not match its digest; quarantined"
            );
            return Ok(Check::Corrupt(actual));
        }
    }
}

impl Store {
    /// Runs [`Inner::verify_one`] on the blocking pool.
    async fn verify_blocking(&self, d: &Digest, force: bool) -> Result<Check> {
        let inner = self.inner.clone();
        let d = *d;
        tokio::task::spawn_blocking(move || inner.verify_one(&d, force))
            .await
            .map_err(join_err)?
    }

    /// Streams `r` into the store and returns its digest.
    pub async fn put_stream<R: AsyncRead + Unpin>(&self, r: R) -> Result<Digest> {
        self.put_stream_inner(r, None).await
    }

    /// Like [`Store::put_stream`], but the content must hash to `expected`;
    /// otherwise nothing is stored and [`StoreError::DigestMismatch`] is
    /// returned.
    pub async fn put_stream_expect<R: AsyncRead + Unpin>(
        &self,
        r: R,
        expected: &Digest,
    ) -> Result<Digest> {
        self.put_stream_inner(r, Some(expected)).await
    }

    async fn put_stream_inner<R: AsyncRead + Unpin>(
        &self,
        mut r: R,
        expected: Option<&Digest>,
    ) -> Result<Digest> {
        // Armed from the start: removing a file that was never created is a
        // harmless no-op.
        self.inner.check_quota(0)?;
        let mut tmp = TempPath::new_in(&self.inner.tmp_dir);
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(BLOB_FILE_MODE)
            .open(&tmp.path)
            .await
            .map_err(|e| {
                StoreError::from_write(&self.inner.dir, "create temp file", &tmp.path, e)
            })?;

        let mut hasher = Hasher::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).await.map_err(|e| {
                StoreError::from_write(&self.inner.dir, "write temp file", &tmp.path, e)
            })?;
            let before = size;
            size += n as u64;
            if before / super::quota::CHECK_EVERY != size / super::quota::CHECK_EVERY {
                self.inner.check_quota(size)?;
            }
        }
        file.flush().await.map_err(|e| {
            StoreError::from_write(&self.inner.dir, "write temp file", &tmp.path, e)
        })?;
        file.sync_all().await.map_err(|e| {
            StoreError::from_write(&self.inner.dir, "fsync temp file", &tmp.path, e)
        })?;
        drop(file);

        let digest = hasher.finish();
        if let Some(expected) = expected
            && *expected != digest
        {
            tmp.disarm();
            tokio::fs::remove_file(&tmp.path)
                .await
                .map_err(|e| io_ctx("remove temp file", &tmp.path, e))?;
            return Err(StoreError::DigestMismatch {
                expected: *expected,
                actual: digest,
            });
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.commit_temp(tmp, digest, size))
            .await
            .map_err(join_err)??;
        Ok(digest)
    }

    /// Moves a file the caller has written and closed (a build's output, on the store's
    /// filesystem) into the store and returns its digest: the file is renamed into the temp
    /// directory, given the blob mode, hashed where it is, fsynced and committed, so a large
    /// asset is not copied a second time. The file at `path` is gone afterwards, whatever the
    /// outcome. On another filesystem it is copied instead.
    pub async fn put_file(&self, path: &Path) -> Result<Digest> {
        let inner = self.inner.clone();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || inner.adopt_file(&path))
            .await
            .map_err(join_err)?
    }

    /// Stores `data` and returns its digest.
    pub async fn put_bytes(&self, data: &[u8]) -> Result<Digest> {
        let data = data.to_vec();
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = store.writer()?;
            w.write_all(&data).map_err(|e| w.write_error(e))?;
            w.commit()
        })
        .await
        .map_err(join_err)?
    }

    /// A blocking, incremental writer for producing a blob from a blocking
    /// thread. Call [`BlobWriter::commit`] when done; dropping it without
    /// committing discards the data.
    pub fn writer(&self) -> Result<BlobWriter> {
        self.inner.check_quota(0)?;
        let tmp = TempPath::new_in(&self.inner.tmp_dir);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(BLOB_FILE_MODE)
            .open(&tmp.path)
            .map_err(|e| {
                StoreError::from_write(&self.inner.dir, "create temp file", &tmp.path, e)
            })?;
        Ok(BlobWriter {
            store: Arc::downgrade(&self.inner),
            dir: self.inner.dir.clone(),
            file: BufWriter::with_capacity(CHUNK, file),
            hasher: Hasher::new(),
            size: 0,
            tmp,
        })
    }

    /// Looks up `d`, checks its file stamp (re-hashing if it changed) and
    /// returns the record, the path and, with `open`, the open file.
    async fn checked(
        &self,
        d: &Digest,
        open: bool,
    ) -> Result<(BlobRecord, PathBuf, Option<tokio::fs::File>)> {
        let path = self.inner.blob_file(d);
        for _ in 0..READ_ATTEMPTS {
            let rec = self.inner.record(d)?.ok_or(StoreError::NotFound(*d))?;
            let found = if open {
                // Open and fstat the handle in one trip to the blocking pool.
                let p = path.clone();
                let opened = tokio::task::spawn_blocking(move || {
                    let f = std::fs::File::open(&p)?;
                    let m = f.metadata()?;
                    Ok::<_, io::Error>((f, m))
                })
                .await
                .map_err(join_err)?;
                match opened {
                    Ok((f, m)) => Some((FileStamp::of(&m), Some(tokio::fs::File::from_std(f)))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(io_ctx("open blob", &path, e)),
                }
            } else {
                match tokio::fs::metadata(&path).await {
                    Ok(m) => Some((FileStamp::of(&m), None)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(io_ctx("stat blob", &path, e)),
                }
            };
            if let Some((stamp, file)) = found
                && stamp == rec.stamp
            {
                return Ok((rec, path, file));
            }
            // Changed or missing: let the slow path decide (it refreshes the
            // record, drops it, or quarantines), then look again.
            self.verify_blocking(d, false).await?.into_result(d)?;
        }
        Err(StoreError::Io(io::Error::other(format!(
            "blob {d} keeps changing on disk"
        ))))
    }

    /// Opens a verified blob for reading.
    pub async fn open_blob(&self, d: &Digest) -> Result<Blob> {
        let (rec, path, file) = self.checked(d, true).await?;
        Ok(Blob {
            digest: *d,
            size: rec.size,
            path,
            file: file.expect("checked(open=true) returns the file"),
            identity: BlobIdentity(rec.stamp),
        })
    }

    /// The path of a verified blob, for zero-copy serving.
    pub async fn blob_path(&self, d: &Digest) -> Result<PathBuf> {
        Ok(self.checked(d, false).await?.1)
    }

    /// Reads a whole (small) blob into memory. The bytes are hashed as
    /// well, so even corruption that left the file stamp intact is caught.
    pub async fn read_bytes(&self, d: &Digest) -> Result<Vec<u8>> {
        for _ in 0..READ_ATTEMPTS {
            let mut blob = self.open_blob(d).await?;
            let mut data = Vec::with_capacity(usize::try_from(blob.size).unwrap_or(0));
            blob.file
                .read_to_end(&mut data)
                .await
                .map_err(|e| io_ctx("read blob", &blob.path, e))?;
            if Digest::of_bytes(&data) == *d {
                return Ok(data);
            }
            self.verify_blocking(d, true).await?.into_result(d)?;
        }
        Err(StoreError::Io(io::Error::other(format!(
            "blob {d} keeps changing on disk"
        ))))
    }

    /// Re-hashes every blob. Corrupt blobs are quarantined and reported;
    /// records of missing files are dropped and reported; good blobs get
    /// their stamp refreshed.
    pub async fn verify_all(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let digests: Vec<Digest> = self.inner.records()?.into_iter().map(|(d, _)| d).collect();
        for d in digests {
            match self.verify_blocking(&d, true).await {
                Ok(Check::Good(n)) => {
                    report.checked += 1;
                    report.ok += 1;
                    report.bytes_hashed += n;
                }
                Ok(Check::NoRecord) => {} // removed concurrently (e.g. GC)
                Ok(Check::Missing) => {
                    report.checked += 1;
                    report.missing.push(d);
                }
                Ok(Check::Corrupt(actual)) => {
                    report.checked += 1;
                    report.corrupt.push(CorruptBlob { digest: d, actual });
                }
                Err(e @ (StoreError::Db(_) | StoreError::Index(_))) => return Err(e),
                Err(e) => {
                    report.checked += 1;
                    report.errors.push((d, crate::errors::chain(&e)));
                }
            }
        }
        tracing::info!(
            checked = report.checked,
            corrupt = report.corrupt.len(),
            missing = report.missing.len(),
            errors = report.errors.len(),
            "store verification finished"
        );
        Ok(report)
    }
}

/// Blocking, incremental blob writer returned by [`Store::writer`].
///
/// Data is hashed as it is written into a temp file. [`BlobWriter::commit`]
/// fsyncs it and moves it into the store; dropping the writer without
/// committing deletes the temp file. The writer does not keep the store
/// alive: committing after every [`Store`] handle was dropped fails with
/// [`StoreError::Closed`].
pub struct BlobWriter {
    store: Weak<Inner>,
    dir: PathBuf,
    file: BufWriter<fs::File>,
    hasher: Hasher,
    size: u64,
    tmp: TempPath,
}

impl fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobWriter")
            .field("temp", &self.tmp.path)
            .field("size", &self.size)
            .finish()
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        let before = self.size;
        self.size += n as u64;
        if before / super::quota::CHECK_EVERY != self.size / super::quota::CHECK_EVERY
            && let Some(inner) = self.store.upgrade()
            && let Err(e) = inner.check_quota(self.size)
        {
            return Err(io::Error::new(io::ErrorKind::QuotaExceeded, e.to_string()));
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// The temp file being written. Readers may tail it (after [`Write::flush`]) while the
    /// blob is in flight; once committed it is renamed into the store (an open handle stays
    /// valid), and if abandoned it is deleted.
    pub fn temp_path(&self) -> &Path {
        &self.tmp.path
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Classifies an error returned by this writer's [`Write`] methods:
    /// [`StoreError::NoSpace`] when the filesystem is full, [`StoreError::Io`]
    /// naming the temp file otherwise.
    pub fn write_error(&self, e: io::Error) -> StoreError {
        StoreError::from_write(&self.dir, "write temp file", &self.tmp.path, e)
    }

    /// Finishes the blob and returns its digest.
    pub fn commit(self) -> Result<Digest> {
        self.finish(None)
    }

    /// Finishes the blob, which must hash to `expected`; otherwise nothing is
    /// stored and [`StoreError::DigestMismatch`] is returned.
    pub fn commit_expect(self, expected: &Digest) -> Result<Digest> {
        self.finish(Some(expected))
    }

    fn finish(self, expected: Option<&Digest>) -> Result<Digest> {
        let BlobWriter {
            store,
            dir,
            file,
            hasher,
            size,
            tmp,
        } = self;
        let file = file.into_inner().map_err(|e| {
            StoreError::from_write(&dir, "write temp file", &tmp.path, e.into_error())
        })?;
        file.sync_all()
            .map_err(|e| StoreError::from_write(&dir, "fsync temp file", &tmp.path, e))?;
        drop(file);
        let digest = hasher.finish();
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(StoreError::DigestMismatch {
                expected: *expected,
                actual: digest,
            });
        }
        let inner = store.upgrade().ok_or(StoreError::Closed)?;
        inner.commit_temp(tmp, digest, size)?;
        Ok(digest)
    }
}

/// Copies `from` into the fresh file `to`, leaving all-zero 64 KiB blocks as holes (a sparse
/// disk image stays sparse when it has to be copied across filesystems). Returns the length.
fn copy_sparse(from: &mut fs::File, to: &mut fs::File) -> io::Result<u64> {
    use std::io::{Seek as _, SeekFrom};
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = read_up_to(from, &mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            to.seek(SeekFrom::Current(n as i64))?;
        } else {
            to.write_all(&buf[..n])?;
        }
        len += n as u64;
    }
    to.set_len(len)?;
    Ok(len)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod sparse_tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn hash_file_equals_hashing_every_byte() {
        use std::os::unix::fs::FileExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let f = fs::File::create(&p).unwrap();
        f.set_len(40 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(&[9u8; 70_000], 17 << 20).unwrap();
        drop(f);
        let f = fs::File::open(&p).unwrap();
        assert_eq!(
            hash_file(&f).unwrap(),
            hash_reader(fs::File::open(&p).unwrap()).unwrap()
        );
        let empty = dir.path().join("empty");
        fs::File::create(&empty).unwrap();
        assert_eq!(
            hash_file(&fs::File::open(&empty).unwrap()).unwrap(),
            hash_reader(&b""[..]).unwrap()
        );
    }

    #[test]
    fn copy_sparse_keeps_content_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let f = fs::File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        use std::os::unix::fs::FileExt as _;
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"middle", 30 << 20).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        drop(f);
        let dst = dir.path().join("dst");
        let mut out = fs::File::create(&dst).unwrap();
        let n = copy_sparse(&mut fs::File::open(&src).unwrap(), &mut out).unwrap();
        drop(out);
        assert_eq!(n, 64 << 20);
        assert!(fs::read(&src).unwrap() == fs::read(&dst).unwrap());
        let md = fs::metadata(&dst).unwrap();
        assert_eq!(md.len(), 64 << 20);
        assert!(md.blocks() * 512 < 4 << 20, "{} blocks", md.blocks());
    }
}
