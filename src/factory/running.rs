//! The builds running now: what the [`super::builder::Builder`] is waiting on or building,
//! for the admin API (`GET /api/v1/builds`), `/metrics` and the log.
//!
//! The builder registers each build when it starts waiting for a slot ([`RunningBuilds::register`])
//! and the registration is dropped when the build ends, however it ends. A build moves
//! through phases — `queued`, `building`, `storing` — and a build function may refine
//! `building` with what it is doing and how far it got (the initramfs build reports its
//! squashfs images as `squashfs N/M`), through the [`Progress`] it finds by its output path
//! ([`RunningBuilds::progress_of`]). Bytes written are the size of the output file at the
//! time of asking, so no build has to count them. Phase changes are logged at INFO, never
//! per chunk.
//!
//! A build that ends (built, fetched, failed, timed out) is remembered in a bounded ring of
//! the last [`RECENT_BUILDS`] finished builds ([`RunningBuilds::recent`], newest first), with
//! its times, bytes and error text, for the admin API and the web UI's builds page. The ring
//! lives in memory only: it starts empty with the service.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;

/// The running builds of one builder.
#[derive(Default)]
pub struct RunningBuilds {
    builds: Mutex<BTreeMap<u64, Entry>>,
    next: AtomicU64,
    /// The last [`RECENT_BUILDS`] finished builds, oldest first.
    finished: Mutex<VecDeque<FinishedBuild>>,
}

/// How many finished builds [`RunningBuilds::recent`] keeps.
pub const RECENT_BUILDS: usize = 100;

/// The longest error text a finished build keeps, in characters.
const MAX_ERROR_CHARS: usize = 2000;

/// How a finished build ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Built here and stored.
    Built,
    /// Fetched from a parent factory or the shared cache, verified and stored.
    Fetched,
    /// The build failed or timed out (`error` says why).
    Failed,
    /// A fetch from another factory failed (the caller may have built it instead).
    FetchFailed,
}

impl Outcome {
    /// The word the API and the page show.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Built => "built",
            Outcome::Fetched => "fetched",
            Outcome::Failed => "failed",
            Outcome::FetchFailed => "fetch-failed",
        }
    }

    /// Whether the asset is in the store now.
    pub fn succeeded(self) -> bool {
        matches!(self, Outcome::Built | Outcome::Fetched)
    }
}

