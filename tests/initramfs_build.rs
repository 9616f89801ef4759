//! Builds initramfs images with extensions from the synthetic Talos release (Small profile) and
//! checks them the way the factory's integration test (`assertInitramfs`) does, with
//! `bootfactory::factory::initramfs::parse_initramfs`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bootfactory::factory::initramfs::{
    ArchiveCompression, BuildStats, Compression, ExtensionTree, InitramfsError, InitramfsOptions,
    ParsedInitramfs, SquashfsCache, build_initramfs, depmod_available, parse_initramfs,
    write_schematic_extension,
};
use bootfactory::fixture::{BAD_EXTENSIONS, FixtureOptions, FixtureRelease, write_release};
use bootfactory::oci::ImageCatalog;
use bootfactory::oci::bundle::{self, NoProgress};
use bootfactory::oci::flatten::{flatten_image, platform_manifest};
use bootfactory::store::Store;

const MTIME: u32 = 1_559_424_892;
static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    rt: tokio::runtime::Runtime,
    catalog: ImageCatalog,
    rel: FixtureRelease,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let layout = root.join("layout");
    let rel = write_release(&layout, &FixtureOptions::default()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = Store::open(&root.join("store")).unwrap();
    let catalog = ImageCatalog::new(store).unwrap();
    rt.block_on(bundle::import(&catalog, &layout, None, &NoProgress))
        .unwrap();
    Env {
        _tmp: tmp,
        root,
        rt,
        catalog,
        rel,
    }
}

