//! Issue 10, defect 1 over HTTP: the alias-expansion probe POSTed to a real server on
//! loopback answers 400 quickly and the process's peak memory barely moves (it used to abort
//! on a 32 GB allocation, or store a 100 MB blob for a 104 KB request).
//!
//! Alone in its test binary so that the peak-RSS figure is this test's own.

mod support;

use std::time::{Duration, Instant};

use support::TestServer;

/// The probe from issue 10: one 800 KB anchored string and 40,000 aliases of it (~960 KB,
/// under the 1 MiB body limit), i.e. 32 GB once expanded.
fn alias_bomb(anchored: usize, aliases: usize) -> Vec<u8> {
    let mut doc = format!(
        "customization: {{extraKernelArgs: [&a \"{}\"",
        "x".repeat(anchored)
    );
    for _ in 0..aliases {
        doc.push_str(", *a");
    }
    doc.push_str("]}\n");
    doc.into_bytes()
}

/// Peak resident set size of this process in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::new()
}

#[tokio::test]
async fn http_alias_bomb_answers_400_quickly_in_bounded_memory() {
    let server = TestServer::start(&[]).await;
    let before = peak_rss_kib();
    for (anchored, aliases) in [(800_000, 40_000), (2_600, 40_000)] {
        let started = Instant::now();
        let resp = client()
            .post(format!("{}/schematics", server.url))
            .body(alias_bomb(anchored, aliases))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let text = resp.text().await.unwrap();
        assert!(text.contains("expands to more than"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let grown_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    eprintln!("peak RSS grew by {grown_mib} MiB");
    assert!(grown_mib < 64, "peak RSS grew by {grown_mib} MiB");
    // Nothing was stored.
    let store_blobs = std::fs::read_dir(server.data_path("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(store_blobs, 0);
    // The server still answers.
    let resp = client()
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
