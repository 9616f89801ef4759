//! The command line: nouns with verbs, one file per command group.
//!
//! ```text
//! bootfactory serve                          run the appliance (HTTP factory API, registry
//!                                            mirror, boot scripts, PXE when configured)
//! bootfactory config show [--reveal-secrets] the effective configuration (secrets redacted)
//! bootfactory config keys                    every key with its flag and BOOTFACTORY_* variable
//! bootfactory schematic id [FILE|-]          a schematic's ID (Image Factory's)
//! bootfactory schematic canonical [FILE|-]   the canonical YAML the ID is the SHA-256 of
//! bootfactory mirror import|export|pull|list air-gap bundles and prefetching (opens the store)
//! bootfactory store verify [--rebuild-index] re-hash every blob (opens the store)
//! bootfactory store gc [--dry-run]           delete unreferenced blobs (opens the store)
//! bootfactory machine assign|unassign|list   per-MAC assignments (the running server's admin API)
//! bootfactory doctor [--json]                check this box (exit 1 on a failed check)
//! bootfactory completions bash|zsh|fish      shell completion script (hidden: man --out DIR)
//! ```
//!
//! | File | Commands |
//! |------|----------|
//! | `serve.rs` | `serve` |
//! | `config.rs` | `config show`, `config keys` |
//! | `schematic.rs` | `schematic id`, `schematic canonical` |
//! | `mirror.rs` | `mirror import`, `mirror export`, `mirror pull`, `mirror list` |
//! | `store.rs` | `store verify`, `store gc` |
//! | `machine.rs` | `machine assign`, `machine unassign`, `machine list` (and the old spellings) |
//! | `doctor.rs` | `doctor` |
//! | `completions.rs` | `completions`, `man` (hidden) |
//! | `flags.rs` | configuration flags and the overrides they make |
//!
//! Configuration flags are generated from [`crate::config::keys::KEYS`], so every config key
//! has a `--flag` and a `BOOTFACTORY_*` variable without hand-written plumbing. `serve` and
//! `config` take (and `--help` lists) all of them; the other commands take only the few they
//! use (see [`flags`]). Every `BOOTFACTORY_*` variable applies to every command that loads
//! the configuration, and for compatibility every flag is still accepted, unlisted, before the
//! subcommand (`bootfactory --data-dir D mirror list`).
//!
//! Old spellings kept for one release as hidden subcommands (they print a note on stderr):
//! `assign` → `machine assign`, `unassign` → `machine unassign`, `machines` → `machine list`.
//!
//! Commands that open the data directory themselves (`mirror`, `store`) take the store's
//! lock, so they refuse to run while `bootfactory serve` uses the same directory.

mod completions;
mod config;
mod doctor;
mod flags;
mod machine;
mod mirror;
mod schematic;
mod serve;
pub(crate) mod service;
mod store;
mod warm;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Config;
use flags::Keys;

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
(BOOTFACTORY_*), or a flag; flags win over variables, variables over the file.
`bootfactory serve --help` lists the flags, `bootfactory config keys` the keys and variables.";

#[derive(Parser, Debug)]
#[command(name = "bootfactory", version = VERSION, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    /// YAML configuration file (keys as in `bootfactory config show`); default
    /// /etc/bootfactory/config.yaml when it exists.
    #[arg(long, global = true, env = "BOOTFACTORY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the appliance: HTTP factory API (and network-boot services when configured).
    Serve,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Work with schematics offline.
    #[command(subcommand)]
    Schematic(schematic::SchematicCommand),
    /// Manage the image store: import and export air-gap bundles, prefetch, list.
    ///
    /// These commands open the data directory directly; stop a running `bootfactory serve` on
    /// the same directory first.
    #[command(subcommand)]
    Mirror(mirror::MirrorCommand),
    /// Check the store and reclaim space (stop a running `bootfactory serve` on the same
    /// directory first).
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Assign what machines boot and list them (talks to the running server's admin API).
    #[command(subcommand)]
    Machine(machine::MachineCommand),
    /// Check this box: configuration, data directory, disk, store, versions, upstream, PXE,
    /// build tools (exit code 1 when a check fails).
    Doctor(doctor::DoctorArgs),
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completions(completions::CompletionsArgs),
    /// Write the man pages (bootfactory.1 and one per subcommand) into a directory.
    #[command(hide = true)]
    Man(completions::ManArgs),
    /// Build a machine's boot assets before it boots (talks to the running server's admin
    /// API): prints what was built, sizes and time.
    Warm(warm::WarmArgs),
    /// Old spelling of `machine assign`.
    #[command(hide = true)]
    Assign(machine::AssignArgs),
    /// Old spelling of `machine unassign`.
    #[command(hide = true)]
    Unassign(machine::UnassignArgs),
    /// Old spelling of `machine list`.
    #[command(hide = true)]
    Machines(machine::ListArgs),
}

