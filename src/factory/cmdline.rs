//! Kernel command lines: the `go-procfs` model Talos uses (`siderolabs/go-procfs:procfs/cmdline.go`)
//! and the imager's construction algorithm (`siderolabs/talos:pkg/imager/imager.go`
//! `buildCmdline`, `docs/formats.md` §Kernel command line), as run by Image Factory: the Talos
//! code linked into the factory, switched by the *target* version's quirks.
//!
//! ```
//! use bootfactory::factory::cmdline::{build_cmdline, CmdlineInput};
//! use bootfactory::factory::profile::{Arch, OutputKind};
//! let input = CmdlineInput::new("metal", Arch::Amd64, OutputKind::Cmdline, "v1.11.0".parse().unwrap());
//! assert_eq!(
//!     build_cmdline(&input),
//!     "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 \
//!      nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1"
//! );
//! ```

use std::fmt;

use super::meta;
use super::profile::{Arch, OutputKind};
use super::quirks::Quirks;
use crate::version::TalosVersion;

/// A kernel command line with go-procfs semantics: an ordered list of keys, each with an ordered
/// list of values (a value of `""` renders as the bare key).
///
/// * Parsing splits on Unicode whitespace (Go `strings.Fields`; no quoting) and each token at its
///   first `=`; a repeated key adds its values to the first occurrence's entry.
/// * Rendering writes, for every key in order and every value, `key` (empty value) or
///   `key=value`, separated by single spaces, without a trailing newline. A key left without
///   values renders nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    params: Vec<(String, Vec<String>)>,
}

impl Cmdline {
    /// An empty command line.
    pub fn new() -> Cmdline {
        Cmdline::default()
    }

    /// Parses a command line (go-procfs `NewCmdline`).
    pub fn parse(s: &str) -> Cmdline {
        let mut c = Cmdline::new();
        for token in s.split_whitespace() {
            let (k, v) = token.split_once('=').unwrap_or((token, ""));
            c.append(k, v);
        }
        c
    }

    /// Parses a list of arguments as one command line (go-procfs joins them with spaces).
    fn parse_args<S: AsRef<str>>(args: &[S]) -> Cmdline {
        let joined: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        Cmdline::parse(&joined.join(" "))
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.params.iter().position(|(k, _)| k == key)
    }

    /// The values of `key`, if the key is present (possibly with no values left).
    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.position(key).map(|i| self.params[i].1.as_slice())
    }

    /// The keys in order, with their values.
    pub fn params(&self) -> &[(String, Vec<String>)] {
        &self.params
    }

    /// Adds `value` to `key`'s values, or adds the key at the end (go-procfs `Append`).
    pub fn append(&mut self, key: &str, value: &str) {
        match self.position(key) {
            Some(i) => self.params[i].1.push(value.to_string()),
            None => self.params.push((key.to_string(), vec![value.to_string()])),
        }
    }

    /// Replaces `key`'s values wholesale, keeping its position, or adds it at the end
    /// (go-procfs `Set`).
    pub fn set(&mut self, key: &str, values: Vec<String>) {
        match self.position(key) {
            Some(i) => self.params[i].1 = values,
            None => self.params.push((key.to_string(), values)),
        }
    }

    /// Removes `key` entirely (go-procfs `DeleteAll`).
    pub fn delete_all(&mut self, key: &str) {
        self.params.retain(|(k, _)| k != key);
    }

    /// Removes every value of `key` equal to one of `values`; the key itself stays, possibly
    /// with no values (go-procfs `Delete`).
    pub fn delete_values<S: AsRef<str>>(&mut self, key: &str, values: &[S]) {
        if let Some(i) = self.position(key) {
            self.params[i]
                .1
                .retain(|v| !values.iter().any(|d| d.as_ref() == v));
        }
    }

    /// go-procfs `SetAll`: parses `args` (merging repeated keys), then [`Cmdline::set`]s each
    /// key in order of first appearance.
    pub fn set_all<S: AsRef<str>>(&mut self, args: &[S]) {
        for (k, vs) in Cmdline::parse_args(args).params {
            self.set(&k, vs);
        }
    }

    /// go-procfs `AppendAll`: parses `args` (merging repeated keys), then for each key in order
    /// of first appearance:
    ///
    /// * with `delete_negated`, a key `-name` (longer than the bare `-`) removes: a plain
    ///   `-name` (or `-name=`) deletes `name` entirely; `-name=value` removes only the values
    ///   equal to `value` (the key stays, possibly empty);
    /// * a key listed in `overwrite_keys` replaces the existing values in place (like
    ///   [`Cmdline::set`]);
    /// * otherwise each value is appended (no de-duplication), new keys at the end.
    pub fn append_all<S: AsRef<str>>(
        &mut self,
        args: &[S],
        overwrite_keys: &[&str],
        delete_negated: bool,
    ) {
        for (k, vs) in Cmdline::parse_args(args).params {
            if delete_negated && k.len() > 1 && k.starts_with('-') {
                let target = &k[1..];
                if vs.len() == 1 && vs[0].is_empty() {
                    self.delete_all(target);
                } else {
                    self.delete_values(target, &vs);
                }
                continue;
            }
            if overwrite_keys.contains(&k.as_str()) {
                self.set(&k, vs);
                continue;
            }
            for v in vs {
                self.append(&k, &v);
            }
        }
    }
}

