//! Cached asset serving: bootfactory against nginx serving the same file from disk, on the same
//! machine in the same run. It prints figures and ratios and never asserts on speed; it only
//! fails when a server answers wrongly. See `benches/README.md`.
//!
//! `cargo bench --bench serve` writes the Realistic fixture release for Talos v1.11.6, imports
//! it with `bootfactory mirror import`, starts the release `bootfactory serve` binary (a child
//! process, `--offline`), creates a schematic with the `tailscale` extension and requests its
//! `initramfs-amd64.xz` once (a build, ≈ 100 MB). The store keeps the result as a
//! content-addressed blob, `<data>/blobs/sha256/<hex>`, whose hex is the response's `ETag`; a
//! private nginx (child process, `worker_processes auto`, `sendfile on`, `access_log off`) serves
//! that very file. Then, with one raw HTTP/1.1 client for both, alternating between the servers
//! request by request:
//!
//! - TTFB of a full GET on a new connection, aborted after the first body byte;
//! - TTFB of `Range: bytes=0-0` on a kept-alive connection;
//! - full downloads on new connections and on a kept-alive connection (MB/s);
//! - memory per concurrent download: N connections (100, then 200) each send a full GET, read
//!   the head and the first body bytes, then stop reading (a client far slower than the
//!   server); with every download in flight, the server's resident memory (`VmRSS`, `RssAnon`;
//!   nginx: master and workers summed) minus the same figure just before, divided by N.
//!
//! Knobs: `BENCH_TTFB_REQUESTS` (default 300 per server and kind), `BENCH_DOWNLOADS` (default 21
//! per server and kind), `BENCH_CONCURRENT` (comma-separated download counts of the memory
//! rows, default `100,200`), `BENCH_EXTENSIONS` (comma-separated official extensions of the
//! schematic, default `tailscale`), `BENCH_LOG_LEVEL` (bootfactory's `--log-level`, default
//! `info`, the shipped default), `BENCH_PIN` (`0`: leave CPU placement to the kernel; see
//! below). Needs `nginx` (Debian: `apt-get install -y nginx-light`);
//! without it the benchmark prints a message and exits 0.
//!
//! CPU placement: on a machine with two or more CPUs the client runs on the first one and both
//! servers (every process and thread of each) on the others. Left to the kernel, whether a
//! server's sending thread lands on the client's CPU decided the figure: on two cores an
//! nginx-against-nginx run measured anywhere from 1.0× to 1.9× between two identical servers.

#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bootfactory::fixture::{FixtureOptions, SizeProfile, write_release};
use sha2::{Digest as _, Sha256};
use support::guard::{Proc, Scratch, have, quiet_panics_once_interrupted, spawn_signal_watcher};
use support::stats::{env_number, median, percentile};

/// The Talos version of the fixture release.
const VERSION: &str = "v1.11.6";
/// The asset requested.
const ASSET: &str = "initramfs-amd64.xz";
/// Official extensions of the schematic unless `BENCH_EXTENSIONS` says otherwise: with the
/// Realistic fixture, base (70.8 MB) plus tailscale gives an asset of ≈ 100 MB.
const DEFAULT_EXTENSIONS: &str = "tailscale";
/// TTFB samples per server and kind unless `BENCH_TTFB_REQUESTS` says otherwise.
const DEFAULT_TTFB_REQUESTS: usize = 300;
/// Unmeasured TTFB requests per server and kind before the measured ones.
const TTFB_WARMUP: usize = 20;
/// TTFB samples above this (µs) are counted as stalls in the report.
const STALL_MICROS: f64 = 30_000.0;
/// Full downloads per server and kind unless `BENCH_DOWNLOADS` says otherwise.
const DEFAULT_DOWNLOADS: usize = 21;
/// Read/write timeout of every client socket.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Client read buffer.
const READ_BUFFER: usize = 1 << 20;
/// Longest wait for a server to come up, and for the first (building) request.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);
/// Concurrent stalled downloads of the memory rows unless `BENCH_CONCURRENT` says otherwise.
const DEFAULT_CONCURRENT: &str = "100,200";
/// Receive buffer of each stalled client (keeps the kernel's share of the test small).
const STALLED_RCVBUF: usize = 64 << 10;
/// How long the servers get to settle once every stalled download is in flight.
const SETTLE: Duration = Duration::from_millis(1500);

fn main() {
    if !have("nginx") {
        println!(
            "serve benchmark skipped: it needs `nginx` on PATH (Debian: apt-get install -y nginx-light)"
        );
        return;
    }
    let settings = Settings::from_env();
    quiet_panics_once_interrupted();
    spawn_signal_watcher();
    let results = bench(&settings);
    results.print(&settings);
}

