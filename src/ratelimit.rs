//! A token bucket per client: how often one client (a MAC for DHCP, an IP address for asset
//! builds) is served.
//!
//! Memory is bounded: at most [`MAX_TRACKED`] clients are tracked. When the table is full,
//! clients whose bucket has refilled (idle clients, indistinguishable from new ones) are
//! forgotten; if that frees nothing (a flood of forged MACs or addresses), new clients are
//! refused until buckets refill.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most MACs tracked at once.
pub const MAX_TRACKED: usize = 16_384;
/// Shortest time between two prunes of a full table.
const PRUNE_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug)]
struct Table<K> {
    buckets: HashMap<K, Bucket>,
    last_prune: Option<Instant>,
}

/// A token bucket per client key: `burst` tokens, refilled at `per_second`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    burst: f64,
    per_second: f64,
    max_tracked: usize,
    table: Mutex<Table<K>>,
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    /// A limiter; `burst == 0` or `per_second <= 0` disables it (everything is allowed).
    pub fn new(burst: u32, per_second: f64) -> RateLimiter<K> {
        Self::with_capacity(burst, per_second, MAX_TRACKED)
    }

    /// [`RateLimiter::new`] tracking at most `max_tracked` clients.
    pub fn with_capacity(burst: u32, per_second: f64, max_tracked: usize) -> RateLimiter<K> {
        RateLimiter {
            burst: f64::from(burst),
            per_second: per_second.max(0.0),
            max_tracked,
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                last_prune: None,
            }),
        }
    }

    fn disabled(&self) -> bool {
        self.burst == 0.0 || self.per_second == 0.0
    }

    /// Takes a token for `client` at `now`; `false` = over the limit.
    pub fn allow(&self, client: K, now: Instant) -> bool {
        if self.disabled() {
            return true;
        }
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !t.buckets.contains_key(&client) && t.buckets.len() >= self.max_tracked {
            let due = t
                .last_prune
                .is_none_or(|p| now.saturating_duration_since(p) >= PRUNE_INTERVAL);
            if due {
                t.last_prune = Some(now);
                let full_after = Duration::from_secs_f64(self.burst / self.per_second);
                t.buckets
                    .retain(|_, b| now.saturating_duration_since(b.updated) < full_after);
            }
            if t.buckets.len() >= self.max_tracked {
                return false;
            }
        }
        let b = t.buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Clients currently tracked.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.table.lock().unwrap().buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn burst_then_refill_per_mac() {
        let rl = RateLimiter::new(3, 2.0);
        let t0 = Instant::now();
        assert!(rl.allow(A, t0));
        assert!(rl.allow(A, t0));
        assert!(rl.allow(A, t0));
        assert!(!rl.allow(A, t0), "burst of 3 exhausted");
        assert!(rl.allow(B, t0), "other MACs have their own bucket");
        // 2 tokens/s: after 0.5 s one more packet.
        let t1 = t0 + Duration::from_millis(500);
        assert!(rl.allow(A, t1));
        assert!(!rl.allow(A, t1));
        // Refill caps at the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(rl.allow(A, t2));
        }
        assert!(!rl.allow(A, t2));
    }

    #[test]
    fn zero_disables() {
        let t0 = Instant::now();
        for rl in [RateLimiter::new(0, 10.0), RateLimiter::new(10, 0.0)] {
            for _ in 0..1000 {
                assert!(rl.allow(A, t0));
            }
            assert_eq!(rl.tracked(), 0);
        }
    }

    #[test]
    fn table_is_bounded() {
        let rl = RateLimiter::with_capacity(2, 1.0, 4);
        let t0 = Instant::now();
        for i in 0..4u8 {
            assert!(rl.allow([2, 0, 0, 0, 0, i], t0));
        }
        // Full of fresh buckets: a new MAC is refused, a known one still served.
        assert!(!rl.allow([2, 0, 0, 0, 1, 0], t0));
        assert!(rl.allow([2, 0, 0, 0, 0, 0], t0));
        assert_eq!(rl.tracked(), 4);
        // Once the buckets have refilled (2 s), idle MACs are forgotten and new ones fit.
        let t1 = t0 + Duration::from_secs(3);
        assert!(rl.allow([2, 0, 0, 0, 1, 0], t1));
        assert_eq!(rl.tracked(), 1);
    }
}
