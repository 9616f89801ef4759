//! The pure part of the responder: which requests are answered, with what, and where the reply
//! goes. No I/O, no clock, no state.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::client::{ClientInfo, DHCPDISCOVER, DHCPINFORM, DHCPREQUEST, NotPxe, Request, feature};
use super::{BootFiles, ProxyDhcpConfig, Served};
use crate::mac::MacAddr;

/// Which listening port a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Port {
    /// `dhcp_port` (67).
    Dhcp,
    /// `proxy_port` (4011).
    Proxy,
}

/// The reply message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyKind {
    /// DHCPOFFER (to a DISCOVER on 67).
    Offer,
    /// DHCPACK (to a REQUEST or INFORM on 4011).
    Ack,
}

/// Firmware family, from option 93.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Firmware {
    /// 0: x86 BIOS.
    Bios,
    /// 6: 32-bit x86 UEFI.
    EfiIa32,
    /// 7, 9: x86-64 UEFI.
    EfiX64,
    /// 11: arm64 UEFI.
    EfiArm64,
    /// 15: 32-bit x86 UEFI HTTP boot.
    HttpIa32,
    /// 16: x86-64 UEFI HTTP boot.
    HttpX64,
    /// 19: arm64 UEFI HTTP boot.
    HttpArm64,
}

impl Firmware {
    /// The firmware for an option 93 value; `None` = not supported.
    pub(crate) fn from_arch(arch: u16) -> Option<Firmware> {
        Some(match arch {
            0 => Firmware::Bios,
            6 => Firmware::EfiIa32,
            7 | 9 => Firmware::EfiX64,
            11 => Firmware::EfiArm64,
            15 => Firmware::HttpIa32,
            16 => Firmware::HttpX64,
            19 => Firmware::HttpArm64,
            _ => return None,
        })
    }

    /// UEFI HTTP boot (the reply carries `HTTPClient` and a URL).
    pub(crate) fn is_http(self) -> bool {
        matches!(
            self,
            Firmware::HttpIa32 | Firmware::HttpX64 | Firmware::HttpArm64
        )
    }

    /// The iPXE binary for this firmware, if we have one.
    fn binary(self, files: &BootFiles) -> Option<&str> {
        match self {
            Firmware::Bios => files.bios.as_deref(),
            Firmware::EfiIa32 | Firmware::HttpIa32 => files.efi_ia32.as_deref(),
            Firmware::EfiX64 | Firmware::HttpX64 => Some(&files.efi_x64),
            Firmware::EfiArm64 | Firmware::HttpArm64 => Some(&files.efi_arm64),
        }
    }
}

/// Why a well-formed request from the right port gets no answer (before rate limiting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ignored {
    /// Not a PXE/HTTP-boot client.
    NotPxe(NotPxe),
    /// A message type this port does not answer (or none).
    MessageType(Option<u8>),
}

/// Why a PXE client gets no answer (after the request was accepted as one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoAnswer {
    /// Option 93 value we do not know.
    UnknownArch(u16),
    /// Known architecture without a configured binary (ia32 UEFI by default).
    NoBinaryForArch(u16),
}

/// What to send to an accepted client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// OFFER or ACK.
    pub kind: ReplyKind,
    /// The firmware family the reply is for.
    pub firmware: Firmware,
    /// Boot file or script URL.
    pub served: Served,
}

impl Plan {
    /// Option 60 in the reply: `HTTPClient` for UEFI HTTP boot, else `PXEClient`.
    pub(crate) fn vendor_class(&self) -> &'static [u8] {
        if self.firmware.is_http() {
            b"HTTPClient"
        } else {
            b"PXEClient"
        }
    }

    /// Option 43 `{6: 8}` (skip boot-server discovery): BIOS only. UEFI firmware without it
    /// asks again on port 4011, which is what the anchors found works across firmwares.
    pub(crate) fn bios_discovery_control(&self) -> bool {
        self.firmware == Firmware::Bios
    }
}

