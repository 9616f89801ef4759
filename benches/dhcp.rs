//! DHCP benchmarks, each against dnsmasq with the same generator in the same run:
//!
//! - **proxy-DHCP** (this file): offer latency (p50/p99) and offers per second under a burst of
//!   DISCOVERs, bootfactory's responder against dnsmasq in proxy mode;
//! - **full DHCP** (`dhcp/full.rs`): whole DISCOVER → OFFER → REQUEST → ACK exchanges, one at a
//!   time (latency) and many in flight (leases per second), bootfactory's `pxe.dhcpMode: full`
//!   against dnsmasq in plain DHCP mode.
//!
//! `BENCH_DHCP_PART=proxy` or `full` runs one part (default both).
//!
//! Proxy-DHCP:
//! Two network namespaces (`bfdhcp-<pid>-bsrv`, `bfdhcp-<pid>-bcli`) joined by a veth pair,
//! 192.0.2.10/24 (server) and 192.0.2.1/24 (generator). Each round runs each server in turn in
//! the server namespace on ports 67/4011 of the veth:
//!
//! - bootfactory: this bench binary re-executed under `ip netns exec` (role `server`), the
//!   library's `ProxyDhcp` bound to the veth, answering every client;
//! - dnsmasq: `dnsmasq -d --port=0 --dhcp-range=192.0.2.0,proxy
//!   --pxe-service=x86-64_EFI,x,ipxe.efi --interface=bfd0 --bind-interfaces --quiet-dhcp …`.
//!
//! The generator (this binary again, role `gen`, in the client namespace) first probes until
//! the server answers, then broadcasts `BENCH_DHCP_BURST` (default 1000) x86-64 UEFI
//! DISCOVERs from distinct MACs (so no per-MAC limit applies) from `0.0.0.0:68` as fast as it
//! can, while a second thread collects the broadcast OFFERs. Latency is per transaction
//! (send → matching OFFER); offers/s is answered / (last OFFER − first send); "kernel drops" is
//! the server namespace's `Udp: RcvbufErrors` delta (DISCOVERs lost because the server's socket
//! buffer overflowed). Then it sends 300 DISCOVERs one at a time (each waits for its OFFER) for
//! the unloaded latency. It prints a table of medians over `BENCH_RUNS` rounds (default 3) and
//! ratios. It never asserts on speed.
//!
//! Run with `cargo bench --bench dhcp` as root with `ip` (iproute2) and `dnsmasq`
//! (`apt-get install -y dnsmasq-base`); otherwise it prints why it is skipped.

#[path = "support/mod.rs"]
mod support;

#[path = "dhcp/full.rs"]
mod full;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bootfactory::dhcp::testkit::PxeRequest;
use bootfactory::dhcp::{AnswerAll, ProxyDhcp, ProxyDhcpConfig};
use socket2::{Domain, Protocol, Socket, Type};
use support::guard::{Netns, NetnsPair, Proc, is_root, spawn_signal_watcher};
use support::stats::{env_number, median, percentile};

const ROLE_ENV: &str = "BFDHCP_BENCH_ROLE";
const SERVER_IF: &str = "bfd0";
const CLIENT_IF: &str = "bfd1";
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// How long the generator waits for stragglers after its last DISCOVER.
const DRAIN: Duration = Duration::from_secs(2);
/// DISCOVERs sent one at a time (each waits for its OFFER) for the unloaded latency.
const SEQUENTIAL: usize = 300;
/// How long one sequential DISCOVER waits for its OFFER.
const SEQUENTIAL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the generator probes for a server before giving up.
const PROBE_FOR: Duration = Duration::from_secs(15);

fn main() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("server") => return child_server(),
        Ok("gen") => return child_generator(),
        Ok("fullgen") => return full::child_generator(),
        _ => {}
    }
    let burst: usize = env_number("BENCH_DHCP_BURST", 1000);
    let rounds: usize = env_number("BENCH_RUNS", 3);
    if let Some(why) = missing_prerequisite() {
        println!("dhcp benchmark skipped: {why}");
        return;
    }
    spawn_signal_watcher();
    let part = std::env::var("BENCH_DHCP_PART").unwrap_or_default();
    assert!(
        matches!(part.as_str(), "" | "proxy" | "full"),
        "BENCH_DHCP_PART must be proxy or full, got {part:?}"
    );
    let dnsmasq_version = dnsmasq_version();
    if part != "full" {
        proxy(burst, rounds, &dnsmasq_version);
    }
    if part != "proxy" {
        full::run(rounds, &dnsmasq_version);
    }
}

