//! UEFI Secure Boot key databases: signature lists and signed variable updates (`.auth`).
//!
//! Firmware keeps its Secure Boot keys in three authenticated variables: `PK` (the platform
//! key), `KEK` (keys that may change `db`) and `db` (what may boot). Each holds
//! `EFI_SIGNATURE_LIST`s (UEFI 2.10 §32.4.1); an X.509 list is
//!
//! ```text
//! EFI_SIGNATURE_LIST  { SignatureType = EFI_CERT_X509_GUID, SignatureListSize u32,
//!                       SignatureHeaderSize u32 = 0, SignatureSize u32 = 16 + cert }
//! EFI_SIGNATURE_DATA  { SignatureOwner GUID, SignatureData = the DER certificate }
//! ```
//!
//! A write to such a variable must be authenticated (§8.2.2, time-based): the payload is
//! preceded by an `EFI_VARIABLE_AUTHENTICATION_2`, which is an `EFI_TIME` and a
//! `WIN_CERTIFICATE_UEFI_GUID` (revision 0x0200, type `WIN_CERT_TYPE_EFI_GUID`, certificate
//! type `EFI_CERT_TYPE_PKCS7_GUID`) whose data is a DER PKCS#7 `SignedData` — without a
//! `ContentInfo` around it and with detached content — over
//!
//! ```text
//! VariableName (UTF-16LE, no terminator) ‖ VendorGuid ‖ Attributes (u32) ‖ TimeStamp ‖ Data
//! ```
//!
//! The signer info carries no signed attributes: the RSA signature (PKCS#1 v1.5, SHA-256) is
//! over the SHA-256 of that byte string. Such a file is what systemd-boot's key enrollment
//! (`loader/keys/auto/{PK,KEK,db}.auth`) hands to `SetVariable`. The same inputs give the same
//! bytes (efitools' `sign-efi-sig-list -t` does the same: `tests/efi_auth.rs` compares).

use super::pkcs7;
use der::Encode as _;
use der::asn1::ObjectIdentifier;
use rsa::RsaPrivateKey;
use sha2::{Digest as _, Sha256};
use x509_cert::Certificate;

/// A GUID in its on-disk (mixed-endian) byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parses the canonical text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`; the first three
    /// groups are stored little-endian, the last two as written.
    pub const fn from_text(text: &str) -> Option<Guid> {
        let t = text.as_bytes();
        if t.len() != 36 || t[8] != b'-' || t[13] != b'-' || t[18] != b'-' || t[23] != b'-' {
            return None;
        }
        // Byte i of the result comes from the hex pair at text offset ORDER[i].
        const ORDER: [usize; 16] = [6, 4, 2, 0, 11, 9, 16, 14, 19, 21, 24, 26, 28, 30, 32, 34];
        let mut out = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            let (Some(hi), Some(lo)) = (hex(t[ORDER[i]]), hex(t[ORDER[i] + 1])) else {
                return None;
            };
            out[i] = hi << 4 | lo;
            i += 1;
        }
        Some(Guid(out))
    }
}

const fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

const fn guid(text: &str) -> Guid {
    match Guid::from_text(text) {
        Some(g) => g,
        None => panic!("invalid GUID constant"),
    }
}

/// `EFI_CERT_X509_GUID`: a signature list of DER X.509 certificates.
pub const EFI_CERT_X509: Guid = guid("a5c059a1-94e4-4aa7-87b5-ab155c2bf072");
/// `EFI_GLOBAL_VARIABLE`: the vendor of `PK` and `KEK`.
pub const EFI_GLOBAL_VARIABLE: Guid = guid("8be4df61-93ca-11d2-aa0d-00e098032b8c");
/// `EFI_IMAGE_SECURITY_DATABASE_GUID`: the vendor of `db` (and `dbx`).
pub const EFI_IMAGE_SECURITY_DATABASE: Guid = guid("d719b2cb-3d3a-4596-a3bc-dad00e67656f");
/// `EFI_CERT_TYPE_PKCS7_GUID`: the certificate type of an authenticated write.
const EFI_CERT_TYPE_PKCS7: Guid = guid("4aafd29d-68df-49ee-8aa9-347d375665a7");

/// `WIN_CERTIFICATE.wRevision`.
const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// `WIN_CERT_TYPE_EFI_GUID`: a `WIN_CERTIFICATE_UEFI_GUID`.
const WIN_CERT_TYPE_EFI_GUID: u16 = 0x0ef1;
/// `NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS | TIME_BASED_AUTHENTICATED_WRITE_ACCESS`.
const ATTRIBUTES: u32 = 0x01 | 0x02 | 0x04 | 0x20;

/// PKCS#7 `data` (the type of the detached content).
const PKCS7_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");

/// The Secure Boot variables an enrollment writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variable {
    /// `PK`, the platform key: writing it leaves setup mode.
    Pk,
    /// `KEK`, the key exchange keys.
    Kek,
    /// `db`, the allowed signatures.
    Db,
}

