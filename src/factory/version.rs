//! Talos versions: parsing and ordering with the rules of Go's `blang/semver` v4 (the library
//! upstream uses), version-dependent behaviour ("quirks", `siderolabs/talos:pkg/machinery/imager/quirks`
//! plus a few Image Factory rules), and the `/versions` selection rule.
//!
//! Two parsers exist, as upstream has two:
//!
//! * [`TalosVersion::from_str`] — the factory's request parsing: a `v` is prepended when missing,
//!   then the version is parsed *strictly* (`semver.Parse`): exactly `MAJOR.MINOR.PATCH`, no
//!   leading zeroes, optional `-pre.release` and `+build.meta`. `1.9` and `v1.9` are errors.
//! * [`TalosVersion::parse_tolerant`] — `semver.ParseTolerant`, used for registry tags
//!   (`docs/image-factory-api.md` §The versions list) and by `quirks.New`: surrounding whitespace
//!   trimmed, one leading `v` removed, leading zeroes removed from each of the first three
//!   dot-separated parts, and a missing minor/patch padded with `0` (only when the shortened
//!   version carries no pre-release/build part).
//!
//! ```
//! use bootfactory::factory::version::TalosVersion;
//! let v: TalosVersion = "1.12.0-beta.1".parse().unwrap();
//! assert_eq!(v.to_string(), "v1.12.0-beta.1");
//! assert!("v1.9".parse::<TalosVersion>().is_err());
//! assert_eq!(TalosVersion::parse_tolerant("v1.9").unwrap().to_string(), "v1.9.0");
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::profile::go_quote;

/// One dot-separated pre-release identifier: numeric (compared as a number) or alphanumeric
/// (compared as ASCII text); numeric identifiers sort before alphanumeric ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PreRelease {
    /// Digits only, no leading zero (e.g. the `1` in `beta.1`).
    Numeric(u64),
    /// Letters, digits and `-`, not all digits (e.g. `beta`).
    Alpha(String),
}

impl PreRelease {
    /// Parses one identifier like blang/semver's `NewPRVersion`.
    fn parse(s: &str) -> Result<PreRelease, VersionError> {
        if s.is_empty() {
            return Err(VersionError::new("Prerelease is empty"));
        }
        if contains_only_digits(s) {
            if has_leading_zero(s) {
                return Err(VersionError::new(format!(
                    "Numeric PreRelease version must not contain leading zeroes {}",
                    go_quote(s)
                )));
            }
            return parse_u64(s).map(PreRelease::Numeric);
        }
        if contains_only_alphanum(s) {
            return Ok(PreRelease::Alpha(s.to_string()));
        }
        Err(VersionError::new(format!(
            "Invalid character(s) found in prerelease {}",
            go_quote(s)
        )))
    }

    /// True for a numeric identifier.
    pub fn is_numeric(&self) -> bool {
        matches!(self, PreRelease::Numeric(_))
    }

    /// The alphanumeric text, `None` for a numeric identifier.
    pub fn as_alpha(&self) -> Option<&str> {
        match self {
            PreRelease::Alpha(s) => Some(s),
            PreRelease::Numeric(_) => None,
        }
    }
}

impl Ord for PreRelease {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PreRelease::Numeric(a), PreRelease::Numeric(b)) => a.cmp(b),
            (PreRelease::Alpha(a), PreRelease::Alpha(b)) => a.cmp(b),
            (PreRelease::Numeric(_), PreRelease::Alpha(_)) => Ordering::Less,
            (PreRelease::Alpha(_), PreRelease::Numeric(_)) => Ordering::Greater,
        }
    }
}

impl PartialOrd for PreRelease {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for PreRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreRelease::Numeric(n) => write!(f, "{n}"),
            PreRelease::Alpha(s) => f.write_str(s),
        }
    }
}

/// A version that failed to parse. The message follows blang/semver's wording (for example
/// `No Major.Minor.Patch elements found`), since upstream passes it through to error bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct VersionError {
    message: String,
}

impl VersionError {
    fn new(message: impl Into<String>) -> VersionError {
        VersionError {
            message: message.into(),
        }
    }
}

/// A Talos version: a semantic version with blang/semver's parsing and precedence rules.
///
/// Displayed (and serialised) with the `v` prefix Talos uses in tags: `v1.12.0-beta.1`.
///
/// Ordering is semver precedence (major, minor, patch, then pre-release: a release sorts after
/// its pre-releases; identifiers compared left to right; a longer identifier list wins a tie).
/// Build metadata does not affect precedence; to keep `Ord` consistent with `Eq` it is used as a
/// final tie-breaker only. [`TalosVersion::precedence_cmp`] ignores it, like Go's `Compare`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TalosVersion {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Patch version.
    pub patch: u64,
    /// Pre-release identifiers (empty for a release).
    pub pre: Vec<PreRelease>,
    /// Build metadata identifiers (empty when absent).
    pub build: Vec<String>,
}

