//! PE32+ images, the part a Unified Kernel Image needs: read the headers and section table of
//! a UEFI stub (systemd-stub, `linuxx64.efi.stub`), and lay out a new image that is the stub
//! with sections appended (`.osrel`, `.cmdline`, `.linux`, `.initrd`, …), the way the Talos
//! imager assembles UKIs natively (`docs/formats.md`, "UKI assembly").
//!
//! The layout, in file order:
//!
//! ```text
//! 0x00  the stub's 64-byte DOS header, e_lfanew (u32 at 0x3C) set to 0x80
//! 0x40  64 zero bytes (the stub's DOS program is dropped)
//! 0x80  "PE\0\0"
//! 0x84  COFF header (20 bytes): the stub's, NumberOfSections counted again,
//!       TimeDateStamp = SOURCE_DATE_EPOCH, no COFF symbol table
//! 0x98  optional header (PE32+, 240 bytes: 16 data directories): the stub's, with the linker
//!       version and CheckSum zeroed, SizeOfCode / SizeOfInitializedData summed again from the
//!       sections, SizeOfHeaders and SizeOfImage recomputed; data directories unchanged
//! 0x188 section table (40 bytes each): the stub's sections (name, sizes, addresses and flags
//!       kept, relocation and line-number fields zeroed), then the appended ones
//!       ... zero padding up to SizeOfHeaders = align(0x80 + 20 + 240 + 40·n, FileAlignment)
//!       section data in table order, each padded with zeros to its SizeOfRawData
//! ```
//!
//! Appended sections start at the first SectionAlignment boundary after the stub's last
//! section in memory; each gets `VirtualSize` = its length, `SizeOfRawData` = its length rounded
//! up to FileAlignment, and the flags `INITIALIZED_DATA | MEM_READ`. The result depends only on
//! the stub, the sections and the timestamp: the same inputs give the same bytes.
//!
//! Upstream refuses stubs that carry a COFF symbol table (its own stubs are stripped). Debian's
//! `linuxx64.efi.stub` has one (deprecated in images, never loaded, stored after the sections):
//! it is left out of the output and its pointer and count zeroed, as `strip` would, so such a
//! stub works too; for stripped stubs the output is upstream's byte for byte.
//!
//! Written by hand: no maintained crate assembles a PE image this way, and the subset read
//! here is small. Every offset and size read from the stub is checked against the file before
//! use; a malformed stub is an error naming what is wrong, never a panic. Appended section data
//! is streamed ([`Layout::write`]), never held in memory.

use std::io::{self, Read, Write};

/// `MZ`.
const DOS_MAGIC: &[u8; 2] = b"MZ";
/// Length of the DOS header kept from the stub.
const DOS_HEADER_LEN: usize = 0x40;
/// Where the output's PE signature goes (DOS header + 0x40 bytes of padding).
const PE_OFFSET: u32 = 0x80;
const PE_SIGNATURE: &[u8; 4] = b"PE\0\0";
const COFF_LEN: usize = 20;
/// PE32+ optional header with 16 data directories.
const OPTIONAL_LEN: usize = 240;
const PE32_PLUS_MAGIC: u16 = 0x20b;
const SECTION_HEADER_LEN: usize = 40;
/// The PE format's own limit on sections.
pub const MAX_SECTIONS: usize = 96;
/// The PE format's bounds on FileAlignment.
const MIN_FILE_ALIGNMENT: u32 = 512;
const MAX_FILE_ALIGNMENT: u32 = 64 * 1024;

/// Section flag: the section holds code.
pub const SCN_CNT_CODE: u32 = 0x0000_0020;
/// Section flag: the section holds initialized data.
pub const SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
/// Section flag: the section is readable.
pub const SCN_MEM_READ: u32 = 0x4000_0000;

// Offsets inside the optional header (PE32+).
const OPT_MAJOR_LINKER: usize = 2;
const OPT_MINOR_LINKER: usize = 3;
const OPT_SIZE_OF_CODE: usize = 4;
const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
const OPT_IMAGE_BASE: usize = 24;
const OPT_SECTION_ALIGNMENT: usize = 32;
const OPT_FILE_ALIGNMENT: usize = 36;
const OPT_SIZE_OF_IMAGE: usize = 56;
const OPT_SIZE_OF_HEADERS: usize = 60;
const OPT_CHECKSUM: usize = 64;
const OPT_NUMBER_OF_RVA_AND_SIZES: usize = 108;

