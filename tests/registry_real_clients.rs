//! The mirror with real parts: Debian's `docker-registry` plays ghcr.io (the fixture Talos
//! release is pushed into it with skopeo), bootfactory mirrors it, and skopeo and podman pull
//! through bootfactory. Also: air-gap bundles made by skopeo, and export → import.

mod support;

use std::process::Command;

use bootfactory::fixture::{FixtureOptions, write_release};
use support::TestServer;
use support::tools::{DockerRegistry, have, podman, push_layout, skopeo, skopeo_ok};

const IMAGER: &str = "ghcr.io/siderolabs/imager:v1.11.6";

fn bf() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bootfactory"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BOOTFACTORY_") {
            c.env_remove(k);
        }
    }
    c
}

/// A docker-registry upstream holding the fixture's imager and extension catalog.
fn upstream_with_fixture() -> (
    DockerRegistry,
    tempfile::TempDir,
    bootfactory::fixture::FixtureRelease,
) {
    let layout = tempfile::tempdir().unwrap();
    let release = write_release(
        layout.path(),
        &FixtureOptions {
            versions: vec!["v1.11.6".into()],
            ..Default::default()
        },
    )
    .expect("fixture");
    let upstream = DockerRegistry::start(None);
    push_layout(
        layout.path(),
        &[
            (
                IMAGER,
                format!("{}/siderolabs/imager:v1.11.6", upstream.addr),
            ),
            (
                "ghcr.io/siderolabs/extensions:v1.11.6",
                format!("{}/siderolabs/extensions:v1.11.6", upstream.addr),
            ),
        ],
    );
    (upstream, layout, release)
}

