//! The image operations of the admin API (`/api/v1/images…`), so `bootfactory mirror
//! import|export|pull|list` work while `bootfactory serve` owns the store: the operations
//! themselves are [`crate::oci::bundle`]'s and [`Mirror::pull`]'s; this module runs them for a
//! request and reports their progress as [`Event`]s (one JSON line each on the wire).
//!
//! Long operations run in a task of their own and report into a channel, so the response
//! starts at once and a client that stops reading only stops the progress lines: an import
//! fails with its request body (nothing recorded), a pull finishes what it started.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use super::mirror::{Mirror, MirrorError, PullProgress, Requester};
use crate::oci::bundle::{self, Event, EventProgress, Progress as _};
use crate::oci::{CatalogEntry, ImageName, ImageRef};
use crate::store::Digest;

/// `GET /api/v1/images`: what `mirror list --json` prints, and the store's total.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageList {
    /// Every stored image.
    pub images: Vec<CatalogEntry>,
    /// Bytes the store holds in all.
    pub store_bytes: u64,
}

/// The stored images.
pub fn list(mirror: &Mirror) -> Result<ImageList, crate::oci::CatalogError> {
    list_from(mirror.catalog())
}

/// The images `catalog` holds (blocking: walks every image's blobs; the web UI runs it on a
/// blocking thread).
pub fn list_from(
    catalog: &crate::oci::ImageCatalog,
) -> Result<ImageList, crate::oci::CatalogError> {
    Ok(ImageList {
        images: catalog.list()?,
        store_bytes: catalog.store().total_size(),
    })
}

/// Parses `--name`: a repository without tag or digest.
pub fn parse_repository(text: &str) -> Result<ImageName, String> {
    let r: ImageRef = text
        .parse()
        .map_err(|e| format!("invalid repository {text:?}: {e}"))?;
    if r.tag.is_some() || r.digest.is_some() {
        return Err(format!(
            "{text:?}: name a repository without tag or digest, e.g. ghcr.io/siderolabs/imager"
        ));
    }
    Ok(r.name)
}

/// Why an import cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The body does not start like a tar, tar.gz or tar.zst.
    #[error("the body is not a bundle: send a tar, tar.gz or tar.zst of an OCI image layout")]
    NotABundle,
    /// The body broke off before its first bytes.
    #[error("the upload broke off: {0}")]
    Body(String),
}

/// Bytes looked at before answering: a tar header's magic is at offset 257.
const SNIFF_BYTES: usize = 262;

/// Whether `head` (the first [`SNIFF_BYTES`] or the whole body) starts a tar, tar.gz or
/// tar.zst.
fn looks_like_bundle(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.get(257..262) == Some(b"ustar")
}

/// Imports the bundle arriving as `body` (see [`bundle::import_stream`]) in a task; the
/// events end with `done` (the [`bundle::ImportReport`]) or `error`. The first bytes are
/// looked at first, so what is not a bundle at all is refused before any answer starts.
pub async fn import<S, E>(
    mirror: &Mirror,
    body: S,
    size: Option<u64>,
    name: Option<ImageName>,
) -> Result<UnboundedReceiver<Event>, ImportError>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send + 'static,
{
    use futures_util::StreamExt as _;
    let mut body = body;
    let mut head = Vec::new();
    let mut chunks = Vec::new();
    while head.len() < SNIFF_BYTES {
        match body.next().await {
            Some(Ok(chunk)) => {
                head.extend_from_slice(&chunk[..chunk.len().min(SNIFF_BYTES - head.len())]);
                chunks.push(Ok::<Bytes, E>(chunk));
            }
            Some(Err(e)) => return Err(ImportError::Body(e.to_string())),
            None => break,
        }
    }
    if !looks_like_bundle(&head) {
        return Err(ImportError::NotABundle);
    }
    let body = futures_util::stream::iter(chunks).chain(body);
    let catalog = mirror.catalog().clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let progress = EventProgress::new(tx);
        let result = bundle::import_stream(&catalog, body, size, name.as_ref(), &progress).await;
        let flushed = match &result {
            Ok(_) => catalog
                .store()
                .flush()
                .await
                .map_err(bundle::BundleError::from),
            Err(_) => Ok(()),
        };
        progress.finish(match result.and_then(|r| flushed.map(|()| r)) {
            Ok(report) => {
                if !report.images.is_empty() {
                    tracing::info!(
                        images = report.images.len(),
                        blobs = report.blobs_written,
                        "bundle imported"
                    );
                }
                Event::Done {
                    report: serde_json::to_value(&report).unwrap_or_default(),
                }
            }
            Err(e) => Event::Error {
                message: crate::errors::chain(&e),
            },
        });
    });
    Ok(rx)
}

