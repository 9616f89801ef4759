//! Store retention: what `bootfactory store gc`, `store usage`, the admin API's
//! `/api/v1/store/*` and the service's periodic GC keep, per Talos version.
//!
//! The store itself knows blobs, refs and children, nothing about Talos. This module reads
//! the refs the other modules write and attributes them to Talos versions:
//!
//! | category | refs of version `V` |
//! | --- | --- |
//! | release images | the tag `V` of every `artifacts.core.components` repository (imager, installer, installer-base, extensions and overlays catalogs, talosctl-all) and the digest refs of the manifests it reaches |
//! | extensions | every image the version's extensions catalog (`image-digests`) and overlays catalog (`overlays.yaml`) lists, by tag and by digest |
//! | built assets | assets (`asset/bf1/<kind>/V/…`) and built installer images (`bootfactory.invalid/<image>/<schematic>:V` with its cosign signature tag) |
//!
//! A [`GcPolicy`] decides which versions stay: the newest `keep_versions`, plus (with
//! `keep_referenced`) every version a machine assignment or the default assignment boots.
//! The refs of the other versions are dropped (refs a kept version shares stay), then the
//! store's mark-and-sweep runs in the same pass under its exclusive lock
//! ([`Store::gc_dropping`]), so everything only they kept goes, and blobs shared with kept
//! content stay. With `max_bytes`, built assets (rebuildable on demand) are evicted next,
//! least recently used first (`factory::builder::asset_last_used`), never the assets an
//! assignment boots (with `keep_referenced`) and never release images: when the target
//! cannot be reached that way the report says so. Schematics are never removed.
//!
//! Concurrency: inside the service the sweep honours a grace period (blobs put less than
//! [`SERVICE_GRACE`] ago, e.g. a pull or build in progress, are kept), refs are dropped only
//! while they still name what was planned, and a blob being served stays readable: GC
//! renames the file away and unlinks it, and an open file descriptor outlives the unlink.
//! One GC runs at a time ([`Retention::run`] waits, [`Retention::try_run`] gives up).
//!
//! A dry run plans the same way and asks the store what its sweep would remove without
//! changing anything, so its numbers are those of a real run on the same store.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::assign::{AssignError, Assignments};
use crate::config::{Config, StoreGcConfig};
use crate::factory::artifacts::{parse_extensions_catalog, parse_overlays_catalog};
use crate::factory::builder::{ASSET_KIND, asset_last_used, forget_unnamed_assets};
use crate::oci::catalog::{DIGEST_KIND, TAG_KIND};
use crate::oci::{CatalogError, ImageCatalog, ImageRef, flatten};
use crate::store::{Digest, GcReport, RefEntry, Store, StoreError, StoreSnapshot};
use crate::version::{TalosVersion, parse_user_version};

/// How old a blob must be before the service's GC may delete it: longer than a pull, a build
/// or a bundle import takes to name what it wrote — an import names its images only at the end
/// and may stream for up to 6 hours over the admin socket (`server`'s body deadline there).
pub const SERVICE_GRACE: Duration = Duration::from_secs(7 * 3600);

/// The registry built installer images are kept under (`factory::installer`).
const INSTALLER_REGISTRY: &str = "bootfactory.invalid";
/// The ref kind of extension squashfs images cached by the initramfs builder.
const SQUASHFS_KIND: &str = "squashfs";
/// The ref kind of schematics.
const SCHEMATIC_KIND: &str = "schematic";
/// The most bytes of a catalog file read.
const MAX_CATALOG_BYTES: u64 = 16 << 20;

/// What GC keeps besides what is referenced at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcPolicy {
    /// Keep the newest N Talos versions' content; `None` keeps every version.
    pub keep_versions: Option<usize>,
    /// Keep the versions and assets assignments boot.
    pub keep_referenced: bool,
    /// Evict built assets, least recently used first, down to this many bytes.
    pub max_bytes: Option<u64>,
}

impl GcPolicy {
    /// The policy of `store.gc.*` (0 = unset).
    pub fn from_config(c: &StoreGcConfig) -> GcPolicy {
        GcPolicy {
            keep_versions: (c.keep_versions > 0).then_some(c.keep_versions),
            keep_referenced: c.keep_referenced,
            max_bytes: (c.max_bytes > 0).then_some(c.max_bytes),
        }
    }
}