impl fmt::Display for Cmdline {
    /// go-procfs `String`: `key` or `key=value` per value, each followed by a space, then
    /// trailing spaces trimmed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        for (k, vs) in &self.params {
            for v in vs {
                s.push_str(k);
                if !v.is_empty() {
                    s.push('=');
                    s.push_str(v);
                }
                s.push(' ');
            }
        }
        f.write_str(s.trim_end_matches(' '))
    }
}

/// Everything the imager's `buildCmdline` looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdlineInput<'a> {
    /// Platform as in the asset path (`metal`, `aws`, `digital-ocean`, `equinixMetal`, …).
    pub platform: &'a str,
    /// Target architecture.
    pub arch: Arch,
    /// Output kind (ISO adds `talos.halt_if_installed=1`; disk images omit META).
    pub kind: OutputKind,
    /// SecureBoot variant (`lockdown=confidentiality` below Talos 1.14).
    pub secure_boot: bool,
    /// Target Talos version (its quirks decide the version-dependent args).
    pub version: TalosVersion,
    /// The schematic's `extraKernelArgs` (only pass them where they apply, see
    /// [`crate::factory::profile::AssetProfile::extra_kernel_args_apply`]).
    pub extra_kernel_args: &'a [String],
    /// The schematic's META values (only pass them where they apply, see
    /// [`crate::factory::profile::AssetProfile::meta_applies`]).
    pub meta: &'a [(u8, String)],
    /// Kernel args from the overlay's options (`overlay.GetOptions(extra).KernelArgs`).
    pub overlay_kernel_args: Option<Vec<String>>,
}

impl<'a> CmdlineInput<'a> {
    /// An input without SecureBoot, extra args, META or overlay.
    pub fn new(
        platform: &'a str,
        arch: Arch,
        kind: OutputKind,
        version: TalosVersion,
    ) -> CmdlineInput<'a> {
        CmdlineInput {
            platform,
            arch,
            kind,
            secure_boot: false,
            version,
            extra_kernel_args: &[],
            meta: &[],
            overlay_kernel_args: None,
        }
    }
}

/// A platform name Talos does not know (`unknown platform: "<name>"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown platform: {}", crate::gocompat::strconv::quote(.0))]
pub struct UnknownPlatform(pub String);

/// The value of `talos.platform` for a platform name (`Platform.Name()`): the name itself for
/// known platforms, `equinixMetal` for its legacy alias `packet`; `None` if Talos does not know
/// the platform.
pub fn platform_name(platform: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "akamai",
        "alibabacloud",
        "aws",
        "azure",
        "cloudstack",
        "container",
        "digital-ocean",
        "equinixMetal",
        "exoscale",
        "gcp",
        "hcloud",
        "metal",
        "nocloud",
        "opennebula",
        "openstack",
        "oracle",
        "scaleway",
        "upcloud",
        "vmware",
        "vultr",
    ];
    if platform == "packet" {
        return Some("equinixMetal");
    }
    KNOWN.iter().copied().find(|p| *p == platform)
}

