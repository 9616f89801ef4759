//! Fault injection against the real `bootfactory` binary: SIGKILL during a large import,
//! during 30 concurrent initramfs builds, during an installer image build and during a
//! pull-through download; a full
//! filesystem (a small tmpfs) during import and build; corrupted blobs and built assets; an
//! upstream that dies mid-blob. After each fault: nothing half-visible, temp files gone, a
//! consistent store, and the same work succeeds when repeated.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bootfactory::factory::initramfs::parse_initramfs;
use bootfactory::fixture::{FixtureOptions, FixtureRelease, write_release};
use bootfactory::oci::layout::{ImageConfig, Layer, LayoutWriter};
use bootfactory::oci::media;
use bootfactory::store::{Digest, Store};
use support::fake_registry::FakeRegistry;
use support::fault::{
    Daemon, Tmpfs, can_mount, check_store, entries, largest_file, mirror_import, mirror_list,
};
use support::post_schematic;

const MIB: u64 = 1024 * 1024;

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Adds `reference` (one layer of `size` incompressible bytes) to the layout at `dir`;
/// returns the layer's digest.
fn add_big_image(dir: &Path, reference: &str, size: usize, seed: u64) -> Digest {
    let mut w = LayoutWriter::open(dir).unwrap();
    let mut blob = w.blob_writer().unwrap();
    let mut left = size;
    let mut i = 0;
    while left > 0 {
        let n = left.min(8 << 20);
        blob.write_all(&noise(n, seed + i)).unwrap();
        left -= n;
        i += 1;
    }
    let descriptor = blob.finish(media::OCI_LAYER_GZIP).unwrap();
    let layer_digest = descriptor.digest;
    let layer = Layer {
        descriptor,
        diff_id: layer_digest,
    };
    let manifest = w
        .put_image(
            &ImageConfig::new("amd64", "linux"),
            &[layer],
            BTreeMap::new(),
        )
        .unwrap();
    w.add_ref(&manifest, reference);
    w.finish().unwrap();
    layer_digest
}

/// Writes the layout at `dir` as a plain tar (blobs in name order).
fn tar_layout(dir: &Path, out: &Path) {
    let mut tar = tar::Builder::new(std::fs::File::create(out).unwrap());
    tar.append_path_with_name(dir.join("oci-layout"), "oci-layout")
        .unwrap();
    let blobs = dir.join("blobs/sha256");
    let mut names = entries(&blobs);
    names.sort();
    for name in names {
        tar.append_path_with_name(blobs.join(&name), format!("blobs/sha256/{name}"))
            .unwrap();
    }
    tar.append_path_with_name(dir.join("index.json"), "index.json")
        .unwrap();
    tar.into_inner().unwrap().sync_all().unwrap();
}

/// Imports the Small fixture release into `data` in-process.
async fn import_fixture(data: &Path) -> (tempfile::TempDir, FixtureRelease) {
    support::import_fixture(data, &FixtureOptions::default()).await
}

/// Reads a stored blob of a stopped server's data directory.
async fn stored_bytes(data: &Path, digest: &Digest) -> Option<Vec<u8>> {
    let store = Store::open(data).unwrap();
    store.read_bytes(digest).await.ok()
}

