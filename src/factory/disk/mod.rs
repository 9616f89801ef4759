//! Raw disk images (`/image/<schematic>/<version>/<platform>-<arch>.raw`): the partition plan
//! ([`layout`]), the GPT ([`gpt`]), the EFI partition as FAT32 (`fatfs`) and META (the Talos
//! ADV, [`crate::formats::adv`]) in Rust; for GRUB and dual-boot images also `BOOT` (XFS made
//! by `mkfs.xfs` from a protofile, [`xfs`]) and GRUB (core images from `grub-mkimage`, the
//! boot sector and the BIOS partition written in Rust, [`grub`]). `docs/formats.md` §Disk
//! images. The file is sparse: only the GPT, the FAT structures, the files, the XFS data and
//! META's values are ever written.

pub mod convert;
pub mod gpt;
pub mod grub;
pub mod layout;
pub mod xfs;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::factory::tools::{Located, Tool};
use crate::formats::adv;
use layout::{DiskBootloader, DiskPlan};

/// `loader/loader.conf` of sd-boot images, byte for byte.
pub const LOADER_CONF: &[u8] = b"# systemd-boot configuration\n\ntimeout 10\n";

/// META key 0x11 (`DiskImageBootloader`) and its value in dual-boot images: Talos removes the
/// bootloader it did not boot with on first boot, then the key.
pub const META_DISK_IMAGE_BOOTLOADER: (u8, &[u8]) = (0x11, b"dual-boot");

/// The META values of an image: `values` (the schematic's), plus
/// [`META_DISK_IMAGE_BOOTLOADER`] for dual-boot unless `values` sets key 0x11 itself (upstream
/// writes the schematic's values after the bootloader's, so the schematic's wins).
pub fn image_meta(
    mut values: Vec<(u8, Vec<u8>)>,
    bootloader: DiskBootloader,
) -> Vec<(u8, Vec<u8>)> {
    let (key, value) = META_DISK_IMAGE_BOOTLOADER;
    if bootloader == DiskBootloader::DualBoot && !values.iter().any(|(k, _)| *k == key) {
        values.push((key, value.to_vec()));
    }
    values
}

/// What the EFI partition holds.
#[derive(Debug, Clone)]
pub enum EfiContents {
    /// sd-boot and dual-boot: systemd-boot, the UKI and `loader/loader.conf`.
    SdBoot {
        /// The imager's `systemd-boot.efi`.
        systemd_boot: PathBuf,
        /// `BOOTX64.efi` or `BOOTAA64.efi` (in `EFI/boot/`).
        boot_file_name: &'static str,
        /// The UKI.
        uki: PathBuf,
        /// `Talos-<vtag>.efi` (in `EFI/Linux/`).
        uki_file_name: String,
    },
    /// GRUB-only images: GRUB's EFI core image as `EFI/BOOT/<boot_file_name>`.
    Grub {
        /// The core image (`grub-mkimage -O x86_64-efi` or `arm64-efi`).
        image: PathBuf,
        /// `BOOTX64.EFI` or `BOOTAA64.EFI`.
        boot_file_name: &'static str,
    },
}

/// Everything a disk image is made of, ready to be written.
#[derive(Debug, Clone)]
pub struct DiskImage {
    /// The partition plan.
    pub plan: DiskPlan,
    /// Seed of the disk and partition GUIDs and the FAT serial (the asset key).
    pub seed: Vec<u8>,
    /// The EFI partition's files.
    pub efi: EfiContents,
    /// GRUB for BIOS: boot.img (for the MBR) and core.img (for the BIOS partition), as
    /// `grub-mkimage` made them; placed by [`grub::mbr_with_boot_code`] and
    /// [`grub::place_core`]. Needs a `BIOS` partition.
    pub bios: Option<(Vec<u8>, Vec<u8>)>,
    /// The `BOOT` file system, a file of exactly the partition's size. Needs a `BOOT`
    /// partition (GRUB and dual-boot plans have one and need this).
    pub boot_fs: Option<PathBuf>,
    /// META values (empty: META stays zero).
    pub meta: Vec<(u8, Vec<u8>)>,
}

