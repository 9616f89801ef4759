//! The factory service: turns `(schematic, version, asset path)` into a built, cached, signed
//! asset, with upstream's validation order and error texts. HTTP handlers only call this.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::artifacts::{ArtifactError, Artifacts, ImagerFile};
use super::builder::{BuildError, BuildFuture, Builder, BuiltAsset};
use super::cmdline::{CmdlineInput, UnknownPlatform, build_cmdline, platform_name};
use super::disk::layout::{
    DiskBootloader, DiskPlan, PlanError, SECTOR_SIZES, plan, select_bootloader,
};
use super::disk::{
    DiskImage, EfiContents, GrubImageSpec, GrubTools, convert, image_meta, write_disk_image,
    write_grub_image,
};
use super::grubcfg;
use super::initramfs::{self, ExtensionTree, InitramfsOptions};
use super::iso::{IsoInputs, IsoKind, build_iso};
use super::profile::{
    Arch, AssetProfile, DiskFormat, ImageOptions, OutFormat, OutputKind, ProfileError,
    parse_asset_path, parse_pxe_path,
};
use super::quirks::Quirks;
use super::remote::oci_cache::OciCache;
use super::remote::parent::{FetchRequest, Parent};
use super::tools::{self, Located};
use super::uki::{self, UkiInputs, UkiProfile};
use crate::config::Config;
use crate::errors::{self, SharedError};
use crate::formats::adv;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::schematic::storage::{SchematicStoreError, StoredSchematic};
use crate::schematic::{SchematicId, SchematicStore};
use crate::store::Store;
use crate::upstream::MirrorError;
use crate::version::TalosVersion;

/// Bump when the bytes any builder produces change, so stale cache entries are not served.
const BUILD_FORMAT: &str = "bf1";
/// Fixed mtime for everything bootfactory writes into images (upstream's SOURCE_DATE_EPOCH).
pub const SOURCE_DATE_EPOCH: u32 = 1_559_424_892;

/// A factory failure with its HTTP meaning.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FactoryError {
    /// 404 `schematic ID "<id>" not found`.
    #[error("schematic ID {0:?} not found")]
    SchematicNotFound(String),
    /// 400: the version string is not a version.
    #[error("invalid version {0:?}: want a Talos version like v1.11.6")]
    BadVersion(String),
    /// 400 `error parsing profile from path: …`.
    #[error("error parsing profile from path: {0}")]
    BadPath(String),
    /// 404 `version X is not available`.
    #[error("{0}")]
    VersionNotAvailable(String),
    /// 400 `unknown platform: "<name>"`: refused before any work, so a stranger cannot make
    /// the factory build and store one asset per made-up platform name.
    #[error("{0}")]
    UnknownPlatform(String),
    /// 429: this client started too many new builds recently (`build.perClientBurst`,
    /// `build.perClientPerMinute`); cached assets and joining a running build are not limited.
    #[error("{0}")]
    TooManyBuilds(String),
    /// 404: the release does not have what the asset is built from (e.g. no arm64 kernel).
    #[error("{0}")]
    AssetSourceMissing(String),
    /// 400: a talosctl download name that is not a plain file name.
    #[error("{0}")]
    BadFileName(String),
    /// 404: the `talosctl-all` image has no such file (upstream's `stat` text, no host path).
    #[error("{0}")]
    FileNotFound(String),
    /// 400 `error enhancing profile from schematic: …`.
    #[error("error enhancing profile from schematic: {0}")]
    Schematic(String),
    /// 402: a route of the Image Factory's enterprise edition (signature bundles).
    #[error("{0}")]
    EnterpriseOnly(String),
    /// 400 `invalid image: <image>`: not an installer image name.
    #[error("{0}")]
    InvalidImage(String),
    /// 404: a manifest of an installer repository that was never built.
    #[error("{0}")]
    ManifestUnknown(String),
    /// 404: a blob that no manifest of the installer repository references.
    #[error("{0}")]
    BlobUnknown(String),
    /// 404: a registry path upstream does not route (e.g. a referrers subject that is not a
    /// digest).
    #[error("{0}")]
    RouteNotFound(String),
    /// 501: an asset kind this release does not build yet.
    #[error("{0}")]
    NotImplemented(String),
    /// 503: an upstream image could not be fetched.
    #[error(transparent)]
    Unavailable(Arc<MirrorError>),
    /// 503: the host lacks a program or GRUB platform the asset needs; the text names the
    /// Debian packages.
    #[error(transparent)]
    MissingTools(#[from] super::tools::MissingTools),
    /// 507: the data directory's filesystem is full (`no space left on <dataDir>`).
    #[error(transparent)]
    NoSpace(SharedError),
    /// 502: the parent factory (`factory.parent`) could not give the asset and
    /// `factory.parentFallback` is `fail`, or this appliance cannot build it either; the text
    /// names the parent and why.
    #[error("{0}")]
    ParentUnavailable(String),
    /// 500 (the client sees no details; the chain goes to the log).
    #[error(transparent)]
    Internal(SharedError),
}

impl From<ArtifactError> for FactoryError {
    fn from(e: ArtifactError) -> Self {
        match e {
            ArtifactError::VersionNotAvailable(_) => {
                FactoryError::VersionNotAvailable(e.to_string())
            }
            ArtifactError::Unavailable(m) => FactoryError::Unavailable(m),
            ArtifactError::Invalid(m) => FactoryError::Internal(m),
            ArtifactError::MissingFile { .. } => FactoryError::AssetSourceMissing(e.to_string()),
            ArtifactError::NoSpace(m) => FactoryError::NoSpace(m),
        }
    }
}

impl From<BuildError> for FactoryError {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Rejected(m) => FactoryError::Schematic(m),
            e @ (BuildError::NoSpace { .. } | BuildError::Quota(_)) => {
                FactoryError::NoSpace(Arc::new(e))
            }
            e => FactoryError::Internal(Arc::new(e)),
        }
    }
}

/// A resolved request: schematic, version and profile.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The schematic.
    pub schematic: StoredSchematic,
    /// The Talos version.
    pub version: TalosVersion,
    /// The parsed asset path.
    pub profile: AssetProfile,
}

/// A charged request's claim on the build of one key ([`Factory::charge_build`]); released
/// when the request is done with the build (built, joined, failed or cancelled).
struct BuildClaim {
    claims: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    key: String,
}

