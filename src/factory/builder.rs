//! Building assets once: each asset key is built at most once at a time (concurrent requests
//! share the build, which runs detached from any request), `build.maxConcurrency` bounds
//! parallel builds, a timeout bounds each; the result goes to the store under a ref and a
//! signature made with the cache signing key. A cached entry whose signature or content does
//! not verify is rebuilt, never served. A build that fails, times out or is killed leaves
//! nothing behind: its output is a temp file committed to the store only on success.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};

use super::running::{Outcome, Registration};
use super::signing::CacheSigner;
use crate::errors::{self, SharedError};
use crate::store::{Blob, BlobIdentity, Digest, Store, StoreError};

/// The store ref kind under which built assets are named.
pub const ASSET_KIND: &str = "asset";
/// The sled tree of asset signatures (asset key → signature).
const SIGNATURES_TREE: &str = "factory/signatures";
/// The sled tree of when each asset was last served or built (asset key → unix seconds,
/// big-endian), for evicting the least recently used first under `store.gc.maxBytes`.
const USED_TREE: &str = "factory/asset-used";
/// An asset's last-used time is rewritten at most this often (a busy asset costs one index
/// write an hour, not one per request).
const USED_RESOLUTION_SECS: u64 = 3600;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn read_secs(v: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes)
}

/// Records that `key` was used now, unless it was recorded less than
/// [`USED_RESOLUTION_SECS`] ago. Failures only cost eviction accuracy: logged, not returned.
fn mark_used(tree: &sled::Tree, key: &str) {
    let now = unix_now();
    match tree.get(key.as_bytes()) {
        Ok(Some(v))
            if read_secs(&v).is_some_and(|t| now.saturating_sub(t) < USED_RESOLUTION_SECS) => {}
        Ok(_) => {
            if let Err(e) = tree.insert(key.as_bytes(), &now.to_be_bytes()) {
                tracing::debug!(asset = key, error = %errors::chain(&e), "cannot record asset use");
            }
        }
        Err(e) => tracing::debug!(asset = key, error = %errors::chain(&e), "cannot read asset use"),
    }
}

/// When each built asset was last served or built (asset key → unix seconds; to the hour).
/// Assets built before this was recorded are absent.
pub fn asset_last_used(store: &Store) -> Result<HashMap<String, u64>, StoreError> {
    let tree = store.db().open_tree(USED_TREE)?;
    let mut out = HashMap::new();
    for kv in tree.iter() {
        let (k, v) = kv?;
        if let (Ok(key), Some(t)) = (std::str::from_utf8(&k), read_secs(&v)) {
            out.insert(key.to_string(), t);
        }
    }
    Ok(out)
}

