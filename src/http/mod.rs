//! The HTTP side: axum routers only. Handlers are thin — they parse the request, call the
//! module that owns the logic (schematics, store, …), and shape the response.

mod admin;
mod builds;
mod doctor;
pub mod error;
mod factory;
pub mod listener;
mod machines;
mod schematics;
mod store_api;
pub mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::errors::LoggedCause;
use crate::factory::service::Factory;
use crate::metrics::Metrics;
use crate::registry::RegistryState;
use crate::schematic::{MAX_SCHEMATIC_BYTES, SchematicStore};
use crate::upstream::Mirror;

pub use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The effective configuration.
    pub config: Arc<Config>,
    /// Schematics kept in the store.
    pub schematics: SchematicStore,
    /// The registry mirror (store + upstreams).
    pub mirror: Arc<Mirror>,
    /// The image factory.
    pub factory: Arc<Factory>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    pub assignments: crate::assign::Assignments,
    pub admin_token: Arc<str>,
    /// Store GC with retention (`/api/v1/store/*`, the periodic GC).
    pub retention: Arc<crate::retention::Retention>,
    /// The web UI: its site and admin sessions.
    pub ui: Arc<crate::ui::Ui>,
    /// The full DHCP server's leases (`pxe.dhcpMode: full`); `None` in proxy mode.
    pub leases: Option<Arc<crate::dhcp::Leases>>,
}

/// The admin API and the admin pages are only for HTTPS from other hosts once TLS is on
/// (unless `http.tls.adminOverPlain`): the 403 for a plain-HTTP request from another host,
/// `None` when the request may go on.
pub(crate) fn admin_over_plain_refused(
    state: &AppState,
    conn: Option<&listener::ConnInfo>,
) -> Option<ApiError> {
    let tls = &state.config.http.tls;
    let conn = conn?;
    (tls.enabled()
        && !tls.admin_over_plain
        && !conn.tls
        && !conn.peer.ip().to_canonical().is_loopback())
    .then(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the admin API is only available over HTTPS from other hosts: use {} (http.tls.adminOverPlain: true allows plain HTTP)",
                state.config.external_url()
            ),
        )
    })
}

/// The `Server` header value.
pub fn server_header() -> String {
    format!("bootfactory/{}", env!("CARGO_PKG_VERSION"))
}

/// Builds the whole application router.
///
/// With a sub-path `http.externalURL` (`https://h/factory/`), requests are answered both with
/// the prefix (a reverse proxy that forwards `/factory/…` as it is) and without it (one that
/// strips it): [`strip_site_prefix`] removes it before routing.
pub fn router(state: AppState) -> Router {
    let base: Arc<str> = state.ui.site.base.as_str().into();
    let app = routes(state);
    if base.is_empty() {
        return app;
    }
    Router::new()
        .fallback_service(app)
        .layer(middleware::from_fn_with_state(base, strip_site_prefix))
}

/// Removes the path prefix of a sub-path `http.externalURL` from the request's path
/// (`/factory/ui/login` → `/ui/login`, `/factory` → `/`); other paths pass as they are.
async fn strip_site_prefix(
    axum::extract::State(base): axum::extract::State<Arc<str>>,
    mut request: Request,
    next: Next,
) -> Response {
    let uri = request.uri();
    if let Some(rest) = uri.path().strip_prefix(&*base)
        && (rest.is_empty() || rest.starts_with('/'))
    {
        let path = if rest.is_empty() { "/" } else { rest };
        let rebuilt = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        if let Ok(p) = rebuilt.parse::<axum::http::uri::PathAndQuery>() {
            let mut parts = uri.clone().into_parts();
            parts.path_and_query = Some(p);
            if let Ok(new) = axum::http::Uri::from_parts(parts) {
                *request.uri_mut() = new;
            }
        }
    }
    next.run(request).await
}

