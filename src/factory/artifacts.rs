//! Talos artifacts, as the factory sees them: the versions it can build (tags of the imager
//! repository, filtered like upstream), each version's extensions and overlays catalogs, the
//! imager's boot files, and flattened extension images. Everything comes through the mirror, so
//! it works online (pull-through) and offline (imported bundles) alike.
//!
//! Flattened trees are derived data: they live under `<dataDir>/cache/` keyed by image manifest
//! digest, extracted into a temp directory and renamed, so a killed extraction leaves nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::quirks::filter_versions;
use crate::config::Config;
use crate::errors::{self, SharedError};
use crate::oci::flatten::{self, FlattenError};
use crate::oci::{ImageName, ImageRef, TagOrDigest};
use crate::store::Digest;
use crate::upstream::mirror::Requester;
use crate::upstream::{Mirror, MirrorError};
use crate::version::TalosVersion;

/// Why an artifact is unavailable. `Clone` (catalogs and extractions are shared), so sources
/// are shared ([`SharedError`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArtifactError {
    /// The version is not in the list the factory serves.
    #[error("version {0} is not available")]
    VersionNotAvailable(String),
    /// An image needed for the build could not be fetched.
    #[error(transparent)]
    Unavailable(Arc<MirrorError>),
    /// A catalog or image is malformed.
    #[error(transparent)]
    Invalid(SharedError),
    /// The image holds no regular file at `path` (missing, or a link leading out of it): for
    /// example a release without arm64 boot files.
    #[error("{image} has no {path}")]
    MissingFile {
        /// The image reference.
        image: String,
        /// The path inside the image.
        path: String,
    },
    /// The data directory's filesystem is full (`no space left on <dataDir>`).
    #[error(transparent)]
    NoSpace(SharedError),
}

impl From<MirrorError> for ArtifactError {
    fn from(e: MirrorError) -> Self {
        let no_space = match &e {
            MirrorError::Store(s) => s.is_no_space(),
            MirrorError::Upstream(u) => matches!(u, crate::upstream::UpstreamError::NoSpace { .. }),
            _ => false,
        };
        if no_space {
            ArtifactError::NoSpace(Arc::new(e))
        } else {
            ArtifactError::Unavailable(Arc::new(e))
        }
    }
}

impl From<FlattenError> for ArtifactError {
    fn from(e: FlattenError) -> Self {
        ArtifactError::Invalid(Arc::new(e))
    }
}

/// One official extension of a Talos version (`GET /version/{v}/extensions/official`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtensionInfo {
    /// Repository path, e.g. `siderolabs/gvisor` (the name schematics use).
    pub name: String,
    /// `<artifacts registry>/<repository>:<tag>`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Index digest from the catalog.
    pub digest: String,
    /// Author from `descriptions.yaml`.
    pub author: String,
    /// Description from `descriptions.yaml`.
    pub description: String,
}

/// One official overlay of a Talos version (`GET /version/{v}/overlays/official`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayInfo {
    /// Overlay name (`rpi_generic`).
    pub name: String,
    /// Repository path (`siderolabs/sbc-raspberrypi`).
    pub image: String,
    /// Full tagged reference as in `overlays.yaml`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Index digest.
    pub digest: String,
}

/// A base image, resolved to one platform's manifest (present in the store).
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// `registry/repository:tag`, for messages.
    pub reference: String,
    /// The `linux/<arch>` image manifest.
    pub manifest: Digest,
}

/// The boot files of the imager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagerFile {
    /// `vmlinuz`
    Kernel,
    /// `initramfs.xz`
    Initramfs,
    /// `systemd-stub.efi`: the UKI stub (Talos ≥ 1.5).
    SdStub,
    /// `systemd-boot.efi`: the boot manager installers and disk images carry.
    SdBoot,
    /// `splash.bmp`: only when the imager has one (upstream embeds its own artwork instead,
    /// which bootfactory does not ship).
    Splash,
}

impl ImagerFile {
    fn file_name(self) -> &'static str {
        match self {
            ImagerFile::Kernel => "vmlinuz",
            ImagerFile::Initramfs => "initramfs.xz",
            ImagerFile::SdStub => "systemd-stub.efi",
            ImagerFile::SdBoot => "systemd-boot.efi",
            ImagerFile::Splash => "splash.bmp",
        }
    }
}

