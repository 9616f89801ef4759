//! TLS for the HTTP listener (rustls with ring).
//!
//! Two sources of certificates:
//! - `http.tls.certFile` / `http.tls.keyFile` (PEM): loaded at start and reloaded on SIGHUP and
//!   whenever either file changes (polled). A reload that fails keeps the certificate in use
//!   and logs the error.
//! - `http.tls.selfSigned`: a per-appliance CA and a server certificate signed by it, under
//!   `<dataDir>/tls/` (keys 0600). The CA (`ca.pem` + `ca-key.pem`) is generated once — RSA,
//!   because iPXE verifies nothing else — or is the operator's, placed there; `ca.pem` is what
//!   clients trust. The server certificate (`server.pem`: the leaf, then `ca.pem`, so the chain
//!   sent ends with the CA) is re-issued by the same CA when the names it must cover change
//!   (`http.externalURL`/`http.externalPXEURL` hosts, `pxe.bootURL`'s host, the advertised
//!   address, `http.tls.extraNames`, `localhost`, `127.0.0.1`, `::1`), when it nears expiry, or
//!   when its chain does not end with the CA (certificates from older versions).
//!
//! Either way the last certificate of the chain, when self-signed, is the **boot anchor**
//! ([`BootAnchor`]): the root the served iPXE binaries are patched to trust
//! (`crate::netboot::served_ipxe`, `crate::ipxe::trust`). Older versions generated an ECDSA
//! P-256 CA; it is kept (API clients trust it), and [`BootAnchor::ipxe_unverifiable`] says why
//! iPXE cannot use it.
//!
//! The acceptor's certificate resolver swaps an `Arc<CertifiedKey>`: handshakes in progress
//! keep the certificate they started with, new ones get the new one.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

/// How often the certificate files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Validity of the self-signed CA and of the server certificates it issues.
const CA_YEARS: i64 = 20;
const SERVER_DAYS: i64 = 825;
/// The server certificate is re-issued when it expires within this many days.
const RENEW_DAYS: i64 = 30;

/// A TLS setup problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key does not fit the certificate or is of an unsupported type.
    #[error("{cert} / {key}: {message}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Generating the self-signed CA or server certificate failed.
    #[error("cannot generate the self-signed certificate: {0}")]
    Generate(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the certificate comes from.
#[derive(Debug, Clone)]
enum Source {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned { dir: PathBuf },
}

/// The TLS side of the HTTP server: an acceptor and what reloads its certificate.
pub struct Tls {
    resolver: Arc<Resolver>,
    acceptor: tokio_rustls::TlsAcceptor,
    source: Source,
    /// (mtime, size, inode) of the certificate and key files at the last (attempted) load.
    stamp: std::sync::Mutex<Option<FileStamps>>,
    /// The root the served iPXE binaries were patched to trust; unset when they are served
    /// as built (then a reload changes nothing they rely on).
    served_trust: std::sync::OnceLock<[u8; 32]>,
}

type FileStamps = [(i64, i64, u64, u64); 2];

#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock").clone())
    }
}

