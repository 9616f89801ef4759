//! Places to get a built asset before building it: a build cache shared with other
//! appliances on an OCI registry (`cache.oci.repository`; [`oci_cache`]), then a parent factory
//! (`factory.parent`, an Image Factory or another bootfactory; [`parent`]). Schematic IDs and asset paths are the
//! Image Factory's, so `/image/<schematic>/<version>/<path>` names the same asset everywhere.
//!
//! The factory's build path ([`crate::factory::service`]) asks here after its own store's
//! cache and before the build budget, the host's tools and the build itself. A fetch runs
//! through the builder's in-flight table ([`crate::factory::builder::Builder::get_or_fetch`]),
//! so concurrent requests for one missing asset share one download. The bytes go to a
//! scratch file in the data directory; they reach the store (and are signed with this
//! appliance's cache key) only after they have been verified, so unverified bytes are never
//! served. What "verified" means is the trust model of `factory.parentVerify`
//! (README "Parent factories"):
//!
//! - `sha256`: the parent's `<path>.sha256` names the bytes received. Integrity against a
//!   broken transfer, not authenticity: whoever answers for the parent can send both. An
//!   Image Factory that does not publish checksums (402) fails this check.
//! - `signature`: a bootfactory parent's `<path>.sig` ([`asset_signature_message`]) verifies
//!   with its public key (`factory.parentPublicKeyFile`, its `/oci/cosign/signing-key.pub`).
//!   The signature binds schematic, version, path and SHA-256, so a parent cannot swap one
//!   asset for another.
//! - `none`: the transport only (use HTTPS).
//!
//! A parent that lacks the asset, is down, or sends bytes that fail verification is a miss:
//! the asset is built here (`factory.parentFallback: build`) or the request fails with a 502
//! naming the parent (`fail`).

pub(crate) mod oci_cache;
pub(crate) mod parent;

use std::sync::OnceLock;

/// The header a child factory sends with a fetch: the instance IDs of the factories the
/// request has passed through (comma-separated), its own last. A factory that finds its own
/// ID there is asked for something it is itself waiting for (parents configured in a loop)
/// and answers at once instead of asking its parent again.
pub const CHAIN_HEADER: &str = "x-bootfactory-chain";
/// The most IDs a chain header may carry (a longer one is a loop too).
const MAX_CHAIN: usize = 16;

/// This process's instance ID (random, per start).
pub(crate) fn instance_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| hex::encode(rand::random::<[u8; 8]>()))
}

/// The factories an `/image` request has passed through, from its [`CHAIN_HEADER`]
/// (bounded: at most 16 IDs of at most 32 characters; anything else is ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain(Vec<String>);

impl Chain {
    /// Reads a header value.
    pub fn parse(header: Option<&str>) -> Chain {
        let Some(h) = header else {
            return Chain::default();
        };
        Chain(
            h.split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty() && id.len() <= 32)
                .take(MAX_CHAIN + 1)
                .map(str::to_string)
                .collect(),
        )
    }

    /// Whether this factory is already in the chain (or the chain is too long).
    pub(crate) fn is_loop(&self) -> bool {
        self.0.len() > MAX_CHAIN || self.0.iter().any(|id| id == instance_id())
    }

    /// The header value for a fetch from this factory's parent: the chain plus this factory.
    pub(crate) fn extended(&self) -> String {
        let mut ids = self.0.clone();
        ids.push(instance_id().to_string());
        ids.join(",")
    }
}

tokio::task_local! {
    /// The chain of the `/image` request being served (task-local: set by the HTTP handler
    /// around [`crate::factory::service::Factory::deliver`]).
    static CHAIN: Chain;
}

/// Runs `fut` (the delivery of one `/image` request) with `chain` as its chain.
pub async fn with_chain<F: std::future::Future>(chain: Chain, fut: F) -> F::Output {
    CHAIN.scope(chain, fut).await
}

/// The chain of the current request (empty outside one).
pub(crate) fn current_chain() -> Chain {
    CHAIN.try_with(Chain::clone).unwrap_or_default()
}

use crate::factory::profile::{AssetProfile, OutputKind, parse_asset_path};
use crate::version::TalosVersion;