/// Settings from the environment.
struct Settings {
    ttfb_requests: usize,
    downloads: usize,
    extensions: Vec<String>,
    log_level: String,
    concurrent: Vec<usize>,
    pin: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let extensions = std::env::var("BENCH_EXTENSIONS")
            .unwrap_or_else(|_| DEFAULT_EXTENSIONS.to_string())
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_start_matches("siderolabs/").to_string())
            .collect();
        Settings {
            ttfb_requests: env_number("BENCH_TTFB_REQUESTS", DEFAULT_TTFB_REQUESTS),
            downloads: env_number("BENCH_DOWNLOADS", DEFAULT_DOWNLOADS),
            extensions,
            log_level: std::env::var("BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
            concurrent: std::env::var("BENCH_CONCURRENT")
                .unwrap_or_else(|_| DEFAULT_CONCURRENT.to_string())
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .filter(|&n| n > 0)
                .collect(),
            pin: std::env::var("BENCH_PIN").map_or(true, |v| v != "0"),
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client (the same for every server)

/// A server under test: where, and which path serves the asset.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    path: String,
}

/// Why a request failed, naming the server.
fn fail(t: &Target, what: &str, detail: impl std::fmt::Display) -> ! {
    panic!("{} (http://{}{}): {what}: {detail}", t.name, t.addr, t.path)
}

/// A parsed response head.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> Option<u64> {
        self.header("content-length")?.parse().ok()
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// A request head (plus body, if any).
fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: serve-bench\r\n");
    if !keep_alive {
        r.push_str("Connection: close\r\n");
    }
    for (k, v) in extra {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads until the end of the response head. Returns the head, where the body starts in `buf`
/// and how many bytes of `buf` are filled.
fn read_head(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<(Head, usize, usize)> {
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Err(std::io::Error::other("response head too large"));
        }
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the end of the response head",
            ));
        }
        let searched_from = filled.saturating_sub(3);
        filled += n;
        if let Some(end) = find(&buf[searched_from..filled], b"\r\n\r\n") {
            let end = searched_from + end;
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = text.split("\r\n");
            let status = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("bad status line in {text:?}")))?;
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            return Ok((Head { status, headers }, end + 4, filled));
        }
    }
}

/// A small request on a new connection; returns the head and the whole body.
fn small_request(
    t: &Target,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(Head, Vec<u8>)> {
    let mut stream = connect(t.addr)?;
    stream.write_all(&request_bytes(t.addr, method, path, &[], body, false))?;
    let mut buf = vec![0u8; 64 << 10];
    let (head, start, filled) = read_head(&mut stream, &mut buf)?;
    let mut body = buf[start..filled].to_vec();
    stream.read_to_end(&mut body)?;
    if let Some(len) = head.content_length() {
        body.truncate(len as usize);
    }
    Ok((head, body))
}

/// Checks a full (200) response's head for the asset.
fn check_full(t: &Target, head: &Head, size: u64, what: &str) {
    if head.status != 200 || head.content_length() != Some(size) {
        fail(
            t,
            what,
            format!(
                "status {}, Content-Length {:?}, expected 200 with {size}",
                head.status,
                head.content_length()
            ),
        );
    }
    if head.header("transfer-encoding").is_some() {
        fail(t, what, "unexpected Transfer-Encoding");
    }
}

/// TTFB of a full GET on a new connection, which is then dropped after the first body byte
/// (the server sees a reset). Microseconds from writing the request to reading that byte.
fn ttfb_new_connection(t: &Target, size: u64, buf: &mut [u8]) -> f64 {
    let what = "GET (aborted after the first body byte)";
    let mut stream = connect(t.addr).unwrap_or_else(|e| fail(t, what, e));
    let request = request_bytes(t.addr, "GET", &t.path, &[], &[], false);
    let started = Instant::now();
    stream
        .write_all(&request)
        .unwrap_or_else(|e| fail(t, what, e));
    let (head, start, mut filled) =
        read_head(&mut stream, buf).unwrap_or_else(|e| fail(t, what, e));
    while filled == start {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => fail(t, what, "connection closed before the first body byte"),
            Ok(n) => filled += n,
            Err(e) => fail(t, what, e),
        }
    }
    let micros = started.elapsed().as_secs_f64() * 1e6;
    check_full(t, &head, size, what);
    micros
}

/// TTFB of `Range: bytes=0-0` on the kept-alive `stream`; microseconds from writing the
/// request to reading the one body byte.
fn ttfb_range(t: &Target, stream: &mut TcpStream, size: u64, buf: &mut [u8]) -> f64 {
    let what = "GET Range: bytes=0-0 (keep-alive)";
    let request = request_bytes(t.addr, "GET", &t.path, &[("Range", "bytes=0-0")], &[], true);
    let started = Instant::now();
    stream
        .write_all(&request)
        .unwrap_or_else(|e| fail(t, what, e));
    let (head, start, mut filled) = read_head(stream, buf).unwrap_or_else(|e| fail(t, what, e));
    while filled == start {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => fail(t, what, "connection closed before the body"),
            Ok(n) => filled += n,
            Err(e) => fail(t, what, e),
        }
    }
    let micros = started.elapsed().as_secs_f64() * 1e6;
    let expected_range = format!("bytes 0-0/{size}");
    if head.status != 206
        || head.content_length() != Some(1)
        || head.header("content-range") != Some(expected_range.as_str())
        || filled - start != 1
        || head.closes()
    {
        fail(
            t,
            what,
            format!(
                "status {}, Content-Length {:?}, Content-Range {:?}, {} body bytes, Connection {:?}",
                head.status,
                head.content_length(),
                head.header("content-range"),
                filled - start,
                head.header("connection")
            ),
        );
    }
    micros
}

