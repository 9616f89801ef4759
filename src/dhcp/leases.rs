//! The full DHCP server's leases: the in-memory [`LeaseTable`] and its copy on disk, the sled
//! tree `dhcp/leases` of the store's database (key: the address, 4 bytes big-endian, so the
//! tree iterates by address; value: JSON [`StoredLease`]).
//!
//! Only bound and declined leases are written — on ACK, RELEASE, DECLINE and expiry — never an
//! offer, so a flood of DISCOVERs writes nothing permanent. At start the tree is loaded;
//! leases that ended while we were down, and any outside the pool's subnet (the subnet was
//! changed), are deleted.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::lease::{Lease, LeaseState, LeaseTable};
use super::pool::{PoolConfig, Subnet};
use crate::mac::MacAddr;

/// The sled tree holding the leases.
pub const LEASES_TREE: &str = "dhcp/leases";

/// How often (at most) ended leases and offers are swept, in seconds.
const SWEEP_EVERY_SECS: u64 = 1;

/// A lease as stored (and as `/api/v1/leases` shows it, with `expires` as RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredLease {
    /// Client MAC, colon-separated.
    pub mac: String,
    /// `bound` or `declined` (`offered` only in listings).
    pub state: String,
    /// End of the lease or quarantine, Unix seconds.
    pub expires: u64,
    /// Option 12 sent to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// A static reservation.
    #[serde(default, rename = "static")]
    pub is_static: bool,
    /// Option 61, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// An error reading or writing the lease database.
#[derive(Debug, thiserror::Error)]
pub enum LeaseStoreError {
    /// The database failed (shown, not exposed as a source: it is the root cause).
    #[error("lease database: {0}")]
    Db(sled::Error),
    /// The runtime shut down before the write was durable.
    #[error("lease database: the runtime stopped before the leases were written to disk")]
    FlushCancelled,
}

impl From<sled::Error> for LeaseStoreError {
    fn from(e: sled::Error) -> Self {
        LeaseStoreError::Db(e)
    }
}

/// The leases of the full DHCP server, shared by its receive loops, the admin API and the
/// metrics.
#[derive(Debug)]
pub struct Leases {
    table: Mutex<(LeaseTable, u64)>,
    tree: sled::Tree,
    pool: PoolConfig,
    subnet: Subnet,
    /// Test hook: make [`Leases::flush`] fail.
    #[cfg(test)]
    pub(crate) fail_flush: std::sync::atomic::AtomicBool,
}

