//! Authenticode signatures (`bootfactory::formats::authenticode`) checked by independent
//! implementations: `sbverify` (sbsigntool) — and `osslsigncode verify` where version 2.9 or
//! later is installed (bookworm-backports; Debian 12's 2.5 calls even `sbsign`'s signatures
//! "Invalid signature") — must accept every image we sign with the certificate and refuse a
//! one-byte-modified copy, and `sbsign` must have
//! hashed each image exactly as we do (its signature embeds the same SHA-256) and written the
//! `CheckSum` we compute. The images are Debian's systemd-boot and systemd-stub
//! (`systemd-boot-efi`), which carry trailing bytes after their last section; keys and
//! certificates come from `openssl`. (An image with gaps between its sections is refused:
//! the two verifiers hash such gaps differently; unit tests in the module.)

mod support;

use std::path::Path;
use std::process::Command;

use bootfactory::formats::authenticode::{self, AuthenticodeError};
use support::keys::{key_pair, run};
use support::tools::{have, have_file};

const IMAGES: [&str; 2] = [
    "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
    "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
];

/// Runs a verifier: whether it succeeded, and what it printed.
fn verdict(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn sbverify(cert: &Path, image: &Path) -> (bool, String) {
    verdict(Command::new("sbverify").arg("--cert").arg(cert).arg(image))
}

/// Whether an `osslsigncode` that verifies correctly (2.9 or later) is on PATH.
fn osslsigncode_usable() -> bool {
    let Ok(out) = Command::new("osslsigncode").arg("--version").output() else {
        eprintln!("osslsigncode not installed: only sbverify checks the signatures");
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let version: Vec<u32> = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .trim_end_matches(',')
        .split('.')
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        !version.is_empty() || std::env::var("BOOTFACTORY_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "cannot read osslsigncode's version from {text:?}"
    );
    let usable = version.as_slice() >= [2, 9].as_slice();
    if !usable {
        eprintln!(
            "osslsigncode {version:?} is older than 2.9: only sbverify checks the signatures"
        );
    }
    usable
}

fn osslsigncode(cert: &Path, image: &Path) -> (bool, String) {
    verdict(
        Command::new("osslsigncode")
            .args(["verify", "-CAfile"])
            .arg(cert)
            .arg("-in")
            .arg(image),
    )
}

/// The optional header's `CheckSum` of a PE image.
fn stored_checksum(image: &[u8]) -> u32 {
    let pe = u32::from_le_bytes(image[0x3c..0x40].try_into().unwrap()) as usize;
    let at = pe + 4 + 20 + 64;
    u32::from_le_bytes(image[at..at + 4].try_into().unwrap())
}

/// Debian's two images: (name, bytes).
fn images() -> Vec<(String, Vec<u8>)> {
    IMAGES
        .iter()
        .map(|p| {
            let name = Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(p).unwrap())
        })
        .collect()
}

fn tools_present() -> bool {
    have("sbverify")
        && have("sbsign")
        && have("openssl")
        && IMAGES.iter().all(|p| have_file(p, "systemd-boot-efi"))
}

#[test]
fn verifiers_accept_our_signatures_and_refuse_modified_images() {
    if !tools_present() {
        return;
    }
    let with_osslsigncode = osslsigncode_usable();
    let dir = tempfile::tempdir().unwrap();
    let signer = key_pair(dir.path(), "signer");
    let (cert_pem, key, cert) = (&signer.cert_pem, &signer.key, &signer.cert);
    let other = key_pair(dir.path(), "other");
    let other_pem = &other.cert_pem;
    for (name, image) in images() {
        let signed = authenticode::sign(&image, key, cert).unwrap();
        assert_eq!(
            signed,
            authenticode::sign(&image, key, cert).unwrap(),
            "{name}: signing is deterministic"
        );
        let path = dir.path().join(format!("{name}.signed"));
        std::fs::write(&path, &signed).unwrap();
        let (ok, log) = sbverify(cert_pem, &path);
        assert!(ok, "{name}: sbverify refused our signature:\n{log}");
        if with_osslsigncode {
            let (ok, log) = osslsigncode(cert_pem, &path);
            assert!(ok, "{name}: osslsigncode refused our signature:\n{log}");
        }
        // Self-consistency only (the signed image carries the checksum we compute); that our
        // checksum is right is checked against sbsign's in the other test.
        assert_eq!(
            stored_checksum(&signed),
            authenticode::checksum(&signed).unwrap(),
            "{name}: CheckSum"
        );
        let (ok, _) = sbverify(other_pem, &path);
        assert!(!ok, "{name}: sbverify accepted another certificate");

        // One byte changed in the middle of the image (section data) breaks the hash.
        let mut tampered = signed.clone();
        tampered[image.len() / 2] ^= 0x01;
        let tampered_path = dir.path().join(format!("{name}.tampered"));
        std::fs::write(&tampered_path, &tampered).unwrap();
        let (ok, log) = sbverify(cert_pem, &tampered_path);
        assert!(!ok, "{name}: sbverify accepted a modified image:\n{log}");
        if with_osslsigncode {
            let (ok, log) = osslsigncode(cert_pem, &tampered_path);
            assert!(
                !ok,
                "{name}: osslsigncode accepted a modified image:\n{log}"
            );
        }

        // Signing a signed image is refused, not stacked; so is a certificate of another key.
        assert!(matches!(
            authenticode::sign(&signed, key, cert),
            Err(AuthenticodeError::AlreadySigned)
        ));
        assert!(matches!(
            authenticode::sign(&image, key, &other.cert),
            Err(AuthenticodeError::KeyMismatch)
        ));
    }
}

#[test]
fn our_image_hash_and_checksum_are_the_ones_sbsign_writes() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let signer = key_pair(dir.path(), "signer");
    let (key_pem, cert_pem) = (&signer.key_pem, &signer.cert_pem);
    for (name, image) in images() {
        let source = dir.path().join(&name);
        std::fs::write(&source, &image).unwrap();
        let out = dir.path().join(format!("{name}.sbsign"));
        run(Command::new("sbsign")
            .arg("--key")
            .arg(key_pem)
            .arg("--cert")
            .arg(cert_pem)
            .arg("--output")
            .arg(&out)
            .arg(&source));
        let by_sbsign = std::fs::read(&out).unwrap();
        assert_eq!(
            authenticode::checksum(&by_sbsign).unwrap(),
            stored_checksum(&by_sbsign),
            "{name}: our PE checksum differs from the one sbsign wrote"
        );
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
