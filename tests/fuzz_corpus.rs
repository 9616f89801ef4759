//! The fuzz corpora on the stable toolchain: every committed seed and regression input of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes through the same property
//! check the cargo-fuzz target runs (`bootfactory::fuzzing`), so `cargo test` keeps the corpus
//! passing without nightly or libFuzzer.
//!
//! `cargo test --test fuzz_corpus -- --ignored regenerate_seed_corpus` rewrites the generated
//! seeds (`gen-*` files) from the crate's own writers and the schematic vectors.

use std::fs;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use bootfactory::formats::cpio::{CpioWriter, Metadata};
use bootfactory::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn every_fuzz_target_has_a_check_and_a_seed_corpus() {
    let mut on_disk: Vec<String> = files_in(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "fuzz/fuzz_targets and fuzzing::TARGETS differ"
    );
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in &listed {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} missing from fuzz/Cargo.toml"
        );
        let seeds = files_in(&fuzz_dir().join("corpus").join(name));
        assert!(!seeds.is_empty(), "no seed corpus for {name}");
        let bytes: u64 = seeds.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
        assert!(
            bytes <= 100 * 1024,
            "{name}: seed corpus is {bytes} bytes (keep it small)"
        );
    }
}

#[test]
fn corpus_and_regressions_pass_their_checks() {
    // The checks report violations by panicking; collect them all instead of stopping early.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, check) in TARGETS {
        for sub in ["corpus", "regressions"] {
            for file in files_in(&fuzz_dir().join(sub).join(name)) {
                let data = fs::read(&file).unwrap();
                count += 1;
                if let Err(e) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures.push(format!("{}: {msg}", file.display()));
                }
            }
        }
    }
    std::panic::set_hook(hook);
    assert!(count > 0);
    assert!(
        failures.is_empty(),
        "{} of {count} inputs fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Seed generation (run by hand; the output is committed).

struct Seeds {
    dir: PathBuf,
}

impl Seeds {
    fn new(target: &str) -> Seeds {
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).unwrap();
        for old in files_in(&dir) {
            if old
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("gen-")
            {
                fs::remove_file(old).unwrap();
            }
        }
        Seeds { dir }
    }

    fn put(&self, name: &str, data: impl AsRef<[u8]>) {
        fs::write(self.dir.join(format!("gen-{name}")), data).unwrap();
    }
}

fn schematic_seeds() {
    let s = Seeds::new("schematic_roundtrip");
    s.put(
        "example.yaml",
        fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("schematics/example.yaml")).unwrap(),
    );
    let vectors: serde_json::Value = serde_json::from_slice(
        &fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/schematic-ids.json"))
            .unwrap(),
    )
    .unwrap();
    // Every 60th vector that the current parser round-trips: a spread over the vector
    // families (quoting, floats, overlays, merge keys, errors) without the known failures.
    let mut n = 0;
    for (i, v) in vectors.as_array().unwrap().iter().enumerate() {
        let input = v["input"].as_str().unwrap();
        if i % 60 != 0 || input.len() > 2048 {
            continue;
        }
        let ok = catch_unwind(|| bootfactory::fuzzing::schematic::check(input.as_bytes())).is_ok();
        if ok {
            s.put(&format!("vector-{i:04}.yaml"), input);
            n += 1;
        }
    }
    assert!(n > 20);
}

