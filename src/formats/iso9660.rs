//! A bootable ISO 9660 image writer (ECMA-119 with Rock Ridge names, El Torito, and the MBR/GPT
//! of an appended EFI partition), written to a file block by block with bounded memory.
//!
//! What it writes, in this order (`docs/formats.md` §ISO):
//!
//! - blocks 0–15 (the system area): zero, or for an appended partition an MBR (0x83 ISO + 0xEF
//!   EFI, [`PartitionTable::Mbr`]) or a protective MBR and a GPT ([`PartitionTable::Gpt`]) in
//!   512-byte sectors, as `xorriso -append_partition 2 0xef … [-appended_part_as_gpt]
//!   -partition_offset 16 -partition_cyl_align all` lays them out;
//! - block 16 the primary volume descriptor, block 17 the El Torito boot record (when there is
//!   a boot entry), then the terminator;
//! - the L and M path tables, the directories (breadth first, children sorted by identifier),
//!   the El Torito boot catalog, the files (in directory order), each from a block boundary;
//! - the appended partition image, from a 1 MiB boundary, its size rounded up to 1 MiB; with a
//!   GPT, 64 sectors more for the backup GPT.
//!
//! Names: ISO 9660 level 3 identifiers (upper case d-characters, `NAME.EXT;1`, at most 30
//! characters) plus Rock Ridge (`SP` and `ER` in the root, `PX` and `NM` in every record) so
//! GRUB and Linux see the real names (`i386-pc`, lower case). No Joliet, no `CE`
//! continuation areas, no multi-extent files (a file is at most 4 GiB − 1).
//!
//! Memory: the directory records, path tables and the BIOS boot file (at most 1 MiB, patched
//! with the boot info table) are held; file contents stream through one 1 MiB buffer.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;

use super::gpt;

/// ISO 9660 logical block size.
pub const BLOCK: u64 = 2048;
/// Hard-disk sector size of the MBR/GPT view.
const SECTOR: u64 = 512;
/// The appended partition starts on, and its size is rounded up to, a 1 MiB boundary (a
/// "cylinder" of 64 heads × 32 sectors, xorriso's `-partition_cyl_align all`).
const ALIGN: u64 = 1 << 20;
/// xorriso's `-partition_offset 16`: the ISO partition of the MBR/GPT starts at block 16.
const PARTITION_OFFSET_SECTORS: u64 = 16 * BLOCK / SECTOR;
/// Sectors kept free at the end for the backup GPT (its 32-sector array and header, rounded up).
const GPT_TAIL_SECTORS: u64 = 64;
/// Bytes of GRUB's hybrid MBR code copied; 0x1B0.. is the patched sector.
const MBR_CODE: usize = 0x1B0;
/// Where `--grub2-boot-info` patches the boot file.
const GRUB2_BOOT_INFO: usize = 2548;
/// Largest BIOS boot file held in memory for the boot info table.
const MAX_BIOS_BOOT_FILE: u64 = 1 << 20;
/// Longest Rock Ridge name (keeps every directory record within 255 bytes).
const MAX_NAME: usize = 100;

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file on disk, streamed.
    Path(PathBuf),
    /// Bytes in memory (small generated files such as `grub.cfg`).
    Bytes(Vec<u8>),
}

/// A file of the image, `path` relative to the root (`boot/grub/grub.cfg`); directories are
/// implied by the paths.
#[derive(Debug, Clone)]
pub struct IsoFile {
    /// `/`-separated path, no leading `/`.
    pub path: String,
    /// The content.
    pub source: Source,
}

/// The BIOS (platform 0) El Torito entry: a no-emulation boot file of the tree.
#[derive(Debug, Clone)]
pub struct BiosBoot {
    /// The boot file's path in the tree.
    pub path: String,
    /// 512-byte sectors the BIOS loads (GRUB's `cdboot.img`: 4).
    pub load_sectors: u16,
    /// Patch the boot info table (PVD block, file block, length, checksum) at offset 8.
    pub boot_info_table: bool,
    /// GRUB's `boot_hybrid.img`, for BIOS boot of the image written to a disk (xorriso's
    /// `--grub2-mbr` + `--grub2-boot-info`): its first 432 bytes become the MBR's code, with
    /// the boot file's 512-byte sector + 4 (GRUB's `diskboot.img` after the 2048-byte
    /// `cdboot.img`) at 0x1B0, and the boot file gets its sector + 5 (the rest of the core) at
    /// offset 2548 (`diskboot.img`'s blocklist). Both 64-bit little-endian.
    pub hybrid_mbr: Option<Vec<u8>>,
}

/// The EFI (platform 0xEF) El Torito entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EfiBoot {
    /// A FAT image that is a file of the tree (grub-mkrescue's `/efi.img`).
    File(String),
    /// The appended partition.
    AppendedPartition,
}

/// How the appended partition is announced to machines that see the image as a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionTable {
    /// An MBR: partition 1 type 0x83 (the ISO, from block 16), partition 2 type 0xEF.
    Mbr,
    /// A protective MBR and a GPT: partition 1 `ISO9660` (basic data, read-only), partition 2
    /// `Appended2` (EFI system partition).
    Gpt,
}

/// An EFI system partition image appended after the ISO 9660 data.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The FAT image.
    pub image: PathBuf,
    /// The partition table describing it.
    pub table: PartitionTable,
}

/// Everything an image is made of.
#[derive(Debug, Clone)]
pub struct IsoSpec {
    /// Volume identifier (d-characters, at most 32: `TALOS_V1_11_6`).
    pub volume_id: String,
    /// Volume set identifier (at most 128 bytes: `Talos-v1.11.6`).
    pub volume_set_id: String,
    /// Every date of the image (Unix seconds, UTC).
    pub timestamp: i64,
    /// The files.
    pub files: Vec<IsoFile>,
    /// The BIOS El Torito entry, if any.
    pub bios: Option<BiosBoot>,
    /// The EFI El Torito entry, if any.
    pub efi: Option<EfiBoot>,
    /// The appended EFI partition, if any.
    pub appended: Option<Appended>,
    /// Seed of the GPT's GUIDs.
    pub seed: Vec<u8>,
}

/// Why an image was not written.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// The spec cannot be written (a bad name, a boot entry pointing nowhere, a file too big).
    #[error("invalid ISO layout: {0}")]
    Invalid(String),
    /// Reading a source or writing the image failed.
    #[error("{what}")]
    Io {
        /// What was being read or written.
        what: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> IsoError {
    let what = what.into();
    move |source| IsoError::Io { what, source }
}

/// Where things went: block numbers and sizes, for callers and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoLayout {
    /// Blocks of the ISO 9660 data (up to the end of the last file).
    pub iso_blocks: u64,
    /// First block and size in bytes of the appended partition.
    pub appended: Option<(u64, u64)>,
    /// The image's size in bytes.
    pub total_bytes: u64,
    /// Block of the boot catalog.
    pub catalog: Option<u64>,
}

