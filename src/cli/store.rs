//! `bootfactory store verify|gc`: check the content-addressed store and reclaim space.
//!
//! Both open the data directory themselves. The store's index takes an exclusive lock, so
//! while `bootfactory serve` runs on the same directory they fail to open it and change
//! nothing: nothing a running server uses can be deleted or quarantined under it.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;

use super::{Context, human_bytes, sized, store_runtime};
use crate::config::Config;
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub(super) enum StoreCommand {
    /// Re-hash every blob against its digest; corrupt ones are quarantined, missing ones
    /// dropped from the index. Exits non-zero if any was found.
    Verify {
        /// Rebuild a lost or replaced index.sled from the blob files: every blob is re-hashed
        /// and indexed, schematics are recovered from their content; image names and built
        /// assets cannot be (re-run `mirror import`; assets are rebuilt on demand).
        #[arg(long)]
        rebuild_index: bool,
    },
    /// Delete blobs nothing refers to, printing the space reclaimed.
    ///
    /// Kept: every blob that is pinned or named by a ref (imported and pulled images,
    /// schematics, built assets and squashfs images) and everything those reach (an image's
    /// manifests, configs and layers). Deleted: the rest, e.g. assets replaced by a rebuild,
    /// blobs of an unfinished `mirror import` or pull (re-run it), and blob files a crash left
    /// without an index record.
    ///
    /// Refuses to run while `bootfactory serve` uses the data directory (the store's lock):
    /// stop the server first, so nothing it is writing or serving can be deleted.
    Gc {
        /// Report what would be deleted and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub(super) fn run(cx: &Context, cmd: &StoreCommand) -> anyhow::Result<ExitCode> {
    let config = cx.load_config()?;
    let runtime = store_runtime(&config)?;
    match cmd {
        StoreCommand::Verify { rebuild_index } => runtime.block_on(verify(&config, *rebuild_index)),
        StoreCommand::Gc { dry_run } => runtime.block_on(gc(&config, *dry_run)),
    }
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

async fn gc(config: &Config, dry_run: bool) -> anyhow::Result<ExitCode> {
    let store = open(&config.data_dir, false)?;
    // No grace period: the store's lock keeps every other writer out while this runs.
    let report = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            if dry_run {
                store.gc_dry_run(Duration::ZERO)
            } else {
                store.gc(Duration::ZERO)
            }
        })
        .await??
    };
    let orphans = match report.orphans {
        0 => String::new(),
        n => format!(" ({n} without an index record)"),
    };
    if dry_run {
        println!(
            "would remove {} blobs{orphans}, reclaiming {}; nothing deleted (--dry-run)",
            report.removed,
            sized(report.freed_bytes)
        );
    } else {
        println!(
            "removed {} blobs{orphans}, reclaimed {}",
            report.removed,
            sized(report.freed_bytes)
        );
    }
    println!(
        "store holds {} blobs, {}",
        store.list_blobs()?.len(),
        sized(store.total_size())
    );
    Ok(ExitCode::SUCCESS)
}

async fn verify(config: &Config, rebuild_index: bool) -> anyhow::Result<ExitCode> {
    let dir = &config.data_dir;
    if rebuild_index {
        let store = open(dir, true)?;
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
        return Ok(ExitCode::SUCCESS);
    }
    let store = open(dir, false)?;
    let report = store.verify_all().await?;
    println!(
        "checked {} blobs, {} hashed: {} ok, {} corrupt (quarantined), {} missing, {} errors",
        report.checked,
        sized(report.bytes_hashed),
        report.ok,
        report.corrupt.len(),
        report.missing.len(),
        report.errors.len()
    );
    for c in &report.corrupt {
        eprintln!("corrupt: {} (content hashes to {})", c.digest, c.actual);
    }
    for m in &report.missing {
        eprintln!("missing: {m}");
    }
    for (d, e) in &report.errors {
        eprintln!("error: {d}: {e}");
    }
    let clean = report.corrupt.is_empty() && report.missing.is_empty() && report.errors.is_empty();
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
