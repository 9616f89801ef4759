//! Talos versions: parsing and ordering with the rules of Go's `blang/semver` v4 (the library
//! upstream uses). A leaf: configuration, the factory and the inventory all parse versions
//! here, and it depends on nothing else in the crate but [`crate::gocompat`]. What a version
//! *changes* (Talos' "quirks", the `/versions` selection) is `factory::quirks`.
//!
//! Two parsers exist, as upstream has two:
//!
//! * [`parse_user_version`] (also `TalosVersion::from_str`) — every version a user gives (request
//!   paths, assignments, the configuration): a `v` is prepended when missing,
//!   then the version is parsed *strictly* (`semver.Parse`): exactly `MAJOR.MINOR.PATCH`, no
//!   leading zeroes, optional `-pre.release` and `+build.meta`. `1.9` and `v1.9` are errors.
//! * [`TalosVersion::parse_tolerant`] — `semver.ParseTolerant`, used for registry tags
//!   (`docs/image-factory-api.md` §The versions list) and by `quirks.New`: surrounding whitespace
//!   trimmed, one leading `v` removed, leading zeroes removed from each of the first three
//!   dot-separated parts, and a missing minor/patch padded with `0` (only when the shortened
//!   version carries no pre-release/build part).
//!
//! ```
//! use bootfactory::version::TalosVersion;
//! let v: TalosVersion = "1.12.0-beta.1".parse().unwrap();
//! assert_eq!(v.to_string(), "v1.12.0-beta.1");
//! assert!("v1.9".parse::<TalosVersion>().is_err());
//! assert_eq!(TalosVersion::parse_tolerant("v1.9").unwrap().to_string(), "v1.9.0");
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::gocompat::strconv::quote;

/// One dot-separated pre-release identifier: numeric (compared as a number) or alphanumeric
/// (compared as ASCII text); numeric identifiers sort before alphanumeric ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PreRelease {
    /// Digits only, no leading zero (e.g. the `1` in `beta.1`).
    Numeric(u64),
    /// Letters, digits and `-`, not all digits (e.g. `beta`).
    Alpha(String),
}

impl PreRelease {
    /// Parses one identifier like blang/semver's `NewPRVersion`.
    fn parse(s: &str) -> Result<PreRelease, VersionError> {
        if s.is_empty() {
            return Err(VersionError::new("Prerelease is empty"));
        }
        if contains_only_digits(s) {
            if has_leading_zero(s) {
                return Err(VersionError::new(format!(
                    "Numeric PreRelease version must not contain leading zeroes {}",
                    quote(s)
                )));
            }
            return parse_u64(s).map(PreRelease::Numeric);
        }
        if contains_only_alphanum(s) {
            return Ok(PreRelease::Alpha(s.to_string()));
        }
        Err(VersionError::new(format!(
            "Invalid character(s) found in prerelease {}",
            quote(s)
        )))
    }

    /// True for a numeric identifier.
    pub fn is_numeric(&self) -> bool {
        matches!(self, PreRelease::Numeric(_))
    }

    /// The alphanumeric text, `None` for a numeric identifier.
    pub fn as_alpha(&self) -> Option<&str> {
        match self {
            PreRelease::Alpha(s) => Some(s),
            PreRelease::Numeric(_) => None,
        }
    }
}

impl Ord for PreRelease {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PreRelease::Numeric(a), PreRelease::Numeric(b)) => a.cmp(b),
            (PreRelease::Alpha(a), PreRelease::Alpha(b)) => a.cmp(b),
            (PreRelease::Numeric(_), PreRelease::Alpha(_)) => Ordering::Less,
            (PreRelease::Alpha(_), PreRelease::Numeric(_)) => Ordering::Greater,
        }
    }
}

impl PartialOrd for PreRelease {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for PreRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreRelease::Numeric(n) => write!(f, "{n}"),
            PreRelease::Alpha(s) => f.write_str(s),
        }
    }
}

/// A version that failed to parse. The message follows blang/semver's wording (for example
/// `No Major.Minor.Patch elements found`), since upstream passes it through to error bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct VersionError {
    message: String,
}

impl VersionError {
    fn new(message: impl Into<String>) -> VersionError {
        VersionError {
            message: message.into(),
        }
    }
}

