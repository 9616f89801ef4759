//! Version-range constraints of extension manifests (`compatibility.talos.version`), with the
//! semantics of `github.com/blang/semver/v4` `ParseRange` as Talos calls it: a `v` before a digit
//! is removed first (Talos `trim`), then
//!
//! - `||` separates alternatives, whitespace separates conditions that must all hold;
//! - an operator (`>=`, `<=`, `>`, `<`, `=`, `==`, `!=`, `!`, none = `=`) may be followed by
//!   spaces before its version (`>= 1.5.0`);
//! - versions are strict `major.minor.patch[-pre][+build]`, except that `x` wildcards
//!   (`1.x`, `1.2.x`) expand as blang does (`1.x` → `>=1.0.0 <2.0.0`, `>1.x` → `>=2.0.0`, …);
//! - an empty constraint accepts every version.

use std::cmp::Ordering;

/// A parsed semantic version (`major.minor.patch`, optional pre-release identifiers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    core: (u64, u64, u64),
    pre: Vec<Ident>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ident {
    Num(u64),
    Alpha(String),
}

impl Version {
    /// A release version (no pre-release part).
    pub(crate) fn release(major: u64, minor: u64, patch: u64) -> Version {
        Version {
            core: (major, minor, patch),
            pre: Vec::new(),
        }
    }

    /// blang `Parse`: strict `X.Y.Z[-pre][+build]`, no leading zeros, no `v`.
    fn parse(s: &str) -> Result<Version, String> {
        let bad = || format!("invalid version {s:?}");
        let (rest, _build) = match s.split_once('+') {
            Some((r, b)) => {
                if b.is_empty() || b.split('.').any(|p| p.is_empty() || !is_ident(p)) {
                    return Err(bad());
                }
                (r, Some(b))
            }
            None => (s, None),
        };
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (rest, None),
        };
        let nums: Vec<&str> = core.split('.').collect();
        if nums.len() != 3 {
            return Err(bad());
        }
        let mut parsed = [0u64; 3];
        for (slot, n) in parsed.iter_mut().zip(&nums) {
            *slot = parse_num(n).ok_or_else(bad)?;
        }
        let mut idents = Vec::new();
        if let Some(p) = pre {
            for part in p.split('.') {
                if part.is_empty() || !is_ident(part) {
                    return Err(bad());
                }
                if part.bytes().all(|b| b.is_ascii_digit()) {
                    idents.push(Ident::Num(parse_num(part).ok_or_else(bad)?));
                } else {
                    idents.push(Ident::Alpha(part.to_string()));
                }
            }
        }
        Ok(Version {
            core: (parsed[0], parsed[1], parsed[2]),
            pre: idents,
        })
    }
}

fn is_ident(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A decimal number without leading zeros (blang rejects `01`).
fn parse_num(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.core
            .cmp(&other.core)
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let c = match (a, b) {
                            (Ident::Num(x), Ident::Num(y)) => x.cmp(y),
                            (Ident::Num(_), Ident::Alpha(_)) => Ordering::Less,
                            (Ident::Alpha(_), Ident::Num(_)) => Ordering::Greater,
                            (Ident::Alpha(x), Ident::Alpha(y)) => x.cmp(y),
                        };
                        if c != Ordering::Equal {
                            return c;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "" | "=" | "==" => Op::Eq,
            "!" | "!=" => Op::Ne,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            _ => return None,
        })
    }

    fn holds(self, v: &Version, bound: &Version) -> bool {
        let c = v.cmp(bound);
        match self {
            Op::Eq => c == Ordering::Equal,
            Op::Ne => c != Ordering::Equal,
            Op::Gt => c == Ordering::Greater,
            Op::Ge => c != Ordering::Less,
            Op::Lt => c == Ordering::Less,
            Op::Le => c != Ordering::Greater,
        }
    }
}

/// A parsed range: alternatives (OR) of conjunctions (AND) of comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Range {
    any_of: Vec<Vec<(Op, Version)>>,
}

impl Range {
    /// Parses a Talos compatibility constraint (with the `v` stripping Talos applies).
    pub(crate) fn parse(constraint: &str) -> Result<Range, String> {
        let trimmed = strip_v(constraint);
        let parts = split_and_trim(&trimmed);
        let mut any_of = Vec::new();
        let mut current: Vec<String> = Vec::new();
        let mut alternatives = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            if p == "||" {
                if i == 0 || i + 1 == parts.len() || current.is_empty() {
                    return Err(format!("invalid range {constraint:?}: misplaced ||"));
                }
                alternatives.push(std::mem::take(&mut current));
            } else {
                current.push(p.clone());
            }
        }
        if !current.is_empty() {
            alternatives.push(current);
        }
        for alt in alternatives {
            let mut all_of = Vec::new();
            for cond in alt {
                let expanded = expand_wildcard(&cond)
                    .map_err(|e| format!("invalid range {constraint:?}: {e}"))?;
                for group in &expanded {
                    // A wildcard may expand to an OR of two conditions (only for `!=1.x`).
                    if group.len() != 1 {
                        return Err(format!(
                            "invalid range {constraint:?}: {cond:?} is not supported"
                        ));
                    }
                }
                for group in expanded {
                    let c = &group[0];
                    let at = c.find(|ch: char| ch.is_ascii_digit()).ok_or_else(|| {
                        format!("invalid range {constraint:?}: no version in {c:?}")
                    })?;
                    let op = Op::parse(&c[..at]).ok_or_else(|| {
                        format!(
                            "invalid range {constraint:?}: unknown operator {:?}",
                            &c[..at]
                        )
                    })?;
                    let v = Version::parse(&c[at..])
                        .map_err(|e| format!("invalid range {constraint:?}: {e}"))?;
                    all_of.push((op, v));
                }
            }
            any_of.push(all_of);
        }
        Ok(Range { any_of })
    }

    /// True if `v` satisfies the range (an empty range accepts everything).
    pub(crate) fn matches(&self, v: &Version) -> bool {
        self.any_of.is_empty()
            || self
                .any_of
                .iter()
                .any(|all| all.iter().all(|(op, bound)| op.holds(v, bound)))
    }
}

