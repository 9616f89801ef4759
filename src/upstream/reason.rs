//! Why an upstream request failed, in words an operator can act on: a DNS failure, a refused
//! connection, a timeout, a TLS error, or the registry's 401/403/404/429/5xx. `oci-client`
//! reports most of these as "error sending request for url (…)" with the real cause several
//! sources down; [`Reason::of`] finds it by type (reqwest's `is_dns`/`is_timeout`/`is_connect`,
//! `std::io::ErrorKind`, `rustls::Error`), never by matching message texts.

use std::error::Error;

use oci_client::errors::OciDistributionError;

use super::client::Endpoint;

/// The cause of an upstream failure, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The registry's host name does not resolve (`detail`: the resolver's words).
    Dns {
        /// The resolver's message.
        detail: String,
    },
    /// Nothing listens at the registry's address.
    Refused,
    /// No answer in time.
    TimedOut,
    /// The TLS handshake failed (certificate, protocol, plain HTTP spoken to HTTPS).
    Tls {
        /// rustls' message.
        detail: String,
    },
    /// Another connection failure (reset, unreachable network).
    Connect {
        /// The lowest cause's message.
        detail: String,
    },
    /// 401: the registry wants (other) credentials.
    Unauthorized,
    /// 403: the credentials lack access.
    Forbidden,
    /// 404: no such repository, tag or manifest.
    NotFound,
    /// 429: the registry rate-limits us.
    RateLimited,
    /// A 5xx (or another unexpected status).
    Status(u16),
    /// Nothing more specific is known.
    Other,
}

impl Reason {
    /// Classifies an `oci-client` error by walking its sources.
    pub fn of(e: &OciDistributionError) -> Reason {
        match e {
            OciDistributionError::RequestError(r) => {
                if r.is_dns() {
                    return Reason::Dns {
                        detail: lowest_text(r),
                    };
                }
                if let Some(reason) = transport_reason(r) {
                    return reason;
                }
                if r.is_timeout() {
                    return Reason::TimedOut;
                }
                if let Some(status) = r.status() {
                    return Reason::of_status(status.as_u16());
                }
                if r.is_connect() {
                    return Reason::Connect {
                        detail: lowest_text(r),
                    };
                }
                Reason::Other
            }
            OciDistributionError::IoError(io) => transport_reason(io).unwrap_or(Reason::Other),
            OciDistributionError::ServerError { code, .. } => Reason::of_status(*code),
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => Reason::Unauthorized,
            OciDistributionError::ImageManifestNotFoundError(_) => Reason::NotFound,
            OciDistributionError::RegistryError { envelope, .. } => {
                use oci_client::errors::OciErrorCode as C;
                let codes: Vec<&C> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes.iter().any(|c| matches!(c, C::Unauthorized)) {
                    Reason::Unauthorized
                } else if codes.iter().any(|c| matches!(c, C::Denied)) {
                    Reason::Forbidden
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        C::ManifestUnknown | C::NameUnknown | C::BlobUnknown | C::NotFound
                    )
                }) {
                    Reason::NotFound
                } else if codes.iter().any(|c| matches!(c, C::Toomanyrequests)) {
                    Reason::RateLimited
                } else {
                    Reason::Other
                }
            }
            _ => Reason::Other,
        }
    }

    /// The reason an HTTP status stands for.
    pub fn of_status(code: u16) -> Reason {
        match code {
            401 => Reason::Unauthorized,
            403 => Reason::Forbidden,
            404 => Reason::NotFound,
            429 => Reason::RateLimited,
            _ => Reason::Status(code),
        }
    }

    /// The reason in words, naming the registry as `endpoint` reaches it; `None` when there
    /// is nothing to add to the client's own text.
    pub fn describe(&self, endpoint: &Endpoint) -> Option<String> {
        let registry = &endpoint.registry;
        let authority = &endpoint.authority;
        let host = host_of(authority);
        Some(match self {
            Reason::Dns { detail } => format!("cannot resolve {host}: {detail} (DNS failure)"),
            Reason::Refused => format!(
                "connection refused by {authority}: nothing listens there (is the registry up, the port right?)"
            ),
            Reason::TimedOut => format!("no answer from {} (timed out)", endpoint.url()),
            Reason::Tls { detail } => format!(
                "TLS error talking to {authority}: {detail} (check its certificate, or set upstream.registries.{registry}.insecure for a plain-HTTP registry)"
            ),
            Reason::Connect { detail } => format!("cannot connect to {authority}: {detail}"),
            Reason::Unauthorized => format!(
                "{registry} wants credentials (401 Unauthorized): set upstream.registries.{registry}.username and password, or token"
            ),
            Reason::Forbidden => format!(
                "{registry} denied access (403 Forbidden): the credentials in upstream.registries.{registry} may not pull this repository"
            ),
            Reason::NotFound => format!("{registry} has no such repository, tag or manifest (404)"),
            Reason::RateLimited => {
                format!("{registry} is rate-limiting requests (429 Too Many Requests)")
            }
            Reason::Status(code) => format!("{registry} answered HTTP {code}"),
            Reason::Other => return None,
        })
    }

    /// A failure to reach the registry at all (as opposed to an answer from it).
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            Reason::Dns { .. }
                | Reason::Refused
                | Reason::TimedOut
                | Reason::Tls { .. }
                | Reason::Connect { .. }
        )
    }
}

