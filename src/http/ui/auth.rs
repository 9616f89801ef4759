//! Logging in and out of the admin pages: `GET|POST /ui/login`, `POST /ui/logout`.
//!
//! The login form is itself protected against cross-site posting (login CSRF): `GET` sets a
//! short-lived `bootfactory_login` cookie whose value the form carries back as `csrf`; a
//! `POST` without the pair is refused. A correct admin token sets the session cookie and
//! redirects to the page that asked for the login (`next`, only ever a path of this site).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::{Chrome, render_with, see_other, session_of};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::listener::ConnInfo;
use crate::ui::session::{LoginError, Session, constant_time_eq, random_token};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "bootfactory_session";
/// The login form's anti-CSRF cookie.
const LOGIN_COOKIE: &str = "bootfactory_login";
/// How long a login form stays usable, in seconds.
const LOGIN_FORM_SECONDS: u64 = 3600;

/// The public login routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/ui/login", get(login_form).post(login))
}

/// Routes that need a session (wrapped by `require_session`).
pub fn session_routes() -> Router<AppState> {
    Router::new().route("/ui/logout", post(logout))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    next: String,
    form_csrf: String,
    error: Option<String>,
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// `GET /ui/login[?next=/ui/machines]`.
async fn login_form(
    State(state): State<AppState>,
    Query(q): Query<NextQuery>,
    headers: HeaderMap,
    conn: Option<Extension<ConnInfo>>,
) -> Response {
    if let Some(refused) = crate::http::admin_over_plain_refused(&state, conn.as_deref()) {
        return refused.into_response();
    }
    let next = safe_next(q.next.as_deref());
    if session_of(&state, &headers).is_some() {
        return see_other(&format!("{}{next}", state.ui.site.base));
    }
    login_page(&state, conn, next, None, StatusCode::OK)
}

fn login_page(
    state: &AppState,
    conn: Option<Extension<ConnInfo>>,
    next: String,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let nonce = random_token();
    let page = LoginPage {
        chrome: Chrome::new(state, None, "login"),
        next,
        form_csrf: nonce.clone(),
        error,
    };
    let mut r = render_with(status, &page);
    let cookie = set_cookie(
        state,
        conn.as_deref(),
        LOGIN_COOKIE,
        &nonce,
        LOGIN_FORM_SECONDS,
    );
    r.headers_mut().append(header::SET_COOKIE, cookie);
    r
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/login`: the admin token in, a session cookie out.
async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    conn: Option<Extension<ConnInfo>>,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Some(refused) = crate::http::admin_over_plain_refused(&state, conn.as_deref()) {
        return refused.into_response();
    }
    let next = safe_next(Some(&form.next));
    // Any of the login cookies (a planted one must not shadow the form's own).
    let paired = cookies(&headers, LOGIN_COOKIE)
        .any(|c| !c.is_empty() && constant_time_eq(c.as_bytes(), form.csrf.as_bytes()));
    if !paired {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "the login form's CSRF token is missing or wrong: reload the login page and try again",
        )
        .into_response();
    }
    let client = conn
        .as_deref()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |c| c.peer.ip());
    match state.ui.sessions.login(&form.token, client, Instant::now()) {
        Ok(session) => {
            tracing::info!(%client, "web UI login");
            let mut r = see_other(&format!("{}{next}", state.ui.site.base));
            let secs = session.expires_in.as_secs();
            r.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(&state, conn.as_deref(), SESSION_COOKIE, &session.id, secs),
            );
            r.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(&state, conn.as_deref(), LOGIN_COOKIE, "", 0),
            );
            r
        }
        Err(e) => {
            tracing::warn!(%client, reason = %e, "web UI login refused");
            let status = match e {
                LoginError::WrongToken => StatusCode::UNAUTHORIZED,
                LoginError::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            };
            login_page(&state, conn, next, Some(e.to_string()), status)
        }
    }
}

/// `POST /ui/logout`.
async fn logout(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    conn: Option<Extension<ConnInfo>>,
) -> Response {
    state.ui.sessions.logout(&session.id);
    let mut r = see_other(&format!("{}/", state.ui.site.base));
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, conn.as_deref(), SESSION_COOKIE, "", 0),
    );
    r
}

/// Where to go after logging in: a path of this site's UI (`/…`, never `//host` or a URL
/// with a scheme), else the machines page.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.len() <= 2048
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_string()
        }
        _ => "/ui/machines".to_string(),
    }
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, scoped to the site's path, `Secure`
/// when the request came over TLS; `max_age == 0` deletes the cookie.
fn set_cookie(
    state: &AppState,
    conn: Option<&ConnInfo>,
    name: &str,
    value: &str,
    max_age: u64,
) -> HeaderValue {
    let path = if state.ui.site.base.is_empty() {
        "/".to_string()
    } else {
        format!("{}/", state.ui.site.base)
    };
    let secure = if conn.is_some_and(|c| c.tls) {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Every value of the cookie `name`, in the order the browser sent them. There may be several:
/// cookies ignore ports, and a sibling host may set one for the parent domain, so another page
/// of the same site can plant one with a longer path, which the browser sends first.
pub fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/ui/store?x=1")), "/ui/store?x=1");
        for hostile in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
            "ui/store",
            "/a b",
            "",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/ui/machines", "{hostile}");
        }
        assert_eq!(safe_next(None), "/ui/machines");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; bootfactory_session=abc; b=2"),
        );
        assert_eq!(cookies(&h, SESSION_COOKIE).collect::<Vec<_>>(), ["abc"]);
        assert_eq!(cookies(&h, "c").next(), None);
        h.append(
            header::COOKIE,
            HeaderValue::from_static("bootfactory_session=second"),
        );
        assert_eq!(
            cookies(&h, SESSION_COOKIE).collect::<Vec<_>>(),
            ["abc", "second"]
        );
    }
}
