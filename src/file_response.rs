//! Serving stored files over HTTP: streaming from disk with `Content-Length`, single `Range`
//! requests (206 / 416), `HEAD`, and `ETag` / `If-None-Match`. Used for registry blobs and
//! factory assets alike, so it sits beside both (`http` routes the factory, `registry` the
//! OCI API) and depends on neither.
//!
//! On a plain-HTTP/1 connection the body is sent with `sendfile(2)` ([`sendfile`]: the request
//! carries the connection's [`sendfile::Jobs`]); elsewhere (TLS, the admin socket) it is read
//! into a small buffer and streamed.

pub mod sendfile;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

/// Read buffer for streaming files where `sendfile` cannot be used (TLS, Unix sockets). hyper
/// queues up to ~400 KiB of frames per connection on top of it, so it is kept small.
const STREAM_BUFFER: usize = 64 * 1024;

/// A byte range resolved against a file size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (usable) `Range` header: send everything.
    Full,
    /// One satisfiable range, inclusive bounds.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// The range cannot be satisfied (416).
    Unsatisfiable,
}

/// Parses a `Range` header against `size` (RFC 9110 §14). Multiple ranges and unknown units
/// fall back to the full body, which the RFC allows.
pub fn parse_range(value: Option<&HeaderValue>, size: u64) -> RangeRequest {
    let Some(text) = value.and_then(|v| v.to_str().ok()) else {
        return RangeRequest::Full;
    };
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = if a.is_empty() {
        // Suffix range: the last N bytes.
        match b.parse::<u64>() {
            Ok(0) | Err(_) => return RangeRequest::Unsatisfiable,
            Ok(_) if size == 0 => return RangeRequest::Unsatisfiable,
            Ok(n) => (size.saturating_sub(n), size - 1),
        }
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return RangeRequest::Full;
        };
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(e) if e < start => return RangeRequest::Unsatisfiable,
                Ok(e) => e.min(size.saturating_sub(1)),
                Err(_) => return RangeRequest::Full,
            }
        };
        if start >= size {
            return RangeRequest::Unsatisfiable;
        }
        (start, end)
    };
    RangeRequest::Partial {
        start: parsed.0,
        end: parsed.1,
    }
}

/// Builds the response for a file of `size` bytes: status, length and range headers from the
/// request, body streamed from `file` (none for `HEAD`). `headers` are added as given (content
/// type, digest, disposition, …); `etag` enables `If-None-Match`. `zero_copy` is the request's
/// [`sendfile::Jobs`] extension, present on plain-HTTP/1 connections only: the body is then
/// sent with `sendfile`.
pub async fn file_response(
    method: &Method,
    request_headers: &HeaderMap,
    zero_copy: Option<&sendfile::Jobs>,
    mut file: tokio::fs::File,
    size: u64,
    etag: Option<&str>,
    headers: HeaderMap,
) -> std::io::Result<Response> {
    let mut builder = Response::builder();
    {
        let h = builder.headers_mut().expect("fresh builder");
        h.extend(headers);
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(&format!("\"{t}\"")).ok()) {
            h.insert(header::ETAG, tag);
        }
    }
    if let (Some(tag), Some(inm)) = (etag, request_headers.get(header::IF_NONE_MATCH)) {
        let inm = inm.to_str().unwrap_or_default();
        if inm
            .split(',')
            .any(|t| t.trim().trim_matches('"') == tag || t.trim() == "*")
        {
            return Ok(builder
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .expect("valid response"));
        }
    }
    let range = parse_range(request_headers.get(header::RANGE), size);
    let (status, start, len) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Partial { start, end } => {
            let h = builder.headers_mut().expect("fresh builder");
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")).expect("ascii"),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            let h = builder.headers_mut().expect("fresh builder");
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
            return Ok(builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .body(Body::empty())
                .expect("valid response"));
        }
    };
    builder = builder.status(status).header(header::CONTENT_LENGTH, len);
    if method == Method::HEAD {
        return Ok(builder.body(Body::empty()).expect("valid response"));
    }
    if let Some(jobs) = zero_copy {
        let file = file.into_std().await;
        let body = sendfile::SendfileBody::new(jobs.clone(), file, start, len);
        return Ok(builder.body(Body::new(body)).expect("valid response"));
    }
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start)).await?;
    }
    let stream = ReaderStream::with_capacity(file.take(len), STREAM_BUFFER);
    Ok(builder
        .body(Body::from_stream(stream))
        .expect("valid response"))
}

