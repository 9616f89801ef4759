//! The Image Factory wizard's logic (no HTML): its state, which step comes next, the schematic
//! the choices make, and what each step's page shows.
//!
//! The state lives in the URL, with upstream's parameter names, so a wizard link from
//! `factory.talos.dev` pasted onto bootfactory's host lands on the same step:
//!
//! | parameter | step that sets it |
//! | --- | --- |
//! | `target` (`metal`, `cloud`, `sbc`) | hardware type |
//! | `version` (no `v`: `1.11.6`) | Talos version |
//! | `platform` (clouds; `metal` otherwise) | cloud platform |
//! | `board` (SBC; forces `arch=arm64`) | single-board computer |
//! | `arch`, `secureboot` | architecture (skipped for single-arch clouds) |
//! | `extensions` (repeated; `-` = none selected) | system extensions |
//! | `cmdline`, `cmdline-set`, `bootloader`, `overlay-options` | customization |
//! | `embedded-config` | customization, **POST only**: it may hold secrets, never in a URL |
//! | `schematic-id` | re-hydrates the final page from a stored schematic |
//! | `selected-*` | what a step preselects when going back |
//!
//! Which step shows follows upstream's `wizard()` in order: no target → hardware type; no
//! version → version; a cloud without platform → cloud; an SBC without board → board; no
//! arch → architecture; no extensions → extensions; no `cmdline-set` → customization; else
//! the schematic is made ([`to_schematic`], upstream's `ToSchematic`), stored and shown with
//! its links. Everything a stranger sends is bounded ([`Params::parse`]): a clear 400, never a
//! panic.
//!
//! Links on the final page come from `http.externalURL` ([`Site::absolute`]) — never from
//! the request's `Host` — and PXE scripts from `http.externalPXEURL`'s rule
//! ([`crate::config::Config::external_pxe_url`]). Only assets this release serves are linked:
//! SecureBoot assets, board disk images and assets with an embedded machine configuration are
//! named as not served instead (see [`crate::factory::SERVES_SECURE_BOOT`]).

use std::cmp::Reverse;

use super::Site;
use super::platforms::{self, Board, Platform};
use crate::factory::quirks::Quirks;
use crate::factory::service::{Factory, FactoryError};
use crate::schematic::storage::SchematicStoreError;
use crate::schematic::{
    self, Bootloader, Overlay, Schematic, SchematicError, SchematicId, SchematicStore,
};
use crate::version::TalosVersion;

/// The longest query string of a wizard page.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// The most parameters (pairs) in a query or form.
pub const MAX_PAIRS: usize = 1024;
/// The most `extensions` values.
pub const MAX_EXTENSIONS: usize = 512;
/// The longest extension name.
pub const MAX_EXTENSION_NAME: usize = 256;
/// The longest value of a short parameter (`target`, `version`, `arch`, …).
pub const MAX_SHORT: usize = 80;
/// The longest extra kernel arguments text.
pub const MAX_CMDLINE: usize = 8 * 1024;
/// The longest overlay options text.
pub const MAX_OVERLAY_OPTIONS: usize = 64 * 1024;
/// The longest embedded machine configuration.
pub const MAX_EMBEDDED_CONFIG: usize = 512 * 1024;
/// The longest extensions search text.
pub const MAX_SEARCH: usize = 256;

/// The hardware types.
pub const TARGETS: [(&str, &str, &str); 3] = [
    (
        "metal",
        "Bare-metal machine",
        "PCs and servers: ISO, disk image or network boot (PXE).",
    ),
    (
        "cloud",
        "Cloud server",
        "A virtual machine on a cloud platform or hypervisor.",
    ),
    (
        "sbc",
        "Single-board computer",
        "Raspberry Pi and other ARM boards (Talos 1.7 and later).",
    ),
];

/// Why a wizard request was refused.
#[derive(Debug, thiserror::Error)]
pub enum WizardError {
    /// Input the wizard cannot use (400).
    #[error("{0}")]
    BadRequest(String),
    /// A schematic ID that names no stored schematic (404).
    #[error("{0}")]
    NotFound(String),
    /// The factory failed (versions, catalogs, talosctl).
    #[error(transparent)]
    Factory(#[from] FactoryError),
    /// Storing or loading the schematic failed.
    #[error(transparent)]
    Schematic(#[from] SchematicStoreError),
}

fn bad(message: impl Into<String>) -> WizardError {
    WizardError::BadRequest(message.into())
}

/// Where the parameters came from: a URL (`GET /`) or the customization form (`POST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A query string: `embedded-config` is refused (it would sit in a URL).
    Query,
    /// A POSTed form.
    Form,
}

/// The wizard's state, as upstream's `WizardParams` (after its normalization).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    /// `metal`, `cloud` or `sbc` (empty: not chosen).
    pub target: String,
    /// The Talos version without `v` (`1.11.6`).
    pub version: String,
    /// `amd64` or `arm64`.
    pub arch: String,
    /// Talos platform (`metal` for the metal and SBC targets).
    pub platform: String,
    /// The board (SBC).
    pub board: String,
    /// SecureBoot asked for (`secureboot=true`).
    pub secureboot: bool,
    /// `auto`, `sd-boot`, `grub`, `dual-boot` (empty: not chosen).
    pub bootloader: String,
    /// Chosen extensions, as sent (`-` is the "none selected" placeholder).
    pub extensions: Vec<String>,
    /// Extra kernel arguments, trimmed.
    pub cmdline: String,
    /// The customization step was submitted.
    pub cmdline_set: bool,
    /// Overlay options (YAML), trimmed.
    pub overlay_options: String,
    /// The embedded machine configuration (POST only).
    pub embedded_config: String,
    /// A stored schematic to show (`schematic-id`).
    pub schematic_id: Option<SchematicId>,
    /// The extensions search text (`search`).
    pub search: String,
    /// The extensions step's "Search" button was pressed (`op=search`): stay on that step.
    pub searching: bool,
    /// What earlier steps preselect when going back (`selected-*`).
    pub selected: Selected,
}

/// The `selected-*` parameters: a step's preselection when the user came back to it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selected {
    /// `selected-target`.
    pub target: String,
    /// `selected-version`.
    pub version: String,
    /// `selected-arch`.
    pub arch: String,
    /// `selected-platform`.
    pub platform: String,
    /// `selected-board`.
    pub board: String,
    /// `selected-secureboot`.
    pub secureboot: bool,
    /// `selected-bootloader`.
    pub bootloader: String,
    /// `selected-extensions`.
    pub extensions: Vec<String>,
    /// `selected-cmdline`.
    pub cmdline: String,
    /// `selected-overlay-options`.
    pub overlay_options: String,
    /// `selected-schematic-id`: the customization step is prefilled from this schematic.
    pub schematic_id: Option<SchematicId>,
}

