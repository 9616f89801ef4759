//! Leave nothing behind. Every child process, network namespace and temporary directory a
//! benchmark creates is registered here when created. It goes away when its guard drops
//! ([`Proc`], [`Netns`], [`Scratch`]): on a normal exit and on a panic. For the exits that run
//! no destructors there are two backstops that call [`cleanup`]: the SIGINT/SIGTERM watcher
//! ([`spawn_signal_watcher`], exit status 130) and the deadline watchdog ([`spawn_watchdog`],
//! exit status 2), so a benchmark that hangs or is interrupted does not outlive its budget or
//! leave a server or namespace running. Processes are ended by PID, only the ones started here.
//!
//! The integration tests use the namespace helpers too (`tests/support/netns.rs`, through
//! `tests/support/mod.rs`), so there is one implementation of them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// How long a process gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// What must go when the benchmark ends however it ends.
struct Registry {
    pids: Vec<u32>,
    namespaces: Vec<String>,
    dirs: Vec<PathBuf>,
    /// Set by [`cleanup`]: from then on nothing new is started or created (it would be
    /// missed by the cleanup already under way).
    closed: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: Vec::new(),
    namespaces: Vec::new(),
    dirs: Vec::new(),
    closed: false,
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `pid` is still running (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Sends `sig` to one process by PID.
pub fn signal(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// Stops every registered process (SIGTERM, SIGKILL after 10 s), deletes every registered
/// namespace (newest first) and removes every registered directory. Safe to call more than
/// once and from any thread.
pub fn cleanup() {
    let (pids, namespaces, dirs) = {
        let mut r = registry();
        r.closed = true;
        (
            std::mem::take(&mut r.pids),
            std::mem::take(&mut r.namespaces),
            std::mem::take(&mut r.dirs),
        )
    };
    for &pid in &pids {
        signal(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + TERM_GRACE;
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in &pids {
        if alive(pid) {
            eprintln!("process {pid} ignored SIGTERM for 10 s; killing it");
            signal(pid, Signal::SIGKILL);
        }
    }
    for ns in namespaces.iter().rev() {
        delete_namespace(ns);
    }
    for dir in &dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Set by the signal watcher before it cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// On SIGINT or SIGTERM: [`cleanup`], then exit with 130.
pub fn spawn_signal_watcher() {
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
        INTERRUPTED.store(true, Ordering::SeqCst);
        cleanup();
        eprintln!("interrupted: processes stopped, namespaces and temporary files removed");
        std::process::exit(130);
    });
}

/// Once interrupted, requests fail because the servers are going away: panics from then on
/// stay quiet (the panicking thread waits while the signal watcher finishes its cleanup and
/// exits; unwinding cleans up too if it does not).
pub fn quiet_panics_once_interrupted() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if INTERRUPTED.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(10));
        } else {
            default_hook(info);
        }
    }));
}

/// Past `deadline`: [`cleanup`], then exit with 2, so a hung run never outlives its budget.
pub fn spawn_watchdog(bench: &'static str, deadline: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        eprintln!(
            "{bench}: deadline of {}s exceeded; stopping everything",
            deadline.as_secs()
        );
        cleanup();
        std::process::exit(2);
    });
}

/// A child process, registered while it lives, stopped (SIGTERM, then SIGKILL after 10 s)
/// when dropped.
pub struct Proc {
    name: String,
    child: Child,
    log: Option<PathBuf>,
}

