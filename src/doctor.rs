//! `bootfactory doctor`: what an operator needs to know about this box, as a list of checks.
//!
//! Each check says `ok`, `warn` or `fail`, one line of what was found and, unless it is fine,
//! one line of what to do. The command line (`cli::doctor`) runs them and prints one screen
//! (or JSON); it fails (exit 1) when any check fails.
//!
//! | Check | What is looked at |
//! | --- | --- |
//! | `config` | which file was read (or none: defaults, variables and flags) |
//! | `data-dir` | exists, is a directory, its owner and mode, writable by the user running doctor |
//! | `disk` | free bytes on the data directory's filesystem against `store.minFreeBytes` |
//! | `store` | [`crate::store::Store::quick_check`]: index records against blob files (presence, size), unindexed and quarantined files. Sizes only: a re-hash is `bootfactory store verify` |
//! | `versions` | the imager tags in the catalog (served versions) and, per version, whether its extensions catalog is there and how many extensions it lists |
//! | `upstream <host>` | a bounded `GET /v2/` of the artifacts registry and each `upstream.registries` host (skipped when `offline: true`) |
//! | `pxe-ports` | each of `pxe.dhcpPort`, `proxyPort`, `tftpPort` bindable by this process, or in use, and by which process (from `/proc/net/udp` and `/proc/<pid>/fd`, as far as this user may look) |
//! | `pxe-interfaces` | every `pxe.interfaces` entry exists and has an IPv4 address |
//! | `capabilities` | `CAP_NET_BIND_SERVICE`/`CAP_NET_RAW` in this process's `CapEff` (`/proc/self/status`) and in the unit's `AmbientCapabilities=` (unit file and drop-ins) |
//! | `tool <name>` | each [`Tool`] located like a build locates it |
//!
//! The store and version checks need the store's index, which only one process may open:
//! when a service runs it answers them itself (`GET /api/v1/doctor`, [`service_checks`]);
//! otherwise the command opens the store directly, and only as the data directory's owner
//! (so it never leaves files another user owns).

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::factory::tools::Tool;
use crate::oci::ImageCatalog;
use crate::store::Store;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but something is missing or unusual.
    Warn,
    /// Something the appliance needs is broken.
    Fail,
}

impl Status {
    /// `OK`, `WARN`, `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked (`data-dir`, `upstream ghcr.io`, …).
    pub check: String,
    /// The outcome.
    pub status: Status,
    /// What was found, one line.
    pub message: String,
    /// What to do about it, one line (absent when there is nothing to do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    fn new(check: impl Into<String>, status: Status, message: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            status,
            message: message.into(),
            hint: None,
        }
    }

    fn ok(check: impl Into<String>, message: impl Into<String>) -> Check {
        Check::new(check, Status::Ok, message)
    }

    fn warn(
        check: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Check {
        Check::new(check, Status::Warn, message).hint(hint)
    }

    fn fail(
        check: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Check {
        Check::new(check, Status::Fail, message).hint(hint)
    }

    fn hint(mut self, hint: impl Into<String>) -> Check {
        self.hint = Some(hint.into());
        self
    }
}

/// Every check of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// The worst status (`Ok` for no checks).
    pub fn worst(&self) -> Status {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Ok)
    }

    /// How many checks came out `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// The report for people: one line per check, its hint indented below.
    pub fn render_text(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.check.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{:<4}  {:<width$}  {}\n",
                c.status.label(),
                c.check,
                c.message
            ));
            if let Some(h) = &c.hint {
                out.push_str(&format!("      {:<width$}  -> {h}\n", ""));
            }
        }
        out.push_str(&format!(
            "{} ok, {} warn, {} fail\n",
            self.count(Status::Ok),
            self.count(Status::Warn),
            self.count(Status::Fail)
        ));
        out
    }
}

/// `config`: the file read, or that none was.
pub fn config_file(file: Option<&Path>) -> Check {
    match file {
        Some(f) => Check::ok("config", format!("{}", f.display())),
        None => Check::ok(
            "config",
            "no file: defaults, BOOTFACTORY_* variables and flags",
        ),
    }
}

/// `config` when the configuration does not load.
pub fn config_error(file: Option<&Path>, error: &str) -> Check {
    let which = file.map_or_else(
        || "the configuration".to_string(),
        |f| f.display().to_string(),
    );
    Check::fail(
        "config",
        format!("{which}: {error}"),
        "fix the key named above (`bootfactory config keys` lists every key)",
    )
}