/// The wizard's steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Hardware type.
    Target,
    /// Talos version.
    Version,
    /// Cloud platform.
    Cloud,
    /// Single-board computer.
    Board,
    /// Architecture (and SecureBoot).
    Arch,
    /// System extensions.
    Extensions,
    /// Extra kernel arguments, embedded configuration, overlay options, bootloader.
    Customization,
    /// The schematic and its links.
    Final,
}

impl Step {
    /// The step's title.
    pub fn title(self) -> &'static str {
        match self {
            Step::Target => "Hardware type",
            Step::Version => "Talos Linux version",
            Step::Cloud => "Cloud platform",
            Step::Board => "Single-board computer",
            Step::Arch => "Machine architecture",
            Step::Extensions => "System extensions",
            Step::Customization => "Customization",
            Step::Final => "Schematic ready",
        }
    }
}

fn check_len(name: &str, value: &str, max: usize) -> Result<(), WizardError> {
    if value.len() > max {
        return Err(bad(format!(
            "the {name} parameter is {} bytes long; at most {max} are accepted",
            value.len()
        )));
    }
    Ok(())
}

fn check_line(name: &str, value: &str, max: usize) -> Result<(), WizardError> {
    check_len(name, value, max)?;
    if value.chars().any(char::is_control) {
        return Err(bad(format!(
            "the {name} parameter contains control characters (line breaks, tabs, …)"
        )));
    }
    Ok(())
}

fn parse_id(name: &str, value: &str) -> Result<Option<SchematicId>, WizardError> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| {
        bad(format!(
            "{name} {value:?} is not a schematic ID (64 lowercase hex digits)"
        ))
    })
}

impl Params {
    /// Reads the wizard's parameters from query or form pairs (upstream's names; the first
    /// value of a single-valued parameter counts, unknown names are ignored), bounded, then
    /// normalized as upstream does: the metal and SBC targets boot the `metal` platform, a
    /// board forces `arm64`, a single-architecture cloud platform its architecture — unless
    /// the user is going back (`selected-arch` set), when the board or platform is cleared
    /// so the step that chose it shows again.
    pub fn parse(pairs: &[(String, String)], source: Source) -> Result<Params, WizardError> {
        if pairs.len() > MAX_PAIRS {
            // The caller may stop collecting at MAX_PAIRS + 1: say "more than", not a count.
            return Err(bad(format!(
                "more than {MAX_PAIRS} parameters; at most {MAX_PAIRS} are accepted"
            )));
        }
        let first = |name: &str| -> &str {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map_or("", |(_, v)| v.as_str())
        };
        let all = |name: &str| -> Vec<String> {
            pairs
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .collect()
        };
        for name in [
            "target",
            "version",
            "arch",
            "platform",
            "board",
            "secureboot",
            "bootloader",
            "cmdline-set",
            "op",
            "selected-target",
            "selected-version",
            "selected-arch",
            "selected-platform",
            "selected-board",
            "selected-secureboot",
            "selected-bootloader",
            "schematic-id",
            "selected-schematic-id",
        ] {
            check_line(name, first(name), MAX_SHORT)?;
        }
        let extensions = all("extensions");
        let selected_extensions = all("selected-extensions");
        for (name, list) in [
            ("extensions", &extensions),
            ("selected-extensions", &selected_extensions),
        ] {
            if list.len() > MAX_EXTENSIONS {
                return Err(bad(format!(
                    "{} {name} values; at most {MAX_EXTENSIONS} are accepted",
                    list.len()
                )));
            }
            for e in list.iter() {
                check_line(name, e, MAX_EXTENSION_NAME)?;
            }
        }
        check_line("cmdline", first("cmdline"), MAX_CMDLINE)?;
        check_line("selected-cmdline", first("selected-cmdline"), MAX_CMDLINE)?;
        check_line("search", first("search"), MAX_SEARCH)?;
        check_len(
            "overlay-options",
            first("overlay-options"),
            MAX_OVERLAY_OPTIONS,
        )?;
        check_len(
            "selected-overlay-options",
            first("selected-overlay-options"),
            MAX_OVERLAY_OPTIONS,
        )?;
        let embedded = first("embedded-config");
        if source == Source::Query && pairs.iter().any(|(k, _)| k == "embedded-config") {
            return Err(bad(
                "embedded-config is accepted only in the customization form (POST): a machine \
                 configuration may hold secrets and never goes into a URL",
            ));
        }
        check_len("embedded-config", embedded, MAX_EMBEDDED_CONFIG)?;
        let target = first("target").to_string();
        if !target.is_empty() && !TARGETS.iter().any(|(t, _, _)| *t == target) {
            return Err(bad(format!(
                "unknown target {target:?}: want metal, cloud or sbc"
            )));
        }
        let arch = first("arch").to_string();
        if !arch.is_empty() && arch != "amd64" && arch != "arm64" {
            return Err(bad(format!(
                "unknown architecture {arch:?}: want amd64 or arm64"
            )));
        }
        let bootloader = first("bootloader").to_string();
        if !bootloader.is_empty()
            && bootloader != "auto"
            && Bootloader::parse(&bootloader).is_none()
        {
            return Err(bad(format!(
                "invalid bootloader {bootloader:?}: want auto, sd-boot, grub or dual-boot"
            )));
        }
        let mut p = Params {
            target,
            version: first("version").to_string(),
            arch,
            platform: first("platform").to_string(),
            board: first("board").to_string(),
            secureboot: first("secureboot") == "true",
            bootloader,
            extensions,
            cmdline: first("cmdline").trim().to_string(),
            cmdline_set: !first("cmdline-set").is_empty(),
            overlay_options: first("overlay-options").trim().to_string(),
            embedded_config: embedded.to_string(),
            schematic_id: parse_id("schematic-id", first("schematic-id"))?,
            search: first("search").trim().to_string(),
            searching: first("op") == "search",
            selected: Selected {
                target: first("selected-target").to_string(),
                version: first("selected-version").to_string(),
                arch: first("selected-arch").to_string(),
                platform: first("selected-platform").to_string(),
                board: first("selected-board").to_string(),
                secureboot: first("selected-secureboot") == "true",
                bootloader: first("selected-bootloader").to_string(),
                extensions: selected_extensions,
                cmdline: first("selected-cmdline").to_string(),
                overlay_options: first("selected-overlay-options").to_string(),
                schematic_id: parse_id("selected-schematic-id", first("selected-schematic-id"))?,
            },
        };
        p.normalize();
        Ok(p)
    }

