//! From the raw disk image to the file a request names: `<platform>-<arch>.<raw|qcow2|vhd>`
//! plus `.zst`, `.xz`, `.gz` or `.tar.gz`, as Talos' imager post-processes (`docs/formats.md`
//! §Disk image formats). The raw image is an asset of its own (built once); every other form is
//! made from it by the [`crate::formats::disk`] writers, which never read its holes.
//!
//! | request | made by |
//! |---|---|
//! | `.raw.zst`, `.raw.xz`, `.raw.gz` | the raw bytes through zstd (level 3), xz (preset 0), gzip (6) |
//! | `.qcow2[.zst/.xz/.gz]` | qcow2 v3, 8 KiB clusters (`cluster_size=8k`), only non-zero clusters |
//! | `.vhd` | a sparse copy of the raw file padded to whole sectors + the fixed-VHD footer |
//! | `.vhd.zst/.xz/.gz` | the same stream, compressed |
//! | `.raw.tar.gz` (gcp) | `disk.raw` in a GNU sparse tar, gzip 6 |
//! | `.ova` (vmware) | `disk.ovf`, `disk.mf`, `disk.vmdk` (stream-optimized) in a tar; firmware EFI for sd-boot disks |
//! | `.qcow2.tar.gz`, `.vhd.tar.gz` | that disk file, named `disk.raw`, in the same tar (as upstream: it renames whatever the disk file is) |

use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::path::Path;

use crate::factory::profile::{DiskFormat, OutFormat};
use crate::formats::compress::Compression;
use crate::formats::disk::{Container, Stats, convert_in, raw_to_vhd_in_place};
use crate::formats::ova::{Firmware, OvaOptions};
use crate::formats::sparse::copy_file_sparse;
use crate::formats::vhd::VhdOptions;

/// Why a form cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// Reading the raw image or writing the output failed.
    #[error("converting the raw disk image to {what}")]
    Io {
        /// The form being made (`.qcow2.xz`).
        what: String,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
}

impl ConvertError {
    /// The I/O error underneath, if any (to tell a full disk from other failures).
    pub fn io(&self) -> &io::Error {
        match self {
            ConvertError::Io { source, .. } => source,
        }
    }
}

/// The container a disk format is written as. `uefi_only` (an sd-boot disk) makes an OVA's
/// virtual machine boot with UEFI; GRUB and dual-boot disks keep VMware's default, BIOS, as
/// upstream's OVF template does.
pub fn container(format: DiskFormat, uefi_only: bool) -> Container {
    match format {
        DiskFormat::Raw => Container::Raw,
        DiskFormat::Qcow2 => Container::Qcow2,
        // qemu-img `-O vpc -o subformat=fixed,force_size`: timestamp 0, content-derived UUID.
        DiskFormat::Vhd => Container::Vhd(VhdOptions::default()),
        DiskFormat::Ova => Container::Ova(OvaOptions {
            firmware: if uefi_only {
                Firmware::Efi
            } else {
                Firmware::Bios
            },
            ..OvaOptions::default()
        }),
    }
}

/// The compression of an output format (`.tar.gz` is gzip around a tar).
pub fn compression(out: OutFormat) -> Compression {
    match out {
        OutFormat::Raw => Compression::None,
        OutFormat::Zst => Compression::zstd_default(),
        OutFormat::Xz => Compression::XZ_DEFAULT,
        OutFormat::Gz | OutFormat::TarGz => Compression::GZIP_DEFAULT,
    }
}

/// Writes the `format` + `out_format` form of the raw image `raw` to the new file `out`
/// (`uefi_only`: see [`container`]). Scratch files go beside `out` and are removed: the
/// disk file of a `.tar.gz` of a non-raw format (`<out>.disk`) and an OVA's VMDK. A plain
/// `.raw` is the raw image itself and not made here.
pub fn convert_image(
    raw: &Path,
    format: DiskFormat,
    out_format: OutFormat,
    uefi_only: bool,
    out: &Path,
) -> Result<Stats, ConvertError> {
    let what = format!(".{}{}", format.extension(), out_format.suffix());
    let io = |source: io::Error| ConvertError::Io {
        what: what.clone(),
        source,
    };
    let container = container(format, uefi_only);
    if out_format == OutFormat::TarGz {
        if format == DiskFormat::Raw {
            return to_file(raw, Container::SparseTar, Compression::GZIP_DEFAULT, out).map_err(io);
        }
        let inner = out.with_extension("disk");
        let result = write_uncompressed(raw, container, &inner)
            .and_then(|_| to_file(&inner, Container::SparseTar, Compression::GZIP_DEFAULT, out));
        let _ = std::fs::remove_file(&inner);
        return result.map_err(io);
    }
    let compression = compression(out_format);
    if compression == Compression::None {
        return write_uncompressed(raw, container, out).map_err(io);
    }
    to_file(raw, container, compression, out).map_err(io)
}

