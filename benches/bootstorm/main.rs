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
//! Knobs: `BENCH_CLIENTS` (default 200, at most 10,000), `BENCH_PROFILE` (`realistic` |
//! `small`), `BENCH_STORMS` (`cold,warm`, the default, or `cold`), `BENCH_COLD_GATE`
//! (default 1), `BENCH_LOG_LEVEL` (bootfactory's `log.level`, default `info`, the shipped
//! default), `BENCH_MACHINE_TIMEOUT_SECS` (longest boot of one machine; default scaled to the
//! run: 60 s + 0.5 s per Realistic machine or 0.15 s per small one), `BENCH_DEADLINE_SECS`
//! (default: per run 120 s + each storm's machine timeout + 30 s; past it everything is
//! stopped and the bench exits with status 2), `BENCH_MAX_CONNECTIONS` (bootfactory's
//! `http.maxConnections`, default machines + 64), `BENCH_BOOTFACTORY` (the bootfactory
//! binary to run instead of cargo's), and `BENCH_SCALE`: `1` runs the scaling
//! table (small at 200, 1,000 and 5,000 machines, Realistic at 200 and 1,000), each in a lab
//! of its own, or a list such as `small:200,realistic:1000`; a table of wall time, peak RSS
//! and CPU per machine ends every run.
//!
//! Scale: the bench raises its `RLIMIT_NOFILE` (soft and hard, to 8 × machines + 4,096, at
//! least 65,536) before starting bootfactory, which inherits it as it would systemd's
//! `LimitNOFILE` (it holds TFTP transfers to an eighth of it); where the hard limit cannot be
//! raised (no `CAP_SYS_RESOURCE`) it says so and keeps the limit it has. A TFTP request that
//! bootfactory refuses with "server busy" is asked again after 1 s from a new port (as
//! firmware retries its boot option), counted apart from resends.
//!
//! Namespaces, the server and the scratch directory are removed on every exit: normal, panic
//! (drop guard), Ctrl-C / SIGTERM, and the deadline. A machine that does not boot makes the
//! bench exit with status 1 after the report.

#[path = "../support/mod.rs"]
mod support;

mod dhcp_client;
mod machine;
mod procstat;
mod report;
mod storm;
mod tftp_client;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

use dhcp_client::*;
use machine::*;
use procstat::*;
use report::*;
use storm::*;
use support::guard::{
    Netns, Proc, Scratch, add_bridge, join_bridge, spawn_signal_watcher, spawn_watchdog, tail,
};
use tftp_client::*;

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
/// A TFTP request refused with "server busy" (bootfactory's admission cap) is asked again
/// after this long, from a new port, as firmware retries its boot option ...
const TFTP_BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);
/// ... at most this many times. Counted apart from resends.
const TFTP_BUSY_RETRIES: u32 = 300;
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
// The lab: namespaces, scratch directory and bootfactory, all registered with the guards of
// `support::guard` (removed on drop, on Ctrl-C / SIGTERM and at the deadline).

/// The namespaces, the scratch directory and bootfactory; dropping it removes them all.
struct Lab {
    /// Fields drop in order: the server stops first, then its namespaces go, then the
    /// scratch directory holding its data.
    server: Option<Proc>,
    namespaces: Vec<Netns>,
    dir: Scratch,
    prefix: String,
}

impl Lab {
    /// `<p>-lan` with bridge `br0`; `<p>-bf` (192.0.2.10 on `bs0`) and `<p>-cl` (192.0.2.50 on
    /// `bc0`), each joined to the bridge by a veth pair.
    fn new() -> Lab {
        let mut lab = Lab {
            server: None,
            namespaces: Vec::new(),
            dir: Scratch::new("bootfactory-bootstorm."),
            prefix: format!("bfstorm{}", std::process::id()),
        };
        let lan = lab.add_ns("lan");
        add_bridge(&lan);
        for (name, dev, ip) in [("bf", SERVER_IF, SERVER_IP), ("cl", CLIENT_IF, CLIENT_IP)] {
            let ns = lab.add_ns(name);
            join_bridge(&lan, &ns, dev, &format!("{ip}/24"));
        }
        lab
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Creates namespace `<prefix>-<name>`; its name.
    fn add_ns(&mut self, name: &str) -> String {
        let ns = Netns::create(&self.ns(name)).unwrap_or_else(|e| panic!("{e}"));
        let name = ns.name().to_string();
        self.namespaces.push(ns);
        name
    }

    /// Starts bootfactory in the `bf` namespace (`ip netns exec` execs it in place, so the
    /// child's PID is bootfactory's); returns its PID.
    fn start_server(&mut self, bin: &Path, config: &Path, log: &Path) -> u32 {
        let ns = self
            .namespaces
            .iter()
            .find(|n| n.name() == self.ns("bf"))
            .expect("the bf namespace");
        let mut cmd = ns.exec(bin);
        cmd.arg("serve").arg("--config").arg(config);
        // Keep the user's environment from leaking configuration into the benchmark.
        for (k, _) in std::env::vars() {
            if k.starts_with("BOOTFACTORY_") {
                cmd.env_remove(k);
            }
        }
        let server = Proc::spawn("bootfactory serve", &mut cmd, log);
        let pid = server.id();
        self.server = Some(server);
        pid
    }

    /// Whether the server has exited.
    fn server_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.server.as_mut().and_then(Proc::exited)
    }
}
// ---------------------------------------------------------------------------------------------
// Setup and main.

