//! Raw disk images (`/image/<schematic>/<version>/<platform>-<arch>.raw`), pure Rust: the
//! partition plan ([`layout`]), the GPT ([`gpt`]), the EFI partition as FAT32 (`fatfs`) and
//! META (the Talos ADV, [`crate::formats::adv`]). Only the sd-boot layout is written
//! (`docs/formats.md` §Disk images); the file is sparse: only the GPT, the FAT structures,
//! the files and META's values are ever written.

pub mod gpt;
pub mod layout;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::formats::adv;
use layout::{DiskBootloader, DiskPlan};

/// `loader/loader.conf` of sd-boot images, byte for byte.
pub const LOADER_CONF: &[u8] = b"# systemd-boot configuration\n\ntimeout 10\n";

/// Everything an sd-boot disk image is made of.
#[derive(Debug, Clone)]
pub struct SdBootImage {
    /// The partition plan (must be [`DiskBootloader::SdBoot`]).
    pub plan: DiskPlan,
    /// Seed of the disk and partition GUIDs and the FAT serial (the asset key).
    pub seed: Vec<u8>,
    /// The imager's `systemd-boot.efi`.
    pub systemd_boot: PathBuf,
    /// `BOOTX64.efi` or `BOOTAA64.efi`.
    pub boot_file_name: &'static str,
    /// The UKI.
    pub uki: PathBuf,
    /// `Talos-<vtag>.efi`.
    pub uki_file_name: String,
    /// META values (empty: META stays zero).
    pub meta: Vec<(u8, Vec<u8>)>,
}

/// Writes `image` to `out` as a sparse file.
pub fn write_sd_boot_image(image: &SdBootImage, out: &Path) -> io::Result<()> {
    let plan = &image.plan;
    if plan.bootloader != DiskBootloader::SdBoot {
        return Err(io::Error::other("only sd-boot images are written"));
    }
    let (Some(efi), Some(meta)) = (plan.partition("EFI"), plan.partition("META")) else {
        return Err(io::Error::other("the plan has no EFI or META partition"));
    };
    // META first: a value that does not fit fails before anything big is written.
    let meta_bytes = if image.meta.is_empty() {
        None
    } else {
        let values: Vec<(u8, &[u8])> = image.meta.iter().map(|(k, v)| (*k, &v[..])).collect();
        Some(adv::encode_copies(&values).map_err(io::Error::other)?)
    };
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)?;
    file.set_len(plan.size_bytes())?;
    gpt::write_gpt(&file, plan, &image.seed)?;
    let serial = gpt::derived_guid(&image.seed, "fat serial");
    write_sd_boot_esp(
        &file,
        efi.offset(),
        efi.size(),
        &EspFiles {
            serial: u32::from_le_bytes([serial[0], serial[1], serial[2], serial[3]]),
            boot_dir: "boot",
            boot_file_name: image.boot_file_name,
            systemd_boot: &image.systemd_boot,
            uki_file_name: &image.uki_file_name,
            uki: &image.uki,
            loader_conf: LOADER_CONF,
        },
    )?;
    if let Some(bytes) = meta_bytes {
        file.write_all_at(&bytes, meta.offset())?;
    }
    file.sync_all()?;
    Ok(())
}

/// What an sd-boot EFI system partition holds: `EFI/<boot_dir>/<boot_file_name>`
/// (systemd-boot), `EFI/Linux/<uki_file_name>` and `loader/loader.conf`.
pub(crate) struct EspFiles<'a> {
    /// The FAT volume serial.
    pub serial: u32,
    /// `boot` (disk images) or `BOOT` (ISOs).
    pub boot_dir: &'a str,
    /// `BOOTX64.efi`, `BOOTAA64.EFI`, ….
    pub boot_file_name: &'a str,
    /// systemd-boot.
    pub systemd_boot: &'a Path,
    /// `Talos-<vtag>.efi`.
    pub uki_file_name: &'a str,
    /// The UKI.
    pub uki: &'a Path,
    /// `loader/loader.conf`.
    pub loader_conf: &'a [u8],
}

