//! The cache signing key (P-256): every built asset's store entry is signed, and an entry whose
//! signature does not verify is rebuilt, never served. The key comes from
//! `cache.signingKeyPath` (PEM, PKCS#8 or SEC1 — e.g. `openssl ecparam -name prime256v1 -genkey
//! -noout`, as upstream), or is generated on first start and kept with mode 0600 in the data
//! directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};

/// A key problem.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The key file could not be read or written.
    #[error("signing key {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The file is not a P-256 private key in PEM.
    #[error("signing key {path}: not a P-256 private key in PEM (PKCS#8 or SEC1): {message}")]
    Format {
        /// The file.
        path: String,
        /// Parser detail.
        message: String,
    },
}

/// Signs and verifies cache entries.
#[derive(Clone)]
pub struct CacheSigner {
    key: SigningKey,
    public_pem: String,
}

impl CacheSigner {
    /// Loads the key at `path`; if it does not exist and `generate` is true, creates one there
    /// (mode 0600).
    pub fn load_or_generate(path: &Path, generate: bool) -> Result<CacheSigner, SigningError> {
        let shown = path.display().to_string();
        let io = |e: std::io::Error| SigningError::Io {
            path: shown.clone(),
            message: e.to_string(),
        };
        let key = match std::fs::read_to_string(path) {
            Ok(pem) => parse_private_key(&pem).map_err(|message| SigningError::Format {
                path: shown.clone(),
                message,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && generate => {
                let key = SigningKey::random(&mut rand_core::OsRng);
                let pem = key
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| SigningError::Format {
                        path: shown.clone(),
                        message: e.to_string(),
                    })?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                crate::atomic_file::write_private(path, pem.as_bytes()).map_err(io)?;
                tracing::info!(path = %shown, "generated a new cache signing key");
                key
            }
            Err(e) => return Err(io(e)),
        };
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %shown, "cache signing key is readable by others; chmod 600 it");
        }
        Ok(Self::from_key(key))
    }

    /// A signer for an in-memory key (tests).
    pub fn from_key(key: SigningKey) -> CacheSigner {
        let public_pem = VerifyingKey::from(&key)
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default();
        CacheSigner { key, public_pem }
    }

    /// The public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        self.key.verifying_key()
    }

    /// The public key as PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// Signs `message` (ECDSA P-256 / SHA-256, DER).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let sig: Signature = self.key.sign(message);
        sig.to_der().as_bytes().to_vec()
    }

    /// Verifies a DER signature made by [`CacheSigner::sign`].
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = Signature::from_der(signature) else {
            return false;
        };
        VerifyingKey::from(&self.key).verify(message, &sig).is_ok()
    }
}

fn parse_private_key(pem: &str) -> Result<SigningKey, String> {
    if let Ok(k) = SigningKey::from_pkcs8_pem(pem) {
        return Ok(k);
    }
    // SEC1 "EC PRIVATE KEY", as `openssl ecparam -genkey -noout` writes.
    let secret = p256::SecretKey::from_sec1_pem(pem).map_err(|e| e.to_string())?;
    Ok(SigningKey::from(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_load_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let a = CacheSigner::load_or_generate(&path, true).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = CacheSigner::load_or_generate(&path, false).unwrap();
        let sig = a.sign(b"asset|sha256:x");
        assert!(b.verify(b"asset|sha256:x", &sig));
        assert!(!b.verify(b"asset|sha256:y", &sig));
        assert!(!b.verify(b"asset|sha256:x", b"garbage"));
        assert!(a.public_key_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
        let other = CacheSigner::load_or_generate(&dir.path().join("other.pem"), true).unwrap();
        assert!(!other.verify(b"asset|sha256:x", &sig));
    }

    #[test]
    fn bad_or_missing_keys_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let missing = CacheSigner::load_or_generate(&dir.path().join("nope.pem"), false);
        assert!(matches!(missing, Err(SigningError::Io { .. })));
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "not a key").unwrap();
        let err = CacheSigner::load_or_generate(&bad, false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("P-256"), "{err}");
    }
}
