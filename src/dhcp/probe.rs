//! The full DHCP server's safety checks: is another DHCP server on the segment (at start), and
//! is an address already in use (before offering it).
//!
//! - [`detect_other_server`] sends a DHCPDISCOVER of our own — a random locally administered
//!   MAC, broadcast, from the client port bound to the interface — and listens for an OFFER
//!   for [`SERVER_CHECK`]. Any answer means another server hands out addresses there: full
//!   mode refuses to start next to it.
//! - [`Prober`] sends one ICMP echo request to a candidate address (raw ICMP socket, so
//!   `CAP_NET_RAW`) and waits [`PROBE_TIMEOUT`] for the reply. Probes are bounded: at most
//!   [`MAX_PROBES`] at once (a DISCOVER that finds none free gets no answer now and is answered
//!   on the client's retry), and each address's result is cached for [`PROBE_CACHE`], so a
//!   flood of DISCOVERs cannot make us a ping cannon.

use std::collections::HashMap;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode};
use dhcproto::{Decodable, Encodable};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::Semaphore;

/// How long the start-up check listens for another server's OFFER.
pub const SERVER_CHECK: Duration = Duration::from_secs(2);
/// How long an ICMP probe waits for the echo reply.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(400);
/// Most ICMP probes in flight.
pub const MAX_PROBES: usize = 8;
/// How long a probe's result is reused for the same address.
pub const PROBE_CACHE: Duration = Duration::from_secs(10);
/// Most addresses in the probe cache (older results are dropped first).
const MAX_CACHED: usize = 4096;

/// Another DHCP server that answered our DISCOVER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherServer {
    /// Its option 54, else the reply's source address.
    pub server: Ipv4Addr,
    /// The address it offered (`yiaddr`).
    pub offered: Ipv4Addr,
}

/// Sends a DISCOVER on `iface` from `client_port` to `dhcp_port` and waits `wait` for an
/// OFFER. Errors are our own socket's (binding needs the port free and `CAP_NET_RAW`).
pub async fn detect_other_server(
    iface: &str,
    client_port: u16,
    dhcp_port: u16,
    wait: Duration,
) -> anyhow::Result<Option<OtherServer>> {
    let socket = super::server::open(Some(iface), client_port).with_context(|| {
        format!("full DHCP: the start-up check for other DHCP servers on {iface}")
    })?;
    let mut mac: [u8; 6] = rand::random();
    mac[0] = (mac[0] & 0xfc) | 0x02; // locally administered, unicast
    let xid: u32 = rand::random();
    let mut m = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    m.set_opcode(Opcode::BootRequest)
        .set_htype(HType::Eth)
        .set_flags(Flags::default().set_broadcast());
    m.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
        dhcproto::v4::OptionCode::SubnetMask,
        dhcproto::v4::OptionCode::ServerIdentifier,
    ]));
    let bytes = m.to_vec().context("encoding the check DISCOVER")?;
    let dest = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, dhcp_port));
    socket
        .send_to(&bytes, dest)
        .await
        .with_context(|| format!("full DHCP: sending the check DISCOVER on {iface}"))?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; 4096];
    loop {
        let recv = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
        let Ok(Ok((n, src))) = recv else {
            return Ok(None);
        };
        let Ok(reply) = Message::from_bytes(&buf[..n]) else {
            continue;
        };
        if reply.opcode() != Opcode::BootReply
            || reply.xid() != xid
            || reply.chaddr().get(..6) != Some(&mac[..])
            || reply.opts().msg_type() != Some(MessageType::Offer)
        {
            continue;
        }
        let server = match reply.opts().get(dhcproto::v4::OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => *ip,
            _ => match src {
                SocketAddr::V4(a) => *a.ip(),
                SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            },
        };
        return Ok(Some(OtherServer {
            server,
            offered: reply.yiaddr(),
        }));
    }
}

/// The answer of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Nobody answered.
    Free,
    /// An echo reply came back: the address is in use.
    InUse,
    /// No probe slot free (or the probe failed): do not offer now.
    Busy,
}

/// Bounded ICMP echo probes with a per-address cache.
#[derive(Debug, Clone)]
pub struct Prober {
    slots: Arc<Semaphore>,
    cache: Arc<Mutex<HashMap<Ipv4Addr, (Instant, bool)>>>,
    timeout: Duration,
}

impl Default for Prober {
    fn default() -> Self {
        Prober::new(PROBE_TIMEOUT)
    }
}

