//! Full-DHCP part of the `dhcp` bench: whole DISCOVER → OFFER → REQUEST → ACK exchanges
//! against bootfactory's `pxe.dhcpMode: full` and dnsmasq in plain DHCP mode, same generator,
//! same run.
//!
//! Two namespaces (`bfdhcpf-<pid>-srv`, `bfdhcpf-<pid>-cli`) joined by a veth, addressed from
//! 198.18.0.0/16 (RFC 2544's benchmarking range: 2,000 clients per round do not fit in
//! 192.0.2.0/24); server 198.18.0.10, generator 198.18.0.1, pool 198.18.16.1–198.18.31.254
//! (4,094 addresses), lease time 1 h. Each round starts each server afresh with empty lease
//! state (a new data directory; a new lease file) and runs the generator against it; the order
//! of the two servers alternates from round to round.
//!
//! - bootfactory: the release binary, `bootfactory serve` with `pxe.dhcpMode: full` on the
//!   veth, `pxe.dhcp.probe: false` (no ICMP probe before an offer), `log.level: warn`;
//! - dnsmasq: `--dhcp-range=<pool>,255.255.0.0,1h --no-ping --quiet-dhcp
//!   --dhcp-authoritative --dhcp-lease-max=100000` (the default lease maximum is 1,000), its
//!   lease file in the same scratch directory as bootfactory's data directory.
//!
//! Both without address probing and without per-lease log lines; both write every lease to
//! their store (bootfactory: its database; dnsmasq: its lease file).
//!
//! The generator (role `fullgen`) binds `0.0.0.0:68` on its veth, waits for the server to
//! complete one exchange, then:
//!
//! 1. **one at a time**: `BENCH_DHCP_CLIENTS` (default 1,000) clients with distinct MACs, each
//!    DISCOVER (broadcast flag) → OFFER → REQUEST (options 50 and 54 from the OFFER) → ACK,
//!    the next starting when the previous is acknowledged; latency is DISCOVER sent → ACK
//!    received;
//! 2. **at once**: as many other clients, `BENCH_DHCP_INFLIGHT` (default 200) in flight at any
//!    time (a new client starts as one finishes); leases per second = acknowledged ÷ (last ACK
//!    − first DISCOVER).
//!
//! Clients do not retransmit or start over: an exchange not acknowledged within 3 s counts as
//! not completed, and so does one answered with a NAK (counted apart: a NAK means the address
//! offered was not the server's to give — dnsmasq does not hold an offered address, so two
//! clients discovering at once can be offered the same one, and the second REQUEST gets
//! "address in use"; see `benches/README.md` for why clients do not restart here). Every ACK
//! is checked: the address is the one offered, inside the pool, and no other client of the
//! round holds it; a violation fails the bench.

use std::collections::{HashSet, VecDeque};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use dhcproto::Encodable;
use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, OptionCode};

use crate::support::guard::{NetnsPair, Proc, Scratch};
use crate::support::stats::{env_number, median, percentile};
use crate::{CLIENT_IF, ROLE_ENV, SERVER_IF, generator_socket, udp_rcvbuf_errors};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const POOL_FIRST: Ipv4Addr = Ipv4Addr::new(198, 18, 16, 1);
const POOL_LAST: Ipv4Addr = Ipv4Addr::new(198, 18, 31, 254);
const NETMASK: &str = "255.255.0.0";
const LEASE_SECONDS: u32 = 3600;
/// How long one exchange may take before it counts as not completed.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the generator waits for the server's first completed exchange.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Which server a round measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// One round's figures for one server.
#[derive(Debug, Clone, Copy, Default)]
struct RoundResult {
    seq_done: f64,
    seq_p50_us: f64,
    seq_p99_us: f64,
    seq_leases_per_s: f64,
    conc_done: f64,
    conc_p50_us: f64,
    conc_p99_us: f64,
    conc_leases_per_s: f64,
    naks: f64,
    kernel_drops: f64,
    /// The server's user + system CPU seconds during the generator's run.
    cpu_s: f64,
}

