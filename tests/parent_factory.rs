//! Parent factories (`factory.parent`, README "Parent factories and a shared build cache") on
//! the real binary: a parent A with the fixture release imported, and children that ask it
//! before building.
//!
//! - A child B with an empty store, offline, verifying A's signatures: serves kernel,
//!   initramfs, cmdline, the UKI, an sd-boot `.raw.zst` disk image and the `/pxe` script of
//!   A's builds, byte for byte A's, without building anything (no `asset built`, no build
//!   metrics); concurrent requests for one missing asset share one fetch; the second request
//!   is a cache hit.
//! - A stopped: a child without the release answers 502 naming the parent; one with the
//!   release builds locally; `parentFallback: fail` answers 502 even with the release.
//! - A hostile parent (a small HTTP server in this test) whose checksum, signature or
//!   schematic ID does not match: the bytes are rejected and never stored or served; the same
//!   server with a matching checksum is accepted (the check can pass).
//! - A shared cache (`cache.oci.repository`) on Debian's `docker-registry` between two
//!   appliances: the second serves the first's builds without building; an entry whose tag
//!   names another layer, or whose layer is corrupted in the registry's storage, is rejected
//!   and built locally.
//! - Installer images through the parent's registry (`skopeo copy --all` from the child).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bootfactory::fixture::FixtureOptions;
use sha2::Digest as _;
use support::fault::Daemon;
use support::{metric, post_schematic};

const SCHEMATIC: &str =
    "customization:\n  bootloader: sd-boot\n  extraKernelArgs:\n    - parent.test=1\n";

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

