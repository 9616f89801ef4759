//! Listening socket and MTU-derived block size for the TFTP server.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use super::DEFAULT_MAX_BLOCK_SIZE;

/// IPv4 header (20) + UDP header (8) + TFTP DATA header (4).
const OVERHEAD: u32 = 32;
/// RFC 2348 bounds of `blksize`.
const MIN_BLOCK: u16 = 8;
const MAX_BLOCK: u16 = 65464;
/// `IFF_LOOPBACK` in `/sys/class/net/<if>/flags`.
const IFF_LOOPBACK: u32 = 0x8;

/// The largest TFTP block that fits one IPv4 datagram on a link with this MTU, clamped to
/// 512..=65464 (512 is the block size every client can fall back to).
pub fn block_size_for_mtu(mtu: u32) -> u16 {
    let block = mtu
        .saturating_sub(OVERHEAD)
        .clamp(512, u32::from(MAX_BLOCK));
    u16::try_from(block).unwrap_or(MAX_BLOCK)
}

/// What the interface looks like in sysfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkInfo {
    /// `mtu`, if readable.
    pub mtu: Option<u32>,
    /// `IFF_LOOPBACK` set.
    pub loopback: bool,
}

/// Reads MTU and loopback flag of `ifname` from `/sys/class/net`.
pub(crate) fn link_info(ifname: &str) -> LinkInfo {
    let base = std::path::Path::new("/sys/class/net").join(ifname);
    let read = |f: &str| std::fs::read_to_string(base.join(f)).ok();
    let mtu = read("mtu").and_then(|s| s.trim().parse().ok());
    let flags = read("flags").and_then(|s| {
        let s = s.trim();
        u32::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
    });
    LinkInfo {
        mtu,
        loopback: flags.is_some_and(|f| f & IFF_LOOPBACK != 0) || ifname == "lo",
    }
}

/// The block-size cap: the configured value (clamped to 8..=65464), else MTU − 32 for a real
/// interface with a known MTU, else [`DEFAULT_MAX_BLOCK_SIZE`].
pub(crate) fn effective_max_block_size(configured: Option<u16>, link: Option<LinkInfo>) -> u16 {
    if let Some(n) = configured {
        return n.clamp(MIN_BLOCK, MAX_BLOCK);
    }
    match link {
        Some(LinkInfo {
            mtu: Some(mtu),
            loopback: false,
        }) => block_size_for_mtu(mtu),
        _ => DEFAULT_MAX_BLOCK_SIZE,
    }
}

/// Checks an interface name before it is used in a sysfs path or `SO_BINDTODEVICE`.
pub(crate) fn validate_ifname(ifname: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !ifname.is_empty()
            && ifname.len() < 16
            && ifname != "."
            && ifname != ".."
            && !ifname.contains(['/', '\0'])
            && !ifname.chars().any(char::is_whitespace),
        "invalid interface name {ifname:?}"
    );
    Ok(())
}

/// Creates the listening UDP socket: optional `SO_BINDTODEVICE`, a large receive buffer, bind.
pub(crate) fn listen_socket(
    listen: SocketAddr,
    interface: Option<&str>,
) -> anyhow::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .map_err(|e| anyhow::anyhow!("creating the TFTP socket: {e}"))?;
    if let Some(ifname) = interface {
        validate_ifname(ifname)?;
        socket
            .bind_device(Some(ifname.as_bytes()))
            .map_err(|e| bind_device_error(ifname, &e))?;
    }
    // Best effort (capped by net.core.rmem_max without CAP_NET_ADMIN): a boot storm sends a
    // burst of read requests; a small buffer drops them.
    let got = crate::limits::grow_recv_buffer(&socket, crate::limits::UDP_RECV_BUFFER);
    crate::limits::warn_small_recv_buffer("tftp", got, crate::limits::UDP_RECV_BUFFER);
    socket
        .bind(&listen.into())
        .map_err(|e| bind_error(listen, &e))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The error for a failed `SO_BINDTODEVICE`.
pub(crate) fn bind_device_error(ifname: &str, e: &io::Error) -> anyhow::Error {
    match e.kind() {
        io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "TFTP: binding to interface {ifname} (SO_BINDTODEVICE) was refused: {e}; it needs \
             CAP_NET_RAW (run as root, or grant the capability, e.g. \
             AmbientCapabilities=CAP_NET_RAW in the systemd unit)"
        ),
        _ if e.raw_os_error() == Some(19) => {
            anyhow::anyhow!("TFTP: no such interface {ifname} (SO_BINDTODEVICE: {e})")
        }
        _ => anyhow::anyhow!("TFTP: binding to interface {ifname} (SO_BINDTODEVICE): {e}"),
    }
}

