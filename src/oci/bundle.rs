//! Air-gapped bundles: OCI image layouts (a directory, or a tar of one, optionally gzip- or
//! zstd-compressed) imported into the store, and tars of stored images exported for another
//! site. These are what `skopeo copy … oci:`/`oci-archive:`, `talosctl image cache-create`,
//! crane and oras produce and consume.
//!
//! Import is restartable and leaves nothing half-visible: blobs are written content-addressed
//! (already-present ones are skipped), and an image's name is recorded only after every blob it
//! needs is in the store.
//!
//! A tar is read in one pass, whatever the order of its entries: every `blobs/sha256/<hex>`
//! entry is streamed into the store and verified against its name as it arrives (a blob that
//! does not hash to its name fails the import), `index.json` and `oci-layout` are kept in
//! memory (at most [`MAX_LAYOUT_FILE`] each), and the images `index.json` names are recorded
//! only at the end, after their whole closure is checked. So no spooling is needed even when
//! `index.json` comes last, and a stream that breaks midway (a client that disconnects from
//! `POST /api/v1/images/import`) leaves only unnamed blobs, which the next import of the same
//! bundle skips and `store gc` reclaims. [`import_stream`] takes such a tar from an async byte
//! stream (the admin API's request body), bounded by [`MAX_UPLOAD_BYTES`] and the store's
//! quota; [`write_bundle`] writes an export into any writer (a file, or the admin API's
//! response body). [`Event`] is the progress of both as the admin API reports it (NDJSON).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::oci::{
    Descriptor, ImageCatalog, ImageName, ImageRef, ManifestKind, media, parse_manifest,
};
use crate::store::{BlobWriter, Digest, Store, StoreError};

/// The annotation naming an image in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation with the full image name.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// A bundle problem, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading the bundle failed.
    #[error("{path}: {message}")]
    Read {
        /// The bundle path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The bundle is not an OCI image layout.
    #[error("{0}")]
    Layout(String),
    /// A store failure.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A catalog failure.
    #[error(transparent)]
    Catalog(#[from] crate::oci::CatalogError),
    /// Writing the export failed.
    #[error("cannot write {path}: {message}")]
    Write {
        /// The output path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Progress callbacks for long operations.
pub trait Progress: Send + Sync {
    /// The total amount of work in bytes, once known.
    fn set_total(&self, bytes: u64);
    /// `bytes` more are done.
    fn advance(&self, bytes: u64);
    /// A line for the operator.
    fn message(&self, text: &str);
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn set_total(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn message(&self, _: &str) {}
}

/// Largest `index.json` or `oci-layout` read from a bundle.
pub const MAX_LAYOUT_FILE: u64 = 64 << 20;

/// Largest bundle one upload may stream into the store (the store's quota applies too).
pub const MAX_UPLOAD_BYTES: u64 = 1 << 40;

/// One line of an admin API operation's progress (`application/x-ndjson`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Event {
    /// Bytes done so far, of `total` when known.
    Progress {
        /// Bytes done.
        bytes: u64,
        /// Bytes in all, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
    },
    /// A line for the operator.
    Message {
        /// The text.
        text: String,
    },
    /// The operation finished; its report.
    Done {
        /// The operation's report (an [`ImportReport`], or the pull reports).
        report: serde_json::Value,
    },
    /// The operation failed.
    Error {
        /// The error chain.
        message: String,
    },
}

/// A [`Progress`] that sends [`Event`]s into a channel, progress at most every 250 ms.
pub struct EventProgress {
    tx: tokio::sync::mpsc::UnboundedSender<Event>,
    state: std::sync::Mutex<EventState>,
}

struct EventState {
    bytes: u64,
    total: Option<u64>,
    last: Option<std::time::Instant>,
}

impl EventProgress {
    /// Progress sent to `tx`.
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<Event>) -> EventProgress {
        EventProgress {
            tx,
            state: std::sync::Mutex::new(EventState {
                bytes: 0,
                total: None,
                last: None,
            }),
        }
    }

    /// Sends any progress not yet sent.
    pub fn flush(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.last = Some(std::time::Instant::now());
        let _ = self.tx.send(Event::Progress {
            bytes: st.bytes,
            total: st.total,
        });
    }

    /// Sends the final event.
    pub fn finish(&self, event: Event) {
        self.flush();
        let _ = self.tx.send(event);
    }
}

impl Progress for EventProgress {
    fn set_total(&self, bytes: u64) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).total = Some(bytes);
        self.flush();
    }
    fn advance(&self, bytes: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.bytes += bytes;
        if st
            .last
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(250))
        {
            st.last = Some(std::time::Instant::now());
            let _ = self.tx.send(Event::Progress {
                bytes: st.bytes,
                total: st.total,
            });
        }
    }
    fn message(&self, text: &str) {
        let _ = self.tx.send(Event::Message {
            text: text.to_string(),
        });
    }
}