/// Upstream's extension alias table (`ExtensionNameAlias`).
const EXTENSION_ALIASES: &[(&str, &str)] = &[
    ("siderolabs/v4l-uvc", "siderolabs/v4l-uvc-drivers"),
    ("siderolabs/usb-modem", "siderolabs/usb-modem-drivers"),
    ("siderolabs/gasket", "siderolabs/gasket-driver"),
    (
        "siderolabs/talos-vmtoolsd",
        "siderolabs/vmtoolsd-guest-agent",
    ),
    (
        "siderolabs/xe-guest-utilities",
        "siderolabs/xen-guest-agent",
    ),
    (
        "siderolabs/nvidia-container-toolkit",
        "siderolabs/nvidia-container-toolkit-lts",
    ),
    (
        "siderolabs/nvidia-open-gpu-kernel-modules",
        "siderolabs/nvidia-open-gpu-kernel-modules-lts",
    ),
    (
        "siderolabs/nonfree-kmod-nvidia",
        "siderolabs/nonfree-kmod-nvidia-lts",
    ),
    (
        "siderolabs/nvidia-fabricmanager",
        "siderolabs/nvidia-fabric-manager-lts",
    ),
    ("siderolabs/i915-ucode", "siderolabs/i915"),
    ("siderolabs/amdgpu-firmware", "siderolabs/amdgpu"),
];

/// A version's extensions catalog.
#[derive(Debug, Clone, Default)]
pub struct ExtensionsCatalog {
    /// Entries in catalog order.
    pub entries: Vec<ExtensionInfo>,
}

impl ExtensionsCatalog {
    /// Finds an extension by the name a schematic uses, trying upstream's aliases.
    pub fn find(&self, name: &str) -> Option<&ExtensionInfo> {
        self.entries.iter().find(|e| e.name == name).or_else(|| {
            EXTENSION_ALIASES
                .iter()
                .find(|(alias, _)| *alias == name)
                .and_then(|(_, real)| self.entries.iter().find(|e| e.name == *real))
        })
    }
}

/// The artifacts service.
pub struct Artifacts {
    config: Arc<Config>,
    mirror: Arc<Mirror>,
    cache_dir: PathBuf,
    versions: Mutex<Option<(Instant, Vec<TalosVersion>)>>,
    extensions: Mutex<HashMap<String, Arc<ExtensionsCatalog>>>,
    overlays: Mutex<HashMap<String, Arc<Vec<OverlayInfo>>>>,
    extract_locks: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    talosctl_lists: Mutex<HashMap<Digest, Arc<Vec<String>>>>,
    /// When the "nothing imported" hint was last logged (at most once a minute).
    last_hint: Mutex<Option<Instant>>,
    /// Image digests an upstream said it has (online [`Artifacts::image_reachable`]), and
    /// when: a boot-chain check asks each at most once per [`REACHABLE_TTL`], however often
    /// `/pxe` is requested, so clients cannot turn requests into upstream traffic.
    reachable: Mutex<HashMap<Digest, Instant>>,
}

/// How long an upstream's "this image exists" is believed.
const REACHABLE_TTL: Duration = Duration::from_secs(600);

/// The most digests [`Artifacts::image_reachable`] remembers (the catalogs of every served
/// version together list a few hundred images).
const REACHABLE_MAX: usize = 4096;

/// Shortest time between two "import a bundle" hints in the log.
const HINT_EVERY: Duration = Duration::from_secs(60);

/// The most `talosctl-*` downloads listed for one version (the real image has nine).
pub const MAX_TALOSCTL_FILES: usize = 256;

/// The flattened `talosctl-all` image of one version.
#[derive(Debug, Clone)]
pub struct TalosctlTree {
    /// The image reference (`ghcr.io/siderolabs/talosctl-all:v1.11.6`).
    pub image: String,
    /// The flattened tree (untrusted content: read it through `crate::contained`).
    pub root: PathBuf,
    /// The linux/amd64 image manifest it was flattened from.
    pub manifest: Digest,
}

