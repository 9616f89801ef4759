//! The OCI distribution API, pull side, under `/v2/` on the HTTP port: bootfactory as a
//! registry and pull-through mirror.
//!
//! Paths are parsed from the right (`<name>/manifests/<ref>`, `<name>/blobs/<digest>`,
//! `<name>/tags/list`). Which upstream a name belongs to comes from, in order: containerd's
//! `?ns=<host>` query, a leading host component (`/v2/ghcr.io/siderolabs/imager/…`, for Talos
//! `overridePath: true` endpoints), or `mirror.defaultRegistry`. Every answer carries
//! `Docker-Distribution-API-Version: registry/2.0`; errors are OCI JSON documents.

mod errors;
mod installer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

pub use errors::RegistryError;

use crate::factory::service::Factory;
use crate::file_response::file_response;
use crate::file_response::sendfile::Jobs;
use crate::oci::{ImageName, Manifest, ManifestKind, TagOrDigest, media, parse_manifest};
use crate::store::Digest;
use crate::upstream::mirror::Requester;
use crate::upstream::{BlobHit, ManifestHit, Mirror, MirrorError};

/// What the registry handlers need.
#[derive(Clone)]
pub struct RegistryState {
    /// The mirror (store + upstreams).
    pub mirror: Arc<Mirror>,
    /// The factory: installer images (`<image>/<schematic>` repositories).
    pub factory: Arc<Factory>,
    /// Registry meant when a request names none.
    pub default_registry: String,
}

/// The `/v2` router.
pub fn router(state: RegistryState) -> Router {
    Router::new()
        .route("/v2", any(ping))
        .route("/v2/", any(ping))
        .route("/v2/{*path}", any(dispatch))
        .layer(middleware::from_fn(api_version_header))
        .with_state(state)
}

async fn api_version_header(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

async fn ping(method: Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return RegistryError::unsupported().into_response();
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        "{}",
    )
        .into_response()
}

/// A parsed `/v2/<name>/<resource>/<reference>` path.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Manifest { repo: &'a str, reference: &'a str },
    Blob { repo: &'a str, digest: &'a str },
    Tags { repo: &'a str },
    Referrers { repo: &'a str, digest: &'a str },
    Upload,
}

/// An installer frontend repository: exactly `<image>/<schematic ID>` (64 lowercase hex
/// digits), as the Image Factory names installer images — also behind a registry host
/// prefix (`factory.talos.dev/metal-installer/<id>`, what Talos sends to a mirror with
/// `overridePath: true`; containerd's `?ns=` form needs nothing). Every other name keeps the
/// mirror's routing, so the two coexist.
fn installer_repo(repo: &str) -> Option<(&str, &str)> {
    let repo = match repo.split_once('/') {
        Some((first, rest))
            if (first.contains('.') || first.contains(':') || first == "localhost")
                && rest.matches('/').count() == 1 =>
        {
            rest
        }
        _ => repo,
    };
    let (image, schematic) = repo.split_once('/')?;
    let is_id = schematic.len() == 64
        && schematic
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (is_id && !image.is_empty()).then_some((image, schematic))
}

fn parse_route(path: &str) -> Option<Route<'_>> {
    let path = path.trim_end_matches('/');
    if path.contains("/blobs/uploads") || path.ends_with("/blobs/uploads") {
        return Some(Route::Upload);
    }
    let (rest, reference) = path.rsplit_once('/')?;
    let (repo, resource) = rest.rsplit_once('/')?;
    if repo.is_empty() {
        return None;
    }
    match resource {
        "manifests" => Some(Route::Manifest { repo, reference }),
        "blobs" => Some(Route::Blob {
            repo,
            digest: reference,
        }),
        "tags" if reference == "list" => Some(Route::Tags { repo }),
        "referrers" => Some(Route::Referrers {
            repo,
            digest: reference,
        }),
        _ => None,
    }
}

/// Resolves the upstream registry and repository a request means.
fn image_name(
    repo: &str,
    ns: Option<&str>,
    default_registry: &str,
) -> Result<ImageName, RegistryError> {
    let (registry, repository) = match ns {
        Some(ns) => (
            ns.to_string(),
            repo.strip_prefix(&format!("{ns}/"))
                .unwrap_or(repo)
                .to_string(),
        ),
        None => match repo.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (default_registry.to_string(), repo.to_string()),
        },
    };
    let repository = if registry == crate::oci::reference::DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    ImageName::new(&registry, &repository).map_err(|e| RegistryError::name_invalid(&e.to_string()))
}