async fn get(url: &str) -> (u16, Vec<u8>) {
    let resp = client().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

/// How many times `needle` occurs in the daemon's log.
fn log_count(d: &Daemon, needle: &str) -> usize {
    d.log_text().matches(needle).count()
}

/// `bootfactory_parent_fetches_total{result="<result>"}` on `url`.
async fn parent_fetches(url: &str, result: &str) -> f64 {
    let text = client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("bootfactory_parent_fetches_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// Writes the parent's public key (its `/oci/cosign/signing-key.pub`) to `path`.
async fn save_public_key(parent: &str, path: &Path) {
    let (status, pem) = get(&format!("{parent}/oci/cosign/signing-key.pub")).await;
    assert_eq!(status, 200);
    std::fs::write(path, pem).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_serves_its_parents_build_without_building() {
    let work = tempfile::tempdir().unwrap();
    let data_a = work.path().join("a");
    let (_layout, _release) = support::import_fixture(&data_a, &FixtureOptions::default()).await;
    let mut a = Daemon::start(&data_a, work.path(), &["--offline"]);
    let key = work.path().join("parent.pub");
    save_public_key(&a.url, &key).await;

    let b = Daemon::start(
        &work.path().join("b"),
        work.path(),
        &[
            "--offline",
            "--factory-parent",
            &a.url,
            "--factory-parent-verify",
            "signature",
            "--factory-parent-public-key-file",
            key.to_str().unwrap(),
        ],
    );
    // The child knows the schematic; the parent learns it from the child.
    let id = post_schematic(&b.url, SCHEMATIC).await;
    let paths = [
        "kernel-amd64",
        "initramfs-amd64.xz",
        "cmdline-metal-amd64",
        "metal-amd64-uki.efi",
        "metal-amd64.raw.zst",
    ];
    for path in paths {
        let (status, from_b) = get(&format!("{}/image/{id}/v1.11.6/{path}", b.url)).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&from_b));
        let (status, from_a) = get(&format!("{}/image/{id}/v1.11.6/{path}", a.url)).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            from_a == from_b,
            "{path}: B's bytes are not A's ({} vs {} bytes)",
            from_b.len(),
            from_a.len()
        );
        // B's checksum file is of the same bytes.
        let (status, line) = get(&format!("{}/image/{id}/v1.11.6/{path}.sha256", b.url)).await;
        assert_eq!(status, 200);
        let hex = hex::encode(sha2::Sha256::digest(&from_a));
        assert!(String::from_utf8_lossy(&line).starts_with(&hex), "{path}");
    }
    assert_eq!(
        parent_fetches(&b.url, "fetched").await,
        paths.len() as f64,
        "{}",
        b.log_text()
    );
    assert_eq!(log_count(&b, "asset built"), 0, "{}", b.log_text());
    assert_eq!(
        metric(&b.url, "image_factory_assets_built_total").await,
        None,
        "B counted a build"
    );
    assert!(log_count(&a, "asset built") >= paths.len(), "A built them");

    // Cached now: served again without asking A.
    let (status, _) = get(&format!("{}/image/{id}/v1.11.6/kernel-amd64", b.url)).await;
    assert_eq!(status, 200);
    assert_eq!(parent_fetches(&b.url, "fetched").await, paths.len() as f64);

    // The /pxe script of the child points at the child; its cmdline came from the parent.
    let (status, script) = get(&format!("{}/pxe/{id}/v1.11.6/metal-amd64", b.url)).await;
    let script = String::from_utf8(script).unwrap();
    assert_eq!(status, 200, "{script}");
    assert!(script.contains(&format!("{}/image/{id}/v1.11.6/kernel-amd64", b.url)));
    assert!(script.contains("parent.test=1"), "{script}");

    // An assignment and a warm-up on the child are checked like its /pxe: what its own store
    // lacks (it has no release at all) comes from the parent, so neither is refused.
    let token = std::fs::read_to_string(work.path().join("b/admin-token")).unwrap();
    let body = serde_json::json!({"schematic": id, "version": "v1.11.6"});
    for (method, path) in [
        (reqwest::Method::PUT, "/api/v1/machines/52:54:00:00:00:01"),
        (reqwest::Method::POST, "/api/v1/warm"),
    ] {
        let r = client()
            .request(method, format!("{}{path}", b.url))
            .bearer_auth(token.trim())
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(status, 200, "{path}: {}", r.text().await.unwrap());
    }
    assert_eq!(
        parent_fetches(&b.url, "fetched").await,
        paths.len() as f64,
        "the warm-up found kernel, initramfs and cmdline cached"
    );

    // Six concurrent requests for an asset neither has yet: one fetch (A builds once).
    let built_before = log_count(&a, "asset built");
    let url = format!("{}/image/{id}/v1.11.6/metal-amd64.raw.xz", b.url);
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200);
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        parent_fetches(&b.url, "fetched").await,
        paths.len() as f64 + 1.0,
        "one fetch for six requests"
    );
    assert_eq!(log_count(&a, "asset built"), built_before + 1);

    // The parent goes away: a new asset cannot come from it, and B has no release: a 502
    // naming the parent, quickly again for the next request (the parent is marked down).
    a.stop();
    let (status, body) = get(&format!("{}/image/{id}/v1.11.6/kernel-arm64", b.url)).await;
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains(&a.url), "{body}");
    assert!(body.contains("cannot build it"), "{body}");
    let started = Instant::now();
    let (status, body) = get(&format!("{}/image/{id}/v1.11.6/initramfs-arm64.xz", b.url)).await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("not asking again"));
    assert!(started.elapsed() < Duration::from_secs(5));
    // What B already has is still served.
    let (status, _) = get(&format!("{}/image/{id}/v1.11.6/metal-amd64.raw.zst", b.url)).await;
    assert_eq!(status, 200);
    assert_eq!(log_count(&b, "asset built"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_that_is_down_means_a_local_build_or_a_clear_502() {
    let work = tempfile::tempdir().unwrap();
    // A parent that was there and is gone: its port, nothing listening.
    let gone = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let data = work.path().join("c");
    let (_layout, _release) = support::import_fixture(&data, &FixtureOptions::default()).await;
    let c = Daemon::start(
        &data,
        work.path(),
        &["--offline", "--factory-parent", &gone],
    );
    let id = post_schematic(&c.url, SCHEMATIC).await;
    let (status, body) = get(&format!("{}/image/{id}/v1.11.6/kernel-amd64", c.url)).await;
    assert_eq!(
        status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&body),
        c.log_text()
    );
    assert_eq!(log_count(&c, "asset built"), 1, "{}", c.log_text());
    assert!(c.log_text().contains("building it here"));
    assert_eq!(parent_fetches(&c.url, "unavailable").await, 1.0);
    let mut c = c;
    c.stop();

    // `parentFallback: fail`: the release is here, but the answer is the parent's.
    let d = Daemon::start(
        &data,
        work.path(),
        &[
            "--offline",
            "--factory-parent",
            &gone,
            "--factory-parent-fallback",
            "fail",
        ],
    );
    let (status, body) = get(&format!("{}/image/{id}/v1.11.6/initramfs-amd64.xz", d.url)).await;
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains(&gone) && body.contains("unavailable"),
        "{body}"
    );
    assert_eq!(log_count(&d, "asset built"), 0);
    // What the store has is served without asking.
    let (status, _) = get(&format!("{}/image/{id}/v1.11.6/kernel-amd64", d.url)).await;
    assert_eq!(status, 200);

    // No release and a parent that cannot say which versions it has: a 502 naming both.
    let e = Daemon::start(
        &work.path().join("e"),
        work.path(),
        &["--offline", "--factory-parent", &gone],
    );
    let id = post_schematic(&e.url, SCHEMATIC).await;
    let (status, body) = get(&format!("{}/image/{id}/v1.11.6/kernel-amd64", e.url)).await;
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains(&gone) && body.contains("cannot serve version v1.11.6"),
        "{body}"
    );
}