impl Artifacts {
    /// The service; flattened trees go under `cache_dir`.
    pub fn new(config: Arc<Config>, mirror: Arc<Mirror>, cache_dir: PathBuf) -> Artifacts {
        Artifacts {
            config,
            mirror,
            cache_dir,
            versions: Mutex::new(None),
            extensions: Mutex::new(HashMap::new()),
            overlays: Mutex::new(HashMap::new()),
            extract_locks: Mutex::new(HashMap::new()),
            talosctl_lists: Mutex::new(HashMap::new()),
            last_hint: Mutex::new(None),
            reachable: Mutex::new(HashMap::new()),
        }
    }

    /// Logs `hint` at WARN unless a hint was logged less than a minute ago: an empty store is
    /// worth telling the operator about, not once per request.
    fn hint(&self, hint: &str) {
        let mut last = self.last_hint.lock().expect("hint lock");
        if last.is_some_and(|at| at.elapsed() < HINT_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(hint, "the store lacks Talos content");
    }

    fn component(&self, component: &str) -> Result<ImageName, ArtifactError> {
        let core = &self.config.artifacts.core;
        core.image_name(component).map_err(|e| {
            ArtifactError::Invalid(errors::context(
                format!("artifacts repository {}", core.repository(component)),
                e,
            ))
        })
    }

    /// The versions the factory serves (cached for `build.versionRecheckSeconds`).
    pub async fn versions(&self) -> Result<Vec<TalosVersion>, ArtifactError> {
        let recheck = Duration::from_secs(self.config.build.version_recheck_seconds);
        if let Some((at, list)) = self.versions.lock().expect("versions lock").as_ref()
            && at.elapsed() < recheck
        {
            return Ok(list.clone());
        }
        let imager = self.component(&self.config.artifacts.core.components.imager)?;
        let tags = match self.mirror.tags(&imager, Requester::Internal).await {
            Ok(tags) => tags,
            // Offline with nothing imported: no versions (as upstream with none), not an error.
            Err(MirrorError::NotFound(_)) if self.config.offline => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let build = &self.config.build;
        let list = filter_versions(
            &tags,
            &build.min_talos_version,
            &build.broken_talos_versions,
        );
        if list.is_empty() && self.config.offline {
            // Not cached: a bundle imported meanwhile shows at once (the lookup is local).
            self.hint(&format!(
                "no Talos version is in the store ({imager} has no usable tags) and bootfactory is offline (offline: true): import a bundle with `bootfactory mirror import <bundle>` (see README \"Air-gapped sites\")"
            ));
            return Ok(list);
        }
        *self.versions.lock().expect("versions lock") = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// Versions listed as broken (`GET /versions?broken=true`).
    pub fn broken_versions(&self) -> Vec<TalosVersion> {
        self.config.build.broken_talos_versions.clone()
    }

    /// Fails with "version X is not available" unless the factory serves `version`.
    /// Offline with no version in the store at all, the answer is the 503 naming the imager
    /// image and `bootfactory mirror import` instead (nothing was imported yet); offline with
    /// other versions imported it stays upstream's 404, and the log gets the hint.
    pub async fn check_version(&self, version: &TalosVersion) -> Result<(), ArtifactError> {
        let list = self.versions().await?;
        if list.contains(version) {
            return Ok(());
        }
        if self.config.offline {
            let imager = self.component(&self.config.artifacts.core.components.imager)?;
            if list.is_empty() {
                return Err(ArtifactError::Unavailable(Arc::new(MirrorError::Offline(
                    format!("{imager}:{version}"),
                ))));
            }
            self.hint(&format!(
                "version {version} was asked for but {imager}:{version} is not in the store and bootfactory is offline: import a bundle holding it with `bootfactory mirror import <bundle>`"
            ));
        }
        Err(ArtifactError::VersionNotAvailable(
            version.to_string().trim_start_matches('v').to_string(),
        ))
    }

    /// The extensions catalog image of `version` (`ghcr.io/siderolabs/extensions:v1.11.6`).
    pub fn extensions_catalog_image(
        &self,
        version: &TalosVersion,
    ) -> Result<String, ArtifactError> {
        let name = self.component(&self.config.artifacts.core.components.extension_manifest)?;
        Ok(format!("{name}:{version}"))
    }

    /// Whether the image a catalog names (by reference and index digest) is there for a boot:
    /// offline, its `linux/<arch>` image whole in the store (nothing is fetched); online,
    /// present or answering one upstream manifest HEAD (nothing is downloaded).
    pub async fn image_reachable(
        &self,
        what: &str,
        reference: &str,
        digest: &str,
        arch: &str,
    ) -> Result<(), ArtifactError> {
        if self.config.offline {
            return self
                .pinned_manifest(what, reference, digest, arch)
                .await
                .map(|_| ());
        }
        let r: ImageRef = reference
            .parse()
            .map_err(|e| ArtifactError::Invalid(errors::context(what.to_string(), e)))?;
        let digest: Digest = digest.parse().map_err(|_| {
            ArtifactError::Invalid(errors::message(format!("{what}: bad digest {digest}")))
        })?;
        let known = |now: Instant| {
            self.reachable
                .lock()
                .expect("reachable lock")
                .get(&digest)
                .is_some_and(|at| now.duration_since(*at) < REACHABLE_TTL)
        };
        if known(Instant::now()) {
            return Ok(());
        }
        self.mirror
            .manifest_reachable(&r.name, &TagOrDigest::Digest(digest), Requester::Internal)
            .await?;
        let now = Instant::now();
        let mut reachable = self.reachable.lock().expect("reachable lock");
        if reachable.len() >= REACHABLE_MAX {
            reachable.retain(|_, at| now.duration_since(*at) < REACHABLE_TTL);
            if reachable.len() >= REACHABLE_MAX {
                reachable.clear();
            }
        }
        reachable.insert(digest, now);
        Ok(())
    }

    /// Resolves `name:tag` and picks `linux/<arch>` (the mirror fetches what is missing).
    async fn platform_manifest(
        &self,
        name: &ImageName,
        target: &TagOrDigest,
        arch: &str,
    ) -> Result<Digest, ArtifactError> {
        let root = self
            .mirror
            .manifest(name, target, Requester::Internal)
            .await?;
        let child = flatten::platform_manifest(self.mirror.catalog(), &root.digest, arch)
            .await?
            .ok_or_else(|| ArtifactError::MissingFile {
                image: format!("{name}:{target}"),
                path: format!("linux/{arch} image"),
            })?;
        // Make sure that platform's whole image is present before flattening it.
        let image = ImageRef {
            name: name.clone(),
            tag: None,
            digest: Some(child),
        };
        self.mirror
            .pull(&image, Requester::Internal, &|_| {})
            .await?;
        Ok(child)
    }

    /// Flattens an image manifest into the cache (once) and returns the directory.
    async fn extracted(
        &self,
        manifest: &Digest,
        prefix: Option<&str>,
    ) -> Result<PathBuf, ArtifactError> {
        let dir = self.cache_dir.join("images").join(manifest.hex());
        if dir.exists() {
            return Ok(dir);
        }
        let lock = self
            .extract_locks
            .lock()
            .expect("extract locks")
            .entry(*manifest)
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        if dir.exists() {
            return Ok(dir);
        }
        // The cache lives on the store's filesystem: its limits apply to extraction too.
        self.mirror
            .catalog()
            .store()
            .check_quota()
            .map_err(|e| ArtifactError::NoSpace(Arc::new(e)))?;
        let tmp = self.cache_dir.join("tmp").join(format!(
            "{}-{}",
            manifest.hex(),
            hex::encode(rand::random::<[u8; 4]>())
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        let result =
            flatten::flatten_image(self.mirror.catalog(), manifest, &tmp, prefix.map(Path::new))
                .await;
        let no_space = |e: SharedError| {
            ArtifactError::NoSpace(errors::context(
                format!("no space left on {}", self.config.data_dir.display()),
                errors::context(format!("cannot extract {manifest}"), e),
            ))
        };
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(if crate::store::caused_by_no_space(&e) {
                no_space(Arc::new(e))
            } else {
                e.into()
            });
        }
        std::fs::create_dir_all(dir.parent().expect("has parent"))
            .and_then(|_| std::fs::rename(&tmp, &dir))
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&tmp);
                if crate::store::is_no_space(&e) {
                    no_space(Arc::new(e))
                } else {
                    ArtifactError::Invalid(errors::context(format!("cannot cache {manifest}"), e))
                }
            })?;
        Ok(dir)
    }

    /// A boot file from the imager for `version` and `arch` (both arches come from the amd64
    /// imager image, as upstream).
    pub async fn imager_file(
        &self,
        version: &TalosVersion,
        arch: &str,
        file: ImagerFile,
    ) -> Result<PathBuf, ArtifactError> {
        let imager = self.component(&self.config.artifacts.core.components.imager)?;
        let manifest = self
            .platform_manifest(&imager, &TagOrDigest::Tag(version.to_string()), "amd64")
            .await?;
        let dir = self.extracted(&manifest, Some("usr/install")).await?;
        // Resolved as the image sees its own files: a symlink never leads out of the tree.
        let rel = Path::new("usr/install").join(arch).join(file.file_name());
        crate::contained::regular_file(&dir, &rel).ok_or_else(|| ArtifactError::MissingFile {
            image: format!("{imager}:{version}"),
            path: rel.display().to_string(),
        })
    }

    /// The base image of the installer for `version` and `arch` (`installer-base` for Talos ≥
    /// 1.10, `installer` below), pulled whole into the store: its `linux/<arch>` manifest.
    pub async fn installer_base(
        &self,
        version: &TalosVersion,
        arch: &str,
    ) -> Result<BaseImage, ArtifactError> {
        let components = &self.config.artifacts.core.components;
        let component = if super::quirks::Quirks::new(version).unified_installer() {
            &components.installer_base
        } else {
            &components.installer
        };
        let name = self.component(component)?;
        let manifest = self
            .platform_manifest(&name, &TagOrDigest::Tag(version.to_string()), arch)
            .await?;
        Ok(BaseImage {
            reference: format!("{name}:{version}"),
            manifest,
        })
    }

    /// The catalog images are kept in.
    pub fn catalog(&self) -> &crate::oci::ImageCatalog {
        self.mirror.catalog()
    }

    /// The extensions catalog of `version`.
    pub async fn extensions(
        &self,
        version: &TalosVersion,
    ) -> Result<Arc<ExtensionsCatalog>, ArtifactError> {
        let key = version.to_string();
        if let Some(c) = self.extensions.lock().expect("catalog lock").get(&key) {
            return Ok(c.clone());
        }
        let name = self.component(&self.config.artifacts.core.components.extension_manifest)?;
        let manifest = self
            .platform_manifest(&name, &TagOrDigest::Tag(key.clone()), "amd64")
            .await?;
        let catalog = self.mirror.catalog();
        let digests = flatten::read_file(catalog, &manifest, "image-digests", 16 << 20)
            .await?
            .ok_or_else(|| {
                ArtifactError::Invalid(errors::message(format!(
                    "{name}:{key} has no image-digests"
                )))
            })?;
        let descriptions = flatten::read_file(catalog, &manifest, "descriptions.yaml", 16 << 20)
            .await?
            .unwrap_or_default();
        let parsed = Arc::new(parse_extensions_catalog(
            &String::from_utf8_lossy(&digests),
            &String::from_utf8_lossy(&descriptions),
            &self.config.artifacts.core.registry,
        ));
        self.extensions
            .lock()
            .expect("catalog lock")
            .insert(key, parsed.clone());
        Ok(parsed)
    }

    /// The overlays catalog of `version` (empty below 1.7).
    pub async fn overlays(
        &self,
        version: &TalosVersion,
    ) -> Result<Arc<Vec<OverlayInfo>>, ArtifactError> {
        let key = version.to_string();
        if !super::quirks::Quirks::new(version).supports_overlay() {
            return Ok(Arc::new(Vec::new()));
        }
        if let Some(c) = self.overlays.lock().expect("catalog lock").get(&key) {
            return Ok(c.clone());
        }
        let name = self.component(&self.config.artifacts.core.components.overlay_manifest)?;
        let manifest = self
            .platform_manifest(&name, &TagOrDigest::Tag(key.clone()), "amd64")
            .await?;
        let yaml = flatten::read_file(self.mirror.catalog(), &manifest, "overlays.yaml", 16 << 20)
            .await?
            .ok_or_else(|| {
                ArtifactError::Invalid(errors::message(format!(
                    "{name}:{key} has no overlays.yaml"
                )))
            })?;
        let parsed = Arc::new(parse_overlays_catalog(&String::from_utf8_lossy(&yaml))?);
        self.overlays
            .lock()
            .expect("catalog lock")
            .insert(key, parsed.clone());
        Ok(parsed)
    }

    /// The `talosctl-all` image of `version` (`artifacts.core.components.talosctl`), its
    /// linux/amd64 image as upstream pulls it, flattened into the cache once.
    pub async fn talosctl_tree(
        &self,
        version: &TalosVersion,
    ) -> Result<TalosctlTree, ArtifactError> {
        let name = self.component(&self.config.artifacts.core.components.talosctl)?;
        let tag = version.to_string();
        let manifest = self
            .platform_manifest(&name, &TagOrDigest::Tag(tag.clone()), "amd64")
            .await?;
        let root = self.extracted(&manifest, None).await?;
        Ok(TalosctlTree {
            image: format!("{name}:{tag}"),
            root,
            manifest,
        })
    }

    /// The downloads a `talosctl-all` tree offers, sorted: regular files directly at its root
    /// (a symlink counts if it resolves to a regular file inside the tree) whose names follow
    /// [`super::talosctl::is_download_name`]; at most [`MAX_TALOSCTL_FILES`] (the first in byte order).
    /// Listed once per image.
    pub async fn talosctl_files(
        &self,
        tree: &TalosctlTree,
    ) -> Result<Arc<Vec<String>>, ArtifactError> {
        if let Some(list) = self
            .talosctl_lists
            .lock()
            .expect("talosctl lock")
            .get(&tree.manifest)
        {
            return Ok(list.clone());
        }
        let root = tree.root.clone();
        let list = tokio::task::spawn_blocking(move || list_talosctl_files(&root))
            .await
            .map_err(|e| ArtifactError::Invalid(errors::context("listing talosctl-all", e)))?
            .map_err(|e| {
                ArtifactError::Invalid(errors::context(format!("cannot list {}", tree.image), e))
            })?;
        let list = Arc::new(list);
        self.talosctl_lists
            .lock()
            .expect("talosctl lock")
            .insert(tree.manifest, list.clone());
        Ok(list)
    }

    /// A flattened overlay image for `arch` (`artifacts/`, `installers/`, `profiles/`).
    pub async fn overlay_tree(
        &self,
        overlay: &OverlayInfo,
        arch: &str,
    ) -> Result<PathBuf, ArtifactError> {
        let what = format!("overlay {}", overlay.name);
        let manifest = self
            .pinned_manifest(&what, &overlay.reference, &overlay.digest, arch)
            .await?;
        self.extracted(&manifest, None).await
    }

    /// A flattened extension image (a directory with `manifest.yaml` and `rootfs/`) for `arch`,
    /// and its image manifest digest (the cache identity of its squashfs).
    pub async fn extension_tree(
        &self,
        ext: &ExtensionInfo,
        arch: &str,
    ) -> Result<(PathBuf, Digest), ArtifactError> {
        let what = format!("extension {}", ext.name);
        let manifest = self
            .pinned_manifest(&what, &ext.reference, &ext.digest, arch)
            .await?;
        Ok((self.extracted(&manifest, None).await?, manifest))
    }

    /// The `linux/<arch>` manifest of an image a catalog names by reference and index digest
    /// (`what` names it in errors), pulled whole.
    async fn pinned_manifest(
        &self,
        what: &str,
        reference: &str,
        digest: &str,
        arch: &str,
    ) -> Result<Digest, ArtifactError> {
        let r: ImageRef = reference
            .parse()
            .map_err(|e| ArtifactError::Invalid(errors::context(what.to_string(), e)))?;
        let digest: Digest = digest.parse().map_err(|_| {
            ArtifactError::Invalid(errors::message(format!("{what}: bad digest {digest}")))
        })?;
        self.platform_manifest(&r.name, &TagOrDigest::Digest(digest), arch)
            .await
    }
}

fn list_talosctl_files(root: &Path) -> std::io::Result<Vec<String>> {
    let mut names = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !super::talosctl::is_download_name(&name)
            || crate::contained::regular_file(root, Path::new(&name)).is_none()
        {
            continue;
        }
        names.insert(name);
        if names.len() > MAX_TALOSCTL_FILES {
            names.pop_last();
        }
    }
    Ok(names.into_iter().collect())
}

