//! Asset paths → imager profile (upstream `internal/profile/profile.go` `ParseFromPath`,
//! `docs/image-factory-api.md` §Asset paths), the iPXE `/pxe` path form, platform disk-image
//! defaults, and the `Content-Type` of assets (`internal/mime/mime.go`, §Content-Type).
//!
//! ```
//! use bootfactory::factory::profile::{parse_from_path, Arch, OutputKind};
//! let v = "v1.11.0".parse().unwrap();
//! let p = parse_from_path("metal-x86_64.iso", &v).unwrap();
//! assert_eq!((p.kind, p.platform.as_str(), p.arch), (OutputKind::Iso, "metal", Arch::Amd64));
//! let e = parse_from_path("metal-amd64.ssd", &v).unwrap_err();
//! assert_eq!(e.to_string(), r#"invalid profile path: "metal-amd64.ssd""#);
//! ```

use crate::gocompat::strconv::quote;
use std::fmt;
use std::str::FromStr;

use super::quirks::Quirks;
use crate::version::TalosVersion;

/// `profile.MinRAWDiskSize` (MiB): the metal default disk image size.
pub const MIN_RAW_DISK_SIZE_MIB: u64 = 1246;

/// `profile.DefaultRAWDiskSize` (MiB): the size of disk images for platforms without a default.
pub const DEFAULT_RAW_DISK_SIZE_MIB: u64 = 8192;

/// What kind of asset a path asks for (Talos `profile.OutputKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputKind {
    /// `kernel-<arch>`: the kernel image.
    Kernel,
    /// `cmdline-<platform>-<arch>[-secureboot]`: the kernel command line as text.
    Cmdline,
    /// `initramfs-<arch>.xz`: the initramfs with extensions.
    Initramfs,
    /// `<platform>-<arch>[-secureboot].iso`.
    Iso,
    /// `<platform>-<arch>[-secureboot]-uki.efi`.
    Uki,
    /// `installer-<arch>[-secureboot].tar` or `<platform>-installer-<arch>[-secureboot].tar`.
    Installer,
    /// Disk images: everything else that parses.
    Image,
}

impl OutputKind {
    /// Talos' name of the kind (`kernel`, `cmdline`, `initramfs`, `iso`, `uki`, `installer`,
    /// `image`).
    pub fn as_str(&self) -> &'static str {
        match self {
            OutputKind::Kernel => "kernel",
            OutputKind::Cmdline => "cmdline",
            OutputKind::Initramfs => "initramfs",
            OutputKind::Iso => "iso",
            OutputKind::Uki => "uki",
            OutputKind::Installer => "installer",
            OutputKind::Image => "image",
        }
    }
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Target CPU architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86-64 (`amd64`; `x86_64` and `i386` in paths map here).
    Amd64,
    /// 64-bit ARM (`arm64`).
    Arm64,
}

impl Arch {
    /// `amd64` or `arm64`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The architecture named exactly `amd64` or `arm64` (an assignment's `arch`, the
    /// `/boot` `?arch=` hint, the inventory); unlike [`parse_arch`], the path-only spellings
    /// `x86_64` and `i386` are not names.
    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "amd64" => Some(Arch::Amd64),
            "arm64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Arch {
    type Err = ProfileError;

    /// The path rule: `amd64`, `arm64`, and the iPXE `${buildarch}` names `x86_64`/`i386`
    /// (→ amd64); anything else is `invalid architecture: "<s>"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_arch(s)
    }
}

/// Output container/compression of an asset (Talos `profile.OutFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutFormat {
    /// No compression.
    Raw,
    /// `.tar.gz` (Talos `OutFormatTar`).
    TarGz,
    /// `.gz`.
    Gz,
    /// `.xz`.
    Xz,
    /// `.zst`.
    Zst,
}

impl OutFormat {
    /// The file suffix (`""` for raw, `.tar.gz`, `.gz`, `.xz`, `.zst`).
    pub fn suffix(&self) -> &'static str {
        match self {
            OutFormat::Raw => "",
            OutFormat::TarGz => ".tar.gz",
            OutFormat::Gz => ".gz",
            OutFormat::Xz => ".xz",
            OutFormat::Zst => ".zst",
        }
    }
}

/// Disk image format (Talos `profile.DiskFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskFormat {
    /// `.raw`.
    Raw,
    /// `.qcow2` (converted with `cluster_size=8k` unless a platform default says otherwise).
    Qcow2,
    /// `.vhd` (qemu-img `vpc`).
    Vhd,
    /// `.ova`.
    Ova,
}

