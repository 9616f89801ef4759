//! talosctl downloads (`GET /talosctl/{version}`, `GET|HEAD /talosctl/{version}/{path}`): the
//! files of the `talosctl-all` image of a Talos version, listed as absolute URLs and served
//! from the flattened image (`docs/image-factory-api.md` §talosctl downloads). The HTTP layer
//! only maps a [`TalosctlFile`] or the list to a response.
//!
//! File names come from strangers and the tree from an imported image: a name is served only
//! if it is a plain name ([`check_file_name`]) naming a regular file directly at the image's
//! root, resolved through `crate::contained` (a symlink never leads out of the tree).

use std::path::Path;

use super::service::{Factory, FactoryError};
use crate::gocompat::mime;
use crate::gocompat::strconv::quote;
use crate::version::TalosVersion;

/// The longest file name accepted (bytes), a file system's usual name limit.
pub const MAX_FILE_NAME: usize = 255;

/// The content type of a file Go's built-in table has no type for (`.exe`, no extension).
const OCTET_STREAM: &str = "application/octet-stream";

/// A file of a `talosctl-all` image, open.
#[derive(Debug)]
pub struct TalosctlFile {
    /// The file, opened inside the flattened image.
    pub file: tokio::fs::File,
    /// Its size.
    pub size: u64,
    /// `Content-Type`: Go's `mime.TypeByExtension` built-in table, else
    /// `application/octet-stream`.
    pub content_type: &'static str,
    /// The name, for `Content-Disposition` (a plain name, see [`check_file_name`]).
    pub name: String,
    /// Entity tag: the image manifest's hex digest and the name (the content is fixed by both).
    pub etag: String,
}

/// A plain file name: 1 to [`MAX_FILE_NAME`] bytes of ASCII letters, digits, `.`, `_`, `+`
/// and `-`, not `.` or `..`. Everything a `talosctl-all` image holds fits; `/`, `\`, NUL,
/// control characters, spaces, quotes and `%` cannot appear.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILE_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

/// Image Factory's rule for the names it lists: `talosctl-<os>-<arch>` with an optional `.exe`,
/// where `<os>` and `<arch>` hold no `-`. Upstream fails the whole list on a `talosctl-*` name of
/// another shape; here such a name is just not listed. Empty parts and names that are not
/// [`is_plain_name`] are not listed either.
pub fn is_download_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("talosctl-") else {
        return false;
    };
    let rest = rest.strip_suffix(".exe").unwrap_or(rest);
    let mut parts = rest.split('-');
    is_plain_name(name)
        && matches!(
            (parts.next(), parts.next(), parts.next()),
            (Some(os), Some(arch), None) if !os.is_empty() && !arch.is_empty()
        )
}

/// 400 for a name that is not [`is_plain_name`]; the text quotes at most 64 characters of it.
pub fn check_file_name(name: &str) -> Result<(), FactoryError> {
    if is_plain_name(name) {
        Ok(())
    } else {
        let shown: String = name.chars().take(64).collect();
        Err(FactoryError::BadFileName(format!(
            "invalid talosctl file name {}",
            quote(&shown)
        )))
    }
}

/// The 404 text for a file the image does not hold: upstream's `os.Stat` error, with the
/// directory upstream extracts the image into (`talosctl-all-<v>`) but no host path.
fn no_such_file(version: &TalosVersion, name: &str) -> FactoryError {
    FactoryError::FileNotFound(format!(
        "stat talosctl-all-{version}/{name}: no such file or directory"
    ))
}

/// The `Content-Type` of a served file: Go's `mime.TypeByExtension(filepath.Ext(name))` when
/// that knows the extension, else `application/octet-stream` (upstream sends an empty type for
/// `.exe` and lets Go sniff names without an extension: binaries sniff as octet-stream).
pub fn content_type(name: &str) -> &'static str {
    mime::type_by_extension(mime::ext(name)).unwrap_or(OCTET_STREAM)
}