/// Why a disk image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Reading the parts or writing the image failed.
    #[error("writing the disk image")]
    Io(#[from] io::Error),
    /// The parts do not fit the plan (a programming error or a broken host tool).
    #[error("{0}")]
    Invalid(String),
    /// GRUB's images could not be made or used.
    #[error("GRUB")]
    Grub(#[from] grub::GrubError),
    /// `BOOT` could not be made.
    #[error("the BOOT partition")]
    Xfs(#[from] xfs::XfsError),
}

/// Writes `image` to `out` as a sparse file.
pub fn write_disk_image(image: &DiskImage, out: &Path) -> Result<(), DiskError> {
    let plan = &image.plan;
    let (Some(efi), Some(meta)) = (plan.partition("EFI"), plan.partition("META")) else {
        return Err(DiskError::Invalid(
            "the plan has no EFI or META partition".into(),
        ));
    };
    let grubby = plan.bootloader != DiskBootloader::SdBoot;
    let boot_part = plan.partition("BOOT");
    let bios_part = plan.partition("BIOS");
    if grubby != image.boot_fs.is_some()
        || boot_part.is_some() != grubby
        || (image.bios.is_some() && bios_part.is_none())
        || (plan.bootloader == DiskBootloader::DualBoot && image.bios.is_none())
        || matches!(image.efi, EfiContents::Grub { .. })
            != (plan.bootloader == DiskBootloader::Grub)
    {
        return Err(DiskError::Invalid(format!(
            "the parts of the disk image do not match its {:?} plan",
            plan.bootloader
        )));
    }
    // META and GRUB's sectors first: what does not fit fails before anything big is written.
    let meta_bytes = if image.meta.is_empty() {
        None
    } else {
        let values: Vec<(u8, &[u8])> = image.meta.iter().map(|(k, v)| (*k, &v[..])).collect();
        Some(adv::encode_copies(&values).map_err(io::Error::other)?)
    };
    let bios = match (&image.bios, bios_part) {
        (Some((boot_img, core_img)), Some(part)) => {
            // GRUB's i386-pc boot code counts 512-byte sectors whatever the disk's sector size
            // (as `grub-bios-setup` writes them; `docs/formats.md` §4096-byte sectors).
            let core_lba = part.offset() / grub::GRUB_SECTOR;
            let mbr = grub::mbr_with_boot_code(
                boot_img,
                &gpt::protective_mbr(plan.last_lba()),
                core_lba,
            )?;
            let mut core = core_img.clone();
            grub::place_core(&mut core, core_lba)?;
            if core.len() as u64 > part.size() {
                return Err(DiskError::Invalid(format!(
                    "GRUB's core.img ({} bytes) does not fit the {} byte BIOS partition",
                    core.len(),
                    part.size()
                )));
            }
            Some((mbr, core, part.offset()))
        }
        _ => None,
    };
    let boot_fs = match (&image.boot_fs, boot_part) {
        (Some(path), Some(part)) => {
            let f = File::open(path)?;
            let len = f.metadata()?.len();
            if len != part.size() {
                return Err(DiskError::Invalid(format!(
                    "the BOOT file system is {len} bytes, the partition {}",
                    part.size()
                )));
            }
            Some((f, part.offset()))
        }
        _ => None,
    };
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)?;
    file.set_len(plan.size_bytes())?;
    gpt::write_gpt(&file, plan, &image.seed)?;
    write_efi(&file, efi, &image.seed, &image.efi)?;
    if let Some((mbr, core, at)) = bios {
        file.write_all_at(&mbr, 0)?;
        file.write_all_at(&core, at)?;
    }
    if let Some((fs, at)) = boot_fs {
        xfs::copy_data_at(&fs, &file, at)?;
    }
    if let Some(bytes) = meta_bytes {
        file.write_all_at(&bytes, meta.offset())?;
    }
    file.sync_all()?;
    Ok(())
}

/// Formats the EFI partition (FAT32, label `EFI`, serial from the seed) and writes its files.
fn write_efi(
    file: &File,
    efi: &layout::PlannedPartition,
    seed: &[u8],
    contents: &EfiContents,
) -> io::Result<()> {
    let serial = gpt::derived_guid(seed, "fat serial");
    let serial = u32::from_le_bytes([serial[0], serial[1], serial[2], serial[3]]);
    let sector_size = u16::try_from(efi.sector_size)
        .map_err(|_| io::Error::other(format!("sector size {}", efi.sector_size)))?;
    match contents {
        EfiContents::SdBoot {
            systemd_boot,
            boot_file_name,
            uki,
            uki_file_name,
        } => write_sd_boot_esp(
            file,
            efi.offset(),
            efi.size(),
            &EspFiles {
                serial,
                sector_size,
                boot_dir: "boot",
                boot_file_name,
                systemd_boot,
                uki_file_name,
                uki,
                loader_conf: LOADER_CONF,
            },
        ),
        EfiContents::Grub {
            image,
            boot_file_name,
        } => write_fat32(
            file,
            efi.offset(),
            efi.size(),
            serial,
            sector_size,
            |root| {
                let boot = root.create_dir("EFI")?.create_dir("BOOT")?;
                copy_into(&boot, boot_file_name, image)?;
                Ok(&[(3, 2), (4, 3)])
            },
        ),
    }
}

/// What an sd-boot EFI system partition holds: `EFI/<boot_dir>/<boot_file_name>`
/// (systemd-boot), `EFI/Linux/<uki_file_name>` and `loader/loader.conf`.
pub(crate) struct EspFiles<'a> {
    /// The FAT volume serial.
    pub serial: u32,
    /// Bytes per FAT sector: the disk's logical sector size (512 or 4096).
    pub sector_size: u16,
    /// `boot` (disk images) or `BOOT` (ISOs).
    pub boot_dir: &'a str,
    /// `BOOTX64.efi`, `BOOTAA64.EFI`, ….
    pub boot_file_name: &'a str,
    /// systemd-boot.
    pub systemd_boot: &'a Path,
    /// `Talos-<vtag>.efi`.
    pub uki_file_name: &'a str,
    /// The UKI.
    pub uki: &'a Path,
    /// `loader/loader.conf`.
    pub loader_conf: &'a [u8],
}

