//! Full DHCPv4 server mode (RFC 2131/2132): the per-packet pipeline of port 67 when
//! `pxe.dhcpMode: full` ([`FullResponder::handle`]).
//!
//! # Messages
//!
//! - **DISCOVER** → OFFER. `yiaddr` is, in this order: the machine's static reservation (its
//!   assignment's `ip`), the client's current or previous lease, the requested address
//!   (option 50) if free in the range, else the next free range address
//!   ([`LeaseTable::choose`]). A new candidate is ICMP-probed first when `probe` is on
//!   ([`super::probe::Prober`]); an answering address is a conflict and the next one is tried
//!   (at most [`MAX_PROBE_TRIES`]). The offer is held in memory for `offerSeconds`.
//! - **REQUEST** ([`LeaseTable::judge`]): SELECTING with our server identifier → ACK and bind;
//!   with another server's → our offer returns to the pool at once, no reply. INIT-REBOOT
//!   (option 50, no server identifier) and RENEWING/REBINDING (`ciaddr`) → ACK if the address
//!   is the client's, NAK if it is wrong for the subnet or someone else's, silence for an
//!   INIT-REBOOT client we have no record of.
//! - **DECLINE**: the address (option 50) is quarantined for [`DECLINE_HOLD_SECS`]; logged
//!   with the client's MAC. **RELEASE**: the lease of `ciaddr` ends. **INFORM** → ACK with
//!   the options, no `yiaddr`, no lease times.
//!
//! Bound, declined and released leases are written to disk ([`super::leases`]) before the
//! ACK is sent; an OFFER never writes.
//!
//! # Options
//!
//! 53, 54 (the advertised address), 1, 3, 6, 15, 12 (the reservation's host name), 51/58/59
//! (lease, T1 = 50 %, T2 = 87.5 %; never in an INFORM ACK), option 82 echoed unchanged
//! (RFC 3046). Options are encoded in code order with 82 last; if the reply exceeds the
//! client's option 57 (at least 576 bytes, less the IP and UDP headers), options the client
//! did not ask for in option 55 are left out. PXE and HTTP-boot clients (option 60
//! `PXEClient`/`HTTPClient` with option 93) also get what proxy mode gives them, from
//! [`super::decide::plan`] and [`super::reply::apply_boot`], subject to the
//! [`ClientPolicy`] (`ignore`: an address but no boot answer) and recorded in the inventory.
//!
//! # Where from, where to
//!
//! A relayed packet (`giaddr` ≠ 0) is served only when `giaddr` is in the pool's subnet and
//! answered by unicast to `giaddr:dhcp_port`. A direct one only on an interface with an
//! address in the pool's subnet. Replies go per RFC 2131 §4.1: NAKs broadcast, a client with
//! `ciaddr` by unicast there, everything else broadcast (userspace cannot unicast to a
//! client without an ARP entry).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode, UnknownOption};
use tracing::{debug, info, warn};

use super::client::{
    self, DHCPDECLINE, DHCPDISCOVER, DHCPINFORM, DHCPRELEASE, DHCPREQUEST, Request,
};
use super::decide::{self, NoAnswer, Plan, ReplyKind};
use super::lease::{Client, RequestKind, Verdict};
use super::leases::Leases;
use super::probe::{Probe, Prober};
use super::reply;
use super::{ClientPolicy, DhcpStats, MacAddr, ProxyDhcpConfig, Served};
use crate::ratelimit::RateLimiter;

/// How long a declined address stays out of the pool.
pub const DECLINE_HOLD_SECS: u64 = 600;
/// How long an address that answered an ICMP probe stays out of the pool.
pub const CONFLICT_HOLD_SECS: u64 = 600;
/// Most candidates probed for one DISCOVER.
pub const MAX_PROBE_TRIES: usize = 4;
/// IPv4 + UDP headers, subtracted from option 57.
const IP_UDP_HEADERS: usize = 28;

