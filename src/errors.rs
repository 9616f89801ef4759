//! Error chains. Every error type follows one rule: a layer either forwards its source
//! (`#[error(transparent)]`) or shows only its own context and exposes the source through
//! `source()` — never both — so [`chain`] prints each cause once. Sources are kept, not
//! flattened to strings; [`SharedError`] (an `Arc`) where the error must be `Clone` (a build's
//! result goes to every request that joined it).
//!
//! Each failure is logged once, at the edge: the HTTP access line of a 5xx response
//! ([`LoggedCause`] carries the chain from the error mapping to it), the CLI's last line.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// A shareable error with its sources.
pub type SharedError = Arc<dyn Error + Send + Sync + 'static>;

/// `e` and every error below it, joined with `": "`. A source whose text the line already
/// holds (a foreign error that repeats its source) is skipped.
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(source) = next {
        let text = source.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = source.source();
    }
    out
}

/// A message about what was being done, with the error that made it fail as its source.
#[derive(Debug, Clone)]
pub struct Context {
    message: String,
    source: Option<SharedError>,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for Context {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

/// `message`, caused by `source`.
pub fn context(
    message: impl Into<String>,
    source: impl Error + Send + Sync + 'static,
) -> SharedError {
    Arc::new(Context {
        message: message.into(),
        source: Some(Arc::new(source)),
    })
}

/// An error that is only a message (the root cause).
pub fn message(message: impl Into<String>) -> SharedError {
    Arc::new(Context {
        message: message.into(),
        source: None,
    })
}

/// The causes of an error whose own text is already part of a message (a leaf error that
/// was rendered into text, like an upstream client's error): shows and exposes only the
/// sources the message does not already hold, so a chain printed from the message shows
/// each cause once.
#[derive(Debug, Clone)]
pub struct SourcesOf {
    error: SharedError,
    /// How many levels below `error` the first new cause is (at least 1).
    skip: usize,
}

impl SourcesOf {
    /// The causes of `error` that `message` does not already show; `None` if there are none.
    pub fn new(message: &str, error: SharedError) -> Option<SourcesOf> {
        let mut skip = 1;
        let mut next = error.source();
        while let Some(source) = next {
            if !message.contains(&source.to_string()) {
                return Some(SourcesOf { error, skip });
            }
            skip += 1;
            next = source.source();
        }
        None
    }

    fn first(&self) -> &(dyn Error + 'static) {
        let mut e: &(dyn Error + 'static) = &*self.error;
        for _ in 0..self.skip {
            e = e.source().expect("checked in new");
        }
        e
    }
}

impl fmt::Display for SourcesOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.first(), f)
    }
}

impl Error for SourcesOf {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.first().source()
    }
}

/// Put on a 5xx response by the code that mapped the error to it: the full cause chain, for
/// the one log line the request gets (the HTTP trace layer writes it, inside the request's
/// span, so it carries the request ID).
#[derive(Debug, Clone)]
pub struct LoggedCause(pub Arc<str>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_shows_each_cause_once() {
        let io = std::io::Error::other("connection refused");
        let e = context("resolve ghcr.io/x:1", io);
        assert_eq!(chain(&*e), "resolve ghcr.io/x:1: connection refused");
        let outer = context("cannot pull x", e);
        assert_eq!(
            chain(&*outer),
            "cannot pull x: resolve ghcr.io/x:1: connection refused"
        );
        // A foreign error that repeats its source's text is not repeated.
        let repeating = context(
            "a: connection refused",
            std::io::Error::other("connection refused"),
        );
        assert_eq!(chain(&*repeating), "a: connection refused");
        assert_eq!(chain(&*message("plain")), "plain");

        // Only the causes a rendered message does not hold.
        let rendered = context(
            "error sending request",
            context("client error", std::io::Error::other("refused")),
        );
        let text = format!("resolve x: {rendered}");
        let below = SourcesOf::new(&text, rendered.clone()).unwrap();
        assert_eq!(chain(&below), "client error: refused");
        let text = format!("resolve x: {}", chain(&*rendered));
        assert!(SourcesOf::new(&text, rendered).is_none());
    }
}
