//! `bootfactory serve`: opens the store, loads the schematics directory, and runs the
//! services until SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::assign::Assignments;
use crate::config::Config;
use crate::factory::artifacts::Artifacts;
use crate::factory::builder::Builder;
use crate::factory::service::Factory;
use crate::factory::signing::CacheSigner;
use crate::http::listener::{self, ConnMetrics, Endpoint, Limits};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::oci::ImageCatalog;
use crate::schematic::SchematicStore;
use crate::store::Store;
use crate::upstream::Mirror;

/// Connections the separate metrics listener accepts at once (scrapers, not clients).
const METRICS_MAX_CONNECTIONS: usize = 64;

/// Connections the admin socket accepts at once (operators' commands, not clients).
const ADMIN_SOCKET_MAX_CONNECTIONS: usize = 64;

/// The request-body deadline on the admin socket: a bundle import streams gigabytes through
/// it, so `http.bodyReadTimeoutSeconds` (sized for schematics) applies only when it is longer.
const ADMIN_SOCKET_BODY_READ: Duration = crate::http::listener::ADMIN_UPLOAD_TIME;

/// Everything `serve` starts with, opened and ready.
pub struct App {
    /// The HTTP state shared by all handlers.
    pub state: AppState,
}

impl App {
    /// Opens the data directory and loads configured schematics.
    pub async fn open(config: Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create data directory {} (set --data-dir to a writable directory)",
                config.data_dir.display()
            )
        })?;
        let store = open_store(&config.data_dir)?;
        store.set_quota(crate::store::Quota {
            max_bytes: config.store.max_bytes,
            min_free_bytes: config.store.min_free_bytes,
        });
        let schematics = SchematicStore::new(store.clone());
        let config = Arc::new(config);
        let catalog = ImageCatalog::new(store.clone()).context("cannot open the image catalog")?;
        let mirror = Arc::new(Mirror::new(config.clone(), catalog));
        let metrics = Metrics::new();
        let factory = Arc::new(open_factory(
            &config,
            &store,
            &schematics,
            &mirror,
            &metrics,
        )?);
        let limits = crate::assign::InventoryLimits {
            max_machines: config.assignments.inventory_max_machines,
            max_age_secs: config
                .assignments
                .inventory_max_age_days
                .saturating_mul(86_400),
        };
        let assignments = Assignments::open_with_limits(&store, config.pxe.unassigned, limits)
            .context("cannot open the assignment table")?;
        let leases = crate::netboot::open_leases(&config, &store, &assignments)?;
        let admin_token: Arc<str> = crate::assign::token::load_or_create(
            config.api.admin_token.as_deref(),
            &config.admin_token_path(),
        )
        .context("cannot set up the admin API token")?
        .into();
        let retention = Arc::new(crate::retention::Retention::new(
            config.clone(),
            mirror.catalog().clone(),
        ));
        let ui = Arc::new(crate::ui::Ui::new(&config, admin_token.clone()));
        let state = AppState {
            ui,
            config,
            schematics,
            mirror,
            factory,
            metrics,
            assignments,
            admin_token,
            retention,
            leases,
        };
        // The schematics directory and the assignments file, exactly as SIGHUP reloads them.
        reload(&state).await?;
        if let Ok(ids) = state.schematics.list() {
            state.metrics.schematic_cache_size.set(ids.len() as i64);
        }
        Ok(App { state })
    }

    /// Binds the listeners (so callers can learn the actual addresses before serving).
    pub async fn bind(self) -> anyhow::Result<BoundApp> {
        let addr = self.state.config.http.listen;
        let http = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} (is it in use? ports below 1024 need CAP_NET_BIND_SERVICE)"
            )
        })?;
        let tls = crate::tls::Tls::from_config(&self.state.config)
            .context("cannot set up TLS (http.tls)")?
            .map(Arc::new);
        let plain = bind_optional(self.state.config.http.plain_listen, "http.plainListen").await?;
        let metrics = bind_optional(self.state.config.metrics.listen, "metrics.listen").await?;
        let admin_socket = match self.state.config.admin_socket_path() {
            Some(path) => Some(AdminSocket::bind(path).await?),
            None => {
                if let Some(socket) = &self.state.config.api.socket {
                    tracing::warn!(
                        path = %self.state.config.data_dir.join(socket).display(),
                        max = crate::config::MAX_UNIX_SOCKET_PATH,
                        "no admin socket: its path is too long for a Unix socket (set api.socket to a shorter absolute path); commands use the HTTP admin API"
                    );
                }
                None
            }
        };
        let netboot = if self.state.config.pxe.enabled {
            Some(
                crate::netboot::Netboot::bind(
                    &self.state.config,
                    self.state.assignments.clone(),
                    &self.state.metrics,
                    self.state.leases.clone(),
                )
                .await?,
            )
        } else {
            None
        };
        Ok(BoundApp {
            state: self.state,
            http,
            plain,
            tls,
            metrics,
            admin_socket,
            netboot,
        })
    }

    /// Binds and serves until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.bind().await?.serve(shutdown).await
    }
}

