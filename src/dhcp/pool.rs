//! The address pool of the full DHCP server: the `pxe.dhcp.*` settings as types, and the
//! checks that make a pool usable (range inside the subnet, router inside it, a bounded size).
//!
//! Pure values and checks, no I/O: the configuration loader calls [`PoolConfig::validate`]
//! when it knows the netmask, the network-boot service again once it derived the netmask from
//! the interface.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Most addresses a pool may hold (a /16): the lease table and the offers held in memory are
/// bounded by it.
pub const MAX_POOL_SIZE: u32 = 65_536;

/// An inclusive range of IPv4 addresses, written `192.0.2.100-192.0.2.199`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    /// First address handed out.
    pub start: Ipv4Addr,
    /// Last address handed out (inclusive).
    pub end: Ipv4Addr,
}

impl AddressRange {
    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.start)..=u32::from(self.end)).contains(&u32::from(ip))
    }

    /// Number of addresses (0 when `start` > `end`).
    pub fn size(&self) -> u64 {
        let (s, e) = (
            u64::from(u32::from(self.start)),
            u64::from(u32::from(self.end)),
        );
        if e < s { 0 } else { e - s + 1 }
    }
}

impl FromStr for AddressRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a range START-END like 192.0.2.100-192.0.2.199");
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let start = a.trim().parse::<Ipv4Addr>().map_err(|_| bad())?;
        let end = b.trim().parse::<Ipv4Addr>().map_err(|_| bad())?;
        Ok(AddressRange { start, end })
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// An IPv4 subnet: network address and netmask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address (host bits zero).
    pub network: Ipv4Addr,
    /// The netmask (contiguous ones).
    pub netmask: Ipv4Addr,
}

impl Subnet {
    /// The subnet of `ip` under `netmask`; `None` when the mask is not contiguous ones or is
    /// /31 or /32 (no room for a server and clients).
    pub fn of(ip: Ipv4Addr, netmask: Ipv4Addr) -> Option<Subnet> {
        let m = u32::from(netmask);
        if m.leading_ones() + m.trailing_zeros() != 32 || m.leading_ones() > 30 {
            return None;
        }
        Some(Subnet {
            network: Ipv4Addr::from(u32::from(ip) & m),
            netmask,
        })
    }

    /// The subnet of a prefix length (`/24`).
    pub fn from_prefix(ip: Ipv4Addr, prefix: u8) -> Option<Subnet> {
        if prefix == 0 || prefix > 32 {
            return None;
        }
        Subnet::of(ip, Ipv4Addr::from(u32::MAX << (32 - u32::from(prefix))))
    }

    /// Whether `ip` is a host address of this subnet (not the network or broadcast address).
    pub fn contains_host(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.netmask);
        let ip = u32::from(ip);
        ip & m == u32::from(self.network) && ip != u32::from(self.network) && ip != self.bcast()
    }

    fn bcast(&self) -> u32 {
        u32::from(self.network) | !u32::from(self.netmask)
    }

    /// The directed broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.bcast())
    }

    /// Prefix length.
    pub fn prefix(&self) -> u32 {
        u32::from(self.netmask).leading_ones()
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix())
    }
}

/// The pool and the options handed out with it (`pxe.dhcp.*`, netmask resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Addresses given to clients without a reservation.
    pub range: AddressRange,
    /// Option 1.
    pub netmask: Ipv4Addr,
    /// Option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 51; T1 (58) is half of it, T2 (59) seven eighths.
    pub lease_secs: u32,
    /// How long an address offered but not requested is held.
    pub offer_secs: u32,
    /// ICMP-probe an address before offering it.
    pub probe: bool,
}

/// Why a pool cannot be used; the text names the `pxe.dhcp.*` key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PoolError {
    /// The configuration key at fault.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

fn pool_error(key: &'static str, message: String) -> PoolError {
    PoolError { key, message }
}

impl PoolConfig {
    /// The subnet the pool serves (range start under the netmask).
    pub fn subnet(&self) -> Option<Subnet> {
        Subnet::of(self.range.start, self.netmask)
    }

