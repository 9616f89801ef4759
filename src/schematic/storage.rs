//! Persisting schematics in the store: the canonical YAML is a blob (whose digest *is* the
//! schematic ID) and a named reference `schematic/<id>` keeps it alive and listable.

use std::path::{Path, PathBuf};

use super::{Schematic, SchematicId, parse};
use crate::store::{Digest, Store, StoreError};

/// The reference kind under which schematics are recorded.
const REF_KIND: &str = "schematic";

/// Schematics kept in the content-addressed store.
#[derive(Clone)]
pub struct SchematicStore {
    store: Store,
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

impl SchematicStore {
    /// Wraps the store.
    pub fn new(store: Store) -> SchematicStore {
        SchematicStore { store }
    }

    /// Stores a schematic; returns its ID and whether it was new. Idempotent.
    pub async fn put(&self, schematic: &Schematic) -> Result<(SchematicId, bool), StoreError> {
        let canonical = schematic.canonical_yaml();
        let id = super::id_of_canonical(canonical.as_bytes());
        if self.store.get_ref(REF_KIND, id.as_str())?.is_some() {
            return Ok((id, false));
        }
        let digest = self.store.put_bytes(canonical.as_bytes()).await?;
        debug_assert_eq!(digest.hex(), id.as_str());
        let previous = self.store.set_ref(REF_KIND, id.as_str(), &digest)?;
        Ok((id, previous.is_none()))
    }

    /// Loads a schematic by ID; `None` if unknown (or its blob is missing or corrupt, which the
    /// store reports in its log).
    pub async fn get(&self, id: &SchematicId) -> Result<Option<StoredSchematic>, StoreError> {
        let Some(digest) = self.store.get_ref(REF_KIND, id.as_str())? else {
            return Ok(None);
        };
        let bytes = match self.store.read_bytes(&digest).await {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) | Err(StoreError::Corrupt { .. }) => {
                self.store.delete_ref(REF_KIND, id.as_str())?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let canonical = String::from_utf8(bytes).map_err(|_| corrupt(&digest))?;
        // Stored bytes are canonical; re-parsing gives the model and double-checks the ID.
        let schematic = parse(canonical.as_bytes()).map_err(|_| corrupt(&digest))?;
        Ok(Some(StoredSchematic {
            id: id.clone(),
            schematic,
            canonical,
        }))
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
                        .map_err(|e| e.to_string()),
                },
            };
            loaded.push(LoadedFile { path, result });
        }
        Ok(loaded)
    }
}

fn corrupt(digest: &Digest) -> StoreError {
    StoreError::Corrupt {
        digest: *digest,
        actual: *digest,
    }
}
