//! `bootfactory doctor` as an operator runs it (the real binary): a healthy offline box is
//! all OK/WARN with exit 0 and its JSON parses; a broken box (no data directory, a blob file
//! gone or cut short, offline with nothing imported, a data directory its owner cannot
//! write, a PXE port another process holds, a missing interface, an unreachable registry)
//! gets FAIL lines naming the problem and exit 1; while a server runs, the store checks are
//! the server's own (`GET /api/v1/doctor`).

mod support;

use support::output_text as text;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bootfactory"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    c
}

/// `bootfactory doctor --data-dir DATA ARGS… --json`: exit code and the parsed checks.
fn doctor_json(data: &Path, args: &[&str]) -> (i32, Vec<Value>) {
    let out = bin()
        .arg("doctor")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json is not JSON ({e}): {}", text(&out)));
    let checks = report["checks"].as_array().expect("checks").clone();
    (out.status.code().unwrap_or(-1), checks)
}

/// The checks named `name`.
fn named<'a>(checks: &'a [Value], name: &str) -> Vec<&'a Value> {
    checks.iter().filter(|c| c["check"] == name).collect()
}

fn status(check: &Value) -> &str {
    check["status"].as_str().unwrap()
}

fn no_fail(checks: &[Value]) -> bool {
    checks.iter().all(|c| c["status"] != "fail")
}

/// Writes the fixture release and imports it with `bootfactory mirror import`, as a user
/// would; returns the release.
fn import_fixture(data: &Path) -> bootfactory::fixture::FixtureRelease {
    let layout = tempfile::tempdir().unwrap();
    let release = bootfactory::fixture::write_release(layout.path(), &Default::default()).unwrap();
    let out = bin()
        .args(["mirror", "import"])
        .arg(layout.path())
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    release
}

#[test]
fn a_healthy_offline_box_passes_and_the_json_names_every_check() {
    let data = tempfile::tempdir().unwrap();
    let release = import_fixture(data.path());
    let (code, checks) = doctor_json(data.path(), &["--offline"]);
    assert_eq!(code, 0, "{checks:#?}");
    assert!(no_fail(&checks), "{checks:#?}");
    for name in [
        "config", "data-dir", "disk", "store", "versions", "upstream", "pxe",
    ] {
        assert!(
            !named(&checks, name).is_empty(),
            "no {name} check: {checks:#?}"
        );
    }
    let store = named(&checks, "store");
    assert_eq!(status(store[0]), "ok", "{store:?}");
    assert!(
        store[0]["message"]
            .as_str()
            .unwrap()
            .contains("store verify"),
        "says that a re-hash is store verify: {store:?}"
    );
    let versions = named(&checks, "versions")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    for v in &release.versions {
        let ext = v.extensions.values().filter(|e| e.in_catalog).count();
        assert!(
            versions.contains(&format!("{} ({ext} extensions)", v.version)),
            "{versions}"
        );
    }
    // Tools: found exactly when the build would find them (missing ones are a WARN with the
    // Debian package, never a FAIL).
    for tool in bootfactory::factory::tools::Tool::ALL {
        let short = tool.name().rsplit('/').next().unwrap();
        let c = named(&checks, &format!("tool {short}"));
        assert_eq!(c.len(), 1, "{checks:#?}");
        match tool.locate() {
            Some(path) => {
                assert_eq!(status(c[0]), "ok", "{c:?}");
                assert!(
                    c[0]["message"]
                        .as_str()
                        .unwrap()
                        .contains(&*path.to_string_lossy())
                );
            }
            None => {
                assert_eq!(status(c[0]), "warn", "{c:?}");
                assert!(
                    c[0]["hint"]
                        .as_str()
                        .unwrap()
                        .contains(tool.debian_package())
                );
            }
        }
    }
    // The text form: one line per check and the summary.
    let out = bin()
        .arg("doctor")
        .arg("--data-dir")
        .arg(data.path())
        .arg("--offline")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.lines().any(|l| l.starts_with("OK    store")), "{t}");
    assert!(t.trim_end().ends_with(" 0 fail"), "{t}");
}

#[test]
fn a_missing_data_directory_fails_naming_it() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("nowhere");
    let (code, checks) = doctor_json(&data, &["--offline"]);
    assert_eq!(code, 1, "{checks:#?}");
    let dd = named(&checks, "data-dir");
    assert_eq!(status(dd[0]), "fail");
    assert!(
        dd[0]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist")
            && dd[0]["message"].as_str().unwrap().contains("nowhere"),
        "{dd:?}"
    );
    assert!(
        dd[0]["hint"].as_str().unwrap().contains("install -d"),
        "{dd:?}"
    );
    assert!(!data.exists(), "doctor created the data directory");
}

