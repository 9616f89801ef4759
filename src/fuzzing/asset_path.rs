//! Asset paths (`/image/<id>/<version>/<path>`, upstream's `ParseFromPath`) and the Talos
//! version in front of them.
//!
//! Input: `<version>\n<path>`. Properties: no panic; a parsed profile is internally consistent
//! (disk options only for disk images, known platforms' defaults applied); printing the profile
//! back as its canonical path and parsing that gives the same profile; `/pxe/…` paths are the
//! `cmdline-` assets; the `Content-Type` lookup never panics.

use crate::factory::profile::{
    AssetProfile, DiskFormat, OutputKind, content_type, parse_from_path, parse_pxe_path,
    platform_image_defaults,
};
use crate::version::TalosVersion;

/// Versions tried when the input's version line does not parse: both sides of the 1.7
/// overlay cut (legacy boards) and a current release.
const FALLBACK_VERSIONS: [(u64, u64, u64); 3] = [(1, 6, 7), (1, 7, 0), (1, 11, 6)];

/// The canonical path of a profile (arch names normalised, `metal` installers short).
pub fn canonical_path(p: &AssetProfile) -> String {
    let sb = if p.secure_boot { "-secureboot" } else { "" };
    let board = p
        .board
        .as_deref()
        .map(|b| format!("{b}-"))
        .unwrap_or_default();
    let pa = format!("{}-{board}{}{sb}", p.platform, p.arch);
    match p.kind {
        OutputKind::Kernel => format!("kernel-{}", p.arch),
        OutputKind::Initramfs => format!("initramfs-{}.xz", p.arch),
        OutputKind::Cmdline => format!("cmdline-{pa}"),
        OutputKind::Iso => format!("{pa}.iso"),
        OutputKind::Uki => format!("{pa}-uki.efi"),
        OutputKind::Installer if p.platform == "metal" => format!("installer-{}{sb}.tar", p.arch),
        OutputKind::Installer => format!("{}-installer-{}{sb}.tar", p.platform, p.arch),
        OutputKind::Image => {
            let image = p.image.as_ref().expect("disk image options");
            format!(
                "{pa}.{}{}",
                image.disk_format.extension(),
                p.out_format.suffix()
            )
        }
    }
}

/// Checks one `<version>\n<path>` input.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (version_text, path) = text.split_once('\n').unwrap_or(("", text));
    let mut versions: Vec<TalosVersion> = FALLBACK_VERSIONS
        .iter()
        .map(|&(a, b, c)| TalosVersion::new(a, b, c))
        .collect();
    if let Ok(v) = version_text.parse::<TalosVersion>() {
        let shown = v.to_string();
        let again: TalosVersion = shown
            .parse()
            .unwrap_or_else(|e| panic!("version {shown:?} does not parse back: {e}"));
        assert_eq!(again, v, "version display round trip");
        versions.insert(0, v);
    }
    let _ = content_type(path);
    for version in &versions {
        check_path(path, version);
    }
}

fn check_path(path: &str, version: &TalosVersion) {
    let parsed = parse_from_path(path, version);
    let pxe = parse_pxe_path(path, version);
    assert_eq!(
        pxe,
        parse_from_path(&format!("cmdline-{path}"), version),
        "pxe path is the cmdline asset"
    );
    if let Ok(p) = &pxe {
        assert_eq!(p.kind, OutputKind::Cmdline);
    }
    let p = match parsed {
        Ok(p) => p,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(
        p.image.is_some(),
        p.kind == OutputKind::Image,
        "disk options exactly for disk images: {p:?}"
    );
    if let Some(image) = &p.image {
        match platform_image_defaults(&p.platform) {
            Some((Some(size), _)) => assert_eq!(image.disk_size_mib, size),
            _ => assert_eq!(
                image.disk_size_mib,
                crate::factory::profile::DEFAULT_RAW_DISK_SIZE_MIB
            ),
        }
        if image.disk_format == DiskFormat::Qcow2
            && platform_image_defaults(&p.platform).is_none_or(|(_, o)| o.is_none())
        {
            assert_eq!(image.disk_format_options, "cluster_size=8k");
        }
    }
    if p.board.is_some() {
        assert_eq!(p.platform, "metal", "legacy boards are metal only");
    }
    let canonical = canonical_path(&p);
    let again = parse_from_path(&canonical, version)
        .unwrap_or_else(|e| panic!("canonical path {canonical:?} of {path:?} is refused: {e}"));
    assert_eq!(
        again, p,
        "canonical path {canonical:?} of {path:?} parses differently"
    );
}