impl Drop for BuildClaim {
    fn drop(&mut self) {
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// The factory.
pub struct Factory {
    config: Arc<Config>,
    schematics: SchematicStore,
    artifacts: Arc<Artifacts>,
    builder: Arc<Builder>,
    store: Store,
    /// New builds per client address: an anonymous client cannot make the factory build (and
    /// store) one asset after another as fast as it can ask.
    build_limiter: RateLimiter<IpAddr>,
    /// Keys whose new build a request has been charged for and is preparing, before the
    /// builder lists it in flight ([`Factory::charge_build`]).
    claims: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Upstream's asset metrics, counted where assets are delivered.
    metrics: Arc<Metrics>,
    /// Installer index builds in flight.
    index_builds: super::installer::IndexBuilds,
    /// The parent factory asked before building (`factory.parent`).
    parent: Option<Arc<Parent>>,
    /// The shared build cache on an OCI registry (`cache.oci.repository`).
    oci_cache: Option<Arc<OciCache>>,
}

impl Factory {
    /// Wires the factory.
    pub fn new(
        config: Arc<Config>,
        schematics: SchematicStore,
        artifacts: Arc<Artifacts>,
        builder: Arc<Builder>,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Factory {
        metrics.register_collector(Box::new(super::running::RunningCollector::new(
            builder.running().clone(),
        )));
        let build_limiter = RateLimiter::new(
            config.build.per_client_burst,
            f64::from(config.build.per_client_per_minute) / 60.0,
        );
        Factory {
            config,
            schematics,
            artifacts,
            builder,
            store,
            build_limiter,
            claims: Default::default(),
            metrics,
            index_builds: Default::default(),
            parent: None,
            oci_cache: None,
        }
    }

    /// Looks assets up in `cache` before building them and pushes what it builds there
    /// (`cache.oci.repository`); its counter joins the metrics.
    pub(crate) fn with_oci_cache(mut self, cache: Option<OciCache>) -> Factory {
        if let Some(c) = &cache {
            self.metrics.register_collector(c.metrics_collector());
        }
        self.oci_cache = cache.map(Arc::new);
        self
    }

    /// Asks `parent` for assets before building them (`factory.parent`); its fetch counter
    /// joins the metrics.
    pub(crate) fn with_parent(mut self, parent: Option<Parent>) -> Factory {
        if let Some(p) = &parent {
            self.metrics.register_collector(p.metrics_collector());
        }
        self.parent = parent.map(Arc::new);
        self
    }

    /// The metrics the factory counts into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The artifacts service (catalog handlers use it).
    pub fn artifacts(&self) -> &Arc<Artifacts> {
        &self.artifacts
    }

    /// The builder (its signer's public key is published).
    pub fn builder(&self) -> &Arc<Builder> {
        &self.builder
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The image catalog (installer images are kept in it).
    pub(crate) fn catalog(&self) -> &crate::oci::ImageCatalog {
        self.artifacts.catalog()
    }

    /// Installer index builds in flight.
    pub(crate) fn index_builds(&self) -> &super::installer::IndexBuilds {
        &self.index_builds
    }

    /// Layer digest → `diff_id` (SHA-256 of the uncompressed tar) of built installer layers.
    pub(crate) fn layer_diff_ids(&self) -> Result<sled::Tree, FactoryError> {
        self.store
            .db()
            .open_tree("factory/installer-diff-ids")
            .map_err(|e| FactoryError::Internal(Arc::new(e)))
    }

    /// `<repo>:<tag>` → the cache key's signature binding an installer version tag to its
    /// index digest (`factory::installer`).
    pub(crate) fn installer_tag_signatures(&self) -> Result<sled::Tree, FactoryError> {
        self.store
            .db()
            .open_tree("factory/installer-tags")
            .map_err(|e| FactoryError::Internal(Arc::new(e)))
    }

    /// The store assets live in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Validates an `/image/…` request in upstream's order: schematic, version syntax, asset
    /// path, version availability.
    pub async fn resolve(
        &self,
        schematic: &str,
        version: &str,
        path: &str,
    ) -> Result<Resolved, FactoryError> {
        let resolved = self
            .resolve_with(schematic, version, |v| parse_asset_path(path, v))
            .await?;
        self.served(resolved).await
    }

    /// Parses a `{version}` of a route and checks that the factory serves it (400 for bad
    /// syntax, 404 when not served; the catalog routes).
    pub async fn served_version(&self, version: &str) -> Result<TalosVersion, FactoryError> {
        let version = parse_version(version)?;
        self.artifacts.check_version(&version).await?;
        Ok(version)
    }

    /// [`Factory::resolve`] for a profile already known (an assignment's
    /// [`AssetProfile::cmdline`]): schematic, version syntax, platform, version availability.
    pub async fn resolve_profile(
        &self,
        schematic: &str,
        version: &str,
        profile: AssetProfile,
    ) -> Result<Resolved, FactoryError> {
        let resolved = self
            .resolve_profile_locally(schematic, version, profile)
            .await?;
        self.served(resolved).await
    }

    /// [`Factory::resolve_profile`] without the version-availability step, which may ask an
    /// upstream: everything this appliance can decide on its own (schematic, version syntax,
    /// platform).
    pub async fn resolve_profile_locally(
        &self,
        schematic: &str,
        version: &str,
        profile: AssetProfile,
    ) -> Result<Resolved, FactoryError> {
        self.resolve_with(schematic, version, |_| Ok(profile)).await
    }

    /// The local steps in upstream's order: the schematic exists, the version parses, then
    /// `profile` (the path parser, which may depend on the version) and the platform check.
    async fn resolve_with(
        &self,
        schematic: &str,
        version: &str,
        profile: impl FnOnce(&TalosVersion) -> Result<AssetProfile, ProfileError>,
    ) -> Result<Resolved, FactoryError> {
        let stored = self.load_schematic(schematic).await?;
        let version = parse_version(version)?;
        let profile = profile(&version).map_err(|e| FactoryError::BadPath(e.to_string()))?;
        check_platform(&profile.platform)?;
        Ok(Resolved {
            schematic: stored,
            version,
            profile,
        })
    }

    /// The last step of a resolve: the version is one the factory serves (may ask an
    /// upstream), or, with a parent factory, one the parent serves (its assets are fetched;
    /// a local build then fails with the local reason).
    async fn served(&self, resolved: Resolved) -> Result<Resolved, FactoryError> {
        self.version_served(&resolved.version).await?;
        Ok(resolved)
    }

    /// [`Factory::served`] for a version alone.
    pub(crate) async fn version_served(&self, version: &TalosVersion) -> Result<(), FactoryError> {
        let local = match self.artifacts.check_version(version).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let Some(parent) = &self.parent else {
            return Err(local.into());
        };
        match parent.has_version(version).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(local.into()),
            // Neither here nor (as far as can be told) there: say both.
            Err(why) => Err(FactoryError::ParentUnavailable(format!(
                "{why}; and this appliance cannot serve version {version}: {}",
                errors::chain(&local)
            ))),
        }
    }

    /// The parent factory, if `factory.parent` is set.
    pub(crate) fn parent(&self) -> Option<&Arc<Parent>> {
        self.parent.as_ref()
    }

    pub(crate) async fn load_schematic(&self, id: &str) -> Result<StoredSchematic, FactoryError> {
        let not_found = || FactoryError::SchematicNotFound(id.to_string());
        let parsed: SchematicId = id.parse().map_err(|_| not_found())?;
        self.schematics
            .get(&parsed)
            .await
            .map_err(|e| match e {
                // Stored by an older version and not decodable: say so (400), not 500.
                SchematicStoreError::Unreadable { .. } => FactoryError::Schematic(e.to_string()),
                e => FactoryError::Internal(Arc::new(e)),
            })?
            .ok_or_else(not_found)
    }

    /// Checks what the schematic asks for against the version (upstream's enhancement step).
    pub(crate) fn check_schematic(&self, r: &Resolved) -> Result<(), FactoryError> {
        let quirks = Quirks::new(&r.version);
        let c = &r.schematic.schematic.customization;
        if r.profile.secure_boot && !super::SERVES_SECURE_BOOT {
            return Err(FactoryError::Schematic("secure boot is disabled".into()));
        }
        let kind = r.profile.kind;
        let uses_image_content = !matches!(kind, OutputKind::Kernel | OutputKind::Cmdline);
        if uses_image_content
            && !c.embedded_machine_configuration.is_empty()
            && !quirks.supports_embedded_config()
        {
            return Err(FactoryError::Schematic(format!(
                "embedding configuration is not supported for Talos version {}",
                r.version
            )));
        }
        if uses_image_content
            && !c.embedded_machine_configuration.is_empty()
            && !super::BUILDS_EMBEDDED_CONFIG
        {
            return Err(FactoryError::NotImplemented(
                "embedding a machine configuration into assets is not supported by this bootfactory release yet".into(),
            ));
        }
        if uses_image_content
            && !r.schematic.schematic.overlay.is_empty()
            && !quirks.supports_overlay()
        {
            return Err(FactoryError::Schematic(format!(
                "overlay is not supported for Talos version {}",
                r.version
            )));
        }
        Ok(())
    }

    /// The kernel command line for a resolved request (`cmdline-*` assets, `/pxe` scripts).
    pub fn cmdline(&self, r: &Resolved) -> String {
        let c = &r.schematic.schematic.customization;
        let quirks = Quirks::new(&r.version);
        let meta: Vec<(u8, String)> = if r.profile.meta_applies() {
            c.meta.iter().map(|m| (m.key, m.value.clone())).collect()
        } else {
            Vec::new()
        };
        let no_args: Vec<String> = Vec::new();
        let extra = if r.profile.extra_kernel_args_apply(&quirks) {
            &c.extra_kernel_args
        } else {
            &no_args
        };
        build_cmdline(&CmdlineInput {
            platform: &r.profile.platform,
            arch: r.profile.arch,
            kind: r.profile.kind,
            secure_boot: r.profile.secure_boot,
            version: r.version.clone(),
            extra_kernel_args: extra,
            meta: &meta,
            overlay_kernel_args: None,
        })
    }

    pub(crate) fn asset_key(&self, r: &Resolved) -> String {
        let p = &r.profile;
        let schematic = match p.kind {
            OutputKind::Kernel => "-",
            _ => r.schematic.id.as_str(),
        };
        let mut key = format!(
            "{BUILD_FORMAT}/{:?}/{}/{}/{}/{}/{}",
            p.kind,
            r.version,
            p.platform,
            p.arch.as_str(),
            if p.secure_boot { "sb" } else { "-" },
            schematic
        );
        // Disk images differ per format and compression (and size, which the platform fixes).
        if let Some(image) = &p.image {
            key.push_str(&format!(
                "/{}{}/{}",
                image.disk_format.extension(),
                p.out_format.suffix(),
                image.disk_size_mib
            ));
        }
        key
    }

    /// The `/pxe/{schematic}/{version}/{path}` iPXE script, `path` being
    /// `<platform>-<arch>[-secureboot]` ([`parse_pxe_path`]). URLs start at `pxe_base`
    /// (`http.externalPXEURL`). The cmdline asset is validated and cached first.
    pub async fn pxe_script(
        &self,
        schematic: &str,
        version: &str,
        path: &str,
        pxe_base: &str,
        client: Option<IpAddr>,
    ) -> Result<String, FactoryError> {
        let resolved = self
            .resolve_with(schematic, version, |v| parse_pxe_path(path, v))
            .await?;
        let resolved = self.served(resolved).await?;
        self.render_pxe_script(&resolved, pxe_base, &[], client)
            .await
    }

    /// The `/pxe` script of a cmdline profile already known (an assignment's
    /// [`AssetProfile::cmdline`]), with `extra_args` appended to the kernel command line
    /// (per-machine arguments). Validated in [`Factory::resolve_profile`]'s order.
    pub async fn profile_pxe_script(
        &self,
        schematic: &str,
        version: &str,
        cmdline: AssetProfile,
        pxe_base: &str,
        extra_args: &[String],
        client: Option<IpAddr>,
    ) -> Result<String, FactoryError> {
        debug_assert_eq!(
            cmdline.kind,
            OutputKind::Cmdline,
            "a /pxe script boots a cmdline"
        );
        let resolved = self.resolve_profile(schematic, version, cmdline).await?;
        self.render_pxe_script(&resolved, pxe_base, extra_args, client)
            .await
    }

    async fn render_pxe_script(
        &self,
        resolved: &Resolved,
        pxe_base: &str,
        extra_args: &[String],
        client: Option<IpAddr>,
    ) -> Result<String, FactoryError> {
        // A script is only worth sending when what it boots can be had: a broken chain (an
        // extension not in the catalog, the catalog or an image missing) is the error the
        // initramfs would get, now rather than after the kernel download.
        // With a parent factory, what this appliance lacks can come from the parent: its
        // answer for the kernel and initramfs decides.
        self.check_boot_chain_here_or_parent(resolved, resolved.profile.arch)
            .await
            .map_err(|e| e.into_factory_error())?;
        self.asset(resolved, client).await?;
        let mut cmdline = self.cmdline(resolved);
        for arg in extra_args {
            cmdline.push(' ');
            cmdline.push_str(arg);
        }
        let image_base = format!(
            "{pxe_base}/image/{}/{}",
            resolved.schematic.id, resolved.version
        );
        Ok(crate::ipxe::script::PxeScript {
            image_base: &image_base,
            arch: resolved.profile.arch.as_str(),
            platform: &resolved.profile.platform,
            cmdline: &cmdline,
            secure_boot: resolved.profile.secure_boot,
        }
        .render())
    }

    /// [`Factory::asset`], with the blob already open when it was a cache hit (the hit's
    /// check opened it; serving it needs no second open).
    pub async fn asset_open(
        &self,
        r: &Resolved,
        client: Option<IpAddr>,
    ) -> Result<(BuiltAsset, Option<crate::store::Blob>), FactoryError> {
        self.check_schematic(r)?;
        if r.profile.kind == OutputKind::Image {
            self.disk_image_plan(r)?;
        }
        if let Some((hit, blob)) = self.builder.cached_open(&self.asset_key(r)).await {
            return Ok((hit, Some(blob)));
        }
        Ok((self.asset(r, client).await?, None))
    }

    /// Produces (or finds) the asset for a resolved request. A request from `client` that
    /// would start a new build (not cached, not running) takes a token from the client's
    /// build budget first; `None` (the appliance itself) is not limited.
    pub async fn asset(
        &self,
        r: &Resolved,
        client: Option<IpAddr>,
    ) -> Result<BuiltAsset, FactoryError> {
        self.check_schematic(r)?;
        // Disk images: the layout is decided (or refused, 400/501) before the cache.
        let disk_plan = match r.profile.kind {
            OutputKind::Image => Some(self.disk_image_plan(r)?),
            _ => None,
        };
        let key = self.asset_key(r);
        if let Some(hit) = self.builder.cached(&key).await {
            return Ok(hit);
        }
        // Asked by a child for something this factory is itself fetching from a parent
        // (parents configured in a loop): answer now rather than wait for ourselves.
        let chain = super::remote::current_chain();
        if self.parent.is_some() && chain.is_loop() {
            return Err(FactoryError::ParentUnavailable(
                "parent loop: this factory is already asking its parent for this request (factory.parent chains back to itself)".into(),
            ));
        }
        // The shared cache, then a parent factory, before the build budget and the host's
        // tools: an appliance fed by them needs neither.
        if let Some(cache) = &self.oci_cache {
            let fetch = cache.fetch_build(self.store.clone(), key.clone());
            match self.builder.get_or_fetch(&key, "shared cache", fetch).await {
                Ok(asset) => return Ok(asset),
                Err(e @ (BuildError::NoSpace { .. } | BuildError::Quota(_))) => {
                    return Err(e.into());
                }
                Err(e) => {
                    tracing::debug!(asset = key, reason = %errors::chain(&e), "not in the shared cache");
                }
            }
        }
        // A parent factory, before the build budget and the host's tools: an appliance fed
        // by a parent needs neither. The fetch is charged to the client like a build (it
        // fills the store); a fallback build is not charged again.
        let mut charged = None;
        if let Some(parent) = &self.parent
            && let Some(path) = super::remote::image_path(&r.profile, &r.version)
        {
            charged = Some(self.charge_build(&key, client)?);
            let req = FetchRequest {
                schematic: r.schematic.id.to_string(),
                canonical: r.schematic.canonical.clone(),
                version: r.version.to_string(),
                path,
                chain: chain.extended(),
            };
            let fetch = parent.fetch_build(self.store.clone(), req);
            match self.builder.get_or_fetch(&key, "parent", fetch).await {
                Ok(asset) => return Ok(asset),
                Err(e @ (BuildError::NoSpace { .. } | BuildError::Quota(_))) => {
                    return Err(e.into());
                }
                Err(e) => {
                    let why = errors::chain(&e);
                    if parent.fallback() == crate::config::ParentFallback::Fail {
                        return Err(FactoryError::ParentUnavailable(why));
                    }
                    tracing::info!(asset = key, parent = parent.url(), reason = %why, "the parent did not give the asset; building it here");
                    // Building needs the release here; without it, say both.
                    if let Err(local) = self.artifacts.check_version(&r.version).await {
                        return Err(FactoryError::ParentUnavailable(format!(
                            "{why}; and this appliance cannot build it: {}",
                            errors::chain(&local)
                        )));
                    }
                }
            }
        }
        // A GRUB or dual-boot image the host lacks the tools for: the 503 naming the Debian
        // packages, before a build token is spent.
        if let Some(plan) = &disk_plan {
            let needed = GrubTools::needed(plan.bootloader, r.profile.arch == Arch::Arm64);
            tools::require(disk_image_what(plan.bootloader), &needed)?;
        }
        if !matches!(
            r.profile.kind,
            OutputKind::Kernel
                | OutputKind::Cmdline
                | OutputKind::Initramfs
                | OutputKind::Uki
                | OutputKind::Installer
                | OutputKind::Image
                | OutputKind::Iso
        ) {
            return Err(not_implemented(r.profile.kind));
        }
        // ISOs: the host's GRUB tools are looked up before any work (503 naming packages).
        let iso_tools = match r.profile.kind {
            OutputKind::Iso => Some(self.iso_tools(r)?),
            _ => None,
        };
        let _claim = match charged {
            Some(claim) => claim,
            None => self.charge_build(&key, client)?,
        };
        let built = self.build_asset(r, &key, disk_plan, iso_tools).await?;
        // A fresh local build (not a joiner's copy, not a fetch) goes to the shared cache.
        if let Some(cache) = &self.oci_cache
            && !built.cached
            && !built.shared
            && !built.fetched
        {
            cache.push_in_background(self.store.clone(), key, built.digest);
        }
        Ok(built)
    }

    /// The local build of `r` under `key` (everything checked, the budget charged).
    async fn build_asset(
        &self,
        r: &Resolved,
        key: &str,
        disk_plan: Option<DiskPlan>,
        iso_tools: Option<(IsoKind, Located)>,
    ) -> Result<BuiltAsset, FactoryError> {
        let key = key.to_string();
        match r.profile.kind {
            OutputKind::Kernel => {
                let kernel = self
                    .artifacts
                    .imager_file(&r.version, r.profile.arch.as_str(), ImagerFile::Kernel)
                    .await?;
                Ok(self.builder.get_or_build(&key, copy_file(kernel)).await?)
            }
            OutputKind::Cmdline => {
                let text = self.cmdline(r);
                Ok(self
                    .builder
                    .get_or_build(&key, move |out| {
                        Box::pin(async move {
                            tokio::fs::write(out, text)
                                .await
                                .map_err(BuildError::from_error)
                        }) as BuildFuture
                    })
                    .await?)
            }
            OutputKind::Initramfs => {
                let build = self.initramfs_build(r).await?;
                Ok(self.builder.get_or_build(&key, build).await?)
            }
            OutputKind::Uki => {
                let build = self.uki_build(r, Vec::new()).await?;
                Ok(self.builder.get_or_build(&key, build).await?)
            }
            // Boxed: the tarball's parts are assets too (this function, recursively).
            OutputKind::Installer => Box::pin(self.installer_tarball(r)).await,
            OutputKind::Image => {
                let (Some(plan), Some(image)) = (disk_plan, &r.profile.image) else {
                    return Err(not_implemented(OutputKind::Image));
                };
                if image.disk_format == DiskFormat::Raw && r.profile.out_format == OutFormat::Raw {
                    let build = Box::pin(self.disk_image_build(r, plan, &key)).await?;
                    return Ok(self.builder.get_or_build(&key, build).await?);
                }
                let build = Box::pin(self.disk_conversion_build(r, &plan)).await?;
                Ok(self.builder.get_or_build(&key, build).await?)
            }
            OutputKind::Iso => {
                let Some((kind, tools)) = iso_tools else {
                    return Err(not_implemented(OutputKind::Iso));
                };
                let build = Box::pin(self.iso_build(r, kind, tools, &key)).await?;
                Ok(self.builder.get_or_build(&key, build).await?)
            }
        }
    }

    /// A request from `client` that would start the build of `key` (not cached, not running)
    /// takes a token from the client's build budget; `None` (the appliance itself) is free.
    ///
    /// A request that was charged keeps a [`BuildClaim`] on `key` while it prepares and runs
    /// the build: between its charge and the moment the builder lists the build in flight
    /// (an initramfs build first resolves its extensions), every other request for `key` —
    /// a boot storm sends thousands at once, through one NAT address or, in the boot storm
    /// bench, from one address — joins for free instead of being charged (and refused with
    /// 429 once the burst is spent) for a build it does not start. The check and the claim
    /// are made under one lock, so of the requests that race, exactly one is charged.
    fn charge_build(
        &self,
        key: &str,
        client: Option<IpAddr>,
    ) -> Result<Option<BuildClaim>, FactoryError> {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        if claims.contains(key) || self.builder.in_flight(key) {
            return Ok(None);
        }
        self.charge_client(client)?;
        claims.insert(key.to_string());
        Ok(Some(BuildClaim {
            claims: self.claims.clone(),
            key: key.to_string(),
        }))
    }

    /// Takes one token from `client`'s build budget for a new build it starts (`None`, the
    /// appliance itself, is free): the check behind [`Factory::charge_build`], used directly
    /// by builds that have their own in-flight table (installer indexes).
    pub(crate) fn charge_client(&self, client: Option<IpAddr>) -> Result<(), FactoryError> {
        if let Some(ip) = client
            && !self.build_limiter.allow(canonical_ip(ip), Instant::now())
        {
            return Err(FactoryError::TooManyBuilds(format!(
                "too many new builds requested from {ip}; retry in a minute (cached assets are not limited)"
            )));
        }
        Ok(())
    }

    /// The UKI an installer image carries (`usr/install/<arch>/vmlinuz.efi`) for a resolved
    /// installer request (`r.profile.kind == OutputKind::Installer`; platform and arch from
    /// the image name): the installer's command line ([`Factory::cmdline`] with kind
    /// `Installer`: extra kernel args only with SecureBoot or Talos ≥ 1.10, never META) and,
    /// from Talos 1.10, the `reset-maintenance` profile after `main`. Built once per key (its
    /// own, not the installer image's) and stored and signed like an asset. Upstream's non-SB
    /// installer for Talos < 1.10 carries `vmlinuz` + `initramfs.xz` instead of a UKI; this
    /// builds one anyway (without `.profile` sections) when asked.
    pub(crate) async fn installer_uki(
        &self,
        r: &Resolved,
        client: Option<IpAddr>,
    ) -> Result<BuiltAsset, FactoryError> {
        debug_assert_eq!(r.profile.kind, OutputKind::Installer, "an installer's UKI");
        self.check_schematic(r)?;
        let key = format!("{}/uki", self.asset_key(r));
        if let Some(hit) = self.builder.cached(&key).await {
            return Ok(hit);
        }
        let _claim = self.charge_build(&key, client)?;
        self.uki_with_reset_profile(r, &key).await
    }

    /// The UKI of an installer, a disk image or an ISO under `key`, found or built: `r`'s
    /// command line and, from Talos 1.10, the `reset-maintenance` profile (the ISO's: `reset`)
    /// after `main`.
    async fn uki_with_reset_profile(
        &self,
        r: &Resolved,
        key: &str,
    ) -> Result<BuiltAsset, FactoryError> {
        if let Some(hit) = self.builder.cached(key).await {
            return Ok(hit);
        }
        let extra = if !Quirks::new(&r.version).supports_uki_profiles() {
            Vec::new()
        } else if r.profile.kind == OutputKind::Iso {
            vec![UkiProfile::reset_iso(&self.cmdline(r))]
        } else {
            vec![UkiProfile::reset_maintenance(&self.cmdline(r))]
        };
        let build = self.uki_build(r, extra).await?;
        Ok(self.builder.get_or_build(key, build).await?)
    }

    /// The partition plan of a disk-image request, or why it is not built: 400 for a
    /// schematic asking for something no image can be (an absurd `diskImage.sectorSize`, META
    /// values that do not fit, systemd-boot before 1.5, a GRUB layout of 4096-byte sectors whose
    /// EFI partition cannot be FAT32), 501 naming the part this release does not build yet
    /// (overlays).
    /// `docs/formats.md` §Disk images.
    fn disk_image_plan(&self, r: &Resolved) -> Result<DiskPlan, FactoryError> {
        let p = &r.profile;
        let c = &r.schematic.schematic.customization;
        let quirks = Quirks::new(&r.version);
        let Some(image) = &p.image else {
            return Err(not_implemented(OutputKind::Image));
        };
        // `diskImage.sectorSize` (0: the default, 512); anything else is refused by `plan`.
        let sector_size = match c.disk_image.sector_size {
            0 => 512,
            n => n,
        };
        if !SECTOR_SIZES.contains(&sector_size) {
            return Err(FactoryError::Schematic(
                PlanError::SectorSize(sector_size).to_string(),
            ));
        }
        let bootloader =
            select_bootloader(c.bootloader, p.secure_boot, p.arch == Arch::Arm64, &quirks);
        if bootloader != DiskBootloader::Grub && !quirks.supports_uki() {
            // Before 1.5 the imager has no systemd-boot or stub to build one with.
            return Err(FactoryError::Schematic(format!(
                "{bootloader:?} disk images need a UKI, which Talos {} does not have (1.5 or later)",
                r.version
            )));
        }
        if sector_size == 4096 && bootloader == DiskBootloader::Grub {
            // The 100 MiB EFI partition of 4 KiB sectors has 25518 clusters: too few for FAT32
            // (upstream's `mkfs.vfat -F 32` makes one anyway, which firmware following the FAT
            // specification's cluster count reads as FAT16; `docs/formats.md`).
            return Err(FactoryError::Schematic(
                "a GRUB disk image cannot have 4096-byte sectors: its 100 MiB EFI partition would hold 25518 clusters, fewer than FAT32's minimum of 65525 (use 512-byte sectors, or bootloader: sd-boot or dual-boot)".into(),
            ));
        }
        let meta = disk_image_meta(r, bootloader);
        let values: Vec<(u8, &[u8])> = meta.iter().map(|(k, v)| (*k, &v[..])).collect();
        adv::encode_block(&values).map_err(|e| FactoryError::Schematic(e.to_string()))?;
        if (!r.schematic.schematic.overlay.is_empty() || p.board.is_some())
            && !super::BUILDS_BOARD_DISK_IMAGES
        {
            return Err(FactoryError::NotImplemented(
                "disk images for boards (an overlay's boot blobs and partition offset) are not built by this bootfactory release yet".into(),
            ));
        }
        plan(&quirks, bootloader, image.disk_size_mib, sector_size).map_err(|e| match e {
            PlanError::SectorSize(_) => FactoryError::Schematic(e.to_string()),
            e @ PlanError::TooSmall { .. } => FactoryError::Internal(Arc::new(e)),
        })
    }

    /// The build of a disk image. First, for GRUB and dual-boot layouts, the host's tools
    /// (`mkfs.xfs`, `grub-mkimage`, GRUB's platform directories): a missing one is the 503
    /// naming its Debian packages before any work. sd-boot and dual-boot: the imager's
    /// systemd-boot and the image's own UKI (the `image` command line, with the
    /// `reset-maintenance` profile from 1.10; built once under `<key>/uki` and stored like an
    /// asset). GRUB and dual-boot: the imager's kernel and the initramfs-with-extensions asset
    /// of the same schematic (the UKI's `.linux` and `.initrd`) on `BOOT`, with `grub.cfg`
    /// for the same command line. Written into a sparse raw file on a blocking thread.
    async fn disk_image_build(
        &self,
        r: &Resolved,
        plan: DiskPlan,
        key: &str,
    ) -> Result<impl FnOnce(PathBuf) -> BuildFuture + Send + 'static, FactoryError> {
        let arch = r.profile.arch;
        let arm64 = arch == Arch::Arm64;
        let bootloader = plan.bootloader;
        let needed = GrubTools::needed(bootloader, arm64);
        let grub_tools = if needed.is_empty() {
            None
        } else {
            let located = tools::require(disk_image_what(bootloader), &needed)?;
            Some(GrubTools::from_located(&located, bootloader, arm64))
        };
        let meta = disk_image_meta(r, bootloader);
        let sd_boot_efi = if bootloader == DiskBootloader::Grub {
            None
        } else {
            let systemd_boot = self
                .artifacts
                .imager_file(&r.version, arch.as_str(), ImagerFile::SdBoot)
                .await?;
            let uki_asset = self
                .uki_with_reset_profile(r, &format!("{key}/uki"))
                .await?;
            let uki =
                self.store.blob_path(&uki_asset.digest).await.map_err(|e| {
                    FactoryError::Internal(errors::context("the disk image's UKI", e))
                })?;
            Some(EfiContents::SdBoot {
                systemd_boot,
                boot_file_name: match arch {
                    Arch::Amd64 => "BOOTX64.efi",
                    Arch::Arm64 => "BOOTAA64.efi",
                },
                uki,
                uki_file_name: format!("Talos-{}.efi", r.version),
            })
        };
        let job = match (grub_tools, sd_boot_efi) {
            (None, Some(efi)) => DiskJob::SdBoot(DiskImage {
                plan,
                seed: key.as_bytes().to_vec(),
                efi,
                bios: None,
                boot_fs: None,
                meta,
            }),
            (Some(tools), sd_boot_efi) => {
                let kernel = self
                    .artifacts
                    .imager_file(&r.version, arch.as_str(), ImagerFile::Kernel)
                    .await?;
                let initrd = self.initramfs_path(r).await?;
                DiskJob::Grub(GrubImageSpec {
                    plan,
                    seed: key.as_bytes().to_vec(),
                    sd_boot_efi,
                    kernel,
                    initrd,
                    grub_cfg: grubcfg::disk_grub_cfg(
                        &r.version.to_string(),
                        &self.cmdline(r),
                        Quirks::new(&r.version).supports_reset_grub_option(),
                    ),
                    tools,
                    meta,
                    timeout: TOOL_TIMEOUT,
                })
            }
            (None, None) => return Err(not_implemented(OutputKind::Image)),
        };
        let running = self.builder.running().clone();
        Ok(move |out: PathBuf| -> BuildFuture {
            let phase = match &job {
                DiskJob::SdBoot(_) => "sd-boot disk image",
                DiskJob::Grub(_) => "GRUB images, BOOT filesystem and disk image",
            };
            running.set_phase(&out, phase);
            Box::pin(async move {
                tokio::task::spawn_blocking(move || match job {
                    DiskJob::SdBoot(image) => {
                        write_disk_image(&image, &out).map_err(BuildError::from_error)
                    }
                    DiskJob::Grub(spec) => {
                        write_grub_image(&spec, &out).map_err(BuildError::from_error)
                    }
                })
                .await
                .map_err(|e| BuildError::Failed(errors::context("build task", e)))?
            })
        })
    }

    /// The build of a converted or compressed disk image: the raw image of the same profile
    /// (an asset of its own, built on this request's behalf, so each raw image is built once
    /// for all its forms), converted on a blocking thread ([`convert::convert_image`]).
    async fn disk_conversion_build(
        &self,
        r: &Resolved,
        plan: &DiskPlan,
    ) -> Result<impl FnOnce(PathBuf) -> BuildFuture + Send + 'static, FactoryError> {
        let Some(image) = r.profile.image.clone() else {
            return Err(not_implemented(OutputKind::Image));
        };
        let mut raw_profile = r.profile.clone();
        raw_profile.out_format = OutFormat::Raw;
        raw_profile.image = Some(ImageOptions {
            disk_format: DiskFormat::Raw,
            ..image.clone()
        });
        let raw_request = Resolved {
            profile: raw_profile,
            ..r.clone()
        };
        let raw_asset = Box::pin(self.asset(&raw_request, None)).await?;
        let raw = self
            .store
            .blob_path(&raw_asset.digest)
            .await
            .map_err(|e| FactoryError::Internal(errors::context("the raw disk image", e)))?;
        let out_format = r.profile.out_format;
        let uefi_only = plan.bootloader == DiskBootloader::SdBoot;
        let running = self.builder.running().clone();
        Ok(move |out: PathBuf| -> BuildFuture {
            running.set_phase(&out, "converting the raw disk image");
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    convert::convert_image(&raw, image.disk_format, out_format, uefi_only, &out)
                        .map(|_| ())
                        .map_err(|e| {
                            if crate::store::is_no_space(e.io()) {
                                BuildError::from_error(e)
                            } else {
                                BuildError::Failed(errors::context("disk image conversion", e))
                            }
                        })
                })
                .await
                .map_err(|e| BuildError::Failed(errors::context("build task", e)))?
            })
        })
    }

    /// Which ISO `r` is (hybrid from Talos 1.10, GRUB before) and the tools it needs, or the
    /// 503 naming the Debian packages to install.
    fn iso_tools(&self, r: &Resolved) -> Result<(IsoKind, Located), FactoryError> {
        let kind = if Quirks::new(&r.version).hybrid_iso() {
            IsoKind::Hybrid
        } else {
            IsoKind::Grub
        };
        let what = match kind {
            IsoKind::Hybrid => "a hybrid ISO (Talos 1.10 and later)",
            IsoKind::Grub => "a GRUB ISO (Talos before 1.10)",
        };
        Ok((kind, tools::require(what, &kind.tools(r.profile.arch))?))
    }

    /// The build of an ISO (`docs/formats.md` §ISO): the imager's kernel, the
    /// initramfs-with-extensions asset, `grub.cfg` with the ISO command line and, for the
    /// hybrid ISO, systemd-boot and the ISO's UKI (profiles `main` and `reset`, built once
    /// under `<key>/uki` and stored like an asset), written on a blocking thread.
    async fn iso_build(
        &self,
        r: &Resolved,
        kind: IsoKind,
        tools: Located,
        key: &str,
    ) -> Result<impl FnOnce(PathBuf) -> BuildFuture + Send + 'static, FactoryError> {
        let arch = r.profile.arch;
        let quirks = Quirks::new(&r.version);
        let kernel = self
            .artifacts
            .imager_file(&r.version, arch.as_str(), ImagerFile::Kernel)
            .await?;
        let initramfs = self.initramfs_path(r).await?;
        let (systemd_boot, uki) = match kind {
            IsoKind::Grub => (None, None),
            IsoKind::Hybrid => {
                let systemd_boot = self
                    .artifacts
                    .imager_file(&r.version, arch.as_str(), ImagerFile::SdBoot)
                    .await?;
                let uki_asset = self
                    .uki_with_reset_profile(r, &format!("{key}/uki"))
                    .await?;
                let uki = self
                    .store
                    .blob_path(&uki_asset.digest)
                    .await
                    .map_err(|e| FactoryError::Internal(errors::context("the ISO's UKI", e)))?;
                (Some(systemd_boot), Some(uki))
            }
        };
        let label = format!("Talos-{}", r.version);
        let inputs = IsoInputs {
            kind,
            arch,
            kernel,
            initramfs,
            cmdline: self.cmdline(r),
            systemd_boot,
            uki,
            version_tag: r.version.to_string(),
            labels: quirks
                .iso_labels()
                .then(|| (crate::formats::iso9660::volume_id(&label), label)),
            timestamp: SOURCE_DATE_EPOCH,
            seed: key.as_bytes().to_vec(),
        };
        let running = self.builder.running().clone();
        Ok(move |out: PathBuf| -> BuildFuture {
            running.set_phase(&out, "ISO");
            Box::pin(async move {
                tokio::task::spawn_blocking(move || -> Result<(), BuildError> {
                    let work = out
                        .parent()
                        .expect("build output has a parent")
                        .join("work");
                    build_iso(&inputs, &tools, &work, &out).map_err(BuildError::from_error)?;
                    Ok(())
                })
                .await
                .map_err(|e| BuildError::Failed(errors::context("build task", e)))?
            })
        })
    }

    /// The stored initramfs-with-extensions asset of `r`'s schematic, version and arch (the
    /// same key as `/image/…/initramfs-<arch>.xz`), built or found through
    /// [`Factory::asset`] by the appliance on the request's behalf: the request's build
    /// token covers it.
    async fn initramfs_path(&self, r: &Resolved) -> Result<PathBuf, FactoryError> {
        let initramfs = Resolved {
            schematic: r.schematic.clone(),
            version: r.version.clone(),
            profile: AssetProfile::initramfs(r.profile.arch),
        };
        let initrd_asset = Box::pin(self.asset(&initramfs, None)).await?;
        self.store
            .blob_path(&initrd_asset.digest)
            .await
            .map_err(|e| FactoryError::Internal(errors::context("the initramfs asset", e)))
    }

    /// Resolves what a UKI is made of (the imager's stub, kernel and optional splash, the
    /// initramfs-with-extensions asset of the same schematic, version and arch, built or
    /// found through [`Factory::asset`] so it is built once) and returns the build, which
    /// assembles the UKI on a blocking thread (`docs/formats.md` §UKI assembly).
    async fn uki_build(
        &self,
        r: &Resolved,
        extra_profiles: Vec<UkiProfile>,
    ) -> Result<impl FnOnce(PathBuf) -> BuildFuture + Send + 'static, FactoryError> {
        let arch = r.profile.arch.as_str();
        let stub = self
            .artifacts
            .imager_file(&r.version, arch, ImagerFile::SdStub)
            .await?;
        let kernel = self
            .artifacts
            .imager_file(&r.version, arch, ImagerFile::Kernel)
            .await?;
        let splash = match self
            .artifacts
            .imager_file(&r.version, arch, ImagerFile::Splash)
            .await
        {
            Ok(path) => Some(path),
            Err(ArtifactError::MissingFile { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let initrd = self.initramfs_path(r).await?;
        let inputs = UkiInputs {
            stub,
            kernel,
            initrd,
            splash,
            cmdline: self.cmdline(r),
            version_tag: r.version.to_string(),
            profiles: Quirks::new(&r.version).supports_uki_profiles(),
            extra_profiles,
            timestamp: SOURCE_DATE_EPOCH,
        };
        Ok(move |out: PathBuf| -> BuildFuture {
            Box::pin(async move {
                tokio::task::spawn_blocking(move || -> Result<(), BuildError> {
                    let file = std::fs::File::create(&out).map_err(BuildError::from_error)?;
                    let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
                    uki::write_uki(&inputs, &mut file).map_err(BuildError::from_error)?;
                    use std::io::Write as _;
                    file.flush().map_err(BuildError::from_error)?;
                    Ok(())
                })
                .await
                .map_err(|e| BuildError::Failed(errors::context("build task", e)))?
            })
        })
    }

    /// Resolves everything an initramfs build needs (catalog lookups, downloads and
    /// extraction happen here, so unknown extensions are a 400 before any build starts) and
    /// returns the build function.
    async fn initramfs_build(
        &self,
        r: &Resolved,
    ) -> Result<impl FnOnce(PathBuf) -> BuildFuture + Send + 'static, FactoryError> {
        let arch = r.profile.arch.as_str();
        let quirks = Quirks::new(&r.version);
        let catalog = self.artifacts.extensions(&r.version).await?;
        let mut trees = Vec::new();
        for name in &r
            .schematic
            .schematic
            .customization
            .system_extensions
            .official_extensions
        {
            let info = catalog.find(name).ok_or_else(|| {
                FactoryError::Schematic(format!(
                    "official extension {name:?} is not available for Talos version {}",
                    r.version
                ))
            })?;
            let (dir, manifest) = self.artifacts.extension_tree(info, arch).await?;
            trees.push(ExtensionTree {
                dir,
                cache_key: Some(format!("{manifest}")),
            });
        }
        if !r.schematic.schematic.overlay.is_empty() {
            let overlays = self.artifacts.overlays(&r.version).await?;
            let name = &r.schematic.schematic.overlay.name;
            if !overlays.iter().any(|o| &o.name == name) {
                return Err(FactoryError::Schematic(format!(
                    "official overlay {name:?} is not available for Talos version {}",
                    r.version
                )));
            }
        }
        let base = self
            .artifacts
            .imager_file(&r.version, arch, ImagerFile::Initramfs)
            .await?;
        let compression = quirks.extension_compression();
        let options = InitramfsOptions {
            talos_version: r.version.core(),
            kernel_modules_path: quirks.kernel_modules_path().to_string(),
            firmware_path: quirks.firmware_path().to_string(),
            squashfs_compression: compression,
            cpio_compression: compression,
            mtime: SOURCE_DATE_EPOCH,
        };
        let schematic_id = r.schematic.id.to_string();
        let canonical = r.schematic.canonical.clone();
        let external = self.config.external_url_as_written();
        let supports_overlay = quirks.supports_overlay();
        let store = self.store.clone();
        let handle = tokio::runtime::Handle::current();
        let running = self.builder.running().clone();
        Ok(move |out: PathBuf| -> BuildFuture {
            let cache = Arc::new(StoreSquashfsCache {
                store,
                handle,
                progress: running.progress_of(&out),
            });
            Box::pin(async move {
                tokio::task::spawn_blocking(move || -> Result<(), BuildError> {
                    let work = out
                        .parent()
                        .expect("build output has a parent")
                        .join("work");
                    let ext_dir = work.join("schematic-extension");
                    initramfs::write_schematic_extension(
                        &ext_dir,
                        &schematic_id,
                        &canonical,
                        &external,
                        supports_overlay,
                    )
                    .map_err(BuildError::from_error)?;
                    trees.push(ExtensionTree {
                        dir: ext_dir,
                        cache_key: None,
                    });
                    let mut file = std::io::BufWriter::new(
                        std::fs::File::create(&out).map_err(BuildError::from_error)?,
                    );
                    initramfs::build_initramfs(
                        &base,
                        &trees,
                        &options,
                        Some(cache.as_ref()),
                        &work.join("build"),
                        &mut file,
                    )
                    .map_err(|e| match e {
                        initramfs::InitramfsError::Extension { .. } => {
                            BuildError::Rejected(e.to_string())
                        }
                        e => BuildError::from_error(e),
                    })?;
                    use std::io::Write as _;
                    file.flush().map_err(BuildError::from_error)?;
                    Ok(())
                })
                .await
                .map_err(|e| BuildError::Failed(errors::context("build task", e)))?
            })
        })
    }
}

