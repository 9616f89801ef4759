//! The one check an assignment passes before it is stored, whoever sets it: the admin API
//! (`PUT /api/v1/machines/{mac}`, `PUT /api/v1/default`) and the assignments file.
//!
//! First the assignment on its own ([`Assignment::validate`]: schematic ID syntax, version
//! syntax, platform and architecture names, kernel arguments), then against the factory, the
//! way a boot would use it: the schematic exists, the version is served, the platform is one
//! Talos knows — i.e. the assignment's `cmdline` asset ([`Assignment::cmdline_profile`],
//! `amd64` unless it names an architecture) resolves.

use super::Assignment;
use super::model::InvalidAssignment;
use crate::factory::profile::Arch;
use crate::factory::service::{Factory, FactoryError};

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
    /// The check itself could not be made (an upstream is unavailable, the store failed).
    #[error(transparent)]
    Unchecked(FactoryError),
}

/// Checks `a` on its own and against `factory`, including that the factory serves its
/// version (which may ask the upstream registry). The admin API's check.
pub async fn check(factory: &Factory, a: &Assignment) -> Result<(), CheckError> {
    check_with(factory, a, true).await
}

/// [`check`] without the version-availability step: what the appliance decides on its own.
/// The assignments file is checked with this at start and on SIGHUP, so that a start never
/// waits for (or fails because of) an unreachable upstream; a version that turns out not to be
/// served is reported when the machine boots (`/boot/<mac>.ipxe` answers 409 naming it).
pub async fn check_locally(factory: &Factory, a: &Assignment) -> Result<(), CheckError> {
    check_with(factory, a, false).await
}

async fn check_with(
    factory: &Factory,
    a: &Assignment,
    availability: bool,
) -> Result<(), CheckError> {
    a.validate()?;
    let profile = a.cmdline_profile(Arch::Amd64);
    let resolved = if availability {
        factory
            .resolve_profile(&a.schematic, &a.version, profile)
            .await
    } else {
        factory
            .resolve_profile_locally(&a.schematic, &a.version, profile)
            .await
    };
    match resolved {
        Ok(_) => Ok(()),
        Err(error) => Err(match error {
            FactoryError::SchematicNotFound(_) => CheckError::Refused {
                field: "schematic",
                error,
            },
            FactoryError::VersionNotAvailable(_) | FactoryError::BadVersion(_) => {
                CheckError::Refused {
                    field: "version",
                    error,
                }
            }
            FactoryError::BadPath(_) | FactoryError::UnknownPlatform(_) => CheckError::Refused {
                field: "platform",
                error,
            },
            other => CheckError::Unchecked(other),
        }),
    }
}
