//! Cross-module golden vectors for the pure factory logic, through the public API:
//! asset path → profile → kernel command line (with META), as upstream Image Factory serves
//! them (`/image/<id>/<v>/cmdline-*` bodies and the command lines in `/pxe` scripts).
//!
//! Sources (upstream Image Factory `internal/profile/profile_test.go`,
//! `internal/integration/download_test.go` and `pxe_test.go`, Talos `pkg/imager/imager_test.go`):
//! `docs/image-factory-api.md` §Asset paths, §PXE scripts; `docs/formats.md` §Golden strings,
//! §META.

use bootfactory::factory::cmdline::{CmdlineInput, build_cmdline};
use bootfactory::factory::meta::{decode_meta, encode_meta};
use bootfactory::factory::profile::{
    AssetProfile, OutputKind, content_type, parse_from_path, parse_pxe_path,
};
use bootfactory::factory::quirks::{Quirks, filter_versions};
use bootfactory::version::TalosVersion;

const IMA: &str = "ima_template=ima-ng ima_appraise=fix ima_hash=sha512";
const DEFAULTS: &str = "init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on";
const META_ARG: &str =
    "talos.environment=INSTALLER_META_BASE64=MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ==";

fn version(s: &str) -> TalosVersion {
    s.parse().expect("valid version")
}

