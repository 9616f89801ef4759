//! The layers of an installer image, written streamed: the artifacts layer, the overlay layer
//! (both gzip'd USTAR tars hashed as they are written: blob digest and `diff_id`), and the
//! `docker load` tarball of one architecture's image.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::store::Digest;

/// Digests of a layer written by [`write_artifacts_layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerDigests {
    /// SHA-256 of the gzip stream (the blob).
    pub compressed: Digest,
    /// SHA-256 of the tar (the config's `diff_id`).
    pub diff_id: Digest,
}

/// Writes the artifacts layer: `files` (path in the image, file on disk) as a gzip'd
/// (level 1, like go-containerregistry's) USTAR tar, sorted by path, mode 0, uid/gid 0,
/// mtime 0, no directory entries. Streamed: nothing is held in memory.
pub fn write_artifacts_layer(files: &[(String, PathBuf)], out: &Path) -> io::Result<LayerDigests> {
    let mut sorted: Vec<&(String, PathBuf)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut layer = LayerWriter::create(out)?;
    for (name, path) in sorted {
        layer.file(name, 0, path)?;
    }
    layer.finish()
}

/// Most entries and deepest nesting an overlay's `artifacts/` may have (imported content).
const MAX_OVERLAY_ENTRIES: usize = 100_000;
const MAX_OVERLAY_DEPTH: usize = 64;

/// Writes the overlay layer as the imager does (Talos `pkg/imager/out.go` `outInstaller`: one
/// `filemap.Walk` per source, then `filemap.Layer`): `overlay/artifacts/…` (the walk of the
/// overlay image's `artifacts/`), `overlay/installers/default` (the overlay's installer) and
/// `overlay/extra-options` (the schematic's options as YAML, mode 0644), sorted by path,
/// permission bits kept, directories below `artifacts/` included. A walk leaves out its own
/// root, so there is no `overlay/`, `overlay/artifacts` or `overlay/installers` entry (a
/// runtime creates them when it unpacks). Links in the image are resolved inside the image
/// (never out of it), as the imager reads through them; a link leading nowhere is left out.
pub fn write_overlay_layer(
    tree: &Path,
    installer: &Path,
    options: &[u8],
    out: &Path,
) -> io::Result<LayerDigests> {
    enum Source {
        Dir,
        File(PathBuf),
        Bytes,
    }
    let mut entries: Vec<(String, u32, Source)> = Vec::new();
    let artifacts = tree.join("artifacts");
    if std::fs::symlink_metadata(&artifacts).is_ok_and(|m| m.is_dir()) {
        let mut stack = vec![(PathBuf::from("artifacts"), 0usize)];
        while let Some((rel, depth)) = stack.pop() {
            if depth >= MAX_OVERLAY_DEPTH {
                return Err(io::Error::other(format!(
                    "overlay {} is nested deeper than {MAX_OVERLAY_DEPTH} directories",
                    rel.display()
                )));
            }
            for entry in std::fs::read_dir(tree.join(&rel))? {
                let entry = entry?;
                let child = rel.join(entry.file_name());
                let name = format!(
                    "overlay/{}",
                    child
                        .to_str()
                        .ok_or_else(|| io::Error::other("overlay path is not UTF-8"))?
                );
                let meta = entry.metadata()?;
                let mode = {
                    use std::os::unix::fs::PermissionsExt;
                    meta.permissions().mode() & 0o777
                };
                if meta.is_dir() {
                    entries.push((name, mode, Source::Dir));
                    stack.push((child, depth + 1));
                } else if meta.is_file() {
                    entries.push((name, mode, Source::File(tree.join(&child))));
                } else if meta.file_type().is_symlink() {
                    match crate::contained::resolve(tree, &child) {
                        Ok(target) if target.is_file() => {
                            entries.push((name, mode, Source::File(target)))
                        }
                        Ok(target) if target.is_dir() => entries.push((name, mode, Source::Dir)),
                        _ => {}
                    }
                }
                if entries.len() > MAX_OVERLAY_ENTRIES {
                    return Err(io::Error::other(format!(
                        "overlay artifacts have more than {MAX_OVERLAY_ENTRIES} entries"
                    )));
                }
            }
        }
    }
    entries.push(("overlay/extra-options".into(), 0o644, Source::Bytes));
    let installer_mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(installer)?.permissions().mode() & 0o777
    };
    entries.push((
        "overlay/installers/default".into(),
        installer_mode,
        Source::File(installer.to_path_buf()),
    ));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut layer = LayerWriter::create(out)?;
    for (name, mode, source) in &entries {
        match source {
            Source::Dir => layer.dir(name, *mode)?,
            Source::File(path) => layer.file(name, *mode, path)?,
            Source::Bytes => layer.bytes(name, *mode, options)?,
        }
    }
    layer.finish()
}

