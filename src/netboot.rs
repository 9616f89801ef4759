//! Network-boot services: the proxy-DHCP responder and the TFTP server, configured from
//! `pxe.*` and wired to the per-MAC [`Assignments`](crate::assign::Assignments).
//!
//! The DHCP side asks the assignment table whether to answer a MAC (policy `ignore` keeps
//! unassigned machines from ever seeing us) and records every PXE client in the inventory;
//! TFTP serves the embedded iPXE binaries (and `pxe.tftpDir`).
//!
//! ## HTTPS boot
//!
//! With TLS on the main listener, the served EFI iPXE builds trust the *boot CA* — the
//! self-signed root the server's chain ends with — instead of iPXE's root CA
//! ([`served_ipxe`], [`crate::ipxe::trust`]), so iPXE verifies the appliance with no internet
//! access. The BIOS build (`undionly.kpxe`) is compressed and cannot be patched: when the
//! boot URL is `https://` and the EFI builds trust the boot CA, BIOS machines get no answer
//! ([`bios_binary`]) rather than an iPXE that would refuse the certificate after download.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::assign::{Assignments, BootAnswer, Sighting};
use crate::config::{Config, DhcpMode, IpxeTrust, IpxeVariant};
use crate::dhcp::{
    BootFiles, ClientInfo, ClientPolicy, FullDhcpConfig, Leases, PoolConfig, ProxyDhcp,
    ProxyDhcpConfig, Reservations, Served, Subnet,
};
use crate::ipxe::trust::ServedIpxe;
use crate::mac::MacAddr;
use crate::tftp::{TftpConfig, TftpFiles, TftpService};

/// The DHCP [`ClientPolicy`] backed by the assignment table.
pub struct AssignmentPolicy {
    assignments: Assignments,
    /// BIOS machines get no binary ([`bios_binary`]): say why in the inventory.
    bios_refused: bool,
    /// Static reservations, rebuilt when an assignment, the default or the reservation rules
    /// changed (never on a mere sighting).
    reservations: std::sync::Mutex<ReservationCache>,
}

struct ReservationCache {
    changes: tokio::sync::watch::Receiver<u64>,
    snapshot: Option<Arc<Reservations>>,
}

impl AssignmentPolicy {
    /// Wraps the assignment table.
    pub fn new(assignments: Assignments) -> AssignmentPolicy {
        let changes = assignments.subscribe_reservations();
        AssignmentPolicy {
            assignments,
            bios_refused: false,
            reservations: std::sync::Mutex::new(ReservationCache {
                changes,
                snapshot: None,
            }),
        }
    }
}