/// The platform's own kernel args (`platform.KernelArgs(arch, quirks)`, `docs/formats.md`
/// §Platform args),
/// for the Talos code the factory links (so e.g. vmware's args apply to every target).
/// Unknown platforms have none.
pub fn platform_kernel_args(platform: &str, arch: Arch, quirks: &Quirks) -> Vec<&'static str> {
    let name = platform_name(platform).unwrap_or("");
    let mut args: Vec<&'static str> = match (name, arch) {
        ("metal", Arch::Amd64) if quirks.supports_metal_platform_console_ttys0() => {
            vec!["console=ttyS0", "console=tty0"]
        }
        ("metal", Arch::Amd64) => vec!["console=tty0"],
        ("metal", Arch::Arm64) => vec!["console=ttyAMA0", "console=tty0"],
        (
            "aws" | "cloudstack" | "exoscale" | "hcloud" | "nocloud" | "opennebula" | "openstack"
            | "alibabacloud",
            _,
        ) => vec!["console=tty1", "console=ttyS0", "net.ifnames=0"],
        ("oracle" | "scaleway", _) => vec![
            "console=tty1",
            "console=ttyS0",
            "net.ifnames=0",
            "talos.dashboard.disabled=1",
        ],
        ("akamai" | "digital-ocean", _) => vec![
            "console=ttyS0",
            "console=tty0",
            "console=tty1",
            "net.ifnames=0",
        ],
        ("azure", _) => vec![
            "console=ttyS0,115200n8",
            "earlyprintk=ttyS0,115200",
            "rootdelay=300",
            "net.ifnames=0",
            "talos.dashboard.disabled=1",
            "sysctl.kernel.kexec_load_disabled=1",
        ],
        ("gcp", _) => vec![
            "console=ttyS0",
            "net.ifnames=0",
            "talos.dashboard.disabled=1",
            "sysctl.kernel.kexec_load_disabled=1",
        ],
        ("upcloud" | "vultr", _) => vec!["net.ifnames=0"],
        ("vmware", Arch::Amd64) => vec![
            "talos.config=guestinfo",
            "console=tty0",
            "console=ttyS0",
            "earlyprintk=ttyS0,115200",
            "net.ifnames=0",
        ],
        ("vmware", Arch::Arm64) => vec![
            "talos.config=guestinfo",
            "console=tty0",
            "console=ttyAMA0",
            "net.ifnames=0",
        ],
        ("equinixMetal", Arch::Amd64) => vec!["console=ttyS1,115200n8"],
        ("equinixMetal", Arch::Arm64) => vec!["console=ttyAMA0,115200"],
        _ => vec![],
    };
    if name == "aws" && quirks.nvme_io_timeout_aws_only() {
        // ≥ 1.14: the NVMe timeout is AWS-only (`docs/formats.md` §Default args). Upstream's
        // rule does not say where it is emitted; we place it with AWS's platform args.
        args.push(NVME_IO_TIMEOUT);
    }
    args
}

const NVME_IO_TIMEOUT: &str = "nvme_core.io_timeout=4294967295";

/// `kernel.DefaultArgs(quirks)` (`docs/formats.md` §Default args): `init_on_alloc=1`
/// (dropped ≥ 1.14), `slab_nomerge`, `pti=on`, `consoleblank=0`,
/// `nvme_core.io_timeout=4294967295` (AWS-only ≥ 1.14, see [`platform_kernel_args`]),
/// `printk.devkmsg=on`; then IMA args (≤ 1.10.99), `selinux=1` (≥ 1.10),
/// `module.sig_enforce=1` (≥ 1.12), `proc_mem.force_override=never` (≥ 1.13).
pub fn default_kernel_args(quirks: &Quirks) -> Vec<&'static str> {
    let mut args = Vec::with_capacity(12);
    if !quirks.drops_init_on_alloc() {
        args.push("init_on_alloc=1");
    }
    args.extend(["slab_nomerge=", "pti=on", "consoleblank=0"]);
    if !quirks.nvme_io_timeout_aws_only() {
        args.push(NVME_IO_TIMEOUT);
    }
    args.push("printk.devkmsg=on");
    if quirks.ima_args() {
        args.extend(["ima_template=ima-ng", "ima_appraise=fix", "ima_hash=sha512"]);
    }
    if quirks.selinux() {
        args.push("selinux=1");
    }
    if quirks.module_sig_enforce() {
        args.push("module.sig_enforce=1");
    }
    if quirks.proc_mem_force_override() {
        args.push("proc_mem.force_override=never");
    }
    args
}