/// A Talos version: a semantic version with blang/semver's parsing and precedence rules.
///
/// Displayed (and serialised) with the `v` prefix Talos uses in tags: `v1.12.0-beta.1`.
///
/// Ordering is semver precedence (major, minor, patch, then pre-release: a release sorts after
/// its pre-releases; identifiers compared left to right; a longer identifier list wins a tie).
/// Build metadata does not affect precedence; to keep `Ord` consistent with `Eq` it is used as a
/// final tie-breaker only. [`TalosVersion::precedence_cmp`] ignores it, like Go's `Compare`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TalosVersion {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Patch version.
    pub patch: u64,
    /// Pre-release identifiers (empty for a release).
    pub pre: Vec<PreRelease>,
    /// Build metadata identifiers (empty when absent).
    pub build: Vec<String>,
}

impl TalosVersion {
    /// A release version `vMAJOR.MINOR.PATCH`.
    pub const fn new(major: u64, minor: u64, patch: u64) -> TalosVersion {
        TalosVersion {
            major,
            minor,
            patch,
            pre: Vec::new(),
            build: Vec::new(),
        }
    }

    /// Strict parse of a version *without* a `v` prefix (blang/semver `Parse`).
    pub fn parse_strict(s: &str) -> Result<TalosVersion, VersionError> {
        if s.is_empty() {
            return Err(VersionError::new("Version string empty"));
        }
        let parts: Vec<&str> = s.splitn(3, '.').collect();
        if parts.len() != 3 {
            return Err(VersionError::new("No Major.Minor.Patch elements found"));
        }
        let major = parse_number_part(parts[0], "major", "Major")?;
        let minor = parse_number_part(parts[1], "minor", "Minor")?;

        let mut patch_str = parts[2];
        let mut build_parts: Vec<&str> = Vec::new();
        let mut pre_parts: Vec<&str> = Vec::new();
        if let Some(i) = patch_str.find('+') {
            build_parts = patch_str[i + 1..].split('.').collect();
            patch_str = &patch_str[..i];
        }
        if let Some(i) = patch_str.find('-') {
            pre_parts = patch_str[i + 1..].split('.').collect();
            patch_str = &patch_str[..i];
        }
        let patch = parse_number_part(patch_str, "patch", "Patch")?;

        let pre = pre_parts
            .into_iter()
            .map(PreRelease::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let mut build = Vec::with_capacity(build_parts.len());
        for b in build_parts {
            if b.is_empty() {
                return Err(VersionError::new("Build meta data is empty"));
            }
            if !contains_only_alphanum(b) {
                return Err(VersionError::new(format!(
                    "Invalid character(s) found in build meta data {}",
                    quote(b)
                )));
            }
            build.push(b.to_string());
        }
        Ok(TalosVersion {
            major,
            minor,
            patch,
            pre,
            build,
        })
    }

    /// Tolerant parse (blang/semver v4 `ParseTolerant`): trims whitespace, strips one leading
    /// `v`, removes leading zeroes from each of the (up to three) dot-separated parts, and pads a
    /// missing minor and/or patch with `0` — refused when the shortened version's last part
    /// contains `-` or `+` (`Short version cannot contain PreRelease/Build meta data`). The result
    /// then goes through the strict parser.
    pub fn parse_tolerant(s: &str) -> Result<TalosVersion, VersionError> {
        let s = s.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let mut parts: Vec<String> = s.splitn(3, '.').map(str::to_string).collect();
        for part in parts.iter_mut() {
            if part.len() > 1 {
                let trimmed = part.trim_start_matches('0');
                let starts_with_digit = trimmed.bytes().next().is_some_and(|b| b.is_ascii_digit());
                *part = if starts_with_digit {
                    trimmed.to_string()
                } else {
                    format!("0{trimmed}")
                };
            }
        }
        if parts.len() < 3 {
            let last = parts.last().map(String::as_str).unwrap_or("");
            if last.contains(['+', '-']) {
                return Err(VersionError::new(
                    "Short version cannot contain PreRelease/Build meta data",
                ));
            }
            while parts.len() < 3 {
                parts.push("0".to_string());
            }
        }
        TalosVersion::parse_strict(&parts.join("."))
    }

    /// True when the version has pre-release identifiers.
    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }

    /// The version without its `v` prefix (Go's `Version.String()`), e.g. `1.12.0-beta.1`.
    pub fn semver_string(&self) -> String {
        let mut out = format!("{}.{}.{}", self.major, self.minor, self.patch);
        if !self.pre.is_empty() {
            out.push('-');
            let pre: Vec<String> = self.pre.iter().map(ToString::to_string).collect();
            out.push_str(&pre.join("."));
        }
        if !self.build.is_empty() {
            out.push('+');
            out.push_str(&self.build.join("."));
        }
        out
    }

