//! Configuration: one YAML file, every key overridable by an environment variable
//! (`BOOTFACTORY_<KEY>`) and a command-line flag (`--<key>`), in that order of precedence
//! (flag > env > file > default).
//!
//! Keys are camelCase like upstream Image Factory's (`http.externalURL`, `build.maxConcurrency`,
//! …). Every key has an entry in [`keys::KEYS`] with its flag name and help text; a unit test
//! keeps that table and the structs in step, so a new key cannot ship undocumented.

pub(crate) mod keys;
pub mod value;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

pub use value::{EfiBinary, HttpUrl};

use crate::version::TalosVersion;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Where the store (blobs + index), keys and caches live.
    pub data_dir: PathBuf,
    /// Logging.
    pub log: LogConfig,
    /// The HTTP side: factory API, registry, boot scripts, UI, metrics.
    pub http: HttpConfig,
    /// Schematics loaded from a directory at start.
    pub schematics: SchematicsConfig,
    /// Never contact upstream registries: only the store (imported bundles) is used.
    pub offline: bool,
    /// How upstream registries are reached.
    pub upstream: UpstreamConfig,
    /// The integrated registry mirror (`/v2/…`).
    pub mirror: MirrorConfig,
    /// Where Talos artifacts (imager, extensions, installers, overlays) come from.
    pub artifacts: ArtifactsConfig,
    /// Asset builds.
    pub build: BuildConfig,
    /// The asset cache.
    pub cache: CacheConfig,
    /// Getting built assets from a parent factory before building them.
    pub factory: FactoryConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// Network boot: proxy-DHCP, TFTP and the embedded iPXE binaries.
    pub pxe: PxeConfig,
    /// The admin API (`/api/v1/…`).
    pub api: ApiConfig,
    /// Per-MAC assignments.
    pub assignments: AssignmentsConfig,
    /// Limits on what the store holds.
    pub store: StoreConfig,
}

/// Store quotas: anonymous clients can make the appliance store schematics, built assets and
/// pull-through images, so the store refuses new content (507, naming the limit) past these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct StoreConfig {
    /// Most bytes of blob content the store holds; 0 = no limit.
    pub max_bytes: u64,
    /// Bytes that must stay free on the data directory's filesystem; 0 = none.
    pub min_free_bytes: u64,
    /// The retention policy of `bootfactory store gc` and of the service's periodic GC.
    pub gc: StoreGcConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_bytes: 0,
            min_free_bytes: 1 << 30,
            gc: StoreGcConfig::default(),
        }
    }
}

/// `store.gc.*`: what garbage collection keeps (see `crate::retention`). The defaults keep
/// every Talos version and every built asset: GC then only deletes unreferenced blobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct StoreGcConfig {
    /// Keep the release content of the newest N Talos versions in the store; 0 = every version.
    pub keep_versions: usize,
    /// Never remove the Talos versions and the assets that machine assignments (and the
    /// default assignment) boot.
    pub keep_referenced: bool,
    /// After the version policy, evict built assets, least recently used first, until the
    /// store holds at most this many bytes; 0 = no size target.
    pub max_bytes: u64,
    /// Run GC with this policy in `bootfactory serve` every N hours; 0 = never.
    pub interval_hours: u64,
}

impl Default for StoreGcConfig {
    fn default() -> Self {
        StoreGcConfig {
            keep_versions: 0,
            keep_referenced: true,
            max_bytes: 0,
            interval_hours: 0,
        }
    }
}

/// Network boot (proxy-DHCP + TFTP + iPXE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PxeConfig {
    /// Run the proxy-DHCP and TFTP servers (needs CAP_NET_BIND_SERVICE; CAP_NET_RAW with
    /// `interfaces`).
    pub enabled: bool,
    /// Interfaces to answer on (SO_BINDTODEVICE); empty = every interface.
    pub interfaces: Vec<String>,
    /// IPv4 address clients reach us at (DHCP option 54, TFTP next-server, boot URLs); unset
    /// (empty) = the first IPv4 address of the first interface.
    #[serde(with = "value::optional")]
    pub advertise_address: Option<Ipv4Addr>,
    /// DHCP server port (67).
    pub dhcp_port: u16,
    /// PXE proxy port (4011).
    pub proxy_port: u16,
    /// Port DHCP replies are sent to (68).
    pub client_port: u16,
    /// TFTP port (69).
    pub tftp_port: u16,
    /// Extra directory served read-only over TFTP after the embedded iPXE binaries; unset
    /// (empty) = none.
    #[serde(with = "value::optional")]
    pub tftp_dir: Option<PathBuf>,
    /// TFTP transfers in progress at most; over it requests get a TFTP "server busy" error.
    /// Also held to an eighth of the process's file-descriptor limit.
    pub tftp_max_sessions: usize,
    /// TFTP transfers in progress from one client IP address at most.
    pub tftp_max_sessions_per_client: usize,
    /// TFTP retransmission timeout in seconds (1–10). Clients' `timeout` options are not
    /// accepted; an abandoned transfer ends after 6 × this.
    pub tftp_timeout_seconds: u64,
    /// What machines without an assignment get: `boot-default`, `ignore` or `local-disk`.
    pub unassigned: UnassignedPolicy,
    /// iPXE variant: `http` (boot URLs over HTTP) or `https` (require an iPXE with HTTPS).
    pub ipxe_variant: IpxeVariant,
    /// What the served EFI iPXE binaries trust when `http.tls` is on: `auto` (the default:
    /// `boot-ca` unless `pxe.bootURL` is set, then `ipxe-root`), `boot-ca` (the root the
    /// HTTPS chain ends with, patched in) or `ipxe-root` (as built: iPXE's root CA).
    pub ipxe_trust: IpxeTrust,
    /// The x86-64 UEFI binary sent to firmware: `ipxe.efi` (all drivers) or `snponly.efi`.
    pub efi_binary: EfiBinary,
    /// Base URL iPXE and UEFI HTTP-boot clients fetch from; must be an IP literal for HTTP
    /// boot. Unset (empty) = `http(s)://<advertiseAddress>:<http port>`.
    #[serde(rename = "bootURL", with = "value::optional")]
    pub boot_url: Option<HttpUrl>,
    /// `proxy` (answer PXE clients next to the network's DHCP server) or `full` (be the DHCP
    /// server of an isolated lab: addresses from `dhcp.range`).
    pub dhcp_mode: DhcpMode,
    /// The full DHCP server's pool and options (`dhcpMode: full` only).
    pub dhcp: DhcpServerConfig,
}

/// How bootfactory takes part in DHCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// Proxy-DHCP: boot options only, another server hands out addresses.
    Proxy,
    /// A full DHCPv4 server (RFC 2131) with the boot options folded in.
    Full,
}

/// `pxe.dhcp.*`: the pool of the full DHCP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DhcpServerConfig {
    /// Addresses handed out, `START-END` inclusive; required in full mode.
    #[serde(with = "value::optional")]
    pub range: Option<crate::dhcp::AddressRange>,
    /// Option 1; unset = the prefix of the configured interface's address in the range's
    /// subnet.
    #[serde(with = "value::optional")]
    pub netmask: Option<Ipv4Addr>,
    /// Option 3 (default gateway); unset = none.
    #[serde(with = "value::optional")]
    pub router: Option<Ipv4Addr>,
    /// Option 6 (DNS servers); empty = none.
    #[serde(with = "value::list")]
    pub dns: Vec<Ipv4Addr>,
    /// Option 15 (domain name); unset = none.
    #[serde(with = "value::optional")]
    pub domain: Option<String>,
    /// Option 51, lease time in seconds (T1 = 50 %, T2 = 87.5 %).
    pub lease_seconds: u32,
    /// How long an offered but unrequested address is held before it returns to the pool.
    pub offer_seconds: u32,
    /// ICMP-probe an address before offering it (false only for tests and benchmarks).
    pub probe: bool,
}

