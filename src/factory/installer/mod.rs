//! Installer images: what `<bootfactory>/metal-installer/<schematic>:<version>` pulls, built
//! like the Image Factory's (Talos `pkg/imager/out.go` `outInstaller`; `docs/formats.md`
//! §Installer images).
//!
//! An installer image is an OCI index with one image per architecture the imager has. Each
//! image is the base installer's layers, as the same blobs (`installer-base:<v>` for Talos ≥
//! 1.10; `installer:<v>` below, keeping only the first of its two layers), plus one
//! *artifacts layer*: a gzip'd USTAR tar, entries sorted, mode 0, uid/gid 0, mtime 0, no
//! directory entries, holding
//!
//! - Talos ≥ 1.10: `usr/install/<arch>/systemd-boot.efi` and `usr/install/<arch>/vmlinuz.efi`
//!   (the UKI, with the `reset-maintenance` profile; `factory::uki`);
//! - below: `usr/install/<arch>/vmlinuz` and `usr/install/<arch>/initramfs.xz` (with the
//!   schematic's extensions: the same initramfs asset `/image` serves).
//!
//! The artifacts layer of each architecture is an asset of the [`Builder`](super::builder):
//! built once per key, detached from the request, stored and signed. Assembling the index
//! around it (config, manifests, index) is cheap and deterministic; it runs once per
//! `(image, schematic, version)` at a time, detached too, and ends by signing the index the
//! way cosign does (a `sha256-<hex>.sig` tag whose simple-signing payload is signed with the
//! cache signing key) and only then tagging it: a reader never sees an unsigned tag, and a tag
//! whose signature does not verify is rebuilt, never served.
//!
//! Everything is kept in the image catalog under the name `bootfactory.invalid/<image>/<id>`
//! (the `.invalid` top-level domain never resolves, so the mirror can never mistake it for an
//! upstream), so GC keeps what a tag reaches and `mirror export` can bundle a built installer.

mod json;
mod layers;

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::sync::watch;

pub use json::cosign_payload;
use json::{Descriptor, ImageConfig, ImageManifest, Index, Platform, RootFs, to_json};
pub use layers::{LayerDigests, write_artifacts_layer, write_overlay_layer};
use layers::{gunzipped_digest, write_image_tarball};

use super::artifacts::{ImagerFile, OverlayInfo};
use super::builder::{BuildError, BuildFuture, BuiltAsset};
use super::profile::{Arch, AssetProfile};
use super::quirks::Quirks;
use super::service::{Factory, FactoryError, Resolved, parse_version};
use crate::errors;
use crate::oci::{ImageName, media, parse_manifest};
use crate::schematic::storage::StoredSchematic;
use crate::store::Digest;

/// The registry part of the catalog names installer images are kept under. `.invalid` is
/// reserved (RFC 2606): no upstream can ever answer for it.
pub const CATALOG_REGISTRY: &str = "bootfactory.invalid";

/// The `created` time of every installer image config (`SOURCE_DATE_EPOCH`), so the same
/// inputs give the same digests.
const CREATED: &str = "2019-06-01T21:34:52Z";

/// The cosign simple-signing layer media type and the annotation holding its signature.
pub const COSIGN_PAYLOAD_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation of the cosign signature layer: base64 of the DER ECDSA signature.
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// Largest manifest, config or signature payload read into memory.
const MAX_MANIFEST: u64 = crate::oci::manifest::MAX_MANIFEST_BYTES as u64;

/// Architectures an installer index is built for, in index order (upstream's).
const ARCHES: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

/// An installer image name as the Image Factory reads it (`getRequestedImage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallerName {
    /// The name as requested (`metal-installer`).
    pub image: String,
    /// Talos platform (`metal` for the bare `installer`).
    pub platform: String,
    /// A `-secureboot` variant.
    pub secure_boot: bool,
}

impl InstallerName {
    /// `installer`, `installer-secureboot`, `<platform>-installer-secureboot` (checked first)
    /// or `<platform>-installer`; anything else is upstream's 400 `invalid image: <image>`.
    pub fn parse(image: &str) -> Result<InstallerName, FactoryError> {
        let named = |platform: &str, secure_boot| InstallerName {
            image: image.to_string(),
            platform: platform.to_string(),
            secure_boot,
        };
        match image {
            "installer" => return Ok(named("metal", false)),
            "installer-secureboot" => return Ok(named("metal", true)),
            _ => {}
        }
        if let Some(p) = image.strip_suffix("-installer-secureboot") {
            return Ok(named(p, true));
        }
        if let Some(p) = image.strip_suffix("-installer") {
            return Ok(named(p, false));
        }
        let shown: String = image.chars().take(128).collect();
        Err(FactoryError::InvalidImage(format!(
            "invalid image: {shown}"
        )))
    }
}

