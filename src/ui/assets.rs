//! The web UI's static files, embedded at build time (`build.rs` reads `web/static/`).
//!
//! Each file is served at `/ui/static/<stem>.<hash>.<ext>`, the hash being the first 12 hex
//! digits of its SHA-256: a URL names one content forever, so responses carry
//! `Cache-Control: public, max-age=31536000, immutable`, and a new build that changes a file
//! changes the URL the pages link to.

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its name in `web/static/` (`app.css`).
    pub name: &'static str,
    /// The name it is served under (`app.0123456789ab.css`).
    pub hashed: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub data: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The file served under `hashed` (only exact hashed names are served: an old URL after an
/// upgrade is a 404, not another file's bytes).
pub fn by_hashed_name(hashed: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.hashed == hashed)
}

/// The hashed name of the file `name` in `web/static/`.
///
/// # Panics
/// When `web/static/` has no such file: names are literals in the templates, and
/// `every_file_the_pages_name_is_embedded` checks each of them.
pub fn hashed(name: &str) -> &'static str {
    ASSETS
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.hashed)
        .unwrap_or_else(|| panic!("web/static/{name} is not embedded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_pages_name_is_embedded() {
        for name in ["app.css", "app.js"] {
            let a = by_hashed_name(hashed(name)).unwrap();
            assert_eq!(a.name, name);
            assert!(!a.data.is_empty());
        }
        assert!(by_hashed_name("app.css").is_none());
    }
}