/// A reply of the full server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FullReply {
    /// Encoded message.
    pub bytes: Vec<u8>,
    /// Destination.
    pub dest: SocketAddr,
    /// OFFER, ACK or NAK.
    pub kind: MessageType,
    /// Client MAC.
    pub mac: [u8; 6],
    /// `yiaddr` (or `ciaddr` for an INFORM).
    pub ip: Ipv4Addr,
    /// The boot answer folded in.
    pub served: Option<Served>,
}

/// The per-packet logic of full mode (port 67).
pub(crate) struct FullResponder {
    cfg: ProxyDhcpConfig,
    leases: Arc<Leases>,
    policy: Arc<dyn ClientPolicy>,
    stats: Arc<DhcpStats>,
    limiter: RateLimiter<[u8; 6]>,
    prober: Option<Prober>,
}

impl FullResponder {
    pub(crate) fn new(
        cfg: ProxyDhcpConfig,
        leases: Arc<Leases>,
        policy: Arc<dyn ClientPolicy>,
        stats: Arc<DhcpStats>,
    ) -> FullResponder {
        let limiter = RateLimiter::new(cfg.per_mac_burst, f64::from(cfg.per_mac_per_second));
        let prober = leases.pool().probe.then(Prober::default);
        FullResponder {
            cfg,
            leases,
            policy,
            stats,
            limiter,
            prober,
        }
    }

    /// Handles one datagram from `src` received on an interface that may (`direct`) or may
    /// not serve unrelayed clients; `now` is Unix seconds. Counts everything but sent replies.
    pub(crate) async fn handle(
        &self,
        buf: &[u8],
        src: SocketAddr,
        direct: bool,
        mono: Instant,
        now: u64,
    ) -> Option<FullReply> {
        let stats = &*self.stats;
        DhcpStats::bump(&stats.received);
        let req = match client::parse(buf) {
            Ok(r) => r,
            Err(e) => {
                DhcpStats::bump(&stats.dropped_malformed);
                debug!(%src, len = buf.len(), reason = %e, "dhcp: malformed packet dropped");
                return None;
            }
        };
        if req.htype != 1 {
            DhcpStats::bump(&stats.ignored);
            return None;
        }
        let subnet = self.leases.subnet();
        if !req.giaddr.is_unspecified() {
            if !subnet.contains_host(req.giaddr) {
                DhcpStats::bump(&stats.relay_refused);
                debug!(%src, giaddr = %req.giaddr, "dhcp: relayed from a subnet we do not serve");
                return None;
            }
        } else if !direct {
            DhcpStats::bump(&stats.ignored);
            debug!(%src, "dhcp: direct request on an interface outside the pool's subnet");
            return None;
        }
        let mac = req.mac();
        if !self.limiter.allow(mac, mono) {
            DhcpStats::bump(&stats.rate_limited);
            return None;
        }
        let reservation = self.policy.reservation(mac);
        let mut client = Client::new(mac, req.client_id.as_deref());
        client.reserved = reservation.ip;
        client.hostname = reservation.hostname;
        let policy = self.policy.clone();
        let reserved_by_other = move |ip: Ipv4Addr| policy.reserved_by_other(ip, mac);
        match req.msg_type {
            Some(DHCPDISCOVER) => {
                DhcpStats::bump(&stats.discover);
                self.discover(&req, &client, &reserved_by_other, now).await
            }
            Some(DHCPREQUEST) => {
                DhcpStats::bump(&stats.request);
                self.request(&req, &client, &reserved_by_other, now).await
            }
            Some(DHCPDECLINE) => {
                DhcpStats::bump(&stats.decline);
                self.decline(&req, &client, now).await;
                None
            }
            Some(DHCPRELEASE) => {
                DhcpStats::bump(&stats.release);
                self.release(&req, &client, now).await;
                None
            }
            Some(DHCPINFORM) => {
                DhcpStats::bump(&stats.inform);
                let boot = self.boot(&req, ReplyKind::Ack);
                let msg = self.build(
                    &req,
                    MessageType::Ack,
                    Ipv4Addr::UNSPECIFIED,
                    None,
                    &client,
                    boot.as_ref(),
                );
                Some(self.finish(&req, msg, MessageType::Ack, req.ciaddr, boot))
            }
            other => {
                DhcpStats::bump(&stats.ignored);
                debug!(%src, msg_type = ?other, "dhcp: message type not served");
                None
            }
        }
    }

