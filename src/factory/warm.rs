//! Warm-up: building a machine's boot assets before it boots, so its first boot streams
//! cached files instead of waiting for builds (and a broken chain shows now, not at boot).
//!
//! A warm-up names a schematic, a version, a platform and an architecture, and what to build:
//! by default what `/pxe` serves (the `cmdline-…` asset, `kernel-<arch>`,
//! `initramfs-<arch>.xz`), or the assets of another boot kind (`iso`, `uki`), or explicit
//! `/image` asset paths. Each is resolved exactly as `/image/{schematic}/{version}/{path}`
//! resolves it, so the cache keys are the ones a boot asks for. The boot chain is checked
//! first ([`super::chain`]). Builds are the appliance's own: no per-client build budget.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::chain::ChainError;
use super::profile::{Arch, AssetProfile};
use super::service::{Factory, FactoryError};

/// The most asset paths one warm-up may name.
pub const MAX_WARM_ASSETS: usize = 16;

/// What a warm-up builds (JSON body of `POST /api/v1/warm`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WarmRequest {
    /// The schematic ID.
    pub schematic: String,
    /// The Talos version (`v1.11.6`).
    pub version: String,
    /// The platform (`metal` when omitted).
    #[serde(default = "default_platform")]
    pub platform: String,
    /// The architecture (`amd64` when omitted).
    #[serde(default = "default_arch")]
    pub arch: String,
    /// What to build: a boot kind (`pxe`, `iso`, `uki`) or `/image` asset paths
    /// (`metal-amd64.raw.zst`); omitted: `pxe`.
    #[serde(default)]
    pub assets: Vec<String>,
}

fn default_platform() -> String {
    "metal".into()
}

fn default_arch() -> String {
    "amd64".into()
}

/// One asset a warm-up produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmedAsset {
    /// The `/image` asset path.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// It was in the cache already (nothing built).
    pub cached: bool,
    /// Time taken, in seconds.
    pub seconds: f64,
}

/// What a warm-up did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmReport {
    /// The schematic ID.
    pub schematic: String,
    /// The Talos version.
    pub version: String,
    /// Each asset, in the order built.
    pub assets: Vec<WarmedAsset>,
    /// Total time, in seconds.
    pub seconds: f64,
}

/// Why a warm-up did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WarmError {
    /// The request itself is wrong (unknown architecture or boot kind, too many assets).
    #[error("{0}")]
    Invalid(String),
    /// The boot chain is broken: the missing piece is named.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// An asset could not be resolved or built (`path` names it).
    #[error("{path}: {error}")]
    Asset {
        /// The asset path.
        path: String,
        /// The factory's answer.
        #[source]
        error: FactoryError,
    },
}

impl WarmRequest {
    /// The `/image` asset paths this request builds, in order.
    pub fn asset_paths(&self) -> Result<Vec<String>, WarmError> {
        let arch = Arch::from_name(&self.arch).ok_or_else(|| {
            WarmError::Invalid(format!(
                "unknown architecture {:?} (amd64 or arm64)",
                self.arch.chars().take(32).collect::<String>()
            ))
        })?;
        if self.assets.len() > MAX_WARM_ASSETS {
            return Err(WarmError::Invalid(format!(
                "at most {MAX_WARM_ASSETS} assets per warm-up"
            )));
        }
        let kinds: Vec<&str> = if self.assets.is_empty() {
            vec!["pxe"]
        } else {
            self.assets.iter().map(String::as_str).collect()
        };
        let (p, a) = (&self.platform, arch.as_str());
        let mut out: Vec<String> = Vec::new();
        for kind in kinds {
            let paths = match kind {
                "pxe" => vec![
                    format!("cmdline-{}", AssetProfile::cmdline(p, arch).pxe_path()),
                    format!("kernel-{a}"),
                    format!("initramfs-{a}.xz"),
                ],
                "iso" => vec![format!("{p}-{a}.iso")],
                "uki" => vec![format!("{p}-{a}-uki.efi")],
                path if path.len() <= 128
                    && !path.is_empty()
                    && path
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
                {
                    vec![path.to_string()]
                }
                other => {
                    return Err(WarmError::Invalid(format!(
                        "{:?} is neither a boot kind (pxe, iso, uki) nor an asset path",
                        other.chars().take(64).collect::<String>()
                    )));
                }
            };
            for path in paths {
                if !out.contains(&path) {
                    out.push(path);
                }
            }
        }
        Ok(out)
    }
}

/// A warm-up whose request, version and boot chain were checked ([`Factory::warm_check`]):
/// what is left is building its assets ([`Factory::warm_checked`]).
#[derive(Debug, Clone)]
pub struct CheckedWarm {
    request: WarmRequest,
    paths: Vec<String>,
    schematic: String,
    version: String,
    started: Instant,
}

impl Factory {
    /// Builds (or finds) the assets of `request`: checks the request, resolves the version
    /// (may ask the upstream), checks the boot chain, then produces each asset in order.
    pub async fn warm(&self, request: &WarmRequest) -> Result<WarmReport, WarmError> {
        let checked = self.warm_check(request).await?;
        self.warm_checked(checked).await
    }