/// "Dnsmasq version 2.90  Copyright …" → "2.90".
fn dnsmasq_version() -> String {
    Command::new("dnsmasq")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(2)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

/// The proxy-DHCP rounds and their table.
fn proxy(burst: usize, rounds: usize, dnsmasq_version: &str) {
    let ns = match Lab::create() {
        Ok(ns) => ns,
        Err(e) => {
            println!("dhcp benchmark skipped: cannot create network namespaces: {e}");
            return;
        }
    };
    println!(
        "proxy-DHCP: {burst} broadcast DISCOVERs (x86-64 UEFI, distinct MACs) per round, \
         {rounds} rounds, veth between two namespaces"
    );
    let servers = [Server::Bootfactory, Server::Dnsmasq];
    let mut results: HashMap<Server, Vec<RoundResult>> = HashMap::new();
    for round in 0..rounds {
        for server in servers {
            let r = run_round(&ns, server, round, burst);
            println!(
                "  round {} {:<12} burst: answered {:>5}/{burst} (kernel drops {:>4}, sent in {:.1} ms) \
                 p50 {:>8.1} µs p99 {:>8.1} µs {:>7.0} offers/s | one at a time: {}/{SEQUENTIAL} \
                 p50 {:.1} µs p99 {:.1} µs",
                round + 1,
                server.name(),
                r.answered,
                r.kernel_drops,
                r.send_ms,
                r.p50_us,
                r.p99_us,
                r.offers_per_s,
                r.seq_answered,
                r.seq_p50_us,
                r.seq_p99_us,
            );
            results.entry(server).or_default().push(r);
        }
    }

    let med = |s: Server, f: fn(&RoundResult) -> f64| {
        median(&results[&s].iter().map(f).collect::<Vec<_>>())
    };
    let columns: [fn(&RoundResult) -> f64; 7] = [
        |r| r.p50_us,
        |r| r.p99_us,
        |r| r.offers_per_s,
        |r| r.answered as f64,
        |r| r.kernel_drops as f64,
        |r| r.seq_p50_us,
        |r| r.seq_p99_us,
    ];
    let row = |s: Server| columns.map(|f| med(s, f));
    let (bf, dm) = (row(Server::Bootfactory), row(Server::Dnsmasq));
    println!();
    println!("medians over {rounds} rounds:");
    println!(
        "| server | burst p50 (µs) | burst p99 (µs) | offers/s | answered of {burst} | kernel drops | \
         one-at-a-time p50 (µs) | one-at-a-time p99 (µs) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, v) in [
        ("bootfactory".to_string(), bf),
        (format!("dnsmasq {dnsmasq_version} (proxy)"), dm),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} |",
            v[0], v[1], v[2], v[3], v[4], v[5], v[6]
        );
    }
    println!(
        "| bootfactory ÷ dnsmasq | {:.2} | {:.2} | {:.2} | {:.2} | | {:.2} | {:.2} |",
        bf[0] / dm[0],
        bf[1] / dm[1],
        bf[2] / dm[2],
        bf[3] / dm[3],
        bf[5] / dm[5],
        bf[6] / dm[6]
    );
    drop(ns);
}

