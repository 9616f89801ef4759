//! Network-boot services: the proxy-DHCP responder and the TFTP server, configured from
//! `pxe.*` and wired to the per-MAC [`Assignments`](crate::assign::Assignments).
//!
//! The DHCP side asks the assignment table whether to answer a MAC (policy `ignore` keeps
//! unassigned machines from ever seeing us) and records every PXE client in the inventory;
//! TFTP serves the embedded iPXE binaries (and `pxe.tftpDir`).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use std::collections::HashMap;

use crate::assign::{Assignments, BootAnswer, Sighting};
use crate::config::{Config, DhcpMode, IpxeVariant};
use crate::dhcp::{
    BootFiles, ClientInfo, ClientPolicy, FullDhcpConfig, Leases, PoolConfig, ProxyDhcp,
    ProxyDhcpConfig, Reservation, Served, Subnet,
};
use crate::mac::MacAddr;
use crate::tftp::{TftpConfig, TftpFiles, TftpService};

/// The DHCP [`ClientPolicy`] backed by the assignment table.
pub struct AssignmentPolicy {
    assignments: Assignments,
    /// Static reservations by MAC and by address, rebuilt when the table changed.
    reservations: std::sync::Mutex<ReservationCache>,
}

struct ReservationCache {
    changes: tokio::sync::watch::Receiver<u64>,
    by_mac: HashMap<MacAddr, Reservation>,
    by_ip: HashMap<Ipv4Addr, MacAddr>,
    loaded: bool,
}

impl AssignmentPolicy {
    /// Wraps the assignment table.
    pub fn new(assignments: Assignments) -> AssignmentPolicy {
        let changes = assignments.subscribe();
        AssignmentPolicy {
            assignments,
            reservations: std::sync::Mutex::new(ReservationCache {
                changes,
                by_mac: HashMap::new(),
                by_ip: HashMap::new(),
                loaded: false,
            }),
        }
    }

    /// Runs `f` on the reservations, reloading them first if assignments changed.
    fn with_reservations<R>(&self, f: impl FnOnce(&ReservationCache) -> R) -> R {
        let mut cache = self.reservations.lock().unwrap_or_else(|e| e.into_inner());
        if !cache.loaded || cache.changes.has_changed().unwrap_or(false) {
            cache.changes.borrow_and_update();
            match self.assignments.reservations() {
                Ok(list) => {
                    cache.by_ip = list
                        .iter()
                        .filter_map(|(mac, r)| r.ip.map(|ip| (ip, *mac)))
                        .collect();
                    cache.by_mac = list.into_iter().collect();
                    cache.loaded = true;
                }
                Err(e) => {
                    tracing::warn!(error = %crate::errors::chain(&e), "cannot read the static DHCP reservations");
                }
            }
        }
        f(&cache)
    }
}

impl ClientPolicy for AssignmentPolicy {
    fn answer(&self, client: &ClientInfo) -> bool {
        match self.assignments.answer_for(MacAddr(client.mac)) {
            Ok(BootAnswer::Ignore) => false,
            Ok(_) => true,
            Err(e) => {
                // Answering lets the machine reach /boot, which reports the problem; staying
                // silent would hide it.
                tracing::warn!(mac = %MacAddr(client.mac), error = %crate::errors::chain(&e), "assignment lookup failed");
                true
            }
        }
    }

    fn observed(&self, client: &ClientInfo, served: Option<&Served>) {
        let sighting = Sighting {
            client_arch: Some(client.arch),
            uuid: client.uuid.clone(),
            ip: client.client_ip.map(|ip| ip.to_string()),
            vendor_class: Some(client.vendor_class.clone()),
            user_class: client.user_class.clone(),
            served: match served {
                Some(s) => format!("dhcp: {s}"),
                None => "dhcp: nothing (not answered)".to_string(),
            },
        };
        if let Err(e) = self.assignments.record(MacAddr(client.mac), sighting) {
            tracing::warn!(mac = %MacAddr(client.mac), error = %crate::errors::chain(&e), "cannot record the machine in the inventory");
        }
    }

