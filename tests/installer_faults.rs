//! Installer images (`/v2/<image>/<schematic>/…`) under tampering and hostile requests, on the
//! real binary with the fixture release imported offline: a missing, foreign, forged or
//! repointed signature is never served (the index is rebuilt), blobs and manifests of other
//! repositories are unknown here, odd references are 4xx, the per-client build budget answers
//! 429 + `Retry-After` as an OCI error, and `store gc` keeps a built installer pullable by
//! skopeo.

mod support;

use std::path::Path;
use std::time::Duration;

use bootfactory::fixture::{FixtureOptions, FixtureRelease};
use bootfactory::oci::{ImageCatalog, ImageName, media};
use bootfactory::store::{Digest, Store};
use support::fault::Daemon;
use support::tools::{have, skopeo_ok};

const ARGS: [&str; 4] = [
    "--offline",
    "--http-external-url",
    "http://factory.test:8080",
    // Replaced per test where the budget matters.
    "--build-per-client-burst=0",
];

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// A data directory with the fixture release imported offline.
async fn data_dir(work: &Path) -> (std::path::PathBuf, tempfile::TempDir, FixtureRelease) {
    let data = work.join("data");
    let (layout, release) = support::import_fixture(&data, &FixtureOptions::default()).await;
    (data, layout, release)
}

