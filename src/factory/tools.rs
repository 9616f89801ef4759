//! External programs and data files a few boot media need, found at run time.
//!
//! Everything bootfactory serves is written in Rust except two things no Rust crate does:
//! an XFS filesystem (the `BOOT` partition of GRUB and dual-boot disk images, made by
//! `mkfs.xfs` from a protofile) and GRUB's BIOS (`i386-pc`) and GRUB-only EFI images (made by
//! `grub-mkimage` from Debian's module directories). They are looked up when a build needs
//! them, never at start-up, so a host without them serves everything else; a build that
//! needs a missing one fails before any work with [`MissingTools`], whose text names the
//! Debian packages to install (the .deb recommends them, the .rpm too).
//!
//! The lookup is deliberately plain: each program in a fixed list of system directories
//! (`/usr/sbin`, `/usr/bin`, `/sbin`, `/bin`; not `$PATH`, which a service manager may set
//! to anything), each data directory at its Debian path.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A program or a data directory a build runs or reads, with the Debian package that ships it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tool {
    /// `mkfs.xfs` (xfsprogs): the `BOOT` partition of GRUB and dual-boot images.
    MkfsXfs,
    /// `grub-mkimage` (grub-common; `grub2-mkimage` on Fedora/RHEL): GRUB core images.
    GrubMkimage,
    /// `/usr/lib/grub/i386-pc` (grub-pc-bin): GRUB's BIOS modules and boot sectors.
    GrubI386Pc,
    /// `/usr/lib/grub/x86_64-efi` (grub-efi-amd64-bin): GRUB for amd64 UEFI (GRUB-only images).
    GrubX86_64Efi,
    /// `/usr/lib/grub/arm64-efi` (grub-efi-arm64-bin): GRUB for arm64 UEFI (GRUB-only images).
    GrubArm64Efi,
}

/// Directories searched for programs, in order.
const PROGRAM_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

impl Tool {
    /// Every tool, for `bootfactory doctor`.
    pub const ALL: [Tool; 5] = [
        Tool::MkfsXfs,
        Tool::GrubMkimage,
        Tool::GrubI386Pc,
        Tool::GrubX86_64Efi,
        Tool::GrubArm64Efi,
    ];

    /// What needs it, for people.
    pub fn needed_for(self) -> &'static str {
        match self {
            Tool::MkfsXfs => "GRUB and dual-boot disk images",
            Tool::GrubMkimage => "GRUB and dual-boot disk images, ISOs",
            Tool::GrubI386Pc => "BIOS-bootable disk images and ISOs",
            Tool::GrubX86_64Efi => "GRUB-only amd64 UEFI disk images",
            Tool::GrubArm64Efi => "GRUB-only arm64 UEFI disk images",
        }
    }

    /// The Debian package that ships it.
    pub fn debian_package(self) -> &'static str {
        match self {
            Tool::MkfsXfs => "xfsprogs",
            Tool::GrubMkimage => "grub-common",
            Tool::GrubI386Pc => "grub-pc-bin",
            Tool::GrubX86_64Efi => "grub-efi-amd64-bin",
            Tool::GrubArm64Efi => "grub-efi-arm64-bin",
        }
    }

    /// The program's file name, or the data directory's absolute path.
    pub fn name(self) -> &'static str {
        match self {
            Tool::MkfsXfs => "mkfs.xfs",
            Tool::GrubMkimage => "grub-mkimage",
            Tool::GrubI386Pc => "/usr/lib/grub/i386-pc",
            Tool::GrubX86_64Efi => "/usr/lib/grub/x86_64-efi",
            Tool::GrubArm64Efi => "/usr/lib/grub/arm64-efi",
        }
    }

    /// Where it is on this host, if anywhere: a program in [`PROGRAM_DIRS`], a data directory
    /// at its path holding the file every GRUB platform has (`moddep.lst`).
    pub fn locate(self) -> Option<PathBuf> {
        self.locate_in(PROGRAM_DIRS.iter().map(Path::new))
    }

    fn locate_in<'a>(self, dirs: impl Iterator<Item = &'a Path>) -> Option<PathBuf> {
        let name = self.name();
        if name.starts_with('/') {
            let dir = PathBuf::from(name);
            return dir.join("moddep.lst").is_file().then_some(dir);
        }
        // Fedora and RHEL call it grub2-mkimage (same options, same module directories).
        let names: &[&str] = match self {
            Tool::GrubMkimage => &["grub-mkimage", "grub2-mkimage"],
            _ => &[name],
        };
        let dirs: Vec<&Path> = dirs.collect();
        names
            .iter()
            .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
            .find(|p| is_executable(p))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What a build lacks: the programs or directories and their Debian packages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} needs {} on the bootfactory host, which {} not installed: install the Debian package{} {} (apt-get install {})",
    self.names(),
    if self.missing.len() == 1 { "is" } else { "are" },
    if self.packages().len() == 1 { "" } else { "s" },
    self.packages().join(", "),
    self.packages().join(" ")
)]
pub struct MissingTools {
    /// What was being built (e.g. `a dual-boot disk image`).
    pub what: String,
    /// The missing tools, in the order asked for.
    pub missing: Vec<Tool>,
}

