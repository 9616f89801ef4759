#![no_main]
//! See `bootfactory::fuzzing::squashfs` for the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bootfactory::fuzzing::squashfs::check(data));