/// One image recorded by an import.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportedImage {
    /// Full reference (`registry/repo:tag` or `registry/repo@digest`).
    pub reference: String,
    /// Root digest.
    pub digest: Digest,
}

/// The outcome of an import.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImportReport {
    /// Images now named in the store.
    pub images: Vec<ImportedImage>,
    /// Blobs written.
    pub blobs_written: usize,
    /// Blobs already present (skipped).
    pub blobs_skipped: usize,
    /// Bytes written.
    pub bytes_written: u64,
    /// Index entries that could not be imported, with the reason.
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct LayoutIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// Imports an OCI layout directory or tar into the store. `name` names images whose
/// `index.json` entry carries only a tag (as `skopeo copy … oci:DIR:TAG` writes).
pub async fn import(
    catalog: &ImageCatalog,
    path: &Path,
    name: Option<&ImageName>,
    progress: &dyn Progress,
) -> Result<ImportReport, BundleError> {
    let read_err = |message: String| BundleError::Read {
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| read_err(e.to_string()))?;
    let mut report = ImportReport::default();
    let index_bytes = if meta.is_dir() {
        let index = std::fs::read(path.join("index.json"))
            .map_err(|e| read_err(format!("not an OCI image layout (index.json: {e})")))?;
        check_layout_file(&std::fs::read(path.join("oci-layout")).unwrap_or_default())?;
        import_dir_blobs(catalog.store(), path, &index, progress, &mut report).await?;
        index
    } else {
        let file = File::open(path).map_err(|e| read_err(e.to_string()))?;
        let reader = Box::new(file);
        import_tar_blobs(
            catalog.store(),
            reader,
            path,
            Some(meta.len()),
            progress,
            &mut report,
        )
        .await?
    };
    record_images(catalog, &index_bytes, name, &mut report).await?;
    Ok(report)
}

/// Imports a tar (tar.gz, tar.zst) of an OCI layout from an already opened `file` (`path`
/// names it in messages), as [`import`] does a path.
pub async fn import_file(
    catalog: &ImageCatalog,
    file: File,
    path: &Path,
    name: Option<&ImageName>,
    progress: &dyn Progress,
) -> Result<ImportReport, BundleError> {
    let size = file.metadata().ok().map(|m| m.len());
    let mut report = ImportReport::default();
    let index = import_tar_blobs(
        catalog.store(),
        Box::new(file),
        path,
        size,
        progress,
        &mut report,
    )
    .await?;
    record_images(catalog, &index, name, &mut report).await?;
    Ok(report)
}

/// Imports a tar (tar.gz, tar.zst) of an OCI layout arriving as a byte stream (the admin
/// API's request body), `size` its length when known. More than [`MAX_UPLOAD_BYTES`] is
/// refused; a stream error (the client went away, the body deadline) fails the import with
/// nothing recorded.
pub async fn import_stream<S, E>(
    catalog: &ImageCatalog,
    stream: S,
    size: Option<u64>,
    name: Option<&ImageName>,
    progress: &dyn Progress,
) -> Result<ImportReport, BundleError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    use futures_util::StreamExt as _;
    if size.is_some_and(|n| n > MAX_UPLOAD_BYTES) {
        return Err(BundleError::Layout(format!(
            "the bundle is larger than the {MAX_UPLOAD_BYTES} bytes one upload may bring"
        )));
    }
    // The tar reader is blocking (it runs on a blocking thread); the stream is read on the
    // runtime and handed over through a small bounded channel (back-pressure).
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    let pump = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let item = match chunk {
                Ok(b) => {
                    total += b.len() as u64;
                    if total > MAX_UPLOAD_BYTES {
                        Err(std::io::Error::other(format!(
                            "the bundle is larger than the {MAX_UPLOAD_BYTES} bytes one upload may bring"
                        )))
                    } else {
                        Ok(b)
                    }
                }
                Err(e) => Err(std::io::Error::other(format!("the upload broke off: {e}"))),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    let reader = Box::new(ChannelReader {
        rx,
        current: bytes::Bytes::new(),
    });
    let mut report = ImportReport::default();
    let label = Path::new("upload");
    let result =
        import_tar_blobs(catalog.store(), reader, label, size, progress, &mut report).await;
    pump.abort();
    let index = result?;
    record_images(catalog, &index, name, &mut report).await?;
    Ok(report)
}

