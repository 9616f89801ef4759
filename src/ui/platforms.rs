//! The hardware the wizard offers: Talos' platforms (bare metal and the clouds) and single-board
//! computers, with what each boots from and the first Talos version that has it.
//!
//! The table is the one Talos' machinery gives upstream's Image Factory (its UI builds the
//! same links from it): architectures, the disk image suffix, the boot methods (ISO, disk
//! image, PXE), whether the UI offers SecureBoot, and a minimum Talos version. Boards map to
//! the overlay (name and image) a schematic names; those names are part of the schematic ID,
//! so they must be upstream's exactly (`rpi_generic` → `siderolabs/sbc-raspberrypi`).

use crate::version::TalosVersion;

/// How a platform's machines boot from what the factory builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootMethods {
    /// An ISO (`<platform>-<arch>.iso`).
    pub iso: bool,
    /// A disk image (`<platform>-<arch>.<suffix>`).
    pub disk_image: bool,
    /// A PXE script (`/pxe/<id>/<version>/<platform>-<arch>`).
    pub pxe: bool,
}

/// One Talos platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    /// Talos' name (`metal`, `aws`, `digital-ocean`, …): asset names and `talos.platform`.
    pub name: &'static str,
    /// What the wizard shows.
    pub label: &'static str,
    /// Architectures, in the order shown.
    pub archs: &'static [&'static str],
    /// The disk image suffix (`raw.xz`, `vhd.xz`, …), if the platform boots disk images.
    pub disk_suffix: Option<&'static str>,
    /// How it boots.
    pub boot: BootMethods,
    /// Whether upstream's UI offers SecureBoot for it (from Talos 1.5).
    pub secure_boot: bool,
    /// The first Talos version that has the platform (full semver comparison).
    pub min_version: Option<&'static str>,
}

const BOTH: &[&str] = &["amd64", "arm64"];
const AMD64: &[&str] = &["amd64"];

const fn boot(iso: bool, disk_image: bool, pxe: bool) -> BootMethods {
    BootMethods {
        iso,
        disk_image,
        pxe,
    }
}

const fn platform(
    name: &'static str,
    label: &'static str,
    archs: &'static [&'static str],
    disk_suffix: Option<&'static str>,
    boot: BootMethods,
    secure_boot: bool,
    min_version: Option<&'static str>,
) -> Platform {
    Platform {
        name,
        label,
        archs,
        disk_suffix,
        boot,
        secure_boot,
        min_version,
    }
}

/// Bare metal (the `metal` target).
pub const METAL: Platform = platform(
    "metal",
    "Bare-metal machine",
    BOTH,
    Some("raw.zst"),
    boot(true, true, true),
    true,
    None,
);

/// The cloud platforms, in the order upstream lists them.
pub const CLOUDS: &[Platform] = &[
    platform(
        "aws",
        "Amazon Web Services (AWS)",
        BOTH,
        Some("raw.xz"),
        boot(false, true, false),
        false,
        None,
    ),
    platform(
        "gcp",
        "Google Cloud (GCP)",
        BOTH,
        Some("raw.tar.gz"),
        boot(false, true, false),
        false,
        None,
    ),
    platform(
        "equinixMetal",
        "Equinix Metal",
        BOTH,
        None,
        boot(false, false, true),
        false,
        None,
    ),
    platform(
        "azure",
        "Microsoft Azure",
        BOTH,
        Some("vhd.xz"),
        boot(false, true, false),
        true,
        None,
    ),
    platform(
        "digital-ocean",
        "Digital Ocean",
        AMD64,
        Some("raw.gz"),
        boot(false, true, false),
        false,
        None,
    ),
    platform(
        "nocloud",
        "Nocloud",
        BOTH,
        Some("raw.xz"),
        boot(true, true, true),
        true,
        None,
    ),
    platform(
        "openstack",
        "OpenStack",
        BOTH,
        Some("raw.xz"),
        boot(true, true, true),
        false,
        None,
    ),
    platform(
        "vmware",
        "VMware",
        BOTH,
        Some("ova"),
        boot(true, true, false),
        false,
        None,
    ),
    platform(
        "akamai",
        "Akamai",
        AMD64,
        Some("raw.gz"),
        boot(false, true, false),
        false,
        Some("1.7.0"),
    ),
    platform(
        "cloudstack",
        "Apache CloudStack",
        BOTH,
        Some("raw.gz"),
        boot(false, true, false),
        true,
        Some("1.8.0-alpha.2"),
    ),
    platform(
        "hcloud",
        "Hetzner",
        AMD64,
        Some("raw.xz"),
        boot(false, true, false),
        false,
        None,
    ),
    platform(
        "oracle",
        "Oracle Cloud",
        BOTH,
        Some("qcow2"),
        boot(false, true, false),
        false,
        None,
    ),
    platform(
        "upcloud",
        "UpCloud",
        AMD64,
        Some("raw.xz"),
        boot(false, true, false),
        false,
        None,
    ),
    platform(
        "vultr",
        "Vultr",
        AMD64,
        None,
        boot(true, false, true),
        false,
        None,
    ),
    platform(
        "exoscale",
        "Exoscale",
        BOTH,
        Some("qcow2"),
        boot(false, true, false),
        false,
        Some("1.3.0"),
    ),
    platform(
        "opennebula",
        "OpenNebula",
        BOTH,
        Some("raw.zst"),
        boot(true, true, false),
        false,
        Some("1.7.0"),
    ),
    platform(
        "scaleway",
        "Scaleway",
        BOTH,
        Some("raw.zst"),
        boot(true, true, false),
        false,
        None,
    ),
    platform(
        "alibabacloud",
        "Alibaba Cloud",
        BOTH,
        Some("qcow2"),
        boot(false, true, false),
        false,
        Some("1.14.0-beta.2"),
    ),
];

