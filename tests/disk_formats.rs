//! Disk image conversions (`formats::disk`) on sparse raw files, read back by the real tools:
//! `zstd -d`, `xz -d`, `gzip -d` give the raw bytes again; `qemu-img info`, `compare` and
//! `check` accept the `.vhd` and `.qcow2` files and find the same disk; GNU tar extracts the
//! sparse `.tar` and writes the same archive itself; `qemu-img` reads the `.ova`'s
//! stream-optimized VMDK as the raw disk, `tar` lists and extracts the `.ova`, `sha256sum`
//! agrees with its manifest and Python's XML parser reads its OVF. Random extent maps
//! round-trip through every writer (proptest, read back in-process).

mod support;

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use bootfactory::formats::compress::Compression;
use bootfactory::formats::disk::{Container, Stats, convert, convert_in, raw_to_vhd_in_place};
use bootfactory::formats::ova::{Firmware, OvaOptions};
use bootfactory::formats::sparse::SparseReader;
use bootfactory::formats::vhd::VhdOptions;
use bootfactory::formats::vmdk::{self, VmdkOptions};
use proptest::prelude::*;
use support::tools::have;

const MIB: u64 = 1 << 20;

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes a sparse file of `size` bytes with `pieces` at their offsets.
fn sparse_file(path: &Path, size: u64, pieces: &[(u64, Vec<u8>)]) {
    let mut f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (off, bytes) in pieces {
        f.seek(SeekFrom::Start(*off)).unwrap();
        f.write_all(bytes).unwrap();
    }
}

