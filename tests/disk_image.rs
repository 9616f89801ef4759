//! sd-boot raw disk images (`/image/<schematic>/<version>/<platform>-<arch>.raw`) over HTTP on
//! the fixture release imported offline, read back by independent tools: `sfdisk --json`
//! (LBAs, names, types), `sgdisk -v`, `fsck.vfat -n` on the EFI partition cut out of the
//! image, `mcopy` for its three files (systemd-boot byte for byte, the UKI's sections,
//! `loader.conf`), META zero or the ADV parsed back, the `.sha256`, sparse storage, and the
//! 501/400 answers for what is not built. The last test boots the image in QEMU + OVMF with
//! the bootable fixture (Debian kernel, Debian systemd-boot and stub, busybox `/init`).
//!
//! The tools (`fdisk`, `gdisk`, `dosfstools`, `mtools`, QEMU, OVMF) are installed by
//! `tests/run-all.sh`; missing, they skip the test, or fail it under
//! `BOOTFACTORY_REQUIRE_TOOLS=1`.

mod support;

use std::fs::File;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bootfactory::fixture::{BootOptions, FileSource, FixtureOptions, InitramfsFile};
use bootfactory::formats::adv;
use bootfactory::formats::pe::PeImage;
use sha2::{Digest as _, Sha256};
use support::TestServer;
use support::lab::{
    BUSYBOX, SD_BOOT, SD_STUB as STUB, boot_ovmf, boot_ovmf_args, boot_seabios, lab_kernel,
    ovmf_code, present,
};
use support::tools::have;

const MIB: u64 = 1024 * 1024;
const LOADER_CONF: &[u8] = b"# systemd-boot configuration\n\ntimeout 10\n";
const SD_BOOT_SCHEMATIC: &str = "customization:\n  bootloader: sd-boot\n  extraKernelArgs:\n    - bootfactory.test=1\n  meta:\n    - key: 12\n      value: hello-meta\n";

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::new()
}

async fn get(server: &TestServer, path: &str) -> (u16, String) {
    let resp = client()
        .get(format!("{}{path}", server.url))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Streams an asset into `out`, leaving all-zero chunks as holes; returns (size, sha256).
async fn download_sparse(server: &TestServer, path: &str, out: &Path) -> (u64, String) {
    let mut resp = client()
        .get(format!("{}{path}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{path}");
    let file = File::create(out).unwrap();
    let mut hasher = Sha256::new();
    let mut off = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        hasher.update(&chunk);
        if chunk.iter().any(|b| *b != 0) {
            file.write_all_at(&chunk, off).unwrap();
        }
        off += chunk.len() as u64;
    }
    file.set_len(off).unwrap();
    (off, hex::encode(hasher.finalize()))
}

/// Copies `len` bytes at `offset` of `disk` into a new (sparse) file.
fn cut(disk: &Path, offset: u64, len: u64, out: &Path) {
    let src = File::open(disk).unwrap();
    let dst = File::create(out).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(MIB) as usize;
        src.read_exact_at(&mut buf[..n], offset + done).unwrap();
        if buf[..n].iter().any(|b| *b != 0) {
            dst.write_all_at(&buf[..n], done).unwrap();
        }
        done += n as u64;
    }
    dst.set_len(len).unwrap();
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mcopy(efi: &Path, inside: &str) -> Vec<u8> {
    let out = Command::new("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(efi)
        .arg(format!("::{inside}"))
        .arg("-")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mcopy {inside}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// What the independent tools must see in an sd-boot image of Talos 1.11 (2246 MiB).
struct Expect<'a> {
    boot_name: &'a str,
    systemd_boot: &'a [u8],
    cmdline: &'a str,
    meta: Vec<(u32, Vec<u8>)>,
}

fn check_image(disk: &Path, work: &Path, e: &Expect<'_>) {
    assert_eq!(std::fs::metadata(disk).unwrap().len(), 2246 * MIB);
    // sfdisk: label, LBAs, names, types, first/last usable.
    let json: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(disk))).unwrap();
    let table = &json["partitiontable"];
    assert_eq!(table["label"], "gpt");
    assert_eq!(table["sectorsize"], 512);
    assert_eq!(table["firstlba"], 2048);
    assert_eq!(table["lastlba"], 2246 * 2048 - 34);
    let parts = table["partitions"].as_array().unwrap();
    let seen: Vec<(u64, u64, &str, &str)> = parts
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                p["name"].as_str().unwrap(),
                p["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                2048,
                4304895 - 2048 + 1,
                "EFI",
                "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
            ),
            (
                4304896,
                2048,
                "META",
                "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
            ),
        ]
    );
    // sgdisk: both headers, both arrays, CRCs, protective MBR.
    let verify = run(Command::new("sgdisk").arg("-v").arg(disk));
    assert!(verify.contains("No problems found"), "sgdisk -v: {verify}");
    // The EFI partition as a file system of its own.
    let efi = work.join("efi.img");
    cut(disk, 2048 * 512, (4304895 - 2048 + 1) * 512, &efi);
    let fsck = run(Command::new("fsck.vfat").arg("-n").arg("-V").arg(&efi));
    assert!(fsck.contains("files,"), "fsck.vfat: {fsck}");
    let label = run(Command::new("mlabel")
        .arg("-s")
        .arg("-i")
        .arg(&efi)
        .arg("::"));
    assert!(label.contains("Volume label is EFI"), "{label}");
    let listing = run(Command::new("mdir")
        .arg("-i")
        .arg(&efi)
        .arg("-/")
        .arg("::/"));
    for name in [e.boot_name, "Talos-v1.11.6.efi", "loader.conf"] {
        assert!(listing.contains(name), "{name} missing: {listing}");
    }
    assert!(mcopy(&efi, &format!("/EFI/boot/{}", e.boot_name)) == e.systemd_boot);
    assert_eq!(mcopy(&efi, "/loader/loader.conf"), LOADER_CONF);
    let uki = mcopy(&efi, "/EFI/Linux/Talos-v1.11.6.efi");
    let pe = PeImage::parse(&uki).unwrap();
    let cmdlines: Vec<String> = pe
        .sections()
        .iter()
        .filter(|s| s.name() == b".cmdline")
        .map(|s| String::from_utf8_lossy(pe.section_data(s)).into_owned())
        .collect();
    assert_eq!(cmdlines.len(), 2, "main and reset-maintenance");
    assert_eq!(cmdlines[0], e.cmdline);
    assert_eq!(
        cmdlines[1],
        format!(
            "{} talos.experimental.wipe=system:EPHEMERAL,STATE",
            e.cmdline
        )
    );
    assert!(pe.sections().iter().any(|s| s.name() == b".profile"));
    assert!(pe.sections().iter().any(|s| s.name() == b".linux"));
    assert!(pe.sections().iter().any(|s| s.name() == b".initrd"));
    // META.
    let meta = work.join("meta.img");
    cut(disk, 4304896 * 512, MIB, &meta);
    let bytes = std::fs::read(&meta).unwrap();
    if e.meta.is_empty() {
        assert!(bytes.iter().all(|b| *b == 0), "META must be zero");
    } else {
        assert_eq!(adv::decode_partition(&bytes), e.meta);
        assert!(bytes[2 * adv::BLOCK..].iter().all(|b| *b == 0));
    }
}