/// Who owns the data directory, and whether this process may write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDirState {
    /// Owner uid.
    pub uid: u32,
    /// Whether this process's effective uid is the owner.
    pub ours: bool,
}

/// `data-dir`: exists, a directory, owner and mode, writable. Returns the state when the
/// directory exists.
pub fn data_dir(config: &Config) -> (Check, Option<DataDirState>) {
    use std::os::unix::fs::MetadataExt as _;
    let dir = &config.data_dir;
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return (
                Check::fail(
                    "data-dir",
                    format!("{} does not exist", dir.display()),
                    format!(
                        "create it for the service user (install -d -o bootfactory -g bootfactory -m 0750 {}) or point dataDir/--data-dir at the right one",
                        dir.display()
                    ),
                ),
                None,
            );
        }
        Err(e) => {
            return (
                Check::fail(
                    "data-dir",
                    format!("{}: {e}", dir.display()),
                    "check the path and the permissions of its parent directories",
                ),
                None,
            );
        }
    };
    if !meta.is_dir() {
        return (
            Check::fail(
                "data-dir",
                format!("{} is not a directory", dir.display()),
                "point dataDir/--data-dir at a directory",
            ),
            None,
        );
    }
    let euid = nix::unistd::geteuid().as_raw();
    let state = DataDirState {
        uid: meta.uid(),
        ours: meta.uid() == euid,
    };
    let owner = user_name(meta.uid());
    let described = format!(
        "{} (owner {owner}, mode {:04o})",
        dir.display(),
        meta.mode() & 0o7777
    );
    let writable = nix::unistd::access(
        dir.as_path(),
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .is_ok();
    let check = if writable {
        Check::ok("data-dir", described)
    } else if state.ours {
        Check::fail(
            "data-dir",
            format!("{described}: not writable by its owner"),
            format!("chmod u+rwx {}", dir.display()),
        )
    } else {
        Check::warn(
            "data-dir",
            format!(
                "{described}: not writable by {} (uid {euid})",
                user_name(euid)
            ),
            format!("commands that open the store run as its owner: sudo -u {owner} bootfactory …"),
        )
    };
    (check, Some(state))
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {uid}"),
    }
}

/// Free space below which `disk` warns even though the store's own floor is not reached: a
/// Talos version (imager, extensions, a few built assets) takes a few GiB.
const DISK_WARN_HEADROOM: u64 = 4 << 30;

/// `disk`: free space on the data directory's filesystem (or its nearest existing parent's).
pub fn free_disk(config: &Config) -> Check {
    let mut path = config.data_dir.as_path();
    while !path.exists() {
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => path = p,
            _ => {
                path = Path::new(".");
                break;
            }
        }
    }
    let st = match nix::sys::statvfs::statvfs(path) {
        Ok(s) => s,
        Err(e) => {
            return Check::warn(
                "disk",
                format!("cannot statvfs {}: {e}", path.display()),
                "check the data directory's filesystem",
            );
        }
    };
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let total = st.blocks() as u64 * st.fragment_size() as u64;
    let floor = config.store.min_free_bytes;
    let message = format!(
        "{} free of {} on {}",
        human(free),
        human(total),
        path.display()
    );
    if floor > 0 && free < floor {
        Check::fail(
            "disk",
            format!(
                "{message}: below store.minFreeBytes ({}), new content is refused",
                human(floor)
            ),
            "free space (bootfactory store gc) or grow the filesystem",
        )
    } else if free < floor.saturating_add(DISK_WARN_HEADROOM) {
        Check::warn(
            "disk",
            format!("{message}: little room for another Talos version"),
            "free space (bootfactory store gc) or grow the filesystem",
        )
    } else {
        Check::ok("disk", message)
    }
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

/// How the store could be looked at from this process.
pub enum StoreAccess {
    /// Opened: the checks ran.
    Checked(Vec<Check>),
    /// Another process holds the index (a running service, or another command).
    Locked,
    /// Not opened, with the check saying why.
    Skipped(Vec<Check>),
}

