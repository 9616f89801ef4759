//! A throw-away boot lab in network namespaces (`docs/boot-lab.md`): a bridge namespace (the LAN)
//! with an "office" DHCP server (dnsmasq, no PXE), a bootfactory namespace, and tap devices for
//! QEMU machines. Addresses come from 192.0.2.0/24 and never leave the namespaces. Dropping the
//! [`Lab`] kills every process it started (by PID) and deletes the namespaces.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The office DHCP server's address.
pub const OFFICE_IP: &str = "192.0.2.1";
/// bootfactory's address.
pub const BOOTFACTORY_IP: &str = "192.0.2.10";

pub use super::guard::run;
use super::guard::{add_bridge, join_bridge};

/// True when this process may create network namespaces (root with `ip`).
pub fn can_make_namespaces() -> bool {
    nix::unistd::Uid::effective().is_root()
        && Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// The lab: namespaces, links and the processes started in them.
pub struct Lab {
    /// Name prefix of the namespaces (unique per test process).
    pub prefix: String,
    /// Scratch directory (logs, leases, disks).
    pub dir: tempfile::TempDir,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    taps: usize,
}

impl Lab {
    /// Creates `<p>-lan` (bridge `br0`), `<p>-office` (192.0.2.1 on `o0`) and `<p>-bf`
    /// (192.0.2.10 on `b0`).
    pub fn new(tag: &str) -> Lab {
        let prefix = format!("bf{tag}{}", std::process::id() % 100_000);
        let mut lab = Lab {
            prefix,
            dir: tempfile::tempdir().unwrap(),
            namespaces: Vec::new(),
            children: Vec::new(),
            taps: 0,
        };
        let lan = lab.ns("lan");
        lab.add_ns(&lan);
        add_bridge(&lan);
        for (name, dev, ip) in [("office", "o0", OFFICE_IP), ("bf", "b0", BOOTFACTORY_IP)] {
            let ns = lab.ns(name);
            lab.add_ns(&ns);
            join_bridge(&lan, &ns, dev, &format!("{ip}/24"));
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// The full name of namespace `name` (`lan`, `office`, `bf`).
    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn add_ns(&mut self, ns: &str) {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", ns]);
        self.namespaces.push(ns.to_string());
    }

    /// Adds namespace `<p>-<name>` joined to the LAN bridge by `dev` with MAC `mac` and no
    /// address (a DHCP client's host); returns the namespace's full name.
    pub fn add_host(&mut self, name: &str, dev: &str, mac: &str) -> String {
        let (lan, ns) = (self.ns("lan"), self.ns(name));
        self.add_ns(&ns);
        let peer = format!("{dev}{name}");
        let peer = &peer[..peer.len().min(15)];
        run(&[
            "ip", "-n", &lan, "link", "add", peer, "type", "veth", "peer", "name", dev, "netns",
            &ns,
        ]);
        run(&["ip", "-n", &lan, "link", "set", peer, "master", "br0", "up"]);
        run(&["ip", "-n", &ns, "link", "set", dev, "address", mac]);
        run(&["ip", "-n", &ns, "link", "set", dev, "up"]);
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// Adds a tap device on the LAN bridge for a VM; returns its name.
    pub fn add_tap(&mut self) -> String {
        let lan = self.ns("lan");
        let tap = format!("tap{}", self.taps);
        self.taps += 1;
        run(&[
            "ip", "-n", &lan, "tuntap", "add", "dev", &tap, "mode", "tap",
        ]);
        run(&["ip", "-n", &lan, "link", "set", &tap, "master", "br0", "up"]);
        tap
    }

    /// Starts `cmd` inside namespace `name`, stdout and stderr to `<dir>/<log>`.
    pub fn spawn(&mut self, name: &str, log: &str, cmd: &[&str]) -> u32 {
        let ns = self.ns(name);
        let log_path = self.dir.path().join(log);
        let file = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let pid = child.id();
        self.children.push((log.to_string(), child));
        pid
    }

    /// Runs `cmd` inside namespace `name` and returns its output (success or not).
    pub fn exec(&self, name: &str, cmd: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(name)])
            .args(cmd)
            .output()
            .unwrap()
    }

    /// The office DHCP server: addresses 192.0.2.100–199, no PXE options at all.
    pub fn start_office_dhcp(&mut self) {
        let leases = self.dir.path().join("office.leases");
        let pid_file = self.dir.path().join("office.pid");
        self.spawn(
            "office",
            "office-dnsmasq.log",
            &[
                "dnsmasq",
                "--keep-in-foreground",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--user=root",
                "--interface=o0",
                "--bind-interfaces",
                "--dhcp-authoritative",
                "--dhcp-range=192.0.2.100,192.0.2.199,255.255.255.0,1h",
                &format!("--dhcp-leasefile={}", leases.display()),
                &format!("--pid-file={}", pid_file.display()),
                "--log-dhcp",
            ],
        );
    }

    /// The office server's lease file (one line per leased MAC).
    pub fn office_leases(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("office.leases")).unwrap_or_default()
    }

    /// The text of a log written by [`Lab::spawn`].
    pub fn log(&self, log: &str) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.path().join(log)).unwrap_or_default())
            .to_string()
    }

    /// Whether the process started with log name `log` is still running.
    pub fn running(&mut self, log: &str) -> bool {
        self.children
            .iter_mut()
            .find(|(l, _)| l == log)
            .is_some_and(|(_, c)| c.try_wait().ok().flatten().is_none())
    }

    /// Kills the process started with log name `log`.
    pub fn kill(&mut self, log: &str) {
        for (l, c) in &mut self.children {
            if l == log {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Waits until `done(lab)` or the timeout; returns whether it happened.
    pub fn wait_for(&mut self, timeout: Duration, mut done: impl FnMut(&mut Lab) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if done(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        done(self)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// How a QEMU machine starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// OVMF (Debian bookworm's build), firmware PXE over virtio-net (client arch 7).
    Uefi,
    /// SeaBIOS with QEMU's iPXE NIC ROM (user class `iPXE`, client arch 0).
    Bios,
    /// An arm64 machine: `qemu-system-aarch64 -machine virt -cpu cortex-a57` with AAVMF
    /// (Debian bookworm's `qemu-efi-aarch64`), firmware PXE over virtio-net (client arch 11).
    /// Its serial console is the PL011 UART, `ttyAMA0` in Linux.
    Arm64Uefi,
}

/// AAVMF, the arm64 UEFI firmware (`qemu-efi-aarch64`): the code image and the variable-store
/// template, both 64 MiB pflash images.
pub const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
/// See [`AAVMF_CODE`].
pub const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";

/// The OVMF code image, if installed.
pub fn ovmf_code() -> Option<PathBuf> {
    [
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Starts a QEMU machine (TCG) with `mac` on a new tap; its serial console goes to
/// `<dir>/<name>.serial`. Returns the log name to pass to [`Lab::running`] / [`Lab::kill`].
pub fn start_vm(lab: &mut Lab, name: &str, firmware: Firmware, mac: &str) -> String {
    let tap = lab.add_tap();
    let serial = lab.dir.path().join(format!("{name}.serial"));
    let qemu = match firmware {
        Firmware::Arm64Uefi => "qemu-system-aarch64",
        Firmware::Uefi | Firmware::Bios => "qemu-system-x86_64",
    };
    let mut args: Vec<String> = [
        qemu,
        "-accel",
        "tcg",
        "-m",
        "768",
        "-smp",
        "1",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-serial",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("file:{}", serial.display()));
    args.extend([
        "-netdev".into(),
        format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
    ]);
    match firmware {
        Firmware::Uefi => {
            let code = ovmf_code().expect("OVMF");
            let vars = lab.dir.path().join(format!("{name}-vars.fd"));
            let template = Path::new("/usr/share/OVMF/OVMF_VARS.fd");
            std::fs::copy(template, &vars).expect("OVMF_VARS.fd");
            args.extend([
                "-machine".into(),
                "q35".into(),
                "-drive".into(),
                format!("if=pflash,format=raw,readonly=on,file={}", code.display()),
                "-drive".into(),
                format!("if=pflash,format=raw,file={}", vars.display()),
                "-device".into(),
                format!("virtio-net-pci,netdev=n0,mac={mac},romfile=,bootindex=1"),
            ]);
        }
        Firmware::Bios => {
            args.extend([
                "-machine".into(),
                "pc".into(),
                "-boot".into(),
                "n".into(),
                "-device".into(),
                format!("virtio-net-pci,netdev=n0,mac={mac}"),
            ]);
        }
        Firmware::Arm64Uefi => {
            let vars = lab.dir.path().join(format!("{name}-vars.fd"));
            std::fs::copy(AAVMF_VARS, &vars).expect("AAVMF_VARS.fd");
            args.extend([
                "-machine".into(),
                "virt".into(),
                "-cpu".into(),
                "cortex-a57".into(),
                "-drive".into(),
                format!("if=pflash,format=raw,readonly=on,file={AAVMF_CODE}"),
                "-drive".into(),
                format!("if=pflash,format=raw,file={}", vars.display()),
                // No option ROM: QEMU's are x86 iPXE builds; AAVMF's own virtio-net driver
                // and PXE do the network boot.
                "-device".into(),
                format!("virtio-net-pci,netdev=n0,mac={mac},romfile=,bootindex=1"),
            ]);
        }
    }
    let log = format!("{name}.qemu.log");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.spawn("lan", &log, &argv);
    log
}

/// The serial console output of VM `name` so far.
pub fn serial(lab: &Lab, name: &str) -> String {
    lab.log(&format!("{name}.serial"))
}

/// Debian's systemd-stub (`systemd-boot-efi`), the UKI base of the bootable fixture.
pub const SD_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// Debian's systemd-boot (`systemd-boot-efi`).
pub const SD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// A static busybox (`busybox-static`), the fixture's `/init` userland.
pub const BUSYBOX: &str = "/bin/busybox";

/// A required file: missing, the test is skipped with a message (or fails when
/// `BOOTFACTORY_REQUIRE_TOOLS=1`, as in CI).
pub fn present(path: &Path, what: &str) -> bool {
    if path.exists() {
        return true;
    }
    assert!(
        std::env::var("BOOTFACTORY_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "{} ({what}) is required (tests/run-all.sh installs it)",
        path.display()
    );
    eprintln!("skipping: {} ({what}) is missing", path.display());
    false
}

/// The real Debian kernel the lab boots (`BOOTFACTORY_LAB_KERNEL`, else the one
/// `tests/run-all.sh` extracts to `~/.cache/bootfactory/lab/vmlinuz`), if present.
pub fn lab_kernel() -> Option<PathBuf> {
    let path = std::env::var_os("BOOTFACTORY_LAB_KERNEL")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/bootfactory/lab/vmlinuz"))
        })?;
    present(&path, "a Debian kernel").then_some(path)
}

/// The arm64 Debian kernel (an EFI-stub `Image`) the lab boots (`BOOTFACTORY_LAB_KERNEL_ARM64`,
/// else the one `tests/run-all.sh` extracts to `~/.cache/bootfactory/lab/vmlinuz-arm64`), if
/// present.
pub fn lab_kernel_arm64() -> Option<PathBuf> {
    lab_file(
        "BOOTFACTORY_LAB_KERNEL_ARM64",
        "vmlinuz-arm64",
        "an arm64 Debian kernel",
    )
}

/// The static arm64 busybox of arm64 machines' `/init` (`BOOTFACTORY_LAB_BUSYBOX_ARM64`, else
/// the one `tests/run-all.sh` extracts to `~/.cache/bootfactory/lab/busybox-arm64`), if present.
pub fn lab_busybox_arm64() -> Option<PathBuf> {
    lab_file(
        "BOOTFACTORY_LAB_BUSYBOX_ARM64",
        "busybox-arm64",
        "an arm64 static busybox",
    )
}

/// `$env`, else `~/.cache/bootfactory/lab/<name>`, if [`present`].
fn lab_file(env: &str, name: &str, what: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env).map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/bootfactory/lab").join(name))
    })?;
    present(&path, what).then_some(path)
}

/// A QEMU child, killed (by its PID) when dropped.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots a UEFI QEMU machine (TCG, q35, OVMF, no network) from one drive, `drive` being
/// QEMU's `-drive` value for it (a disk: `file=…,format=raw,if=virtio`; a CD:
/// `file=…,format=raw,media=cdrom`), and waits up to 5 minutes for `done` on the serial
/// console (or the machine to stop). Files go to `<work>/<name>.*`. Returns the console output
/// (lossy: firmware menus draw with bytes that are not UTF-8), plus QEMU's log if it exited
/// early.
pub fn boot_ovmf(drive: &str, work: &Path, name: &str, done: &str) -> String {
    boot_ovmf_args(&["-drive".to_string(), drive.to_string()], work, name, done)
}

/// [`boot_ovmf`] with the disk given as QEMU arguments (e.g. `-drive …,if=none` and a
/// `-device` with its own block sizes).
pub fn boot_ovmf_args(disk: &[String], work: &Path, name: &str, done: &str) -> String {
    let code = ovmf_code().expect("OVMF");
    let vars = work.join(format!("{name}-vars.fd"));
    std::fs::copy("/usr/share/OVMF/OVMF_VARS.fd", &vars).expect("OVMF_VARS.fd");
    let firmware = vec![
        "-machine".to_string(),
        "q35".to_string(),
        "-drive".to_string(),
        format!("if=pflash,format=raw,readonly=on,file={}", code.display()),
        "-drive".to_string(),
        format!("if=pflash,format=raw,file={}", vars.display()),
    ];
    boot_drive(&firmware, disk, work, name, done)
}

/// [`boot_ovmf`] with SeaBIOS (QEMU's default BIOS, machine `pc`): BIOS boot of a disk or CD.
pub fn boot_seabios(drive: &str, work: &Path, name: &str, done: &str) -> String {
    let firmware = vec!["-machine".to_string(), "pc".to_string()];
    let disk = ["-drive".to_string(), drive.to_string()];
    boot_drive(&firmware, &disk, work, name, done)
}

fn boot_drive(firmware: &[String], disk: &[String], work: &Path, name: &str, done: &str) -> String {
    let serial = work.join(format!("{name}.serial"));
    let qemu_log = work.join(format!("{name}.qemu.log"));
    let log = std::fs::File::create(&qemu_log).unwrap();
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "768", "-smp", "1"])
        .args(firmware)
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args(disk)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("qemu-system-x86_64");
    let mut vm = Vm(child);
    let console =
        || String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = console();
        if out.contains(done) || Instant::now() > deadline {
            return out;
        }
        if let Ok(Some(status)) = vm.0.try_wait() {
            std::thread::sleep(Duration::from_millis(200));
            return format!(
                "{}\n[qemu exited: {status}] {}",
                console(),
                std::fs::read_to_string(&qemu_log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
