//! OVA (VMware's `.ova`): a tar of `disk.ovf` (the OVF 1.0 envelope describing the virtual
//! machine), `disk.mf` (their SHA-256 sums) and `disk.vmdk` (the disk as a stream-optimized
//! VMDK, [`super::vmdk`]), in that order, as upstream's imager packs it
//! (`pkg/imager/ova`). The OVF names the VMDK's size and the manifest its digest, so the
//! VMDK is written first, into an unlinked scratch file, then the tar is streamed.
//! Field by field: `docs/formats.md`, "Disk image formats".

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::sparse::{READ_CHUNK, ZEROS};
use super::vmdk::{self, VmdkOptions};

const BLOCK: u64 = 512;
/// The archive is padded to whole records of 20 blocks, as GNU tar and Python's tarfile do.
const RECORD: u64 = 20 * BLOCK;
/// Member names, in archive order (VMware wants the descriptor first).
pub const OVF_NAME: &str = "disk.ovf";
/// The manifest's member name.
pub const MF_NAME: &str = "disk.mf";

/// The firmware the virtual machine boots with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Firmware {
    /// No `firmware` setting: VMware's default, BIOS, as upstream's template (Talos' amd64
    /// disk images boot from BIOS through GRUB, and from UEFI).
    #[default]
    Bios,
    /// `firmware = "efi"`: for images that boot only from UEFI (systemd-boot: arm64,
    /// SecureBoot).
    Efi,
}

/// How the OVA is made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OvaOptions {
    /// The disk's VMDK.
    pub vmdk: VmdkOptions,
    /// The virtual machine's firmware.
    pub firmware: Firmware,
}

#[derive(Debug, thiserror::Error)]
#[error("{what}")]
struct Context {
    what: String,
    #[source]
    source: io::Error,
}

fn context(what: String, source: io::Error) -> io::Error {
    io::Error::new(source.kind(), Context { what, source })
}

/// The OVF descriptor of a VM with one disk of `capacity` bytes, whose stream-optimized VMDK
/// (`disk.vmdk`) is `vmdk_size` bytes and holds `populated` bytes of data. The hardware is
/// upstream's: hardware version vmx-15, 2 vCPUs, 2048 MiB, a paravirtual SCSI controller,
/// a VMXNET3 NIC on "VM Network", and the `talos.config` property delivered through guestinfo.
pub fn ovf(capacity: u64, vmdk_size: u64, populated: u64, firmware: Firmware) -> String {
    let firmware = match firmware {
        Firmware::Bios => "",
        Firmware::Efi => {
            "\n      <vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"efi\"/>"
        }
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="{vmdk_name}" ovf:id="file1" ovf:size="{vmdk_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disks</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" ovf:populatedSize="{populated}"/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The VM Network network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="talos">
    <Info>A Talos Linux virtual machine</Info>
    <Name>talos</Name>
    <ProductSection ovf:required="false">
      <Info>Talos Linux</Info>
      <Product>Talos Linux</Product>
      <Property ovf:key="talos.config" ovf:type="string" ovf:userConfigurable="true" ovf:value="">
        <Label>Talos machine configuration</Label>
        <Description>Inline machine configuration (base64 or plain YAML)</Description>
      </Property>
    </ProductSection>
    <OperatingSystemSection ovf:id="101" vmw:osType="other3xLinux64Guest">
      <Info>Guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection ovf:transport="com.vmware.guestInfo">
      <Info>Virtual hardware</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>talos</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-15</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPUs</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory size</rasd:Description>
        <rasd:ElementName>2048 MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI controller</rasd:Description>
        <rasd:ElementName>scsiController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>disk0</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>2</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:Description>VMXNET3 ethernet adapter on "VM Network"</rasd:Description>
        <rasd:ElementName>ethernet0</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:ElementName>video</rasd:ElementName>
        <rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceType>24</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:ElementName>vmci</rasd:ElementName>
        <rasd:InstanceID>7</rasd:InstanceID>
        <rasd:ResourceSubType>vmware.vmci</rasd:ResourceSubType>
        <rasd:ResourceType>1</rasd:ResourceType>
      </Item>{firmware}
      <vmw:Config ovf:required="false" vmw:key="tools.syncTimeWithHost" vmw:value="false"/>
      <vmw:Config ovf:required="false" vmw:key="tools.afterPowerOn" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="tools.afterResume" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="tools.beforeGuestShutdown" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="tools.beforeGuestStandby" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="powerOpInfo.suspendType" vmw:value="soft"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#,
        vmdk_name = vmdk::EXTENT_NAME,
    )
}