impl MissingTools {
    fn names(&self) -> String {
        self.missing
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The packages to install, each once, in the order asked for.
    pub fn packages(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for t in &self.missing {
            if !out.contains(&t.debian_package()) {
                out.push(t.debian_package());
            }
        }
        out
    }
}

/// The located tools of one build.
#[derive(Debug, Clone)]
pub struct Located {
    found: Vec<(Tool, PathBuf)>,
}

impl Located {
    /// The path of `tool`, which [`require`] was asked for.
    ///
    /// # Panics
    /// If `tool` was not among those required (a programming error).
    pub fn path(&self, tool: Tool) -> &Path {
        self.found
            .iter()
            .find(|(t, _)| *t == tool)
            .map(|(_, p)| p.as_path())
            .unwrap_or_else(|| panic!("{tool:?} was not required"))
    }
}

/// Locates every tool of `tools` for building `what`, or says which are missing (all of them,
/// so the operator installs once).
pub fn require(what: &str, tools: &[Tool]) -> Result<Located, MissingTools> {
    require_with(what, tools, Tool::locate)
}

fn require_with(
    what: &str,
    tools: &[Tool],
    locate: impl Fn(Tool) -> Option<PathBuf>,
) -> Result<Located, MissingTools> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for &t in tools {
        match locate(t) {
            Some(p) => found.push((t, p)),
            None => missing.push(t),
        }
    }
    if missing.is_empty() {
        Ok(Located { found })
    } else {
        Err(MissingTools {
            what: what.to_string(),
            missing,
        })
    }
}

/// How an external program failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// It could not be started.
    #[error("could not run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It ran longer than allowed and was killed.
    #[error("{program} did not finish within {timeout:?} and was killed")]
    TimedOut {
        /// The program.
        program: String,
        /// The limit.
        timeout: Duration,
    },
    /// It exited unsuccessfully.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its standard error (at most 4 KiB).
        stderr: String,
        /// `ENOSPC` when its standard error says the file system is full (the programs run
        /// with `LC_ALL=C`), so the build answers 507 like any other full-disk failure.
        #[source]
        cause: Option<std::io::Error>,
    },
}

/// The bytes of a failed program's standard error kept for its error.
const STDERR_TAIL: usize = 4096;

/// What C programs print for `ENOSPC` (`strerror` in the C locale).
const NO_SPACE_TEXT: &str = "No space left on device";

