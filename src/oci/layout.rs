//! OCI image layout (image-spec v1.1 "image-layout"): a writer and a small reader.
//!
//! A layout is a directory holding
//!
//! ```text
//! oci-layout              {"imageLayoutVersion":"1.0.0"}
//! index.json              an image index; named entries carry the reference as annotations
//! blobs/sha256/<hex>      content-addressed blobs (manifests, configs, layers)
//! ```
//!
//! [`LayoutWriter`] writes blobs (from memory, from a file, or streamed), builds image manifests,
//! configs and indexes, and records named references in `index.json`. Every JSON document is
//! written compactly with a fixed field order and sorted maps, so the same inputs always give
//! the same bytes and therefore the same digests.
//!
//! Names are recorded the way containerd-style tools do: the **full** reference
//! (`ghcr.io/siderolabs/imager:v1.11.6`) in both `org.opencontainers.image.ref.name` and
//! `io.containerd.image.name`. (skopeo writes only the tag into `ref.name`; both are valid.)
//!
//! Data model: descriptors, platforms and media types are the crate-wide ones from
//! [`crate::oci::manifest`]; this module adds only the write-side documents ([`ImageManifest`],
//! [`ImageIndex`], [`ImageConfig`]) that nothing else needs yet. When `crate::oci` grows its own
//! full document types, these should move there and be shared rather than duplicated.
//!
//! Blobs are written to a temporary file under `blobs/` and renamed into place; nothing is
//! fsynced (layouts written here are test fixtures, not a database). Test support: compiled
//! only with the `testkit` feature (`oci::bundle` reads and writes layouts on its own).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::write::GzEncoder;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::oci::manifest::{Descriptor, Platform, media};
use crate::store::Digest;

/// Content of the `oci-layout` file.
pub const OCI_LAYOUT_FILE: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// Annotation keys used on `index.json` entries.
pub mod annotation {
    /// OCI: the reference (here the full `registry/repo:tag`) an index.json entry is known by.
    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
    /// containerd: the full image name (`ctr import` / `nerdctl load` read this).
    pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
}

/// An OCI image manifest (`application/vnd.oci.image.manifest.v1+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// Manifest annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image index (`application/vnd.oci.image.index.v1+json`); also the shape of
/// `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// The index's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Child manifests (with `platform` for multi-arch images).
    pub manifests: Vec<Descriptor>,
    /// Index annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageIndex {
    /// An empty OCI index.
    pub fn new() -> ImageIndex {
        ImageIndex {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.to_string()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }
}

impl Default for ImageIndex {
    fn default() -> Self {
        ImageIndex::new()
    }
}

/// An OCI image config (`application/vnd.oci.image.config.v1+json`), the fields we write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// RFC 3339 creation time; omitted when `None` (keeps digests independent of the clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// CPU architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// Architecture variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Operating system (`linux`).
    pub os: String,
    /// Runtime configuration.
    #[serde(default)]
    pub config: ContainerConfig,
    /// Layer diff IDs.
    pub rootfs: RootFs,
}

impl ImageConfig {
    /// A config for `os`/`architecture` with an empty runtime config and no layers.
    pub fn new(architecture: &str, os: &str) -> ImageConfig {
        ImageConfig {
            created: None,
            architecture: architecture.to_string(),
            variant: None,
            os: os.to_string(),
            config: ContainerConfig::default(),
            rootfs: RootFs::default(),
        }
    }

    /// The platform this config describes.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
        }
    }
}

/// The `config` object of an image config (Docker-style capitalised keys, as in the spec).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// `KEY=value` environment entries.
    #[serde(rename = "Env", default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Entrypoint argv.
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The `rootfs` object of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// SHA-256 of each *uncompressed* layer tar, base first.
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".to_string(),
            diff_ids: Vec::new(),
        }
    }
}

/// A layer written to a layout: its (compressed) blob descriptor and its diff ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Descriptor of the compressed blob (`…tar+gzip`).
    pub descriptor: Descriptor,
    /// SHA-256 of the uncompressed tar.
    pub diff_id: Digest,
}

