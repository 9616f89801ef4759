//! Version-dependent behaviour for a target Talos version ("quirks",
//! `siderolabs/talos:pkg/machinery/imager/quirks` plus a few Image Factory rules) and the
//! `/versions` selection rule. Versions themselves are parsed in [`crate::version`].

use std::cmp::Ordering;

use super::initramfs::Compression;
use crate::version::TalosVersion;

/// Version-dependent behaviour for a target Talos version (Talos `quirks.Quirks`).
///
/// Only `major.minor.patch` is considered: `v1.10.0-alpha.1` behaves as 1.10.0. A quirks value
/// built from an unparsable version ([`Quirks::latest`]) means "latest Talos": every predicate
/// answers as for the newest version, except the three Talos defines otherwise
/// ([`Quirks::supports_metal_platform_console_ttys0`], [`Quirks::use_sd_boot_for_uefi`],
/// [`Quirks::ima_args`] → `false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quirks {
    version: Option<(u64, u64, u64)>,
}

impl Quirks {
    /// Quirks for a target version (pre-release and build parts ignored).
    pub fn new(version: &TalosVersion) -> Quirks {
        Quirks {
            version: Some(version.core()),
        }
    }

    /// Quirks for an unknown/unparsable version: "latest Talos".
    pub const fn latest() -> Quirks {
        Quirks { version: None }
    }

    /// Talos `quirks.New(tag)`: tolerant parse; anything unparsable gives [`Quirks::latest`].
    pub fn from_tag(tag: &str) -> Quirks {
        match TalosVersion::parse_tolerant(tag) {
            Ok(v) => Quirks::new(&v),
            Err(_) => Quirks::latest(),
        }
    }

    /// The `(major, minor, patch)` considered, `None` for "latest".
    pub fn version(&self) -> Option<(u64, u64, u64)> {
        self.version
    }

    /// `version >= min`, with "latest" answering `latest`.
    fn at_least(&self, min: (u64, u64, u64), latest: bool) -> bool {
        self.version.map_or(latest, |v| v >= min)
    }

    /// GRUB menus carry a "reset" entry: ≥ 1.4.0.
    pub fn supports_reset_grub_option(&self) -> bool {
        self.at_least((1, 4, 0), true)
    }

    /// UKI / SecureBoot assets, systemd-boot/stub inputs: ≥ 1.5.0.
    pub fn supports_uki(&self) -> bool {
        self.at_least((1, 5, 0), true)
    }

    /// META may be gzip-compressed in `INSTALLER_META_BASE64`: ≥ 1.6.3.
    pub fn supports_compressed_encoded_meta(&self) -> bool {
        self.at_least((1, 6, 3), true)
    }

    /// SBC overlays (instead of boards): ≥ 1.7.0.
    pub fn supports_overlay(&self) -> bool {
        self.at_least((1, 7, 0), true)
    }

    /// zstd instead of xz for extension squashfs and initramfs: ≥ 1.8.0.
    pub fn use_zstd_compression(&self) -> bool {
        self.at_least((1, 8, 0), true)
    }

    /// The compression for extensions and the rebuilt initramfs (zstd ≥ 1.8, xz below).
    pub fn extension_compression(&self) -> Compression {
        if self.use_zstd_compression() {
            Compression::Zstd
        } else {
            Compression::Xz
        }
    }

    /// ISO volume labels: ≥ 1.8.0.
    pub fn supports_iso_label(&self) -> bool {
        self.at_least((1, 8, 0), true)
    }

    /// metal amd64 keeps `console=ttyS0` before `console=tty0`: < 1.8.0 (latest → `false`).
    /// Talos `SupportsMetalPlatformConsoleTTYS0`.
    pub fn supports_metal_platform_console_ttys0(&self) -> bool {
        self.version.is_some_and(|v| v < (1, 8, 0))
    }

    /// Alias of [`Quirks::supports_metal_platform_console_ttys0`]: `console=ttyS0 console=tty0`
    /// on metal amd64 (< 1.8).
    pub fn console_ttys0_on_metal_amd64(&self) -> bool {
        self.supports_metal_platform_console_ttys0()
    }

    /// ISO cmdlines get `talos.halt_if_installed=1`: ≥ 1.8.0.
    pub fn supports_iso_halt_if_installed(&self) -> bool {
        self.at_least((1, 8, 0), true)
    }

    /// Disk images carry no STATE/EPHEMERAL partitions: ≥ 1.8.0.
    pub fn skip_data_partitions(&self) -> bool {
        self.at_least((1, 8, 0), true)
    }

