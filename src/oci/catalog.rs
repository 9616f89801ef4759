//! The local image catalog: which manifests the store holds, under which names and tags.
//!
//! Manifests and blobs are ordinary store blobs. The catalog adds:
//! - store refs `oci-tag/<registry>/<repo>:<tag>` and `oci-digest/<registry>/<repo>@<digest>`
//!   (what keeps an image alive through GC, and what makes a repository "exist");
//! - store children (manifest → config, layers, child manifests) so GC keeps whole images;
//! - a sled tree `oci/manifests` (digest → media type, size) so manifests are served with the
//!   type they arrived with;
//! - a sled tree `oci/tag-checked` (tag key → unix time the upstream was last asked), for the
//!   mirror's tag TTL.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use super::manifest::{Manifest, ManifestError, parse_manifest};
use super::reference::ImageName;
use crate::store::{Digest, Store, StoreError};

/// The store ref kind of tags (`<registry>/<repo>:<tag>`).
pub const TAG_KIND: &str = "oci-tag";
/// The store ref kind of manifests known by digest (`<registry>/<repo>@<digest>`).
pub const DIGEST_KIND: &str = "oci-digest";

/// What the catalog knows about a stored manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    /// The media type it is served with.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A catalog failure.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bytes are not a storable manifest.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The index database failed (shown, not exposed as a source: it is the root cause).
    #[error("catalog index: {0}")]
    Db(sled::Error),
}

impl From<sled::Error> for CatalogError {
    fn from(e: sled::Error) -> Self {
        CatalogError::Db(e)
    }
}

/// One named image in the catalog (for listings).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// `registry/repository:tag` or `registry/repository@digest`.
    pub reference: String,
    /// The manifest (or index) digest.
    pub digest: Digest,
    /// The manifest's media type.
    pub media_type: String,
    /// Bytes of every blob in the image that is present in the store.
    pub stored_bytes: u64,
    /// Blobs of the image that are missing from the store (a partial pull).
    pub missing_blobs: usize,
}

