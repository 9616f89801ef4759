//! Sockets and receive loops, and the per-packet pipeline ([`Responder::handle`]): parse →
//! classify → rate limit → plan → policy → build.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use dhcproto::v4::MessageType;

use super::client;
use super::decide::{self, NoAnswer, Port, ReplyKind};
use super::full::FullResponder;
use super::leases::Leases;
use super::reply;
use super::{ClientPolicy, DhcpStats, MacAddr, ProxyDhcpConfig, Served};
use crate::ratelimit::RateLimiter;

/// Largest datagram read; DHCP requests are far smaller (a longer one is truncated and then
/// rejected by the parser).
const RECV_BUFFER: usize = 4096;
/// ENODEV on Linux.
const ENODEV: i32 = 19;

/// A reply ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outgoing {
    /// Encoded DHCP message.
    pub bytes: Vec<u8>,
    /// Where it goes.
    pub dest: SocketAddr,
    /// OFFER or ACK.
    pub kind: ReplyKind,
    /// Client MAC.
    pub mac: [u8; 6],
    /// Client architecture (option 93).
    pub arch: u16,
    /// What it points the client at.
    pub served: Served,
}

/// The per-packet logic shared by all sockets.
pub(crate) struct Responder {
    cfg: ProxyDhcpConfig,
    policy: Arc<dyn ClientPolicy>,
    stats: Arc<DhcpStats>,
    limiter: RateLimiter<[u8; 6]>,
}

impl Responder {
    pub(crate) fn new(cfg: ProxyDhcpConfig, policy: Arc<dyn ClientPolicy>) -> Responder {
        let limiter = RateLimiter::new(cfg.per_mac_burst, f64::from(cfg.per_mac_per_second));
        Responder {
            cfg,
            policy,
            stats: Arc::new(DhcpStats::default()),
            limiter,
        }
    }

    pub(crate) fn stats(&self) -> &Arc<DhcpStats> {
        &self.stats
    }

    /// Handles one datagram received on `port` from `src` at `now`: the reply to send, if any.
    /// Counts everything except sent replies (the caller counts those once sent).
    pub(crate) fn handle(
        &self,
        port: Port,
        buf: &[u8],
        src: SocketAddr,
        now: Instant,
    ) -> Option<Outgoing> {
        let stats = &*self.stats;
        DhcpStats::bump(&stats.received);
        let req = match client::parse(buf) {
            Ok(r) => r,
            Err(e) => {
                DhcpStats::bump(&stats.dropped_malformed);
                debug!(?port, %src, len = buf.len(), reason = %e, "dhcp: malformed packet dropped");
                return None;
            }
        };
        let (kind, client) = match decide::classify(port, &req) {
            Ok(x) => x,
            Err(why) => {
                DhcpStats::bump(&stats.ignored);
                debug!(?port, %src, xid = req.xid, reason = ?why, "dhcp: not for us");
                return None;
            }
        };
        let mac = MacAddr(client.mac);
        if !self.limiter.allow(client.mac, now) {
            DhcpStats::bump(&stats.rate_limited);
            debug!(?port, %src, %mac, "dhcp: rate limited");
            return None;
        }
        let plan = match decide::plan(&self.cfg, kind, &req, &client) {
            Ok(p) => p,
            Err(why) => {
                match why {
                    NoAnswer::UnknownArch(_) => DhcpStats::bump(&stats.unknown_arch),
                    NoAnswer::NoBinaryForArch(_) => DhcpStats::bump(&stats.no_binary_for_arch),
                }
                debug!(?port, %src, %mac, arch = client.arch, reason = ?why, "dhcp: no answer for this architecture");
                self.policy.observed(&client, None);
                return None;
            }
        };
        if !self.policy.answer(&client) {
            DhcpStats::bump(&stats.silenced);
            debug!(?port, %src, %mac, arch = client.arch, "dhcp: silenced by policy");
            self.policy.observed(&client, None);
            return None;
        }
        self.policy.observed(&client, Some(&plan.served));
        let msg = reply::build(&self.cfg, &req, &plan);
        let dest = decide::destination(&self.cfg, port, &req, src);
        debug!(?port, %src, %mac, arch = client.arch, ipxe = client.ipxe, %dest, "dhcp: replying");
        Some(Outgoing {
            bytes: reply::encode(&msg),
            dest,
            kind,
            mac: client.mac,
            arch: client.arch,
            served: plan.served,
        })
    }
}