impl TalosVersion {
    /// A release version `vMAJOR.MINOR.PATCH`.
    pub const fn new(major: u64, minor: u64, patch: u64) -> TalosVersion {
        TalosVersion {
            major,
            minor,
            patch,
            pre: Vec::new(),
            build: Vec::new(),
        }
    }

    /// Strict parse of a version *without* a `v` prefix (blang/semver `Parse`).
    pub fn parse_strict(s: &str) -> Result<TalosVersion, VersionError> {
        if s.is_empty() {
            return Err(VersionError::new("Version string empty"));
        }
        let parts: Vec<&str> = s.splitn(3, '.').collect();
        if parts.len() != 3 {
            return Err(VersionError::new("No Major.Minor.Patch elements found"));
        }
        let major = parse_number_part(parts[0], "major", "Major")?;
        let minor = parse_number_part(parts[1], "minor", "Minor")?;

        let mut patch_str = parts[2];
        let mut build_parts: Vec<&str> = Vec::new();
        let mut pre_parts: Vec<&str> = Vec::new();
        if let Some(i) = patch_str.find('+') {
            build_parts = patch_str[i + 1..].split('.').collect();
            patch_str = &patch_str[..i];
        }
        if let Some(i) = patch_str.find('-') {
            pre_parts = patch_str[i + 1..].split('.').collect();
            patch_str = &patch_str[..i];
        }
        let patch = parse_number_part(patch_str, "patch", "Patch")?;

        let pre = pre_parts
            .into_iter()
            .map(PreRelease::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let mut build = Vec::with_capacity(build_parts.len());
        for b in build_parts {
            if b.is_empty() {
                return Err(VersionError::new("Build meta data is empty"));
            }
            if !contains_only_alphanum(b) {
                return Err(VersionError::new(format!(
                    "Invalid character(s) found in build meta data {}",
                    go_quote(b)
                )));
            }
            build.push(b.to_string());
        }
        Ok(TalosVersion {
            major,
            minor,
            patch,
            pre,
            build,
        })
    }

    /// Tolerant parse (blang/semver v4 `ParseTolerant`): trims whitespace, strips one leading
    /// `v`, removes leading zeroes from each of the (up to three) dot-separated parts, and pads a
    /// missing minor and/or patch with `0` — refused when the shortened version's last part
    /// contains `-` or `+` (`Short version cannot contain PreRelease/Build meta data`). The result
    /// then goes through the strict parser.
    pub fn parse_tolerant(s: &str) -> Result<TalosVersion, VersionError> {
        let s = s.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let mut parts: Vec<String> = s.splitn(3, '.').map(str::to_string).collect();
        for part in parts.iter_mut() {
            if part.len() > 1 {
                let trimmed = part.trim_start_matches('0');
                let starts_with_digit = trimmed.bytes().next().is_some_and(|b| b.is_ascii_digit());
                *part = if starts_with_digit {
                    trimmed.to_string()
                } else {
                    format!("0{trimmed}")
                };
            }
        }
        if parts.len() < 3 {
            let last = parts.last().map(String::as_str).unwrap_or("");
            if last.contains(['+', '-']) {
                return Err(VersionError::new(
                    "Short version cannot contain PreRelease/Build meta data",
                ));
            }
            while parts.len() < 3 {
                parts.push("0".to_string());
            }
        }
        TalosVersion::parse_strict(&parts.join("."))
    }

    /// True when the version has pre-release identifiers.
    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }

    /// The version without its `v` prefix (Go's `Version.String()`), e.g. `1.12.0-beta.1`.
    pub fn semver_string(&self) -> String {
        let mut out = format!("{}.{}.{}", self.major, self.minor, self.patch);
        if !self.pre.is_empty() {
            out.push('-');
            let pre: Vec<String> = self.pre.iter().map(ToString::to_string).collect();
            out.push_str(&pre.join("."));
        }
        if !self.build.is_empty() {
            out.push('+');
            out.push_str(&self.build.join("."));
        }
        out
    }

    /// The tag form with the `v` prefix, e.g. `v1.12.0-beta.1` (same as `Display`).
    pub fn tag(&self) -> String {
        format!("v{}", self.semver_string())
    }