/// Opens the store directly (no service runs) and runs [`service_checks`]' store and version
/// checks on it. Only as the data directory's owner, and only when the index exists, so
/// nothing is created that another user would own.
pub async fn store_direct(config: &Config, dir: Option<&DataDirState>) -> StoreAccess {
    let Some(dir) = dir else {
        return StoreAccess::Skipped(vec![Check::fail(
            "store",
            "not checked: no data directory",
            "see data-dir above",
        )]);
    };
    if !config.data_dir.join("index.sled").exists() {
        let mut checks = vec![Check::warn(
            "store",
            "empty: no index yet (nothing imported, pulled or served)",
            "bootfactory mirror import <bundle> (offline) or start the service (online)",
        )];
        checks.push(versions_of(config, &[]));
        return StoreAccess::Skipped(checks);
    }
    if !dir.ours {
        let owner = user_name(dir.uid);
        return StoreAccess::Skipped(vec![Check::warn(
            "store",
            format!("not checked: the store is {owner}'s and no service answered"),
            format!("run as its owner: sudo -u {owner} bootfactory doctor"),
        )]);
    }
    let data_dir = config.data_dir.clone();
    let opened = tokio::task::spawn_blocking(move || Store::open(&data_dir)).await;
    let store = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if is_lock_error(&e) => return StoreAccess::Locked,
        Ok(Err(e)) => {
            return StoreAccess::Checked(vec![Check::fail(
                "store",
                format!("cannot open: {}", crate::errors::chain(&e)),
                "bootfactory store verify --rebuild-index rebuilds a lost or foreign index",
            )]);
        }
        Err(e) => {
            return StoreAccess::Checked(vec![Check::fail(
                "store",
                format!("cannot open: {e}"),
                "run again",
            )]);
        }
    };
    match ImageCatalog::new(store) {
        Ok(catalog) => StoreAccess::Checked(service_checks(config, &catalog).await),
        Err(e) => StoreAccess::Checked(vec![Check::fail(
            "store",
            format!("cannot read the catalog: {}", crate::errors::chain(&e)),
            "bootfactory store verify",
        )]),
    }
}

/// Another process holds the index (`Store::open` types sled's lock failure).
fn is_lock_error(e: &crate::store::StoreError) -> bool {
    matches!(e, crate::store::StoreError::Locked { .. })
}

/// The checks that need the store: `store` (quick check, quota) and `versions`. What the
/// service answers on `GET /api/v1/doctor`, and what the command runs when it opened the
/// store itself.
pub async fn service_checks(config: &Config, catalog: &ImageCatalog) -> Vec<Check> {
    let store = catalog.store().clone();
    let max_bytes = config.store.max_bytes;
    let quick = tokio::task::spawn_blocking(move || store.quick_check()).await;
    let mut checks = match quick {
        Ok(Ok(q)) => store_summary(&q, max_bytes),
        Ok(Err(e)) => vec![Check::fail(
            "store",
            format!("cannot check: {}", crate::errors::chain(&e)),
            "bootfactory store verify",
        )],
        Err(e) => vec![Check::fail(
            "store",
            format!("cannot check: {e}"),
            "run again",
        )],
    };
    let offline = offline_versions(config, catalog).await;
    checks.push(versions_of(config, &offline));
    checks
}

/// The `store` checks of a quick check.
pub fn store_summary(q: &crate::store::QuickCheck, max_bytes: u64) -> Vec<Check> {
    let mut checks = Vec::new();
    let size = if max_bytes > 0 {
        format!(
            "{} of store.maxBytes {}",
            human(q.indexed_bytes),
            human(max_bytes)
        )
    } else {
        human(q.indexed_bytes)
    };
    if q.consistent() {
        checks.push(Check::ok(
            "store",
            format!(
                "{} blobs, {size}; every indexed blob's file is there with its size (sizes only: `bootfactory store verify` re-hashes)",
                q.records
            ),
        ));
    } else {
        let listed: Vec<String> = q.problems.iter().take(3).map(|d| d.to_string()).collect();
        checks.push(Check::fail(
            "store",
            format!(
                "{} blobs, {size}: {} missing, {} with the wrong size{}{}",
                q.records,
                q.missing,
                q.size_mismatch,
                if q.indexed_bytes != q.total_size {
                    format!(", size total {} ≠ records {}", q.total_size, q.indexed_bytes)
                } else {
                    String::new()
                },
                if listed.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", listed.join(", "))
                }
            ),
            "bootfactory store verify (with the service stopped) drops broken records and quarantines bad blobs; then import or pull again",
        ));
    }
    if q.unindexed_files > 0 {
        checks.push(Check::warn(
            "store",
            format!("{} blob files without an index record", q.unindexed_files),
            "bootfactory store verify --rebuild-index adopts them (service stopped)",
        ));
    }
    if q.quarantined > 0 {
        checks.push(Check::warn(
            "store",
            format!(
                "{} blobs in quarantine/ (their content stopped matching)",
                q.quarantined
            ),
            "check the disk; import or pull the affected images again",
        ));
    }
    if max_bytes > 0 && q.indexed_bytes >= max_bytes {
        checks.push(Check::fail(
            "store",
            format!(
                "at store.maxBytes ({}): new content is refused",
                human(max_bytes)
            ),
            "bootfactory store gc, or raise store.maxBytes",
        ));
    }
    checks
}

