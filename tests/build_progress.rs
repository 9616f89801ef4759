//! Running builds are visible while they run: `GET /api/v1/builds` (admin) lists them with
//! their phase and bytes written, `/metrics` counts them, and both are empty again when the
//! builds are done, when they are listed as recent builds with their outcome and bytes. With
//! one build slot, a second build waits as `queued`.

mod support;

use std::time::Duration;

use bootfactory::fixture::FixtureOptions;
use serde_json::Value;
use support::TestServer;

const TOKEN: &str = "test-admin-token";

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::new()
}

async fn builds(url: &str) -> Vec<Value> {
    let v: Value = client()
        .get(format!("{url}/api/v1/builds"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["builds"].as_array().expect("builds").clone()
}

async fn metrics(url: &str) -> String {
    client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_builds_are_listed_and_counted_while_they_run() {
    let data = tempfile::tempdir().unwrap();
    let (_layout, _) = support::import_fixture(data.path(), &FixtureOptions::default()).await;
    let server = TestServer::start_in(
        data,
        &[
            ("offline", "true"),
            ("api.adminToken", TOKEN),
            ("build.maxConcurrency", "1"),
        ],
    )
    .await;
    // The admin API needs the token.
    let anonymous = client()
        .get(format!("{}/api/v1/builds", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(builds(&server.url).await.is_empty());

    let id = support::post_schematic(
        &server.url,
        "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/gvisor, siderolabs/amd-ucode, siderolabs/i915-ucode]\n",
    )
    .await;
    // Four builds at once on one slot: one builds while the others wait.
    let assets: Vec<String> = ["v1.11.6", "v1.8.4"]
        .iter()
        .flat_map(|v| {
            ["amd64", "arm64"]
                .map(|arch| format!("{}/image/{id}/{v}/initramfs-{arch}.xz", server.url))
        })
        .collect();
    let requests: Vec<_> = assets
        .iter()
        .map(|url| {
            let url = url.clone();
            tokio::spawn(async move {
                let r = client().get(url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap().len()
            })
        })
        .collect();

    let mut seen_building: Option<Value> = None;
    let mut seen_queued = false;
    let mut seen_squashfs = false;
    let mut metric_building = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !requests.iter().all(|r| r.is_finished()) && tokio::time::Instant::now() < deadline {
        for b in builds(&server.url).await {
            let phase = b["phase"].as_str().unwrap().to_string();
            assert_eq!(b["schematic"], id.as_str(), "{b}");
            assert_eq!(b["kind"], "Initramfs", "{b}");
            match phase.as_str() {
                "queued" => seen_queued = true,
                "squashfs" => {
                    // Three extensions and the schematic's own.
                    assert_eq!(b["total"], 4, "{b}");
                    seen_squashfs = true;
                    seen_building.get_or_insert(b.clone());
                }
                _ => {
                    seen_building.get_or_insert(b.clone());
                }
            }
        }
        let text = metrics(&server.url).await;
        if text.contains("bootfactory_builds_running{state=\"building\"} 1")
            && text
                .lines()
                .any(|l| l.starts_with("bootfactory_build_bytes_written{asset=\""))
        {
            metric_building = true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for r in requests {
        assert!(r.await.unwrap() > 0);
    }
    let building = seen_building.expect("a running build was listed");
    assert!(
        ["v1.11.6", "v1.8.4"].contains(&building["version"].as_str().unwrap()),
        "{building}"
    );
    assert!(building["queuedAt"].as_u64().unwrap() > 0, "{building}");
    assert!(seen_queued, "builds waited for the only slot");
    assert!(
        seen_squashfs,
        "the initramfs build reported its squashfs images"
    );
    assert!(metric_building, "/metrics counted the running build");
    // Done: nothing listed, gauges back to zero.
    assert!(builds(&server.url).await.is_empty());
    // The finished builds are listed as recent, newest first, with what they stored.
    let all: Value = client()
        .get(format!("{}/api/v1/builds", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let recent = all["recent"].as_array().expect("recent");
    let initramfs: Vec<&Value> = recent.iter().filter(|b| b["kind"] == "Initramfs").collect();
    assert_eq!(initramfs.len(), 4, "{recent:?}");
    for b in &initramfs {
        assert_eq!(b["outcome"], "built", "{b}");
        assert_eq!(b["schematic"], id.as_str(), "{b}");
        assert!(b["bytes"].as_u64().unwrap() > 0, "{b}");
        assert!(b["finishedAt"].as_u64().unwrap() >= b["queuedAt"].as_u64().unwrap());
        assert!(b.get("error").is_none(), "{b}");
    }
    assert!(
        recent
            .windows(2)
            .all(|w| w[0]["finishedAt"].as_u64() >= w[1]["finishedAt"].as_u64()),
        "{recent:?}"
    );
    assert!(
        initramfs
            .iter()
            .any(|b| b["queuedSeconds"].as_f64().unwrap() > 0.0),
        "builds waited for the only slot: {initramfs:?}"
    );
    let text = metrics(&server.url).await;
    assert!(
        text.contains("bootfactory_builds_running{state=\"building\"} 0")
            && text.contains("bootfactory_builds_running{state=\"queued\"} 0"),
        "{text}"
    );
    assert!(!text.contains("bootfactory_build_bytes_written{"), "{text}");
    server.stop().await;
}