impl Tls {
    /// Sets TLS up from the configuration; `None` when TLS is not configured. `boot_address`:
    /// see [`server_names`].
    pub fn from_config(
        config: &Config,
        boot_address: Option<std::net::Ipv4Addr>,
    ) -> Result<Option<Tls>, TlsError> {
        let tls = &config.http.tls;
        let source = if tls.self_signed {
            let dir = config.data_dir.join("tls");
            ensure_self_signed(&dir, &server_names(config, boot_address))?;
            Source::SelfSigned { dir }
        } else if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            Source::Files {
                cert: cert.clone(),
                key: key.clone(),
            }
        } else {
            return Ok(None);
        };
        let (cert, key) = source.paths();
        let stamp = stamps(&cert, &key);
        let certified = load_pair(&cert, &key)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(Arc::new(certified)),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Generate(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Tls {
            resolver,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            source,
            stamp: std::sync::Mutex::new(stamp),
            served_trust: std::sync::OnceLock::new(),
        }))
    }

    /// The acceptor for the HTTPS listener.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.clone()
    }

    /// The CA certificate clients should trust, for a self-signed setup.
    pub fn ca_path(&self) -> Option<PathBuf> {
        match &self.source {
            Source::SelfSigned { dir } => Some(dir.join("ca.pem")),
            Source::Files { .. } => None,
        }
    }

    /// The boot anchor of the chain in use ([`BootAnchor`]).
    pub fn boot_anchor(&self) -> Result<BootAnchor, AnchorError> {
        let current = self
            .resolver
            .current
            .read()
            .expect("certificate lock")
            .clone();
        boot_anchor_of(&current.cert)
    }

    /// Records the fingerprint the served iPXE binaries were patched to trust (set once, by
    /// `netboot::served_ipxe`), so a reload whose chain ends elsewhere is logged at WARN.
    pub fn note_served_trust(&self, fingerprint: [u8; 32]) {
        let _ = self.served_trust.set(fingerprint);
    }

    /// Whether `chain` ends with another root than the served iPXE binaries trust (false when
    /// they are served as built).
    fn served_root_changed(&self, chain: &[CertificateDer<'_>]) -> bool {
        let anchor = boot_anchor_of(chain).ok().map(|a| a.fingerprint);
        self.served_trust
            .get()
            .is_some_and(|served| anchor.as_ref() != Some(served))
    }

    /// The certificate and key files in use.
    pub fn files(&self) -> (PathBuf, PathBuf) {
        self.source.paths()
    }

    /// Loads the certificate files again and swaps them in. On error the certificate in use
    /// stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (cert, key) = self.source.paths();
        *self.stamp.lock().expect("stamp lock") = stamps(&cert, &key);
        let certified = load_pair(&cert, &key)?;
        if self.served_root_changed(&certified.cert) {
            tracing::warn!(
                cert = %cert.display(),
                "the reloaded certificate chain ends with another root than at start: the served iPXE binaries still trust the root they were patched for; restart bootfactory so HTTPS boot trusts the new one"
            );
        }
        *self.resolver.current.write().expect("certificate lock") = Arc::new(certified);
        Ok(())
    }

    /// Reloads and logs the outcome.
    pub fn reload_logged(&self, why: &str) {
        let (cert, key) = self.source.paths();
        match self.reload() {
            Ok(()) => {
                tracing::info!(cert = %cert.display(), key = %key.display(), why, "TLS certificate reloaded")
            }
            Err(e) => {
                tracing::error!(error = %crate::errors::chain(&e), why, "TLS certificate reload failed; keeping the certificate in use")
            }
        }
    }

    /// Reloads whenever the certificate or key file changes (checked every 2 s).
    pub fn spawn_watch(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (cert, key) = self.source.paths();
                let now = stamps(&cert, &key);
                let changed = *self.stamp.lock().expect("stamp lock") != now;
                if changed && now.is_some() {
                    self.reload_logged("file changed");
                }
            }
        })
    }
}

impl Source {
    fn paths(&self) -> (PathBuf, PathBuf) {
        match self {
            Source::Files { cert, key } => (cert.clone(), key.clone()),
            Source::SelfSigned { dir } => (dir.join("server.pem"), dir.join("server-key.pem")),
        }
    }
}

/// (mtime, ctime, size, inode) of both files (follows symlinks, so a swapped link counts).
fn stamps(cert: &Path, key: &Path) -> Option<FileStamps> {
    let one = |p: &Path| {
        std::fs::metadata(p).ok().map(|m| {
            (
                m.mtime_nsec() + m.mtime() * 1_000_000_000,
                m.ctime(),
                m.size(),
                m.ino(),
            )
        })
    };
    Some([one(cert)?, one(key)?])
}

/// The certificate HTTPS boot trusts: the last certificate of the chain the server sends,
/// which must be self-signed (a root). The served EFI iPXE binaries are patched to trust its
/// SHA-256 ([`crate::ipxe::trust`]).
#[derive(Debug, Clone)]
pub struct BootAnchor {
    /// SHA-256 of the certificate's DER.
    pub fingerprint: [u8; 32],
    /// Its subject, for messages.
    pub subject: String,
    /// Why iPXE cannot verify the chain ending with it, if it cannot (iPXE verifies RSA
    /// keys and RSA PKCS#1 v1.5 signatures only).
    pub ipxe_unverifiable: Option<String>,
}

