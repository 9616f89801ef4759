//! Garbage collection.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::Inner;
use super::digest::Digest;
use super::error::{Result, io_ctx};
use super::index::{decode_digest, decode_digest_list, now_ms, ref_key};

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
    /// Refs removed before the sweep ([`Store::gc_dropping`](super::Store::gc_dropping));
    /// in a dry run, the refs that would be.
    pub refs_dropped: usize,
}

/// One named reference of the store: `kind`/`key` → `target`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RefEntry {
    /// The ref kind (`oci-tag`, `asset`, `schematic`, …).
    pub kind: String,
    /// The key within the kind.
    pub key: String,
    /// The blob it names.
    pub target: Digest,
}

/// What the index says about one blob, for planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobFacts {
    /// Content length in bytes.
    pub size: u64,
    /// When it was last put (unix milliseconds): the grace period counts from here.
    pub touched_ms: u64,
}

/// A point-in-time copy of the index's liveness data (blob sizes, refs, pins, children), so a
/// caller can work out what GC would keep under a changed set of refs without holding any
/// lock. Not transactional: content added meanwhile is protected by the grace period.
#[derive(Debug, Clone, Default)]
pub struct StoreSnapshot {
    /// Every indexed blob.
    pub blobs: HashMap<Digest, BlobFacts>,
    /// Every ref, sorted by kind and key.
    pub refs: Vec<RefEntry>,
    /// Pinned blobs.
    pub pins: Vec<Digest>,
    /// Parent → children edges.
    pub children: HashMap<Digest, Vec<Digest>>,
    /// When the snapshot was taken (unix milliseconds).
    pub taken_ms: u64,
}

impl StoreSnapshot {
    /// Digests reachable from `roots` through the children edges (roots included).
    pub fn reachable(&self, roots: impl IntoIterator<Item = Digest>) -> HashSet<Digest> {
        let mut live = HashSet::new();
        let mut stack: Vec<Digest> = roots.into_iter().collect();
        while let Some(d) = stack.pop() {
            if !live.insert(d) {
                continue;
            }
            if let Some(c) = self.children.get(&d) {
                stack.extend(c.iter().filter(|c| !live.contains(*c)));
            }
        }
        live
    }

    /// What GC with `grace` keeps if the refs in `dropped` are gone: everything reachable
    /// from the pins, the other refs, and blobs put less than `grace` before the snapshot.
    pub fn live_without(&self, dropped: &HashSet<&RefEntry>, grace: Duration) -> HashSet<Digest> {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        let roots = self
            .pins
            .iter()
            .copied()
            .chain(
                self.refs
                    .iter()
                    .filter(|r| !dropped.contains(r))
                    .map(|r| r.target),
            )
            .chain(
                self.blobs
                    .iter()
                    .filter(|(_, f)| self.taken_ms.saturating_sub(f.touched_ms) < grace_ms)
                    .map(|(d, _)| *d),
            );
        self.reachable(roots)
    }

    /// Sum of the stored sizes of `digests` (absent ones count 0).
    pub fn bytes<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) -> u64 {
        digests
            .into_iter()
            .filter_map(|d| self.blobs.get(d))
            .map(|f| f.size)
            .sum()
    }

    /// Sum of the sizes of every indexed blob.
    pub fn total_bytes(&self) -> u64 {
        self.blobs.values().map(|f| f.size).sum()
    }
}

impl Inner {
    /// See [`Store::snapshot`](super::Store::snapshot).
    pub(crate) fn snapshot(&self) -> Result<StoreSnapshot> {
        let taken_ms = now_ms();
        let blobs = self
            .records()?
            .into_iter()
            .map(|(d, r)| {
                (
                    d,
                    BlobFacts {
                        size: r.size,
                        touched_ms: r.touched_ms,
                    },
                )
            })
            .collect();
        let mut refs = Vec::new();
        for kv in self.refs.iter() {
            let (k, v) = kv?;
            let text = std::str::from_utf8(&k)
                .map_err(|_| super::StoreError::Index("ref key is not UTF-8".into()))?;
            let Some((kind, key)) = text.split_once('/') else {
                continue;
            };
            refs.push(RefEntry {
                kind: kind.to_string(),
                key: key.to_string(),
                target: decode_digest(&v)?,
            });
        }
        refs.sort();
        let mut pins = Vec::new();
        for kv in self.pins.iter() {
            pins.push(decode_digest(&kv?.0)?);
        }
        let mut children = HashMap::new();
        for kv in self.children.iter() {
            let (k, v) = kv?;
            children.insert(decode_digest(&k)?, decode_digest_list(&v)?);
        }
        Ok(StoreSnapshot {
            blobs,
            refs,
            pins,
            children,
            taken_ms,
        })
    }

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
        drop_refs: &[RefEntry],
        trash: &mut Vec<PathBuf>,
    ) -> Result<GcReport> {
        let mut report = GcReport::default();
        let now = now_ms();

        // Unname first: a ref is dropped only while it still names the planned target (a
        // ref set again meanwhile, e.g. an asset rebuilt, stays). A dry run leaves the refs
        // and leaves them out of the mark instead.
        let mut skipped: HashSet<Vec<u8>> = HashSet::new();
        for r in drop_refs {
            let k = ref_key(&r.kind, &r.key)?;
            if dry_run {
                let current = self.refs.get(&k)?.map(|v| decode_digest(&v)).transpose()?;
                if current == Some(r.target) {
                    skipped.insert(k);
                }
                continue;
            }
            let expected: &[u8] = r.target.as_bytes();
            if let Ok(Ok(())) =
                self.refs
                    .compare_and_swap(&k, Some(expected), None as Option<&[u8]>)
            {
                report.refs_dropped += 1;
            }
        }
        if dry_run {
            report.refs_dropped = skipped.len();
        }
        let records = self.records()?;

        // Mark.
        let mut roots = Vec::new();
        for kv in self.pins.iter() {
            roots.push(decode_digest(&kv?.0)?);
        }
        for kv in self.refs.iter() {
            let (k, v) = kv?;
            if skipped.contains(k.as_ref()) {
                continue;
            }
            roots.push(decode_digest(&v)?);
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
    pub(crate) fn gc(
        &self,
        grace: Duration,
        dry_run: bool,
        drop_refs: &[RefEntry],
    ) -> Result<GcReport> {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        // The directory walk can be slow; do it before taking the lock and
        // re-check each candidate under it.
        let orphan_candidates = self.unindexed_files()?;
        let mut trash = Vec::new();
        let result = {
            let _gc = self.gc_lock.write().unwrap_or_else(|e| e.into_inner());
            self.gc_locked(grace_ms, orphan_candidates, dry_run, drop_refs, &mut trash)
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
