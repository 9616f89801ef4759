//! The OCI documents an installer image is made of (index, manifests, config, descriptors)
//! and the cosign simple-signing payload, serialised with fields in go-containerregistry's
//! order.

use serde::Serialize;

use crate::store::Digest;

/// The cosign simple-signing payload (`sigstore` `SignImage`): the reference and the digest.
pub fn cosign_payload(reference: &str, digest: &Digest) -> Vec<u8> {
    to_json(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
}

pub(super) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("installer JSON serialises")
}

/// An OCI descriptor, fields in go-containerregistry's order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    pub(super) media_type: String,
    pub(super) size: u64,
    pub(super) digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) annotations: Option<std::collections::BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) platform: Option<Platform>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) artifact_type: Option<String>,
}

impl Descriptor {
    pub(super) fn plain(media_type: &str, size: u64, digest: &Digest) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            size,
            digest: digest.to_string(),
            annotations: None,
            platform: None,
            artifact_type: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Platform {
    pub(super) architecture: String,
    pub(super) os: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Index {
    pub(super) schema_version: u32,
    pub(super) media_type: &'static str,
    pub(super) manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ImageManifest {
    pub(super) schema_version: u32,
    pub(super) media_type: &'static str,
    pub(super) config: Descriptor,
    pub(super) layers: Vec<Descriptor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) subject: Option<Descriptor>,
}

#[derive(Serialize)]
pub(super) struct ImageConfig {
    pub(super) architecture: &'static str,
    pub(super) created: &'static str,
    pub(super) os: &'static str,
    pub(super) rootfs: RootFs,
    pub(super) config: serde_json::Value,
}

#[derive(Serialize)]
pub(super) struct RootFs {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) diff_ids: Vec<String>,
}