impl Default for DhcpServerConfig {
    fn default() -> Self {
        DhcpServerConfig {
            range: None,
            netmask: None,
            router: None,
            dns: Vec::new(),
            domain: None,
            lease_seconds: 3600,
            offer_seconds: 30,
            probe: true,
        }
    }
}

impl DhcpServerConfig {
    /// The pool with `netmask` (this config's, or the one derived from the interface).
    /// `None` without a range.
    pub fn pool(&self, netmask: Ipv4Addr) -> Option<crate::dhcp::PoolConfig> {
        Some(crate::dhcp::PoolConfig {
            range: self.range?,
            netmask,
            router: self.router,
            dns: self.dns.clone(),
            domain: self.domain.clone(),
            lease_secs: self.lease_seconds,
            offer_secs: self.offer_seconds,
            probe: self.probe,
        })
    }
}

/// What a machine without an assignment gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnassignedPolicy {
    /// The default assignment (or `local-disk` while there is none).
    BootDefault,
    /// No DHCP answer at all: the machine never sees us.
    Ignore,
    /// An iPXE script that exits, so the firmware boots the next device.
    LocalDisk,
}

/// Which URLs the boot path uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpxeVariant {
    /// Plain HTTP.
    Http,
    /// HTTPS: iPXE builds without HTTPS are chained to ours first.
    Https,
}

/// What the served EFI iPXE binaries trust when the main listener has TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IpxeTrust {
    /// `BootCa` when we serve the boot URL ourselves, `IpxeRoot` when `pxe.bootURL` points
    /// at something else (a TLS proxy with its own certificate): see
    /// [`PxeConfig::effective_ipxe_trust`].
    Auto,
    /// The boot CA: the self-signed root the HTTPS chain ends with (`crate::ipxe::trust`).
    BootCa,
    /// Debian's build unchanged: iPXE's root CA (public CAs through cross-signed
    /// certificates iPXE downloads from ca.ipxe.org).
    IpxeRoot,
}

impl PxeConfig {
    /// What the served EFI iPXE binaries trust: `pxe.ipxeTrust` when set explicitly; for
    /// `auto`, the boot CA when the boot URL is ours, iPXE's root when `pxe.bootURL` is set
    /// (whatever answers there presents its own certificate, which the boot CA did not sign).
    pub fn effective_ipxe_trust(&self) -> IpxeTrust {
        match self.ipxe_trust {
            IpxeTrust::Auto if self.boot_url.is_some() => IpxeTrust::IpxeRoot,
            IpxeTrust::Auto => IpxeTrust::BootCa,
            explicit => explicit,
        }
    }

    /// Whether machines are sent to an `https://` boot URL that this server's own TLS
    /// listener answers (`pxe.ipxeVariant: https` without `pxe.bootURL`).
    pub fn serves_https_boot(&self) -> bool {
        self.enabled && self.ipxe_variant == IpxeVariant::Https && self.boot_url.is_none()
    }
}

impl Default for PxeConfig {
    fn default() -> Self {
        PxeConfig {
            enabled: false,
            interfaces: Vec::new(),
            advertise_address: None,
            dhcp_port: 67,
            proxy_port: 4011,
            client_port: 68,
            tftp_port: 69,
            tftp_dir: None,
            tftp_max_sessions: crate::tftp::DEFAULT_MAX_SESSIONS,
            tftp_max_sessions_per_client: crate::tftp::DEFAULT_MAX_SESSIONS_PER_CLIENT,
            tftp_timeout_seconds: 2,
            unassigned: UnassignedPolicy::BootDefault,
            ipxe_variant: IpxeVariant::Http,
            ipxe_trust: IpxeTrust::Auto,
            efi_binary: EfiBinary::IpxeEfi,
            boot_url: None,
            dhcp_mode: DhcpMode::Proxy,
            dhcp: DhcpServerConfig::default(),
        }
    }
}

/// The admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiConfig {
    /// Bearer token for `/api/v1/…`; unset (empty) = generated on first start into
    /// `<dataDir>/admin-token` (mode 0600).
    #[serde(with = "value::optional")]
    pub admin_token: Option<String>,
    /// The admin Unix socket `serve` listens on (the same API, authorised by the peer's uid:
    /// root or the service's own user, instead of the token). A relative path is relative to
    /// `dataDir`; the default is `admin.sock` there; empty = no socket.
    #[serde(with = "value::optional")]
    pub socket: Option<PathBuf>,
    /// How long a web UI login lasts, in minutes (the admin pages' session cookie).
    pub ui_session_minutes: u64,
}

/// The admin socket's file name in the data directory (`api.socket`'s default).
pub const DEFAULT_ADMIN_SOCKET: &str = "admin.sock";

/// The longest path a Unix socket can be bound or connected at (`sun_path` holds 108 bytes,
/// its terminating NUL included).
pub const MAX_UNIX_SOCKET_PATH: usize = 107;

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            admin_token: None,
            socket: Some(PathBuf::from(DEFAULT_ADMIN_SOCKET)),
            ui_session_minutes: 720,
        }
    }
}

/// Per-MAC assignments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AssignmentsConfig {
    /// A seed file (`assignments.yaml`) applied at start: its machines and default replace the
    /// stored ones with the same MAC; others are kept. Unset (empty) = none.
    #[serde(with = "value::optional")]
    pub file: Option<PathBuf>,
    /// Most machines kept in the inventory; the least recently seen unassigned one makes room
    /// for a new one (assigned machines are never evicted). 0 = unbounded.
    pub inventory_max_machines: usize,
    /// Unassigned machines not seen for this many days are forgotten. 0 = never.
    pub inventory_max_age_days: u64,
    /// Build a machine's boot assets (kernel, initramfs, command line) in the background when
    /// the admin API assigns it, as `PUT /api/v1/machines/{mac}?warm=true` does.
    pub warm_on_assign: bool,
}

impl Default for AssignmentsConfig {
    fn default() -> Self {
        AssignmentsConfig {
            file: None,
            inventory_max_machines: 10_000,
            inventory_max_age_days: 90,
            warm_on_assign: false,
        }
    }
}

/// Metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricsConfig {
    /// A separate `ADDR:PORT` serving only `/metrics` (it is always on the main port too);
    /// unset (empty) = none.
    #[serde(with = "value::optional")]
    pub listen: Option<SocketAddr>,
}

/// Asset builds, as upstream's `build.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct BuildConfig {
    /// The oldest Talos version served (written with or without the `v`).
    #[serde(with = "value::required")]
    pub min_talos_version: TalosVersion,
    /// Versions never served (listed by `GET /versions?broken=true`).
    #[serde(with = "value::list")]
    pub broken_talos_versions: Vec<TalosVersion>,
    /// Builds running at once.
    pub max_concurrency: usize,
    /// Seconds a single build may take.
    pub timeout_seconds: u64,
    /// Seconds the list of versions is trusted before the imager's tags are listed again.
    pub version_recheck_seconds: u64,
    /// New builds one client address may start at once (cached assets and joining a running
    /// build are free). 0 disables the limit.
    pub per_client_burst: u32,
    /// New builds per minute a client's budget refills by. 0 disables the limit.
    pub per_client_per_minute: u32,
}

