//! bootfactory: a self-hosted Talos Linux image factory and network-boot appliance.
//!
//! The crate is organised one module per concern; `ARCHITECTURE.md` maps them.

pub mod assign;
pub mod atomic_file;
pub mod cli;
pub mod config;
pub mod contained;
pub mod dhcp;
pub mod errors;
pub mod factory;
pub mod file_response;
#[cfg(feature = "fixture")]
pub mod fixture;
pub mod formats;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod gocompat;
pub mod http;
pub mod ipxe;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod netboot;
pub mod oci;
pub mod ratelimit;
pub mod registry;
pub mod schematic;
pub mod server;
pub mod store;
pub mod systemd;
pub mod tftp;
pub mod tls;
pub mod upstream;
pub mod version;

/// Installs the process-wide TLS crypto provider (ring) used by every HTTPS client and server.
/// Idempotent; call it before building an HTTP client.
pub fn init_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