/// The store and the mirror of an existing data directory, for the commands that work on it
/// themselves when no service runs (`mirror …`): unlike [`App::open`] this creates no data
/// directory, admin token, signing key or factory.
pub struct DirectStore {
    /// The opened store.
    pub store: Store,
    /// The mirror over its catalog (pulls use the configured upstreams).
    pub mirror: Arc<Mirror>,
}

impl DirectStore {
    /// Opens the store in `config.data_dir`, which must exist ([`check_data_dir`]).
    pub fn open(config: Config) -> anyhow::Result<DirectStore> {
        check_data_dir(&config.data_dir)?;
        let store = open_store(&config.data_dir)?;
        store.set_quota(crate::store::Quota {
            max_bytes: config.store.max_bytes,
            min_free_bytes: config.store.min_free_bytes,
        });
        let catalog = ImageCatalog::new(store.clone()).context("cannot open the image catalog")?;
        let mirror = Arc::new(Mirror::new(Arc::new(config), catalog));
        Ok(DirectStore { store, mirror })
    }
}

/// Opens the store in `dir`, saying why it cannot: another process holds it, or this user
/// may not write there (never blamed on another process).
pub fn open_store(dir: &std::path::Path) -> anyhow::Result<Store> {
    use crate::store::StoreError;
    Store::open(dir).map_err(|e| match e {
        StoreError::Locked { ref path } => {
            let holder = lock_holder(&path.join("db"))
                .map(|pid| format!("another bootfactory process (pid {pid})"))
                .unwrap_or_else(|| "another bootfactory process".into());
            anyhow::Error::new(e).context(format!(
                "cannot open the store in {}: {holder} uses it (a `bootfactory serve` without its admin socket, api.socket, or another command); stop it or wait for it",
                dir.display()
            ))
        }
        e if e.is_permission_denied() => {
            anyhow::Error::new(e).context(permission_message(dir))
        }
        e => anyhow::Error::new(e).context(format!("cannot open the store in {}", dir.display())),
    })
}

/// The process holding a `flock` on `file`, from `/proc/locks` (`1: FLOCK ADVISORY WRITE
/// <pid> <major>:<minor>:<inode> 0 EOF`); `None` when it cannot be told.
fn lock_holder(file: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let inode = std::fs::metadata(file).ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (kind, pid, dev_inode) = (fields.get(1)?, fields.get(4)?, fields.get(5)?);
        let ino: u64 = dev_inode.rsplit(':').next()?.parse().ok()?;
        (*kind == "FLOCK" && ino == inode).then(|| pid.parse().ok())?
    })
}

/// "permission denied" for `dir`, with its owner and the current user.
fn permission_message(dir: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let owner = std::fs::metadata(dir)
        .map(|m| format!("uid {}", m.uid()))
        .unwrap_or_else(|_| "another user".into());
    format!(
        "permission denied on the data directory {} (owned by {owner}, this command runs as uid {}): run it as root or as the service's user",
        dir.display(),
        nix::unistd::geteuid()
    )
}