/// One bound socket.
struct Listener {
    port: Port,
    /// Interface name, or `*` for all.
    iface: String,
    socket: Arc<UdpSocket>,
    /// Full mode: this interface has an address in the pool's subnet, so unrelayed clients
    /// are served here.
    direct: bool,
}

/// What full mode needs besides the proxy configuration.
#[derive(Debug, Clone)]
pub struct FullDhcpConfig {
    /// The leases (and the pool they are for).
    pub leases: Arc<Leases>,
    /// The configured interfaces that have an address in the pool's subnet: unrelayed clients
    /// are answered only there.
    pub direct_interfaces: Vec<String>,
    /// How long the start-up check listens for another DHCP server
    /// ([`super::probe::SERVER_CHECK`]).
    pub server_check: Duration,
}

/// Full mode: packets handled at once at most; more are dropped (and counted as rate
/// limited) until some finish.
const MAX_IN_FLIGHT: usize = 256;

/// The DHCP server with its sockets bound; [`ProxyDhcp::run`] serves. In proxy mode both
/// ports run the proxy responder; in full mode ([`ProxyDhcp::bind_full`]) port 67 runs the
/// full server ([`super::full`]) and port 4011 the proxy responder.
pub struct ProxyDhcp {
    listeners: Vec<Listener>,
    responder: Arc<Responder>,
    full: Option<Arc<FullResponder>>,
}

impl std::fmt::Debug for ProxyDhcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyDhcp")
            .field("local_addrs", &self.local_addrs())
            .finish_non_exhaustive()
    }
}

impl ProxyDhcp {
    /// Validates `config` and binds one socket per interface and port (`dhcp_port`,
    /// `proxy_port`), or one `0.0.0.0` socket per port when no interface is configured.
    ///
    /// Errors name the port and interface and the capability that is missing: binding a port
    /// below 1024 needs `CAP_NET_BIND_SERVICE`, `SO_BINDTODEVICE` needs `CAP_NET_RAW`.
    pub async fn bind(
        config: ProxyDhcpConfig,
        policy: Arc<dyn ClientPolicy>,
    ) -> anyhow::Result<ProxyDhcp> {
        validate(&config)?;
        let mut listeners = Vec::new();
        for (port, number) in [
            (Port::Dhcp, config.dhcp_port),
            (Port::Proxy, config.proxy_port),
        ] {
            if config.interfaces.is_empty() {
                listeners.push(Listener {
                    port,
                    iface: "*".into(),
                    socket: Arc::new(open(None, number)?),
                    direct: true,
                });
            }
            for iface in &config.interfaces {
                listeners.push(Listener {
                    port,
                    iface: iface.clone(),
                    socket: Arc::new(open(Some(iface), number)?),
                    direct: true,
                });
            }
        }
        Ok(ProxyDhcp {
            listeners,
            responder: Arc::new(Responder::new(config, policy)),
            full: None,
        })
    }

