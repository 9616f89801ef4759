//! Manifests and indexes (OCI and Docker schema 2): media types, descriptors, and just enough
//! parsing to find children and platforms. Stored manifests are never re-serialised — the bytes
//! a registry serves are the bytes it received, so digests stay stable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::Digest;

/// Media types bootfactory stores and serves.
pub mod media {
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// Docker schema 2 manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker schema 2 image manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI uncompressed layer.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

    /// The four manifest types, in the order clients usually list them.
    pub const MANIFEST_TYPES: [&str; 4] = [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST];

    /// True for an index or manifest list.
    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_LIST
    }

    /// True for any of the four manifest types.
    pub fn is_manifest(mt: &str) -> bool {
        MANIFEST_TYPES.contains(&mt)
    }
}

/// The largest manifest accepted (containerd refuses more than 4·1048·1048 bytes anyway).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Platform, for index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Artifact type (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Alternative download URLs (foreign layers; never fetched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

/// An index entry's platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// Architecture variant (`v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Whether a manifest is an index (points at manifests) or an image (points at blobs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// Image index / manifest list.
    Index,
    /// Image manifest.
    Image,
}

/// A parsed manifest: its effective media type and what it points at.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The media type the manifest is served with.
    pub media_type: String,
    /// Index or image.
    pub kind: ManifestKind,
    /// For images: the config blob.
    pub config: Option<Descriptor>,
    /// For images: the layers.
    pub layers: Vec<Descriptor>,
    /// For indexes: the child manifests.
    pub manifests: Vec<Descriptor>,
    /// OCI 1.1 `subject` (referrers).
    pub subject: Option<Descriptor>,
}

/// Why bytes are not a manifest we can store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Over [`MAX_MANIFEST_BYTES`].
    #[error("manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    /// Not JSON, or missing required fields.
    #[error("invalid manifest: {0}")]
    Invalid(String),
    /// Docker schema 1 or another unsupported type.
    #[error("unsupported manifest type {0:?}")]
    Unsupported(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<u32>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
}

/// Parses manifest bytes. `content_type` is the media type the bytes came with (a registry's
/// `Content-Type`, a descriptor's `mediaType`), used when the body does not say.
pub fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge);
    }
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid(e.to_string()))?;
    if raw.schema_version != Some(2) {
        return Err(ManifestError::Unsupported(format!(
            "schemaVersion {}",
            raw.schema_version
                .map(|v| v.to_string())
                .unwrap_or("missing".into())
        )));
    }
    let hint = content_type
        .map(|c| c.split(';').next().unwrap_or_default().trim())
        .filter(|c| media::is_manifest(c));
    // The body's own mediaType wins; then the transport's; then the shape.
    let media_type = match (raw.media_type.as_deref(), hint) {
        (Some(mt), _) if media::is_manifest(mt) => mt.to_string(),
        (Some(mt), _) => return Err(ManifestError::Unsupported(mt.to_string())),
        (None, Some(h)) => h.to_string(),
        (None, None) if raw.manifests.is_some() => media::OCI_INDEX.to_string(),
        (None, None) if raw.config.is_some() => media::OCI_MANIFEST.to_string(),
        (None, None) => {
            return Err(ManifestError::Invalid(
                "neither manifests nor config present".into(),
            ));
        }
    };
    if media::is_index(&media_type) {
        Ok(Manifest {
            media_type,
            kind: ManifestKind::Index,
            config: None,
            layers: Vec::new(),
            manifests: raw
                .manifests
                .ok_or_else(|| ManifestError::Invalid("index without manifests".into()))?,
            subject: raw.subject,
        })
    } else {
        Ok(Manifest {
            media_type,
            kind: ManifestKind::Image,
            config: Some(
                raw.config.ok_or_else(|| {
                    ManifestError::Invalid("image manifest without config".into())
                })?,
            ),
            layers: raw.layers.unwrap_or_default(),
            manifests: Vec::new(),
            subject: raw.subject,
        })
    }
}

impl Manifest {
    /// Every descriptor this manifest references (config, layers, child manifests); foreign
    /// layers with `urls` are included too, since their digests still identify content.
    pub fn children(&self) -> impl Iterator<Item = &Descriptor> {
        self.config
            .iter()
            .chain(self.layers.iter())
            .chain(self.manifests.iter())
    }

    /// For an index: the child for `os`/`architecture` (variant ignored unless it is the only
    /// difference).
    pub fn platform_child(&self, os: &str, architecture: &str) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == os && p.architecture == architecture)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZERO: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn media_type_from_body_header_or_shape() {
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{ZERO}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
            media::OCI_MANIFEST
        );
        let m = parse_manifest(index.as_bytes(), None).unwrap();
        assert_eq!(m.media_type, media::OCI_INDEX);
        assert!(m.platform_child("linux", "arm64").is_some());
        assert!(m.platform_child("linux", "amd64").is_none());
        let m = parse_manifest(index.as_bytes(), Some(media::DOCKER_LIST)).unwrap();
        assert_eq!(m.media_type, media::DOCKER_LIST);

        let image = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{ZERO}","size":2}},"layers":[]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG
        );
        let m = parse_manifest(image.as_bytes(), Some("text/plain")).unwrap();
        assert_eq!(m.media_type, media::DOCKER_MANIFEST);
        assert_eq!(m.children().count(), 1);
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            parse_manifest(br#"{"schemaVersion":1}"#, None),
            Err(ManifestError::Unsupported(_))
        ));
        assert!(matches!(
            parse_manifest(b"nope", None),
            Err(ManifestError::Invalid(_))
        ));
        assert!(matches!(
            parse_manifest(br#"{"schemaVersion":2,"mediaType":"text/html"}"#, None),
            Err(ManifestError::Unsupported(_))
        ));
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert_eq!(
            parse_manifest(&big, None).unwrap_err(),
            ManifestError::TooLarge
        );
    }
}
