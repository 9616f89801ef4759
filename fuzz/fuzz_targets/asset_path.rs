#![no_main]
//! See `bootfactory::fuzzing::asset_path` for the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bootfactory::fuzzing::asset_path::check(data));
