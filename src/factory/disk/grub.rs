//! GRUB in disk images (`docs/formats.md` §GRUB and dual-boot images): `grub-mkimage` makes
//! the core images, and this module does what `grub-bios-setup` would do for a BIOS boot
//! partition, in Rust, on the image file: boot.img into the MBR's code area (with the kernel
//! sector patched and the protective MBR's partition table kept) and core.img into the BIOS
//! partition (with the blocklist at the end of its first sector, diskboot.img, pointing at
//! the rest). No loop device, no mount, no `grub-install`.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use crate::factory::tools::{self, RunError};

/// Offset of the 64-bit LBA of core.img's first sector in boot.img
/// (`GRUB_BOOT_MACHINE_KERNEL_SECTOR`).
pub const KERNEL_SECTOR: usize = 0x5c;
/// Offset of the boot drive byte in boot.img (`GRUB_BOOT_MACHINE_BOOT_DRIVE`; 0xff: use the
/// drive the BIOS passes in `DL`).
pub const BOOT_DRIVE: usize = 0x64;
/// Offset of the 2-byte `jmp` that skips boot.img's drive-number check
/// (`GRUB_BOOT_MACHINE_DRIVE_CHECK`); `grub-bios-setup` replaces it by two `nop`s for hard
/// disks (the workaround for BIOSes that pass a wrong drive number).
pub const DRIVE_CHECK: usize = 0x66;
/// Start and end of the DOS BPB area boot.img leaves for the disk's own bytes
/// (`GRUB_BOOT_MACHINE_BPB_START`, `_END`).
pub const BPB: std::ops::Range<usize> = 0x03..0x5a;
/// The disk's own bytes kept at the MBR's end: disk signature, the four partition entries
/// (`GRUB_BOOT_MACHINE_WINDOWS_NT_MAGIC` .. `GRUB_BOOT_MACHINE_PART_END`).
pub const PARTITION_TABLE: std::ops::Range<usize> = 0x1b8..0x1fe;
/// Size of one blocklist entry at the end of diskboot.img: `start: u64, len: u16, segment: u16`.
const BLOCKLIST_ENTRY: usize = 12;
/// The segment the rest of core.img is loaded to (`GRUB_BOOT_I386_PC_KERNEL_SEG` + one sector).
pub const CORE_SEGMENT: u16 = 0x820;
const SECTOR: usize = 512;
/// The sector GRUB's i386-pc boot code (boot.img, diskboot.img) counts in: its LBAs and
/// blocklists are 512-byte units on any disk.
pub const GRUB_SECTOR: u64 = SECTOR as u64;

/// Why a GRUB boot sector or core image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GrubError {
    /// boot.img is not a 512-byte boot sector.
    #[error("boot.img is not a 512-byte boot sector ending in 55 AA ({0} bytes)")]
    BootImage(usize),
    /// core.img is not what `grub-mkimage -O i386-pc` makes.
    #[error("core.img: {0}")]
    CoreImage(String),
    /// `grub-mkimage` failed.
    #[error("grub-mkimage -O {format}")]
    Mkimage {
        /// The GRUB image format.
        format: &'static str,
        /// Why.
        #[source]
        source: RunError,
    },
}