/// Parses a size as `store gc --max-size` and the store page's GC form take it: `20G`,
/// `500MiB`, `1t`, `12345` (bytes; units are powers of 1024).
pub fn parse_size(raw: &str) -> Result<u64, String> {
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{raw:?} is not a size (bytes, or a number with K, M, G or T)"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("{raw:?}: unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{raw:?} is too large"))
}

/// A retention failure.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The store failed.
    #[error("store")]
    Store(#[from] StoreError),
    /// The image catalog failed.
    #[error("image catalog")]
    Catalog(#[from] CatalogError),
    /// The assignment table could not be read.
    #[error("assignments")]
    Assign(#[from] AssignError),
    /// A blocking task failed.
    #[error("GC task")]
    Join(#[from] tokio::task::JoinError),
    /// Another GC is running (only from [`Retention::try_run`]).
    #[error("a store GC is already running")]
    Busy,
}

/// What assignments boot: kept with `keep_referenced`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Referenced {
    /// Versions assigned to a machine or as the default.
    pub versions: BTreeSet<TalosVersion>,
    /// `(schematic, version)` pairs assigned.
    pub pairs: BTreeSet<(String, TalosVersion)>,
}

impl Referenced {
    /// The versions and pairs of every machine assignment and the default.
    pub fn from_assignments(a: &Assignments) -> Result<Referenced, AssignError> {
        let mut out = Referenced::default();
        let all = a
            .list()?
            .into_iter()
            .map(|(_, a)| a)
            .chain(a.default_assignment()?);
        for assignment in all {
            if let Ok(v) = parse_user_version(&assignment.version) {
                out.versions.insert(v.clone());
                out.pairs.insert((assignment.schematic.clone(), v));
            }
        }
        Ok(out)
    }
}

/// The three kinds of per-version content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Category {
    Release,
    Extensions,
    Assets,
}

/// Disk usage of one Talos version (logical bytes of the blobs its refs reach, each blob
/// counted once within the version).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionUsage {
    /// `v1.11.6`.
    pub version: String,
    /// Release images (imager, installer, catalogs, talosctl).
    pub release_bytes: u64,
    /// Extension and overlay images its catalogs list (not counted again if a release image
    /// holds the same blob).
    pub extension_bytes: u64,
    /// Built assets and installer images.
    pub asset_bytes: u64,
    /// All of the above, each blob once.
    pub total_bytes: u64,
    /// What removing this version alone frees: blobs nothing else in the store reaches.
    pub exclusive_bytes: u64,
    /// Named images (tags) of the version.
    pub images: usize,
    /// Built assets of the version.
    pub assets: usize,
}

/// `store usage`: the store per Talos version, and the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    /// Newest version first.
    pub versions: Vec<VersionUsage>,
    /// Blobs shared by several versions (counted in each of their totals).
    pub shared_bytes: u64,
    /// Images no version owns (other pull-through images, images of unknown tags).
    pub other_image_bytes: u64,
    /// Schematics.
    pub schematic_bytes: u64,
    /// Extension squashfs images cached by the initramfs builder (shared by versions).
    pub build_cache_bytes: u64,
    /// Blobs nothing references (what a plain `store gc` would delete).
    pub unreferenced_bytes: u64,
    /// Every blob in the store, each once.
    pub total_bytes: u64,
    /// Number of blobs.
    pub blobs: usize,
    /// Flattened images under `<dataDir>/cache/images` (on disk, outside the store).
    pub extracted_cache_bytes: u64,
    /// What could not be attributed, in words.
    pub notes: Vec<String>,
}

/// One version's fate in a GC run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionPlan {
    /// Its usage before the run.
    #[serde(flatten)]
    pub usage: VersionUsage,
    /// Whether its content stays.
    pub keep: bool,
    /// Why (`newest 2`, `assigned`, `older than the newest 2`, `no version limit`).
    pub reason: String,
}

/// A built asset evicted for `max_bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvictedAsset {
    /// The ref (`asset/bf1/Kernel/v1.11.6/…`).
    pub name: String,
    /// Bytes its eviction frees (0 when the blob stays for another reason).
    pub bytes: u64,
    /// When it was last served or built (unix seconds).
    pub last_used: u64,
}

