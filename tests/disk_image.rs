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
use support::lab::{BUSYBOX, SD_BOOT, SD_STUB as STUB, boot_ovmf, lab_kernel, ovmf_code, present};
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

    // What is not built yet says which part.
    for (path, want) in [
        (
            format!("/image/{empty}/v1.11.6/metal-amd64.raw"),
            "dual-boot",
        ),
        (format!("/image/{empty}/v1.8.4/metal-arm64.raw"), "GRUB"),
        (format!("/image/{sd}/v1.11.6/metal-amd64.qcow2"), ".qcow2"),
        (format!("/image/{sd}/v1.11.6/metal-amd64.raw.xz"), ".xz"),
    ] {
        let (status, body) = get(&server, &path).await;
        assert_eq!(status, 501, "{path}: {body}");
        assert!(body.contains(want), "{path}: {body}");
    }
    // An absurd sector size is the schematic's fault; 4096 is not built yet.
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
        "customization:\n  diskImage:\n    sectorSize: 4096\n",
    )
    .await;
    let (status, body) = get(&server, &format!("/image/{big}/v1.11.6/metal-arm64.raw")).await;
    assert_eq!(status, 501, "{body}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sd_boot_raw_image_boots_in_ovmf() {
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
