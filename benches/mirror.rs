//! Mirror benchmark: bootfactory's `/v2/` pull-through mirror against `docker-registry` (CNCF
//! distribution) in proxy mode, both in front of the same plain `docker-registry` upstream, on
//! the same machine in the same run. It prints figures and ratios and never asserts on speed;
//! it only fails when a server answers wrongly. See `benches/README.md`.
//!
//! Run with `cargo bench --bench mirror`; `BENCH_BLOB_MB` sets the big layer's size in MiB
//! (default 512), `BENCH_LOG` (a tracing filter such as `bootfactory=info`) shows the
//! in-process bootfactory's logs on stderr.

#[path = "support/stats.rs"]
mod stats;
#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use stats::{median, percentile, sorted};
use support::TestServer;
use support::tools::{DockerRegistry, have, skopeo_ok};

/// Repository and tag of the test image (under the mirrors' default registry).
const REPO: &str = "bench/big";
const TAG: &str = "v1";
/// Size of the big layer unless `BENCH_BLOB_MB` says otherwise.
const DEFAULT_BLOB_MB: u64 = 512;
/// Size of the small layer.
const SMALL_BLOB: usize = 4096;
/// Warm blob pulls per server.
const WARM_RUNS: usize = 5;
/// Sequential cache-hit requests per server and metric, after `LATENCY_WARMUP`.
const LATENCY_REQUESTS: usize = 2000;
const LATENCY_WARMUP: usize = 200;
/// Concurrent cache hits: clients × requests each, repeated `CONCURRENT_ROUNDS` times.
const CONCURRENT_CLIENTS: usize = 32;
const CONCURRENT_REQUESTS: usize = 200;
const CONCURRENT_ROUNDS: usize = 3;
/// Timeout of one small request (manifest, HEAD, small blob).
const SMALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the next chunk of a blob body.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