/// A build that ended, as the admin API and the builds page show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FinishedBuild {
    /// The asset's cache key.
    pub asset: String,
    /// The output kind (`Initramfs`, `Image`, …), from the key.
    pub kind: String,
    /// The Talos version, from the key.
    pub version: String,
    /// The platform (`metal`, `aws`, …), from the key.
    pub platform: String,
    /// The architecture, from the key.
    pub arch: String,
    /// The schematic ID (`-` for kernels), from the key.
    pub schematic: String,
    /// When the build was asked for (unix seconds).
    pub queued_at: u64,
    /// When it ended (unix seconds).
    pub finished_at: u64,
    /// Seconds spent waiting for a build slot.
    pub queued_seconds: f64,
    /// Seconds from getting the slot to the end (0 if it never got one).
    pub seconds: f64,
    /// Size of what was stored (0 when it failed).
    pub bytes: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it failed (the error chain, at most 2000 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The parts of an asset key (`<format>/<Kind>/<version>/<platform>/<arch>/<sb>/<schematic>[/…]`):
/// kind, version, platform, arch, schematic.
pub fn key_parts(key: &str) -> (&str, &str, &str, &str, &str) {
    let mut parts = key.split('/').skip(1);
    let mut next = || parts.next().unwrap_or_default();
    let kind = next();
    let version = next();
    let platform = next();
    let arch = next();
    let _secure_boot = next();
    let schematic = next();
    (kind, version, platform, arch, schematic)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Entry {
    asset: String,
    queued_at: Instant,
    queued_unix: u64,
    started: Option<Instant>,
    output: Option<PathBuf>,
    /// The output's size when the builder last changed the phase: what is shown once the
    /// file has been moved into the store (`storing`).
    bytes_at_phase: u64,
    progress: Progress,
}

/// What a build is doing, shared between the builder and the build function.
#[derive(Clone)]
pub struct Progress {
    asset: Arc<str>,
    state: Arc<Mutex<State>>,
}

#[derive(Clone, PartialEq, Eq)]
struct State {
    phase: String,
    items: Option<(u64, u64)>,
}

impl Progress {
    fn new(asset: &str) -> Progress {
        Progress {
            asset: asset.into(),
            state: Arc::new(Mutex::new(State {
                phase: "queued".into(),
                items: None,
            })),
        }
    }

    /// Sets the phase (`building`, `squashfs`, …) and, where the build has a natural counter,
    /// the items done of a total. Logged at INFO when either changes (a counter counts whole
    /// items, such as an extension's squashfs image, never chunks).
    pub fn set(&self, phase: &str, items: Option<(u64, u64)>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let changed = state.phase != phase || state.items != items;
        state.phase = phase.to_string();
        state.items = items;
        drop(state);
        if changed {
            match items {
                Some((done, total)) => {
                    tracing::info!(asset = %self.asset, phase, done, total, "build phase")
                }
                None => tracing::info!(asset = %self.asset, phase, "build phase"),
            }
        }
    }

    fn get(&self) -> State {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A build's entry; removed when dropped.
pub struct Registration {
    builds: Arc<RunningBuilds>,
    id: u64,
    progress: Progress,
}

impl Registration {
    /// The build got its slot and writes `output`.
    pub fn started(&self, output: &Path) {
        if let Some(e) = self.builds.lock().get_mut(&self.id) {
            e.started = Some(Instant::now());
            e.output = Some(output.to_path_buf());
        }
        self.progress.set("building", None);
    }

    /// The phase (see [`Progress::set`]). The output's size now is kept for when the file
    /// is gone from the work directory (moved into the store).
    pub fn phase(&self, phase: &str) {
        if let Some(e) = self.builds.lock().get_mut(&self.id)
            && let Some(m) = e.output.as_ref().and_then(|p| std::fs::metadata(p).ok())
        {
            e.bytes_at_phase = m.len();
        }
        self.progress.set(phase, None);
    }
}

impl Registration {
    /// The build ended: it leaves the running builds and joins the recent ones with its
    /// outcome, the bytes stored (`Ok`) or the error text (`Err`).
    pub fn finish(self, outcome: Result<(Outcome, u64), (Outcome, String)>) {
        let entry = self.builds.lock().remove(&self.id);
        let Some(e) = entry else { return };
        let (kind, version, platform, arch, schematic) = key_parts(&e.asset);
        let now = Instant::now();
        let (outcome, bytes, error) = match outcome {
            Ok((o, bytes)) => (o, bytes, None),
            Err((o, text)) => {
                let text = match text.char_indices().nth(MAX_ERROR_CHARS) {
                    Some((cut, _)) => format!("{}…", &text[..cut]),
                    None => text,
                };
                (o, 0, Some(text))
            }
        };
        let finished = FinishedBuild {
            kind: kind.to_string(),
            version: version.to_string(),
            platform: platform.to_string(),
            arch: arch.to_string(),
            schematic: schematic.to_string(),
            queued_at: e.queued_unix,
            finished_at: unix_now(),
            queued_seconds: e
                .started
                .unwrap_or(now)
                .duration_since(e.queued_at)
                .as_secs_f64(),
            seconds: e
                .started
                .map_or(0.0, |s| now.duration_since(s).as_secs_f64()),
            bytes,
            outcome,
            error,
            asset: e.asset,
        };
        let mut ring = self.builds.finished_lock();
        if ring.len() >= RECENT_BUILDS {
            ring.pop_front();
        }
        ring.push_back(finished);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.builds.lock().remove(&self.id);
    }
}

/// One running build, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildView {
    /// The asset's cache key (`<format>/<Kind>/<version>/<platform>/<arch>/<sb>/<schematic>[/…]`).
    pub asset: String,
    /// The output kind (`Initramfs`, `Image`, …), from the key.
    pub kind: String,
    /// The Talos version, from the key.
    pub version: String,
    /// The schematic ID (`-` for kernels), from the key.
    pub schematic: String,
    /// `queued`, `building`, `storing`, or what the build function says it is doing.
    pub phase: String,
    /// Items done, when the phase has a counter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done: Option<u64>,
    /// Items in total, when the phase has a counter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// When the build was asked for (unix seconds).
    pub queued_at: u64,
    /// Seconds since it got its build slot (0 while queued).
    pub running_seconds: u64,
    /// Size of the output file so far.
    pub bytes_written: u64,
}

impl RunningBuilds {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.builds.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finished_lock(&self) -> std::sync::MutexGuard<'_, VecDeque<FinishedBuild>> {
        self.finished.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last [`RECENT_BUILDS`] finished builds, newest first.
    pub fn recent(&self) -> Vec<FinishedBuild> {
        self.finished_lock().iter().rev().cloned().collect()
    }

    /// Registers a build of `asset` waiting for a slot.
    pub fn register(self: &Arc<Self>, asset: &str) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let progress = Progress::new(asset);
        let queued_unix = unix_now();
        self.lock().insert(
            id,
            Entry {
                asset: asset.to_string(),
                queued_at: Instant::now(),
                queued_unix,
                started: None,
                output: None,
                bytes_at_phase: 0,
                progress: progress.clone(),
            },
        );
        tracing::info!(asset, "build queued");
        Registration {
            builds: self.clone(),
            id,
            progress,
        }
    }

    /// The progress handle of the build writing `output` (build functions know only that).
    pub fn progress_of(&self, output: &Path) -> Option<Progress> {
        self.lock()
            .values()
            .find(|e| e.output.as_deref() == Some(output))
            .map(|e| e.progress.clone())
    }

    /// Names the phase of the build writing `output` (a build function's way to say what it
    /// does when it has no counter).
    pub fn set_phase(&self, output: &Path, phase: &str) {
        if let Some(p) = self.progress_of(output) {
            p.set(phase, None);
        }
    }

    /// How many builds wait for a slot and how many build.
    pub fn counts(&self) -> (usize, usize) {
        let builds = self.lock();
        let building = builds.values().filter(|e| e.started.is_some()).count();
        (builds.len() - building, building)
    }

    /// Every running build, oldest first, with the bytes its output has now.
    pub fn snapshot(&self) -> Vec<BuildView> {
        struct Copied {
            asset: String,
            queued_unix: u64,
            queued_at: Instant,
            started: Option<Instant>,
            output: Option<PathBuf>,
            bytes_at_phase: u64,
            state: State,
        }
        let mut entries: Vec<Copied> = self
            .lock()
            .values()
            .map(|e| Copied {
                asset: e.asset.clone(),
                queued_unix: e.queued_unix,
                queued_at: e.queued_at,
                started: e.started,
                output: e.output.clone(),
                bytes_at_phase: e.bytes_at_phase,
                state: e.progress.get(),
            })
            .collect();
        entries.sort_by_key(|e| e.queued_at);
        // The file system is asked outside the lock.
        entries
            .into_iter()
            .map(|e| {
                let (kind, version, _, _, schematic) = key_parts(&e.asset);
                let (kind, version, schematic) =
                    (kind.to_string(), version.to_string(), schematic.to_string());
                let bytes_written = e
                    .output
                    .and_then(|p| std::fs::metadata(p).ok())
                    .map_or(e.bytes_at_phase, |m| m.len());
                BuildView {
                    kind,
                    version,
                    schematic,
                    phase: e.state.phase,
                    done: e.state.items.map(|i| i.0),
                    total: e.state.items.map(|i| i.1),
                    queued_at: e.queued_unix,
                    running_seconds: e.started.map_or(0, |s| s.elapsed().as_secs()),
                    bytes_written,
                    asset: e.asset,
                }
            })
            .collect()
    }
}

/// How many characters of a schematic ID the public `/metrics` label keeps.
const METRIC_SCHEMATIC_CHARS: usize = 12;

/// An asset key for the public `/metrics` label: the schematic ID (7th segment) shortened,
/// as schematic IDs are listed to admins only (the admin API has the whole key).
fn metric_asset(key: &str) -> String {
    key.split('/')
        .enumerate()
        .map(
            |(i, part)| match part.char_indices().nth(METRIC_SCHEMATIC_CHARS) {
                Some((cut, _)) if i == 6 => format!("{}…", &part[..cut]),
                _ => part.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// Metric names (`bootfactory_` like the appliance's other own metrics).
const BUILDS_RUNNING: &str = "bootfactory_builds_running";
const BUILD_BYTES: &str = "bootfactory_build_bytes_written";

/// `/metrics`: `bootfactory_builds_running{state="queued"|"building"}` and
/// `bootfactory_build_bytes_written{asset=…}` for builds holding a slot (at most
/// `build.maxConcurrency` series, so the label stays bounded; the schematic ID in it
/// shortened, see [`metric_asset`]), read at scrape time.
pub struct RunningCollector {
    builds: Arc<RunningBuilds>,
    descs: Vec<prometheus::core::Desc>,
}

impl RunningCollector {
    /// A collector over `builds`.
    pub fn new(builds: Arc<RunningBuilds>) -> RunningCollector {
        let descs = [
            (
                BUILDS_RUNNING,
                "Asset builds waiting for a slot or building.",
                "state",
            ),
            (
                BUILD_BYTES,
                "Bytes each running build has written so far.",
                "asset",
            ),
        ]
        .into_iter()
        .map(|(name, help, label)| {
            prometheus::core::Desc::new(
                name.into(),
                help.into(),
                vec![label.into()],
                Default::default(),
            )
            .expect("valid metric")
        })
        .collect();
        RunningCollector { builds, descs }
    }
}

impl prometheus::core::Collector for RunningCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let running = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                BUILDS_RUNNING,
                "Asset builds waiting for a slot or building.",
            ),
            &["state"],
        )
        .expect("valid metric");
        let bytes = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(BUILD_BYTES, "Bytes each running build has written so far."),
            &["asset"],
        )
        .expect("valid metric");
        let snapshot = self.builds.snapshot();
        let queued = snapshot.iter().filter(|b| b.phase == "queued").count();
        running.with_label_values(&["queued"]).set(queued as i64);
        running
            .with_label_values(&["building"])
            .set((snapshot.len() - queued) as i64);
        for b in snapshot.iter().filter(|b| b.phase != "queued") {
            // Added, not set: two keys may shorten to one label.
            bytes
                .with_label_values(&[metric_asset(&b.asset).as_str()])
                .add(b.bytes_written as i64);
        }
        let mut families = running.collect();
        families.extend(bytes.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_is_listed_from_queue_to_drop_with_its_bytes() {
        let builds = Arc::new(RunningBuilds::default());
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("asset");
        let key = "v1/Initramfs/v1.11.6/metal/amd64/-/abc";
        let reg = builds.register(key);
        let v = builds.snapshot();
        assert_eq!(v.len(), 1);
        assert_eq!(
            (
                v[0].phase.as_str(),
                v[0].kind.as_str(),
                v[0].version.as_str(),
                v[0].schematic.as_str()
            ),
            ("queued", "Initramfs", "v1.11.6", "abc")
        );
        assert_eq!(builds.counts(), (1, 0));
        reg.started(&out);
        std::fs::write(&out, vec![0u8; 1234]).unwrap();
        builds
            .progress_of(&out)
            .unwrap()
            .set("squashfs", Some((2, 5)));
        let v = builds.snapshot();
        assert_eq!(v[0].bytes_written, 1234);
        assert_eq!(
            (v[0].phase.as_str(), v[0].done, v[0].total),
            ("squashfs", Some(2), Some(5))
        );
        assert_eq!(builds.counts(), (0, 1));
        let text = {
            let m = crate::metrics::Metrics::new();
            m.register_collector(Box::new(RunningCollector::new(builds.clone())));
            m.render()
        };
        assert!(
            text.contains("bootfactory_builds_running{state=\"building\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "bootfactory_build_bytes_written{{asset=\"{key}\"}} 1234"
            )),
            "{text}"
        );
        drop(reg);
        assert!(builds.snapshot().is_empty());
        assert!(builds.progress_of(&out).is_none());
    }

    /// `/metrics` is public while schematic IDs are not listed to anyone but an admin (a
    /// schematic's ID is what `GET /schematics/{id}` hands its content out for): the bytes
    /// gauge names a build by its key with the schematic ID shortened.
    #[test]
    fn the_public_bytes_gauge_does_not_name_schematic_ids() {
        let builds = Arc::new(RunningBuilds::default());
        let dir = tempfile::tempdir().unwrap();
        let id = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
        let out = dir.path().join("asset");
        let reg = builds.register(&format!("v1/Image/v1.11.6/metal/amd64/-/{id}/raw.xz/1306"));
        reg.started(&out);
        std::fs::write(&out, vec![0u8; 77]).unwrap();
        // The admin API has the whole key.
        assert_eq!(builds.snapshot()[0].schematic, id);
        let m = crate::metrics::Metrics::new();
        m.register_collector(Box::new(RunningCollector::new(builds.clone())));
        let text = m.render();
        assert!(!text.contains(id), "{text}");
        assert!(
            text.contains(
                "bootfactory_build_bytes_written{asset=\"v1/Image/v1.11.6/metal/amd64/-/376567988ad3…/raw.xz/1306\"} 77"
            ),
            "{text}"
        );
    }

    /// Finished builds are kept newest first with their outcome, bytes or error, at most
    /// [`RECENT_BUILDS`] of them, and leave the running builds.
    #[test]
    fn finished_builds_are_remembered_bounded_with_their_errors() {
        let builds = Arc::new(RunningBuilds::default());
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("asset");
        let reg = builds.register("bf1/Initramfs/v1.11.6/metal/arm64/-/abc");
        reg.started(&out);
        reg.finish(Ok((Outcome::Built, 4321)));
        assert!(builds.snapshot().is_empty());
        let reg = builds.register("bf1/Kernel/v1.11.6/metal/amd64/-/-");
        reg.finish(Err((Outcome::Failed, "x".repeat(5000))));
        let recent = builds.recent();
        assert_eq!(recent.len(), 2);
        assert_eq!(
            (recent[0].kind.as_str(), recent[0].outcome, recent[0].bytes),
            ("Kernel", Outcome::Failed, 0)
        );
        assert_eq!(recent[0].seconds, 0.0, "it never got a slot");
        assert_eq!(
            recent[0].error.as_ref().unwrap().chars().count(),
            MAX_ERROR_CHARS + 1
        );
        let first = &recent[1];
        assert_eq!(
            (
                first.kind.as_str(),
                first.version.as_str(),
                first.platform.as_str(),
                first.arch.as_str(),
                first.schematic.as_str(),
                first.bytes,
                first.outcome
            ),
            (
                "Initramfs",
                "v1.11.6",
                "metal",
                "arm64",
                "abc",
                4321,
                Outcome::Built
            )
        );
        assert!(first.error.is_none());
        let json = serde_json::to_value(first).unwrap();
        assert_eq!(json["outcome"], "built");
        assert!(json.get("error").is_none());
        for i in 0..RECENT_BUILDS + 5 {
            builds
                .register(&format!("bf1/Kernel/v{i}/metal/amd64/-/-"))
                .finish(Ok((Outcome::Fetched, 1)));
        }
        let recent = builds.recent();
        assert_eq!(recent.len(), RECENT_BUILDS);
        assert_eq!(recent[0].version, format!("v{}", RECENT_BUILDS + 4));
    }

    /// While a build is being stored its output file is moved into the store: the bytes it
    /// wrote are still what it wrote, not 0.
    #[test]
    fn a_build_being_stored_keeps_its_bytes() {
        let builds = Arc::new(RunningBuilds::default());
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("asset");
        let reg = builds.register("v1/Image/v1.11.6/metal/amd64/-/abc");
        reg.started(&out);
        std::fs::write(&out, vec![0u8; 4321]).unwrap();
        reg.phase("storing");
        // The store takes the file (a rename out of the work directory).
        std::fs::rename(&out, dir.path().join("blob")).unwrap();
        let v = builds.snapshot();
        assert_eq!(v[0].phase, "storing");
        assert_eq!(v[0].bytes_written, 4321);
    }
}