/// A descriptor without platform or annotations.
pub fn descriptor(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest,
        size,
        platform: None,
        annotations: None,
        artifact_type: None,
        urls: None,
    }
}

/// The name an `index.json` entry is known by (`ref.name`, else the containerd name).
pub fn ref_name(d: &Descriptor) -> Option<&str> {
    let a = d.annotations.as_ref()?;
    a.get(annotation::REF_NAME)
        .or_else(|| a.get(annotation::CONTAINERD_IMAGE_NAME))
        .map(String::as_str)
}

/// Serialises `value` as compact JSON (fixed field order, sorted maps: deterministic).
pub fn to_json_bytes<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes an OCI image layout directory.
///
/// Blobs are written immediately; `index.json` is written by [`LayoutWriter::write_index`] or
/// [`LayoutWriter::finish`], listing the named references in the order they were added.
#[derive(Debug)]
pub struct LayoutWriter {
    root: PathBuf,
    index: ImageIndex,
}

impl LayoutWriter {
    /// Creates (or reuses) the layout directory `root` with an **empty** reference list.
    /// Existing blobs are kept; an existing `index.json` is replaced on [`LayoutWriter::finish`].
    pub fn create(root: impl AsRef<Path>) -> io::Result<LayoutWriter> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(root.join("blobs").join("sha256"))?;
        fs::write(root.join("oci-layout"), OCI_LAYOUT_FILE)?;
        Ok(LayoutWriter {
            root,
            index: ImageIndex::new(),
        })
    }

    /// Opens an existing layout to add to it (its `index.json` entries are kept), or creates
    /// one if `root` holds no `index.json`.
    pub fn open(root: impl AsRef<Path>) -> io::Result<LayoutWriter> {
        let mut w = LayoutWriter::create(root)?;
        let path = w.root.join("index.json");
        if path.exists() {
            w.index = serde_json::from_slice(&fs::read(&path)?).map_err(invalid_data)?;
        }
        Ok(w)
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with `digest` lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.root, digest)
    }

    /// Stores `data` as a blob.
    pub fn put_blob(&self, media_type: &str, data: &[u8]) -> io::Result<Descriptor> {
        let digest = Digest::of_bytes(data);
        let path = self.blob_path(&digest);
        let present = fs::metadata(&path).is_ok_and(|m| m.len() == data.len() as u64);
        if !present {
            let mut w = self.blob_writer()?;
            w.write_all(data)?;
            return w.finish(media_type);
        }
        Ok(descriptor(media_type, digest, data.len() as u64))
    }

    /// Stores everything `reader` yields as a blob, streaming.
    pub fn put_blob_reader(
        &self,
        media_type: &str,
        mut reader: impl Read,
    ) -> io::Result<Descriptor> {
        let mut w = self.blob_writer()?;
        io::copy(&mut reader, &mut w)?;
        w.finish(media_type)
    }

    /// Stores the content of the file at `path` as a blob, streaming.
    pub fn put_blob_file(&self, media_type: &str, path: &Path) -> io::Result<Descriptor> {
        self.put_blob_reader(media_type, File::open(path)?)
    }

    /// Starts a streamed blob; write to it, then call [`BlobWriter::finish`].
    pub fn blob_writer(&self) -> io::Result<BlobWriter> {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join("blobs").join(format!(
            ".tmp-{}-{}-{:016x}",
            std::process::id(),
            n,
            rand::random::<u64>()
        ));
        let file = File::create(&tmp)?;
        Ok(BlobWriter {
            root: self.root.clone(),
            tmp: Some(tmp),
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Serialises `value` as compact JSON and stores it.
    pub fn put_json<T: Serialize>(&self, media_type: &str, value: &T) -> io::Result<Descriptor> {
        self.put_blob(media_type, &to_json_bytes(value)?)
    }

    /// Starts a streamed `tar+gzip` layer: write the **uncompressed** tar into it, then call
    /// [`LayerWriter::finish`]. `level` is the gzip level (0–9); the gzip header carries no
    /// name and mtime 0, so output is deterministic.
    pub fn layer_writer(&self, level: u32) -> io::Result<LayerWriter> {
        let gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(self.blob_writer()?, flate2::Compression::new(level));
        Ok(LayerWriter {
            gz,
            diff: Sha256::new(),
        })
    }

    /// Gzips the uncompressed `tar` into a `tar+gzip` layer blob.
    pub fn put_layer(&self, tar: &[u8], level: u32) -> io::Result<Layer> {
        let mut w = self.layer_writer(level)?;
        w.write_all(tar)?;
        w.finish()
    }

    /// Writes an image: `config` (its `rootfs.diff_ids` replaced by the layers') as the config
    /// blob, then the OCI manifest. Returns the manifest descriptor with `platform` set from the
    /// config, ready to go into an index.
    pub fn put_image(
        &self,
        config: &ImageConfig,
        layers: &[Layer],
        annotations: BTreeMap<String, String>,
    ) -> io::Result<Descriptor> {
        let mut config = config.clone();
        config.rootfs = RootFs {
            kind: "layers".to_string(),
            diff_ids: layers.iter().map(|l| l.diff_id).collect(),
        };
        let config_desc = self.put_json(media::OCI_CONFIG, &config)?;
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.to_string()),
            config: config_desc,
            layers: layers.iter().map(|l| l.descriptor.clone()).collect(),
            annotations,
        };
        let mut desc = self.put_json(media::OCI_MANIFEST, &manifest)?;
        desc.platform = Some(config.platform());
        Ok(desc)
    }

    /// Writes an OCI image index over `manifests` (each should carry its `platform`).
    pub fn put_index(
        &self,
        manifests: &[Descriptor],
        annotations: BTreeMap<String, String>,
    ) -> io::Result<Descriptor> {
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.to_string()),
            manifests: manifests.to_vec(),
            annotations,
        };
        self.put_json(media::OCI_INDEX, &index)
    }

    /// Names `descriptor` (a manifest or index already in the layout) as `name`, the full
    /// reference such as `ghcr.io/siderolabs/imager:v1.11.6`. The entry is recorded with both
    /// [`annotation::REF_NAME`] and [`annotation::CONTAINERD_IMAGE_NAME`]; an existing entry with
    /// the same name is replaced in place.
    pub fn add_ref(&mut self, descriptor: &Descriptor, name: &str) {
        let mut d = descriptor.clone();
        let annotations = d.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(annotation::REF_NAME.to_string(), name.to_string());
        annotations.insert(
            annotation::CONTAINERD_IMAGE_NAME.to_string(),
            name.to_string(),
        );
        match self
            .index
            .manifests
            .iter_mut()
            .find(|e| ref_name(e) == Some(name))
        {
            Some(slot) => *slot = d,
            None => self.index.manifests.push(d),
        }
    }

    /// The `index.json` entries so far.
    pub fn refs(&self) -> &[Descriptor] {
        &self.index.manifests
    }

    /// Writes `index.json` (atomically, via a temporary file and rename).
    pub fn write_index(&self) -> io::Result<()> {
        let bytes = to_json_bytes(&self.index)?;
        let tmp = self.root.join(".index.json.tmp");
        fs::write(&tmp, &bytes)?;
        fs::rename(&tmp, self.root.join("index.json"))
    }

    /// Writes `index.json` and returns the layout directory.
    pub fn finish(self) -> io::Result<PathBuf> {
        self.write_index()?;
        Ok(self.root)
    }
}

fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    root.join("blobs").join("sha256").join(digest.hex())
}

fn invalid_data(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// A blob being streamed into a layout. Dropping it without [`BlobWriter::finish`] deletes the
/// temporary file.
#[derive(Debug)]
pub struct BlobWriter {
    root: PathBuf,
    tmp: Option<PathBuf>,
    file: Option<BufWriter<File>>,
    hasher: Sha256,
    size: u64,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Completes the blob: moves it to `blobs/sha256/<digest>` and returns its descriptor.
    pub fn finish(mut self, media_type: &str) -> io::Result<Descriptor> {
        let mut file = self.file.take().expect("BlobWriter finished twice");
        file.flush()?;
        drop(file);
        let digest = Digest::from_bytes(self.hasher.clone().finalize().into());
        let tmp = self.tmp.take().expect("BlobWriter finished twice");
        let dest = blob_path(&self.root, &digest);
        if fs::metadata(&dest).is_ok_and(|m| m.len() == self.size) {
            fs::remove_file(&tmp)?;
        } else {
            fs::rename(&tmp, &dest)?;
        }
        Ok(descriptor(media_type, digest, self.size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob already finished"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            drop(self.file.take());
            let _ = fs::remove_file(tmp);
        }
    }
}

/// A `tar+gzip` layer being streamed into a layout (see [`LayoutWriter::layer_writer`]).
pub struct LayerWriter {
    gz: GzEncoder<BlobWriter>,
    diff: Sha256,
}

impl LayerWriter {
    /// Completes the layer blob.
    pub fn finish(self) -> io::Result<Layer> {
        let diff_id = Digest::from_bytes(self.diff.finalize().into());
        let blob = self.gz.finish()?;
        let descriptor = blob.finish(media::OCI_LAYER_GZIP)?;
        Ok(Layer {
            descriptor,
            diff_id,
        })
    }
}

impl Write for LayerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.gz.write(buf)?;
        self.diff.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.gz.flush()
    }
}