/// The full-DHCP rounds and their table. `dnsmasq_version` is printed in the table.
pub fn run(rounds: usize, dnsmasq_version: &str) {
    let clients = env_number("BENCH_DHCP_CLIENTS", 1000);
    let inflight = env_number("BENCH_DHCP_INFLIGHT", 200);
    let pool = u32::from(POOL_LAST) - u32::from(POOL_FIRST) + 1;
    assert!(
        2 * clients < pool as usize,
        "BENCH_DHCP_CLIENTS={clients}: a round needs 2 × clients + 1 addresses, the pool has {pool}"
    );
    let pid = std::process::id();
    let ns = match NetnsPair::create(
        (
            &format!("bfdhcpf-{pid}-srv"),
            SERVER_IF,
            &["198.18.0.10/16"],
        ),
        (&format!("bfdhcpf-{pid}-cli"), CLIENT_IF, &["198.18.0.1/16"]),
    ) {
        Ok(ns) => ns,
        Err(e) => {
            println!("full DHCP skipped: cannot create network namespaces: {e}");
            return;
        }
    };
    println!();
    println!(
        "full DHCP: {clients} clients one at a time, then {clients} more with {inflight} in \
         flight, per round; {rounds} rounds; DISCOVER → OFFER → REQUEST → ACK, no address \
         probing on either server"
    );
    let mut results: Vec<(Server, RoundResult)> = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Server::Dnsmasq, Server::Bootfactory]
        } else {
            [Server::Bootfactory, Server::Dnsmasq]
        };
        for server in order {
            let r = run_round(&ns, server, round, clients, inflight);
            println!(
                "  round {} {:<12} one at a time: {:>5}/{clients} p50 {:>7.1} µs p99 {:>8.1} µs \
                 ({:.0} leases/s) | {inflight} in flight: {:>5}/{clients} {:>6.0} leases/s \
                 p50 {:>8.1} µs p99 {:>8.1} µs | NAKs {} kernel drops {} server CPU {:.2} s",
                round + 1,
                server.name(),
                r.seq_done,
                r.seq_p50_us,
                r.seq_p99_us,
                r.seq_leases_per_s,
                r.conc_done,
                r.conc_leases_per_s,
                r.conc_p50_us,
                r.conc_p99_us,
                r.naks,
                r.kernel_drops,
                r.cpu_s,
            );
            results.push((server, r));
        }
    }
    let columns: [fn(&RoundResult) -> f64; 10] = [
        |r| r.seq_p50_us,
        |r| r.seq_p99_us,
        |r| r.seq_done,
        |r| r.conc_leases_per_s,
        |r| r.conc_done,
        |r| r.conc_p50_us,
        |r| r.conc_p99_us,
        |r| r.naks,
        |r| r.kernel_drops,
        |r| r.cpu_s,
    ];
    let row = |s: Server| {
        columns.map(|f| {
            median(
                &results
                    .iter()
                    .filter(|(srv, _)| *srv == s)
                    .map(|(_, r)| f(r))
                    .collect::<Vec<_>>(),
            )
        })
    };
    let (bf, dm) = (row(Server::Bootfactory), row(Server::Dnsmasq));
    println!();
    println!("medians over {rounds} rounds:");
    println!(
        "| server | one at a time p50 (µs) | one at a time p99 (µs) | completed of {clients} | \
         {inflight} in flight: leases/s | completed of {clients} | p50 (µs) | p99 (µs) | NAKs | \
         kernel drops | server CPU (s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, v) in [
        ("bootfactory (full)".to_string(), bf),
        (format!("dnsmasq {dnsmasq_version} (DHCP)"), dm),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
            v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]
        );
    }
    println!(
        "| bootfactory ÷ dnsmasq | {:.2} | {:.2} | | {:.2} | | {:.2} | {:.2} | | | {:.2} |",
        bf[0] / dm[0],
        bf[1] / dm[1],
        bf[3] / dm[3],
        bf[5] / dm[5],
        bf[6] / dm[6],
        bf[9] / dm[9],
    );
}