// Each argument is an axum extractor of the one request.
#[allow(clippy::too_many_arguments)]
async fn dispatch(
    State(state): State<RegistryState>,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    version: axum::http::Version,
    headers: HeaderMap,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    zero_copy: Option<axum::Extension<Jobs>>,
) -> Response {
    let zero_copy = zero_copy.as_ref().map(|e| &e.0);
    let ns = query
        .get("ns")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let client = peer.map(|axum::Extension(ConnectInfo(a))| a.ip());
    let result = match parse_route(&path) {
        None => Err(RegistryError::not_found_route(&path)),
        Some(Route::Upload) => Err(RegistryError::unsupported()),
        Some(_) if method != Method::GET && method != Method::HEAD => {
            Err(RegistryError::unsupported())
        }
        Some(route) if route_installer(&route).is_some() => {
            installer::dispatch(&state, route, &method, &headers, zero_copy, &query, client).await
        }
        // Referrers are served for installer images only (upstream's rule).
        Some(Route::Referrers { .. }) => Err(RegistryError::not_found_route(&path)),
        Some(route) => {
            let repo = match &route {
                Route::Manifest { repo, .. } | Route::Blob { repo, .. } | Route::Tags { repo } => {
                    *repo
                }
                Route::Upload | Route::Referrers { .. } => unreachable!(),
            };
            match image_name(repo, ns, &state.default_registry) {
                Err(e) => Err(e),
                Ok(name) => match route {
                    Route::Manifest { reference, .. } => {
                        manifest(&state, &name, reference, &method, &headers).await
                    }
                    Route::Blob { digest, .. } => {
                        blob(&state, &name, digest, &method, version, &headers, zero_copy).await
                    }
                    Route::Tags { .. } => tags(&state, &name, repo, &query).await,
                    Route::Upload | Route::Referrers { .. } => unreachable!(),
                },
            }
        }
    };
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Some(ns) = ns.and_then(|n| HeaderValue::from_str(n).ok()) {
        response.headers_mut().insert("oci-namespace", ns);
    }
    response
}

/// The installer repository a route names, if it is one (`tags/list` is not an installer
/// route: upstream answers 404 for it, and so does the mirror for an unknown repository).
fn route_installer<'a>(route: &Route<'a>) -> Option<(&'a str, &'a str)> {
    match route {
        Route::Manifest { repo, .. } | Route::Blob { repo, .. } | Route::Referrers { repo, .. } => {
            installer_repo(repo)
        }
        Route::Tags { .. } | Route::Upload => None,
    }
}

/// All media types the client accepts, merged across `Accept` lines, parameters dropped.
fn accepted_types(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or_default().trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn accepts(accepted: &[String], media_type: &str) -> bool {
    accepted.is_empty()
        || accepted
            .iter()
            .any(|a| a == media_type || a == "*/*" || a == "application/*")
}

async fn manifest(
    state: &RegistryState,
    name: &ImageName,
    reference: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    let target = TagOrDigest::parse(reference).map_err(|e| match e {
        crate::oci::RefError::Digest(_) => RegistryError::digest_invalid(reference),
        _ => RegistryError::manifest_unknown(&format!("invalid tag {reference:?}")),
    })?;
    let mirror = &state.mirror;
    let mut hit = mirror
        .manifest(name, &target, Requester::Client)
        .await
        .map_err(|e| RegistryError::from_mirror(e, "MANIFEST_UNKNOWN"))?;
    let accepted = accepted_types(headers);
    if !accepts(&accepted, &hit.media_type) {
        hit = negotiate(mirror, name, &target, hit, &accepted).await?;
    }
    let bytes = mirror
        .manifest_bytes(&hit)
        .await
        .map_err(|e| RegistryError::from_mirror(e, "MANIFEST_UNKNOWN"))?;
    let digest = hit.digest.to_string();
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_matches('"') == digest)
    {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, &hit.media_type)
        .header(header::CONTENT_LENGTH, bytes.len())
        .header("docker-content-digest", &digest)
        .header(header::ETAG, format!("\"{digest}\""));
    if method == Method::HEAD {
        return Ok(response.body(Body::empty()).expect("valid response"));
    }
    Ok(response.body(Body::from(bytes)).expect("valid response"))
}

