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
