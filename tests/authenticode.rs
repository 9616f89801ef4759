//! Authenticode signatures (`bootfactory::formats::authenticode`) checked by independent
//! tools: `sbverify` (sbsigntool) must accept every image we sign with the certificate and
//! refuse a one-byte-modified copy, and `sbsign` must have hashed each image exactly as we do
//! (its signature embeds the same SHA-256). The images are Debian's systemd-boot and
//! systemd-stub (`systemd-boot-efi`), which carry trailing bytes after their last section;
//! keys and certificates come from `openssl`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use bootfactory::formats::authenticode::{self, AuthenticodeError};
use der::Decode as _;
use rsa::pkcs8::DecodePrivateKey as _;
use support::tools::have;

const IMAGES: [&str; 2] = [
    "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
    "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
];

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An RSA-2048 key and a self-signed certificate: (key PEM path, cert PEM path, key, cert).
fn key_and_cert(
    dir: &Path,
    name: &str,
) -> (PathBuf, PathBuf, rsa::RsaPrivateKey, x509_cert::Certificate) {
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
    let key = rsa::RsaPrivateKey::from_pkcs8_der(&key_der).expect("PKCS#8 key");
    let cert = x509_cert::Certificate::from_der(&cert_der).expect("DER certificate");
    (key_pem, cert_pem, key, cert)
}

fn sbverify(cert: &Path, image: &Path) -> (bool, String) {
    let out = Command::new("sbverify")
        .arg("--cert")
        .arg(cert)
        .arg(image)
        .output()
        .expect("run sbverify");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn tools_present() -> bool {
    have("sbverify")
        && have("sbsign")
        && have("openssl")
        && IMAGES.iter().all(|p| {
            let there = Path::new(p).exists();
            if !there {
                assert!(
                    std::env::var("BOOTFACTORY_REQUIRE_TOOLS").as_deref() != Ok("1"),
                    "{p} is required (systemd-boot-efi; tests/run-all.sh installs it)"
                );
                eprintln!("skipping: {p} is not installed");
            }
            there
        })
}

#[test]
fn sbverify_accepts_our_signatures_and_refuses_modified_images() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, cert_pem, key, cert) = key_and_cert(dir.path(), "signer");
    let (_, other_pem, _, _) = key_and_cert(dir.path(), "other");
    for source in IMAGES {
        let image = std::fs::read(source).unwrap();
        let name = Path::new(source).file_name().unwrap().to_string_lossy();
        let signed = authenticode::sign(&image, &key, &cert).unwrap();
        assert_eq!(
            signed,
            authenticode::sign(&image, &key, &cert).unwrap(),
            "{name}: signing is deterministic"
        );
        let path = dir.path().join(format!("{name}.signed"));
        std::fs::write(&path, &signed).unwrap();
        let (ok, log) = sbverify(&cert_pem, &path);
        assert!(ok, "{name}: sbverify refused our signature:\n{log}");
        let (ok, _) = sbverify(&other_pem, &path);
        assert!(!ok, "{name}: sbverify accepted another certificate");

        // One byte changed in the middle of the image (section data) breaks the hash.
        let mut tampered = signed.clone();
        tampered[image.len() / 2] ^= 0x01;
        let tampered_path = dir.path().join(format!("{name}.tampered"));
        std::fs::write(&tampered_path, &tampered).unwrap();
        let (ok, log) = sbverify(&cert_pem, &tampered_path);
        assert!(!ok, "{name}: sbverify accepted a modified image:\n{log}");

        // Signing a signed image is refused, not stacked.
        assert!(matches!(
            authenticode::sign(&signed, &key, &cert),
            Err(AuthenticodeError::AlreadySigned)
        ));
    }
}

#[test]
fn our_image_hash_is_the_one_sbsign_signs() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (key_pem, cert_pem, _, _) = key_and_cert(dir.path(), "signer");
    for source in IMAGES {
        let image = std::fs::read(source).unwrap();
        let name = Path::new(source).file_name().unwrap().to_string_lossy();
        let out = dir.path().join(format!("{name}.sbsign"));
        run(Command::new("sbsign")
            .arg("--key")
            .arg(&key_pem)
            .arg("--cert")
            .arg(&cert_pem)
            .arg("--output")
            .arg(&out)
            .arg(source));
        let by_sbsign = std::fs::read(&out).unwrap();
        let ours = authenticode::digest(&image).unwrap();
        // sbsign's SpcIndirectDataContent carries the image hash as a DigestInfo's OCTET
        // STRING: the 32 bytes appear in its signature if and only if the hashes agree.
        let signature = &by_sbsign[image.len()..];
        assert!(
            signature.windows(32).any(|w| w == ours),
            "{name}: sbsign signed another hash than ours ({})",
            hex::encode(ours)
        );
    }
}
