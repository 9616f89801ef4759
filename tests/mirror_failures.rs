//! The pull-through mirror against an in-process fake upstream that can fail on demand:
//! caching, stale-on-error, corrupt blobs, shared downloads, token auth, error documents.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::TestServer;
use support::fake_registry::FakeRegistry;

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::new()
}

async fn mirror_of(fake: &FakeRegistry, extra: &[(&str, &str)]) -> TestServer {
    let registries = format!("{{ghcr.io: {{endpoint: 'http://{}'}}}}", fake.addr);
    let mut overrides = vec![
        ("upstream.registries", registries.as_str()),
        ("upstream.tagTTLSeconds", "0"),
        ("upstream.retries", "0"),
        ("upstream.timeoutSeconds", "5"),
    ];
    overrides.extend_from_slice(extra);
    TestServer::start(&overrides).await
}

fn assert_oci_error(resp: &reqwest::Response, status: u16) {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(
        resp.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
}

#[tokio::test]
async fn pull_through_caches_and_survives_upstream_outage() {
    let fake = FakeRegistry::start().await;
    let layer: Vec<u8> = (0..2048u32).map(|i| (i % 251) as u8).collect();
    let (manifest_digest, layer_digest) = fake.add_image("siderolabs/test", "v1", &layer);
    let server = mirror_of(&fake, &[]).await;
    let base = format!("{}/v2/siderolabs/test", server.url);

    let head = client()
        .head(format!("{base}/manifests/v1?ns=ghcr.io"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["docker-content-digest"],
        manifest_digest.as_str()
    );
    assert_eq!(head.headers()["oci-namespace"], "ghcr.io");
    assert_eq!(
        head.headers()["content-type"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert!(head.headers().contains_key("content-length"));

    let got = client()
        .get(format!("{base}/blobs/{layer_digest}?ns=ghcr.io"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), layer.as_slice());
    assert_eq!(
        fake.hits("GET", &format!("/v2/siderolabs/test/blobs/{layer_digest}")),
        1
    );

    // Cached now: ranges work and the upstream is not asked again.
    let ranged = client()
        .get(format!("{base}/blobs/{layer_digest}"))
        .header("range", "bytes=500-1499")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.headers()["content-range"], "bytes 500-1499/2048");
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), &layer[500..1500]);
    let unsatisfiable = client()
        .get(format!("{base}/blobs/{layer_digest}"))
        .header("range", "bytes=5000-10000")
        .send()
        .await
        .unwrap();
    assert_eq!(unsatisfiable.status(), 416);
    assert_eq!(
        fake.hits("GET", &format!("/v2/siderolabs/test/blobs/{layer_digest}")),
        1
    );

    // Upstream gone: the stored tag is still served; an uncached blob is a clear 503.
    let missing = fake.add_blob(b"never fetched");
    drop(fake);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stale = client()
        .get(format!("{base}/manifests/v1"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(
        stale.headers()["docker-content-digest"],
        manifest_digest.as_str()
    );
    let down = client()
        .get(format!("{base}/blobs/{missing}"))
        .send()
        .await
        .unwrap();
    assert_oci_error(&down, 503);
    assert!(down.headers().contains_key("retry-after"));
    let body: serde_json::Value = down.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ghcr.io")
    );
}

#[tokio::test]
async fn corrupt_upstream_blob_is_never_cached() {
    let fake = FakeRegistry::start().await;
    let layer = vec![7u8; 600 * 1024];
    let (_, layer_digest) = fake.add_image("siderolabs/test", "v1", &layer);
    fake.state
        .corrupt
        .lock()
        .unwrap()
        .push(layer_digest.clone());
    let server = mirror_of(&fake, &[]).await;
    let url = format!("{}/v2/siderolabs/test/blobs/{layer_digest}", server.url);

    // The client never receives a complete body: the stream ends in an error.
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await;
    assert!(
        body.as_ref().map(|b| b.len() < layer.len()).unwrap_or(true),
        "a corrupt blob must not be delivered whole"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Nothing was cached: once the upstream is fixed, the blob is fetched again, correctly.
    fake.state.corrupt.lock().unwrap().clear();
    let good = client().get(&url).send().await.unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(good.bytes().await.unwrap().as_ref(), layer.as_slice());
    assert_eq!(
        fake.hits("GET", &format!("/v2/siderolabs/test/blobs/{layer_digest}")),
        2
    );
}

/// Reads a response body to its end or first error: (bytes received, whether it ended cleanly).
async fn read_body(resp: reqwest::Response) -> (Vec<u8>, bool) {
    use futures_util::StreamExt as _;
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => body.extend_from_slice(&c),
            Err(_) => return (body, false),
        }
    }
    (body, true)
}

/// Waits until the server's `tmp/` holds no download any more.
async fn wait_tmp_empty(server: &TestServer) {
    let tmp = server.data_path("tmp");
    for _ in 0..500 {
        if std::fs::read_dir(&tmp).map_or(true, |mut d| d.next().is_none()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("a failed download left its temp file in {}", tmp.display());
}

#[tokio::test]
async fn faulty_upstream_bodies_reach_the_client_cut_short_and_are_never_stored() {
    let fake = FakeRegistry::start().await;
    let layer: Vec<u8> = (0..(2 * 1024 * 1024u32))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (_, layer_digest) = fake.add_image("siderolabs/test", "v1", &layer);
    let server = mirror_of(&fake, &[]).await;
    let url = format!("{}/v2/siderolabs/test/blobs/{layer_digest}", server.url);
    let path = format!("/v2/siderolabs/test/blobs/{layer_digest}");
    let digest: bootfactory::store::Digest = layer_digest.parse().unwrap();
    let store_file = server.data_path(&format!("blobs/sha256/{}", digest.hex()));
    let cut = 1024 * 1024 + 4321;

    // Wrong bytes (the last one flipped), a connection dropped mid-body after the full length
    // was announced, and a clean chunked body that stops early.
    for fault in ["wrong bytes", "dropped mid-body", "short chunked body"] {
        match fault {
            "wrong bytes" => fake
                .state
                .corrupt
                .lock()
                .unwrap()
                .push(layer_digest.clone()),
            "dropped mid-body" => fake.state.blob_cut_after.store(cut, Ordering::SeqCst),
            _ => fake.state.blob_truncate_to.store(cut, Ordering::SeqCst),
        }
        let before = fake.hits("GET", &path);
        let resp = client().get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{fault}");
        let announced = resp.content_length();
        let (body, clean) = read_body(resp).await;
        assert!(
            !clean,
            "{fault}: the response must not complete successfully"
        );
        assert!(body.len() < layer.len(), "{fault}: never delivered whole");
        match fault {
            "wrong bytes" => {
                assert_eq!(announced, Some(layer.len() as u64));
                // Everything but the chunk that would complete it (one read of the upstream
                // connection, at most hyper's 400 KiB read buffer) was streamed as it came.
                assert!(
                    body.len() + 512 * 1024 > layer.len(),
                    "{fault}: {}",
                    body.len()
                );
                assert!(body[..] == layer[..body.len()]);
            }
            "dropped mid-body" => {
                assert_eq!(announced, Some(layer.len() as u64));
                // What arrived before the drop was passed on (the fake's server loses what it
                // still buffered when it aborts, so not necessarily all `cut` bytes).
                assert!(
                    body.len() > 512 * 1024 && body.len() <= cut,
                    "{}",
                    body.len()
                );
                assert!(body[..] == layer[..body.len()]);
            }
            _ => {
                assert_eq!(announced, None, "{fault}: chunked like the upstream");
                assert_eq!(body.len(), cut, "{fault}");
                assert!(body[..] == layer[..cut]);
            }
        }
        assert_eq!(fake.hits("GET", &path), before + 1, "{fault}");
        wait_tmp_empty(&server).await;
        assert!(!store_file.exists(), "{fault}: nothing stored");
        fake.state.corrupt.lock().unwrap().clear();
        fake.state.blob_cut_after.store(0, Ordering::SeqCst);
        fake.state.blob_truncate_to.store(0, Ordering::SeqCst);
    }

    // The upstream is sound again: fetched once more, whole, stored, then served locally.
    let good = client().get(&url).send().await.unwrap();
    assert_eq!(good.status(), 200);
    assert!(good.bytes().await.unwrap() == layer);
    assert_eq!(fake.hits("GET", &path), 4);
    let again = client().get(&url).send().await.unwrap();
    assert!(again.bytes().await.unwrap() == layer);
    assert_eq!(fake.hits("GET", &path), 4);
    assert!(store_file.exists());
}

#[tokio::test]
async fn blobs_follow_a_redirect_to_storage_without_the_registry_token() {
    let fake = FakeRegistry::start().await;
    fake.state.require_token.store(true, Ordering::SeqCst);
    fake.state.redirect_blobs.store(true, Ordering::SeqCst);
    let layer = vec![42u8; 300 * 1024];
    let (_, layer_digest) = fake.add_image("siderolabs/private", "v3", &layer);
    let server = mirror_of(&fake, &[]).await;
    for _ in 0..2 {
        let b = client()
            .get(format!(
                "{}/v2/siderolabs/private/blobs/{layer_digest}",
                server.url
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(b.status(), 200);
        assert!(b.bytes().await.unwrap() == layer);
    }
    // Asked the registry with the token (a 401 first), then storage without it, once.
    assert_eq!(fake.hits("GET", &format!("/storage/{layer_digest}")), 1);
    assert_eq!(
        fake.hits(
            "GET",
            &format!("/v2/siderolabs/private/blobs/{layer_digest}")
        ),
        2
    );
    let tokens = fake.state.token_requests.lock().unwrap().clone();
    assert!(
        tokens
            .iter()
            .any(|t| t.contains("scope=repository:siderolabs/private:pull")),
        "{tokens:?}"
    );
}

#[tokio::test]
async fn concurrent_misses_share_one_download_that_outlives_the_client() {
    let fake = FakeRegistry::start().await;
    let layer: Vec<u8> = (0..(3 * 1024 * 1024u32))
        .map(|i| (i * 7 % 253) as u8)
        .collect();
    let (_, layer_digest) = fake.add_image("siderolabs/test", "v1", &layer);
    fake.state.blob_delay_ms.store(300, Ordering::SeqCst);
    let server = mirror_of(&fake, &[]).await;
    let url = format!("{}/v2/siderolabs/test/blobs/{layer_digest}", server.url);

    // One client gives up right away; five others read everything.
    let quitter = client().get(&url).send();
    let readers: Vec<_> = (0..5)
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
    drop(tokio::time::timeout(Duration::from_millis(50), quitter).await);
    for r in readers {
        assert_eq!(r.await.unwrap().as_ref(), layer.as_slice());
    }
    assert_eq!(
        fake.hits("GET", &format!("/v2/siderolabs/test/blobs/{layer_digest}")),
        1
    );
    let again = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(again.len(), layer.len());
    assert_eq!(
        fake.hits("GET", &format!("/v2/siderolabs/test/blobs/{layer_digest}")),
        1
    );
}

#[tokio::test]
async fn anonymous_bearer_token_flow() {
    let fake = FakeRegistry::start().await;
    fake.state.require_token.store(true, Ordering::SeqCst);
    let (digest, layer_digest) = fake.add_image("siderolabs/private", "v2", b"layer bytes");
    let server = mirror_of(&fake, &[]).await;
    let base = format!("{}/v2/siderolabs/private", server.url);
    let m = client()
        .get(format!("{base}/manifests/v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200, "{}", m.text().await.unwrap());
    let b = client()
        .get(format!("{base}/blobs/{layer_digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(b.bytes().await.unwrap().as_ref(), b"layer bytes");
    let tokens = fake.state.token_requests.lock().unwrap().clone();
    assert!(!tokens.is_empty());
    assert!(
        tokens
            .iter()
            .any(|t| t.contains("scope=repository:siderolabs/private:pull")),
        "{tokens:?}"
    );
    let _ = digest;
}

#[tokio::test]
async fn errors_are_oci_documents() {
    let fake = FakeRegistry::start().await;
    fake.add_image("siderolabs/test", "v1", b"x");
    let server = mirror_of(&fake, &[("mirror.allow", "ghcr.io")]).await;
    let v2 = format!("{}/v2", server.url);

    let ping = client().get(format!("{v2}/")).send().await.unwrap();
    assert_eq!(ping.status(), 200);
    assert_eq!(
        ping.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );

    let cases = [
        (
            format!("{v2}/siderolabs/test/manifests/nope"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("{v2}/siderolabs/test/manifests/sha256:{}", "0".repeat(64)),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("{v2}/siderolabs/test/manifests/sha256:abc"),
            400,
            "DIGEST_INVALID",
        ),
        (format!("{v2}/Bad_Name/manifests/v1"), 400, "NAME_INVALID"),
        (
            format!("{v2}/siderolabs/test/blobs/sha256:{}", "0".repeat(64)),
            404,
            "BLOB_UNKNOWN",
        ),
        (
            format!("{v2}/library/nginx/manifests/latest?ns=docker.io"),
            403,
            "DENIED",
        ),
        (
            format!("{v2}/siderolabs/nothing/tags/list"),
            404,
            "NAME_UNKNOWN",
        ),
    ];
    for (url, status, code) in cases {
        let resp = client().get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{url}");
        assert_oci_error(&resp, status);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], code, "{url}");
    }
    for traversal in [
        "/v2/a/../../etc/manifests/v1",
        "/v2/a/%2e%2e/b/manifests/v1",
        "/v2/..%2Fx/blobs/sha256:0",
    ] {
        let (status, body) = support::raw_get(server.addr, traversal).await;
        assert_eq!(status, 400, "{traversal}: {body}");
        assert!(body.contains("NAME_INVALID"), "{traversal}: {body}");
    }
    let upload = client()
        .post(format!("{v2}/siderolabs/test/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_oci_error(&upload, 405);
}

#[tokio::test]
async fn tags_list_pages_and_offline_mode() {
    let fake = FakeRegistry::start().await;
    for t in ["v1", "v2", "v3"] {
        fake.add_image("siderolabs/test", t, t.as_bytes());
    }
    let server = mirror_of(&fake, &[]).await;
    let url = format!("{}/v2/siderolabs/test/tags/list", server.url);
    let all: serde_json::Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["name"], "siderolabs/test");
    assert_eq!(all["tags"], serde_json::json!(["v1", "v2", "v3"]));
    let page = client().get(format!("{url}?n=2")).send().await.unwrap();
    assert!(page.headers()["link"].to_str().unwrap().contains("last=v2"));
    let page: serde_json::Value = page.json().await.unwrap();
    assert_eq!(page["tags"], serde_json::json!(["v1", "v2"]));
    let rest: serde_json::Value = client()
        .get(format!("{url}?n=2&last=v2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["tags"], serde_json::json!(["v3"]));

    // Offline: nothing is fetched, and a miss says why.
    let offline = mirror_of(&fake, &[("offline", "true")]).await;
    let resp = client()
        .get(format!("{}/v2/siderolabs/test/manifests/v1", offline.url))
        .send()
        .await
        .unwrap();
    assert_oci_error(&resp, 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("offline")
    );
}

#[tokio::test]
async fn client_started_downloads_are_capped_by_mirror_max_fetches() {
    let fake = FakeRegistry::start().await;
    let a = fake.add_blob(b"first blob, slow upstream");
    let b = fake.add_blob(b"second blob");
    fake.state.blob_delay_ms.store(1500, Ordering::SeqCst);
    let server = mirror_of(&fake, &[("mirror.maxFetches", "1")]).await;
    let url = |d: &str| format!("{}/v2/siderolabs/test/blobs/{d}", server.url);

    // The first miss holds the only slot while its upstream answers slowly.
    let first = tokio::spawn(client().get(url(&a)).send());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fake.hits("GET", &format!("/v2/siderolabs/test/blobs/{a}")) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "first fetch never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Another blob: refused with the registry error for "slow down", nothing fetched.
    let busy = client().get(url(&b)).send().await.unwrap();
    assert_oci_error(&busy, 429);
    assert_eq!(busy.headers()["retry-after"], "2");
    let text = busy.text().await.unwrap();
    assert!(
        text.contains("TOOMANYREQUESTS") && text.contains("mirror.maxFetches"),
        "{text}"
    );
    assert_eq!(
        fake.hits("GET", &format!("/v2/siderolabs/test/blobs/{b}")),
        0
    );
    // The same blob joins the running download instead of counting again.
    let joined = client().get(url(&a)).send().await.unwrap();
    assert_eq!(joined.status(), 200);
    assert_eq!(
        joined.bytes().await.unwrap().as_ref(),
        b"first blob, slow upstream"
    );
    let first = first.await.unwrap().unwrap();
    assert_eq!(
        first.bytes().await.unwrap().as_ref(),
        b"first blob, slow upstream"
    );
    // Once it is done, the slot is free again. "Done" is after the store commit (fsync and
    // index record), which follows the client's last byte: a client retries as Retry-After
    // says, so this one does too (briefly).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let later = loop {
        let resp = client().get(url(&b)).send().await.unwrap();
        if resp.status() != 429 {
            break resp;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot of a finished download was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(later.status(), 200);
    assert_eq!(later.bytes().await.unwrap().as_ref(), b"second blob");
    assert_eq!(
        fake.hits("GET", &format!("/v2/siderolabs/test/blobs/{b}")),
        1
    );
}

#[tokio::test]
async fn an_http10_client_gets_a_length_delimited_blob_on_a_miss() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = FakeRegistry::start().await;
    let layer: Vec<u8> = (0..200_000u32).map(|i| (i * 11 % 251) as u8).collect();
    let (_, digest) = fake.add_image("siderolabs/test", "v1", &layer);
    let other: Vec<u8> = (0..150_000u32).map(|i| (i * 3 % 241) as u8).collect();
    let bad = fake.add_blob(&other);
    let server = mirror_of(&fake, &[]).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let get10 = |d: String| {
        let addr = addr.clone();
        async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(
                format!("GET /v2/siderolabs/test/blobs/{d} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).await.unwrap();
            let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            (head, raw[split..].to_vec())
        }
    };
    // The upstream sends the whole blob chunked, without a length.
    fake.state
        .blob_truncate_to
        .store(layer.len(), Ordering::SeqCst);
    let (head, body) = get10(digest).await;
    // Verified before the answer, so it carries its length: a cut body is detectable.
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", layer.len())),
        "{head}"
    );
    assert_eq!(body, layer);
    // A chunked upstream body that ends early: an error answer, never a 200 that a
    // close-delimited body would make look complete.
    fake.state.blob_truncate_to.store(100_000, Ordering::SeqCst);
    let (head, _) = get10(bad).await;
    assert!(!head.starts_with("http/1.0 200"), "{head}");
}