/// Starts `server` afresh in the server namespace, runs the generator, stops the server.
fn run_round(
    ns: &NetnsPair,
    server: Server,
    round: usize,
    clients: usize,
    inflight: usize,
) -> RoundResult {
    let scratch = Scratch::new("bfdhcpf-");
    let log = scratch.path().join(format!("{}.log", server.name()));
    let range = format!("{POOL_FIRST}-{POOL_LAST}");
    let mut proc = match server {
        Server::Bootfactory => {
            let config = scratch.path().join("config.yaml");
            std::fs::write(
                &config,
                format!(
                    "dataDir: {}\noffline: true\nlog:\n  level: warn\nhttp:\n  listen: 127.0.0.1:8080\n  externalURL: http://{SERVER_IP}:8080\n  shutdownGraceSeconds: 1\napi:\n  socket: ''\npxe:\n  enabled: true\n  dhcpMode: full\n  interfaces: [{SERVER_IF}]\n  dhcp:\n    range: {range}\n    netmask: {NETMASK}\n    leaseSeconds: {LEASE_SECONDS}\n    offerSeconds: 30\n    probe: false\n",
                    scratch.path().join("data").display()
                ),
            )
            .unwrap();
            Proc::spawn(
                "bootfactory serve (full DHCP)",
                ns.server
                    .exec(env!("CARGO_BIN_EXE_bootfactory"))
                    .args(["serve", "--config"])
                    .arg(&config),
                &log,
            )
        }
        Server::Dnsmasq => Proc::spawn(
            "dnsmasq (DHCP)",
            ns.server.exec("dnsmasq").args([
                "--keep-in-foreground",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--user=root",
                &format!("--interface={SERVER_IF}"),
                "--bind-interfaces",
                "--dhcp-authoritative",
                &format!("--dhcp-range={POOL_FIRST},{POOL_LAST},{NETMASK},{LEASE_SECONDS}"),
                "--dhcp-lease-max=100000",
                "--no-ping",
                "--quiet-dhcp",
                &format!(
                    "--dhcp-leasefile={}",
                    scratch.path().join("dnsmasq.leases").display()
                ),
                &format!(
                    "--pid-file={}",
                    scratch.path().join("dnsmasq.pid").display()
                ),
            ]),
            &log,
        ),
    };
    let drops_before = udp_rcvbuf_errors(ns.server.name());
    let cpu_before = cpu_seconds(proc.id());
    let out = ns
        .client
        .exec(std::env::current_exe().unwrap())
        .env(ROLE_ENV, "fullgen")
        .env("BFDHCP_FULL_CLIENTS", clients.to_string())
        .env("BFDHCP_FULL_INFLIGHT", inflight.to_string())
        .env(
            "BFDHCP_BENCH_SEED",
            (round * 2 + usize::from(server == Server::Dnsmasq)).to_string(),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the full-DHCP generator");
    let cpu_s = cpu_seconds(proc.id()) - cpu_before;
    let kernel_drops = udp_rcvbuf_errors(ns.server.name()).saturating_sub(drops_before);
    proc.check_running();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BFDHCPF-RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "{} round {}: generator failed ({}):\n{stdout}\n{}\nserver log:\n{}",
                server.name(),
                round + 1,
                out.status,
                String::from_utf8_lossy(&out.stderr),
                proc.log_tail(40)
            )
        });
    let field = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let wrong = field("wrong");
    assert!(
        wrong == 0.0,
        "{} round {}: {wrong} ACKs with a wrong address (not the offered one, outside the pool \
         or held by another client): {line}",
        server.name(),
        round + 1
    );
    drop(proc);
    drop(scratch);
    RoundResult {
        seq_done: field("seq_done"),
        seq_p50_us: field("seq_p50_us"),
        seq_p99_us: field("seq_p99_us"),
        seq_leases_per_s: field("seq_leases_per_s"),
        conc_done: field("conc_done"),
        conc_p50_us: field("conc_p50_us"),
        conc_p99_us: field("conc_p99_us"),
        conc_leases_per_s: field("conc_leases_per_s"),
        naks: field("naks"),
        kernel_drops: kernel_drops as f64,
        cpu_s,
    }
}

/// User + system CPU seconds of `pid` (all its threads), from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    // After the command name: utime and stime are fields 14 and 15 of the line.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / hz,
        _ => f64::NAN,
    }
}

/// A client's DHCPDISCOVER: broadcast flag, a parameter request list as a PC's client sends.
fn discover(mac: [u8; 6], xid: u32) -> Vec<u8> {
    message(mac, xid, MessageType::Discover, None)
}

/// The DHCPREQUEST that takes `offered` from `server` (options 50 and 54), same `xid`.
fn request(mac: [u8; 6], xid: u32, offered: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
    message(mac, xid, MessageType::Request, Some((offered, server)))
}

fn message(
    mac: [u8; 6],
    xid: u32,
    kind: MessageType,
    selecting: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Vec<u8> {
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(
        xid,
        unspecified,
        unspecified,
        unspecified,
        unspecified,
        &mac,
    );
    m.set_htype(HType::Eth);
    m.set_flags(Flags::default().set_broadcast());
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::DomainName,
        OptionCode::AddressLeaseTime,
        OptionCode::ServerIdentifier,
    ]));
    if let Some((offered, server)) = selecting {
        o.insert(DhcpOption::RequestedIpAddress(offered));
        o.insert(DhcpOption::ServerIdentifier(server));
    }
    m.to_vec().expect("encoding a DHCP message cannot fail")
}

