//! The store and mirror page (admin): `GET /ui/store` lists the images held, the Talos
//! versions with their disk usage, and the totals against the quotas; its forms upload a
//! bundle and run GC.
//!
//! - `POST /ui/store/upload?csrf=…`: a `multipart/form-data` form with the bundle in the
//!   `bundle` file part (and an optional `name` before it, as `mirror import --name`; any
//!   other field is refused). The file part is
//!   streamed into the same import as `POST /api/v1/images/import`
//!   ([`crate::upstream::images::import`]) as it arrives — never buffered whole — with the
//!   same bounds (`oci::bundle::MAX_UPLOAD_BYTES`, the store quotas, the body deadline).
//!   Without script the answer is the page with the import's result (a failed import is a
//!   `400` page, nothing recorded); a request that accepts `application/x-ndjson` (the
//!   page's script) gets the import's NDJSON events instead, once the upload has been read.
//! - `GET /ui/store/gc?keep_versions=…`: the GC plan (a dry run of `store gc` with the form's
//!   policy); `POST /ui/store/gc` runs it for real and shows what was freed.
//! - `POST /ui/store/verify`: re-hashes every blob (`store verify`) and shows the report.
//!
//! The CSRF token of an upload travels in the query (`require_session` checks it before the
//! body is read); the other forms carry it as a field.

use std::pin::Pin;
use std::task::{Context, Poll};

use askama::Template;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use futures_util::Stream;

use super::{Chrome, render};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::oci::bundle::{Event, ImportReport, MAX_UPLOAD_BYTES};
use crate::retention::{GcRunReport, Referenced};
use crate::store::VerifyReport;
use crate::ui::session::Session;
use crate::ui::store::{self as page, GcForm, Overview, human_bytes, utc_time};
use crate::upstream::images;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/store", get(show))
        .route(
            "/ui/store/upload",
            post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/ui/store/gc", get(gc_plan).post(gc_run))
        .route("/ui/store/verify", post(verify))
}

#[derive(Template)]
#[template(path = "store.html")]
struct StorePage {
    chrome: Chrome,
    overview: Overview,
    gc: GcForm,
    imported: Option<ImportReport>,
}

impl StorePage {
    fn bytes(&self, n: &u64) -> String {
        human_bytes(*n)
    }

    fn time(&self, t: &u64) -> String {
        utc_time(*t)
    }
}

async fn page(
    state: &AppState,
    session: Session,
    imported: Option<ImportReport>,
) -> Result<Response, ApiError> {
    let overview = page::overview(&state.config, &state.mirror, &state.retention)
        .await
        .map_err(ApiError::internal)?;
    Ok(render(&StorePage {
        chrome: Chrome::new(state, Some(session), "store"),
        overview,
        gc: GcForm::defaults(&state.config),
        imported,
    }))
}

/// `GET /ui/store`.
async fn show(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Response, ApiError> {
    page(&state, session, None).await
}

/// The most bytes of the multipart framing around the bundle (boundaries, part headers, the
/// `name` field).
const MULTIPART_SLACK: u64 = 64 * 1024;
/// The longest `name` field.
const MAX_NAME_BYTES: u64 = 1024;

/// `POST /ui/store/upload?csrf=…` (multipart: `bundle`, optional `name`). A refusal may come
/// before the body has been read (not a bundle, a bad field): it says `Connection: close`, so
/// the client does not send its next request on a connection the server is about to close.
async fn upload(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    body_time: Option<Extension<crate::http::listener::BodyTime>>,
    body: Body,
) -> Response {
    // The session and its CSRF token were checked: a bundle may take as long as on the
    // admin socket, not just `http.bodyReadTimeoutSeconds`.
    if let Some(Extension(t)) = body_time {
        t.allow(crate::http::listener::ADMIN_UPLOAD_TIME);
    }
    match import_upload(state, session, headers, body).await {
        Ok(r) => r,
        Err(e) => {
            let mut r = e.into_response();
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

async fn import_upload(
    state: AppState,
    session: Session,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        ApiError::bad_request("send the bundle with the page's upload form (multipart/form-data)")
    })?;
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|n| n > MAX_UPLOAD_BYTES + MULTIPART_SLACK) {
        return Err(too_large());
    }
    let constraints = multer::Constraints::new()
        .allowed_fields(vec!["bundle", "name"])
        .size_limit(
            multer::SizeLimit::new()
                .whole_stream(MAX_UPLOAD_BYTES + MULTIPART_SLACK)
                .for_field("bundle", MAX_UPLOAD_BYTES)
                .for_field("name", MAX_NAME_BYTES),
        );
    let mut form =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut name = None;
    let bundle = loop {
        let field = form.next_field().await.map_err(multipart_error)?;
        let Some(field) = field else {
            return Err(ApiError::bad_request(
                "the form has no bundle file: choose one and upload again",
            ));
        };
        match field.name() {
            Some("name") => {
                let text = field.text().await.map_err(multipart_error)?;
                let text = text.trim();
                if !text.is_empty() {
                    name = Some(images::parse_repository(text).map_err(ApiError::bad_request)?);
                }
            }
            _ => break field,
        }
    };
    if bundle.file_name().is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(
            "no file was chosen: choose a bundle (tar, tar.gz or tar.zst) and upload again",
        ));
    }
    // The file's own size, when the page's script says it (progress totals); else unknown.
    let size = headers
        .get("x-bundle-size")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let (bundle, read) = EndSignal::new(bundle);
    let mut events = images::import(&state.mirror, bundle, size, name)
        .await
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if wants_ndjson(&headers) {
        // Answer once the upload has been read (or abandoned): a browser that gets an answer
        // while it is still sending may stop sending.
        let _ = read.await;
        return Ok(crate::http::admin::ndjson(events));
    }
    while let Some(event) = events.recv().await {
        match event {
            Event::Done { report } => {
                let report: ImportReport = serde_json::from_value(report)
                    .map_err(|e| ApiError::internal(e).caused_by(&ReportShape))?;
                return page(&state, session, Some(report)).await;
            }
            Event::Error { message } => {
                return Err(ApiError::bad_request(format!(
                    "the bundle was not imported (nothing of it was kept): {message}"
                )));
            }
            Event::Progress { .. } | Event::Message { .. } => {}
        }
    }
    Err(ApiError::internal(ImportVanished))
}

