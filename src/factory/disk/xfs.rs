//! The `BOOT` partition of GRUB and dual-boot images: an XFS file system made by `mkfs.xfs`
//! from a protofile (`-p`: the tree is populated without mounting anything), in a sparse file
//! of the partition's size, then copied into the image by its data extents
//! (`docs/formats.md` §GRUB and dual-boot images).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::factory::tools::{self, RunError};
use crate::formats::sparse;

/// Why `BOOT` could not be made.
#[derive(Debug, thiserror::Error)]
pub enum XfsError {
    /// A name the protofile cannot carry (empty, `$`, whitespace, `/` inside a component).
    #[error("{0:?} cannot be put in an XFS protofile")]
    BadName(String),
    /// Staging or copying failed.
    #[error("the BOOT partition's files")]
    Io(#[from] io::Error),
    /// `mkfs.xfs` failed.
    #[error("mkfs.xfs")]
    Mkfs(#[source] RunError),
}

/// A file of the new file system: `dest` (`A/vmlinuz`), its content from `source`.
#[derive(Debug, Clone)]
pub struct BootFile {
    /// Path inside the file system, `/`-separated, relative.
    pub dest: String,
    /// Where its bytes are.
    pub source: PathBuf,
}

#[derive(Default)]
struct Dir {
    dirs: BTreeMap<String, Dir>,
    files: BTreeMap<String, usize>,
}

fn check_name(name: &str) -> Result<(), XfsError> {
    if name.is_empty()
        || name == "$"
        || name == "."
        || name == ".."
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(XfsError::BadName(name.to_string()));
    }
    Ok(())
}

/// The protofile (`mkfs.xfs(8)`, "-p") for `files`: directories `d--755 0 0`, files
/// `---644 0 0 src/<index>` (the staged name of `files[index]`, relative to mkfs's working
/// directory), entries in name order, directories before files.
pub fn protofile(files: &[BootFile]) -> Result<String, XfsError> {
    let mut root = Dir::default();
    for (i, f) in files.iter().enumerate() {
        let mut parts: Vec<&str> = f.dest.split('/').collect();
        let Some(name) = parts.pop() else {
            return Err(XfsError::BadName(f.dest.clone()));
        };
        let mut dir = &mut root;
        for p in parts {
            check_name(p)?;
            dir = dir.dirs.entry(p.to_string()).or_default();
        }
        check_name(name)?;
        if dir.files.insert(name.to_string(), i).is_some() || dir.dirs.contains_key(name) {
            return Err(XfsError::BadName(f.dest.clone()));
        }
    }
    fn emit(dir: &Dir, depth: usize, out: &mut String) {
        let pad = " ".repeat(depth);
        for (name, sub) in &dir.dirs {
            let _ = writeln!(out, "{pad}{name} d--755 0 0");
            emit(sub, depth + 1, out);
        }
        for (name, index) in &dir.files {
            let _ = writeln!(out, "{pad}{name} ---644 0 0 src/{index}");
        }
        let _ = writeln!(out, "{pad}$");
    }
    let mut out = String::from("/dev/null\n0 0\nd--755 0 0\n");
    emit(&root, 1, &mut out);
    Ok(out)
}

/// The `-m uuid=` text of 16 bytes.
pub fn uuid_text(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Makes `out` (`size` bytes, sparse) an XFS file system labelled `BOOT` holding `files`:
/// `mkfs.xfs -q -K -f -L BOOT -n ftype=1 -m bigtime=1,crc=1,finobt=1,inobtcount=1,reflink=1,
/// rmapbt=0,uuid=<uuid> -i sparse=1,nrext64=0 -s size=<sector_size> -p <protofile> <out>`, run
/// in `work` (which gets the protofile and one symlink per source, so no host path ever reaches
/// the protofile). `sector_size` is the disk's logical sector size (512 or 4096): what
/// `mkfs.xfs` would read from the device upstream formats.
#[allow(clippy::too_many_arguments)]
pub fn make_boot_fs(
    mkfs_xfs: &Path,
    work: &Path,
    files: &[BootFile],
    uuid: &[u8; 16],
    size: u64,
    sector_size: u64,
    out: &Path,
    timeout: Duration,
) -> Result<(), XfsError> {
    let proto = protofile(files)?;
    let src = work.join("src");
    std::fs::create_dir_all(&src)?;
    for (i, f) in files.iter().enumerate() {
        let link = src.join(i.to_string());
        let target = std::path::absolute(&f.source)?;
        std::os::unix::fs::symlink(target, link)?;
    }
    let proto_path = work.join("boot.proto");
    std::fs::write(&proto_path, proto)?;
    File::create(out)?.set_len(size)?;
    let metadata = format!(
        "bigtime=1,crc=1,finobt=1,inobtcount=1,reflink=1,rmapbt=0,uuid={}",
        uuid_text(uuid)
    );
    let sector = format!("size={sector_size}");
    let args: [&OsStr; 17] = [
        "-q".as_ref(),
        "-K".as_ref(),
        "-f".as_ref(),
        "-L".as_ref(),
        "BOOT".as_ref(),
        "-n".as_ref(),
        "ftype=1".as_ref(),
        "-m".as_ref(),
        metadata.as_ref(),
        "-i".as_ref(),
        "sparse=1,nrext64=0".as_ref(),
        "-s".as_ref(),
        sector.as_ref(),
        "-p".as_ref(),
        proto_path.as_os_str(),
        "--".as_ref(),
        out.as_os_str(),
    ];
    tools::run(mkfs_xfs, &args, work, timeout).map_err(XfsError::Mkfs)
}

/// Copies the data of `src` into `dst` at `offset`, by `src`'s data extents, leaving every
/// all-zero 64 KiB block unwritten (the destination range must be a hole, as in a new image).
/// Returns the bytes written.
pub fn copy_data_at(src: &File, dst: &File, offset: u64) -> io::Result<u64> {
    const BLOCK: usize = 64 * 1024;
    let mut buf = vec![0u8; sparse::READ_CHUNK];
    let mut written = 0u64;
    for extent in sparse::data_extents(src)? {
        let extent = extent?;
        let mut at = extent.offset;
        while at < extent.end() {
            let n = usize::try_from((extent.end() - at).min(buf.len() as u64))
                .map_err(io::Error::other)?;
            src.read_exact_at(&mut buf[..n], at)?;
            for (i, block) in buf[..n].chunks(BLOCK).enumerate() {
                if block.iter().any(|b| *b != 0) {
                    dst.write_all_at(block, offset + at + (i * BLOCK) as u64)?;
                    written += block.len() as u64;
                }
            }
            at += n as u64;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf(dest: &str, source: &str) -> BootFile {
        BootFile {
            dest: dest.into(),
            source: source.into(),
        }
    }

    #[test]
    fn protofile_is_a_sorted_tree() {
        let p = protofile(&[
            bf("grub/grub.cfg", "/x/cfg"),
            bf("A/vmlinuz", "/k"),
            bf("A/initramfs.xz", "/i"),
            bf("grub/i386-pc/normal.mod", "/m"),
        ])
        .unwrap();
        assert_eq!(
            p,
            "/dev/null\n0 0\nd--755 0 0\n A d--755 0 0\n  initramfs.xz ---644 0 0 src/2\n  vmlinuz ---644 0 0 src/1\n  $\n grub d--755 0 0\n  i386-pc d--755 0 0\n   normal.mod ---644 0 0 src/3\n   $\n  grub.cfg ---644 0 0 src/0\n  $\n $\n"
        );
        for bad in ["a b", "", "x/", "$", "a/../b", "x\ny"] {
            assert!(protofile(&[bf(bad, "/s")]).is_err(), "{bad:?}");
        }
        assert!(protofile(&[bf("a", "/s"), bf("a", "/t")]).is_err());
        assert!(protofile(&[bf("a/b", "/s"), bf("a", "/t")]).is_err());
    }

    #[test]
    fn uuid_text_is_canonical() {
        let b: [u8; 16] = core::array::from_fn(|i| i as u8);
        assert_eq!(uuid_text(&b), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    }

    #[test]
    fn copy_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = File::create(dir.path().join("src")).unwrap();
        src.set_len(8 << 20).unwrap();
        src.write_all_at(b"superblock", 0).unwrap();
        src.write_all_at(&vec![0u8; 1 << 20], 2 << 20).unwrap();
        src.write_all_at(b"tail", (8 << 20) - 4).unwrap();
        let dst = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("dst"))
            .unwrap();
        dst.set_len(16 << 20).unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        let n = copy_data_at(&src, &dst, 1 << 20).unwrap();
        // At most the two non-zero 64 KiB blocks (less where the file system's extents are
        // smaller); the zero MiB in between is data in `src` but never written.
        assert!((14..=2 * 64 * 1024).contains(&n), "{n} bytes written");
        let mut got = [0u8; 10];
        dst.read_exact_at(&mut got, 1 << 20).unwrap();
        assert_eq!(&got, b"superblock");
        let mut tail = [0u8; 4];
        dst.read_exact_at(&mut tail, (9 << 20) - 4).unwrap();
        assert_eq!(&tail, b"tail");
    }

    /// mkfs.xfs for real, when xfsprogs is here: the label, the UUID and a file read back by
    /// `xfs_db`.
    #[test]
    fn real_mkfs_xfs() {
        let (Some(mkfs), true) = (
            tools::Tool::MkfsXfs.locate(),
            Path::new("/usr/sbin/xfs_db").exists(),
        ) else {
            eprintln!("xfsprogs not installed: skipped");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("kernel with space");
        std::fs::write(&content, b"kernel bytes").unwrap();
        let uuid: [u8; 16] = core::array::from_fn(|i| (i * 7) as u8);
        for sector in [512u64, 4096] {
            let out = dir.path().join(format!("boot{sector}.xfs"));
            let work = dir.path().join(format!("work{sector}"));
            std::fs::create_dir(&work).unwrap();
            make_boot_fs(
                &mkfs,
                &work,
                &[bf("A/vmlinuz", content.to_str().unwrap())],
                &uuid,
                1000 << 20,
                sector,
                &out,
                Duration::from_secs(120),
            )
            .unwrap();
            let db = std::process::Command::new("/usr/sbin/xfs_db")
                .args(["-r", "-c", "label", "-c", "uuid", "-c", "ls /A"])
                .args(["-c", "sb 0", "-c", "p sectsize"])
                .arg(&out)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&db.stdout);
            assert!(text.contains("label = \"BOOT\""), "{text}");
            assert!(text.contains(&uuid_text(&uuid)), "{text}");
            assert!(text.contains("vmlinuz"), "{text}");
            assert!(text.contains(&format!("sectsize = {sector}")), "{text}");
            assert_eq!(std::fs::metadata(&out).unwrap().len(), 1000 << 20);
            std::fs::remove_file(&out).unwrap();
        }
        // A failing mkfs.xfs (a source that does not exist) names itself and says why.
        let e = make_boot_fs(
            &mkfs,
            &dir.path().join("work2").tap_mkdir(),
            &[bf("A/vmlinuz", "/nonexistent/kernel")],
            &uuid,
            1000 << 20,
            512,
            &dir.path().join("b2.xfs"),
            Duration::from_secs(120),
        )
        .unwrap_err();
        assert!(
            matches!(e, XfsError::Mkfs(RunError::Failed { .. })),
            "{e:?}"
        );
    }

    trait TapMkdir {
        fn tap_mkdir(self) -> Self;
    }

    impl TapMkdir for PathBuf {
        fn tap_mkdir(self) -> Self {
            std::fs::create_dir_all(&self).unwrap();
            self
        }
    }
}
