//! Full DHCPv4 server mode (RFC 2131/2132): the per-packet pipeline of port 67 when
//! `pxe.dhcpMode: full` ([`FullResponder::handle`]).
//!
//! # Messages
//!
//! - **DISCOVER** → OFFER. `yiaddr` is, in this order: the machine's static reservation (its
//!   assignment's `ip`; no offer at all while another host holds it:
//!   [`super::lease::LeaseTable::reserved_withheld`]), the client's current or previous lease, the requested address
//!   (option 50) if free in the range, else the next free range address
//!   ([`LeaseTable::choose`]). A new candidate is ICMP-probed first when `probe` is on
//!   ([`super::probe::Prober`]); an answering address is a conflict and the next one is tried
//!   (at most [`MAX_PROBE_TRIES`]). The offer is held in memory for `offerSeconds`.
//! - **REQUEST** ([`LeaseTable::judge`]): SELECTING with our server identifier → ACK and bind;
//!   with another server's → our offer returns to the pool at once, no reply. INIT-REBOOT
//!   (option 50, no server identifier) and RENEWING/REBINDING (`ciaddr`) → ACK if the address
//!   is the client's, NAK if it is wrong for the subnet or someone else's, silence for an
//!   INIT-REBOOT client we have no record of.
//! - **DECLINE**: accepted only with our option 54 and for an address bound to the client
//!   (RFC 2131 Table 5, §3.1.5), else dropped and counted (`decline_refused`): the address
//!   (option 50) is quarantined for [`DECLINE_HOLD_SECS`]; logged with the client's MAC.
//!   **RELEASE**: the lease of `ciaddr` ends. **INFORM** → ACK with
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

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use tracing::{debug, error, info, warn};

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
        // The snapshot is taken here, outside the lease lock: inside it, lookups are map reads.
        let reservations = self.policy.reservations();
        let reservation = reservations.of(mac);
        let mut client = Client::new(mac, req.client_id.as_deref());
        client.reserved = reservation.ip;
        client.hostname = reservation.hostname;
        let reserved_by_other = move |ip: Ipv4Addr| reservations.reserved_by_other(ip, mac);
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
                let Some(c) = t.choose(client, req.requested_ip, reserved_by_other) else {
                    return Err(t.reserved_withheld(client));
                };
                Ok((c, t.hold_offer(client, c.ip, hold)))
            });
            let choice = match choice {
                Ok((c, dropped)) => {
                    // The client's bound lease it gave up by asking anew: off the disk too.
                    // Not flushed: should it come back after a crash, it is still this
                    // client's, and ends in time.
                    for old in dropped {
                        if let Err(e) = self.leases.delete(old.ip) {
                            warn!(ip = %old.ip, error = %e, "full DHCP: cannot delete a replaced lease");
                        }
                    }
                    c
                }
                Err(Some(why)) => {
                    warn!(ip = ?client.reserved, mac = %MacAddr(client.mac), reason = why, "full DHCP: the machine's reserved address is withheld; no offer until it is free");
                    return None;
                }
                Err(None) => {
                    DhcpStats::bump(&self.stats.pool_exhausted);
                    warn!(mac = %MacAddr(client.mac), "full DHCP: address pool exhausted; no offer");
                    return None;
                }
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
                    .iter()
                    .try_for_each(|old| self.leases.delete(old.ip))
                    .and_then(|()| self.leases.store(&lease));
                // A lease is on disk before its ACK: without it a restart could hand the
                // address out twice. On failure no ACK; the client retries its REQUEST.
                // The in-memory bind stays: undoing it would mean restoring the offer or the
                // previous expiry and the replaced lease, on disk too, which can fail the same
                // way. Keeping it only holds the address for this client (never gives it to
                // another), and its retried REQUEST is judged `Ack`, binds again and rewrites
                // and re-flushes the lease.
                let durable = match written {
                    Ok(()) => self.leases.flush().await,
                    Err(e) => Err(e),
                };
                if let Err(e) = durable {
                    DhcpStats::bump(&self.stats.lease_write_failed);
                    error!(%ip, mac = %MacAddr(client.mac), error = %e, "full DHCP: cannot write the lease to disk; not acknowledging");
                    return None;
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
        // Option 50 and option 54 MUST be in a DECLINE (RFC 2131 Table 5); one for another
        // server is not ours to act on.
        let (Some(ip), Some(sid)) = (req.requested_ip, req.server_id) else {
            DhcpStats::bump(&self.stats.decline_refused);
            debug!(mac = %MacAddr(client.mac), "full DHCP: DECLINE without option 50 or 54: dropped");
            return;
        };
        if sid != self.cfg.server_ip {
            DhcpStats::bump(&self.stats.decline_refused);
            debug!(%ip, mac = %MacAddr(client.mac), server = %sid, "full DHCP: DECLINE for another server: dropped");
            return;
        }
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
                DhcpStats::bump(&self.stats.decline_refused);
                debug!(%ip, mac = %MacAddr(client.mac), "full DHCP: DECLINE for an address not bound to the client: dropped");
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
        m
    }

    fn nak(&self, req: &Request) -> Message {
        let mut m = reply::header(req, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED);
        m.set_flags(dhcproto::v4::Flags::default().set_broadcast());
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Nak));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(self.cfg.server_ip));
        m
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
        // Option 82 goes in raw, last (dhcproto would re-encode it).
        let encode = |msg: &Message| {
            let mut bytes = reply::encode(msg);
            if let Some(info) = &req.relay_info
                && !req.giaddr.is_unspecified()
            {
                reply::insert_last(&mut bytes, 82, info);
            }
            bytes
        };
        let mut bytes = encode(&msg);
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
            bytes = encode(&msg);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::testkit::PxeRequest;
    use crate::dhcp::{ClientInfo, PoolConfig, Reservation, Reservations};
    use dhcproto::Decodable;
    use dhcproto::Encodable;
    use dhcproto::v4::{Flags, HType, Opcode};

    const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const RESERVED_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x50];

    /// Answers everyone but `silent`; one reservation.
    #[derive(Default)]
    struct Policy {
        silent: Option<[u8; 6]>,
    }

    impl ClientPolicy for Policy {
        fn answer(&self, c: &ClientInfo) -> bool {
            Some(c.mac) != self.silent
        }
        fn observed(&self, _: &ClientInfo, _: Option<&Served>) {}
        fn reservations(&self) -> Arc<Reservations> {
            Arc::new(Reservations::new([(
                RESERVED_MAC,
                Reservation {
                    ip: Some(Ipv4Addr::new(192, 0, 2, 50)),
                    hostname: Some("node-50".into()),
                },
            )]))
        }
    }

    fn responder(policy: Policy) -> (FullResponder, sled::Tree) {
        let pool = PoolConfig {
            range: "192.0.2.100-192.0.2.101".parse().unwrap(),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            router: Some(Ipv4Addr::new(192, 0, 2, 1)),
            dns: vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)],
            domain: Some("lab.example".into()),
            lease_secs: 3600,
            offer_secs: 30,
            probe: false,
        };
        let subnet = pool.validate(Some(SERVER)).unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("dhcp/leases").unwrap();
        let leases = Arc::new(Leases::open(tree.clone(), pool, subnet, 1000).unwrap());
        let cfg = ProxyDhcpConfig {
            server_ip: SERVER,
            boot_url_base: "http://192.0.2.10:8080".into(),
            per_mac_burst: 0,
            ..ProxyDhcpConfig::default()
        };
        let stats = Arc::new(DhcpStats::default());
        (
            FullResponder::new(cfg, leases, Arc::new(policy), stats),
            tree,
        )
    }

    fn msg(kind: MessageType, mac: [u8; 6], opts: Vec<DhcpOption>) -> Message {
        let mut m = Message::new_with_id(
            7,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        m.set_opcode(Opcode::BootRequest).set_htype(HType::Eth);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        for o in opts {
            m.opts_mut().insert(o);
        }
        m
    }

    async fn send(r: &FullResponder, m: &Message, now: u64) -> Option<(FullReply, Message)> {
        let out = r
            .handle(
                &m.to_vec().unwrap(),
                "0.0.0.0:68".parse().unwrap(),
                true,
                Instant::now(),
                now,
            )
            .await?;
        let decoded = Message::from_bytes(&out.bytes).unwrap();
        Some((out, decoded))
    }

    fn opt(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
        m.opts().get(code)
    }

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    #[tokio::test]
    async fn dora_with_options_then_renew_nak_and_no_write_on_offer() {
        let (r, tree) = responder(Policy::default());
        let (out, offer) = send(&r, &msg(MessageType::Discover, MAC, vec![]), 1000)
            .await
            .unwrap();
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(offer.yiaddr(), Ipv4Addr::new(192, 0, 2, 100));
        assert_eq!(out.dest, "255.255.255.255:68".parse().unwrap());
        assert_eq!(
            opt(&offer, OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert_eq!(
            opt(&offer, OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(
            opt(&offer, OptionCode::Router),
            Some(&DhcpOption::Router(vec![Ipv4Addr::new(192, 0, 2, 1)]))
        );
        assert!(
            matches!(opt(&offer, OptionCode::DomainNameServer), Some(DhcpOption::DomainNameServer(d)) if d.len() == 2)
        );
        assert_eq!(
            opt(&offer, OptionCode::DomainName),
            Some(&DhcpOption::DomainName("lab.example".into()))
        );
        assert_eq!(
            opt(&offer, OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(3600))
        );
        assert_eq!(
            opt(&offer, OptionCode::Renewal),
            Some(&DhcpOption::Renewal(1800))
        );
        assert_eq!(
            opt(&offer, OptionCode::Rebinding),
            Some(&DhcpOption::Rebinding(3150))
        );
        assert_eq!(
            opt(&offer, OptionCode::ClassIdentifier),
            None,
            "plain client: no boot options"
        );
        assert_eq!(tree.len(), 0, "an OFFER never writes");

        // REQUEST for another server's offer: ours is withdrawn, no reply.
        let other = msg(
            MessageType::Request,
            MAC,
            vec![
                DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 0, 2, 1)),
                DhcpOption::RequestedIpAddress(Ipv4Addr::new(192, 0, 2, 100)),
            ],
        );
        assert!(send(&r, &other, 1001).await.is_none());
        assert!(r.leases.list(1001).is_empty());
        // Again, and this time it takes ours.
        // (Round robin: the next free address.)
        let (_, offer) = send(&r, &msg(MessageType::Discover, MAC, vec![]), 1002)
            .await
            .unwrap();
        let ip = offer.yiaddr();
        assert_eq!(ip, Ipv4Addr::new(192, 0, 2, 101));
        let select = msg(
            MessageType::Request,
            MAC,
            vec![
                DhcpOption::ServerIdentifier(SERVER),
                DhcpOption::RequestedIpAddress(ip),
            ],
        );
        let (_, ack) = send(&r, &select, 1003).await.unwrap();
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.yiaddr(), ip);
        assert_eq!(tree.len(), 1, "the ACK wrote the lease");

        // INIT-REBOOT asking for someone else's address: NAK, broadcast, no lease options.
        let stranger = msg(
            MessageType::Request,
            [2, 0, 0, 0, 0, 9],
            vec![DhcpOption::RequestedIpAddress(ip)],
        );
        let res = send(&r, &stranger, 1004).await;
        let (out, nak) =
            res.unwrap_or_else(|| panic!("{:?} {:?}", r.stats.snapshot(), r.leases.list(1004)));
        assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(opt(&nak, OptionCode::AddressLeaseTime), None);
        assert_eq!(out.dest, "255.255.255.255:68".parse().unwrap());
        // Unknown INIT-REBOOT client for a free address: silence.
        let unknown = msg(
            MessageType::Request,
            [2, 0, 0, 0, 0, 9],
            vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                192, 0, 2, 100,
            ))],
        );
        assert!(send(&r, &unknown, 1005).await.is_none());
        // RENEWING: unicast to ciaddr, ACKed.
        let mut renew = msg(MessageType::Request, MAC, vec![]);
        renew.set_ciaddr(ip);
        let (out, ack) = send(&r, &renew, 2000).await.unwrap();
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(out.dest, "192.0.2.101:68".parse().unwrap());
        assert_eq!(r.leases.list(2000)[0].expires, 2000 + 3600);
        let s = r.stats.snapshot();
        assert_eq!((s.discover, s.request, s.naks), (2, 5, 1));
    }

    #[tokio::test]
    async fn reservation_inform_pool_exhaustion() {
        let (r, _) = responder(Policy::default());
        // The reserved machine gets its address (outside the range) and host name.
        let (_, offer) = send(&r, &msg(MessageType::Discover, RESERVED_MAC, vec![]), 1000)
            .await
            .unwrap();
        assert_eq!(offer.yiaddr(), Ipv4Addr::new(192, 0, 2, 50));
        assert_eq!(
            opt(&offer, OptionCode::Hostname),
            Some(&DhcpOption::Hostname("node-50".into()))
        );
        // Another client asking for the reserved address never gets it.
        let (_, o) = send(
            &r,
            &msg(
                MessageType::Discover,
                MAC,
                vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(192, 0, 2, 50))],
            ),
            1000,
        )
        .await
        .unwrap();
        assert_eq!(o.yiaddr(), Ipv4Addr::new(192, 0, 2, 100));
        // Two addresses in the pool: the third client gets nothing, counted.
        send(
            &r,
            &msg(MessageType::Discover, [2, 0, 0, 0, 0, 2], vec![]),
            1000,
        )
        .await
        .unwrap();
        assert!(
            send(
                &r,
                &msg(MessageType::Discover, [2, 0, 0, 0, 0, 3], vec![]),
                1000
            )
            .await
            .is_none()
        );
        assert_eq!(r.stats.snapshot().pool_exhausted, 1);
        // ... until the offers end.
        assert!(
            send(
                &r,
                &msg(MessageType::Discover, [2, 0, 0, 0, 0, 3], vec![]),
                1031
            )
            .await
            .is_some()
        );
        // INFORM: options, no yiaddr, no lease times, unicast to ciaddr.
        let mut inform = msg(MessageType::Inform, [2, 0, 0, 0, 0, 4], vec![]);
        inform.set_ciaddr(Ipv4Addr::new(192, 0, 2, 7));
        let (out, ack) = send(&r, &inform, 1031).await.unwrap();
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(ack.ciaddr(), Ipv4Addr::new(192, 0, 2, 7));
        assert!(opt(&ack, OptionCode::AddressLeaseTime).is_none());
        assert!(
            opt(&ack, OptionCode::Renewal).is_none() && opt(&ack, OptionCode::Rebinding).is_none()
        );
        assert!(opt(&ack, OptionCode::SubnetMask).is_some());
        assert_eq!(out.dest, "192.0.2.7:68".parse().unwrap());
    }

    #[tokio::test]
    async fn pxe_clients_get_the_proxy_boot_answer_folded_in() {
        let (r, _) = responder(Policy {
            silent: Some([2, 0, 0, 0, 0, 0x66]),
        });
        let pxe = PxeRequest::discover(MAC, 0).encode();
        let out = r
            .handle(
                &pxe,
                "0.0.0.0:68".parse().unwrap(),
                true,
                Instant::now(),
                1000,
            )
            .await
            .unwrap();
        let m = Message::from_bytes(&out.bytes).unwrap();
        assert_eq!(m.yiaddr(), Ipv4Addr::new(192, 0, 2, 100));
        assert_eq!(m.siaddr(), SERVER);
        assert_eq!(
            opt(&m, OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        assert_eq!(
            opt(&m, OptionCode::BootfileName),
            Some(&DhcpOption::BootfileName(b"undionly.kpxe".to_vec()))
        );
        assert_eq!(
            opt(&m, OptionCode::VendorExtensions),
            Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
        );
        assert_eq!(out.served, Some(Served::Binary("undionly.kpxe".into())));
        // iPXE: the script URL.
        let ipxe = PxeRequest::ipxe_discover([2, 0, 0, 0, 0, 2], 7, &[0x13, 0x14]).encode();
        let out = r
            .handle(
                &ipxe,
                "0.0.0.0:68".parse().unwrap(),
                true,
                Instant::now(),
                1000,
            )
            .await
            .unwrap();
        assert_eq!(
            out.served,
            Some(Served::Script(
                "http://192.0.2.10:8080/boot/02:00:00:00:00:02.ipxe".into()
            ))
        );
        // Policy ignore: an address, but no boot answer.
        let quiet = PxeRequest::discover([2, 0, 0, 0, 0, 0x66], 7).encode();
        let out = r
            .handle(
                &quiet,
                "0.0.0.0:68".parse().unwrap(),
                true,
                Instant::now(),
                1031,
            )
            .await
            .unwrap();
        let m = Message::from_bytes(&out.bytes).unwrap();
        assert!(!m.yiaddr().is_unspecified());
        assert_eq!(opt(&m, OptionCode::BootfileName), None);
        assert_eq!(r.stats.snapshot().silenced, 1);
    }

    #[tokio::test]
    async fn relays_in_and_out_of_the_subnet_and_option_82() {
        let (r, _) = responder(Policy::default());
        let mut relayed = msg(MessageType::Discover, MAC, vec![]);
        relayed.set_giaddr(Ipv4Addr::new(192, 0, 2, 1));
        let mut raw = relayed.to_vec().unwrap();
        assert!(reply::insert_last(&mut raw, 82, &[1, 3, b'p', b'1', b'0']));
        let out = r
            .handle(
                &raw,
                "192.0.2.1:67".parse().unwrap(),
                false,
                Instant::now(),
                1000,
            )
            .await
            .unwrap();
        Message::from_bytes(&out.bytes).unwrap();
        assert_eq!(out.dest, "192.0.2.1:67".parse().unwrap());
        assert!(
            out.bytes
                .windows(7)
                .any(|w| w == [82, 5, 1, 3, b'p', b'1', b'0']),
            "option 82 echoed unchanged, once: {:?}",
            &out.bytes[240..]
        );
        assert_eq!(out.bytes.iter().filter(|b| **b == 82).count(), 1);
        raw[24..28].copy_from_slice(&[10, 0, 0, 1]);
        assert!(
            r.handle(
                &raw,
                "10.0.0.1:67".parse().unwrap(),
                true,
                Instant::now(),
                1000
            )
            .await
            .is_none()
        );
        assert_eq!(r.stats.snapshot().relay_refused, 1);
        // Unrelayed on an interface outside the subnet: ignored.
        let d = msg(MessageType::Discover, MAC, vec![]).to_vec().unwrap();
        assert!(
            r.handle(
                &d,
                "0.0.0.0:68".parse().unwrap(),
                false,
                Instant::now(),
                1000
            )
            .await
            .is_none()
        );
    }

    #[tokio::test]
    async fn no_ack_until_the_lease_is_flushed_and_the_retry_acks() {
        use std::sync::atomic::Ordering;
        let (r, tree) = responder(Policy::default());
        let (_, offer) = send(&r, &msg(MessageType::Discover, MAC, vec![]), 1000)
            .await
            .unwrap();
        let ip = offer.yiaddr();
        let select = msg(
            MessageType::Request,
            MAC,
            vec![
                DhcpOption::ServerIdentifier(SERVER),
                DhcpOption::RequestedIpAddress(ip),
            ],
        );
        r.leases.fail_flush.store(true, Ordering::Relaxed);
        assert!(
            send(&r, &select, 1001).await.is_none(),
            "no ACK while the lease is not durable"
        );
        assert_eq!(r.stats.snapshot().lease_write_failed, 1);
        assert_eq!(r.stats.snapshot().acks, 0);
        // The address stays the client's meanwhile: nobody else is offered it.
        let (_, other) = send(
            &r,
            &msg(MessageType::Discover, [2, 0, 0, 0, 0, 2], vec![]),
            1001,
        )
        .await
        .unwrap();
        assert_ne!(other.yiaddr(), ip);
        // The client retries; the disk works again: ACK, lease written.
        r.leases.fail_flush.store(false, Ordering::Relaxed);
        let (_, ack) = send(&r, &select, 1002).await.unwrap();
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.yiaddr(), ip);
        assert_eq!(tree.len(), 1);
        assert_eq!(r.stats.snapshot().lease_write_failed, 1);
    }

    /// A DECLINE is for an address the client got in an ACK: a flood of DISCOVER + DECLINE
    /// from random MACs quarantines nothing and writes nothing.
    #[tokio::test]
    async fn decline_of_a_mere_offer_is_dropped_and_writes_nothing() {
        let (r, tree) = responder(Policy::default());
        for n in 1..=2u8 {
            let mac = [2, 0, 0, 0, 7, n];
            let (_, offer) = send(&r, &msg(MessageType::Discover, mac, vec![]), 1000)
                .await
                .unwrap();
            let decline = msg(
                MessageType::Decline,
                mac,
                vec![
                    DhcpOption::RequestedIpAddress(offer.yiaddr()),
                    DhcpOption::ServerIdentifier(SERVER),
                ],
            );
            assert!(send(&r, &decline, 1000).await.is_none());
        }
        assert_eq!(tree.len(), 0, "nothing written");
        assert_eq!(r.stats.snapshot().decline_refused, 2);
        assert!(
            r.leases
                .list(1000)
                .iter()
                .all(|l| l.state == crate::dhcp::LeaseState::Offered)
        );
    }

    #[tokio::test]
    async fn decline_and_release_only_from_the_holder() {
        let (r, tree) = responder(Policy::default());
        send(&r, &msg(MessageType::Discover, MAC, vec![]), 1000)
            .await
            .unwrap();
        let ip = Ipv4Addr::new(192, 0, 2, 100);
        let select = msg(
            MessageType::Request,
            MAC,
            vec![
                DhcpOption::ServerIdentifier(SERVER),
                DhcpOption::RequestedIpAddress(ip),
            ],
        );
        send(&r, &select, 1000).await.unwrap();
        let mut release = msg(MessageType::Release, [2, 0, 0, 0, 0, 9], vec![]);
        release.set_ciaddr(ip);
        assert!(send(&r, &release, 1001).await.is_none());
        assert_eq!(r.leases.list(1001).len(), 1, "a stranger cannot release it");
        // Without option 54, or with another server's: dropped, counted.
        for opts in [
            vec![DhcpOption::RequestedIpAddress(ip)],
            vec![
                DhcpOption::RequestedIpAddress(ip),
                DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 0, 2, 1)),
            ],
        ] {
            assert!(
                send(&r, &msg(MessageType::Decline, MAC, opts), 1002)
                    .await
                    .is_none()
            );
        }
        assert_eq!(r.stats.snapshot().decline_refused, 2);
        assert_eq!(r.leases.list(1002)[0].state, crate::dhcp::LeaseState::Bound);
        let decline = msg(
            MessageType::Decline,
            MAC,
            vec![
                DhcpOption::RequestedIpAddress(ip),
                DhcpOption::ServerIdentifier(SERVER),
            ],
        );
        assert!(send(&r, &decline, 1002).await.is_none());
        let l = &r.leases.list(1002)[0];
        assert_eq!((l.ip, l.state), (ip, crate::dhcp::LeaseState::Declined));
        assert_eq!(tree.len(), 1, "declined addresses are stored");
        let (_, o) = send(&r, &msg(MessageType::Discover, MAC, vec![]), 1003)
            .await
            .unwrap();
        assert_ne!(o.yiaddr(), ip);
    }

    /// Random, truncated and bit-flipped packets on the full path never panic, every one is
    /// counted, and whatever is sent decodes; the pool stays bounded.
    #[tokio::test]
    async fn fuzzish_inputs_never_panic_in_full_mode() {
        use rand::{Rng, SeedableRng};
        let (r, _) = responder(Policy::default());
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xf0117);
        let mut templates = vec![PxeRequest::discover(MAC, 7).encode()];
        for kind in [
            MessageType::Discover,
            MessageType::Request,
            MessageType::Decline,
            MessageType::Release,
            MessageType::Inform,
        ] {
            let mut m = msg(
                kind,
                MAC,
                vec![
                    DhcpOption::ServerIdentifier(SERVER),
                    DhcpOption::RequestedIpAddress(Ipv4Addr::new(192, 0, 2, 100)),
                    DhcpOption::ClientIdentifier(vec![1, 2, 3]),
                    DhcpOption::MaxMessageSize(576),
                    DhcpOption::ParameterRequestList(vec![OptionCode::SubnetMask]),
                ],
            );
            m.set_flags(Flags::default().set_broadcast());
            templates.push(m.to_vec().unwrap());
        }
        let mut total = 0u64;
        for i in 0..10_000 {
            let t = &templates[i % templates.len()];
            let pkt: Vec<u8> = match i % 4 {
                0 => (0..rng.random_range(0..700))
                    .map(|_| rng.random())
                    .collect(),
                1 => t[..rng.random_range(0..=t.len())].to_vec(),
                2 => {
                    let mut p = t.clone();
                    for _ in 0..rng.random_range(1..6) {
                        let at = rng.random_range(0..p.len());
                        p[at] ^= 1 << rng.random_range(0..8);
                    }
                    p
                }
                _ => {
                    let mut p = t[..240].to_vec();
                    p.extend((0..rng.random_range(0..300)).map(|_| rng.random::<u8>()));
                    p
                }
            };
            if let Some(out) = r
                .handle(
                    &pkt,
                    "0.0.0.0:68".parse().unwrap(),
                    rng.random(),
                    Instant::now(),
                    1000 + i as u64 / 100,
                )
                .await
            {
                let m = Message::from_bytes(&out.bytes).unwrap();
                assert!(
                    out.bytes.len() <= 576 - IP_UDP_HEADERS
                        || m.opts().get(OptionCode::BootfileName).is_some()
                        || out.bytes.len() < 1500
                );
            }
            total += 1;
        }
        let s = r.stats.snapshot();
        assert_eq!(s.received, total);
        assert!(s.dropped_malformed > 2_000, "{s:?}");
        assert!(
            r.leases.list(2000).len() <= 3,
            "bounded by the pool (+ reservation)"
        );
    }
}