/// What a GC run did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcRunReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// The policy applied.
    pub policy: GcPolicy,
    /// Per version, newest first.
    pub versions: Vec<VersionPlan>,
    /// Built assets evicted for `max_bytes`, in eviction order.
    pub evicted: Vec<EvictedAsset>,
    /// Refs removed.
    pub refs_dropped: usize,
    /// Blobs deleted (including files without an index record).
    pub blobs_removed: usize,
    /// Bytes those held.
    pub freed_bytes: u64,
    /// Of `blobs_removed`: files that had no index record.
    pub orphans: usize,
    /// Blobs the store holds after.
    pub blobs_after: usize,
    /// Store content before.
    pub bytes_before: u64,
    /// Store content after.
    pub bytes_after: u64,
    /// With `max_bytes`: whether the store ends at or below it.
    pub max_bytes_reached: Option<bool>,
    /// Flattened image directories deleted from `<dataDir>/cache/images`.
    pub cache_dirs_removed: usize,
    /// Bytes on disk those held.
    pub cache_freed_bytes: u64,
    /// Things the operator should know (unattributed content, an unreachable size target).
    pub notes: Vec<String>,
}

/// The refs of one version, by category.
#[derive(Debug, Default)]
struct Owned {
    refs: BTreeMap<TalosVersion, BTreeMap<RefEntry, Category>>,
    notes: Vec<String>,
}

impl Owned {
    fn add(&mut self, v: &TalosVersion, cat: Category, refs: Vec<RefEntry>) {
        let entry = self.refs.entry(v.clone()).or_default();
        for r in refs {
            // The first category claims a ref (release before extensions before assets).
            let c = entry.entry(r).or_insert(cat);
            if cat < *c {
                *c = cat;
            }
        }
    }
}

/// Refs by repository, for attributing images.
struct RefIndex<'a> {
    snapshot: &'a StoreSnapshot,
    /// `(name, tag)` → tag ref.
    tags: HashMap<(String, String), &'a RefEntry>,
    /// name → its digest refs.
    digests: HashMap<String, Vec<&'a RefEntry>>,
}

impl<'a> RefIndex<'a> {
    fn new(snapshot: &'a StoreSnapshot) -> RefIndex<'a> {
        let mut tags = HashMap::new();
        let mut digests: HashMap<String, Vec<&RefEntry>> = HashMap::new();
        for r in &snapshot.refs {
            if r.kind == TAG_KIND {
                if let Some((name, tag)) = r.key.rsplit_once(':')
                    && !tag.contains('/')
                {
                    tags.insert((name.to_string(), tag.to_string()), r);
                }
            } else if r.kind == DIGEST_KIND
                && let Some((name, _)) = r.key.split_once('@')
            {
                digests.entry(name.to_string()).or_default().push(r);
            }
        }
        RefIndex {
            snapshot,
            tags,
            digests,
        }
    }

    /// The digest refs of `name` whose manifest `root` reaches.
    fn digest_refs(&self, name: &str, root: Digest) -> Vec<RefEntry> {
        let reach = self.snapshot.reachable([root]);
        self.digests
            .get(name)
            .into_iter()
            .flatten()
            .filter(|r| reach.contains(&r.target))
            .map(|r| (*r).clone())
            .collect()
    }

    /// `name:tag`, the manifests it reaches by digest, and its cosign signature tag.
    fn image(&self, name: &str, tag: &str) -> Vec<RefEntry> {
        let Some(tag_ref) = self.tags.get(&(name.to_string(), tag.to_string())) else {
            return Vec::new();
        };
        let mut out = vec![(*tag_ref).clone()];
        out.extend(self.digest_refs(name, tag_ref.target));
        let sig = format!("sha256-{}.sig", tag_ref.target.hex());
        if let Some(s) = self.tags.get(&(name.to_string(), sig)) {
            out.push((*s).clone());
            out.extend(self.digest_refs(name, s.target));
        }
        out
    }

    /// An image a catalog lists as `name:tag@digest`: its digest refs, and the tag when the
    /// tag still names that digest.
    fn listed(&self, name: &str, tag: Option<&str>, digest: Option<Digest>) -> Vec<RefEntry> {
        let tag_ref = tag.and_then(|t| self.tags.get(&(name.to_string(), t.to_string())));
        let mut out = Vec::new();
        match (tag_ref, digest) {
            (Some(t), Some(d)) if t.target != d => {
                out.extend(self.digest_refs(name, d));
            }
            (Some(t), _) => out.extend(self.image(name, &t.key[name.len() + 1..])),
            (None, Some(d)) => out.extend(self.digest_refs(name, d)),
            (None, None) => {}
        }
        out
    }
}

/// Runs retention over one store; shared by the CLI (direct mode), the admin API and the
/// service's periodic GC.
pub struct Retention {
    store: Store,
    catalog: ImageCatalog,
    config: Arc<Config>,
    cache_dir: PathBuf,
    running: tokio::sync::Mutex<()>,
}

impl Retention {
    /// Retention over `catalog`'s store; flattened images live in `<dataDir>/cache/images`.
    pub fn new(config: Arc<Config>, catalog: ImageCatalog) -> Retention {
        Retention {
            store: catalog.store().clone(),
            cache_dir: config.data_dir.join("cache").join("images"),
            catalog,
            config,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The store's identity (see [`Store::identity`]).
    pub fn store_identity(&self) -> Option<String> {
        self.store.identity()
    }

    /// Runs GC with `policy`, waiting for a GC in progress to finish first.
    pub async fn run(
        &self,
        policy: GcPolicy,
        referenced: &Referenced,
        dry_run: bool,
        grace: Duration,
    ) -> Result<GcRunReport, RetentionError> {
        let _one = self.running.lock().await;
        self.run_locked(policy, referenced, dry_run, grace).await
    }

    /// Like [`Retention::run`], but [`RetentionError::Busy`] when a GC is in progress.
    pub async fn try_run(
        &self,
        policy: GcPolicy,
        referenced: &Referenced,
        dry_run: bool,
        grace: Duration,
    ) -> Result<GcRunReport, RetentionError> {
        let _one = self.running.try_lock().map_err(|_| RetentionError::Busy)?;
        self.run_locked(policy, referenced, dry_run, grace).await
    }

    async fn snapshot(&self) -> Result<StoreSnapshot, RetentionError> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.snapshot()).await??)
    }