/// A disk-like sparse raw file: a protective MBR and GPT head, a partition's worth of text
/// and noise, a block of written zeros, data repeated after a long hole (tempting
/// back-references across it), long holes, and a backup GPT at the very end.
fn disk_like(path: &Path, size: u64) -> Vec<(u64, Vec<u8>)> {
    let mut head = vec![0u8; 34 * 512];
    head[446..462].copy_from_slice(&[
        0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    head[510] = 0x55;
    head[511] = 0xAA;
    head[512..520].copy_from_slice(b"EFI PART");
    head[1024..1024 + 128].copy_from_slice(&noise(1, 128));
    let text: Vec<u8> =
        b"menuentry \"A - Talos v1.11.6\" { linux /A/vmlinuz talos.platform=metal }\n"
            .iter()
            .copied()
            .cycle()
            .take(3 * MIB as usize + 123)
            .collect();
    let pieces = vec![
        (0, head),
        (MIB, text.clone()),
        (5 * MIB + 4096, noise(2, 2 * MIB as usize)),
        (9 * MIB, vec![0u8; 256 * 1024]),
        (20 * MIB + 7, text[..100_000].to_vec()),
        (size - 33 * 512, noise(3, 33 * 512)),
    ];
    sparse_file(path, size, &pieces);
    pieces
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn convert_to(raw: &Path, container: Container, c: Compression, out: &Path) -> Stats {
    let f = File::create(out).unwrap();
    let stats = convert(raw, container, c, std::io::BufWriter::new(f)).unwrap();
    assert_eq!(fs::metadata(out).unwrap().len(), stats.output_size);
    stats
}

fn same_file(a: &Path, b: &Path) {
    run(Command::new("cmp").arg(a).arg(b));
}

#[test]
fn compressed_raw_images_decompress_to_the_raw_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    disk_like(&raw, 64 * MIB);
    let cases = [
        ("zstd", Compression::zstd_default(), ".zst"),
        (
            "zstd",
            Compression::Zstd {
                level: 12,
                threads: 2,
            },
            ".zst",
        ),
        ("xz", Compression::XZ_DEFAULT, ".xz"),
        ("gzip", Compression::GZIP_DEFAULT, ".gz"),
    ];
    for (tool, compression, suffix) in cases {
        assert_eq!(compression.suffix(), suffix);
        let out = dir.path().join(format!("disk.raw{suffix}"));
        let stats = convert_to(&raw, Container::Raw, compression, &out);
        assert_eq!(stats.raw_size, 64 * MIB);
        assert_eq!(stats.image_size, 64 * MIB);
        // Holes were not read (on a file system with SEEK_HOLE, which tmp is here).
        assert!(stats.data_read < 16 * MIB, "{stats:?}");
        // Long zero runs cost next to nothing.
        assert!(stats.output_size < 4 * MIB, "{compression:?}: {stats:?}");
        if !have(tool) {
            continue;
        }
        let back = dir.path().join("back.raw");
        let status = Command::new(tool)
            .args(["-d", "-c"])
            .arg(&out)
            .stdout(File::create(&back).unwrap())
            .status()
            .unwrap();
        assert!(status.success(), "{tool} -d {compression:?}");
        same_file(&raw, &back);
        if tool == "zstd" {
            // The frame says its content size and carries a checksum, as `zstd` writes.
            let info = run(Command::new("zstd").args(["-lv"]).arg(&out));
            assert!(info.contains("Check: XXH64"), "{info}");
            assert!(
                info.contains("67108864 B") || info.contains("64.00 MiB"),
                "{info}"
            );
        }
    }
}

#[test]
fn sparse_tar_gz_extracts_with_gnu_tar_to_the_raw_disk() {
    if !have("tar") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Many regions (more than the header's 4 and one extension block's 21), an odd size.
    let raw = dir.path().join("disk.raw");
    let size = 300 * MIB + 1000;
    let pieces: Vec<(u64, Vec<u8>)> = (0..40u64)
        .map(|i| (i * 7 * MIB + 4096 * i, noise(i, 5000 + 1000 * i as usize)))
        .collect();
    sparse_file(&raw, size, &pieces);
    for (compression, name) in [
        (Compression::GZIP_DEFAULT, "disk.tar.gz"),
        (Compression::None, "disk.tar"),
    ] {
        let out = dir.path().join(name);
        let stats = convert_to(&raw, Container::SparseTar, compression, &out);
        assert_eq!(stats.image_size % 10240, 0);
        assert!(stats.image_size < 2 * MIB, "{stats:?}");
        let listing = run(Command::new("tar").args(["-tvf"]).arg(&out));
        assert!(listing.contains("disk.raw"), "{listing}");
        assert!(listing.contains(&size.to_string()), "{listing}");
        let x = dir.path().join("x");
        fs::create_dir_all(&x).unwrap();
        run(Command::new("tar")
            .args(["-xf"])
            .arg(&out)
            .arg("-C")
            .arg(&x));
        same_file(&raw, &x.join("disk.raw"));
        fs::remove_dir_all(&x).unwrap();
    }
    // An all-hole disk and one over 8 GiB (base-256 sizes): listed with their size.
    for size in [5 * MIB, (9 << 30) + 512] {
        let raw = dir.path().join("big.raw");
        sparse_file(&raw, size, &[(size - 512, noise(7, 512))]);
        let out = dir.path().join("big.tar");
        convert_to(&raw, Container::SparseTar, Compression::None, &out);
        let listing = run(Command::new("tar").args(["-tvf"]).arg(&out));
        assert!(listing.contains(&size.to_string()), "{listing}");
    }
}

fn qemu_info(format: &str, path: &Path) -> serde_json::Value {
    serde_json::from_str(&run(Command::new("qemu-img")
        .args(["info", "--output=json", "-f", format])
        .arg(path)))
    .unwrap()
}

#[test]
fn vhd_is_what_qemu_img_reads_as_the_raw_disk() {
    let dir = tempfile::tempdir().unwrap();
    for size in [64 * MIB, 64 * MIB + 1000] {
        let raw = dir.path().join("disk.raw");
        disk_like(&raw, size);
        let vhd = dir.path().join("disk.vhd");
        let stats = convert_to(
            &raw,
            Container::Vhd(VhdOptions::default()),
            Compression::None,
            &vhd,
        );
        let disk = size.next_multiple_of(512);
        assert_eq!(stats.output_size, disk + 512);
        // The disk's bytes come first, unchanged.
        let mut head = vec![0u8; size as usize];
        File::open(&vhd).unwrap().read_exact(&mut head).unwrap();
        assert_eq!(head, fs::read(&raw).unwrap());
        // Reproducible: the same content gives the same file, UUID included.
        let again = dir.path().join("again.vhd");
        convert_to(
            &raw,
            Container::Vhd(VhdOptions::default()),
            Compression::None,
            &again,
        );
        same_file(&vhd, &again);
        if !have("qemu-img") {
            continue;
        }
        // A fixed VHD has no header at the start, so qemu-img probes it as raw: name the format.
        let info = qemu_info("vpc", &vhd);
        assert_eq!(info["format"], "vpc", "{info}");
        assert_eq!(info["virtual-size"], disk, "{info}");
        run(Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "vpc"])
            .arg(&raw)
            .arg(&vhd));
        // In place: the raw file becomes the same VHD and stays sparse.
        let in_place = dir.path().join("in-place.vhd");
        run(Command::new("cp")
            .args(["--sparse=always"])
            .arg(&raw)
            .arg(&in_place));
        let st = raw_to_vhd_in_place(&in_place, VhdOptions::default()).unwrap();
        assert_eq!(st.output_size, disk + 512);
        same_file(&vhd, &in_place);
        let du = run(Command::new("du").args(["-k"]).arg(&in_place));
        let kib: u64 = du.split_whitespace().next().unwrap().parse().unwrap();
        assert!(kib < 16 * 1024, "in-place VHD not sparse: {kib} KiB");
        // qemu-img's own conversion: the same footer apart from time, UUID and checksum.
        let theirs = dir.path().join("qemu.vhd");
        run(Command::new("qemu-img")
            .args([
                "convert",
                "-f",
                "raw",
                "-O",
                "vpc",
                "-o",
                "subformat=fixed,force_size",
            ])
            .arg(&raw)
            .arg(&theirs));
        let ours = fs::read(&vhd).unwrap();
        let theirs = fs::read(&theirs).unwrap();
        assert_eq!(ours.len(), theirs.len());
        let (of, tf) = (&ours[ours.len() - 512..], &theirs[theirs.len() - 512..]);
        assert_eq!(of[..24], tf[..24]);
        assert_eq!(of[28..64], tf[28..64]);
        assert_eq!(of[84..], tf[84..]);
    }
}

