//! Parsing a BOOTREQUEST into a [`Request`] (a bounds-checked reader of the fixed header and the
//! options the responder uses) and a PXE client's [`ClientInfo`].
//!
//! The parser is deliberately ours rather than a general DHCP decoder: every length is checked
//! against the datagram, repeated options are concatenated (RFC 3396), option overload (52) is
//! honoured, and an option that overruns the packet or has an impossible length for what we read
//! from it makes the whole packet [`Malformed`] instead of being silently skipped.

use std::net::Ipv4Addr;

/// The DHCP magic cookie that starts the options (RFC 2131).
pub(crate) const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Fixed BOOTP header plus magic cookie.
pub(crate) const OPTIONS_START: usize = 240;

const OPT_PAD: u8 = 0;
const OPT_END: u8 = 255;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_OVERLOAD: u8 = 52;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMETER_LIST: u8 = 55;
const OPT_MAX_SIZE: u8 = 57;
const OPT_CLIENT_ID: u8 = 61;
const OPT_RELAY_INFO: u8 = 82;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_VENDOR_CLASS: u8 = 60;
const OPT_USER_CLASS: u8 = 77;
const OPT_CLIENT_ARCH: u8 = 93;
const OPT_MACHINE_ID: u8 = 97;
const OPT_ETHERBOOT: u8 = 175;

/// The options kept from a request; everything else is length-checked and skipped.
const KEPT: [u8; 13] = [
    OPT_REQUESTED_IP,
    OPT_SERVER_ID,
    OPT_PARAMETER_LIST,
    OPT_MAX_SIZE,
    OPT_CLIENT_ID,
    OPT_RELAY_INFO,
    OPT_OVERLOAD,
    OPT_MESSAGE_TYPE,
    OPT_VENDOR_CLASS,
    OPT_USER_CLASS,
    OPT_CLIENT_ARCH,
    OPT_MACHINE_ID,
    OPT_ETHERBOOT,
];

/// DHCPDISCOVER.
pub(crate) const DHCPDISCOVER: u8 = 1;
/// DHCPREQUEST.
pub(crate) const DHCPREQUEST: u8 = 3;
/// DHCPDECLINE.
pub(crate) const DHCPDECLINE: u8 = 4;
/// DHCPRELEASE.
pub(crate) const DHCPRELEASE: u8 = 7;
/// DHCPINFORM.
pub(crate) const DHCPINFORM: u8 = 8;

/// iPXE feature codes (sub-options of option 175, `ipxe/ipxe:src/include/ipxe/features.h`).
pub(crate) mod feature {
    /// HTTP download protocol.
    pub const HTTP: u8 = 0x13;
    /// HTTPS download protocol.
    pub const HTTPS: u8 = 0x14;
}

/// Why a datagram was dropped as malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Malformed {
    /// Shorter than the 240-byte header plus magic cookie.
    #[error("truncated: {0} bytes, a BOOTP header with magic cookie needs 240")]
    Truncated(usize),
    /// `op` is not 1 (BOOTREQUEST).
    #[error("op {0} is not BOOTREQUEST")]
    NotBootRequest(u8),
    /// Ethernet hardware type with a hardware address length other than 6.
    #[error("Ethernet hardware address length {0} (must be 6)")]
    BadHlen(u8),
    /// A hardware address length beyond the 16-byte `chaddr` field.
    #[error("hardware address length {0} exceeds chaddr")]
    HlenTooLong(u8),
    /// The magic cookie is not 99.130.83.99.
    #[error("no DHCP magic cookie")]
    BadMagic,
    /// An option's length byte is missing or its data runs past the end of its area.
    #[error("option {0} overruns the packet")]
    OptionOverrun(u8),
    /// An option whose length cannot be right for its type.
    #[error("option {code} has invalid length {len}")]
    BadOptionLength {
        /// Option code.
        code: u8,
        /// Length found (after RFC 3396 concatenation).
        len: usize,
    },
    /// Option 52 (overload) with a value other than 1, 2 or 3.
    #[error("option overload value {0}")]
    BadOverload(u8),
    /// Option 175's encapsulated sub-options overrun it.
    #[error("option 175 encapsulation is malformed")]
    BadEncapsulation,
}