/// A manifest (index, image manifest or signature) of an installer repository.
#[derive(Debug, Clone)]
pub struct InstallerManifest {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// A manifest reference of an installer repository, classified like upstream's
/// `handleManifest`.
enum ManifestRef {
    /// `latest` or `v…`: build if needed.
    Version(String),
    /// `sha256:…`: something built before.
    Digest(Digest),
    /// Any other tag (`sha256-<hex>.sig`, the cosign signature): only what is stored.
    Tag(String),
}

/// Result of an index build shared by every request that joined it.
type SharedIndex = watch::Receiver<Option<Result<Digest, FactoryError>>>;

/// In-flight index builds, per `(image, schematic, version)`.
#[derive(Default)]
pub(crate) struct IndexBuilds {
    inflight: Mutex<HashMap<String, SharedIndex>>,
}

/// The catalog name of an installer repository.
fn catalog_name(image: &str, schematic: &str) -> Result<ImageName, FactoryError> {
    ImageName::new(CATALOG_REGISTRY, &format!("{image}/{schematic}"))
        .map_err(|e| FactoryError::InvalidImage(format!("invalid image: {e}")))
}

/// The key of a version tag's binding in `factory/installer-tags`.
fn tag_binding_key(repo: &ImageName, tag: &str) -> Vec<u8> {
    format!("{repo}:{tag}").into_bytes()
}

/// What the cache key signs to bind `repo:tag` to the index `digest` (like an asset's
/// `bootfactory-asset-v1` record: the name and the content together).
fn tag_binding(repo: &ImageName, tag: &str, digest: &Digest) -> Vec<u8> {
    format!("bootfactory-installer-tag-v1\n{repo}:{tag}\n{digest}\n").into_bytes()
}

/// The cosign signature tag of a manifest digest.
pub fn signature_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

impl Factory {
    /// `GET|HEAD /v2/<image>/<schematic>/manifests/<reference>` (upstream's order: schematic,
    /// image name, `latest`, then by tag or digest). A version tag builds the index on first
    /// request; a digest or another tag serves only what was built.
    pub async fn installer_manifest(
        self: &Arc<Self>,
        image: &str,
        schematic: &str,
        reference: &str,
        client: Option<IpAddr>,
    ) -> Result<InstallerManifest, FactoryError> {
        let (stored, name, repo) = self.installer_repository(image, schematic).await?;
        let reference = match reference {
            "latest" => ManifestRef::Version(self.latest_stable().await?),
            r if r.starts_with("sha256:") => ManifestRef::Digest(r.parse().map_err(|_| {
                FactoryError::ManifestUnknown(format!("invalid digest {:?}", short(r)))
            })?),
            r if r.starts_with('v') => ManifestRef::Version(r.to_string()),
            // Only what the tag grammar allows reaches the catalog (a NUL, `/` or 10,000
            // characters are nothing that was ever stored, not a server error).
            r if crate::oci::reference::is_valid_tag(r) => ManifestRef::Tag(r.to_string()),
            r => {
                return Err(FactoryError::ManifestUnknown(format!(
                    "invalid tag {:?}",
                    short(r)
                )));
            }
        };
        let digest = match reference {
            ManifestRef::Digest(d) => d,
            ManifestRef::Tag(tag) => self
                .catalog()
                .tag(&repo, &tag)
                .map_err(|e| FactoryError::Internal(Arc::new(e)))?
                .map(|(d, _)| d)
                .ok_or_else(|| {
                    FactoryError::ManifestUnknown(format!(
                        "manifest {:?} of {image}/{schematic} is not known (only version tags are built)",
                        short(&tag)
                    ))
                })?,
            ManifestRef::Version(tag) => {
                let version = parse_version(&tag)?;
                match self.verified_index(&repo, &tag).await? {
                    Some(d) => d,
                    None => {
                        self.version_served(&version).await?;
                        let resolved = Resolved {
                            schematic: stored,
                            version,
                            profile: AssetProfile::installer(&name.platform, Arch::Amd64),
                        };
                        self.check_installer(&name)?;
                        self.check_schematic(&resolved)?;
                        // An unknown overlay is a 400 before anything is built.
                        self.installer_overlay(&resolved).await?;
                        self.build_index(resolved, name, repo.clone(), tag, client)
                            .await?
                    }
                }
            }
        };
        self.stored_manifest(&repo, &digest).await
    }

    /// `GET|HEAD /v2/<image>/<schematic>/blobs/<digest>`: a blob of a built installer image
    /// (the store holds other things too; only what this repository's manifests reference is
    /// served here).
    pub async fn installer_blob(
        &self,
        image: &str,
        schematic: &str,
        digest: &str,
    ) -> Result<crate::store::Blob, FactoryError> {
        let (_, _, repo) = self.installer_repository(image, schematic).await?;
        let unknown = || {
            FactoryError::BlobUnknown(format!(
                "blob {:?} is not part of {image}/{schematic}",
                short(digest)
            ))
        };
        let digest: Digest = digest.parse().map_err(|_| unknown())?;
        if !self.repository_references(&repo, &digest)? {
            return Err(unknown());
        }
        self.store().open_blob(&digest).await.map_err(|e| {
            // Gone or found corrupt (and quarantined): the index that names it no longer
            // verifies whole, so the next pull by tag rebuilds it.
            if e.is_lost() {
                unknown()
            } else {
                FactoryError::Internal(Arc::new(e))
            }
        })
    }

