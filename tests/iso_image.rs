//! ISOs (`/image/<schematic>/<version>/<platform>-<arch>.iso`) over HTTP on the bootable
//! fixture (Debian kernel, Debian systemd-boot and stub, busybox `/init`), read back by
//! independent tools and booted as a CD-ROM:
//!
//! - the Talos 1.11 hybrid ISO: `isoinfo -d` (volume ID and set), `isoinfo -R -f/-x` (files,
//!   kernel and initramfs equal to the served assets, `grub.cfg`), `xorriso -report_el_torito
//!   -report_system_area` (BIOS + UEFI entries, the appended GPT partition), `fsck.vfat -n`
//!   and `mcopy` on the EFI partition; booted in SeaBIOS (GRUB → kernel + initramfs; as a CD
//!   and as a disk, through GRUB's hybrid MBR) and in OVMF (systemd-boot → UKI), one ISO;
//! - a UEFI-only ISO written by `formats::iso9660` around that EFI partition (the future
//!   SecureBoot ISO's layout: MBR, no BIOS entry), booted in OVMF;
//! - the Talos 1.8 GRUB ISO: structure, then SeaBIOS;
//! - the arm64 hybrid ISO: structure only (nothing here boots arm64).
//!
//! Tools (`genisoimage`, `xorriso`, `dosfstools`, `mtools`, GRUB, QEMU, OVMF) are installed
//! by `tests/run-all.sh`; missing, the test is skipped, or fails under
//! `BOOTFACTORY_REQUIRE_TOOLS=1`.

mod support;

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bootfactory::fixture::{BootOptions, FileSource, FixtureOptions, InitramfsFile};
use bootfactory::formats::iso9660::{self, Appended, EfiBoot, IsoSpec, PartitionTable};
use bootfactory::formats::pe::PeImage;
use support::TestServer;
use support::lab::{
    BUSYBOX, SD_BOOT, SD_STUB as STUB, boot_ovmf, boot_seabios, lab_kernel, ovmf_code, present,
};
use support::tools::have;

const MARKER: &str = "BOOTFACTORY-ISO-MARKER";
const DONE: &str = "BOOTFACTORY-ISO-DONE";
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
exec >/dev/ttyS0 2>&1
echo "BOOTFACTORY-ISO-MARKER"
echo "CMDLINE: $(/bin/busybox cat /proc/cmdline)"
echo "BOOTFACTORY-ISO-DONE"
/bin/busybox sync
/bin/busybox poweroff -f
"#;
const LOADER_CONF: &[u8] =
    b"# systemd-boot configuration\n\ntimeout 10\n\nsecure-boot-enroll off\n";

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::new()
}

async fn get_bytes(server: &TestServer, path: &str) -> (u16, Vec<u8>) {
    let resp = client()
        .get(format!("{}{path}", server.url))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

async fn download(server: &TestServer, path: &str, out: &Path) -> u64 {
    let mut resp = client()
        .get(format!("{}{path}", server.url))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        panic!("{path}: {status} {}", resp.text().await.unwrap_or_default());
    }
    let mut file = File::create(out).unwrap();
    let mut n = 0;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        file.write_all(&chunk).unwrap();
        n += chunk.len() as u64;
    }
    n
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn text(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd)).into_owned()
}

fn isoinfo_x(iso: &Path, path: &str) -> Vec<u8> {
    run(Command::new("isoinfo")
        .arg("-R")
        .arg("-i")
        .arg(iso)
        .arg("-x")
        .arg(path))
}

