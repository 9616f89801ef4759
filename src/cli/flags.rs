//! Configuration flags: one `--flag` with a `BOOTFACTORY_*` variable per key of
//! [`keys::KEYS`], added to the commands that use them, and the [`Override`]s they make.
//!
//! `serve` and `config` take every key; `mirror`, `store` and `machine` take the few in
//! [`MIRROR_KEYS`], [`STORE_KEYS`] and [`MACHINE_KEYS`] (global within the group, so
//! `mirror --data-dir D list` and `mirror list --data-dir D` both work). The top level takes
//! every key unlisted: that keeps the old position before the subcommand working and reads
//! every `BOOTFACTORY_*` variable whatever the command.

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches};

use crate::config::{Override, keys};

/// The help heading configuration flags are listed under.
const HEADING: &str = "Configuration (flag > BOOTFACTORY_* env > --config file)";

/// Keys whose values are secrets: their variables' values never appear in `--help`.
const SECRET_KEYS: &[&str] = &["api.adminToken", "upstream.registries"];

/// What `mirror import|export|pull|list` use: the store, its limits, and upstream access.
pub(super) const MIRROR_KEYS: &[&str] = &[
    "dataDir",
    "api.socket",
    "offline",
    "store.maxBytes",
    "store.minFreeBytes",
    "upstream.registries",
    "upstream.timeoutSeconds",
    "upstream.retries",
];

/// What `store verify|gc|usage` use: the data directory, the admin socket, and the GC
/// policy's defaults.
pub(super) const STORE_KEYS: &[&str] = &[
    "dataDir",
    "api.socket",
    "store.gc.keepVersions",
    "store.gc.keepReferenced",
    "store.gc.maxBytes",
];

/// What `machine …` uses besides `--server`/`--token`: the admin token file's directory.
pub(super) const MACHINE_KEYS: &[&str] = &["dataDir", "api.socket"];

/// Which keys a command takes.
pub(super) enum Keys {
    All,
    Only(&'static [&'static str]),
}

/// Whether `--help` lists the flags.
#[derive(Clone, Copy)]
pub(super) enum Show {
    /// Listed, and global: the command's subcommands take them too.
    Listed,
    /// Unlisted, and for this command only (the top level and the old spellings).
    Hidden,
}

/// Adds the flags of `which` keys to `cmd`.
pub(super) fn add(mut cmd: clap::Command, which: Keys, show: Show) -> clap::Command {
    for spec in keys::KEYS {
        let wanted = match which {
            Keys::All => true,
            Keys::Only(list) => list.contains(&spec.key),
        };
        if wanted {
            cmd = cmd.arg(flag(spec, show));
        }
    }
    cmd
}

fn flag(spec: &keys::KeySpec, show: Show) -> Arg {
    let mut arg = Arg::new(spec.key)
        .long(spec.flag)
        .env(spec.env())
        .hide_env_values(SECRET_KEYS.contains(&spec.key))
        .value_name("VALUE")
        .help(spec.help)
        .global(matches!(show, Show::Listed))
        .hide(matches!(show, Show::Hidden))
        .help_heading(HEADING);
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
    arg
}

/// Collects config overrides from the matched flags and environment variables, in key order.
pub(super) fn collect_overrides(matches: &ArgMatches) -> Vec<Override> {
    let mut out = Vec::new();
    for spec in keys::KEYS {
        let Some((m, source)) = find_value(matches, spec.key) else {
            continue;
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

/// Finds the match that carries the value for `id`: a flag given on the command line at any
/// level (the deepest if several) beats its environment variable.
fn find_value<'a>(matches: &'a ArgMatches, id: &str) -> Option<(&'a ArgMatches, ValueSource)> {
    let mut flag = None;
    let mut env = None;
    let mut level = Some(matches);
    while let Some(m) = level {
        // `try_` because a command without this key's flag has no such argument.
        match m.try_contains_id(id).ok().and_then(|_| m.value_source(id)) {
            Some(ValueSource::CommandLine) => flag = Some((m, ValueSource::CommandLine)),
            Some(ValueSource::EnvVariable) => env = Some((m, ValueSource::EnvVariable)),
            _ => {}
        }
        level = m.subcommand().map(|(_, sub)| sub);
    }
    flag.or(env)
}

#[cfg(test)]
mod tests {
    use super::super::command;
    use super::*;

    fn overrides(args: &[&str]) -> Vec<Override> {
        collect_overrides(&command().try_get_matches_from(args).unwrap())
    }

    #[test]
    fn flags_after_the_subcommand_become_overrides() {
        let o = overrides(&[
            "bootfactory",
            "serve",
            "--data-dir",
            "/x",
            "--http-listen",
            "127.0.0.1:1",
        ]);
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].key, "dataDir");
        assert_eq!(o[0].value, "/x");
        assert_eq!(o[0].source_name, "--data-dir");
        assert_eq!(o[1].key, "http.listen");
    }

    #[test]
    fn flags_before_the_subcommand_still_work() {
        let o = overrides(&["bootfactory", "--data-dir", "/y", "mirror", "list"]);
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].key.as_str(), o[0].value.as_str()), ("dataDir", "/y"));
        let o = overrides(&[
            "bootfactory",
            "mirror",
            "--offline",
            "list",
            "--data-dir=/z",
        ]);
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].value, "/z");
        assert_eq!(
            (o[1].key.as_str(), o[1].value.as_str()),
            ("offline", "true")
        );
    }

    #[test]
    fn commands_take_only_the_flags_they_use() {
        let cmd = command();
        assert!(
            cmd.clone()
                .try_get_matches_from(["bootfactory", "schematic", "id", "--http-listen", "x"])
                .is_err()
        );
        assert!(
            cmd.clone()
                .try_get_matches_from(["bootfactory", "store", "gc", "--pxe-interfaces", "x"])
                .is_err()
        );
        assert!(
            cmd.try_get_matches_from(["bootfactory", "store", "gc", "--data-dir", "x"])
                .is_ok()
        );
    }
}