/// `(first LBA, last LBA, name)` of each partition, from `sfdisk --json`.
fn partitions(disk: &Path) -> Vec<(u64, u64, String)> {
    let json: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(disk))).unwrap();
    json["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let start = p["start"].as_u64().unwrap();
            (
                start,
                start + p["size"].as_u64().unwrap() - 1,
                p["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn tools() -> bool {
    ["sfdisk", "sgdisk", "fsck.vfat", "mdir", "mcopy"]
        .iter()
        .all(|t| have(t))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_boot_raw_images_read_back_by_independent_tools() {
    if !tools() {
        return;
    }
    let sd_boot_bytes: Vec<u8> = b"MZ fixture systemd-boot "
        .iter()
        .copied()
        .cycle()
        .take(70_000)
        .collect();
    let options = FixtureOptions {
        amd64: BootOptions {
            systemd_boot: Some(FileSource::Bytes(sd_boot_bytes.clone())),
            ..BootOptions::default()
        },
        arm64: BootOptions {
            systemd_boot: Some(FileSource::Bytes(sd_boot_bytes.clone())),
            ..BootOptions::default()
        },
        ..FixtureOptions::default()
    };
    let data = tempfile::tempdir().unwrap();
    let (_layout, _release) = support::import_fixture(data.path(), &options).await;
    let server = TestServer::start_in(data, &[("offline", "true")]).await;
    let empty = support::post_schematic(&server.url, "customization: {}").await;
    let sd = support::post_schematic(&server.url, SD_BOOT_SCHEMATIC).await;
    let work = tempfile::tempdir().unwrap();

    // arm64 on 1.11: sd-boot by default; META zero.
    let disk = work.path().join("arm64.raw");
    let started = Instant::now();
    let path = format!("/image/{empty}/v1.11.6/metal-arm64.raw");
    let (size, sha) = download_sparse(&server, &path, &disk).await;
    eprintln!(
        "metal-arm64.raw: {size} bytes, built and fetched in {:?}",
        started.elapsed()
    );
    let (status, sum) = get(&server, &format!("{path}.sha256")).await;
    assert_eq!(status, 200);
    assert!(sum.starts_with(&sha), "{sum} vs {sha}");
    let (_, cmdline) = get(
        &server,
        &format!("/image/{empty}/v1.11.6/cmdline-metal-arm64"),
    )
    .await;
    check_image(
        &disk,
        work.path(),
        &Expect {
            boot_name: "BOOTAA64.efi",
            systemd_boot: &sd_boot_bytes,
            cmdline: &cmdline,
            meta: vec![],
        },
    );

    // Bounded memory: the peak RSS of this whole process (server, builds, client) stays far
    // below the image's size (a 2246 MiB buffer anywhere would break this).
    let hwm = peak_rss_kib();
    eprintln!("peak RSS after the first image: {} MiB", hwm / 1024);
    assert!(hwm < 1024 * 1024, "peak RSS {hwm} KiB");

    // Stored sparse: the blob's allocated size is a small part of its length.
    let mut blobs = Vec::new();
    find_files(server.data.path(), &mut blobs);
    let blob = blobs
        .iter()
        .find(|(_, len, _)| *len == 2246 * MIB)
        .expect("the stored image");
    eprintln!(
        "stored image: apparent {} MiB, allocated {} MiB",
        blob.1 / MIB,
        blob.2 / MIB
    );
    assert!(blob.2 < 256 * MIB, "not sparse: {} bytes allocated", blob.2);

    // A second request is the cached asset, byte for byte.
    let again = work.path().join("again.raw");
    let (_, sha2) = download_sparse(&server, &path, &again).await;
    assert_eq!(sha, sha2);
    std::fs::remove_file(&again).unwrap();
    std::fs::remove_file(&disk).unwrap();

    // amd64 with `bootloader: sd-boot`: extra kernel args in the cmdline, META as an ADV.
    let disk = work.path().join("amd64.raw");
    download_sparse(
        &server,
        &format!("/image/{sd}/v1.11.6/metal-amd64.raw"),
        &disk,
    )
    .await;
    let (_, cmdline) = get(&server, &format!("/image/{sd}/v1.11.6/cmdline-metal-amd64")).await;
    // The cmdline asset carries META as talos.environment; the image carries it in META.
    let image_cmdline: Vec<&str> = cmdline
        .split(' ')
        .filter(|a| !a.starts_with("talos.environment="))
        .collect();
    let image_cmdline = image_cmdline.join(" ");
    assert!(image_cmdline.contains("bootfactory.test=1"));
    check_image(
        &disk,
        work.path(),
        &Expect {
            boot_name: "BOOTX64.efi",
            systemd_boot: &sd_boot_bytes,
            cmdline: &image_cmdline,
            meta: vec![(12, b"hello-meta".to_vec())],
        },
    );
    std::fs::remove_file(&disk).unwrap();

    // Talos 1.8 with `bootloader: sd-boot`: the 1.8/1.9 layout (1101 MiB EFI in 1246 MiB).
    let disk = work.path().join("v18.raw");
    download_sparse(
        &server,
        &format!("/image/{sd}/v1.8.4/metal-arm64.raw"),
        &disk,
    )
    .await;
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 1246 * MIB);
    assert_eq!(
        partitions(&disk),
        vec![
            (2048, 2256895, "EFI".to_string()),
            (2256896, 2258943, "META".to_string())
        ]
    );
    std::fs::remove_file(&disk).unwrap();

    // An absurd sector size is the schematic's fault, and so are GRUB images of 4096-byte
    // sectors (their 100 MiB EFI partition cannot be a FAT32).
    let absurd = support::post_schematic(
        &server.url,
        "customization:\n  bootloader: sd-boot\n  diskImage:\n    sectorSize: 123456789\n",
    )
    .await;
    let (status, body) = get(&server, &format!("/image/{absurd}/v1.11.6/metal-arm64.raw")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("sector size 123456789"), "{body}");
    let big = support::post_schematic(
        &server.url,
        "customization:\n  bootloader: grub\n  diskImage:\n    sectorSize: 4096\n",
    )
    .await;
    let (status, body) = get(&server, &format!("/image/{big}/v1.11.6/metal-arm64.raw")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("4096-byte sectors"), "{body}");
    // META values beyond an ADV block's capacity.
    let huge = format!(
        "customization:\n  meta:\n    - key: 12\n      value: {}\n",
        "a".repeat(adv::CAPACITY)
    );
    let huge = support::post_schematic(&server.url, &huge).await;
    let (status, body) = get(&server, &format!("/image/{huge}/v1.11.6/metal-arm64.raw")).await;
    assert_eq!(status, 400, "{body}");
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

/// `(path, length, allocated bytes)` of every file under `dir`.
fn find_files(dir: &Path, out: &mut Vec<(PathBuf, u64, u64)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let md = entry.metadata().unwrap();
        if md.is_dir() {
            find_files(&entry.path(), out);
        } else if md.is_file() {
            out.push((entry.path(), md.len(), md.blocks() * 512));
        }
    }
}

// --- Boot in QEMU + OVMF -------------------------------------------------------------------

const MARKER: &str = "BOOTFACTORY-DISK-MARKER";
const DONE: &str = "BOOTFACTORY-DISK-DONE";
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
exec >/dev/ttyS0 2>&1
echo "BOOTFACTORY-DISK-MARKER"
echo "CMDLINE: $(/bin/busybox cat /proc/cmdline)"
echo "BOOTFACTORY-DISK-DONE"
/bin/busybox sync
/bin/busybox poweroff -f
"#;

/// The bootable fixture (v1.11.6: the lab kernel, busybox `/init`, Debian's systemd-boot and
/// stub), or `None` when QEMU or a part is missing.
fn bootable_fixture() -> Option<FixtureOptions> {
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
    Some(FixtureOptions {
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
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sd_boot_raw_image_boots_in_ovmf() {
    let Some(options) = bootable_fixture() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let (_layout, _release) = support::import_fixture(data.path(), &options).await;
    let server = TestServer::start_in(data, &[("offline", "true")]).await;
    let id = support::post_schematic(&server.url, SD_BOOT_SCHEMATIC).await;
    let work = tempfile::tempdir().unwrap();
    let work_dir = match std::env::var_os("BOOTFACTORY_DISK_DEBUG_DIR") {
        Some(d) => PathBuf::from(d),
        None => work.path().to_path_buf(),
    };
    let disk = work_dir.join("disk.raw");
    let started = Instant::now();
    download_sparse(
        &server,
        &format!("/image/{id}/v1.11.6/metal-amd64.raw"),
        &disk,
    )
    .await;
    eprintln!(
        "metal-amd64.raw (real kernel): built and fetched in {:?}",
        started.elapsed()
    );

    let drive = format!("file={},format=raw,if=virtio", disk.display());
    let out = tokio::task::block_in_place(|| boot_ovmf(&drive, &work_dir, "disk", DONE));
    eprintln!("booted in {:?}", started.elapsed());
    let mut blobs = Vec::new();
    find_files(server.data.path(), &mut blobs);
    if let Some((_, len, allocated)) = blobs.iter().find(|(_, len, _)| *len == 2246 * MIB) {
        eprintln!(
            "stored image (real kernel): apparent {} MiB, allocated {} MiB",
            len / MIB,
            allocated / MIB
        );
    }
    let tail: String = out.lines().rev().take(40).collect::<Vec<_>>().join("\n");
    assert!(
        out.contains(MARKER),
        "the image did not reach /init:\n{tail}"
    );
    let cmdline = out
        .lines()
        .find_map(|l| l.find("CMDLINE: ").map(|i| l[i + 9..].trim().to_string()))
        .unwrap_or_default();
    eprintln!("/proc/cmdline = {cmdline}");
    // The image's `main` command line: the `image` kind's (extra kernel args, META not as
    // `talos.environment`). systemd before 257 predates UKI profiles: its systemd-boot and stub
    // ignore `.profile` and keep the last `.cmdline`, the `reset-maintenance` profile's (main +
    // the wipe argument); from 257 `main` is the default (`docs/boot-lab.md`, "Installer UKI
    // boot"). The test expects what the installed systemd does.
    let (_, asset) = get(&server, &format!("/image/{id}/v1.11.6/cmdline-metal-amd64")).await;
    let main: Vec<&str> = asset
        .split(' ')
        .filter(|a| !a.starts_with("talos.environment="))
        .collect();
    let main = main.join(" ");
    assert!(main.starts_with("talos.platform=metal "), "{main}");
    assert!(main.contains("bootfactory.test=1"), "{main}");
    let reset = format!("{main} talos.experimental.wipe=system:EPHEMERAL,STATE");
    let major = systemd_major(&std::fs::read(STUB).unwrap())
        .min(systemd_major(&std::fs::read(SD_BOOT).unwrap()));
    let want = if major < 257 { &reset } else { &main };
    assert_eq!(&cmdline, want, "systemd {major}");
}

/// An sd-boot image of 4096-byte sectors (`diskImage.sectorSize: 4096`, Talos 1.11): read back
/// by `sfdisk --sector-size 4096` (LBAs / 8 of the 512-byte layout, both GPT copies verified),
/// `fsck.vfat` and mtools on its EFI partition (a FAT32 of 4096-byte sectors) and META's ADV
/// at the same byte offset as ever; then booted in OVMF as a 4Kn virtio disk up to `/init`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4096_byte_sector_sd_boot_image_reads_back_and_boots_in_ovmf() {
    if !tools() {
        return;
    }
    let Some(options) = bootable_fixture() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let (_layout, _release) = support::import_fixture(data.path(), &options).await;
    let server = TestServer::start_in(data, &[("offline", "true")]).await;
    let schematic = format!("{SD_BOOT_SCHEMATIC}  diskImage:\n    sectorSize: 4096\n");
    let id = support::post_schematic(&server.url, &schematic).await;
    let work = tempfile::tempdir().unwrap();
    let work_dir = match std::env::var_os("BOOTFACTORY_DISK_DEBUG_DIR") {
        Some(d) => PathBuf::from(d),
        None => work.path().to_path_buf(),
    };
    let disk = work_dir.join("disk4k.raw");
    let started = Instant::now();
    download_sparse(
        &server,
        &format!("/image/{id}/v1.11.6/metal-amd64.raw"),
        &disk,
    )
    .await;
    eprintln!(
        "metal-amd64.raw (4096): built and fetched in {:?}",
        started.elapsed()
    );
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 2246 * MIB);
    // 2246 MiB = 574976 sectors of 4 KiB. util-linux 2.38's sfdisk has no sector size
    // option; fdisk's `-b` reads a file as a disk of that logical sector size (and warns
    // when a header or its copy is bad).
    let x = run(Command::new("fdisk")
        .env("LC_ALL", "C")
        .args(["-b", "4096", "-x"])
        .arg(&disk));
    for want in [
        "574976 sectors",
        "Sector size (logical/physical): 4096 bytes",
        "Disklabel type: gpt",
        "First usable LBA: 256",
        "Last usable LBA: 574970",
        "Alternative LBA: 574975",
        "Partition entries starting LBA: 2",
        "Partition entries ending LBA: 5",
    ] {
        assert!(
            x.contains(want),
            "{want} missing from fdisk -b 4096 -x:\n{x}"
        );
    }
    let lower = x.to_lowercase();
    assert!(
        !lower.contains("corrupt") && !lower.contains("mismatch") && !lower.contains("invalid"),
        "{x}"
    );
    let name = disk.display().to_string();
    let rows: Vec<Vec<&str>> = x
        .lines()
        .filter(|l| l.starts_with(&name))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let seen: Vec<(&str, &str, &str, &str, &str)> = rows
        .iter()
        .map(|r| (r[1], r[2], r[3], r[4], r.get(6).copied().unwrap_or("")))
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "256",
                "538111",
                "537856",
                "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
                "EFI"
            ),
            (
                "538112",
                "538367",
                "256",
                "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                "META"
            ),
        ],
        "{x}"
    );
    // Read as 512-byte sectors there is no GPT header at LBA 1: a 4Kn-only table.
    let as512 = Command::new("sfdisk")
        .arg("--json")
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&as512.stdout).contains("\"EFI\""),
        "a 512-byte reader found the 4096-byte table"
    );
    let efi = work.path().join("efi4k.img");
    cut(&disk, 256 * 4096, 2101 * MIB, &efi);
    let fsck = run(Command::new("fsck.vfat").arg("-n").arg("-V").arg(&efi));
    assert!(fsck.contains("files,"), "fsck.vfat: {fsck}");
    let mut bpb = [0u8; 512];
    File::open(&efi)
        .unwrap()
        .read_exact_at(&mut bpb, 0)
        .unwrap();
    assert_eq!(u16::from_le_bytes([bpb[11], bpb[12]]), 4096);
    assert_eq!(mcopy(&efi, "/loader/loader.conf"), LOADER_CONF);
    let uki = mcopy(&efi, "/EFI/Linux/Talos-v1.11.6.efi");
    assert!(PeImage::parse(&uki).is_ok());
    std::fs::remove_file(&efi).unwrap();
    let meta = work.path().join("meta4k.img");
    cut(&disk, 538112 * 4096, MIB, &meta);
    assert_eq!(
        adv::decode_partition(&std::fs::read(&meta).unwrap()),
        vec![(12, b"hello-meta".to_vec())]
    );

    let disk_args = [
        "-drive".to_string(),
        format!("file={},if=none,id=d0,format=raw", disk.display()),
        "-device".to_string(),
        "virtio-blk-pci,drive=d0,logical_block_size=4096,physical_block_size=4096".to_string(),
    ];
    let out = tokio::task::block_in_place(|| boot_ovmf_args(&disk_args, &work_dir, "disk4k", DONE));
    eprintln!("booted in {:?}", started.elapsed());
    let tail: String = out.lines().rev().take(40).collect::<Vec<_>>().join("\n");
    assert!(
        out.contains(MARKER),
        "the 4Kn image did not reach /init:\n{tail}"
    );
    let cmdline = booted_cmdline(&out, "the 4Kn sd-boot image in OVMF");
    assert!(cmdline.starts_with("talos.platform=metal "), "{cmdline}");
    assert!(cmdline.contains("bootfactory.test=1"), "{cmdline}");
}

