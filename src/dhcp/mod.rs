//! Proxy-DHCP responder for PXE and UEFI HTTP-boot clients.
//!
//! The office DHCP server hands out addresses; this responder only tells network-boot clients
//! what to boot. It never offers an address (`yiaddr` is always 0).
//!
//! # Protocol
//!
//! - **Port 67** (`dhcp_port`): a DHCPDISCOVER gets a DHCPOFFER. **Port 4011** (`proxy_port`): a
//!   DHCPREQUEST or DHCPINFORM gets a DHCPACK (UEFI firmware asks there because our offer to it
//!   carries no option 43). Every other message type is left alone (the DHCPREQUEST on 67 is
//!   the office server's business).
//! - Only clients whose option 60 starts with `PXEClient` or `HTTPClient` **and** that send
//!   option 93 (client architecture) are answered. Everything else gets no reply and is counted
//!   in [`DhcpStats::ignored`].
//! - A reply carries options 53, 54 (`server_ip`), 60 (`PXEClient`, or `HTTPClient` for UEFI
//!   HTTP boot), 97 echoed when the client sent it, and the boot file both in the BOOTP `file`
//!   header (U-Boot reads only that) and in option 67; `siaddr` (TFTP next-server) is
//!   `server_ip`. BIOS clients (arch 0) also get option 43 with PXE sub-option 6 = 8 ("bypass
//!   boot-server discovery, use the file name"): `06 01 08 ff`.
//!
//! # Architecture → boot program
//!
//! | option 93 | firmware | served |
//! |---|---|---|
//! | 0 | x86 BIOS | [`BootFiles::bios`] over TFTP |
//! | 6 | x86 (ia32) UEFI | [`BootFiles::efi_ia32`] over TFTP (`None`: no answer, counted in [`DhcpStats::no_binary_for_arch`]) |
//! | 7, 9 | x86-64 UEFI (9 is the pre-erratum code some firmware still sends) | [`BootFiles::efi_x64`] over TFTP |
//! | 11 | arm64 UEFI | [`BootFiles::efi_arm64`] over TFTP |
//! | 15, 16, 19 | ia32 / x86-64 / arm64 UEFI HTTP boot | option 60 `HTTPClient` and the IP-literal URL `{boot_url_base}/ipxe/{binary}` |
//! | anything else | | no answer, counted in [`DhcpStats::unknown_arch`] |
//!
//! # No chainload loop
//!
//! Firmware gets an iPXE binary; that iPXE then runs DHCP again. An iPXE client (user class
//! option 77 equal to `iPXE`, or option 175 present) is recognised and gets the HTTP boot
//! script URL `{boot_url_base}/boot/{mac}.ipxe` (MAC colon-separated, lowercase) instead of a
//! binary, so it never downloads another iPXE.
//!
//! The exception is a *foreign* iPXE (for example a NIC option ROM or a distribution build)
//! that lacks a feature the boot script needs. iPXE lists its build features in option 175
//! as encapsulated sub-options (`0x13` HTTP, `0x14` HTTPS, `0x15` TFTP, `0x24` EFI, `0x18`
//! bzImage, ...). A client without HTTP, or without HTTPS while
//! [`ProxyDhcpConfig::require_https`] is set, or one that sends user class `iPXE` but no
//! option 175 at all, is sent **our** binary for its architecture over TFTP instead. Our
//! binaries are built with every feature, so once chained they always get the script: the
//! exception cannot loop.
//!
//! # Destinations
//!
//! - A relayed request (`giaddr` ≠ 0) is answered by unicast to `giaddr:dhcp_port`, with
//!   `giaddr` copied into the reply.
//! - Otherwise a client that already has an address (`ciaddr` ≠ 0) and did not set the
//!   broadcast flag is answered by unicast to `ciaddr:client_port`.
//! - Otherwise the reply is broadcast to `255.255.255.255:client_port`.
//! - Requests on port 4011 are answered by unicast to the packet's source address and port.
//!
//! Replies whose `ciaddr` is 0 carry the broadcast flag, so a relay agent broadcasts them on the
//! client's segment (it cannot unicast to a client without an address).
//!
//! # Sockets
//!
//! One UDP socket per configured interface per port, with `SO_BINDTODEVICE`,
//! `SO_REUSEADDR` and `SO_BROADCAST`; with no interfaces configured, one `0.0.0.0` socket per
//! port. Without `SO_BINDTODEVICE` a broadcast reply leaves through the interface the routing
//! table picks for `255.255.255.255` (normally the default route's), so a multi-homed host
//! should list its boot interfaces. Binding port 67 needs `CAP_NET_BIND_SERVICE`;
//! `SO_BINDTODEVICE` needs `CAP_NET_RAW`.
//!
//! # Robustness
//!
//! Requests are parsed by a small bounds-checked parser of our own; anything malformed
//! (truncated, not a BOOTREQUEST, no magic cookie, Ethernet with `hlen` ≠ 6, options that
//! overrun the packet or have impossible lengths) is dropped and counted in
//! [`DhcpStats::dropped_malformed`]. A token bucket per MAC ([`ProxyDhcpConfig::per_mac_burst`],
//! [`ProxyDhcpConfig::per_mac_per_second`]) bounds how often one client is answered; excess
//! packets are counted in [`DhcpStats::rate_limited`].
//!
//! # Policy and inventory
//!
//! For every PXE/HTTP-boot client that asks (a DISCOVER on 67, a REQUEST/INFORM on 4011, not
//! rate-limited) the responder calls [`ClientPolicy::answer`] before replying (`false` keeps it
//! silent, counted in [`DhcpStats::silenced`]) and then [`ClientPolicy::observed`] with what it
//! served, or `None` when it stayed silent. Both are called on the receive path and must not
//! block.

