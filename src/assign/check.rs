//! The one check an assignment passes before it is stored, whoever sets it: the admin API
//! (`PUT /api/v1/machines/{mac}`, `PUT /api/v1/default`) and the assignments file.
//!
//! First the assignment on its own ([`Assignment::validate`]: schematic ID syntax, version
//! syntax, platform and architecture names, kernel arguments), then against the factory, the
//! way a boot would use it: the schematic exists, the version is served, the platform is one
//! Talos knows — i.e. the assignment's `cmdline` asset ([`Assignment::cmdline_profile`],
//! `amd64` unless it names an architecture) resolves — and then the boot chain
//! ([`crate::factory::chain`]): the version's extensions catalog, every extension of the
//! schematic in it and its image present (offline) or reachable (online), the overlay
//! likewise. An assignment whose boot would fail is [`CheckError::Broken`], naming the
//! missing piece; one that could not be checked (an upstream unreachable) is
//! [`CheckError::Unchecked`], with the reason in words.

use super::Assignment;
use super::model::InvalidAssignment;
use crate::factory::chain::ChainError;
use crate::factory::profile::Arch;
use crate::factory::service::{Factory, FactoryError};
use crate::upstream::MirrorError;

/// Why an assignment was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The assignment is malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidAssignment),
    /// The factory refuses what it names (unknown schematic, version not served, unknown
    /// platform); `field` is the assignment field at fault.
    #[error("{error}")]
    Refused {
        /// `schematic`, `version` or `platform`.
        field: &'static str,
        /// The factory's answer, worded like upstream's.
        error: FactoryError,
    },
    /// The machine would fail at boot: something its boot needs is missing (the Talos
    /// release itself, the extensions catalog, an extension or overlay); the error names it
    /// and, offline, what to import.
    #[error("the boot would fail: {0}")]
    Broken(ChainError),
    /// The check itself could not be made (an upstream is unavailable, the store failed).
    #[error(transparent)]
    Unchecked(FactoryError),
}

/// Checks `a` on its own and against `factory`, including that the factory serves its
/// version and the boot chain (which may ask the upstream registry). The admin API's check.
pub async fn check(factory: &Factory, a: &Assignment) -> Result<(), CheckError> {
    check_with(factory, a, true).await
}

/// [`check`] without the steps that may ask an upstream (version availability, the boot
/// chain): what the appliance decides on its own, instantly. The assignments file is checked
/// with this at start and on SIGHUP, so that a start never waits for (or fails because of)
/// an unreachable upstream; the rest is [`check`]ed afterwards in the background
/// ([`super::seed::verify_in_background`]) and logged.
pub async fn check_locally(factory: &Factory, a: &Assignment) -> Result<(), CheckError> {
    check_with(factory, a, false).await
}

async fn check_with(
    factory: &Factory,
    a: &Assignment,
    availability: bool,
) -> Result<(), CheckError> {
    a.validate()?;
    let arch = a
        .arch
        .as_deref()
        .and_then(Arch::from_name)
        .unwrap_or(Arch::Amd64);
    let profile = a.cmdline_profile(arch);
    let resolved = if availability {
        factory
            .resolve_profile(&a.schematic, &a.version, profile)
            .await
    } else {
        factory
            .resolve_profile_locally(&a.schematic, &a.version, profile)
            .await
    };
    let resolved = resolved.map_err(|error| match error {
        FactoryError::SchematicNotFound(_) => CheckError::Refused {
            field: "schematic",
            error,
        },
        FactoryError::VersionNotAvailable(_) | FactoryError::BadVersion(_) => CheckError::Refused {
            field: "version",
            error,
        },
        FactoryError::BadPath(_) | FactoryError::UnknownPlatform(_) => CheckError::Refused {
            field: "platform",
            error,
        },
        // Offline with no release in the store: the imager is missing, which is named.
        FactoryError::Unavailable(ref m) if matches!(m.as_ref(), MirrorError::Offline(_)) => {
            CheckError::Broken(ChainError::Missing(error))
        }
        other => CheckError::Unchecked(other),
    })?;
    if !availability {
        return Ok(());
    }
    match factory
        .check_boot_chain_here_or_parent(&resolved, arch)
        .await
    {
        Ok(()) => Ok(()),
        Err(ChainError::Unchecked(e)) => Err(CheckError::Unchecked(e)),
        Err(broken) => Err(CheckError::Broken(broken)),
    }
}

/// Why [`assign_checked`] or [`set_default_checked`] did not store an assignment.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    /// The assignment failed [`check`].
    #[error(transparent)]
    Check(#[from] CheckError),
    /// Storing it failed.
    #[error(transparent)]
    Store(#[from] super::AssignError),
}

/// Checks `a` ([`check`]) and makes it `mac`'s assignment; with `warm`, starts building what
/// it boots in the background (for the architecture it names, else the one the inventory
/// saw, else amd64). What the admin API (`PUT /api/v1/machines/{mac}`) and the machines page
/// both call; returns what the inventory knows about the machine.
pub async fn assign_checked(
    assignments: &super::Assignments,
    factory: &std::sync::Arc<Factory>,
    mac: crate::mac::MacAddr,
    a: &Assignment,
    warm: bool,
) -> Result<Option<super::MachineRecord>, SetError> {
    // A fixed address the network already uses is refused first (400), before the factory
    // is asked about the schematic; `set` checks it again under its lock.
    if let Some(ip) = a.ip {
        assignments.check_fixed_ip(ip)?;
    }
    check(factory, a).await?;
    assignments.set(mac, a)?;
    tracing::info!(%mac, schematic = %a.schematic, version = %a.version, "machine assigned");
    let seen = assignments.machine(mac)?;
    if warm {
        let fallback = seen
            .as_ref()
            .and_then(|m| m.arch.as_deref())
            .and_then(Arch::from_name)
            .unwrap_or(Arch::Amd64);
        crate::factory::warm::warm_in_background(
            factory.clone(),
            a.warm_request(fallback),
            format!("{mac} assigned"),
        );
    }
    Ok(seen)
}

/// Checks `a` ([`check`]) and makes it the default assignment: what `PUT /api/v1/default`
/// and the machines page both call.
pub async fn set_default_checked(
    assignments: &super::Assignments,
    factory: &Factory,
    a: &Assignment,
) -> Result<(), SetError> {
    check(factory, a).await?;
    assignments.set_default(Some(a))?;
    tracing::info!(schematic = %a.schematic, version = %a.version, "default assignment set");
    Ok(())
}
