//! Secure Boot key databases (`bootfactory::formats::efi_auth`) against efitools, byte for
//! byte: `cert-to-efi-sig-list` writes the same `EFI_SIGNATURE_LIST` and `sign-efi-sig-list -t`
//! (deterministic with a fixed timestamp) the same signed `PK`, `KEK` and `db` updates from
//! the same key and certificate; `sig-list-to-certs` reads our list back to the certificate.

mod support;

use std::process::Command;

use bootfactory::formats::efi_auth::{
    EfiAuthError, EfiTime, Guid, Variable, authenticated_write, x509_signature_list,
};
use support::keys::{key_pair, run};
use support::tools::have;

const OWNER: &str = "6b9ab8f4-0c35-4b8e-9f7d-2b1f1f3c9a10";

#[test]
fn signature_lists_and_signed_updates_equal_efitools_output() {
    if !(have("cert-to-efi-sig-list")
        && have("sign-efi-sig-list")
        && have("sig-list-to-certs")
        && have("openssl"))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let signer = key_pair(d, "signer");
    let owner = Guid::from_text(OWNER).unwrap();

    run(Command::new("cert-to-efi-sig-list")
        .args(["-g", OWNER])
        .arg(&signer.cert_pem)
        .arg(d.join("ref.esl")));
    let reference = std::fs::read(d.join("ref.esl")).unwrap();
    let ours = x509_signature_list(owner, &signer.cert_der).unwrap();
    assert_eq!(
        ours, reference,
        "EFI_SIGNATURE_LIST differs from cert-to-efi-sig-list's"
    );

    std::fs::write(d.join("ours.esl"), &ours).unwrap();
    run(Command::new("sig-list-to-certs")
        .arg(d.join("ours.esl"))
        .arg(d.join("back")));
    assert_eq!(
        std::fs::read(d.join("back-0.der")).unwrap(),
        signer.cert_der,
        "sig-list-to-certs did not read our certificate back"
    );

    // Every field distinct, so a swapped or off-by-one field cannot match by accident.
    let time = EfiTime {
        year: 2025,
        month: 3,
        day: 14,
        hour: 15,
        minute: 9,
        second: 26,
    };
    for variable in [Variable::Pk, Variable::Kek, Variable::Db] {
        let name = variable.name();
        let out = d.join(format!("{name}.auth"));
        run(Command::new("sign-efi-sig-list")
            .args(["-t", "2025-03-14 15:09:26", "-k"])
            .arg(&signer.key_pem)
            .arg("-c")
            .arg(&signer.cert_pem)
            .arg(name)
            .arg(d.join("ref.esl"))
            .arg(&out));
        let reference = std::fs::read(&out).unwrap();
        let ours = authenticated_write(variable, &ours, time, &signer.key, &signer.cert).unwrap();
        assert_eq!(
            ours, reference,
            "{name}.auth differs from sign-efi-sig-list's"
        );
    }
}

#[test]
fn another_time_or_variable_changes_the_signature() {
    if !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let signer = key_pair(dir.path(), "signer");
    let list = x509_signature_list(Guid::from_text(OWNER).unwrap(), &signer.cert_der).unwrap();
    let t = EfiTime {
        year: 2025,
        month: 6,
        day: 1,
        hour: 12,
        minute: 0,
        second: 0,
    };
    let later = EfiTime { second: 1, ..t };
    let sign = |v, t| authenticated_write(v, &list, t, &signer.key, &signer.cert).unwrap();
    let pk = sign(Variable::Pk, t);
    assert_eq!(pk, sign(Variable::Pk, t), "deterministic");
    assert_ne!(pk, sign(Variable::Pk, later));
    assert_ne!(pk, sign(Variable::Kek, t));
    assert_ne!(sign(Variable::Kek, t), sign(Variable::Db, t));
    assert!(
        pk.ends_with(&list),
        "the payload follows the authentication header"
    );

    // A certificate of another key is refused, not signed into a file firmware would reject.
    let other = key_pair(dir.path(), "other");
    assert!(matches!(
        authenticated_write(Variable::Db, &list, t, &signer.key, &other.cert),
        Err(EfiAuthError::KeyMismatch)
    ));
}
