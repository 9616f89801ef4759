//! A build cache shared by several appliances on an OCI registry (`cache.oci.repository`):
//! Harbor, distribution (`docker-registry`), any registry that takes OCI image manifests.
//!
//! One entry per built asset: an OCI image manifest tagged `bf-<SHA-256 of the cache key>`
//! (the builder's key, `factory::service::asset_key`, which includes the build format, so an
//! entry is only ever found by a release that builds the same bytes), with
//!
//! - the empty config (`application/vnd.oci.empty.v1+json`, `{}`);
//! - one layer, media type `application/data`: the asset's bytes, digest SHA-256;
//! - annotations `org.bootfactory.cache.key` (the key) and `org.bootfactory.cache.signature`:
//!   base64 of the DER ECDSA P-256 signature of the very message the local store signs for
//!   the asset (`bootfactory-asset-v1\n<key>\n<layer digest>\n`, [`super::super::builder`]),
//!   made with the pushing appliance's cache signing key.
//!
//! A lookup checks the key annotation, then the signature with the trusted keys (this
//! appliance's own and `cache.oci.publicKeyFiles`), then streams the layer into a scratch
//! file while hashing it and compares size and digest. Any failure is a miss (logged at WARN
//! when it is a verification failure) and the asset is built here. A push runs in the
//! background after a local build; its errors are only logged.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::StreamExt as _;
use oci_client::Reference;
use oci_client::client::Client;
use oci_client::secrets::RegistryAuth;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use prometheus::{IntCounterVec, Opts};
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;

use crate::config::Config;
use crate::errors;
use crate::factory::builder::{BuildError, BuildFuture, signed_message};
use crate::factory::signing::CacheSigner;
use crate::store::{Digest, Store};
use crate::upstream::client::{Endpoint, auth_of, build_client};

/// The layer media type of a cached asset.
pub(crate) const ASSET_MEDIA_TYPE: &str = "application/data";
/// The annotation naming the cache key.
pub(crate) const KEY_ANNOTATION: &str = "org.bootfactory.cache.key";
/// The annotation carrying the signature.
pub(crate) const SIGNATURE_ANNOTATION: &str = "org.bootfactory.cache.signature";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The largest asset taken from the cache.
const MAX_ASSET_BYTES: u64 = 32 << 30;
/// Bytes written between two checks of the store's quotas.
const QUOTA_CHECK_EVERY: u64 = 16 << 20;
/// How long the registry stays marked unreachable.
const DOWN_PERIOD: Duration = Duration::from_secs(30);

