//! Image Factory routes: `/versions`, `/version/{v}/extensions/official`,
//! `/version/{v}/overlays/official`, `/image/{schematic}/{version}/{path}`,
//! `/pxe/{schematic}/{version}/{path}`, `/oci/cosign/signing-key.pub`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::factory::profile::content_type;
use crate::factory::service::{FactoryError, parse_version};
use crate::file_response::file_response;

impl From<FactoryError> for ApiError {
    fn from(e: FactoryError) -> Self {
        let status = match &e {
            FactoryError::SchematicNotFound(_)
            | FactoryError::VersionNotAvailable(_)
            | FactoryError::AssetSourceMissing(_) => StatusCode::NOT_FOUND,
            FactoryError::BadVersion(_)
            | FactoryError::BadPath(_)
            | FactoryError::UnknownPlatform(_)
            | FactoryError::Schematic(_) => StatusCode::BAD_REQUEST,
            FactoryError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            FactoryError::TooManyBuilds(_) => StatusCode::TOO_MANY_REQUESTS,
            FactoryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            FactoryError::NoSpace(_) => return ApiError::insufficient_storage(e.to_string()),
            FactoryError::Internal(_) => return ApiError::internal(e),
        };
        ApiError::new(status, e.to_string())
    }
}

/// Upstream serves these JSON bodies without a content type, so Go sniffs `text/plain`.
fn sniffed_json<T: serde::Serialize>(value: &T) -> Response {
    let mut r = super::go_json(StatusCode::OK, value);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `GET /versions[?broken=true]`.
pub async fn versions(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let artifacts = state.factory.artifacts();
    let list: Vec<String> = if query.get("broken").map(String::as_str) == Some("true") {
        artifacts
            .broken_versions()
            .iter()
            .map(|v| v.to_string())
            .collect()
    } else {
        artifacts
            .versions()
            .await
            .map_err(FactoryError::from)?
            .iter()
            .map(|v| v.to_string())
            .collect()
    };
    Ok(sniffed_json(&list))
}

/// Parses `{version}` and checks the factory serves it.
async fn served_version(
    state: &AppState,
    version: &str,
) -> Result<crate::version::TalosVersion, ApiError> {
    let version = parse_version(version)?;
    state
        .factory
        .artifacts()
        .check_version(&version)
        .await
        .map_err(FactoryError::from)?;
    Ok(version)
}

/// `GET /version/{version}/extensions/official`.
pub async fn official_extensions(
    State(state): State<AppState>,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    let version = served_version(&state, &version).await?;
    let catalog = state
        .factory
        .artifacts()
        .extensions(&version)
        .await
        .map_err(FactoryError::from)?;
    Ok(sniffed_json(&catalog.entries))
}

/// `GET /version/{version}/overlays/official`.
pub async fn official_overlays(
    State(state): State<AppState>,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    let version = served_version(&state, &version).await?;
    let overlays = state
        .factory
        .artifacts()
        .overlays(&version)
        .await
        .map_err(FactoryError::from)?;
    Ok(sniffed_json(overlays.as_ref()))
}

/// `GET|HEAD /image/{schematic}/{version}/{path}`.
pub async fn image(
    State(state): State<AppState>,
    Path((schematic, version, path)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Response, ApiError> {
    let (path, checksum) = match path.rsplit_once('.') {
        Some((base, "sha256")) => (base.to_string(), Some(Checksum::Sha256)),
        Some((base, "sha512")) => (base.to_string(), Some(Checksum::Sha512)),
        _ => (path, None),
    };
    if path.ends_with(".sigstore.json") {
        return Err(ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "enterprise signing is not enabled: signature endpoint is not available",
        ));
    }
    let factory = &state.factory;
    let resolved = factory.resolve(&schematic, &version, &path).await?;
    let asset = factory.asset(&resolved, peer_ip(peer)).await?;
    let labels = [
        resolved.version.to_string(),
        format!("{:?}", resolved.profile.kind).to_lowercase(),
        resolved.profile.arch.as_str().to_string(),
    ];
    let labels = [labels[0].as_str(), labels[1].as_str(), labels[2].as_str()];
    let m = &state.metrics;
    if asset.cached {
        m.assets_delivered_cached.with_label_values(&labels).inc();
        m.assets_cached_bytes
            .with_label_values(&labels)
            .inc_by(asset.size);
    } else if !asset.shared {
        m.assets_cached_errors.with_label_values(&labels).inc();
        m.assets_built.with_label_values(&labels).inc();
        m.assets_built_bytes
            .with_label_values(&labels)
            .inc_by(asset.size);
        for ext in &resolved
            .schematic
            .schematic
            .customization
            .system_extensions
            .official_extensions
        {
            m.extension_hits.with_label_values(&[ext.as_str()]).inc();
        }
    }
    let store = factory.store();
    let blob = store
        .open_blob(&asset.digest)
        .await
        .map_err(ApiError::internal)?;
    let filename = query
        .get("filename")
        .filter(|f| !f.is_empty())
        .map(|f| crate::file_response::safe_filename(f))
        .unwrap_or_else(|| path.clone());
    if let Some(kind) = checksum {
        let bytes_path = blob.path.clone();
        let hex = tokio::task::spawn_blocking(move || kind.of_file(&bytes_path))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{hex}  {filename}\n"),
        )
            .into_response());
    }
    let mut extra = HeaderMap::new();
    extra.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    extra.insert(
        header::CONTENT_DISPOSITION,
        crate::file_response::content_disposition(&filename),
    );
    let etag = asset.digest.hex();
    file_response(&method, &headers, blob.file, blob.size, Some(&etag), extra)
        .await
        .map_err(ApiError::internal)
}

/// `GET /pxe/{schematic}/{version}/{platform}-{arch}[-secureboot]`: the iPXE script.
pub async fn pxe(
    State(state): State<AppState>,
    Path((schematic, version, path)): Path<(String, String, String)>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Response, ApiError> {
    let script = state
        .factory
        .pxe_script(
            &schematic,
            &version,
            &path,
            &state.config.external_pxe_url(),
            &[],
            peer_ip(peer),
        )
        .await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        script,
    )
        .into_response())
}

/// `GET /oci/cosign/signing-key.pub`: the cache signing public key.
pub async fn signing_key(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state
            .factory
            .builder()
            .signer()
            .public_key_pem()
            .to_string(),
    )
        .into_response()
}

#[derive(Clone, Copy)]
enum Checksum {
    Sha256,
    Sha512,
}

impl Checksum {
    fn of_file(self, path: &std::path::Path) -> std::io::Result<String> {
        use sha2::Digest as _;
        let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
        Ok(match self {
            Checksum::Sha256 => {
                let mut h = sha2::Sha256::new();
                std::io::copy(&mut file, &mut h)?;
                hex::encode(h.finalize())
            }
            Checksum::Sha512 => {
                let mut h = sha2::Sha512::new();
                std::io::copy(&mut file, &mut h)?;
                hex::encode(h.finalize())
            }
        })
    }
}

/// The client's address, for per-client limits (absent when the router runs without a
/// listener, as in unit tests).
fn peer_ip(peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>) -> Option<IpAddr> {
    peer.map(|axum::Extension(ConnectInfo(a))| a.ip())
}