    fn reservation(&self, mac: [u8; 6]) -> Reservation {
        self.with_reservations(|c| c.by_mac.get(&MacAddr(mac)).cloned().unwrap_or_default())
    }

    fn reserved_by_other(&self, ip: Ipv4Addr, mac: [u8; 6]) -> bool {
        self.with_reservations(|c| c.by_ip.get(&ip).is_some_and(|owner| owner.0 != mac))
    }
}

/// The IPv4 addresses and prefix lengths of interface `name`.
fn interface_addresses(name: &str) -> anyhow::Result<Vec<(Ipv4Addr, Ipv4Addr)>> {
    let addrs = nix::ifaddrs::getifaddrs().context("cannot list network interfaces")?;
    Ok(addrs
        .filter(|a| a.interface_name == name)
        .filter_map(|a| {
            let ip = a.address.as_ref()?.as_sockaddr_in()?.ip();
            let mask = a.netmask.as_ref()?.as_sockaddr_in()?.ip();
            Some((ip, mask))
        })
        .collect())
}

/// Full DHCP's pool as configured, the netmask derived when unset, and checked.
#[derive(Debug, Clone)]
pub struct FullPool {
    /// The pool.
    pub pool: PoolConfig,
    /// Its subnet.
    pub subnet: Subnet,
    /// The configured interfaces with an address in the subnet (unrelayed clients are
    /// answered there only).
    pub direct_interfaces: Vec<String>,
}

/// Resolves `pxe.dhcp.*` for full mode: the netmask is `pxe.dhcp.netmask`, else the prefix of
/// the configured interface address whose subnet holds the range. The pool is checked
/// ([`PoolConfig::validate`]) with the advertised address.
pub fn full_pool(config: &Config, advertise: Ipv4Addr) -> anyhow::Result<FullPool> {
    let dhcp = &config.pxe.dhcp;
    let range = dhcp
        .range
        .context("pxe.dhcpMode: full needs pxe.dhcp.range")?;
    let mut per_iface = Vec::new();
    for iface in &config.pxe.interfaces {
        per_iface.push((iface.clone(), interface_addresses(iface)?));
    }
    let netmask = match dhcp.netmask {
        Some(m) => m,
        None => per_iface
            .iter()
            .flat_map(|(_, addrs)| addrs.iter())
            .find(|(ip, mask)| {
                Subnet::of(*ip, *mask).is_some_and(|s| s.contains_host(range.start))
            })
            .map(|(_, mask)| *mask)
            .with_context(|| {
                format!(
                    "pxe.dhcp.netmask is unset and no interface of pxe.interfaces ({}) has an address in the subnet of {range}: set pxe.dhcp.netmask, or give the interface an address there",
                    config.pxe.interfaces.join(", ")
                )
            })?,
    };
    let pool = dhcp.pool(netmask).context("pxe.dhcp.range is unset")?;
    let subnet = pool
        .validate(Some(advertise))
        .context("invalid full DHCP pool")?;
    let direct_interfaces = per_iface
        .into_iter()
        .filter(|(_, addrs)| addrs.iter().any(|(ip, _)| subnet.contains_host(*ip)))
        .map(|(name, _)| name)
        .collect::<Vec<_>>();
    if direct_interfaces.is_empty() {
        tracing::warn!(%subnet, "full DHCP: no configured interface has an address in the pool's subnet: only relayed requests will be answered");
    }
    Ok(FullPool {
        pool,
        subnet,
        direct_interfaces,
    })
}