/// Reads an OCI image layout (enough to follow references to blobs; digests are verified).
#[derive(Debug, Clone)]
pub struct LayoutReader {
    root: PathBuf,
}

impl LayoutReader {
    /// Opens the layout at `root` (it must have an `oci-layout` file).
    pub fn open(root: impl AsRef<Path>) -> io::Result<LayoutReader> {
        let root = root.as_ref().to_path_buf();
        let marker: serde_json::Value =
            serde_json::from_slice(&fs::read(root.join("oci-layout"))?).map_err(invalid_data)?;
        if marker
            .get("imageLayoutVersion")
            .and_then(|v| v.as_str())
            .is_none()
        {
            return Err(invalid_data("oci-layout without imageLayoutVersion"));
        }
        Ok(LayoutReader { root })
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Parses `index.json`.
    pub fn index(&self) -> io::Result<ImageIndex> {
        serde_json::from_slice(&fs::read(self.root.join("index.json"))?).map_err(invalid_data)
    }

    /// The `index.json` entry named `name` (by `ref.name` or the containerd name).
    pub fn find_ref(&self, name: &str) -> io::Result<Option<Descriptor>> {
        Ok(self.index()?.manifests.into_iter().find(|d| {
            d.annotations.as_ref().is_some_and(|a| {
                a.get(annotation::REF_NAME).map(String::as_str) == Some(name)
                    || a.get(annotation::CONTAINERD_IMAGE_NAME).map(String::as_str) == Some(name)
            })
        }))
    }

    /// Where the blob with `digest` lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.root, digest)
    }

    /// Opens a blob for streaming (not verified).
    pub fn open_blob(&self, digest: &Digest) -> io::Result<File> {
        File::open(self.blob_path(digest))
    }

    /// Reads a whole blob and checks its digest.
    pub fn read_blob(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        let data = fs::read(self.blob_path(digest))?;
        if Digest::of_bytes(&data) != *digest {
            return Err(invalid_data(format!(
                "blob {digest} does not match its digest"
            )));
        }
        Ok(data)
    }

    /// Reads and parses a JSON blob.
    pub fn read_json<T: DeserializeOwned>(&self, digest: &Digest) -> io::Result<T> {
        serde_json::from_slice(&self.read_blob(digest)?).map_err(invalid_data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, name, data).unwrap();
        b.into_inner().unwrap()
    }