/// What the hostile parent answers.
#[derive(Clone)]
struct Hostile {
    /// The schematic ID it claims for any posted schematic.
    id: Arc<Mutex<String>>,
    /// The asset bytes it serves for every `/image/…` path.
    asset: Vec<u8>,
    /// The `.sha256` answer: status and body.
    checksum: (u16, String),
    /// The `.sig` body.
    signature: String,
    /// Asset downloads served.
    downloads: Arc<AtomicUsize>,
}

/// A minimal HTTP/1.1 server (one request per connection) playing a parent factory.
fn hostile_parent(h: Hostile) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let h = h.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_string();
                let path = parts.next().unwrap_or_default().to_string();
                let mut length = 0usize;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = header.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let (status, answer): (u16, Vec<u8>) = match (method.as_str(), path.as_str()) {
                    ("POST", "/schematics") => (
                        201,
                        format!("{{\"id\":\"{}\"}}", h.id.lock().unwrap()).into_bytes(),
                    ),
                    ("GET", "/versions") => (200, b"[\"v1.11.6\"]".to_vec()),
                    ("GET", p) if p.ends_with(".sha256") => {
                        (h.checksum.0, h.checksum.1.clone().into_bytes())
                    }
                    ("GET", p) if p.ends_with(".sig") => (200, h.signature.clone().into_bytes()),
                    ("GET", p) if p.starts_with("/image/") => {
                        h.downloads.fetch_add(1, Ordering::SeqCst);
                        (200, h.asset.clone())
                    }
                    _ => (404, b"not found\n".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    answer.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&answer);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_parents_bytes_are_rejected_and_never_stored() {
    let work = tempfile::tempdir().unwrap();
    let evil = b"not the kernel you asked for".to_vec();
    let evil_hex = hex::encode(sha2::Sha256::digest(&evil));
    let other_hex = hex::encode(sha2::Sha256::digest(b"the real kernel"));
    let start = |h: &Hostile, name: &str, args: &[&str]| {
        let url = format!("http://{}", hostile_parent(h.clone()));
        let mut all = vec!["--offline", "--factory-parent", url.as_str()];
        all.extend_from_slice(args);
        (
            Daemon::start(&work.path().join(name), work.path(), &all),
            url,
        )
    };
    let hostile = |checksum: (u16, String), signature: &str| Hostile {
        id: Arc::new(Mutex::new(String::new())),
        asset: evil.clone(),
        checksum,
        signature: signature.to_string(),
        downloads: Arc::new(AtomicUsize::new(0)),
    };

    // 1. A checksum that names other bytes: rejected, nothing stored, asked again next time.
    let h = hostile((200, format!("{other_hex}  kernel-amd64\n")), "");
    let (b, parent) = start(&h, "b1", &[]);
    let id = post_schematic(&b.url, SCHEMATIC).await;
    *h.id.lock().unwrap() = id.clone();
    let url = format!("{}/image/{id}/v1.11.6/kernel-amd64", b.url);
    for round in 1..=2 {
        let (status, body) = get(&url).await;
        let body = String::from_utf8_lossy(&body).to_string();
        assert_eq!(status, 502, "{body}");
        assert!(
            body.contains(&parent) && body.contains("rejected"),
            "{body}"
        );
        assert!(!body.contains(&String::from_utf8_lossy(&evil).to_string()));
        assert_eq!(h.downloads.load(Ordering::SeqCst), round);
    }
    assert_eq!(parent_fetches(&b.url, "rejected").await, 2.0);
    assert!(b.log_text().contains("not stored"), "{}", b.log_text());
    drop(b);
    let store = bootfactory::store::Store::open(&work.path().join("b1")).unwrap();
    assert!(store.list_refs("asset").unwrap().is_empty());
    assert!(
        store
            .list_blobs()
            .unwrap()
            .iter()
            .all(|i| i.size as usize != evil.len())
    );
    drop(store);

    // 2. Image Factory community builds answer 402 for checksums: not verified, not taken.
    let h = hostile((402, "enterprise\n".into()), "");
    let (b, _) = start(&h, "b2", &[]);
    let id = post_schematic(&b.url, SCHEMATIC).await;
    *h.id.lock().unwrap() = id.clone();
    let (status, body) = get(&format!("{}/image/{id}/v1.11.6/kernel-amd64", b.url)).await;
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HTTP 402"), "{body}");
    drop(b);

    // 3. Signature mode: a matching checksum does not help; a forged signature is refused.
    let keyfile = work.path().join("trusted.pub");
    {
        use p256::pkcs8::EncodePublicKey as _;
        let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let pem = p256::ecdsa::VerifyingKey::from(&key)
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        std::fs::write(&keyfile, pem).unwrap();
    }
    // A valid signature, by another key, of the right message.
    let forged = {
        use base64::Engine as _;
        use p256::ecdsa::signature::Signer as _;
        let other = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let sig: p256::ecdsa::Signature = other.sign(b"anything");
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    };
    let h = hostile((200, format!("{evil_hex}  kernel-amd64\n")), &forged);
    let (b, _) = start(
        &h,
        "b3",
        &[
            "--factory-parent-verify",
            "signature",
            "--factory-parent-public-key-file",
            keyfile.to_str().unwrap(),
        ],
    );
    let id = post_schematic(&b.url, SCHEMATIC).await;
    *h.id.lock().unwrap() = id.clone();
    let (status, body) = get(&format!("{}/image/{id}/v1.11.6/kernel-amd64", b.url)).await;
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("signature does not verify"), "{body}");
    drop(b);

    // 4. A parent that computes another ID for the schematic: nothing is downloaded.
    let h = hostile((200, format!("{evil_hex}  kernel-amd64\n")), "");
    *h.id.lock().unwrap() = "0".repeat(64);
    let (b, _) = start(&h, "b4", &[]);
    let id = post_schematic(&b.url, SCHEMATIC).await;
    let (status, body) = get(&format!("{}/image/{id}/v1.11.6/kernel-amd64", b.url)).await;
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("computes ID"), "{body}");
    assert_eq!(h.downloads.load(Ordering::SeqCst), 0);
    drop(b);

    // 5. The control: the same server with a checksum of what it sends is accepted (sha256
    // proves integrity, not authenticity — README "Parent factories").
    let h = hostile((200, format!("{evil_hex}  kernel-amd64\n")), "");
    let (b, _) = start(&h, "b5", &[]);
    let id = post_schematic(&b.url, SCHEMATIC).await;
    *h.id.lock().unwrap() = id.clone();
    let (status, body) = get(&format!("{}/image/{id}/v1.11.6/kernel-amd64", b.url)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, evil);
}