/// The catalog over a [`Store`].
#[derive(Clone)]
pub struct ImageCatalog {
    store: Store,
    manifests: sled::Tree,
    tag_checked: sled::Tree,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn tag_key(name: &ImageName, tag: &str) -> String {
    format!("{name}:{tag}")
}

fn digest_key(name: &ImageName, digest: &Digest) -> String {
    format!("{name}@{digest}")
}

impl ImageCatalog {
    /// Opens the catalog's trees in the store's database.
    pub fn new(store: Store) -> Result<ImageCatalog, CatalogError> {
        let manifests = store.db().open_tree("oci/manifests")?;
        let tag_checked = store.db().open_tree("oci/tag-checked")?;
        Ok(ImageCatalog {
            store,
            manifests,
            tag_checked,
        })
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stores manifest bytes for `name` (byte-exact), records its media type and children, and
    /// names it by digest so it survives GC. Returns the digest and the parsed manifest.
    pub async fn put_manifest(
        &self,
        name: &ImageName,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<(Digest, Manifest), CatalogError> {
        let manifest = parse_manifest(bytes, content_type)?;
        let digest = self.store.put_bytes(bytes).await?;
        self.record_manifest(name, &digest, &manifest, bytes.len() as u64)?;
        Ok((digest, manifest))
    }

    /// Records an already-stored manifest blob (e.g. imported from a layout).
    pub fn record_manifest(
        &self,
        name: &ImageName,
        digest: &Digest,
        manifest: &Manifest,
        size: u64,
    ) -> Result<(), CatalogError> {
        let record = ManifestRecord {
            media_type: manifest.media_type.clone(),
            size,
        };
        self.manifests.insert(
            digest.as_bytes(),
            serde_json::to_vec(&record).expect("record serialises"),
        )?;
        let children: Vec<Digest> = manifest.children().map(|d| d.digest).collect();
        self.store.set_children(digest, &children)?;
        self.store
            .set_ref(DIGEST_KIND, &digest_key(name, digest), digest)?;
        Ok(())
    }

    /// The record of a stored manifest, if the digest is a known manifest.
    pub fn manifest(&self, digest: &Digest) -> Option<ManifestRecord> {
        let raw = self.manifests.get(digest.as_bytes()).ok()??;
        serde_json::from_slice(&raw).ok()
    }

    /// Points `name:tag` at a stored manifest and marks the tag as just checked.
    pub fn set_tag(
        &self,
        name: &ImageName,
        tag: &str,
        digest: &Digest,
    ) -> Result<(), CatalogError> {
        let key = tag_key(name, tag);
        self.store.set_ref(TAG_KIND, &key, digest)?;
        self.tag_checked
            .insert(key.as_bytes(), &now_secs().to_be_bytes())?;
        Ok(())
    }

    /// The digest `name:tag` points at, and how many seconds ago the upstream confirmed it.
    pub fn tag(&self, name: &ImageName, tag: &str) -> Result<Option<(Digest, u64)>, CatalogError> {
        let key = tag_key(name, tag);
        let Some(digest) = self.store.get_ref(TAG_KIND, &key)? else {
            return Ok(None);
        };
        let checked = self
            .tag_checked
            .get(key.as_bytes())?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        Ok(Some((digest, now_secs().saturating_sub(checked))))
    }

    /// True if `digest` was recorded as a manifest of `name`.
    pub fn has_manifest_in(&self, name: &ImageName, digest: &Digest) -> Result<bool, CatalogError> {
        Ok(self
            .store
            .get_ref(DIGEST_KIND, &digest_key(name, digest))?
            .is_some())
    }

    /// Every manifest recorded for `name`.
    pub fn manifests_in(&self, name: &ImageName) -> Result<Vec<Digest>, CatalogError> {
        // `@` never occurs in a name, so the prefix holds this repository's refs only.
        Ok(self
            .store
            .list_refs_with_prefix(DIGEST_KIND, &format!("{name}@"))?
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    /// Tags of a repository, sorted.
    pub fn tags(&self, name: &ImageName) -> Result<Vec<String>, CatalogError> {
        let prefix = format!("{name}:");
        Ok(self
            .store
            .list_refs_with_prefix(TAG_KIND, &prefix)?
            .into_iter()
            .filter_map(|(k, _)| k.strip_prefix(&prefix).map(str::to_string))
            .filter(|t| !t.contains('/'))
            .collect())
    }

    /// True if the repository has any tag or any manifest recorded.
    pub fn has_repository(&self, name: &ImageName) -> Result<bool, CatalogError> {
        let tag_prefix = format!("{name}:");
        let digest_prefix = format!("{name}@");
        // A name followed by `:` can also start another name with a registry port
        // (`localhost` and `localhost:5000/x`): such keys have a `/` after the `:`.
        Ok(self
            .store
            .list_refs_with_prefix(TAG_KIND, &tag_prefix)?
            .iter()
            .any(|(k, _)| !k[tag_prefix.len()..].contains('/'))
            || !self
                .store
                .list_refs_with_prefix(DIGEST_KIND, &digest_prefix)?
                .is_empty())
    }

    /// Every blob (manifests included) reachable from `root`, each once, root first.
    pub fn closure(&self, root: &Digest) -> Result<Vec<Digest>, CatalogError> {
        let mut seen = HashSet::new();
        let mut order = Vec::new();
        let mut stack = vec![*root];
        while let Some(d) = stack.pop() {
            if !seen.insert(d) {
                continue;
            }
            order.push(d);
            let mut children = self.store.children(&d)?;
            children.reverse();
            stack.extend(children);
        }
        Ok(order)
    }

    /// Drops the catalog's own records that outlived what they describe: media types of
    /// manifests no longer stored and tag-check times of tags no longer set (after GC unnamed
    /// and swept them). Returns how many records went.
    pub fn forget_missing(&self) -> Result<usize, CatalogError> {
        let mut removed = 0;
        for kv in self.manifests.iter() {
            let (k, _) = kv?;
            let Ok(bytes) = <[u8; 32]>::try_from(k.as_ref()) else {
                continue;
            };
            if !self.store.contains(&Digest::from_bytes(bytes)) {
                self.manifests.remove(&k)?;
                removed += 1;
            }
        }
        for kv in self.tag_checked.iter() {
            let (k, _) = kv?;
            let Ok(key) = std::str::from_utf8(&k) else {
                continue;
            };
            if self.store.get_ref(TAG_KIND, key)?.is_none() {
                self.tag_checked.remove(&k)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// All tagged images, plus manifests known only by digest that no tag reaches.
    pub fn list(&self) -> Result<Vec<CatalogEntry>, CatalogError> {
        let mut out = Vec::new();
        let mut tagged_roots = BTreeSet::new();
        let tags: BTreeMap<String, Digest> = self.store.list_refs(TAG_KIND)?.into_iter().collect();
        for (reference, digest) in &tags {
            tagged_roots.insert(*digest);
            out.push(self.entry(reference.clone(), digest)?);
        }
        let mut reachable = HashSet::new();
        for root in &tagged_roots {
            reachable.extend(self.closure(root)?);
        }
        for (reference, digest) in self.store.list_refs(DIGEST_KIND)? {
            if !reachable.contains(&digest) {
                reachable.extend(self.closure(&digest)?);
                out.push(self.entry(reference, &digest)?);
            }
        }
        Ok(out)
    }

    fn entry(&self, reference: String, digest: &Digest) -> Result<CatalogEntry, CatalogError> {
        let mut stored_bytes = 0;
        let mut missing_blobs = 0;
        for d in self.closure(digest)? {
            match self.store.stat(&d) {
                Some(info) => stored_bytes += info.size,
                None => missing_blobs += 1,
            }
        }
        Ok(CatalogEntry {
            reference,
            digest: *digest,
            media_type: self
                .manifest(digest)
                .map(|r| r.media_type)
                .unwrap_or_default(),
            stored_bytes,
            missing_blobs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::manifest::media;

    async fn catalog() -> (tempfile::TempDir, ImageCatalog) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, ImageCatalog::new(store).unwrap())
    }

    fn image_manifest(config: &Digest, layer: &Digest) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{config}","size":2}},"layers":[{{"mediaType":"{}","digest":"{layer}","size":5}}]}}"#,
            media::OCI_MANIFEST,
            media::OCI_CONFIG,
            media::OCI_LAYER_GZIP
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn repository_lookups_are_range_scans_that_stop_at_the_name() {
        let (_dir, cat) = catalog().await;
        let store = cat.store().clone();
        let config = store.put_bytes(b"{}").await.unwrap();
        let layer = store.put_bytes(b"layer").await.unwrap();
        let bytes = image_manifest(&config, &layer);
        let names = [
            "localhost",
            "localhost:5000/x",
            "ghcr.io/a/b",
            "ghcr.io/a/bc",
        ];
        let mut digests = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let (registry, repo) = n.split_once('/').unwrap_or((n, "r"));
            let name = ImageName::new(registry, repo).unwrap();
            let mut m = bytes.clone();
            m.truncate(m.len() - 1);
            m.extend_from_slice(format!(",\"annotations\":{{\"i\":\"{i}\"}}}}").as_bytes());
            let (d, _) = cat.put_manifest(&name, &m, None).await.unwrap();
            cat.set_tag(&name, "v1", &d).unwrap();
            digests.push((name, d));
        }
        for (name, d) in &digests {
            assert_eq!(cat.manifests_in(name).unwrap(), vec![*d], "{name}");
            assert_eq!(cat.tags(name).unwrap(), vec!["v1".to_string()], "{name}");
            assert!(cat.has_repository(name).unwrap());
        }
        let absent = ImageName::new("ghcr.io", "a").unwrap();
        assert!(!cat.has_repository(&absent).unwrap());
        assert!(cat.manifests_in(&absent).unwrap().is_empty());
        assert!(
            store
                .list_refs_with_prefix(TAG_KIND, "a\0b")
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn tags_manifests_closure_and_gc_liveness() {
        let (_dir, cat) = catalog().await;
        let store = cat.store().clone();
        let config = store.put_bytes(b"{}").await.unwrap();
        let layer = store.put_bytes(b"layer").await.unwrap();
        let name = ImageName::new("ghcr.io", "siderolabs/test").unwrap();
        let (digest, m) = cat
            .put_manifest(&name, &image_manifest(&config, &layer), None)
            .await
            .unwrap();
        assert_eq!(m.media_type, media::OCI_MANIFEST);
        assert_eq!(
            cat.manifest(&digest).unwrap().media_type,
            media::OCI_MANIFEST
        );
        cat.set_tag(&name, "v1", &digest).unwrap();
        let (d, age) = cat.tag(&name, "v1").unwrap().unwrap();
        assert_eq!(d, digest);
        assert!(age < 5);
        assert_eq!(cat.tags(&name).unwrap(), vec!["v1".to_string()]);
        assert!(cat.has_repository(&name).unwrap());
        assert!(
            !cat.has_repository(&ImageName::new("ghcr.io", "siderolabs/other").unwrap())
                .unwrap()
        );
        assert_eq!(cat.closure(&digest).unwrap(), vec![digest, config, layer]);

        // GC keeps the whole image: it is reachable from its tag and its digest ref.
        let report = store.gc(std::time::Duration::ZERO).unwrap();
        assert_eq!(report.removed, 0);
        let list = cat.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].reference, "ghcr.io/siderolabs/test:v1");
        assert_eq!(list[0].missing_blobs, 0);
        assert!(list[0].stored_bytes > 7);
    }
}
