//! Initramfs-with-extensions build: bootfactory against the pipeline upstream shells out to.
//!
//! `cargo bench --bench initramfs` writes the Realistic fixture for Talos v1.11.6, flattens the
//! seven extensions of the example schematic, and measures, in the same run:
//!
//! 1. **peer**: per extension `mksquashfs … -comp zstd -Xcompression-level 18`, the staging
//!    directory (squashfs files, `extensions.yaml`, firmware), `cpio -H newc -o --reproducible
//!    -R +0:+0` over the sorted listing, `zstd -T0 -18`, appended after the base bytes;
//! 2. **bootfactory cold**: `build_initramfs` with an empty cache;
//! 3. **bootfactory warm**: a new schematic (another schematic ID) whose extensions were built
//!    in run 2.
//!
//! Every step runs as a child process under `/usr/bin/time -f '%e %M'` (GNU time: wall
//! seconds, peak RSS in KiB), the bootfactory builds by re-executing this binary with
//! `--child-build`. Wall time of a pipeline is the sum of its steps, peak RSS the maximum.
//! Figures are printed, never asserted. `BENCH_RUNS` (default 3) sets the repetitions; medians
//! are reported. Needs `squashfs-tools cpio zstd time` (Debian packages) for the peer.

#[path = "support/stats.rs"]
mod stats;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use bootfactory::factory::initramfs::{
    self, BuildStats, Compression, ExtensionTree, InitramfsOptions, SquashfsCache,
};
use bootfactory::fixture::{
    EXAMPLE_SCHEMATIC_EXTENSIONS, FixtureOptions, SizeProfile, write_release,
};
use bootfactory::oci::ImageCatalog;
use bootfactory::oci::bundle::{self, NoProgress};
use bootfactory::oci::flatten::{flatten_image, platform_manifest};
use bootfactory::store::Store;
use stats::median;

const VERSION: &str = "v1.11.6";
const MTIME: u32 = 1_559_424_892;

fn options() -> InitramfsOptions {
    InitramfsOptions {
        talos_version: (1, 11, 6),
        kernel_modules_path: "/usr/lib/modules".into(),
        firmware_path: "/usr/lib/firmware".into(),
        squashfs_compression: Compression::Zstd,
        cpio_compression: Compression::Zstd,
        mtime: MTIME,
    }
}

/// A cache keeping bundles as files in a directory (what a store-backed cache amounts to).
struct DirCache(PathBuf);

impl SquashfsCache for DirCache {
    fn get(&self, key: &str) -> Option<PathBuf> {
        let p = self.0.join(key);
        p.exists().then_some(p)
    }

    fn put(&self, key: &str, squashfs: &Path) -> std::io::Result<()> {
        let tmp = self.0.join(format!("{key}.tmp"));
        fs::copy(squashfs, &tmp)?;
        fs::rename(tmp, self.0.join(key))
    }
}

/// `--child-build <base> <cache dir> <work dir> <out> <ext dir>…`: one build, stats on stdout.
fn child_build(args: &[String]) {
    let [base, cache, work, out, exts @ ..] = args else {
        panic!("usage: --child-build BASE CACHE WORK OUT EXT...");
    };
    fs::create_dir_all(cache).unwrap();
    let trees: Vec<ExtensionTree> = exts
        .iter()
        .map(|d| ExtensionTree {
            dir: PathBuf::from(d),
            // The schematic extension (last) is never cached, as in the factory.
            cache_key: (!d.ends_with("-schematic")).then(|| format!("bench:{d}")),
        })
        .collect();
    let cache = DirCache(PathBuf::from(cache));
    let mut file = std::io::BufWriter::new(fs::File::create(out).unwrap());
    let stats = initramfs::build_initramfs(
        Path::new(base),
        &trees,
        &options(),
        Some(&cache),
        Path::new(work),
        &mut file,
    )
    .unwrap();
    file.flush().unwrap();
    print_stats(&stats);
}

fn print_stats(s: &BuildStats) {
    println!(
        "STATS hits={} built={} early={} base={} archive={} archive_raw={} total={}",
        s.cache_hits,
        s.squashfs_built,
        s.early_cpio_bytes,
        s.base_bytes,
        s.extensions_archive_bytes,
        s.extensions_archive_uncompressed_bytes,
        s.total_bytes
    );
}

/// One measured child process.
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