/// Formats `size` bytes of `file` from `offset` as FAT32 labelled `EFI` and writes `esp`'s
/// files into it, streamed (disk images' EFI partition, ISOs' `efiboot.img`).
pub(crate) fn write_sd_boot_esp(
    file: &File,
    offset: u64,
    size: u64,
    esp: &EspFiles<'_>,
) -> io::Result<()> {
    write_fat32(file, offset, size, esp.serial, esp.sector_size, |root| {
        let efi_dir = root.create_dir("EFI")?;
        let boot = efi_dir.create_dir(esp.boot_dir)?;
        let linux = efi_dir.create_dir("Linux")?;
        let loader = root.create_dir("loader")?;
        copy_into(&boot, esp.boot_file_name, esp.systemd_boot)?;
        copy_into(&linux, esp.uki_file_name, esp.uki)?;
        let mut conf = loader.create_file("loader.conf")?;
        conf.truncate()?;
        conf.write_all(esp.loader_conf)?;
        conf.flush()?;
        Ok(&[(3, 2), (4, 3), (5, 3), (6, 2)])
    })
}

/// Formats `size` bytes of `file` from `offset` as FAT32 labelled `EFI` with `serial` and
/// `sector_size`-byte sectors (as `mkfs.vfat` on a disk of that logical sector size), lets
/// `populate` fill the root, then fixes the `.`/`..` entries of the directories it names as
/// `(cluster, parent cluster)` ([`fix_dot_entries`]). `populate` must create its directories
/// before any file, so they take the clusters right after the root's, in its order. fatfs
/// picks 4 KiB clusters for the 1101/2101 MiB partitions of sd-boot and dual-boot images and
/// 512-byte clusters for the 100 MiB one of GRUB images (FAT32 needs 65525).
fn write_fat32(
    file: &File,
    offset: u64,
    size: u64,
    serial: u32,
    sector_size: u16,
    populate: impl FnOnce(&fatfs::Dir<'_, Window<'_>>) -> io::Result<&'static [(u32, u32)]>,
) -> io::Result<()> {
    // FAT32 needs 65525 clusters of at least one sector (the 100 MiB EFI partition of GRUB
    // images has 25600 sectors of 4 KiB).
    if size / u64::from(sector_size.max(1)) < 65525 {
        return Err(io::Error::other(format!(
            "{size} bytes of {sector_size}-byte sectors are too small for FAT32 (65525 clusters)"
        )));
    }
    let mut window = Window::new(file, offset, size);
    fatfs::format_volume(
        &mut window,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .bytes_per_sector(sector_size)
            .volume_label(*b"EFI        ")
            .volume_id(serial),
    )?;
    window.seek(SeekFrom::Start(0))?;
    let fs = fatfs::FileSystem::new(window, fatfs::FsOptions::new())?;
    let dirs = populate(&fs.root_dir())?;
    fs.unmount()?;
    let mut window = Window::new(file, offset, size);
    fix_dot_entries(&mut window, dirs)
}

/// Where the host's GRUB and XFS tools are, for one image build.
#[derive(Debug, Clone)]
pub struct GrubTools {
    /// `mkfs.xfs`.
    pub mkfs_xfs: PathBuf,
    /// `grub-mkimage`.
    pub grub_mkimage: PathBuf,
    /// The `i386-pc` module directory (BIOS GRUB), if the image carries it.
    pub i386_pc: Option<PathBuf>,
    /// The EFI platform and its module directory (GRUB-only images).
    pub efi: Option<(grub::Platform, PathBuf)>,
}

impl GrubTools {
    /// The tools a `bootloader` image for `arm64` or amd64 needs, in the order
    /// [`crate::factory::tools::require`] should check them (empty for sd-boot).
    pub fn needed(bootloader: DiskBootloader, arm64: bool) -> Vec<Tool> {
        match (bootloader, arm64) {
            (DiskBootloader::SdBoot, _) => vec![],
            (DiskBootloader::DualBoot, _) => {
                vec![Tool::MkfsXfs, Tool::GrubMkimage, Tool::GrubI386Pc]
            }
            (DiskBootloader::Grub, false) => vec![
                Tool::MkfsXfs,
                Tool::GrubMkimage,
                Tool::GrubI386Pc,
                Tool::GrubX86_64Efi,
            ],
            (DiskBootloader::Grub, true) => {
                vec![Tool::MkfsXfs, Tool::GrubMkimage, Tool::GrubArm64Efi]
            }
        }
    }

    /// From the located tools of [`GrubTools::needed`].
    pub fn from_located(located: &Located, bootloader: DiskBootloader, arm64: bool) -> Self {
        let needed = GrubTools::needed(bootloader, arm64);
        let has = |t: Tool| needed.contains(&t).then(|| located.path(t).to_path_buf());
        GrubTools {
            mkfs_xfs: located.path(Tool::MkfsXfs).to_path_buf(),
            grub_mkimage: located.path(Tool::GrubMkimage).to_path_buf(),
            i386_pc: has(Tool::GrubI386Pc),
            efi: has(Tool::GrubX86_64Efi)
                .map(|d| (grub::Platform::X86_64Efi, d))
                .or_else(|| has(Tool::GrubArm64Efi).map(|d| (grub::Platform::Arm64Efi, d))),
        }
    }
}