/// Forgets the signatures and use times of assets whose ref is gone (after GC unnamed them),
/// so a later build of the same key starts clean. Returns how many keys went.
pub fn forget_unnamed_assets(store: &Store) -> Result<usize, StoreError> {
    let mut removed = 0;
    for name in [SIGNATURES_TREE, USED_TREE] {
        let tree = store.db().open_tree(name)?;
        for kv in tree.iter() {
            let (k, v) = kv?;
            let Ok(key) = std::str::from_utf8(&k) else {
                continue;
            };
            // Only the entry read here goes: a rebuild that named the key again and wrote a
            // new signature meanwhile keeps it (compare-and-swap against the old value).
            if store.get_ref(ASSET_KIND, key)?.is_none()
                && tree
                    .compare_and_swap(&k, Some(&v), None as Option<&[u8]>)?
                    .is_ok()
            {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// A built asset the store holds (for the builds page), from its ref and key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedAsset {
    /// The asset's cache key.
    pub key: String,
    /// The output kind (`Initramfs`, `Kernel`, `Image`, …).
    pub kind: String,
    /// The Talos version.
    pub version: String,
    /// The platform.
    pub platform: String,
    /// The architecture.
    pub arch: String,
    /// The schematic ID (`-` for kernels, which every schematic shares).
    pub schematic: String,
    /// Its size in bytes (0 if the blob is gone, e.g. between a GC's drop and sweep).
    pub size: u64,
    /// When it was last served or built (unix seconds, to the hour); `None` for assets
    /// built before use times were recorded.
    pub last_used: Option<u64>,
}

/// Every built asset the store names (refs of kind [`ASSET_KIND`]), sorted by key, with its
/// size and last-used time. Reads the store's index only (no file is opened).
pub fn cached_assets(store: &Store) -> Result<Vec<CachedAsset>, StoreError> {
    let used = asset_last_used(store)?;
    Ok(store
        .list_refs(ASSET_KIND)?
        .into_iter()
        .map(|(key, digest)| {
            let (kind, version, platform, arch, schematic) = super::running::key_parts(&key);
            CachedAsset {
                kind: kind.to_string(),
                version: version.to_string(),
                platform: platform.to_string(),
                arch: arch.to_string(),
                schematic: schematic.to_string(),
                size: store.stat(&digest).map_or(0, |i| i.size),
                last_used: used.get(&key).copied(),
                key,
            }
        })
        .collect())
}

/// A built asset in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltAsset {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Whether it came from the cache.
    pub cached: bool,
    /// Whether this request joined a build another request started (so it is not counted
    /// as a build of its own).
    pub shared: bool,
    /// Whether it was fetched (and verified) from a parent factory rather than built here
    /// ([`Builder::get_or_fetch`]; not counted as a build).
    pub fetched: bool,
}

/// How a missing asset is made: built here, or fetched from another factory (`origin` names
/// it in logs). Both write to the path they are given and share one in-flight table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Making {
    Build,
    Fetch { origin: &'static str },
}

/// Why an asset could not be produced. `Clone` (every request that joined a build gets its
/// result), so sources are shared ([`SharedError`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuildError {
    /// The build itself failed (a 500; the chain goes to the log).
    #[error(transparent)]
    Failed(SharedError),
    /// The build found a problem with the *request* that could not be seen before building
    /// (an extension the initramfs builder refuses): a 400 with this message. Most such
    /// problems are found before a build starts (`service.rs`).
    #[error("{0}")]
    Rejected(String),
    /// The build took longer than `build.timeoutSeconds`.
    #[error("build timed out after {0:?}")]
    TimedOut(Duration),
    /// The store failed.
    #[error("store")]
    Store(#[source] SharedError),
    /// A store quota (`store.maxBytes`, `store.minFreeBytes`) refused the result.
    #[error(transparent)]
    Quota(Arc<StoreError>),
    /// The filesystem of the data directory (`path`; the builder fills it in) is full.
    #[error("no space left on {}", path.display())]
    NoSpace {
        /// The data directory.
        path: PathBuf,
        /// The failed operation.
        #[source]
        source: SharedError,
    },
}

impl BuildError {
    /// A build step failed with `e`: [`BuildError::NoSpace`] if an I/O error in its source
    /// chain says the filesystem is full, [`BuildError::Failed`] otherwise.
    pub fn from_error(e: impl std::error::Error + Send + Sync + 'static) -> BuildError {
        if crate::store::caused_by_no_space(&e) {
            BuildError::NoSpace {
                path: PathBuf::new(),
                source: Arc::new(e),
            }
        } else {
            BuildError::Failed(Arc::new(e))
        }
    }

    /// A build failure that is only a message.
    pub fn failed(message: impl Into<String>) -> BuildError {
        BuildError::Failed(errors::message(message))
    }
}

impl From<StoreError> for BuildError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSpace { path, source } => BuildError::NoSpace {
                path,
                source: Arc::new(source),
            },
            e @ StoreError::QuotaReached { .. } => BuildError::Quota(Arc::new(e)),
            e => BuildError::Store(Arc::new(e)),
        }
    }
}

/// The future a build function returns: it writes the asset to the given path.
pub type BuildFuture = Pin<Box<dyn Future<Output = Result<(), BuildError>> + Send>>;

type Shared = watch::Receiver<Option<Result<BuiltAsset, BuildError>>>;

/// Callback run after each successful build: asset key, timing, size.
type OnBuilt = Arc<dyn Fn(&str, BuildTiming, u64) + Send + Sync>;

/// Timings the metrics need.
#[derive(Debug, Clone, Copy)]
pub struct BuildTiming {
    /// Time spent waiting for a build slot.
    pub queued: Duration,
    /// Time spent building.
    pub built: Duration,
}

