//! Building the proxy OFFER/ACK as a `dhcproto` message.

use std::net::Ipv4Addr;

use dhcproto::Encodable;
use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode};

use super::ProxyDhcpConfig;
use super::client::Request;
use super::decide::{Plan, ReplyKind};

/// PXE vendor options (option 43): sub-option 6 (PXE_DISCOVERY_CONTROL) = 8, "use the boot
/// file name, skip boot-server discovery", then End.
pub(crate) const PXE_DISCOVERY_CONTROL_FILE_ONLY: [u8; 4] = [6, 1, 8, 255];
/// Longest boot file name kept in the 128-byte `file` header (room for the terminating NUL);
/// longer names (long URLs) go in option 67 only.
pub(crate) const MAX_FILE_HEADER: usize = 127;
/// Replies are padded to the minimum BOOTP message size (RFC 1542), which some PXE ROMs need.
pub(crate) const MIN_BOOTP_LEN: usize = 300;

/// The reply to `req` according to `plan`.
pub(crate) fn build(cfg: &ProxyDhcpConfig, req: &Request, plan: &Plan) -> Message {
    let ciaddr = match plan.kind {
        ReplyKind::Offer => Ipv4Addr::UNSPECIFIED,
        ReplyKind::Ack => req.ciaddr,
    };
    let mut m = header(req, ciaddr, Ipv4Addr::UNSPECIFIED);
    m.opts_mut()
        .insert(DhcpOption::MessageType(match plan.kind {
            ReplyKind::Offer => MessageType::Offer,
            ReplyKind::Ack => MessageType::Ack,
        }));
    m.opts_mut()
        .insert(DhcpOption::ServerIdentifier(cfg.server_ip));
    apply_boot(&mut m, cfg, req, plan);
    m
}

/// A BOOTREPLY header for `req`: its xid, `chaddr` and `giaddr`, the given `ciaddr` and
/// `yiaddr`, and the broadcast flag when the client has no address yet (a relay can only
/// reach such a client by broadcasting).
pub(crate) fn header(req: &Request, ciaddr: Ipv4Addr, yiaddr: Ipv4Addr) -> Message {
    let mut m = Message::new_with_id(
        req.xid,
        ciaddr,
        yiaddr,
        Ipv4Addr::UNSPECIFIED,
        req.giaddr,
        &req.chaddr[..6],
    );
    m.set_opcode(Opcode::BootReply).set_htype(HType::Eth);
    let mut flags = Flags::new(req.flags);
    if req.ciaddr.is_unspecified() {
        flags = flags.set_broadcast();
    }
    m.set_flags(flags);
    m
}

/// Puts the boot answer of `plan` into a reply: `siaddr` and `sname` (us), the boot file in
/// the `file` header (when it fits) and option 67, option 60 (`PXEClient`/`HTTPClient`),
/// option 97 echoed, and option 43 for BIOS. Shared by proxy and full mode.
pub(crate) fn apply_boot(m: &mut Message, cfg: &ProxyDhcpConfig, req: &Request, plan: &Plan) {
    m.set_siaddr(cfg.server_ip);
    m.set_sname_str(cfg.server_ip.to_string());
    let file = plan.served.as_str();
    if file.len() <= MAX_FILE_HEADER {
        m.set_fname_str(file);
    }
    let o = m.opts_mut();
    o.insert(DhcpOption::ClassIdentifier(plan.vendor_class().to_vec()));
    o.insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));
    if let Some(id) = &req.machine_id {
        o.insert(DhcpOption::ClientMachineIdentifier(id.clone()));
    }
    if plan.bios_discovery_control() {
        o.insert(DhcpOption::VendorExtensions(
            PXE_DISCOVERY_CONTROL_FILE_ONLY.to_vec(),
        ));
    }
}

