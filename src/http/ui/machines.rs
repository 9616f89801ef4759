//! The machines page (`/ui/machines`, behind the login): the inventory with each machine's
//! assignment, the default assignment and the unassigned policy, and forms that assign,
//! change and unassign a MAC and set or clear the default.
//!
//! The forms store through the same service calls as the admin API
//! ([`crate::assign::check::assign_checked`], [`crate::assign::check::set_default_checked`],
//! [`crate::assign::Assignments::remove`]) and map refusals with the API's own mapping (400
//! for a malformed or refused assignment, 409 for a broken boot chain naming the missing
//! piece), so the page accepts exactly what the API accepts. A refusal re-renders the page
//! with the message next to the form and the input kept; success answers `303` back to the
//! page with a notice in the query (`?assigned=<mac>`).
//!
//! Live updates: `GET /ui/machines/events` is a Server-Sent Events stream that sends one
//! `change` event whenever [`crate::assign::Assignments::subscribe`] reports a change (a
//! machine seen, an assignment or the default changed); `web/static/machines.js` then fetches
//! `GET /ui/machines?fragment=table` and swaps the table. Streams are bounded: at most
//! [`MAX_STREAMS`] at once and [`MAX_STREAMS_PER_SESSION`] per session, keep-alive comments,
//! at most [`STREAM_LIFETIME`] each (the browser reconnects), and they end when the session
//! does (checked every 30 s) or the server shuts down. Without script the page is the same,
//! reloaded by hand.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::{Chrome, render, render_with, see_other};
use crate::assign::check::{assign_checked, set_default_checked};
use crate::assign::{Assignment, MachineView};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::machines::parse_mac;
use crate::ui::session::Session;

/// Most event streams open at once, over all sessions.
pub const MAX_STREAMS: usize = 32;
/// Most event streams open at once for one session (a few tabs).
pub const MAX_STREAMS_PER_SESSION: usize = 4;
/// How long one event stream lasts before the server ends it (the browser reconnects).
pub const STREAM_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// How often an idle stream checks that its session is still open.
const SESSION_CHECK: Duration = Duration::from_secs(30);
/// Keep-alive comment interval.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Shortest time between two `change` events of one stream (a booting fleet records many
/// sightings a second; the page only needs to refresh once).
const MIN_EVENT_GAP: Duration = Duration::from_millis(500);

/// The machines page's routes (wrapped by `require_session`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/machines", get(page))
        .route("/ui/machines/events", get(events))
        .route("/ui/machines/assign", post(assign))
        .route("/ui/machines/unassign", post(unassign))
        .route("/ui/machines/default", post(set_default))
        .route("/ui/machines/default/clear", post(clear_default))
}

/// The values of an assignment form, as typed (kept on a refusal).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct AssignForm {
    mac: String,
    schematic: String,
    version: String,
    platform: String,
    arch: String,
    /// Extra kernel arguments, separated by spaces.
    kernel_args: String,
    /// Labels, one `key=value` per line.
    labels: String,
    /// `true` when the "build its boot assets now" box is ticked.
    warm: Option<String>,
}

impl AssignForm {
    fn from_assignment(mac: String, a: &Assignment) -> AssignForm {
        AssignForm {
            mac,
            schematic: a.schematic.clone(),
            version: a.version.clone(),
            platform: a.platform.clone(),
            arch: a.arch.clone().unwrap_or_default(),
            kernel_args: a.extra_kernel_args.join(" "),
            labels: a
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            warm: None,
        }
    }

    /// The assignment the form describes; syntax is checked by the service call.
    fn assignment(&self) -> Result<Assignment, ApiError> {
        let mut labels = BTreeMap::new();
        for (i, line) in self.labels.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(ApiError::bad_request(format!(
                    "invalid assignment: labels: line {} is not key=value",
                    i + 1
                )));
            };
            labels.insert(k.trim().to_string(), v.trim().to_string());
        }
        let platform = self.platform.trim();
        let arch = self.arch.trim();
        Ok(Assignment {
            schematic: self.schematic.trim().to_string(),
            version: self.version.trim().to_string(),
            platform: if platform.is_empty() {
                "metal".to_string()
            } else {
                platform.to_string()
            },
            arch: (!arch.is_empty()).then(|| arch.to_string()),
            extra_kernel_args: self
                .kernel_args
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            labels,
            // The form has no address fields: `assign` keeps the machine's (API/CLI-set) ones.
            ip: None,
            hostname: None,
        })
    }

    fn warm(&self) -> bool {
        matches!(self.warm.as_deref(), Some("true" | "on" | "1"))
    }
}

/// The machines page and its table fragment.
#[derive(Template)]
#[template(path = "machines.html")]
struct MachinesPage {
    chrome: Chrome,
    machines: Vec<MachineView>,
    default: Option<Assignment>,
    policy: String,
    versions: Vec<String>,
    schematics: Vec<String>,
    /// The assign form (prefilled, or as typed before a refusal) and its error.
    form: AssignForm,
    form_error: Option<String>,
    /// The default form and its error.
    default_form: AssignForm,
    default_error: Option<String>,
    /// An error of an unassign button (shown above the table).
    table_error: Option<String>,
    /// What the last form did (`?assigned=…`), in words.
    notice: Option<String>,
}