/// A blocking reader over chunks sent from the runtime.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

fn check_layout_file(bytes: &[u8]) -> Result<(), BundleError> {
    #[derive(Deserialize)]
    struct OciLayout {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    match serde_json::from_slice::<OciLayout>(bytes) {
        Ok(l) if l.version.starts_with("1.") => Ok(()),
        Ok(l) => Err(BundleError::Layout(format!(
            "unsupported OCI layout version {}",
            l.version
        ))),
        Err(_) => Err(BundleError::Layout(
            "missing or invalid oci-layout file (not an OCI image layout)".into(),
        )),
    }
}

fn blob_file(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(digest.hex())
}

/// Directory import: walk manifests from `index.json` and copy exactly the blobs they need.
async fn import_dir_blobs(
    store: &Store,
    dir: &Path,
    index: &[u8],
    progress: &dyn Progress,
    report: &mut ImportReport,
) -> Result<(), BundleError> {
    let index: LayoutIndex = serde_json::from_slice(index)
        .map_err(|e| BundleError::Layout(format!("invalid index.json: {e}")))?;
    // Plan: every descriptor reachable through manifests present in the layout.
    let mut needed: Vec<Descriptor> = Vec::new();
    let mut seen = HashSet::new();
    let mut queue: Vec<Descriptor> = index.manifests.clone();
    while let Some(d) = queue.pop() {
        if !seen.insert(d.digest) {
            continue;
        }
        if media::is_manifest(&d.media_type)
            && let Ok(bytes) = std::fs::read(blob_file(dir, &d.digest))
            && let Ok(m) = parse_manifest(&bytes, Some(&d.media_type))
        {
            queue.extend(m.children().filter(|c| c.urls.is_none()).cloned());
        }
        needed.push(d);
    }
    progress.set_total(needed.iter().map(|d| d.size).sum());
    for d in needed {
        if store.contains(&d.digest) {
            report.blobs_skipped += 1;
            progress.advance(d.size);
            continue;
        }
        let path = blob_file(dir, &d.digest);
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            // Layouts may lack blobs (e.g. other platforms); recording decides if that matters.
            Err(_) => continue,
        };
        store
            .put_stream_expect(file, &d.digest)
            .await
            .map_err(|e| damaged_or_store(e, &d.digest, "layout"))?;
        report.blobs_written += 1;
        report.bytes_written += d.size;
        progress.advance(d.size);
    }
    Ok(())
}

/// A failed blob write during import: content that does not hash to its name means the
/// bundle is damaged; anything else (a full disk, an I/O error of the store) is the store's
/// problem and is reported as such, never blamed on the bundle.
fn damaged_or_store(e: StoreError, digest: &Digest, what: &str) -> BundleError {
    match e {
        e @ StoreError::DigestMismatch { .. } => {
            BundleError::Layout(format!("blob {digest} in the {what} is damaged: {e}"))
        }
        e => BundleError::Store(e),
    }
}

/// Which side of a copy failed.
enum CopyError {
    /// Reading the bundle.
    Read(std::io::Error),
    /// Writing the store.
    Write(StoreError),
}

/// Copies a tar entry into a blob writer, telling read failures (the bundle) from write
/// failures (the store, e.g. no space left).
fn copy_entry(r: &mut impl Read, w: &mut BlobWriter) -> Result<u64, CopyError> {
    use std::io::Write as _;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        w.write_all(&buf[..n])
            .map_err(|e| CopyError::Write(w.write_error(e)))?;
        total += n as u64;
    }
}

