//! Admission control: how many transfers may be in progress, in total and per client address.
//!
//! Every transfer holds a UDP socket (its TID) and, for files of the extra directory, an open
//! file, until it completes or the engine gives up on a silent client. Without a cap any host on
//! the LAN can pin descriptors by sending read requests and never acknowledging, until the
//! process hits `RLIMIT_NOFILE` and the HTTP side can no longer accept connections.
//!
//! ## Half-open transfers are evicted first (like a SYN queue)
//!
//! A transfer is *half-open* from its admission until the client's first valid ACK (ACK 0 after
//! an OACK, or ACK 1). A request from a forged source address never gets past that point, and
//! would otherwise hold its slot for the whole retransmission budget (≈ 12 s at the default
//! 2 s timeout): about 43 spoofed RRQs per second would keep all 512 slots and refuse real
//! firmware. So when a cap is full, the new request takes the slot of the *oldest half-open*
//! transfer (of the same client when the per-client cap is full, of anyone when the global
//! cap is): that transfer is cancelled ([`TftpStats::evicted`]) and its slot changes hands at
//! once. Only when every transfer in the way is established is the request refused with a
//! TFTP ERROR ("server busy"), before anything is opened. A real client ACKs within a
//! round-trip, so it is evicted only if the attacker sends more spoofed requests than there are
//! slots within that round-trip.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::TftpStats;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    /// The global cap is reached.
    #[error("server busy: {limit} TFTP transfers in progress, try again later")]
    Server {
        /// The global cap.
        limit: usize,
    },
    /// This client address already has its maximum of transfers in progress.
    #[error("too many TFTP transfers from {client} ({limit} in progress), try again later")]
    Client {
        /// The client address (IPv4-mapped IPv6 addresses are shown as IPv4).
        client: IpAddr,
        /// The per-client cap.
        limit: usize,
    },
}

#[derive(Debug, Default)]
struct Counts {
    /// Every admitted transfer still holding its slot, by admission number (oldest first).
    live: BTreeMap<u64, IpAddr>,
    per_client: HashMap<IpAddr, usize>,
    /// The half-open ones among them, with the sender that cancels each.
    half_open: BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    next_id: u64,
}

impl Counts {
    /// Frees transfer `id`'s slot, if it still holds one.
    fn free(&mut self, id: u64) -> bool {
        let Some(client) = self.live.remove(&id) else {
            return false;
        };
        self.half_open.remove(&id);
        if let Some(n) = self.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&client);
            }
        }
        true
    }

    /// Cancels the oldest half-open transfer (of `client` only, if given) and frees its slot.
    fn evict_oldest(&mut self, client: Option<IpAddr>) -> bool {
        let Some(id) = self
            .half_open
            .iter()
            .find(|(_, (c, _))| client.is_none_or(|want| *c == want))
            .map(|(id, _)| *id)
        else {
            return false;
        };
        if let Some((_, cancel)) = self.half_open.remove(&id) {
            // The task may already be gone: then there is nothing to cancel.
            let _ = cancel.send(());
        }
        self.free(id)
    }
}

/// The table of transfers in progress.
#[derive(Debug)]
pub(crate) struct Sessions {
    max_total: usize,
    max_per_client: usize,
    counts: Mutex<Counts>,
    stats: Arc<TftpStats>,
}

impl Sessions {
    /// Caps of at least 1; the per-client cap never exceeds the global one.
    pub(crate) fn new(max_total: usize, max_per_client: usize, stats: Arc<TftpStats>) -> Self {
        let max_total = max_total.max(1);
        Sessions {
            max_total,
            max_per_client: max_per_client.clamp(1, max_total),
            counts: Mutex::new(Counts::default()),
            stats,
        }
    }

    pub(crate) fn max_total(&self) -> usize {
        self.max_total
    }

    pub(crate) fn max_per_client(&self) -> usize {
        self.max_per_client
    }