/// The current time in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Leases {
    /// Opens `tree` for `pool` (validated: `subnet` is its subnet), loading the leases that
    /// are still valid at `now` and deleting the others.
    pub fn open(
        tree: sled::Tree,
        pool: PoolConfig,
        subnet: Subnet,
        now: u64,
    ) -> Result<Leases, LeaseStoreError> {
        let mut table = LeaseTable::new(pool.range, subnet);
        let mut stale = Vec::new();
        for item in tree.iter() {
            let (k, v) = item?;
            match decode(&k, &v) {
                // Two records of one client (a crash between a write and the deletion of the
                // lease it replaced): the one that lasts longer is kept, the other deleted.
                Some(lease)
                    if lease.state == LeaseState::Bound
                        && table
                            .of(&lease.key())
                            .is_some_and(|kept| kept.expires >= lease.expires) =>
                {
                    tracing::info!(ip = %lease.ip, mac = %MacAddr(lease.mac), "DHCP lease superseded by the client's newer one: dropped");
                    stale.push(k);
                }
                Some(lease) if lease.expires > now => match table.insert(lease.clone()) {
                    Some(evicted) => {
                        for old in evicted.into_iter().filter(|old| old.ip != lease.ip) {
                            tracing::info!(ip = %old.ip, mac = %MacAddr(old.mac), "DHCP lease superseded by the client's newer one: dropped");
                            stale.push(sled::IVec::from(&old.ip.octets()[..]));
                        }
                    }
                    None => {
                        tracing::info!(ip = %lease.ip, mac = %MacAddr(lease.mac), "DHCP lease outside the pool's subnet: reclaimed");
                        stale.push(k);
                    }
                },
                Some(lease) => {
                    tracing::info!(ip = %lease.ip, mac = %MacAddr(lease.mac), "DHCP lease ended while stopped (or left the subnet): reclaimed");
                    stale.push(k);
                }
                None => {
                    tracing::warn!(key = %hex::encode(&k), "damaged DHCP lease record dropped");
                    stale.push(k);
                }
            }
        }
        for k in stale {
            tree.remove(k)?;
        }
        tree.flush()?;
        Ok(Leases {
            table: Mutex::new((table, now)),
            tree,
            pool,
            subnet,
            #[cfg(test)]
            fail_flush: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The pool served.
    pub fn pool(&self) -> &PoolConfig {
        &self.pool
    }

    /// The pool's subnet.
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// Runs `f` on the table after sweeping what ended by `now` (at most once a second);
    /// ended bound and declined leases are deleted from disk. Never blocks on disk: sled
    /// writes go to its in-memory log, flushed by [`Leases::flush`].
    pub(crate) fn with<R>(&self, now: u64, f: impl FnOnce(&mut LeaseTable) -> R) -> R {
        let mut guard = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let (table, last_sweep) = &mut *guard;
        if now >= *last_sweep + SWEEP_EVERY_SECS || now < *last_sweep {
            *last_sweep = now;
            for ended in table.expire(now) {
                tracing::info!(ip = %ended.ip, mac = %MacAddr(ended.mac), state = ended.state.as_str(), "DHCP lease ended");
                if let Err(e) = self.tree.remove(ended.ip.octets()) {
                    tracing::warn!(ip = %ended.ip, error = %e, "cannot delete an ended DHCP lease");
                }
            }
        }
        f(table)
    }

    /// Writes a bound or declined lease.
    pub(crate) fn store(&self, lease: &Lease) -> Result<(), LeaseStoreError> {
        self.tree.insert(lease.ip.octets(), encode(lease))?;
        Ok(())
    }

    /// Deletes the lease of `ip`.
    pub(crate) fn delete(&self, ip: Ipv4Addr) -> Result<(), LeaseStoreError> {
        self.tree.remove(ip.octets())?;
        Ok(())
    }

    /// Makes the writes so far durable.
    ///
    /// sled's blocking `flush` on tokio's blocking pool, not sled's `flush_async`: in sled
    /// 0.34, several `flush_async` at once never wake some of their waiters
    /// (spacejam/sled#1308), which stopped every ACK once a few hundred clients asked at once.
    /// Concurrent `flush` calls share sled's one write of its log.
    pub(crate) async fn flush(&self) -> Result<(), LeaseStoreError> {
        #[cfg(test)]
        if self.fail_flush.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(LeaseStoreError::Db(sled::Error::Io(std::io::Error::other(
                "injected flush failure",
            ))));
        }
        let tree = self.tree.clone();
        match tokio::task::spawn_blocking(move || tree.flush()).await {
            Ok(result) => {
                result?;
                Ok(())
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(LeaseStoreError::FlushCancelled),
        }
    }

    /// Every lease at `now`, by address.
    pub fn list(&self, now: u64) -> Vec<Lease> {
        self.with(now, |t| t.list())
    }

    /// The bound address of each MAC (for the machine view).
    pub fn bound_by_mac(&self, now: u64) -> HashMap<MacAddr, Ipv4Addr> {
        self.list(now)
            .into_iter()
            .filter(|l| l.state == LeaseState::Bound)
            .map(|l| (MacAddr(l.mac), l.ip))
            .collect()
    }

    /// How many leases are offered, bound and declined.
    pub fn counts(&self, now: u64) -> [(LeaseState, usize); 3] {
        self.with(now, |t| t.counts())
    }
}

fn encode(lease: &Lease) -> Vec<u8> {
    serde_json::to_vec(&stored(lease)).expect("lease records serialize")
}

/// A lease's stored form.
pub fn stored(lease: &Lease) -> StoredLease {
    StoredLease {
        mac: MacAddr(lease.mac).to_string(),
        state: lease.state.as_str().to_string(),
        expires: lease.expires,
        hostname: lease.hostname.clone(),
        is_static: lease.is_static,
        client_id: lease.client_id.as_deref().map(hex::encode),
    }
}

fn decode(key: &[u8], value: &[u8]) -> Option<Lease> {
    let ip: [u8; 4] = key.try_into().ok()?;
    let s: StoredLease = serde_json::from_slice(value).ok()?;
    let mac: MacAddr = s.mac.parse().ok()?;
    let state = match s.state.as_str() {
        "bound" => LeaseState::Bound,
        "declined" => LeaseState::Declined,
        _ => return None,
    };
    let client_id = match s.client_id {
        Some(h) => Some(hex::decode(h).ok()?),
        None => None,
    };
    Some(Lease {
        ip: Ipv4Addr::from(ip),
        mac: mac.0,
        client_id,
        state,
        expires: s.expires,
        hostname: s.hostname,
        is_static: s.is_static,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::lease::Client;

    fn pool() -> PoolConfig {
        PoolConfig {
            range: "192.0.2.100-192.0.2.110".parse().unwrap(),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            router: None,
            dns: vec![],
            domain: None,
            lease_secs: 3600,
            offer_secs: 30,
            probe: false,
        }
    }

    #[test]
    fn bound_leases_survive_a_reopen_offers_do_not_and_ended_ones_are_reclaimed() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree(LEASES_TREE).unwrap();
        let p = pool();
        let subnet = p.validate(None).unwrap();
        let leases = Leases::open(tree.clone(), p.clone(), subnet, 1000).unwrap();
        let a = Client::new([2, 0, 0, 0, 0, 1], Some(b"\x01abc"));
        let b = Client::new([2, 0, 0, 0, 0, 2], None);
        let c = Client::new([2, 0, 0, 0, 0, 3], None);
        let ip = |n| Ipv4Addr::new(192, 0, 2, n);
        let (bound, _) = leases.with(1000, |t| t.bind(&a, ip(100), 5000));
        leases.store(&bound).unwrap();
        let (short, _) = leases.with(1000, |t| t.bind(&b, ip(101), 1500));
        leases.store(&short).unwrap();
        leases.with(1000, |t| t.hold_offer(&c, ip(102), 1030));
        assert_eq!(tree.len(), 2, "the offer is not written");
        drop(leases);
        let again = Leases::open(tree.clone(), p, subnet, 2000).unwrap();
        let list = again.list(2000);
        assert_eq!(list, vec![bound]);
        assert_eq!(list[0].client_id.as_deref(), Some(&b"\x01abc"[..]));
        assert_eq!(tree.len(), 1, "the ended lease was deleted");
        assert_eq!(
            again.bound_by_mac(2000).get(&MacAddr([2, 0, 0, 0, 0, 1])),
            Some(&ip(100))
        );
        // Damaged records are dropped, not fatal.
        tree.insert([1, 2, 3], b"x".to_vec()).unwrap();
        tree.insert(ip(105).octets(), b"{".to_vec()).unwrap();
        let third = Leases::open(tree.clone(), pool(), subnet, 2000).unwrap();
        assert_eq!(third.list(2000).len(), 1);
        assert_eq!(tree.len(), 1);
    }

    /// Two records of one client on disk (a crash between writing a new lease and deleting
    /// the one it replaced): the longer one is kept in memory and on disk, in either order.
    #[test]
    fn a_clients_duplicate_records_leave_one_on_disk() {
        for (first, second) in [(5000, 6000), (6000, 5000)] {
            let db = sled::Config::new().temporary(true).open().unwrap();
            let tree = db.open_tree(LEASES_TREE).unwrap();
            let p = pool();
            let subnet = p.validate(None).unwrap();
            let leases = Leases::open(tree.clone(), p.clone(), subnet, 1000).unwrap();
            let c = Client::new([2, 0, 0, 0, 0, 1], None);
            let ip = |n| Ipv4Addr::new(192, 0, 2, n);
            let (a, _) = leases.with(1000, |t| t.bind(&c, ip(100), first));
            let (b, _) = leases.with(1000, |t| t.bind(&c, ip(101), second));
            leases.store(&a).unwrap();
            leases.store(&b).unwrap();
            assert_eq!(tree.len(), 2);
            drop(leases);
            let again = Leases::open(tree.clone(), p, subnet, 2000).unwrap();
            let list = again.list(2000);
            assert_eq!(list.len(), 1);
            assert_eq!(list[0].expires, 6000);
            assert_eq!(tree.len(), 1, "the superseded record is deleted");
            assert!(tree.get(list[0].ip.octets()).unwrap().is_some());
        }
    }

    /// Many ACKs at once each wait for their lease to be durable. sled 0.34's own
    /// `flush_async` never wakes some of its waiters when several run at once
    /// (spacejam/sled#1308): the server then stops acknowledging anything.
    #[test]
    fn concurrent_flushes_all_complete() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let tree = db.open_tree(LEASES_TREE).unwrap();
        let p = PoolConfig {
            range: "192.0.2.1-192.0.2.254".parse().unwrap(),
            ..pool()
        };
        let subnet = p.validate(None).unwrap();
        let leases = std::sync::Arc::new(Leases::open(tree.clone(), p, subnet, 1000).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let done = rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for n in 1..=250u8 {
                let leases = leases.clone();
                tasks.spawn(async move {
                    let client = Client::new([2, 0, 0, 0, 1, n], None);
                    let ip = Ipv4Addr::new(192, 0, 2, n);
                    let (lease, _) = leases.with(1000, |t| t.bind(&client, ip, 5000));
                    leases.store(&lease).unwrap();
                    leases.flush().await.unwrap();
                });
            }
            tokio::time::timeout(std::time::Duration::from_secs(60), async {
                let mut done = 0;
                while let Some(r) = tasks.join_next().await {
                    r.unwrap();
                    done += 1;
                }
                done
            })
            .await
        });
        assert_eq!(done.ok(), Some(250), "flushes still waiting after 60 s");
        assert_eq!(tree.len(), 250);
        rt.shutdown_background();
    }
}
