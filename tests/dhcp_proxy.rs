//! Proxy-DHCP over real UDP sockets.
//!
//! - `loopback_*`: the responder on `0.0.0.0` high ports; the test plays a relay agent bound to
//!   `127.0.0.2:<dhcp_port>` (replies to relayed requests go to `giaddr:dhcp_port`; the more
//!   specific bind wins the unicast), a client with an address on `127.0.0.3:<client_port>`,
//!   and a PXE client asking on the proxy port.
//! - `netns_broadcast_discover_gets_broadcast_offer`: two network namespaces joined by a veth
//!   pair (192.0.2.10/24 and 192.0.2.1/24). The responder runs in one, bound to its veth with
//!   SO_BINDTODEVICE on the real ports 67/4011; a client in the other broadcasts a DISCOVER from
//!   `0.0.0.0:68` and must receive a *broadcast* OFFER (a witness socket bound to
//!   `255.255.255.255:68` only sees broadcasts), then asks on 4011. Both sides run in this test
//!   binary re-executed under `ip netns exec` (the `netns_child_*` tests, which do nothing
//!   unless `BFDHCP_CHILD` says so). Needs root and `ip` (iproute2); skipped otherwise unless
//!   `BOOTFACTORY_REQUIRE_TOOLS=1`. Namespaces are named `bfdhcp-<pid>-…` and always deleted.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bootfactory::dhcp::testkit::PxeRequest;
use bootfactory::dhcp::{BootFiles, ClientInfo, ClientPolicy, ProxyDhcp, ProxyDhcpConfig, Served};
use bootfactory::mac::MacAddr;
use dhcproto::Decodable;
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use socket2::{Domain, Protocol, Socket, Type};

mod support;
use support::netns::{Netns, can_use_netns};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const GUID: [u8; 16] = [
    0x8a, 0x3f, 0x1e, 0x52, 0x77, 0x0c, 0x4b, 0x1d, 0x9e, 0x40, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
];
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Records every `observed` call; silences MACs listed in `silent`.
#[derive(Default)]
struct Recorder {
    silent: Vec<[u8; 6]>,
    seen: Mutex<Vec<(ClientInfo, Option<Served>)>>,
}

impl ClientPolicy for Recorder {
    fn answer(&self, client: &ClientInfo) -> bool {
        !self.silent.contains(&client.mac)
    }
    fn observed(&self, client: &ClientInfo, served: Option<&Served>) {
        self.seen
            .lock()
            .unwrap()
            .push((client.clone(), served.cloned()));
    }
}

fn free_udp_port() -> u16 {
    StdUdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP socket with SO_REUSEADDR bound to `addr` (shares the port with the responder's
/// `0.0.0.0` socket).
fn reuse_socket(addr: SocketAddrV4) -> tokio::net::UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&SocketAddr::V4(addr).into()).unwrap();
    s.set_nonblocking(true).unwrap();
    tokio::net::UdpSocket::from_std(s.into()).unwrap()
}

async fn recv_reply(sock: &tokio::net::UdpSocket, xid: u32) -> (Message, SocketAddr, usize) {
    let mut buf = vec![0u8; 2048];
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let (n, from) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no reply for xid {xid:#x} within {REPLY_TIMEOUT:?}"))
            .unwrap();
        let m = Message::from_bytes(&buf[..n]).expect("reply decodes");
        if m.xid() == xid {
            return (m, from, n);
        }
    }
}

async fn expect_silence(sock: &tokio::net::UdpSocket) {
    let mut buf = vec![0u8; 2048];
    if let Ok(Ok((n, from))) =
        tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await
    {
        panic!("unexpected {n}-byte reply from {from}");
    }
}

/// A NUL-terminated BOOTP header field as text (dhcproto keeps the NUL).
fn header_str(field: Option<&[u8]>) -> String {
    String::from_utf8_lossy(field.unwrap_or_default())
        .trim_end_matches('\0')
        .to_string()
}

fn opt(m: &Message, code: u8) -> Option<&DhcpOption> {
    m.opts().get(OptionCode::from(code))
}

fn guid_option() -> DhcpOption {
    let mut v = vec![0];
    v.extend_from_slice(&GUID);
    DhcpOption::ClientMachineIdentifier(v)
}