    /// `GET /v2/<image>/<schematic>/referrers/<digest>`: an OCI index of the manifests whose
    /// `subject` is `digest` (the cosign signature of an installer index names it), filtered by
    /// `artifact_type` when given.
    pub async fn installer_referrers(
        &self,
        image: &str,
        schematic: &str,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<InstallerManifest, FactoryError> {
        let (_, _, repo) = self.installer_repository(image, schematic).await?;
        let subject: Digest = digest.parse().map_err(|_| {
            FactoryError::RouteNotFound(format!(
                "invalid referrers subject digest: {}",
                short(digest)
            ))
        })?;
        let mut manifests = Vec::new();
        if let Some(sig) = self.signature_manifest(&repo, &subject).await?
            && artifact_type.is_none_or(|t| t == media::OCI_CONFIG)
        {
            let mut entry =
                Descriptor::plain(media::OCI_MANIFEST, sig.bytes.len() as u64, &sig.digest);
            // OCI 1.1: a manifest without `artifactType` is listed by its config's type.
            entry.artifact_type = Some(media::OCI_CONFIG.to_string());
            manifests.push(entry);
        }
        let bytes = to_json(&Index {
            schema_version: 2,
            media_type: media::OCI_INDEX,
            manifests,
        });
        Ok(InstallerManifest {
            digest: Digest::of_bytes(&bytes),
            media_type: media::OCI_INDEX.to_string(),
            bytes,
        })
    }

    /// What every installer route checks first, in upstream's order: the schematic exists,
    /// then the image name; and the repository's catalog name.
    async fn installer_repository(
        &self,
        image: &str,
        schematic: &str,
    ) -> Result<(StoredSchematic, InstallerName, ImageName), FactoryError> {
        let stored = self.load_schematic(schematic).await?;
        let name = InstallerName::parse(image)?;
        let repo = catalog_name(image, schematic)?;
        Ok((stored, name, repo))
    }

    /// The newest stable version the factory serves (`latest`).
    async fn latest_stable(&self) -> Result<String, FactoryError> {
        let versions = self.artifacts().versions().await?;
        versions
            .iter()
            .filter(|v| !v.is_prerelease())
            .max()
            .map(|v| v.to_string())
            .ok_or_else(|| {
                FactoryError::VersionNotAvailable("no stable Talos version is available".into())
            })
    }

    /// Upstream's installer checks (the enhancement step): Secure Boot is refused (not enabled
    /// on bootfactory) and the platform must be one Talos knows. META is not refused: upstream
    /// never copies it into an installer profile, so it is dropped (as [`Factory::cmdline`]
    /// does for installers).
    fn check_installer(&self, name: &InstallerName) -> Result<(), FactoryError> {
        if name.secure_boot {
            return Err(FactoryError::Schematic("secure boot is disabled".into()));
        }
        super::service::check_platform(&name.platform)
    }

    /// The index `repo:tag` points at, if its cosign signature verifies (otherwise it is
    /// rebuilt, never served).
    async fn verified_index(
        &self,
        repo: &ImageName,
        tag: &str,
    ) -> Result<Option<Digest>, FactoryError> {
        let Some((digest, _)) = self
            .catalog()
            .tag(repo, tag)
            .map_err(|e| FactoryError::Internal(Arc::new(e)))?
        else {
            return Ok(None);
        };
        let bound = self
            .installer_tag_signatures()?
            .get(tag_binding_key(repo, tag))
            .map_err(|e| FactoryError::Internal(Arc::new(e)))?
            .is_some_and(|sig| {
                self.builder()
                    .signer()
                    .verify(&tag_binding(repo, tag, &digest), &sig)
            });
        let verified = if bound {
            self.verify_signature(repo, &digest).await
        } else {
            // The cosign signature binds a digest, not a tag: a tag repointed at another
            // signed index of the repository (another version's) would verify without this.
            Err("the tag is not bound to this index by the cache key".into())
        };
        // Whole: every manifest and blob the index reaches is stored (a layer quarantined as
        // corrupt, or a manifest lost, would otherwise break every pull of a verified tag).
        let verified = verified.and_then(|()| {
            let closure = self
                .catalog()
                .closure(&digest)
                .map_err(|e| errors::chain(&e))?;
            match closure.iter().find(|d| !self.store().contains(d)) {
                Some(missing) => Err(format!("{missing} is missing from the store")),
                None => Ok(()),
            }
        });
        match verified {
            Ok(()) => Ok(Some(digest)),
            Err(why) => {
                tracing::warn!(image = %repo, tag, %digest, why, "installer index does not verify (signature, tag binding or contents); rebuilding");
                Ok(None)
            }
        }
    }

    /// Checks the cosign signature of `digest` in `repo`: the `sha256-<hex>.sig` manifest's
    /// payload names the digest and its signature verifies with the cache key.
    async fn verify_signature(&self, repo: &ImageName, digest: &Digest) -> Result<(), String> {
        let sig = self
            .signature_manifest(repo, digest)
            .await
            .map_err(|e| errors::chain(&e))?
            .ok_or("no signature")?;
        let manifest =
            parse_manifest(&sig.bytes, Some(media::OCI_MANIFEST)).map_err(|e| errors::chain(&e))?;
        let json: serde_json::Value =
            serde_json::from_slice(&sig.bytes).map_err(|e| e.to_string())?;
        let layer = manifest.layers.first().ok_or("signature has no layer")?;
        let signature = json["layers"][0]["annotations"][COSIGN_SIGNATURE_ANNOTATION]
            .as_str()
            .ok_or("signature layer has no signature annotation")?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .map_err(|e| e.to_string())?;
        let payload = self
            .read_bounded(&layer.digest, 64 << 10)
            .await
            .map_err(|e| errors::chain(&e))?;
        if !self.builder().signer().verify(&payload, &signature) {
            return Err("signature does not verify with the cache signing key".into());
        }
        let payload: serde_json::Value =
            serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
        if payload["critical"]["image"]["docker-manifest-digest"].as_str()
            != Some(digest.to_string().as_str())
        {
            return Err("signature payload names another digest".into());
        }
        Ok(())
    }

    /// The stored cosign signature manifest of `digest` in `repo`.
    async fn signature_manifest(
        &self,
        repo: &ImageName,
        digest: &Digest,
    ) -> Result<Option<InstallerManifest>, FactoryError> {
        let Some((sig, _)) = self
            .catalog()
            .tag(repo, &signature_tag(digest))
            .map_err(|e| FactoryError::Internal(Arc::new(e)))?
        else {
            return Ok(None);
        };
        // A lost or corrupt signature is no signature (the tag is then rebuilt and re-signed).
        let Some(bytes) = self.read_stored(&sig).await? else {
            return Ok(None);
        };
        Ok(Some(InstallerManifest {
            digest: sig,
            media_type: media::OCI_MANIFEST.to_string(),
            bytes,
        }))
    }

    /// A manifest recorded for `repo`, by digest.
    async fn stored_manifest(
        &self,
        repo: &ImageName,
        digest: &Digest,
    ) -> Result<InstallerManifest, FactoryError> {
        let unknown = || {
            FactoryError::ManifestUnknown(format!(
                "manifest {digest} is not part of {}",
                repo.repository()
            ))
        };
        if !self
            .catalog()
            .has_manifest_in(repo, digest)
            .map_err(|e| FactoryError::Internal(Arc::new(e)))?
        {
            return Err(unknown());
        }
        let record = self.catalog().manifest(digest).ok_or_else(unknown)?;
        // Lost or corrupt (quarantined): unknown; pulling the tag rebuilds it.
        let bytes = self.read_stored(digest).await?.ok_or_else(unknown)?;
        Ok(InstallerManifest {
            digest: *digest,
            media_type: record.media_type,
            bytes,
        })
    }

    /// True if `digest` is a manifest of `repo` or a blob one of its manifests references.
    fn repository_references(
        &self,
        repo: &ImageName,
        digest: &Digest,
    ) -> Result<bool, FactoryError> {
        let catalog = self.catalog();
        let internal = |e| FactoryError::Internal(Arc::new(e));
        // A manifest: one lookup. A blob: the children of this repository's manifests (a
        // range scan of its own refs, a few per version built), never every ref in the store.
        if catalog.has_manifest_in(repo, digest).map_err(internal)? {
            return Ok(true);
        }
        for root in catalog.manifests_in(repo).map_err(internal)? {
            if self
                .store()
                .children(&root)
                .map_err(|e| FactoryError::Internal(Arc::new(e)))?
                .contains(digest)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Builds (or joins the build of) the index for `repo:tag`, detached from the request.
    async fn build_index(
        self: &Arc<Self>,
        resolved: Resolved,
        name: InstallerName,
        repo: ImageName,
        tag: String,
        client: Option<IpAddr>,
    ) -> Result<Digest, FactoryError> {
        let key = format!("{}:{tag}", repo);
        let mut rx = {
            let mut inflight = self.index_builds().inflight.lock().expect("index builds");
            match inflight.get(&key) {
                // Joining a running build is free.
                Some(rx) => rx.clone(),
                None => {
                    // A new installer is one new build for the client that asks for it,
                    // whatever it is made of (per architecture an initramfs, a UKI, layers):
                    // one token, and the build runs on the appliance's behalf, so a client
                    // that joins it never gets the starter's 429.
                    self.charge_client(client)?;
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(key.clone(), rx.clone());
                    let this = self.clone();
                    tokio::spawn(async move {
                        // Leaves the in-flight table however the task ends (a panic too: its
                        // waiters then see the channel close and get an error, and the next
                        // request starts afresh).
                        let _inflight = InflightEntry {
                            factory: this.clone(),
                            key,
                        };
                        // Another build of this tag may have finished between the request's
                        // check and here: serve that one rather than assemble it again.
                        let result = match this.verified_index(&repo, &tag).await {
                            Ok(Some(done)) => Ok(done),
                            _ => {
                                match this.index_from_parent(&resolved, &name, &repo, &tag).await {
                                    Some(result) => result,
                                    None => {
                                        this.assemble_index(&resolved, &name, &repo, &tag).await
                                    }
                                }
                            }
                        };
                        if let Err(e) = &result {
                            tracing::warn!(image = %repo, tag, error = %errors::chain(e), "installer image build failed");
                        }
                        drop(_inflight);
                        let _ = tx.send(Some(result));
                    });
                    rx
                }
            }
        };
        loop {
            if let Some(result) = rx.borrow_and_update().clone() {
                return result;
            }
            if rx.changed().await.is_err() {
                return Err(FactoryError::Internal(errors::message(
                    "installer build ended without a result",
                )));
            }
        }
    }

    /// Builds every architecture's image, the index, its signature, then the tag.
    async fn assemble_index(
        &self,
        resolved: &Resolved,
        name: &InstallerName,
        repo: &ImageName,
        tag: &str,
    ) -> Result<Digest, FactoryError> {
        // The architectures are built at the same time: each one's UKI and artifacts layer
        // (gzip, single-threaded) runs on its own blocking thread, within the builder's
        // `build.maxConcurrency`.
        let builds = ARCHES.map(|arch| {
            let mut r = resolved.clone();
            r.profile = AssetProfile::installer(&name.platform, arch);
            async move { (arch, self.arch_image(&r, repo).await) }
        });
        let mut children = Vec::new();
        for (arch, result) in futures_util::future::join_all(builds).await {
            match result {
                Ok(d) => children.push(d),
                // A release without this architecture's boot files: the index has the others.
                Err(FactoryError::AssetSourceMissing(why)) if arch != Arch::Amd64 => {
                    tracing::info!(image = %repo, tag, arch = arch.as_str(), why, "architecture left out of the installer index");
                }
                Err(e) => return Err(e),
            }
        }
        let index = to_json(&Index {
            schema_version: 2,
            media_type: media::OCI_INDEX,
            manifests: children,
        });
        let index_digest = self.put_manifest(repo, &index, media::OCI_INDEX).await?;
        self.finish_index(repo, tag, &index_digest, index.len() as u64)
            .await?;
        tracing::info!(image = %repo, tag, digest = %index_digest, "installer image built");
        Ok(index_digest)
    }

    /// The stored index `index_digest` becomes `repo:tag`: signed (cosign) and bound to the
    /// tag with the cache key, tagged, flushed.
    async fn finish_index(
        &self,
        repo: &ImageName,
        tag: &str,
        index_digest: &Digest,
        size: u64,
    ) -> Result<(), FactoryError> {
        let index_digest = *index_digest;
        self.sign_index(repo, &index_digest, size).await?;
        let binding = self
            .builder()
            .signer()
            .sign(&tag_binding(repo, tag, &index_digest));
        self.installer_tag_signatures()?
            .insert(tag_binding_key(repo, tag), binding)
            .map_err(|e| FactoryError::Internal(Arc::new(e)))?;
        self.catalog()
            .set_tag(repo, tag, &index_digest)
            .map_err(|e| FactoryError::Internal(Arc::new(e)))?;
        // On disk before any client is told the digest: a pull that goes on by digest after a
        // crash finds what it was given (once per index build).
        self.store()
            .flush()
            .await
            .map_err(|e| FactoryError::Internal(Arc::new(e)))?;
        Ok(())
    }

    /// With a parent factory: the installer image `repo:tag` pulled from the parent's
    /// registry (`<image>/<schematic>:<tag>`), every manifest and blob checked against its
    /// digest while stored, the index's cosign signature checked with the parent's key under
    /// `parentVerify: signature`; then signed and tagged here like a local build. `None`: no
    /// parent, or it failed and `parentFallback: build` (the caller builds); a failure with
    /// `parentFallback: fail` is the 502.
    async fn index_from_parent(
        &self,
        resolved: &Resolved,
        name: &InstallerName,
        repo: &ImageName,
        tag: &str,
    ) -> Option<Result<Digest, FactoryError>> {
        let parent = self.parent()?.clone();
        let remote = format!("{}/{}", name.image, resolved.schematic.id);
        // Bounded as a build is: a parent that drips bytes must not hold this tag's
        // in-flight entry (and every pull waiting on it) forever, nor keep the fallback away.
        let limit = std::time::Duration::from_secs(self.config().build.timeout_seconds);
        let pulled =
            tokio::time::timeout(limit, self.pull_parent_index(&parent, &remote, repo, tag))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "no whole image within {}s (build.timeoutSeconds)",
                        limit.as_secs()
                    ))
                });
        match pulled {
            Ok((digest, size)) => {
                parent.count("fetched");
                tracing::info!(image = %repo, tag, %digest, parent = parent.url(), "installer image taken from the parent");
                Some(
                    self.finish_index(repo, tag, &digest, size)
                        .await
                        .map(|()| digest),
                )
            }
            Err(why) => {
                parent.count("unavailable");
                tracing::warn!(image = %repo, tag, parent = parent.url(), why, "installer image not taken from the parent");
                match parent.fallback() {
                    crate::config::ParentFallback::Fail => {
                        Some(Err(FactoryError::ParentUnavailable(format!(
                            "parent {}: installer {remote}:{tag}: {why}",
                            parent.url()
                        ))))
                    }
                    crate::config::ParentFallback::Build => None,
                }
            }
        }
    }

