//! MAC addresses as machines are named by: `52:54:00:12:34:56`. The one MAC type and text form:
//! the proxy-DHCP responder writes client MACs with it (boot script URLs, logs) and `assign`
//! stores, parses and shows them with it. A leaf, so both layers can use it.

use std::fmt;
use std::str::FromStr;

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    /// Lower-case hex, colon-separated: the form stored and shown everywhere.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// A string that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (write it like 52:54:00:12:34:56)")]
pub struct BadMac(pub String);

impl FromStr for MacAddr {
    type Err = BadMac;

    /// Accepts `52:54:00:12:34:56`, `52-54-00-12-34-56` and `525400123456`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadMac(s.chars().take(64).collect());
        let t = s.trim();
        let hex: String = if t.len() == 17 {
            let sep = t.as_bytes()[2];
            if sep != b':' && sep != b'-' {
                return Err(bad());
            }
            let parts: Vec<&str> = t.split(sep as char).collect();
            if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
                return Err(bad());
            }
            parts.concat()
        } else if t.len() == 12 {
            t.to_string()
        } else {
            return Err(bad());
        };
        let mut out = [0u8; 6];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_spellings() {
        let want = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0xab]);
        for s in [
            "52:54:00:12:34:ab",
            "52-54-00-12-34-AB",
            "5254001234Ab",
            " 52:54:00:12:34:ab ",
        ] {
            assert_eq!(s.parse::<MacAddr>(), Ok(want), "{s}");
        }
        assert_eq!(want.to_string(), "52:54:00:12:34:ab");
        assert_eq!(
            MacAddr([0xAB, 0xCD, 0xEF, 0x0A, 0xFF, 0x00]).to_string(),
            "ab:cd:ef:0a:ff:00"
        );
    }

    #[test]
    fn rejects_everything_else() {
        for s in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:ab:cd",
            "52:54-00:12:34:ab",
            "52.54.00.12.34.ab",
            "zz:54:00:12:34:ab",
            "+2:54:00:12:34:ab",
            "../../etc/passwd",
            "5254001234+b",
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "{s}");
        }
    }
}