/// A version the catalog holds, with its extensions catalog if present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineVersion {
    /// `v1.11.6`.
    pub version: String,
    /// Extensions its catalog lists, `None` when the catalog is not in the store.
    pub extensions: Option<usize>,
}

/// The served versions whose imager is in the store (minimum version and broken versions
/// applied), newest first, with their extensions catalogs.
pub async fn offline_versions(config: &Config, catalog: &ImageCatalog) -> Vec<OfflineVersion> {
    let core = &config.artifacts.core;
    let Ok(imager) = core.image_name(&core.components.imager) else {
        return Vec::new();
    };
    let tags = catalog.tags(&imager).unwrap_or_default();
    let mut versions = crate::factory::quirks::filter_versions(
        &tags,
        &config.build.min_talos_version,
        &config.build.broken_talos_versions,
    );
    versions.reverse();
    let ext_name = core.image_name(&core.components.extension_manifest).ok();
    let mut out = Vec::new();
    for v in versions {
        let extensions = match &ext_name {
            Some(name) => extensions_count(catalog, name, &v.to_string(), &core.registry).await,
            None => None,
        };
        out.push(OfflineVersion {
            version: v.to_string(),
            extensions,
        });
    }
    out
}

async fn extensions_count(
    catalog: &ImageCatalog,
    name: &crate::oci::ImageName,
    tag: &str,
    registry: &str,
) -> Option<usize> {
    let (root, _) = catalog.tag(name, tag).ok()??;
    let manifest = crate::oci::flatten::platform_manifest(catalog, &root, "amd64")
        .await
        .ok()??;
    let digests = crate::oci::flatten::read_file(catalog, &manifest, "image-digests", 16 << 20)
        .await
        .ok()??;
    let parsed = crate::factory::artifacts::parse_extensions_catalog(
        &String::from_utf8_lossy(&digests),
        "",
        registry,
    );
    Some(parsed.entries.len())
}

/// `versions`: what can be served from the store alone.
pub fn versions_of(config: &Config, versions: &[OfflineVersion]) -> Check {
    if versions.is_empty() {
        return if config.offline {
            Check::fail(
                "versions",
                "offline and no Talos version imported: nothing can be built or booted",
                "bootfactory mirror import <bundle> (a bundle made by `bootfactory mirror export` or `mirror pull` on a connected box)",
            )
        } else {
            Check::ok(
                "versions",
                "none in the store yet; fetched from upstream when first asked for",
            )
        };
    }
    let listed: Vec<String> = versions
        .iter()
        .take(8)
        .map(|v| match v.extensions {
            Some(n) => format!("{} ({n} extensions)", v.version),
            None => format!("{} (no extensions catalog)", v.version),
        })
        .collect();
    let more = if versions.len() > 8 {
        format!(" and {} more", versions.len() - 8)
    } else {
        String::new()
    };
    let message = format!("in the store: {}{more}", listed.join(", "));
    let lacking: Vec<&str> = versions
        .iter()
        .filter(|v| v.extensions.is_none())
        .map(|v| v.version.as_str())
        .collect();
    if config.offline && !lacking.is_empty() {
        Check::warn(
            "versions",
            message,
            format!(
                "offline, {} lack the extensions catalog: schematics with extensions fail for them; import a bundle that has it",
                lacking.join(", ")
            ),
        )
    } else {
        Check::ok("versions", message)
    }
}

/// The registries the appliance fetches from: the artifacts registry and every configured
/// `upstream.registries` host.
pub fn upstream_hosts(config: &Config) -> Vec<String> {
    let mut hosts = vec![config.artifacts.core.registry.clone()];
    for h in config.upstream.registries.keys() {
        if !hosts.contains(h) {
            hosts.push(h.clone());
        }
    }
    hosts
}

