//! TFTP: a minimal read-only client (RFC 1350, options RFC 2347/2348/2349).

use super::*;

pub(crate) struct TftpResult {
    pub(crate) bytes: u64,
    pub(crate) tsize: Option<u64>,
    pub(crate) blksize: usize,
    pub(crate) resends: u32,
}

pub(crate) fn tftp_ack(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, 4, b[0], b[1]]
}

/// Parses an OACK's `name\0value\0` pairs (names lowercased).
pub(crate) fn parse_oack(body: &[u8]) -> BTreeMap<String, String> {
    let parts: Vec<String> = body
        .split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).to_string())
        .collect();
    parts
        .chunks(2)
        .filter(|c| c.len() == 2 && !c[0].is_empty())
        .map(|c| (c[0].to_ascii_lowercase(), c[1].clone()))
        .collect()
}

/// Why a transfer failed: refused by the server's admission cap ("server busy", TFTP error 0
/// with that text: try again later), or anything else.
pub(crate) enum TftpError {
    Busy(String),
    Failed(String),
}

impl From<String> for TftpError {
    fn from(e: String) -> TftpError {
        TftpError::Failed(e)
    }
}

pub(crate) async fn tftp_get(server: SocketAddr, file: &str) -> Result<TftpResult, TftpError> {
    let sock = UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| format!("tftp socket: {e}"))?;
    let mut rrq = vec![0u8, 1];
    rrq.extend_from_slice(file.as_bytes());
    rrq.extend_from_slice(b"\0octet\0blksize\0");
    rrq.extend_from_slice(TFTP_BLKSIZE.to_string().as_bytes());
    rrq.extend_from_slice(b"\0tsize\x000\0");
    let mut last: Vec<u8> = rrq;
    let mut last_dest = server;
    sock.send_to(&last, last_dest)
        .await
        .map_err(|e| format!("tftp send: {e}"))?;
    let mut peer: Option<SocketAddr> = None;
    let mut blksize = 512usize;
    let mut tsize = None;
    let mut expected: u16 = 1;
    let mut bytes = 0u64;
    let mut resends = 0u32;
    let mut silent = 0u32;
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match tokio::time::timeout(TFTP_RETRY_AFTER, sock.recv_from(&mut buf)).await
        {
            Err(_) => {
                silent += 1;
                if silent > TFTP_RESENDS {
                    return Err(TftpError::Failed(format!(
                        "tftp {file}: no answer after {TFTP_RESENDS} resends ({bytes} bytes in)"
                    )));
                }
                resends += 1;
                sock.send_to(&last, last_dest)
                    .await
                    .map_err(|e| format!("tftp send: {e}"))?;
                continue;
            }
            Ok(r) => r.map_err(|e| format!("tftp receive: {e}"))?,
        };
        if n < 4 || from.ip() != server.ip() {
            continue;
        }
        if peer.is_some_and(|p| p != from) {
            // Another TID: RFC 1350 error 5, and carry on.
            let _ = sock.send_to(b"\0\x05\0\x05unknown TID\0", from).await;
            continue;
        }
        let pkt = &buf[..n];
        match u16::from_be_bytes([pkt[0], pkt[1]]) {
            // OACK (first, or again because our ACK 0 was lost).
            6 if expected == 1 => {
                let opts = parse_oack(&pkt[2..]);
                blksize = match opts.get("blksize") {
                    Some(b) => b
                        .parse()
                        .map_err(|_| format!("tftp {file}: OACK blksize {b:?}"))?,
                    None => 512,
                };
                if blksize > usize::from(TFTP_BLKSIZE) {
                    return Err(format!("tftp {file}: server granted blksize {blksize}").into());
                }
                tsize = opts.get("tsize").and_then(|t| t.parse().ok());
                peer = Some(from);
                last = tftp_ack(0).to_vec();
                last_dest = from;
                silent = 0;
                sock.send_to(&last, from)
                    .await
                    .map_err(|e| format!("tftp send: {e}"))?;
            }
            // DATA.
            3 => {
                let block = u16::from_be_bytes([pkt[2], pkt[3]]);
                if block != expected {
                    // A duplicate: our ACK was lost and the resend timer will repeat it.
                    continue;
                }
                peer = Some(from);
                let data = n - 4;
                bytes += data as u64;
                last = tftp_ack(block).to_vec();
                last_dest = from;
                silent = 0;
                sock.send_to(&last, from)
                    .await
                    .map_err(|e| format!("tftp send: {e}"))?;
                if data < blksize {
                    return Ok(TftpResult {
                        bytes,
                        tsize,
                        blksize,
                        resends,
                    });
                }
                expected = expected.wrapping_add(1);
            }
            5 => {
                let code = u16::from_be_bytes([pkt[2], pkt[3]]);
                let msg = String::from_utf8_lossy(&pkt[4..]);
                let msg = format!("tftp {file}: error {code} {}", msg.trim_end_matches('\0'));
                return Err(if code == 0 && msg.contains("busy") && expected == 1 {
                    TftpError::Busy(msg)
                } else {
                    TftpError::Failed(msg)
                });
            }
            _ => {}
        }
    }
}