/// Builds the full clap command, with each command's configuration flags.
pub fn command() -> clap::Command {
    // Hidden on the top level: the flags' old position (before the subcommand) and their
    // BOOTFACTORY_* variables for every command.
    let cmd = flags::add(Cli::command(), Keys::All, flags::Show::Hidden);
    cmd.mut_subcommand("serve", |c| flags::add(c, Keys::All, flags::Show::Listed))
        .mut_subcommand("config", |c| flags::add(c, Keys::All, flags::Show::Listed))
        .mut_subcommand("mirror", |c| {
            flags::add(c, Keys::Only(flags::MIRROR_KEYS), flags::Show::Listed)
        })
        .mut_subcommand("store", |c| {
            flags::add(c, Keys::Only(flags::STORE_KEYS), flags::Show::Listed)
        })
        .mut_subcommand("machine", |c| {
            flags::add(c, Keys::Only(flags::MACHINE_KEYS), flags::Show::Listed)
        })
        .mut_subcommand("doctor", |c| flags::add(c, Keys::All, flags::Show::Listed))
        .mut_subcommand("warm", |c| {
            flags::add(c, Keys::Only(flags::MACHINE_KEYS), flags::Show::Listed)
        })
        // The old spellings accept every flag they accepted before, unlisted.
        .mut_subcommand("assign", |c| flags::add(c, Keys::All, flags::Show::Hidden))
        .mut_subcommand("unassign", |c| {
            flags::add(c, Keys::All, flags::Show::Hidden)
        })
        .mut_subcommand("machines", |c| {
            flags::add(c, Keys::All, flags::Show::Hidden)
        })
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

/// What every command may need besides its own arguments.
struct Context<'a> {
    matches: &'a ArgMatches,
    /// The configuration file read: `--config`/`BOOTFACTORY_CONFIG`, else
    /// [`crate::config::DEFAULT_CONFIG_FILE`] when it exists.
    config_file: Option<PathBuf>,
}

impl Context<'_> {
    /// The configuration: defaults, the configuration file, `BOOTFACTORY_*` variables and
    /// flags.
    fn load_config(&self) -> anyhow::Result<Config> {
        let overrides = flags::collect_overrides(self.matches);
        Ok(Config::load(self.config_file.as_deref(), &overrides)?)
    }

    /// The configuration file read, for messages.
    fn config_file(&self) -> Option<&Path> {
        self.config_file.as_deref()
    }
}

fn run(matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    let cli = Cli::from_arg_matches(matches)?;
    let cx = Context {
        matches,
        config_file: crate::config::resolve_file(
            cli.config.as_deref(),
            Path::new(crate::config::DEFAULT_CONFIG_FILE),
        ),
    };
    match &cli.command {
        Command::Serve => serve::run(&cx),
        Command::Config(cmd) => config::run(&cx, cmd),
        Command::Schematic(cmd) => schematic::run(cmd),
        Command::Mirror(cmd) => mirror::run(&cx, cmd),
        Command::Store(cmd) => store::run(&cx, cmd),
        Command::Machine(cmd) => machine::run(&cx, cmd),
        Command::Doctor(args) => doctor::run(&cx, args),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
        Command::Warm(args) => warm::run(&cx, args),
        Command::Assign(args) => {
            deprecated("assign", "machine assign");
            machine::assign(&cx, args)
        }
        Command::Unassign(args) => {
            deprecated("unassign", "machine unassign");
            machine::unassign(&cx, args)
        }
        Command::Machines(args) => {
            deprecated("machines", "machine list");
            machine::list(&cx, args)
        }
    }
}

/// The note an old spelling prints (on stderr, so scripts reading stdout are unaffected).
fn deprecated(old: &str, new: &str) {
    eprintln!(
        "bootfactory: `bootfactory {old}` is deprecated and goes away in the next release; use `bootfactory {new}`"
    );
}

/// A size for people and for scripts: `1.50 MiB (1572864 bytes)`.
fn sized(bytes: u64) -> String {
    format!("{} ({bytes} bytes)", human_bytes(bytes))
}

fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// Logging (warnings only, progress goes to the terminal) and a runtime for the commands that
/// open the data directory themselves (`mirror`, `store`).
fn store_runtime(config: &Config) -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    crate::logging::init(&crate::config::LogConfig {
        level: "warn".into(),
        ..config.log.clone()
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        command().debug_assert();
    }

    fn help(args: &[&str]) -> String {
        let mut cmd = command();
        let mut path = args.iter();
        let mut sub = &mut cmd;
        for name in &mut path {
            sub = sub.find_subcommand_mut(name).expect("subcommand");
        }
        sub.render_long_help().to_string()
    }

    #[test]
    fn configuration_flags_are_listed_where_they_are_used() {
        let serve = help(&["serve"]);
        assert!(serve.contains("--pxe-interfaces") && serve.contains("--http-listen"));
        assert!(help(&["config"]).contains("--http-listen"));
        let id = help(&["schematic", "id"]);
        assert!(!id.contains("--pxe-") && !id.contains("--http-"), "{id}");
        let gc = help(&["store"]);
        assert!(gc.contains("--data-dir") && !gc.contains("--http-"), "{gc}");
        let top = help(&[]);
        assert!(!top.contains("--http-listen"), "{top}");
    }
}