/// Just the table, for the page's script to swap in.
#[derive(Template)]
#[template(path = "machines_table.html")]
struct MachinesTable {
    chrome: Chrome,
    machines: Vec<MachineView>,
}

/// `GET /ui/machines[?fragment=table][&schematic=…&version=…][&mac=…][&assigned=…]`.
async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if q.get("fragment").map(String::as_str) == Some("table") {
        let table = MachinesTable {
            chrome: Chrome::new(&state, Some(session), "machines"),
            machines: state.assignments.machines()?,
        };
        return Ok(render(&table));
    }
    let mut form = AssignForm {
        // The warm box starts as `assignments.warmOnAssign` says.
        warm: state
            .config
            .assignments
            .warm_on_assign
            .then(|| "true".to_string()),
        ..AssignForm::default()
    };
    // Editing a machine: its current assignment.
    if let Some(raw) = q.get("mac").filter(|m| !m.is_empty()) {
        form.mac = raw.clone();
        if let Ok(mac) = parse_mac(raw)
            && let Some(a) = state.assignments.get(mac)?
        {
            form = AssignForm {
                warm: form.warm.take(),
                ..AssignForm::from_assignment(mac.to_string(), &a)
            };
        }
    }
    // The wizard's "Assign to machines…": a schematic and version preselected.
    if let Some(s) = q.get("schematic") {
        form.schematic = s.clone();
    }
    if let Some(v) = q.get("version") {
        form.version = v.clone();
    }
    let notice = notice(&q);
    let default_form = match state.assignments.default_assignment()? {
        Some(a) => AssignForm::from_assignment(String::new(), &a),
        None => AssignForm::default(),
    };
    let mut p = page_for(&state, session, form, default_form).await?;
    p.notice = notice;
    Ok(render(&p))
}

fn notice(q: &HashMap<String, String>) -> Option<String> {
    let mac = |k: &str| {
        q.get(k)
            .and_then(|m| parse_mac(m).ok())
            .map(|m| m.to_string())
    };
    if let Some(m) = mac("assigned") {
        return Some(format!("{m} is assigned."));
    }
    if let Some(m) = mac("unassigned") {
        return Some(format!("{m} is no longer assigned."));
    }
    match q.get("default").map(String::as_str) {
        Some("set") => Some("The default assignment is set.".into()),
        Some("cleared") => Some("The default assignment is cleared.".into()),
        _ => None,
    }
}

async fn page_for(
    state: &AppState,
    session: Session,
    form: AssignForm,
    default_form: AssignForm,
) -> Result<MachinesPage, ApiError> {
    let a = &state.assignments;
    // Offline with nothing imported, or an upstream down: the select is then empty and the
    // field still takes any version (the check says whether it is served).
    let versions = match state.factory.artifacts().versions().await {
        Ok(mut v) => {
            v.sort();
            v.iter().rev().map(|v| v.tag()).collect()
        }
        Err(e) => {
            tracing::debug!(error = %e, "machines page: no version list");
            Vec::new()
        }
    };
    let schematics = match state.schematics.list() {
        Ok(list) => list.iter().map(|id| id.to_string()).collect(),
        Err(e) => {
            tracing::debug!(error = %e, "machines page: no schematic list");
            Vec::new()
        }
    };
    Ok(MachinesPage {
        chrome: Chrome::new(state, Some(session), "machines"),
        machines: a.machines()?,
        default: a.default_assignment()?,
        policy: serde_json::to_value(a.policy())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        versions,
        schematics,
        form,
        form_error: None,
        default_form,
        default_error: None,
        table_error: None,
        notice: None,
    })
}

/// Re-renders the page after a refused form, with `error`'s status.
async fn refused(
    state: &AppState,
    session: Session,
    error: ApiError,
    place: impl FnOnce(&mut MachinesPage, String),
    form: AssignForm,
    default_form: AssignForm,
) -> Result<Response, ApiError> {
    if error.status.is_server_error() {
        return Err(error);
    }
    let status = error.status;
    let mut p = page_for(state, session, form, default_form).await?;
    place(&mut p, error.message);
    Ok(render_with(status, &p))
}

fn current_default_form(state: &AppState) -> Result<AssignForm, ApiError> {
    Ok(match state.assignments.default_assignment()? {
        Some(a) => AssignForm::from_assignment(String::new(), &a),
        None => AssignForm::default(),
    })
}

/// `POST /ui/machines/assign`: assigns (or re-assigns) a MAC.
async fn assign(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(form): Form<AssignForm>,
) -> Result<Response, ApiError> {
    let result = async {
        let mac = parse_mac(form.mac.trim())?;
        let mut assignment = form.assignment()?;
        if let Some(old) = state.assignments.get(mac)? {
            assignment.ip = old.ip;
            assignment.hostname = old.hostname;
        }
        assign_checked(
            &state.assignments,
            &state.factory,
            mac,
            &assignment,
            form.warm(),
        )
        .await?;
        Ok::<_, ApiError>(mac)
    }
    .await;
    match result {
        Ok(mac) => Ok(see_other(&format!(
            "{}/ui/machines?assigned={mac}#notice",
            state.ui.site.base
        ))),
        Err(e) => {
            let default_form = current_default_form(&state)?;
            refused(
                &state,
                session,
                e,
                |p, m| p.form_error = Some(m),
                form,
                default_form,
            )
            .await
        }
    }
}