/// A full GET of the asset, on `stream` (keep-alive) or on a new connection; the body is
/// counted (and hashed into `hasher`, if given), never kept. Seconds from writing the request
/// to reading the last byte, and the head.
fn download(
    t: &Target,
    stream: Option<&mut TcpStream>,
    size: u64,
    buf: &mut [u8],
    mut hasher: Option<&mut Sha256>,
) -> (f64, Head) {
    let what = "GET (full download)";
    let keep_alive = stream.is_some();
    let mut fresh;
    let stream = match stream {
        Some(s) => s,
        None => {
            fresh = connect(t.addr).unwrap_or_else(|e| fail(t, what, e));
            &mut fresh
        }
    };
    let request = request_bytes(t.addr, "GET", &t.path, &[], &[], keep_alive);
    let started = Instant::now();
    stream
        .write_all(&request)
        .unwrap_or_else(|e| fail(t, what, e));
    let (head, start, filled) = read_head(stream, buf).unwrap_or_else(|e| fail(t, what, e));
    check_full(t, &head, size, what);
    if keep_alive && head.closes() {
        fail(t, what, "the server closes a keep-alive connection");
    }
    let mut received = (filled - start) as u64;
    if received > size {
        fail(t, what, "more body bytes than Content-Length");
    }
    if let Some(h) = hasher.as_deref_mut() {
        h.update(&buf[start..filled]);
    }
    while received < size {
        let want = buf.len().min((size - received) as usize);
        match stream.read(&mut buf[..want]) {
            Ok(0) => fail(t, what, format!("connection closed after {received} bytes")),
            Ok(n) => {
                if let Some(h) = hasher.as_deref_mut() {
                    h.update(&buf[..n]);
                }
                received += n as u64;
            }
            Err(e) => fail(t, what, format!("after {received} bytes: {e}")),
        }
    }
    (started.elapsed().as_secs_f64(), head)
}

/// Polls `GET path` until it answers 200, or panics with the process's log.
fn wait_ready(t: &Target, proc: &mut Proc, path: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        proc.check_running();
        if let Ok((head, _)) = small_request(t, "GET", path, &[])
            && head.status == 200
        {
            return;
        }
        if Instant::now() > deadline {
            fail(
                t,
                "start",
                format!(
                    "no 200 from {path} within {START_TIMEOUT:?}; log:\n{}",
                    proc.log_tail(30)
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Memory per concurrent download

/// `VmRSS` and `RssAnon` of one process (KiB).
fn rss_kib(pid: u32) -> (u64, u64) {
    let [rss, anon] = support::procfs::status_fields(pid, ["VmRSS:", "RssAnon:"]);
    (rss.unwrap_or(0), anon.unwrap_or(0))
}

/// `pid` and its direct children (nginx: the master and its workers).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid …`: the comm may hold spaces, so split after its `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            pids.push(child);
        }
    }
    pids
}

/// `VmRSS` and `RssAnon` (KiB) of a server's processes, summed.
fn server_rss(pid: u32) -> (u64, u64) {
    process_tree(pid)
        .into_iter()
        .map(rss_kib)
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// A connection with a small receive buffer (set before connecting, so the window stays small).
fn connect_small_window(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_recv_buffer_size(STALLED_RCVBUF)?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Memory per download with `n` downloads of `t` stalled mid-body: (`VmRSS`, `RssAnon`)
/// growth in KiB divided by `n`.
fn memory_per_download(t: &Target, pid: u32, n: usize, size: u64) -> (f64, f64) {
    let what = "GET (stalled download)";
    std::thread::sleep(SETTLE);
    let before = server_rss(pid);
    let mut buf = vec![0u8; 64 << 10];
    let mut stalled = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = connect_small_window(t.addr).unwrap_or_else(|e| fail(t, what, e));
        stream
            .write_all(&request_bytes(t.addr, "GET", &t.path, &[], &[], false))
            .unwrap_or_else(|e| fail(t, what, e));
        let (head, start, mut filled) =
            read_head(&mut stream, &mut buf).unwrap_or_else(|e| fail(t, what, e));
        check_full(t, &head, size, what);
        while filled == start {
            match stream.read(&mut buf[filled..]) {
                Ok(0) => fail(t, what, "connection closed before the body"),
                Ok(k) => filled += k,
                Err(e) => fail(t, what, e),
            }
        }
        stalled.push(stream);
    }
    std::thread::sleep(SETTLE);
    let during = server_rss(pid);
    drop(stalled);
    let per = |a: u64, b: u64| (b as f64 - a as f64) / n as f64;
    (per(before.0, during.0), per(before.1, during.1))
}

// ---------------------------------------------------------------------------------------------
// Setup

/// The bootfactory binary built with this benchmark's profile (release settings).
fn bootfactory_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bootfactory"));
    // Keep the user's environment from leaking configuration into the benchmark.
    for (k, _) in std::env::vars() {
        if k.starts_with("BOOTFACTORY_") {
            c.env_remove(k);
        }
    }
    c
}

/// The nginx configuration: the blob directory as document root, `/nosendfile/` the same with
/// `sendfile off` (a reference line).
fn nginx_conf(prefix: &Path, port: u16, root: &Path) -> String {
    let p = prefix.display();
    let root = root.display();
    // Running as root, workers would switch to `nobody`, who cannot enter the 0700 temp dir.
    let is_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let user = if is_root { "user root;\n" } else { "" };
    // Temp paths of the modules compiled in (the defaults are under /var/lib/nginx).
    let version = Command::new("nginx")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    let mut temp_paths = format!("    client_body_temp_path {p}/tmp/body;\n");
    for module in ["proxy", "fastcgi", "uwsgi", "scgi"] {
        if !version.contains(&format!("--without-http_{module}_module")) {
            temp_paths.push_str(&format!("    {module}_temp_path {p}/tmp/{module};\n"));
        }
    }
    format!(
        "{user}worker_processes auto;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{
    worker_connections 256;
}}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000;
{temp_paths}    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
        }}
        location = /ready {{
            return 200;
        }}
        location /nosendfile/ {{
            alias {root}/;
            sendfile off;
        }}
    }}
}}
"
    )
}

