//! The web UI's logic, below the HTTP layer that renders it (`http::ui`).
//!
//! The UI is server-rendered HTML: every page works without JavaScript, and a little of our
//! own script (`web/static/app.js`) improves some of them. This module holds what the pages
//! need that is not HTML:
//!
//! - [`assets`]: the static files of `web/static/`, embedded at build time under
//!   content-hashed names (so they can be cached for a year).
//! - [`session`]: admin sessions — logging in with the admin token, the session cookie's
//!   value, its CSRF token, expiry and logout.
//! - [`Site`]: where the pages live (the path prefix of `http.externalURL`) and the absolute
//!   base every link to an asset is built from (`http.externalURL` only, never the request's
//!   `Host`).
//!
//! The public pages (the schematic wizard) never show assignments or the inventory; the
//! admin pages need a session.

pub mod assets;
pub mod builds;
pub mod platforms;
pub mod session;
pub mod store;
pub mod wizard;

use std::time::Duration;

use crate::config::Config;

/// Everything the UI's handlers share.
pub struct Ui {
    /// Where the pages live and what links are built from.
    pub site: Site,
    /// Admin sessions.
    pub sessions: session::Sessions,
    /// Cancelled when the server starts shutting down: long-lived responses (the machines
    /// page's event stream) end then instead of holding the shutdown for its grace period.
    pub closing: tokio_util::sync::CancellationToken,
}

impl Ui {
    /// The UI for `config`, whose admin sessions are opened with `admin_token`.
    pub fn new(config: &Config, admin_token: std::sync::Arc<str>) -> Ui {
        Ui {
            site: Site::from_config(config),
            sessions: session::Sessions::new(
                admin_token,
                Duration::from_secs(config.api.ui_session_minutes.max(1) * 60),
            ),
            closing: tokio_util::sync::CancellationToken::new(),
        }
    }
}

/// Where the UI lives, from `http.externalURL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// `http.externalURL` (or the URL derived from `http.listen`) without a trailing slash:
    /// `https://boot.example.org/factory`. Every absolute link (assets, PXE scripts, the
    /// installer reference's host) starts here.
    pub external: String,
    /// The path part of `external`, without a trailing slash (`/factory`, or empty): the
    /// prefix of every page and form URL, for a reverse proxy that serves the appliance under
    /// a sub-path and strips it before forwarding.
    pub base: String,
    /// `host[:port]` of `external`: how registry clients name the installer images served here.
    pub registry_host: String,
}

impl Site {
    /// The site of `config`.
    pub fn from_config(config: &Config) -> Site {
        let external = config.external_url();
        let base = match url::Url::parse(&external) {
            Ok(u) => u.path().trim_end_matches('/').to_string(),
            Err(_) => String::new(),
        };
        Site {
            external,
            base,
            registry_host: config.external_registry_host(),
        }
    }

    /// The URL path of a page or form: `path` (starting with `/`) under the site's prefix.
    pub fn page(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The absolute URL of `path` (starting with `/`): `http.externalURL` joined with it.
    pub fn absolute(&self, path: &str) -> String {
        format!("{}{path}", self.external)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(external: &str) -> Site {
        let mut config = Config::default();
        config.http.external_url = Some(external.parse().unwrap());
        Site::from_config(&config)
    }

    #[test]
    fn a_sub_path_is_kept_once_and_the_host_never_repeats() {
        let s = site("https://h.example/factory/");
        assert_eq!(s.base, "/factory");
        assert_eq!(s.page("/ui/login"), "/factory/ui/login");
        assert_eq!(
            s.absolute("/image/x/v1.11.6/kernel-amd64"),
            "https://h.example/factory/image/x/v1.11.6/kernel-amd64"
        );
        assert_eq!(s.registry_host, "h.example");
        let root = site("http://192.0.2.1:8080");
        assert_eq!(root.base, "");
        assert_eq!(root.page("/"), "/");
        assert_eq!(root.absolute("/pxe/a"), "http://192.0.2.1:8080/pxe/a");
        assert_eq!(root.registry_host, "192.0.2.1:8080");
    }
}
