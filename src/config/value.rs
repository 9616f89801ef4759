//! Typed configuration values and how they are written in YAML, flags and variables.
//!
//! Every value is parsed once, when the configuration is loaded: a bad one fails the load with
//! the key named (serde puts the key path in front of the messages written here), and the rest
//! of the program only sees the typed value. Options whose YAML form is an empty string for
//! "unset" (as documented, and as flags and variables can only say it) are `Option<T>` here
//! and shown as `""` again by `config show`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::version::TalosVersion;

/// A value written as one string in the configuration.
pub trait ConfigValue: Sized {
    /// Parses the (non-empty) text; the error says what was expected.
    fn parse_value(text: &str) -> Result<Self, String>;
    /// The text `config show` prints, which parses back to the same value.
    fn show(&self) -> String;
}

impl ConfigValue for SocketAddr {
    fn parse_value(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|_| format!("{text:?} is not ADDR:PORT (e.g. 0.0.0.0:8080 or [::1]:8080)"))
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl ConfigValue for Ipv4Addr {
    fn parse_value(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|_| format!("{text:?} is not an IPv4 address like 192.0.2.10"))
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl ConfigValue for crate::dhcp::AddressRange {
    fn parse_value(text: &str) -> Result<Self, String> {
        text.parse()
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl ConfigValue for PathBuf {
    fn parse_value(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }
    fn show(&self) -> String {
        self.to_string_lossy().into_owned()
    }
}

impl ConfigValue for String {
    fn parse_value(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
    fn show(&self) -> String {
        self.clone()
    }
}

/// Versions are written with or without the leading `v`
/// ([`crate::version::parse_user_version`]) and shown without it, like the default `1.2.0`.
impl ConfigValue for TalosVersion {
    fn parse_value(text: &str) -> Result<Self, String> {
        crate::version::parse_user_version(text)
            .map_err(|e| format!("{text:?} is not a version like 1.2.0 ({e})"))
    }
    fn show(&self) -> String {
        self.semver_string()
    }
}

/// An absolute `http://` or `https://` URL with a host, kept as written (so `config show` and
/// upstream-compatible texts print it unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    text: String,
    url: url::Url,
}

impl HttpUrl {
    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The URL as written without trailing slashes: the base other paths are appended to.
    pub fn base(&self) -> &str {
        self.text.trim_end_matches('/')
    }

    /// `true` for `https://`.
    pub fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// The host without port or IPv6 brackets.
    pub fn host(&self) -> String {
        match self.url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Domain(d)) => d.to_string(),
            None => String::new(),
        }
    }

    /// The host as a URL authority host: IPv6 addresses in brackets.
    pub fn host_for_url(&self) -> String {
        self.url.host_str().unwrap_or_default().to_string()
    }

    /// The port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }

    /// `host[:port]` as written (port only when given).
    pub fn authority(&self) -> String {
        match self.url.port() {
            Some(port) => format!("{}:{port}", self.host_for_url()),
            None => self.host_for_url(),
        }
    }
}

impl ConfigValue for HttpUrl {
    fn parse_value(text: &str) -> Result<Self, String> {
        let absolute = || format!("{text:?} must be an absolute http:// or https:// URL");
        let url = url::Url::parse(text).map_err(|e| match e {
            url::ParseError::RelativeUrlWithoutBase => absolute(),
            url::ParseError::EmptyHost => format!("{text:?} has no host"),
            e => format!("{text:?} is not a URL ({e})"),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(absolute());
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("{text:?} has no host"));
        }
        Ok(HttpUrl {
            text: text.to_string(),
            url,
        })
    }
    fn show(&self) -> String {
        self.text.clone()
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for HttpUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HttpUrl::parse_value(s)
    }
}

/// The x86-64 UEFI network boot program sent to firmware (`pxe.efiBinary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EfiBinary {
    /// `ipxe.efi`: iPXE with all its drivers.
    #[serde(rename = "ipxe.efi")]
    IpxeEfi,
    /// `snponly.efi`: iPXE using the firmware's network driver (SNP).
    #[serde(rename = "snponly.efi")]
    SnponlyEfi,
}

impl EfiBinary {
    /// The file name served over TFTP and HTTP.
    pub fn file_name(self) -> &'static str {
        match self {
            EfiBinary::IpxeEfi => "ipxe.efi",
            EfiBinary::SnponlyEfi => "snponly.efi",
        }
    }
}

impl fmt::Display for EfiBinary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// The host clients reach a listener at when it listens on `addr`: the address itself, with
/// the unspecified addresses replaced by loopback; IPv6 in brackets.
pub fn url_host_of(addr: &SocketAddr) -> String {
    match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    }
}

/// Parses a string while the deserializer still knows where it is, so a YAML file's error
/// names the key (serde_yaml prefixes the path of the value being read).
struct Parse<T>(std::marker::PhantomData<T>);

impl<T: ConfigValue> serde::de::Visitor<'_> for Parse<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
        T::parse_value(text).map_err(E::custom)
    }
}

/// [`Parse`] with `""`, `null` and `~` read as `None`.
struct ParseOptional<T>(std::marker::PhantomData<T>);

impl<'de, T: ConfigValue> serde::de::Visitor<'de> for ParseOptional<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string (empty for unset)")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_str(self)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Option<T>, E> {
        if text.is_empty() {
            return Ok(None);
        }
        T::parse_value(text).map(Some).map_err(E::custom)
    }
}

/// serde for a required value written as a string.
pub mod required {
    use super::*;

    /// Writes [`ConfigValue::show`].
    pub fn serialize<T: ConfigValue, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.show())
    }

    /// Reads a string and parses it.
    pub fn deserialize<'de, T: ConfigValue, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        d.deserialize_str(Parse(std::marker::PhantomData))
    }
}

/// serde for an optional value written as a string, `""` (or `null`) meaning unset.
pub mod optional {
    use super::*;

    /// Writes [`ConfigValue::show`], or `""` when unset.
    pub fn serialize<T: ConfigValue, S: Serializer>(
        v: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&v.show()),
            None => s.serialize_str(""),
        }
    }

    /// Reads a string: empty = `None`, else parsed.
    pub fn deserialize<'de, T: ConfigValue, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        d.deserialize_option(ParseOptional(std::marker::PhantomData))
    }
}

/// serde for a list of values written as strings; an error names the entry's index and value.
pub mod list {
    use super::*;

    /// Writes each [`ConfigValue::show`].
    pub fn serialize<T: ConfigValue, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(ConfigValue::show))
    }

    /// Reads a list of strings and parses each.
    pub fn deserialize<'de, T: ConfigValue, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(Entries(std::marker::PhantomData))
    }

    struct Entries<T>(std::marker::PhantomData<T>);

    impl<'de, T: ConfigValue> serde::de::Visitor<'de> for Entries<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of strings")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(text) = seq.next_element::<String>()? {
                let parsed = T::parse_value(&text)
                    .map_err(|e| A::Error::custom(format!("entry {}: {e}", out.len())))?;
                out.push(parsed);
            }
            Ok(out)
        }
    }
}
