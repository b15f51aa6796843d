//! The persist guard: what the next boot does with the persisted bindings.
//!
//! For each persisted address it takes the device there now and its IOMMU group now, and asks whether the
//! rule will bind it (the IDs recorded with the rule must match the device; a rule without IDs binds
//! whatever is there). The functions of every group a rule binds into are then checked against what the
//! host boots from ([`crate::safety::boot_storage`]: `/etc/fstab` and the current mounts and swap) and for
//! the boot VGA device with no other display left. Any such function refuses. A card that moved, a group
//! that grew since it was persisted, an address with no device and a rule without IDs are warnings.
//!
//! The groups are this boot's: a kernel or firmware update can change them, which is why `persist --check`
//! is worth running after one (and why a grown group is reported).

use std::collections::BTreeSet;
use std::path::Path;

use iommu_pci::PciAddress;
use serde::Serialize;

use crate::persist::{DeviceIds, Persisted};
use crate::safety::{boot_storage, BootStorage, Holder};
use crate::snapshot::Snapshot;

/// What the next boot does with one persisted binding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryCheck {
    /// The persisted address.
    pub address: PciAddress,
    /// The driver the rule sets.
    pub driver: String,
    /// The IDs the rule requires (`None`: it matches the address alone).
    pub recorded: Option<DeviceIds>,
    /// The IDs of the device at the address now (`None`: no device there).
    pub now: Option<DeviceIds>,
    /// Whether the rule will bind the device there.
    pub binds: bool,
    /// The group recorded when it was persisted.
    pub recorded_group: Option<Vec<PciAddress>>,
    /// The device's IOMMU group now (itself alone when it has none or is absent).
    pub group: Vec<PciAddress>,
    /// What changed or is unknown, as sentences.
    pub warnings: Vec<String>,
}

/// The next boot, simulated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NextBoot {
    /// One check per persisted address, in address order.
    pub entries: Vec<EntryCheck>,
    /// Functions in a group a rule binds into that the host needs: each refuses the persist.
    pub refusals: Vec<Holder>,
    /// Other functions in such a group that a file system the boot waits for sits on.
    pub waits: Vec<Holder>,
}

impl NextBoot {
    /// Whether anything refuses.
    pub fn refused(&self) -> bool {
        !self.refusals.is_empty()
    }

    /// Whether anything warns (a moved card, a grown group, a missing device, a rule without IDs, a file
    /// system the boot waits for).
    pub fn warned(&self) -> bool {
        !self.waits.is_empty() || self.entries.iter().any(|e| !e.warnings.is_empty())
    }
}

/// Simulates the next boot of the host below `root` (read into `snap`) with `persisted` bindings.
pub fn simulate(root: &Path, snap: &Snapshot, persisted: &[Persisted]) -> NextBoot {
    simulate_with(snap, persisted, &boot_storage(root))
}

/// The members of `addr`'s kernel group now ([`Snapshot::group_of`]); itself alone when it is in none.
pub fn group_now(snap: &Snapshot, addr: PciAddress) -> Vec<PciAddress> {
    snap.group_of(addr).map(|g| g.devices.clone()).filter(|g| !g.is_empty()).unwrap_or_else(|| vec![addr])
}

