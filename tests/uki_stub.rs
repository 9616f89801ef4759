//! A UKI laid out by `formats::pe` on a real systemd-stub (Debian's `systemd-boot-efi`,
//! `linuxx64.efi.stub`, which also carries a COFF symbol table) and read back by independent
//! tools: GNU `objdump` must see a `pei-x86-64` image with every section at the address, size
//! and file offset we wrote, and `objcopy` must extract each appended section byte for byte.
//! Missing tools skip the test, or fail it under `BOOTFACTORY_REQUIRE_TOOLS=1`.

mod support;

use std::process::Command;

use bootfactory::formats::pe::{Appended, Layout, PeImage};
use support::tools::{have, have_file};

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

fn stub_present() -> bool {
    have_file(STUB, "systemd-boot-efi")
}

#[test]
fn objdump_and_objcopy_read_a_uki_assembled_on_debians_stub() {
    if !stub_present() || !have("objdump") || !have("objcopy") {
        return;
    }
    let stub_bytes = std::fs::read(STUB).unwrap();
    let stub = PeImage::parse(&stub_bytes).unwrap();
    // COFF PointerToSymbolTable and NumberOfSymbols (PE header at e_lfanew, COFF after it).
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let coff = le32(&stub_bytes, 0x3c) as usize + 4;
    assert!(
        le32(&stub_bytes, coff + 8) != 0 && le32(&stub_bytes, coff + 12) != 0,
        "Debian's stub is expected to carry a COFF symbol table (the case this test covers)"
    );
    // Contents with lengths that are not multiples of the file alignment.
    let linux: Vec<u8> = (0..300_001u32).map(|i| (i * 7 % 251) as u8).collect();
    let initrd: Vec<u8> = (0..123_457u32).map(|i| (i * 13 % 241) as u8).collect();
    let parts: Vec<(&str, &[u8])> = vec![
        (".osrel", b"NAME=\"Talos\"\nID=talos\nVERSION_ID=v1.11.6\n"),
        (".cmdline", b"talos.platform=metal console=ttyS0"),
        (".uname", b"6.12.57-talos"),
        (".linux", &linux),
        (".initrd", &initrd),
        (".profile", b"ID=main"),
    ];
    let appended: Vec<Appended> = parts
        .iter()
        .map(|(name, data)| Appended {
            name: name.to_string(),
            len: data.len() as u64,
        })
        .collect();
    let layout = Layout::new(&stub, &appended, 1_559_424_892).unwrap();
    let mut readers: Vec<&[u8]> = parts.iter().map(|(_, d)| *d).collect();
    let mut readers: Vec<&mut dyn std::io::Read> = readers
        .iter_mut()
        .map(|r| r as &mut dyn std::io::Read)
        .collect();
    let mut uki = Vec::new();
    layout.write(&stub, &mut readers, &mut uki).unwrap();
    assert_eq!(uki.len() as u64, layout.len());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uki.efi");
    std::fs::write(&path, &uki).unwrap();

    // objdump's view of the section table: name, size, VMA (image base + RVA), file offset.
    let out = Command::new("objdump")
        .arg("-h")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "objdump -h: {text}");
    assert!(text.contains("file format pei-x86-64"), "{text}");
    let seen: Vec<(String, u64, u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 7 && f[0].parse::<usize>().is_ok()).then(|| {
                let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
                (f[1].to_string(), hex(f[2]), hex(f[3]), hex(f[5]))
            })
        })
        .collect();
    let image_base = u64::from_le_bytes(stub.optional_header()[24..32].try_into().unwrap());
    let ours: Vec<(String, u64, u64, u64)> = layout
        .sections()
        .map(|s| {
            (
                String::from_utf8_lossy(s.name()).into_owned(),
                // BFD shows the file size when the memory size is larger (or zero).
                u64::from(match s.virtual_size {
                    0 => s.size_of_raw_data,
                    v => v.min(s.size_of_raw_data),
                }),
                image_base + u64::from(s.virtual_address),
                u64::from(s.pointer_to_raw_data),
            )
        })
        .collect();
    assert_eq!(seen.len(), ours.len(), "{text}");
    for (theirs, ours) in seen.iter().zip(&ours) {
        assert_eq!(theirs.0, ours.0);
        assert_eq!(theirs.1, ours.1, "size of {}", ours.0);
        assert_eq!(theirs.2, ours.2, "VMA of {}", ours.0);
        assert_eq!(theirs.3, ours.3, "file offset of {}", ours.0);
    }
    // The stub's sections come first, unchanged in name and address.
    for (s, theirs) in stub.sections().iter().zip(&seen) {
        assert_eq!(theirs.0.as_bytes(), s.name());
        assert_eq!(theirs.2, image_base + u64::from(s.virtual_address));
    }

    // Each appended section extracted by objcopy is exactly what went in.
    for (name, data) in &parts {
        let dump = dir
            .path()
            .join(format!("{}.bin", name.trim_start_matches('.')));
        let status = Command::new("objcopy")
            .args(["-O", "binary", "--only-section", name])
            .arg(&path)
            .arg(&dump)
            .status()
            .unwrap();
        assert!(status.success(), "objcopy --only-section {name}");
        assert_eq!(std::fs::read(&dump).unwrap(), *data, "section {name}");
    }

    // The stub's symbol table is gone; our own parser reads the result back the same way.
    assert_eq!((le32(&uki, 0x84 + 8), le32(&uki, 0x84 + 12)), (0, 0));
    let back = PeImage::parse(&uki).unwrap();
    assert_eq!(back.timestamp(), 1_559_424_892);
    assert_eq!(
        back.section_data(back.section(".linux").unwrap()),
        &linux[..]
    );
    assert_eq!(
        back.section_data(back.section(".sbat").unwrap()),
        stub.section_data(stub.section(".sbat").unwrap())
    );
}
