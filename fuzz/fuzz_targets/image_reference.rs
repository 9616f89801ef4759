#![no_main]
//! See `bootfactory::fuzzing::image_reference` for the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bootfactory::fuzzing::image_reference::check(data));