// --- Field encodings (ECMA-119 §7) ---------------------------------------------------------

/// §7.2.3: a 16-bit number in both byte orders.
pub fn both_u16(v: u16) -> [u8; 4] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], b[0], b[1]]
}

/// §7.3.3: a 32-bit number in both byte orders.
pub fn both_u32(v: u32) -> [u8; 8] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], l[2], l[3], b[0], b[1], b[2], b[3]]
}

/// `(year, month, day, hour, minute, second)` of Unix seconds (UTC).
fn civil(t: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (secs / 3600) as u32,
        (secs / 60 % 60) as u32,
        (secs % 60) as u32,
    )
}

/// §9.1.5: the 7-byte date of a directory record (years since 1900, GMT offset 0).
pub fn record_date(t: i64) -> [u8; 7] {
    let (y, mo, d, h, mi, s) = civil(t);
    [
        (y - 1900).clamp(0, 255) as u8,
        mo as u8,
        d as u8,
        h as u8,
        mi as u8,
        s as u8,
        0,
    ]
}

/// §8.4.26.1: the 17-byte date of a volume descriptor (`YYYYMMDDhhmmsscc` + GMT offset 0).
pub fn volume_date(t: i64) -> [u8; 17] {
    let (y, mo, d, h, mi, s) = civil(t);
    let text = format!("{:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}00", y.clamp(0, 9999));
    let mut out = [0u8; 17];
    out[..16].copy_from_slice(&text.as_bytes()[..16]);
    out
}

/// The "not specified" date: sixteen `'0'` and a zero offset.
fn no_date() -> [u8; 17] {
    let mut out = [b'0'; 17];
    out[16] = 0;
    out
}

