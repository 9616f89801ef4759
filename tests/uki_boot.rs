//! The factory's UKI boots in QEMU + OVMF (`docs/boot-lab.md`, "UKI boot"). The fixture
//! release carries a real Debian kernel, Debian's real systemd-stub and systemd-boot, and a
//! busybox `/init` that prints a marker, `/proc/cmdline` and the extensions it finds on the
//! serial console. The UKI for the example schematic is fetched over HTTP from an in-process
//! server, put on an ESP (a directory QEMU presents as a FAT disk, its `vvfat` driver) and
//! booted twice:
//!
//! - through systemd-boot: `EFI/BOOT/BOOTX64.EFI` = systemd-boot, which finds the UKI as a
//!   type #2 entry in `EFI/Linux/` and boots it (no `loader.conf`: the default entry, no menu);
//! - directly: the UKI itself as `EFI/BOOT/BOOTX64.EFI`.
//!
//! In both, `/proc/cmdline` must be the UKI's `.cmdline` and the example's extensions must be
//! in the initramfs. No network, no namespaces. Needs `qemu-system-x86_64`, OVMF, a static
//! busybox, `systemd-boot-efi` and a Debian kernel (`tests/run-all.sh` prepares them); a
//! missing one skips the test, or fails it under `BOOTFACTORY_REQUIRE_TOOLS=1`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bootfactory::fixture::{BootOptions, FileSource, FixtureOptions, InitramfsFile};
use bootfactory::formats::pe::PeImage;
use support::TestServer;
use support::lab::ovmf_code;
use support::tools::have;

const MARKER: &str = "BOOTFACTORY-UKI-MARKER";
const DONE: &str = "BOOTFACTORY-UKI-DONE";
const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const SD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const BUSYBOX: &str = "/bin/busybox";

/// The fixture's `/init`: everything goes to the first serial port.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
exec >/dev/ttyS0 2>&1
echo "BOOTFACTORY-UKI-MARKER"
echo "CMDLINE: $(/bin/busybox cat /proc/cmdline)"
/bin/busybox grep -E 'name:' /extensions.yaml | while read -r line; do echo "EXTENSION: $line"; done
echo "BOOTFACTORY-UKI-DONE"
/bin/busybox sync
/bin/busybox poweroff -f
"#;

/// A required file or tool; missing, the test is skipped (or fails when tools are required).
fn present(path: &Path, what: &str) -> bool {
    if path.exists() {
        return true;
    }
    assert!(
        std::env::var("BOOTFACTORY_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "{} ({what}) is required (tests/run-all.sh installs it)",
        path.display()
    );
    eprintln!("skipping: {} ({what}) is missing", path.display());
    false
}

fn lab_kernel() -> Option<PathBuf> {
    let path = std::env::var_os("BOOTFACTORY_LAB_KERNEL")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/bootfactory/lab/vmlinuz"))
        })?;
    present(&path, "a Debian kernel").then_some(path)
}

