//! The image factory: Talos versions and catalogs, asset paths, kernel command lines,
//! initramfs with system extensions, builds (once, cached, signed).
//!
//! - [`version`], [`profile`], [`cmdline`], [`meta`]: pure upstream-compatible logic.
//! - [`artifacts`]: versions, catalogs, imager files and extension trees via the mirror.
//! - [`initramfs`]: the initramfs-with-extensions builder.
//! - [`builder`], [`signing`]: build once, cache in the store, sign.
//! - [`service`]: the request → asset pipeline the HTTP handlers call.

pub mod artifacts;
pub mod builder;
pub mod cmdline;
pub mod delivery;
pub mod initramfs;
pub mod meta;
pub mod profile;
pub mod quirks;
pub mod service;
pub mod signing;