    async fn discover(
        &self,
        req: &Request,
        client: &Client,
        reserved_by_other: &(dyn Fn(Ipv4Addr) -> bool + Sync),
        now: u64,
    ) -> Option<FullReply> {
        let pool = self.leases.pool();
        let hold = now + u64::from(pool.offer_secs);
        let mut chosen = None;
        for _ in 0..MAX_PROBE_TRIES {
            // Choose and hold at once, so two DISCOVERs never get the same candidate.
            let choice = self.leases.with(now, |t| {
                let c = t.choose(client, req.requested_ip, reserved_by_other)?;
                t.hold_offer(client, c.ip, hold);
                Some(c)
            });
            let Some(choice) = choice else {
                DhcpStats::bump(&self.stats.pool_exhausted);
                warn!(mac = %MacAddr(client.mac), "full DHCP: address pool exhausted; no offer");
                return None;
            };
            let Some(prober) = self.prober.as_ref().filter(|_| !choice.known) else {
                chosen = Some(choice.ip);
                break;
            };
            match prober.probe(choice.ip).await {
                Probe::Free => {
                    chosen = Some(choice.ip);
                    break;
                }
                Probe::InUse => {
                    DhcpStats::bump(&self.stats.probe_conflict);
                    warn!(ip = %choice.ip, mac = %MacAddr(client.mac), "full DHCP: address answers ICMP echo (in use by a host we did not give it to); not offered");
                    self.leases.with(now, |t| {
                        t.mark_conflict(choice.ip, now + CONFLICT_HOLD_SECS)
                    });
                }
                Probe::Busy => {
                    DhcpStats::bump(&self.stats.probe_busy);
                    self.leases.with(now, |t| t.drop_offer(&client.key));
                    return None;
                }
            }
        }
        let Some(ip) = chosen else {
            self.leases.with(now, |t| t.drop_offer(&client.key));
            return None;
        };
        let boot = self.boot(req, ReplyKind::Offer);
        let msg = self.build(
            req,
            MessageType::Offer,
            ip,
            Some(pool.lease_secs),
            client,
            boot.as_ref(),
        );
        Some(self.finish(req, msg, MessageType::Offer, ip, boot))
    }

    async fn request(
        &self,
        req: &Request,
        client: &Client,
        reserved_by_other: &(dyn Fn(Ipv4Addr) -> bool + Sync),
        now: u64,
    ) -> Option<FullReply> {
        let ours = self.cfg.server_ip;
        let kind = match (req.server_id, req.requested_ip) {
            (Some(sid), _) if sid != ours => {
                if let Some(ip) = self.leases.with(now, |t| t.drop_offer(&client.key)) {
                    debug!(%ip, mac = %MacAddr(client.mac), server = %sid, "full DHCP: client chose another server; offer withdrawn");
                }
                return None;
            }
            (Some(_), requested) => RequestKind::Selecting(requested.unwrap_or(req.ciaddr)),
            (None, Some(requested)) if req.ciaddr.is_unspecified() => {
                RequestKind::InitReboot(requested)
            }
            (None, _) if !req.ciaddr.is_unspecified() => RequestKind::Renewing(req.ciaddr),
            (None, _) => {
                DhcpStats::bump(&self.stats.ignored);
                return None;
            }
        };
        let lease_secs = self.leases.pool().lease_secs;
        let verdict = self
            .leases
            .with(now, |t| t.judge(client, kind, reserved_by_other));
        match verdict {
            Verdict::Silent => {
                debug!(mac = %MacAddr(client.mac), ?kind, "full DHCP: INIT-REBOOT from a client we have no record of: silent");
                None
            }
            Verdict::Nak => {
                DhcpStats::bump(&self.stats.naks);
                info!(mac = %MacAddr(client.mac), ?kind, "full DHCP NAK");
                let msg = self.nak(req);
                Some(self.finish(req, msg, MessageType::Nak, Ipv4Addr::UNSPECIFIED, None))
            }
            Verdict::Ack(ip) => {
                let (lease, replaced) = self
                    .leases
                    .with(now, |t| t.bind(client, ip, now + u64::from(lease_secs)));
                let written = replaced
                    .map_or(Ok(()), |old| self.leases.delete(old.ip))
                    .and_then(|()| self.leases.store(&lease));
                if let Err(e) = written {
                    // Without the lease on disk a restart could hand the address out twice.
                    warn!(%ip, error = %e, "full DHCP: cannot store the lease; not acknowledging");
                    return None;
                }
                if let Err(e) = self.leases.flush().await {
                    warn!(%ip, error = %e, "full DHCP: cannot flush the lease database");
                }
                let boot = self.boot(req, ReplyKind::Ack);
                let msg = self.build(
                    req,
                    MessageType::Ack,
                    ip,
                    Some(lease_secs),
                    client,
                    boot.as_ref(),
                );
                Some(self.finish(req, msg, MessageType::Ack, ip, boot))
            }
        }
    }

