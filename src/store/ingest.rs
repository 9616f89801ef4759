//! Streaming a blob in from the network with one SHA-256 pass: [`Store::ingest`].
//!
//! The caller pushes the bytes as they arrive ([`Ingest::push`]); each chunk is queued (the same
//! `Bytes`, not a copy) for a blocking thread that hashes it and writes it to a temp file in
//! `<dataDir>/tmp/`, so neither the hash nor the disk holds up the caller's task, which can hand
//! the bytes on at once. [`Ingest::finish`] ends the input and returns the digest of everything
//! pushed, as soon as the thread has hashed and written it (no `fsync` yet), so the caller can
//! compare it with the digest it expects; [`Ingest::commit_expect`] then compares the *same*
//! digest (nothing is hashed twice), `fsync`s and commits the file like every other store write.
//! Content whose digest does not match is deleted, never indexed; so is a stream that is
//! abandoned (the [`Ingest`] dropped or [`Ingest::abort`]ed) or cut short.
//!
//! The hash and the file are fed from the same chunks by this module alone, one after the other
//! on one thread, so the digest the index records is always the digest of the file's bytes, as
//! with [`super::BlobWriter`].
//!
//! Memory is bounded: [`Ingest::drain_to_limit`] waits while more than [`MAX_QUEUED`] bytes
//! are pushed but not yet written. [`Ingest::read_handle`] is a read-only handle on the temp
//! file, for readers that follow the download from disk; it stays valid after the commit
//! (rename) and after an abort (unlink).

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::blob::{BLOB_FILE_MODE, TempPath};
use super::digest::{Digest, Hasher};
use super::error::{Result, StoreError, join_err};
use super::{Inner, Store};

/// Most bytes hashed but not yet written to the temp file; [`Ingest::push`] waits beyond it.
pub const MAX_QUEUED: u64 = 16 << 20;

/// What the writer thread hands back: the file, its temp path (still armed), its length and
/// the digest of its content.
type Finished = (fs::File, TempPath, u64, Digest);

/// A blob being streamed into the store; see the module docs.
pub struct Ingest {
    inner: Arc<Inner>,
    size: u64,
    path: PathBuf,
    read: Arc<fs::File>,
    tx: Option<mpsc::UnboundedSender<Bytes>>,
    written: watch::Receiver<u64>,
    writer: Option<JoinHandle<Result<Finished>>>,
    /// Set by [`Ingest::finish`].
    finished: Option<Finished>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("temp", &self.path)
            .field("size", &self.size)
            .finish()
    }
}

impl Store {
    /// Starts streaming a blob into the store (see [`Ingest`]). Fails with
    /// [`StoreError::QuotaReached`] when new content would be refused now.
    pub fn ingest(&self) -> Result<Ingest> {
        self.inner.check_quota(0)?;
        let tmp = TempPath::new_in(&self.inner.tmp_dir);
        let path = tmp.path().to_path_buf();
        let create = |p: &Path| {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(BLOB_FILE_MODE)
                .open(p)
        };
        let file = create(&path)
            .map_err(|e| StoreError::from_write(&self.inner.dir, "create temp file", &path, e))?;
        // `tmp` is armed: an error below removes the file again.
        let read = fs::File::open(&path)
            .map_err(|e| StoreError::from_write(&self.inner.dir, "open temp file", &path, e))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (written_tx, written) = watch::channel(0u64);
        let inner = self.inner.clone();
        let writer =
            tokio::task::spawn_blocking(move || write_chunks(&inner, file, tmp, rx, written_tx));
        Ok(Ingest {
            inner: self.inner.clone(),
            size: 0,
            path,
            read: Arc::new(read),
            tx: Some(tx),
            written,
            writer: Some(writer),
            finished: None,
        })
    }
}

/// The writer thread: hashes and writes every queued chunk in order, publishing the bytes
/// written, and checks the quota every [`super::quota::CHECK_EVERY`] bytes. Ends when the
/// sender is gone.
fn write_chunks(
    inner: &Inner,
    mut file: fs::File,
    tmp: TempPath,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    written_tx: watch::Sender<u64>,
) -> Result<Finished> {
    let mut written = 0u64;
    let mut hasher = Hasher::new();
    while let Some(chunk) = rx.blocking_recv() {
        hasher.update(&chunk);
        file.write_all(&chunk)
            .map_err(|e| StoreError::from_write(&inner.dir, "write temp file", tmp.path(), e))?;
        let before = written;
        written += chunk.len() as u64;
        if before / super::quota::CHECK_EVERY != written / super::quota::CHECK_EVERY {
            inner.check_quota(written)?;
        }
        written_tx.send_replace(written);
    }
    Ok((file, tmp, written, hasher.finish()))
}