    /// The checks of [`Factory::warm`] without building anything: the request, the
    /// version (may ask the upstream) and the boot chain. Quick; a caller that starts the
    /// builds in the background learns of a broken chain at once.
    pub async fn warm_check(&self, request: &WarmRequest) -> Result<CheckedWarm, WarmError> {
        let started = Instant::now();
        let paths = request.asset_paths()?;
        let arch = Arch::from_name(&request.arch).unwrap_or(Arch::Amd64);
        let cmdline = AssetProfile::cmdline(&request.platform, arch);
        let resolved = self
            .resolve_profile(&request.schematic, &request.version, cmdline)
            .await
            .map_err(|error| WarmError::Asset {
                path: format!("cmdline-{}-{}", request.platform, arch.as_str()),
                error,
            })?;
        self.check_boot_chain_here_or_parent(&resolved, arch)
            .await?;
        Ok(CheckedWarm {
            request: request.clone(),
            paths,
            schematic: resolved.schematic.id.to_string(),
            version: resolved.version.to_string(),
            started,
        })
    }

    /// Produces the assets of a checked warm-up, in order.
    pub async fn warm_checked(&self, checked: CheckedWarm) -> Result<WarmReport, WarmError> {
        let CheckedWarm {
            request,
            paths,
            schematic,
            version,
            started,
        } = checked;
        let mut assets = Vec::new();
        for path in paths {
            let t = Instant::now();
            let asset_error = |error| WarmError::Asset {
                path: path.clone(),
                error,
            };
            let r = self
                .resolve(&request.schematic, &request.version, &path)
                .await
                .map_err(asset_error)?;
            let built = self.asset(&r, None).await.map_err(asset_error)?;
            assets.push(WarmedAsset {
                path: path.clone(),
                size: built.size,
                cached: built.cached,
                seconds: t.elapsed().as_secs_f64(),
            });
        }
        Ok(WarmReport {
            schematic,
            version,
            assets,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// Starts [`Factory::warm`] in a task of its own (an assignment's warm-up: the assignment is
/// answered at once) and logs the outcome: INFO with what was built, sizes and time, or WARN
/// with why not. `why` says what asked for it (`52:54:00:12:34:56 assigned`).
pub fn warm_in_background(factory: std::sync::Arc<Factory>, request: WarmRequest, why: String) {
    drop(spawn_warm(factory, request, why));
}

/// [`warm_in_background`], with a handle to its result: a caller may wait for the report
/// for a while (the builds page) and go away; the warm-up goes on and its outcome is logged
/// either way.
pub fn spawn_warm(
    factory: std::sync::Arc<Factory>,
    request: WarmRequest,
    why: String,
) -> tokio::task::JoinHandle<Result<WarmReport, WarmError>> {
    spawn_logged(
        why,
        request.clone(),
        async move { factory.warm(&request).await },
    )
}

/// [`spawn_warm`] for a warm-up already checked ([`Factory::warm_check`]): only its builds
/// run in the task.
pub fn spawn_checked(
    factory: std::sync::Arc<Factory>,
    checked: CheckedWarm,
    why: String,
) -> tokio::task::JoinHandle<Result<WarmReport, WarmError>> {
    let request = checked.request.clone();
    spawn_logged(
        why,
        request,
        async move { factory.warm_checked(checked).await },
    )
}

/// Runs `warm` in a task of its own and logs its outcome.
fn spawn_logged(
    why: String,
    request: WarmRequest,
    warm: impl std::future::Future<Output = Result<WarmReport, WarmError>> + Send + 'static,
) -> tokio::task::JoinHandle<Result<WarmReport, WarmError>> {
    tokio::spawn(async move {
        let result = warm.await;
        match &result {
            Ok(report) => {
                let built: Vec<String> = report
                    .assets
                    .iter()
                    .map(|a| {
                        format!(
                            "{} {} bytes {} in {:.1}s",
                            a.path,
                            a.size,
                            if a.cached { "cached" } else { "built" },
                            a.seconds
                        )
                    })
                    .collect();
                tracing::info!(%why, schematic = %report.schematic, version = %report.version, assets = %built.join(", "), seconds = report.seconds, "warm-up done");
            }
            Err(e) => {
                tracing::warn!(%why, schematic = %request.schematic, version = %request.version, error = %crate::errors::chain(e), "warm-up failed");
            }
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(arch: &str, assets: &[&str]) -> WarmRequest {
        WarmRequest {
            schematic: "s".into(),
            version: "v1.11.6".into(),
            platform: "metal".into(),
            arch: arch.into(),
            assets: assets.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn boot_kinds_expand_to_asset_paths() {
        assert_eq!(
            req("amd64", &[]).asset_paths().unwrap(),
            ["cmdline-metal-amd64", "kernel-amd64", "initramfs-amd64.xz"]
        );
        assert_eq!(
            req("arm64", &["pxe", "iso", "kernel-arm64"])
                .asset_paths()
                .unwrap(),
            [
                "cmdline-metal-arm64",
                "kernel-arm64",
                "initramfs-arm64.xz",
                "metal-arm64.iso"
            ]
        );
        assert!(req("riscv64", &[]).asset_paths().is_err());
        assert!(req("amd64", &["../x"]).asset_paths().is_err());
        assert!(req("amd64", &[""]).asset_paths().is_err());
        let many: Vec<&str> = std::iter::repeat_n("pxe", MAX_WARM_ASSETS + 1).collect();
        assert!(req("amd64", &many).asset_paths().is_err());
    }
}