impl DiskFormat {
    /// The file extension without the dot: `raw`, `qcow2`, `vhd`, `ova`.
    pub fn extension(&self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Ova => "ova",
        }
    }
}

/// Disk image options of an [`OutputKind::Image`] profile.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageOptions {
    /// Disk format.
    pub disk_format: DiskFormat,
    /// Disk size in MiB (before the imager's bootloader-dependent additions).
    pub disk_size_mib: u64,
    /// qemu-img `-o` options (`cluster_size=8k`, `subformat=fixed,force_size`, or empty).
    pub disk_format_options: String,
}

/// An asset request parsed from its path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssetProfile {
    /// Output kind.
    pub kind: OutputKind,
    /// Platform name as written in the path (not validated; `metal` for kernel, initramfs and
    /// `installer-*`). `digital-ocean` is recognised despite its dash.
    pub platform: String,
    /// Target architecture.
    pub arch: Arch,
    /// `-secureboot` was present.
    pub secure_boot: bool,
    /// Output format (only disk images have anything but raw).
    pub out_format: OutFormat,
    /// Disk image options, for [`OutputKind::Image`] only.
    pub image: Option<ImageOptions>,
    /// Legacy SBC board (`metal-<board>-arm64…` for Talos < 1.7, before overlays existed).
    pub board: Option<String>,
}

impl AssetProfile {
    /// The `cmdline-<platform>-<arch>` asset of a platform and architecture already known (an
    /// assignment's): what [`parse_from_path`] makes of that path, without the round trip
    /// through text. `platform` is taken whole, dashes and all.
    pub fn cmdline(platform: &str, arch: Arch) -> AssetProfile {
        simple(OutputKind::Cmdline, platform, arch, false)
    }

    /// The installer of a platform and architecture (an installer image's per-arch part,
    /// `<platform>-installer-<arch>.tar` as a path).
    pub fn installer(platform: &str, arch: Arch) -> AssetProfile {
        simple(OutputKind::Installer, platform, arch, false)
    }

    /// The `initramfs-<arch>.xz` asset (platform `metal`, as [`parse_from_path`] makes it): the
    /// initramfs a UKI embeds is this asset, so both share one build.
    pub fn initramfs(arch: Arch) -> AssetProfile {
        simple(OutputKind::Initramfs, "metal", arch, false)
    }

    /// The `/pxe/<schematic>/<version>/<path>` path that boots this profile:
    /// `<platform>-<arch>[-secureboot]`, which [`parse_pxe_path`] reads back.
    pub fn pxe_path(&self) -> String {
        let secure_boot = if self.secure_boot { "-secureboot" } else { "" };
        format!("{}-{}{secure_boot}", self.platform, self.arch)
    }

    /// Whether the schematic's `extraKernelArgs` apply to this asset (`docs/image-factory-api.md`
    /// §What a schematic changes per asset):
    /// cmdline, ISO and disk images always; installer and UKI only with SecureBoot or for
    /// Talos ≥ 1.10; kernel and initramfs never.
    pub fn extra_kernel_args_apply(&self, quirks: &Quirks) -> bool {
        match self.kind {
            OutputKind::Cmdline | OutputKind::Iso | OutputKind::Image => true,
            OutputKind::Installer | OutputKind::Uki => {
                self.secure_boot || quirks.unified_installer()
            }
            OutputKind::Kernel | OutputKind::Initramfs => false,
        }
    }

    /// Whether the schematic's META values are part of this asset's profile (cmdline, ISO and
    /// disk images). Disk images carry them in the META partition, not in the cmdline.
    pub fn meta_applies(&self) -> bool {
        matches!(
            self.kind,
            OutputKind::Cmdline | OutputKind::Iso | OutputKind::Image
        )
    }
}

/// Why an asset path was refused. `Display` is upstream's message, which the HTTP layer
/// prefixes with `error parsing profile from path: ` (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// `invalid architecture: "<s>"`.
    #[error("invalid architecture: {}", quote(.0))]
    InvalidArchitecture(String),
    /// `invalid platform-arch: "<s>"` (no `-` between platform and arch).
    #[error("invalid platform-arch: {}", quote(.0))]
    InvalidPlatformArch(String),
    /// `invalid profile path: "<rest>"` (no disk format suffix; `<rest>` is the path with any
    /// compression suffix already removed).
    #[error("invalid profile path: {}", quote(.0))]
    InvalidProfilePath(String),
}

