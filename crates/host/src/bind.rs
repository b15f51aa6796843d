//! Whole-group binding: plan every endpoint of a group onto one driver (vfio-pci by default) by address,
//! journal the original drivers first, roll back on any failure, and restore from the journal later.
//!
//! The mechanism per device is `driver_override`, unbind, `drivers_probe`: it names one device, unlike
//! `new_id` or `vfio-pci.ids`, which catch every device with the same IDs.

use std::path::Path;

use iommu_pci::{ConfigInfo, PciAddress};
use serde::Serialize;

use crate::driver::{DriverCore, DriverError};
use crate::journal::{Entry, Journal, JournalError, StateDir};
use crate::safety::{holders, Holder};
use crate::snapshot::{KernelGroup, Snapshot};

/// Drivers that leave a group viable for VFIO (kernel 5.19 and later).
pub fn vfio_safe_driver(driver: Option<&str>) -> bool {
    match driver {
        None => true,
        Some(d) => d == "vfio-pci" || d == "pci-stub" || d == "pcieport" || d.ends_with("-vfio-pci"),
    }
}

/// What the plan does with one member of the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Override, unbind from the current driver, probe.
    Rebind,
    /// Already on the target driver.
    AlreadyBound,
    /// A bridge: left on its driver.
    SkipBridge,
}

/// One member of the group in a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedDevice {
    /// The device.
    pub address: PciAddress,
    /// Its driver now.
    pub driver: Option<String>,
    /// Its driver_override now.
    pub driver_override: Option<String>,
    /// What will happen.
    pub action: Action,
}

/// A bind plan for a whole group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The device asked for.
    pub target: PciAddress,
    /// Its kernel IOMMU group.
    pub group: u32,
    /// The driver to bind to.
    pub driver: String,
    /// Every member of the group.
    pub devices: Vec<PlannedDevice>,
    /// What holds members that would change (empty when safe).
    pub holders: Vec<Holder>,
}

/// Why a bind or restore did not happen or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// No kernel group for the target.
    #[error("{0} is in no IOMMU group (is the IOMMU on?)")]
    NoGroup(PciAddress),
    /// The target is unknown.
    #[error("no PCI function {0} on this host")]
    UnknownDevice(PciAddress),
    /// A vendor:device ID matched zero or several devices.
    #[error("{id} matches {} devices{}; name one by address", .candidates.len(), if .candidates.is_empty() { String::new() } else { format!(": {}", .candidates.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")) })]
    Ambiguous {
        /// The ID given.
        id: String,
        /// Matching devices.
        candidates: Vec<PciAddress>,
    },
    /// Something holds a member of the group.
    #[error("refusing to bind group {group}: {}; --force binds anyway", .holders.iter().map(|h| format!("{}: {}", h.device, h.what)).collect::<Vec<_>>().join("; "))]
    Refused {
        /// The group.
        group: u32,
        /// What holds which device.
        holders: Vec<Holder>,
    },
    /// The driver could not be made available.
    #[error("driver {driver} is not available")]
    DriverUnavailable {
        /// The driver.
        driver: String,
        /// The cause.
        #[source]
        source: Box<DriverError>,
    },
    /// A step failed; the devices changed so far were rolled back.
    #[error("{step} failed for {device}; rolled back: {}", rollback_summary(.restored, .not_restored))]
    Failed {
        /// What failed.
        step: String,
        /// On which device.
        device: PciAddress,
        /// Devices verifiably back on their original drivers.
        restored: Vec<PciAddress>,
        /// Devices that could not be restored (still in the journal).
        not_restored: Vec<PciAddress>,
        /// The cause.
        #[source]
        source: Box<DriverError>,
    },
    /// After probing, the device was not on the expected driver.
    #[error("{device} ended up on {} instead of {expected}", .got.as_deref().unwrap_or("no driver"))]
    Verify {
        /// The device.
        device: PciAddress,
        /// The driver expected.
        expected: String,
        /// The driver found.
        got: Option<String>,
    },
    /// Journal or lock failure.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

fn rollback_summary(restored: &[PciAddress], not: &[PciAddress]) -> String {
    let l = |v: &[PciAddress]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
    match (restored.is_empty(), not.is_empty()) {
        (true, true) => "nothing had changed".into(),
        (false, true) => format!("{} back on their original drivers", l(restored)),
        (true, false) => format!("could not restore {} (run `iommuctl restore`)", l(not)),
        (false, false) => {
            format!(
                "{} back on their original drivers; could not restore {} (run `iommuctl restore`)",
                l(restored),
                l(not)
            )
        }
    }
}