pub(crate) mod client;
pub(crate) mod decide;
pub(crate) mod full;
pub mod lease;
pub mod leases;
pub mod pool;
pub mod probe;
pub(crate) mod reply;
mod server;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::mac::MacAddr;

pub use client::ClientInfo;
pub use lease::{Lease, LeaseState};
pub use leases::{LEASES_TREE, LeaseStoreError, Leases};
pub use pool::{AddressRange, PoolConfig, ReservationRules, Subnet};
pub use server::{FullDhcpConfig, ProxyDhcp};

/// Configuration of the proxy-DHCP responder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyDhcpConfig {
    /// Interfaces to answer on (one socket per interface and port, `SO_BINDTODEVICE`); empty =
    /// every interface (one `0.0.0.0` socket per port, no `SO_BINDTODEVICE`).
    pub interfaces: Vec<String>,
    /// Address advertised to clients: option 54, `siaddr` (TFTP next-server) and the IP literal
    /// in boot URLs.
    pub server_ip: Ipv4Addr,
    /// DHCP server port (67): DISCOVER → OFFER; also the port relay agents are answered on.
    pub dhcp_port: u16,
    /// PXE proxy port (4011): REQUEST/INFORM → ACK.
    pub proxy_port: u16,
    /// Port replies to clients are sent to (68).
    pub client_port: u16,
    /// Absolute `http(s)://` base URL with an IP literal host and no trailing slash, e.g.
    /// `http://192.0.2.10:8080`. Boot scripts are at `{base}/boot/{mac}.ipxe`, binaries for
    /// UEFI HTTP boot at `{base}/ipxe/{binary}`.
    pub boot_url_base: String,
    /// The boot script needs HTTPS: a foreign iPXE without the HTTPS feature is chained to our
    /// binary first.
    pub require_https: bool,
    /// TFTP names of the iPXE binaries per firmware architecture.
    pub boot_files: BootFiles,
    /// Token-bucket size per client MAC (packets answered back to back); 0 disables the limit.
    pub per_mac_burst: u32,
    /// Token-bucket refill rate per client MAC (packets per second); 0 disables the limit.
    pub per_mac_per_second: u32,
}

impl Default for ProxyDhcpConfig {
    /// Standard ports, every interface, `0.0.0.0` as the (placeholder) server address, a burst
    /// of 20 and 10 packets/s per MAC.
    fn default() -> Self {
        ProxyDhcpConfig {
            interfaces: Vec::new(),
            server_ip: Ipv4Addr::UNSPECIFIED,
            dhcp_port: 67,
            proxy_port: 4011,
            client_port: 68,
            boot_url_base: String::new(),
            require_https: false,
            boot_files: BootFiles::default(),
            per_mac_burst: 20,
            per_mac_per_second: 10,
        }
    }
}

/// TFTP names of the iPXE network boot programs, per firmware architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    /// x86 BIOS (arch 0), e.g. `undionly.kpxe`; `None` = not served (such clients get no
    /// answer).
    pub bios: Option<String>,
    /// x86-64 UEFI (arch 7 and 9; HTTP boot 16), e.g. `ipxe.efi`.
    pub efi_x64: String,
    /// arm64 UEFI (arch 11; HTTP boot 19), e.g. `ipxe-arm64.efi`.
    pub efi_arm64: String,
    /// 32-bit x86 UEFI (arch 6; HTTP boot 15); `None` = not served (such clients get no answer).
    pub efi_ia32: Option<String>,
}