/// The asset cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CacheConfig {
    /// PEM P-256 private key signing cached assets; unset (empty) =
    /// `<dataDir>/cache-signing-key.pem`, generated on first start.
    #[serde(with = "value::optional")]
    pub signing_key_path: Option<PathBuf>,
    /// A shared cache tier on an OCI registry (`factory::remote::oci_cache`).
    pub oci: OciCacheConfig,
}

/// A build cache shared by several appliances on an OCI registry (`cache.oci.*`): built
/// assets are pushed there (one single-layer image per asset, signed) and looked up there
/// before building.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct OciCacheConfig {
    /// `host[:port]/path` of the repository (`harbor.example.com/talos/bootfactory-cache`);
    /// unset (empty) = no shared cache. Credentials and endpoints come from
    /// `upstream.registries.<host>`.
    #[serde(with = "value::optional")]
    pub repository: Option<String>,
    /// Reach the registry over plain HTTP.
    pub insecure: bool,
    /// PEM public keys of the other appliances whose cache entries are trusted (this
    /// appliance's own key always is).
    pub public_key_files: Vec<PathBuf>,
}

/// A parent factory (`factory.*`): on a cache miss, an asset is fetched from the parent (an
/// Image Factory or another bootfactory, same schematic IDs and asset paths), verified, stored
/// and served, instead of being built here (`factory::remote`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct FactoryConfig {
    /// The parent's base URL (`https://factory.talos.dev`, `http://regional:8080`); unset
    /// (empty) = none: every asset is built here.
    #[serde(with = "value::optional")]
    pub parent: Option<HttpUrl>,
    /// What a parent's asset must pass before it is stored: `sha256` (the parent's
    /// `<path>.sha256`), `signature` (a bootfactory parent's `<path>.sig`, checked with
    /// `parentPublicKeyFile`) or `none` (trust the transport).
    pub parent_verify: ParentVerify,
    /// PEM public key of a bootfactory parent (its `/oci/cosign/signing-key.pub`); required by
    /// `parentVerify: signature`.
    #[serde(with = "value::optional")]
    pub parent_public_key_file: Option<PathBuf>,
    /// When the parent lacks an asset, is down, or its bytes fail verification: `build` it
    /// here, or `fail` the request (502 naming the parent).
    pub parent_fallback: ParentFallback,
    /// Seconds to wait for the parent to answer (and between chunks of an asset).
    pub parent_timeout_seconds: u64,
}

impl Default for FactoryConfig {
    fn default() -> Self {
        FactoryConfig {
            parent: None,
            parent_verify: ParentVerify::Sha256,
            parent_public_key_file: None,
            parent_fallback: ParentFallback::Build,
            parent_timeout_seconds: 30,
        }
    }
}

/// How a parent's asset is verified (`factory.parentVerify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParentVerify {
    /// The parent's `<path>.sha256` must name the bytes received.
    Sha256,
    /// A bootfactory parent's `<path>.sig` must verify with `factory.parentPublicKeyFile`.
    Signature,
    /// Nothing beyond the transport (HTTPS).
    None,
}

/// What happens when the parent cannot give an asset (`factory.parentFallback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParentFallback {
    /// Build it here.
    Build,
    /// Answer 502 naming the parent.
    Fail,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            min_talos_version: TalosVersion::new(1, 2, 0),
            broken_talos_versions: Vec::new(),
            max_concurrency: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            timeout_seconds: 1200,
            version_recheck_seconds: 900,
            per_client_burst: 20,
            per_client_per_minute: 20,
        }
    }
}

/// Upstream registry access.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct UpstreamConfig {
    /// Seconds a tag → digest answer is trusted before the upstream is asked again.
    #[serde(rename = "tagTTLSeconds")]
    pub tag_ttl_seconds: u64,
    /// Timeout of one upstream request (for blobs: until the response starts, and between
    /// chunks).
    pub timeout_seconds: u64,
    /// Retries (with exponential backoff) for upstream errors that may pass: connection
    /// failures, timeouts, 429 and 5xx.
    pub retries: u32,
    /// Per-registry settings, keyed by the registry host used in image names (`ghcr.io`).
    pub registries: std::collections::BTreeMap<String, UpstreamRegistry>,
}

/// How to reach one upstream registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct UpstreamRegistry {
    /// Base URL to contact instead of `https://<host>` (e.g. `http://127.0.0.1:5000`, or a
    /// corporate mirror); unset (empty) = `https://<host>`.
    #[serde(with = "value::optional")]
    pub endpoint: Option<HttpUrl>,
    /// Use plain HTTP when no endpoint is given.
    pub insecure: bool,
    /// Basic-auth user name (sent to the registry's token service); unset (empty) = none.
    #[serde(with = "value::optional")]
    pub username: Option<String>,
    /// Basic-auth password or token.
    #[serde(with = "value::optional")]
    pub password: Option<String>,
    /// A bearer token used as is; unset (empty) = none.
    #[serde(with = "value::optional")]
    pub token: Option<String>,
}

/// The integrated mirror.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct MirrorConfig {
    /// Upstream registries clients may pull through bootfactory; others are refused (content
    /// already in the store is always served).
    pub allow: Vec<String>,
    /// The registry a request means when it names none (`/v2/<repo>/…` without `?ns=`).
    pub default_registry: String,
    /// Most upstream blob downloads registry clients may have running at once (concurrent
    /// requests for the same blob share one). Each holds up to ≈ 24 MiB of buffers and a
    /// blocking thread until its download ends, and a client that disconnects does not cancel
    /// it, so this bounds what strangers can start. Over it: 429 with `Retry-After`.
    pub max_fetches: usize,
}

/// Talos artifact sources, as upstream Image Factory's `artifacts.core`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ArtifactsConfig {
    /// Registry, namespace and component names.
    pub core: CoreArtifacts,
}

/// `artifacts.core`: `<registry>/<namespace>/<component>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CoreArtifacts {
    /// Registry host of the Talos artifacts.
    pub registry: String,
    /// Optional path prefix inside that registry (e.g. a Harbor project).
    pub namespace: String,
    /// Reach the registry over plain HTTP.
    pub insecure: bool,
    /// Repository names of each component.
    pub components: Components,
}

/// Component repositories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Components {
    /// Installer base (Talos ≥ 1.10).
    pub installer_base: String,
    /// Installer (Talos < 1.10).
    pub installer: String,
    /// Imager (kernel, initramfs, boot stubs).
    pub imager: String,
    /// Extensions catalog.
    pub extension_manifest: String,
    /// Overlays catalog.
    pub overlay_manifest: String,
    /// talosctl binaries.
    pub talosctl: String,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            tag_ttl_seconds: 300,
            timeout_seconds: 30,
            retries: 3,
            registries: Default::default(),
        }
    }
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            allow: [
                "ghcr.io",
                "registry.k8s.io",
                "docker.io",
                "quay.io",
                "gcr.io",
            ]
            .map(String::from)
            .to_vec(),
            default_registry: "ghcr.io".to_string(),
            max_fetches: 32,
        }
    }
}

impl Default for CoreArtifacts {
    fn default() -> Self {
        CoreArtifacts {
            registry: "ghcr.io".to_string(),
            namespace: String::new(),
            insecure: false,
            components: Components::default(),
        }
    }
}

impl Default for Components {
    fn default() -> Self {
        Components {
            installer_base: "siderolabs/installer-base".to_string(),
            installer: "siderolabs/installer".to_string(),
            imager: "siderolabs/imager".to_string(),
            extension_manifest: "siderolabs/extensions".to_string(),
            overlay_manifest: "siderolabs/overlays".to_string(),
            talosctl: "siderolabs/talosctl-all".to_string(),
        }
    }
}