fn padded<const N: usize>(text: &str, fill: u8) -> [u8; N] {
    let mut out = [fill; N];
    let bytes = text.as_bytes();
    let n = bytes.len().min(N);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

fn d_chars(s: &str) -> String {
    s.chars()
        .map(|c| c.to_ascii_uppercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The level-3 identifier of a directory (`I386_PC`).
pub fn dir_identifier(name: &str) -> String {
    d_chars(name).chars().take(30).collect()
}

/// The level-3 identifier of a file (`VMLINUZ.;1`, `GRUB.CFG;1`).
pub fn file_identifier(name: &str) -> String {
    let (base, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    };
    let ext: String = d_chars(ext).chars().take(8).collect();
    let base: String = d_chars(base).chars().take(30 - ext.len()).collect();
    format!("{base}.{ext};1")
}

// --- Rock Ridge system use entries (SUSP 1.12, RRIP 1.12) ----------------------------------

const MODE_DIR: u32 = 0o040_555;
const MODE_FILE: u32 = 0o100_444;

fn susp_sp() -> Vec<u8> {
    vec![b'S', b'P', 7, 1, 0xBE, 0xEF, 0]
}

fn susp_er() -> Vec<u8> {
    let id = b"RRIP_1991A";
    let mut e = vec![b'E', b'R', (8 + id.len()) as u8, 1, id.len() as u8, 0, 0, 1];
    e.extend_from_slice(id);
    e
}

fn rr_px(mode: u32, links: u32) -> Vec<u8> {
    let mut e = vec![b'P', b'X', 36, 1];
    e.extend_from_slice(&both_u32(mode));
    e.extend_from_slice(&both_u32(links));
    e.extend_from_slice(&both_u32(0));
    e.extend_from_slice(&both_u32(0));
    e
}

fn rr_nm(name: &str) -> Vec<u8> {
    let mut e = vec![b'N', b'M', (5 + name.len()) as u8, 1, 0];
    e.extend_from_slice(name.as_bytes());
    e
}

/// §9.1: one directory record.
pub fn directory_record(
    identifier: &[u8],
    extent: u32,
    size: u32,
    dir: bool,
    timestamp: i64,
    system_use: &[u8],
) -> Vec<u8> {
    let fi_len = identifier.len();
    let pad = usize::from(fi_len.is_multiple_of(2));
    let len = 33 + fi_len + pad + system_use.len();
    let mut r = Vec::with_capacity(len);
    r.push(len as u8);
    r.push(0);
    r.extend_from_slice(&both_u32(extent));
    r.extend_from_slice(&both_u32(size));
    r.extend_from_slice(&record_date(timestamp));
    r.push(if dir { 2 } else { 0 });
    r.push(0);
    r.push(0);
    r.extend_from_slice(&both_u16(1));
    r.push(fi_len as u8);
    r.extend_from_slice(identifier);
    if pad == 1 {
        r.push(0);
    }
    r.extend_from_slice(system_use);
    r
}

// --- The tree ------------------------------------------------------------------------------

#[derive(Debug)]
struct Dir {
    name: String,
    parent: usize,
    subdirs: Vec<usize>,
    files: Vec<usize>,
    /// Path-table order number − 1 (breadth first).
    number: usize,
    extent: u64,
    size: u64,
}

#[derive(Debug)]
struct Entry {
    name: String,
    source: usize,
    size: u64,
    extent: u64,
}

struct Tree {
    dirs: Vec<Dir>,
    files: Vec<Entry>,
    /// Directory indexes in breadth-first (path table) order.
    order: Vec<usize>,
}

fn check_name(name: &str) -> Result<(), IsoError> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > MAX_NAME
        || name.bytes().any(|b| b < 0x20 || b == 0x7f)
    {
        return Err(IsoError::Invalid(format!("bad file name {name:?}")));
    }
    Ok(())
}

fn build_tree(files: &[IsoFile]) -> Result<Tree, IsoError> {
    let mut dirs = vec![Dir {
        name: String::new(),
        parent: 0,
        subdirs: Vec::new(),
        files: Vec::new(),
        number: 0,
        extent: 0,
        size: 0,
    }];
    let mut entries = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let parts: Vec<&str> = f.path.split('/').collect();
        let Some((leaf, parents)) = parts.split_last() else {
            return Err(IsoError::Invalid("empty path".into()));
        };
        let mut at = 0;
        for p in parents {
            check_name(p)?;
            at = match dirs[at].subdirs.iter().find(|&&d| dirs[d].name == *p) {
                Some(&d) => d,
                None => {
                    dirs.push(Dir {
                        name: p.to_string(),
                        parent: at,
                        subdirs: Vec::new(),
                        files: Vec::new(),
                        number: 0,
                        extent: 0,
                        size: 0,
                    });
                    let d = dirs.len() - 1;
                    dirs[at].subdirs.push(d);
                    d
                }
            };
        }
        check_name(leaf)?;
        let size = match &f.source {
            Source::Bytes(b) => b.len() as u64,
            Source::Path(p) => std::fs::metadata(p)
                .map_err(io_err(format!("stat {}", p.display())))?
                .len(),
        };
        if size > u64::from(u32::MAX) {
            return Err(IsoError::Invalid(format!(
                "{} is larger than 4 GiB (multi-extent files are not written)",
                f.path
            )));
        }
        entries.push(Entry {
            name: leaf.to_string(),
            source: i,
            size,
            extent: 0,
        });
        dirs[at].files.push(entries.len() - 1);
    }
    // Identifiers must be unique per directory (names and ISO identifiers both).
    for d in &dirs {
        let mut ids: Vec<String> = d
            .subdirs
            .iter()
            .map(|&s| dir_identifier(&dirs[s].name))
            .chain(d.files.iter().map(|&f| file_identifier(&entries[f].name)))
            .collect();
        let mut names: Vec<&str> = d
            .subdirs
            .iter()
            .map(|&s| dirs[s].name.as_str())
            .chain(d.files.iter().map(|&f| entries[f].name.as_str()))
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        names.sort();
        names.dedup();
        if ids.len() != n || names.len() != n {
            return Err(IsoError::Invalid(format!(
                "two entries of directory {:?} have the same name or ISO 9660 identifier",
                d.name
            )));
        }
    }
    // Breadth-first order, children by identifier.
    for d in 0..dirs.len() {
        let mut subdirs = std::mem::take(&mut dirs[d].subdirs);
        subdirs.sort_by_key(|&s| dir_identifier(&dirs[s].name));
        dirs[d].subdirs = subdirs;
        dirs[d]
            .files
            .sort_by_key(|&f| file_identifier(&entries[f].name));
    }
    let mut order = vec![0];
    let mut i = 0;
    while i < order.len() {
        let d = order[i];
        dirs[d].number = i;
        order.extend(dirs[d].subdirs.iter().copied());
        i += 1;
    }
    Ok(Tree {
        dirs,
        files: entries,
        order,
    })
}

/// The records of one directory, children sorted by identifier (directories and files mixed).
fn children(tree: &Tree, d: usize) -> Vec<(String, String, bool, usize)> {
    let dir = &tree.dirs[d];
    let mut out: Vec<(String, String, bool, usize)> = dir
        .subdirs
        .iter()
        .map(|&s| {
            (
                dir_identifier(&tree.dirs[s].name),
                tree.dirs[s].name.clone(),
                true,
                s,
            )
        })
        .chain(dir.files.iter().map(|&f| {
            (
                file_identifier(&tree.files[f].name),
                tree.files[f].name.clone(),
                false,
                f,
            )
        }))
        .collect();
    out.sort();
    out
}

/// A directory's extent: records never cross a block boundary (§6.8.1.1).
fn directory_extent(tree: &Tree, d: usize, timestamp: i64) -> Vec<u8> {
    let dir = &tree.dirs[d];
    let parent = &tree.dirs[dir.parent];
    let mut records = Vec::new();
    let mut dot_su = Vec::new();
    if d == 0 {
        dot_su.extend(susp_sp());
    }
    dot_su.extend(rr_px(MODE_DIR, 2));
    if d == 0 {
        dot_su.extend(susp_er());
    }
    records.push(directory_record(
        &[0],
        dir.extent as u32,
        dir.size as u32,
        true,
        timestamp,
        &dot_su,
    ));
    records.push(directory_record(
        &[1],
        parent.extent as u32,
        parent.size as u32,
        true,
        timestamp,
        &rr_px(MODE_DIR, 2),
    ));
    for (id, name, is_dir, i) in children(tree, d) {
        let mut su = if is_dir {
            rr_px(MODE_DIR, 2)
        } else {
            rr_px(MODE_FILE, 1)
        };
        su.extend(rr_nm(&name));
        let (extent, size) = if is_dir {
            (tree.dirs[i].extent, tree.dirs[i].size)
        } else {
            (tree.files[i].extent, tree.files[i].size)
        };
        records.push(directory_record(
            id.as_bytes(),
            extent as u32,
            size as u32,
            is_dir,
            timestamp,
            &su,
        ));
    }
    let mut out = Vec::new();
    for r in records {
        let used = out.len() as u64 % BLOCK;
        if used + r.len() as u64 > BLOCK {
            out.resize(out.len() + (BLOCK - used) as usize, 0);
        }
        out.extend_from_slice(&r);
    }
    let blocks = (out.len() as u64).div_ceil(BLOCK).max(1);
    out.resize((blocks * BLOCK) as usize, 0);
    out
}

/// §9.4: the path table, `msb` for the M (big-endian) one.
fn path_table(tree: &Tree, msb: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for &d in &tree.order {
        let dir = &tree.dirs[d];
        let id = if d == 0 {
            vec![0u8]
        } else {
            dir_identifier(&dir.name).into_bytes()
        };
        let parent = (tree.dirs[dir.parent].number + 1) as u16;
        out.push(id.len() as u8);
        out.push(0);
        let extent = dir.extent as u32;
        if msb {
            out.extend_from_slice(&extent.to_be_bytes());
            out.extend_from_slice(&parent.to_be_bytes());
        } else {
            out.extend_from_slice(&extent.to_le_bytes());
            out.extend_from_slice(&parent.to_le_bytes());
        }
        out.extend_from_slice(&id);
        if id.len() % 2 == 1 {
            out.push(0);
        }
    }
    out
}

/// The sizes of every directory extent, computed once extents are unknown (sizes do not
/// depend on extents).
fn directory_sizes(tree: &mut Tree, timestamp: i64) {
    for d in 0..tree.dirs.len() {
        tree.dirs[d].size = directory_extent(tree, d, timestamp).len() as u64;
    }
}

// --- Volume descriptors and El Torito -------------------------------------------------------

/// §8.4: the primary volume descriptor.
fn primary_volume_descriptor(
    spec: &IsoSpec,
    total_blocks: u32,
    path_table_size: u32,
    l_table: u32,
    m_table: u32,
    root: &[u8],
) -> [u8; 2048] {
    let mut v = [0u8; 2048];
    v[0] = 1;
    v[1..6].copy_from_slice(b"CD001");
    v[6] = 1;
    v[8..40].copy_from_slice(&padded::<32>("", b' '));
    v[40..72].copy_from_slice(&padded::<32>(&spec.volume_id, b' '));
    v[80..88].copy_from_slice(&both_u32(total_blocks));
    v[120..124].copy_from_slice(&both_u16(1));
    v[124..128].copy_from_slice(&both_u16(1));
    v[128..132].copy_from_slice(&both_u16(BLOCK as u16));
    v[132..140].copy_from_slice(&both_u32(path_table_size));
    v[140..144].copy_from_slice(&l_table.to_le_bytes());
    v[148..152].copy_from_slice(&m_table.to_be_bytes());
    v[156..156 + root.len()].copy_from_slice(root);
    v[190..318].copy_from_slice(&padded::<128>(&spec.volume_set_id, b' '));
    v[318..446].copy_from_slice(&padded::<128>("", b' '));
    v[446..574].copy_from_slice(&padded::<128>("BOOTFACTORY", b' '));
    v[574..702].copy_from_slice(&padded::<128>("", b' '));
    v[702..739].copy_from_slice(&padded::<37>("", b' '));
    v[739..776].copy_from_slice(&padded::<37>("", b' '));
    v[776..813].copy_from_slice(&padded::<37>("", b' '));
    let date = volume_date(spec.timestamp);
    v[813..830].copy_from_slice(&date);
    v[830..847].copy_from_slice(&date);
    v[847..864].copy_from_slice(&no_date());
    v[864..881].copy_from_slice(&date);
    v[881] = 1;
    v
}

/// El Torito §2.0: the boot record volume descriptor.
fn boot_record(catalog: u32) -> [u8; 2048] {
    let mut v = [0u8; 2048];
    v[1..6].copy_from_slice(b"CD001");
    v[6] = 1;
    v[7..39].copy_from_slice(&padded::<32>("EL TORITO SPECIFICATION", 0));
    v[71..75].copy_from_slice(&catalog.to_le_bytes());
    v
}

fn terminator() -> [u8; 2048] {
    let mut v = [0u8; 2048];
    v[0] = 255;
    v[1..6].copy_from_slice(b"CD001");
    v[6] = 1;
    v
}

/// A boot image for the catalog: El Torito platform, LBA, 512-byte sector count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogImage {
    /// 0 (x86 BIOS) or 0xEF (EFI).
    pub platform: u8,
    /// Block of the image.
    pub lba: u32,
    /// 512-byte sectors to load (0: the image is larger than 65535 sectors; firmware takes
    /// the rest of the medium, as for xorriso's images).
    pub sectors: u16,
}