/// The MBR of a BIOS-bootable GRUB disk: boot.img, except for the BPB area and the partition
/// table (disk signature and the four entries), which stay as they are in `mbr` (the
/// protective MBR); the drive check disabled (two `nop`s), the boot drive 0xff and
/// `core_lba` as the kernel sector. What `grub-bios-setup` writes.
pub fn mbr_with_boot_code(
    boot_img: &[u8],
    mbr: &[u8; 512],
    core_lba: u64,
) -> Result<[u8; 512], GrubError> {
    let Ok(boot) = <[u8; 512]>::try_from(boot_img) else {
        return Err(GrubError::BootImage(boot_img.len()));
    };
    if boot[510..] != [0x55, 0xaa] {
        return Err(GrubError::BootImage(boot_img.len()));
    }
    let mut out = boot;
    out[BPB].copy_from_slice(&mbr[BPB]);
    out[PARTITION_TABLE].copy_from_slice(&mbr[PARTITION_TABLE]);
    out[DRIVE_CHECK] = 0x90;
    out[DRIVE_CHECK + 1] = 0x90;
    out[BOOT_DRIVE] = 0xff;
    out[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    Ok(out)
}

/// Pads `core` (a `grub-mkimage -O i386-pc` image, diskboot.img first) to whole sectors and
/// points its blocklist at the sectors after `core_lba`, where it is written contiguously:
/// one entry `(core_lba + 1, sectors − 1, 0x820)` at the end of the first sector and a zero
/// terminator below it. Reed-Solomon redundancy is not added (`grub-install --no-rs-codes`).
pub fn place_core(core: &mut Vec<u8>, core_lba: u64) -> Result<(), GrubError> {
    if core.len() < 2 * SECTOR {
        return Err(GrubError::CoreImage(format!(
            "{} bytes is too small",
            core.len()
        )));
    }
    let sectors = core.len().div_ceil(SECTOR);
    core.resize(sectors * SECTOR, 0);
    let last = SECTOR - BLOCKLIST_ENTRY;
    let segment = u16::from_le_bytes([core[last + 10], core[last + 11]]);
    if segment != CORE_SEGMENT {
        return Err(GrubError::CoreImage(format!(
            "the first sector is not diskboot.img (blocklist segment {segment:#x}, want {CORE_SEGMENT:#x})"
        )));
    }
    let rest = u16::try_from(sectors - 1)
        .map_err(|_| GrubError::CoreImage(format!("{sectors} sectors is too big")))?;
    core[last..last + 8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    core[last + 8..last + 10].copy_from_slice(&rest.to_le_bytes());
    core[last + 10..last + 12].copy_from_slice(&CORE_SEGMENT.to_le_bytes());
    core[last - BLOCKLIST_ENTRY..last].fill(0);
    Ok(())
}

/// A GRUB platform an image carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// BIOS (`i386-pc`): boot.img in the MBR, core.img in the BIOS partition.
    I386Pc,
    /// amd64 UEFI: `EFI/BOOT/BOOTX64.EFI`.
    X86_64Efi,
    /// arm64 UEFI: `EFI/BOOT/BOOTAA64.EFI`.
    Arm64Efi,
}

impl Platform {
    /// GRUB's name for it (`grub-mkimage -O`, the module directory's name).
    pub fn name(self) -> &'static str {
        match self {
            Platform::I386Pc => "i386-pc",
            Platform::X86_64Efi => "x86_64-efi",
            Platform::Arm64Efi => "arm64-efi",
        }
    }

    /// Modules built into the core image: disk access (BIOS), the GPT and XFS, to read
    /// `/grub` on `BOOT`; everything else is loaded from there.
    pub fn core_modules(self) -> &'static [&'static str] {
        match self {
            Platform::I386Pc => &["biosdisk", "part_gpt", "xfs"],
            Platform::X86_64Efi | Platform::Arm64Efi => &["part_gpt", "xfs", "fat"],
        }
    }

    /// The core image's file name in `/grub/<platform>/` on `BOOT`.
    pub fn core_file_name(self) -> &'static str {
        match self {
            Platform::I386Pc => "core.img",
            Platform::X86_64Efi | Platform::Arm64Efi => "core.efi",
        }
    }
}

/// GRUB's prefix in every core image: partition 3 (`BOOT`) of the disk GRUB was loaded from
/// (an empty drive is filled in with the boot drive at run time), directory `/grub`.
pub const PREFIX: &str = "(,gpt3)/grub";

