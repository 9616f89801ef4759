//! OCI distribution error documents: `{"errors":[{"code","message","detail"}]}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use std::sync::Arc;

use crate::errors::{LoggedCause, chain};
use crate::factory::service::FactoryError;
use crate::upstream::{MirrorError, UpstreamError};

/// An error answered by the registry API.
#[derive(Debug, Clone)]
pub struct RegistryError {
    /// HTTP status.
    pub status: StatusCode,
    /// OCI error code (`MANIFEST_UNKNOWN`, …).
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Seconds for `Retry-After` (on 503).
    pub retry_after: Option<u64>,
    /// For a 5xx: the full cause chain, logged once with the request (not sent).
    pub cause: Option<Arc<str>>,
}

impl RegistryError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> RegistryError {
        RegistryError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            cause: None,
        }
    }

    /// 404 `MANIFEST_UNKNOWN`.
    pub fn manifest_unknown(message: &str) -> RegistryError {
        Self::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", message)
    }

    /// 400 `DIGEST_INVALID`.
    pub fn digest_invalid(digest: &str) -> RegistryError {
        Self::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("invalid digest {digest:?}: want sha256:<64 hex>"),
        )
    }

    /// 400 `NAME_INVALID`.
    pub fn name_invalid(message: &str) -> RegistryError {
        Self::new(StatusCode::BAD_REQUEST, "NAME_INVALID", message)
    }

    /// 404 for a path that is not part of the API.
    pub fn not_found_route(path: &str) -> RegistryError {
        let shown: String = path.chars().take(200).collect();
        Self::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("unknown registry path {shown:?}"),
        )
    }

    /// 405 `UNSUPPORTED`: this registry is pull-only.
    pub fn unsupported() -> RegistryError {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "bootfactory's registry is pull-only: import images with `bootfactory mirror import` or pull them through the mirror",
        )
    }

    /// 400 with any code.
    pub fn bad_request(code: &'static str, message: &str) -> RegistryError {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 500; the cause chain is logged with the request.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> RegistryError {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            "internal error",
        )
        .caused_by(cause)
    }

    fn caused_by(mut self, e: &(dyn std::error::Error + 'static)) -> RegistryError {
        self.cause = Some(chain(e).into());
        self
    }

    /// Maps a mirror failure; `unknown_code` is the code for "does not exist" on this route.
    pub fn from_mirror(e: MirrorError, unknown_code: &'static str) -> RegistryError {
        Self::from_mirror_ref(&e, unknown_code)
    }

    /// [`RegistryError::from_mirror`] for a shared failure (a factory build's).
    pub fn from_mirror_ref(e: &MirrorError, unknown_code: &'static str) -> RegistryError {
        let cause: Arc<str> = chain(e).into();
        let mut mapped = match e {
            MirrorError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, unknown_code, m.clone()),
            // Offline and not stored: it will not appear by retrying, so say so at once.
            e @ MirrorError::Offline(_) => {
                Self::new(StatusCode::NOT_FOUND, unknown_code, e.to_string())
            }
            e @ MirrorError::NotAllowed(_) => {
                Self::new(StatusCode::FORBIDDEN, "DENIED", e.to_string())
            }
            e @ MirrorError::Busy(_) => RegistryError {
                retry_after: Some(2),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOOMANYREQUESTS",
                    e.to_string(),
                )
            },
            MirrorError::Upstream(u) => match u {
                UpstreamError::NotFound { message, .. } => {
                    Self::new(StatusCode::NOT_FOUND, unknown_code, message.clone())
                }
                UpstreamError::Denied {
                    registry, message, ..
                } => Self::new(
                    StatusCode::FORBIDDEN,
                    "DENIED",
                    format!(
                        "upstream {registry} refused access (configure credentials in upstream.registries): {message}"
                    ),
                ),
                UpstreamError::Unavailable {
                    registry, message, ..
                } => RegistryError {
                    retry_after: Some(30),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "UNAVAILABLE",
                        format!(
                            "upstream {registry} is unavailable and the content is not cached: {message}"
                        ),
                    )
                },
                UpstreamError::NoSpace { message, .. } => {
                    Self::new(StatusCode::INSUFFICIENT_STORAGE, "UNKNOWN", message.clone())
                }
                UpstreamError::Corrupt { message, .. }
                | UpstreamError::Protocol { message, .. } => {
                    Self::new(StatusCode::BAD_GATEWAY, "UNKNOWN", message.clone())
                }
            },
            // `no space left on <dataDir>`, as for blobs below; the OS error stays in the log.
            MirrorError::Catalog(c) if crate::store::caused_by_no_space(c) => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, "UNKNOWN", c.to_string())
            }
            MirrorError::Catalog(c) => {
                Self::new(StatusCode::BAD_GATEWAY, "MANIFEST_INVALID", c.to_string())
            }
            MirrorError::Store(s) if s.is_no_space() => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, "UNKNOWN", s.to_string())
            }
            MirrorError::Store(s) => Self::internal(s),
        };
        if mapped.status.is_server_error() {
            mapped.cause = Some(cause);
        }
        mapped
    }
}

impl RegistryError {
    /// Maps a factory failure on the installer routes; `unknown_code` is the code for "does
    /// not exist" on this route (`MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`). Statuses are the Image
    /// Factory's; the body is an OCI error document, which containerd and skopeo print.
    pub fn from_factory(e: &FactoryError, unknown_code: &'static str) -> RegistryError {
        let text = e.to_string();
        match e {
            FactoryError::SchematicNotFound(_) | FactoryError::RouteNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", text)
            }
            FactoryError::VersionNotAvailable(_)
            | FactoryError::AssetSourceMissing(_)
            | FactoryError::ManifestUnknown(_) => {
                Self::new(StatusCode::NOT_FOUND, unknown_code, text)
            }
            FactoryError::BlobUnknown(_) | FactoryError::FileNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", text)
            }
            FactoryError::InvalidImage(_) | FactoryError::BadFileName(_) => {
                Self::new(StatusCode::BAD_REQUEST, "NAME_INVALID", text)
            }
            FactoryError::BadVersion(_) | FactoryError::BadPath(_) => {
                Self::new(StatusCode::BAD_REQUEST, "TAG_INVALID", text)
            }
            FactoryError::UnknownPlatform(_) | FactoryError::Schematic(_) => {
                Self::new(StatusCode::BAD_REQUEST, "UNSUPPORTED", text)
            }
            FactoryError::TooManyBuilds(_) => RegistryError {
                retry_after: Some(60),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", text)
            },
            FactoryError::EnterpriseOnly(_) => {
                Self::new(StatusCode::PAYMENT_REQUIRED, "UNSUPPORTED", text)
            }
            FactoryError::NotImplemented(_) => {
                Self::new(StatusCode::NOT_IMPLEMENTED, "UNSUPPORTED", text)
            }
            FactoryError::Unavailable(m) => Self::from_mirror_ref(m, unknown_code),
            FactoryError::MissingTools(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", text)
            }
            FactoryError::ParentUnavailable(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "UNAVAILABLE", text)
            }
            FactoryError::NoSpace(_) => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, "UNKNOWN", text).caused_by(e)
            }
            FactoryError::Internal(_) => Self::internal(e),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "errors": [{ "code": self.code, "message": self.message, "detail": null }]
        })
        .to_string();
        let mut response = (self.status, body).into_response();
        if self.status.is_server_error() {
            let cause = self.cause.unwrap_or_else(|| self.message.as_str().into());
            response.extensions_mut().insert(LoggedCause(cause));
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