impl Default for BootFiles {
    /// `undionly.kpxe`, `ipxe.efi`, `ipxe-arm64.efi`, no ia32 UEFI binary.
    fn default() -> Self {
        BootFiles {
            bios: Some("undionly.kpxe".to_string()),
            efi_x64: "ipxe.efi".to_string(),
            efi_arm64: "ipxe-arm64.efi".to_string(),
            efi_ia32: None,
        }
    }
}

/// What a reply pointed the client at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Served {
    /// A network boot program: a TFTP file name, or an HTTP URL for UEFI HTTP boot.
    Binary(String),
    /// The URL of the client's iPXE boot script.
    Script(String),
}

impl Served {
    /// The file name or URL put in the reply.
    pub fn as_str(&self) -> &str {
        match self {
            Served::Binary(s) | Served::Script(s) => s,
        }
    }
}

impl std::fmt::Display for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Served::Binary(s) => write!(f, "binary {s}"),
            Served::Script(s) => write!(f, "script {s}"),
        }
    }
}

/// Per-MAC decisions and the machine inventory, supplied by the caller (the `assign` module).
///
/// Both methods are called on the DHCP receive path: they must return quickly and never block
/// on I/O.
pub trait ClientPolicy: Send + Sync + 'static {
    /// Whether to answer this client at all; `false` keeps the responder silent (policy
    /// `ignore` for unassigned machines), so another boot server or the local disk wins.
    fn answer(&self, client: &ClientInfo) -> bool;
    /// Called for every PXE/HTTP-boot client that asks (also silenced ones, with `None`, and
    /// ones whose architecture has no binary), after the decision: feeds the inventory.
    fn observed(&self, client: &ClientInfo, served: Option<&Served>);
    /// Full mode: every machine's fixed address and host name (none by default). Called once
    /// per packet, before the lease table is locked: a cheap snapshot, rebuilt only when
    /// reservations change, so lookups under the lease lock are plain map reads.
    fn reservations(&self) -> std::sync::Arc<Reservations> {
        std::sync::Arc::default()
    }
}

/// A snapshot of the static reservations, by MAC and by address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservations {
    by_mac: std::collections::HashMap<[u8; 6], Reservation>,
    by_ip: std::collections::HashMap<Ipv4Addr, [u8; 6]>,
}

impl Reservations {
    /// The snapshot of these reservations (fixed addresses unique, as the assignment table
    /// keeps them).
    pub fn new(list: impl IntoIterator<Item = ([u8; 6], Reservation)>) -> Reservations {
        let by_mac: std::collections::HashMap<_, _> = list.into_iter().collect();
        let by_ip = by_mac
            .iter()
            .filter_map(|(mac, r)| r.ip.map(|ip| (ip, *mac)))
            .collect();
        Reservations { by_mac, by_ip }
    }

    /// The machine's fixed address and host name.
    pub fn of(&self, mac: [u8; 6]) -> Reservation {
        self.by_mac.get(&mac).cloned().unwrap_or_default()
    }

    /// Whether `ip` is the fixed address of a machine other than `mac`.
    pub fn reserved_by_other(&self, ip: Ipv4Addr, mac: [u8; 6]) -> bool {
        self.by_ip.get(&ip).is_some_and(|owner| *owner != mac)
    }
}

/// A machine's static reservation for the full DHCP server (from its assignment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservation {
    /// Fixed address: always this machine's, never offered to another.
    pub ip: Option<Ipv4Addr>,
    /// Host name sent as option 12.
    pub hostname: Option<String>,
}

/// A [`ClientPolicy`] that answers every client and records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnswerAll;

impl ClientPolicy for AnswerAll {
    fn answer(&self, _client: &ClientInfo) -> bool {
        true
    }
    fn observed(&self, _client: &ClientInfo, _served: Option<&Served>) {}
}