async fn mirror_server(upstream: &DockerRegistry, extra: &[(&str, &str)]) -> TestServer {
    let registries = format!("{{ghcr.io: {{endpoint: '{}'}}}}", upstream.url());
    let mut overrides = vec![
        ("upstream.registries", registries.as_str()),
        ("upstream.retries", "0"),
    ];
    overrides.extend_from_slice(extra);
    TestServer::start(&overrides).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_and_podman_pull_through_bootfactory() {
    if !have("docker-registry") || !have("skopeo") {
        return;
    }
    let (mut upstream, _layout, release) = upstream_with_fixture();
    let server = mirror_server(&upstream, &[]).await;
    let bf_host = server.addr.to_string();
    let imager = release.image(IMAGER).expect("fixture imager").digest;

    // Byte-identical manifests through the mirror (path-prefix form, as Talos overridePath).
    let via_upstream = skopeo_ok(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/siderolabs/imager:v1.11.6", upstream.addr),
    ]);
    let via_mirror = tokio::task::spawn_blocking({
        let h = bf_host.clone();
        move || {
            skopeo_ok(&[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{h}/ghcr.io/siderolabs/imager:v1.11.6"),
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(via_mirror, via_upstream);
    assert_eq!(
        bootfactory::store::Digest::of_bytes(via_mirror.as_bytes()),
        imager
    );

    // A full multi-arch copy through the mirror, default-registry routing (no ns, no prefix).
    let out = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:copy", out.path().display());
    let src = format!("docker://{bf_host}/siderolabs/imager:v1.11.6");
    tokio::task::spawn_blocking(move || {
        skopeo_ok(&["copy", "--all", "--src-tls-verify=false", &src, &dest])
    })
    .await
    .unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], imager.to_string());

    // skopeo with a registries.conf mirror: asks for ghcr.io, is served by bootfactory.
    let conf = out.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "unqualified-search-registries = []\n[[registry]]\nprefix = \"ghcr.io\"\nlocation = \"ghcr.io\"\n[[registry.mirror]]\nlocation = \"{bf_host}\"\ninsecure = true\n"
        ),
    )
    .unwrap();
    let conf_arg = conf.display().to_string();
    let mirrored = tokio::task::spawn_blocking(move || {
        skopeo_ok(&[
            "--registries-conf",
            &conf_arg,
            "inspect",
            "--raw",
            "docker://ghcr.io/siderolabs/imager:v1.11.6",
        ])
    })
    .await
    .unwrap();
    assert_eq!(mirrored, via_upstream);

    let tags = tokio::task::spawn_blocking({
        let h = bf_host.clone();
        move || {
            skopeo_ok(&[
                "list-tags",
                "--tls-verify=false",
                &format!("docker://{h}/siderolabs/imager"),
            ])
        }
    })
    .await
    .unwrap();
    assert!(tags.contains("v1.11.6"), "{tags}");

    // podman, a second real client.
    if have("podman") {
        let p = tempfile::tempdir().unwrap();
        let reference = format!("{bf_host}/siderolabs/imager:v1.11.6");
        let out = tokio::task::spawn_blocking({
            let dir = p.path().to_path_buf();
            move || {
                podman(
                    &dir,
                    &["pull", "--tls-verify=false", "--arch", "arm64", &reference],
                )
            }
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "podman pull: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Upstream stopped: what is cached is still served.
    upstream.stop();
    let cached = tokio::task::spawn_blocking(move || {
        skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{bf_host}/siderolabs/imager:v1.11.6"),
        ])
    })
    .await
    .unwrap();
    assert!(
        cached.status.success(),
        "{}",
        String::from_utf8_lossy(&cached.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_layouts_import_offline_and_export_round_trips() {
    if !have("docker-registry") || !have("skopeo") {
        return;
    }
    let (upstream, _layout, release) = upstream_with_fixture();
    let imager = release.image(IMAGER).unwrap().digest;

    // What an operator does at the connected site: skopeo copies into an OCI archive (tag only).
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("imager.tar");
    skopeo_ok(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{}/siderolabs/imager:v1.11.6", upstream.addr),
        &format!("oci-archive:{}:v1.11.6", archive.display()),
    ]);
    drop(upstream);

    // At the air-gapped site: import with --name (the archive only carries the tag).
    let data = tempfile::tempdir().unwrap();
    let out = bf()
        .args(["mirror", "import", "--offline", "--data-dir"])
        .arg(data.path())
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an entry with only a tag needs --name"
    );
    let out = bf()
        .args([
            "mirror",
            "import",
            "--offline",
            "--name",
            "ghcr.io/siderolabs/imager",
            "--data-dir",
        ])
        .arg(data.path())
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains(&format!("imported {IMAGER} {imager}")),
        "{stdout}"
    );

    // Re-running is cheap and changes nothing (restartable).
    let again = bf()
        .args([
            "mirror",
            "import",
            "--offline",
            "--name",
            "ghcr.io/siderolabs/imager",
            "--data-dir",
        ])
        .arg(data.path())
        .arg(&archive)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 blobs written"));

    let list = bf()
        .args(["mirror", "list", "--json", "--offline", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    let entries: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(entries[0]["reference"], IMAGER);
    assert_eq!(entries[0]["missing_blobs"], 0);

    // Export from this store, import into another: same digests, served offline.
    let bundle = work.path().join("bundle.tar");
    let out = bf()
        .args(["mirror", "export", "--offline", "--out"])
        .arg(&bundle)
        .arg(IMAGER)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data2 = tempfile::tempdir().unwrap();
    let out = bf()
        .args(["mirror", "import", "--offline", "--data-dir"])
        .arg(data2.path())
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = TestServer::start_in(data2, &[("offline", "true")]).await;
    let host = server.addr.to_string();
    let raw = tokio::task::spawn_blocking(move || {
        skopeo_ok(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{host}/ghcr.io/siderolabs/imager:v1.11.6"),
        ])
    })
    .await
    .unwrap();
    assert_eq!(bootfactory::store::Digest::of_bytes(raw.as_bytes()), imager);
    let out = tempfile::tempdir().unwrap();
    let host = server.addr.to_string();
    let dest = format!("oci:{}:x", out.path().display());
    tokio::task::spawn_blocking(move || {
        skopeo_ok(&[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{host}/ghcr.io/siderolabs/imager:v1.11.6"),
            &dest,
        ])
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_layout_imports_directly() {
    let layout = tempfile::tempdir().unwrap();
    let release = write_release(layout.path(), &FixtureOptions::default()).expect("fixture");
    let data = tempfile::tempdir().unwrap();
    let out = bf()
        .args(["mirror", "import", "--offline", "--data-dir"])
        .arg(data.path())
        .arg(layout.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (reference, info) in &release.images {
        assert!(
            stdout.contains(&format!("imported {reference} {}", info.digest)),
            "{reference} missing from:\n{stdout}"
        );
    }
}
