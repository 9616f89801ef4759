//! Two network namespaces joined by a veth pair, for tests that need real interfaces, broadcasts
//! or privileged ports. Addresses come from 192.0.2.0/24 and never leave the namespaces; the
//! namespaces are deleted on drop. Needs root and `ip` (iproute2).
#![allow(dead_code)]

use std::process::Command;

use super::tools::have;

/// True when this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// True if network namespaces can be used (root and `ip`). Otherwise says why it skips, and fails
/// instead under `BOOTFACTORY_REQUIRE_TOOLS=1` (`tests/run-all.sh`).
pub fn can_use_netns() -> bool {
    if !have("ip") {
        return false;
    }
    if !is_root() {
        assert!(
            std::env::var("BOOTFACTORY_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "network-namespace tests need root"
        );
        eprintln!("skipping: network-namespace tests need root");
        return false;
    }
    true
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

/// A server and a client namespace (`<tag>-<pid>-srv`, `<tag>-<pid>-cli`) joined by a veth
/// pair; deleted on drop, which also removes the veth.
pub struct Netns {
    /// The server namespace's name.
    pub server: String,
    /// The client namespace's name.
    pub client: String,
}

impl Netns {
    /// Creates both namespaces with `lo` up and the veth pair `server_if` ↔ `client_if` up,
    /// with these addresses (`192.0.2.10/24`, …) on each end.
    pub fn pair(
        tag: &str,
        (server_if, server_addrs): (&str, &[&str]),
        (client_if, client_addrs): (&str, &[&str]),
    ) -> Result<Netns, String> {
        let pid = std::process::id();
        let ns = Netns {
            server: format!("{tag}-{pid}-srv"),
            client: format!("{tag}-{pid}-cli"),
        };
        // From here on, drop cleans up whatever was created.
        let (s, c) = (ns.server.as_str(), ns.client.as_str());
        ip(&["netns", "add", s])?;
        ip(&["netns", "add", c])?;
        ip(&[
            "-n", s, "link", "add", server_if, "type", "veth", "peer", "name", client_if, "netns",
            c,
        ])?;
        for (n, dev, addrs) in [(s, server_if, server_addrs), (c, client_if, client_addrs)] {
            for addr in addrs {
                ip(&["-n", n, "addr", "add", addr, "dev", dev])?;
            }
            ip(&["-n", n, "link", "set", dev, "up"])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }

    /// `ip netns exec <ns>`, to which the caller adds the program and its arguments.
    pub fn exec(&self, ns: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]);
        cmd
    }

    /// This test binary re-executed inside `ns`, running only the ignored test `test` (which
    /// does its part when the caller's environment variables say so).
    pub fn this_test(&self, ns: &str, test: &str) -> Command {
        let mut cmd = self.exec(ns);
        cmd.arg(std::env::current_exe().unwrap()).args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in [&self.server, &self.client] {
            let _ = ip(&["netns", "del", n]);
        }
    }
}