#[test]
fn qcow2_passes_qemu_img_check_and_compares_equal() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for size in [64 * MIB, 64 * MIB + 1000, 3 * MIB + 512] {
        let raw = dir.path().join("disk.raw");
        if size > 32 * MIB {
            disk_like(&raw, size);
        } else {
            sparse_file(
                &raw,
                size,
                &[(0, noise(9, 8192 * 3 + 5)), (size - 10, vec![7; 10])],
            );
        }
        let qcow = dir.path().join("disk.qcow2");
        let stats = convert_to(&raw, Container::Qcow2, Compression::None, &qcow);
        let info = qemu_info("qcow2", &qcow);
        assert_eq!(info["format"], "qcow2", "{info}");
        assert_eq!(info["cluster-size"], 8192, "{info}");
        assert_eq!(info["virtual-size"], size.next_multiple_of(512), "{info}");
        assert_eq!(info["format-specific"]["data"]["compat"], "1.1", "{info}");
        let check = run(Command::new("qemu-img")
            .args(["check", "--output=json"])
            .arg(&qcow));
        let check: serde_json::Value = serde_json::from_str(&check).unwrap();
        assert_eq!(check["check-errors"], 0, "{check}");
        assert!(
            check.get("leaks").is_none() && check.get("corruptions").is_none(),
            "{check}"
        );
        run(Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "qcow2"])
            .arg(&raw)
            .arg(&qcow));
        // As small as qemu-img's own conversion (it also leaves zero clusters out), within
        // the metadata's few clusters.
        let theirs = dir.path().join("qemu.qcow2");
        run(Command::new("qemu-img")
            .args([
                "convert",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-o",
                "cluster_size=8k",
            ])
            .arg(&raw)
            .arg(&theirs));
        let theirs_len = fs::metadata(&theirs).unwrap().len();
        assert!(
            stats.output_size <= theirs_len + 8 * 8192,
            "ours {} vs qemu-img {theirs_len}",
            stats.output_size
        );
        // Compressed qcow2 streams decompress to the same file.
        if have("zstd") {
            let zst = dir.path().join("disk.qcow2.zst");
            convert_to(&raw, Container::Qcow2, Compression::zstd_default(), &zst);
            let back = dir.path().join("back.qcow2");
            let status = Command::new("zstd")
                .args(["-d", "-q", "-f", "-o"])
                .arg(&back)
                .arg(&zst)
                .status()
                .unwrap();
            assert!(status.success());
            same_file(&qcow, &back);
        }
    }
}

