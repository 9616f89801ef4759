//! HTTPS boot that verifies the appliance, with no internet and no `pxe.bootURL`. Two labs,
//! two tests (they run at once):
//! - a UEFI (OVMF) machine PXE-boots with `pxe.ipxeVariant: https` and `http.tls.selfSigned`:
//!   firmware → TFTP → our `ipxe.efi`, patched to trust the appliance CA → DHCP → the boot
//!   script, kernel and initramfs over `https://` → the marker;
//! - a man in the middle: bootfactory's `pxe.bootURL` names `https://192.0.2.10:9443`, where
//!   `openssl s_server` answers with another self-signed certificate (same address, different
//!   certificate): iPXE refuses it, so the machine never gets a script or the marker.

use std::path::PathBuf;
use std::time::Duration;

use bootfactory::fixture::FixtureOptions;

use crate::support::lab::{
    BOOTFACTORY_IP, BUSYBOX, Firmware, Lab, lab_kernel, ovmf_code, serial, start_vm,
};
use crate::{Appliance, INIT, MARKER, bootable, line_after, start_bootfactory, tail};

const TOKEN: &str = "e2e-admin-token";
const MAC: &str = "52:54:00:e2:e1:01";
const MITM_PORT: u16 = 9443;

/// The appliance of both labs: the fixture release imported, and a configuration with TLS
/// (self-signed) on 192.0.2.10:8443, `pxe.ipxeVariant: https` and `extra_pxe` appended under
/// `pxe:`. Returns the appliance and its config file.
fn prepare(extra_pxe: &str) -> Option<(Appliance, PathBuf)> {
    let kernel = lab_kernel()?;
    assert!(
        ovmf_code().is_some(),
        "OVMF is required (apt-get install ovmf)"
    );
    let appliance = Appliance::new(
        FixtureOptions {
            amd64: bootable(kernel, INIT.into(), PathBuf::from(BUSYBOX)),
            ..FixtureOptions::default()
        },
        &["customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/gvisor]\n"],
    );
    let config = appliance.config(
        TOKEN,
        &format!(
            "  \"{MAC}\":\n    schematic: {}\n    version: v1.11.6\n    extraKernelArgs: [console=ttyS0, bf.vm=https]\n",
            appliance.ids[0]
        ),
        &format!(
            "  listen: {BOOTFACTORY_IP}:8443\n  externalURL: https://{BOOTFACTORY_IP}:8443\n  tls:\n    selfSigned: true\n"
        ),
        &format!("  unassigned: ignore\n  ipxeVariant: https\n{extra_pxe}"),
    );
    Some((appliance, config))
}

fn report(lab: &Lab) -> String {
    format!(
        "--- serial ---\n{}\n--- bootfactory ---\n{}\n--- office ---\n{}",
        tail(&serial(lab, "uefi")),
        tail(&lab.log("bootfactory.log")),
        tail(&lab.log("office-dnsmasq.log")),
    )
}