    /// Attributes the snapshot's refs to Talos versions.
    async fn classify(&self, snapshot: &StoreSnapshot) -> Owned {
        let index = RefIndex::new(snapshot);
        let mut owned = Owned::default();
        let core = &self.config.artifacts.core;
        let mut components: Vec<String> = Vec::new();
        for (_, component) in core.components.named() {
            if let Ok(name) = core.image_name(component) {
                let name = name.to_string();
                if !components.contains(&name) {
                    components.push(name);
                }
            }
        }
        let version_tags: Vec<(String, String, TalosVersion)> = index
            .tags
            .keys()
            .filter_map(|(name, tag)| {
                parse_user_version(tag)
                    .ok()
                    .map(|v| (name.clone(), tag.clone(), v))
            })
            .collect();
        for (name, tag, v) in &version_tags {
            if components.contains(name) {
                owned.add(v, Category::Release, index.image(name, tag));
            } else if name.starts_with(&format!("{INSTALLER_REGISTRY}/")) {
                owned.add(v, Category::Assets, index.image(name, tag));
            }
        }
        for r in &snapshot.refs {
            if r.kind != ASSET_KIND {
                continue;
            }
            if let Some(v) = r
                .key
                .split('/')
                .nth(2)
                .and_then(|v| parse_user_version(v).ok())
            {
                owned.add(&v, Category::Assets, vec![r.clone()]);
            }
        }
        // The extension and overlay images each version's catalogs list.
        let ext_manifest = core.image_name(&core.components.extension_manifest).ok();
        let overlay_manifest = core.image_name(&core.components.overlay_manifest).ok();
        for (name, tag, v) in &version_tags {
            let is_ext = ext_manifest
                .as_ref()
                .is_some_and(|n| &n.to_string() == name);
            let is_overlay = overlay_manifest
                .as_ref()
                .is_some_and(|n| &n.to_string() == name);
            if !is_ext && !is_overlay {
                continue;
            }
            let root = index.tags[&(name.clone(), tag.clone())].target;
            let file = if is_ext {
                "image-digests"
            } else {
                "overlays.yaml"
            };
            let listed = match self.catalog_file(&root, file).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    owned.notes.push(format!(
                        "{name}:{tag} has no {file} in the store; the images it lists are not counted as {v}'s"
                    ));
                    continue;
                }
                Err(e) => {
                    owned.notes.push(format!(
                        "cannot read {file} of {name}:{tag} ({}); the images it lists are not counted as {v}'s",
                        crate::errors::chain(&e)
                    ));
                    continue;
                }
            };
            let text = String::from_utf8_lossy(&listed);
            let images: Vec<(String, Option<String>)> = if is_ext {
                parse_extensions_catalog(&text, "", &core.registry)
                    .entries
                    .into_iter()
                    .map(|e| (e.reference, Some(e.digest)))
                    .collect()
            } else {
                match parse_overlays_catalog(&text) {
                    Ok(list) => list
                        .into_iter()
                        .map(|o| (o.reference, Some(o.digest)))
                        .collect(),
                    Err(e) => {
                        owned.notes.push(format!(
                            "cannot parse overlays.yaml of {name}:{tag}: {}",
                            crate::errors::chain(&e)
                        ));
                        Vec::new()
                    }
                }
            };
            for (reference, digest) in images {
                let Ok(r) = reference.parse::<ImageRef>() else {
                    continue;
                };
                let digest = digest.and_then(|d| d.parse::<Digest>().ok());
                let refs = index.listed(&r.name.to_string(), r.tag.as_deref(), digest);
                owned.add(v, Category::Extensions, refs);
            }
        }
        owned
    }

    /// A file of a catalog image (its linux/amd64 manifest, as the factory reads it).
    async fn catalog_file(
        &self,
        root: &Digest,
        file: &str,
    ) -> Result<Option<Vec<u8>>, flatten::FlattenError> {
        let Some(manifest) = flatten::platform_manifest(&self.catalog, root, "amd64").await? else {
            return Ok(None);
        };
        flatten::read_file(&self.catalog, &manifest, file, MAX_CATALOG_BYTES).await
    }

    /// Disk usage per Talos version and of the rest of the store.
    pub async fn usage(&self) -> Result<UsageReport, RetentionError> {
        let snapshot = self.snapshot().await?;
        let owned = self.classify(&snapshot).await;
        let mut report = usage_of(&snapshot, &owned);
        let dir = self.cache_dir.clone();
        report.extracted_cache_bytes = tokio::task::spawn_blocking(move || dir_usage(&dir)).await?;
        Ok(report)
    }

    async fn run_locked(
        &self,
        policy: GcPolicy,
        referenced: &Referenced,
        dry_run: bool,
        grace: Duration,
    ) -> Result<GcRunReport, RetentionError> {
        let snapshot = self.snapshot().await?;
        let owned = self.classify(&snapshot).await;
        let usage = usage_of(&snapshot, &owned);
        let last_used = {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || asset_last_used(&store)).await??
        };
        let mut plan = plan(
            &snapshot, &owned, &usage, policy, referenced, &last_used, grace,
        );
        let live_after = {
            let dropped: HashSet<&RefEntry> = plan.drop.iter().collect();
            let live = snapshot.live_without(&dropped, grace);
            if !grace.is_zero() {
                let without_grace = snapshot.live_without(&dropped, Duration::ZERO);
                let young = snapshot.bytes(live.iter().filter(|d| !without_grace.contains(d)));
                if young > 0 {
                    plan.notes.push(format!(
                        "{young} bytes nothing refers to are younger than the grace period ({} s) and stay until a later run",
                        grace.as_secs()
                    ));
                }
            }
            live
        };
        let report: GcReport = {
            let store = self.store.clone();
            let drop = plan.drop.clone();
            tokio::task::spawn_blocking(move || store.gc_dropping(grace, dry_run, &drop)).await??
        };
        if !dry_run {
            let store = self.store.clone();
            let catalog = self.catalog.clone();
            tokio::task::spawn_blocking(move || -> Result<(), RetentionError> {
                catalog.forget_missing()?;
                forget_unnamed_assets(&store)?;
                Ok(())
            })
            .await??;
        }
        let (cache_dirs_removed, cache_freed_bytes) = {
            let dir = self.cache_dir.clone();
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || {
                sweep_cache(&dir, &live_after, &store, grace, dry_run)
            })
            .await?
        };
        let bytes_before = snapshot.total_bytes();
        // A dry run estimates; a real run reads the store's counter (orphan files were never
        // in it, and content may have arrived meanwhile).
        let bytes_after = if dry_run {
            bytes_before.saturating_sub(report.freed_bytes)
        } else {
            self.store.total_size()
        };
        let max_bytes_reached = policy.max_bytes.map(|m| bytes_after <= m);
        if let (Some(m), Some(false)) = (policy.max_bytes, max_bytes_reached) {
            plan.notes.push(format!(
                "maxBytes {m} is not reached: the store holds {bytes_after} bytes after this run; the rest is release content of kept versions, assets assignments boot, schematics, other images or content younger than the grace period, which size eviction never removes"
            ));
        }
        if !dry_run {
            tracing::info!(
                refs_dropped = report.refs_dropped,
                blobs_removed = report.removed,
                freed_bytes = report.freed_bytes,
                cache_freed_bytes,
                bytes_after,
                versions_removed = plan.versions.iter().filter(|v| !v.keep).count(),
                assets_evicted = plan.evicted.len(),
                "store gc with retention policy finished"
            );
        }
        Ok(GcRunReport {
            dry_run,
            policy,
            versions: plan.versions,
            evicted: plan.evicted,
            refs_dropped: report.refs_dropped,
            blobs_removed: report.removed,
            freed_bytes: report.freed_bytes,
            orphans: report.orphans,
            blobs_after: snapshot
                .blobs
                .len()
                .saturating_sub(report.removed - report.orphans),
            bytes_before,
            bytes_after,
            max_bytes_reached,
            cache_dirs_removed,
            cache_freed_bytes,
            notes: owned.notes.into_iter().chain(plan.notes).collect(),
        })
    }
}