fn main() {
    if !have("docker-registry") || !have("skopeo") {
        println!(
            "mirror benchmark skipped: it needs `docker-registry` and `skopeo` on PATH \
             (Debian: apt-get install -y docker-registry skopeo)"
        );
        return;
    }
    let blob_mb: u64 = match std::env::var("BENCH_BLOB_MB") {
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .unwrap_or_else(|| {
                panic!("BENCH_BLOB_MB must be a whole number of MiB >= 1, got {v:?}")
            }),
        Err(_) => DEFAULT_BLOB_MB,
    };
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        // The in-process bootfactory's logs (e.g. BENCH_LOG=bootfactory=info), to stderr.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    bootfactory::init_crypto();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Everything that needs cleaning up (the registries' processes, bootfactory, temporary
    // directories) is owned by the `bench` future, so Ctrl-C drops it and cleans up too.
    let results = runtime.block_on(async {
        tokio::select! {
            results = bench(blob_mb) => Some(results),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    drop(runtime); // waits for blocking setup work that was still running
    match results {
        Some(results) => results.print(blob_mb),
        None => {
            eprintln!("interrupted: servers stopped, temporary files removed");
            std::process::exit(130);
        }
    }
}

/// Runs `f` on the blocking pool (process starts, file writing, skopeo), re-raising its panic.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Sets up the image, the upstream, both mirrors; measures; tears everything down.
async fn bench(blob_mb: u64) -> Results {
    eprintln!("[setup] writing the test image ({blob_mb} MiB layer) as an OCI layout");
    let image = blocking(move || TestImage::build(blob_mb << 20)).await;

    eprintln!("[setup] starting the upstream docker-registry and pushing the image");
    let upstream = blocking(|| DockerRegistry::start(None)).await;
    let layout = format!("oci:{}:{TAG}", image.dir.path().display());
    let upstream_ref = format!("docker://{}/{REPO}:{TAG}", upstream.addr);
    let upstream_digest = blocking(move || {
        skopeo_ok(&[
            "copy",
            // The layers are uncompressed on purpose (random bytes do not compress); without
            // this skopeo would gzip them for the registry and change every digest.
            "--preserve-digests",
            "--dest-tls-verify=false",
            &layout,
            &upstream_ref,
        ]);
        skopeo_ok(&[
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &upstream_ref,
        ])
    })
    .await;
    assert_eq!(
        upstream_digest.trim(),
        image.manifest_digest,
        "the upstream docker-registry holds a different manifest than the one pushed"
    );

    eprintln!("[setup] starting docker-registry in proxy mode");
    let upstream_url = upstream.url();
    let peer_registry = blocking(move || DockerRegistry::start(Some(&upstream_url))).await;

    eprintln!("[setup] starting bootfactory");
    let registries = format!("{{ghcr.io: {{endpoint: '{}'}}}}", upstream.url());
    let server = TestServer::start(&[
        ("upstream.registries", registries.as_str()),
        ("upstream.tagTTLSeconds", "300"),
        ("mirror.defaultRegistry", "ghcr.io"),
    ])
    .await;

    let direct = Target::new("upstream docker-registry", upstream.url());
    let peer = Target::new("docker-registry (proxy)", peer_registry.url());
    let ours = Target::new("bootfactory", server.url.clone());
    let results = run(&image, &direct, &peer, &ours).await;

    server.stop().await;
    drop(peer_registry);
    drop(upstream);
    blocking(move || drop(image)).await;
    results
}

/// One server under test and its keep-alive client.
struct Target {
    name: &'static str,
    base: String,
    client: reqwest::Client,
}

impl Target {
    fn new(name: &'static str, base: String) -> Target {
        Target {
            name,
            base,
            client: client(),
        }
    }

    fn manifest_url(&self, reference: &str) -> String {
        format!("{}/v2/{REPO}/manifests/{reference}", self.base)
    }

    fn blob_url(&self, digest: &str) -> String {
        format!("{}/v2/{REPO}/blobs/{digest}", self.base)
    }
}

/// A client with one idle connection per host, no system proxy and no total timeout (each
/// request sets its own).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()
        .expect("reqwest client")
}

// ---------------------------------------------------------------------------------------------
// The test image

/// A blob written to the layout: `sha256:…` digest and size.
#[derive(Clone)]
struct BlobRef {
    digest: String,
    size: u64,
}

/// An OCI image layout with one image (`v1`): a small config, one big incompressible layer and
/// one 4 KiB layer.
struct TestImage {
    dir: tempfile::TempDir,
    manifest: Vec<u8>,
    manifest_digest: String,
    big: BlobRef,
    small: BlobRef,
}

impl TestImage {
    fn build(big_size: u64) -> TestImage {
        let dir = tempfile::tempdir().expect("tempdir for the OCI layout");
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("create blobs/sha256");
        let big = write_random_blob(&blobs, big_size, 0x5EED_0001);
        let small = write_random_blob(&blobs, SMALL_BLOB as u64, 0x5EED_0002);
        let layer_type = "application/vnd.oci.image.layer.v1.tar";
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [big.digest, small.digest]},
        });
        let config = write_blob(&blobs, config.to_string().as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config.digest,
                "size": config.size,
            },
            "layers": [
                {"mediaType": layer_type, "digest": big.digest, "size": big.size},
                {"mediaType": layer_type, "digest": small.digest, "size": small.size},
            ],
        })
        .to_string()
        .into_bytes();
        let manifest_ref = write_blob(&blobs, &manifest);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": MANIFEST_TYPE,
                "digest": manifest_ref.digest,
                "size": manifest_ref.size,
                "annotations": {"org.opencontainers.image.ref.name": TAG},
            }],
        });
        std::fs::write(dir.path().join("index.json"), index.to_string()).expect("index.json");
        std::fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("oci-layout");
        TestImage {
            dir,
            manifest,
            manifest_digest: manifest_ref.digest,
            big,
            small,
        }
    }
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> BlobRef {
    let hex = hex::encode(Sha256::digest(bytes));
    std::fs::write(blobs.join(&hex), bytes).expect("write blob");
    BlobRef {
        digest: format!("sha256:{hex}"),
        size: bytes.len() as u64,
    }
}