/// The servers and what they serve.
struct Setup {
    bootfactory: Proc,
    nginx: Proc,
    ours: Target,
    peer: Target,
    peer_no_sendfile: Target,
    size: u64,
    digest_hex: String,
    fixture_seconds: f64,
    import_seconds: f64,
    build_seconds: f64,
    blob_path: PathBuf,
    /// Last: fields drop in order, so the processes stop before their files go.
    _scratch: Scratch,
}

fn setup(settings: &Settings) -> Setup {
    let scratch = Scratch::new("bootfactory-serve-bench.");
    let root = scratch.path();

    eprintln!("[setup] writing the Realistic fixture release {VERSION}");
    let layout = root.join("layout");
    let started = Instant::now();
    write_release(
        &layout,
        &FixtureOptions {
            versions: vec![VERSION.into()],
            profile: SizeProfile::Realistic,
            ..FixtureOptions::default()
        },
    )
    .expect("write the fixture release");
    let fixture_seconds = started.elapsed().as_secs_f64();

    eprintln!("[setup] bootfactory mirror import");
    let data = root.join("data");
    let started = Instant::now();
    Proc::spawn(
        "bootfactory mirror import",
        bootfactory_bin()
            .args(["mirror", "import"])
            .arg(&layout)
            .arg("--data-dir")
            .arg(&data)
            .arg("--offline"),
        &root.join("import.log"),
    )
    .wait_success(Duration::from_secs(300));
    let import_seconds = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&layout).expect("remove the fixture layout");

    eprintln!("[setup] starting bootfactory serve");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut bootfactory = Proc::spawn(
        "bootfactory serve",
        bootfactory_bin()
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--http-listen", &listen])
            .arg("--offline")
            .args(["--log-level", &settings.log_level]),
        &root.join("bootfactory.log"),
    );
    let mut ours = Target {
        name: "bootfactory",
        addr: listen.parse().expect("socket address"),
        path: String::new(),
    };
    wait_ready(&ours, &mut bootfactory, "/healthz");

    let mut yaml = String::from("customization:\n  systemExtensions:\n    officialExtensions:\n");
    for e in &settings.extensions {
        yaml.push_str(&format!("      - siderolabs/{e}\n"));
    }
    let expected_id = bootfactory::schematic::parse(yaml.as_bytes())
        .expect("schematic")
        .id()
        .to_string();
    let (head, body) = small_request(&ours, "POST", "/schematics", yaml.as_bytes())
        .unwrap_or_else(|e| fail(&ours, "POST /schematics", e));
    let created: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        fail(
            &ours,
            "POST /schematics",
            format!("status {}, body not JSON: {e}", head.status),
        )
    });
    let id = created["id"].as_str().unwrap_or_default().to_string();
    if !(head.status == 200 || head.status == 201) || id != expected_id {
        fail(
            &ours,
            "POST /schematics",
            format!("status {}, id {id:?}, expected {expected_id}", head.status),
        );
    }
    ours.path = format!("/image/{id}/{VERSION}/{ASSET}");

    // The first request builds the asset; read its size from a HEAD first, then GET it.
    eprintln!("[setup] first request: building {}", ours.path);
    let started = Instant::now();
    let head = {
        // A HEAD waits for the build too; a generous timeout for it.
        let what = "HEAD (first request, builds the asset)";
        let mut stream = connect(ours.addr).unwrap_or_else(|e| fail(&ours, what, e));
        stream
            .set_read_timeout(Some(BUILD_TIMEOUT))
            .expect("set timeout");
        stream
            .write_all(&request_bytes(
                ours.addr,
                "HEAD",
                &ours.path,
                &[],
                &[],
                false,
            ))
            .unwrap_or_else(|e| fail(&ours, what, e));
        let mut buf = vec![0u8; 64 << 10];
        read_head(&mut stream, &mut buf)
            .unwrap_or_else(|e| {
                fail(
                    &ours,
                    what,
                    format!("{e}; log:\n{}", bootfactory.log_tail(30)),
                )
            })
            .0
    };
    let build_seconds = started.elapsed().as_secs_f64();
    let size = match (head.status, head.content_length()) {
        (200, Some(n)) => n,
        (status, len) => fail(
            &ours,
            "HEAD (build)",
            format!(
                "status {status}, Content-Length {len:?}; log:\n{}",
                bootfactory.log_tail(30)
            ),
        ),
    };
    let digest_hex = head
        .header("etag")
        .map(|e| e.trim_matches('"').to_string())
        .filter(|e| e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| fail(&ours, "HEAD", "no sha256 ETag"));

    // The cached blob: content-addressed under the data directory.
    let blobs = data.join("blobs").join("sha256");
    let blob_path = blobs.join(&digest_hex);
    let on_disk = std::fs::metadata(&blob_path)
        .unwrap_or_else(|e| panic!("cached blob {}: {e}", blob_path.display()))
        .len();
    assert_eq!(
        on_disk,
        size,
        "cached blob {} has another size than bootfactory's Content-Length",
        blob_path.display()
    );

    eprintln!("[setup] starting nginx on the blob directory");
    let prefix = root.join("nginx");
    std::fs::create_dir_all(prefix.join("tmp")).expect("nginx prefix");
    let nginx_port = free_port();
    std::fs::write(
        prefix.join("nginx.conf"),
        nginx_conf(&prefix, nginx_port, &blobs),
    )
    .expect("write nginx.conf");
    let mut nginx = Proc::spawn(
        "nginx",
        Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .arg("-e")
            .arg(prefix.join("error.log"))
            .args(["-g", "daemon off;"]),
        &prefix.join("stderr.log"),
    );
    let peer = Target {
        name: "nginx",
        addr: SocketAddr::from(([127, 0, 0, 1], nginx_port)),
        path: format!("/{digest_hex}"),
    };
    let peer_no_sendfile = Target {
        name: "nginx (sendfile off)",
        addr: peer.addr,
        path: format!("/nosendfile/{digest_hex}"),
    };
    wait_ready(&peer, &mut nginx, "/ready");

    // Every server must send the very same bytes.
    let mut buf = vec![0u8; READ_BUFFER];
    for t in [&ours, &peer, &peer_no_sendfile] {
        eprintln!("[check] {}: full GET, SHA-256 of the body", t.name);
        let mut hasher = Sha256::new();
        download(t, None, size, &mut buf, Some(&mut hasher));
        let got = hex::encode(hasher.finalize());
        if got != digest_hex {
            fail(
                t,
                "GET",
                format!("body SHA-256 {got}, expected {digest_hex}"),
            );
        }
    }

    Setup {
        bootfactory,
        nginx,
        ours,
        peer,
        peer_no_sendfile,
        size,
        digest_hex,
        fixture_seconds,
        import_seconds,
        build_seconds,
        blob_path,
        _scratch: scratch,
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// Everything measured: index 0 is nginx, 1 is bootfactory, 2 nginx with sendfile off.
struct Results {
    size: u64,
    digest_hex: String,
    blob_path: PathBuf,
    fixture_seconds: f64,
    import_seconds: f64,
    build_seconds: f64,
    ttfb_new: [Vec<f64>; 2],
    ttfb_range: [Vec<f64>; 2],
    /// MB/s.
    new_connection: [Vec<f64>; 3],
    keep_alive: [Vec<f64>; 3],
    /// Per level of `Settings::concurrent`: (nginx, bootfactory) × (`VmRSS`, `RssAnon`) KiB per
    /// download.
    memory: Vec<[(f64, f64); 2]>,
    cached_deliveries: Option<u64>,
    builds: Option<u64>,
    /// Where the client and the servers ran.
    placement: String,
    elapsed: f64,
}

/// Alternates which server goes first, round by round.
fn order<const N: usize>(round: usize) -> [usize; N] {
    let mut o = [0; N];
    for (i, slot) in o.iter_mut().enumerate() {
        *slot = (i + round) % N;
    }
    o
}

/// Sums a counter's samples whose line contains `filter` in a Prometheus text exposition.
fn counter_sum(metrics: &str, name: &str, filter: &str) -> Option<u64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in metrics.lines() {
        if line.starts_with(name) && line[name.len()..].starts_with('{') && line.contains(filter) {
            found = true;
            sum += line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    found.then_some(sum as u64)
}

/// Where the client and the servers run (see the module documentation).
struct Placement {
    client: nix::sched::CpuSet,
    servers: nix::sched::CpuSet,
    described: String,
}

impl Placement {
    /// The first allowed CPU for the client, the other allowed ones for the servers; `None`
    /// with fewer than two CPUs or when pinning is off.
    fn split(settings: &Settings) -> Option<Placement> {
        use nix::sched::{CpuSet, sched_getaffinity};
        if !settings.pin {
            return None;
        }
        let allowed = sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
        let cpus: Vec<usize> = (0..CpuSet::count())
            .filter(|&c| allowed.is_set(c).unwrap_or(false))
            .collect();
        let (&first, rest) = cpus.split_first()?;
        if rest.is_empty() {
            return None;
        }
        let mut client = CpuSet::new();
        client.set(first).ok()?;
        let mut servers = CpuSet::new();
        for &c in rest {
            servers.set(c).ok()?;
        }
        let list = rest
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        Some(Placement {
            client,
            servers,
            described: format!("client on CPU {first}, both servers on CPU {list}"),
        })
    }

    /// Pins the calling thread (and the processes it spawns from now on) to `set`; false if
    /// the kernel refused (a seccomp filter, a cpuset changed meanwhile).
    fn pin(set: &nix::sched::CpuSet) -> bool {
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), set).is_ok()
    }
}