#[derive(Deserialize)]
struct MacForm {
    #[serde(default)]
    mac: String,
}

/// `POST /ui/machines/unassign`: removes a MAC's assignment (404 when it has none, as the
/// API).
async fn unassign(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(f): Form<MacForm>,
) -> Result<Response, ApiError> {
    let result = async {
        let mac = parse_mac(f.mac.trim())?;
        if !state.assignments.remove(mac)? {
            return Err(ApiError::not_found(format!("{mac} has no assignment")));
        }
        tracing::info!(%mac, "machine unassigned");
        Ok(mac)
    }
    .await;
    match result {
        Ok(mac) => Ok(see_other(&format!(
            "{}/ui/machines?unassigned={mac}#notice",
            state.ui.site.base
        ))),
        Err(e) => {
            let default_form = current_default_form(&state)?;
            refused(
                &state,
                session,
                e,
                |p, m| p.table_error = Some(m),
                AssignForm::default(),
                default_form,
            )
            .await
        }
    }
}

/// `POST /ui/machines/default`: sets the default assignment.
async fn set_default(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(form): Form<AssignForm>,
) -> Result<Response, ApiError> {
    let result = async {
        let assignment = form.assignment()?;
        set_default_checked(&state.assignments, &state.factory, &assignment).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    match result {
        Ok(()) => Ok(see_other(&format!(
            "{}/ui/machines?default=set#notice",
            state.ui.site.base
        ))),
        Err(e) => {
            refused(
                &state,
                session,
                e,
                |p, m| p.default_error = Some(m),
                AssignForm::default(),
                form,
            )
            .await
        }
    }
}

/// `POST /ui/machines/default/clear`: clears the default assignment (404 when none is set,
/// as the API).
async fn clear_default(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Response, ApiError> {
    if !state.assignments.remove_default()? {
        let e = ApiError::not_found("no default assignment");
        return refused(
            &state,
            session,
            e,
            |p, m| p.default_error = Some(m),
            AssignForm::default(),
            AssignForm::default(),
        )
        .await;
    }
    Ok(see_other(&format!(
        "{}/ui/machines?default=cleared#notice",
        state.ui.site.base
    )))
}

/// Open event streams, per session ID (the total is the sum).
static STREAMS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

/// One open stream's place in [`STREAMS`], given back when the stream ends.
struct StreamSlot(String);

impl StreamSlot {
    fn take(session: &str) -> Option<StreamSlot> {
        let mut open = STREAMS.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = open.values().sum();
        let mine = open.get(session).copied().unwrap_or(0);
        if total >= MAX_STREAMS || mine >= MAX_STREAMS_PER_SESSION {
            return None;
        }
        open.insert(session.to_string(), mine + 1);
        Some(StreamSlot(session.to_string()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = STREAMS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.0);
            }
        }
    }
}

/// `GET /ui/machines/events`: `text/event-stream`, one `change` event per change of the
/// machine list (a machine seen, an assignment or the default changed). 429 when too many
/// streams are open.
async fn events(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Response, ApiError> {
    let Some(slot) = StreamSlot::take(&session.id) else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many live machine lists are open: close a tab (the page still works by reloading)",
        ));
    };
    let mut changes = state.assignments.subscribe();
    changes.mark_unchanged();
    let closing = state.ui.closing.clone();
    let ends = tokio::time::Instant::now() + STREAM_LIFETIME;
    let stream = async_stream_of(move |tx| async move {
        let _slot = slot;
        // The first event tells the page the stream is live (it refreshes once, catching
        // anything between its load and the subscription).
        if tx
            .send(Event::default().event("ready").data("live"))
            .await
            .is_err()
        {
            return;
        }
        let open = || state.ui.sessions.get(&session.id, Instant::now()).is_some();
        let mut session_check = tokio::time::interval(SESSION_CHECK);
        loop {
            tokio::select! {
                _ = closing.cancelled() => return,
                _ = tokio::time::sleep_until(ends) => return,
                _ = tx.closed() => return,
                // A session that expires or logs out ends its streams, changes or not.
                _ = session_check.tick() => {
                    if !open() {
                        return;
                    }
                    continue;
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            if !open() {
                return;
            }
            changes.mark_unchanged();
            if tx
                .send(Event::default().event("change").data("machines"))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(MIN_EVENT_GAP).await;
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// A stream of the events a task sends (the task ends with the stream's reader).
fn async_stream_of<F, Fut>(
    task: F,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let handle = tokio::spawn(task(tx));
    let guard = AbortOnDrop(handle);
    futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        let event = rx.recv().await?;
        Some((Ok(event), (rx, guard)))
    })
}

/// Ends the stream's task when the response body is dropped (the client went away).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
