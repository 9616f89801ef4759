//! Errors of the content-addressed store.

use std::io;
use std::path::{Path, PathBuf};

use super::digest::{Digest, ParseDigestError};

/// Everything that can go wrong in the [`Store`](super::Store).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No blob with this digest is stored (or its file has disappeared).
    #[error("blob {0} not found")]
    NotFound(Digest),

    /// The blob's content on disk no longer matches its digest. It has been
    /// moved to quarantine and will not be served.
    #[error("blob {digest} is corrupt (content hashes to {actual}); quarantined")]
    Corrupt {
        /// The digest the blob was stored under.
        digest: Digest,
        /// The digest of what was actually found on disk.
        actual: Digest,
    },

    /// Written content did not hash to the digest the caller expected;
    /// nothing was stored.
    #[error("digest mismatch: expected {expected}, content hashes to {actual}")]
    DigestMismatch {
        /// The digest the caller announced.
        expected: Digest,
        /// The digest of the content actually received.
        actual: Digest,
    },

    /// A malformed digest string.
    #[error(transparent)]
    InvalidDigest(#[from] ParseDigestError),

    /// A ref kind or key failed validation.
    #[error("invalid ref: {0}")]
    InvalidRef(String),

    /// The filesystem holding the data directory is full (`ENOSPC`) or the
    /// user's quota on it is exhausted (`EDQUOT`). Nothing was stored: the
    /// partial temp file has been removed, and the same write succeeds once
    /// space is freed.
    #[error("no space left on {path}")]
    NoSpace {
        /// The store's data directory (the filesystem to free space on).
        path: PathBuf,
        /// The failed operation (`write temp file <path>: …`).
        #[source]
        source: io::Error,
    },

    /// A store quota ([`Quota`](super::Quota)) would be exceeded: nothing new is stored.
    #[error("no space left on {path}: store quota reached ({detail})")]
    QuotaReached {
        /// The store's data directory.
        path: PathBuf,
        /// Which limit, with the figures.
        detail: String,
    },

    /// A filesystem operation failed. The I/O error is shown, not exposed as a source: it is
    /// the root cause, and the text (which callers and clients see) names it.
    #[error("store i/o error: {0}")]
    Io(io::Error),

    /// Another process holds the index's exclusive lock (a running `bootfactory serve`, or a
    /// command that opened the data directory itself).
    #[error("the store's index {path} is locked by another process")]
    Locked {
        /// The index directory.
        path: PathBuf,
    },

    /// The sled database failed (shown, not exposed, like `Io`).
    #[error("store database error: {0}")]
    Db(sled::Error),

    /// An index record could not be decoded.
    #[error("store index is damaged: {0}")]
    Index(String),

    /// The index does not belong to the blobs beside it (deleted, recreated or replaced):
    /// opening it would silently forget every schematic and image.
    #[error(
        "{0}; refusing to start with an index that would forget them. Run `bootfactory store verify --rebuild-index` (with the server stopped) to re-index the blobs and recover what their content allows"
    )]
    IndexProblem(super::identity::IndexProblem),

    /// The [`Store`](super::Store) a [`BlobWriter`](super::BlobWriter) belongs
    /// to has been dropped.
    #[error("the store has been closed")]
    Closed,
}

/// Convenience alias used throughout the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Whether the blob is gone: never stored, its file disappeared, or its content no longer
    /// matches its digest (quarantined). A caller that can rebuild it treats it as missing.
    pub fn is_lost(&self) -> bool {
        matches!(self, StoreError::NotFound(_) | StoreError::Corrupt { .. })
    }

    /// Whether this is [`StoreError::NoSpace`] (callers map it to "insufficient storage"
    /// rather than to an internal error or to a problem with the input).
    pub fn is_no_space(&self) -> bool {
        matches!(
            self,
            StoreError::NoSpace { .. } | StoreError::QuotaReached { .. }
        )
    }

    /// Classifies an I/O error from writing under the data directory `dir`:
    /// [`StoreError::NoSpace`] for a full filesystem or exhausted quota (see
    /// [`is_no_space`]), [`StoreError::Io`] with the operation and path otherwise.
    pub fn from_write(dir: &Path, op: &str, path: &Path, e: io::Error) -> StoreError {
        if is_no_space(&e) {
            StoreError::NoSpace {
                path: dir.to_path_buf(),
                source: io::Error::new(e.kind(), format!("{op} {}: {e}", path.display())),
            }
        } else {
            io_ctx(op, path, e)
        }
    }
}

/// Whether an I/O error means the filesystem is full (`ENOSPC`) or the quota is exhausted
/// (`EDQUOT`).
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EDQUOT
    )
}

/// Whether `e` or any error in its source chain is a [`StoreError::NoSpace`] or an I/O error
/// for which [`is_no_space`] holds — for callers whose errors wrap store or file-system errors.
pub fn caused_by_no_space(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<StoreError>()
            .is_some_and(StoreError::is_no_space)
            || c.downcast_ref::<io::Error>().is_some_and(is_no_space)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Adds the operation and path to an I/O error, keeping its kind.
pub(crate) fn io_ctx(op: &str, path: &Path, e: io::Error) -> StoreError {
    StoreError::Io(io::Error::new(
        e.kind(),
        format!("{op} {}: {e}", path.display()),
    ))
}

/// Maps a failed `spawn_blocking` join into an I/O error.
pub(crate) fn join_err(e: tokio::task::JoinError) -> StoreError {
    StoreError::Io(io::Error::other(format!("store worker task failed: {e}")))
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        StoreError::Io(e)
    }
}

impl StoreError {
    /// The failure is a refused permission (`EACCES`/`EPERM`) on the data directory.
    pub fn is_permission_denied(&self) -> bool {
        match self {
            StoreError::Io(e) => e.kind() == io::ErrorKind::PermissionDenied,
            StoreError::Db(sled::Error::Io(e)) => e.kind() == io::ErrorKind::PermissionDenied,
            _ => false,
        }
    }
}

/// A failed `sled::open` of `path`: its exclusive lock held elsewhere is [`StoreError::Locked`]
/// (sled reports it only as an `Other` I/O error with this text).
pub(crate) fn open_db_error(path: &Path, e: sled::Error) -> StoreError {
    match &e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked {
                path: path.to_path_buf(),
            }
        }
        _ => StoreError::Db(e),
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Db(e)
    }
}