    /// Upstream's normalization (`WizardParamsFromRequest`).
    fn normalize(&mut self) {
        match self.target.as_str() {
            "metal" => self.platform = "metal".into(),
            "sbc" => {
                self.platform = "metal".into();
                // Boards are arm64 whatever the link says; going back (`selected-arch` without
                // an arch) clears the board instead.
                if !self.board.is_empty() {
                    if self.selected.arch.is_empty() {
                        self.arch = "arm64".into();
                    } else if self.arch.is_empty() {
                        self.selected.board = std::mem::take(&mut self.board);
                    }
                }
            }
            "cloud" if !self.platform.is_empty() => {
                if let Some(p) = platforms::cloud(&self.platform)
                    && p.archs.len() == 1
                    && self.arch.is_empty()
                {
                    if self.selected.arch.is_empty() {
                        self.arch = p.archs[0].into();
                    } else {
                        self.selected.platform = std::mem::take(&mut self.platform);
                    }
                }
            }
            _ => {}
        }
    }

    /// The step these parameters are at (upstream's `wizard()` switch). A `schematic-id`
    /// stands for the extensions and customization: once the hardware and version are
    /// chosen, it is the final page. The extensions step's search stays on that step.
    pub fn step(&self) -> Step {
        if self.target.is_empty() {
            Step::Target
        } else if self.version.is_empty() {
            Step::Version
        } else if self.target == "cloud" && self.platform.is_empty() {
            Step::Cloud
        } else if self.target == "sbc" && self.board.is_empty() {
            Step::Board
        } else if self.arch.is_empty() {
            Step::Arch
        } else if self.schematic_id.is_some() {
            Step::Final
        } else if self.extensions.is_empty() || self.searching {
            Step::Extensions
        } else if !self.cmdline_set {
            Step::Customization
        } else {
            Step::Final
        }
    }

    /// The parameters as URL pairs, sorted by name as Go's `url.Values.Encode` writes them
    /// (upstream's deep links), without `selected-*`, the search and `embedded-config`.
    pub fn url_pairs(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: &str| {
            if !v.is_empty() {
                out.push((k.to_string(), v.to_string()));
            }
        };
        set("arch", &self.arch);
        set("board", &self.board);
        set("bootloader", &self.bootloader);
        set("cmdline", &self.cmdline);
        if self.cmdline_set {
            set("cmdline-set", "true");
        }
        for e in &self.extensions {
            out.push(("extensions".into(), e.clone()));
        }
        let mut set = |k: &str, v: &str| {
            if !v.is_empty() {
                out.push((k.to_string(), v.to_string()));
            }
        };
        set("overlay-options", &self.overlay_options);
        set("platform", &self.platform);
        if let Some(id) = &self.schematic_id {
            set("schematic-id", id.as_str());
        }
        if self.secureboot {
            set("secureboot", "true");
        }
        set("target", &self.target);
        set("version", &self.version);
        out
    }

    /// Extensions without the `-` placeholder, sorted (upstream's `ToSchematic`).
    pub fn chosen_extensions(&self) -> Vec<String> {
        let mut list: Vec<String> = self
            .extensions
            .iter()
            .filter(|e| e.as_str() != "-")
            .cloned()
            .collect();
        list.sort();
        list
    }
}

/// `pairs` as a query string.
pub fn encode(pairs: &[(String, String)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The names a step sets (dropped from its hidden inputs and when going back to it).
fn step_fields(step: Step) -> &'static [&'static str] {
    match step {
        Step::Target => &["target"],
        Step::Version => &["version"],
        Step::Cloud => &["platform"],
        Step::Board => &["board"],
        Step::Arch => &["arch", "secureboot"],
        Step::Extensions => &["extensions"],
        Step::Customization => &["cmdline", "cmdline-set", "bootloader", "overlay-options"],
        Step::Final => &[],
    }
}

/// Upstream's schematic of the wizard's choices (`ToSchematic`): extra kernel arguments
/// split at single spaces of the trimmed text (so two spaces make an empty argument, as
/// upstream), extensions without `-` and sorted, the board's overlay with YAML options for an
/// SBC on Talos ≥ 1.7, the bootloader unless empty or `auto`, the embedded configuration as
/// it is. The ID is then the one `POST /schematics` gives for the same YAML.
pub fn to_schematic(p: &Params, version: &TalosVersion) -> Result<Schematic, WizardError> {
    let mut s = Schematic::default();
    let c = &mut s.customization;
    if !p.cmdline.is_empty() {
        c.extra_kernel_args = p.cmdline.split(' ').map(str::to_string).collect();
    }
    c.system_extensions.official_extensions = p.chosen_extensions();
    if p.target == "sbc" && Quirks::new(version).supports_overlay() {
        let board = platforms::board_named(&p.board)
            .ok_or_else(|| bad(format!("unknown board {:?}", p.board)))?;
        let options = schematic::parse_overlay_options(&p.overlay_options)
            .map_err(|e| bad(format!("error parsing overlay options: {e}")))?;
        s.overlay = Overlay {
            image: board.overlay_image.to_string(),
            name: board.overlay_name.to_string(),
            options,
        };
    }
    if !p.bootloader.is_empty() && p.bootloader != "auto" {
        s.customization.bootloader = Bootloader::parse(&p.bootloader)
            .ok_or_else(|| bad(format!("invalid bootloader {:?}", p.bootloader)))?;
    }
    s.customization.embedded_machine_configuration = p.embedded_config.clone();
    Ok(s)
}

/// One radio or checkbox choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The submitted value.
    pub value: String,
    /// What the page shows.
    pub label: String,
    /// A line under the label.
    pub hint: String,
    /// Preselected.
    pub checked: bool,
}

/// Versions of one `major.minor` (or `major.minor-pre`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionGroup {
    /// `1.11` or `1.12-pre`.
    pub label: String,
    /// Versions (no `v`), newest first, with the preselected one checked.
    pub versions: Vec<Choice>,
}

/// One extension of the catalog on the extensions step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionItem {
    /// `siderolabs/gvisor`.
    pub name: String,
    /// `ghcr.io/siderolabs/gvisor:20250505.0`.
    pub reference: String,
    /// From the catalog's descriptions.
    pub description: String,
    /// Selected.
    pub checked: bool,
    /// The lower-cased text the live filter matches (name, reference, description).
    pub haystack: String,
}

/// A download link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// What it is.
    pub label: String,
    /// Absolute URL.
    pub url: String,
}

/// A titled list of links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkGroup {
    /// The heading.
    pub title: String,
    /// A line under the heading.
    pub hint: String,
    /// The links.
    pub links: Vec<Link>,
}

