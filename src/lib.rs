//! bootfactory: a self-hosted Talos Linux image factory and network-boot appliance.
//!
//! The crate is organised one module per concern; `ARCHITECTURE.md` maps them.

pub(crate) mod assign;
pub(crate) mod atomic_file;
pub mod cli;
pub mod config;
pub(crate) mod contained;
pub mod dhcp;
pub(crate) mod doctor;
pub mod errors;
pub mod factory;
pub(crate) mod file_response;
#[cfg(feature = "testkit")]
pub mod fixture;
pub mod formats;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub(crate) mod gocompat;
pub(crate) mod http;
pub mod ipxe;
pub(crate) mod limits;
pub(crate) mod logging;
pub mod mac;
pub(crate) mod metrics;
pub(crate) mod netboot;
pub mod oci;
pub(crate) mod ratelimit;
pub(crate) mod registry;
pub(crate) mod retention;
pub mod schematic;
pub mod server;
pub mod store;
pub(crate) mod systemd;
pub mod tftp;
pub(crate) mod tls;
/// The web UI's logic (wizard, sessions, embedded assets), rendered by `http::ui`.
pub mod ui;
pub(crate) mod upstream;
pub mod version;

/// Installs the process-wide TLS crypto provider (ring) used by every HTTPS client and server.
/// Idempotent; call it before building an HTTP client.
pub fn init_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
