//! The lease table of the full DHCP server: which address belongs to which client, in which
//! state, until when. Pure state, no I/O and no clock: every operation takes `now` in Unix
//! seconds, so tests drive time by hand.
//!
//! # States
//!
//! - **offered**: held for a client after a DHCPOFFER until `now + offerSeconds`; kept in
//!   memory only, never persisted (a flood of DISCOVERs writes nothing to disk and holds at
//!   most the pool, for `offerSeconds`).
//! - **bound**: after a DHCPACK, until the lease ends (`now + leaseSeconds`, renewed by each
//!   ACK).
//! - **declined**: the client said the address is in use (DHCPDECLINE): nobody gets it until
//!   the quarantine ends.
//!
//! Addresses that answered an ICMP probe are *conflicts*: not offered until their hold ends,
//! and not listed (they belong to nobody we know).
//!
//! A client is identified by option 61 (client identifier) when it sends one, else by its
//! MAC (RFC 2131 §4.2). An expired or released binding is remembered (bounded) so the client
//! gets the same address back when it returns and the address is still free.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use super::pool::{AddressRange, Subnet};

/// A lease's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseState {
    /// Offered, not yet requested (memory only).
    Offered,
    /// Acknowledged.
    Bound,
    /// Declined by its client: quarantined.
    Declined,
}

impl LeaseState {
    /// `offered`, `bound` or `declined`.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Offered => "offered",
            LeaseState::Bound => "bound",
            LeaseState::Declined => "declined",
        }
    }
}

/// Who a lease belongs to: the client identifier (option 61) when sent, else the MAC.
///
/// A client identifier that is only hardware type 1 (Ethernet) followed by the packet's own
/// `chaddr` names exactly what `chaddr` names (RFC 2132 §9.14's recommended form), so it keys
/// by MAC: a network-booting machine's firmware asks without option 61 and the iPXE it loads
/// asks with `01:<mac>`, and both are one machine that must keep one address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKey {
    /// Option 61, raw.
    Id(Vec<u8>),
    /// `chaddr`.
    Mac([u8; 6]),
}

impl ClientKey {
    /// The key of a client with this MAC and optional client identifier.
    pub fn new(mac: [u8; 6], client_id: Option<&[u8]>) -> ClientKey {
        match client_id {
            Some(id) if id.len() == 7 && id[0] == 1 && id[1..] == mac => ClientKey::Mac(mac),
            Some(id) if !id.is_empty() => ClientKey::Id(id.to_vec()),
            _ => ClientKey::Mac(mac),
        }
    }
}

/// One address's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The address.
    pub ip: Ipv4Addr,
    /// The client's MAC.
    pub mac: [u8; 6],
    /// Option 61 as sent, if any.
    pub client_id: Option<Vec<u8>>,
    /// State.
    pub state: LeaseState,
    /// End of the offer, lease or quarantine (Unix seconds).
    pub expires: u64,
    /// Host name sent to the client (option 12), if any.
    pub hostname: Option<String>,
    /// A static reservation (the machine's assignment has `ip`).
    pub is_static: bool,
}

impl Lease {
    /// The client this lease belongs to.
    pub fn key(&self) -> ClientKey {
        ClientKey::new(self.mac, self.client_id.as_deref())
    }
}

/// The client a lease operation is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Option 61 or MAC.
    pub key: ClientKey,
    /// `chaddr`.
    pub mac: [u8; 6],
    /// Option 61, raw.
    pub client_id: Option<Vec<u8>>,
    /// Host name to hand out (the reservation's).
    pub hostname: Option<String>,
    /// The machine's fixed address, if its assignment has one.
    pub reserved: Option<Ipv4Addr>,
}

impl Client {
    /// A client without reservation.
    pub fn new(mac: [u8; 6], client_id: Option<&[u8]>) -> Client {
        Client {
            key: ClientKey::new(mac, client_id),
            mac,
            client_id: client_id.filter(|c| !c.is_empty()).map(<[u8]>::to_vec),
            hostname: None,
            reserved: None,
        }
    }
}

