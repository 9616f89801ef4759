//! Store quotas: how much the store may hold and how much of its filesystem it must leave
//! free.
//!
//! Anonymous clients can make the appliance store things — a new schematic, a new asset
//! build, a pull-through download of any public image — so the store refuses new content once
//! it holds `store.maxBytes`, or once writing would leave less than `store.minFreeBytes` free
//! on the data directory's filesystem. The refusal is [`StoreError::QuotaReached`], which
//! callers treat like a full disk (`507 Insufficient Storage`, naming the limit): content
//! already stored keeps being served.
//!
//! Checked when a write starts (nothing is read from the client when already over), every
//! [`CHECK_EVERY`] bytes while it streams (a 20 GB pull-through layer stops at the limit, not
//! at a full disk), and when it is committed.

use std::sync::atomic::{AtomicU64, Ordering};

use super::error::StoreError;
use super::{Inner, Result};

/// The limits (0 = none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Most bytes of blob content the store holds (`store.maxBytes`).
    pub max_bytes: u64,
    /// Bytes that must stay free on the data directory's filesystem (`store.minFreeBytes`).
    pub min_free_bytes: u64,
}

/// The limits in force, changeable while the store is open.
#[derive(Debug, Default)]
pub(crate) struct QuotaState {
    max_bytes: AtomicU64,
    min_free_bytes: AtomicU64,
}

impl QuotaState {
    pub(crate) fn set(&self, q: Quota) {
        self.max_bytes.store(q.max_bytes, Ordering::Relaxed);
        self.min_free_bytes
            .store(q.min_free_bytes, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Quota {
        Quota {
            max_bytes: self.max_bytes.load(Ordering::Relaxed),
            min_free_bytes: self.min_free_bytes.load(Ordering::Relaxed),
        }
    }
}

/// How often a write in progress re-checks the limits.
pub(crate) const CHECK_EVERY: u64 = 64 << 20;

impl Inner {
    /// Refuses a write that would break a limit: `written` bytes of it are already in the
    /// temp file (they count against `store.maxBytes`; the filesystem's free space already
    /// reflects them). At the start of a write (`written` 0) a full store refuses.
    pub(crate) fn check_quota(&self, written: u64) -> Result<()> {
        let q = self.quota.get();
        if q.max_bytes > 0 {
            let used = self.total_size()?;
            let over = if written == 0 {
                used >= q.max_bytes
            } else {
                used.saturating_add(written) > q.max_bytes
            };
            if over {
                return Err(StoreError::QuotaReached {
                    path: self.dir.clone(),
                    detail: format!(
                        "the store holds {used} bytes and store.maxBytes is {}",
                        q.max_bytes
                    ),
                });
            }
        }
        if q.min_free_bytes > 0
            && let Ok(st) = nix::sys::statvfs::statvfs(&self.dir)
        {
            let free = st.blocks_available().saturating_mul(st.fragment_size());
            if free < q.min_free_bytes {
                return Err(StoreError::QuotaReached {
                    path: self.dir.clone(),
                    detail: format!(
                        "{free} bytes free, and store.minFreeBytes keeps {} free",
                        q.min_free_bytes
                    ),
                });
            }
        }
        Ok(())
    }
}
