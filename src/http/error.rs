//! The error type HTTP handlers return: a status and a plain-text message, written the way
//! upstream's Go server writes errors (`text/plain; charset=utf-8`, body ends with `\n`).

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::errors::{LoggedCause, chain};
use crate::store::StoreError;

/// An error answered to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message sent as the body.
    pub message: String,
    /// For a 5xx: the full cause chain, logged once with the request (not sent).
    pub cause: Option<Arc<str>>,
    /// A 4xx that points at our own data, not at the request: logged at WARN with `cause`.
    pub warn: bool,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            cause: None,
            warn: false,
        }
    }

    /// A 4xx caused by our own data (a stored schematic this version cannot read), not by
    /// the request: the request's log line is a WARN with `e`'s cause chain.
    pub fn warn_with(self, e: &(dyn std::error::Error + 'static)) -> ApiError {
        ApiError {
            warn: true,
            ..self.caused_by(e)
        }
    }

    /// Keeps `e`'s cause chain for the request's log line (5xx responses only are logged
    /// with it; see [`LoggedCause`]).
    pub fn caused_by(mut self, e: &(dyn std::error::Error + 'static)) -> ApiError {
        self.cause = Some(chain(e).into());
        self
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 507 Insufficient Storage: the data directory's filesystem is full. The message names
    /// the directory so the operator knows where to free space; the request can be retried.
    pub fn insufficient_storage(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INSUFFICIENT_STORAGE, message)
    }

    /// 500 with a generic body; the cause chain goes to the log, not to the client.
    pub fn internal(e: impl std::error::Error + 'static) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error").caused_by(&e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        if e.is_no_space() {
            ApiError::insufficient_storage(e.to_string()).caused_by(&e)
        } else {
            ApiError::internal(e)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let cause = (status.is_server_error() || self.warn)
            .then(|| self.cause.unwrap_or_else(|| self.message.as_str().into()));
        let mut response = plain_text(status, self.message);
        if let Some(cause) = cause {
            response.extensions_mut().insert(LoggedCause(cause));
        }
        // Rate limits and a full store are temporary: tell well-behaved clients when to retry.
        let retry = match status {
            StatusCode::TOO_MANY_REQUESTS => Some("60"),
            StatusCode::SERVICE_UNAVAILABLE => Some("30"),
            StatusCode::INSUFFICIENT_STORAGE => Some("300"),
            _ => None,
        };
        if let Some(secs) = retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
        }
        response
    }
}

/// A plain-text response whose body ends with a newline.
pub fn plain_text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