/// `kernel.SecureBootArgs(quirks)`: `lockdown=confidentiality`, not forced from Talos 1.14.
pub fn secure_boot_kernel_args(quirks: &Quirks) -> Vec<&'static str> {
    if quirks.secure_boot_forces_lockdown() {
        vec!["lockdown=confidentiality"]
    } else {
        vec![]
    }
}

/// The imager's `buildCmdline` (`docs/formats.md` §Construction):
///
/// 1. `talos.platform=<Name()>`;
/// 2. `SetAll(platform args)`;
/// 3. ISO and Talos ≥ 1.8: `talos.halt_if_installed=1`;
/// 4. (legacy boards, Talos < 1.7: not modelled — `docs/formats.md` does not record their args);
/// 5. overlay: `SetAll(overlay kernel args)`;
/// 6. `AppendAll(DefaultArgs(quirks))`;
/// 7. SecureBoot: `AppendAll(SecureBootArgs(quirks))`;
/// 8. META values and kind ≠ image: `talos.environment=INSTALLER_META_BASE64=<encoded>`;
/// 9. `AppendAll(extra args, overwrite console and talos.platform, delete negated)`.
///
/// An unknown platform renders `talos.platform=<as given>` without platform args; the factory
/// refuses such names before building (`platform_name`, [`UnknownPlatform`]).
pub fn build_cmdline(input: &CmdlineInput) -> String {
    let quirks = Quirks::new(&input.version);
    let name = platform_name(input.platform).unwrap_or(input.platform);

    let mut c = Cmdline::new();
    c.append("talos.platform", name);
    c.set_all(&platform_kernel_args(input.platform, input.arch, &quirks));
    if input.kind == OutputKind::Iso && quirks.supports_iso_halt_if_installed() {
        c.append("talos.halt_if_installed", "1");
    }
    if let Some(overlay) = &input.overlay_kernel_args {
        c.set_all(overlay);
    }
    c.append_all(&default_kernel_args(&quirks), &[], false);
    if input.secure_boot {
        c.append_all(&secure_boot_kernel_args(&quirks), &[], false);
    }
    if !input.meta.is_empty() && input.kind != OutputKind::Image {
        c.append(
            meta::ENVIRONMENT_KEY,
            &format!(
                "{}={}",
                meta::INSTALLER_META_ENV,
                meta::encode_meta(input.meta, &quirks)
            ),
        );
    }
    c.append_all(
        input.extra_kernel_args,
        &["console", "talos.platform"],
        true,
    );
    c.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> TalosVersion {
        s.parse().unwrap()
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    // --- go-procfs model (vectors from go-procfs' own tests) ---

    #[test]
    fn parse_and_render() {
        let c = Cmdline::parse("boot=xyz root=/dev/abc nogui console=tty0 console=ttyS0,9600");
        assert_eq!(c.get("console").unwrap(), ["tty0", "ttyS0,9600"]);
        assert_eq!(c.get("nogui").unwrap(), [""]);
        assert_eq!(
            c.to_string(),
            "boot=xyz root=/dev/abc nogui console=tty0 console=ttyS0,9600"
        );
        let c = Cmdline::parse(" root=/dev/abc=1  nogui  \n");
        assert_eq!(c.get("root").unwrap(), ["/dev/abc=1"]);
        assert_eq!(c.to_string(), "root=/dev/abc=1 nogui");
        let c = Cmdline::parse("root=/dev/sda nogui root=/dev/sdb");
        assert_eq!(c.to_string(), "root=/dev/sda root=/dev/sdb nogui");
        assert_eq!(Cmdline::parse("").to_string(), "");
        assert_eq!(Cmdline::parse("slab_nomerge=").to_string(), "slab_nomerge");
        assert_eq!(Cmdline::parse("a\u{a0}b\u{3000}c\td").params().len(), 4);
        // `"` is not special.
        assert_eq!(Cmdline::parse(r#"a="b c""#).to_string(), r#"a="b c""#);
    }

    #[test]
    fn set_and_set_all() {
        let mut c = Cmdline::parse("root=/dev/sdb root=/dev/sdc aye=sir");
        c.set_all(&["root=/dev/mmcblk0"]);
        assert_eq!(c.to_string(), "root=/dev/mmcblk0 aye=sir");
        let mut c = Cmdline::new();
        c.set_all(&["root=/dev/sda", "root=/dev/sdb"]);
        assert_eq!(c.to_string(), "root=/dev/sda root=/dev/sdb");
        let mut c = Cmdline::parse("boot=xyz root=/dev/abc nogui console=tty0 console=ttyS0,9600");
        c.set("console", vec![String::new()]);
        assert_eq!(c.to_string(), "boot=xyz root=/dev/abc nogui console");
    }

    #[test]
    fn append_all_go_procfs_vectors() {
        type Case = (
            &'static str,
            &'static [&'static str],
            &'static [&'static str],
            bool,
            &'static str,
        );
        let cases: &[Case] = &[
            (
                "ip=dhcp console=x root=/dev/sdc",
                &["root=/dev/sda", "root=/dev/sdb"],
                &[],
                false,
                "ip=dhcp console=x root=/dev/sdc root=/dev/sda root=/dev/sdb",
            ),
            (
                "root=/dev/sdb",
                &["this=that=those"],
                &[],
                false,
                "root=/dev/sdb this=that=those",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                &["console=tty0", "console=ttyS1,115200", "nogui"],
                &[],
                false,
                "console=tty0 console=ttyS0 console=tty0 console=ttyS1,115200 root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                &["console=tty0", "console=ttyS1,115200", "nogui"],
                &["console"],
                false,
                "console=tty0 console=ttyS1,115200 root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                &["-console", "nogui"],
                &["console"],
                true,
                "root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0,9600 root=/dev/sdb",
                &["-console", "nogui"],
                &[],
                true,
                "root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0,9600 root=/dev/sdb",
                &["-console=ttyS0,9600", "nogui"],
                &[],
                true,
                "console=tty0 root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                &["-console=tty0", "nogui"],
                &["console"],
                true,
                "console=ttyS0 root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                &["-console", "nogui", "console=ttyAMA0"],
                &["console"],
                true,
                "root=/dev/sdb nogui console=ttyAMA0",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                &["-console=tty0", "nogui", "console=ttyAMA0"],
                &[],
                true,
                "console=ttyS0 console=ttyAMA0 root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                &["-console=tty0", "nogui", "console=ttyAMA0"],
                &["console"],
                true,
                "console=ttyAMA0 root=/dev/sdb nogui",
            ),
            // Without delete_negated, `-key` is an ordinary key.
            (
                "console=tty0",
                &["-console"],
                &[],
                false,
                "console=tty0 -console",
            ),
            // A bare `-` is an ordinary argument.
            ("console=tty0", &["-", "-"], &[], true, "console=tty0 - -"),
            // Removing every value leaves the key in place; a later value lands there.
            ("a=1 b=2", &["-a=1", "c", "a=3"], &[], true, "a=3 b=2 c"),
            // `-key=` is the same as `-key`.
            ("a=1 b=2", &["-a="], &[], true, "b=2"),
            // Negating an absent key is a no-op.
            ("a=1", &["-zz", "-zz=1"], &[], true, "a=1"),
            // Empty arguments vanish.
            ("a=1", &["", "  ", "b"], &[], true, "a=1 b"),
        ];
        for (initial, extra, overwrite, negated, want) in cases {
            let mut c = Cmdline::parse(initial);
            c.append_all(extra, overwrite, *negated);
            assert_eq!(c.to_string(), *want, "{initial} + {extra:?}");
        }
    }

    // --- buildCmdline ---

    const BASE_IMA: &str = "init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512";
    const BASE_111: &str = "init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1";

    fn build(platform: &str, arch: Arch, kind: OutputKind, version: &str) -> String {
        build_cmdline(&CmdlineInput::new(platform, arch, kind, v(version)))
    }

    #[test]
    fn golden_talos_formats_3_4() {
        use Arch::*;
        use OutputKind::Cmdline as C;
        assert_eq!(
            build("metal", Amd64, C, "v1.7.0"),
            format!("talos.platform=metal console=ttyS0 console=tty0 {BASE_IMA}")
        );
        for ver in ["v1.8.0", "v1.9.6"] {
            assert_eq!(
                build("metal", Amd64, C, ver),
                format!("talos.platform=metal console=tty0 {BASE_IMA}")
            );
        }
        assert_eq!(
            build("metal", Amd64, C, "v1.10.9"),
            format!("talos.platform=metal console=tty0 {BASE_IMA} selinux=1")
        );
        assert_eq!(
            build("metal", Amd64, C, "v1.11.6"),
            format!("talos.platform=metal console=tty0 {BASE_111}")
        );
        assert_eq!(
            build("metal", Arm64, C, "v1.11.6"),
            format!("talos.platform=metal console=ttyAMA0 console=tty0 {BASE_111}")
        );
        assert_eq!(
            build("metal", Arm64, C, "v1.7.0"),
            format!("talos.platform=metal console=ttyAMA0 console=tty0 {BASE_IMA}")
        );
        for arch in [Amd64, Arm64] {
            assert_eq!(
                build("aws", arch, C, "v1.11.0"),
                format!("talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 {BASE_111}")
            );
        }
        assert_eq!(
            build("metal", Amd64, OutputKind::Iso, "v1.11.0"),
            format!("talos.platform=metal console=tty0 talos.halt_if_installed=1 {BASE_111}")
        );
        // No halt before 1.8, and never outside ISO.
        assert_eq!(
            build("metal", Amd64, OutputKind::Iso, "v1.7.0"),
            format!("talos.platform=metal console=ttyS0 console=tty0 {BASE_IMA}")
        );
        assert_eq!(
            build("metal", Amd64, OutputKind::Image, "v1.11.0"),
            format!("talos.platform=metal console=tty0 {BASE_111}")
        );
    }

    #[test]
    fn golden_image_factory_10_4_and_10_5() {
        use Arch::*;
        use OutputKind::Cmdline as C;
        assert_eq!(
            build("metal", Amd64, C, "v1.5.1"),
            "talos.platform=metal console=ttyS0 console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512"
        );
        assert_eq!(
            build("aws", Arm64, C, "v1.5.1"),
            "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512"
        );
        assert_eq!(
            build("metal", Amd64, C, "v1.5.0"),
            format!("talos.platform=metal console=ttyS0 console=tty0 {BASE_IMA}")
        );
        assert_eq!(
            build("metal", Amd64, C, "v1.11.0"),
            "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1"
        );
        assert_eq!(
            build("equinixMetal", Amd64, C, "v1.5.0"),
            "talos.platform=equinixMetal console=ttyS1,115200n8 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512"
        );
        let mut sb = CmdlineInput::new("metal", Amd64, C, v("v1.5.0"));
        sb.secure_boot = true;
        assert_eq!(
            build_cmdline(&sb),
            "talos.platform=metal console=ttyS0 console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512 lockdown=confidentiality"
        );
        sb.version = v("v1.11.0");
        assert_eq!(
            build_cmdline(&sb),
            "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 lockdown=confidentiality"
        );
    }

    #[test]
    fn aws_arm64_across_versions() {
        let head = "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0";
        let want = [
            ("v1.7.0", format!("{head} {BASE_IMA}")),
            ("v1.9.0", format!("{head} {BASE_IMA}")),
            ("v1.10.0", format!("{head} {BASE_IMA} selinux=1")),
            ("v1.11.0", format!("{head} {BASE_111}")),
            ("v1.12.0", format!("{head} {BASE_111} module.sig_enforce=1")),
            (
                "v1.13.0",
                format!("{head} {BASE_111} module.sig_enforce=1 proc_mem.force_override=never"),
            ),
            (
                "v1.14.0",
                format!(
                    "{head} nvme_core.io_timeout=4294967295 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
                ),
            ),
        ];
        for (ver, line) in want {
            assert_eq!(
                build("aws", Arch::Arm64, OutputKind::Cmdline, ver),
                line,
                "{ver}"
            );
        }
        // Pre-releases count as their release.
        assert_eq!(
            build("aws", Arch::Arm64, OutputKind::Cmdline, "v1.12.0-beta.1"),
            format!("{head} {BASE_111} module.sig_enforce=1")
        );
    }

    #[test]
    fn metal_from_1_14() {
        let mut sb = CmdlineInput::new("metal", Arch::Amd64, OutputKind::Cmdline, v("v1.14.0"));
        let want = "talos.platform=metal console=tty0 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never";
        assert_eq!(build_cmdline(&sb), want);
        sb.secure_boot = true;
        assert_eq!(build_cmdline(&sb), want);
    }

    #[test]
    fn extra_args_and_meta() {
        let extra = args(&["nolapic", "nomodeset"]);
        let meta = vec![(0x0a, r#"{"externalIPs":["1.2.3.4"]}"#.to_string())];
        let meta_arg =
            "talos.environment=INSTALLER_META_BASE64=MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ==";
        let base = format!("talos.platform=metal console=tty0 {BASE_111}");

        let mut i = CmdlineInput::new("metal", Arch::Amd64, OutputKind::Cmdline, v("v1.11.0"));
        i.extra_kernel_args = &extra;
        assert_eq!(build_cmdline(&i), format!("{base} nolapic nomodeset"));

        let mut i = CmdlineInput::new("metal", Arch::Amd64, OutputKind::Cmdline, v("v1.11.0"));
        i.meta = &meta;
        assert_eq!(build_cmdline(&i), format!("{base} {meta_arg}"));

        // META is never in a disk image's cmdline.
        i.kind = OutputKind::Image;
        assert_eq!(build_cmdline(&i), base);

        // Order: lockdown, then META, then extra args.
        let mut i = CmdlineInput::new("metal", Arch::Amd64, OutputKind::Iso, v("v1.11.0"));
        i.secure_boot = true;
        i.meta = &meta;
        i.extra_kernel_args = &extra;
        assert_eq!(
            build_cmdline(&i),
            format!(
                "talos.platform=metal console=tty0 talos.halt_if_installed=1 {BASE_111} lockdown=confidentiality {meta_arg} nolapic nomodeset"
            )
        );
    }

    #[test]
    fn extra_args_overrides() {
        let run = |platform: &str, ver: &str, extra: &[&str]| {
            let extra = args(extra);
            let mut i = CmdlineInput::new(platform, Arch::Amd64, OutputKind::Cmdline, v(ver));
            i.extra_kernel_args = &extra;
            build_cmdline(&i)
        };
        assert_eq!(
            run("metal", "v1.7.0", &["console=ttyS0,115200"]),
            format!("talos.platform=metal console=ttyS0,115200 {BASE_IMA}")
        );
        assert_eq!(
            run("aws", "v1.11.0", &["console=ttyS0,115200", "console=tty0"]),
            format!(
                "talos.platform=aws console=ttyS0,115200 console=tty0 net.ifnames=0 {BASE_111}"
            )
        );
        assert_eq!(
            run("metal", "v1.11.0", &["-selinux"]),
            "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on"
        );
        assert_eq!(
            run("aws", "v1.11.0", &["-console"]),
            format!("talos.platform=aws net.ifnames=0 {BASE_111}")
        );
        assert_eq!(
            run("aws", "v1.11.0", &["net.ifnames=0"]),
            format!(
                "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 net.ifnames=0 {BASE_111}"
            )
        );
        assert_eq!(
            run(
                "metal",
                "v1.11.0",
                &["-init_on_alloc=1", "talos.platform=nocloud"]
            ),
            "talos.platform=nocloud console=tty0 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1"
        );
        assert_eq!(
            run("metal", "v1.11.0", &["-console", "console=ttyS1"]),
            format!("talos.platform=metal {BASE_111} console=ttyS1")
        );
        assert_eq!(
            run("metal", "v1.11.0", &["slab_nomerge", "vga=791"]),
            format!(
                "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 vga=791"
            )
        );
    }

    #[test]
    fn platform_table() {
        use Arch::*;
        let q = Quirks::new(&v("v1.11.0"));
        let line = |p: &str, a: Arch| platform_kernel_args(p, a, &q).join(" ");
        assert_eq!(
            line("oracle", Amd64),
            "console=tty1 console=ttyS0 net.ifnames=0 talos.dashboard.disabled=1"
        );
        assert_eq!(
            line("digital-ocean", Amd64),
            "console=ttyS0 console=tty0 console=tty1 net.ifnames=0"
        );
        assert_eq!(
            line("azure", Arm64),
            "console=ttyS0,115200n8 earlyprintk=ttyS0,115200 rootdelay=300 net.ifnames=0 talos.dashboard.disabled=1 sysctl.kernel.kexec_load_disabled=1"
        );
        assert_eq!(
            line("gcp", Amd64),
            "console=ttyS0 net.ifnames=0 talos.dashboard.disabled=1 sysctl.kernel.kexec_load_disabled=1"
        );
        assert_eq!(line("vultr", Amd64), "net.ifnames=0");
        assert_eq!(
            line("vmware", Amd64),
            "talos.config=guestinfo console=tty0 console=ttyS0 earlyprintk=ttyS0,115200 net.ifnames=0"
        );
        assert_eq!(
            line("vmware", Arm64),
            "talos.config=guestinfo console=tty0 console=ttyAMA0 net.ifnames=0"
        );
        assert_eq!(line("equinixMetal", Arm64), "console=ttyAMA0,115200");
        assert_eq!(line("packet", Amd64), "console=ttyS1,115200n8");
        assert_eq!(line("container", Amd64), "");
        assert_eq!(line("nope", Amd64), "");

        // vmware's args apply to every target version (factory code).
        assert_eq!(
            build("vmware", Amd64, OutputKind::Cmdline, "v1.8.0"),
            format!(
                "talos.platform=vmware talos.config=guestinfo console=tty0 console=ttyS0 earlyprintk=ttyS0,115200 net.ifnames=0 {BASE_IMA}"
            )
        );
        assert_eq!(
            build("packet", Amd64, OutputKind::Cmdline, "v1.5.0"),
            build("equinixMetal", Amd64, OutputKind::Cmdline, "v1.5.0")
        );
        // Azure's `console=ttyS0,115200n8` collapses nothing; a console override replaces it.
        let extra = args(&["console=tty0"]);
        let mut i = CmdlineInput::new("azure", Amd64, OutputKind::Cmdline, v("v1.11.0"));
        i.extra_kernel_args = &extra;
        assert!(
            build_cmdline(&i)
                .starts_with("talos.platform=azure console=tty0 earlyprintk=ttyS0,115200 ")
        );
    }

    #[test]
    fn overlay_args_use_set_all() {
        let mut i = CmdlineInput::new("metal", Arch::Arm64, OutputKind::Image, v("v1.11.0"));
        i.overlay_kernel_args = Some(args(&[
            "console=tty0",
            "console=ttyAMA0,115200",
            "sysctl.kernel.kexec_load_disabled=1",
            "talos.dashboard.disabled=1",
        ]));
        assert_eq!(
            build_cmdline(&i),
            format!(
                "talos.platform=metal console=tty0 console=ttyAMA0,115200 sysctl.kernel.kexec_load_disabled=1 talos.dashboard.disabled=1 {BASE_111}"
            )
        );
    }

    #[test]
    fn unknown_platform() {
        let i = CmdlineInput::new("bogus", Arch::Amd64, OutputKind::Cmdline, v("v1.11.0"));
        assert_eq!(
            build_cmdline(&i),
            format!("talos.platform=bogus {BASE_111}")
        );
        assert_eq!(platform_name("bogus"), None);
        assert_eq!(platform_name("metal"), Some("metal"));
        assert_eq!(
            UnknownPlatform("bogus".into()).to_string(),
            r#"unknown platform: "bogus""#
        );
    }
}
