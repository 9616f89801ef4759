//! The pure plan of a raw disk image (`docs/formats.md` §Disk images): which bootloader the
//! imager picks, how big the disk is and where each GPT partition starts and ends. No I/O.

use super::super::quirks::Quirks;
use crate::schematic::model::Bootloader;

/// Bytes per logical sector of every image this plan describes.
pub const SECTOR: u64 = 512;
/// Sectors per MiB.
const MIB_SECTORS: u64 = 1024 * 1024 / SECTOR;
/// First usable LBA: 34 rounded up to the 1 MiB alignment.
pub const FIRST_USABLE_LBA: u64 = 2048;

/// EFI system partition type.
pub const TYPE_EFI: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// BIOS boot partition type.
pub const TYPE_BIOS: &str = "21686148-6449-6E6F-744E-656564454649";
/// Linux filesystem data (BOOT, META).
pub const TYPE_LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// The bootloader layout of a disk image (what the imager's `FillDefaults` settles on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBootloader {
    /// systemd-boot only: `EFI, META`.
    SdBoot,
    /// GRUB only: `EFI (100 MiB), BIOS, BOOT, META`.
    Grub,
    /// systemd-boot for UEFI plus GRUB for BIOS: `EFI, BIOS, BOOT, META`.
    DualBoot,
}

/// Bootloader selection, first match wins: the schematic's explicit `sd-boot`/`grub` (an
/// explicit `dual-boot` is the default sentinel upstream), SecureBoot, arm64 from 1.10,
/// GRUB before 1.10, dual-boot otherwise.
pub fn select_bootloader(
    requested: Bootloader,
    secure_boot: bool,
    arm64: bool,
    quirks: &Quirks,
) -> DiskBootloader {
    let since_1_10 = quirks.disk_image_sd_boot();
    match requested {
        Bootloader::SdBoot => DiskBootloader::SdBoot,
        Bootloader::Grub => DiskBootloader::Grub,
        Bootloader::None | Bootloader::DualBoot => {
            if secure_boot || (arm64 && since_1_10) {
                DiskBootloader::SdBoot
            } else if !since_1_10 {
                DiskBootloader::Grub
            } else {
                DiskBootloader::DualBoot
            }
        }
    }
}

/// One GPT partition of the plan (LBAs inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPartition {
    /// GPT partition name (`EFI`, `BIOS`, `BOOT`, `META`).
    pub name: &'static str,
    /// Partition type GUID, upper case text.
    pub type_guid: &'static str,
    /// Attribute bits (`BIOS`: bit 2, legacy BIOS bootable).
    pub attributes: u64,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
}

impl PlannedPartition {
    /// Byte offset of the partition.
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        (self.last_lba - self.first_lba + 1) * SECTOR
    }
}

/// The whole disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPlan {
    /// The bootloader layout.
    pub bootloader: DiskBootloader,
    /// Disk size in MiB.
    pub size_mib: u64,
    /// Partitions in table order.
    pub partitions: Vec<PlannedPartition>,
}

impl DiskPlan {
    /// Disk size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size_mib * 1024 * 1024
    }

    /// The last LBA of the disk (the backup GPT header).
    pub fn last_lba(&self) -> u64 {
        self.size_bytes() / SECTOR - 1
    }

    /// The partition named `name`.
    pub fn partition(&self, name: &str) -> Option<&PlannedPartition> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

/// Why a disk cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Talos < 1.8 images carry STATE and EPHEMERAL partitions, which this plan does not lay out.
    #[error(
        "disk images for Talos versions before 1.8 (STATE and EPHEMERAL partitions) are not built by this bootfactory release yet"
    )]
    BeforeV18,
    /// The partitions do not fit the disk (a platform size smaller than the layout).
    #[error("a {size_mib} MiB disk is too small for the {needed_mib} MiB of partitions")]
    TooSmall {
        /// The disk size.
        size_mib: u64,
        /// What the partitions and GPT need.
        needed_mib: u64,
    },
}