/// Time one upstream probe may take.
pub const UPSTREAM_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `upstream <host>`: a `GET /v2/` of each registry (200 or 401 = reachable); one `ok` line
/// when offline.
pub async fn upstream(config: &Config) -> Vec<Check> {
    if config.offline {
        return vec![Check::ok(
            "upstream",
            "offline: true: no registry is contacted",
        )];
    }
    crate::init_crypto();
    let client = match reqwest::Client::builder()
        .timeout(UPSTREAM_PROBE_TIMEOUT)
        .connect_timeout(UPSTREAM_PROBE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return vec![Check::fail(
                "upstream",
                format!("cannot build an HTTP client: {}", crate::errors::chain(&e)),
                "report this",
            )];
        }
    };
    let probes = upstream_hosts(config).into_iter().map(|host| {
        let client = client.clone();
        let url = format!(
            "{}/v2/",
            crate::upstream::client::Endpoint::resolve(config, &host).url()
        );
        async move {
            let name = format!("upstream {host}");
            match client.get(&url).send().await {
                Ok(r) if r.status().is_success() || r.status().as_u16() == 401 => {
                    Check::ok(name, format!("{url} answers {}", r.status().as_u16()))
                }
                Ok(r) => Check::warn(
                    name,
                    format!("{url} answers {}", r.status()),
                    "not a registry's /v2/ answer: check upstream.registries.<host>.endpoint",
                ),
                Err(e) => Check::fail(
                    name,
                    format!("{url}: {}", crate::errors::chain(&e.without_url())),
                    "check DNS, proxy and firewall, or set offline: true and import bundles",
                ),
            }
        }
    });
    futures_util::future::join_all(probes).await
}

/// Linux capability numbers doctor looks at.
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_NET_RAW: u32 = 13;

/// The capabilities PXE needs: binding ports below 1024 and, with `pxe.interfaces`,
/// `SO_BINDTODEVICE`.
fn needed_caps(config: &Config) -> Vec<&'static str> {
    let mut caps = Vec::new();
    let low = [
        config.pxe.dhcp_port,
        config.pxe.proxy_port,
        config.pxe.tftp_port,
    ]
    .iter()
    .any(|&p| u32::from(p) < unprivileged_port_start());
    if low {
        caps.push("CAP_NET_BIND_SERVICE");
    }
    if !config.pxe.interfaces.is_empty() {
        caps.push("CAP_NET_RAW");
    }
    caps
}

/// `net.ipv4.ip_unprivileged_port_start` (1024 unless changed).
fn unprivileged_port_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// The effective capability set in a `/proc/<pid>/status` text.
pub fn cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

fn cap_names(set: u64) -> Vec<&'static str> {
    [
        (CAP_NET_BIND_SERVICE, "CAP_NET_BIND_SERVICE"),
        (CAP_NET_RAW, "CAP_NET_RAW"),
    ]
    .into_iter()
    .filter(|(bit, _)| set & (1 << bit) != 0)
    .map(|(_, n)| n)
    .collect()
}

/// Where systemd looks for `bootfactory.service`, in its order of precedence.
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The unit's `AmbientCapabilities=` after its drop-ins, and the files read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitCaps {
    /// The files read, unit first.
    pub files: Vec<PathBuf>,
    /// The ambient capabilities granted.
    pub ambient: Vec<String>,
}

/// Reads `bootfactory.service` and its drop-ins (`bootfactory.service.d/*.conf` in every unit
/// directory), `None` when no unit file exists.
pub fn unit_caps() -> Option<UnitCaps> {
    let dirs: Vec<PathBuf> = UNIT_DIRS.iter().map(PathBuf::from).collect();
    unit_caps_in(&dirs)
}

/// [`unit_caps`] over `dirs`, highest precedence first.
fn unit_caps_in(dirs: &[PathBuf]) -> Option<UnitCaps> {
    let unit = dirs
        .iter()
        .map(|d| d.join("bootfactory.service"))
        .find(|p| p.is_file())?;
    let mut files = vec![unit];
    let mut dropins: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir.join("bootfactory.service.d")) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            // A same-named drop-in in a directory of higher precedence replaces this one.
            if path.extension().is_some_and(|e| e == "conf")
                && !dropins.iter().any(|d| d.file_name() == path.file_name())
            {
                dropins.push(path);
            }
        }
    }
    // systemd applies drop-ins ordered by file name across directories.
    dropins.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    files.extend(dropins);
    let mut ambient = Vec::new();
    for f in &files {
        if let Ok(text) = std::fs::read_to_string(f) {
            apply_ambient(&mut ambient, &text);
        }
    }
    Some(UnitCaps { files, ambient })
}