impl Prober {
    /// A prober waiting `timeout` per address.
    pub fn new(timeout: Duration) -> Prober {
        Prober {
            slots: Arc::new(Semaphore::new(MAX_PROBES)),
            cache: Arc::default(),
            timeout,
        }
    }

    /// Whether `ip` answers an ICMP echo.
    pub async fn probe(&self, ip: Ipv4Addr) -> Probe {
        let now = Instant::now();
        if let Some((at, in_use)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ip)
            && now.duration_since(*at) < PROBE_CACHE
        {
            return if *in_use { Probe::InUse } else { Probe::Free };
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return Probe::Busy;
        };
        let timeout = self.timeout;
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            ping(ip, timeout)
        })
        .await;
        let in_use = match result {
            Ok(Ok(answered)) => answered,
            Ok(Err(e)) => {
                tracing::warn!(%ip, error = %e, "full DHCP: ICMP probe failed (needs CAP_NET_RAW); not offering the address now");
                return Probe::Busy;
            }
            Err(_) => return Probe::Busy,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (at, _)| now.duration_since(*at) < PROBE_CACHE);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(ip, (Instant::now(), in_use));
        if in_use { Probe::InUse } else { Probe::Free }
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request with `ident` and `seq`.
fn echo_request(ident: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"bootfactory-dhcp");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// Whether `packet` (IPv4 header + ICMP, as a raw socket reads it) is the echo reply from
/// `ip` to our `ident`/`seq`.
fn is_reply(packet: &[u8], ip: Ipv4Addr, ident: u16, seq: u16) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || packet.len() < ihl + 8 {
        return false;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let icmp = &packet[ihl..];
    src == ip
        && icmp[0] == 0
        && u16::from_be_bytes([icmp[4], icmp[5]]) == ident
        && u16::from_be_bytes([icmp[6], icmp[7]]) == seq
}

/// One echo request to `ip`; true when the reply comes within `timeout`. Blocking.
fn ping(ip: Ipv4Addr, timeout: Duration) -> std::io::Result<bool> {
    let mut socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    let ident: u16 = rand::random();
    let seq: u16 = rand::random();
    socket.send_to(
        &echo_request(ident, seq),
        &SocketAddr::V4(SocketAddrV4::new(ip, 0)).into(),
    )?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        socket.set_read_timeout(Some(left))?;
        match socket.read(&mut buf) {
            Ok(n) if is_reply(&buf[..n], ip, ident, seq) => return Ok(true),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksums_to_zero_and_replies_are_matched() {
        let req = echo_request(0x1234, 7);
        assert_eq!(checksum(&req), 0);
        let mut reply = vec![
            0x45, 0, 0, 44, 0, 0, 0, 0, 64, 1, 0, 0, 192, 0, 2, 5, 192, 0, 2, 1,
        ];
        let mut icmp = req.clone();
        icmp[0] = 0;
        reply.extend_from_slice(&icmp);
        let ip = Ipv4Addr::new(192, 0, 2, 5);
        assert!(is_reply(&reply, ip, 0x1234, 7));
        assert!(!is_reply(&reply, Ipv4Addr::new(192, 0, 2, 6), 0x1234, 7));
        assert!(!is_reply(&reply, ip, 0x1235, 7));
        assert!(!is_reply(&reply[..25], ip, 0x1234, 7));
        assert!(!is_reply(&[], ip, 0x1234, 7));
        reply[20] = 8; // our own request, looped back
        assert!(!is_reply(&reply, ip, 0x1234, 7));
    }

    /// Needs CAP_NET_RAW: skipped without it. The loopback address answers.
    #[tokio::test]
    async fn probing_loopback_finds_it_in_use() {
        if Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).is_err() {
            eprintln!("skipped: no raw ICMP socket (CAP_NET_RAW)");
            return;
        }
        let p = Prober::new(Duration::from_millis(500));
        assert_eq!(p.probe(Ipv4Addr::LOCALHOST).await, Probe::InUse);
        // Cached: answered without a probe slot.
        let permits: Vec<_> = (0..MAX_PROBES)
            .map(|_| p.slots.clone().try_acquire_owned().unwrap())
            .collect();
        assert_eq!(p.probe(Ipv4Addr::LOCALHOST).await, Probe::InUse);
        assert_eq!(p.probe(Ipv4Addr::new(127, 0, 0, 2)).await, Probe::Busy);
        drop(permits);
    }
}
