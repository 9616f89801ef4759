//! Garbage collection.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::Inner;
use super::digest::Digest;
use super::error::{Result, io_ctx};
use super::index::{decode_digest, decode_digest_list, now_ms};

/// Result of [`Store::gc`](super::Store::gc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Blobs deleted (including `orphans`).
    pub removed: usize,
    /// Bytes freed on disk.
    pub freed_bytes: u64,
    /// Of `removed`: files that had no index record (left by a crash between
    /// rename and index update).
    pub orphans: usize,
}

impl Inner {
    /// Digests reachable from `roots` through the children tree.
    fn live_set(&self, roots: Vec<Digest>) -> Result<HashSet<Digest>> {
        let mut live: HashSet<Digest> = HashSet::new();
        let mut stack = roots;
        while let Some(d) = stack.pop() {
            if !live.insert(d) {
                continue;
            }
            if let Some(v) = self.children.get(d.as_bytes())? {
                stack.extend(
                    decode_digest_list(&v)?
                        .into_iter()
                        .filter(|c| !live.contains(c)),
                );
            }
        }
        Ok(live)
    }

    /// Blob files whose name is a digest without an index record.
    fn unindexed_files(&self) -> Result<Vec<Digest>> {
        let dir = &self.blobs_dir;
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| io_ctx("read dir", dir, e))? {
            let entry = entry.map_err(|e| io_ctx("read dir", dir, e))?;
            let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            else {
                continue;
            };
            if !self.blobs.contains_key(d.as_bytes())? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Moves the file of `d` into `tmp/` (fast, and leaves the final path
    /// free for a concurrent re-put); returns the new path and its size.
    fn to_trash(&self, d: &Digest) -> io::Result<Option<(PathBuf, u64)>> {
        let path = self.blob_file(d);
        let trash = self
            .tmp_dir
            .join(format!("gc-{}-{:08x}", d.hex(), rand::random::<u32>()));
        let size = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match fs::rename(&path, &trash) {
            Ok(()) => Ok(Some((trash, size))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The mark-and-sweep, run under the exclusive GC lock. Files to delete
    /// are appended to `trash` so they can be unlinked after the lock is
    /// released. With `dry_run`, nothing is moved or unindexed: the report
    /// says what a real run would remove.
    fn gc_locked(
        &self,
        grace_ms: u64,
        orphan_candidates: Vec<Digest>,
        dry_run: bool,
        trash: &mut Vec<PathBuf>,
    ) -> Result<GcReport> {
        let mut report = GcReport::default();
        let now = now_ms();
        let records = self.records()?;

        // Mark.
        let mut roots = Vec::new();
        for kv in self.pins.iter() {
            roots.push(decode_digest(&kv?.0)?);
        }
        for kv in self.refs.iter() {
            roots.push(decode_digest(&kv?.1)?);
        }
        roots.extend(
            records
                .iter()
                .filter(|(_, r)| now.saturating_sub(r.touched_ms) < grace_ms)
                .map(|(d, _)| *d),
        );
        let live = self.live_set(roots)?;

        // Sweep indexed blobs.
        for (d, _) in records.iter().filter(|(d, _)| !live.contains(d)) {
            let _stripe = self.stripe(d);
            // Re-read: a concurrent verification may have dropped it.
            let Some(rec) = self.record(d)? else {
                continue;
            };
            if dry_run {
                report.removed += 1;
                report.freed_bytes += rec.size;
                continue;
            }
            match self.to_trash(d) {
                Ok(Some((path, _))) => trash.push(path),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(digest = %d, error = %crate::errors::chain(&e), "gc: cannot remove blob; keeping it");
                    continue;
                }
            }
            self.remove_record(d)?;
            self.children.remove(d.as_bytes())?;
            report.removed += 1;
            report.freed_bytes += rec.size;
        }

        // Sweep files without a record (crash after rename, before index).
        let now_sys = SystemTime::now();
        for d in orphan_candidates.iter().filter(|d| !live.contains(d)) {
            let _stripe = self.stripe(d);
            if self.blobs.contains_key(d.as_bytes())? {
                continue;
            }
            let meta = fs::metadata(self.blob_file(d));
            let age_ms = meta
                .as_ref()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| now_sys.duration_since(t).ok())
                .map_or(0, |a| a.as_millis() as u64);
            if age_ms < grace_ms {
                continue;
            }
            if dry_run {
                if let Ok(m) = meta {
                    report.removed += 1;
                    report.orphans += 1;
                    report.freed_bytes += m.len();
                }
                continue;
            }
            match self.to_trash(d) {
                Ok(Some((path, size))) => {
                    trash.push(path);
                    report.removed += 1;
                    report.orphans += 1;
                    report.freed_bytes += size;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(digest = %d, error = %crate::errors::chain(&e), "gc: cannot remove orphan blob file");
                }
            }
        }

        if dry_run {
            return Ok(report);
        }
        // Drop children lists of parents that are neither live nor stored.
        for kv in self.children.iter() {
            let parent = decode_digest(&kv?.0)?;
            if !live.contains(&parent) && !self.blobs.contains_key(parent.as_bytes())? {
                self.children.remove(parent.as_bytes())?;
            }
        }
        Ok(report)
    }

    /// See [`Store::gc`](super::Store::gc) and [`Store::gc_dry_run`](super::Store::gc_dry_run).
    pub(crate) fn gc(&self, grace: Duration, dry_run: bool) -> Result<GcReport> {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        // The directory walk can be slow; do it before taking the lock and
        // re-check each candidate under it.
        let orphan_candidates = self.unindexed_files()?;
        let mut trash = Vec::new();
        let result = {
            let _gc = self.gc_lock.write().unwrap_or_else(|e| e.into_inner());
            self.gc_locked(grace_ms, orphan_candidates, dry_run, &mut trash)
        };
        // Unlink outside the lock; anything left over is removed from tmp/
        // at the next open.
        for path in trash {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %crate::errors::chain(&e), "gc: unlink failed");
            }
        }
        let report = result?;
        if dry_run {
            return Ok(report);
        }
        self.db.flush()?;
        if report.removed > 0 {
            tracing::info!(
                removed = report.removed,
                freed_bytes = report.freed_bytes,
                orphans = report.orphans,
                "store gc finished"
            );
        }
        Ok(report)
    }
}
