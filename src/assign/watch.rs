//! `bootfactory machine list --watch`: what changed between two answers of
//! `GET /api/v1/machines` — a machine seen for the first time, a machine asking again and what
//! it was served, an assignment made, changed or removed — as one event per change.
//!
//! The command polls the admin API; the inventory counts each machine's requests, so requests
//! made between two polls are not lost, only folded into one event (`requests` says how
//! many).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// One change between two machine lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineEvent {
    /// `new`, `seen`, `assigned`, `unassigned`.
    pub event: &'static str,
    /// The machine.
    pub mac: String,
    /// When the inventory last saw it (RFC 3339), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Its IPv4 address, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// `amd64`/`arm64`, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// What it was served last (`seen`, `new`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served: Option<String>,
    /// Requests since the previous poll (`seen`, `new`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// The assignment (`assigned`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment: Option<Value>,
}

impl MachineEvent {
    /// One line for people.
    pub fn line(&self) -> String {
        let when = self.last_seen.as_deref().unwrap_or("-");
        let mut out = format!("{when:<20}  {:<17}  ", self.mac);
        match self.event {
            "new" | "seen" => {
                out.push_str(if self.event == "new" {
                    "new machine"
                } else {
                    "asked again"
                });
                let mut about = Vec::new();
                if let Some(a) = &self.arch {
                    about.push(a.clone());
                }
                if let Some(ip) = &self.ip {
                    about.push(ip.clone());
                }
                if let Some(n) = self.requests.filter(|&n| n > 1) {
                    about.push(format!("{n} requests"));
                }
                if !about.is_empty() {
                    out.push_str(&format!(" ({})", about.join(", ")));
                }
                if let Some(s) = &self.served {
                    out.push_str(&format!(": served {s}"));
                }
            }
            "assigned" => {
                let a = self.assignment.as_ref();
                let s = |k: &str| {
                    a.and_then(|a| a.get(k))
                        .and_then(Value::as_str)
                        .unwrap_or("-")
                        .to_string()
                };
                out.push_str(&format!(
                    "assigned schematic {} version {}",
                    s("schematic"),
                    s("version")
                ));
            }
            _ => out.push_str("assignment removed"),
        }
        out
    }
}

fn by_mac(list: &Value) -> BTreeMap<String, &Value> {
    list.get("machines")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m.get("mac")?.as_str()?.to_string(), m)))
        .collect()
}

fn str_of(v: Option<&Value>, key: &str) -> Option<String> {
    v?.get(key)?.as_str().map(str::to_string)
}

/// The events that turn `prev` into `next` (both `GET /api/v1/machines` answers), in MAC
/// order.
pub fn changes(prev: &Value, next: &Value) -> Vec<MachineEvent> {
    let before = by_mac(prev);
    let after = by_mac(next);
    let mut events = Vec::new();
    for (mac, &m) in &after {
        let old = before.get(mac).copied();
        let seen = m.get("seen").filter(|s| !s.is_null());
        let old_seen = old.and_then(|o| o.get("seen")).filter(|s| !s.is_null());
        let requests = |s: Option<&Value>| {
            s.and_then(|s| s.get("requests"))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        if let Some(s) = seen {
            let delta = requests(Some(s)).saturating_sub(requests(old_seen));
            let event = match old_seen {
                None => Some("new"),
                Some(_) if delta > 0 => Some("seen"),
                Some(_) => None,
            };
            if let Some(event) = event {
                events.push(MachineEvent {
                    event,
                    mac: mac.clone(),
                    last_seen: str_of(Some(s), "lastSeen"),
                    ip: str_of(Some(s), "ip"),
                    arch: str_of(Some(s), "arch"),
                    served: str_of(Some(s), "lastServed").filter(|s| !s.is_empty()),
                    requests: Some(delta.max(1)),
                    assignment: None,
                });
            }
        }
        let assignment = m.get("assignment").filter(|a| !a.is_null());
        let old_assignment = old
            .and_then(|o| o.get("assignment"))
            .filter(|a| !a.is_null());
        if assignment != old_assignment {
            events.push(MachineEvent {
                event: if assignment.is_some() {
                    "assigned"
                } else {
                    "unassigned"
                },
                mac: mac.clone(),
                last_seen: str_of(seen, "lastSeen"),
                ip: None,
                arch: None,
                served: None,
                requests: None,
                assignment: assignment.cloned(),
            });
        }
    }
    for (mac, old) in &before {
        if !after.contains_key(mac) && old.get("assignment").is_some_and(|a| !a.is_null()) {
            events.push(MachineEvent {
                event: "unassigned",
                mac: mac.clone(),
                last_seen: None,
                ip: None,
                arch: None,
                served: None,
                requests: None,
                assignment: None,
            });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_machines_requests_and_assignments_are_events() {
        let empty = json!({"machines": []});
        let one = json!({"machines": [{"mac": "52:54:00:00:00:01", "seen": {
            "mac": "52:54:00:00:00:01", "lastSeen": "2026-01-01T00:00:00Z", "ip": "192.0.2.10",
            "arch": "amd64", "lastServed": "boot script: local disk", "requests": 1}}]});
        let e = changes(&empty, &one);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].event, "new");
        assert_eq!(
            e[0].line(),
            "2026-01-01T00:00:00Z  52:54:00:00:00:01  new machine (amd64, 192.0.2.10): served boot script: local disk"
        );
        assert!(changes(&one, &one).is_empty(), "nothing changed");
        let again = json!({"machines": [{"mac": "52:54:00:00:00:01",
            "assignment": {"schematic": "abc", "version": "v1.11.6"},
            "seen": {"mac": "52:54:00:00:00:01", "lastSeen": "2026-01-01T00:00:05Z",
            "lastServed": "boot script: /pxe/abc", "requests": 4}}]});
        let e = changes(&one, &again);
        assert_eq!(
            e.iter().map(|e| e.event).collect::<Vec<_>>(),
            ["seen", "assigned"]
        );
        assert_eq!(e[0].requests, Some(3));
        assert!(
            e[0].line()
                .contains("asked again (3 requests): served boot script: /pxe/abc")
        );
        assert!(
            e[1].line()
                .ends_with("assigned schematic abc version v1.11.6")
        );
        let gone = changes(&again, &empty);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].event, "unassigned");
    }

    /// A full inventory (`assignments.inventoryMaxMachines`, 10 000 by default) is compared
    /// in one pass, not once per machine: a poll must not take longer than its interval.
    #[test]
    fn a_full_inventory_is_compared_quickly() {
        let list = |n: usize, requests: u64| {
            let machines: Vec<Value> = (0..n)
                .map(|i| {
                    serde_json::json!({
                        "mac": format!("52:54:00:{:02x}:{:02x}:{:02x}", i >> 16, (i >> 8) & 0xff, i & 0xff),
                        "assignment": {"schematic": "s", "version": "v1.11.6"},
                        "seen": {"lastSeen": "2026-01-01T00:00:00Z", "requests": requests},
                    })
                })
                .collect();
            serde_json::json!({ "machines": machines })
        };
        let before = list(10_000, 1);
        let after = list(10_000, 2);
        let started = std::time::Instant::now();
        let events = changes(&before, &after);
        let took = started.elapsed();
        assert_eq!(events.len(), 10_000);
        assert!(events.iter().all(|e| e.event == "seen"));
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    }
}
