//! End-to-end network boot in namespace labs (`docs/boot-lab.md`): bootfactory with the fixture
//! release imported offline, and QEMU machines that network-boot a real Debian kernel with the
//! factory's initramfs. The fixture's `/init` prints a marker, the kernel command line and the
//! extensions it finds, then powers off.
//!
//! One test binary, one module per scenario, so the slow TCG machines of all scenarios run at
//! once (cargo runs the tests of one binary in parallel):
//! - `proxy.rs`: proxy-DHCP next to an office DHCP server (UEFI, BIOS, an ignored stranger).
//! - `arm64.rs`: an arm64 UEFI machine (AAVMF) boots an arm64 Debian kernel through
//!   `ipxe-arm64.efi`.
//! - `https.rs`: HTTPS boot verified against the appliance CA, and an impostor refused.
//! - `full.rs`: full DHCP (`pxe.dhcpMode: full`) with no other DHCP server (UEFI from the pool,
//!   BIOS with a static reservation, the leases API).
//!
//! Needs root, `ip`, `dnsmasq`, `qemu-system-x86_64`, OVMF, a static busybox and a Debian
//! kernel (`tests/run-all.sh` prepares `~/.cache/bootfactory/lab/vmlinuz`); for arm64
//! `qemu-system-aarch64`, AAVMF and an arm64 kernel and busybox (`vmlinuz-arm64`,
//! `busybox-arm64` there).

#[path = "../support/mod.rs"]
mod support;

mod arm64;
mod full;
mod https;
mod proxy;

use std::process::Command;

use support::lab::can_make_namespaces;
use support::tools::have;

/// Printed by the fixture's `/init` first.
pub const MARKER: &str = "BOOTFACTORY-E2E-MARKER";
/// Printed by the fixture's `/init` last.
pub const DONE: &str = "BOOTFACTORY-E2E-DONE";

/// The fixture's `/init`: everything goes to the first serial port.
pub const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
exec >/dev/ttyS0 2>&1
echo "BOOTFACTORY-E2E-MARKER"
echo "CMDLINE: $(/bin/busybox cat /proc/cmdline)"
for f in /*.sqsh; do echo "SQUASHFS: $f"; done
/bin/busybox grep -E 'name:' /extensions.yaml | while read -r line; do echo "EXTENSION: $line"; done
echo "BOOTFACTORY-E2E-DONE"
/bin/busybox sync
/bin/busybox poweroff -f
"#;

/// [`INIT`] writing to `console` (e.g. `/dev/ttyAMA0`, the serial port of QEMU's arm64 `virt`
/// machine) instead of `/dev/ttyS0`.
pub fn init_on(console: &str) -> String {
    INIT.replace("exec >/dev/ttyS0 2>&1", &format!("exec >{console} 2>&1"))
}

/// Whether the lab can run here: root, iproute2 and `tools`. Missing, the test is skipped with
/// a message, or fails when `BOOTFACTORY_REQUIRE_TOOLS=1` (CI).
pub fn lab_ready(tools: &[&str]) -> bool {
    if !can_make_namespaces() {
        assert!(
            std::env::var("BOOTFACTORY_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "the network-boot lab needs root and iproute2"
        );
        eprintln!("skipping: needs root and iproute2 for network namespaces");
        return false;
    }
    tools.iter().all(|t| have(t))
}

/// The ID of a schematic.
pub fn schematic_id(yaml: &str) -> String {
    bootfactory::schematic::parse(yaml.as_bytes())
        .expect("schematic")
        .id()
        .to_string()
}

/// Runs the bootfactory binary to completion; its stdout.
pub fn bootfactory(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_bootfactory"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bootfactory {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The last 60 lines of `text`.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// The rest of the first line starting with `prefix`.
pub fn line_after(text: &str, prefix: &str) -> String {
    lines_after(text, prefix)
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// The rest of every line starting with `prefix`.
pub fn lines_after(text: &str, prefix: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            l.find(prefix)
                .map(|i| l[i + prefix.len()..].trim().to_string())
        })
        .collect()
}
