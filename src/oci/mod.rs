//! OCI data model: references, media types, manifests, the local image catalog, layouts, and
//! offline bundles (`bundle`: OCI layouts imported into and exported from the catalog).

pub mod bundle;
pub(crate) mod catalog;
pub mod flatten;
#[cfg(feature = "testkit")]
pub mod layout;
pub(crate) mod manifest;
pub(crate) mod reference;

pub use catalog::{CatalogEntry, CatalogError, ImageCatalog, ManifestRecord};
pub use manifest::{
    Descriptor, Manifest, ManifestError, ManifestKind, Platform, media, parse_manifest,
};
pub use reference::{ImageName, ImageRef, RefError, TagOrDigest};