/// The manifest: one `SHA256(<name>)= <hex>` line per file, the descriptor first, as
/// `ovftool` writes and checks it.
pub fn manifest(ovf_sha256: &[u8], vmdk_sha256: &[u8]) -> String {
    format!(
        "SHA256({OVF_NAME})= {}\nSHA256({})= {}\n",
        hex::encode(ovf_sha256),
        vmdk::EXTENT_NAME,
        hex::encode(vmdk_sha256)
    )
}

/// The OVA's parts once its VMDK is written: the descriptor and manifest, and the VMDK in a
/// scratch file.
#[derive(Debug)]
pub struct Prepared {
    ovf: String,
    mf: String,
    vmdk: File,
    vmdk_size: u64,
    /// What writing the VMDK did.
    pub vmdk_stats: vmdk::WriteStats,
}

/// Writes the VMDK of `raw` (an open sparse raw disk image) into an unlinked scratch file in
/// `scratch_dir` and renders the descriptor and manifest for it.
pub fn prepare(raw: &File, opts: OvaOptions, scratch_dir: &Path) -> io::Result<Prepared> {
    let scratch = scratch_file(scratch_dir)?;
    let mut hashing = Hashing {
        inner: io::BufWriter::with_capacity(1 << 20, scratch.try_clone()?),
        sha: Sha256::new(),
        len: 0,
    };
    let vmdk_stats = vmdk::write(raw, opts.vmdk, &mut hashing)?;
    hashing.inner.flush()?;
    let vmdk_sha = hashing.sha.finalize();
    if hashing.len != vmdk_stats.file_size {
        return Err(io::Error::other("the VMDK's length does not add up"));
    }
    let populated = (vmdk_stats.grains_stored * vmdk::GRAIN as u64).min(vmdk_stats.capacity);
    let ovf = ovf(
        vmdk_stats.capacity,
        vmdk_stats.file_size,
        populated,
        opts.firmware,
    );
    let mf = manifest(&Sha256::digest(ovf.as_bytes()), &vmdk_sha);
    Ok(Prepared {
        ovf,
        mf,
        vmdk: scratch,
        vmdk_size: vmdk_stats.file_size,
        vmdk_stats,
    })
}

/// A new file in `dir`, already unlinked: it goes away with its last handle.
fn scratch_file(dir: &Path) -> io::Result<File> {
    for _ in 0..16 {
        let path = dir.join(format!(
            ".bootfactory-ova-{}-{:016x}.vmdk",
            std::process::id(),
            rand::random::<u64>()
        ));
        match fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => {
                fs::remove_file(&path)
                    .map_err(|e| context(format!("removing scratch file {}", path.display()), e))?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(context(
                    format!("creating a scratch file in {}", dir.display()),
                    e,
                ));
            }
        }
    }
    Err(io::Error::other(format!(
        "no free scratch file name in {}",
        dir.display()
    )))
}

struct Hashing<W: Write> {
    inner: W,
    sha: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn member_blocks(len: u64) -> u64 {
    1 + len.div_ceil(BLOCK)
}

impl Prepared {
    /// The descriptor (`disk.ovf`).
    pub fn ovf(&self) -> &str {
        &self.ovf
    }

    /// The manifest (`disk.mf`).
    pub fn manifest(&self) -> &str {
        &self.mf
    }

    /// Length of the tar archive.
    pub fn archive_size(&self) -> u64 {
        let blocks = member_blocks(self.ovf.len() as u64)
            + member_blocks(self.mf.len() as u64)
            + member_blocks(self.vmdk_size)
            + 2;
        (blocks * BLOCK).next_multiple_of(RECORD)
    }