    /// `selinux=1` in the default cmdline: ≥ 1.10.0.
    pub fn selinux(&self) -> bool {
        self.at_least((1, 10, 0), true)
    }

    /// systemd-boot for UEFI (images use sd-boot or dual-boot): ≥ 1.10.0 (latest → `false`).
    pub fn use_sd_boot_for_uefi(&self) -> bool {
        self.version.is_some_and(|v| v >= (1, 10, 0))
    }

    /// Disk images default to systemd-boot (arm64: sd-boot, amd64: dual-boot) instead of
    /// GRUB, and bootfactory builds their sd-boot layout: ≥ 1.10.0 (latest → `true`).
    pub fn disk_image_sd_boot(&self) -> bool {
        self.at_least((1, 10, 0), true)
    }

    /// Non-SecureBoot ISOs are hybrid (GRUB for BIOS, an appended EFI partition with
    /// systemd-boot and the UKI for UEFI) instead of GRUB ISOs: ≥ 1.10.0.
    pub fn hybrid_iso(&self) -> bool {
        self.at_least((1, 10, 0), true)
    }

    /// ISOs carry a volume ID and volume set ID (`TALOS_V1_11_6`, `Talos-v1.11.6`): ≥ 1.8.0.
    pub fn iso_labels(&self) -> bool {
        self.at_least((1, 8, 0), true)
    }

    /// UKI profiles (`.profile` sections): ≥ 1.10.0.
    pub fn supports_uki_profiles(&self) -> bool {
        self.at_least((1, 10, 0), true)
    }

    /// Unified installer (`installer-base` as base image, extra kernel args baked into
    /// installers, `<platform>-installer` repositories): ≥ 1.10.0.
    pub fn unified_installer(&self) -> bool {
        self.at_least((1, 10, 0), true)
    }

    /// Kernel modules live under `/usr/lib/modules` (≥ 1.10, "usr merge") or `/lib/modules`.
    pub fn kernel_modules_path(&self) -> &'static str {
        if self.at_least((1, 10, 0), true) {
            "/usr/lib/modules"
        } else {
            "/lib/modules"
        }
    }

    /// Firmware lives under `/usr/lib/firmware` (≥ 1.10) or `/lib/firmware`.
    pub fn firmware_path(&self) -> &'static str {
        if self.at_least((1, 10, 0), true) {
            "/usr/lib/firmware"
        } else {
            "/lib/firmware"
        }
    }

    /// The `mkfs.xfs` config file for BOOT: `lts_6.12` (≥ 1.10), `lts_6.6` (1.8–1.9), `lts_6.1`.
    pub fn xfs_mkfs_config(&self) -> &'static str {
        if self.at_least((1, 10, 0), true) {
            "/usr/share/xfsprogs/mkfs/lts_6.12.conf"
        } else if self.at_least((1, 8, 0), true) {
            "/usr/share/xfsprogs/mkfs/lts_6.6.conf"
        } else {
            "/usr/share/xfsprogs/mkfs/lts_6.1.conf"
        }
    }

    /// IMA cmdline args (`ima_template=ima-ng ima_appraise=fix ima_hash=sha512`): ≤ 1.10.99
    /// (Talos compares with the literal `1.10.99`; latest → `false`).
    pub fn ima_args(&self) -> bool {
        self.version.is_some_and(|v| v <= (1, 10, 99))
    }

    /// BOOT partition size (`PartitionSizes().GrubBootSize`): 2000 MiB ≥ 1.11.0, else 1000 MiB.
    pub fn boot_partition_mib(&self) -> u64 {
        if self.at_least((1, 11, 0), true) {
            2000
        } else {
            1000
        }
    }

    /// EFI partition size for sd-boot and dual-boot images: `100 + 1 + BOOT` MiB
    /// (1101 below 1.11, 2101 from 1.11). GRUB-only images use a 100 MiB EFI partition.
    pub fn uki_efi_partition_mib(&self) -> u64 {
        101 + self.boot_partition_mib()
    }

    /// Embedded machine configuration in assets: ≥ 1.12.0.
    pub fn supports_embedded_config(&self) -> bool {
        self.at_least((1, 12, 0), true)
    }

    /// `module.sig_enforce=1` in the default cmdline (Talos
    /// `SupportsDisablingModuleSignatureVerification`): ≥ 1.12.0. Upstream's integration
    /// expectations add ` module.sig_enforce=1` for every version from 1.12; the rule first
    /// appears in the 1.12 sources and is not 1.12.x-only (`docs/formats.md` §Default args).
    pub fn module_sig_enforce(&self) -> bool {
        self.at_least((1, 12, 0), true)
    }

    /// ISO bootloader selection (`isoOptions.bootloader`): ≥ 1.12.0.
    pub fn iso_supports_setting_bootloader(&self) -> bool {
        self.at_least((1, 12, 0), true)
    }

    /// `proc_mem.force_override=never` in the default cmdline: ≥ 1.13.0.
    pub fn proc_mem_force_override(&self) -> bool {
        self.at_least((1, 13, 0), true)
    }

    /// `init_on_alloc=1` is no longer a default arg: ≥ 1.14.0.
    pub fn drops_init_on_alloc(&self) -> bool {
        self.at_least((1, 14, 0), true)
    }

    /// `nvme_core.io_timeout=4294967295` is emitted for AWS only: ≥ 1.14.0.
    pub fn nvme_io_timeout_aws_only(&self) -> bool {
        self.at_least((1, 14, 0), true)
    }

    /// SecureBoot cmdlines get `lockdown=confidentiality`: < 1.14.0 (no longer forced from
    /// 1.14.0, `docs/formats.md` §Target version and quirks; latest → `false`).
    pub fn secure_boot_forces_lockdown(&self) -> bool {
        !self.at_least((1, 14, 0), true)
    }
}