/// Why a cache entry was not used (every variant is a miss).
#[derive(Debug, thiserror::Error)]
pub(crate) enum OciCacheError {
    /// No entry under the tag, or the registry failed.
    #[error("shared cache {repository}: {message}")]
    Unavailable { repository: String, message: String },
    /// The entry did not verify: not stored, not served.
    #[error("shared cache {repository}: entry {tag} rejected: {reason}")]
    Rejected {
        repository: String,
        tag: String,
        reason: String,
    },
    /// Writing the scratch file failed.
    #[error("writing an asset from the shared cache")]
    Io(#[source] std::io::Error),
    /// The store's quotas refuse more content.
    #[error(transparent)]
    Quota(crate::store::StoreError),
}

/// Why the shared cache settings cannot be used (a start failure).
#[derive(Debug, thiserror::Error)]
pub(crate) enum OciCacheSetupError {
    /// A public key file cannot be read or is not a P-256 public key in PEM.
    #[error("cache.oci.publicKeyFiles {path}: {message}")]
    Key { path: String, message: String },
}

/// The shared cache.
pub(crate) struct OciCache {
    repository: String,
    authority: String,
    path: String,
    client: Client,
    auth: RegistryAuth,
    timeout: Duration,
    signer: CacheSigner,
    trusted: Vec<VerifyingKey>,
    down_until: Mutex<Option<Instant>>,
    results: IntCounterVec,
}

impl OciCache {
    /// The shared cache of `config`, if `cache.oci.repository` is set; entries are signed
    /// with `signer` and trusted when signed by it or a key of `cache.oci.publicKeyFiles`.
    pub(crate) fn from_config(
        config: &Config,
        signer: &CacheSigner,
    ) -> Result<Option<OciCache>, OciCacheSetupError> {
        let oci = &config.cache.oci;
        let Some(repository) = oci.repository.clone() else {
            return Ok(None);
        };
        let (host, path) = repository
            .split_once('/')
            .expect("validated by config: host/path");
        let mut endpoint = Endpoint::resolve(config, host);
        endpoint.plain_http |= oci.insecure;
        let settings = config
            .upstream
            .registries
            .get(host)
            .cloned()
            .unwrap_or_default();
        let mut trusted = vec![*signer.verifying_key()];
        for file in &oci.public_key_files {
            let shown = file.display().to_string();
            let pem = std::fs::read_to_string(file).map_err(|e| OciCacheSetupError::Key {
                path: shown.clone(),
                message: e.to_string(),
            })?;
            let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
                OciCacheSetupError::Key {
                    path: shown.clone(),
                    message: format!("not a P-256 public key in PEM: {e}"),
                }
            })?;
            trusted.push(key);
        }
        crate::init_crypto();
        let timeout = Duration::from_secs(config.upstream.timeout_seconds.max(1));
        let results = IntCounterVec::new(
            Opts::new(
                "bootfactory_oci_cache_total",
                "Shared OCI build cache operations, by operation (lookup, push) and result.",
            ),
            &["operation", "result"],
        )
        .expect("valid metric");
        Ok(Some(OciCache {
            authority: endpoint.authority.clone(),
            path: path.to_string(),
            client: build_client(&endpoint, timeout),
            auth: auth_of(&settings),
            repository,
            timeout,
            signer: signer.clone(),
            trusted,
            down_until: Mutex::new(None),
            results,
        }))
    }

    /// The counter, for the metrics registry.
    pub(crate) fn metrics_collector(&self) -> Box<dyn prometheus::core::Collector> {
        Box::new(self.results.clone())
    }

    /// The tag of `key`'s entry.
    pub(crate) fn tag(key: &str) -> String {
        format!("bf-{}", hex::encode(sha2::Sha256::digest(key.as_bytes())))
    }

    fn reference(&self, tag: &str) -> Reference {
        Reference::with_tag(self.authority.clone(), self.path.clone(), tag.to_string())
    }

    fn unavailable(&self, message: String) -> OciCacheError {
        OciCacheError::Unavailable {
            repository: self.repository.clone(),
            message,
        }
    }

    fn rejected(&self, tag: &str, reason: String) -> OciCacheError {
        OciCacheError::Rejected {
            repository: self.repository.clone(),
            tag: tag.to_string(),
            reason,
        }
    }

    fn is_down(&self) -> bool {
        self.down_until
            .lock()
            .expect("down lock")
            .is_some_and(|until| Instant::now() < until)
    }

    fn mark_down(&self, why: &str) {
        let mut down = self.down_until.lock().expect("down lock");
        if down.is_none_or(|until| Instant::now() >= until) {
            tracing::warn!(repository = %self.repository, reason = why, period = ?DOWN_PERIOD, "shared cache unreachable; not asking it again for a while");
        }
        *down = Some(Instant::now() + DOWN_PERIOD);
    }

    /// The lookup as a build function for
    /// [`crate::factory::builder::Builder::get_or_fetch`].
    pub(crate) fn fetch_build(
        self: &Arc<Self>,
        store: Store,
        key: String,
    ) -> impl FnOnce(std::path::PathBuf) -> BuildFuture + Send + 'static {
        let this = self.clone();
        move |out| {
            Box::pin(async move {
                let result = this.fetch(&key, &out, &store).await;
                let label = match &result {
                    Ok(()) => "hit",
                    Err(OciCacheError::Unavailable { .. }) => "miss",
                    Err(OciCacheError::Rejected { .. }) => "rejected",
                    Err(_) => "error",
                };
                this.results.with_label_values(&["lookup", label]).inc();
                match result {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let _ = tokio::fs::remove_file(&out).await;
                        if let OciCacheError::Rejected { .. } = &e {
                            tracing::warn!(error = %errors::chain(&e), "shared cache entry rejected; building instead");
                        }
                        Err(match e {
                            OciCacheError::Quota(q) => BuildError::from(q),
                            e @ OciCacheError::Io(_) => BuildError::from_error(e),
                            e => BuildError::Failed(Arc::new(e)),
                        })
                    }
                }
            })
        }
    }

    async fn fetch(&self, key: &str, out: &Path, store: &Store) -> Result<(), OciCacheError> {
        if self.is_down() {
            return Err(self.unavailable("unreachable recently; not asking again yet".into()));
        }
        let tag = Self::tag(key);
        let reference = self.reference(&tag);
        let pulled = tokio::time::timeout(
            self.timeout,
            self.client
                .pull_manifest_raw(&reference, &self.auth, &[MANIFEST_MEDIA_TYPE]),
        )
        .await;
        let (manifest, _) = match pulled {
            Err(_) => {
                self.mark_down("timeout");
                return Err(self.unavailable(format!("no answer within {:?}", self.timeout)));
            }
            Ok(Err(e)) => {
                let text = errors::chain(&e);
                if matches!(e, oci_client::errors::OciDistributionError::RequestError(_)) {
                    self.mark_down(&text);
                }
                return Err(self.unavailable(format!("{tag}: {text}")));
            }
            Ok(Ok(m)) => m,
        };
        let (layer, size) = self.check_manifest(key, &tag, &manifest)?;
        // The layer, streamed while hashing; its size and digest must be the signed ones.
        let mut stream = tokio::time::timeout(
            self.timeout,
            self.client
                .pull_blob_stream(&reference, layer.to_string().as_str()),
        )
        .await
        .map_err(|_| self.unavailable(format!("{tag}: no answer within {:?}", self.timeout)))?
        .map_err(|e| self.unavailable(format!("{tag}: layer: {}", errors::chain(&e))))?
        .stream;
        let mut file = tokio::fs::File::create(out)
            .await
            .map_err(OciCacheError::Io)?;
        let mut hash = sha2::Sha256::new();
        let mut written: u64 = 0;
        let mut next_check = QUOTA_CHECK_EVERY;
        loop {
            let chunk = tokio::time::timeout(self.timeout, stream.next())
                .await
                .map_err(|_| self.unavailable(format!("{tag}: layer stalled")))?;
            let Some(chunk) = chunk else { break };
            let chunk = chunk.map_err(|e| {
                // oci-client's own digest check fails the stream at its end.
                self.rejected(&tag, format!("layer: {}", errors::chain(&e)))
            })?;
            written += chunk.len() as u64;
            if written > size {
                return Err(self.rejected(&tag, format!("layer longer than its {size} bytes")));
            }
            hash.update(&chunk);
            file.write_all(&chunk).await.map_err(OciCacheError::Io)?;
            if written >= next_check {
                store
                    .check_quota_for(written)
                    .map_err(OciCacheError::Quota)?;
                next_check = written + QUOTA_CHECK_EVERY;
            }
        }
        let got = hex::encode(hash.finalize());
        if written != size || got != layer.hex() {
            return Err(self.rejected(
                &tag,
                format!("layer is {written} bytes with SHA-256 {got}, not {size} bytes {layer}"),
            ));
        }
        file.flush().await.map_err(OciCacheError::Io)?;
        file.sync_all().await.map_err(OciCacheError::Io)?;
        Ok(())
    }

    /// The manifest of `key`'s entry: one layer of [`ASSET_MEDIA_TYPE`], the key annotation,
    /// and a signature of (key, layer digest) by a trusted key. Returns the layer's digest
    /// and size.
    fn check_manifest(
        &self,
        key: &str,
        tag: &str,
        manifest: &[u8],
    ) -> Result<(Digest, u64), OciCacheError> {
        #[derive(serde::Deserialize)]
        struct Descriptor {
            #[serde(rename = "mediaType")]
            media_type: String,
            digest: String,
            size: u64,
        }
        #[derive(serde::Deserialize)]
        struct Manifest {
            layers: Vec<Descriptor>,
            #[serde(default)]
            annotations: std::collections::BTreeMap<String, String>,
        }
        let m: Manifest = serde_json::from_slice(manifest)
            .map_err(|e| self.rejected(tag, format!("not an image manifest: {e}")))?;
        let [layer] = &m.layers[..] else {
            return Err(self.rejected(tag, format!("{} layers, not one", m.layers.len())));
        };
        if layer.media_type != ASSET_MEDIA_TYPE {
            return Err(self.rejected(tag, format!("layer media type {:?}", layer.media_type)));
        }
        if layer.size > MAX_ASSET_BYTES {
            return Err(self.rejected(tag, format!("layer of {} bytes", layer.size)));
        }
        if m.annotations.get(KEY_ANNOTATION).map(String::as_str) != Some(key) {
            return Err(self.rejected(tag, "the entry is for another cache key".into()));
        }
        let digest: Digest = layer
            .digest
            .parse()
            .map_err(|_| self.rejected(tag, format!("layer digest {:?}", layer.digest)))?;
        let signature = m
            .annotations
            .get(SIGNATURE_ANNOTATION)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|der| Signature::from_der(&der).ok())
            .ok_or_else(|| self.rejected(tag, "no signature".into()))?;
        let message = signed_message(key, &digest);
        if !self
            .trusted
            .iter()
            .any(|k| k.verify(&message, &signature).is_ok())
        {
            return Err(self.rejected(
                tag,
                format!("the signature of {digest} is not by a trusted key"),
            ));
        }
        Ok((digest, layer.size))
    }

    /// Pushes the stored asset `digest` of `key` in the background (errors are logged).
    pub(crate) fn push_in_background(self: &Arc<Self>, store: Store, key: String, digest: Digest) {
        let this = self.clone();
        tokio::spawn(async move {
            match this.push(&store, &key, &digest).await {
                Ok(()) => {
                    this.results.with_label_values(&["push", "ok"]).inc();
                    tracing::info!(asset = key, %digest, repository = %this.repository, "pushed to the shared cache");
                }
                Err(e) => {
                    this.results.with_label_values(&["push", "error"]).inc();
                    tracing::warn!(asset = key, %digest, repository = %this.repository, error = %e, "push to the shared cache failed");
                }
            }
        });
    }

    async fn push(&self, store: &Store, key: &str, digest: &Digest) -> Result<(), String> {
        let tag = Self::tag(key);
        let reference = self.reference(&tag);
        let blob = store
            .open_blob(digest)
            .await
            .map_err(|e| errors::chain(&e))?;
        let size = blob.size;
        let stream = tokio_util::io::ReaderStream::with_capacity(blob.file, 1 << 20)
            .map(|r| r.map_err(oci_client::errors::OciDistributionError::from));
        self.client
            .auth(&reference, &self.auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| errors::chain(&e))?;
        self.client
            .push_blob_stream(&reference, stream, &digest.to_string(), Some(size))
            .await
            .map_err(|e| format!("layer: {}", errors::chain(&e)))?;
        let empty = bytes::Bytes::from_static(b"{}");
        let empty_digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&empty)));
        self.client
            .push_blob(&reference, empty, &empty_digest)
            .await
            .map_err(|e| format!("config: {}", errors::chain(&e)))?;
        let signature = base64::engine::general_purpose::STANDARD
            .encode(self.signer.sign(&signed_message(key, digest)));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": empty_digest, "size": 2},
            "layers": [{"mediaType": ASSET_MEDIA_TYPE, "digest": digest.to_string(), "size": size}],
            "annotations": {KEY_ANNOTATION: key, SIGNATURE_ANNOTATION: signature},
        });
        let body = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
        self.client
            .push_manifest_raw(
                &reference,
                body,
                reqwest::header::HeaderValue::from_static(MANIFEST_MEDIA_TYPE),
            )
            .await
            .map_err(|e| format!("manifest: {}", errors::chain(&e)))?;
        Ok(())
    }
}
