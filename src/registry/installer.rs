//! The installer frontend: `/v2/<image>/<schematic>/manifests|blobs|referrers/<ref>`, the
//! Image Factory's registry routes for installer images. The factory builds and keeps the
//! images (`factory::installer`); this maps requests to it and its answers to the
//! distribution API (OCI error documents, `Docker-Content-Digest`, HEAD, Range on blobs).

use std::collections::HashMap;
use std::net::IpAddr;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;

use super::{
    RegistryError, RegistryState, Route, accepted_types, accepts, blob_headers, installer_repo,
};
use crate::factory::installer::InstallerManifest;
use crate::file_response::file_response;
use crate::file_response::sendfile::Jobs;
use crate::oci::{ManifestKind, parse_manifest};

/// Serves one installer route (`route` names an installer repository).
pub(super) async fn dispatch(
    state: &RegistryState,
    route: Route<'_>,
    method: &Method,
    headers: &HeaderMap,
    zero_copy: Option<&Jobs>,
    query: &HashMap<String, String>,
    client: Option<IpAddr>,
) -> Result<Response, RegistryError> {
    let factory = &state.factory;
    match route {
        Route::Manifest { repo, reference } => {
            let (image, schematic) = installer_repo(repo).expect("an installer route");
            let mut found = factory
                .installer_manifest(image, schematic, reference, client)
                .await
                .map_err(|e| RegistryError::from_factory(&e, "MANIFEST_UNKNOWN"))?;
            let accepted = accepted_types(headers);
            if !accepts(&accepted, &found.media_type) {
                // A client that takes image manifests only gets the linux/amd64 image, as
                // from the mirror.
                let child = parse_manifest(&found.bytes, Some(&found.media_type))
                    .ok()
                    .filter(|m| m.kind == ManifestKind::Index)
                    .and_then(|m| m.platform_child("linux", "amd64").map(|c| c.digest));
                match child {
                    Some(child) => {
                        found = factory
                            .installer_manifest(image, schematic, &child.to_string(), client)
                            .await
                            .map_err(|e| RegistryError::from_factory(&e, "MANIFEST_UNKNOWN"))?;
                    }
                    None => {
                        return Err(RegistryError::manifest_unknown(&format!(
                            "{} found, but the Accept header does not allow it (accepts: {})",
                            found.media_type,
                            accepted.join(", ")
                        )));
                    }
                }
            }
            Ok(manifest_response(method, headers, found, None))
        }
        Route::Blob { repo, digest } => {
            let (image, schematic) = installer_repo(repo).expect("an installer route");
            let blob = factory
                .installer_blob(image, schematic, digest)
                .await
                .map_err(|e| RegistryError::from_factory(&e, "BLOB_UNKNOWN"))?;
            let digest_text = blob.digest.to_string();
            let extra = blob_headers(&digest_text);
            file_response(
                method,
                headers,
                zero_copy,
                blob.file,
                blob.size,
                Some(&digest_text),
                extra,
            )
            .await
            .map_err(|e| RegistryError::internal(&e))
        }
        Route::Referrers { repo, digest } => {
            let (image, schematic) = installer_repo(repo).expect("an installer route");
            let artifact_type = query
                .get("artifactType")
                .map(String::as_str)
                .filter(|t| !t.is_empty());
            let index = factory
                .installer_referrers(image, schematic, digest, artifact_type)
                .await
                .map_err(|e| RegistryError::from_factory(&e, "MANIFEST_UNKNOWN"))?;
            let filtered = artifact_type.map(|_| "artifactType");
            Ok(manifest_response(method, headers, index, filtered))
        }
        Route::Tags { .. } | Route::Upload => unreachable!("not an installer route"),
    }
}

fn manifest_response(
    method: &Method,
    headers: &HeaderMap,
    found: InstallerManifest,
    filters_applied: Option<&str>,
) -> Response {
    let digest = found.digest.to_string();
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_matches('"') == digest)
    {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("valid response");
    }
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, &found.media_type)
        .header(header::CONTENT_LENGTH, found.bytes.len())
        .header("docker-content-digest", &digest)
        .header(header::ETAG, format!("\"{digest}\""));
    if let Some(f) = filters_applied {
        response = response.header("oci-filters-applied", f);
    }
    if method == Method::HEAD {
        return response.body(Body::empty()).expect("valid response");
    }
    response
        .body(Body::from(found.bytes))
        .expect("valid response")
}