/// Why a chain has no boot anchor.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// The chain does not end with a self-signed certificate.
    #[error(
        "the certificate chain ends with {subject:?}, issued by {issuer:?}: not a self-signed root, so there is nothing iPXE could be made to trust (append the root CA certificate to the chain file)"
    )]
    NotARoot {
        /// The last certificate's subject.
        subject: String,
        /// Its issuer.
        issuer: String,
    },
    /// A certificate cannot be parsed.
    #[error("certificate {index} of the chain cannot be parsed: {message}")]
    Parse {
        /// Position in the chain (0 = leaf).
        index: usize,
        /// The parser's message.
        message: String,
    },
}

/// The boot anchor of `chain` (leaf first).
pub fn boot_anchor_of(chain: &[CertificateDer<'_>]) -> Result<BootAnchor, AnchorError> {
    use sha2::{Digest, Sha256};
    use x509_parser::oid_registry as oids;
    let mut parsed = Vec::with_capacity(chain.len());
    for (index, der) in chain.iter().enumerate() {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| AnchorError::Parse {
                index,
                message: e.to_string(),
            })?;
        parsed.push(cert);
    }
    let (Some(last), Some(last_der)) = (parsed.last(), chain.last()) else {
        return Err(AnchorError::Parse {
            index: 0,
            message: "empty chain".into(),
        });
    };
    if last.subject().as_raw() != last.issuer().as_raw() {
        return Err(AnchorError::NotARoot {
            subject: last.subject().to_string(),
            issuer: last.issuer().to_string(),
        });
    }
    let rsa_signatures = [
        oids::OID_PKCS1_SHA1WITHRSA,
        oids::OID_PKCS1_SHA224WITHRSA,
        oids::OID_PKCS1_SHA256WITHRSA,
        oids::OID_PKCS1_SHA384WITHRSA,
        oids::OID_PKCS1_SHA512WITHRSA,
    ];
    let mut ipxe_unverifiable = None;
    for (index, cert) in parsed.iter().enumerate() {
        if cert.public_key().algorithm.algorithm != oids::OID_PKCS1_RSAENCRYPTION {
            ipxe_unverifiable = Some(format!(
                "certificate {index} of the chain ({}) has a {} key; iPXE verifies RSA only",
                cert.subject(),
                key_name(&cert.public_key().algorithm.algorithm)
            ));
            break;
        }
        // The root's own signature is never checked (iPXE trusts it by fingerprint).
        let is_root = index + 1 == parsed.len();
        if !is_root && !rsa_signatures.contains(&cert.signature_algorithm.algorithm) {
            ipxe_unverifiable = Some(format!(
                "certificate {index} of the chain ({}) is signed with {}; iPXE verifies RSA PKCS#1 v1.5 signatures only",
                cert.subject(),
                cert.signature_algorithm.algorithm
            ));
            break;
        }
    }
    Ok(BootAnchor {
        fingerprint: Sha256::digest(last_der.as_ref()).into(),
        subject: last.subject().to_string(),
        ipxe_unverifiable,
    })
}

fn key_name(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    if *oid == x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
        "ECDSA".into()
    } else if *oid == x509_parser::oid_registry::OID_SIG_ED25519 {
        "Ed25519".into()
    } else {
        oid.to_string()
    }
}