/// Accepts a request on `port` as a PXE/HTTP-boot request we answer, or says why not.
pub(crate) fn classify(port: Port, req: &Request) -> Result<(ReplyKind, ClientInfo), Ignored> {
    let kind = match (port, req.msg_type) {
        (Port::Dhcp, Some(DHCPDISCOVER)) => ReplyKind::Offer,
        (Port::Proxy, Some(DHCPREQUEST | DHCPINFORM)) => ReplyKind::Ack,
        (_, other) => return Err(Ignored::MessageType(other)),
    };
    let client = req.client_info().map_err(Ignored::NotPxe)?;
    Ok((kind, client))
}

/// Whether an iPXE client can run our boot script itself: it must announce HTTP, and HTTPS
/// when required. No option 175 at all means its features are unknown: chain our binary.
pub(crate) fn ipxe_can_run_script(req: &Request, require_https: bool) -> bool {
    match &req.ipxe_features {
        Some(f) => f.has(feature::HTTP) && (!require_https || f.has(feature::HTTPS)),
        None => false,
    }
}

/// The boot script URL for a MAC: `{base}/boot/{mac}.ipxe`.
pub(crate) fn script_url(cfg: &ProxyDhcpConfig, mac: &[u8; 6]) -> String {
    format!(
        "{}{}",
        base(cfg),
        crate::ipxe::script::boot_script_path(MacAddr(*mac))
    )
}

fn base(cfg: &ProxyDhcpConfig) -> &str {
    cfg.boot_url_base.trim_end_matches('/')
}

/// What an accepted client is served (policy aside).
pub(crate) fn plan(
    cfg: &ProxyDhcpConfig,
    kind: ReplyKind,
    req: &Request,
    client: &ClientInfo,
) -> Result<Plan, NoAnswer> {
    let firmware = Firmware::from_arch(client.arch).ok_or(NoAnswer::UnknownArch(client.arch))?;
    let served = if client.ipxe && ipxe_can_run_script(req, cfg.require_https) {
        Served::Script(script_url(cfg, &client.mac))
    } else {
        let binary = firmware
            .binary(&cfg.boot_files)
            .ok_or(NoAnswer::NoBinaryForArch(client.arch))?;
        if firmware.is_http() {
            Served::Binary(format!("{}/ipxe/{binary}", base(cfg)))
        } else {
            Served::Binary(binary.to_string())
        }
    };
    Ok(Plan {
        kind,
        firmware,
        served,
    })
}

