//! Cold UKI and installer-image builds: the real `bootfactory serve` against the tool pipeline
//! upstream's imager shells out to.
//!
//! `cargo bench --bench installer` writes the Realistic fixture for Talos v1.11.6 with Debian's
//! real `linuxx64.efi.stub` and `systemd-bootx64.efi` as the amd64 imager's stub and boot
//! loader, imports it offline into a template data directory (`bootfactory mirror import`) and
//! stores the example schematic's seven extensions as a schematic. Each bootfactory figure comes
//! from the release binary (`bootfactory serve --offline`) started on a fresh copy of that
//! directory, asked over HTTP; wall time is the client's (request sent → last byte read, the
//! transfer over loopback included), peak RSS the server's `VmHWM` (reset through
//! `/proc/<pid>/clear_refs` before each request, so it is that request's peak):
//!
//! 1. **UKI, initramfs built**: `GET /image/<id>/v1.11.6/metal-amd64-uki.efi` after the
//!    `initramfs-amd64.xz` asset was built: the UKI assembly alone;
//! 2. **installer, initramfs built**: `GET /v2/metal-installer/<id>/manifests/v1.11.6` after both
//!    arches' initramfs were built: the installer UKIs, artifacts layers, configs, manifests,
//!    index and its signature;
//! 3. **cold UKI** and **cold installer**: the same requests on a fresh data directory (the
//!    initramfs builds included).
//!
//! The **peer** is upstream's pipeline on the same bytes (kernel, initramfs, stub and text
//! sections taken from what bootfactory served): `objcopy --add-section … --change-section-vma`
//! appending the same sections to the same stub, as the Talos 1.8/1.9 imager and `ukify` do
//! (`aarch64-linux-gnu-objcopy` for arm64), and for the installer per arch the artifacts layer:
//! GNU `tar` (USTAR, sorted, uid/gid 0, mtime 0, mode 0) of `systemd-boot.efi` and the UKI piped
//! through `gzip -1 -n` (go-containerregistry's BestSpeed), with `sha256sum` of the tar (the
//! diff ID) and of the `.tar.gz` (the blob digest) computed from the same stream. Every step runs
//! under `/usr/bin/time -f '%e %M'`; a pipeline's wall time is the sum of its steps, its RSS the
//! maximum. Upstream's config, manifests and index are a few hundred bytes of JSON and are left
//! out of the peer.
//!
//! Figures are printed, never asserted; the run fails only when an output is wrong: both UKIs
//! must parse and their `.linux`/`.initrd`/text sections must equal the inputs, and the layer
//! bootfactory serves must hold the same entries as the peer's. `BENCH_RUNS` (default 3) sets
//! the repetitions; medians are reported. Needs `binutils binutils-aarch64-linux-gnu
//! systemd-boot-efi time` (Debian packages). `BENCH_PERF=<file>` records the server with
//! `perf record -g` during run 1's installer request (that run's figures then include perf).

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bootfactory::fixture::{
    BootOptions, EXAMPLE_SCHEMATIC_EXTENSIONS, FileSource, FixtureOptions, SizeProfile,
    write_release,
};
use bootfactory::formats::pe::PeImage;
use support::guard::{self, Proc, Scratch};
use support::stats::{env_number, median};

const VERSION: &str = "v1.11.6";
const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const SD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const ARCHES: [&str; 2] = ["amd64", "arm64"];

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

fn sh_quote(p: &Path) -> String {
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

/// Copies a data directory (a stopped server's) to a new one.
fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
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
    /// How much of the log [`Server::builds`] has read.
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

    /// The builds logged since the last call (`asset built` lines): the asset key's last
    /// part, the build time in ms (the builder's: build, copy into the store, signature) and
    /// the size.
    fn builds(&self) -> Vec<(String, u64, u64)> {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let new = &log[self.seen.get().min(log.len())..];
        self.seen.set(log.len());
        new.lines()
            .filter(|l| l.contains("asset built"))
            .map(|l| {
                let field = |name: &str| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix(name))
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_string()
                };
                // `<format>/<Kind>/<version>/<platform>/<arch>/<sb>/<schematic>[/uki]`
                let key = field("asset=");
                let parts: Vec<&str> = key.split('/').collect();
                let mut short = format!(
                    "{} {}",
                    parts.get(1).unwrap_or(&"?"),
                    parts.get(4).unwrap_or(&"?")
                );
                if parts.len() > 7 {
                    short = format!("{short} {}", parts[7..].join("/"));
                }
                (
                    short,
                    field("build_ms=").parse().unwrap_or(0),
                    field("size=").parse().unwrap_or(0),
                )
            })
            .collect()
    }

    /// Prints [`Server::builds`], indented.
    fn print_builds(&self) {
        for (key, ms, size) in self.builds() {
            println!(
                "      built {key}: {:.2} s, {:.1} MB",
                ms as f64 / 1e3,
                size as f64 / 1e6
            );
        }
    }
}