/// Checks that the data directory exists and is writable: only `serve` creates it, so a
/// command pointed at the wrong place says so instead of starting an empty store there.
pub fn check_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "data directory {} does not exist: is this the service's data directory? pass --data-dir or --config (only `bootfactory serve` creates it)",
            dir.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            anyhow::bail!("{}", permission_message(dir))
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot read the data directory {}", dir.display()))
        }
        Ok(m) if !m.is_dir() => anyhow::bail!(
            "data directory {} is not a directory (dataDir)",
            dir.display()
        ),
        Ok(_) => {
            if nix::unistd::access(
                dir,
                nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
            )
            .is_err()
            {
                anyhow::bail!("{}", permission_message(dir));
            }
            Ok(())
        }
    }
}

/// Makes files this process creates from now on belong to the owner of the data directory
/// `dir`, when running as root and `dir` belongs to another user (the service's): the
/// effective uid and gid become the owner's (supplementary groups are dropped), so the index
/// and blobs a command writes stay usable by the service. Returns the guard that switches
/// back to root when dropped (for writing the command's own output afterwards), or `None`
/// when nothing was switched.
pub fn act_as_data_dir_owner(dir: &std::path::Path) -> anyhow::Result<Option<OwnerGuard>> {
    use nix::unistd::{Gid, Uid, getegid, geteuid, setegid, seteuid, setgroups};
    use std::os::unix::fs::MetadataExt as _;
    if !geteuid().is_root() {
        return Ok(None);
    }
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        // check_data_dir reports it.
        Err(_) => return Ok(None),
    };
    if meta.uid() == 0 {
        return Ok(None);
    }
    let (uid, gid) = (Uid::from_raw(meta.uid()), Gid::from_raw(meta.gid()));
    let groups = nix::unistd::getgroups().unwrap_or_default();
    let saved = OwnerGuard {
        gid: getegid(),
        groups,
    };
    setgroups(&[gid]).context("cannot drop supplementary groups")?;
    setegid(gid).with_context(|| format!("cannot switch to the data directory's group {gid}"))?;
    seteuid(uid).with_context(|| format!("cannot switch to the data directory's owner {uid}"))?;
    tracing::debug!(%uid, %gid, dir = %dir.display(), "acting as the data directory's owner");
    Ok(Some(saved))
}

/// Switches back to root when dropped (see [`act_as_data_dir_owner`]).
pub struct OwnerGuard {
    gid: nix::unistd::Gid,
    groups: Vec<nix::unistd::Gid>,
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        let _ = nix::unistd::seteuid(nix::unistd::Uid::from_raw(0));
        let _ = nix::unistd::setegid(self.gid);
        let _ = nix::unistd::setgroups(&self.groups);
    }
}

/// Binds an optional extra listener, the address of the configuration key `key`.
async fn bind_optional(
    addr: Option<std::net::SocketAddr>,
    key: &str,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({key})"))?;
    Ok(Some(listener))
}

/// An [`App`] whose listeners are bound.
pub struct BoundApp {
    state: AppState,
    http: tokio::net::TcpListener,
    plain: Option<tokio::net::TcpListener>,
    tls: Option<Arc<crate::tls::Tls>>,
    metrics: Option<tokio::net::TcpListener>,
    admin_socket: Option<AdminSocket>,
    netboot: Option<crate::netboot::Netboot>,
}

/// The admin Unix socket (`api.socket`): bound with mode 0600 (so only root and the service
/// user can connect), and removed again when the server stops.
struct AdminSocket {
    path: std::path::PathBuf,
    listener: tokio::net::UnixListener,
    /// Device and inode of the socket file bound, so only that file is removed at shutdown.
    file_id: (u64, u64),
}

