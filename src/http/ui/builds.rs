//! The builds page (admin): `GET /ui/builds` (running builds with progress, recent builds
//! with durations and errors, cached assets per schematic and version, a warm form),
//! `GET /ui/builds/live` (the running and recent builds alone, an HTML fragment that
//! `web/static/builds.js` polls while builds run; `?cached=1` adds the cached assets) and
//! `POST /ui/builds/warm` (warms the cache with the service behind `POST /api/v1/warm`).
//!
//! The content comes from [`crate::ui::builds`]; this module extracts, calls and renders.
//! A warm-up is waited for up to [`WARM_WAIT`] and its report shown; a failure is shown on
//! the page with the API's status (409 naming the missing piece of a broken boot chain);
//! a longer warm-up (or one started with "wait" unticked) goes on in the background and its
//! builds appear as running, then recent.

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::{Chrome, render, render_with, see_other};
use crate::factory::warm::{WarmReport, WarmRequest};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::ui::builds::{
    self, Cached, Live, WARM_WAIT, WarmChoices, WarmOutcome, human_bytes, human_seconds,
};
use crate::ui::session::Session;

/// The builds page's routes (behind the admin session).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/builds", get(page))
        .route("/ui/builds/live", get(live))
        .route("/ui/builds/warm", post(warm))
}

/// The longest value the warm form takes in a field (schematic IDs are 64 characters).
const MAX_FIELD: usize = 128;

/// The warm form (also the page's query, to preselect a schematic and version).
#[derive(Debug, Clone, Default, Deserialize)]
struct WarmForm {
    #[serde(default)]
    schematic: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    platform: String,
    #[serde(default)]
    arch: String,
    /// `pxe`, `iso` or `uki`.
    #[serde(default)]
    boot: String,
    /// The "wait for the report" checkbox (`on` when ticked).
    #[serde(default)]
    wait: Option<String>,
    /// `1` after a warm-up was started in the background.
    #[serde(default)]
    started: Option<String>,
}

impl WarmForm {
    /// The form as the page shows it again: defaults filled in, values cut to size.
    fn shown(mut self) -> WarmForm {
        for f in [
            &mut self.schematic,
            &mut self.version,
            &mut self.platform,
            &mut self.arch,
            &mut self.boot,
        ] {
            *f = f.trim().chars().take(MAX_FIELD).collect();
        }
        if self.platform.is_empty() {
            self.platform = "metal".into();
        }
        if self.arch.is_empty() {
            self.arch = "amd64".into();
        }
        if self.boot.is_empty() {
            self.boot = "pxe".into();
        }
        self
    }
}

/// A finished warm-up, for the page.
struct ReportView {
    schematic: String,
    version: String,
    assets: Vec<ReportRow>,
    seconds: String,
}

struct ReportRow {
    path: String,
    size: String,
    cached: bool,
    seconds: String,
}

impl From<WarmReport> for ReportView {
    fn from(r: WarmReport) -> ReportView {
        ReportView {
            assets: r
                .assets
                .into_iter()
                .map(|a| ReportRow {
                    path: a.path,
                    size: human_bytes(a.size),
                    cached: a.cached,
                    seconds: human_seconds(a.seconds),
                })
                .collect(),
            seconds: human_seconds(r.seconds),
            schematic: r.schematic,
            version: r.version,
        }
    }
}

/// What the page says about the warm-up it was asked for.
enum Notice {
    /// Its report.
    Report(ReportView),
    /// It goes on in the background (`true`: after waiting [`WARM_WAIT`] for it).
    Continuing(bool),
    /// Why it failed.
    Error(String),
}

#[derive(Template)]
#[template(path = "builds.html")]
struct BuildsPage {
    chrome: Chrome,
    live: Live,
    cached: Cached,
    cached_error: Option<String>,
    choices: WarmChoices,
    form: WarmForm,
    /// A finished warm-up's report.
    report: Option<ReportView>,
    /// A failed warm-up's message.
    error: Option<String>,
    /// A warm-up goes on in the background: `Some(true)` after waiting for it.
    continuing: Option<bool>,
    wait_seconds: u64,
}

#[derive(Template)]
#[template(path = "builds_fragment.html")]
struct LiveFragment {
    chrome: Chrome,
    live: Live,
    with_cached: bool,
    cached: Cached,
    cached_error: Option<String>,
}

/// The cached assets, or why they cannot be listed (the rest of the page still shows).
async fn cached(state: &AppState) -> (Cached, Option<String>) {
    match builds::cached(&state.factory).await {
        Ok(c) => (c, None),
        Err(e) => {
            tracing::warn!(error = %crate::errors::chain(&e), "cannot list built assets");
            (
                Cached::default(),
                Some(format!(
                    "the built assets could not be listed: {}",
                    crate::errors::chain(&e)
                )),
            )
        }
    }
}