/// A layer being written: a USTAR tar (uid/gid 0, mtime 0), gzip level 1, both hashed as
/// they stream to the file.
struct LayerWriter {
    tar: tar::Builder<
        HashingWriter<flate2::write::GzEncoder<HashingWriter<io::BufWriter<std::fs::File>>>>,
    >,
}

impl LayerWriter {
    fn create(out: &Path) -> io::Result<LayerWriter> {
        let file = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
        let gz = flate2::GzBuilder::new()
            .operating_system(255)
            .write(HashingWriter::new(file), flate2::Compression::fast());
        Ok(LayerWriter {
            tar: tar::Builder::new(HashingWriter::new(gz)),
        })
    }

    fn header(name: &str, mode: u32, size: u64, kind: tar::EntryType) -> io::Result<tar::Header> {
        let mut header = tar::Header::new_ustar();
        header.set_path(name)?;
        header.set_size(size);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(kind);
        header.set_cksum();
        Ok(header)
    }

    fn file(&mut self, name: &str, mode: u32, path: &Path) -> io::Result<()> {
        let source = std::fs::File::open(path)?;
        let len = source.metadata()?.len();
        let header = Self::header(name, mode, len, tar::EntryType::Regular)?;
        // `take`: a file that grows while being read cannot overrun its header.
        self.tar.append(
            &header,
            io::BufReader::with_capacity(1 << 20, source).take(len),
        )
    }

    fn bytes(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let header = Self::header(name, mode, data.len() as u64, tar::EntryType::Regular)?;
        self.tar.append(&header, data)
    }

    fn dir(&mut self, name: &str, mode: u32) -> io::Result<()> {
        let header = Self::header(name, mode, 0, tar::EntryType::Directory)?;
        self.tar.append(&header, io::empty())
    }

    fn finish(self) -> io::Result<LayerDigests> {
        let inner = self.tar.into_inner()?;
        let (gz, diff_id) = inner.finish();
        let compressed = gz.finish()?;
        let (mut file, digest) = compressed.finish();
        // No fsync here: the builder moves the file into the store, which fsyncs it.
        file.flush()?;
        Ok(LayerDigests {
            compressed: digest,
            diff_id,
        })
    }
}

/// Writes a `tarball.Write`-style image tar: the config, the layer blobs, `manifest.json`
/// (regular files, mode 0644, uid/gid 0, mtime 0). Streamed.
pub(super) fn write_image_tarball(
    config_name: &str,
    config: &[u8],
    layers: &[(String, PathBuf)],
    manifest: &[u8],
    out: &Path,
) -> io::Result<()> {
    let file = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let mut tar = tar::Builder::new(file);
    let header = |name: &str, size: u64| -> io::Result<tar::Header> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name)?;
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        Ok(h)
    };
    tar.append(&header(config_name, config.len() as u64)?, config)?;
    let mut seen = std::collections::HashSet::new();
    for (name, path) in layers {
        if !seen.insert(name) {
            continue;
        }
        let source = std::fs::File::open(path)?;
        let len = source.metadata()?.len();
        tar.append(
            &header(name, len)?,
            io::BufReader::with_capacity(1 << 20, source).take(len),
        )?;
    }
    tar.append(&header("manifest.json", manifest.len() as u64)?, manifest)?;
    let mut file = tar.into_inner()?;
    file.flush()?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// The SHA-256 of a gzip file's decompressed content (a layer's `diff_id`).
pub(super) fn gunzipped_digest(path: &Path) -> io::Result<Digest> {
    let file = io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut gz = flate2::read::GzDecoder::new(file);
    let mut h = HashingWriter::new(io::sink());
    io::copy(&mut gz, &mut h)?;
    Ok(h.finish().1)
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hash: Sha256::new(),
        }
    }

    fn finish(self) -> (W, Digest) {
        (
            self.inner,
            Digest::from(<[u8; 32]>::from(self.hash.finalize())),
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
