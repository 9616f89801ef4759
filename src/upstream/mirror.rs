//! The pull-through mirror: answers "give me this manifest / blob / tag list" from the store,
//! going to the upstream registry only when needed and allowed.
//!
//! - Tags: trusted for `upstream.tagTTLSeconds`; then one upstream HEAD revalidates them. If the
//!   upstream is unreachable the stored digest is served (stale on error); if it says the tag is
//!   gone, the answer is "not found".
//! - Manifests by digest and blobs: served from the store when present, never revalidated
//!   (content addressing makes them immutable). Misses are fetched once — concurrent requests
//!   share one download — verified, stored byte-exact, then served.
//! - `offline: true`: only the store is consulted; a miss is an error naming the image.
//! - Clients pulling through `/v2` may only reach registries in `mirror.allow`; the factory and
//!   the CLI (internal requests) may reach any configured registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::client::Attempts;
use super::fetch::BlobFetch;
use super::{RegistryClient, UpstreamError, Upstreams};
use crate::config::Config;
use crate::oci::{
    CatalogError, ImageCatalog, ImageName, ImageRef, Manifest, ManifestKind, TagOrDigest, media,
    parse_manifest,
};
use crate::store::{Blob, Digest, StoreError};

/// Who is asking, which decides which upstreams may be contacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// A registry client pulling through `/v2` (limited to `mirror.allow`).
    Client,
    /// bootfactory itself: the factory, `mirror pull`.
    Internal,
}

/// A manifest available from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHit {
    /// Its digest.
    pub digest: Digest,
    /// The media type it is served with.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A blob: on disk, or being downloaded.
pub enum BlobHit {
    /// In the store (verified).
    Local(Blob),
    /// Being fetched from the upstream; `size` is the announced length if known.
    Remote {
        /// The shared download.
        fetch: Arc<BlobFetch>,
        /// The announced length.
        size: Option<u64>,
    },
}

/// Why the mirror could not answer.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The tag, manifest or blob does not exist (locally, and upstream if asked).
    #[error("{0}")]
    NotFound(String),
    /// Not in the store, and bootfactory is offline: the text names the image and what to do.
    #[error(
        "{0} is not in the store and bootfactory is offline (offline: true): import a bundle with `bootfactory mirror import <bundle>` (see README \"Air-gapped sites\")"
    )]
    Offline(String),
    /// The registry is not in `mirror.allow`.
    #[error("registry {0} is not mirrored here (see mirror.allow)")]
    NotAllowed(String),
    /// `mirror.maxFetches` upstream downloads started by registry clients are running.
    #[error(
        "{0} upstream downloads are in progress (mirror.maxFetches); retry when one has finished"
    )]
    Busy(usize),
    /// The upstream failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Invalid manifest content.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `pull` did.
#[derive(Debug, Clone, Default)]
pub struct PullReport {
    /// The root digest.
    pub digest: Option<Digest>,
    /// Manifests visited.
    pub manifests: usize,
    /// Blobs that were already stored.
    pub blobs_cached: usize,
    /// Blobs downloaded.
    pub blobs_fetched: usize,
    /// Bytes downloaded.
    pub bytes_fetched: u64,
}

/// Progress reported by [`Mirror::pull`].
#[derive(Debug, Clone)]
pub enum PullProgress {
    /// All manifests are known: this many blobs and bytes make up the image.
    Planned {
        /// Number of blobs.
        blobs: usize,
        /// Their total size.
        bytes: u64,
    },
    /// The blob being downloaded has this many bytes so far (reported every MiB or 100 ms,
    /// see [`super::fetch::BlobFetch::wait_done_reporting`]); its `BlobDone` follows.
    BlobBytes {
        /// Its size.
        size: u64,
        /// Bytes of it downloaded so far.
        written: u64,
    },
    /// A blob is present (downloaded now, or already stored).
    BlobDone {
        /// Its size.
        size: u64,
        /// Whether it had to be downloaded.
        fetched: bool,
    },
}