impl Env {
    /// Flattens the amd64 image of extension `name` for Talos `version` into a new directory.
    fn extension(&self, version: &str, name: &str) -> ExtensionTree {
        let info = &self.rel.version(version).unwrap().extensions[name];
        let manifest = self
            .rt
            .block_on(platform_manifest(&self.catalog, &info.digest, "amd64"))
            .unwrap()
            .unwrap();
        let dir = self.root.join("ext").join(version).join(format!(
            "{name}-{}",
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        self.rt
            .block_on(flatten_image(&self.catalog, &manifest, &dir, None))
            .unwrap();
        ExtensionTree {
            dir,
            cache_key: Some(manifest.to_string()),
        }
    }

    /// The amd64 base `initramfs.xz` of Talos `version`.
    fn base(&self, version: &str) -> PathBuf {
        let v = self.rel.version(version).unwrap();
        let index = self.rel.image(&v.imager).unwrap().digest;
        let manifest = self
            .rt
            .block_on(platform_manifest(&self.catalog, &index, "amd64"))
            .unwrap()
            .unwrap();
        let dir = self.root.join("imager").join(version);
        if !dir.exists() {
            self.rt
                .block_on(flatten_image(
                    &self.catalog,
                    &manifest,
                    &dir,
                    Some(Path::new("usr/install/amd64")),
                ))
                .unwrap();
        }
        dir.join("usr/install/amd64/initramfs.xz")
    }

    fn kernel_version(&self, version: &str) -> String {
        self.rel.version(version).unwrap().kernel_version.clone()
    }

    /// The virtual schematic extension for a schematic listing `official`.
    fn schematic(&self, official: &[&str], tag: &str) -> (ExtensionTree, String) {
        let mut yaml =
            String::from("customization:\n  systemExtensions:\n    officialExtensions:\n");
        for o in official {
            yaml.push_str(&format!("      - siderolabs/{o}\n"));
        }
        yaml.push_str(&format!("  extraKernelArgs:\n    - {tag}\n"));
        let s = bootfactory::schematic::parse(yaml.as_bytes()).unwrap();
        let id = s.id().to_string();
        let dir = self.root.join("schematic").join(&id);
        write_schematic_extension(
            &dir,
            &id,
            &s.canonical_yaml(),
            "https://factory.example/",
            true,
        )
        .unwrap();
        (
            ExtensionTree {
                dir,
                cache_key: None,
            },
            id,
        )
    }
}

fn opts(version: &str) -> InitramfsOptions {
    let new = version != "v1.8.4";
    InitramfsOptions {
        talos_version: if new { (1, 11, 6) } else { (1, 8, 4) },
        kernel_modules_path: if new {
            "/usr/lib/modules"
        } else {
            "/lib/modules"
        }
        .into(),
        firmware_path: if new {
            "/usr/lib/firmware"
        } else {
            "/lib/firmware"
        }
        .into(),
        squashfs_compression: Compression::Zstd,
        cpio_compression: Compression::Zstd,
        mtime: MTIME,
    }
}

/// A cache keeping copies in a directory.
struct DirCache {
    dir: PathBuf,
    puts: Mutex<Vec<String>>,
}

impl SquashfsCache for DirCache {
    fn get(&self, key: &str) -> Option<PathBuf> {
        let p = self.dir.join(key);
        p.exists().then_some(p)
    }

    fn put(&self, key: &str, squashfs: &Path) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        fs::copy(squashfs, self.dir.join(key))?;
        self.puts.lock().unwrap().push(key.to_string());
        Ok(())
    }
}

fn build(
    env: &Env,
    version: &str,
    exts: &[ExtensionTree],
    cache: Option<&dyn SquashfsCache>,
    name: &str,
) -> Result<(PathBuf, BuildStats), InitramfsError> {
    let out = env.root.join(format!("{name}.initramfs"));
    let work = env.root.join("work");
    let mut file = std::io::BufWriter::new(fs::File::create(&out).unwrap());
    let stats = build_initramfs(
        &env.base(version),
        exts,
        &opts(version),
        cache,
        &work,
        &mut file,
    )?;
    std::io::Write::flush(&mut file).unwrap();
    // The work directory is left empty.
    assert_eq!(
        fs::read_dir(&work).unwrap().count(),
        0,
        "work dir not cleaned"
    );
    Ok((out, stats))
}

/// Every path of every `.sqsh` of the last archive.
fn all_sqsh_paths(p: &ParsedInitramfs) -> BTreeMap<String, Vec<String>> {
    let last = p.last_archive().unwrap();
    last.entries
        .iter()
        .filter(|e| e.ends_with(".sqsh"))
        .map(|e| (e.clone(), p.squashfs_paths(e).unwrap()))
        .collect()
}

fn check_release_build(version: &str) {
    let env = env();
    let kver = env.kernel_version(version);
    let fw = if version == "v1.8.4" {
        "lib/firmware"
    } else {
        "usr/lib/firmware"
    };
    let modules = if version == "v1.8.4" {
        "/lib/modules"
    } else {
        "/usr/lib/modules"
    };
    let with_modules = have_depmod();
    let mut names = vec![
        "amd-ucode",
        "intel-ucode",
        "i915",
        "gasket-driver",
        "gvisor",
    ];
    if !with_modules {
        eprintln!(
            "checking that gasket-driver is refused with a clear error; skipping the modules.dep checks"
        );
        let exts: Vec<_> = ["gasket-driver"]
            .iter()
            .map(|n| env.extension(version, n))
            .collect();
        let err = build(&env, version, &exts, None, "no-depmod").unwrap_err();
        assert!(matches!(err, InitramfsError::DepmodMissing), "{err}");
        assert!(err.to_string().contains("kmod"), "{err}");
        names.retain(|n| *n != "gasket-driver");
    }
    let mut exts: Vec<_> = names.iter().map(|n| env.extension(version, n)).collect();
    let (schematic, id) = env.schematic(&names, "a");
    exts.push(schematic);
    let (out, stats) = build(&env, version, &exts, None, "release").unwrap();
    let p = parse_initramfs(&out).unwrap();

    // Early microcode archive first, then the base bytes verbatim, then one zstd archive.
    assert_eq!(p.archives.len(), 3, "{:#?}", p.archives);
    let early = p.early_entries().unwrap();
    assert_eq!(
        early,
        [
            "kernel",
            "kernel/x86",
            "kernel/x86/microcode",
            "kernel/x86/microcode/AuthenticAMD.bin",
            "kernel/x86/microcode/GenuineIntel.bin"
        ]
    );
    let amd = p
        .read_entry(0, "kernel/x86/microcode/AuthenticAMD.bin")
        .unwrap();
    let amd_src = exts[0]
        .dir
        .join(format!("rootfs/{fw}/amd-ucode/microcode_amd_fam17h.bin"));
    assert_eq!(amd, fs::read(amd_src).unwrap());
    let intel = p
        .read_entry(0, "kernel/x86/microcode/GenuineIntel.bin")
        .unwrap();
    assert_eq!(
        intel,
        fs::read(
            exts[1]
                .dir
                .join(format!("rootfs/{fw}/intel-ucode/06-8e-09"))
        )
        .unwrap()
    );
    let base = fs::read(env.base(version)).unwrap();
    assert_eq!(p.archives[1].compression, ArchiveCompression::Zstd);
    assert_eq!(
        p.archive_bytes(1).unwrap(),
        base,
        "base initramfs not copied verbatim"
    );
    // The early archive is NUL-padded to 512 bytes, and the base follows right after it.
    assert_eq!(stats.early_cpio_bytes % 512, 0);
    assert_eq!(p.archives[1].offset, stats.early_cpio_bytes);
    assert_eq!(p.archives[2].compression, ArchiveCompression::Zstd);
    assert_eq!(stats.base_bytes, base.len() as u64);

    // Layers: extensions in directory order, the schematic, modules.dep last.
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.push("schematic".into());
    if with_modules {
        want.push("modules.dep".into());
    }
    assert_eq!(p.layer_names(), want);
    assert_eq!(stats.layers, want);
    let schematic_layer = p.layers.iter().find(|l| l.name == "schematic").unwrap();
    assert_eq!(schematic_layer.version, id);
    let images: Vec<&str> = p.layers.iter().map(|l| l.image.as_str()).collect();
    let mut want_images: Vec<String> = (0..names.len() + 1).map(|i| format!("{i}.sqsh")).collect();
    if with_modules {
        want_images.push("modules.dep.sqsh".into());
    }
    assert_eq!(images, want_images);
    let last = p.last_archive().unwrap();
    let mut want_entries: Vec<String> = want_images
        .iter()
        .filter(|i| !i.starts_with("modules"))
        .cloned()
        .collect();
    want_entries.push("extensions.yaml".into());
    let tail: Vec<&str> = fw.split('/').collect();
    let fw_dirs: Vec<String> = (1..=tail.len()).map(|n| tail[..n].join("/")).collect();
    if version == "v1.8.4" {
        // `lib` sorts before `modules.dep.sqsh`.
        want_entries.extend(fw_dirs.iter().cloned());
        want_entries.extend(
            ["amd-ucode", "i915", "i915/x.bin", "intel-ucode"]
                .iter()
                .map(|e| format!("{fw}/{e}")),
        );
        if with_modules {
            want_entries.push("modules.dep.sqsh".into());
        }
    } else {
        if with_modules {
            want_entries.push("modules.dep.sqsh".into());
        }
        want_entries.extend(fw_dirs.iter().cloned());
        want_entries.extend(
            ["amd-ucode", "i915", "i915/x.bin", "intel-ucode"]
                .iter()
                .map(|e| format!("{fw}/{e}")),
        );
    }
    assert_eq!(last.entries, want_entries);

    // Firmware is in the initramfs, in no squashfs; the module is in gasket's squashfs.
    let sqsh = all_sqsh_paths(&p);
    for (image, paths) in &sqsh {
        assert!(
            !paths
                .iter()
                .any(|p| p.contains("firmware") || p.contains("ucode")),
            "{image}: {paths:?}"
        );
    }
    let gvisor_image = format!(
        "{}.sqsh",
        names.iter().position(|n| *n == "gvisor").unwrap()
    );
    assert!(sqsh[&gvisor_image].contains(&"/usr/local/bin/runsc".to_string()));
    let schematic_image = format!("{}.sqsh", names.len());
    assert!(sqsh[&schematic_image].contains(&format!("/usr/local/share/schematic/{id}")));
    let yaml = p.extensions_yaml.as_deref().unwrap();
    assert!(
        yaml.starts_with(
            "layers:\n    - image: 0.sqsh\n      metadata:\n        name: amd-ucode\n"
        ),
        "{yaml}"
    );
    assert!(
        yaml.contains("            talos:\n                version: '>= v1.5.0'\n"),
        "{yaml}"
    );

    if with_modules {
        let ko = format!("{modules}/{kver}/extras/gasket.ko");
        assert!(sqsh["3.sqsh"].contains(&ko), "{:?}", sqsh["3.sqsh"]);
        let dep = String::from_utf8(
            p.squashfs_file("modules.dep.sqsh", &format!("{modules}/{kver}/modules.dep"))
                .unwrap(),
        )
        .unwrap();
        assert!(
            dep.lines().any(|l| l.starts_with("extras/gasket.ko:")),
            "{dep}"
        );
        assert!(
            dep.contains("kernel/drivers/misc/fixture_dummy.ko:"),
            "{dep}"
        );
        assert!(
            sqsh["modules.dep.sqsh"]
                .iter()
                .all(|p| p.starts_with(modules) || modules.starts_with(p.as_str()) || p == "/")
        );
        let md = p.layers.last().unwrap();
        assert_eq!(md.version, kver);
        assert_eq!(stats.modules_kernel_version.as_deref(), Some(kver.as_str()));
    }

    external_tools_agree(&env, &p);

    // Same inputs, same bytes.
    let (again, _) = build(&env, version, &exts, None, "release-again").unwrap();
    assert!(
        fs::read(&out).unwrap() == fs::read(&again).unwrap(),
        "output is not reproducible"
    );
}

/// True if `tool` is on PATH. `tests/run-all.sh` sets `BOOTFACTORY_REQUIRE_TOOLS=1`, which
/// turns a missing tool into a failure; elsewhere the check is skipped with a message.
fn have(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        require_tools_unset(tool);
    }
    found
}