/// What the inventory records for a BIOS machine left unanswered by [`bios_binary`].
pub const BIOS_REFUSED_NOTE: &str = "dhcp: nothing (BIOS: undionly.kpxe cannot be made to trust the boot CA, and the boot URL is https://)";

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
                None if self.bios_refused && client.arch == 0 && self.answer(client) => {
                    BIOS_REFUSED_NOTE.to_string()
                }
                None => "dhcp: nothing (not answered)".to_string(),
            },
        };
        if let Err(e) = self.assignments.record(MacAddr(client.mac), sighting) {
            tracing::warn!(mac = %MacAddr(client.mac), error = %crate::errors::chain(&e), "cannot record the machine in the inventory");
        }
    }

    fn reservations(&self) -> Arc<Reservations> {
        let mut cache = self.reservations.lock().unwrap_or_else(|e| e.into_inner());
        let stale = cache.changes.has_changed().unwrap_or(false);
        match &cache.snapshot {
            Some(snapshot) if !stale => return snapshot.clone(),
            _ => {}
        }
        cache.changes.borrow_and_update();
        match self.assignments.usable_reservations() {
            Ok(list) => {
                let snapshot = Arc::new(Reservations::new(
                    list.into_iter().map(|(mac, r)| (mac.0, r)),
                ));
                cache.snapshot = Some(snapshot.clone());
                snapshot
            }
            Err(e) => {
                tracing::warn!(error = %crate::errors::chain(&e), "cannot read the static DHCP reservations");
                // The last good snapshot, retried on the next packet.
                cache.changes.mark_changed();
                cache.snapshot.clone().unwrap_or_default()
            }
        }
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
    let rules = crate::dhcp::ReservationRules::new(&full.pool, full.subnet, advertise);
    let leases = Leases::open(
        tree,
        full.pool,
        full.subnet,
        crate::dhcp::leases::unix_now(),
    )
    .context("cannot load the DHCP leases")?;
    assignments.set_reservation_rules(Some(rules));
    // Reservations stored before these rules (another subnet, router or address): warned
    // about now, skipped by the DHCP server.
    if let Err(e) = assignments.usable_reservations() {
        tracing::warn!(error = %crate::errors::chain(&e), "cannot read the static DHCP reservations");
    }
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
/// `<scheme>://<advertise>:<port>` of [`Config::boot_scheme_port`] (`https` on the main
/// listener with `pxe.ipxeVariant: https`).
pub fn boot_url(config: &Config, advertise: Ipv4Addr) -> anyhow::Result<String> {
    if let Some(url) = &config.pxe.boot_url {
        return Ok(url.base().to_string());
    }
    if config.pxe.ipxe_variant == IpxeVariant::Https && !config.http.tls.enabled() {
        bail!(
            "pxe.ipxeVariant https needs TLS on the main listener (http.tls.selfSigned, or http.tls.certFile/keyFile), or pxe.bootURL: the https:// URL (IP literal) of a TLS proxy in front of bootfactory"
        );
    }
    let (scheme, port) = config.boot_scheme_port();
    Ok(format!("{scheme}://{advertise}:{port}"))
}

/// The iPXE binaries to serve over TFTP and `GET /ipxe/{name}`, built once at start.
///
/// Without TLS, or when [`crate::config::PxeConfig::effective_ipxe_trust`] is `ipxe-root`
/// (explicitly, or `auto` with `pxe.bootURL` set: a proxy presents its own certificate),
/// Debian's builds as they are. Otherwise the EFI builds patched to trust the root the
/// server's chain ends with. Refused (an error naming the binary) when a build's trust table
/// is not found exactly once. When the chain has no self-signed root (a `fullchain.pem` from a
/// public or corporate CA) or, on our own `https://` boot URL, iPXE cannot verify it (not
/// RSA): refused only when machines are sent to an `https://` boot URL this server answers
/// (`pxe.ipxeVariant: https` without `pxe.bootURL`), else logged and served as built.
pub fn served_ipxe(config: &Config, tls: Option<&crate::tls::Tls>) -> anyhow::Result<ServedIpxe> {
    let Some(tls) = tls else {
        tracing::debug!("no TLS: the iPXE binaries are served as built (trusting iPXE's root CA)");
        return Ok(ServedIpxe::unpatched());
    };
    if config.pxe.effective_ipxe_trust() == IpxeTrust::IpxeRoot {
        tracing::info!(
            "pxe.ipxeTrust {}: the iPXE binaries are served as built (trusting iPXE's root CA, not this server's)",
            if config.pxe.ipxe_trust == IpxeTrust::Auto {
                "auto (pxe.bootURL is set)"
            } else {
                "ipxe-root"
            }
        );
        return Ok(ServedIpxe::unpatched());
    }
    let anchor = match tls.boot_anchor() {
        Ok(anchor) => anchor,
        Err(e) if config.pxe.serves_https_boot() => {
            return Err(anyhow::Error::new(e).context(
                "HTTPS boot from this server (pxe.ipxeVariant: https) has no certificate for iPXE to trust: append the root CA to http.tls.certFile, or set pxe.ipxeTrust: ipxe-root to serve iPXE as built (trusting iPXE's root CA, e.g. for a public certificate)",
            ));
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "the iPXE binaries are served as built (trusting iPXE's root CA): the TLS chain has no root to trust (set pxe.ipxeTrust: ipxe-root to silence this)"
            );
            return Ok(ServedIpxe::unpatched());
        }
    };
    let served = ServedIpxe::trusting(&anchor.fingerprint)
        .context("cannot make the served iPXE binaries trust the boot CA")?;
    tls.note_served_trust(anchor.fingerprint);
    tracing::info!(
        ca = %anchor.subject,
        sha256 = %hex::encode(anchor.fingerprint),
        "the served EFI iPXE binaries trust the boot CA (only)"
    );
    for b in served.iter() {
        tracing::info!(binary = b.name, sha256 = %b.sha256, patched = b.patched, "iPXE binary served");
    }
    if let Some(why) = &anchor.ipxe_unverifiable {
        let hint = match tls.ca_path() {
            Some(ca) => format!(
                "the appliance CA {} was made by an older bootfactory (ECDSA P-256): rotate it (README: Rotating the boot CA)",
                ca.display()
            ),
            None => "use an RSA certificate chain (http.tls.certFile)".to_string(),
        };
        if config.pxe.serves_https_boot() {
            bail!(
                "pxe.ipxeVariant https: iPXE cannot verify this server's certificate: {why}; {hint}"
            );
        }
        if config.pxe.enabled {
            tracing::warn!(
                "HTTPS boot will fail: iPXE cannot verify this server's certificate: {why}; {hint}"
            );
        } else {
            tracing::info!(
                "iPXE could not boot over HTTPS from this server: {why}; {hint} (only matters for HTTPS boot)"
            );
        }
    }
    Ok(served)
}