// Offsets inside the COFF header.
const COFF_NUMBER_OF_SECTIONS: usize = 2;
const COFF_TIME_DATE_STAMP: usize = 4;
const COFF_POINTER_TO_SYMBOL_TABLE: usize = 8;
const COFF_NUMBER_OF_SYMBOLS: usize = 12;
const COFF_SIZE_OF_OPTIONAL_HEADER: usize = 16;

/// Why a stub cannot be used, or a UKI cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeError {
    /// Not a PE image: no `MZ`, no `PE\0\0` where `e_lfanew` points, or shorter than its
    /// headers.
    #[error("not a PE image: {0}")]
    NotPe(&'static str),
    /// A PE image, but not one a UKI can be built on.
    #[error("unsupported PE image: {0}")]
    Unsupported(String),
    /// A header field points outside the file or contradicts another.
    #[error("malformed PE image: {0}")]
    Malformed(String),
    /// The result would not fit the format's 32-bit fields.
    #[error("UKI too large: {0}")]
    TooLarge(String),
}

/// One entry of a section table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name, NUL-padded to 8 bytes.
    pub name: [u8; 8],
    /// Size in memory.
    pub virtual_size: u32,
    /// Address in memory, relative to the image base.
    pub virtual_address: u32,
    /// Size in the file (a multiple of FileAlignment).
    pub size_of_raw_data: u32,
    /// Offset in the file.
    pub pointer_to_raw_data: u32,
    /// `SCN_*` flags.
    pub characteristics: u32,
}

impl Section {
    /// The name without its NUL padding (`.linux`).
    pub fn name(&self) -> &[u8] {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(8);
        &self.name[..end]
    }

    fn parse(b: &[u8]) -> Section {
        Section {
            name: b[0..8].try_into().expect("8 bytes"),
            virtual_size: le32(b, 8),
            virtual_address: le32(b, 12),
            size_of_raw_data: le32(b, 16),
            pointer_to_raw_data: le32(b, 20),
            characteristics: le32(b, 36),
        }
    }

    /// The 40-byte header as the assembled image has it (relocation and line-number fields
    /// zero).
    fn encode(&self) -> [u8; SECTION_HEADER_LEN] {
        let mut out = [0u8; SECTION_HEADER_LEN];
        out[0..8].copy_from_slice(&self.name);
        out[8..12].copy_from_slice(&self.virtual_size.to_le_bytes());
        out[12..16].copy_from_slice(&self.virtual_address.to_le_bytes());
        out[16..20].copy_from_slice(&self.size_of_raw_data.to_le_bytes());
        out[20..24].copy_from_slice(&self.pointer_to_raw_data.to_le_bytes());
        out[36..40].copy_from_slice(&self.characteristics.to_le_bytes());
        out
    }
}

/// A parsed PE32+ image: its headers and section table, borrowing the file's bytes.
#[derive(Debug, Clone)]
pub struct PeImage<'a> {
    bytes: &'a [u8],
    coff: [u8; COFF_LEN],
    optional: [u8; OPTIONAL_LEN],
    sections: Vec<Section>,
}

