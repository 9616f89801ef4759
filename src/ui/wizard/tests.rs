use super::*;

fn pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn params(query: &str) -> Params {
    Params::parse(&pairs(query), Source::Query).unwrap()
}

fn v(s: &str) -> TalosVersion {
    s.parse().unwrap()
}

fn id_of(query: &str) -> String {
    let p = params(query);
    to_schematic(&p, &v(&p.version)).unwrap().id().to_string()
}

/// The real-world link of §8 (no version: the version step), and with a version the final
/// page of the famous qemu-guest-agent schematic.
#[test]
fn upstreams_deep_link_lands_on_the_same_step() {
    let link = "arch=amd64&cmdline-set=true&extensions=-&extensions=siderolabs%2Fqemu-guest-agent&platform=metal&target=metal";
    let p = params(link);
    assert_eq!(p.target, "metal");
    assert_eq!(p.platform, "metal");
    assert_eq!(p.arch, "amd64");
    assert!(p.cmdline_set);
    assert_eq!(p.extensions, ["-", "siderolabs/qemu-guest-agent"]);
    assert_eq!(p.step(), Step::Version);
    // Our deep link is upstream's: the same pairs, sorted by name.
    assert_eq!(encode(&p.url_pairs()), link);
    let with_version = format!("{link}&version=1.11.6");
    assert_eq!(params(&with_version).step(), Step::Final);
    assert_eq!(
        id_of(&with_version),
        "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"
    );
}

#[test]
fn rpi_generic_default_is_upstreams_id() {
    let q = "target=sbc&version=1.11.6&board=rpi_generic&extensions=-&cmdline-set=true";
    let p = params(q);
    assert_eq!(p.arch, "arm64", "a board forces arm64");
    assert_eq!(p.platform, "metal");
    assert_eq!(p.step(), Step::Final);
    let s = to_schematic(&p, &v("1.11.6")).unwrap();
    assert_eq!(
        s.canonical_yaml(),
        "overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_generic\ncustomization: {}\n"
    );
    assert_eq!(
        s.id().as_str(),
        "ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9"
    );
    // Overlay options are YAML, parsed into the schematic.
    let with_options = format!(
        "{q}&overlay-options={}",
        url::form_urlencoded::byte_serialize(b"configTxtAppend: dtoverlay=vc4-kms-v3d\n")
            .collect::<String>()
    );
    assert_eq!(
        id_of(&with_options),
        "43038dc8c417c97c33365f2fab10d657121cbe087320f9b78e16a1072b35cd28"
    );
    let bad = format!("{q}&overlay-options=%5B1%2C2%5D");
    let p = params(&bad);
    let e = to_schematic(&p, &v("1.11.6")).unwrap_err();
    assert!(
        e.to_string().contains("error parsing overlay options"),
        "{e}"
    );
}

#[test]
fn to_schematic_follows_upstreams_rules() {
    // Single-space split of the trimmed text: two spaces make an empty argument; extensions
    // are sorted and `-` dropped.
    let q = "target=metal&version=1.11.6&arch=amd64&extensions=-&extensions=siderolabs%2Fintel-ucode&extensions=siderolabs%2Fgvisor&cmdline=+console%3DttyS0++net.ifnames%3D0+&cmdline-set=true";
    let p = params(q);
    let s = to_schematic(&p, &v("1.11.6")).unwrap();
    assert_eq!(
        s.customization.extra_kernel_args,
        ["console=ttyS0", "", "net.ifnames=0"]
    );
    assert_eq!(
        s.customization.system_extensions.official_extensions,
        ["siderolabs/gvisor", "siderolabs/intel-ucode"]
    );
    assert_eq!(
        s.id().as_str(),
        "8afa1566e415c43af88102a9143ef773ca47327548826c202addfc05007bd3b5"
    );
    // `auto` and no bootloader leave it unset; a named one is set.
    let auto =
        "target=metal&version=1.12.0&arch=amd64&extensions=-&cmdline-set=true&bootloader=auto";
    assert_eq!(
        id_of(auto),
        "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"
    );
    assert_eq!(
        id_of(&auto.replace("auto", "sd-boot")),
        "9ed5fecdacb36b5c5427b87d409f1065cfb2df69b0f71c58b868d9d466d8dab3"
    );
    // An SBC on a version without overlays has no overlay (upstream's quirk check).
    let old = params("target=sbc&version=1.6.7&board=rpi_generic&extensions=-&cmdline-set=true");
    assert!(to_schematic(&old, &v("1.6.7")).unwrap().overlay.is_empty());
    // The embedded configuration is kept as it is (POST only).
    let mut form = pairs("target=metal&version=1.12.0&arch=amd64&extensions=-&cmdline-set=true");
    form.push(("embedded-config".into(), "  machine: {}\n".into()));
    let p = Params::parse(&form, Source::Form).unwrap();
    let s = to_schematic(&p, &v("1.12.0")).unwrap();
    assert_eq!(
        s.customization.embedded_machine_configuration,
        "  machine: {}\n"
    );
}