fn require_tools_unset(tool: &str) {
    assert!(
        std::env::var("BOOTFACTORY_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "{tool} is required (tests/run-all.sh installs it)"
    );
    eprintln!("skipping checks that need {tool}: it is not installed");
}

/// depmod (package kmod), found like the builder finds it (also in /usr/sbin).
fn have_depmod() -> bool {
    let found = depmod_available();
    if !found {
        require_tools_unset("depmod (apt-get install -y kmod)");
    }
    found
}

/// GNU cpio and unsquashfs read what we wrote (skipped when a tool is missing).
fn external_tools_agree(env: &Env, p: &ParsedInitramfs) {
    use std::process::Command;
    if !(have("cpio") && have("unsquashfs")) {
        return;
    }
    let dir = env.root.join("xcheck");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let early = dir.join("early.cpio");
    fs::write(&early, p.archive_bytes(0).unwrap()).unwrap();
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!("cpio -t < {}", early.display()))
        .output()
        .unwrap();
    assert!(listing.status.success());
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout)
            .lines()
            .collect::<Vec<_>>(),
        p.archives[0].entries
    );
    let last = dir.join("last.cpio");
    let compressed = p.archive_bytes(p.archives.len() - 1).unwrap();
    let mut plain = Vec::new();
    std::io::copy(
        &mut zstd::stream::read::Decoder::new(&compressed[..]).unwrap(),
        &mut plain,
    )
    .unwrap();
    fs::write(&last, plain).unwrap();
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!("cpio -t < {}", last.display()))
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout)
            .lines()
            .collect::<Vec<_>>(),
        p.last_archive().unwrap().entries
    );
    for image in p
        .last_archive()
        .unwrap()
        .entries
        .iter()
        .filter(|e| e.ends_with(".sqsh"))
    {
        let path = dir.join(image);
        fs::write(&path, p.read_entry(p.archives.len() - 1, image).unwrap()).unwrap();
        let out = Command::new("unsquashfs")
            .arg("-d")
            .arg(dir.join(format!("{image}.d")))
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "unsquashfs {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = Command::new("unsquashfs")
            .arg("-lls")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&listed.stdout);
        assert!(!text.contains("firmware"), "{image}: {text}");
        for line in text.lines().filter(|l| l.contains("squashfs-root/")) {
            assert!(
                line.contains(" root/root "),
                "{image}: not root-owned: {line}"
            );
        }
    }
}

