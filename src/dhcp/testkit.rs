//! PXE client packets for tests, benchmarks and diagnostics: what firmware and iPXE send.
//!
//! Encoded with `dhcproto` (not with the responder's own parser), so tests exercise the parser
//! against an independent encoder.

use std::net::Ipv4Addr;

use dhcproto::Encodable;
use dhcproto::v4::{
    Architecture, DhcpOption, Flags, HType, Message, MessageType, OptionCode, UnknownOption,
};

/// A DHCP request as a PXE ROM, UEFI firmware or iPXE sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PxeRequest {
    /// DHCP message type (option 53): 1 DISCOVER, 3 REQUEST, 8 INFORM.
    pub msg_type: u8,
    /// Client MAC (`chaddr`).
    pub mac: [u8; 6],
    /// Transaction ID.
    pub xid: u32,
    /// Option 93; `None` leaves it out.
    pub arch: Option<u16>,
    /// Option 60; `None` leaves it out.
    pub vendor_class: Option<String>,
    /// Option 77, raw bytes (iPXE sends a bare `iPXE`).
    pub user_class: Option<Vec<u8>>,
    /// Option 97 GUID (sent as type 0 + 16 bytes).
    pub uuid: Option<[u8; 16]>,
    /// Option 175 with these iPXE feature codes (each as a 1-byte sub-option of value 1).
    pub ipxe_features: Option<Vec<u8>>,
    /// `ciaddr`.
    pub ciaddr: Ipv4Addr,
    /// `giaddr`.
    pub giaddr: Ipv4Addr,
    /// The broadcast flag.
    pub broadcast: bool,
}

impl PxeRequest {
    /// A firmware DHCPDISCOVER for `arch` with a matching `PXEClient:Arch:…` (or `HTTPClient:…`
    /// for HTTP-boot arches 15, 16, 19) vendor class, broadcast flag set.
    pub fn discover(mac: [u8; 6], arch: u16) -> PxeRequest {
        let kind = if matches!(arch, 15 | 16 | 19) {
            "HTTPClient"
        } else {
            "PXEClient"
        };
        PxeRequest {
            msg_type: 1,
            mac,
            xid: u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]).rotate_left(8)
                ^ u32::from(arch),
            arch: Some(arch),
            vendor_class: Some(format!("{kind}:Arch:{arch:05}:UNDI:003016")),
            user_class: None,
            uuid: None,
            ipxe_features: None,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            broadcast: true,
        }
    }

    /// A DHCPREQUEST to port 4011 from a client that has `ciaddr`.
    pub fn proxy_request(mac: [u8; 6], arch: u16, ciaddr: Ipv4Addr) -> PxeRequest {
        PxeRequest {
            msg_type: 3,
            ciaddr,
            broadcast: false,
            ..PxeRequest::discover(mac, arch)
        }
    }

    /// An iPXE DISCOVER: user class `iPXE` and option 175 with `features`.
    pub fn ipxe_discover(mac: [u8; 6], arch: u16, features: &[u8]) -> PxeRequest {
        PxeRequest {
            user_class: Some(b"iPXE".to_vec()),
            ipxe_features: Some(features.to_vec()),
            ..PxeRequest::discover(mac, arch)
        }
    }

    /// The request as a `dhcproto` message.
    pub fn message(&self) -> Message {
        let mut m = Message::new_with_id(
            self.xid,
            self.ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            self.giaddr,
            &self.mac,
        );
        m.set_htype(HType::Eth);
        if self.broadcast {
            m.set_flags(Flags::default().set_broadcast());
        }
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(MessageType::from(self.msg_type)));
        if let Some(v) = &self.vendor_class {
            o.insert(DhcpOption::ClassIdentifier(v.as_bytes().to_vec()));
        }
        if let Some(a) = self.arch {
            o.insert(DhcpOption::ClientSystemArchitecture(Architecture(a)));
            o.insert(DhcpOption::ClientNetworkInterface(1, 3, 16));
        }
        if let Some(u) = &self.user_class {
            o.insert(DhcpOption::UserClass(u.clone()));
        }
        if let Some(g) = self.uuid {
            let mut v = vec![0u8];
            v.extend_from_slice(&g);
            o.insert(DhcpOption::ClientMachineIdentifier(v));
        }
        if let Some(f) = &self.ipxe_features {
            let mut data = Vec::new();
            for code in f {
                data.extend_from_slice(&[*code, 1, 1]);
            }
            o.insert(DhcpOption::Unknown(UnknownOption::new(
                OptionCode::from(175u8),
                data,
            )));
        }
        m
    }

    /// The request as bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        self.message()
            .to_vec()
            .expect("encoding a DHCP request into a Vec cannot fail")
    }
}
