//! Finding the running service: every command that can work through the admin API asks
//! [`connect`] first. When `bootfactory serve` answers on the admin socket (`api.socket`,
//! `<dataDir>/admin.sock` by default) the command goes through it — the service owns the
//! store, so nothing else may open it — and otherwise it opens the data directory itself.
//!
//! | Socket | Outcome |
//! |--------|---------|
//! | disabled (`api.socket: ''`) or its path too long for a Unix socket, absent, or nothing listening (a stale file) | `None`: direct mode |
//! | a server answers `GET /api/v1/status` | `Some(client)` |
//! | permission denied (connect or 403) | an error: run as root or as the service's user (`machine …` uses HTTP instead when it has the admin token) |

use std::io::ErrorKind;
use std::path::Path;

use anyhow::Context as _;

use crate::assign::client::{AdminClient, ServerStatus};
use crate::config::Config;

/// What is at the admin socket's path.
#[derive(Debug)]
pub(crate) enum Probe {
    /// No socket configured, no file, or a file nothing listens on.
    NoService,
    /// A server answered its status.
    Serving(AdminClient, ServerStatus),
}

/// The running service's admin client, or `None` when no service answers on the socket.
pub(crate) async fn connect(config: &Config) -> anyhow::Result<Option<AdminClient>> {
    Ok(match probe(config).await? {
        Probe::NoService => None,
        Probe::Serving(client, status) => {
            tracing::debug!(pid = status.pid, version = %status.version, data_dir = %status.data_dir.display(), "talking to the running service");
            if status.version != env!("CARGO_PKG_VERSION") {
                eprintln!(
                    "bootfactory: note: the running service (pid {}) is version {}, this command {}",
                    status.pid,
                    status.version,
                    env!("CARGO_PKG_VERSION")
                );
            }
            Some(client)
        }
    })
}

/// Looks at the admin socket (see the module doc).
pub(crate) async fn probe(config: &Config) -> anyhow::Result<Probe> {
    let Some(path) = config.admin_socket_path() else {
        return Ok(Probe::NoService);
    };
    probe_path(&path).await
}

async fn probe_path(path: &Path) -> anyhow::Result<Probe> {
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Ok(Probe::NoService);
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            // The directory on the way may be what refuses (no service need be running).
            if let Some(dir) = path.parent()
                && nix::unistd::access(dir, nix::unistd::AccessFlags::X_OK).is_err()
            {
                return Err(crate::server::check_data_dir(dir)
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("cannot reach {}: {e}", path.display())));
            }
            return Err(denied(path, &e.to_string()));
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot connect to the admin socket {}", path.display()));
        }
    }
    let client = AdminClient::unix(path)?;
    let status = client
        .request(reqwest::Method::GET, "/api/v1/status")
        .timeout(std::time::Duration::from_secs(30));
    let response = status
        .send()
        .await
        .with_context(|| format!("cannot talk to bootfactory on {}", client.target()))?;
    if response.status() == reqwest::StatusCode::FORBIDDEN {
        let text = response.text().await.unwrap_or_default();
        return Err(denied(path, text.trim()));
    }
    let status = client.status_of(response).await?;
    Ok(Probe::Serving(client, status))
}

fn denied(path: &Path, why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "a bootfactory service uses this data directory, but this user (uid {}) may not use its admin socket {} ({why}): run the command as root or as the service's user",
        nix::unistd::geteuid(),
        path.display()
    )
}