/// Kills the process group `child` leads (the child and anything it started), then reaps it.
fn kill_group(child: &mut std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `program` with `args` in `cwd` (no shell, standard input empty, standard output
/// discarded, standard error captured), killing it after `timeout`. For the short programs of
/// a build (`mkfs.xfs`, `grub-mkimage`), called from a blocking thread.
pub fn run(
    program: &Path,
    args: &[&std::ffi::OsStr],
    cwd: &Path,
    timeout: Duration,
) -> Result<(), RunError> {
    use std::io::Read as _;
    use std::os::unix::process::CommandExt as _;
    use std::process::{Command, Stdio};
    let name = program.display().to_string();
    let mut child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        // Messages in English, so a full disk is recognized (`NO_SPACE_TEXT`).
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills whatever it started too.
        .process_group(0)
        .spawn()
        .map_err(|source| RunError::Spawn {
            program: name.clone(),
            source,
        })?;
    // Standard error is drained on its own thread so a chatty program never blocks on a
    // full pipe while we wait.
    let reader = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            // Only the end is kept: a program printing without end costs no memory.
            let mut tail = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            tail
        })
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(&mut child);
                break Err(RunError::TimedOut {
                    program: name.clone(),
                    timeout,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(source) => {
                kill_group(&mut child);
                break Err(RunError::Spawn {
                    program: name.clone(),
                    source,
                });
            }
        }
    };
    let stderr = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    let status = status?;
    if status.success() {
        return Ok(());
    }
    let tail = &stderr[stderr.len().saturating_sub(STDERR_TAIL)..];
    let stderr = String::from_utf8_lossy(tail).trim().to_string();
    let cause = stderr
        .contains(NO_SPACE_TEXT)
        .then(|| std::io::Error::from_raw_os_error(nix::libc::ENOSPC));
    Err(RunError::Failed {
        program: name,
        status,
        stderr,
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_name_their_packages_once() {
        let e = require_with(
            "a dual-boot disk image",
            &[Tool::MkfsXfs, Tool::GrubMkimage, Tool::GrubI386Pc],
            |t| (t == Tool::GrubMkimage).then(|| PathBuf::from("/usr/bin/grub-mkimage")),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "a dual-boot disk image needs mkfs.xfs, /usr/lib/grub/i386-pc on the bootfactory host, which are not installed: install the Debian packages xfsprogs, grub-pc-bin (apt-get install xfsprogs grub-pc-bin)"
        );
        let one = require_with("x", &[Tool::GrubX86_64Efi], |_| None).unwrap_err();
        assert_eq!(
            one.to_string(),
            "x needs /usr/lib/grub/x86_64-efi on the bootfactory host, which is not installed: install the Debian package grub-efi-amd64-bin (apt-get install grub-efi-amd64-bin)"
        );
    }

    #[test]
    fn programs_are_found_only_when_executable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mkfs.xfs");
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        assert_eq!(Tool::MkfsXfs.locate_in([dir.path()].into_iter()), None);
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(Tool::MkfsXfs.locate_in([dir.path()].into_iter()), Some(p));
        let grub2 = dir.path().join("grub2-mkimage");
        std::fs::write(&grub2, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&grub2, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            Tool::GrubMkimage.locate_in([dir.path()].into_iter()),
            Some(grub2)
        );
        let ok = require_with("x", &[Tool::MkfsXfs], |_| Some(PathBuf::from("/m"))).unwrap();
        assert_eq!(ok.path(Tool::MkfsXfs), Path::new("/m"));
    }

    #[test]
    fn run_captures_stderr_and_kills_on_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let sh = Path::new("/bin/sh");
        let ok = run(
            sh,
            &["-c".as_ref(), "echo fine >&2".as_ref()],
            dir.path(),
            Duration::from_secs(10),
        );
        assert!(ok.is_ok(), "{ok:?}");
        let e = run(
            sh,
            &["-c".as_ref(), "echo broken proto >&2; exit 3".as_ref()],
            dir.path(),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(e.to_string().contains("broken proto"), "{e}");
        let started = Instant::now();
        let e = run(
            sh,
            &["-c".as_ref(), "sleep 30".as_ref()],
            dir.path(),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(e, RunError::TimedOut { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let e = run(
            Path::new("/nonexistent/prog"),
            &[],
            dir.path(),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(e, RunError::Spawn { .. }), "{e}");
    }

    /// A program that fails because the disk is full is a no-space error (507), whatever the
    /// locale of the server; its standard error costs bounded memory however long it is.
    #[test]
    fn run_recognizes_a_full_disk_and_bounds_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let sh = Path::new("/bin/sh");
        let e = run(
            sh,
            &[
                "-c".as_ref(),
                "[ \"$LC_ALL\" = C ] || exit 9; echo 'pwrite failed: No space left on device' >&2; exit 1"
                    .as_ref(),
            ],
            dir.path(),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(
            matches!(e, RunError::Failed { ref cause, .. } if cause.is_some()),
            "{e:?}"
        );
        assert!(crate::store::caused_by_no_space(&e), "{e:?}");
        let e = run(
            sh,
            &["-c".as_ref(), "echo 'bad option' >&2; exit 1".as_ref()],
            dir.path(),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(!crate::store::caused_by_no_space(&e), "{e:?}");
        // 64 MiB of standard error: kept to its last 4 KiB.
        let e = run(
            sh,
            &[
                "-c".as_ref(),
                "head -c 67108864 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 1".as_ref(),
            ],
            dir.path(),
            Duration::from_secs(60),
        )
        .unwrap_err();
        let RunError::Failed { stderr, .. } = &e else {
            panic!("{e:?}");
        };
        assert!(
            stderr.ends_with("END") && stderr.len() <= STDERR_TAIL,
            "{}",
            stderr.len()
        );
    }
}