/// Why a well-formed request is not from a PXE/HTTP-boot client we answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NotPxe {
    /// Not Ethernet (`htype` ≠ 1): no 6-byte MAC to key on.
    #[error("hardware type {0} is not Ethernet")]
    NotEthernet(u8),
    /// No option 60.
    #[error("no vendor class (option 60)")]
    NoVendorClass,
    /// Option 60 starts with neither `PXEClient` nor `HTTPClient`.
    #[error("vendor class {0:?} is not PXEClient/HTTPClient")]
    VendorClass(String),
    /// No option 93.
    #[error("no client architecture (option 93)")]
    NoArch,
}

/// iPXE build features announced in option 175, as a set of sub-option codes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IpxeFeatures([u64; 4]);

impl IpxeFeatures {
    /// Whether sub-option `code` is present.
    pub(crate) fn has(&self, code: u8) -> bool {
        self.0[usize::from(code / 64)] & (1 << (code % 64)) != 0
    }

    fn insert(&mut self, code: u8) {
        self.0[usize::from(code / 64)] |= 1 << (code % 64);
    }

    /// Parses option 175's encapsulated options (pad and end allowed).
    fn parse(data: &[u8]) -> Result<IpxeFeatures, Malformed> {
        let mut set = IpxeFeatures::default();
        let mut i = 0;
        while i < data.len() {
            let code = data[i];
            match code {
                OPT_PAD => i += 1,
                OPT_END => break,
                _ => {
                    let len = usize::from(*data.get(i + 1).ok_or(Malformed::BadEncapsulation)?);
                    if i + 2 + len > data.len() {
                        return Err(Malformed::BadEncapsulation);
                    }
                    set.insert(code);
                    i += 2 + len;
                }
            }
        }
        Ok(set)
    }
}

/// The parts of a BOOTREQUEST the responder uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// Transaction ID.
    pub xid: u32,
    /// BOOTP flags (bit 15: broadcast).
    pub flags: u16,
    /// Client address (non-zero once the client has one).
    pub ciaddr: Ipv4Addr,
    /// Relay agent address (non-zero when relayed).
    pub giaddr: Ipv4Addr,
    /// Hardware type (1 = Ethernet).
    pub htype: u8,
    /// Hardware address length.
    pub hlen: u8,
    /// Client hardware address field (first `hlen` bytes meaningful).
    pub chaddr: [u8; 16],
    /// Option 53.
    pub msg_type: Option<u8>,
    /// Option 60.
    pub vendor_class: Option<Vec<u8>>,
    /// Option 77, raw.
    pub user_class: Option<Vec<u8>>,
    /// First architecture in option 93.
    pub arch: Option<u16>,
    /// Option 97, raw (echoed in the reply).
    pub machine_id: Option<Vec<u8>>,
    /// Option 175's feature set, when present.
    pub ipxe_features: Option<IpxeFeatures>,
    /// Option 50 (requested IP address).
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54 (server identifier).
    pub server_id: Option<Ipv4Addr>,
    /// Option 55 (parameter request list), raw codes.
    pub parameter_list: Option<Vec<u8>>,
    /// Option 57 (maximum DHCP message size).
    pub max_size: Option<u16>,
    /// Option 61 (client identifier), raw.
    pub client_id: Option<Vec<u8>>,
    /// Option 82 (relay agent information), raw: echoed unchanged (RFC 3046).
    pub relay_info: Option<Vec<u8>>,
}

impl Request {
    /// True when the broadcast flag is set.
    pub(crate) fn broadcast(&self) -> bool {
        self.flags & 0x8000 != 0
    }

    /// The 6-byte MAC (only meaningful for Ethernet).
    pub(crate) fn mac(&self) -> [u8; 6] {
        let mut mac = [0; 6];
        mac.copy_from_slice(&self.chaddr[..6]);
        mac
    }