/// What the final page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalView {
    /// The schematic ID.
    pub id: String,
    /// Its canonical YAML.
    pub yaml: String,
    /// `v1.11.6`.
    pub version_tag: String,
    /// Boot media and other assets.
    pub groups: Vec<LinkGroup>,
    /// The PXE script URL (iPXE `chain`), if the platform boots over the network.
    pub pxe: Option<String>,
    /// The installer image reference for `machine.install.image`, if served.
    pub installer: Option<String>,
    /// talosctl downloads.
    pub talosctl: Vec<Link>,
    /// Why talosctl downloads are not listed, if they are not.
    pub talosctl_note: Option<String>,
    /// `talosctl cluster create …` (Talos ≥ 1.12.0-alpha.2).
    pub cluster_create: Option<String>,
    /// The machines page with this schematic and version preselected.
    pub assign: String,
    /// What is not served, and other warnings.
    pub notes: Vec<String>,
}

/// The customization step's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomizationView {
    /// Extra kernel arguments.
    pub cmdline: String,
    /// Embedded configuration offered (Talos ≥ 1.12).
    pub embedded_config_enabled: bool,
    /// Its text (from a POST that is shown again, or the schematic being edited).
    pub embedded_config: String,
    /// Overlay options offered (SBC, Talos ≥ 1.7).
    pub overlay_enabled: bool,
    /// Their text.
    pub overlay_options: String,
    /// Bootloader choices (Talos ≥ 1.12.0-alpha.2; `grub` hidden with SecureBoot).
    pub bootloaders: Vec<Choice>,
}

/// A wizard page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The step shown.
    pub step: Step,
    /// Steps of this path, with the current one marked (title, current).
    pub steps: Vec<(&'static str, bool)>,
    /// `GET` form target: the wizard's URL (`<base>/`).
    pub action: String,
    /// Where the customization form posts (`<base>/ui/wizard`).
    pub post_action: String,
    /// Earlier choices the step's form carries along.
    pub hidden: Vec<(String, String)>,
    /// The previous step's URL.
    pub back: Option<String>,
    /// A problem with the input, shown above the step.
    pub alert: Option<String>,
    /// A short summary of earlier choices.
    pub summary: Vec<(&'static str, String)>,
    /// Hardware type choices.
    pub targets: Vec<Choice>,
    /// Version step: groups; empty with [`Page::nothing_imported`].
    pub version_groups: Vec<VersionGroup>,
    /// No Talos version in the store (offline, nothing imported).
    pub nothing_imported: bool,
    /// Cloud platforms or boards.
    pub platforms: Vec<Choice>,
    /// Architectures.
    pub archs: Vec<Choice>,
    /// The SecureBoot checkbox would be offered by upstream here.
    pub secure_boot_offered: bool,
    /// Extensions of the version's catalog.
    pub extensions: Vec<ExtensionItem>,
    /// Selected extensions the catalog does not have.
    pub unknown_extensions: Vec<String>,
    /// The search text.
    pub search: String,
    /// Customization fields.
    pub customization: Option<CustomizationView>,
    /// The final page.
    pub done: Option<FinalView>,
}

/// The wizard: what it needs from the factory and the site.
pub struct Wizard<'a> {
    /// Versions, catalogs, talosctl.
    pub factory: &'a Factory,
    /// Where schematics are stored.
    pub schematics: &'a SchematicStore,
    /// Links and page URLs.
    pub site: &'a Site,
    /// The PXE base URL (`Config::external_pxe_url`), no trailing slash.
    pub pxe_base: String,
    /// The store is offline (`offline: true`): an empty version list means nothing imported.
    pub offline: bool,
}