    async fn decline(&self, req: &Request, client: &Client, now: u64) {
        let Some(ip) = req.requested_ip else {
            DhcpStats::bump(&self.stats.ignored);
            return;
        };
        let declined = self
            .leases
            .with(now, |t| t.decline(&client.key, ip, now + DECLINE_HOLD_SECS));
        match declined {
            Some(lease) => {
                warn!(%ip, mac = %MacAddr(client.mac), hold_secs = DECLINE_HOLD_SECS, "full DHCP DECLINE: the client found the address in use; quarantined");
                if let Err(e) = self.leases.store(&lease) {
                    warn!(%ip, error = %e, "full DHCP: cannot store the declined address");
                }
                let _ = self.leases.flush().await;
            }
            None => {
                debug!(%ip, mac = %MacAddr(client.mac), "full DHCP: DECLINE for an address that is not the client's: ignored");
            }
        }
    }

    async fn release(&self, req: &Request, client: &Client, now: u64) {
        let released = self
            .leases
            .with(now, |t| t.release(&client.key, req.ciaddr));
        match released {
            Some(lease) => {
                info!(ip = %lease.ip, mac = %MacAddr(client.mac), "full DHCP RELEASE");
                if let Err(e) = self.leases.delete(lease.ip) {
                    warn!(ip = %lease.ip, error = %e, "full DHCP: cannot delete the released lease");
                }
                let _ = self.leases.flush().await;
            }
            None => {
                debug!(ip = %req.ciaddr, mac = %MacAddr(client.mac), "full DHCP: RELEASE of an address that is not the client's: ignored");
            }
        }
    }

    /// The boot answer for a PXE/HTTP-boot client (policy applied, inventory fed); `None` for
    /// plain DHCP clients and silenced ones.
    fn boot(&self, req: &Request, kind: ReplyKind) -> Option<Plan> {
        let info = req.client_info().ok()?;
        let plan = match decide::plan(&self.cfg, kind, req, &info) {
            Ok(p) => p,
            Err(why) => {
                match why {
                    NoAnswer::UnknownArch(_) => DhcpStats::bump(&self.stats.unknown_arch),
                    NoAnswer::NoBinaryForArch(_) => DhcpStats::bump(&self.stats.no_binary_for_arch),
                }
                self.policy.observed(&info, None);
                return None;
            }
        };
        if !self.policy.answer(&info) {
            DhcpStats::bump(&self.stats.silenced);
            self.policy.observed(&info, None);
            return None;
        }
        self.policy.observed(&info, Some(&plan.served));
        Some(plan)
    }

