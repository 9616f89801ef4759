//! Manifests and indexes as received from a registry or a bundle
//! ([`parse_manifest`](crate::oci::manifest::parse_manifest)).
//!
//! Input: one selector byte for the transport's `Content-Type` (none, each manifest type, a
//! type with parameters, a foreign type), then the body. Properties: no panic; an accepted
//! manifest has a manifest media type, the shape of its kind (an index lists manifests and has
//! no config or layers; an image has a config and no child manifests), the body's own
//! `mediaType` when it has one; every descriptor survives a JSON round trip and its digest a
//! text round trip; platform lookups do not panic.

use crate::oci::manifest::{Descriptor, ManifestKind, media, parse_manifest};
use crate::store::Digest;

const HINTS: [Option<&str>; 7] = [
    None,
    Some(media::OCI_MANIFEST),
    Some(media::OCI_INDEX),
    Some(media::DOCKER_MANIFEST),
    Some(media::DOCKER_LIST),
    Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
    Some("application/json"),
];

/// Checks one (selector, body) input.
pub fn check(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let hint = HINTS[usize::from(selector) % HINTS.len()];
    let Ok(m) = parse_manifest(body, hint) else {
        return;
    };
    assert!(media::is_manifest(&m.media_type), "{}", m.media_type);
    match m.kind {
        ManifestKind::Index => {
            assert!(media::is_index(&m.media_type));
            assert!(m.config.is_none() && m.layers.is_empty());
        }
        ManifestKind::Image => {
            assert!(!media::is_index(&m.media_type));
            assert!(m.config.is_some() && m.manifests.is_empty());
        }
    }
    // serde_json skips ignored fields without validating their escapes (a lone surrogate such
    // as `"\udc00"` in an unknown field is accepted, as Go's decoder does with U+FFFD), so a
    // strict re-parse of the whole body may fail; compare when it does not.
    if let Ok(raw) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(mt) = raw.get("mediaType").and_then(|v| v.as_str())
    {
        assert_eq!(m.media_type, mt, "the body's mediaType wins");
    }
    let count = m.config.iter().count() + m.layers.len() + m.manifests.len();
    assert_eq!(m.children().count(), count);
    for d in m.children().chain(m.subject.iter()) {
        check_descriptor(d);
    }
    for (os, arch) in [("linux", "amd64"), ("linux", "arm64"), ("", "")] {
        if let Some(d) = m.platform_child(os, arch) {
            let p = d.platform.as_ref().expect("matched on platform");
            assert!(p.os == os && p.architecture == arch);
        }
    }
}

fn check_descriptor(d: &Descriptor) {
    let json = serde_json::to_vec(d).expect("descriptor serialises");
    let again: Descriptor = serde_json::from_slice(&json).expect("descriptor parses back");
    assert_eq!(&again, d, "descriptor JSON round trip");
    let text = d.digest.to_string();
    assert_eq!(
        text.parse::<Digest>().ok(),
        Some(d.digest),
        "digest round trip"
    );
}