#[test]
fn release_v1_11_6() {
    check_release_build("v1.11.6");
}

#[test]
fn release_v1_8_4() {
    check_release_build("v1.8.4");
}

#[test]
fn twelve_extensions_use_upstream_string_order() {
    let env = env();
    let names = [
        "amd-ucode",
        "fuse3",
        "gvisor",
        "i915",
        "intel-ucode",
        "iscsi-tools",
        "qemu-guest-agent",
        "tailscale",
        "util-linux-tools",
        "gvisor",
        "fuse3",
    ];
    let mut exts: Vec<_> = names.iter().map(|n| env.extension("v1.11.6", n)).collect();
    let (schematic, id) = env.schematic(&names, "twelve");
    exts.push(schematic);
    assert_eq!(exts.len(), 12);
    let (out, _) = build(&env, "v1.11.6", &exts, None, "twelve").unwrap();
    let p = parse_initramfs(&out).unwrap();
    let images: Vec<&str> = p.layers.iter().map(|l| l.image.as_str()).collect();
    assert_eq!(
        images,
        [
            "0.sqsh", "1.sqsh", "10.sqsh", "11.sqsh", "2.sqsh", "3.sqsh", "4.sqsh", "5.sqsh",
            "6.sqsh", "7.sqsh", "8.sqsh", "9.sqsh"
        ]
    );
    let order = [0, 1, 10, 11, 2, 3, 4, 5, 6, 7, 8, 9];
    let want: Vec<&str> = order
        .iter()
        .map(|&i| if i == 11 { "schematic" } else { names[i] })
        .collect();
    assert_eq!(p.layer_names(), want);
    assert_eq!(p.layers[3].version, id);
    let sqsh: Vec<&String> = p
        .last_archive()
        .unwrap()
        .entries
        .iter()
        .filter(|e| e.ends_with(".sqsh"))
        .collect();
    assert_eq!(sqsh, images);
}

