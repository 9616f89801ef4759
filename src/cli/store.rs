//! `bootfactory store verify|gc|usage`: check the content-addressed store, reclaim space with
//! a retention policy, and show disk usage per Talos version.
//!
//! When `bootfactory serve` answers on the admin socket (`super::service::connect`), or
//! `--server`/`--token` name a service, each command goes through its admin API
//! (`/api/v1/store/*`), sending the data directory's identity (`<dataDir>/store-id`) so a
//! server that serves another directory refuses; otherwise it opens the data directory
//! itself (the index's lock refuses while another process holds it). The service's GC keeps
//! blobs younger than an hour (a pull or build in progress); the direct one needs no grace
//! period, the lock keeps every other writer out.
//!
//! `store gc` plans first: it prints, per Talos version, what stays and what goes with sizes.
//! When the plan removes Talos versions or evicts built assets it deletes only with `--yes`
//! (`--dry-run` never deletes); removing unreferenced blobs alone needs no confirmation.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::machine::ServerArgs;
use super::{Context, human_bytes, sized, store_runtime};
use crate::assign::Assignments;
use crate::assign::client::AdminClient;
use crate::config::Config;
use crate::oci::ImageCatalog;
use crate::retention::parse_size;
use crate::retention::{GcPolicy, GcRunReport, Referenced, Retention, UsageReport};
use crate::store::Store;

/// How long a command waits for the service's GC or verify (they read the whole store).
const SERVICE_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

