//! `bootfactory mirror import|export|pull|list`: air-gap bundles and prefetching.
//!
//! These open the data directory themselves (the store's lock keeps a running
//! `bootfactory serve` and them apart) and use the same mirror as the server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use super::{Context, human_bytes, store_runtime};
use crate::config::Config;

#[derive(Subcommand, Debug)]
pub(super) enum MirrorCommand {
    /// Import an OCI image layout (directory, or tar/tar.gz/tar.zst of one) into the store.
    ///
    /// Accepts what `skopeo copy … oci:DIR` / `oci-archive:FILE`, `talosctl image
    /// cache-create`, crane and oras write. Images are recorded under the names in the
    /// layout's index.json (`org.opencontainers.image.ref.name` or `io.containerd.image.name`);
    /// entries that carry only a tag need --name. Restartable: blobs already stored are
    /// skipped, and an image is only listed once all its blobs are in.
    Import {
        /// Layout directory or archive.
        path: PathBuf,
        /// Repository for entries that name only a tag, e.g. ghcr.io/siderolabs/imager.
        #[arg(long, value_name = "REGISTRY/REPOSITORY")]
        name: Option<String>,
    },
    /// Write stored images to a tar of an OCI image layout (for another site's import).
    Export {
        /// Output file (written atomically).
        #[arg(long, short)]
        out: PathBuf,
        /// Images, e.g. ghcr.io/siderolabs/imager:v1.11.6 (missing content is pulled first
        /// unless offline).
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Prefetch images (all platforms) from their upstream registries into the store.
    Pull {
        /// Images, e.g. ghcr.io/siderolabs/installer:v1.11.6.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// List stored images with their sizes.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn run(cx: &Context, cmd: &MirrorCommand) -> anyhow::Result<ExitCode> {
    let config = cx.load_config()?;
    store_runtime(&config)?.block_on(mirror_command(config, cmd))
}

/// A terminal progress bar for long store operations (hidden when stderr is not a terminal).
struct Bar(indicatif::ProgressBar);

impl Bar {
    fn new(prefix: &str) -> Bar {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(prefix.to_string());
        Bar(bar)
    }
}

impl crate::oci::bundle::Progress for Bar {
    fn set_total(&self, bytes: u64) {
        self.0.set_length(bytes);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn message(&self, text: &str) {
        self.0.println(text);
    }
}

async fn mirror_command(config: Config, cmd: &MirrorCommand) -> anyhow::Result<ExitCode> {
    use crate::oci::ImageRef;
    use crate::oci::bundle;
    use crate::upstream::mirror::{PullProgress, Requester};

    let app = crate::server::App::open(config).await?;
    let mirror = app.state.mirror.clone();
    let catalog = mirror.catalog().clone();
    match cmd {
        MirrorCommand::Import { path, name } => {
            let name = match name {
                Some(n) => {
                    let r: ImageRef = n.parse().with_context(|| format!("invalid --name {n:?}"))?;
                    if r.tag.is_some() || r.digest.is_some() {
                        anyhow::bail!(
                            "--name takes a repository without tag or digest, e.g. ghcr.io/siderolabs/imager"
                        );
                    }
                    Some(r.name)
                }
                None => None,
            };
            let bar = Bar::new("import");
            let report = bundle::import(&catalog, path, name.as_ref(), &bar).await;
            bar.0.finish_and_clear();
            let report = report.with_context(|| format!("cannot import {}", path.display()))?;
            catalog.store().flush().await?;
            for image in &report.images {
                println!("imported {} {}", image.reference, image.digest);
            }
            for skipped in &report.skipped {
                eprintln!("skipped: {skipped}");
            }
            println!(
                "{} images; {} blobs written ({}), {} already present",
                report.images.len(),
                report.blobs_written,
                human_bytes(report.bytes_written),
                report.blobs_skipped
            );
            Ok(if report.images.is_empty() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        MirrorCommand::Export { out, images } => {
            let mut roots = Vec::new();
            for text in images {
                let r: ImageRef = text
                    .parse()
                    .with_context(|| format!("invalid image {text:?}"))?;
                let report = mirror
                    .pull(&r, Requester::Internal, &|_| {})
                    .await
                    .with_context(|| format!("cannot export {r}"))?;
                roots.push((r, report.digest.expect("pull reports the root")));
            }
            let bar = Bar::new("export");
            let written = bundle::export(&catalog, &roots, out, &bar).await;
            bar.0.finish_and_clear();
            let written = written?;
            println!(
                "wrote {} ({} images, {} of blobs)",
                out.display(),
                roots.len(),
                human_bytes(written)
            );
            Ok(ExitCode::SUCCESS)
        }
        MirrorCommand::Pull { images } => {
            for text in images {
                let r: ImageRef = text
                    .parse()
                    .with_context(|| format!("invalid image {text:?}"))?;
                let bar = Bar::new("pull");
                // Bytes of the blob downloading now already shown (blobs come one by one).
                let current = std::sync::atomic::AtomicU64::new(0);
                let progress = |p: PullProgress| {
                    use std::sync::atomic::Ordering::Relaxed;
                    match p {
                        PullProgress::Planned { bytes, .. } => bar.0.set_length(bytes),
                        PullProgress::BlobBytes { written, .. } => bar
                            .0
                            .inc(written.saturating_sub(current.swap(written, Relaxed))),
                        PullProgress::BlobDone { size, .. } => {
                            bar.0.inc(size.saturating_sub(current.swap(0, Relaxed)))
                        }
                    }
                };
                let report = mirror.pull(&r, Requester::Internal, &progress).await;
                bar.0.finish_and_clear();
                let report = report.with_context(|| format!("cannot pull {r}"))?;
                println!(
                    "pulled {r} {}: {} manifests, {} blobs fetched ({}), {} already stored",
                    report.digest.map(|d| d.to_string()).unwrap_or_default(),
                    report.manifests,
                    report.blobs_fetched,
                    human_bytes(report.bytes_fetched),
                    report.blobs_cached
                );
            }
            catalog.store().flush().await?;
            Ok(ExitCode::SUCCESS)
        }
        MirrorCommand::List { json } => {
            let entries = catalog.list()?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                println!("{:<70} {:>10}  DIGEST", "IMAGE", "SIZE");
                for e in &entries {
                    let partial = if e.missing_blobs > 0 {
                        format!(" (partial: {} blobs missing)", e.missing_blobs)
                    } else {
                        String::new()
                    };
                    println!(
                        "{:<70} {:>10}  {}{partial}",
                        e.reference,
                        human_bytes(e.stored_bytes),
                        e.digest
                    );
                }
                println!(
                    "{} images, store total {}",
                    entries.len(),
                    human_bytes(catalog.store().total_size())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