#[tokio::test]
async fn loopback_relay_offer_unicast_offer_and_proxy_ack() {
    let dhcp_port = free_udp_port();
    let proxy_port = free_udp_port();
    let client_port = free_udp_port();
    let server_ip = Ipv4Addr::LOCALHOST;
    let config = ProxyDhcpConfig {
        interfaces: Vec::new(),
        server_ip,
        dhcp_port,
        proxy_port,
        client_port,
        boot_url_base: "http://127.0.0.1:8080".into(),
        require_https: true,
        boot_files: BootFiles::default(),
        per_mac_burst: 20,
        per_mac_per_second: 10,
    };
    let silent_mac = [0x52, 0x54, 0x00, 0x00, 0x00, 0x99];
    let policy = Arc::new(Recorder {
        silent: vec![silent_mac],
        ..Recorder::default()
    });
    let server = ProxyDhcp::bind(config, policy.clone()).await.unwrap();
    let addrs = server.local_addrs();
    assert!(addrs.iter().any(|a| a.port() == dhcp_port), "{addrs:?}");
    assert!(addrs.iter().any(|a| a.port() == proxy_port), "{addrs:?}");
    let stats = server.stats();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));

    let dhcp_addr = SocketAddr::from((server_ip, dhcp_port));
    let relay_ip = Ipv4Addr::new(127, 0, 0, 2);
    let relay = reuse_socket(SocketAddrV4::new(relay_ip, dhcp_port));

    // 1. Relayed UEFI x86-64 DISCOVER → OFFER unicast to giaddr:dhcp_port.
    let mut d = PxeRequest::discover(MAC, 7);
    d.giaddr = relay_ip;
    d.uuid = Some(GUID);
    relay.send_to(&d.encode(), dhcp_addr).await.unwrap();
    let (m, from, len) = recv_reply(&relay, d.xid).await;
    assert_eq!(from.port(), dhcp_port);
    assert!(len >= 300, "padded to the BOOTP minimum, got {len}");
    assert_eq!(m.opcode(), Opcode::BootReply);
    assert_eq!(m.chaddr(), &MAC);
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(m.siaddr(), server_ip);
    assert_eq!(m.giaddr(), relay_ip);
    assert!(
        m.flags().broadcast(),
        "relay must broadcast to an address-less client"
    );
    assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(opt(&m, 54), Some(&DhcpOption::ServerIdentifier(server_ip)));
    assert_eq!(
        opt(&m, 60),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert_eq!(header_str(m.fname()), "ipxe.efi");
    assert_eq!(
        opt(&m, 67),
        Some(&DhcpOption::BootfileName(b"ipxe.efi".to_vec()))
    );
    assert_eq!(opt(&m, 97), Some(&guid_option()));
    assert_eq!(opt(&m, 43), None);

    // 2. Relayed BIOS DISCOVER → option 43 {6:8}.
    let mut b = PxeRequest::discover([0x52, 0x54, 0, 0, 0, 1], 0);
    b.giaddr = relay_ip;
    relay.send_to(&b.encode(), dhcp_addr).await.unwrap();
    let (m, _, _) = recv_reply(&relay, b.xid).await;
    assert_eq!(header_str(m.fname()), "undionly.kpxe");
    assert_eq!(
        opt(&m, 43),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
    assert_eq!(opt(&m, 97), None);

    // 3. Relayed iPXE with HTTPS → script URL; iPXE without HTTPS (require_https) → binary.
    let mut ours = PxeRequest::ipxe_discover(MAC, 7, &[0x13, 0x14, 0x15, 0x24]);
    ours.giaddr = relay_ip;
    ours.xid ^= 0x1111;
    relay.send_to(&ours.encode(), dhcp_addr).await.unwrap();
    let (m, _, _) = recv_reply(&relay, ours.xid).await;
    assert_eq!(
        header_str(m.fname()),
        "http://127.0.0.1:8080/boot/52:54:00:12:34:56.ipxe"
    );
    let mut foreign = PxeRequest::ipxe_discover(MAC, 7, &[0x13, 0x15, 0x24]);
    foreign.giaddr = relay_ip;
    foreign.xid ^= 0x2222;
    relay.send_to(&foreign.encode(), dhcp_addr).await.unwrap();
    let (m, _, _) = recv_reply(&relay, foreign.xid).await;
    assert_eq!(header_str(m.fname()), "ipxe.efi");

    // 4. UEFI HTTP boot → HTTPClient + IP-literal URL.
    let mut h = PxeRequest::discover([0x52, 0x54, 0, 0, 0, 2], 16);
    h.giaddr = relay_ip;
    relay.send_to(&h.encode(), dhcp_addr).await.unwrap();
    let (m, _, _) = recv_reply(&relay, h.xid).await;
    assert_eq!(
        opt(&m, 60),
        Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
    );
    assert_eq!(header_str(m.fname()), "http://127.0.0.1:8080/ipxe/ipxe.efi");

    // 5. A client with an address and no broadcast flag → unicast to ciaddr:client_port.
    let client_ip = Ipv4Addr::new(127, 0, 0, 3);
    let client = reuse_socket(SocketAddrV4::new(client_ip, client_port));
    let mut u = PxeRequest::discover([0x52, 0x54, 0, 0, 0, 3], 11);
    u.ciaddr = client_ip;
    u.broadcast = false;
    client.send_to(&u.encode(), dhcp_addr).await.unwrap();
    let (m, _, _) = recv_reply(&client, u.xid).await;
    assert_eq!(header_str(m.fname()), "ipxe-arm64.efi");
    assert!(!m.flags().broadcast());

    // 6. REQUEST on the proxy port → ACK back to the source port.
    let pxe = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let r = PxeRequest::proxy_request(MAC, 7, Ipv4Addr::LOCALHOST);
    pxe.send_to(&r.encode(), (server_ip, proxy_port))
        .await
        .unwrap();
    let (m, from, _) = recv_reply(&pxe, r.xid).await;
    assert_eq!(from.port(), proxy_port);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(m.ciaddr(), Ipv4Addr::LOCALHOST);
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(header_str(m.fname()), "ipxe.efi");

    // 7. No reply: non-PXE, missing option 93, malformed, policy-silenced, REQUEST on 67.
    let mut plain = PxeRequest::discover([0x52, 0x54, 0, 0, 0, 4], 7);
    plain.vendor_class = Some("MSFT 5.0".into());
    plain.giaddr = relay_ip;
    let mut no93 = PxeRequest::discover([0x52, 0x54, 0, 0, 0, 5], 7);
    no93.arch = None;
    no93.giaddr = relay_ip;
    let mut silenced = PxeRequest::discover(silent_mac, 7);
    silenced.giaddr = relay_ip;
    let mut req67 = PxeRequest::proxy_request(MAC, 7, relay_ip);
    req67.giaddr = relay_ip;
    let mut truncated = d.encode();
    truncated.truncate(100);
    for pkt in [
        plain.encode(),
        no93.encode(),
        silenced.encode(),
        req67.encode(),
        truncated,
        vec![0xff; 600],
    ] {
        relay.send_to(&pkt, dhcp_addr).await.unwrap();
    }
    expect_silence(&relay).await;

    // Still alive after the garbage.
    let mut again = PxeRequest::discover([0x52, 0x54, 0, 0, 0, 6], 9);
    again.giaddr = relay_ip;
    relay.send_to(&again.encode(), dhcp_addr).await.unwrap();
    let (m, _, _) = recv_reply(&relay, again.xid).await;
    assert_eq!(header_str(m.fname()), "ipxe.efi");

    let s = stats.snapshot();
    assert_eq!(s.offers, 7, "{s:?}");
    assert_eq!(s.acks, 1, "{s:?}");
    assert_eq!(s.ignored, 3, "{s:?}");
    assert_eq!(s.silenced, 1, "{s:?}");
    assert_eq!(s.dropped_malformed, 2, "{s:?}");
    assert_eq!(s.received, 14, "{s:?}");
    {
        let seen = policy.seen.lock().unwrap();
        assert_eq!(seen.len(), 9, "every PXE client that asked is observed");
        let silent: Vec<_> = seen.iter().filter(|(c, _)| c.mac == silent_mac).collect();
        assert_eq!(silent.len(), 1);
        assert_eq!(silent[0].1, None);
        let first = &seen[0].0;
        assert_eq!(first.arch, 7);
        assert_eq!(
            first.uuid.as_deref(),
            Some("8a3f1e52-770c-4b1d-9e40-112233445566")
        );
        assert_eq!(first.relay, Some(relay_ip));
    }

    stop_tx.send(()).unwrap();
    tokio::time::timeout(REPLY_TIMEOUT, task)
        .await
        .expect("run() returns after shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn loopback_bind_conflict_names_the_port() {
    let taken = StdUdpSocket::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = ProxyDhcpConfig {
        server_ip: Ipv4Addr::LOCALHOST,
        dhcp_port: port,
        proxy_port: free_udp_port(),
        boot_url_base: "http://127.0.0.1:8080".into(),
        ..ProxyDhcpConfig::default()
    };
    let err = ProxyDhcp::bind(config, Arc::new(bootfactory::dhcp::AnswerAll))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&port.to_string()) && err.contains("already in use"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Network namespaces.

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const SERVER_IF: &str = "bfd0";
const CLIENT_IF: &str = "bfd1";
const CHILD_ENV: &str = "BFDHCP_CHILD";

/// Skips (or fails under `BOOTFACTORY_REQUIRE_TOOLS=1`) with `why`.
fn skip(why: &str) {
    assert!(
        std::env::var("BOOTFACTORY_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "netns test cannot run: {why}"
    );
    eprintln!("skipping the network-namespace proxy-DHCP test: {why}");
}

/// Kills the child (by its PID) if it is still running when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn netns_broadcast_discover_gets_broadcast_offer() {
    if !can_use_netns() {
        return;
    }
    let ns = match Netns::pair(
        "bfdhcp",
        (SERVER_IF, &["192.0.2.10/24"]),
        (CLIENT_IF, &["192.0.2.1/24"]),
    ) {
        Ok(ns) => ns,
        Err(e) => return skip(&format!("cannot create network namespaces: {e}")),
    };

    let mut server = KillOnDrop(
        ns.this_test(&ns.server, "netns_child_server")
            .env(CHILD_ENV, "server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the server child"),
    );
    // Server stdout: wait for READY, then collect the rest (its stats line) in the background.
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = server.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            // libtest prints "test name ... " before the child's own output.
            Ok(line) if line.contains("BFDHCP-READY") => break,
            Ok(_) => {}
            Err(_) => panic!("the server child did not become ready within 30 s"),
        }
    }

    let client = ns
        .this_test(&ns.client, "netns_child_client")
        .env(CHILD_ENV, "client")
        .stdin(Stdio::null())
        .output()
        .expect("run the client child");
    let client_out = String::from_utf8_lossy(&client.stdout);
    assert!(
        client.status.success() && client_out.contains("BFDHCP-CLIENT-OK"),
        "client child failed ({}):\n{client_out}\n{}",
        client.status,
        String::from_utf8_lossy(&client.stderr)
    );

    // Closing stdin stops the server, which prints its counters.
    drop(server.0.stdin.take());
    let mut stats = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => stats = line.split_once("BFDHCP-STATS ").map(|(_, s)| s.to_string()),
            Err(_) => panic!("the server child printed no stats"),
        }
    }
    let status = server.0.wait().unwrap();
    assert!(status.success(), "server child: {status}");
    let stats = stats.unwrap();
    assert!(
        stats.contains("offers=2 acks=1") && stats.contains("dropped_malformed=0"),
        "{stats}"
    );
    drop(ns);
}