/// Parses the architecture part of a path.
pub fn parse_arch(s: &str) -> Result<Arch, ProfileError> {
    match s {
        "amd64" | "x86_64" | "i386" => Ok(Arch::Amd64),
        "arm64" => Ok(Arch::Arm64),
        _ => Err(ProfileError::InvalidArchitecture(s.to_string())),
    }
}

/// The platform part of `<platform>-<arch>[-secureboot]` after parsing.
struct PlatformArch {
    platform: String,
    arch: Arch,
    secure_boot: bool,
    board: Option<String>,
}

/// `parsePlatformArch`: strip `-secureboot`, split at the first `-`, `digital-ocean` special
/// case, legacy metal arm64 boards for Talos < 1.7, then the architecture.
fn parse_platform_arch(s: &str, quirks: &Quirks) -> Result<PlatformArch, ProfileError> {
    let (s, secure_boot) = match s.strip_suffix("-secureboot") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let Some((platform, rest)) = s.split_once('-') else {
        return Err(ProfileError::InvalidPlatformArch(s.to_string()));
    };
    let (platform, mut rest) = match (platform, rest.strip_prefix("ocean-")) {
        ("digital", Some(after)) => ("digital-ocean", after),
        _ => (platform, rest),
    };
    let mut board = None;
    if platform == "metal" && rest.ends_with("-arm64") && !quirks.supports_overlay() {
        // Before overlays (Talos < 1.7) metal arm64 images could name a board:
        // `metal-rpi_generic-arm64.raw.xz`.
        let (b, after) = rest.split_once('-').unwrap_or((rest, ""));
        board = Some(b.to_string());
        rest = after;
    }
    let arch = parse_arch(rest)?;
    Ok(PlatformArch {
        platform: platform.to_string(),
        arch,
        secure_boot,
        board,
    })
}

/// The Talos `profile.Default[platform]` disk-image defaults that `ParseFromPath` applies:
/// `(disk size MiB, disk format options)`, each `None` when the default leaves it unset.
/// Platforms without a default entry return `None`.
pub fn platform_image_defaults(platform: &str) -> Option<(Option<u64>, Option<&'static str>)> {
    let d = match platform {
        "metal" | "hcloud" | "nocloud" | "openstack" | "opennebula" | "scaleway" | "akamai" => {
            (Some(MIN_RAW_DISK_SIZE_MIB), None)
        }
        "aws" | "gcp" | "digital-ocean" | "cloudstack" | "oracle" | "upcloud" | "vmware"
        | "vultr" => (Some(DEFAULT_RAW_DISK_SIZE_MIB), None),
        "azure" => (
            Some(DEFAULT_RAW_DISK_SIZE_MIB),
            Some("subformat=fixed,force_size"),
        ),
        "exoscale" => (Some(10 * 1024), Some("cluster_size=8k")),
        "alibabacloud" => (Some(MIN_RAW_DISK_SIZE_MIB), Some("cluster_size=8k")),
        _ => return None,
    };
    Some(d)
}

fn simple(kind: OutputKind, platform: &str, arch: Arch, secure_boot: bool) -> AssetProfile {
    AssetProfile {
        kind,
        platform: platform.to_string(),
        arch,
        secure_boot,
        out_format: OutFormat::Raw,
        image: None,
        board: None,
    }
}

fn from_platform_arch(kind: OutputKind, pa: PlatformArch) -> AssetProfile {
    AssetProfile {
        kind,
        platform: pa.platform,
        arch: pa.arch,
        secure_boot: pa.secure_boot,
        out_format: OutFormat::Raw,
        image: None,
        board: pa.board,
    }
}