/// Reads a PEM certificate chain and private key and checks that they belong together.
fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(io_err(cert))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert.to_path_buf(),
            message: format!("not a PEM certificate chain: {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_path_buf(),
            message: "no CERTIFICATE block".into(),
        });
    }
    let key_pem = std::fs::read(key).map_err(io_err(key))?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: key.to_path_buf(),
        message: format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })?;
    let pair = |message: String| TlsError::Pair {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        message,
    };
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| pair(format!("unsupported key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| pair(format!("the key does not match the certificate: {e}")))?;
    Ok(certified)
}

/// The names the self-signed server certificate covers; `boot_address` is the address network
/// boot advertises when `pxe.advertiseAddress` is not set (derived from an interface).
pub fn server_names(config: &Config, boot_address: Option<std::net::Ipv4Addr>) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    names.push(config.external_host());
    if let Some(url) = &config.http.external_pxe_url {
        names.push(url.host());
    }
    if let Some(url) = &config.pxe.boot_url {
        names.push(url.host());
    }
    // The address machines boot from (`pxe.advertiseAddress`, else the interface's).
    if let Some(address) = config.pxe.advertise_address.or(boot_address) {
        names.push(address.to_string());
    }
    names.extend(config.http.tls.extra_names.iter().cloned());
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = n.trim().trim_matches(['[', ']']).to_ascii_lowercase();
        if !n.is_empty() && !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// Size of the RSA keys generated: the CA's (20 years) and the server certificate's.
const CA_RSA_BITS: usize = 3072;
const SERVER_RSA_BITS: usize = 2048;

/// A new RSA key (iPXE verifies RSA only), as an rcgen key pair signing RSA PKCS#1 v1.5 with
/// SHA-256. ring cannot generate RSA keys; the `rsa` crate does, then ring signs with it.
fn generate_rsa(bits: usize) -> Result<rcgen::KeyPair, TlsError> {
    use rsa::pkcs8::EncodePrivateKey as _;
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits)
        .map_err(|e| TlsError::Generate(format!("RSA key: {e}")))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| TlsError::Generate(format!("RSA key: {e}")))?;
    let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
    rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| TlsError::Generate(e.to_string()))
}

/// Reads the CA's private key (PKCS#8, or PKCS#1 for RSA) as an rcgen key pair.
fn load_ca_key(path: &Path) -> Result<rcgen::KeyPair, TlsError> {
    let pem = std::fs::read(path).map_err(io_err(path))?;
    let bad = |message: String| TlsError::Pem {
        path: path.to_path_buf(),
        message,
    };
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| bad(format!("no usable PEM private key: {e}")))?;
    let pkcs8 = match key {
        PrivateKeyDer::Pkcs8(k) => k,
        PrivateKeyDer::Pkcs1(k) => {
            use rsa::pkcs1::DecodeRsaPrivateKey as _;
            use rsa::pkcs8::EncodePrivateKey as _;
            let rsa = rsa::RsaPrivateKey::from_pkcs1_der(k.secret_pkcs1_der())
                .map_err(|e| bad(format!("not a PKCS#1 RSA key: {e}")))?;
            let der = rsa
                .to_pkcs8_der()
                .map_err(|e| bad(format!("cannot convert to PKCS#8: {e}")))?;
            rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec())
        }
        _ => {
            return Err(bad(
                "a SEC1 EC key: convert it to PKCS#8 (openssl pkcs8 -topk8 -nocrypt)".into(),
            ));
        }
    };
    rcgen::KeyPair::try_from(&PrivateKeyDer::Pkcs8(pkcs8))
        .map_err(|e| bad(format!("unsupported CA key: {e}")))
}

