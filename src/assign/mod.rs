//! Per-MAC assignment: which schematic, Talos version, platform and architecture each machine
//! boots; the policy for machines without one; and the inventory of every machine that asked.
//!
//! Everything lives in the store's sled database (trees `assign/machines`,
//! `assign/inventory`, `assign/inventory-seen`, `assign/settings`), so it survives restarts and
//! travels with the data directory. The DHCP server asks [`Assignments::answer_for`] whether to answer a MAC at all,
//! the HTTP side asks it what `/boot/{mac}.ipxe` returns, and both record what they served in
//! the inventory.
//!
//! Any machine on the segment — or anyone forging DHCP packets or requesting
//! `/boot/<random-mac>.ipxe` — creates an inventory record, so the inventory is bounded
//! ([`InventoryLimits`]): at most `max_machines` records, the least recently seen machine
//! *without an assignment* making room for a new one, and unassigned machines not seen for
//! `max_age` forgotten. Assigned machines are never evicted. `assign/inventory-seen` indexes
//! the unassigned machines' records by (last seen, MAC), so both are a walk from the oldest
//! entry that never passes an assigned machine.

pub mod boot;
pub mod check;
pub mod client;
pub mod model;
pub mod seed;
pub mod token;
pub mod watch;

use std::sync::Arc;

use crate::config::UnassignedPolicy;
use crate::mac::MacAddr;
use crate::store::Store;

pub use crate::dhcp::Reservation;
pub use model::{Assignment, MachineRecord, MachineView, talos_arch_for_client_arch};

const MACHINES_TREE: &str = "assign/machines";
const INVENTORY_TREE: &str = "assign/inventory";
/// Index of the inventory by last sighting: key `secs (u64 BE) ‖ MAC`, empty value.
const SEEN_TREE: &str = "assign/inventory-seen";
/// Shortest time between two age-out walks.
const PRUNE_EVERY_SECS: i64 = 60;
const SETTINGS_TREE: &str = "assign/settings";
const DEFAULT_KEY: &[u8] = b"default";

/// An error reading or writing assignments.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    /// The database failed (shown, not exposed as a source: it is the root cause).
    #[error("assignment database: {0}")]
    Db(sled::Error),
    /// The inventory is full of assigned machines: nothing can be evicted for a new one.
    #[error("inventory full: {0} machines, all assigned (raise assignments.inventoryMaxMachines)")]
    InventoryFull(usize),
    /// Another machine already reserves this address (`ip` is unique across assignments).
    #[error("{ip} is already reserved for {other}")]
    IpTaken {
        /// The address.
        ip: std::net::Ipv4Addr,
        /// The machine that has it.
        other: MacAddr,
    },
    /// The address cannot be handed out by the full DHCP server's pool.
    #[error("ip {ip} is not in the DHCP pool's subnet {subnet}")]
    IpOutsideSubnet {
        /// The address.
        ip: std::net::Ipv4Addr,
        /// The pool's subnet.
        subnet: crate::dhcp::Subnet,
    },
    /// The address is already used by the appliance, the router or a DNS server.
    #[error("ip {ip} is {role}")]
    IpInUse {
        /// The address.
        ip: std::net::Ipv4Addr,
        /// What uses it (`bootfactory's own address`, ...).
        role: &'static str,
    },
    /// The default assignment cannot reserve an address or name.
    #[error("the default assignment cannot have ip or hostname (they belong to one machine)")]
    DefaultReservation,
    /// A stored record could not be decoded (a damaged database).
    #[error("stored record for {key} is damaged: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// The decoder's message.
        message: String,
    },
}

impl From<sled::Error> for AssignError {
    fn from(e: sled::Error) -> Self {
        AssignError::Db(e)
    }
}

/// What a machine gets when it asks to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootAnswer {
    /// Boot this assignment (`from_default` when it is the default one).
    Boot {
        /// What to boot.
        assignment: Assignment,
        /// The machine has no assignment of its own.
        from_default: bool,
    },
    /// An iPXE script that exits to the firmware (next boot device).
    LocalDisk(String),
    /// No answer at all.
    Ignore,
}

/// One DHCP or HTTP sighting of a machine, for the inventory.
#[derive(Debug, Clone, Default)]
pub struct Sighting {
    /// DHCP option 93.
    pub client_arch: Option<u16>,
    /// DHCP option 97, formatted.
    pub uuid: Option<String>,
    /// The machine's IPv4 address, when known.
    pub ip: Option<String>,
    /// DHCP option 60.
    pub vendor_class: Option<String>,
    /// DHCP option 77.
    pub user_class: Option<String>,
    /// What it was served.
    pub served: String,
}