#[test]
fn odd_inputs_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.raw");
    for container in [
        Container::Raw,
        Container::Vhd(VhdOptions::default()),
        Container::Qcow2,
    ] {
        assert!(convert(&missing, container, Compression::None, Vec::new()).is_err());
        // A directory opens but cannot be read.
        assert!(convert(dir.path(), container, Compression::GZIP_DEFAULT, Vec::new()).is_err());
    }
    assert!(
        convert(
            &missing,
            Container::Raw,
            Compression::Xz { preset: 10 },
            Vec::new()
        )
        .is_err()
    );
    // An empty file is an empty disk.
    let empty = dir.path().join("empty.raw");
    File::create(&empty).unwrap();
    let mut out = Vec::new();
    convert(&empty, Container::Raw, Compression::None, &mut out).unwrap();
    assert!(out.is_empty());
    let mut out = Vec::new();
    convert(
        &empty,
        Container::Vhd(VhdOptions::default()),
        Compression::None,
        &mut out,
    )
    .unwrap();
    assert_eq!(out.len(), 512);
    let mut out = Vec::new();
    convert(&empty, Container::Qcow2, Compression::None, &mut out).unwrap();
    assert_eq!(read_qcow2(&out).unwrap(), Vec::<u8>::new());
    // A writer that fails surfaces its error.
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let raw = dir.path().join("disk.raw");
    disk_like(&raw, 32 * MIB);
    let e = convert(&raw, Container::Raw, Compression::XZ_DEFAULT, Broken).unwrap_err();
    assert!(e.to_string().contains("disk full"), "{e}");
    // A raw file that grows while it is converted is an error, not an image of a wrong size.
    struct Grows(File, bool);
    impl Write for Grows {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if !self.1 {
                self.1 = true;
                let len = self.0.metadata()?.len();
                self.0.set_len(len + 4096)?;
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    for container in [
        Container::Raw,
        Container::Vhd(VhdOptions::default()),
        Container::Qcow2,
    ] {
        disk_like(&raw, 32 * MIB);
        let grow = Grows(
            fs::OpenOptions::new().write(true).open(&raw).unwrap(),
            false,
        );
        let e = convert(&raw, container, Compression::None, grow).unwrap_err();
        assert!(e.to_string().contains("changed size"), "{container:?}: {e}");
    }
}

/// A qcow2 reader for the images written here (no backing file, no compression, no
/// snapshots): the disk's bytes, or `None` when the file is not such an image.
fn read_qcow2(f: &[u8]) -> Option<Vec<u8>> {
    let be64 = |o: usize| Some(u64::from_be_bytes(f.get(o..o + 8)?.try_into().ok()?));
    let be32 = |o: usize| Some(u32::from_be_bytes(f.get(o..o + 4)?.try_into().ok()?));
    if f.get(..4)? != b"QFI\xfb" || be32(4)? != 3 || be32(20)? != 13 {
        return None;
    }
    let size = be64(24)? as usize;
    let l1_size = be32(36)? as usize;
    let l1 = be64(40)? as usize;
    let mut disk = vec![0u8; size];
    for r in 0..l1_size {
        let l2 = (be64(l1 + 8 * r)? & ((1 << 56) - 1)) as usize;
        if l2 == 0 {
            continue;
        }
        for i in 0..1024 {
            let e = be64(l2 + 8 * i)?;
            let data = (e & ((1 << 56) - 1)) as usize;
            if data == 0 {
                continue;
            }
            let at = (r * 1024 + i) * 8192;
            let n = 8192.min(size.checked_sub(at)?);
            disk[at..at + n].copy_from_slice(f.get(data..data + n)?);
        }
    }
    Some(disk)
}

fn decode(c: Compression, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match c {
        Compression::None => out.extend_from_slice(bytes),
        Compression::Zstd { .. } => {
            zstd::stream::read::Decoder::new(bytes)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
        }
        Compression::Gzip { .. } => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
        }
        Compression::Xz { .. } => {
            // Checked by `xz -d` above; here the stream's length is enough to tell it apart.
            unreachable!("not used in the property test")
        }
    }
    out
}

fn expected(size: u64, pieces: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    for (off, b) in pieces {
        v[*off as usize..*off as usize + b.len()].copy_from_slice(b);
    }
    v
}

fn extent_map() -> impl Strategy<Value = (u64, Vec<(u64, Vec<u8>)>)> {
    (1u64..(6 * MIB)).prop_flat_map(|size| {
        let piece = (0..size, 1usize..40_000, any::<u64>(), any::<bool>()).prop_map(
            move |(off, len, seed, zero)| {
                let len = len.min((size - off) as usize).max(1);
                let bytes = if zero {
                    vec![0u8; len]
                } else {
                    noise(seed, len)
                };
                (off.min(size - 1), bytes)
            },
        );
        (Just(size), prop::collection::vec(piece, 0..12))
    })
}

fn scratch() -> PathBuf {
    std::env::temp_dir()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_extent_maps_round_trip((size, pieces) in extent_map()) {
        let dir = tempfile::tempdir_in(scratch()).unwrap();
        let raw = dir.path().join("r.raw");
        // Pieces past the end are cut: writes extend the file otherwise.
        let pieces: Vec<(u64, Vec<u8>)> = pieces
            .into_iter()
            .map(|(o, mut b)| { b.truncate((size - o) as usize); (o, b) })
            .collect();
        sparse_file(&raw, size, &pieces);
        let want = expected(size, &pieces);
        let mut got = Vec::new();
        SparseReader::new(File::open(&raw).unwrap()).unwrap().read_to_end(&mut got).unwrap();
        prop_assert_eq!(&got, &want);
        for c in [Compression::None, Compression::Zstd { level: 1, threads: 2 }, Compression::Gzip { level: 1 }] {
            let mut out = Vec::new();
            convert(&raw, Container::Raw, c, &mut out).unwrap();
            prop_assert_eq!(&decode(c, &out), &want);
            let mut out = Vec::new();
            convert(&raw, Container::Vhd(VhdOptions::default()), c, &mut out).unwrap();
            let vhd = decode(c, &out);
            let disk = size.next_multiple_of(512) as usize;
            prop_assert_eq!(vhd.len(), disk + 512);
            prop_assert_eq!(&vhd[..want.len()], &want[..]);
            prop_assert!(vhd[want.len()..disk].iter().all(|&b| b == 0));
            prop_assert_eq!(&vhd[disk..disk + 8], b"conectix");
        }
        let mut out = Vec::new();
        let stats = convert(&raw, Container::Qcow2, Compression::None, &mut out).unwrap();
        prop_assert_eq!(stats.output_size, out.len() as u64);
        let disk = read_qcow2(&out).unwrap();
        prop_assert_eq!(disk.len() as u64, size.next_multiple_of(512));
        prop_assert_eq!(&disk[..want.len()], &want[..]);
        // Only non-zero clusters are stored.
        let nonzero = want.chunks(8192).filter(|c| c.iter().any(|&b| b != 0)).count();
        prop_assert!(out.len() <= (nonzero + 8) * 8192);
    }
}

