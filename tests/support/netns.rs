//! Two network namespaces joined by a veth pair, for tests that need real interfaces, broadcasts
//! or privileged ports. Addresses come from 192.0.2.0/24 and never leave the namespaces; the
//! namespaces are deleted on drop. Needs root and `ip` (iproute2). Built on the benchmarks'
//! namespace guards (`benches/support/guard.rs`), the one implementation of them.
#![allow(dead_code)]

use std::process::Command;

use super::guard::NetnsPair;
#[allow(unused_imports)] // each test uses a part
pub use super::guard::{ip, is_root};
use super::tools::have;

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

/// A server and a client namespace (`<tag>-<pid>-srv`, `<tag>-<pid>-cli`) joined by a veth
/// pair; deleted on drop, which also removes the veth.
pub struct Netns {
    /// The server namespace's name.
    pub server: String,
    /// The client namespace's name.
    pub client: String,
    _pair: NetnsPair,
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
        let pair = NetnsPair::create(
            (&format!("{tag}-{pid}-srv"), server_if, server_addrs),
            (&format!("{tag}-{pid}-cli"), client_if, client_addrs),
        )?;
        Ok(Netns {
            server: pair.server.name().to_string(),
            client: pair.client.name().to_string(),
            _pair: pair,
        })
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