#[test]
fn steps_follow_upstreams_order() {
    assert_eq!(params("").step(), Step::Target);
    assert_eq!(params("target=metal").step(), Step::Version);
    assert_eq!(params("target=cloud&version=1.11.6").step(), Step::Cloud);
    assert_eq!(params("target=sbc&version=1.11.6").step(), Step::Board);
    assert_eq!(params("target=metal&version=1.11.6").step(), Step::Arch);
    assert_eq!(
        params("target=cloud&version=1.11.6&platform=aws").step(),
        Step::Arch
    );
    // A single-arch cloud skips the architecture step…
    let p = params("target=cloud&version=1.11.6&platform=hcloud");
    assert_eq!((p.arch.as_str(), p.step()), ("amd64", Step::Extensions));
    // …and going back from extensions (`selected-arch`) reopens the platform step.
    let p = params("target=cloud&version=1.11.6&platform=hcloud&selected-arch=amd64");
    assert_eq!(p.step(), Step::Cloud);
    assert_eq!(p.selected.platform, "hcloud");
    let p = params("target=sbc&version=1.11.6&board=rpi_5&selected-arch=arm64");
    assert_eq!(
        (p.step(), p.selected.board.as_str()),
        (Step::Board, "rpi_5")
    );
    let base = "target=metal&version=1.11.6&arch=amd64";
    assert_eq!(params(base).step(), Step::Extensions);
    assert_eq!(
        params(&format!("{base}&extensions=-")).step(),
        Step::Customization
    );
    assert_eq!(
        params(&format!("{base}&extensions=-&op=search&search=gv")).step(),
        Step::Extensions
    );
    assert_eq!(
        params(&format!("{base}&extensions=-&cmdline-set=true")).step(),
        Step::Final
    );
    let id = "a".repeat(64);
    assert_eq!(
        params(&format!("{base}&schematic-id={id}")).step(),
        Step::Final
    );
    // The metal target always boots the metal platform, whatever the URL says.
    assert_eq!(params("target=metal&platform=aws").platform, "metal");
}

#[test]
fn hostile_input_is_refused_with_a_reason() {
    let refuse = |q: &str| {
        Params::parse(&pairs(q), Source::Query)
            .unwrap_err()
            .to_string()
    };
    assert!(refuse("target=mainframe").contains("unknown target"));
    assert!(refuse("arch=riscv64").contains("unknown architecture"));
    assert!(refuse("bootloader=lilo").contains("invalid bootloader"));
    assert!(refuse("schematic-id=xyz").contains("not a schematic ID"));
    assert!(refuse("embedded-config=machine").contains("never goes into a URL"));
    assert!(refuse(&format!("version={}", "1".repeat(100))).contains("at most"));
    assert!(refuse("cmdline=a%0Ab").contains("control characters"));
    let many: String = (0..MAX_EXTENSIONS + 1)
        .map(|i| format!("extensions=e{i}&"))
        .collect();
    assert!(refuse(&many).contains("extensions values"));
    let huge: Vec<(String, String)> = (0..MAX_PAIRS + 1)
        .map(|i| (format!("k{i}"), String::new()))
        .collect();
    assert!(Params::parse(&huge, Source::Query).is_err());
    let long_cmdline = format!("cmdline={}", "a".repeat(MAX_CMDLINE + 1));
    assert!(refuse(&long_cmdline).contains("at most"));
    // Unknown parameters (upstream's `lang`, anything) are ignored.
    assert_eq!(params("lang=fr&foo=bar").step(), Step::Target);
}