/// `VmHWM` of `pid` in KiB.
fn hwm(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
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

    /// GETs `url` and streams the body into `out` (or discards it); returns the byte count.
    fn get(&self, url: &str, out: Option<&Path>) -> u64 {
        self.rt.block_on(async {
            use futures_util::StreamExt as _;
            use std::io::Write as _;
            let resp = self
                .http
                .get(url)
                .header(
                    "Accept",
                    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
                )
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = resp.status();
            if !status.is_success() {
                let body = resp.text().await.unwrap_or_default();
                panic!("GET {url}: {status}: {body}");
            }
            let mut file = out.map(|p| std::io::BufWriter::new(fs::File::create(p).unwrap()));
            let mut n = 0u64;
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.unwrap_or_else(|e| panic!("GET {url}: {e}"));
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

    fn get_json(&self, url: &str) -> serde_json::Value {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        self.get(url, Some(tmp.path()));
        serde_json::from_slice(&fs::read(tmp.path()).unwrap()).unwrap()
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

    /// One measured request: the client's wall time and the server's peak RSS during it.
    fn measure(&self, server: &Server, url: &str) -> (Measure, u64) {
        assert!(
            fs::write(format!("/proc/{}/clear_refs", server.pid()), "5").is_ok(),
            "cannot reset the server's VmHWM"
        );
        let start = Instant::now();
        let bytes = self.get(url, None);
        let wall = start.elapsed().as_secs_f64();
        (
            Measure {
                wall,
                rss_kib: hwm(server.pid()),
            },
            bytes,
        )
    }
}

/// The sections of a PE image: (name, content) in table order.
fn pe_sections(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = fs::read(path).unwrap();
    let pe = PeImage::parse(&bytes)
        .unwrap_or_else(|e| panic!("{} does not parse as PE32+: {e}", path.display()));
    pe.sections()
        .iter()
        .map(|s| {
            (
                String::from_utf8_lossy(s.name()).into_owned(),
                pe.section_data(s).to_vec(),
            )
        })
        .collect()
}

/// What bootfactory appended to the stub: the sections after the stub's own, in order.
fn appended_sections(uki: &Path, stub: &Path) -> Vec<(String, Vec<u8>)> {
    let stub_count = pe_sections(stub).len();
    pe_sections(uki).split_off(stub_count)
}

/// `ImageBase` and `SectionAlignment` of a PE32+ stub, and the end of its last section (RVA).
fn stub_geometry(stub: &Path) -> (u64, u64, u64) {
    let bytes = fs::read(stub).unwrap();
    let pe = PeImage::parse(&bytes).unwrap();
    let opt = pe.optional_header();
    let image_base = u64::from_le_bytes(opt[24..32].try_into().unwrap());
    let align = u64::from(u32::from_le_bytes(opt[32..36].try_into().unwrap()));
    let end = pe
        .sections()
        .iter()
        .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size))
        .max()
        .unwrap();
    (image_base, align, end)
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// The objcopy command line that appends `sections` (name, file) to `stub` as `out`, each at
/// the next SectionAlignment boundary (`ukify`'s and the Talos 1.8 imager's way).
fn objcopy_script(
    objcopy: &str,
    stub: &Path,
    sections: &[(String, PathBuf)],
    out: &Path,
) -> String {
    let (base, align, end) = stub_geometry(stub);
    let mut vma = align_up(end, align);
    let mut cmd = String::from(objcopy);
    for (name, file) in sections {
        let len = fs::metadata(file).unwrap().len();
        cmd.push_str(&format!(
            " --add-section {name}={} --change-section-vma {name}={:#x}",
            sh_quote(file),
            base + vma
        ));
        vma = align_up(vma + len, align);
    }
    cmd.push_str(&format!(" {} {}", sh_quote(stub), sh_quote(out)));
    cmd
}

/// Writes the text sections of `appended` to files in `dir` and lays out the peer's section
/// list: the same names and order, `.linux` and `.initrd` from the kernel and initramfs files.
fn peer_sections(
    appended: &[(String, Vec<u8>)],
    kernel: &Path,
    initrd: &Path,
    dir: &Path,
) -> Vec<(String, PathBuf)> {
    fs::create_dir_all(dir).unwrap();
    appended
        .iter()
        .enumerate()
        .map(|(i, (name, data))| {
            let path = match name.as_str() {
                ".linux" => kernel.to_path_buf(),
                ".initrd" => initrd.to_path_buf(),
                _ => {
                    let p = dir.join(format!("{i}{name}"));
                    fs::write(&p, data).unwrap();
                    p
                }
            };
            (name.clone(), path)
        })
        .collect()
}

/// Checks a UKI's appended sections against the expected inputs (by content).
fn check_uki(what: &str, uki: &Path, stub: &Path, expected: &[(String, PathBuf)]) {
    let got = appended_sections(uki, stub);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, want, "{what}: appended sections");
    for ((name, data), (_, file)) in got.iter().zip(expected) {
        assert!(
            *data == fs::read(file).unwrap(),
            "{what}: section {name} differs from {}",
            file.display()
        );
    }
}

/// The entries of a gzip'd tar: (name, mode, uid, gid, mtime, SHA-256 of the content).
fn layer_entries(path: &Path) -> Vec<(String, u32, u64, u64, u64, String)> {
    use sha2::Digest as _;
    let gz = flate2::read::GzDecoder::new(fs::File::open(path).unwrap());
    let mut archive = tar::Archive::new(gz);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut hash = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = e.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
            }
            (
                e.path().unwrap().display().to_string(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
                hex::encode(hash.finalize()),
            )
        })
        .collect()
}