/// Runs `sh -c script` under GNU time; returns the measure and stdout.
fn timed(script: &str, dir: &Path) -> (Measure, String) {
    let times = dir.join(".time");
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%e %M")
        .arg("-o")
        .arg(&times)
        .arg("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .stderr(Stdio::inherit())
        .output()
        .expect("run /usr/bin/time (apt-get install -y time)");
    assert!(out.status.success(), "failed: {script}");
    let t = fs::read_to_string(&times).unwrap();
    let line = t.lines().last().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let wall: f64 = parts
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(f64::NAN);
    let rss_kib: u64 = parts.next().and_then(|r| r.parse().ok()).unwrap_or(0);
    let _ = fs::remove_file(&times);
    (
        Measure { wall, rss_kib },
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            total += dir_bytes(&e.path());
        } else if t.is_file() {
            total += e.metadata().unwrap().len();
        }
    }
    total
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

struct Inputs {
    base: PathBuf,
    /// Flattened extension directories, in schematic order.
    exts: Vec<(String, PathBuf)>,
}

fn prepare(root: &Path) -> Inputs {
    let layout = root.join("layout");
    eprintln!("writing the Realistic fixture for {VERSION} …");
    let rel = write_release(
        &layout,
        &FixtureOptions {
            versions: vec![VERSION.into()],
            profile: SizeProfile::Realistic,
            ..FixtureOptions::default()
        },
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let catalog = ImageCatalog::new(Store::open(&root.join("store")).unwrap()).unwrap();
    rt.block_on(bundle::import(&catalog, &layout, None, &NoProgress))
        .unwrap();
    let v = rel.version(VERSION).unwrap();
    let imager = rel.image(&v.imager).unwrap().digest;
    let m = rt
        .block_on(platform_manifest(&catalog, &imager, "amd64"))
        .unwrap()
        .unwrap();
    let imager_dir = root.join("imager");
    rt.block_on(flatten_image(
        &catalog,
        &m,
        &imager_dir,
        Some(Path::new("usr/install/amd64")),
    ))
    .unwrap();
    let mut exts = Vec::new();
    for name in EXAMPLE_SCHEMATIC_EXTENSIONS {
        let digest = v.extensions[name].digest;
        let m = rt
            .block_on(platform_manifest(&catalog, &digest, "amd64"))
            .unwrap()
            .unwrap();
        let dir = root.join("ext").join(name);
        rt.block_on(flatten_image(&catalog, &m, &dir, None))
            .unwrap();
        exts.push((name.to_string(), dir));
    }
    let _ = fs::remove_dir_all(root.join("store"));
    let _ = fs::remove_dir_all(&layout);
    Inputs {
        base: imager_dir.join("usr/install/amd64/initramfs.xz"),
        exts,
    }
}

fn schematic_ext(root: &Path, tag: &str) -> PathBuf {
    let mut yaml = String::from("customization:\n  systemExtensions:\n    officialExtensions:\n");
    for n in EXAMPLE_SCHEMATIC_EXTENSIONS {
        yaml.push_str(&format!("      - siderolabs/{n}\n"));
    }
    yaml.push_str(&format!("  extraKernelArgs:\n    - bench={tag}\n"));
    let s = bootfactory::schematic::parse(yaml.as_bytes()).unwrap();
    let id = s.id().to_string();
    let dir = root.join(format!("{tag}-schematic"));
    let _ = fs::remove_dir_all(&dir);
    initramfs::write_schematic_extension(
        &dir,
        &id,
        &s.canonical_yaml(),
        "https://factory.example/",
        true,
    )
    .unwrap();
    dir
}

struct PeerResult {
    total: Measure,
    squash: Measure,
    cpio: Measure,
    zstd18: Measure,
    zstd18_bytes: u64,
    zstd1_bytes: u64,
    zstd1: Measure,
    out_bytes: u64,
}

/// The upstream pipeline on copies of the trees (it moves files out of them).
fn peer(root: &Path, inputs: &Inputs, schematic: &Path) -> PeerResult {
    let work = root.join("peer");
    let _ = fs::remove_dir_all(&work);
    let ext_root = work.join("extensions");
    let stage = work.join("stage");
    fs::create_dir_all(&ext_root).unwrap();
    fs::create_dir_all(&stage).unwrap();
    let mut dirs: Vec<PathBuf> = inputs.exts.iter().map(|(_, d)| d.clone()).collect();
    dirs.push(schematic.to_path_buf());
    for (i, d) in dirs.iter().enumerate() {
        copy_tree(d, &ext_root.join(i.to_string()));
    }
    // Untimed setup ends here; the rest is what the imager does after extracting images.
    let start = Instant::now();
    let mut names: Vec<String> = (0..dirs.len()).map(|i| i.to_string()).collect();
    names.sort();
    let mut layers = String::from("layers:\n");
    let mut squash = Measure::default();
    for n in &names {
        let rootfs = ext_root.join(n).join("rootfs");
        let fw = rootfs.join("usr/lib/firmware");
        for (glob_dir, prefix, dst) in [
            ("intel-ucode", "", "GenuineIntel.bin"),
            ("amd-ucode", "microcode_amd", "AuthenticAMD.bin"),
        ] {
            let Ok(read) = fs::read_dir(fw.join(glob_dir)) else {
                continue;
            };
            let mut files: Vec<PathBuf> = read
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    name.starts_with(prefix) && (prefix.is_empty() || name.ends_with(".bin"))
                })
                .collect();
            files.sort();
            let ucode = stage.join("kernel/x86/microcode");
            fs::create_dir_all(&ucode).unwrap();
            let mut out = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(ucode.join(dst))
                .unwrap();
            for f in files {
                out.write_all(&fs::read(&f).unwrap()).unwrap();
                fs::remove_file(f).unwrap();
            }
        }
        if fw.exists() {
            let dest = stage.join("usr/lib");
            fs::create_dir_all(&dest).unwrap();
            if dest.join("firmware").exists() {
                let status = Command::new("cp")
                    .arg("-a")
                    .arg(format!("{}/.", fw.display()))
                    .arg(dest.join("firmware"))
                    .status()
                    .unwrap();
                assert!(status.success());
                fs::remove_dir_all(&fw).unwrap();
            } else {
                fs::rename(&fw, dest.join("firmware")).unwrap();
            }
        }
        let (m, _) = timed(
            &format!(
                "mksquashfs {} {} -all-root -noappend -no-progress -comp zstd -Xcompression-level 18 >/dev/null",
                sh_quote(&rootfs),
                sh_quote(&stage.join(format!("{n}.sqsh")))
            ),
            &work,
        );
        squash = squash.then(m);
        layers.push_str(&format!(
            "    - image: {n}.sqsh\n      metadata:\n        name: ext{n}\n"
        ));
    }
    fs::write(stage.join("extensions.yaml"), layers).unwrap();
    let fs_wall = start.elapsed().as_secs_f64() - squash.wall;
    let (cpio_early, _) = timed(
        "find kernel | LC_ALL=C sort | cpio -H newc --create --reproducible --quiet -R +0:+0 > ../early.cpio",
        &stage,
    );
    let (cpio_rest, _) = timed(
        "find . -mindepth 1 | sed 's|^\\./||' | grep -v '^kernel' | LC_ALL=C sort | \
         cpio -H newc --create --reproducible --quiet -R +0:+0 > ../ext.cpio",
        &stage,
    );
    let (zstd18, _) = timed("zstd -T0 -18 -c --quiet ext.cpio > ext.cpio.zst", &work);
    let (zstd1, _) = timed("zstd -T0 -1 -c --quiet ext.cpio > ext.cpio.zst1", &work);
    let (cat, _) = timed(
        &format!(
            "cat early.cpio {} ext.cpio.zst > initramfs.out",
            sh_quote(&inputs.base)
        ),
        &work,
    );
    let fs_step = Measure {
        wall: fs_wall,
        rss_kib: 0,
    };
    let cpio = cpio_early.then(cpio_rest);
    let total = fs_step.then(squash).then(cpio).then(zstd18).then(cat);
    let size = |p: &str| fs::metadata(work.join(p)).unwrap().len();
    let r = PeerResult {
        total,
        squash,
        cpio,
        zstd18,
        zstd18_bytes: size("ext.cpio.zst"),
        zstd1_bytes: size("ext.cpio.zst1"),
        zstd1,
        out_bytes: size("initramfs.out"),
    };
    let _ = fs::remove_dir_all(&work);
    r
}

