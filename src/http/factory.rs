//! Image Factory routes: `/versions`, `/version/{v}/extensions/official`,
//! `/version/{v}/overlays/official`, `/image/{schematic}/{version}/{path}`,
//! `/pxe/{schematic}/{version}/{path}`, `/talosctl/{version}`, `/talosctl/{version}/{path}`,
//! `/oci/cosign/signing-key.pub`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::factory::delivery::Delivery;
use crate::factory::service::FactoryError;
use crate::file_response::file_response;
use crate::file_response::sendfile::Jobs;

impl From<FactoryError> for ApiError {
    fn from(e: FactoryError) -> Self {
        let status = match &e {
            FactoryError::SchematicNotFound(_)
            | FactoryError::VersionNotAvailable(_)
            | FactoryError::AssetSourceMissing(_)
            | FactoryError::FileNotFound(_)
            | FactoryError::ManifestUnknown(_)
            | FactoryError::BlobUnknown(_)
            | FactoryError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            FactoryError::BadVersion(_)
            | FactoryError::BadPath(_)
            | FactoryError::UnknownPlatform(_)
            | FactoryError::BadFileName(_)
            | FactoryError::InvalidImage(_)
            | FactoryError::Schematic(_) => StatusCode::BAD_REQUEST,
            FactoryError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            FactoryError::EnterpriseOnly(_) => StatusCode::PAYMENT_REQUIRED,
            FactoryError::TooManyBuilds(_) => StatusCode::TOO_MANY_REQUESTS,
            FactoryError::Unavailable(_) | FactoryError::MissingTools(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            FactoryError::ParentUnavailable(_) => StatusCode::BAD_GATEWAY,
            FactoryError::NoSpace(_) => {
                return ApiError::insufficient_storage(e.to_string()).caused_by(&e);
            }
            FactoryError::Internal(_) => return ApiError::internal(e),
        };
        ApiError::new(status, e.to_string()).caused_by(&e)
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

/// `GET /version/{version}/extensions/official`.
pub async fn official_extensions(
    State(state): State<AppState>,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    let version = state.factory.served_version(&version).await?;
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
    let version = state.factory.served_version(&version).await?;
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
    zero_copy: Option<axum::Extension<Jobs>>,
) -> Result<Response, ApiError> {
    let filename = query
        .get("filename")
        .filter(|f| !f.is_empty())
        .map(|f| crate::file_response::safe_filename(f));
    let chain = crate::factory::remote::Chain::parse(
        headers
            .get(crate::factory::remote::CHAIN_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    let delivery = crate::factory::remote::with_chain(
        chain,
        state
            .factory
            .deliver(&schematic, &version, &path, filename, peer_ip(peer)),
    )
    .await?;
    match delivery {
        Delivery::Checksum(line) | Delivery::Signature(line) => {
            Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], line).into_response())
        }
        Delivery::File {
            blob,
            content_type,
            filename,
            etag,
        } => {
            let mut extra = HeaderMap::new();
            extra.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            extra.insert(
                header::CONTENT_DISPOSITION,
                crate::file_response::content_disposition(&filename),
            );
            file_response(
                &method,
                &headers,
                zero_copy.as_ref().map(|e| &e.0),
                blob.file,
                blob.size,
                Some(&etag),
                extra,
            )
            .await
            .map_err(ApiError::internal)
        }
    }
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
            peer_ip(peer),
        )
        .await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        script,
    )
        .into_response())
}

/// `GET /talosctl/{version}`: the download URLs, as JSON (`application/json`, as upstream
/// sets it).
pub async fn talosctl_list(
    State(state): State<AppState>,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    let urls = state
        .factory
        .talosctl_downloads(&version, &state.config.external_url())
        .await?;
    Ok(super::go_json(StatusCode::OK, &urls))
}

/// `GET|HEAD /talosctl/{version}/{path}`: one file of the `talosctl-all` image.
pub async fn talosctl_file(
    State(state): State<AppState>,
    Path((version, path)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    zero_copy: Option<axum::Extension<Jobs>>,
) -> Result<Response, ApiError> {
    let file = state.factory.talosctl_file(&version, &path).await?;
    let mut extra = HeaderMap::new();
    extra.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(file.content_type),
    );
    extra.insert(
        header::CONTENT_DISPOSITION,
        crate::file_response::content_disposition(&file.name),
    );
    file_response(
        &method,
        &headers,
        zero_copy.as_ref().map(|e| &e.0),
        file.file,
        file.size,
        Some(&file.etag),
        extra,
    )
    .await
    .map_err(ApiError::internal)
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

/// The client's address, for per-client limits (absent when the router runs without a
/// listener, as in unit tests).
fn peer_ip(peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>) -> Option<IpAddr> {
    peer.map(|axum::Extension(ConnectInfo(a))| a.ip())
}