impl CoreArtifacts {
    /// The image name of a component: `<registry>/<namespace>/<component>`.
    pub fn repository(&self, component: &str) -> String {
        let ns = self.namespace.trim_matches('/');
        if ns.is_empty() {
            format!("{}/{}", self.registry, component)
        } else {
            format!("{}/{}/{}", self.registry, ns, component)
        }
    }

    /// The parsed image name of a component ([`CoreArtifacts::repository`]). Every configured
    /// component's name is checked when the configuration is loaded.
    pub fn image_name(
        &self,
        component: &str,
    ) -> Result<crate::oci::reference::ImageName, crate::oci::reference::RefError> {
        format!("{}:latest", self.repository(component))
            .parse::<crate::oci::reference::ImageRef>()
            .map(|r| r.name)
    }
}

impl Components {
    /// Each component with its key under `artifacts.core.components`.
    pub fn named(&self) -> [(&'static str, &str); 6] {
        [
            ("installerBase", &self.installer_base),
            ("installer", &self.installer),
            ("imager", &self.imager),
            ("extensionManifest", &self.extension_manifest),
            ("overlayManifest", &self.overlay_manifest),
            ("talosctl", &self.talosctl),
        ]
    }
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `bootfactory=debug,tower_http=info`, …
    pub level: String,
    /// `text` (human) or `json` (one object per line).
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON objects, one per line.
    Json,
}

/// HTTP server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpConfig {
    /// Listen address, `ADDR:PORT`.
    #[serde(with = "value::required")]
    pub listen: SocketAddr,
    /// The URL clients reach this server at (used in generated links); unset (empty) = derived
    /// from `listen` ([`Config::external_url`]).
    #[serde(rename = "externalURL", with = "value::optional")]
    pub external_url: Option<HttpUrl>,
    /// The URL PXE clients reach this server at (iPXE scripts); unset (empty) = `externalURL`
    /// ([`Config::external_pxe_url`]).
    #[serde(rename = "externalPXEURL", with = "value::optional")]
    pub external_pxe_url: Option<HttpUrl>,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    pub shutdown_grace_seconds: u64,
    /// Seconds a client has to send a complete request head (from accept, or from the first
    /// byte of the next request on a kept-alive connection; includes the TLS handshake).
    pub header_read_timeout_seconds: u64,
    /// Seconds a kept-alive connection may stay idle between requests; also how long a
    /// response may stay blocked on a client that stopped reading.
    pub idle_timeout_seconds: u64,
    /// Seconds a client has to send a whole request body (from the end of the head).
    pub body_read_timeout_seconds: u64,
    /// HTTP connections open at once (all listeners); at the cap the oldest connection without
    /// a request in flight is closed, or the new one gets 503 when all are busy.
    pub max_connections: usize,
    /// With TLS: an extra plain-HTTP listener `ADDR:PORT` for the boot path (firmware, iPXE);
    /// unset (empty) = none.
    #[serde(with = "value::optional")]
    pub plain_listen: Option<SocketAddr>,
    /// HTTPS on `listen`.
    pub tls: TlsConfig,
}

/// TLS on the main HTTP listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    /// PEM certificate chain (reloaded on SIGHUP and when the file changes); unset (empty) =
    /// none.
    #[serde(with = "value::optional")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(with = "value::optional")]
    pub key_file: Option<PathBuf>,
    /// Generate a per-appliance CA and a server certificate under `<dataDir>/tls/`.
    pub self_signed: bool,
    /// Extra DNS names or IP addresses for the self-signed server certificate.
    pub extra_names: Vec<String>,
    /// Send `Strict-Transport-Security` on HTTPS responses.
    pub hsts: bool,
    /// Accept the admin token over plain HTTP from non-loopback clients.
    pub admin_over_plain: bool,
}

impl TlsConfig {
    /// Whether the main listener speaks HTTPS.
    pub fn enabled(&self) -> bool {
        self.self_signed || self.cert_file.is_some()
    }
}

/// Schematic settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SchematicsConfig {
    /// A directory whose `*.yaml` files are validated and stored at start; unset (empty) = none.
    #[serde(with = "value::optional")]
    pub dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/bootfactory"),
            log: LogConfig::default(),
            http: HttpConfig::default(),
            schematics: SchematicsConfig::default(),
            offline: false,
            upstream: UpstreamConfig::default(),
            mirror: MirrorConfig::default(),
            artifacts: ArtifactsConfig::default(),
            build: BuildConfig::default(),
            cache: CacheConfig::default(),
            factory: FactoryConfig::default(),
            metrics: MetricsConfig::default(),
            pxe: PxeConfig::default(),
            api: ApiConfig::default(),
            assignments: AssignmentsConfig::default(),
            store: StoreConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            external_url: None,
            external_pxe_url: None,
            shutdown_grace_seconds: 10,
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            body_read_timeout_seconds: 30,
            max_connections: 1024,
            plain_listen: None,
            tls: TlsConfig::default(),
        }
    }
}

