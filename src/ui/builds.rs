//! The builds page's content (`/ui/builds`, rendered by `http::ui::builds`): the builds
//! running now with their progress, the recent finished builds with durations and errors,
//! the built assets the store holds per schematic and version, and warming the cache.
//!
//! Everything here is read from the factory's own services, never recomputed:
//! - running and recent builds: [`crate::factory::running::RunningBuilds`] (the recent ones
//!   are the builder's in-memory ring of the last 100, empty after a restart);
//! - cached assets: [`crate::factory::builder::cached_assets`] (the store's asset refs, their
//!   blob sizes and last-used times — what store GC's size eviction reads too);
//! - a warm-up: [`Factory::warm_check`] then [`crate::factory::warm::spawn_checked`], the
//!   two halves of [`Factory::warm`] behind `POST /api/v1/warm` and warm-on-assign. The checks
//!   (request, version, boot chain) are always waited for, so a broken chain is answered at
//!   once; the page then waits for the builds' report up to [`WARM_WAIT`] (or not at all
//!   when asked to), and after that the warm-up goes on in the background: its builds show
//!   as running and, once done, as recent builds (a failure there too, with its error).
//!
//! This module only shapes that data for people: sizes in KiB/MiB/GiB, durations, UTC times.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::factory::builder::{CachedAsset, cached_assets};
use crate::factory::running::{BuildView, FinishedBuild};
use crate::factory::service::Factory;
use crate::factory::warm::{WarmError, WarmReport, WarmRequest, spawn_checked};
use crate::store::StoreError;
use crate::version::TalosVersion;

/// How long the page waits for a warm-up's report before answering that it goes on in the
/// background (builds of large images take minutes; proxies time out at about a minute).
pub const WARM_WAIT: Duration = Duration::from_secs(30);

/// A size for people: `12.3 MiB`.
pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// A duration for people: `0.4 s`, `12 s`, `3 min 05 s`, `1 h 02 min`.
pub fn human_seconds(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "-".into();
    }
    if s < 10.0 {
        return format!("{s:.1} s");
    }
    let whole = s.round() as u64;
    match whole {
        0..60 => format!("{whole} s"),
        60..3600 => format!("{} min {:02} s", whole / 60, whole % 60),
        _ => format!("{} h {:02} min", whole / 3600, (whole % 3600) / 60),
    }
}

