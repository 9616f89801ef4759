//! Installer images over the registry API (`/v2/<image>/<schematic>/…`) with real clients:
//! skopeo and podman pull `metal-installer/<id>:<v>` from a bootfactory holding the fixture
//! release imported offline; the test unpacks what they got and checks it against the
//! factory's own assets and the base installer image. The cosign signature is checked with an
//! independent verifier (Python `cryptography`). Failure cases: unknown schematic, bad image
//! name, bad tags, a storm of HEAD and GET for one new image (one build), the base image
//! missing offline.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use bootfactory::fixture::{FixtureOptions, FixtureRelease};
use bootfactory::formats::pe::PeImage;
use support::TestServer;
use support::tools::{have, podman, skopeo_ok};

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::new()
}

async fn server() -> (TestServer, FixtureRelease, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let (layout, release) = support::import_fixture(data.path(), &FixtureOptions::default()).await;
    let server = TestServer::start_in(data, &[("offline", "true")]).await;
    (server, release, layout)
}

/// A JSON blob of the fixture layout.
fn fixture_json(release: &FixtureRelease, digest: &str) -> serde_json::Value {
    read_json(&blob_path(&release.layout, digest))
}

const GVISOR: &str = "customization:\n  extraKernelArgs:\n    - bootfactory.test=1\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/gvisor\n";

/// How many asset builds finished (the build latency histogram's count).
const BUILDS: &str = "image_factory_assets_build_latency_seconds_count";

fn host(server: &TestServer) -> String {
    server.url.trim_start_matches("http://").to_string()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob_path(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The entries of a gzip'd tar: name → (mode, uid, gid, mtime, bytes), in archive order.
fn tar_entries(path: &Path) -> Vec<(String, u32, u64, u64, u64, Vec<u8>)> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut archive = tar::Archive::new(gz);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header().clone();
        assert!(h.as_ustar().is_some(), "USTAR headers");
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.push((
            entry.path().unwrap().display().to_string(),
            h.mode().unwrap(),
            h.uid().unwrap(),
            h.gid().unwrap(),
            h.mtime().unwrap(),
            bytes,
        ));
    }
    out
}