#[derive(Clone)]
struct Settings {
    clients: usize,
    profile: SizeProfile,
    log_level: String,
    /// `BENCH_DEADLINE_SECS`; `None`: scaled to the runs ([`Settings::deadline`]).
    deadline: Option<Duration>,
    cold_gate: bool,
    /// The storms to run, in order (`BENCH_STORMS`, default `cold,warm`).
    storms: Vec<&'static str>,
    /// `BENCH_MACHINE_TIMEOUT_SECS`; `None`: scaled to the run ([`Settings::machine_timeout`]).
    machine_timeout: Option<Duration>,
    /// `BENCH_SCALE`: the (profile, machines) runs of the scaling table, one lab each.
    scale: Vec<(SizeProfile, usize)>,
}

/// Most simulated machines: MACs, UUIDs and xids carry the machine index in 16 bits.
const MAX_CLIENTS: usize = 10_000;

/// The runs of `BENCH_SCALE=1`: the small fixture at 200, 1,000 and 5,000 machines, then
/// the Realistic one at 200 and 1,000.
const SCALE_RUNS: [(SizeProfile, usize); 5] = [
    (SizeProfile::Small, 200),
    (SizeProfile::Small, 1000),
    (SizeProfile::Small, 5000),
    (SizeProfile::Realistic, 200),
    (SizeProfile::Realistic, 1000),
];

impl Settings {
    fn from_env() -> Settings {
        let number = |name: &str, default: u64| -> u64 {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let secs = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs)
        };
        let storms = std::env::var("BENCH_STORMS").unwrap_or_else(|_| "cold,warm".into());
        let storms: Vec<&'static str> = storms
            .split(',')
            .map(str::trim)
            .map(|s| match s {
                "cold" => "cold",
                "warm" => "warm",
                other => panic!("BENCH_STORMS: unknown storm {other:?} (cold, warm)"),
            })
            .collect();
        assert!(
            storms.first() == Some(&"cold") && storms.iter().skip(1).all(|s| *s == "warm"),
            "BENCH_STORMS: `cold` first (nothing is cached before it), then `warm`s"
        );
        Settings {
            clients: usize::try_from(number("BENCH_CLIENTS", 200))
                .unwrap_or(200)
                .clamp(1, MAX_CLIENTS),
            profile: std::env::var("BENCH_PROFILE")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(SizeProfile::Realistic),
            log_level: std::env::var("BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
            deadline: secs("BENCH_DEADLINE_SECS"),
            cold_gate: number("BENCH_COLD_GATE", 1) != 0,
            storms,
            machine_timeout: secs("BENCH_MACHINE_TIMEOUT_SECS"),
            scale: std::env::var("BENCH_SCALE")
                .ok()
                .map(|v| parse_scale(&v))
                .unwrap_or_default(),
        }
    }

    /// The runs: the `BENCH_SCALE` list, else one run of `BENCH_PROFILE` × `BENCH_CLIENTS`.
    fn runs(&self) -> Vec<Settings> {
        if self.scale.is_empty() {
            return vec![self.clone()];
        }
        self.scale
            .iter()
            .map(|&(profile, clients)| Settings {
                profile,
                clients,
                ..self.clone()
            })
            .collect()
    }

    /// Longest one machine may take for its whole boot (and one HTTP request): a minute plus
    /// what a machine's share of the storm's bytes costs on a slow, busy host (Realistic:
    /// 88 MB per machine, counted at 0.5 s; small: TFTP's 1 MB, counted at 0.15 s).
    fn machine_timeout(&self) -> Duration {
        self.machine_timeout.unwrap_or_else(|| {
            let per_machine = match self.profile {
                SizeProfile::Realistic => 0.5,
                SizeProfile::Small => 0.15,
            };
            Duration::from_secs_f64(60.0 + per_machine * self.clients as f64)
        })
    }

    /// The watchdog's deadline for all `runs`: per run, two minutes of setup and each storm's
    /// machine timeout plus half a minute.
    fn deadline(&self, runs: &[Settings]) -> Duration {
        self.deadline.unwrap_or_else(|| {
            runs.iter()
                .map(|r| {
                    Duration::from_secs(120)
                        + (r.machine_timeout() + Duration::from_secs(30))
                            * u32::try_from(r.storms.len()).unwrap_or(2)
                })
                .sum()
        })
    }
}

