//! The UKI asset: the imager's systemd-stub with `.osrel`, `.cmdline`, `.uname`, `.splash`,
//! `.linux`, `.initrd` and the `.profile` sections appended, assembled the way the Talos ≥ 1.10
//! imager does natively (`docs/formats.md` §UKI assembly; the PE layout is
//! [`crate::formats::pe`]).
//!
//! Only the stub, the splash and the short text sections are held in memory; the kernel and the
//! initramfs are streamed from their files into the output. The same inputs give the same
//! bytes (the COFF timestamp is the factory's `SOURCE_DATE_EPOCH`).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::formats::pe::{Appended, Layout, PeError, PeImage};
use crate::formats::read_full;

/// The largest `systemd-stub.efi` read (real stubs are 50–150 KiB).
pub(crate) const MAX_STUB_BYTES: u64 = 16 << 20;
/// The largest `splash.bmp` read (upstream's is 590,538 bytes).
pub(crate) const MAX_SPLASH_BYTES: u64 = 16 << 20;

/// Why a UKI could not be assembled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UkiError {
    /// The imager's stub is not a PE32+ image a UKI can be built on.
    #[error("{path} is not a usable UEFI stub")]
    Stub {
        /// The stub's path.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: PeError,
    },
    /// An input is larger than the factory reads.
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The input's path.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The sections do not fit a PE image's 32-bit fields.
    #[error("cannot lay out the UKI")]
    Layout(#[source] PeError),
    /// Reading an input or writing the output failed.
    #[error("{what}")]
    Io {
        /// What was being read or written.
        what: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> UkiError {
    let what = what.into();
    move |source| UkiError::Io { what, source }
}

/// An extra UKI profile (`.profile` + `.cmdline` after the main one; Talos ≥ 1.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UkiProfile {
    /// `ID=`.
    pub id: String,
    /// `TITLE=`, if any.
    pub title: Option<String>,
    /// The profile's command line.
    pub cmdline: String,
}

impl UkiProfile {
    /// The `.profile` section text: `ID=<id>`, then `\nTITLE=<title>` when there is one, no
    /// trailing newline.
    pub(crate) fn section_text(&self) -> String {
        match &self.title {
            Some(title) => format!("ID={}\nTITLE={title}", self.id),
            None => format!("ID={}", self.id),
        }
    }

    /// The ISO's extra profile (`reset`, titled `Reset system disk`): the base command line
    /// plus `talos.experimental.wipe=system`.
    pub(crate) fn reset_iso(base_cmdline: &str) -> UkiProfile {
        UkiProfile {
            id: "reset".into(),
            title: Some("Reset system disk".into()),
            cmdline: format!("{base_cmdline} talos.experimental.wipe=system"),
        }
    }

    /// The installer's and disk image's extra profile (`reset-maintenance`): the base command
    /// line plus `talos.experimental.wipe=system:EPHEMERAL,STATE`.
    pub(crate) fn reset_maintenance(base_cmdline: &str) -> UkiProfile {
        UkiProfile {
            id: "reset-maintenance".into(),
            title: Some("Reset to maintenance mode".into()),
            cmdline: format!("{base_cmdline} talos.experimental.wipe=system:EPHEMERAL,STATE"),
        }
    }
}

/// Everything one UKI is made of.
#[derive(Debug, Clone)]
pub(crate) struct UkiInputs {
    /// `usr/install/<arch>/systemd-stub.efi`.
    pub stub: PathBuf,
    /// `usr/install/<arch>/vmlinuz`.
    pub kernel: PathBuf,
    /// The initramfs with extensions.
    pub initrd: PathBuf,
    /// `usr/install/<arch>/splash.bmp` when the imager has one.
    pub splash: Option<PathBuf>,
    /// The `.cmdline` (no newline).
    pub cmdline: String,
    /// The Talos version tag for `.osrel` (`v1.11.6`).
    pub version_tag: String,
    /// Talos ≥ 1.10: `.profile` sections (`ID=main`, then `extra_profiles`).
    pub profiles: bool,
    /// Profiles after `main` (only with `profiles`).
    pub extra_profiles: Vec<UkiProfile>,
    /// COFF `TimeDateStamp`.
    pub timestamp: u32,
}

/// `.osrel`: Talos' os-release for `version_tag`.
pub(crate) fn os_release(version_tag: &str) -> String {
    format!(
        "NAME=\"Talos\"\nID=talos\nVERSION_ID={version_tag}\nPRETTY_NAME=\"Talos ({version_tag})\"\n\
         HOME_URL=\"https://www.talos.dev/\"\nBUG_REPORT_URL=\"https://github.com/siderolabs/talos/issues\"\n\
         VENDOR_NAME=\"Sidero Labs\"\nVENDOR_URL=\"https://www.siderolabs.com/\"\n"
    )
}

/// The kernel version an x86 bzImage names in its setup header (`docs/formats.md` §UKI
/// assembly, `.uname`): `HdrS` at 0x202, `setup_sects` at 0x1f1, the u16 `kernel_version` at
/// 0x20e (non-zero, at most `setup_sects` × 512), the NUL-terminated string at that offset +
/// 0x200 within the next 256 bytes, cut at the first space. `None` when any of that does not
/// hold (an arm64 zboot image has no `HdrS`): the UKI then has no `.uname`.
pub(crate) fn kernel_version<R: Read + Seek>(kernel: &mut R) -> io::Result<Option<String>> {
    let mut header = [0u8; 0x210];
    kernel.seek(SeekFrom::Start(0))?;
    if read_full(kernel, &mut header)? < header.len() || &header[0x202..0x206] != b"HdrS" {
        return Ok(None);
    }
    let setup_sects = u64::from(header[0x1f1]);
    let offset = u64::from(u16::from_le_bytes([header[0x20e], header[0x20f]]));
    if offset == 0 || offset > setup_sects * 0x200 {
        return Ok(None);
    }
    let mut text = [0u8; 256];
    kernel.seek(SeekFrom::Start(offset + 0x200))?;
    if read_full(kernel, &mut text)? < text.len() {
        return Ok(None);
    }
    let Some(nul) = text.iter().position(|&b| b == 0) else {
        return Ok(None);
    };
    let version = text[..nul].split(|&b| b == b' ').next().unwrap_or_default();
    // A version goes into a section systemd reads as text: printable ASCII only.
    if version.is_empty() || !version.iter().all(|b| b.is_ascii_graphic()) {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(version).into_owned()))
}

fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, UkiError> {
    let file = File::open(path).map_err(io_error(format!("open {what} {}", path.display())))?;
    let mut data = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut data)
        .map_err(io_error(format!("read {what} {}", path.display())))?;
    if data.len() as u64 > limit {
        return Err(UkiError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(data)
}

/// Where one appended section's bytes come from.
enum Content {
    Text(Vec<u8>),
    File(BufReader<File>),
}

/// The appended sections of a UKI, in PE order (`docs/formats.md` §UKI assembly, no Secure
/// Boot): `.osrel`, `.cmdline`, `.uname` (when known), `.splash` (when the imager has one),
/// `.linux`, `.initrd`, then for profiles `.profile` `ID=main` and per extra profile
/// `.profile` + `.cmdline`. Returns the section names (for tests and logs).
pub(crate) fn write_uki<W: Write>(
    inputs: &UkiInputs,
    out: &mut W,
) -> Result<Vec<String>, UkiError> {
    let stub_bytes = read_bounded(&inputs.stub, MAX_STUB_BYTES, "stub")?;
    let stub = PeImage::parse(&stub_bytes).map_err(|source| UkiError::Stub {
        path: inputs.stub.clone(),
        source,
    })?;
    let open = |path: &Path, what: &str| -> Result<(File, u64), UkiError> {
        let file = File::open(path).map_err(io_error(format!("open {what} {}", path.display())))?;
        let len = file
            .metadata()
            .map_err(io_error(format!("stat {what} {}", path.display())))?
            .len();
        Ok((file, len))
    };
    let (mut kernel, kernel_len) = open(&inputs.kernel, "kernel")?;
    let uname = kernel_version(&mut kernel)
        .map_err(io_error(format!("read kernel {}", inputs.kernel.display())))?;
    kernel
        .seek(SeekFrom::Start(0))
        .map_err(io_error(format!("read kernel {}", inputs.kernel.display())))?;
    let (initrd, initrd_len) = open(&inputs.initrd, "initramfs")?;

    let mut sections: Vec<(&str, u64, Content)> = Vec::new();
    let text = |sections: &mut Vec<(&str, u64, Content)>, name, bytes: Vec<u8>| {
        sections.push((name, bytes.len() as u64, Content::Text(bytes)));
    };
    text(
        &mut sections,
        ".osrel",
        os_release(&inputs.version_tag).into_bytes(),
    );
    text(
        &mut sections,
        ".cmdline",
        inputs.cmdline.clone().into_bytes(),
    );
    if let Some(uname) = uname {
        text(&mut sections, ".uname", uname.into_bytes());
    }
    if let Some(splash) = &inputs.splash {
        text(
            &mut sections,
            ".splash",
            read_bounded(splash, MAX_SPLASH_BYTES, "splash")?,
        );
    }
    sections.push((
        ".linux",
        kernel_len,
        Content::File(BufReader::with_capacity(1 << 20, kernel)),
    ));
    sections.push((
        ".initrd",
        initrd_len,
        Content::File(BufReader::with_capacity(1 << 20, initrd)),
    ));
    if inputs.profiles {
        text(&mut sections, ".profile", b"ID=main".to_vec());
        for p in &inputs.extra_profiles {
            text(&mut sections, ".profile", p.section_text().into_bytes());
            text(&mut sections, ".cmdline", p.cmdline.clone().into_bytes());
        }
    }

    let appended: Vec<Appended> = sections
        .iter()
        .map(|(name, len, _)| Appended {
            name: name.to_string(),
            len: *len,
        })
        .collect();
    let layout = Layout::new(&stub, &appended, inputs.timestamp).map_err(UkiError::Layout)?;
    let mut sources: Vec<Box<dyn Read>> = sections
        .into_iter()
        .map(|(_, _, content)| match content {
            Content::Text(bytes) => Box::new(io::Cursor::new(bytes)) as Box<dyn Read>,
            Content::File(file) => Box::new(file),
        })
        .collect();
    let mut readers: Vec<&mut dyn Read> = sources
        .iter_mut()
        .map(|r| r.as_mut() as &mut dyn Read)
        .collect();
    layout
        .write(&stub, &mut readers, out)
        .map_err(io_error("write the UKI"))?;
    Ok(appended.into_iter().map(|a| a.name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_text() {
        assert_eq!(
            os_release("v1.11.6"),
            "NAME=\"Talos\"\nID=talos\nVERSION_ID=v1.11.6\nPRETTY_NAME=\"Talos (v1.11.6)\"\n\
             HOME_URL=\"https://www.talos.dev/\"\nBUG_REPORT_URL=\"https://github.com/siderolabs/talos/issues\"\n\
             VENDOR_NAME=\"Sidero Labs\"\nVENDOR_URL=\"https://www.siderolabs.com/\"\n"
        );
    }

    #[test]
    fn profile_texts() {
        let p = UkiProfile::reset_maintenance("talos.platform=metal console=tty0");
        assert_eq!(
            p.section_text(),
            "ID=reset-maintenance\nTITLE=Reset to maintenance mode"
        );
        assert_eq!(
            p.cmdline,
            "talos.platform=metal console=tty0 talos.experimental.wipe=system:EPHEMERAL,STATE"
        );
        let plain = UkiProfile {
            id: "x".into(),
            title: None,
            cmdline: String::new(),
        };
        assert_eq!(plain.section_text(), "ID=x");
    }

    /// A setup header: `HdrS`, `setup_sects`, the version offset and the text.
    fn bzimage(setup_sects: u8, offset: u16, text: &[u8], len: usize) -> Vec<u8> {
        let mut k = vec![0u8; len];
        k[0x1f1] = setup_sects;
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x20e..0x210].copy_from_slice(&offset.to_le_bytes());
        let at = usize::from(offset) + 0x200;
        if at < k.len() {
            let n = text.len().min(k.len() - at);
            k[at..at + n].copy_from_slice(&text[..n]);
        }
        k
    }

    fn version_of(k: &[u8]) -> Option<String> {
        kernel_version(&mut io::Cursor::new(k)).unwrap()
    }

    #[test]
    fn kernel_version_from_the_setup_header() {
        let good = bzimage(
            4,
            0x300,
            b"6.12.57-talos (builder@buildkitsandbox) #1 SMP\0",
            0x2000,
        );
        assert_eq!(version_of(&good).as_deref(), Some("6.12.57-talos"));
        let no_space = bzimage(4, 0x300, b"6.1.0-28-amd64\0", 0x2000);
        assert_eq!(version_of(&no_space).as_deref(), Some("6.1.0-28-amd64"));
        // No HdrS (arm64 zboot), too short, zero offset, offset past the setup sectors, no NUL
        // within 256 bytes, text running past the end, an empty or non-ASCII version.
        let mut no_hdrs = good.clone();
        no_hdrs[0x202] = b'X';
        assert_eq!(version_of(&no_hdrs), None);
        assert_eq!(version_of(&good[..0x100]), None);
        assert_eq!(version_of(&good[..0x20f]), None);
        assert_eq!(version_of(&bzimage(4, 0, b"6.1\0", 0x2000)), None);
        assert_eq!(version_of(&bzimage(1, 0x300, b"6.1\0", 0x2000)), None);
        assert_eq!(version_of(&bzimage(4, 0x300, &[b'a'; 300], 0x2000)), None);
        assert_eq!(version_of(&bzimage(4, 0x300, b"6.1\0", 0x500 + 100)), None);
        assert_eq!(version_of(&bzimage(4, 0x300, b" 6.1\0", 0x2000)), None);
        assert_eq!(version_of(&bzimage(4, 0x300, b"6.\x011\0", 0x2000)), None);
        // The largest offset a u16 names is read without overflow.
        assert_eq!(
            version_of(&bzimage(255, 0xffff, b"x\0", 0x10200 + 0x200)).as_deref(),
            Some("x")
        );
    }
}