/// A GRUB or dual-boot image before its tools run.
#[derive(Debug, Clone)]
pub struct GrubImageSpec {
    /// The plan ([`DiskBootloader::Grub`] or [`DiskBootloader::DualBoot`]).
    pub plan: DiskPlan,
    /// Seed of the GUIDs, the FAT serial and the XFS UUID (the asset key).
    pub seed: Vec<u8>,
    /// Dual-boot: the sd-boot EFI partition ([`EfiContents::SdBoot`]); `None` for GRUB
    /// images, whose EFI partition gets GRUB's EFI image.
    pub sd_boot_efi: Option<EfiContents>,
    /// The kernel (`A/vmlinuz`).
    pub kernel: PathBuf,
    /// The initramfs (`A/initramfs.xz`).
    pub initrd: PathBuf,
    /// `grub/grub.cfg`.
    pub grub_cfg: String,
    /// The host's tools.
    pub tools: GrubTools,
    /// META values, 0x11 included for dual-boot.
    pub meta: Vec<(u8, Vec<u8>)>,
    /// Limit for each external program.
    pub timeout: Duration,
}

/// Builds a GRUB or dual-boot image into `out`: core images with `grub-mkimage`, `BOOT` with
/// `mkfs.xfs` (kernel, initramfs, `grub.cfg`, each platform's modules and core image), then
/// [`write_disk_image`]. Scratch files live in a temporary directory beside `out`, removed
/// when done (or failed).
pub fn write_grub_image(spec: &GrubImageSpec, out: &Path) -> Result<(), DiskError> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let work = Scratch::create(parent)?;
    let w = work.0.as_path();
    let tools = &spec.tools;
    let mut files = vec![
        xfs::BootFile {
            dest: "A/vmlinuz".into(),
            source: spec.kernel.clone(),
        },
        xfs::BootFile {
            dest: "A/initramfs.xz".into(),
            source: spec.initrd.clone(),
        },
    ];
    let cfg = w.join("grub.cfg");
    std::fs::write(&cfg, &spec.grub_cfg)?;
    files.push(xfs::BootFile {
        dest: "grub/grub.cfg".into(),
        source: cfg,
    });
    let mut bios = None;
    if let Some(dir) = &tools.i386_pc {
        let platform = grub::Platform::I386Pc;
        let core = w.join("core.img");
        grub::mkimage(&tools.grub_mkimage, platform, dir, &core, w, spec.timeout)?;
        let boot_img = std::fs::read(dir.join("boot.img"))?;
        bios = Some((boot_img, std::fs::read(&core)?));
        add_platform_files(&mut files, platform, dir, &core)?;
    }
    let efi = match (&spec.sd_boot_efi, &tools.efi) {
        (Some(sd), _) => sd.clone(),
        (None, Some((platform, dir))) => {
            let image = w.join("core.efi");
            grub::mkimage(&tools.grub_mkimage, *platform, dir, &image, w, spec.timeout)?;
            add_platform_files(&mut files, *platform, dir, &image)?;
            EfiContents::Grub {
                image,
                boot_file_name: match platform {
                    grub::Platform::Arm64Efi => "BOOTAA64.EFI",
                    _ => "BOOTX64.EFI",
                },
            }
        }
        (None, None) => {
            return Err(DiskError::Invalid("a GRUB image needs GRUB for EFI".into()));
        }
    };
    let Some(boot_part) = spec.plan.partition("BOOT") else {
        return Err(DiskError::Invalid("the plan has no BOOT partition".into()));
    };
    let boot_fs = w.join("boot.xfs");
    let staging = w.join("xfs");
    std::fs::create_dir(&staging)?;
    let uuid = gpt::derived_guid(&spec.seed, "xfs uuid");
    xfs::make_boot_fs(
        &tools.mkfs_xfs,
        &staging,
        &files,
        &uuid,
        boot_part.size(),
        spec.plan.sector_size,
        &boot_fs,
        spec.timeout,
    )?;
    let image = DiskImage {
        plan: spec.plan.clone(),
        seed: spec.seed.clone(),
        efi,
        bios,
        boot_fs: Some(boot_fs),
        meta: spec.meta.clone(),
    };
    write_disk_image(&image, out)
}

/// A scratch directory beside the output, removed when dropped (also on failure).
struct Scratch(PathBuf);