/// Upstream's `/versions` selection (`docs/image-factory-api.md` §The versions list) over registry
/// tags.
///
/// Tags are parsed with [`TalosVersion::parse_tolerant`] (unparsable tags are skipped); `max`
/// is the highest parsed version. A version is kept iff it is ≥ `min`, not equal (by
/// precedence) to one of `broken`, and — when it is a pre-release — it has the same
/// major.minor as `max`, exactly two pre-release identifiers, the first being `alpha`, `beta` or
/// `rc` and the second numeric. The result is sorted ascending and deduplicated.
pub fn filter_versions(
    tags: &[String],
    min: &TalosVersion,
    broken: &[TalosVersion],
) -> Vec<TalosVersion> {
    let parsed: Vec<TalosVersion> = tags
        .iter()
        .filter_map(|t| TalosVersion::parse_tolerant(t).ok())
        .collect();
    let Some(max) = parsed.iter().max_by(|a, b| a.precedence_cmp(b)).cloned() else {
        return Vec::new();
    };
    let mut kept: Vec<TalosVersion> = parsed
        .into_iter()
        .filter(|v| {
            if v.precedence_cmp(min) == Ordering::Less {
                return false;
            }
            if broken
                .iter()
                .any(|b| v.precedence_cmp(b) == Ordering::Equal)
            {
                return false;
            }
            if v.is_prerelease() {
                if v.major != max.major || v.minor != max.minor {
                    return false;
                }
                if v.pre.len() != 2 {
                    return false;
                }
                if !matches!(v.pre[0].as_alpha(), Some("alpha" | "beta" | "rc")) {
                    return false;
                }
                if !v.pre[1].is_numeric() {
                    return false;
                }
            }
            true
        })
        .collect();
    kept.sort();
    kept.dedup();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> TalosVersion {
        s.parse().unwrap()
    }

    #[test]
    fn quirks_ignore_prerelease() {
        let q = Quirks::new(&v("1.10.0-alpha.1"));
        assert!(q.selinux());
        assert!(q.unified_installer());
        assert!(q.ima_args());
        assert_eq!(q.kernel_modules_path(), "/usr/lib/modules");
        let q = Quirks::new(&v("1.8.0-alpha.0"));
        assert!(!q.console_ttys0_on_metal_amd64());
        assert!(q.use_zstd_compression());
    }

    #[test]
    fn quirk_thresholds() {
        let at = |s: &str| Quirks::new(&v(s));
        assert!(!at("1.4.9").supports_uki() && at("1.5.0").supports_uki());
        assert!(!at("1.6.2").supports_compressed_encoded_meta());
        assert!(at("1.6.3").supports_compressed_encoded_meta());
        assert!(!at("1.6.9").supports_overlay() && at("1.7.0").supports_overlay());
        assert!(at("1.7.9").console_ttys0_on_metal_amd64());
        assert!(!at("1.8.0").console_ttys0_on_metal_amd64());
        assert!(!at("1.7.9").supports_iso_halt_if_installed());
        assert!(at("1.8.0").supports_iso_halt_if_installed());
        assert_eq!(at("1.7.9").extension_compression(), Compression::Xz);
        assert_eq!(at("1.8.0").extension_compression(), Compression::Zstd);
        assert!(!at("1.9.9").selinux() && at("1.10.0").selinux());
        assert!(!at("1.9.9").unified_installer() && at("1.10.0").unified_installer());
        assert_eq!(at("1.9.6").kernel_modules_path(), "/lib/modules");
        assert_eq!(at("1.9.6").firmware_path(), "/lib/firmware");
        assert_eq!(at("1.10.0").firmware_path(), "/usr/lib/firmware");
        assert!(at("1.10.99").ima_args() && !at("1.10.100").ima_args());
        assert!(!at("1.11.0").ima_args());
        assert_eq!(at("1.10.9").boot_partition_mib(), 1000);
        assert_eq!(at("1.11.0").boot_partition_mib(), 2000);
        assert_eq!(at("1.10.9").uki_efi_partition_mib(), 1101);
        assert_eq!(at("1.11.0").uki_efi_partition_mib(), 2101);
        assert!(!at("1.11.9").module_sig_enforce() && at("1.12.0").module_sig_enforce());
        assert!(at("1.13.0").module_sig_enforce());
        assert!(!at("1.11.9").supports_embedded_config());
        assert!(at("1.12.0").supports_embedded_config());
        assert!(!at("1.12.9").proc_mem_force_override());
        assert!(at("1.13.0").proc_mem_force_override());
        assert!(!at("1.13.9").drops_init_on_alloc() && at("1.14.0").drops_init_on_alloc());
        assert!(at("1.13.9").secure_boot_forces_lockdown());
        assert!(!at("1.14.0").secure_boot_forces_lockdown());
        assert!(!at("1.14.0-rc.1").secure_boot_forces_lockdown());
        assert_eq!(
            at("1.7.0").xfs_mkfs_config(),
            "/usr/share/xfsprogs/mkfs/lts_6.1.conf"
        );
        assert_eq!(
            at("1.9.0").xfs_mkfs_config(),
            "/usr/share/xfsprogs/mkfs/lts_6.6.conf"
        );
        assert_eq!(
            at("1.11.0").xfs_mkfs_config(),
            "/usr/share/xfsprogs/mkfs/lts_6.12.conf"
        );
    }

    #[test]
    fn quirks_latest() {
        let q = Quirks::from_tag("not-a-version");
        assert_eq!(q, Quirks::latest());
        assert!(q.supports_uki() && q.selinux() && q.proc_mem_force_override());
        assert!(!q.console_ttys0_on_metal_amd64());
        assert!(!q.use_sd_boot_for_uefi());
        assert!(!q.ima_args());
        assert_eq!(Quirks::from_tag("v1.9").version(), Some((1, 9, 0)));
    }

    #[test]
    fn talosctl_rule_uses_full_semver() {
        assert!(!v("1.11.0-alpha.2").supports_talosctl_downloads());
        assert!(v("1.11.0-alpha.3").supports_talosctl_downloads());
        assert!(v("1.11.0").supports_talosctl_downloads());
        assert!(!v("1.10.9").supports_talosctl_downloads());
    }

    #[test]
    fn filter_versions_rules() {
        let tags: Vec<String> = [
            "v1.1.0",
            "v1.2.0",
            "v1.2.0-alpha.1",
            "v1.9.0",
            "v1.9.1",
            "1.9.1",
            "v1.9.2",
            "v1.10.0-alpha.0",
            "v1.11.0-beta.1",
            "v1.12.0-alpha.1",
            "v1.12.0-beta.0",
            "v1.12.0-rc.1",
            "v1.12.0-rc.1.1",
            "v1.12.0-pre.1",
            "v1.12.0-rc.x",
            "v1.12.0-rc",
            "v1.12.1-alpha.0",
            "v1.11",
            "latest",
            "sha256-0123.sig",
            "v1.12.0-rc.2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got = filter_versions(&tags, &v("1.2.0"), &[v("1.9.2")]);
        let got: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "v1.2.0",
                "v1.9.0",
                "v1.9.1",
                "v1.11.0",
                "v1.12.0-alpha.1",
                "v1.12.0-beta.0",
                "v1.12.0-rc.1",
                "v1.12.0-rc.2",
                "v1.12.1-alpha.0",
            ]
        );
        assert!(filter_versions(&[], &v("1.2.0"), &[]).is_empty());
    }
}
