//! One upstream registry, reached through `oci-client`: tag resolution (HEAD), manifests,
//! streamed blobs and tag lists, with the anonymous bearer-token flow (what ghcr.io needs) or
//! configured credentials, per-request timeouts, and retries with backoff for transient errors.
//!
//! Blobs are the exception to "through `oci-client`": its blob stream hashes every byte to
//! verify it, and the store hashes them again while writing. [`RegistryClient::open_blob`]
//! sends the blob GET itself, on a `reqwest` client configured like `oci-client`'s (timeouts,
//! user agent, TLS roots, redirects followed with credentials dropped on a cross-host hop, as
//! reqwest does: registries commonly redirect blobs to a storage URL), and the caller hashes the
//! body once (`store::Ingest`). Authentication is the registry's challenge: the request goes
//! out with the repository's remembered credential (none at first); on a `401` `oci-client`
//! performs the challenge (anonymous or with the configured credentials, `Client::auth`) and
//! the request is repeated once with the bearer token it got, or basic credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use super::UpstreamError;
use super::reason::Reason;
use crate::config::{Config, UpstreamRegistry};
use crate::errors::SourcesOf;
use crate::oci::{TagOrDigest, media};
use crate::store::Digest;

/// How a registry host is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The registry host as image names spell it (`ghcr.io`).
    pub registry: String,
    /// `host[:port]` actually contacted.
    pub authority: String,
    /// Plain HTTP instead of HTTPS.
    pub plain_http: bool,
}

impl Endpoint {
    /// Where `registry` is reached according to the configuration: an explicit
    /// `upstream.registries.<host>.endpoint`, else `https://<host>` (`registry-1.docker.io` for
    /// `docker.io`), over HTTP when marked insecure.
    pub fn resolve(config: &Config, registry: &str) -> Endpoint {
        let settings = config.upstream.registries.get(registry);
        let insecure = settings.is_some_and(|s| s.insecure)
            || (registry == config.artifacts.core.registry && config.artifacts.core.insecure);
        if let Some(endpoint) = settings.and_then(|s| s.endpoint.as_ref()) {
            return Endpoint {
                registry: registry.to_string(),
                authority: endpoint.authority(),
                plain_http: !endpoint.is_https(),
            };
        }
        let authority = if registry == crate::oci::reference::DOCKER_HUB {
            "registry-1.docker.io".to_string()
        } else {
            registry.to_string()
        };
        Endpoint {
            registry: registry.to_string(),
            authority,
            plain_http: insecure,
        }
    }

    /// `http(s)://authority` for messages.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.plain_http { "http" } else { "https" },
            self.authority
        )
    }
}

/// A streamed upstream blob.
pub struct BlobStream {
    /// `Content-Length`, when the upstream sent one.
    pub content_length: Option<u64>,
    /// The bytes (not verified here; the caller verifies while storing).
    pub stream: BoxStream<'static, std::io::Result<Bytes>>,
}

/// A client for one upstream registry.
pub struct RegistryClient {
    endpoint: Endpoint,
    auth: RegistryAuth,
    timeout: Duration,
    retries: u32,
    client: Mutex<Arc<Client>>,
    /// After repeated connection failures the registry is considered down until this instant,
    /// so requests that can fall back to the store do not each wait for timeouts.
    /// The last failure's reason in words is kept with it, so a quick refusal still says why.
    down_until: Mutex<Option<(Instant, String)>>,
    /// Blob downloads: a plain HTTP client configured like `oci-client`'s.
    http: reqwest::Client,
    /// The credential a blob GET was last accepted with, per repository.
    blob_credentials: Mutex<HashMap<String, Credential>>,
}

/// A credential for a blob GET, as the registry's challenge asked for it.
#[derive(Clone, PartialEq, Eq)]
enum Credential {
    Bearer(String),
    Basic(String, String),
}

/// Repositories whose blob credential is remembered (the map is cleared beyond).
const MAX_REMEMBERED_CREDENTIALS: usize = 256;
/// Most bytes of an error answer's body read for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// How long a registry stays marked unreachable after requests to it kept failing.
const DOWN_PERIOD: Duration = Duration::from_secs(30);

