//! A small in-process upstream registry for failure-mode tests: it serves images built in the
//! test, counts requests, can corrupt a blob, stall, or require a bearer token — things a real
//! registry will not do on demand.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use sha2::{Digest as _, Sha256};

/// Behaviour switches and counters.
#[derive(Default)]
pub struct FakeState {
    /// manifests: "repo:tag" or "repo@digest" → (media type, bytes)
    pub manifests: Mutex<HashMap<String, (String, Vec<u8>)>>,
    /// blobs: digest → bytes
    pub blobs: Mutex<HashMap<String, Vec<u8>>>,
    /// Serve these blob digests with one byte flipped.
    pub corrupt: Mutex<Vec<String>>,
    /// Require `Authorization: Bearer good-token` (token from `/token`).
    pub require_token: AtomicBool,
    /// Delay each blob response by this many milliseconds.
    pub blob_delay_ms: AtomicUsize,
    /// Send blob bodies at about this many bytes per second (0: as fast as possible).
    pub blob_bytes_per_sec: AtomicUsize,
    /// Die mid-blob: after this many body bytes, abort the connection (the full
    /// `Content-Length` having been announced). 0: off.
    pub blob_cut_after: AtomicUsize,
    /// Send only this many bytes of a blob, as a chunked body (no `Content-Length`) that
    /// ends cleanly: a truncated blob. 0: off.
    pub blob_truncate_to: AtomicUsize,
    /// Answer blob GETs with a `307` to the storage listener (`/blob/<digest>` on another
    /// port, like a registry sending clients to object storage), which refuses requests that
    /// carry an `Authorization` header (as signed storage URLs do).
    pub redirect_blobs: AtomicBool,
    /// The storage listener's address (set at start).
    pub storage: Mutex<Option<SocketAddr>>,
    /// Requests per "METHOD path" (query dropped).
    pub hits: Mutex<HashMap<String, usize>>,
    /// Token requests received (with their query string).
    pub token_requests: Mutex<Vec<String>>,
}

/// A running fake registry.
pub struct FakeRegistry {
    /// `127.0.0.1:port`.
    pub addr: SocketAddr,
    /// Shared state.
    pub state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `sha256:<hex>` of bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl FakeRegistry {
    /// Starts on a random loopback port.
    pub async fn start() -> FakeRegistry {
        let state = Arc::new(FakeState::default());
        let app = Router::new()
            .route("/v2/", get(ping))
            .route("/token", get(token))
            .route("/v2/{*path}", any(v2))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let storage_app = Router::new()
            .route("/blob/{digest}", get(storage_blob))
            .with_state(state.clone());
        let storage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *state.storage.lock().unwrap() = Some(storage.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let storage = async { axum::serve(storage, storage_app).await.unwrap() };
            let registry = async { axum::serve(listener, app).await.unwrap() };
            tokio::join!(storage, registry);
        });
        FakeRegistry { addr, state, task }
    }

    /// Adds a blob; returns its digest.
    pub fn add_blob(&self, bytes: &[u8]) -> String {
        let d = digest_of(bytes);
        self.state
            .blobs
            .lock()
            .unwrap()
            .insert(d.clone(), bytes.to_vec());
        d
    }

    /// Adds a single-layer OCI image under `repo:tag`; returns (manifest digest, layer digest).
    pub fn add_image(&self, repo: &str, tag: &str, layer: &[u8]) -> (String, String) {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config_digest = self.add_blob(config);
        let layer_digest = self.add_blob(layer);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        let md = digest_of(manifest.as_bytes());
        let mut m = self.state.manifests.lock().unwrap();
        let entry = (
            "application/vnd.oci.image.manifest.v1+json".to_string(),
            manifest.into_bytes(),
        );
        m.insert(format!("{repo}:{tag}"), entry.clone());
        m.insert(format!("{repo}@{md}"), entry);
        (md, layer_digest)
    }

    /// How many times `METHOD path` was requested.
    pub fn hits(&self, method: &str, path: &str) -> usize {
        *self
            .state
            .hits
            .lock()
            .unwrap()
            .get(&format!("{method} {path}"))
            .unwrap_or(&0)
    }
}

async fn ping(State(s): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    if let Some(r) = check_auth(&s, &headers) {
        return r;
    }
    (StatusCode::OK, "{}").into_response()
}

async fn token(
    State(s): State<Arc<FakeState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut pairs: Vec<_> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    s.token_requests.lock().unwrap().push(pairs.join("&"));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"token":"good-token","expires_in":300}"#,
    )
        .into_response()
}

fn check_auth(s: &FakeState, headers: &HeaderMap) -> Option<Response> {
    if !s.require_token.load(Ordering::SeqCst) {
        return None;
    }
    let ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "Bearer good-token");
    if ok {
        return None;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [
                (
                    header::WWW_AUTHENTICATE,
                    format!(r#"Bearer realm="http://{host}/token",service="fake",scope="repository:x:pull""#),
                ),
                (header::CONTENT_TYPE, "application/json".to_string()),
            ],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        )
            .into_response(),
    )
}

fn not_found(code: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"errors":[{{"code":"{code}","message":"not here"}}]}}"#),
    )
        .into_response()
}

