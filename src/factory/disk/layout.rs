//! The pure plan of a raw disk image (`docs/formats.md` §Disk images): which bootloader the
//! imager picks, how big the disk is and where each GPT partition starts and ends. No I/O.

use super::super::quirks::Quirks;
use crate::schematic::model::Bootloader;

/// The logical sector sizes a plan can have: 512 (the default, a loop device) and 4096
/// (`diskImage.sectorSize: 4096`, a 4Kn loop device).
pub const SECTOR_SIZES: [u64; 2] = [512, 4096];
/// Partition alignment and the first usable LBA, in bytes: 1 MiB.
const MIB: u64 = 1024 * 1024;
/// The first usable LBA for `sector_size`: 34 (512) or 6 (4096) rounded up to 1 MiB.
pub fn first_usable_lba(sector_size: u64) -> u64 {
    MIB / sector_size
}

/// Sectors the GPT entry array takes: 32 (512) or 4 (4096).
pub fn entry_sectors(sector_size: u64) -> u64 {
    crate::formats::gpt::array_sectors(sector_size)
}

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
    /// GPT partition name (`EFI`, `BIOS`, `BOOT`, `META`, `STATE`, `EPHEMERAL`).
    pub name: &'static str,
    /// Partition type GUID, upper case text.
    pub type_guid: &'static str,
    /// Attribute bits (`BIOS`: bit 2, legacy BIOS bootable).
    pub attributes: u64,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
    /// Bytes per LBA (the plan's sector size).
    pub sector_size: u64,
}

impl PlannedPartition {
    /// Byte offset of the partition.
    pub fn offset(&self) -> u64 {
        self.first_lba * self.sector_size
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        (self.last_lba - self.first_lba + 1) * self.sector_size
    }
}

/// The whole disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPlan {
    /// The bootloader layout.
    pub bootloader: DiskBootloader,
    /// Disk size in MiB.
    pub size_mib: u64,
    /// Bytes per logical sector: 512 or 4096 ([`SECTOR_SIZES`]).
    pub sector_size: u64,
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
        self.size_bytes() / self.sector_size - 1
    }

    /// The first usable LBA (1 MiB).
    pub fn first_usable_lba(&self) -> u64 {
        first_usable_lba(self.sector_size)
    }

    /// The last usable LBA: before the backup entries and header.
    pub fn last_usable_lba(&self) -> u64 {
        self.last_lba() - entry_sectors(self.sector_size) - 1
    }

    /// The partition named `name`.
    pub fn partition(&self, name: &str) -> Option<&PlannedPartition> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

/// Why a disk cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Not a sector size of [`SECTOR_SIZES`].
    #[error("invalid disk image sector size {0}: want 512 or 4096")]
    SectorSize(u64),
    /// The partitions do not fit the disk (a platform size smaller than the layout).
    #[error("a {size_mib} MiB disk is too small for the {needed_mib} MiB of partitions")]
    TooSmall {
        /// The disk size.
        size_mib: u64,
        /// What the partitions and GPT need.
        needed_mib: u64,
    },
}