/// `host` of `host[:port]` (IPv6 literals in brackets kept whole).
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| &authority[..=h.len()]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// The first typed transport cause in `e`'s chain: a `rustls::Error` (TLS), or an
/// `io::Error` whose kind says refused or timed out. `io::Error::source` skips the error it
/// wraps, so wrapped errors are looked at through `get_ref`.
fn transport_reason(e: &(dyn Error + 'static)) -> Option<Reason> {
    let mut next: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(Reason::Tls {
                detail: tls.to_string(),
            });
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Some(Reason::Refused),
                std::io::ErrorKind::TimedOut => return Some(Reason::TimedOut),
                _ => {}
            }
            if let Some(inner) = io.get_ref()
                && let Some(r) = transport_reason(inner)
            {
                return Some(r);
            }
        }
        next = err.source();
    }
    None
}

/// The text of the lowest error in `e`'s chain (an `io::Error`'s wrapped error included).
fn lowest_text(e: &(dyn Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut next = e.source();
    while let Some(err) = next {
        last = err.to_string();
        next = err.source();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(authority: &str) -> Endpoint {
        Endpoint {
            registry: "ghcr.io".into(),
            authority: authority.into(),
            plain_http: false,
        }
    }

    /// A real refused connection and a real TLS failure (a TLS client against a plain-text
    /// listener), classified from reqwest's error chain.
    #[tokio::test]
    async fn refused_and_tls_are_recognised_by_type() {
        crate::init_crypto();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = listener.local_addr().unwrap();
        drop(listener);
        let client = reqwest::Client::new();
        let e = client
            .get(format!("http://{closed}/v2/"))
            .send()
            .await
            .unwrap_err();
        let reason = Reason::of(&OciDistributionError::RequestError(e));
        assert_eq!(reason, Reason::Refused);
        let words = reason.describe(&endpoint(&closed.to_string())).unwrap();
        assert!(
            words.contains("connection refused by 127.0.0.1:"),
            "{words}"
        );

        // Something that answers plain text to a TLS ClientHello.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = plain.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = plain.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let e = client
            .get(format!("https://{addr}/v2/"))
            .send()
            .await
            .unwrap_err();
        let reason = Reason::of(&OciDistributionError::RequestError(e));
        assert!(matches!(reason, Reason::Tls { .. }), "{reason:?}");
        assert!(reason.is_transport());
    }

    #[test]
    fn statuses_and_hosts() {
        assert_eq!(Reason::of_status(401), Reason::Unauthorized);
        assert_eq!(Reason::of_status(403), Reason::Forbidden);
        assert_eq!(Reason::of_status(502), Reason::Status(502));
        let words = Reason::Dns {
            detail: "failed to lookup address information: Name or service not known".into(),
        }
        .describe(&endpoint("nonexistent.invalid:5000"))
        .unwrap();
        assert!(words.starts_with("cannot resolve nonexistent.invalid: failed to lookup"));
        assert_eq!(host_of("[::1]:5000"), "[::1]");
        assert_eq!(host_of("ghcr.io"), "ghcr.io");
        assert!(Reason::Other.describe(&endpoint("x")).is_none());
    }
}