/// The asset builder.
pub struct Builder {
    store: Store,
    signer: CacheSigner,
    signatures: sled::Tree,
    used: sled::Tree,
    slots: Arc<Semaphore>,
    timeout: Duration,
    work_root: PathBuf,
    inflight: Mutex<HashMap<String, Shared>>,
    on_built: Option<OnBuilt>,
    running: Arc<super::running::RunningBuilds>,
    /// Signatures already verified, by asset key: (digest, signature, blob file identity).
    verified: Mutex<HashMap<String, Verified>>,
}

/// A cache entry whose signature verified, for the blob file it was served from. The P-256
/// verification (≈ 0.3 ms) runs again when the ref, the signature or the file change.
#[derive(Debug, PartialEq, Eq)]
struct Verified {
    digest: Digest,
    signature: Vec<u8>,
    identity: BlobIdentity,
}

/// Most verified entries remembered (the map is emptied when full: a bound, not an LRU).
const MAX_VERIFIED: usize = 4096;

/// What the cache signing key signs for a stored asset (also the signature of a shared cache
/// entry, `factory::remote::oci_cache`).
pub(crate) fn signed_message(key: &str, digest: &Digest) -> Vec<u8> {
    format!("bootfactory-asset-v1\n{key}\n{digest}\n").into_bytes()
}