/// `BENCH_SCALE`: `1` for [`SCALE_RUNS`], or a list such as `small:200,realistic:1000`.
fn parse_scale(v: &str) -> Vec<(SizeProfile, usize)> {
    match v.trim() {
        "" | "0" => Vec::new(),
        "1" => SCALE_RUNS.to_vec(),
        list => list
            .split(',')
            .map(|item| {
                let (p, n) = item
                    .trim()
                    .split_once(':')
                    .unwrap_or_else(|| panic!("BENCH_SCALE: {item:?} is not PROFILE:MACHINES"));
                let profile: SizeProfile = p
                    .parse()
                    .unwrap_or_else(|e| panic!("BENCH_SCALE: {item:?}: {e}"));
                let n: usize = n
                    .parse()
                    .unwrap_or_else(|e| panic!("BENCH_SCALE: {item:?}: {e}"));
                (profile, n.clamp(1, MAX_CLIENTS))
            })
            .collect(),
    }
}

/// Raises this process's `RLIMIT_NOFILE` (soft and hard; we are root) so that neither the
/// simulated machines (a TFTP socket and an HTTP connection each) nor bootfactory, which
/// inherits the limit as it would inherit systemd's `LimitNOFILE`, run out of descriptors:
/// bootfactory holds its TFTP transfers to an eighth of the limit and its HTTP connections
/// to half, so `clients` machines at once need at least 8 × `clients`. Returns the limit.
fn raise_nofile(clients: usize) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = (8 * clients as u64 + 4096).max(65_536);
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1 << 20);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    let target = want.min(nr_open).max(soft);
    if target > soft || target > hard {
        let hard = hard.max(target);
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            eprintln!("[bootstorm] cannot raise RLIMIT_NOFILE to {target}: {e}");
            return soft;
        }
    }
    target
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
    if !support::guard::is_root() {
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
    let runs = settings.runs();
    let most = runs.iter().map(|r| r.clients).max().unwrap_or(1);
    let nofile = raise_nofile(most);
    let deadline = settings.deadline(&runs);
    eprintln!(
        "[bootstorm] {} run(s); RLIMIT_NOFILE {nofile} (inherited by bootfactory); deadline {} s",
        runs.len(),
        deadline.as_secs()
    );
    spawn_signal_watcher();
    spawn_watchdog("bootstorm", deadline);
    bootfactory::init_crypto();
    let mut rows = Vec::new();
    let mut failed = 0;
    for run in &runs {
        let mut lab = Lab::new();
        let (results, setup) = bench(&mut lab, run);
        print_report(&results, run, &setup);
        failed += results.iter().map(|r| r.failures.len()).sum::<usize>();
        let baseline = results.first().map_or(0, |r| r.mem_before.rss);
        rows.extend(results.iter().map(|r| ScaleRow::new(run, r, baseline)));
        // `lab` drops here: bootfactory stopped, namespaces deleted.
    }
    print_scaling(&rows);
    if failed > 0 {
        eprintln!("bootstorm: {failed} machine boots failed");
        std::process::exit(1);
    }
}

fn bench(lab: &mut Lab, settings: &Settings) -> (Vec<StormResult>, SetupInfo) {
    let root = lab.dir.path().to_path_buf();
    // `BENCH_BOOTFACTORY`: another build of the binary (e.g. a copy kept while the shared
    // target directory is rebuilt for another branch).
    let binary = std::env::var_os("BENCH_BOOTFACTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_bootfactory")));

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
    let mut import = Command::new(&binary);
    import
        .args(["mirror", "import"])
        .arg(&layout)
        .arg("--data-dir")
        .arg(&data)
        .arg("--offline");
    Proc::spawn("bootfactory mirror import", &mut import, &import_log)
        .wait_success(Duration::from_secs(600));
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
            "dataDir: {}\noffline: true\nlog:\n  level: {}\nhttp:\n  listen: {SERVER_IP}:{HTTP_PORT}\n  externalURL: http://{SERVER_IP}:{HTTP_PORT}\n  maxConnections: {}\nschematics:\n  dir: {}\nassignments:\n  file: {}\napi:\n  adminToken: bootstorm-admin-token\npxe:\n  enabled: true\n  interfaces: [{SERVER_IF}]\n  unassigned: boot-default\n  tftpMaxSessions: {}\n  tftpMaxSessionsPerClient: {}\n",
            data.display(),
            settings.log_level,
            // Every machine holds one kept-alive connection from its boot script to its
            // initramfs (iPXE does too); at the cap bootfactory closes the oldest idle one,
            // which a machine waiting at the gate is. Knob: http.maxConnections >= machines.
            std::env::var("BENCH_MAX_CONNECTIONS")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(settings.clients.max(1024 - 64) + 64),
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
        machine_timeout: settings.machine_timeout(),
    };
    let ns = lab.ns("cl");
    let plan = Plan {
        clients: settings.clients,
        cold_gate: settings.cold_gate,
        storms: settings.storms.clone(),
    };
    let results = std::thread::Builder::new()
        .name("storm".into())
        .spawn(move || storms(&ns, plan, pid, expect))
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
