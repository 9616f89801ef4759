//! An arm64 machine network-boots: QEMU's `virt` board (TCG, Cortex-A57) with AAVMF, next to
//! the office DHCP server like `proxy.rs`. Its firmware PXE asks with client arch 11, gets
//! `ipxe-arm64.efi` over TFTP; that iPXE asks again, gets its boot script over HTTP and boots
//! the fixture's arm64 kernel (a real Debian `Image`, an EFI program) and initramfs, whose
//! `/init` (an arm64 busybox) prints the marker on `ttyAMA0`.
//!
//! The assignment names no `arch`: the architecture comes from the firmware's DHCP request
//! (option 93), recorded in the inventory before the boot script is asked for.

use std::time::{Duration, Instant};

use bootfactory::fixture::FixtureOptions;

use crate::support::lab::{
    AAVMF_CODE, AAVMF_VARS, BOOTFACTORY_IP, Firmware, Lab, lab_busybox_arm64, lab_kernel_arm64,
    present, serial, start_vm,
};
use crate::{
    Appliance, DONE, MARKER, admin_get, bootable, init_on, line_after, lines_after, plain_http,
    start_bootfactory, tail,
};

const TOKEN: &str = "e2e-admin-token";
const ARM64_MAC: &str = "52:54:00:e2:e0:40";

#[test]
fn an_arm64_machine_pxe_boots_its_assignment() {
    if !crate::lab_ready(&["dnsmasq", "qemu-system-aarch64", "curl"]) {
        return;
    }
    if !present(AAVMF_CODE.as_ref(), "qemu-efi-aarch64")
        || !present(AAVMF_VARS.as_ref(), "qemu-efi-aarch64")
    {
        return;
    }
    let Some(kernel) = lab_kernel_arm64() else {
        return;
    };
    let Some(busybox) = lab_busybox_arm64() else {
        return;
    };

    // The fixture release with a bootable arm64 kernel and base initramfs (amd64 stays
    // synthetic: a machine served amd64 assets would not boot).
    let appliance = Appliance::new(
        FixtureOptions {
            arm64: bootable(kernel, init_on("/dev/ttyAMA0"), busybox),
            ..FixtureOptions::default()
        },
        &["customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/gvisor]\n"],
    );
    let id = &appliance.ids[0];
    let config = appliance.config(
        TOKEN,
        &format!(
            "  \"{ARM64_MAC}\":\n    schematic: {id}\n    version: v1.11.6\n    extraKernelArgs: [console=ttyAMA0, bf.vm=arm64]\n"
        ),
        &plain_http(),
        "  unassigned: ignore\n",
    );

    let mut lab = Lab::new("a");
    lab.start_office_dhcp();
    start_bootfactory(&mut lab, &config);
    let api = |lab: &Lab, path: &str| {
        admin_get(lab, TOKEN, &format!("http://{BOOTFACTORY_IP}:8080{path}"))
    };

    let started = Instant::now();
    let vm = start_vm(&mut lab, "arm64", Firmware::Arm64Uefi, ARM64_MAC);
    // About 30 s under TCG (docs/boot-lab.md); the bound leaves room for a loaded CI machine
    // running the other scenarios' machines at the same time. A kernel panic (e.g. an `/init`
    // the kernel cannot run) ends the wait at once: the machine would sit there.
    let finished = lab.wait_for(Duration::from_secs(300), |lab| {
        let out = serial(lab, "arm64");
        out.contains(DONE) || out.contains("Kernel panic") || !lab.running(&vm)
    });
    let elapsed = started.elapsed();
    let report = |lab: &Lab| {
        format!(
            "--- arm64 serial ---\n{}\n--- qemu ---\n{}\n--- bootfactory ---\n{}\n--- office ---\n{}",
            tail(&serial(lab, "arm64")),
            tail(&lab.log(&vm)),
            tail(&lab.log("bootfactory.log")),
            tail(&lab.log("office-dnsmasq.log")),
        )
    };
    let out = serial(&lab, "arm64");
    assert!(
        finished && out.contains(MARKER) && out.contains(DONE),
        "the arm64 machine did not boot to /init ({elapsed:.1?})\n{}",
        report(&lab)
    );
    eprintln!("arm64 machine: PXE start to /init done in {elapsed:.1?}");

    // The firmware asked as arm64 UEFI and was given the arm64 iPXE, over TFTP.
    let log = lab.log("bootfactory.log");
    assert!(
        log.lines().any(|l| l.contains("proxy-DHCP")
            && l.contains("arch=11")
            && l.contains("ipxe-arm64.efi")),
        "no proxy-DHCP answer with ipxe-arm64.efi for arch 11\n{}",
        report(&lab)
    );
    assert!(
        log.lines()
            .any(|l| l.contains("TFTP transfer complete") && l.contains("ipxe-arm64.efi")),
        "ipxe-arm64.efi was not sent over TFTP\n{}",
        report(&lab)
    );

    // /init ran (an arm64 busybox: nothing else runs it) with the assignment's command line
    // and the schematic's extensions.
    let cmdline = line_after(&out, "CMDLINE: ");
    assert!(
        cmdline.contains("talos.platform=metal")
            && cmdline.contains("console=ttyAMA0")
            && cmdline.contains("bf.vm=arm64"),
        "{cmdline}"
    );
    let exts = lines_after(&out, "EXTENSION: ");
    assert!(exts.iter().any(|l| l.contains("gvisor")), "{exts:?}");
    assert!(exts.iter().any(|l| l.contains("schematic")), "{exts:?}");

    // The inventory took the architecture from the firmware, and the boot script chained the
    // arm64 profile.
    let machines = api(&lab, "/api/v1/machines");
    let list: serde_json::Value = serde_json::from_str(&machines).unwrap_or_default();
    let m = list["machines"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mac"] == ARM64_MAC)
        .cloned()
        .unwrap_or_default();
    assert_eq!(m["seen"]["clientArch"], 11, "{machines}");
    assert_eq!(m["seen"]["arch"], "arm64", "{machines}");
    assert!(
        m["seen"]["lastServed"]
            .as_str()
            .unwrap_or("")
            .contains("metal-arm64"),
        "{machines}"
    );
    assert!(m["assignment"].get("arch").is_none(), "{machines}");
}