fn missing_prerequisite() -> Option<String> {
    if !is_root() {
        return Some("needs root (network namespaces, ports 67/68)".into());
    }
    for (tool, arg, pkg) in [
        ("ip", "-V", "iproute2"),
        ("dnsmasq", "--version", "dnsmasq-base"),
    ] {
        if Command::new(tool).arg(arg).output().is_err() {
            return Some(format!(
                "`{tool}` is not installed (apt-get install -y {pkg})"
            ));
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Server {
    Bootfactory,
    Dnsmasq,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Bootfactory => "bootfactory",
            Server::Dnsmasq => "dnsmasq",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct RoundResult {
    /// Burst DISCOVERs answered.
    answered: usize,
    /// Burst latency percentiles.
    p50_us: f64,
    p99_us: f64,
    /// Burst OFFERs per second.
    offers_per_s: f64,
    /// How long the generator took to send the burst.
    send_ms: f64,
    /// Datagrams the server namespace's kernel dropped because the server's receive buffer was
    /// full (`Udp: RcvbufErrors` delta).
    kernel_drops: u64,
    /// One DISCOVER at a time: latency percentiles and answers.
    seq_p50_us: f64,
    seq_p99_us: f64,
    seq_answered: usize,
}

/// The server and generator namespaces joined by a veth pair; deleted on drop.
struct Lab(NetnsPair);

impl Lab {
    fn create() -> Result<Lab, String> {
        let pid = std::process::id();
        NetnsPair::create(
            (&format!("bfdhcp-{pid}-bsrv"), SERVER_IF, &["192.0.2.10/24"]),
            (&format!("bfdhcp-{pid}-bcli"), CLIENT_IF, &["192.0.2.1/24"]),
        )
        .map(Lab)
    }

    /// This bench binary re-executed in `ns` with `role`.
    fn child(ns: &Netns, role: &str) -> Command {
        let mut cmd = ns.exec(std::env::current_exe().unwrap());
        cmd.env(ROLE_ENV, role);
        cmd
    }
}

fn run_round(ns: &Lab, server: Server, round: usize, burst: usize) -> RoundResult {
    let log = std::env::temp_dir().join(format!(
        "bfdhcp-bench-{}-{}.log",
        std::process::id(),
        server.name()
    ));
    let mut child = match server {
        Server::Bootfactory => Proc::start(
            "the bootfactory server child",
            Lab::child(&ns.0.server, "server")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap()),
        ),
        Server::Dnsmasq => Proc::start(
            "dnsmasq",
            ns.0.server
                .exec("dnsmasq")
                .args([
                    "-d",
                    "--conf-file=/dev/null",
                    "--port=0",
                    "--dhcp-range=192.0.2.0,proxy",
                    "--pxe-service=x86-64_EFI,x,ipxe.efi",
                    &format!("--interface={SERVER_IF}"),
                    "--bind-interfaces",
                    "--dhcp-leasefile=/dev/null",
                    "--quiet-dhcp",
                    "--user=root",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap()),
        ),
    };
    let drops_before = udp_rcvbuf_errors(ns.0.server.name());
    let gen_out = Lab::child(&ns.0.client, "gen")
        .env("BFDHCP_BENCH_BURST", burst.to_string())
        .env(
            "BFDHCP_BENCH_SEED",
            (round * 2 + usize::from(server == Server::Dnsmasq)).to_string(),
        )
        .stdin(Stdio::null())
        .output()
        .expect("run the generator");
    let kernel_drops = udp_rcvbuf_errors(ns.0.server.name()).saturating_sub(drops_before);
    // Stop the server: bootfactory exits when its stdin closes; dnsmasq (and a child that
    // does not exit) gets SIGTERM when the guard drops.
    drop(child.take_stdin());
    let deadline = Instant::now() + Duration::from_secs(5);
    while server == Server::Bootfactory && child.exited().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(child);
    let stdout = String::from_utf8_lossy(&gen_out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BFDHCP-RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "{} round {}: generator failed ({}):\n{stdout}\n{}\nserver log:\n{}",
                server.name(),
                round + 1,
                gen_out.status,
                String::from_utf8_lossy(&gen_out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    let _ = std::fs::remove_file(&log);
    let field = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    RoundResult {
        answered: field("answered") as usize,
        p50_us: field("p50_us"),
        p99_us: field("p99_us"),
        offers_per_s: field("offers_per_s"),
        send_ms: field("send_ms"),
        kernel_drops,
        seq_p50_us: field("seq_p50_us"),
        seq_p99_us: field("seq_p99_us"),
        seq_answered: field("seq_answered") as usize,
    }
}

/// `Udp: RcvbufErrors` of namespace `ns` (`/proc/net/snmp` is per namespace).
fn udp_rcvbuf_errors(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
        .output()
        .expect("read /proc/net/snmp in the namespace");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Role `server`: bootfactory's responder on the veth until stdin closes (at most 120 s).
fn child_server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = ProxyDhcpConfig {
            interfaces: vec![SERVER_IF.to_string()],
            server_ip: SERVER_IP,
            boot_url_base: "http://192.0.2.10:8080".into(),
            ..ProxyDhcpConfig::default()
        };
        let server = ProxyDhcp::bind(config, Arc::new(AnswerAll))
            .await
            .expect("bind the responder in the namespace");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            let _ = tx.send(());
        });
        server
            .run(async {
                tokio::select! {
                    _ = rx => {}
                    () = tokio::time::sleep(Duration::from_secs(120)) => {}
                }
            })
            .await
            .unwrap();
    });
}

fn generator_socket() -> UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_broadcast(true).unwrap();
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind_device(Some(CLIENT_IF.as_bytes())).unwrap();
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)).into())
        .unwrap();
    s.into()
}

