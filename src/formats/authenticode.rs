//! Authenticode: the signature UEFI Secure Boot checks on a PE/COFF image.
//!
//! Firmware (and `sbverify`) hash an image in a fixed way and compare the hash with the one a
//! signature vouches for (Authenticode PE specification, "Calculating the PE Image Hash"):
//!
//! 1. the headers, from the start to `SizeOfHeaders`, skipping the optional header's
//!    `CheckSum` (4 bytes) and the Security entry of the data directory (8 bytes, where the
//!    signature is found);
//! 2. each section's raw data, in file order (`PointerToRawData`, `SizeOfRawData` bytes);
//! 3. the file from `SizeOfHeaders` + the sum of those sizes to its end, less the signature:
//!    what follows the last section (a symbol table, padding).
//!
//! That reads every byte once only when the sections follow the headers and each other
//! without gaps. With a gap, the gap's bytes are covered by nothing (they could be changed
//! under a valid signature) and verifiers disagree (EDK2 and sbsigntool follow the rule above
//! and hash part of the section data twice, osslsigncode hashes the file straight through), so
//! such an image is refused rather than signed. Every image checked so far has none: Debian's
//! systemd-boot and systemd-stub, kernels, GRUB and iPXE images, and the UKIs `pe::Layout`
//! writes.
//!
//! To sign, [`sign`] pads the image with zeros to a multiple of 8 bytes (the padding is part
//! of the hash, as `sbsign` does), hashes it with SHA-256 and wraps the hash in a PKCS#7
//! `SignedData` whose content is a Microsoft `SpcIndirectDataContent`. That structure is
//! appended as a `WIN_CERTIFICATE` (revision 0x0200, type `PKCS_SIGNED_DATA`), padded to 8
//! bytes; the Security directory entry then points at it and `CheckSum` is recomputed.
//!
//! The ASN.1 (Authenticode PE specification, Microsoft, 2008):
//!
//! ```text
//! SpcIndirectDataContent ::= SEQUENCE {
//!     data            SpcAttributeTypeAndOptionalValue,   -- type 1.3.6.1.4.1.311.2.1.15
//!     messageDigest   DigestInfo }                        -- sha256, the image hash
//! SpcPeImageData ::= SEQUENCE {
//!     flags           SpcPeImageFlags,                    -- BIT STRING, empty
//!     file            [0] EXPLICIT SpcLink }              -- [2] file: [0] unicode ""
//! ```
//!
//! Two quirks from PKCS#7 v1.5, which Authenticode predates CMS with: the content is the
//! `SpcIndirectDataContent` itself (not wrapped in an OCTET STRING), and the signed
//! `messageDigest` attribute is the hash of that content's *value* bytes, without its
//! SEQUENCE tag and length. The signed attributes are `contentType` (`SPC_INDIRECT_DATA`),
//! `SpcSpOpusInfo` (empty, as `sbsign` writes) and `messageDigest`; no signing time, so the
//! same key, certificate and image always give the same bytes.
//!
//! Everything here reads untrusted bytes (an image in the store may come from an imported
//! release): offsets are checked against the file, the section count is bounded, and an image
//! that is already signed is refused rather than re-signed around its old signature.

use super::pkcs7;
use cms::content_info::ContentInfo;
use der::asn1::{Any, BitString, BmpString, ObjectIdentifier, OctetString, SetOfVec};
use der::{Decode as _, Encode as _, Sequence};
use rsa::RsaPrivateKey;
use sha2::{Digest as _, Sha256};
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::spki::AlgorithmIdentifierOwned;

/// `SPC_INDIRECT_DATA_OBJID`: the content type of an Authenticode signature.
const SPC_INDIRECT_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.4");
/// `SPC_PE_IMAGE_DATAOBJ`: what the indirect data describes (a PE image).
const SPC_PE_IMAGE_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.15");
/// `SPC_SP_OPUS_INFO_OBJID`: program name and URL (both left out).
const SPC_SP_OPUS_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.12");
/// PKCS#9 `contentType` attribute.
const CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
/// PKCS#9 `messageDigest` attribute.
const MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
/// PKCS#7 `signedData` content type.
const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");

