//! `POST /schematics` and `GET /schematics/{id}` — upstream Image Factory's schematic API.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::schematic::storage::SchematicStoreError;
use crate::schematic::{self, MAX_SCHEMATIC_BYTES, SchematicId};

/// Refused input is the client's error (400); a stored schematic that an older version could
/// not read back is reported as such (422), never as an internal error.
fn store_error(e: SchematicStoreError) -> ApiError {
    match e {
        SchematicStoreError::Invalid(e) => ApiError::bad_request(e.to_string()),
        e @ SchematicStoreError::Unreadable { .. } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).warn_with(&e)
        }
        // A full disk or store quota is 507; anything else is ours (500).
        SchematicStoreError::Store(e) => ApiError::from(e),
    }
}

#[derive(Serialize)]
struct Created {
    id: String,
    schematic: String,
}

/// Validates and stores a schematic (YAML or JSON body); answers 201 with its ID.
pub async fn create(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("schematic body is larger than the {MAX_SCHEMATIC_BYTES}-byte limit"),
            )
        } else {
            ApiError::bad_request(format!("cannot read request body: {rejection}"))
        }
    })?;
    let parsed = schematic::parse(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (id, created) = state.schematics.put(&parsed).await.map_err(store_error)?;
    if created {
        tracing::info!(schematic = %id, "schematic created");
        state.metrics.schematic_create.inc();
        state.metrics.schematic_cache_size.inc();
    } else {
        state.metrics.schematic_duplicate_create.inc();
    }
    let body = Created {
        id: id.to_string(),
        schematic: parsed.canonical_yaml(),
    };
    Ok(super::go_json(StatusCode::CREATED, &body))
}

/// Returns the canonical YAML of a stored schematic.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.metrics.schematic_get.inc();
    let not_found = || ApiError::not_found("schematic not found");
    let id: SchematicId = id.parse().map_err(|_| not_found())?;
    // The stored bytes as they are: serving never depends on decoding them again.
    let canonical = state
        .schematics
        .get_canonical(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    Ok(([(header::CONTENT_TYPE, "application/yaml")], canonical).into_response())
}
