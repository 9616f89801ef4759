//! META values as text: the `INSTALLER_META_BASE64` encoding Talos uses on the kernel command
//! line (`siderolabs/talos:pkg/machinery/meta/meta.go` `Values.Encode`/`DecodeValues`,
//! `docs/formats.md` §META).
//!
//! Encoding: `0x<key hex>=<value>` joined by `;`; when the target supports it (Talos ≥ 1.6.3)
//! and the text is longer than 256 bytes it is gzipped (best compression); then standard base64
//! with padding.
//!
//! ```
//! use bootfactory::{factory::meta, factory::quirks::Quirks, version::TalosVersion};
//! let q = Quirks::new(&"v1.11.0".parse::<TalosVersion>().unwrap());
//! let s = meta::encode_meta(&[(0x0a, r#"{"externalIPs":["1.2.3.4"]}"#.to_string())], &q);
//! assert_eq!(s, "MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ==");
//! assert_eq!(meta::decode_meta(&s).unwrap()[0].0, 0x0a);
//! ```

use std::io::{Read, Write};

use flate2::{Compression, GzBuilder, read::GzDecoder};

use super::quirks::Quirks;

/// Texts longer than this many bytes are gzipped (when the target supports it).
pub const GZIP_THRESHOLD: usize = 256;

/// The kernel argument key carrying environment entries (`talos.environment`).
pub const ENVIRONMENT_KEY: &str = "talos.environment";

/// The environment variable the installer decodes META from.
pub const INSTALLER_META_ENV: &str = "INSTALLER_META_BASE64";

/// A META text that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// Not valid standard base64 (with padding).
    #[error("illegal base64 data at input byte {0}")]
    Base64(usize),
    /// The data looked like gzip but did not decompress, or was not UTF-8.
    #[error("invalid gzip data: {0}")]
    Gzip(String),
    /// The decoded text is not UTF-8.
    #[error("META text is not valid UTF-8")]
    Utf8,
    /// A `;`-separated part without `=`.
    #[error("invalid META value: {0:?}")]
    MissingEquals(String),
    /// A key that is not an 8-bit unsigned integer in Go's base-0 syntax.
    #[error("invalid META key: {0:?}")]
    InvalidKey(String),
}

