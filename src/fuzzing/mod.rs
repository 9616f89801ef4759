//! Fuzzing harnesses (feature `fuzzing`, off by default): one property check per parser that
//! reads untrusted bytes.
//!
//! Each `check` function takes arbitrary bytes, runs the parser the way the server does, and
//! **panics** when a property is violated: a panic inside the parser, a round trip that does
//! not reproduce its input, a file written outside the directory an archive is extracted into.
//! Refusing the input with an error is always fine.
//!
//! The same functions run in two places, so the harness logic exists once:
//! - the cargo-fuzz targets in `fuzz/fuzz_targets/` (nightly, libFuzzer, sanitizers), each a
//!   one-line call of a `check` below;
//! - `tests/fuzz_corpus.rs` (stable `cargo test`), which replays every committed corpus and
//!   regression file through [`TARGETS`].
//!
//! Living in the crate (rather than in `fuzz/`) lets the checks drive `pub(crate)` parsers
//! (the DHCP request reader and responder decision, the TFTP extra-directory lookup, the
//! squashfs subtree extraction) without widening their visibility in the shipped library.

pub mod asset_path;
pub mod cpio;
pub mod dhcp;
pub mod extension_manifest;
pub mod image_reference;
pub mod initramfs;
pub mod layer_tar;
pub mod oci_manifest;
pub mod schematic;
pub mod squashfs;
pub mod tftp;

mod sandbox;

/// A property check: panics when `data` violates a property.
pub type Check = fn(&[u8]);

/// Every target: its name (the `fuzz/fuzz_targets/<name>.rs` file and `fuzz/corpus/<name>/`
/// directory) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("schematic_roundtrip", schematic::check),
    ("asset_path", asset_path::check),
    ("dhcp_request", dhcp::check),
    ("tftp_request", tftp::check),
    ("oci_manifest", oci_manifest::check),
    ("image_reference", image_reference::check),
    ("cpio_reader", cpio::check),
    ("layer_tar", layer_tar::check),
    ("squashfs_extract", squashfs::check),
    ("initramfs_parse", initramfs::check),
    ("extension_manifest", extension_manifest::check),
];

/// Structural equality that also treats `NaN == NaN` (a float `NaN` in a schematic's overlay
/// options is a legitimate value that must survive a round trip): equal by `PartialEq`, or
/// with identical `Debug` renderings.
pub(crate) fn same<T: PartialEq + std::fmt::Debug>(a: &T, b: &T) -> bool {
    a == b || format!("{a:?}") == format!("{b:?}")
}

/// Runs `f` with the default panic hook instead of libFuzzer's, which aborts the process on
/// every panic, even one the code under test catches on purpose (`contain_squashfs_panic`
/// turns backhand panics on corrupt images into errors). A panic that escapes `f` is re-raised
/// after libFuzzer's hook is back, so it is still reported as a crash.
pub(crate) fn with_contained_panics<T>(f: impl FnOnce() -> T) -> T {
    let fuzzer_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(fuzzer_hook);
    match result {
        Ok(v) => v,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("panic");
            panic!("uncontained panic: {why}")
        }
    }
}
