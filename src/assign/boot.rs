//! `GET /boot/{mac}.ipxe`: the script a machine's iPXE fetches after DHCP.
//!
//! An assigned machine (or, under `boot-default`, any machine while a default exists) gets a
//! script that chains the factory's `/pxe/{schematic}/{version}/{platform}-{arch}` script,
//! with retries. When the assignment adds kernel arguments, the script is the `/pxe` script
//! itself with those arguments appended to its `kernel` line. Machines under `local-disk`
//! get a script that exits to the firmware; under `ignore`, nothing (404).

use crate::factory::profile::Arch;
use crate::factory::service::{Factory, FactoryError};
use crate::ipxe::script;

use super::{Assignments, BootAnswer, MacAddr, Sighting};

/// The outcome of a boot-script request.
#[derive(Debug)]
pub enum BootScript {
    /// An iPXE script to serve.
    Script(String),
    /// The machine is ignored by policy: answer 404.
    Ignored,
}

/// Why a boot script could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The assignment database failed.
    #[error(transparent)]
    Assign(#[from] super::AssignError),
    /// The assignment names something the factory refuses (e.g. a version no longer served).
    #[error(transparent)]
    Factory(#[from] FactoryError),
}

/// Builds the boot script for `mac`; `arch_hint` is the `?arch=` query (or none), and the
/// sighting is recorded in the inventory.
pub async fn boot_script(
    assignments: &Assignments,
    factory: &Factory,
    pxe_base: &str,
    mac: MacAddr,
    arch_hint: Option<&str>,
    peer_ip: Option<String>,
) -> Result<BootScript, BootError> {
    let answer = assignments.answer_for(mac)?;
    let (script, served) = match answer {
        BootAnswer::Ignore => {
            record(assignments, mac, peer_ip, "nothing (policy ignore)".into());
            return Ok(BootScript::Ignored);
        }
        BootAnswer::LocalDisk(reason) => (script::exit_to_firmware(&reason), "local-disk".into()),
        BootAnswer::Boot {
            assignment,
            from_default,
        } => {
            let known_arch = assignments.machine(mac)?.and_then(|m| m.arch);
            let fallback = arch_hint
                .and_then(Arch::from_name)
                .or_else(|| known_arch.as_deref().and_then(Arch::from_name))
                .unwrap_or(Arch::Amd64);
            let profile = assignment.cmdline_profile(fallback);
            let path = profile.pxe_path();
            let pxe_url = format!(
                "{pxe_base}/pxe/{}/{}/{path}",
                assignment.schematic, assignment.version
            );
            let comment = format!(
                "{mac} boots schematic {} Talos {} {path}{}",
                assignment.schematic,
                assignment.version,
                if from_default {
                    " (default assignment)"
                } else {
                    ""
                }
            );
            if assignment.extra_kernel_args.is_empty() {
                (script::chain(&comment, &pxe_url), pxe_url)
            } else {
                let text = factory
                    .profile_pxe_script(
                        &assignment.schematic,
                        &assignment.version,
                        profile,
                        pxe_base,
                        &assignment.extra_kernel_args,
                        // What an assignment boots was chosen by the operator: not limited.
                        None,
                    )
                    .await?;
                (
                    text,
                    format!(
                        "{pxe_url} + {} extra kernel args",
                        assignment.extra_kernel_args.len()
                    ),
                )
            }
        }
    };
    record(assignments, mac, peer_ip, format!("boot script: {served}"));
    Ok(BootScript::Script(script))
}

fn record(assignments: &Assignments, mac: MacAddr, ip: Option<String>, served: String) {
    let sighting = Sighting {
        ip,
        served,
        ..Default::default()
    };
    if let Err(e) = assignments.record(mac, sighting) {
        tracing::warn!(%mac, error = %crate::errors::chain(&e), "cannot record the machine in the inventory");
    }
}