/// The versions grouped as upstream's version step shows them: by `major.minor` (stable) and
/// `major.minor-pre` (pre-releases), newest group first, newest version first; the default
/// is `selected` if given, else the latest stable (else the newest).
pub fn version_groups(versions: &[TalosVersion], selected: &str) -> Vec<VersionGroup> {
    let mut sorted: Vec<&TalosVersion> = versions.iter().collect();
    sorted.sort_by(|a, b| b.precedence_cmp(a));
    let default = if selected.is_empty() {
        sorted
            .iter()
            .find(|v| !v.is_prerelease())
            .or(sorted.first())
            .map(|v| v.semver_string())
            .unwrap_or_default()
    } else {
        selected.to_string()
    };
    let mut keys: Vec<(u64, u64, bool)> = Vec::new();
    for v in &sorted {
        let (maj, min, _) = v.core();
        let key = (maj, min, v.is_prerelease());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    // Newest minor first; within one minor, the stable group before its pre-releases.
    keys.sort_by_key(|&(maj, min, pre)| (Reverse(maj), Reverse(min), pre));
    keys.into_iter()
        .map(|(maj, min, pre)| VersionGroup {
            label: if pre {
                format!("{maj}.{min}-pre")
            } else {
                format!("{maj}.{min}")
            },
            versions: sorted
                .iter()
                .filter(|v| v.core().0 == maj && v.core().1 == min && v.is_prerelease() == pre)
                .map(|v| {
                    let s = v.semver_string();
                    Choice {
                        checked: s == default,
                        label: s.clone(),
                        value: s,
                        hint: String::new(),
                    }
                })
                .collect(),
        })
        .collect()
}

/// Whether `item` matches the search `needle` (lower-cased): name, reference or description.
pub fn matches_search(item: &ExtensionItem, needle: &str) -> bool {
    needle.is_empty() || item.haystack.contains(needle)
}

fn version_tag(v: &TalosVersion) -> String {
    v.to_string()
}

impl Wizard<'_> {
    /// The page for `params`: the step they are at, with its choices; at the final step the
    /// schematic is made and stored (as upstream does when its final page renders).
    pub async fn page(&self, mut params: Params) -> Result<Page, WizardError> {
        let mut page = self.blank(&params);
        let step = params.step();
        if step == Step::Target {
            self.target_step(&params, &mut page).await;
            return Ok(page);
        }
        let versions = match self.factory.artifacts().versions().await {
            Ok(v) => v,
            Err(e) => {
                // Online with an unreachable upstream: the version step says why and what
                // to do, rather than an error page.
                self.version_step(&params, &[], &mut page);
                page.nothing_imported = false;
                page.alert = Some(format!(
                    "The Talos versions could not be listed: {}. Check the upstream registry \
                     (bootfactory doctor), or import a bundle with `bootfactory mirror import \
                     <bundle>`.",
                    FactoryError::from(e)
                ));
                return Ok(page);
            }
        };
        let wanted = crate::version::parse_user_version(&params.version)
            .ok()
            .filter(|_| !params.version.starts_with('v'));
        let version = match wanted {
            Some(v) if versions.contains(&v) => {
                if params.target == "sbc"
                    && !platforms::at_least(&v, Some(platforms::MIN_SBC_VERSION))
                {
                    page.alert = Some(format!(
                        "Single-board computers need Talos {} or later (overlays); pick a newer version.",
                        platforms::MIN_SBC_VERSION
                    ));
                    None
                } else {
                    Some(v)
                }
            }
            Some(_) if step > Step::Version => {
                page.alert = Some(format!(
                    "Talos {} is not available on this bootfactory; pick one of the versions it has.",
                    params.version
                ));
                None
            }
            None if step > Step::Version => {
                page.alert = Some(format!(
                    "{:?} is not a Talos version (want e.g. 1.11.6, without a v).",
                    params.version
                ));
                None
            }
            _ => None,
        };
        let Some(version) = version else {
            params.selected.version = String::new();
            params.version = String::new();
            self.version_step(&params, &versions, &mut page);
            return Ok(page);
        };
        page.summary.push(("Talos", version_tag(&version)));
        // The platform or board must exist in this version; else that step shows again.
        let platform: Platform = match params.target.as_str() {
            "cloud" => match platforms::cloud(&params.platform) {
                Some(p) if p.available(&version) => *p,
                _ => {
                    if !params.platform.is_empty() {
                        page.alert = Some(format!(
                            "Platform {:?} is not available for Talos {}; pick one of these.",
                            params.platform, version
                        ));
                    }
                    self.cloud_step(&params, &version, &mut page);
                    return Ok(page);
                }
            },
            _ => platforms::METAL,
        };
        let board: Option<&Board> = if params.target == "sbc" {
            match platforms::board_named(&params.board) {
                Some(b) if b.available(&version) => Some(b),
                _ => {
                    if !params.board.is_empty() {
                        page.alert = Some(format!(
                            "Board {:?} is not available for Talos {}; pick one of these.",
                            params.board, version
                        ));
                    }
                    self.board_step(&params, &version, &mut page);
                    return Ok(page);
                }
            }
        } else {
            None
        };
        match board {
            Some(b) => page.summary.push(("Board", b.label.to_string())),
            None if params.target == "cloud" => {
                page.summary.push(("Platform", platform.label.to_string()))
            }
            None => page.summary.push(("Hardware", platform.label.to_string())),
        }
        if step == Step::Arch || !platform.archs.contains(&params.arch.as_str()) {
            if step > Step::Arch {
                page.alert = Some(format!(
                    "{} has no {} machines; pick an architecture.",
                    platform.label, params.arch
                ));
            }
            self.arch_step(&params, &platform, &version, &mut page);
            return Ok(page);
        }
        page.summary.push((
            "Architecture",
            if params.secureboot {
                format!("{} (SecureBoot)", params.arch)
            } else {
                params.arch.clone()
            },
        ));
        match step {
            Step::Extensions => {
                self.extensions_step(&params, &version, &mut page).await?;
            }
            Step::Customization => {
                page.summary
                    .push(("Extensions", extensions_summary(&params)));
                self.customization_step(&params, &version, &mut page)
                    .await?;
            }
            _ => {
                if params.schematic_id.is_none() {
                    page.summary
                        .push(("Extensions", extensions_summary(&params)));
                }
                self.final_step(&params, &platform, board, &version, &mut page)
                    .await?;
            }
        }
        Ok(page)
    }

    /// The customization form was posted: make and store the schematic and answer the
    /// final page's URL (`<base>/?…&schematic-id=<id>`), or the customization page again
    /// with what is wrong.
    pub async fn submit(&self, mut params: Params) -> Result<Result<String, Page>, WizardError> {
        params.cmdline_set = true;
        params.searching = false;
        if params.step() != Step::Final || params.schematic_id.is_some() {
            return Err(bad(
                "the customization form lacks earlier choices (target, version, architecture, \
                 extensions): start the wizard again",
            ));
        }
        let version = crate::version::parse_user_version(&params.version)
            .map_err(|e| bad(format!("invalid version {:?}: {e}", params.version)))?;
        let problem = match self.check_customization(&params, &version) {
            Err(message) => Some(message),
            Ok(()) => match to_schematic(&params, &version) {
                Err(WizardError::BadRequest(m)) => Some(m),
                Err(e) => return Err(e),
                Ok(s) => match self.schematics.put(&s).await {
                    Ok((id, created)) => {
                        if created {
                            tracing::info!(schematic = %id, "schematic created by the web UI");
                        }
                        let mut shown = Params {
                            target: params.target.clone(),
                            version: params.version.clone(),
                            arch: params.arch.clone(),
                            platform: params.platform.clone(),
                            board: params.board.clone(),
                            secureboot: params.secureboot,
                            schematic_id: Some(id),
                            ..Params::default()
                        };
                        if shown.target == "cloud" || shown.target == "metal" {
                            shown.board.clear();
                        }
                        return Ok(Ok(self.url(&shown.url_pairs())));
                    }
                    Err(SchematicStoreError::Invalid(e)) => Some(e.to_string()),
                    Err(e) => return Err(e.into()),
                },
            },
        };
        // Shown again with the user's input (this is a POST answer, not a URL).
        params.cmdline_set = false;
        let mut page = self.page(params).await?;
        page.alert = problem;
        Ok(Err(page))
    }

    fn check_customization(&self, p: &Params, version: &TalosVersion) -> Result<(), String> {
        if !p.embedded_config.is_empty() && !Quirks::new(version).supports_embedded_config() {
            return Err(format!(
                "embedding a machine configuration needs Talos 1.12 or later (this is {version})"
            ));
        }
        // A bootloader before 1.12 is kept as upstream keeps it (same schematic ID); the
        // form offers the choice only from 1.12.
        Ok(())
    }

    fn url(&self, pairs: &[(String, String)]) -> String {
        let base = self.site.page("/");
        if pairs.is_empty() {
            base
        } else {
            format!("{base}?{}", encode(pairs))
        }
    }

    /// A URL to go back to `to`: the fields of `to` and every later step dropped, the
    /// dropped values offered again as `selected-*`.
    fn back_to(&self, p: &Params, to: Step) -> String {
        let mut dropped: Vec<&str> = Vec::new();
        for s in [
            Step::Target,
            Step::Version,
            Step::Cloud,
            Step::Board,
            Step::Arch,
            Step::Extensions,
            Step::Customization,
        ] {
            if s >= to {
                dropped.extend_from_slice(step_fields(s));
            }
        }
        let mut pairs: Vec<(String, String)> = p
            .url_pairs()
            .into_iter()
            .filter(|(k, _)| !dropped.contains(&k.as_str()))
            .collect();
        if to <= Step::Extensions {
            pairs.retain(|(k, _)| k != "schematic-id");
        }
        for (k, v) in p.url_pairs() {
            if dropped.contains(&k.as_str()) && k != "cmdline-set" {
                pairs.push((format!("selected-{k}"), v));
            }
        }
        if to >= Step::Customization
            && let Some(id) = &p.schematic_id
        {
            pairs.push(("selected-schematic-id".into(), id.to_string()));
        }
        self.url(&pairs)
    }

    fn blank(&self, params: &Params) -> Page {
        let step = params.step();
        let mut path = vec![Step::Target, Step::Version];
        match params.target.as_str() {
            "cloud" => path.push(Step::Cloud),
            "sbc" => path.push(Step::Board),
            _ => {}
        }
        let single_arch = params.target == "sbc"
            || platforms::cloud(&params.platform).is_some_and(|p| p.archs.len() == 1);
        if !single_arch {
            path.push(Step::Arch);
        }
        if params.schematic_id.is_none() {
            path.extend([Step::Extensions, Step::Customization]);
        }
        path.push(Step::Final);
        Page {
            step,
            steps: path.iter().map(|s| (s.title(), *s == step)).collect(),
            action: self.site.page("/"),
            post_action: self.site.page("/ui/wizard"),
            hidden: Vec::new(),
            back: None,
            alert: None,
            summary: Vec::new(),
            targets: Vec::new(),
            version_groups: Vec::new(),
            nothing_imported: false,
            platforms: Vec::new(),
            archs: Vec::new(),
            secure_boot_offered: false,
            extensions: Vec::new(),
            unknown_extensions: Vec::new(),
            search: String::new(),
            customization: None,
            done: None,
        }
    }

    /// Sets the step of `page` and the hidden inputs its form carries.
    fn at(&self, p: &Params, page: &mut Page, step: Step) {
        page.step = step;
        for s in page.steps.iter_mut() {
            s.1 = s.0 == step.title();
        }
        let own = step_fields(step);
        page.hidden = p
            .url_pairs()
            .into_iter()
            .filter(|(k, _)| !own.contains(&k.as_str()))
            .collect();
        page.back = match step {
            Step::Target => None,
            Step::Version => Some(self.back_to(p, Step::Target)),
            Step::Cloud | Step::Board => Some(self.back_to(p, Step::Version)),
            Step::Arch => Some(match p.target.as_str() {
                "cloud" => self.back_to(p, Step::Cloud),
                _ => self.back_to(p, Step::Version),
            }),
            Step::Extensions => Some(self.back_to(p, Step::Arch)),
            Step::Customization => Some(self.back_to(p, Step::Extensions)),
            // Set by the final step, from the stored schematic's extensions.
            Step::Final if p.schematic_id.is_some() => None,
            Step::Final => Some(self.back_to(p, Step::Customization)),
        };
    }

    async fn target_step(&self, p: &Params, page: &mut Page) {
        self.at(p, page, Step::Target);
        let selected = if p.selected.target.is_empty() {
            "metal"
        } else {
            p.selected.target.as_str()
        };
        page.targets = TARGETS
            .iter()
            .map(|(value, label, hint)| Choice {
                value: value.to_string(),
                label: label.to_string(),
                hint: hint.to_string(),
                checked: *value == selected,
            })
            .collect();
        if self.offline {
            // Offline, the list is local: say at once when nothing was imported.
            if let Ok(v) = self.factory.artifacts().versions().await {
                page.nothing_imported = v.is_empty();
            }
        }
    }

    fn version_step(&self, p: &Params, versions: &[TalosVersion], page: &mut Page) {
        self.at(p, page, Step::Version);
        let usable: Vec<TalosVersion> = versions
            .iter()
            .filter(|v| {
                p.target != "sbc" || platforms::at_least(v, Some(platforms::MIN_SBC_VERSION))
            })
            .cloned()
            .collect();
        page.nothing_imported = versions.is_empty();
        page.version_groups = version_groups(&usable, &p.selected.version);
        if !page.version_groups.is_empty()
            && !page
                .version_groups
                .iter()
                .any(|g| g.versions.iter().any(|c| c.checked))
        {
            // A `selected-version` that is not offered: preselect the first offered.
            let first = page
                .version_groups
                .iter_mut()
                .flat_map(|g| g.versions.iter_mut())
                .find(|c| !c.value.contains('-'));
            if let Some(c) = first {
                c.checked = true;
            }
        }
    }

    fn cloud_step(&self, p: &Params, version: &TalosVersion, page: &mut Page) {
        let mut p = p.clone();
        p.platform.clear();
        self.at(&p, page, Step::Cloud);
        let selected = if p.selected.platform.is_empty() {
            "aws"
        } else {
            p.selected.platform.as_str()
        };
        page.platforms = platforms::CLOUDS
            .iter()
            .filter(|c| c.available(version))
            .map(|c| Choice {
                value: c.name.to_string(),
                label: c.label.to_string(),
                hint: c.archs.join(", "),
                checked: c.name == selected,
            })
            .collect();
    }

    fn board_step(&self, p: &Params, version: &TalosVersion, page: &mut Page) {
        let mut p = p.clone();
        p.board.clear();
        p.arch.clear();
        self.at(&p, page, Step::Board);
        let selected = if p.selected.board.is_empty() {
            "rpi_generic"
        } else {
            p.selected.board.as_str()
        };
        page.platforms = platforms::BOARDS
            .iter()
            .filter(|b| b.available(version))
            .map(|b| Choice {
                value: b.name.to_string(),
                label: b.label.to_string(),
                hint: format!("overlay {} from {}", b.overlay_name, b.overlay_image),
                checked: b.name == selected,
            })
            .collect();
    }

    fn arch_step(&self, p: &Params, platform: &Platform, version: &TalosVersion, page: &mut Page) {
        let mut p = p.clone();
        p.arch.clear();
        p.secureboot = false;
        self.at(&p, page, Step::Arch);
        let selected = if p.selected.arch.is_empty() {
            "amd64"
        } else {
            p.selected.arch.as_str()
        };
        page.archs = platform
            .archs
            .iter()
            .map(|a| Choice {
                value: a.to_string(),
                label: a.to_string(),
                hint: match *a {
                    "amd64" => "x86-64: Intel and AMD".to_string(),
                    _ => "AArch64: ARM 64-bit".to_string(),
                },
                checked: *a == selected,
            })
            .collect();
        if !page.archs.iter().any(|c| c.checked)
            && let Some(c) = page.archs.first_mut()
        {
            c.checked = true;
        }
        page.secure_boot_offered = platform.secure_boot_offered(version);
    }

    async fn extensions_step(
        &self,
        p: &Params,
        version: &TalosVersion,
        page: &mut Page,
    ) -> Result<(), WizardError> {
        let mut own = p.clone();
        // Coming back, or searching: what was chosen stays chosen.
        let chosen: Vec<String> = if p.searching {
            p.chosen_extensions()
        } else {
            p.selected
                .extensions
                .iter()
                .filter(|e| e.as_str() != "-")
                .cloned()
                .collect()
        };
        own.extensions.clear();
        self.at(&own, page, Step::Extensions);
        let catalog = self
            .factory
            .artifacts()
            .extensions(version)
            .await
            .map_err(FactoryError::from)?;
        let needle = p.search.to_lowercase();
        page.search = p.search.clone();
        page.extensions = catalog
            .entries
            .iter()
            // Upstream hides its internal metal-agent extension.
            .filter(|e| e.name != "siderolabs/metal-agent")
            .map(|e| ExtensionItem {
                checked: chosen.contains(&e.name),
                haystack: format!("{} {} {}", e.name, e.reference, e.description).to_lowercase(),
                name: e.name.clone(),
                reference: e.reference.clone(),
                description: e.description.clone(),
            })
            .filter(|item| item.checked || matches_search(item, &needle))
            .collect();
        page.unknown_extensions = chosen
            .iter()
            .filter(|name| catalog.find(name).is_none())
            .cloned()
            .collect();
        Ok(())
    }

    async fn customization_step(
        &self,
        p: &Params,
        version: &TalosVersion,
        page: &mut Page,
    ) -> Result<(), WizardError> {
        self.at(p, page, Step::Customization);
        let quirks = Quirks::new(version);
        // Prefill: what was posted, else the `selected-*` values, else the schematic edited.
        let mut cmdline = if p.cmdline.is_empty() {
            p.selected.cmdline.clone()
        } else {
            p.cmdline.clone()
        };
        let mut overlay_options = if p.overlay_options.is_empty() {
            p.selected.overlay_options.clone()
        } else {
            p.overlay_options.clone()
        };
        let mut bootloader = if p.bootloader.is_empty() {
            p.selected.bootloader.clone()
        } else {
            p.bootloader.clone()
        };
        let mut embedded_config = p.embedded_config.clone();
        if let Some(id) = &p.selected.schematic_id
            && let Some(stored) = self.schematics.get(id).await?
        {
            let c = &stored.schematic.customization;
            if cmdline.is_empty() {
                cmdline = c.extra_kernel_args.join(" ");
            }
            if embedded_config.is_empty() {
                embedded_config = c.embedded_machine_configuration.clone();
            }
            if bootloader.is_empty() && c.bootloader != Bootloader::None {
                bootloader = c.bootloader.as_str().to_string();
            }
            if overlay_options.is_empty() && !stored.schematic.overlay.options.is_empty() {
                overlay_options = schematic::options_yaml(&stored.schematic.overlay.options);
            }
        }
        if bootloader.is_empty() {
            bootloader = "auto".into();
        }
        let bootloaders = if platforms::at_least(version, Some("1.12.0-alpha.2")) {
            [
                ("auto", "Automatic", "Talos chooses (recommended)"),
                ("sd-boot", "systemd-boot", "UEFI only"),
                ("grub", "GRUB", "BIOS and UEFI"),
                (
                    "dual-boot",
                    "Dual boot",
                    "GRUB for BIOS, systemd-boot for UEFI",
                ),
            ]
            .into_iter()
            .filter(|(v, _, _)| !(p.secureboot && *v == "grub"))
            .map(|(v, l, h)| Choice {
                value: v.into(),
                label: l.into(),
                hint: h.into(),
                checked: v == bootloader,
            })
            .collect()
        } else {
            Vec::new()
        };
        page.customization = Some(CustomizationView {
            cmdline,
            embedded_config_enabled: quirks.supports_embedded_config(),
            embedded_config,
            overlay_enabled: p.target == "sbc" && quirks.supports_overlay(),
            overlay_options,
            bootloaders,
        });
        Ok(())
    }

    async fn final_step(
        &self,
        p: &Params,
        platform: &Platform,
        board: Option<&Board>,
        version: &TalosVersion,
        page: &mut Page,
    ) -> Result<(), WizardError> {
        self.at(p, page, Step::Final);
        let (id, stored) = match &p.schematic_id {
            Some(id) => {
                let stored = self.schematics.get(id).await?.ok_or_else(|| {
                    WizardError::NotFound(format!(
                        "schematic {id} is not stored on this bootfactory"
                    ))
                })?;
                (id.clone(), stored.schematic)
            }
            None => {
                if let Err(m) = self.check_customization(p, version) {
                    return Err(bad(m));
                }
                let s = to_schematic(p, version)?;
                let (id, created) = self.schematics.put(&s).await.map_err(|e| match e {
                    SchematicStoreError::Invalid(e) => bad(e.to_string()),
                    e => WizardError::Schematic(e),
                })?;
                if created {
                    tracing::info!(schematic = %id, "schematic created by the web UI");
                }
                (id, s)
            }
        };
        if p.schematic_id.is_some() {
            // Back to the customization step of this schematic: its extensions in the URL,
            // the rest prefilled from the stored schematic (`selected-schematic-id`).
            let mut back = p.clone();
            back.schematic_id = None;
            back.extensions = std::iter::once("-".to_string())
                .chain(
                    stored
                        .customization
                        .system_extensions
                        .official_extensions
                        .iter()
                        .cloned(),
                )
                .collect();
            let mut pairs = back.url_pairs();
            pairs.push(("selected-schematic-id".into(), id.to_string()));
            page.back = Some(self.url(&pairs));
        }
        let yaml = stored
            .checked_canonical()
            .map_err(|e: SchematicError| bad(e.to_string()))?;
        let catalog = self
            .factory
            .artifacts()
            .extensions(version)
            .await
            .map_err(FactoryError::from)?;
        let missing: Vec<&String> = stored
            .customization
            .system_extensions
            .official_extensions
            .iter()
            .filter(|e| catalog.find(e).is_none())
            .collect();
        let talosctl = if version.supports_talosctl_downloads() {
            match self
                .factory
                .talosctl_downloads(&version.semver_string(), &self.site.absolute(""))
                .await
            {
                Ok(urls) => Ok(urls),
                Err(e) => Err(e.to_string()),
            }
        } else {
            Ok(Vec::new())
        };
        let mut view = final_view(&FinalInput {
            site: self.site,
            pxe_base: &self.pxe_base,
            id: &id,
            schematic: &stored,
            yaml,
            platform,
            board,
            arch: &p.arch,
            secureboot: p.secureboot,
            version,
            talosctl,
        });
        if !missing.is_empty() {
            view.notes.push(format!(
                "Not in Talos {version}'s extensions catalog on this bootfactory: {}. Assets \
                 that include extensions will be refused until a catalog that has them is \
                 imported.",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        page.done = Some(view);
        Ok(())
    }
}

fn extensions_summary(p: &Params) -> String {
    let list = p.chosen_extensions();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// What [`final_view`] builds the final page from.
pub struct FinalInput<'a> {
    /// Where links point (`http.externalURL`).
    pub site: &'a Site,
    /// The PXE base URL.
    pub pxe_base: &'a str,
    /// The schematic's ID.
    pub id: &'a SchematicId,
    /// The schematic.
    pub schematic: &'a Schematic,
    /// Its canonical YAML.
    pub yaml: String,
    /// The platform (metal for SBCs).
    pub platform: &'a Platform,
    /// The board, for SBCs.
    pub board: Option<&'a Board>,
    /// `amd64` or `arm64`.
    pub arch: &'a str,
    /// SecureBoot asked for.
    pub secureboot: bool,
    /// The version.
    pub version: &'a TalosVersion,
    /// talosctl download URLs, or why there are none.
    pub talosctl: Result<Vec<String>, String>,
}

/// The final page's links: every asset this release serves for the platform and
/// architecture, from `http.externalURL` only; what it does not serve is said in `notes`.
pub fn final_view(i: &FinalInput<'_>) -> FinalView {
    let v = version_tag(i.version);
    let id = i.id.as_str();
    let quirks = Quirks::new(i.version);
    let p = i.platform;
    let a = i.arch;
    let image = |file: &str| i.site.absolute(&format!("/image/{id}/{v}/{file}"));
    let link = |label: &str, file: &str| Link {
        label: label.to_string(),
        url: image(file),
    };
    let mut notes = Vec::new();
    let embedded = !i
        .schematic
        .customization
        .embedded_machine_configuration
        .is_empty()
        && !crate::factory::BUILDS_EMBEDDED_CONFIG;
    if i.secureboot && !crate::factory::SERVES_SECURE_BOOT {
        notes.push(
            "SecureBoot assets are not served by this bootfactory (it holds no SecureBoot \
             signing keys): the links below are the assets without SecureBoot."
                .to_string(),
        );
    }
    if embedded {
        notes.push(
            "This schematic embeds a machine configuration: bootfactory stores it (same ID as \
             upstream), but this release does not build images with an embedded configuration \
             yet, so only the kernel and its command line are linked."
                .to_string(),
        );
    }
    let mut groups = Vec::new();
    let mut pxe = None;
    if let Some(b) = i.board {
        if crate::factory::BUILDS_BOARD_DISK_IMAGES && !embedded {
            groups.push(LinkGroup {
                title: "Disk image".into(),
                hint: format!("Write it to the {}'s SD card or eMMC.", b.label),
                links: vec![link("Disk image", "metal-arm64.raw.xz")],
            });
        } else {
            notes.push(format!(
                "Disk images for boards ({}: {}/metal-arm64.raw.xz) are not built by this \
                 bootfactory release yet; the installer image below works for upgrades.",
                b.label,
                i.site.absolute(&format!("/image/{id}/{v}"))
            ));
        }
    } else {
        let mut media = Vec::new();
        if !embedded {
            if p.boot.iso {
                media.push(link("ISO", &format!("{}-{a}.iso", p.name)));
            }
            if p.boot.disk_image
                && let Some(suffix) = p.disk_suffix
            {
                media.push(link(
                    &format!("Disk image ({suffix})"),
                    &format!("{}-{a}.{suffix}", p.name),
                ));
                if p.name == "metal" {
                    media.push(link("Disk image (qcow2)", &format!("{}-{a}.qcow2", p.name)));
                }
            }
            if p.boot.pxe {
                pxe = Some(format!(
                    "{}/pxe/{id}/{v}/{}-{a}",
                    i.pxe_base.trim_end_matches('/'),
                    p.name
                ));
            }
        }
        if !media.is_empty() {
            groups.push(LinkGroup {
                title: "Boot media".into(),
                hint: "Boot the machine from one of these.".into(),
                links: media,
            });
        }
        let mut extra = vec![link("Kernel", &format!("kernel-{a}"))];
        extra.push(link(
            "Kernel command line",
            &format!("cmdline-{}-{a}", p.name),
        ));
        if !embedded {
            extra.push(link("Initramfs", &format!("initramfs-{a}.xz")));
            if quirks.supports_uki() {
                extra.push(link("UKI", &format!("{}-{a}-uki.efi", p.name)));
            }
        }
        groups.push(LinkGroup {
            title: "Other assets".into(),
            hint: "For network boot set-ups of your own (kernel, initramfs and command line) \
                   or UEFI boot of a single file (UKI)."
                .into(),
            links: extra,
        });
    }
    let installer = if embedded {
        None
    } else if quirks.unified_installer() {
        Some(format!(
            "{}/{}-installer/{id}:{v}",
            i.site.registry_host, p.name
        ))
    } else {
        Some(format!("{}/installer/{id}:{v}", i.site.registry_host))
    };
    let (talosctl, talosctl_note) = match &i.talosctl {
        Ok(urls) if urls.is_empty() && !i.version.supports_talosctl_downloads() => (
            Vec::new(),
            Some(format!(
                "talosctl downloads start with Talos 1.11; for {v}, use the talosctl release of \
                 that version."
            )),
        ),
        Ok(urls) => (
            urls.iter()
                .map(|u| Link {
                    label: u.rsplit('/').next().unwrap_or(u).to_string(),
                    url: u.clone(),
                })
                .collect(),
            None,
        ),
        Err(e) => (
            Vec::new(),
            Some(format!("talosctl downloads are not available: {e}")),
        ),
    };
    let cluster_create = platforms::at_least(i.version, Some("1.12.0-alpha.2"))
        .then(|| format!("talosctl cluster create qemu --schematic-id={id} --talos-version={v}"));
    FinalView {
        id: id.to_string(),
        yaml: i.yaml.clone(),
        version_tag: v.clone(),
        groups,
        pxe,
        installer,
        talosctl,
        talosctl_note,
        cluster_create,
        assign: format!(
            "{}?{}",
            i.site.page("/ui/machines"),
            encode(&[
                ("schematic".to_string(), id.to_string()),
                ("version".to_string(), v.clone()),
            ])
        ),
        notes,
    }
}

#[cfg(test)]
mod tests;