/// A configuration problem, with enough context to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid, or names an unknown key.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// serde's description, which names the key and line.
        message: String,
    },
    /// A flag or environment variable has a value of the wrong type.
    #[error("{source_name} ({key}): {message}")]
    Override {
        /// `--flag` or `BOOTFACTORY_X`.
        source_name: String,
        /// The config key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The merged configuration is inconsistent.
    #[error("invalid configuration: {key}: {message}")]
    Invalid {
        /// The config key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The configuration file every command reads when neither `--config` nor
/// `BOOTFACTORY_CONFIG` names one and it exists (where the packages install it).
pub const DEFAULT_CONFIG_FILE: &str = "/etc/bootfactory/config.yaml";

/// Which configuration file to read: the one given (`--config` or `BOOTFACTORY_CONFIG`),
/// else `default` when it exists, else none (defaults, environment and flags only).
pub fn resolve_file(given: Option<&Path>, default: &Path) -> Option<PathBuf> {
    match given {
        Some(path) => Some(path.to_path_buf()),
        None => default.exists().then(|| default.to_path_buf()),
    }
}

/// What [`Config::redacted`] shows instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// One override from the command line or the environment.
#[derive(Debug, Clone)]
pub struct Override {
    /// Dotted config key, e.g. `http.listen`.
    pub key: String,
    /// The raw value.
    pub value: String,
    /// Where it came from, for error messages (`--http-listen`, `BOOTFACTORY_HTTP_LISTEN`).
    pub source_name: String,
}

impl Config {
    /// Loads the configuration: defaults, then `file` (if any), then `overrides` in order.
    pub fn load(file: Option<&Path>, overrides: &[Override]) -> Result<Config, ConfigError> {
        let mut tree = match file {
            None => Value::Mapping(Mapping::new()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                // Decode once on its own so errors point at the file's line and key.
                serde_yaml::from_str::<Config>(&text).map_err(|e| ConfigError::File {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
                match serde_yaml::from_str::<Value>(&text) {
                    Ok(Value::Null) => Value::Mapping(Mapping::new()),
                    Ok(v) => v,
                    Err(e) => {
                        return Err(ConfigError::File {
                            path: path.to_path_buf(),
                            message: e.to_string(),
                        });
                    }
                }
            }
        };
        for o in overrides {
            apply_override(&mut tree, o)?;
            // Check each override on its own so an error names the flag or variable (and the
            // key inside it, for a value given as YAML).
            decode(tree.clone()).map_err(|(path, message)| ConfigError::Override {
                source_name: o.source_name.clone(),
                key: o.key.clone(),
                message: if path == o.key || path.is_empty() {
                    message
                } else {
                    format!("{path}: {message}")
                },
            })?;
        }
        let config =
            decode(tree).map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense (alone or together). Single values were
    /// parsed into their types while loading ([`value`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_string(),
            message,
        };
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("dataDir", "must not be empty".into()));
        }
        for (key, value) in [
            (
                "http.headerReadTimeoutSeconds",
                self.http.header_read_timeout_seconds,
            ),
            ("http.idleTimeoutSeconds", self.http.idle_timeout_seconds),
            (
                "http.bodyReadTimeoutSeconds",
                self.http.body_read_timeout_seconds,
            ),
            ("http.maxConnections", self.http.max_connections as u64),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if let Some(repo) = &self.cache.oci.repository {
            let valid = repo.split_once('/').is_some_and(|(host, path)| {
                crate::oci::reference::is_valid_registry(host)
                    && crate::oci::reference::is_valid_repository(path)
            });
            if !valid {
                return Err(invalid(
                    "cache.oci.repository",
                    format!(
                        "{repo:?} is not host[:port]/repository (e.g. registry.example.com/bootfactory/cache)"
                    ),
                ));
            }
        }
        let factory = &self.factory;
        if factory.parent_timeout_seconds == 0 {
            return Err(invalid(
                "factory.parentTimeoutSeconds",
                "must be at least 1".into(),
            ));
        }
        match (factory.parent_verify, &factory.parent_public_key_file) {
            (ParentVerify::Signature, None) => {
                return Err(invalid(
                    "factory.parentPublicKeyFile",
                    "factory.parentVerify: signature needs the parent's public key (its /oci/cosign/signing-key.pub)".into(),
                ));
            }
            (ParentVerify::Sha256 | ParentVerify::None, Some(_)) => {
                return Err(invalid(
                    "factory.parentVerify",
                    "a parent public key is set but not used: set factory.parentVerify: signature"
                        .into(),
                ));
            }
            _ => {}
        }
        let tls = &self.http.tls;
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(invalid(
                "http.tls.certFile / http.tls.keyFile",
                "set both (PEM certificate chain and private key) or neither".into(),
            ));
        }
        if tls.self_signed && tls.cert_file.is_some() {
            return Err(invalid(
                "http.tls.selfSigned",
                "cannot be combined with http.tls.certFile/keyFile".into(),
            ));
        }
        for name in &tls.extra_names {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:*".contains(c))
            {
                return Err(invalid(
                    "http.tls.extraNames",
                    format!("{name:?} is not a DNS name or IP address"),
                ));
            }
        }
        if self.http.plain_listen.is_some() && !tls.enabled() {
            return Err(invalid(
                "http.plainListen",
                "is the plain-HTTP listener next to HTTPS: set http.tls too, or use http.listen"
                    .into(),
            ));
        }
        for host in self.upstream.registries.keys() {
            let key = format!("upstream.registries.{host}");
            if !crate::oci::reference::is_valid_registry(host) {
                return Err(invalid(
                    &key,
                    format!("{host:?} is not a registry host[:port]"),
                ));
            }
        }
        let hosts = self
            .mirror
            .allow
            .iter()
            .enumerate()
            .map(|(i, host)| (format!("mirror.allow entry {i}"), host))
            .chain([
                (
                    "mirror.defaultRegistry".to_string(),
                    &self.mirror.default_registry,
                ),
                (
                    "artifacts.core.registry".to_string(),
                    &self.artifacts.core.registry,
                ),
            ]);
        for (key, host) in hosts {
            if !crate::oci::reference::is_valid_registry(host) {
                return Err(invalid(
                    &key,
                    format!("{host:?} is not a registry host[:port]"),
                ));
            }
        }
        let core = &self.artifacts.core;
        for (name, component) in core.components.named() {
            core.image_name(component).map_err(|e| {
                invalid(
                    &format!("artifacts.core.components.{name}"),
                    format!(
                        "{:?} is not a valid image name ({e})",
                        core.repository(component)
                    ),
                )
            })?;
        }
        if self.build.max_concurrency == 0 {
            return Err(invalid("build.maxConcurrency", "must be at least 1".into()));
        }
        if self.api.ui_session_minutes == 0 {
            return Err(invalid("api.uiSessionMinutes", "must be at least 1".into()));
        }
        if self.pxe.tftp_max_sessions == 0 {
            return Err(invalid("pxe.tftpMaxSessions", "must be at least 1".into()));
        }
        if self.pxe.tftp_max_sessions_per_client == 0 {
            return Err(invalid(
                "pxe.tftpMaxSessionsPerClient",
                "must be at least 1".into(),
            ));
        }
        let max_timeout = crate::tftp::MAX_TIMEOUT.as_secs();
        if !(1..=max_timeout).contains(&self.pxe.tftp_timeout_seconds) {
            return Err(invalid(
                "pxe.tftpTimeoutSeconds",
                format!(
                    "{} is not between 1 and {max_timeout} seconds",
                    self.pxe.tftp_timeout_seconds
                ),
            ));
        }
        if self.pxe.dhcp_mode == DhcpMode::Full {
            if self.pxe.interfaces.is_empty() {
                return Err(invalid(
                    "pxe.interfaces",
                    "pxe.dhcpMode: full needs the interfaces to serve (a full DHCP server never answers on an interface it was not given)".into(),
                ));
            }
            let dhcp = &self.pxe.dhcp;
            if dhcp.range.is_none() {
                return Err(invalid(
                    "pxe.dhcp.range",
                    "pxe.dhcpMode: full needs the address range to hand out (START-END)".into(),
                ));
            }
            if let Some(pool) = dhcp.netmask.and_then(|mask| dhcp.pool(mask)) {
                pool.validate(self.pxe.advertise_address)
                    .map_err(|e| invalid(e.key, e.message))?;
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!(
                    "{:?} is not a valid filter (try info, debug, warn)",
                    self.log.level
                ),
            ));
        }
        Ok(())
    }

    /// The scheme and port boot URLs use when `pxe.bootURL` is not set: the main listener
    /// with `pxe.ipxeVariant: https` (HTTPS when it has TLS); else the plain listener when
    /// there is one, else the main listener (`https` when it has TLS).
    pub fn boot_scheme_port(&self) -> (&'static str, u16) {
        match self.http.plain_listen {
            Some(plain) if !self.https_boot_wanted() => ("http", plain.port()),
            _ => (self.http_scheme(), self.http.listen.port()),
        }
    }

    /// `pxe.ipxeVariant: https` with TLS on the main listener: boot over it.
    fn https_boot_wanted(&self) -> bool {
        self.pxe.ipxe_variant == IpxeVariant::Https && self.http.tls.enabled()
    }

    /// `https` when the main listener has TLS, else `http`.
    fn http_scheme(&self) -> &'static str {
        if self.http.tls.enabled() {
            "https"
        } else {
            "http"
        }
    }

    /// The URL clients use to reach us, without a trailing slash: `http.externalURL`, or one
    /// derived from `http.listen` (`0.0.0.0` becomes `127.0.0.1`, `::` becomes `[::1]`). The one
    /// place this URL is derived; generated links, messages and the CLI's default server use it.
    pub fn external_url(&self) -> String {
        match &self.http.external_url {
            Some(url) => url.base().to_string(),
            None => format!(
                "{}://{}:{}",
                self.http_scheme(),
                value::url_host_of(&self.http.listen),
                self.http.listen.port()
            ),
        }
    }

    /// The external URL as upstream prints it in the schematic extension's author
    /// (`Image Factory (<url>)`): `http.externalURL` as written, else the derived URL with a
    /// trailing slash (Go's `url.URL.String()` of a base URL).
    pub fn external_url_as_written(&self) -> String {
        match &self.http.external_url {
            Some(url) => url.as_str().to_string(),
            None => format!("{}/", self.external_url()),
        }
    }

    /// `host[:port]` of [`Config::external_url`]: how a registry client names images served
    /// here (`<host[:port]>/metal-installer/<schematic>:<version>`).
    pub fn external_registry_host(&self) -> String {
        let url = self.external_url();
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap_or(rest).to_string()
    }

    /// The host of [`Config::external_url`], without port or IPv6 brackets.
    pub fn external_host(&self) -> String {
        match &self.http.external_url {
            Some(url) => url.host(),
            None => value::url_host_of(&self.http.listen)
                .trim_matches(['[', ']'])
                .to_string(),
        }
    }

    /// The URL PXE clients use, without a trailing slash: `http.externalPXEURL`; else, with
    /// HTTPS and a plain listener, `http://<external host>:<plain port>` (for iPXE and
    /// firmware that cannot do TLS) unless `pxe.ipxeVariant: https`; else
    /// [`Config::external_url`].
    pub fn external_pxe_url(&self) -> String {
        if let Some(url) = &self.http.external_pxe_url {
            return url.base().to_string();
        }
        match self.http.plain_listen {
            Some(plain) if !self.https_boot_wanted() => {
                let host = match &self.http.external_url {
                    Some(url) => url.host_for_url(),
                    None => value::url_host_of(&self.http.listen),
                };
                format!("http://{host}:{}", plain.port())
            }
            _ => self.external_url(),
        }
    }

    /// The admin Unix socket (`api.socket`, relative to `dataDir`), `None` when disabled or
    /// when the path is longer than a Unix socket address takes ([`MAX_UNIX_SOCKET_PATH`]):
    /// then `serve` listens without it (and says so) and commands use HTTP, rather than a
    /// long data directory keeping the service from starting.
    pub fn admin_socket_path(&self) -> Option<PathBuf> {
        let path = self.data_dir.join(self.api.socket.as_ref()?);
        (path.as_os_str().len() <= MAX_UNIX_SOCKET_PATH).then_some(path)
    }

    /// The admin token file used when `api.adminToken` is empty.
    pub fn admin_token_path(&self) -> PathBuf {
        self.data_dir.join("admin-token")
    }

    /// The cache signing key file.
    pub fn signing_key_path(&self) -> PathBuf {
        match &self.cache.signing_key_path {
            Some(path) => path.clone(),
            None => self.data_dir.join("cache-signing-key.pem"),
        }
    }

    /// The configuration as YAML, for `bootfactory config show`.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_default()
    }

    /// A copy with every secret that is set (`api.adminToken`, and each upstream registry's
    /// `password` and `token`) replaced by [`REDACTED`], for showing the configuration.
    pub fn redacted(&self) -> Config {
        fn redact(secret: &mut Option<String>) {
            if secret.is_some() {
                *secret = Some(REDACTED.to_string());
            }
        }
        let mut config = self.clone();
        redact(&mut config.api.admin_token);
        for registry in config.upstream.registries.values_mut() {
            redact(&mut registry.password);
            redact(&mut registry.token);
        }
        config
    }
}

