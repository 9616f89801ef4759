//! The public Image Factory wizard: `GET /` (every step; the URL is the deep link, with
//! upstream's parameter names) and `POST /ui/wizard` (the customization form: it may carry an
//! embedded machine configuration, which never goes into a URL; answers 303 to the final
//! page, `/?…&schematic-id=<id>`).
//!
//! Every step is a plain `GET` form to `/` whose hidden inputs carry the earlier choices, so
//! it works without JavaScript; `web/static/wizard.js` only filters the extensions list as
//! one types. The logic (steps, `ToSchematic`, links) is `crate::ui::wizard`. The page is
//! public, like upstream's: it shows nothing about machines or assignments.

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};

use super::{Chrome, render_with, see_other, session_of};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::schematic::storage::SchematicStoreError;
use crate::ui::wizard::{
    MAX_PAIRS, MAX_QUERY_BYTES, Page, Params, Source, Step, Wizard, WizardError,
};

/// `GET /` and `POST /ui/wizard`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(show))
        .route("/ui/wizard", post(submit))
}

#[derive(Template)]
#[template(path = "wizard.html")]
struct WizardPage {
    chrome: Chrome,
    page: Page,
    /// Whether this release serves SecureBoot assets (the arch step's checkbox).
    secure_boot_served: bool,
}

impl WizardPage {
    /// The step's name, for the template.
    fn step(&self) -> &'static str {
        match self.page.step {
            Step::Target => "target",
            Step::Version => "version",
            Step::Cloud => "cloud",
            Step::Board => "board",
            Step::Arch => "arch",
            Step::Extensions => "extensions",
            Step::Customization => "customization",
            Step::Final => "final",
        }
    }
}

fn wizard(state: &AppState) -> Wizard<'_> {
    Wizard {
        factory: &state.factory,
        schematics: &state.schematics,
        site: &state.ui.site,
        pxe_base: state.config.external_pxe_url(),
        offline: state.config.offline,
    }
}

fn api_error(e: WizardError) -> ApiError {
    match e {
        WizardError::BadRequest(m) => ApiError::bad_request(m),
        WizardError::NotFound(m) => ApiError::not_found(m),
        WizardError::Factory(e) => ApiError::from(e),
        WizardError::Schematic(SchematicStoreError::Invalid(e)) => {
            ApiError::bad_request(e.to_string())
        }
        WizardError::Schematic(e @ SchematicStoreError::Unreadable { .. }) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).warn_with(&e)
        }
        WizardError::Schematic(SchematicStoreError::Store(e)) => ApiError::from(e),
    }
}

/// The pairs of a query or form, at most one more than [`MAX_PAIRS`] (enough for
/// `Params::parse` to refuse the rest): a 1 MiB form of `a&a&…` is half a million pairs, which
/// would cost tens of MiB to hold.
fn pairs(data: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(data)
        .into_owned()
        .take(MAX_PAIRS + 1)
        .collect()
}

fn page_response(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    page: Page,
) -> Response {
    let page = WizardPage {
        chrome: Chrome::new(state, session_of(state, headers), "wizard"),
        page,
        secure_boot_served: crate::factory::SERVES_SECURE_BOOT,
    };
    render_with(status, &page)
}

/// `GET /[?target=…&version=…&…]`: the step the parameters are at.
async fn show(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = query.unwrap_or_default();
    if query.len() > MAX_QUERY_BYTES {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("the wizard's URL is longer than {MAX_QUERY_BYTES} bytes"),
        ));
    }
    let params = Params::parse(&pairs(query.as_bytes()), Source::Query).map_err(api_error)?;
    let page = wizard(&state).page(params).await.map_err(api_error)?;
    Ok(page_response(&state, &headers, StatusCode::OK, page))
}

/// `POST /ui/wizard`: the customization form. Stores the schematic and redirects to its
/// final page, or shows the form again (400) with what is wrong and the user's input.
async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the form is larger than the 1 MiB limit",
            )
        } else {
            ApiError::bad_request(format!("cannot read the form: {rejection}"))
        }
    })?;
    let params = Params::parse(&pairs(&body), Source::Form).map_err(api_error)?;
    match wizard(&state).submit(params).await.map_err(api_error)? {
        Ok(location) => Ok(see_other(&location)),
        Err(page) => Ok(page_response(
            &state,
            &headers,
            StatusCode::BAD_REQUEST,
            page,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_of_countless_empty_pairs_is_not_collected_whole() {
        // 1 MiB of `a&` is half a million pairs: holding them all (two `String`s each) would
        // cost tens of MiB per request before `Params::parse` refuses them.
        let body = b"a&".repeat(512 * 1024);
        let collected = pairs(&body);
        assert_eq!(collected.len(), MAX_PAIRS + 1);
        let refused = Params::parse(&collected, Source::Form);
        assert!(matches!(refused, Err(WizardError::BadRequest(_))));
        assert_eq!(pairs(b"a=1&b=2").len(), 2);
    }
}
