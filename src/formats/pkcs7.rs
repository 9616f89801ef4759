//! The PKCS#7 `SignedData` both Secure Boot signatures use: one signer, identified by its
//! certificate's issuer and serial number, SHA-256 with RSA (PKCS#1 v1.5), the certificate
//! embedded. [`super::authenticode`] signs attributes over an embedded content,
//! [`super::efi_auth`] signs detached content without attributes; this module only assembles.

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::CmsVersion;
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier,
    SignerInfo, SignerInfos,
};
use der::asn1::{Any, ObjectIdentifier, OctetString, SetOfVec};
use rsa::RsaPrivateKey;
use sha2::Sha256;
use x509_cert::Certificate;
use x509_cert::spki::AlgorithmIdentifierOwned;

/// SHA-256 (NIST).
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// `rsaEncryption`: PKCS#1 v1.5 signatures, the hash named by the digest algorithm.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// An algorithm identifier with NULL parameters, as both signers write them.
pub(crate) fn algorithm(oid: ObjectIdentifier) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: Some(Any::null()),
    }
}

/// The SHA-256 DigestInfo algorithm identifier.
pub(crate) fn sha256() -> AlgorithmIdentifierOwned {
    algorithm(SHA256)
}

/// An RSA PKCS#1 v1.5 signature of the SHA-256 `digest`, with a random blinding factor, which
/// reduces what the private-key operation's timing tells about the key (the `rsa` crate's
/// arithmetic is not constant-time: RUSTSEC-2023-0071, no fixed release; the keys sign local
/// files, not data an attacker can time). The signature itself is deterministic.
pub(crate) fn rsa_sign(key: &RsaPrivateKey, digest: &[u8]) -> rsa::Result<Vec<u8>> {
    key.sign_with_rng(
        &mut rand_core::OsRng,
        rsa::Pkcs1v15Sign::new::<Sha256>(),
        digest,
    )
}

/// Whether `cert` holds the public key of `key` (an RSA certificate of that key).
pub(crate) fn certifies(cert: &Certificate, key: &RsaPrivateKey) -> bool {
    use rsa::pkcs1::DecodeRsaPublicKey as _;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    spki.algorithm.oid == RSA_ENCRYPTION
        && rsa::RsaPublicKey::from_pkcs1_der(spki.subject_public_key.raw_bytes())
            .is_ok_and(|public| public == key.to_public_key())
}

/// What was signed and how: the content (type and, unless detached, the content itself),
/// the signed attributes if any, and the signature over them (or over the content's digest).
pub(crate) struct Signed {
    pub content_type: ObjectIdentifier,
    pub content: Option<Any>,
    pub signed_attrs: Option<SignedAttributes>,
    pub signature: Vec<u8>,
}

/// The `SignedData` of one signer holding `cert`.
pub(crate) fn signed_data(signed: Signed, cert: &Certificate) -> der::Result<SignedData> {
    let signer = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: sha256(),
        signed_attrs: signed.signed_attrs,
        signature_algorithm: algorithm(RSA_ENCRYPTION),
        signature: OctetString::new(signed.signature)?,
        unsigned_attrs: None,
    };
    Ok(SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![sha256()])?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: signed.content_type,
            econtent: signed.content,
        },
        certificates: Some(CertificateSet::try_from(vec![
            cms::cert::CertificateChoices::Certificate(cert.clone()),
        ])?),
        crls: None,
        signer_infos: SignerInfos::try_from(vec![signer])?,
    })
}