/// Every route and the layers around them.
fn routes(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    let hsts = state.config.http.tls.enabled() && state.config.http.tls.hsts;
    let registry = crate::registry::router(RegistryState {
        mirror: state.mirror.clone(),
        factory: state.factory.clone(),
        default_registry: state.config.mirror.default_registry.clone(),
    });
    let admin = Router::new()
        .route("/api/v1/status", get(admin::status))
        .route("/api/v1/images", get(admin::images))
        .route(
            "/api/v1/images/import",
            post(admin::import).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/images/pull", post(admin::pull))
        .route("/api/v1/images/export", get(admin::export))
        .route("/api/v1/machines", get(machines::list))
        .route(
            "/api/v1/machines/{mac}",
            get(machines::get_machine)
                .put(machines::put_machine)
                .delete(machines::delete_machine),
        )
        .route("/api/v1/warm", post(machines::warm))
        .route("/api/v1/leases", get(machines::leases))
        .route(
            "/api/v1/default",
            get(machines::get_default)
                .put(machines::put_default)
                .delete(machines::delete_default),
        )
        .route("/api/v1/doctor", get(doctor::doctor))
        .route("/api/v1/builds", get(builds::list))
        .route("/api/v1/store/gc", post(store_api::gc))
        .route("/api/v1/store/verify", post(store_api::verify))
        .route("/api/v1/store/usage", get(store_api::usage))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            machines::require_admin,
        ));
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(health))
        .route("/schematics", post(schematics::create))
        .route("/schematics/{id}", get(schematics::get))
        .route("/versions", get(factory::versions))
        .route(
            "/version/{version}/extensions/official",
            get(factory::official_extensions),
        )
        .route(
            "/version/{version}/overlays/official",
            get(factory::official_overlays),
        )
        .route(
            "/image/{schematic}/{version}/{path}",
            get(factory::image).head(factory::image),
        )
        .route("/pxe/{schematic}/{version}/{path}", get(factory::pxe))
        .route("/talosctl/{version}", get(factory::talosctl_list))
        .route(
            "/talosctl/{version}/{path}",
            get(factory::talosctl_file).head(factory::talosctl_file),
        )
        .route("/oci/cosign/signing-key.pub", get(factory::signing_key))
        .route("/metrics", get(metrics_text))
        .route(crate::ipxe::script::BOOT_SCRIPT_ROUTE, get(machines::boot))
        .route(
            "/ipxe/{name}",
            get(machines::ipxe_binary).head(machines::ipxe_binary),
        )
        .merge(admin)
        .merge(ui::routes(state.clone()))
        .with_state(state)
        .merge(registry)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_SCHEMATIC_BYTES))
        .layer(middleware::from_fn_with_state(
            metrics,
            crate::metrics::track_http,
        ))
        .layer(middleware::from_fn(common_headers))
        .layer(middleware::from_fn_with_state(
            hsts,
            strict_transport_security,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                .on_request(())
                .on_response(log_response)
                .on_failure(log_body_failure),
        )
        .layer(middleware::from_fn(request_id))
}

async fn metrics_text(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    crate::metrics::handler(axum::extract::State(state.metrics.clone())).await
}

/// A router serving only `/metrics` (for `metrics.listen`).
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(crate::metrics::handler))
        .with_state(metrics)
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn not_found() -> Response {
    error::plain_text(StatusCode::NOT_FOUND, "404 page not found")
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives every request its `X-Request-ID` before anything logs it (this layer sits outside
/// the trace layer, so the request's span and every line logged in it carry the ID): the
/// client's own (up to 128 visible ASCII characters) or a fresh random one. Echoed on the
/// response.
async fn request_id(mut request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            let id = hex::encode(rand::random::<[u8; 16]>());
            HeaderValue::from_str(&id).expect("hex is a valid header value")
        });
    request
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), request_id.clone());
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), request_id);
    response
}

/// Adds `Server` to every response.
async fn common_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Ok(server) = HeaderValue::from_str(&server_header()) {
        response.headers_mut().insert(header::SERVER, server);
    }
    response
}

/// `Strict-Transport-Security` on HTTPS responses when `http.tls.hsts` is on.
async fn strict_transport_security(
    axum::extract::State(enabled): axum::extract::State<bool>,
    request: Request,
    next: Next,
) -> Response {
    let over_tls = enabled
        && request
            .extensions()
            .get::<listener::ConnInfo>()
            .is_some_and(|c| c.tls);
    let mut response = next.run(request).await;
    if over_tls {
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

fn make_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // At ERROR level, so the span (and its request ID) is there for the request's line
    // whatever `log.level` lets through.
    tracing::error_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
    )
}

/// One line per request, inside its span (so with its request ID): INFO, or for a 5xx ERROR
/// with the cause chain the error mapping left on the response ([`LoggedCause`]); a 4xx that
/// carries a cause (our own data at fault, [`ApiError::warn_with`]) is a WARN with it.
/// Handlers and error mappings do not log the failures they answer; this is the one place.
fn log_response<B>(response: &axum::http::Response<B>, latency: Duration, _span: &tracing::Span) {
    let status = response.status();
    let latency = format_args!("{} μs", latency.as_micros());
    if status.is_server_error() {
        let cause = response
            .extensions()
            .get::<LoggedCause>()
            .map_or("", |c| &c.0);
        tracing::error!(status = status.as_u16(), %latency, error = cause, "request failed");
    } else if let Some(cause) = response.extensions().get::<LoggedCause>() {
        let cause: &str = &cause.0;
        tracing::warn!(status = status.as_u16(), %latency, error = cause, "request refused");
    } else {
        tracing::info!(status = status.as_u16(), %latency, "finished processing request");
    }
}

/// A response body that failed while streaming (the status line was already logged by
/// [`log_response`]); a 5xx status is not logged again here.
fn log_body_failure(class: ServerErrorsFailureClass, latency: Duration, _span: &tracing::Span) {
    if let ServerErrorsFailureClass::Error(error) = class {
        let latency = format_args!("{} μs", latency.as_micros());
        tracing::error!(%latency, %error, "response body failed");
    }
}

/// A JSON response encoded like Go's `encoding/json` (which upstream uses; see
/// [`crate::gocompat::json::marshal`]).
pub fn go_json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match crate::gocompat::json::marshal(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}