/// Extracts `name` from a gzip'd tar into `out`.
fn extract(layer: &Path, name: &str, out: &Path) {
    let gz = flate2::read::GzDecoder::new(fs::File::open(layer).unwrap());
    let mut archive = tar::Archive::new(gz);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(name) {
            let mut f = fs::File::create(out).unwrap();
            std::io::copy(&mut e, &mut f).unwrap();
            return;
        }
    }
    panic!("{} has no {name}", layer.display());
}

/// What the peer needs per architecture, taken from what bootfactory served.
struct ArchInputs {
    arch: &'static str,
    stub: PathBuf,
    boot: PathBuf,
    /// The installer UKI's sections (from bootfactory's artifacts layer).
    installer_sections: Vec<(String, PathBuf)>,
    /// bootfactory's artifacts layer.
    layer: PathBuf,
}

/// Files of the fixture's imager for `arch` (`usr/install/<arch>/<name>`), from the layout.
fn imager_file(layout_files: &Path, arch: &str, name: &str) -> PathBuf {
    layout_files.join(arch).join(name)
}

struct Template {
    data: PathBuf,
    id: String,
    /// `<arch>/systemd-stub.efi` and `<arch>/systemd-boot.efi` as the imager holds them.
    imager_files: PathBuf,
}

/// Writes the fixture, imports it offline, stores the schematic; returns the stopped data dir.
fn prepare(root: &Path, client: &Client) -> Template {
    let layout = root.join("layout");
    eprintln!("writing the Realistic fixture for {VERSION} …");
    let t = Instant::now();
    let rel = write_release(
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
    // The imager's stub and boot loader per arch (the peer's inputs), from the imager image.
    let imager_files = root.join("imager-files");
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = bootfactory::store::Store::open(&root.join("scratch-store")).unwrap();
        let catalog = bootfactory::oci::ImageCatalog::new(store).unwrap();
        rt.block_on(bootfactory::oci::bundle::import(
            &catalog,
            &layout,
            None,
            &bootfactory::oci::bundle::NoProgress,
        ))
        .unwrap();
        let v = rel.version(VERSION).unwrap();
        let imager = rel.image(&v.imager).unwrap().digest;
        for arch in ARCHES {
            let m = rt
                .block_on(bootfactory::oci::flatten::platform_manifest(
                    &catalog, &imager, arch,
                ))
                .unwrap()
                .unwrap();
            let dir = root.join(format!("imager-{arch}"));
            let sub = format!("usr/install/{arch}");
            rt.block_on(bootfactory::oci::flatten::flatten_image(
                &catalog,
                &m,
                &dir,
                Some(Path::new(&sub)),
            ))
            .unwrap();
            fs::create_dir_all(imager_files.join(arch)).unwrap();
            for f in ["systemd-stub.efi", "systemd-boot.efi"] {
                fs::copy(dir.join(&sub).join(f), imager_files.join(arch).join(f)).unwrap();
            }
            let _ = fs::remove_dir_all(&dir);
        }
    }
    let _ = fs::remove_dir_all(root.join("scratch-store"));
    let _ = fs::remove_dir_all(&layout);
    assert_eq!(
        fs::read(imager_files.join("amd64/systemd-stub.efi")).unwrap(),
        fs::read(STUB).unwrap()
    );
    let server = Server::start(&data, &root.join("template.log"));
    let mut yaml = String::from("customization:\n  systemExtensions:\n    officialExtensions:\n");
    for n in EXAMPLE_SCHEMATIC_EXTENSIONS {
        yaml.push_str(&format!("      - siderolabs/{n}\n"));
    }
    let id = client.post(&format!("{}/schematics", server.url), &yaml)["id"]
        .as_str()
        .unwrap()
        .to_string();
    drop(server);
    eprintln!("  ready in {:.1} s", t.elapsed().as_secs_f64());
    Template {
        data,
        id,
        imager_files,
    }
}