/// An address chosen for a DISCOVER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The address.
    pub ip: Ipv4Addr,
    /// The client held it before (reservation, current or previous lease): no ICMP probe.
    pub known: bool,
}

/// What a REQUEST deserves (RFC 2131 §4.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The address is the client's: ACK and bind.
    Ack(Ipv4Addr),
    /// Wrong address: NAK.
    Nak,
    /// No record of this client (INIT-REBOOT): stay silent.
    Silent,
}

/// How the client asks in a REQUEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// After our OFFER (server identifier is ours), for the address in option 50.
    Selecting(Ipv4Addr),
    /// Rebooted, confirming the address in option 50 (no server identifier, `ciaddr` 0).
    InitReboot(Ipv4Addr),
    /// Extending the lease of `ciaddr` (RENEWING unicast or REBINDING broadcast).
    Renewing(Ipv4Addr),
}

/// The lease table (see the module documentation).
#[derive(Debug)]
pub struct LeaseTable {
    range: AddressRange,
    subnet: Subnet,
    leases: BTreeMap<u32, Lease>,
    by_client: HashMap<ClientKey, u32>,
    previous: HashMap<ClientKey, Ipv4Addr>,
    conflicts: HashMap<u32, u64>,
    cursor: u32,
}

impl LeaseTable {
    /// An empty table for `range` in `subnet`.
    pub fn new(range: AddressRange, subnet: Subnet) -> LeaseTable {
        LeaseTable {
            range,
            subnet,
            leases: BTreeMap::new(),
            by_client: HashMap::new(),
            previous: HashMap::new(),
            conflicts: HashMap::new(),
            cursor: 0,
        }
    }

    /// The pool's subnet.
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// Most remembered previous bindings (twice the pool): past it the memory starts over.
    fn previous_cap(&self) -> usize {
        (self.range.size() as usize).saturating_mul(2).max(16)
    }

    fn remember(&mut self, key: ClientKey, ip: Ipv4Addr) {
        if self.previous.len() >= self.previous_cap() {
            self.previous.clear();
        }
        self.previous.insert(key, ip);
    }

    /// Puts a lease in (loading the persisted table), replacing any lease on its address and
    /// the client's other lease. Returns the bound and declined leases it replaced — the
    /// caller deletes them from disk, or disk and memory drift apart (and the next start
    /// loads whichever record comes last); `None`: an address outside the subnet, refused.
    pub fn insert(&mut self, lease: Lease) -> Option<Vec<Lease>> {
        if !self.subnet.contains_host(lease.ip) {
            return None;
        }
        let mut evicted: Vec<Lease> = self.remove_at(lease.ip).into_iter().collect();
        if lease.state != LeaseState::Declined {
            if let Some(old) = self.by_client.get(&lease.key()).copied() {
                evicted.extend(self.remove_at(Ipv4Addr::from(old)));
            }
            self.by_client.insert(lease.key(), u32::from(lease.ip));
        }
        self.leases.insert(u32::from(lease.ip), lease);
        evicted.retain(|l| l.state != LeaseState::Offered);
        Some(evicted)
    }

    fn remove_at(&mut self, ip: Ipv4Addr) -> Option<Lease> {
        let lease = self.leases.remove(&u32::from(ip))?;
        if self.by_client.get(&lease.key()) == Some(&u32::from(ip)) {
            self.by_client.remove(&lease.key());
        }
        Some(lease)
    }