fn mcopy(img: &Path, inside: &str) -> Vec<u8> {
    run(Command::new("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(img)
        .arg(format!("::{inside}"))
        .arg("-"))
}

fn xorriso_report(iso: &Path) -> String {
    // xorriso reports on stdout and stderr.
    let out = Command::new("xorriso")
        .arg("-indev")
        .arg(iso)
        .args(["-report_el_torito", "plain", "-report_system_area", "plain"])
        .output()
        .unwrap();
    assert!(out.status.success(), "xorriso failed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `(start, size)` in 512-byte sectors of GPT partition `n` as xorriso reports it.
fn gpt_partition(report: &str, n: u32) -> (u64, u64) {
    let prefix = format!("GPT start and size :   {n}  ");
    let line = report
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no GPT partition {n}:\n{report}"));
    let v: Vec<u64> = line[prefix.len()..]
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0], v[1])
}

fn cut(src: &Path, offset: u64, len: u64, out: &Path) {
    use std::os::unix::fs::FileExt as _;
    let f = File::open(src).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset).unwrap();
    std::fs::write(out, buf).unwrap();
}

fn cmdlines(uki: &[u8]) -> (Vec<String>, Vec<String>) {
    let pe = PeImage::parse(uki).unwrap();
    let sections = |name: &[u8]| -> Vec<String> {
        pe.sections()
            .iter()
            .filter(|s| s.name() == name)
            .map(|s| String::from_utf8_lossy(pe.section_data(s)).into_owned())
            .collect()
    };
    (sections(b".cmdline"), sections(b".profile"))
}

fn booted_cmdline(how: &str, out: &str) -> String {
    let tail: String = out.lines().rev().take(40).collect::<Vec<_>>().join("\n");
    assert!(out.contains(MARKER), "{how}: did not reach /init:\n{tail}");
    let cmdline = out
        .lines()
        .find_map(|l| l.find("CMDLINE: ").map(|i| l[i + 9..].trim().to_string()))
        .unwrap_or_default();
    eprintln!("{how}: /proc/cmdline = {cmdline}");
    cmdline
}

