//! Signing keys for the Secure Boot tests, made by `openssl` (an independent implementation):
//! an RSA-2048 key and a self-signed certificate, as PEM files and parsed.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use der::Decode as _;
use rsa::pkcs8::DecodePrivateKey as _;

/// Runs `cmd` and returns its output; panics with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A key and its self-signed certificate, written to `<dir>/<name>.{key,crt}`.
pub struct KeyPair {
    pub key_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key: rsa::RsaPrivateKey,
    pub cert: x509_cert::Certificate,
    pub cert_der: Vec<u8>,
}

/// Makes a fresh RSA-2048 key and a certificate for `CN=bootfactory test <name>`, valid 2 days.
pub fn key_pair(dir: &Path, name: &str) -> KeyPair {
    let key_pem = dir.join(format!("{name}.key"));
    let cert_pem = dir.join(format!("{name}.crt"));
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-subj")
        .arg(format!("/CN=bootfactory test {name}"))
        .arg("-keyout")
        .arg(&key_pem)
        .arg("-out")
        .arg(&cert_pem));
    let key_der = run(Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
        .arg(&key_pem))
    .stdout;
    let cert_der = run(Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert_pem))
    .stdout;
    KeyPair {
        key: rsa::RsaPrivateKey::from_pkcs8_der(&key_der).expect("PKCS#8 key"),
        cert: x509_cert::Certificate::from_der(&cert_der).expect("DER certificate"),
        cert_der,
        key_pem,
        cert_pem,
    }
}