/// An uncompressed container as a file: a VHD as a sparse copy plus footer (the zeros stay
/// holes), anything else streamed.
fn write_uncompressed(raw: &Path, container: Container, out: &Path) -> io::Result<Stats> {
    match container {
        Container::Vhd(opts) => {
            copy_file_sparse(raw, out)?;
            raw_to_vhd_in_place(out, opts)
        }
        Container::Raw => {
            let walk = copy_file_sparse(raw, out)?;
            Ok(Stats {
                raw_size: walk.size,
                data_read: walk.data_read,
                image_size: walk.size,
                output_size: walk.size,
            })
        }
        other => to_file(raw, other, Compression::None, out),
    }
}

fn to_file(
    raw: &Path,
    container: Container,
    compression: Compression,
    out: &Path,
) -> io::Result<Stats> {
    let scratch = out.parent().unwrap_or(Path::new("."));
    let file = File::create(out)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let stats = convert_in(raw, container, compression, scratch, &mut w)?;
    w.flush()?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt as _;

    fn raw(dir: &Path) -> std::path::PathBuf {
        let p = dir.join("disk.raw");
        let f = File::create(&p).unwrap();
        f.set_len(16 << 20).unwrap();
        f.write_all_at(b"EFI PART", 512).unwrap();
        f.write_all_at(&[7u8; 100_000], 5 << 20).unwrap();
        p
    }

    #[test]
    fn every_form_decodes_to_the_raw_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let raw = raw(dir.path());
        let bytes = std::fs::read(&raw).unwrap();
        // (.xz is decoded by `xz -d` in tests/disk_formats.rs and tests/disk_image.rs.)
        for out_format in [OutFormat::Zst, OutFormat::Gz] {
            let out = dir.path().join("out");
            let stats = convert_image(&raw, DiskFormat::Raw, out_format, false, &out).unwrap();
            assert_eq!(stats.raw_size, 16 << 20);
            let data = std::fs::read(&out).unwrap();
            let plain: Vec<u8> = match out_format {
                OutFormat::Zst => zstd::decode_all(&data[..]).unwrap(),
                _ => {
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(
                        &mut flate2::read::GzDecoder::new(&data[..]),
                        &mut v,
                    )
                    .unwrap();
                    v
                }
            };
            assert!(plain == bytes, "{out_format:?}");
        }
    }

    #[test]
    fn vhd_stays_sparse_and_tar_and_ova_remove_their_scratch() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let raw = raw(dir.path());
        let vhd = dir.path().join("x.vhd");
        convert_image(&raw, DiskFormat::Vhd, OutFormat::Raw, false, &vhd).unwrap();
        let md = std::fs::metadata(&vhd).unwrap();
        assert_eq!(md.len(), (16 << 20) + 512);
        assert!(md.blocks() * 512 < 2 << 20);
        let tgz = dir.path().join("x.tar.gz");
        convert_image(&raw, DiskFormat::Qcow2, OutFormat::TarGz, false, &tgz).unwrap();
        assert!(!dir.path().join("x.tar.disk").exists());
        assert!(std::fs::metadata(&tgz).unwrap().len() > 0);
        let ova = dir.path().join("x.ova");
        convert_image(&raw, DiskFormat::Ova, OutFormat::Raw, true, &ova).unwrap();
        let names: Vec<String> = tar::Archive::new(File::open(&ova).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["disk.ovf", "disk.mf", "disk.vmdk"]);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !["disk.raw", "x.vhd", "x.tar.gz", "x.ova"].contains(&n.as_str()))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
