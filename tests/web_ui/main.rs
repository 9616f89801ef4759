//! The web UI in a real browser (Debian's headless Chromium over WebDriver) against the real
//! server: the wizard, login, the machines, store and builds pages. Screenshots of every page
//! go to `<target>/ui-screenshots/` (or `BOOTFACTORY_SCREENSHOTS`); README's come from there.
//!
//! One file per page (`wizard.rs`, `machines.rs`, …), one test binary.

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod builds;
mod hostile;
mod machines;
mod store;
mod wizard;

/// A server on the fixture store (offline: nothing but the store), with `extra` settings.
/// It listens on a port chosen beforehand, so the links it derives from `http.listen` (no
/// `http.externalURL`) name the port it really serves on.
pub async fn fixture_server(extra: &[(&str, &str)]) -> support::TestServer {
    let data = tempfile::tempdir().unwrap();
    support::import_fixture(
        data.path(),
        &bootfactory::fixture::FixtureOptions::default(),
    )
    .await;
    let listen = format!("127.0.0.1:{}", support::tools::free_port());
    let mut overrides = vec![("offline", "true"), ("http.listen", listen.as_str())];
    overrides.extend_from_slice(extra);
    support::TestServer::start_in(data, &overrides).await
}
