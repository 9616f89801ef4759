//! Boot storm: many simulated x86-64 UEFI machines network-boot from one bootfactory at once,
//! each through the whole path a real machine takes, over a bridge between network namespaces.
//! It prints figures and never asserts on speed; it fails only when a machine does not boot
//! (wrong answer, wrong size, or no answer after the retries). See `benches/README.md`.
//!
//! `cargo bench --bench bootstorm` (root, `ip` from iproute2):
//!
//! 1. Writes the fixture release for Talos v1.11.6 (`BENCH_PROFILE`: `realistic`, the default:
//!    12.6 MB kernel and 74 MB initramfs per machine; or `small`: 5 KB each), imports it with
//!    `bootfactory mirror import`, writes a schematic with two fixture extensions
//!    (`amd-ucode`, `iscsi-tools`) to a schematics directory and an `assignments.yaml` whose
//!    `default` boots it.
//! 2. Creates three namespaces, `bfstorm<pid>-lan` (bridge `br0`), `bfstorm<pid>-bf`
//!    (192.0.2.10/24 on veth `bs0`) and `bfstorm<pid>-cl` (192.0.2.50/24 on veth `bc0`), and
//!    starts the release `bootfactory serve` binary (the one cargo builds for this benchmark,
//!    `CARGO_BIN_EXE_bootfactory`, i.e. `target/release/bootfactory`) in the `bf` namespace:
//!    `pxe.enabled`, `pxe.interfaces: [bs0]`, `pxe.unassigned: boot-default`, HTTP on
//!    192.0.2.10:8080, `pxe.tftpMaxSessionsPerClient` raised to `BENCH_CLIENTS` (every
//!    simulated machine uses the one client address), shipped defaults otherwise.
//! 3. From a thread that joined the `cl` namespace, runs `BENCH_CLIENTS` (default 200)
//!    machines as tokio tasks, all started at once, each with its own MAC and UUID:
//!    - **dhcp** (firmware): DHCPDISCOVER broadcast to port 67 (option 60
//!      `PXEClient:Arch:00007:UNDI:003000`, 93 = 7, 94, 97) → our proxy OFFER (broadcast to port
//!      68), then DHCPREQUEST to 192.0.2.10:4011 → ACK naming `ipxe.efi`;
//!    - **tftp**: RRQ for that file with `blksize 1468` and `tsize 0` (no `windowsize`),
//!      lock-step ACKs; the byte count must equal the embedded binary;
//!    - **ipxe-dhcp**: the same two exchanges as iPXE does them (option 60
//!      `PXEClient:Arch:00007:UNDI:003010`, user class 77 `iPXE`, option 175 with HTTP, HTTPS,
//!      TFTP, DNS, bzImage and EFI features) → the script URL
//!      `http://192.0.2.10:8080/boot/<mac>.ipxe` in both OFFER and ACK;
//!    - **script**: GET that script, then the `/pxe/...` URL its `chain` line names;
//!    - **kernel**, **gate**, **initrd**: GET the `kernel` and `initrd` URLs of the `/pxe`
//!      script, streamed to the end, byte count checked against `Content-Length`. In the cold
//!      storm every machine waits at a gate before its initramfs request until all machines
//!      have reached it (or failed), so all of them meet the one build (`BENCH_COLD_GATE=0`
//!      leaves them to arrive as they come).
//!
//!    Replies to port 68 are broadcast (OFFERs) or unicast to the one shared client address
//!    (ACKs), so one socket bound to `0.0.0.0:68` (`SO_BROADCAST`, `SO_REUSEADDR`,
//!    `SO_BINDTODEVICE bc0`) receives them all and hands each to its machine by `xid`. Like
//!    firmware, a machine resends a DHCP request after 1 s without an answer, at most 4 times;
//!    TFTP resends its last packet after 1 s of silence, at most 5 times. Both are counted.
//! 4. Runs the storm twice: **cold** (nothing built yet: the first kernel and initramfs
//!    requests build the schematic's assets, the others wait for those builds or get the cached
//!    result) and **warm** (the same machines boot again, everything cached).
//!
//! Reported per storm: machines that booted, total time per machine p50/p95/max, per-stage
//! p50/p95, wall time, bytes moved (TFTP + HTTP), DHCP/TFTP resends, and bootfactory's
//! memory: VmHWM from `/proc/<pid>/status` (reset through `/proc/<pid>/clear_refs` before each
//! storm, so each figure is that storm's peak), the largest VmRSS, RssAnon and RssFile sampled
//! every 50 ms, and its CPU time. The asset counters of `/metrics` tell how many kernel and
//! initramfs requests built, were served from the cache, or (the rest) joined a build in
//! flight. The WARN/ERROR lines of bootfactory's log are counted and the first ones shown.
//!
//! Knobs: `BENCH_CLIENTS` (default 200), `BENCH_PROFILE` (`realistic` | `small`),
//! `BENCH_COLD_GATE` (default 1), `BENCH_LOG_LEVEL` (bootfactory's `log.level`, default
//! `info`, the shipped default), `BENCH_DEADLINE_SECS` (default 290: past it everything is
//! stopped and the bench exits with status 2). Namespaces, the server and the scratch
//! directory are removed on every exit: normal, panic (drop guard), Ctrl-C / SIGTERM, and the
//! deadline. A machine that does not boot makes the bench exit with status 1 after the
//! report.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bootfactory::dhcp::testkit::PxeRequest;
use bootfactory::fixture::{FixtureOptions, SizeProfile, write_release};
use dhcproto::Decodable;
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// The Talos version of the fixture release.
const VERSION: &str = "v1.11.6";
/// Official extensions of the default schematic (both in the fixture catalog).
const EXTENSIONS: [&str; 2] = ["amd-ucode", "iscsi-tools"];
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The one address all simulated machines share (there is no office DHCP server: the proxy
/// never hands out addresses, so the machines pretend they got this one).
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const HTTP_PORT: u16 = 8080;
const SERVER_IF: &str = "bs0";
const CLIENT_IF: &str = "bc0";
/// UEFI x86-64 (option 93).
const ARCH: u16 = 7;
const FIRMWARE_VENDOR_CLASS: &str = "PXEClient:Arch:00007:UNDI:003000";
const IPXE_VENDOR_CLASS: &str = "PXEClient:Arch:00007:UNDI:003010";
/// iPXE build features announced in option 175: HTTP, HTTPS, TFTP, DNS, bzImage, EFI.
const IPXE_FEATURES: [u8; 6] = [0x13, 0x14, 0x15, 0x17, 0x18, 0x24];
const IPXE_USER_AGENT: &str = "iPXE/1.21.1+ (g00000) bootfactory-bootstorm";
/// DHCP: wait this long for an answer before resending ...
const DHCP_RETRY_AFTER: Duration = Duration::from_secs(1);
/// ... at most this many times.
const DHCP_RESENDS: u32 = 4;
const TFTP_BLKSIZE: u16 = 1468;
const TFTP_RETRY_AFTER: Duration = Duration::from_secs(1);
const TFTP_RESENDS: u32 = 5;
/// Longest a single HTTP request may take (the cold initramfs waits for a build).
const HTTP_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest one machine may take for the whole boot.
const MACHINE_TIMEOUT: Duration = Duration::from_secs(150);
/// RSS sampling period.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
const STAGES: [&str; 7] = [
    "dhcp",
    "tftp",
    "ipxe-dhcp",
    "script",
    "kernel",
    "gate",
    "initrd",
];

// ---------------------------------------------------------------------------------------------
// Cleanup: every process started and every namespace created is registered here, and removed
// by the drop guard, the signal watcher or the deadline watchdog, whichever comes first.

struct Registry {
    pids: Vec<u32>,
    namespaces: Vec<String>,
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: Vec::new(),
    namespaces: Vec::new(),
    dirs: Vec::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `pid` is still running (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// Stops every registered process (SIGTERM, SIGKILL after 10 s), deletes every registered
/// namespace and removes every registered directory. Safe to call more than once.
fn cleanup() {
    let (pids, namespaces, dirs) = {
        let mut r = registry();
        (
            std::mem::take(&mut r.pids),
            std::mem::take(&mut r.namespaces),
            std::mem::take(&mut r.dirs),
        )
    };
    for &pid in &pids {
        signal(pid, nix::sys::signal::Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in &pids {
        if alive(pid) {
            eprintln!("process {pid} ignored SIGTERM for 10 s; killing it");
            signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    for ns in namespaces.iter().rev() {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
    }
    for dir in &dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// On SIGINT or SIGTERM: cleans up and exits with 130.
fn spawn_signal_watcher() {
    std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("signal runtime");
        runtime.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        cleanup();
        eprintln!("interrupted: bootfactory stopped, namespaces deleted");
        std::process::exit(130);
    });
}

/// Past `deadline`: cleans up and exits with 2, so a hung run never outlives its budget.
fn spawn_watchdog(deadline: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        eprintln!(
            "bootstorm: deadline of {}s exceeded; stopping everything",
            deadline.as_secs()
        );
        cleanup();
        std::process::exit(2);
    });
}

/// Runs a command, panicking with its output when it fails.
fn run(cmd: &[&str]) {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces, the scratch directory and bootfactory; dropping it removes them all.
struct Lab {
    prefix: String,
    dir: tempfile::TempDir,
    server: Option<Child>,
}

impl Lab {
    /// `<p>-lan` with bridge `br0`; `<p>-bf` (192.0.2.10 on `bs0`) and `<p>-cl` (192.0.2.50 on
    /// `bc0`), each joined to the bridge by a veth pair.
    fn new() -> Lab {
        let lab = Lab {
            prefix: format!("bfstorm{}", std::process::id()),
            dir: tempfile::Builder::new()
                .prefix("bootfactory-bootstorm.")
                .tempdir()
                .expect("temporary directory"),
            server: None,
        };
        registry().dirs.push(lab.dir.path().to_path_buf());
        let lan = lab.ns("lan");
        lab.add_ns(&lan);
        run(&["ip", "-n", &lan, "link", "add", "br0", "type", "bridge"]);
        // Forward at once: no STP listening delay for new ports.
        run(&[
            "ip",
            "-n",
            &lan,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
        ]);
        run(&["ip", "-n", &lan, "link", "set", "br0", "up"]);
        for (name, dev, ip) in [("bf", SERVER_IF, SERVER_IP), ("cl", CLIENT_IF, CLIENT_IP)] {
            let ns = lab.ns(name);
            lab.add_ns(&ns);
            let peer = format!("{dev}p");
            run(&[
                "ip", "-n", &lan, "link", "add", &peer, "type", "veth", "peer", "name", dev,
                "netns", &ns,
            ]);
            run(&[
                "ip", "-n", &lan, "link", "set", &peer, "master", "br0", "up",
            ]);
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ]);
            run(&["ip", "-n", &ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn add_ns(&self, ns: &str) {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", ns]);
        registry().namespaces.push(ns.to_string());
    }

    /// Starts bootfactory in the `bf` namespace (`ip netns exec` execs it in place, so the
    /// child's PID is bootfactory's); returns its PID.
    fn start_server(&mut self, bin: &Path, config: &Path, log: &Path) -> u32 {
        let out = std::fs::File::create(log).expect("create the log file");
        let err = out.try_clone().expect("clone the log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns("bf")])
            .arg(bin)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // Keep the user's environment from leaking configuration into the benchmark.
        for (k, _) in std::env::vars() {
            if k.starts_with("BOOTFACTORY_") {
                cmd.env_remove(k);
            }
        }
        let mut reg = registry();
        let child = cmd.spawn().expect("start bootfactory serve");
        let pid = child.id();
        reg.pids.push(pid);
        drop(reg);
        self.server = Some(child);
        pid
    }

    /// Whether the server has exited.
    fn server_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.server
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        cleanup();
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).to_string();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// bootfactory's memory and CPU, from /proc.

/// Memory figures of a process from `/proc/<pid>/status`, KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    /// `VmRSS`: resident now.
    rss: u64,
    /// `VmHWM`: peak resident since start or the last reset.
    hwm: u64,
    /// `RssAnon`: heap, stacks (what the process allocated).
    anon: u64,
    /// `RssFile`: mapped files (binary, libraries, mmapped blobs).
    file: u64,
}

fn mem(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Mem {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
        anon: field("RssAnon:").unwrap_or(0),
        file: field("RssFile:").unwrap_or(0),
    })
}

/// Resets `VmHWM` to the current RSS (`echo 5 > /proc/<pid>/clear_refs`).
fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// User + system CPU seconds of `pid` (all its threads, living and gone).
fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU seconds of the threads of `pid` named `name` (e.g. the TFTP server's `tftp` thread).
fn thread_cpu_seconds(pid: u32, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return f64::NAN;
    };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .map(|t| stat_cpu_seconds(&t.path().join("stat").to_string_lossy()))
        .sum()
}

/// utime + stime of a `/proc/.../stat` file, seconds.
fn stat_cpu_seconds(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return f64::NAN;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    // After the command: state is field 3; utime and stime are fields 14 and 15.
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

/// Samples the memory of `pid` every [`SAMPLE_EVERY`] and keeps the largest of each figure.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Mem>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut max = Mem::default();
                loop {
                    if let Some(m) = mem(pid) {
                        max.rss = max.rss.max(m.rss);
                        max.hwm = max.hwm.max(m.hwm);
                        max.anon = max.anon.max(m.anon);
                        max.file = max.file.max(m.file);
                    }
                    if stop.load(Ordering::Relaxed) {
                        return max;
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
        };
        RssSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the largest figures seen.
    fn finish(mut self) -> Mem {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// DHCP: one socket on port 68 for every simulated machine, replies handed out by xid.

struct DhcpMux {
    socket: UdpSocket,
    pending: Mutex<HashMap<u32, mpsc::UnboundedSender<Message>>>,
    /// Replies whose xid nobody waits for (late answers to a request already answered).
    strays: AtomicU64,
}

/// Removes a pending xid when the transaction ends, however it ends.
struct PendingGuard<'a>(&'a DhcpMux, u32);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

impl DhcpMux {
    /// Binds `0.0.0.0:68` on [`CLIENT_IF`] and starts the receive loop.
    fn bind() -> std::io::Result<Arc<DhcpMux>> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_broadcast(true)?;
        // Without an outgoing interface Linux has no route for 255.255.255.255 here.
        s.bind_device(Some(CLIENT_IF.as_bytes()))?;
        // 200 broadcast OFFERs can arrive in one burst: do not let our side drop them.
        if nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &(8 << 20))
            .is_err()
        {
            let _ = s.set_recv_buffer_size(8 << 20);
        }
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())?;
        s.set_nonblocking(true)?;
        let mux = Arc::new(DhcpMux {
            socket: UdpSocket::from_std(s.into())?,
            pending: Mutex::new(HashMap::new()),
            strays: AtomicU64::new(0),
        });
        let rx = mux.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, _)) = rx.socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(msg) = Message::from_bytes(&buf[..n]) else {
                    continue;
                };
                if msg.opcode() != Opcode::BootReply {
                    continue;
                }
                let tx = rx
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&msg.xid())
                    .cloned();
                match tx {
                    Some(tx) => {
                        let _ = tx.send(msg);
                    }
                    None => {
                        rx.strays.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(mux)
    }

    /// Sends `req` to `dest` and waits for a reply of type `want` for the same MAC, resending
    /// every [`DHCP_RETRY_AFTER`] up to [`DHCP_RESENDS`] times. Returns the reply and the
    /// number of resends.
    async fn transact(
        &self,
        req: &PxeRequest,
        dest: SocketAddr,
        want: MessageType,
    ) -> Result<(Message, u32), String> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(req.xid, tx);
        let _guard = PendingGuard(self, req.xid);
        let bytes = req.encode();
        for attempt in 0..=DHCP_RESENDS {
            self.socket
                .send_to(&bytes, dest)
                .await
                .map_err(|e| format!("sending DHCP to {dest}: {e}"))?;
            let deadline = tokio::time::Instant::now() + DHCP_RETRY_AFTER;
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(m)) if m.opts().msg_type() == Some(want) && m.chaddr() == req.mac => {
                        return Ok((m, attempt));
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }
        Err(format!(
            "no DHCP {want:?} from {dest} after {} attempts",
            DHCP_RESENDS + 1
        ))
    }
}

/// The boot file of a reply: option 67, else the BOOTP `file` header.
fn boot_file(m: &Message) -> Option<String> {
    if let Some(DhcpOption::BootfileName(f)) = m.opts().get(OptionCode::BootfileName) {
        return Some(
            String::from_utf8_lossy(f)
                .trim_end_matches('\0')
                .to_string(),
        );
    }
    m.fname()
        .map(|f| {
            String::from_utf8_lossy(f)
                .trim_end_matches('\0')
                .to_string()
        })
        .filter(|f| !f.is_empty())
}

/// Checks a proxy reply: from us, no address offered, `PXEClient`, the expected boot file.
fn check_reply(m: &Message, what: &str, expect_file: &str) -> Result<(), String> {
    if let Some(DhcpOption::ServerIdentifier(ip)) = m.opts().get(OptionCode::ServerIdentifier) {
        if *ip != SERVER_IP {
            return Err(format!("{what}: server identifier {ip}"));
        }
    } else {
        return Err(format!("{what}: no option 54"));
    }
    if m.yiaddr() != Ipv4Addr::UNSPECIFIED {
        return Err(format!("{what}: a proxy offered address {}", m.yiaddr()));
    }
    match m.opts().get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) if v.as_slice() == b"PXEClient" => {}
        other => return Err(format!("{what}: option 60 {other:?}")),
    }
    let file = boot_file(m).unwrap_or_default();
    if file != expect_file {
        return Err(format!(
            "{what}: boot file {file:?}, expected {expect_file:?}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// TFTP: a minimal read-only client (RFC 1350, options RFC 2347/2348/2349).

struct TftpResult {
    bytes: u64,
    tsize: Option<u64>,
    blksize: usize,
    resends: u32,
}

fn tftp_ack(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, 4, b[0], b[1]]
}

/// Parses an OACK's `name\0value\0` pairs (names lowercased).
fn parse_oack(body: &[u8]) -> BTreeMap<String, String> {
    let parts: Vec<String> = body
        .split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).to_string())
        .collect();
    parts
        .chunks(2)
        .filter(|c| c.len() == 2 && !c[0].is_empty())
        .map(|c| (c[0].to_ascii_lowercase(), c[1].clone()))
        .collect()
}

async fn tftp_get(server: SocketAddr, file: &str) -> Result<TftpResult, String> {
    let sock = UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| format!("tftp socket: {e}"))?;
    let mut rrq = vec![0u8, 1];
    rrq.extend_from_slice(file.as_bytes());
    rrq.extend_from_slice(b"\0octet\0blksize\0");
    rrq.extend_from_slice(TFTP_BLKSIZE.to_string().as_bytes());
    rrq.extend_from_slice(b"\0tsize\x000\0");
    let mut last: Vec<u8> = rrq;
    let mut last_dest = server;
    sock.send_to(&last, last_dest)
        .await
        .map_err(|e| format!("tftp send: {e}"))?;
    let mut peer: Option<SocketAddr> = None;
    let mut blksize = 512usize;
    let mut tsize = None;
    let mut expected: u16 = 1;
    let mut bytes = 0u64;
    let mut resends = 0u32;
    let mut silent = 0u32;
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match tokio::time::timeout(TFTP_RETRY_AFTER, sock.recv_from(&mut buf)).await
        {
            Err(_) => {
                silent += 1;
                if silent > TFTP_RESENDS {
                    return Err(format!(
                        "tftp {file}: no answer after {TFTP_RESENDS} resends ({bytes} bytes in)"
                    ));
                }
                resends += 1;
                sock.send_to(&last, last_dest)
                    .await
                    .map_err(|e| format!("tftp send: {e}"))?;
                continue;
            }
            Ok(r) => r.map_err(|e| format!("tftp receive: {e}"))?,
        };
        if n < 4 || from.ip() != server.ip() {
            continue;
        }
        if peer.is_some_and(|p| p != from) {
            // Another TID: RFC 1350 error 5, and carry on.
            let _ = sock.send_to(b"\0\x05\0\x05unknown TID\0", from).await;
            continue;
        }
        let pkt = &buf[..n];
        match u16::from_be_bytes([pkt[0], pkt[1]]) {
            // OACK (first, or again because our ACK 0 was lost).
            6 if expected == 1 => {
                let opts = parse_oack(&pkt[2..]);
                blksize = match opts.get("blksize") {
                    Some(b) => b
                        .parse()
                        .map_err(|_| format!("tftp {file}: OACK blksize {b:?}"))?,
                    None => 512,
                };
                if blksize > usize::from(TFTP_BLKSIZE) {
                    return Err(format!("tftp {file}: server granted blksize {blksize}"));
                }
                tsize = opts.get("tsize").and_then(|t| t.parse().ok());
                peer = Some(from);
                last = tftp_ack(0).to_vec();
                last_dest = from;
                silent = 0;
                sock.send_to(&last, from)
                    .await
                    .map_err(|e| format!("tftp send: {e}"))?;
            }
            // DATA.
            3 => {
                let block = u16::from_be_bytes([pkt[2], pkt[3]]);
                if block != expected {
                    // A duplicate: our ACK was lost and the resend timer will repeat it.
                    continue;
                }
                peer = Some(from);
                let data = n - 4;
                bytes += data as u64;
                last = tftp_ack(block).to_vec();
                last_dest = from;
                silent = 0;
                sock.send_to(&last, from)
                    .await
                    .map_err(|e| format!("tftp send: {e}"))?;
                if data < blksize {
                    return Ok(TftpResult {
                        bytes,
                        tsize,
                        blksize,
                        resends,
                    });
                }
                expected = expected.wrapping_add(1);
            }
            5 => {
                let code = u16::from_be_bytes([pkt[2], pkt[3]]);
                let msg = String::from_utf8_lossy(&pkt[4..]);
                return Err(format!(
                    "tftp {file}: error {code} {}",
                    msg.trim_end_matches('\0')
                ));
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One machine.

#[derive(Debug, Clone, Default)]
struct MachineReport {
    stages: [Duration; 7],
    total: Duration,
    dhcp_resends: u32,
    tftp_resends: u32,
    tftp_bytes: u64,
    tftp_blksize: usize,
    kernel_bytes: u64,
    initrd_bytes: u64,
}

/// What every machine must get.
struct Expect {
    schematic: String,
    ipxe_size: u64,
}

/// Locally administered, unicast; the same machines boot in every storm.
fn machine_mac(idx: usize) -> [u8; 6] {
    [0x02, 0xbf, 0x57, 0x00, (idx >> 8) as u8, idx as u8]
}

fn xid(run: usize, idx: usize, step: u32) -> u32 {
    0xb500_0000 | ((run as u32 & 0xf) << 20) | ((idx as u32 & 0xffff) << 4) | (step & 0xf)
}

fn uuid(idx: usize) -> [u8; 16] {
    let mut u = [0u8; 16];
    u[..4].copy_from_slice(b"bfst");
    u[12..].copy_from_slice(&(idx as u32).to_be_bytes());
    u
}

/// Holds every machine of a storm before its initramfs request until all machines have
/// arrived or failed, so that all initramfs requests of the cold storm meet the one build.
struct Gate {
    remaining: AtomicUsize,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    fn new(machines: usize) -> Arc<Gate> {
        Arc::new(Gate {
            remaining: AtomicUsize::new(machines),
            open: tokio::sync::watch::Sender::new(machines == 0),
        })
    }

    fn leave(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.open.send_replace(true);
        }
    }
}

/// A machine's place at the [`Gate`] (none: no gate). Dropping it unused (the machine
/// failed or timed out) lets the others through without it.
struct Ticket(Option<Arc<Gate>>);

impl Ticket {
    async fn arrive(&mut self) {
        if let Some(gate) = self.0.take() {
            let mut open = gate.open.subscribe();
            gate.leave();
            let _ = open.wait_for(|o| *o).await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(gate) = self.0.take() {
            gate.leave();
        }
    }
}

async fn get_text(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("GET {url}: body: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET {url}: {status}: {}", text.trim()));
    }
    Ok(text)
}

/// Streams `url` to the end; checks the byte count against `Content-Length`.
async fn download(client: &reqwest::Client, url: &str) -> Result<u64, String> {
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("GET {url}: {status}: {}", body.trim()));
    }
    let length: u64 = resp
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("GET {url}: no Content-Length"))?;
    let mut got = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: after {got} bytes: {e}"))?
    {
        got += chunk.len() as u64;
    }
    if got != length {
        return Err(format!("GET {url}: {got} bytes, Content-Length {length}"));
    }
    Ok(got)
}