/// `WIN_CERTIFICATE.wRevision` of current Authenticode signatures.
const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// `WIN_CERTIFICATE.wCertificateType` for a PKCS#7 `SignedData`.
const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;
/// Signatures and the image before them are aligned to this many bytes.
const ALIGN: usize = 8;
/// The Security entry's index in the optional header's data directory.
const SECURITY_DIRECTORY: usize = 4;
/// More sections than this is not an image we built or ship (the PE loader limit is 96).
const MAX_SECTIONS: usize = 96;
/// Why an image with bytes between its headers and sections, or between two sections, is
/// refused (see the module documentation).
const GAP: &str = "the sections do not follow the headers and each other without gaps";
/// Largest image signed in memory (UKIs are ~100 MB; the bound keeps a hostile input small).
pub const MAX_IMAGE: usize = 1 << 30;

/// Why an image could not be hashed or signed.
#[derive(Debug, thiserror::Error)]
pub enum AuthenticodeError {
    /// Not a PE/COFF image this module can hash: the text says which field is wrong.
    #[error("not a signable PE image: {0}")]
    Malformed(&'static str),
    /// The certificate is not the key's (its public key differs), or not an RSA one.
    #[error("the signing certificate does not hold the signing key's public key")]
    KeyMismatch,
    /// The image carries a signature already (its Security directory entry is set).
    #[error("the PE image is already signed (its certificate table is not empty)")]
    AlreadySigned,
    /// The signature could not be encoded (a certificate field out of range).
    #[error("encoding the signature")]
    Der(#[from] der::Error),
    /// The RSA operation failed (the key is too small for a SHA-256 DigestInfo).
    #[error("RSA signing")]
    Rsa(#[from] rsa::Error),
}

/// Where the hashed regions of an image are.
#[derive(Debug)]
struct Geometry {
    /// Offset of the optional header's `CheckSum`.
    checksum: usize,
    /// Offset of the Security entry of the data directory (8 bytes: address, size).
    security_entry: usize,
    /// `SizeOfHeaders`: the end of the first hashed region.
    size_of_headers: usize,
    /// Raw data ranges of the sections with any, sorted by offset.
    sections: Vec<(usize, usize)>,
    /// The Security entry's current value (address, size).
    certificate_table: (u32, u32),
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, AuthenticodeError> {
    at.checked_add(2)
        .and_then(|end| b.get(at..end))
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(AuthenticodeError::Malformed(
            "a header field lies past the end of the file",
        ))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, AuthenticodeError> {
    at.checked_add(4)
        .and_then(|end| b.get(at..end))
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(AuthenticodeError::Malformed(
            "a header field lies past the end of the file",
        ))
}

/// The offset of the COFF file header (after `MZ` … `e_lfanew` → `PE\0\0`).
fn coff_header(image: &[u8]) -> Result<usize, AuthenticodeError> {
    use AuthenticodeError::Malformed;
    if image.get(..2) != Some(b"MZ") {
        return Err(Malformed("no MZ signature"));
    }
    let pe = u32_at(image, 0x3c)? as usize;
    let coff = pe
        .checked_add(4)
        .ok_or(Malformed("no PE signature at e_lfanew"))?;
    if image.get(pe..coff) != Some(b"PE\0\0") {
        return Err(Malformed("no PE signature at e_lfanew"));
    }
    Ok(coff)
}

/// Reads the few header fields the hash needs, checking each offset against the file; the
/// sections must lie within the first `file_len` bytes (the file before any padding).
fn geometry(image: &[u8], file_len: usize) -> Result<Geometry, AuthenticodeError> {
    use AuthenticodeError::Malformed;
    let coff = coff_header(image)?;
    let sections = u16_at(image, coff + 2)? as usize;
    let optional_len = u16_at(image, coff + 16)? as usize;
    let optional = coff + 20;
    // PE32 and PE32+ differ in where the data directory starts (the image base is 4 or 8
    // bytes, and PE32 has BaseOfData).
    let (count_at, directory_at) = match u16_at(image, optional)? {
        0x10b => (optional + 92, optional + 96),
        0x20b => (optional + 108, optional + 112),
        _ => return Err(Malformed("unknown optional header magic")),
    };
    let directories = u32_at(image, count_at)? as usize;
    let security_entry = directory_at + SECURITY_DIRECTORY * 8;
    if directories <= SECURITY_DIRECTORY || security_entry + 8 > optional + optional_len {
        return Err(Malformed("the data directory has no Security entry"));
    }
    let certificate_table = (
        u32_at(image, security_entry)?,
        u32_at(image, security_entry + 4)?,
    );
    let size_of_headers = u32_at(image, optional + 60)? as usize;
    let table = optional + optional_len;
    if sections > MAX_SECTIONS {
        return Err(Malformed("too many sections"));
    }
    if table + sections * 40 > size_of_headers || size_of_headers > image.len() {
        return Err(Malformed(
            "SizeOfHeaders does not cover the headers or exceeds the file",
        ));
    }
    let mut ranges = Vec::with_capacity(sections);
    for i in 0..sections {
        let header = table + i * 40;
        let size = u32_at(image, header + 16)? as usize;
        let start = u32_at(image, header + 20)? as usize;
        if size == 0 {
            continue;
        }
        if start < size_of_headers || start.checked_add(size).is_none_or(|end| end > file_len) {
            return Err(Malformed("a section's raw data lies outside the file"));
        }
        ranges.push((start, size));
    }
    ranges.sort_unstable();
    let mut next = size_of_headers;
    for &(start, size) in &ranges {
        if start < next {
            return Err(Malformed("sections overlap each other in the file"));
        }
        if start > next {
            return Err(Malformed(GAP));
        }
        next = start + size;
    }
    Ok(Geometry {
        checksum: optional + 64,
        security_entry,
        size_of_headers,
        sections: ranges,
        certificate_table,
    })
}

/// The Authenticode SHA-256 of an unsigned `image` whose length is a multiple of 8 (as
/// [`sign`] pads it; `file_len` is its length before), together with its geometry.
fn image_hash(image: &[u8], file_len: usize) -> Result<([u8; 32], Geometry), AuthenticodeError> {
    let g = geometry(image, file_len)?;
    if g.certificate_table != (0, 0) {
        return Err(AuthenticodeError::AlreadySigned);
    }
    let mut h = Sha256::new();
    h.update(&image[..g.checksum]);
    h.update(&image[g.checksum + 4..g.security_entry]);
    h.update(&image[g.security_entry + 8..g.size_of_headers]);
    // SUM_OF_BYTES_HASHED: at most the file's length (the sections do not overlap each other
    // or the headers).
    let mut hashed = g.size_of_headers;
    for &(start, size) in &g.sections {
        h.update(&image[start..start + size]);
        hashed += size;
    }
    h.update(&image[hashed.min(image.len())..]);
    Ok((h.finalize().into(), g))
}

/// `SpcString`'s `unicode` choice: `[0] IMPLICIT BMPString`.
type SpcUnicode = der::asn1::ContextSpecific<BmpString>;

/// `SpcPeImageData` with the empty flags and the (obsolete, empty) file link every signer
/// writes; verifiers require the link to be present.
#[derive(Sequence)]
struct SpcPeImageData {
    flags: BitString,
    /// `[0] EXPLICIT SpcLink`, the link being `[2] EXPLICIT SpcString`.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    file: der::asn1::ContextSpecific<SpcUnicode>,
}

#[derive(Sequence)]
struct SpcAttributeTypeAndOptionalValue {
    value_type: ObjectIdentifier,
    value: SpcPeImageData,
}

#[derive(Sequence)]
struct DigestInfo {
    digest_algorithm: AlgorithmIdentifierOwned,
    digest: OctetString,
}

#[derive(Sequence)]
struct SpcIndirectDataContent {
    data: SpcAttributeTypeAndOptionalValue,
    message_digest: DigestInfo,
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, der::Error> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value])?,
    })
}

/// The DER `ContentInfo` of an Authenticode signature over `digest` (the image hash).
fn signature(
    digest: &[u8; 32],
    key: &RsaPrivateKey,
    cert: &Certificate,
) -> Result<Vec<u8>, AuthenticodeError> {
    let link = der::asn1::ContextSpecific {
        tag_number: der::TagNumber::N2,
        tag_mode: der::TagMode::Explicit,
        value: SpcUnicode {
            tag_number: der::TagNumber::N0,
            tag_mode: der::TagMode::Implicit,
            value: BmpString::from_utf8("")?,
        },
    };
    let content = SpcIndirectDataContent {
        data: SpcAttributeTypeAndOptionalValue {
            value_type: SPC_PE_IMAGE_DATA,
            value: SpcPeImageData {
                flags: BitString::from_bytes(&[])?,
                file: link,
            },
        },
        message_digest: DigestInfo {
            digest_algorithm: pkcs7::sha256(),
            digest: OctetString::new(digest.as_slice())?,
        },
    }
    .to_der()?;
    // PKCS#7 v1.5: the signed digest covers the content's value, not its tag and length.
    let header = der::Header::decode(&mut der::SliceReader::new(&content)?)?;
    let value_len = usize::try_from(u32::from(header.length))
        .map_err(|_| der::Error::from(der::ErrorKind::Overflow))?;
    let content_digest = Sha256::digest(&content[content.len() - value_len..]);

    let signed_attrs = SetOfVec::try_from(vec![
        attribute(CONTENT_TYPE, Any::encode_from(&SPC_INDIRECT_DATA)?)?,
        // `SpcSpOpusInfo ::= SEQUENCE { programName [0] SpcString OPTIONAL, moreInfo [1]
        // SpcLink OPTIONAL }`, both left out.
        attribute(SPC_SP_OPUS_INFO, Any::new(der::Tag::Sequence, Vec::new())?)?,
        attribute(
            MESSAGE_DIGEST,
            Any::encode_from(&OctetString::new(content_digest.as_slice())?)?,
        )?,
    ])?;
    // The signature covers the attributes encoded as a SET (tag 0x31), although they are
    // stored as `[0] IMPLICIT`.
    let to_sign = Sha256::digest(signed_attrs.to_der()?);
    let signed_data = pkcs7::signed_data(
        pkcs7::Signed {
            content_type: SPC_INDIRECT_DATA,
            content: Some(Any::from_der(&content)?),
            signed_attrs: Some(signed_attrs),
            signature: pkcs7::rsa_sign(key, &to_sign)?,
        },
        cert,
    )?;
    Ok(ContentInfo {
        content_type: SIGNED_DATA,
        content: Any::encode_from(&signed_data)?,
    }
    .to_der()?)
}

/// The PE checksum of `image` (the 4 bytes of the `CheckSum` field at `field` counted as
/// zero, wherever they fall in a word): the 16-bit sum with end-around carry of the file's
/// little-endian words (an odd last byte padded with zero), plus the file's length.
fn pe_checksum(image: &[u8], field: usize) -> u32 {
    let byte = |at: usize| {
        if (field..field + 4).contains(&at) {
            0
        } else {
            image.get(at).copied().unwrap_or(0)
        }
    };
    let mut sum: u32 = 0;
    for at in (0..image.len()).step_by(2) {
        sum += u32::from(u16::from_le_bytes([byte(at), byte(at + 1)]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum.wrapping_add(image.len() as u32)
}

/// The PE checksum `image` should carry in its optional header (`CheckSum`), computed as
/// the loader and `sbsign` do.
pub fn checksum(image: &[u8]) -> Result<u32, AuthenticodeError> {
    if image.len() > MAX_IMAGE {
        return Err(AuthenticodeError::Malformed("larger than 1 GiB"));
    }
    let field = coff_header(image)? + 20 + 64;
    u32_at(image, field)?;
    Ok(pe_checksum(image, field))
}

/// Signs `image` with `key` and `cert` (the certificate of `key`, embedded in the signature
/// for the verifier to find): returns the signed image, `image` padded to 8 bytes with the
/// signature appended and the headers pointing at it.
pub fn sign(
    image: &[u8],
    key: &RsaPrivateKey,
    cert: &Certificate,
) -> Result<Vec<u8>, AuthenticodeError> {
    if image.len() > MAX_IMAGE {
        return Err(AuthenticodeError::Malformed("larger than 1 GiB"));
    }
    if !pkcs7::certifies(cert, key) {
        return Err(AuthenticodeError::KeyMismatch);
    }
    let mut out = Vec::with_capacity(image.len() + 4096);
    out.extend_from_slice(image);
    out.resize(image.len().next_multiple_of(ALIGN), 0);
    let (digest, g) = image_hash(&out, image.len())?;
    let pkcs7 = signature(&digest, key, cert)?;

    let table_at = out.len();
    let length = 8 + pkcs7.len();
    let padded = length.next_multiple_of(ALIGN);
    let (Ok(table_at32), Ok(length32), Ok(padded32)) = (
        u32::try_from(table_at),
        u32::try_from(length),
        u32::try_from(padded),
    ) else {
        return Err(AuthenticodeError::Malformed(
            "too large for a certificate table",
        ));
    };
    out.extend_from_slice(&length32.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    out.extend_from_slice(&pkcs7);
    out.resize(table_at + padded, 0);

    out[g.security_entry..g.security_entry + 4].copy_from_slice(&table_at32.to_le_bytes());
    out[g.security_entry + 4..g.security_entry + 8].copy_from_slice(&padded32.to_le_bytes());
    let checksum = pe_checksum(&out, g.checksum);
    out[g.checksum..g.checksum + 4].copy_from_slice(&checksum.to_le_bytes());
    Ok(out)
}

/// The Authenticode SHA-256 of an unsigned `image` as [`sign`] computes it (after padding
/// the image to 8 bytes).
pub fn digest(image: &[u8]) -> Result<[u8; 32], AuthenticodeError> {
    if image.len() > MAX_IMAGE {
        return Err(AuthenticodeError::Malformed("larger than 1 GiB"));
    }
    let mut padded = image.to_vec();
    padded.resize(image.len().next_multiple_of(ALIGN), 0);
    Ok(image_hash(&padded, image.len())?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ image: headers (0x200 bytes) and one section of `body` at 0x200.
    fn tiny_pe(body: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        b[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        b[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes());
        b[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        let opt = coff + 20;
        b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        b[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes());
        b[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        let sec = opt + 240;
        b[sec..sec + 5].copy_from_slice(b".text");
        let size = body.len().next_multiple_of(0x200) as u32;
        b[sec + 16..sec + 20].copy_from_slice(&size.to_le_bytes());
        b[sec + 20..sec + 24].copy_from_slice(&0x200u32.to_le_bytes());
        b.extend_from_slice(body);
        b.resize(0x200 + size as usize, 0);
        b
    }

    #[test]
    fn the_hash_skips_checksum_and_security_entry_only() {
        let pe = tiny_pe(b"hello");
        let d = digest(&pe).unwrap();
        let mut changed = pe.clone();
        changed[0x84 + 20 + 64] ^= 0xff; // CheckSum
        assert_eq!(digest(&changed).unwrap(), d);
        let mut changed = pe.clone();
        changed[0x200] ^= 1; // section data
        assert_ne!(digest(&changed).unwrap(), d);
        let mut changed = pe.clone();
        changed[0x40] ^= 1; // DOS stub
        assert_ne!(digest(&changed).unwrap(), d);
        let mut longer = pe.clone();
        longer.extend_from_slice(b"trailing"); // bytes after the last section are hashed
        assert_ne!(digest(&longer).unwrap(), d);
    }

    #[test]
    fn the_checksum_counts_every_word_but_its_own() {
        let pe = tiny_pe(b"abc");
        let at = 0x84 + 20 + 64;
        let mut other = pe.clone();
        other[at] = 0x55;
        assert_eq!(pe_checksum(&pe, at), pe_checksum(&other, at));
        let mut other = pe.clone();
        other[0x201] ^= 1;
        assert_ne!(pe_checksum(&pe, at), pe_checksum(&other, at));
    }

    #[test]
    fn hostile_headers_are_errors_not_panics() {
        let pe = tiny_pe(b"x");
        for cut in [0, 1, 2, 0x3c, 0x40, 0x84, 0x90, 0x100, 0x180, 0x1ff] {
            assert!(digest(&pe[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = pe.clone();
        bad[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(digest(&bad).is_err());
        let mut bad = pe.clone();
        let sec = 0x84 + 20 + 240;
        bad[sec + 16..sec + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(digest(&bad).is_err());
        let mut bad = pe.clone();
        bad[0x86..0x88].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(digest(&bad).is_err());
        let mut signed = pe.clone();
        let entry = 0x84 + 20 + 112 + 32;
        signed[entry..entry + 4].copy_from_slice(&0x400u32.to_le_bytes());
        signed[entry + 4..entry + 8].copy_from_slice(&8u32.to_le_bytes());
        assert!(matches!(
            digest(&signed),
            Err(AuthenticodeError::AlreadySigned)
        ));
    }

    /// `tiny_pe` turned into a PE32 image (magic 0x10b, 224-byte optional header, the data
    /// directory 16 bytes earlier).
    fn tiny_pe32(body: &[u8]) -> Vec<u8> {
        let mut b = tiny_pe(body);
        let opt = 0x84 + 20;
        b[0x84 + 16..0x84 + 18].copy_from_slice(&224u16.to_le_bytes());
        b[opt..opt + 2].copy_from_slice(&0x10bu16.to_le_bytes());
        b[opt + 108..opt + 112].fill(0);
        b[opt + 92..opt + 96].copy_from_slice(&16u32.to_le_bytes());
        // The section header moves up with the shorter optional header.
        let header: Vec<u8> = b[opt + 240..opt + 280].to_vec();
        b[opt + 224..opt + 264].copy_from_slice(&header);
        b[opt + 264..opt + 280].fill(0);
        b
    }

    #[test]
    fn pe32_images_skip_their_own_checksum_and_security_entry() {
        let pe = tiny_pe32(b"thirty-two");
        let d = digest(&pe).unwrap();
        let opt = 0x84 + 20;
        let mut changed = pe.clone();
        changed[opt + 64] ^= 0xff; // CheckSum: same offset in PE32 and PE32+
        assert_eq!(digest(&changed).unwrap(), d);
        let mut signed = pe.clone();
        signed[opt + 96 + 32..opt + 96 + 36].copy_from_slice(&0x400u32.to_le_bytes());
        assert!(matches!(
            digest(&signed),
            Err(AuthenticodeError::AlreadySigned)
        ));
        let mut changed = pe.clone();
        changed[opt + 200] ^= 1; // in the data directory, hashed
        assert_ne!(digest(&changed).unwrap(), d);
        assert_ne!(d, digest(&tiny_pe(b"thirty-two")).unwrap());
    }

    #[test]
    fn gaps_between_sections_are_refused() {
        // Two sections with 0x200 bytes between them.
        let mut pe = tiny_pe(&[1u8; 0x200]);
        let opt = 0x84 + 20;
        pe[0x86..0x88].copy_from_slice(&2u16.to_le_bytes());
        let sec2 = opt + 240 + 40;
        pe[sec2..sec2 + 5].copy_from_slice(b".data");
        pe[sec2 + 16..sec2 + 20].copy_from_slice(&0x200u32.to_le_bytes());
        pe[sec2 + 20..sec2 + 24].copy_from_slice(&0x600u32.to_le_bytes());
        pe.resize(0x600, 0xee); // the gap
        pe.extend_from_slice(&[2u8; 0x200]);
        assert!(matches!(
            digest(&pe),
            Err(AuthenticodeError::Malformed(GAP))
        ));
        // A gap between the headers and the first section is one too.
        let mut late = tiny_pe(b"x");
        let sec = opt + 240;
        late[sec + 20..sec + 24].copy_from_slice(&0x400u32.to_le_bytes());
        late.resize(0x600, 0);
        assert!(matches!(
            digest(&late),
            Err(AuthenticodeError::Malformed(GAP))
        ));
        // Without the gap, both sections are hashed and the image is signable.
        let mut contiguous = pe.clone();
        contiguous.drain(0x400..0x600);
        contiguous[sec2 + 20..sec2 + 24].copy_from_slice(&0x400u32.to_le_bytes());
        assert!(digest(&contiguous).is_ok());
    }

    #[test]
    fn the_checksum_field_is_zero_wherever_it_falls() {
        // A field at an odd offset straddles three words: each of its bytes counts as zero.
        let data: Vec<u8> = (0..64u8).collect();
        let mut zeroed = data.clone();
        zeroed[9..13].fill(0);
        assert_eq!(pe_checksum(&data, 9), pe_checksum(&zeroed, 9));
        assert_ne!(pe_checksum(&data, 9), pe_checksum(&data, 10));
        // Known answer: words 0x0100 + 0x0302 = 0x0402, plus the length 4.
        assert_eq!(pe_checksum(&[0, 1, 2, 3], 100), 0x0402 + 4);
        // End-around carry: 0xffff + 0x0002 = 0x1_0001 -> 0x0002, plus the length 4.
        assert_eq!(pe_checksum(&[0xff, 0xff, 2, 0], 100), 0x0002 + 4);
    }

    #[test]
    fn every_single_byte_change_to_the_headers_is_hashed_or_refused_without_panic() {
        let opt = 0x84 + 20;
        // PE32+: CheckSum and the Security entry of the data directory at +112.
        every_header_byte(
            &tiny_pe(b"body"),
            [opt + 64..opt + 68, opt + 144..opt + 152],
        );
        // PE32: the data directory starts at +96.
        every_header_byte(
            &tiny_pe32(b"body"),
            [opt + 64..opt + 68, opt + 128..opt + 136],
        );
    }

    fn every_header_byte(pe: &[u8], skipped: [std::ops::Range<usize>; 2]) {
        let reference = digest(pe).unwrap();
        for at in 0..0x200 {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut changed = pe.to_vec();
                if changed[at] == value {
                    continue;
                }
                changed[at] = value;
                match digest(&changed) {
                    Ok(d) if skipped.iter().any(|r| r.contains(&at)) => assert_eq!(d, reference),
                    Ok(d) => assert_ne!(d, reference, "byte {at:#x} is not hashed"),
                    Err(_) => {}
                }
            }
        }
    }
}
