//! TFTP packets as RFC 1350 §5 and the option extension (RFC 2347) lay them out, parsed from
//! untrusted bytes and encoded into caller-owned buffers.
//!
//! ```text
//!  RRQ/WRQ  | 01/02 | filename | 0 | mode | 0 | opt1 | 0 | value1 | 0 | …   (RFC 1350, 2347)
//!  DATA     | 03 | block # | 0–blksize bytes                                 (RFC 1350)
//!  ACK      | 04 | block #                                                   (RFC 1350)
//!  ERROR    | 05 | error code | message | 0                                  (RFC 1350)
//!  OACK     | 06 | opt1 | 0 | value1 | 0 | …                                 (RFC 2347)
//! ```
//!
//! Opcodes, block numbers and error codes are 16-bit big-endian. Strings are NUL-terminated
//! and compared case-insensitively where the RFCs say so (mode, option names).
//!
//! The server only ever *receives* requests, ACKs and ERRORs, and *sends* DATA, OACK and ERROR,
//! so [`parse`] decodes what a client may send and [`Packet::Other`] stands for a well-formed
//! header with an opcode a server has no use for (DATA, OACK). Option values are checked as
//! the option's RFC says; an option whose value is out of range or not a number is left out of
//! [`RequestOptions`] and therefore never acknowledged (RFC 2347: the server omits options it
//! does not accept) — except a `blksize` above 65464, which is capped to it (RFC 2348 allows
//! either; tftp-hpa caps) — unknown options are ignored, and a repeated option keeps its first
//! value.

use std::fmt;

/// Opcodes (RFC 1350 §5, RFC 2347).
pub const RRQ: u16 = 1;
/// Write request.
pub const WRQ: u16 = 2;
/// Data block.
pub const DATA: u16 = 3;
/// Acknowledgement.
pub const ACK: u16 = 4;
/// Error.
pub const ERROR: u16 = 5;
/// Option acknowledgement.
pub const OACK: u16 = 6;

/// Length of a DATA header: opcode and block number.
pub const DATA_HEADER_LEN: usize = 4;

/// Block size without a `blksize` option (RFC 1350).
pub const DEFAULT_BLOCK_SIZE: u16 = 512;
/// RFC 2348 range of `blksize`.
pub const MIN_BLOCK_SIZE: u16 = 8;
/// Largest `blksize` RFC 2348 allows (65535 − 20 IP − 8 UDP − 4 TFTP − 39 for IP options).
pub const MAX_BLOCK_SIZE: u16 = 65464;

/// Error codes (RFC 1350 appendix, RFC 2347 for 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: not defined, see the message.
    NotDefined,
    /// 1: file not found.
    FileNotFound,
    /// 2: access violation.
    AccessViolation,
    /// 4: illegal TFTP operation.
    IllegalOperation,
    /// 5: unknown transfer ID.
    UnknownTid,
}

impl ErrorCode {
    /// The code on the wire.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTid => 5,
        }
    }
}

/// Transfer mode of a request (RFC 1350 §1; case-insensitive on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `octet`: raw 8-bit bytes.
    Octet,
    /// `netascii`: ASCII with CR LF line ends.
    Netascii,
    /// `mail`: obsolete, for WRQ only.
    Mail,
}

impl Mode {
    /// The mode's name as RFC 1350 spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
            Mode::Mail => "mail",
        }
    }
}

/// The options of a request this server understands, each already range-checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// `blksize` (RFC 2348), 8..=65464 (larger values capped to 65464).
    pub blksize: Option<u16>,
    /// `tsize` (RFC 2349); in a read request the client sends 0.
    pub tsize: Option<u64>,
    /// `timeout` (RFC 2349), 1..=255 seconds.
    pub timeout: Option<u8>,
    /// `windowsize` (RFC 7440), 1..=65535.
    pub windowsize: Option<u16>,
}

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// True for RRQ, false for WRQ.
    pub read: bool,
    /// The file name's bytes, as sent (not necessarily UTF-8).
    pub filename: &'a [u8],
    /// The transfer mode.
    pub mode: Mode,
    /// The recognised options.
    pub options: RequestOptions,
}