/// Parses `image-digests` + `descriptions.yaml` (`docs/formats.md` §Extensions catalog): lines
/// without `@` are ignored; `name` is the repository path; `ref` has the registry replaced by
/// `registry`.
pub fn parse_extensions_catalog(
    digests: &str,
    descriptions: &str,
    registry: &str,
) -> ExtensionsCatalog {
    #[derive(Deserialize, Default)]
    struct Description {
        #[serde(default)]
        author: String,
        #[serde(default)]
        description: String,
    }
    let descriptions: BTreeMap<String, Description> =
        serde_yaml::from_str(descriptions).unwrap_or_default();
    let mut entries = Vec::new();
    for line in digests.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((tagged, digest)) = line.split_once('@') else {
            continue;
        };
        let Ok(r) = tagged.parse::<ImageRef>() else {
            continue;
        };
        let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
        let desc = descriptions.get(line);
        entries.push(ExtensionInfo {
            name: r.name.repository().to_string(),
            reference: format!("{registry}/{}:{tag}", r.name.repository()),
            digest: digest.to_string(),
            author: desc.map(|d| d.author.clone()).unwrap_or_default(),
            description: desc.map(|d| d.description.clone()).unwrap_or_default(),
        });
    }
    ExtensionsCatalog { entries }
}