    /// Full mode: first checks every configured interface for another DHCP server
    /// ([`super::probe::detect_other_server`]) and refuses to start when one answers, then
    /// binds like [`ProxyDhcp::bind`] with port 67 served by the full server. Needs
    /// `config.interfaces` (never answers on an interface it was not given).
    pub async fn bind_full(
        config: ProxyDhcpConfig,
        full: FullDhcpConfig,
        policy: Arc<dyn ClientPolicy>,
    ) -> anyhow::Result<ProxyDhcp> {
        validate(&config)?;
        if config.interfaces.is_empty() {
            bail!(
                "full DHCP needs pxe.interfaces: it never answers on an interface it was not given"
            );
        }
        let checks = config.interfaces.iter().map(|iface| async {
            let found = super::probe::detect_other_server(
                iface,
                config.client_port,
                config.dhcp_port,
                full.server_check,
            )
            .await?;
            Ok::<_, anyhow::Error>((iface.clone(), found))
        });
        for result in futures_util::future::join_all(checks).await {
            let (iface, found) = result?;
            if let Some(other) = found {
                bail!(
                    "full DHCP refused: another DHCP server answers on {iface}: {} (offered {}); use pxe.dhcpMode: proxy next to it",
                    other.server,
                    other.offered
                );
            }
        }
        let mut server = ProxyDhcp::bind(config.clone(), policy.clone()).await?;
        for l in &mut server.listeners {
            l.direct = full.direct_interfaces.contains(&l.iface);
        }
        server.full = Some(Arc::new(FullResponder::new(
            config,
            full.leases,
            policy,
            server.responder.stats().clone(),
        )));
        Ok(server)
    }

    /// The bound local addresses (DHCP port sockets first).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.socket.local_addr().ok())
            .collect()
    }

    /// The responder's counters (shared; they keep counting while [`ProxyDhcp::run`] runs).
    pub fn stats(&self) -> Arc<DhcpStats> {
        self.responder.stats().clone()
    }

    /// Serves until `shutdown` completes (then returns `Ok`) or a receive loop fails.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let mut tasks = JoinSet::new();
        for l in self.listeners {
            match &self.full {
                Some(full) if l.port == Port::Dhcp => {
                    tasks.spawn(serve_full(l, full.clone(), self.responder.stats().clone()))
                }
                _ => tasks.spawn(serve(l, self.responder.clone())),
            };
        }
        tokio::pin!(shutdown);
        let result = tokio::select! {
            () = &mut shutdown => Ok(()),
            Some(done) = tasks.join_next() => match done {
                Ok(Ok(())) => Err(anyhow!("a proxy-DHCP receive loop stopped")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow!("a proxy-DHCP receive loop panicked: {e}")),
            },
        };
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        result
    }
}

fn validate(cfg: &ProxyDhcpConfig) -> anyhow::Result<()> {
    if cfg.server_ip.is_unspecified() || cfg.server_ip.is_broadcast() {
        bail!(
            "proxy-DHCP: server address {} cannot be advertised (option 54 / next-server)",
            cfg.server_ip
        );
    }
    if cfg.dhcp_port == cfg.proxy_port && cfg.dhcp_port != 0 {
        bail!(
            "proxy-DHCP: DHCP port and PXE proxy port are both {}",
            cfg.dhcp_port
        );
    }
    let base = &cfg.boot_url_base;
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        bail!("proxy-DHCP: boot URL base {base:?} must be an absolute http:// or https:// URL");
    }
    if let Some(i) = cfg.interfaces.iter().find(|i| i.is_empty() || i.len() > 15) {
        bail!("proxy-DHCP: {i:?} is not a valid interface name");
    }
    Ok(())
}