/// The URL after `word` on the first line starting with it.
fn script_url(script: &str, word: &str) -> Option<String> {
    script.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        if parts.next() != Some(word) {
            return None;
        }
        parts
            .find(|p| p.starts_with("http://") || p.starts_with("https://"))
            .map(str::to_string)
    })
}

async fn machine(
    run: usize,
    idx: usize,
    dhcp: Arc<DhcpMux>,
    expect: Arc<Expect>,
    mut gate: Ticket,
) -> Result<MachineReport, String> {
    let started = Instant::now();
    let mut r = MachineReport::default();
    let mac = machine_mac(idx);
    let mac_text = bootfactory::dhcp::format_mac(&mac);
    let broadcast = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, 67));
    let proxy = SocketAddr::V4(SocketAddrV4::new(SERVER_IP, 4011));
    let ipxe = bootfactory::ipxe::EFI_X64;

    // Firmware: DISCOVER → proxy OFFER, REQUEST on 4011 → ACK.
    let t = Instant::now();
    let mut discover = PxeRequest::discover(mac, ARCH);
    discover.vendor_class = Some(FIRMWARE_VENDOR_CLASS.into());
    discover.uuid = Some(uuid(idx));
    discover.xid = xid(run, idx, 0);
    let (offer, n) = dhcp
        .transact(&discover, broadcast, MessageType::Offer)
        .await?;
    r.dhcp_resends += n;
    check_reply(&offer, "firmware OFFER", ipxe)?;
    let mut request = PxeRequest::proxy_request(mac, ARCH, CLIENT_IP);
    request.vendor_class = Some(FIRMWARE_VENDOR_CLASS.into());
    request.uuid = Some(uuid(idx));
    request.xid = xid(run, idx, 1);
    let (ack, n) = dhcp.transact(&request, proxy, MessageType::Ack).await?;
    r.dhcp_resends += n;
    check_reply(&ack, "firmware ACK", ipxe)?;
    let next_server = ack.siaddr();
    if next_server != SERVER_IP {
        return Err(format!("firmware ACK: next server {next_server}"));
    }
    r.stages[0] = t.elapsed();

    // TFTP.
    let t = Instant::now();
    let got = tftp_get(SocketAddr::V4(SocketAddrV4::new(next_server, 69)), ipxe).await?;
    if got.bytes != expect.ipxe_size || got.tsize.is_some_and(|s| s != got.bytes) {
        return Err(format!(
            "tftp {ipxe}: {} bytes (tsize {:?}), the embedded binary has {}",
            got.bytes, got.tsize, expect.ipxe_size
        ));
    }
    r.tftp_bytes = got.bytes;
    r.tftp_resends = got.resends;
    r.tftp_blksize = got.blksize;
    r.stages[1] = t.elapsed();

    // iPXE: DHCP again, now as iPXE → the boot script URL.
    let t = Instant::now();
    let script = format!("http://{SERVER_IP}:{HTTP_PORT}/boot/{mac_text}.ipxe");
    let mut discover = PxeRequest::ipxe_discover(mac, ARCH, &IPXE_FEATURES);
    discover.vendor_class = Some(IPXE_VENDOR_CLASS.into());
    discover.uuid = Some(uuid(idx));
    discover.xid = xid(run, idx, 2);
    let (offer, n) = dhcp
        .transact(&discover, broadcast, MessageType::Offer)
        .await?;
    r.dhcp_resends += n;
    check_reply(&offer, "iPXE OFFER", &script)?;
    let request = PxeRequest {
        msg_type: 3,
        ciaddr: CLIENT_IP,
        broadcast: false,
        xid: xid(run, idx, 3),
        ..discover.clone()
    };
    let (ack, n) = dhcp.transact(&request, proxy, MessageType::Ack).await?;
    r.dhcp_resends += n;
    check_reply(&ack, "iPXE ACK", &script)?;
    r.stages[2] = t.elapsed();

    // HTTP: boot script → /pxe script → kernel, initrd. One client per machine (its own
    // connection), as iPXE.
    let client = reqwest::Client::builder()
        .no_proxy()
        .user_agent(IPXE_USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let t = Instant::now();
    let boot = get_text(&client, &script).await?;
    let chain =
        script_url(&boot, "chain").ok_or_else(|| format!("{script}: no chain URL in:\n{boot}"))?;
    let want_chain = format!(
        "http://{SERVER_IP}:{HTTP_PORT}/pxe/{}/{VERSION}/metal-amd64",
        expect.schematic
    );
    if chain != want_chain {
        return Err(format!("{script} chains {chain}, expected {want_chain}"));
    }
    let pxe = get_text(&client, &chain).await?;
    let kernel = script_url(&pxe, "kernel").ok_or_else(|| format!("{chain}: no kernel"))?;
    let initrd = script_url(&pxe, "initrd").ok_or_else(|| format!("{chain}: no initrd"))?;
    r.stages[3] = t.elapsed();

    let t = Instant::now();
    r.kernel_bytes = download(&client, &kernel).await?;
    r.stages[4] = t.elapsed();
    let t = Instant::now();
    gate.arrive().await;
    r.stages[5] = t.elapsed();
    let t = Instant::now();
    r.initrd_bytes = download(&client, &initrd).await?;
    r.stages[6] = t.elapsed();
    r.total = started.elapsed();
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// A storm.

struct StormResult {
    name: &'static str,
    clients: usize,
    reports: Vec<MachineReport>,
    failures: Vec<(usize, String)>,
    wall: Duration,
    strays: u64,
    /// Machines held at the gate before their initramfs request.
    gated: bool,
    /// bootfactory's memory before the storm (VmHWM just reset), at its end, and the largest
    /// figures sampled during it.
    mem_before: Mem,
    mem_after: Mem,
    mem_sampled: Mem,
    hwm_reset: bool,
    cpu: f64,
    /// CPU seconds of bootfactory's `tftp` thread during the storm.
    tftp_cpu: f64,
    /// `/metrics` asset counters added during the storm, by (counter, output kind).
    assets: BTreeMap<(String, String), u64>,
}

/// Sums `image_factory_assets_*_total` by counter and `output_kind`.
fn asset_counters(metrics: &str) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("image_factory_assets_") else {
            continue;
        };
        let Some((name, rest)) = rest.split_once('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let kind = labels
            .split(',')
            .find_map(|l| l.strip_prefix("output_kind=\""))
            .map(|k| k.trim_end_matches('"').to_string())
            .unwrap_or_default();
        let v: f64 = value.trim().parse().unwrap_or(0.0);
        *out.entry((name.to_string(), kind)).or_insert(0) += v as u64;
    }
    out
}

