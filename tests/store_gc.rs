//! `bootfactory store gc|usage|verify` with a retention policy, on real `bootfactory`
//! processes and the fixture release in three Talos versions: the plan (dry run, then `--yes`)
//! removes the version that is neither among the newest nor assigned, the kept versions still
//! boot, and the same GC through the admin API while `serve` runs does not break a download in
//! progress.

mod support;

use support::output_text as text;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use bootfactory::fixture::{BootOptions, FileSource, FixtureOptions};
use sha2::Digest as _;
use support::fault::{Daemon, bin, mirror_list};
use support::import_fixture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAC: &str = "52:54:00:12:34:56";

fn store_cmd(data: &Path, args: &[&str]) -> Output {
    bin()
        .arg("store")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

/// The fixture in `versions`, with a random amd64 kernel of `kernel_bytes` (so the imager's
/// layers are big enough to still be streaming when GC runs).
fn options(versions: &[&str], kernel_bytes: usize) -> FixtureOptions {
    let kernel: Vec<u8> = (0..kernel_bytes).map(|_| rand::random::<u8>()).collect();
    FixtureOptions {
        versions: versions.iter().map(|v| v.to_string()).collect(),
        amd64: BootOptions {
            kernel: Some(FileSource::Bytes(kernel)),
            ..BootOptions::default()
        },
        kernel_version: Some("6.12.57-talos".into()),
        ..FixtureOptions::default()
    }
}

fn http() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::new()
}

fn token(data: &Path) -> String {
    std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_string()
}

