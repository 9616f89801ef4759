//! `assignments.yaml`: a seed file applied at start (and on reload).
//!
//! ```yaml
//! default:                      # optional: what unassigned machines boot (policy boot-default)
//!   schematic: 376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba
//!   version: v1.9.0
//! machines:
//!   "52:54:00:12:34:56":        # quote MACs: YAML 1.1 tools read 52:54:00 as a number
//!     schematic: 376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba
//!     version: v1.9.0
//!     platform: metal           # default metal
//!     arch: amd64               # default: from the firmware
//!     extraKernelArgs: [console=ttyS0]
//!     labels: {role: controlplane}
//! ```
//!
//! The machines and the default it names replace the stored ones; machines it does not name
//! keep what the API gave them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use std::sync::Arc;

use super::check::{CheckError, check, check_locally};
use super::{Assignment, Assignments, MacAddr};
use crate::factory::service::Factory;

/// The parsed seed file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    /// The default assignment.
    #[serde(default)]
    pub default: Option<Assignment>,
    /// Per-MAC assignments (keys in any MAC spelling).
    #[serde(default)]
    pub machines: BTreeMap<String, Assignment>,
}

/// A seed file that cannot be applied, naming the file and the entry.
#[derive(Debug, thiserror::Error)]
#[error("assignments file {path}: {message}")]
pub struct SeedError {
    /// The file.
    pub path: String,
    /// What is wrong, and where.
    pub message: String,
}

/// Parses `text` and checks every entry on its own ([`Assignment::validate`]); entry names
/// are `default` and `machines.<mac>`.
pub fn parse(path: &Path, text: &str) -> Result<Vec<(Option<MacAddr>, Assignment)>, SeedError> {
    let err = |message: String| SeedError {
        path: path.display().to_string(),
        message,
    };
    let seed: SeedFile = if text.trim().is_empty() {
        SeedFile::default()
    } else {
        serde_yaml::from_str(text).map_err(|e| err(e.to_string()))?
    };
    let mut out = Vec::new();
    if let Some(d) = seed.default {
        out.push((None, d));
    }
    for (key, a) in seed.machines {
        let mac: MacAddr = key.parse().map_err(|e| err(format!("machines: {e}")))?;
        out.push((Some(mac), a));
    }
    for (mac, a) in &out {
        a.validate()
            .map_err(|e| err(format!("{}.{e}", entry_name(*mac))))?;
    }
    Ok(out)
}

fn entry_name(mac: Option<MacAddr>) -> String {
    mac.map_or("default".to_string(), |m| format!("machines.{m}"))
}