/// How big the inventory may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InventoryLimits {
    /// Most machine records kept; `0` = unbounded.
    pub max_machines: usize,
    /// Unassigned machines not seen for this many seconds are forgotten; `0` = never.
    pub max_age_secs: u64,
}

impl Default for InventoryLimits {
    fn default() -> Self {
        InventoryLimits {
            max_machines: 10_000,
            max_age_secs: 90 * 86_400,
        }
    }
}

/// What the inventory lock guards besides the read-modify-write of records.
#[derive(Debug)]
struct InventoryState {
    /// Records in `assign/inventory` (sled's `len` is a full scan).
    count: usize,
    /// When unassigned machines were last aged out (Unix seconds).
    last_prune: i64,
}

/// The assignment table, the default, the unassigned policy and the inventory.
#[derive(Clone)]
pub struct Assignments {
    machines: sled::Tree,
    inventory: sled::Tree,
    seen: sled::Tree,
    settings: sled::Tree,
    policy: UnassignedPolicy,
    limits: InventoryLimits,
    inventory_lock: Arc<std::sync::Mutex<InventoryState>>,
    /// Bumped on every change (assignment, default, sighting): [`Assignments::subscribe`].
    changed: Arc<tokio::sync::watch::Sender<u64>>,
    /// Bumped when the reservations may have changed (assignment, default, rules), never on
    /// a sighting: [`Assignments::subscribe_reservations`].
    reservations_changed: Arc<tokio::sync::watch::Sender<u64>>,
    /// The full DHCP server's reservation rules, when it runs: fixed addresses must lie in
    /// its subnet and not be an address the network already uses.
    rules: Arc<std::sync::RwLock<Option<crate::dhcp::ReservationRules>>>,
}

impl Assignments {
    /// Opens the trees in `store`'s database with the default [`InventoryLimits`].
    pub fn open(store: &Store, policy: UnassignedPolicy) -> Result<Assignments, AssignError> {
        Self::open_with_limits(store, policy, InventoryLimits::default())
    }

    /// Opens the trees in `store`'s database. Rebuilds the last-seen index if it is missing
    /// (a database from before it existed).
    pub fn open_with_limits(
        store: &Store,
        policy: UnassignedPolicy,
        limits: InventoryLimits,
    ) -> Result<Assignments, AssignError> {
        let db = store.db();
        let machines = db.open_tree(MACHINES_TREE)?;
        let inventory = db.open_tree(INVENTORY_TREE)?;
        let seen = db.open_tree(SEEN_TREE)?;
        // The eviction index holds the unassigned machines; rebuilt here so it matches the
        // inventory after any crash (or a database from before it existed).
        seen.clear()?;
        let mut count = 0;
        for item in inventory.iter() {
            let (k, v) = item?;
            count += 1;
            let mac = mac_from_key(&k)?;
            let record: MachineRecord = decode(&mac.to_string(), &v)?;
            if !machines.contains_key(&k)? {
                seen.insert(seen_key(&record), &[])?;
            }
        }
        Ok(Assignments {
            machines,
            inventory,
            seen,
            settings: db.open_tree(SETTINGS_TREE)?,
            policy,
            limits,
            inventory_lock: Arc::new(std::sync::Mutex::new(InventoryState {
                count,
                last_prune: 0,
            })),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
            reservations_changed: Arc::new(tokio::sync::watch::channel(0).0),
            rules: Arc::new(std::sync::RwLock::new(None)),
        })
    }

