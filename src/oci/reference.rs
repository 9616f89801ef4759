//! Image names and references: `registry/repository[:tag][@digest]`, validated against the OCI
//! distribution grammar so a name can never escape into a path or a foreign namespace.

use std::fmt;
use std::str::FromStr;

use crate::store::Digest;

/// Docker Hub's name in image references.
pub const DOCKER_HUB: &str = "docker.io";

/// Why a name or reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// The repository does not match the distribution-spec grammar.
    #[error("invalid repository name {0:?}: want lowercase path components like siderolabs/imager")]
    Repository(String),
    /// The registry host is not a plausible `host[:port]`.
    #[error("invalid registry host {0:?}")]
    Registry(String),
    /// The tag is not `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
    #[error("invalid tag {0:?}")]
    Tag(String),
    /// The digest is not `sha256:<64 hex>`.
    #[error("invalid digest {0:?}: want sha256:<64 hex>")]
    Digest(String),
    /// The whole reference has no repository.
    #[error("invalid image reference {0:?}")]
    Reference(String),
}

/// A repository on a registry, e.g. `ghcr.io` + `siderolabs/imager`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageName {
    registry: String,
    repository: String,
}

impl ImageName {
    /// Validates and builds a name.
    pub fn new(registry: &str, repository: &str) -> Result<ImageName, RefError> {
        if !is_valid_registry(registry) {
            return Err(RefError::Registry(registry.to_string()));
        }
        if !is_valid_repository(repository) {
            return Err(RefError::Repository(repository.to_string()));
        }
        Ok(ImageName {
            registry: registry.to_string(),
            repository: repository.to_string(),
        })
    }

    /// The registry host as written in image references (`ghcr.io`, `docker.io`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path (`siderolabs/imager`).
    pub fn repository(&self) -> &str {
        &self.repository
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// A tag or a digest: what a manifest request names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TagOrDigest {
    /// A tag such as `v1.11.6`.
    Tag(String),
    /// A content digest.
    Digest(Digest),
}

impl TagOrDigest {
    /// Parses a reference segment: a digest if it has `sha256:`, otherwise a tag.
    pub fn parse(s: &str) -> Result<TagOrDigest, RefError> {
        if s.contains(':') {
            s.parse::<Digest>()
                .map(TagOrDigest::Digest)
                .map_err(|_| RefError::Digest(s.to_string()))
        } else if is_valid_tag(s) {
            Ok(TagOrDigest::Tag(s.to_string()))
        } else {
            Err(RefError::Tag(s.to_string()))
        }
    }
}

impl fmt::Display for TagOrDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagOrDigest::Tag(t) => f.write_str(t),
            TagOrDigest::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// A full image reference: a name plus a tag, a digest, or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry and repository.
    pub name: ImageName,
    /// The tag, if any.
    pub tag: Option<String>,
    /// The digest, if any (wins over the tag when resolving).
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// What to resolve: the digest if present, else the tag (`latest` when neither).
    pub fn target(&self) -> TagOrDigest {
        match (&self.digest, &self.tag) {
            (Some(d), _) => TagOrDigest::Digest(*d),
            (None, Some(t)) => TagOrDigest::Tag(t.clone()),
            (None, None) => TagOrDigest::Tag("latest".to_string()),
        }
    }
}

impl FromStr for ImageRef {
    type Err = RefError;

    /// Parses `[registry/]repository[:tag][@digest]` the way container tools do: the first
    /// component is a registry if it contains `.` or `:` or is `localhost`; otherwise the image
    /// is on Docker Hub (with `library/` for single-component names).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RefError::Reference(s.to_string());
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(
                    d.parse::<Digest>()
                        .map_err(|_| RefError::Digest(d.to_string()))?,
                ),
            ),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (path, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if !is_valid_tag(tag) {
                    return Err(RefError::Tag(tag.to_string()));
                }
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(bad());
        }
        let (registry, repository) = match path.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ if path.contains('/') => (DOCKER_HUB.to_string(), path.to_string()),
            _ => (DOCKER_HUB.to_string(), format!("library/{path}")),
        };
        Ok(ImageRef {
            name: ImageName::new(&registry, &repository)?,
            tag,
            digest,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Distribution-spec repository grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most 255 bytes.
pub fn is_valid_repository(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.split('/').all(is_valid_component)
}

fn is_valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__", or one or more "-".
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !is_alnum(b[i]) {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Tag grammar `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A registry host: DNS labels or an IP, optional `:port`; no path, no user info.
pub fn is_valid_registry(host: &str) -> bool {
    if host.is_empty() || host.len() > 255 {
        return false;
    }
    let (name, port) = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => match &host[end + 1..] {
                "" => (host, None),
                rest => match rest.strip_prefix(':') {
                    Some(p) => (&host[..=end], Some(p)),
                    None => return false,
                },
            },
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return false;
    }
    if name.starts_with('[') {
        return name.ends_with(']')
            && name[1..name.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_ok();
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_grammar() {
        for ok in ["a", "siderolabs/imager", "a.b_c__d-e--f/g", "x0/y1/z2"] {
            assert!(is_valid_repository(ok), "{ok}");
        }
        for bad in [
            "", "A", "a//b", "../etc", "a/..", "a/./b", "-a", "a-", "a___b", "a..b", "a/b/", "/a",
            "a b", "a%2fb",
        ] {
            assert!(!is_valid_repository(bad), "{bad}");
        }
        assert!(!is_valid_repository(&"a".repeat(256)));
    }

    #[test]
    fn tags_and_registries() {
        assert!(is_valid_tag("v1.11.6"));
        assert!(is_valid_tag("_x"));
        assert!(!is_valid_tag(".x"));
        assert!(!is_valid_tag(&"a".repeat(129)));
        assert!(is_valid_registry("ghcr.io"));
        assert!(is_valid_registry("127.0.0.1:5000"));
        assert!(is_valid_registry("localhost"));
        assert!(is_valid_registry("[::1]:5000"));
        assert!(!is_valid_registry("ghcr.io/x"));
        assert!(!is_valid_registry("user@host"));
        assert!(!is_valid_registry("host:99999"));
    }

    #[test]
    fn parse_references() {
        let r: ImageRef = "ghcr.io/siderolabs/imager:v1.11.6".parse().unwrap();
        assert_eq!(r.name.registry(), "ghcr.io");
        assert_eq!(r.name.repository(), "siderolabs/imager");
        assert_eq!(r.tag.as_deref(), Some("v1.11.6"));
        let r: ImageRef = "nginx".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/nginx");
        assert_eq!(r.target(), TagOrDigest::Tag("latest".into()));
        let r: ImageRef = "localhost:5000/a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000"
            .parse()
            .unwrap();
        assert_eq!(r.name.registry(), "localhost:5000");
        assert!(matches!(r.target(), TagOrDigest::Digest(_)));
        assert!("ghcr.io/../x:v1".parse::<ImageRef>().is_err());
        assert!("ghcr.io/x:bad tag".parse::<ImageRef>().is_err());
        assert!("".parse::<ImageRef>().is_err());
    }
}