/// The service's periodic GC (`store.gc.intervalHours`): every `every`, the configured
/// `policy` with [`SERVICE_GRACE`], skipped while another GC (an admin API call) runs; one
/// log line per run.
pub fn spawn_periodic(
    retention: Arc<Retention>,
    assignments: Assignments,
    policy: GcPolicy,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let referenced = match Referenced::from_assignments(&assignments) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %crate::errors::chain(&e), "periodic store gc skipped: cannot read the assignments");
                    continue;
                }
            };
            match retention
                .try_run(policy, &referenced, false, SERVICE_GRACE)
                .await
            {
                Ok(r) => tracing::info!(
                    versions_removed = r.versions.iter().filter(|v| !v.keep).count(),
                    assets_evicted = r.evicted.len(),
                    blobs_removed = r.blobs_removed,
                    freed_bytes = r.freed_bytes + r.cache_freed_bytes,
                    bytes_after = r.bytes_after,
                    max_bytes_reached = ?r.max_bytes_reached,
                    "periodic store gc"
                ),
                Err(RetentionError::Busy) => {
                    tracing::info!("periodic store gc skipped: another GC is running")
                }
                Err(e) => {
                    tracing::error!(error = %crate::errors::chain(&e), "periodic store gc failed")
                }
            }
        }
    })
}

