//! The factory over HTTP against the fixture Talos release imported offline: catalogs, kernel,
//! cmdline, initramfs with extensions, /pxe scripts, error codes, one build per asset, metrics.

mod support;

use std::sync::Arc;

use bootfactory::factory::initramfs::parse_initramfs;
use bootfactory::fixture::{FixtureOptions, FixtureRelease};
use support::TestServer;

const EMPTY_ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::new()
}

/// A data directory holding the fixture release, and the release description.
async fn data_with_fixture() -> (tempfile::TempDir, FixtureRelease) {
    let data = tempfile::tempdir().unwrap();
    // The layout directory is no longer needed once imported.
    let (_layout, release) = support::import_fixture(data.path(), &FixtureOptions::default()).await;
    (data, release)
}

async fn server() -> (TestServer, FixtureRelease) {
    let (data, release) = data_with_fixture().await;
    let server = TestServer::start_in(
        data,
        &[
            ("offline", "true"),
            ("http.externalURL", "http://factory.test:8080"),
        ],
    )
    .await;
    (server, release)
}

async fn post_schematic(server: &TestServer, body: &str) -> String {
    support::post_schematic(&server.url, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogs_kernel_cmdline_and_pxe() {
    let (server, release) = server().await;
    let id = post_schematic(&server, "customization: {}").await;
    assert_eq!(id, EMPTY_ID);

    let versions = client()
        .get(format!("{}/versions", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        versions.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(versions.text().await.unwrap(), "[\"v1.8.4\",\"v1.11.6\"]\n");

    let exts: serde_json::Value = client()
        .get(format!("{}/version/1.11.6/extensions/official", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let v = release.version("v1.11.6").unwrap();
    let gvisor = exts
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "siderolabs/gvisor")
        .expect("gvisor listed");
    assert_eq!(gvisor["digest"], v.extensions["gvisor"].digest.to_string());
    assert!(
        gvisor["ref"]
            .as_str()
            .unwrap()
            .starts_with("ghcr.io/siderolabs/gvisor:")
    );
    let overlays: serde_json::Value = client()
        .get(format!("{}/version/v1.11.6/overlays/official", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(overlays[0]["name"], "rpi_generic");
    assert_eq!(overlays[0]["image"], "siderolabs/sbc-raspberrypi");

    // Kernel: the imager's vmlinuz, streamed with the upstream headers.
    let url = format!("{}/image/{id}/v1.11.6/kernel-amd64", server.url);
    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        head.headers()["content-disposition"],
        "attachment; filename=\"kernel-amd64\""
    );
    let len: u64 = head.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let etag = head.headers()["etag"].to_str().unwrap().to_string();
    let kernel = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(kernel.len() as u64, len);
    assert_eq!(&kernel[..2], b"MZ");
    let ranged = client()
        .get(&url)
        .header("range", "bytes=0-1")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), b"MZ");
    let not_modified = client()
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);

    // Cmdline and the PXE script, byte for byte.
    let cmdline = client()
        .get(format!(
            "{}/image/{id}/v1.11.6/cmdline-metal-amd64",
            server.url
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let expected = "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1";
    assert_eq!(cmdline, expected);
    for path in ["metal-amd64", "metal-x86_64"] {
        let script = client()
            .get(format!("{}/pxe/{id}/v1.11.6/{path}", server.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            script,
            format!(
                "#!ipxe\n\nimgfree\nkernel http://factory.test:8080/image/{id}/v1.11.6/kernel-amd64 {expected}\ninitrd http://factory.test:8080/image/{id}/v1.11.6/initramfs-amd64.xz\nboot\n"
            )
        );
    }
    let old = client()
        .get(format!(
            "{}/image/{id}/1.8.4/cmdline-metal-amd64",
            server.url
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(old.contains("ima_template=ima-ng"), "{old}");

    let pubkey = client()
        .get(format!("{}/oci/cosign/signing-key.pub", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(pubkey.starts_with("-----BEGIN PUBLIC KEY-----"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_use_upstream_status_codes() {
    let (server, _) = server().await;
    let id = post_schematic(
        &server,
        "customization: {systemExtensions: {officialExtensions: [siderolabs/nope]}}",
    )
    .await;
    post_schematic(&server, "customization: {}").await;
    let cases: Vec<(String, u16, String)> = vec![
        (
            "/image/aaaaaaaaaaaa/v1.11.6/kernel-amd64".to_string(),
            404,
            "schematic ID \"aaaaaaaaaaaa\" not found\n".into(),
        ),
        (
            format!("/image/{EMPTY_ID}/v1.11.6/metal-amd64.ssd"),
            400,
            "error parsing profile from path: invalid profile path: \"metal-amd64.ssd\"\n".into(),
        ),
        (
            format!("/image/{EMPTY_ID}/v1.11.6/kernel-foo"),
            400,
            "error parsing profile from path: invalid architecture: \"foo\"\n".into(),
        ),
        (
            format!("/image/{EMPTY_ID}/v1.99.0/kernel-amd64"),
            404,
            "version 1.99.0 is not available\n".into(),
        ),
        (
            format!("/image/{id}/v1.11.6/initramfs-amd64.xz"),
            400,
            "official extension \"siderolabs/nope\" is not available for Talos version v1.11.6"
                .into(),
        ),
        (
            format!("/image/{EMPTY_ID}/v1.11.6/metal-amd64.img"),
            400,
            "invalid profile path".into(),
        ),
        (
            format!("/image/{EMPTY_ID}/v1.11.6/cmdline-metal-amd64-secureboot"),
            400,
            "secure boot is disabled".into(),
        ),
        (
            "/version/1.99.0/extensions/official".to_string(),
            404,
            "version 1.99.0 is not available".into(),
        ),
        (
            format!("/pxe/{EMPTY_ID}/v1.11.6/metal-sparc"),
            400,
            "invalid architecture".into(),
        ),
    ];
    for (path, status, body) in cases {
        let resp = client()
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(&body), "{path}: {text:?} lacks {body:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initramfs_with_extensions_is_built_once_and_parses() {
    let (server, _) = server().await;
    let id = post_schematic(
        &server,
        "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/gvisor, siderolabs/amd-ucode, siderolabs/i915-ucode]\n",
    )
    .await;
    let url = format!("{}/image/{id}/v1.11.6/initramfs-amd64.xz", server.url);
    // Several clients at once share one build.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                client()
                    .get(url)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        bodies.push(t.await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    let metrics = client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let built = metrics
        .lines()
        .find(|l| l.starts_with("image_factory_assets_built_total") && l.contains("initramfs"))
        .expect("built counter");
    assert!(built.ends_with(" 1"), "{built}");

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("initramfs.xz");
    std::fs::write(&file, &bodies[0]).unwrap();
    let parsed = parse_initramfs(&file).expect("parse");
    let names: Vec<String> = parsed.layers.iter().map(|l| l.name.clone()).collect();
    let early = &parsed.archives[0].entries;
    assert!(
        early
            .iter()
            .any(|n| n == "kernel/x86/microcode/AuthenticAMD.bin"),
        "{early:?}"
    );
    let last = &parsed.archives.last().unwrap().entries;
    assert!(last.iter().any(|n| n == "extensions.yaml"), "{last:?}");
    assert_eq!(names.last().map(String::as_str), Some("schematic"));
    assert_eq!(parsed.layers.last().unwrap().version, id);
    assert!(names.iter().any(|n| n == "gvisor"), "{names:?}");

    let _ = Arc::new(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_modules_firmware_and_cache_reuse() {
    if !support::tools::have("depmod") {
        return;
    }
    let (server, _) = server().await;
    let id = post_schematic(
        &server,
        "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/gasket, siderolabs/i915, siderolabs/intel-ucode]\n",
    )
    .await;
    let resp = client()
        .get(format!(
            "{}/image/{id}/v1.11.6/initramfs-amd64.xz",
            server.url
        ))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("i.xz");
    std::fs::write(&file, &body).unwrap();
    let parsed = parse_initramfs(&file).unwrap();
    let names: Vec<&str> = parsed.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "gasket-driver",
            "i915",
            "intel-ucode",
            "schematic",
            "modules.dep"
        ]
    );
    assert!(
        parsed.archives[0]
            .entries
            .iter()
            .any(|n| n == "kernel/x86/microcode/GenuineIntel.bin")
    );
    // Firmware travels in the cpio, next to the squashfs images.
    let last = &parsed.archives.last().unwrap().entries;
    assert!(
        last.iter().any(|n| n.starts_with("usr/lib/firmware/i915/")),
        "{last:?}"
    );

    // Another schematic with the same extensions reuses their squashfs images.
    let id2 = post_schematic(
        &server,
        "customization:\n  extraKernelArgs: [x]\n  systemExtensions:\n    officialExtensions: [siderolabs/gasket, siderolabs/i915, siderolabs/intel-ucode]\n",
    )
    .await;
    let again = client()
        .get(format!(
            "{}/image/{id2}/v1.11.6/initramfs-amd64.xz",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let file2 = tmp.path().join("j.xz");
    std::fs::write(&file2, again.bytes().await.unwrap()).unwrap();
    let parsed2 = parse_initramfs(&file2).unwrap();
    assert_eq!(parsed2.layers.last().unwrap().name, "modules.dep");
    assert_eq!(parsed2.layers[3].version, id2);
}
