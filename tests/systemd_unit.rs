//! The systemd unit (`systemd/bootfactory.service`) and the notify protocol: the unit verifies
//! cleanly, its `systemd-analyze security` exposure stays ≤ 2.0, and `serve` speaks `Type=notify`
//! (READY after its listeners are up, RELOADING/READY around SIGHUP, STOPPING on SIGTERM) to a
//! NOTIFY_SOCKET like systemd's.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::tools::have;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/bootfactory.service");

/// The unit with ExecStart pointing at the binary under test (verify checks it exists).
fn unit_for_test(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(UNIT).unwrap();
    assert!(
        text.contains("ExecStart=/usr/bin/bootfactory serve"),
        "{text}"
    );
    // Resource backstops (issue 10, defect 6): memory and thread caps stay in the unit.
    for line in ["MemoryMax=", "MemoryHigh=", "TasksMax=", "LimitNOFILE="] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "unit lacks {line}"
        );
    }
    let path = dir.join("bootfactory.service");
    std::fs::write(
        &path,
        text.replace("/usr/bin/bootfactory", env!("CARGO_BIN_EXE_bootfactory")),
    )
    .unwrap();
    path
}

#[test]
fn unit_verifies_and_is_hardened() {
    if !have("systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for bootfactory.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    eprintln!("systemd-analyze security exposure: {exposure}");
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{text}");
}

fn next_message(sock: &UnixDatagram, deadline: Instant) -> String {
    try_next_message(sock, deadline)
        .unwrap_or_else(|e| panic!("no notification from bootfactory: {e}"))
}

fn try_next_message(sock: &UnixDatagram, deadline: Instant) -> std::io::Result<String> {
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10)),
    ))
    .unwrap();
    let n = sock.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).to_string())
}

#[test]
fn serve_speaks_the_notify_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    let port = support::tools::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bootfactory"))
        .args(["serve", "--offline"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env("WATCHDOG_PID", "")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ready = next_message(&sock, deadline);
    while ready == "WATCHDOG=1\n" {
        ready = next_message(&sock, deadline);
    }
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(
        ready.contains(&format!("STATUS=serving HTTP on 127.0.0.1:{port}")),
        "{ready}"
    );
    // READY means listening.
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("READY before the listener was up");
    // The watchdog pings at half the interval.
    let ping = next_message(&sock, Instant::now() + Duration::from_secs(5));
    assert!(ping.contains("WATCHDOG=1"), "{ping}");

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.iter().any(|m: &String| m.contains("READY=1")) {
        let m = try_next_message(&sock, deadline).unwrap_or_else(|e| {
            panic!(
                "after SIGHUP: {e}; seen {seen:?}; exited: {:?}",
                child.try_wait()
            )
        });
        if !m.contains("WATCHDOG=1") {
            seen.push(m);
        }
    }
    assert!(
        seen[0].contains("RELOADING=1") && seen[0].contains("MONOTONIC_USEC="),
        "{seen:?}"
    );

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = next_message(&sock, deadline);
        if m.contains("STOPPING=1") {
            break;
        }
    }
    assert!(child.wait().unwrap().success());
}