/// Child: the responder inside the server namespace, bound to the veth on ports 67/4011,
/// until stdin closes (at most 60 s).
#[test]
#[ignore = "child process of netns_broadcast_discover_gets_broadcast_offer"]
fn netns_child_server() {
    if std::env::var(CHILD_ENV).as_deref() != Ok("server") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = ProxyDhcpConfig {
            interfaces: vec![SERVER_IF.to_string()],
            server_ip: SERVER_IP,
            dhcp_port: 67,
            proxy_port: 4011,
            client_port: 68,
            boot_url_base: "http://192.0.2.10:8080".into(),
            ..ProxyDhcpConfig::default()
        };
        let server = ProxyDhcp::bind(config, Arc::new(bootfactory::dhcp::AnswerAll))
            .await
            .expect("bind in the namespace");
        let stats = server.stats();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            let _ = tx.send(());
        });
        println!("BFDHCP-READY {:?}", server.local_addrs());
        std::io::stdout().flush().unwrap();
        server
            .run(async {
                tokio::select! {
                    _ = rx => {}
                    () = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
            })
            .await
            .unwrap();
        let s = stats.snapshot();
        println!(
            "BFDHCP-STATS offers={} acks={} received={} ignored={} dropped_malformed={}",
            s.offers, s.acks, s.received, s.ignored, s.dropped_malformed
        );
    });
}