async fn get_bytes(url: &str) -> Vec<u8> {
    let r = client().get(url).send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.bytes().await.unwrap().to_vec()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Checks a copied installer layout against the factory's assets for `version`.
async fn check_layout(
    server: &TestServer,
    release: &FixtureRelease,
    layout: &Path,
    id: &str,
    version: &str,
) {
    let index_json = read_json(&layout.join("index.json"));
    let index_digest = index_json["manifests"][0]["digest"].as_str().unwrap();
    let index = read_json(&blob_path(layout, index_digest));
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let arches: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(arches, ["amd64", "arm64"]);
    let v = release.version(version).unwrap();
    let unified = version != "v1.8.4";
    for child in index["manifests"].as_array().unwrap() {
        let arch = child["platform"]["architecture"].as_str().unwrap();
        assert_eq!(child["platform"]["os"], "linux");
        let manifest = read_json(&blob_path(layout, child["digest"].as_str().unwrap()));
        assert_eq!(
            manifest["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        let layers = manifest["layers"].as_array().unwrap();
        // The base installer's first layer, as the same blob, then the artifacts layer.
        let base_manifest_digest = release.image(&v.installer).unwrap().manifests[arch].to_string();
        let base_manifest = fixture_json(release, &base_manifest_digest);
        assert_eq!(layers.len(), 2, "{manifest}");
        assert_eq!(layers[0]["digest"], base_manifest["layers"][0]["digest"]);
        assert_eq!(
            layers[1]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let config = read_json(&blob_path(
            layout,
            manifest["config"]["digest"].as_str().unwrap(),
        ));
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["os"], "linux");
        let base_config =
            fixture_json(release, base_manifest["config"]["digest"].as_str().unwrap());
        assert_eq!(config["config"], base_config["config"], "config copied");
        let layer_path = blob_path(layout, layers[1]["digest"].as_str().unwrap());
        let diff_id = {
            let mut gz = flate2::read::GzDecoder::new(std::fs::File::open(&layer_path).unwrap());
            let mut tar = Vec::new();
            gz.read_to_end(&mut tar).unwrap();
            sha256(&tar)
        };
        assert_eq!(config["rootfs"]["diff_ids"][1], diff_id);
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            base_config["rootfs"]["diff_ids"][0]
        );
        // The base layer holds the installer (the fixture's prints a marker).
        let installer = if unified {
            "usr/bin/installer"
        } else {
            "bin/installer"
        };
        let base_entries = tar_entries(&blob_path(layout, layers[0]["digest"].as_str().unwrap()));
        let script = base_entries
            .iter()
            .find(|e| e.0 == installer)
            .unwrap_or_else(|| panic!("{installer} in the base layer"));
        assert!(
            String::from_utf8_lossy(&script.5).contains("bootfactory fixture"),
            "the fixture's installer"
        );
        let entries = tar_entries(&layer_path);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let base = format!("{}/image/{id}/{version}", server.url);
        if unified {
            assert_eq!(
                names,
                [
                    format!("usr/install/{arch}/systemd-boot.efi"),
                    format!("usr/install/{arch}/vmlinuz.efi")
                ]
            );
            PeImage::parse(&entries[0].5).expect("systemd-boot is a PE image");
            // The UKI: the factory's kernel and initramfs, the installer's command line and
            // the reset-maintenance profile after the main one.
            let uki = PeImage::parse(&entries[1].5).expect("the UKI parses");
            let appended: Vec<(String, Vec<u8>)> = uki
                .sections()
                .iter()
                .map(|s| {
                    (
                        String::from_utf8_lossy(s.name()).to_string(),
                        uki.section_data(s).to_vec(),
                    )
                })
                .skip_while(|(n, _)| n != ".osrel")
                .collect();
            let order: Vec<&str> = appended.iter().map(|(n, _)| n.as_str()).collect();
            let uname: &[&str] = if arch == "amd64" { &[".uname"] } else { &[] };
            let want: Vec<&str> = [".osrel", ".cmdline"]
                .into_iter()
                .chain(uname.iter().copied())
                .chain([".linux", ".initrd", ".profile", ".profile", ".cmdline"])
                .collect();
            assert_eq!(order, want, "{arch}");
            let section = |i: usize| appended[i].1.clone();
            let cmdline = String::from_utf8(section(1)).unwrap();
            assert!(
                cmdline.contains(" bootfactory.test=1"),
                "extraKernelArgs baked in: {cmdline}"
            );
            assert_eq!(
                cmdline.as_bytes(),
                get_bytes(&format!("{base}/cmdline-metal-{arch}")).await
            );
            let n = appended.len();
            assert_eq!(
                section(n - 5),
                get_bytes(&format!("{base}/kernel-{arch}")).await,
                ".linux"
            );
            assert_eq!(
                section(n - 4),
                get_bytes(&format!("{base}/initramfs-{arch}.xz")).await,
                ".initrd: the factory's initramfs with extensions"
            );
            assert_eq!(section(n - 3), b"ID=main");
            assert_eq!(
                section(n - 2),
                b"ID=reset-maintenance\nTITLE=Reset to maintenance mode"
            );
            assert_eq!(
                String::from_utf8(section(n - 1)).unwrap(),
                format!("{cmdline} talos.experimental.wipe=system:EPHEMERAL,STATE")
            );
        } else {
            assert_eq!(
                names,
                [
                    format!("usr/install/{arch}/initramfs.xz"),
                    format!("usr/install/{arch}/vmlinuz")
                ]
            );
            assert_eq!(
                entries[0].5,
                get_bytes(&format!("{base}/initramfs-{arch}.xz")).await,
                "the factory's initramfs with extensions"
            );
            assert_eq!(
                entries[1].5,
                get_bytes(&format!("{base}/kernel-{arch}")).await
            );
        }
        for (name, mode, uid, gid, mtime, _) in &entries {
            assert_eq!((*mode, *uid, *gid, *mtime), (0, 0, 0, 0), "{name}");
        }
    }
}

/// Verifies the cosign signature of `digest` with Python's `cryptography` (an independent
/// ECDSA implementation) against the published public key.
async fn verify_cosign(server: &TestServer, repo: &str, digest: &str) {
    let base = format!("{}/v2/{repo}", server.url);
    let tag = format!("sha256-{}.sig", digest.strip_prefix("sha256:").unwrap());
    let manifest: serde_json::Value = client()
        .get(format!("{base}/manifests/{tag}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    let signature = layer["annotations"]["dev.cosignproject.cosign/signature"]
        .as_str()
        .unwrap()
        .to_string();
    let payload = get_bytes(&format!(
        "{base}/blobs/{}",
        layer["digest"].as_str().unwrap()
    ))
    .await;
    let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(json["critical"]["image"]["docker-manifest-digest"], digest);
    assert_eq!(json["critical"]["type"], "cosign container image signature");
    let key = get_bytes(&format!("{}/oci/cosign/signing-key.pub", server.url)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pem"), &key).unwrap();
    std::fs::write(dir.path().join("payload"), &payload).unwrap();
    std::fs::write(dir.path().join("sig.b64"), &signature).unwrap();
    let script = r#"
import base64, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
d = sys.argv[1]
key = serialization.load_pem_public_key(open(d + "/key.pem", "rb").read())
sig = base64.b64decode(open(d + "/sig.b64").read())
payload = open(d + "/payload", "rb").read()
key.verify(sig, payload, ec.ECDSA(hashes.SHA256()))
try:
    key.verify(sig, payload + b" ", ec.ECDSA(hashes.SHA256()))
    sys.exit("a changed payload verified")
except Exception:
    pass
print("ok")
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(dir.path())
        .output()
        .expect("python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "cosign signature check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_and_podman_pull_the_installer_offline() {
    if !have("skopeo") {
        return;
    }
    let (server, release, _layout) = server().await;
    let id = support::post_schematic(&server.url, GVISOR).await;
    let host = host(&server);
    for version in ["v1.8.4", "v1.11.6"] {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("oci");
        let src = format!("docker://{host}/metal-installer/{id}:{version}");
        let dst = format!("oci:{}:installer", layout.display());
        tokio::task::spawn_blocking(move || {
            skopeo_ok(&["copy", "--all", "--src-tls-verify=false", &src, &dst])
        })
        .await
        .unwrap();
        check_layout(&server, &release, &layout, &id, version).await;
        let index = read_json(&layout.join("index.json"));
        let digest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        verify_cosign(&server, &format!("metal-installer/{id}"), &digest).await;
        // The referrers API names the signature.
        let referrers: serde_json::Value = support::get_json(&format!(
            "{}/v2/metal-installer/{id}/referrers/{digest}",
            server.url
        ))
        .await;
        assert_eq!(referrers["manifests"].as_array().unwrap().len(), 1);
    }
    if have("podman") {
        let p = tempfile::tempdir().unwrap();
        let reference = format!("{host}/metal-installer/{id}:v1.8.4");
        let dir = p.path().to_path_buf();
        let out = tokio::task::spawn_blocking(move || {
            let pulled = podman(&dir, &["pull", "--tls-verify=false", &reference]);
            let listed = podman(&dir, &["image", "inspect", &reference]);
            (pulled, listed)
        })
        .await
        .unwrap();
        assert!(
            out.0.status.success(),
            "podman pull: {}",
            String::from_utf8_lossy(&out.0.stderr)
        );
        let inspect: serde_json::Value = serde_json::from_slice(&out.1.stdout).unwrap();
        assert_eq!(inspect[0]["Architecture"], "amd64");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_upstream_statuses_as_oci_documents() {
    let (server, _release, _layout) = server().await;
    let id = support::post_schematic(&server.url, "customization: {}").await;
    let unknown = "0".repeat(64);
    let cases: BTreeMap<String, (u16, &str)> = [
        (
            format!("metal-installer/{unknown}/manifests/v1.11.6"),
            (404, "NAME_UNKNOWN"),
        ),
        (
            format!("foo-bar/{id}/manifests/v1.11.6"),
            (400, "NAME_INVALID"),
        ),
        (
            format!("metal-installer/{id}/manifests/v1.2.x"),
            (400, "TAG_INVALID"),
        ),
        (
            format!("metal-installer/{id}/manifests/v9.9.9"),
            (404, "MANIFEST_UNKNOWN"),
        ),
        (
            format!("metal-installer/{id}/manifests/nightly"),
            (404, "MANIFEST_UNKNOWN"),
        ),
        (
            format!("metal-installer/{id}/manifests/sha256:{}", "a".repeat(64)),
            (404, "MANIFEST_UNKNOWN"),
        ),
        (
            format!("metal-installer/{id}/blobs/sha256:{}", "a".repeat(64)),
            (404, "BLOB_UNKNOWN"),
        ),
        (
            format!("metal-installer/{id}/referrers/notadigest"),
            (404, "NAME_UNKNOWN"),
        ),
        (
            format!("metal-installer-secureboot/{id}/manifests/v1.11.6"),
            (400, "UNSUPPORTED"),
        ),
        (
            format!("nosuchplatform-installer/{id}/manifests/v1.11.6"),
            (400, "UNSUPPORTED"),
        ),
        (
            format!("metal-installer/{id}/tags/list"),
            (404, "NAME_UNKNOWN"),
        ),
    ]
    .into_iter()
    .collect();
    for (path, (status, code)) in cases {
        let r = client()
            .get(format!("{}/v2/{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], code, "{path}: {body}");
    }
    // `latest` is the newest stable version.
    let r = client()
        .head(format!("{}/v2/installer/{id}/manifests/latest", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let latest = r.headers()["docker-content-digest"].clone();
    let r = client()
        .head(format!(
            "{}/v2/installer/{id}/manifests/v1.11.6",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["docker-content-digest"], latest);
    // The same image as a mirror of factory.talos.dev: containerd's `?ns=` and Talos'
    // `overridePath` host prefix.
    for path in [
        format!("installer/{id}/manifests/v1.11.6?ns=factory.talos.dev"),
        format!("factory.talos.dev/installer/{id}/manifests/v1.11.6"),
    ] {
        let r = client()
            .head(format!("{}/v2/{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["docker-content-digest"], latest, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_head_and_get_builds_once() {
    let (server, _release, _layout) = server().await;
    let id = support::post_schematic(&server.url, GVISOR).await;
    let url = format!("{}/v2/metal-installer/{id}/manifests/v1.8.4", server.url);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let req = if i % 2 == 0 {
                client().head(&url)
            } else {
                client().get(&url)
            };
            let r = req.send().await.unwrap();
            (
                r.status().as_u16(),
                r.headers()["docker-content-digest"]
                    .to_str()
                    .unwrap()
                    .to_string(),
            )
        }));
    }
    let mut digests = std::collections::BTreeSet::new();
    for t in tasks {
        let (status, digest) = t.await.unwrap();
        assert_eq!(status, 200);
        digests.insert(digest);
    }
    assert_eq!(digests.len(), 1, "{digests:?}");
    // Two initramfs builds (amd64, arm64) and two artifacts layers: nothing built twice.
    let builds = support::metric(&server.url, BUILDS)
        .await
        .expect("build latency count");
    assert_eq!(builds, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_base_installer_names_the_image_and_the_import() {
    // A release whose installer-base was never imported.
    let data = tempfile::tempdir().unwrap();
    let options = FixtureOptions {
        versions: vec!["v1.11.6".into()],
        ..FixtureOptions::default()
    };
    import_fixture_without(data.path(), &options, "installer-base").await;
    let server = TestServer::start_in(data, &[("offline", "true")]).await;
    let id = support::post_schematic(&server.url, "customization: {}").await;
    let r = client()
        .get(format!(
            "{}/v2/metal-installer/{id}/manifests/v1.11.6",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("installer-base:v1.11.6") && body.contains("mirror import"),
        "{body}"
    );
}

/// Imports the fixture release without the images whose reference contains `leave_out`.
async fn import_fixture_without(data: &Path, options: &FixtureOptions, leave_out: &str) {
    use bootfactory::oci::bundle::{self, NoProgress};
    let layout = tempfile::tempdir().unwrap();
    bootfactory::fixture::write_release(layout.path(), options).expect("fixture");
    let index_path = layout.path().join("index.json");
    let mut index = read_json(&index_path);
    index["manifests"].as_array_mut().unwrap().retain(|m| {
        !m["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap_or_default()
            .contains(leave_out)
    });
    std::fs::write(&index_path, index.to_string()).unwrap();
    let store = bootfactory::store::Store::open(data).unwrap();
    let catalog = bootfactory::oci::ImageCatalog::new(store.clone()).unwrap();
    bundle::import(&catalog, layout.path(), None, &NoProgress)
        .await
        .unwrap();
    store.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installer_tarballs_are_the_images_podman_loads() {
    let (server, _release, _layout) = server().await;
    let id = support::post_schematic(&server.url, GVISOR).await;
    for (version, path, base) in [
        (
            "v1.11.6",
            "metal-installer-amd64.tar",
            "siderolabs/installer-base:v1.11.6",
        ),
        (
            "v1.8.4",
            "installer-arm64.tar",
            "siderolabs/installer:v1.8.4",
        ),
    ] {
        let tarball = get_bytes(&format!("{}/image/{id}/{version}/{path}", server.url)).await;
        let mut archive = tar::Archive::new(tarball.as_slice());
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            assert_eq!(entry.header().mode().unwrap(), 0o644);
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            files.push((entry.path().unwrap().display().to_string(), bytes));
        }
        let (last, manifest) = files.last().unwrap();
        assert_eq!(last, "manifest.json");
        let manifest: serde_json::Value = serde_json::from_slice(manifest).unwrap();
        assert_eq!(manifest[0]["RepoTags"][0], base);
        let config_name = manifest[0]["Config"].as_str().unwrap();
        assert_eq!(files[0].0, config_name);
        assert_eq!(
            sha256(&files[0].1),
            config_name,
            "config named by its digest"
        );
        // The same image the registry serves for that architecture.
        let arch = if path.contains("arm64") {
            "arm64"
        } else {
            "amd64"
        };
        let image = path.trim_end_matches(&format!("-{arch}.tar"));
        let index: serde_json::Value = support::get_json(&format!(
            "{}/v2/{image}/{id}/manifests/{version}",
            server.url
        ))
        .await;
        let child = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let image_manifest: serde_json::Value =
            support::get_json(&format!("{}/v2/{image}/{id}/manifests/{child}", server.url)).await;
        assert_eq!(image_manifest["config"]["digest"], config_name);
        let layers: Vec<String> = image_manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                format!(
                    "{}.tar.gz",
                    l["digest"].as_str().unwrap().trim_start_matches("sha256:")
                )
            })
            .collect();
        assert_eq!(manifest[0]["Layers"], serde_json::json!(layers));
        for (name, bytes) in &files[1..files.len() - 1] {
            assert_eq!(
                format!("{}.tar.gz", sha256(bytes).trim_start_matches("sha256:")),
                *name
            );
        }
        if have("podman") && arch == "amd64" {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("installer.tar");
            std::fs::write(&file, &tarball).unwrap();
            let d = dir.path().to_path_buf();
            let (loaded, inspect) = tokio::task::spawn_blocking(move || {
                let loaded = podman(&d, &["load", "-i", file.to_str().unwrap()]);
                let inspect = podman(&d, &["image", "inspect", &format!("localhost/{base}")]);
                (loaded, inspect)
            })
            .await
            .unwrap();
            assert!(
                loaded.status.success(),
                "podman load: {}",
                String::from_utf8_lossy(&loaded.stderr)
            );
            assert!(
                inspect.status.success(),
                "podman image inspect: {}{}",
                String::from_utf8_lossy(&loaded.stdout),
                String::from_utf8_lossy(&inspect.stderr)
            );
            let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
            assert_eq!(inspect[0]["Architecture"], "amd64");
            assert_eq!(inspect[0]["RootFS"]["Layers"].as_array().unwrap().len(), 2);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_installer_is_listed_and_exported_by_the_mirror_cli() {
    let (server, _release, _layout) = server().await;
    let id = support::post_schematic(&server.url, "customization: {}").await;
    let r = client()
        .head(format!(
            "{}/v2/metal-installer/{id}/manifests/v1.8.4",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let index = r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string();
    let data = server.stop().await;
    let bin = env!("CARGO_BIN_EXE_bootfactory");
    let reference = format!("bootfactory.invalid/metal-installer/{id}:v1.8.4");
    let list = std::process::Command::new(bin)
        .args(["mirror", "list", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success() && listed.contains(&reference),
        "{listed}"
    );
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("installer.tar");
    let export = std::process::Command::new(bin)
        .args(["mirror", "export", "--data-dir"])
        .arg(data.path())
        .arg("--out")
        .arg(&tar)
        .arg(&reference)
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    // The exported layout names the index under its reference.
    let mut archive = tar::Archive::new(std::fs::File::open(&tar).unwrap());
    let mut index_json = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("index.json") {
            let mut s = String::new();
            entry.read_to_string(&mut s).unwrap();
            index_json = Some(s);
        }
    }
    let index_json = index_json.expect("index.json");
    assert!(index_json.contains(&index), "{index_json}");
}

const RPI: &str = "overlay:\n  image: siderolabs/sbc-raspberrypi\n  name: rpi_generic\n  options:\n    configTxtAppend: dtoverlay=x\n";

/// A layer entry: (name, is a directory, mode, uid, gid, mtime, bytes).
type Entry = (String, bool, u32, u64, u64, u64, Vec<u8>);

/// Every entry of a tar layer, gzip'd or not, names without a trailing `/`, in archive order.
fn layer_entries(blob: &[u8]) -> Vec<Entry> {
    let reader: Box<dyn Read + '_> = if blob.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(blob))
    } else {
        Box::new(blob)
    };
    let mut archive = tar::Archive::new(reader);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header().clone();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let name = entry.path().unwrap().display().to_string();
        out.push((
            name.trim_end_matches('/').to_string(),
            h.entry_type() == tar::EntryType::Directory,
            h.mode().unwrap(),
            h.uid().unwrap(),
            h.gid().unwrap(),
            h.mtime().unwrap(),
            bytes,
        ));
    }
    out
}

fn gunzip(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(blob)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// What the overlay layer must hold for `arch`, from the fixture's overlay image: every entry
/// below its `artifacts/` (directories too, same modes and bytes) as `overlay/artifacts/…`,
/// `overlay/extra-options` (the options as YAML, 0644) and `overlay/installers/default` (the
/// image's `installers/rpi_generic`, 0755), sorted. Like the imager's walks, no entry for
/// `overlay/`, `overlay/artifacts` or `overlay/installers` themselves.
fn expected_overlay_layer(release: &FixtureRelease, arch: &str) -> Vec<Entry> {
    let v = release.version("v1.11.6").unwrap();
    let image = release.image(&v.overlays["rpi_generic"].image).unwrap();
    let manifest = fixture_json(release, &image.manifests[arch].to_string());
    let mut files = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let blob = std::fs::read(blob_path(
            &release.layout,
            layer["digest"].as_str().unwrap(),
        ))
        .unwrap();
        files.extend(layer_entries(&blob));
    }
    let installer = files
        .iter()
        .find(|e| e.0 == "installers/rpi_generic")
        .expect("the fixture's installers/rpi_generic")
        .6
        .clone();
    assert!(installer.starts_with(b"#!/bin/sh"));
    let mut want: Vec<Entry> = files
        .into_iter()
        .filter(|e| e.0.starts_with("artifacts/"))
        .map(|(name, dir, mode, _, _, _, bytes)| {
            (format!("overlay/{name}"), dir, mode, 0, 0, 0, bytes)
        })
        .collect();
    want.push((
        "overlay/extra-options".into(),
        false,
        0o644,
        0,
        0,
        0,
        b"configTxtAppend: dtoverlay=x\n".to_vec(),
    ));
    want.push((
        "overlay/installers/default".into(),
        false,
        0o755,
        0,
        0,
        0,
        installer,
    ));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        want.iter().filter(|e| e.1).count() >= 3 && want.len() >= 8,
        "the fixture's overlay has nested directories and files: {:?}",
        want.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlay_schematic_adds_the_overlay_layer() {
    let (server, release, _layout) = server().await;
    let id = support::post_schematic(&server.url, RPI).await;
    let base = format!("{}/v2/metal-installer/{id}", server.url);
    let get = |url: String, accept: &'static str| async move {
        let r = client()
            .get(&url)
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{url}");
        r.bytes().await.unwrap().to_vec()
    };
    let index: serde_json::Value = serde_json::from_slice(
        &get(
            format!("{base}/manifests/v1.11.6"),
            "application/vnd.oci.image.index.v1+json",
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let v = release.version("v1.11.6").unwrap();
    let children = index["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2, "{index}");
    for child in children {
        let arch = child["platform"]["architecture"].as_str().unwrap();
        let digest = child["digest"].as_str().unwrap();
        let bytes = get(
            format!("{base}/manifests/{digest}"),
            "application/vnd.oci.image.manifest.v1+json",
        )
        .await;
        assert_eq!(sha256(&bytes), digest);
        let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(
            layers.len(),
            3,
            "{arch}: base, artifacts, overlay: {manifest}"
        );
        let base_manifest = fixture_json(
            &release,
            &release.image(&v.installer).unwrap().manifests[arch].to_string(),
        );
        assert_eq!(layers[0]["digest"], base_manifest["layers"][0]["digest"]);
        let mut blobs = Vec::new();
        for layer in layers {
            let d = layer["digest"].as_str().unwrap();
            let blob = get(format!("{base}/blobs/{d}"), "*/*").await;
            assert_eq!(sha256(&blob), d);
            assert_eq!(layer["size"].as_u64(), Some(blob.len() as u64));
            blobs.push(blob);
        }
        for layer in &layers[1..] {
            assert_eq!(
                layer["mediaType"],
                "application/vnd.oci.image.layer.v1.tar+gzip"
            );
        }
        // The artifacts layer is the one without the overlay.
        let artifacts: Vec<String> = layer_entries(&blobs[1]).into_iter().map(|e| e.0).collect();
        assert_eq!(
            artifacts,
            [
                format!("usr/install/{arch}/systemd-boot.efi"),
                format!("usr/install/{arch}/vmlinuz.efi")
            ]
        );
        // The overlay layer, entry by entry: names, kinds, modes, owners, mtimes, bytes.
        let got = layer_entries(&blobs[2]);
        let want = expected_overlay_layer(&release, arch);
        let names = |e: &[Entry]| e.iter().map(|e| e.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&got), names(&want), "{arch}: overlay layer entries");
        assert_eq!(got, want, "{arch}: overlay layer content");
        let mut sorted = names(&got);
        sorted.sort();
        assert_eq!(sorted, names(&got), "sorted");
        // diff_ids: the base's, then the two layers' uncompressed digests.
        let config_digest = manifest["config"]["digest"].as_str().unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&get(format!("{base}/blobs/{config_digest}"), "*/*").await)
                .unwrap();
        let base_config = fixture_json(
            &release,
            base_manifest["config"]["digest"].as_str().unwrap(),
        );
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!(diff_ids.len(), 3, "{config}");
        assert_eq!(diff_ids[0], base_config["rootfs"]["diff_ids"][0]);
        assert_eq!(diff_ids[1], sha256(&gunzip(&blobs[1])).as_str());
        assert_eq!(diff_ids[2], sha256(&gunzip(&blobs[2])).as_str());
        assert_eq!(config["architecture"], arch);
    }
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_overlay_is_a_400_before_any_build() {
    let (server, _release, _layout) = server().await;
    let id = support::post_schematic(
        &server.url,
        "overlay:\n  image: siderolabs/sbc-nosuch\n  name: nosuch_board\n",
    )
    .await;
    let r = client()
        .get(format!(
            "{}/v2/metal-installer/{id}/manifests/v1.11.6",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNSUPPORTED", "{body}");
    assert_eq!(
        body["errors"][0]["message"],
        "error enhancing profile from schematic: official overlay \"nosuch_board\" is not available for Talos version v1.11.6",
        "{body}"
    );
    // Refused up front: no initramfs, UKI or layer was built for it.
    let builds = support::metric(&server.url, BUILDS).await.unwrap_or(0.0);
    assert_eq!(builds, 0.0);
}