/// Per-version usage from the attributed refs.
fn usage_of(snapshot: &StoreSnapshot, owned: &Owned) -> UsageReport {
    let mut report = UsageReport {
        total_bytes: snapshot.total_bytes(),
        blobs: snapshot.blobs.len(),
        ..UsageReport::default()
    };
    // How many versions own each ref: a ref owned by several is not exclusive to any.
    let mut owners: HashMap<&RefEntry, usize> = HashMap::new();
    for refs in owned.refs.values() {
        for r in refs.keys() {
            *owners.entry(r).or_default() += 1;
        }
    }
    let mut per_version_blobs: Vec<HashSet<Digest>> = Vec::new();
    for (v, refs) in owned.refs.iter().rev() {
        let of = |cat: Category| -> HashSet<Digest> {
            snapshot.reachable(
                refs.iter()
                    .filter(|(_, c)| **c == cat)
                    .map(|(r, _)| r.target),
            )
        };
        let release = of(Category::Release);
        let ext: HashSet<Digest> = of(Category::Extensions)
            .difference(&release)
            .copied()
            .collect();
        let assets: HashSet<Digest> = of(Category::Assets)
            .into_iter()
            .filter(|d| !release.contains(d) && !ext.contains(d))
            .collect();
        let all: HashSet<Digest> = release.iter().chain(&ext).chain(&assets).copied().collect();
        // Everything else that stays if this version goes.
        let others = snapshot.reachable(
            snapshot.pins.iter().copied().chain(
                snapshot
                    .refs
                    .iter()
                    .filter(|r| !refs.contains_key(*r) || owners[r] > 1)
                    .map(|r| r.target),
            ),
        );
        report.versions.push(VersionUsage {
            version: v.to_string(),
            release_bytes: snapshot.bytes(&release),
            extension_bytes: snapshot.bytes(&ext),
            asset_bytes: snapshot.bytes(&assets),
            total_bytes: snapshot.bytes(&all),
            exclusive_bytes: snapshot.bytes(all.iter().filter(|d| !others.contains(d))),
            images: refs.keys().filter(|r| r.kind == TAG_KIND).count(),
            assets: refs.keys().filter(|r| r.kind == ASSET_KIND).count(),
        });
        per_version_blobs.push(all);
    }
    let mut seen: HashMap<Digest, usize> = HashMap::new();
    for set in &per_version_blobs {
        for d in set {
            *seen.entry(*d).or_default() += 1;
        }
    }
    report.shared_bytes = snapshot.bytes(seen.iter().filter(|(_, n)| **n > 1).map(|(d, _)| d));
    let owned_refs: HashSet<&RefEntry> = owners.keys().copied().collect();
    let version_blobs: HashSet<Digest> = seen.keys().copied().collect();
    let by_kind = |pred: &dyn Fn(&RefEntry) -> bool| -> HashSet<Digest> {
        snapshot.reachable(
            snapshot
                .refs
                .iter()
                .filter(|r| !owned_refs.contains(r) && pred(r))
                .map(|r| r.target),
        )
    };
    let schematics = by_kind(&|r| r.kind == SCHEMATIC_KIND);
    let squashfs = by_kind(&|r| r.kind == SQUASHFS_KIND);
    let other = by_kind(&|r| r.kind != SCHEMATIC_KIND && r.kind != SQUASHFS_KIND);
    let not_versions = |s: &HashSet<Digest>| -> u64 {
        snapshot.bytes(s.iter().filter(|d| !version_blobs.contains(d)))
    };
    report.schematic_bytes = not_versions(&schematics);
    report.build_cache_bytes = not_versions(&squashfs);
    report.other_image_bytes = snapshot.bytes(other.iter().filter(|d| {
        !version_blobs.contains(d) && !schematics.contains(d) && !squashfs.contains(d)
    }));
    let referenced = snapshot.live_without(&HashSet::new(), Duration::ZERO);
    report.unreferenced_bytes =
        snapshot.bytes(snapshot.blobs.keys().filter(|d| !referenced.contains(d)));
    report.notes = owned.notes.clone();
    report
}

