//! Per-MAC assignment: which schematic, Talos version, platform and architecture each machine
//! boots; the policy for machines without one; and the inventory of every machine that asked.
//!
//! Everything lives in the store's sled database (trees `assign/machines`,
//! `assign/inventory`, `assign/settings`), so it survives restarts and travels with the data
//! directory. The DHCP server asks [`Assignments::answer_for`] whether to answer a MAC at all,
//! the HTTP side asks it what `/boot/{mac}.ipxe` returns, and both record what they served in
//! the inventory.

pub mod boot;
pub mod client;
pub mod mac;
pub mod model;
pub mod seed;
pub mod token;

use std::sync::Arc;

use crate::config::UnassignedPolicy;
use crate::store::Store;

pub use mac::MacAddr;
pub use model::{Assignment, InvalidAssignment, MachineRecord, talos_arch_for_client_arch};

const MACHINES_TREE: &str = "assign/machines";
const INVENTORY_TREE: &str = "assign/inventory";
const SETTINGS_TREE: &str = "assign/settings";
const DEFAULT_KEY: &[u8] = b"default";

/// An error reading or writing assignments.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    /// The database failed.
    #[error("assignment database: {0}")]
    Db(#[from] sled::Error),
    /// A stored record could not be decoded (a damaged database).
    #[error("stored record for {key} is damaged: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// The decoder's message.
        message: String,
    },
}

/// What a machine gets when it asks to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootAnswer {
    /// Boot this assignment (`from_default` when it is the default one).
    Boot {
        /// What to boot.
        assignment: Assignment,
        /// The machine has no assignment of its own.
        from_default: bool,
    },
    /// An iPXE script that exits to the firmware (next boot device).
    LocalDisk(String),
    /// No answer at all.
    Ignore,
}

/// One DHCP or HTTP sighting of a machine, for the inventory.
#[derive(Debug, Clone, Default)]
pub struct Sighting {
    /// DHCP option 93.
    pub client_arch: Option<u16>,
    /// DHCP option 97, formatted.
    pub uuid: Option<String>,
    /// The machine's IPv4 address, when known.
    pub ip: Option<String>,
    /// DHCP option 60.
    pub vendor_class: Option<String>,
    /// DHCP option 77.
    pub user_class: Option<String>,
    /// What it was served.
    pub served: String,
}

/// The assignment table, the default, the unassigned policy and the inventory.
#[derive(Clone)]
pub struct Assignments {
    machines: sled::Tree,
    inventory: sled::Tree,
    settings: sled::Tree,
    policy: UnassignedPolicy,
    inventory_lock: Arc<std::sync::Mutex<()>>,
}

impl Assignments {
    /// Opens the trees in `store`'s database.
    pub fn open(store: &Store, policy: UnassignedPolicy) -> Result<Assignments, AssignError> {
        let db = store.db();
        Ok(Assignments {
            machines: db.open_tree(MACHINES_TREE)?,
            inventory: db.open_tree(INVENTORY_TREE)?,
            settings: db.open_tree(SETTINGS_TREE)?,
            policy,
            inventory_lock: Arc::new(std::sync::Mutex::new(())),
        })
    }

    /// The policy for machines without an assignment.
    pub fn policy(&self) -> UnassignedPolicy {
        self.policy
    }

    /// The machine's own assignment.
    pub fn get(&self, mac: MacAddr) -> Result<Option<Assignment>, AssignError> {
        decode_opt(&mac.to_string(), self.machines.get(mac.0)?)
    }

    /// Sets (or replaces) a machine's assignment. The caller validated it.
    pub fn set(&self, mac: MacAddr, assignment: &Assignment) -> Result<(), AssignError> {
        self.machines.insert(mac.0, encode(assignment))?;
        self.machines.flush()?;
        Ok(())
    }

    /// Removes a machine's assignment; false when it had none.
    pub fn remove(&self, mac: MacAddr) -> Result<bool, AssignError> {
        let had = self.machines.remove(mac.0)?.is_some();
        self.machines.flush()?;
        Ok(had)
    }