/// How hard a request tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempts {
    /// Retry transient errors with backoff (`upstream.retries`).
    Patient,
    /// One attempt, and none while the registry is marked down: for revalidations that can
    /// fall back to a stored copy.
    Quick,
}

impl RegistryClient {
    /// Builds a client for `registry` from the configuration.
    pub fn new(config: &Config, registry: &str) -> RegistryClient {
        crate::init_crypto();
        let endpoint = Endpoint::resolve(config, registry);
        let settings = config
            .upstream
            .registries
            .get(registry)
            .cloned()
            .unwrap_or_default();
        let timeout = Duration::from_secs(config.upstream.timeout_seconds.max(1));
        let client = Mutex::new(Arc::new(build_client(&endpoint, timeout)));
        RegistryClient {
            auth: auth_of(&settings),
            endpoint,
            timeout,
            retries: config.upstream.retries,
            client,
            down_until: Mutex::new(None),
            http: build_http(timeout),
            blob_credentials: Mutex::new(HashMap::new()),
        }
    }

    /// Where this client connects.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn reference(&self, repository: &str, target: &TagOrDigest) -> Reference {
        match target {
            TagOrDigest::Tag(t) => Reference::with_tag(
                self.endpoint.authority.clone(),
                repository.to_string(),
                t.clone(),
            ),
            TagOrDigest::Digest(d) => Reference::with_digest(
                self.endpoint.authority.clone(),
                repository.to_string(),
                d.to_string(),
            ),
        }
    }

    fn current(&self) -> Arc<Client> {
        self.client.lock().expect("client lock").clone()
    }

    /// Drops cached tokens (a fresh `oci-client` instance), after an upstream 401.
    fn reset(&self) {
        *self.client.lock().expect("client lock") =
            Arc::new(build_client(&self.endpoint, self.timeout));
        self.blob_credentials
            .lock()
            .expect("credentials lock")
            .clear();
    }

    /// Runs `op` with a timeout per attempt, retrying transient failures with exponential
    /// backoff and re-authenticating once after a 401.
    async fn call<T, F, Fut>(
        &self,
        what: &str,
        attempts: Attempts,
        op: F,
    ) -> Result<T, UpstreamError>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
    {
        if attempts == Attempts::Quick
            && let Some((until, last)) = self.down_until.lock().expect("down lock").clone()
            && Instant::now() < until
        {
            return Err(UpstreamError::Unavailable {
                registry: self.endpoint.registry.clone(),
                message: format!(
                    "{what}: {} failed recently ({last}); not retrying for {}s",
                    self.endpoint.url(),
                    until
                        .saturating_duration_since(Instant::now())
                        .as_secs()
                        .max(1)
                ),
                cause: None,
            });
        }
        let retries = if attempts == Attempts::Quick {
            0
        } else {
            self.retries
        };
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            let result = tokio::time::timeout(self.timeout, op(self.current())).await;
            let err = match result {
                Ok(Ok(v)) => {
                    *self.down_until.lock().expect("down lock") = None;
                    return Ok(v);
                }
                Ok(Err(e)) => classify(&self.endpoint, what, e),
                Err(_) => UpstreamError::Unavailable {
                    registry: self.endpoint.registry.clone(),
                    message: format!(
                        "{what}: no answer from {} within {:?} (timed out)",
                        self.endpoint.url(),
                        self.timeout
                    ),
                    cause: None,
                },
            };
            match &err {
                UpstreamError::Denied { .. } if !reauthenticated => {
                    reauthenticated = true;
                    self.reset();
                }
                UpstreamError::Unavailable { .. } if attempt < retries => {
                    let backoff = Duration::from_millis(250 * 4u64.pow(attempt.min(5)));
                    tracing::warn!(registry = %self.endpoint.registry, %what, error = %crate::errors::chain(&err), ?backoff, "upstream request failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(backoff).await;
                }
                UpstreamError::Unavailable { message, .. } => {
                    // Keep the words after `what`: the reason, for the next quick refusal.
                    let last = message
                        .strip_prefix(what)
                        .map(|m| m.trim_start_matches(": "))
                        .unwrap_or(message)
                        .to_string();
                    *self.down_until.lock().expect("down lock") =
                        Some((Instant::now() + DOWN_PERIOD, last));
                    return Err(err);
                }
                _ => {
                    *self.down_until.lock().expect("down lock") = None;
                    return Err(err);
                }
            }
        }
    }

    /// Resolves a tag to its manifest digest (HEAD, falling back to GET).
    pub async fn resolve_tag(
        &self,
        repository: &str,
        tag: &str,
        attempts: Attempts,
    ) -> Result<Digest, UpstreamError> {
        self.head_manifest(repository, &TagOrDigest::Tag(tag.to_string()), attempts)
            .await
    }

    /// The digest of the manifest `target` names (a HEAD, falling back to GET): whether it
    /// exists upstream, without downloading it.
    pub async fn head_manifest(
        &self,
        repository: &str,
        target: &TagOrDigest,
        attempts: Attempts,
    ) -> Result<Digest, UpstreamError> {
        let reference = self.reference(repository, target);
        let sep = match target {
            TagOrDigest::Tag(_) => ':',
            TagOrDigest::Digest(_) => '@',
        };
        let what = format!(
            "resolve {}/{repository}{sep}{target}",
            self.endpoint.registry
        );
        let digest = self
            .call(&what, attempts, |c| {
                let r = reference.clone();
                let auth = self.auth.clone();
                async move { c.fetch_manifest_digest(&r, &auth).await }
            })
            .await?;
        parse_digest(&self.endpoint, &digest)
    }

    /// Fetches manifest bytes (digest-verified by `oci-client` when asked by digest).
    pub async fn fetch_manifest(
        &self,
        repository: &str,
        target: &TagOrDigest,
    ) -> Result<(Bytes, Digest), UpstreamError> {
        let reference = self.reference(repository, target);
        let what = format!("manifest {}/{repository}:{target}", self.endpoint.registry);
        let (bytes, digest) = self
            .call(&what, Attempts::Patient, |c| {
                let r = reference.clone();
                let auth = self.auth.clone();
                async move { c.pull_manifest_raw(&r, &auth, &media::MANIFEST_TYPES).await }
            })
            .await?;
        let digest = parse_digest(&self.endpoint, &digest)?;
        if Digest::of_bytes(&bytes) != digest {
            return Err(UpstreamError::Corrupt {
                registry: self.endpoint.registry.clone(),
                message: format!("{what}: body does not hash to {digest}"),
                cause: None,
            });
        }
        Ok((bytes, digest))
    }

    /// Opens a blob as a stream of unverified bytes: the caller hashes them once and checks
    /// the digest (see the module docs). Only the request and the response headers are under
    /// the per-request timeout and retries; the body is the caller's to time.
    pub async fn open_blob(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<BlobStream, UpstreamError> {
        let reference = self.reference(repository, &TagOrDigest::Digest(*digest));
        let what = format!("blob {}/{repository}@{digest}", self.endpoint.registry);
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.endpoint.url());
        let response = self
            .call(&what, Attempts::Patient, |c| {
                let reference = reference.clone();
                let url = url.clone();
                async move { self.get_blob(&c, &reference, &url).await }
            })
            .await?;
        use futures_util::TryStreamExt as _;
        Ok(BlobStream {
            content_length: response.content_length(),
            stream: Box::pin(response.bytes_stream().map_err(std::io::Error::other)),
        })
    }

    /// One blob GET with the challenge flow (see the module docs); a non-2xx answer becomes
    /// the error `oci-client` would have returned, so it is classified the same way.
    async fn get_blob(
        &self,
        client: &Client,
        reference: &Reference,
        url: &str,
    ) -> Result<reqwest::Response, OciDistributionError> {
        let repository = reference.repository().to_string();
        let send = |credential: Option<Credential>| {
            let request = self.http.get(url);
            let request = match credential {
                Some(Credential::Bearer(token)) => request.bearer_auth(token),
                Some(Credential::Basic(user, password)) => request.basic_auth(user, Some(password)),
                None => request,
            };
            request.send()
        };
        let remembered = self
            .blob_credentials
            .lock()
            .expect("credentials lock")
            .get(&repository)
            .cloned();
        let mut response = send(remembered.clone()).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            let fresh = match client
                .auth(reference, &self.auth, RegistryOperation::Pull)
                .await?
            {
                Some(token) => Some(Credential::Bearer(token)),
                None => match &self.auth {
                    RegistryAuth::Basic(user, password) => {
                        Some(Credential::Basic(user.clone(), password.clone()))
                    }
                    _ => None,
                },
            };
            if let Some(credential) = fresh
                && Some(&credential) != remembered.as_ref()
            {
                response = send(Some(credential.clone())).await?;
                if response.status().is_success() {
                    let mut map = self.blob_credentials.lock().expect("credentials lock");
                    if map.len() >= MAX_REMEMBERED_CREDENTIALS {
                        map.clear();
                    }
                    map.insert(repository, credential);
                }
            }
        }
        let status = response.status();
        if status == reqwest::StatusCode::OK {
            return Ok(response);
        }
        // Without the query: after a redirect to blob storage it holds the URL's signature,
        // which must not reach error texts and logs.
        let mut shown = response.url().clone();
        shown.set_query(None);
        let url = shown.to_string();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(OciDistributionError::UnauthorizedError { url });
        }
        if status.is_success() {
            return Err(OciDistributionError::SpecViolationError(format!(
                "Expected HTTP Status 200 OK, got {status} instead"
            )));
        }
        let body = read_bounded(response, MAX_ERROR_BODY).await;
        if status.is_client_error()
            && let Ok(envelope) = serde_json::from_slice::<OciEnvelope>(&body)
        {
            return Err(OciDistributionError::RegistryError { envelope, url });
        }
        Err(OciDistributionError::ServerError {
            code: status.as_u16(),
            url,
            message: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Lists all tags of a repository (following pagination).
    pub async fn list_tags(&self, repository: &str) -> Result<Vec<String>, UpstreamError> {
        let reference = self.reference(repository, &TagOrDigest::Tag("latest".into()));
        let what = format!("tags of {}/{repository}", self.endpoint.registry);
        let mut tags: Vec<String> = Vec::new();
        loop {
            let last = tags.last().cloned();
            let page = self
                .call(&what, Attempts::Quick, |c| {
                    let r = reference.clone();
                    let auth = self.auth.clone();
                    let last = last.clone();
                    async move { c.list_tags(&r, &auth, Some(1000), last.as_deref()).await }
                })
                .await?;
            let n = page.tags.len();
            tags.extend(page.tags);
            if n < 1000 {
                break;
            }
        }
        tags.sort();
        tags.dedup();
        Ok(tags)
    }
}

pub(crate) fn build_client(endpoint: &Endpoint, timeout: Duration) -> Client {
    Client::new(ClientConfig {
        protocol: if endpoint.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(timeout.min(Duration::from_secs(10))),
        read_timeout: Some(timeout),
        user_agent: concat!("bootfactory/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    })
}

/// The blob client: what `build_client` gives `oci-client` (timeouts, user agent, TLS with the
/// default roots and reqwest's redirect policy), without its verifying blob stream.
fn build_http(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .read_timeout(timeout)
        .user_agent(concat!("bootfactory/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Up to `max` bytes of a (small, error) response body; what cannot be read is left out.
async fn read_bounded(mut response: reqwest::Response, max: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = max - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            _ => break,
        }
    }
    body
}

pub(crate) fn auth_of(settings: &UpstreamRegistry) -> RegistryAuth {
    if let Some(token) = &settings.token {
        RegistryAuth::Bearer(token.clone())
    } else if let Some(username) = &settings.username {
        RegistryAuth::Basic(
            username.clone(),
            settings.password.clone().unwrap_or_default(),
        )
    } else {
        RegistryAuth::Anonymous
    }
}

fn parse_digest(endpoint: &Endpoint, text: &str) -> Result<Digest, UpstreamError> {
    text.parse().map_err(|_| UpstreamError::Protocol {
        registry: endpoint.registry.clone(),
        message: format!("unsupported digest {text:?} (only sha256 is supported)"),
        cause: None,
    })
}

/// What the mirror must do with an upstream failure.
#[derive(Clone, Copy)]
enum Kind {
    NotFound,
    Denied,
    Unavailable,
    Corrupt,
    Protocol,
}

/// Maps `oci-client` errors onto what the mirror must do with them.
fn classify(endpoint: &Endpoint, what: &str, e: OciDistributionError) -> UpstreamError {
    let kind = match &e {
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|err| format!("{:?}", err.code).to_uppercase())
                .collect();
            let any = |f: &dyn Fn(&str) -> bool| codes.iter().any(|c| f(c));
            if any(&|c| c.contains("UNKNOWN") && !c.contains("UPLOAD")) {
                Kind::NotFound
            } else if any(&|c| c.contains("UNAUTHORIZED") || c.contains("DENIED")) {
                Kind::Denied
            } else if any(&|c| c.contains("TOOMANYREQUESTS")) {
                Kind::Unavailable
            } else {
                Kind::Protocol
            }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => Kind::NotFound,
        OciDistributionError::ServerError { code, .. } => match code {
            404 => Kind::NotFound,
            401 | 403 => Kind::Denied,
            408 | 429 | 500..=599 => Kind::Unavailable,
            _ => Kind::Protocol,
        },
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => Kind::Denied,
        OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => {
            Kind::Unavailable
        }
        OciDistributionError::DigestError(_) => Kind::Corrupt,
        _ => Kind::Protocol,
    };
    let registry = endpoint.registry.clone();
    // The cause in words (DNS, refused, TLS, 401 …): for a failure to connect it replaces the
    // client's "error sending request for url (…)", which hides it; for an answer of the
    // registry it comes first and the client's text (with the registry's own message) after.
    let reason = Reason::of(&e);
    let kind = match (&reason, kind) {
        (r, Kind::Protocol) if r.is_transport() => Kind::Unavailable,
        (_, k) => k,
    };
    let message = match reason.describe(endpoint) {
        Some(words) if reason.is_transport() => format!("{what}: {words}"),
        Some(words) if !matches!(kind, Kind::NotFound) => format!("{what}: {words}: {e}"),
        _ => format!("{what}: {e}"),
    };
    // The client's own text is in `message`; what lies below it (a refused connection, a
    // DNS failure) stays reachable as the source.
    let cause = SourcesOf::new(&message, Arc::new(e));
    match kind {
        Kind::NotFound => UpstreamError::NotFound {
            registry,
            message,
            cause,
        },
        Kind::Denied => UpstreamError::Denied {
            registry,
            message,
            cause,
        },
        Kind::Unavailable => UpstreamError::Unavailable {
            registry,
            message,
            cause,
        },
        Kind::Corrupt => UpstreamError::Corrupt {
            registry,
            message,
            cause,
        },
        Kind::Protocol => UpstreamError::Protocol {
            registry,
            message,
            cause,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_configuration() {
        let mut config = Config::default();
        assert_eq!(
            Endpoint::resolve(&config, "ghcr.io"),
            Endpoint {
                registry: "ghcr.io".into(),
                authority: "ghcr.io".into(),
                plain_http: false
            }
        );
        assert_eq!(
            Endpoint::resolve(&config, "docker.io").authority,
            "registry-1.docker.io"
        );
        config.upstream.registries.insert(
            "ghcr.io".into(),
            UpstreamRegistry {
                endpoint: Some("http://127.0.0.1:5000/".parse().unwrap()),
                ..Default::default()
            },
        );
        let e = Endpoint::resolve(&config, "ghcr.io");
        assert_eq!(e.authority, "127.0.0.1:5000");
        assert!(e.plain_http);
        assert_eq!(e.url(), "http://127.0.0.1:5000");
        config.artifacts.core.registry = "harbor.local".into();
        config.artifacts.core.insecure = true;
        assert!(Endpoint::resolve(&config, "harbor.local").plain_http);
    }
}