impl Variable {
    /// The variable's name, as in `loader/keys/auto/<name>.auth`.
    pub fn name(self) -> &'static str {
        match self {
            Variable::Pk => "PK",
            Variable::Kek => "KEK",
            Variable::Db => "db",
        }
    }

    fn vendor(self) -> Guid {
        match self {
            Variable::Pk | Variable::Kek => EFI_GLOBAL_VARIABLE,
            Variable::Db => EFI_IMAGE_SECURITY_DATABASE,
        }
    }
}

/// The `EFI_TIME` of a time-based authenticated write (UTC; no time zone, no daylight flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EfiTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl EfiTime {
    fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..2].copy_from_slice(&self.year.to_le_bytes());
        b[2] = self.month;
        b[3] = self.day;
        b[4] = self.hour;
        b[5] = self.minute;
        b[6] = self.second;
        // Pad1, Nanosecond, TimeZone, Daylight, Pad2: zero.
        b
    }
}

/// Why a variable update could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum EfiAuthError {
    /// A certificate or signature too large for its 32-bit length field.
    #[error("a certificate or signature is too large for an EFI variable")]
    TooLarge,
    /// The certificate is not the key's (its public key differs), or not an RSA one.
    #[error("the signing certificate does not hold the signing key's public key")]
    KeyMismatch,
    /// The signature could not be encoded.
    #[error("encoding the signature")]
    Der(#[from] der::Error),
    /// The RSA operation failed.
    #[error("RSA signing")]
    Rsa(#[from] rsa::Error),
}

/// One `EFI_SIGNATURE_LIST` holding the DER certificate `cert`, owned by `owner`.
pub fn x509_signature_list(owner: Guid, cert_der: &[u8]) -> Result<Vec<u8>, EfiAuthError> {
    let signature_size = 16 + cert_der.len();
    let list_size = 28 + signature_size;
    let (Ok(list32), Ok(sig32)) = (u32::try_from(list_size), u32::try_from(signature_size)) else {
        return Err(EfiAuthError::TooLarge);
    };
    let mut out = Vec::with_capacity(list_size);
    out.extend_from_slice(&EFI_CERT_X509.0);
    out.extend_from_slice(&list32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&sig32.to_le_bytes());
    out.extend_from_slice(&owner.0);
    out.extend_from_slice(cert_der);
    Ok(out)
}

/// The `.auth` file that replaces `variable` with `data` (signature lists), signed at `time`
/// with `key` and its certificate `cert`.
pub fn authenticated_write(
    variable: Variable,
    data: &[u8],
    time: EfiTime,
    key: &RsaPrivateKey,
    cert: &Certificate,
) -> Result<Vec<u8>, EfiAuthError> {
    if !pkcs7::certifies(cert, key) {
        return Err(EfiAuthError::KeyMismatch);
    }
    let timestamp = time.to_bytes();
    let mut h = Sha256::new();
    for unit in variable.name().encode_utf16() {
        h.update(unit.to_le_bytes());
    }
    h.update(variable.vendor().0);
    h.update(ATTRIBUTES.to_le_bytes());
    h.update(timestamp);
    h.update(data);
    let pkcs7 = pkcs7::signed_data(
        pkcs7::Signed {
            content_type: PKCS7_DATA,
            content: None,
            signed_attrs: None,
            signature: pkcs7::rsa_sign(key, &h.finalize())?,
        },
        cert,
    )?
    .to_der()?;

    // WIN_CERTIFICATE_UEFI_GUID: dwLength counts its own header (8), the GUID (16) and the
    // PKCS#7.
    let length = u32::try_from(24 + pkcs7.len()).map_err(|_| EfiAuthError::TooLarge)?;
    let mut out = Vec::with_capacity(16 + 24 + pkcs7.len() + data.len());
    out.extend_from_slice(&timestamp);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_TYPE_EFI_GUID.to_le_bytes());
    out.extend_from_slice(&EFI_CERT_TYPE_PKCS7.0);
    out.extend_from_slice(&pkcs7);
    out.extend_from_slice(data);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_stored_mixed_endian() {
        assert_eq!(
            EFI_CERT_X509.0,
            [
                0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b,
                0xf0, 0x72
            ]
        );
        assert_eq!(Guid::from_text("not a guid"), None);
        assert_eq!(
            Guid::from_text("a5c059a1-94e4-4aa7-87b5-ab155c2bf07g"),
            None
        );
        assert_eq!(
            Guid::from_text("a5c059a1x94e4-4aa7-87b5-ab155c2bf072"),
            None
        );
    }

    #[test]
    fn a_signature_list_counts_its_header_owner_and_certificate() {
        let owner = guid("11111111-2222-3333-4444-555555555555");
        let list = x509_signature_list(owner, b"cert").unwrap();
        assert_eq!(list.len(), 28 + 16 + 4);
        assert_eq!(&list[16..20], &48u32.to_le_bytes());
        assert_eq!(&list[20..24], &0u32.to_le_bytes());
        assert_eq!(&list[24..28], &20u32.to_le_bytes());
        assert_eq!(&list[28..44], &owner.0);
        assert_eq!(&list[44..], b"cert");
    }

    #[test]
    fn the_timestamp_has_no_zone_or_fraction() {
        let t = EfiTime {
            year: 2025,
            month: 1,
            day: 2,
            hour: 3,
            minute: 4,
            second: 5,
        };
        assert_eq!(
            t.to_bytes(),
            [0xe9, 0x07, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}