    /// Every machine's own assignment, by MAC.
    pub fn list(&self) -> Result<Vec<(MacAddr, Assignment)>, AssignError> {
        let mut out = Vec::new();
        for item in self.machines.iter() {
            let (k, v) = item?;
            let mac = mac_from_key(&k)?;
            let a = decode(&mac.to_string(), &v)?;
            out.push((mac, a));
        }
        Ok(out)
    }

    /// The default assignment for machines without their own.
    pub fn default_assignment(&self) -> Result<Option<Assignment>, AssignError> {
        decode_opt("default", self.settings.get(DEFAULT_KEY)?)
    }

    /// Sets or clears the default assignment.
    pub fn set_default(&self, assignment: Option<&Assignment>) -> Result<(), AssignError> {
        match assignment {
            Some(a) => {
                self.settings.insert(DEFAULT_KEY, encode(a))?;
            }
            None => {
                self.settings.remove(DEFAULT_KEY)?;
            }
        }
        self.settings.flush()?;
        Ok(())
    }

    /// What `mac` gets: its assignment, else what the unassigned policy says.
    pub fn answer_for(&self, mac: MacAddr) -> Result<BootAnswer, AssignError> {
        if let Some(assignment) = self.get(mac)? {
            return Ok(BootAnswer::Boot {
                assignment,
                from_default: false,
            });
        }
        Ok(match self.policy {
            UnassignedPolicy::Ignore => BootAnswer::Ignore,
            UnassignedPolicy::LocalDisk => {
                BootAnswer::LocalDisk(format!("{mac} has no assignment (policy local-disk)"))
            }
            UnassignedPolicy::BootDefault => match self.default_assignment()? {
                Some(assignment) => BootAnswer::Boot {
                    assignment,
                    from_default: true,
                },
                None => {
                    BootAnswer::LocalDisk(format!("{mac} has no assignment and no default is set"))
                }
            },
        })
    }

    /// Records a sighting of `mac` in the inventory.
    pub fn record(&self, mac: MacAddr, sighting: Sighting) -> Result<MachineRecord, AssignError> {
        let now = now_rfc3339();
        // Read-modify-write under a lock: DHCP and HTTP may report the same machine at once.
        let _guard = self
            .inventory_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut record =
            match decode_opt::<MachineRecord>(&mac.to_string(), self.inventory.get(mac.0)?)? {
                Some(r) => r,
                None => MachineRecord {
                    mac,
                    client_arch: None,
                    arch: None,
                    uuid: None,
                    ip: None,
                    vendor_class: String::new(),
                    user_class: None,
                    first_seen: now.clone(),
                    last_seen: now.clone(),
                    last_served: String::new(),
                    requests: 0,
                },
            };
        if let Some(a) = sighting.client_arch {
            record.client_arch = Some(a);
            record.arch = talos_arch_for_client_arch(a).map(str::to_string);
        }
        if sighting.uuid.is_some() {
            record.uuid = sighting.uuid;
        }
        if sighting.ip.is_some() {
            record.ip = sighting.ip;
        }
        if let Some(v) = sighting.vendor_class {
            record.vendor_class = v;
        }
        if sighting.user_class.is_some() {
            record.user_class = sighting.user_class;
        }
        record.last_seen = now;
        record.last_served = sighting.served;
        record.requests += 1;
        self.inventory.insert(mac.0, encode(&record))?;
        Ok(record)
    }

    /// What the inventory knows about `mac`.
    pub fn machine(&self, mac: MacAddr) -> Result<Option<MachineRecord>, AssignError> {
        decode_opt(&mac.to_string(), self.inventory.get(mac.0)?)
    }

    /// Every machine in the inventory, by MAC.
    pub fn inventory(&self) -> Result<Vec<MachineRecord>, AssignError> {
        let mut out = Vec::new();
        for item in self.inventory.iter() {
            let (k, v) = item?;
            let mac = mac_from_key(&k)?;
            out.push(decode(&mac.to_string(), &v)?);
        }
        Ok(out)
    }
}