#[test]
fn offline_with_nothing_imported_fails() {
    let data = tempfile::tempdir().unwrap();
    let (code, checks) = doctor_json(data.path(), &["--offline"]);
    assert_eq!(code, 1, "{checks:#?}");
    let v = named(&checks, "versions");
    assert_eq!(status(v[0]), "fail", "{v:?}");
    assert!(
        v[0]["hint"].as_str().unwrap().contains("mirror import"),
        "{v:?}"
    );
    assert!(
        !data.path().join("index.sled").exists(),
        "doctor created an index in an empty data directory"
    );
}

#[test]
fn a_missing_or_cut_blob_fails_the_store_check() {
    let data = tempfile::tempdir().unwrap();
    import_fixture(data.path());
    let mut blobs: Vec<_> = std::fs::read_dir(data.path().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    blobs.sort();
    std::fs::remove_file(&blobs[0]).unwrap();
    let cut = std::fs::OpenOptions::new()
        .write(true)
        .open(&blobs[1])
        .unwrap();
    cut.set_len(1).unwrap();
    let (code, checks) = doctor_json(data.path(), &["--offline"]);
    assert_eq!(code, 1, "{checks:#?}");
    let store = named(&checks, "store");
    let msg = store[0]["message"].as_str().unwrap();
    assert_eq!(status(store[0]), "fail", "{store:?}");
    assert!(
        msg.contains("1 missing") && msg.contains("1 with the wrong size"),
        "{msg}"
    );
    let missing = blobs[0].file_name().unwrap().to_str().unwrap();
    assert!(
        msg.contains(missing)
            || msg.contains(&blobs[1].file_name().unwrap().to_string_lossy().to_string()),
        "{msg}"
    );
    assert!(store[0]["hint"].as_str().unwrap().contains("store verify"));
}

#[test]
fn a_data_directory_its_owner_cannot_write_fails() {
    // Root writes anything, so the check runs as `nobody`, the directory's owner.
    if !nix::unistd::geteuid().is_root() || !support::tools::have("setpriv") {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    std::fs::create_dir(&data).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o500)).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    nix::unistd::chown(&data, Some(nobody.uid), Some(nobody.gid)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_bootfactory"))
        .arg("doctor")
        .arg("--data-dir")
        .arg(&data)
        .args(["--offline", "--json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let dd = named(checks, "data-dir");
    assert_eq!(status(dd[0]), "fail", "{dd:?}");
    assert!(
        dd[0]["message"]
            .as_str()
            .unwrap()
            .contains("not writable by its owner")
            && dd[0]["message"].as_str().unwrap().contains("owner nobody"),
        "{dd:?}"
    );
}

#[test]
fn a_pxe_port_held_by_another_process_and_a_missing_interface_fail() {
    let data = tempfile::tempdir().unwrap();
    import_fixture(data.path());
    // This test process holds the "DHCP" port, as a dnsmasq would.
    let held = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let free = support::tools::free_port().to_string();
    let (code, checks) = doctor_json(
        data.path(),
        &[
            "--offline",
            "--pxe",
            "--pxe-dhcp-port",
            &port,
            "--pxe-proxy-port",
            &free,
            "--pxe-tftp-port",
            &free,
            "--pxe-interfaces",
            "lo,bf-nosuch0",
        ],
    );
    assert_eq!(code, 1, "{checks:#?}");
    let ports = named(&checks, "pxe-ports");
    let msg = ports[0]["message"].as_str().unwrap();
    assert_eq!(status(ports[0]), "fail", "{ports:?}");
    assert!(
        msg.contains(&format!("dhcp {port} in use by"))
            && msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    let ifaces = named(&checks, "pxe-interfaces");
    assert_eq!(status(ifaces[0]), "fail", "{ifaces:?}");
    let msg = ifaces[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("bf-nosuch0 does not exist") && msg.contains("lo 127.0.0.1"),
        "{msg}"
    );
    assert!(!named(&checks, "capabilities").is_empty(), "{checks:#?}");
    drop(held);
}

#[tokio::test]
async fn an_unreachable_registry_fails_and_a_reachable_one_passes() {
    // A bootfactory serves /v2/, so it stands in for a reachable registry.
    let server = support::TestServer::start(&[("offline", "true")]).await;
    let closed = support::tools::free_port();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "artifacts:\n  core:\n    registry: 127.0.0.1:{closed}\n    insecure: true\nupstream:\n  registries:\n    up.example:\n      endpoint: {}\n",
            server.url
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap().to_string();
    let data_path = data.path().to_path_buf();
    let (code, checks) = tokio::task::spawn_blocking(move || {
        doctor_json(&data_path, &["--config", &config_arg, "--offline=false"])
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{checks:#?}");
    let down = named(&checks, &format!("upstream 127.0.0.1:{closed}"));
    assert_eq!(status(down[0]), "fail", "{checks:#?}");
    assert!(
        down[0]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("connect"),
        "{down:?}"
    );
    let up = named(&checks, "upstream up.example");
    assert_eq!(status(up[0]), "ok", "{checks:#?}");
    assert!(
        up[0]["message"].as_str().unwrap().contains("answers 200"),
        "{up:?}"
    );
    let cfg = named(&checks, "config");
    assert!(
        cfg[0]["message"].as_str().unwrap().ends_with("config.yaml"),
        "{cfg:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn while_serving_the_store_checks_are_the_services() {
    let data = tempfile::tempdir().unwrap();
    import_fixture(data.path());
    let server = support::TestServer::start_in(data, &[("offline", "true")]).await;
    let data_path = server.data.path().to_path_buf();
    let url = server.url.clone();
    let (code, checks) = tokio::task::spawn_blocking(move || {
        doctor_json(&data_path, &["--offline", "--server", &url])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{checks:#?}");
    let service = named(&checks, "service");
    assert_eq!(status(service[0]), "ok", "{checks:#?}");
    assert!(
        service[0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {}", std::process::id())),
        "the server in this test process answered: {service:?}"
    );
    assert_eq!(status(named(&checks, "store")[0]), "ok", "{checks:#?}");
    assert!(
        named(&checks, "versions")[0]["message"]
            .as_str()
            .unwrap()
            .contains("extensions"),
        "{checks:#?}"
    );
    // Without --server, doctor finds the service on its admin socket in the data directory.
    let data_path = server.data.path().to_path_buf();
    let (code, checks) =
        tokio::task::spawn_blocking(move || doctor_json(&data_path, &["--offline"]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{checks:#?}");
    let service = named(&checks, "service");
    assert_eq!(status(service[0]), "ok", "{checks:#?}");
    assert!(
        service[0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {}", std::process::id())),
        "{service:?}"
    );
    assert_eq!(status(named(&checks, "store")[0]), "ok", "{checks:#?}");
    // With a wrong admin token the service cannot be asked, and doctor says so.
    let data_path = server.data.path().to_path_buf();
    let url = server.url.clone();
    let (_, checks) = tokio::task::spawn_blocking(move || {
        doctor_json(
            &data_path,
            &["--offline", "--server", &url, "--token", "wrong"],
        )
    })
    .await
    .unwrap();
    let service = named(&checks, "service");
    assert_eq!(status(service[0]), "warn", "{checks:#?}");
    assert!(
        service[0]["message"].as_str().unwrap().contains("401"),
        "{service:?}"
    );
    let store = named(&checks, "store");
    assert_eq!(status(store[0]), "warn", "{checks:#?}");
    assert!(
        store[0]["message"].as_str().unwrap().contains("in use"),
        "{store:?}"
    );
    server.stop().await;
}

#[test]
fn a_configuration_that_does_not_load_is_one_fail_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "pxe:\n  dhcpPort: seventy\n").unwrap();
    let out = bin()
        .arg("doctor")
        .arg("--config")
        .arg(&config)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 1, "{checks:#?}");
    assert_eq!(checks[0]["check"], "config");
    assert_eq!(checks[0]["status"], "fail");
    let msg = checks[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("config.yaml") && msg.contains("dhcpPort"),
        "{msg}"
    );
}

/// A user who may not use the admin socket but has the admin token (here in the
/// environment, as from a configuration file they can read) gets the store checks from the
/// service over HTTP, not a WARN about the socket.
#[tokio::test]
async fn a_user_with_the_token_but_not_the_socket_asks_the_service_over_http() {
    use std::os::unix::fs::PermissionsExt as _;
    if !nix::unistd::geteuid().is_root() || !support::tools::have("setpriv") {
        eprintln!("skipped: needs root and setpriv to run as another user");
        return;
    }
    let server =
        support::TestServer::start(&[("offline", "true"), ("api.adminToken", "tok-en")]).await;
    std::fs::set_permissions(server.data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = server.data.path().to_path_buf();
    let url = server.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_bootfactory"))
            .args(["doctor", "--json", "--offline", "--data-dir"])
            .arg(&data)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("BOOTFACTORY_HTTP_EXTERNAL_URL", &url)
            .env("BOOTFACTORY_API_ADMIN_TOKEN", "tok-en")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json is not JSON ({e}): {}", text(&out)));
    let checks = report["checks"].as_array().unwrap().clone();
    let service = named(&checks, "service");
    assert_eq!(status(service[0]), "ok", "{checks:#?}");
    assert!(
        service[0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {}", std::process::id())),
        "{service:?}"
    );
    server.stop().await;
}