    /// The client facts for a PXE or UEFI HTTP-boot client, or why this is not one.
    pub(crate) fn client_info(&self) -> Result<ClientInfo, NotPxe> {
        if self.htype != 1 {
            return Err(NotPxe::NotEthernet(self.htype));
        }
        let vendor = self.vendor_class.as_deref().ok_or(NotPxe::NoVendorClass)?;
        let pxe = vendor.starts_with(b"PXEClient");
        let http = vendor.starts_with(b"HTTPClient");
        if !pxe && !http {
            return Err(NotPxe::VendorClass(
                String::from_utf8_lossy(vendor).into_owned(),
            ));
        }
        let arch = self.arch.ok_or(NotPxe::NoArch)?;
        let user_class = self.user_class.as_deref().map(user_class_string);
        let ipxe = user_class.as_deref() == Some("iPXE") || self.ipxe_features.is_some();
        Ok(ClientInfo {
            mac: self.mac(),
            arch,
            uuid: self.machine_id.as_deref().and_then(format_uuid),
            client_ip: (!self.ciaddr.is_unspecified()).then_some(self.ciaddr),
            relay: (!self.giaddr.is_unspecified()).then_some(self.giaddr),
            vendor_class: String::from_utf8_lossy(vendor).into_owned(),
            user_class,
            ipxe,
            http_boot: http || matches!(arch, 15 | 16 | 19),
        })
    }
}

/// What the responder knows about a PXE or UEFI HTTP-boot client (handed to
/// [`ClientPolicy`](super::ClientPolicy)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClientInfo {
    /// Hardware address (`chaddr`).
    pub mac: [u8; 6],
    /// Client system architecture (first value of option 93): 0 BIOS, 6 ia32 UEFI, 7/9 x86-64
    /// UEFI, 11 arm64 UEFI, 15/16/19 UEFI HTTP boot, ...
    pub arch: u16,
    /// Option 97 machine GUID as `8-4-4-4-12` lowercase hex, bytes in wire order; `None` when
    /// absent or not a 17-byte type-0 identifier. (iPXE sends RFC 4122 byte order; EDK2 PXE
    /// sends the SMBIOS layout, whose first three fields are little-endian.)
    pub uuid: Option<String>,
    /// `ciaddr`, when non-zero.
    pub client_ip: Option<Ipv4Addr>,
    /// `giaddr` (the relay agent), when non-zero.
    pub relay: Option<Ipv4Addr>,
    /// Option 60 as sent, e.g. `PXEClient:Arch:00007:UNDI:003016`.
    pub vendor_class: String,
    /// Option 77: iPXE's raw string (`iPXE`), or RFC 3004 classes joined with `,`.
    pub user_class: Option<String>,
    /// An iPXE client: user class `iPXE` or option 175 present.
    pub ipxe: bool,
    /// A UEFI HTTP-boot client: option 60 `HTTPClient…` or arch 15/16/19.
    pub http_boot: bool,
}

/// Option 77 as text: RFC 3004 (length-prefixed classes) when it parses as such, else the raw
/// bytes (iPXE sends a bare `iPXE`).
fn user_class_string(raw: &[u8]) -> String {
    let mut classes = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let len = usize::from(raw[i]);
        if len == 0 || i + 1 + len > raw.len() {
            return String::from_utf8_lossy(raw).into_owned();
        }
        classes.push(String::from_utf8_lossy(&raw[i + 1..i + 1 + len]).into_owned());
        i += 1 + len;
    }
    if classes.is_empty() {
        return String::new();
    }
    classes.join(",")
}

/// Option 97 type 0 (GUID) as `8-4-4-4-12` lowercase hex.
fn format_uuid(raw: &[u8]) -> Option<String> {
    if raw.len() != 17 || raw[0] != 0 {
        return None;
    }
    let mut s = String::with_capacity(36);
    for (i, b) in raw[1..].iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    Some(s)
}

/// Options collected from the request, concatenated per code (RFC 3396).
#[derive(Default)]
struct Collected {
    values: [Option<Vec<u8>>; KEPT.len()],
}

impl Collected {
    fn slot(code: u8) -> Option<usize> {
        KEPT.iter().position(|c| *c == code)
    }

    fn get(&self, code: u8) -> Option<&[u8]> {
        Self::slot(code).and_then(|i| self.values[i].as_deref())
    }

    fn take(&mut self, code: u8) -> Option<Vec<u8>> {
        Self::slot(code).and_then(|i| self.values[i].take())
    }