/// One image's pull, in `done`'s report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PulledImage {
    /// The image as asked.
    pub image: String,
    /// Its root digest.
    pub digest: Option<Digest>,
    /// Manifests visited.
    pub manifests: usize,
    /// Blobs downloaded.
    pub blobs_fetched: usize,
    /// Bytes downloaded.
    pub bytes_fetched: u64,
    /// Blobs that were already stored.
    pub blobs_cached: usize,
}

/// Pulls `images` one after the other in a task; progress counts the planned bytes of each.
/// The first failure ends it with `error`; else `done` with `{"images": [PulledImage…]}`.
pub fn pull(mirror: Arc<Mirror>, images: Vec<ImageRef>) -> UnboundedReceiver<Event> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let progress = EventProgress::new(tx);
        let mut pulled = Vec::new();
        for image in images {
            // Bytes of the blob downloading now already reported (blobs come one by one).
            let current = std::sync::atomic::AtomicU64::new(0);
            let report = mirror
                .pull(&image, Requester::Internal, &|p| {
                    use std::sync::atomic::Ordering::Relaxed;
                    match p {
                        PullProgress::Planned { bytes, .. } => progress.set_total(bytes),
                        PullProgress::BlobBytes { written, .. } => {
                            progress.advance(written.saturating_sub(current.swap(written, Relaxed)))
                        }
                        PullProgress::BlobDone { size, .. } => {
                            progress.advance(size.saturating_sub(current.swap(0, Relaxed)))
                        }
                    }
                })
                .await;
            match report {
                Ok(r) => {
                    progress.message(&format!("pulled {image}"));
                    pulled.push(PulledImage {
                        image: image.to_string(),
                        digest: r.digest,
                        manifests: r.manifests,
                        blobs_fetched: r.blobs_fetched,
                        bytes_fetched: r.bytes_fetched,
                        blobs_cached: r.blobs_cached,
                    });
                }
                Err(e) => {
                    progress.finish(Event::Error {
                        message: format!("cannot pull {image}: {}", crate::errors::chain(&e)),
                    });
                    return;
                }
            }
        }
        let _ = mirror.catalog().store().flush().await;
        progress.finish(Event::Done {
            report: serde_json::json!({ "images": pulled }),
        });
    });
    rx
}

/// Why an export cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// An image could not be resolved or pulled.
    #[error("cannot export {image}")]
    Image {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: MirrorError,
    },
}

/// Resolves `images` (pulling what is missing unless offline) and streams the bundle tar:
/// the chunks of [`bundle::write_bundle`]; an error midway ends the stream with an error (the
/// client's download is then incomplete and it must not keep it).
pub async fn export(
    mirror: &Mirror,
    images: &[ImageRef],
) -> Result<impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static, ExportError>
{
    let mut roots = Vec::new();
    for image in images {
        let report = mirror
            .pull(image, Requester::Internal, &|_| {})
            .await
            .map_err(|source| ExportError::Image {
                image: image.to_string(),
                source,
            })?;
        if let Some(digest) = report.digest {
            roots.push((image.clone(), digest));
        }
    }
    let catalog = mirror.catalog().clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::spawn(async move {
        let sink = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        if let Err(e) = bundle::write_bundle(&catalog, &roots, sink, &bundle::NoProgress).await {
            let _ = tx
                .send(Err(std::io::Error::other(crate::errors::chain(&e))))
                .await;
        }
    });
    Ok(tokio_stream_from(rx))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Chunks sent to the response body.
const CHUNK: usize = 256 * 1024;

/// A blocking writer into a bounded channel (the response body): a client that reads
/// slowly blocks the writer; one that went away fails it.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_bundle;

    #[test]
    fn bundles_are_recognised_by_their_first_bytes() {
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(looks_like_bundle(&tar));
        assert!(looks_like_bundle(&[0x1f, 0x8b, 8]));
        assert!(looks_like_bundle(&[0x28, 0xb5, 0x2f, 0xfd, 0]));
        assert!(!looks_like_bundle(b""));
        assert!(!looks_like_bundle(b"{\"schemaVersion\": 2}"));
        assert!(!looks_like_bundle(
            &tar[..300].iter().map(|_| b'x').collect::<Vec<_>>()
        ));
    }
}
