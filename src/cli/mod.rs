//! The command line: `bootfactory serve`, `bootfactory schematic …`, `bootfactory config show`.
//!
//! Configuration flags are generated from [`crate::config::keys::KEYS`], so every config key
//! has a `--flag` and a `BOOTFACTORY_*` variable without hand-written plumbing.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{Config, Override, keys};

/// `bootfactory --version`: version, commit, linkage and capabilities.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BOOTFACTORY_COMMIT"),
    ", ",
    env!("BOOTFACTORY_LINKAGE"),
    ", ipxe ",
    env!("BOOTFACTORY_IPXE_VERSION"),
    ", features: ",
    env!("BOOTFACTORY_FEATURES"),
    ")"
);

const ABOUT: &str = "Self-hosted Talos Linux image factory and network-boot appliance.";

const LONG_ABOUT: &str = "\
bootfactory is a self-hosted Talos Linux image factory and network-boot appliance in one
binary. It speaks Sidero Image Factory's HTTP API (schematics, /image, /pxe), keeps every
artifact in a local content-addressed store, and (when configured) answers PXE clients.

Quick start:
  bootfactory serve --data-dir ./data            # HTTP on 0.0.0.0:8080
  curl -X POST --data-binary @schematics/example.yaml http://127.0.0.1:8080/schematics
  bootfactory schematic id schematics/example.yaml

Every configuration key can be set in a YAML file (--config), an environment variable
(BOOTFACTORY_*), or a flag; flags win over variables, variables over the file.";