#[derive(Subcommand, Debug)]
pub(super) enum StoreCommand {
    /// Re-hash every blob against its digest; corrupt ones are quarantined, missing ones
    /// dropped from the index. Exits non-zero if any was found.
    Verify {
        /// Rebuild a lost or replaced index.sled from the blob files: every blob is re-hashed
        /// and indexed, schematics are recovered from their content; image names and built
        /// assets cannot be (re-run `mirror import`; assets are rebuilt on demand). Needs the
        /// data directory to itself (stop the server).
        #[arg(long)]
        rebuild_index: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Apply the retention policy and delete blobs nothing refers to, printing per Talos
    /// version what stays and what goes, with sizes.
    ///
    /// Policy (defaults from store.gc.*): keep the newest N Talos versions' release images,
    /// extension images and built assets (--keep-versions; 0 = every version), never the
    /// versions and assets machine assignments boot (--keep-referenced), then evict built
    /// assets least recently used first down to --max-size. Schematics are never removed.
    /// Then every blob that is not pinned or named by a ref (and not reached from one) is
    /// deleted: assets replaced by a rebuild, blobs of an unfinished import or pull, files a
    /// crash left without an index record.
    ///
    /// When the plan removes versions or assets, nothing is deleted without --yes.
    Gc {
        /// Print the plan and delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete what the plan removes (needed when it removes versions or built assets).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Keep the newest N Talos versions (0 = every version) [default: store.gc.keepVersions].
        #[arg(long, value_name = "N")]
        keep_versions: Option<usize>,
        /// Keep the versions and assets assignments boot [default: store.gc.keepReferenced].
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        keep_referenced: Option<bool>,
        /// Evict built assets down to this store size: bytes or 500M, 20G, 1T (powers of
        /// 1024; 0 = no target) [default: store.gc.maxBytes].
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_size: Option<u64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Disk usage per Talos version: release images, extensions and built assets (each blob
    /// once per version), what removing each would free, and the rest of the store.
    #[command(alias = "df")]
    Usage {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub(super) fn run(cx: &Context, cmd: &StoreCommand) -> anyhow::Result<ExitCode> {
    let config = cx.load_config()?;
    let runtime = store_runtime(&config)?;
    runtime.block_on(async {
        match cmd {
            StoreCommand::Verify {
                rebuild_index: true,
                ..
            } => rebuild(&config).await,
            StoreCommand::Verify { json, server, .. } => verify(&config, *json, server).await,
            StoreCommand::Gc {
                dry_run,
                yes,
                keep_versions,
                keep_referenced,
                max_size,
                json,
                server,
            } => {
                let configured = GcPolicy::from_config(&config.store.gc);
                let policy = GcPolicy {
                    keep_versions: match keep_versions {
                        Some(0) => None,
                        Some(n) => Some(*n),
                        None => configured.keep_versions,
                    },
                    keep_referenced: keep_referenced.unwrap_or(configured.keep_referenced),
                    max_bytes: match max_size {
                        Some(0) => None,
                        Some(n) => Some(*n),
                        None => configured.max_bytes,
                    },
                };
                gc(&config, policy, *dry_run, *yes, *json, server).await
            }
            StoreCommand::Usage { json, server } => usage(&config, *json, server).await,
        }
    })
}

/// Opens the store, naming the likely cause when it is in use.
fn open(dir: &Path, rebuild: bool) -> anyhow::Result<Store> {
    // As root on the service's directory: write as its owner for the rest of the command
    // (it writes nothing outside the data directory), so the service can open it again.
    if let Some(owner) = crate::server::act_as_data_dir_owner(dir)? {
        std::mem::forget(owner);
    }
    crate::server::check_data_dir(dir)?;
    let store = if rebuild {
        Store::open_for_rebuild(dir)
    } else {
        Store::open(dir)
    };
    store.with_context(|| {
        format!(
            "cannot open the store in {} (if bootfactory serve or another bootfactory command uses this data directory, stop it first)",
            dir.display()
        )
    })
}

/// Where a command runs: on the store itself, or through the service that holds it.
enum Target {
    Direct(Store),
    Service {
        client: AdminClient,
        store_id: Option<String>,
    },
}

/// Where to run: the running service when it answers on the admin socket (or `--server`/
/// `--token` name one), else the data directory opened here.
async fn target(config: &Config, server: &ServerArgs) -> anyhow::Result<Target> {
    let dir = &config.data_dir;
    let store_id = crate::store::read_identity(dir);
    if server.server.is_some() || server.token.is_some() {
        let client = super::machine::http_client(config, server)?;
        return Ok(Target::Service { client, store_id });
    }
    if let Some(client) = super::service::connect(config).await? {
        return Ok(Target::Service { client, store_id });
    }
    Ok(Target::Direct(open(dir, false)?))
}

/// `method path` through the service with a deadline fit for a whole-store operation.
async fn call(
    client: &AdminClient,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
    what: &str,
) -> anyhow::Result<Value> {
    let mut req = client.request(method, path).timeout(SERVICE_TIMEOUT);
    if let Some(b) = body {
        req = req.json(b);
    }
    Ok(client.send(req, what).await?.unwrap_or_default())
}

fn usage_path(store_id: Option<&str>) -> String {
    match store_id {
        Some(id) => format!("/api/v1/store/usage?storeId={id}"),
        None => "/api/v1/store/usage".to_string(),
    }
}

/// Retention over a store this process opened, with what its assignments boot.
fn direct_retention(config: &Config, store: &Store) -> anyhow::Result<(Retention, Referenced)> {
    let catalog = ImageCatalog::new(store.clone()).context("cannot open the image catalog")?;
    let assignments = Assignments::open(store, config.pxe.unassigned)
        .context("cannot open the assignment table")?;
    let referenced =
        Referenced::from_assignments(&assignments).context("cannot read the assignments")?;
    Ok((
        Retention::new(std::sync::Arc::new(config.clone()), catalog),
        referenced,
    ))
}

async fn gc(
    config: &Config,
    policy: GcPolicy,
    dry_run: bool,
    yes: bool,
    json_out: bool,
    server: &ServerArgs,
) -> anyhow::Result<ExitCode> {
    let target = target(config, server).await?;
    let run = |dry: bool| {
        let target = &target;
        async move {
            match target {
                Target::Direct(store) => {
                    let (retention, referenced) = direct_retention(config, store)?;
                    let report = retention
                        .run(policy, &referenced, dry, Duration::ZERO)
                        .await?;
                    if !dry {
                        store.flush().await?;
                    }
                    anyhow::Ok(report)
                }
                Target::Service { client, store_id } => {
                    let body = json!({
                        "dryRun": dry,
                        "keepVersions": policy.keep_versions.unwrap_or(0),
                        "keepReferenced": policy.keep_referenced,
                        "maxBytes": policy.max_bytes.unwrap_or(0),
                        "storeId": store_id,
                    });
                    let v = call(
                        client,
                        reqwest::Method::POST,
                        "/api/v1/store/gc",
                        Some(&body),
                        "store gc",
                    )
                    .await?;
                    Ok(serde_json::from_value::<GcRunReport>(v)
                        .context("store gc: the server's report is not understood")?)
                }
            }
        }
    };
    let plan = run(true).await?;
    let removes = plan.versions.iter().any(|v| !v.keep) || !plan.evicted.is_empty();
    if dry_run || (removes && !yes) {
        if json_out {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print!("{}", gc_text(&plan, !dry_run));
        }
        if !dry_run {
            eprintln!(
                "nothing deleted: the plan removes {} Talos versions and {} built assets; re-run with --yes to delete (or --dry-run to only plan)",
                plan.versions.iter().filter(|v| !v.keep).count(),
                plan.evicted.len()
            );
            return Ok(ExitCode::FAILURE);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = run(false).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", gc_text(&report, false));
    }
    Ok(ExitCode::SUCCESS)
}

/// A size for a table cell.
fn cell(n: u64) -> String {
    human_bytes(n)
}

/// The plan or result of a GC run, for people.
/// `confirm`: the plan is shown because it needs `--yes`, not because of `--dry-run`.
fn gc_text(r: &GcRunReport, confirm: bool) -> String {
    let mut out = String::new();
    let policy = format!(
        "policy: keep {}, {}assigned versions and assets kept, {}\n",
        r.policy
            .keep_versions
            .map_or("every Talos version".to_string(), |n| format!(
                "the newest {n} Talos versions"
            )),
        if r.policy.keep_referenced { "" } else { "no " },
        r.policy
            .max_bytes
            .map_or("no size target".to_string(), |m| format!(
                "size target {}",
                sized(m)
            )),
    );
    out.push_str(&policy);
    if !r.versions.is_empty() {
        out.push_str(&format!(
            "{:<16} {:<7} {:<28} {:>10} {:>10} {:>10} {:>10} {:>12}\n",
            "VERSION",
            "ACTION",
            "REASON",
            "RELEASE",
            "EXTENSIONS",
            "ASSETS",
            "TOTAL",
            "FREED ALONE"
        ));
        for v in &r.versions {
            out.push_str(&format!(
                "{:<16} {:<7} {:<28} {:>10} {:>10} {:>10} {:>10} {:>12}\n",
                v.usage.version,
                if v.keep { "keep" } else { "remove" },
                v.reason,
                cell(v.usage.release_bytes),
                cell(v.usage.extension_bytes),
                cell(v.usage.asset_bytes),
                cell(v.usage.total_bytes),
                cell(v.usage.exclusive_bytes),
            ));
        }
    }
    if !r.evicted.is_empty() {
        out.push_str(&format!(
            "evicted built assets (least recently used first): {}, {}\n",
            r.evicted.len(),
            sized(r.evicted.iter().map(|e| e.bytes).sum())
        ));
        for e in &r.evicted {
            out.push_str(&format!("  {} ({})\n", e.name, cell(e.bytes)));
        }
    }
    let orphans = match r.orphans {
        0 => String::new(),
        n => format!(" ({n} without an index record)"),
    };
    if r.dry_run {
        out.push_str(&format!(
            "would remove {} blobs{orphans}, reclaiming {}; nothing deleted ({})\n",
            r.blobs_removed,
            sized(r.freed_bytes),
            if confirm {
                "not confirmed"
            } else {
                "--dry-run"
            }
        ));
    } else {
        out.push_str(&format!(
            "removed {} blobs{orphans}, reclaimed {}\n",
            r.blobs_removed,
            sized(r.freed_bytes)
        ));
    }
    if r.cache_dirs_removed > 0 {
        out.push_str(&format!(
            "flattened image cache: {} {} directories, {}\n",
            if r.dry_run { "would remove" } else { "removed" },
            r.cache_dirs_removed,
            sized(r.cache_freed_bytes)
        ));
    }
    out.push_str(&format!(
        "store holds {} blobs, {}{}\n",
        r.blobs_after,
        sized(r.bytes_after),
        if r.dry_run { " after this run" } else { "" }
    ));
    for n in &r.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

async fn usage(config: &Config, json_out: bool, server: &ServerArgs) -> anyhow::Result<ExitCode> {
    let report: UsageReport = match target(config, server).await? {
        Target::Direct(store) => {
            let (retention, _) = direct_retention(config, &store)?;
            retention.usage().await?
        }
        Target::Service { client, store_id } => {
            let v = call(
                &client,
                reqwest::Method::GET,
                &usage_path(store_id.as_deref()),
                None,
                "store usage",
            )
            .await?;
            serde_json::from_value(v)
                .context("store usage: the server's report is not understood")?
        }
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:>12} {:>12} {:>12} {:>12} {:>14}",
        "VERSION", "RELEASE", "EXTENSIONS", "ASSETS", "TOTAL", "FREED ALONE"
    );
    for v in &report.versions {
        println!(
            "{:<16} {:>12} {:>12} {:>12} {:>12} {:>14}",
            v.version,
            cell(v.release_bytes),
            cell(v.extension_bytes),
            cell(v.asset_bytes),
            cell(v.total_bytes),
            cell(v.exclusive_bytes)
        );
    }
    println!("shared by several versions: {}", sized(report.shared_bytes));
    println!("other images: {}", sized(report.other_image_bytes));
    println!("schematics: {}", sized(report.schematic_bytes));
    println!(
        "extension squashfs cache: {}",
        sized(report.build_cache_bytes)
    );
    println!(
        "unreferenced (a plain store gc deletes it): {}",
        sized(report.unreferenced_bytes)
    );
    println!(
        "store holds {} blobs, {}",
        report.blobs,
        sized(report.total_bytes)
    );
    println!(
        "flattened images in <dataDir>/cache/images (outside the store): {}",
        sized(report.extracted_cache_bytes)
    );
    for n in &report.notes {
        println!("note: {n}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn rebuild(config: &Config) -> anyhow::Result<ExitCode> {
    let store = open(&config.data_dir, true)?;
    let rebuild = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.rebuild_index()).await??
    };
    let schematics = crate::schematic::SchematicStore::new(store.clone())
        .recover_refs()
        .await?;
    store.flush().await?;
    println!(
        "re-indexed {} blobs ({} new to the index, {}), {} quarantined, {} files ignored",
        rebuild.indexed,
        rebuild.added,
        human_bytes(rebuild.bytes),
        rebuild.quarantined.len(),
        rebuild.ignored.len()
    );
    for q in &rebuild.quarantined {
        eprintln!("quarantined: {q} (content does not match its name)");
    }
    println!("recovered {schematics} schematics");
    println!(
        "image names and built assets are not recoverable from content: re-run `bootfactory mirror import` for your bundles (stored blobs are not copied again); assets are rebuilt on demand"
    );
    Ok(ExitCode::SUCCESS)
}

async fn verify(config: &Config, json_out: bool, server: &ServerArgs) -> anyhow::Result<ExitCode> {
    let report: Value = match target(config, server).await? {
        Target::Direct(store) => serde_json::to_value(store.verify_all().await?)?,
        Target::Service { client, store_id } => {
            let path = match &store_id {
                Some(id) => format!("/api/v1/store/verify?storeId={id}"),
                None => "/api/v1/store/verify".to_string(),
            };
            call(&client, reqwest::Method::POST, &path, None, "store verify").await?
        }
    };
    let parsed = VerifyView::from_json(&report)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "checked {} blobs, {} hashed: {} ok, {} corrupt (quarantined), {} missing, {} errors",
            parsed.checked,
            sized(parsed.bytes_hashed),
            parsed.ok,
            parsed.corrupt.len(),
            parsed.missing.len(),
            parsed.errors.len()
        );
        for (digest, actual) in &parsed.corrupt {
            eprintln!("corrupt: {digest} (content hashes to {actual})");
        }
        for m in &parsed.missing {
            eprintln!("missing: {m}");
        }
        for (d, e) in &parsed.errors {
            eprintln!("error: {d}: {e}");
        }
    }
    let clean = parsed.corrupt.is_empty() && parsed.missing.is_empty() && parsed.errors.is_empty();
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A `store::VerifyReport` read back from its JSON (the same shape locally and from the service).
struct VerifyView {
    checked: u64,
    ok: u64,
    bytes_hashed: u64,
    corrupt: Vec<(String, String)>,
    missing: Vec<String>,
    errors: Vec<(String, String)>,
}

impl VerifyView {
    fn from_json(v: &Value) -> anyhow::Result<VerifyView> {
        let num = |k: &str| v.get(k).and_then(Value::as_u64);
        let strs = |x: &Value| x.as_str().unwrap_or_default().to_string();
        let (Some(checked), Some(ok), Some(bytes_hashed)) =
            (num("checked"), num("ok"), num("bytes_hashed"))
        else {
            bail!("store verify: the report is not understood: {v}");
        };
        let list = |k: &str| {
            v.get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        Ok(VerifyView {
            checked,
            ok,
            bytes_hashed,
            corrupt: list("corrupt")
                .iter()
                .map(|c| (strs(&c["digest"]), strs(&c["actual"])))
                .collect(),
            missing: list("missing").iter().map(strs).collect(),
            errors: list("errors")
                .iter()
                .map(|e| (strs(&e[0]), strs(&e[1])))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("12345"), Ok(12345));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert_eq!(parse_size("4KB"), Ok(4 << 10));
        assert!(parse_size("").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