/// Throughput and memory on a real file, for `docs/formats.md`: run one conversion per
/// process so `/usr/bin/time -v` reports its peak RSS, e.g.
/// `DISK_BENCH_RAW=/tmp/4g.raw DISK_BENCH=zst:9:2 /usr/bin/time -v
/// cargo test --release --test disk_formats -- --ignored bench_convert --nocapture`.
/// `DISK_BENCH` is `raw`, `vhd`, `qcow2`, `zst:<level>:<threads>`, `xz:<preset>`,
/// `gz:<level>`, `tgz:<level>` or `ova[:<deflate level>]` (its VMDK goes through a scratch
/// file in the raw file's directory); the output goes nowhere (counted only).
#[test]
#[ignore = "a benchmark: needs DISK_BENCH_RAW and DISK_BENCH"]
fn bench_convert() {
    let raw = std::env::var("DISK_BENCH_RAW").expect("DISK_BENCH_RAW");
    let what = std::env::var("DISK_BENCH").expect("DISK_BENCH");
    let parts: Vec<&str> = what.split(':').collect();
    let num = |i: usize| parts[i].parse::<u32>().unwrap();
    let (container, compression) = match parts[0] {
        "raw" => (Container::Raw, Compression::None),
        "vhd" => (Container::Vhd(VhdOptions::default()), Compression::None),
        "qcow2" => (Container::Qcow2, Compression::None),
        "zst" => (
            Container::Raw,
            Compression::Zstd {
                level: num(1) as i32,
                threads: num(2),
            },
        ),
        "xz" => (Container::Raw, Compression::Xz { preset: num(1) }),
        "gz" => (Container::Raw, Compression::Gzip { level: num(1) }),
        "tgz" => (Container::SparseTar, Compression::Gzip { level: num(1) }),
        "ova" => (
            Container::Ova(OvaOptions {
                vmdk: VmdkOptions {
                    level: parts.get(1).map_or(vmdk::DEFAULT_LEVEL, |_| num(1)),
                    content_id: None,
                },
                firmware: Firmware::Bios,
            }),
            Compression::None,
        ),
        other => panic!("unknown DISK_BENCH {other}"),
    };
    let start = std::time::Instant::now();
    let raw = Path::new(&raw);
    let scratch = raw.parent().unwrap_or(Path::new("."));
    let stats = convert_in(raw, container, compression, scratch, std::io::sink()).unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{what}: {:.2} s, {:.0} MiB/s of disk, output {} bytes, read {} bytes",
        secs,
        stats.raw_size as f64 / secs / MIB as f64,
        stats.output_size,
        stats.data_read
    );
}

#[test]
fn sparse_tar_header_matches_gnu_tar() {
    if !have("tar") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    sparse_file(
        &raw,
        20 * MIB,
        &[(MIB, b"hello".to_vec()), (5_000_000, b"x".to_vec())],
    );
    let ours = dir.path().join("ours.tar");
    convert_to(&raw, Container::SparseTar, Compression::None, &ours);
    // GNU tar on the same file, with the fields bootfactory fixes (mtime 0, root:root).
    run(Command::new("touch").args(["-d", "@0"]).arg(&raw));
    let theirs = dir.path().join("gnu.tar");
    run(Command::new("tar")
        .args([
            "--sparse",
            "--owner=root:0",
            "--group=root:0",
            "--mode=0644",
            "-cf",
        ])
        .arg(&theirs)
        .arg("-C")
        .arg(dir.path())
        .arg("disk.raw"));
    let (ours, theirs) = (fs::read(&ours).unwrap(), fs::read(&theirs).unwrap());
    assert_eq!(ours.len(), theirs.len());
    // Byte for byte: header, sparse map, data, padding to a 10 KiB record.
    assert_eq!(ours[..512], theirs[..512]);
    assert_eq!(ours, theirs);
}

