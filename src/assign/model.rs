//! What a machine boots (an [`Assignment`]) and what we know about it (a [`MachineRecord`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::factory::profile::{Arch, AssetProfile};
use crate::mac::MacAddr;

/// What one machine (or every unassigned machine, as the default) boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Assignment {
    /// Schematic ID (64 hex characters); must be known to the factory.
    pub schematic: String,
    /// Talos version (`v1.9.0`).
    pub version: String,
    /// Platform (`metal`).
    #[serde(default = "default_platform")]
    pub platform: String,
    /// `amd64` or `arm64`; absent = taken from the firmware's DHCP architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Kernel arguments appended to the factory's command line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_kernel_args: Vec<String>,
    /// Free-form labels (`role: controlplane`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Fixed IPv4 address: with `pxe.dhcpMode: full` the machine always gets it (a static
    /// reservation, never offered to another MAC). Stored but unused in proxy mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::Ipv4Addr>,
    /// Host name sent as DHCP option 12 in full mode (RFC 1123 labels). Stored but unused in
    /// proxy mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

fn default_platform() -> String {
    "metal".to_string()
}

/// Why an assignment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidAssignment {
    /// The offending field (`schematic`, `extraKernelArgs[1]`, …).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidAssignment {
    InvalidAssignment {
        field: field.into(),
        message: message.into(),
    }
}

/// Longest label key or value, and most labels, accepted.
const MAX_LABEL_LEN: usize = 256;
const MAX_LABELS: usize = 64;
/// Most extra kernel arguments, and longest, accepted.
const MAX_EXTRA_ARGS: usize = 64;
const MAX_ARG_LEN: usize = 1024;

impl Assignment {
    /// Checks the fields' syntax (not whether the schematic or version exist).
    pub fn validate(&self) -> Result<(), InvalidAssignment> {
        if self.schematic.len() != 64
            || !self
                .schematic
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid(
                "schematic",
                format!(
                    "{:?} is not a schematic ID (64 lower-case hex characters)",
                    truncate(&self.schematic)
                ),
            ));
        }
        crate::factory::service::parse_version(&self.version)
            .map_err(|e| invalid("version", e.to_string()))?;
        if self.platform.is_empty()
            || self.platform.len() > 64
            || !self
                .platform
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "platform",
                format!(
                    "{:?} is not a platform name like metal",
                    truncate(&self.platform)
                ),
            ));
        }
        if let Some(arch) = &self.arch
            && Arch::from_name(arch).is_none()
        {
            return Err(invalid(
                "arch",
                format!("{:?} is not amd64 or arm64", truncate(arch)),
            ));
        }
        if self.extra_kernel_args.len() > MAX_EXTRA_ARGS {
            return Err(invalid(
                "extraKernelArgs",
                format!("at most {MAX_EXTRA_ARGS} arguments"),
            ));
        }
        for (i, arg) in self.extra_kernel_args.iter().enumerate() {
            // The arguments end up on an iPXE `kernel` line: no whitespace (one token each),
            // no control characters, no `${…}` expansion.
            if arg.is_empty()
                || arg.len() > MAX_ARG_LEN
                || arg.chars().any(|c| c.is_whitespace() || c.is_control())
                || arg.contains("${")
            {
                return Err(invalid(
                    format!("extraKernelArgs[{i}]"),
                    format!(
                        "{:?} must be one non-empty argument without spaces, control characters or ${{…}}",
                        truncate(arg)
                    ),
                ));
            }
        }
        if let Some(ip) = self.ip
            && (ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback())
        {
            return Err(invalid("ip", format!("{ip} cannot be a machine's address")));
        }
        if let Some(h) = &self.hostname
            && !crate::dhcp::pool::valid_dns_name(h)
        {
            return Err(invalid(
                "hostname",
                format!(
                    "{:?} is not a host name (RFC 1123: labels of letters, digits and hyphens, at most 63 each)",
                    truncate(h)
                ),
            ));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(invalid("labels", format!("at most {MAX_LABELS} labels")));
        }
        for (k, v) in &self.labels {
            if k.is_empty() || k.len() > MAX_LABEL_LEN || v.len() > MAX_LABEL_LEN {
                return Err(invalid(
                    format!("labels.{}", truncate(k)),
                    format!("keys must be 1–{MAX_LABEL_LEN} and values 0–{MAX_LABEL_LEN} bytes"),
                ));
            }
        }
        Ok(())
    }

    /// The warm-up of what this assignment boots by PXE (kernel, initramfs, command line),
    /// for its architecture or `fallback` when it names none.
    pub fn warm_request(&self, fallback: Arch) -> crate::factory::warm::WarmRequest {
        crate::factory::warm::WarmRequest {
            schematic: self.schematic.clone(),
            version: self.version.clone(),
            platform: self.platform.clone(),
            arch: self
                .arch
                .clone()
                .unwrap_or_else(|| fallback.as_str().to_string()),
            assets: Vec::new(),
        }
    }

    /// The factory asset this assignment boots with: the `cmdline` of its platform on its
    /// architecture, or on `fallback` when it names none (the firmware's, the inventory's).
    /// Meaningful for a [validated](Assignment::validate) assignment; an `arch` that is not
    /// `amd64` or `arm64` counts as none.
    pub fn cmdline_profile(&self, fallback: Arch) -> AssetProfile {
        let arch = self
            .arch
            .as_deref()
            .and_then(Arch::from_name)
            .unwrap_or(fallback);
        AssetProfile::cmdline(&self.platform, arch)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// One machine as the admin API shows it: its own assignment and what the inventory knows,
/// either of which may be missing (not both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineView {
    /// The MAC.
    pub mac: MacAddr,
    /// Its own assignment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment: Option<Assignment>,
    /// What the inventory knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen: Option<MachineRecord>,
    /// Its bound lease's address (full DHCP mode), filled in by the admin API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ip: Option<std::net::Ipv4Addr>,
}

