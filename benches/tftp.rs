//! TFTP benchmark: bootfactory's TFTP server against dnsmasq's, same file, same clients, same
//! run. It prints figures and ratios and never asserts on speed; it fails only when a server
//! returns the wrong bytes.
//!
//! The file is 996,864 random bytes (the size of Debian's `ipxe-amd64.efi`). Each client
//! (`atftp`, `curl`) fetches it with blksize 1468, and with blksize 1468 + windowsize 8 where
//! the client supports it (atftp), alternating between the servers; the table shows medians.
//! The `raw lock-step` rows are an in-process client (one block per ACK, like firmware; no
//! process start, no file writes): they show the servers' per-ACK cost alone. Its ACK-to-ACK
//! time per block is printed too.
//!
//! dnsmasq cannot be told to serve TFTP on another port, so everything runs on the loopback
//! interface of a network namespace created for the run (`ip netns`, needs root): the bench
//! re-executes itself inside it, starts our server in-process and dnsmasq as a child, and
//! deletes the namespace at the end. It only kills processes it started.
//!
//! Run with `cargo bench --bench tftp`; `BENCH_RUNS` (default 7, at least 5) sets the fetches
//! per server and case. Needs `dnsmasq` (Debian `dnsmasq-base`), `atftp` and/or `curl`, `ip`.

#[path = "support/mod.rs"]
mod support;

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bootfactory::tftp::{TftpConfig, TftpFiles, TftpService};
use bytes::Bytes;
use support::guard::{Netns, Proc, have, is_root, run, spawn_signal_watcher};
use support::stats::median;

/// Size of Debian trixie's `ipxe-amd64.efi`.
const FILE_SIZE: usize = 996_864;
const FILE_NAME: &str = "ipxe.efi";
const OUR_PORT: u16 = 6969;
/// dnsmasq always serves TFTP on port 69.
const DNSMASQ_PORT: u16 = 69;
const DEFAULT_RUNS: usize = 7;
/// Longest a single client process may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
const INSIDE_ENV: &str = "BF_TFTP_BENCH_INSIDE";

fn main() {
    if std::env::var_os(INSIDE_ENV).is_some() {
        inside();
        return;
    }
    let missing: Vec<&str> = ["ip", "dnsmasq"].into_iter().filter(|t| !have(t)).collect();
    let clients: Vec<&str> = ["atftp", "curl"].into_iter().filter(|t| have(t)).collect();
    if !missing.is_empty() || clients.is_empty() || !is_root() {
        println!(
            "tftp benchmark skipped: it needs root, `ip`, `dnsmasq` and `atftp` or `curl` \
             (Debian: apt-get install -y dnsmasq-base atftp curl); missing: {missing:?}, \
             clients: {clients:?}, root: {}",
            is_root()
        );
        return;
    }
    spawn_signal_watcher();
    let ns = Netns::create(&format!("bftftpbench{}", std::process::id()))
        .unwrap_or_else(|e| panic!("{e}"));
    let exe = std::env::current_exe().expect("current_exe");
    // A registered child: stopped (and it stops its dnsmasq) if this process is interrupted.
    Proc::start(
        "the benchmark inside the namespace",
        ns.exec(exe).env(INSIDE_ENV, "1"),
    )
    .wait_success(Duration::from_secs(3600));
}