/// A blocking UDP socket bound to `addr` on the client veth.
fn client_socket(addr: SocketAddrV4) -> StdUdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_broadcast(true).unwrap();
    s.bind_device(Some(CLIENT_IF.as_bytes())).unwrap();
    s.bind(&SocketAddr::V4(addr).into()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    s.into()
}

/// Sends `req` to `to` from `send` until a reply with its xid arrives on `recv` (3 tries).
fn exchange(
    send: &StdUdpSocket,
    recv: &StdUdpSocket,
    req: &PxeRequest,
    to: SocketAddr,
) -> (Message, SocketAddr) {
    let mut buf = [0u8; 2048];
    for _ in 0..3 {
        send.send_to(&req.encode(), to).unwrap();
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            let Ok((n, from)) = recv.recv_from(&mut buf) else {
                break;
            };
            match Message::from_bytes(&buf[..n]) {
                Ok(m) if m.xid() == req.xid && m.opcode() == Opcode::BootReply => {
                    return (m, from);
                }
                _ => {}
            }
        }
    }
    panic!("no reply to xid {:#x} sent to {to}", req.xid);
}

/// Child: a PXE client in the client namespace.
#[test]
#[ignore = "child process of netns_broadcast_discover_gets_broadcast_offer"]
fn netns_child_client() {
    if std::env::var(CHILD_ENV).as_deref() != Ok("client") {
        return;
    }
    let mac = [0x52, 0x54, 0x00, 0xbf, 0x00, 0x01];
    // The firmware's socket, and a witness that only receives broadcasts.
    let sock = client_socket(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
    let witness = client_socket(SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    let bcast: SocketAddr = (Ipv4Addr::BROADCAST, 67).into();

    let mut d = PxeRequest::discover(mac, 7);
    d.uuid = Some(GUID);
    let (m, from) = exchange(&sock, &witness, &d, bcast);
    assert_eq!(from, SocketAddr::from((SERVER_IP, 67)));
    assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(m.siaddr(), SERVER_IP);
    assert_eq!(opt(&m, 54), Some(&DhcpOption::ServerIdentifier(SERVER_IP)));
    assert_eq!(header_str(m.fname()), "ipxe.efi");
    assert_eq!(opt(&m, 97), Some(&guid_option()));
    // The firmware socket saw the same broadcast.
    let mut buf = [0u8; 2048];
    let (n, _) = sock
        .recv_from(&mut buf)
        .expect("firmware socket got the OFFER");
    assert_eq!(Message::from_bytes(&buf[..n]).unwrap().xid(), d.xid);

    // The firmware's follow-up on 4011, unicast from its new address.
    let unicast = client_socket(SocketAddrV4::new(CLIENT_IP, 0));
    let r = PxeRequest::proxy_request(mac, 7, CLIENT_IP);
    let (m, from) = exchange(&unicast, &unicast, &r, (SERVER_IP, 4011).into());
    assert_eq!(from, SocketAddr::from((SERVER_IP, 4011)));
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(header_str(m.fname()), "ipxe.efi");

    // The chained iPXE's DHCP: the boot script, broadcast again.
    let mut i = PxeRequest::ipxe_discover(mac, 7, &[0x13, 0x14, 0x15, 0x24]);
    i.xid ^= 0xabcd;
    let (m, _) = exchange(&sock, &witness, &i, bcast);
    assert_eq!(
        header_str(m.fname()),
        format!("http://192.0.2.10:8080/boot/{}.ipxe", MacAddr(mac))
    );
    println!("BFDHCP-CLIENT-OK");
}