/// A reader for the stream-optimized VMDKs written here: checks the footer, the markers
/// before every grain table and the grain markers' LBAs, inflates the grains; the disk's
/// bytes, or `None` when the file is not such an image.
fn read_vmdk(f: &[u8]) -> Option<Vec<u8>> {
    let le64 = |o: usize| Some(u64::from_le_bytes(f.get(o..o + 8)?.try_into().ok()?));
    let le32 = |o: usize| Some(u32::from_le_bytes(f.get(o..o + 4)?.try_into().ok()?));
    if f.get(..4)? != b"KDMV" || le32(4)? != 3 || le32(8)? != 0x30001 || le64(56)? != u64::MAX {
        return None;
    }
    let n = f.len();
    // Footer marker, footer (the header with gdOffset), end of stream.
    let footer = n.checked_sub(1024)?;
    if le64(n - 1536)? != 1 || le32(n - 1536 + 12)? != 3 || f.get(footer..footer + 4)? != b"KDMV" {
        return None;
    }
    if f[n - 512..].iter().any(|&b| b != 0) || f[..56] != f[footer..footer + 56] {
        return None;
    }
    let capacity = le64(12)? as usize * 512;
    let gd = le64(footer + 56)? as usize * 512;
    let grains = capacity.div_ceil(65536);
    let tables = grains.div_ceil(512);
    if le32(gd - 512 + 12)? != 2 || le64(gd - 512)? != (tables as u64 * 4).div_ceil(512) {
        return None;
    }
    let mut disk = vec![0u8; capacity];
    for t in 0..tables {
        let gt = le32(gd + 4 * t)? as usize * 512;
        if gt == 0 || le32(gt - 512 + 12)? != 1 || le64(gt - 512)? != 4 {
            return None;
        }
        for i in 0..512 {
            let g = t * 512 + i;
            let sector = le32(gt + 4 * i)? as usize;
            if sector == 0 {
                continue;
            }
            if g >= grains || le64(sector * 512)? != g as u64 * 128 {
                return None;
            }
            let size = le32(sector * 512 + 8)? as usize;
            let data = f.get(sector * 512 + 12..sector * 512 + 12 + size)?;
            let mut grain = Vec::new();
            flate2::read::ZlibDecoder::new(data)
                .read_to_end(&mut grain)
                .ok()?;
            if grain.len() != 65536 {
                return None;
            }
            let at = g * 65536;
            let k = 65536.min(capacity - at);
            disk[at..at + k].copy_from_slice(&grain[..k]);
        }
    }
    Some(disk)
}

/// The grains `qemu-img map` reports as data.
fn qemu_data_bytes(format: &str, path: &Path) -> u64 {
    let map: serde_json::Value = serde_json::from_str(&run(Command::new("qemu-img")
        .args(["map", "--output=json", "-f", format])
        .arg(path)))
    .unwrap();
    map.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum()
}

#[test]
fn vmdk_is_what_qemu_img_reads_as_the_raw_disk() {
    let dir = tempfile::tempdir().unwrap();
    // Disk-like images, an odd size, a small one with data in the first and last grain, and
    // data on both sides of a grain table's 32 MiB boundary.
    for (i, size) in [64 * MIB, 64 * MIB + 1000, 3 * MIB + 512, 70 * MIB]
        .into_iter()
        .enumerate()
    {
        let raw = dir.path().join("disk.raw");
        match i {
            0 | 1 => {
                disk_like(&raw, size);
            }
            2 => sparse_file(
                &raw,
                size,
                &[(0, noise(9, 65536 * 3 + 5)), (size - 10, vec![7; 10])],
            ),
            _ => sparse_file(
                &raw,
                size,
                &[
                    (32 * MIB - 4096, noise(4, 8192)),
                    (64 * MIB, vec![0; 65536]),
                ],
            ),
        }
        let path = dir.path().join("disk.vmdk");
        let mut out = std::io::BufWriter::new(File::create(&path).unwrap());
        let stats =
            vmdk::write(&File::open(&raw).unwrap(), VmdkOptions::default(), &mut out).unwrap();
        drop(out);
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, stats.file_size);
        assert_eq!(stats.capacity, size.next_multiple_of(512));
        let disk = read_vmdk(&bytes).expect("our reader reads it");
        assert_eq!(disk.len() as u64, stats.capacity);
        let want = fs::read(&raw).unwrap();
        assert_eq!(&disk[..want.len()], &want[..]);
        // Only grains with a non-zero byte are stored (the written zeros are not).
        let nonzero = disk
            .chunks(65536)
            .filter(|c| c.iter().any(|&b| b != 0))
            .count();
        assert_eq!(stats.grains_stored, nonzero as u64);
        if !have("qemu-img") {
            continue;
        }
        let info = qemu_info("vmdk", &path);
        assert_eq!(info["format"], "vmdk", "{info}");
        assert_eq!(info["virtual-size"], stats.capacity, "{info}");
        let spec = &info["format-specific"]["data"];
        assert_eq!(spec["create-type"], "streamOptimized", "{info}");
        assert_eq!(spec["extents"][0]["compressed"], true, "{info}");
        assert_eq!(spec["extents"][0]["cluster-size"], 65536, "{info}");
        let check = run(Command::new("qemu-img")
            .args(["check", "--output=json", "-f", "vmdk"])
            .arg(&path));
        let check: serde_json::Value = serde_json::from_str(&check).unwrap();
        assert_eq!(check["check-errors"], 0, "{check}");
        assert!(check.get("corruptions").is_none(), "{check}");
        let same = run(Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "vmdk"])
            .arg(&raw)
            .arg(&path));
        assert!(same.contains("identical"), "{same}");
        // qemu-img's own stream-optimized conversion: the same disk, the same data grains,
        // a file of about the same size (qemu deflates at zlib's default level 6).
        let theirs = dir.path().join("qemu.vmdk");
        run(Command::new("qemu-img")
            .args([
                "convert",
                "-f",
                "raw",
                "-O",
                "vmdk",
                "-o",
                "subformat=streamOptimized",
            ])
            .arg(&raw)
            .arg(&theirs));
        let their_info = qemu_info("vmdk", &theirs);
        assert_eq!(their_info["virtual-size"], info["virtual-size"]);
        // (`map` counts the last grain only as far as the disk goes.)
        let our_data = qemu_data_bytes("vmdk", &path);
        assert!(our_data <= stats.grains_stored * 65536);
        assert!(our_data + 65536 > stats.grains_stored * 65536);
        assert_eq!(qemu_data_bytes("vmdk", &theirs), our_data, "{their_info}");
        let their_len = fs::metadata(&theirs).unwrap().len();
        assert!(
            stats.file_size <= their_len + (their_len / 20).max(128 * 1024),
            "ours {} vs qemu-img {their_len}",
            stats.file_size
        );
    }
}