/// Wraps a reader, reporting the bytes read (batched) through a channel.
struct Counting<R> {
    inner: R,
    unreported: u64,
    progress: tokio::sync::mpsc::UnboundedSender<u64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.unreported += n as u64;
        if self.unreported >= 1 << 20 || n == 0 {
            let _ = self.progress.send(std::mem::take(&mut self.unreported));
        }
        Ok(n)
    }
}

impl<R> Drop for Counting<R> {
    fn drop(&mut self) {
        // What was read before the archive ended (or failed) counts too.
        if self.unreported > 0 {
            let _ = self.progress.send(std::mem::take(&mut self.unreported));
        }
    }
}

/// Opens a tar that may be gzip- or zstd-compressed (detected by magic bytes).
fn open_tar(reader: impl Read + Send + 'static) -> std::io::Result<Box<dyn Read + Send>> {
    use std::io::BufRead;
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let head = reader.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(reader)?)
    } else {
        Box::new(reader)
    })
}

/// The layout-relative path of a tar entry: `./x`, `x` and `<one dir>/x` all mean `x`.
fn layout_relative(path: &str) -> Option<&str> {
    let path = path.trim_start_matches("./");
    if path == "oci-layout" || path == "index.json" || path.starts_with("blobs/") {
        return Some(path);
    }
    let (_, rest) = path.split_once('/')?;
    (rest == "oci-layout" || rest == "index.json" || rest.starts_with("blobs/")).then_some(rest)
}

/// Tar import: one pass over the archive storing every blob; returns `index.json`.
async fn import_tar_blobs(
    store: &Store,
    source: Box<dyn Read + Send>,
    path: &Path,
    size: Option<u64>,
    progress: &dyn Progress,
    report: &mut ImportReport,
) -> Result<Vec<u8>, BundleError> {
    if let Some(size) = size {
        progress.set_total(size);
    }
    let store = store.clone();
    let path_buf = path.to_path_buf();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let task =
        tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, ImportReport), BundleError> {
            let read_err = |message: String| BundleError::Read {
                path: path_buf.clone(),
                message,
            };
            let counted = Counting {
                inner: source,
                unreported: 0,
                progress: tx,
            };
            let reader = open_tar(counted).map_err(|e| read_err(e.to_string()))?;
            let mut archive = tar::Archive::new(reader);
            let mut index = None;
            let mut layout = None;
            let mut counts = ImportReport::default();
            let entries = archive
                .entries()
                .map_err(|e| read_err(format!("not a tar archive: {e}")))?;
            for entry in entries {
                let mut entry = entry.map_err(|e| read_err(format!("damaged tar: {e}")))?;
                if !entry.header().entry_type().is_file() {
                    continue;
                }
                let name = entry
                    .path()
                    .map_err(|e| read_err(e.to_string()))?
                    .to_string_lossy()
                    .to_string();
                let Some(rel) = layout_relative(&name) else {
                    continue;
                };
                match rel {
                    "index.json" | "oci-layout" => {
                        let mut buf = Vec::new();
                        (&mut entry)
                            .take(MAX_LAYOUT_FILE)
                            .read_to_end(&mut buf)
                            .map_err(|e| read_err(e.to_string()))?;
                        if rel == "index.json" {
                            index = Some(buf);
                        } else {
                            layout = Some(buf);
                        }
                    }
                    _ => {
                        let Some(hex) = rel.strip_prefix("blobs/sha256/") else {
                            continue;
                        };
                        let Ok(digest) = Digest::from_hex(hex) else {
                            continue;
                        };
                        if store.contains(&digest) {
                            counts.blobs_skipped += 1;
                            continue;
                        }
                        let mut writer = store.writer()?;
                        let n = copy_entry(&mut entry, &mut writer).map_err(|e| match e {
                            CopyError::Read(e) => read_err(format!("reading {rel}: {e}")),
                            CopyError::Write(e) => BundleError::Store(e),
                        })?;
                        writer
                            .commit_expect(&digest)
                            .map_err(|e| damaged_or_store(e, &digest, "bundle"))?;
                        counts.blobs_written += 1;
                        counts.bytes_written += n;
                    }
                }
            }
            check_layout_file(&layout.unwrap_or_default())?;
            let index = index.ok_or_else(|| {
                BundleError::Layout(
                    "the archive has no index.json (not an OCI image layout)".into(),
                )
            })?;
            Ok((index, counts))
        });
    while let Some(n) = rx.recv().await {
        progress.advance(n);
    }
    let (index, counts) = task.await.map_err(|e| BundleError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })??;
    report.blobs_written += counts.blobs_written;
    report.blobs_skipped += counts.blobs_skipped;
    report.bytes_written += counts.bytes_written;
    Ok(index)
}