    /// The full DHCP server's reservation rules: from now on a machine's fixed `ip` must lie
    /// in its subnet and not be an address in use ([`crate::dhcp::ReservationRules`]).
    pub fn set_reservation_rules(&self, rules: Option<crate::dhcp::ReservationRules>) {
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = rules;
        self.reservations_changed
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Whether `ip` may be a machine's fixed address under the current rules (any address
    /// while the full DHCP server does not run).
    pub fn check_fixed_ip(&self, ip: std::net::Ipv4Addr) -> Result<(), AssignError> {
        if let Some(rules) = &*self.rules.read().unwrap_or_else(|e| e.into_inner()) {
            if !rules.subnet.contains_host(ip) {
                return Err(AssignError::IpOutsideSubnet {
                    ip,
                    subnet: rules.subnet,
                });
            }
            if let Some(role) = rules.taken_by(ip) {
                return Err(AssignError::IpInUse { ip, role });
            }
        }
        Ok(())
    }

    /// The reservations the full DHCP server may hand out: [`Assignments::reservations`]
    /// without the fixed addresses the rules refuse (stored before the rules applied, or
    /// seeded from the assignments file), each skipped with a warning. Its host name stays.
    pub fn usable_reservations(&self) -> Result<Vec<(MacAddr, Reservation)>, AssignError> {
        let mut list = self.reservations()?;
        for (mac, r) in &mut list {
            if let Some(ip) = r.ip
                && let Err(e) = self.check_fixed_ip(ip)
            {
                tracing::warn!(%mac, error = %e, "static DHCP reservation skipped: fix the machine's assignment");
                r.ip = None;
            }
        }
        list.retain(|(_, r)| r.ip.is_some() || r.hostname.is_some());
        Ok(list)
    }

    /// Every fixed address and host name by MAC (the full DHCP server's static reservations).
    pub fn reservations(&self) -> Result<Vec<(MacAddr, Reservation)>, AssignError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|(_, a)| a.ip.is_some() || a.hostname.is_some())
            .map(|(mac, a)| {
                (
                    mac,
                    Reservation {
                        ip: a.ip,
                        hostname: a.hostname,
                    },
                )
            })
            .collect())
    }

    /// Forgets unassigned machines last seen before `cutoff` (Unix seconds); returns how many.
    fn prune_older_than(
        &self,
        state: &mut InventoryState,
        cutoff: i64,
    ) -> Result<usize, AssignError> {
        let mut removed = 0;
        let end = (cutoff.max(0) as u64).to_be_bytes();
        for item in self.seen.range(..end.as_slice()) {
            let (key, _) = item?;
            let mac = &key[8..];
            if self.machines.contains_key(mac)? {
                continue;
            }
            self.forget(state, &key)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Removes the record behind a last-seen index key.
    fn forget(&self, state: &mut InventoryState, seen_key: &[u8]) -> Result<(), AssignError> {
        self.seen.remove(seen_key)?;
        if self.inventory.remove(&seen_key[8..])?.is_some() {
            state.count = state.count.saturating_sub(1);
        }
        Ok(())
    }

    /// Makes room for one new record: evicts the least recently seen unassigned machine.
    fn evict_one(&self, state: &mut InventoryState) -> Result<bool, AssignError> {
        for item in self.seen.iter() {
            let (key, _) = item?;
            if !self.machines.contains_key(&key[8..])? {
                self.forget(state, &key)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A receiver that sees a new value whenever an assignment or the default changes or a
    /// machine is seen (the web UI's live machine list waits on it; nothing is queued, so a
    /// slow reader only misses intermediate counts, never the fact that something changed).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A receiver that sees a new value whenever the reservations may have changed: an
    /// assignment or the default was set or removed, or the reservation rules changed. Not on
    /// sightings, so the DHCP server's reservation snapshot is not rebuilt per packet.
    pub fn subscribe_reservations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reservations_changed.subscribe()
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// [`Assignments::notify`] for an assignment or default change.
    fn notify_assignment(&self) {
        self.reservations_changed
            .send_modify(|n| *n = n.wrapping_add(1));
        self.notify();
    }

    /// The policy for machines without an assignment.
    pub fn policy(&self) -> UnassignedPolicy {
        self.policy
    }

    /// The machine's own assignment.
    pub fn get(&self, mac: MacAddr) -> Result<Option<Assignment>, AssignError> {
        decode_opt(&mac.to_string(), self.machines.get(mac.0)?)
    }

    /// Sets (or replaces) a machine's assignment. The caller validated it.
    ///
    /// A fixed `ip` must not be another machine's ([`AssignError::IpTaken`]) and, when the
    /// full DHCP server's rules are known ([`Assignments::set_reservation_rules`]), must be in
    /// its subnet ([`AssignError::IpOutsideSubnet`]) and not an address in use
    /// ([`AssignError::IpInUse`]).
    pub fn set(&self, mac: MacAddr, assignment: &Assignment) -> Result<(), AssignError> {
        self.set_inner(mac, assignment, true)
    }

    /// [`Assignments::set`] for the assignments file: a fixed `ip` the network already uses
    /// ([`AssignError::IpInUse`]) is stored with a warning rather than refused (a start must
    /// not fail on it); the DHCP server skips it ([`Assignments::usable_reservations`]).
    pub fn set_seeded(&self, mac: MacAddr, assignment: &Assignment) -> Result<(), AssignError> {
        self.set_inner(mac, assignment, false)
    }

    fn set_inner(
        &self,
        mac: MacAddr,
        assignment: &Assignment,
        strict: bool,
    ) -> Result<(), AssignError> {
        let _state = self.lock_inventory();
        if let Some(ip) = assignment.ip {
            match self.check_fixed_ip(ip) {
                Err(e @ AssignError::IpInUse { .. }) if !strict => {
                    tracing::warn!(%mac, error = %e, "assignments file: fixed address stored but not handed out by DHCP");
                }
                r => r?,
            }
            for (other, a) in self.list()? {
                if other != mac && a.ip == Some(ip) {
                    return Err(AssignError::IpTaken { ip, other });
                }
            }
        }
        self.machines.insert(mac.0, encode(assignment))?;
        // Assigned machines are never evicted: keep them out of the eviction index, so
        // making room never walks past them.
        if let Some(record) = self.machine(mac)? {
            self.seen.remove(seen_key(&record))?;
        }
        self.machines.flush()?;
        self.notify_assignment();
        Ok(())
    }

    /// Removes a machine's assignment; false when it had none.
    pub fn remove(&self, mac: MacAddr) -> Result<bool, AssignError> {
        let _state = self.lock_inventory();
        let had = self.machines.remove(mac.0)?.is_some();
        if let Some(record) = self.machine(mac)? {
            self.seen.insert(seen_key(&record), &[])?;
        }
        self.machines.flush()?;
        self.notify_assignment();
        Ok(had)
    }

    fn lock_inventory(&self) -> std::sync::MutexGuard<'_, InventoryState> {
        self.inventory_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Every machine's own assignment, by MAC.
    pub fn list(&self) -> Result<Vec<(MacAddr, Assignment)>, AssignError> {
        let mut out = Vec::new();
        for item in self.machines.iter() {
            let (k, v) = item?;
            let mac = mac_from_key(&k)?;
            let a = decode(&mac.to_string(), &v)?;
            out.push((mac, a));
        }
        Ok(out)
    }

    /// The default assignment for machines without their own.
    pub fn default_assignment(&self) -> Result<Option<Assignment>, AssignError> {
        decode_opt("default", self.settings.get(DEFAULT_KEY)?)
    }

    /// Removes the default assignment; false when there was none.
    pub fn remove_default(&self) -> Result<bool, AssignError> {
        let had = self.settings.remove(DEFAULT_KEY)?.is_some();
        self.settings.flush()?;
        self.notify_assignment();
        Ok(had)
    }

    /// Sets or clears the default assignment.
    pub fn set_default(&self, assignment: Option<&Assignment>) -> Result<(), AssignError> {
        if assignment.is_some_and(|a| a.ip.is_some() || a.hostname.is_some()) {
            return Err(AssignError::DefaultReservation);
        }
        match assignment {
            Some(a) => {
                self.settings.insert(DEFAULT_KEY, encode(a))?;
            }
            None => {
                self.settings.remove(DEFAULT_KEY)?;
            }
        }
        self.settings.flush()?;
        self.notify_assignment();
        Ok(())
    }

    /// What `mac` gets: its assignment, else what the unassigned policy says.
    pub fn answer_for(&self, mac: MacAddr) -> Result<BootAnswer, AssignError> {
        if let Some(assignment) = self.get(mac)? {
            return Ok(BootAnswer::Boot {
                assignment,
                from_default: false,
            });
        }
        Ok(match self.policy {
            UnassignedPolicy::Ignore => BootAnswer::Ignore,
            UnassignedPolicy::LocalDisk => {
                BootAnswer::LocalDisk(format!("{mac} has no assignment (policy local-disk)"))
            }
            UnassignedPolicy::BootDefault => match self.default_assignment()? {
                Some(assignment) => BootAnswer::Boot {
                    assignment,
                    from_default: true,
                },
                None => {
                    BootAnswer::LocalDisk(format!("{mac} has no assignment and no default is set"))
                }
            },
        })
    }

    /// Records a sighting of `mac` in the inventory.
    pub fn record(&self, mac: MacAddr, sighting: Sighting) -> Result<MachineRecord, AssignError> {
        let now_time = chrono::Utc::now();
        let now = now_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        // Read-modify-write under a lock: DHCP and HTTP may report the same machine at once.
        let mut state = self.lock_inventory();
        let now_secs = now_time.timestamp();
        if self.limits.max_age_secs > 0 && now_secs - state.last_prune >= PRUNE_EVERY_SECS {
            state.last_prune = now_secs;
            let max_age = i64::try_from(self.limits.max_age_secs).unwrap_or(i64::MAX);
            let cutoff = now_secs.saturating_sub(max_age);
            let removed = self.prune_older_than(&mut state, cutoff)?;
            if removed > 0 {
                tracing::info!(removed, "forgot unassigned machines not seen for a while");
            }
        }
        let existing = decode_opt::<MachineRecord>(&mac.to_string(), self.inventory.get(mac.0)?)?;
        if existing.is_none()
            && self.limits.max_machines > 0
            && state.count >= self.limits.max_machines
            && !self.evict_one(&mut state)?
        {
            return Err(AssignError::InventoryFull(state.count));
        }
        if let Some(old) = &existing {
            self.seen.remove(seen_key(old))?;
        }
        let mut record = match existing {
            Some(r) => r,
            None => MachineRecord {
                mac,
                client_arch: None,
                arch: None,
                uuid: None,
                ip: None,
                vendor_class: String::new(),
                user_class: None,
                first_seen: now.clone(),
                last_seen: now.clone(),
                last_served: String::new(),
                requests: 0,
            },
        };
        if let Some(a) = sighting.client_arch {
            record.client_arch = Some(a);
            record.arch = talos_arch_for_client_arch(a).map(str::to_string);
        }
        if sighting.uuid.is_some() {
            record.uuid = sighting.uuid;
        }
        if sighting.ip.is_some() {
            record.ip = sighting.ip;
        }
        if let Some(v) = sighting.vendor_class {
            record.vendor_class = v;
        }
        if sighting.user_class.is_some() {
            record.user_class = sighting.user_class;
        }
        record.last_seen = now;
        record.last_served = sighting.served;
        record.requests += 1;
        if self.inventory.insert(mac.0, encode(&record))?.is_none() {
            state.count += 1;
        }
        if !self.machines.contains_key(mac.0)? {
            self.seen.insert(seen_key(&record), &[])?;
        }
        drop(state);
        self.notify();
        Ok(record)
    }

    /// What the inventory knows about `mac`.
    pub fn machine(&self, mac: MacAddr) -> Result<Option<MachineRecord>, AssignError> {
        decode_opt(&mac.to_string(), self.inventory.get(mac.0)?)
    }

    /// Every machine that is assigned or was seen, by MAC, with its assignment and inventory
    /// record side by side.
    pub fn machines(&self) -> Result<Vec<MachineView>, AssignError> {
        let mut by_mac: std::collections::BTreeMap<MacAddr, MachineView> = Default::default();
        for (mac, assignment) in self.list()? {
            by_mac
                .entry(mac)
                .or_insert_with(|| empty_view(mac))
                .assignment = Some(assignment);
        }
        for record in self.inventory()? {
            let mac = record.mac;
            by_mac.entry(mac).or_insert_with(|| empty_view(mac)).seen = Some(record);
        }
        Ok(by_mac.into_values().collect())
    }

    /// One machine's assignment and inventory record; `None` when it is neither assigned nor
    /// seen.
    pub fn machine_view(&self, mac: MacAddr) -> Result<Option<MachineView>, AssignError> {
        let view = MachineView {
            mac,
            assignment: self.get(mac)?,
            seen: self.machine(mac)?,
            lease_ip: None,
        };
        Ok((view.assignment.is_some() || view.seen.is_some()).then_some(view))
    }

    /// Every machine in the inventory, by MAC.
    pub fn inventory(&self) -> Result<Vec<MachineRecord>, AssignError> {
        let mut out = Vec::new();
        for item in self.inventory.iter() {
            let (k, v) = item?;
            let mac = mac_from_key(&k)?;
            out.push(decode(&mac.to_string(), &v)?);
        }
        Ok(out)
    }
}

/// The last-seen index key of a record: its `last_seen` in Unix seconds (big-endian, so keys
/// sort by time) followed by the MAC.
fn seen_key(record: &MachineRecord) -> [u8; 14] {
    let secs = chrono::DateTime::parse_from_rfc3339(&record.last_seen)
        .map(|t| t.timestamp().max(0) as u64)
        .unwrap_or(0);
    let mut key = [0u8; 14];
    key[..8].copy_from_slice(&secs.to_be_bytes());
    key[8..].copy_from_slice(&record.mac.0);
    key
}

fn mac_from_key(k: &[u8]) -> Result<MacAddr, AssignError> {
    let bytes: [u8; 6] = k.try_into().map_err(|_| AssignError::Corrupt {
        key: hex::encode(k),
        message: "key is not a MAC address".into(),
    })?;
    Ok(MacAddr(bytes))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("assignment records serialize")
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, AssignError> {
    serde_json::from_slice(bytes).map_err(|e| AssignError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

fn decode_opt<T: serde::de::DeserializeOwned>(
    key: &str,
    bytes: Option<sled::IVec>,
) -> Result<Option<T>, AssignError> {
    bytes.map(|b| decode(key, &b)).transpose()
}

fn empty_view(mac: MacAddr) -> MachineView {
    MachineView {
        mac,
        assignment: None,
        seen: None,
        lease_ip: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_addresses_are_unique_in_the_subnet_and_not_for_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = Assignments::open(&store, UnassignedPolicy::BootDefault).unwrap();
        let (m1, m2) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        let mut fixed = assignment("v1.9.0");
        fixed.ip = Some(std::net::Ipv4Addr::new(192, 0, 2, 50));
        fixed.hostname = Some("node-1".into());
        a.set(m1, &fixed).unwrap();
        a.set(m1, &fixed).unwrap(); // the same machine again: fine
        match a.set(m2, &fixed) {
            Err(AssignError::IpTaken { ip, other }) => {
                assert_eq!((ip, other), (fixed.ip.unwrap(), m1));
            }
            other => panic!("{other:?}"),
        }
        let subnet = crate::dhcp::Subnet::of(
            std::net::Ipv4Addr::new(198, 51, 100, 1),
            std::net::Ipv4Addr::new(255, 255, 255, 0),
        );
        a.set_reservation_rules(subnet.map(|subnet| crate::dhcp::ReservationRules {
            subnet,
            taken: vec![],
        }));
        assert!(matches!(
            a.set(m1, &fixed),
            Err(AssignError::IpOutsideSubnet { .. })
        ));
        assert!(matches!(
            a.set_default(Some(&fixed)),
            Err(AssignError::DefaultReservation)
        ));
        let r = a.reservations().unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].1.hostname.as_deref(), Some("node-1"));
    }

    #[test]
    fn fixed_addresses_the_network_uses_are_refused_and_stored_ones_skipped() {
        use crate::dhcp::{PoolConfig, ReservationRules};
        use std::net::Ipv4Addr;
        let (_d, a) = open(UnassignedPolicy::Ignore);
        let v4 = |n| Ipv4Addr::new(192, 0, 2, n);
        let pool = PoolConfig {
            range: "192.0.2.100-192.0.2.110".parse().unwrap(),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            router: Some(v4(1)),
            dns: vec![v4(53), v4(54)],
            domain: None,
            lease_secs: 3600,
            offer_secs: 30,
            probe: false,
        };
        let subnet = pool.validate(Some(v4(10))).unwrap();
        let with_ip = |n| Assignment {
            ip: Some(v4(n)),
            hostname: Some(format!("node-{n}")),
            ..assignment("v1.9.0")
        };
        // Stored before the rules (or by the assignments file): kept, then skipped.
        a.set(M1, &with_ip(10)).unwrap();
        a.set(M2, &with_ip(60)).unwrap();
        a.set_reservation_rules(Some(ReservationRules::new(&pool, subnet, v4(10))));
        for (n, what) in [
            (10, "bootfactory's own address"),
            (1, "the router"),
            (54, "a DNS server"),
        ] {
            let e = a.set(MacAddr([2, 0, 0, 0, 0, n]), &with_ip(n)).unwrap_err();
            assert!(matches!(e, AssignError::IpInUse { .. }), "{e:?}");
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("ip 192.0.2.{n} is {what}")),
                "{text}"
            );
        }
        let usable = a.usable_reservations().unwrap();
        let m1 = usable.iter().find(|(m, _)| *m == M1).unwrap();
        assert_eq!(m1.1.ip, None, "the appliance's address is skipped");
        assert_eq!(m1.1.hostname.as_deref(), Some("node-10"));
        let m2 = usable.iter().find(|(m, _)| *m == M2).unwrap();
        assert_eq!(m2.1.ip, Some(v4(60)));
        // The assignments file stores it (the start must not fail) but DHCP skips it.
        let m3 = MacAddr([2, 0, 0, 0, 0, 3]);
        a.set_seeded(m3, &with_ip(1)).unwrap();
        assert!(
            a.usable_reservations()
                .unwrap()
                .iter()
                .all(|(_, r)| r.ip != Some(v4(1)))
        );
    }

    fn assignment(version: &str) -> Assignment {
        Assignment {
            schematic: "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba".into(),
            version: version.into(),
            platform: "metal".into(),
            arch: None,
            extra_kernel_args: vec![],
            labels: Default::default(),
            ip: None,
            hostname: None,
        }
    }

    fn open(policy: UnassignedPolicy) -> (tempfile::TempDir, Assignments) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = Assignments::open(&store, policy).unwrap();
        (dir, a)
    }

    const M1: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    const M2: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 2]);

    /// The web UI's live list waits on `subscribe`: every kind of change wakes it, and a
    /// read that changes nothing does not.
    #[tokio::test]
    async fn every_change_is_announced_to_subscribers() {
        let (_d, a) = open(UnassignedPolicy::BootDefault);
        let mut rx = a.subscribe();
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        type Step = Box<dyn Fn(&Assignments)>;
        let steps: Vec<(&str, Step)> = vec![
            (
                "record",
                Box::new(move |a| {
                    a.record(mac, Sighting::default()).unwrap();
                }),
            ),
            (
                "set",
                Box::new(move |a| a.set(mac, &assignment("v1.9.0")).unwrap()),
            ),
            (
                "set_default",
                Box::new(|a| a.set_default(Some(&assignment("v1.9.0"))).unwrap()),
            ),
            (
                "remove_default",
                Box::new(|a| assert!(a.remove_default().unwrap())),
            ),
            ("remove", Box::new(move |a| assert!(a.remove(mac).unwrap()))),
        ];
        for (what, step) in steps {
            assert!(!rx.has_changed().unwrap(), "before {what}");
            step(&a);
            assert!(rx.has_changed().unwrap(), "{what} was not announced");
            rx.mark_unchanged();
        }
        a.machines().unwrap();
        a.default_assignment().unwrap();
        assert!(!rx.has_changed().unwrap(), "reads are not changes");
    }

    #[test]
    fn machines_merge_assignments_and_inventory_by_mac() {
        let (_d, a) = open(UnassignedPolicy::BootDefault);
        let m3 = MacAddr([0x52, 0x54, 0, 0, 0, 3]);
        a.set(m3, &assignment("v1.9.0")).unwrap();
        a.record(m3, Sighting::default()).unwrap();
        a.record(M2, Sighting::default()).unwrap();
        a.set(M1, &assignment("v1.8.4")).unwrap();
        let all = a.machines().unwrap();
        let shape: Vec<(MacAddr, bool, bool)> = all
            .iter()
            .map(|v| (v.mac, v.assignment.is_some(), v.seen.is_some()))
            .collect();
        assert_eq!(
            shape,
            [(M1, true, false), (M2, false, true), (m3, true, true)]
        );
        assert_eq!(a.machine_view(m3).unwrap().as_ref(), all.get(2));
        assert_eq!(a.machine_view(M2).unwrap().as_ref(), all.get(1));
        assert_eq!(a.machine_view(MacAddr([2, 0, 0, 0, 0, 9])).unwrap(), None);

        assert!(!a.remove_default().unwrap());
        a.set_default(Some(&assignment("v1.9.0"))).unwrap();
        assert!(a.remove_default().unwrap());
        assert_eq!(a.default_assignment().unwrap(), None);
        assert!(!a.remove_default().unwrap());
    }

    #[test]
    fn assigned_machines_boot_their_own_assignment_only() {
        let (_d, a) = open(UnassignedPolicy::BootDefault);
        a.set(M1, &assignment("v1.9.0")).unwrap();
        assert_eq!(
            a.answer_for(M1).unwrap(),
            BootAnswer::Boot {
                assignment: assignment("v1.9.0"),
                from_default: false
            }
        );
        assert!(matches!(
            a.answer_for(M2).unwrap(),
            BootAnswer::LocalDisk(_)
        ));
        a.set_default(Some(&assignment("v1.8.4"))).unwrap();
        assert_eq!(
            a.answer_for(M2).unwrap(),
            BootAnswer::Boot {
                assignment: assignment("v1.8.4"),
                from_default: true
            }
        );
        assert!(a.remove(M1).unwrap());
        assert!(!a.remove(M1).unwrap());
        assert_eq!(a.list().unwrap(), vec![]);
    }

    #[test]
    fn unassigned_policies() {
        let (_d, a) = open(UnassignedPolicy::Ignore);
        a.set_default(Some(&assignment("v1.8.4"))).unwrap();
        assert_eq!(a.answer_for(M2).unwrap(), BootAnswer::Ignore);
        let (_d, a) = open(UnassignedPolicy::LocalDisk);
        a.set_default(Some(&assignment("v1.8.4"))).unwrap();
        assert!(
            matches!(a.answer_for(M2).unwrap(), BootAnswer::LocalDisk(m) if m.contains("52:54:00:00:00:02"))
        );
    }

    #[test]
    fn inventory_keeps_first_seen_and_counts() {
        let (_d, a) = open(UnassignedPolicy::BootDefault);
        let first = a
            .record(
                M1,
                Sighting {
                    client_arch: Some(7),
                    uuid: Some("u".into()),
                    served: "ipxe.efi".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        let second = a
            .record(
                M1,
                Sighting {
                    ip: Some("192.0.2.50".into()),
                    served: "script".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(second.first_seen, first.first_seen);
        assert_eq!(second.requests, 2);
        assert_eq!(second.arch.as_deref(), Some("amd64"));
        assert_eq!(second.uuid.as_deref(), Some("u"));
        assert_eq!(second.ip.as_deref(), Some("192.0.2.50"));
        assert_eq!(second.last_served, "script");
        assert_eq!(a.inventory().unwrap().len(), 1);
    }

    /// Issue 10, defect 6: a flood of new MACs cannot grow the inventory without bound, and
    /// never pushes out an assigned machine.
    #[test]
    fn inventory_is_bounded_and_keeps_assigned_machines() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let limits = InventoryLimits {
            max_machines: 3,
            max_age_secs: 0,
        };
        let a = Assignments::open_with_limits(&store, UnassignedPolicy::Ignore, limits).unwrap();
        let mac = |i: u8| MacAddr([0x52, 0x54, 0, 0, 1, i]);
        a.set(mac(0), &assignment("v1.11.6")).unwrap();
        for i in 0..=200u8 {
            a.record(mac(i), Sighting::default()).unwrap();
        }
        let inv = a.inventory().unwrap();
        assert_eq!(inv.len(), 3, "{inv:?}");
        assert!(
            inv.iter().any(|r| r.mac == mac(0)),
            "assigned machine evicted"
        );
        assert!(
            inv.iter().any(|r| r.mac == mac(200)),
            "newest machine missing"
        );
        // Only unassigned machines are in the eviction index.
        assert_eq!(a.seen.len(), 2);

        // Full of assigned machines: a new one is refused, nothing is evicted.
        for i in 1..=2u8 {
            a.set(mac(i), &assignment("v1.11.6")).unwrap();
            a.record(mac(i), Sighting::default()).unwrap();
        }
        let err = a.record(mac(250), Sighting::default()).unwrap_err();
        assert!(matches!(err, AssignError::InventoryFull(3)), "{err}");
        assert_eq!(a.inventory().unwrap().len(), 3);

        // The count and the index survive a reopen.
        drop(a);
        let a = Assignments::open_with_limits(&store, UnassignedPolicy::Ignore, limits).unwrap();
        assert_eq!(a.inventory_lock.lock().unwrap().count, 3);
    }

    #[test]
    fn unassigned_machines_age_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let limits = InventoryLimits {
            max_machines: 0,
            max_age_secs: 3600,
        };
        let a = Assignments::open_with_limits(&store, UnassignedPolicy::Ignore, limits).unwrap();
        let old_unassigned = MacAddr([2, 0, 0, 0, 0, 1]);
        let old_assigned = MacAddr([2, 0, 0, 0, 0, 2]);
        a.set(old_assigned, &assignment("v1.11.6")).unwrap();
        // Two machines last seen two hours ago (written as the record would have been).
        for mac in [old_unassigned, old_assigned] {
            let mut r = a.record(mac, Sighting::default()).unwrap();
            a.seen.remove(seen_key(&r)).unwrap();
            r.last_seen = (chrono::Utc::now() - chrono::Duration::hours(2))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            a.inventory.insert(mac.0, encode(&r)).unwrap();
            a.seen.insert(seen_key(&r), &[]).unwrap();
        }
        a.inventory_lock.lock().unwrap().last_prune = 0;
        a.record(MacAddr([2, 0, 0, 0, 0, 3]), Sighting::default())
            .unwrap();
        let macs: Vec<MacAddr> = a.inventory().unwrap().iter().map(|r| r.mac).collect();
        assert_eq!(macs, [old_assigned, MacAddr([2, 0, 0, 0, 0, 3])]);
    }

    #[test]
    fn assignments_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let a = Assignments::open(&store, UnassignedPolicy::BootDefault).unwrap();
            a.set(M1, &assignment("v1.9.0")).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let a = Assignments::open(&store, UnassignedPolicy::BootDefault).unwrap();
        assert_eq!(a.get(M1).unwrap(), Some(assignment("v1.9.0")));
    }
}