    /// The tag form with the `v` prefix, e.g. `v1.12.0-beta.1` (same as `Display`).
    pub fn tag(&self) -> String {
        format!("v{}", self.semver_string())
    }

    /// Semver precedence, ignoring build metadata (blang/semver `Version.Compare`).
    pub fn precedence_cmp(&self, other: &TalosVersion) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            })
    }

    /// The `(major, minor, patch)` triple, the only part quirks look at.
    pub fn core(&self) -> (u64, u64, u64) {
        (self.major, self.minor, self.patch)
    }

    /// Image Factory rule: `talosctl` downloads exist for versions ≥ `1.11.0-alpha.3`
    /// (full semver comparison, pre-release included).
    pub fn supports_talosctl_downloads(&self) -> bool {
        let min = TalosVersion {
            pre: vec![PreRelease::Alpha("alpha".into()), PreRelease::Numeric(3)],
            ..TalosVersion::new(1, 11, 0)
        };
        self.precedence_cmp(&min) != Ordering::Less
    }
}

impl Ord for TalosVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.precedence_cmp(other)
            .then_with(|| self.build.cmp(&other.build))
    }
}

impl PartialOrd for TalosVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for TalosVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.semver_string())
    }
}

impl FromStr for TalosVersion {
    type Err = VersionError;

    /// The factory's request rule: prepend `v` when missing, then strict-parse what follows
    /// the `v`. So exactly one optional lowercase `v` is accepted; `1.9`, `v1.9`, `V1.9.0` and
    /// ` 1.9.0` are errors.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_user_version(s)
    }
}

/// Parses a version a user gave: in a request path, an assignment or the configuration
/// (`build.minTalosVersion`, `build.brokenTalosVersions`). Upstream's rule: a `v` is prepended
/// when missing, then the version is parsed strictly; so `1.9.0` and `v1.9.0` are the same
/// version, and `1.9`, `vv1.9.0`, `V1.9.0` and ` 1.9.0` are errors. Registry tags are parsed
/// with [`TalosVersion::parse_tolerant`] instead. Every version string that comes from a user
/// goes through here (`TalosVersion::from_str` is this function).
pub fn parse_user_version(raw: &str) -> Result<TalosVersion, VersionError> {
    TalosVersion::parse_strict(raw.strip_prefix('v').unwrap_or(raw))
}

impl Serialize for TalosVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TalosVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn contains_only_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