impl Ingest {
    /// The temp file being written (it is renamed into the store at commit, deleted on abort).
    pub fn temp_path(&self) -> &Path {
        &self.path
    }

    /// A read-only handle on the temp file; valid after the commit or abort too.
    pub fn read_handle(&self) -> Arc<fs::File> {
        self.read.clone()
    }

    /// Bytes pushed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes hashed and written to the temp file so far (not yet `fsync`ed).
    pub fn written(&self) -> u64 {
        *self.written.borrow()
    }

    /// Queues `chunk` for the writer thread, which hashes and writes it; fails with the
    /// writer's error (a full disk, the quota) once the writer failed, or after
    /// [`Ingest::finish`]. Does not wait: call [`Ingest::drain_to_limit`] before taking in more.
    pub async fn push(&mut self, chunk: Bytes) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.size += chunk.len() as u64;
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(chunk).is_ok());
        if !sent {
            return Err(self.writer_failure().await);
        }
        Ok(())
    }

    /// Ends the input and waits until everything pushed is hashed and written (not
    /// `fsync`ed): its SHA-256. Fails with the writer's error.
    pub async fn finish(&mut self) -> Result<Digest> {
        if self.finished.is_none() {
            self.tx = None;
            let task = self
                .writer
                .take()
                .ok_or_else(|| StoreError::Io(io::Error::other("temp file writer stopped")))?;
            let finished = task.await.map_err(join_err)??;
            if finished.2 != self.size {
                return Err(StoreError::Io(io::Error::other(format!(
                    "temp file holds {} of {} bytes",
                    finished.2, self.size
                ))));
            }
            self.finished = Some(finished);
        }
        Ok(self.finished.as_ref().expect("set above").3)
    }

    /// Waits while more than [`MAX_QUEUED`] bytes are queued for the writer; fails with its
    /// error if it stopped.
    pub async fn drain_to_limit(&mut self) -> Result<()> {
        while self.size - *self.written.borrow_and_update() > MAX_QUEUED {
            if self.written.changed().await.is_err() {
                // The writer ended before it was told to: it failed.
                return Err(self.writer_failure().await);
            }
        }
        Ok(())
    }

    /// The writer's error after it stopped early.
    async fn writer_failure(&mut self) -> StoreError {
        self.tx = None;
        match self.writer.take() {
            Some(task) => match task.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => StoreError::Io(io::Error::other("temp file writer stopped")),
                Err(e) => join_err(e),
            },
            None => StoreError::Io(io::Error::other("temp file writer stopped")),
        }
    }

    /// [`Ingest::finish`]es if needed, then commits the blob if everything pushed hashes to
    /// `expected`: `fsync`, rename into place, index record. Otherwise the temp file is deleted
    /// and [`StoreError::DigestMismatch`] returned; nothing is indexed.
    pub async fn commit_expect(mut self, expected: &Digest) -> Result<Digest> {
        self.finish().await?;
        let (file, tmp, size, digest) = self.finished.take().expect("finished above");
        if digest != *expected {
            // Dropping the armed temp path deletes the file; no need to fsync it first.
            drop((file, tmp));
            return Err(StoreError::DigestMismatch {
                expected: *expected,
                actual: digest,
            });
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            file.sync_all().map_err(|e| {
                StoreError::from_write(&inner.dir, "fsync temp file", tmp.path(), e)
            })?;
            drop(file);
            inner.commit_temp(tmp, digest, size)
        })
        .await
        .map_err(join_err)??;
        Ok(digest)
    }

    /// Abandons the blob and waits until its temp file is deleted.
    pub async fn abort(mut self) {
        self.tx = None;
        self.finished = None;
        if let Some(task) = self.writer.take() {
            // Its result (the armed temp path) is dropped here, deleting the file.
            let _ = task.await;
        }
    }
}