async fn build_page(
    state: &AppState,
    session: Session,
    form: WarmForm,
    notice: Option<Notice>,
) -> BuildsPage {
    let (cached, cached_error) = cached(state).await;
    let schematics = match state.schematics.list() {
        Ok(ids) => ids.iter().map(|id| id.as_str().to_string()).collect(),
        Err(e) => {
            tracing::warn!(error = %crate::errors::chain(&e), "cannot list schematics");
            Vec::new()
        }
    };
    let mut page = BuildsPage {
        chrome: Chrome::new(state, Some(session), "builds"),
        live: builds::live(&state.factory),
        cached,
        cached_error,
        choices: builds::warm_choices(&state.factory, schematics).await,
        form: form.shown(),
        report: None,
        error: None,
        continuing: None,
        wait_seconds: WARM_WAIT.as_secs(),
    };
    match notice {
        Some(Notice::Report(r)) => page.report = Some(r),
        Some(Notice::Continuing(waited)) => page.continuing = Some(waited),
        Some(Notice::Error(e)) => page.error = Some(e),
        None => {}
    }
    page
}

/// `GET /ui/builds[?schematic=…&version=…&arch=…&platform=…]`.
async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(form): Query<WarmForm>,
) -> Response {
    let notice = form.started.is_some().then_some(Notice::Continuing(false));
    // Ticked unless the query says otherwise (a checkbox is absent when unticked, so only
    // a started background warm-up, whose form was unticked, shows it unticked).
    let mut form = form;
    if form.wait.is_none() && form.started.is_none() {
        form.wait = Some("on".into());
    }
    render(&build_page(&state, session, form, notice).await)
}

#[derive(Deserialize)]
struct LiveQuery {
    #[serde(default)]
    cached: Option<String>,
}

/// `GET /ui/builds/live[?cached=1]`: the page's live sections.
async fn live(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(q): Query<LiveQuery>,
) -> Response {
    let with_cached = q.cached.is_some();
    let (cached, cached_error) = if with_cached {
        cached(&state).await
    } else {
        (Cached::default(), None)
    };
    render(&LiveFragment {
        chrome: Chrome::new(&state, Some(session), "builds"),
        live: builds::live(&state.factory),
        with_cached,
        cached,
        cached_error,
    })
}

/// `POST /ui/builds/warm` (form: schematic, version, platform, arch, boot, wait).
async fn warm(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(form): Form<WarmForm>,
) -> Response {
    let form = form.shown();
    let request = WarmRequest {
        schematic: form.schematic.clone(),
        version: form.version.clone(),
        platform: form.platform.clone(),
        arch: form.arch.clone(),
        assets: vec![form.boot.clone()],
    };
    let missing = [("schematic", &form.schematic), ("version", &form.version)]
        .into_iter()
        .find(|(_, v)| v.is_empty());
    if let Some((name, _)) = missing {
        let notice = Notice::Error(format!("invalid warm-up: choose a {name}"));
        let page = build_page(&state, session, form, Some(notice)).await;
        return render_with(StatusCode::BAD_REQUEST, &page);
    }
    let wait = form.wait.is_some().then_some(WARM_WAIT);
    match builds::warm(state.factory.clone(), request, wait, "builds page").await {
        WarmOutcome::Done(report) => {
            let notice = Notice::Report(report.into());
            render(&build_page(&state, session, form, Some(notice)).await)
        }
        WarmOutcome::Failed(e) => {
            let error = super::super::machines::warm_error(e);
            let notice = Notice::Error(error.message.clone());
            let page = build_page(&state, session, form, Some(notice)).await;
            let mut response = render_with(error.status, &page);
            // The API error's log cause and Retry-After go with the page.
            let (parts, _) = error.into_response().into_parts();
            response.extensions_mut().extend(parts.extensions);
            if let Some(retry) = parts.headers.get(axum::http::header::RETRY_AFTER) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, retry.clone());
            }
            response
        }
        WarmOutcome::Continuing if wait.is_none() => {
            // Started in the background: back to the page (a reload does not warm again).
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("started", "1")
                .append_pair("schematic", &form.schematic)
                .append_pair("version", &form.version)
                .append_pair("platform", &form.platform)
                .append_pair("arch", &form.arch)
                .append_pair("boot", &form.boot)
                .finish();
            see_other(&state.ui.site.page(&format!("/ui/builds?{query}")))
        }
        WarmOutcome::Continuing => {
            let notice = Notice::Continuing(true);
            render_with(
                StatusCode::ACCEPTED,
                &build_page(&state, session, form, Some(notice)).await,
            )
        }
        WarmOutcome::Lost(e) => {
            let mut error = ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the warm-up ended without a result (see the log)",
            );
            error.cause = Some(e.into());
            error.into_response()
        }
    }
}
