//! Full DHCP (`pxe.dhcpMode: full`) in a lab with no other DHCP server: bootfactory hands out
//! the addresses itself and folds the boot information into its OFFER/ACK. Cases, in one lab
//! (TCG machines are slow, so they run at once):
//! - a UEFI (OVMF) machine gets an address from the pool and boots its assigned schematic;
//! - a BIOS (SeaBIOS + iPXE NIC ROM) machine with a static reservation (`ip`, `hostname` in the
//!   seed assignments file) gets exactly that address — its `/boot` request comes from it —
//!   and boots its schematic;
//! - `/api/v1/leases` lists both as bound: the UEFI one inside the range, the BIOS one static.
//!
//! Address probing is on (`probe: true`, the default), so every pool address is ICMP-probed
//! before it is offered, as in production.

use std::net::Ipv4Addr;
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

const TOKEN: &str = "e2e-full-admin-token";
const UEFI_MAC: &str = "52:54:00:e2:f0:01";
const BIOS_MAC: &str = "52:54:00:e2:f0:02";
/// The BIOS machine's reservation: outside the pool, as reservations usually are.
const BIOS_IP: &str = "192.0.2.77";
const BIOS_HOSTNAME: &str = "bios-node";
/// The dynamic pool (inclusive).
const POOL: (Ipv4Addr, Ipv4Addr) = (Ipv4Addr::new(192, 0, 2, 150), Ipv4Addr::new(192, 0, 2, 199));