/// Formats `size` bytes of `file` from `offset` as FAT32 labelled `EFI` and writes `esp`'s
/// files into it, streamed (disk images' EFI partition, ISOs' `efiboot.img`).
pub(crate) fn write_sd_boot_esp(
    file: &File,
    offset: u64,
    size: u64,
    esp: &EspFiles<'_>,
) -> io::Result<()> {
    let mut window = Window::new(file, offset, size);
    fatfs::format_volume(
        &mut window,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .volume_label(*b"EFI        ")
            .volume_id(esp.serial),
    )?;
    window.seek(SeekFrom::Start(0))?;
    let fs = fatfs::FileSystem::new(window, fatfs::FsOptions::new())?;
    {
        // Directories first, so they take clusters 3..=6 in this order (see
        // `fix_dot_entries`).
        let root = fs.root_dir();
        let efi_dir = root.create_dir("EFI")?;
        let boot = efi_dir.create_dir(esp.boot_dir)?;
        let linux = efi_dir.create_dir("Linux")?;
        let loader = root.create_dir("loader")?;
        copy_into(&boot, esp.boot_file_name, esp.systemd_boot)?;
        copy_into(&linux, esp.uki_file_name, esp.uki)?;
        let mut conf = loader.create_file("loader.conf")?;
        conf.truncate()?;
        conf.write_all(esp.loader_conf)?;
        conf.flush()?;
    }
    fs.unmount()?;
    let mut window = Window::new(file, offset, size);
    fix_dot_entries(&mut window, &[(3, 2), (4, 3), (5, 3), (6, 2)])
}

/// fatfs 0.3 writes a long-name entry before each `.` and `..` of a new directory and points
/// `..` of a directory in the root at cluster 2. FAT wants `.` and `..` as the first two
/// entries and `..` = 0 for the root (`fsck.vfat` renames and deletes them otherwise). For
/// each `(directory cluster, parent cluster)` this checks that the first four entries are
/// exactly `LFN, ".", LFN, ".."` and rewrites them as `".", "..", deleted, deleted`.
fn fix_dot_entries(window: &mut Window<'_>, dirs: &[(u32, u32)]) -> io::Result<()> {
    let mut bpb = [0u8; 512];
    window.seek(SeekFrom::Start(0))?;
    window.read_exact(&mut bpb)?;
    let bytes_per_sector = u64::from(u16::from_le_bytes([bpb[11], bpb[12]]));
    let sectors_per_cluster = u64::from(bpb[13]);
    let reserved = u64::from(u16::from_le_bytes([bpb[14], bpb[15]]));
    let fats = u64::from(bpb[16]);
    let per_fat = u64::from(u32::from_le_bytes([bpb[36], bpb[37], bpb[38], bpb[39]]));
    let data = (reserved + fats * per_fat) * bytes_per_sector;
    let cluster_size = sectors_per_cluster * bytes_per_sector;
    let root = u32::from_le_bytes([bpb[44], bpb[45], bpb[46], bpb[47]]);
    for &(dir, parent) in dirs {
        let at = data + u64::from(dir - 2) * cluster_size;
        let mut e = [0u8; 128];
        window.seek(SeekFrom::Start(at))?;
        window.read_exact(&mut e)?;
        let cluster = |x: &[u8]| {
            u32::from(u16::from_le_bytes([x[20], x[21]])) << 16
                | u32::from(u16::from_le_bytes([x[26], x[27]]))
        };
        let (lfn1, dot, lfn2, dotdot) = (&e[..32], &e[32..64], &e[64..96], &e[96..]);
        if lfn1[11] != 0x0f
            || lfn2[11] != 0x0f
            || &dot[..11] != b".          "
            || &dotdot[..11] != b"..         "
            || cluster(dot) != dir
            || cluster(dotdot) != parent
        {
            return Err(io::Error::other(format!(
                "unexpected dot entries in directory cluster {dir}"
            )));
        }
        let mut fixed = [0u8; 128];
        fixed[..32].copy_from_slice(dot);
        fixed[32..64].copy_from_slice(dotdot);
        if parent == root {
            fixed[32 + 20..32 + 22].fill(0);
            fixed[32 + 26..32 + 28].fill(0);
        }
        fixed[64] = 0xe5;
        fixed[96] = 0xe5;
        window.seek(SeekFrom::Start(at))?;
        window.write_all(&fixed)?;
    }
    Ok(())
}

