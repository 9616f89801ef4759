//! File formats written by hand where no crate fits.
//!
//! Disk images: [`disk::convert`] turns a sparse raw disk image into `.raw`, `.vhd`, `.qcow2`,
//! `.tar` or `.ova`, optionally `.zst`, `.xz` or `.gz` ([`compress`]), reading only its data
//! extents ([`sparse`]); [`vhd`], [`qcow2`], [`sparse_tar`], [`vmdk`] and [`ova`] are the
//! containers, [`xz`] the `.xz` stream writer. [`iso9660`] writes bootable ISO images (El
//! Torito, appended EFI partition).

pub mod adv;
pub mod authenticode;
pub mod compress;
pub mod cpio;
pub mod disk;
pub mod efi_auth;
pub mod gpt;
pub mod iso9660;
pub mod ova;
pub mod pe;
mod pkcs7;
pub mod qcow2;
pub mod sparse;
pub mod sparse_tar;
pub mod vhd;
pub mod vmdk;
pub mod xz;
use std::io::{self, Read};

/// Reads until `buf` is full or the reader ends; returns how many bytes were read (fewer than
/// `buf.len()` only at the end of the input). Interrupted reads are retried.
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