/// What a run drops, and why.
#[derive(Debug, Default)]
struct Plan {
    versions: Vec<VersionPlan>,
    evicted: Vec<EvictedAsset>,
    drop: Vec<RefEntry>,
    notes: Vec<String>,
}

/// Decides which versions stay and which assets go.
fn plan(
    snapshot: &StoreSnapshot,
    owned: &Owned,
    usage: &UsageReport,
    policy: GcPolicy,
    referenced: &Referenced,
    last_used: &HashMap<String, u64>,
    grace: Duration,
) -> Plan {
    let mut out = Plan::default();
    // Newest first.
    let versions: Vec<&TalosVersion> = owned.refs.keys().rev().collect();
    let mut kept: HashSet<&TalosVersion> = HashSet::new();
    for (i, v) in versions.iter().enumerate() {
        let (keep, reason) = match policy.keep_versions {
            None => (true, "no version limit".to_string()),
            Some(n) if i < n => (true, format!("newest {n}")),
            Some(_) if policy.keep_referenced && referenced.versions.contains(*v) => {
                (true, "assigned".to_string())
            }
            Some(n) => (false, format!("older than the newest {n}")),
        };
        if keep {
            kept.insert(*v);
        }
        let usage = usage
            .versions
            .iter()
            .find(|u| u.version == v.to_string())
            .cloned()
            .unwrap_or_default();
        out.versions.push(VersionPlan {
            usage,
            keep,
            reason,
        });
    }
    let kept_refs: HashSet<&RefEntry> = owned
        .refs
        .iter()
        .filter(|(v, _)| kept.contains(v))
        .flat_map(|(_, refs)| refs.keys())
        .collect();
    let mut drop: BTreeSet<RefEntry> = owned
        .refs
        .iter()
        .filter(|(v, _)| !kept.contains(v))
        .flat_map(|(_, refs)| refs.keys())
        .filter(|r| !kept_refs.contains(r))
        .cloned()
        .collect();

    if let Some(max) = policy.max_bytes {
        evict(
            snapshot, policy, referenced, last_used, grace, max, &mut drop, &mut out,
        );
    }
    out.drop = drop.into_iter().collect();
    out
}