impl<'a> PeImage<'a> {
    /// Reads the headers and section table of a PE32+ image with the standard 240-byte
    /// optional header (what UEFI stubs are), checking that every section's file data lies
    /// inside `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<PeImage<'a>, PeError> {
        if bytes.len() < DOS_HEADER_LEN || &bytes[0..2] != DOS_MAGIC {
            return Err(PeError::NotPe("no MZ header"));
        }
        let pe = le32(bytes, 0x3c) as usize;
        let coff_at = pe
            .checked_add(PE_SIGNATURE.len())
            .filter(|&at| {
                at.checked_add(COFF_LEN)
                    .is_some_and(|end| end <= bytes.len())
            })
            .ok_or(PeError::NotPe("e_lfanew points past the end"))?;
        if &bytes[pe..coff_at] != PE_SIGNATURE {
            return Err(PeError::NotPe("no PE signature at e_lfanew"));
        }
        let coff: [u8; COFF_LEN] = bytes[coff_at..coff_at + COFF_LEN]
            .try_into()
            .expect("length checked");
        let optional_len = usize::from(le16(&coff, COFF_SIZE_OF_OPTIONAL_HEADER));
        if optional_len != OPTIONAL_LEN {
            return Err(PeError::Unsupported(format!(
                "an optional header of {optional_len} bytes (want the PE32+ header of {OPTIONAL_LEN})"
            )));
        }
        let optional_at = coff_at + COFF_LEN;
        let table_at = optional_at + OPTIONAL_LEN;
        let optional: [u8; OPTIONAL_LEN] = bytes
            .get(optional_at..table_at)
            .ok_or(PeError::NotPe("optional header past the end"))?
            .try_into()
            .expect("length checked");
        let magic = le16(&optional, 0);
        if magic != PE32_PLUS_MAGIC {
            return Err(PeError::Unsupported(format!(
                "optional header magic {magic:#x} (want PE32+, 0x20b)"
            )));
        }
        let directories = le32(&optional, OPT_NUMBER_OF_RVA_AND_SIZES);
        if directories != 16 {
            return Err(PeError::Unsupported(format!(
                "{directories} data directories (want 16)"
            )));
        }
        let section_alignment = le32(&optional, OPT_SECTION_ALIGNMENT);
        let file_alignment = le32(&optional, OPT_FILE_ALIGNMENT);
        // The PE format's bounds: FileAlignment a power of two from 512 to 64 KiB (which also
        // keeps the zero padding of a hostile stub small, and leaves room for the PE signature
        // that SizeOfHeaders does not count), SectionAlignment a power of two at least as large.
        if !file_alignment.is_power_of_two()
            || !(MIN_FILE_ALIGNMENT..=MAX_FILE_ALIGNMENT).contains(&file_alignment)
            || !section_alignment.is_power_of_two()
            || section_alignment < file_alignment
        {
            return Err(PeError::Malformed(format!(
                "alignments: section {section_alignment:#x}, file {file_alignment:#x}"
            )));
        }
        let count = usize::from(le16(&coff, COFF_NUMBER_OF_SECTIONS));
        if count == 0 || count > MAX_SECTIONS {
            return Err(PeError::Malformed(format!("{count} sections")));
        }
        let table = bytes
            .get(table_at..table_at + count * SECTION_HEADER_LEN)
            .ok_or(PeError::NotPe("section table past the end"))?;
        let sections: Vec<Section> = table
            .chunks_exact(SECTION_HEADER_LEN)
            .map(Section::parse)
            .collect();
        for s in &sections {
            let end = u64::from(s.pointer_to_raw_data) + u64::from(s.size_of_raw_data);
            if s.size_of_raw_data != 0 && end > bytes.len() as u64 {
                return Err(PeError::Malformed(format!(
                    "section {} ends at {end:#x}, past the end of the file ({:#x})",
                    String::from_utf8_lossy(s.name()),
                    bytes.len()
                )));
            }
        }
        Ok(PeImage {
            bytes,
            coff,
            optional,
            sections,
        })
    }

    /// The section table in file order.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The first section named `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name() == name.as_bytes())
    }

    /// The file bytes of a section: `SizeOfRawData` bytes, or fewer when `VirtualSize` is
    /// smaller (the padding is not part of the content). In bounds: checked by [`parse`].
    ///
    /// [`parse`]: PeImage::parse
    pub fn section_data(&self, s: &Section) -> &'a [u8] {
        let raw = self.raw_data(s);
        &raw[..raw.len().min(s.virtual_size as usize)]
    }

    /// The whole raw data of a section, padding included (what the assembled image copies).
    fn raw_data(&self, s: &Section) -> &'a [u8] {
        if s.size_of_raw_data == 0 {
            // No file data; its pointer is meaningless (and not checked).
            return &[];
        }
        let start = s.pointer_to_raw_data as usize;
        &self.bytes[start..start + s.size_of_raw_data as usize]
    }

    /// `TimeDateStamp` of the COFF header.
    pub fn timestamp(&self) -> u32 {
        le32(&self.coff, COFF_TIME_DATE_STAMP)
    }

    /// The optional header (240 bytes).
    pub fn optional_header(&self) -> &[u8; OPTIONAL_LEN] {
        &self.optional
    }

    fn section_alignment(&self) -> u32 {
        le32(&self.optional, OPT_SECTION_ALIGNMENT)
    }

    fn file_alignment(&self) -> u32 {
        le32(&self.optional, OPT_FILE_ALIGNMENT)
    }
}

/// A section to append: its name (at most 8 bytes) and the exact length of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// `.osrel`, `.linux`, …
    pub name: String,
    /// Content length in bytes.
    pub len: u64,
}

/// Where a section's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// The stub's section `index`.
    Stub(usize),
    /// The appended section `index`.
    Appended(usize),
}

/// An assembled UKI, laid out: the headers (written first), then each section's data at its
/// offset. [`Layout::write`] streams it.
#[derive(Debug, Clone)]
pub struct Layout {
    headers: Vec<u8>,
    sections: Vec<(Section, Source)>,
    appended_len: Vec<u64>,
    len: u64,
}