/// The certificates of a PEM file, in order.
fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(io_err(path))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: format!("not a PEM certificate chain: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            message: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Creates the CA (once) and a server certificate for `names` in `dir`.
///
/// The CA is `ca.pem` + `ca-key.pem`: generated (RSA, so iPXE can verify what it signs) when
/// neither exists, else used as found — an operator may place their own CA there before the
/// first start (`ca.pem` may hold the CA followed by its issuers up to a root). The server
/// certificate `server.pem` holds the leaf followed by every certificate of `ca.pem`, so the
/// chain clients receive ends with the CA (iPXE trusts the chain's last certificate by
/// fingerprint). Its key is RSA when the CA's is, else ECDSA P-256.
fn ensure_self_signed(dir: &Path, names: &[String]) -> Result<(), TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca-key.pem");
    // Present while a CA is being generated: `ca.pem`/`ca-key.pem` found next to it are
    // leftovers of an interrupted generation (never an operator's files) and are made anew.
    let generating = dir.join("ca.generating");
    let now = time::OffsetDateTime::now_utc();
    if generating.exists() {
        tracing::warn!(dir = %dir.display(), "an earlier CA generation was interrupted: generating the CA anew");
        for f in [&ca_cert, &ca_key] {
            match std::fs::remove_file(f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err(f)(e));
                }
                _ => {}
            }
        }
    }
    match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => check_ca_pair(&ca_cert, &ca_key)?,
        (false, false) => {
            write_file(&generating, b"", 0o600)?;
            let key = generate_rsa(CA_RSA_BITS)?;
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.distinguished_name.push(
                DnType::CommonName,
                format!(
                    "bootfactory appliance CA {}",
                    hex::encode(rand::random::<[u8; 4]>())
                ),
            );
            params
                .distinguished_name
                .push(DnType::OrganizationName, "bootfactory");
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_before = now - time::Duration::days(1);
            params.not_after = now + time::Duration::days(365 * CA_YEARS);
            let cert = params.self_signed(&key).map_err(generate)?;
            write_private(&ca_key, key.serialize_pem().as_bytes())?;
            write_file(&ca_cert, cert.pem().as_bytes(), 0o644)?;
            // A new CA invalidates any server certificate left from an older one.
            let _ = std::fs::remove_file(dir.join("server.pem"));
            std::fs::remove_file(&generating).map_err(io_err(&generating))?;
            tracing::info!(ca = %ca_cert.display(), "generated the appliance TLS CA (RSA)");
        }
        (true, false) | (false, true) => {
            // Never overwrite half of an operator's CA.
            let (present, missing) = if ca_cert.exists() {
                (&ca_cert, &ca_key)
            } else {
                (&ca_key, &ca_cert)
            };
            return Err(TlsError::Pem {
                path: missing.clone(),
                message: format!(
                    "missing while {} exists: supply both the CA certificate and its key, or remove both to have a new CA generated",
                    present.display()
                ),
            });
        }
    }
    let ca_chain = pem_certs(&ca_cert)?;
    let names_file = dir.join("server.names");
    let wanted = names.join("\n") + "\n";
    let server_cert = dir.join("server.pem");
    let server_key = dir.join("server-key.pem");
    let current_names = std::fs::read_to_string(&names_file).unwrap_or_default();
    let expires_soon = std::fs::read_to_string(dir.join("server.expires"))
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .is_none_or(|t| t < (now + time::Duration::days(RENEW_DAYS)).unix_timestamp());
    // Certificates issued before the chain carried the CA (or by another CA) are re-issued.
    let chain_ends_with_ca = pem_certs(&server_cert)
        .ok()
        .is_some_and(|c| c.len() > ca_chain.len() && c.ends_with(&ca_chain));
    if server_cert.exists()
        && server_key.exists()
        && current_names == wanted
        && !expires_soon
        && chain_ends_with_ca
    {
        return Ok(());
    }
    let ca_cert_pem = std::fs::read_to_string(&ca_cert).map_err(io_err(&ca_cert))?;
    let ca_signer = load_ca_key(&ca_key)?;
    let rsa_ca = ca_signer.is_compatible(&rcgen::PKCS_RSA_SHA256);
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_signer).map_err(generate)?;
    let key = if rsa_ca {
        generate_rsa(SERVER_RSA_BITS)?
    } else {
        KeyPair::generate().map_err(generate)?
    };
    let mut params = CertificateParams::new(names.to_vec()).map_err(generate)?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.last().cloned().unwrap_or_default(),
    );
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - time::Duration::days(1);
    let not_after = now + time::Duration::days(SERVER_DAYS);
    params.not_after = not_after;
    let cert = params.signed_by(&key, &issuer).map_err(generate)?;
    let mut chain_pem = cert.pem();
    for c in &ca_chain {
        chain_pem.push_str(&pem_of(c));
    }
    write_private(&server_key, key.serialize_pem().as_bytes())?;
    write_file(&server_cert, chain_pem.as_bytes(), 0o644)?;
    write_file(
        &dir.join("server.expires"),
        format!("{}\n", not_after.unix_timestamp()).as_bytes(),
        0o644,
    )?;
    write_file(&names_file, wanted.as_bytes(), 0o644)?;
    tracing::info!(names = ?names, cert = %server_cert.display(), "issued the TLS server certificate");
    Ok(())
}