impl AdminSocket {
    /// Removes the socket file if it is still the one this server bound (not a file that
    /// took its path since: another server's socket, an operator's file).
    fn remove(path: &std::path::Path, file_id: (u64, u64)) {
        use std::os::unix::fs::MetadataExt as _;
        match std::fs::symlink_metadata(path) {
            Ok(m) if (m.dev(), m.ino()) == file_id => {
                let _ = std::fs::remove_file(path);
            }
            Ok(_) => {
                tracing::warn!(path = %path.display(), "the admin socket's path is no longer this server's socket; left as it is");
            }
            Err(_) => {}
        }
    }
}

impl AdminSocket {
    /// Binds `path`. A socket file left by a server that is gone (nothing answers) is
    /// replaced; one a live server answers on is a refusal to start, like a busy TCP port.
    async fn bind(path: std::path::PathBuf) -> anyhow::Result<AdminSocket> {
        use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if !meta.file_type().is_socket() => anyhow::bail!(
                "cannot listen on the admin socket {}: the file exists and is not a socket (api.socket)",
                path.display()
            ),
            Ok(_) => match tokio::net::UnixStream::connect(&path).await {
                Ok(_) => anyhow::bail!(
                    "another bootfactory serve answers on the admin socket {} (it uses this data directory; stop it first, or set api.socket)",
                    path.display()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "removing a stale admin socket");
                    std::fs::remove_file(&path).with_context(|| {
                        format!("cannot remove the stale admin socket {}", path.display())
                    })?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot check the admin socket {} (api.socket)",
                            path.display()
                        )
                    });
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot check the admin socket {} (api.socket)",
                        path.display()
                    )
                });
            }
        }
        let listener = tokio::net::UnixListener::bind(&path).with_context(|| {
            format!(
                "cannot listen on the admin socket {} (api.socket)",
                path.display()
            )
        })?;
        let file_id = {
            use std::os::unix::fs::MetadataExt as _;
            let m = std::fs::symlink_metadata(&path).with_context(|| {
                format!(
                    "cannot check the admin socket {} (api.socket)",
                    path.display()
                )
            })?;
            (m.dev(), m.ino())
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).with_context(
            || {
                format!(
                    "cannot restrict the admin socket {} to mode 0600",
                    path.display()
                )
            },
        )?;
        Ok(AdminSocket {
            path,
            listener,
            file_id,
        })
    }
}

