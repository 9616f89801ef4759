//! ISOs (`/image/<schematic>/<version>/<platform>-<arch>.iso`), non-SecureBoot, laid out as
//! Talos' imager does (`docs/formats.md` §ISO) and written by [`crate::formats::iso9660`]:
//!
//! - Talos ≥ 1.10, the **hybrid ISO**: `boot/vmlinuz`, `boot/initramfs.xz`,
//!   `boot/grub/grub.cfg` and GRUB's i386-pc modules, a BIOS El Torito entry booting GRUB's
//!   `i386-pc-eltorito` core image, and an appended FAT32 EFI partition (systemd-boot, the
//!   UKI with profiles `main` and `reset`, `loader.conf`) that is also the EFI El Torito entry,
//!   announced by a protective MBR and a GPT. arm64 has the same layout (the i386-pc entry
//!   included, as upstream's).
//! - Talos < 1.10, the **GRUB ISO**: the same tree with GRUB's EFI modules too, the BIOS entry,
//!   and an EFI El Torito entry booting `/efi.img`, a FAT12 image holding GRUB's EFI core
//!   image (`EFI/BOOT/BOOTX64.EFI` or `BOOTAA64.EFI`).
//!
//! The GRUB core images come from `grub-mkimage` and the modules from Debian's GRUB
//! directories ([`super::tools`]); nothing else runs outside this process.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::disk::{EspFiles, write_sd_boot_esp};
use super::profile::Arch;
use super::tools::{Located, Tool};
use crate::formats::iso9660::{
    self, Appended, BiosBoot, EfiBoot, IsoFile, IsoLayout, IsoSpec, PartitionTable, Source,
};

/// `loader/loader.conf` of hybrid ISOs (no keys to enroll).
pub const LOADER_CONF: &[u8] =
    b"# systemd-boot configuration\n\ntimeout 10\n\nsecure-boot-enroll off\n";

/// The GRUB modules the BIOS core image holds (the rest load from `/boot/grub/i386-pc`).
const BIOS_CORE_MODULES: &[&str] = &["biosdisk", "iso9660"];
/// The GRUB modules the EFI core image holds: it finds the ISO by its UUID, then loads the
/// rest from `/boot/grub/<platform>`.
const EFI_CORE_MODULES: &[&str] = &["iso9660", "search", "search_fs_uuid"];
const MIB: u64 = 1 << 20;
/// The smallest FAT32 volume with 512-byte clusters (65525 clusters, two FATs, rounded up).
const MIN_FAT32: u64 = 33 * MIB;

/// Which ISO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsoKind {
    /// ≥ 1.10: GRUB for BIOS, systemd-boot + UKI in an appended EFI partition.
    Hybrid,
    /// < 1.10: GRUB for BIOS and UEFI.
    Grub,
}

impl IsoKind {
    /// The tools a build of this kind for `arch` needs (checked before any work).
    pub fn tools(self, arch: Arch) -> Vec<Tool> {
        let mut t = vec![Tool::GrubMkimage, Tool::GrubI386Pc];
        if self == IsoKind::Grub {
            t.push(match arch {
                Arch::Amd64 => Tool::GrubX86_64Efi,
                Arch::Arm64 => Tool::GrubArm64Efi,
            });
        }
        t
    }
}

/// Everything one ISO is made of.
#[derive(Debug, Clone)]
pub struct IsoInputs {
    /// Hybrid or GRUB.
    pub kind: IsoKind,
    /// The architecture (boot file names, GRUB's EFI platform).
    pub arch: Arch,
    /// The kernel (`boot/vmlinuz`).
    pub kernel: PathBuf,
    /// The initramfs with extensions (`boot/initramfs.xz`).
    pub initramfs: PathBuf,
    /// The command line of `grub.cfg`.
    pub cmdline: String,
    /// Hybrid: systemd-boot and the UKI.
    pub systemd_boot: Option<PathBuf>,
    /// Hybrid: the UKI.
    pub uki: Option<PathBuf>,
    /// The version tag (`v1.11.6`).
    pub version_tag: String,
    /// Volume ID and volume set ID (`None` before Talos 1.8).
    pub labels: Option<(String, String)>,
    /// Every date in the image (SOURCE_DATE_EPOCH).
    pub timestamp: u32,
    /// Seed of the FAT serial and GPT GUIDs (the asset key).
    pub seed: Vec<u8>,
}