/// Applies one unit file's `AmbientCapabilities=` lines: each adds, an empty one resets, a
/// `~` list removes.
pub fn apply_ambient(set: &mut Vec<String>, unit_text: &str) {
    for line in unit_text.lines() {
        let Some(value) = line.trim().strip_prefix("AmbientCapabilities=") else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            set.clear();
        } else if let Some(removed) = value.strip_prefix('~') {
            let removed: Vec<&str> = removed.split_whitespace().collect();
            set.retain(|c| !removed.contains(&c.as_str()));
        } else {
            for c in value.split_whitespace() {
                if !set.iter().any(|s| s == c) {
                    set.push(c.to_string());
                }
            }
        }
    }
}

/// The PXE checks: ports, interfaces, capabilities. One `ok` line when PXE is off.
pub fn pxe(config: &Config) -> Vec<Check> {
    if !config.pxe.enabled {
        return vec![Check::ok(
            "pxe",
            "disabled (pxe.enabled: false): ports, interfaces and capabilities not checked",
        )];
    }
    let mut checks = vec![pxe_ports(config)];
    checks.push(pxe_interfaces(config));
    checks.push(capabilities(config));
    checks
}

fn pxe_ports(config: &Config) -> Check {
    let p = &config.pxe;
    let mut found = Vec::new();
    let mut status = Status::Ok;
    let mut hints = Vec::new();
    for (what, port) in [
        ("dhcp", p.dhcp_port),
        ("proxy", p.proxy_port),
        ("tftp", p.tftp_port),
    ] {
        match UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)) {
            Ok(_) => found.push(format!("{what} {port} free")),
            Err(e) if e.kind() == ErrorKind::AddrInUse => {
                let users = udp_port_users(port);
                if users.is_empty() {
                    found.push(format!(
                        "{what} {port} in use (by a process this user cannot see)"
                    ));
                    status = status.max(Status::Warn);
                    hints.push("run doctor as root to see who uses the ports".to_string());
                } else if users.iter().all(|(_, comm)| comm == "bootfactory") {
                    found.push(format!(
                        "{what} {port} in use by bootfactory (pid {})",
                        pids(&users)
                    ));
                } else {
                    let names: Vec<String> = users
                        .iter()
                        .map(|(pid, c)| format!("{c} pid {pid}"))
                        .collect();
                    found.push(format!("{what} {port} in use by {}", names.join(", ")));
                    status = Status::Fail;
                    hints.push(format!(
                        "stop the other DHCP/TFTP server on port {port} (proxy-DHCP coexists with a DHCP server on another host, not on this one)"
                    ));
                }
            }
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                found.push(format!(
                    "{what} {port} needs CAP_NET_BIND_SERVICE (this process lacks it)"
                ));
                status = status.max(Status::Warn);
                hints.push("the service gets it from its unit (see capabilities); running serve by hand needs root".to_string());
            }
            Err(e) => {
                found.push(format!("{what} {port}: {e}"));
                status = Status::Fail;
            }
        }
    }
    let mut check = Check::new("pxe-ports", status, found.join(", "));
    if let Some(h) = hints.first() {
        check = check.hint(h.clone());
    }
    check
}

fn pids(users: &[(u32, String)]) -> String {
    users
        .iter()
        .map(|(p, _)| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Processes with a UDP socket bound to `port` (IPv4 or IPv6): `(pid, comm)`. Needs to read
/// other processes' `/proc/<pid>/fd`, so without privileges it sees only this user's.
pub fn udp_port_users(port: u16) -> Vec<(u32, String)> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (cols.get(1), cols.get(9)) else {
                continue;
            };
            let Some((_, hex_port)) = local.rsplit_once(':') else {
                continue;
            };
            if u16::from_str_radix(hex_port, 16).ok() == Some(port) && *inode != "0" {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut users = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return users;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
        });
        if holds {
            let comm = std::fs::read_to_string(p.path().join("comm"))
                .map(|c| c.trim().to_string())
                .unwrap_or_default();
            users.push((pid, comm));
        }
    }
    users
}