/// Upstream's `ParseFromPath`, checks in upstream's order (`docs/image-factory-api.md` §Parsing
/// under §Asset paths):
///
/// 1. `kernel-<arch>`; 2. `cmdline-<platform>-<arch>[-secureboot]`; 3. `initramfs-<arch>.xz`;
/// 4. `<platform>-<arch>[-secureboot].iso`; 5. `<platform>-<arch>[-secureboot]-uki.efi`;
/// 6. `installer-<arch>[-secureboot].tar`; 7. `<platform>-installer-<arch>[-secureboot].tar`
///    (split at the first `-installer-`); 8. otherwise a disk image: strip the first matching
///    compression suffix of `.tar.gz`, `.gz`, `.xz`, `.zst`, then the first disk suffix of
///    `.raw`, `.qcow2` (`cluster_size=8k`), `.vhd`, `.ova` (none → `invalid profile path`),
///    parse `<platform>-<arch>[-secureboot]`, then overlay the platform's defaults
///    ([`platform_image_defaults`]).
///
/// A matching prefix/suffix commits to its branch: `kernel-foo` fails with
/// `invalid architecture: "foo"` rather than falling through. Only `initramfs-` without `.xz`,
/// `installer-` without `.tar` and `.tar` without `-installer-` fall through.
///
/// `version` only matters for legacy boards (Talos < 1.7: `metal-<board>-arm64…`).
pub fn parse_from_path(path: &str, version: &TalosVersion) -> Result<AssetProfile, ProfileError> {
    let quirks = Quirks::new(version);

    if let Some(rest) = path.strip_prefix("kernel-") {
        return Ok(simple(
            OutputKind::Kernel,
            "metal",
            parse_arch(rest)?,
            false,
        ));
    }

    if let Some(rest) = path.strip_prefix("cmdline-") {
        let pa = parse_platform_arch(rest, &quirks)?;
        return Ok(from_platform_arch(OutputKind::Cmdline, pa));
    }

    if let Some(rest) = path
        .strip_prefix("initramfs-")
        .and_then(|r| r.strip_suffix(".xz"))
    {
        return Ok(simple(
            OutputKind::Initramfs,
            "metal",
            parse_arch(rest)?,
            false,
        ));
    }

    if let Some(rest) = path.strip_suffix(".iso") {
        let pa = parse_platform_arch(rest, &quirks)?;
        return Ok(from_platform_arch(OutputKind::Iso, pa));
    }

    if let Some(rest) = path.strip_suffix("-uki.efi") {
        let pa = parse_platform_arch(rest, &quirks)?;
        return Ok(from_platform_arch(OutputKind::Uki, pa));
    }

    if let Some(rest) = path
        .strip_prefix("installer-")
        .and_then(|r| r.strip_suffix(".tar"))
    {
        let (rest, secure_boot) = match rest.strip_suffix("-secureboot") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        return Ok(simple(
            OutputKind::Installer,
            "metal",
            parse_arch(rest)?,
            secure_boot,
        ));
    }

    if let Some((platform, rest)) = path
        .strip_suffix(".tar")
        .and_then(|r| r.split_once("-installer-"))
    {
        let (rest, secure_boot) = match rest.strip_suffix("-secureboot") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        return Ok(simple(
            OutputKind::Installer,
            platform,
            parse_arch(rest)?,
            secure_boot,
        ));
    }

    // Disk image: compression suffix first, then the disk format.
    let mut rest = path;
    let mut out_format = OutFormat::Raw;
    for f in [
        OutFormat::TarGz,
        OutFormat::Gz,
        OutFormat::Xz,
        OutFormat::Zst,
    ] {
        if let Some(r) = rest.strip_suffix(f.suffix()) {
            rest = r;
            out_format = f;
            break;
        }
    }
    let mut disk_format = None;
    for d in [
        DiskFormat::Raw,
        DiskFormat::Qcow2,
        DiskFormat::Vhd,
        DiskFormat::Ova,
    ] {
        if let Some(r) = rest
            .strip_suffix(d.extension())
            .and_then(|r| r.strip_suffix('.'))
        {
            rest = r;
            disk_format = Some(d);
            break;
        }
    }
    let Some(disk_format) = disk_format else {
        return Err(ProfileError::InvalidProfilePath(rest.to_string()));
    };
    let mut image = ImageOptions {
        disk_format,
        disk_size_mib: DEFAULT_RAW_DISK_SIZE_MIB,
        disk_format_options: if disk_format == DiskFormat::Qcow2 {
            "cluster_size=8k".to_string()
        } else {
            String::new()
        },
    };
    let pa = parse_platform_arch(rest, &quirks)?;
    if let Some((size, options)) = platform_image_defaults(&pa.platform) {
        if let Some(size) = size {
            image.disk_size_mib = size;
        }
        if let Some(options) = options {
            image.disk_format_options = options.to_string();
        }
    }
    let mut profile = from_platform_arch(OutputKind::Image, pa);
    profile.out_format = out_format;
    profile.image = Some(image);
    Ok(profile)
}

