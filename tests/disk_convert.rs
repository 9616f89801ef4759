//! Converted and compressed disk images over HTTP (`.raw.zst`, `.raw.xz`, `.raw.gz`,
//! `.qcow2`, `.vhd`, `.raw.tar.gz`, `.qcow2.xz`, `.ova`), for metal and cloud platforms, on the fixture
//! release imported offline, each read back by its own upstream tool (`zstd -d`, `xz -d`,
//! `gzip -d`, `qemu-img compare/check/info`, GNU `tar`) and compared with the `.raw` image of
//! the same platform (or another form of it). Also: each raw image is built once for all its forms, the platform's disk
//! size and kernel arguments, `.sha256`/`.sha512`, and the 400s upstream answers.
//!
//! The sd-boot layout (`bootloader: sd-boot`) keeps this test free of GRUB and XFS; the forms
//! are the same for every layout. Tools come from `tests/run-all.sh` (`zstd xz-utils gzip
//! qemu-utils tar`); missing, the test is skipped, or fails under `BOOTFACTORY_REQUIRE_TOOLS=1`.

mod support;

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use bootfactory::fixture::{BootOptions, FileSource, FixtureOptions};
use sha2::{Digest as _, Sha256, Sha512};
use support::TestServer;
use support::tools::have;

const MIB: u64 = 1024 * 1024;
static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
const SCHEMATIC: &str =
    "customization:\n  bootloader: sd-boot\n  meta:\n    - key: 12\n      value: converted\n";

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

/// Streams an asset into `out` (all-zero chunks left as holes); returns its size.
async fn download(server: &TestServer, path: &str, out: &Path) -> u64 {
    let started = std::time::Instant::now();
    let mut resp = client()
        .get(format!("{}{path}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{path}");
    let file = File::create(out).unwrap();
    let mut off = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        // Slice comparison is a memcmp, fast in a debug build too.
        if chunk.chunks(ZEROS.len()).any(|c| c != &ZEROS[..c.len()]) {
            file.write_all_at(&chunk, off).unwrap();
        }
        off += chunk.len() as u64;
    }
    file.set_len(off).unwrap();
    eprintln!("{path}: {off} bytes in {:?}", started.elapsed());
    off
}

/// (sha256, sha512) of a small file.
fn digests(file: &Path) -> (String, String) {
    let bytes = std::fs::read(file).unwrap();
    (
        hex::encode(Sha256::digest(&bytes)),
        hex::encode(Sha512::digest(&bytes)),
    )
}

fn run(cmd: &mut Command) -> String {
    let started = std::time::Instant::now();
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{:?}: {:?}", cmd.get_program(), started.elapsed());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two raw (sparse) files hold the same bytes: `qemu-img compare` skips what both have as
/// holes, where `cmp` would read gigabytes of zeros.
fn same_bytes(a: &Path, b: &Path) {
    run(Command::new("qemu-img")
        .args(["compare", "-q", "-f", "raw", "-F", "raw"])
        .arg(a)
        .arg(b));
}

/// Decompresses `src` with `tool -dc` into the sparse file `out`.
fn decompress(tool: &str, src: &Path, out: &Path) {
    // `dd conv=sparse` keeps the decompressed zeros as holes.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{tool} -dc \"$0\" | dd of=\"$1\" bs=1M conv=sparse status=none"
        ))
        .arg(src)
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "{tool} -dc {}", src.display());
}