fn bench(settings: &Settings) -> Results {
    let started = Instant::now();
    // Servers are spawned by `setup` and inherit the affinity of the thread that spawns them.
    let mut placement = Placement::split(settings);
    if placement
        .as_ref()
        .is_some_and(|p| !Placement::pin(&p.servers))
    {
        placement = None;
    }
    let mut s = setup(settings);
    if let Some(p) = &mut placement
        && !Placement::pin(&p.client)
    {
        // The servers are pinned but the client is not: say so rather than claim a split.
        p.described = format!(
            "{} requested; the client's pinning was refused",
            p.described
        );
    }
    let targets = [&s.peer, &s.ours];
    let size = s.size;
    let mut buf = vec![0u8; READ_BUFFER];

    eprintln!(
        "[ttfb] full GET on a new connection, aborted after the first byte: {TTFB_WARMUP} + {} per server",
        settings.ttfb_requests
    );
    for round in 0..TTFB_WARMUP {
        for k in order::<2>(round) {
            ttfb_new_connection(targets[k], size, &mut buf);
        }
    }
    let mut ttfb_new = [Vec::new(), Vec::new()];
    for round in 0..settings.ttfb_requests {
        for k in order::<2>(round) {
            ttfb_new[k].push(ttfb_new_connection(targets[k], size, &mut buf));
        }
    }

    eprintln!(
        "[ttfb] Range: bytes=0-0 on a kept-alive connection: {TTFB_WARMUP} + {} per server",
        settings.ttfb_requests
    );
    let mut conns = targets.map(|t| connect(t.addr).unwrap_or_else(|e| fail(t, "connect", e)));
    for round in 0..TTFB_WARMUP {
        for k in order::<2>(round) {
            ttfb_range(targets[k], &mut conns[k], size, &mut buf);
        }
    }
    let mut ttfb_range_samples = [Vec::new(), Vec::new()];
    for round in 0..settings.ttfb_requests {
        for k in order::<2>(round) {
            ttfb_range_samples[k].push(ttfb_range(targets[k], &mut conns[k], size, &mut buf));
        }
    }

    let all = [&s.peer, &s.ours, &s.peer_no_sendfile];
    let mb_per_s = |seconds: f64| size as f64 / 1e6 / seconds;
    eprintln!(
        "[throughput] full downloads on new connections: {} per server",
        settings.downloads
    );
    let mut new_connection = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..settings.downloads {
        for k in order::<3>(round) {
            let (seconds, _) = download(all[k], None, size, &mut buf, None);
            new_connection[k].push(mb_per_s(seconds));
        }
    }
    eprintln!(
        "[throughput] full downloads on a kept-alive connection: {} per server",
        settings.downloads
    );
    let mut keep_conns = all.map(|t| connect(t.addr).unwrap_or_else(|e| fail(t, "connect", e)));
    let mut keep_alive = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..settings.downloads {
        for k in order::<3>(round) {
            let (seconds, _) = download(all[k], Some(&mut keep_conns[k]), size, &mut buf, None);
            keep_alive[k].push(mb_per_s(seconds));
        }
    }
    drop(conns);
    drop(keep_conns);

    let pids = [s.nginx.id(), s.bootfactory.id()];
    let mut memory = Vec::new();
    for (round, &n) in settings.concurrent.iter().enumerate() {
        eprintln!("[memory] {n} concurrent stalled downloads per server");
        let mut level = [(0.0, 0.0); 2];
        for k in order::<2>(round) {
            level[k] = memory_per_download(targets[k], pids[k], n, size);
        }
        memory.push(level);
    }

    // Every measured bootfactory request must have been a cache hit.
    s.bootfactory.check_running();
    s.nginx.check_running();
    let metrics = small_request(&s.ours, "GET", "/metrics", &[])
        .map(|(_, body)| String::from_utf8_lossy(&body).into_owned())
        .unwrap_or_default();
    let builds = counter_sum(&metrics, "image_factory_assets_built_total", "initramfs");
    let cached_deliveries = counter_sum(
        &metrics,
        "image_factory_assets_delivered_cached_total",
        "initramfs",
    );
    if let Some(n) = builds
        && n != 1
    {
        fail(
            &s.ours,
            "cache",
            format!("{n} initramfs builds, expected exactly 1 (the setup request)"),
        );
    }

    let results = Results {
        size,
        digest_hex: s.digest_hex.clone(),
        blob_path: s.blob_path.clone(),
        fixture_seconds: s.fixture_seconds,
        import_seconds: s.import_seconds,
        build_seconds: s.build_seconds,
        ttfb_new,
        ttfb_range: ttfb_range_samples,
        new_connection,
        keep_alive,
        memory,
        cached_deliveries,
        builds,
        placement: placement.map_or_else(|| "left to the kernel".to_string(), |p| p.described),
        elapsed: 0.0,
    };
    eprintln!("[teardown] stopping nginx and bootfactory, removing temporary files");
    drop(s);
    Results {
        elapsed: started.elapsed().as_secs_f64(),
        ..results
    }
}