/// Alias of [`parse_from_path`] (the name the request pipeline uses).
pub fn parse_asset_path(path: &str, version: &TalosVersion) -> Result<AssetProfile, ProfileError> {
    parse_from_path(path, version)
}

/// The `/pxe/<schematic>/<version>/<path>` form: `<platform>-<arch>[-secureboot]`, parsed as
/// the asset `cmdline-<path>` (so `metal-x86_64` is metal/amd64).
pub fn parse_pxe_path(path: &str, version: &TalosVersion) -> Result<AssetProfile, ProfileError> {
    parse_from_path(&format!("cmdline-{path}"), version)
}

/// `Content-Type` of an asset, keyed on the extension of its path (upstream
/// `internal/mime/mime.go`), with the host-dependent part pinned.
///
/// The extension is Go's `filepath.Ext`: from the last `.` of the last `/`-separated element.
/// Upstream's explicit, case-sensitive table comes first: `.efi` → `application/efi`, `.iso` →
/// `application/x-iso9660-image`, `.xz` → `application/x-xz`, `.gz` → `application/gzip`,
/// `.qcow2` → `application/x-qemu-disk`. Upstream then asks Go's `mime.TypeByExtension`, whose
/// answer depends on the host's `mime.types`; we pin it (matched case-insensitively, as Go's
/// fallback is) to Go's built-in table plus the Debian `mime.types` entries relevant to assets:
/// `.txt` → `text/plain; charset=utf-8` (Go adds the charset to `text/*`), `.tar` →
/// `application/x-tar`, `.zst` → `application/zstd`. `.raw`, `.vhd`, `.ova`, no extension and
/// anything else → `application/octet-stream`. (Debian's `mime.types` also lists `.efi`,
/// `.iso`, `.xz` and `.gz`, so e.g. `.ISO` resolves like `.iso`.)
pub fn content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = match name.rfind('.') {
        Some(i) => &name[i..],
        None => return "application/octet-stream",
    };
    match ext {
        ".efi" => return "application/efi",
        ".iso" => return "application/x-iso9660-image",
        ".xz" => return "application/x-xz",
        ".gz" => return "application/gzip",
        ".qcow2" => return "application/x-qemu-disk",
        _ => {}
    }
    match ext.to_lowercase().as_str() {
        // Pinned host `mime.types` entries (Debian).
        ".txt" => "text/plain; charset=utf-8",
        ".tar" => "application/x-tar",
        ".zst" => "application/zstd",
        ".efi" => "application/efi",
        ".iso" => "application/x-iso9660-image",
        ".xz" => "application/x-xz",
        ".gz" => "application/gzip",
        // Go's built-in table.
        ".avif" => "image/avif",
        ".css" => "text/css; charset=utf-8",
        ".gif" => "image/gif",
        ".htm" | ".html" => "text/html; charset=utf-8",
        ".jpeg" | ".jpg" => "image/jpeg",
        ".js" | ".mjs" => "text/javascript; charset=utf-8",
        ".json" => "application/json",
        ".pdf" => "application/pdf",
        ".png" => "image/png",
        ".svg" => "image/svg+xml",
        ".wasm" => "application/wasm",
        ".webp" => "image/webp",
        ".xml" => "text/xml; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ver(s: &str) -> TalosVersion {
        s.parse().unwrap()
    }

    // Upstream's `TestParseFromPath` vectors are checked through the public API in
    // `tests/factory_vectors.rs` (`asset_paths_image_factory_4_2`).

    #[test]
    fn pxe_paths() {
        let v = ver("v1.11.0");
        let p = parse_pxe_path("metal-x86_64", &v).unwrap();
        assert_eq!(
            (p.kind, p.platform.as_str(), p.arch, p.secure_boot),
            (OutputKind::Cmdline, "metal", Arch::Amd64, false)
        );
        let p = parse_pxe_path("metal-amd64-secureboot", &v).unwrap();
        assert!(p.secure_boot);
        let p = parse_pxe_path("equinixMetal-arm64", &v).unwrap();
        assert_eq!((p.platform.as_str(), p.arch), ("equinixMetal", Arch::Arm64));
        let p = parse_pxe_path("digital-ocean-amd64", &v).unwrap();
        assert_eq!(p.platform, "digital-ocean");
        assert_eq!(
            parse_pxe_path("metal", &v).unwrap_err().to_string(),
            r#"invalid platform-arch: "metal""#
        );
        assert_eq!(
            parse_pxe_path("metal-mips", &v).unwrap_err().to_string(),
            r#"invalid architecture: "mips""#
        );
    }

    #[test]
    fn typed_cmdline_profiles_are_what_their_pxe_paths_parse_to() {
        let v = ver("v1.11.0");
        for platform in ["metal", "aws", "digital-ocean", "equinixMetal"] {
            for arch in [Arch::Amd64, Arch::Arm64] {
                let p = AssetProfile::cmdline(platform, arch);
                assert_eq!(p.pxe_path(), format!("{platform}-{arch}"));
                assert_eq!(parse_pxe_path(&p.pxe_path(), &v).unwrap(), p);
                assert_eq!(
                    parse_from_path(&format!("cmdline-{platform}-{arch}"), &v).unwrap(),
                    p
                );
            }
        }
        for arch in [Arch::Amd64, Arch::Arm64] {
            assert_eq!(
                parse_from_path(&format!("initramfs-{arch}.xz"), &v).unwrap(),
                AssetProfile::initramfs(arch)
            );
        }
        let sb = parse_pxe_path("metal-arm64-secureboot", &v).unwrap();
        assert_eq!(sb.pxe_path(), "metal-arm64-secureboot");
        assert_eq!(Arch::from_name("amd64"), Some(Arch::Amd64));
        assert_eq!(Arch::from_name("arm64"), Some(Arch::Arm64));
        for not_a_name in ["x86_64", "i386", "AMD64", "", "riscv64"] {
            assert_eq!(Arch::from_name(not_a_name), None, "{not_a_name:?}");
        }
    }

    #[test]
    fn customization_rules() {
        let q19 = Quirks::new(&ver("v1.9.0"));
        let q110 = Quirks::new(&ver("v1.10.0"));
        let p = |path: &str| parse_from_path(path, &ver("v1.9.0")).unwrap();
        assert!(!p("installer-amd64.tar").extra_kernel_args_apply(&q19));
        assert!(p("installer-amd64-secureboot.tar").extra_kernel_args_apply(&q19));
        assert!(p("installer-amd64.tar").extra_kernel_args_apply(&q110));
        assert!(!p("metal-amd64-uki.efi").extra_kernel_args_apply(&q19));
        assert!(p("metal-amd64-uki.efi").extra_kernel_args_apply(&q110));
        assert!(!p("kernel-amd64").extra_kernel_args_apply(&q110));
        assert!(!p("initramfs-amd64.xz").extra_kernel_args_apply(&q110));
        assert!(p("cmdline-metal-amd64").meta_applies());
        assert!(p("metal-amd64.iso").meta_applies());
        assert!(p("metal-amd64.raw.zst").meta_applies());
        assert!(!p("installer-amd64-secureboot.tar").meta_applies());
        assert!(!p("metal-amd64-secureboot-uki.efi").meta_applies());
    }

    #[test]
    fn content_types() {
        let cases = [
            // upstream mime_test.go
            ("file.efi", "application/efi"),
            ("file.unknown", "application/octet-stream"),
            ("file.txt", "text/plain; charset=utf-8"),
            ("file.iso", "application/x-iso9660-image"),
            ("file.tar.gz", "application/gzip"),
            ("file.qcow2", "application/x-qemu-disk"),
            ("file.xz", "application/x-xz"),
            // Asset names (`docs/image-factory-api.md` §Content-Type).
            ("metal-amd64.iso", "application/x-iso9660-image"),
            ("metal-amd64.raw.xz", "application/x-xz"),
            ("gcp-amd64.raw.tar.gz", "application/gzip"),
            ("metal-amd64-uki.efi", "application/efi"),
            ("kernel-amd64", "application/octet-stream"),
            ("cmdline-metal-amd64", "application/octet-stream"),
            // pinned host-dependent entries
            ("installer-amd64.tar", "application/x-tar"),
            ("metal-amd64.raw.zst", "application/zstd"),
            ("azure-amd64.vhd", "application/octet-stream"),
            ("vmware-amd64.ova", "application/octet-stream"),
            ("metal-amd64.raw", "application/octet-stream"),
            ("METAL.ISO", "application/x-iso9660-image"),
            ("a.QCOW2", "application/octet-stream"),
            ("a.json", "application/json"),
            ("dir.d/kernel-amd64", "application/octet-stream"),
            ("file.", "application/octet-stream"),
        ];
        for (path, want) in cases {
            assert_eq!(content_type(path), want, "{path}");
        }
    }
}