#[test]
fn bad_extensions_are_rejected_by_name() {
    let env = env();
    for bad in BAD_EXTENSIONS {
        let exts = vec![
            env.extension("v1.11.6", "gvisor"),
            env.extension("v1.11.6", bad),
        ];
        let err = build(&env, "v1.11.6", &exts, None, bad).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, InitramfsError::Extension { .. }), "{text}");
        assert!(text.contains(bad), "{text}");
        match bad {
            "bad-constraint" => assert!(text.contains("< v1.0.0"), "{text}"),
            _ => assert!(text.contains("README.md"), "{text}"),
        }
        // Nothing was written for a rejected build.
        assert_eq!(
            fs::metadata(env.root.join(format!("{bad}.initramfs")))
                .unwrap()
                .len(),
            0
        );
    }
}

#[test]
fn warm_cache_reuses_squashfs_without_reading_extension_files() {
    let env = env();
    let version = "v1.11.6";
    let mut names = vec!["amd-ucode", "intel-ucode", "i915", "gvisor"];
    let with_modules = have_depmod();
    if with_modules {
        names.push("gasket-driver");
    }
    let cache = DirCache {
        dir: env.root.join("cache"),
        puts: Mutex::new(Vec::new()),
    };
    let mut exts: Vec<_> = names.iter().map(|n| env.extension(version, n)).collect();
    let (schematic, _) = env.schematic(&names, "first");
    exts.push(schematic);
    let (cold, stats) = build(&env, version, &exts, Some(&cache), "cold").unwrap();
    assert_eq!(
        (stats.cache_hits, stats.squashfs_built),
        (0, names.len() + 1)
    );
    assert_eq!(cache.puts.lock().unwrap().len(), names.len());

    // Remove every file of the extension trees except manifest.yaml and the rootfs directory.
    for e in &exts[..names.len()] {
        let rootfs = e.dir.join("rootfs");
        fs::remove_dir_all(&rootfs).unwrap();
        fs::create_dir(&rootfs).unwrap();
    }
    let (schematic, id2) = env.schematic(&names, "second");
    exts.pop();
    exts.push(schematic);
    let (warm, stats) = build(&env, version, &exts, Some(&cache), "warm").unwrap();
    assert_eq!((stats.cache_hits, stats.squashfs_built), (names.len(), 1));
    let (a, b) = (
        parse_initramfs(&cold).unwrap(),
        parse_initramfs(&warm).unwrap(),
    );
    assert_eq!(
        a.archive_bytes(0).unwrap(),
        b.archive_bytes(0).unwrap(),
        "microcode differs"
    );
    for i in 0..names.len() {
        let image = format!("{i}.sqsh");
        assert!(
            a.read_entry(2, &image).unwrap() == b.read_entry(2, &image).unwrap(),
            "{image} differs"
        );
    }
    assert_eq!(
        b.layers
            .iter()
            .find(|l| l.name == "schematic")
            .unwrap()
            .version,
        id2
    );
    assert_eq!(a.layer_names(), b.layer_names());
    assert!(
        b.last_archive()
            .unwrap()
            .entries
            .contains(&"usr/lib/firmware/i915/x.bin".to_string())
    );
    if with_modules {
        assert_eq!(
            a.read_entry(2, "modules.dep.sqsh").unwrap(),
            b.read_entry(2, "modules.dep.sqsh").unwrap()
        );
    }
}