/// A packet a client may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// RRQ or WRQ.
    Request(Request<'a>),
    /// ACK of a block number.
    Ack(u16),
    /// ERROR with its code and message (bytes up to the NUL, not necessarily UTF-8).
    Error {
        /// The error code.
        code: u16,
        /// The message.
        message: &'a [u8],
    },
    /// A well-formed DATA or OACK: nothing a read-only server acts on.
    Other(u16),
}

/// Why a datagram is not a packet we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Shorter than an opcode plus what the opcode needs.
    #[error("packet too short")]
    Truncated,
    /// Opcode 0 or above 6.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// A request's file name or mode, or an ERROR's message, lacks its NUL.
    #[error("string without its terminating NUL")]
    Unterminated,
    /// A request's mode is not netascii, octet or mail.
    #[error("unknown transfer mode")]
    UnknownMode,
    /// An ACK with bytes after the block number.
    #[error("trailing bytes after the block number")]
    Trailing,
}

/// Decodes one datagram from a client.
///
/// Requests: the file name and the mode must be NUL-terminated. Options follow as
/// `name NUL value NUL` pairs; a final pair without its NULs (some PXE ROMs pad requests with
/// extra NULs) ends the option list without failing the request.
pub fn parse(b: &[u8]) -> Result<Packet<'_>, ParseError> {
    let (op, rest) = split_u16(b).ok_or(ParseError::Truncated)?;
    match op {
        RRQ | WRQ => parse_request(op == RRQ, rest).map(Packet::Request),
        ACK => {
            let (block, rest) = split_u16(rest).ok_or(ParseError::Truncated)?;
            if rest.is_empty() {
                Ok(Packet::Ack(block))
            } else {
                Err(ParseError::Trailing)
            }
        }
        ERROR => {
            let (code, rest) = split_u16(rest).ok_or(ParseError::Truncated)?;
            // RFC 1350 wants the NUL; a client that leaves it out still means to abort.
            let message = match rest.iter().position(|&c| c == 0) {
                Some(end) => &rest[..end],
                None => rest,
            };
            Ok(Packet::Error { code, message })
        }
        DATA => split_u16(rest)
            .map(|_| Packet::Other(op))
            .ok_or(ParseError::Truncated),
        OACK => Ok(Packet::Other(op)),
        other => Err(ParseError::UnknownOpcode(other)),
    }
}

fn split_u16(b: &[u8]) -> Option<(u16, &[u8])> {
    let (head, rest) = b.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*head), rest))
}

fn split_cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|&c| c == 0)?;
    Some((&b[..end], &b[end + 1..]))
}

fn parse_request(read: bool, b: &[u8]) -> Result<Request<'_>, ParseError> {
    let (filename, rest) = split_cstr(b).ok_or(ParseError::Unterminated)?;
    let (mode, mut rest) = split_cstr(rest).ok_or(ParseError::Unterminated)?;
    let mode = if mode.eq_ignore_ascii_case(b"octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case(b"netascii") {
        Mode::Netascii
    } else if mode.eq_ignore_ascii_case(b"mail") {
        Mode::Mail
    } else {
        return Err(ParseError::UnknownMode);
    };
    let mut options = RequestOptions::default();
    while let Some((name, after_name)) = split_cstr(rest) {
        let Some((value, after_value)) = split_cstr(after_name) else {
            break;
        };
        rest = after_value;
        if name.eq_ignore_ascii_case(b"blksize") {
            // Above the RFC 2348 maximum: capped, as tftp-hpa does (the RFC allows capping or
            // ignoring); the server then grants at most its own limit anyway.
            options.blksize = options.blksize.or_else(|| {
                number::<u128>(value)
                    .filter(|v| *v >= u128::from(MIN_BLOCK_SIZE))
                    .map(|v| v.min(u128::from(MAX_BLOCK_SIZE)) as u16)
            });
        } else if name.eq_ignore_ascii_case(b"tsize") {
            options.tsize = options.tsize.or_else(|| number::<u64>(value));
        } else if name.eq_ignore_ascii_case(b"timeout") {
            options.timeout = options
                .timeout
                .or_else(|| number::<u8>(value).filter(|v| *v >= 1));
        } else if name.eq_ignore_ascii_case(b"windowsize") {
            options.windowsize = options
                .windowsize
                .or_else(|| number::<u16>(value).filter(|v| *v >= 1));
        }
    }
    Ok(Request {
        read,
        filename,
        mode,
        options,
    })
}