fn meta_values() -> Vec<(u8, String)> {
    vec![(0x0a, r#"{"externalIPs":["1.2.3.4"]}"#.to_string())]
}

/// What the factory serves for `cmdline-<...>` or embeds in `/pxe/<...>`: the profile from the
/// path, the schematic's customization where it applies, then the imager's cmdline.
fn cmdline_for(
    profile: &AssetProfile,
    ver: &TalosVersion,
    extra: &[String],
    meta: &[(u8, String)],
) -> String {
    let quirks = Quirks::new(ver);
    let no_extra: &[String] = &[];
    let no_meta: &[(u8, String)] = &[];
    build_cmdline(&CmdlineInput {
        platform: &profile.platform,
        arch: profile.arch,
        kind: profile.kind,
        secure_boot: profile.secure_boot,
        version: ver.clone(),
        extra_kernel_args: if profile.extra_kernel_args_apply(&quirks) {
            extra
        } else {
            no_extra
        },
        meta: if profile.meta_applies() {
            meta
        } else {
            no_meta
        },
        overlay_kernel_args: None,
    })
}

fn asset_cmdline(path: &str, ver: &str, extra: &[&str], meta: &[(u8, String)]) -> String {
    let v = version(ver);
    let profile = parse_from_path(path, &v).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(profile.kind, OutputKind::Cmdline, "{path}");
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    cmdline_for(&profile, &v, &extra, meta)
}

fn pxe_cmdline(path: &str, ver: &str) -> String {
    let v = version(ver);
    let profile = parse_pxe_path(path, &v).unwrap_or_else(|e| panic!("{path}: {e}"));
    cmdline_for(&profile, &v, &[], &[])
}

#[test]
fn cmdline_assets_image_factory_10_4() {
    assert_eq!(
        asset_cmdline("cmdline-metal-amd64", "v1.5.1", &[], &[]),
        format!("talos.platform=metal console=ttyS0 console=tty0 {DEFAULTS} {IMA}")
    );
    let aws = "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0";
    assert_eq!(
        asset_cmdline("cmdline-aws-arm64", "v1.5.1", &[], &[]),
        format!("{aws} {DEFAULTS} {IMA}")
    );
    assert_eq!(
        asset_cmdline("cmdline-aws-arm64", "v1.10.0", &[], &[]),
        format!("{aws} {DEFAULTS} {IMA} selinux=1")
    );
    assert_eq!(
        asset_cmdline("cmdline-aws-arm64", "v1.11.0", &[], &[]),
        format!("{aws} {DEFAULTS} selinux=1")
    );
    assert_eq!(
        asset_cmdline("cmdline-aws-arm64", "v1.12.0", &[], &[]),
        format!("{aws} {DEFAULTS} selinux=1 module.sig_enforce=1")
    );
    assert_eq!(
        asset_cmdline("cmdline-aws-arm64", "v1.13.0", &[], &[]),
        format!("{aws} {DEFAULTS} selinux=1 module.sig_enforce=1 proc_mem.force_override=never")
    );
    assert_eq!(
        asset_cmdline("cmdline-metal-amd64", "v1.8.0", &[], &[]),
        format!("talos.platform=metal console=tty0 {DEFAULTS} {IMA}")
    );
    assert_eq!(
        asset_cmdline(
            "cmdline-metal-amd64",
            "v1.11.0",
            &["nolapic", "nomodeset"],
            &[]
        ),
        format!("talos.platform=metal console=tty0 {DEFAULTS} selinux=1 nolapic nomodeset")
    );
    assert_eq!(
        asset_cmdline("cmdline-metal-amd64", "v1.5.1", &[], &meta_values()),
        format!("talos.platform=metal console=ttyS0 console=tty0 {DEFAULTS} {IMA} {META_ARG}")
    );
}

#[test]
fn pxe_script_cmdlines_image_factory_10_5() {
    let v150 = format!("talos.platform=metal console=ttyS0 console=tty0 {DEFAULTS} {IMA}");
    assert_eq!(pxe_cmdline("metal-amd64", "v1.5.0"), v150);
    assert_eq!(pxe_cmdline("metal-x86_64", "v1.5.0"), v150);
    assert_eq!(
        pxe_cmdline("metal-amd64", "v1.11.0"),
        format!("talos.platform=metal console=tty0 {DEFAULTS} selinux=1")
    );
    assert_eq!(
        pxe_cmdline("equinixMetal-amd64", "v1.5.0"),
        format!("talos.platform=equinixMetal console=ttyS1,115200n8 {DEFAULTS} {IMA}")
    );
    assert_eq!(
        pxe_cmdline("metal-amd64-secureboot", "v1.5.0"),
        format!("{v150} lockdown=confidentiality")
    );
    assert_eq!(
        pxe_cmdline("metal-amd64-secureboot", "v1.11.0"),
        format!("talos.platform=metal console=tty0 {DEFAULTS} selinux=1 lockdown=confidentiality")
    );
    assert_eq!(
        pxe_cmdline("metal-arm64", "v1.11.0"),
        format!("talos.platform=metal console=ttyAMA0 console=tty0 {DEFAULTS} selinux=1")
    );
}

#[test]
fn cmdline_golden_talos_formats_3_4() {
    let v = version("v1.11.0");
    let iso = parse_from_path("metal-amd64.iso", &v).unwrap();
    assert_eq!(
        cmdline_for(&iso, &v, &[], &[]),
        format!("talos.platform=metal console=tty0 talos.halt_if_installed=1 {DEFAULTS} selinux=1")
    );
    // SecureBoot ISO with META and extra args: lockdown, then META, then extra args.
    let sb_iso = parse_from_path("metal-amd64-secureboot.iso", &v).unwrap();
    let extra = vec!["nolapic".to_string(), "nomodeset".to_string()];
    assert_eq!(
        cmdline_for(&sb_iso, &v, &extra, &meta_values()),
        format!(
            "talos.platform=metal console=tty0 talos.halt_if_installed=1 {DEFAULTS} selinux=1 lockdown=confidentiality {META_ARG} nolapic nomodeset"
        )
    );
    // A disk image's cmdline never carries META.
    let image = parse_from_path("metal-amd64.raw.zst", &v).unwrap();
    assert_eq!(
        cmdline_for(&image, &v, &extra, &meta_values()),
        format!("talos.platform=metal console=tty0 {DEFAULTS} selinux=1 nolapic nomodeset")
    );
    // A non-SecureBoot installer for < 1.10 gets no extra args; ≥ 1.10 does.
    let v19 = version("v1.9.0");
    let inst = parse_from_path("installer-amd64.tar", &v19).unwrap();
    assert_eq!(
        cmdline_for(&inst, &v19, &extra, &meta_values()),
        format!("talos.platform=metal console=tty0 {DEFAULTS} {IMA}")
    );
    let inst = parse_from_path("installer-amd64.tar", &v).unwrap();
    assert_eq!(
        cmdline_for(&inst, &v, &extra, &meta_values()),
        format!("talos.platform=metal console=tty0 {DEFAULTS} selinux=1 nolapic nomodeset")
    );
}

#[test]
fn extra_arg_overrides() {
    assert_eq!(
        asset_cmdline(
            "cmdline-metal-amd64",
            "v1.7.0",
            &["console=ttyS0,115200"],
            &[]
        ),
        format!("talos.platform=metal console=ttyS0,115200 {DEFAULTS} {IMA}")
    );
    assert_eq!(
        asset_cmdline("cmdline-metal-amd64", "v1.11.0", &["-selinux"], &[]),
        format!("talos.platform=metal console=tty0 {DEFAULTS}")
    );
    assert_eq!(
        asset_cmdline("cmdline-aws-amd64", "v1.11.0", &["-console"], &[]),
        format!("talos.platform=aws net.ifnames=0 {DEFAULTS} selinux=1")
    );
    assert_eq!(
        asset_cmdline("cmdline-aws-amd64", "v1.11.0", &["net.ifnames=0"], &[]),
        format!(
            "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 net.ifnames=0 {DEFAULTS} selinux=1"
        )
    );
    assert_eq!(
        asset_cmdline("cmdline-metal-amd64", "v1.11.0", &["-init_on_alloc=1"], &[]),
        "talos.platform=metal console=tty0 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1"
    );
}

/// A profile on one line: `platform[/board] arch kind [secureboot] out_format [disk size options]`.
fn describe(p: &AssetProfile) -> String {
    let mut s = p.platform.clone();
    if let Some(board) = &p.board {
        s += &format!("/{board}");
    }
    s += &format!(" {:?} {:?}", p.arch, p.kind);
    if p.secure_boot {
        s += " secureboot";
    }
    s += &format!(" {:?}", p.out_format);
    if let Some(i) = &p.image {
        s += &format!(
            " {:?} {} {}",
            i.disk_format, i.disk_size_mib, i.disk_format_options
        );
    }
    s.trim_end().to_string()
}

/// Upstream's `TestParseFromPath` and derived cases (`docs/image-factory-api.md` §Asset paths):
/// the profile of every asset path shape, disk defaults per platform (1246 MiB minimum raw size,
/// 8192 MiB default), and the error texts (the HTTP body is `error parsing profile from path:
/// <text>\n`).
#[test]
fn asset_paths_image_factory_4_2() {
    let ok = [
        ("kernel-amd64", "v1.5.0", "metal Amd64 Kernel Raw"),
        ("kernel-arm64", "v1.5.0", "metal Arm64 Kernel Raw"),
        ("cmdline-metal-arm64", "v1.5.0", "metal Arm64 Cmdline Raw"),
        (
            "cmdline-aws-amd64-secureboot",
            "v1.6.0",
            "aws Amd64 Cmdline secureboot Raw",
        ),
        ("initramfs-amd64.xz", "v1.6.0", "metal Amd64 Initramfs Raw"),
        (
            "metal-arm64-secureboot.iso",
            "v1.6.0",
            "metal Arm64 Iso secureboot Raw",
        ),
        (
            "metal-amd64-secureboot-uki.efi",
            "v1.6.0",
            "metal Amd64 Uki secureboot Raw",
        ),
        ("metal-amd64-uki.efi", "v1.6.0", "metal Amd64 Uki Raw"),
        ("installer-amd64.tar", "v1.6.0", "metal Amd64 Installer Raw"),
        (
            "metal-installer-amd64.tar",
            "v1.10.0",
            "metal Amd64 Installer Raw",
        ),
        (
            "digital-ocean-installer-amd64.tar",
            "v1.10.0",
            "digital-ocean Amd64 Installer Raw",
        ),
        (
            "metal-arm64.raw.xz",
            "v1.6.0",
            "metal Arm64 Image Xz Raw 1246",
        ),
        (
            "metal-arm64.raw.zst",
            "v1.8.0",
            "metal Arm64 Image Zst Raw 1246",
        ),
        (
            "aws-amd64-secureboot.qcow2.tar.gz",
            "v1.6.0",
            "aws Amd64 Image secureboot TarGz Qcow2 8192 cluster_size=8k",
        ),
        (
            "azure-amd64.vhd",
            "v1.6.0",
            "azure Amd64 Image Raw Vhd 8192 subformat=fixed,force_size",
        ),
        (
            "digital-ocean-amd64.raw.gz",
            "v1.6.0",
            "digital-ocean Amd64 Image Gz Raw 8192",
        ),
        // Derived cases.
        ("metal-x86_64.iso", "v1.11.0", "metal Amd64 Iso Raw"),
        ("kernel-x86_64", "v1.11.0", "metal Amd64 Kernel Raw"),
        ("cmdline-metal-i386", "v1.11.0", "metal Amd64 Cmdline Raw"),
        (
            "aws-installer-arm64-secureboot.tar",
            "v1.11.0",
            "aws Arm64 Installer secureboot Raw",
        ),
        (
            "installer-arm64-secureboot.tar",
            "v1.11.0",
            "metal Arm64 Installer secureboot Raw",
        ),
        (
            "gcp-amd64.raw.tar.gz",
            "v1.11.0",
            "gcp Amd64 Image TarGz Raw 8192",
        ),
        (
            "vmware-amd64.ova",
            "v1.11.0",
            "vmware Amd64 Image Raw Ova 8192",
        ),
        (
            "exoscale-amd64.qcow2",
            "v1.11.0",
            "exoscale Amd64 Image Raw Qcow2 10240 cluster_size=8k",
        ),
        (
            "exoscale-arm64.raw",
            "v1.11.0",
            "exoscale Arm64 Image Raw Raw 10240 cluster_size=8k",
        ),
        (
            "alibabacloud-amd64.qcow2",
            "v1.14.0",
            "alibabacloud Amd64 Image Raw Qcow2 1246 cluster_size=8k",
        ),
        (
            "azure-arm64-secureboot.vhd.xz",
            "v1.11.0",
            "azure Arm64 Image secureboot Xz Vhd 8192 subformat=fixed,force_size",
        ),
        (
            "metal-amd64.qcow2",
            "v1.11.0",
            "metal Amd64 Image Raw Qcow2 1246 cluster_size=8k",
        ),
        (
            "equinixMetal-amd64.raw.xz",
            "v1.11.0",
            "equinixMetal Amd64 Image Xz Raw 8192",
        ),
        (
            "someplatform-arm64.raw",
            "v1.11.0",
            "someplatform Arm64 Image Raw Raw 8192",
        ),
        // Legacy boards (Talos < 1.7).
        (
            "metal-rpi_generic-arm64.raw.xz",
            "v1.6.0",
            "metal/rpi_generic Arm64 Image Xz Raw 1246",
        ),
        // `initramfs-` without `.xz` falls through.
        ("initramfs-amd64.iso", "v1.11.0", "initramfs Amd64 Iso Raw"),
    ];
    for (path, ver, want) in ok {
        let p = parse_from_path(path, &version(ver)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(describe(&p), want, "{path} ({ver})");
    }

    let errors = [
        ("kernel-foo", "v1.5.0", r#"invalid architecture: "foo""#),
        (
            "metal-rpi_generic-arm64.raw.xz",
            "v1.7.0",
            r#"invalid architecture: "rpi_generic-arm64""#,
        ),
        (
            "metal-amd64.ssd",
            "v1.5.0",
            r#"invalid profile path: "metal-amd64.ssd""#,
        ),
        (
            "metal-amd64.tar",
            "v1.11.0",
            r#"invalid profile path: "metal-amd64.tar""#,
        ),
        (
            "metal-amd64.tar.xz",
            "v1.11.0",
            r#"invalid profile path: "metal-amd64.tar""#,
        ),
        ("metal.iso", "v1.11.0", r#"invalid platform-arch: "metal""#),
        (
            "metal-secureboot.iso",
            "v1.11.0",
            r#"invalid platform-arch: "metal""#,
        ),
        (
            "cmdline-metal",
            "v1.11.0",
            r#"invalid platform-arch: "metal""#,
        ),
        (
            "metal-riscv64.iso",
            "v1.11.0",
            r#"invalid architecture: "riscv64""#,
        ),
        (
            "kernel-amd64.iso",
            "v1.11.0",
            r#"invalid architecture: "amd64.iso""#,
        ),
        (
            "installer-foo.tar",
            "v1.11.0",
            r#"invalid architecture: "foo""#,
        ),
        (
            "initramfs-amd64",
            "v1.11.0",
            r#"invalid profile path: "initramfs-amd64""#,
        ),
        ("initramfs-x.xz", "v1.11.0", r#"invalid architecture: "x""#),
        (
            "metal-AMD64.raw",
            "v1.11.0",
            r#"invalid architecture: "AMD64""#,
        ),
        ("", "v1.11.0", r#"invalid profile path: """#),
        (
            "metal-amd64.raw\n",
            "v1.11.0",
            "invalid profile path: \"metal-amd64.raw\\n\"",
        ),
    ];
    for (path, ver, msg) in errors {
        let err = parse_from_path(path, &version(ver)).unwrap_err();
        assert_eq!(err.to_string(), msg, "{path:?} ({ver})");
    }
}

#[test]
fn content_types_image_factory_10_3() {
    for (path, want) in [
        ("metal-amd64.iso", "application/x-iso9660-image"),
        ("metal-amd64.raw.xz", "application/x-xz"),
        ("gcp-amd64.raw.tar.gz", "application/gzip"),
        ("metal-amd64-uki.efi", "application/efi"),
        ("kernel-amd64", "application/octet-stream"),
        ("metal-amd64.qcow2", "application/x-qemu-disk"),
    ] {
        assert_eq!(content_type(path), want, "{path}");
    }
}

#[test]
fn meta_encoding() {
    let q = Quirks::new(&version("v1.11.0"));
    assert_eq!(
        encode_meta(&meta_values(), &q),
        "MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ=="
    );
    let long = vec![(0x0a, format!("{{\"hostnames\":[\"{}\"]}}", "n".repeat(400)))];
    let gz = encode_meta(&long, &Quirks::new(&version("v1.6.3")));
    assert!(gz.starts_with("H4sIAAAAAAAC/"), "{gz}");
    assert_eq!(decode_meta(&gz).unwrap(), long);
    let plain = encode_meta(&long, &Quirks::new(&version("v1.6.2")));
    assert!(plain.starts_with("MHhhPX"), "{plain}");
    assert_eq!(decode_meta(&plain).unwrap(), long);
}

#[test]
fn versions_list() {
    let tags: Vec<String> = [
        "v1.8.0",
        "v1.9.0-alpha.1",
        "v1.9.0",
        "v1.10.0-beta.0",
        "v1.10.0-rc.1",
        "v1.10.0-rc",
        "junk",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let list: Vec<String> = filter_versions(&tags, &version("1.2.0"), &[])
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(list, ["v1.8.0", "v1.9.0", "v1.10.0-beta.0", "v1.10.0-rc.1"]);
}