/// The message a bootfactory signs for an asset it serves (`<path>.sig`) and a child verifies:
/// `bootfactory-parent-asset-v1\n<schematic>\n<version>\n<path>\n<sha256 hex>\n`. ECDSA P-256
/// over SHA-256 of this text, DER, base64 in the response body.
pub(crate) fn asset_signature_message(
    schematic: &str,
    version: &str,
    path: &str,
    sha256_hex: &str,
) -> Vec<u8> {
    format!("bootfactory-parent-asset-v1\n{schematic}\n{version}\n{path}\n{sha256_hex}\n")
        .into_bytes()
}

/// The `/image/…` path of `profile` (the name another factory serves it under), or `None`
/// when the profile cannot be written as a path that reads back to itself (legacy boards).
pub(crate) fn image_path(profile: &AssetProfile, version: &TalosVersion) -> Option<String> {
    if profile.board.is_some() {
        return None;
    }
    let arch = profile.arch.as_str();
    let sb = if profile.secure_boot {
        "-secureboot"
    } else {
        ""
    };
    let platform = &profile.platform;
    let path = match profile.kind {
        OutputKind::Kernel => format!("kernel-{arch}"),
        OutputKind::Cmdline => format!("cmdline-{platform}-{arch}{sb}"),
        OutputKind::Initramfs => format!("initramfs-{arch}.xz"),
        OutputKind::Iso => format!("{platform}-{arch}{sb}.iso"),
        OutputKind::Uki => format!("{platform}-{arch}{sb}-uki.efi"),
        OutputKind::Installer => format!("{platform}-installer-{arch}{sb}.tar"),
        OutputKind::Image => {
            let image = profile.image.as_ref()?;
            format!(
                "{platform}-{arch}{sb}.{}{}",
                image.disk_format.extension(),
                profile.out_format.suffix()
            )
        }
    };
    // Only a path that means exactly this profile (disk sizes and options come from the
    // platform, so a profile with other values has no path).
    (parse_asset_path(&path, version).ok()? == *profile).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_read_back_to_their_profiles() {
        let v = TalosVersion::new(1, 11, 6);
        for path in [
            "kernel-amd64",
            "kernel-arm64",
            "cmdline-metal-amd64",
            "cmdline-digital-ocean-amd64-secureboot",
            "initramfs-arm64.xz",
            "metal-amd64.iso",
            "metal-amd64-secureboot.iso",
            "metal-arm64-uki.efi",
            "metal-installer-amd64.tar",
            "aws-installer-arm64-secureboot.tar",
            "metal-amd64.raw",
            "metal-amd64.raw.zst",
            "metal-amd64.qcow2.xz",
            "azure-amd64.vhd",
            "gcp-amd64.raw.tar.gz",
            "vmware-amd64.ova",
        ] {
            let profile = parse_asset_path(path, &v).unwrap();
            assert_eq!(image_path(&profile, &v).as_deref(), Some(path), "{path}");
        }
        // `installer-amd64.tar` is the metal installer: written the long way.
        let p = parse_asset_path("installer-amd64.tar", &v).unwrap();
        assert_eq!(
            image_path(&p, &v).as_deref(),
            Some("metal-installer-amd64.tar")
        );
        // A disk size no path gives has no path.
        let mut odd = parse_asset_path("metal-amd64.raw", &v).unwrap();
        odd.image.as_mut().unwrap().disk_size_mib = 3;
        assert_eq!(image_path(&odd, &v), None);
    }

    #[test]
    fn chains_find_loops_and_stay_bounded() {
        assert!(!Chain::parse(None).is_loop());
        let other = Chain::parse(Some("aaaa, bbbb"));
        assert!(!other.is_loop());
        let mine = Chain::parse(Some(&other.extended()));
        assert!(mine.is_loop());
        assert_eq!(mine.0.len(), 3);
        let long = vec!["x"; 40].join(",");
        assert!(Chain::parse(Some(&long)).is_loop());
        assert!(Chain::parse(Some(&"y".repeat(100))).0.is_empty());
    }

    #[test]
    fn the_signed_message_binds_every_part() {
        let m = asset_signature_message("abc", "v1.11.6", "kernel-amd64", "00ff");
        assert_eq!(
            m,
            b"bootfactory-parent-asset-v1\nabc\nv1.11.6\nkernel-amd64\n00ff\n"
        );
    }
}
