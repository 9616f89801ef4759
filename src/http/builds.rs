//! `GET /api/v1/builds` (admin): the asset builds waiting for a slot or building now, with
//! their phase, counters and bytes written, and the last finished builds with their
//! outcome ([`crate::factory::running`]).

use axum::Json;
use axum::extract::State;

use super::AppState;

/// `GET /api/v1/builds`: `{"builds":[{asset, kind, version, schematic, phase, done?, total?,
/// queuedAt, runningSeconds, bytesWritten}], "recent":[{asset, kind, version, platform, arch,
/// schematic, queuedAt, finishedAt, queuedSeconds, seconds, bytes, outcome, error?}]}`;
/// running builds oldest first, recent ones (the last 100 since the service started) newest
/// first.
pub(super) async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    let running = state.factory.builder().running();
    Json(serde_json::json!({
        "builds": running.snapshot(),
        "recent": running.recent(),
    }))
}