/// The first Talos version with overlays, and so with boards in the wizard.
pub const MIN_SBC_VERSION: &str = "1.7.0";

/// One single-board computer: an overlay of an overlay image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Board {
    /// The wizard's name (`board=`).
    pub name: &'static str,
    /// What the wizard shows.
    pub label: &'static str,
    /// `overlay.name` of the schematic.
    pub overlay_name: &'static str,
    /// `overlay.image` of the schematic.
    pub overlay_image: &'static str,
    /// The first Talos version that has the board, beyond [`MIN_SBC_VERSION`].
    pub min_version: Option<&'static str>,
}

const RPI: &str = "siderolabs/sbc-raspberrypi";
const ALLWINNER: &str = "siderolabs/sbc-allwinner";
const ROCKCHIP: &str = "siderolabs/sbc-rockchip";

const fn board(
    name: &'static str,
    label: &'static str,
    overlay_name: &'static str,
    overlay_image: &'static str,
    min_version: Option<&'static str>,
) -> Board {
    Board {
        name,
        label,
        overlay_name,
        overlay_image,
        min_version,
    }
}

/// The boards, in the order shown.
pub const BOARDS: &[Board] = &[
    board(
        "rpi_generic",
        "Raspberry Pi Series",
        "rpi_generic",
        RPI,
        None,
    ),
    board("rpi_5", "Raspberry Pi 5", "rpi_5", RPI, Some("1.12.3")),
    board(
        "revpi_generic",
        "Revolution Pi Series",
        "revpi_generic",
        RPI,
        Some("1.10.0-beta.0"),
    ),
    board(
        "bananapi_m64",
        "Banana Pi M64",
        "bananapi_m64",
        ALLWINNER,
        None,
    ),
    board(
        "libretech_all_h3_cc_h5",
        "Libre Computer Board ALL-H3-CC",
        "libretech_all_h3_cc_h5",
        ALLWINNER,
        None,
    ),
    board("pine64", "Pine64", "pine64", ALLWINNER, None),
    board(
        "jetson_nano",
        "Jetson Nano",
        "jetson_nano",
        "siderolabs/sbc-jetson",
        None,
    ),
    board(
        "nanopi_r4s",
        "FriendlyElec NanoPi R4S",
        "nanopi-r4s",
        ROCKCHIP,
        None,
    ),
    board(
        "nanopi_r5s",
        "FriendlyElec NanoPi R5S",
        "nanopi-r5s",
        ROCKCHIP,
        None,
    ),
    board(
        "orangepi_r1_plus_lts",
        "Orange Pi R1 Plus LTS",
        "orangepi-r1-plus-lts",
        ROCKCHIP,
        None,
    ),
    board("rock64", "Pine64 Rock64", "rock64", ROCKCHIP, None),
    board(
        "rock4cplus",
        "Radxa ROCK 4C Plus",
        "rock4cplus",
        ROCKCHIP,
        None,
    ),
    board("rock4se", "Radxa ROCK 4SE", "rock4se", ROCKCHIP, None),
    board("rock5a", "Radxa ROCK 5A", "rock5a", ROCKCHIP, None),
    board("rock5b", "Radxa ROCK 5B", "rock5b", ROCKCHIP, None),
    board("rockpi_4", "Radxa ROCK PI 4", "rockpi4", ROCKCHIP, None),
    board("rockpi_4c", "Radxa ROCK PI 4C", "rockpi4c", ROCKCHIP, None),
    board("helios64", "Kobol Helios64", "helios64", ROCKCHIP, None),
    board("turingrk1", "Turing RK1", "turingrk1", ROCKCHIP, None),
    board("orangepi-5", "Orange Pi 5", "orangepi-5", ROCKCHIP, None),
    board(
        "orangepi-5-plus",
        "Orange Pi 5 Plus",
        "orangepi-5-plus",
        ROCKCHIP,
        None,
    ),
    board("rockpro64", "Pine64 RockPro64", "rockpro64", ROCKCHIP, None),
    board(
        "odroid-m1",
        "Hardkernel ODROID-M1",
        "odroid-m1",
        ROCKCHIP,
        None,
    ),
    board(
        "radxa-zero-3e",
        "Radxa ZERO 3E",
        "radxa-zero-3e",
        ROCKCHIP,
        None,
    ),
    board("rock3b", "Radxa ROCK 3B", "rock3b", ROCKCHIP, None),
    board(
        "orangepi-5-max",
        "Orange Pi 5 Max",
        "orangepi-5-max",
        ROCKCHIP,
        None,
    ),
    board("rock5t", "Radxa ROCK 5T", "rock5t", ROCKCHIP, None),
    board(
        "friendlyelec-cm3588-nas",
        "FriendlyElec CM3588 NAS",
        "friendlyelec-cm3588-nas",
        ROCKCHIP,
        None,
    ),
    board(
        "rock5b-plus",
        "Radxa ROCK 5B+",
        "rock5b-plus",
        ROCKCHIP,
        None,
    ),
];