impl BoundApp {
    /// The HTTP listener's address.
    pub fn http_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.http.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests for the grace period.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let config = self.state.config.clone();
        tracing::info!(
            listen = %self.http.local_addr()?,
            tls = self.tls.is_some(),
            external_url = %config.external_url(),
            data_dir = %config.data_dir.display(),
            version = env!("CARGO_PKG_VERSION"),
            "bootfactory serving"
        );
        let mut limits = Limits::from_config(&config.http);
        // `serve` raised the soft limit at start (`limits::init_fd_budget`).
        let fd_limit = crate::limits::nofile_soft_limit().unwrap_or(1024);
        if let Some(max) = limits.fit_fd_limit(fd_limit) {
            tracing::warn!(
                configured = config.http.max_connections,
                used = max,
                fd_limit,
                "http.maxConnections lowered to fit the open-file limit (raise LimitNOFILE)"
            );
        }
        let conn_metrics = ConnMetrics::register(&self.state.metrics);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let metrics_server = match self.metrics {
            Some(listener) => {
                tracing::info!(listen = %listener.local_addr()?, "metrics serving");
                let endpoint = Endpoint {
                    listener: listener.into(),
                    router: http::metrics_router(self.state.metrics.clone()),
                    tls: None,
                };
                let mut stop = stop_rx.clone();
                Some(tokio::spawn(listener::serve(
                    vec![endpoint],
                    Limits {
                        max_connections: METRICS_MAX_CONNECTIONS,
                        ..limits
                    },
                    conn_metrics.clone(),
                    async move {
                        let _ = stop.wait_for(|s| *s).await;
                    },
                    Duration::from_secs(1),
                )))
            }
            None => None,
        };
        if let Some(tls) = &self.tls {
            match tls.ca_path() {
                Some(ca) => tracing::info!(
                    ca = %ca.display(),
                    "HTTPS with the appliance CA: clients trust this CA certificate (curl --cacert, skopeo/podman --cert-dir)"
                ),
                None => {
                    let (cert, key) = tls.files();
                    tracing::info!(cert = %cert.display(), key = %key.display(), "HTTPS with the configured certificate");
                }
            }
        }
        if let Some(plain) = &self.plain {
            tracing::info!(listen = %plain.local_addr()?, "plain HTTP for the boot path");
        }
        let scheme = if self.tls.is_some() { "HTTPS" } else { "HTTP" };
        let status = match &self.netboot {
            Some(_) => format!(
                "serving {scheme} on {} and network boot (proxy-DHCP, TFTP)",
                self.http.local_addr()?
            ),
            None => format!("serving {scheme} on {}", self.http.local_addr()?),
        };
        let router = http::router(self.state.clone());
        let admin_socket = self.admin_socket.map(|socket| {
            tracing::info!(path = %socket.path.display(), "admin socket serving");
            let endpoint = Endpoint {
                listener: listener::Listener::Unix(listener::UnixEndpoint {
                    listener: socket.listener,
                    // Root, and the user the service runs as.
                    admin_uids: vec![0, nix::unistd::geteuid().as_raw()],
                }),
                router: router.clone(),
                tls: None,
            };
            let mut stop = stop_rx.clone();
            let task = tokio::spawn(listener::serve(
                vec![endpoint],
                Limits {
                    max_connections: ADMIN_SOCKET_MAX_CONNECTIONS,
                    body_read: limits.body_read.max(ADMIN_SOCKET_BODY_READ),
                    ..limits
                },
                conn_metrics.clone(),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
                Duration::from_secs(config.http.shutdown_grace_seconds),
            ));
            (socket.path, socket.file_id, task)
        });
        let netboot = self.netboot.map(|n| tokio::spawn(n.run(stop_rx)));
        let reloader = spawn_reload_on_sighup(self.state.clone(), self.tls.clone(), status.clone());
        let tls_watch = self.tls.clone().map(|t| t.spawn_watch());
        let periodic_gc = match config.store.gc.interval_hours {
            0 => None,
            hours => {
                let every = Duration::from_secs(hours.saturating_mul(3600));
                let policy = crate::retention::GcPolicy::from_config(&config.store.gc);
                tracing::info!(every_hours = hours, ?policy, "periodic store gc enabled");
                Some(crate::retention::spawn_periodic(
                    self.state.retention.clone(),
                    self.state.assignments.clone(),
                    policy,
                    every,
                ))
            }
        };
        crate::systemd::spawn_watchdog();
        crate::systemd::ready(&status);
        let mut endpoints = vec![Endpoint {
            listener: self.http.into(),
            router: router.clone(),
            tls: self.tls.as_ref().map(|t| t.acceptor()),
        }];
        if let Some(plain) = self.plain {
            endpoints.push(Endpoint {
                listener: plain.into(),
                router,
                tls: None,
            });
        }
        let closing = self.state.ui.closing.clone();
        let served = listener::serve(
            endpoints,
            limits,
            conn_metrics,
            async move {
                shutdown.await;
                crate::systemd::stopping();
                closing.cancel();
                let _ = stop_tx.send(true);
            },
            Duration::from_secs(config.http.shutdown_grace_seconds),
        )
        .await;
        // The reloader holds the state (and so the store): end it with the server.
        if let Some(task) = reloader {
            task.abort();
            let _ = task.await;
        }
        if let Some(task) = periodic_gc {
            task.abort();
            let _ = task.await;
        }
        if let Some(task) = tls_watch {
            task.abort();
        }
        if let Some(task) = metrics_server {
            let _ = task.await;
        }
        if let Some((path, file_id, task)) = admin_socket {
            let _ = task.await;
            // Gone with the server, so commands open the store directly at once.
            AdminSocket::remove(&path, file_id);
        }
        if let Some(task) = netboot {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %format!("{e:#}"), "network boot stopped with an error")
                }
                Err(e) => {
                    tracing::error!(error = %crate::errors::chain(&e), "network boot task failed")
                }
            }
        }
        served?;
        tracing::info!("bootfactory stopped");
        Ok(())
    }
}