/// The reply on the wire, padded to [`MIN_BOOTP_LEN`].
pub(crate) fn encode(msg: &Message) -> Vec<u8> {
    let mut bytes = msg
        .to_vec()
        .expect("encoding a DHCP message into a Vec cannot fail");
    if bytes.len() < MIN_BOOTP_LEN {
        bytes.resize(MIN_BOOTP_LEN, 0);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::client::parse;
    use crate::dhcp::decide::{Port, classify, plan};
    use crate::dhcp::testkit::PxeRequest;
    use dhcproto::Decodable;
    use dhcproto::v4::OptionCode;

    /// A NUL-terminated BOOTP header field as text (dhcproto keeps the NUL).
    fn header_str(field: Option<&[u8]>) -> String {
        String::from_utf8_lossy(field.unwrap_or_default())
            .trim_end_matches('\0')
            .to_string()
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const GUID: [u8; 16] = [0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

    fn cfg() -> ProxyDhcpConfig {
        ProxyDhcpConfig {
            server_ip: Ipv4Addr::new(192, 0, 2, 10),
            boot_url_base: "http://192.0.2.10:8080".into(),
            ..ProxyDhcpConfig::default()
        }
    }

    /// Builds, encodes and decodes (with dhcproto) the reply to `r` on `port`.
    fn reply(cfg: &ProxyDhcpConfig, port: Port, r: &PxeRequest) -> (Vec<u8>, Message) {
        let req = parse(&r.encode()).unwrap();
        let (kind, client) = classify(port, &req).unwrap();
        let p = plan(cfg, kind, &req, &client).unwrap();
        let bytes = encode(&build(cfg, &req, &p));
        let msg = Message::from_bytes(&bytes).unwrap();
        (bytes, msg)
    }

    fn opt(m: &Message, code: u8) -> Option<&DhcpOption> {
        m.opts().get(OptionCode::from(code))
    }

    #[test]
    fn efi_offer_fields() {
        let c = cfg();
        let mut r = PxeRequest::discover(MAC, 7);
        r.uuid = Some(GUID);
        let (bytes, m) = reply(&c, Port::Dhcp, &r);
        assert!(bytes.len() >= MIN_BOOTP_LEN);
        assert_eq!(bytes[0], 2, "BOOTREPLY");
        assert_eq!(
            &bytes[108..117],
            b"ipxe.efi\0",
            "file header, NUL-terminated"
        );
        assert_eq!(&bytes[44..55], b"192.0.2.10\0", "sname header");
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.xid(), r.xid);
        assert_eq!(m.chaddr(), &MAC);
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED, "never offer an address");
        assert_eq!(m.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.siaddr(), c.server_ip);
        assert_eq!(m.giaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(m.flags().broadcast());
        assert_eq!(header_str(m.fname()), "ipxe.efi");
        assert_eq!(header_str(m.sname()), "192.0.2.10");
        assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(
            opt(&m, 54),
            Some(&DhcpOption::ServerIdentifier(c.server_ip))
        );
        assert_eq!(
            opt(&m, 60),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        assert_eq!(
            opt(&m, 67),
            Some(&DhcpOption::BootfileName(b"ipxe.efi".to_vec()))
        );
        let mut echoed = vec![0];
        echoed.extend_from_slice(&GUID);
        assert_eq!(
            opt(&m, 97),
            Some(&DhcpOption::ClientMachineIdentifier(echoed))
        );
        assert_eq!(opt(&m, 43), None, "no option 43 for UEFI");
    }

    #[test]
    fn bios_offer_has_option_43_raw_bytes() {
        let (bytes, m) = reply(&cfg(), Port::Dhcp, &PxeRequest::discover(MAC, 0));
        assert_eq!(
            opt(&m, 43),
            Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
        );
        assert!(
            bytes[240..].windows(6).any(|w| w == [43, 4, 6, 1, 8, 255]),
            "option 43 on the wire is 2b 04 06 01 08 ff"
        );
        assert_eq!(header_str(m.fname()), "undionly.kpxe");
        assert_eq!(opt(&m, 97), None, "97 only echoed when sent");
    }

    #[test]
    fn http_boot_offer() {
        let (_, m) = reply(&cfg(), Port::Dhcp, &PxeRequest::discover(MAC, 16));
        assert_eq!(
            opt(&m, 60),
            Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
        );
        let url = "http://192.0.2.10:8080/ipxe/ipxe.efi";
        assert_eq!(header_str(m.fname()), url);
        assert_eq!(
            opt(&m, 67),
            Some(&DhcpOption::BootfileName(url.as_bytes().to_vec()))
        );
        assert_eq!(opt(&m, 43), None);
    }

    #[test]
    fn ack_on_4011_keeps_ciaddr() {
        let ci = Ipv4Addr::new(192, 0, 2, 50);
        let (_, m) = reply(&cfg(), Port::Proxy, &PxeRequest::proxy_request(MAC, 9, ci));
        assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(m.ciaddr(), ci);
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(!m.flags().broadcast());
        assert_eq!(header_str(m.fname()), "ipxe.efi");
    }

    #[test]
    fn relayed_offer_carries_giaddr() {
        let mut r = PxeRequest::discover(MAC, 11);
        r.giaddr = Ipv4Addr::new(10, 0, 0, 1);
        let (_, m) = reply(&cfg(), Port::Dhcp, &r);
        assert_eq!(m.giaddr(), Ipv4Addr::new(10, 0, 0, 1));
        assert!(m.flags().broadcast());
    }

    #[test]
    fn long_urls_go_in_option_67_only() {
        let mut c = cfg();
        c.boot_url_base = format!("http://192.0.2.10:8080/{}", "x".repeat(120));
        let (_, m) = reply(&c, Port::Dhcp, &PxeRequest::ipxe_discover(MAC, 7, &[0x13]));
        assert_eq!(m.fname(), None);
        let Some(DhcpOption::BootfileName(f)) = opt(&m, 67) else {
            panic!("no option 67")
        };
        assert!(f.len() > MAX_FILE_HEADER && f.ends_with(b"/boot/52:54:00:12:34:56.ipxe"));
    }
}