/// The client does not accept the stored type. Like distribution: a manifest list requested
/// by tag from a client that only takes image manifests gets the `linux/amd64` image; anything
/// else is "manifest unknown" (the stored bytes are never converted).
async fn negotiate(
    mirror: &Mirror,
    name: &ImageName,
    target: &TagOrDigest,
    hit: ManifestHit,
    accepted: &[String],
) -> Result<ManifestHit, RegistryError> {
    if media::is_index(&hit.media_type) && matches!(target, TagOrDigest::Tag(_)) {
        let bytes = mirror
            .manifest_bytes(&hit)
            .await
            .map_err(|e| RegistryError::from_mirror(e, "MANIFEST_UNKNOWN"))?;
        let index: Option<Manifest> = parse_manifest(&bytes, Some(&hit.media_type)).ok();
        if let Some(child) = index
            .as_ref()
            .filter(|m| m.kind == ManifestKind::Index)
            .and_then(|m| m.platform_child("linux", "amd64"))
            .filter(|c| accepts(accepted, &c.media_type))
        {
            return mirror
                .manifest(name, &TagOrDigest::Digest(child.digest), Requester::Client)
                .await
                .map_err(|e| RegistryError::from_mirror(e, "MANIFEST_UNKNOWN"));
        }
    }
    Err(RegistryError::manifest_unknown(&format!(
        "{} found, but the Accept header does not allow it (accepts: {})",
        hit.media_type,
        accepted.join(", ")
    )))
}

async fn blob(
    state: &RegistryState,
    name: &ImageName,
    digest: &str,
    method: &Method,
    version: axum::http::Version,
    headers: &HeaderMap,
    zero_copy: Option<&Jobs>,
) -> Result<Response, RegistryError> {
    let digest: Digest = digest
        .parse()
        .map_err(|_| RegistryError::digest_invalid(digest))?;
    let mut hit = state
        .mirror
        .blob(name, &digest, Requester::Client)
        .await
        .map_err(|e| RegistryError::from_mirror(e, "BLOB_UNKNOWN"))?;
    if let BlobHit::Remote { fetch, size: None } = &hit
        && version == axum::http::Version::HTTP_10
    {
        // No length from the upstream and an HTTP/1.0 client: without chunked encoding the
        // body would end with the connection, which such a client cannot tell from a complete
        // body — a blob that failed its digest check would look whole. Wait for the check and
        // serve the stored blob instead.
        fetch
            .wait_verified()
            .await
            .map_err(|e| RegistryError::from_mirror(e.into(), "BLOB_UNKNOWN"))?;
        hit = state
            .mirror
            .blob(name, &digest, Requester::Client)
            .await
            .map_err(|e| RegistryError::from_mirror(e, "BLOB_UNKNOWN"))?;
        if matches!(hit, BlobHit::Remote { .. }) {
            // Verified, yet not in the store: its commit failed (logged by the fetch).
            return Err(RegistryError {
                retry_after: Some(2),
                ..RegistryError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    format!("blob {name}@{digest} could not be stored; retry"),
                )
            });
        }
    }
    let digest_text = digest.to_string();
    let extra = blob_headers(&digest_text);
    match hit {
        BlobHit::Local(blob) => file_response(
            method,
            headers,
            zero_copy,
            blob.file,
            blob.size,
            Some(&digest_text),
            extra,
        )
        .await
        .map_err(|e| RegistryError::internal(&e)),
        BlobHit::Remote { fetch, size } => {
            // A cache miss: the full blob as it arrives (Range is ignored, which RFC 9110
            // allows); the next request is served from the store with ranges. The stream ends
            // with an error, so the connection is aborted before the body is complete, unless
            // the blob matched its digest (`upstream::fetch`, "what a client sees"). An empty
            // body would be complete before any check: wait for the check first.
            if size == Some(0) {
                fetch
                    .wait_verified()
                    .await
                    .map_err(|e| RegistryError::from_mirror(e.into(), "BLOB_UNKNOWN"))?;
            }
            let mut builder = Response::builder().status(StatusCode::OK);
            builder.headers_mut().expect("fresh builder").extend(extra);
            if let Some(size) = size {
                builder = builder.header(header::CONTENT_LENGTH, size);
            }
            if method == Method::HEAD {
                return Ok(builder.body(Body::empty()).expect("valid response"));
            }
            let stream = fetch.reader();
            Ok(builder
                .body(Body::from_stream(stream))
                .expect("valid response"))
        }
    }
}

/// The headers of a blob answer: an opaque type, its digest, cacheable for a year (a blob
/// never changes under its digest).
fn blob_headers(digest: &str) -> HeaderMap {
    let mut extra = HeaderMap::new();
    extra.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    extra.insert(
        "docker-content-digest",
        HeaderValue::from_str(digest).expect("ascii digest"),
    );
    extra.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=31536000"),
    );
    extra
}