    /// Copies `remote:tag` from the parent's registry into the catalog under `repo`;
    /// returns the index digest and size.
    async fn pull_parent_index(
        &self,
        parent: &crate::factory::remote::parent::Parent,
        remote: &str,
        repo: &ImageName,
        tag: &str,
    ) -> Result<(Digest, u64), String> {
        use crate::oci::TagOrDigest;
        let registry = parent.registry();
        let (bytes, digest) = registry
            .fetch_manifest(remote, &TagOrDigest::Tag(tag.to_string()))
            .await
            .map_err(|e| errors::chain(&e))?;
        let index = parse_manifest(&bytes, None).map_err(|e| errors::chain(&e))?;
        if index.manifests.is_empty() || index.manifests.len() > ARCHES.len() {
            return Err(format!(
                "{} entries in the index (want 1 to {})",
                index.manifests.len(),
                ARCHES.len()
            ));
        }
        if let Some(key) = parent.public_key() {
            self.verify_parent_signature(registry, remote, &digest, key)
                .await?;
        }
        for child in &index.manifests {
            let (child_bytes, child_digest) = registry
                .fetch_manifest(remote, &TagOrDigest::Digest(child.digest))
                .await
                .map_err(|e| errors::chain(&e))?;
            if child_digest != child.digest {
                return Err(format!(
                    "child manifest {child_digest} is not {}",
                    child.digest
                ));
            }
            let image = parse_manifest(&child_bytes, Some(&child.media_type))
                .map_err(|e| errors::chain(&e))?;
            if image.layers.len() > 64 {
                return Err(format!("{} layers", image.layers.len()));
            }
            for blob in image.config.iter().chain(&image.layers) {
                if self.store().contains(&blob.digest) {
                    continue;
                }
                let stream = registry
                    .open_blob(remote, &blob.digest)
                    .await
                    .map_err(|e| errors::chain(&e))?;
                let reader = tokio_util::io::StreamReader::new(stream.stream);
                // Stored only if the bytes hash to the digest the manifest names.
                self.store()
                    .put_stream_expect(reader, &blob.digest)
                    .await
                    .map_err(|e| format!("blob {}: {}", blob.digest, errors::chain(&e)))?;
            }
            self.catalog()
                .put_manifest(repo, &child_bytes, Some(&child.media_type))
                .await
                .map_err(|e| errors::chain(&e))?;
        }
        let (stored, _) = self
            .catalog()
            .put_manifest(repo, &bytes, None)
            .await
            .map_err(|e| errors::chain(&e))?;
        debug_assert_eq!(stored, digest);
        Ok((digest, bytes.len() as u64))
    }