/// The serial log without ANSI colour sequences and carriage returns.
fn console(lab: &Lab) -> String {
    let raw = serial(lab, "uefi");
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[test]
fn uefi_machine_boots_over_https_trusting_the_appliance_ca() {
    if !crate::lab_ready(&["dnsmasq", "qemu-system-x86_64"]) {
        return;
    }
    let Some((_appliance, config)) = prepare("") else {
        return;
    };
    let mut lab = Lab::new("h");
    lab.start_office_dhcp();
    start_bootfactory(&mut lab, &config);
    let log = lab.log("bootfactory.log");
    assert!(
        log.contains("the served EFI iPXE binaries trust the boot CA"),
        "{log}"
    );
    assert!(
        log.contains(&format!("https://{BOOTFACTORY_IP}:8443")),
        "the default boot URL is the TLS listener:\n{log}"
    );
    let vm = start_vm(&mut lab, "uefi", Firmware::Uefi, MAC);
    let finished = lab.wait_for(Duration::from_secs(420), |lab| {
        serial(lab, "uefi").contains(crate::DONE) || !lab.running(&vm)
    });
    assert!(
        finished,
        "the machine did not finish in time\n{}",
        report(&lab)
    );
    let out = console(&lab);
    assert!(
        out.contains(MARKER),
        "the machine did not boot\n{}",
        report(&lab)
    );
    // iPXE fetched its script (and then the kernel and initramfs) over HTTPS from us.
    let script = format!("https://{BOOTFACTORY_IP}:8443/boot/{MAC}.ipxe...");
    assert!(
        out.contains(&script),
        "no {script} on the console\n{}",
        report(&lab)
    );
    assert!(
        out.lines().any(
            |l| l.starts_with(&format!("https://{BOOTFACTORY_IP}:8443/")) && l.contains("kernel")
        ),
        "the kernel did not come over https\n{}",
        report(&lab)
    );
    assert!(
        !out.lines().any(|l| l.starts_with("http://")),
        "iPXE fetched something over plain HTTP\n{out}"
    );
    for l in out.lines().filter(|l| l.starts_with("https://")) {
        eprintln!("iPXE: {l}");
    }
    let cmdline = line_after(&out, "CMDLINE: ");
    assert!(cmdline.contains("bf.vm=https"), "{cmdline}");
}

#[test]
fn ipxe_refuses_a_server_with_another_certificate_at_the_boot_address() {
    if !crate::lab_ready(&["dnsmasq", "qemu-system-x86_64", "openssl"]) {
        return;
    }
    let Some((appliance, config)) = prepare(
        // The binaries trust the boot CA explicitly: with pxe.bootURL set, `auto` would
        // serve them as built.
        &format!("  bootURL: https://{BOOTFACTORY_IP}:{MITM_PORT}\n  ipxeTrust: boot-ca\n"),
    ) else {
        return;
    };
    // The impostor: a self-signed RSA certificate for the same address, and the script a
    // machine would run if it believed it.
    let mitm = appliance.work.path().join("mitm");
    let www = mitm.join("www");
    std::fs::create_dir_all(www.join("boot")).unwrap();
    std::fs::write(
        www.join(format!("boot/{MAC}.ipxe")),
        "#!ipxe\necho IMPOSTOR-SCRIPT-RAN\nshell\n",
    )
    .unwrap();
    let (cert, key) = (mitm.join("cert.pem"), mitm.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=impostor",
            "-addext",
            &format!("subjectAltName=IP:{BOOTFACTORY_IP}"),
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let mut lab = Lab::new("m");
    lab.start_office_dhcp();
    start_bootfactory(&mut lab, &config);
    // Run from the www directory: s_server -WWW serves paths relative to it.
    let serve = format!(
        "cd {} && exec openssl s_server -accept {BOOTFACTORY_IP}:{MITM_PORT} -WWW -msg -cert {} -key {}",
        www.display(),
        cert.display(),
        key.display()
    );
    lab.spawn("bf", "mitm.log", &["sh", "-c", &serve]);
    let vm = start_vm(&mut lab, "uefi", Firmware::Uefi, MAC);
    let url = format!("https://{BOOTFACTORY_IP}:{MITM_PORT}/boot/{MAC}.ipxe...");
    let refused = |out: &str| {
        out.lines()
            .any(|l| l.starts_with(&url) && l.contains("https://ipxe.org/"))
    };
    let over = lab.wait_for(Duration::from_secs(300), |lab| {
        refused(&console(lab)) || !lab.running(&vm)
    });
    let out = console(&lab);
    let report = format!(
        "{}\n--- impostor ---\n{}",
        report(&lab),
        tail(&lab.log("mitm.log"))
    );
    assert!(
        over && refused(&out),
        "iPXE did not refuse the impostor\n{report}"
    );
    // The impostor received iPXE's ClientHello (`-msg` logs each handshake message; the
    // refusal is iPXE's verdict on its certificate), and nothing it serves ran.
    assert!(lab.log("mitm.log").contains("ClientHello"), "{report}");
    assert!(!out.contains("IMPOSTOR-SCRIPT-RAN"), "{report}");
    assert!(!out.contains(MARKER), "{report}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&url))
        .unwrap_or_default();
    eprintln!("iPXE on the impostor: {line}");
    assert!(
        line.contains("Permission denied") || line.contains("Operation not permitted"),
        "iPXE failed for another reason than trust: {line}\n{report}"
    );
    lab.kill(&vm);
}