fn asset_path_seeds() {
    let s = Seeds::new("asset_path");
    let paths = [
        ("v1.11.6", "kernel-amd64"),
        ("v1.11.6", "initramfs-arm64.xz"),
        ("v1.11.6", "cmdline-metal-amd64"),
        ("1.10.0", "cmdline-digital-ocean-arm64-secureboot"),
        ("v1.11.6", "metal-amd64.iso"),
        ("v1.11.6", "metal-amd64-secureboot-uki.efi"),
        ("v1.11.6", "installer-arm64-secureboot.tar"),
        ("v1.11.6", "aws-installer-amd64.tar"),
        ("v1.11.6", "metal-amd64.raw.xz"),
        ("v1.11.6", "azure-amd64.vhd.xz"),
        ("v1.11.6", "exoscale-arm64.qcow2.tar.gz"),
        ("v1.11.6", "nocloud-amd64.raw.zst"),
        ("v1.11.6", "vmware-amd64.ova"),
        ("v1.6.7", "metal-rpi_generic-arm64.raw.xz"),
        ("v1.12.0-beta.1+build.5", "metal-x86_64.raw.gz"),
        ("v1.11.6", "kernel-i386"),
        ("v1.11.6", "metal-amd64.raw.tar"),
    ];
    for (i, (v, p)) in paths.iter().enumerate() {
        s.put(&format!("{i:02}"), format!("{v}\n{p}"));
    }
}

fn dhcp_seeds() {
    use bootfactory::dhcp::testkit::PxeRequest;
    use std::net::Ipv4Addr;
    let s = Seeds::new("dhcp_request");
    let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    let mut reqs = vec![
        ("bios-discover", PxeRequest::discover(mac, 0)),
        ("efi-x64-discover", PxeRequest::discover(mac, 7)),
        ("efi-arm64-discover", PxeRequest::discover(mac, 11)),
        ("http-boot-discover", PxeRequest::discover(mac, 16)),
        ("ia32-discover", PxeRequest::discover(mac, 6)),
        (
            "proxy-request",
            PxeRequest::proxy_request(mac, 9, Ipv4Addr::new(192, 0, 2, 50)),
        ),
        (
            "ipxe-http-https",
            PxeRequest::ipxe_discover(mac, 7, &[0x13, 0x14]),
        ),
        ("ipxe-no-features", PxeRequest::ipxe_discover(mac, 0, &[])),
    ];
    let mut relayed = PxeRequest::discover(mac, 7);
    relayed.giaddr = Ipv4Addr::new(192, 0, 2, 1);
    relayed.uuid = Some([0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    reqs.push(("relayed-with-uuid", relayed));
    let mut inform = PxeRequest::proxy_request(mac, 7, Ipv4Addr::new(192, 0, 2, 51));
    inform.msg_type = 8;
    inform.user_class = Some(b"\x04iPXE\x03foo".to_vec());
    reqs.push(("inform-rfc3004-user-class", inform));
    for (name, r) in &reqs {
        s.put(name, r.encode());
    }
    // Option overload (52 = 3): the vendor class lives in `file`, the architecture in `sname`.
    let mut b = PxeRequest::discover(mac, 7).encode();
    b.truncate(240);
    b[44..108].fill(0);
    b[108..236].fill(0);
    b[108..120].copy_from_slice(&[
        60, 9, b'P', b'X', b'E', b'C', b'l', b'i', b'e', b'n', b't', 255,
    ]);
    b[44..49].copy_from_slice(&[93, 2, 0, 7, 255]);
    b.extend_from_slice(&[53, 1, 1, 52, 1, 3, 255]);
    s.put("overload", b);
}

fn tftp_seeds() {
    let s = Seeds::new("tftp_request");
    let names = [
        "ipxe.efi",
        "/ipxe.efi",
        "pxelinux.cfg/default",
        "inside-link",
        "abs-link",
        "rel-link",
        "dir-link/secret",
        "../outside/secret",
        "//etc/passwd",
        "%2e%2e/secret",
        "C:\\boot.ini",
        "a/./b",
    ];
    for (i, n) in names.iter().enumerate() {
        let mut pkt = vec![0, 1];
        pkt.extend_from_slice(n.as_bytes());
        pkt.extend_from_slice(b"\0octet\0blksize\x001468\0tsize\x000\0");
        s.put(&format!("{i:02}"), pkt);
    }
    // The rest of what a client sends: every option, modes, padding, ACK, ERROR, a WRQ.
    let others: [&[u8]; 8] = [
        b"\0\x01ipxe.efi\0NetASCII\0BLKSIZE\x0065464\0timeout\x00255\0windowsize\x0016\0tsize\x000\0",
        b"\0\x01ipxe.efi\0octet\0blksize\x001468\0\0\0\0",
        b"\0\x01ipxe.efi\0mail\0blksize\x007\0windowsize\x000\0",
        b"\0\x02ipxe.efi\0octet\0tsize\x0099\0",
        b"\0\x04\xff\xff",
        b"\0\x05\0\x08User aborted the transfer\0",
        b"\0\x03\0\x01data",
        b"\0\x06blksize\x001468\0",
    ];
    for (i, pkt) in others.iter().enumerate() {
        s.put(&format!("{:02}", names.len() + i), pkt);
    }
}

fn oci_seeds() {
    let s = Seeds::new("oci_manifest");
    let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1234,"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1234,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}},"annotations":{{"a":"b"}}}}]}}"#,
        d('a'),
        d('b')
    );
    let image = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":7}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"{}","size":42}},{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}","size":1,"urls":["https://example.org/x"]}}],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":3}},"artifactType":"application/example"}}"#,
        d('c'),
        d('d'),
        d('e'),
        d('f')
    );
    let docker = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":7}},"layers":[]}}"#,
        d('1')
    );
    let list = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{}","size":9}}]}}"#,
        d('2')
    );
    for (i, body) in [index, image, docker, list].iter().enumerate() {
        for hint in 0..3u8 {
            let mut b = vec![hint * 3 + (i as u8 % 3)];
            b.extend_from_slice(body.as_bytes());
            s.put(&format!("{i}-{hint}.json"), b);
        }
    }
    s.put("schema1", b"\x00{\"schemaVersion\":1,\"name\":\"x\"}");

    let s = Seeds::new("image_reference");
    let refs = [
        "ghcr.io/siderolabs/imager:v1.11.6",
        "ghcr.io/siderolabs/imager@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "busybox",
        "library/alpine:3.20",
        "localhost:5000/a/b-c__d.e:tag_1",
        "[::1]:5000/x@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "factory.talos.dev/installer/376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba:v1.11.6",
        "v1.11.6",
        "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "ghcr.io/../etc:latest",
    ];
    for (i, r) in refs.iter().enumerate() {
        s.put(&format!("{i:02}"), r);
    }
}

