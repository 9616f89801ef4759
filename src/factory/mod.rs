//! The image factory: Talos versions and catalogs, asset paths, kernel command lines,
//! initramfs with system extensions, builds (once, cached, signed).
//!
//! - [`version`], [`profile`], [`cmdline`], [`meta`]: pure upstream-compatible logic.
//! - [`artifacts`]: versions, catalogs, imager files and extension trees via the mirror.
//! - [`initramfs`]: the initramfs-with-extensions builder; [`uki`]: the UKI (stub + sections).
//! - [`builder`], [`signing`]: build once, cache in the store, sign.
//! - [`service`]: the request → asset pipeline the HTTP handlers call; [`chain`]: the boot chain
//!   check (catalog, extensions, overlay present or reachable) behind assignments and `/pxe`;
//!   [`warm`]: building a machine's boot assets before it boots.
//! - [`talosctl`]: talosctl downloads from the `talosctl-all` image.
//! - [`disk`]: raw disk images; [`grubcfg`]: GRUB's configuration files; [`tools`]: the few
//!   external programs (mkfs.xfs, grub-mkimage) GRUB-booted media need, found at run time;
//!   [`iso`]: hybrid and GRUB ISOs.
//! - [`remote`]: a parent factory asked for an asset before it is built here.

/// Whether this release serves SecureBoot assets (it holds no SecureBoot signing keys, so
/// every `-secureboot` asset is refused with upstream's 400 `secure boot is disabled`). Pages
/// that offer links (the web UI's wizard) read this rather than link to refusals.
pub const SERVES_SECURE_BOOT: bool = false;
/// Whether this release builds assets that carry an embedded machine configuration (it
/// stores such schematics, but refuses every asset built from the image's content with 501).
pub const BUILDS_EMBEDDED_CONFIG: bool = false;
/// Whether this release builds disk images for boards (an overlay's boot blobs): 501 today.
pub const BUILDS_BOARD_DISK_IMAGES: bool = false;

pub(crate) mod artifacts;
pub(crate) mod builder;
pub(crate) mod chain;
pub mod cmdline;
pub(crate) mod delivery;
pub mod disk;
pub mod grubcfg;
pub mod initramfs;
pub(crate) mod installer;
pub mod iso;
pub mod meta;
pub mod profile;
pub mod quirks;
pub(crate) mod remote;
pub(crate) mod running;
pub(crate) mod service;
pub(crate) mod signing;
pub(crate) mod talosctl;
pub mod tools;
pub(crate) mod uki;
pub(crate) mod warm;