/// `GET` of a manifest: status, `Docker-Content-Digest`, body.
async fn get_manifest(url: &str) -> (u16, String, serde_json::Value) {
    let r = client()
        .get(url)
        .header(
            "accept",
            format!("{}, {}", media::OCI_INDEX, media::OCI_MANIFEST),
        )
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let digest = r
        .headers()
        .get("docker-content-digest")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = r.bytes().await.unwrap();
    (
        status,
        digest,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// `GET` that must answer 404 with the OCI error `code`.
async fn assert_oci_404(url: &str, code: &str) {
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 404, "{url}");
    assert_eq!(r.headers()["content-type"], "application/json", "{url}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], code, "{url}: {body}");
}

fn repo_name(id: &str) -> ImageName {
    ImageName::new("bootfactory.invalid", &format!("metal-installer/{id}")).unwrap()
}

fn sig_tag(digest: &str) -> String {
    format!("sha256-{}.sig", digest.strip_prefix("sha256:").unwrap())
}

/// Opens the catalog of a stopped server's data directory.
fn catalog(data: &Path) -> ImageCatalog {
    ImageCatalog::new(Store::open(data).unwrap()).unwrap()
}

async fn close(catalog: ImageCatalog) {
    catalog.store().flush().await.unwrap();
    drop(catalog);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_foreign_forged_or_repointed_signature_is_never_served() {
    let work = tempfile::tempdir().unwrap();
    let (data, _layout, _release) = data_dir(work.path()).await;
    let mut server = Daemon::start(&data, work.path(), &ARGS);
    let id = support::post_schematic(&server.url, "customization: {}").await;
    let base = |s: &Daemon| format!("{}/v2/metal-installer/{id}/manifests", s.url);
    let (status, d11, _) = get_manifest(&format!("{}/v1.11.6", base(&server))).await;
    assert_eq!(status, 200);
    let (status, d8, _) = get_manifest(&format!("{}/v1.8.4", base(&server))).await;
    assert_eq!(status, 200);
    assert_ne!(d11, d8);
    server.stop();
    let repo = repo_name(&id);
    let digest = |d: &str| -> Digest { d.parse().unwrap() };
    let sig_of = |cat: &ImageCatalog, d: &str| sig_in(cat, &repo_name(&id), d);

    // Each tampering, then a restart: the tag is served only after a rebuild that gives the
    // right index again (builds are deterministic), never the tampered state.
    type Tamper<'a> = Box<dyn Fn(&ImageCatalog) + 'a>;
    let repo2 = repo.clone();
    let (d8c, d11c) = (d8.clone(), d11.clone());
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "signature tag deleted",
            Box::new({
                let (repo, d11) = (repo2.clone(), d11c.clone());
                move |cat| {
                    let key = format!("{repo}:{}", sig_tag(&d11));
                    assert!(cat.store().delete_ref("oci-tag", &key).unwrap().is_some());
                }
            }),
        ),
        (
            "signature tag names another index's signature",
            Box::new({
                let (repo, d11, d8) = (repo2.clone(), d11c.clone(), d8c.clone());
                move |cat| {
                    let other = sig_of(cat, &d8);
                    cat.set_tag(&repo, &sig_tag(&d11), &other).unwrap();
                }
            }),
        ),
        (
            "forged signature",
            Box::new({
                let (repo, d11, d8c) = (repo2.clone(), d11c.clone(), d8c.clone());
                move |cat| {
                    let sig = sig_of(cat, &d11);
                    let bytes = futures_read(cat.store(), &sig);
                    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    let a =
                        &mut json["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"];
                    // A valid signature of something else (the v1.8.4 index's payload).
                    let other: serde_json::Value =
                        serde_json::from_slice(&futures_read(cat.store(), &sig_of(cat, &d8c)))
                            .unwrap();
                    *a = other["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"]
                        .clone();
                    let forged = serde_json::to_vec(&json).unwrap();
                    let forged = futures_put(cat, &repo, &forged);
                    cat.set_tag(&repo, &sig_tag(&d11), &forged).unwrap();
                }
            }),
        ),
        (
            "version tag repointed at another version's signed index",
            Box::new({
                let (repo, d8) = (repo2.clone(), d8c.clone());
                move |cat| cat.set_tag(&repo, "v1.11.6", &digest(&d8)).unwrap()
            }),
        ),
        (
            "version tag repointed at an unsigned manifest",
            Box::new({
                let repo = repo2.clone();
                let d11 = d11c.clone();
                move |cat| {
                    let sig = sig_of(cat, &d11);
                    cat.set_tag(&repo, "v1.11.6", &sig).unwrap()
                }
            }),
        ),
    ];
    for (what, tamper) in cases {
        let cat = catalog(&data);
        tamper(&cat);
        close(cat).await;
        let mut server = Daemon::start(&data, work.path(), &ARGS);
        let (status, served, index) = get_manifest(&format!("{}/v1.11.6", base(&server))).await;
        assert_eq!(status, 200, "{what}");
        assert_eq!(served, d11, "{what}: the v1.11.6 index, rebuilt");
        assert_eq!(
            index["mediaType"],
            media::OCI_INDEX,
            "{what}: an index, not another manifest"
        );
        assert!(
            server.log_text().contains("rebuilding"),
            "{what}: rebuilt\n{}",
            server.log_text()
        );
        // Re-signed: the signature tag is served and names the index.
        let (status, _, sig) = get_manifest(&format!("{}/{}", base(&server), sig_tag(&d11))).await;
        assert_eq!(status, 200, "{what}");
        assert_eq!(sig["subject"]["digest"], d11.as_str(), "{what}");
        // The other version is untouched.
        let (status, served, _) = get_manifest(&format!("{}/v1.8.4", base(&server))).await;
        assert_eq!((status, served.as_str()), (200, d8.as_str()), "{what}");
        server.stop();
        let cat = catalog(&data);
        assert_eq!(
            cat.tag(&repo, "v1.11.6").unwrap().unwrap().0,
            digest(&d11),
            "{what}: the tag is right again"
        );
        close(cat).await;
    }
}

/// The signature manifest of `digest` in `repo`.
fn sig_in(cat: &ImageCatalog, repo: &ImageName, digest: &str) -> Digest {
    cat.tag(repo, &sig_tag(digest)).unwrap().unwrap().0
}

/// Reads a blob synchronously (inside a closure run on the test's runtime thread).
fn futures_read(store: &Store, d: &Digest) -> Vec<u8> {
    let store = store.clone();
    let d = *d;
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(store.read_bytes(&d))
            .unwrap()
    })
    .join()
    .unwrap()
}

/// Stores a manifest in the catalog under `repo` synchronously.
fn futures_put(cat: &ImageCatalog, repo: &ImageName, bytes: &[u8]) -> Digest {
    let (cat, repo, bytes) = (cat.clone(), repo.clone(), bytes.to_vec());
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(cat.put_manifest(&repo, &bytes, Some(media::OCI_MANIFEST)))
            .unwrap()
            .0
    })
    .join()
    .unwrap()
}

