//! The admin API's service routes: `GET /api/v1/status` (what a command needs to know it
//! talks to the service that owns a data directory). Behind [`super::machines::require_admin`]
//! like the rest of `/api/v1`: the bearer token over TCP, the peer's uid on the admin socket.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;

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