/// Limit for each external program of a disk image build (`mkfs.xfs`, `grub-mkimage`).
const TOOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// What a disk image build writes.
enum DiskJob {
    /// sd-boot: everything is in hand.
    SdBoot(DiskImage),
    /// GRUB or dual-boot: GRUB's images and `BOOT` are made first.
    Grub(GrubImageSpec),
}

/// The META values of a disk image: the schematic's, plus `0x11=dual-boot` in dual-boot
/// images ([`super::disk::image_meta`]).
fn disk_image_meta(r: &Resolved, bootloader: DiskBootloader) -> Vec<(u8, Vec<u8>)> {
    let values = r
        .schematic
        .schematic
        .customization
        .meta
        .iter()
        .map(|m| (m.key, m.value.as_bytes().to_vec()))
        .collect();
    image_meta(values, bootloader)
}

/// What a disk image with `bootloader` is called in a missing-tools error.
fn disk_image_what(bootloader: DiskBootloader) -> &'static str {
    match bootloader {
        DiskBootloader::DualBoot => "a dual-boot disk image",
        DiskBootloader::Grub => "a GRUB disk image",
        DiskBootloader::SdBoot => "an sd-boot disk image",
    }
}

/// 501 for asset kinds this release does not build (checked before any budget is spent).
fn not_implemented(kind: OutputKind) -> FactoryError {
    FactoryError::NotImplemented(format!(
        "{} assets are not supported by this bootfactory release yet (kernel, initramfs, cmdline, UKI, installer, ISO and disk images are)",
        format!("{kind:?}").to_lowercase()
    ))
}