/// A QEMU child, killed (by its PID) when dropped.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots OVMF with `esp` as a FAT disk and waits for [`DONE`] (or the machine to stop, or
/// the deadline) on the serial console. Returns the console output.
fn boot(esp: &Path, work: &Path, name: &str) -> String {
    let code = ovmf_code().expect("OVMF");
    let vars = work.join(format!("{name}-vars.fd"));
    std::fs::copy("/usr/share/OVMF/OVMF_VARS.fd", &vars).expect("OVMF_VARS.fd");
    let serial = work.join(format!("{name}.serial"));
    let log = std::fs::File::create(work.join(format!("{name}.qemu.log"))).unwrap();
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-machine", "q35", "-m", "768", "-smp", "1"])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,readonly=on,file={}",
            code.display()
        ))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .arg("-drive")
        // vvfat, read-only (on virtio-blk: QEMU's IDE disks refuse read-only nodes).
        .arg(format!(
            "file=fat:{},format=raw,if=virtio,readonly=on",
            esp.display()
        ))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("qemu-system-x86_64");
    let mut vm = Vm(child);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = std::fs::read_to_string(&serial).unwrap_or_default();
        if out.contains(DONE) || Instant::now() > deadline {
            return out;
        }
        if let Ok(Some(status)) = vm.0.try_wait() {
            std::thread::sleep(Duration::from_millis(200));
            let qemu =
                std::fs::read_to_string(work.join(format!("{name}.qemu.log"))).unwrap_or_default();
            return format!(
                "{}\n[qemu exited: {status}] {qemu}",
                std::fs::read_to_string(&serial).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn lines_after(text: &str, prefix: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            l.find(prefix)
                .map(|i| l[i + prefix.len()..].trim().to_string())
        })
        .collect()
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// What the booted system printed must match the UKI.
fn check_boot(how: &str, out: &str, cmdline: &str) {
    assert!(
        out.contains(MARKER),
        "{how}: the UKI did not reach /init\n{}",
        tail(out)
    );
    let seen = lines_after(out, "CMDLINE: ");
    eprintln!("{how}: /proc/cmdline = {:?}", seen.first());
    assert_eq!(seen.first().map(String::as_str), Some(cmdline), "{how}");
    let exts = lines_after(out, "EXTENSION: ");
    for name in [
        "amd-ucode",
        "fuse3",
        "intel-ucode",
        "iscsi-tools",
        "qemu-guest-agent",
        "tailscale",
        "util-linux-tools",
        "schematic",
    ] {
        assert!(
            exts.iter().any(|l| l.contains(name)),
            "{how}: {name} missing from {exts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uki_boots_in_ovmf_via_systemd_boot_and_directly() {
    if !have("qemu-system-x86_64")
        || !present(Path::new(BUSYBOX), "a static busybox")
        || !present(Path::new(STUB), "systemd-boot-efi")
        || !present(Path::new(SD_BOOT), "systemd-boot-efi")
    {
        return;
    }
    let Some(kernel) = lab_kernel() else { return };
    assert!(
        ovmf_code().is_some(),
        "OVMF is required (apt-get install ovmf)"
    );

    let options = FixtureOptions {
        versions: vec!["v1.11.6".into()],
        amd64: BootOptions {
            kernel: Some(FileSource::Path(kernel)),
            init: Some(FileSource::Bytes(INIT.as_bytes().to_vec())),
            initramfs_files: vec![InitramfsFile {
                dest: "bin/busybox".into(),
                source: FileSource::Path(BUSYBOX.into()),
                mode: Some(0o755),
            }],
            systemd_stub: Some(FileSource::Path(STUB.into())),
            systemd_boot: Some(FileSource::Path(SD_BOOT.into())),
            ..BootOptions::default()
        },
        ..FixtureOptions::default()
    };
    let data = tempfile::tempdir().unwrap();
    let (_layout, release) = support::import_fixture(data.path(), &options).await;
    let server = TestServer::start_in(data, &[("offline", "true")]).await;
    let example =
        std::fs::read_to_string(support::repo_root().join("schematics/example.yaml")).unwrap();
    let id = support::post_schematic(&server.url, &example).await;
    bootfactory::init_crypto();
    let started = Instant::now();
    let resp = reqwest::get(format!(
        "{}/image/{id}/v1.11.6/metal-amd64-uki.efi",
        server.url
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let uki = resp.bytes().await.unwrap().to_vec();
    eprintln!(
        "UKI (real kernel, real stub): {} bytes, built and fetched in {:?}",
        uki.len(),
        started.elapsed()
    );
    let pe = PeImage::parse(&uki).unwrap();
    let cmdline =
        String::from_utf8(pe.section_data(pe.section(".cmdline").unwrap()).to_vec()).unwrap();
    let uname = String::from_utf8(pe.section_data(pe.section(".uname").unwrap()).to_vec()).unwrap();
    assert_eq!(uname, release.version("v1.11.6").unwrap().kernel_version);
    server.stop().await;

    let work = tempfile::tempdir().unwrap();
    // Through systemd-boot: the UKI as a type #2 entry.
    let esp = work.path().join("esp-sd-boot");
    std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    std::fs::create_dir_all(esp.join("EFI/Linux")).unwrap();
    std::fs::copy(SD_BOOT, esp.join("EFI/BOOT/BOOTX64.EFI")).unwrap();
    std::fs::write(esp.join("EFI/Linux/Talos-v1.11.6.efi"), &uki).unwrap();
    let started = Instant::now();
    let out = tokio::task::block_in_place(|| boot(&esp, work.path(), "sd-boot"));
    eprintln!("booted via systemd-boot in {:?}", started.elapsed());
    check_boot("via systemd-boot", &out, &cmdline);

    // Directly: the UKI is the removable-media boot file.
    let esp = work.path().join("esp-direct");
    std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    std::fs::write(esp.join("EFI/BOOT/BOOTX64.EFI"), &uki).unwrap();
    let started = Instant::now();
    let out = tokio::task::block_in_place(|| boot(&esp, work.path(), "direct"));
    eprintln!("booted directly in {:?}", started.elapsed());
    check_boot("directly", &out, &cmdline);
}
