//! Image references (`[registry/]repository[:tag][@digest]`, CLI arguments and config) and the
//! reference segment of `/v2/<name>/manifests/<reference>`.
//!
//! Properties: no panic; an accepted reference has a valid registry host and a repository
//! whose components are non-empty lowercase names (never `.`/`..`, so a name cannot become a
//! path outside the store's namespace); printing it and parsing the text gives the same
//! reference; its target (tag or digest) round-trips through [`TagOrDigest`] as well.

use std::str::FromStr;

use crate::oci::reference::{
    ImageName, ImageRef, TagOrDigest, is_valid_registry, is_valid_repository, is_valid_tag,
};

/// Checks one reference string (and the same bytes as a manifest-request segment).
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = TagOrDigest::parse(text) {
        let shown = t.to_string();
        assert_eq!(shown, text, "a tag or digest is kept as written");
        assert_eq!(TagOrDigest::parse(&shown).ok(), Some(t));
    }
    let Ok(r) = ImageRef::from_str(text) else {
        return;
    };
    let registry = r.name.registry();
    let repository = r.name.repository();
    assert!(is_valid_registry(registry), "{registry:?}");
    assert!(!registry.contains('/'), "{registry:?}");
    assert!(is_valid_repository(repository), "{repository:?}");
    for component in repository.split('/') {
        assert!(
            !component.is_empty()
                && component != "."
                && component != ".."
                && component
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)),
            "repository component {component:?} of {text:?}"
        );
    }
    if let Some(tag) = &r.tag {
        assert!(is_valid_tag(tag));
    }
    assert_eq!(
        ImageName::new(registry, repository).as_ref(),
        Ok(&r.name),
        "the name validates on its own"
    );
    let shown = r.to_string();
    let again = ImageRef::from_str(&shown)
        .unwrap_or_else(|e| panic!("{text:?} prints as {shown:?}, which is refused: {e}"));
    assert_eq!(
        again, r,
        "{text:?} prints as {shown:?}, which parses differently"
    );
    let target = r.target();
    assert_eq!(TagOrDigest::parse(&target.to_string()).ok(), Some(target));
}