#[test]
fn versions_are_grouped_newest_first_with_the_latest_stable_preselected() {
    let list: Vec<TalosVersion> = ["1.10.7", "1.11.5", "1.11.6", "1.12.0-beta.1", "1.9.6"]
        .iter()
        .map(|s| v(s))
        .collect();
    let groups = version_groups(&list, "");
    let labels: Vec<&str> = groups.iter().map(|g| g.label.as_str()).collect();
    assert_eq!(labels, ["1.12-pre", "1.11", "1.10", "1.9"]);
    assert_eq!(groups[1].versions[0].value, "1.11.6");
    assert_eq!(groups[1].versions[1].value, "1.11.5");
    let checked: Vec<&str> = groups
        .iter()
        .flat_map(|g| g.versions.iter())
        .filter(|c| c.checked)
        .map(|c| c.value.as_str())
        .collect();
    assert_eq!(checked, ["1.11.6"]);
    let back = version_groups(&list, "1.10.7");
    assert!(back[2].versions[0].checked);
    assert!(version_groups(&[], "").is_empty());
}

fn site(external: &str) -> Site {
    let mut config = crate::config::Config::default();
    config.http.external_url = Some(external.parse().unwrap());
    Site::from_config(&config)
}

#[test]
fn final_links_come_from_the_external_url_under_a_sub_path() {
    let site = site("https://boot.example.org/factory/");
    let id: SchematicId = "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"
        .parse()
        .unwrap();
    let s = Schematic::default();
    let view = final_view(&FinalInput {
        site: &site,
        pxe_base: "http://192.0.2.10:8080",
        id: &id,
        schematic: &s,
        yaml: s.canonical_yaml(),
        platform: &platforms::METAL,
        board: None,
        arch: "amd64",
        secureboot: false,
        version: &v("1.11.6"),
        talosctl: Ok(Vec::new()),
    });
    let urls: Vec<&str> = view
        .groups
        .iter()
        .flat_map(|g| g.links.iter())
        .map(|l| l.url.as_str())
        .collect();
    let base = format!("https://boot.example.org/factory/image/{id}/v1.11.6");
    for name in [
        "metal-amd64.iso",
        "metal-amd64.raw.zst",
        "metal-amd64.qcow2",
        "kernel-amd64",
        "cmdline-metal-amd64",
        "initramfs-amd64.xz",
        "metal-amd64-uki.efi",
    ] {
        assert!(
            urls.contains(&format!("{base}/{name}").as_str()),
            "{name}: {urls:?}"
        );
    }
    for u in &urls {
        assert_eq!(u.matches("boot.example.org").count(), 1, "{u}");
    }
    assert_eq!(
        view.pxe.as_deref(),
        Some(format!("http://192.0.2.10:8080/pxe/{id}/v1.11.6/metal-amd64").as_str())
    );
    assert_eq!(
        view.installer.as_deref(),
        Some(format!("boot.example.org/metal-installer/{id}:v1.11.6").as_str())
    );
    assert_eq!(
        view.assign,
        format!("/factory/ui/machines?schematic={id}&version=v1.11.6")
    );
    assert!(view.notes.is_empty(), "{:?}", view.notes);
    assert!(view.cluster_create.is_none());
}

