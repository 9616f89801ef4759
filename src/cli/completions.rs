//! `bootfactory completions bash|zsh|fish` and the hidden `bootfactory man --out DIR`: shell
//! completion scripts (clap_complete) and man pages (clap_mangen), both generated from the
//! same clap definition as `--help` ([`super::command`]), so they cannot drift from it.
//! `packaging/release.sh` runs the built binary to put them into the .deb and .rpm.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(clap::Args, Debug)]
pub(super) struct CompletionsArgs {
    /// The shell.
    shell: Shell,
}

/// The shells completions are generated for.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(clap::Args, Debug)]
pub(super) struct ManArgs {
    /// Directory the pages are written to (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
}

/// `bootfactory completions SHELL`: the script on stdout.
pub(super) fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = super::command();
    // Generated into memory first: clap_complete panics on a failed write.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "bootfactory", &mut script);
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        // A reader that stopped reading (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        r => {
            r.context("cannot write the completion script")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `bootfactory man --out DIR`: `bootfactory.1` and `bootfactory-<command>[-<verb>].1` for
/// every listed command (hidden ones, the old spellings, get none).
pub(super) fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    clap_mangen::generate_to(super::command(), &args.out)
        .with_context(|| format!("cannot write the man pages into {}", args.out.display()))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_listed_command_gets_a_page() {
        let dir = tempfile::tempdir().unwrap();
        super::man(&super::ManArgs {
            out: dir.path().to_path_buf(),
        })
        .unwrap();
        for page in [
            "bootfactory.1",
            "bootfactory-serve.1",
            "bootfactory-doctor.1",
            "bootfactory-mirror-import.1",
            "bootfactory-machine-list.1",
        ] {
            let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
            assert!(
                text.starts_with(".ie \\n(.g .ds Aq") || text.contains(".TH"),
                "{page}"
            );
        }
        assert!(!dir.path().join("bootfactory-assign.1").exists());
    }
}