/// The binary BIOS machines get: `undionly.kpxe`, except when the boot URL is `https://` and
/// the EFI builds trust the boot CA — the BIOS build is compressed, its trust table cannot be
/// patched, and as built it would download, run, and then refuse our certificate. Such
/// machines are left unanswered (their firmware moves on), and the inventory says why.
pub fn bios_binary(boot_url: &str, served: &ServedIpxe) -> Option<String> {
    let https = boot_url
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    (!(https && served.patched())).then(|| crate::ipxe::BIOS.to_string())
}

/// Name, help and labels of the network-boot metrics.
const NETBOOT_METRICS: [(&str, &str, &[&str]); 9] = [
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
    (
        "bootfactory_tftp_transfers_total",
        "TFTP transfers that ended, by how (complete; client_aborted: the client sent an ERROR, \
         e.g. a tsize probe; timed_out: the client stopped answering; expired: it outlived its total lifetime; evicted: cancelled before \
         its first ACK to make room for a new request; failed: server-side error)",
        &["end"],
    ),
    (
        "bootfactory_tftp_options_total",
        "TFTP transfers by option negotiated (oack: any option, so the transfer began with an OACK)",
        &["option"],
    ),
    (
        "bootfactory_tftp_packets_total",
        "TFTP packets of note: retransmitted (sent again), unknown_tid (from a foreign port, \
         answered with error 5), malformed (dropped), duplicate_request (a repeated RRQ)",
        &["kind"],
    ),
];

