//! Disk images and ISOs under faults, on the real binary with the fixture release imported
//! offline: a full disk during a GRUB image's `mkfs.xfs`, an sd-boot image, a conversion and
//! an ISO answers 507 naming only the data directory, leaves no scratch file, and the same
//! requests succeed once space is freed; a server killed (SIGKILL) in the middle of a disk
//! image build leaves nothing half-visible and the next request serves a whole image.
//!
//! GRUB images and ISOs need `mkfs.xfs` and GRUB's i386-pc/x86_64-efi directories (installed
//! by `tests/run-all.sh`); the full-disk test needs root (a tmpfs).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use bootfactory::fixture::FixtureOptions;
use support::fault::{Daemon, Tmpfs, can_mount, check_store, entries};
use support::post_schematic;

const MIB: u64 = 1024 * 1024;

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// Whether the host has what GRUB images and ISOs need; without it the test is skipped, or
/// fails under `BOOTFACTORY_REQUIRE_TOOLS=1`.
fn grub_tools() -> bool {
    use bootfactory::factory::tools::Tool;
    let ok = [
        Tool::MkfsXfs,
        Tool::GrubMkimage,
        Tool::GrubI386Pc,
        Tool::GrubX86_64Efi,
    ]
    .iter()
    .all(|t| t.locate().is_some());
    if !ok {
        assert!(
            std::env::var("BOOTFACTORY_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "xfsprogs and GRUB are required (BOOTFACTORY_REQUIRE_TOOLS=1)"
        );
        eprintln!("skipping: xfsprogs or GRUB not installed");
    }
    ok
}

async fn get(url: &str) -> (u16, Vec<u8>) {
    let resp = client().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

/// A whole raw GPT disk image: the primary header at LBA 1 and the backup header in the last
/// sector (written last), each naming the other.
fn assert_whole_gpt(image: &[u8], what: &str) {
    assert!(image.len() > 4 * 512, "{what}: {} bytes", image.len());
    assert_eq!(&image[510..512], b"\x55\xaa", "{what}: protective MBR");
    assert_eq!(&image[512..520], b"EFI PART", "{what}: primary GPT header");
    let last = image.len() - 512;
    assert_eq!(
        &image[last..last + 8],
        b"EFI PART",
        "{what}: backup GPT header"
    );
    let backup_lba = u64::from_le_bytes(image[512 + 32..512 + 40].try_into().unwrap());
    assert_eq!(backup_lba, (image.len() / 512 - 1) as u64, "{what}");
}

/// A whole ISO: the primary volume descriptor and its volume size covering the file.
fn assert_whole_iso(iso: &[u8], what: &str) {
    assert!(iso.len() > 0x8800, "{what}: {} bytes", iso.len());
    assert_eq!(
        &iso[0x8001..0x8006],
        b"CD001",
        "{what}: primary volume descriptor"
    );
    let blocks = u32::from_le_bytes(iso[0x8050..0x8054].try_into().unwrap()) as usize;
    assert!(
        blocks * 2048 <= iso.len(),
        "{what}: volume of {blocks} blocks"
    );
}

fn no_scratch(data: &Path) {
    assert!(entries(&data.join("tmp")).is_empty(), "temp files left");
    assert!(
        entries(&data.join("cache/builds")).is_empty(),
        "build dirs left: {:?}",
        entries(&data.join("cache/builds"))
    );
    assert!(
        entries(&data.join("cache/tmp")).is_empty(),
        "extraction dirs left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_during_disk_image_and_iso_builds_answers_507_and_recovers() {
    if !can_mount() || !grub_tools() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // GRUB's BOOT is made in a sparse scratch file the size of the partition: mkfs.xfs writes
    // its log (tens of MiB) there before the data is copied into the image.
    let fs = Tmpfs::mount(320 * MIB);
    let data = fs.path().join("data");
    let (_layout, _release) = support::import_fixture(&data, &FixtureOptions::default()).await;
    let mut server = Daemon::start(&data, work.path(), &["--offline"]);
    let grub = post_schematic(
        &server.url,
        "customization:\n  bootloader: grub\n  extraKernelArgs: [fault.disk=grub]\n",
    )
    .await;
    let sd = post_schematic(
        &server.url,
        "customization:\n  bootloader: sd-boot\n  extraKernelArgs: [fault.disk=sd]\n",
    )
    .await;
    let base = |id: &str| format!("{}/image/{id}/v1.11.6", server.url);
    // Warm-up while there is space: the initramfs assets (so the GRUB image and the ISO fail
    // in their own writers, not in the initramfs build) and the sd-boot raw image (so its
    // conversions fail in the converter).
    for url in [
        format!("{}/initramfs-amd64.xz", base(&grub)),
        format!("{}/metal-amd64.raw", base(&sd)),
        format!("{}/image/{grub}/v1.8.4/initramfs-amd64.xz", server.url),
    ] {
        let (status, _) = get(&url).await;
        assert_eq!(status, 200, "{url}\n{}", server.log_text());
    }
    let urls = [
        format!("{}/metal-amd64.raw", base(&grub)),
        format!("{}/metal-amd64.iso", base(&grub)),
        // A GRUB ISO (before 1.10, no UKI): fails in grub-mkimage or the ISO writer.
        format!("{}/image/{grub}/v1.8.4/metal-amd64.iso", server.url),
        format!("{}/metal-amd64.qcow2", base(&sd)),
        format!("{}/metal-amd64.raw.zst", base(&sd)),
        format!("{}/metal-amd64.vhd", base(&sd)),
        // Cold: its UKI, then the image.
        format!("{}/metal-arm64.raw", base(&sd)),
    ];

    let filler = fs.path().join("filler");
    fs.fill(&filler, 0);
    let expected = format!("no space left on {}", data.display());
    for url in &urls {
        let (status, body) = get(url).await;
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, 507, "{url}: {body}\n{}", server.log_text());
        assert!(body.contains(&expected), "{url}: {body}");
        // No path under the data directory (a build directory, a scratch file) is named.
        assert!(!body.contains("cache/builds"), "{url}: {body}");
    }
    no_scratch(&data);

    // A little space left: the image's own first writes fit, mkfs.xfs's log does not (its
    // ENOSPC is a 507 too, not a failed program).
    std::fs::remove_file(&filler).unwrap();
    fs.fill(&filler, 8 * MIB);
    let (status, body) = get(&urls[0]).await;
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 507, "{body}\n{}", server.log_text());
    assert!(body.contains(&expected), "{body}");
    no_scratch(&data);

    // Space freed: the same requests succeed without a restart, with whole images.
    std::fs::remove_file(&filler).unwrap();
    for url in &urls {
        let (status, body) = get(url).await;
        assert_eq!(status, 200, "{url}\n{}", server.log_text());
        if url.ends_with(".raw") {
            assert_whole_gpt(&body, url);
        } else if url.ends_with(".iso") {
            assert_whole_iso(&body, url);
        } else if url.ends_with(".qcow2") {
            assert_eq!(&body[..4], b"QFI\xfb", "{url}");
        } else if url.ends_with(".zst") {
            assert_eq!(&body[..4], b"\x28\xb5\x2f\xfd", "{url}");
        } else {
            assert_eq!(&body[body.len() - 512..][..8], b"conectix", "{url}");
        }
    }
    no_scratch(&data);
    server.stop();
    check_store(&data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_disk_image_build_then_rebuild() {
    if !grub_tools() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let (_layout, _release) = support::import_fixture(&data, &FixtureOptions::default()).await;
    let builds = data.join("cache/builds");
    // Each attempt a new schematic whose initramfs is built first (so the only build that can
    // be running afterwards is the disk image's); killed as soon as its work directory
    // exists. An attempt whose build finished before one was seen is repeated.
    let mut killed = None;
    for attempt in 0..8 {
        let mut server = Daemon::start(&data, work.path(), &["--offline"]);
        let id = post_schematic(
            &server.url,
            &format!(
                "customization:\n  bootloader: grub\n  extraKernelArgs: [fault.kill={attempt}]\n"
            ),
        )
        .await;
        let base = format!("{}/image/{id}/v1.11.6", server.url);
        let (status, _) = get(&format!("{base}/initramfs-amd64.xz")).await;
        assert_eq!(status, 200);
        let url = format!("{base}/metal-amd64.raw");
        let request = tokio::spawn(async move { client().get(url).send().await });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = false;
        while !request.is_finished() && Instant::now() < deadline {
            if !entries(&builds).is_empty() {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let finished = request.is_finished();
        server.kill9();
        let answered = request.await.unwrap().ok().map(|r| r.status().as_u16());
        eprintln!("attempt {attempt}: work dir seen {seen}, answered {answered:?}");
        if seen && !finished && answered.is_none() {
            killed = Some(id);
            break;
        }
    }
    let id = killed.expect("never killed the server during a disk image build");

    // The store is consistent and names no asset of the killed build.
    let before = check_store(&data).await.refs;
    let mut server = Daemon::start(&data, work.path(), &["--offline"]);
    // The start removed the killed build's work directory.
    assert!(entries(&builds).is_empty(), "{:?}", entries(&builds));
    let (status, image) = get(&format!(
        "{}/image/{id}/v1.11.6/metal-amd64.raw",
        server.url
    ))
    .await;
    assert_eq!(status, 200, "{}", server.log_text());
    assert_whole_gpt(&image, "rebuilt image");
    // The BOOT partition (XFS) is there: the image's second partition on 1.11 GRUB images
    // starts after BIOS; found by its magic on a MiB boundary.
    let has_xfs = image
        .chunks(MIB as usize)
        .any(|c| c.len() >= 4 && &c[..4] == b"XFSB");
    assert!(has_xfs, "no XFS superblock in the rebuilt image");
    server.stop();
    no_scratch(&data);
    // (Refs the killed server had not flushed may be gone, and are rebuilt; none of the
    // killed image build was there.)
    let image_ref = |refs: &[(String, _)]| refs.iter().any(|(k, _)| k.contains("/Image/"));
    assert!(!image_ref(&before), "{before:?}");
    assert!(image_ref(&check_store(&data).await.refs));
}

/// The `.cmdline` sections of `usr/install/<arch>/vmlinuz.efi` in a docker-archive installer
/// tarball (its layers are gzip'd tarballs).
fn installer_uki_cmdlines(tarball: &[u8], arch: &str) -> Vec<String> {
    use std::io::Read as _;
    let want = format!("usr/install/{arch}/vmlinuz.efi");
    let mut archive = tar::Archive::new(tarball);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut blob = Vec::new();
        entry.read_to_end(&mut blob).unwrap();
        if !blob.starts_with(b"\x1f\x8b") {
            continue;
        }
        let mut layer = tar::Archive::new(flate2::read::GzDecoder::new(blob.as_slice()));
        for file in layer.entries().unwrap() {
            let mut file = file.unwrap();
            if file.path().unwrap().to_str() != Some(want.as_str()) {
                continue;
            }
            let mut uki = Vec::new();
            file.read_to_end(&mut uki).unwrap();
            let pe = bootfactory::formats::pe::PeImage::parse(&uki).unwrap();
            return pe
                .sections()
                .iter()
                .filter(|s| s.name() == b".cmdline")
                .map(|s| String::from_utf8(pe.section_data(s).to_vec()).unwrap())
                .collect();
        }
    }
    panic!("no {want} in the installer tarball");
}

/// META is for boot media only (the Image Factory's profile enhancement gives installers no
/// META; README "Installer images"): a schematic with META keys is not refused for an
/// installer (upstream builds it), and the installer's UKI carries no `INSTALLER_META_BASE64`
/// while the ISO/image command line does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installer_of_a_schematic_with_meta_carries_no_meta() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let (_layout, _release) = support::import_fixture(&data, &FixtureOptions::default()).await;
    let server = Daemon::start(&data, work.path(), &["--offline"]);
    let id = post_schematic(
        &server.url,
        "customization:\n  extraKernelArgs: [fault.meta=1]\n  meta:\n    - key: 10\n      value: '{\"externalIPs\":[\"1.2.3.4\"]}'\n",
    )
    .await;
    let base = format!("{}/image/{id}/v1.11.6", server.url);
    let (status, cmdline) = get(&format!("{base}/cmdline-metal-amd64")).await;
    assert_eq!(status, 200);
    let cmdline = String::from_utf8(cmdline).unwrap();
    assert!(
        cmdline.contains("talos.environment=INSTALLER_META_BASE64="),
        "{cmdline}"
    );
    let (status, tarball) = get(&format!("{base}/metal-installer-amd64.tar")).await;
    assert_eq!(status, 200, "{}", server.log_text());
    let cmdlines = installer_uki_cmdlines(&tarball, "amd64");
    assert!(!cmdlines.is_empty());
    for c in &cmdlines {
        assert!(
            c.contains("fault.meta=1"),
            "extraKernelArgs (Talos ≥ 1.10): {c}"
        );
        assert!(!c.contains("INSTALLER_META"), "{c}");
    }
}

/// A raw image and its converted forms asked for at once, cold: every answer is whole, the raw
/// image is built once (the conversions join its build), and each form once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_image_and_its_forms_at_once_build_the_raw_image_once() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let (_layout, _release) = support::import_fixture(&data, &FixtureOptions::default()).await;
    let server = Daemon::start(&data, work.path(), &["--offline"]);
    let id = post_schematic(
        &server.url,
        "customization:\n  bootloader: sd-boot\n  extraKernelArgs: [fault.concurrent=1]\n",
    )
    .await;
    let base = format!("{}/image/{id}/v1.11.6", server.url);
    let forms = [
        "metal-amd64.raw",
        "metal-amd64.qcow2",
        "metal-amd64.raw.zst",
        "metal-amd64.raw",
        "metal-amd64.qcow2",
        "metal-amd64.vhd",
    ];
    let requests: Vec<_> = forms
        .iter()
        .map(|f| {
            let url = format!("{base}/{f}");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let mut raw = None;
    for (form, r) in forms.iter().zip(requests) {
        let (status, body) = r.await.unwrap();
        assert_eq!(status, 200, "{form}\n{}", server.log_text());
        if form.ends_with(".raw") {
            assert_whole_gpt(&body, form);
            if let Some(first) = &raw {
                assert!(first == &body, "the two .raw answers differ");
            }
            raw = Some(body);
        }
    }
    let log = server.log_text();
    let built = |suffix: &str| {
        log.lines()
            .filter(|l| l.contains("asset built") && l.contains(&format!("/{suffix}/1246\"")))
            .count()
    };
    assert_eq!(built("raw"), 1, "{log}");
    assert_eq!(built("qcow2"), 1, "{log}");
    assert_eq!(built("raw.zst"), 1, "{log}");
    assert_eq!(built("vhd"), 1, "{log}");
}