fn pxe_interfaces(config: &Config) -> Check {
    let wanted = &config.pxe.interfaces;
    let addrs = match nix::ifaddrs::getifaddrs() {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => {
            return Check::warn(
                "pxe-interfaces",
                format!("cannot list network interfaces: {e}"),
                "check /proc and netlink access",
            );
        }
    };
    let ipv4_of = |name: &str| -> Vec<Ipv4Addr> {
        addrs
            .iter()
            .filter(|a| a.interface_name == name)
            .filter_map(|a| {
                a.address
                    .as_ref()
                    .and_then(|s| s.as_sockaddr_in())
                    .map(|s| s.ip())
            })
            .collect()
    };
    if wanted.is_empty() {
        let any: Vec<String> = addrs
            .iter()
            .filter_map(|a| {
                let ip = a.address.as_ref()?.as_sockaddr_in()?.ip();
                (!ip.is_loopback()).then(|| format!("{} {ip}", a.interface_name))
            })
            .collect();
        return if any.is_empty() {
            Check::fail(
                "pxe-interfaces",
                "pxe.interfaces empty (every interface) and no interface has a non-loopback IPv4 address",
                "configure an IPv4 address, or set pxe.advertiseAddress",
            )
        } else {
            Check::ok(
                "pxe-interfaces",
                format!("every interface (pxe.interfaces empty): {}", any.join(", ")),
            )
        };
    }
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for name in wanted {
        let exists = addrs.iter().any(|a| &a.interface_name == name);
        let v4 = ipv4_of(name);
        if !exists {
            problems.push(format!("{name} does not exist"));
        } else if v4.is_empty() {
            problems.push(format!("{name} has no IPv4 address"));
        } else {
            let ips: Vec<String> = v4.iter().map(Ipv4Addr::to_string).collect();
            found.push(format!("{name} {}", ips.join(" ")));
        }
    }
    if problems.is_empty() {
        Check::ok("pxe-interfaces", found.join(", "))
    } else {
        found.extend(problems);
        Check::fail(
            "pxe-interfaces",
            found.join(", "),
            "fix pxe.interfaces (ip -brief addr lists the interfaces) or give the interface an IPv4 address",
        )
    }
}

/// `capabilities`: what PXE needs, against this process's effective set and the unit's
/// ambient set. The service itself, when it runs, reports its own set in `service`.
fn capabilities(config: &Config) -> Check {
    let needed = needed_caps(config);
    let own = std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(cap_eff)
        .unwrap_or(0);
    let own_names = cap_names(own);
    let own_text = if own_names.is_empty() {
        "none of CAP_NET_BIND_SERVICE, CAP_NET_RAW".to_string()
    } else {
        own_names.join(" ")
    };
    let needs_text = if needed.is_empty() {
        "none (ports ≥ ip_unprivileged_port_start, no pxe.interfaces)".to_string()
    } else {
        needed.join(" ")
    };
    let unit = unit_caps();
    let unit_text = match &unit {
        Some(u) => format!(
            "{} grants {}",
            u.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(" + "),
            if u.ambient.is_empty() {
                "no ambient capabilities".to_string()
            } else {
                u.ambient.join(" ")
            }
        ),
        None => "no bootfactory.service unit found".to_string(),
    };
    let message = format!("needs {needs_text}; this process (CapEff) has {own_text}; {unit_text}");
    if needed.is_empty() {
        return Check::ok("capabilities", message);
    }
    match &unit {
        Some(u) => {
            let missing: Vec<&str> = needed
                .iter()
                .copied()
                .filter(|n| !u.ambient.iter().any(|a| a == n))
                .collect();
            if missing.is_empty() {
                Check::ok("capabilities", message)
            } else {
                Check::fail(
                    "capabilities",
                    message,
                    format!(
                        "add AmbientCapabilities={} (and to CapabilityBoundingSet=) in a drop-in: systemctl edit bootfactory",
                        missing.join(" ")
                    ),
                )
            }
        }
        None => {
            let missing: Vec<&str> = needed
                .iter()
                .copied()
                .filter(|n| !own_names.contains(n))
                .collect();
            if missing.is_empty() {
                Check::ok("capabilities", message)
            } else {
                Check::warn(
                    "capabilities",
                    message,
                    format!(
                        "run serve as root, or grant {} (systemd: AmbientCapabilities=; by hand: setcap)",
                        missing.join(" ")
                    ),
                )
            }
        }
    }
}

/// The service's own view of itself, for `GET /api/v1/doctor`: user, pid and effective
/// capabilities.
pub fn service_identity() -> Check {
    let euid = nix::unistd::geteuid().as_raw();
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(cap_eff)
        .map(cap_names)
        .unwrap_or_default();
    Check::ok(
        "service",
        format!(
            "running (pid {}, user {}, CapEff {})",
            std::process::id(),
            user_name(euid),
            if caps.is_empty() {
                "without CAP_NET_BIND_SERVICE/CAP_NET_RAW".to_string()
            } else {
                caps.join(" ")
            }
        ),
    )
}