#[test]
fn ova_lists_extracts_and_checks_with_the_standard_tools() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let size = 64 * MIB + 1000;
    disk_like(&raw, size);
    let ova = dir.path().join("vmware-amd64.ova");
    let container = Container::Ova(OvaOptions::default());
    assert_eq!(container.suffix(), ".ova");
    let stats = {
        let f = File::create(&ova).unwrap();
        convert_in(
            &raw,
            container,
            Compression::None,
            dir.path(),
            std::io::BufWriter::new(f),
        )
        .unwrap()
    };
    assert_eq!(fs::metadata(&ova).unwrap().len(), stats.output_size);
    assert_eq!(stats.image_size, stats.output_size);
    assert_eq!(stats.output_size % 10240, 0);
    // The scratch VMDK is gone.
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    // Reproducible: the same disk gives the same bytes.
    let again = dir.path().join("again.ova");
    convert_to(&raw, container, Compression::None, &again);
    same_file(&ova, &again);
    fs::remove_file(&again).unwrap();
    // The standard VMDK on its own is what the archive holds.
    let mut vmdk_alone = Vec::new();
    let vs = vmdk::write(
        &File::open(&raw).unwrap(),
        VmdkOptions::default(),
        &mut vmdk_alone,
    )
    .unwrap();
    if !have("tar") {
        return;
    }
    let listing = run(Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&ova));
    let rows: Vec<Vec<&str>> = listing
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r[5]).collect();
    assert_eq!(names, ["disk.ovf", "disk.mf", "disk.vmdk"], "{listing}");
    for r in &rows {
        assert_eq!(r[0], "-rw-r--r--", "{listing}");
        assert_eq!(r[1], "0/0", "{listing}");
        assert_eq!(r[3], "1970-01-01", "{listing}");
    }
    assert_eq!(rows[2][2], vs.file_size.to_string(), "{listing}");
    let x = dir.path().join("x");
    fs::create_dir(&x).unwrap();
    run(Command::new("tar").arg("-xf").arg(&ova).arg("-C").arg(&x));
    assert_eq!(fs::read(x.join("disk.vmdk")).unwrap(), vmdk_alone);
    // The manifest holds the members' SHA-256, in the form ovftool checks.
    let mf = fs::read_to_string(x.join("disk.mf")).unwrap();
    for name in ["disk.ovf", "disk.vmdk"] {
        let sum = run(Command::new("sha256sum").arg(x.join(name)));
        let hex = sum.split_whitespace().next().unwrap();
        assert!(mf.contains(&format!("SHA256({name})= {hex}\n")), "{mf}");
    }
    assert_eq!(mf.lines().count(), 2);
    // The OVF parses and its numbers match the disk and the VMDK.
    let script = r##"
import sys, xml.etree.ElementTree as ET
ns = {"ovf": "http://schemas.dmtf.org/ovf/envelope/1",
      "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
      "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"}
a = lambda n: "{%s}%s" % (ns["ovf"], n)
root = ET.parse(sys.argv[1]).getroot()
f = root.find("ovf:References/ovf:File", ns)
d = root.find("ovf:DiskSection/ovf:Disk", ns)
hw = root.find("ovf:VirtualSystem/ovf:VirtualHardwareSection", ns)
items = {i.find("rasd:ResourceType", ns).text: i for i in hw.findall("ovf:Item", ns)}
print(f.get(a("href")), f.get(a("size")), d.get(a("capacity")), d.get(a("capacityAllocationUnits")),
      d.get(a("populatedSize")), d.get(a("format")).split("#")[1],
      hw.find("ovf:System/vssd:VirtualSystemType", ns).text,
      items["3"].find("rasd:VirtualQuantity", ns).text, items["4"].find("rasd:VirtualQuantity", ns).text,
      items["6"].find("rasd:ResourceSubType", ns).text, items["10"].find("rasd:ResourceSubType", ns).text)