    /// The parent's cosign signature of `digest` (`sha256-<hex>.sig` in `remote`): its
    /// simple-signing payload names the digest and its signature verifies with `key`.
    async fn verify_parent_signature(
        &self,
        registry: &crate::upstream::client::RegistryClient,
        remote: &str,
        digest: &Digest,
        key: &p256::ecdsa::VerifyingKey,
    ) -> Result<(), String> {
        use crate::oci::TagOrDigest;
        use p256::ecdsa::signature::Verifier as _;
        let (bytes, _) = registry
            .fetch_manifest(remote, &TagOrDigest::Tag(signature_tag(digest)))
            .await
            .map_err(|e| format!("signature: {}", errors::chain(&e)))?;
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("signature: {e}"))?;
        let layer: Digest = json["layers"][0]["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or("signature has no layer")?;
        let signature = json["layers"][0]["annotations"][COSIGN_SIGNATURE_ANNOTATION]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|der| p256::ecdsa::Signature::from_der(&der).ok())
            .ok_or("signature layer has no signature annotation")?;
        let stream = registry
            .open_blob(remote, &layer)
            .await
            .map_err(|e| format!("signature payload: {}", errors::chain(&e)))?;
        let mut payload = Vec::new();
        let mut stream = stream.stream;
        use futures_util::StreamExt as _;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("signature payload: {e}"))?;
            payload.extend_from_slice(&chunk);
            if payload.len() > 64 << 10 {
                return Err("signature payload over 64 KiB".into());
            }
        }
        if Digest::of_bytes(&payload) != layer {
            return Err("signature payload does not hash to its digest".into());
        }
        key.verify(&payload, &signature).map_err(
            |_| "the parent's signature does not verify with factory.parentPublicKeyFile",
        )?;
        let payload: serde_json::Value =
            serde_json::from_slice(&payload).map_err(|e| format!("signature payload: {e}"))?;
        if payload["critical"]["image"]["docker-manifest-digest"].as_str()
            != Some(digest.to_string().as_str())
        {
            return Err("the parent's signature names another digest".into());
        }
        // The parent signs `<its host>/<image>/<schematic>`: a signature copied from another
        // schematic's (or another image's) installer does not name this repository.
        let reference = payload["critical"]["identity"]["docker-reference"]
            .as_str()
            .unwrap_or_default();
        if !reference
            .strip_suffix(remote)
            .is_some_and(|host| host.ends_with('/'))
        {
            return Err(format!(
                "the parent's signature names {reference:?}, not …/{remote}"
            ));
        }
        Ok(())
    }

    /// One architecture's image: base layers + the artifacts layer. Returns its index entry.
    async fn arch_image(&self, r: &Resolved, repo: &ImageName) -> Result<Descriptor, FactoryError> {
        let parts = self.arch_parts(r).await?;
        let manifest = to_json(&ImageManifest {
            schema_version: 2,
            media_type: media::OCI_MANIFEST,
            config: Descriptor::plain(
                media::OCI_CONFIG,
                parts.config.len() as u64,
                &parts.config_digest,
            ),
            layers: parts.layers,
            subject: None,
        });
        let digest = self
            .put_manifest(repo, &manifest, media::OCI_MANIFEST)
            .await?;
        let mut entry = Descriptor::plain(media::OCI_MANIFEST, manifest.len() as u64, &digest);
        entry.platform = Some(Platform {
            architecture: r.profile.arch.as_str().to_string(),
            os: "linux".to_string(),
        });
        Ok(entry)
    }

    /// One architecture's image, its parts stored: the config (stored) and the layers (base
    /// layers, the artifacts layer, the overlay layer).
    async fn arch_parts(&self, r: &Resolved) -> Result<ArchParts, FactoryError> {
        let arch = r.profile.arch.as_str();
        // The base first: offline without it, fail before building anything.
        let base = self.artifacts().installer_base(&r.version, arch).await?;
        let layer = self.artifacts_layer(r).await?;
        let store = self.store();
        let internal = |e: crate::store::StoreError| FactoryError::Internal(Arc::new(e));
        let base_manifest = self.read_bounded(&base.manifest, MAX_MANIFEST).await?;
        let base_manifest = parse_manifest(&base_manifest, None).map_err(|e| {
            FactoryError::Internal(errors::context(format!("{} manifest", base.reference), e))
        })?;
        let config_digest = base_manifest
            .config
            .as_ref()
            .map(|c| c.digest)
            .ok_or_else(|| {
                FactoryError::Internal(errors::message(format!("{} has no config", base.reference)))
            })?;
        let base_config: serde_json::Value =
            serde_json::from_slice(&self.read_bounded(&config_digest, MAX_MANIFEST).await?)
                .map_err(|e| {
                    FactoryError::Internal(errors::context(format!("{} config", base.reference), e))
                })?;
        // ≤ 1.9 `installer` images carry their own boot files in a second layer: dropped.
        let mut base_layers = base_manifest.layers.clone();
        if base_layers.len() == 2 {
            base_layers.truncate(1);
        }
        // One digest per layer, in order: anything else in an imported config is refused
        // (a dropped non-string entry would shift every later layer's diff ID).
        let base_diff_ids: Vec<String> = base_config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                v.as_str()
                    .and_then(|s| s.strip_prefix("sha256:"))
                    .and_then(|hex| Digest::from_hex(hex).ok())
                    .map(|d| d.to_string())
            })
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| {
                FactoryError::Internal(errors::message(format!(
                    "{} config has a diff ID that is not a sha256 digest",
                    base.reference
                )))
            })?;
        if base_diff_ids.len() != base_manifest.layers.len() {
            return Err(FactoryError::Internal(errors::message(format!(
                "{} config lists {} diff IDs for {} layers",
                base.reference,
                base_diff_ids.len(),
                base_manifest.layers.len()
            ))));
        }
        let overlay = self.overlay_layer(r).await?;
        let mut diff_ids: Vec<String> = base_diff_ids[..base_layers.len()].to_vec();
        diff_ids.push(layer.diff_id.to_string());
        if let Some(o) = &overlay {
            diff_ids.push(o.diff_id.to_string());
        }
        let config = to_json(&ImageConfig {
            architecture: arch,
            created: CREATED,
            os: "linux",
            rootfs: RootFs {
                kind: "layers",
                diff_ids,
            },
            config: base_config
                .get("config")
                .cloned()
                .unwrap_or(serde_json::json!({})),
        });
        let config_digest = store.put_bytes(&config).await.map_err(internal)?;
        let mut layers: Vec<Descriptor> = base_layers
            .iter()
            .map(|l| Descriptor::plain(&l.media_type, l.size, &l.digest))
            .collect();
        layers.push(Descriptor::plain(
            media::OCI_LAYER_GZIP,
            layer.size,
            &layer.digest,
        ));
        if let Some(o) = &overlay {
            layers.push(Descriptor::plain(media::OCI_LAYER_GZIP, o.size, &o.digest));
        }
        Ok(ArchParts {
            config,
            config_digest,
            layers,
            base_reference: base.reference,
        })
    }

    /// `/image/<schematic>/<version>/[<platform>-]installer-<arch>.tar`: the installer image of
    /// one architecture as the imager writes it (go-containerregistry `tarball.Write`, a
    /// `docker load`-able tar): the config as `sha256:<hex>`, each layer blob as
    /// `<hex>.tar.gz`, then `manifest.json` naming the base installer as its tag. Built once
    /// per key and stored like every asset; its parts are built on the appliance's behalf (the
    /// request was charged one build in [`Factory::asset`]).
    pub(crate) async fn installer_tarball(&self, r: &Resolved) -> Result<BuiltAsset, FactoryError> {
        let parts = self.arch_parts(r).await?;
        let mut layers = Vec::new();
        for l in &parts.layers {
            let digest: Digest = l.digest.parse().map_err(|_| {
                FactoryError::Internal(errors::message(format!("bad layer digest {}", l.digest)))
            })?;
            let path = self
                .store()
                .blob_path(&digest)
                .await
                .map_err(|e| FactoryError::Internal(Arc::new(e)))?;
            layers.push((format!("{}.tar.gz", digest.hex()), path));
        }
        // The imager names the image by the base installer's repository and tag, without a
        // registry (`siderolabs/installer-base:<v>`).
        let repo_tag = parts
            .base_reference
            .split_once('/')
            .map_or(parts.base_reference.as_str(), |(_, rest)| rest)
            .to_string();
        let config_name = parts.config_digest.to_string();
        let manifest = to_json(&[serde_json::json!({
            "Config": config_name,
            "RepoTags": [repo_tag],
            "Layers": layers.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        })]);
        let config = parts.config;
        let key = self.asset_key(r);
        Ok(self
            .builder()
            .get_or_build(&key, move |out: PathBuf| -> BuildFuture {
                Box::pin(async move {
                    tokio::task::spawn_blocking(move || {
                        write_image_tarball(&config_name, &config, &layers, &manifest, &out)
                            .map_err(BuildError::from_error)
                    })
                    .await
                    .map_err(|e| BuildError::Failed(errors::context("installer tarball task", e)))?
                })
            })
            .await?)
    }

    /// Stores a manifest and records it under `repo` (children included, so GC keeps them).
    async fn put_manifest(
        &self,
        repo: &ImageName,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, FactoryError> {
        self.catalog()
            .put_manifest(repo, bytes, Some(media_type))
            .await
            .map(|(d, _)| d)
            .map_err(|e| {
                if crate::store::caused_by_no_space(&e) {
                    FactoryError::NoSpace(Arc::new(e))
                } else {
                    FactoryError::Internal(Arc::new(e))
                }
            })
    }

    /// Signs `digest` the way `cosign sign --key` does: a simple-signing payload naming the
    /// digest, signed (ECDSA P-256, SHA-256, DER, base64) with the cache signing key, as the
    /// one layer of an image tagged `sha256-<hex>.sig`. The manifest also names the index as
    /// its `subject`, so the referrers API lists it.
    async fn sign_index(
        &self,
        repo: &ImageName,
        digest: &Digest,
        index_size: u64,
    ) -> Result<(), FactoryError> {
        let internal = |e: crate::store::StoreError| FactoryError::Internal(Arc::new(e));
        let reference = format!(
            "{}/{}",
            self.config().external_registry_host(),
            repo.repository()
        );
        let payload = cosign_payload(&reference, digest);
        let signature = base64::engine::general_purpose::STANDARD
            .encode(self.builder().signer().sign(&payload));
        let store = self.store();
        let payload_digest = store.put_bytes(&payload).await.map_err(internal)?;
        let config = to_json(&serde_json::json!({
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [payload_digest.to_string()]},
        }));
        let config_digest = store.put_bytes(&config).await.map_err(internal)?;
        let mut layer =
            Descriptor::plain(COSIGN_PAYLOAD_TYPE, payload.len() as u64, &payload_digest);
        layer.annotations = Some(
            [(COSIGN_SIGNATURE_ANNOTATION.to_string(), signature)]
                .into_iter()
                .collect(),
        );
        let manifest = to_json(&ImageManifest {
            schema_version: 2,
            media_type: media::OCI_MANIFEST,
            config: Descriptor::plain(media::OCI_CONFIG, config.len() as u64, &config_digest),
            layers: vec![layer],
            subject: Some(Descriptor::plain(media::OCI_INDEX, index_size, digest)),
        });
        let sig = self
            .put_manifest(repo, &manifest, media::OCI_MANIFEST)
            .await?;
        self.catalog()
            .set_tag(repo, &signature_tag(digest), &sig)
            .map_err(|e| FactoryError::Internal(Arc::new(e)))
    }

    /// The artifacts layer of one architecture, as a built asset.
    async fn artifacts_layer(&self, r: &Resolved) -> Result<LayerAsset, FactoryError> {
        let arch = r.profile.arch.as_str();
        let quirks = Quirks::new(&r.version);
        let dir = format!("usr/install/{arch}");
        let files: Vec<(String, PathBuf)> = if quirks.unified_installer() {
            let uki = self.installer_uki(r, None).await?;
            let uki = self.blob_path(&uki).await?;
            let boot = self
                .artifacts()
                .imager_file(&r.version, arch, ImagerFile::SdBoot)
                .await?;
            vec![
                (format!("{dir}/systemd-boot.efi"), boot),
                (format!("{dir}/vmlinuz.efi"), uki),
            ]
        } else {
            let kernel = self
                .artifacts()
                .imager_file(&r.version, arch, ImagerFile::Kernel)
                .await?;
            let mut initramfs = r.clone();
            initramfs.profile = AssetProfile::initramfs(r.profile.arch);
            let initramfs = self.asset(&initramfs, None).await?;
            let initramfs = self.blob_path(&initramfs).await?;
            vec![
                (format!("{dir}/initramfs.xz"), initramfs),
                (format!("{dir}/vmlinuz"), kernel),
            ]
        };
        let key = format!("{}/layer", self.asset_key(r));
        self.layer_asset(key, move |out| write_artifacts_layer(&files, out))
            .await
    }

    /// The official overlay the schematic names, if it has one, checked like upstream's
    /// `EnhanceFromSchematic`: overlays need Talos ≥ 1.7, and the version's overlays catalog
    /// must list the name (both a 400).
    async fn installer_overlay(&self, r: &Resolved) -> Result<Option<OverlayInfo>, FactoryError> {
        let overlay = &r.schematic.schematic.overlay;
        if overlay.is_empty() {
            return Ok(None);
        }
        if !Quirks::new(&r.version).supports_overlay() {
            return Err(FactoryError::Schematic(format!(
                "overlay is not supported for Talos version {}",
                r.version
            )));
        }
        let overlays = self.artifacts().overlays(&r.version).await?;
        let info = overlays
            .iter()
            .find(|o| o.name == overlay.name)
            .ok_or_else(|| {
                let shown: String = overlay.name.chars().take(64).collect();
                FactoryError::Schematic(format!(
                    "official overlay {shown:?} is not available for Talos version {}",
                    r.version
                ))
            })?;
        Ok(Some(info.clone()))
    }

    /// The overlay layer of one architecture (`overlay/artifacts/…`,
    /// `overlay/installers/default`, `overlay/extra-options`), if the schematic has an overlay.
    async fn overlay_layer(&self, r: &Resolved) -> Result<Option<LayerAsset>, FactoryError> {
        let Some(info) = self.installer_overlay(r).await? else {
            return Ok(None);
        };
        let overlay = &r.schematic.schematic.overlay;
        let tree = self
            .artifacts()
            .overlay_tree(&info, r.profile.arch.as_str())
            .await?;
        let installer = Path::new("installers").join(&overlay.name);
        let installer = crate::contained::regular_file(&tree, &installer).ok_or_else(|| {
            FactoryError::AssetSourceMissing(format!(
                "{} has no installers/{}",
                info.reference, overlay.name
            ))
        })?;
        let options = crate::schematic::options_yaml(&overlay.options);
        let key = format!("{}/overlay/{}", self.asset_key(r), info.digest);
        self.layer_asset(key, move |out| {
            write_overlay_layer(&tree, &installer, options.as_bytes(), out)
        })
        .await
        .map(Some)
    }

    /// A layer built once per `key` by `write` (which returns its digests) and stored as an
    /// asset; its `diff_id` is kept beside it (recomputed from the blob if that record is
    /// missing).
    async fn layer_asset(
        &self,
        key: String,
        write: impl FnOnce(&Path) -> io::Result<LayerDigests> + Send + 'static,
    ) -> Result<LayerAsset, FactoryError> {
        let diff_ids = self.layer_diff_ids()?;
        let recorded = diff_ids.clone();
        let asset = self
            .builder()
            .get_or_build(&key, move |out: PathBuf| -> BuildFuture {
                Box::pin(async move {
                    tokio::task::spawn_blocking(move || {
                        let digests = write(&out).map_err(BuildError::from_error)?;
                        recorded
                            .insert(
                                digests.compressed.as_bytes(),
                                digests.diff_id.as_bytes().to_vec(),
                            )
                            .map_err(|e| BuildError::Failed(Arc::new(e)))?;
                        Ok(())
                    })
                    .await
                    .map_err(|e| BuildError::Failed(errors::context("installer layer task", e)))?
                })
            })
            .await?;
        let diff_id = match diff_ids
            .get(asset.digest.as_bytes())
            .ok()
            .flatten()
            .and_then(|v| <[u8; 32]>::try_from(v.as_ref()).ok())
            .map(Digest::from_bytes)
        {
            Some(d) => d,
            // The record was lost (a restored data directory): read the layer back.
            None => {
                let path = self.blob_path(&asset).await?;
                let d = tokio::task::spawn_blocking(move || gunzipped_digest(&path))
                    .await
                    .map_err(|e| FactoryError::Internal(Arc::new(e)))?
                    .map_err(|e| {
                        FactoryError::Internal(errors::context("reading installer layer", e))
                    })?;
                let _ = diff_ids.insert(asset.digest.as_bytes(), d.as_bytes().to_vec());
                d
            }
        };
        Ok(LayerAsset {
            digest: asset.digest,
            size: asset.size,
            diff_id,
        })
    }

    /// A small blob (a manifest, a config, a signature payload) read whole, refusing one over
    /// `max` bytes: these come from imported images too.
    async fn read_bounded(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, FactoryError> {
        let size = self.store().stat(digest).map(|i| i.size).unwrap_or(0);
        if size > max {
            return Err(FactoryError::Internal(errors::message(format!(
                "blob {digest} is {size} bytes, more than the {max} a manifest or config may have"
            ))));
        }
        self.store()
            .read_bytes(digest)
            .await
            .map_err(|e| FactoryError::Internal(Arc::new(e)))
    }

    /// A stored manifest, or `None` if its blob is missing or does not match its digest (the
    /// store quarantines it): a 404 the next build heals, not a lasting 500.
    async fn read_stored(&self, digest: &Digest) -> Result<Option<Vec<u8>>, FactoryError> {
        match self.read_bounded(digest, MAX_MANIFEST).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(FactoryError::Internal(e))
                if e.downcast_ref::<crate::store::StoreError>()
                    .is_some_and(crate::store::StoreError::is_lost) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn blob_path(&self, asset: &BuiltAsset) -> Result<PathBuf, FactoryError> {
        self.store()
            .blob_path(&asset.digest)
            .await
            .map_err(|e| FactoryError::Internal(Arc::new(e)))
    }
}

/// An index build's entry in the in-flight table, removed when dropped.
struct InflightEntry {
    factory: Arc<Factory>,
    key: String,
}

impl Drop for InflightEntry {
    fn drop(&mut self) {
        if let Ok(mut inflight) = self.factory.index_builds().inflight.lock() {
            inflight.remove(&self.key);
        }
    }
}

/// One architecture's installer image, before its manifest: the config and the layers.
struct ArchParts {
    config: Vec<u8>,
    config_digest: Digest,
    layers: Vec<Descriptor>,
    /// The base installer, `registry/repository:tag`.
    base_reference: String,
}

/// A built artifacts layer.
struct LayerAsset {
    digest: Digest,
    size: u64,
    diff_id: Digest,
}

fn short(s: &str) -> String {
    s.chars().take(100).collect()
}

#[cfg(test)]
mod tests;
