//! A blob download in flight: fetched once from the upstream while any number of readers
//! follow it, hashed once as it arrives, committed to the store only when the digest matched.
//!
//! One task per blob (see [`BlobFetch::start`]) reads the upstream body chunk by chunk. Each
//! chunk is pushed into a [`store::Ingest`](crate::store::Ingest), which queues the same bytes
//! for a blocking thread that hashes and writes them, and is handed to the readers at once: the last [`WINDOW`] bytes stay in memory (shared `Bytes`, no copy), and a reader that
//! falls further behind reads them back from the temp file, which holds every byte that left
//! the window. The download does not wait for readers, and a client that disconnects does not
//! cancel it; concurrent requests for the same blob share it ([`super::Mirror::blob`] keeps one
//! `BlobFetch` per digest).
//!
//! **What a client sees when the upstream lies.** Every byte is streamed as soon as it arrived
//! and was hashed, except the end: a reader's stream ends successfully only after the whole
//! blob hashed to the requested digest. When the upstream announced a length, the chunk that
//! completes it is released only after that check (the ingest's thread hashing what it still
//! had queued, at most 16 MiB, milliseconds; the `fsync` and the index record come later and
//! gate only the store commit, never the bytes);
//! without a length the response is chunked and its terminating chunk waits for the check. If
//! the digest does not match, the body is cut short or the connection drops, every reader's
//! stream ends with an error, so the server aborts the connection: the client sees fewer bytes
//! than `Content-Length` (or no final chunk) and fails, as with any registry whose connection
//! breaks. What it already received was the upstream's bytes, which its own digest check
//! rejects; nothing is committed to the store, and the next request fetches again. Registries
//! behave the same way (they stream before they can know); the trade-off is that a client
//! sees the failure only at the end instead of the mirror buffering the whole blob first.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;

use super::{RegistryClient, UpstreamError};
use crate::store::{Digest, Store, StoreError};

/// Recent bytes kept in memory for readers; older ones are read back from the temp file.
pub const WINDOW: u64 = 8 << 20;
/// Largest read from the temp file for a reader that fell behind the window.
const FILE_READ: usize = 1 << 20;

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
    /// Bytes received, hashed and handed to readers so far.
    pub received: u64,
    /// The whole blob arrived and hashed to its digest: readers may end their streams (the
    /// store commit may still be running).
    pub verified: bool,
    /// Set once the download ended: `Ok` means verified and committed.
    pub outcome: Option<Result<(), UpstreamError>>,
    /// The most recent chunks (offset, bytes), in order, ending at `received`.
    window: VecDeque<(u64, Bytes)>,
    /// A read handle on the temp file: every byte before the window's first one is in it.
    file: Option<Arc<std::fs::File>>,
}

/// A shared download of one blob.
pub struct BlobFetch {
    digest: Digest,
    registry: String,
    state: watch::Receiver<FetchState>,
    /// Started by a registry client (counted against `mirror.maxFetches`).
    by_client: bool,
}

impl BlobFetch {
    /// Whether a registry client started it (what `mirror.maxFetches` counts).
    pub fn by_client(&self) -> bool {
        self.by_client
    }

    /// Starts downloading `digest` of `repository` into `store`; `on_done` runs when it ends
    /// (success or failure), e.g. to forget the in-flight entry.
    pub fn start(
        store: Store,
        client: Arc<RegistryClient>,
        repository: String,
        digest: Digest,
        idle_timeout: Duration,
        by_client: bool,
        on_done: impl FnOnce() + Send + 'static,
    ) -> Arc<BlobFetch> {
        let (tx, rx) = watch::channel(FetchState::default());
        let registry = client.endpoint().registry.clone();
        let fetch = Arc::new(BlobFetch {
            digest,
            registry: registry.clone(),
            state: rx,
            by_client,
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
                        Some(s.received)
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
                if s.received > reported
                    && (s.received - reported >= PROGRESS_BYTES
                        || at.elapsed() >= PROGRESS_INTERVAL)
                {
                    reported = s.received;
                    at = Instant::now();
                    on_progress(reported);
                }
            }
            if rx.changed().await.is_err() {
                return Err(self.vanished());
            }
        }
    }

    /// Whether the whole blob arrived and matched its digest (the commit may still run).
    pub fn is_verified(&self) -> bool {
        self.state.borrow().verified
    }