    fn write_sample(dir: &Path) -> (Descriptor, Vec<Descriptor>) {
        let mut w = LayoutWriter::create(dir).unwrap();
        let mut manifests = Vec::new();
        for arch in ["amd64", "arm64"] {
            let layer = w.put_layer(&tar_with("hello", arch.as_bytes()), 6).unwrap();
            let mut cfg = ImageConfig::new(arch, "linux");
            cfg.config.env = vec!["A=b".into()];
            cfg.config.entrypoint = Some(vec!["/bin/true".into()]);
            cfg.config.labels.insert("x".into(), "y".into());
            manifests.push(w.put_image(&cfg, &[layer], BTreeMap::new()).unwrap());
        }
        let index = w.put_index(&manifests, BTreeMap::new()).unwrap();
        w.add_ref(&index, "example.com/ns/img:v1");
        w.add_ref(&manifests[0], "example.com/ns/img:amd64");
        w.add_ref(&index, "example.com/ns/img:v1"); // replaced, not duplicated
        w.finish().unwrap();
        (index, manifests)
    }

    #[test]
    fn writes_a_readable_deterministic_layout() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (index, manifests) = write_sample(a.path());
        write_sample(b.path());
        let ia = fs::read(a.path().join("index.json")).unwrap();
        assert_eq!(ia, fs::read(b.path().join("index.json")).unwrap());
        assert_eq!(
            fs::read_to_string(a.path().join("oci-layout")).unwrap(),
            OCI_LAYOUT_FILE
        );
        // No temporary files left behind.
        for e in fs::read_dir(a.path().join("blobs")).unwrap() {
            assert_eq!(e.unwrap().file_name(), "sha256");
        }

        let r = LayoutReader::open(a.path()).unwrap();
        let top = r.index().unwrap();
        assert_eq!(top.manifests.len(), 2);
        let d = r.find_ref("example.com/ns/img:v1").unwrap().unwrap();
        assert_eq!(d.digest, index.digest);
        let ann = d.annotations.as_ref().unwrap();
        assert_eq!(
            ann[annotation::CONTAINERD_IMAGE_NAME],
            "example.com/ns/img:v1"
        );
        assert!(d.platform.is_none());
        let single = r.find_ref("example.com/ns/img:amd64").unwrap().unwrap();
        assert_eq!(single.platform.as_ref().unwrap().architecture, "amd64");

        let idx: ImageIndex = r.read_json(&d.digest).unwrap();
        assert_eq!(idx.manifests, manifests);
        let m: ImageManifest = r.read_json(&idx.manifests[1].digest).unwrap();
        assert_eq!(m.media_type.as_deref(), Some(media::OCI_MANIFEST));
        assert_eq!(m.layers[0].media_type, media::OCI_LAYER_GZIP);
        let cfg: ImageConfig = r.read_json(&m.config.digest).unwrap();
        assert_eq!(cfg.architecture, "arm64");
        let tar = tar_with("hello", b"arm64");
        assert_eq!(cfg.rootfs.diff_ids, vec![Digest::of_bytes(&tar)]);
        let raw_cfg = String::from_utf8(r.read_blob(&m.config.digest).unwrap()).unwrap();
        let expected = format!(
            r#"{{"architecture":"arm64","os":"linux","config":{{"Env":["A=b"],"Entrypoint":["/bin/true"],"Labels":{{"x":"y"}}}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            Digest::of_bytes(&tar)
        );
        assert_eq!(raw_cfg, expected);
        let mut gz = flate2::read::GzDecoder::new(r.open_blob(&m.layers[0].digest).unwrap());
        let mut plain = Vec::new();
        gz.read_to_end(&mut plain).unwrap();
        assert_eq!(plain, tar);
    }

    #[test]
    fn streamed_and_in_memory_blobs_agree() {
        let dir = tempfile::tempdir().unwrap();
        let w = LayoutWriter::create(dir.path()).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let a = w.put_blob("application/octet-stream", &data).unwrap();
        let src = dir.path().join("src.bin");
        fs::write(&src, &data).unwrap();
        let b = w.put_blob_file("application/octet-stream", &src).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.digest, Digest::of_bytes(&data));
        assert_eq!(fs::read(w.blob_path(&a.digest)).unwrap(), data);
        {
            let mut abandoned = w.blob_writer().unwrap();
            abandoned.write_all(b"partial").unwrap();
        }
        let leftovers = fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != "sha256")
            .count();
        assert_eq!(leftovers, 0);
    }
}