impl Builder {
    /// A builder over `store`, with `max_concurrency` build slots and a per-build timeout;
    /// build work directories go under `work_root`.
    pub fn new(
        store: Store,
        signer: CacheSigner,
        max_concurrency: usize,
        timeout: Duration,
        work_root: PathBuf,
    ) -> Result<Builder, StoreError> {
        let signatures = store
            .db()
            .open_tree(SIGNATURES_TREE)
            .map_err(StoreError::Db)?;
        let used = store.db().open_tree(USED_TREE).map_err(StoreError::Db)?;
        // Leftovers of builds killed with the process.
        let _ = std::fs::remove_dir_all(&work_root);
        Ok(Builder {
            store,
            signer,
            signatures,
            used,
            slots: Arc::new(Semaphore::new(max_concurrency.max(1))),
            timeout,
            work_root,
            inflight: Mutex::new(HashMap::new()),
            on_built: None,
            running: Default::default(),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Registers a callback run after each successful build (key, timing, size).
    pub fn on_built(mut self, f: impl Fn(&str, BuildTiming, u64) + Send + Sync + 'static) -> Self {
        self.on_built = Some(Arc::new(f));
        self
    }

    /// The builds waiting for a slot or building now.
    pub fn running(&self) -> &Arc<super::running::RunningBuilds> {
        &self.running
    }

    /// The signer (its public key is published).
    pub fn signer(&self) -> &CacheSigner {
        &self.signer
    }

    /// The cached asset for `key`, if its signature and content verify.
    pub async fn cached(&self, key: &str) -> Option<BuiltAsset> {
        self.cached_open(key).await.map(|(asset, _)| asset)
    }

    /// [`Builder::cached`], with the blob it opened and checked (so a caller serving it does
    /// not open it again).
    pub async fn cached_open(&self, key: &str) -> Option<(BuiltAsset, Blob)> {
        let digest = self.store.get_ref(ASSET_KIND, key).ok()??;
        let signature = self.signatures.get(key.as_bytes()).ok()??;
        // The store checks the file against its record (a changed file is re-hashed, and
        // quarantined if its content changed) before handing it out.
        let blob = match self.store.open_blob(&digest).await {
            Ok(blob) => blob,
            Err(e) => {
                tracing::warn!(asset = key, %digest, error = %crate::errors::chain(&e), "cached asset unusable; rebuilding");
                return None;
            }
        };
        let seen = Verified {
            digest,
            signature: signature.to_vec(),
            identity: blob.identity(),
        };
        let known = self.verified_lock().get(key) == Some(&seen);
        if !known {
            if !self
                .signer
                .verify(&signed_message(key, &digest), &signature)
            {
                self.verified_lock().remove(key);
                tracing::warn!(asset = key, %digest, "cached asset signature does not verify; rebuilding");
                return None;
            }
            let mut verified = self.verified_lock();
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
            verified.insert(key.to_string(), seen);
        }
        mark_used(&self.used, key);
        Some((
            BuiltAsset {
                digest,
                size: blob.size,
                cached: true,
                shared: false,
                fetched: false,
            },
            blob,
        ))
    }

    fn verified_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Verified>> {
        // Every update is one map operation: a poisoned map is still consistent.
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while a build of `key` is running (a request for it joins that build).
    pub fn in_flight(&self, key: &str) -> bool {
        self.inflight
            .lock()
            .expect("inflight lock")
            .contains_key(key)
    }

    /// Returns the asset for `key`, building it with `build` (which writes to the path it is
    /// given) if it is not cached. Concurrent calls for one key share one build; the build
    /// continues if every caller goes away.
    pub async fn get_or_build(
        self: &Arc<Self>,
        key: &str,
        build: impl FnOnce(PathBuf) -> BuildFuture + Send + 'static,
    ) -> Result<BuiltAsset, BuildError> {
        self.get_or_make(key, Making::Build, build).await
    }

    /// Like [`Builder::get_or_build`], but `fetch` gets the asset from another factory
    /// (`origin`, for logs) and verifies it before returning `Ok`: it takes no build slot and
    /// is not counted as a build; the bytes go to the store and are signed with the cache key
    /// only after `fetch` has verified them. Concurrent calls for one key share one fetch (and
    /// a request for a key being built joins the build).
    pub async fn get_or_fetch(
        self: &Arc<Self>,
        key: &str,
        origin: &'static str,
        fetch: impl FnOnce(PathBuf) -> BuildFuture + Send + 'static,
    ) -> Result<BuiltAsset, BuildError> {
        self.get_or_make(key, Making::Fetch { origin }, fetch).await
    }

    async fn get_or_make(
        self: &Arc<Self>,
        key: &str,
        making: Making,
        build: impl FnOnce(PathBuf) -> BuildFuture + Send + 'static,
    ) -> Result<BuiltAsset, BuildError> {
        if let Some(hit) = self.cached(key).await {
            return Ok(hit);
        }
        let (mut rx, shared) = {
            let mut inflight = self.inflight.lock().expect("inflight lock");
            match inflight.get(key) {
                Some(rx) => (rx.clone(), true),
                None => {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(key.to_string(), rx.clone());
                    let this = self.clone();
                    let key = key.to_string();
                    tokio::spawn(async move {
                        let result = this.run_build(&key, making, build).await;
                        this.inflight.lock().expect("inflight lock").remove(&key);
                        let _ = tx.send(Some(result));
                    });
                    (rx, false)
                }
            }
        };
        loop {
            if let Some(result) = rx.borrow_and_update().clone() {
                return result.map(|mut a| {
                    a.cached = false;
                    a.shared = shared;
                    a
                });
            }
            if rx.changed().await.is_err() {
                return Err(BuildError::failed("build task ended without a result"));
            }
        }
    }

    async fn run_build(
        &self,
        key: &str,
        making: Making,
        build: impl FnOnce(PathBuf) -> BuildFuture,
    ) -> Result<BuiltAsset, BuildError> {
        // Someone may have finished it between our cache check and taking the slot.
        if let Some(hit) = self.cached(key).await {
            return Ok(hit);
        }
        let registration = self.running.register(key);
        let result = self
            .build_registered(key, making, build, &registration)
            .await;
        // Recorded with the recent builds (`/api/v1/builds`, the builds page).
        let fetch = matches!(making, Making::Fetch { .. });
        registration.finish(match &result {
            Ok(a) if a.fetched => Ok((Outcome::Fetched, a.size)),
            Ok(a) => Ok((Outcome::Built, a.size)),
            Err(e) => Err((
                if fetch {
                    Outcome::FetchFailed
                } else {
                    Outcome::Failed
                },
                errors::chain(e),
            )),
        });
        result
    }

    /// [`Builder::run_build`] once the build is registered with the running builds.
    async fn build_registered(
        &self,
        key: &str,
        making: Making,
        build: impl FnOnce(PathBuf) -> BuildFuture,
        registration: &Registration,
    ) -> Result<BuiltAsset, BuildError> {
        let queued_at = Instant::now();
        // A fetch is network and disk I/O, not CPU: it takes no build slot.
        let _slot = match making {
            Making::Build => Some(
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| BuildError::failed("builder shut down"))?,
            ),
            Making::Fetch { .. } => None,
        };
        let queued = queued_at.elapsed();
        let started = Instant::now();
        // Scratch space is on the store's filesystem: do not start a build the store would
        // refuse to keep.
        self.store.check_quota()?;
        let work = WorkDir::create(&self.work_root).map_err(|e| match e {
            BuildError::NoSpace { source, .. } => BuildError::NoSpace {
                path: self.store.dir().to_path_buf(),
                source,
            },
            e => e,
        })?;
        let output = work.path().join("asset");
        registration.started(&output);
        if let Making::Fetch { .. } = making {
            // Listed with the builds (`/api/v1/builds`), as what it is.
            registration.phase("fetching");
        }
        let result = tokio::time::timeout(self.timeout, build(output.clone())).await;
        match result {
            Ok(Ok(())) => {}
            // The build's own failure is logged once, here: it may have no request left to
            // answer (builds are detached from their clients). Each request that gets the
            // failure is logged by the HTTP layer with its ID.
            Ok(Err(BuildError::NoSpace { source, .. })) => {
                let e = BuildError::NoSpace {
                    path: self.store.dir().to_path_buf(),
                    source,
                };
                tracing::warn!(asset = key, error = %errors::chain(&e), "build failed");
                return Err(e);
            }
            Ok(Err(e)) => {
                match making {
                    Making::Build => {
                        tracing::warn!(asset = key, error = %errors::chain(&e), "build failed")
                    }
                    // The caller decides (fallback or not) and logs.
                    Making::Fetch { origin } => {
                        tracing::debug!(asset = key, origin, error = %errors::chain(&e), "fetch failed")
                    }
                }
                return Err(e);
            }
            Err(_) => {
                tracing::warn!(asset = key, timeout = ?self.timeout, "build timed out");
                return Err(BuildError::TimedOut(self.timeout));
            }
        }
        if let Err(e) = tokio::fs::metadata(&output).await {
            return Err(BuildError::Failed(errors::context(
                "build produced no output",
                e,
            )));
        }
        registration.phase("storing");
        // Moved into the store, not copied: the work directory is on its filesystem.
        let digest = self.store.put_file(&output).await?;
        let size = self.store.stat(&digest).map(|i| i.size).unwrap_or(0);
        self.store.set_ref(ASSET_KIND, key, &digest)?;
        self.signatures
            .insert(
                key.as_bytes(),
                self.signer.sign(&signed_message(key, &digest)),
            )
            .map_err(|e| BuildError::Store(Arc::new(e)))?;
        mark_used(&self.used, key);
        let timing = BuildTiming {
            queued,
            built: started.elapsed(),
        };
        let fetched = match making {
            Making::Build => {
                tracing::info!(asset = key, %digest, size, build_ms = timing.built.as_millis() as u64, queued_ms = queued.as_millis() as u64, "asset built");
                if let Some(cb) = &self.on_built {
                    cb(key, timing, size);
                }
                false
            }
            Making::Fetch { origin } => {
                tracing::info!(asset = key, %digest, size, origin, fetch_ms = timing.built.as_millis() as u64, "asset fetched and verified");
                true
            }
        };
        Ok(BuiltAsset {
            digest,
            size,
            cached: false,
            shared: false,
            fetched,
        })
    }
}

/// A per-build scratch directory, removed when dropped (also on failure or timeout).
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(root: &Path) -> Result<WorkDir, BuildError> {
        let failed = |dir: &Path, e: std::io::Error| {
            let no_space = crate::store::is_no_space(&e);
            let source = errors::context(dir.display().to_string(), e);
            if no_space {
                BuildError::NoSpace {
                    path: PathBuf::new(),
                    source,
                }
            } else {
                BuildError::Store(source)
            }
        };
        std::fs::create_dir_all(root).map_err(|e| failed(root, e))?;
        let dir = root.join(format!("build-{}", hex::encode(rand::random::<[u8; 8]>())));
        std::fs::create_dir(&dir).map_err(|e| failed(&dir, e))?;
        Ok(WorkDir(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn builder(dir: &Path, slots: usize, timeout: Duration) -> Arc<Builder> {
        let store = Store::open(&dir.join("store")).unwrap();
        let signer = CacheSigner::load_or_generate(&dir.join("key.pem"), true).unwrap();
        Arc::new(Builder::new(store, signer, slots, timeout, dir.join("work")).unwrap())
    }

    fn writes(
        bytes: &'static [u8],
        count: Arc<AtomicUsize>,
        delay_ms: u64,
    ) -> impl FnOnce(PathBuf) -> BuildFuture {
        move |out| {
            Box::pin(async move {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                tokio::fs::write(out, bytes)
                    .await
                    .map_err(BuildError::from_error)
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_one_build_then_hit_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let b = builder(dir.path(), 2, Duration::from_secs(10));
        let count = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let b = b.clone();
            let count = count.clone();
            tasks.push(tokio::spawn(async move {
                b.get_or_build("k", writes(b"data", count, 200)).await
            }));
        }
        let mut digests = Vec::new();
        for t in tasks {
            digests.push(t.await.unwrap().unwrap().digest);
        }
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert!(digests.windows(2).all(|w| w[0] == w[1]));
        let hit = b
            .get_or_build("k", writes(b"other", count.clone(), 0))
            .await
            .unwrap();
        assert!(hit.cached);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn tampered_signature_or_failed_build_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = builder(dir.path(), 1, Duration::from_secs(10));
        let count = Arc::new(AtomicUsize::new(0));
        b.get_or_build("k", writes(b"v1", count.clone(), 0))
            .await
            .unwrap();
        b.signatures.insert("k", b"forged".to_vec()).unwrap();
        let rebuilt = b
            .get_or_build("k", writes(b"v1", count.clone(), 0))
            .await
            .unwrap();
        assert!(!rebuilt.cached);
        assert_eq!(count.load(Ordering::SeqCst), 2);

        let failed = b
            .get_or_build("bad", |_out| {
                Box::pin(async { Err(BuildError::failed("nope")) })
            })
            .await;
        assert!(matches!(failed, Err(BuildError::Failed(m)) if m.to_string() == "nope"));
        assert!(b.cached("bad").await.is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join("work")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn a_remembered_signature_does_not_cover_a_changed_blob_or_signature() {
        let dir = tempfile::tempdir().unwrap();
        let b = builder(dir.path(), 1, Duration::from_secs(10));
        let count = Arc::new(AtomicUsize::new(0));
        let built = b
            .get_or_build("k", writes(b"original", count.clone(), 0))
            .await
            .unwrap();
        // Warm: verified once, then served from the memo.
        let (hit, blob) = b.cached_open("k").await.unwrap();
        assert_eq!(hit.digest, built.digest);
        assert!(b.verified_lock().contains_key("k"));
        assert_eq!(
            b.cached_open("k").await.unwrap().1.identity(),
            blob.identity()
        );
        // The blob modified in place, same length: the store refuses it, nothing is served.
        {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&blob.path)
                .unwrap();
            f.write_all(b"tampered").unwrap();
        }
        assert!(b.cached("k").await.is_none());
        let rebuilt = b
            .get_or_build("k", writes(b"original", count.clone(), 0))
            .await
            .unwrap();
        assert!(!rebuilt.cached);
        assert_eq!(rebuilt.digest, built.digest);
        assert_eq!(
            std::fs::read(&b.cached_open("k").await.unwrap().1.path).unwrap(),
            b"original"
        );
        // A forged signature after the memo is warm is checked again and refused.
        assert!(b.cached("k").await.is_some());
        b.signatures.insert("k", b"forged".to_vec()).unwrap();
        assert!(b.cached("k").await.is_none());
        assert!(!b.verified_lock().contains_key("k"));
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn timeouts_are_reported_and_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let b = builder(dir.path(), 1, Duration::from_millis(100));
        let r = b
            .get_or_build("slow", writes(b"x", Arc::new(AtomicUsize::new(0)), 2000))
            .await;
        assert!(matches!(r, Err(BuildError::TimedOut(_))));
        assert!(b.cached("slow").await.is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join("work")).unwrap().count(),
            0
        );
    }
}