    /// Drops what has ended by `now`: offers and conflicts silently, bound and declined
    /// leases returned (the caller deletes them from disk). An expired binding is remembered
    /// for its client.
    pub fn expire(&mut self, now: u64) -> Vec<Lease> {
        self.conflicts.retain(|_, until| *until > now);
        let ended: Vec<u32> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(ip, _)| *ip)
            .collect();
        let mut out = Vec::new();
        for ip in ended {
            let Some(lease) = self.remove_at(Ipv4Addr::from(ip)) else {
                continue;
            };
            match lease.state {
                LeaseState::Offered => {}
                LeaseState::Bound => {
                    self.remember(lease.key(), lease.ip);
                    out.push(lease);
                }
                LeaseState::Declined => out.push(lease),
            }
        }
        out
    }

    /// The lease at `ip`.
    pub fn at(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.leases.get(&u32::from(ip))
    }

    /// The client's current (offered or bound) lease.
    pub fn of(&self, key: &ClientKey) -> Option<&Lease> {
        self.by_client.get(key).and_then(|ip| self.leases.get(ip))
    }

    /// Whether nobody else holds `ip` (no lease, or one of `key`'s; no conflict).
    fn free_for(&self, ip: Ipv4Addr, key: &ClientKey) -> bool {
        if self.conflicts.contains_key(&u32::from(ip)) {
            return false;
        }
        match self.at(ip) {
            None => true,
            Some(l) => l.state != LeaseState::Declined && l.key() == *key,
        }
    }

    /// Why `client`'s fixed address cannot be its now, if it cannot: another host answered
    /// an ICMP probe on it (a conflict hold), it is quarantined after a DECLINE, or another
    /// client's lease on it is bound and unexpired (the reservation is newer than the lease).
    ///
    /// The reservation still stands: the machine is neither offered nor acknowledged its
    /// address until the hold ends, and gets no other address meanwhile (a reserved machine
    /// only ever holds its fixed address), so two live hosts never share it. A holder's lease
    /// ends at its next renewal at the latest (T1, half the lease: renewing another machine's
    /// fixed address is NAKed), or when it expires. The server logs it.
    pub fn reserved_withheld(&self, client: &Client) -> Option<&'static str> {
        let ip = client.reserved?;
        if self.conflicts.contains_key(&u32::from(ip)) {
            return Some("another host answered an ICMP probe on it");
        }
        match self.at(ip) {
            Some(l) if l.state == LeaseState::Declined => {
                Some("it is quarantined after a DHCPDECLINE")
            }
            Some(l) if l.state == LeaseState::Bound && !Self::owns(l, &client.key) => Some(
                "another client's lease on it is still bound (until its renewal is NAKed or it expires)",
            ),
            _ => None,
        }
    }

    /// The address to offer `client`: its reservation (unless withheld:
    /// [`LeaseTable::reserved_withheld`]); else its current lease; else its previous one if
    /// still free; else the requested address (option 50) if free in the range; else the
    /// next free range address (round robin). `reserved_by_other` says whether an address is
    /// another machine's fixed one. `None`: the pool is exhausted, or the reservation is
    /// withheld.
    pub fn choose(
        &self,
        client: &Client,
        requested: Option<Ipv4Addr>,
        reserved_by_other: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Option<Choice> {
        if let Some(ip) = client.reserved {
            return (self.subnet.contains_host(ip) && self.reserved_withheld(client).is_none())
                .then_some(Choice { ip, known: true });
        }
        let usable = |ip: Ipv4Addr| {
            self.range.contains(ip) && self.free_for(ip, &client.key) && !reserved_by_other(ip)
        };
        if let Some(l) = self.of(&client.key)
            && self.range.contains(l.ip)
            && !reserved_by_other(l.ip)
        {
            return Some(Choice {
                ip: l.ip,
                known: true,
            });
        }
        if let Some(ip) = self.previous.get(&client.key).copied()
            && usable(ip)
        {
            return Some(Choice { ip, known: true });
        }
        if let Some(ip) = requested
            && usable(ip)
        {
            return Some(Choice { ip, known: false });
        }
        let start = u32::from(self.range.start);
        let size = self.range.size() as u32;
        (0..size)
            .map(|i| Ipv4Addr::from(start + (self.cursor.wrapping_add(i) % size)))
            .find(|ip| usable(*ip))
            .map(|ip| Choice { ip, known: false })
    }

    /// Holds `ip` for `client` until `until` (an OFFER). A bound lease of the client on the
    /// same address stays bound; another lease of the client is dropped and returned if it
    /// was bound (the caller deletes it from disk).
    pub fn hold_offer(&mut self, client: &Client, ip: Ipv4Addr, until: u64) -> Vec<Lease> {
        if let Some(l) = self.at(ip)
            && l.key() == client.key
            && l.state == LeaseState::Bound
        {
            return Vec::new();
        }
        if self.range.contains(ip) {
            let size = self.range.size() as u32;
            self.cursor = (u32::from(ip) - u32::from(self.range.start) + 1) % size.max(1);
        }
        self.insert(Lease {
            ip,
            mac: client.mac,
            client_id: client.client_id.clone(),
            state: LeaseState::Offered,
            expires: until,
            hostname: client.hostname.clone(),
            is_static: client.reserved == Some(ip),
        })
        .unwrap_or_default()
    }

    /// `ip` answered an ICMP probe: never offered until `until`; an offer on it is dropped.
    pub fn mark_conflict(&mut self, ip: Ipv4Addr, until: u64) {
        if self.at(ip).is_some_and(|l| l.state == LeaseState::Offered) {
            self.remove_at(ip);
        }
        if self.conflicts.len() < self.range.size() as usize + 1 {
            self.conflicts.insert(u32::from(ip), until);
        }
    }

    /// The client chose another server: its offer goes back to the pool at once.
    pub fn drop_offer(&mut self, key: &ClientKey) -> Option<Ipv4Addr> {
        let l = self.of(key)?;
        if l.state != LeaseState::Offered {
            return None;
        }
        let ip = l.ip;
        self.remove_at(ip);
        Some(ip)
    }

    /// Judges a REQUEST (RFC 2131 §4.3.2). `reserved_by_other` as in [`LeaseTable::choose`].
    pub fn judge(
        &self,
        client: &Client,
        kind: RequestKind,
        reserved_by_other: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Verdict {
        let ip = match kind {
            RequestKind::Selecting(ip)
            | RequestKind::InitReboot(ip)
            | RequestKind::Renewing(ip) => ip,
        };
        if !self.subnet.contains_host(ip) {
            return Verdict::Nak;
        }
        if let Some(reserved) = client.reserved {
            return if reserved == ip && self.reserved_withheld(client).is_none() {
                Verdict::Ack(ip)
            } else {
                Verdict::Nak
            };
        }
        if reserved_by_other(ip) {
            return Verdict::Nak;
        }
        if let Some(l) = self.at(ip) {
            return if l.state != LeaseState::Declined && l.key() == client.key {
                Verdict::Ack(ip)
            } else {
                Verdict::Nak
            };
        }
        // Nobody holds `ip`.
        match kind {
            // Our offer to this client ended (or never was): it must start over.
            RequestKind::Selecting(_) => Verdict::Nak,
            RequestKind::InitReboot(_) => {
                if self.of(&client.key).is_some() {
                    // It holds another address with us.
                    Verdict::Nak
                } else if self.previous.get(&client.key) == Some(&ip)
                    && self.free_for(ip, &client.key)
                {
                    Verdict::Ack(ip)
                } else {
                    // No record of this client: another server may know it (RFC 2131 §4.3.2).
                    Verdict::Silent
                }
            }
            // A client renewing an address nobody holds (our table was lost or the lease
            // lapsed): take it back if it is a free pool address, else make it start over.
            RequestKind::Renewing(_) => {
                if self.of(&client.key).is_none()
                    && self.range.contains(ip)
                    && self.free_for(ip, &client.key)
                {
                    Verdict::Ack(ip)
                } else {
                    Verdict::Nak
                }
            }
        }
    }

    /// Binds `ip` to `client` until `until` (an ACK). Returns the new lease and the bound or
    /// declined leases on other addresses it replaced (the client's previous one; to delete
    /// from disk before the new one is written).
    pub fn bind(&mut self, client: &Client, ip: Ipv4Addr, until: u64) -> (Lease, Vec<Lease>) {
        let lease = Lease {
            ip,
            mac: client.mac,
            client_id: client.client_id.clone(),
            state: LeaseState::Bound,
            expires: until,
            hostname: client.hostname.clone(),
            is_static: client.reserved == Some(ip),
        };
        // Another client's offer on a (new) reservation loses it (its bound lease cannot be
        // here: `judge` withholds the address, see `reserved_withheld`).
        let mut replaced = self.insert(lease.clone()).unwrap_or_default();
        // The record on `ip` itself is overwritten by the new one.
        replaced.retain(|l| l.ip != ip);
        (lease, replaced)
    }

    /// Whether `l` is `key`'s: same key, or `key` is a bare MAC (a client that left option 61
    /// out of this message) equal to the lease's.
    fn owns(l: &Lease, key: &ClientKey) -> bool {
        l.key() == *key || matches!(key, ClientKey::Mac(m) if *m == l.mac)
    }

    /// A RELEASE of `ip` by `key`: the bound lease is removed and returned.
    pub fn release(&mut self, key: &ClientKey, ip: Ipv4Addr) -> Option<Lease> {
        let l = self.at(ip)?;
        if !Self::owns(l, key) || l.state != LeaseState::Bound {
            return None;
        }
        let lease = self.remove_at(ip)?;
        self.remember(lease.key(), ip);
        Some(lease)
    }

    /// A DECLINE of `ip` by `key`: the address is quarantined until `until`; returns the
    /// declined lease. Only the client the address is bound to can decline it: a DECLINE is
    /// for an address the client got in a DHCPACK (RFC 2131 §3.1.5), so a merely offered
    /// address cannot be declined (else a flood of DISCOVER + DECLINE from random MACs would
    /// quarantine the pool and write every quarantine to disk).
    pub fn decline(&mut self, key: &ClientKey, ip: Ipv4Addr, until: u64) -> Option<Lease> {
        let l = self.at(ip)?;
        if !Self::owns(l, key) || l.state != LeaseState::Bound {
            return None;
        }
        let mut lease = self.remove_at(ip)?;
        lease.state = LeaseState::Declined;
        lease.expires = until;
        lease.hostname = None;
        self.leases.insert(u32::from(ip), lease.clone());
        self.previous.remove(&lease.key());
        Some(lease)
    }

    /// Every lease, by address.
    pub fn list(&self) -> Vec<Lease> {
        self.leases.values().cloned().collect()
    }

    /// How many leases are offered, bound and declined.
    pub fn counts(&self) -> [(LeaseState, usize); 3] {
        let mut c = [0usize; 3];
        for l in self.leases.values() {
            c[l.state as usize] += 1;
        }
        [
            (LeaseState::Offered, c[0]),
            (LeaseState::Bound, c[1]),
            (LeaseState::Declined, c[2]),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, last)
    }

    fn table(first: u8, last: u8) -> LeaseTable {
        LeaseTable::new(
            AddressRange {
                start: ip(first),
                end: ip(last),
            },
            Subnet::of(ip(1), Ipv4Addr::new(255, 255, 255, 0)).unwrap(),
        )
    }

    fn client(n: u8) -> Client {
        Client::new([2, 0, 0, 0, 0, n], None)
    }

    const NONE: &dyn Fn(Ipv4Addr) -> bool = &|_| false;

    #[test]
    fn offers_walk_the_pool_and_exhaust_it_for_offer_seconds_only() {
        let mut t = table(100, 102);
        let mut got = Vec::new();
        for n in 1..=3 {
            let c = t.choose(&client(n), None, NONE).unwrap();
            assert!(!c.known);
            t.hold_offer(&client(n), c.ip, 30);
            got.push(c.ip);
        }
        assert_eq!(got, [ip(100), ip(101), ip(102)]);
        assert_eq!(t.choose(&client(4), None, NONE), None, "exhausted");
        // The same client gets its offer again, known (no probe).
        assert_eq!(
            t.choose(&client(2), None, NONE),
            Some(Choice {
                ip: ip(101),
                known: true
            })
        );
        assert!(t.expire(29).is_empty());
        assert!(t.expire(30).is_empty(), "offers end silently");
        assert!(t.list().is_empty());
        assert!(t.choose(&client(4), None, NONE).is_some());
    }

    #[test]
    fn requested_address_reservations_and_conflicts() {
        let mut t = table(100, 110);
        assert_eq!(
            t.choose(&client(1), Some(ip(105)), NONE).unwrap().ip,
            ip(105)
        );
        assert_eq!(
            t.choose(&client(1), Some(ip(50)), NONE).unwrap().ip,
            ip(100),
            "outside the range: ignored"
        );
        let other_has_105 = |a: Ipv4Addr| a == ip(105);
        assert_eq!(
            t.choose(&client(1), Some(ip(105)), &other_has_105)
                .unwrap()
                .ip,
            ip(100)
        );
        t.mark_conflict(ip(100), 60);
        assert_eq!(t.choose(&client(1), None, NONE).unwrap().ip, ip(101));
        t.expire(60);
        assert_eq!(t.choose(&client(1), None, NONE).unwrap().ip, ip(100));
        // A reservation outside the range (in the subnet) is chosen, known.
        let mut r = client(9);
        r.reserved = Some(ip(20));
        assert_eq!(
            t.choose(&r, None, NONE),
            Some(Choice {
                ip: ip(20),
                known: true
            })
        );
    }

    #[test]
    fn request_states_per_rfc_2131() {
        let mut t = table(100, 110);
        let c = client(1);
        let c2 = client(2);
        // SELECTING without an offer: NAK; with one: ACK.
        assert_eq!(
            t.judge(&c, RequestKind::Selecting(ip(100)), NONE),
            Verdict::Nak
        );
        t.hold_offer(&c, ip(100), 30);
        assert_eq!(
            t.judge(&c, RequestKind::Selecting(ip(100)), NONE),
            Verdict::Ack(ip(100))
        );
        assert_eq!(
            t.judge(&c2, RequestKind::Selecting(ip(100)), NONE),
            Verdict::Nak
        );
        let (lease, replaced) = t.bind(&c, ip(100), 3600);
        assert_eq!((lease.state, replaced), (LeaseState::Bound, vec![]));
        // INIT-REBOOT: own address ACK, another's NAK, wrong subnet NAK, unknown silent.
        assert_eq!(
            t.judge(&c, RequestKind::InitReboot(ip(100)), NONE),
            Verdict::Ack(ip(100))
        );
        assert_eq!(
            t.judge(&c2, RequestKind::InitReboot(ip(100)), NONE),
            Verdict::Nak
        );
        assert_eq!(
            t.judge(&c, RequestKind::InitReboot(ip(105)), NONE),
            Verdict::Nak,
            "it holds .100"
        );
        assert_eq!(
            t.judge(
                &c,
                RequestKind::InitReboot(Ipv4Addr::new(10, 0, 0, 5)),
                NONE
            ),
            Verdict::Nak
        );
        assert_eq!(
            t.judge(&c2, RequestKind::InitReboot(ip(105)), NONE),
            Verdict::Silent
        );
        // RENEWING: own ACK, another's NAK, a free pool address after data loss ACK.
        assert_eq!(
            t.judge(&c, RequestKind::Renewing(ip(100)), NONE),
            Verdict::Ack(ip(100))
        );
        assert_eq!(
            t.judge(&c2, RequestKind::Renewing(ip(100)), NONE),
            Verdict::Nak
        );
        assert_eq!(
            t.judge(&c2, RequestKind::Renewing(ip(107)), NONE),
            Verdict::Ack(ip(107))
        );
        assert_eq!(
            t.judge(&c2, RequestKind::Renewing(ip(50)), NONE),
            Verdict::Nak,
            "outside range"
        );
        // Expired: remembered, the client gets it back on INIT-REBOOT and DISCOVER.
        assert_eq!(t.expire(3600).len(), 1);
        assert_eq!(
            t.judge(&c, RequestKind::InitReboot(ip(100)), NONE),
            Verdict::Ack(ip(100))
        );
        assert_eq!(
            t.choose(&c, None, NONE),
            Some(Choice {
                ip: ip(100),
                known: true
            })
        );
        // Reserved for someone else: NAK.
        let reserved = |a: Ipv4Addr| a == ip(100);
        assert_eq!(
            t.judge(&c, RequestKind::InitReboot(ip(100)), &reserved),
            Verdict::Nak
        );
    }

    #[test]
    fn release_decline_and_drop_offer() {
        let mut t = table(100, 101);
        let c = client(1);
        t.bind(&c, ip(100), 3600);
        assert!(
            t.release(&client(2).key, ip(100)).is_none(),
            "not its lease"
        );
        assert_eq!(t.release(&c.key, ip(100)).unwrap().ip, ip(100));
        assert!(t.at(ip(100)).is_none());
        t.hold_offer(&c, ip(101), 30);
        assert!(
            t.decline(&c.key, ip(101), 600).is_none(),
            "an offer is not declinable"
        );
        assert_eq!(t.drop_offer(&c.key), Some(ip(101)));
        assert!(t.list().is_empty());
        t.bind(&c, ip(100), 3600);
        assert!(t.decline(&client(2).key, ip(100), 600).is_none());
        let d = t.decline(&c.key, ip(100), 600).unwrap();
        assert_eq!(d.state, LeaseState::Declined);
        // Quarantined for everyone, the decliner too.
        assert_eq!(t.choose(&c, None, NONE).unwrap().ip, ip(101));
        assert_eq!(
            t.judge(&c, RequestKind::InitReboot(ip(100)), NONE),
            Verdict::Nak
        );
        assert_eq!(t.counts()[2], (LeaseState::Declined, 1));
        assert_eq!(t.expire(600).len(), 1);
        assert!(t.at(ip(100)).is_none());
    }

    #[test]
    fn a_reserved_address_in_conflict_or_declined_is_withheld() {
        let mut t = table(100, 110);
        let mut r = client(1);
        r.reserved = Some(ip(105));
        assert_eq!(t.choose(&r, None, NONE).unwrap().ip, ip(105));
        // Another host answered a probe on it (it was a pool candidate before the
        // reservation): not offered, not acknowledged, until the hold ends.
        t.mark_conflict(ip(105), 600);
        assert!(t.reserved_withheld(&r).is_some());
        assert_eq!(t.choose(&r, None, NONE), None);
        assert_eq!(
            t.judge(&r, RequestKind::InitReboot(ip(105)), NONE),
            Verdict::Nak
        );
        t.expire(600);
        assert_eq!(t.choose(&r, None, NONE).unwrap().ip, ip(105));
        // The machine declined it: quarantined for it too.
        t.bind(&r, ip(105), 3600);
        t.decline(&r.key, ip(105), 1200).unwrap();
        assert_eq!(t.choose(&r, None, NONE), None);
        assert_eq!(
            t.judge(&r, RequestKind::InitReboot(ip(105)), NONE),
            Verdict::Nak
        );
    }

    /// A reservation made for an address another client holds bound: the reserved machine
    /// waits (no offer, NAK) until the holder's lease ends; the holder's renewal is NAKed.
    #[test]
    fn a_new_reservation_does_not_take_a_bound_address_from_its_holder() {
        let mut t = table(100, 110);
        let holder = client(1);
        t.bind(&holder, ip(104), 3600);
        let mut r = client(2);
        r.reserved = Some(ip(104));
        let is_104 = |a: Ipv4Addr| a == ip(104);
        assert!(t.reserved_withheld(&r).is_some());
        assert_eq!(t.choose(&r, None, NONE), None);
        assert_eq!(
            t.judge(&r, RequestKind::InitReboot(ip(104)), NONE),
            Verdict::Nak
        );
        assert_eq!(
            t.judge(&r, RequestKind::Renewing(ip(104)), NONE),
            Verdict::Nak
        );
        assert_eq!(t.at(ip(104)).unwrap().mac, holder.mac, "still the holder's");
        // The holder renews: NAKed (the address is now another machine's), it moves on.
        assert_eq!(
            t.judge(&holder, RequestKind::Renewing(ip(104)), &is_104),
            Verdict::Nak
        );
        let moved = t.choose(&holder, None, &is_104).unwrap();
        assert_ne!(moved.ip, ip(104));
        let (_, replaced) = t.bind(&holder, moved.ip, 3600);
        assert_eq!(replaced.len(), 1, "its old lease is deleted from disk too");
        assert_eq!(replaced[0].ip, ip(104));
        // Now the reserved machine gets it.
        assert_eq!(t.choose(&r, None, NONE).unwrap().ip, ip(104));
    }

    /// Whatever `insert` drops is returned, so the caller deletes it from disk.
    #[test]
    fn evicted_bound_leases_are_returned_for_deletion() {
        let mut t = table(100, 110);
        let c = client(1);
        t.bind(&c, ip(100), 3600);
        // The client DISCOVERs again and is offered another address: its bound one goes.
        let dropped = t.hold_offer(&c, ip(101), 30);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].ip, ip(100));
        assert!(t.at(ip(100)).is_none());
        // Loading two records of one client: the first is returned.
        let mut t = table(100, 110);
        let lease = |n, expires| Lease {
            ip: ip(n),
            mac: c.mac,
            client_id: None,
            state: LeaseState::Bound,
            expires,
            hostname: None,
            is_static: false,
        };
        assert_eq!(t.insert(lease(102, 5000)), Some(vec![]));
        assert_eq!(t.insert(lease(103, 6000)), Some(vec![lease(102, 5000)]));
        assert_eq!(
            t.insert(Lease {
                ip: Ipv4Addr::new(10, 0, 0, 1),
                ..lease(1, 1)
            }),
            None
        );
    }

    #[test]
    fn client_identifier_wins_over_mac() {
        let mut t = table(100, 110);
        let a = Client::new([2, 0, 0, 0, 0, 1], Some(b"\x01host-a"));
        t.bind(&a, ip(103), 3600);
        // Same client id on another NIC: same lease.
        let moved = Client::new([2, 0, 0, 0, 0, 7], Some(b"\x01host-a"));
        assert_eq!(t.choose(&moved, None, NONE).unwrap().ip, ip(103));
        // Same MAC without the id: a different client.
        let bare = Client::new([2, 0, 0, 0, 0, 1], None);
        assert_ne!(t.choose(&bare, None, NONE).unwrap().ip, ip(103));
        // Rebinding elsewhere replaces the old binding.
        let (_, replaced) = t.bind(&a, ip(104), 3600);
        assert_eq!(replaced.len(), 1);
        assert_eq!(replaced[0].ip, ip(103));
        assert_eq!(t.list().len(), 1);
    }

    /// The firmware's PXE DHCP (no option 61) and then iPXE's (`01:<mac>`): one machine, one
    /// address. Another MAC's `01:<mac>` form stays a client identifier of its own.
    #[test]
    fn an_ethernet_client_identifier_of_the_own_mac_is_the_mac() {
        let mut t = table(100, 110);
        let mac = [0x52, 0x54, 0, 0xe2, 0xe0, 1];
        let firmware = Client::new(mac, None);
        t.bind(&firmware, ip(100), 3600);
        let mut id = vec![1];
        id.extend_from_slice(&mac);
        let ipxe = Client::new(mac, Some(&id));
        assert_eq!(ipxe.key, firmware.key);
        let choice = t.choose(&ipxe, None, NONE).unwrap();
        assert_eq!((choice.ip, choice.known), (ip(100), true));
        let (_, replaced) = t.bind(&ipxe, ip(100), 3600);
        assert_eq!(replaced, vec![]);
        assert_eq!(t.list().len(), 1);
        // The same form naming another MAC, or another hardware type, is an identifier.
        let other = Client::new([2, 0, 0, 0, 0, 9], Some(&id));
        assert_eq!(other.key, ClientKey::Id(id.clone()));
        let mut typed = id.clone();
        typed[0] = 0xff;
        assert_eq!(Client::new(mac, Some(&typed)).key, ClientKey::Id(typed));
    }
}