/// A fresh copy of the template with a server on it.
fn fresh(root: &Path, t: &Template, name: &str) -> (Server, PathBuf) {
    let data = root.join(name);
    let _ = fs::remove_dir_all(&data);
    copy_dir(&t.data, &data);
    let server = Server::start(&data, &root.join(format!("{name}.log")));
    (server, data)
}

struct Urls {
    base: String,
    id: String,
}

impl Urls {
    fn image(&self, path: &str) -> String {
        format!("{}/image/{}/{VERSION}/{path}", self.base, self.id)
    }
    fn installer(&self) -> String {
        format!(
            "{}/v2/metal-installer/{}/manifests/{VERSION}",
            self.base, self.id
        )
    }
    fn blob(&self, digest: &str) -> String {
        format!(
            "{}/v2/metal-installer/{}/blobs/{digest}",
            self.base, self.id
        )
    }
}

/// Fetches what the peer needs (and bootfactory's outputs to check) from a server that built
/// the UKI and the installer.
fn collect_inputs(
    client: &Client,
    urls: &Urls,
    t: &Template,
    dir: &Path,
) -> (PathBuf, Vec<(String, PathBuf)>, Vec<ArchInputs>) {
    fs::create_dir_all(dir).unwrap();
    let mut arches = Vec::new();
    for arch in ARCHES {
        let kernel = dir.join(format!("kernel-{arch}"));
        let initrd = dir.join(format!("initramfs-{arch}.xz"));
        client.get(&urls.image(&format!("kernel-{arch}")), Some(&kernel));
        client.get(&urls.image(&format!("initramfs-{arch}.xz")), Some(&initrd));
        arches.push((arch, kernel, initrd));
    }
    // The UKI asset (amd64).
    let uki = dir.join("metal-amd64-uki.efi");
    client.get(&urls.image("metal-amd64-uki.efi"), Some(&uki));
    let stub_amd64 = imager_file(&t.imager_files, "amd64", "systemd-stub.efi");
    let appended = appended_sections(&uki, &stub_amd64);
    let uki_sections = peer_sections(&appended, &arches[0].1, &arches[0].2, &dir.join("uki-txt"));
    check_uki("bootfactory UKI", &uki, &stub_amd64, &uki_sections);
    // The installer: index → per-arch manifest → its last layer (the artifacts layer).
    let index = client.get_json(&urls.installer());
    let mut out = Vec::new();
    for child in index["manifests"].as_array().unwrap() {
        let arch = child["platform"]["architecture"].as_str().unwrap();
        let (arch, kernel, initrd) = arches.iter().find(|a| a.0 == arch).unwrap().clone();
        let manifest = client.get_json(&urls.blob(child["digest"].as_str().unwrap()));
        let layer_digest = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let layer = dir.join(format!("layer-{arch}.tar.gz"));
        client.get(&urls.blob(&layer_digest), Some(&layer));
        let installer_uki = dir.join(format!("installer-{arch}.efi"));
        extract(
            &layer,
            &format!("usr/install/{arch}/vmlinuz.efi"),
            &installer_uki,
        );
        let stub = imager_file(&t.imager_files, arch, "systemd-stub.efi");
        let appended = appended_sections(&installer_uki, &stub);
        let sections = peer_sections(
            &appended,
            &kernel,
            &initrd,
            &dir.join(format!("inst-{arch}")),
        );
        check_uki(
            &format!("bootfactory installer UKI ({arch})"),
            &installer_uki,
            &stub,
            &sections,
        );
        out.push(ArchInputs {
            arch,
            stub,
            boot: imager_file(&t.imager_files, arch, "systemd-boot.efi"),
            installer_sections: sections,
            layer,
        });
    }
    assert_eq!(
        out.iter().map(|a| a.arch).collect::<Vec<_>>(),
        ARCHES,
        "installer index arches"
    );
    (uki, uki_sections, out)
}