/// A decimal number of ASCII digits only (no sign, no spaces), as the RFCs' option values are.
fn number<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// The options a server acknowledges, in the order they are written into the OACK.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptedOptions {
    /// Granted block size.
    pub blksize: Option<u16>,
    /// The file's size.
    pub tsize: Option<u64>,
    /// Granted window size.
    pub windowsize: Option<u16>,
}

impl AcceptedOptions {
    /// True if nothing was accepted: the server then answers with DATA 1, not an OACK
    /// (RFC 2347).
    pub fn is_empty(&self) -> bool {
        self.blksize.is_none() && self.tsize.is_none() && self.windowsize.is_none()
    }
}

impl fmt::Display for AcceptedOptions {
    /// `blksize=1468 tsize=996864 windowsize=8`, or `-` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut sep = "";
        if let Some(v) = self.blksize {
            write!(f, "blksize={v}")?;
            sep = " ";
        }
        if let Some(v) = self.tsize {
            write!(f, "{sep}tsize={v}")?;
            sep = " ";
        }
        if let Some(v) = self.windowsize {
            write!(f, "{sep}windowsize={v}")?;
        }
        Ok(())
    }
}

/// Writes an OACK for `options` into `out` (cleared first).
pub fn encode_oack(options: &AcceptedOptions, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    out.extend_from_slice(&OACK.to_be_bytes());
    let mut pair = |name: &str, value: u64| {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{value}");
        out.push(0);
    };
    if let Some(v) = options.blksize {
        pair("blksize", u64::from(v));
    }
    if let Some(v) = options.tsize {
        pair("tsize", v);
    }
    if let Some(v) = options.windowsize {
        pair("windowsize", u64::from(v));
    }
}

/// Writes the 4-byte DATA header for `block` into the start of `out`.
///
/// # Panics
/// If `out` is shorter than [`DATA_HEADER_LEN`] (a programming error).
pub fn put_data_header(block: u16, out: &mut [u8]) {
    out[..2].copy_from_slice(&DATA.to_be_bytes());
    out[2..4].copy_from_slice(&block.to_be_bytes());
}

/// Longest ERROR message sent, in bytes: the packet stays far below any MTU.
pub const MAX_ERROR_MESSAGE: usize = 200;

