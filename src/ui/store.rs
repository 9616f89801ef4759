//! The store page's logic (`/ui/store`, rendered by `http::ui::store`): what the store holds
//! and how it is used, and the GC form's knobs turned into a retention policy.
//!
//! Nothing here has an operation of its own: the listing is the catalog's
//! ([`crate::upstream::images::list`], as `GET /api/v1/images`), the per-version usage is
//! [`Retention::usage`] (as `store usage`), uploads go through
//! [`crate::upstream::images::import`] (as `POST /api/v1/images/import`) and GC through
//! [`Retention::try_run`] (as `store gc`). This module only gathers their answers into what
//! the page shows and parses what the page's forms send.
//!
//! "When imported" is the time the store first held the image's root manifest (the store
//! records a `created` time per blob, kept when the same blob is stored again): the catalog
//! itself records no import time. An image whose manifest came back after a GC shows the
//! later time.

use std::time::Duration;

use crate::config::Config;
use crate::retention::{
    GcPolicy, Retention, RetentionError, SERVICE_GRACE, UsageReport, parse_size,
};
use crate::store::Quota;
use crate::upstream::Mirror;
use crate::upstream::images;

/// One image the store holds.
#[derive(Debug, Clone)]
pub struct HeldImage {
    /// `registry/repository:tag` or `registry/repository@digest`.
    pub reference: String,
    /// The root (manifest or index) digest.
    pub digest: String,
    /// Bytes of the image's blobs that are present.
    pub stored_bytes: u64,
    /// Blobs of the image that are missing (a partial pull).
    pub missing_blobs: usize,
    /// When the store first held the root manifest (unix seconds), if it still does.
    pub stored_at: Option<u64>,
}

impl HeldImage {
    /// The digest's first 12 hex digits (the page shows the whole one on hover and copy).
    pub fn short_digest(&self) -> &str {
        let hex = self
            .digest
            .split_once(':')
            .map_or(&*self.digest, |(_, h)| h);
        &hex[..hex.len().min(12)]
    }
}

/// Everything the store page shows.
#[derive(Debug, Clone)]
pub struct Overview {
    /// Every stored image, by reference.
    pub images: Vec<HeldImage>,
    /// Bytes of blob content the store holds.
    pub store_bytes: u64,
    /// Per Talos version and the rest (`store usage`).
    pub usage: UsageReport,
    /// `store.maxBytes` and `store.minFreeBytes` (0 = none).
    pub quota: Quota,
    /// Bytes free on the data directory's filesystem, when it can be asked.
    pub free_bytes: Option<u64>,
}

/// Why the overview could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum OverviewError {
    /// The image catalog failed.
    #[error("image catalog")]
    Catalog(#[from] crate::oci::CatalogError),
    /// The usage report failed.
    #[error("store usage")]
    Usage(#[from] RetentionError),
    /// A blocking task failed.
    #[error("store listing task")]
    Join(#[from] tokio::task::JoinError),
}

/// Gathers the store page's content.
pub async fn overview(
    config: &Config,
    mirror: &Mirror,
    retention: &Retention,
) -> Result<Overview, OverviewError> {
    let catalog = mirror.catalog().clone();
    let listed = tokio::task::spawn_blocking(move || {
        let list = images::list_from(&catalog)?;
        let held: Vec<HeldImage> = list
            .images
            .into_iter()
            .map(|e| HeldImage {
                stored_at: catalog.store().stat(&e.digest).map(|i| i.created),
                reference: e.reference,
                digest: e.digest.to_string(),
                stored_bytes: e.stored_bytes,
                missing_blobs: e.missing_blobs,
            })
            .collect();
        Ok::<_, crate::oci::CatalogError>((held, list.store_bytes))
    })
    .await??;
    let (mut held, store_bytes) = listed;
    held.sort_by(|a, b| a.reference.cmp(&b.reference));
    let usage = retention.usage().await?;
    let free_bytes = nix::sys::statvfs::statvfs(&config.data_dir)
        .ok()
        .map(|st| st.blocks_available().saturating_mul(st.fragment_size()));
    Ok(Overview {
        images: held,
        store_bytes,
        usage,
        quota: Quota {
            max_bytes: config.store.max_bytes,
            min_free_bytes: config.store.min_free_bytes,
        },
        free_bytes,
    })
}

/// The GC form as sent: text fields, as typed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct GcForm {
    /// Keep the newest N versions (empty or 0: every version).
    #[serde(default)]
    pub keep_versions: Option<String>,
    /// `on` when the checkbox is ticked (absent when not).
    #[serde(default)]
    pub keep_referenced: Option<String>,
    /// Evict built assets down to this size (`20G`, `500MiB`; empty or 0: no target).
    #[serde(default)]
    pub max_size: Option<String>,
    /// Keep blobs stored this recently, in hours (empty: the service's 7 hours).
    #[serde(default)]
    pub grace_hours: Option<String>,
}

/// The most versions the form may ask to keep (more is "every version" anyway).
const MAX_KEEP_VERSIONS: usize = 10_000;
/// The longest grace period the form may ask for (as the API: 30 days).
pub const MAX_GRACE_HOURS: u64 = 30 * 24;

/// A GC request from the form: the policy and the grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcRequest {
    /// What GC keeps.
    pub policy: GcPolicy,
    /// Blobs stored this recently stay.
    pub grace: Duration,
}

