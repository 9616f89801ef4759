//! `bootfactory config show|keys`: the effective configuration and the table of keys.

use std::process::ExitCode;

use clap::Subcommand;

use super::Context;
use crate::config::keys;

#[derive(Subcommand, Debug)]
pub(super) enum ConfigCommand {
    /// Print the effective configuration (defaults, file, environment and flags merged).
    ///
    /// Secrets (api.adminToken, upstream registry passwords and tokens) are printed as
    /// <redacted> unless --reveal-secrets is given.
    Show {
        /// Print secrets as they are instead of <redacted>.
        #[arg(long)]
        reveal_secrets: bool,
    },
    /// List every configuration key with its flag and environment variable.
    Keys,
}

pub(super) fn run(cx: &Context, cmd: &ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Show { reveal_secrets } => {
            let config = cx.load_config()?;
            let shown = if *reveal_secrets {
                config
            } else {
                config.redacted()
            };
            match cx.config_file() {
                Some(path) => println!("# config file: {}", path.display()),
                None => println!(
                    "# config file: none ({} does not exist; defaults, BOOTFACTORY_* and flags)",
                    crate::config::DEFAULT_CONFIG_FILE
                ),
            }
            print!("{}", shown.to_yaml());
        }
        ConfigCommand::Keys => {
            for spec in keys::KEYS {
                println!(
                    "{:<28} --{:<30} {}\n    {}",
                    spec.key,
                    spec.flag,
                    spec.env(),
                    spec.help
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