/// One UDP socket on `0.0.0.0:port`, bound to `iface` if given.
pub(crate) fn open(iface: Option<&str>, port: u16) -> anyhow::Result<UdpSocket> {
    let on = iface.map_or_else(
        || "all interfaces".to_string(),
        |i| format!("interface {i}"),
    );
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .with_context(|| format!("proxy-DHCP: creating a UDP socket for port {port} on {on}"))?;
    socket
        .set_reuse_address(true)
        .and_then(|()| socket.set_broadcast(true))
        .with_context(|| format!("proxy-DHCP: socket options for UDP port {port} on {on}"))?;
    // Best effort (capped by net.core.rmem_max without CAP_NET_ADMIN), so a burst of
    // DISCOVERs from thousands of booting machines is queued rather than dropped.
    let got = crate::limits::grow_recv_buffer(&socket, crate::limits::UDP_RECV_BUFFER);
    crate::limits::warn_small_recv_buffer("dhcp", got, crate::limits::UDP_RECV_BUFFER);
    if let Some(i) = iface {
        socket.bind_device(Some(i.as_bytes())).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                "SO_BINDTODEVICE needs CAP_NET_RAW: run as root or grant the capability \
                 (systemd: AmbientCapabilities=CAP_NET_RAW)"
                    .to_string()
            } else if e.raw_os_error() == Some(ENODEV) {
                format!("no network interface named {i:?}")
            } else {
                "SO_BINDTODEVICE failed".to_string()
            };
            anyhow!("proxy-DHCP: binding UDP port {port} to interface {i}: {hint} ({e})")
        })?;
    }
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    socket.bind(&addr.into()).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied if port < 1024 => format!(
                "binding port {port} (below 1024) needs CAP_NET_BIND_SERVICE: run as root or \
                 grant the capability (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE)"
            ),
            std::io::ErrorKind::AddrInUse => format!(
                "port {port} is already in use (another DHCP server or proxy such as dnsmasq \
                 on this host?)"
            ),
            _ => "bind failed".to_string(),
        };
        anyhow!("proxy-DHCP: binding UDP 0.0.0.0:{port} on {on}: {hint} ({e})")
    })?;
    socket
        .set_nonblocking(true)
        .context("proxy-DHCP: making the socket non-blocking")?;
    UdpSocket::from_std(socket.into())
        .with_context(|| format!("proxy-DHCP: registering UDP port {port} on {on} with tokio"))
}

/// The receive loop of a full-mode port-67 socket: each packet is handled in a task of its
/// own (a DISCOVER may wait for an ICMP probe), at most [`MAX_IN_FLIGHT`] at once.
async fn serve_full(
    l: Listener,
    full: Arc<FullResponder>,
    stats: Arc<DhcpStats>,
) -> anyhow::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut consecutive_errors = 0u32;
    loop {
        let (n, src) = match l.socket.recv_from(&mut buf).await {
            Ok(x) => {
                consecutive_errors = 0;
                x
            }
            Err(e) => {
                consecutive_errors += 1;
                warn!(iface = %l.iface, error = %e, "full DHCP: receive error");
                if consecutive_errors >= 10 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            DhcpStats::bump(&stats.received);
            DhcpStats::bump(&stats.rate_limited);
            continue;
        };
        let packet = buf[..n].to_vec();
        let (full, socket, iface, stats) = (
            full.clone(),
            l.socket.clone(),
            l.iface.clone(),
            stats.clone(),
        );
        let direct = l.direct;
        tokio::spawn(async move {
            let _permit = permit;
            let now = super::leases::unix_now();
            let Some(out) = full.handle(&packet, src, direct, Instant::now(), now).await else {
                return;
            };
            match socket.send_to(&out.bytes, out.dest).await {
                Ok(_) => {
                    match out.kind {
                        MessageType::Offer => DhcpStats::bump(&stats.offers),
                        MessageType::Ack => DhcpStats::bump(&stats.acks),
                        _ => {}
                    }
                    info!(
                        mac = %MacAddr(out.mac),
                        ip = %out.ip,
                        served = out.served.as_ref().map(ToString::to_string).unwrap_or_default(),
                        dest = %out.dest,
                        iface = %iface,
                        "full DHCP {:?}", out.kind
                    );
                }
                Err(e) => {
                    DhcpStats::bump(&stats.send_errors);
                    warn!(dest = %out.dest, iface = %iface, error = %e, "full DHCP: sending a reply failed");
                }
            }
        });
    }
}