#[derive(Parser, Debug)]
#[command(name = "bootfactory", version = VERSION, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    /// YAML configuration file (keys as in `bootfactory config show`).
    #[arg(long, global = true, env = "BOOTFACTORY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the appliance: HTTP factory API (and network-boot services when configured).
    Serve,
    /// Work with schematics offline.
    #[command(subcommand)]
    Schematic(SchematicCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage the image store: import and export air-gap bundles, prefetch, list.
    ///
    /// These commands open the data directory directly; stop a running `bootfactory serve` on
    /// the same directory first.
    #[command(subcommand)]
    Mirror(MirrorCommand),
    /// Check the store (stop a running `bootfactory serve` on the same directory first).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Assign what a machine boots (talks to the running server's admin API).
    Assign(AssignArgs),
    /// Remove a machine's assignment (admin API).
    Unassign {
        /// The machine's MAC address (52:54:00:12:34:56).
        mac: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List assigned machines and every machine that asked to boot (admin API).
    Machines {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Where the admin API is and how to authenticate.
#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// The running server's URL (default: http.externalURL, else from http.listen).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Admin token (default: api.adminToken, else <data-dir>/admin-token).
    #[arg(
        long,
        env = "BOOTFACTORY_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

#[derive(clap::Args, Debug)]
struct AssignArgs {
    /// The machine's MAC address (52:54:00:12:34:56), or `default` for unassigned machines.
    mac: String,
    /// Schematic ID.
    #[arg(long)]
    schematic: String,
    /// Talos version (v1.9.0).
    #[arg(long)]
    version: String,
    /// Platform.
    #[arg(long, default_value = "metal")]
    platform: String,
    /// amd64 or arm64 (default: what the firmware reports).
    #[arg(long)]
    arch: Option<String>,
    /// A kernel argument to append (repeatable).
    #[arg(long = "extra-kernel-arg", value_name = "ARG")]
    extra_kernel_args: Vec<String>,
    /// A label KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Subcommand, Debug)]
enum MirrorCommand {
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

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Re-hash every blob against its digest; corrupt ones are quarantined, missing ones
    /// dropped from the index. Exits non-zero if any was found.
    Verify {
        /// Rebuild a lost or replaced index.sled from the blob files: every blob is re-hashed
        /// and indexed, schematics are recovered from their content; image names and built
        /// assets cannot be (re-run `mirror import`; assets are rebuilt on demand).
        #[arg(long)]
        rebuild_index: bool,
    },
}

#[derive(Subcommand, Debug)]
enum SchematicCommand {
    /// Print the schematic ID of a YAML/JSON schematic file (`-` or nothing reads stdin).
    ///
    /// The ID is the same one Sidero's Image Factory computes for the same schematic.
    Id {
        /// Schematic file, or `-` for standard input.
        #[arg(value_name = "FILE|-")]
        file: Option<PathBuf>,
    },
    /// Print the canonical YAML of a schematic (the bytes its ID is the SHA-256 of).
    Canonical {
        /// Schematic file, or `-` for standard input.
        #[arg(value_name = "FILE|-")]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the effective configuration (defaults, file, environment and flags merged).
    Show,
    /// List every configuration key with its flag and environment variable.
    Keys,
}

/// Builds the full clap command, including one flag per configuration key.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for spec in keys::KEYS {
        let mut arg = Arg::new(spec.key)
            .long(spec.flag)
            .env(spec.env())
            .value_name("VALUE")
            .help(spec.help)
            .global(true)
            .help_heading("Configuration (flag > BOOTFACTORY_* env > --config file)");
        if matches!(
            keys::default_value(spec.key),
            Some(serde_yaml::Value::Bool(_))
        ) {
            // `--offline` alone means true; `--offline=false` turns it off.
            arg = arg
                .value_name("BOOL")
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true");
        }
        cmd = cmd.arg(arg);
    }
    cmd
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    crate::init_crypto();
    let matches = command().get_matches();
    match run(&matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bootfactory: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    let cli = Cli::from_arg_matches(matches)?;
    let load_config = || -> anyhow::Result<Config> {
        let overrides = collect_overrides(matches);
        Ok(Config::load(cli.config.as_deref(), &overrides)?)
    };
    match &cli.command {
        Command::Serve => {
            let config = load_config()?;
            crate::logging::init(&config.log);
            crate::limits::init_fd_budget();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("bootfactory")
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async {
                // Handlers first: a SIGTERM at any point from here on is a graceful stop.
                let shutdown = crate::server::shutdown_signal();
                let app = crate::server::App::open(config).await?;
                app.run(shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schematic(SchematicCommand::Id { file }) => {
            let schematic = read_schematic(file.as_ref())?;
            println!("{}", schematic.id());
            Ok(ExitCode::SUCCESS)
        }
        Command::Schematic(SchematicCommand::Canonical { file }) => {
            let schematic = read_schematic(file.as_ref())?;
            print!("{}", schematic.canonical_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Show) => {
            print!("{}", load_config()?.to_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Store(StoreCommand::Verify { rebuild_index }) => {
            let config = load_config()?;
            store_runtime(&config)?.block_on(store_verify(&config, *rebuild_index))
        }
        Command::Mirror(cmd) => {
            let config = load_config()?;
            store_runtime(&config)?.block_on(mirror_command(config, cmd))
        }
        Command::Assign(args) => {
            let config = load_config()?;
            admin_command(&config, &args.server, |client| async move {
                let mut labels = std::collections::BTreeMap::new();
                for l in &args.labels {
                    let (k, v) = l
                        .split_once('=')
                        .ok_or_else(|| anyhow::anyhow!("--label {l:?}: write KEY=VALUE"))?;
                    labels.insert(k.to_string(), v.to_string());
                }
                let assignment = crate::assign::Assignment {
                    schematic: args.schematic.clone(),
                    version: args.version.clone(),
                    platform: args.platform.clone(),
                    arch: args.arch.clone(),
                    extra_kernel_args: args.extra_kernel_args.clone(),
                    labels,
                };
                assignment.validate()?;
                let answer = if args.mac == "default" {
                    client.set_default(&assignment).await?
                } else {
                    let mac: crate::assign::MacAddr = args.mac.parse()?;
                    client.assign(mac, &assignment).await?
                };
                println!("{}", serde_json::to_string_pretty(&answer)?);
                Ok(())
            })
        }
        Command::Unassign { mac, server } => {
            let config = load_config()?;
            let mac: crate::assign::MacAddr = mac.parse()?;
            admin_command(&config, server, |client| async move {
                client.unassign(mac).await?;
                println!("{mac}: assignment removed");
                Ok(())
            })
        }
        Command::Machines { json, server } => {
            let config = load_config()?;
            admin_command(&config, server, |client| async move {
                let list = client.machines().await?;
                if *json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    print!("{}", crate::assign::client::machines_table(&list));
                }
                Ok(())
            })
        }
        Command::Config(ConfigCommand::Keys) => {
            for spec in keys::KEYS {
                println!(
                    "{:<28} --{:<30} {}\n    {}",
                    spec.key,
                    spec.flag,
                    spec.env(),
                    spec.help
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `f` with an admin API client built from `--server`/`--token` and the configuration.
fn admin_command<'a, F, Fut>(config: &Config, server: &ServerArgs, f: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(crate::assign::client::AdminClient) -> Fut + 'a,
    Fut: std::future::Future<Output = anyhow::Result<()>> + 'a,
{
    let base = server
        .server
        .clone()
        .unwrap_or_else(|| config.external_url());
    let token = match &server.token {
        Some(t) => t.clone(),
        None => crate::assign::token::read(&config.api.admin_token, &config.admin_token_path())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no admin token: pass --token, set api.adminToken, or run where {} is readable",
                    config.admin_token_path().display()
                )
            })?,
    };
    let client = crate::assign::client::AdminClient::new(&base, &token)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(f(client))?;
    Ok(ExitCode::SUCCESS)
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

impl crate::upstream::bundle::Progress for Bar {
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

fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// Logging (warnings only, progress goes to the terminal) and a runtime for the commands that
/// open the data directory themselves (`mirror`, `store`).
fn store_runtime(config: &Config) -> anyhow::Result<tokio::runtime::Runtime> {
    crate::logging::init(&crate::config::LogConfig {
        level: "warn".into(),
        ..config.log.clone()
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn store_verify(config: &Config, rebuild_index: bool) -> anyhow::Result<ExitCode> {
    use crate::store::Store;
    let dir = &config.data_dir;
    if rebuild_index {
        let store = Store::open_for_rebuild(dir)
            .with_context(|| format!("cannot open the store in {}", dir.display()))?;
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
    let store =
        Store::open(dir).with_context(|| format!("cannot open the store in {}", dir.display()))?;
    let report = store.verify_all().await?;
    println!(
        "checked {} blobs ({} hashed): {} ok, {} corrupt (quarantined), {} missing, {} errors",
        report.checked,
        human_bytes(report.bytes_hashed),
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

async fn mirror_command(config: Config, cmd: &MirrorCommand) -> anyhow::Result<ExitCode> {
    use crate::oci::ImageRef;
    use crate::upstream::bundle;
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
                let progress = |p: PullProgress| match p {
                    PullProgress::Planned { bytes, .. } => bar.0.set_length(bytes),
                    PullProgress::BlobDone { size, .. } => bar.0.inc(size),
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

/// Collects config overrides from the matched flags and environment variables, in key order.
fn collect_overrides(matches: &ArgMatches) -> Vec<Override> {
    let mut out = Vec::new();
    for spec in keys::KEYS {
        let (m, source) = match find_value(matches, spec.key) {
            Some(found) => found,
            None => continue,
        };
        if let Some(value) = m.get_one::<String>(spec.key) {
            let source_name = match source {
                ValueSource::EnvVariable => spec.env(),
                _ => format!("--{}", spec.flag),
            };
            out.push(Override {
                key: spec.key.to_string(),
                value: value.clone(),
                source_name,
            });
        }
    }
    out
}

/// Finds the deepest subcommand match that carries a value for `id` (global flags may be
/// given before or after the subcommand).
fn find_value<'a>(matches: &'a ArgMatches, id: &str) -> Option<(&'a ArgMatches, ValueSource)> {
    let deeper = matches
        .subcommand()
        .and_then(|(_, sub)| find_value(sub, id));
    if deeper.is_some() {
        return deeper;
    }
    match matches.value_source(id) {
        Some(ValueSource::DefaultValue) | None => None,
        Some(source) => Some((matches, source)),
    }
}

fn read_schematic(file: Option<&PathBuf>) -> anyhow::Result<crate::schematic::Schematic> {
    let (name, bytes) = match file {
        None => ("<stdin>".to_string(), read_stdin()?),
        Some(p) if p.as_os_str() == "-" => ("<stdin>".to_string(), read_stdin()?),
        Some(p) => (
            p.display().to_string(),
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
    };
    crate::schematic::parse(&bytes).with_context(|| format!("invalid schematic {name}"))
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .take(crate::schematic::MAX_SCHEMATIC_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .context("cannot read standard input")?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn flags_after_the_subcommand_become_overrides() {
        let m = command()
            .try_get_matches_from([
                "bootfactory",
                "serve",
                "--data-dir",
                "/x",
                "--http-listen",
                "127.0.0.1:1",
            ])
            .unwrap();
        let o = collect_overrides(&m);
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].key, "dataDir");
        assert_eq!(o[0].value, "/x");
        assert_eq!(o[0].source_name, "--data-dir");
        assert_eq!(o[1].key, "http.listen");
    }
}