/// Names every importable `index.json` entry, after checking its whole closure is stored.
async fn record_images(
    catalog: &ImageCatalog,
    index_bytes: &[u8],
    name: Option<&ImageName>,
    report: &mut ImportReport,
) -> Result<(), BundleError> {
    let index: LayoutIndex = serde_json::from_slice(index_bytes)
        .map_err(|e| BundleError::Layout(format!("invalid index.json: {e}")))?;
    if index.manifests.is_empty() {
        return Err(BundleError::Layout("index.json lists no images".into()));
    }
    for (i, d) in index.manifests.iter().enumerate() {
        let Some((image_name, tag)) = name_of(d, name) else {
            report.skipped.push(format!(
                "index.json entry {i} ({}) has no image name: pass --name REGISTRY/REPOSITORY",
                d.digest
            ));
            continue;
        };
        match check_and_record(catalog, &image_name, d).await? {
            Ok(()) => {
                let reference = match &tag {
                    Some(t) => {
                        catalog.set_tag(&image_name, t, &d.digest)?;
                        format!("{image_name}:{t}")
                    }
                    None => format!("{image_name}@{}", d.digest),
                };
                report.images.push(ImportedImage {
                    reference,
                    digest: d.digest,
                });
            }
            Err(why) => report.skipped.push(format!("{image_name}: {why}")),
        }
    }
    Ok(())
}

/// The name and tag an `index.json` entry records.
fn name_of(d: &Descriptor, fallback: Option<&ImageName>) -> Option<(ImageName, Option<String>)> {
    let annotations = d.annotations.clone().unwrap_or_default();
    for key in [CONTAINERD_NAME, REF_NAME] {
        if let Some(value) = annotations.get(key)
            && value.contains('/')
            && let Ok(r) = value.parse::<ImageRef>()
        {
            return Some((r.name, r.tag));
        }
    }
    let fallback = fallback?.clone();
    let tag = annotations
        .get(REF_NAME)
        .filter(|t| crate::oci::reference::is_valid_tag(t))
        .cloned();
    Some((fallback, tag))
}

/// Records every manifest of the image if all its blobs are stored; otherwise says what is
/// missing and records nothing.
async fn check_and_record(
    catalog: &ImageCatalog,
    name: &ImageName,
    root: &Descriptor,
) -> Result<Result<(), String>, BundleError> {
    let store = catalog.store();
    let mut manifests = Vec::new();
    // (descriptor, referenced by an index): a platform an index names may be absent from the
    // bundle (copied without --all); anything else an image needs must be present.
    let mut queue = vec![(root.clone(), false)];
    let mut seen = HashSet::new();
    while let Some((d, from_index)) = queue.pop() {
        if !seen.insert(d.digest) {
            continue;
        }
        if !store.contains(&d.digest) {
            if from_index {
                continue;
            }
            return Ok(Err(format!("blob {} is missing from the bundle", d.digest)));
        }
        if media::is_manifest(&d.media_type) {
            let bytes = store.read_bytes(&d.digest).await?;
            let m = match parse_manifest(&bytes, Some(&d.media_type)) {
                Ok(m) => m,
                Err(e) => return Ok(Err(format!("manifest {}: {e}", d.digest))),
            };
            let index = m.kind == ManifestKind::Index;
            for c in m.children().filter(|c| c.urls.is_none()) {
                queue.push((c.clone(), index));
            }
            manifests.push((d.digest, m, bytes.len() as u64));
        }
    }
    for (digest, m, size) in manifests {
        catalog.record_manifest(name, &digest, &m, size)?;
    }
    Ok(Ok(()))
}