/// One bucket per IPv4 client, and per /64 for IPv6 (a host owns a whole /64). IPv4-mapped
/// IPv6 addresses count as the IPv4 address.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// 400 `unknown platform: "<name>"` (the name cut to 64 characters) unless Talos knows the
/// platform: refused before any work, so made-up names never become builds.
pub(crate) fn check_platform(platform: &str) -> Result<(), FactoryError> {
    if platform_name(platform).is_some() {
        return Ok(());
    }
    let shown: String = platform.chars().take(64).collect();
    Err(FactoryError::UnknownPlatform(
        UnknownPlatform(shown).to_string(),
    ))
}

/// Parses a version from a request as upstream does ([`crate::version::parse_user_version`]),
/// with upstream's error.
pub fn parse_version(raw: &str) -> Result<TalosVersion, FactoryError> {
    crate::version::parse_user_version(raw)
        .map_err(|_| FactoryError::BadVersion(raw.chars().take(64).collect()))
}

fn copy_file(src: PathBuf) -> impl FnOnce(PathBuf) -> BuildFuture + Send + 'static {
    move |out| {
        Box::pin(async move {
            tokio::fs::copy(&src, &out).await.map(|_| ()).map_err(|e| {
                if crate::store::is_no_space(&e) {
                    BuildError::from_error(e)
                } else {
                    BuildError::Failed(errors::context(format!("copy {}", src.display()), e))
                }
            })
        })
    }
}

/// Squashfs images of extensions, cached in the store by content identity and build
/// parameters, so a new schematic reuses extensions built for another.
struct StoreSquashfsCache {
    store: Store,
    handle: tokio::runtime::Handle,
    /// The running build's progress (`squashfs N/M`).
    progress: Option<super::running::Progress>,
}

impl initramfs::SquashfsCache for StoreSquashfsCache {
    fn get(&self, key: &str) -> Option<PathBuf> {
        let digest = self.store.get_ref("squashfs", key).ok()??;
        self.handle.block_on(self.store.blob_path(&digest)).ok()
    }

    fn put(&self, key: &str, squashfs: &Path) -> std::io::Result<()> {
        let mut writer = self.store.writer().map_err(std::io::Error::other)?;
        let mut file = std::fs::File::open(squashfs)?;
        std::io::copy(&mut file, &mut writer)?;
        let digest = writer.commit().map_err(std::io::Error::other)?;
        self.store
            .set_ref("squashfs", key, &digest)
            .map_err(std::io::Error::other)?;
        Ok(())
    }

    fn squashfs_progress(&self, done: usize, total: usize) {
        if let Some(p) = &self.progress {
            p.set("squashfs", Some((done as u64, total as u64)));
        }
    }
}
