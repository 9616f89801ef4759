//! Proxy-DHCP next to an office DHCP server without PXE. Cases, all in one lab (TCG machines are
//! slow, so they run at once):
//! - a UEFI (OVMF) machine assigned a schematic with extensions boots it;
//! - a BIOS (SeaBIOS + iPXE NIC ROM) machine assigned another schematic boots that one;
//! - an unassigned machine under policy `ignore` is offered an address by the office server
//!   but gets no PXE answer from us (so its firmware moves on to the next boot device).

use std::path::PathBuf;
use std::time::Duration;

use bootfactory::fixture::FixtureOptions;

use crate::support::lab::{
    BOOTFACTORY_IP, BUSYBOX, Firmware, Lab, lab_kernel, ovmf_code, serial, start_vm,
};
use crate::{
    Appliance, INIT, MARKER, admin_get, bootable, line_after, lines_after, plain_http,
    start_bootfactory, tail,
};

const TOKEN: &str = "e2e-admin-token";
const UEFI_MAC: &str = "52:54:00:e2:e0:01";
const BIOS_MAC: &str = "52:54:00:e2:e0:02";
const STRANGER_MAC: &str = "52:54:00:e2:e0:03";

#[test]
fn machines_pxe_boot_what_they_are_assigned() {
    if !crate::lab_ready(&["dnsmasq", "qemu-system-x86_64", "curl"]) {
        return;
    }
    let Some(kernel) = lab_kernel() else { return };
    assert!(
        ovmf_code().is_some(),
        "OVMF is required (apt-get install ovmf)"
    );

    // Two schematics: A with two extensions (one of them microcode), B with a third.
    let appliance = Appliance::new(
        FixtureOptions {
            amd64: bootable(kernel, INIT.into(), PathBuf::from(BUSYBOX)),
            ..FixtureOptions::default()
        },
        &[
            "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/gvisor, siderolabs/amd-ucode]\n",
            "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/i915-ucode]\n",
        ],
    );
    let (id_a, id_b) = (&appliance.ids[0], &appliance.ids[1]);
    let config = appliance.config(
        TOKEN,
        &format!(
            "  \"{UEFI_MAC}\":\n    schematic: {id_a}\n    version: v1.11.6\n    extraKernelArgs: [console=ttyS0, bf.vm=uefi]\n  \"{BIOS_MAC}\":\n    schematic: {id_b}\n    version: v1.11.6\n    extraKernelArgs: [console=ttyS0, bf.vm=bios]\n"
        ),
        &plain_http(),
        "  unassigned: ignore\n",
    );

    let mut lab = Lab::new("e");
    lab.start_office_dhcp();
    start_bootfactory(&mut lab, &config);
    let api = |lab: &Lab, path: &str| {
        admin_get(lab, TOKEN, &format!("http://{BOOTFACTORY_IP}:8080{path}"))
    };

    let uefi = start_vm(&mut lab, "uefi", Firmware::Uefi, UEFI_MAC);
    let bios = start_vm(&mut lab, "bios", Firmware::Bios, BIOS_MAC);
    let stranger = start_vm(&mut lab, "stranger", Firmware::Uefi, STRANGER_MAC);

    let done = |lab: &Lab, name: &str| serial(lab, name).contains("BOOTFACTORY-E2E-DONE");
    let finished = lab.wait_for(Duration::from_secs(420), |lab| {
        let uefi_over = done(lab, "uefi") || !lab.running(&uefi);
        let bios_over = done(lab, "bios") || !lab.running(&bios);
        uefi_over && bios_over
    });
    let report = |lab: &Lab| {
        format!(
            "--- uefi serial ---\n{}\n--- bios serial ---\n{}\n--- stranger serial ---\n{}\n--- bootfactory ---\n{}\n--- office ---\n{}",
            tail(&serial(lab, "uefi")),
            tail(&serial(lab, "bios")),
            tail(&serial(lab, "stranger")),
            tail(&lab.log("bootfactory.log")),
            tail(&lab.log("office-dnsmasq.log")),
        )
    };
    assert!(
        finished,
        "machines did not finish booting in time\n{}",
        report(&lab)
    );

    // UEFI machine: schematic A, its kernel args, both extensions (plus the schematic one).
    let out = serial(&lab, "uefi");
    assert!(
        out.contains(MARKER),
        "UEFI machine did not boot\n{}",
        report(&lab)
    );
    let cmdline = line_after(&out, "CMDLINE: ");
    assert!(
        cmdline.contains("talos.platform=metal") && cmdline.contains("bf.vm=uefi"),
        "{cmdline}"
    );
    let exts = lines_after(&out, "EXTENSION: ");
    assert!(exts.iter().any(|l| l.contains("gvisor")), "{exts:?}");
    assert!(exts.iter().any(|l| l.contains("amd-ucode")), "{exts:?}");
    assert!(exts.iter().any(|l| l.contains("schematic")), "{exts:?}");
    assert!(!exts.iter().any(|l| l.contains("i915")), "{exts:?}");

    // BIOS machine: schematic B.
    let out = serial(&lab, "bios");
    assert!(
        out.contains(MARKER),
        "BIOS machine did not boot\n{}",
        report(&lab)
    );
    let cmdline = line_after(&out, "CMDLINE: ");
    assert!(
        cmdline.contains("bf.vm=bios") && !cmdline.contains("bf.vm=uefi"),
        "{cmdline}"
    );
    let exts = lines_after(&out, "EXTENSION: ");
    assert!(exts.iter().any(|l| l.contains("i915")), "{exts:?}");
    assert!(!exts.iter().any(|l| l.contains("gvisor")), "{exts:?}");

    // The stranger was offered an address by the office server (UEFI PXE firmware takes it
    // only together with boot information, which it never got), was seen by us, and got no
    // PXE answer.
    let offered = lab.wait_for(Duration::from_secs(60), |lab| {
        lab.log("office-dnsmasq.log")
            .lines()
            .any(|l| l.contains("DHCPOFFER") && l.contains(STRANGER_MAC))
    });
    assert!(
        offered,
        "the office server offered the unassigned machine no address\n{}",
        report(&lab)
    );
    let machines = api(&lab, "/api/v1/machines");
    let list: serde_json::Value = serde_json::from_str(&machines).unwrap_or_default();
    let seen = list["machines"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mac"] == STRANGER_MAC)
        .cloned()
        .unwrap_or_default();
    assert!(
        seen["seen"]["lastServed"]
            .as_str()
            .unwrap_or("")
            .contains("nothing"),
        "{machines}\n{}",
        report(&lab)
    );
    assert!(seen.get("assignment").is_none());
    assert!(!serial(&lab, "stranger").contains(MARKER));
    // The assigned machines are in the inventory with what they were served.
    for mac in [UEFI_MAC, BIOS_MAC] {
        let m = list["machines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mac"] == mac)
            .unwrap();
        assert!(m["seen"]["requests"].as_u64().unwrap_or(0) >= 2, "{m}");
    }
    // The network-boot counters saw it all.
    let metrics = api(&lab, "/metrics");
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        counter("bootfactory_dhcp_packets_total{outcome=\"offer\"}") >= 2,
        "{metrics}"
    );
    assert!(
        counter("bootfactory_dhcp_packets_total{outcome=\"silenced_by_policy\"}") >= 1,
        "{metrics}"
    );
    assert!(
        counter("bootfactory_tftp_requests_total{outcome=\"served\"}") >= 1,
        "{metrics}"
    );
    lab.kill(&stranger);
}
