//! Getting images from upstream registries into the store, online through the integrated
//! mirror (offline bundles are `oci::bundle`: they never talk to an upstream).
//!
//! - [`client`]: one upstream registry through `oci-client` (auth, timeouts, retries).
//! - [`mirror`]: the pull-through logic shared by the `/v2` server, the factory and the CLI —
//!   tags with a TTL, manifests and blobs fetched once, verified, stored, served from disk.
//! - [`fetch`]: a blob download in flight, which several readers can follow while it is written.
//! - [`reason`]: why an upstream request failed (DNS, refused, timeout, TLS, 401/403/404/429/5xx),
//!   classified by type from the client's error chain and put in words.

pub mod client;
pub mod fetch;
pub mod images;
pub mod mirror;
pub mod reason;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use client::RegistryClient;
pub use mirror::{BlobHit, ManifestHit, Mirror, MirrorError};

use crate::config::Config;
use crate::errors::SourcesOf;

/// Why an upstream request failed, in the terms the mirror acts on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream says the tag, manifest, blob or repository does not exist.
    #[error("{message}")]
    NotFound {
        /// Registry host.
        registry: String,
        /// Details (the text clients see).
        message: String,
        /// What lies below `message`, if anything.
        #[source]
        cause: Option<SourcesOf>,
    },
    /// Authentication or authorization failed.
    #[error("{message}")]
    Denied {
        /// Registry host.
        registry: String,
        /// Details (the text clients see).
        message: String,
        /// What lies below `message`, if anything.
        #[source]
        cause: Option<SourcesOf>,
    },
    /// The upstream could not be reached, timed out, or is overloaded (worth retrying later).
    #[error("{message}")]
    Unavailable {
        /// Registry host.
        registry: String,
        /// Details (the text clients see).
        message: String,
        /// What lies below `message`, if anything.
        #[source]
        cause: Option<SourcesOf>,
    },
    /// The upstream sent content that does not match its digest.
    #[error("{message}")]
    Corrupt {
        /// Registry host.
        registry: String,
        /// Details (the text clients see).
        message: String,
        /// What lies below `message`, if anything.
        #[source]
        cause: Option<SourcesOf>,
    },
    /// The download could not be stored: the data directory's filesystem is full
    /// (`no space left on <dataDir>`). Nothing was committed.
    #[error("{message}")]
    NoSpace {
        /// Registry host.
        registry: String,
        /// Details (the text clients see).
        message: String,
        /// What lies below `message`, if anything.
        #[source]
        cause: Option<SourcesOf>,
    },
    /// The upstream answered something that is not a valid registry response.
    #[error("{message}")]
    Protocol {
        /// Registry host.
        registry: String,
        /// Details (the text clients see).
        message: String,
        /// What lies below `message`, if anything.
        #[source]
        cause: Option<SourcesOf>,
    },
}

/// Clients for all upstream registries, created on first use.
pub struct Upstreams {
    config: Arc<Config>,
    clients: Mutex<HashMap<String, Arc<RegistryClient>>>,
}

impl Upstreams {
    /// An empty set of clients for `config`.
    pub fn new(config: Arc<Config>) -> Upstreams {
        Upstreams {
            config,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client for a registry host.
    pub fn client(&self, registry: &str) -> Arc<RegistryClient> {
        let mut clients = self.clients.lock().expect("upstream clients lock");
        clients
            .entry(registry.to_string())
            .or_insert_with(|| Arc::new(RegistryClient::new(&self.config, registry)))
            .clone()
    }
}
