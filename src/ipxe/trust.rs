//! What the served iPXE binaries trust, and the patching that makes them trust the boot CA.
//!
//! iPXE verifies a TLS server's chain against a table of *root certificate fingerprints*
//! compiled into the binary: the SHA-256 of each trusted root's DER encoding, 32 bytes each.
//! It holds no certificates, only their fingerprints, so a server must send the root itself as
//! the last certificate of its chain; iPXE hashes it and looks the hash up in the table.
//! Debian's builds (the ones embedded, see `ipxe/README.md`) are made without `TRUST=`, so the
//! table holds one entry: iPXE's own root CA ([`IPXE_ROOT_CA_FINGERPRINT`]), which trusts
//! public CAs only through cross-signed certificates iPXE downloads from `ca.ipxe.org` — useless
//! on an air-gapped site.
//!
//! In the EFI builds (`ipxe.efi`, `snponly.efi`, `ipxe-arm64.efi`) that table lies
//! uncompressed in the image's data, so replacing those 32 bytes with the fingerprint of the
//! appliance's boot CA makes iPXE trust exactly that CA instead. Nothing else changes: the PE
//! checksum field is not checked by UEFI firmware, and the binaries are not Secure-Boot signed.
//! The patch is refused unless the fingerprint occurs **exactly once**: zero occurrences mean a
//! different build (the table moved or is compressed), two mean we cannot tell which bytes are
//! the table, and guessing would hand machines an iPXE that trusts something unintended.
//!
//! `undionly.kpxe` (BIOS) is compressed (iPXE's own LZMA-based prefix format), so its table is
//! not visible and it is always served as built; see `crate::netboot` for what BIOS machines
//! get when the boot URL is `https://`.

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// SHA-256 of iPXE's root CA certificate ("iPXE root CA"), the one fingerprint in Debian's
/// builds.
pub const IPXE_ROOT_CA_FINGERPRINT: [u8; 32] = [
    0x9f, 0xaf, 0x71, 0x7b, 0x7f, 0x8c, 0xa2, 0xf9, 0x3c, 0x25, 0x6c, 0x79, 0xf8, 0xac, 0x55, 0x91,
    0x89, 0x5d, 0x66, 0xd1, 0xff, 0x3b, 0xee, 0x63, 0x97, 0xa7, 0x0d, 0x29, 0xc6, 0x5e, 0xed, 0x1a,
];

/// A binary whose trust table cannot be patched safely.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The fingerprint of iPXE's root CA is not in the binary.
    #[error(
        "{name}: iPXE's root CA fingerprint is not in the binary, so its trust table cannot be patched (a different iPXE build?)"
    )]
    NotFound {
        /// The binary.
        name: String,
    },
    /// The fingerprint occurs more than once: which copy is the table is ambiguous.
    #[error(
        "{name}: iPXE's root CA fingerprint occurs {count} times, so the trust table is ambiguous; refusing to patch"
    )]
    Ambiguous {
        /// The binary.
        name: String,
        /// How many times it occurs.
        count: usize,
    },
}

/// Offsets of `needle` in `haystack` (overlapping matches included).
fn occurrences(haystack: &[u8], needle: &[u8; 32]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// A copy of `binary` whose trust table holds `fingerprint` instead of iPXE's root CA.
pub fn patch(name: &str, binary: &[u8], fingerprint: &[u8; 32]) -> Result<Vec<u8>, TrustError> {
    let found = occurrences(binary, &IPXE_ROOT_CA_FINGERPRINT);
    match found.as_slice() {
        [] => Err(TrustError::NotFound { name: name.into() }),
        [at] => {
            let mut out = binary.to_vec();
            out[*at..*at + 32].copy_from_slice(fingerprint);
            Ok(out)
        }
        more => Err(TrustError::Ambiguous {
            name: name.into(),
            count: more.len(),
        }),
    }
}

/// Whether a binary's trust table is patchable: the EFI builds (PE images, uncompressed).
pub fn is_patchable(name: &str) -> bool {
    name.ends_with(".efi")
}

/// One binary as served over TFTP and `GET /ipxe/{name}`.
#[derive(Clone)]
pub struct ServedBinary {
    /// File name (`ipxe.efi`).
    pub name: &'static str,
    /// The bytes served.
    pub data: Bytes,
    /// Lower-case hex SHA-256 of `data`.
    pub sha256: String,
    /// Whether `data` trusts the boot CA (patched) rather than iPXE's root CA.
    pub patched: bool,
}

impl std::fmt::Debug for ServedBinary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedBinary")
            .field("name", &self.name)
            .field("len", &self.data.len())
            .field("sha256", &self.sha256)
            .field("patched", &self.patched)
            .finish()
    }
}

/// The set of iPXE binaries served, built once at start.
#[derive(Debug, Clone)]
pub struct ServedIpxe {
    binaries: Vec<ServedBinary>,
    /// The fingerprint the EFI binaries trust.
    trust: [u8; 32],
}

impl ServedIpxe {
    /// The embedded binaries as Debian built them (trusting iPXE's root CA).
    pub fn unpatched() -> ServedIpxe {
        ServedIpxe {
            binaries: super::BINARIES
                .iter()
                .map(|b| ServedBinary {
                    name: b.name,
                    data: Bytes::from_static(b.data),
                    sha256: b.sha256.to_string(),
                    patched: false,
                })
                .collect(),
            trust: IPXE_ROOT_CA_FINGERPRINT,
        }
    }