/// Resolves a target: an address, or a `vvvv:dddd` ID that must match exactly one device.
pub fn resolve_target(snap: &Snapshot, target: &str) -> Result<PciAddress, BindError> {
    let t = target.trim();
    let is_id = t.len() == 9 && t.as_bytes()[4] == b':' && !t.contains('.');
    if is_id {
        let v = u16::from_str_radix(&t[..4], 16);
        let d = u16::from_str_radix(&t[5..], 16);
        if let (Ok(v), Ok(d)) = (v, d) {
            let candidates: Vec<PciAddress> = snap
                .devices
                .iter()
                .filter(|x| ConfigInfo::parse(&x.config).is_ok_and(|c| c.vendor_id == v && c.device_id == d))
                .map(|x| x.address)
                .collect();
            return match candidates.as_slice() {
                [one] => Ok(*one),
                _ => Err(BindError::Ambiguous { id: t.to_string(), candidates }),
            };
        }
    }
    let a: PciAddress = t.parse().map_err(|_| BindError::Ambiguous { id: t.to_string(), candidates: vec![] })?;
    snap.device(a).map(|_| a).ok_or(BindError::UnknownDevice(a))
}

/// Plans binding `target`'s whole group to `driver`.
pub fn plan(root: &Path, snap: &Snapshot, target: PciAddress, driver: &str) -> Result<Plan, BindError> {
    snap.device(target).ok_or(BindError::UnknownDevice(target))?;
    let g: &KernelGroup = snap.group_of(target).ok_or(BindError::NoGroup(target))?;
    let mut devices = Vec::new();
    let mut changing = Vec::new();
    for &a in &g.devices {
        let Some(d) = snap.device(a) else { continue };
        let bridge = ConfigInfo::parse(&d.config).is_ok_and(|c| c.is_bridge());
        let action = if bridge {
            Action::SkipBridge
        } else if d.driver.as_deref() == Some(driver) {
            Action::AlreadyBound
        } else {
            changing.push(d);
            Action::Rebind
        };
        devices.push(PlannedDevice {
            address: a,
            driver: d.driver.clone(),
            driver_override: d.driver_override.clone(),
            action,
        });
    }
    let holders = holders(root, &changing);
    Ok(Plan { target, group: g.id, driver: driver.to_string(), devices, holders })
}

/// Test hooks, for the lab's crash and failure tests: `IOMMUCTL_TEST_HOOK=STEP:N[,STEP:N]` where STEP is
/// `kill-after-device` (the process kills itself after the Nth device, 1-based), `fail-probe` (the Nth
/// device's probe fails) or `pause-after-lock` (sleep N milliseconds once the lock is held).
pub fn test_hook(step: &str) -> Option<u64> {
    let v = std::env::var("IOMMUCTL_TEST_HOOK").ok()?;
    v.split(',').find_map(|p| {
        let (s, n) = p.split_once(':')?;
        (s == step).then(|| n.parse().ok()).flatten()
    })
}

/// Progress reports while binding.
pub trait Progress {
    /// A line for the user.
    fn say(&mut self, line: &str);
}

impl<F: FnMut(&str)> Progress for F {
    fn say(&mut self, line: &str) {
        self(line)
    }
}

/// Carries out a plan. Must be called with the state lock held. On failure every device changed so far is
/// restored and the error says what failed and what was restored.
pub fn execute(core: &dyn DriverCore, state: &StateDir, plan: &Plan, out: &mut dyn Progress) -> Result<(), BindError> {
    if !core.driver_registered(&plan.driver) {
        out.say(&format!("loading module for {}", plan.driver));
        core.load_module(&plan.driver)
            .map_err(|source| BindError::DriverUnavailable { driver: plan.driver.clone(), source: Box::new(source) })?;
        if !core.driver_registered(&plan.driver) {
            return Err(BindError::DriverUnavailable {
                driver: plan.driver.clone(),
                source: Box::new(DriverError::ModuleLoad {
                    module: plan.driver.clone(),
                    detail: "loaded, but no such PCI driver registered".into(),
                }),
            });
        }
    }
    let mut journal = state.load()?;
    let todo: Vec<&PlannedDevice> = plan.devices.iter().filter(|d| d.action == Action::Rebind).collect();
    let mut added = Vec::new();
    for d in &todo {
        if journal.get(d.address).is_none() {
            added.push(d.address);
        }
        journal.record(Entry {
            address: d.address,
            group: Some(plan.group),
            original_driver: d.driver.clone(),
            original_override: d.driver_override.clone(),
            bound_to: plan.driver.clone(),
        });
    }
    state.save(&journal)?;
    let mut changed: Vec<PciAddress> = Vec::new();
    for (i, d) in todo.iter().enumerate() {
        changed.push(d.address);
        if let Err((step, source)) = rebind_one(core, d, &plan.driver, i + 1) {
            return Err(roll_back(core, state, &mut journal, &added, &changed, step, d.address, source));
        }
        out.say(&format!("{} -> {}", d.address, plan.driver));
        if test_hook("kill-after-device") == Some(i as u64 + 1) {
            out.say("test hook: killing the process");
            std::process::abort();
        }
    }
    Ok(())
}