/// An ERROR packet with `code` and `message` (cut to [`MAX_ERROR_MESSAGE`] bytes on a
/// character boundary, NULs replaced so the string stays one string).
pub fn encode_error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut end = message.len().min(MAX_ERROR_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::with_capacity(5 + end);
    out.extend_from_slice(&ERROR.to_be_bytes());
    out.extend_from_slice(&code.code().to_be_bytes());
    out.extend(
        message.as_bytes()[..end]
            .iter()
            .map(|&c| if c == 0 { b' ' } else { c }),
    );
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: u16, parts: &[&[u8]]) -> Vec<u8> {
        let mut p = op.to_be_bytes().to_vec();
        for part in parts {
            p.extend_from_slice(part);
            p.push(0);
        }
        p
    }

    #[test]
    fn requests() {
        let p = req(RRQ, &[b"ipxe.efi", b"octet"]);
        assert_eq!(
            parse(&p).unwrap(),
            Packet::Request(Request {
                read: true,
                filename: b"ipxe.efi",
                mode: Mode::Octet,
                options: RequestOptions::default(),
            })
        );
        let p = req(
            WRQ,
            &[b"x", b"NetASCII", b"BLKSIZE", b"1468", b"tsize", b"0"],
        );
        let Packet::Request(r) = parse(&p).unwrap() else {
            panic!()
        };
        assert!(!r.read);
        assert_eq!(r.mode, Mode::Netascii);
        assert_eq!(r.options.blksize, Some(1468));
        assert_eq!(r.options.tsize, Some(0));
        let p = req(
            RRQ,
            &[
                b"a",
                b"mail",
                b"timeout",
                b"3",
                b"windowsize",
                b"8",
                b"x-unknown",
                b"1",
            ],
        );
        let Packet::Request(r) = parse(&p).unwrap() else {
            panic!()
        };
        assert_eq!(r.mode, Mode::Mail);
        assert_eq!(
            r.options,
            RequestOptions {
                timeout: Some(3),
                windowsize: Some(8),
                ..RequestOptions::default()
            }
        );
        // The file name is bytes; an empty one parses (the path policy refuses it).
        let p = req(RRQ, &[b"\xff\xfe", b"octet"]);
        assert!(matches!(parse(&p), Ok(Packet::Request(r)) if r.filename == b"\xff\xfe"));
        let p = req(RRQ, &[b"", b"octet"]);
        assert!(matches!(parse(&p), Ok(Packet::Request(r)) if r.filename.is_empty()));
    }

    #[test]
    fn option_values_are_range_checked() {
        let opts = |pairs: &[&[u8]]| {
            let mut parts: Vec<&[u8]> = vec![b"f", b"octet"];
            parts.extend_from_slice(pairs);
            match parse(&req(RRQ, &parts)).unwrap() {
                Packet::Request(r) => r.options,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(opts(&[b"blksize", b"7"]).blksize, None);
        assert_eq!(opts(&[b"blksize", b"8"]).blksize, Some(8));
        assert_eq!(opts(&[b"blksize", b"65464"]).blksize, Some(65464));
        // Above the maximum: capped to it.
        assert_eq!(opts(&[b"blksize", b"65465"]).blksize, Some(65464));
        assert_eq!(opts(&[b"blksize", b"99999999999"]).blksize, Some(65464));
        assert_eq!(
            opts(&[b"blksize", b"99999999999999999999"]).blksize,
            Some(65464)
        );
        assert_eq!(opts(&[b"blksize", b"+512"]).blksize, None);
        assert_eq!(opts(&[b"blksize", b" 512"]).blksize, None);
        assert_eq!(opts(&[b"blksize", b""]).blksize, None);
        assert_eq!(opts(&[b"timeout", b"0"]).timeout, None);
        assert_eq!(opts(&[b"timeout", b"255"]).timeout, Some(255));
        assert_eq!(opts(&[b"timeout", b"256"]).timeout, None);
        assert_eq!(opts(&[b"windowsize", b"0"]).windowsize, None);
        assert_eq!(opts(&[b"windowsize", b"65535"]).windowsize, Some(65535));
        assert_eq!(opts(&[b"windowsize", b"65536"]).windowsize, None);
        assert_eq!(
            opts(&[b"tsize", b"18446744073709551615"]).tsize,
            Some(u64::MAX)
        );
        assert_eq!(opts(&[b"tsize", b"18446744073709551616"]).tsize, None);
        // The first of repeated options wins; an invalid first lets a valid second count.
        assert_eq!(
            opts(&[b"blksize", b"1024", b"blksize", b"512"]).blksize,
            Some(1024)
        );
        assert_eq!(
            opts(&[b"blksize", b"x", b"blksize", b"512"]).blksize,
            Some(512)
        );
    }

    #[test]
    fn padded_and_truncated_options() {
        // A trailing NUL pad or half an option ends the list; the request stands.
        let mut p = req(RRQ, &[b"f", b"octet", b"blksize", b"1468"]);
        p.extend_from_slice(&[0, 0, 0]);
        assert!(matches!(parse(&p), Ok(Packet::Request(r)) if r.options.blksize == Some(1468)));
        let mut p = req(RRQ, &[b"f", b"octet", b"tsize"]);
        p.extend_from_slice(b"12");
        assert!(matches!(parse(&p), Ok(Packet::Request(r)) if r.options.tsize.is_none()));
    }

    #[test]
    fn malformed() {
        assert_eq!(parse(b""), Err(ParseError::Truncated));
        assert_eq!(parse(b"\x00"), Err(ParseError::Truncated));
        assert_eq!(parse(b"\x00\x00"), Err(ParseError::UnknownOpcode(0)));
        assert_eq!(
            parse(b"\x00\x07\x00\x01"),
            Err(ParseError::UnknownOpcode(7))
        );
        assert_eq!(parse(b"\x00\x01ipxe.efi"), Err(ParseError::Unterminated));
        assert_eq!(
            parse(b"\x00\x01ipxe.efi\x00octet"),
            Err(ParseError::Unterminated)
        );
        assert_eq!(
            parse(b"\x00\x01ipxe.efi\x00binary\x00"),
            Err(ParseError::UnknownMode)
        );
        assert_eq!(parse(b"\x00\x04\x00"), Err(ParseError::Truncated));
        assert_eq!(parse(b"\x00\x04\x00\x01\x00"), Err(ParseError::Trailing));
        assert_eq!(parse(b"\x00\x05\x00"), Err(ParseError::Truncated));
        assert_eq!(parse(b"\x00\x03\x00"), Err(ParseError::Truncated));
    }

    #[test]
    fn acks_errors_and_others() {
        assert_eq!(parse(b"\x00\x04\xff\xfe").unwrap(), Packet::Ack(65534));
        assert_eq!(
            parse(b"\x00\x05\x00\x08User aborted\x00").unwrap(),
            Packet::Error {
                code: 8,
                message: b"User aborted"
            }
        );
        assert_eq!(
            parse(b"\x00\x05\x00\x00no nul").unwrap(),
            Packet::Error {
                code: 0,
                message: b"no nul"
            }
        );
        assert_eq!(parse(b"\x00\x03\x00\x01abc").unwrap(), Packet::Other(DATA));
        assert_eq!(parse(b"\x00\x06").unwrap(), Packet::Other(OACK));
    }

    #[test]
    fn encoding() {
        let mut out = Vec::new();
        let all = AcceptedOptions {
            blksize: Some(1468),
            tsize: Some(996_864),
            windowsize: Some(8),
        };
        encode_oack(&all, &mut out);
        assert_eq!(
            out,
            b"\x00\x06blksize\x001468\x00tsize\x00996864\x00windowsize\x008\x00"
        );
        assert_eq!(all.to_string(), "blksize=1468 tsize=996864 windowsize=8");
        let tsize_only = AcceptedOptions {
            tsize: Some(0),
            ..AcceptedOptions::default()
        };
        encode_oack(&tsize_only, &mut out);
        assert_eq!(out, b"\x00\x06tsize\x000\x00");
        assert_eq!(AcceptedOptions::default().to_string(), "-");
        assert!(AcceptedOptions::default().is_empty());

        let mut data = [0u8; 6];
        put_data_header(0x1234, &mut data);
        assert_eq!(&data[..4], b"\x00\x03\x12\x34");

        assert_eq!(
            encode_error(ErrorCode::UnknownTid, "unknown transfer ID"),
            b"\x00\x05\x00\x05unknown transfer ID\x00"
        );
        assert_eq!(
            encode_error(ErrorCode::NotDefined, "a\0b"),
            b"\x00\x05\x00\x00a b\x00"
        );
        let long = "é".repeat(200);
        let e = encode_error(ErrorCode::AccessViolation, &long);
        assert_eq!(e.len(), 4 + MAX_ERROR_MESSAGE + 1);
        assert!(std::str::from_utf8(&e[4..e.len() - 1]).is_ok());
        // Every encoded packet parses back.
        assert!(matches!(parse(&e), Ok(Packet::Error { code: 2, .. })));
    }
}
