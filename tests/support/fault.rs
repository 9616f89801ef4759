//! Fault-injection helpers: the real `bootfactory` binary as a child process that can be
//! killed with SIGKILL, a size-limited tmpfs for full-disk tests, and checks that a data
//! directory is consistent after a crash.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bootfactory::store::Store;

use super::tools::free_port;

/// The `bootfactory` binary with no `BOOTFACTORY_*` variables from the environment, and no
/// free-space reserve (`store.minFreeBytes`: these tests fill small filesystems on purpose, to
/// reach the kernel's ENOSPC).
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bootfactory"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BOOTFACTORY_") {
            c.env_remove(k);
        }
    }
    c.env("BOOTFACTORY_STORE_MIN_FREE_BYTES", "0");
    c
}

/// Runs `bootfactory mirror import --offline --data-dir <data> <path>`.
pub fn mirror_import(data: &Path, path: &Path) -> Output {
    bin()
        .args(["mirror", "import", "--offline", "--data-dir"])
        .arg(data)
        .arg(path)
        .output()
        .expect("run bootfactory mirror import")
}

/// `bootfactory mirror list --json` on `data`: (reference, missing blobs) per image.
pub fn mirror_list(data: &Path) -> Vec<(String, u64)> {
    let out = bin()
        .args(["mirror", "list", "--json", "--offline", "--data-dir"])
        .arg(data)
        .output()
        .expect("run bootfactory mirror list");
    assert!(
        out.status.success(),
        "mirror list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list JSON");
    list.as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["reference"].as_str().unwrap().to_string(),
                e["missing_blobs"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Names in a directory (empty if it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The largest file in `dir` (bytes), 0 if none.
pub fn largest_file(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Whether `GET /healthz` answers 200.
fn healthy(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// A `bootfactory serve` child process on a loopback port. Killed (SIGKILL) when dropped.
pub struct Daemon {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The listener.
    pub addr: SocketAddr,
    /// The data directory.
    pub data: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `bootfactory serve --data-dir <data>` plus `args`, and waits until it answers.
    /// Its log goes to `<log_dir>/serve-<port>.log`. A port taken between picking and binding
    /// (other tests run in parallel) is retried with another.
    pub fn start(data: &Path, log_dir: &Path, args: &[&str]) -> Daemon {
        for _ in 0..5 {
            if let Some(d) = Daemon::try_start(data, log_dir, args) {
                return d;
            }
        }
        panic!("no free port for bootfactory serve");
    }

    fn try_start(data: &Path, log_dir: &Path, args: &[&str]) -> Option<Daemon> {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = log_dir.join(format!("serve-{port}.log"));
        let child = bin()
            .args(["serve", "--data-dir"])
            .arg(data)
            .args(["--http-listen", &addr.to_string()])
            .args(args)
            .env("BOOTFACTORY_LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start bootfactory serve");
        let mut d = Daemon {
            url: format!("http://{addr}"),
            addr,
            data: data.to_path_buf(),
            child: Some(child),
            log,
        };
        // Listening comes before the serve loop (and its SIGTERM handler) runs; a request
        // answered means both are up.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthy(addr) {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                d.child = None;
                let log = d.log_text();
                if log.contains("in use") {
                    return None;
                }
                panic!("bootfactory serve exited with {status}:\n{log}");
            }
            assert!(Instant::now() < deadline, "serve did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(d)
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // std's kill is SIGKILL
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (the database is flushed).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .expect("SIGTERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "serve exit status {status}");
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("serve ignored SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Whether this process may mount filesystems. Without root the test is skipped with a
/// message, unless `BOOTFACTORY_REQUIRE_TOOLS=1` (CI), where it fails.
pub fn can_mount() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("BOOTFACTORY_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "full-disk tests need root to mount a tmpfs (BOOTFACTORY_REQUIRE_TOOLS=1 is set)"
    );
    eprintln!("skipping: full-disk tests need root to mount a tmpfs");
    false
}

/// A size-limited tmpfs mounted on a fresh temp directory; unmounted when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes.
    pub fn mount(size: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("bootfactory-fault")
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed");
        Tmpfs { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Changes the size (e.g. to free space).
    pub fn resize(&self, size: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "remount failed");
    }

    /// Free bytes.
    pub fn available(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(self.dir.path()).unwrap();
        st.blocks_available() as u64 * st.fragment_size() as u64
    }

    /// Fills the filesystem with a file at `path` until at most `leave` bytes are free.
    pub fn fill(&self, path: &Path, leave: u64) {
        use std::io::Write;
        let mut f = std::fs::File::create(path).unwrap();
        let chunk = vec![0x5au8; 64 * 1024];
        loop {
            let free = self.available();
            if free <= leave {
                break;
            }
            let n = ((free - leave) as usize).min(chunk.len());
            match f.write_all(&chunk[..n]) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        f.sync_all().unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds it open (a panicking test's child): detach it.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// What [`check_store`] found.
#[derive(Debug)]
pub struct StoreCheck {
    /// Blobs in the index (all verified).
    pub blobs: usize,
    /// `(kind/key, target)` of every ref of the kinds checked.
    pub refs: Vec<(String, bootfactory::store::Digest)>,
}

/// Opens the store of a stopped server and checks crash consistency: `tmp/` is emptied by the
/// open; every indexed blob re-hashes to its digest and its file exists; every ref of the
/// known kinds names a stored blob. Returns what it saw.
pub async fn check_store(data: &Path) -> StoreCheck {
    // A child the killed server forked may hold the database's lock until it execs (its
    // descriptors are close-on-exec): retry for a few seconds.
    let mut tries = 0;
    let store = loop {
        match Store::open(data) {
            Ok(s) => break s,
            Err(e) if tries < 50 => {
                tries += 1;
                eprintln!("store not open yet ({e}); retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("open store: {e}"),
        }
    };
    assert!(
        entries(&data.join("tmp")).is_empty(),
        "tmp/ not emptied by open"
    );
    let report = store.verify_all().await.expect("verify");
    assert!(
        report.corrupt.is_empty(),
        "corrupt blobs: {:?}",
        report.corrupt
    );
    assert!(
        report.missing.is_empty(),
        "records without files: {:?}",
        report.missing
    );
    assert!(
        report.errors.is_empty(),
        "unreadable blobs: {:?}",
        report.errors
    );
    let mut refs = Vec::new();
    for kind in ["oci-tag", "oci-digest", "asset", "schematic"] {
        for (key, target) in store.list_refs(kind).unwrap() {
            assert!(
                store.contains(&target),
                "ref {kind}/{key} names {target}, which is not stored"
            );
            refs.push((format!("{kind}/{key}"), target));
        }
    }
    StoreCheck {
        blobs: report.checked,
        refs,
    }
}
