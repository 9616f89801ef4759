//! Per-MAC assignment over HTTP: the admin API (token, validation), `/boot/{mac}.ipxe` for
//! each policy, the embedded iPXE binaries, the seed file and the `assign`/`machines` CLI.

mod support;

use bootfactory::fixture::{FixtureOptions, write_release};
use bootfactory::oci::ImageCatalog;
use bootfactory::oci::bundle::{self, NoProgress};
use bootfactory::store::Store;
use support::TestServer;

const EMPTY_ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
const TOKEN: &str = "test-admin-token";
const MAC1: &str = "52:54:00:00:00:01";
const MAC2: &str = "52:54:00:00:00:02";

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::new()
}

async fn data_with_fixture() -> tempfile::TempDir {
    let layout = tempfile::tempdir().unwrap();
    write_release(layout.path(), &FixtureOptions::default()).expect("fixture");
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path()).unwrap();
    let catalog = ImageCatalog::new(store.clone()).unwrap();
    bundle::import(&catalog, layout.path(), None, &NoProgress)
        .await
        .unwrap();
    store.flush().await.unwrap();
    data
}

/// A fixture data directory, a schematics directory holding the empty schematic, and the
/// path of an assignments file in the data directory (not written yet).
async fn data_with_schematics_dir() -> (tempfile::TempDir, tempfile::TempDir, std::path::PathBuf) {
    let data = data_with_fixture().await;
    let schematics = tempfile::tempdir().unwrap();
    std::fs::write(schematics.path().join("empty.yaml"), "customization: {}\n").unwrap();
    let seed = data.path().join("assignments.yaml");
    (data, schematics, seed)
}