fn objcopy_for(arch: &str) -> &'static str {
    match arch {
        "amd64" => "objcopy",
        _ => "aarch64-linux-gnu-objcopy",
    }
}

/// The peer's installer for one arch: objcopy UKI, then the layer stream. Returns (UKI step,
/// layer step, layer path).
fn peer_installer_arch(a: &ArchInputs, work: &Path) -> (Measure, Measure, PathBuf) {
    let stage = work.join(format!("stage-{}", a.arch));
    let dir = stage.join(format!("usr/install/{}", a.arch));
    fs::create_dir_all(&dir).unwrap();
    // Untimed setup: the boot loader is where tar reads it (the imager copies it there too).
    fs::copy(&a.boot, dir.join("systemd-boot.efi")).unwrap();
    let uki = dir.join("vmlinuz.efi");
    // objcopy cannot add a second section of a name ("file in wrong format"), so the peer's
    // installer UKI leaves out the `reset-maintenance` profile (its `.profile` and `.cmdline`,
    // 150 bytes); the Talos ≥ 1.10 imager that adds it assembles natively, without objcopy.
    let mut seen = std::collections::HashSet::new();
    let sections: Vec<(String, PathBuf)> = a
        .installer_sections
        .iter()
        .filter(|(name, _)| seen.insert(name.clone()))
        .cloned()
        .collect();
    let m_uki = timed(
        &objcopy_script(objcopy_for(a.arch), &a.stub, &sections, &uki),
        work,
    );
    check_uki(
        &format!("peer installer UKI ({})", a.arch),
        &uki,
        &a.stub,
        &sections,
    );
    let layer = work.join(format!("layer-{}.tar.gz", a.arch));
    let m_layer = timed(
        &format!(
            "cd {stage}\n\
             rm -f ../tar.fifo && mkfifo ../tar.fifo\n\
             sha256sum < ../tar.fifo > ../diffid-{arch} &\n\
             tar --format=ustar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
             --mode=0 -cf - usr/install/{arch}/systemd-boot.efi usr/install/{arch}/vmlinuz.efi \
             | tee ../tar.fifo | gzip -1 -n | tee {layer} | sha256sum > ../digest-{arch}\n\
             wait\n",
            stage = sh_quote(&stage),
            arch = a.arch,
            layer = sh_quote(&layer),
        ),
        work,
    );
    (m_uki, m_layer, layer)
}