async fn scrape(client: &reqwest::Client) -> BTreeMap<(String, String), u64> {
    let url = format!("http://{SERVER_IP}:{HTTP_PORT}/metrics");
    match get_text(client, &url).await {
        Ok(text) => asset_counters(&text),
        Err(e) => {
            eprintln!("[bootstorm] cannot read /metrics: {e}");
            BTreeMap::new()
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn storm(
    name: &'static str,
    run: usize,
    clients: usize,
    gated: bool,
    pid: u32,
    dhcp: Arc<DhcpMux>,
    expect: Arc<Expect>,
    http: &reqwest::Client,
) -> StormResult {
    let before = scrape(http).await;
    let hwm_reset = reset_hwm(pid);
    let mem_before = mem(pid).unwrap_or_default();
    let cpu_before = cpu_seconds(pid);
    let tftp_cpu_before = thread_cpu_seconds(pid, "tftp");
    let strays_before = dhcp.strays.load(Ordering::Relaxed);
    let sampler = RssSampler::start(pid);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let gate = gated.then(|| Gate::new(clients));
    for idx in 0..clients {
        let (dhcp, expect) = (dhcp.clone(), expect.clone());
        let ticket = Ticket(gate.clone());
        tasks.spawn(async move {
            let r = tokio::time::timeout(MACHINE_TIMEOUT, machine(run, idx, dhcp, expect, ticket))
                .await
                .unwrap_or_else(|_| Err(format!("did not boot within {MACHINE_TIMEOUT:?}")));
            (idx, r)
        });
    }
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((_, Ok(r))) => reports.push(r),
            Ok((idx, Err(e))) => failures.push((idx, e)),
            Err(e) => failures.push((usize::MAX, format!("task failed: {e}"))),
        }
    }
    let wall = started.elapsed();
    let mem_sampled = sampler.finish();
    let mem_after = mem(pid).unwrap_or_default();
    let cpu = cpu_seconds(pid) - cpu_before;
    let tftp_cpu = thread_cpu_seconds(pid, "tftp") - tftp_cpu_before;
    let after = scrape(http).await;
    let assets = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    failures.sort();
    StormResult {
        name,
        clients,
        reports,
        failures,
        wall,
        strays: dhcp.strays.load(Ordering::Relaxed) - strays_before,
        gated,
        mem_before,
        mem_after,
        mem_sampled,
        hwm_reset,
        cpu,
        tftp_cpu,
        assets,
    }
}

/// Joins the clients namespace on this thread, then runs both storms on a runtime whose
/// threads (created here) inherit it.
fn storms(
    ns: &str,
    clients: usize,
    cold_gate: bool,
    pid: u32,
    expect: Expect,
) -> Result<Vec<StormResult>, String> {
    let fd = std::fs::File::open(format!("/var/run/netns/{ns}"))
        .map_err(|e| format!("open namespace {ns}: {e}"))?;
    nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns {ns}: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async move {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        // Ready when /healthz answers from the client side of the bridge.
        let health = format!("http://{SERVER_IP}:{HTTP_PORT}/healthz");
        let deadline = Instant::now() + Duration::from_secs(60);
        while get_text(&http, &health).await.is_err() {
            if Instant::now() > deadline {
                return Err(format!("{health} did not answer within 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let dhcp =
            DhcpMux::bind().map_err(|e| format!("binding 0.0.0.0:68 on {CLIENT_IF}: {e}"))?;
        let expect = Arc::new(expect);
        let mut results = Vec::new();
        for (run, name) in ["cold", "warm"].into_iter().enumerate() {
            eprintln!("[bootstorm] {name} storm: {clients} machines");
            let gated = run == 0 && cold_gate;
            let r = storm(
                name,
                run,
                clients,
                gated,
                pid,
                dhcp.clone(),
                expect.clone(),
                &http,
            )
            .await;
            eprintln!(
                "[bootstorm] {name}: {}/{} booted in {:.2} s",
                r.reports.len(),
                r.clients,
                r.wall.as_secs_f64()
            );
            results.push(r);
        }
        Ok(results)
    })
}

// ---------------------------------------------------------------------------------------------
// Report.

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_report(results: &[StormResult], settings: &Settings, setup: &SetupInfo) {
    println!();
    println!(
        "Boot storm: {} simulated x86-64 UEFI machines at once, DHCP → TFTP {} → iPXE DHCP → \
         boot script → /pxe → kernel + initramfs; fixture {} {VERSION}, schematic with {}; \
         bootfactory {} (release), log level {}",
        settings.clients,
        bootfactory::ipxe::EFI_X64,
        settings.profile,
        EXTENSIONS.join(" + "),
        setup.binary.display(),
        settings.log_level,
    );
    println!(
        "Setup: fixture {:.1} s, import {:.1} s, server ready {:.1} s after start; bootfactory \
         VmHWM {:.1} MiB before the storms, {:.1} MiB at the end (since the reset before the \
         last storm)",
        setup.fixture_s,
        setup.import_s,
        setup.ready_s,
        mib(setup.startup_hwm),
        mib(setup.final_hwm)
    );
    println!();
    println!(
        "| storm | booted | total p50 (s) | p95 (s) | max (s) | wall (s) | MB moved | MB/s | DHCP resends | TFTP resends |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let totals = sorted(r.reports.iter().map(|m| m.total.as_secs_f64()).collect());
        let bytes: u64 = r
            .reports
            .iter()
            .map(|m| m.tftp_bytes + m.kernel_bytes + m.initrd_bytes)
            .sum();
        let dhcp: u32 = r.reports.iter().map(|m| m.dhcp_resends).sum();
        let tftp: u32 = r.reports.iter().map(|m| m.tftp_resends).sum();
        println!(
            "| {}{} | {}/{} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} | {} | {} |",
            r.name,
            if r.gated { " (gate)" } else { "" },
            r.reports.len(),
            r.clients,
            percentile(&totals, 50.0),
            percentile(&totals, 95.0),
            totals.last().copied().unwrap_or(f64::NAN),
            r.wall.as_secs_f64(),
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / r.wall.as_secs_f64(),
            dhcp,
            tftp,
        );
    }
    println!();
    println!(
        "| storm | bf peak RSS, VmHWM (MiB) | max sampled VmRSS (MiB) | max RssAnon (MiB) | max RssFile (MiB) | VmRSS before (MiB) | VmRSS after (MiB) | bf CPU (s) | of which tftp thread (s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        println!(
            "| {} | {:.1}{} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r.name,
            mib(r.mem_after.hwm),
            if r.hwm_reset { "" } else { " (not reset)" },
            mib(r.mem_sampled.rss),
            mib(r.mem_sampled.anon),
            mib(r.mem_sampled.file),
            mib(r.mem_before.rss),
            mib(r.mem_after.rss),
            r.cpu,
            r.tftp_cpu,
        );
    }
    println!();
    print!("| stage |");
    for r in results {
        print!(" {} p50 (s) | {} p95 (s) |", r.name, r.name);
    }
    println!();
    print!("|---|");
    for _ in results {
        print!("---:|---:|");
    }
    println!();
    for (i, stage) in STAGES.iter().enumerate() {
        print!("| {stage} |");
        for r in results {
            let v = sorted(
                r.reports
                    .iter()
                    .map(|m| m.stages[i].as_secs_f64())
                    .collect(),
            );
            print!(
                " {:.3} | {:.3} |",
                percentile(&v, 50.0),
                percentile(&v, 95.0)
            );
        }
        println!();
    }
    println!();
    for r in results {
        let distinct = |f: fn(&MachineReport) -> u64| {
            let mut v: Vec<u64> = r.reports.iter().map(f).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let blk = {
            let mut v: Vec<usize> = r.reports.iter().map(|m| m.tftp_blksize).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        println!(
            "{}: sizes ipxe.efi {:?} (blksize {:?}), kernel {:?}, initramfs {:?}; late DHCP replies {}",
            r.name,
            distinct(|m| m.tftp_bytes),
            blk,
            distinct(|m| m.kernel_bytes),
            distinct(|m| m.initrd_bytes),
            r.strays
        );
        let get = |name: &str, kind: &str| {
            r.assets
                .get(&(name.to_string(), kind.to_string()))
                .copied()
                .unwrap_or(0)
        };
        for kind in ["kernel", "initramfs"] {
            let built = get("built_total", kind);
            let cached = get("delivered_cached_total", kind);
            let joined = (r.reports.len() as u64).saturating_sub(built + cached);
            println!(
                "  {kind}: built {built}, served from cache {cached}, joined the build in flight {joined} (of {} requests; joined = requests - built - cached)",
                r.reports.len()
            );
        }
        if !r.failures.is_empty() {
            println!("  FAILED: {} machines; first failures:", r.failures.len());
            for (idx, e) in r.failures.iter().take(10) {
                println!("    machine {idx}: {e}");
            }
        }
    }
    println!(
        "bootfactory log: {} lines, {} WARN/ERROR",
        setup.log_lines,
        setup.log_problems.len()
    );
    for l in setup.log_problems.iter().take(10) {
        println!("  {l}");
    }
}

// ---------------------------------------------------------------------------------------------
// Setup and main.

struct Settings {
    clients: usize,
    profile: SizeProfile,
    log_level: String,
    deadline: Duration,
    cold_gate: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let number = |name: &str, default: u64| -> u64 {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Settings {
            clients: usize::try_from(number("BENCH_CLIENTS", 200))
                .unwrap_or(200)
                .clamp(1, 4000),
            profile: std::env::var("BENCH_PROFILE")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(SizeProfile::Realistic),
            log_level: std::env::var("BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
            deadline: Duration::from_secs(number("BENCH_DEADLINE_SECS", 290)),
            cold_gate: number("BENCH_COLD_GATE", 1) != 0,
        }
    }
}

struct SetupInfo {
    binary: PathBuf,
    fixture_s: f64,
    import_s: f64,
    ready_s: f64,
    /// bootfactory's VmHWM before the storms and at the end (since the last reset), KiB.
    startup_hwm: u64,
    final_hwm: u64,
    /// Lines of bootfactory's log, and its WARN/ERROR lines.
    log_lines: usize,
    log_problems: Vec<String>,
}

fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (network namespaces, ports 67/69)".into());
    }
    let ip = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !ip.is_ok_and(|s| s.success()) {
        return Some("needs `ip` (apt-get install -y iproute2)".into());
    }
    None
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    if let Some(why) = skip_reason() {
        println!("bootstorm benchmark skipped: {why}");
        return;
    }
    let settings = Settings::from_env();
    spawn_signal_watcher();
    spawn_watchdog(settings.deadline);
    bootfactory::init_crypto();
    let results = {
        let mut lab = Lab::new();
        let (results, setup) = bench(&mut lab, &settings);
        print_report(&results, &settings, &setup);
        results
        // `lab` drops here: bootfactory stopped, namespaces deleted.
    };
    let failed: usize = results.iter().map(|r| r.failures.len()).sum();
    if failed > 0 {
        eprintln!("bootstorm: {failed} machine boots failed");
        std::process::exit(1);
    }
}

fn bench(lab: &mut Lab, settings: &Settings) -> (Vec<StormResult>, SetupInfo) {
    let root = lab.dir.path().to_path_buf();
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_bootfactory"));

    eprintln!(
        "[bootstorm] writing the {} fixture release {VERSION}",
        settings.profile
    );
    let started = Instant::now();
    let layout = root.join("layout");
    write_release(
        &layout,
        &FixtureOptions {
            versions: vec![VERSION.into()],
            profile: settings.profile,
            ..FixtureOptions::default()
        },
    )
    .expect("write the fixture release");
    let fixture_s = started.elapsed().as_secs_f64();

    eprintln!("[bootstorm] bootfactory mirror import");
    let started = Instant::now();
    let data = root.join("data");
    let import_log = root.join("import.log");
    {
        let out = std::fs::File::create(&import_log).expect("create the import log");
        let err = out.try_clone().expect("clone the log file");
        let mut reg = registry();
        let mut child = Command::new(&binary)
            .args(["mirror", "import"])
            .arg(&layout)
            .arg("--data-dir")
            .arg(&data)
            .arg("--offline")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start bootfactory mirror import");
        let pid = child.id();
        reg.pids.push(pid);
        drop(reg);
        let status = child.wait().expect("wait for the import");
        registry().pids.retain(|&p| p != pid);
        assert!(
            status.success(),
            "bootfactory mirror import failed ({status}):\n{}",
            tail(&import_log, 30)
        );
    }
    let import_s = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&layout).expect("remove the fixture layout");

    // The default schematic and assignment.
    let schematics = root.join("schematics");
    std::fs::create_dir_all(&schematics).expect("schematics dir");
    let mut yaml = String::from("customization:\n  systemExtensions:\n    officialExtensions:\n");
    for e in EXTENSIONS {
        yaml.push_str(&format!("      - siderolabs/{e}\n"));
    }
    std::fs::write(schematics.join("storm.yaml"), &yaml).expect("write the schematic");
    let schematic = bootfactory::schematic::parse(yaml.as_bytes())
        .expect("schematic")
        .id()
        .to_string();
    let seed = root.join("assignments.yaml");
    std::fs::write(
        &seed,
        format!("default:\n  schematic: {schematic}\n  version: {VERSION}\n"),
    )
    .expect("write assignments.yaml");
    let config = root.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "dataDir: {}\noffline: true\nlog:\n  level: {}\nhttp:\n  listen: {SERVER_IP}:{HTTP_PORT}\n  externalURL: http://{SERVER_IP}:{HTTP_PORT}\nschematics:\n  dir: {}\nassignments:\n  file: {}\napi:\n  adminToken: bootstorm-admin-token\npxe:\n  enabled: true\n  interfaces: [{SERVER_IF}]\n  unassigned: boot-default\n  tftpMaxSessions: {}\n  tftpMaxSessionsPerClient: {}\n",
            data.display(),
            settings.log_level,
            schematics.display(),
            seed.display(),
            // All simulated machines share one client address (real machines each have
            // their own), so the per-client TFTP cap must admit all of them; the global cap
            // too when BENCH_CLIENTS exceeds its default.
            settings.clients.max(bootfactory::tftp::DEFAULT_MAX_SESSIONS),
            settings.clients,
        ),
    )
    .expect("write config.yaml");

    eprintln!("[bootstorm] starting bootfactory serve in {}", lab.ns("bf"));
    let log = root.join("bootfactory.log");
    let started = Instant::now();
    let pid = lab.start_server(&binary, &config, &log);
    // Ready: the network-boot services are bound (HTTP is checked from the client side).
    loop {
        if let Some(status) = lab.server_exited() {
            panic!("bootfactory exited ({status}):\n{}", tail(&log, 40));
        }
        if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("network boot ready")) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "bootfactory did not start network boot within 60 s:\n{}",
            tail(&log, 40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready_s = started.elapsed().as_secs_f64();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(
        comm.trim(),
        "bootfactory",
        "PID {pid} is not bootfactory; cannot measure its memory"
    );
    let startup_hwm = mem(pid).map_or(0, |m| m.hwm);
    eprintln!(
        "[bootstorm] bootfactory PID {pid} ready; VmHWM since start {:.1} MiB",
        mib(startup_hwm)
    );

    let expect = Expect {
        schematic,
        ipxe_size: bootfactory::ipxe::binary(bootfactory::ipxe::EFI_X64)
            .expect("embedded ipxe.efi")
            .data
            .len() as u64,
    };
    let ns = lab.ns("cl");
    let (clients, cold_gate) = (settings.clients, settings.cold_gate);
    let results = std::thread::Builder::new()
        .name("storm".into())
        .spawn(move || storms(&ns, clients, cold_gate, pid, expect))
        .expect("storm thread")
        .join();
    let results = match results {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("{e}\nbootfactory log:\n{}", tail(&log, 40)),
        Err(_) => panic!(
            "the storm thread panicked\nbootfactory log:\n{}",
            tail(&log, 40)
        ),
    };
    if let Some(status) = lab.server_exited() {
        panic!(
            "bootfactory exited during the storm ({status}):\n{}",
            tail(&log, 40)
        );
    }
    if results.iter().any(|r| !r.failures.is_empty()) {
        eprintln!("bootfactory log (end):\n{}", tail(&log, 40));
    }
    let final_hwm = mem(pid).map_or(0, |m| m.hwm);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let log_problems: Vec<String> = text
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .take(3)
                .any(|w| w == "WARN" || w == "ERROR")
        })
        .map(str::to_string)
        .collect();
    eprintln!(
        "[bootstorm] final VmHWM (since the reset before the warm storm) {:.1} MiB; before the storms {:.1} MiB",
        mib(final_hwm),
        mib(startup_hwm)
    );
    (
        results,
        SetupInfo {
            binary,
            fixture_s,
            import_s,
            ready_s,
            startup_hwm,
            final_hwm,
            log_lines: text.lines().count(),
            log_problems,
        },
    )
}
