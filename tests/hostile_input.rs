//! What a stranger can send or smuggle in: crafted images (symlinks out of the tree), hostile
//! asset paths, floods of new machines. Each test names the defect of issue 10 it pins.

mod support;

use std::path::Path;

use bootfactory::fixture::{BootOptions, FixtureOptions};
use support::TestServer;

const EMPTY_ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::new()
}

async fn import_fixture(data: &Path, options: &FixtureOptions) {
    support::import_fixture(data, options).await;
}

async fn offline_server(data: tempfile::TempDir) -> TestServer {
    TestServer::start_in(data, &[("offline", "true")]).await
}

async fn post_schematic(server: &TestServer, body: &str) -> String {
    support::post_schematic(&server.url, body).await
}

/// Defect 2: an imager whose `usr/install/amd64/vmlinuz` is a symlink to the appliance's
/// signing key must not serve the key as a kernel; defect 7: a release without an arm64
/// kernel answers 404 with the reason, not 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinked_kernel_never_leaves_the_image() {
    let data = tempfile::tempdir().unwrap();
    let key_path = data.path().join("cache-signing-key.pem");
    let options = FixtureOptions {
        versions: vec!["v1.11.6".into()],
        amd64: BootOptions {
            kernel_link: Some(key_path.to_string_lossy().into_owned()),
            ..BootOptions::default()
        },
        arm64: BootOptions {
            kernel_link: Some("vmlinuz-missing".into()),
            ..BootOptions::default()
        },
        ..FixtureOptions::default()
    };
    import_fixture(data.path(), &options).await;
    let server = offline_server(data).await;
    post_schematic(&server, "customization: {}").await;
    let key = std::fs::read_to_string(&key_path).expect("the server generated its key");
    assert!(key.contains("PRIVATE KEY"));

    for (arch, want) in [
        ("amd64", "has no usr/install/amd64/vmlinuz"),
        ("arm64", "has no usr/install/arm64/vmlinuz"),
    ] {
        let resp = client()
            .get(format!(
                "{}/image/{EMPTY_ID}/v1.11.6/kernel-{arch}",
                server.url
            ))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(!body.contains("PRIVATE KEY"), "{arch}: served the key");
        assert_eq!(status, 404, "{arch}: {body}");
        assert!(body.contains(want), "{arch}: {body}");
    }
    // Nothing was copied from the link either: no blob in the store holds the key's bytes.
    use sha2::Digest as _;
    let key_hex = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    assert!(
        !server
            .data
            .path()
            .join("blobs/sha256")
            .join(&key_hex)
            .exists(),
        "the signing key was copied into the store"
    );
}