/// Whether an asset key belongs to an assignment: its version is assigned and its schematic
/// is an assigned one of that version (or it is a kernel, which has no schematic).
fn asset_is_assigned(key: &str, referenced: &Referenced) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    let (Some(version), Some(schematic)) = (parts.get(2), parts.get(6)) else {
        return false;
    };
    let Ok(v) = parse_user_version(version) else {
        return false;
    };
    *schematic == "-" && referenced.versions.contains(&v)
        || referenced.pairs.contains(&(schematic.to_string(), v))
}

/// Evicts built assets and cached squashfs images, least recently used first, until the
/// store would hold at most `max` bytes.
#[allow(clippy::too_many_arguments)]
fn evict(
    snapshot: &StoreSnapshot,
    policy: GcPolicy,
    referenced: &Referenced,
    last_used: &HashMap<String, u64>,
    grace: Duration,
    max: u64,
    drop: &mut BTreeSet<RefEntry>,
    out: &mut Plan,
) {
    let candidates: Vec<(u64, &RefEntry)> = {
        let mut c: Vec<(u64, &RefEntry)> = snapshot
            .refs
            .iter()
            .filter(|r| r.kind == ASSET_KIND || r.kind == SQUASHFS_KIND)
            .filter(|r| !drop.contains(*r))
            // Only single blobs: an asset is one file (never a parent of others).
            .filter(|r| snapshot.children.get(&r.target).is_none_or(Vec::is_empty))
            .filter(|r| {
                !(policy.keep_referenced
                    && r.kind == ASSET_KIND
                    && asset_is_assigned(&r.key, referenced))
            })
            .map(|r| {
                let used = last_used.get(&r.key).copied().unwrap_or_else(|| {
                    snapshot
                        .blobs
                        .get(&r.target)
                        .map_or(0, |f| f.touched_ms / 1000)
                });
                (used, r)
            })
            .collect();
        c.sort();
        c
    };
    let mut excluded: HashSet<&RefEntry> = drop.iter().collect();
    excluded.extend(candidates.iter().map(|(_, r)| *r));
    let base = snapshot.live_without(&excluded, grace);
    let mut holders: HashMap<Digest, usize> = HashMap::new();
    for (_, r) in &candidates {
        *holders.entry(r.target).or_default() += 1;
    }
    let mut projected = snapshot.bytes(
        base.iter()
            .chain(holders.keys().filter(|d| !base.contains(*d))),
    );
    let mut evicted = Vec::new();
    for (used, r) in &candidates {
        if projected <= max {
            break;
        }
        // Kept anyway (younger than the grace period, or reached from kept content):
        // unnaming it would cost a rebuild and free nothing.
        if base.contains(&r.target) {
            continue;
        }
        let n = holders.get_mut(&r.target).expect("counted");
        *n -= 1;
        let bytes = if *n == 0 {
            snapshot.bytes([&r.target])
        } else {
            0
        };
        projected = projected.saturating_sub(bytes);
        evicted.push(EvictedAsset {
            name: format!("{}/{}", r.kind, r.key),
            bytes,
            last_used: *used,
        });
        drop.insert((*r).clone());
    }
    out.evicted = evicted;
}

/// Bytes on disk under `dir` (allocated blocks, so sparse files count what they use).
fn dir_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// Deletes flattened images (`<cache>/images/<manifest hex>`) whose manifest leaves the
/// store, untouched for the grace period. Files a build already opened stay readable; a build
/// of the removed version that opens one afterwards fails once, and the next request for that
/// image pulls and flattens it again.
fn sweep_cache(
    dir: &Path,
    live: &HashSet<Digest>,
    store: &Store,
    grace: Duration,
    dry_run: bool,
) -> (usize, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let mut removed = 0;
    let mut bytes = 0;
    for e in entries.flatten() {
        let Some(d) = e
            .file_name()
            .to_str()
            .and_then(|n| Digest::from_hex(n).ok())
        else {
            continue;
        };
        if live.contains(&d) || (!dry_run && store.contains(&d)) {
            continue;
        }
        let young = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < grace);
        if young && !grace.is_zero() {
            continue;
        }
        let size = dir_usage(&e.path())
            + e.metadata()
                .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
                .unwrap_or(0);
        if dry_run {
            removed += 1;
            bytes += size;
            continue;
        }
        match std::fs::remove_dir_all(e.path()) {
            Ok(()) => {
                removed += 1;
                bytes += size;
            }
            Err(err) => {
                tracing::warn!(path = %e.path().display(), error = %crate::errors::chain(&err), "gc: cannot remove a flattened image");
            }
        }
    }
    (removed, bytes)
}
