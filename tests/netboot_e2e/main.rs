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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bootfactory::fixture::{BootOptions, FileSource, FixtureOptions, InitramfsFile, write_release};
use support::lab::{BOOTFACTORY_IP, Lab, can_make_namespaces};
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

/// Boot assets for one architecture of the fixture release: a real `kernel`, the fixture's
/// `/init` script `init` and a static `busybox` as `/bin/busybox` in the base initramfs.
pub fn bootable(kernel: PathBuf, init: String, busybox: PathBuf) -> BootOptions {
    BootOptions {
        kernel: Some(FileSource::Path(kernel)),
        init: Some(FileSource::Bytes(init.into_bytes())),
        initramfs_files: vec![InitramfsFile {
            dest: "bin/busybox".into(),
            source: FileSource::Path(busybox),
            mode: Some(0o755),
        }],
        ..BootOptions::default()
    }
}

/// One appliance of a scenario: a scratch directory holding its data directory (the fixture
/// release v1.11.6 imported offline), its schematics directory, assignments seed and config.
pub struct Appliance {
    /// Scratch directory (removed on drop).
    pub work: tempfile::TempDir,
    /// The schematic IDs, in the order given to [`Appliance::new`].
    pub ids: Vec<String>,
}

impl Appliance {
    /// The fixture release as `options` say (v1.11.6 unless they name versions) imported into
    /// a new data directory, and `schematics` written where `schematics.dir` will point.
    pub fn new(mut options: FixtureOptions, schematics: &[&str]) -> Appliance {
        if options.versions.is_empty() {
            options.versions = vec!["v1.11.6".into()];
        }
        let work = tempfile::tempdir().unwrap();
        let layout = work.path().join("layout");
        write_release(&layout, &options).expect("fixture release");
        let data = work.path().join("data");
        bootfactory(&[
            "mirror",
            "import",
            &layout.to_string_lossy(),
            "--data-dir",
            &data.to_string_lossy(),
        ]);
        let dir = work.path().join("schematics");
        std::fs::create_dir_all(&dir).unwrap();
        let mut ids = Vec::new();
        for (i, yaml) in schematics.iter().enumerate() {
            std::fs::write(dir.join(format!("s{i}.yaml")), yaml).unwrap();
            ids.push(schematic_id(yaml));
        }
        Appliance { work, ids }
    }

    /// Writes the assignments seed file (`machines:` entries, YAML) and a configuration for
    /// an offline bootfactory with this data directory, the admin token `token`, network boot
    /// on `b0`, the `http` section's lines (indented, without the `http:` line) and more
    /// `pxe` lines (indented); returns the configuration file.
    pub fn config(&self, token: &str, machines: &str, http: &str, pxe: &str) -> PathBuf {
        let dir = self.work.path();
        let seed = dir.join("assignments.yaml");
        std::fs::write(&seed, format!("machines:\n{machines}")).unwrap();
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "dataDir: {}\noffline: true\nlog:\n  level: info,bootfactory=debug\nhttp:\n{http}schematics:\n  dir: {}\nassignments:\n  file: {}\napi:\n  adminToken: {token}\npxe:\n  enabled: true\n  interfaces: [b0]\n{pxe}",
                dir.join("data").display(),
                dir.join("schematics").display(),
                seed.display(),
            ),
        )
        .unwrap();
        config
    }
}

/// The `http` lines of a plain-HTTP appliance on 192.0.2.10:8080.
pub fn plain_http() -> String {
    format!("  listen: {BOOTFACTORY_IP}:8080\n  externalURL: http://{BOOTFACTORY_IP}:8080\n")
}

/// Starts bootfactory with `config` in the lab's `bf` namespace and waits up to 90 s until
/// network boot is ready; fails with its log if it stopped or never got there.
pub fn start_bootfactory(lab: &mut Lab, config: &Path) {
    lab.spawn(
        "bf",
        "bootfactory.log",
        &[
            env!("CARGO_BIN_EXE_bootfactory"),
            "serve",
            "--config",
            &config.to_string_lossy(),
        ],
    );
    let ready = lab.wait_for(Duration::from_secs(90), |lab| {
        lab.log("bootfactory.log").contains("network boot ready") || !lab.running("bootfactory.log")
    });
    assert!(
        ready && lab.running("bootfactory.log"),
        "bootfactory did not start network boot:\n{}",
        lab.log("bootfactory.log")
    );
}

/// `GET url` with the admin token `token`, from inside the lab's `bf` namespace (curl): the
/// body, or empty on any failure.
pub fn admin_get(lab: &Lab, token: &str, url: &str) -> String {
    let out = lab.exec(
        "bf",
        &[
            "curl",
            "-sf",
            "-H",
            &format!("Authorization: Bearer {token}"),
            url,
        ],
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
