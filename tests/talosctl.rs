//! talosctl downloads over HTTP on the fixture release imported offline: the list (exact bytes
//! and content type), files (bytes, headers, HEAD, Range, ETag, curl), version and name errors,
//! traversal attempts, a hostile talosctl-all image (symlinks out of the tree, directories,
//! loops), a missing image offline, and the route labels in the metrics.

mod support;

use std::collections::BTreeMap;
use std::io::Read as _;

use bootfactory::fixture::{FixtureOptions, FixtureRelease, TALOSCTL_FILES};
use bootfactory::oci::layout::{ImageConfig, LayoutReader, LayoutWriter};
use support::TestServer;

const EXTERNAL: &str = "http://factory.test:8080";

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::new()
}

/// A server on the fixture imported offline, the release and its layout (kept for reading).
async fn server_with(extra: &[(&str, &str)]) -> (TestServer, FixtureRelease, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let (layout, release) = support::import_fixture(data.path(), &FixtureOptions::default()).await;
    let mut overrides = vec![("offline", "true"), ("http.externalURL", EXTERNAL)];
    overrides.extend_from_slice(extra);
    (
        TestServer::start_in(data, &overrides).await,
        release,
        layout,
    )
}

/// The files of the fixture's `talosctl-all:v1.11.6`, read from the layout (not through the
/// server): name → bytes.
fn fixture_files(release: &FixtureRelease) -> BTreeMap<String, Vec<u8>> {
    let reference = release
        .version("v1.11.6")
        .unwrap()
        .talosctl
        .clone()
        .unwrap();
    let r = LayoutReader::open(&release.layout).unwrap();
    let image = &release.images[&reference];
    let manifest: bootfactory::oci::layout::ImageManifest =
        r.read_json(&image.manifests["amd64"]).unwrap();
    let mut out = BTreeMap::new();
    for layer in &manifest.layers {
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(
            r.open_blob(&layer.digest).unwrap(),
        ));
        for e in tar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(name, data);
        }
    }
    out
}