/// Runs `grub-mkimage -O <platform> -d <dir> -p (,gpt3)/grub -o <out> <modules>` in `cwd`.
pub fn mkimage(
    grub_mkimage: &Path,
    platform: Platform,
    dir: &Path,
    out: &Path,
    cwd: &Path,
    timeout: Duration,
) -> Result<(), GrubError> {
    let mut args: Vec<&OsStr> = vec![
        "-O".as_ref(),
        platform.name().as_ref(),
        "-d".as_ref(),
        dir.as_os_str(),
        "-p".as_ref(),
        PREFIX.as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    args.extend(platform.core_modules().iter().map(OsStr::new));
    tools::run(grub_mkimage, &args, cwd, timeout).map_err(|source| GrubError::Mkimage {
        format: platform.name(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot_img() -> Vec<u8> {
        let mut b: Vec<u8> = (0..512u32).map(|i| (i % 200) as u8 + 1).collect();
        b[0x5c..0x64].copy_from_slice(&1u64.to_le_bytes());
        b[BOOT_DRIVE] = 0xff;
        b[DRIVE_CHECK] = 0xeb;
        b[DRIVE_CHECK + 1] = 0x05;
        b[510] = 0x55;
        b[511] = 0xaa;
        b
    }

    #[test]
    fn boot_code_keeps_the_partition_table() {
        let pmbr = super::super::gpt::protective_mbr(8_699_903);
        let mbr = mbr_with_boot_code(&boot_img(), &pmbr, 4_304_896).unwrap();
        let boot = boot_img();
        // Code from boot.img, BPB and table from the protective MBR.
        assert_eq!(mbr[..3], boot[..3]);
        assert_eq!(mbr[BPB], pmbr[BPB]);
        assert_eq!(mbr[0x5a..0x5c], boot[0x5a..0x5c]);
        assert_eq!(mbr[0x68..0x1b8], boot[0x68..0x1b8]);
        assert_eq!(mbr[0x1b8..], pmbr[0x1b8..]);
        assert_eq!(mbr[446 + 4], 0xee);
        assert_eq!(
            u64::from_le_bytes(mbr[KERNEL_SECTOR..KERNEL_SECTOR + 8].try_into().unwrap()),
            4_304_896
        );
        assert_eq!(mbr[BOOT_DRIVE], 0xff);
        assert_eq!(mbr[DRIVE_CHECK..DRIVE_CHECK + 2], [0x90, 0x90]);
        assert_eq!(mbr[510..], [0x55, 0xaa]);
        // Not a boot sector.
        assert!(mbr_with_boot_code(&boot[..511], &pmbr, 1).is_err());
        let mut bad = boot.clone();
        bad[511] = 0;
        assert!(mbr_with_boot_code(&bad, &pmbr, 1).is_err());
    }

    fn core_img(len: usize) -> Vec<u8> {
        let mut c = vec![0x11u8; len];
        c[0x1e8..0x1f4].fill(0);
        c[0x1f4..0x1fc].copy_from_slice(&2u64.to_le_bytes());
        c[0x1fc..0x1fe].copy_from_slice(&54u16.to_le_bytes());
        c[0x1fe..0x200].copy_from_slice(&CORE_SEGMENT.to_le_bytes());
        c
    }

    #[test]
    fn core_blocklist_points_at_the_bios_partition() {
        // 27742 bytes: 55 sectors, the first is diskboot.img.
        let mut core = core_img(27_742);
        place_core(&mut core, 206_848).unwrap();
        assert_eq!(core.len(), 55 * 512);
        assert_eq!(
            u64::from_le_bytes(core[0x1f4..0x1fc].try_into().unwrap()),
            206_849
        );
        assert_eq!(u16::from_le_bytes([core[0x1fc], core[0x1fd]]), 54);
        assert_eq!(u16::from_le_bytes([core[0x1fe], core[0x1ff]]), 0x820);
        assert!(core[0x1e8..0x1f4].iter().all(|b| *b == 0), "terminator");
        assert!(core[27_742..].iter().all(|b| *b == 0), "padding");
        assert!(core[0x200..27_742].iter().all(|b| *b == 0x11));
        // Not diskboot.img first, too small, too big.
        let mut wrong = core_img(4096);
        wrong[0x1fe] = 0;
        assert!(place_core(&mut wrong, 1).is_err());
        assert!(place_core(&mut vec![0u8; 600], 1).is_err());
        assert!(place_core(&mut core_img(70_000 * 512), 1).is_err());
    }

    /// The real boot.img and a real core.img from `grub-mkimage`, when grub-pc-bin is here.
    #[test]
    fn real_grub_images_are_accepted() {
        let dir = Path::new("/usr/lib/grub/i386-pc");
        let (Ok(boot), Some(program)) = (
            std::fs::read(dir.join("boot.img")),
            tools::Tool::GrubMkimage.locate(),
        ) else {
            eprintln!("grub-pc-bin or grub-common not installed: skipped");
            return;
        };
        let pmbr = super::super::gpt::protective_mbr(1000);
        let mbr = mbr_with_boot_code(&boot, &pmbr, 2048).unwrap();
        assert_eq!(mbr[DRIVE_CHECK..DRIVE_CHECK + 2], [0x90, 0x90]);
        assert_eq!(
            boot[DRIVE_CHECK], 0xeb,
            "boot.img's drive check is a short jmp"
        );
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("core.img");
        mkimage(
            &program,
            Platform::I386Pc,
            dir,
            &out,
            tmp.path(),
            Duration::from_secs(60),
        )
        .unwrap();
        let mut core = std::fs::read(&out).unwrap();
        let sectors = core.len().div_ceil(512);
        // grub-mkimage already counts the sectors after the first.
        assert_eq!(
            usize::from(u16::from_le_bytes([core[0x1fc], core[0x1fd]])),
            sectors - 1
        );
        place_core(&mut core, 4096).unwrap();
        assert_eq!(
            u64::from_le_bytes(core[0x1f4..0x1fc].try_into().unwrap()),
            4097
        );
        assert!(core.len() <= 1 << 20, "fits the BIOS partition");
        // A missing platform directory fails with grub-mkimage's own words.
        let e = mkimage(
            &program,
            Platform::I386Pc,
            &tmp.path().join("nope"),
            &out,
            tmp.path(),
            Duration::from_secs(60),
        )
        .unwrap_err();
        assert!(format!("{:?}", e).contains("grub-mkimage"), "{e:?}");
    }
}