/// Opens the full DHCP server's leases in the store (`pxe.dhcpMode: full` with `pxe.enabled`;
/// `None` otherwise) and makes the assignment table check fixed addresses against the
/// pool's subnet.
pub fn open_leases(
    config: &Config,
    store: &crate::store::Store,
    assignments: &Assignments,
) -> anyhow::Result<Option<Arc<Leases>>> {
    if !config.pxe.enabled || config.pxe.dhcp_mode != DhcpMode::Full {
        return Ok(None);
    }
    let advertise = advertise_address(config)?;
    let full = full_pool(config, advertise)?;
    let tree = store
        .db()
        .open_tree(crate::dhcp::LEASES_TREE)
        .context("cannot open the DHCP lease database")?;
    let leases = Leases::open(
        tree,
        full.pool,
        full.subnet,
        crate::dhcp::leases::unix_now(),
    )
    .context("cannot load the DHCP leases")?;
    assignments.set_reservation_subnet(Some(full.subnet));
    Ok(Some(Arc::new(leases)))
}

/// The address PXE clients reach us at: `pxe.advertiseAddress`, else the first IPv4 address
/// of the first configured interface (or of any non-loopback interface).
pub fn advertise_address(config: &Config) -> anyhow::Result<Ipv4Addr> {
    if let Some(address) = config.pxe.advertise_address {
        return Ok(address);
    }
    let wanted = config.pxe.interfaces.first();
    let addrs = nix::ifaddrs::getifaddrs().context("cannot list network interfaces")?;
    for a in addrs {
        if wanted.is_some_and(|w| *w != a.interface_name) {
            continue;
        }
        let Some(ip) = a
            .address
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .map(|s| s.ip())
        else {
            continue;
        };
        if wanted.is_none() && ip.is_loopback() {
            continue;
        }
        return Ok(ip);
    }
    match wanted {
        Some(w) => bail!("interface {w} has no IPv4 address; set pxe.advertiseAddress"),
        None => {
            bail!("no interface has an IPv4 address; set pxe.advertiseAddress or pxe.interfaces")
        }
    }
}

/// The base URL iPXE and UEFI HTTP-boot clients fetch from: `pxe.bootURL`, else
/// `http://<advertise>:<http port>`.
pub fn boot_url(config: &Config, advertise: Ipv4Addr) -> anyhow::Result<String> {
    if let Some(url) = &config.pxe.boot_url {
        return Ok(url.base().to_string());
    }
    if config.pxe.ipxe_variant == IpxeVariant::Https {
        bail!(
            "pxe.ipxeVariant https needs pxe.bootURL: the https:// URL (IP literal) of the TLS proxy in front of bootfactory"
        );
    }
    let (scheme, port) = config.boot_scheme_port();
    Ok(format!("{scheme}://{advertise}:{port}"))
}

/// Name, help and labels of the network-boot metrics.
const NETBOOT_METRICS: [(&str, &str, &[&str]); 6] = [
    (
        "bootfactory_dhcp_packets_total",
        "DHCP packets received by the DHCP server (proxy or full mode), and what became of them",
        &["outcome"],
    ),
    (
        "bootfactory_tftp_requests_total",
        "TFTP read requests, by outcome (refused_busy: the session cap was reached; \
         refused_client_busy: the per-client cap)",
        &["outcome"],
    ),
    (
        "bootfactory_tftp_sent_bytes_total",
        "Bytes sent by the TFTP server",
        &[],
    ),
    (
        "bootfactory_tftp_sessions",
        "TFTP transfers in progress",
        &[],
    ),
    (
        "bootfactory_tftp_sessions_max",
        "Cap on TFTP transfers in progress (pxe.tftpMaxSessions, held to 1/8 of the fd limit)",
        &[],
    ),
    (
        "bootfactory_dhcp_leases",
        "Full DHCP mode: leases by state (offered, bound, declined)",
        &["state"],
    ),
];

/// Exposes the proxy-DHCP and TFTP counters as `bootfactory_dhcp_packets_total{outcome}` and
/// `bootfactory_tftp_*_total`, read at scrape time.
struct NetbootCollector {
    dhcp: Arc<crate::dhcp::DhcpStats>,
    tftp: Arc<crate::tftp::TftpStats>,
    tftp_max_sessions: usize,
    leases: Option<Arc<Leases>>,
    descs: Vec<prometheus::core::Desc>,
}

