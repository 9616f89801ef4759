//! `GET /api/v1/builds` (admin): the asset builds waiting for a slot or building now, with
//! their phase, counters and bytes written ([`crate::factory::running`]).

use axum::Json;
use axum::extract::State;

use super::AppState;

/// `GET /api/v1/builds`: `{"builds":[{asset, kind, version, schematic, phase, done?, total?,
/// queuedAt, runningSeconds, bytesWritten}]}`, oldest first.
pub(super) async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "builds": state.factory.builder().running().snapshot(),
    }))
}
