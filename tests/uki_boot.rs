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

use std::time::Instant;

use bootfactory::fixture::{BootOptions, FileSource, FixtureOptions, InitramfsFile};
use bootfactory::formats::pe::PeImage;
use support::TestServer;
use support::lab::{BUSYBOX, SD_BOOT, SD_STUB as STUB, boot_ovmf, lab_kernel, ovmf_code, present};
use support::tools::have;

const MARKER: &str = "BOOTFACTORY-UKI-MARKER";
const DONE: &str = "BOOTFACTORY-UKI-DONE";

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

/// Boots OVMF with `esp` as a read-only FAT disk (QEMU's vvfat, on virtio-blk: its IDE disks
/// refuse read-only nodes) and returns the console output.
fn boot(esp: &Path, work: &Path, name: &str) -> String {
    let drive = format!(
        "file=fat:{},format=raw,if=virtio,readonly=on",
        esp.display()
    );
    boot_ovmf(&drive, work, name, DONE)
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

/// The extensions of `schematics/example.yaml`, plus the schematic extension.
const EXAMPLE_EXTENSIONS: [&str; 8] = [
    "amd-ucode",
    "fuse3",
    "intel-ucode",
    "iscsi-tools",
    "qemu-guest-agent",
    "tailscale",
    "util-linux-tools",
    "schematic",
];

/// What the booted system printed must match the UKI: the marker, `/proc/cmdline` and the
/// `extensions` found in the initramfs.
fn check_boot(how: &str, out: &str, cmdline: &str, extensions: &[&str]) {
    assert!(
        out.contains(MARKER),
        "{how}: the UKI did not reach /init\n{}",
        tail(out)
    );
    let seen = lines_after(out, "CMDLINE: ");
    eprintln!("{how}: /proc/cmdline = {:?}", seen.first());
    assert_eq!(seen.first().map(String::as_str), Some(cmdline), "{how}");
    let exts = lines_after(out, "EXTENSION: ");
    for name in extensions {
        assert!(
            exts.iter().any(|l| l.contains(name)),
            "{how}: {name} missing from {exts:?}"
        );
    }
}

/// The boot tools are there: returns the Debian kernel, or `None` when something is missing
/// (the test is skipped, or fails under `BOOTFACTORY_REQUIRE_TOOLS=1`).
fn boot_tools() -> Option<PathBuf> {
    if !have("qemu-system-x86_64")
        || !present(Path::new(BUSYBOX), "a static busybox")
        || !present(Path::new(STUB), "systemd-boot-efi")
        || !present(Path::new(SD_BOOT), "systemd-boot-efi")
    {
        return None;
    }
    let kernel = lab_kernel()?;
    assert!(
        ovmf_code().is_some(),
        "OVMF is required (apt-get install ovmf)"
    );
    Some(kernel)
}

/// The bootable fixture: v1.11.6 whose amd64 imager has the Debian kernel, the busybox
/// `/init`, and Debian's systemd-stub and systemd-boot.
fn bootable_fixture(kernel: PathBuf) -> FixtureOptions {
    FixtureOptions {
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
    }
}

/// An ESP booting `uki` through systemd-boot: `EFI/BOOT/BOOTX64.EFI` = `sd_boot`, the UKI a
/// type #2 entry `EFI/Linux/Talos-v1.11.6.efi` (no `loader.conf`: the default entry, no menu).
fn sd_boot_esp(esp: &Path, sd_boot: &[u8], uki: &[u8]) {
    std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    std::fs::create_dir_all(esp.join("EFI/Linux")).unwrap();
    std::fs::write(esp.join("EFI/BOOT/BOOTX64.EFI"), sd_boot).unwrap();
    std::fs::write(esp.join("EFI/Linux/Talos-v1.11.6.efi"), uki).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uki_boots_in_ovmf_via_systemd_boot_and_directly() {
    let Some(kernel) = boot_tools() else { return };
    let options = bootable_fixture(kernel);
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
    sd_boot_esp(&esp, &std::fs::read(SD_BOOT).unwrap(), &uki);
    let started = Instant::now();
    let out = tokio::task::block_in_place(|| boot(&esp, work.path(), "sd-boot"));
    eprintln!("booted via systemd-boot in {:?}", started.elapsed());
    check_boot("via systemd-boot", &out, &cmdline, &EXAMPLE_EXTENSIONS);

    // Directly: the UKI is the removable-media boot file.
    let esp = work.path().join("esp-direct");
    std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    std::fs::write(esp.join("EFI/BOOT/BOOTX64.EFI"), &uki).unwrap();
    let started = Instant::now();
    let out = tokio::task::block_in_place(|| boot(&esp, work.path(), "direct"));
    eprintln!("booted directly in {:?}", started.elapsed());
    check_boot("directly", &out, &cmdline, &EXAMPLE_EXTENSIONS);
}

/// A schematic with one extension and one extra kernel argument.
const INSTALLER_SCHEMATIC: &str = "customization:\n  extraKernelArgs:\n    - bootfactory.installer=1\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/gvisor\n";

/// The entries of the gzip'd tar at `path`: name → bytes.
fn layer_files(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::io::Read;
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut archive = tar::Archive::new(gz);
    let mut files = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        files.insert(entry.path().unwrap().display().to_string(), bytes);
    }
    files
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &serde_json::Value) -> PathBuf {
    let digest = digest.as_str().unwrap();
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The systemd major version of a systemd-boot or systemd-stub binary, from its
/// `#### LoaderInfo: systemd-boot 252.39-1~deb12u2 ####` marker.
fn systemd_major(binary: &[u8]) -> u32 {
    let marker = b"#### LoaderInfo: systemd-";
    let at = binary
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("a systemd EFI binary has a LoaderInfo marker");
    let rest = &binary[at + marker.len()..];
    let text = String::from_utf8_lossy(&rest[..rest.len().min(64)]).to_string();
    let version = text.split_whitespace().nth(1).unwrap_or_default();
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no version in {text:?}"))
}

/// The UKI and systemd-boot of `metal-installer/<id>:v1.11.6`, pulled with a real client
/// (`skopeo copy --all` into an OCI layout), boot: through that systemd-boot, which finds the
/// UKI as a type #2 entry, and directly as `BOOTX64.EFI` (the stub alone).
///
/// The installer's UKI has two `.cmdline` sections: the main one, then, after the
/// `reset-maintenance` `.profile`, that profile's (`… talos.experimental.wipe=…`), the layout
/// of upstream's multi-profile UKIs. systemd before 257 knows nothing of `.profile`: its
/// systemd-boot (which passes the entry's `.cmdline` as load options) and its stub look sections
/// up by name and keep the *last* match, so Debian 12's 252 boots the reset-maintenance command
/// line. From 257 the sections before the first `.profile` are the default profile and the first
/// `.cmdline` is used. The test expects what the installed systemd does (`docs/boot-lab.md`,
/// "Installer UKI boot").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installer_image_uki_boots_via_its_systemd_boot() {
    let Some(kernel) = boot_tools() else { return };
    if !have("skopeo") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let (_layout, _release) = support::import_fixture(data.path(), &bootable_fixture(kernel)).await;
    let server = TestServer::start_in(data, &[("offline", "true")]).await;
    let id = support::post_schematic(&server.url, INSTALLER_SCHEMATIC).await;
    let host = server.url.trim_start_matches("http://").to_string();

    // Pull the installer image like a container runtime would.
    let pulled = tempfile::tempdir().unwrap();
    let layout = pulled.path().join("oci");
    let src = format!("docker://{host}/metal-installer/{id}:v1.11.6");
    let dst = format!("oci:{}", layout.display());
    let started = Instant::now();
    tokio::task::spawn_blocking(move || {
        support::tools::skopeo_ok(&["copy", "--all", "--src-tls-verify=false", &src, &dst])
    })
    .await
    .unwrap();
    eprintln!(
        "installer image built and pulled in {:?}",
        started.elapsed()
    );
    server.stop().await;

    // The linux/amd64 image's last layer is the artifacts layer.
    let index_json = read_json(&layout.join("index.json"));
    let index = read_json(&blob(&layout, &index_json["manifests"][0]["digest"]));
    let amd64 = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64" && m["platform"]["os"] == "linux")
        .expect("a linux/amd64 image");
    let manifest = read_json(&blob(&layout, &amd64["digest"]));
    let layers = manifest["layers"].as_array().unwrap();
    let artifacts = layer_files(&blob(&layout, &layers.last().unwrap()["digest"]));
    assert_eq!(
        artifacts.keys().collect::<Vec<_>>(),
        [
            "usr/install/amd64/systemd-boot.efi",
            "usr/install/amd64/vmlinuz.efi"
        ]
    );
    let sd_boot = &artifacts["usr/install/amd64/systemd-boot.efi"];
    let uki = &artifacts["usr/install/amd64/vmlinuz.efi"];
    assert_eq!(
        sd_boot,
        &std::fs::read(SD_BOOT).unwrap(),
        "the imager's systemd-boot"
    );

    // Its command lines: the main one, then the reset-maintenance profile's.
    let pe = PeImage::parse(uki).unwrap();
    let cmdlines: Vec<String> = pe
        .sections()
        .iter()
        .filter(|s| s.name() == b".cmdline")
        .map(|s| String::from_utf8(pe.section_data(s).to_vec()).unwrap())
        .collect();
    assert_eq!(cmdlines.len(), 2, "{cmdlines:?}");
    let (main, reset) = (&cmdlines[0], &cmdlines[1]);
    assert!(main.contains("talos.platform=metal"), "{main}");
    assert!(main.contains(" bootfactory.installer=1"), "{main}");
    assert!(!main.contains("talos.experimental.wipe="), "{main}");
    assert!(
        reset.ends_with(" talos.experimental.wipe=system:EPHEMERAL,STATE"),
        "{reset}"
    );

    // What the installed systemd-boot and systemd-stub pass to the kernel.
    let profiles_known = systemd_major(sd_boot).min(systemd_major(&pe_stub_bytes(uki))) >= 257;
    let expected = if profiles_known { main } else { reset };
    eprintln!(
        "systemd {} / stub {}: expecting the {} command line",
        systemd_major(sd_boot),
        systemd_major(&pe_stub_bytes(uki)),
        if profiles_known {
            "main"
        } else {
            "reset-maintenance (last `.cmdline`)"
        }
    );

    let work = tempfile::tempdir().unwrap();
    let esp = work.path().join("esp-installer");
    sd_boot_esp(&esp, sd_boot, uki);
    let started = Instant::now();
    let out = tokio::task::block_in_place(|| boot(&esp, work.path(), "installer"));
    eprintln!(
        "installer UKI booted via its systemd-boot in {:?}",
        started.elapsed()
    );
    let extensions = ["gvisor", "schematic"];
    check_boot(
        "installer UKI via systemd-boot",
        &out,
        expected,
        &extensions,
    );

    let esp = work.path().join("esp-installer-direct");
    std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    std::fs::write(esp.join("EFI/BOOT/BOOTX64.EFI"), uki).unwrap();
    let started = Instant::now();
    let out = tokio::task::block_in_place(|| boot(&esp, work.path(), "installer-direct"));
    eprintln!("installer UKI booted directly in {:?}", started.elapsed());
    check_boot("installer UKI directly", &out, expected, &extensions);
}

/// The stub part of a UKI: its bytes up to the first appended section (`.osrel`), where the
/// stub's own `.sdmagic` is.
fn pe_stub_bytes(uki: &[u8]) -> Vec<u8> {
    let pe = PeImage::parse(uki).unwrap();
    let osrel = pe.section(".osrel").expect("a UKI has .osrel");
    uki[..osrel.pointer_to_raw_data as usize].to_vec()
}
