//! OCI data model: references, media types, manifests, the local image catalog, layouts.

pub mod layout;