impl GcForm {
    /// The form filled in with `store.gc.*` and the service's grace period.
    pub fn defaults(config: &Config) -> GcForm {
        let gc = &config.store.gc;
        GcForm {
            keep_versions: Some(gc.keep_versions.to_string()),
            keep_referenced: gc.keep_referenced.then(|| "on".to_string()),
            max_size: Some(if gc.max_bytes == 0 {
                String::new()
            } else {
                gc.max_bytes.to_string()
            }),
            grace_hours: Some((SERVICE_GRACE.as_secs() / 3600).to_string()),
        }
    }

    /// Whether nothing was sent (a plain link to the preview): the configured policy applies.
    pub fn is_empty(&self) -> bool {
        self.keep_versions.is_none()
            && self.keep_referenced.is_none()
            && self.max_size.is_none()
            && self.grace_hours.is_none()
    }

    /// Whether the keep-referenced box is ticked.
    pub fn keeps_referenced(&self) -> bool {
        matches!(
            self.keep_referenced.as_deref(),
            Some("on" | "true" | "yes" | "1")
        )
    }

    /// The request the form asks for; a message naming the field when a value is not valid.
    pub fn request(&self) -> Result<GcRequest, String> {
        let text = |v: &Option<String>| v.as_deref().unwrap_or("").trim().to_string();
        let keep_versions = match text(&self.keep_versions).as_str() {
            "" | "0" => None,
            t => match t.parse::<usize>() {
                Ok(n) if n <= MAX_KEEP_VERSIONS => Some(n),
                _ => {
                    return Err(format!(
                        "keep versions: {t:?} is not a number from 0 to {MAX_KEEP_VERSIONS}"
                    ));
                }
            },
        };
        let max_bytes = match text(&self.max_size).as_str() {
            "" | "0" => None,
            t => Some(parse_size(t).map_err(|e| format!("max size: {e}"))?),
        };
        let grace = match text(&self.grace_hours).as_str() {
            "" => SERVICE_GRACE,
            t => match t.parse::<u64>() {
                Ok(h) if h <= MAX_GRACE_HOURS => Duration::from_secs(h * 3600),
                _ => {
                    return Err(format!(
                        "grace: {t:?} is not a number of hours from 0 to {MAX_GRACE_HOURS}"
                    ));
                }
            },
        };
        Ok(GcRequest {
            policy: GcPolicy {
                keep_versions,
                keep_referenced: self.keeps_referenced(),
                max_bytes,
            },
            grace,
        })
    }
}

/// `1.5 GiB`, for the page.
pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// `2026-12-07 10:43 UTC`, for the page.
pub fn utc_time(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(
            || unix.to_string(),
            |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(kv: &str, refd: bool, size: &str, grace: &str) -> GcForm {
        GcForm {
            keep_versions: Some(kv.into()),
            keep_referenced: refd.then(|| "on".into()),
            max_size: Some(size.into()),
            grace_hours: Some(grace.into()),
        }
    }

    #[test]
    fn the_gc_form_becomes_a_policy() {
        let r = form("1", true, "2G", "0").request().unwrap();
        assert_eq!(
            r.policy,
            GcPolicy {
                keep_versions: Some(1),
                keep_referenced: true,
                max_bytes: Some(2 << 30),
            }
        );
        assert_eq!(r.grace, Duration::ZERO);
        // Empty and 0 mean "no limit"; an empty grace is the service's.
        let r = form("", false, "0", "").request().unwrap();
        assert_eq!(r.policy, GcPolicy::default());
        assert_eq!(r.grace, SERVICE_GRACE);
    }

    #[test]
    fn bad_knobs_are_named() {
        for (f, field) in [
            (form("-1", true, "", ""), "keep versions"),
            (form("99999999", true, "", ""), "keep versions"),
            (form("1", true, "12 parsecs", ""), "max size"),
            (form("1", true, "99999999999T", ""), "max size"),
            (form("1", true, "", "721"), "grace"),
            (form("1", true, "", "soon"), "grace"),
        ] {
            let e = f.request().unwrap_err();
            assert!(e.starts_with(field), "{e}");
        }
    }

    #[test]
    fn defaults_round_trip_through_the_form() {
        let mut config = Config::default();
        config.store.gc.keep_versions = 3;
        config.store.gc.keep_referenced = false;
        config.store.gc.max_bytes = 5 << 30;
        let r = GcForm::defaults(&config).request().unwrap();
        assert_eq!(r.policy, GcPolicy::from_config(&config.store.gc));
        assert_eq!(r.grace, SERVICE_GRACE);
    }

    #[test]
    fn digests_and_times_are_shortened_for_the_page() {
        let image = HeldImage {
            reference: "ghcr.io/a/b:v1".into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            stored_bytes: 1,
            missing_blobs: 0,
            stored_at: None,
        };
        assert_eq!(image.short_digest(), "abababababab");
        assert_eq!(utc_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(human_bytes(1536), "1.50 KiB");
    }
}
