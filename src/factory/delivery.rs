//! Delivering an asset for `GET|HEAD /image/{schematic}/{version}/{path}`: resolve the
//! request, produce (or find) the asset, count it in the Image Factory's metrics, and hand
//! back either the stored file or — for `<path>.sha256` / `<path>.sha512` — its checksum line.
//! The HTTP layer only maps a [`Delivery`] to a response.

use std::net::IpAddr;
use std::sync::Arc;

use super::profile::content_type;
use super::service::{Factory, FactoryError, Resolved};
use crate::errors;
use crate::factory::builder::BuiltAsset;
use crate::metrics::Metrics;
use crate::store::Blob;

/// What an `/image/…` request gets.
#[derive(Debug)]
pub enum Delivery {
    /// The asset itself.
    File {
        /// The stored blob, open.
        blob: Box<Blob>,
        /// `Content-Type` (upstream's, by extension).
        content_type: &'static str,
        /// The name the client should save it under (`?filename=` or the asset name).
        filename: String,
        /// Entity tag: the blob's digest, hex.
        etag: String,
    },
    /// `<hex digest>  <filename>\n` (what `sha256sum` prints), for `.sha256` / `.sha512`.
    Checksum(String),
    /// `<path>.sig`: this appliance's signature of the asset for a child factory
    /// (`factory::remote`): base64 of the DER ECDSA P-256 signature of
    /// [`crate::factory::remote::asset_signature_message`], then `\n`.
    Signature(String),
}

/// A checksum suffix on an asset path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// `.sha256`
    Sha256,
    /// `.sha512`
    Sha512,
}

impl Checksum {
    /// Splits a trailing `.sha256` / `.sha512` off an asset path.
    pub fn split(path: &str) -> (&str, Option<Checksum>) {
        match path.rsplit_once('.') {
            Some((base, "sha256")) => (base, Some(Checksum::Sha256)),
            Some((base, "sha512")) => (base, Some(Checksum::Sha512)),
            _ => (path, None),
        }
    }

    /// The hex digest of a file's content (blocking: call off the async runtime).
    fn of_file(self, path: &std::path::Path) -> std::io::Result<String> {
        use sha2::Digest as _;
        let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
        Ok(match self {
            Checksum::Sha256 => {
                let mut h = sha2::Sha256::new();
                std::io::copy(&mut file, &mut h)?;
                hex::encode(h.finalize())
            }
            Checksum::Sha512 => {
                let mut h = sha2::Sha512::new();
                std::io::copy(&mut file, &mut h)?;
                hex::encode(h.finalize())
            }
        })
    }
}

impl Factory {
    /// Serves `/image/{schematic}/{version}/{path}` for `client` (`None`: the appliance itself,
    /// not rate-limited). `filename` is the client's `?filename=`, already made safe for a
    /// header; without it the asset's own name is used.
    pub async fn deliver(
        &self,
        schematic: &str,
        version: &str,
        path: &str,
        filename: Option<String>,
        client: Option<IpAddr>,
    ) -> Result<Delivery, FactoryError> {
        let (path, checksum) = Checksum::split(path);
        if path.ends_with(".sigstore.json") {
            return Err(FactoryError::EnterpriseOnly(
                "enterprise signing is not enabled: signature endpoint is not available".into(),
            ));
        }
        let (path, signature) = match path.strip_suffix(".sig") {
            Some(base) if checksum.is_none() => (base, true),
            _ => (path, false),
        };
        let resolved = self.resolve(schematic, version, path).await?;
        let (asset, opened) = self.asset_open(&resolved, client).await?;
        if signature {
            use base64::Engine as _;
            let message = crate::factory::remote::asset_signature_message(
                resolved.schematic.id.as_str(),
                &resolved.version.to_string(),
                path,
                &asset.digest.hex(),
            );
            let der = self.builder().signer().sign(&message);
            return Ok(Delivery::Signature(format!(
                "{}\n",
                base64::engine::general_purpose::STANDARD.encode(der)
            )));
        }
        record(self.metrics(), &resolved, &asset);
        let blob = match opened {
            Some(blob) => blob,
            None => self
                .store()
                .open_blob(&asset.digest)
                .await
                .map_err(|e| FactoryError::Internal(Arc::new(e)))?,
        };
        let filename = filename.unwrap_or_else(|| path.to_string());
        if let Some(kind) = checksum {
            let bytes_path = blob.path.clone();
            let hex = tokio::task::spawn_blocking(move || kind.of_file(&bytes_path))
                .await
                .map_err(|e| FactoryError::Internal(Arc::new(e)))?
                .map_err(|e| {
                    FactoryError::Internal(errors::context(format!("reading {path}"), e))
                })?;
            return Ok(Delivery::Checksum(format!("{hex}  {filename}\n")));
        }
        Ok(Delivery::File {
            etag: asset.digest.hex(),
            content_type: content_type(path),
            filename,
            blob: Box::new(blob),
        })
    }
}

/// Upstream's asset metrics (`image_factory_assets_*`, `…_extension_hits_total`): a cached
/// delivery, or a build of this request's own (a request that joined another's build counts
/// neither).
fn record(m: &Metrics, resolved: &Resolved, asset: &BuiltAsset) {
    let version = resolved.version.to_string();
    let kind = format!("{:?}", resolved.profile.kind).to_lowercase();
    let labels = [
        version.as_str(),
        kind.as_str(),
        resolved.profile.arch.as_str(),
    ];
    if asset.cached {
        m.assets_delivered_cached.with_label_values(&labels).inc();
        m.assets_cached_bytes
            .with_label_values(&labels)
            .inc_by(asset.size);
    } else if !asset.shared && !asset.fetched {
        m.assets_cached_errors.with_label_values(&labels).inc();
        m.assets_built.with_label_values(&labels).inc();
        m.assets_built_bytes
            .with_label_values(&labels)
            .inc_by(asset.size);
        for ext in &resolved
            .schematic
            .schematic
            .customization
            .system_extensions
            .official_extensions
        {
            m.extension_hits.with_label_values(&[ext.as_str()]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_suffixes() {
        assert_eq!(
            Checksum::split("metal-amd64.iso.sha256"),
            ("metal-amd64.iso", Some(Checksum::Sha256))
        );
        assert_eq!(
            Checksum::split("kernel-amd64.sha512"),
            ("kernel-amd64", Some(Checksum::Sha512))
        );
        assert_eq!(Checksum::split("kernel-amd64"), ("kernel-amd64", None));
        assert_eq!(Checksum::split("a.sha1"), ("a.sha1", None));
    }
}
