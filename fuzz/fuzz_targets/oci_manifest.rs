#![no_main]
//! See `bootfactory::fuzzing::oci_manifest` for the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bootfactory::fuzzing::oci_manifest::check(data));