/// The import task ended without a final event.
#[derive(Debug, thiserror::Error)]
#[error("the import ended without a result")]
struct ImportVanished;

/// The import's report did not parse.
#[derive(Debug, thiserror::Error)]
#[error("the import's report has an unexpected shape")]
struct ReportShape;

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the bundle is larger than the {MAX_UPLOAD_BYTES} bytes one upload may bring"),
    )
}

fn multipart_error(e: multer::Error) -> ApiError {
    match e {
        multer::Error::FieldSizeExceeded { field_name, .. }
            if field_name.as_deref() == Some("name") =>
        {
            ApiError::bad_request(format!(
                "the repository name is longer than {MAX_NAME_BYTES} bytes"
            ))
        }
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            too_large()
        }
        e => ApiError::bad_request(format!("the upload is not a valid form: {e}")),
    }
}

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"))
}

/// A stream that says (by completing the receiver) when it has ended, failed or been dropped.
struct EndSignal<S> {
    inner: S,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<S> EndSignal<S> {
    fn new(inner: S) -> (EndSignal<S>, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            EndSignal {
                inner,
                done: Some(tx),
            },
            rx,
        )
    }
}

impl<S, E> Stream for EndSignal<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = Pin::new(&mut self.inner).poll_next(cx);
        if matches!(item, Poll::Ready(None | Some(Err(_)))) {
            self.done.take();
        }
        item
    }
}

#[derive(Template)]
#[template(path = "store_gc.html")]
struct GcPage {
    chrome: Chrome,
    form: GcForm,
    report: GcRunReport,
    grace_hours: u64,
}

impl GcPage {
    fn bytes(&self, n: &u64) -> String {
        human_bytes(*n)
    }

    fn time(&self, t: &u64) -> String {
        utc_time(*t)
    }

    /// How many Talos versions the run removes.
    fn removed_versions(&self) -> usize {
        self.report.versions.iter().filter(|v| !v.keep).count()
    }
}

/// `GET /ui/store/gc?…`: the plan.
async fn gc_plan(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(form): Query<GcForm>,
) -> Result<Response, ApiError> {
    run_gc(state, session, form, true).await
}

/// `POST /ui/store/gc`: runs it (the form's `csrf` field, checked by `require_session`, is
/// ignored here).
async fn gc_run(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(form): Form<GcForm>,
) -> Result<Response, ApiError> {
    run_gc(state, session, form, false).await
}

async fn run_gc(
    state: AppState,
    session: Session,
    form: GcForm,
    dry_run: bool,
) -> Result<Response, ApiError> {
    let form = if form.is_empty() {
        GcForm::defaults(&state.config)
    } else {
        form
    };
    let request = form.request().map_err(ApiError::bad_request)?;
    let referenced = Referenced::from_assignments(&state.assignments)?;
    let report = state
        .retention
        .try_run(request.policy, &referenced, dry_run, request.grace)
        .await?;
    Ok(render(&GcPage {
        chrome: Chrome::new(&state, Some(session), "store"),
        form,
        report,
        grace_hours: request.grace.as_secs() / 3600,
    }))
}

#[derive(Template)]
#[template(path = "store_verify.html")]
struct VerifyPage {
    chrome: Chrome,
    report: VerifyReport,
}

impl VerifyPage {
    fn bytes(&self, n: &u64) -> String {
        human_bytes(*n)
    }
}

/// `POST /ui/store/verify`.
async fn verify(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Response, ApiError> {
    let report = state.mirror.catalog().store().verify_all().await?;
    Ok(render(&VerifyPage {
        chrome: Chrome::new(&state, Some(session), "store"),
        report,
    }))
}
