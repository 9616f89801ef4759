//! Cold dual-boot disk images (`metal-amd64.raw.zst`) and hybrid ISOs (`metal-amd64.iso`):
//! the real `bootfactory serve` against the tool pipeline upstream's imager shells out to, on
//! the same inputs, in the same run.
//!
//! `cargo bench --bench disk_image` writes the Realistic fixture for Talos v1.11.6 with Debian's
//! real `linuxx64.efi.stub` and `systemd-bootx64.efi` as the amd64 imager's stub and boot
//! loader, imports it offline into a template data directory (`bootfactory mirror import`) and
//! stores `schematics/example.yaml` (seven extensions, extra kernel args, a META value). Each
//! bootfactory figure comes from the release binary (`bootfactory serve --offline`) started on a
//! fresh copy of that directory and asked over HTTP; wall time is the client's (request sent →
//! last byte read), peak RSS the server's `VmHWM` (reset through `/proc/<pid>/clear_refs` before
//! each request); the peak of the server's child processes (`mkfs.xfs`, `grub-mkimage`) is
//! sampled from `/proc` every 10 ms and printed beside it.
//!
//! bootfactory, per run:
//!
//! 1. **cold** `.raw.zst` and **cold** `.iso`, each on a fresh data directory: the initramfs,
//!    the image's UKI and the image all built in the request (upstream's imager builds them too);
//! 2. **prerequisites built**: on a fresh data directory, `HEAD initramfs-amd64.xz` and
//!    `kernel-amd64` first (untimed), then `HEAD metal-amd64.raw` (the disk's UKI and the raw
//!    image, nothing transferred) and `GET metal-amd64.raw.zst` (compression of the cached raw
//!    image) timed; their sum is the `.raw.zst` with its inputs ready; then `GET
//!    metal-amd64.iso` (its UKI and the ISO).
//!
//! The **peer** works from the bytes bootfactory served, prepared outside the timed region:
//! `kernel-amd64`, `initramfs-amd64.xz`, the disk's UKI, systemd-boot and META cut out of
//! bootfactory's raw image (`dd` + `mcopy -i`), the ISO's UKI and `grub.cfg` out of its ISO. Disk
//! (`docs/formats.md` §Disk images, upstream's imager + `grub-install`):
//! `truncate -s 4247M` + `sgdisk` (the 1.11 dual-boot layout), `grub-mkimage -O i386-pc`,
//! `mkfs.vfat -F 32 -n EFI` on a file of the EFI partition's size + `mcopy` + `dd
//! conv=notrunc,sparse`, `mkfs.xfs -p <protofile>` on a file of BOOT's size + `dd`, `dd` of
//! boot.img's code and core.img (`grub-bios-setup` cannot work on an image file: it guesses the
//! root device from the directory holding core.img, which needs the image mounted through a loop
//! device), `dd` of META, then `zstd -T0 -18` (upstream's post-processing; `zstd -T0 -3` is
//! reported too). ISO (§ISO, upstream's hybrid ISO): `mkfs.vfat -F 32 -n EFI` + `mcopy` of
//! `efiboot.img`, then `grub-mkrescue --compress=xz … -append_partition 2 0xef efiboot.img
//! -appended_part_as_gpt …`. Each step runs under `/usr/bin/time -f '%e %M'`; a pipeline's
//! wall time is the sum of its steps, its RSS the maximum.
//!
//! Figures are printed, never asserted; the run fails only when an output is wrong: both raw
//! images (decompressed) must have the same GPT layout (`sfdisk --json`: partitions' starts,
//! sizes, types, names, attributes; the disk's last LBA) and both ISOs the same files under
//! `boot/` (`isoinfo -R -f`; grub-mkrescue's `fonts/`, `locale/`, `roms/` and the non-module
//! files of `i386-pc/` are listed, not compared), with the same `vmlinuz`,
//! `initramfs.xz` and `grub.cfg`. `BENCH_RUNS` (default 3) sets the repetitions; medians are
//! reported. Needs `xfsprogs grub-pc-bin grub-common xorriso mtools dosfstools gdisk fdisk zstd
//! genisoimage systemd-boot-efi time` (Debian packages). `BENCH_PERF=<file>` records the server
//! with `perf record -g` during run 1's prerequisites-built `HEAD metal-amd64.raw`.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bootfactory::fixture::{BootOptions, FileSource, FixtureOptions, SizeProfile, write_release};
use bootfactory::formats::pe::PeImage;
use support::guard::{self, Proc, Scratch};
use support::stats::{env_number, median};

const VERSION: &str = "v1.11.6";
const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const SD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const GRUB_PC: &str = "/usr/lib/grub/i386-pc";
const MIB: u64 = 1 << 20;
/// The 1.11 metal dual-boot layout, 512-byte sectors, inclusive (`docs/formats.md` §Sizes and
/// partitions): name, first LBA, last LBA, sgdisk type code.
const LAYOUT: [(&str, u64, u64, &str); 4] = [
    ("EFI", 2048, 4304895, "EF00"),
    ("BIOS", 4304896, 4306943, "EF02"),
    ("BOOT", 4306944, 8402943, "8300"),
    ("META", 8402944, 8404991, "8300"),
];
const DISK_MIB: u64 = 4247;
/// `loader/loader.conf` of the hybrid ISO's EFI partition (upstream's, `secure-boot-enroll off`).
const ISO_LOADER_CONF: &str =
    "# systemd-boot configuration\n\ntimeout 10\n\nsecure-boot-enroll off\n";
const DISK_LOADER_CONF: &str = "# systemd-boot configuration\n\ntimeout 10\n";

