//! The admin API of the store (bearer token, like `/api/v1/machines`), so `bootfactory store
//! gc|verify|usage` work while the service holds the data directory:
//!
//! - `POST /api/v1/store/gc`: body `{"dryRun", "keepVersions", "keepReferenced", "maxBytes",
//!   "graceSeconds", "storeId"}`, every field optional: the policy defaults to `store.gc.*`,
//!   `dryRun` to `true` (deleting takes an explicit `false`); `keepVersions`/`maxBytes` 0 = no
//!   limit; `graceSeconds` (default 25200, 7 hours, at most 30 days) keeps blobs put that recently (a
//!   pull or build in progress).
//!   Answers the run's report (`crate::retention::GcRunReport`); 409 while another GC runs.
//! - `POST /api/v1/store/verify`: re-hashes every blob (corrupt ones are quarantined), answers
//!   the store's verify report.
//! - `GET /api/v1/store/usage`: disk usage per Talos version (`crate::retention::UsageReport`).
//!
//! `storeId` (also accepted as `?storeId=` on the other two) is the identity in
//! `<dataDir>/store-id`: a command pointed at one data directory never acts on a server that
//! serves another (409). Every answer carries the server's `storeId`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use crate::retention::{GcPolicy, Referenced, RetentionError, SERVICE_GRACE};

impl From<RetentionError> for ApiError {
    fn from(e: RetentionError) -> Self {
        match e {
            RetentionError::Busy => ApiError::new(
                StatusCode::CONFLICT,
                "a store GC is already running; try again when it has finished",
            ),
            RetentionError::Store(s) => s.into(),
            e => ApiError::internal(e),
        }
    }
}

/// The body of `POST /api/v1/store/gc`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GcRequest {
    dry_run: Option<bool>,
    keep_versions: Option<usize>,
    keep_referenced: Option<bool>,
    max_bytes: Option<u64>,
    grace_seconds: Option<u64>,
    store_id: Option<String>,
}

/// The longest grace period a request may ask for.
const MAX_GRACE_SECONDS: u64 = 30 * 86_400;

/// `?storeId=` of the other routes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoreQuery {
    store_id: Option<String>,
}

/// A report with the identity of the store it is about.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WithStore<T: Serialize> {
    store_id: Option<String>,
    #[serde(flatten)]
    report: T,
}

/// 409 unless `wanted` (when given) is this server's store.
fn check_store(state: &AppState, wanted: Option<&str>) -> Result<Option<String>, ApiError> {
    let ours = state.retention.store_identity();
    if let Some(w) = wanted
        && ours.as_deref() != Some(w)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "this server serves another data directory (store {}, not {w})",
                ours.as_deref().unwrap_or("without an identity")
            ),
        ));
    }
    Ok(ours)
}

/// `POST /api/v1/store/gc`.
pub async fn gc(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: GcRequest = if body.iter().all(u8::is_ascii_whitespace) {
        GcRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid GC request: {e}")))?
    };
    let store_id = check_store(&state, req.store_id.as_deref())?;
    let configured = GcPolicy::from_config(&state.config.store.gc);
    let policy = GcPolicy {
        keep_versions: match req.keep_versions {
            Some(0) => None,
            Some(n) => Some(n),
            None => configured.keep_versions,
        },
        keep_referenced: req.keep_referenced.unwrap_or(configured.keep_referenced),
        max_bytes: match req.max_bytes {
            Some(0) => None,
            Some(n) => Some(n),
            None => configured.max_bytes,
        },
    };
    let dry_run = req.dry_run.unwrap_or(true);
    let grace = match req.grace_seconds {
        Some(s) if s > MAX_GRACE_SECONDS => {
            return Err(ApiError::bad_request(format!(
                "graceSeconds {s} is above the limit of {MAX_GRACE_SECONDS}"
            )));
        }
        Some(s) => std::time::Duration::from_secs(s),
        None => SERVICE_GRACE,
    };
    let referenced = Referenced::from_assignments(&state.assignments)?;
    let report = state
        .retention
        .try_run(policy, &referenced, dry_run, grace)
        .await?;
    Ok(Json(WithStore { store_id, report }).into_response())
}

/// `POST /api/v1/store/verify`.
pub async fn verify(
    State(state): State<AppState>,
    Query(q): Query<StoreQuery>,
) -> Result<Response, ApiError> {
    let store_id = check_store(&state, q.store_id.as_deref())?;
    let report = state.mirror.catalog().store().verify_all().await?;
    Ok(Json(WithStore { store_id, report }).into_response())
}

/// `GET /api/v1/store/usage`.
pub async fn usage(
    State(state): State<AppState>,
    Query(q): Query<StoreQuery>,
) -> Result<Response, ApiError> {
    let store_id = check_store(&state, q.store_id.as_deref())?;
    let report = state.retention.usage().await?;
    Ok(Json(WithStore { store_id, report }).into_response())
}
