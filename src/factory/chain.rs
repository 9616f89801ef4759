//! The boot chain of a `(schematic, version, arch)`: everything a machine's PXE boot will need
//! beyond the kernel command line, checked before the machine asks for it, so an assignment
//! (admin API, seed file) or a `/pxe` script that would fail at boot is refused with the
//! missing piece named instead.
//!
//! In order: the version's extensions catalog (offline: in the store; online: fetchable — the
//! initramfs is built from it even without extensions), each official extension of the
//! schematic found in it by name (upstream's aliases included) and its image present
//! (offline: its `linux/<arch>` image whole in the store) or reachable (online: one manifest
//! HEAD), then the overlay likewise if the schematic has one. Whether the version is served
//! is [`super::service::Factory::resolve_profile`]'s step, before this one.

use std::sync::Arc;

use super::artifacts::ArtifactError;
use super::profile::Arch;
use super::quirks::Quirks;
use super::service::{Factory, FactoryError, Resolved};
use crate::upstream::{MirrorError, UpstreamError};

/// Why a boot chain is broken, or could not be checked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChainError {
    /// The schematic names an extension the version's catalog does not list.
    #[error("extension {name} is not in the {version} extensions catalog")]
    ExtensionNotInCatalog {
        /// The name the schematic uses.
        name: String,
        /// The Talos version.
        version: String,
    },
    /// The schematic names an overlay the version's catalog does not list.
    #[error("overlay {name} is not in the {version} overlays catalog")]
    OverlayNotInCatalog {
        /// The overlay name.
        name: String,
        /// The Talos version.
        version: String,
    },
    /// An image the boot needs is missing: offline not in the store, or online unknown to the
    /// upstream. The error names the image and what it is, and (offline) what to import.
    #[error(transparent)]
    Missing(FactoryError),
    /// The check itself failed (an upstream unreachable, denied, the store failing): nothing
    /// is known to be missing; the error says what happened in words.
    #[error(transparent)]
    Unchecked(FactoryError),
}

impl ChainError {
    /// The answer an asset request would get for the same break: the `/pxe` script's error,
    /// worded like the initramfs build's (upstream's 400 for an extension not available).
    pub fn into_factory_error(self) -> FactoryError {
        match self {
            ChainError::ExtensionNotInCatalog { name, version } => FactoryError::Schematic(
                format!("official extension {name:?} is not available for Talos version {version}"),
            ),
            ChainError::OverlayNotInCatalog { name, version } => FactoryError::Schematic(format!(
                "official overlay {name:?} is not available for Talos version {version}"
            )),
            ChainError::Missing(e) | ChainError::Unchecked(e) => e,
        }
    }
}

/// Sorts an artifact failure about `what` (e.g. `the extensions catalog`) into missing or
/// unchecked; a missing image's name gets `what` added (`ghcr.io/…:v1.11.6 (the extensions
/// catalog) is not in the store …`).
fn classify(what: &str, e: ArtifactError) -> ChainError {
    match e {
        ArtifactError::Unavailable(m) => match m.as_ref() {
            MirrorError::Offline(subject) => ChainError::Missing(FactoryError::Unavailable(
                Arc::new(MirrorError::Offline(format!("{subject} ({what})"))),
            )),
            MirrorError::NotFound(text)
            | MirrorError::Upstream(UpstreamError::NotFound { message: text, .. }) => {
                ChainError::Missing(FactoryError::Unavailable(Arc::new(MirrorError::NotFound(
                    format!("{what}: {text}"),
                ))))
            }
            _ => ChainError::Unchecked(FactoryError::Unavailable(m)),
        },
        e @ ArtifactError::MissingFile { .. } => ChainError::Missing(e.into()),
        e => ChainError::Unchecked(e.into()),
    }
}

impl Factory {
    /// [`Factory::check_boot_chain`] as every caller wants it (assignments, the seed file,
    /// warm-ups, `/pxe`): with a parent factory (`factory.parent`), what this appliance lacks
    /// can come from the parent, so a chain incomplete here is not a refusal — the parent's
    /// answer for the kernel and initramfs decides.
    pub async fn check_boot_chain_here_or_parent(
        &self,
        r: &Resolved,
        arch: Arch,
    ) -> Result<(), ChainError> {
        match self.check_boot_chain(r, arch).await {
            Err(e) if self.parent().is_some() => {
                tracing::debug!(reason = %crate::errors::chain(&e), "boot chain not complete here; the parent's assets are used");
                Ok(())
            }
            other => other,
        }
    }

    /// Checks the boot chain of `r` (its schematic and version) for `arch`; see the module
    /// docs. Nothing is built and nothing large is downloaded (online, the catalogs are
    /// fetched: they are small and the boot needs them anyway).
    pub async fn check_boot_chain(&self, r: &Resolved, arch: Arch) -> Result<(), ChainError> {
        let artifacts = self.artifacts();
        let version = &r.version;
        let catalog_image = artifacts
            .extensions_catalog_image(version)
            .map_err(|e| ChainError::Unchecked(e.into()))?;
        let catalog = artifacts
            .extensions(version)
            .await
            .map_err(|e| classify(&format!("the extensions catalog of {version}"), e))?;
        let customization = &r.schematic.schematic.customization;
        for name in &customization.system_extensions.official_extensions {
            let info = catalog
                .find(name)
                .ok_or_else(|| ChainError::ExtensionNotInCatalog {
                    name: name.clone(),
                    version: version.to_string(),
                })?;
            let what = format!(
                "extension {} of {version}, listed in {catalog_image}",
                info.name
            );
            artifacts
                .image_reachable(&what, &info.reference, &info.digest, arch.as_str())
                .await
                .map_err(|e| classify(&format!("extension {}", info.name), e))?;
        }
        let overlay = &r.schematic.schematic.overlay;
        if !overlay.is_empty() && Quirks::new(version).supports_overlay() {
            let overlays = artifacts
                .overlays(version)
                .await
                .map_err(|e| classify(&format!("the overlays catalog of {version}"), e))?;
            let info = overlays
                .iter()
                .find(|o| o.name == overlay.name)
                .ok_or_else(|| ChainError::OverlayNotInCatalog {
                    name: overlay.name.clone(),
                    version: version.to_string(),
                })?;
            let what = format!("overlay {}", info.name);
            artifacts
                .image_reachable(&what, &info.reference, &info.digest, arch.as_str())
                .await
                .map_err(|e| classify(&what, e))?;
        }
        Ok(())
    }
}