// ---------------------------------------------------------------------------------------------
// Report

impl Results {
    fn print(&self, settings: &Settings) {
        const W: [usize; 4] = [44, 15, 15, 24];
        let row = |metric: &str, peer: String, ours: String, ratio: String| {
            println!(
                "{metric:<w0$}{peer:>w1$}{ours:>w2$}{ratio:>w3$}",
                w0 = W[0],
                w1 = W[1],
                w2 = W[2],
                w3 = W[3]
            );
        };
        let ms = |us: f64| format!("{:.3}", us / 1000.0);
        let latency = |metric: &str, s: &[Vec<f64>; 2]| {
            let p50 = [percentile(&s[0], 50.0), percentile(&s[1], 50.0)];
            let p99 = [percentile(&s[0], 99.0), percentile(&s[1], 99.0)];
            row(
                &format!("{metric} p50 (ms)"),
                ms(p50[0]),
                ms(p50[1]),
                format!("{:.2} (nginx/bf)", p50[0] / p50[1]),
            );
            row(
                &format!("{metric} p99 (ms)"),
                ms(p99[0]),
                ms(p99[1]),
                format!("{:.2} (nginx/bf)", p99[0] / p99[1]),
            );
        };
        let throughput = |metric: &str, s: &[Vec<f64>; 3]| {
            let m = [median(&s[0]), median(&s[1])];
            row(
                metric,
                format!("{:.0}", m[0]),
                format!("{:.0}", m[1]),
                format!("{:.2} (bf/nginx)", m[1] / m[0]),
            );
        };
        let runs = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        };