async fn get_status(url: &str) -> (u16, Vec<u8>) {
    let resp = http().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

fn imager_tags(data: &Path) -> Vec<String> {
    mirror_list(data)
        .into_iter()
        .filter_map(|(r, _)| {
            r.strip_prefix("ghcr.io/siderolabs/imager:")
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_the_newest_and_the_assigned_versions_and_they_still_boot() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let versions = ["v1.8.4", "v1.10.3", "v1.11.6"];
    let (_layout, _release) = import_fixture(data.path(), &options(&versions, 256 << 10)).await;
    let mut daemon = Daemon::start(data.path(), logs.path(), &["--offline"]);
    let id = support::post_schematic(
        &daemon.url,
        "customization:\n  extraKernelArgs: [console=ttyS0]\n",
    )
    .await;
    // Assets of every version; the oldest one is assigned.
    for v in versions {
        for asset in ["kernel-amd64", "initramfs-amd64.xz"] {
            let (status, body) =
                get_status(&format!("{}/image/{id}/{v}/{asset}", daemon.url)).await;
            assert_eq!(
                status,
                200,
                "{v} {asset}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    let resp = http()
        .put(format!("{}/api/v1/machines/{MAC}", daemon.url))
        .bearer_auth(token(data.path()))
        .json(&serde_json::json!({"schematic": id, "version": "v1.8.4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    // While serve holds the data directory, the commands go through its admin API: over the
    // admin socket by default, over HTTP with --server.
    let server = ["--server", daemon.url.as_str()];
    let out = store_cmd(data.path(), &["usage"]);
    assert!(out.status.success(), "{}", text(&out));
    let usage = String::from_utf8_lossy(&out.stdout).to_string();
    for v in versions {
        assert!(usage.contains(v), "{usage}");
    }
    let out = store_cmd(
        data.path(),
        &[&["gc", "--keep-versions", "1", "--dry-run"][..], &server].concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout).to_string();
    let line = |v: &str| {
        plan.lines()
            .find(|l| l.starts_with(v))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        line("v1.11.6").contains("keep") && line("v1.11.6").contains("newest 1"),
        "{plan}"
    );
    assert!(
        line("v1.8.4").contains("keep") && line("v1.8.4").contains("assigned"),
        "{plan}"
    );
    assert!(line("v1.10.3").contains("remove"), "{plan}");
    assert!(plan.contains("nothing deleted (--dry-run)"), "{plan}");
    let out = store_cmd(
        data.path(),
        &[
            &["gc", "--keep-versions", "1", "--dry-run", "--json"][..],
            &server,
        ]
        .concat(),
    );
    let service_plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    daemon.stop();
    assert_eq!(imager_tags(data.path()), ["v1.10.3", "v1.11.6", "v1.8.4"]);

    // Directly: the same plan, nothing deleted without --yes, then the real run.
    let out = store_cmd(
        data.path(),
        &["gc", "--keep-versions", "1", "--dry-run", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let dry: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dry["versions"], service_plan["versions"]);
    assert_eq!(dry["refsDropped"], service_plan["refsDropped"]);
    assert!(dry["blobsRemoved"].as_u64().unwrap() > 0, "{dry}");
    // Each version's catalogs attribute its extension images to it.
    for v in dry["versions"].as_array().unwrap() {
        assert!(v["extensionBytes"].as_u64().unwrap() > 0, "{v}");
        assert!(v["releaseBytes"].as_u64().unwrap() > 256 << 10, "{v}");
        assert_eq!(v["assets"], 2, "{v}");
    }
    let out = store_cmd(data.path(), &["gc", "--keep-versions", "1"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("re-run with --yes"), "{}", text(&out));
    assert_eq!(
        imager_tags(data.path()).len(),
        3,
        "nothing deleted without --yes"
    );
    let out = store_cmd(
        data.path(),
        &["gc", "--keep-versions", "1", "--yes", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let real: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in [
        "versions",
        "blobsRemoved",
        "freedBytes",
        "refsDropped",
        "bytesAfter",
    ] {
        assert_eq!(
            real[k], dry[k],
            "{k}: the dry run said what the real run did"
        );
    }
    assert_eq!(real["dryRun"], false);
    let removed = real["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "v1.10.3")
        .unwrap();
    assert_eq!(removed["keep"], false);
    // Exactly what the version alone held went.
    assert_eq!(real["freedBytes"], removed["exclusiveBytes"], "{real}");

    assert_eq!(imager_tags(data.path()), ["v1.11.6", "v1.8.4"]);
    assert!(
        !mirror_list(data.path())
            .iter()
            .any(|(r, _)| r.ends_with(":v1.10.3")),
        "{:?}",
        mirror_list(data.path())
    );
    let out = store_cmd(data.path(), &["verify"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = store_cmd(data.path(), &["gc", "--keep-versions", "1", "--yes"]);
    assert!(text(&out).contains("removed 0 blobs"), "{}", text(&out));

    // The kept versions still boot; the removed one is gone.
    let daemon = Daemon::start(data.path(), logs.path(), &["--offline"]);
    for v in ["v1.8.4", "v1.11.6"] {
        let (status, body) = get_status(&format!("{}/pxe/{id}/{v}/metal-amd64", daemon.url)).await;
        assert_eq!(status, 200, "{v}: {}", String::from_utf8_lossy(&body));
        let (status, body) =
            get_status(&format!("{}/image/{id}/{v}/kernel-amd64", daemon.url)).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(body.len(), 256 << 10);
    }
    let (status, body) =
        get_status(&format!("{}/image/{id}/v1.10.3/kernel-amd64", daemon.url)).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
}

/// The biggest layer of `ghcr.io/siderolabs/imager:<version>`'s amd64 image: (digest, size).
async fn biggest_imager_layer(url: &str, version: &str) -> (String, u64) {
    let get = |path: String| async move {
        http()
            .get(format!("{url}{path}"))
            .header(
                "accept",
                "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
            )
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let index = get(format!("/v2/siderolabs/imager/manifests/{version}")).await;
    let amd64 = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = get(format!("/v2/siderolabs/imager/manifests/{amd64}")).await;
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .max_by_key(|(_, s)| *s)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_through_the_admin_api_while_serving_completes_a_download_in_progress() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    import_fixture(data.path(), &options(&["v1.10.3", "v1.11.6"], 24 << 20)).await;
    let daemon = Daemon::start(data.path(), logs.path(), &["--offline"]);
    let token = token(data.path());
    let (digest, size) = biggest_imager_layer(&daemon.url, "v1.10.3").await;
    assert!(size > 16 << 20, "the layer holds the random kernel: {size}");
    let blob_file = data
        .path()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    assert!(blob_file.exists());

    // Start the download and read only a little of it.
    let mut conn = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    conn.write_all(
        format!(
            "GET /v2/siderolabs/imager/blobs/{digest} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            daemon.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 64 << 10];
    let n = conn.read(&mut head).await.unwrap();
    head.truncate(n);
    let split = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers in the first read")
        + 4;
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut body = head.split_off(split);

    // Bad requests first: they change nothing.
    let api = |path: &str| format!("{}/api/v1/store/{path}", daemon.url);
    let resp = http()
        .post(api("gc"))
        .json(&serde_json::json!({"dryRun": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    for (bad, status) in [
        (serde_json::json!({"dryRun": false, "keepVersion": 1}), 400),
        (serde_json::json!({"dryRun": "no"}), 400),
        (serde_json::json!({"graceSeconds": u64::MAX}), 400),
        (
            serde_json::json!({"dryRun": false, "keepVersions": 1, "storeId": "00"}),
            409,
        ),
    ] {
        let resp = http()
            .post(api("gc"))
            .bearer_auth(&token)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            status,
            "{bad}: {}",
            resp.text().await.unwrap()
        );
    }
    // Without dryRun the API only plans.
    let resp = http()
        .post(api("gc"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"keepVersions": 1, "graceSeconds": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let plan: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(plan["dryRun"], true);
    assert!(blob_file.exists());

    let resp = http()
        .post(api("gc"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"dryRun": false, "keepVersions": 1, "graceSeconds": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let report: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(report["versions"], plan["versions"]);
    assert_eq!(report["freedBytes"], plan["freedBytes"]);
    assert!(report["freedBytes"].as_u64().unwrap() >= size, "{report}");
    assert!(
        !blob_file.exists(),
        "the removed version's layer is deleted"
    );
    let store_id = std::fs::read_to_string(data.path().join("store-id")).unwrap();
    assert_eq!(report["storeId"], store_id.trim());

    // The download still completes with the right bytes.
    tokio::time::timeout(Duration::from_secs(60), conn.read_to_end(&mut body))
        .await
        .expect("download finished")
        .unwrap();
    assert_eq!(body.len() as u64, size);
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body))),
        digest
    );

    // Verify and usage through the API: clean, and only the kept version left.
    let resp = http()
        .post(api("verify"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let verify: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(verify["corrupt"], serde_json::json!([]), "{verify}");
    assert_eq!(verify["missing"], serde_json::json!([]), "{verify}");
    let resp = http()
        .get(api("usage"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let usage: serde_json::Value = resp.json().await.unwrap();
    let listed: Vec<&str> = usage["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["v1.11.6"], "{usage}");
    let (status, _) = get_status(&format!(
        "{}/v2/siderolabs/imager/blobs/{digest}",
        daemon.url
    ))
    .await;
    assert_eq!(status, 404);
    // The CLI's verify goes through the service too.
    let out = store_cmd(data.path(), &["verify", "--server", &daemon.url]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("0 corrupt"), "{}", text(&out));
}
