//! The admin bearer token for `/api/v1/…`: from the config, or generated on first start into
//! `<dataDir>/admin-token` (mode 0600) and reused afterwards.

use std::path::Path;

use anyhow::Context;

/// Returns the configured token, or the one in `path`, generating it there when missing.
pub fn load_or_create(configured: Option<&str>, path: &Path) -> anyhow::Result<String> {
    if let Some(configured) = configured {
        return Ok(configured.to_string());
    }
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    crate::atomic_file::write_private(path, format!("{token}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated the admin API token");
    Ok(token)
}

/// Reads the token a CLI should use: `configured`, else the file (without creating it).
pub fn read(configured: Option<&str>, path: &Path) -> Option<String> {
    if let Some(configured) = configured {
        return Some(configured.to_string());
    }
    std::fs::read_to_string(path)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Compares a presented `Authorization` header value with the token in constant time. The
/// scheme name is case-insensitive (RFC 9110 §11.1): `Bearer`, `bearer`, `BEARER`.
pub fn authorized(header: Option<&str>, token: &str) -> bool {
    let Some(presented) = header.and_then(|h| {
        let (scheme, credentials) = h.trim_start().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(credentials)
    }) else {
        return false;
    };
    let (a, b) = (presented.trim().as_bytes(), token.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_once_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-token");
        let t1 = load_or_create(None, &path).unwrap();
        assert_eq!(t1.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create(None, &path).unwrap(), t1);
        assert_eq!(read(None, &path), Some(t1.clone()));
        assert_eq!(load_or_create(Some("fixed"), &path).unwrap(), "fixed");
    }

    #[test]
    fn bearer_check() {
        assert!(authorized(Some("Bearer abc"), "abc"));
        assert!(authorized(Some("bearer abc"), "abc"));
        assert!(authorized(Some("BEARER  abc"), "abc"));
        assert!(!authorized(Some("Basic abc"), "abc"));
        assert!(!authorized(Some("Bearerabc"), "abc"));
        assert!(!authorized(Some("Bearer abd"), "abc"));
        assert!(!authorized(Some("Bearer ab"), "abc"));
        assert!(!authorized(Some("abc"), "abc"));
        assert!(!authorized(None, "abc"));
    }
}