/// Where the reply goes (see the module documentation).
pub(crate) fn destination(
    cfg: &ProxyDhcpConfig,
    port: Port,
    req: &Request,
    src: SocketAddr,
) -> SocketAddr {
    if port == Port::Proxy {
        return src;
    }
    if !req.giaddr.is_unspecified() {
        return SocketAddrV4::new(req.giaddr, cfg.dhcp_port).into();
    }
    if !req.ciaddr.is_unspecified() && !req.broadcast() {
        return SocketAddrV4::new(req.ciaddr, cfg.client_port).into();
    }
    SocketAddrV4::new(Ipv4Addr::BROADCAST, cfg.client_port).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::client::parse;
    use crate::dhcp::testkit::PxeRequest;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];

    fn cfg() -> ProxyDhcpConfig {
        ProxyDhcpConfig {
            server_ip: Ipv4Addr::new(192, 0, 2, 10),
            boot_url_base: "http://192.0.2.10:8080".into(),
            ..ProxyDhcpConfig::default()
        }
    }

    fn plan_for(cfg: &ProxyDhcpConfig, r: &PxeRequest) -> Result<Plan, NoAnswer> {
        let req = parse(&r.encode()).unwrap();
        let (kind, client) = classify(Port::Dhcp, &req).unwrap();
        plan(cfg, kind, &req, &client)
    }

    fn served(cfg: &ProxyDhcpConfig, r: &PxeRequest) -> Served {
        plan_for(cfg, r).unwrap().served
    }

    #[test]
    fn arch_mapping() {
        let c = cfg();
        let bin = |s: &str| Served::Binary(s.to_string());
        assert_eq!(
            served(&c, &PxeRequest::discover(MAC, 0)),
            bin("undionly.kpxe")
        );
        assert_eq!(served(&c, &PxeRequest::discover(MAC, 7)), bin("ipxe.efi"));
        assert_eq!(served(&c, &PxeRequest::discover(MAC, 9)), bin("ipxe.efi"));
        assert_eq!(
            served(&c, &PxeRequest::discover(MAC, 11)),
            bin("ipxe-arm64.efi")
        );
        assert_eq!(
            served(&c, &PxeRequest::discover(MAC, 16)),
            bin("http://192.0.2.10:8080/ipxe/ipxe.efi")
        );
        assert_eq!(
            served(&c, &PxeRequest::discover(MAC, 19)),
            bin("http://192.0.2.10:8080/ipxe/ipxe-arm64.efi")
        );
        // ia32: only with a configured binary.
        assert_eq!(
            plan_for(&c, &PxeRequest::discover(MAC, 6)),
            Err(NoAnswer::NoBinaryForArch(6))
        );
        assert_eq!(
            plan_for(&c, &PxeRequest::discover(MAC, 15)),
            Err(NoAnswer::NoBinaryForArch(15))
        );
        let mut c32 = cfg();
        c32.boot_files.efi_ia32 = Some("ipxe-i386.efi".into());
        assert_eq!(
            served(&c32, &PxeRequest::discover(MAC, 6)),
            bin("ipxe-i386.efi")
        );
        assert_eq!(
            served(&c32, &PxeRequest::discover(MAC, 15)),
            bin("http://192.0.2.10:8080/ipxe/ipxe-i386.efi")
        );
        // Unknown and unsupported architectures.
        for arch in [1, 2, 8, 10, 12, 17, 18, 20, 22, 24, 41, 0xffff] {
            assert_eq!(
                plan_for(&c, &PxeRequest::discover(MAC, arch)),
                Err(NoAnswer::UnknownArch(arch)),
                "arch {arch}"
            );
        }
    }

    #[test]
    fn vendor_class_and_option_43_by_firmware() {
        let c = cfg();
        for (arch, vendor, opt43) in [
            (0, &b"PXEClient"[..], true),
            (7, b"PXEClient", false),
            (9, b"PXEClient", false),
            (11, b"PXEClient", false),
            (16, b"HTTPClient", false),
            (19, b"HTTPClient", false),
        ] {
            let p = plan_for(&c, &PxeRequest::discover(MAC, arch)).unwrap();
            assert_eq!(p.vendor_class(), vendor, "arch {arch}");
            assert_eq!(p.bios_discovery_control(), opt43, "arch {arch}");
        }
    }

    #[test]
    fn ipxe_gets_the_script_url() {
        let c = cfg();
        let script = Served::Script("http://192.0.2.10:8080/boot/52:54:00:ab:cd:ef.ipxe".into());
        // Our own build: every feature.
        let ours = PxeRequest::ipxe_discover(MAC, 7, &[0x13, 0x14, 0x15, 0x24]);
        assert_eq!(served(&c, &ours), script);
        let mut https = cfg();
        https.require_https = true;
        assert_eq!(served(&https, &ours), script);
        // BIOS iPXE too; a trailing slash on the base does not double.
        let mut slash = cfg();
        slash.boot_url_base.push('/');
        assert_eq!(
            served(&slash, &PxeRequest::ipxe_discover(MAC, 0, &[0x13])),
            script
        );
        // Option 175 alone (custom user class) is enough to recognise iPXE.
        let mut custom = PxeRequest::ipxe_discover(MAC, 7, &[0x13, 0x14]);
        custom.user_class = Some(b"bootfactory".to_vec());
        assert_eq!(served(&https, &custom), script);
    }

    #[test]
    fn foreign_ipxe_without_needed_features_gets_our_binary() {
        let c = cfg();
        let mut https = cfg();
        https.require_https = true;
        // Debian bookworm's iPXE: HTTP but no HTTPS.
        let no_https = PxeRequest::ipxe_discover(MAC, 7, &[0x13, 0x15, 0x24]);
        assert_eq!(
            served(&c, &no_https),
            Served::Script("http://192.0.2.10:8080/boot/52:54:00:ab:cd:ef.ipxe".into())
        );
        assert_eq!(served(&https, &no_https), Served::Binary("ipxe.efi".into()));
        // No HTTP at all: binary even without require_https.
        let tftp_only = PxeRequest::ipxe_discover(MAC, 0, &[0x15, 0x18]);
        assert_eq!(
            served(&c, &tftp_only),
            Served::Binary("undionly.kpxe".into())
        );
        // User class iPXE without option 175: features unknown, chain ours.
        let mut bare = PxeRequest::discover(MAC, 11);
        bare.user_class = Some(b"iPXE".to_vec());
        assert_eq!(served(&c, &bare), Served::Binary("ipxe-arm64.efi".into()));
    }

    #[test]
    fn classify_by_port_and_message_type() {
        let req = |r: PxeRequest| parse(&r.encode()).unwrap();
        let d = req(PxeRequest::discover(MAC, 7));
        assert_eq!(classify(Port::Dhcp, &d).unwrap().0, ReplyKind::Offer);
        assert_eq!(
            classify(Port::Proxy, &d).unwrap_err(),
            Ignored::MessageType(Some(1))
        );
        let r = req(PxeRequest::proxy_request(
            MAC,
            7,
            Ipv4Addr::new(192, 0, 2, 50),
        ));
        assert_eq!(classify(Port::Proxy, &r).unwrap().0, ReplyKind::Ack);
        assert_eq!(
            classify(Port::Dhcp, &r).unwrap_err(),
            Ignored::MessageType(Some(3)),
            "the REQUEST on 67 is the office DHCP server's"
        );
        let mut inform = PxeRequest::proxy_request(MAC, 7, Ipv4Addr::new(192, 0, 2, 50));
        inform.msg_type = 8;
        assert_eq!(
            classify(Port::Proxy, &req(inform)).unwrap().0,
            ReplyKind::Ack
        );
        let mut release = PxeRequest::discover(MAC, 7);
        release.msg_type = 7;
        assert_eq!(
            classify(Port::Dhcp, &req(release)).unwrap_err(),
            Ignored::MessageType(Some(7))
        );
        // Non-PXE and missing option 93.
        let mut plain = PxeRequest::discover(MAC, 7);
        plain.vendor_class = Some("android-dhcp-13".into());
        assert!(matches!(
            classify(Port::Dhcp, &req(plain)),
            Err(Ignored::NotPxe(NotPxe::VendorClass(_)))
        ));
        let mut no93 = PxeRequest::discover(MAC, 7);
        no93.arch = None;
        assert_eq!(
            classify(Port::Dhcp, &req(no93)).unwrap_err(),
            Ignored::NotPxe(NotPxe::NoArch)
        );
    }

    #[test]
    fn destinations() {
        let c = ProxyDhcpConfig {
            dhcp_port: 1067,
            client_port: 1068,
            ..cfg()
        };
        let src: SocketAddr = "192.0.2.77:1068".parse().unwrap();
        let dest = |port, r: PxeRequest| destination(&c, port, &parse(&r.encode()).unwrap(), src);
        // Plain DISCOVER from a client without an address: broadcast.
        assert_eq!(
            dest(Port::Dhcp, PxeRequest::discover(MAC, 7)),
            "255.255.255.255:1068".parse().unwrap()
        );
        // Relayed: unicast to the relay's DHCP port.
        let mut relayed = PxeRequest::discover(MAC, 7);
        relayed.giaddr = Ipv4Addr::new(10, 9, 8, 1);
        relayed.ciaddr = Ipv4Addr::new(10, 9, 8, 50);
        relayed.broadcast = false;
        assert_eq!(dest(Port::Dhcp, relayed), "10.9.8.1:1067".parse().unwrap());
        // Client with an address and no broadcast flag: unicast to it.
        let mut bound = PxeRequest::discover(MAC, 7);
        bound.ciaddr = Ipv4Addr::new(192, 0, 2, 50);
        bound.broadcast = false;
        assert_eq!(
            dest(Port::Dhcp, bound.clone()),
            "192.0.2.50:1068".parse().unwrap()
        );
        // ... unless it asks for broadcast.
        bound.broadcast = true;
        assert_eq!(
            dest(Port::Dhcp, bound),
            "255.255.255.255:1068".parse().unwrap()
        );
        // Port 4011: always back to the source.
        let mut r = PxeRequest::proxy_request(MAC, 7, Ipv4Addr::new(192, 0, 2, 50));
        r.giaddr = Ipv4Addr::new(10, 9, 8, 1);
        assert_eq!(dest(Port::Proxy, r), src);
    }
}
