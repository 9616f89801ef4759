//! A parent factory (`factory.parent`): an Image Factory or another bootfactory asked for an
//! asset this appliance does not have, over its public HTTP API:
//!
//! 1. `POST <parent>/schematics` with the schematic's canonical YAML, once per schematic and
//!    process (the parent must know the schematic; the ID it answers must be ours);
//! 2. `GET <parent>/image/<schematic>/<version>/<path>`, streamed into a scratch file in the
//!    data directory while its SHA-256 is computed, bounded in time (`parentTimeoutSeconds`
//!    until the answer starts and between chunks, the build timeout overall) and size (a hard
//!    cap and the store's quotas, checked while writing);
//! 3. the verification `factory.parentVerify` asks for (`<path>.sha256` or `<path>.sig`).
//!
//! Only then does the scratch file go to the store ([`crate::factory::builder`]). A parent
//! that does not answer is marked down for [`DOWN_PERIOD`], so the requests behind the first
//! one do not each wait for the timeout. The versions a parent serves (`GET /versions`) let an
//! appliance without a release of its own accept a request for a version its parent has.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use prometheus::{IntCounterVec, Opts};
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;

use super::asset_signature_message;
use crate::config::{Config, HttpUrl, ParentFallback, ParentVerify};
use crate::errors;
use crate::factory::builder::{BuildError, BuildFuture};
use crate::store::{Store, StoreError};
use crate::upstream::client::RegistryClient;
use crate::version::TalosVersion;

/// How long a parent stays marked down after it did not answer.
pub(crate) const DOWN_PERIOD: Duration = Duration::from_secs(30);
/// The largest asset taken from a parent (Azure's VHD is 9 GiB).
const MAX_ASSET_BYTES: u64 = 32 << 30;
/// The largest small answer read from a parent (`/versions`, checksums, signatures, the
/// schematic ID).
const MAX_SMALL_BYTES: usize = 1 << 20;
/// How long the list of the parent's versions is trusted.
const VERSIONS_TTL: Duration = Duration::from_secs(60);
/// Schematics remembered as known to the parent (the set is emptied when full).
const MAX_KNOWN_SCHEMATICS: usize = 4096;
/// Bytes written between two checks of the store's quotas.
const QUOTA_CHECK_EVERY: u64 = 16 << 20;

/// Why the parent could not give an asset. Every variant but the I/O ones is a miss the
/// factory may fall back from.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ParentError {
    /// The parent answered that it does not have (or will not give) the asset.
    #[error("parent {parent} does not have {what} (HTTP {status}: {body})")]
    Missing {
        parent: String,
        what: String,
        status: u16,
        body: String,
    },
    /// The parent did not answer, or answered with a server error.
    #[error("parent {parent} is unavailable: {message}")]
    Unavailable {
        parent: String,
        message: String,
        #[source]
        source: Option<reqwest::Error>,
    },
    /// The bytes (or the schematic ID) did not pass verification: nothing was stored.
    #[error("{what} from parent {parent} was rejected: {reason}")]
    Rejected {
        parent: String,
        what: String,
        reason: String,
    },
    /// Writing the scratch file failed.
    #[error("writing {what} from the parent")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The store's quotas refuse more content.
    #[error(transparent)]
    Quota(StoreError),
}