fn contains_only_alphanum(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn has_leading_zero(s: &str) -> bool {
    s.len() > 1 && s.starts_with('0')
}

/// Go's `strconv.ParseUint(s, 10, 64)` on a digits-only string, with its error wording.
fn parse_u64(s: &str) -> Result<u64, VersionError> {
    if s.is_empty() {
        return Err(VersionError::new(format!(
            "strconv.ParseUint: parsing {}: invalid syntax",
            quote(s)
        )));
    }
    s.parse::<u64>().map_err(|_| {
        VersionError::new(format!(
            "strconv.ParseUint: parsing {}: value out of range",
            quote(s)
        ))
    })
}

fn parse_number_part(s: &str, lower: &str, upper: &str) -> Result<u64, VersionError> {
    if !contains_only_digits(s) {
        return Err(VersionError::new(format!(
            "Invalid character(s) found in {lower} number {}",
            quote(s)
        )));
    }
    if has_leading_zero(s) {
        return Err(VersionError::new(format!(
            "{upper} number must not contain leading zeroes {}",
            quote(s)
        )));
    }
    parse_u64(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> TalosVersion {
        s.parse().unwrap()
    }

    #[test]
    fn strict_parse_accepts_optional_v() {
        assert_eq!(v("1.9.0"), TalosVersion::new(1, 9, 0));
        assert_eq!(v("v1.9.0"), TalosVersion::new(1, 9, 0));
        let b = v("v1.12.0-beta.1");
        assert_eq!(
            b.pre,
            vec![PreRelease::Alpha("beta".into()), PreRelease::Numeric(1)]
        );
        assert_eq!(b.to_string(), "v1.12.0-beta.1");
        let m = v("1.2.3-rc.1+build.5-x");
        assert_eq!(m.build, vec!["build".to_string(), "5-x".to_string()]);
        assert_eq!(m.to_string(), "v1.2.3-rc.1+build.5-x");
        assert_eq!(v("1.2.3-rc-1").pre, vec![PreRelease::Alpha("rc-1".into())]);
    }

    #[test]
    fn strict_parse_rejects() {
        let cases = [
            ("", "Version string empty"),
            ("v", "Version string empty"),
            ("1.9", "No Major.Minor.Patch elements found"),
            ("v1.9", "No Major.Minor.Patch elements found"),
            (
                "vv1.9.0",
                "Invalid character(s) found in major number \"v1\"",
            ),
            (
                "V1.9.0",
                "Invalid character(s) found in major number \"V1\"",
            ),
            (
                " 1.9.0",
                "Invalid character(s) found in major number \" 1\"",
            ),
            (
                "01.9.0",
                "Major number must not contain leading zeroes \"01\"",
            ),
            (
                "1.09.0",
                "Minor number must not contain leading zeroes \"09\"",
            ),
            (
                "1.9.00",
                "Patch number must not contain leading zeroes \"00\"",
            ),
            (
                "1.9.0.1",
                "Invalid character(s) found in patch number \"0.1\"",
            ),
            ("1.9.0-", "Prerelease is empty"),
            ("1.9.0-beta..1", "Prerelease is empty"),
            (
                "1.9.0-beta.01",
                "Numeric PreRelease version must not contain leading zeroes \"01\"",
            ),
            (
                "1.9.0-be_ta",
                "Invalid character(s) found in prerelease \"be_ta\"",
            ),
            ("1.9.0+", "Build meta data is empty"),
            (
                "1.9.0+a_b",
                "Invalid character(s) found in build meta data \"a_b\"",
            ),
            ("1..0", "strconv.ParseUint: parsing \"\": invalid syntax"),
            (
                "18446744073709551616.0.0",
                "strconv.ParseUint: parsing \"18446744073709551616\": value out of range",
            ),
        ];
        for (input, msg) in cases {
            let err = input.parse::<TalosVersion>().unwrap_err();
            assert_eq!(err.to_string(), msg, "{input:?}");
        }
    }

    #[test]
    fn tolerant_parse() {
        let ok = [
            ("v1.9", "v1.9.0"),
            ("1", "v1.0.0"),
            (" v1.10.2 \n", "v1.10.2"),
            ("v1.09.01", "v1.9.1"),
            ("v1.9.00-rc.1", "v1.9.0-rc.1"),
            ("v1.9.0-beta.0", "v1.9.0-beta.0"),
            ("1.2.3+meta", "v1.2.3+meta"),
            ("000.0.0", "v0.0.0"),
        ];
        for (input, want) in ok {
            assert_eq!(
                TalosVersion::parse_tolerant(input).unwrap().to_string(),
                want,
                "{input:?}"
            );
        }
        for bad in [
            "",
            "latest",
            "v1.9-rc.1",
            "v1-rc",
            "v1.2+b",
            "vv1.2.3",
            "1.2.3.4",
            "sha256-abc",
        ] {
            assert!(TalosVersion::parse_tolerant(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            TalosVersion::parse_tolerant("v1.9-rc")
                .unwrap_err()
                .to_string(),
            "Short version cannot contain PreRelease/Build meta data"
        );
        // Three dot-separated parts, so not "short": the minor number is invalid.
        assert_eq!(
            TalosVersion::parse_tolerant("v1.9-rc.1")
                .unwrap_err()
                .to_string(),
            "Invalid character(s) found in minor number \"9-rc\""
        );
    }

    #[test]
    fn ordering_is_semver_precedence() {
        let mut list: Vec<TalosVersion> = [
            "1.10.0",
            "1.10.0-rc.1",
            "1.10.0-alpha.10",
            "1.10.0-alpha.2",
            "1.10.0-beta.0",
            "1.9.6",
            "1.10.0-alpha",
            "1.10.0-1",
            "1.10.0-alpha.beta",
        ]
        .iter()
        .map(|s| v(s))
        .collect();
        list.sort();
        let got: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "v1.9.6",
                "v1.10.0-1",
                "v1.10.0-alpha",
                "v1.10.0-alpha.2",
                "v1.10.0-alpha.10",
                "v1.10.0-alpha.beta",
                "v1.10.0-beta.0",
                "v1.10.0-rc.1",
                "v1.10.0",
            ]
        );
        assert_eq!(v("1.2.3+a").precedence_cmp(&v("1.2.3+b")), Ordering::Equal);
        assert_ne!(v("1.2.3+a"), v("1.2.3+b"));
    }

    #[test]
    fn serde_as_string() {
        let x = v("1.11.2");
        assert_eq!(serde_json::to_string(&x).unwrap(), "\"v1.11.2\"");
        let y: TalosVersion = serde_json::from_str("\"1.11.2\"").unwrap();
        assert_eq!(y, x);
        assert!(serde_json::from_str::<TalosVersion>("\"1.11\"").is_err());
    }
}