    /// Writes the archive: `disk.ovf`, `disk.mf`, `disk.vmdk`, two zero blocks, zeros to a
    /// whole record.
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let mut written = 0u64;
        for (name, body) in [(OVF_NAME, &self.ovf), (MF_NAME, &self.mf)] {
            out.write_all(&ustar_header(name, body.len() as u64)?)?;
            out.write_all(body.as_bytes())?;
            let pad = pad_len(body.len() as u64);
            out.write_all(&ZEROS[..pad as usize])?;
            written += BLOCK + body.len() as u64 + pad;
        }
        out.write_all(&ustar_header(vmdk::EXTENT_NAME, self.vmdk_size)?)?;
        written += BLOCK;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut off = 0u64;
        while off < self.vmdk_size {
            let want = (self.vmdk_size - off).min(READ_CHUNK as u64) as usize;
            self.vmdk.read_exact_at(&mut buf[..want], off)?;
            out.write_all(&buf[..want])?;
            off += want as u64;
        }
        let pad = pad_len(self.vmdk_size);
        out.write_all(&ZEROS[..pad as usize])?;
        written += self.vmdk_size + pad;
        let mut rest = self
            .archive_size()
            .checked_sub(written)
            .ok_or_else(|| io::Error::other("the archive's length does not add up"))?;
        while rest > 0 {
            let k = rest.min(ZEROS.len() as u64) as usize;
            out.write_all(&ZEROS[..k])?;
            rest -= k as u64;
        }
        Ok(())
    }
}

fn pad_len(len: u64) -> u64 {
    len.next_multiple_of(BLOCK) - len
}

/// A POSIX ustar header for a regular file: mode 0644, owner 0/0 `root`, mtime 0. Sizes from
/// 8 GiB use GNU's base-256 form.
pub fn ustar_header(name: &str, size: u64) -> io::Result<[u8; 512]> {
    let mut h = [0u8; 512];
    let n = name.as_bytes();
    h.get_mut(..n.len())
        .filter(|_| n.len() <= 100)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "tar member name too long"))?
        .copy_from_slice(n);
    put_octal(&mut h[100..108], 0o644);
    put_octal(&mut h[108..116], 0);
    put_octal(&mut h[116..124], 0);
    if size < 1 << 33 {
        put_octal(&mut h[124..136], size);
    } else {
        h[128..136].copy_from_slice(&size.to_be_bytes());
        h[124] |= 0x80;
    }
    put_octal(&mut h[136..148], 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

/// Octal digits filling the field but its last byte, then NUL (`v` must fit).
fn put_octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let text = format!("{v:0digits$o}");
    let text = &text.as_bytes()[text.len().saturating_sub(digits)..];
    field[..digits].copy_from_slice(text);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ustar_headers() {
        let h = ustar_header("disk.ovf", 1234).unwrap();
        assert_eq!(&h[..9], b"disk.ovf\0");
        assert_eq!(&h[100..108], b"0000644\0");
        assert_eq!(&h[124..136], b"00000002322\0");
        assert_eq!(&h[136..148], b"00000000000\0");
        assert_eq!(h[156], b'0');
        assert_eq!(&h[257..265], b"ustar\x0000");
        // The checksum: the byte sum with the field as spaces.
        let mut c = h;
        c[148..156].fill(b' ');
        let sum: u32 = c.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(&h[148..156], format!("{sum:06o}\0 ").as_bytes());
        let big = ustar_header("disk.vmdk", 9 << 30).unwrap();
        assert_eq!(big[124], 0x80);
        assert_eq!(
            u64::from_be_bytes(big[128..136].try_into().unwrap()),
            9 << 30
        );
        assert!(ustar_header(&"x".repeat(101), 1).is_err());
    }

    #[test]
    fn manifest_lines() {
        let m = manifest(&[0xAB; 32], &[0x01; 32]);
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines[0], format!("SHA256(disk.ovf)= {}", "ab".repeat(32)));
        assert_eq!(lines[1], format!("SHA256(disk.vmdk)= {}", "01".repeat(32)));
        assert!(m.ends_with('\n'));
    }

    #[test]
    fn ovf_firmware_setting() {
        let bios = ovf(1 << 30, 1000, 65536, Firmware::Bios);
        assert!(!bios.contains("firmware"));
        assert!(bios.contains(r#"ovf:capacity="1073741824""#));
        assert!(bios.contains(r#"ovf:size="1000""#));
        assert!(bios.contains(r#"ovf:populatedSize="65536""#));
        let efi = ovf(1 << 30, 1000, 65536, Firmware::Efi);
        assert!(efi.contains(r#"vmw:key="firmware" vmw:value="efi""#));
    }
}