impl NetbootCollector {
    fn families(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::core::Collector;
        let d = self.dhcp.snapshot();
        let t = self.tftp.snapshot();
        let dhcp = prometheus::IntCounterVec::new(
            prometheus::Opts::new(NETBOOT_METRICS[0].0, NETBOOT_METRICS[0].1),
            &["outcome"],
        )
        .expect("valid metric");
        for (outcome, n) in [
            ("received", d.received),
            ("offer", d.offers),
            ("ack", d.acks),
            ("ignored_not_pxe", d.ignored),
            ("silenced_by_policy", d.silenced),
            ("dropped_malformed", d.dropped_malformed),
            ("rate_limited", d.rate_limited),
            ("no_binary_for_arch", d.no_binary_for_arch),
            ("unknown_arch", d.unknown_arch),
            ("send_error", d.send_errors),
            ("discover", d.discover),
            ("request", d.request),
            ("decline", d.decline),
            ("release", d.release),
            ("inform", d.inform),
            ("nak", d.naks),
            ("pool_exhausted", d.pool_exhausted),
            ("relay_refused", d.relay_refused),
            ("probe_conflict", d.probe_conflict),
            ("probe_busy", d.probe_busy),
        ] {
            dhcp.with_label_values(&[outcome]).inc_by(n);
        }
        let tftp = prometheus::IntCounterVec::new(
            prometheus::Opts::new(NETBOOT_METRICS[1].0, NETBOOT_METRICS[1].1),
            &["outcome"],
        )
        .expect("valid metric");
        for (outcome, n) in [
            ("received", t.requests),
            ("served", t.served),
            ("refused", t.refused),
            ("not_found", t.not_found),
            ("refused_busy", t.refused_busy),
            ("refused_client_busy", t.refused_client_busy),
        ] {
            tftp.with_label_values(&[outcome]).inc_by(n);
        }
        let bytes = prometheus::IntCounter::new(NETBOOT_METRICS[2].0, NETBOOT_METRICS[2].1)
            .expect("valid metric");
        bytes.inc_by(t.bytes_sent);
        let sessions = prometheus::IntGauge::new(NETBOOT_METRICS[3].0, NETBOOT_METRICS[3].1)
            .expect("valid metric");
        sessions.set(i64::try_from(t.in_progress).unwrap_or(i64::MAX));
        let sessions_max = prometheus::IntGauge::new(NETBOOT_METRICS[4].0, NETBOOT_METRICS[4].1)
            .expect("valid metric");
        sessions_max.set(i64::try_from(self.tftp_max_sessions).unwrap_or(i64::MAX));
        let mut out = dhcp.collect();
        if let Some(leases) = &self.leases {
            let gauge = prometheus::IntGaugeVec::new(
                prometheus::Opts::new(NETBOOT_METRICS[5].0, NETBOOT_METRICS[5].1),
                &["state"],
            )
            .expect("valid metric");
            for (state, n) in leases.counts(crate::dhcp::leases::unix_now()) {
                gauge
                    .with_label_values(&[state.as_str()])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            out.extend(gauge.collect());
        }
        out.extend(tftp.collect());
        out.extend(bytes.collect());
        out.extend(sessions.collect());
        out.extend(sessions_max.collect());
        out
    }
}

impl prometheus::core::Collector for NetbootCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.families()
    }
}

/// The bound network-boot services.
pub struct Netboot {
    dhcp: ProxyDhcp,
    tftp: TftpService,
}