/// Checks an existing `ca.pem`/`ca-key.pem` pair (an operator's, typically) before anything is
/// issued from it: the key must be the private half of the first certificate's public key,
/// and that certificate a CA (basicConstraints CA=true; keyCertSign when keyUsage is present).
/// Warns when the key file is readable by group or others.
fn check_ca_pair(ca_cert: &Path, ca_key: &Path) -> Result<(), TlsError> {
    use rcgen::PublicKeyData as _;
    let pair = |message: String| TlsError::Pair {
        cert: ca_cert.to_path_buf(),
        key: ca_key.to_path_buf(),
        message,
    };
    let chain = pem_certs(ca_cert)?;
    let first = chain.first().ok_or_else(|| TlsError::Pem {
        path: ca_cert.to_path_buf(),
        message: "no certificate".into(),
    })?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(first.as_ref()).map_err(|e| TlsError::Pem {
            path: ca_cert.to_path_buf(),
            message: format!("cannot parse the CA certificate: {e}"),
        })?;
    let key = load_ca_key(ca_key)?;
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err(pair(
            "the CA key is not the key of the CA certificate (the first certificate of the file): supply the matching pair".into(),
        ));
    }
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(pair(
            "the certificate is not a CA (basicConstraints CA=true is missing)".into(),
        ));
    }
    if let Ok(Some(ku)) = cert.key_usage()
        && !ku.value.key_cert_sign()
    {
        return Err(pair(
            "the CA certificate's keyUsage does not allow signing certificates (keyCertSign)"
                .into(),
        ));
    }
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(ca_key)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            key = %ca_key.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the CA private key is readable by group or others: chmod 600 it"
        );
    }
    Ok(())
}

/// PEM text of one DER certificate.
fn pem_of(cert: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    write_file(path, data, 0o600)
}

