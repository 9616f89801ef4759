//! Persisting schematics in the store: the canonical YAML is a blob (whose digest *is* the
//! schematic ID) and a named reference `schematic/<id>` keeps it alive and listable.
//!
//! Invariants:
//! - Only canonical YAML that reads back as the same schematic with the same bytes is ever
//!   stored ([`Schematic::checked_canonical`] gates [`SchematicStore::put`]).
//! - Reads never depend on re-validating what was stored: `GET /schematics/{id}` serves the
//!   stored bytes as they are (the store checks them against their digest), and the decoded
//!   model is kept in a byte-bounded in-memory cache filled by `put` and by the first read, so
//!   the canonical YAML is decoded at most once per process for each schematic in the cache.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{MAX_CANONICAL_BYTES, Schematic, SchematicError, SchematicId, decode, parse};
use crate::store::{Store, StoreError};

/// The reference kind under which schematics are recorded.
const REF_KIND: &str = "schematic";

/// How many bytes of decoded schematics (counted as twice their canonical size) the read
/// cache keeps before it forgets the oldest.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Why a schematic could not be stored or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SchematicStoreError {
    /// The schematic was refused before anything was stored (a client error).
    #[error(transparent)]
    Invalid(#[from] SchematicError),
    /// The stored canonical YAML is intact (it hashes to its ID) but does not decode back to
    /// the schematic it was made from. Only a version older than the round-trip check could
    /// have stored it; the bytes are still served by `GET /schematics/{id}`.
    #[error(
        "stored schematic {id} cannot be used: its canonical YAML is intact but does not \
         read back as a schematic ({reason}); it was stored by a version without the \
         round-trip check"
    )]
    Unreadable {
        /// The schematic.
        id: SchematicId,
        /// What went wrong decoding it.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Schematics kept in the content-addressed store.
#[derive(Clone)]
pub struct SchematicStore {
    store: Store,
    cache: Arc<Mutex<Cache>>,
}

/// A stored schematic with its canonical bytes.
#[derive(Debug, Clone)]
pub struct StoredSchematic {
    /// The ID.
    pub id: SchematicId,
    /// The decoded schematic.
    pub schematic: Schematic,
    /// The canonical YAML (what `GET /schematics/{id}` returns).
    pub canonical: String,
}

/// The outcome of loading one file from a schematics directory.
#[derive(Debug)]
pub struct LoadedFile {
    /// The file.
    pub path: PathBuf,
    /// Its ID, or why it was skipped.
    pub result: Result<SchematicId, String>,
}

/// Decoded schematics, bounded in bytes, oldest forgotten first.
#[derive(Default)]
struct Cache {
    entries: HashMap<SchematicId, Arc<StoredSchematic>>,
    order: VecDeque<SchematicId>,
    bytes: usize,
}

impl Cache {
    fn cost(s: &StoredSchematic) -> usize {
        2 * s.canonical.len() + 256
    }

    fn get(&self, id: &SchematicId) -> Option<Arc<StoredSchematic>> {
        self.entries.get(id).cloned()
    }

    fn insert(&mut self, stored: StoredSchematic) {
        if self.entries.contains_key(&stored.id) {
            return;
        }
        let cost = Self::cost(&stored);
        if cost > CACHE_BYTES {
            return;
        }
        while self.bytes + cost > CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(evicted) = self.entries.remove(&old) {
                self.bytes -= Self::cost(&evicted);
            }
        }
        self.bytes += cost;
        self.order.push_back(stored.id.clone());
        self.entries.insert(stored.id.clone(), Arc::new(stored));
    }
}

impl SchematicStore {
    /// Wraps the store.
    pub fn new(store: Store) -> SchematicStore {
        SchematicStore {
            store,
            cache: Arc::default(),
        }
    }

    /// Stores a schematic; returns its ID and whether it was new. Idempotent.
    ///
    /// Refuses ([`SchematicStoreError::Invalid`]) a schematic whose canonical YAML is too
    /// large or does not read back as the same schematic: nothing is stored then.
    pub async fn put(
        &self,
        schematic: &Schematic,
    ) -> Result<(SchematicId, bool), SchematicStoreError> {
        let (canonical, read_back) = schematic.checked()?;
        let id = super::id_of_canonical(canonical.as_bytes());
        let created = if self.store.get_ref(REF_KIND, id.as_str())?.is_some() {
            false
        } else {
            let digest = self.store.put_bytes(canonical.as_bytes()).await?;
            debug_assert_eq!(digest.hex(), id.as_str());
            let created = self
                .store
                .set_ref(REF_KIND, id.as_str(), &digest)?
                .is_none();
            // Durable before the ID is handed out: sled writes the index in the background,
            // and a schematic a client was given must survive a crash right after (every
            // asset URL, installer and assignment names it; nothing can rebuild it).
            self.store.flush().await?;
            created
        };
        self.cache_insert(StoredSchematic {
            id: id.clone(),
            schematic: read_back,
            canonical,
        });
        Ok((id, created))
    }

    /// The stored canonical YAML, served as it is (no decoding): `None` if unknown (or its
    /// blob is missing or corrupt, which the store reports in its log and quarantines).
    pub async fn get_canonical(
        &self,
        id: &SchematicId,
    ) -> Result<Option<String>, SchematicStoreError> {
        if let Some(hit) = self.cached(id) {
            return Ok(Some(hit.canonical.clone()));
        }
        self.read_canonical(id).await
    }