/// The mirror service.
pub struct Mirror {
    config: Arc<Config>,
    catalog: ImageCatalog,
    upstreams: Upstreams,
    fetches: Arc<Mutex<HashMap<Digest, Arc<BlobFetch>>>>,
    manifest_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Mirror {
    /// A mirror over `catalog` with upstream access per `config`.
    pub fn new(config: Arc<Config>, catalog: ImageCatalog) -> Mirror {
        Mirror {
            upstreams: Upstreams::new(config.clone()),
            config,
            catalog,
            fetches: Arc::new(Mutex::new(HashMap::new())),
            manifest_locks: Mutex::new(HashMap::new()),
        }
    }

    /// The local catalog.
    pub fn catalog(&self) -> &ImageCatalog {
        &self.catalog
    }

    /// The upstream client for a registry, if `who` may contact it now.
    fn upstream(
        &self,
        name: &ImageName,
        who: Requester,
    ) -> Result<Arc<RegistryClient>, MirrorError> {
        if self.config.offline {
            return Err(MirrorError::Offline(name.to_string()));
        }
        if who == Requester::Client
            && !self
                .config
                .mirror
                .allow
                .iter()
                .any(|r| r == name.registry())
        {
            return Err(MirrorError::NotAllowed(name.registry().to_string()));
        }
        Ok(self.upstreams.client(name.registry()))
    }

    fn lock_for(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.manifest_locks.lock().expect("manifest locks");
        if locks.len() > 4096 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(key).or_default().clone()
    }

    /// A stored manifest, if both its record and its bytes are present.
    fn local_manifest(&self, digest: &Digest) -> Option<ManifestHit> {
        let record = self.catalog.manifest(digest)?;
        self.catalog
            .store()
            .contains(digest)
            .then_some(ManifestHit {
                digest: *digest,
                media_type: record.media_type,
                size: record.size,
            })
    }

    /// Resolves a manifest by tag or digest (see the module docs for the policy).
    pub async fn manifest(
        &self,
        name: &ImageName,
        target: &TagOrDigest,
        who: Requester,
    ) -> Result<ManifestHit, MirrorError> {
        let _guard = self.lock_for(format!("{name}|{target}")).lock_owned().await;
        match target {
            TagOrDigest::Digest(d) => self.manifest_by_digest(name, d, who).await,
            TagOrDigest::Tag(tag) => self.manifest_by_tag(name, tag, who).await,
        }
    }

    async fn manifest_by_digest(
        &self,
        name: &ImageName,
        digest: &Digest,
        who: Requester,
    ) -> Result<ManifestHit, MirrorError> {
        if let Some(hit) = self.local_manifest(digest) {
            return Ok(hit);
        }
        // Blobs imported without a record (or stored as plain blobs) can still be manifests.
        if self.catalog.store().contains(digest)
            && let Ok(bytes) = self.catalog.store().read_bytes(digest).await
            && let Ok(m) = parse_manifest(&bytes, None)
        {
            self.catalog
                .record_manifest(name, digest, &m, bytes.len() as u64)?;
            return Ok(ManifestHit {
                digest: *digest,
                media_type: m.media_type,
                size: bytes.len() as u64,
            });
        }
        let client = self.upstream(name, who).map_err(|e| match e {
            MirrorError::Offline(_) => MirrorError::Offline(format!("{name}@{digest}")),
            e => e,
        })?;
        let (bytes, _) = client
            .fetch_manifest(name.repository(), &TagOrDigest::Digest(*digest))
            .await
            .map_err(|e| not_found_as(e, format!("manifest {name}@{digest}")))?;
        let (stored, m) = self.catalog.put_manifest(name, &bytes, None).await?;
        debug_assert_eq!(stored, *digest);
        Ok(ManifestHit {
            digest: stored,
            media_type: m.media_type,
            size: bytes.len() as u64,
        })
    }

    async fn manifest_by_tag(
        &self,
        name: &ImageName,
        tag: &str,
        who: Requester,
    ) -> Result<ManifestHit, MirrorError> {
        let ttl = Duration::from_secs(self.config.upstream.tag_ttl_seconds);
        let local = self
            .catalog
            .tag(name, tag)?
            .and_then(|(d, age)| self.local_manifest(&d).map(|hit| (hit, age)));
        if let Some((hit, age)) = &local
            && Duration::from_secs(*age) < ttl
        {
            return Ok(hit.clone());
        }
        let client = match self.upstream(name, who) {
            Ok(c) => c,
            Err(e) => {
                return match local {
                    Some((hit, _)) => Ok(hit),
                    None => Err(match e {
                        MirrorError::Offline(_) => MirrorError::Offline(format!("{name}:{tag}")),
                        e => e,
                    }),
                };
            }
        };
        let attempts = if local.is_some() {
            Attempts::Quick
        } else {
            Attempts::Patient
        };
        match client.resolve_tag(name.repository(), tag, attempts).await {
            Ok(digest) => {
                let hit = match self.local_manifest(&digest) {
                    Some(hit) => hit,
                    None => {
                        self.manifest_by_digest(name, &digest, Requester::Internal)
                            .await?
                    }
                };
                self.catalog.set_tag(name, tag, &digest)?;
                Ok(hit)
            }
            Err(UpstreamError::NotFound { message, .. }) => Err(MirrorError::NotFound(format!(
                "manifest {name}:{tag} unknown upstream ({message})"
            ))),
            Err(e) => match local {
                Some((hit, age)) => {
                    tracing::warn!(image = %format!("{name}:{tag}"), error = %crate::errors::chain(&e), age_seconds = age, "upstream unavailable; serving the stored tag");
                    Ok(hit)
                }
                None => Err(e.into()),
            },
        }
    }

    /// Whether the manifest `target` names can be had, without fetching it: present in the
    /// store, else (online) one upstream HEAD. Offline and absent it is
    /// [`MirrorError::Offline`]; absent upstream, [`MirrorError::NotFound`].
    pub async fn manifest_reachable(
        &self,
        name: &ImageName,
        target: &TagOrDigest,
        who: Requester,
    ) -> Result<(), MirrorError> {
        let local = match target {
            TagOrDigest::Digest(d) => Some(*d),
            TagOrDigest::Tag(t) => self.catalog.tag(name, t)?.map(|(d, _)| d),
        };
        if local.is_some_and(|d| self.local_manifest(&d).is_some()) {
            return Ok(());
        }
        let shown = match target {
            TagOrDigest::Tag(t) => format!("{name}:{t}"),
            TagOrDigest::Digest(d) => format!("{name}@{d}"),
        };
        let client = self.upstream(name, who).map_err(|e| match e {
            MirrorError::Offline(_) => MirrorError::Offline(shown.clone()),
            e => e,
        })?;
        client
            .head_manifest(name.repository(), target, Attempts::Patient)
            .await
            .map(|_| ())
            .map_err(|e| not_found_as(e, format!("manifest {shown}")))
    }

    /// The bytes of a manifest found by [`Mirror::manifest`].
    pub async fn manifest_bytes(&self, hit: &ManifestHit) -> Result<Vec<u8>, MirrorError> {
        Ok(self.catalog.store().read_bytes(&hit.digest).await?)
    }

    /// A blob from the store, or a download that has started (see [`BlobHit`]).
    pub async fn blob(
        &self,
        name: &ImageName,
        digest: &Digest,
        who: Requester,
    ) -> Result<BlobHit, MirrorError> {
        let store = self.catalog.store();
        if store.contains(digest) {
            match store.open_blob(digest).await {
                Ok(blob) => return Ok(BlobHit::Local(blob)),
                Err(StoreError::NotFound(_)) | Err(StoreError::Corrupt { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let client = self.upstream(name, who).map_err(|e| match e {
            MirrorError::Offline(_) => MirrorError::Offline(format!("blob {name}@{digest}")),
            e => e,
        })?;
        let fetch = {
            let mut fetches = self.fetches.lock().expect("fetches lock");
            match fetches.get(digest) {
                Some(f) => f.clone(),
                None if who == Requester::Client
                    && fetches.values().filter(|f| f.by_client()).count()
                        >= self.config.mirror.max_fetches.max(1) =>
                {
                    return Err(MirrorError::Busy(self.config.mirror.max_fetches));
                }
                None => {
                    let map = self.fetches.clone();
                    let key = *digest;
                    let f = BlobFetch::start(
                        store.clone(),
                        client,
                        name.repository().to_string(),
                        *digest,
                        Duration::from_secs(self.config.upstream.timeout_seconds.max(1)),
                        who == Requester::Client,
                        move || {
                            map.lock().expect("fetches lock").remove(&key);
                        },
                    );
                    fetches.insert(*digest, f.clone());
                    f
                }
            }
        };
        if fetch.is_verified() && fetch.wait_done().await.is_ok() {
            // Every byte is here and matched; only the commit was left (an fsync): serve the
            // stored blob, with ranges, rather than a second stream of the download.
            match store.open_blob(digest).await {
                Ok(blob) => return Ok(BlobHit::Local(blob)),
                Err(StoreError::NotFound(_)) | Err(StoreError::Corrupt { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let size = fetch
            .wait_started()
            .await
            .map_err(|e| not_found_as(e, format!("blob {name}@{digest}")))?;
        Ok(BlobHit::Remote { fetch, size })
    }

    /// Makes sure a blob is fully stored (downloading it if needed); returns whether it was
    /// downloaded.
    pub async fn ensure_blob(
        &self,
        name: &ImageName,
        digest: &Digest,
        who: Requester,
    ) -> Result<bool, MirrorError> {
        match self.blob(name, digest, who).await? {
            BlobHit::Local(_) => Ok(false),
            BlobHit::Remote { fetch, .. } => {
                fetch.wait_done().await?;
                Ok(true)
            }
        }
    }

    /// Tags of a repository: the upstream's (when reachable and allowed) merged with the
    /// store's.
    pub async fn tags(&self, name: &ImageName, who: Requester) -> Result<Vec<String>, MirrorError> {
        let mut tags = self.catalog.tags(name)?;
        let local_repo = self.catalog.has_repository(name)?;
        match self.upstream(name, who) {
            Ok(client) => match client.list_tags(name.repository()).await {
                Ok(remote) => tags.extend(remote),
                Err(UpstreamError::NotFound { .. }) if local_repo => {}
                Err(UpstreamError::NotFound { .. }) => {
                    return Err(MirrorError::NotFound(format!("repository {name} unknown")));
                }
                Err(e) if local_repo => {
                    tracing::warn!(repository = %name, error = %crate::errors::chain(&e), "upstream tag list unavailable; listing stored tags");
                }
                Err(e) => return Err(e.into()),
            },
            Err(_) if local_repo => {}
            Err(MirrorError::Offline(_)) => {
                return Err(MirrorError::NotFound(format!("repository {name} unknown")));
            }
            Err(e) => return Err(e),
        }
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    /// Fetches a whole image (every platform) into the store: manifests first, then blobs.
    /// `progress` is told the plan, the bytes of each blob as it downloads, and each blob as
    /// it completes.
    pub async fn pull(
        &self,
        image: &ImageRef,
        who: Requester,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<PullReport, MirrorError> {
        let mut report = PullReport::default();
        let root = self.manifest(&image.name, &image.target(), who).await?;
        report.digest = Some(root.digest);
        if let (Some(tag), Some(_)) = (&image.tag, &image.digest) {
            self.catalog.set_tag(&image.name, tag, &root.digest)?;
        }
        // Walk manifests, collecting blob descriptors.
        let mut blobs: Vec<(Digest, u64)> = Vec::new();
        let mut queue = vec![root.clone()];
        while let Some(hit) = queue.pop() {
            report.manifests += 1;
            let bytes = self.manifest_bytes(&hit).await?;
            let manifest: Manifest =
                parse_manifest(&bytes, Some(&hit.media_type)).map_err(CatalogError::from)?;
            match manifest.kind {
                ManifestKind::Index => {
                    for child in &manifest.manifests {
                        if media::is_manifest(&child.media_type) {
                            queue.push(
                                self.manifest(&image.name, &TagOrDigest::Digest(child.digest), who)
                                    .await?,
                            );
                        }
                    }
                }
                ManifestKind::Image => {
                    for d in manifest.children() {
                        if d.urls.is_none() && !blobs.iter().any(|(b, _)| *b == d.digest) {
                            blobs.push((d.digest, d.size));
                        }
                    }
                }
            }
        }
        progress(PullProgress::Planned {
            blobs: blobs.len(),
            bytes: blobs.iter().map(|(_, s)| s).sum(),
        });
        for (digest, size) in blobs {
            let fetched = match self.blob(&image.name, &digest, who).await? {
                BlobHit::Local(_) => false,
                BlobHit::Remote { fetch, .. } => {
                    fetch
                        .wait_done_reporting(|written| {
                            progress(PullProgress::BlobBytes { size, written })
                        })
                        .await?;
                    true
                }
            };
            if fetched {
                report.blobs_fetched += 1;
                report.bytes_fetched += size;
            } else {
                report.blobs_cached += 1;
            }
            progress(PullProgress::BlobDone { size, fetched });
        }
        Ok(report)
    }
}

/// Turns an upstream "not found" into the mirror's, with a useful subject.
fn not_found_as(e: UpstreamError, what: String) -> MirrorError {
    match e {
        UpstreamError::NotFound { message, .. } => {
            MirrorError::NotFound(format!("{what} unknown upstream ({message})"))
        }
        e => MirrorError::Upstream(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::Path as UrlPath;
    use axum::http::header;
    use axum::response::IntoResponse as _;
    use sha2::Digest as _;

    fn sha(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
    }

    /// A registry serving one single-layer image whose layer body comes in 64 KiB chunks
    /// with a pause between them, so a download takes a while.
    async fn slow_registry(layer: Vec<u8>) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}]}}"#,
            sha(&config),
            config.len(),
            sha(&layer),
            layer.len()
        );
        let blobs: Arc<HashMap<String, Vec<u8>>> =
            Arc::new([(sha(&config), config), (sha(&layer), layer)].into());
        let app = axum::Router::new()
            .route("/v2/", axum::routing::get(|| async { "{}" }))
            .route(
                "/v2/test/image/manifests/{reference}",
                axum::routing::get(move |_: UrlPath<String>| {
                    let manifest = manifest.clone();
                    async move {
                        (
                            [
                                (
                                    header::CONTENT_TYPE,
                                    "application/vnd.oci.image.manifest.v1+json".to_string(),
                                ),
                                (
                                    header::HeaderName::from_static("docker-content-digest"),
                                    sha(manifest.as_bytes()),
                                ),
                            ],
                            manifest,
                        )
                            .into_response()
                    }
                }),
            )
            .route(
                "/v2/test/image/blobs/{digest}",
                axum::routing::get(move |UrlPath(digest): UrlPath<String>| {
                    let blobs = blobs.clone();
                    async move {
                        let bytes = blobs.get(&digest).cloned().unwrap_or_default();
                        let len = bytes.len();
                        let chunks: Vec<Vec<u8>> =
                            bytes.chunks(64 << 10).map(<[u8]>::to_vec).collect();
                        let stream = futures_util::stream::iter(chunks).then(|c| async move {
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                            Ok::<_, std::io::Error>(bytes::Bytes::from(c))
                        });
                        (
                            [(header::CONTENT_LENGTH, len.to_string())],
                            Body::from_stream(stream),
                        )
                            .into_response()
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (addr, task)
    }

    use futures_util::StreamExt as _;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pull_reports_bytes_within_a_blob() {
        crate::init_crypto();
        let layer: Vec<u8> = (0..(5u32 << 20)).map(|i| (i % 251) as u8).collect();
        let (addr, task) = slow_registry(layer.clone()).await;
        let data = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: data.path().to_path_buf(),
            ..Config::default()
        };
        config.upstream.registries.insert(
            "up.test".into(),
            crate::config::UpstreamRegistry {
                endpoint: Some(format!("http://{addr}").parse().unwrap()),
                ..Default::default()
            },
        );
        let store = crate::store::Store::open(data.path()).unwrap();
        let mirror = Mirror::new(Arc::new(config), ImageCatalog::new(store).unwrap());
        let events = Mutex::new(Vec::new());
        let image: ImageRef = "up.test/test/image:v1".parse().unwrap();
        let report = mirror
            .pull(&image, Requester::Internal, &|p| {
                events.lock().unwrap().push(p)
            })
            .await
            .unwrap();
        assert_eq!(report.blobs_fetched, 2);
        let events = events.into_inner().unwrap();
        let size = layer.len() as u64;
        let within: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                PullProgress::BlobBytes { size: s, written } if *s == size => Some(*written),
                _ => None,
            })
            .collect();
        // 5 MiB at 64 KiB every 5 ms (~0.4 s): reported every MiB or 100 ms, growing, short
        // of the whole blob (its BlobDone says that), not once per chunk.
        assert!(within.len() >= 3, "{within:?}");
        assert!(within.len() <= 40, "rate-limited: {within:?}");
        assert!(within.windows(2).all(|w| w[0] < w[1]), "{within:?}");
        assert!(*within.last().unwrap() <= size);
        let done = events
            .iter()
            .position(
                |e| matches!(e, PullProgress::BlobDone { size: s, fetched: true } if *s == size),
            )
            .expect("the layer's BlobDone");
        let last_bytes = events
            .iter()
            .rposition(|e| matches!(e, PullProgress::BlobBytes { size: s, .. } if *s == size))
            .unwrap();
        assert!(
            last_bytes < done,
            "byte progress comes before the blob is done"
        );
        assert!(matches!(events[0], PullProgress::Planned { blobs: 2, .. }));
        task.abort();
    }
}
