//! The UKI asset (`/image/<schematic>/<version>/<platform>-<arch>-uki.efi`) over HTTP on the
//! fixture release imported offline, read back by independent tools: GNU `objdump -h` lists the
//! sections (names, sizes, file offsets) and `objcopy --dump-section` extracts them. Checked:
//! the section order by version (`.profile` from 1.10), `.linux` and `.initrd` are the kernel and
//! initramfs assets byte for byte, `.cmdline` is the UKI's command line (no META; extra kernel
//! args only from 1.10), `.osrel`, `.uname` (none on arm64), checksums, HEAD, determinism across
//! fresh data directories (on Debian's real systemd-stub, with a splash), an unknown platform,
//! and a stub with a malformed section table.
//!
//! `objdump`/`objcopy` (binutils) and Debian's stub (`systemd-boot-efi`) are installed by
//! `tests/run-all.sh`; missing, they skip the test, or fail it under
//! `BOOTFACTORY_REQUIRE_TOOLS=1`.

mod support;

use std::path::Path;
use std::process::Command;

use bootfactory::fixture::{BootOptions, FileSource, FixtureOptions, FixtureRelease};
use bootfactory::formats::pe::PeImage;
use support::TestServer;
use support::tools::{have, have_file};

const EMPTY_ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
const DEBIAN_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// `factory::service::SOURCE_DATE_EPOCH`.
const SOURCE_DATE_EPOCH: u32 = 1_559_424_892;

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::new()
}

fn example_schematic() -> String {
    std::fs::read_to_string(support::repo_root().join("schematics/example.yaml")).unwrap()
}

fn debian_stub_present() -> bool {
    have_file(DEBIAN_STUB, "systemd-boot-efi")
}

async fn server(options: &FixtureOptions) -> (TestServer, FixtureRelease) {
    let data = tempfile::tempdir().unwrap();
    let (_layout, release) = support::import_fixture(data.path(), options).await;
    let server = TestServer::start_in(data, &[("offline", "true")]).await;
    (server, release)
}

async fn get(server: &TestServer, path: &str) -> (u16, Vec<u8>) {
    let resp = client()
        .get(format!("{}{path}", server.url))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

async fn get_ok(server: &TestServer, path: &str) -> Vec<u8> {
    let (status, body) = get(server, path).await;
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    body
}

/// A section as `objdump -h` sees it: name, size, file offset.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    name: String,
    size: u64,
    offset: u64,
}

/// `objdump -h` of `path`: the format line and the sections in table order.
fn objdump(path: &Path) -> (String, Vec<Seen>) {
    let out = Command::new("objdump")
        .arg("-h")
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "objdump -h: {text}");
    let format = text
        .lines()
        .find_map(|l| {
            l.split_once("file format ")
                .map(|(_, f)| f.trim().to_string())
        })
        .unwrap_or_default();
    let sections = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 7 && f[0].parse::<usize>().is_ok()).then(|| Seen {
                name: f[1].to_string(),
                size: u64::from_str_radix(f[2], 16).unwrap(),
                offset: u64::from_str_radix(f[5], 16).unwrap(),
            })
        })
        .collect();
    (format, sections)
}

/// `objcopy --dump-section <name>=<file>` of `path`.
fn objcopy_dump(path: &Path, name: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("section.bin");
    let status = Command::new("objcopy")
        .arg("--dump-section")
        .arg(format!("{name}={}", out.display()))
        .arg(path)
        .arg(dir.path().join("copy.efi"))
        .status()
        .unwrap();
    assert!(status.success(), "objcopy --dump-section {name}");
    std::fs::read(&out).unwrap()
}

fn os_release(tag: &str) -> String {
    format!(
        "NAME=\"Talos\"\nID=talos\nVERSION_ID={tag}\nPRETTY_NAME=\"Talos ({tag})\"\n\
         HOME_URL=\"https://www.talos.dev/\"\nBUG_REPORT_URL=\"https://github.com/siderolabs/talos/issues\"\n\
         VENDOR_NAME=\"Sidero Labs\"\nVENDOR_URL=\"https://www.siderolabs.com/\"\n"
    )
}