/// Whether `version` is at least `min` (full semver precedence, pre-releases included, as
/// upstream's `GTE`); no minimum is always true.
pub fn at_least(version: &TalosVersion, min: Option<&str>) -> bool {
    match min.and_then(|m| TalosVersion::parse_strict(m).ok()) {
        Some(min) => version.precedence_cmp(&min) != std::cmp::Ordering::Less,
        None => true,
    }
}

impl Platform {
    /// Whether the platform exists in `version`.
    pub fn available(&self, version: &TalosVersion) -> bool {
        at_least(version, self.min_version)
    }

    /// Whether upstream's UI would offer SecureBoot for this platform and version
    /// (≥ 1.5.0 and a platform that supports it).
    pub fn secure_boot_offered(&self, version: &TalosVersion) -> bool {
        self.secure_boot && at_least(version, Some("1.5.0"))
    }
}

impl Board {
    /// Whether the board exists in `version` (boards need overlays: ≥ 1.7.0).
    pub fn available(&self, version: &TalosVersion) -> bool {
        at_least(version, Some(MIN_SBC_VERSION)) && at_least(version, self.min_version)
    }
}

/// The cloud platform named `name`.
pub fn cloud(name: &str) -> Option<&'static Platform> {
    CLOUDS.iter().find(|p| p.name == name)
}

/// The board named `name`.
pub fn board_named(name: &str) -> Option<&'static Board> {
    BOARDS.iter().find(|b| b.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> TalosVersion {
        s.parse().unwrap()
    }

    #[test]
    fn minimum_versions_compare_pre_releases_like_upstream() {
        let cloudstack = cloud("cloudstack").unwrap();
        assert!(!cloudstack.available(&v("1.8.0-alpha.1")));
        assert!(cloudstack.available(&v("1.8.0-alpha.2")));
        assert!(cloudstack.available(&v("1.11.6")));
        assert!(!cloud("alibabacloud").unwrap().available(&v("1.13.5")));
        assert!(cloud("aws").unwrap().available(&v("1.2.0")));
        assert!(!board_named("rpi_generic").unwrap().available(&v("1.6.7")));
        assert!(board_named("rpi_generic").unwrap().available(&v("1.7.0")));
        assert!(!board_named("rpi_5").unwrap().available(&v("1.12.2")));
        assert!(board_named("rpi_5").unwrap().available(&v("1.12.3")));
    }

    #[test]
    fn secure_boot_is_offered_where_the_table_says_from_1_5() {
        assert!(METAL.secure_boot_offered(&v("1.5.0")));
        assert!(!METAL.secure_boot_offered(&v("1.4.8")));
        assert!(cloud("azure").unwrap().secure_boot_offered(&v("1.11.6")));
        assert!(!cloud("aws").unwrap().secure_boot_offered(&v("1.11.6")));
    }

    #[test]
    fn every_name_is_unique_and_single_arch_clouds_are_amd64() {
        let mut names: Vec<&str> = CLOUDS.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CLOUDS.len());
        let mut boards: Vec<&str> = BOARDS.iter().map(|b| b.name).collect();
        boards.sort_unstable();
        boards.dedup();
        assert_eq!(boards.len(), BOARDS.len());
        for p in CLOUDS.iter().filter(|p| p.archs.len() == 1) {
            assert_eq!(p.archs, ["amd64"], "{}", p.name);
        }
        assert_eq!(board_named("rockpi_4").unwrap().overlay_name, "rockpi4");
    }
}
