//! Disk image conversions: a sparse raw disk image into the container and compression a
//! factory asset asks for (`.raw`, `.vhd`, `.qcow2`, `.tar`, `.ova`, each optionally `.zst`,
//! `.xz`, `.gz`), streamed into any writer with bounded memory.
//!
//! The raw file is walked with `SEEK_DATA`/`SEEK_HOLE` ([`super::sparse`]): holes are never
//! read and reach the compressor as zero counts. Memory is a 1 MiB read buffer plus the
//! compressor's state, whatever the image size.

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::compress::{Compression, Compressor, Counting};
use super::ova::{self, OvaOptions};
use super::sparse::{ZeroWrite, for_each_segment};
use super::vhd::{self, ContentDigest, VhdOptions};
use super::{qcow2, sparse_tar};

/// The container around the disk's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// The bytes as they are.
    Raw,
    /// A fixed VHD (`.vhd`): the bytes padded to whole sectors, then the footer.
    Vhd(VhdOptions),
    /// A qcow2 v3 image (`.qcow2`) with 8 KiB clusters holding only the non-zero clusters.
    Qcow2,
    /// A GNU tar archive (`.tar`) of the disk as the sparse file `disk.raw` (GCP's
    /// `.tar.gz` with [`Compression::Gzip`]).
    SparseTar,
    /// VMware's OVA (`.ova`): a tar of `disk.ovf`, `disk.mf` and `disk.vmdk`, a
    /// stream-optimized VMDK. The VMDK is written to a scratch file first ([`convert_in`]).
    Ova(OvaOptions),
}

impl Container {
    /// The file name extension (`.raw`, `.vhd`, `.qcow2`).
    pub fn suffix(&self) -> &'static str {
        match self {
            Container::Raw => ".raw",
            Container::Vhd(_) => ".vhd",
            Container::Qcow2 => ".qcow2",
            Container::SparseTar => ".tar",
            Container::Ova(_) => ".ova",
        }
    }
}

/// A container with what its first pass found.
enum Plan {
    Raw,
    Vhd(VhdOptions),
    Qcow2(qcow2::Layout),
    Tar(sparse_tar::Plan),
    Ova(ova::Prepared),
}

/// What a conversion did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Size of the raw file (the disk's virtual size before any VHD padding).
    pub raw_size: u64,
    /// Bytes read from the raw file: its data extents (read twice for qcow2).
    pub data_read: u64,
    /// Length of the container stream before compression.
    pub image_size: u64,
    /// Bytes written to the output.
    pub output_size: u64,
}

/// Converts the sparse raw disk image at `raw` into `container`, compressed with
/// `compression`, written to `out`. `out` receives the complete file; it is flushed, not
/// synced. An `.ova`'s VMDK goes through a scratch file in the system's temporary directory:
/// [`convert_in`] names the directory.
pub fn convert(
    raw: &Path,
    container: Container,
    compression: Compression,
    out: impl Write,
) -> io::Result<Stats> {
    convert_in(raw, container, compression, &std::env::temp_dir(), out)
}

/// [`convert`], with the scratch file an `.ova` needs (its VMDK, about the size of the
/// compressed disk, unlinked as soon as it is created) in `scratch_dir`, e.g. the output's
/// directory. The other containers need no scratch space.
pub fn convert_in(
    raw: &Path,
    container: Container,
    compression: Compression,
    scratch_dir: &Path,
    out: impl Write,
) -> io::Result<Stats> {
    let file = File::open(raw)?;
    let raw_size = file.metadata()?.len();
    // qcow2 and tar need a first pass before anything is written (and the stream's length
    // goes into a zstd header).
    let plan = match container {
        Container::Raw => Plan::Raw,
        Container::Vhd(opts) => Plan::Vhd(opts),
        Container::Qcow2 => Plan::Qcow2(qcow2::Layout::plan(&file)?),
        Container::SparseTar => Plan::Tar(sparse_tar::Plan::new(&file)?),
        Container::Ova(opts) => Plan::Ova(ova::prepare(&file, opts, scratch_dir)?),
    };
    let image_size = match &plan {
        Plan::Raw => raw_size,
        Plan::Vhd(_) => vhd_file_size(raw_size)?,
        Plan::Qcow2(layout) => layout.file_size(),
        Plan::Tar(tar) => tar.archive_size(),
        Plan::Ova(ova) => ova.archive_size(),
    };
    let counting = Counting::new(out);
    let mut sink = Compressor::new(counting, compression, Some(image_size))?;
    let data_read = match plan {
        Plan::Raw => for_each_segment_into(&file, raw_size, &mut sink, None)?,
        Plan::Vhd(opts) => write_vhd(&file, raw_size, opts, &mut sink)?,
        Plan::Qcow2(layout) => layout.write(&file, &mut sink)?,
        Plan::Tar(tar) => tar.write(&file, &mut sink)?,
        Plan::Ova(ova) => {
            ova.write(&mut sink)?;
            ova.vmdk_stats.data_read
        }
    };
    let counting = sink.finish()?;
    Ok(Stats {
        raw_size,
        data_read,
        image_size,
        output_size: counting.count(),
    })
}