/// Writes a tar of an OCI image layout holding `images` (already resolved to root digests) to
/// `out`, atomically (a `.partial` file renamed at the end).
pub async fn export(
    catalog: &ImageCatalog,
    images: &[(ImageRef, Digest)],
    out: &Path,
    progress: &dyn Progress,
) -> Result<u64, BundleError> {
    let partial = partial_path(out);
    let write_err = |e: std::io::Error| BundleError::Write {
        path: out.to_path_buf(),
        message: e.to_string(),
    };
    let file = File::create(&partial).map_err(write_err)?;
    let written = export_to_file(catalog, images, file, out, progress).await;
    match written {
        Ok(n) => {
            std::fs::rename(&partial, out).map_err(write_err)?;
            Ok(n)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// The temporary name an export is written under before its rename to `out`.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Writes the tar into an already created `file` (`out` names it in messages) and syncs it.
pub async fn export_to_file(
    catalog: &ImageCatalog,
    images: &[(ImageRef, Digest)],
    file: File,
    out: &Path,
    progress: &dyn Progress,
) -> Result<u64, BundleError> {
    let writer = std::io::BufWriter::with_capacity(1 << 20, file);
    let (written, writer) = write_bundle(catalog, images, writer, progress)
        .await
        .map_err(|e| match e {
            BundleError::Write { message, .. } => BundleError::Write {
                path: out.to_path_buf(),
                message,
            },
            e => e,
        })?;
    let sync = writer
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all());
    sync.map_err(|e| BundleError::Write {
        path: out.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(written)
}

/// Writes a tar of an OCI image layout holding `images` (resolved to root digests) into
/// `sink`: `oci-layout`, every blob of their closures, then `index.json` naming them. Returns
/// the blob bytes written. Blocking writes: a sink that blocks (a channel to an HTTP body)
/// paces it.
pub async fn write_bundle<W: std::io::Write + Send + 'static>(
    catalog: &ImageCatalog,
    images: &[(ImageRef, Digest)],
    sink: W,
    progress: &dyn Progress,
) -> Result<(u64, W), BundleError> {
    let store = catalog.store().clone();
    let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
    let mut index_entries = Vec::new();
    for (reference, root) in images {
        for d in catalog.closure(root)? {
            let info = store.stat(&d).ok_or_else(|| {
                BundleError::Layout(format!(
                    "{reference}: blob {d} is not in the store (pull the image first: bootfactory mirror pull {reference})"
                ))
            })?;
            blobs.insert(d, info.size);
        }
        let record = catalog.manifest(root).ok_or_else(|| {
            BundleError::Layout(format!("{reference}: {root} is not a stored manifest"))
        })?;
        let mut annotations = BTreeMap::new();
        annotations.insert(REF_NAME.to_string(), reference.to_string());
        annotations.insert(CONTAINERD_NAME.to_string(), reference.to_string());
        index_entries.push(Descriptor {
            media_type: record.media_type,
            digest: *root,
            size: record.size,
            platform: None,
            annotations: Some(annotations),
            artifact_type: None,
            urls: None,
        });
    }
    progress.set_total(blobs.values().sum());
    let mut paths = Vec::with_capacity(blobs.len());
    for d in blobs.keys() {
        paths.push((*d, store.blob_path(d).await?));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": index_entries,
    }))
    .expect("index serialises");
    let write_err = |e: std::io::Error| BundleError::Write {
        path: PathBuf::from("the export"),
        message: e.to_string(),
    };
    // The tar is written on a blocking thread (file reads, blocking sink).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let write = move || -> std::io::Result<(u64, W)> {
        let mut tar = tar::Builder::new(sink);
        let mut total = 0u64;
        let add = |tar: &mut tar::Builder<_>, name: &str, size: u64, data: &mut dyn Read| {
            let mut header = tar::Header::new_ustar();
            header.set_size(size);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, name, data)
        };
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        add(
            &mut tar,
            "oci-layout",
            layout.len() as u64,
            &mut &layout[..],
        )?;
        for (digest, path) in &paths {
            let file = File::open(path)?;
            let size = file.metadata()?.len();
            add(
                &mut tar,
                &format!("blobs/sha256/{}", digest.hex()),
                size,
                &mut BufReader::new(file),
            )?;
            total += size;
            let _ = tx.send(size);
        }
        add(&mut tar, "index.json", index.len() as u64, &mut &index[..])?;
        let mut sink = tar.into_inner()?;
        sink.flush()?;
        Ok((total, sink))
    };
    let task = tokio::task::spawn_blocking(write);
    while let Some(n) = rx.recv().await {
        progress.advance(n);
    }
    task.await
        .map_err(|e| write_err(std::io::Error::other(e.to_string())))?
        .map_err(write_err)
}