/// One measurement: wall seconds and peak RSS in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Measure {
    wall: f64,
    rss_kib: u64,
}

impl Measure {
    fn then(self, other: Measure) -> Measure {
        Measure {
            wall: self.wall + other.wall,
            rss_kib: self.rss_kib.max(other.rss_kib),
        }
    }
}

/// Runs `bash -c script` under GNU time in `dir`; panics with the script when it fails.
fn timed(script: &str, dir: &Path) -> Measure {
    let times = dir.join(".time");
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%e %M")
        .arg("-o")
        .arg(&times)
        .arg("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(dir)
        .env("MTOOLS_SKIP_CHECK", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .expect("run /usr/bin/time (apt-get install -y time)");
    assert!(out.success(), "failed: {script}");
    let t = fs::read_to_string(&times).unwrap();
    let line = t.lines().last().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let wall = parts
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(f64::NAN);
    let rss_kib = parts.next().and_then(|r| r.parse().ok()).unwrap_or(0);
    let _ = fs::remove_file(&times);
    Measure { wall, rss_kib }
}

/// Runs `bash -c script` in `dir` (untimed); returns its standard output.
fn sh(script: &str, dir: &Path) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(dir)
        .env("MTOOLS_SKIP_CHECK", "1")
        .stderr(Stdio::inherit())
        .output()
        .expect("run bash");
    assert!(out.status.success(), "failed: {script}");
    String::from_utf8(out.stdout).unwrap()
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// The `bootfactory` binary of this build, without `BOOTFACTORY_*` from the environment.
fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bootfactory"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BOOTFACTORY_") {
            c.env_remove(k);
        }
    }
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `bootfactory serve --offline` on a data directory, stopped (SIGTERM) when dropped.
struct Server {
    proc: Proc,
    url: String,
    log: PathBuf,
    /// How much of the log [`Server::print_builds`] has read.
    seen: std::cell::Cell<usize>,
}

impl Server {
    fn start(data: &Path, log: &Path) -> Server {
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut cmd = bin();
            cmd.args(["serve", "--offline", "--log-level", "info", "--data-dir"])
                .arg(data)
                .arg("--http-listen")
                .arg(addr.to_string());
            let mut proc = Proc::spawn("bootfactory serve", &mut cmd, log);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if proc.exited().is_some() {
                    break;
                }
                if std::net::TcpStream::connect(addr).is_ok() {
                    return Server {
                        proc,
                        url: format!("http://{addr}"),
                        log: log.to_path_buf(),
                        seen: std::cell::Cell::new(0),
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!(
                "bootfactory serve did not start on {addr}; retrying:\n{}",
                proc.log_tail(10)
            );
        }
        panic!("bootfactory serve did not start");
    }

    fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// Prints the builds logged since the last call (`asset built` lines): the asset key's
    /// kind, its tail, the builder's time and the size.
    fn print_builds(&self) {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let new = &log[self.seen.get().min(log.len())..];
        self.seen.set(log.len());
        for l in new.lines().filter(|l| l.contains("asset built")) {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_string()
            };
            // `<format>/<Kind>/<version>/<platform>/<arch>/<sb>/<schematic>[/<ext>/<size>][/uki]`
            let key = field("asset=");
            let parts: Vec<&str> = key.split('/').collect();
            let mut short = parts.get(1).unwrap_or(&"?").to_string();
            if parts.len() > 7 {
                short = format!("{short} {}", parts[7..].join("/"));
            }
            let ms: u64 = field("build_ms=").parse().unwrap_or(0);
            let size: u64 = field("size=").parse().unwrap_or(0);
            println!(
                "      built {short}: {:.2} s, {:.1} MB",
                ms as f64 / 1e3,
                size as f64 / 1e6
            );
        }
    }
}