/// The partition plan for a target version, bootloader and platform default size
/// (`base_size_mib`, before the imager's additions: `+ BootSize − 1000` from 1.11 and
/// `+ 1 + BootSize` for dual-boot).
pub fn plan(
    quirks: &Quirks,
    bootloader: DiskBootloader,
    base_size_mib: u64,
) -> Result<DiskPlan, PlanError> {
    if !quirks.skip_data_partitions() {
        return Err(PlanError::BeforeV18);
    }
    let boot = quirks.boot_partition_mib();
    let mut size_mib = base_size_mib.saturating_add(boot - 1000);
    if bootloader == DiskBootloader::DualBoot {
        size_mib = size_mib.saturating_add(1 + boot);
    }
    let parts: &[(&'static str, &'static str, u64, u64)] = match bootloader {
        DiskBootloader::SdBoot => &[
            ("EFI", TYPE_EFI, 0, quirks.uki_efi_partition_mib()),
            ("META", TYPE_LINUX, 0, 1),
        ],
        DiskBootloader::Grub | DiskBootloader::DualBoot => &[
            (
                "EFI",
                TYPE_EFI,
                0,
                if bootloader == DiskBootloader::Grub {
                    100
                } else {
                    quirks.uki_efi_partition_mib()
                },
            ),
            ("BIOS", TYPE_BIOS, 1 << 2, 1),
            ("BOOT", TYPE_LINUX, 0, boot),
            ("META", TYPE_LINUX, 0, 1),
        ],
    };
    let mut next = FIRST_USABLE_LBA;
    let mut partitions = Vec::with_capacity(parts.len());
    for &(name, type_guid, attributes, mib) in parts {
        let first_lba = next;
        next += mib * MIB_SECTORS;
        partitions.push(PlannedPartition {
            name,
            type_guid,
            attributes,
            first_lba,
            last_lba: next - 1,
        });
    }
    // The backup entries and header take the last 33 sectors; 1 MiB covers them.
    let needed_mib = next / MIB_SECTORS + 1;
    if size_mib < needed_mib {
        return Err(PlanError::TooSmall {
            size_mib,
            needed_mib,
        });
    }
    Ok(DiskPlan {
        bootloader,
        size_mib,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(v: &str) -> Quirks {
        Quirks::from_tag(v)
    }

    fn lbas(p: &DiskPlan) -> Vec<(&str, u64, u64)> {
        p.partitions
            .iter()
            .map(|p| (p.name, p.first_lba, p.last_lba))
            .collect()
    }

    /// Every row of the metal layout table (`docs/formats.md` §Disk images).
    #[test]
    fn metal_layout_table() {
        use DiskBootloader::*;
        type Row<'a> = (&'a str, DiskBootloader, u64, &'a [(&'a str, u64, u64)]);
        let rows: &[Row<'_>] = &[
            (
                "v1.8.0",
                Grub,
                1246,
                &[
                    ("EFI", 2048, 206847),
                    ("BIOS", 206848, 208895),
                    ("BOOT", 208896, 2256895),
                    ("META", 2256896, 2258943),
                ],
            ),
            (
                "v1.9.5",
                SdBoot,
                1246,
                &[("EFI", 2048, 2256895), ("META", 2256896, 2258943)],
            ),
            (
                "v1.10.3",
                DualBoot,
                2247,
                &[
                    ("EFI", 2048, 2256895),
                    ("BIOS", 2256896, 2258943),
                    ("BOOT", 2258944, 4306943),
                    ("META", 4306944, 4308991),
                ],
            ),
            (
                "v1.10.3",
                SdBoot,
                1246,
                &[("EFI", 2048, 2256895), ("META", 2256896, 2258943)],
            ),
            (
                "v1.11.6",
                DualBoot,
                4247,
                &[
                    ("EFI", 2048, 4304895),
                    ("BIOS", 4304896, 4306943),
                    ("BOOT", 4306944, 8402943),
                    ("META", 8402944, 8404991),
                ],
            ),
            (
                "v1.11.6",
                SdBoot,
                2246,
                &[("EFI", 2048, 4304895), ("META", 4304896, 4306943)],
            ),
            (
                "v1.11.6",
                Grub,
                2246,
                &[
                    ("EFI", 2048, 206847),
                    ("BIOS", 206848, 208895),
                    ("BOOT", 208896, 4304895),
                    ("META", 4304896, 4306943),
                ],
            ),
        ];
        for (v, bl, size, want) in rows {
            let p = plan(&q(v), *bl, 1246).unwrap();
            assert_eq!(p.size_mib, *size, "{v} {bl:?}");
            assert_eq!(lbas(&p), want.to_vec(), "{v} {bl:?}");
            // ≈143 MiB free after META in every row.
            let meta = p.partition("META").unwrap();
            let free_mib = (p.size_bytes() - (meta.last_lba + 1) * SECTOR) / (1024 * 1024);
            assert!((142..=144).contains(&free_mib), "{v} {bl:?}: {free_mib}");
        }
    }

    #[test]
    fn cloud_sizes() {
        let p = plan(&q("v1.11.6"), DiskBootloader::DualBoot, 8192).unwrap();
        assert_eq!(p.size_mib, 11193);
        let p = plan(&q("v1.11.6"), DiskBootloader::SdBoot, 10240).unwrap();
        assert_eq!(p.size_mib, 11240);
        let p = plan(&q("v1.10.0"), DiskBootloader::SdBoot, 8192).unwrap();
        assert_eq!(p.size_mib, 8192);
    }

    #[test]
    fn attributes_and_types() {
        let p = plan(&q("v1.11.6"), DiskBootloader::DualBoot, 1246).unwrap();
        let bios = p.partition("BIOS").unwrap();
        assert_eq!((bios.attributes, bios.type_guid), (4, TYPE_BIOS));
        assert_eq!(p.partition("EFI").unwrap().type_guid, TYPE_EFI);
        assert_eq!(p.partition("META").unwrap().size(), 1 << 20);
        assert_eq!(p.last_lba(), 4247 * 2048 - 1);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            plan(&q("v1.7.6"), DiskBootloader::Grub, 1246),
            Err(PlanError::BeforeV18)
        );
        assert!(matches!(
            plan(&q("v1.11.6"), DiskBootloader::SdBoot, 10),
            Err(PlanError::TooSmall { .. })
        ));
    }

    /// `TooSmall` is not reachable from a request: every platform's image size (the smallest
    /// is `MIN_RAW_DISK_SIZE_MIB`, no schematic field changes it) fits every layout of every
    /// version built, with the backup GPT inside the disk.
    #[test]
    fn every_platform_size_fits_every_layout() {
        use crate::factory::profile::{MIN_RAW_DISK_SIZE_MIB, platform_image_defaults};
        let platforms = [
            "metal",
            "aws",
            "azure",
            "exoscale",
            "alibabacloud",
            "gcp",
            "vmware",
            "nocloud",
        ];
        for platform in platforms {
            let size = platform_image_defaults(platform).unwrap().0.unwrap();
            assert!(size >= MIN_RAW_DISK_SIZE_MIB, "{platform}");
            for v in [
                "v1.8.0", "v1.8.4", "v1.9.0", "v1.10.0", "v1.11.6", "v1.12.0",
            ] {
                for b in [
                    DiskBootloader::SdBoot,
                    DiskBootloader::Grub,
                    DiskBootloader::DualBoot,
                ] {
                    let p = plan(&q(v), b, size)
                        .unwrap_or_else(|e| panic!("{platform} {v} {b:?}: {e}"));
                    let last = p.partitions.last().unwrap();
                    assert!(last.last_lba < p.last_lba() - 32, "{platform} {v} {b:?}");
                }
            }
        }
    }

    #[test]
    fn selection() {
        use Bootloader as B;
        use DiskBootloader::*;
        let v111 = q("v1.11.6");
        let v19 = q("v1.9.0");
        assert_eq!(select_bootloader(B::None, false, true, &v111), SdBoot);
        assert_eq!(select_bootloader(B::None, false, false, &v111), DualBoot);
        assert_eq!(
            select_bootloader(B::DualBoot, false, false, &v111),
            DualBoot
        );
        assert_eq!(select_bootloader(B::SdBoot, false, false, &v111), SdBoot);
        assert_eq!(select_bootloader(B::Grub, false, true, &v111), Grub);
        assert_eq!(select_bootloader(B::None, true, false, &v111), SdBoot);
        assert_eq!(select_bootloader(B::None, false, true, &v19), Grub);
        assert_eq!(select_bootloader(B::None, true, false, &v19), SdBoot);
    }
}
