//! A blob download in flight: fetched once from the upstream into a store temp file while any
//! number of readers follow it, verified against its digest before it is committed.
//!
//! Readers never receive the last [`HOLDBACK`] bytes before the digest has been verified, so a
//! client can never receive a *complete* blob whose content is wrong: a corrupt upstream blob
//! ends every reader's stream with an error and nothing is committed. The download runs in its
//! own task: a client that disconnects does not cancel it.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, watch};

use super::{RegistryClient, UpstreamError};
use crate::store::{Digest, Store, StoreError};

/// Bytes withheld from readers until the digest is verified.
pub const HOLDBACK: u64 = 256 * 1024;
/// Largest chunk handed to a reader at once.
const READ_CHUNK: usize = 256 * 1024;

/// [`BlobFetch::wait_done_reporting`] reports at least this many new bytes…
pub const PROGRESS_BYTES: u64 = 1 << 20;
/// …or after this long, whichever comes first.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Progress of a download, published to readers.
#[derive(Debug, Clone, Default)]
pub struct FetchState {
    /// The upstream answered and writing began.
    pub started: bool,
    /// `Content-Length` from the upstream, if it sent one.
    pub total: Option<u64>,
    /// Bytes written to the temp file (and flushed) so far.
    pub written: u64,
    /// The temp file being written.
    pub temp_path: Option<PathBuf>,
    /// Set once the download ended: `Ok` means verified and committed.
    pub outcome: Option<Result<(), UpstreamError>>,
}

/// A shared download of one blob.
pub struct BlobFetch {
    digest: Digest,
    registry: String,
    state: watch::Receiver<FetchState>,
}

impl BlobFetch {
    /// Starts downloading `digest` of `repository` into `store`; `on_done` runs when it ends
    /// (success or failure), e.g. to forget the in-flight entry.
    pub fn start(
        store: Store,
        client: Arc<RegistryClient>,
        repository: String,
        digest: Digest,
        idle_timeout: Duration,
        on_done: impl FnOnce() + Send + 'static,
    ) -> Arc<BlobFetch> {
        let (tx, rx) = watch::channel(FetchState::default());
        let registry = client.endpoint().registry.clone();
        let fetch = Arc::new(BlobFetch {
            digest,
            registry: registry.clone(),
            state: rx,
        });
        tokio::spawn(async move {
            let started = Instant::now();
            let result = download(&store, &client, &repository, &digest, idle_timeout, &tx).await;
            match &result {
                Ok(size) => tracing::info!(
                    %registry, %repository, %digest, bytes = size,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "blob fetched from upstream"
                ),
                Err(e) => {
                    tracing::warn!(%registry, %repository, %digest, error = %crate::errors::chain(e), "blob fetch failed")
                }
            }
            tx.send_modify(|s| s.outcome = Some(result.map(|_| ())));
            on_done();
        });
        fetch
    }

    /// The blob being fetched.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Waits until the upstream answered; returns the announced length.
    pub async fn wait_started(&self) -> Result<Option<u64>, UpstreamError> {
        let mut rx = self.state.clone();
        loop {
            {
                let s = rx.borrow_and_update();
                if let Some(Err(e)) = &s.outcome {
                    return Err(e.clone());
                }
                if s.started || s.outcome.is_some() {
                    return Ok(s.total.or(if s.outcome.is_some() {
                        Some(s.written)
                    } else {
                        None
                    }));
                }
            }
            if rx.changed().await.is_err() {
                return Err(self.vanished());
            }
        }
    }

    /// Waits until the blob is verified and committed (or the download failed).
    pub async fn wait_done(&self) -> Result<(), UpstreamError> {
        let mut rx = self.state.clone();
        loop {
            if let Some(outcome) = &rx.borrow_and_update().outcome {
                return outcome.clone();
            }
            if rx.changed().await.is_err() {
                return Err(self.vanished());
            }
        }
    }

