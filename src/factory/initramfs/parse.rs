//! Reading a built initramfs back, the way the factory's integration test
//! (`internal/integration/initramfs_test.go` `assertInitramfs`) does: split the concatenated
//! archives (uncompressed newc cpio, zstd frames, xz streams, NUL padding between them), list
//! each archive's entries, read `extensions.yaml` from the last archive, and open the `.sqsh`
//! files it names.

use std::fs::File;
use std::io::{self, BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use backhand::InnerNode;
use yaml_rust2::{Yaml, YamlLoader};

use super::{InitramfsError, Magic, io_err, magic_of, xz};
use crate::formats::cpio::CpioReader;

/// How one archive of an initramfs is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveCompression {
    /// An uncompressed newc cpio (the early microcode archive).
    None,
    /// One zstd frame.
    Zstd,
    /// One xz stream.
    Xz,
}

/// One archive of a concatenated initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// Offset of its first byte in the file.
    pub offset: u64,
    /// Its length in the file: the compressed length of a zstd frame or xz stream; for an
    /// uncompressed archive, up to the end of its trailer (the NUL padding after it is not
    /// counted).
    pub len: u64,
    /// How it is stored.
    pub compression: ArchiveCompression,
    /// Entry names in archive order (without the trailer).
    pub entries: Vec<String>,
}