/// Everything below runs inside the namespace.
fn inside() {
    spawn_signal_watcher();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_RUNS)
        .max(5);
    run(&["ip", "link", "set", "lo", "up"]);

    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let data = random_bytes(FILE_SIZE);
    fs::write(root.join(FILE_NAME), &data).unwrap();
    // dnsmasq serves only world-readable files when it runs as root.
    set_mode(tmp.path(), 0o755);
    set_mode(&root, 0o755);
    set_mode(&root.join(FILE_NAME), 0o644);

    // Our server, in-process.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut files = TftpFiles::new();
    files.insert(FILE_NAME, Bytes::from(data.clone()));
    let config = TftpConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], OUR_PORT)),
        window_size_limit: 16,
        ..TftpConfig::default()
    };
    let svc = rt
        .block_on(TftpService::bind(config, files))
        .expect("binding our TFTP server");
    let ours = svc.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ours_task = rt.spawn(svc.run(async move {
        let _ = stop_rx.await;
    }));

    // dnsmasq, TFTP only.
    let dnsmasq_addr = SocketAddr::from(([127, 0, 0, 1], DNSMASQ_PORT));
    let dnsmasq = start_dnsmasq(&root, tmp.path());
    let version = Command::new("dnsmasq")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default();

    let out = tmp.path().join("out");
    wait_answering("dnsmasq", dnsmasq_addr, &out);
    wait_answering("bootfactory", ours, &out);

    let mut cases: Vec<Case> = Vec::new();
    if have("atftp") {
        cases.push(Case::Atftp { windowsize: None });
        cases.push(Case::Atftp {
            windowsize: Some(8),
        });
    }
    if have("curl") {
        cases.push(Case::Curl);
    }
    cases.push(Case::Raw { blksize: 1468 });
    cases.push(Case::Raw { blksize: 512 });

    println!(
        "TFTP fetch of {FILE_SIZE} random bytes over loopback in a network namespace; {runs} \
         fetches per server and case, alternating; medians.\npeer: {version}"
    );
    println!("Negotiated options (first reply):");
    for case in &cases {
        if let Case::Atftp { .. } = case {
            for (name, addr) in [("bootfactory", ours), ("dnsmasq", dnsmasq_addr)] {
                let oack = case.negotiated(addr, &out);
                println!("  {:<32} {name:<12} {oack}", case.label());
            }
        }
    }
    println!();
    println!(
        "| client / options | bootfactory ms | MB/s | dnsmasq ms | MB/s | throughput ours/dnsmasq |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut per_block = Vec::new();
    for case in &cases {
        let mut t_ours = Vec::new();
        let mut t_peer = Vec::new();
        for i in 0..runs {
            // Alternate which server goes first.
            let order = if i % 2 == 0 {
                [(ours, true), (dnsmasq_addr, false)]
            } else {
                [(dnsmasq_addr, false), (ours, true)]
            };
            for (addr, is_ours) in order {
                let t = case.fetch(addr, &out);
                let got = fs::read(&out).unwrap_or_default();
                assert!(
                    got == data,
                    "{} from {}: wrong content ({} bytes)",
                    case.label(),
                    if is_ours { "bootfactory" } else { "dnsmasq" },
                    got.len()
                );
                if is_ours {
                    t_ours.push(t);
                } else {
                    t_peer.push(t);
                }
            }
        }
        let median_time = |t: &[Duration]| {
            Duration::from_secs_f64(median(
                &t.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
            ))
        };
        let (m_ours, m_peer) = (median_time(&t_ours), median_time(&t_peer));
        let mbps = |d: Duration| FILE_SIZE as f64 / d.as_secs_f64() / 1e6;
        if let Case::Raw { blksize } = case {
            let blocks = (FILE_SIZE / usize::from(*blksize) + 1) as f64;
            per_block.push(format!(
                "{}: {:.1} µs per block (ACK to next ACK) from bootfactory, {:.1} µs from dnsmasq",
                case.label(),
                m_ours.as_secs_f64() * 1e6 / blocks,
                m_peer.as_secs_f64() * 1e6 / blocks
            ));
        }
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
            case.label(),
            m_ours.as_secs_f64() * 1e3,
            mbps(m_ours),
            m_peer.as_secs_f64() * 1e3,
            mbps(m_peer),
            mbps(m_ours) / mbps(m_peer)
        );
    }
    println!(
        "\nTimes are whole client runs (process start to exit) for atftp and curl, the transfer \
         alone for the raw client; the same for both servers."
    );
    for line in per_block {
        println!("{line}");
    }

    drop(dnsmasq);
    let _ = stop_tx.send(());
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), ours_task).await });
}

/// One way of fetching the file.
enum Case {
    Atftp {
        windowsize: Option<u16>,
    },
    Curl,
    /// The in-process lock-step client; blksize 512 means no options at all (RFC 1350).
    Raw {
        blksize: u16,
    },
}

impl Case {
    fn label(&self) -> String {
        match self {
            Case::Atftp { windowsize: None } => "atftp blksize 1468".into(),
            Case::Atftp {
                windowsize: Some(w),
            } => format!("atftp blksize 1468 windowsize {w}"),
            Case::Curl => "curl --tftp-blksize 1468".into(),
            Case::Raw { blksize: 512 } => "raw lock-step, no options (blksize 512)".into(),
            Case::Raw { blksize } => format!("raw lock-step blksize {blksize}"),
        }
    }

    fn command(&self, addr: SocketAddr, out: &Path, trace: bool) -> Command {
        match self {
            Case::Atftp { windowsize } => {
                let mut c = Command::new("atftp");
                c.args(["--get", "-r", FILE_NAME, "-l"]).arg(out);
                c.args(["--option", "blksize 1468"]);
                if let Some(w) = windowsize {
                    c.args(["--option", &format!("windowsize {w}")]);
                }
                if trace {
                    c.arg("--trace");
                }
                c.arg(addr.ip().to_string()).arg(addr.port().to_string());
                c
            }
            Case::Curl | Case::Raw { .. } => {
                let mut c = Command::new("curl");
                c.args(["--silent", "--show-error", "--tftp-blksize", "1468", "-o"])
                    .arg(out)
                    .arg(format!("tftp://{addr}/{FILE_NAME}"));
                c
            }
        }
    }

    /// Fetches once into `out`; returns the wall time of the client process (of the transfer
    /// alone for the raw client).
    fn fetch(&self, addr: SocketAddr, out: &Path) -> Duration {
        let _ = fs::remove_file(out);
        if let Case::Raw { blksize } = self {
            let start = Instant::now();
            let data = raw_lockstep(addr, *blksize);
            let elapsed = start.elapsed();
            fs::write(out, data).unwrap();
            return elapsed;
        }
        let cmd = self.command(addr, out, false);
        let start = Instant::now();
        let ran = run_bounded(cmd, FETCH_TIMEOUT);
        let elapsed = start.elapsed();
        assert!(
            ran.success,
            "{} from {addr} failed: {}",
            self.label(),
            ran.output
        );
        elapsed
    }