    /// Walks one option area up to its End option (or its end).
    fn walk(&mut self, area: &[u8]) -> Result<(), Malformed> {
        let mut i = 0;
        while i < area.len() {
            let code = area[i];
            match code {
                OPT_PAD => i += 1,
                OPT_END => return Ok(()),
                _ => {
                    let len = usize::from(*area.get(i + 1).ok_or(Malformed::OptionOverrun(code))?);
                    let data = area
                        .get(i + 2..i + 2 + len)
                        .ok_or(Malformed::OptionOverrun(code))?;
                    if let Some(slot) = Self::slot(code) {
                        self.values[slot]
                            .get_or_insert_with(Vec::new)
                            .extend_from_slice(data);
                    }
                    i += 2 + len;
                }
            }
        }
        Ok(())
    }
}

/// Parses a datagram received by the responder.
pub(crate) fn parse(buf: &[u8]) -> Result<Request, Malformed> {
    if buf.len() < OPTIONS_START {
        return Err(Malformed::Truncated(buf.len()));
    }
    if buf[0] != 1 {
        return Err(Malformed::NotBootRequest(buf[0]));
    }
    let htype = buf[1];
    let hlen = buf[2];
    if htype == 1 && hlen != 6 {
        return Err(Malformed::BadHlen(hlen));
    }
    if hlen > 16 {
        return Err(Malformed::HlenTooLong(hlen));
    }
    if buf[236..240] != MAGIC_COOKIE {
        return Err(Malformed::BadMagic);
    }
    let u32_at = |o: usize| u32::from_be_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
    let mut chaddr = [0u8; 16];
    chaddr.copy_from_slice(&buf[28..44]);

    let mut opts = Collected::default();
    opts.walk(&buf[OPTIONS_START..])?;
    if let Some(overload) = opts.get(OPT_OVERLOAD) {
        let [value] = overload else {
            return Err(Malformed::BadOptionLength {
                code: OPT_OVERLOAD,
                len: overload.len(),
            });
        };
        let value = *value;
        if !(1..=3).contains(&value) {
            return Err(Malformed::BadOverload(value));
        }
        // RFC 3396 order: options, then `file`, then `sname`.
        if value & 1 != 0 {
            opts.walk(&buf[108..236])?;
        }
        if value & 2 != 0 {
            opts.walk(&buf[44..108])?;
        }
    }

    let msg_type = match opts.get(OPT_MESSAGE_TYPE) {
        None => None,
        Some([t]) => Some(*t),
        Some(other) => {
            return Err(Malformed::BadOptionLength {
                code: OPT_MESSAGE_TYPE,
                len: other.len(),
            });
        }
    };
    let arch = match opts.get(OPT_CLIENT_ARCH) {
        None => None,
        Some(a) if a.len() >= 2 && a.len() % 2 == 0 => Some(u16::from_be_bytes([a[0], a[1]])),
        Some(a) => {
            return Err(Malformed::BadOptionLength {
                code: OPT_CLIENT_ARCH,
                len: a.len(),
            });
        }
    };
    let ipxe_features = opts
        .get(OPT_ETHERBOOT)
        .map(IpxeFeatures::parse)
        .transpose()?;

    let addr = |opts: &Collected, code: u8| -> Result<Option<Ipv4Addr>, Malformed> {
        match opts.get(code) {
            None => Ok(None),
            Some(&[a, b, c, d]) => Ok(Some(Ipv4Addr::new(a, b, c, d))),
            Some(other) => Err(Malformed::BadOptionLength {
                code,
                len: other.len(),
            }),
        }
    };
    let requested_ip = addr(&opts, OPT_REQUESTED_IP)?;
    let server_id = addr(&opts, OPT_SERVER_ID)?;
    let max_size = match opts.get(OPT_MAX_SIZE) {
        None => None,
        Some(&[a, b]) => Some(u16::from_be_bytes([a, b])),
        Some(other) => {
            return Err(Malformed::BadOptionLength {
                code: OPT_MAX_SIZE,
                len: other.len(),
            });
        }
    };
    // RFC 2132 §9.14: at least two bytes (a type and one byte of identifier).
    if let Some(id) = opts.get(OPT_CLIENT_ID)
        && id.len() < 2
    {
        return Err(Malformed::BadOptionLength {
            code: OPT_CLIENT_ID,
            len: id.len(),
        });
    }

    Ok(Request {
        requested_ip,
        server_id,
        max_size,
        parameter_list: opts.take(OPT_PARAMETER_LIST),
        client_id: opts.take(OPT_CLIENT_ID),
        relay_info: opts.take(OPT_RELAY_INFO),
        xid: u32_at(4),
        flags: u16::from_be_bytes([buf[10], buf[11]]),
        ciaddr: Ipv4Addr::from(u32_at(12)),
        giaddr: Ipv4Addr::from(u32_at(24)),
        htype,
        hlen,
        chaddr,
        msg_type,
        vendor_class: opts.take(OPT_VENDOR_CLASS),
        user_class: opts.take(OPT_USER_CLASS),
        arch,
        machine_id: opts.take(OPT_MACHINE_ID),
        ipxe_features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::testkit::PxeRequest;

    fn base() -> PxeRequest {
        PxeRequest::discover([0x52, 0x54, 0, 0x12, 0x34, 0x56], 7)
    }

    #[test]
    fn parses_a_pxe_discover() {
        let mut r = base();
        r.uuid = Some([
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ]);
        let req = parse(&r.encode()).unwrap();
        assert_eq!(req.msg_type, Some(DHCPDISCOVER));
        assert_eq!(req.arch, Some(7));
        assert_eq!(req.xid, r.xid);
        let info = req.client_info().unwrap();
        assert_eq!(info.mac, [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(info.arch, 7);
        assert_eq!(
            info.uuid.as_deref(),
            Some("01234567-89ab-cdef-0123-456789abcdef")
        );
        assert_eq!(info.vendor_class, "PXEClient:Arch:00007:UNDI:003016");
        assert!(!info.ipxe);
        assert!(!info.http_boot);
        assert_eq!(info.client_ip, None);
        assert_eq!(info.relay, None);
    }

    #[test]
    fn user_class_raw_and_rfc3004() {
        assert_eq!(user_class_string(b"iPXE"), "iPXE");
        assert_eq!(user_class_string(b"\x04iPXE"), "iPXE");
        assert_eq!(user_class_string(b"\x01a\x02bc"), "a,bc");
        assert_eq!(user_class_string(b"\x05ab"), "\u{5}ab");
    }

    #[test]
    fn ipxe_detection_by_user_class_or_option_175() {
        let mut r = base();
        r.user_class = Some(b"iPXE".to_vec());
        assert!(parse(&r.encode()).unwrap().client_info().unwrap().ipxe);
        let mut r = base();
        r.ipxe_features = Some(vec![0x13, 0x14]);
        let req = parse(&r.encode()).unwrap();
        let f = req.ipxe_features.unwrap();
        assert!(f.has(feature::HTTP) && f.has(feature::HTTPS) && !f.has(0x24));
        assert!(req.client_info().unwrap().ipxe);
        let mut r = base();
        r.user_class = Some(b"bootfactory".to_vec());
        assert!(!parse(&r.encode()).unwrap().client_info().unwrap().ipxe);
    }

    #[test]
    fn uuid_only_for_17_byte_type_0() {
        assert_eq!(format_uuid(&[0; 16]), None);
        let mut t1 = [0u8; 17];
        t1[0] = 1;
        assert_eq!(format_uuid(&t1), None);
        assert_eq!(
            format_uuid(&[0; 17]).as_deref(),
            Some("00000000-0000-0000-0000-000000000000")
        );
    }

    #[test]
    fn not_pxe_reasons() {
        let mut r = base();
        r.vendor_class = Some("MSFT 5.0".into());
        assert!(matches!(
            parse(&r.encode()).unwrap().client_info(),
            Err(NotPxe::VendorClass(v)) if v == "MSFT 5.0"
        ));
        let mut r = base();
        r.vendor_class = None;
        assert_eq!(
            parse(&r.encode()).unwrap().client_info(),
            Err(NotPxe::NoVendorClass)
        );
        let mut r = base();
        r.arch = None;
        assert_eq!(
            parse(&r.encode()).unwrap().client_info(),
            Err(NotPxe::NoArch)
        );
        let mut bytes = base().encode();
        bytes[1] = 6; // IEEE 802
        assert_eq!(
            parse(&bytes).unwrap().client_info(),
            Err(NotPxe::NotEthernet(6))
        );
        let mut r = base();
        r.vendor_class = Some("HTTPClient:Arch:00016:UNDI:003001".into());
        r.arch = Some(16);
        let info = parse(&r.encode()).unwrap().client_info().unwrap();
        assert!(info.http_boot);
    }

    #[test]
    fn malformed_headers() {
        let good = base().encode();
        assert_eq!(parse(&good[..239]), Err(Malformed::Truncated(239)));
        assert_eq!(parse(&[]), Err(Malformed::Truncated(0)));
        let mut b = good.clone();
        b[0] = 2;
        assert_eq!(parse(&b), Err(Malformed::NotBootRequest(2)));
        let mut b = good.clone();
        b[2] = 8;
        assert_eq!(parse(&b), Err(Malformed::BadHlen(8)));
        let mut b = good.clone();
        b[1] = 32;
        b[2] = 20;
        assert_eq!(parse(&b), Err(Malformed::HlenTooLong(20)));
        let mut b = good.clone();
        b[236] = 0;
        assert_eq!(parse(&b), Err(Malformed::BadMagic));
    }

    fn with_options(opts: &[u8]) -> Vec<u8> {
        let mut b = base().encode();
        b.truncate(OPTIONS_START);
        b.extend_from_slice(opts);
        b
    }

    #[test]
    fn malformed_options() {
        // Length byte missing.
        assert_eq!(
            parse(&with_options(&[53])),
            Err(Malformed::OptionOverrun(53))
        );
        // Data past the end.
        assert_eq!(
            parse(&with_options(&[60, 9, b'P', b'X'])),
            Err(Malformed::OptionOverrun(60))
        );
        assert_eq!(
            parse(&with_options(&[53, 2, 1, 1, 255])),
            Err(Malformed::BadOptionLength { code: 53, len: 2 })
        );
        assert_eq!(
            parse(&with_options(&[93, 3, 0, 7, 0, 255])),
            Err(Malformed::BadOptionLength { code: 93, len: 3 })
        );
        assert_eq!(
            parse(&with_options(&[93, 0, 255])),
            Err(Malformed::BadOptionLength { code: 93, len: 0 })
        );
        assert_eq!(
            parse(&with_options(&[52, 1, 4, 255])),
            Err(Malformed::BadOverload(4))
        );
        assert_eq!(
            parse(&with_options(&[175, 3, 0x13, 5, 1, 255])),
            Err(Malformed::BadEncapsulation)
        );
    }

    #[test]
    fn options_concatenate_pad_end_and_overload() {
        // Option 60 split in two (RFC 3396), pads between, a list of two archs, no End.
        let mut opts = vec![53, 1, 1, 60, 4];
        opts.extend_from_slice(b"PXEC");
        opts.extend_from_slice(&[0, 0, 93, 4, 0, 11, 0, 7, 60, 5]);
        opts.extend_from_slice(b"lient");
        let req = parse(&with_options(&opts)).unwrap();
        assert_eq!(req.vendor_class.as_deref(), Some(&b"PXEClient"[..]));
        assert_eq!(req.arch, Some(11));
        // Everything after End is ignored, even garbage.
        let req = parse(&with_options(&[53, 1, 1, 255, 60, 200])).unwrap();
        assert_eq!(req.msg_type, Some(1));
        assert_eq!(req.vendor_class, None);
        // Overload: option 93 lives in the `file` field.
        let mut b = with_options(&[53, 1, 1, 52, 1, 1, 255]);
        b[108..114].copy_from_slice(&[93, 2, 0, 9, 255, 0]);
        assert_eq!(parse(&b).unwrap().arch, Some(9));
        // Without the overload option the file field is not options.
        let mut b = with_options(&[53, 1, 1, 255]);
        b[108..114].copy_from_slice(&[93, 2, 0, 9, 255, 0]);
        assert_eq!(parse(&b).unwrap().arch, None);
    }
}
