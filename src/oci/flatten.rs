//! Flattening an image: applying its layers in order (with OCI whiteouts) into a directory,
//! or reading single files out of it, straight from the store.
//!
//! Entry paths are sanitised: absolute paths, `..` components and writes through symlinks are
//! refused, so a hostile image cannot write outside the destination. Devices, FIFOs and sockets
//! are skipped; ownership is not applied (squashfs images are built `-all-root` anyway).

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use super::manifest::{ManifestKind, media, parse_manifest};
use super::{CatalogError, ImageCatalog};
use crate::store::Digest;

/// Why an image could not be flattened.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    /// A store or catalog failure.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The manifest is not a single-platform image.
    #[error("{0} is not an image manifest")]
    NotAnImage(Digest),
    /// A layer media type we cannot read.
    #[error("unsupported layer media type {0}")]
    UnsupportedLayer(String),
    /// Reading or writing failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: io::Error,
    },
    /// A tar entry tried to escape the destination.
    #[error("unsafe path {0:?} in layer")]
    UnsafePath(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> FlattenError {
    let context = context.into();
    move |source| FlattenError::Io { context, source }
}

/// A layer to apply: its file in the store and media type.
#[derive(Debug, Clone)]
pub struct LayerFile {
    /// The blob file.
    pub path: PathBuf,
    /// Its media type (decides decompression).
    pub media_type: String,
}

/// The layer files of an image manifest, bottom first.
pub async fn image_layers(
    catalog: &ImageCatalog,
    manifest: &Digest,
) -> Result<Vec<LayerFile>, FlattenError> {
    let store = catalog.store();
    let bytes = store
        .read_bytes(manifest)
        .await
        .map_err(CatalogError::from)?;
    let record = catalog.manifest(manifest);
    let m = parse_manifest(&bytes, record.as_ref().map(|r| r.media_type.as_str()))
        .map_err(CatalogError::from)?;
    if m.kind != ManifestKind::Image {
        return Err(FlattenError::NotAnImage(*manifest));
    }
    let mut layers = Vec::with_capacity(m.layers.len());
    for l in &m.layers {
        let path = store
            .blob_path(&l.digest)
            .await
            .map_err(CatalogError::from)?;
        layers.push(LayerFile {
            path,
            media_type: l.media_type.clone(),
        });
    }
    Ok(layers)
}

/// For an index, the manifest for `linux/<arch>`; for an image manifest, itself.
pub async fn platform_manifest(
    catalog: &ImageCatalog,
    root: &Digest,
    arch: &str,
) -> Result<Option<Digest>, FlattenError> {
    let bytes = catalog
        .store()
        .read_bytes(root)
        .await
        .map_err(CatalogError::from)?;
    let record = catalog.manifest(root);
    let m = parse_manifest(&bytes, record.as_ref().map(|r| r.media_type.as_str()))
        .map_err(CatalogError::from)?;
    Ok(match m.kind {
        ManifestKind::Image => Some(*root),
        ManifestKind::Index => m.platform_child("linux", arch).map(|d| d.digest),
    })
}

/// Opens a layer as an uncompressed tar stream.
fn open_layer(layer: &LayerFile) -> Result<Box<dyn Read>, FlattenError> {
    let file =
        fs::File::open(&layer.path).map_err(io_err(format!("open {}", layer.path.display())))?;
    let reader = BufReader::with_capacity(1 << 20, file);
    let mt = layer.media_type.as_str();
    Ok(
        if mt.ends_with("+gzip") || mt.ends_with(".gzip") || mt == media::DOCKER_LAYER_GZIP {
            Box::new(flate2::read::MultiGzDecoder::new(reader))
        } else if mt.ends_with("+zstd") {
            Box::new(
                zstd::stream::read::Decoder::with_buffer(reader).map_err(io_err("zstd layer"))?,
            )
        } else if mt.ends_with(".tar") || mt == media::OCI_LAYER_TAR || mt.ends_with("diff.tar") {
            Box::new(reader)
        } else {
            return Err(FlattenError::UnsupportedLayer(layer.media_type.clone()));
        },
    )
}

/// The safe relative path of a tar entry (`./a/b` → `a/b`), or an error for escapes.
fn clean_path(raw: &Path) -> Result<Option<PathBuf>, FlattenError> {
    if raw.components().all(|c| c == Component::CurDir) {
        return Ok(None);
    }
    crate::contained::clean_relative(raw)
        .map(Some)
        .ok_or_else(|| FlattenError::UnsafePath(raw.display().to_string()))
}

/// True if `rel` is under `prefix` (or `prefix` is empty), or is an ancestor directory of it.
fn wanted(rel: &Path, prefix: Option<&Path>) -> bool {
    match prefix {
        None => true,
        Some(p) => rel.starts_with(p) || p.starts_with(rel),
    }
}

/// An OCI whiteout entry: it deletes something from the layers below.
enum Whiteout {
    /// `.wh..wh..opq`: everything below this directory.
    Opaque(PathBuf),
    /// `.wh.<name>`: this path.
    Delete(PathBuf),
}

/// Classifies a (clean, relative) entry path as a whiteout, if it is one.
fn whiteout(rel: &Path) -> Option<Whiteout> {
    let name = rel.file_name().and_then(|n| n.to_str())?;
    if name == ".wh..wh..opq" {
        Some(Whiteout::Opaque(
            rel.parent().map(Path::to_path_buf).unwrap_or_default(),
        ))
    } else {
        name.strip_prefix(".wh.")
            .map(|target| Whiteout::Delete(rel.with_file_name(target)))
    }
}

/// Makes sure no existing component of `rel` below `dest` is a symlink (writing through one
/// could leave `dest`).
fn check_no_symlink_parents(dest: &Path, rel: &Path) -> Result<(), FlattenError> {
    crate::contained::check_no_symlink_parents(dest, rel)
        .map_err(|_| FlattenError::UnsafePath(rel.display().to_string()))
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies `layers` (bottom first) into `dest`, keeping only entries under `prefix` (if any).
/// Blocking; call from a blocking thread.
pub fn flatten_layers(
    layers: &[LayerFile],
    dest: &Path,
    prefix: Option<&Path>,
) -> Result<(), FlattenError> {
    fs::create_dir_all(dest).map_err(io_err(format!("create {}", dest.display())))?;
    for layer in layers {
        // Pass 1: whiteouts of this layer apply to the layers below it.
        let mut archive = tar::Archive::new(open_layer(layer)?);
        let mut opaque: Vec<PathBuf> = Vec::new();
        let mut deleted: Vec<PathBuf> = Vec::new();
        for entry in archive.entries().map_err(io_err("read layer"))? {
            let entry = entry.map_err(io_err("read layer entry"))?;
            let raw = entry.path().map_err(io_err("entry path"))?.into_owned();
            let Some(rel) = clean_path(&raw)? else {
                continue;
            };
            match whiteout(&rel) {
                Some(Whiteout::Opaque(dir)) => opaque.push(dir),
                Some(Whiteout::Delete(path)) => deleted.push(path),
                None => {}
            }
        }
        for dir in opaque {
            check_no_symlink_parents(dest, &dir.join("x"))?;
            let full = dest.join(&dir);
            if let Ok(read) = fs::read_dir(&full) {
                for child in read.flatten() {
                    remove_any(&child.path()).map_err(io_err("apply opaque whiteout"))?;
                }
            }
        }
        for path in deleted {
            check_no_symlink_parents(dest, &path)?;
            remove_any(&dest.join(&path)).map_err(io_err("apply whiteout"))?;
        }
        // Pass 2: the layer's own entries.
        let mut archive = tar::Archive::new(open_layer(layer)?);
        let mut hardlinks: Vec<(PathBuf, PathBuf)> = Vec::new();
        for entry in archive.entries().map_err(io_err("read layer"))? {
            let mut entry = entry.map_err(io_err("read layer entry"))?;
            let raw = entry.path().map_err(io_err("entry path"))?.into_owned();
            let Some(rel) = clean_path(&raw)? else {
                continue;
            };
            let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with(".wh.") || !wanted(&rel, prefix) {
                continue;
            }
            check_no_symlink_parents(dest, &rel)?;
            let full = dest.join(&rel);
            let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
            let kind = entry.header().entry_type();
            if let Some(parent) = full.parent() {
                fs::create_dir_all(parent)
                    .map_err(io_err(format!("create {}", parent.display())))?;
            }
            match kind {
                tar::EntryType::Directory => {
                    if fs::symlink_metadata(&full).is_ok_and(|m| !m.is_dir()) {
                        remove_any(&full).map_err(io_err("replace with directory"))?;
                    }
                    fs::create_dir_all(&full)
                        .map_err(io_err(format!("create {}", full.display())))?;
                    set_mode(&full, mode | 0o700)?;
                }
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    remove_any(&full).map_err(io_err("replace file"))?;
                    let mut out = fs::File::create(&full)
                        .map_err(io_err(format!("create {}", full.display())))?;
                    io::copy(&mut entry, &mut out)
                        .map_err(io_err(format!("write {}", full.display())))?;
                    set_mode(&full, mode)?;
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(io_err("symlink target"))?
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    remove_any(&full).map_err(io_err("replace symlink"))?;
                    std::os::unix::fs::symlink(&target, &full)
                        .map_err(io_err(format!("symlink {}", full.display())))?;
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(io_err("hardlink target"))?
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    if let Some(target) = clean_path(&target)? {
                        hardlinks.push((rel, target));
                    }
                }
                // Devices, FIFOs and the like have no place in extension or imager trees.
                _ => {}
            }
        }
        // Hard links become copies of their target (resolved after the whole layer is out).
        // Both paths are checked again here: later entries of the layer may have replaced a
        // parent directory of either with a symlink since the link entry was read.
        for (rel, target) in hardlinks {
            check_no_symlink_parents(dest, &target)?;
            check_no_symlink_parents(dest, &rel)?;
            let (from, to) = (dest.join(&target), dest.join(&rel));
            if fs::symlink_metadata(&from).is_ok_and(|m| m.is_file()) {
                remove_any(&to).map_err(io_err("replace hardlink"))?;
                fs::copy(&from, &to).map_err(io_err(format!("copy hardlink {}", rel.display())))?;
            }
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), FlattenError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", path.display())))
}

/// Flattens an image manifest from the store into `dest` (optionally only under `prefix`).
pub async fn flatten_image(
    catalog: &ImageCatalog,
    manifest: &Digest,
    dest: &Path,
    prefix: Option<&Path>,
) -> Result<(), FlattenError> {
    let layers = image_layers(catalog, manifest).await?;
    let dest = dest.to_path_buf();
    let prefix = prefix.map(Path::to_path_buf);
    tokio::task::spawn_blocking(move || flatten_layers(&layers, &dest, prefix.as_deref()))
        .await
        .map_err(|e| FlattenError::Io {
            context: "flatten task".into(),
            source: io::Error::other(e.to_string()),
        })?
}

/// Reads one regular file from the flattened image without extracting it: the topmost layer
/// that has it wins, unless a layer above deleted it. `None` if absent.
pub async fn read_file(
    catalog: &ImageCatalog,
    manifest: &Digest,
    path: &str,
    max_bytes: u64,
) -> Result<Option<Vec<u8>>, FlattenError> {
    let layers = image_layers(catalog, manifest).await?;
    let wanted = PathBuf::from(path.trim_start_matches('/'));
    let path = path.to_string();
    tokio::task::spawn_blocking(move || -> Result<Option<Vec<u8>>, FlattenError> {
        for layer in layers.iter().rev() {
            let mut archive = tar::Archive::new(open_layer(layer)?);
            let mut found = None;
            let mut whited_out = false;
            let mut opaque_dirs: HashSet<PathBuf> = HashSet::new();
            for entry in archive.entries().map_err(io_err("read layer"))? {
                let mut entry = entry.map_err(io_err("read layer entry"))?;
                let raw = entry.path().map_err(io_err("entry path"))?.into_owned();
                let Some(rel) = clean_path(&raw)? else {
                    continue;
                };
                match whiteout(&rel) {
                    Some(Whiteout::Opaque(dir)) => {
                        opaque_dirs.insert(dir);
                    }
                    Some(Whiteout::Delete(path)) => whited_out |= path == wanted,
                    None if rel == wanted && entry.header().entry_type().is_file() => {
                        let mut buf = Vec::new();
                        (&mut entry)
                            .take(max_bytes + 1)
                            .read_to_end(&mut buf)
                            .map_err(io_err(format!("read {path}")))?;
                        if buf.len() as u64 > max_bytes {
                            return Err(FlattenError::Io {
                                context: format!("read {path}"),
                                source: io::Error::other(format!("larger than {max_bytes} bytes")),
                            });
                        }
                        found = Some(buf);
                    }
                    None => {}
                }
            }
            if found.is_some() {
                return Ok(found);
            }
            if whited_out || opaque_dirs.iter().any(|d| wanted.starts_with(d)) {
                return Ok(None);
            }
        }
        Ok(None)
    })
    .await
    .map_err(|e| FlattenError::Io {
        context: "read task".into(),
        source: io::Error::other(e.to_string()),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(dir: &Path, name: &str, build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> LayerFile {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let bytes = b.into_inner().unwrap();
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        LayerFile {
            path,
            media_type: media::OCI_LAYER_TAR.into(),
        }
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn raw_path_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        // Write the name bytes directly so unsafe paths reach the reader unmodified.
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    #[test]
    fn whiteouts_opaque_dirs_and_overrides() {
        let tmp = tempfile::tempdir().unwrap();
        let l1 = layer(tmp.path(), "l1", |b| {
            file(b, "a/keep", b"1");
            file(b, "a/gone", b"1");
            file(b, "b/x", b"1");
            file(b, "c", b"old");
        });
        let l2 = layer(tmp.path(), "l2", |b| {
            file(b, "a/.wh.gone", b"");
            file(b, "b/.wh..wh..opq", b"");
            file(b, "b/y", b"2");
            file(b, "c", b"new");
        });
        let dest = tmp.path().join("out");
        flatten_layers(&[l1, l2], &dest, None).unwrap();
        assert!(dest.join("a/keep").exists());
        assert!(!dest.join("a/gone").exists());
        assert!(!dest.join("b/x").exists());
        assert_eq!(fs::read(dest.join("b/y")).unwrap(), b"2");
        assert_eq!(fs::read(dest.join("c")).unwrap(), b"new");
    }

    #[test]
    fn escapes_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let bad = layer(tmp.path(), "bad", |b| raw_path_file(b, "../evil", b"x"));
        let err = flatten_layers(&[bad], &tmp.path().join("out"), None).unwrap_err();
        assert!(matches!(err, FlattenError::UnsafePath(_)), "{err}");
        assert!(!tmp.path().join("evil").exists());

        // A symlink to outside, then a file "through" it.
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let l = layer(tmp.path(), "sym", |b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "link", &outside).unwrap();
            file(b, "link/pwned", b"x");
        });
        let err = flatten_layers(&[l], &tmp.path().join("out2"), None).unwrap_err();
        assert!(matches!(err, FlattenError::UnsafePath(_)), "{err}");
        assert!(!outside.join("pwned").exists());
    }

    #[test]
    fn prefix_filter_and_hardlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let l = layer(tmp.path(), "l", |b| {
            file(b, "usr/install/amd64/vmlinuz", b"kernel");
            file(b, "usr/bin/other", b"no");
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            b.append_link(
                &mut h,
                "usr/install/amd64/copy",
                "usr/install/amd64/vmlinuz",
            )
            .unwrap();
        });
        let dest = tmp.path().join("out");
        flatten_layers(&[l], &dest, Some(Path::new("usr/install"))).unwrap();
        assert_eq!(
            fs::read(dest.join("usr/install/amd64/vmlinuz")).unwrap(),
            b"kernel"
        );
        assert_eq!(
            fs::read(dest.join("usr/install/amd64/copy")).unwrap(),
            b"kernel"
        );
        assert!(!dest.join("usr/bin/other").exists());
    }
    /// Found by the `layer_tar` fuzz target: a hard link is resolved after the whole layer is
    /// out, so an entry later in the same layer can replace the link's parent directory with a
    /// symlink, and the copy then lands (and an existing file is first removed) outside `dest`.
    #[test]
    fn hardlink_parent_replaced_by_a_later_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"secret").unwrap();
        let l = layer(tmp.path(), "l", |b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o755);
            b.append_data(&mut h, "a/", &b""[..]).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, "a/secret", "f").unwrap();
            file(b, "f", b"overwritten");
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "a", "../outside").unwrap();
        });
        let err = flatten_layers(&[l], &tmp.path().join("out"), None).unwrap_err();
        assert!(matches!(err, FlattenError::UnsafePath(_)), "{err}");
        assert_eq!(fs::read(outside.join("secret")).unwrap(), b"secret");
    }
}
