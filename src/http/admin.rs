//! The admin API's service routes: `GET /api/v1/status` (what a command needs to know it
//! talks to the service that owns a data directory) and the image operations
//! `/api/v1/images…` (`mirror list|import|pull|export` while serving; the work is
//! [`crate::upstream::images`]'s). Behind [`super::machines::require_admin`] like the rest of
//! `/api/v1`: the bearer token over TCP, the peer's uid on the admin socket.
//!
//! The import route has no body limit of its own here (the global `DefaultBodyLimit` is for
//! schematics): the upload is bounded by [`crate::oci::bundle::MAX_UPLOAD_BYTES`], the store's
//! quota and the body-read deadline (`http.bodyReadTimeoutSeconds`, at least 6 h on the admin
//! socket).

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedReceiver;

use super::AppState;
use super::error::ApiError;
use crate::oci::ImageRef;
use crate::oci::bundle::Event;
use crate::upstream::images;
use crate::upstream::mirror::MirrorError;

/// `GET /api/v1/status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The server's version (`CARGO_PKG_VERSION`).
    pub version: &'static str,
    /// The data directory it serves.
    pub data_dir: String,
    /// Its process ID.
    pub pid: i32,
}

/// `GET /api/v1/status`: version, data directory and process ID of the running server.
pub async fn status(State(state): State<AppState>) -> Response {
    Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        data_dir: state.config.data_dir.display().to_string(),
        pid: nix::unistd::getpid().as_raw(),
    })
    .into_response()
}

/// `GET /api/v1/images`: every stored image (as `mirror list --json`) and the store's total.
pub async fn images(State(state): State<AppState>) -> Result<Response, ApiError> {
    let list = images::list(&state.mirror).map_err(ApiError::internal)?;
    Ok(Json(list).into_response())
}

/// `?name=` of an import.
#[derive(Debug, Deserialize)]
pub struct ImportQuery {
    /// Repository for `index.json` entries that name only a tag.
    name: Option<String>,
}

/// The bundle's size, when the client says it (progress totals).
static BUNDLE_SIZE: HeaderName = HeaderName::from_static("x-bundle-size");

/// `POST /api/v1/images/import[?name=REPO]`: the request body is the bundle (tar, tar.gz or
/// tar.zst of an OCI layout); the answer is NDJSON progress ending in `done` or `error`.
pub async fn import(
    State(state): State<AppState>,
    Query(query): Query<ImportQuery>,
    headers: HeaderMap,
    body_time: Option<axum::Extension<super::listener::BodyTime>>,
    body: Body,
) -> Result<Response, ApiError> {
    // The admin token was checked: a bundle may take as long as on the admin socket.
    if let Some(axum::Extension(t)) = body_time {
        t.allow(super::listener::ADMIN_UPLOAD_TIME);
    }
    let name = match query.name.as_deref() {
        Some(text) => Some(images::parse_repository(text).map_err(ApiError::bad_request)?),
        None => None,
    };
    let size = [&BUNDLE_SIZE, &header::CONTENT_LENGTH]
        .into_iter()
        .find_map(|h| headers.get(h)?.to_str().ok()?.parse::<u64>().ok());
    let events = images::import(&state.mirror, body.into_data_stream(), size, name)
        .await
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(ndjson(events))
}

/// `POST /api/v1/images/pull` `{"images": [...]}`: NDJSON progress ending in `done` or
/// `error`.
pub async fn pull(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PullBody {
        images: Vec<String>,
    }
    let request: PullBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid pull request: {e}")))?;
    if request.images.is_empty() || request.images.len() > MAX_IMAGES {
        return Err(ApiError::bad_request(format!(
            "name between 1 and {MAX_IMAGES} images"
        )));
    }
    let refs = parse_images(request.images.iter().map(String::as_str))?;
    Ok(ndjson(images::pull(state.mirror.clone(), refs)))
}

/// Most images one pull or export names.
const MAX_IMAGES: usize = 256;

/// `GET /api/v1/images/export?image=…&image=…`: the bundle tar, streamed.
pub async fn export(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = query.unwrap_or_default();
    let names: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "image")
        .map(|(_, v)| v.into_owned())
        .take(MAX_IMAGES + 1)
        .collect();
    if names.is_empty() || names.len() > MAX_IMAGES {
        return Err(ApiError::bad_request(format!(
            "name between 1 and {MAX_IMAGES} images (?image=REF&image=REF)"
        )));
    }
    let refs = parse_images(names.iter().map(String::as_str))?;
    let stream = images::export(&state.mirror, &refs).await.map_err(|e| {
        let status = match &e {
            images::ExportError::Image { source, .. } => match source {
                MirrorError::NotFound(_) | MirrorError::Offline(_) => StatusCode::NOT_FOUND,
                MirrorError::NotAllowed(_) => StatusCode::FORBIDDEN,
                MirrorError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
                MirrorError::Upstream(_) => StatusCode::BAD_GATEWAY,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        };
        if status.is_server_error() {
            ApiError::internal(e)
        } else {
            ApiError::new(status, crate::errors::chain(&e))
        }
    })?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn parse_images<'a>(texts: impl Iterator<Item = &'a str>) -> Result<Vec<ImageRef>, ApiError> {
    texts
        .map(|t| {
            t.parse::<ImageRef>()
                .map_err(|e| ApiError::bad_request(format!("invalid image {t:?}: {e}")))
        })
        .collect()
}

/// A stream of events as `application/x-ndjson`, one JSON object a line.
pub(crate) fn ndjson(mut events: UnboundedReceiver<Event>) -> Response {
    let lines = futures_util::stream::poll_fn(move |cx| {
        events.poll_recv(cx).map(|e| {
            e.map(|event| {
                let mut line = serde_json::to_vec(&event).unwrap_or_default();
                line.push(b'\n');
                Ok::<_, std::convert::Infallible>(Bytes::from(line))
            })
        })
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}