    /// An OFFER or ACK: `yiaddr`, the pool's options, the lease times when `lease` is given,
    /// the boot answer folded in.
    fn build(
        &self,
        req: &Request,
        kind: MessageType,
        yiaddr: Ipv4Addr,
        lease: Option<u32>,
        client: &Client,
        boot: Option<&Plan>,
    ) -> Message {
        let pool = self.leases.pool();
        let ciaddr = if kind == MessageType::Ack {
            req.ciaddr
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        let mut m = reply::header(req, ciaddr, yiaddr);
        {
            let o = m.opts_mut();
            o.insert(DhcpOption::MessageType(kind));
            o.insert(DhcpOption::ServerIdentifier(self.cfg.server_ip));
            o.insert(DhcpOption::SubnetMask(pool.netmask));
            if let Some(r) = pool.router {
                o.insert(DhcpOption::Router(vec![r]));
            }
            if !pool.dns.is_empty() {
                o.insert(DhcpOption::DomainNameServer(pool.dns.clone()));
            }
            if let Some(d) = &pool.domain {
                o.insert(DhcpOption::DomainName(d.clone()));
            }
            if let Some(h) = &client.hostname {
                o.insert(DhcpOption::Hostname(h.clone()));
            }
            if let Some(secs) = lease {
                o.insert(DhcpOption::AddressLeaseTime(secs));
                o.insert(DhcpOption::Renewal(secs / 2));
                o.insert(DhcpOption::Rebinding(secs / 8 * 7));
            }
        }
        if let Some(plan) = boot {
            reply::apply_boot(&mut m, &self.cfg, req, plan);
        } else {
            m.set_siaddr(self.cfg.server_ip);
        }
        self.echo_relay_info(req, &mut m);
        m
    }

    fn nak(&self, req: &Request) -> Message {
        let mut m = reply::header(req, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED);
        m.set_flags(dhcproto::v4::Flags::default().set_broadcast());
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Nak));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(self.cfg.server_ip));
        self.echo_relay_info(req, &mut m);
        m
    }

    fn echo_relay_info(&self, req: &Request, m: &mut Message) {
        if let Some(info) = &req.relay_info
            && !req.giaddr.is_unspecified()
        {
            m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
                OptionCode::RelayAgentInformation,
                info.clone(),
            )));
        }
    }

    /// Encodes (within the client's option 57) and addresses the reply.
    fn finish(
        &self,
        req: &Request,
        mut msg: Message,
        kind: MessageType,
        ip: Ipv4Addr,
        boot: Option<Plan>,
    ) -> FullReply {
        let mut bytes = reply::encode(&msg);
        let limit = usize::from(req.max_size.unwrap_or(576).max(576)) - IP_UDP_HEADERS;
        if bytes.len() > limit {
            let asked = req.parameter_list.clone().unwrap_or_default();
            let keep =
                |code: u8| matches!(code, 1 | 51 | 53 | 54 | 58 | 59 | 82) || asked.contains(&code);
            let drop: Vec<OptionCode> = msg
                .opts()
                .iter()
                .map(|(c, _)| *c)
                .filter(|c| !keep(u8::from(*c)))
                .collect();
            for c in drop {
                msg.opts_mut().remove(c);
            }
            bytes = reply::encode(&msg);
        }
        FullReply {
            bytes,
            dest: destination(&self.cfg, req, kind == MessageType::Nak),
            kind,
            mac: req.mac(),
            ip,
            served: boot.map(|p| p.served),
        }
    }
}

/// Where a full-mode reply goes (RFC 2131 §4.1): relayed → `giaddr:dhcp_port`; a NAK →
/// broadcast; a client with `ciaddr` → unicast there; else broadcast.
pub(crate) fn destination(cfg: &ProxyDhcpConfig, req: &Request, nak: bool) -> SocketAddr {
    if !req.giaddr.is_unspecified() {
        return SocketAddrV4::new(req.giaddr, cfg.dhcp_port).into();
    }
    if !nak && !req.ciaddr.is_unspecified() {
        return SocketAddrV4::new(req.ciaddr, cfg.client_port).into();
    }
    SocketAddrV4::new(Ipv4Addr::BROADCAST, cfg.client_port).into()
}