/// The partition plan for a target version, bootloader, platform default size
/// (`base_size_mib`, before the imager's additions: `+ BootSize − 1000` from 1.11 and
/// `+ 1 + BootSize` for dual-boot) and logical sector size (512 or 4096). Partition sizes are
/// whole MiB whatever the sector size, so the 4096 LBAs are the 512 ones divided by 8. Before
/// 1.8 the image also carries `STATE` (100 MiB) and `EPHEMERAL` (up to the last usable LBA)
/// after META, unformatted.
pub fn plan(
    quirks: &Quirks,
    bootloader: DiskBootloader,
    base_size_mib: u64,
    sector_size: u64,
) -> Result<DiskPlan, PlanError> {
    if !SECTOR_SIZES.contains(&sector_size) {
        return Err(PlanError::SectorSize(sector_size));
    }
    let boot = quirks.boot_partition_mib();
    let mut size_mib = base_size_mib.saturating_add(boot - 1000);
    if bootloader == DiskBootloader::DualBoot {
        size_mib = size_mib.saturating_add(1 + boot);
    }
    // (name, type, attributes, MiB; None: the rest of the disk).
    type Part = (&'static str, &'static str, u64, Option<u64>);
    let mut parts: Vec<Part> = match bootloader {
        DiskBootloader::SdBoot => vec![
            ("EFI", TYPE_EFI, 0, Some(quirks.uki_efi_partition_mib())),
            ("META", TYPE_LINUX, 0, Some(1)),
        ],
        DiskBootloader::Grub | DiskBootloader::DualBoot => vec![
            (
                "EFI",
                TYPE_EFI,
                0,
                Some(if bootloader == DiskBootloader::Grub {
                    100
                } else {
                    quirks.uki_efi_partition_mib()
                }),
            ),
            ("BIOS", TYPE_BIOS, 1 << 2, Some(1)),
            ("BOOT", TYPE_LINUX, 0, Some(boot)),
            ("META", TYPE_LINUX, 0, Some(1)),
        ],
    };
    if !quirks.skip_data_partitions() {
        parts.push(("STATE", TYPE_LINUX, 0, Some(100)));
        parts.push(("EPHEMERAL", TYPE_LINUX, 0, None));
    }
    let mib_sectors = MIB / sector_size;
    // The fixed partitions, 1 MiB for the GPT at the start and 1 MiB for the backup at the
    // end (33 or 5 sectors), and at least 1 MiB for EPHEMERAL.
    let fixed: u64 = parts.iter().filter_map(|p| p.3).sum();
    let rest = u64::from(parts.iter().any(|p| p.3.is_none()));
    let needed_mib = fixed + 2 + rest;
    if size_mib < needed_mib {
        return Err(PlanError::TooSmall {
            size_mib,
            needed_mib,
        });
    }
    let mut out = DiskPlan {
        bootloader,
        size_mib,
        sector_size,
        partitions: Vec::with_capacity(parts.len()),
    };
    let last_usable = out.last_usable_lba();
    let mut next = first_usable_lba(sector_size);
    for (name, type_guid, attributes, mib) in parts {
        let first_lba = next;
        let last_lba = match mib {
            Some(mib) => first_lba + mib * mib_sectors - 1,
            None => last_usable,
        };
        next = last_lba + 1;
        out.partitions.push(PlannedPartition {
            name,
            type_guid,
            attributes,
            first_lba,
            last_lba,
            sector_size,
        });
    }
    Ok(out)
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
            let p = plan(&q(v), *bl, 1246, 512).unwrap();
            assert_eq!(p.size_mib, *size, "{v} {bl:?}");
            assert_eq!(lbas(&p), want.to_vec(), "{v} {bl:?}");
            // ≈143 MiB free after META in every row.
            let meta = p.partition("META").unwrap();
            let free_mib = (p.size_bytes() - meta.offset() - meta.size()) / (1024 * 1024);
            assert!((142..=144).contains(&free_mib), "{v} {bl:?}: {free_mib}");
            // 4096-byte sectors: the same bytes, LBAs divided by 8.
            let p4 = plan(&q(v), *bl, 1246, 4096).unwrap();
            assert_eq!(p4.size_mib, *size, "{v} {bl:?}");
            let want4: Vec<_> = want
                .iter()
                .map(|&(n, a, b)| (n, a / 8, (b + 1) / 8 - 1))
                .collect();
            assert_eq!(lbas(&p4), want4, "{v} {bl:?} 4096");
            for (a, b) in p.partitions.iter().zip(&p4.partitions) {
                assert_eq!((a.offset(), a.size()), (b.offset(), b.size()));
            }
        }
    }

    /// The 4096-byte sector rows written out: 1.11 sd-boot and dual-boot.
    #[test]
    fn layouts_with_4096_byte_sectors() {
        let p = plan(&q("v1.11.6"), DiskBootloader::SdBoot, 1246, 4096).unwrap();
        assert_eq!(
            lbas(&p),
            vec![("EFI", 256, 538111), ("META", 538112, 538367)]
        );
        // 2246 MiB = 574976 sectors of 4 KiB.
        assert_eq!(p.last_lba(), 574975);
        assert_eq!(p.first_usable_lba(), 256);
        assert_eq!(p.last_usable_lba(), 574975 - 5);
        let p = plan(&q("v1.11.6"), DiskBootloader::DualBoot, 1246, 4096).unwrap();
        assert_eq!(
            lbas(&p),
            vec![
                ("EFI", 256, 538111),
                ("BIOS", 538112, 538367),
                ("BOOT", 538368, 1050367),
                ("META", 1050368, 1050623),
            ]
        );
        assert_eq!(p.last_lba(), 4247 * 256 - 1);
        assert_eq!(p.partition("META").unwrap().offset(), 8402944 * 512);
    }

    /// Before 1.8: STATE (100 MiB) and EPHEMERAL (to the last usable LBA) after META.
    #[test]
    fn state_and_ephemeral_before_1_8() {
        // 1246 MiB = 2551808 sectors: last LBA 2551807, last usable 2551807 − 33.
        let want = [
            ("EFI", 2048, 206847),
            ("BIOS", 206848, 208895),
            ("BOOT", 208896, 2256895),
            ("META", 2256896, 2258943),
            ("STATE", 2258944, 2463743),
            ("EPHEMERAL", 2463744, 2551774),
        ];
        let p = plan(&q("v1.7.6"), DiskBootloader::Grub, 1246, 512).unwrap();
        assert_eq!(p.size_mib, 1246);
        assert_eq!(lbas(&p), want.to_vec());
        for name in ["STATE", "EPHEMERAL"] {
            let part = p.partition(name).unwrap();
            assert_eq!((part.type_guid, part.attributes), (TYPE_LINUX, 0));
        }
        assert_eq!(p.partition("STATE").unwrap().size(), 100 << 20);
        let p = plan(&q("v1.6.7"), DiskBootloader::SdBoot, 1246, 512).unwrap();
        assert_eq!(
            lbas(&p),
            vec![
                ("EFI", 2048, 2256895),
                ("META", 2256896, 2258943),
                ("STATE", 2258944, 2463743),
                ("EPHEMERAL", 2463744, 2551774),
            ]
        );
        // 4096: 318976 sectors, last usable 318975 − 5.
        let p = plan(&q("v1.7.6"), DiskBootloader::Grub, 1246, 4096).unwrap();
        assert_eq!(
            lbas(&p)[4..],
            [("STATE", 282368, 307967), ("EPHEMERAL", 307968, 318970)]
        );
        // 1.8 has neither.
        let p = plan(&q("v1.8.0"), DiskBootloader::Grub, 1246, 512).unwrap();
        assert!(p.partition("STATE").is_none() && p.partition("EPHEMERAL").is_none());
        // EPHEMERAL needs room: 1202 MiB of partitions + 2 MiB of GPT + 1 MiB.
        assert_eq!(
            plan(&q("v1.7.6"), DiskBootloader::Grub, 1204, 512),
            Err(PlanError::TooSmall {
                size_mib: 1204,
                needed_mib: 1205
            })
        );
        let p = plan(&q("v1.7.6"), DiskBootloader::Grub, 1205, 512).unwrap();
        let e = p.partition("EPHEMERAL").unwrap();
        assert_eq!(e.last_lba - e.first_lba + 1, 2 * 2048 - 33);
    }

    #[test]
    fn cloud_sizes() {
        let p = plan(&q("v1.11.6"), DiskBootloader::DualBoot, 8192, 512).unwrap();
        assert_eq!(p.size_mib, 11193);
        let p = plan(&q("v1.11.6"), DiskBootloader::SdBoot, 10240, 4096).unwrap();
        assert_eq!(p.size_mib, 11240);
        let p = plan(&q("v1.10.0"), DiskBootloader::SdBoot, 8192, 512).unwrap();
        assert_eq!(p.size_mib, 8192);
    }

    #[test]
    fn attributes_and_types() {
        let p = plan(&q("v1.11.6"), DiskBootloader::DualBoot, 1246, 512).unwrap();
        let bios = p.partition("BIOS").unwrap();
        assert_eq!((bios.attributes, bios.type_guid), (4, TYPE_BIOS));
        assert_eq!(p.partition("EFI").unwrap().type_guid, TYPE_EFI);
        assert_eq!(p.partition("META").unwrap().size(), 1 << 20);
        assert_eq!(p.last_lba(), 4247 * 2048 - 1);
    }

    #[test]
    fn refusals() {
        for bad in [0, 520, 1024, 2048, 8192] {
            assert_eq!(
                plan(&q("v1.11.6"), DiskBootloader::SdBoot, 1246, bad),
                Err(PlanError::SectorSize(bad))
            );
        }
        assert!(matches!(
            plan(&q("v1.11.6"), DiskBootloader::SdBoot, 10, 512),
            Err(PlanError::TooSmall { .. })
        ));
        // Exactly the partitions plus 2 MiB fits (1.11 adds 1000 MiB to the base size).
        assert!(plan(&q("v1.11.6"), DiskBootloader::SdBoot, 1104, 4096).is_ok());
        assert!(plan(&q("v1.11.6"), DiskBootloader::SdBoot, 1103, 4096).is_err());
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
                    for sector in SECTOR_SIZES {
                        let p = plan(&q(v), b, size, sector)
                            .unwrap_or_else(|e| panic!("{platform} {v} {b:?} {sector}: {e}"));
                        let last = p.partitions.last().unwrap();
                        assert!(
                            last.last_lba <= p.last_usable_lba(),
                            "{platform} {v} {b:?} {sector}"
                        );
                    }
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