async fn get(url: &str) -> (u16, String, String) {
    let r = client().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_files_from_the_imported_image() {
    let (server, release, _layout) = server_with(&[]).await;
    let files = fixture_files(&release);
    assert_eq!(
        files.keys().map(String::as_str).collect::<Vec<_>>(),
        TALOSCTL_FILES
    );

    // The list: exact bytes (Go's encoder: compact, trailing newline), application/json.
    let mut want = String::from("[");
    for (i, name) in TALOSCTL_FILES.iter().enumerate() {
        if i > 0 {
            want.push(',');
        }
        want.push_str(&format!("\"{EXTERNAL}/talosctl/v1.11.6/{name}\""));
    }
    want.push_str("]\n");
    for version in ["v1.11.6", "1.11.6"] {
        let (status, ct, body) = get(&format!("{}/talosctl/{version}", server.url)).await;
        assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
        assert_eq!(body, want);
    }
    // Below 1.11.0-alpha.3: an empty list, no image needed.
    let (status, ct, body) = get(&format!("{}/talosctl/v1.8.4", server.url)).await;
    assert_eq!(
        (status, ct.as_str(), body.as_str()),
        (200, "application/json", "[]\n")
    );
    // Unserved and malformed versions, as the other version routes.
    let (status, _, body) = get(&format!("{}/talosctl/v1.9.0", server.url)).await;
    assert_eq!(
        (status, body.as_str()),
        (404, "version 1.9.0 is not available\n")
    );
    let (status, _, body) = get(&format!("{}/talosctl/latest", server.url)).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = get(&format!(
        "{}/version/latest/extensions/official",
        server.url
    ))
    .await;
    assert_eq!(status, 400, "same answer as the catalog route");

    // Every listed URL (rebased onto the test server) serves the fixture's bytes.
    let listed: Vec<String> = serde_json::from_str(&want).unwrap();
    for url in &listed {
        let name = url.rsplit('/').next().unwrap();
        let r = client()
            .get(url.replace(EXTERNAL, &server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        let h = r.headers().clone();
        assert_eq!(h["content-type"], "application/octet-stream", "{name}");
        assert_eq!(
            h["content-disposition"],
            format!("attachment; filename=\"{name}\"").as_str()
        );
        assert_eq!(h["content-length"], files[name].len().to_string().as_str());
        assert_eq!(h["accept-ranges"], "bytes");
        assert!(h.contains_key("etag"));
        assert_eq!(r.bytes().await.unwrap(), files[name], "{name}");
    }

    // The linux/amd64 stand-in names its version; HEAD, Range and ETag.
    let url = format!("{}/talosctl/v1.11.6/talosctl-linux-amd64", server.url);
    let script = &files["talosctl-linux-amd64"];
    assert!(
        String::from_utf8_lossy(script)
            .contains("echo \"talosctl v1.11.6 linux/amd64 (bootfactory fixture)\"")
    );
    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        script.len().to_string().as_str()
    );
    let etag = head.headers()["etag"].clone();
    assert!(head.bytes().await.unwrap().is_empty());
    let part = client()
        .get(&url)
        .header("range", "bytes=2-9")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 2-9/{}", script.len()).as_str()
    );
    assert_eq!(part.bytes().await.unwrap(), script[2..10]);
    let unsat = client()
        .get(&url)
        .header("range", "bytes=100000-")
        .send()
        .await
        .unwrap();
    assert_eq!(unsat.status(), 416);
    let cached = client()
        .get(&url)
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    // Another file has another tag.
    let other = client()
        .head(format!(
            "{}/talosctl/v1.11.6/talosctl-linux-arm64",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_ne!(other.headers()["etag"], etag);

    // A real client: curl saves the same bytes and honours the disposition.
    if support::tools::have("curl") {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("curl")
            .current_dir(dir.path())
            .args(["-sS", "-f", "-O", "-J", "-w", "%{content_type}"])
            .arg(format!(
                "{}/talosctl/1.11.6/talosctl-windows-amd64.exe",
                server.url
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, b"application/octet-stream");
        assert_eq!(
            std::fs::read(dir.path().join("talosctl-windows-amd64.exe")).unwrap(),
            files["talosctl-windows-amd64.exe"]
        );
    }

    // An unknown file: 404 with upstream's stat text, no host path.
    let (status, ct, body) = get(&format!(
        "{}/talosctl/v1.11.6/talosctl-plan9-amd64",
        server.url
    ))
    .await;
    assert_eq!((status, ct.as_str()), (404, "text/plain; charset=utf-8"));
    assert_eq!(
        body,
        "stat talosctl-all-v1.11.6/talosctl-plan9-amd64: no such file or directory\n"
    );
    // A version without downloads has no files (and fetches no image).
    let (status, _, body) = get(&format!(
        "{}/talosctl/v1.8.4/talosctl-linux-amd64",
        server.url
    ))
    .await;
    assert_eq!(
        (status, body.as_str()),
        (
            404,
            "stat talosctl-all-v1.8.4/talosctl-linux-amd64: no such file or directory\n"
        )
    );
    let (status, _, body) = get(&format!(
        "{}/talosctl/v1.9.0/talosctl-linux-amd64",
        server.url
    ))
    .await;
    assert_eq!(
        (status, body.as_str()),
        (404, "version 1.9.0 is not available\n")
    );
    let (status, _, _) = get(&format!("{}/talosctl/v1/talosctl-linux-amd64", server.url)).await;
    assert_eq!(status, 400);

    // The routes are labelled by pattern in the metrics.
    let (_, _, metrics) = get(&format!("{}/metrics", server.url)).await;
    assert!(
        metrics.contains("handler=\"/talosctl/{version}\""),
        "{metrics}"
    );
    assert!(metrics.contains("handler=\"/talosctl/{version}/{path}\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_and_hostile_names_are_refused() {
    let (server, _release, _layout) = server_with(&[]).await;
    let long = "a".repeat(300);
    let huge = "talosctl-".repeat(400);
    for (path, want) in [
        ("/talosctl/v1.11.6/..", 400),
        ("/talosctl/v1.11.6/.", 400),
        ("/talosctl/v1.11.6/..%2f..%2f..%2fetc%2fpasswd", 400),
        ("/talosctl/v1.11.6/%2e%2e%2fetc%2fpasswd", 400),
        ("/talosctl/v1.11.6/%2fetc%2fpasswd", 400),
        ("/talosctl/v1.11.6/..%5c..%5cetc%5cpasswd", 400),
        ("/talosctl/v1.11.6/talosctl-linux-amd64%00", 400),
        ("/talosctl/v1.11.6/talosctl-linux-amd64%0a", 400),
        ("/talosctl/v1.11.6/talosctl%20linux", 400),
        ("/talosctl/v1.11.6/%ff%fe", 400),
        (&format!("/talosctl/v1.11.6/{long}"), 400),
        (&format!("/talosctl/v1.11.6/{huge}"), 400),
        // Not one segment: no route.
        ("/talosctl/v1.11.6/../../etc/passwd", 404),
        ("/talosctl/v1.11.6/a/b", 404),
        ("/talosctl/v1.11.6/", 404),
    ] {
        let (status, body) = support::raw_get(server.addr, path).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(!body.contains("root:"), "{path}");
        assert!(body.len() < 200, "{path}: {body}");
        assert!(
            !body.contains(&server.data.path().display().to_string()),
            "{path}: {body}"
        );
    }
    let (status, body) =
        support::raw_get(server.addr, "/talosctl/v1.11.6/..%2f..%2fetc%2fpasswd").await;
    assert_eq!(status, 400);
    assert!(
        body.starts_with("invalid talosctl file name \"../../etc/passwd\""),
        "{body}"
    );
    // The server still answers.
    let (status, _) = support::raw_get(server.addr, "/talosctl/v1.11.6/talosctl-linux-arm64").await;
    assert_eq!(status, 200);
}

/// A hostile `talosctl-all`: symlinks out of the tree and to the host, a link loop, a
/// directory, a link to a file inside; only the last is listed and served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_image_serves_nothing_outside_its_tree() {
    let data = tempfile::tempdir().unwrap();
    let (_fixture_layout, _release) =
        support::import_fixture(data.path(), &FixtureOptions::default()).await;

    // The image, written by hand into a second layout and imported on top.
    let layout = tempfile::tempdir().unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut entry = |path: &str, kind: tar::EntryType, target: Option<&str>, body: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_size(body.len() as u64);
        if let Some(t) = target {
            h.set_link_name(t).unwrap();
        }
        h.set_path(path).unwrap();
        h.set_cksum();
        tar.append(&h, body).unwrap();
    };
    use tar::EntryType::{Directory, Regular, Symlink};
    entry("bin/", Directory, None, b"");
    entry("bin/talosctl", Regular, None, b"inside the tree\n");
    entry("talosctl-darwin-arm64", Symlink, Some("bin/talosctl"), b"");
    entry("talosctl-linux-amd64", Symlink, Some("/etc/passwd"), b"");
    entry(
        "talosctl-linux-arm64",
        Symlink,
        Some("../../../../../../../../etc/passwd"),
        b"",
    );
    entry(
        "talosctl-linux-armv7",
        Symlink,
        Some("talosctl-linux-armv7"),
        b"",
    );
    entry("talosctl-freebsd-amd64/", Directory, None, b"");
    entry("talosctl-windows-amd64.exe", Symlink, Some("/"), b"");
    entry(
        "cache-signing-key.pem",
        Symlink,
        Some("../../../cache-signing-key.pem"),
        b"",
    );
    let tar = tar.into_inner().unwrap();
    let mut w = LayoutWriter::create(layout.path()).unwrap();
    let layer = w.put_layer(&tar, 6).unwrap();
    let manifest = w
        .put_image(
            &ImageConfig::new("amd64", "linux"),
            &[layer],
            BTreeMap::new(),
        )
        .unwrap();
    let index = w.put_index(&[manifest], BTreeMap::new()).unwrap();
    w.add_ref(&index, "ghcr.io/siderolabs/talosctl-evil:v1.11.6");
    w.finish().unwrap();
    {
        use bootfactory::oci::bundle::{self, NoProgress};
        let store = bootfactory::store::Store::open(data.path()).unwrap();
        let catalog = bootfactory::oci::ImageCatalog::new(store.clone()).unwrap();
        let report = bundle::import(&catalog, layout.path(), None, &NoProgress)
            .await
            .unwrap();
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        store.flush().await.unwrap();
    }
    let server = TestServer::start_in(
        data,
        &[
            ("offline", "true"),
            ("http.externalURL", EXTERNAL),
            (
                "artifacts.core.components.talosctl",
                "siderolabs/talosctl-evil",
            ),
        ],
    )
    .await;

    let (status, _, body) = get(&format!("{}/talosctl/v1.11.6", server.url)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!("[\"{EXTERNAL}/talosctl/v1.11.6/talosctl-darwin-arm64\"]\n")
    );
    let (status, _, body) = get(&format!(
        "{}/talosctl/v1.11.6/talosctl-darwin-arm64",
        server.url
    ))
    .await;
    assert_eq!((status, body.as_str()), (200, "inside the tree\n"));
    for name in [
        "talosctl-linux-amd64",
        "talosctl-linux-arm64",
        "talosctl-linux-armv7",
        "talosctl-freebsd-amd64",
        "talosctl-windows-amd64.exe",
        "cache-signing-key.pem",
    ] {
        let (status, _, body) = get(&format!("{}/talosctl/v1.11.6/{name}", server.url)).await;
        assert_eq!(
            (status, body),
            (
                404,
                format!("stat talosctl-all-v1.11.6/{name}: no such file or directory\n")
            ),
            "{name}"
        );
    }
}

/// Offline without the image: 503 naming the image and the import to run, as the other
/// factory routes answer for a missing image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_offline_names_the_import() {
    let (server, _release, _layout) = server_with(&[(
        "artifacts.core.components.talosctl",
        "siderolabs/talosctl-gone",
    )])
    .await;
    for path in [
        "/talosctl/v1.11.6",
        "/talosctl/v1.11.6/talosctl-linux-amd64",
    ] {
        let (status, _, body) = get(&format!("{}{path}", server.url)).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(
            body.contains("ghcr.io/siderolabs/talosctl-gone:v1.11.6"),
            "{path}: {body}"
        );
        assert!(body.contains("bootfactory mirror import"), "{path}: {body}");
    }
    // Versions without downloads need no image.
    let (status, _, body) = get(&format!("{}/talosctl/v1.8.4", server.url)).await;
    assert_eq!((status, body.as_str()), (200, "[]\n"));
}