/// The major version in a systemd EFI binary's `#### LoaderInfo: systemd-<x> <version> ####`.
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

// --- GRUB and dual-boot images -------------------------------------------------------------

const GRUB_I386_PC: &str = "/usr/lib/grub/i386-pc";
const GRUB_X86_64_EFI: &str = "/usr/lib/grub/x86_64-efi";
const DUAL_SCHEMATIC: &str = "customization:\n  extraKernelArgs:\n    - bootfactory.test=1\n  meta:\n    - key: 12\n      value: hello-meta\n";

/// What the independent tools must see in a GRUB or dual-boot image.
struct GrubExpect<'a> {
    size_mib: u64,
    /// `(first, last, name)`: EFI, BIOS, BOOT, META.
    layout: [(u64, u64, &'a str); 4],
    meta: Vec<(u32, Vec<u8>)>,
    /// `EFI/boot/BOOTX64.efi` (dual-boot, systemd-boot) or `EFI/BOOT/BOOTX64.EFI` (GRUB).
    efi_boot_file: &'a str,
}

fn check_grub_image(disk: &Path, work: &Path, e: &GrubExpect<'_>) {
    assert_eq!(std::fs::metadata(disk).unwrap().len(), e.size_mib * MIB);
    let want: Vec<(u64, u64, String)> = e
        .layout
        .iter()
        .map(|(a, b, n)| (*a, *b, n.to_string()))
        .collect();
    assert_eq!(partitions(disk), want);
    let verify = run(Command::new("sgdisk").arg("-v").arg(disk));
    assert!(verify.contains("No problems found"), "sgdisk -v: {verify}");
    let bios_info = run(Command::new("sgdisk").arg("-i").arg("2").arg(disk));
    assert!(
        bios_info.contains("21686148-6449-6E6F-744E-656564454649")
            && bios_info.contains("Attribute flags: 0000000000000004"),
        "{bios_info}"
    );
    let (efi, bios, boot, meta) = (e.layout[0], e.layout[1], e.layout[2], e.layout[3]);
    // The MBR: GRUB's boot.img pointing at the BIOS partition, the protective entry kept.
    let f = File::open(disk).unwrap();
    let mut mbr = [0u8; 512];
    f.read_exact_at(&mut mbr, 0).unwrap();
    let boot_img = std::fs::read(Path::new(GRUB_I386_PC).join("boot.img")).unwrap();
    assert_eq!(mbr[..3], boot_img[..3]);
    assert_eq!(mbr[0x68..0x1b8], boot_img[0x68..0x1b8], "boot.img's code");
    assert_eq!(
        u64::from_le_bytes(mbr[0x5c..0x64].try_into().unwrap()),
        bios.0
    );
    assert_eq!(mbr[446 + 4], 0xee, "protective MBR entry");
    assert_eq!(mbr[510..], [0x55, 0xaa]);
    // core.img at the BIOS partition's start, its blocklist pointing at its next sector.
    let mut first = [0u8; 512];
    f.read_exact_at(&mut first, bios.0 * 512).unwrap();
    assert_eq!(
        u64::from_le_bytes(first[0x1f4..0x1fc].try_into().unwrap()),
        bios.0 + 1
    );
    assert_eq!(u16::from_le_bytes([first[0x1fe], first[0x1ff]]), 0x820);
    // BOOT: XFS, label BOOT, consistent, with the kernel, initramfs, grub.cfg and modules.
    let boot_fs = work.join("boot.xfs");
    cut(disk, boot.0 * 512, (boot.1 - boot.0 + 1) * 512, &boot_fs);
    let db = run(Command::new("xfs_db")
        .args([
            "-r",
            "-c",
            "label",
            "-c",
            "ls /A",
            "-c",
            "ls /grub",
            "-c",
            "ls /grub/i386-pc",
        ])
        .arg(&boot_fs));
    for want in [
        "label = \"BOOT\"",
        "vmlinuz",
        "initramfs.xz",
        "grub.cfg",
        "normal.mod",
        "xfs.mod",
        "core.img",
    ] {
        assert!(db.contains(want), "{want} missing on BOOT: {db}");
    }
    run(Command::new("xfs_repair").args(["-n", "-f"]).arg(&boot_fs));
    std::fs::remove_file(&boot_fs).unwrap();
    // EFI.
    let efi_fs = work.join("efi.img");
    cut(disk, efi.0 * 512, (efi.1 - efi.0 + 1) * 512, &efi_fs);
    let fsck = run(Command::new("fsck.vfat").arg("-n").arg(&efi_fs));
    assert!(fsck.contains("files,"), "fsck.vfat: {fsck}");
    assert!(
        mcopy(&efi_fs, e.efi_boot_file).starts_with(b"MZ"),
        "{} is a PE image",
        e.efi_boot_file
    );
    std::fs::remove_file(&efi_fs).unwrap();
    // META.
    let mut m = vec![0u8; MIB as usize];
    f.read_exact_at(&mut m, meta.0 * 512).unwrap();
    assert_eq!(meta.1 - meta.0 + 1, 2048);
    assert_eq!(adv::decode_partition(&m), e.meta);
}

/// The cmdline of `(schematic, version)` as disk images carry it (META not as
/// `talos.environment`).
async fn image_cmdline(server: &TestServer, id: &str, version: &str) -> String {
    let (_, asset) = get(
        server,
        &format!("/image/{id}/{version}/cmdline-metal-amd64"),
    )
    .await;
    let main: Vec<&str> = asset
        .split(' ')
        .filter(|a| !a.starts_with("talos.environment="))
        .collect();
    main.join(" ")
}

fn booted_cmdline(out: &str, what: &str) -> String {
    let tail: String = out.lines().rev().take(40).collect::<Vec<_>>().join("\n");
    assert!(out.contains(MARKER), "{what} did not reach /init:\n{tail}");
    out.lines()
        .find_map(|l| l.find("CMDLINE: ").map(|i| l[i + 9..].trim().to_string()))
        .unwrap_or_default()
}

/// The default `metal-amd64.raw` of Talos 1.11 (dual-boot) and of Talos 1.8 (GRUB), built with
/// the real tools, read back by independent ones, then booted: the dual-boot image in SeaBIOS
/// (boot.img → core.img → `BOOT`'s grub.cfg → kernel + initramfs) and in OVMF (systemd-boot →
/// UKI), the GRUB image in SeaBIOS and in OVMF (GRUB's `BOOTX64.EFI`). One image each, shared
/// by its two boots; the boots run one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grub_and_dual_boot_raw_images_boot_in_seabios_and_ovmf() {
    if !tools()
        || !have("qemu-system-x86_64")
        || !have("mkfs.xfs")
        || !have("xfs_db")
        || !have("xfs_repair")
        || !have("grub-mkimage")
        || !present(Path::new(GRUB_I386_PC), "grub-pc-bin")
        || !present(Path::new(GRUB_X86_64_EFI), "grub-efi-amd64-bin")
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
        versions: vec!["v1.8.4".into(), "v1.11.6".into()],
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
    let (_layout, _release) = support::import_fixture(data.path(), &options).await;
    let server = TestServer::start_in(data, &[("offline", "true")]).await;
    let id = support::post_schematic(&server.url, DUAL_SCHEMATIC).await;
    let work = tempfile::tempdir().unwrap();
    let work_dir = match std::env::var_os("BOOTFACTORY_DISK_DEBUG_DIR") {
        Some(d) => PathBuf::from(d),
        None => work.path().to_path_buf(),
    };

    // Talos 1.11: dual-boot, 4247 MiB.
    let disk = work_dir.join("dual.raw");
    let started = Instant::now();
    let path = format!("/image/{id}/v1.11.6/metal-amd64.raw");
    let (_, sha) = download_sparse(&server, &path, &disk).await;
    eprintln!(
        "dual-boot metal-amd64.raw: built and fetched in {:?}",
        started.elapsed()
    );
    eprintln!("peak RSS: {} MiB", peak_rss_kib() / 1024);
    let mut blobs = Vec::new();
    find_files(server.data.path(), &mut blobs);
    let blob = blobs
        .iter()
        .find(|(_, len, _)| *len == 4247 * MIB)
        .expect("the stored dual-boot image");
    eprintln!(
        "stored dual-boot image: apparent {} MiB, allocated {} MiB",
        blob.1 / MIB,
        blob.2 / MIB
    );
    assert!(blob.2 < 512 * MIB, "not sparse: {} bytes allocated", blob.2);
    check_grub_image(
        &disk,
        &work_dir,
        &GrubExpect {
            size_mib: 4247,
            layout: [
                (2048, 4304895, "EFI"),
                (4304896, 4306943, "BIOS"),
                (4306944, 8402943, "BOOT"),
                (8402944, 8404991, "META"),
            ],
            meta: vec![(12, b"hello-meta".to_vec()), (0x11, b"dual-boot".to_vec())],
            efi_boot_file: "/EFI/boot/BOOTX64.efi",
        },
    );
    // Cached: the same bytes again.
    let again = work_dir.join("again.raw");
    let (_, sha2) = download_sparse(&server, &path, &again).await;
    assert_eq!(sha, sha2);
    std::fs::remove_file(&again).unwrap();

    let main = image_cmdline(&server, &id, "v1.11.6").await;
    assert!(main.starts_with("talos.platform=metal "), "{main}");
    assert!(main.contains("bootfactory.test=1"), "{main}");
    let drive = format!("file={},format=raw,if=virtio", disk.display());
    let out = tokio::task::block_in_place(|| boot_seabios(&drive, &work_dir, "dual-bios", DONE));
    eprintln!(
        "dual-boot image booted in SeaBIOS after {:?}",
        started.elapsed()
    );
    let cmdline = booted_cmdline(&out, "the dual-boot image in SeaBIOS (GRUB)");
    // GRUB's `linux` puts BOOT_IMAGE first; the rest is grub.cfg's default entry.
    assert_eq!(cmdline, format!("BOOT_IMAGE=/A/vmlinuz {main}"));
    let out = tokio::task::block_in_place(|| boot_ovmf(&drive, &work_dir, "dual-uefi", DONE));
    eprintln!(
        "dual-boot image booted in OVMF after {:?}",
        started.elapsed()
    );
    let cmdline = booted_cmdline(&out, "the dual-boot image in OVMF (systemd-boot)");
    // systemd < 257 keeps the last `.cmdline` (the reset profile's), see the sd-boot test.
    let major = systemd_major(&std::fs::read(STUB).unwrap())
        .min(systemd_major(&std::fs::read(SD_BOOT).unwrap()));
    let reset = format!("{main} talos.experimental.wipe=system:EPHEMERAL,STATE");
    assert_eq!(&cmdline, if major < 257 { &reset } else { &main });
    std::fs::remove_file(&disk).unwrap();

    // Talos 1.8: GRUB, 1246 MiB; META without 0x11.
    let disk = work_dir.join("grub.raw");
    let started = Instant::now();
    download_sparse(
        &server,
        &format!("/image/{id}/v1.8.4/metal-amd64.raw"),
        &disk,
    )
    .await;
    eprintln!(
        "GRUB metal-amd64.raw (1.8): built and fetched in {:?}",
        started.elapsed()
    );
    check_grub_image(
        &disk,
        &work_dir,
        &GrubExpect {
            size_mib: 1246,
            layout: [
                (2048, 206847, "EFI"),
                (206848, 208895, "BIOS"),
                (208896, 2256895, "BOOT"),
                (2256896, 2258943, "META"),
            ],
            meta: vec![(12, b"hello-meta".to_vec())],
            efi_boot_file: "/EFI/BOOT/BOOTX64.EFI",
        },
    );
    let main = image_cmdline(&server, &id, "v1.8.4").await;
    let drive = format!("file={},format=raw,if=virtio", disk.display());
    let out = tokio::task::block_in_place(|| boot_seabios(&drive, &work_dir, "grub-bios", DONE));
    let cmdline = booted_cmdline(&out, "the GRUB image in SeaBIOS");
    assert_eq!(cmdline, format!("BOOT_IMAGE=/A/vmlinuz {main}"));
    let out = tokio::task::block_in_place(|| boot_ovmf(&drive, &work_dir, "grub-uefi", DONE));
    let cmdline = booted_cmdline(&out, "the GRUB image in OVMF (GRUB x86_64-efi)");
    assert_eq!(cmdline, format!("BOOT_IMAGE=/A/vmlinuz {main}"));
    eprintln!("GRUB image booted twice after {:?}", started.elapsed());
    std::fs::remove_file(&disk).unwrap();

    // An explicit `bootloader: grub` on 1.11: the 1.11 GRUB layout (100 MiB EFI, 2000 MiB BOOT).
    let grub_id =
        support::post_schematic(&server.url, "customization:\n  bootloader: grub\n").await;
    let disk = work_dir.join("grub111.raw");
    download_sparse(
        &server,
        &format!("/image/{grub_id}/v1.11.6/metal-amd64.raw"),
        &disk,
    )
    .await;
    check_grub_image(
        &disk,
        &work_dir,
        &GrubExpect {
            size_mib: 2246,
            layout: [
                (2048, 206847, "EFI"),
                (206848, 208895, "BIOS"),
                (208896, 4304895, "BOOT"),
                (4304896, 4306943, "META"),
            ],
            meta: vec![],
            efi_boot_file: "/EFI/BOOT/BOOTX64.EFI",
        },
    );
    std::fs::remove_file(&disk).unwrap();

    // GRUB for arm64 needs grub-efi-arm64-bin: without it, a 503 naming the package, before
    // any work.
    if !Path::new("/usr/lib/grub/arm64-efi/moddep.lst").exists() {
        let (status, body) = get(&server, &format!("/image/{id}/v1.8.4/metal-arm64.raw")).await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("grub-efi-arm64-bin") && body.contains("apt-get install"),
            "{body}"
        );
    }
}