/// The plain (uncompressed) text: `0x<key>=<value>` joined by `;` (lowercase hex, no padding:
/// `0xa`, `0x11`).
pub fn encode_meta_text(values: &[(u8, String)]) -> String {
    values
        .iter()
        .map(|(k, v)| format!("0x{k:x}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Encodes META values for `INSTALLER_META_BASE64` (Talos `Values.Encode`).
///
/// Gzip applies when `quirks.supports_compressed_encoded_meta()` (≥ 1.6.3) and the text is
/// longer than [`GZIP_THRESHOLD`] bytes. The gzip framing is what Go's `compress/gzip` writes
/// at `BestCompression`: header `1f 8b 08 00 00 00 00 00 02 ff` (no flags, mtime 0, XFL 2,
/// OS 255), then deflate, CRC-32 and size. The deflate stream is flate2's (level 9), which is
/// valid deflate but not byte-identical to Go's compressor; every decoder (Talos' included)
/// accepts any deflate stream.
pub fn encode_meta(values: &[(u8, String)], quirks: &Quirks) -> String {
    let text = encode_meta_text(values);
    if quirks.supports_compressed_encoded_meta() && text.len() > GZIP_THRESHOLD {
        base64_encode(&gzip_best(text.as_bytes()))
    } else {
        base64_encode(text.as_bytes())
    }
}

/// Decodes `INSTALLER_META_BASE64` (Talos `DecodeValues`): base64; gunzip when the data is at
/// least 10 bytes and starts with `1f 8b`; split on `;`; each part `key=value` split at the
/// first `=`, the key parsed like Go's `strconv.ParseUint(key, 0, 8)` (`0x..`, `0o..`, `0b..`,
/// leading-`0` octal, decimal, `_` separators). An empty input decodes to no values.
pub fn decode_meta(s: &str) -> Result<Vec<(u8, String)>, MetaError> {
    let mut data = base64_decode(s)?;
    if data.len() >= 10 && data[0] == 0x1f && data[1] == 0x8b {
        let mut out = Vec::new();
        GzDecoder::new(&data[..])
            .read_to_end(&mut out)
            .map_err(|e| MetaError::Gzip(e.to_string()))?;
        data = out;
    }
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let text = String::from_utf8(data).map_err(|_| MetaError::Utf8)?;
    text.split(';')
        .map(|part| {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| MetaError::MissingEquals(part.to_string()))?;
            let key = go_parse_uint8(k).ok_or_else(|| MetaError::InvalidKey(k.to_string()))?;
            Ok((key, v.to_string()))
        })
        .collect()
}

/// gzip with Go `compress/gzip`'s framing at `BestCompression` (see [`encode_meta`]).
fn gzip_best(data: &[u8]) -> Vec<u8> {
    let mut enc = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::best());
    enc.write_all(data).expect("writing to a Vec cannot fail");
    let mut out = enc.finish().expect("writing to a Vec cannot fail");
    // Go writes XFL = 2 for BestCompression; pin it rather than rely on the encoder's choice.
    out[8] = 2;
    out
}

/// Go's `strconv.ParseUint(s, 0, 8)`: `None` on syntax or range errors.
fn go_parse_uint8(s: &str) -> Option<u8> {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    let lower = |b: u8| b | 0x20;
    let (base, digits): (u32, &[u8]) = if bytes[0] == b'0' {
        if bytes.len() >= 3 && lower(bytes[1]) == b'b' {
            (2, &bytes[2..])
        } else if bytes.len() >= 3 && lower(bytes[1]) == b'o' {
            (8, &bytes[2..])
        } else if bytes.len() >= 3 && lower(bytes[1]) == b'x' {
            (16, &bytes[2..])
        } else {
            (8, &bytes[1..])
        }
    } else {
        (10, bytes)
    };
    let mut n: u32 = 0;
    let mut underscores = false;
    for &c in digits {
        let d = match c {
            b'_' => {
                underscores = true;
                continue;
            }
            b'0'..=b'9' => u32::from(c - b'0'),
            _ if lower(c).is_ascii_lowercase() => u32::from(lower(c) - b'a') + 10,
            _ => return None,
        };
        if d >= base {
            return None;
        }
        n = n * base + d;
        if n > u32::from(u8::MAX) {
            return None;
        }
    }
    if underscores && !go_underscore_ok(s) {
        return None;
    }
    u8::try_from(n).ok()
}

/// Go's `underscoreOK`: underscores only between digits or between a base prefix and a digit.
fn go_underscore_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let lower = |c: u8| c | 0x20;
    // `^` start, `0` digit or base prefix, `_` underscore, `!` anything else.
    let mut saw = b'^';
    let mut i = 0;
    let b = match b.first() {
        Some(b'+' | b'-') => &b[1..],
        _ => b,
    };
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(lower(b[1]), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = lower(b[1]) == b'x';
    }
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c.is_ascii_digit() || (hex && (b'a'..=b'f').contains(&lower(c))) {
            saw = b'0';
            continue;
        }
        if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
            continue;
        }
        if saw == b'_' {
            return false;
        }
        saw = b'!';
    }
    saw != b'_'
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (Go `base64.StdEncoding.EncodeToString`).
fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, s) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(B64[*s as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 decoding like Go's `base64.StdEncoding.DecodeString`: padding required,
/// `\r` and `\n` ignored, non-zero trailing bits tolerated. The error carries the offset of the
/// offending input byte.
fn base64_decode(s: &str) -> Result<Vec<u8>, MetaError> {
    let mut sextets: Vec<(u8, usize)> = Vec::with_capacity(s.len());
    let mut pad_at: Option<usize> = None;
    let mut pads = 0usize;
    for (i, c) in s.bytes().enumerate() {
        match c {
            b'\r' | b'\n' => continue,
            b'=' => {
                pad_at.get_or_insert(i);
                pads += 1;
            }
            _ => {
                if pad_at.is_some() {
                    return Err(MetaError::Base64(i));
                }
                let v = match c {
                    b'A'..=b'Z' => c - b'A',
                    b'a'..=b'z' => c - b'a' + 26,
                    b'0'..=b'9' => c - b'0' + 52,
                    b'+' => 62,
                    b'/' => 63,
                    _ => return Err(MetaError::Base64(i)),
                };
                sextets.push((v, i));
            }
        }
    }
    let rem = sextets.len() % 4;
    let pads_ok = match rem {
        0 => pads == 0,
        2 => pads == 2,
        3 => pads == 1,
        _ => false,
    };
    if !pads_ok {
        return Err(MetaError::Base64(pad_at.unwrap_or(s.len())));
    }
    let mut out = Vec::with_capacity(sextets.len() / 4 * 3 + 2);
    for chunk in sextets.chunks(4) {
        let mut n: u32 = 0;
        for (j, (v, _)) in chunk.iter().enumerate() {
            n |= u32::from(*v) << (18 - 6 * j);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::TalosVersion;

    fn q(v: &str) -> Quirks {
        Quirks::new(&v.parse::<TalosVersion>().unwrap())
    }

    #[test]
    fn upstream_vector() {
        let values = vec![(0x0a, r#"{"externalIPs":["1.2.3.4"]}"#.to_string())];
        assert_eq!(
            encode_meta_text(&values),
            r#"0xa={"externalIPs":["1.2.3.4"]}"#
        );
        for v in ["v1.5.0", "v1.6.2", "v1.6.3", "v1.11.0"] {
            assert_eq!(
                encode_meta(&values, &q(v)),
                "MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ=="
            );
        }
        assert_eq!(
            decode_meta("MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ==").unwrap(),
            values
        );
    }

    #[test]
    fn text_form() {
        let values = vec![
            (0x11, "dual-boot".to_string()),
            (0x0c, "a=b".to_string()),
            (0, String::new()),
            (255, "x".to_string()),
        ];
        assert_eq!(
            encode_meta_text(&values),
            "0x11=dual-boot;0xc=a=b;0x0=;0xff=x"
        );
        let enc = encode_meta(&values, &q("v1.11.0"));
        assert_eq!(decode_meta(&enc).unwrap(), values);
    }

    fn long_values() -> Vec<(u8, String)> {
        vec![
            (0x0a, format!("{{\"hostnames\":[\"{}\"]}}", "h".repeat(300))),
            (0x0c, "user".to_string()),
        ]
    }

    #[test]
    fn long_text_gzipped_from_1_6_3() {
        let values = long_values();
        let enc = encode_meta(&values, &q("v1.6.3"));
        let raw = base64_decode(&enc).unwrap();
        assert_eq!(&raw[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 0xff]);
        assert!(raw.len() < encode_meta_text(&values).len());
        assert_eq!(decode_meta(&enc).unwrap(), values);
        // Pre-release of 1.6.3 counts as 1.6.3.
        assert!(base64_decode(&encode_meta(&values, &q("v1.6.3-alpha.0"))).unwrap()[0] == 0x1f);
    }

    #[test]
    fn long_text_plain_before_1_6_3() {
        let values = long_values();
        let enc = encode_meta(&values, &q("v1.6.2"));
        assert_eq!(
            base64_decode(&enc).unwrap(),
            encode_meta_text(&values).into_bytes()
        );
        assert_eq!(decode_meta(&enc).unwrap(), values);
    }

    #[test]
    fn threshold_is_strictly_greater_than_256() {
        // "0xc=" is 4 bytes.
        let at = vec![(0x0c, "x".repeat(252))];
        assert_eq!(encode_meta_text(&at).len(), 256);
        assert_eq!(
            base64_decode(&encode_meta(&at, &q("v1.11.0"))).unwrap()[0],
            b'0'
        );
        let over = vec![(0x0c, "x".repeat(253))];
        assert_eq!(
            base64_decode(&encode_meta(&over, &q("v1.11.0"))).unwrap()[0],
            0x1f
        );
    }

    #[test]
    fn key_syntax_like_go_parse_uint() {
        let ok = [
            ("0xa", 10),
            ("0XA", 10),
            ("10", 10),
            ("0o12", 10),
            ("012", 10),
            ("0b1010", 10),
            ("0", 0),
            ("255", 255),
            ("0xff", 255),
            ("0x_f", 15),
            ("1_0", 10),
            ("0_12", 10),
        ];
        for (k, want) in ok {
            assert_eq!(go_parse_uint8(k), Some(want), "{k}");
        }
        for bad in [
            "", "256", "0x100", "0x", "0b", "08", "+1", "-1", "a", "1__0", "_1", "1_", "0x_", " 1",
        ] {
            assert_eq!(go_parse_uint8(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn decode_errors() {
        assert!(matches!(decode_meta("!!!!"), Err(MetaError::Base64(0))));
        assert!(matches!(
            decode_meta("MHhh"),
            Err(MetaError::MissingEquals(_))
        ));
        // "zz=1"
        assert!(matches!(
            decode_meta(&base64_encode(b"zz=1")),
            Err(MetaError::InvalidKey(_))
        ));
        assert!(matches!(
            decode_meta(&base64_encode(b"0x100=1")),
            Err(MetaError::InvalidKey(_))
        ));
        assert!(matches!(decode_meta("MHhhPTE"), Err(MetaError::Base64(_))));
        assert_eq!(decode_meta("").unwrap(), vec![]);
        assert_eq!(
            decode_meta(&base64_encode(b"10=a;0b1=b")).unwrap(),
            vec![(10, "a".to_string()), (1, "b".to_string())]
        );
        assert_eq!(
            decode_meta("MHhh\r\nPTE=").unwrap(),
            vec![(10, "1".to_string())]
        );
    }

    #[test]
    fn base64_roundtrip() {
        for n in 0..20usize {
            let data: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
    }
}