/// Waits until `d`'s log says `needle` at least `count` times.
fn wait_log(d: &Daemon, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while log_count(d, needle) < count {
        assert!(
            Instant::now() < deadline,
            "waiting for {count}× {needle:?}:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The tags of `repo` on the registry at `registry`.
async fn tags(registry: &str, repo: &str) -> Vec<String> {
    let list = support::get_json(&format!("{registry}/v2/{repo}/tags/list")).await;
    let mut tags: Vec<String> = list["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    tags.sort();
    tags
}

/// Uploads `bytes` as a blob of `repo` through the distribution API; returns its digest.
async fn upload_blob(registry: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
    let resp = client()
        .post(format!("{registry}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let location = if location.starts_with('/') {
        format!("{registry}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let resp = client()
        .put(format!("{location}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_oci_cache_serves_one_appliances_build_to_another() {
    if !support::tools::have("docker-registry") {
        return;
    }
    let registry = support::tools::DockerRegistry::start(None);
    let repo_path = "bootfactory/cache";
    let repository = format!("{}/{repo_path}", registry.addr);
    let work = tempfile::tempdir().unwrap();
    let cache_args = [
        "--offline",
        "--cache-oci-repository",
        &repository,
        "--cache-oci-insecure",
    ];

    let data_a = work.path().join("a");
    let (_layout_a, _) = support::import_fixture(&data_a, &FixtureOptions::default()).await;
    let a = Daemon::start(&data_a, work.path(), &cache_args);
    let key = work.path().join("a.pub");
    save_public_key(&a.url, &key).await;
    let data_b = work.path().join("b");
    let (_layout_b, _) = support::import_fixture(&data_b, &FixtureOptions::default()).await;
    let mut b_args = cache_args.to_vec();
    b_args.extend(["--cache-oci-public-key-files", key.to_str().unwrap()]);
    let b = Daemon::start(&data_b, work.path(), &b_args);
    let id = post_schematic(&a.url, SCHEMATIC).await;
    assert_eq!(post_schematic(&b.url, SCHEMATIC).await, id);

    // A builds; its builds are pushed in the background.
    let paths = ["kernel-amd64", "initramfs-amd64.xz", "cmdline-metal-amd64"];
    let mut from_a = Vec::new();
    for path in paths {
        let (status, body) = get(&format!("{}/image/{id}/v1.11.6/{path}", a.url)).await;
        assert_eq!(status, 200, "{path}");
        from_a.push(body);
    }
    wait_log(&a, "pushed to the shared cache", paths.len());
    assert_eq!(tags(&registry.url(), repo_path).await.len(), paths.len());

    // B serves them from the cache without building.
    for (path, want) in paths.iter().zip(&from_a) {
        let (status, body) = get(&format!("{}/image/{id}/v1.11.6/{path}", b.url)).await;
        assert_eq!(status, 200, "{path}");
        assert!(&body == want, "{path}: B's bytes are not A's");
    }
    assert_eq!(log_count(&b, "asset built"), 0, "{}", b.log_text());
    assert_eq!(log_count(&b, "asset fetched and verified"), paths.len());
    assert_eq!(
        metric(&b.url, "image_factory_assets_built_total").await,
        None
    );
    // Nothing B fetched is pushed back.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(log_count(&b, "pushed to the shared cache"), 0);

    // A builds the UKI; then its entry is tampered with: the tag now names a manifest whose
    // layer is other bytes (the signature, copied along, is of A's digest).
    let before = tags(&registry.url(), repo_path).await;
    let (status, uki_a) = get(&format!("{}/image/{id}/v1.11.6/metal-amd64-uki.efi", a.url)).await;
    assert_eq!(status, 200);
    wait_log(&a, "pushed to the shared cache", paths.len() + 1);
    let after = tags(&registry.url(), repo_path).await;
    let new: Vec<_> = after.iter().filter(|t| !before.contains(t)).collect();
    assert_eq!(new.len(), 1, "{before:?} → {after:?}");
    let tag = new[0];
    let manifest_url = format!("{}/v2/{repo_path}/manifests/{tag}", registry.url());
    let mut manifest: serde_json::Value = client()
        .get(&manifest_url)
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(manifest["layers"][0]["mediaType"], "application/data");
    let evil = b"MZ not the UKI".to_vec();
    let evil_digest = upload_blob(&registry.url(), repo_path, &evil).await;
    manifest["layers"][0]["digest"] = evil_digest.clone().into();
    manifest["layers"][0]["size"] = evil.len().into();
    let resp = client()
        .put(&manifest_url)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(&manifest).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    // B rejects the entry, builds the UKI itself, and serves A's bytes (reproducible builds).
    let (status, uki_b) = get(&format!("{}/image/{id}/v1.11.6/metal-amd64-uki.efi", b.url)).await;
    assert_eq!(status, 200);
    assert!(uki_b == uki_a, "B's UKI is not A's");
    assert!(
        b.log_text().contains("shared cache entry rejected"),
        "{}",
        b.log_text()
    );
    assert!(b.log_text().contains("not by a trusted key"));
    assert_eq!(log_count(&b, "asset built"), 1, "{}", b.log_text());
    // A layer corrupted in the registry's storage (same digest, other bytes) is rejected
    // too: B builds that asset itself.
    let before = tags(&registry.url(), repo_path).await;
    let (status, _) = get(&format!("{}/image/{id}/v1.11.6/cmdline-metal-arm64", a.url)).await;
    assert_eq!(status, 200);
    wait_log(&a, "pushed to the shared cache", paths.len() + 2);
    let after = tags(&registry.url(), repo_path).await;
    let tag = after.iter().find(|t| !before.contains(t)).unwrap();
    let manifest: serde_json::Value = client()
        .get(format!("{}/v2/{repo_path}/manifests/{tag}", registry.url()))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let hex = layer.trim_start_matches("sha256:");
    let data = registry.storage_dir().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let built = log_count(&b, "asset built");
    let (status, body) = get(&format!("{}/image/{id}/v1.11.6/cmdline-metal-arm64", b.url)).await;
    assert_eq!(status, 200);
    assert_ne!(body, bytes, "the corrupted bytes are not served");
    assert_eq!(log_count(&b, "asset built"), built + 1, "{}", b.log_text());
    assert_eq!(log_count(&b, "shared cache entry rejected"), 2);

    // B pushes its own build over the tampered entry; A (which trusts only itself) then
    // rejects B's entry for a new key, but its own are fine: A has them already.
    wait_log(&b, "pushed to the shared cache", 1);
    let (status, _) = get(&format!("{}/image/{id}/v1.11.6/metal-amd64-uki.efi", a.url)).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installer_image_comes_from_the_parents_registry() {
    if !support::tools::have("skopeo") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let data_a = work.path().join("a");
    let (_layout, _release) = support::import_fixture(&data_a, &FixtureOptions::default()).await;
    let a = Daemon::start(&data_a, work.path(), &["--offline"]);
    let key = work.path().join("parent.pub");
    save_public_key(&a.url, &key).await;
    let id = post_schematic(&a.url, SCHEMATIC).await;
    let b = Daemon::start(
        &work.path().join("b"),
        work.path(),
        &[
            "--offline",
            "--factory-parent",
            &a.url,
            "--factory-parent-verify",
            "signature",
            "--factory-parent-public-key-file",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(post_schematic(&b.url, SCHEMATIC).await, id);

    let pull_id = id.clone();
    let pull = move |url: &str, dir: &Path| {
        let id = &pull_id;
        let host = url.trim_start_matches("http://").to_string();
        let src = format!("docker://{host}/metal-installer/{id}:v1.11.6");
        let dst = format!("oci:{}:i", dir.join("oci").display());
        support::tools::skopeo(&["copy", "--all", "--src-tls-verify=false", &src, &dst])
    };
    let dir_b = tempfile::tempdir().unwrap();
    let out = {
        let (url, dir) = (b.url.clone(), dir_b.path().to_path_buf());
        let pull = pull.clone();
        tokio::task::spawn_blocking(move || pull(&url, &dir))
            .await
            .unwrap()
    };
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        b.log_text()
    );
    assert!(
        b.log_text()
            .contains("installer image taken from the parent")
    );
    assert_eq!(log_count(&b, "asset built"), 0, "{}", b.log_text());
    assert!(log_count(&a, "installer image built") == 1);
    // The same index as A's, signed again by B (B's own key verifies it at B).
    let index_b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir_b.path().join("oci/index.json")).unwrap())
            .unwrap();
    let (status, raw_a) = get(&format!(
        "{}/v2/metal-installer/{id}/manifests/v1.11.6",
        a.url
    ))
    .await;
    assert_eq!(status, 200);
    let digest_a = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw_a)));
    assert_eq!(index_b["manifests"][0]["digest"], digest_a.as_str());
    let (status, _) = get(&format!(
        "{}/v2/metal-installer/{id}/manifests/sha256-{}.sig",
        b.url,
        digest_a.trim_start_matches("sha256:")
    ))
    .await;
    assert_eq!(status, 200, "B signs what it took");

    // A child trusting another key refuses A's installer (and, with no release, fails).
    let other = work.path().join("other.pub");
    {
        use p256::pkcs8::EncodePublicKey as _;
        let k = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let pem = p256::ecdsa::VerifyingKey::from(&k)
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        std::fs::write(&other, pem).unwrap();
    }
    let c = Daemon::start(
        &work.path().join("c"),
        work.path(),
        &[
            "--offline",
            "--factory-parent",
            &a.url,
            "--factory-parent-verify",
            "signature",
            "--factory-parent-public-key-file",
            other.to_str().unwrap(),
        ],
    );
    assert_eq!(post_schematic(&c.url, SCHEMATIC).await, id);
    let dir_c = tempfile::tempdir().unwrap();
    let out = {
        let (url, dir) = (c.url.clone(), dir_c.path().to_path_buf());
        let pull = pull.clone();
        tokio::task::spawn_blocking(move || pull(&url, &dir))
            .await
            .unwrap()
    };
    assert!(!out.status.success());
    assert!(
        c.log_text()
            .contains("does not verify with factory.parentPublicKeyFile"),
        "{}",
        c.log_text()
    );
    let (status, _) = get(&format!(
        "{}/v2/metal-installer/{id}/manifests/{digest_a}",
        c.url
    ))
    .await;
    assert_eq!(status, 404, "nothing of the refused image is served");
}

/// A TCP forwarder on a port of its own to whatever `target` holds once set.
fn forwarder(target: Arc<Mutex<Option<SocketAddr>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Some(to) = *target.lock().unwrap() else {
                continue;
            };
            let Ok(server) = std::net::TcpStream::connect(to) else {
                continue;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut c1, mut s1) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c1, &mut s1);
                let _ = s1.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_factory_that_is_its_own_parent_builds_at_once() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("a");
    let (_layout, _release) = support::import_fixture(&data, &FixtureOptions::default()).await;
    // Its parent is itself, through another port (as a load balancer or a DNS name would).
    let target = Arc::new(Mutex::new(None));
    let via = forwarder(target.clone());
    let a = Daemon::start(
        &data,
        work.path(),
        &["--offline", "--factory-parent", &format!("http://{via}")],
    );
    *target.lock().unwrap() = Some(a.addr);
    let id = post_schematic(&a.url, SCHEMATIC).await;
    let started = Instant::now();
    let (status, body) = get(&format!("{}/image/{id}/v1.11.6/kernel-amd64", a.url)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "waited for itself: {:?}",
        started.elapsed()
    );
    assert!(a.log_text().contains("parent loop"), "{}", a.log_text());
    assert_eq!(log_count(&a, "asset built"), 1, "{}", a.log_text());
}