/// `tool <name>`: each external program or data directory a build may use.
pub fn tools() -> Vec<Check> {
    Tool::ALL
        .iter()
        .map(|&t| {
            let name = format!("tool {}", t.name().rsplit('/').next().unwrap_or(t.name()));
            match t.locate() {
                Some(p) => Check::ok(name, format!("{} ({})", p.display(), t.needed_for())),
                None => Check::warn(
                    name,
                    format!("{} not found: {} fail with 503", t.name(), t.needed_for()),
                    format!("apt-get install {}", t.debian_package()),
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_read_from_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000002400\n";
        let set = cap_eff(status).unwrap();
        assert_eq!(cap_names(set), ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]);
        assert_eq!(
            cap_names(cap_eff("CapEff:\t0000000000000400").unwrap()),
            ["CAP_NET_BIND_SERVICE"]
        );
        assert_eq!(cap_eff("Name: x"), None);
    }

    /// A drop-in in a higher-priority directory replaces a same-named one in a lower one
    /// (systemd's rule): an empty `/etc/…/10-caps.conf` masks the package's grant.
    #[test]
    fn a_same_named_drop_in_in_etc_masks_the_packages() {
        let etc = tempfile::tempdir().unwrap();
        let lib = tempfile::tempdir().unwrap();
        std::fs::write(
            lib.path().join("bootfactory.service"),
            "[Service]\nUser=bootfactory\n",
        )
        .unwrap();
        for dir in [etc.path(), lib.path()] {
            std::fs::create_dir(dir.join("bootfactory.service.d")).unwrap();
        }
        std::fs::write(
            lib.path().join("bootfactory.service.d/10-caps.conf"),
            "[Service]\nAmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW\n",
        )
        .unwrap();
        std::fs::write(
            etc.path().join("bootfactory.service.d/10-caps.conf"),
            "[Service]\n# masked by the admin\n",
        )
        .unwrap();
        let dirs = [etc.path().to_path_buf(), lib.path().to_path_buf()];
        let caps = unit_caps_in(&dirs).unwrap();
        assert_eq!(caps.ambient, Vec::<String>::new(), "{caps:?}");
        assert_eq!(
            caps.files,
            vec![
                lib.path().join("bootfactory.service"),
                etc.path().join("bootfactory.service.d/10-caps.conf")
            ]
        );
    }

    #[test]
    fn ambient_capabilities_follow_systemd_rules() {
        let mut set = Vec::new();
        apply_ambient(
            &mut set,
            "[Service]\nAmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW\n",
        );
        assert_eq!(set, ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]);
        apply_ambient(&mut set, "[Service]\nAmbientCapabilities=~CAP_NET_RAW\n");
        assert_eq!(set, ["CAP_NET_BIND_SERVICE"]);
        apply_ambient(
            &mut set,
            "[Service]\nAmbientCapabilities=\nAmbientCapabilities=CAP_NET_RAW\n",
        );
        assert_eq!(set, ["CAP_NET_RAW"]);
    }

    #[test]
    fn report_fails_on_any_fail_and_renders_hints() {
        let mut r = Report::default();
        r.checks.push(Check::ok("a", "fine"));
        r.checks.push(Check::warn("bb", "meh", "do x"));
        assert_eq!(r.worst(), Status::Warn);
        r.checks.push(Check::fail("c", "broken", "do y"));
        assert_eq!(r.worst(), Status::Fail);
        let text = r.render_text();
        assert!(text.contains("FAIL  c   broken\n"), "{text}");
        assert!(text.contains("-> do y"), "{text}");
        assert!(text.ends_with("1 ok, 1 warn, 1 fail\n"), "{text}");
    }

    #[test]
    fn store_summary_names_the_problem() {
        let mut q = crate::store::QuickCheck {
            records: 3,
            indexed_bytes: 30,
            total_size: 30,
            ..Default::default()
        };
        let ok = store_summary(&q, 0);
        assert_eq!(ok[0].status, Status::Ok);
        q.missing = 1;
        let bad = store_summary(&q, 0);
        assert_eq!(bad[0].status, Status::Fail);
        assert!(bad[0].message.contains("1 missing"), "{:?}", bad[0]);
        assert_eq!(store_summary(&q, 20).last().unwrap().status, Status::Fail);
    }
}