fn cpio_archive(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut w = CpioWriter::new(Vec::new());
    for (name, kind, data) in entries {
        let meta = Metadata::new(0o644).mtime(1_700_000_000);
        match *kind {
            0 => w.add_dir(name, &Metadata::new(0o755)).unwrap(),
            1 => w.add_file(name, &meta, data).unwrap(),
            2 => w
                .add_symlink(name, &meta, std::str::from_utf8(data).unwrap())
                .unwrap(),
            _ => w.add_device(name, &meta, false, 5, 1).unwrap(),
        }
    }
    w.finish().unwrap()
}

fn cpio_seeds() {
    let s = Seeds::new("cpio_reader");
    let early = cpio_archive(&[
        ("kernel", 0, b""),
        ("kernel/x86", 0, b""),
        ("kernel/x86/microcode", 0, b""),
        ("kernel/x86/microcode/GenuineIntel.bin", 1, b"ucode"),
    ]);
    let main = cpio_archive(&[
        ("init", 1, b"#!/bin/sh\n"),
        ("dev", 0, b""),
        ("dev/console", 3, b""),
        ("bin", 0, b""),
        ("bin/sh", 2, b"busybox"),
    ]);
    s.put("early.cpio", &early);
    s.put("main.cpio", &main);
    let mut both = early.clone();
    both.extend_from_slice(&main);
    s.put("concatenated.cpio", both);
    let mut crc = main.clone();
    crc[5] = b'2';
    s.put("crc-variant.cpio", crc);
    s.put("truncated.cpio", &main[..200]);
}

fn tar_layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

fn tar_header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h
}

fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar_header(kind, data.len() as u64, 0o755);
    // Raw names (no normalisation), so hostile `../` entries stay hostile.
    let name = path.as_bytes();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    if !link.is_empty() {
        h.set_link_name(link).unwrap();
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn layer_break() -> Vec<u8> {
    let mut block = vec![0u8; 512];
    block[..bootfactory::fuzzing::layer_tar::LAYER_BREAK.len()]
        .copy_from_slice(bootfactory::fuzzing::layer_tar::LAYER_BREAK);
    block
}

fn layer_seeds() {
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let s = Seeds::new("layer_tar");
    let imager = tar_layer(|b| {
        add(b, "usr/", Directory, "", b"");
        add(b, "usr/install/", Directory, "", b"");
        add(b, "usr/install/amd64/", Directory, "", b"");
        add(b, "usr/install/amd64/vmlinuz", Regular, "", b"kernel");
        add(
            b,
            "usr/install/amd64/initramfs.xz",
            Regular,
            "",
            b"initramfs",
        );
        add(
            b,
            "usr/install/arm64/vmlinuz",
            Link,
            "usr/install/amd64/vmlinuz",
            b"",
        );
    });
    s.put("imager.tar", &imager);
    let upper = tar_layer(|b| {
        add(b, "usr/install/amd64/.wh.initramfs.xz", Regular, "", b"");
        add(b, "usr/install/.wh..wh..opq", Regular, "", b"");
        add(b, "usr/install/amd64/vmlinuz", Regular, "", b"newer");
    });
    let mut two = imager.clone();
    two.extend(layer_break());
    two.extend(upper);
    s.put("two-layers-whiteouts.tar", two);
    s.put(
        "escape-dotdot.tar",
        tar_layer(|b| add(b, "../outside/evil", Regular, "", b"x")),
    );
    s.put(
        "escape-symlink-parent.tar",
        tar_layer(|b| {
            add(b, "a", Symlink, "../outside", b"");
            add(b, "a/evil", Regular, "", b"x");
        }),
    );
    let plant = tar_layer(|b| add(b, "usr", Symlink, "../outside/dir", b""));
    let through = tar_layer(|b| add(b, "usr/file", Regular, "", b"overwritten"));
    let mut cross = plant;
    cross.extend(layer_break());
    cross.extend(through);
    s.put("escape-across-layers.tar", cross);
    s.put(
        "whiteout-through-symlink.tar",
        tar_layer(|b| {
            add(b, "w", Symlink, "../outside/dir", b"");
            add(b, "w/.wh.file", Regular, "", b"");
            add(b, "w/.wh..wh..opq", Regular, "", b"");
        }),
    );
}

fn squashfs_image(build: impl FnOnce(&mut backhand::FilesystemWriter)) -> Vec<u8> {
    let mut fs = backhand::FilesystemWriter::default();
    fs.set_time(0);
    fs.set_no_padding();
    // Uncompressed metadata and data: names and inodes are plain bytes the fuzzer can mutate.
    fs.set_compressor(
        backhand::FilesystemCompressor::new(backhand::compression::Compressor::Uncompressed, None)
            .unwrap(),
    );
    build(&mut fs);
    let mut out = std::io::Cursor::new(Vec::new());
    fs.write(&mut out).unwrap();
    out.into_inner()
}

fn squashfs_seeds() -> Vec<u8> {
    use backhand::NodeHeader;
    let s = Seeds::new("squashfs_extract");
    let h = NodeHeader::new(0o755, 0, 0, 0);
    let modules = squashfs_image(|fs| {
        fs.push_dir_all("usr/lib/modules/6.12.0-talos/kernel", h)
            .unwrap();
        fs.push_file(
            std::io::Cursor::new(b"kernel/a.ko:\n".to_vec()),
            "usr/lib/modules/6.12.0-talos/modules.dep",
            h,
        )
        .unwrap();
        fs.push_file(
            std::io::Cursor::new(vec![0x7f; 300]),
            "usr/lib/modules/6.12.0-talos/kernel/a.ko",
            h,
        )
        .unwrap();
        fs.push_symlink("../../lib", "usr/lib/modules/6.12.0-talos/build", h)
            .unwrap();
    });
    s.put("modules.sqsh", &modules);
    s.put(
        "symlinks-out.sqsh",
        squashfs_image(|fs| {
            fs.push_dir_all("usr/lib", h).unwrap();
            fs.push_symlink("../../outside/dir", "usr/lib/modules", h)
                .unwrap();
            fs.push_symlink("/etc", "usr/etc", h).unwrap();
        }),
    );
    // Two directory entries with the same name, a symlink out and a directory with a file:
    // written as `zzlnk` and `zzdir`, then the symlink's name bytes are patched to `zzdir`.
    let mut dup = squashfs_image(|fs| {
        fs.push_dir_all("usr/lib/modules/zzdir", h).unwrap();
        fs.push_file(
            std::io::Cursor::new(b"x".to_vec()),
            "usr/lib/modules/zzdir/secret",
            h,
        )
        .unwrap();
        fs.push_symlink("../../../../outside", "usr/lib/modules/zzlnk", h)
            .unwrap();
    });
    let at = dup.windows(5).position(|w| w == b"zzlnk").unwrap();
    dup[at..at + 5].copy_from_slice(b"zzdir");
    s.put("duplicate-name-symlink.sqsh", &dup);
    modules
}

fn initramfs_seeds(sqsh: &[u8]) {
    let s = Seeds::new("initramfs_parse");
    let early = cpio_archive(&[
        ("kernel", 0, b""),
        ("kernel/x86/microcode/AuthenticAMD.bin", 1, b"ucode"),
    ]);
    let yaml = b"layers:\n    - image: 0.sqsh\n      metadata:\n        name: gvisor\n        version: 20250505.0\n";
    let main = cpio_archive(&[("extensions.yaml", 1, yaml), ("0.sqsh", 1, sqsh)]);
    let zstd_main = zstd::encode_all(&main[..], 3).unwrap();
    let base = zstd::encode_all(&cpio_archive(&[("init", 1, b"x")])[..], 3).unwrap();
    let mut all = early.clone();
    all.extend_from_slice(&base);
    all.extend_from_slice(&[0; 4]);
    all.extend_from_slice(&zstd_main);
    s.put("early-base-extensions.img", &all);
    s.put("plain.cpio", &main);
    s.put("zstd-only.img", &base);
    let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
    skippable.extend_from_slice(&base);
    s.put("skippable-frame.img", skippable);
}

fn extension_manifest_seeds() {
    let s = Seeds::new("extension_manifest");
    let docs = [
        "version: v1alpha1\nmetadata:\n  name: gvisor\n  version: 20250505.0\n  author: Sidero Labs\n  description: |\n    This system extension provides gVisor.\n  compatibility:\n    talos:\n      version: \">= v1.11.0\"\n",
        "version: v1alpha1\nmetadata:\n  name: i915\n  version: 20250708-v1.11.0\n  author: Sidero Labs\n  description: Intel i915 firmware\n  compatibility:\n    talos:\n      version: '>= v1.11.0'\n  extraInfo: 'x: y'\n",
        "version: v1alpha1\nmetadata: {name: 1, version: true, author: ~, description: 1.50}\n",
        "version: v1alpha1\nmetadata:\n  name: \" lead\"\n  version: \"a\\tb\"\n",
    ];
    for (i, d) in docs.iter().enumerate() {
        s.put(&format!("{i}.yaml"), d);
    }
}

#[test]
#[ignore = "rewrites fuzz/corpus/*/gen-*; run by hand"]
fn regenerate_seed_corpus() {
    schematic_seeds();
    asset_path_seeds();
    dhcp_seeds();
    tftp_seeds();
    oci_seeds();
    cpio_seeds();
    layer_seeds();
    let sqsh = squashfs_seeds();
    initramfs_seeds(&sqsh);
    extension_manifest_seeds();
    std::io::stdout().flush().unwrap();
}