/// What the generator reads from a server's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reply {
    /// Option 53: 2 OFFER, 5 ACK, 6 NAK.
    kind: u8,
    xid: u32,
    chaddr: [u8; 6],
    yiaddr: Ipv4Addr,
    /// Option 54.
    server: Option<Ipv4Addr>,
}

/// Parses a BOOTREPLY far enough for the generator (bounds-checked; `None` if it is not one).
fn parse_reply(p: &[u8]) -> Option<Reply> {
    if p.len() < 240 || p[0] != 2 || p[236..240] != [99, 130, 83, 99] {
        return None;
    }
    let mut kind = None;
    let mut server = None;
    let mut i = 240;
    while i < p.len() {
        match p[i] {
            0 => i += 1,
            255 => break,
            code => {
                let len = usize::from(*p.get(i + 1)?);
                let value = p.get(i + 2..i + 2 + len)?;
                match (code, len) {
                    (53, 1) => kind = Some(value[0]),
                    (54, 4) => server = Some(Ipv4Addr::new(value[0], value[1], value[2], value[3])),
                    _ => {}
                }
                i += 2 + len;
            }
        }
    }
    Some(Reply {
        kind: kind?,
        xid: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        chaddr: p[28..34].try_into().ok()?,
        yiaddr: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        server,
    })
}

/// One client's exchange.
#[derive(Debug, Clone, Copy)]
enum Exchange {
    NotStarted,
    Discovering { started: Instant },
    Requesting { started: Instant, offered: Ipv4Addr },
    Acked { latency: Duration, at: Instant },
    Failed,
}

/// The client generator's bookkeeping for one phase: MACs, xids, states, checks.
struct Phase {
    macs: Vec<[u8; 6]>,
    xid_base: u32,
    states: Vec<Exchange>,
    naks: usize,
    wrong: usize,
}

impl Phase {
    fn new(tag: u8, seed: u8, n: usize) -> Phase {
        Phase {
            macs: (0..n)
                .map(|i| {
                    let b = (i as u32).to_be_bytes();
                    [0x02, tag, seed, b[1], b[2], b[3]]
                })
                .collect(),
            xid_base: (u32::from(tag) << 24) | (u32::from(seed) << 16),
            states: vec![Exchange::NotStarted; n],
            naks: 0,
            wrong: 0,
        }
    }

    fn start(&mut self, sock: &std::net::UdpSocket, i: usize) {
        self.states[i] = Exchange::Discovering {
            started: Instant::now(),
        };
        send(sock, &discover(self.macs[i], self.xid_base + i as u32));
    }

    /// Handles a reply; returns the index of a client whose exchange ended (ACK or NAK).
    fn on_reply(
        &mut self,
        sock: &std::net::UdpSocket,
        r: Reply,
        held: &mut HashSet<Ipv4Addr>,
    ) -> Option<usize> {
        let i = r.xid.wrapping_sub(self.xid_base) as usize;
        if i >= self.macs.len() || r.chaddr != self.macs[i] {
            return None;
        }
        match (self.states[i], r.kind) {
            (Exchange::Discovering { started }, 2) => {
                let server = r.server.unwrap_or(Ipv4Addr::UNSPECIFIED);
                self.states[i] = Exchange::Requesting {
                    started,
                    offered: r.yiaddr,
                };
                send(
                    sock,
                    &request(self.macs[i], self.xid_base + i as u32, r.yiaddr, server),
                );
                None
            }
            (Exchange::Requesting { started, offered }, 5) => {
                let at = Instant::now();
                if r.yiaddr != offered
                    || !(POOL_FIRST..=POOL_LAST).contains(&r.yiaddr)
                    || !held.insert(r.yiaddr)
                {
                    eprintln!("wrong ACK for client {i}: {} (offered {offered})", r.yiaddr);
                    self.wrong += 1;
                }
                self.states[i] = Exchange::Acked {
                    latency: at.duration_since(started),
                    at,
                };
                Some(i)
            }
            (Exchange::Requesting { .. }, 6) => {
                self.naks += 1;
                self.states[i] = Exchange::Failed;
                Some(i)
            }
            _ => None,
        }
    }

    /// Exchanges acknowledged, their latencies (µs) and the last ACK.
    fn acked(&self) -> (Vec<f64>, Option<Instant>) {
        let mut lat = Vec::new();
        let mut last = None::<Instant>;
        for s in &self.states {
            if let Exchange::Acked { latency, at } = s {
                lat.push(latency.as_secs_f64() * 1e6);
                last = Some(last.map_or(*at, |l| l.max(*at)));
            }
        }
        (lat, last)
    }
}