impl Proc {
    /// Starts `cmd` with stdin closed and stdout and stderr going to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let mut proc = Proc::start(name, cmd);
        proc.log = Some(log.to_path_buf());
        proc
    }

    /// Starts `cmd` as it is set up (standard streams included).
    pub fn start(name: &str, cmd: &mut Command) -> Proc {
        // Registered under the lock, so the signal watcher cannot miss a process that started.
        let mut registry = registry();
        assert!(!registry.closed, "shutting down: {name} not started");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        registry.pids.push(child.id());
        Proc {
            name: name.to_string(),
            child,
            log: None,
        }
    }

    /// The process ID.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child's stdin, if it was piped (closing it is how some children are told to stop).
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// The end of the log (last `lines` lines), for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.log
            .as_deref()
            .map(|log| tail(log, lines))
            .unwrap_or_default()
    }

    /// The exit status if the process has exited (it is reaped then, and its PID is no
    /// longer ours to signal).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.try_wait().ok().flatten();
        if status.is_some() {
            self.unregister();
        }
        status
    }

    fn unregister(&self) {
        let pid = self.child.id();
        registry().pids.retain(|&p| p != pid);
    }

    /// Panics (with the log) if the process has exited.
    pub fn check_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited unexpectedly ({status}); its log ends with:\n{}",
                self.name,
                self.log_tail(30)
            );
        }
    }

    /// Waits for a process that is meant to end by itself; panics (with the log) on failure.
    pub fn wait_success(mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.exited().ok_or(()) {
                Ok(status) if status.success() => return,
                Ok(status) => panic!(
                    "{} failed ({status}); its log ends with:\n{}",
                    self.name,
                    self.log_tail(30)
                ),
                Err(()) if Instant::now() > deadline => {
                    panic!("{} did not finish within {timeout:?}", self.name)
                }
                Err(()) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id();
        if self.exited().is_none() {
            signal(pid, Signal::SIGTERM);
            let deadline = Instant::now() + TERM_GRACE;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = self.child.try_wait() {
                eprintln!("{} ignored SIGTERM for 10 s; killing it", self.name);
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        self.unregister();
    }
}

/// The benchmark's temporary directory, registered, removed when dropped.
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// A new directory under the system's temporary directory, named `<prefix><random>`.
    pub fn new(prefix: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temporary directory");
        registry().dirs.push(dir.path().to_path_buf());
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let path = self.0.path().to_path_buf();
        registry().dirs.retain(|d| *d != path);
        // TempDir's own drop removes the directory.
    }
}

/// A network namespace, registered, deleted when dropped (with the links inside it).
pub struct Netns(String);

impl Netns {
    /// Creates namespace `name` (deleting a leftover of that name first) with `lo` up.
    pub fn create(name: &str) -> Result<Netns, String> {
        {
            // Registered before it exists, so no cleanup can miss it.
            let mut registry = registry();
            if registry.closed {
                return Err(format!("shutting down: namespace {name} not created"));
            }
            registry.namespaces.push(name.to_string());
        }
        // From here on, drop deletes it (and a leftover of the same name goes first).
        let ns = Netns(name.to_string());
        delete_namespace(name);
        ip(&["netns", "add", name])?;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// `ip netns exec <name> <program>`: `program` run inside the namespace (`ip` execs it
    /// in place, so the child's PID is the program's).
    pub fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete_namespace(&self.0);
        registry().namespaces.retain(|n| *n != self.0);
    }
}

/// Two namespaces joined by a veth pair (`server_if` in `server`, `client_if` in `client`),
/// both up, with the given addresses (`192.0.2.10/24`, …) on each end; deleted on drop, which
/// also removes the veth.
pub struct NetnsPair {
    pub server: Netns,
    pub client: Netns,
}

impl NetnsPair {
    pub fn create(
        (server, server_if, server_addrs): (&str, &str, &[&str]),
        (client, client_if, client_addrs): (&str, &str, &[&str]),
    ) -> Result<NetnsPair, String> {
        let pair = NetnsPair {
            server: Netns::create(server)?,
            client: Netns::create(client)?,
        };
        let (s, c) = (pair.server.name(), pair.client.name());
        ip(&[
            "-n", s, "link", "add", server_if, "type", "veth", "peer", "name", client_if, "netns",
            c,
        ])?;
        for (n, dev, addrs) in [(s, server_if, server_addrs), (c, client_if, client_addrs)] {
            for addr in addrs {
                ip(&["-n", n, "addr", "add", addr, "dev", dev])?;
            }
            ip(&["-n", n, "link", "set", dev, "up"])?;
        }
        Ok(pair)
    }
}

/// Creates bridge `br0` in namespace `lan`, up and forwarding at once (no STP listening delay
/// for new ports): the LAN of a lab.
pub fn add_bridge(lan: &str) {
    run(&["ip", "-n", lan, "link", "add", "br0", "type", "bridge"]);
    run(&[
        "ip",
        "-n",
        lan,
        "link",
        "set",
        "br0",
        "type",
        "bridge",
        "forward_delay",
        "0",
    ]);
    run(&["ip", "-n", lan, "link", "set", "br0", "up"]);
}

/// Joins namespace `ns` to the bridge of [`add_bridge`] in `lan` by a veth pair: `dev` inside
/// `ns` with address `addr` (`192.0.2.10/24`), up; `<dev>p` a port of `br0`.
pub fn join_bridge(lan: &str, ns: &str, dev: &str, addr: &str) {
    let peer = format!("{dev}p");
    run(&[
        "ip", "-n", lan, "link", "add", &peer, "type", "veth", "peer", "name", dev, "netns", ns,
    ]);
    run(&["ip", "-n", lan, "link", "set", &peer, "master", "br0", "up"]);
    run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
    run(&["ip", "-n", ns, "link", "set", dev, "up"]);
}

fn delete_namespace(name: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// Runs `ip <args>`; the error names the command and carries its stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs a command; its standard output. Panics with its output when it fails.
pub fn run(cmd: &[&str]) -> String {
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `tool` is on the `PATH`.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Whether the benchmark runs as root (network namespaces, privileged ports).
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// The last `lines` lines of a text file (lossy UTF-8), empty if it cannot be read.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).to_string();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
