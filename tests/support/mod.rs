//! Shared helpers for integration tests: an in-process bootfactory on a loopback port with a
//! temporary data directory.
#![allow(dead_code)]

pub mod browser;
pub mod fake_registry;
pub mod fault;
#[path = "../../benches/support/guard.rs"]
pub mod guard;
pub mod keys;
pub mod lab;
pub mod netns;
pub mod tools;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bootfactory::config::{Config, Override};
use bootfactory::server::App;

/// A running in-process server; stopped when dropped.
pub struct TestServer {
    /// Base URL, e.g. `http://127.0.0.1:34567`.
    pub url: String,
    /// The listener address.
    pub addr: SocketAddr,
    /// The data directory (kept until drop).
    pub data: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with `overrides` (`key`, `value`) on top of a loopback listener.
    pub async fn start(overrides: &[(&str, &str)]) -> TestServer {
        let data = tempfile::tempdir().expect("tempdir");
        Self::start_in(data, overrides).await
    }

    /// Starts a server on an existing data directory.
    pub async fn start_in(data: tempfile::TempDir, overrides: &[(&str, &str)]) -> TestServer {
        let dir = data.path().to_string_lossy().to_string();
        let mut all = vec![("dataDir", dir.as_str()), ("http.listen", "127.0.0.1:0")];
        all.extend_from_slice(overrides);
        let overrides: Vec<Override> = all
            .iter()
            .map(|(k, v)| Override {
                key: k.to_string(),
                value: v.to_string(),
                source_name: format!("test {k}"),
            })
            .collect();
        let config = Config::load(None, &overrides).expect("config");
        // sled releases a data directory's lock when its flusher thread notices the last
        // handle is gone, which can lag a drop in this same process (a test that stopped a
        // server or closed a store just before): wait for it rather than fail.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let app = loop {
            match App::open(config.clone()).await {
                Ok(app) => break app,
                Err(e)
                    if e.chain().any(|c| {
                        matches!(
                            c.downcast_ref::<bootfactory::store::StoreError>(),
                            Some(bootfactory::store::StoreError::Locked { .. })
                        )
                    }) && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("open: {e:?}"),
            }
        };
        let bound = app.bind().await.expect("bind");
        let addr = bound.http_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            bound
                .serve(async {
                    let _ = rx.await;
                })
                .await
                .expect("serve");
        });
        TestServer {
            url: format!("http://{addr}"),
            addr,
            data,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server and waits for it; returns the data directory for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        std::mem::replace(&mut self.data, tempfile::tempdir().unwrap())
    }

    /// A path inside the data directory.
    pub fn data_path(&self, rel: &str) -> PathBuf {
        self.data.path().join(rel)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Sends a raw HTTP/1.1 request (so paths like `/a/../b` reach the server unnormalised) and
/// returns the status code and the body.
pub async fn raw_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Writes the fixture release with `options` into a temporary layout and imports it into the
/// store in `data` (in-process, the store closed afterwards). Returns the layout (for
/// re-imports) and the release description.
pub async fn import_fixture(
    data: &Path,
    options: &bootfactory::fixture::FixtureOptions,
) -> (tempfile::TempDir, bootfactory::fixture::FixtureRelease) {
    use bootfactory::oci::bundle::{self, NoProgress};
    let layout = tempfile::tempdir().unwrap();
    let release = bootfactory::fixture::write_release(layout.path(), options).expect("fixture");
    let store = bootfactory::store::Store::open(data).unwrap();
    let catalog = bootfactory::oci::ImageCatalog::new(store.clone()).unwrap();
    let report = bundle::import(&catalog, layout.path(), None, &NoProgress)
        .await
        .unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    store.flush().await.unwrap();
    (layout, release)
}

/// `POST <url>/schematics` with `body`; asserts 201 and returns the schematic ID.
pub async fn post_schematic(url: &str, body: &str) -> String {
    bootfactory::init_crypto();
    let resp = reqwest::Client::new()
        .post(format!("{url}/schematics"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let json: serde_json::Value = resp.json().await.unwrap();
    json["id"].as_str().unwrap().to_string()
}

/// The value of a Prometheus sample named exactly `name` (the first line starting with
/// `name ` or `name{`) on `<url>/metrics`.
pub async fn metric(url: &str, name: &str) -> Option<f64> {
    bootfactory::init_crypto();
    let text = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `GET url` answered with JSON (any status): the parsed body.
pub async fn get_json(url: &str) -> serde_json::Value {
    bootfactory::init_crypto();
    reqwest::Client::new()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A finished command's stdout and stderr together, for assertion messages and searches.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