impl Layout {
    /// Lays out `stub` with `appended` after its sections, COFF `TimeDateStamp` = `timestamp`
    /// (the factory's `SOURCE_DATE_EPOCH`).
    pub fn new(
        stub: &PeImage<'_>,
        appended: &[Appended],
        timestamp: u32,
    ) -> Result<Layout, PeError> {
        let count = stub.sections.len() + appended.len();
        if count > MAX_SECTIONS {
            return Err(PeError::TooLarge(format!("{count} sections")));
        }
        let sa = u64::from(stub.section_alignment());
        let fa = u64::from(stub.file_alignment());
        let too_large = |what: &str| PeError::TooLarge(what.to_string());
        let to32 = |v: u64, what: &str| u32::try_from(v).map_err(|_| too_large(what));

        let mut sections: Vec<(Section, Source)> = stub
            .sections
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), Source::Stub(i)))
            .collect();
        let last = stub.sections.last().expect("parse refuses no sections");
        let mut va = align(
            u64::from(last.virtual_address) + u64::from(last.virtual_size),
            sa,
        );
        for (i, a) in appended.iter().enumerate() {
            let name = a.name.as_bytes();
            if name.is_empty() || name.len() > 8 {
                return Err(PeError::Unsupported(format!(
                    "section name {:?} (1 to 8 bytes)",
                    a.name
                )));
            }
            let mut padded = [0u8; 8];
            padded[..name.len()].copy_from_slice(name);
            sections.push((
                Section {
                    name: padded,
                    virtual_size: to32(a.len, &a.name)?,
                    virtual_address: to32(va, "image size")?,
                    size_of_raw_data: to32(align(a.len, fa), &a.name)?,
                    pointer_to_raw_data: 0,
                    characteristics: SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ,
                },
                Source::Appended(i),
            ));
            va = align(va + a.len, sa);
        }

        let headers_len = align(
            u64::from(PE_OFFSET) + (COFF_LEN + OPTIONAL_LEN + SECTION_HEADER_LEN * count) as u64,
            fa,
        );
        let mut offset = headers_len;
        for (s, _) in &mut sections {
            s.pointer_to_raw_data = to32(offset, "file size")?;
            offset += u64::from(s.size_of_raw_data);
        }

        // The optional header, fields recomputed.
        let mut optional = stub.optional;
        optional[OPT_MAJOR_LINKER] = 0;
        optional[OPT_MINOR_LINKER] = 0;
        put32(&mut optional, OPT_CHECKSUM, 0);
        let (mut code, mut data) = (0u64, 0u64);
        for (s, _) in &sections {
            if s.characteristics & SCN_CNT_INITIALIZED_DATA != 0 {
                data += u64::from(s.size_of_raw_data);
            } else {
                code += u64::from(s.size_of_raw_data);
            }
        }
        put32(&mut optional, OPT_SIZE_OF_CODE, to32(code, "code size")?);
        put32(
            &mut optional,
            OPT_SIZE_OF_INITIALIZED_DATA,
            to32(data, "data size")?,
        );
        put32(
            &mut optional,
            OPT_SIZE_OF_HEADERS,
            to32(headers_len, "headers")?,
        );
        let (end_section, _) = sections.last().expect("at least the stub's");
        // align(ImageBase + end, SA) − ImageBase, computed without overflow for any base:
        // only the base's offset from an SA boundary matters.
        let base_offset = le64(&optional, OPT_IMAGE_BASE) % sa;
        let end = u64::from(end_section.virtual_address) + u64::from(end_section.virtual_size);
        let size_of_image = align(base_offset + end, sa) - base_offset;
        put32(
            &mut optional,
            OPT_SIZE_OF_IMAGE,
            to32(size_of_image, "image size")?,
        );

        let mut coff = stub.coff;
        // The symbol table (if any) is not copied.
        put32(&mut coff, COFF_POINTER_TO_SYMBOL_TABLE, 0);
        put32(&mut coff, COFF_NUMBER_OF_SYMBOLS, 0);
        put16(
            &mut coff,
            COFF_NUMBER_OF_SECTIONS,
            u16::try_from(count).expect("at most 96"),
        );
        put32(&mut coff, COFF_TIME_DATE_STAMP, timestamp);

        let mut headers = Vec::with_capacity(headers_len as usize);
        headers.extend_from_slice(&stub.bytes[..DOS_HEADER_LEN]);
        headers[0x3c..0x40].copy_from_slice(&PE_OFFSET.to_le_bytes());
        headers.resize(PE_OFFSET as usize, 0);
        headers.extend_from_slice(PE_SIGNATURE);
        headers.extend_from_slice(&coff);
        headers.extend_from_slice(&optional);
        for (s, _) in &sections {
            headers.extend_from_slice(&s.encode());
        }
        headers.resize(headers_len as usize, 0);

        Ok(Layout {
            headers,
            sections,
            appended_len: appended.iter().map(|a| a.len).collect(),
            len: offset,
        })
    }

    /// The length of the assembled image in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the image is empty (never: it has headers).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The section table of the assembled image.
    pub fn sections(&self) -> impl Iterator<Item = &Section> {
        self.sections.iter().map(|(s, _)| s)
    }

    /// Writes the image to `out`: headers, then the stub's sections from `stub` (the image
    /// this layout was made from) and the appended ones from `appended` (one reader per
    /// appended section, in order), each zero-padded. A reader that gives fewer or more bytes
    /// than its section's announced length is an error (`InvalidData`), so a file that changed
    /// between measuring and reading never yields a wrong image.
    pub fn write<W: Write>(
        &self,
        stub: &PeImage<'_>,
        appended: &mut [&mut dyn Read],
        out: &mut W,
    ) -> io::Result<()> {
        if appended.len() != self.appended_len.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} readers for {} appended sections",
                    appended.len(),
                    self.appended_len.len()
                ),
            ));
        }
        out.write_all(&self.headers)?;
        for (s, source) in &self.sections {
            let written = match source {
                Source::Stub(i) => {
                    let data = stub
                        .sections
                        .get(*i)
                        .map(|section| stub.raw_data(section))
                        .filter(|data| data.len() as u64 == u64::from(s.size_of_raw_data))
                        .ok_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::InvalidInput,
                                "not the stub this layout was made from",
                            )
                        })?;
                    out.write_all(data)?;
                    data.len() as u64
                }
                Source::Appended(i) => {
                    let want = self.appended_len[*i];
                    let reader = &mut appended[*i];
                    let n = io::copy(&mut reader.take(want), out)?;
                    let mut probe = [0u8; 1];
                    if n != want || reader.read(&mut probe)? != 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "section {} is not the announced {want} bytes",
                                String::from_utf8_lossy(s.name())
                            ),
                        ));
                    }
                    n
                }
            };
            write_zeros(out, u64::from(s.size_of_raw_data) - written)?;
        }
        Ok(())
    }
}