fn main() {
    for tool in [
        "objcopy",
        "aarch64-linux-gnu-objcopy",
        "tar",
        "gzip",
        "sha256sum",
        "/usr/bin/time",
        "bash",
    ] {
        if !guard::have(tool) {
            eprintln!(
                "{tool} is missing: apt-get install -y binutils binutils-aarch64-linux-gnu time"
            );
            return;
        }
    }
    for f in [STUB, SD_BOOT] {
        if !Path::new(f).exists() {
            eprintln!("{f} is missing: apt-get install -y systemd-boot-efi");
            return;
        }
    }
    guard::spawn_signal_watcher();
    guard::spawn_watchdog("installer", Duration::from_secs(3 * 3600));
    let runs = env_number("BENCH_RUNS", 3);
    let scratch = Scratch::new("bootfactory-bench-installer");
    let root = scratch.path();
    let client = Client::new();
    let template = prepare(root, &client);

    let mut rows: BTreeMap<&'static str, Vec<Measure>> = BTreeMap::new();
    let mut sizes = String::new();
    for run in 1..=runs {
        println!("\nrun {run}/{runs}:");
        // 1. A server that builds both initramfs first, then the UKI, then the installer.
        let (server, data) = fresh(root, &template, "warm");
        let urls = Urls {
            base: server.url.clone(),
            id: template.id.clone(),
        };
        let mut initramfs = Measure::default();
        for arch in ARCHES {
            let (m, bytes) = client.measure(&server, &urls.image(&format!("initramfs-{arch}.xz")));
            println!(
                "  bootfactory initramfs-{arch}.xz (cold): {:.2} s, {} MiB; {:.1} MB",
                m.wall,
                m.rss_kib / 1024,
                bytes as f64 / 1e6
            );
            server.print_builds();
            initramfs = initramfs.then(m);
        }
        let (uki, uki_bytes) = client.measure(&server, &urls.image("metal-amd64-uki.efi"));
        println!(
            "  bootfactory UKI, initramfs built: {:.2} s, {} MiB; {:.1} MB",
            uki.wall,
            uki.rss_kib / 1024,
            uki_bytes as f64 / 1e6
        );
        server.print_builds();
        // `BENCH_PERF=<file>`: `perf record -g` of the server during this request (run 1).
        let perf = std::env::var_os("BENCH_PERF")
            .filter(|_| run == 1)
            .map(|out| {
                let mut cmd = Command::new("perf");
                cmd.args(["record", "-F", "499", "-g", "-o"])
                    .arg(out)
                    .arg("-p")
                    .arg(server.pid().to_string());
                let p = Proc::spawn("perf record", &mut cmd, &root.join("perf.log"));
                std::thread::sleep(Duration::from_millis(500));
                p
            });
        let (inst, _) = client.measure(&server, &urls.installer());
        if let Some(mut p) = perf {
            guard::signal(p.id(), nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(60);
            while p.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            println!("  (perf data written; this run's figures include perf's overhead)");
        }
        println!(
            "  bootfactory installer, initramfs built: {:.2} s, {} MiB",
            inst.wall,
            inst.rss_kib / 1024
        );
        server.print_builds();
        let inputs_dir = root.join("inputs");
        let _ = fs::remove_dir_all(&inputs_dir);
        let (_, uki_sections, arches) = collect_inputs(&client, &urls, &template, &inputs_dir);
        drop(server);
        let _ = fs::remove_dir_all(&data);

        // 2. Cold UKI, cold installer: each on a fresh data directory.
        let (server, data) = fresh(root, &template, "cold-uki");
        let urls = Urls {
            base: server.url.clone(),
            id: template.id.clone(),
        };
        let (cold_uki, _) = client.measure(&server, &urls.image("metal-amd64-uki.efi"));
        println!(
            "  bootfactory cold UKI: {:.2} s, {} MiB",
            cold_uki.wall,
            cold_uki.rss_kib / 1024
        );
        server.print_builds();
        drop(server);
        let _ = fs::remove_dir_all(&data);
        let (server, data) = fresh(root, &template, "cold-installer");
        let urls = Urls {
            base: server.url.clone(),
            id: template.id.clone(),
        };
        let (cold_inst, _) = client.measure(&server, &urls.installer());
        println!(
            "  bootfactory cold installer: {:.2} s, {} MiB",
            cold_inst.wall,
            cold_inst.rss_kib / 1024
        );
        server.print_builds();
        drop(server);
        let _ = fs::remove_dir_all(&data);

        // 3. The peer on the same bytes.
        let work = root.join("peer");
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).unwrap();
        let a = &arches[0];
        let peer_uki_out = work.join("metal-amd64-uki.efi");
        let peer_uki = timed(
            &objcopy_script("objcopy", &a.stub, &uki_sections, &peer_uki_out),
            &work,
        );
        check_uki("peer UKI", &peer_uki_out, &a.stub, &uki_sections);
        let peer_uki_bytes = fs::metadata(&peer_uki_out).unwrap().len();
        println!(
            "  peer UKI (objcopy): {:.2} s, {} MiB; {:.1} MB",
            peer_uki.wall,
            peer_uki.rss_kib / 1024,
            peer_uki_bytes as f64 / 1e6
        );
        let mut peer_inst = Measure::default();
        let mut peer_layers = Measure::default();
        for a in &arches {
            let (m_uki, m_layer, layer) = peer_installer_arch(a, &work);
            let ours = layer_entries(&a.layer);
            let theirs = layer_entries(&layer);
            let names = |e: &[(String, u32, u64, u64, u64, String)]| {
                e.iter()
                    .map(|e| (e.0.clone(), e.1, e.2, e.3, e.4))
                    .collect::<Vec<_>>()
            };
            assert_eq!(names(&ours), names(&theirs), "layer entries ({})", a.arch);
            // The boot loader is the same file; the UKIs differ only in layout.
            assert_eq!(ours[0].5, theirs[0].5, "systemd-boot.efi ({})", a.arch);
            let diff_id = fs::read_to_string(work.join(format!("diffid-{}", a.arch))).unwrap();
            let digest = fs::read_to_string(work.join(format!("digest-{}", a.arch))).unwrap();
            let gz = fs::metadata(&layer).unwrap().len();
            assert_eq!(diff_id.len(), 68, "sha256sum of the tar");
            println!(
                "  peer installer {}: objcopy {:.2} s, {} MiB; tar, gzip -1, sha256sum ×2: {:.2} s, {} MiB; layer {:.1} MB (bootfactory's {:.1} MB)",
                a.arch,
                m_uki.wall,
                m_uki.rss_kib / 1024,
                m_layer.wall,
                m_layer.rss_kib / 1024,
                gz as f64 / 1e6,
                fs::metadata(&a.layer).unwrap().len() as f64 / 1e6
            );
            if run == 1 {
                sizes.push_str(&format!(
                    "  {} layer: peer {} bytes (sha256:{}), bootfactory {} bytes\n",
                    a.arch,
                    gz,
                    &digest[..12],
                    fs::metadata(&a.layer).unwrap().len()
                ));
            }
            peer_inst = peer_inst.then(m_uki).then(m_layer);
            peer_layers = peer_layers.then(m_layer);
        }
        let _ = fs::remove_dir_all(&work);
        let _ = fs::remove_dir_all(&inputs_dir);

        rows.entry("a1 peer UKI (objcopy)")
            .or_default()
            .push(peer_uki);
        rows.entry("a2 bootfactory UKI, initramfs built")
            .or_default()
            .push(uki);
        rows.entry("a3 bootfactory cold UKI (with initramfs)")
            .or_default()
            .push(cold_uki);
        rows.entry("b1 peer installer (2× objcopy, tar, gzip -1, sha256sum)")
            .or_default()
            .push(peer_inst);
        rows.entry("b2 bootfactory installer, initramfs built")
            .or_default()
            .push(inst);
        rows.entry("b3 bootfactory cold installer (with 2 initramfs)")
            .or_default()
            .push(cold_inst);
        rows.entry("c1 peer step: 2× tar, gzip -1, sha256sum ×2")
            .or_default()
            .push(peer_layers);
        rows.entry("c2 bootfactory step: 2× initramfs (cold)")
            .or_default()
            .push(initramfs);
    }
    let wall = |k: &str| median(&rows[k].iter().map(|m| m.wall).collect::<Vec<_>>());
    let peer_of = |k: &str| -> f64 {
        if k.starts_with('a') {
            wall("a1 peer UKI (objcopy)")
        } else if k.starts_with('b') {
            wall("b1 peer installer (2× objcopy, tar, gzip -1, sha256sum)")
        } else {
            f64::NAN
        }
    };
    println!("\nlayer sizes (run 1):\n{sizes}");
    println!(
        "median of {runs} run(s) (bootfactory: client wall time over HTTP, server VmHWM; peer: sum of steps, max RSS):"
    );
    println!("| pipeline | wall (s) | × peer | peak RSS (MiB) |");
    println!("|---|---:|---:|---:|");
    for (name, ms) in &rows {
        let w = median(&ms.iter().map(|m| m.wall).collect::<Vec<_>>());
        let rss = median(&ms.iter().map(|m| m.rss_kib as f64).collect::<Vec<_>>()) / 1024.0;
        let ratio = w / peer_of(name);
        let ratio = if ratio.is_nan() {
            "".to_string()
        } else {
            format!("{ratio:.3}")
        };
        println!("| {} | {w:.2} | {ratio} | {rss:.0} |", &name[3..]);
    }
    println!(
        "targets: UKI and installer with initramfs built ≤ 0.5× peer; peak RSS far below the image size"
    );
}