/// Decodes (and so parses every value of) a configuration tree; an error comes with the dotted
/// path of the value it is about.
fn decode(tree: Value) -> Result<Config, (String, String)> {
    serde_path_to_error::deserialize(tree).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, e.into_inner().to_string())
    })
}

/// Sets one dotted key in the YAML tree, creating intermediate mappings. Values are typed like
/// the key's default: strings are taken verbatim, everything else is parsed as YAML.
fn apply_override(tree: &mut Value, o: &Override) -> Result<(), ConfigError> {
    let spec = keys::find(&o.key).ok_or_else(|| ConfigError::Override {
        source_name: o.source_name.clone(),
        key: o.key.clone(),
        message: "unknown configuration key".to_string(),
    })?;
    let default = keys::default_value(&o.key);
    let value = match default {
        Some(Value::String(_)) => Value::String(o.value.clone()),
        Some(Value::Sequence(_)) if !o.value.trim_start().starts_with('[') => Value::Sequence(
            o.value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        _ => serde_yaml::from_str::<Value>(&o.value).map_err(|e| ConfigError::Override {
            source_name: o.source_name.clone(),
            key: o.key.clone(),
            message: e.to_string(),
        })?,
    };
    let mut node = tree;
    let parts: Vec<&str> = spec.key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !node.is_mapping() {
            *node = Value::Mapping(Mapping::new());
        }
        let map = node.as_mapping_mut().expect("just made a mapping");
        let k = Value::String(part.to_string());
        if i + 1 == parts.len() {
            map.insert(k, value);
            return Ok(());
        }
        node = map.entry(k).or_insert(Value::Mapping(Mapping::new()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn ov(key: &str, value: &str) -> Override {
        Override {
            key: key.into(),
            value: value.into(),
            source_name: format!("--{}", keys::find(key).unwrap().flag),
        }
    }

    #[test]
    fn redacted_hides_set_secrets_only() {
        let c = Config::load(
            None,
            &[
                ov("api.adminToken", "s3cret-admin"),
                ov(
                    "upstream.registries",
                    "{ghcr.io: {username: me, password: pw1}, r.example: {token: tk1}, plain.example: {insecure: true}}",
                ),
            ],
        )
        .unwrap();
        let shown = c.redacted().to_yaml();
        for secret in ["s3cret-admin", "pw1", "tk1"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(shown.matches(REDACTED).count(), 3, "{shown}");
        assert!(shown.contains("username: me"), "{shown}");
        assert_eq!(
            c.redacted().upstream.registries["plain.example"].token,
            None
        );
        assert!(c.to_yaml().contains("s3cret-admin"));
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.external_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn file_then_overrides() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "dataDir: /srv/bf\nhttp:\n  listen: 127.0.0.1:9000\n").unwrap();
        let c = Config::load(Some(f.path()), &[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/bf"));
        assert_eq!(c.http.listen, "127.0.0.1:9000".parse().unwrap());
        let c = Config::load(
            Some(f.path()),
            &[
                ov("http.listen", "[::1]:7000"),
                ov("http.shutdownGraceSeconds", "3"),
            ],
        )
        .unwrap();
        assert_eq!(c.http.listen, "[::1]:7000".parse().unwrap());
        assert_eq!(c.http.shutdown_grace_seconds, 3);
        assert_eq!(c.data_dir, PathBuf::from("/srv/bf"));
        assert_eq!(c.external_url(), "http://[::1]:7000");
    }

    #[test]
    fn unknown_keys_are_named() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "http:\n  lisen: 127.0.0.1:9000\n").unwrap();
        let e = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "bogus: 1\n").unwrap();
        let e = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn bad_values_are_explained() {
        let e = Config::load(None, &[ov("http.listen", "8080")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.listen"), "{e}");
        let e = Config::load(None, &[ov("http.externalURL", "factory.example.com")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("absolute http"), "{e}");
        let e = Config::load(None, &[ov("http.shutdownGraceSeconds", "soon")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--http-shutdown-grace-seconds"), "{e}");
    }

    #[test]
    fn parent_factory_settings_are_typed_and_consistent() {
        let c = Config::load(
            None,
            &[
                ov("factory.parent", "https://factory.talos.dev"),
                ov("factory.parentFallback", "fail"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.factory.parent.as_ref().map(HttpUrl::as_str),
            Some("https://factory.talos.dev")
        );
        assert_eq!(c.factory.parent_verify, ParentVerify::Sha256);
        assert_eq!(c.factory.parent_fallback, ParentFallback::Fail);
        for (overrides, want) in [
            (vec![ov("factory.parent", "factory.talos.dev")], "absolute"),
            (vec![ov("factory.parentVerify", "md5")], "unknown variant"),
            (
                vec![ov("factory.parentVerify", "signature")],
                "factory.parentPublicKeyFile",
            ),
            (
                vec![ov("factory.parentPublicKeyFile", "/k.pub")],
                "factory.parentVerify",
            ),
            (vec![ov("factory.parentTimeoutSeconds", "0")], "at least 1"),
        ] {
            let err = Config::load(None, &overrides).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn tftp_limits() {
        let c = Config::default();
        assert_eq!(
            (
                c.pxe.tftp_max_sessions,
                c.pxe.tftp_max_sessions_per_client,
                c.pxe.tftp_timeout_seconds
            ),
            (512, 8, 2)
        );
        let c = Config::load(
            None,
            &[
                ov("pxe.tftpMaxSessions", "64"),
                ov("pxe.tftpMaxSessionsPerClient", "2"),
                ov("pxe.tftpTimeoutSeconds", "10"),
            ],
        )
        .unwrap();
        assert_eq!(c.pxe.tftp_max_sessions, 64);
        assert_eq!(c.pxe.tftp_max_sessions_per_client, 2);
        assert_eq!(c.pxe.tftp_timeout_seconds, 10);
        for (key, value, want) in [
            ("pxe.tftpMaxSessions", "0", "at least 1"),
            ("pxe.tftpMaxSessionsPerClient", "0", "at least 1"),
            ("pxe.tftpTimeoutSeconds", "0", "between 1 and 10"),
            ("pxe.tftpTimeoutSeconds", "255", "between 1 and 10"),
        ] {
            let e = Config::load(None, &[ov(key, value)])
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains(want), "{key}={value}: {e}");
        }
    }

    #[test]
    fn external_pxe_url_defaults_to_external_url() {
        let c = Config::load(None, &[ov("http.externalURL", "https://factory.example/")]).unwrap();
        assert_eq!(c.external_url(), "https://factory.example");
        assert_eq!(c.external_pxe_url(), "https://factory.example");
    }

    #[test]
    fn full_dhcp_mode_needs_interfaces_and_a_valid_range() {
        let full = |extra: &[Override]| {
            let mut o = vec![ov("pxe.dhcpMode", "full")];
            o.extend_from_slice(extra);
            Config::load(None, &o)
        };
        let e = full(&[ov("pxe.dhcp.range", "192.0.2.100-192.0.2.199")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("pxe.interfaces"), "{e}");
        let e = full(&[ov("pxe.interfaces", "b0")]).unwrap_err().to_string();
        assert!(e.contains("pxe.dhcp.range"), "{e}");
        let ok = full(&[
            ov("pxe.interfaces", "b0"),
            ov("pxe.dhcp.range", "192.0.2.100-192.0.2.199"),
            ov("pxe.dhcp.dns", "192.0.2.1,192.0.2.2"),
            ov("pxe.dhcp.netmask", "255.255.255.0"),
        ])
        .unwrap();
        assert_eq!(ok.pxe.dhcp_mode, DhcpMode::Full);
        assert_eq!(ok.pxe.dhcp.dns.len(), 2);
        for (key, value, named) in [
            ("pxe.dhcp.router", "198.51.100.1", "pxe.dhcp.router"),
            (
                "pxe.dhcp.range",
                "192.0.2.199-192.0.2.100",
                "pxe.dhcp.range",
            ),
            ("pxe.dhcp.range", "192.0.2.100", "pxe.dhcp.range"),
        ] {
            let e = full(&[
                ov("pxe.interfaces", "b0"),
                ov("pxe.dhcp.range", "192.0.2.100-192.0.2.199"),
                ov("pxe.dhcp.netmask", "255.255.255.0"),
                ov(key, value),
            ])
            .unwrap_err()
            .to_string();
            assert!(e.contains(named), "{key}={value}: {e}");
        }
    }

    fn load_err(overrides: &[Override]) -> String {
        Config::load(None, overrides).unwrap_err().to_string()
    }

    fn load_file_err(yaml: &str) -> String {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(yaml.as_bytes()).unwrap();
        Config::load(Some(f.path()), &[]).unwrap_err().to_string()
    }

    #[test]
    fn talos_versions_are_parsed_at_load() {
        let c = Config::load(
            None,
            &[
                ov("build.minTalosVersion", "v1.9.0"),
                ov("build.brokenTalosVersions", "1.10.1, v1.11.0-beta.1"),
            ],
        )
        .unwrap();
        assert_eq!(c.build.min_talos_version, TalosVersion::new(1, 9, 0));
        assert_eq!(
            c.build.broken_talos_versions,
            vec![
                TalosVersion::new(1, 10, 1),
                "1.11.0-beta.1".parse().unwrap()
            ]
        );
        // Shown without the `v`, as the default is written, and read back the same.
        let shown = c.to_yaml();
        assert!(shown.contains("minTalosVersion: 1.9.0"), "{shown}");
        assert!(shown.contains("- 1.11.0-beta.1"), "{shown}");
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(shown.as_bytes()).unwrap();
        assert_eq!(Config::load(Some(f.path()), &[]).unwrap(), c);
    }

    #[test]
    fn bad_broken_talos_versions_entries_are_rejected_naming_key_and_entry() {
        let e = load_err(&[ov("build.brokenTalosVersions", "1.10.1,1.10")]);
        assert!(
            e.contains("build.brokenTalosVersions")
                && e.contains("entry 1")
                && e.contains("\"1.10\""),
            "{e}"
        );
        let e = load_file_err("build:\n  brokenTalosVersions: [v1.9.0, banana]\n");
        assert!(
            e.contains("brokenTalosVersions") && e.contains("entry 1") && e.contains("banana"),
            "{e}"
        );
        for bad in ["1.9", "vv1.9.0", "V1.9.0", ""] {
            let e = load_err(&[ov("build.minTalosVersion", bad)]);
            assert!(e.contains("build.minTalosVersion"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn bad_listen_addresses_are_rejected_at_load() {
        for key in ["metrics.listen", "http.listen"] {
            let e = load_err(&[ov(key, "localhost:9100")]);
            assert!(e.contains(key) && e.contains("ADDR:PORT"), "{key}: {e}");
        }
        let e = load_file_err("metrics:\n  listen: 9100\n");
        assert!(e.contains("metrics.listen"), "{e}");
        let e = load_err(&[
            ov("http.tls.selfSigned", "true"),
            ov("http.plainListen", "0.0.0.0"),
        ]);
        assert!(
            e.contains("http.plainListen") && e.contains("ADDR:PORT"),
            "{e}"
        );
        let c = Config::load(None, &[ov("metrics.listen", "127.0.0.1:9100")]).unwrap();
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9100".parse().unwrap()));
    }

    #[test]
    fn efi_binary_is_a_closed_set() {
        let c = Config::load(None, &[ov("pxe.efiBinary", "snponly.efi")]).unwrap();
        assert_eq!(c.pxe.efi_binary, EfiBinary::SnponlyEfi);
        assert_eq!(c.pxe.efi_binary.file_name(), "snponly.efi");
        assert!(c.to_yaml().contains("efiBinary: snponly.efi"));
        let e = load_err(&[ov("pxe.efiBinary", "undionly.kpxe")]);
        assert!(
            e.contains("pxe.efiBinary") && e.contains("ipxe.efi") && e.contains("snponly.efi"),
            "{e}"
        );
        let e = load_file_err("pxe:\n  efiBinary: IPXE.EFI\n");
        assert!(
            e.contains("pxe.efiBinary") && e.contains("snponly.efi"),
            "{e}"
        );
    }

    #[test]
    fn empty_strings_mean_unset() {
        let c = Config::load(
            None,
            &[
                ov("metrics.listen", ""),
                ov("http.externalURL", ""),
                ov("pxe.advertiseAddress", ""),
                ov("pxe.bootURL", ""),
                ov("api.adminToken", ""),
                ov("cache.signingKeyPath", ""),
            ],
        )
        .unwrap();
        assert_eq!(c, Config::default());
        // And unset values are shown as empty strings again.
        let shown = Config::default().to_yaml();
        for line in [
            "externalURL: ''",
            "plainListen: ''",
            "advertiseAddress: ''",
            "bootURL: ''",
            "adminToken: ''",
            "signingKeyPath: ''",
        ] {
            assert!(shown.contains(line), "{line}: {shown}");
        }
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(shown.as_bytes()).unwrap();
        assert_eq!(
            Config::load(Some(f.path()), &[]).unwrap(),
            Config::default()
        );
        let e = load_err(&[ov("pxe.advertiseAddress", "fd00::1")]);
        assert!(
            e.contains("pxe.advertiseAddress") && e.contains("IPv4"),
            "{e}"
        );
        let e = load_err(&[ov(
            "upstream.registries",
            "{ghcr.io: {endpoint: '127.0.0.1:5000'}}",
        )]);
        assert!(e.contains("endpoint") && e.contains("absolute http"), "{e}");
    }

    #[test]
    fn registry_hosts_are_named_by_key() {
        let e = load_err(&[ov("mirror.allow", "ghcr.io,bad host")]);
        assert!(
            e.contains("mirror.allow entry 1") && e.contains("bad host"),
            "{e}"
        );
        let e = load_err(&[ov("mirror.defaultRegistry", "-x")]);
        assert!(e.contains("mirror.defaultRegistry:"), "{e}");
        let e = load_err(&[ov("artifacts.core.registry", "")]);
        assert!(e.contains("artifacts.core.registry:"), "{e}");
    }

    #[test]
    fn artifact_component_names_are_checked_at_load() {
        let e = load_err(&[ov("artifacts.core.components.imager", "Siderolabs/Imager")]);
        assert!(e.contains("artifacts.core.components.imager"), "{e}");
        let c = Config::default();
        let name = c.artifacts.core.image_name("siderolabs/imager").unwrap();
        assert_eq!(name.to_string(), "ghcr.io/siderolabs/imager");
    }

    #[test]
    fn external_urls_are_derived_in_one_place() {
        let c = Config::load(None, &[ov("http.listen", "0.0.0.0:9000")]).unwrap();
        assert_eq!(c.external_url(), "http://127.0.0.1:9000");
        assert_eq!(c.external_url_as_written(), "http://127.0.0.1:9000/");
        assert_eq!(c.external_pxe_url(), "http://127.0.0.1:9000");
        assert_eq!(c.external_host(), "127.0.0.1");
        let c = Config::load(None, &[ov("http.listen", "[::]:9000")]).unwrap();
        assert_eq!(c.external_url(), "http://[::1]:9000");
        assert_eq!(c.external_host(), "::1");
        let c = Config::load(
            None,
            &[
                ov("http.externalURL", "https://[fd00::1]:8443/"),
                ov("http.tls.selfSigned", "true"),
                ov("http.plainListen", "0.0.0.0:8080"),
            ],
        )
        .unwrap();
        assert_eq!(c.external_url(), "https://[fd00::1]:8443");
        assert_eq!(c.external_url_as_written(), "https://[fd00::1]:8443/");
        assert_eq!(c.external_host(), "fd00::1");
        assert_eq!(c.external_pxe_url(), "http://[fd00::1]:8080");
        assert_eq!(c.boot_scheme_port(), ("http", 8080));
        let c = Config::load(None, &[ov("http.tls.selfSigned", "true")]).unwrap();
        assert_eq!(c.external_url(), "https://127.0.0.1:8080");
        assert_eq!(c.boot_scheme_port(), ("https", 8080));
    }

    #[test]
    fn https_boot_keeps_scripts_and_boot_urls_on_the_tls_listener() {
        // pxe.ipxeVariant https: the plain listener is not used for the boot path.
        let c = Config::load(
            None,
            &[
                ov("http.externalURL", "https://192.0.2.10:8443/"),
                ov("http.listen", "0.0.0.0:8443"),
                ov("http.tls.selfSigned", "true"),
                ov("http.plainListen", "0.0.0.0:8080"),
                ov("pxe.ipxeVariant", "https"),
                ov("pxe.ipxeTrust", "boot-ca"),
            ],
        )
        .unwrap();
        assert_eq!(c.external_pxe_url(), "https://192.0.2.10:8443");
        assert_eq!(c.boot_scheme_port(), ("https", 8443));
        assert_eq!(c.pxe.ipxe_trust, IpxeTrust::BootCa);
        // Without TLS, https is asked for but there is no TLS listener: plain as before
        // (netboot refuses to start without pxe.bootURL).
        let c = Config::load(None, &[ov("pxe.ipxeVariant", "https")]).unwrap();
        assert_eq!(c.boot_scheme_port(), ("http", 8080));
        let c = Config::load(None, &[ov("pxe.ipxeTrust", "ipxe-root")]).unwrap();
        assert_eq!(c.pxe.ipxe_trust, IpxeTrust::IpxeRoot);
        // auto: the boot CA for our own boot URL, iPXE's root behind a proxy; explicit wins.
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c.pxe.ipxe_trust, IpxeTrust::Auto);
        assert_eq!(c.pxe.effective_ipxe_trust(), IpxeTrust::BootCa);
        let proxy = ov("pxe.bootURL", "https://192.0.2.20");
        let c = Config::load(None, std::slice::from_ref(&proxy)).unwrap();
        assert_eq!(c.pxe.effective_ipxe_trust(), IpxeTrust::IpxeRoot);
        let c = Config::load(None, &[proxy, ov("pxe.ipxeTrust", "boot-ca")]).unwrap();
        assert_eq!(c.pxe.effective_ipxe_trust(), IpxeTrust::BootCa);
        assert!(load_err(&[ov("pxe.ipxeTrust", "anything")]).contains("pxe.ipxeTrust"));
    }

    #[test]
    fn the_default_file_is_read_only_when_it_exists_and_none_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("config.yaml");
        let given = dir.path().join("other.yaml");
        // Absent default, nothing given: no file.
        assert_eq!(resolve_file(None, &default), None);
        // Given wins, whether or not it (or the default) exists.
        assert_eq!(resolve_file(Some(&given), &default), Some(given.clone()));
        std::fs::write(&default, "offline: true\n").unwrap();
        assert_eq!(resolve_file(None, &default), Some(default.clone()));
        assert_eq!(resolve_file(Some(&given), &default), Some(given));
        assert_eq!(DEFAULT_CONFIG_FILE, "/etc/bootfactory/config.yaml");
    }

    #[test]
    fn the_admin_socket_is_in_the_data_dir_unless_set_or_disabled() {
        let mut c = Config {
            data_dir: PathBuf::from("/srv/bf"),
            ..Config::default()
        };
        assert_eq!(
            c.admin_socket_path(),
            Some(PathBuf::from("/srv/bf/admin.sock"))
        );
        c.api.socket = Some(PathBuf::from("/run/bootfactory/admin.sock"));
        assert_eq!(
            c.admin_socket_path(),
            Some(PathBuf::from("/run/bootfactory/admin.sock"))
        );
        let off = Config::load(
            None,
            &[Override {
                key: "api.socket".into(),
                value: String::new(),
                source_name: "--api-socket".into(),
            }],
        )
        .unwrap();
        assert_eq!(off.admin_socket_path(), None);
    }
}