fn open_factory(
    config: &Arc<Config>,
    store: &Store,
    schematics: &SchematicStore,
    mirror: &Arc<Mirror>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Factory> {
    let key_path = config.signing_key_path();
    let signer = CacheSigner::load_or_generate(&key_path, config.cache.signing_key_path.is_none())
        .context("cannot load the cache signing key (cache.signingKeyPath)")?;
    let cache_dir = config.data_dir.join("cache");
    let builder = Builder::new(
        store.clone(),
        signer,
        config.build.max_concurrency,
        Duration::from_secs(config.build.timeout_seconds),
        cache_dir.join("builds"),
    )
    .context("cannot open the asset builder")?
    .on_built({
        let metrics = metrics.clone();
        move |_key, timing, _size| {
            metrics
                .assets_concurrency_latency
                .observe(timing.queued.as_secs_f64());
            metrics
                .assets_build_latency
                .observe(timing.built.as_secs_f64());
        }
    });
    let artifacts = Arc::new(Artifacts::new(config.clone(), mirror.clone(), cache_dir));
    let parent = crate::factory::remote::parent::Parent::from_config(config)
        .context("cannot use the parent factory (factory.parent)")?;
    let oci_cache =
        crate::factory::remote::oci_cache::OciCache::from_config(config, builder.signer())
            .context("cannot use the shared build cache (cache.oci.repository)")?;
    Ok(Factory::new(
        config.clone(),
        schematics.clone(),
        artifacts,
        Arc::new(builder),
        store.clone(),
        metrics.clone(),
    )
    .with_parent(parent)
    .with_oci_cache(oci_cache))
}

async fn load_schematics_dir(
    schematics: &SchematicStore,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let loaded = schematics
        .load_dir(dir)
        .await
        .with_context(|| format!("cannot read schematics directory {}", dir.display()))?;
    for file in loaded {
        match file.result {
            Ok(id) => {
                tracing::info!(path = %file.path.display(), schematic = %id, "schematic loaded")
            }
            Err(e) => tracing::error!(path = %file.path.display(), error = %e, "schematic skipped"),
        }
    }
    Ok(())
}

/// Re-reads the schematics directory, the assignments file and the TLS certificate files on
/// every SIGHUP. A bad assignments file or certificate is reported and changes nothing (the
/// previous ones stay).
fn spawn_reload_on_sighup(
    state: AppState,
    tls: Option<Arc<crate::tls::Tls>>,
    status: String,
) -> Option<tokio::task::JoinHandle<()>> {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload by restarting");
        return None;
    };
    Some(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            crate::systemd::reloading();
            if let Some(tls) = &tls {
                tls.reload_logged("SIGHUP");
            }
            match reload(&state).await {
                Ok(()) => {
                    if let Ok(ids) = state.schematics.list() {
                        state.metrics.schematic_cache_size.set(ids.len() as i64);
                    }
                    tracing::info!("reloaded the schematics directory and assignments file")
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "reload failed; keeping what was loaded")
                }
            }
            crate::systemd::ready(&status);
        }
    }))
}

/// What SIGHUP reloads: the schematics directory, then the assignments file.
pub async fn reload(state: &AppState) -> anyhow::Result<()> {
    let config = &state.config;
    if let Some(dir) = &config.schematics.dir {
        load_schematics_dir(&state.schematics, dir).await?;
    }
    if let Some(file) = &config.assignments.file {
        let n = crate::assign::seed::apply(file, &state.assignments, &state.factory).await?;
        tracing::info!(file = %file.display(), entries = n, "applied the assignments file");
    }
    Ok(())
}

/// A future that resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// *called* (inside the runtime), not when the future is first polled: `serve` reports READY
/// before it waits for shutdown, and a SIGTERM in between must stop it gracefully rather than
/// kill it with the default action.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate()).ok();
    let interrupt = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(interrupt) => {}
            () = wait(terminate) => {}
        }
        tracing::info!("shutdown requested");
    }
}