    /// Semver precedence, ignoring build metadata (blang/semver `Version.Compare`).
    pub fn precedence_cmp(&self, other: &TalosVersion) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            })
    }

    /// The `(major, minor, patch)` triple, the only part quirks look at.
    pub fn core(&self) -> (u64, u64, u64) {
        (self.major, self.minor, self.patch)
    }

    /// The version-dependent behaviour for this target version.
    pub fn quirks(&self) -> Quirks {
        Quirks::new(self)
    }

    /// Image Factory rule: `talosctl` downloads exist for versions ≥ `1.11.0-alpha.3`
    /// (full semver comparison, pre-release included).
    pub fn supports_talosctl_downloads(&self) -> bool {
        let min = TalosVersion {
            pre: vec![PreRelease::Alpha("alpha".into()), PreRelease::Numeric(3)],
            ..TalosVersion::new(1, 11, 0)
        };
        self.precedence_cmp(&min) != Ordering::Less
    }
}

impl Ord for TalosVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.precedence_cmp(other)
            .then_with(|| self.build.cmp(&other.build))
    }
}

impl PartialOrd for TalosVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for TalosVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.semver_string())
    }
}

impl FromStr for TalosVersion {
    type Err = VersionError;

    /// The factory's request rule: prepend `v` when missing, then strict-parse what follows
    /// the `v`. So exactly one optional lowercase `v` is accepted; `1.9`, `v1.9`, `V1.9.0` and
    /// ` 1.9.0` are errors.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TalosVersion::parse_strict(s.strip_prefix('v').unwrap_or(s))
    }
}

impl Serialize for TalosVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TalosVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn contains_only_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