/// Parses `overlays.yaml` (`overlays: [{name, image, digest}]`).
pub fn parse_overlays_catalog(yaml: &str) -> Result<Vec<OverlayInfo>, ArtifactError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        overlays: Vec<RawOverlay>,
    }
    #[derive(Deserialize)]
    struct RawOverlay {
        name: String,
        image: String,
        digest: String,
    }
    let raw: Raw = serde_yaml::from_str(yaml)
        .map_err(|e| ArtifactError::Invalid(errors::context("overlays.yaml", e)))?;
    Ok(raw
        .overlays
        .into_iter()
        .map(|o| {
            let repo = o
                .image
                .parse::<ImageRef>()
                .map(|r| r.name.repository().to_string())
                .unwrap_or_else(|_| o.image.clone());
            OverlayInfo {
                name: o.name,
                image: repo,
                reference: o.image,
                digest: o.digest,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_lines_names_and_aliases() {
        let digests = "ghcr.io/siderolabs/gvisor:20231214.0@sha256:5ab365f2\nignored line\nghcr.io/siderolabs/i915:20240110@sha256:aa\n";
        let descriptions = "ghcr.io/siderolabs/gvisor:20231214.0@sha256:5ab365f2:\n  author: Sidero Labs\n  description: |\n    [core] gVisor\n";
        let c = parse_extensions_catalog(digests, descriptions, "mirror.local:5000");
        assert_eq!(c.entries.len(), 2);
        let g = c.find("siderolabs/gvisor").unwrap();
        assert_eq!(
            g.reference,
            "mirror.local:5000/siderolabs/gvisor:20231214.0"
        );
        assert_eq!(g.digest, "sha256:5ab365f2");
        assert_eq!(g.author, "Sidero Labs");
        assert_eq!(g.description, "[core] gVisor\n");
        assert_eq!(
            c.find("siderolabs/i915-ucode").unwrap().name,
            "siderolabs/i915"
        );
        assert!(c.find("siderolabs/nope").is_none());
    }

    #[test]
    fn overlays_catalog() {
        let o = parse_overlays_catalog(
            "overlays:\n  - name: rpi_generic\n    image: ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0\n    digest: sha256:ab\n",
        )
        .unwrap();
        assert_eq!(o[0].image, "siderolabs/sbc-raspberrypi");
        assert_eq!(o[0].reference, "ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0");
        assert!(parse_overlays_catalog("overlays: 5").is_err());
    }
}
