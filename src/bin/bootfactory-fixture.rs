//! Dev tool: writes a synthetic Talos release as an OCI image layout (see `src/fixture`) and
//! prints a JSON summary of what it wrote.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use bootfactory::fixture::{
    BootOptions, DEFAULT_VERSIONS, FileSource, FixtureOptions, InitramfsFile, SizeProfile,
    write_release,
};
use clap::Parser;

/// Write a synthetic, structurally faithful Talos release (imager, installer, extensions,
/// catalogs, overlay) into an OCI image layout directory.
#[derive(Debug, Parser)]
#[command(name = "bootfactory-fixture")]
struct Args {
    /// Output directory (an OCI image layout; created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Talos version to write (repeatable). Default: v1.8.4 and v1.11.6.
    #[arg(long = "version", value_name = "TAG")]
    versions: Vec<String>,
    /// Registry host in every reference.
    #[arg(long, default_value = "ghcr.io")]
    registry: String,
    /// Namespace in every reference.
    #[arg(long, default_value = "siderolabs")]
    namespace: String,
    /// Content size: small (tests) or realistic (benchmarks).
    #[arg(long, default_value = "small", value_parser = ["small", "realistic"])]
    profile: String,
    /// Real amd64 kernel to ship as usr/install/amd64/vmlinuz.
    #[arg(long, value_name = "PATH")]
    kernel_amd64: Option<PathBuf>,
    /// Real arm64 kernel to ship as usr/install/arm64/vmlinuz.
    #[arg(long, value_name = "PATH")]
    kernel_arm64: Option<PathBuf>,
    /// Kernel version string (modules directory name). Default: from --kernel-amd64's setup
    /// header, else a synthetic per-version value.
    #[arg(long, value_name = "KVER")]
    kernel_version: Option<String>,
    /// File to use as /init in the amd64 base initramfs.
    #[arg(long, value_name = "PATH")]
    init: Option<PathBuf>,
    /// Extra file for the amd64 base initramfs (repeatable); mode taken from SRC.
    #[arg(long = "initramfs-file", value_name = "DEST=SRC")]
    initramfs_files: Vec<String>,
    /// File to use as /init in the arm64 base initramfs.
    #[arg(long, value_name = "PATH")]
    init_arm64: Option<PathBuf>,
    /// Extra file for the arm64 base initramfs (repeatable).
    #[arg(long = "initramfs-file-arm64", value_name = "DEST=SRC")]
    initramfs_files_arm64: Vec<String>,
    /// Real systemd-stub to ship as usr/install/amd64/systemd-stub.efi (e.g. Debian's
    /// /usr/lib/systemd/boot/efi/linuxx64.efi.stub). Default: a synthetic PE stand-in.
    #[arg(long, value_name = "PATH")]
    systemd_stub_amd64: Option<PathBuf>,
    /// Real systemd-boot to ship as usr/install/amd64/systemd-boot.efi (e.g. Debian's
    /// systemd-bootx64.efi). Default: a synthetic PE stand-in.
    #[arg(long, value_name = "PATH")]
    systemd_boot_amd64: Option<PathBuf>,
    /// Also list the deliberately bad extensions in the extensions catalogs.
    #[arg(long)]
    bad_extensions_in_catalog: bool,
}

fn initramfs_files(specs: &[String]) -> anyhow::Result<Vec<InitramfsFile>> {
    specs
        .iter()
        .map(|s| {
            let Some((dest, src)) = s.split_once('=') else {
                bail!("--initramfs-file {s:?}: expected DEST=SRC");
            };
            if dest.is_empty() || src.is_empty() {
                bail!("--initramfs-file {s:?}: expected DEST=SRC");
            }
            Ok(InitramfsFile {
                dest: dest.to_string(),
                source: FileSource::Path(PathBuf::from(src)),
                mode: None,
            })
        })
        .collect()
}

fn boot(
    kernel: Option<PathBuf>,
    init: Option<PathBuf>,
    files: &[String],
) -> anyhow::Result<BootOptions> {
    Ok(BootOptions {
        kernel: kernel.map(FileSource::Path),
        init: init.map(FileSource::Path),
        initramfs_files: initramfs_files(files)?,
        ..BootOptions::default()
    })
}

fn run(args: Args) -> anyhow::Result<()> {
    let versions = if args.versions.is_empty() {
        DEFAULT_VERSIONS.iter().map(|v| v.to_string()).collect()
    } else {
        args.versions
    };
    let opts = FixtureOptions {
        versions,
        registry: args.registry,
        namespace: args.namespace,
        profile: args.profile.parse::<SizeProfile>()?,
        amd64: BootOptions {
            systemd_stub: args.systemd_stub_amd64.map(FileSource::Path),
            systemd_boot: args.systemd_boot_amd64.map(FileSource::Path),
            ..boot(args.kernel_amd64, args.init, &args.initramfs_files)?
        },
        arm64: boot(
            args.kernel_arm64,
            args.init_arm64,
            &args.initramfs_files_arm64,
        )?,
        kernel_version: args.kernel_version,
        bad_extensions_in_catalog: args.bad_extensions_in_catalog,
    };
    let start = Instant::now();
    let release = write_release(&args.out, &opts)
        .with_context(|| format!("writing fixture release to {}", args.out.display()))?;
    eprintln!(
        "bootfactory-fixture: wrote {} images to {} in {:.2?}",
        release.images.len(),
        args.out.display(),
        start.elapsed()
    );
    println!("{}", serde_json::to_string_pretty(&release)?);
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootfactory-fixture: {e:#}");
            ExitCode::FAILURE
        }
    }
}