/// Streams `size` deterministic pseudo-random bytes (splitmix64 from `seed`) to a blob file,
/// hashing as it goes; never holds more than 1 MiB.
fn write_random_blob(blobs: &Path, size: u64, seed: u64) -> BlobRef {
    let temp = blobs.join(format!(".partial-{seed:x}"));
    let mut file = std::fs::File::create(&temp).expect("create blob file");
    let mut hasher = Sha256::new();
    let mut state = seed;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for word in buf[..n].chunks_mut(8) {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            word.copy_from_slice(&z.to_le_bytes()[..word.len()]);
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).expect("write blob file");
        left -= n as u64;
    }
    drop(file);
    let hex = hex::encode(hasher.finalize());
    std::fs::rename(&temp, blobs.join(&hex)).expect("rename blob file");
    BlobRef {
        digest: format!("sha256:{hex}"),
        size,
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

/// Why a request failed, naming the server.
fn fail(t: &Target, what: &str, detail: impl std::fmt::Display) -> ! {
    panic!("{} ({}): {what}: {detail}", t.name, t.base)
}

/// GETs a manifest; checks status, digest header and (if given) the exact bytes.
async fn get_manifest(t: &Target, reference: &str, expect: &TestImage) {
    let what = format!("GET manifest {REPO}:{reference}");
    let response = t
        .client
        .get(t.manifest_url(reference))
        .header(reqwest::header::ACCEPT, ACCEPT_MANIFESTS)
        .timeout(SMALL_TIMEOUT)
        .send()
        .await
        .unwrap_or_else(|e| fail(t, &what, e));
    let status = response.status();
    let digest = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.bytes().await.unwrap_or_else(|e| fail(t, &what, e));
    if status != reqwest::StatusCode::OK {
        fail(
            t,
            &what,
            format!("status {status}: {}", String::from_utf8_lossy(&body)),
        );
    }
    if body.len() != expect.manifest.len() || digest.as_deref() != Some(&expect.manifest_digest) {
        fail(
            t,
            &what,
            format!(
                "got {} bytes with digest {digest:?}, expected {} bytes with {}",
                body.len(),
                expect.manifest.len(),
                expect.manifest_digest
            ),
        );
    }
}

/// HEADs a blob; checks status and length. Returns whether the answer came from the server's
/// own storage (`Accept-Ranges` is only sent for stored blobs by both servers).
async fn head_blob(t: &Target, blob: &BlobRef) -> bool {
    let what = format!("HEAD blob {}", blob.digest);
    let response = t
        .client
        .head(t.blob_url(&blob.digest))
        .timeout(SMALL_TIMEOUT)
        .send()
        .await
        .unwrap_or_else(|e| fail(t, &what, e));
    if response.status() != reqwest::StatusCode::OK {
        fail(t, &what, format!("status {}", response.status()));
    }
    let length = response
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length != Some(blob.size) {
        fail(
            t,
            &what,
            format!("Content-Length {length:?}, expected {}", blob.size),
        );
    }
    response
        .headers()
        .contains_key(reqwest::header::ACCEPT_RANGES)
}

/// The outcome of one blob GET.
struct Pull {
    seconds: f64,
    /// Served from the server's own storage (see [`head_blob`]).
    from_cache: bool,
}

impl Pull {
    fn mb_per_s(&self, size: u64) -> f64 {
        size as f64 / 1e6 / self.seconds
    }
}

/// GETs a blob with `client`, counting the body's bytes as they stream in (never buffering it).
async fn pull_blob(t: &Target, client: &reqwest::Client, blob: &BlobRef) -> Pull {
    let what = format!("GET blob {} ({} bytes)", blob.digest, blob.size);
    // Generous: 60 s plus 10 MB/s.
    let timeout = Duration::from_secs(60 + blob.size / 10_000_000);
    let started = Instant::now();
    let mut response = client
        .get(t.blob_url(&blob.digest))
        .timeout(timeout)
        .send()
        .await
        .unwrap_or_else(|e| fail(t, &what, e));
    if response.status() != reqwest::StatusCode::OK {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        fail(t, &what, format!("status {status}: {body}"));
    }
    let from_cache = response
        .headers()
        .contains_key(reqwest::header::ACCEPT_RANGES);
    let mut received = 0u64;
    loop {
        match tokio::time::timeout(CHUNK_TIMEOUT, response.chunk()).await {
            Err(_) => fail(
                t,
                &what,
                format!("no data for {CHUNK_TIMEOUT:?} after {received} bytes"),
            ),
            Ok(Err(e)) => fail(t, &what, format!("after {received} bytes: {e}")),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => received += chunk.len() as u64,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if received != blob.size {
        fail(t, &what, format!("body had {received} bytes"));
    }
    Pull {
        seconds,
        from_cache,
    }
}

/// GETs the small blob with `client` and checks its length.
async fn get_small(t: &Target, client: &reqwest::Client, blob: &BlobRef) {
    let what = format!("GET blob {}", blob.digest);
    let response = client
        .get(t.blob_url(&blob.digest))
        .timeout(SMALL_TIMEOUT)
        .send()
        .await
        .unwrap_or_else(|e| fail(t, &what, e));
    let status = response.status();
    let body = response.bytes().await.unwrap_or_else(|e| fail(t, &what, e));
    if status != reqwest::StatusCode::OK || body.len() as u64 != blob.size {
        fail(
            t,
            &what,
            format!(
                "status {status}, {} bytes, expected {}",
                body.len(),
                blob.size
            ),
        );
    }
}

/// Pulls `blob` until a pull is answered from the server's own storage (distribution stores a
/// proxied blob in the background, after it answered the first client). Returns the number of
/// pulls it took.
async fn pull_until_cached(t: &Target, blob: &BlobRef) -> usize {
    for attempt in 1..=30 {
        if pull_blob(t, &t.client, blob).await.from_cache {
            return attempt;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    fail(
        t,
        &format!("blob {}", blob.digest),
        "still not served from its own storage after 30 pulls",
    )
}

/// Flushes dirty pages so that write-back of earlier steps does not land in a measurement.
async fn sync_disks() {
    blocking(|| {
        let _ = std::process::Command::new("sync").status();
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// One sequential cache-hit request kind.
#[derive(Clone, Copy)]
enum Hit {
    ManifestByDigest,
    ManifestByTag,
    HeadSmallBlob,
}

async fn hit(t: &Target, kind: Hit, image: &TestImage) {
    match kind {
        Hit::ManifestByDigest => get_manifest(t, &image.manifest_digest, image).await,
        Hit::ManifestByTag => get_manifest(t, TAG, image).await,
        Hit::HeadSmallBlob => {
            head_blob(t, &image.small).await;
        }
    }
}

/// Sequential latencies in microseconds for both servers, alternating request by request
/// (and which goes first), so that machine noise hits both alike.
async fn latencies(targets: [&Target; 2], kind: Hit, image: &TestImage) -> [Vec<f64>; 2] {
    for _ in 0..LATENCY_WARMUP {
        for t in targets {
            hit(t, kind, image).await;
        }
    }
    let mut samples = [
        Vec::with_capacity(LATENCY_REQUESTS),
        Vec::with_capacity(LATENCY_REQUESTS),
    ];
    for i in 0..LATENCY_REQUESTS {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let started = Instant::now();
            hit(targets[k], kind, image).await;
            samples[k].push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    samples
}

/// `CONCURRENT_CLIENTS` clients (one connection each) × `CONCURRENT_REQUESTS` GETs of the small
/// blob; returns requests per second.
async fn concurrent_round(t: &Target, clients: &[reqwest::Client], blob: &BlobRef) -> f64 {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in clients {
        let t = Target {
            name: t.name,
            base: t.base.clone(),
            client: c.clone(),
        };
        let blob = blob.clone();
        tasks.spawn(async move {
            for _ in 0..CONCURRENT_REQUESTS {
                get_small(&t, &t.client, &blob).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => fail(t, "concurrent small blob GETs", e),
            }
        }
    }
    (clients.len() * CONCURRENT_REQUESTS) as f64 / started.elapsed().as_secs_f64()
}

/// Everything measured, per server: index 0 is docker-registry, 1 is bootfactory.
struct Results {
    upstream_direct: f64,
    cold: [f64; 2],
    warm: [Vec<f64>; 2],
    warm_extra_pulls: [usize; 2],
    by_digest: [Vec<f64>; 2],
    by_tag: [Vec<f64>; 2],
    head_small: [Vec<f64>; 2],
    concurrent: [Vec<f64>; 2],
}

async fn run(image: &TestImage, direct: &Target, peer: &Target, ours: &Target) -> Results {
    let targets = [peer, ours];

    eprintln!("[check] manifest GET by tag through both");
    for t in targets {
        get_manifest(t, TAG, image).await;
    }

    // Reference: the same layer straight from the upstream (also puts it in the page cache, so
    // that neither cold pull pays for the upstream's disk reads).
    eprintln!("[reference] GET of the layer straight from the upstream");
    let upstream_direct = pull_blob(direct, &direct.client, &image.big)
        .await
        .mb_per_s(image.big.size);
    sync_disks().await;

    // 1. Cold: bootfactory first, because distribution keeps downloading in the background
    // after its client got the last byte (it fetches a missed blob twice: one stream for the
    // client, one into storage), which would overlap bootfactory's pull if it came second.
    let mut cold = [0.0; 2];
    for k in [1, 0] {
        let t = targets[k];
        eprintln!(
            "[cold] {}: first GET of the {} byte layer",
            t.name, image.big.size
        );
        let pull = pull_blob(t, &t.client, &image.big).await;
        if pull.from_cache {
            fail(
                t,
                "cold blob pull",
                "answered from storage; the blob was already cached",
            );
        }
        cold[k] = pull.mb_per_s(image.big.size);
    }

    // 2. Warm. One unmeasured pull each, repeated until it comes from the server's storage.
    let mut warm_extra_pulls = [0; 2];
    for (k, t) in targets.iter().enumerate() {
        eprintln!(
            "[warm] {}: unmeasured pulls until it serves from storage",
            t.name
        );
        warm_extra_pulls[k] = pull_until_cached(t, &image.big).await;
    }
    sync_disks().await;
    let mut warm = [Vec::new(), Vec::new()];
    for run in 0..WARM_RUNS {
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let t = targets[k];
            eprintln!("[warm] {} run {}/{WARM_RUNS}", t.name, run + 1);
            let pull = pull_blob(t, &t.client, &image.big).await;
            if !pull.from_cache {
                eprintln!("  warning: {} did not serve this pull from storage", t.name);
            }
            warm[k].push(pull.mb_per_s(image.big.size));
        }
    }

    // 3. Sequential cache hits. Fetch the small blob once through each (a miss) and wait until
    // both serve it from storage.
    for t in targets {
        get_small(t, &t.client, &image.small).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !head_blob(t, &image.small).await {
            if Instant::now() > deadline {
                fail(t, "small blob", "not served from storage 30 s after a GET");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("[latency] manifest by digest, {LATENCY_REQUESTS} sequential requests each");
    let by_digest = latencies(targets, Hit::ManifestByDigest, image).await;
    eprintln!("[latency] manifest by tag, {LATENCY_REQUESTS} sequential requests each");
    let by_tag = latencies(targets, Hit::ManifestByTag, image).await;
    eprintln!("[latency] HEAD small blob, {LATENCY_REQUESTS} sequential requests each");
    let head_small = latencies(targets, Hit::HeadSmallBlob, image).await;

    // 4. Concurrent cache hits, rounds alternating between the servers.
    let clients: [Vec<reqwest::Client>; 2] = [
        (0..CONCURRENT_CLIENTS).map(|_| client()).collect(),
        (0..CONCURRENT_CLIENTS).map(|_| client()).collect(),
    ];
    for (k, t) in targets.iter().enumerate() {
        for c in &clients[k] {
            get_small(t, c, &image.small).await; // opens the connection
        }
    }
    let mut concurrent = [Vec::new(), Vec::new()];
    for round in 0..CONCURRENT_ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            eprintln!(
                "[concurrent] {} round {}/{CONCURRENT_ROUNDS}: {CONCURRENT_CLIENTS} clients x {CONCURRENT_REQUESTS} GETs",
                targets[k].name,
                round + 1
            );
            concurrent[k].push(concurrent_round(targets[k], &clients[k], &image.small).await);
        }
    }

    Results {
        upstream_direct,
        cold,
        warm,
        warm_extra_pulls,
        by_digest,
        by_tag,
        head_small,
        concurrent,
    }
}

// ---------------------------------------------------------------------------------------------
// Report

impl Results {
    fn print(&self, blob_mb: u64) {
        const W: [usize; 4] = [34, 17, 15, 22];
        let row = |metric: &str, peer: String, ours: String, ratio: String| {
            println!(
                "{metric:<w0$}{peer:>w1$}{ours:>w2$}{ratio:>w3$}",
                w0 = W[0],
                w1 = W[1],
                w2 = W[2],
                w3 = W[3]
            );
        };
        let mbs = |v: f64| format!("{v:.0}");
        // Throughput: higher is better, ratio bf/peer.
        let throughput = |metric: &str, peer: f64, ours: f64| {
            row(
                metric,
                mbs(peer),
                mbs(ours),
                format!("{:.2} (bf/peer)", ours / peer),
            );
        };
        // Latency: lower is better, ratio peer/bf.
        let latency = |metric: &str, s: &[Vec<f64>; 2]| {
            let (p50, p99) = (
                [percentile(&s[0], 50.0), percentile(&s[1], 50.0)],
                [percentile(&s[0], 99.0), percentile(&s[1], 99.0)],
            );
            row(
                metric,
                format!("{:.0}/{:.0}", p50[0], p99[0]),
                format!("{:.0}/{:.0}", p50[1], p99[1]),
                format!("{:.2}/{:.2} (peer/bf)", p50[0] / p50[1], p99[0] / p99[1]),
            );
        };

        println!();
        println!("mirror benchmark (blob {blob_mb} MiB, same machine, same run)");
        row(
            "metric",
            "docker-registry".into(),
            "bootfactory".into(),
            "ratio (>1: bf better)".into(),
        );
        throughput("cold blob pull (MB/s)", self.cold[0], self.cold[1]);
        throughput(
            &format!("warm blob pull median (MB/s) n={WARM_RUNS}"),
            median(&self.warm[0]),
            median(&self.warm[1]),
        );
        let min_max = |v: &[f64]| {
            let v = sorted(v);
            format!("{:.0}..{:.0}", v[0], v[v.len() - 1])
        };
        row(
            "warm blob pull min..max (MB/s)",
            min_max(&self.warm[0]),
            min_max(&self.warm[1]),
            String::new(),
        );
        latency("manifest by digest p50/p99 (us)", &self.by_digest);
        latency("manifest by tag p50/p99 (us) [*]", &self.by_tag);
        latency("HEAD small blob p50/p99 (us)", &self.head_small);
        throughput(
            &format!("{CONCURRENT_CLIENTS}x{CONCURRENT_REQUESTS} small blob GETs (req/s)"),
            median(&self.concurrent[0]),
            median(&self.concurrent[1]),
        );
        println!();
        println!(
            "MB = 10^6 bytes. Throughput ratios are bf/peer, latency ratios peer/bf: above 1 means bootfactory did better."
        );
        println!(
            "Latencies: {LATENCY_REQUESTS} sequential requests per server and metric on one keep-alive connection, \
             after {LATENCY_WARMUP} warm-up requests, alternating between the servers; client time included."
        );
        let rounds = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "Concurrent: median of {CONCURRENT_ROUNDS} rounds of {CONCURRENT_CLIENTS} connections each \
             (docker-registry {}; bootfactory {} req/s).",
            rounds(&self.concurrent[0]),
            rounds(&self.concurrent[1]),
        );
        println!(
            "Warm pulls, all runs in MB/s: docker-registry {}; bootfactory {}.",
            rounds(&self.warm[0]),
            rounds(&self.warm[1]),
        );
        println!(
            "[*] docker-registry's proxy asks the upstream (a manifest HEAD) on every request by tag and \
             rewrites its local tag link (with fsync), while bootfactory trusts a tag for upstream.tagTTLSeconds (300 s here): this affects the \
             \"manifest by tag\" row only; by-digest and blob hits are served from local storage by both."
        );
        println!(
            "Cold pull: distribution downloads a missed blob twice (one stream to the client, one into its \
             storage in the background); bootfactory downloads it once, hashes each byte once, streams it \
             to the client as it arrives while a writer thread stores it, and ends the response only after \
             the digest matched (the fsync and the index entry follow and gate only the store commit)."
        );
        println!(
            "Reference: the same layer straight from the upstream docker-registry: {:.0} MB/s (the ceiling for a cold pull).",
            self.upstream_direct
        );
        println!(
            "Warm pulls: after {} / {} unmeasured pull(s) it took until each server answered from its own storage.",
            self.warm_extra_pulls[0], self.warm_extra_pulls[1]
        );
        println!(
            "bootfactory runs inside this benchmark's tokio runtime (sharing its threads with the client); \
             docker-registry is a separate process. Figures move between runs (by tens of percent on a busy \
             machine): run it more than once and compare medians."
        );
    }
}