/// The xid of an OFFER (BOOTREPLY, option 53 = 2), if `p` is one.
fn offer_xid(p: &[u8]) -> Option<u32> {
    if p.len() < 240 || p[0] != 2 || p[236..240] != [99, 130, 83, 99] {
        return None;
    }
    let mut i = 240;
    while i + 1 < p.len() {
        match p[i] {
            0 => i += 1,
            255 => break,
            53 => {
                return (p.get(i + 2) == Some(&2))
                    .then(|| u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
            }
            _ => i += 2 + usize::from(p[i + 1]),
        }
    }
    None
}

/// Role `gen`: probe, burst, report one `BFDHCP-RESULT` line.
fn child_generator() {
    let burst: usize = env_number("BFDHCP_BENCH_BURST", 1000);
    let seed: usize = std::env::var("BFDHCP_BENCH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let sock = generator_socket();
    let to: SocketAddr = (Ipv4Addr::BROADCAST, 67).into();
    let mut buf = [0u8; 2048];

    // Probe until the server answers.
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let probe = PxeRequest::discover([0x02, 0xbe, 0xef, 0, 0, seed as u8], 7);
    let started = Instant::now();
    'probe: loop {
        assert!(
            started.elapsed() < PROBE_FOR,
            "no server answered within {PROBE_FOR:?}"
        );
        sock.send_to(&probe.encode(), to).unwrap();
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until {
            match sock.recv_from(&mut buf) {
                Ok((n, _)) if offer_xid(&buf[..n]) == Some(probe.xid) => break 'probe,
                _ => {}
            }
        }
    }
    // Let late probe answers drain.
    std::thread::sleep(Duration::from_millis(200));
    while sock.recv_from(&mut buf).is_ok() {}

    // The burst: distinct MACs 02:bf:<seed>:<i>, xids base + i.
    let base: u32 = 0x6b00_0000 | ((seed as u32 & 0xff) << 16);
    let packets: Vec<Vec<u8>> = (0..burst)
        .map(|i| {
            let i32b = (i as u32).to_be_bytes();
            let mut r =
                PxeRequest::discover([0x02, 0xbf, seed as u8, i32b[1], i32b[2], i32b[3]], 7);
            r.xid = base + i as u32;
            r.encode()
        })
        .collect();
    let recv_sock = sock.try_clone().unwrap();
    recv_sock
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Instant>();
    let receiver = std::thread::spawn(move || {
        let mut got: Vec<Option<Instant>> = vec![None; burst];
        let mut answered = 0;
        let mut stop_at: Option<Instant> = None;
        let mut buf = [0u8; 2048];
        loop {
            if stop_at.is_none() {
                stop_at = done_rx.try_recv().ok().map(|t| t + DRAIN);
            }
            if answered == burst || stop_at.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            let Ok((n, _)) = recv_sock.recv_from(&mut buf) else {
                continue;
            };
            let now = Instant::now();
            if let Some(xid) = offer_xid(&buf[..n]) {
                let i = xid.wrapping_sub(base) as usize;
                if i < burst && got[i].is_none() {
                    got[i] = Some(now);
                    answered += 1;
                }
            }
        }
        got
    });
    let mut sent_at = Vec::with_capacity(burst);
    for p in &packets {
        sent_at.push(Instant::now());
        // A full send queue is retried rather than counted as a loss of the server.
        while let Err(e) = sock.send_to(p, to) {
            if e.kind() != std::io::ErrorKind::WouldBlock && e.raw_os_error() != Some(105) {
                panic!("send: {e}");
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let sent_done = Instant::now();
    done_tx.send(sent_done).unwrap();
    let got = receiver.join().unwrap();
    let send_ms = sent_done.duration_since(sent_at[0]).as_secs_f64() * 1e3;

    let mut lat: Vec<f64> = Vec::new();
    let mut last = None::<Instant>;
    for (s, r) in sent_at.iter().zip(&got) {
        if let Some(r) = r {
            lat.push(r.duration_since(*s).as_secs_f64() * 1e6);
            last = Some(last.map_or(*r, |l: Instant| l.max(*r)));
        }
    }
    let span = last
        .map(|l| l.duration_since(sent_at[0]).as_secs_f64())
        .unwrap_or(f64::NAN);

    // Unloaded: one DISCOVER at a time (distinct MACs 02:bd:<seed>:<i>).
    let mut seq: Vec<f64> = Vec::with_capacity(SEQUENTIAL);
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    for i in 0..SEQUENTIAL {
        let i32b = (i as u32).to_be_bytes();
        let mut r = PxeRequest::discover([0x02, 0xbd, seed as u8, i32b[1], i32b[2], i32b[3]], 7);
        r.xid = 0x5e00_0000 | ((seed as u32 & 0xff) << 16) | i as u32;
        let pkt = r.encode();
        let t0 = Instant::now();
        sock.send_to(&pkt, to).unwrap();
        while t0.elapsed() < SEQUENTIAL_TIMEOUT {
            match sock.recv_from(&mut buf) {
                Ok((n, _)) if offer_xid(&buf[..n]) == Some(r.xid) => {
                    seq.push(t0.elapsed().as_secs_f64() * 1e6);
                    break;
                }
                _ => {}
            }
        }
    }

    println!(
        "BFDHCP-RESULT answered={} p50_us={:.1} p99_us={:.1} offers_per_s={:.0} send_ms={:.2} \
         seq_answered={} seq_p50_us={:.1} seq_p99_us={:.1}",
        lat.len(),
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        lat.len() as f64 / span,
        send_ms,
        seq.len(),
        percentile(&seq, 50.0),
        percentile(&seq, 99.0),
    );
    std::io::stdout().flush().unwrap();
}
