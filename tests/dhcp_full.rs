//! Full DHCP mode (`pxe.dhcpMode: full`) against a real client, in network namespaces.
//!
//! Each test builds its own boot lab ([`support::lab::Lab`]: a LAN bridge, bootfactory on
//! `b0` = 192.0.2.10, the "office" namespace on 192.0.2.1) and adds client hosts without an
//! address. Clients are busybox `udhcpc` (a real DHCP client) and, for the flood and the
//! DECLINE, raw UDP from port 68 sent by this test from inside a client namespace (a thread
//! that joined it with `setns`). The tests share nothing and run in parallel.
//!
//! Needs root, `ip`, `busybox`, `dnsmasq` and `curl`; skipped otherwise, failed instead under
//! `BOOTFACTORY_REQUIRE_TOOLS=1`.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use support::lab::{BOOTFACTORY_IP, Lab, can_make_namespaces};

const TOKEN: &str = "dhcp-full-test-token";
const VANILLA: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

/// Whether the tools are here (else says why it skips, or fails under
/// `BOOTFACTORY_REQUIRE_TOOLS=1`).
fn ready() -> bool {
    let missing: Vec<&str> = ["busybox", "dnsmasq", "curl", "ip"]
        .into_iter()
        .filter(|t| !support::tools::have(t))
        .collect();
    let why = if !can_make_namespaces() {
        "needs root and ip (network namespaces)".to_string()
    } else if !missing.is_empty() {
        format!("missing tools: {}", missing.join(", "))
    } else {
        return true;
    };
    assert!(
        std::env::var("BOOTFACTORY_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "dhcp_full: {why}"
    );
    eprintln!("skipping: {why}");
    false
}

/// Writes the configuration (full mode on `b0`, with `pxe_extra` under `pxe.dhcp`) and the
/// seed file; returns the config path.
fn write_config(lab: &Lab, pxe_dhcp: &str, seed: &str) -> String {
    let dir = lab.dir.path();
    let schematics = dir.join("schematics");
    std::fs::create_dir_all(&schematics).unwrap();
    std::fs::write(schematics.join("vanilla.yaml"), "customization: {}\n").unwrap();
    let seed_path = dir.join("assignments.yaml");
    std::fs::write(&seed_path, seed).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "dataDir: {}\noffline: true\nlog:\n  level: info,bootfactory=debug\nhttp:\n  listen: {BOOTFACTORY_IP}:8080\nschematics:\n  dir: {}\nassignments:\n  file: {}\napi:\n  adminToken: {TOKEN}\n  socket: ''\npxe:\n  enabled: true\n  interfaces: [b0]\n  dhcpMode: full\n  dhcp:\n    range: 192.0.2.100-192.0.2.199\n{pxe_dhcp}",
            dir.join("data").display(),
            schematics.display(),
            seed_path.display()
        ),
    )
    .unwrap();
    config.to_string_lossy().into_owned()
}

fn start(lab: &mut Lab, config: &str, log: &str) {
    lab.spawn(
        "bf",
        log,
        &[
            env!("CARGO_BIN_EXE_bootfactory"),
            "serve",
            "--config",
            config,
        ],
    );
    let up = lab.wait_for(Duration::from_secs(30), |lab| {
        lab.log(log).contains("network boot ready") || !lab.running(log)
    });
    assert!(
        up && lab.running(log),
        "bootfactory did not start:\n{}",
        lab.log(log)
    );
}