    /// Admits one transfer for `client`, half-open. When a cap is full, the oldest half-open
    /// transfer in the way is evicted (module docs; counted in [`TftpStats::evicted`]); if there
    /// is none, says which cap is reached (and counts the refusal in
    /// [`TftpStats::refused_busy`] or [`TftpStats::refused_client_busy`]). The slot is released
    /// when the permit is dropped, or when the transfer is evicted.
    pub(crate) fn try_admit(self: &Arc<Self>, client: IpAddr) -> Result<Admitted, Busy> {
        let client = client.to_canonical();
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted = 0;
        if counts.per_client.get(&client).copied().unwrap_or(0) >= self.max_per_client {
            if !counts.evict_oldest(Some(client)) {
                TftpStats::bump(&self.stats.refused_client_busy, 1);
                return Err(Busy::Client {
                    client,
                    limit: self.max_per_client,
                });
            }
            evicted += 1;
        }
        if counts.live.len() >= self.max_total {
            if !counts.evict_oldest(None) {
                // Only reached without an eviction above: that one freed a global slot too.
                TftpStats::bump(&self.stats.refused_busy, 1);
                return Err(Busy::Server {
                    limit: self.max_total,
                });
            }
            evicted += 1;
        }
        let id = counts.next_id;
        counts.next_id += 1;
        counts.live.insert(id, client);
        *counts.per_client.entry(client).or_insert(0) += 1;
        let (cancel, cancelled) = oneshot::channel();
        counts.half_open.insert(id, (client, cancel));
        TftpStats::bump(&self.stats.evicted, evicted);
        self.stats
            .in_progress
            .store(counts.live.len() as u64, Ordering::Relaxed);
        Ok(Admitted {
            permit: Permit {
                sessions: Arc::clone(self),
                id,
            },
            cancelled,
            evicted,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, id: u64) {
        let mut counts = self.lock();
        if counts.free(id) {
            self.stats
                .in_progress
                .store(counts.live.len() as u64, Ordering::Relaxed);
        }
    }

    /// Transfers in progress: total and number of distinct clients.
    #[cfg(test)]
    fn in_use(&self) -> (usize, usize) {
        let counts = self.lock();
        (counts.live.len(), counts.per_client.len())
    }
}

/// What [`Sessions::try_admit`] gives an admitted request.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) permit: Permit,
    /// Completes with `Ok` when the transfer is evicted while half-open.
    pub(crate) cancelled: oneshot::Receiver<()>,
    /// Half-open transfers evicted to make room (0 to 2): their tasks must run (and close
    /// their sockets) before more requests are read.
    pub(crate) evicted: u64,
}

/// One admitted transfer; dropping it frees the slot (unless it was evicted: then the slot
/// changed hands already).
#[derive(Debug)]
pub(crate) struct Permit {
    sessions: Arc<Sessions>,
    id: u64,
}

impl Permit {
    /// The client's first valid ACK: the transfer is established and no longer evictable.
    pub(crate) fn established(&self) {
        self.sessions.lock().half_open.remove(&self.id);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.sessions.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn global_and_per_client_caps() {
        let stats = Arc::new(TftpStats::default());
        let s = Arc::new(Sessions::new(5, 2, Arc::clone(&stats)));
        // Established transfers (first ACK seen) are never evicted.
        let admit = |client: &str| {
            s.try_admit(ip(client)).map(|a| {
                a.permit.established();
                a.permit
            })
        };
        let a1 = admit("192.0.2.1").unwrap();
        let a2 = admit("192.0.2.1").unwrap();
        assert_eq!(
            s.try_admit(ip("192.0.2.1")).unwrap_err(),
            Busy::Client {
                client: ip("192.0.2.1"),
                limit: 2
            }
        );
        // IPv4-mapped IPv6 is the same client.
        assert!(matches!(
            s.try_admit(ip("::ffff:192.0.2.1")),
            Err(Busy::Client { .. })
        ));
        let b1 = admit("192.0.2.2").unwrap();
        let b2 = admit("192.0.2.2").unwrap();
        let c1 = admit("192.0.2.3").unwrap();
        assert_eq!(s.in_use(), (5, 3));
        assert_eq!(
            s.try_admit(ip("192.0.2.4")).unwrap_err(),
            Busy::Server { limit: 5 }
        );
        let snap = stats.snapshot();
        assert_eq!(
            (
                snap.refused_busy,
                snap.refused_client_busy,
                snap.in_progress
            ),
            (1, 2, 5)
        );
        drop(a1);
        let d1 = admit("192.0.2.4").unwrap();
        drop((a2, b1, b2, c1, d1));
        assert_eq!(s.in_use(), (0, 0), "every slot and client entry released");
        assert_eq!(stats.snapshot().in_progress, 0);
    }

    #[test]
    fn the_oldest_half_open_transfer_is_evicted() {
        let stats = Arc::new(TftpStats::default());
        let s = Arc::new(Sessions::new(3, 2, Arc::clone(&stats)));
        let admit = |client: &str| {
            let a = s.try_admit(ip(client)).unwrap();
            (a.permit, a.cancelled, a.evicted)
        };
        let (a1, mut a1_cancel, _) = admit("192.0.2.1");
        let (a2, mut a2_cancel, _) = admit("192.0.2.1");
        // Per-client cap full: the client's own oldest half-open transfer makes room.
        let (a3, mut a3_cancel, evicted) = admit("192.0.2.1");
        assert_eq!(evicted, 1);
        assert_eq!(a1_cancel.try_recv(), Ok(()), "a1 evicted");
        assert!(a2_cancel.try_recv().is_err(), "a2 kept");
        assert_eq!(s.in_use(), (2, 1));
        drop(a1); // the evicted task ends later: its slot is not freed twice
        assert_eq!(s.in_use(), (2, 1));
        a2.established();
        let (b1, _b1_cancel, _) = admit("192.0.2.2");
        // Global cap full: the oldest half-open of anyone (a3; a2 is established).
        let (c1, _c1_cancel, _) = admit("192.0.2.3");
        assert_eq!(a3_cancel.try_recv(), Ok(()), "a3 evicted");
        assert_eq!(s.in_use(), (3, 3));
        b1.established();
        c1.established();
        // Nothing half-open left: refused as before.
        assert_eq!(
            s.try_admit(ip("192.0.2.4")).unwrap_err(),
            Busy::Server { limit: 3 }
        );
        let snap = stats.snapshot();
        assert_eq!(
            (snap.evicted, snap.refused_busy, snap.in_progress),
            (2, 1, 3)
        );
        drop((a2, a3, b1, c1));
        assert_eq!(s.in_use(), (0, 0));
        assert_eq!(stats.snapshot().in_progress, 0);
    }

    #[test]
    fn caps_are_sane() {
        let stats = Arc::new(TftpStats::default());
        let s = Sessions::new(0, 0, Arc::clone(&stats));
        assert_eq!((s.max_total(), s.max_per_client()), (1, 1));
        let s = Sessions::new(4, 100, stats);
        assert_eq!((s.max_total(), s.max_per_client()), (4, 4));
    }

    #[test]
    fn busy_messages_are_clear() {
        assert_eq!(
            Busy::Server { limit: 256 }.to_string(),
            "server busy: 256 TFTP transfers in progress, try again later"
        );
        assert_eq!(
            Busy::Client {
                client: ip("192.0.2.9"),
                limit: 8
            }
            .to_string(),
            "too many TFTP transfers from 192.0.2.9 (8 in progress), try again later"
        );
    }
}