/// [`simulate`] with what the host boots from already found.
pub fn simulate_with(snap: &Snapshot, persisted: &[Persisted], boot: &BootStorage) -> NextBoot {
    let mut entries = Vec::new();
    let mut persisted: Vec<&Persisted> = persisted.iter().collect();
    persisted.sort_by_key(|p| p.address);
    for p in persisted {
        let dev = snap.device(p.address);
        let now = dev.and_then(|d| DeviceIds::from_config(&d.config));
        let group = group_now(snap, p.address);
        let mut warnings = Vec::new();
        let binds = match (dev, p.ids, now) {
            (None, _, _) => {
                warnings.push(format!("no device at {} now: the rule binds nothing", p.address));
                false
            }
            (Some(_), Some(rec), Some(now)) if rec != now => {
                warnings.push(format!(
                    "{} now holds {now}, not the {rec} persisted there (a card moved?): the rule's ID match leaves \
                     it to its own driver; persist the device again at its new address",
                    p.address
                ));
                false
            }
            (Some(_), Some(_), None) => {
                warnings.push(format!("cannot read the IDs of the device at {} now", p.address));
                true
            }
            (Some(_), None, _) => {
                warnings.push(format!(
                    "the rule for {} matches the address alone (written before IDs were recorded): it binds \
                     whatever is there{}; persist it again to record the IDs",
                    p.address,
                    now.map(|n| format!(" (now {n})")).unwrap_or_default()
                ));
                true
            }
            (Some(_), Some(_), Some(_)) => true,
        };
        match &p.group {
            Some(rec) => {
                let added: Vec<String> = group.iter().filter(|a| !rec.contains(a)).map(|a| a.to_string()).collect();
                if !added.is_empty() && dev.is_some() {
                    warnings.push(format!(
                        "the IOMMU group of {} grew since it was persisted: now also {} (a kernel, firmware or \
                         hardware change?)",
                        p.address,
                        added.join(", ")
                    ));
                }
            }
            None if dev.is_some() => {
                warnings.push(format!("no group was recorded for {}; persist it again to record it", p.address))
            }
            None => {}
        }
        entries.push(EntryCheck {
            address: p.address,
            driver: p.driver.to_string(),
            recorded: p.ids,
            now,
            binds,
            recorded_group: p.group.clone(),
            group,
            warnings,
        });
    }

    // Every function in a group a rule binds into, with the persisted address it comes with. Bridges stay
    // on their driver (bind and persist leave them: [`Snapshot::is_bridge`]), so a bridge above the boot disk
    // takes nothing.
    let mut taken: Vec<(PciAddress, PciAddress)> = Vec::new();
    for e in entries.iter().filter(|e| e.binds) {
        for &m in &e.group {
            if (m == e.address || !snap.is_bridge(m)) && !taken.iter().any(|(t, _)| *t == m) {
                taken.push((m, e.address));
            }
        }
    }
    let taken_set: BTreeSet<PciAddress> = taken.iter().map(|(m, _)| *m).collect();
    let because = |m: PciAddress, by: PciAddress| {
        if m == by {
            format!("persisted {m}")
        } else {
            format!("{m}, in the IOMMU group of persisted {by},")
        }
    };
    let mut refusals = Vec::new();
    let mut waits = Vec::new();
    for &(m, by) in &taken {
        for h in boot.needed.iter().filter(|h| h.device == m) {
            refusals.push(Holder { device: m, what: format!("{} holds {}", because(m, by), h.what) });
        }
        for h in boot.waited_for.iter().filter(|h| h.device == m) {
            waits.push(Holder { device: m, what: format!("{} holds {}", because(m, by), h.what) });
        }
        if boot.with_storage.contains(&m) {
            for u in &boot.unknown {
                refusals.push(Holder {
                    device: m,
                    what: format!(
                        "{} has block devices, and what the host boots from is not known: {u}",
                        because(m, by)
                    ),
                });
            }
        }
        if snap.device(m).is_some_and(|d| d.boot_vga == Some(true)) {
            // A display the console can use: a VGA-compatible (0300) or other display controller (0380), not a
            // 3D or compute controller (0302).
            let other = snap.devices.iter().any(|d| {
                !taken_set.contains(&d.address)
                    && d.config.get(0x0b) == Some(&0x03)
                    && matches!(d.config.get(0x0a), Some(0x00 | 0x80))
                    && d.physfn.is_none()
            });
            if !other {
                refusals.push(Holder {
                    device: m,
                    what: format!("{} is the boot VGA device, and no other display device is left", because(m, by)),
                });
            }
        }
    }
    NextBoot { entries, refusals, waits }
}