/// One layer of `extensions.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// `image` (e.g. `0.sqsh`).
    pub image: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.version`.
    pub version: String,
}

/// A parsed initramfs (see [`parse_initramfs`]).
#[derive(Debug, Clone)]
pub struct ParsedInitramfs {
    /// The file.
    pub path: PathBuf,
    /// The archives in file order.
    pub archives: Vec<ArchiveInfo>,
    /// `extensions.yaml` of the last archive, if it has one.
    pub extensions_yaml: Option<String>,
    /// Its layers, in order.
    pub layers: Vec<LayerInfo>,
}

fn format_err(msg: impl Into<String>) -> InitramfsError {
    InitramfsError::Format(msg.into())
}

/// Walks one zstd frame from its start: returns its length (header, blocks, checksum).
fn zstd_frame_len<R: Read + Seek>(r: &mut R, start: u64) -> io::Result<u64> {
    let bad = |m: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("zstd frame at {start}: {m}"),
        )
    };
    r.seek(SeekFrom::Start(start))?;
    let mut hdr = [0u8; 5];
    r.read_exact(&mut hdr)?;
    let magic = u32::from_le_bytes(hdr[..4].try_into().expect("4 bytes"));
    if (0x184D_2A50..=0x184D_2A5F).contains(&magic) {
        // Skippable frame: magic, u32 size, data.
        let mut size = [0u8; 4];
        r.seek(SeekFrom::Start(start + 4))?;
        r.read_exact(&mut size)?;
        return Ok(8 + u64::from(u32::from_le_bytes(size)));
    }
    if magic != 0xFD2F_B528 {
        return Err(bad("bad magic"));
    }
    let fhd = hdr[4];
    let fcs_flag = fhd >> 6;
    let single_segment = fhd & 0x20 != 0;
    let checksum = fhd & 0x04 != 0;
    let dict_id = [0u64, 1, 2, 4][(fhd & 3) as usize];
    let fcs = match (fcs_flag, single_segment) {
        (0, false) => 0,
        (0, true) => 1,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    let window = u64::from(!single_segment);
    let mut pos = start + 5 + window + dict_id + fcs;
    loop {
        r.seek(SeekFrom::Start(pos))?;
        let mut b = [0u8; 3];
        r.read_exact(&mut b)?;
        let h = u32::from(b[0]) | (u32::from(b[1]) << 8) | (u32::from(b[2]) << 16);
        let last = h & 1 != 0;
        let size = u64::from(h >> 3);
        let content = match (h >> 1) & 3 {
            0 | 2 => size,
            1 => 1,
            _ => return Err(bad("reserved block type")),
        };
        pos += 3 + content;
        if last {
            break;
        }
    }
    if checksum {
        pos += 4;
    }
    Ok(pos - start)
}

/// Lists a cpio archive's entry names.
fn list_cpio(data: impl Read) -> io::Result<Vec<String>> {
    let mut r = CpioReader::new(data);
    let mut names = Vec::new();
    while let Some(h) = r.next_header()? {
        names.push(h.name);
    }
    Ok(names)
}

/// Parses the initramfs at `path`: its archives, the entries of each, and the layers of the
/// last archive's `extensions.yaml`.
pub fn parse_initramfs(path: &Path) -> Result<ParsedInitramfs, InitramfsError> {
    let mut f =
        BufReader::new(File::open(path).map_err(io_err(format!("open {}", path.display())))?);
    let len = f.get_ref().metadata().map_err(io_err("stat"))?.len();

    // xz streams are delimited from their end (footer → index → start), so find them first:
    // working back from the end of the file over NUL padding.
    let mut xz_spans = Vec::new();
    let mut end = len;
    loop {
        end = skip_nuls_back(&mut f, end).map_err(io_err("read"))?;
        match xz::stream_start_before(&mut f, end).map_err(io_err("read"))? {
            Some(start) => {
                xz_spans.push((start, end));
                end = start;
            }
            None => break,
        }
    }

    let mut archives = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        f.seek(SeekFrom::Start(pos)).map_err(io_err("seek"))?;
        let mut head = [0u8; 6];
        let n = read_up_to(&mut f, &mut head).map_err(io_err("read"))?;
        if head[0] == 0 {
            // NUL padding between archives.
            pos += head[..n].iter().take_while(|&&b| b == 0).count() as u64;
            continue;
        }
        let archive = match magic_of(&head[..n]) {
            Some(Magic::Cpio) => {
                f.seek(SeekFrom::Start(pos)).map_err(io_err("seek"))?;
                let mut r = CpioReader::new(&mut f);
                let mut entries = Vec::new();
                while let Some(h) = r
                    .next_header()
                    .map_err(|e| format_err(format!("cpio at {pos}: {e}")))?
                {
                    entries.push(h.name);
                }
                ArchiveInfo {
                    offset: pos,
                    len: r.offset(),
                    compression: ArchiveCompression::None,
                    entries,
                }
            }
            Some(Magic::Zstd) => {
                let flen = zstd_frame_len(&mut f, pos).map_err(io_err("zstd frame"))?;
                f.seek(SeekFrom::Start(pos)).map_err(io_err("seek"))?;
                let frame = (&mut f).take(flen);
                let dec = zstd::stream::read::Decoder::new(frame)
                    .map_err(io_err("zstd"))?
                    .single_frame();
                let entries = list_cpio(dec)
                    .map_err(|e| format_err(format!("zstd archive at {pos}: {e}")))?;
                ArchiveInfo {
                    offset: pos,
                    len: flen,
                    compression: ArchiveCompression::Zstd,
                    entries,
                }
            }
            Some(Magic::Xz) => {
                let Some(&(_, end)) = xz_spans.iter().find(|(s, _)| *s == pos) else {
                    return Err(format_err(format!("cannot delimit the xz stream at {pos}")));
                };
                let data = read_span(&mut f, pos, end - pos)?;
                let plain = xz::decode(&data).map_err(io_err(format!("xz archive at {pos}")))?;
                let entries = list_cpio(&plain[..])
                    .map_err(|e| format_err(format!("xz archive at {pos}: {e}")))?;
                ArchiveInfo {
                    offset: pos,
                    len: end - pos,
                    compression: ArchiveCompression::Xz,
                    entries,
                }
            }
            None => {
                return Err(format_err(format!(
                    "unknown data at offset {pos} of {} (magic {:02x?})",
                    path.display(),
                    &head[..n]
                )));
            }
        };
        // A header can claim more than the file holds (a zstd frame's block sizes, a cpio
        // entry's size): such an archive is truncated, not an archive (found by fuzzing).
        if archive
            .offset
            .checked_add(archive.len)
            .is_none_or(|end| end > len)
        {
            return Err(format_err(format!(
                "truncated archive at offset {pos} of {}: it claims {} bytes, the file has {}",
                path.display(),
                archive.len,
                len - pos
            )));
        }
        pos = archive.offset + archive.len.max(1);
        archives.push(archive);
    }

    let mut parsed = ParsedInitramfs {
        path: path.to_path_buf(),
        archives,
        extensions_yaml: None,
        layers: Vec::new(),
    };
    if let Some(last) = parsed.archives.last()
        && last.entries.iter().any(|e| e == "extensions.yaml")
    {
        let yaml = parsed.read_entry(parsed.archives.len() - 1, "extensions.yaml")?;
        let text =
            String::from_utf8(yaml).map_err(|_| format_err("extensions.yaml is not UTF-8"))?;
        parsed.layers = layers_of(&text)?;
        parsed.extensions_yaml = Some(text);
    }
    Ok(parsed)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn skip_nuls_back<R: Read + Seek>(r: &mut R, mut end: u64) -> io::Result<u64> {
    let mut buf = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        r.seek(SeekFrom::Start(start))?;
        r.read_exact(chunk)?;
        match chunk.iter().rposition(|&b| b != 0) {
            Some(i) => return Ok(start + i as u64 + 1),
            None => end = start,
        }
    }
    Ok(0)
}

fn read_span<R: Read + Seek>(r: &mut R, offset: u64, len: u64) -> Result<Vec<u8>, InitramfsError> {
    r.seek(SeekFrom::Start(offset)).map_err(io_err("seek"))?;
    let mut data = vec![0u8; len as usize];
    r.read_exact(&mut data).map_err(io_err("read"))?;
    Ok(data)
}

fn layers_of(text: &str) -> Result<Vec<LayerInfo>, InitramfsError> {
    let docs =
        YamlLoader::load_from_str(text).map_err(|e| format_err(format!("extensions.yaml: {e}")))?;
    let doc = docs.into_iter().next().unwrap_or(Yaml::Null);
    let scalar = |y: &Yaml| match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        _ => String::new(),
    };
    let Yaml::Array(items) = &doc["layers"] else {
        return Ok(Vec::new());
    };
    Ok(items
        .iter()
        .map(|l| LayerInfo {
            image: scalar(&l["image"]),
            name: scalar(&l["metadata"]["name"]),
            version: scalar(&l["metadata"]["version"]),
        })
        .collect())
}

impl ParsedInitramfs {
    /// The early (uncompressed) archive's entries, when the file starts with one.
    pub fn early_entries(&self) -> Option<&[String]> {
        self.archives
            .first()
            .filter(|a| a.compression == ArchiveCompression::None)
            .map(|a| a.entries.as_slice())
    }

    /// The last archive (the one with the extensions).
    pub fn last_archive(&self) -> Option<&ArchiveInfo> {
        self.archives.last()
    }

    /// Layer names in order (`[extensions…, "schematic", "modules.dep"?]` for factory builds).
    pub fn layer_names(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.name.clone()).collect()
    }

    /// Reads the raw (possibly compressed) bytes of archive `index` from the file.
    pub fn archive_bytes(&self, index: usize) -> Result<Vec<u8>, InitramfsError> {
        let a = self
            .archives
            .get(index)
            .ok_or_else(|| format_err(format!("no archive #{index}")))?;
        let mut f =
            File::open(&self.path).map_err(io_err(format!("open {}", self.path.display())))?;
        read_span(&mut f, a.offset, a.len)
    }

    /// Reads the entry `name` of archive `index` into memory (`Err` if it is not there).
    pub fn read_entry(&self, index: usize, name: &str) -> Result<Vec<u8>, InitramfsError> {
        let a = self
            .archives
            .get(index)
            .ok_or_else(|| format_err(format!("no archive #{index}")))?;
        let raw = self.archive_bytes(index)?;
        let plain: Box<dyn Read> = match a.compression {
            ArchiveCompression::None => Box::new(Cursor::new(raw)),
            ArchiveCompression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(Cursor::new(raw))
                    .map_err(io_err("zstd"))?
                    .single_frame(),
            ),
            ArchiveCompression::Xz => {
                Box::new(Cursor::new(xz::decode(&raw).map_err(io_err("xz"))?))
            }
        };
        let mut r = CpioReader::new(plain);
        while let Some(h) = r.next_header().map_err(io_err("cpio"))? {
            if h.name == name {
                return r.read_data().map_err(io_err(format!("read {name}")));
            }
        }
        Err(format_err(format!("no entry {name:?} in archive #{index}")))
    }

    /// Opens the squashfs `sqsh` (e.g. `0.sqsh`, `modules.dep.sqsh`) of the last archive with
    /// backhand and lists its paths (absolute, `/` first), in backhand's order.
    pub fn squashfs_paths(&self, sqsh: &str) -> Result<Vec<String>, InitramfsError> {
        let image = self.read_entry(self.archives.len().saturating_sub(1), sqsh)?;
        super::contain_squashfs_panic(
            || sqsh.to_string(),
            || {
                let fs = super::untrusted::open(Cursor::new(image))
                    .map_err(|e| format_err(format!("{sqsh}: {e}")))?;
                Ok(fs
                    .files()
                    .map(|n| n.fullpath.display().to_string())
                    .collect())
            },
        )
    }

    /// Reads the regular file `path` (absolute) from the squashfs `sqsh` of the last archive.
    pub fn squashfs_file(&self, sqsh: &str, path: &str) -> Result<Vec<u8>, InitramfsError> {
        let image = self.read_entry(self.archives.len().saturating_sub(1), sqsh)?;
        super::contain_squashfs_panic(
            || format!("{sqsh}:{path}"),
            || Self::squashfs_file_in(image, sqsh, path),
        )
    }

    fn squashfs_file_in(image: Vec<u8>, sqsh: &str, path: &str) -> Result<Vec<u8>, InitramfsError> {
        let fs = super::untrusted::open(Cursor::new(image))
            .map_err(|e| format_err(format!("{sqsh}: {e}")))?;
        for node in fs.files() {
            if node.fullpath == Path::new(path)
                && let InnerNode::File(file) = &node.inner
            {
                super::check_squashfs_file(&fs, file)
                    .map_err(|m| format_err(format!("{sqsh}: {m}")))?;
                let mut data = Vec::new();
                fs.file(file)
                    .reader()
                    .read_to_end(&mut data)
                    .map_err(io_err(format!("{sqsh}:{path}")))?;
                return Ok(data);
            }
        }
        Err(format_err(format!("no file {path} in {sqsh}")))
    }
}