/// The receive loop of one socket.
async fn serve(l: Listener, responder: Arc<Responder>) -> anyhow::Result<()> {
    let mut buf = vec![0u8; RECV_BUFFER];
    let stats = responder.stats().clone();
    let mut consecutive_errors = 0u32;
    loop {
        let (n, src) = match l.socket.recv_from(&mut buf).await {
            Ok(x) => {
                consecutive_errors = 0;
                x
            }
            Err(e) => {
                consecutive_errors += 1;
                warn!(iface = %l.iface, port = ?l.port, error = %e, "proxy-DHCP: receive error");
                if consecutive_errors >= 10 {
                    // Do not spin on a persistent error.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let Some(out) = responder.handle(l.port, &buf[..n], src, Instant::now()) else {
            continue;
        };
        match l.socket.send_to(&out.bytes, out.dest).await {
            Ok(_) => {
                let kind = match out.kind {
                    ReplyKind::Offer => {
                        DhcpStats::bump(&stats.offers);
                        "OFFER"
                    }
                    ReplyKind::Ack => {
                        DhcpStats::bump(&stats.acks);
                        "ACK"
                    }
                };
                info!(
                    mac = %MacAddr(out.mac),
                    arch = out.arch,
                    served = %out.served,
                    dest = %out.dest,
                    iface = %l.iface,
                    "proxy-DHCP {kind}"
                );
            }
            Err(e) => {
                DhcpStats::bump(&stats.send_errors);
                warn!(dest = %out.dest, iface = %l.iface, error = %e, "proxy-DHCP: sending a reply failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::ClientInfo;
    use crate::dhcp::testkit::PxeRequest;
    use dhcproto::Decodable;
    use dhcproto::v4::Message;
    use std::sync::Mutex;

    /// A NUL-terminated BOOTP header field as text (dhcproto keeps the NUL).
    fn header_str(field: Option<&[u8]>) -> String {
        String::from_utf8_lossy(field.unwrap_or_default())
            .trim_end_matches('\0')
            .to_string()
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// Answers unless the MAC is in `silent`; records every `observed` call.
    #[derive(Default)]
    struct Recorder {
        silent: Vec<[u8; 6]>,
        seen: Mutex<Vec<(ClientInfo, Option<Served>)>>,
        asked: Mutex<u32>,
    }

    impl ClientPolicy for Recorder {
        fn answer(&self, client: &ClientInfo) -> bool {
            *self.asked.lock().unwrap() += 1;
            !self.silent.contains(&client.mac)
        }
        fn observed(&self, client: &ClientInfo, served: Option<&Served>) {
            self.seen
                .lock()
                .unwrap()
                .push((client.clone(), served.cloned()));
        }
    }

    fn cfg() -> ProxyDhcpConfig {
        ProxyDhcpConfig {
            server_ip: Ipv4Addr::new(192, 0, 2, 10),
            boot_url_base: "http://192.0.2.10:8080".into(),
            ..ProxyDhcpConfig::default()
        }
    }

    fn responder(cfg: ProxyDhcpConfig, policy: Arc<Recorder>) -> Responder {
        Responder::new(cfg, policy)
    }

    fn src() -> SocketAddr {
        "0.0.0.0:68".parse().unwrap()
    }

    #[test]
    fn offer_is_observed_with_what_was_served() {
        let p = Arc::new(Recorder::default());
        let r = responder(cfg(), p.clone());
        let out = r
            .handle(
                Port::Dhcp,
                &PxeRequest::discover(MAC, 7).encode(),
                src(),
                Instant::now(),
            )
            .unwrap();
        assert_eq!(out.kind, ReplyKind::Offer);
        assert_eq!(out.dest, "255.255.255.255:68".parse().unwrap());
        assert_eq!(out.served, Served::Binary("ipxe.efi".into()));
        let m = Message::from_bytes(&out.bytes).unwrap();
        assert_eq!(header_str(m.fname()), "ipxe.efi");
        let seen = p.seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0.mac, MAC);
        assert_eq!(seen[0].1, Some(Served::Binary("ipxe.efi".into())));
        assert_eq!(r.stats().snapshot().received, 1);
    }

    #[test]
    fn policy_silence_is_counted_and_observed() {
        let p = Arc::new(Recorder {
            silent: vec![MAC],
            ..Recorder::default()
        });
        let r = responder(cfg(), p.clone());
        let now = Instant::now();
        assert!(
            r.handle(
                Port::Dhcp,
                &PxeRequest::discover(MAC, 0).encode(),
                src(),
                now
            )
            .is_none()
        );
        let other = [2, 0, 0, 0, 0, 1];
        assert!(
            r.handle(
                Port::Dhcp,
                &PxeRequest::discover(other, 0).encode(),
                src(),
                now
            )
            .is_some()
        );
        let s = r.stats().snapshot();
        assert_eq!(s.silenced, 1);
        let seen = p.seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].1, None, "silenced client observed with None");
        assert!(seen[1].1.is_some());
    }

    #[test]
    fn non_pxe_and_wrong_types_are_ignored_without_policy_calls() {
        let p = Arc::new(Recorder::default());
        let r = responder(cfg(), p.clone());
        let now = Instant::now();
        let mut plain = PxeRequest::discover(MAC, 7);
        plain.vendor_class = Some("MSFT 5.0".into());
        let mut no93 = PxeRequest::discover(MAC, 7);
        no93.arch = None;
        let request_on_67 = PxeRequest::proxy_request(MAC, 7, Ipv4Addr::new(192, 0, 2, 50));
        for pkt in [plain, no93, request_on_67] {
            assert!(r.handle(Port::Dhcp, &pkt.encode(), src(), now).is_none());
        }
        assert!(
            r.handle(
                Port::Proxy,
                &PxeRequest::discover(MAC, 7).encode(),
                src(),
                now
            )
            .is_none()
        );
        assert_eq!(r.stats().snapshot().ignored, 4);
        assert!(p.seen.lock().unwrap().is_empty());
        assert_eq!(*p.asked.lock().unwrap(), 0);
    }

    #[test]
    fn arch_without_binary_and_unknown_arch_are_counted_and_observed() {
        let p = Arc::new(Recorder::default());
        let r = responder(cfg(), p.clone());
        let now = Instant::now();
        assert!(
            r.handle(
                Port::Dhcp,
                &PxeRequest::discover(MAC, 6).encode(),
                src(),
                now
            )
            .is_none()
        );
        assert!(
            r.handle(
                Port::Dhcp,
                &PxeRequest::discover(MAC, 41).encode(),
                src(),
                now
            )
            .is_none()
        );
        let s = r.stats().snapshot();
        assert_eq!((s.no_binary_for_arch, s.unknown_arch), (1, 1));
        let seen = p.seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|(_, s)| s.is_none()));
    }

    #[test]
    fn ack_on_4011_goes_back_to_the_source() {
        let r = responder(cfg(), Arc::new(Recorder::default()));
        let from: SocketAddr = "192.0.2.50:4011".parse().unwrap();
        let out = r
            .handle(
                Port::Proxy,
                &PxeRequest::proxy_request(MAC, 7, Ipv4Addr::new(192, 0, 2, 50)).encode(),
                from,
                Instant::now(),
            )
            .unwrap();
        assert_eq!(out.kind, ReplyKind::Ack);
        assert_eq!(out.dest, from);
    }

    #[test]
    fn rate_limit_per_mac() {
        let c = ProxyDhcpConfig {
            per_mac_burst: 3,
            per_mac_per_second: 1,
            ..cfg()
        };
        let r = responder(c, Arc::new(Recorder::default()));
        let now = Instant::now();
        let pkt = PxeRequest::discover(MAC, 7).encode();
        let answered = (0..10)
            .filter(|_| r.handle(Port::Dhcp, &pkt, src(), now).is_some())
            .count();
        assert_eq!(answered, 3);
        assert_eq!(r.stats().snapshot().rate_limited, 7);
        // Another MAC is unaffected; one second later the first gets one more.
        let other = PxeRequest::discover([2, 0, 0, 0, 0, 9], 7).encode();
        assert!(r.handle(Port::Dhcp, &other, src(), now).is_some());
        let later = now + Duration::from_secs(1);
        assert!(r.handle(Port::Dhcp, &pkt, src(), later).is_some());
        assert!(r.handle(Port::Dhcp, &pkt, src(), later).is_none());
    }

    /// Random, truncated and bit-flipped packets never panic, and every packet is counted
    /// exactly once.
    #[test]
    fn fuzzish_inputs_never_panic() {
        use rand::{Rng, SeedableRng};
        let c = ProxyDhcpConfig {
            per_mac_burst: 0,
            ..cfg()
        };
        let r = responder(c, Arc::new(Recorder::default()));
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x0b00_7fac);
        let now = Instant::now();
        let mut templates = Vec::new();
        for arch in [0u16, 6, 7, 9, 11, 16, 19, 41] {
            templates.push(PxeRequest::discover(MAC, arch).encode());
            templates.push(PxeRequest::ipxe_discover(MAC, arch, &[0x13, 0x14]).encode());
            templates
                .push(PxeRequest::proxy_request(MAC, arch, Ipv4Addr::new(1, 2, 3, 4)).encode());
        }
        let mut total = 0u64;
        for i in 0..20_000 {
            let t = &templates[i % templates.len()];
            let pkt: Vec<u8> = match i % 4 {
                // Pure noise of any length.
                0 => {
                    let len = rng.random_range(0..700);
                    (0..len).map(|_| rng.random()).collect()
                }
                // Truncated at every length.
                1 => t[..rng.random_range(0..=t.len())].to_vec(),
                // Bit flips in the options area.
                2 => {
                    let mut p = t.clone();
                    for _ in 0..rng.random_range(1..6) {
                        let at = rng.random_range(236..p.len());
                        p[at] ^= 1 << rng.random_range(0..8);
                    }
                    p
                }
                // Random option soup after a valid header.
                _ => {
                    let mut p = t[..240].to_vec();
                    let n = rng.random_range(0..300);
                    p.extend((0..n).map(|_| rng.random::<u8>()));
                    p
                }
            };
            let port = if rng.random() {
                Port::Dhcp
            } else {
                Port::Proxy
            };
            if let Some(out) = r.handle(port, &pkt, src(), now) {
                // Whatever we send decodes.
                Message::from_bytes(&out.bytes).unwrap();
            }
            total += 1;
        }
        let s = r.stats().snapshot();
        assert_eq!(s.received, total);
        assert!(s.dropped_malformed > 5_000, "{s:?}");
    }

    #[tokio::test]
    async fn bind_rejects_bad_config_with_a_clear_message() {
        let policy: Arc<dyn ClientPolicy> = Arc::new(crate::dhcp::AnswerAll);
        let mut c = cfg();
        c.server_ip = Ipv4Addr::UNSPECIFIED;
        let e = ProxyDhcp::bind(c, policy.clone()).await.unwrap_err();
        assert!(e.to_string().contains("server address"), "{e}");
        let mut c = cfg();
        c.boot_url_base = "192.0.2.10:8080".into();
        let e = ProxyDhcp::bind(c, policy.clone()).await.unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
        let mut c = cfg();
        c.dhcp_port = 0;
        c.proxy_port = 0;
        c.interfaces = vec!["bf-no-such0".into()];
        let e = ProxyDhcp::bind(c, policy).await.unwrap_err().to_string();
        assert!(
            e.contains("bf-no-such0")
                && (e.contains("CAP_NET_RAW") || e.contains("no network interface")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn run_stops_on_shutdown() {
        let c = ProxyDhcpConfig {
            dhcp_port: 0,
            proxy_port: 0,
            ..cfg()
        };
        let server = ProxyDhcp::bind(c, Arc::new(crate::dhcp::AnswerAll))
            .await
            .unwrap();
        assert_eq!(server.local_addrs().len(), 2);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