async fn tags(
    state: &RegistryState,
    name: &ImageName,
    requested_repo: &str,
    query: &HashMap<String, String>,
) -> Result<Response, RegistryError> {
    let mut tags = state
        .mirror
        .tags(name, Requester::Client)
        .await
        .map_err(|e| RegistryError::from_mirror(e, "NAME_UNKNOWN"))?;
    if let Some(last) = query.get("last") {
        tags.retain(|t| t.as_str() > last.as_str());
    }
    let mut link = None;
    if let Some(n) = query.get("n") {
        let n: usize = n.parse().map_err(|_| {
            RegistryError::bad_request("PAGINATION_NUMBER_INVALID", "n must be a number")
        })?;
        if tags.len() > n {
            tags.truncate(n);
            if let Some(last) = tags.last() {
                link = Some(format!(
                    "</v2/{requested_repo}/tags/list?n={n}&last={last}>; rel=\"next\""
                ));
            }
        }
    }
    let body = serde_json::json!({ "name": requested_repo, "tags": tags });
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if let Some(link) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

impl From<MirrorError> for RegistryError {
    fn from(e: MirrorError) -> Self {
        RegistryError::from_mirror(e, "MANIFEST_UNKNOWN")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_from_the_right() {
        assert_eq!(
            parse_route("siderolabs/imager/manifests/v1.11.6"),
            Some(Route::Manifest {
                repo: "siderolabs/imager",
                reference: "v1.11.6"
            })
        );
        assert_eq!(
            parse_route("a/b/c/blobs/sha256:00"),
            Some(Route::Blob {
                repo: "a/b/c",
                digest: "sha256:00"
            })
        );
        assert_eq!(parse_route("x/tags/list"), Some(Route::Tags { repo: "x" }));
        assert_eq!(parse_route("x/blobs/uploads/"), Some(Route::Upload));
        assert_eq!(parse_route("x/tags/v1"), None);
        assert_eq!(parse_route("manifests/v1"), None);
        assert_eq!(parse_route("foo"), None);
    }

    #[test]
    fn installer_repositories_coexist_with_the_mirror() {
        let id = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
        let r = |s: String| installer_repo(&s).map(|(a, b)| (a.to_string(), b.to_string()));
        let want = Some(("metal-installer".to_string(), id.to_string()));
        assert_eq!(r(format!("metal-installer/{id}")), want);
        assert_eq!(r(format!("factory.talos.dev/metal-installer/{id}")), want);
        assert_eq!(r(format!("10.0.0.5:8080/metal-installer/{id}")), want);
        assert_eq!(r(format!("siderolabs/metal-installer/{id}")), None);
        assert_eq!(r(format!("metal-installer/{}", id.to_uppercase())), None);
        assert_eq!(r(format!("metal-installer/{}", &id[1..])), None);
        assert_eq!(r("siderolabs/imager".into()), None);
        assert_eq!(r(format!("/{id}")), None);
    }

    #[test]
    fn names_from_ns_prefix_or_default() {
        let n = image_name("siderolabs/imager", Some("ghcr.io"), "docker.io").unwrap();
        assert_eq!(n.to_string(), "ghcr.io/siderolabs/imager");
        let n = image_name("ghcr.io/siderolabs/imager", Some("ghcr.io"), "docker.io").unwrap();
        assert_eq!(n.to_string(), "ghcr.io/siderolabs/imager");
        let n = image_name("registry.k8s.io/pause", None, "ghcr.io").unwrap();
        assert_eq!(n.to_string(), "registry.k8s.io/pause");
        let n = image_name("siderolabs/imager", None, "ghcr.io").unwrap();
        assert_eq!(n.to_string(), "ghcr.io/siderolabs/imager");
        let n = image_name("nginx", Some("docker.io"), "ghcr.io").unwrap();
        assert_eq!(n.to_string(), "docker.io/library/nginx");
        assert!(image_name("Bad_Name", None, "ghcr.io").is_err());
        assert!(image_name("a/../b", None, "ghcr.io").is_err());
        assert!(image_name("x", Some("evil/host"), "ghcr.io").is_err());
    }

    #[test]
    fn accept_lines_are_merged() {
        let mut h = HeaderMap::new();
        h.append(
            header::ACCEPT,
            HeaderValue::from_static(media::OCI_MANIFEST),
        );
        h.append(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.oci.image.index.v1+json; q=0.5, */*"),
        );
        let a = accepted_types(&h);
        assert_eq!(a.len(), 3);
        assert!(accepts(&a, media::OCI_INDEX));
        assert!(accepts(&[], media::OCI_INDEX));
        assert!(!accepts(
            &[media::DOCKER_MANIFEST.to_string()],
            media::OCI_INDEX
        ));
    }
}
