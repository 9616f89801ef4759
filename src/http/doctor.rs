//! `GET /api/v1/doctor` (admin): the checks of `bootfactory doctor` only the running service
//! can answer — its own user and capabilities, the store's quick check and the versions in
//! the catalog (the store's index is this process's). Logic in [`crate::doctor`].

use axum::Json;
use axum::extract::State;

use super::AppState;
use crate::doctor::{Report, service_checks, service_identity};

/// `GET /api/v1/doctor`.
pub(super) async fn doctor(State(state): State<AppState>) -> Json<Report> {
    let mut checks = vec![service_identity()];
    checks.extend(service_checks(&state.config, state.factory.catalog()).await);
    Json(Report { checks })
}
