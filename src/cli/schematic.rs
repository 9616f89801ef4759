//! `bootfactory schematic id|canonical`: schematics offline (no configuration, no store).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(super) enum SchematicCommand {
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

pub(super) fn run(cmd: &SchematicCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SchematicCommand::Id { file } => {
            let schematic = read_schematic(file.as_ref())?;
            println!("{}", schematic.id());
        }
        SchematicCommand::Canonical { file } => {
            let schematic = read_schematic(file.as_ref())?;
            print!("{}", schematic.canonical_yaml());
        }
    }
    Ok(ExitCode::SUCCESS)
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
