//! The schematics HTTP API over real loopback sockets with a real HTTP client.

mod support;

use support::TestServer;

const EMPTY_ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
const EXAMPLE_ID: &str = "67fccca75e17620470675a886ee22dbcf05901de13a156a242a5b2f9a6f04a6e";

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::new()
}

#[tokio::test]
async fn post_then_get_schematic_round_trips() {
    let server = TestServer::start(&[]).await;
    let body = std::fs::read(support::repo_root().join("schematics/example.yaml")).unwrap();
    let resp = client()
        .post(format!("{}/schematics", server.url))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().contains_key("x-request-id"));
    let text = resp.text().await.unwrap();
    assert!(
        text.ends_with("}\n"),
        "Go-style JSON ends with a newline: {text:?}"
    );
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["id"], EXAMPLE_ID);

    // Idempotent: the same body again gives the same 201 and ID.
    let again = client()
        .post(format!("{}/schematics", server.url))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 201);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["id"], EXAMPLE_ID);

    let got = client()
        .get(format!("{}/schematics/{EXAMPLE_ID}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "application/yaml");
    let canonical = got.text().await.unwrap();
    assert_eq!(canonical, json["schematic"].as_str().unwrap());
    assert!(
        canonical
            .starts_with("customization:\n    extraKernelArgs:\n        - gfxmode=1280x1024\n")
    );
}

#[tokio::test]
async fn json_and_yaml_bodies_agree_with_the_cli_id() {
    let server = TestServer::start(&[]).await;
    for body in [
        r#"{"customization":{"extraKernelArgs":["noapic","nolapic"]}}"#,
        "customization:\n  extraKernelArgs:\n    - noapic\n    - nolapic\n",
    ] {
        let resp = client()
            .post(format!("{}/schematics", server.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            json["id"],
            "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c"
        );
    }
}

#[tokio::test]
async fn bad_inputs_get_clear_4xx() {
    let server = TestServer::start(&[]).await;
    let post = |body: Vec<u8>| {
        let url = format!("{}/schematics", server.url);
        async move { client().post(url).body(body).send().await.unwrap() }
    };
    let cases: &[(&[u8], u16, &str)] = &[
        (b"something:", 400, "field something not found"),
        (
            b"customization: {extraKernelArgs: foo}",
            400,
            "customization.extraKernelArgs",
        ),
        (
            b"customization:\n  meta:\n    - {key: 256, value: x}\n",
            400,
            "customization.meta[0].key",
        ),
        (
            b"customization: {bootloader: auto}",
            400,
            "auto does not belong to BootloaderKind",
        ),
        (b"owner: alice", 400, "only supported in Enterprise edition"),
        (b"customization: [", 400, "yaml:"),
        (b"", 400, "EOF"),
        (b"\xff\xfe", 400, "UTF-8"),
    ];
    for (body, status, needle) in cases {
        let resp = post(body.to_vec()).await;
        assert_eq!(
            resp.status().as_u16(),
            *status,
            "body {:?}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
        let text = resp.text().await.unwrap();
        assert!(
            text.contains(needle),
            "body {:?}: {text}",
            String::from_utf8_lossy(body)
        );
        assert!(text.ends_with('\n'));
    }
    let huge = vec![b'#'; 1024 * 1024 + 1];
    let resp = post(huge).await;
    assert_eq!(resp.status(), 413);
    assert!(resp.text().await.unwrap().contains("limit"));
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_404() {
    let server = TestServer::start(&[]).await;
    for id in [
        EMPTY_ID,
        "aaaaaaaaaaaa",
        "..%2F..%2Fetc%2Fpasswd",
        &"A".repeat(64),
    ] {
        let resp = client()
            .get(format!("{}/schematics/{id}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{id}");
        assert_eq!(resp.text().await.unwrap(), "schematic not found\n");
    }
    let resp = client()
        .get(format!("{}/nope", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client()
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["server"]
            .to_str()
            .unwrap()
            .starts_with("bootfactory/")
    );
}

#[tokio::test]
async fn schematics_persist_across_restarts_and_load_from_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "customization: {}\n").unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "customization: [\n").unwrap();
    std::fs::copy(
        support::repo_root().join("schematics/example.yaml"),
        dir.path().join("example.yaml"),
    )
    .unwrap();
    let schematics_dir = dir.path().to_string_lossy().to_string();
    let server = TestServer::start(&[("schematics.dir", &schematics_dir)]).await;
    for id in [EMPTY_ID, EXAMPLE_ID] {
        let resp = client()
            .get(format!("{}/schematics/{id}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "{id} should be loaded from the directory"
        );
    }
    let created = client()
        .post(format!("{}/schematics", server.url))
        .body("customization: {extraKernelArgs: [nolapic, nomodeset]}")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let data = server.stop().await;

    let server = TestServer::start_in(data, &[]).await;
    let resp = client()
        .get(format!(
            "{}/schematics/e0fb1129bbbdfb5d002e94af4cdce712a8370e850950a33a242d4c3f178c532d",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "schematic survives a restart");
}

/// A 5xx is logged once: one ERROR line in the request's span (so with its request ID)
/// carrying the whole cause chain down to the root cause; no second line from the trace
/// layer or the handler. The client's text is unchanged (the upstream client's message).
#[test]
fn a_server_error_is_logged_once_with_its_cause_and_request_id() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    // A loopback port nobody listens on stands in for the upstream registry.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let registries = format!("{{ghcr.io: {{endpoint: 'http://127.0.0.1:{port}'}}}}");
    let mut daemon = support::fault::Daemon::start(
        data.path(),
        logs.path(),
        &[
            "--upstream-registries",
            &registries,
            "--upstream-retries",
            "0",
        ],
    );
    let id = "server-error-once-1";
    let out = std::process::Command::new("curl")
        .args(["-sS", "-D", "-", "-H", &format!("X-Request-ID: {id}")])
        .arg(format!("{}/versions", daemon.url))
        .output()
        .unwrap();
    let response = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    // The client gets the cause in words (issue 14), not the HTTP client's "error sending
    // request for url (…)"; the OS error's own text stays in the log.
    assert!(
        body.starts_with(&format!(
            "tags of ghcr.io/siderolabs/imager: connection refused by 127.0.0.1:{port}"
        )),
        "{body:?}"
    );
    assert!(
        !body.contains("os error"),
        "the log keeps the chain: {body:?}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lines = loop {
        let log = daemon.log_text();
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains(&format!("request_id={id}")))
            .map(str::to_string)
            .collect();
        if !lines.is_empty() {
            // Give a second line (there must be none) the chance to be written.
            std::thread::sleep(std::time::Duration::from_millis(300));
            break daemon
                .log_text()
                .lines()
                .filter(|l| l.contains(&format!("request_id={id}")))
                .map(str::to_string)
                .collect::<Vec<_>>();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "request not logged:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    daemon.stop();
    let log = daemon.log_text();
    assert_eq!(lines.len(), 1, "one line for the failed request:\n{log}");
    let line = &lines[0];
    for part in [
        "ERROR",
        "status=503",
        "tags of ghcr.io/siderolabs/imager",
        "Connection refused",
    ] {
        assert!(line.contains(part), "{part:?} in {line}");
    }
    assert_eq!(line.matches("connection refused by").count(), 1, "{line}");
    assert_eq!(
        line.matches("Connection refused (os error").count(),
        1,
        "{line}"
    );
    assert_eq!(
        log.lines().filter(|l| l.contains("ERROR")).count(),
        1,
        "no other ERROR line:\n{log}"
    );
}

/// Every request is logged with its request ID, also when the client sent none (the ID is
/// assigned before the request's span is created), and a client's own ID is kept.
#[test]
fn requests_are_logged_with_their_request_id() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut daemon = support::fault::Daemon::start(data.path(), logs.path(), &[]);
    let get = |id: Option<&str>| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "-o", "/dev/null", "-D", "-"]);
        if let Some(id) = id {
            cmd.args(["-H", &format!("X-Request-ID: {id}")]);
        }
        let out = cmd
            .arg(format!("{}/schematics/{EMPTY_ID}", daemon.url))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let headers = get(None);
    let generated = headers
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("x-request-id on the response")
        .trim()
        .to_string();
    assert_eq!(generated.len(), 32, "{headers}");
    get(Some("client-chosen-id-1"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = daemon.log_text();
        let logged = |id: &str| {
            log.lines().any(|l| {
                l.contains(&format!("request_id={id}")) && l.contains("finished processing request")
            })
        };
        if logged(&generated) && logged("client-chosen-id-1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "request IDs not logged:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    daemon.stop();
}
