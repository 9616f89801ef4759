//! A first run that guides (issue 14): what an empty store answers offline (`/versions` `[]`,
//! asset and `/pxe` routes a 503 naming the imager image and `bootfactory mirror import`), the
//! upstream failure in words online (DNS, refused), the boot chain checked when a machine is
//! assigned (an extension not in the catalog, the catalog missing, an extension image
//! missing: 409 naming it; `/pxe` not 200), the seed file's broken entries logged, and the
//! warm-up (`POST /api/v1/warm`, `bootfactory warm`, `?warm=true`) making the boot's assets
//! cache hits.

mod support;

use bootfactory::fixture::{FixtureOptions, FixtureRelease, write_release};
use bootfactory::oci::ImageCatalog;
use bootfactory::oci::bundle::{self, NoProgress};
use bootfactory::store::Store;
use support::TestServer;
use support::fault::Daemon;

const EMPTY_ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
const TOKEN: &str = "first-run-token";
const MAC: &str = "52:54:00:00:0e:01";

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::new()
}

async fn get(url: &str) -> (u16, String) {
    let r = client().get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn put_assignment(server: &str, mac: &str, query: &str, body: &str) -> (u16, String) {
    let r = client()
        .put(format!("{server}/api/v1/machines/{mac}{query}"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn warm(server: &str, body: &str) -> (u16, String) {
    let r = client()
        .post(format!("{server}/api/v1/warm"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn assignment(schematic: &str, version: &str) -> String {
    format!(r#"{{"schematic":"{schematic}","version":"{version}"}}"#)
}

/// The fixture release imported into a new data directory, without the images named in
/// `drop` (references as in `index.json`): a bundle that lacks them.
async fn data_without(drop: &[&str]) -> (tempfile::TempDir, FixtureRelease) {
    let layout = tempfile::tempdir().unwrap();
    let release = write_release(layout.path(), &FixtureOptions::default()).expect("fixture");
    let index_path = layout.path().join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let manifests = index["manifests"].as_array_mut().unwrap();
    let before = manifests.len();
    manifests.retain(|m| {
        !m["annotations"]
            .as_object()
            .is_some_and(|a| a.values().any(|v| drop.contains(&v.as_str().unwrap_or(""))))
    });
    assert_eq!(
        before - manifests.len(),
        drop.len(),
        "{drop:?} not all in index.json"
    );
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path()).unwrap();
    let catalog = ImageCatalog::new(store.clone()).unwrap();
    bundle::import(&catalog, layout.path(), None, &NoProgress)
        .await
        .unwrap();
    store.flush().await.unwrap();
    (data, release)
}

async fn offline_server(data: tempfile::TempDir) -> TestServer {
    TestServer::start_in(data, &[("offline", "true"), ("api.adminToken", TOKEN)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_empty_store_names_what_to_import() {
    let s = offline_server(tempfile::tempdir().unwrap()).await;
    let id = support::post_schematic(&s.url, "customization: {}").await;
    assert_eq!(id, EMPTY_ID);

    // No versions yet, as upstream with none: not an error.
    let (status, body) = get(&format!("{}/versions", s.url)).await;
    assert_eq!((status, body.as_str()), (200, "[]\n"));

    let want = "ghcr.io/siderolabs/imager:v1.11.6 is not in the store and bootfactory is offline (offline: true): import a bundle with `bootfactory mirror import <bundle>`";
    for path in [
        format!("/image/{id}/v1.11.6/kernel-amd64"),
        format!("/image/{id}/v1.11.6/initramfs-amd64.xz"),
        format!("/pxe/{id}/v1.11.6/metal-amd64"),
    ] {
        let r = client()
            .get(format!("{}{path}", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{path}");
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        let body = r.text().await.unwrap();
        assert!(body.contains(want), "{path}: {body}");
    }

    // An assignment whose boot would fail is refused, naming the missing release.
    let (status, body) = put_assignment(&s.url, MAC, "", &assignment(&id, "v1.11.6")).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains(want), "{body}");
    // A warm-up gets what the assets would get.
    let (status, body) = warm(
        &s.url,
        &format!(r#"{{"schematic":"{id}","version":"v1.11.6"}}"#),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ghcr.io/siderolabs/imager:v1.11.6"), "{body}");
    s.stop().await;
}

/// Online with an artifacts registry whose name never resolves (`.invalid`): the 503 says DNS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_dns_failure_is_said_in_words() {
    let s = TestServer::start(&[
        ("artifacts.core.registry", "nonexistent.invalid"),
        ("upstream.retries", "0"),
        ("upstream.timeoutSeconds", "5"),
        ("api.adminToken", TOKEN),
    ])
    .await;
    let id = support::post_schematic(&s.url, "customization: {}").await;
    for path in [
        "/versions".to_string(),
        format!("/image/{id}/v1.11.6/kernel-amd64"),
        format!("/pxe/{id}/v1.11.6/metal-amd64"),
    ] {
        let (status, body) = get(&format!("{}{path}", s.url)).await;
        assert_eq!(status, 503, "{path}: {body}");
        eprintln!("{path}: {body}");
        assert!(
            body.contains("cannot resolve nonexistent.invalid") && body.contains("DNS failure"),
            "{path}: {body}"
        );
    }
    let (status, body) = put_assignment(&s.url, MAC, "", &assignment(&id, "v1.11.6")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("cannot resolve nonexistent.invalid"),
        "{body}"
    );
    s.stop().await;
}

/// Online with the artifacts registry on a closed loopback port: the 503 says refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_refused_connection_is_said_in_words() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let registries = format!("{{ghcr.io: {{endpoint: 'http://{addr}'}}}}");
    let s = TestServer::start(&[
        ("upstream.registries", &registries),
        ("upstream.retries", "0"),
    ])
    .await;
    let id = support::post_schematic(&s.url, "customization: {}").await;
    for path in [
        "/versions".to_string(),
        format!("/image/{id}/v1.11.6/kernel-amd64"),
    ] {
        let (status, body) = get(&format!("{}{path}", s.url)).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(
            body.contains(&format!("connection refused by {addr}")),
            "{path}: {body}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignments_check_the_whole_boot_chain() {
    let layout = tempfile::tempdir().unwrap();
    let release = write_release(layout.path(), &FixtureOptions::default()).expect("fixture");
    drop(layout);
    let v18 = release.version("v1.8.4").unwrap();
    let v111 = release.version("v1.11.6").unwrap();
    let catalog_111 = v111.extensions_catalog.clone();
    let gvisor_18 = v18.extensions["gvisor"].reference.clone();
    // A bundle without v1.11.6's extensions catalog and without v1.8.4's gvisor image.
    let (data, _) = data_without(&[&catalog_111, &gvisor_18]).await;
    let s = offline_server(data).await;
    let empty = support::post_schematic(&s.url, "customization: {}").await;
    let gvisor = support::post_schematic(
        &s.url,
        "customization: {systemExtensions: {officialExtensions: [siderolabs/gvisor]}}",
    )
    .await;
    let nope = support::post_schematic(
        &s.url,
        "customization: {systemExtensions: {officialExtensions: [siderolabs/nope]}}",
    )
    .await;

    // The versions are served: both imagers are in the store.
    assert_eq!(
        get(&format!("{}/versions", s.url)).await.1,
        "[\"v1.8.4\",\"v1.11.6\"]\n"
    );

    // v1.11.6 has no extensions catalog: every schematic is refused, naming it.
    let (status, body) = put_assignment(&s.url, MAC, "", &assignment(&empty, "v1.11.6")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains(&format!(
            "{catalog_111} (the extensions catalog of v1.11.6) is not in the store"
        )) && body.contains("bootfactory mirror import <bundle>"),
        "{body}"
    );
    // And its /pxe script is not a 200: the same error, plain text.
    let (status, body) = get(&format!("{}/pxe/{empty}/v1.11.6/metal-amd64", s.url)).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("(the extensions catalog of v1.11.6)"),
        "{body}"
    );

    // v1.8.4: an extension the catalog does not list.
    let (status, body) = put_assignment(&s.url, MAC, "", &assignment(&nope, "v1.8.4")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("extension siderolabs/nope is not in the v1.8.4 extensions catalog"),
        "{body}"
    );
    let (status, body) = get(&format!("{}/pxe/{nope}/v1.8.4/metal-amd64", s.url)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(
            "official extension \"siderolabs/nope\" is not available for Talos version v1.8.4"
        ),
        "{body}"
    );
    // v1.8.4: gvisor is listed, but its image is not in the store.
    let (status, body) = put_assignment(&s.url, MAC, "", &assignment(&gvisor, "v1.8.4")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("(extension siderolabs/gvisor) is not in the store"),
        "{body}"
    );
    // The default is checked the same way.
    let r = client()
        .put(format!("{}/api/v1/default", s.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(assignment(&gvisor, "v1.8.4"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    // A whole chain is accepted.
    let (status, body) = put_assignment(&s.url, MAC, "", &assignment(&empty, "v1.8.4")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&format!("{}/pxe/{empty}/v1.8.4/metal-amd64", s.url)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("#!ipxe"), "{body}");
    s.stop().await;
}

/// A seed file entry whose boot would fail does not stop the start (the bundle may be
/// imported next); it is logged with the missing piece, the good entry is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_file_entries_with_a_broken_chain_are_logged() {
    let (data, _) = data_without(&[]).await;
    let schematics = tempfile::tempdir().unwrap();
    std::fs::write(
        schematics.path().join("nope.yaml"),
        "customization: {systemExtensions: {officialExtensions: [siderolabs/nope]}}\n",
    )
    .unwrap();
    std::fs::write(schematics.path().join("empty.yaml"), "customization: {}\n").unwrap();
    let nope_id = {
        let s = offline_server(tempfile::tempdir().unwrap()).await;
        let id = support::post_schematic(
            &s.url,
            "customization: {systemExtensions: {officialExtensions: [siderolabs/nope]}}",
        )
        .await;
        s.stop().await;
        id
    };
    let seed = data.path().join("assignments.yaml");
    std::fs::write(
        &seed,
        format!(
            "default:\n  schematic: {EMPTY_ID}\n  version: v1.11.6\nmachines:\n  \"{MAC}\":\n    schematic: {nope_id}\n    version: v1.11.6\n"
        ),
    )
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let seed_s = seed.to_string_lossy().to_string();
    let dir_s = schematics.path().to_string_lossy().to_string();
    let mut d = Daemon::start(
        data.path(),
        logs.path(),
        &[
            "--offline",
            "--api-admin-token",
            TOKEN,
            "--schematics-dir",
            &dir_s,
            "--assignments-file",
            &seed_s,
        ],
    );
    let want = "extension siderolabs/nope is not in the v1.11.6 extensions catalog";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !d.log_text().contains(want) {
        assert!(std::time::Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = d.log_text();
    let line = log.lines().find(|l| l.contains(want)).unwrap();
    assert!(
        line.contains("WARN")
            && line.contains(&format!("machines.{MAC}"))
            && line.contains("will not boot"),
        "{line}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("will not boot") && l.contains("entry=default")),
        "{log}"
    );
    // Applied anyway: the machine is assigned, and its /pxe answers the missing piece.
    let (status, body) = get(&format!("{}/pxe/{nope_id}/v1.11.6/metal-amd64", d.url)).await;
    assert_eq!(status, 400, "{body}");

    // `bootfactory warm` with neither --server nor --token finds the running service on its
    // admin socket in the data directory.
    let exe = env!("CARGO_BIN_EXE_bootfactory");
    let data_dir = data.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args(["warm", EMPTY_ID, "v1.11.6", "--data-dir"])
            .arg(&data_dir)
            .env_remove("BOOTFACTORY_ADMIN_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("initramfs-amd64.xz") && stdout.contains("built"),
        "{stdout}"
    );
    d.stop();
}

/// Offline with nothing imported, `/versions` is `[]` every time and the log gets the hint
/// once, not once per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_store_hint_is_logged_once() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(data.path(), logs.path(), &["--offline"]);
    for _ in 0..5 {
        let (status, body) = get(&format!("{}/versions", d.url)).await;
        assert_eq!((status, body.as_str()), (200, "[]\n"));
    }
    let log = d.log_text();
    let hints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("the store lacks Talos content"))
        .collect();
    assert_eq!(hints.len(), 1, "{log}");
    assert!(
        hints[0].contains("WARN") && hints[0].contains("bootfactory mirror import <bundle>"),
        "{}",
        hints[0]
    );
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_builds_what_pxe_serves_before_the_boot() {
    let (data, _) = data_without(&[]).await;
    let s = offline_server(data).await;
    let id = support::post_schematic(
        &s.url,
        "customization: {systemExtensions: {officialExtensions: [siderolabs/gvisor]}}",
    )
    .await;

    // Hostile or wrong requests are 4xx, before any work.
    for (body, status, want) in [
        (
            format!(r#"{{"schematic":"{id}","version":"v1.11.6","arch":"riscv64"}}"#),
            400,
            "unknown architecture",
        ),
        (
            format!(r#"{{"schematic":"{id}","version":"v1.11.6","assets":["../../etc/passwd"]}}"#),
            400,
            "neither a boot kind",
        ),
        (
            format!(r#"{{"schematic":"{id}","version":"v1.11.6","colour":1}}"#),
            400,
            "unknown field",
        ),
        (
            format!(r#"{{"schematic":"{id}","version":"v1.11.6","assets":["metal-amd64.nope"]}}"#),
            400,
            "metal-amd64.nope: error parsing profile",
        ),
        (
            format!(r#"{{"schematic":"{id}","version":"v9.9.9"}}"#),
            404,
            "version 9.9.9 is not available",
        ),
    ] {
        let (got, text) = warm(&s.url, &body).await;
        assert_eq!(got, status, "{body}: {text}");
        assert!(text.contains(want), "{body}: {text}");
    }
    let r = client()
        .post(format!("{}/api/v1/warm", s.url))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the admin token is required");

    let (status, text) = warm(
        &s.url,
        &format!(r#"{{"schematic":"{id}","version":"v1.11.6"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let assets = report["assets"].as_array().unwrap();
    let paths: Vec<&str> = assets.iter().map(|a| a["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["cmdline-metal-amd64", "kernel-amd64", "initramfs-amd64.xz"]
    );
    for a in assets {
        assert_eq!(a["cached"], false, "{a}");
        assert!(a["size"].as_u64().unwrap() > 0, "{a}");
    }

    // What the /pxe script points at is now delivered from the cache, not built.
    let (status, script) = get(&format!("{}/pxe/{id}/v1.11.6/metal-amd64", s.url)).await;
    assert_eq!(status, 200, "{script}");
    let before = reqwest::get(format!("{}/metrics", s.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let cached_before = cached_sum(&before);
    for file in ["kernel-amd64", "initramfs-amd64.xz"] {
        assert!(
            script.contains(&format!("/image/{id}/v1.11.6/{file}")),
            "{script}"
        );
        let r = client()
            .get(format!("{}/image/{id}/v1.11.6/{file}", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let len = r.bytes().await.unwrap().len() as u64;
        let warmed = assets.iter().find(|a| a["path"] == file).unwrap();
        assert_eq!(warmed["size"].as_u64().unwrap(), len);
    }
    let text = reqwest::get(format!("{}/metrics", s.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("image_factory_assets_built_total{")),
        "nothing built by the boot itself:\n{text}"
    );
    let cached_after = cached_sum(&text);
    assert!(
        cached_after >= cached_before + 2.0,
        "{cached_before} → {cached_after}"
    );

    // The CLI: against the running server, it prints what was built (all cached now).
    let exe = env!("CARGO_BIN_EXE_bootfactory");
    let url = s.url.clone();
    let id2 = id.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args([
                "warm", &id2, "v1.11.6", "--boot", "pxe", "--server", &url, "--token", TOKEN,
            ])
            .env_remove("BOOTFACTORY_ADMIN_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "kernel-amd64",
        "initramfs-amd64.xz",
        "cmdline-metal-amd64",
        "cached",
        "ready in",
    ] {
        assert!(stdout.contains(want), "{want}: {stdout}");
    }
    // An unknown schematic through the CLI: the server's answer, and a failing exit.
    let url = s.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args([
                "warm", EMPTY_ID, "v1.11.6", "--server", &url, "--token", TOKEN,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("schematic ID"), "{stderr}");
    s.stop().await;
}

/// The sum of `image_factory_assets_delivered_cached_total` over its labels.
fn cached_sum(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("image_factory_assets_delivered_cached_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `PUT …?warm=true`: the assignment is answered at once, its assets are built in the
/// background, and the machine's boot finds them built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_on_assignment() {
    let (data, _) = data_without(&[]).await;
    let s = offline_server(data).await;
    let id = support::post_schematic(&s.url, "customization: {}").await;
    let (status, body) =
        put_assignment(&s.url, MAC, "?warm=true", &assignment(&id, "v1.11.6")).await;
    assert_eq!(status, 200, "{body}");
    // Wait for the warm-up: a HEAD joins or hits what it builds, it never builds its own.
    let url = format!("{}/image/{id}/v1.11.6/initramfs-amd64.xz", s.url);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let r = client().head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = reqwest::get(format!("{}/metrics", s.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("image_factory_assets_built_total{") && l.contains("initramfs")),
        "the boot built the initramfs itself:\n{text}"
    );
    s.stop().await;
}

/// Online against a registry (the fake upstream on loopback): wrong credentials are a 503
/// saying 401 and which key to set; a version whose extensions catalog the registry does not
/// have (404) is an assignment refused, naming the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_credentials_and_missing_catalog_are_named() {
    use std::sync::atomic::Ordering;
    let fake = support::fake_registry::FakeRegistry::start().await;
    fake.add_image("siderolabs/imager", "v1.11.6", b"imager layer");
    let base = |token: &str| format!("{{ghcr.io: {{endpoint: 'http://{}'{token}}}}}", fake.addr);

    fake.state.require_token.store(true, Ordering::SeqCst);
    let wrong = base(", token: wrong-token");
    let s = TestServer::start(&[
        ("upstream.registries", &wrong),
        ("upstream.retries", "0"),
        ("api.adminToken", TOKEN),
    ])
    .await;
    let (status, body) = get(&format!("{}/versions", s.url)).await;
    assert_eq!(status, 503, "{body}");
    eprintln!("/versions: {body}");
    assert!(
        body.contains("ghcr.io wants credentials (401 Unauthorized): set upstream.registries.ghcr.io.username and password, or token"),
        "{body}"
    );
    s.stop().await;

    fake.state.require_token.store(false, Ordering::SeqCst);
    let plain = base("");
    let s = TestServer::start(&[
        ("upstream.registries", &plain),
        ("upstream.retries", "0"),
        ("api.adminToken", TOKEN),
    ])
    .await;
    assert_eq!(
        get(&format!("{}/versions", s.url)).await.1,
        "[\"v1.11.6\"]\n"
    );
    let id = support::post_schematic(&s.url, "customization: {}").await;
    let (status, body) = put_assignment(&s.url, MAC, "", &assignment(&id, "v1.11.6")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("the extensions catalog of v1.11.6: manifest ghcr.io/siderolabs/extensions:v1.11.6 unknown upstream"),
        "{body}"
    );
    s.stop().await;
}
