#![no_main]
//! See `bootfactory::fuzzing::dhcp` for the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bootfactory::fuzzing::dhcp::check(data));
