#![no_main]
//! See `bootfactory::fuzzing::layer_tar` for the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bootfactory::fuzzing::layer_tar::check(data));