/// El Torito §2.1–2.4: the boot catalog. The first image is the initial/default entry (its
/// platform is the validation entry's); each further one gets a section header (0x90, the
/// last 0x91) and one section entry.
pub fn boot_catalog(images: &[CatalogImage]) -> [u8; 2048] {
    let mut c = [0u8; 2048];
    let Some(first) = images.first() else {
        return c;
    };
    c[0] = 1;
    c[1] = first.platform;
    c[30] = 0x55;
    c[31] = 0xAA;
    let sum = c[..32].chunks(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    c[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    let entry = |e: &mut [u8], img: &CatalogImage| {
        e[0] = 0x88;
        e[6..8].copy_from_slice(&img.sectors.to_le_bytes());
        e[8..12].copy_from_slice(&img.lba.to_le_bytes());
    };
    entry(&mut c[32..64], first);
    let rest = &images[1..];
    let mut at = 64;
    for (i, img) in rest.iter().enumerate() {
        if at + 64 > c.len() {
            break;
        }
        c[at] = if i + 1 == rest.len() { 0x91 } else { 0x90 };
        c[at + 1] = img.platform;
        c[at + 2..at + 4].copy_from_slice(&1u16.to_le_bytes());
        entry(&mut c[at + 32..at + 64], img);
        at += 64;
    }
    c
}

/// El Torito's boot info table (mkisofs `-boot-info-table`): at offset 8 the PVD block, the
/// file's block, its length and the 32-bit sum of its words from offset 64; 40 zero bytes.
pub fn patch_boot_info_table(file: &mut [u8], lba: u32) {
    if file.len() < 64 {
        return;
    }
    let len = file.len() as u32;
    let sum = file[64..].chunks(4).fold(0u32, |s, w| {
        let mut b = [0u8; 4];
        b[..w.len()].copy_from_slice(w);
        s.wrapping_add(u32::from_le_bytes(b))
    });
    file[8..12].copy_from_slice(&16u32.to_le_bytes());
    file[12..16].copy_from_slice(&lba.to_le_bytes());
    file[16..20].copy_from_slice(&len.to_le_bytes());
    file[20..24].copy_from_slice(&sum.to_le_bytes());
    file[24..64].fill(0);
}

// --- MBR and GPT ------------------------------------------------------------------------------

/// CHS of a sector with 64 heads and 32 sectors per track, capped at cylinder 1023.
fn chs(lba: u64) -> [u8; 3] {
    let c = lba / (64 * 32);
    if c > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let h = (lba / 32) % 64;
    let s = lba % 32 + 1;
    [h as u8, (s as u8) | (((c >> 8) as u8) << 6), c as u8]
}

fn mbr_entry(e: &mut [u8], kind: u8, start: u64, sectors: u64) {
    let end = start + sectors.max(1) - 1;
    e[1..4].copy_from_slice(&chs(start));
    e[4] = kind;
    e[5..8].copy_from_slice(&chs(end));
    e[8..12].copy_from_slice(&(start.min(u64::from(u32::MAX)) as u32).to_le_bytes());
    e[12..16].copy_from_slice(&(sectors.min(u64::from(u32::MAX)) as u32).to_le_bytes());
}

/// On-disk (mixed-endian) GUIDs.
const GUID_BASIC_DATA: [u8; 16] = [
    0xA2, 0xA0, 0xD0, 0xEB, 0xE5, 0xB9, 0x33, 0x44, 0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7,
];
const GUID_ESP: [u8; 16] = [
    0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B,
];

/// The GPT of `parts` on a disk of `total_sectors` 512-byte sectors: the primary header, the
/// entry array and the backup header (GUIDs derived from `seed`; usable from the ISO
/// partition's start to before the backup array, as xorriso writes it).
/// `parts` are numbered from 1 in order; partition `n`'s GUID is derived from `partition n`.
fn gpt(
    seed: &[u8],
    total_sectors: u64,
    parts: &mut [gpt::Partition<'_>],
) -> io::Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    for (i, p) in parts.iter_mut().enumerate() {
        p.guid = gpt::derived_guid(seed, &format!("partition {}", i + 1));
    }
    let entries = gpt::entry_array(parts)?;
    let last = total_sectors - 1;
    let t = gpt::Table {
        sector_size: SECTOR,
        last_lba: last,
        first_usable_lba: PARTITION_OFFSET_SECTORS,
        last_usable_lba: last - gpt::array_sectors(SECTOR) - 1,
        disk_guid: gpt::derived_guid(seed, "disk"),
    };
    let crc = crc32fast::hash(&entries);
    Ok((
        gpt::header(&t, false, crc),
        entries,
        gpt::header(&t, true, crc),
    ))
}

// --- Writing --------------------------------------------------------------------------------

/// The layout of `spec`, without writing: extents of directories and files, sizes.
struct Plan {
    tree: Tree,
    l_table: u64,
    m_table: u64,
    path_table_size: u64,
    catalog: Option<u64>,
    iso_blocks: u64,
    appended: Option<(u64, u64, u64)>,
    total_bytes: u64,
}

fn plan(spec: &IsoSpec) -> Result<Plan, IsoError> {
    if spec.volume_id.len() > 32 || spec.volume_set_id.len() > 128 {
        return Err(IsoError::Invalid(
            "volume id or volume set id too long".into(),
        ));
    }
    let mut tree = build_tree(&spec.files)?;
    directory_sizes(&mut tree, spec.timestamp);
    let has_boot = spec.bios.is_some() || spec.efi.is_some();
    let mut next = 17 + u64::from(has_boot) + 1;
    let path_table_size = path_table(&tree, false).len() as u64;
    let pt_blocks = path_table_size.div_ceil(BLOCK);
    let l_table = next;
    next += pt_blocks;
    let m_table = next;
    next += pt_blocks;
    for i in 0..tree.order.len() {
        let d = tree.order[i];
        tree.dirs[d].extent = next;
        next += tree.dirs[d].size / BLOCK;
    }
    let catalog = has_boot.then(|| {
        next += 1;
        next - 1
    });
    for i in 0..tree.order.len() {
        let d = tree.order[i];
        for j in 0..tree.dirs[d].files.len() {
            let f = tree.dirs[d].files[j];
            tree.files[f].extent = next;
            next += tree.files[f].size.div_ceil(BLOCK);
        }
    }
    let iso_blocks = next;
    let (appended, total_bytes) = match &spec.appended {
        None => (None, iso_blocks * BLOCK),
        Some(a) => {
            let len = std::fs::metadata(&a.image)
                .map_err(io_err(format!("stat {}", a.image.display())))?
                .len();
            let start = (iso_blocks * BLOCK).next_multiple_of(ALIGN);
            let size = len.next_multiple_of(ALIGN).max(ALIGN);
            let tail = match a.table {
                PartitionTable::Gpt => GPT_TAIL_SECTORS * SECTOR,
                PartitionTable::Mbr => 0,
            };
            (Some((start / BLOCK, len, size)), start + size + tail)
        }
    };
    if total_bytes / BLOCK > u64::from(u32::MAX) {
        return Err(IsoError::Invalid("image larger than 8 TiB".into()));
    }
    Ok(Plan {
        tree,
        l_table,
        m_table,
        path_table_size,
        catalog,
        iso_blocks,
        appended,
        total_bytes,
    })
}

fn find_file(tree: &Tree, spec: &IsoSpec, path: &str) -> Option<usize> {
    tree.files
        .iter()
        .position(|e| spec.files[e.source].path == path)
}

fn sectors_u16(bytes: u64) -> u16 {
    let s = bytes.div_ceil(SECTOR);
    if s > u64::from(u16::MAX) { 0 } else { s as u16 }
}

/// Writes `spec` to `out` (created or truncated); same spec and inputs, same bytes.
pub fn write_iso(spec: &IsoSpec, out: &File) -> Result<IsoLayout, IsoError> {
    let p = plan(spec)?;
    let tree = &p.tree;
    let put = |bytes: &[u8], at: u64, what: &str| {
        out.write_all_at(bytes, at)
            .map_err(io_err(format!("write the {what}")))
    };
    out.set_len(0).map_err(io_err("truncate the image"))?;
    out.set_len(p.total_bytes)
        .map_err(io_err("size the image"))?;

    // El Torito entries.
    let mut images = Vec::new();
    let mut bios_file = None;
    if let Some(b) = &spec.bios {
        let f = find_file(tree, spec, &b.path).ok_or_else(|| {
            IsoError::Invalid(format!("BIOS boot file {} is not in the tree", b.path))
        })?;
        images.push(CatalogImage {
            platform: 0,
            lba: tree.files[f].extent as u32,
            sectors: b.load_sectors,
        });
        if b.boot_info_table || b.hybrid_mbr.is_some() {
            bios_file = Some(f);
        }
        if let Some(code) = &b.hybrid_mbr
            && code.len() < MBR_CODE
        {
            return Err(IsoError::Invalid(format!(
                "the hybrid MBR code has {} bytes, fewer than {MBR_CODE}",
                code.len()
            )));
        }
    }
    match &spec.efi {
        None => {}
        Some(EfiBoot::File(path)) => {
            let f = find_file(tree, spec, path).ok_or_else(|| {
                IsoError::Invalid(format!("EFI boot image {path} is not in the tree"))
            })?;
            images.push(CatalogImage {
                platform: 0xEF,
                lba: tree.files[f].extent as u32,
                sectors: sectors_u16(tree.files[f].size),
            });
        }
        Some(EfiBoot::AppendedPartition) => {
            let Some((start, len, _)) = p.appended else {
                return Err(IsoError::Invalid(
                    "the EFI boot entry is the appended partition, but there is none".into(),
                ));
            };
            images.push(CatalogImage {
                platform: 0xEF,
                lba: start as u32,
                sectors: sectors_u16(len),
            });
        }
    }

    // Volume descriptors.
    let root = directory_record(
        &[0],
        tree.dirs[0].extent as u32,
        tree.dirs[0].size as u32,
        true,
        spec.timestamp,
        &[],
    );
    let total_blocks = p.total_bytes.div_ceil(BLOCK) as u32;
    put(
        &primary_volume_descriptor(
            spec,
            total_blocks,
            p.path_table_size as u32,
            p.l_table as u32,
            p.m_table as u32,
            &root,
        ),
        16 * BLOCK,
        "primary volume descriptor",
    )?;
    let mut vd = 17;
    if let Some(catalog) = p.catalog {
        put(&boot_record(catalog as u32), vd * BLOCK, "boot record")?;
        put(&boot_catalog(&images), catalog * BLOCK, "boot catalog")?;
        vd += 1;
    }
    put(&terminator(), vd * BLOCK, "volume descriptor terminator")?;
    put(&path_table(tree, false), p.l_table * BLOCK, "L path table")?;
    put(&path_table(tree, true), p.m_table * BLOCK, "M path table")?;
    for &d in &tree.order {
        put(
            &directory_extent(tree, d, spec.timestamp),
            tree.dirs[d].extent * BLOCK,
            "directory",
        )?;
    }

    // Files.
    let mut buf = vec![0u8; 1 << 20];
    for (i, e) in tree.files.iter().enumerate() {
        let f = &spec.files[e.source];
        let at = e.extent * BLOCK;
        if bios_file == Some(i) {
            if e.size > MAX_BIOS_BOOT_FILE {
                return Err(IsoError::Invalid(format!(
                    "BIOS boot file {} is larger than 1 MiB",
                    f.path
                )));
            }
            let mut bytes = match &f.source {
                Source::Bytes(b) => b.clone(),
                Source::Path(path) => {
                    std::fs::read(path).map_err(io_err(format!("read {}", path.display())))?
                }
            };
            if bytes.len() as u64 != e.size {
                return Err(IsoError::Invalid(format!(
                    "{} changed while written",
                    f.path
                )));
            }
            let bios = spec.bios.as_ref();
            if bios.is_some_and(|b| b.boot_info_table) {
                patch_boot_info_table(&mut bytes, e.extent as u32);
            }
            if bios.is_some_and(|b| b.hybrid_mbr.is_some()) {
                let Some(field) = bytes.get_mut(GRUB2_BOOT_INFO..GRUB2_BOOT_INFO + 8) else {
                    return Err(IsoError::Invalid(format!(
                        "BIOS boot file {} is too short for GRUB's boot info",
                        f.path
                    )));
                };
                field.copy_from_slice(&(e.extent * 4 + 5).to_le_bytes());
            }
            put(&bytes, at, &f.path)?;
            continue;
        }
        match &f.source {
            Source::Bytes(b) => put(b, at, &f.path)?,
            Source::Path(path) => {
                let mut input =
                    File::open(path).map_err(io_err(format!("open {}", path.display())))?;
                copy_at(
                    &mut input,
                    out,
                    at,
                    e.size,
                    &mut buf,
                    &path.display().to_string(),
                )?;
            }
        }
    }

    // The MBR: GRUB's hybrid code, if any, then the partition table (below) and 55 AA.
    let mut mbr = [0u8; 512];
    if let Some(b) = &spec.bios
        && let Some(code) = &b.hybrid_mbr
    {
        mbr[..MBR_CODE].copy_from_slice(&code[..MBR_CODE]);
        let boot = bios_file.map_or(0, |f| tree.files[f].extent);
        mbr[MBR_CODE..MBR_CODE + 8].copy_from_slice(&(boot * 4 + 4).to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        if spec.appended.is_none() {
            put(&mbr, 0, "MBR")?;
        }
    }

    // The appended partition and its table.
    if let (Some(a), Some((start, len, size))) = (&spec.appended, p.appended) {
        let mut input =
            File::open(&a.image).map_err(io_err(format!("open {}", a.image.display())))?;
        copy_at(
            &mut input,
            out,
            start * BLOCK,
            len,
            &mut buf,
            "the EFI partition image",
        )?;
        let total_sectors = p.total_bytes / SECTOR;
        let part_first = start * BLOCK / SECTOR;
        let part_sectors = size / SECTOR;
        let iso_sectors = part_first - PARTITION_OFFSET_SECTORS;
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        match a.table {
            PartitionTable::Mbr => {
                mbr_entry(
                    &mut mbr[446..462],
                    0x83,
                    PARTITION_OFFSET_SECTORS,
                    iso_sectors,
                );
                mbr_entry(&mut mbr[462..478], 0xEF, part_first, part_sectors);
                put(&mbr, 0, "MBR")?;
            }
            PartitionTable::Gpt => {
                mbr_entry(&mut mbr[446..462], 0xEE, 1, total_sectors - 1);
                put(&mbr, 0, "protective MBR")?;
                let mut parts = [
                    gpt::Partition {
                        type_guid: GUID_BASIC_DATA,
                        guid: [0; 16],
                        first_lba: PARTITION_OFFSET_SECTORS,
                        last_lba: part_first - 1,
                        attributes: 0x1000_0000_0000_0001,
                        name: "ISO9660",
                    },
                    gpt::Partition {
                        type_guid: GUID_ESP,
                        guid: [0; 16],
                        first_lba: part_first,
                        last_lba: part_first + part_sectors - 1,
                        attributes: 0,
                        name: "Appended2",
                    },
                ];
                let (primary, entries, backup) =
                    gpt(&spec.seed, total_sectors, &mut parts).map_err(io_err("the GPT"))?;
                put(&primary, SECTOR, "GPT header")?;
                put(&entries, 2 * SECTOR, "GPT entries")?;
                put(
                    &entries,
                    (total_sectors - 1 - gpt::array_sectors(SECTOR)) * SECTOR,
                    "backup GPT entries",
                )?;
                put(&backup, (total_sectors - 1) * SECTOR, "backup GPT header")?;
            }
        }
    }
    out.sync_all().map_err(io_err("sync the image"))?;
    Ok(IsoLayout {
        iso_blocks: p.iso_blocks,
        appended: p.appended.map(|(start, _, size)| (start, size)),
        total_bytes: p.total_bytes,
        catalog: p.catalog,
    })
}

/// Copies exactly `len` bytes of `input` to `out` at `at`, 1 MiB at a time.
fn copy_at(
    input: &mut File,
    out: &File,
    at: u64,
    len: u64,
    buf: &mut [u8],
    what: &str,
) -> Result<(), IsoError> {
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n =
            super::read_full(input, &mut buf[..want]).map_err(io_err(format!("read {what}")))?;
        if n == 0 {
            return Err(IsoError::Invalid(format!("{what} shrank while written")));
        }
        out.write_all_at(&buf[..n], at + done)
            .map_err(io_err(format!("write {what}")))?;
        done += n as u64;
    }
    let mut extra = [0u8; 1];
    if input
        .read(&mut extra)
        .map_err(io_err(format!("read {what}")))?
        != 0
    {
        return Err(IsoError::Invalid(format!("{what} grew while written")));
    }
    Ok(())
}

/// §6.5's volume ID of a label: upper case, `-`, `_` and `.` to `_`, anything else outside
/// `[A-Z0-9_]` dropped, at most 32 characters (`Talos-v1.11.6` → `TALOS_V1_11_6`).
pub fn volume_id(label: &str) -> String {
    label
        .chars()
        .map(|c| c.to_ascii_uppercase())
        .filter_map(|c| match c {
            '-' | '_' | '.' => Some('_'),
            c if c.is_ascii_uppercase() || c.is_ascii_digit() => Some(c),
            _ => None,
        })
        .take(32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(files: Vec<IsoFile>) -> IsoSpec {
        IsoSpec {
            volume_id: "TALOS_V1_11_6".into(),
            volume_set_id: "Talos-v1.11.6".into(),
            timestamp: 1_559_424_892,
            files,
            bios: None,
            efi: None,
            appended: None,
            seed: b"seed".to_vec(),
        }
    }

    fn bytes(path: &str, b: &[u8]) -> IsoFile {
        IsoFile {
            path: path.into(),
            source: Source::Bytes(b.to_vec()),
        }
    }

    fn write(s: &IsoSpec) -> (Vec<u8>, IsoLayout) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.iso");
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let layout = write_iso(s, &f).unwrap();
        (std::fs::read(&path).unwrap(), layout)
    }

    #[test]
    fn both_endian_fields_and_dates() {
        assert_eq!(both_u16(0x0102), [2, 1, 1, 2]);
        assert_eq!(both_u32(0x0102_0304), [4, 3, 2, 1, 1, 2, 3, 4]);
        // SOURCE_DATE_EPOCH 1559424892 = 2019-06-01T21:34:52Z.
        assert_eq!(record_date(1_559_424_892), [119, 6, 1, 21, 34, 52, 0]);
        assert_eq!(&volume_date(1_559_424_892)[..16], b"2019060121345200");
        assert_eq!(record_date(951_782_400), [100, 2, 29, 0, 0, 0, 0]);
        assert_eq!(volume_id("Talos-v1.11.6"), "TALOS_V1_11_6");
        assert_eq!(volume_id("a+b c"), "ABC");
        assert_eq!(file_identifier("vmlinuz"), "VMLINUZ.;1");
        assert_eq!(file_identifier("initramfs.xz"), "INITRAMFS.XZ;1");
        assert_eq!(dir_identifier("i386-pc"), "I386_PC");
    }

    #[test]
    fn directory_record_fields() {
        let r = directory_record(b"GRUB.CFG;1", 0x1234, 100, false, 1_559_424_892, b"XY");
        assert_eq!(r[0] as usize, r.len());
        assert_eq!(r.len(), 33 + 10 + 1 + 2);
        assert_eq!(&r[2..10], &both_u32(0x1234));
        assert_eq!(&r[10..18], &both_u32(100));
        assert_eq!(r[25], 0);
        assert_eq!(&r[28..32], &both_u16(1));
        assert_eq!(r[32], 10);
        assert_eq!(&r[33..43], b"GRUB.CFG;1");
        assert_eq!(r[43], 0, "padding after an even-length identifier");
        assert_eq!(&r[44..], b"XY");
        let d = directory_record(b"BOOT", 1, 2048, true, 0, &[]);
        assert_eq!(d[25], 2);
        assert_eq!(d.len(), 38);
    }

    #[test]
    fn catalog_checksum_and_sections() {
        let c = boot_catalog(&[
            CatalogImage {
                platform: 0,
                lba: 40,
                sectors: 4,
            },
            CatalogImage {
                platform: 0xEF,
                lba: 512,
                sectors: 0,
            },
        ]);
        let sum = c[..32].chunks(2).fold(0u16, |s, w| {
            s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
        });
        assert_eq!(sum, 0);
        assert_eq!((c[0], c[1], c[30], c[31]), (1, 0, 0x55, 0xAA));
        assert_eq!(c[32], 0x88);
        assert_eq!(u16::from_le_bytes([c[38], c[39]]), 4);
        assert_eq!(u32::from_le_bytes([c[40], c[41], c[42], c[43]]), 40);
        assert_eq!((c[64], c[65], c[66]), (0x91, 0xEF, 1));
        assert_eq!(c[96], 0x88);
        assert_eq!(u32::from_le_bytes([c[104], c[105], c[106], c[107]]), 512);
        // A UEFI-only catalog: the validation entry names EFI.
        let u = boot_catalog(&[CatalogImage {
            platform: 0xEF,
            lba: 9,
            sectors: 100,
        }]);
        assert_eq!(u[1], 0xEF);
        assert_eq!(u[64], 0);
        let sum = u[..32].chunks(2).fold(0u16, |s, w| {
            s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
        });
        assert_eq!(sum, 0);
    }

    #[test]
    fn boot_info_table() {
        let mut f: Vec<u8> = (0..100u8).collect();
        patch_boot_info_table(&mut f, 77);
        assert_eq!(&f[8..12], &16u32.to_le_bytes());
        assert_eq!(&f[12..16], &77u32.to_le_bytes());
        assert_eq!(&f[16..20], &100u32.to_le_bytes());
        // Words from 64: [64..68)…[96..100).
        let want: u32 = (64..100u32)
            .collect::<Vec<_>>()
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0] as u8, w[1] as u8, w[2] as u8, w[3] as u8]))
            .fold(0u32, u32::wrapping_add);
        assert_eq!(&f[20..24], &want.to_le_bytes());
        assert!(f[24..64].iter().all(|b| *b == 0));
    }

    /// Reads `path` back through the PVD's root and the directory records (Rock Ridge names).
    fn lookup(iso: &[u8], path: &str) -> Option<(u32, u32)> {
        let pvd = &iso[16 * 2048..17 * 2048];
        let root = &pvd[156..190];
        let mut extent = u32::from_le_bytes(root[2..6].try_into().unwrap());
        let mut size = u32::from_le_bytes(root[10..14].try_into().unwrap());
        for part in path.split('/') {
            let data = &iso[extent as usize * 2048..][..size as usize];
            let mut at = 0;
            let mut found = None;
            while at < data.len() {
                let len = data[at] as usize;
                if len == 0 {
                    at = (at / 2048 + 1) * 2048;
                    continue;
                }
                let r = &data[at..at + len];
                let fi = r[32] as usize;
                let mut su = &r[33 + fi + usize::from(fi.is_multiple_of(2))..];
                while su.len() >= 4 {
                    let l = su[2] as usize;
                    if &su[..2] == b"NM" && &su[5..l] == part.as_bytes() {
                        found = Some((
                            u32::from_le_bytes(r[2..6].try_into().unwrap()),
                            u32::from_le_bytes(r[10..14].try_into().unwrap()),
                        ));
                    }
                    su = &su[l..];
                }
                at += len;
            }
            let (e, s) = found?;
            extent = e;
            size = s;
        }
        Some((extent, size))
    }

    #[test]
    fn pvd_tree_and_files_read_back() {
        let mut files = vec![
            bytes("boot/vmlinuz", b"kernel"),
            bytes("boot/grub/grub.cfg", b"set default=0\n"),
            bytes("boot/grub/i386-pc/eltorito.img", &[0x90; 4096]),
        ];
        for i in 0..120 {
            files.push(bytes(
                &format!("boot/grub/i386-pc/module{i}.mod"),
                &[i as u8; 3],
            ));
        }
        let mut s = spec(files);
        s.bios = Some(BiosBoot {
            path: "boot/grub/i386-pc/eltorito.img".into(),
            load_sectors: 4,
            boot_info_table: true,
            hybrid_mbr: None,
        });
        let (iso, layout) = write(&s);
        let pvd = &iso[16 * 2048..17 * 2048];
        assert_eq!(&pvd[..8], b"\x01CD001\x01\x00");
        assert_eq!(&pvd[40..53], b"TALOS_V1_11_6");
        assert_eq!(pvd[53], b' ');
        assert_eq!(&pvd[80..88], &both_u32((iso.len() / 2048) as u32));
        assert_eq!(&pvd[128..132], &both_u16(2048));
        assert_eq!(&pvd[190..203], b"Talos-v1.11.6");
        assert_eq!(&pvd[813..829], b"2019060121345200");
        assert_eq!(pvd[881], 1);
        // Path tables agree in both byte orders.
        let l = u32::from_le_bytes(pvd[140..144].try_into().unwrap()) as usize;
        let m = u32::from_be_bytes(pvd[148..152].try_into().unwrap()) as usize;
        let size = u32::from_le_bytes(pvd[132..136].try_into().unwrap()) as usize;
        let (lt, mt) = (&iso[l * 2048..][..size], &iso[m * 2048..][..size]);
        assert_eq!(&lt[..2], &[1, 0]);
        assert_eq!(lt[2..6], [mt[5], mt[4], mt[3], mt[2]]);
        // The boot record and the catalog.
        let br = &iso[17 * 2048..18 * 2048];
        assert_eq!(&br[7..30], b"EL TORITO SPECIFICATION");
        let cat = u32::from_le_bytes(br[71..75].try_into().unwrap());
        assert_eq!(Some(u64::from(cat)), layout.catalog);
        assert_eq!(iso[18 * 2048], 255);
        let (k, ks) = lookup(&iso, "boot/vmlinuz").unwrap();
        assert_eq!(&iso[k as usize * 2048..][..ks as usize], b"kernel");
        let (m9, _) = lookup(&iso, "boot/grub/i386-pc/module99.mod").unwrap();
        assert_eq!(&iso[m9 as usize * 2048..][..3], &[99, 99, 99]);
        let (b, bs) = lookup(&iso, "boot/grub/i386-pc/eltorito.img").unwrap();
        assert_eq!(bs, 4096);
        let c = &iso[cat as usize * 2048..];
        assert_eq!(u32::from_le_bytes(c[40..44].try_into().unwrap()), b);
        let boot = &iso[b as usize * 2048..][..4096];
        assert_eq!(&boot[12..16], &b.to_le_bytes());
        // The big directory spans blocks; no record crosses a boundary.
        let (_, dsize) = lookup(&iso, "boot/grub/i386-pc").unwrap();
        assert!(dsize > 2048);
        // Same spec, same bytes.
        assert!(write(&s).0 == iso);
    }

    #[test]
    fn uefi_only_with_an_mbr_and_hybrid_with_a_gpt() {
        let dir = tempfile::tempdir().unwrap();
        let efi = dir.path().join("efi.img");
        std::fs::write(&efi, vec![0xAB; 3 << 20]).unwrap();
        let mut s = spec(vec![bytes("EFI/BOOT/BOOTX64.EFI", b"MZ")]);
        s.efi = Some(EfiBoot::AppendedPartition);
        s.appended = Some(Appended {
            image: efi.clone(),
            table: PartitionTable::Mbr,
        });
        let (iso, layout) = write(&s);
        let (start, size) = layout.appended.unwrap();
        assert_eq!(start * BLOCK % ALIGN, 0);
        assert_eq!(size, 3 << 20);
        assert_eq!(iso.len() as u64, start * BLOCK + size);
        assert_eq!(iso[start as usize * 2048], 0xAB);
        assert_eq!(&iso[510..512], &[0x55, 0xAA]);
        assert_eq!(iso[446 + 4], 0x83);
        assert_eq!(u32::from_le_bytes(iso[454..458].try_into().unwrap()), 64);
        assert_eq!(iso[462 + 4], 0xEF);
        assert_eq!(
            u64::from(u32::from_le_bytes(iso[470..474].try_into().unwrap())),
            start * 4
        );
        let cat = layout.catalog.unwrap() as usize * 2048;
        assert_eq!(iso[cat + 1], 0xEF);
        assert_eq!(u16::from_le_bytes([iso[cat + 38], iso[cat + 39]]), 6144);

        s.appended = Some(Appended {
            image: efi,
            table: PartitionTable::Gpt,
        });
        let (iso, layout) = write(&s);
        let (start, size) = layout.appended.unwrap();
        let total = iso.len() as u64 / 512;
        assert_eq!(total, start * 4 + size / 512 + 64);
        assert_eq!(iso[446 + 4], 0xEE);
        let h = &iso[512..1024];
        assert_eq!(&h[..8], b"EFI PART");
        let mut hh = h[..92].to_vec();
        hh[16..20].fill(0);
        assert_eq!(crc32fast::hash(&hh).to_le_bytes(), h[16..20]);
        assert_eq!(u64::from_le_bytes(h[32..40].try_into().unwrap()), total - 1);
        let e2 = &iso[1024 + 128..1024 + 256];
        assert_eq!(&e2[..16], &GUID_ESP);
        assert_eq!(
            u64::from_le_bytes(e2[32..40].try_into().unwrap()),
            start * 4
        );
        let b = &iso[(total as usize - 1) * 512..];
        assert_eq!(&b[..8], b"EFI PART");
        assert_eq!(&iso[(total as usize - 33) * 512..][..256], &iso[1024..1280]);
    }

    #[test]
    fn grub_hybrid_mbr_and_boot_info() {
        let dir = tempfile::tempdir().unwrap();
        let efi = dir.path().join("efi.img");
        std::fs::write(&efi, vec![1u8; 4096]).unwrap();
        let code: Vec<u8> = (0..512u32).map(|i| (i % 200) as u8 + 1).collect();
        let mut s = spec(vec![bytes("boot/grub/i386-pc/eltorito.img", &[0x90; 8192])]);
        s.bios = Some(BiosBoot {
            path: "boot/grub/i386-pc/eltorito.img".into(),
            load_sectors: 4,
            boot_info_table: true,
            hybrid_mbr: Some(code.clone()),
        });
        s.efi = Some(EfiBoot::AppendedPartition);
        s.appended = Some(Appended {
            image: efi,
            table: PartitionTable::Gpt,
        });
        let (iso, layout) = write(&s);
        let cat = layout.catalog.unwrap() as usize * 2048;
        let lba = u64::from(u32::from_le_bytes(
            iso[cat + 40..cat + 44].try_into().unwrap(),
        ));
        assert_eq!(&iso[..0x1B0], &code[..0x1B0]);
        assert_eq!(&iso[0x1B0..0x1B8], &(lba * 4 + 4).to_le_bytes());
        assert_eq!(iso[446 + 4], 0xEE, "the protective MBR's partition");
        assert_eq!(&iso[510..512], &[0x55, 0xAA]);
        let boot = &iso[lba as usize * 2048..];
        assert_eq!(&boot[2548..2556], &(lba * 4 + 5).to_le_bytes());
        assert_eq!(
            &boot[12..16],
            &(lba as u32).to_le_bytes(),
            "boot info table too"
        );
        // Too short a code is refused.
        s.bios.as_mut().unwrap().hybrid_mbr = Some(vec![0; 100]);
        assert!(matches!(write_tmp(&s), Err(IsoError::Invalid(_))));
    }

    #[test]
    fn bad_specs_are_errors() {
        let s = spec(vec![bytes("a/../b", b"")]);
        assert!(matches!(write_tmp(&s), Err(IsoError::Invalid(_))));
        let s = spec(vec![bytes("a-b", b""), bytes("a_b", b"")]);
        assert!(matches!(write_tmp(&s), Err(IsoError::Invalid(_))));
        let mut s = spec(vec![bytes("x", b"")]);
        s.bios = Some(BiosBoot {
            path: "y".into(),
            load_sectors: 4,
            boot_info_table: true,
            hybrid_mbr: None,
        });
        assert!(matches!(write_tmp(&s), Err(IsoError::Invalid(_))));
        let mut s = spec(vec![]);
        s.efi = Some(EfiBoot::AppendedPartition);
        assert!(matches!(write_tmp(&s), Err(IsoError::Invalid(_))));
    }

    fn write_tmp(s: &IsoSpec) -> Result<IsoLayout, IsoError> {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("x")).unwrap();
        write_iso(s, &f)
    }
}