    /// Loads a schematic by ID; `None` if unknown (or its blob is missing or corrupt, which the
    /// store reports in its log). Decodes the stored bytes at most once while they are cached.
    pub async fn get(
        &self,
        id: &SchematicId,
    ) -> Result<Option<StoredSchematic>, SchematicStoreError> {
        if let Some(hit) = self.cached(id) {
            return Ok(Some((*hit).clone()));
        }
        let Some(canonical) = self.read_canonical(id).await? else {
            return Ok(None);
        };
        let unreadable = |reason: String| SchematicStoreError::Unreadable {
            id: id.clone(),
            reason,
        };
        // The bytes hash to the ID, so they are what was stored; decoding them cannot fail for
        // anything `put` accepted. The check below only catches what older versions stored.
        let schematic = decode(canonical.as_bytes()).map_err(|e| unreadable(e.to_string()))?;
        if schematic.canonical_yaml() != canonical {
            return Err(unreadable(
                "it decodes to a schematic with different canonical bytes".to_string(),
            ));
        }
        let stored = StoredSchematic {
            id: id.clone(),
            schematic,
            canonical,
        };
        self.cache_insert(stored.clone());
        Ok(Some(stored))
    }

    /// Reads the canonical bytes of a stored schematic; refuses (without reading) one larger
    /// than [`MAX_CANONICAL_BYTES`], which only an older version could have stored.
    async fn read_canonical(
        &self,
        id: &SchematicId,
    ) -> Result<Option<String>, SchematicStoreError> {
        let Some(digest) = self.store.get_ref(REF_KIND, id.as_str())? else {
            return Ok(None);
        };
        if let Some(info) = self.store.stat(&digest)
            && info.size > MAX_CANONICAL_BYTES as u64
        {
            return Err(SchematicStoreError::Unreadable {
                id: id.clone(),
                reason: format!(
                    "{} bytes, more than the {MAX_CANONICAL_BYTES}-byte limit",
                    info.size
                ),
            });
        }
        let bytes = match self.store.read_bytes(&digest).await {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) | Err(StoreError::Corrupt { .. }) => {
                self.store.delete_ref(REF_KIND, id.as_str())?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        // Canonical YAML is emitted from Rust strings and the store checked the digest.
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| SchematicStoreError::Unreadable {
                id: id.clone(),
                reason: "not UTF-8 text".to_string(),
            })
    }

    fn cached(&self, id: &SchematicId) -> Option<Arc<StoredSchematic>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(id)
    }

    fn cache_insert(&self, stored: StoredSchematic) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(stored);
    }

    /// After the store's index was rebuilt from its blob files: re-creates the ref of every
    /// blob that is a canonical schematic (its digest is its ID, and parsing it gives back the
    /// same bytes). Returns how many refs were recovered.
    pub async fn recover_refs(&self) -> Result<usize, StoreError> {
        let mut recovered = 0;
        for info in self.store.list_blobs()? {
            if info.size > super::MAX_SCHEMATIC_BYTES as u64 {
                continue;
            }
            let bytes = self.store.read_bytes(&info.digest).await?;
            let Ok(schematic) = parse(&bytes) else {
                continue;
            };
            if schematic.canonical_yaml().as_bytes() != bytes.as_slice() {
                continue;
            }
            let id = info.digest.hex();
            if self.store.get_ref(REF_KIND, &id)?.is_none() {
                self.store.set_ref(REF_KIND, &id, &info.digest)?;
                recovered += 1;
            }
        }
        Ok(recovered)
    }

    /// True if the schematic is known.
    pub fn contains(&self, id: &SchematicId) -> bool {
        matches!(self.store.get_ref(REF_KIND, id.as_str()), Ok(Some(_)))
    }

    /// IDs of all stored schematics, sorted.
    pub fn list(&self) -> Result<Vec<SchematicId>, StoreError> {
        Ok(self
            .store
            .list_refs(REF_KIND)?
            .into_iter()
            .filter_map(|(key, _)| key.parse().ok())
            .collect())
    }

    /// Validates and stores every `*.yaml`/`*.yml`/`*.json` file in `dir` (sorted by name).
    /// A bad file is reported and skipped; the others still load.
    pub async fn load_dir(&self, dir: &Path) -> std::io::Result<Vec<LoadedFile>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
            })
            .collect();
        paths.sort();
        let mut loaded = Vec::with_capacity(paths.len());
        for path in paths {
            let result = match std::fs::read(&path) {
                Err(e) => Err(format!("cannot read: {e}")),
                Ok(bytes) => match parse(&bytes) {
                    Err(e) => Err(e.to_string()),
                    Ok(s) => self
                        .put(&s)
                        .await
                        .map(|(id, _)| id)
                        .map_err(|e| crate::errors::chain(&e)),
                },
            };
            loaded.push(LoadedFile { path, result });
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(n: usize, size: usize) -> StoredSchematic {
        StoredSchematic {
            id: SchematicId(format!("{n:064x}")),
            schematic: Schematic::default(),
            canonical: "x".repeat(size),
        }
    }

    #[test]
    fn cache_is_bounded_in_bytes_and_forgets_the_oldest() {
        let mut cache = Cache::default();
        let size = CACHE_BYTES / 8;
        for n in 0..10 {
            cache.insert(stored(n, size));
            assert!(cache.bytes <= CACHE_BYTES);
        }
        assert!(cache.get(&stored(0, 0).id).is_none());
        assert!(cache.get(&stored(9, 0).id).is_some());
        assert_eq!(cache.entries.len(), cache.order.len());
        // Too large to cache at all: not kept, nothing evicted for it.
        let before = cache.entries.len();
        cache.insert(stored(99, CACHE_BYTES));
        assert!(cache.get(&stored(99, 0).id).is_none());
        assert_eq!(cache.entries.len(), before);
    }
}