    /// Waits until the whole blob arrived and matched its digest (readers' streams may end);
    /// the store commit may still be running.
    pub async fn wait_verified(&self) -> Result<(), UpstreamError> {
        let mut rx = self.state.clone();
        loop {
            {
                let s = rx.borrow_and_update();
                if s.verified {
                    return Ok(());
                }
                if let Some(outcome) = &s.outcome {
                    return outcome.clone();
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

    /// A stream of the blob's bytes that follows the download (see the module docs): chunks
    /// from memory while the reader keeps up, from the temp file when it fell behind; it ends
    /// with an error unless the blob was verified.
    pub fn reader(self: &Arc<Self>) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        struct Reader {
            fetch: Arc<BlobFetch>,
            rx: watch::Receiver<FetchState>,
            pos: u64,
            closed: bool,
            finished: bool,
        }
        enum Step {
            Chunk(Bytes),
            File(Arc<std::fs::File>, usize),
            End,
            Fail(UpstreamError),
            Wait,
        }
        let reader = Reader {
            rx: self.state.clone(),
            fetch: self.clone(),
            pos: 0,
            closed: false,
            finished: false,
        };

        impl Reader {
            fn step(&mut self) -> Step {
                let s = self.rx.borrow_and_update();
                if self.pos < s.received {
                    let i = s
                        .window
                        .partition_point(|(at, b)| at + b.len() as u64 <= self.pos);
                    if let Some((at, b)) = s.window.get(i)
                        && *at <= self.pos
                    {
                        return Step::Chunk(b.slice((self.pos - at) as usize..));
                    }
                    // Behind the window: everything before it is in the temp file.
                    let until = s.window.front().map_or(s.received, |(at, _)| *at);
                    let Some(file) = s.file.clone() else {
                        return Step::Fail(self.fetch.vanished());
                    };
                    let len = (until - self.pos).min(FILE_READ as u64) as usize;
                    return Step::File(file, len);
                }
                if s.verified {
                    return Step::End;
                }
                match &s.outcome {
                    Some(Err(e)) => Step::Fail(e.clone()),
                    // Committed but not marked verified cannot happen; end rather than hang.
                    Some(Ok(())) => Step::End,
                    None => Step::Wait,
                }
            }

            async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
                loop {
                    match self.step() {
                        Step::Chunk(b) => {
                            self.pos += b.len() as u64;
                            return Ok(Some(b));
                        }
                        Step::File(file, len) => {
                            let at = self.pos;
                            let buf = tokio::task::spawn_blocking(move || {
                                let mut buf = vec![0u8; len];
                                file.read_exact_at(&mut buf, at).map(|()| buf)
                            })
                            .await
                            .map_err(std::io::Error::other)??;
                            self.pos += len as u64;
                            return Ok(Some(Bytes::from(buf)));
                        }
                        Step::End => return Ok(None),
                        Step::Fail(e) => return Err(std::io::Error::other(e)),
                        Step::Wait if self.closed => {
                            return Err(std::io::Error::other(self.fetch.vanished()));
                        }
                        Step::Wait => {
                            if self.rx.changed().await.is_err() {
                                // The download task is gone: look at its last state once more.
                                self.closed = true;
                            }
                        }
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

/// Drops the oldest chunks that are on disk while at least [`WINDOW`] bytes stay in memory.
fn trim_window(s: &mut FetchState, written: u64) {
    while let Some((at, b)) = s.window.front() {
        let end = at + b.len() as u64;
        if end <= written && s.received - end >= WINDOW {
            s.window.pop_front();
        } else {
            break;
        }
    }
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
    let failed = |message: String| UpstreamError::Unavailable {
        registry: registry.clone(),
        message: format!("{digest}: {message}"),
        cause: None,
    };
    let corrupt = |actual: Digest| UpstreamError::Corrupt {
        registry: registry.clone(),
        message: format!(
            "blob {repository}@{digest} from upstream hashes to {actual}: rejected, nothing cached"
        ),
        cause: None,
    };
    let mut blob = client.open_blob(repository, digest).await?;
    let mut ingest = store.ingest().map_err(local)?;
    let total = blob.content_length;
    state.send_modify(|s| {
        s.started = true;
        s.total = total;
        s.file = Some(ingest.read_handle());
    });

    let mut received = 0u64;
    let result = loop {
        match tokio::time::timeout(idle_timeout, blob.stream.next()).await {
            Ok(Some(Ok(chunk))) => {
                if chunk.is_empty() {
                    continue;
                }
                let at = received;
                received += chunk.len() as u64;
                if let Some(total) = total
                    && received > total
                {
                    break Err(failed(format!(
                        "upstream sent more than the announced {total} bytes"
                    )));
                }
                // Hashed and written by the ingest's thread.
                if let Err(e) = ingest.push(chunk.clone()).await {
                    break Err(local(e));
                }
                // The chunk that completes the announced length is released only if the
                // whole blob matches (see the module docs).
                let verified = total == Some(received);
                if verified {
                    match ingest.finish().await {
                        Ok(actual) if actual == *digest => {}
                        Ok(actual) => break Err(corrupt(actual)),
                        Err(e) => break Err(local(e)),
                    }
                }
                let written = ingest.written();
                state.send_modify(|s| {
                    s.window.push_back((at, chunk));
                    s.received = received;
                    s.verified = verified;
                    trim_window(s, written);
                });
                // Bounded memory: wait here (not before releasing) when the disk lags.
                if let Err(e) = ingest.drain_to_limit().await {
                    break Err(local(e));
                }
            }
            Ok(Some(Err(e))) => break Err(failed(format!("download interrupted: {e}"))),
            Ok(None) => {
                if let Some(total) = total
                    && received != total
                {
                    break Err(failed(format!("upstream sent {received} of {total} bytes")));
                }
                if total.is_none() || received == 0 {
                    match ingest.finish().await {
                        Ok(actual) if actual == *digest => {}
                        Ok(actual) => break Err(corrupt(actual)),
                        Err(e) => break Err(local(e)),
                    }
                    state.send_modify(|s| s.verified = true);
                }
                break Ok(());
            }
            Err(_) => {
                break Err(failed(format!(
                    "no data from upstream for {idle_timeout:?}"
                )));
            }
        }
    };
    if let Err(e) = result {
        // Deletes the temp file; readers see the error (their connections are aborted).
        ingest.abort().await;
        return Err(e);
    }
    // Readers have every byte and their streams have ended; what remains is making the blob
    // durable and indexing it.
    match ingest.commit_expect(digest).await {
        Ok(_) => {
            // Everything is in the committed file now: free the memory window.
            state.send_modify(|s| s.window.clear());
            Ok(received)
        }
        Err(StoreError::DigestMismatch { actual, .. }) => Err(corrupt(actual)),
        Err(e) => Err(local(e)),
    }
}