        println!();
        println!(
            "serve benchmark: cached {ASSET} ({} bytes = {:.1} MB, sha256:{}…), schematic extensions [{}], Talos {VERSION}",
            self.size,
            self.size as f64 / 1e6,
            &self.digest_hex[..12],
            settings.extensions.join(", "),
        );
        row(
            "metric",
            "nginx".into(),
            "bootfactory".into(),
            "ratio (>1: bf better)".into(),
        );
        latency("TTFB full GET, new connection", &self.ttfb_new);
        latency("TTFB Range 0-0, keep-alive", &self.ttfb_range);
        throughput(
            &format!("download, new connection (MB/s) n={}", settings.downloads),
            &self.new_connection,
        );
        throughput(
            &format!("download, keep-alive (MB/s) n={}", settings.downloads),
            &self.keep_alive,
        );
        for (level, &n) in self.memory.iter().zip(&settings.concurrent) {
            let mib = |kib: f64| format!("{:.3}", kib / 1024.0);
            row(
                &format!("RSS per download, {n} stalled (MiB)"),
                mib(level[0].0),
                mib(level[1].0),
                format!("RssAnon {} / {}", mib(level[0].1), mib(level[1].1)),
            );
        }
        println!();
        let p50 = percentile(&self.ttfb_new[1], 50.0) / 1000.0;
        let ratio = median(&self.new_connection[1]) / median(&self.new_connection[0]);
        println!(
            "Targets: TTFB p50 < 5 ms: {} ({p50:.3} ms); throughput >= 1.0x nginx: {} ({ratio:.2}x, new connections).",
            if p50 < 5.0 { "met" } else { "NOT met" },
            if ratio >= 1.0 { "met" } else { "NOT met" },
        );
        if let Some(worst) = self
            .memory
            .iter()
            .map(|l| l[1].0.max(l[1].1) / 1024.0)
            .reduce(f64::max)
        {
            println!(
                "RSS per download <= 0.2 MiB: {} (largest of VmRSS/RssAnon over the levels: {worst:.3} MiB). \
                 Memory rows: N connections (receive buffer {} KiB) send a full GET, read the head and the first body bytes and stop \
                 reading; growth of the server's VmRSS (RssAnon after /) from just before to {:.1} s after the last one, / N.",
                if worst <= 0.2 { "met" } else { "NOT met" },
                STALLED_RCVBUF >> 10,
                SETTLE.as_secs_f64(),
            );
        }
        println!(
            "Reference, nginx with sendfile off (same file, same instance): {:.0} MB/s new connection, {:.0} MB/s keep-alive (medians).",
            median(&self.new_connection[2]),
            median(&self.keep_alive[2]),
        );
        println!(
            "All downloads in MB/s, new connection: nginx {}; bootfactory {}; nginx sendfile off {}.",
            runs(&self.new_connection[0]),
            runs(&self.new_connection[1]),
            runs(&self.new_connection[2]),
        );
        println!(
            "All downloads in MB/s, keep-alive: nginx {}; bootfactory {}; nginx sendfile off {}.",
            runs(&self.keep_alive[0]),
            runs(&self.keep_alive[1]),
            runs(&self.keep_alive[2]),
        );
        // Single downloads on loopback in a VM cluster at two levels (benches/README.md,
        // "serve"): the quartiles show where each server's median fell, and the aggregate
        // (every byte over every download's time) is what one client fetching file after file
        // gets, both levels weighed.
        let spread = |v: &[f64]| {
            format!(
                "{:.0} / {:.0} / {:.0}",
                percentile(v, 25.0),
                median(v),
                percentile(v, 75.0)
            )
        };
        let aggregate = |v: &[f64]| v.len() as f64 / v.iter().map(|mb_s| 1.0 / mb_s).sum::<f64>();
        println!(
            "Spread, new connection (p25 / median / p75 MB/s): nginx {}; bootfactory {}. Aggregate (all bytes / all download time): \
             nginx {:.0} MB/s, bootfactory {:.0} MB/s, {:.2}x.",
            spread(&self.new_connection[0]),
            spread(&self.new_connection[1]),
            aggregate(&self.new_connection[0]),
            aggregate(&self.new_connection[1]),
            aggregate(&self.new_connection[1]) / aggregate(&self.new_connection[0]),
        );
        let stalls = |v: &[f64]| v.iter().filter(|&&us| us > STALL_MICROS).count();
        println!(
            "TTFB samples over {} ms: new connection nginx {}, bootfactory {}; keep-alive Range nginx {}, bootfactory {} \
             (a 40 ms delayed-ACK wait behind Nagle shows up here).",
            STALL_MICROS / 1000.0,
            stalls(&self.ttfb_new[0]),
            stalls(&self.ttfb_new[1]),
            stalls(&self.ttfb_range[0]),
            stalls(&self.ttfb_range[1]),
        );
        println!(
            "MB = 10^6 bytes. TTFB: request written -> first body byte read, {} requests per server and kind after {TTFB_WARMUP} warm-up ones, \
             alternating between the servers; connection setup not included. Downloads: request written -> last byte read.",
            settings.ttfb_requests
        );
        println!(
            "nginx serves bootfactory's cached blob file itself ({}): worker_processes auto, sendfile on, tcp_nopush on, access_log off. \
             bootfactory: the release binary as a child process (`serve --offline`, log level {}, default runtime threads). \
             Client: one blocking raw HTTP/1.1 client in this process, 1 MiB reads. CPUs: {}.",
            self.blob_path.display(),
            settings.log_level,
            self.placement,
        );
        println!(
            "bootfactory initramfs builds during the run: {} (the setup request only); cached deliveries counted: {}.",
            self.builds.map_or("?".into(), |n| n.to_string()),
            self.cached_deliveries.map_or("?".into(), |n| n.to_string()),
        );
        println!(
            "Setup: fixture {:.1} s, import {:.1} s, first request (build + store) {:.1} s; whole run {:.1} s. \
             Figures move between runs on a busy machine: run it more than once and compare medians.",
            self.fixture_seconds, self.import_seconds, self.build_seconds, self.elapsed,
        );
    }
}
