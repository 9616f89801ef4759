//! Air-gapped bundles: OCI image layouts (a directory, or a tar of one, optionally gzip- or
//! zstd-compressed) imported into the store, and tars of stored images exported for another
//! site. These are what `skopeo copy … oci:`/`oci-archive:`, `talosctl image cache-create`,
//! crane and oras produce and consume.
//!
//! Import is restartable and leaves nothing half-visible: blobs are written content-addressed
//! (already-present ones are skipped), and an image's name is recorded only after every blob it
//! needs is in the store.

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

/// One image recorded by an import.
#[derive(Debug, Clone, Serialize)]
pub struct ImportedImage {
    /// Full reference (`registry/repo:tag` or `registry/repo@digest`).
    pub reference: String,
    /// Root digest.
    pub digest: Digest,
}

/// The outcome of an import.
#[derive(Debug, Clone, Default, Serialize)]
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
        import_tar_blobs(catalog.store(), path, meta.len(), progress, &mut report).await?
    };
    record_images(catalog, &index_bytes, name, &mut report).await?;
    Ok(report)
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
    path: &Path,
    size: u64,
    progress: &dyn Progress,
    report: &mut ImportReport,
) -> Result<Vec<u8>, BundleError> {
    progress.set_total(size);
    let store = store.clone();
    let path_buf = path.to_path_buf();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let task =
        tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, ImportReport), BundleError> {
            let read_err = |message: String| BundleError::Read {
                path: path_buf.clone(),
                message,
            };
            let file = File::open(&path_buf).map_err(|e| read_err(e.to_string()))?;
            let counted = Counting {
                inner: file,
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
                            .take(64 << 20)
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
    let out_path = out.to_path_buf();
    let partial = {
        let mut name = out.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    };
    let write_err = |e: std::io::Error| BundleError::Write {
        path: out_path.clone(),
        message: e.to_string(),
    };
    let partial_for_task = partial.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let task = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let file = File::create(&partial_for_task)?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
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
        let file = tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(total)
    });
    while let Some(n) = rx.recv().await {
        progress.advance(n);
    }
    let written = task
        .await
        .map_err(|e| write_err(std::io::Error::other(e.to_string())))?
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&partial);
        })
        .map_err(write_err)?;
    std::fs::rename(&partial, out).map_err(write_err)?;
    Ok(written)
}
