//! File formats written by hand where no crate fits.

pub mod cpio;
pub mod pe;