/// Counters of the responder, updated atomically by the receive loops.
#[derive(Debug, Default)]
pub struct DhcpStats {
    /// Datagrams received on any socket.
    pub received: AtomicU64,
    /// DHCPOFFERs sent (port 67).
    pub offers: AtomicU64,
    /// DHCPACKs sent (port 4011).
    pub acks: AtomicU64,
    /// Well-formed packets that are not for us: not a PXE/HTTP-boot client (option 60), no
    /// option 93, not Ethernet, or a message type the port does not answer.
    pub ignored: AtomicU64,
    /// PXE clients the [`ClientPolicy`] told us not to answer.
    pub silenced: AtomicU64,
    /// Malformed packets (truncated, not a BOOTREQUEST, bad options, bad `hlen`).
    pub dropped_malformed: AtomicU64,
    /// Packets dropped by the per-MAC token bucket.
    pub rate_limited: AtomicU64,
    /// PXE clients whose architecture maps to a binary we do not have (ia32 UEFI by default).
    pub no_binary_for_arch: AtomicU64,
    /// PXE clients with an option 93 architecture we do not know.
    pub unknown_arch: AtomicU64,
    /// Replies the kernel refused to send.
    pub send_errors: AtomicU64,
    /// Full mode: DHCPDISCOVERs received.
    pub discover: AtomicU64,
    /// Full mode: DHCPREQUESTs received.
    pub request: AtomicU64,
    /// Full mode: DHCPDECLINEs received.
    pub decline: AtomicU64,
    /// Full mode: DHCPRELEASEs received.
    pub release: AtomicU64,
    /// Full mode: DHCPINFORMs received.
    pub inform: AtomicU64,
    /// Full mode: DHCPNAKs sent.
    pub naks: AtomicU64,
    /// Full mode: DISCOVERs left unanswered because no address was free.
    pub pool_exhausted: AtomicU64,
    /// Full mode: relayed packets whose `giaddr` is outside the pool's subnet.
    pub relay_refused: AtomicU64,
    /// Full mode: candidate addresses that answered the ICMP probe.
    pub probe_conflict: AtomicU64,
    /// Full mode: DISCOVERs left unanswered because every probe slot was busy.
    pub probe_busy: AtomicU64,
    /// Full mode: REQUESTs left unacknowledged because the lease could not be written to disk.
    pub lease_write_failed: AtomicU64,
    /// Full mode: DECLINEs dropped (no option 54 of ours, or not for the client's bound lease).
    pub decline_refused: AtomicU64,
}

/// A plain copy of [`DhcpStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhcpStatsSnapshot {
    /// See [`DhcpStats::received`].
    pub received: u64,
    /// See [`DhcpStats::offers`].
    pub offers: u64,
    /// See [`DhcpStats::acks`].
    pub acks: u64,
    /// See [`DhcpStats::ignored`].
    pub ignored: u64,
    /// See [`DhcpStats::silenced`].
    pub silenced: u64,
    /// See [`DhcpStats::dropped_malformed`].
    pub dropped_malformed: u64,
    /// See [`DhcpStats::rate_limited`].
    pub rate_limited: u64,
    /// See [`DhcpStats::no_binary_for_arch`].
    pub no_binary_for_arch: u64,
    /// See [`DhcpStats::unknown_arch`].
    pub unknown_arch: u64,
    /// See [`DhcpStats::send_errors`].
    pub send_errors: u64,
    /// See [`DhcpStats::discover`].
    pub discover: u64,
    /// See [`DhcpStats::request`].
    pub request: u64,
    /// See [`DhcpStats::decline`].
    pub decline: u64,
    /// See [`DhcpStats::release`].
    pub release: u64,
    /// See [`DhcpStats::inform`].
    pub inform: u64,
    /// See [`DhcpStats::naks`].
    pub naks: u64,
    /// See [`DhcpStats::pool_exhausted`].
    pub pool_exhausted: u64,
    /// See [`DhcpStats::relay_refused`].
    pub relay_refused: u64,
    /// See [`DhcpStats::probe_conflict`].
    pub probe_conflict: u64,
    /// See [`DhcpStats::probe_busy`].
    pub probe_busy: u64,
    /// See [`DhcpStats::lease_write_failed`].
    pub lease_write_failed: u64,
    /// See [`DhcpStats::decline_refused`].
    pub decline_refused: u64,
}

impl DhcpStats {
    /// Reads every counter (each atomically; the set is not one consistent instant).
    pub fn snapshot(&self) -> DhcpStatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DhcpStatsSnapshot {
            received: r(&self.received),
            offers: r(&self.offers),
            acks: r(&self.acks),
            ignored: r(&self.ignored),
            silenced: r(&self.silenced),
            dropped_malformed: r(&self.dropped_malformed),
            rate_limited: r(&self.rate_limited),
            no_binary_for_arch: r(&self.no_binary_for_arch),
            unknown_arch: r(&self.unknown_arch),
            send_errors: r(&self.send_errors),
            discover: r(&self.discover),
            request: r(&self.request),
            decline: r(&self.decline),
            release: r(&self.release),
            inform: r(&self.inform),
            naks: r(&self.naks),
            pool_exhausted: r(&self.pool_exhausted),
            relay_refused: r(&self.relay_refused),
            probe_conflict: r(&self.probe_conflict),
            probe_busy: r(&self.probe_busy),
            lease_write_failed: r(&self.lease_write_failed),
            decline_refused: r(&self.decline_refused),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_as_str_and_display() {
        let b = Served::Binary("ipxe.efi".into());
        let s = Served::Script("http://x/boot/a.ipxe".into());
        assert_eq!(b.as_str(), "ipxe.efi");
        assert_eq!(s.to_string(), "script http://x/boot/a.ipxe");
    }
}