/// Why the parent settings cannot be used (a start failure).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ParentSetupError {
    /// The public key file cannot be read.
    #[error("factory.parentPublicKeyFile {path}")]
    ReadKey {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a P-256 public key in PEM.
    #[error("factory.parentPublicKeyFile {path}: not a P-256 public key in PEM: {message}")]
    BadKey { path: String, message: String },
    /// The HTTP client could not be made.
    #[error("the parent's HTTP client")]
    Client(#[source] reqwest::Error),
}

/// How the parent's bytes are verified.
enum Verify {
    Sha256,
    Signature(Box<VerifyingKey>),
    None,
}

/// One asset to fetch.
#[derive(Debug, Clone)]
pub(crate) struct FetchRequest {
    /// The schematic ID (as in the path).
    pub schematic: String,
    /// The schematic's canonical YAML (posted to the parent when it may not know it).
    pub canonical: String,
    /// The version as in the path (`v1.11.6`).
    pub version: String,
    /// The asset path (`metal-amd64.iso`).
    pub path: String,
    /// The [`super::CHAIN_HEADER`] value sent: the requests's chain plus this factory.
    pub chain: String,
}

/// The parent factory.
pub(crate) struct Parent {
    base: HttpUrl,
    verify: Verify,
    fallback: ParentFallback,
    client: reqwest::Client,
    timeout: Duration,
    down_until: Mutex<Option<Instant>>,
    known: Mutex<HashSet<String>>,
    versions: Mutex<Option<(Instant, Vec<TalosVersion>)>>,
    results: IntCounterVec,
    /// The parent's `/v2` registry (installer images), reached at the parent's URL.
    registry: RegistryClient,
}

impl Parent {
    /// The parent of `config`, if `factory.parent` is set (its public key read now, so a bad
    /// key fails the start).
    pub(crate) fn from_config(config: &Config) -> Result<Option<Parent>, ParentSetupError> {
        let f = &config.factory;
        let Some(base) = f.parent.clone() else {
            return Ok(None);
        };
        let verify = match f.parent_verify {
            ParentVerify::Sha256 => Verify::Sha256,
            ParentVerify::None => Verify::None,
            ParentVerify::Signature => {
                let path = f.parent_public_key_file.clone().unwrap_or_default();
                let shown = path.display().to_string();
                let pem =
                    std::fs::read_to_string(&path).map_err(|source| ParentSetupError::ReadKey {
                        path: shown.clone(),
                        source,
                    })?;
                let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
                    ParentSetupError::BadKey {
                        path: shown,
                        message: e.to_string(),
                    }
                })?;
                Verify::Signature(Box::new(key))
            }
        };
        if matches!(verify, Verify::None) && !base.is_https() {
            tracing::warn!(parent = %base, "factory.parentVerify is none and the parent is plain HTTP: its assets are served unverified");
        }
        crate::init_crypto();
        let timeout = Duration::from_secs(f.parent_timeout_seconds.max(1));
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .user_agent(concat!("bootfactory/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ParentSetupError::Client)?;
        let results = IntCounterVec::new(
            Opts::new(
                "bootfactory_parent_fetches_total",
                "Assets asked from the parent factory, by result (fetched, missing, rejected, unavailable, error).",
            ),
            &["result"],
        )
        .expect("valid metric");
        // The parent's registry is at its own URL (unless `upstream.registries.<host>` says
        // otherwise): an http:// parent is a plain-HTTP registry.
        let registry = {
            let mut c = config.clone();
            c.upstream.timeout_seconds = f.parent_timeout_seconds.max(1);
            c.upstream
                .registries
                .entry(base.authority())
                .or_insert_with(|| crate::config::UpstreamRegistry {
                    endpoint: Some(base.clone()),
                    ..Default::default()
                });
            RegistryClient::new(&c, &base.authority())
        };
        Ok(Some(Parent {
            registry,
            base,
            verify,
            fallback: f.parent_fallback,
            client,
            timeout,
            down_until: Mutex::new(None),
            known: Mutex::new(HashSet::new()),
            versions: Mutex::new(None),
            results,
        }))
    }

    /// The parent's URL as configured.
    pub(crate) fn url(&self) -> &str {
        self.base.as_str()
    }

    /// The parent's registry (installer images: `<image>/<schematic>:<version>`).
    pub(crate) fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    /// The parent's public key, with `parentVerify: signature`.
    pub(crate) fn public_key(&self) -> Option<&VerifyingKey> {
        match &self.verify {
            Verify::Signature(k) => Some(k),
            _ => None,
        }
    }

    /// Counts an installer image taken from (or refused from) the parent.
    pub(crate) fn count(&self, result: &str) {
        self.results.with_label_values(&[result]).inc();
    }

    /// What happens when the parent cannot give an asset.
    pub(crate) fn fallback(&self) -> ParentFallback {
        self.fallback
    }

    /// The fetch counter, for the metrics registry.
    pub(crate) fn metrics_collector(&self) -> Box<dyn prometheus::core::Collector> {
        Box::new(self.results.clone())
    }

    fn is_down(&self) -> bool {
        self.down_until
            .lock()
            .expect("down lock")
            .is_some_and(|until| Instant::now() < until)
    }

    fn mark_down(&self) {
        let mut down = self.down_until.lock().expect("down lock");
        if down.is_none_or(|until| Instant::now() >= until) {
            tracing::warn!(parent = %self.base, period = ?DOWN_PERIOD, "parent factory unreachable; not asking it again for a while");
        }
        *down = Some(Instant::now() + DOWN_PERIOD);
    }

    fn mark_up(&self) {
        *self.down_until.lock().expect("down lock") = None;
    }

    fn unavailable(&self, message: String, source: Option<reqwest::Error>) -> ParentError {
        ParentError::Unavailable {
            parent: self.base.to_string(),
            message,
            source,
        }
    }

    fn rejected(&self, what: &str, reason: String) -> ParentError {
        ParentError::Rejected {
            parent: self.base.to_string(),
            what: what.to_string(),
            reason,
        }
    }

    /// A request failed below HTTP (connection, timeout): the parent is marked down.
    fn transport(&self, what: &str, e: reqwest::Error) -> ParentError {
        self.mark_down();
        self.unavailable(format!("{what}: {}", errors::chain(&e)), Some(e))
    }

    fn refuse_if_down(&self) -> Result<(), ParentError> {
        if self.is_down() {
            return Err(self.unavailable(
                "it did not answer recently; not asking again yet".into(),
                None,
            ));
        }
        Ok(())
    }

    /// `GET` of a small answer (at most [`MAX_SMALL_BYTES`], within the timeout): status and
    /// body.
    async fn get_small(&self, url: &str, what: &str) -> Result<(u16, String), ParentError> {
        let fut = async {
            let resp = self
                .client
                .get(url)
                .send()
                .await
                .map_err(|e| self.transport(what, e))?;
            let status = resp.status().as_u16();
            let body = read_small(resp)
                .await
                .map_err(|e| self.transport(what, e))?;
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| {
                self.mark_down();
                Err(self.unavailable(format!("{what}: no answer within {:?}", self.timeout), None))
            })
    }

    /// Whether the parent serves `version` (its `GET /versions`, cached for a minute): a
    /// request for a version this appliance has no release of is accepted when the parent
    /// has it. `Err` (why) when the parent is down or its answer is not a list of versions.
    pub(crate) async fn has_version(&self, version: &TalosVersion) -> Result<bool, String> {
        if let Some((at, list)) = self.versions.lock().expect("versions lock").as_ref()
            && at.elapsed() < VERSIONS_TTL
        {
            return Ok(list.contains(version));
        }
        self.refuse_if_down().map_err(|e| errors::chain(&e))?;
        let url = format!("{}/versions", self.base.base());
        let list = match self.get_small(&url, "its versions").await {
            Ok((200, body)) => serde_json::from_str::<Vec<String>>(&body)
                .map(|names| {
                    names
                        .iter()
                        .filter_map(|n| crate::version::parse_user_version(n).ok())
                        .collect::<Vec<_>>()
                })
                .map_err(|e| {
                    format!(
                        "parent {}: /versions is not a list of versions: {e}",
                        self.base
                    )
                })?,
            Ok((status, _)) => {
                return Err(format!(
                    "parent {}: /versions answered HTTP {status}",
                    self.base
                ));
            }
            Err(e) => return Err(errors::chain(&e)),
        };
        let has = list.contains(version);
        *self.versions.lock().expect("versions lock") = Some((Instant::now(), list));
        Ok(has)
    }

    /// Makes sure the parent knows the schematic: `POST /schematics` with its canonical YAML
    /// (idempotent), the answered ID checked against ours. Remembered per process.
    async fn ensure_schematic(&self, req: &FetchRequest) -> Result<(), ParentError> {
        if self
            .known
            .lock()
            .expect("known lock")
            .contains(&req.schematic)
        {
            return Ok(());
        }
        let what = format!("schematic {}", req.schematic);
        let url = format!("{}/schematics", self.base.base());
        let fut = async {
            let resp = self
                .client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/yaml")
                .body(req.canonical.clone())
                .send()
                .await
                .map_err(|e| self.transport(&what, e))?;
            let status = resp.status().as_u16();
            let body = read_small(resp)
                .await
                .map_err(|e| self.transport(&what, e))?;
            Ok::<_, ParentError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| {
                self.mark_down();
                Err(self.unavailable(format!("{what}: no answer within {:?}", self.timeout), None))
            })?;
        if !(200..300).contains(&status) {
            return Err(self.status_error(&what, status, &body));
        }
        #[derive(serde::Deserialize)]
        struct Created {
            id: String,
        }
        let id = serde_json::from_str::<Created>(&body)
            .map_err(|e| self.rejected(&what, format!("the answer is not {{\"id\":…}}: {e}")))?
            .id;
        if id != req.schematic {
            return Err(self.rejected(
                &what,
                format!(
                    "the parent computes ID {} for it",
                    id.chars().take(80).collect::<String>()
                ),
            ));
        }
        let mut known = self.known.lock().expect("known lock");
        if known.len() >= MAX_KNOWN_SCHEMATICS {
            known.clear();
        }
        known.insert(req.schematic.clone());
        Ok(())
    }

    fn status_error(&self, what: &str, status: u16, body: &str) -> ParentError {
        let body: String = body.trim().chars().take(200).collect();
        if status >= 500 {
            return self.unavailable(format!("{what}: HTTP {status}: {body}"), None);
        }
        ParentError::Missing {
            parent: self.base.to_string(),
            what: what.to_string(),
            status,
            body,
        }
    }

    /// The fetch as a build function for [`crate::factory::builder::Builder::get_or_fetch`]:
    /// it writes the verified asset to the path it is given, or fails leaving nothing the
    /// builder would keep.
    pub(crate) fn fetch_build(
        self: &Arc<Self>,
        store: Store,
        req: FetchRequest,
    ) -> impl FnOnce(std::path::PathBuf) -> BuildFuture + Send + 'static {
        let this = self.clone();
        move |out| {
            Box::pin(async move {
                let result = this.fetch(&req, &out, &store).await;
                let label = match &result {
                    Ok(()) => "fetched",
                    Err(ParentError::Missing { .. }) => "missing",
                    Err(ParentError::Rejected { .. }) => "rejected",
                    Err(ParentError::Unavailable { .. }) => "unavailable",
                    Err(_) => "error",
                };
                this.results.with_label_values(&[label]).inc();
                match result {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let _ = tokio::fs::remove_file(&out).await;
                        if let ParentError::Rejected { .. } = &e {
                            tracing::warn!(error = %errors::chain(&e), "parent asset rejected; not stored");
                        }
                        Err(match e {
                            ParentError::Quota(q) => BuildError::from(q),
                            e @ ParentError::Io { .. } => BuildError::from_error(e),
                            e => BuildError::Failed(Arc::new(e)),
                        })
                    }
                }
            })
        }
    }

    /// Fetches `req` into `out` and verifies it.
    async fn fetch(
        &self,
        req: &FetchRequest,
        out: &Path,
        store: &Store,
    ) -> Result<(), ParentError> {
        self.refuse_if_down()?;
        self.ensure_schematic(req).await?;
        let url = format!(
            "{}/image/{}/{}/{}",
            self.base.base(),
            req.schematic,
            req.version,
            req.path
        );
        let what = format!("{}/{}/{}", req.schematic, req.version, req.path);
        let sha256 = match self.download(&url, &req.chain, &what, out, store).await {
            Err(ParentError::Missing { body, .. }) if body.contains("schematic ID") => {
                // The parent forgot the schematic (a new store): post it again, once.
                self.known
                    .lock()
                    .expect("known lock")
                    .remove(&req.schematic);
                self.ensure_schematic(req).await?;
                self.download(&url, &req.chain, &what, out, store).await?
            }
            r => r?,
        };
        self.mark_up();
        self.verify(req, &url, &what, &sha256).await
    }

    /// Streams `url` into `out`; returns the SHA-256 (hex) of what was written.
    async fn download(
        &self,
        url: &str,
        chain: &str,
        what: &str,
        out: &Path,
        store: &Store,
    ) -> Result<String, ParentError> {
        let mut resp = tokio::time::timeout(
            self.timeout,
            self.client
                .get(url)
                .header(super::CHAIN_HEADER, chain)
                .send(),
        )
        .await
        .map_err(|_| {
            self.mark_down();
            self.unavailable(format!("{what}: no answer within {:?}", self.timeout), None)
        })?
        .map_err(|e| self.transport(what, e))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = tokio::time::timeout(self.timeout, read_small(resp))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(self.status_error(what, status, &body));
        }
        let expected = resp.content_length();
        if let Some(len) = expected
            && len > MAX_ASSET_BYTES
        {
            return Err(self.rejected(
                what,
                format!("{len} bytes is more than the {MAX_ASSET_BYTES}-byte limit"),
            ));
        }
        let io = |source| ParentError::Io {
            what: what.to_string(),
            source,
        };
        let mut file = tokio::fs::File::create(out).await.map_err(io)?;
        let mut hash = sha2::Sha256::new();
        let mut written: u64 = 0;
        let mut next_check = QUOTA_CHECK_EVERY;
        loop {
            let chunk = tokio::time::timeout(self.timeout, resp.chunk())
                .await
                .map_err(|_| {
                    self.unavailable(
                        format!("{what}: stalled for {:?} mid-transfer", self.timeout),
                        None,
                    )
                })?
                .map_err(|e| self.transport(what, e))?;
            let Some(chunk) = chunk else { break };
            written += chunk.len() as u64;
            if written > MAX_ASSET_BYTES {
                return Err(
                    self.rejected(what, format!("more than the {MAX_ASSET_BYTES}-byte limit"))
                );
            }
            hash.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
            if written >= next_check {
                store.check_quota_for(written).map_err(ParentError::Quota)?;
                next_check = written + QUOTA_CHECK_EVERY;
            }
        }
        if let Some(len) = expected
            && len != written
        {
            return Err(
                self.unavailable(format!("{what}: {written} of {len} bytes received"), None)
            );
        }
        file.flush().await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        Ok(hex::encode(hash.finalize()))
    }

    /// Checks the downloaded bytes (SHA-256 `sha256`) as `factory.parentVerify` says.
    async fn verify(
        &self,
        req: &FetchRequest,
        url: &str,
        what: &str,
        sha256: &str,
    ) -> Result<(), ParentError> {
        match &self.verify {
            Verify::None => Ok(()),
            Verify::Sha256 => {
                let (status, body) = self
                    .get_small(&format!("{url}.sha256"), &format!("{what}.sha256"))
                    .await?;
                if status != 200 {
                    return Err(self.rejected(
                        what,
                        format!(
                            "its checksum ({what}.sha256) is not available (HTTP {status}); factory.parentVerify: sha256 needs it"
                        ),
                    ));
                }
                let claimed = body.split_whitespace().next().unwrap_or_default();
                if !claimed.eq_ignore_ascii_case(sha256) {
                    return Err(self.rejected(
                        what,
                        format!(
                            "SHA-256 {sha256} does not match the parent's checksum {:?}",
                            claimed.chars().take(80).collect::<String>()
                        ),
                    ));
                }
                Ok(())
            }
            Verify::Signature(key) => {
                let (status, body) = self
                    .get_small(&format!("{url}.sig"), &format!("{what}.sig"))
                    .await?;
                if status != 200 {
                    return Err(self.rejected(
                        what,
                        format!("its signature ({what}.sig) is not available (HTTP {status})"),
                    ));
                }
                let der = base64::engine::general_purpose::STANDARD
                    .decode(body.trim())
                    .map_err(|e| {
                        self.rejected(what, format!("the signature is not base64: {e}"))
                    })?;
                let signature = Signature::from_der(&der).map_err(|e| {
                    self.rejected(what, format!("the signature is not ECDSA DER: {e}"))
                })?;
                let message =
                    asset_signature_message(&req.schematic, &req.version, &req.path, sha256);
                key.verify(&message, &signature).map_err(|_| {
                    self.rejected(
                        what,
                        format!(
                            "the signature does not verify with factory.parentPublicKeyFile for SHA-256 {sha256}"
                        ),
                    )
                })
            }
        }
    }
}

/// Reads at most [`MAX_SMALL_BYTES`] of a response as text (the rest is dropped).
async fn read_small(mut resp: reqwest::Response) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = MAX_SMALL_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_SMALL_BYTES {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}