fn contains_only_alphanum(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn has_leading_zero(s: &str) -> bool {
    s.len() > 1 && s.starts_with('0')
}

/// Go's `strconv.ParseUint(s, 10, 64)` on a digits-only string, with its error wording.
fn parse_u64(s: &str) -> Result<u64, VersionError> {
    if s.is_empty() {
        return Err(VersionError::new(format!(
            "strconv.ParseUint: parsing {}: invalid syntax",
            go_quote(s)
        )));
    }
    s.parse::<u64>().map_err(|_| {
        VersionError::new(format!(
            "strconv.ParseUint: parsing {}: value out of range",
            go_quote(s)
        ))
    })
}

fn parse_number_part(s: &str, lower: &str, upper: &str) -> Result<u64, VersionError> {
    if !contains_only_digits(s) {
        return Err(VersionError::new(format!(
            "Invalid character(s) found in {lower} number {}",
            go_quote(s)
        )));
    }
    if has_leading_zero(s) {
        return Err(VersionError::new(format!(
            "{upper} number must not contain leading zeroes {}",
            go_quote(s)
        )));
    }
    parse_u64(s)
}

/// Compression used for extension squashfs images and the rebuilt initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// zstd (Talos ≥ 1.8).
    Zstd,
    /// xz (Talos < 1.8).
    Xz,
}

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
    fn strict_parse_accepts_optional_v() {
        assert_eq!(v("1.9.0"), TalosVersion::new(1, 9, 0));
        assert_eq!(v("v1.9.0"), TalosVersion::new(1, 9, 0));
        let b = v("v1.12.0-beta.1");
        assert_eq!(
            b.pre,
            vec![PreRelease::Alpha("beta".into()), PreRelease::Numeric(1)]
        );
        assert_eq!(b.to_string(), "v1.12.0-beta.1");
        let m = v("1.2.3-rc.1+build.5-x");
        assert_eq!(m.build, vec!["build".to_string(), "5-x".to_string()]);
        assert_eq!(m.to_string(), "v1.2.3-rc.1+build.5-x");
        assert_eq!(v("1.2.3-rc-1").pre, vec![PreRelease::Alpha("rc-1".into())]);
    }

    #[test]
    fn strict_parse_rejects() {
        let cases = [
            ("", "Version string empty"),
            ("v", "Version string empty"),
            ("1.9", "No Major.Minor.Patch elements found"),
            ("v1.9", "No Major.Minor.Patch elements found"),
            (
                "vv1.9.0",
                "Invalid character(s) found in major number \"v1\"",
            ),
            (
                "V1.9.0",
                "Invalid character(s) found in major number \"V1\"",
            ),
            (
                " 1.9.0",
                "Invalid character(s) found in major number \" 1\"",
            ),
            (
                "01.9.0",
                "Major number must not contain leading zeroes \"01\"",
            ),
            (
                "1.09.0",
                "Minor number must not contain leading zeroes \"09\"",
            ),
            (
                "1.9.00",
                "Patch number must not contain leading zeroes \"00\"",
            ),
            (
                "1.9.0.1",
                "Invalid character(s) found in patch number \"0.1\"",
            ),
            ("1.9.0-", "Prerelease is empty"),
            ("1.9.0-beta..1", "Prerelease is empty"),
            (
                "1.9.0-beta.01",
                "Numeric PreRelease version must not contain leading zeroes \"01\"",
            ),
            (
                "1.9.0-be_ta",
                "Invalid character(s) found in prerelease \"be_ta\"",
            ),
            ("1.9.0+", "Build meta data is empty"),
            (
                "1.9.0+a_b",
                "Invalid character(s) found in build meta data \"a_b\"",
            ),
            ("1..0", "strconv.ParseUint: parsing \"\": invalid syntax"),
            (
                "18446744073709551616.0.0",
                "strconv.ParseUint: parsing \"18446744073709551616\": value out of range",
            ),
        ];
        for (input, msg) in cases {
            let err = input.parse::<TalosVersion>().unwrap_err();
            assert_eq!(err.to_string(), msg, "{input:?}");
        }
    }

    #[test]
    fn tolerant_parse() {
        let ok = [
            ("v1.9", "v1.9.0"),
            ("1", "v1.0.0"),
            (" v1.10.2 \n", "v1.10.2"),
            ("v1.09.01", "v1.9.1"),
            ("v1.9.00-rc.1", "v1.9.0-rc.1"),
            ("v1.9.0-beta.0", "v1.9.0-beta.0"),
            ("1.2.3+meta", "v1.2.3+meta"),
            ("000.0.0", "v0.0.0"),
        ];
        for (input, want) in ok {
            assert_eq!(
                TalosVersion::parse_tolerant(input).unwrap().to_string(),
                want,
                "{input:?}"
            );
        }
        for bad in [
            "",
            "latest",
            "v1.9-rc.1",
            "v1-rc",
            "v1.2+b",
            "vv1.2.3",
            "1.2.3.4",
            "sha256-abc",
        ] {
            assert!(TalosVersion::parse_tolerant(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            TalosVersion::parse_tolerant("v1.9-rc")
                .unwrap_err()
                .to_string(),
            "Short version cannot contain PreRelease/Build meta data"
        );
        // Three dot-separated parts, so not "short": the minor number is invalid.
        assert_eq!(
            TalosVersion::parse_tolerant("v1.9-rc.1")
                .unwrap_err()
                .to_string(),
            "Invalid character(s) found in minor number \"9-rc\""
        );
    }

    #[test]
    fn ordering_is_semver_precedence() {
        let mut list: Vec<TalosVersion> = [
            "1.10.0",
            "1.10.0-rc.1",
            "1.10.0-alpha.10",
            "1.10.0-alpha.2",
            "1.10.0-beta.0",
            "1.9.6",
            "1.10.0-alpha",
            "1.10.0-1",
            "1.10.0-alpha.beta",
        ]
        .iter()
        .map(|s| v(s))
        .collect();
        list.sort();
        let got: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "v1.9.6",
                "v1.10.0-1",
                "v1.10.0-alpha",
                "v1.10.0-alpha.2",
                "v1.10.0-alpha.10",
                "v1.10.0-alpha.beta",
                "v1.10.0-beta.0",
                "v1.10.0-rc.1",
                "v1.10.0",
            ]
        );
        assert_eq!(v("1.2.3+a").precedence_cmp(&v("1.2.3+b")), Ordering::Equal);
        assert_ne!(v("1.2.3+a"), v("1.2.3+b"));
    }

    #[test]
    fn serde_as_string() {
        let x = v("1.11.2");
        assert_eq!(serde_json::to_string(&x).unwrap(), "\"v1.11.2\"");
        let y: TalosVersion = serde_json::from_str("\"1.11.2\"").unwrap();
        assert_eq!(y, x);
        assert!(serde_json::from_str::<TalosVersion>("\"1.11\"").is_err());
    }

    #[test]
    fn quirks_ignore_prerelease() {
        let q = v("1.10.0-alpha.1").quirks();
        assert!(q.selinux());
        assert!(q.unified_installer());
        assert!(q.ima_args());
        assert_eq!(q.kernel_modules_path(), "/usr/lib/modules");
        let q = v("1.8.0-alpha.0").quirks();
        assert!(!q.console_ttys0_on_metal_amd64());
        assert!(q.use_zstd_compression());
    }

    #[test]
    fn quirk_thresholds() {
        let at = |s: &str| v(s).quirks();
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