impl Netboot {
    /// Binds proxy-DHCP and TFTP as `config.pxe` says.
    ///
    /// With `leases` (from [`open_leases`]) the DHCP side is the full server.
    pub async fn bind(
        config: &Config,
        assignments: Assignments,
        metrics: &crate::metrics::Metrics,
        leases: Option<Arc<Leases>>,
    ) -> anyhow::Result<Netboot> {
        let advertise = advertise_address(config)?;
        let boot_url = boot_url(config, advertise)?;
        let dhcp_config = ProxyDhcpConfig {
            interfaces: config.pxe.interfaces.clone(),
            server_ip: advertise,
            dhcp_port: config.pxe.dhcp_port,
            proxy_port: config.pxe.proxy_port,
            client_port: config.pxe.client_port,
            boot_url_base: boot_url.clone(),
            require_https: config.pxe.ipxe_variant == IpxeVariant::Https,
            boot_files: BootFiles {
                bios: crate::ipxe::BIOS.to_string(),
                efi_x64: config.pxe.efi_binary.file_name().to_string(),
                efi_arm64: crate::ipxe::EFI_ARM64.to_string(),
                efi_ia32: None,
            },
            ..ProxyDhcpConfig::default()
        };
        let policy = Arc::new(AssignmentPolicy::new(assignments));
        let dhcp = match &leases {
            None => ProxyDhcp::bind(dhcp_config, policy)
                .await
                .context("cannot start the proxy-DHCP server (pxe.*)")?,
            Some(leases) => {
                let full = full_pool(config, advertise)?;
                let full = FullDhcpConfig {
                    leases: leases.clone(),
                    direct_interfaces: full.direct_interfaces,
                    server_check: crate::dhcp::probe::SERVER_CHECK,
                };
                ProxyDhcp::bind_full(dhcp_config, full, policy)
                    .await
                    .context("cannot start the full DHCP server (pxe.dhcpMode: full)")?
            }
        };
        let mut files = TftpFiles::new();
        for b in crate::ipxe::BINARIES {
            files.insert(b.name, bytes::Bytes::from_static(b.data));
        }
        let tftp_config = TftpConfig {
            // Replies come from the listening address: listen on the advertised one.
            listen: SocketAddr::from((advertise, config.pxe.tftp_port)),
            interface: config.pxe.interfaces.first().cloned(),
            max_block_size: None,
            window_size_limit: 16,
            timeout: Duration::from_secs(config.pxe.tftp_timeout_seconds),
            extra_dir: config.pxe.tftp_dir.clone(),
            max_sessions: config.pxe.tftp_max_sessions,
            max_sessions_per_client: config.pxe.tftp_max_sessions_per_client,
        };
        let tftp = TftpService::bind(tftp_config, files)
            .await
            .context("cannot start the TFTP server (pxe.*)")?;
        let collector = NetbootCollector {
            dhcp: dhcp.stats(),
            tftp: tftp.stats(),
            tftp_max_sessions: tftp.max_sessions(),
            leases,
            descs: NETBOOT_METRICS
                .iter()
                .map(|(name, help, labels)| {
                    let labels = labels.iter().map(|l| l.to_string()).collect();
                    prometheus::core::Desc::new(
                        name.to_string(),
                        help.to_string(),
                        labels,
                        Default::default(),
                    )
                    .expect("valid metric description")
                })
                .collect(),
        };
        metrics.register_collector(Box::new(collector));
        tracing::info!(
            advertise = %advertise,
            boot_url = %boot_url,
            dhcp = ?dhcp.local_addrs(),
            tftp = %tftp.local_addr(),
            unassigned = ?config.pxe.unassigned,
            dhcp_mode = ?config.pxe.dhcp_mode,
            "network boot ready"
        );
        Ok(Netboot { dhcp, tftp })
    }

    /// Runs both services until `shutdown` fires.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut s2 = shutdown.clone();
        let dhcp = self.dhcp.run(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        });
        let tftp = self.tftp.run(async move {
            let _ = s2.wait_for(|s| *s).await;
        });
        let (d, t) = tokio::join!(dhcp, tftp);
        d.context("DHCP server")?;
        t.context("TFTP server")?;
        Ok(())
    }
}
