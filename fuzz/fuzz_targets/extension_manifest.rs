#![no_main]
//! See `bootfactory::fuzzing::extension_manifest` for the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bootfactory::fuzzing::extension_manifest::check(data));
