//! HTTP limits against hostile or clumsy clients, over real loopback sockets: header-read,
//! idle keep-alive and body-read timeouts, the connection cap (a real client keeps working
//! with 2,000 slowloris sockets open against a server with 512 file descriptors), 503 when
//! every connection is busy, the 413 seen by a client that uploads everything before reading,
//! `?filename=` escaping, and the case-insensitive `Bearer` scheme.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::TestServer;

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Reads until EOF or error; returns how long that took, or `None` if the connection was
/// still open after `wait`.
fn wait_closed(stream: &mut TcpStream, wait: Duration) -> Option<Duration> {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < wait {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

/// The value of one sample line of `/metrics` (`name{labels}` exactly as exposed).
async fn metric(url: &str, sample: &str) -> Option<f64> {
    let text = client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_silent_connections_are_closed_after_the_header_timeout() {
    let server = TestServer::start(&[("http.headerReadTimeoutSeconds", "1")]).await;
    let addr = server.addr;
    let result = tokio::task::spawn_blocking(move || {
        let mut silent = TcpStream::connect(addr).unwrap();
        let mut slow = TcpStream::connect(addr).unwrap();
        // One byte of the request head every 300 ms: never a complete head.
        let trickle = std::thread::spawn({
            let mut slow = slow.try_clone().unwrap();
            move || {
                for b in b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa" {
                    if slow.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        });
        let silent_closed = wait_closed(&mut silent, Duration::from_secs(5));
        let slow_closed = wait_closed(&mut slow, Duration::from_secs(5));
        let _ = slow.shutdown(std::net::Shutdown::Both);
        trickle.join().unwrap();
        (silent_closed, slow_closed)
    })
    .await
    .unwrap();
    let (silent, slow) = result;
    let silent = silent.expect("a connection that sends nothing is closed");
    let slow = slow.expect("a slowloris connection is closed");
    assert!(silent < Duration::from_secs(3), "{silent:?}");
    assert!(slow < Duration::from_secs(3), "{slow:?}");
    let closed = metric(
        &server.url,
        "bootfactory_http_timeouts_total{phase=\"header\"}",
    )
    .await
    .unwrap_or(0.0);
    assert!(closed >= 2.0, "header timeouts counted: {closed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_and_active_ones_kept() {
    let server = TestServer::start(&[
        ("http.idleTimeoutSeconds", "2"),
        ("http.headerReadTimeoutSeconds", "5"),
    ])
    .await;
    let addr = server.addr;
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        // Two requests 1 s apart on one connection: within the idle timeout, so kept.
        for _ in 0..2 {
            s.write_all(request.as_bytes()).unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            std::thread::sleep(Duration::from_secs(1));
        }
        wait_closed(&mut s, Duration::from_secs(6))
    })
    .await
    .unwrap();
    let closed_after = closed_after.expect("an idle keep-alive connection is closed");
    // Idle since the last response: 1 s slept already, ~1 s more.
    assert!(
        closed_after < Duration::from_secs(3),
        "closed after {closed_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_response_is_dropped_after_the_idle_timeout() {
    let server = TestServer::start(&[("http.idleTimeoutSeconds", "1")]).await;
    let addr = server.addr;
    // Pipelined downloads of the embedded iPXE binary, never read: the server's writes block
    // once the socket buffers are full.
    let stuck = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        let request = format!("GET /ipxe/ipxe.efi HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        for _ in 0..64 {
            if s.write_all(request.as_bytes()).is_err() {
                break;
            }
        }
        s
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(6);
    let stalled = loop {
        let n = metric(
            &server.url,
            "bootfactory_http_timeouts_total{phase=\"write\"}",
        )
        .await;
        if n >= Some(1.0) || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(stuck);
    assert_eq!(stalled, Some(1.0), "a blocked response is cut");
}

/// Sends a POST head announcing `len` bytes and `sent` of them, then stalls.
fn stalled_post(addr: SocketAddr, len: usize, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /schematics HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/yaml\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&vec![b'#'; sent]).unwrap();
    s
}

fn read_response(s: &mut TcpStream, wait: Duration) -> String {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") {
                    // Enough for the status line and headers.
                    let text = String::from_utf8_lossy(&out).to_string();
                    if text.contains("\r\n\r\n") && !text.contains("Content-Length: 0\r\n") {
                        s.set_read_timeout(Some(Duration::from_millis(300)))
                            .unwrap();
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_gets_400_after_the_body_timeout() {
    let server = TestServer::start(&[("http.bodyReadTimeoutSeconds", "1")]).await;
    let addr = server.addr;
    let (elapsed, response) = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut s = stalled_post(addr, 100, 10);
        let response = read_response(&mut s, Duration::from_secs(6));
        (start.elapsed(), response)
    })
    .await
    .unwrap();
    assert!(
        response.starts_with("HTTP/1.1 400"),
        "after {elapsed:?}: {response:?}"
    );
    assert!(
        response.contains("request body not received within 1 s"),
        "{response}"
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let n = metric(
        &server.url,
        "bootfactory_http_timeouts_total{phase=\"body\"}",
    )
    .await;
    assert_eq!(n, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_bundle_upload_is_not_cut_at_the_body_timeout() {
    let server = TestServer::start(&[("http.bodyReadTimeoutSeconds", "1")]).await;
    let token = std::fs::read_to_string(server.data_path("admin-token")).unwrap();
    let addr = server.addr;
    // A tar (not a whole OCI layout: the import reads it to the end, then refuses it).
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(4096);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "oci-layout", &[b'{'; 4096][..])
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let response = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST /api/v1/images/import HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            token.trim(),
            tar.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&tar[..1024]).unwrap();
        // Longer than http.bodyReadTimeoutSeconds: an admin's import may take its time.
        std::thread::sleep(Duration::from_millis(2500));
        s.write_all(&tar[1024..]).unwrap();
        let mut out = String::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.read_to_string(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        !response.contains("not received within"),
        "the admin's upload was cut at the body timeout: {response}"
    );
    // The bundle was read to its end and judged on its content.
    assert!(
        response.contains("\"event\":\"error\"") || response.contains("\"event\":\"done\""),
        "{response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_with_every_connection_busy_a_new_one_gets_503() {
    let server = TestServer::start(&[
        ("http.maxConnections", "2"),
        ("http.bodyReadTimeoutSeconds", "20"),
    ])
    .await;
    let addr = server.addr;
    let response = tokio::task::spawn_blocking(move || {
        // Two requests in flight (waiting for their bodies).
        let busy: Vec<TcpStream> = (0..2).map(|_| stalled_post(addr, 100, 10)).collect();
        std::thread::sleep(Duration::from_millis(300));
        let start = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        let response = read_response(&mut s, Duration::from_secs(5));
        drop(busy);
        (start.elapsed(), response)
    })
    .await
    .unwrap();
    let (elapsed, text) = response;
    assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");
    assert!(text.contains("Retry-After: 1"), "{text}");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    // The busy connections are gone now: the server answers again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match client().get(format!("{}/healthz", server.url)).send().await {
            Ok(r) if r.status() == 200 => break,
            other => assert!(Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = metric(
        &server.url,
        "bootfactory_http_connections_shed_total{reason=\"refused\"}",
    )
    .await;
    assert!(refused >= Some(1.0), "{refused:?}");
}

/// `bootfactory serve` in a child process with `RLIMIT_NOFILE` = `fds`.
struct ServeProcess {
    child: Child,
    url: String,
    addr: SocketAddr,
    _data: tempfile::TempDir,
}

impl ServeProcess {
    fn start(fds: u64, extra: &[&str]) -> ServeProcess {
        use std::os::unix::process::CommandExt;
        let data = tempfile::tempdir().unwrap();
        let port = support::tools::free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bootfactory"));
        for (k, _) in std::env::vars() {
            if k.starts_with("BOOTFACTORY_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["serve", "--data-dir"])
            .arg(data.path())
            .args(["--http-listen", &addr.to_string(), "--log-level", "warn"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, fds, fds)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().unwrap();
        support::tools::wait_listening(addr);
        ServeProcess {
            child,
            url: format!("http://{addr}"),
            addr,
            _data: data,
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_client_is_served_while_2000_slowloris_sockets_are_open() {
    // 512 file descriptors, the default connection cap (1024, lowered to fit) and a header
    // timeout long enough that only the cap protects the server here.
    let server = ServeProcess::start(512, &["--http-header-read-timeout-seconds", "120"]);
    let addr = server.addr;
    let sockets = tokio::task::spawn_blocking(move || {
        let mut open = Vec::new();
        for _ in 0..2000 {
            let mut s = TcpStream::connect(addr).unwrap();
            // The start of a request head that never completes.
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: a");
            open.push(s);
        }
        open
    })
    .await
    .unwrap();
    // A trickle of one byte per socket while the real client works, as slowloris does.
    let mut timings = Vec::new();
    for round in 0..5 {
        let start = Instant::now();
        let response = client()
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: real request failed: {e}"));
        assert_eq!(response.status(), 200);
        timings.push(start.elapsed());
    }
    let worst = timings.iter().max().unwrap();
    eprintln!("real /healthz with 2000 slowloris sockets open: {timings:?}");
    assert!(*worst < Duration::from_secs(2), "{timings:?}");
    let open = metric(&server.url, "bootfactory_http_connections")
        .await
        .expect("connection gauge");
    let evicted = metric(
        &server.url,
        "bootfactory_http_connections_shed_total{reason=\"evicted\"}",
    )
    .await
    .expect("eviction counter");
    eprintln!("server connections open: {open}, evicted: {evicted}");
    assert!(open <= 512.0 - 128.0, "connections open: {open}");
    assert!(evicted >= 2000.0 - 384.0, "evicted: {evicted}");
    // The sockets the server evicted are closed: most of the 2,000 see EOF.
    let closed = tokio::task::spawn_blocking(move || {
        let mut closed = 0;
        for mut s in sockets {
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 16];
            match s.read(&mut buf) {
                Ok(0) => closed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => closed += 1,
            }
        }
        closed
    })
    .await
    .unwrap();
    assert!(closed >= 2000 - 384, "closed by the server: {closed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urllib_uploading_an_oversized_body_first_gets_the_413() {
    if !support::tools::have("python3") {
        return;
    }
    let server = TestServer::start(&[]).await;
    let url = format!("{}/schematics", server.url);
    let out = tokio::task::spawn_blocking(move || {
        let script = r##"
import sys, urllib.request, urllib.error
body = b"#" * (8 * 1024 * 1024)
req = urllib.request.Request(sys.argv[1], data=body, method="POST",
                             headers={"Content-Type": "application/yaml"})
try:
    urllib.request.urlopen(req, timeout=20)
    print("unexpected success")
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode().strip())
except Exception as e:
    print("error", type(e).__name__, e)
"##;
        let mut results = Vec::new();
        for _ in 0..4 {
            let out = Command::new("python3")
                .args(["-c", script, &url])
                .output()
                .unwrap();
            results.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        results
    })
    .await
    .unwrap();
    for line in &out {
        assert!(line.starts_with("413 "), "{out:?}");
        assert!(line.contains("limit"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let server = TestServer::start(&[("api.adminToken", "tok-123")]).await;
    for (header, expected) in [
        ("Bearer tok-123", 200),
        ("bearer tok-123", 200),
        ("BEARER tok-123", 200),
        ("Basic tok-123", 401),
        ("bearer tok-124", 401),
    ] {
        let status = client()
            .get(format!("{}/api/v1/machines", server.url))
            .header("authorization", header)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), expected, "{header}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filename_cannot_add_content_disposition_parameters() {
    use bootfactory::fixture::{FixtureOptions, write_release};
    use bootfactory::oci::ImageCatalog;
    use bootfactory::oci::bundle::{self, NoProgress};
    use bootfactory::store::Store;
    let layout = tempfile::tempdir().unwrap();
    write_release(layout.path(), &FixtureOptions::default()).expect("fixture");
    let data = tempfile::tempdir().unwrap();
    {
        let store = Store::open(data.path()).unwrap();
        let catalog = ImageCatalog::new(store.clone()).unwrap();
        bundle::import(&catalog, layout.path(), None, &NoProgress)
            .await
            .unwrap();
        store.flush().await.unwrap();
    }
    let server = TestServer::start_in(data, &[("offline", "true")]).await;
    let resp = client()
        .post(format!("{}/schematics", server.url))
        .body("customization: {}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id: serde_json::Value = resp.json().await.unwrap();
    let id = id["id"].as_str().unwrap().to_string();
    let base = format!("{}/image/{id}/v1.11.6/kernel-amd64", server.url);
    for (filename, expected) in [
        ("vmlinuz", r#"attachment; filename="vmlinuz""#),
        (
            "a%22%3B%20size%3D1%3B%20x%3D%22",
            r#"attachment; filename="a\"; size=1; x=\"""#,
        ),
        ("a%5C", r#"attachment; filename="a\\""#),
        (
            "k%C3%A9rnel%09x",
            "attachment; filename=\"k_rnel_x\"; filename*=UTF-8''k%C3%A9rnel_x",
        ),
    ] {
        let resp = client()
            .head(format!("{base}?filename={filename}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-disposition"],
            expected,
            "{filename}"
        );
    }
    // The checksum line cannot gain lines either.
    let text = client()
        .get(format!(
            "{}/image/{id}/v1.11.6/kernel-amd64.sha256?filename=a%0Ab",
            server.url
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(text.ends_with("  a_b\n"), "{text:?}");
}