    /// Checks the pool: a contiguous netmask of at most /30, start ≤ end, both in the subnet,
    /// at most [`MAX_POOL_SIZE`] addresses, the router and `server` (the advertised address,
    /// when known) in the subnet and the server outside the range, sane lease times.
    pub fn validate(&self, server: Option<Ipv4Addr>) -> Result<Subnet, PoolError> {
        let subnet = self.subnet().ok_or_else(|| {
            pool_error(
                "pxe.dhcp.netmask",
                format!(
                    "{} is not a netmask of contiguous ones between /1 and /30",
                    self.netmask
                ),
            )
        })?;
        let r = self.range;
        if u32::from(r.start) > u32::from(r.end) {
            return Err(pool_error(
                "pxe.dhcp.range",
                format!("{r}: the start is after the end"),
            ));
        }
        for ip in [r.start, r.end] {
            if !subnet.contains_host(ip) {
                return Err(pool_error(
                    "pxe.dhcp.range",
                    format!("{ip} is not a host address of the subnet {subnet}"),
                ));
            }
        }
        if r.size() > u64::from(MAX_POOL_SIZE) {
            return Err(pool_error(
                "pxe.dhcp.range",
                format!("{r} holds {} addresses; at most {MAX_POOL_SIZE}", r.size()),
            ));
        }
        if let Some(router) = self.router
            && !subnet.contains_host(router)
        {
            return Err(pool_error(
                "pxe.dhcp.router",
                format!("{router} is not in the pool's subnet {subnet}"),
            ));
        }
        if let Some(server) = server {
            if !subnet.contains_host(server) {
                return Err(pool_error(
                    "pxe.advertiseAddress",
                    format!(
                        "{server} is not in the pool's subnet {subnet}: clients would get a \
                         server identifier they cannot reach; advertise this host's address \
                         on that subnet"
                    ),
                ));
            }
            if r.contains(server) {
                return Err(pool_error(
                    "pxe.dhcp.range",
                    format!("{r} contains this server's own address {server}"),
                ));
            }
        }
        if let Some(d) = &self.domain
            && !valid_dns_name(d)
        {
            return Err(pool_error(
                "pxe.dhcp.domain",
                format!("{d:?} is not a DNS domain name"),
            ));
        }
        if self.lease_secs < 60 {
            return Err(pool_error(
                "pxe.dhcp.leaseSeconds",
                format!("{} is less than 60 seconds", self.lease_secs),
            ));
        }
        if !(1..=3600).contains(&self.offer_secs) {
            return Err(pool_error(
                "pxe.dhcp.offerSeconds",
                format!("{} is not between 1 and 3600 seconds", self.offer_secs),
            ));
        }
        Ok(subnet)
    }
}

/// One RFC 1123 label: 1–63 letters, digits and hyphens, not starting or ending with a hyphen.
pub fn valid_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A host or domain name: dot-separated [`valid_label`]s, at most 253 bytes.
pub fn valid_dns_name(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(valid_label)
}

/// Which addresses of the full DHCP server's subnet a machine may reserve (its assignment's
/// `ip`): host addresses of the subnet, except those the network already uses — bootfactory's
/// own (advertised) address, the router (`pxe.dhcp.router`) and the DNS servers
/// (`pxe.dhcp.dns`). A reservation is handed out without an ICMP probe, so one of these would
/// put a machine on the address of the appliance or of the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRules {
    /// The pool's subnet.
    pub subnet: Subnet,
    /// Addresses in use, each with what uses it.
    pub taken: Vec<(Ipv4Addr, &'static str)>,
}

impl ReservationRules {
    /// The rules of `pool` (validated: `subnet` is its subnet) served from `server`.
    pub fn new(pool: &PoolConfig, subnet: Subnet, server: Ipv4Addr) -> ReservationRules {
        let mut taken = vec![(server, "bootfactory's own address")];
        if let Some(router) = pool.router {
            taken.push((router, "the router (pxe.dhcp.router)"));
        }
        for dns in &pool.dns {
            taken.push((*dns, "a DNS server (pxe.dhcp.dns)"));
        }
        ReservationRules { subnet, taken }
    }