/// Unix seconds as `2026-12-07 10:43:06 UTC`.
pub fn utc(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(
            || "-".into(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

/// A schematic ID as the tables show it: its first 12 characters (the whole ID is in the
/// cell's title and the warm form), or what stands for kernels.
fn short(schematic: &str) -> String {
    if schematic == "-" {
        return "(kernel, any schematic)".into();
    }
    match schematic.char_indices().nth(12) {
        Some((cut, _)) => format!("{}…", &schematic[..cut]),
        None => schematic.to_string(),
    }
}

/// A running build, for the page.
#[derive(Debug, Clone)]
pub struct RunningRow {
    /// The asset's cache key.
    pub asset: String,
    /// `Initramfs`, `Image`, …
    pub kind: String,
    /// The Talos version.
    pub version: String,
    /// The schematic ID.
    pub schematic: String,
    /// Its short form.
    pub schematic_short: String,
    /// `queued`, `building`, `squashfs`, `storing`, `fetching`, …
    pub phase: String,
    /// Items done and in total, when the phase has a counter.
    pub items: Option<(u64, u64)>,
    /// Bytes written so far, for people.
    pub bytes: String,
    /// Time since it got its build slot, for people.
    pub elapsed: String,
    /// Still waiting for a build slot.
    pub queued: bool,
}

impl From<BuildView> for RunningRow {
    fn from(b: BuildView) -> RunningRow {
        RunningRow {
            schematic_short: short(&b.schematic),
            items: b.done.zip(b.total),
            bytes: human_bytes(b.bytes_written),
            // Whole seconds: no decimal that would pretend more precision.
            elapsed: match b.running_seconds {
                0..60 => format!("{} s", b.running_seconds),
                n => human_seconds(n as f64),
            },
            queued: b.phase == "queued",
            asset: b.asset,
            kind: b.kind,
            version: b.version,
            schematic: b.schematic,
            phase: b.phase,
        }
    }
}

/// A finished build, for the page.
#[derive(Debug, Clone)]
pub struct RecentRow {
    /// The asset's cache key.
    pub asset: String,
    /// `Initramfs`, `Image`, …
    pub kind: String,
    /// The Talos version.
    pub version: String,
    /// `metal-amd64`.
    pub target: String,
    /// The schematic ID.
    pub schematic: String,
    /// Its short form.
    pub schematic_short: String,
    /// When it ended (UTC).
    pub finished: String,
    /// Building time, for people.
    pub duration: String,
    /// Waiting time for a slot, when there was any worth showing.
    pub queued: Option<String>,
    /// What it stored, for people (empty when it failed).
    pub bytes: String,
    /// `built`, `fetched`, `failed`, `fetch-failed`.
    pub outcome: &'static str,
    /// The asset is in the store now.
    pub ok: bool,
    /// Why it failed.
    pub error: Option<String>,
}

impl From<FinishedBuild> for RecentRow {
    fn from(b: FinishedBuild) -> RecentRow {
        let ok = b.outcome.succeeded();
        RecentRow {
            target: format!("{}-{}", b.platform, b.arch),
            schematic_short: short(&b.schematic),
            finished: utc(b.finished_at),
            duration: human_seconds(b.seconds),
            queued: (b.queued_seconds >= 0.5).then(|| human_seconds(b.queued_seconds)),
            bytes: if ok {
                human_bytes(b.bytes)
            } else {
                String::new()
            },
            outcome: b.outcome.as_str(),
            ok,
            error: b.error,
            asset: b.asset,
            kind: b.kind,
            version: b.version,
            schematic: b.schematic,
        }
    }
}

/// The page's live part: what builds now and what finished lately (newest first).
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Running builds, oldest first.
    pub running: Vec<RunningRow>,
    /// Finished builds since the service started (at most 100), newest first.
    pub recent: Vec<RecentRow>,
}

impl Live {
    /// A key of the newest finished build (its finish time and asset; empty before the
    /// first): the page's script fetches the cached assets again when it changes.
    pub fn newest(&self) -> String {
        self.recent
            .first()
            .map(|r| format!("{} {}", r.finished, r.asset))
            .unwrap_or_default()
    }
}

/// The running and recent builds of `factory`'s builder.
pub fn live(factory: &Factory) -> Live {
    let builds = factory.builder().running();
    Live {
        running: builds.snapshot().into_iter().map(Into::into).collect(),
        recent: builds.recent().into_iter().map(Into::into).collect(),
    }
}

/// One built asset in the store, for the page.
#[derive(Debug, Clone)]
pub struct CachedRow {
    /// `Initramfs`, `Kernel`, `Image`, …
    pub kind: String,
    /// `metal-amd64`.
    pub target: String,
    /// The rest of the key (disk format and size), if any.
    pub detail: String,
    /// The whole cache key.
    pub key: String,
    /// Its size, for people.
    pub size: String,
    /// When it was last served or built (UTC, to the hour), or `-`.
    pub last_used: String,
}

/// The built assets of one schematic and version.
#[derive(Debug, Clone)]
pub struct CachedGroup {
    /// The schematic ID (`-`: kernels, shared by every schematic).
    pub schematic: String,
    /// Its short form.
    pub schematic_short: String,
    /// The Talos version.
    pub version: String,
    /// Its assets, by key.
    pub assets: Vec<CachedRow>,
    /// Their sizes summed, for people.
    pub total: String,
}

/// All built assets, grouped.
#[derive(Debug, Clone, Default)]
pub struct Cached {
    /// Per schematic and version: newest version first, then by schematic.
    pub groups: Vec<CachedGroup>,
    /// How many assets.
    pub count: usize,
    /// Their sizes summed (a blob two keys share counts twice), for people.
    pub total: String,
}

/// Groups `assets` by schematic and version.
pub fn group(assets: Vec<CachedAsset>) -> Cached {
    let count = assets.len();
    let total: u64 = assets.iter().map(|a| a.size).sum();
    let mut by: BTreeMap<(String, String), Vec<CachedAsset>> = BTreeMap::new();
    for a in assets {
        by.entry((a.version.clone(), a.schematic.clone()))
            .or_default()
            .push(a);
    }
    let mut groups: Vec<(Option<TalosVersion>, CachedGroup)> = by
        .into_iter()
        .map(|((version, schematic), mut assets)| {
            assets.sort_by(|a, b| a.key.cmp(&b.key));
            let sum: u64 = assets.iter().map(|a| a.size).sum();
            let rows = assets
                .into_iter()
                .map(|a| CachedRow {
                    target: format!("{}-{}", a.platform, a.arch),
                    detail: a.key.splitn(8, '/').nth(7).unwrap_or_default().to_string(),
                    size: human_bytes(a.size),
                    last_used: a.last_used.map_or_else(|| "-".into(), utc),
                    kind: a.kind,
                    key: a.key,
                })
                .collect();
            (
                version.parse().ok(),
                CachedGroup {
                    schematic_short: short(&schematic),
                    schematic,
                    version,
                    assets: rows,
                    total: human_bytes(sum),
                },
            )
        })
        .collect();
    // Newest version first; unparsable versions last; within a version, by schematic.
    groups.sort_by(|(va, a), (vb, b)| {
        vb.cmp(va)
            .then_with(|| a.version.cmp(&b.version))
            .then_with(|| a.schematic.cmp(&b.schematic))
    });
    Cached {
        groups: groups.into_iter().map(|(_, g)| g).collect(),
        count,
        total: human_bytes(total),
    }
}

/// The built assets `factory`'s store holds, grouped (read off the async runtime: the index
/// scan is blocking).
pub async fn cached(factory: &Factory) -> Result<Cached, StoreError> {
    let store = factory.store().clone();
    let assets = tokio::task::spawn_blocking(move || cached_assets(&store))
        .await
        .map_err(|e| StoreError::Index(format!("listing built assets: {e}")))??;
    Ok(group(assets))
}

/// What the warm form offers.
#[derive(Debug, Clone, Default)]
pub struct WarmChoices {
    /// Known schematic IDs.
    pub schematics: Vec<String>,
    /// Talos versions the factory serves, newest first.
    pub versions: Vec<String>,
    /// Why a list is empty or incomplete, in words.
    pub notes: Vec<String>,
}

/// The form's choices: `schematics` (the store's IDs) and the versions the factory serves.
pub async fn warm_choices(factory: &Factory, schematics: Vec<String>) -> WarmChoices {
    let mut notes = Vec::new();
    let versions = match factory.artifacts().versions().await {
        Ok(mut v) => {
            v.sort_by(|a, b| b.cmp(a));
            v.iter().map(ToString::to_string).collect()
        }
        Err(e) => {
            notes.push(format!(
                "the Talos versions could not be listed ({}): type one",
                crate::errors::chain(&e)
            ));
            Vec::new()
        }
    };
    if schematics.is_empty() {
        notes.push(
            "no schematic is known yet: create one with the Image Factory wizard or POST /schematics"
                .into(),
        );
    }
    WarmChoices {
        schematics,
        versions,
        notes,
    }
}

/// How a warm-up from the page went.
#[derive(Debug)]
pub enum WarmOutcome {
    /// It finished within the wait: what it built or found.
    Done(WarmReport),
    /// It failed within the wait.
    Failed(WarmError),
    /// It goes on in the background (not waited for, or longer than the wait).
    Continuing,
    /// Its task ended without a result (a panic; the log has it).
    Lost(String),
}

/// Checks the warm-up of `request` (request, version, boot chain: a failure is answered at
/// once), then starts its builds (the same service as `POST /api/v1/warm` and
/// warm-on-assign) and waits for them up to `wait` (`None`: not at all). `who` names the
/// caller in the log.
pub async fn warm(
    factory: Arc<Factory>,
    request: WarmRequest,
    wait: Option<Duration>,
    who: &str,
) -> WarmOutcome {
    let checked = match factory.warm_check(&request).await {
        Ok(c) => c,
        Err(e) => return WarmOutcome::Failed(e),
    };
    let task = spawn_checked(factory, checked, format!("warm-up from the {who}"));
    let Some(wait) = wait else {
        return WarmOutcome::Continuing;
    };
    match tokio::time::timeout(wait, task).await {
        Ok(Ok(Ok(report))) => WarmOutcome::Done(report),
        Ok(Ok(Err(e))) => WarmOutcome::Failed(e),
        Ok(Err(e)) => WarmOutcome::Lost(e.to_string()),
        // The task goes on: dropping its handle does not cancel it.
        Err(_) => WarmOutcome::Continuing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_durations_and_times_read_well() {
        assert_eq!(human_seconds(0.42), "0.4 s");
        assert_eq!(human_seconds(12.4), "12 s");
        assert_eq!(human_seconds(185.0), "3 min 05 s");
        assert_eq!(human_seconds(3720.0), "1 h 02 min");
        assert_eq!(human_seconds(f64::NAN), "-");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(u64::MAX), "-");
        assert_eq!(short("-"), "(kernel, any schematic)");
        assert_eq!(short("376567988ad370138ad8"), "376567988ad3…");
    }

    fn asset(key: &str, size: u64) -> CachedAsset {
        let (kind, version, platform, arch, schematic) = crate::factory::running::key_parts(key);
        CachedAsset {
            key: key.into(),
            kind: kind.into(),
            version: version.into(),
            platform: platform.into(),
            arch: arch.into(),
            schematic: schematic.into(),
            size,
            last_used: Some(0),
        }
    }

    #[test]
    fn cached_assets_are_grouped_per_version_newest_first_and_schematic() {
        let c = group(vec![
            asset("bf1/Kernel/v1.8.4/metal/amd64/-/-", 100),
            asset("bf1/Initramfs/v1.11.6/metal/amd64/-/abc", 2048),
            asset("bf1/Image/v1.11.6/metal/amd64/-/abc/raw.xz/1306", 1024),
            asset("bf1/Initramfs/v1.8.4/metal/arm64/-/abc", 1),
            asset("bf1/Kernel/v1.11.6/metal/amd64/-/-", 4),
        ]);
        assert_eq!(c.count, 5);
        let heads: Vec<(&str, &str, usize)> = c
            .groups
            .iter()
            .map(|g| (g.version.as_str(), g.schematic.as_str(), g.assets.len()))
            .collect();
        assert_eq!(
            heads,
            [
                ("v1.11.6", "-", 1),
                ("v1.11.6", "abc", 2),
                ("v1.8.4", "-", 1),
                ("v1.8.4", "abc", 1)
            ]
        );
        assert_eq!(c.groups[1].total, "3.00 KiB");
        let image = &c.groups[1].assets[0];
        assert_eq!(
            (
                image.kind.as_str(),
                image.detail.as_str(),
                image.target.as_str()
            ),
            ("Image", "raw.xz/1306", "metal-amd64")
        );
    }
}