impl Scratch {
    fn create(parent: &Path) -> io::Result<Scratch> {
        let dir = parent.join(format!(
            ".grub-image-{}",
            hex::encode(rand::random::<[u8; 8]>())
        ));
        std::fs::create_dir(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `grub/<platform>/`: every `*.mod` and `*.lst` of the host's module directory (as
/// `grub-install` copies them), and the core image (`core.img` plus `boot.img`, or `core.efi`).
fn add_platform_files(
    files: &mut Vec<xfs::BootFile>,
    platform: grub::Platform,
    dir: &Path,
    core: &Path,
) -> io::Result<()> {
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        if let Some(name) = entry.file_name().to_str()
            && (name.ends_with(".mod") || name.ends_with(".lst"))
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    let base = format!("grub/{}", platform.name());
    for name in names {
        files.push(xfs::BootFile {
            dest: format!("{base}/{name}"),
            source: dir.join(&name),
        });
    }
    files.push(xfs::BootFile {
        dest: format!("{base}/{}", platform.core_file_name()),
        source: core.to_path_buf(),
    });
    if platform == grub::Platform::I386Pc {
        files.push(xfs::BootFile {
            dest: format!("{base}/boot.img"),
            source: dir.join("boot.img"),
        });
    }
    Ok(())
}

/// fatfs 0.3 writes a long-name entry before each `.` and `..` of a new directory and points
/// `..` of a directory in the root at cluster 2. FAT wants `.` and `..` as the first two
/// entries and `..` = 0 for the root (`fsck.vfat` renames and deletes them otherwise). For
/// each `(directory cluster, parent cluster)` this checks that the first four entries are
/// exactly `LFN, ".", LFN, ".."` and rewrites them as `".", "..", deleted, deleted`.
fn fix_dot_entries(window: &mut Window<'_>, dirs: &[(u32, u32)]) -> io::Result<()> {
    let mut bpb = [0u8; 512];
    window.seek(SeekFrom::Start(0))?;
    window.read_exact(&mut bpb)?;
    let bytes_per_sector = u64::from(u16::from_le_bytes([bpb[11], bpb[12]]));
    let sectors_per_cluster = u64::from(bpb[13]);
    let reserved = u64::from(u16::from_le_bytes([bpb[14], bpb[15]]));
    let fats = u64::from(bpb[16]);
    let per_fat = u64::from(u32::from_le_bytes([bpb[36], bpb[37], bpb[38], bpb[39]]));
    let data = (reserved + fats * per_fat) * bytes_per_sector;
    let cluster_size = sectors_per_cluster * bytes_per_sector;
    let root = u32::from_le_bytes([bpb[44], bpb[45], bpb[46], bpb[47]]);
    for &(dir, parent) in dirs {
        let at = data + u64::from(dir - 2) * cluster_size;
        let mut e = [0u8; 128];
        window.seek(SeekFrom::Start(at))?;
        window.read_exact(&mut e)?;
        let cluster = |x: &[u8]| {
            u32::from(u16::from_le_bytes([x[20], x[21]])) << 16
                | u32::from(u16::from_le_bytes([x[26], x[27]]))
        };
        let (lfn1, dot, lfn2, dotdot) = (&e[..32], &e[32..64], &e[64..96], &e[96..]);
        if lfn1[11] != 0x0f
            || lfn2[11] != 0x0f
            || &dot[..11] != b".          "
            || &dotdot[..11] != b"..         "
            || cluster(dot) != dir
            || cluster(dotdot) != parent
        {
            return Err(io::Error::other(format!(
                "unexpected dot entries in directory cluster {dir}"
            )));
        }
        let mut fixed = [0u8; 128];
        fixed[..32].copy_from_slice(dot);
        fixed[32..64].copy_from_slice(dotdot);
        if parent == root {
            fixed[32 + 20..32 + 22].fill(0);
            fixed[32 + 26..32 + 28].fill(0);
        }
        fixed[64] = 0xe5;
        fixed[96] = 0xe5;
        window.seek(SeekFrom::Start(at))?;
        window.write_all(&fixed)?;
    }
    Ok(())
}

/// Streams `src` into a new file `name` of `dir` (1 MiB at a time).
pub(crate) fn copy_into<T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<'_, T>,
    name: &str,
    src: &Path,
) -> io::Result<()> {
    let mut input = File::open(src)?;
    let mut f = dir.create_file(name)?;
    f.truncate()?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        f.write_all(&buf[..n])?;
    }
    f.flush()
}

/// A `Read + Write + Seek` view of `len` bytes of a file from `start` (positional I/O, so
/// nothing outside the range is touched).
pub(crate) struct Window<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> Window<'a> {
    pub(crate) fn new(file: &'a File, start: u64, len: u64) -> Window<'a> {
        Window {
            file,
            start,
            len,
            pos: 0,
        }
    }

    fn room(&self, want: usize) -> usize {
        want.min(self.len.saturating_sub(self.pos) as usize)
    }
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for Window<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let put = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(n) if n <= self.len => {
                self.pos = n;
                Ok(n)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factory::quirks::Quirks;

    #[test]
    fn window_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        f.set_len(100).unwrap();
        let mut w = Window::new(&f, 10, 20);
        assert_eq!(w.seek(SeekFrom::End(0)).unwrap(), 20);
        assert!(w.seek(SeekFrom::Current(1)).is_err());
        w.seek(SeekFrom::Start(15)).unwrap();
        assert_eq!(w.write(b"0123456789").unwrap(), 5);
        assert!(w.write(b"x").is_err());
        let mut all = vec![0u8; 100];
        f.read_at(&mut all, 0).unwrap();
        assert_eq!(&all[25..30], b"01234");
        assert!(all[30..].iter().all(|b| *b == 0));
    }

    #[test]
    fn writes_a_sparse_sd_boot_image() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot.efi");
        let uki = dir.path().join("uki.efi");
        std::fs::write(&boot, b"MZ systemd-boot").unwrap();
        let uki_bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&uki, &uki_bytes).unwrap();
        let plan = layout::plan(
            &Quirks::from_tag("v1.11.6"),
            DiskBootloader::SdBoot,
            1246,
            512,
        )
        .unwrap();
        let out = dir.path().join("disk.raw");
        let image = DiskImage {
            plan: plan.clone(),
            seed: b"seed".to_vec(),
            efi: EfiContents::SdBoot {
                systemd_boot: boot,
                boot_file_name: "BOOTX64.efi",
                uki,
                uki_file_name: "Talos-v1.11.6.efi".into(),
            },
            bios: None,
            boot_fs: None,
            meta: vec![(0x0c, b"hello".to_vec())],
        };
        write_disk_image(&image, &out).unwrap();
        let f = File::open(&out).unwrap();
        let md = f.metadata().unwrap();
        assert_eq!(md.len(), 2246 << 20);
        use std::os::unix::fs::MetadataExt as _;
        assert!(
            md.blocks() * 512 < 64 << 20,
            "not sparse: {} blocks",
            md.blocks()
        );
        let efi = plan.partition("EFI").unwrap();
        let fs = fatfs::FileSystem::new(
            Window::new(&f, efi.offset(), efi.size()),
            fatfs::FsOptions::new(),
        )
        .unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        let mut got = Vec::new();
        fs.root_dir()
            .open_file("EFI/Linux/Talos-v1.11.6.efi")
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert!(got == uki_bytes);
        let mut conf = Vec::new();
        fs.root_dir()
            .open_file("loader/loader.conf")
            .unwrap()
            .read_to_end(&mut conf)
            .unwrap();
        assert_eq!(conf, LOADER_CONF);
        let meta = plan.partition("META").unwrap();
        let mut m = vec![0u8; adv::PARTITION];
        f.read_at(&mut m, meta.offset()).unwrap();
        assert_eq!(adv::decode_partition(&m), vec![(0x0c, b"hello".to_vec())]);
        // Same inputs, same bytes.
        let again = dir.path().join("again.raw");
        write_disk_image(&image, &again).unwrap();
        let mut a = vec![0u8; 1 << 20];
        let mut b = vec![0u8; 1 << 20];
        f.read_at(&mut a, efi.offset()).unwrap();
        File::open(&again)
            .unwrap()
            .read_at(&mut b, efi.offset())
            .unwrap();
        assert!(a == b);
    }

    /// EFI partitions with 4096-byte sectors (the 2101 and 1101 MiB ones of sd-boot and
    /// dual-boot images; one through `write_fat32` as GRUB images do): the BPB says 4096, fatfs reads the files back, the dot entries are fixed,
    /// and `fsck.vfat -n` (when installed) finds nothing to repair.
    #[test]
    fn fat32_with_4096_byte_sectors() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot.efi");
        let uki = dir.path().join("uki.efi");
        std::fs::write(&boot, b"MZ systemd-boot").unwrap();
        let uki_bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&uki, &uki_bytes).unwrap();
        for (size_mib, sd_boot) in [(2101u64, true), (1101, false)] {
            let path = dir.path().join(format!("esp{size_mib}"));
            let f = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            let size = size_mib << 20;
            f.set_len(size).unwrap();
            if sd_boot {
                write_sd_boot_esp(
                    &f,
                    0,
                    size,
                    &EspFiles {
                        serial: 7,
                        sector_size: 4096,
                        boot_dir: "boot",
                        boot_file_name: "BOOTX64.efi",
                        systemd_boot: &boot,
                        uki_file_name: "Talos-v1.11.6.efi",
                        uki: &uki,
                        loader_conf: LOADER_CONF,
                    },
                )
                .unwrap();
            } else {
                write_fat32(&f, 0, size, 7, 4096, |root| {
                    let b = root.create_dir("EFI")?.create_dir("BOOT")?;
                    copy_into(&b, "BOOTX64.EFI", &uki)?;
                    Ok(&[(3, 2), (4, 3)])
                })
                .unwrap();
            }
            let mut bpb = [0u8; 512];
            f.read_exact_at(&mut bpb, 0).unwrap();
            assert_eq!(u16::from_le_bytes([bpb[11], bpb[12]]), 4096, "{size_mib}");
            let fs =
                fatfs::FileSystem::new(Window::new(&f, 0, size), fatfs::FsOptions::new()).unwrap();
            assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
            let name = if sd_boot {
                "EFI/Linux/Talos-v1.11.6.efi"
            } else {
                "EFI/BOOT/BOOTX64.EFI"
            };
            let mut got = Vec::new();
            fs.root_dir()
                .open_file(name)
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            assert!(got == uki_bytes, "{size_mib}");
            let dot: Vec<String> = fs
                .root_dir()
                .open_dir("EFI")
                .unwrap()
                .iter()
                .take(2)
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(dot, [".", ".."]);
            drop(fs);
            for fsck in ["/usr/sbin/fsck.vfat", "/sbin/fsck.vfat"] {
                if Path::new(fsck).exists() {
                    let o = std::process::Command::new(fsck)
                        .arg("-n")
                        .arg(&path)
                        .output()
                        .unwrap();
                    let text = String::from_utf8_lossy(&o.stdout).into_owned()
                        + &String::from_utf8_lossy(&o.stderr);
                    assert!(o.status.success(), "{size_mib} MiB: {text}");
                    // fatfs leaves FSInfo's free count unset, as at 512 bytes: a note only.
                    assert!(text.contains("files,"), "{text}");
                    assert!(
                        !text.contains("Deleting") && !text.contains("renamed"),
                        "{text}"
                    );
                    break;
                }
            }
        }
    }

    /// The GRUB layout's 100 MiB EFI partition in 4096-byte sectors is refused by name.
    #[test]
    fn fat32_refuses_too_few_sectors() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("esp"))
            .unwrap();
        f.set_len(100 << 20).unwrap();
        use std::os::unix::fs::MetadataExt as _;
        let e = write_fat32(&f, 0, 100 << 20, 1, 4096, |_| Ok(&[])).unwrap_err();
        assert!(e.to_string().contains("too small for FAT32"), "{e}");
        assert_eq!(f.metadata().unwrap().blocks(), 0, "nothing written");
        write_fat32(&f, 0, 100 << 20, 1, 512, |_| Ok(&[])).unwrap();
    }

    #[test]
    fn dual_boot_meta_gets_0x11_once() {
        let user = vec![(0x0c, b"x".to_vec())];
        assert_eq!(
            image_meta(user.clone(), DiskBootloader::DualBoot),
            vec![(0x0c, b"x".to_vec()), (0x11, b"dual-boot".to_vec())]
        );
        assert_eq!(image_meta(user.clone(), DiskBootloader::Grub), user);
        assert_eq!(image_meta(user.clone(), DiskBootloader::SdBoot), user);
        let own = vec![(0x11, b"sd-boot".to_vec())];
        assert_eq!(image_meta(own.clone(), DiskBootloader::DualBoot), own);
    }

    #[test]
    fn parts_must_match_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let efi = EfiContents::SdBoot {
            systemd_boot: dir.path().join("b"),
            boot_file_name: "BOOTX64.efi",
            uki: dir.path().join("u"),
            uki_file_name: "Talos-v1.11.6.efi".into(),
        };
        let q = Quirks::from_tag("v1.11.6");
        // A dual-boot plan without BOOT or GRUB; an sd-boot plan with a BOOT file system.
        for (bl, boot_fs) in [
            (DiskBootloader::DualBoot, None),
            (DiskBootloader::SdBoot, Some(dir.path().join("x"))),
        ] {
            let image = DiskImage {
                plan: layout::plan(&q, bl, 1246, 512).unwrap(),
                seed: vec![],
                efi: efi.clone(),
                bios: None,
                boot_fs,
                meta: vec![],
            };
            let e = write_disk_image(&image, &dir.path().join("out")).unwrap_err();
            assert!(matches!(e, DiskError::Invalid(_)), "{e:?}");
            assert!(!dir.path().join("out").exists(), "nothing written");
        }
    }

    /// A GRUB image (Talos 1.8 amd64) with the host's real tools, when they are here: the MBR
    /// and the BIOS partition point at each other, `BOOTX64.EFI` is GRUB's, META holds the
    /// values, and no scratch file is left beside the output.
    #[test]
    fn grub_image_with_the_hosts_tools() {
        use crate::factory::tools::require;
        let needed = GrubTools::needed(DiskBootloader::Grub, false);
        let Ok(located) = require("a test", &needed) else {
            eprintln!("xfsprogs or GRUB not installed: skipped");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinuz");
        let initrd = dir.path().join("initramfs.xz");
        std::fs::write(&kernel, vec![0x4b; 300_000]).unwrap();
        std::fs::write(&initrd, vec![0x49; 100_000]).unwrap();
        let out_dir = dir.path().join("build");
        std::fs::create_dir(&out_dir).unwrap();
        let out = out_dir.join("asset");
        let plan =
            layout::plan(&Quirks::from_tag("v1.8.4"), DiskBootloader::Grub, 1246, 512).unwrap();
        let spec = GrubImageSpec {
            plan: plan.clone(),
            seed: b"key".to_vec(),
            sd_boot_efi: None,
            kernel,
            initrd,
            grub_cfg: crate::factory::grubcfg::disk_grub_cfg(
                "v1.8.4",
                "talos.platform=metal",
                true,
            ),
            tools: GrubTools::from_located(&located, DiskBootloader::Grub, false),
            meta: vec![(0x0c, b"m".to_vec())],
            timeout: Duration::from_secs(120),
        };
        write_grub_image(&spec, &out).unwrap();
        let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "scratch left behind: {left:?}");
        let f = File::open(&out).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 1246 << 20);
        let mut mbr = [0u8; 512];
        f.read_exact_at(&mut mbr, 0).unwrap();
        let bios = plan.partition("BIOS").unwrap();
        assert_eq!(
            u64::from_le_bytes(
                mbr[grub::KERNEL_SECTOR..grub::KERNEL_SECTOR + 8]
                    .try_into()
                    .unwrap()
            ),
            bios.first_lba
        );
        assert_eq!(mbr[446 + 4], 0xee);
        let mut core = [0u8; 512];
        f.read_exact_at(&mut core, bios.offset()).unwrap();
        assert_eq!(
            u64::from_le_bytes(core[0x1f4..0x1fc].try_into().unwrap()),
            bios.first_lba + 1
        );
        let efi = plan.partition("EFI").unwrap();
        let fs = fatfs::FileSystem::new(
            Window::new(&f, efi.offset(), efi.size()),
            fatfs::FsOptions::new(),
        )
        .unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        let mut pe = Vec::new();
        fs.root_dir()
            .open_file("EFI/BOOT/BOOTX64.EFI")
            .unwrap()
            .read_to_end(&mut pe)
            .unwrap();
        assert_eq!(&pe[..2], b"MZ");
        // XFS's superblock magic at BOOT's start.
        let boot = plan.partition("BOOT").unwrap();
        let mut sb = [0u8; 4];
        f.read_exact_at(&mut sb, boot.offset()).unwrap();
        assert_eq!(&sb, b"XFSB");
        let meta = plan.partition("META").unwrap();
        let mut m = vec![0u8; adv::PARTITION];
        f.read_exact_at(&mut m, meta.offset()).unwrap();
        assert_eq!(adv::decode_partition(&m), vec![(0x0c, b"m".to_vec())]);
    }

    /// A dual-boot image of 4096-byte sectors with the host's tools: the GPT at byte 4096,
    /// FAT32 and XFS of 4096-byte sectors, and GRUB's boot sector and blocklist in 512-byte
    /// units (the BIOS partition's first LBA × 8), as `grub-bios-setup` writes them.
    #[test]
    fn dual_boot_image_with_4096_byte_sectors() {
        use crate::factory::tools::require;
        let needed = GrubTools::needed(DiskBootloader::DualBoot, false);
        let Ok(located) = require("a test", &needed) else {
            eprintln!("xfsprogs or GRUB not installed: skipped");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinuz");
        let initrd = dir.path().join("initramfs.xz");
        let sd_boot = dir.path().join("systemd-boot.efi");
        let uki = dir.path().join("uki.efi");
        std::fs::write(&kernel, vec![0x4b; 300_000]).unwrap();
        std::fs::write(&initrd, vec![0x49; 100_000]).unwrap();
        std::fs::write(&sd_boot, b"MZ sd-boot").unwrap();
        std::fs::write(&uki, b"MZ uki").unwrap();
        let out = dir.path().join("asset");
        let plan = layout::plan(
            &Quirks::from_tag("v1.11.6"),
            DiskBootloader::DualBoot,
            1246,
            4096,
        )
        .unwrap();
        let spec = GrubImageSpec {
            plan: plan.clone(),
            seed: b"key".to_vec(),
            sd_boot_efi: Some(EfiContents::SdBoot {
                systemd_boot: sd_boot,
                boot_file_name: "BOOTX64.efi",
                uki,
                uki_file_name: "Talos-v1.11.6.efi".into(),
            }),
            kernel,
            initrd,
            grub_cfg: crate::factory::grubcfg::disk_grub_cfg("v1.11.6", "x", true),
            tools: GrubTools::from_located(&located, DiskBootloader::DualBoot, false),
            meta: image_meta(vec![], DiskBootloader::DualBoot),
            timeout: Duration::from_secs(120),
        };
        write_grub_image(&spec, &out).unwrap();
        let f = File::open(&out).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 4247 << 20);
        let mut sig = [0u8; 8];
        f.read_exact_at(&mut sig, 4096).unwrap();
        assert_eq!(&sig, b"EFI PART");
        let bios = plan.partition("BIOS").unwrap();
        assert_eq!(bios.first_lba, 538112);
        let mut mbr = [0u8; 512];
        f.read_exact_at(&mut mbr, 0).unwrap();
        assert_eq!(
            u64::from_le_bytes(
                mbr[grub::KERNEL_SECTOR..grub::KERNEL_SECTOR + 8]
                    .try_into()
                    .unwrap()
            ),
            538112 * 8
        );
        assert_eq!(mbr[446 + 4], 0xee);
        assert_eq!(
            u32::from_le_bytes(mbr[446 + 12..446 + 16].try_into().unwrap()),
            4247 * 256 - 1
        );
        let mut core = [0u8; 512];
        f.read_exact_at(&mut core, bios.offset()).unwrap();
        assert_eq!(
            u64::from_le_bytes(core[0x1f4..0x1fc].try_into().unwrap()),
            538112 * 8 + 1
        );
        let efi = plan.partition("EFI").unwrap();
        let mut bpb = [0u8; 512];
        f.read_exact_at(&mut bpb, efi.offset()).unwrap();
        assert_eq!(u16::from_le_bytes([bpb[11], bpb[12]]), 4096);
        let boot = plan.partition("BOOT").unwrap();
        let mut sb = [0u8; 104];
        f.read_exact_at(&mut sb, boot.offset()).unwrap();
        assert_eq!(&sb[..4], b"XFSB");
        assert_eq!(u16::from_be_bytes([sb[102], sb[103]]), 4096, "sb_sectsize");
        let meta = plan.partition("META").unwrap();
        assert_eq!(meta.offset(), 8402944 * 512);
        let mut m = vec![0u8; adv::PARTITION];
        f.read_exact_at(&mut m, meta.offset()).unwrap();
        assert_eq!(
            adv::decode_partition(&m),
            vec![(0x11, b"dual-boot".to_vec())]
        );
    }
}