async fn server(extra: &[(&str, &str)]) -> TestServer {
    let data = data_with_fixture().await;
    let mut overrides = vec![
        ("offline", "true"),
        ("api.adminToken", TOKEN),
        ("http.externalPXEURL", "http://192.0.2.10:8080"),
    ];
    overrides.extend_from_slice(extra);
    let server = TestServer::start_in(data, &overrides).await;
    let r = client()
        .post(format!("{}/schematics", server.url))
        .body("customization: {}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    server
}

async fn put(server: &TestServer, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let mut req = client()
        .put(format!("{}{path}", server.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn get(server: &TestServer, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = client().get(format!("{}{path}", server.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn assignment(version: &str) -> String {
    format!(r#"{{"schematic":"{EMPTY_ID}","version":"{version}"}}"#)
}

#[tokio::test]
async fn admin_api_needs_the_token_and_validates() {
    let s = server(&[]).await;
    let path = format!("/api/v1/machines/{MAC1}");
    assert_eq!(put(&s, &path, &assignment("v1.11.6"), None).await.0, 401);
    assert_eq!(
        put(&s, &path, &assignment("v1.11.6"), Some("wrong"))
            .await
            .0,
        401
    );
    assert_eq!(get(&s, "/api/v1/machines", None).await.0, 401);

    let cases = [
        ("/api/v1/machines/not-a-mac", assignment("v1.11.6"), "is not a MAC address"),
        (path.as_str(), assignment("v9.9.9"), "version 9.9.9 is not available"),
        (path.as_str(), r#"{"schematic":"0000000000000000000000000000000000000000000000000000000000000000","version":"v1.11.6"}"#.to_string(), "not found"),
        (path.as_str(), r#"{"schematic":"x","version":"v1.11.6"}"#.to_string(), "schematic: \"x\" is not a schematic ID"),
        (path.as_str(), format!(r#"{{"schematic":"{EMPTY_ID}","version":"v1.11.6","extraKernelArgs":["a\nshell"]}}"#), "extraKernelArgs[0]"),
        (path.as_str(), format!(r#"{{"schematic":"{EMPTY_ID}","version":"v1.11.6","arch":"riscv64"}}"#), "arch"),
        // The platform is checked as the name it is, not re-read from a `cmdline-…` path (where
        // `metal-secureboot` on amd64 read as platform `metal`, architecture `secureboot-amd64`).
        (path.as_str(), format!(r#"{{"schematic":"{EMPTY_ID}","version":"v1.11.6","platform":"metal-secureboot"}}"#), "invalid assignment: unknown platform: \"metal-secureboot\""),
        (path.as_str(), format!(r#"{{"schematic":"{EMPTY_ID}","version":"v1.11.6","colour":"red"}}"#), "unknown field `colour`"),
        (path.as_str(), "{".to_string(), "invalid assignment"),
    ];
    for (p, body, want) in cases {
        let (status, text) = put(&s, p, &body, Some(TOKEN)).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(want), "{body}: {text}");
    }
    let (status, text) = put(&s, &path, &assignment("v1.11.6"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = get(&s, &path, Some(TOKEN)).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["assignment"]["version"], "v1.11.6");
    assert_eq!(v["assignment"]["platform"], "metal");

    // Delete, then it is gone.
    let r = client()
        .delete(format!("{}{path}", s.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(get(&s, &path, Some(TOKEN)).await.0, 404);
    s.stop().await;
}

#[tokio::test]
async fn boot_scripts_chain_the_assigned_pxe_script_and_reveal_nothing_else() {
    let s = server(&[]).await;
    put(
        &s,
        &format!("/api/v1/machines/{MAC1}"),
        &assignment("v1.11.6"),
        Some(TOKEN),
    )
    .await;
    let body = format!(
        r#"{{"schematic":"{EMPTY_ID}","version":"v1.8.4","arch":"arm64","extraKernelArgs":["bf.marker=two"]}}"#
    );
    let (status, text) = put(&s, &format!("/api/v1/machines/{MAC2}"), &body, Some(TOKEN)).await;
    assert_eq!(status, 200, "{text}");

    // Any spelling of the MAC reaches the same machine.
    let (status, script) = get(&s, "/boot/52-54-00-00-00-01.ipxe", None).await;
    assert_eq!(status, 200, "{script}");
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    let pxe = format!("http://192.0.2.10:8080/pxe/{EMPTY_ID}/v1.11.6/metal-amd64");
    assert!(
        script.contains(&format!("chain --autofree {pxe} ")),
        "{script}"
    );
    assert!(!script.contains("v1.8.4"), "{script}");
    // The chained script exists.
    let (status, pxe_script) = get(&s, &format!("/pxe/{EMPTY_ID}/v1.11.6/metal-amd64"), None).await;
    assert_eq!(status, 200, "{pxe_script}");

    // Extra kernel args: the /pxe script itself, args appended to the kernel line.
    let (status, script) = get(&s, &format!("/boot/{MAC2}.ipxe"), None).await;
    assert_eq!(status, 200, "{script}");
    let (_, upstream_shape) = get(&s, &format!("/pxe/{EMPTY_ID}/v1.8.4/metal-arm64"), None).await;
    let kernel_line = upstream_shape
        .lines()
        .find(|l| l.starts_with("kernel "))
        .unwrap();
    assert_eq!(
        script,
        upstream_shape.replace(kernel_line, &format!("{kernel_line} bf.marker=two"))
    );
    assert!(!script.contains("v1.11.6"));

    // Unassigned, no default: back to the firmware.
    let (status, script) = get(&s, "/boot/52:54:00:00:00:09.ipxe", None).await;
    assert_eq!(status, 200);
    assert!(script.ends_with("exit\n"), "{script}");
    assert!(script.contains("no default"), "{script}");
    // With a default: the default, marked as such.
    let (status, _) = put(&s, "/api/v1/default", &assignment("v1.8.4"), Some(TOKEN)).await;
    assert_eq!(status, 200);
    let (_, script) = get(&s, "/boot/52:54:00:00:00:09.ipxe?arch=arm64", None).await;
    assert!(
        script.contains(&format!("/pxe/{EMPTY_ID}/v1.8.4/metal-arm64")),
        "{script}"
    );
    assert!(script.contains("(default assignment)"), "{script}");

    for bad in [
        "/boot/nope.ipxe",
        "/boot/52:54:00:00:00:01",
        "/boot/..%2f..%2fetc%2fpasswd.ipxe",
    ] {
        let (status, text) = get(&s, bad, None).await;
        assert!(status == 400 || status == 404, "{bad}: {status} {text}");
    }

    // The inventory recorded the machines that asked.
    let (status, list) = get(&s, "/api/v1/machines", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let machines = list["machines"].as_array().unwrap();
    let m9 = machines
        .iter()
        .find(|m| m["mac"] == "52:54:00:00:00:09")
        .expect("seen machine");
    assert_eq!(m9["seen"]["requests"], 2);
    assert_eq!(m9["seen"]["ip"], "127.0.0.1");
    assert!(m9.get("assignment").is_none());
    assert_eq!(list["default"]["version"], "v1.8.4");
    s.stop().await;
}

#[tokio::test]
async fn ignore_policy_answers_404_and_local_disk_exits() {
    let s = server(&[("pxe.unassigned", "ignore")]).await;
    put(&s, "/api/v1/default", &assignment("v1.8.4"), Some(TOKEN)).await;
    assert_eq!(get(&s, "/boot/52:54:00:00:00:09.ipxe", None).await.0, 404);
    put(
        &s,
        &format!("/api/v1/machines/{MAC1}"),
        &assignment("v1.11.6"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(get(&s, &format!("/boot/{MAC1}.ipxe"), None).await.0, 200);
    s.stop().await;

    let s = server(&[("pxe.unassigned", "local-disk")]).await;
    put(&s, "/api/v1/default", &assignment("v1.8.4"), Some(TOKEN)).await;
    let (status, script) = get(&s, "/boot/52:54:00:00:00:09.ipxe", None).await;
    assert_eq!(status, 200);
    assert!(
        script.ends_with("exit\n") && script.contains("local-disk"),
        "{script}"
    );
    s.stop().await;
}

#[tokio::test]
async fn ipxe_binaries_are_served_over_http() {
    let s = server(&[]).await;
    for b in bootfactory::ipxe::BINARIES {
        let r = client()
            .get(format!("{}/ipxe/{}", s.url, b.name))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["etag"], format!("\"{}\"", b.sha256));
        assert_eq!(&r.bytes().await.unwrap()[..], b.data, "{}", b.name);
    }
    assert_eq!(get(&s, "/ipxe/..%2fadmin-token", None).await.0, 404);
    assert_eq!(get(&s, "/ipxe/nope.efi", None).await.0, 404);
    s.stop().await;
}

#[tokio::test]
async fn seed_file_is_applied_at_start_and_bad_ones_stop_the_start() {
    let (data, schematics, seed) = data_with_schematics_dir().await;
    std::fs::write(
        &seed,
        format!("machines:\n  \"{MAC1}\":\n    schematic: {EMPTY_ID}\n    version: v1.11.6\n    labels: {{role: worker}}\n"),
    )
    .unwrap();
    let seed_s = seed.to_string_lossy().to_string();
    let dir_s = schematics.path().to_string_lossy().to_string();
    let s = TestServer::start_in(
        data,
        &[
            ("offline", "true"),
            ("api.adminToken", TOKEN),
            ("schematics.dir", &dir_s),
            ("assignments.file", &seed_s),
        ],
    )
    .await;
    let (status, text) = get(&s, &format!("/api/v1/machines/{MAC1}"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"role\":\"worker\""), "{text}");
    let data = s.stop().await;

    std::fs::write(
        &seed,
        "machines:\n  \"52:54:00:00:00:01\":\n    version: v1.11.6\n",
    )
    .unwrap();
    let overrides: Vec<bootfactory::config::Override> = [
        ("dataDir", data.path().to_string_lossy().to_string()),
        ("http.listen", "127.0.0.1:0".to_string()),
        ("assignments.file", seed_s.clone()),
    ]
    .into_iter()
    .map(|(k, v)| bootfactory::config::Override {
        key: k.into(),
        value: v,
        source_name: k.into(),
    })
    .collect();
    let config = bootfactory::config::Config::load(None, &overrides).unwrap();
    let err = bootfactory::server::App::open(config)
        .await
        .err()
        .expect("a bad seed file stops the start");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("assignments.yaml") && msg.contains("schematic"),
        "{msg}"
    );

    // The file is checked by the admin API's code (minus asking the upstream which versions it
    // serves): an unknown schematic, a malformed version or an unknown platform stops the start.
    let unknown = "0".repeat(64);
    let cases = [
        (
            format!("default:\n  schematic: {unknown}\n  version: v1.11.6\n"),
            "default.schematic: schematic 0000",
        ),
        (
            format!("machines:\n  \"{MAC1}\":\n    schematic: {EMPTY_ID}\n    version: 1.9\n"),
            "machines.52:54:00:00:00:01.version",
        ),
        (
            format!("default:\n  schematic: {EMPTY_ID}\n  version: v1.11.6\n  platform: nosuch\n"),
            "default.platform: unknown platform: \"nosuch\"",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&seed, &text).unwrap();
        let mut overrides = overrides.clone();
        overrides.push(bootfactory::config::Override {
            key: "offline".into(),
            value: "true".into(),
            source_name: "offline".into(),
        });
        let config = bootfactory::config::Config::load(None, &overrides).unwrap();
        let err = bootfactory::server::App::open(config)
            .await
            .err()
            .unwrap_or_else(|| panic!("{text:?} was accepted"));
        let msg = format!("{err:#}");
        assert!(msg.contains(want), "{text:?}: {msg}");
    }
}

#[tokio::test]
async fn cli_assign_and_machines_use_the_running_server() {
    let s = server(&[]).await;
    let exe = env!("CARGO_BIN_EXE_bootfactory");
    let run = move |args: Vec<String>| {
        let out = std::process::Command::new(exe)
            .args(&args)
            .env_remove("BOOTFACTORY_ADMIN_TOKEN")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let common = |v: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        a.extend([
            "--server".into(),
            s.url.clone(),
            "--token".into(),
            TOKEN.into(),
        ]);
        a
    };
    let (ok, out, err) = tokio::task::spawn_blocking({
        let args = common(&[
            "machine",
            "assign",
            MAC1,
            "--schematic",
            EMPTY_ID,
            "--version",
            "v1.11.6",
            "--label",
            "role=cp",
        ]);
        move || run(args)
    })
    .await
    .unwrap();
    assert!(ok, "{out}{err}");
    assert!(out.contains("\"role\": \"cp\""), "{out}");
    let (ok, out, err) = tokio::task::spawn_blocking({
        let args = common(&["machine", "list"]);
        move || run(args)
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains(MAC1) && out.contains("v1.11.6"), "{out}");
    let (ok, _, err) = tokio::task::spawn_blocking({
        let args = common(&[
            "assign",
            MAC1,
            "--schematic",
            EMPTY_ID,
            "--version",
            "v9.9.9",
        ]);
        move || run(args)
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(
        err.contains("400") && err.contains("not available"),
        "{err}"
    );
    let (ok, _, err) = tokio::task::spawn_blocking({
        let args = vec![
            "machines".to_string(),
            "--server".into(),
            s.url.clone(),
            "--token".into(),
            "nope".into(),
        ];
        move || run(args)
    })
    .await
    .unwrap();
    assert!(!ok && err.contains("401"), "{err}");
    // The old spellings (`assign` above, `machines` here) still work, with a note.
    assert!(err.contains("use `bootfactory machine list`"), "{err}");
    let (ok, out, err) = tokio::task::spawn_blocking({
        let args = common(&["machine", "unassign", MAC1]);
        move || run(args)
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("assignment removed"), "{out}");
    s.stop().await;
}

#[tokio::test]
async fn sighup_reloads_the_assignments_file_and_a_bad_one_changes_nothing() {
    let (data, schematics, seed) = data_with_schematics_dir().await;
    let entry =
        |mac: &str| format!("  \"{mac}\":\n    schematic: {EMPTY_ID}\n    version: v1.11.6\n");
    std::fs::write(&seed, format!("machines:\n{}", entry(MAC1))).unwrap();
    let port = support::tools::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bootfactory"))
        .args(["serve", "--offline", "--api-admin-token", TOKEN])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--schematics-dir")
        .arg(schematics.path())
        .arg("--assignments-file")
        .arg(&seed)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    support::tools::wait_listening(format!("127.0.0.1:{port}").parse().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    let status = |mac: &'static str| {
        let url = format!("{base}/api/v1/machines/{mac}");
        async move {
            client()
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let hup_and_wait = || async {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    };
    assert_eq!(status(MAC1).await, 200);
    assert_eq!(status(MAC2).await, 404);

    std::fs::write(&seed, format!("machines:\n{}{}", entry(MAC1), entry(MAC2))).unwrap();
    hup_and_wait().await;
    assert_eq!(status(MAC2).await, 200, "SIGHUP did not reload the file");

    // A broken file: reported, and nothing changes (the server keeps running).
    std::fs::write(
        &seed,
        format!(
            "machines:\n{}  \"52:54:00:00:00:03\": {{version: v1.11.6}}\n",
            entry(MAC1)
        ),
    )
    .unwrap();
    hup_and_wait().await;
    assert_eq!(status("52:54:00:00:00:03").await, 404);
    assert_eq!(status(MAC2).await, 200);
    assert!(
        child.try_wait().unwrap().is_none(),
        "a bad reload stopped the server"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let code = child.wait().unwrap();
    assert!(code.success(), "{code:?}");
}

/// `machine list --watch` follows boots live: a machine fetching its boot script (with curl)
/// and then getting an assignment are two events, in order, and `--count 2` ends the watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_list_watch_follows_boots() {
    let s = server(&[]).await;
    let watcher = tokio::process::Command::new(env!("CARGO_BIN_EXE_bootfactory"))
        .args([
            "machine",
            "list",
            "--watch",
            "--json",
            "--interval",
            "0.2",
            "--count",
            "2",
        ])
        .args(["--server", &s.url, "--token", TOKEN])
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Let it take its first look (an empty inventory) before anything boots.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let url = format!("{}/boot/{MAC1}.ipxe", s.url);
    let fetched = if support::tools::have("curl") {
        let out = tokio::process::Command::new("curl")
            .args(["-sf", &url])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    } else {
        client()
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(fetched.starts_with("#!ipxe"), "{fetched}");
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let (status, text) = put(
        &s,
        &format!("/api/v1/machines/{MAC1}"),
        &assignment("v1.11.6"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        watcher.wait_with_output(),
    )
    .await
    .expect("--count 2 ends the watch")
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event"], "new", "{events:?}");
    assert_eq!(events[0]["mac"], MAC1);
    assert!(
        events[0]["served"]
            .as_str()
            .unwrap()
            .starts_with("boot script"),
        "{events:?}"
    );
    assert_eq!(events[1]["event"], "assigned", "{events:?}");
    assert_eq!(events[1]["assignment"]["schematic"], EMPTY_ID);
}

/// A data directory whose admin socket path (`<dataDir>/admin.sock`) does not fit a Unix
/// socket address (107 bytes): `serve` still starts (without the socket, over TCP only), and
/// `machine list` talks to it over HTTP with the token instead of failing on the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_too_long_for_a_socket_serves_over_tcp_and_commands_use_http() {
    let top = tempfile::tempdir().unwrap();
    // Deep enough that `<dir>/admin.sock` is longer than sun_path allows.
    let deep = top.path().join("a".repeat(60)).join("b".repeat(40));
    std::fs::create_dir_all(&deep).unwrap();
    assert!(deep.join("admin.sock").as_os_str().len() > 107);
    let deep_text = deep.to_string_lossy().to_string();
    let s = TestServer::start_in(
        tempfile::tempdir().unwrap(),
        &[
            ("dataDir", deep_text.as_str()),
            ("offline", "true"),
            ("api.adminToken", TOKEN),
        ],
    )
    .await;
    assert!(!deep.join("admin.sock").exists());
    assert_eq!(get(&s, "/api/v1/machines", Some(TOKEN)).await.0, 200);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bootfactory"))
        .args(["machine", "list", "--json", "--data-dir", &deep_text])
        .env_clear()
        .env("BOOTFACTORY_HTTP_EXTERNAL_URL", &s.url)
        .env("BOOTFACTORY_API_ADMIN_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["machines"].is_array(), "{v}");
    s.stop().await;
}

/// `curl` over the admin socket `path` as `uid` (via setpriv): status and body.
fn curl_unix_as(uid: Option<u32>, path: &std::path::Path, url_path: &str) -> (u16, String) {
    let mut cmd = match uid {
        Some(uid) => {
            let mut c = std::process::Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "curl",
            ]);
            c
        }
        None => std::process::Command::new("curl"),
    };
    let out = cmd
        .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(path)
        .arg(format!("http://localhost{url_path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The admin socket is mode 0600, and even when its mode lets another user connect the
/// admin API answers only root and the service's user (the peer's uid, `SO_PEERCRED`); the
/// public routes answer anyone. Over TCP no header stands in for the socket: the admin
/// routes still need the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_socket_authorises_by_uid_and_tcp_cannot_pretend_to_be_it() {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if !support::tools::have("curl") {
        eprintln!("skipped: curl missing");
        return;
    }
    let s = server(&[]).await;
    let sock = s.data_path("admin.sock");
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let routes = [
        "/api/v1/status",
        "/api/v1/machines",
        "/api/v1/doctor",
        "/api/v1/builds",
    ];
    for route in routes {
        let (code, body) = curl_unix_as(None, &sock, route);
        assert_eq!(code, 200, "{route} as the service's user: {body}");
        let (code, body) = get(&s, route, None).await;
        assert_eq!(code, 401, "{route} over TCP without a token: {body}");
        let r = client()
            .get(format!("{}{route}", s.url))
            .header("x-forwarded-for", "127.0.0.1")
            .header("x-peer-uid", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{route} with forged headers");
    }
    let nobody = 65534;
    if nix::unistd::geteuid().is_root() && support::tools::have("setpriv") {
        // As it is (0600, root's): another user cannot even connect.
        let (code, _) = curl_unix_as(Some(nobody), &sock, "/healthz");
        assert_eq!(code, 0, "uid {nobody} connected to a 0600 socket");
        // Opened up, the uid still decides.
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        for route in routes {
            let (code, body) = curl_unix_as(Some(nobody), &sock, route);
            assert_eq!(code, 403, "{route} as uid {nobody}: {body}");
            assert!(body.contains(&format!("uid {nobody}")), "{body}");
        }
        let (code, _) = curl_unix_as(Some(nobody), &sock, "/healthz");
        assert_eq!(code, 200);
    } else {
        eprintln!("not root: the other-uid half is skipped");
    }
    s.stop().await;
}

/// `serve` never deletes or follows what is at the socket's path unless it is a socket
/// nothing answers on: a regular file or a symlink is a refusal to start (both left as they
/// were), a live socket too; a stale one is replaced; the socket is removed at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_socket_path_is_never_followed_or_clobbered() {
    /// `serve`'s bind on a fresh data directory with `api.socket` at `socket`.
    async fn bind_error(socket: &std::path::Path) -> String {
        let data = tempfile::tempdir().unwrap();
        let overrides: Vec<bootfactory::config::Override> = [
            ("dataDir", data.path().to_string_lossy().to_string()),
            ("http.listen", "127.0.0.1:0".to_string()),
            ("offline", "true".to_string()),
            ("api.socket", socket.to_string_lossy().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| bootfactory::config::Override {
            key: k.to_string(),
            value: v,
            source_name: format!("test {k}"),
        })
        .collect();
        let config = bootfactory::config::Config::load(None, &overrides).unwrap();
        let app = bootfactory::server::App::open(config).await.unwrap();
        match app.bind().await {
            Ok(_) => "bound".to_string(),
            Err(e) => format!("{e:#}"),
        }
    }
    let socks = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let precious = elsewhere.path().join("precious");
    std::fs::write(&precious, "keep me").unwrap();
    // A regular file.
    let file = socks.path().join("file.sock");
    std::fs::write(&file, "not a socket").unwrap();
    let e = bind_error(&file).await;
    assert!(e.contains("is not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a socket");
    // A symlink to a file elsewhere, and a dangling one.
    let link = socks.path().join("link.sock");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    let e = bind_error(&link).await;
    assert!(e.contains("is not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let dangling = socks.path().join("dangling.sock");
    let target = elsewhere.path().join("created-by-serve");
    std::os::unix::fs::symlink(&target, &dangling).unwrap();
    let e = bind_error(&dangling).await;
    assert!(e.contains("is not a socket"), "{e}");
    assert!(!target.exists(), "serve followed a dangling symlink");
    // A stale socket (nothing listens) is replaced; a live one refuses.
    let stale = socks.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert_eq!(bind_error(&stale).await, "bound");
    let live = socks.path().join("live.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let e = bind_error(&live).await;
    assert!(e.contains("another bootfactory serve answers"), "{e}");
    assert!(live.exists());
}

/// `machine list --watch --count 0` asks for no events: it is refused at once (exit 2)
/// rather than printing one event, or waiting for a boot that may never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_list_watch_count_zero_is_refused_not_a_hang() {
    let s = server(&[]).await;
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_bootfactory"))
        .args([
            "machine",
            "list",
            "--watch",
            "--interval",
            "0.1",
            "--count",
            "0",
        ])
        .args(["--server", &s.url, "--token", TOKEN])
        .env_clear()
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), run)
        .await
        .expect("--count 0 hangs waiting for an event")
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--count"), "{err}");
    s.stop().await;
}

/// At shutdown `serve` removes its own admin socket only: when the path has been taken over
/// since (another server's socket, an operator's file), that file stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_removes_only_its_own_socket_at_shutdown() {
    let socks = tempfile::tempdir().unwrap();
    let path = socks.path().join("admin.sock");
    let path_text = path.to_string_lossy().to_string();
    // Its own socket is removed.
    let s = TestServer::start(&[("offline", "true"), ("api.socket", path_text.as_str())]).await;
    assert!(path.exists());
    s.stop().await;
    assert!(!path.exists(), "its own socket is removed at shutdown");
    // A file that replaced it is not.
    let s = TestServer::start(&[("offline", "true"), ("api.socket", path_text.as_str())]).await;
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "someone else's").unwrap();
    s.stop().await;
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "someone else's",
        "serve removed a file that was not its socket"
    );
}

/// A server whose machine list answer is suddenly empty (a proxy's error page with 200, a
/// broken server) does not make `machine list --watch` report every machine as new on the
/// next good answer: the watch stops with an error naming the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_list_watch_does_not_report_known_machines_as_new_after_a_bad_answer() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let list = serde_json::json!({"machines": [{
        "mac": MAC1,
        "assignment": null,
        "seen": {"lastSeen": "2026-01-01T00:00:00Z", "ip": "192.0.2.5", "arch": "amd64",
                 "lastServed": "boot script", "requests": 1}
    }]})
    .to_string();
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/api/v1/machines",
        axum::routing::get(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            let list = list.clone();
            // The second look gets an empty 200.
            async move { if n == 1 { String::new() } else { list } }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_bootfactory"))
        .args(["machine", "list", "--watch", "--json", "--interval", "0.1"])
        .args(["--count", "1", "--server", &url, "--token", TOKEN])
        .env_clear()
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), run)
        .await
        .expect("the watch ends")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("\"new\""),
        "a machine already listed was reported new: {stdout}"
    );
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("machine list"), "{err}");
    assert!(calls.load(Ordering::SeqCst) >= 2);
    server.abort();
}

/// A user who may not use the admin socket but has the admin token (`api.adminToken` in a
/// configuration they can read) is not locked out by the socket: `machine list` goes over
/// HTTP with the token, as it did before the socket existed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_the_token_but_not_the_socket_uses_http() {
    use std::os::unix::fs::PermissionsExt as _;
    if !nix::unistd::geteuid().is_root() || !support::tools::have("setpriv") {
        eprintln!("skipped: needs root and setpriv to run as another user");
        return;
    }
    let s = server(&[]).await;
    // The data directory is traversable (like a 0750 directory for the service's group); the
    // socket stays 0600.
    std::fs::set_permissions(s.data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(s.data_path("admin.sock").exists());
    let data = s.data.path().to_string_lossy().to_string();
    let run = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_bootfactory"))
        .args(["machine", "list", "--json", "--data-dir", &data])
        .env_clear()
        .env("BOOTFACTORY_HTTP_EXTERNAL_URL", &s.url)
        .env("BOOTFACTORY_API_ADMIN_TOKEN", TOKEN)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["machines"].is_array(), "{v}");
    // Without a token the socket's refusal is the error, naming what to do.
    let out = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_bootfactory"))
        .args(["machine", "list", "--json", "--data-dir", &data])
        .env_clear()
        .env("BOOTFACTORY_HTTP_EXTERNAL_URL", &s.url)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("may not use its admin socket"), "{err}");
    s.stop().await;
}

/// `bootfactory machine list | head` (a reader that goes away before the list is printed)
/// ends quietly, as table and as JSON, and so does `--watch`: no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_list_into_a_closed_pipe_does_not_panic() {
    let s = server(&[]).await;
    for args in [
        &["machine", "list"][..],
        &["machine", "list", "--json"][..],
        &[
            "machine",
            "list",
            "--watch",
            "--interval",
            "0.1",
            "--count",
            "1",
        ][..],
    ] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bootfactory"))
            .args(args)
            .args(["--server", &s.url, "--token", TOKEN])
            .env_clear()
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        if args.contains(&"--watch") {
            // One boot for the watch to print.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let r = client()
                .get(format!("{}/boot/{MAC2}.ipxe", s.url))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
        let out =
            tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
                .await
                .expect("ends")
                .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
    s.stop().await;
}
