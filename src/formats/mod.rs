//! File formats written by hand where no crate fits.

pub mod adv;
pub mod cpio;
pub mod pe;

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