    /// The embedded binaries with every EFI build trusting `fingerprint` (the SHA-256 of the
    /// boot CA's DER) and nothing else; the BIOS build unchanged. Refuses if any EFI build's
    /// table cannot be found exactly once.
    pub fn trusting(fingerprint: &[u8; 32]) -> Result<ServedIpxe, TrustError> {
        Self::trusting_binaries(super::BINARIES, fingerprint)
    }

    fn trusting_binaries(
        binaries: &[super::Binary],
        fingerprint: &[u8; 32],
    ) -> Result<ServedIpxe, TrustError> {
        let mut out = Vec::with_capacity(binaries.len());
        for b in binaries {
            if is_patchable(b.name) {
                let data = patch(b.name, b.data, fingerprint)?;
                out.push(ServedBinary {
                    name: b.name,
                    sha256: hex::encode(Sha256::digest(&data)),
                    data: Bytes::from(data),
                    patched: true,
                });
            } else {
                out.push(ServedBinary {
                    name: b.name,
                    data: Bytes::from_static(b.data),
                    sha256: b.sha256.to_string(),
                    patched: false,
                });
            }
        }
        Ok(ServedIpxe {
            binaries: out,
            trust: *fingerprint,
        })
    }

    /// Looks a binary up by file name.
    pub fn get(&self, name: &str) -> Option<&ServedBinary> {
        self.binaries.iter().find(|b| b.name == name)
    }

    /// Every served binary.
    pub fn iter(&self) -> impl Iterator<Item = &ServedBinary> {
        self.binaries.iter()
    }

    /// The fingerprint the EFI builds trust.
    pub fn trust(&self) -> &[u8; 32] {
        &self.trust
    }

    /// Whether the EFI builds trust the boot CA (rather than iPXE's root CA).
    pub fn patched(&self) -> bool {
        self.binaries.iter().any(|b| b.patched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipxe::{BINARIES, BIOS, Binary, EFI_ARM64, EFI_X64, EFI_X64_SNP, binary};

    const OURS: [u8; 32] = [0x5a; 32];

    #[test]
    fn every_efi_build_holds_the_root_fingerprint_exactly_once() {
        for name in [EFI_X64, EFI_X64_SNP, EFI_ARM64] {
            let b = binary(name).unwrap();
            assert!(is_patchable(name));
            assert_eq!(
                occurrences(b.data, &IPXE_ROOT_CA_FINGERPRINT).len(),
                1,
                "{name}"
            );
        }
        // The BIOS build is compressed: the table is not visible, and it is not patched.
        let bios = binary(BIOS).unwrap();
        assert!(!is_patchable(BIOS));
        assert!(occurrences(bios.data, &IPXE_ROOT_CA_FINGERPRINT).is_empty());
    }

    #[test]
    fn a_patched_copy_differs_in_exactly_those_32_bytes() {
        for name in [EFI_X64, EFI_X64_SNP, EFI_ARM64] {
            let original = binary(name).unwrap().data;
            let at = occurrences(original, &IPXE_ROOT_CA_FINGERPRINT)[0];
            let patched = patch(name, original, &OURS).unwrap();
            assert_eq!(patched.len(), original.len(), "{name}");
            let differing: Vec<usize> = (0..original.len())
                .filter(|&i| original[i] != patched[i])
                .collect();
            assert_eq!(differing, (at..at + 32).collect::<Vec<_>>(), "{name}");
            assert_eq!(&patched[at..at + 32], &OURS);
            assert!(occurrences(&patched, &IPXE_ROOT_CA_FINGERPRINT).is_empty());
        }
    }

    #[test]
    fn zero_or_two_occurrences_are_refused() {
        let original = binary(EFI_X64).unwrap().data;
        let at = occurrences(original, &IPXE_ROOT_CA_FINGERPRINT)[0];
        let mut none = original.to_vec();
        none[at] ^= 0xff;
        let e = patch("none.efi", &none, &OURS).unwrap_err();
        assert!(matches!(e, TrustError::NotFound { .. }), "{e}");
        assert!(e.to_string().starts_with("none.efi:"), "{e}");

        let mut twice = original.to_vec();
        twice.extend_from_slice(&IPXE_ROOT_CA_FINGERPRINT);
        let e = patch("twice.efi", &twice, &OURS).unwrap_err();
        assert!(matches!(e, TrustError::Ambiguous { count: 2, .. }), "{e}");
        // And the served set refuses as a whole, naming the binary.
        let leaked: &'static [u8] = Box::leak(twice.into_boxed_slice());
        let set = [Binary {
            name: "twice.efi",
            sha256: "",
            data: leaked,
        }];
        let e = ServedIpxe::trusting_binaries(&set, &OURS).unwrap_err();
        assert!(e.to_string().contains("twice.efi"), "{e}");
    }

    #[test]
    fn the_served_set_patches_efi_builds_and_keeps_bios_and_hashes_what_it_serves() {
        let served = ServedIpxe::trusting(&OURS).unwrap();
        assert!(served.patched());
        assert_eq!(served.trust(), &OURS);
        for b in BINARIES {
            let s = served.get(b.name).unwrap();
            assert_eq!(s.sha256, hex::encode(Sha256::digest(&s.data)), "{}", b.name);
            assert_eq!(s.patched, is_patchable(b.name), "{}", b.name);
            if s.patched {
                assert_ne!(s.sha256, b.sha256);
                assert_eq!(occurrences(&s.data, &OURS).len(), 1);
            } else {
                assert_eq!(&s.data[..], b.data);
            }
        }
        let plain = ServedIpxe::unpatched();
        assert!(!plain.patched());
        for b in BINARIES {
            assert_eq!(&plain.get(b.name).unwrap().data[..], b.data);
        }
        assert!(served.get("../ipxe.efi").is_none());
    }
}
