//! The proxy-DHCP responder on one received datagram: the request reader
//! (`dhcp::client::parse`), the decision (`dhcp::decide`) and the reply (`dhcp::reply`), as
//! `dhcp::server` chains them, on both ports.
//!
//! Properties: no panic anywhere (an `expect` in the reply encoder included); the reader's
//! header fields agree with the raw bytes and with dhcproto's independent decoder; an answered
//! request gets a BOOTREPLY that dhcproto decodes, with the request's xid and MAC, the message
//! type for its port, the vendor class and boot file of the plan, and a destination that
//! follows RFC 2131 §4.1 (relay, unicast to a configured client, or broadcast).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use dhcproto::Decodable;
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};

use crate::dhcp::client::{self, DHCPDISCOVER, DHCPINFORM, DHCPREQUEST};
use crate::dhcp::decide::{self, NoAnswer, Port, ReplyKind};
use crate::dhcp::{BootFiles, ProxyDhcpConfig, Served, reply};

fn config(require_https: bool) -> ProxyDhcpConfig {
    ProxyDhcpConfig {
        server_ip: Ipv4Addr::new(192, 0, 2, 10),
        boot_url_base: "http://192.0.2.10:8080".into(),
        require_https,
        boot_files: BootFiles::default(),
        ..ProxyDhcpConfig::default()
    }
}

/// Checks one datagram.
pub fn check(data: &[u8]) {
    let Ok(req) = client::parse(data) else {
        return;
    };
    // The fixed header as read.
    assert_eq!(req.xid.to_be_bytes(), data[4..8]);
    assert_eq!(req.flags.to_be_bytes(), data[10..12]);
    assert_eq!(req.ciaddr.octets(), data[12..16]);
    assert_eq!(req.giaddr.octets(), data[24..28]);
    assert_eq!(req.chaddr, data[28..44]);
    assert!(req.hlen <= 16);
    if req.htype == 1 {
        assert_eq!(req.hlen, 6);
    }
    // dhcproto is an independent decoder; where it also accepts, the header agrees.
    if let Ok(m) = Message::from_bytes(data) {
        assert_eq!(m.xid(), req.xid);
        assert_eq!(m.giaddr(), req.giaddr);
        assert_eq!(m.ciaddr(), req.ciaddr);
    }
    let src: SocketAddr = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 77), 68).into();
    for require_https in [false, true] {
        let cfg = config(require_https);
        for port in [Port::Dhcp, Port::Proxy] {
            let Ok((kind, info)) = decide::classify(port, &req) else {
                continue;
            };
            match (port, kind, req.msg_type) {
                (Port::Dhcp, ReplyKind::Offer, Some(DHCPDISCOVER)) => {}
                (Port::Proxy, ReplyKind::Ack, Some(DHCPREQUEST | DHCPINFORM)) => {}
                other => panic!("answered an unexpected request: {other:?}"),
            }
            assert_eq!(info.mac, data[28..34], "client MAC is chaddr");
            assert_eq!(req.htype, 1, "only Ethernet clients are answered");
            let plan = match decide::plan(&cfg, kind, &req, &info) {
                Ok(plan) => plan,
                Err(NoAnswer::UnknownArch(a)) => {
                    assert!(decide::Firmware::from_arch(a).is_none());
                    continue;
                }
                Err(NoAnswer::NoBinaryForArch(a)) => {
                    assert!(matches!(a, 6 | 15), "only ia32 has no default binary");
                    continue;
                }
            };
            if let Served::Script(url) = &plan.served {
                assert!(info.ipxe, "scripts only for iPXE");
                assert_eq!(
                    url,
                    &format!(
                        "http://192.0.2.10:8080/boot/{}.ipxe",
                        crate::mac::MacAddr(info.mac)
                    )
                );
                assert!(decide::ipxe_can_run_script(&req, require_https));
            }
            let msg = reply::build(&cfg, &req, &plan);
            let bytes = reply::encode(&msg);
            assert!(bytes.len() >= reply::MIN_BOOTP_LEN);
            let m = Message::from_bytes(&bytes)
                .unwrap_or_else(|e| panic!("our reply does not decode: {e}"));
            assert_eq!(m.opcode(), Opcode::BootReply);
            assert_eq!(m.xid(), req.xid);
            assert_eq!(&m.chaddr()[..6], &info.mac);
            assert_eq!(
                m.yiaddr(),
                Ipv4Addr::UNSPECIFIED,
                "a proxy never offers an address"
            );
            assert_eq!(
                m.opts().msg_type(),
                Some(match kind {
                    ReplyKind::Offer => MessageType::Offer,
                    ReplyKind::Ack => MessageType::Ack,
                })
            );
            assert_eq!(
                m.opts().get(OptionCode::ClassIdentifier),
                Some(&DhcpOption::ClassIdentifier(plan.vendor_class().to_vec()))
            );
            assert_eq!(
                m.opts().get(OptionCode::BootfileName),
                Some(&DhcpOption::BootfileName(
                    plan.served.as_str().as_bytes().to_vec()
                ))
            );
            // A zero-length option 97 (invalid, RFC 4578 wants 17 bytes) has nothing to echo:
            // dhcproto writes no option for empty data.
            if let Some(id) = req.machine_id.as_ref().filter(|id| !id.is_empty()) {
                assert_eq!(
                    m.opts().get(OptionCode::ClientMachineIdentifier),
                    Some(&DhcpOption::ClientMachineIdentifier(id.clone())),
                    "option 97 echoed as sent"
                );
            }
            // Our own reader drops our reply (it is not a BOOTREQUEST): no reply loops.
            assert!(client::parse(&bytes).is_err());
            let dest = decide::destination(&cfg, port, &req, src);
            let expected: SocketAddr = if port == Port::Proxy {
                src
            } else if !req.giaddr.is_unspecified() {
                SocketAddrV4::new(req.giaddr, cfg.dhcp_port).into()
            } else if !req.ciaddr.is_unspecified() && !req.broadcast() {
                SocketAddrV4::new(req.ciaddr, cfg.client_port).into()
            } else {
                SocketAddrV4::new(Ipv4Addr::BROADCAST, cfg.client_port).into()
            };
            assert_eq!(dest, expected);
        }
    }
}