/// What the inventory knows about a machine that asked to boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineRecord {
    /// The machine's MAC address.
    pub mac: MacAddr,
    /// DHCP client architecture (option 93) last seen, e.g. 7 for x86-64 UEFI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_arch: Option<u16>,
    /// `amd64` or `arm64`, from `client_arch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// SMBIOS UUID (DHCP option 97).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Last IPv4 address seen (DHCP `ciaddr` or the HTTP peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// DHCP vendor class (option 60) last seen.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vendor_class: String,
    /// DHCP user class (option 77) last seen (`iPXE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_class: Option<String>,
    /// First time seen (RFC 3339, UTC).
    pub first_seen: String,
    /// Last time seen (RFC 3339, UTC).
    pub last_seen: String,
    /// What it was last served (`ipxe.efi`, a script URL, `nothing (policy ignore)`).
    #[serde(default)]
    pub last_served: String,
    /// How many requests it made.
    #[serde(default)]
    pub requests: u64,
}

/// Maps a DHCP client architecture (option 93) to the Talos architecture it runs.
pub fn talos_arch_for_client_arch(client_arch: u16) -> Option<&'static str> {
    match client_arch {
        0 | 6 | 7 | 9 | 15 | 16 => Some("amd64"),
        11 | 19 => Some("arm64"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Assignment {
        Assignment {
            schematic: "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba".into(),
            version: "v1.9.0".into(),
            platform: "metal".into(),
            arch: None,
            extra_kernel_args: vec!["console=ttyS0".into()],
            labels: BTreeMap::from([("role".into(), "worker".into())]),
            ip: None,
            hostname: None,
        }
    }

    #[test]
    fn accepts_a_plain_assignment() {
        good().validate().unwrap();
    }

    #[test]
    fn rejects_each_bad_field_by_name() {
        type Mutation = Box<dyn Fn(&mut Assignment)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|a| a.schematic = "xyz".into()), "schematic"),
            (Box::new(|a| a.schematic = "A".repeat(64)), "schematic"),
            (Box::new(|a| a.version = "latest".into()), "version"),
            (Box::new(|a| a.platform = "Metal".into()), "platform"),
            (Box::new(|a| a.platform = String::new()), "platform"),
            (Box::new(|a| a.arch = Some("riscv64".into())), "arch"),
            (
                Box::new(|a| a.extra_kernel_args = vec!["a b".into()]),
                "extraKernelArgs[0]",
            ),
            (
                Box::new(|a| a.extra_kernel_args = vec!["x".into(), "a\nshell".into()]),
                "extraKernelArgs[1]",
            ),
            (
                Box::new(|a| a.extra_kernel_args = vec!["${net0/mac}".into()]),
                "extraKernelArgs[0]",
            ),
            (
                Box::new(|a| a.extra_kernel_args = vec![String::new()]),
                "extraKernelArgs[0]",
            ),
            (
                Box::new(|a| {
                    a.labels.insert(String::new(), "v".into());
                }),
                "labels.",
            ),
        ];
        for (mutate, field) in cases {
            let mut a = good();
            mutate(&mut a);
            let err = a.validate().expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_str::<Assignment>(
            r#"{"schematic":"x","version":"v1.9.0","kernelArgs":[]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("kernelArgs"), "{e}");
    }

    #[test]
    fn client_arch_mapping() {
        for (code, arch) in [
            (0, "amd64"),
            (7, "amd64"),
            (9, "amd64"),
            (16, "amd64"),
            (11, "arm64"),
            (19, "arm64"),
        ] {
            assert_eq!(talos_arch_for_client_arch(code), Some(arch));
        }
        assert_eq!(talos_arch_for_client_arch(2), None);
    }
}