/// Asserts an initramfs parses and carries schematic `id`.
fn assert_initramfs(bytes: &[u8], id: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("initramfs.xz");
    std::fs::write(&file, bytes).unwrap();
    let parsed = parse_initramfs(&file).expect("initramfs parses");
    let last = parsed.layers.last().expect("layers");
    assert_eq!(last.name, "schematic");
    assert_eq!(last.version, id);
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---------------------------------------------------------------------------------------------
// kill -9

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_large_import_then_resume() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    write_release(&layout, &FixtureOptions::default()).unwrap();
    let big = "ghcr.io/fault/big:v1";
    let layer = add_big_image(&layout, big, 256 * MIB as usize, 1);
    let data = work.path().join("data");

    // Start the import and SIGKILL it while the big layer is half copied.
    let mut child = support::fault::bin()
        .args(["mirror", "import", "--offline", "--data-dir"])
        .arg(&data)
        .arg(&layout)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tmp = data.join("tmp");
    wait_until(
        "the big layer to be half copied",
        Duration::from_secs(60),
        || largest_file(&tmp) >= 64 * MIB,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        largest_file(&tmp) >= 64 * MIB,
        "killed mid-blob: the partial temp file is still there"
    );

    // Nothing half-visible: the big image is not named, every named image is whole, and the
    // partial layer is neither indexed nor in blobs/.
    let listed = mirror_list(&data);
    assert!(listed.iter().all(|(r, _)| r != big), "{listed:?}");
    assert!(
        listed.iter().all(|(_, missing)| *missing == 0),
        "{listed:?}"
    );
    assert!(entries(&tmp).is_empty(), "temp files removed on open");
    assert!(!data.join("blobs/sha256").join(layer.hex()).exists());
    let check = check_store(&data).await;
    assert!(check.refs.iter().all(|(r, _)| !r.contains("fault/big")));

    // Resumable: the same import completes and the layer's bytes are right.
    let out = mirror_import(&data, &layout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = mirror_list(&data);
    assert!(
        listed.iter().any(|(r, m)| r == big && *m == 0),
        "{listed:?}"
    );
    let bytes = stored_bytes(&data, &layer).await.expect("layer stored");
    assert_eq!(Digest::of_bytes(&bytes), layer);
    assert_eq!(bytes.len() as u64, 256 * MIB);
    check_store(&data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_30_concurrent_initramfs_builds_then_rebuild() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let _layout = import_fixture(&data).await;
    // A fixed external URL: it is part of the assets, and the restarted server has a new port.
    // One client starting 30 new builds at once is this test's load: no per-client budget.
    let args = [
        "--offline",
        "--http-external-url",
        "http://factory.test:8080",
        "--build-per-client-burst",
        "0",
    ];
    let mut server = Daemon::start(&data, work.path(), &args);

    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            post_schematic(
                &server.url,
                &format!("customization:\n  extraKernelArgs: [fault.n={i}]\n"),
            )
            .await,
        );
    }
    let paths: Vec<String> = ids
        .iter()
        .map(|id| format!("/image/{id}/v1.11.6/initramfs-amd64.xz"))
        .collect();
    let urls: Vec<String> = paths.iter().map(|p| format!("{}{p}", server.url)).collect();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, url) in urls.iter().enumerate() {
        let url = url.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let r = async {
                client()
                    .get(url)
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await
            };
            let _ = done.send((i, r.await));
        });
    }
    // Kill once a few builds have finished and others are still running.
    let builds = data.join("cache/builds");
    let mut finished = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while finished.len() < 5 || entries(&builds).is_empty() {
        assert!(
            Instant::now() < deadline && finished.len() < 30,
            "never saw builds running after some had finished"
        );
        if let Ok(Some((i, Ok(bytes)))) =
            tokio::time::timeout(Duration::from_millis(5), done_rx.recv()).await
        {
            finished.insert(i, bytes);
        }
    }
    server.kill9();
    while let Ok((i, r)) = done_rx.try_recv() {
        if let Ok(bytes) = r {
            finished.insert(i, bytes);
        }
    }
    assert!(finished.len() < 30, "all builds finished before the kill");
    eprintln!(
        "killed with {} of 30 initramfs served and {} builds in progress",
        finished.len(),
        entries(&builds).len()
    );

    // Restart: leftovers are gone before any request.
    let mut server = Daemon::start(&data, work.path(), &args);
    assert!(
        entries(&data.join("tmp")).is_empty(),
        "tmp/ emptied at start"
    );
    assert!(entries(&builds).is_empty(), "build dirs removed at start");

    // Every asset is served whole (rebuilt where needed), identical to what was served before.
    for (i, path) in paths.iter().enumerate() {
        let url = format!("{}{path}", server.url);
        let resp = client().get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        let bytes = resp.bytes().await.unwrap();
        assert_initramfs(&bytes, &ids[i]);
        if let Some(before) = finished.get(&i) {
            assert_eq!(before, &bytes, "asset {i} changed across the crash");
        }
    }
    server.stop();
    let check = check_store(&data).await;
    let assets = check
        .refs
        .iter()
        .filter(|(r, _)| r.starts_with("asset/") && r.contains("/Initramfs/"))
        .count();
    assert_eq!(assets, 30, "one asset ref per schematic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_pull_through_download_then_refetch() {
    let fake = FakeRegistry::start().await;
    let layer = noise(24 * MIB as usize, 7);
    let (_, layer_digest) = fake.add_image("siderolabs/big", "v1", &layer);
    fake.state
        .blob_bytes_per_sec
        .store(4 * MIB as usize, Ordering::SeqCst);
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let registries = format!("{{ghcr.io: {{endpoint: 'http://{}'}}}}", fake.addr);
    let args = [
        "--upstream-registries",
        registries.as_str(),
        "--upstream-retries",
        "0",
    ];
    let mut server = Daemon::start(&data, work.path(), &args);
    let url = format!(
        "{}/v2/siderolabs/big/blobs/{layer_digest}?ns=ghcr.io",
        server.url
    );

    let reader = tokio::spawn({
        let url = url.clone();
        async move { client().get(url).send().await?.bytes().await }
    });
    let tmp = data.join("tmp");
    let t = tmp.clone();
    tokio::task::spawn_blocking(move || {
        wait_until(
            "the download to be under way",
            Duration::from_secs(30),
            || largest_file(&t) >= 2 * MIB,
        )
    })
    .await
    .unwrap();
    server.kill9();
    let got = reader.await.unwrap();
    assert!(
        got.as_ref().map(|b| b.len() < layer.len()).unwrap_or(true),
        "the client cannot have the whole blob"
    );
    assert!(largest_file(&tmp) >= 2 * MIB, "killed mid-blob");

    // Restart: the partial download is gone, and nothing names it.
    let mut server2 = Daemon::start(&data, work.path(), &args);
    assert!(entries(&tmp).is_empty(), "tmp/ emptied at start");
    server2.stop();
    let digest: Digest = layer_digest.parse().unwrap();
    {
        check_store(&data).await;
        let store = Store::open(&data).unwrap();
        assert!(!store.contains(&digest), "a partial download was indexed");
    }
    assert!(!data.join("blobs/sha256").join(digest.hex()).exists());

    // Resumable: the blob is fetched again, whole and correct.
    fake.state.blob_bytes_per_sec.store(0, Ordering::SeqCst);
    let mut server3 = Daemon::start(&data, work.path(), &args);
    let url = url.replace(&server.url, &server3.url);
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap() == layer);
    server3.stop();
    check_store(&data).await;
    assert_eq!(
        stored_bytes(&data, &digest).await.as_deref(),
        Some(&layer[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_right_after_post_schematic_keeps_it() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut server = Daemon::start(&data, work.path(), &["--offline"]);
        let id = post_schematic(
            &server.url,
            &format!("customization:\n  extraKernelArgs: [fault.durable={i}]\n"),
        )
        .await;
        // No time for sled's background flush: the 201 must already be on disk.
        server.kill9();
        ids.push(id);
    }
    let server = Daemon::start(&data, work.path(), &["--offline"]);
    for id in &ids {
        let r = client()
            .get(format!("{}/schematics/{id}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "schematic {id} acknowledged with 201, lost by a crash"
        );
    }
}

/// Fetches `url` (manifests as OCI index or manifest) and checks the served digest.
async fn fetch_checked(url: &str) -> (Digest, Vec<u8>) {
    let r = client()
        .get(url)
        .header(
            "accept",
            format!("{}, {}", media::OCI_INDEX, media::OCI_MANIFEST),
        )
        .send()
        .await
        .unwrap();
    let status = r.status();
    if status != 200 {
        panic!("{url}: {status} {}", r.text().await.unwrap_or_default());
    }
    let served: Digest = r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().await.unwrap().to_vec();
    assert_eq!(
        Digest::of_bytes(&bytes),
        served,
        "{url}: bytes match the digest"
    );
    (served, bytes)
}

/// Checks an installer index served after a crash: every manifest and blob it reaches is served
/// whole (bytes hash to their digests), and its cosign signature verifies with the published
/// key (p256, independently of the server's own check) and names the index.
async fn check_installer_whole(base: &str, repo: &str, index: &Digest) {
    let (_, bytes) = fetch_checked(&format!("{base}/v2/{repo}/manifests/{index}")).await;
    let index_json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let children = index_json["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2, "amd64 and arm64: {index_json}");
    for child in children {
        let digest = child["digest"].as_str().unwrap();
        let (_, bytes) = fetch_checked(&format!("{base}/v2/{repo}/manifests/{digest}")).await;
        let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let blobs =
            std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap());
        for blob in blobs {
            let d = blob["digest"].as_str().unwrap();
            let r = client()
                .get(format!("{base}/v2/{repo}/blobs/{d}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{d}");
            let bytes = r.bytes().await.unwrap();
            assert_eq!(bytes.len() as u64, blob["size"].as_u64().unwrap(), "{d}");
            assert_eq!(Digest::of_bytes(&bytes).to_string(), d, "{d}");
        }
    }
    // The signature.
    let tag = format!("sha256-{}.sig", index.hex());
    let (_, bytes) = fetch_checked(&format!("{base}/v2/{repo}/manifests/{tag}")).await;
    let sig: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let layer = &sig["layers"][0];
    let payload = client()
        .get(format!(
            "{base}/v2/{repo}/blobs/{}",
            layer["digest"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let payload_json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        payload_json["critical"]["image"]["docker-manifest-digest"],
        index.to_string()
    );
    use base64::Engine as _;
    use p256::ecdsa::signature::Verifier as _;
    use p256::pkcs8::DecodePublicKey as _;
    let pem = client()
        .get(format!("{base}/oci/cosign/signing-key.pub"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let key = p256::ecdsa::VerifyingKey::from_public_key_pem(&pem).unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let signature = p256::ecdsa::Signature::from_der(&der).unwrap();
    key.verify(&payload, &signature)
        .expect("the index's cosign signature verifies with the published key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_installer_build_then_pull() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let _layout = import_fixture(&data).await;
    let args = [
        "--offline",
        "--http-external-url",
        "http://factory.test:8080",
        "--build-per-client-burst",
        "0",
    ];
    let builds = data.join("cache/builds");
    let version = "v1.11.6";
    // Each attempt a new schematic (extensions: the initramfs builds take a while); killed as
    // soon as a build work directory of the installer exists. An attempt whose whole build
    // finished before one was seen is repeated with another schematic.
    let mut killed = None;
    for attempt in 0..8 {
        let mut server = Daemon::start(&data, work.path(), &args);
        let id = post_schematic(
            &server.url,
            &format!(
                "customization:\n  extraKernelArgs: [fault.installer={attempt}]\n  systemExtensions:\n    officialExtensions: [siderolabs/gvisor, siderolabs/amd-ucode]\n"
            ),
        )
        .await;
        let url = format!("{}/v2/metal-installer/{id}/manifests/{version}", server.url);
        let request = tokio::spawn(async move { client().head(url).send().await });
        // Polled until a work directory exists or the request is answered.
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
    let id = killed.expect("never killed the server during an installer build");

    // Nothing half-served: no tag of the killed build, every named image whole, the store
    // consistent, tmp/ emptied.
    let repo =
        bootfactory::oci::ImageName::new("bootfactory.invalid", &format!("metal-installer/{id}"))
            .unwrap();
    {
        let store = Store::open(&data).unwrap();
        let catalog = bootfactory::oci::ImageCatalog::new(store.clone()).unwrap();
        assert!(
            catalog.tag(&repo, version).unwrap().is_none(),
            "a version tag of a build killed midway"
        );
        assert!(
            catalog.tags(&repo).unwrap().is_empty(),
            "{:?}",
            catalog.tags(&repo)
        );
        store.flush().await.unwrap();
    }
    let listed = mirror_list(&data);
    assert!(
        listed.iter().all(|(_, missing)| *missing == 0),
        "{listed:?}"
    );
    check_store(&data).await;

    // Restarted: the tag is built afresh, whole, signed; skopeo copies all of it.
    let mut server = Daemon::start(&data, work.path(), &args);
    assert!(
        entries(&data.join("tmp")).is_empty(),
        "tmp/ emptied at start"
    );
    assert!(entries(&builds).is_empty(), "build dirs removed at start");
    let name = format!("metal-installer/{id}");
    let (index, _) = fetch_checked(&format!("{}/v2/{name}/manifests/{version}", server.url)).await;
    check_installer_whole(&server.url, &name, &index).await;
    if support::tools::have("skopeo") {
        let host = server.url.trim_start_matches("http://").to_string();
        let out = work.path().join("copied");
        let src = format!("docker://{host}/{name}:{version}");
        let dst = format!("oci:{}:installer", out.display());
        tokio::task::spawn_blocking(move || {
            support::tools::skopeo_ok(&["copy", "--all", "--src-tls-verify=false", &src, &dst])
        })
        .await
        .unwrap();
        let copied: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(copied["manifests"][0]["digest"], index.to_string());
    }
    server.stop();
    let check = check_store(&data).await;
    assert!(
        check
            .refs
            .iter()
            .any(|(r, d)| r.ends_with(&format!("{name}:{version}")) && *d == index),
        "the tag names the served index"
    );
}

// ---------------------------------------------------------------------------------------------
// Full filesystem

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_during_import_is_reported_and_recoverable() {
    if !can_mount() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    write_release(&layout, &FixtureOptions::default()).unwrap();
    let big = "ghcr.io/fault/big:v1";
    let layer = add_big_image(&layout, big, 40 * MIB as usize, 2);
    let archive = work.path().join("bundle.tar");
    tar_layout(&layout, &archive);

    let fs = Tmpfs::mount(32 * MIB);
    let data = fs.path().join("data");
    for (what, source) in [("directory", &layout), ("tar", &archive)] {
        let out = mirror_import(&data, source);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what} import cannot fit");
        assert!(
            stderr.contains(&format!("no space left on {}", data.display())),
            "{what} import: {stderr}"
        );
        assert!(!stderr.contains("damaged"), "{what} import: {stderr}");
        // Consistent afterwards: nothing named, nothing partial, no temp files.
        assert!(
            entries(&data.join("tmp")).is_empty(),
            "{what}: temp removed"
        );
        let listed = mirror_list(&data);
        assert!(listed.iter().all(|(r, _)| r != big), "{listed:?}");
        assert!(listed.iter().all(|(_, m)| *m == 0), "{listed:?}");
        check_store(&data).await;
    }

    // Space freed: the same import succeeds.
    fs.resize(96 * MIB);
    let out = mirror_import(&data, &archive);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = mirror_list(&data);
    assert!(
        listed.iter().any(|(r, m)| r == big && *m == 0),
        "{listed:?}"
    );
    check_store(&data).await;
    let bytes = stored_bytes(&data, &layer).await.expect("layer stored");
    assert_eq!(Digest::of_bytes(&bytes), layer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_during_build_answers_507_and_recovers() {
    if !can_mount() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(96 * MIB);
    let data = fs.path().join("data");
    let _layout = import_fixture(&data).await;
    let mut server = Daemon::start(&data, work.path(), &["--offline"]);
    // Warm-up: the imager and gvisor are extracted into the cache while there is space, so the
    // later failures happen in the build itself and in the store.
    let warm = post_schematic(
        &server.url,
        "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/gvisor]\n",
    )
    .await;
    let resp = client()
        .get(format!(
            "{}/image/{warm}/v1.11.6/initramfs-amd64.xz",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Built on the full disk: the same extension (only the build and the store write), and
    // one never extracted (the extraction into the cache fails too).
    let id = post_schematic(
        &server.url,
        "customization:\n  extraKernelArgs: [a=1]\n  systemExtensions:\n    officialExtensions: [siderolabs/gvisor]\n",
    )
    .await;
    let cold = post_schematic(
        &server.url,
        "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/amd-ucode]\n",
    )
    .await;
    let initramfs = format!("{}/image/{id}/v1.11.6/initramfs-amd64.xz", server.url);
    let cold_initramfs = format!("{}/image/{cold}/v1.11.6/initramfs-amd64.xz", server.url);
    let kernel = format!("{}/image/{id}/v1.11.6/kernel-amd64", server.url);

    let filler = fs.path().join("filler");
    fs.fill(&filler, 0);
    let expected = format!("no space left on {}", data.display());
    for url in [&initramfs, &cold_initramfs, &kernel] {
        let resp = client().get(url).send().await.unwrap();
        assert_eq!(resp.status(), 507, "{url}\n{}", server.log_text());
        let body = resp.text().await.unwrap();
        assert!(body.contains(&expected), "{url}: {body}");
    }
    let resp = client()
        .post(format!("{}/schematics", server.url))
        .body("customization:\n  extraKernelArgs: [full=1]\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 507);
    assert!(resp.text().await.unwrap().contains(&expected));
    assert!(entries(&data.join("tmp")).is_empty(), "no temp files left");
    assert!(
        entries(&data.join("cache/builds")).is_empty(),
        "no build dirs left"
    );
    assert!(
        entries(&data.join("cache/tmp")).is_empty(),
        "no extraction dirs left"
    );

    // Space freed: the same requests succeed without a restart.
    std::fs::remove_file(&filler).unwrap();
    for (url, id) in [(&initramfs, &id), (&cold_initramfs, &cold)] {
        let resp = client().get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{}", server.log_text());
        assert_initramfs(&resp.bytes().await.unwrap(), id);
    }
    let resp = client().get(&kernel).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.bytes().await.unwrap()[..2], b"MZ");
    post_schematic(&server.url, "customization:\n  extraKernelArgs: [full=1]\n").await;
    server.stop();
    check_store(&data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_during_pull_through_commits_nothing_and_recovers() {
    if !can_mount() {
        return;
    }
    let fake = FakeRegistry::start().await;
    let layer = noise(24 * MIB as usize, 11);
    let (_, layer_digest) = fake.add_image("siderolabs/big", "v1", &layer);
    let digest: Digest = layer_digest.parse().unwrap();
    let work = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(16 * MIB);
    let data = fs.path().join("data");
    let registries = format!("{{ghcr.io: {{endpoint: 'http://{}'}}}}", fake.addr);
    let upstream = [
        "--upstream-registries",
        registries.as_str(),
        "--upstream-retries",
        "0",
    ];

    // `mirror pull` says why.
    let out = support::fault::bin()
        .args(["mirror", "pull", "--data-dir"])
        .arg(&data)
        .args(upstream)
        .arg("ghcr.io/siderolabs/big:v1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("no space left on {}", data.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("unavailable"), "{stderr}");

    // A client pulling through never gets the blob whole; nothing is committed.
    let mut server = Daemon::start(&data, work.path(), &upstream);
    let url = format!(
        "{}/v2/siderolabs/big/blobs/{layer_digest}?ns=ghcr.io",
        server.url
    );
    let resp = client().get(&url).send().await.unwrap();
    let status = resp.status();
    let body = resp.bytes().await;
    assert!(
        status != 200 || body.as_ref().map(|b| b.len() < layer.len()).unwrap_or(true),
        "a blob that did not fit was delivered whole ({status})"
    );
    eprintln!("pull-through on a full disk: {status}");
    if status != 200 {
        assert_eq!(status, 507, "{}", server.log_text());
    }
    wait_until(
        "the partial download to be removed",
        Duration::from_secs(10),
        || entries(&data.join("tmp")).is_empty(),
    );
    assert!(
        server
            .log_text()
            .contains(&format!("no space left on {}", data.display())),
        "the log names the cause"
    );

    // A manifest is stored before it is answered: with no space at all, the client gets a
    // 507 OCI error naming the cause.
    fake.add_image("siderolabs/small", "v1", b"small layer");
    let filler = fs.path().join("filler");
    fs.fill(&filler, 0);
    let resp = client()
        .get(format!(
            "{}/v2/siderolabs/small/manifests/v1?ns=ghcr.io",
            server.url
        ))
        .header("accept", media::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 507, "{}", server.log_text());
    let error: serde_json::Value = resp.json().await.unwrap();
    assert!(
        error["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("no space left on {}", data.display())),
        "{error}"
    );
    std::fs::remove_file(&filler).unwrap();

    // Space freed: the same request succeeds, without a restart.
    fs.resize(64 * MIB);
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap() == layer);
    server.stop();
    check_store(&data).await;
    assert_eq!(
        stored_bytes(&data, &digest).await.as_deref(),
        Some(&layer[..])
    );
}

// ---------------------------------------------------------------------------------------------
// Corruption

/// Flips one byte in the middle of a file, in place.
fn flip_byte(path: &Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let at = f.metadata().unwrap().len() / 2;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x01;
    f.write_all_at(&b, at).unwrap();
}

fn quarantined(data: &Path, digest: &Digest) -> bool {
    entries(&data.join("quarantine"))
        .iter()
        .any(|n| n.starts_with(digest.hex().as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blob_and_built_asset_are_never_served() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let (layout, _release) = import_fixture(&data).await;
    let mut server = Daemon::start(&data, work.path(), &["--offline"]);
    let id = post_schematic(&server.url, "customization: {}").await;

    // A built asset: corrupted on disk → quarantined and rebuilt, the client gets good bytes.
    let kernel_url = format!("{}/image/{id}/v1.11.6/kernel-amd64", server.url);
    let kernel = client().get(&kernel_url).send().await.unwrap();
    assert_eq!(kernel.status(), 200);
    let kernel = kernel.bytes().await.unwrap();
    let kernel_digest = Digest::of_bytes(&kernel);
    let asset_file = data.join("blobs/sha256").join(kernel_digest.hex());
    flip_byte(&asset_file);
    for _ in 0..2 {
        let again = client().get(&kernel_url).send().await.unwrap();
        assert_eq!(again.status(), 200);
        assert!(
            again.bytes().await.unwrap() == kernel,
            "rebuilt, same bytes"
        );
    }
    assert!(
        quarantined(&data, &kernel_digest),
        "corrupt asset quarantined"
    );
    assert_eq!(
        Digest::of_bytes(&std::fs::read(&asset_file).unwrap()),
        kernel_digest
    );

    // A mirrored blob (an imager layer): corrupted → never served whole, quarantined.
    let manifest_url = format!(
        "{}/v2/siderolabs/imager/manifests/v1.11.6?ns=ghcr.io",
        server.url
    );
    let index: serde_json::Value = client()
        .get(&manifest_url)
        .header("accept", media::OCI_INDEX)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let amd64 = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest: serde_json::Value = client()
        .get(format!(
            "{}/v2/siderolabs/imager/manifests/{amd64}?ns=ghcr.io",
            server.url
        ))
        .header("accept", media::OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let layer: Digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let layer_file = data.join("blobs/sha256").join(layer.hex());
    let good = std::fs::read(&layer_file).unwrap();
    flip_byte(&layer_file);
    let corrupt = std::fs::read(&layer_file).unwrap();
    let blob_url = format!(
        "{}/v2/siderolabs/imager/blobs/{layer}?ns=ghcr.io",
        server.url
    );
    let resp = client().get(&blob_url).send().await.unwrap();
    let status = resp.status();
    let body = resp.bytes().await;
    assert!(
        !(status == 200 && body.as_ref().is_ok_and(|b| b[..] == corrupt[..])),
        "corrupt blob served"
    );
    assert_ne!(
        status, 200,
        "offline, a corrupt blob cannot be served at all"
    );
    eprintln!("corrupt mirrored blob, offline: {status}");
    assert!(quarantined(&data, &layer), "corrupt blob quarantined");
    assert!(!layer_file.exists());

    // Recovery: importing the release again restores the blob, which is served again.
    server.stop();
    check_store(&data).await;
    let out = mirror_import(&data, layout.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Daemon::start(&data, work.path(), &["--offline"]);
    let blob_url = format!(
        "{}/v2/siderolabs/imager/blobs/{layer}?ns=ghcr.io",
        server.url
    );
    let resp = client().get(&blob_url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap() == good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_dying_mid_blob_commits_nothing() {
    let fake = FakeRegistry::start().await;
    let layer = noise(4 * MIB as usize, 9);
    let (_, layer_digest) = fake.add_image("siderolabs/flaky", "v1", &layer);
    fake.state
        .blob_cut_after
        .store(2 * MIB as usize, Ordering::SeqCst);
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let registries = format!("{{ghcr.io: {{endpoint: 'http://{}'}}}}", fake.addr);
    let args = [
        "--upstream-registries",
        registries.as_str(),
        "--upstream-retries",
        "0",
    ];
    let mut server = Daemon::start(&data, work.path(), &args);
    let url = format!(
        "{}/v2/siderolabs/flaky/blobs/{layer_digest}?ns=ghcr.io",
        server.url
    );
    let blob_path = format!("/v2/siderolabs/flaky/blobs/{layer_digest}");

    let resp = client().get(&url).send().await.unwrap();
    let status = resp.status();
    let body = resp.bytes().await;
    assert!(
        status != 200 || body.as_ref().map(|b| b.len() < layer.len()).unwrap_or(true),
        "the client must see an error, not a complete body ({status})"
    );
    assert_eq!(fake.hits("GET", &blob_path), 1);
    wait_until(
        "the partial download to be removed",
        Duration::from_secs(10),
        || entries(&data.join("tmp")).is_empty(),
    );

    // The upstream is back: a later request fetches it again, whole.
    fake.state.blob_cut_after.store(0, Ordering::SeqCst);
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap() == layer);
    assert_eq!(fake.hits("GET", &blob_path), 2);
    server.stop();
    check_store(&data).await;
}