/// `VmHWM` of `pid` in KiB (0 when it is gone).
fn hwm(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The children of `pid` (all its threads').
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Samples the largest `VmHWM` of `pid`'s children (and theirs) every 10 ms until dropped.
struct ChildPeak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ChildPeak {
    fn start(pid: u32) -> ChildPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let mut todo = children(pid);
                while let Some(c) = todo.pop() {
                    p.fetch_max(hwm(c), Ordering::Relaxed);
                    todo.extend(children(c));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        ChildPeak {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// The HTTP client side, on a small tokio runtime of its own.
struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Client {
    fn new() -> Client {
        bootfactory::init_crypto();
        Client {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(1800))
                .build()
                .unwrap(),
        }
    }

    /// GETs (or HEADs) `url` and streams the body into `out` (or discards it); returns the
    /// byte count.
    fn request(&self, head: bool, url: &str, out: Option<&Path>) -> u64 {
        self.rt.block_on(async {
            use futures_util::StreamExt as _;
            use std::io::Write as _;
            let req = if head {
                self.http.head(url)
            } else {
                self.http.get(url)
            };
            let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
            let status = resp.status();
            if !status.is_success() {
                let body = resp.text().await.unwrap_or_default();
                panic!("{url}: {status}: {body}");
            }
            let mut file = out.map(|p| std::io::BufWriter::new(fs::File::create(p).unwrap()));
            let mut n = 0u64;
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.unwrap_or_else(|e| panic!("{url}: {e}"));
                n += chunk.len() as u64;
                if let Some(f) = file.as_mut() {
                    f.write_all(&chunk).unwrap();
                }
            }
            if let Some(mut f) = file {
                f.flush().unwrap();
            }
            n
        })
    }

    fn get(&self, url: &str, out: Option<&Path>) -> u64 {
        self.request(false, url, out)
    }

    fn post(&self, url: &str, body: &str) -> serde_json::Value {
        self.rt.block_on(async {
            let resp = self
                .http
                .post(url)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "POST {url}: {}", resp.status());
            resp.json().await.unwrap()
        })
    }

    /// One measured request: the client's wall time, the server's peak RSS during it, the
    /// children's sampled peak (KiB) and the byte count.
    fn measure(
        &self,
        server: &Server,
        head: bool,
        url: &str,
        out: Option<&Path>,
    ) -> (Measure, u64, u64) {
        assert!(
            fs::write(format!("/proc/{}/clear_refs", server.pid()), "5").is_ok(),
            "cannot reset the server's VmHWM"
        );
        let kids = ChildPeak::start(server.pid());
        let start = Instant::now();
        let bytes = self.request(head, url, out);
        let wall = start.elapsed().as_secs_f64();
        let rss_kib = hwm(server.pid());
        (Measure { wall, rss_kib }, kids.finish(), bytes)
    }
}

struct Template {
    data: PathBuf,
    id: String,
}

/// Writes the fixture, imports it offline, stores the schematic; returns the stopped data dir.
fn prepare(root: &Path, client: &Client) -> Template {
    let layout = root.join("layout");
    eprintln!("writing the Realistic fixture for {VERSION} …");
    let t = Instant::now();
    write_release(
        &layout,
        &FixtureOptions {
            versions: vec![VERSION.into()],
            profile: SizeProfile::Realistic,
            amd64: BootOptions {
                systemd_stub: Some(FileSource::Path(STUB.into())),
                systemd_boot: Some(FileSource::Path(SD_BOOT.into())),
                ..BootOptions::default()
            },
            ..FixtureOptions::default()
        },
    )
    .unwrap();
    eprintln!("  {:.1} s; importing …", t.elapsed().as_secs_f64());
    let data = root.join("template");
    let out = bin()
        .args(["mirror", "import", "--offline", "--data-dir"])
        .arg(&data)
        .arg(&layout)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mirror import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = fs::remove_dir_all(&layout);
    let server = Server::start(&data, &root.join("template.log"));
    let yaml = include_str!("../schematics/example.yaml");
    let id = client.post(&format!("{}/schematics", server.url), yaml)["id"]
        .as_str()
        .unwrap()
        .to_string();
    drop(server);
    eprintln!("  ready in {:.1} s", t.elapsed().as_secs_f64());
    Template { data, id }
}

/// A fresh copy of the template with a server on it.
fn fresh(root: &Path, t: &Template, name: &str) -> (Server, PathBuf) {
    let data = root.join(name);
    let _ = fs::remove_dir_all(&data);
    let status = Command::new("cp")
        .arg("-a")
        .arg(&t.data)
        .arg(&data)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a {}", t.data.display());
    let server = Server::start(&data, &root.join(format!("{name}.log")));
    (server, data)
}

fn image_url(server: &Server, id: &str, path: &str) -> String {
    format!("{}/image/{id}/{VERSION}/{path}", server.url)
}

/// The first `.cmdline` section of a UKI (the `main` profile's).
fn uki_cmdline(uki: &Path) -> String {
    let bytes = fs::read(uki).unwrap();
    let pe = PeImage::parse(&bytes)
        .unwrap_or_else(|e| panic!("{} does not parse as PE32+: {e}", uki.display()));
    let s = pe
        .sections()
        .iter()
        .find(|s| s.name() == b".cmdline")
        .expect("a .cmdline section");
    String::from_utf8(pe.section_data(s).to_vec())
        .unwrap()
        .trim_end_matches('\0')
        .trim()
        .to_string()
}

/// The dual-boot disk's `grub/grub.cfg` (Talos `bootloader/grub/encode.go`).
fn disk_grub_cfg(cmdline: &str) -> String {
    let mut quoted = String::new();
    for c in cmdline.chars() {
        if "\\{}&$|;<>\"".contains(c) {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    let entry = |title: &str, extra: &str| {
        format!(
            "menuentry \"{title}\" {{\n  set gfxmode=auto\n  set gfxpayload=text\n  linux /A/vmlinuz {quoted}{extra}\n  initrd /A/initramfs.xz\n}}\n"
        )
    };
    format!(
        "set default=\"A - Talos {VERSION}\"\n\nset timeout=3\n\ninsmod all_video\n\nterminal_input console\nterminal_output console\n\n{}{}",
        entry(&format!("A - Talos {VERSION}"), ""),
        entry(
            "Reset Talos installation and return to maintenance mode",
            " talos.experimental.wipe=system:EPHEMERAL,STATE"
        )
    )
}

/// What the disk peer starts from (prepared outside the timed region).
struct DiskInputs {
    /// `EFI/boot/BOOTX64.efi`, `EFI/Linux/Talos-<v>.efi`, `loader/loader.conf`.
    efi_tree: PathBuf,
    /// The mkfs.xfs protofile (its files: kernel, initramfs, grub.cfg, GRUB's modules, and
    /// `core.img`/`boot.img` in the work directory once grub-mkimage ran).
    proto: PathBuf,
    meta: PathBuf,
}

/// Cuts the peer's inputs out of bootfactory's raw image `raw` into `dir`.
fn disk_inputs(raw: &Path, kernel: &Path, initrd: &Path, dir: &Path, work: &Path) -> DiskInputs {
    fs::create_dir_all(dir).unwrap();
    let efi_tree = dir.join("efi-tree");
    let (efi_start, efi_end) = (LAYOUT[0].1, LAYOUT[0].2);
    let uki = efi_tree.join(format!("EFI/Linux/Talos-{VERSION}.efi"));
    fs::create_dir_all(uki.parent().unwrap()).unwrap();
    fs::create_dir_all(efi_tree.join("EFI/boot")).unwrap();
    fs::create_dir_all(efi_tree.join("loader")).unwrap();
    let meta = dir.join("meta.bin");
    sh(
        &format!(
            "dd if={raw} of=bf-efi.img bs=512 skip={efi_start} count={} conv=sparse status=none\n\
             mcopy -n -i bf-efi.img ::EFI/Linux/Talos-{VERSION}.efi {uki}\n\
             mcopy -n -i bf-efi.img ::EFI/boot/BOOTX64.efi {boot}\n\
             mcopy -n -i bf-efi.img ::loader/loader.conf {loader}\n\
             rm bf-efi.img\n\
             dd if={raw} of={meta} bs=512 skip={} count={} status=none\n",
            efi_end - efi_start + 1,
            LAYOUT[3].1,
            LAYOUT[3].2 - LAYOUT[3].1 + 1,
            raw = q(raw),
            uki = q(&uki),
            boot = q(&efi_tree.join("EFI/boot/BOOTX64.efi")),
            loader = q(&efi_tree.join("loader/loader.conf")),
            meta = q(&meta),
        ),
        dir,
    );
    assert_eq!(
        fs::read_to_string(efi_tree.join("loader/loader.conf")).unwrap(),
        DISK_LOADER_CONF,
        "bootfactory's loader.conf"
    );
    assert_eq!(
        fs::read(efi_tree.join("EFI/boot/BOOTX64.efi")).unwrap(),
        fs::read(SD_BOOT).unwrap(),
        "bootfactory's BOOTX64.efi is the imager's systemd-boot"
    );
    let grub_cfg = dir.join("grub.cfg");
    fs::write(&grub_cfg, disk_grub_cfg(&uki_cmdline(&uki))).unwrap();
    // mkfs.xfs(8) protofile: boot image name, block/inode counts, the root, then entries.
    let mut mods: Vec<String> = fs::read_dir(GRUB_PC)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".mod") || n.ends_with(".lst"))
        .collect();
    mods.push("boot.img".into());
    mods.push("core.img".into());
    mods.sort();
    let file = |name: &str, src: &Path| format!("{name} ---644 0 0 {}\n", src.display());
    let mut proto = String::from("/dev/null\n0 0\nd--755 0 0\n");
    proto.push_str("A d--755 0 0\n");
    proto.push_str(&file("initramfs.xz", initrd));
    proto.push_str(&file("vmlinuz", kernel));
    proto.push_str("$\ngrub d--755 0 0\n");
    proto.push_str(&file("grub.cfg", &grub_cfg));
    proto.push_str("i386-pc d--755 0 0\n");
    for m in &mods {
        let src = match m.as_str() {
            "core.img" | "boot.img" => work.join(m),
            _ => Path::new(GRUB_PC).join(m),
        };
        proto.push_str(&file(m, &src));
    }
    proto.push_str("$\n$\n$\n");
    let proto_path = dir.join("boot.proto");
    fs::write(&proto_path, proto).unwrap();
    DiskInputs {
        efi_tree,
        proto: proto_path,
        meta,
    }
}

/// The disk peer's steps, in `work`: (name, script). `work` holds `disk.raw` at the end.
fn disk_peer_steps(inp: &DiskInputs) -> Vec<(&'static str, String)> {
    let mut sgdisk = format!("truncate -s {DISK_MIB}M disk.raw\nsgdisk -a 1");
    for (i, (name, first, last, code)) in LAYOUT.iter().enumerate() {
        let n = i + 1;
        sgdisk.push_str(&format!(
            " -n {n}:{first}:{last} -t {n}:{code} -c {n}:{name}"
        ));
    }
    sgdisk.push_str(" -A 2:set:2 disk.raw >/dev/null");
    let efi_bytes = (LAYOUT[0].2 - LAYOUT[0].1 + 1) * 512;
    let boot_bytes = (LAYOUT[2].2 - LAYOUT[2].1 + 1) * 512;
    vec![
        ("truncate + sgdisk", sgdisk),
        (
            "grub-mkimage -O i386-pc",
            format!(
                "grub-mkimage -O i386-pc -d {GRUB_PC} -p '(,gpt3)/grub' -o core.img biosdisk part_gpt xfs\n\
                 cp {GRUB_PC}/boot.img boot.img\n"
            ),
        ),
        (
            "EFI: mkfs.vfat + mcopy + dd",
            format!(
                "truncate -s {efi_bytes} efi.img\n\
                 mkfs.vfat -F 32 -n EFI efi.img >/dev/null\n\
                 mcopy -s -p -Q -m -i efi.img {tree}/EFI {tree}/loader ::\n\
                 dd if=efi.img of=disk.raw bs=512 seek={} conv=notrunc,sparse status=none\n\
                 rm efi.img\n",
                LAYOUT[0].1,
                tree = q(&inp.efi_tree),
            ),
        ),
        (
            "BOOT: mkfs.xfs -p + dd",
            format!(
                "truncate -s {boot_bytes} boot.img.xfs\n\
                 mkfs.xfs -q -K -f -L BOOT -n ftype=1 -m bigtime=1,crc=1,finobt=1,inobtcount=1,reflink=1,rmapbt=0 \
                 -i sparse=1,nrext64=0 -p {proto} boot.img.xfs\n\
                 dd if=boot.img.xfs of=disk.raw bs=1M seek={} conv=notrunc,sparse status=none\n\
                 rm boot.img.xfs\n",
                LAYOUT[2].1 * 512 / MIB,
                proto = q(&inp.proto),
            ),
        ),
        (
            "GRUB placement: dd boot.img + core.img",
            format!(
                "dd if=boot.img of=disk.raw bs=440 count=1 conv=notrunc status=none\n\
                 dd if=core.img of=disk.raw bs=512 seek={} conv=notrunc status=none\n",
                LAYOUT[1].1
            ),
        ),
        (
            "META: dd",
            format!(
                "dd if={} of=disk.raw bs=512 seek={} conv=notrunc,sparse status=none\n",
                q(&inp.meta),
                LAYOUT[3].1
            ),
        ),
    ]
}

/// A GPT partition as `sfdisk --json` shows it: start, size, type, name, attributes.
type Partition = (u64, u64, String, String, String);

/// `sfdisk --json` of an image: (last LBA, partitions).
fn gpt_layout(img: &Path) -> (u64, Vec<Partition>) {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success(), "sfdisk --json {}", img.display());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &v["partitiontable"];
    assert_eq!(t["label"], "gpt", "{}: a GPT", img.display());
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let parts = t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                s(&p["type"]),
                s(&p["name"]),
                s(&p["attrs"]),
            )
        })
        .collect();
    (t["lastlba"].as_u64().unwrap(), parts)
}