fn write_zeros<W: Write>(out: &mut W, mut n: u64) -> io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let chunk = n.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..chunk])?;
        n -= chunk as u64;
    }
    Ok(())
}

/// `v` rounded up to a multiple of `to` (a power of two).
fn align(v: u64, to: u64) -> u64 {
    (v + to - 1) & !(to - 1)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal stub the way linkers lay out EFI applications: a DOS header with a DOS
    /// program, PE headers at 0xc0, file alignment 0x200, section alignment 0x1000, `.text`
    /// (code) and `.sbat` (data) sections at 0x600 and 0x800 (the output moves them), an image
    /// base off the section alignment.
    fn stub() -> Vec<u8> {
        let mut b = vec![0u8; 0xa00];
        b[0..2].copy_from_slice(b"MZ");
        b[2..0x3c].fill(0x11); // DOS header fields, copied as they are
        b[0x40..0x48].copy_from_slice(b"DOSPROGR");
        let pe = 0xc0usize;
        b[0x3c..0x40].copy_from_slice(&(pe as u32).to_le_bytes());
        b[pe..pe + 4].copy_from_slice(b"PE\0\0");
        let coff = pe + 4;
        put16(&mut b, coff, 0x8664); // Machine: x86-64
        put16(&mut b, coff + COFF_NUMBER_OF_SECTIONS, 2);
        put32(&mut b, coff + COFF_TIME_DATE_STAMP, 0x1234_5678);
        put16(
            &mut b,
            coff + COFF_SIZE_OF_OPTIONAL_HEADER,
            OPTIONAL_LEN as u16,
        );
        put16(&mut b, coff + 18, 0x0206); // Characteristics
        let opt = coff + COFF_LEN;
        put16(&mut b, opt, PE32_PLUS_MAGIC);
        b[opt + OPT_MAJOR_LINKER] = 2;
        b[opt + OPT_MINOR_LINKER] = 38;
        put32(&mut b, opt + 16, 0x1000); // AddressOfEntryPoint
        b[opt + OPT_IMAGE_BASE..opt + OPT_IMAGE_BASE + 8]
            .copy_from_slice(&0x1_0000_0800u64.to_le_bytes());
        put32(&mut b, opt + OPT_SECTION_ALIGNMENT, 0x1000);
        put32(&mut b, opt + OPT_FILE_ALIGNMENT, 0x200);
        put32(&mut b, opt + OPT_SIZE_OF_IMAGE, 0x3000);
        put32(&mut b, opt + OPT_SIZE_OF_HEADERS, 0x600);
        put32(&mut b, opt + OPT_CHECKSUM, 0xdead);
        put16(&mut b, opt + 68, 10); // Subsystem: EFI application
        put32(&mut b, opt + OPT_NUMBER_OF_RVA_AND_SIZES, 16);
        put32(&mut b, opt + 112 + 5 * 8, 0x2000); // a base relocation directory
        let table = opt + OPTIONAL_LEN;
        let text = Section {
            name: *b".text\0\0\0",
            virtual_size: 0x150,
            virtual_address: 0x1000,
            size_of_raw_data: 0x200,
            pointer_to_raw_data: 0x600,
            characteristics: SCN_CNT_CODE | 0x6000_0000,
        };
        let sbat = Section {
            name: *b".sbat\0\0\0",
            virtual_size: 0x30,
            virtual_address: 0x2000,
            size_of_raw_data: 0x200,
            pointer_to_raw_data: 0x800,
            characteristics: SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ,
        };
        let mut text_header = text.encode();
        put32(&mut text_header, 24, 0x77); // PointerToRelocations: dropped on assembly
        b[table..table + 40].copy_from_slice(&text_header);
        b[table + 40..table + 80].copy_from_slice(&sbat.encode());
        b[0x600..0x750].fill(0xcc);
        b[0x800..0x830].copy_from_slice(&[b's'; 0x30]);
        b
    }

    fn assemble(stub: &[u8], parts: &[(&str, &[u8])]) -> Vec<u8> {
        let image = PeImage::parse(stub).unwrap();
        let appended: Vec<Appended> = parts
            .iter()
            .map(|(name, data)| Appended {
                name: name.to_string(),
                len: data.len() as u64,
            })
            .collect();
        let layout = Layout::new(&image, &appended, 1_559_424_892).unwrap();
        let mut readers: Vec<&[u8]> = parts.iter().map(|(_, d)| *d).collect();
        let mut readers: Vec<&mut dyn Read> =
            readers.iter_mut().map(|r| r as &mut dyn Read).collect();
        let mut out = Vec::new();
        layout.write(&image, &mut readers, &mut out).unwrap();
        assert_eq!(out.len() as u64, layout.len());
        out
    }

    #[test]
    fn appended_sections_follow_the_stub_and_read_back() {
        let stub = stub();
        let linux = vec![0x4du8; 0x1234];
        let out = assemble(
            &stub,
            &[
                (".osrel", b"ID=talos\n"),
                (".cmdline", b"console=ttyS0"),
                (".linux", &linux),
            ],
        );
        // DOS header kept, program dropped, PE at 0x80.
        assert_eq!(&out[0..2], b"MZ");
        assert_eq!(&out[2..0x3c], &stub[2..0x3c]);
        assert_eq!(le32(&out, 0x3c), 0x80);
        assert!(out[0x40..0x80].iter().all(|&b| b == 0));
        assert_eq!(&out[0x80..0x84], b"PE\0\0");

        let uki = PeImage::parse(&out).unwrap();
        let names: Vec<&[u8]> = uki.sections().iter().map(Section::name).collect();
        assert_eq!(
            names,
            [&b".text"[..], b".sbat", b".osrel", b".cmdline", b".linux"]
        );
        assert_eq!(uki.timestamp(), 1_559_424_892);
        let s = uki.sections();
        // Stub sections keep address, sizes and flags; data moves to the new headers' end.
        assert_eq!(s[0].virtual_address, 0x1000);
        assert_eq!(s[0].pointer_to_raw_data, 0x400);
        assert_eq!(s[1].pointer_to_raw_data, 0x600);
        assert_eq!(uki.section_data(&s[0]), &[0xcc; 0x150][..]);
        assert_eq!(uki.section_data(&s[1]), &[b's'; 0x30][..]);
        // Appended: from the next section boundary after .sbat, one per page at least.
        assert_eq!(s[2].virtual_address, 0x3000);
        assert_eq!(s[3].virtual_address, 0x4000);
        assert_eq!(s[4].virtual_address, 0x5000);
        assert_eq!(s[4].virtual_size, 0x1234);
        assert_eq!(s[4].size_of_raw_data, 0x1400);
        assert_eq!(s[4].characteristics, 0x4000_0040);
        assert_eq!(
            uki.section_data(uki.section(".osrel").unwrap()),
            b"ID=talos\n"
        );
        assert_eq!(uki.section_data(&s[3]), b"console=ttyS0");
        assert_eq!(uki.section_data(&s[4]), &linux[..]);
        // Relocation pointers are not carried over.
        let table = 0x84 + COFF_LEN + OPTIONAL_LEN;
        assert_eq!(le32(&out, table + 24), 0);

        let opt = uki.optional_header();
        assert_eq!((opt[OPT_MAJOR_LINKER], opt[OPT_MINOR_LINKER]), (0, 0));
        assert_eq!(le32(opt, OPT_CHECKSUM), 0);
        // 0x80 + 20 + 240 + 5 * 40 = 0x24c → 0x400 (the stub's was 0x600).
        assert_eq!(le32(opt, OPT_SIZE_OF_HEADERS), 0x400);
        assert_eq!(le32(opt, OPT_SIZE_OF_CODE), 0x200);
        assert_eq!(le32(opt, OPT_SIZE_OF_INITIALIZED_DATA), 0x200 * 3 + 0x1400);
        // align(base + 0x6234, 0x1000) − base with base = 0x1_0000_0800.
        assert_eq!(le32(opt, OPT_SIZE_OF_IMAGE), 0x6800);
        // Data directories unchanged.
        assert_eq!(le32(opt, 112 + 5 * 8), 0x2000);
    }

    #[test]
    fn a_coff_symbol_table_is_left_out() {
        let mut stub = stub();
        let coff = 0xc4;
        // After the last section, where linkers put it.
        put32(&mut stub, coff + COFF_POINTER_TO_SYMBOL_TABLE, 0xa00);
        put32(&mut stub, coff + COFF_NUMBER_OF_SYMBOLS, 3);
        stub.extend_from_slice(&[0x5a; 0x40]);
        let out = assemble(&stub, &[(".initrd", b"abc")]);
        assert_eq!(le32(&out, 0x84 + COFF_POINTER_TO_SYMBOL_TABLE), 0);
        assert_eq!(le32(&out, 0x84 + COFF_NUMBER_OF_SYMBOLS), 0);
        assert!(!out.windows(0x40).any(|w| w == [0x5a; 0x40]));
    }

    #[test]
    fn edge_values_in_an_accepted_stub_neither_overflow_nor_panic() {
        let opt = 0xc4 + COFF_LEN;
        let table = opt + OPTIONAL_LEN;
        // An image base at the top of the address space; .sbat without file data and with a
        // pointer far past the end (not checked, not used).
        let mut b = stub();
        b[opt + OPT_IMAGE_BASE..opt + OPT_IMAGE_BASE + 8]
            .copy_from_slice(&(u64::MAX - 0x10).to_le_bytes());
        put32(&mut b, table + 40 + 16, 0);
        put32(&mut b, table + 40 + 20, 0xffff_0000);
        let image = PeImage::parse(&b).unwrap();
        assert_eq!(image.section_data(&image.sections()[1]), b"");
        let out = assemble(&b, &[(".linux", b"k")]);
        let uki = PeImage::parse(&out).unwrap();
        assert_eq!(uki.section_data(uki.section(".linux").unwrap()), b"k");
        // A last section at the top of the 32-bit address space: no room to append.
        let mut b = stub();
        put32(&mut b, table + 40 + 12, 0xffff_f000);
        let image = PeImage::parse(&b).unwrap();
        let err = Layout::new(
            &image,
            &[Appended {
                name: ".linux".into(),
                len: 1,
            }],
            0,
        )
        .unwrap_err();
        assert!(matches!(err, PeError::TooLarge(_)), "{err}");
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let stub = stub();
        let a = assemble(&stub, &[(".initrd", b"abc")]);
        let b = assemble(&stub, &[(".initrd", b"abc")]);
        assert_eq!(a, b);
        assert_ne!(a, assemble(&stub, &[(".initrd", b"abd")]));
    }

    #[test]
    fn a_reader_that_disagrees_with_the_announced_length_is_an_error() {
        let stub = stub();
        let image = PeImage::parse(&stub).unwrap();
        let layout = Layout::new(
            &image,
            &[Appended {
                name: ".initrd".into(),
                len: 4,
            }],
            0,
        )
        .unwrap();
        for data in [&b"abc"[..], b"abcde"] {
            let mut r = data;
            let err = layout
                .write(&image, &mut [&mut r], &mut Vec::new())
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{data:?}");
        }
    }

    #[test]
    fn malformed_stubs_are_refused_with_a_reason() {
        let good = stub();
        let pe = 0xc0;
        let coff = pe + 4;
        let opt = coff + COFF_LEN;
        let table = opt + OPTIONAL_LEN;
        type Mangle = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(Mangle, &str)> = vec![
            (Box::new(|b| b.truncate(0x20)), "no MZ header"),
            (Box::new(|b| b[0] = b'X'), "no MZ header"),
            (Box::new(|b| put32(b, 0x3c, 0xffff_fff0)), "past the end"),
            (Box::new(|b| put32(b, 0x3c, 0x40)), "no PE signature"),
            (
                Box::new(move |b| put16(b, coff + COFF_SIZE_OF_OPTIONAL_HEADER, 224)),
                "optional header of 224 bytes",
            ),
            (Box::new(move |b| put16(b, opt, 0x10b)), "magic 0x10b"),
            (
                Box::new(move |b| put32(b, opt + OPT_FILE_ALIGNMENT, 0x300)),
                "alignments",
            ),
            (
                Box::new(move |b| put32(b, opt + OPT_FILE_ALIGNMENT, 4)),
                "alignments",
            ),
            (
                Box::new(move |b| {
                    put32(b, opt + OPT_FILE_ALIGNMENT, 1 << 31);
                    put32(b, opt + OPT_SECTION_ALIGNMENT, 1 << 31);
                }),
                "alignments",
            ),
            (
                Box::new(move |b| put16(b, coff + COFF_NUMBER_OF_SECTIONS, 0)),
                "0 sections",
            ),
            (
                Box::new(move |b| put16(b, coff + COFF_NUMBER_OF_SECTIONS, 60)),
                "section table past the end",
            ),
            (
                Box::new(move |b| put32(b, table + 40 + 20, 0x7fff_ffff)),
                "section .sbat ends at",
            ),
        ];
        for (mangle, want) in cases {
            let mut b = good.clone();
            mangle(&mut b);
            let err = PeImage::parse(&b).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }

    #[test]
    fn bad_section_names_and_sizes_are_refused() {
        let stub = stub();
        let image = PeImage::parse(&stub).unwrap();
        for name in ["", ".toolongname"] {
            let err = Layout::new(
                &image,
                &[Appended {
                    name: name.into(),
                    len: 1,
                }],
                0,
            )
            .unwrap_err();
            assert!(matches!(err, PeError::Unsupported(_)), "{name:?}: {err}");
        }
        let err = Layout::new(
            &image,
            &[Appended {
                name: ".initrd".into(),
                len: 5 << 30,
            }],
            0,
        )
        .unwrap_err();
        assert!(matches!(err, PeError::TooLarge(_)), "{err}");
    }

    proptest! {
        /// Whatever the bytes, parsing answers (Ok or a reason) and never panics; what it
        /// accepts can always be laid out and written, or refused as too large.
        #[test]
        fn arbitrary_bytes_never_panic(
            mutations in proptest::collection::vec((0usize..0xa00, any::<u8>()), 0..64),
            cut in 0usize..0xb00,
        ) {
            let mut b = stub();
            for (at, v) in mutations {
                b[at] = v;
            }
            b.truncate(cut.max(1));
            if let Ok(image) = PeImage::parse(&b) {
                for s in image.sections() {
                    let _ = image.section_data(s);
                }
                if let Ok(layout) = Layout::new(&image, &[Appended { name: ".linux".into(), len: 3 }], 7) {
                    let mut r: &[u8] = b"abc";
                    let mut out = Vec::new();
                    layout.write(&image, &mut [&mut r], &mut out).unwrap();
                    prop_assert_eq!(out.len() as u64, layout.len());
                    // The output reads back with the section table the layout announced.
                    let back = PeImage::parse(&out).unwrap();
                    prop_assert!(back.sections().iter().eq(layout.sections()));
                    let linux = back.sections().last().unwrap();
                    prop_assert_eq!(back.section_data(linux), b"abc");
                }
            }
        }

        /// Any set of appended sections reads back byte for byte at aligned addresses.
        #[test]
        fn appended_sections_round_trip(
            parts in proptest::collection::vec(
                ("[.a-z]{1,8}", proptest::collection::vec(any::<u8>(), 0..3000)),
                1..8,
            ),
        ) {
            let stub = stub();
            let parts_ref: Vec<(&str, &[u8])> =
                parts.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
            let out = assemble(&stub, &parts_ref);
            let uki = PeImage::parse(&out).unwrap();
            prop_assert_eq!(uki.sections().len(), 2 + parts.len());
            for (s, (name, data)) in uki.sections()[2..].iter().zip(&parts) {
                prop_assert_eq!(s.name(), name.as_bytes());
                prop_assert_eq!(uki.section_data(s), data.as_slice());
                prop_assert_eq!(s.virtual_address % 0x1000, 0);
                prop_assert_eq!(s.pointer_to_raw_data % 0x200, 0);
            }
        }
    }
}