impl Factory {
    /// `GET /talosctl/{version}`: the download URLs (`<external_url>/talosctl/<vX.Y.Z>/<name>`),
    /// sorted; empty below 1.11.0-alpha.3. Version syntax (400), then served (404), as the
    /// other version routes.
    pub async fn talosctl_downloads(
        &self,
        version: &str,
        external_url: &str,
    ) -> Result<Vec<String>, FactoryError> {
        let version = self.served_version(version).await?;
        if !version.supports_talosctl_downloads() {
            return Ok(Vec::new());
        }
        let artifacts = self.artifacts();
        let tree = artifacts.talosctl_tree(&version).await?;
        let names = artifacts.talosctl_files(&tree).await?;
        let base = external_url.trim_end_matches('/');
        Ok(names
            .iter()
            .map(|name| format!("{base}/talosctl/{version}/{name}"))
            .collect())
    }

    /// `GET|HEAD /talosctl/{version}/{path}`: version syntax (400), file name (400), version
    /// served (404), then the file (404 with upstream's `stat` text when the image has no
    /// regular file of that name at its root; versions without talosctl downloads have none
    /// and no image is fetched for them).
    pub async fn talosctl_file(
        &self,
        version: &str,
        name: &str,
    ) -> Result<TalosctlFile, FactoryError> {
        super::service::parse_version(version)?;
        check_file_name(name)?;
        let version = self.served_version(version).await?;
        if !version.supports_talosctl_downloads() {
            return Err(no_such_file(&version, name));
        }
        let tree = self.artifacts().talosctl_tree(&version).await?;
        let opened = {
            let root = tree.root.clone();
            let name = name.to_string();
            tokio::task::spawn_blocking(move || {
                let (file, _) = crate::contained::open_file(&root, Path::new(&name))?;
                let size = file.metadata()?.len();
                Ok::<_, std::io::Error>((file, size))
            })
            .await
            .map_err(|e| {
                FactoryError::Internal(crate::errors::context("opening a talosctl file", e))
            })?
        };
        // Missing, a directory, a link leading nowhere, out of the tree or looping: not there.
        let Ok((file, size)) = opened else {
            return Err(no_such_file(&version, name));
        };
        Ok(TalosctlFile {
            file: tokio::fs::File::from_std(file),
            size,
            content_type: content_type(name),
            name: name.to_string(),
            etag: format!("{}-{name}", tree.manifest.hex()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_only() {
        for ok in [
            "talosctl-linux-amd64",
            "talosctl-windows-arm64.exe",
            "a",
            "...",
            "x+y_z",
        ] {
            assert!(is_plain_name(ok), "{ok}");
        }
        let long = "a".repeat(MAX_FILE_NAME + 1);
        for bad in [
            "", ".", "..", "../x", "a/b", "a\\b", "a\0b", "a\nb", "a b", "a\"b", "a%2fb", "tä",
            &long,
        ] {
            assert!(!is_plain_name(bad), "{bad:?}");
            assert!(matches!(
                check_file_name(bad),
                Err(FactoryError::BadFileName(_))
            ));
        }
        assert!(is_plain_name(&"a".repeat(MAX_FILE_NAME)));
        let Err(FactoryError::BadFileName(text)) = check_file_name(&"é".repeat(100)) else {
            panic!("refused");
        };
        assert_eq!(
            text,
            format!("invalid talosctl file name \"{}\"", "é".repeat(64))
        );
    }

    #[test]
    fn download_names_as_upstream_splits_them() {
        for ok in [
            "talosctl-linux-amd64",
            "talosctl-linux-armv7",
            "talosctl-windows-amd64.exe",
            "talosctl-darwin-arm64",
        ] {
            assert!(is_download_name(ok), "{ok}");
        }
        // Upstream cuts one `.exe` and splits the rest: this one is `linux` / `amd64.exe`.
        assert!(is_download_name("talosctl-linux-amd64.exe.exe"));
        for bad in [
            "talosctl",
            "talosctl-",
            "talosctl-linux",
            "talosctl-linux-",
            "talosctl--amd64",
            "talosctl-linux-amd64-v2",
            "kubectl-linux-amd64",
            "talosctl-linux-am d64",
            "LICENSE",
        ] {
            assert!(!is_download_name(bad), "{bad}");
        }
    }

    #[test]
    fn content_types_from_gos_builtin_table() {
        assert_eq!(content_type("talosctl-windows-amd64.exe"), OCTET_STREAM);
        assert_eq!(content_type("talosctl-linux-amd64"), OCTET_STREAM);
        assert_eq!(content_type("sbom.json"), "application/json");
        assert_eq!(content_type("README.HTML"), "text/html; charset=utf-8");
    }
}
