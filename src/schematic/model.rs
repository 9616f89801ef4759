//! The schematic data model, field for field as Sidero's Image Factory declares it.
//!
//! Field order here is the canonical key order (upstream's struct order); which fields are
//! omitted when empty follows upstream's `omitempty` tags. See `canonical_yaml` for the bytes.

/// A schematic: the customization a Talos boot asset is built with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schematic {
    /// Enterprise-only owner; refused by [`super::validate`] in this (community) edition.
    pub owner: String,
    /// Single-board-computer overlay (Talos ≥ 1.7).
    pub overlay: Overlay,
    /// Everything else; always present in the canonical form (`customization: {}`).
    pub customization: Customization,
}

/// An SBC overlay: the overlay image and which of its installers to use, with free-form options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlay {
    /// Overlay image repository, e.g. `siderolabs/sbc-raspberrypi`.
    pub image: String,
    /// Overlay name within the image, e.g. `rpi_generic`.
    pub name: String,
    /// Free-form options passed to the overlay installer (upstream `map[string]any`).
    pub options: Vec<(String, AnyValue)>,
}

/// The `customization` block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Customization {
    /// A machine configuration document embedded into the image (Talos ≥ 1.12).
    pub embedded_machine_configuration: String,
    /// Extra kernel arguments, in order, duplicates kept.
    pub extra_kernel_args: Vec<String>,
    /// Initial META values.
    pub meta: Vec<MetaValue>,
    /// System extensions to include.
    pub system_extensions: SystemExtensions,
    /// Bootloader for disk images.
    pub bootloader: Bootloader,
    /// Secure Boot customization.
    pub secureboot: SecureBoot,
    /// Disk image customization.
    pub disk_image: DiskImage,
}

/// One META key/value pair; keys are 0–255 (`uint8` upstream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaValue {
    /// META key.
    pub key: u8,
    /// META value (any string).
    pub value: String,
}

/// The `systemExtensions` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemExtensions {
    /// Official extension names such as `siderolabs/intel-ucode`, in order.
    pub official_extensions: Vec<String>,
}

/// Bootloader kinds (Talos `imageropts.BootloaderKind`); `none` is the zero value and omitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Bootloader {
    /// Let Talos choose (omitted from the canonical form).
    #[default]
    None,
    /// GRUB for BIOS plus systemd-boot for UEFI.
    DualBoot,
    /// systemd-boot only.
    SdBoot,
    /// GRUB only.
    Grub,
}

impl Bootloader {
    /// The name as upstream spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Bootloader::None => "none",
            Bootloader::DualBoot => "dual-boot",
            Bootloader::SdBoot => "sd-boot",
            Bootloader::Grub => "grub",
        }
    }

    /// Parses a name case-insensitively, as upstream's enum decoder does (`auto` is refused).
    pub fn parse(s: &str) -> Option<Bootloader> {
        [
            Bootloader::None,
            Bootloader::DualBoot,
            Bootloader::SdBoot,
            Bootloader::Grub,
        ]
        .into_iter()
        .find(|b| b.as_str().eq_ignore_ascii_case(s))
    }
}

/// The `secureboot` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecureBoot {
    /// Key enrollment mode (`off|manual|if-safe|force`; validated at build time, like upstream).
    pub enroll_keys: String,
    /// Include Microsoft's well-known UEFI certificates in the enrollment database.
    pub include_well_known_certificates: bool,
}

/// The `diskImage` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskImage {
    /// Logical sector size of generated disk images (0 = default).
    pub sector_size: u64,
}

/// A value of upstream's free-form `any` (overlay options), as go-yaml decodes it.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyValue {
    /// `null`
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// An integer above `i64::MAX`.
    Uint(u64),
    /// A float.
    Float(f64),
    /// A timestamp, kept in Go's RFC 3339 (nanosecond) rendering.
    Timestamp(String),
    /// A string.
    Str(String),
    /// A list.
    Seq(Vec<AnyValue>),
    /// A map whose keys were all strings in the source (`map[string]any`).
    StrMap(Vec<(String, AnyValue)>),
    /// A map with at least one non-string key (`map[any]any`).
    AnyMap(Vec<(AnyValue, AnyValue)>),
}

impl Customization {
    /// True when every field is at its zero value (emitted as `customization: {}`).
    pub fn is_empty(&self) -> bool {
        self == &Customization::default()
    }
}

impl Overlay {
    /// True when the overlay is unset (omitted from the canonical form).
    pub fn is_empty(&self) -> bool {
        self.image.is_empty() && self.name.is_empty() && self.options.is_empty()
    }
}
