//! The web UI's routes: the public schematic wizard at `/`, and the admin pages under `/ui/`
//! (machines, store, builds) behind a login.
//!
//! Pages are server-rendered with askama templates from `web/templates/`; every page works
//! without JavaScript. The logic the pages show lives in the service modules (`ui`,
//! `factory`, `assign`, `retention`, …); handlers here only extract, call and render.
//!
//! Three layers wrap the admin pages ([`admin_routes`]):
//! - [`require_session`]: a page without a session cookie redirects to the login page; every
//!   state-changing request must carry the session's CSRF token (the `csrf` form field, the
//!   `X-CSRF-Token` header, or the `csrf` query parameter for uploads), else 403 — so no
//!   handler can forget it. The session reaches handlers as `Extension<Session>`.
//! - [`html_errors`] (on every UI route): an error answered as plain text by a handler
//!   (`ApiError`) becomes an HTML page with the same status and message.
//! - [`security_headers`]: CSP (no inline script or style, no framing), `nosniff`,
//!   `Referrer-Policy`.

mod auth;
mod builds;
mod machines;
mod store;
mod wizard;

use std::time::Instant;

use askama::Template;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::error::ApiError;
use crate::ui::assets;
use crate::ui::session::Session;

pub use auth::SESSION_COOKIE;

/// Every UI route (public and admin), for [`super::router`].
pub fn routes(state: AppState) -> Router<AppState> {
    let admin = admin_routes(state.clone());
    Router::new()
        .merge(wizard::routes())
        .merge(auth::routes())
        .merge(admin)
        .layer(middleware::from_fn_with_state(state, html_errors))
        .layer(middleware::from_fn(security_headers))
        .route("/ui/static/{name}", get(static_file))
}

/// The admin pages: a session is required, and a CSRF token on every non-GET request.
fn admin_routes(state: AppState) -> Router<AppState> {
    Router::new()
        .merge(machines::routes())
        .merge(store::routes())
        .merge(builds::routes())
        .merge(auth::session_routes())
        .route_layer(middleware::from_fn_with_state(state, require_session))
}

/// What the page frame (`web/templates/base.html`) needs: where the site lives, the static
/// files' hashed names, and the session, if any (for the navigation and the logout form).
pub struct Chrome {
    /// The site's path prefix (`/factory` or empty); see [`crate::ui::Site`].
    pub base: String,
    /// `/…/ui/static/app.<hash>.css`.
    pub css: String,
    /// `/…/ui/static/app.<hash>.js`.
    pub js: String,
    /// The logged-in session (admin pages, or a public page seen by an admin).
    pub session: Option<Session>,
    /// Which navigation entry is the current page (`wizard`, `machines`, `store`, `builds`,
    /// `login`).
    pub active: &'static str,
    /// bootfactory's version, for the footer.
    pub version: &'static str,
}

impl Chrome {
    /// The frame for a page of `state`'s site.
    pub fn new(state: &AppState, session: Option<Session>, active: &'static str) -> Chrome {
        let base = state.ui.site.base.clone();
        Chrome {
            css: format!("{base}/ui/static/{}", assets::hashed("app.css")),
            js: format!("{base}/ui/static/{}", assets::hashed("app.js")),
            base,
            session,
            active,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// The URL of another file of `web/static/` (a page's own script: `{% block head %}` in
    /// the template, `<script defer src="{{ chrome.asset("wizard.js") }}">`).
    pub fn asset(&self, name: &str) -> String {
        format!("{}/ui/static/{}", self.base, assets::hashed(name))
    }

    /// The session's CSRF token (empty on public pages; forms of admin pages always have one).
    pub fn csrf(&self) -> &str {
        self.session.as_ref().map_or("", |s| s.csrf.as_str())
    }
}

/// Renders a page: `200 text/html`.
pub fn render<T: Template>(page: &T) -> Response {
    render_with(StatusCode::OK, page)
}

/// Renders a page with `status`.
pub fn render_with<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(body) => {
            let mut r = (status, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// A `303 See Other` to `location` (a page path under the site, already prefixed).
pub fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The session named by the request's cookie, if it is open (the first open one when the
/// browser sends several: a planted cookie does not shadow the real session).
pub fn session_of(state: &AppState, headers: &HeaderMap) -> Option<Session> {
    let now = Instant::now();
    auth::cookies(headers, SESSION_COOKIE).find_map(|id| state.ui.sessions.get(&id, now))
}

/// `GET /ui/static/{name}`: an embedded file by its hashed name, cacheable forever.
async fn static_file(Path(name): Path<String>) -> Response {
    let Some(asset) = assets::by_hashed_name(&name) else {
        return super::error::plain_text(StatusCode::NOT_FOUND, "404 page not found");
    };
    let mut r = Body::from(asset.data).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The longest request body [`require_session`] reads to find a form's `csrf` field.
const MAX_FORM_BYTES: usize = 1 << 20;

/// Admin pages: needs an open session (else a redirect to the login page for a page, 403
/// for anything else) and, on every request that is not GET or HEAD, the session's CSRF
/// token.
async fn require_session(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(refused) = super::admin_over_plain_refused(&state, request.extensions().get()) {
        return refused.into_response();
    }
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    let Some(session) = session_of(&state, request.headers()) else {
        if safe {
            let wanted = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            let login = format!(
                "{}/ui/login?next={}",
                state.ui.site.base,
                url::form_urlencoded::byte_serialize(wanted.as_bytes()).collect::<String>()
            );
            return see_other(&login);
        }
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "your session has ended (logged out, expired, or the service restarted): log in again",
        )
        .into_response();
    };
    let mut request = request;
    if !safe {
        let (parts, body) = request.into_parts();
        let from_header = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let from_query = parts
            .uri
            .query()
            .and_then(|q| form_field(q.as_bytes(), "csrf"));
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        let (presented, body) = match (from_header.or(from_query), is_form) {
            (Some(token), _) => (Some(token), body),
            (None, true) => {
                let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
                    Ok(b) => b,
                    Err(_) => {
                        return ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "the form is larger than 1 MiB",
                        )
                        .into_response();
                    }
                };
                (form_field(&bytes, "csrf"), Body::from(bytes))
            }
            (None, false) => (None, body),
        };
        if !presented.is_some_and(|t| session.csrf_matches(&t)) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or wrong: reload the page and try again",
            )
            .into_response();
        }
        request = Request::from_parts(parts, body);
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// The value of `name` in an `application/x-www-form-urlencoded` body or query.
fn form_field(data: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(data)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    status: u16,
    reason: &'static str,
    message: String,
}

/// The longest error text [`html_errors`] puts on a page.
const MAX_ERROR_TEXT: usize = 64 * 1024;

/// Turns a handler's plain-text error (an [`ApiError`]) into an HTML page with the same
/// status, message and logged cause.
async fn html_errors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let session = session_of(&state, request.headers());
    let response = next.run(request).await;
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    let message = match axum::body::to_bytes(body, MAX_ERROR_TEXT).await {
        Ok(b) => String::from_utf8_lossy(&b).trim_end().to_string(),
        Err(_) => String::new(),
    };
    let page = ErrorPage {
        chrome: Chrome::new(&state, session, ""),
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or(""),
        message,
    };
    let mut rendered = render_with(status, &page);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rendered.headers_mut().insert(name.clone(), value.clone());
        }
    }
    *rendered.extensions_mut() = parts.extensions;
    rendered
}

/// Headers every UI page carries: scripts and styles only from our own static files, no
/// framing, no MIME sniffing, no full URLs in `Referer` to other sites.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
             object-src 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}
