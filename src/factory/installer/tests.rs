//! Unit tests of installer images: names, the cosign payload, the layers.

use std::io::Read as _;
use std::path::Path;

use super::layers::gunzipped_digest;
use super::*;

#[test]
fn image_names_as_upstream_reads_them() {
    let p = |s: &str| InstallerName::parse(s).map(|n| (n.platform, n.secure_boot));
    assert_eq!(p("installer").unwrap(), ("metal".into(), false));
    assert_eq!(p("installer-secureboot").unwrap(), ("metal".into(), true));
    assert_eq!(p("metal-installer").unwrap(), ("metal".into(), false));
    assert_eq!(p("aws-installer").unwrap(), ("aws".into(), false));
    assert_eq!(
        p("digital-ocean-installer").unwrap(),
        ("digital-ocean".into(), false)
    );
    assert_eq!(
        p("metal-installer-secureboot").unwrap(),
        ("metal".into(), true)
    );
    for bad in ["foo-bar", "installers", "metal-installer-x", ""] {
        let e = p(bad).unwrap_err();
        assert_eq!(e.to_string(), format!("invalid image: {bad}"));
    }
}

#[test]
fn cosign_payload_is_simple_signing_json() {
    let d = Digest::of_bytes(b"index");
    let payload = cosign_payload("factory.test:8080/metal-installer/abc", &d);
    assert_eq!(
        String::from_utf8(payload).unwrap(),
        format!(
            "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"factory.test:8080/metal-installer/abc\"}},\"image\":{{\"docker-manifest-digest\":\"{d}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
        )
    );
    assert_eq!(signature_tag(&d), format!("sha256-{}.sig", d.hex()));
}

fn entries(path: &Path) -> Vec<(String, tar::EntryType, u32, u64, u64, Vec<u8>)> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut a = tar::Archive::new(gz);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (
                e.path().unwrap().display().to_string(),
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.mtime().unwrap(),
                data,
            )
        })
        .collect()
}

#[test]
fn artifacts_layer_is_sorted_zero_mode_and_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::write(&a, b"UKI bytes").unwrap();
    std::fs::write(&b, vec![7u8; 100_000]).unwrap();
    let files = vec![
        ("usr/install/amd64/vmlinuz.efi".to_string(), a.clone()),
        ("usr/install/amd64/systemd-boot.efi".to_string(), b.clone()),
    ];
    let out1 = dir.path().join("l1");
    let out2 = dir.path().join("l2");
    let d1 = write_artifacts_layer(&files, &out1).unwrap();
    let d2 = write_artifacts_layer(&files, &out2).unwrap();
    assert_eq!(d1, d2);
    assert_eq!(std::fs::read(&out1).unwrap(), std::fs::read(&out2).unwrap());
    assert_eq!(
        d1.compressed,
        Digest::of_bytes(&std::fs::read(&out1).unwrap())
    );
    assert_eq!(d1.diff_id, gunzipped_digest(&out1).unwrap());
    let e = entries(&out1);
    assert_eq!(
        e.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        [
            "usr/install/amd64/systemd-boot.efi",
            "usr/install/amd64/vmlinuz.efi"
        ]
    );
    for (name, kind, mode, uid, mtime, _) in &e {
        assert_eq!(
            (*kind, *mode, *uid, *mtime),
            (tar::EntryType::Regular, 0, 0, 0),
            "{name}"
        );
    }
    assert_eq!(e[1].5, b"UKI bytes");
    // gzip header: no name, no mtime, OS "unknown".
    let raw = std::fs::read(&out1).unwrap();
    assert_eq!(&raw[..4], &[0x1f, 0x8b, 8, 0]);
    assert_eq!(&raw[4..8], &[0, 0, 0, 0]);
    assert_eq!(raw[9], 255);
}

#[test]
fn overlay_layer_walks_the_image_and_never_leaves_it() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("artifacts/arm64/firmware")).unwrap();
    std::fs::create_dir_all(tree.join("installers")).unwrap();
    std::fs::write(tree.join("artifacts/arm64/firmware/start4.elf"), b"fw").unwrap();
    std::fs::write(tree.join("installers/rpi_generic"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        tree.join("installers/rpi_generic"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"host secret").unwrap();
    // An absolute link resolves inside the image (missing there: left out); a relative
    // one inside the image is read through.
    symlink(&secret, tree.join("artifacts/arm64/escape")).unwrap();
    symlink("firmware/start4.elf", tree.join("artifacts/arm64/alias")).unwrap();
    let out = dir.path().join("layer");
    write_overlay_layer(
        &tree,
        &tree.join("installers/rpi_generic"),
        b"configTxtAppend: x\n",
        &out,
    )
    .unwrap();
    let e = entries(&out);
    let names: Vec<&str> = e.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "overlay/artifacts/arm64",
            "overlay/artifacts/arm64/alias",
            "overlay/artifacts/arm64/firmware",
            "overlay/artifacts/arm64/firmware/start4.elf",
            "overlay/extra-options",
            "overlay/installers/default",
        ]
    );
    assert!(e.iter().all(|e| e.5 != b"host secret"));
    assert_eq!(e[1].5, b"fw");
    assert_eq!(e[4].5, b"configTxtAppend: x\n");
    assert_eq!((e[4].1, e[4].2), (tar::EntryType::Regular, 0o644));
    assert_eq!((e[5].1, e[5].2), (tar::EntryType::Regular, 0o755));
    assert_eq!(e[0].1, tar::EntryType::Directory);
}

#[test]
fn overlay_nesting_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let mut deep = tree.join("artifacts");
    for _ in 0..70 {
        deep = deep.join("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::create_dir_all(tree.join("installers")).unwrap();
    std::fs::write(tree.join("installers/x"), b"x").unwrap();
    let err = write_overlay_layer(
        &tree,
        &tree.join("installers/x"),
        b"{}\n",
        &dir.path().join("layer"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("nested deeper"), "{err}");
}