    /// The OACK the server sent, as atftp's trace prints it.
    fn negotiated(&self, addr: SocketAddr, out: &Path) -> String {
        let ran = run_bounded(self.command(addr, out, true), FETCH_TIMEOUT);
        ran.output
            .lines()
            .find(|l| l.starts_with("received OACK") || l.contains("DATA <block: 1,"))
            .map(|l| {
                if l.starts_with("received OACK") {
                    l.trim().to_owned()
                } else {
                    "no OACK (options refused): blksize 512".to_owned()
                }
            })
            .unwrap_or_else(|| "?".into())
    }
}

/// Fetches the file one block per ACK from a fresh socket; blksize 512 sends no options.
/// Panics on a timeout or an ERROR (the bench checks the content afterwards).
fn raw_lockstep(server: SocketAddr, blksize: u16) -> Vec<u8> {
    use std::net::UdpSocket;
    let sock = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = vec![0, 1];
    req.extend_from_slice(FILE_NAME.as_bytes());
    req.extend_from_slice(b"\0octet\0");
    if blksize != 512 {
        req.extend_from_slice(format!("blksize\0{blksize}\0").as_bytes());
    }
    sock.send_to(&req, server).unwrap();
    let mut buf = vec![0u8; usize::from(blksize) + 4];
    let mut data = Vec::with_capacity(FILE_SIZE);
    let mut expected: u16 = 1;
    let ack = |sock: &UdpSocket, n: u16, to: SocketAddr| {
        let [a, b] = n.to_be_bytes();
        sock.send_to(&[0, 4, a, b], to).unwrap();
    };
    loop {
        let (n, from) = sock.recv_from(&mut buf).expect("raw client: no reply");
        assert!(n >= 4, "raw client: short packet");
        match u16::from_be_bytes([buf[0], buf[1]]) {
            6 => ack(&sock, 0, from),
            3 => {
                let block = u16::from_be_bytes([buf[2], buf[3]]);
                if block != expected {
                    continue;
                }
                data.extend_from_slice(&buf[4..n]);
                ack(&sock, block, from);
                expected = expected.wrapping_add(1);
                if n - 4 < usize::from(blksize) {
                    return data;
                }
            }
            op => panic!("raw client: opcode {op} from {from}"),
        }
    }
}

/// dnsmasq with TFTP only (no DNS, no DHCP) on 127.0.0.1:69; stopped (by PID) on drop.
fn start_dnsmasq(root: &Path, dir: &Path) -> Proc {
    let mut cmd = Command::new("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--port=0",
        "--enable-tftp",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--user=root",
        "--quiet-tftp",
        "--log-facility=-",
    ])
    .arg(format!("--tftp-root={}", root.display()))
    .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()));
    Proc::spawn("dnsmasq", &mut cmd, &dir.join("dnsmasq.log"))
}

/// Retries a tiny fetch until the server answers (or panics after 20 s).
fn wait_answering(name: &str, addr: SocketAddr, out: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let probe = if have("curl") {
        Case::Curl
    } else {
        Case::Atftp { windowsize: None }
    };
    loop {
        let _ = fs::remove_file(out);
        if run_bounded(probe.command(addr, out, false), Duration::from_secs(10)).success {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never answered on {addr}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a client run left behind.
struct Ran {
    success: bool,
    /// stdout and stderr together.
    output: String,
}

/// Runs `cmd` with stdout and stderr going to a file (a pipe could fill up and stall it),
/// killing it (by PID) if it outlives `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> Ran {
    let log_path = std::env::temp_dir().join(format!("bf-tftp-bench-{}.log", std::process::id()));
    let log = fs::File::create(&log_path).expect("client log");
    cmd.stdout(log.try_clone().unwrap()).stderr(log);
    let mut child = cmd.spawn().expect("spawning a client");
    // Wait blocked in `wait` and let a watchdog thread kill (by PID) a client that outlives
    // `limit`: polling `try_wait` would wake this process thousands of times a second, and our
    // server runs in this process, so the polling would tax only our side.
    let pid = child.id().to_string();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
            let _ = Command::new("kill").args(["-9", &pid]).status();
            true
        } else {
            false
        }
    });
    let status = child.wait().expect("waiting for a client");
    let _ = done_tx.send(());
    if watchdog.join().unwrap_or(false) {
        let output = fs::read_to_string(&log_path).unwrap_or_default();
        panic!("client timed out after {limit:?}: {output}");
    }
    let output = fs::read_to_string(&log_path).unwrap_or_default();
    let _ = fs::remove_file(&log_path);
    Ran {
        success: status.success(),
        output,
    }
}

fn random_bytes(len: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut v = vec![0u8; len];
    rand::rng().fill_bytes(&mut v);
    v
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}