async fn builds(server: &TestServer) -> f64 {
    support::metric(
        &server.url,
        "image_factory_assets_build_latency_seconds_count",
    )
    .await
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converted_disk_images_read_back_by_upstream_tools() {
    if !["zstd", "xz", "gzip", "qemu-img", "tar", "dd", "grep"]
        .iter()
        .all(|t| have(t))
    {
        return;
    }
    let sd_boot: Vec<u8> = b"MZ fixture systemd-boot ".repeat(3000);
    let options = FixtureOptions {
        amd64: BootOptions {
            systemd_boot: Some(FileSource::Bytes(sd_boot.clone())),
            ..BootOptions::default()
        },
        ..FixtureOptions::default()
    };
    let data = tempfile::tempdir().unwrap();
    let (_layout, _release) = support::import_fixture(data.path(), &options).await;
    eprintln!("fixture imported");
    let server = TestServer::start_in(data, &[("offline", "true")]).await;
    let id = support::post_schematic(&server.url, SCHEMATIC).await;
    let work = tempfile::tempdir().unwrap();
    let w = |name: &str| work.path().join(name);
    let base = format!("/image/{id}/v1.11.6");

    // metal: the raw image (1246 + 2000 − 1000 MiB for 1.11 sd-boot), then its forms; the raw
    // image is not built again for them (one build per form).
    let raw = w("metal.raw");
    let size = download(&server, &format!("{base}/metal-amd64.raw"), &raw).await;
    assert_eq!(size, 2246 * MIB);
    let before = builds(&server).await;
    download(&server, &format!("{base}/metal-amd64.raw.zst"), &w("m.zst")).await;
    let (zst_sha256, zst_sha512) = digests(&w("m.zst"));
    assert_eq!(
        builds(&server).await,
        before + 1.0,
        "only the .zst is built"
    );
    run(Command::new("zstd").args(["-t", "-q"]).arg(w("m.zst")));
    decompress("zstd", &w("m.zst"), &w("m.zst.raw"));
    same_bytes(&raw, &w("m.zst.raw"));
    std::fs::remove_file(w("m.zst.raw")).unwrap();
    let (status, sum) = get(&server, &format!("{base}/metal-amd64.raw.zst.sha256")).await;
    assert_eq!(status, 200);
    assert!(sum.starts_with(&zst_sha256), "{sum}");
    let (_, sum) = get(&server, &format!("{base}/metal-amd64.raw.zst.sha512")).await;
    assert!(sum.starts_with(&zst_sha512), "{sum}");

    download(&server, &format!("{base}/metal-amd64.raw.xz"), &w("m.xz")).await;
    decompress("xz", &w("m.xz"), &w("m.xz.raw"));
    same_bytes(&raw, &w("m.xz.raw"));
    std::fs::remove_file(w("m.xz.raw")).unwrap();

    download(&server, &format!("{base}/metal-amd64.raw.gz"), &w("m.gz")).await;
    decompress("gzip", &w("m.gz"), &w("m.gz.raw"));
    same_bytes(&raw, &w("m.gz.raw"));
    std::fs::remove_file(w("m.gz.raw")).unwrap();

    download(&server, &format!("{base}/metal-amd64.qcow2"), &w("m.qcow2")).await;
    run(Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(w("m.qcow2")));
    let info = run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(w("m.qcow2")));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["cluster-size"], 8192);
    assert_eq!(info["virtual-size"], 2246 * MIB);
    run(Command::new("qemu-img")
        .args(["compare", "-q", "-f", "raw", "-F", "qcow2"])
        .arg(&raw)
        .arg(w("m.qcow2")));
    // .qcow2.xz: the same qcow2 bytes, compressed.
    download(
        &server,
        &format!("{base}/metal-amd64.qcow2.xz"),
        &w("m.qcow2.xz"),
    )
    .await;
    decompress("xz", &w("m.qcow2.xz"), &w("m2.qcow2"));
    same_bytes(&w("m.qcow2"), &w("m2.qcow2"));

    // .vhd: the raw bytes plus a footer, read by qemu-img.
    let size = download(&server, &format!("{base}/metal-amd64.vhd"), &w("m.vhd")).await;
    assert_eq!(size, 2246 * MIB + 512);
    let info = run(Command::new("qemu-img")
        .args(["info", "--output=json", "-f", "vpc"])
        .arg(w("m.vhd")));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["virtual-size"], 2246 * MIB);
    run(Command::new("qemu-img")
        .args(["compare", "-q", "-f", "raw", "-F", "vpc"])
        .arg(&raw)
        .arg(w("m.vhd")));
    std::fs::remove_file(w("m.vhd")).unwrap();

    // azure: a fixed VHD of 8192 + 1000 MiB (HEAD: 9 GiB of zeros need not cross the loopback),
    // kernel args for azure, checked in another form of the same image (upstream serves any
    // form for any platform): disk.raw of azure's .raw.tar.gz.
    let (_, cmdline) = get(&server, &format!("{base}/cmdline-azure-amd64")).await;
    assert!(cmdline.contains("talos.platform=azure"), "{cmdline}");
    assert!(cmdline.contains("rootdelay=300"), "{cmdline}");
    let head = client()
        .head(format!("{}{base}/azure-amd64.vhd", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        (9192 * MIB + 512).to_string()
    );
    download(
        &server,
        &format!("{base}/azure-amd64.raw.tar.gz"),
        &w("a.tar.gz"),
    )
    .await;
    let listing = run(Command::new("tar").arg("-tvzf").arg(w("a.tar.gz")));
    assert_eq!(listing.lines().count(), 1, "{listing}");
    assert!(listing.trim_end().ends_with(" disk.raw"), "{listing}");
    assert!(listing.contains(&(9192 * MIB).to_string()), "{listing}");
    let azure = w("azure");
    std::fs::create_dir(&azure).unwrap();
    run(Command::new("tar")
        .arg("-xSzf")
        .arg(w("a.tar.gz"))
        .arg("-C")
        .arg(&azure));
    let azure_raw = azure.join("disk.raw");
    // .ova (any platform; azure's so its disk.raw is the reference): disk.ovf, disk.mf,
    // disk.vmdk in that order, the manifest's digests, the VMDK read by qemu-img.
    download(&server, &format!("{base}/azure-amd64.ova"), &w("a.ova")).await;
    let listing = run(Command::new("tar").arg("-tf").arg(w("a.ova")));
    assert_eq!(listing, "disk.ovf\ndisk.mf\ndisk.vmdk\n");
    let ova = w("ova");
    std::fs::create_dir(&ova).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(w("a.ova"))
        .arg("-C")
        .arg(&ova));
    let manifest = std::fs::read_to_string(ova.join("disk.mf")).unwrap();
    for name in ["disk.ovf", "disk.vmdk"] {
        let (sha, _) = digests(&ova.join(name));
        assert!(
            manifest.contains(&format!("SHA256({name})= {sha}")),
            "{manifest}"
        );
    }
    let ovf = std::fs::read_to_string(ova.join("disk.ovf")).unwrap();
    assert!(
        ovf.contains(&format!("ovf:capacity=\"{}\"", 9192 * MIB)),
        "{ovf}"
    );
    // sd-boot disks boot from UEFI only.
    assert!(
        ovf.contains(r#"vmw:key="firmware" vmw:value="efi""#),
        "{ovf}"
    );
    run(Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(ova.join("disk.vmdk")));
    run(Command::new("qemu-img")
        .args(["compare", "-q", "-f", "raw", "-F", "vmdk"])
        .arg(&azure_raw)
        .arg(ova.join("disk.vmdk")));

    // The azure image's UKI carries azure's command line; metal's does not.
    assert!(contains(&azure_raw, "talos.platform=azure"));
    assert!(!contains(&azure_raw, "talos.platform=metal"));
    std::fs::remove_file(&azure_raw).unwrap();

    // gcp: the cloud size, disk.raw in the tar.
    download(
        &server,
        &format!("{base}/gcp-amd64.raw.tar.gz"),
        &w("g.tar.gz"),
    )
    .await;
    let listing = run(Command::new("tar").arg("-tvzf").arg(w("g.tar.gz")));
    assert!(listing.trim_end().ends_with(" disk.raw"), "{listing}");
    assert!(listing.contains(&(9192 * MIB).to_string()), "{listing}");

    // nocloud: the metal size, nocloud's kernel arguments in the image.
    let size = download(&server, &format!("{base}/nocloud-amd64.raw.xz"), &w("n.xz")).await;
    assert!(size < 64 * MIB, "{size}");
    decompress("xz", &w("n.xz"), &w("n.raw"));
    assert_eq!(std::fs::metadata(w("n.raw")).unwrap().len(), 2246 * MIB);
    assert!(contains(&w("n.raw"), "talos.platform=nocloud"));

    // Upstream's 400s: an unknown platform, an unknown disk suffix.
    let (status, body) = get(&server, &format!("{base}/nosuchcloud-amd64.raw.xz")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown platform"), "{body}");
    let (status, body) = get(&server, &format!("{base}/metal-amd64.img")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid profile path"), "{body}");
}

/// Whether the (sparse) file holds `needle`: GNU grep skips holes of binary files.
fn contains(file: &Path, needle: &str) -> bool {
    Command::new("grep")
        .args(["-q", "-a", "-F", needle])
        .arg(file)
        .status()
        .unwrap()
        .success()
}