fn api(lab: &Lab, path: &str) -> String {
    let out = lab.exec(
        "bf",
        &[
            "curl",
            "-sf",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            &format!("http://{BOOTFACTORY_IP}:8080{path}"),
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn leases(lab: &Lab) -> Vec<serde_json::Value> {
    let body: serde_json::Value = serde_json::from_str(&api(lab, "/api/v1/leases"))
        .unwrap_or_else(|e| panic!("/api/v1/leases: {e}"));
    body["leases"].as_array().cloned().unwrap()
}

/// The udhcpc script: prints what the client got on `bound`/`renew`.
fn script(dir: &Path) -> String {
    let path = dir.join("udhcpc.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr flush dev \"$interface\"; ip addr add \"$ip/$subnet\" dev \"$interface\"; echo \"EVENT=$1 ip=$ip subnet=$subnet router=$router dns=$dns domain=$domain lease=$lease hostname=$hostname serverid=$serverid\";; deconfig) ip addr flush dev \"$interface\"; echo \"EVENT=$1\";; *) echo \"EVENT=$1\";; esac\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", &path.to_string_lossy()])
        .status()
        .unwrap();
    path.to_string_lossy().into_owned()
}

/// Runs busybox udhcpc once in host `name` (interface `c0`); returns the bound line's
/// `key=value` pairs (empty when it got no lease) and the whole output.
fn udhcpc(lab: &Lab, name: &str, extra: &[&str]) -> (Vec<(String, String)>, String) {
    let s = script(lab.dir.path());
    let mut cmd = vec![
        "busybox", "udhcpc", "-i", "c0", "-f", "-q", "-n", "-t", "4", "-T", "1", "-s", &s,
    ];
    cmd.extend_from_slice(extra);
    let out = lab.exec(name, &cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let fields = text
        .lines()
        .find(|l| l.starts_with("EVENT=bound"))
        .map(|l| {
            l.split(' ')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    (fields, text)
}

fn get<'a>(fields: &'a [(String, String)], key: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

#[test]
fn udhcpc_gets_pool_and_reserved_addresses_leases_survive_a_restart_release_frees() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new("fm");
    // 02:..:03's fixed address is the router's: the start goes on, the reservation is skipped.
    let seed = format!(
        "machines:\n  \"02:00:00:00:00:02\":\n    schematic: {VANILLA}\n    version: v1.11.6\n    ip: 192.0.2.50\n    hostname: node-2\n  \"02:00:00:00:00:03\":\n    schematic: {VANILLA}\n    version: v1.11.6\n    ip: 192.0.2.1\n"
    );
    let config = write_config(
        &lab,
        "    router: 192.0.2.1\n    dns: [192.0.2.1]\n    domain: lab.example\n    leaseSeconds: 3600\n    probe: true\n",
        &seed,
    );
    lab.add_host("c1", "c0", "02:00:00:00:00:01");
    lab.add_host("c2", "c0", "02:00:00:00:00:02");
    start(&mut lab, &config, "bf1.log");

    // A pool client: an address from the range with router, DNS, domain and lease time.
    let (got, text) = udhcpc(&lab, "c1", &[]);
    let ip: Ipv4Addr = get(&got, "ip")
        .parse()
        .unwrap_or_else(|_| panic!("no lease:\n{text}\n{}", lab.log("bf1.log")));
    let o = ip.octets();
    assert!(o[..3] == [192, 0, 2] && (100..=199).contains(&o[3]), "{ip}");
    assert_eq!(get(&got, "subnet"), "255.255.255.0", "{text}");
    assert_eq!(get(&got, "router"), "192.0.2.1", "{text}");
    assert_eq!(get(&got, "dns"), "192.0.2.1", "{text}");
    assert_eq!(get(&got, "domain"), "lab.example", "{text}");
    assert_eq!(get(&got, "lease"), "3600", "{text}");
    assert_eq!(get(&got, "serverid"), BOOTFACTORY_IP, "{text}");

    // The reserved machine: its fixed address (outside the range) and host name.
    let (fixed, text) = udhcpc(&lab, "c2", &[]);
    assert_eq!(
        get(&fixed, "ip"),
        "192.0.2.50",
        "{text}\n{}",
        lab.log("bf1.log")
    );
    assert_eq!(get(&fixed, "hostname"), "node-2", "{text}");

    let list = leases(&lab);
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["ip"], "192.0.2.50", "sorted by address");
    assert_eq!(list[0]["static"], true);
    assert_eq!(list[0]["hostname"], "node-2");
    assert_eq!(list[1]["ip"], ip.to_string());
    assert_eq!(list[1]["mac"], "02:00:00:00:00:01");
    assert_eq!(list[1]["state"], "bound");
    assert_eq!(list[1]["static"], false);
    let log = lab.log("bf1.log");
    assert!(
        log.contains("static DHCP reservation skipped")
            && log.contains("ip 192.0.2.1 is the router"),
        "{log}"
    );
    // The API refuses bootfactory's own address as a machine's ip, naming the clash.
    let body = format!(r#"{{"schematic":"{VANILLA}","version":"v1.11.6","ip":"192.0.2.10"}}"#);
    let out = lab.exec(
        "bf",
        &[
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "-X",
            "PUT",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            &body,
            &format!("http://{BOOTFACTORY_IP}:8080/api/v1/machines/02:00:00:00:00:04"),
        ],
    );
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.ends_with("\n400") && answer.contains("ip 192.0.2.10 is bootfactory's own address"),
        "{answer}"
    );
    let machines = api(&lab, "/api/v1/machines/02:00:00:00:00:02");
    assert!(
        machines.contains("\"leaseIp\":\"192.0.2.50\""),
        "{machines}"
    );

    // Restart: the leases are still there, and the client gets its address again.
    lab.kill("bf1.log");
    start(&mut lab, &config, "bf2.log");
    let list = leases(&lab);
    assert_eq!(list.len(), 2, "after restart: {list:?}");
    assert_eq!(list[1]["ip"], ip.to_string());
    let (again, text) = udhcpc(&lab, "c1", &[]);
    assert_eq!(
        get(&again, "ip"),
        ip.to_string(),
        "{text}\n{}",
        lab.log("bf2.log")
    );

    // A RELEASE (unicast from the address, as RFC 2131 says; busybox udhcpc's `-R` sends
    // none with `-q`) frees it. No option 61 here: the MAC identifies the client.
    let raw = RawClient::new(&lab.ns("c1"));
    let mut release = request(
        MessageType::Release,
        [2, 0, 0, 0, 0, 1],
        77,
        vec![DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 0, 2, 10))],
    );
    release.set_ciaddr(ip).set_flags(Flags::default());
    raw.socket
        .send_to(&release.to_vec().unwrap(), "192.0.2.10:67")
        .unwrap();
    let released = lab.wait_for(Duration::from_secs(5), |lab| {
        leases(lab).iter().all(|l| l["ip"] != ip.to_string())
    });
    assert!(released, "{:?}\n{}", leases(&lab), lab.log("bf2.log"));
    assert!(lab.log("bf2.log").contains("full DHCP RELEASE"));
}

#[test]
fn full_mode_refuses_to_start_next_to_another_dhcp_server() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new("fr");
    let config = write_config(&lab, "    probe: false\n", "machines: {}\n");
    lab.start_office_dhcp();
    // dnsmasq is up once it listens.
    assert!(lab.wait_for(Duration::from_secs(10), |lab| {
        String::from_utf8_lossy(&lab.exec("office", &["ss", "-ulnH"]).stdout).contains(":67 ")
    }));
    let started = Instant::now();
    lab.spawn(
        "bf",
        "bf.log",
        &[
            env!("CARGO_BIN_EXE_bootfactory"),
            "serve",
            "--config",
            &config,
        ],
    );
    assert!(
        lab.wait_for(Duration::from_secs(20), |lab| !lab.running("bf.log")),
        "full mode kept running next to dnsmasq:\n{}\n{}",
        lab.log("bf.log"),
        lab.log("office-dnsmasq.log")
    );
    let log = lab.log("bf.log");
    assert!(
        log.contains(
            "full DHCP refused: another DHCP server answers on b0: 192.0.2.1 (offered 192.0.2.1"
        ) && log.contains("use pxe.dhcpMode: proxy next to it"),
        "{log}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

/// A DHCP client speaking raw UDP from port 68 inside namespace `ns`.
struct RawClient {
    socket: UdpSocket,
}

impl RawClient {
    fn new(ns: &str) -> RawClient {
        let ns = ns.to_string();
        // setns affects only the calling thread: open the socket in a thread that joined `ns`.
        let socket = std::thread::spawn(move || {
            let f = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let s = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )
            .unwrap();
            s.set_broadcast(true).unwrap();
            s.set_reuse_address(true).unwrap();
            s.bind_device(Some(b"c0")).unwrap();
            s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())
                .unwrap();
            UdpSocket::from(s)
        })
        .join()
        .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        RawClient { socket }
    }

    fn send(&self, m: &Message) {
        self.socket
            .send_to(&m.to_vec().unwrap(), "255.255.255.255:67")
            .unwrap();
    }

    /// The next reply to `xid` within `wait`.
    fn reply(&self, xid: u32, wait: Duration) -> Option<Message> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf)
                && let Ok(m) = Message::from_bytes(&buf[..n])
                && m.xid() == xid
                && m.opcode() == Opcode::BootReply
            {
                return Some(m);
            }
        }
        None
    }
}