#[test]
fn final_links_follow_the_platform_version_and_what_is_served() {
    let site = site("http://192.0.2.1:8080");
    let id: SchematicId = "a".repeat(64).parse().unwrap();
    let s = Schematic::default();
    let view = |platform: &Platform, board: Option<&Board>, version: &str, sb: bool| {
        final_view(&FinalInput {
            site: &site,
            pxe_base: "http://192.0.2.1:8080",
            id: &id,
            schematic: &s,
            yaml: String::new(),
            platform,
            board,
            arch: if board.is_some() { "arm64" } else { "amd64" },
            secureboot: sb,
            version: &v(version),
            talosctl: Ok(Vec::new()),
        })
    };
    // Before 1.10: the plain installer repository.
    let old = view(&platforms::METAL, None, "1.9.6", false);
    assert_eq!(
        old.installer.unwrap(),
        format!("192.0.2.1:8080/installer/{id}:v1.9.6")
    );
    // A cloud platform links its own boot methods; AWS has no ISO and no PXE.
    let aws = view(platforms::cloud("aws").unwrap(), None, "1.11.6", false);
    let urls: Vec<String> = aws
        .groups
        .iter()
        .flat_map(|g| g.links.iter().map(|l| l.url.clone()))
        .collect();
    assert!(urls.iter().any(|u| u.ends_with("/aws-amd64.raw.xz")));
    assert!(!urls.iter().any(|u| u.ends_with(".iso")));
    assert!(aws.pxe.is_none());
    assert_eq!(
        aws.installer.unwrap(),
        format!("192.0.2.1:8080/aws-installer/{id}:v1.11.6")
    );
    // SecureBoot is not served: said, and no `-secureboot` link anywhere.
    let sb = view(&platforms::METAL, None, "1.11.6", true);
    assert!(sb.notes[0].contains("SecureBoot assets are not served"));
    assert!(
        !sb.groups
            .iter()
            .flat_map(|g| g.links.iter())
            .any(|l| l.url.contains("secureboot"))
    );
    // Boards: the disk image is not built by this release, and the page says so.
    let rpi = view(
        &platforms::METAL,
        platforms::board_named("rpi_generic"),
        "1.11.6",
        false,
    );
    assert!(rpi.groups.is_empty());
    assert!(rpi.notes[0].contains("metal-arm64.raw.xz"));
    assert_eq!(
        rpi.installer.unwrap(),
        format!("192.0.2.1:8080/metal-installer/{id}:v1.11.6")
    );
    // talosctl cluster create from 1.12.0-alpha.2.
    let new = view(&platforms::METAL, None, "1.12.0", false);
    assert_eq!(
        new.cluster_create.unwrap(),
        format!("talosctl cluster create qemu --schematic-id={id} --talos-version=v1.12.0")
    );
    // An embedded configuration: only kernel and command line, no installer.
    let mut embedded = Schematic::default();
    embedded.customization.embedded_machine_configuration = "machine: {}".into();
    let e = final_view(&FinalInput {
        site: &site,
        pxe_base: "http://192.0.2.1:8080",
        id: &id,
        schematic: &embedded,
        yaml: String::new(),
        platform: &platforms::METAL,
        board: None,
        arch: "amd64",
        secureboot: false,
        version: &v("1.12.0"),
        talosctl: Ok(Vec::new()),
    });
    let names: Vec<&str> = e
        .groups
        .iter()
        .flat_map(|g| g.links.iter())
        .map(|l| l.url.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(names, ["kernel-amd64", "cmdline-metal-amd64"]);
    assert!(e.installer.is_none() && e.pxe.is_none());
}

#[test]
fn a_board_is_arm64_whatever_the_link_says() {
    let p = params("target=sbc&board=rpi_generic&arch=amd64&version=1.11.6");
    assert_eq!(p.arch, "arm64");
    let p = params("target=sbc&board=rpi_generic&version=1.11.6");
    assert_eq!(p.arch, "arm64");
    // Going back from the arch step (upstream's `selected-arch`) clears the board instead.
    let p = params("target=sbc&board=rpi_generic&selected-arch=arm64&version=1.11.6");
    assert!(p.board.is_empty());
}