#[test]
fn full_dhcp_gives_addresses_and_boots_machines() {
    if !crate::lab_ready(&["qemu-system-x86_64", "curl"]) {
        return;
    }
    let Some(kernel) = lab_kernel() else { return };
    assert!(
        ovmf_code().is_some(),
        "OVMF is required (apt-get install ovmf)"
    );

    // Two schematics, one per machine, told apart by their extensions.
    let appliance = Appliance::new(
        FixtureOptions {
            amd64: bootable(kernel, INIT.into(), PathBuf::from(BUSYBOX)),
            ..FixtureOptions::default()
        },
        &[
            "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/gvisor]\n",
            "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/i915-ucode]\n",
        ],
    );
    let (id_a, id_b) = (&appliance.ids[0], &appliance.ids[1]);
    let config = appliance.config(
        TOKEN,
        &format!(
            "  \"{UEFI_MAC}\":\n    schematic: {id_a}\n    version: v1.11.6\n    extraKernelArgs: [console=ttyS0, bf.vm=uefi]\n  \"{BIOS_MAC}\":\n    schematic: {id_b}\n    version: v1.11.6\n    extraKernelArgs: [console=ttyS0, bf.vm=bios]\n    ip: {BIOS_IP}\n    hostname: {BIOS_HOSTNAME}\n"
        ),
        &plain_http(),
        &format!(
            "  dhcpMode: full\n  dhcp:\n    range: {}-{}\n    netmask: 255.255.255.0\n    leaseSeconds: 3600\n    offerSeconds: 30\n    probe: true\n",
            POOL.0, POOL.1
        ),
    );

    // No office DHCP server: bootfactory is the only one on this LAN (full mode refuses to
    // start next to another).
    let mut lab = Lab::new("f");
    start_bootfactory(&mut lab, &config);
    let api = |lab: &Lab, path: &str| {
        admin_get(lab, TOKEN, &format!("http://{BOOTFACTORY_IP}:8080{path}"))
    };

    let uefi = start_vm(&mut lab, "uefi", Firmware::Uefi, UEFI_MAC);
    let bios = start_vm(&mut lab, "bios", Firmware::Bios, BIOS_MAC);

    let done = |lab: &Lab, name: &str| serial(lab, name).contains(crate::DONE);
    let finished = lab.wait_for(Duration::from_secs(420), |lab| {
        let uefi_over = done(lab, "uefi") || !lab.running(&uefi);
        let bios_over = done(lab, "bios") || !lab.running(&bios);
        uefi_over && bios_over
    });
    let report = |lab: &Lab| {
        format!(
            "--- uefi serial ---\n{}\n--- bios serial ---\n{}\n--- bootfactory ---\n{}\n--- leases ---\n{}",
            tail(&serial(lab, "uefi")),
            tail(&serial(lab, "bios")),
            tail(&lab.log("bootfactory.log")),
            api(lab, "/api/v1/leases"),
        )
    };
    assert!(
        finished,
        "machines did not finish booting in time\n{}",
        report(&lab)
    );

    // UEFI machine: schematic A with its kernel arguments.
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

    // The machines' HTTP requests came from their leased addresses: the inventory's IP is the
    // peer of the last `/boot` request (the last thing recorded: `lastServed` is a boot script).
    let machines = api(&lab, "/api/v1/machines");
    let list: serde_json::Value = serde_json::from_str(&machines).unwrap_or_default();
    let boot_ip = |mac: &str| -> String {
        let m = list["machines"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["mac"] == mac)
            .unwrap_or_else(|| panic!("{mac} not in the inventory: {machines}"));
        assert!(
            m["seen"]["lastServed"]
                .as_str()
                .is_some_and(|s| s.starts_with("boot script")),
            "{m}"
        );
        m["seen"]["ip"].as_str().unwrap_or_default().to_string()
    };

    // The leases: the BIOS machine's is its reservation with its hostname; the UEFI machine
    // booted from a bound lease of the pool.
    let leases_text = api(&lab, "/api/v1/leases");
    let leases: serde_json::Value = serde_json::from_str(&leases_text)
        .unwrap_or_else(|e| panic!("/api/v1/leases: {e}: {leases_text:?}\n{}", report(&lab)));
    let leases_of = |mac: &str| -> Vec<serde_json::Value> {
        leases["leases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["mac"] == mac)
            .cloned()
            .collect()
    };
    let bios_leases = leases_of(BIOS_MAC);
    assert_eq!(bios_leases.len(), 1, "{leases_text}");
    let bios_lease = &bios_leases[0];
    assert_eq!(bios_lease["state"], "bound", "{bios_lease}");
    assert_eq!(bios_lease["static"], true, "{bios_lease}");
    assert_eq!(bios_lease["ip"], BIOS_IP, "{bios_lease}");
    assert_eq!(bios_lease["hostname"], BIOS_HOSTNAME, "{bios_lease}");
    assert_eq!(boot_ip(BIOS_MAC), BIOS_IP, "{machines}");

    let uefi_ip = boot_ip(UEFI_MAC);
    let uefi_leases = leases_of(UEFI_MAC);
    let uefi_lease = uefi_leases
        .iter()
        .find(|l| l["ip"] == uefi_ip.as_str())
        .unwrap_or_else(|| panic!("no lease for {UEFI_MAC} at {uefi_ip}, the address its /boot request came from: {leases_text}\n{machines}"));
    assert_eq!(uefi_lease["state"], "bound", "{uefi_lease}");
    assert_eq!(uefi_lease["static"], false, "{uefi_lease}");
    assert!(
        uefi_lease["expires"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{uefi_lease}"
    );
    let ip: Ipv4Addr = uefi_ip.parse().expect("an IPv4 address");
    assert!(
        (POOL.0..=POOL.1).contains(&ip),
        "{ip} is outside the pool {}-{}",
        POOL.0,
        POOL.1
    );
    // One machine, one address: the UEFI firmware's PXE client (no option 61) and the iPXE it
    // loads (option 61 = 01 + MAC) are the same machine on the same NIC.
    assert_eq!(
        uefi_leases.len(),
        1,
        "the UEFI machine holds {} addresses (firmware and iPXE leased separately): {leases_text}",
        uefi_leases.len()
    );
    assert_eq!(
        leases["leases"].as_array().map(Vec::len),
        Some(2),
        "{leases_text}"
    );
}