fn rebind_one(core: &dyn DriverCore, d: &PlannedDevice, driver: &str, n: usize) -> Result<(), (String, DriverError)> {
    core.set_driver_override(d.address, Some(driver)).map_err(|e| ("setting driver_override".to_string(), e))?;
    if let Some(cur) = core.driver(d.address) {
        core.unbind(d.address, &cur).map_err(|e| (format!("unbinding from {cur}"), e))?;
    }
    if test_hook("fail-probe") == Some(n as u64) {
        return Err(("probing".into(), DriverError::Injected { step: format!("fail-probe:{n}") }));
    }
    core.probe(d.address).map_err(|e| ("probing".to_string(), e))?;
    let got = core.driver(d.address);
    if got.as_deref() != Some(driver) {
        let detail = format!("probe left it on {}", got.as_deref().unwrap_or("no driver"));
        return Err((
            format!("binding to {driver}"),
            DriverError::Write {
                path: format!("sys/bus/pci/devices/{}/driver", d.address).into(),
                value: driver.to_string(),
                source: std::io::Error::other(detail),
            },
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn roll_back(
    core: &dyn DriverCore,
    state: &StateDir,
    journal: &mut Journal,
    added: &[PciAddress],
    changed: &[PciAddress],
    step: String,
    device: PciAddress,
    source: DriverError,
) -> BindError {
    let mut restored = Vec::new();
    let mut not_restored = Vec::new();
    for &a in changed.iter().rev() {
        let Some(e) = journal.get(a).cloned() else { continue };
        if restore_one(core, &e).is_ok() {
            journal.remove(a);
            restored.push(a);
        } else {
            not_restored.push(a);
        }
    }
    // Entries this run added for devices it never touched need no restore.
    journal.entries.retain(|e| !added.contains(&e.address) || changed.contains(&e.address));
    let _ = state.save(journal);
    restored.reverse();
    BindError::Failed { step, device, restored, not_restored, source: Box::new(source) }
}

/// Puts one device back on its recorded driver and override, and checks that it is there.
pub fn restore_one(core: &dyn DriverCore, e: &Entry) -> Result<(), BindError> {
    let a = e.address;
    let fail = |step: &str, source| BindError::Failed {
        step: step.to_string(),
        device: a,
        restored: vec![],
        not_restored: vec![a],
        source: Box::new(source),
    };
    core.set_driver_override(a, e.original_override.as_deref()).map_err(|s| fail("restoring driver_override", s))?;
    let cur = core.driver(a);
    if cur != e.original_driver {
        if let Some(c) = &cur {
            core.unbind(a, c).map_err(|s| fail("unbinding", s))?;
        }
        if let Some(orig) = &e.original_driver {
            core.probe(a).map_err(|s| fail("probing", s))?;
            if core.driver(a).as_deref() != Some(orig.as_str()) {
                if let Some(c) = core.driver(a) {
                    core.unbind(a, &c).map_err(|s| fail("unbinding", s))?;
                }
                core.bind(a, orig).map_err(|s| fail("binding", s))?;
            }
        }
    }
    let now = core.driver(a);
    if now != e.original_driver {
        return Err(BindError::Verify {
            device: a,
            expected: e.original_driver.clone().unwrap_or_else(|| "no driver".into()),
            got: now,
        });
    }
    Ok(())
}

/// Result of a restore run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// Devices verifiably back and removed from the journal.
    pub restored: Vec<PciAddress>,
    /// Devices that failed, with the reason; they stay in the journal.
    pub failed: Vec<(PciAddress, String)>,
}

/// Restores journaled devices (all, or those of `only`'s group), removing each entry once verified.
/// Idempotent: devices already back are just dropped from the journal.
pub fn restore(
    core: &dyn DriverCore,
    state: &StateDir,
    only: Option<&[PciAddress]>,
) -> Result<RestoreReport, BindError> {
    let mut journal = state.load()?;
    let mut report = RestoreReport::default();
    let entries: Vec<Entry> =
        journal.entries.iter().filter(|e| only.is_none_or(|o| o.contains(&e.address))).cloned().collect();
    for e in entries {
        match restore_one(core, &e) {
            Ok(()) => {
                journal.remove(e.address);
                state.save(&journal)?;
                report.restored.push(e.address);
            }
            Err(err) => report.failed.push((e.address, format!("{err:#}"))),
        }
    }
    Ok(report)
}

/// Viability of one kernel group for VFIO.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupStatus {
    /// Group number.
    pub group: u32,
    /// Whether VFIO would let user space open it.
    pub viable: bool,
    /// Devices whose driver makes the group not viable, with the driver.
    pub blockers: Vec<(PciAddress, String)>,
    /// Devices on vfio-pci.
    pub on_vfio: Vec<PciAddress>,
}

/// Whether each group is viable, from the drivers in the snapshot.
pub fn group_status(snap: &Snapshot) -> Vec<GroupStatus> {
    snap.groups
        .iter()
        .map(|g| {
            let mut blockers = Vec::new();
            let mut on_vfio = Vec::new();
            for &a in &g.devices {
                let drv = snap.device(a).and_then(|d| d.driver.clone());
                if !vfio_safe_driver(drv.as_deref()) {
                    blockers.push((a, drv.clone().unwrap_or_default()));
                }
                if drv.as_deref().is_some_and(|d| d == "vfio-pci" || d.ends_with("-vfio-pci")) {
                    on_vfio.push(a);
                }
            }
            GroupStatus { group: g.id, viable: blockers.is_empty(), blockers, on_vfio }
        })
        .collect()
}