    /// Like [`BlobFetch::wait_done`], calling `on_progress` with the bytes written so far as
    /// the download advances, at most every [`PROGRESS_BYTES`] or [`PROGRESS_INTERVAL`]
    /// (whichever comes first), so a caller can show byte progress within one blob.
    pub async fn wait_done_reporting(
        &self,
        mut on_progress: impl FnMut(u64),
    ) -> Result<(), UpstreamError> {
        let mut rx = self.state.clone();
        let mut reported = 0u64;
        let mut at = Instant::now();
        loop {
            {
                let s = rx.borrow_and_update();
                if let Some(outcome) = &s.outcome {
                    return outcome.clone();
                }
                if s.written > reported
                    && (s.written - reported >= PROGRESS_BYTES || at.elapsed() >= PROGRESS_INTERVAL)
                {
                    reported = s.written;
                    at = Instant::now();
                    on_progress(reported);
                }
            }
            if rx.changed().await.is_err() {
                return Err(self.vanished());
            }
        }
    }

    fn vanished(&self) -> UpstreamError {
        UpstreamError::Unavailable {
            registry: self.registry.clone(),
            message: format!("download of {} stopped", self.digest),
            cause: None,
        }
    }

    /// A stream of the blob's bytes that follows the download (see the module docs).
    pub fn reader(
        self: &Arc<Self>,
        store: Store,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        struct Reader {
            fetch: Arc<BlobFetch>,
            rx: watch::Receiver<FetchState>,
            store: Store,
            file: Option<tokio::fs::File>,
            pos: u64,
            finished: bool,
        }
        let reader = Reader {
            rx: self.state.clone(),
            fetch: self.clone(),
            store,
            file: None,
            pos: 0,
            finished: false,
        };

        impl Reader {
            async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
                loop {
                    let s = self.rx.borrow_and_update().clone();
                    if let Some(Err(e)) = &s.outcome {
                        return Err(std::io::Error::other(e.clone()));
                    }
                    let verified = matches!(s.outcome, Some(Ok(())));
                    let allowed = if verified {
                        s.written
                    } else {
                        s.written.saturating_sub(HOLDBACK)
                    };
                    if self.pos < allowed {
                        if self.file.is_none() {
                            self.file = Some(
                                open_for_reading(
                                    &self.store,
                                    &self.fetch.digest,
                                    s.temp_path.as_ref(),
                                )
                                .await?,
                            );
                        }
                        let file = self.file.as_mut().expect("opened above");
                        let want = ((allowed - self.pos) as usize).min(READ_CHUNK);
                        let mut buf = vec![0u8; want];
                        file.seek(std::io::SeekFrom::Start(self.pos)).await?;
                        file.read_exact(&mut buf).await?;
                        self.pos += want as u64;
                        return Ok(Some(Bytes::from(buf)));
                    }
                    if verified {
                        return Ok(None);
                    }
                    if self.rx.changed().await.is_err() && self.rx.borrow().outcome.is_none() {
                        return Err(std::io::Error::other(self.fetch.vanished()));
                    }
                }
            }
        }

        futures_util::stream::unfold(reader, |mut r| async move {
            if r.finished {
                return None;
            }
            match r.next_chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), r)),
                Ok(None) => None,
                Err(e) => {
                    r.finished = true;
                    Some((Err(e), r))
                }
            }
        })
    }
}