fn request(kind: MessageType, mac: [u8; 6], xid: u32, opts: Vec<DhcpOption>) -> Message {
    let mut m = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    m.set_opcode(Opcode::BootRequest)
        .set_htype(HType::Eth)
        .set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in opts {
        m.opts_mut().insert(o);
    }
    m
}

#[test]
fn decline_quarantines_and_a_discover_flood_persists_nothing() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new("ff");
    let config = write_config(
        &lab,
        "    offerSeconds: 2\n    probe: false\n",
        "machines: {}\n",
    );
    lab.add_host("raw", "c0", "02:00:00:00:01:01");
    lab.add_host("c1", "c0", "02:00:00:00:00:01");
    start(&mut lab, &config, "bf.log");
    let raw = RawClient::new(&lab.ns("raw"));
    let server = Ipv4Addr::new(192, 0, 2, 10);

    // DORA by hand, then DECLINE: the address is quarantined, named with the decliner.
    let mac = [2, 0, 0, 0, 1, 1];
    raw.send(&request(MessageType::Discover, mac, 1, vec![]));
    let offer = raw.reply(1, Duration::from_secs(5)).expect("no OFFER");
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    let offered = offer.yiaddr();
    raw.send(&request(
        MessageType::Request,
        mac,
        2,
        vec![
            DhcpOption::RequestedIpAddress(offered),
            DhcpOption::ServerIdentifier(server),
        ],
    ));
    let ack = raw.reply(2, Duration::from_secs(5)).expect("no ACK");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), offered);
    assert_eq!(
        ack.opts().get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    raw.send(&request(
        MessageType::Decline,
        mac,
        3,
        vec![
            DhcpOption::RequestedIpAddress(offered),
            DhcpOption::ServerIdentifier(server),
        ],
    ));
    assert!(lab.wait_for(Duration::from_secs(5), |lab| {
        leases(lab)
            .iter()
            .any(|l| l["ip"] == offered.to_string() && l["state"] == "declined")
    }));
    assert!(lab.log("bf.log").contains("DECLINE"));
    // The decliner asks again: another address.
    raw.send(&request(MessageType::Discover, mac, 4, vec![]));
    let next = raw
        .reply(4, Duration::from_secs(5))
        .expect("no second OFFER");
    assert_ne!(next.yiaddr(), offered);

    // A flood of DISCOVERs from random MACs: it can exhaust the pool only for offerSeconds.
    let started = Instant::now();
    for i in 0..3000u32 {
        let mut m = [0u8; 6];
        m[0] = 0x02;
        m[2..].copy_from_slice(&(0x1000_0000 + i).to_be_bytes());
        raw.send(&request(MessageType::Discover, m, 1000 + i, vec![]));
    }
    eprintln!("flood sent in {:?}", started.elapsed());
    let list = leases(&lab);
    assert!(
        list.iter()
            .all(|l| l["state"] != "bound" || l["mac"] == "02:00:00:00:01:01"),
        "the flood bound nothing: {list:?}"
    );
    let metrics = api(&lab, "/metrics");
    assert!(
        metrics.contains("bootfactory_dhcp_packets_total{outcome=\"pool_exhausted\"}"),
        "{metrics}"
    );
    // Once the offers ended, nothing of the flood is left and a real client gets a lease.
    assert!(lab.wait_for(Duration::from_secs(10), |lab| {
        leases(lab).iter().all(|l| l["state"] != "offered")
    }));
    let (got, text) = udhcpc(&lab, "c1", &[]);
    assert!(!get(&got, "ip").is_empty(), "{text}\n{}", lab.log("bf.log"));
    let list = leases(&lab);
    assert_eq!(
        list.len(),
        2,
        "udhcpc's lease and the declined address: {list:?}"
    );
    assert!(
        list.iter()
            .any(|l| l["state"] == "bound" && l["mac"] == "02:00:00:00:00:01")
    );
    assert!(
        list.iter()
            .any(|l| l["state"] == "declined" && l["ip"] == offered.to_string())
    );
}
