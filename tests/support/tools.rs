//! Real external programs used by integration tests: Debian's `docker-registry` (CNCF
//! distribution) as an upstream or proxy, `skopeo` and `podman` as clients.
//!
//! `tests/run-all.sh` installs them and sets `BOOTFACTORY_REQUIRE_TOOLS=1`, which turns a
//! missing tool into a failure; elsewhere the test is skipped with a message.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// True if `tool` is on PATH. Panics when it is missing and tools are required.
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        missing(tool, "tests/run-all.sh installs it");
    }
    found
}

/// True if the file at `path` exists (one a Debian package installs, named in `package`).
/// Panics when it is missing and tools are required.
pub fn have_file(path: &str, package: &str) -> bool {
    let found = Path::new(path).exists();
    if !found {
        missing(
            path,
            &format!("apt-get install {package}; tests/run-all.sh installs it"),
        );
    }
    found
}

/// Reports a missing tool or file: a failure under `BOOTFACTORY_REQUIRE_TOOLS=1`, else a skip.
fn missing(what: &str, how: &str) {
    assert!(
        std::env::var("BOOTFACTORY_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "{what} is required ({how})"
    );
    eprintln!("skipping: {what} is not installed ({how})");
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listening on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `docker-registry` process with its own config and storage; killed on drop.
pub struct DockerRegistry {
    /// Listen address.
    pub addr: SocketAddr,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl DockerRegistry {
    /// Starts a plain registry, or a pull-through proxy of `proxy_of` (`http://host:port`).
    pub fn start(proxy_of: Option<&str>) -> DockerRegistry {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let proxy = proxy_of
            .map(|u| format!("proxy:\n  remoteurl: {u}\n"))
            .unwrap_or_default();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{proxy}",
            dir.path().join("data").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("start docker-registry");
        wait_listening(addr);
        DockerRegistry {
            addr,
            child: Some(child),
            dir,
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the process now.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Where the registry keeps its content (`docker/registry/v2/blobs/sha256/<ab>/<hex>/data`).
    pub fn storage_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// The registry's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs skopeo with `args`; returns the output (not asserting success).
pub fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(["--insecure-policy"])
        .args(args)
        .output()
        .expect("run skopeo")
}

/// Runs skopeo and asserts it succeeded; returns stdout.
pub fn skopeo_ok(args: &[&str]) -> String {
    let out = skopeo(args);
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Copies every image of an OCI layout to a registry: `(layout ref name, registry path)`.
pub fn push_layout(layout: &Path, refs: &[(&str, String)]) {
    for (name, dest) in refs {
        skopeo_ok(&[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &format!("oci:{}:{name}", layout.display()),
            &format!("docker://{dest}"),
        ]);
    }
}

/// A podman with private storage under `dir` (vfs driver, no daemon).
pub fn podman(dir: &Path, args: &[&str]) -> Output {
    let root: PathBuf = dir.join("root");
    let runroot: PathBuf = dir.join("run");
    Command::new("podman")
        .arg("--root")
        .arg(&root)
        .arg("--runroot")
        .arg(&runroot)
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ])
        .args(args)
        .output()
        .expect("run podman")
}