/// The layers of the linux/amd64 image of an installer index.
async fn amd64_manifest(url: &str, index: &serde_json::Value) -> (String, serde_json::Value) {
    let child = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, manifest) = get_manifest(&format!("{url}/{child}")).await;
    assert_eq!(status, 200);
    (child, manifest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_repositories_blobs_and_manifests_and_odd_references_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let (data, _layout, release) = data_dir(work.path()).await;
    let server = Daemon::start(&data, work.path(), &ARGS);
    let a = support::post_schematic(&server.url, "customization: {}").await;
    let b = support::post_schematic(
        &server.url,
        "customization:\n  extraKernelArgs: [fault.b=1]\n",
    )
    .await;
    // Two new schematics pulled at once: both built, different indexes.
    let ua = format!("{}/v2/metal-installer/{a}/manifests", server.url);
    let ub = format!("{}/v2/metal-installer/{b}/manifests", server.url);
    let (ta, tb) = (format!("{ua}/v1.11.6"), format!("{ub}/v1.11.6"));
    let (ra, rb) = tokio::join!(get_manifest(&ta), get_manifest(&tb));
    assert_eq!((ra.0, rb.0), (200, 200));
    assert_ne!(ra.1, rb.1);
    let (a_child, a_manifest) = amd64_manifest(&ua, &ra.2).await;
    let (b_child, b_manifest) = amd64_manifest(&ub, &rb.2).await;
    let blobs_a = format!("{}/v2/metal-installer/{a}/blobs", server.url);

    // Served: A's own blobs, including the base layer both share.
    for layer in a_manifest["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        let r = client()
            .head(format!("{blobs_a}/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{d}");
    }
    let shared = b_manifest["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(shared, a_manifest["layers"][0]["digest"].as_str().unwrap());

    // Not part of A: B's artifacts layer and config, the imager's layer (in the store),
    // B's manifests (as blobs and as manifests), an unknown digest.
    let v = release.version("v1.11.6").unwrap();
    let imager_manifest = release.image(&v.imager).unwrap().manifests["amd64"];
    let imager_layer = {
        let path = release
            .layout
            .join("blobs/sha256")
            .join(imager_manifest.hex());
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        m["layers"][0]["digest"].as_str().unwrap().to_string()
    };
    let foreign = [
        b_manifest["layers"][1]["digest"]
            .as_str()
            .unwrap()
            .to_string(),
        b_manifest["config"]["digest"].as_str().unwrap().to_string(),
        imager_layer,
        imager_manifest.to_string(),
        rb.1.clone(),
        b_child.clone(),
        format!("sha256:{}", "a".repeat(64)),
    ];
    for d in &foreign {
        assert_oci_404(&format!("{blobs_a}/{d}"), "BLOB_UNKNOWN").await;
    }
    for d in [&rb.1, &b_child, &imager_manifest.to_string()] {
        assert_oci_404(&format!("{ua}/{d}"), "MANIFEST_UNKNOWN").await;
    }
    // B's signature tag is not A's; an unknown digest's signature tag is unknown.
    assert_oci_404(&format!("{ua}/{}", sig_tag(&rb.1)), "MANIFEST_UNKNOWN").await;
    assert_oci_404(
        &format!("{ua}/sha256-{}.sig", "0".repeat(64)),
        "MANIFEST_UNKNOWN",
    )
    .await;
    // A's own manifests by digest are served.
    assert_eq!(get_manifest(&format!("{ua}/{a_child}")).await.0, 200);
    assert_eq!(
        get_manifest(&format!("{ua}/{}", sig_tag(&ra.1))).await.0,
        200
    );

    // Odd references: 4xx, never a 5xx, over raw HTTP (no client-side normalisation).
    let long = "a".repeat(10_000);
    let prefix = format!("/v2/metal-installer/{a}");
    let odd = [
        format!("{prefix}/manifests/v{long}"),
        format!("{prefix}/manifests/{long}"),
        format!("{prefix}/manifests/sha256-{long}.sig"),
        format!("{prefix}/manifests/sha256:{long}"),
        format!("{prefix}/manifests/%00"),
        format!("{prefix}/manifests/v1.11.6%00"),
        format!("{prefix}/manifests/sha256-%00.sig"),
        format!("{prefix}/manifests/a%00b"),
        format!("{prefix}/manifests/%ff%fe"),
        format!("{prefix}/manifests/.."),
        format!("{prefix}/manifests/v1.11.6/.."),
        format!("{prefix}/manifests/%2e%2e"),
        format!("{prefix}/manifests/..%2f..%2fv1.11.6"),
        format!("{prefix}/blobs/%00"),
        format!("{prefix}/blobs/{long}"),
        format!("{prefix}/blobs/sha256:{long}"),
        format!("{prefix}/blobs/.."),
        format!("{prefix}/referrers/%00"),
        format!("{prefix}/referrers/sha256:{long}"),
        format!("/v2/{long}-installer/{a}/manifests/v1.11.6"),
        format!("/v2/%00-installer/{a}/manifests/v1.11.6"),
    ];
    for path in &odd {
        let (status, body) = support::raw_get(server.addr, path).await;
        let shown: String = path.chars().take(120).collect();
        assert!(
            (400..500).contains(&status),
            "{shown}: {status} {}",
            body.chars().take(300).collect::<String>()
        );
    }
    // Still serving.
    assert_eq!(get_manifest(&format!("{ua}/v1.11.6")).await.1, ra.1);
    assert!(
        !server.log_text().contains("ERROR"),
        "no server error logged:\n{}",
        server.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_client_build_budget_answers_429_for_installers() {
    let work = tempfile::tempdir().unwrap();
    let (data, _layout, _release) = data_dir(work.path()).await;
    let args = [
        "--offline",
        "--build-per-client-burst",
        "1",
        "--build-per-client-per-minute",
        "1",
    ];
    let mut server = Daemon::start(&data, work.path(), &args);
    let a = support::post_schematic(&server.url, "customization: {}").await;
    let b =
        support::post_schematic(&server.url, "customization:\n  extraKernelArgs: [x=1]\n").await;
    // One new installer is one new build for its client, whatever it is made of.
    let url = |id: &str, v: &str| format!("{}/v2/metal-installer/{id}/manifests/{v}", server.url);
    let (status, digest, _) = get_manifest(&url(&a, "v1.8.4")).await;
    assert_eq!(status, 200, "the first new installer fits a budget of one");
    // Cached: free.
    for _ in 0..3 {
        let (status, again, _) = get_manifest(&url(&a, "v1.8.4")).await;
        assert_eq!((status, again.as_str()), (200, digest.as_str()));
    }
    // The next new one is over the budget: 429, Retry-After, an OCI error document.
    for v in ["v1.11.6", "v1.8.4"] {
        let id = if v == "v1.8.4" { &b } else { &a };
        let r = client().get(url(id, v)).send().await.unwrap();
        assert_eq!(r.status(), 429, "{v}");
        assert!(
            r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 0
        );
        assert_eq!(r.headers()["content-type"], "application/json");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS", "{body}");
    }
    // HEAD too (a HEAD starts builds).
    let r = client().head(url(&b, "v1.11.6")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    // Nothing was built for the refused ones: no tag.
    server.stop();
    let cat = catalog(&data);
    assert!(cat.tag(&repo_name(&b), "v1.8.4").unwrap().is_none());
    assert!(cat.tag(&repo_name(&a), "v1.11.6").unwrap().is_none());
    assert!(cat.tag(&repo_name(&a), "v1.8.4").unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_gc_keeps_a_built_installer_pullable() {
    if !have("skopeo") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (data, _layout, _release) = data_dir(work.path()).await;
    let mut server = Daemon::start(&data, work.path(), &ARGS);
    let id = support::post_schematic(
        &server.url,
        "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/gvisor]\n",
    )
    .await;
    let mut built = Vec::new();
    for v in ["v1.8.4", "v1.11.6"] {
        let (status, d, _) = get_manifest(&format!(
            "{}/v2/metal-installer/{id}/manifests/{v}",
            server.url
        ))
        .await;
        assert_eq!(status, 200);
        built.push((v, d));
    }
    server.stop();

    // An unreferenced blob goes, so GC really ran.
    let junk = {
        let store = Store::open(&data).unwrap();
        let d = store.put_bytes(b"junk nothing names").await.unwrap();
        store.flush().await.unwrap();
        d
    };
    let out = support::fault::bin()
        .args(["store", "gc", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("gc: {}", String::from_utf8_lossy(&out.stdout).trim());

    // Everything a tag reaches is still stored: signatures, manifests, configs, layers.
    {
        let cat = catalog(&data);
        assert!(!cat.store().contains(&junk), "gc ran");
        let repo = repo_name(&id);
        for (v, d) in &built {
            let index = cat.tag(&repo, v).unwrap().unwrap().0;
            assert_eq!(&index.to_string(), d);
            let sig = cat.tag(&repo, &sig_tag(d)).unwrap().unwrap().0;
            for root in [index, sig] {
                let closure = cat.closure(&root).unwrap();
                assert!(closure.len() > 2, "{v}: {closure:?}");
                for blob in closure {
                    assert!(cat.store().contains(&blob), "{v}: {blob} collected");
                }
            }
        }
        close(cat).await;
    }
    let out = support::fault::bin()
        .args(["store", "verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Pulled whole after a restart, served from what GC kept (same digests, no rebuild).
    let server = Daemon::start(&data, work.path(), &ARGS);
    let host = server.url.trim_start_matches("http://").to_string();
    for (v, d) in &built {
        let dir = tempfile::tempdir().unwrap();
        let src = format!("docker://{host}/metal-installer/{id}:{v}");
        let dst = format!("oci:{}:i", dir.path().join("oci").display());
        tokio::task::spawn_blocking(move || {
            skopeo_ok(&["copy", "--all", "--src-tls-verify=false", &src, &dst])
        })
        .await
        .unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("oci/index.json")).unwrap())
                .unwrap();
        assert_eq!(index["manifests"][0]["digest"], d.as_str());
    }
    assert!(
        !server.log_text().contains("rebuilding"),
        "served what GC kept:\n{}",
        server.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_layer_is_not_served_and_the_next_pull_rebuilds_it() {
    let work = tempfile::tempdir().unwrap();
    let (data, _layout, _release) = data_dir(work.path()).await;
    let server = Daemon::start(&data, work.path(), &ARGS);
    let id = support::post_schematic(&server.url, "customization: {}").await;
    let url = format!("{}/v2/metal-installer/{id}/manifests", server.url);
    let (status, index, index_json) = get_manifest(&format!("{url}/v1.11.6")).await;
    assert_eq!(status, 200);
    let (_, manifest) = amd64_manifest(&url, &index_json).await;
    let layer = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob_url = format!("{}/v2/metal-installer/{id}/blobs/{layer}", server.url);
    let good = client()
        .get(&blob_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    // One byte flipped on disk (size kept): found on the next read, quarantined.
    {
        use std::os::unix::fs::FileExt;
        let path = data
            .join("blobs/sha256")
            .join(layer.strip_prefix("sha256:").unwrap());
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 100).unwrap();
        f.write_all_at(&[b[0] ^ 1], 100).unwrap();
    }
    assert_oci_404(&blob_url, "BLOB_UNKNOWN").await;
    // The tag no longer verifies whole: rebuilt to the same digest, the layer served again.
    let (status, again, _) = get_manifest(&format!("{url}/v1.11.6")).await;
    assert_eq!((status, again.as_str()), (200, index.as_str()));
    let r = client().get(&blob_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == good, "the same layer, rebuilt");
    assert!(
        server.log_text().contains("missing from the store"),
        "{}",
        server.log_text()
    );
    // Corruption is logged by the store; no request failed with a 5xx.
    assert!(
        !server.log_text().contains("status=5"),
        "{}",
        server.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_manifest_or_signature_is_a_404_until_the_tag_rebuilds_it() {
    let work = tempfile::tempdir().unwrap();
    let (data, _layout, _release) = data_dir(work.path()).await;
    let server = Daemon::start(&data, work.path(), &ARGS);
    let id = support::post_schematic(&server.url, "customization: {}").await;
    let url = format!("{}/v2/metal-installer/{id}/manifests", server.url);
    let (status, index, index_json) = get_manifest(&format!("{url}/v1.11.6")).await;
    assert_eq!(status, 200);
    let (child, _) = amd64_manifest(&url, &index_json).await;
    let sig_tag = format!("sha256-{}.sig", index.strip_prefix("sha256:").unwrap());
    let (status, sig, _) = get_manifest(&format!("{url}/{sig_tag}")).await;
    assert_eq!(status, 200);
    // The per-arch manifest and the signature manifest vanish from disk.
    for digest in [&child, &sig] {
        std::fs::remove_file(
            data.join("blobs/sha256")
                .join(digest.strip_prefix("sha256:").unwrap()),
        )
        .unwrap();
    }
    assert_oci_404(&format!("{url}/{child}"), "MANIFEST_UNKNOWN").await;
    assert_oci_404(&format!("{url}/{sig_tag}"), "MANIFEST_UNKNOWN").await;
    let referrers: serde_json::Value = support::get_json(&format!(
        "{}/v2/metal-installer/{id}/referrers/{index}",
        server.url
    ))
    .await;
    assert_eq!(referrers["manifests"], serde_json::json!([]));
    // Pulling the tag rebuilds (same digests) and everything is served again.
    let (status, again, _) = get_manifest(&format!("{url}/v1.11.6")).await;
    assert_eq!((status, again.as_str()), (200, index.as_str()));
    let (status, _, _) = get_manifest(&format!("{url}/{child}")).await;
    assert_eq!(status, 200);
    let referrers: serde_json::Value = support::get_json(&format!(
        "{}/v2/metal-installer/{id}/referrers/{index}",
        server.url
    ))
    .await;
    assert_eq!(
        referrers["manifests"][0]["artifactType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(referrers["manifests"][0]["digest"], sig.as_str());
    assert!(
        !server.log_text().contains("status=5"),
        "{}",
        server.log_text()
    );
}