/// Streams `src` into a new file `name` of `dir` (1 MiB at a time).
pub(crate) fn copy_into<T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<'_, T>,
    name: &str,
    src: &Path,
) -> io::Result<()> {
    let mut input = File::open(src)?;
    let mut f = dir.create_file(name)?;
    f.truncate()?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        f.write_all(&buf[..n])?;
    }
    f.flush()
}

/// A `Read + Write + Seek` view of `len` bytes of a file from `start` (positional I/O, so
/// nothing outside the range is touched).
pub(crate) struct Window<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> Window<'a> {
    pub(crate) fn new(file: &'a File, start: u64, len: u64) -> Window<'a> {
        Window {
            file,
            start,
            len,
            pos: 0,
        }
    }

    fn room(&self, want: usize) -> usize {
        want.min(self.len.saturating_sub(self.pos) as usize)
    }
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for Window<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let put = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(n) if n <= self.len => {
                self.pos = n;
                Ok(n)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factory::quirks::Quirks;

    #[test]
    fn window_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        f.set_len(100).unwrap();
        let mut w = Window::new(&f, 10, 20);
        assert_eq!(w.seek(SeekFrom::End(0)).unwrap(), 20);
        assert!(w.seek(SeekFrom::Current(1)).is_err());
        w.seek(SeekFrom::Start(15)).unwrap();
        assert_eq!(w.write(b"0123456789").unwrap(), 5);
        assert!(w.write(b"x").is_err());
        let mut all = vec![0u8; 100];
        f.read_at(&mut all, 0).unwrap();
        assert_eq!(&all[25..30], b"01234");
        assert!(all[30..].iter().all(|b| *b == 0));
    }

    #[test]
    fn writes_a_sparse_sd_boot_image() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot.efi");
        let uki = dir.path().join("uki.efi");
        std::fs::write(&boot, b"MZ systemd-boot").unwrap();
        let uki_bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&uki, &uki_bytes).unwrap();
        let plan =
            layout::plan(&Quirks::from_tag("v1.11.6"), DiskBootloader::SdBoot, 1246).unwrap();
        let out = dir.path().join("disk.raw");
        let image = SdBootImage {
            plan: plan.clone(),
            seed: b"seed".to_vec(),
            systemd_boot: boot,
            boot_file_name: "BOOTX64.efi",
            uki,
            uki_file_name: "Talos-v1.11.6.efi".into(),
            meta: vec![(0x0c, b"hello".to_vec())],
        };
        write_sd_boot_image(&image, &out).unwrap();
        let f = File::open(&out).unwrap();
        let md = f.metadata().unwrap();
        assert_eq!(md.len(), 2246 << 20);
        use std::os::unix::fs::MetadataExt as _;
        assert!(
            md.blocks() * 512 < 64 << 20,
            "not sparse: {} blocks",
            md.blocks()
        );
        let efi = plan.partition("EFI").unwrap();
        let fs = fatfs::FileSystem::new(
            Window::new(&f, efi.offset(), efi.size()),
            fatfs::FsOptions::new(),
        )
        .unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        let mut got = Vec::new();
        fs.root_dir()
            .open_file("EFI/Linux/Talos-v1.11.6.efi")
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert!(got == uki_bytes);
        let mut conf = Vec::new();
        fs.root_dir()
            .open_file("loader/loader.conf")
            .unwrap()
            .read_to_end(&mut conf)
            .unwrap();
        assert_eq!(conf, LOADER_CONF);
        let meta = plan.partition("META").unwrap();
        let mut m = vec![0u8; adv::PARTITION];
        f.read_at(&mut m, meta.offset()).unwrap();
        assert_eq!(adv::decode_partition(&m), vec![(0x0c, b"hello".to_vec())]);
        // Same inputs, same bytes.
        let again = dir.path().join("again.raw");
        write_sd_boot_image(&image, &again).unwrap();
        let mut a = vec![0u8; 1 << 20];
        let mut b = vec![0u8; 1 << 20];
        f.read_at(&mut a, efi.offset()).unwrap();
        File::open(&again)
            .unwrap()
            .read_at(&mut b, efi.offset())
            .unwrap();
        assert!(a == b);
    }
}