/// The descriptions of [`NETBOOT_METRICS`].
fn netboot_descs() -> Vec<prometheus::core::Desc> {
    NETBOOT_METRICS
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
        .collect()
}

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
            ("lease_write_failed", d.lease_write_failed),
            ("decline_refused", d.decline_refused),
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
        for (i, label, values) in [
            (
                6,
                "end",
                vec![
                    ("complete", t.served),
                    ("client_aborted", t.client_aborted),
                    ("timed_out", t.timed_out),
                    ("evicted", t.evicted),
                    ("expired", t.expired),
                    ("failed", t.failed),
                ],
            ),
            (
                7,
                "option",
                vec![
                    ("oack", t.negotiated),
                    ("blksize", t.opt_blksize),
                    ("tsize", t.opt_tsize),
                    ("windowsize", t.opt_windowsize),
                ],
            ),
            (
                8,
                "kind",
                vec![
                    ("retransmitted", t.retransmitted),
                    ("unknown_tid", t.unknown_tid),
                    ("malformed", t.malformed),
                    ("duplicate_request", t.duplicate_requests),
                ],
            ),
        ] {
            let family = prometheus::IntCounterVec::new(
                prometheus::Opts::new(NETBOOT_METRICS[i].0, NETBOOT_METRICS[i].1),
                &[label],
            )
            .expect("valid metric");
            for (value, n) in values {
                family.with_label_values(&[value]).inc_by(n);
            }
            out.extend(family.collect());
        }
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
        ipxe: &ServedIpxe,
        metrics: &crate::metrics::Metrics,
        leases: Option<Arc<Leases>>,
    ) -> anyhow::Result<Netboot> {
        let advertise = advertise_address(config)?;
        let boot_url = boot_url(config, advertise)?;
        let bios = bios_binary(&boot_url, ipxe);
        if bios.is_none() {
            tracing::warn!(
                boot_url = %boot_url,
                "BIOS machines will not be answered: undionly.kpxe is compressed, so it cannot be made to trust the boot CA, and the boot URL is https:// (boot BIOS machines with pxe.ipxeVariant http and http.plainListen, or UEFI)"
            );
        }
        let dhcp_config = ProxyDhcpConfig {
            interfaces: config.pxe.interfaces.clone(),
            server_ip: advertise,
            dhcp_port: config.pxe.dhcp_port,
            proxy_port: config.pxe.proxy_port,
            client_port: config.pxe.client_port,
            boot_url_base: boot_url.clone(),
            require_https: config.pxe.ipxe_variant == IpxeVariant::Https,
            boot_files: BootFiles {
                bios,
                efi_x64: config.pxe.efi_binary.file_name().to_string(),
                efi_arm64: crate::ipxe::EFI_ARM64.to_string(),
                efi_ia32: None,
            },
            ..ProxyDhcpConfig::default()
        };
        let policy = Arc::new(AssignmentPolicy {
            bios_refused: dhcp_config.boot_files.bios.is_none(),
            ..AssignmentPolicy::new(assignments)
        });
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
        for b in ipxe.iter() {
            files.insert(b.name, b.data.clone());
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
            min_lifetime: crate::tftp::DEFAULT_MIN_LIFETIME,
        };
        let tftp = TftpService::bind(tftp_config, files)
            .await
            .context("cannot start the TFTP server (pxe.*)")?;
        let collector = NetbootCollector {
            dhcp: dhcp.stats(),
            tftp: tftp.stats(),
            tftp_max_sessions: tftp.max_sessions(),
            leases,
            descs: netboot_descs(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsConfig;
    use crate::dhcp::Reservation;

    #[test]
    fn tftp_metrics_are_exposed() {
        let tftp = Arc::new(crate::tftp::TftpStats::default());
        crate::tftp::TftpStats::bump(&tftp.timed_out, 3);
        crate::tftp::TftpStats::bump(&tftp.opt_windowsize, 2);
        crate::tftp::TftpStats::bump(&tftp.unknown_tid, 1);
        let collector = NetbootCollector {
            dhcp: Arc::new(crate::dhcp::DhcpStats::default()),
            tftp,
            tftp_max_sessions: 7,
            leases: None,
            descs: netboot_descs(),
        };
        let registry = prometheus::Registry::new();
        registry.register(Box::new(collector)).unwrap();
        let mut text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut text,
        )
        .unwrap();
        let text = String::from_utf8(text).unwrap();
        for line in [
            "bootfactory_tftp_transfers_total{end=\"timed_out\"} 3",
            "bootfactory_tftp_transfers_total{end=\"client_aborted\"} 0",
            "bootfactory_tftp_options_total{option=\"windowsize\"} 2",
            "bootfactory_tftp_packets_total{kind=\"unknown_tid\"} 1",
            "bootfactory_tftp_sessions_max 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    fn config_in(dir: &std::path::Path) -> Config {
        let mut c = Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        };
        c.pxe.enabled = true;
        c.pxe.advertise_address = Some(Ipv4Addr::new(192, 0, 2, 10));
        c.http.listen = SocketAddr::from(([192, 0, 2, 10], 8443));
        c
    }

    fn self_signed(c: &mut Config) {
        c.http.tls = TlsConfig {
            self_signed: true,
            ..TlsConfig::default()
        };
    }

    #[test]
    fn https_boot_defaults_to_the_tls_listener_and_needs_tls() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config_in(dir.path());
        let advertise = c.pxe.advertise_address.unwrap();
        c.pxe.ipxe_variant = IpxeVariant::Https;
        let e = boot_url(&c, advertise).unwrap_err().to_string();
        assert!(e.contains("needs TLS"), "{e}");
        self_signed(&mut c);
        assert_eq!(boot_url(&c, advertise).unwrap(), "https://192.0.2.10:8443");
        // Even with a plain listener next to it: https was asked for.
        c.http.plain_listen = Some(SocketAddr::from(([0, 0, 0, 0], 8081)));
        assert_eq!(boot_url(&c, advertise).unwrap(), "https://192.0.2.10:8443");
        c.pxe.ipxe_variant = IpxeVariant::Http;
        assert_eq!(boot_url(&c, advertise).unwrap(), "http://192.0.2.10:8081");
    }

    #[test]
    fn bios_gets_no_binary_only_for_an_https_boot_with_patched_efi_builds() {
        let patched = ServedIpxe::trusting(&[7; 32]).unwrap();
        let plain = ServedIpxe::unpatched();
        let bios = Some(crate::ipxe::BIOS.to_string());
        assert_eq!(bios_binary("https://192.0.2.10:8443", &patched), None);
        assert_eq!(bios_binary("HTTPS://192.0.2.10:8443", &patched), None);
        assert_eq!(bios_binary("http://192.0.2.10:8081", &patched), bios);
        assert_eq!(bios_binary("https://192.0.2.10:8443", &plain), bios);
        assert_eq!(bios_binary("http://192.0.2.10:8080", &plain), bios);
    }

    /// Every PXE sighting writes the inventory; it must not rebuild the reservation snapshot
    /// (a full read of the assignment table) on the next DHCP packet.
    #[test]
    fn reservations_are_rebuilt_on_assignment_changes_not_on_sightings() {
        use crate::config::UnassignedPolicy;
        use crate::dhcp::ClientPolicy as _;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let assignments = Assignments::open(&store, UnassignedPolicy::BootDefault).unwrap();
        let policy = AssignmentPolicy::new(assignments.clone());
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 0x21]);
        let first = policy.reservations();
        assert_eq!(first.of(mac.0), Reservation::default());
        let client = crate::dhcp::ClientInfo {
            mac: mac.0,
            arch: 7,
            ..Default::default()
        };
        for _ in 0..3 {
            policy.observed(&client, None);
        }
        assert!(
            Arc::ptr_eq(&first, &policy.reservations()),
            "a sighting rebuilt the reservations"
        );
        let a = crate::assign::Assignment {
            schematic: "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba".into(),
            version: "v1.9.0".into(),
            platform: "metal".into(),
            arch: None,
            extra_kernel_args: vec![],
            labels: Default::default(),
            ip: Some(Ipv4Addr::new(192, 0, 2, 70)),
            hostname: Some("node-70".into()),
        };
        assignments.set(mac, &a).unwrap();
        let second = policy.reservations();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.of(mac.0).ip, a.ip);
        assert!(second.reserved_by_other(Ipv4Addr::new(192, 0, 2, 70), [2, 0, 0, 0, 0, 1]));
        assert!(!second.reserved_by_other(Ipv4Addr::new(192, 0, 2, 70), mac.0));
        assert!(Arc::ptr_eq(&second, &policy.reservations()));
        assignments.remove(mac).unwrap();
        assert_eq!(policy.reservations().of(mac.0), Reservation::default());
    }

    #[test]
    fn the_inventory_says_why_a_bios_machine_was_left_unanswered() {
        use crate::config::UnassignedPolicy;
        use crate::dhcp::ClientPolicy as _;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        // boot-default with no default: every machine would be answered.
        let assignments = Assignments::open(&store, UnassignedPolicy::BootDefault).unwrap();
        let policy = AssignmentPolicy {
            bios_refused: true,
            ..AssignmentPolicy::new(assignments.clone())
        };
        let bios = crate::dhcp::ClientInfo {
            mac: [0x52, 0x54, 0, 0, 0, 0x0b],
            arch: 0,
            ..Default::default()
        };
        let uefi = crate::dhcp::ClientInfo {
            mac: [0x52, 0x54, 0, 0, 0, 0x0e],
            arch: 7,
            ..Default::default()
        };
        policy.observed(&bios, None);
        policy.observed(&uefi, None);
        let served = |mac: [u8; 6]| {
            assignments
                .machine(MacAddr(mac))
                .unwrap()
                .unwrap()
                .last_served
        };
        assert_eq!(served(bios.mac), BIOS_REFUSED_NOTE);
        assert_eq!(served(uefi.mac), "dhcp: nothing (not answered)");
        // Without the refusal, an unanswered BIOS machine gets the plain note.
        let plain = AssignmentPolicy::new(assignments.clone());
        plain.observed(&bios, None);
        assert_eq!(served(bios.mac), "dhcp: nothing (not answered)");
    }

    #[test]
    fn served_ipxe_trusts_the_self_signed_ca_and_only_with_tls() {
        use rustls_pki_types::pem::PemObject as _;
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let mut c = config_in(dir.path());
        assert!(!served_ipxe(&c, None).unwrap().patched());
        self_signed(&mut c);
        c.pxe.ipxe_variant = IpxeVariant::Https;
        let tls = crate::tls::Tls::from_config(&c, None).unwrap().unwrap();
        let served = served_ipxe(&c, Some(&tls)).unwrap();
        let ca = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
        let ca_der = rustls_pki_types::CertificateDer::pem_slice_iter(&ca)
            .next()
            .unwrap()
            .unwrap();
        let fingerprint: [u8; 32] = Sha256::digest(ca_der.as_ref()).into();
        assert_eq!(served.trust(), &fingerprint);
        assert!(served.get(crate::ipxe::EFI_X64).unwrap().patched);
        assert!(!served.get(crate::ipxe::BIOS).unwrap().patched);
        // pxe.ipxeTrust: ipxe-root serves them as built.
        c.pxe.ipxe_trust = IpxeTrust::IpxeRoot;
        assert!(!served_ipxe(&c, Some(&tls)).unwrap().patched());
        // A TLS proxy in front (pxe.bootURL) presents its own certificate: by default
        // (auto) the binaries are served as built and BIOS machines are still answered.
        c.pxe.ipxe_trust = IpxeTrust::Auto;
        c.pxe.boot_url = Some("https://192.0.2.20".parse().unwrap());
        let served = served_ipxe(&c, Some(&tls)).unwrap();
        assert!(!served.patched());
        let url = boot_url(&c, Ipv4Addr::new(192, 0, 2, 10)).unwrap();
        assert!(url.starts_with("https://"), "{url}");
        assert_eq!(
            bios_binary(&url, &served),
            Some(crate::ipxe::BIOS.to_string())
        );
        // ... unless boot-ca is asked for explicitly.
        c.pxe.ipxe_trust = IpxeTrust::BootCa;
        assert!(served_ipxe(&c, Some(&tls)).unwrap().patched());
    }

    #[test]
    fn an_ecdsa_ca_from_an_older_version_is_kept_but_refused_for_https_boot() {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        std::fs::create_dir_all(&tls_dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "bootfactory appliance CA old");
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(tls_dir.join("ca.pem"), cert.pem()).unwrap();
        std::fs::write(tls_dir.join("ca-key.pem"), key.serialize_pem()).unwrap();
        let mut c = config_in(dir.path());
        self_signed(&mut c);
        let tls = crate::tls::Tls::from_config(&c, None).unwrap().unwrap();
        // The CA stays (API clients trust it) and ends the chain.
        assert_eq!(
            std::fs::read_to_string(tls_dir.join("ca.pem")).unwrap(),
            cert.pem()
        );
        let anchor = tls.boot_anchor().unwrap();
        assert!(
            anchor
                .ipxe_unverifiable
                .as_deref()
                .unwrap_or("")
                .contains("ECDSA"),
            "{anchor:?}"
        );
        // HTTP boot: served (patched), with a warning.
        assert!(served_ipxe(&c, Some(&tls)).unwrap().patched());
        // HTTPS boot on our listener: refused at start, saying what to do.
        c.pxe.ipxe_variant = IpxeVariant::Https;
        let e = format!("{:#}", served_ipxe(&c, Some(&tls)).unwrap_err());
        assert!(
            e.contains("RSA only") && e.contains("Rotating the boot CA"),
            "{e}"
        );
    }

    #[test]
    fn a_chain_without_a_root_stops_only_https_boot_from_this_server() {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        // root → leaf, but the file holds only the leaf.
        let root_key = KeyPair::generate().unwrap();
        let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.distinguished_name
            .push(DnType::CommonName, "site root");
        let root_cert = root.self_signed(&root_key).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&root_cert.pem(), root_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["192.0.2.10".to_string()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "192.0.2.10");
        let leaf = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let (cert, key) = (dir.path().join("leaf.pem"), dir.path().join("leaf-key.pem"));
        std::fs::write(&cert, leaf.pem()).unwrap();
        std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
        let mut c = config_in(dir.path());
        c.http.tls = TlsConfig {
            cert_file: Some(cert.clone()),
            key_file: Some(key),
            ..TlsConfig::default()
        };
        let tls = crate::tls::Tls::from_config(&c, None).unwrap().unwrap();
        // Boot over plain http (ipxeVariant http + plainListen): served as built.
        assert_eq!(c.pxe.ipxe_variant, IpxeVariant::Http);
        assert!(!served_ipxe(&c, Some(&tls)).unwrap().patched());
        // Our own https:// boot URL: refused, naming the way out.
        c.pxe.ipxe_variant = IpxeVariant::Https;
        let e = format!("{:#}", served_ipxe(&c, Some(&tls)).unwrap_err());
        assert!(e.contains("not a self-signed root"), "{e}");
        assert!(e.contains("pxe.ipxeTrust: ipxe-root"), "{e}");
        // ... which works.
        c.pxe.ipxe_trust = IpxeTrust::IpxeRoot;
        assert!(!served_ipxe(&c, Some(&tls)).unwrap().patched());
        c.pxe.ipxe_trust = IpxeTrust::Auto;
        // A proxy in front (pxe.bootURL): served as built, as is a server without pxe.
        c.pxe.boot_url = Some("https://192.0.2.20".parse().unwrap());
        assert!(!served_ipxe(&c, Some(&tls)).unwrap().patched());
        c.pxe.boot_url = None;
        c.pxe.enabled = false;
        assert!(!served_ipxe(&c, Some(&tls)).unwrap().patched());
        // With the root appended, it is the boot anchor (an ECDSA chain: only patched for
        // plain-http boot, iPXE could not verify it over https).
        c.pxe.ipxe_variant = IpxeVariant::Http;
        std::fs::write(&cert, leaf.pem() + &root_cert.pem()).unwrap();
        tls.reload().unwrap();
        c.pxe.enabled = true;
        let served = served_ipxe(&c, Some(&tls)).unwrap();
        use sha2::{Digest, Sha256};
        let want: [u8; 32] = Sha256::digest(root_cert.der().as_ref()).into();
        assert_eq!(served.trust(), &want);
    }
}