/// Longest file name put in a `Content-Disposition` header or a checksum line (bytes).
const MAX_FILENAME: usize = 255;

/// A client-chosen file name made safe to echo: control characters become `_` and the name is
/// cut at [`MAX_FILENAME`] bytes (on a character boundary). Used in checksum lines.
pub fn safe_filename(name: &str) -> String {
    let mut out = String::with_capacity(name.len().min(MAX_FILENAME));
    for c in name.chars() {
        let c = if c.is_control() { '_' } else { c };
        if out.len() + c.len_utf8() > MAX_FILENAME {
            break;
        }
        out.push(c);
    }
    out
}

/// `attachment; filename="…"` for a client-chosen name (RFC 6266): the name is a quoted string
/// with `"` and `\` escaped, so it can never add parameters; a name with non-ASCII characters
/// also gets `filename*=UTF-8''<percent-encoded>` (RFC 8187) with an ASCII fallback (`_` for
/// each non-ASCII character) in `filename`.
pub fn content_disposition(name: &str) -> HeaderValue {
    let name = safe_filename(name);
    let mut value = String::from("attachment; filename=\"");
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                value.push('\\');
                value.push(c);
            }
            c if c.is_ascii() => value.push(c),
            _ => value.push('_'),
        }
    }
    value.push('"');
    if !name.is_ascii() {
        value.push_str("; filename*=UTF-8''");
        for b in name.bytes() {
            // RFC 8187 attr-char: ALPHA / DIGIT / "!#$&+-.^_`|~"
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                value.push(b as char);
            } else {
                value.push_str(&format!("%{b:02X}"));
            }
        }
    }
    HeaderValue::from_str(&value).expect("printable ASCII without CR/LF is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_cannot_gain_parameters() {
        let v = |n: &str| content_disposition(n).to_str().unwrap().to_string();
        assert_eq!(v("kernel-amd64"), "attachment; filename=\"kernel-amd64\"");
        assert_eq!(
            v("a\"; size=1; x=\"y"),
            r#"attachment; filename="a\"; size=1; x=\"y""#
        );
        assert_eq!(v("a\\"), r#"attachment; filename="a\\""#);
        assert_eq!(v("x\ty\u{7f}"), "attachment; filename=\"x_y_\"");
        assert_eq!(
            v("tälos.iso"),
            "attachment; filename=\"t_los.iso\"; filename*=UTF-8''t%C3%A4los.iso"
        );
        assert_eq!(
            v(&"a".repeat(1000)).len(),
            "attachment; filename=\"\"".len() + 255
        );
        assert_eq!(safe_filename("a\nb  c"), "a_b  c");
    }

    fn r(v: &str, size: u64) -> RangeRequest {
        parse_range(Some(&HeaderValue::from_str(v).unwrap()), size)
    }

    #[test]
    fn ranges_as_the_conformance_suite_expects() {
        use RangeRequest::*;
        assert_eq!(
            r("bytes=500-1499", 2048),
            Partial {
                start: 500,
                end: 1499
            }
        );
        assert_eq!(
            r("bytes=500-", 2048),
            Partial {
                start: 500,
                end: 2047
            }
        );
        assert_eq!(
            r("bytes=-500", 2048),
            Partial {
                start: 1548,
                end: 2047
            }
        );
        assert_eq!(
            r("bytes=2000-5000", 2048),
            Partial {
                start: 2000,
                end: 2047
            }
        );
        assert_eq!(r("bytes=500-0", 2048), Unsatisfiable);
        assert_eq!(r("bytes=5000-10000", 2048), Unsatisfiable);
        assert_eq!(r("bytes=-0", 2048), Unsatisfiable);
        assert_eq!(r("bytes=0-0,5-6", 2048), Full);
        assert_eq!(r("items=0-1", 2048), Full);
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(r("bytes=0-", 0), Unsatisfiable);
    }
}