/// Opens the temp file if it still exists, else the committed blob.
async fn open_for_reading(
    store: &Store,
    digest: &Digest,
    temp: Option<&PathBuf>,
) -> std::io::Result<tokio::fs::File> {
    if let Some(path) = temp {
        match tokio::fs::File::open(path).await {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let path = store
        .blob_path(digest)
        .await
        .map_err(std::io::Error::other)?;
    tokio::fs::File::open(path).await
}

async fn download(
    store: &Store,
    client: &RegistryClient,
    repository: &str,
    digest: &Digest,
    idle_timeout: Duration,
    state: &watch::Sender<FetchState>,
) -> Result<u64, UpstreamError> {
    let registry = client.endpoint().registry.clone();
    let local = |e: StoreError| {
        if e.is_no_space() {
            UpstreamError::NoSpace {
                registry: registry.clone(),
                message: format!("cannot store {digest}: {e}"),
                cause: None,
            }
        } else {
            UpstreamError::Unavailable {
                registry: registry.clone(),
                message: format!("cannot store {digest}: {e}"),
                cause: None,
            }
        }
    };
    let mut blob = client.open_blob(repository, digest).await?;
    let mut writer = store.writer().map_err(local)?;
    state.send_modify(|s| {
        s.started = true;
        s.total = blob.content_length;
        s.temp_path = Some(writer.temp_path().to_path_buf());
    });

    // The writer lives on a blocking thread; chunks arrive through a small channel. Setting
    // `abort` before closing the channel drops the writer uncommitted (deleting the temp file).
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let abort = Arc::new(AtomicBool::new(false));
    let abort_for_writer = abort.clone();
    let state_for_writer = state.clone();
    let expected = *digest;
    type Written = (u64, Result<Digest, StoreError>);
    let writer_task =
        tokio::task::spawn_blocking(move || -> Result<Option<Written>, StoreError> {
            let mut written = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                writer
                    .write_all(&chunk)
                    .and_then(|()| writer.flush())
                    .map_err(|e| writer.write_error(e))?;
                written += chunk.len() as u64;
                state_for_writer.send_modify(|s| s.written = written);
            }
            if abort_for_writer.load(Ordering::SeqCst) {
                return Ok(None);
            }
            Ok(Some((written, writer.commit_expect(&expected))))
        });

    let mut received = 0u64;
    let mut failure = None;
    loop {
        match tokio::time::timeout(idle_timeout, blob.stream.next()).await {
            Ok(Some(Ok(chunk))) => {
                received += chunk.len() as u64;
                if let Some(total) = blob.content_length
                    && received > total
                {
                    failure = Some(format!(
                        "upstream sent more than the announced {total} bytes"
                    ));
                    break;
                }
                if tx.send(chunk).await.is_err() {
                    // The writer failed (e.g. the disk is full): its error is the cause.
                    drop(tx);
                    return match writer_task.await {
                        Ok(Err(e)) => Err(local(e)),
                        _ => Err(UpstreamError::Unavailable {
                            registry,
                            message: format!("{digest}: local writer stopped"),
                            cause: None,
                        }),
                    };
                }
            }
            Ok(Some(Err(e))) => {
                failure = Some(format!("download interrupted: {e}"));
                break;
            }
            Ok(None) => break,
            Err(_) => {
                failure = Some(format!("no data from upstream for {idle_timeout:?}"));
                break;
            }
        }
    }
    if failure.is_none()
        && let Some(total) = blob.content_length
        && received != total
    {
        failure = Some(format!("upstream sent {received} of {total} bytes"));
    }
    if let Some(message) = failure {
        // Dropping the sender ends the writer loop; aborting the task drops the writer, which
        // deletes the temp file. Wait for it so nothing is left behind.
        abort.store(true, Ordering::SeqCst);
        drop(tx);
        let _ = writer_task.await;
        return Err(UpstreamError::Unavailable {
            registry,
            message: format!("{digest}: {message}"),
            cause: None,
        });
    }
    drop(tx);
    let (written, committed) = writer_task
        .await
        .map_err(|e| UpstreamError::Unavailable {
            registry: registry.clone(),
            message: format!("writer task failed: {e}"),
            cause: None,
        })?
        .map_err(local)?
        .expect("not aborted");
    match committed {
        Ok(_) => Ok(written),
        Err(StoreError::DigestMismatch { expected, actual }) => Err(UpstreamError::Corrupt {
            registry,
            message: format!(
                "blob {repository}@{expected} from upstream hashes to {actual}: rejected, nothing cached"
            ),
            cause: None,
        }),
        Err(e) => Err(local(e)),
    }
}