fn tools() -> Option<PathBuf> {
    for t in [
        "isoinfo",
        "xorriso",
        "fsck.vfat",
        "mcopy",
        "grub-mkimage",
        "qemu-system-x86_64",
    ] {
        if !have(t) {
            return None;
        }
    }
    if !present(Path::new(BUSYBOX), "a static busybox")
        || !present(Path::new(STUB), "systemd-boot-efi")
        || !present(Path::new(SD_BOOT), "systemd-boot-efi")
        || !present(Path::new("/usr/lib/grub/i386-pc/moddep.lst"), "grub-pc-bin")
        || !present(
            Path::new("/usr/lib/grub/x86_64-efi/moddep.lst"),
            "grub-efi-amd64-bin",
        )
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

/// `VmHWM` of this process, KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isos_read_back_and_boot_in_seabios_and_ovmf() {
    let Some(kernel) = tools() else { return };
    let fake_sd_boot: Vec<u8> = b"MZ fixture arm64 systemd-boot "
        .iter()
        .copied()
        .cycle()
        .take(60_000)
        .collect();
    let options = FixtureOptions {
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
        arm64: BootOptions {
            systemd_boot: Some(FileSource::Bytes(fake_sd_boot.clone())),
            ..BootOptions::default()
        },
        ..FixtureOptions::default()
    };
    let data = tempfile::tempdir().unwrap();
    let (_layout, _release) = support::import_fixture(data.path(), &options).await;
    let server = TestServer::start_in(data, &[("offline", "true")]).await;
    let id = support::post_schematic(
        &server.url,
        "customization:\n  extraKernelArgs:\n    - bootfactory.test=1\n",
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let work_dir = match std::env::var_os("BOOTFACTORY_ISO_DEBUG_DIR") {
        Some(d) => PathBuf::from(d),
        None => work.path().to_path_buf(),
    };

    // --- The Talos 1.11 hybrid ISO ---------------------------------------------------------
    let iso = work_dir.join("metal-amd64.iso");
    let started = Instant::now();
    let size = download(
        &server,
        &format!("/image/{id}/v1.11.6/metal-amd64.iso"),
        &iso,
    )
    .await;
    eprintln!(
        "metal-amd64.iso (1.11): {size} bytes, built and fetched in {:?}; peak RSS {} MiB",
        started.elapsed(),
        peak_rss_kib() / 1024
    );
    assert_eq!(size % 2048, 0);
    let d = text(Command::new("isoinfo").arg("-d").arg("-i").arg(&iso));
    assert!(d.contains("Volume id: TALOS_V1_11_6\n"), "{d}");
    assert!(d.contains("Volume set id: Talos-v1.11.6\n"), "{d}");
    assert!(d.contains("Rock Ridge signatures"), "{d}");
    assert!(d.contains("El Torito VD version 1 found"), "{d}");
    let listing = text(
        Command::new("isoinfo")
            .arg("-R")
            .arg("-f")
            .arg("-i")
            .arg(&iso),
    );
    for f in [
        "/boot/vmlinuz",
        "/boot/initramfs.xz",
        "/boot/grub/grub.cfg",
        "/boot/grub/i386-pc/eltorito.img",
        "/boot/grub/i386-pc/normal.mod",
        "/boot/grub/i386-pc/linux.mod",
        "/boot/grub/i386-pc/moddep.lst",
    ] {
        assert!(listing.lines().any(|l| l == f), "{f} missing:\n{listing}");
    }
    let (_, served_kernel) = get_bytes(&server, &format!("/image/{id}/v1.11.6/kernel-amd64")).await;
    assert!(isoinfo_x(&iso, "/boot/vmlinuz") == served_kernel);
    let (_, served_initramfs) =
        get_bytes(&server, &format!("/image/{id}/v1.11.6/initramfs-amd64.xz")).await;
    assert!(isoinfo_x(&iso, "/boot/initramfs.xz") == served_initramfs);
    let grub_cfg = String::from_utf8(isoinfo_x(&iso, "/boot/grub/grub.cfg")).unwrap();
    let line = grub_cfg
        .lines()
        .find(|l| l.starts_with("\tlinux /boot/vmlinuz "))
        .unwrap();
    let iso_cmdline = line["\tlinux /boot/vmlinuz ".len()..].to_string();
    assert!(
        iso_cmdline.starts_with("talos.platform=metal ")
            && iso_cmdline.contains(" talos.halt_if_installed=1 ")
            && iso_cmdline.contains("bootfactory.test=1"),
        "{iso_cmdline}"
    );
    let report = xorriso_report(&iso);
    for want in [
        "El Torito boot img :   1  BIOS  y   none  0x0000  0x00      4",
        "El Torito boot img :   2  UEFI  y   none",
        "El Torito img path :   1  /boot/grub/i386-pc/eltorito.img",
        "MBR partition      :   1   0x00  0xee",
        "grub2-mbr",
        "GPT partname local :   1  ISO9660",
        "GPT partname local :   2  Appended2",
        "GPT type GUID      :   2  28732ac11ff8d211ba4b00a0c93ec93b",
    ] {
        assert!(report.contains(want), "{want:?} missing:\n{report}");
    }
    let (start, sectors) = gpt_partition(&report, 2);
    assert_eq!(
        start % 2048,
        0,
        "the EFI partition starts on a 1 MiB boundary"
    );
    assert!(
        report.contains(&format!(
            "El Torito boot img :   2  UEFI  y   none  0x0000  0x00      0  {:>10}",
            start / 4
        )),
        "the EFI El Torito entry is the appended partition:\n{report}"
    );
    let efi = work_dir.join("efiboot.img");
    cut(&iso, start * 512, sectors * 512, &efi);
    let fsck = text(Command::new("fsck.vfat").arg("-n").arg(&efi));
    assert!(fsck.contains("files,"), "fsck.vfat: {fsck}");
    assert!(mcopy(&efi, "/EFI/BOOT/BOOTX64.EFI") == std::fs::read(SD_BOOT).unwrap());
    assert_eq!(mcopy(&efi, "/loader/loader.conf"), LOADER_CONF);
    let uki = mcopy(&efi, "/EFI/Linux/Talos-v1.11.6.efi");
    let (uki_cmdlines, profiles) = cmdlines(&uki);
    assert_eq!(
        uki_cmdlines,
        vec![
            iso_cmdline.clone(),
            format!("{iso_cmdline} talos.experimental.wipe=system")
        ]
    );
    assert_eq!(
        profiles,
        vec!["ID=main", "ID=reset\nTITLE=Reset system disk"]
    );
    // Cached: the same bytes again; SecureBoot ISOs stay refused.
    let again = work_dir.join("again.iso");
    download(
        &server,
        &format!("/image/{id}/v1.11.6/metal-amd64.iso"),
        &again,
    )
    .await;
    assert!(std::fs::read(&again).unwrap() == std::fs::read(&iso).unwrap());
    std::fs::remove_file(&again).unwrap();
    let (status, _) = get_bytes(
        &server,
        &format!("/image/{id}/v1.11.6/metal-amd64-secureboot.iso"),
    )
    .await;
    assert_eq!(status, 400);

    // --- arm64: the same layout, BOOTAA64.EFI, the i386-pc entry kept ----------------------
    let arm = work_dir.join("metal-arm64.iso");
    download(
        &server,
        &format!("/image/{id}/v1.11.6/metal-arm64.iso"),
        &arm,
    )
    .await;
    let arm_report = xorriso_report(&arm);
    assert!(
        arm_report.contains("El Torito boot img :   1  BIOS"),
        "{arm_report}"
    );
    assert!(
        arm_report.contains("El Torito boot img :   2  UEFI"),
        "{arm_report}"
    );
    let (a_start, a_sectors) = gpt_partition(&arm_report, 2);
    let arm_efi = work_dir.join("arm-efiboot.img");
    cut(&arm, a_start * 512, a_sectors * 512, &arm_efi);
    assert!(mcopy(&arm_efi, "/EFI/BOOT/BOOTAA64.EFI") == fake_sd_boot);
    let arm_cfg = String::from_utf8(isoinfo_x(&arm, "/boot/grub/grub.cfg")).unwrap();
    assert!(arm_cfg.contains("console=ttyAMA0"), "{arm_cfg}");
    std::fs::remove_file(&arm).unwrap();

    // --- Boots: SeaBIOS (GRUB) and OVMF (systemd-boot → UKI), one ISO -----------------------
    let drive = format!("file={},format=raw,media=cdrom", iso.display());
    let out = tokio::task::block_in_place(|| boot_seabios(&drive, &work_dir, "bios", DONE));
    let bios = booted_cmdline("SeaBIOS hybrid ISO", &out);
    // GRUB's first entry; GRUB puts `BOOT_IMAGE=<path>` first.
    assert_eq!(bios, format!("BOOT_IMAGE=/boot/vmlinuz {iso_cmdline}"));
    // The same file as a hard disk (a USB stick): the MBR's GRUB code → the core image.
    let disk = format!("file={},format=raw,if=ide", iso.display());
    let out = tokio::task::block_in_place(|| boot_seabios(&disk, &work_dir, "bios-disk", DONE));
    let bios_disk = booted_cmdline("SeaBIOS hybrid ISO as a disk", &out);
    assert_eq!(bios_disk, format!("BOOT_IMAGE=/boot/vmlinuz {iso_cmdline}"));
    let out = tokio::task::block_in_place(|| boot_ovmf(&drive, &work_dir, "uefi", DONE));
    let uefi = booted_cmdline("OVMF hybrid ISO", &out);
    // systemd < 257 ignores `.profile` and boots the last `.cmdline` (tests/disk_image.rs).
    assert!(uefi == iso_cmdline || uefi == uki_cmdlines[1], "{uefi}");
    assert!(uefi.contains("talos.halt_if_installed=1"), "{uefi}");

    // --- A UEFI-only ISO from the writer (MBR, EFI entry only), booted in OVMF --------------
    let uefi_iso = work_dir.join("uefi-only.iso");
    let spec = IsoSpec {
        volume_id: "TALOS_V1_11_6".into(),
        volume_set_id: "Talos-v1.11.6".into(),
        timestamp: 1_559_424_892,
        files: Vec::new(),
        bios: None,
        efi: Some(EfiBoot::AppendedPartition),
        appended: Some(Appended {
            image: efi.clone(),
            table: PartitionTable::Mbr,
        }),
        seed: b"uefi-only".to_vec(),
    };
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&uefi_iso)
        .unwrap();
    iso9660::write_iso(&spec, &file).unwrap();
    let u_report = xorriso_report(&uefi_iso);
    assert!(
        u_report.contains("El Torito boot img :   1  UEFI"),
        "{u_report}"
    );
    assert!(!u_report.contains("BIOS"), "{u_report}");
    assert!(u_report.contains("0xef"), "{u_report}");
    let drive = format!("file={},format=raw,media=cdrom", uefi_iso.display());
    let out = tokio::task::block_in_place(|| boot_ovmf(&drive, &work_dir, "uefi-only", DONE));
    let only = booted_cmdline("OVMF UEFI-only ISO", &out);
    assert!(only.contains("talos.halt_if_installed=1"), "{only}");
    std::fs::remove_file(&uefi_iso).unwrap();
    std::fs::remove_file(&iso).unwrap();

    // --- The Talos 1.8 GRUB ISO -------------------------------------------------------------
    let grub_iso = work_dir.join("metal-amd64-1.8.iso");
    download(
        &server,
        &format!("/image/{id}/v1.8.4/metal-amd64.iso"),
        &grub_iso,
    )
    .await;
    let d = text(Command::new("isoinfo").arg("-d").arg("-i").arg(&grub_iso));
    assert!(d.contains("Volume id: TALOS_V1_8_4\n"), "{d}");
    let g_report = xorriso_report(&grub_iso);
    for want in [
        "El Torito boot img :   1  BIOS  y   none  0x0000  0x00      4",
        "El Torito boot img :   2  UEFI  y   none",
        "El Torito img path :   2  /efi.img",
    ] {
        assert!(g_report.contains(want), "{want:?} missing:\n{g_report}");
    }
    let g_listing = text(
        Command::new("isoinfo")
            .arg("-R")
            .arg("-f")
            .arg("-i")
            .arg(&grub_iso),
    );
    assert!(g_listing.contains("/boot/grub/x86_64-efi/linux.mod"));
    let g_efi = work_dir.join("grub-efi.img");
    std::fs::write(&g_efi, isoinfo_x(&grub_iso, "/efi.img")).unwrap();
    assert!(mcopy(&g_efi, "/EFI/BOOT/BOOTX64.EFI").starts_with(b"MZ"));
    let g_cfg = String::from_utf8(isoinfo_x(&grub_iso, "/boot/grub/grub.cfg")).unwrap();
    let g_line = g_cfg
        .lines()
        .find(|l| l.starts_with("\tlinux /boot/vmlinuz "))
        .unwrap();
    let g_cmdline = g_line["\tlinux /boot/vmlinuz ".len()..].to_string();
    let drive = format!("file={},format=raw,media=cdrom", grub_iso.display());
    let out = tokio::task::block_in_place(|| boot_seabios(&drive, &work_dir, "grub-bios", DONE));
    let g_booted = booted_cmdline("SeaBIOS GRUB ISO", &out);
    assert_eq!(g_booted, format!("BOOT_IMAGE=/boot/vmlinuz {g_cmdline}"));
    assert!(g_booted.contains("talos.halt_if_installed=1"), "{g_booted}");
    // UEFI: OVMF → /efi.img → GRUB's x86_64-efi core → the same grub.cfg.
    let out = tokio::task::block_in_place(|| boot_ovmf(&drive, &work_dir, "grub-uefi", DONE));
    let g_uefi = booted_cmdline("OVMF GRUB ISO", &out);
    assert_eq!(g_uefi, format!("BOOT_IMAGE=/boot/vmlinuz {g_cmdline}"));
    eprintln!(
        "all ISO checks and boots in {:?}; peak RSS {} MiB",
        started.elapsed(),
        peak_rss_kib() / 1024
    );
}
