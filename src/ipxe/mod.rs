//! The embedded iPXE binaries and the iPXE scripts bootfactory hands to machines.
//!
//! The binaries come from Debian's `ipxe` package (see `ipxe/README.md`); `build.rs` checks
//! them against `ipxe/SHA256SUMS` and embeds them, so they are served from memory by TFTP and
//! by `GET /ipxe/{name}` (UEFI HTTP boot) without touching the disk.

pub(crate) mod script;
pub mod trust;

/// One embedded iPXE binary.
#[derive(Debug, Clone, Copy)]
pub struct Binary {
    /// File name served over TFTP and HTTP (`ipxe.efi`).
    pub name: &'static str,
    /// Lower-case hex SHA-256 of `data` (checked at build time).
    pub sha256: &'static str,
    /// The binary.
    pub data: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/ipxe_binaries.rs"));

/// BIOS network boot program (UNDI: keeps the NIC ROM's driver).
pub const BIOS: &str = "undionly.kpxe";
/// x86-64 UEFI with every iPXE driver.
pub const EFI_X64: &str = "ipxe.efi";
/// x86-64 UEFI using the firmware's SNP driver only.
pub const EFI_X64_SNP: &str = "snponly.efi";
/// arm64 UEFI.
pub const EFI_ARM64: &str = "ipxe-arm64.efi";

/// Looks a binary up by file name.
pub fn binary(name: &str) -> Option<&'static Binary> {
    BINARIES.iter().find(|b| b.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn every_binary_the_boot_path_names_is_embedded_and_intact() {
        for name in [BIOS, EFI_X64, EFI_X64_SNP, EFI_ARM64] {
            let b = binary(name).unwrap_or_else(|| panic!("{name} is not embedded"));
            assert_eq!(hex::encode(Sha256::digest(b.data)), b.sha256, "{name}");
            assert!(b.data.len() > 50_000, "{name} is suspiciously small");
        }
        assert!(binary("../etc/passwd").is_none());
        assert!(IPXE_VERSION.starts_with("1."), "{IPXE_VERSION}");
    }

    #[test]
    fn efi_binaries_are_pe_images_for_the_right_machine() {
        // PE: "MZ", e_lfanew at 0x3c, "PE\0\0", then the COFF machine field.
        let machine = |name: &str| {
            let d = binary(name).unwrap().data;
            assert_eq!(&d[..2], b"MZ", "{name}");
            let pe = u32::from_le_bytes(d[0x3c..0x40].try_into().unwrap()) as usize;
            assert_eq!(&d[pe..pe + 4], b"PE\0\0", "{name}");
            u16::from_le_bytes(d[pe + 4..pe + 6].try_into().unwrap())
        };
        assert_eq!(machine(EFI_X64), 0x8664);
        assert_eq!(machine(EFI_X64_SNP), 0x8664);
        assert_eq!(machine(EFI_ARM64), 0xaa64);
    }
}