fn mac_from_key(k: &[u8]) -> Result<MacAddr, AssignError> {
    let bytes: [u8; 6] = k.try_into().map_err(|_| AssignError::Corrupt {
        key: hex::encode(k),
        message: "key is not a MAC address".into(),
    })?;
    Ok(MacAddr(bytes))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("assignment records serialize")
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, AssignError> {
    serde_json::from_slice(bytes).map_err(|e| AssignError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

fn decode_opt<T: serde::de::DeserializeOwned>(
    key: &str,
    bytes: Option<sled::IVec>,
) -> Result<Option<T>, AssignError> {
    bytes.map(|b| decode(key, &b)).transpose()
}

/// The current time as RFC 3339 UTC with seconds (`2026-11-29T17:04:05Z`).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(version: &str) -> Assignment {
        Assignment {
            schematic: "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba".into(),
            version: version.into(),
            platform: "metal".into(),
            arch: None,
            extra_kernel_args: vec![],
            labels: Default::default(),
        }
    }

    fn open(policy: UnassignedPolicy) -> (tempfile::TempDir, Assignments) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = Assignments::open(&store, policy).unwrap();
        (dir, a)
    }

    const M1: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    const M2: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 2]);

    #[test]
    fn assigned_machines_boot_their_own_assignment_only() {
        let (_d, a) = open(UnassignedPolicy::BootDefault);
        a.set(M1, &assignment("v1.9.0")).unwrap();
        assert_eq!(
            a.answer_for(M1).unwrap(),
            BootAnswer::Boot {
                assignment: assignment("v1.9.0"),
                from_default: false
            }
        );
        assert!(matches!(
            a.answer_for(M2).unwrap(),
            BootAnswer::LocalDisk(_)
        ));
        a.set_default(Some(&assignment("v1.8.4"))).unwrap();
        assert_eq!(
            a.answer_for(M2).unwrap(),
            BootAnswer::Boot {
                assignment: assignment("v1.8.4"),
                from_default: true
            }
        );
        assert!(a.remove(M1).unwrap());
        assert!(!a.remove(M1).unwrap());
        assert_eq!(a.list().unwrap(), vec![]);
    }

    #[test]
    fn unassigned_policies() {
        let (_d, a) = open(UnassignedPolicy::Ignore);
        a.set_default(Some(&assignment("v1.8.4"))).unwrap();
        assert_eq!(a.answer_for(M2).unwrap(), BootAnswer::Ignore);
        let (_d, a) = open(UnassignedPolicy::LocalDisk);
        a.set_default(Some(&assignment("v1.8.4"))).unwrap();
        assert!(
            matches!(a.answer_for(M2).unwrap(), BootAnswer::LocalDisk(m) if m.contains("52:54:00:00:00:02"))
        );
    }

    #[test]
    fn inventory_keeps_first_seen_and_counts() {
        let (_d, a) = open(UnassignedPolicy::BootDefault);
        let first = a
            .record(
                M1,
                Sighting {
                    client_arch: Some(7),
                    uuid: Some("u".into()),
                    served: "ipxe.efi".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        let second = a
            .record(
                M1,
                Sighting {
                    ip: Some("192.0.2.50".into()),
                    served: "script".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(second.first_seen, first.first_seen);
        assert_eq!(second.requests, 2);
        assert_eq!(second.arch.as_deref(), Some("amd64"));
        assert_eq!(second.uuid.as_deref(), Some("u"));
        assert_eq!(second.ip.as_deref(), Some("192.0.2.50"));
        assert_eq!(second.last_served, "script");
        assert_eq!(a.inventory().unwrap().len(), 1);
    }

    #[test]
    fn assignments_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let a = Assignments::open(&store, UnassignedPolicy::BootDefault).unwrap();
            a.set(M1, &assignment("v1.9.0")).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let a = Assignments::open(&store, UnassignedPolicy::BootDefault).unwrap();
        assert_eq!(a.get(M1).unwrap(), Some(assignment("v1.9.0")));
    }
}