/// Writes `data` atomically with `mode` ([`crate::atomic_file`]).
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    crate::atomic_file::write(path, data, mode).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_created_once_private_and_reissued_for_new_names() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let names = vec!["localhost".to_string(), "192.0.2.10".to_string()];
        ensure_self_signed(&tls, &names).unwrap();
        for key in ["ca-key.pem", "server-key.pem"] {
            let mode = std::fs::metadata(tls.join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let ca = std::fs::read(tls.join("ca.pem")).unwrap();
        let server = std::fs::read(tls.join("server.pem")).unwrap();
        load_pair(&tls.join("server.pem"), &tls.join("server-key.pem")).unwrap();
        ensure_self_signed(&tls, &names).unwrap();
        assert_eq!(std::fs::read(tls.join("server.pem")).unwrap(), server);
        let more = vec!["factory.example".to_string()];
        ensure_self_signed(&tls, &more).unwrap();
        assert_eq!(std::fs::read(tls.join("ca.pem")).unwrap(), ca, "CA kept");
        assert_ne!(std::fs::read(tls.join("server.pem")).unwrap(), server);
    }

    #[test]
    fn the_self_signed_chain_is_rsa_and_ends_with_the_ca_which_is_its_boot_anchor() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        ensure_self_signed(&tls, &["192.0.2.10".to_string()]).unwrap();
        let ca = pem_certs(&tls.join("ca.pem")).unwrap();
        let chain = pem_certs(&tls.join("server.pem")).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], ca[0]);
        let anchor = boot_anchor_of(&chain).unwrap();
        assert_eq!(anchor.ipxe_unverifiable, None, "{anchor:?}");
        let want: [u8; 32] = Sha256::digest(ca[0].as_ref()).into();
        assert_eq!(anchor.fingerprint, want);
        assert!(
            load_ca_key(&tls.join("ca-key.pem"))
                .unwrap()
                .is_compatible(&rcgen::PKCS_RSA_SHA256)
        );
        // A leaf-only server.pem (as older versions wrote it) is re-issued with the chain.
        let leaf_only = pem_of(&chain[0]);
        std::fs::write(tls.join("server.pem"), leaf_only).unwrap();
        ensure_self_signed(&tls, &["192.0.2.10".to_string()]).unwrap();
        let again = pem_certs(&tls.join("server.pem")).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again[1], ca[0]);
    }

    #[test]
    fn half_a_ca_is_refused_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        std::fs::write(tls.join("ca.pem"), "operator's CA").unwrap();
        let e = ensure_self_signed(&tls, &["a.example".to_string()]).unwrap_err();
        assert!(e.to_string().contains("ca-key.pem"), "{e}");
        assert_eq!(
            std::fs::read_to_string(tls.join("ca.pem")).unwrap(),
            "operator's CA"
        );
    }

    #[test]
    fn an_interrupted_generation_is_redone_but_a_lone_operator_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        // Placed by hand, without the generation marker: refused, left alone.
        std::fs::write(tls.join("ca-key.pem"), "operator's key").unwrap();
        let e = ensure_self_signed(&tls, &["a.example".to_string()]).unwrap_err();
        assert!(e.to_string().contains("ca.pem"), "{e}");
        assert_eq!(
            std::fs::read_to_string(tls.join("ca-key.pem")).unwrap(),
            "operator's key"
        );
        // The same key-only state left by a crash between the two renames of a generation.
        std::fs::write(tls.join("ca.generating"), "").unwrap();
        ensure_self_signed(&tls, &["a.example".to_string()]).unwrap();
        assert!(!tls.join("ca.generating").exists());
        check_ca_pair(&tls.join("ca.pem"), &tls.join("ca-key.pem")).unwrap();
        load_pair(&tls.join("server.pem"), &tls.join("server-key.pem")).unwrap();
    }

    #[test]
    fn an_operator_ca_key_must_match_its_certificate_which_must_be_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        ensure_self_signed(&a, &["a.example".to_string()]).unwrap();
        ensure_self_signed(&b, &["b.example".to_string()]).unwrap();
        // Another CA's key next to a's certificate.
        std::fs::copy(b.join("ca-key.pem"), a.join("ca-key.pem")).unwrap();
        std::fs::remove_file(a.join("server.pem")).unwrap();
        let e = ensure_self_signed(&a, &["a.example".to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not the key of the CA certificate"), "{e}");
        assert!(e.contains("ca.pem") && e.contains("ca-key.pem"), "{e}");
        assert!(!a.join("server.pem").exists(), "nothing issued");
        // A matching pair that is not a CA: b's server certificate and key.
        let leaf = pem_certs(&b.join("server.pem")).unwrap();
        std::fs::write(a.join("ca.pem"), pem_of(&leaf[0])).unwrap();
        std::fs::copy(b.join("server-key.pem"), a.join("ca-key.pem")).unwrap();
        let e = ensure_self_signed(&a, &["a.example".to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a CA"), "{e}");
    }

    #[test]
    fn a_reload_warns_only_against_what_the_served_binaries_trust() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        ensure_self_signed(&a, &["a.example".to_string()]).unwrap();
        ensure_self_signed(&b, &["b.example".to_string()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::copy(a.join("server.pem"), &cert).unwrap();
        std::fs::copy(a.join("server-key.pem"), &key).unwrap();
        let mut c = crate::config::Config::default();
        c.http.tls.cert_file = Some(cert.clone());
        c.http.tls.key_file = Some(key.clone());
        let tls = Tls::from_config(&c, None).unwrap().unwrap();
        let chain_a = pem_certs(&a.join("server.pem")).unwrap();
        let chain_b = pem_certs(&b.join("server.pem")).unwrap();
        // Served as built: nothing to warn about.
        assert!(!tls.served_root_changed(&chain_b));
        tls.note_served_trust(boot_anchor_of(&chain_a).unwrap().fingerprint);
        assert!(!tls.served_root_changed(&chain_a));
        assert!(tls.served_root_changed(&chain_b));
    }

    #[test]
    fn mismatched_or_garbage_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        ensure_self_signed(&a, &["a.example".to_string()]).unwrap();
        ensure_self_signed(&b, &["b.example".to_string()]).unwrap();
        let e = load_pair(&a.join("server.pem"), &b.join("server-key.pem")).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let e = load_pair(&junk, &a.join("server-key.pem")).unwrap_err();
        assert!(e.to_string().contains("CERTIFICATE"), "{e}");
    }
}