fn ours(
    root: &Path,
    inputs: &Inputs,
    schematic: &Path,
    cache: &Path,
    name: &str,
) -> (Measure, String, u64) {
    let exe = std::env::current_exe().unwrap();
    let out = root.join(format!("{name}.out"));
    let mut cmd = format!(
        "{} --child-build {} {} {} {}",
        sh_quote(&exe),
        sh_quote(&inputs.base),
        sh_quote(cache),
        sh_quote(&root.join("work")),
        sh_quote(&out)
    );
    for (_, d) in &inputs.exts {
        cmd.push(' ');
        cmd.push_str(&sh_quote(d));
    }
    cmd.push(' ');
    cmd.push_str(&sh_quote(schematic));
    let (m, stdout) = timed(&cmd, root);
    let stats = stdout
        .lines()
        .find(|l| l.starts_with("STATS"))
        .unwrap_or_default()
        .to_string();
    let bytes = fs::metadata(&out).unwrap().len();
    let _ = fs::remove_file(&out);
    (m, stats, bytes)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--child-build") {
        child_build(&args[i + 1..]);
        return;
    }
    for tool in ["mksquashfs", "cpio", "zstd", "/usr/bin/time"] {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            eprintln!("{tool} is missing: apt-get install -y squashfs-tools cpio zstd time");
            return;
        }
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let tmp = tempfile::Builder::new()
        .prefix("bootfactory-bench-initramfs")
        .tempdir()
        .unwrap();
    let root = tmp.path();
    let inputs = prepare(root);

    let base_len = fs::metadata(&inputs.base).unwrap().len();
    let base_raw = {
        let mut d =
            zstd::stream::read::Decoder::new(fs::File::open(&inputs.base).unwrap()).unwrap();
        std::io::copy(&mut d, &mut std::io::sink()).unwrap()
    };
    println!("inputs (Talos {VERSION}, Realistic fixture, amd64):");
    println!(
        "  base initramfs.xz: {:.1} MB (decompressed {:.1} MB)",
        base_len as f64 / 1e6,
        base_raw as f64 / 1e6
    );
    let mut total = 0;
    for (name, dir) in &inputs.exts {
        let b = dir_bytes(&dir.join("rootfs"));
        total += b;
        println!("  {name:<18} {:>8.2} MB raw", b as f64 / 1e6);
    }
    println!("  extensions total   {:>8.2} MB raw", total as f64 / 1e6);
    println!(
        "  squashfs zstd level {} (peer 18), outer zstd level {} (peer -T0 -18), {} core(s)",
        initramfs::SQUASHFS_ZSTD_LEVEL,
        initramfs::CPIO_ZSTD_LEVEL,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    let mut rows: BTreeMap<&str, Vec<Measure>> = BTreeMap::new();
    for run in 1..=runs {
        let cold_schematic = schematic_ext(root, &format!("cold{run}"));
        let warm_schematic = schematic_ext(root, &format!("warm{run}"));
        let p = peer(root, &inputs, &cold_schematic);
        let cache = root.join(format!("cache{run}"));
        let (cold, cold_stats, cold_bytes) = ours(root, &inputs, &cold_schematic, &cache, "cold");
        let (warm, warm_stats, warm_bytes) = ours(root, &inputs, &warm_schematic, &cache, "warm");
        let _ = fs::remove_dir_all(&cache);
        println!("\nrun {run}/{runs}:");
        println!(
            "  peer: {:.2} s, {} MiB peak (mksquashfs {:.2} s, cpio {:.2} s, zstd -T0 -18 {:.2} s); output {:.1} MB",
            p.total.wall,
            p.total.rss_kib / 1024,
            p.squash.wall,
            p.cpio.wall,
            p.zstd18.wall,
            p.out_bytes as f64 / 1e6
        );
        println!(
            "  outer zstd alone: -18 {:.2} s → {:.2} MB; -1 {:.2} s → {:.2} MB",
            p.zstd18.wall,
            p.zstd18_bytes as f64 / 1e6,
            p.zstd1.wall,
            p.zstd1_bytes as f64 / 1e6
        );
        println!(
            "  cold: {:.2} s, {} MiB peak; output {:.1} MB; {cold_stats}",
            cold.wall,
            cold.rss_kib / 1024,
            cold_bytes as f64 / 1e6
        );
        println!(
            "  warm: {:.2} s, {} MiB peak; output {:.1} MB; {warm_stats}",
            warm.wall,
            warm.rss_kib / 1024,
            warm_bytes as f64 / 1e6
        );
        rows.entry("1 peer (mksquashfs -18, cpio, zstd -T0 -18)")
            .or_default()
            .push(p.total);
        rows.entry("2 bootfactory cold").or_default().push(cold);
        rows.entry("3 bootfactory warm").or_default().push(warm);
        rows.entry("peer: outer zstd -T0 -18 alone")
            .or_default()
            .push(p.zstd18);
    }

    let peer_wall = median(
        &rows["1 peer (mksquashfs -18, cpio, zstd -T0 -18)"]
            .iter()
            .map(|m| m.wall)
            .collect::<Vec<_>>(),
    );
    println!("\nmedian of {runs} run(s):");
    println!("| pipeline | wall (s) | × peer | peak RSS (MiB) |");
    println!("|---|---:|---:|---:|");
    for (name, ms) in &rows {
        let wall = median(&ms.iter().map(|m| m.wall).collect::<Vec<_>>());
        let rss = median(&ms.iter().map(|m| m.rss_kib as f64).collect::<Vec<_>>()) / 1024.0;
        println!(
            "| {} | {wall:.2} | {:.3} | {rss:.0} |",
            &name[..],
            wall / peer_wall
        );
    }
    println!("targets: cold ≤ 0.5× peer with peak RSS ≤ 256 MiB; warm ≤ 0.05× peer");
}
