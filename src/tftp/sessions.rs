//! Admission control: how many transfers may be in progress, in total and per client address.
//!
//! Every transfer holds a UDP socket (its TID) and, for files of the extra directory, an open
//! file, until it completes or the engine gives up on a silent client. Without a cap any host on
//! the LAN can pin descriptors by sending read requests and never acknowledging, until the
//! process hits `RLIMIT_NOFILE` and the HTTP side can no longer accept connections. A request
//! over either cap is refused with a TFTP ERROR before anything is opened.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

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
    total: usize,
    per_client: HashMap<IpAddr, usize>,
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

    /// Admits one transfer for `client`, or says which cap is reached (and counts the refusal
    /// in [`TftpStats::refused_busy`] or [`TftpStats::refused_client_busy`]). The slot is
    /// released when the permit is dropped.
    pub(crate) fn try_admit(self: &Arc<Self>, client: IpAddr) -> Result<Permit, Busy> {
        let client = client.to_canonical();
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.max_total {
            TftpStats::bump(&self.stats.refused_busy, 1);
            return Err(Busy::Server {
                limit: self.max_total,
            });
        }
        let mine = counts.per_client.entry(client).or_insert(0);
        if *mine >= self.max_per_client {
            TftpStats::bump(&self.stats.refused_client_busy, 1);
            return Err(Busy::Client {
                client,
                limit: self.max_per_client,
            });
        }
        *mine += 1;
        counts.total += 1;
        self.stats.in_progress.fetch_add(1, Ordering::Relaxed);
        Ok(Permit {
            sessions: Arc::clone(self),
            client,
        })
    }

    fn release(&self, client: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                counts.per_client.remove(&client);
            }
        }
        counts.total = counts.total.saturating_sub(1);
        self.stats.in_progress.fetch_sub(1, Ordering::Relaxed);
    }

    /// Transfers in progress: total and number of distinct clients.
    #[cfg(test)]
    fn in_use(&self) -> (usize, usize) {
        let counts = self.counts.lock().unwrap();
        (counts.total, counts.per_client.len())
    }
}

/// One admitted transfer; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Permit {
    sessions: Arc<Sessions>,
    client: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.sessions.release(self.client);
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
        let a1 = s.try_admit(ip("192.0.2.1")).unwrap();
        let a2 = s.try_admit(ip("192.0.2.1")).unwrap();
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
        let b1 = s.try_admit(ip("192.0.2.2")).unwrap();
        let b2 = s.try_admit(ip("192.0.2.2")).unwrap();
        let c1 = s.try_admit(ip("192.0.2.3")).unwrap();
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
        let d1 = s.try_admit(ip("192.0.2.4")).unwrap();
        drop((a2, b1, b2, c1, d1));
        assert_eq!(s.in_use(), (0, 0), "every slot and client entry released");
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