/// The files of an ISO (Rock Ridge names) under `/boot`, sorted.
fn iso_boot_files(iso: &Path) -> Vec<String> {
    let out = Command::new("isoinfo")
        .args(["-R", "-f", "-i"])
        .arg(iso)
        .output()
        .unwrap();
    assert!(out.status.success(), "isoinfo -f {}", iso.display());
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("/boot/"))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Extracts `path` from an ISO's Rock Ridge tree.
fn iso_extract(iso: &Path, path: &str, out: &Path) {
    let o = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", path])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        o.success(),
        "xorriso -extract {path} from {}",
        iso.display()
    );
}

/// Extras grub-mkrescue adds under `boot/` that bootfactory leaves out on purpose
/// (`docs/formats.md` §ISO "What differs").
/// In `boot/grub/i386-pc/` only the modules and `eltorito.img` are compared: grub-mkrescue
/// also copies `efiemu32.o`, `efiemu64.o` and `modinfo.sh` and leaves out `fdt.lst`, bootfactory
/// copies every `*.mod` and `*.lst`.
fn mkrescue_extra(path: &str) -> bool {
    if let Some(name) = path.strip_prefix("/boot/grub/i386-pc/") {
        return !(name.ends_with(".mod") || name == "eltorito.img");
    }
    ["/boot/grub/fonts", "/boot/grub/locale", "/boot/grub/roms"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// What the ISO peer starts from.
struct IsoInputs {
    /// `boot/vmlinuz`, `boot/initramfs.xz`, `boot/grub/grub.cfg`.
    tree: PathBuf,
    /// `EFI/BOOT/BOOTX64.EFI`, `EFI/Linux/Talos-<v>.efi`, `loader/loader.conf`.
    uefi: PathBuf,
    efiboot_mib: u64,
}

fn iso_inputs(iso: &Path, kernel: &Path, initrd: &Path, dir: &Path) -> IsoInputs {
    let tree = dir.join("iso-tree");
    fs::create_dir_all(tree.join("boot/grub")).unwrap();
    fs::copy(kernel, tree.join("boot/vmlinuz")).unwrap();
    fs::copy(initrd, tree.join("boot/initramfs.xz")).unwrap();
    iso_extract(iso, "/boot/grub/grub.cfg", &tree.join("boot/grub/grub.cfg"));
    // The appended EFI partition: GPT partition 2.
    let (_, parts) = gpt_layout(iso);
    let start = parts.get(1).expect("the hybrid ISO's partition 2").0 * 512;
    let uefi = dir.join("uefi-tree");
    let uki = uefi.join(format!("EFI/Linux/Talos-{VERSION}.efi"));
    let boot = uefi.join("EFI/BOOT/BOOTX64.EFI");
    fs::create_dir_all(uki.parent().unwrap()).unwrap();
    fs::create_dir_all(boot.parent().unwrap()).unwrap();
    fs::create_dir_all(uefi.join("loader")).unwrap();
    fs::write(uefi.join("loader/loader.conf"), ISO_LOADER_CONF).unwrap();
    sh(
        &format!(
            "mcopy -n -i {iso}@@{start} ::EFI/Linux/Talos-{VERSION}.efi {uki}\n\
             mcopy -n -i {iso}@@{start} ::EFI/BOOT/BOOTX64.EFI {boot}\n\
             mcopy -n -i {iso}@@{start} ::loader/loader.conf loader.conf.bf\n",
            iso = q(iso),
            uki = q(&uki),
            boot = q(&boot),
        ),
        dir,
    );
    assert_eq!(
        fs::read_to_string(dir.join("loader.conf.bf")).unwrap(),
        ISO_LOADER_CONF,
        "bootfactory's ISO loader.conf"
    );
    let mib = |p: &Path| fs::metadata(p).unwrap().len().div_ceil(MIB);
    IsoInputs {
        efiboot_mib: 10 + mib(&boot) + mib(&uki),
        tree,
        uefi,
    }
}

/// The ISO peer's steps (upstream's hybrid ISO, `pkg/imager/iso/hybrid.go`).
fn iso_peer_steps(inp: &IsoInputs) -> Vec<(&'static str, String)> {
    vec![
        (
            "efiboot.img: mkfs.vfat + mcopy",
            format!(
                "truncate -s {}M efiboot.img\n\
                 mkfs.vfat -F 32 -n EFI --invariant efiboot.img >/dev/null\n\
                 mcopy -s -p -Q -m -i efiboot.img {uefi}/EFI {uefi}/loader ::\n",
                inp.efiboot_mib,
                uefi = q(&inp.uefi),
            ),
        ),
        (
            "grub-mkrescue (xorriso)",
            format!(
                "GRUB_FAT_SERIAL_NUMBER=5cf2ef7c grub-mkrescue --compress=xz --output=out.iso \
                 --directory={GRUB_PC} -m efiboot.img -iso-level 3 {tree} -eltorito-alt-boot -e \
                 --interval:appended_partition_2:all:: -append_partition 2 0xef efiboot.img \
                 -appended_part_as_gpt -partition_cyl_align all -partition_offset 16 \
                 -iso_mbr_part_type 0x83 -no-emul-boot -- -volume_date all_file_dates =1559424892 \
                 -volume_date uuid 2019060121345200 -volid TALOS_V1_11_6 -volset-id Talos-{VERSION} \
                 2>/dev/null\n",
                tree = q(&inp.tree),
            ),
        ),
    ]
}

fn run_steps(steps: &[(&'static str, String)], work: &Path, label: &str) -> Measure {
    let mut total = Measure::default();
    for (name, script) in steps {
        let m = timed(script, work);
        println!(
            "    {label} {name}: {:.2} s, {} MiB",
            m.wall,
            m.rss_kib / 1024
        );
        total = total.then(m);
    }
    total
}

fn size(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

fn main() {
    for tool in [
        "sgdisk",
        "sfdisk",
        "mkfs.vfat",
        "mcopy",
        "mkfs.xfs",
        "grub-mkimage",
        "grub-mkrescue",
        "xorriso",
        "isoinfo",
        "zstd",
        "dd",
        "truncate",
        "/usr/bin/time",
        "bash",
    ] {
        let found = if tool.starts_with('/') {
            Path::new(tool).exists()
        } else {
            guard::have(tool)
        };
        if !found {
            eprintln!(
                "{tool} is missing: apt-get install -y xfsprogs grub-pc-bin grub-common xorriso \
                 mtools dosfstools gdisk fdisk zstd genisoimage time"
            );
            return;
        }
    }
    for f in [STUB, SD_BOOT, GRUB_PC] {
        if !Path::new(f).exists() {
            eprintln!("{f} is missing: apt-get install -y systemd-boot-efi grub-pc-bin");
            return;
        }
    }
    guard::spawn_signal_watcher();
    guard::spawn_watchdog("disk_image", Duration::from_secs(3 * 3600));
    let runs = env_number("BENCH_RUNS", 3);
    let scratch = Scratch::new("bootfactory-bench-disk-image");
    let root = scratch.path();
    let client = Client::new();
    let template = prepare(root, &client);
    let id = template.id.clone();

    let mut rows: BTreeMap<&'static str, Vec<Measure>> = BTreeMap::new();
    let mut kids: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
    let mut sizes: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
    let record = |rows: &mut BTreeMap<&'static str, Vec<Measure>>, k: &'static str, m: Measure| {
        rows.entry(k).or_default().push(m)
    };
    for run in 1..=runs {
        println!("\nrun {run}/{runs}:");
        let out = root.join("out");
        let _ = fs::remove_dir_all(&out);
        fs::create_dir_all(&out).unwrap();

        // 1. Cold .raw.zst and cold .iso, each on a fresh data directory.
        let bf_zst = out.join("bf.raw.zst");
        let (server, data) = fresh(root, &template, "cold-raw");
        let (m, k, bytes) = client.measure(
            &server,
            false,
            &image_url(&server, &id, "metal-amd64.raw.zst"),
            Some(&bf_zst),
        );
        println!(
            "  bootfactory cold .raw.zst: {:.2} s, {} MiB (children {} MiB); {:.1} MB",
            m.wall,
            m.rss_kib / 1024,
            k / 1024,
            bytes as f64 / 1e6
        );
        server.print_builds();
        record(&mut rows, "a2 bootfactory cold .raw.zst", m);
        kids.entry("a2 bootfactory cold .raw.zst")
            .or_default()
            .push(k);
        sizes
            .entry("bootfactory .raw.zst (zstd 3)")
            .or_default()
            .push(bytes);
        // The inputs both sides share (untimed).
        let kernel = out.join("kernel-amd64");
        let initrd = out.join("initramfs-amd64.xz");
        client.get(&image_url(&server, &id, "kernel-amd64"), Some(&kernel));
        client.get(
            &image_url(&server, &id, "initramfs-amd64.xz"),
            Some(&initrd),
        );
        drop(server);
        let _ = fs::remove_dir_all(&data);

        let bf_iso = out.join("bf.iso");
        let (server, data) = fresh(root, &template, "cold-iso");
        let (m, k, bytes) = client.measure(
            &server,
            false,
            &image_url(&server, &id, "metal-amd64.iso"),
            Some(&bf_iso),
        );
        println!(
            "  bootfactory cold .iso: {:.2} s, {} MiB (children {} MiB); {:.1} MB",
            m.wall,
            m.rss_kib / 1024,
            k / 1024,
            bytes as f64 / 1e6
        );
        server.print_builds();
        record(&mut rows, "b2 bootfactory cold .iso", m);
        kids.entry("b2 bootfactory cold .iso").or_default().push(k);
        sizes.entry("bootfactory .iso").or_default().push(bytes);
        // The ISO's own inputs: the schematic extension names the server's URL (its random
        // port), so each server builds a different initramfs; the peer takes this server's.
        let iso_kernel = out.join("iso-kernel-amd64");
        let iso_initrd = out.join("iso-initramfs-amd64.xz");
        client.get(&image_url(&server, &id, "kernel-amd64"), Some(&iso_kernel));
        client.get(
            &image_url(&server, &id, "initramfs-amd64.xz"),
            Some(&iso_initrd),
        );
        drop(server);
        let _ = fs::remove_dir_all(&data);

        // 2. Prerequisites built: initramfs and kernel first, then the images.
        let (server, data) = fresh(root, &template, "prereq");
        client.request(true, &image_url(&server, &id, "initramfs-amd64.xz"), None);
        client.request(true, &image_url(&server, &id, "kernel-amd64"), None);
        server.print_builds();
        let perf = std::env::var_os("BENCH_PERF")
            .filter(|_| run == 1)
            .map(|file| {
                let mut cmd = Command::new("perf");
                cmd.args(["record", "-F", "499", "-g", "-o"])
                    .arg(file)
                    .arg("-p")
                    .arg(server.pid().to_string());
                let p = Proc::spawn("perf record", &mut cmd, &root.join("perf.log"));
                std::thread::sleep(Duration::from_millis(500));
                p
            });
        let (raw_m, raw_k, _) = client.measure(
            &server,
            true,
            &image_url(&server, &id, "metal-amd64.raw"),
            None,
        );
        if let Some(mut p) = perf {
            guard::signal(p.id(), nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(60);
            while p.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            println!("  (perf data written; this run's figures include perf's overhead)");
        }
        println!(
            "  bootfactory HEAD .raw (UKI + raw image; initramfs built): {:.2} s, {} MiB (children {} MiB)",
            raw_m.wall,
            raw_m.rss_kib / 1024,
            raw_k / 1024
        );
        server.print_builds();
        let (zst_m, _, _) = client.measure(
            &server,
            false,
            &image_url(&server, &id, "metal-amd64.raw.zst"),
            None,
        );
        println!(
            "  bootfactory .raw.zst from the cached raw (zstd 3): {:.2} s, {} MiB",
            zst_m.wall,
            zst_m.rss_kib / 1024
        );
        server.print_builds();
        let (iso_m, iso_k, _) = client.measure(
            &server,
            false,
            &image_url(&server, &id, "metal-amd64.iso"),
            None,
        );
        println!(
            "  bootfactory .iso, initramfs built: {:.2} s, {} MiB (children {} MiB)",
            iso_m.wall,
            iso_m.rss_kib / 1024,
            iso_k / 1024
        );
        server.print_builds();
        drop(server);
        let _ = fs::remove_dir_all(&data);
        record(
            &mut rows,
            "a3 bootfactory .raw.zst, initramfs built",
            raw_m.then(zst_m),
        );
        kids.entry("a3 bootfactory .raw.zst, initramfs built")
            .or_default()
            .push(raw_k);
        record(&mut rows, "c3 bootfactory step: UKI + raw image", raw_m);
        record(&mut rows, "c4 bootfactory step: zstd 3 of the raw", zst_m);
        record(&mut rows, "b3 bootfactory .iso, initramfs built", iso_m);
        kids.entry("b3 bootfactory .iso, initramfs built")
            .or_default()
            .push(iso_k);

        // 3. The disk peer on the same bytes.
        let bf_raw = out.join("bf.raw");
        sh(
            &format!("zstd -q -d -f {} -o {}", q(&bf_zst), q(&bf_raw)),
            &out,
        );
        assert_eq!(size(&bf_raw), DISK_MIB * MIB, "bootfactory's raw size");
        let work = root.join("peer");
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).unwrap();
        let inputs = disk_inputs(&bf_raw, &kernel, &initrd, &out.join("disk-in"), &work);
        let disk = run_steps(&disk_peer_steps(&inputs), &work, "peer disk");
        let peer_raw = work.join("disk.raw");
        let z18 = timed("zstd -q -T0 -18 -f disk.raw -o disk.raw.zst.18", &work);
        println!(
            "    peer disk zstd -T0 -18: {:.2} s, {} MiB",
            z18.wall,
            z18.rss_kib / 1024
        );
        let z3 = timed("zstd -q -T0 -3 -f disk.raw -o disk.raw.zst.3", &work);
        println!(
            "    peer disk zstd -T0 -3: {:.2} s, {} MiB",
            z3.wall,
            z3.rss_kib / 1024
        );
        // Check: the same GPT layout (GUIDs aside) as bootfactory's, and the expected one.
        let ours = gpt_layout(&bf_raw);
        let theirs = gpt_layout(&peer_raw);
        assert_eq!(ours, theirs, "GPT layout: bootfactory vs. peer");
        let want: Vec<(u64, u64, String)> = LAYOUT
            .iter()
            .map(|(n, a, b, _)| (*a, b - a + 1, n.to_string()))
            .collect();
        let got: Vec<(u64, u64, String)> = ours.1.iter().map(|p| (p.0, p.1, p.3.clone())).collect();
        assert_eq!(got, want, "the 1.11 dual-boot layout");
        assert!(
            ours.1[1].4.contains("LegacyBIOSBootable"),
            "BIOS partition attribute: {:?}",
            ours.1[1].4
        );
        let peer_total = disk.then(z18);
        println!(
            "  peer disk: {:.2} s + zstd -18 {:.2} s = {:.2} s, {} MiB; .raw.zst {:.1} MB (-18), {:.1} MB (-3); bootfactory {:.1} MB",
            disk.wall,
            z18.wall,
            peer_total.wall,
            peer_total.rss_kib / 1024,
            size(&work.join("disk.raw.zst.18")) as f64 / 1e6,
            size(&work.join("disk.raw.zst.3")) as f64 / 1e6,
            size(&bf_zst) as f64 / 1e6
        );
        record(&mut rows, "a1 peer disk + zstd -T0 -18", peer_total);
        record(&mut rows, "a4 peer disk + zstd -T0 -3", disk.then(z3));
        record(&mut rows, "c1 peer step: disk (no compression)", disk);
        record(&mut rows, "c2 peer step: zstd -T0 -18", z18);
        sizes
            .entry("peer .raw.zst (zstd -T0 -18)")
            .or_default()
            .push(size(&work.join("disk.raw.zst.18")));
        sizes
            .entry("peer .raw.zst (zstd -T0 -3)")
            .or_default()
            .push(size(&work.join("disk.raw.zst.3")));
        let _ = fs::remove_dir_all(&work);
        let _ = fs::remove_file(&bf_raw);

        // 4. The ISO peer.
        fs::create_dir_all(&work).unwrap();
        let inputs = iso_inputs(&bf_iso, &iso_kernel, &iso_initrd, &out.join("iso-in"));
        let iso = run_steps(&iso_peer_steps(&inputs), &work, "peer ISO");
        let peer_iso = work.join("out.iso");
        println!(
            "  peer ISO: {:.2} s, {} MiB; {:.1} MB (bootfactory {:.1} MB)",
            iso.wall,
            iso.rss_kib / 1024,
            size(&peer_iso) as f64 / 1e6,
            size(&bf_iso) as f64 / 1e6
        );
        record(
            &mut rows,
            "b1 peer ISO (mkfs.vfat, mcopy, grub-mkrescue)",
            iso,
        );
        sizes.entry("peer .iso").or_default().push(size(&peer_iso));
        // Check: the same files under boot/ (grub-mkrescue's extras aside), same contents.
        let ours = iso_boot_files(&bf_iso);
        let theirs = iso_boot_files(&peer_iso);
        let not_compared = |v: &[String]| -> Vec<String> {
            v.iter().filter(|p| mkrescue_extra(p)).cloned().collect()
        };
        let compared = |v: &[String]| -> Vec<String> {
            v.iter().filter(|p| !mkrescue_extra(p)).cloned().collect()
        };
        let (ours_extra, theirs_extra) = (not_compared(&ours), not_compared(&theirs));
        let (ours, theirs) = (compared(&ours), compared(&theirs));
        assert_eq!(ours, theirs, "ISO boot/ files: bootfactory vs. peer");
        if run == 1 {
            println!(
                "  ISO boot/: the same {} entries on both; not compared: bootfactory {:?}, grub-mkrescue {} entries ({:?} and boot/grub/{{fonts,locale,roms}})",
                ours.len(),
                ours_extra,
                theirs_extra.len(),
                theirs_extra
                    .iter()
                    .filter(|p| p.starts_with("/boot/grub/i386-pc/"))
                    .collect::<Vec<_>>()
            );
        }
        for f in ["/boot/vmlinuz", "/boot/initramfs.xz", "/boot/grub/grub.cfg"] {
            let (a, b) = (out.join("cmp-a"), out.join("cmp-b"));
            iso_extract(&bf_iso, f, &a);
            iso_extract(&peer_iso, f, &b);
            assert!(
                fs::read(&a).unwrap() == fs::read(&b).unwrap(),
                "ISO {f}: bootfactory vs. peer"
            );
            let _ = fs::remove_file(&a);
            let _ = fs::remove_file(&b);
        }
        let _ = fs::remove_dir_all(&work);
        let _ = fs::remove_dir_all(&out);
    }

    let med = |v: &[f64]| median(v);
    let wall = |k: &str| med(&rows[k].iter().map(|m| m.wall).collect::<Vec<_>>());
    let peer_of = |k: &str| -> f64 {
        if k.starts_with('a') {
            wall("a1 peer disk + zstd -T0 -18")
        } else if k.starts_with('b') {
            wall("b1 peer ISO (mkfs.vfat, mcopy, grub-mkrescue)")
        } else {
            f64::NAN
        }
    };
    println!("\nsizes (median, bytes):");
    for (name, v) in &sizes {
        let v: Vec<f64> = v.iter().map(|&b| b as f64).collect();
        println!("  {name}: {:.0}", med(&v));
    }
    println!(
        "\nmedian of {runs} run(s) (bootfactory: client wall time over HTTP, server VmHWM, children's sampled peak; peer: sum of steps, max RSS):"
    );
    println!("| pipeline | wall (s) | × peer | peak RSS (MiB) | children (MiB) |");
    println!("|---|---:|---:|---:|---:|");
    for (name, ms) in &rows {
        let w = med(&ms.iter().map(|m| m.wall).collect::<Vec<_>>());
        let rss = med(&ms.iter().map(|m| m.rss_kib as f64).collect::<Vec<_>>()) / 1024.0;
        let ratio = w / peer_of(name);
        let ratio = if ratio.is_nan() {
            String::new()
        } else {
            format!("{ratio:.3}")
        };
        let k = kids
            .get(name)
            .map(|v| {
                let v: Vec<f64> = v.iter().map(|&k| k as f64 / 1024.0).collect();
                format!("{:.0}", med(&v))
            })
            .unwrap_or_default();
        println!("| {} | {w:.2} | {ratio} | {rss:.0} | {k} |", &name[3..]);
    }
    println!("target (issue 13): cold ≤ 0.5× peer wall, server peak RSS ≤ 256 MiB");
}