/// The error for a failed `bind`.
pub(crate) fn bind_error(listen: SocketAddr, e: &io::Error) -> anyhow::Error {
    match e.kind() {
        io::ErrorKind::PermissionDenied if listen.port() < 1024 => anyhow::anyhow!(
            "TFTP: binding UDP {listen} was refused: {e}; ports below 1024 need \
             CAP_NET_BIND_SERVICE (run as root, grant the capability, e.g. \
             AmbientCapabilities=CAP_NET_BIND_SERVICE in the systemd unit, or lower \
             net.ipv4.ip_unprivileged_port_start)"
        ),
        io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "TFTP: UDP {listen} is already in use (another TFTP server such as dnsmasq or \
             tftpd-hpa?): {e}"
        ),
        io::ErrorKind::AddrNotAvailable => {
            anyhow::anyhow!("TFTP: {} is not an address of this host: {e}", listen.ip())
        }
        _ => anyhow::anyhow!("TFTP: binding UDP {listen}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_to_block_size() {
        assert_eq!(block_size_for_mtu(1500), 1468);
        assert_eq!(block_size_for_mtu(9000), 8968);
        assert_eq!(block_size_for_mtu(1420), 1388);
        assert_eq!(block_size_for_mtu(1280), 1248);
        assert_eq!(block_size_for_mtu(576), 544);
        assert_eq!(block_size_for_mtu(500), 512);
        assert_eq!(block_size_for_mtu(0), 512);
        assert_eq!(block_size_for_mtu(65536), 65464);
        assert_eq!(block_size_for_mtu(u32::MAX), 65464);
    }

    #[test]
    fn effective_cap() {
        let eth = |mtu| {
            Some(LinkInfo {
                mtu: Some(mtu),
                loopback: false,
            })
        };
        assert_eq!(effective_max_block_size(None, None), 1468);
        assert_eq!(effective_max_block_size(None, eth(1500)), 1468);
        assert_eq!(effective_max_block_size(None, eth(9000)), 8968);
        assert_eq!(effective_max_block_size(None, eth(1420)), 1388);
        let lo = Some(LinkInfo {
            mtu: Some(65536),
            loopback: true,
        });
        assert_eq!(effective_max_block_size(None, lo), 1468);
        let unknown = Some(LinkInfo {
            mtu: None,
            loopback: false,
        });
        assert_eq!(effective_max_block_size(None, unknown), 1468);
        assert_eq!(effective_max_block_size(Some(512), eth(9000)), 512);
        assert_eq!(effective_max_block_size(Some(8192), lo), 8192);
        assert_eq!(effective_max_block_size(Some(0), None), 8);
        assert_eq!(effective_max_block_size(Some(65535), None), 65464);
    }

    #[test]
    fn loopback_link_info() {
        let lo = link_info("lo");
        assert!(lo.loopback);
        if std::path::Path::new("/sys/class/net/lo/mtu").exists() {
            assert!(lo.mtu.is_some());
        }
        let none = link_info("bf-no-such-if0");
        assert_eq!(none.mtu, None);
        assert!(!none.loopback);
    }

    #[test]
    fn interface_names() {
        for ok in ["eth0", "enp3s0f1", "br-lan", "lo", "veth.10"] {
            validate_ifname(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "../eth0",
            "a/b",
            "a b",
            "abcdefghijklmnop",
            "x\0",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_messages_name_capabilities() {
        let eperm = io::Error::from_raw_os_error(1);
        let msg = bind_device_error("eth0", &eperm).to_string();
        assert!(msg.contains("CAP_NET_RAW") && msg.contains("eth0"), "{msg}");
        let enodev = io::Error::from_raw_os_error(19);
        let msg = bind_device_error("nope0", &enodev).to_string();
        assert!(msg.contains("no such interface nope0"), "{msg}");

        let eacces = io::Error::from_raw_os_error(13);
        let msg = bind_error("0.0.0.0:69".parse().unwrap(), &eacces).to_string();
        assert!(msg.contains("CAP_NET_BIND_SERVICE"), "{msg}");
        let msg = bind_error("0.0.0.0:6969".parse().unwrap(), &eacces).to_string();
        assert!(!msg.contains("CAP_NET_BIND_SERVICE"), "{msg}");
        let inuse = io::Error::from(io::ErrorKind::AddrInUse);
        let msg = bind_error("127.0.0.1:69".parse().unwrap(), &inuse).to_string();
        assert!(msg.contains("already in use"), "{msg}");
    }

    #[test]
    fn listens_on_loopback_with_device() {
        let s = listen_socket("127.0.0.1:0".parse().unwrap(), None).unwrap();
        assert!(s.local_addr().unwrap().port() != 0);
        // Binding to `lo` is allowed unprivileged on Linux >= 5.7 and as root everywhere.
        match listen_socket("127.0.0.1:0".parse().unwrap(), Some("lo")) {
            Ok(s) => assert!(s.local_addr().unwrap().port() != 0),
            Err(e) => assert!(e.to_string().contains("CAP_NET_RAW"), "{e}"),
        }
        let e = listen_socket("127.0.0.1:0".parse().unwrap(), Some("bf-no-such0")).unwrap_err();
        assert!(e.to_string().contains("no such interface"), "{e}");
    }
}