async fn v2(
    State(s): State<Arc<FakeState>>,
    Path(path): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    *s.hits
        .lock()
        .unwrap()
        .entry(format!("{method} /v2/{path}"))
        .or_default() += 1;
    if let Some(r) = check_auth(&s, &headers) {
        return r;
    }
    let (rest, reference) = path.rsplit_once('/').unwrap_or(("", ""));
    let (repo, resource) = rest.rsplit_once('/').unwrap_or(("", ""));
    match resource {
        "manifests" => {
            let key = if reference.starts_with("sha256:") {
                format!("{repo}@{reference}")
            } else {
                format!("{repo}:{reference}")
            };
            let Some((mt, bytes)) = s.manifests.lock().unwrap().get(&key).cloned() else {
                return not_found("MANIFEST_UNKNOWN");
            };
            let builder = Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, mt)
                .header(header::CONTENT_LENGTH, bytes.len())
                .header("docker-content-digest", digest_of(&bytes));
            if method == Method::HEAD {
                builder.body(Body::empty()).unwrap()
            } else {
                builder.body(Body::from(bytes)).unwrap()
            }
        }
        "blobs" => {
            let Some(mut bytes) = s.blobs.lock().unwrap().get(reference).cloned() else {
                return not_found("BLOB_UNKNOWN");
            };
            let delay = s.blob_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(delay as u64)).await;
            }
            if s.corrupt.lock().unwrap().iter().any(|d| d == reference)
                && let Some(b) = bytes.last_mut()
            {
                *b ^= 0xff;
            }
            if s.redirect_blobs.load(Ordering::SeqCst) && method == Method::GET {
                let storage = s.storage.lock().unwrap().expect("storage listener");
                return Response::builder()
                    .status(StatusCode::TEMPORARY_REDIRECT)
                    .header(
                        header::LOCATION,
                        format!("http://{storage}/blob/{reference}"),
                    )
                    .body(Body::empty())
                    .unwrap();
            }
            let truncate = s.blob_truncate_to.load(Ordering::SeqCst);
            if truncate > 0 && method == Method::GET {
                bytes.truncate(truncate);
                let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = bytes
                    .chunks(16 * 1024)
                    .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                    .collect();
                return Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(Body::from_stream(futures_util::stream::iter(chunks)))
                    .unwrap();
            }
            let builder = Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_LENGTH, bytes.len());
            let rate = s.blob_bytes_per_sec.load(Ordering::SeqCst);
            let cut = s.blob_cut_after.load(Ordering::SeqCst);
            if method == Method::HEAD {
                builder.body(Body::empty()).unwrap()
            } else if rate == 0 && cut == 0 {
                builder.body(Body::from(bytes)).unwrap()
            } else {
                builder.body(paced_body(bytes, rate, cut)).unwrap()
            }
        }
        "tags" => {
            let prefix = format!("{repo}:");
            let mut tags: Vec<String> = s
                .manifests
                .lock()
                .unwrap()
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
                .collect();
            tags.sort();
            if tags.is_empty() {
                return not_found("NAME_UNKNOWN");
            }
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({"name": repo, "tags": tags}).to_string(),
            )
                .into_response()
        }
        _ => not_found("NAME_UNKNOWN"),
    }
}

/// The storage listener: blobs by digest, no registry auth, and a `400` for a request that
/// still carries an `Authorization` header (the registry's credential must not follow).
async fn storage_blob(
    State(s): State<Arc<FakeState>>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Response {
    *s.hits
        .lock()
        .unwrap()
        .entry(format!("GET /storage/{digest}"))
        .or_default() += 1;
    if headers.contains_key(header::AUTHORIZATION) {
        return (StatusCode::BAD_REQUEST, "credentials sent to storage").into_response();
    }
    let Some(bytes) = s.blobs.lock().unwrap().get(&digest).cloned() else {
        return not_found("BLOB_UNKNOWN");
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, bytes.len())
        .body(Body::from(bytes))
        .unwrap()
}

/// A body sent in 64 KiB chunks, about `rate` bytes per second (0: unpaced), that fails (the
/// connection is aborted) after `cut` bytes (0: never).
fn paced_body(bytes: Vec<u8>, rate: usize, cut: usize) -> Body {
    const CHUNK: usize = 64 * 1024;
    let bytes = bytes::Bytes::from(bytes);
    let stream = futures_util::stream::unfold(0usize, move |pos| {
        let bytes = bytes.clone();
        async move {
            if pos >= bytes.len() {
                return None;
            }
            if cut > 0 && pos >= cut {
                let e = std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "fake upstream died",
                );
                return Some((Err(e), usize::MAX));
            }
            let mut end = (pos + CHUNK).min(bytes.len());
            if cut > 0 {
                end = end.min(cut);
            }
            if rate > 0 {
                let secs = (end - pos) as f64 / rate as f64;
                tokio::time::sleep(std::time::Duration::from_secs_f64(secs)).await;
            }
            Some((Ok::<_, std::io::Error>(bytes.slice(pos..end)), end))
        }
    });
    Body::from_stream(stream)
}