/// Reads the seed file, checks every entry with the admin API's check minus the steps that
/// may ask an upstream ([`check_locally`]: syntax, the schematic exists, the version is a
/// version, the platform is known) and applies it; returns how many entries it set. Nothing
/// is applied if an entry is refused.
///
/// Whether the factory serves an entry's version and whether its boot chain is whole (the
/// extensions catalog, extensions, overlay: [`crate::factory::chain`]) is checked after that
/// — offline at once (everything is in the store, so it is quick), online in the background
/// ([`verify_in_background`]), so a start never waits for an unreachable upstream. Either
/// way a broken chain does not stop the start (with an empty store, the bundle can only be
/// imported next): each entry whose boot would fail is logged at WARN with the missing
/// piece, and that machine's `/boot` and `/pxe` scripts answer the same error until it is
/// fixed.
pub async fn apply(
    path: &Path,
    assignments: &Assignments,
    factory: &Arc<Factory>,
) -> Result<usize, SeedError> {
    let err = |message: String| SeedError {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let entries = parse(path, &text)?;
    for (mac, a) in &entries {
        let name = entry_name(*mac);
        match check_locally(factory, a).await {
            Ok(()) => {}
            Err(CheckError::Invalid(e)) => return Err(err(format!("{name}.{e}"))),
            Err(CheckError::Refused {
                field: "schematic", ..
            }) => {
                return Err(err(format!(
                    "{name}.schematic: schematic {} is not known (create it with POST /schematics or put it in schematics.dir)",
                    a.schematic
                )));
            }
            Err(CheckError::Refused { field, error }) => {
                return Err(err(format!("{name}.{field}: {error}")));
            }
            // Not reached by the local check (it asks nothing that could be missing); the
            // background check reports it.
            Err(CheckError::Broken(_)) => {}
            Err(CheckError::Unchecked(e)) => {
                tracing::warn!(file = %path.display(), entry = %name, error = %crate::errors::chain(&e), "assignment applied unchecked");
            }
        }
    }
    let n = entries.len();
    for (mac, a) in &entries {
        let result = match mac {
            Some(mac) => assignments.set_seeded(*mac, a),
            None => assignments.set_default(Some(a)),
        };
        result.map_err(|e| err(crate::errors::chain(&e)))?;
    }
    if factory.config().offline {
        // Offline every answer is in the store: checked now, before the start completes.
        verify(
            &path.display().to_string(),
            &entries,
            &Arc::downgrade(factory),
        )
        .await;
    } else {
        verify_in_background(path, entries, factory);
    }
    Ok(n)
}

/// Runs [`verify`] in a task of its own (online: the check may wait for an upstream). The
/// task holds the factory weakly, so a stopping server is not kept alive by it.
pub fn verify_in_background(
    path: &Path,
    entries: Vec<(Option<MacAddr>, Assignment)>,
    factory: &Arc<Factory>,
) {
    let file = path.display().to_string();
    let factory = Arc::downgrade(factory);
    tokio::spawn(async move { verify(&file, &entries, &factory).await });
}

/// Runs the admin API's whole [`check`] on each applied entry and logs the outcome: WARN for
/// an entry whose boot would fail (the missing piece named) or that could not be checked,
/// INFO when every entry's chain is whole. Stops when the factory is gone.
async fn verify(
    file: &str,
    entries: &[(Option<MacAddr>, Assignment)],
    factory: &std::sync::Weak<Factory>,
) {
    {
        let mut broken = 0;
        for (mac, a) in entries {
            let name = entry_name(*mac);
            let Some(factory) = factory.upgrade() else {
                return;
            };
            match check(&factory, a).await {
                Ok(()) => {}
                Err(CheckError::Unchecked(e)) => {
                    broken += 1;
                    tracing::warn!(%file, entry = %name, error = %crate::errors::chain(&e), "assignment's boot chain could not be checked");
                }
                Err(e) => {
                    broken += 1;
                    tracing::warn!(%file, entry = %name, error = %crate::errors::chain(&e), "assignment will not boot until this is fixed");
                }
            }
        }
        if broken == 0 {
            tracing::info!(%file, entries = entries.len(), "every assignment's boot chain is whole");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

    fn p(text: &str) -> Result<Vec<(Option<MacAddr>, Assignment)>, SeedError> {
        parse(Path::new("assignments.yaml"), text)
    }

    #[test]
    fn parses_default_and_machines() {
        let text = format!(
            "default:\n  schematic: {ID}\n  version: v1.9.0\nmachines:\n  \"52-54-00-12-34-56\":\n    schematic: {ID}\n    version: v1.8.4\n    extraKernelArgs: [console=ttyS0]\n"
        );
        let entries = p(&text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, None);
        assert_eq!(entries[1].0.unwrap().to_string(), "52:54:00:12:34:56");
        assert_eq!(entries[1].1.platform, "metal");
        assert!(p("").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_entry() {
        let cases = [
            ("machines: [", "assignments.yaml"),
            ("machine: {}", "unknown field"),
            (
                &*format!("machines:\n  nope:\n    schematic: {ID}\n    version: v1.9.0\n"),
                "\"nope\" is not a MAC",
            ),
            (
                &*format!(
                    "machines:\n  \"52:54:00:12:34:56\":\n    schematic: {ID}\n    version: latest\n"
                ),
                "machines.52:54:00:12:34:56.version",
            ),
        ];
        for (text, want) in cases {
            let e = p(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
