//! Stored files over plain HTTP/1.1, where the body goes out with `sendfile(2)`
//! (`file_response::sendfile`), checked with real sockets and real curl: byte-exact full and
//! range downloads, a keep-alive connection mixing range, full, HEAD, 304 and 416 answers,
//! pipelined requests, a client that stops reading (the idle timeout still closes it), a slow
//! download that outlives the idle timeout while making progress, and a
//! blob truncated on disk while its response is being sent (the connection closes short; no
//! byte that is not the file's reaches the wire). The TLS path is covered by `tests/tls.rs`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use support::TestServer;

/// A server (offline) whose store holds one blob of `len` pseudo-random bytes; returns it,
/// the bytes and the blob's URL path.
async fn serve_blob(len: usize, overrides: &[(&str, &str)]) -> (TestServer, Vec<u8>, String) {
    let data = tempfile::tempdir().unwrap();
    let mut content = vec![0u8; len];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in content.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let digest = {
        let store = bootfactory::store::Store::open(data.path()).unwrap();
        let d = store.put_bytes(&content).await.unwrap();
        store.flush().await.unwrap();
        d
    };
    let mut all = vec![("offline", "true")];
    all.extend_from_slice(overrides);
    let server = TestServer::start_in(data, &all).await;
    (server, content, format!("/v2/library/zc/blobs/{digest}"))
}

fn blob_file(server: &TestServer, path: &str) -> std::path::PathBuf {
    let hex = path.rsplit(':').next().unwrap();
    server.data_path(&format!("blobs/sha256/{hex}"))
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .expect("run curl")
}

/// One response read from a raw connection.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Reads one response (with a `Content-Length` body unless `head_only`) from `stream`,
/// keeping what follows in `pending`.
fn read_answer(stream: &mut TcpStream, pending: &mut Vec<u8>, head_only: bool) -> Answer {
    let mut buf = vec![0u8; 256 << 10];
    let end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut buf).expect("read head");
        assert!(n > 0, "connection closed before a response head");
        pending.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
    pending.drain(..end + 4);
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let len = if head_only { 0 } else { len };
    while pending.len() < len {
        let n = stream.read(&mut buf).expect("read body");
        assert!(
            n > 0,
            "connection closed after {} of {len} bytes",
            pending.len()
        );
        pending.extend_from_slice(&buf[..n]);
    }
    let body = pending.drain(..len).collect();
    Answer { status, head, body }
}

fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_byte_exact_full_and_range_bodies_on_one_connection() {
    let (server, content, path) = serve_blob(3 << 20, &[]).await;
    let url = format!("{}{path}", server.url);
    let dir = tempfile::tempdir().unwrap();
    let out = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let (full, range, tail, head) = (out("full"), out("range"), out("tail"), out("head"));
    let u = url.clone();
    let (full2, range2, tail2, head2) = (full.clone(), range.clone(), tail.clone(), head.clone());
    let result = tokio::task::spawn_blocking(move || {
        let (full, range, tail, head) = (full2, range2, tail2, head2);
        // A range, then the whole blob, then a suffix range, then HEAD: one connection.
        curl(&[
            "-w",
            "%{http_code} %{num_connects} %{size_download}\n",
            "-r",
            "1000-1048575",
            "-o",
            &range,
            &u,
            "--next",
            "-w",
            "%{http_code} %{num_connects} %{size_download}\n",
            "-o",
            &full,
            &u,
            "--next",
            "-w",
            "%{http_code} %{num_connects} %{size_download}\n",
            "-r",
            "-777",
            "-o",
            &tail,
            &u,
            "--next",
            "-w",
            "%{http_code} %{num_connects} %{size_download}\n",
            "-I",
            "-o",
            &head,
            &u,
        ])
    })
    .await
    .unwrap();
    assert!(result.status.success(), "{result:?}");
    let lines: Vec<String> = String::from_utf8_lossy(&result.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "206 1 1047576".to_string(),
            format!("200 0 {}", content.len()),
            "206 0 777".to_string(),
            "200 0 0".to_string(),
        ],
        "status, new connections, body bytes (one connection for all four)"
    );
    let read = |p: &str| std::fs::read(p).unwrap();
    assert_eq!(sha256(&read(&full)), sha256(&content));
    assert_eq!(sha256(&read(&range)), sha256(&content[1000..1_048_576]));
    assert_eq!(read(&tail), &content[content.len() - 777..]);
    let head = String::from_utf8(read(&head)).unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}", content.len())),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_with_exact_bodies() {
    let (server, content, path) = serve_blob(2 << 20, &[]).await;
    let addr = server.addr;
    let etag = path.rsplit('/').next().unwrap().to_string();
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = |extra: &str, method: &str| {
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}\r\n")
        };
        // Everything in one write: the server reads them back to back.
        let all = [
            req("Range: bytes=10-19\r\n", "GET"),
            req("", "GET"),
            req("", "HEAD"),
            req(&format!("If-None-Match: \"{etag}\"\r\n"), "GET"),
            req("Range: bytes=99999999-\r\n", "GET"),
            req("Range: bytes=-5\r\n", "GET"),
            req("", "GET"),
        ]
        .concat();
        s.write_all(all.as_bytes()).unwrap();
        let mut pending = Vec::new();
        let a = read_answer(&mut s, &mut pending, false);
        assert_eq!((a.status, a.body.as_slice()), (206, &content[10..20]));
        let a = read_answer(&mut s, &mut pending, false);
        assert_eq!(a.status, 200);
        assert_eq!(sha256(&a.body), sha256(&content));
        let a = read_answer(&mut s, &mut pending, true);
        assert_eq!(a.status, 200);
        assert_eq!(
            header(&a, "content-length"),
            Some(content.len().to_string().as_str())
        );
        let a = read_answer(&mut s, &mut pending, true);
        assert_eq!(a.status, 304);
        let a = read_answer(&mut s, &mut pending, false);
        assert_eq!(a.status, 416);
        assert_eq!(
            header(&a, "content-range"),
            Some(format!("bytes */{}", content.len()).as_str())
        );
        let a = read_answer(&mut s, &mut pending, false);
        assert_eq!(
            (a.status, a.body.as_slice()),
            (206, &content[content.len() - 5..])
        );
        let a = read_answer(&mut s, &mut pending, false);
        assert_eq!(a.status, 200);
        assert_eq!(sha256(&a.body), sha256(&content));
        // Nothing after the last answer (a HEAD sent no body, nothing was sent twice).
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut extra = [0u8; 64];
        let n = s.read(&mut extra).unwrap_or(0);
        assert!(
            pending.is_empty() && n == 0,
            "{} stray bytes",
            pending.len() + n
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_sendfile_body_is_cut_at_the_idle_timeout() {
    let (server, content, path) = serve_blob(32 << 20, &[("http.idleTimeoutSeconds", "1")]).await;
    let addr = server.addr;
    let mut s = tokio::task::spawn_blocking(move || {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(64 << 10).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut s: TcpStream = socket.into();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .unwrap();
        s
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    let cut = loop {
        let n = support::metric(
            &server.url,
            "bootfactory_http_timeouts_total{phase=\"write\"}",
        )
        .await;
        if n >= Some(1.0) || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(cut, Some(1.0), "a blocked sendfile response is cut");
    // What is in the socket buffers still arrives, then the connection ends short.
    let received = tokio::task::spawn_blocking(move || {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    })
    .await
    .unwrap();
    let start = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &received[start..];
    assert!(body.len() < content.len(), "the whole body arrived");
    assert_eq!(body, &content[..body.len()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_truncated_while_it_is_sent_ends_the_connection_short_without_zeros() {
    let (server, content, path) = serve_blob(32 << 20, &[]).await;
    let addr = server.addr;
    let file = blob_file(&server, &path);
    let path_again = path.clone();
    let cut_at = 16usize << 20;
    let received = tokio::task::spawn_blocking(move || {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(64 << 10).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut s: TcpStream = socket.into();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .unwrap();
        let mut pending = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        // The head and the first body bytes: the response has started.
        while !pending.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            pending.extend_from_slice(&buf[..n]);
        }
        // Truncated in place (same inode): the open handle sees the shorter file.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(cut_at as u64)
            .unwrap();
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        pending
    })
    .await
    .unwrap();
    let start = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&received[..start]).to_ascii_lowercase();
    assert!(
        head.contains(&format!("content-length: {}", content.len())),
        "{head}"
    );
    let body = &received[start..];
    assert!(
        body.len() <= cut_at,
        "{} bytes arrived from a file of {cut_at}",
        body.len()
    );
    assert_eq!(
        sha256(body),
        sha256(&content[..body.len()]),
        "only file bytes"
    );
    // A new request for the blob: the store notices the changed file and refuses it.
    let url = format!("{}{path_again}", server.url);
    let out =
        tokio::task::spawn_blocking(move || curl(&["-o", "/dev/null", "-w", "%{http_code}", &url]))
            .await
            .unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout), "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_download_outlives_the_idle_timeout() {
    // The whole body is queued in hyper at once (placeholders), so the request must count as
    // in flight until its bytes have left, not until it was queued.
    let (server, content, path) = serve_blob(8 << 20, &[("http.idleTimeoutSeconds", "1")]).await;
    let addr = server.addr;
    let len = content.len();
    let body = tokio::task::spawn_blocking(move || {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(64 << 10).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut s: TcpStream = socket.into();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .unwrap();
        let mut pending = Vec::new();
        let started = Instant::now();
        // ≈ 3 MB/s: the download takes ≈ 2.7 s, well past the 1 s idle limit, while every
        // write makes progress.
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
            if pending.len() >= len + 100 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n")
                && pending.len() - i - 4 >= len
            {
                break;
            }
        }
        assert!(
            started.elapsed() > Duration::from_millis(1500),
            "not slow enough to test"
        );
        pending
    })
    .await
    .unwrap();
    let start = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(body.len() - start, content.len(), "the whole body arrived");
    assert_eq!(sha256(&body[start..]), sha256(&content));
}