/// Number of blobs in the store of a data directory.
fn blob_count(data: &Path) -> usize {
    std::fs::read_dir(data.join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Defects 6 and 7: made-up platforms are refused with 400 before any work (no blob, ref or
/// signature per name), a NUL in the platform is 400 rather than 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_platforms_are_refused_before_any_work() {
    let data = tempfile::tempdir().unwrap();
    let options = FixtureOptions {
        versions: vec!["v1.11.6".into()],
        ..FixtureOptions::default()
    };
    import_fixture(data.path(), &options).await;
    let server = offline_server(data).await;
    post_schematic(&server, "customization: {}").await;
    let get = |path: String| {
        let url = format!("{}/image/{EMPTY_ID}/v1.11.6/{path}", server.url);
        async move {
            let resp = client().get(url).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    // A known platform works and stores its cmdline once.
    let (status, body) = get("cmdline-metal-amd64".into()).await;
    assert_eq!(status, 200, "{body}");
    let before = blob_count(server.data.path());

    let long = "p".repeat(8_000);
    for (platform, shown) in [
        ("nosuchcloud", "\"nosuchcloud\""),
        ("a%00b", "\"a\\x00b\""),
        (long.as_str(), "\"pppp"),
    ] {
        let (status, body) = get(format!("cmdline-{platform}-amd64")).await;
        assert_eq!(status, 400, "{platform:.20}: {body:.200}");
        assert!(body.starts_with("unknown platform: "), "{body:.200}");
        assert!(body.contains(shown), "{body:.200}");
        assert!(body.len() < 200, "the error echoes the whole name");
        for kind in ["iso", "raw.xz"] {
            let (status, _) = get(format!("{platform}-amd64.{kind}")).await;
            assert_eq!(status, 400, "{platform:.20}.{kind}");
        }
        let (status, _) = client()
            .get(format!(
                "{}/pxe/{EMPTY_ID}/v1.11.6/{platform}-amd64",
                server.url
            ))
            .send()
            .await
            .map(|r| (r.status().as_u16(), ()))
            .unwrap();
        assert_eq!(status, 400, "/pxe {platform:.20}");
    }
    assert_eq!(
        blob_count(server.data.path()),
        before,
        "refused requests stored blobs"
    );
}

/// Defect 6: one client cannot start new builds as fast as it can ask; cached assets stay
/// free and other clients have their own budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_builds_are_rate_limited_per_client() {
    let data = tempfile::tempdir().unwrap();
    let options = FixtureOptions {
        versions: vec!["v1.11.6".into()],
        ..FixtureOptions::default()
    };
    import_fixture(data.path(), &options).await;
    let server = TestServer::start_in(
        data,
        &[
            ("offline", "true"),
            ("build.perClientBurst", "2"),
            ("build.perClientPerMinute", "1"),
        ],
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = format!("customization: {{extraKernelArgs: [\"x={i}\"]}}");
        ids.push(post_schematic(&server, &body).await);
    }
    let get = |id: &str| {
        let url = format!("{}/image/{id}/v1.11.6/cmdline-metal-amd64", server.url);
        async move { client().get(url).send().await.unwrap() }
    };
    assert_eq!(get(&ids[0]).await.status(), 200);
    assert_eq!(get(&ids[1]).await.status(), 200);
    let refused = get(&ids[2]).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "60");
    let text = refused.text().await.unwrap();
    assert!(text.contains("too many new builds"), "{text}");
    // Cached assets are not limited.
    for _ in 0..5 {
        assert_eq!(get(&ids[0]).await.status(), 200);
    }
    // The /pxe script of a new schematic needs a build too.
    let pxe = client()
        .get(format!("{}/pxe/{}/v1.11.6/metal-amd64", server.url, ids[2]))
        .send()
        .await
        .unwrap();
    assert_eq!(pxe.status(), 429);
}

/// A boot storm asks for one new initramfs thousands of times at once, often from one address
/// (NAT; the bootstorm bench): only the request that starts the build is charged; the ones that
/// arrive while it prepares (before the builder lists it in flight) join it for free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_build_is_charged_once_however_many_requests_join_it() {
    let data = tempfile::tempdir().unwrap();
    let options = FixtureOptions {
        versions: vec!["v1.11.6".into()],
        ..FixtureOptions::default()
    };
    import_fixture(data.path(), &options).await;
    let server = TestServer::start_in(
        data,
        &[
            ("offline", "true"),
            ("build.perClientBurst", "1"),
            ("build.perClientPerMinute", "1"),
        ],
    )
    .await;
    let storm = post_schematic(
        &server,
        "customization: {systemExtensions: {officialExtensions: [siderolabs/amd-ucode, siderolabs/iscsi-tools]}}",
    )
    .await;
    let other = post_schematic(&server, "customization: {extraKernelArgs: [\"x=1\"]}").await;
    let url = |id: &str, file: &str| format!("{}/image/{id}/v1.11.6/{file}", server.url);
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let url = url(&storm, "initramfs-amd64.xz");
        requests.spawn(async move {
            let resp = client().get(url).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        });
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(done) = requests.join_next().await {
        let (status, body) = done.unwrap();
        if status != 200 {
            eprintln!("{status}: {}", body.trim());
        }
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(statuses, [(200, 64)].into(), "all 64 requests served");
    // The one token went to the one build: the next new build is refused.
    let refused = client()
        .get(url(&other, "cmdline-metal-amd64"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
}

/// Defect 6: past the store quota, new content is refused with 507 naming the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_quota_answers_507() {
    let server = TestServer::start(&[("store.maxBytes", "40")]).await;
    let resp = client()
        .post(format!("{}/schematics", server.url))
        .body("customization: {extraKernelArgs: [a-rather-long-argument-to-exceed-the-quota=1]}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 507);
    assert_eq!(resp.headers()["retry-after"], "300");
    let text = resp.text().await.unwrap();
    assert!(text.contains("store quota reached"), "{text}");
    assert!(text.contains("store.maxBytes"), "{text}");
}