    /// What already uses `ip`, if anything.
    pub fn taken_by(&self, ip: Ipv4Addr) -> Option<&'static str> {
        self.taken
            .iter()
            .find(|(t, _)| *t == ip)
            .map(|(_, role)| *role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn pool() -> PoolConfig {
        PoolConfig {
            range: "192.0.2.100-192.0.2.199".parse().unwrap(),
            netmask: ip("255.255.255.0"),
            router: Some(ip("192.0.2.1")),
            dns: vec![ip("192.0.2.1")],
            domain: Some("lab.example".into()),
            lease_secs: 3600,
            offer_secs: 30,
            probe: true,
        }
    }

    #[test]
    fn range_parses_and_prints() {
        let r: AddressRange = "192.0.2.100 - 192.0.2.199".parse().unwrap();
        assert_eq!(r.to_string(), "192.0.2.100-192.0.2.199");
        assert_eq!(r.size(), 100);
        assert!(r.contains(ip("192.0.2.150")) && !r.contains(ip("192.0.2.200")));
        for bad in [
            "",
            "192.0.2.1",
            "192.0.2.1-",
            "a-b",
            "192.0.2.1-192.0.2.300",
        ] {
            assert!(bad.parse::<AddressRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn subnet_math() {
        let s = Subnet::of(ip("192.0.2.77"), ip("255.255.255.0")).unwrap();
        assert_eq!(s.network, ip("192.0.2.0"));
        assert_eq!(s.broadcast(), ip("192.0.2.255"));
        assert_eq!(s.to_string(), "192.0.2.0/24");
        assert!(s.contains_host(ip("192.0.2.1")));
        assert!(!s.contains_host(ip("192.0.2.0")) && !s.contains_host(ip("192.0.2.255")));
        assert!(!s.contains_host(ip("192.0.3.1")));
        assert!(Subnet::of(ip("192.0.2.1"), ip("255.0.255.0")).is_none());
        assert!(Subnet::of(ip("192.0.2.1"), ip("255.255.255.254")).is_none());
        assert_eq!(
            Subnet::from_prefix(ip("10.1.2.3"), 16).unwrap().network,
            ip("10.1.0.0")
        );
    }

    #[test]
    fn validation_names_the_key() {
        assert!(pool().validate(Some(ip("192.0.2.10"))).is_ok());
        let err = |p: PoolConfig, server: Option<&str>| p.validate(server.map(ip)).unwrap_err().key;
        let mut p = pool();
        p.range = "192.0.2.199-192.0.2.100".parse().unwrap();
        assert_eq!(err(p, None), "pxe.dhcp.range");
        let mut p = pool();
        p.range = "192.0.2.100-192.0.3.5".parse().unwrap();
        assert_eq!(err(p, None), "pxe.dhcp.range");
        let mut p = pool();
        p.range = "192.0.2.0-192.0.2.5".parse().unwrap();
        assert_eq!(err(p, None), "pxe.dhcp.range", "network address");
        let mut p = pool();
        p.netmask = ip("255.0.0.0");
        p.range = "10.0.0.1-10.2.0.0".parse().unwrap();
        assert_eq!(err(p, None), "pxe.dhcp.range", "too big");
        let mut p = pool();
        p.router = Some(ip("198.51.100.1"));
        assert_eq!(err(p, None), "pxe.dhcp.router");
        assert_eq!(err(pool(), Some("198.51.100.1")), "pxe.advertiseAddress");
        assert_eq!(err(pool(), Some("192.0.2.150")), "pxe.dhcp.range");
        let mut p = pool();
        p.domain = Some("bad_domain".into());
        assert_eq!(err(p, None), "pxe.dhcp.domain");
        let mut p = pool();
        p.netmask = ip("255.255.0.255");
        assert_eq!(err(p, None), "pxe.dhcp.netmask");
        let mut p = pool();
        p.offer_secs = 0;
        assert_eq!(err(p, None), "pxe.dhcp.offerSeconds");
    }

    #[test]
    fn names() {
        assert!(valid_label("node-1") && valid_label(&"a".repeat(63)));
        for bad in ["", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!valid_label(bad), "{bad}");
        }
        assert!(valid_dns_name("lab.example") && !valid_dns_name("lab..example"));
    }
}