fn vhd_file_size(raw_size: u64) -> io::Result<u64> {
    vhd::disk_size(raw_size)
        .and_then(|d| d.checked_add(vhd::FOOTER_LEN as u64))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "disk too large"))
}

/// Writes `file` into `out` (holes as zero counts), feeding `digest` if given; returns the
/// bytes read.
fn for_each_segment_into(
    file: &File,
    expected_size: u64,
    out: &mut impl ZeroWrite,
    digest: Option<&mut ContentDigest>,
) -> io::Result<u64> {
    let out = RefCell::new(out);
    let digest = RefCell::new(digest);
    let stats = for_each_segment(
        file,
        |d| {
            if let Some(g) = digest.borrow_mut().as_mut() {
                g.data(d);
            }
            out.borrow_mut().write_all(d)
        },
        |n| {
            if let Some(g) = digest.borrow_mut().as_mut() {
                g.zeros(n);
            }
            out.borrow_mut().write_zeros(n)
        },
    )?;
    // A file that changed size since its size was taken would not match the stream's declared
    // length (or the VHD footer's size).
    if stats.size != expected_size || file.metadata()?.len() != expected_size {
        return Err(io::Error::other(
            "the raw file changed size while it was read",
        ));
    }
    Ok(stats.data_read)
}

/// Turns the raw disk image at `raw` into a fixed VHD where it lies: zero-pads it to whole
/// sectors (a hole, no write) and appends the footer, so the file stays sparse and only its
/// data extents are read (for the content-derived UUID; nothing is read when `opts.uuid` is
/// given). On an error the file may be padded but has no footer.
pub fn raw_to_vhd_in_place(raw: &Path, opts: VhdOptions) -> io::Result<Stats> {
    let file = fs::OpenOptions::new().read(true).write(true).open(raw)?;
    let raw_size = file.metadata()?.len();
    let disk_size = vhd::disk_size(raw_size)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "disk too large"))?;
    let (uuid, data_read) = match opts.uuid {
        Some(u) => (u, 0),
        None => {
            let digest = RefCell::new(ContentDigest::default());
            let stats = for_each_segment(
                &file,
                |d| {
                    digest.borrow_mut().data(d);
                    Ok(())
                },
                |n| {
                    digest.borrow_mut().zeros(n);
                    Ok(())
                },
            )?;
            if stats.size != raw_size || file.metadata()?.len() != raw_size {
                return Err(io::Error::other(
                    "the raw file changed size while it was read",
                ));
            }
            let mut digest = digest.into_inner();
            digest.zeros(disk_size - raw_size);
            (digest.finish_uuid(), stats.data_read)
        }
    };
    file.set_len(disk_size)?;
    file.write_all_at(&vhd::footer(disk_size, opts.timestamp, uuid), disk_size)?;
    let image_size = disk_size + vhd::FOOTER_LEN as u64;
    Ok(Stats {
        raw_size,
        data_read,
        image_size,
        output_size: image_size,
    })
}

fn write_vhd(
    file: &File,
    raw_size: u64,
    opts: VhdOptions,
    out: &mut impl ZeroWrite,
) -> io::Result<u64> {
    let disk_size = vhd::disk_size(raw_size)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "disk too large"))?;
    let mut digest = opts.uuid.is_none().then(ContentDigest::default);
    let data_read = for_each_segment_into(file, raw_size, out, digest.as_mut())?;
    out.write_zeros(disk_size - raw_size)?;
    let uuid = match digest {
        Some(mut d) => {
            d.zeros(disk_size - raw_size);
            d.finish_uuid()
        }
        None => opts.uuid.unwrap_or_default(),
    };
    out.write_all(&vhd::footer(disk_size, opts.timestamp, uuid))?;
    Ok(data_read)
}