/// Why an ISO was not built.
#[derive(Debug, thiserror::Error)]
pub enum IsoBuildError {
    /// `grub-mkimage` failed.
    #[error("grub-mkimage -O {format}")]
    GrubMkimage {
        /// The GRUB format.
        format: String,
        /// How it failed (its standard error, a timeout, a full disk).
        #[source]
        source: super::tools::RunError,
    },
    /// A hybrid ISO without systemd-boot or UKI (a programming error upstream of here).
    #[error("a hybrid ISO needs systemd-boot and a UKI")]
    MissingEfiParts,
    /// Reading GRUB's directory, writing a work file.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The ISO writer.
    #[error(transparent)]
    Iso(#[from] iso9660::IsoError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> IsoBuildError {
    let what = what.into();
    move |source| IsoBuildError::Io { what, source }
}

/// The GRUB ISO's EFI core finds the ISO by GRUB's ISO 9660 UUID: the PVD's modification date
/// as `YYYY-MM-DD-hh-mm-ss-cc`.
fn grub_iso_uuid(timestamp: u32) -> String {
    let d = iso9660::volume_date(i64::from(timestamp));
    let t = String::from_utf8_lossy(&d[..16]).into_owned();
    format!(
        "{}-{}-{}-{}-{}-{}-{}",
        &t[0..4],
        &t[4..6],
        &t[6..8],
        &t[8..10],
        &t[10..12],
        &t[12..14],
        &t[14..16]
    )
}

/// How long one `grub-mkimage` may run (it takes well under a second).
const GRUB_MKIMAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// `grub-mkimage` through [`tools::run`]: bounded in time and output, killed with whatever it
/// started, a full disk recognized as such.
fn grub_mkimage(
    tools: &Located,
    format: &str,
    dir: &Path,
    out: &Path,
    config: Option<&Path>,
    modules: &[&str],
) -> Result<(), IsoBuildError> {
    let mut args: Vec<&OsStr> = vec![
        "-O".as_ref(),
        format.as_ref(),
        "-d".as_ref(),
        dir.as_os_str(),
        "-p".as_ref(),
        "/boot/grub".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    if let Some(c) = config {
        args.push("-c".as_ref());
        args.push(c.as_os_str());
    }
    args.extend(modules.iter().map(|m| OsStr::new(*m)));
    let cwd = out.parent().unwrap_or(Path::new("/"));
    super::tools::run(
        tools.path(Tool::GrubMkimage),
        &args,
        cwd,
        GRUB_MKIMAGE_TIMEOUT,
    )
    .map_err(|source| IsoBuildError::GrubMkimage {
        format: format.to_string(),
        source,
    })
}

/// `<dir>/*.mod` and `*.lst` as `boot/grub/<platform>/<name>`, sorted.
fn grub_modules(dir: &Path, platform: &str) -> Result<Vec<IsoFile>, IsoBuildError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(format!("read {}", dir.display())))? {
        let entry = entry.map_err(io_err(format!("read {}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if (name.ends_with(".mod") || name.ends_with(".lst"))
            && entry.file_type().is_ok_and(|t| t.is_file())
        {
            names.push(name);
        }
    }
    names.sort();
    Ok(names
        .into_iter()
        .map(|n| IsoFile {
            path: format!("boot/grub/{platform}/{n}"),
            source: Source::Path(dir.join(&n)),
        })
        .collect())
}

/// Builds the ISO of `inputs` into `out`, using `work` (an empty directory) for the GRUB core
/// images and the EFI image.
pub fn build_iso(
    inputs: &IsoInputs,
    tools: &Located,
    work: &Path,
    out: &Path,
) -> Result<IsoLayout, IsoBuildError> {
    // Not `create_dir_all`: a build that timed out had its directory removed while this
    // thread ran on; recreating it would leave scratch files no one removes until restart.
    match std::fs::create_dir(work) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(io_err(format!("create {}", work.display()))(e));
        }
        _ => {}
    }
    let i386 = tools.path(Tool::GrubI386Pc);
    let eltorito = work.join("eltorito.img");
    grub_mkimage(
        tools,
        "i386-pc-eltorito",
        i386,
        &eltorito,
        None,
        BIOS_CORE_MODULES,
    )?;
    let mut files = vec![
        IsoFile {
            path: "boot/vmlinuz".into(),
            source: Source::Path(inputs.kernel.clone()),
        },
        IsoFile {
            path: "boot/initramfs.xz".into(),
            source: Source::Path(inputs.initramfs.clone()),
        },
        IsoFile {
            path: "boot/grub/grub.cfg".into(),
            source: Source::Bytes(super::grubcfg::iso_grub_cfg(&inputs.cmdline).into_bytes()),
        },
        IsoFile {
            path: "boot/grub/i386-pc/eltorito.img".into(),
            source: Source::Path(eltorito),
        },
    ];
    files.extend(grub_modules(i386, "i386-pc")?);
    let hybrid_mbr_path = i386.join("boot_hybrid.img");
    let hybrid_mbr = std::fs::read(&hybrid_mbr_path)
        .map_err(io_err(format!("read {}", hybrid_mbr_path.display())))?;
    let (boot_name, efi_platform, efi_tool) = match inputs.arch {
        Arch::Amd64 => ("BOOTX64.EFI", "x86_64-efi", Tool::GrubX86_64Efi),
        Arch::Arm64 => ("BOOTAA64.EFI", "arm64-efi", Tool::GrubArm64Efi),
    };
    let (efi, appended) = match inputs.kind {
        IsoKind::Hybrid => {
            let (Some(sd_boot), Some(uki)) = (&inputs.systemd_boot, &inputs.uki) else {
                return Err(IsoBuildError::MissingEfiParts);
            };
            let image = work.join("efiboot.img");
            write_esp_image(inputs, sd_boot, uki, boot_name, &image)?;
            (
                EfiBoot::AppendedPartition,
                Some(Appended {
                    image,
                    table: PartitionTable::Gpt,
                }),
            )
        }
        IsoKind::Grub => {
            let dir = tools.path(efi_tool);
            let config = work.join("embedded.cfg");
            std::fs::write(
                &config,
                format!(
                    "search --no-floppy --fs-uuid --set=root {}\nset prefix=($root)/boot/grub\n",
                    grub_iso_uuid(inputs.timestamp)
                ),
            )
            .map_err(io_err("write the EFI core image's configuration"))?;
            let core = work.join(boot_name);
            let format = match inputs.arch {
                Arch::Amd64 => "x86_64-efi",
                Arch::Arm64 => "arm64-efi",
            };
            grub_mkimage(tools, format, dir, &core, Some(&config), EFI_CORE_MODULES)?;
            let image = work.join("efi.img");
            write_grub_efi_image(inputs, &core, boot_name, &image)?;
            files.extend(grub_modules(dir, efi_platform)?);
            files.push(IsoFile {
                path: "efi.img".into(),
                source: Source::Path(image),
            });
            (EfiBoot::File("efi.img".into()), None)
        }
    };
    let (volume_id, volume_set_id) = inputs.labels.clone().unwrap_or_default();
    let spec = IsoSpec {
        volume_id,
        volume_set_id,
        timestamp: i64::from(inputs.timestamp),
        files,
        bios: Some(BiosBoot {
            path: "boot/grub/i386-pc/eltorito.img".into(),
            load_sectors: 4,
            boot_info_table: true,
            hybrid_mbr: Some(hybrid_mbr),
        }),
        efi: Some(efi),
        appended,
        seed: inputs.seed.clone(),
    };
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(io_err(format!("create {}", out.display())))?;
    Ok(iso9660::write_iso(&spec, &file)?)
}

fn fat_serial(seed: &[u8]) -> u32 {
    use sha2::{Digest as _, Sha256};
    let d = Sha256::new()
        .chain_update(seed)
        .chain_update(b"\0fat serial")
        .finalize();
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// The hybrid ISO's `efiboot.img`: upstream's size (10 MiB + systemd-boot and the UKI, each
/// rounded up to MiB), at least the smallest FAT32 volume.
fn write_esp_image(
    inputs: &IsoInputs,
    sd_boot: &Path,
    uki: &Path,
    boot_name: &str,
    image: &Path,
) -> Result<(), IsoBuildError> {
    let len = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len().div_ceil(MIB) * MIB)
            .map_err(io_err(format!("stat {}", p.display())))
    };
    let size = (10 * MIB + len(sd_boot)? + len(uki)?).max(MIN_FAT32);
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(image)
        .map_err(io_err("create efiboot.img"))?;
    file.set_len(size).map_err(io_err("size efiboot.img"))?;
    let uki_name = format!("Talos-{}.efi", inputs.version_tag);
    write_sd_boot_esp(
        &file,
        0,
        size,
        &EspFiles {
            serial: fat_serial(&inputs.seed),
            sector_size: 512,
            boot_dir: "BOOT",
            boot_file_name: boot_name,
            systemd_boot: sd_boot,
            uki_file_name: &uki_name,
            uki,
            loader_conf: LOADER_CONF,
        },
    )
    .map_err(io_err("write efiboot.img"))
}