"##;
    let out = run(Command::new("python3")
        .args(["-c", script])
        .arg(x.join("disk.ovf")));
    let want = format!(
        "disk.vmdk {} {} byte {} streamOptimized vmx-15 2 2048 VirtualSCSI VmxNet3\n",
        vs.file_size,
        size.next_multiple_of(512),
        vs.grains_stored * 65536
    );
    assert_eq!(out, want);
    if have("qemu-img") {
        let same = run(Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "vmdk"])
            .arg(&raw)
            .arg(x.join("disk.vmdk")));
        assert!(same.contains("identical"), "{same}");
    }
    // EFI firmware is one setting more; a compressed OVA decompresses to the same archive.
    let efi = dir.path().join("efi.ova");
    let opts = OvaOptions {
        firmware: Firmware::Efi,
        ..OvaOptions::default()
    };
    convert_to(&raw, Container::Ova(opts), Compression::None, &efi);
    let listing = run(Command::new("tar").args(["-xOf"]).arg(&efi).arg("disk.ovf"));
    assert!(listing.contains(r#"vmw:key="firmware" vmw:value="efi""#));
    let gz = dir.path().join("disk.ova.gz");
    convert_to(&raw, container, Compression::GZIP_DEFAULT, &gz);
    let mut back = Vec::new();
    flate2::read::GzDecoder::new(File::open(&gz).unwrap())
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, fs::read(&ova).unwrap());
}

#[test]
fn ova_errors_keep_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    disk_like(&raw, 8 * MIB);
    let missing = dir.path().join("no-such-dir");
    let container = Container::Ova(OvaOptions::default());
    let e = convert_in(&raw, container, Compression::None, &missing, Vec::new()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert!(e.to_string().contains("no-such-dir"), "{e}");
    let source = std::error::Error::source(e.get_ref().unwrap()).expect("a source");
    assert!(source.to_string().contains("No such file"), "{source}");
    assert!(convert(&missing, container, Compression::None, Vec::new()).is_err());
    let bad_level = Container::Ova(OvaOptions {
        vmdk: VmdkOptions {
            level: 12,
            content_id: None,
        },
        ..OvaOptions::default()
    });
    assert!(convert(&raw, bad_level, Compression::None, Vec::new()).is_err());
    // An empty file is an empty disk: a VMDK of metadata only.
    let empty = dir.path().join("empty.raw");
    File::create(&empty).unwrap();
    let mut out = Vec::new();
    let st = vmdk::write(
        &File::open(&empty).unwrap(),
        VmdkOptions::default(),
        &mut out,
    )
    .unwrap();
    assert_eq!(st.file_size, out.len() as u64);
    assert_eq!(read_vmdk(&out).unwrap(), Vec::<u8>::new());
    // A raw file that grows while its VMDK is written is an error.
    struct Grows(File, bool);
    impl Write for Grows {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if !self.1 {
                self.1 = true;
                let len = self.0.metadata()?.len();
                self.0.set_len(len + 4096)?;
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut grow = Grows(
        fs::OpenOptions::new().write(true).open(&raw).unwrap(),
        false,
    );
    let e = vmdk::write(
        &File::open(&raw).unwrap(),
        VmdkOptions::default(),
        &mut grow,
    )
    .unwrap_err();
    assert!(e.to_string().contains("changed size"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_extent_maps_round_trip_through_vmdk((size, pieces) in extent_map()) {
        let dir = tempfile::tempdir_in(scratch()).unwrap();
        let raw = dir.path().join("r.raw");
        let pieces: Vec<(u64, Vec<u8>)> = pieces
            .into_iter()
            .map(|(o, mut b)| { b.truncate((size - o) as usize); (o, b) })
            .collect();
        sparse_file(&raw, size, &pieces);
        let want = expected(size, &pieces);
        let mut out = Vec::new();
        let opts = VmdkOptions { level: 1, content_id: Some([7; 16]) };
        let stats = vmdk::write(&File::open(&raw).unwrap(), opts, &mut out).unwrap();
        prop_assert_eq!(stats.file_size, out.len() as u64);
        prop_assert_eq!(out.len() % 512, 0);
        let disk = read_vmdk(&out).unwrap();
        prop_assert_eq!(disk.len() as u64, size.next_multiple_of(512));
        prop_assert_eq!(&disk[..want.len()], &want[..]);
        prop_assert!(disk[want.len()..].iter().all(|&b| b == 0));
        let nonzero = want.chunks(65536).filter(|c| c.iter().any(|&b| b != 0)).count();
        prop_assert_eq!(stats.grains_stored, nonzero as u64);
    }
}