/// The command line a UKI of `id` at `version` must carry: the `cmdline-metal-amd64` asset
/// without META (`talos.environment=…`), and without the schematic's extra kernel args below
/// 1.10 (then it is the empty schematic's command line).
async fn expected_uki_cmdline(server: &TestServer, id: &str, version: &str) -> String {
    let at_least_1_10 = version != "v1.8.4";
    let source = if at_least_1_10 { id } else { EMPTY_ID };
    let asset = get_ok(
        server,
        &format!("/image/{source}/{version}/cmdline-metal-amd64"),
    )
    .await;
    let asset = String::from_utf8(asset).unwrap();
    asset
        .split(' ')
        .filter(|arg| !arg.starts_with("talos.environment="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Fetches the amd64 UKI of `id` at `version` and checks every section with binutils.
async fn check_amd64_uki(
    server: &TestServer,
    release: &FixtureRelease,
    id: &str,
    version: &str,
    splash: Option<&[u8]>,
) -> Vec<u8> {
    let base = format!("/image/{id}/{version}");
    let uki = get_ok(server, &format!("{base}/metal-amd64-uki.efi")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uki.efi");
    std::fs::write(&path, &uki).unwrap();

    let (format, seen) = objdump(&path);
    assert_eq!(format, "pei-x86-64");
    let stub = PeImage::parse(&uki).unwrap();
    assert_eq!(stub.timestamp(), SOURCE_DATE_EPOCH);
    let names: Vec<&str> = seen.iter().map(|s| s.name.as_str()).collect();
    let first_appended = names.iter().position(|n| *n == ".osrel").expect(".osrel");
    assert!(names[..first_appended].contains(&".sbat"), "{names:?}");
    let mut want = vec![".osrel", ".cmdline", ".uname"];
    if splash.is_some() {
        want.push(".splash");
    }
    want.extend([".linux", ".initrd"]);
    if version != "v1.8.4" {
        want.push(".profile");
    }
    assert_eq!(&names[first_appended..], &want[..], "{version}");

    // objdump's offsets and sizes, read from the file, agree with objcopy's extraction.
    for s in &seen[first_appended..] {
        let by_offset = &uki[s.offset as usize..(s.offset + s.size) as usize];
        assert_eq!(
            objcopy_dump(&path, &s.name),
            by_offset,
            "{version} {}",
            s.name
        );
    }
    let section = |name: &str| objcopy_dump(&path, name);
    assert_eq!(
        section(".linux"),
        get_ok(server, &format!("{base}/kernel-amd64")).await,
        "{version}: .linux is the kernel asset"
    );
    assert_eq!(
        section(".initrd"),
        get_ok(server, &format!("{base}/initramfs-amd64.xz")).await,
        "{version}: .initrd is the initramfs asset"
    );
    let cmdline = String::from_utf8(section(".cmdline")).unwrap();
    assert_eq!(
        cmdline,
        expected_uki_cmdline(server, id, version).await,
        "{version}"
    );
    assert!(!cmdline.contains("talos.environment"), "no META in a UKI");
    assert_eq!(
        String::from_utf8(section(".osrel")).unwrap(),
        os_release(version)
    );
    let kver = &release.version(version).unwrap().kernel_version;
    assert_eq!(String::from_utf8(section(".uname")).unwrap(), *kver);
    if version != "v1.8.4" {
        assert_eq!(section(".profile"), b"ID=main");
    }
    if let Some(splash) = splash {
        assert_eq!(section(".splash"), splash);
    }
    uki
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uki_sections_by_version_arch_and_checksums() {
    if !have("objdump") || !have("objcopy") {
        return;
    }
    let (server, release) = server(&FixtureOptions::default()).await;
    let id = support::post_schematic(&server.url, &example_schematic()).await;
    support::post_schematic(&server.url, "customization: {}").await;

    for version in ["v1.11.6", "v1.8.4"] {
        let uki = check_amd64_uki(&server, &release, &id, version, None).await;
        // The checksum files name the same bytes.
        let sha = get_ok(
            &server,
            &format!("/image/{id}/{version}/metal-amd64-uki.efi.sha256"),
        )
        .await;
        use sha2::Digest as _;
        assert_eq!(
            String::from_utf8(sha).unwrap(),
            format!(
                "{}  metal-amd64-uki.efi\n",
                hex::encode(sha2::Sha256::digest(&uki))
            )
        );
    }

    // Content type; the extra kernel args of the schematic are in the 1.11 UKI.
    let resp = client()
        .get(format!(
            "{}/image/{id}/v1.11.6/metal-amd64-uki.efi",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/efi");

    // HEAD of an asset never built builds it (arm64), and GET then serves those bytes.
    let head = client()
        .head(format!(
            "{}/image/{id}/v1.11.6/metal-arm64-uki.efi",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    let len: u64 = head.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let arm = get_ok(&server, &format!("/image/{id}/v1.11.6/metal-arm64-uki.efi")).await;
    assert_eq!(arm.len() as u64, len);
    // arm64: the kernel has no x86 setup header, so no `.uname`; the rest is there.
    let pe = PeImage::parse(&arm).unwrap();
    let names: Vec<String> = pe
        .sections()
        .iter()
        .map(|s| String::from_utf8_lossy(s.name()).into_owned())
        .collect();
    assert_eq!(
        &names[2..],
        [".osrel", ".cmdline", ".linux", ".initrd", ".profile"],
        "{names:?}"
    );
    let data = |name: &str| pe.section_data(pe.section(name).unwrap()).to_vec();
    assert_eq!(
        data(".linux"),
        get_ok(&server, &format!("/image/{id}/v1.11.6/kernel-arm64")).await
    );
    assert_eq!(
        data(".initrd"),
        get_ok(&server, &format!("/image/{id}/v1.11.6/initramfs-arm64.xz")).await
    );
    let arm_cmdline = String::from_utf8(data(".cmdline")).unwrap();
    assert!(
        arm_cmdline.starts_with("talos.platform=metal console=ttyS0,115200 "),
        "{arm_cmdline}"
    );

    // Another platform's UKI carries its platform; an unknown one is refused before any work.
    let aws = get_ok(&server, &format!("/image/{id}/v1.11.6/aws-amd64-uki.efi")).await;
    let aws = PeImage::parse(&aws).unwrap();
    let aws_cmdline = aws.section_data(aws.section(".cmdline").unwrap());
    assert!(
        aws_cmdline.starts_with(b"talos.platform=metal "),
        "extra args overwrite the platform"
    );
    let (status, body) = get(
        &server,
        &format!("/image/{id}/v1.11.6/nosuch-amd64-uki.efi"),
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        String::from_utf8_lossy(&body),
        "unknown platform: \"nosuch\"\n"
    );
}

/// Two servers on fresh data directories build byte-identical UKIs (on Debian's real
/// systemd-stub, which carries a COFF symbol table, and with an imager-provided splash).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uki_on_debians_stub_is_deterministic() {
    if !debian_stub_present() || !have("objdump") || !have("objcopy") {
        return;
    }
    let splash: Vec<u8> = b"BM"
        .iter()
        .copied()
        .chain((0..5000u32).map(|i| (i % 253) as u8))
        .collect();
    let options = FixtureOptions {
        versions: vec!["v1.11.6".into()],
        amd64: BootOptions {
            systemd_stub: Some(FileSource::Path(DEBIAN_STUB.into())),
            splash: Some(FileSource::Bytes(splash.clone())),
            ..BootOptions::default()
        },
        ..FixtureOptions::default()
    };
    let mut ukis = Vec::new();
    for _ in 0..2 {
        let (server, release) = server(&options).await;
        let id = support::post_schematic(&server.url, &example_schematic()).await;
        let started = std::time::Instant::now();
        let uki = check_amd64_uki(&server, &release, &id, "v1.11.6", Some(&splash)).await;
        eprintln!(
            "UKI of the example schematic: {} bytes, {:?} with checks",
            uki.len(),
            started.elapsed()
        );
        // The stub's own sections come first, as Debian built them.
        let stub_bytes = std::fs::read(DEBIAN_STUB).unwrap();
        let stub = PeImage::parse(&stub_bytes).unwrap();
        let pe = PeImage::parse(&uki).unwrap();
        for (ours, theirs) in pe.sections().iter().zip(stub.sections()) {
            assert_eq!(ours.name(), theirs.name());
            assert_eq!(pe.section_data(ours), stub.section_data(theirs));
        }
        ukis.push(uki);
        server.stop().await;
    }
    assert!(ukis[0] == ukis[1], "two builds differ");
}

/// A PE32+ whose only section's file data lies past the end of the file.
fn stub_with_a_malformed_section_table() -> Vec<u8> {
    let mut b = vec![0u8; 0x400];
    b[0..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    b[0x80..0x84].copy_from_slice(b"PE\0\0");
    let coff = 0x84;
    b[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
    b[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes());
    b[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
    b[coff + 18..coff + 20].copy_from_slice(&0x0022u16.to_le_bytes());
    let opt = coff + 20;
    b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
    b[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes());
    b[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes());
    b[opt + 56..opt + 60].copy_from_slice(&0x3000u32.to_le_bytes());
    b[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes());
    b[opt + 68..opt + 70].copy_from_slice(&10u16.to_le_bytes());
    b[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
    let sec = opt + 240;
    b[sec..sec + 5].copy_from_slice(b".text");
    b[sec + 8..sec + 12].copy_from_slice(&0x200u32.to_le_bytes());
    b[sec + 12..sec + 16].copy_from_slice(&0x1000u32.to_le_bytes());
    b[sec + 16..sec + 20].copy_from_slice(&0x200u32.to_le_bytes());
    // PointerToRawData far past the end of the 1 KiB file.
    b[sec + 20..sec + 24].copy_from_slice(&0x0010_0000u32.to_le_bytes());
    b[sec + 36..sec + 40].copy_from_slice(&0x6000_0020u32.to_le_bytes());
    b
}

/// A crafted imager whose `systemd-stub.efi` has a malformed section table: the UKI request
/// fails with a 500 (a broken release, not the client's fault; the cause goes to the log),
/// nothing panics, no UKI is stored, and the server keeps serving the other assets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_stub_is_an_error_not_a_panic() {
    let crafted = stub_with_a_malformed_section_table();
    let refused = PeImage::parse(&crafted).unwrap_err().to_string();
    assert!(refused.starts_with("malformed PE image: "), "{refused}");
    let options = FixtureOptions {
        versions: vec!["v1.11.6".into()],
        amd64: BootOptions {
            systemd_stub: Some(FileSource::Bytes(crafted)),
            ..BootOptions::default()
        },
        ..FixtureOptions::default()
    };
    let (server, _release) = server(&options).await;
    support::post_schematic(&server.url, "customization: {}").await;
    for _ in 0..2 {
        let (status, body) = get(
            &server,
            &format!("/image/{EMPTY_ID}/v1.11.6/metal-amd64-uki.efi"),
        )
        .await;
        assert_eq!(status, 500, "{}", String::from_utf8_lossy(&body));
        assert_eq!(String::from_utf8_lossy(&body), "internal server error\n");
    }
    // The initramfs it needed was built and is served; the kernel too; arm64's stub is fine.
    get_ok(
        &server,
        &format!("/image/{EMPTY_ID}/v1.11.6/initramfs-amd64.xz"),
    )
    .await;
    get_ok(&server, &format!("/image/{EMPTY_ID}/v1.11.6/kernel-amd64")).await;
    let arm = get_ok(
        &server,
        &format!("/image/{EMPTY_ID}/v1.11.6/metal-arm64-uki.efi"),
    )
    .await;
    PeImage::parse(&arm).unwrap();
}