/// The GRUB ISO's `efi.img`: FAT12 (at least 2880 KiB, grub-mkrescue's floppy size) with
/// `EFI/BOOT/<boot_name>`.
fn write_grub_efi_image(
    inputs: &IsoInputs,
    core: &Path,
    boot_name: &str,
    image: &Path,
) -> Result<(), IsoBuildError> {
    let core_len = std::fs::metadata(core)
        .map_err(io_err("stat GRUB's EFI core image"))?
        .len();
    let size = (core_len + 512 * 1024)
        .next_multiple_of(64 * 1024)
        .max(2880 * 1024);
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(image)
        .map_err(io_err("create efi.img"))?;
    file.set_len(size).map_err(io_err("size efi.img"))?;
    let what = "write efi.img";
    let mut window = super::disk::Window::new(&file, 0, size);
    fatfs::format_volume(
        &mut window,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat12)
            .volume_id(fat_serial(&inputs.seed)),
    )
    .map_err(io_err(what))?;
    use std::io::{Seek as _, SeekFrom};
    window.seek(SeekFrom::Start(0)).map_err(io_err(what))?;
    let fs = fatfs::FileSystem::new(window, fatfs::FsOptions::new()).map_err(io_err(what))?;
    {
        let boot = fs
            .root_dir()
            .create_dir("EFI")
            .and_then(|d| d.create_dir("BOOT"))
            .map_err(io_err(what))?;
        super::disk::copy_into(&boot, boot_name, core).map_err(io_err(what))?;
    }
    fs.unmount().map_err(io_err(what))?;
    file.sync_all().map_err(io_err(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_uuid_is_the_pvd_date() {
        assert_eq!(grub_iso_uuid(1_559_424_892), "2019-06-01-21-34-52-00");
    }

    /// A build whose directory is gone (removed when the build timed out) fails at once and
    /// does not recreate it.
    #[test]
    fn a_removed_build_directory_is_not_recreated() {
        let Ok(tools) = super::super::tools::require("an ISO", &IsoKind::Grub.tools(Arch::Amd64))
        else {
            eprintln!("GRUB not installed: skipped");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("build-removed");
        let inputs = IsoInputs {
            kind: IsoKind::Grub,
            arch: Arch::Amd64,
            kernel: dir.path().join("vmlinuz"),
            initramfs: dir.path().join("initramfs.xz"),
            cmdline: "talos.platform=metal".into(),
            systemd_boot: None,
            uki: None,
            version_tag: "v1.9.0".into(),
            labels: None,
            timestamp: 0,
            seed: Vec::new(),
        };
        let e = build_iso(&inputs, &tools, &gone.join("work"), &gone.join("asset")).unwrap_err();
        assert!(matches!(e, IsoBuildError::Io { .. }), "{e:?}");
        assert!(!gone.exists(), "the removed build directory was recreated");
    }

    #[test]
    fn tools_per_kind() {
        assert_eq!(
            IsoKind::Hybrid.tools(Arch::Arm64),
            vec![Tool::GrubMkimage, Tool::GrubI386Pc]
        );
        assert_eq!(
            IsoKind::Grub.tools(Arch::Amd64),
            vec![Tool::GrubMkimage, Tool::GrubI386Pc, Tool::GrubX86_64Efi]
        );
    }
}