fn send(sock: &std::net::UdpSocket, packet: &[u8]) {
    let to: SocketAddr = (Ipv4Addr::BROADCAST, 67).into();
    // A full send queue is retried rather than counted as a loss of the server.
    while let Err(e) = sock.send_to(packet, to) {
        if e.kind() != std::io::ErrorKind::WouldBlock && e.raw_os_error() != Some(105) {
            panic!("send: {e}");
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// Role `fullgen`: wait for the server, run both phases, print one `BFDHCPF-RESULT` line.
pub fn child_generator() {
    let clients: usize = env_number("BFDHCP_FULL_CLIENTS", 1000);
    let inflight: usize = env_number("BFDHCP_FULL_INFLIGHT", 200);
    let seed: u8 = std::env::var("BFDHCP_BENCH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let sock = generator_socket();
    let mut buf = [0u8; 2048];
    let mut held = HashSet::new();

    // Ready: one whole exchange completes (the server may still be starting; probes are
    // repeated with new xids, and their leases count in `held` like any other).
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut attempt = 0usize;
    'ready: loop {
        assert!(
            started.elapsed() < READY_WITHIN,
            "no server completed an exchange within {READY_WITHIN:?}"
        );
        let mut probe = Phase::new(0xbe, seed, 1);
        probe.xid_base = probe.xid_base.wrapping_add(attempt as u32 * 0x100);
        attempt += 1;
        probe.start(&sock, 0);
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && let Some(r) = parse_reply(&buf[..n])
                && probe.on_reply(&sock, r, &mut held).is_some()
            {
                if matches!(probe.states[0], Exchange::Acked { .. }) && probe.wrong == 0 {
                    break 'ready;
                }
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    while sock.recv_from(&mut buf).is_ok() {}

    // 1. One at a time.
    let mut seq = Phase::new(0x5e, seed, clients);
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let seq_start = Instant::now();
    for i in 0..clients {
        seq.start(&sock, i);
        let deadline = Instant::now() + EXCHANGE_TIMEOUT;
        loop {
            if Instant::now() >= deadline {
                seq.states[i] = Exchange::Failed;
                break;
            }
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && let Some(r) = parse_reply(&buf[..n])
                && seq.on_reply(&sock, r, &mut held) == Some(i)
            {
                break;
            }
        }
    }
    let seq_elapsed = seq_start.elapsed().as_secs_f64();
    let (seq_lat, _) = seq.acked();

    // 2. Many at once: `inflight` exchanges open at any time.
    let mut conc = Phase::new(0xcc, seed, clients);
    sock.set_read_timeout(Some(Duration::from_millis(2)))
        .unwrap();
    let mut open: VecDeque<usize> = VecDeque::new();
    let mut in_flight = 0usize;
    let mut next = 0usize;
    let conc_start = Instant::now();
    loop {
        while in_flight < inflight && next < clients {
            conc.start(&sock, next);
            open.push_back(next);
            in_flight += 1;
            next += 1;
        }
        if in_flight == 0 {
            break;
        }
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && let Some(r) = parse_reply(&buf[..n])
            && conc.on_reply(&sock, r, &mut held).is_some()
        {
            in_flight -= 1;
        }
        // Clients start in order and share one timeout, so the oldest open one expires first.
        let now = Instant::now();
        while let Some(&i) = open.front() {
            match conc.states[i] {
                Exchange::Discovering { started } | Exchange::Requesting { started, .. } => {
                    if now.duration_since(started) < EXCHANGE_TIMEOUT {
                        break;
                    }
                    conc.states[i] = Exchange::Failed;
                    in_flight -= 1;
                    open.pop_front();
                }
                _ => {
                    open.pop_front();
                }
            }
        }
    }
    let (conc_lat, last) = conc.acked();
    let span = last
        .map(|l| l.duration_since(conc_start).as_secs_f64())
        .unwrap_or(f64::NAN);

    println!(
        "BFDHCPF-RESULT seq_done={} seq_p50_us={:.1} seq_p99_us={:.1} seq_leases_per_s={:.0} \
         conc_done={} conc_p50_us={:.1} conc_p99_us={:.1} conc_leases_per_s={:.0} naks={} wrong={}",
        seq_lat.len(),
        percentile(&seq_lat, 50.0),
        percentile(&seq_lat, 99.0),
        seq_lat.len() as f64 / seq_elapsed,
        conc_lat.len(),
        percentile(&conc_lat, 50.0),
        percentile(&conc_lat, 99.0),
        conc_lat.len() as f64 / span,
        seq.naks + conc.naks,
        seq.wrong + conc.wrong,
    );
    std::io::stdout().flush().unwrap();
}