/// Talos `trim`: removes a `v` directly followed by a digit.
fn strip_v(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    for (i, ch) in s.char_indices() {
        if ch == 'v' && b.get(i + 1).is_some_and(|n| n.is_ascii_digit()) {
            continue;
        }
        out.push(ch);
    }
    out
}

/// blang `splitAndTrim`: splits on spaces, except spaces right after an operator character.
fn split_and_trim(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut last = 0usize;
    let mut last_char = 0u8;
    for (i, &c) in b.iter().enumerate() {
        if c == b' ' && !matches!(last_char, b'>' | b'<' | b'=') {
            if i > last {
                out.push(s[last..i].to_string());
            }
            last = i + 1;
        } else if c != b' ' {
            last_char = c;
        }
    }
    if last < b.len() {
        out.push(s[last..].to_string());
    }
    out.into_iter()
        .map(|p| p.replace(' ', ""))
        .filter(|p| !p.is_empty())
        .collect()
}

/// blang `expandWildcardVersion` for one condition: `[[cond]]`, or an OR of conditions.
fn expand_wildcard(cond: &str) -> Result<Vec<Vec<String>>, String> {
    if !cond.contains('x') {
        return Ok(vec![vec![cond.to_string()]]);
    }
    let at = cond
        .find(|ch: char| ch.is_ascii_digit())
        .ok_or_else(|| format!("no version in {cond:?}"))?;
    let (op, ver) = cond.split_at(at);
    let nums: Vec<&str> = ver.split('.').collect();
    let bad = || format!("invalid wildcard version {ver:?}");
    let major: u64 = nums.first().and_then(|n| parse_num(n)).ok_or_else(bad)?;
    let (lower, upper) = match nums.as_slice() {
        [_, "x"] | [_, "x", "x"] => (format!("{major}.0.0"), format!("{}.0.0", major + 1)),
        [_, minor, "x"] => {
            let minor = parse_num(minor).ok_or_else(bad)?;
            (
                format!("{major}.{minor}.0"),
                format!("{major}.{}.0", minor + 1),
            )
        }
        _ => return Err(bad()),
    };
    Ok(match op {
        "" | "=" | "==" => vec![vec![format!(">={lower}")], vec![format!("<{upper}")]],
        ">" => vec![vec![format!(">={upper}")]],
        ">=" => vec![vec![format!(">={lower}")]],
        "<" => vec![vec![format!("<{lower}")]],
        "<=" => vec![vec![format!("<{upper}")]],
        "!" | "!=" => vec![vec![format!("<{lower}"), format!(">={upper}")]],
        _ => return Err(format!("unknown operator {op:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(range: &str, v: (u64, u64, u64)) -> bool {
        Range::parse(range)
            .unwrap()
            .matches(&Version::release(v.0, v.1, v.2))
    }

    #[test]
    fn talos_constraints() {
        assert!(ok(">= v1.5.0", (1, 11, 6)));
        assert!(ok(">= v1.5.0", (1, 5, 0)));
        assert!(!ok(">= v1.5.0", (1, 4, 9)));
        assert!(!ok("< v1.0.0", (1, 8, 4)));
        assert!(ok("< v1.0.0", (0, 14, 0)));
        assert!(ok(">=1.2.0 <2.0.0", (1, 9, 0)));
        assert!(!ok(">=1.2.0 <2.0.0", (2, 0, 0)));
        assert!(ok("<1.0.0 || >=1.8.0", (1, 8, 4)));
        assert!(!ok("<1.0.0 || >=1.9.0", (1, 8, 4)));
        assert!(ok("", (1, 8, 4)));
        assert!(ok("   ", (1, 8, 4)));
        assert!(ok(">= 1.0.0", (1, 0, 0)));
        assert!(ok("v1.8.4", (1, 8, 4)));
        assert!(ok("!=1.8.3", (1, 8, 4)));
        assert!(!ok("!= v1.8.4", (1, 8, 4)));
        assert!(ok("<=1.8.4 >1.8.3", (1, 8, 4)));
        assert!(ok("1.x", (1, 11, 6)));
        assert!(!ok("1.x", (2, 0, 0)));
        assert!(ok(">1.10.x", (1, 11, 0)));
        assert!(!ok(">1.11.x", (1, 11, 6)));
        assert!(ok("<=1.11.x", (1, 11, 6)));
    }

    #[test]
    fn prereleases_order_before_releases() {
        // A release satisfies ">= 1.9.0-alpha.0", and 1.8.4 does not.
        assert!(ok(">= v1.9.0-alpha.0", (1, 9, 0)));
        assert!(!ok(">= v1.9.0-alpha.0", (1, 8, 4)));
        assert!(!ok("< 1.9.0-alpha.0", (1, 9, 0)));
        let a = Version::parse("1.0.0-alpha.1").unwrap();
        let b = Version::parse("1.0.0-alpha.beta").unwrap();
        let c = Version::parse("1.0.0-alpha").unwrap();
        assert!(c < a && a < b);
    }

    #[test]
    fn malformed_ranges_are_errors() {
        for bad in [
            ">= 1.5",
            "~1.2.3",
            "|| >=1.0.0",
            ">=1.0.0 ||",
            ">=01.0.0",
            "latest",
            "1.2.3.4",
        ] {
            assert!(Range::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
