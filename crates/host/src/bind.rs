//! Whole-group binding: plan every endpoint of a group onto one driver (vfio-pci by default) by address,
//! journal each device's original driver before touching it, roll back on any failure, and restore from
//! the journal later.
//!
//! The mechanism per device is `driver_override`, unbind, `drivers_probe`: it names one device, unlike
//! `new_id` or `vfio-pci.ids`, which catch every device with the same IDs.
//!
//! The journal is written ahead of every change: a device's entry is on disk before the first sysfs write
//! to it, and an entry leaves only once the device is verifiably back (or gone). So wherever a run dies,
//! the journal lists every device it changed, plus at most the one it was about to change, and `restore`
//! (idempotent) finishes the job.

use std::path::Path;

use iommu_pci::{ConfigInfo, PciAddress};
use serde::Serialize;

use crate::driver::{DriverCore, DriverError, DriverName, NameError};
use crate::journal::{Entry, Journal, JournalError, StateDir};
use crate::safety::{holders, Holder};
use crate::snapshot::{KernelGroup, Snapshot};

/// Whether a member on `driver` (`None`: no driver) leaves its group viable for VFIO: no driver, or one
/// that manages its own DMA ([`iommu_pci::drivers::DMA_OWNING_DRIVERS`], Linux 5.19 and later).
pub fn vfio_safe_driver(driver: Option<&str>) -> bool {
    iommu_pci::drivers::leaves_group_viable(driver)
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
    pub driver: Option<DriverName>,
    /// Its driver_override now.
    pub driver_override: Option<DriverName>,
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
    pub driver: DriverName,
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
    /// A member of the group has a driver or driver_override that is not a driver name (see
    /// [`DriverName`]); nothing was changed.
    #[error("refusing to bind group {group}: the {what} of {device} is not a driver name")]
    BadName {
        /// The group.
        group: u32,
        /// The device.
        device: PciAddress,
        /// `driver` or `driver_override`.
        what: &'static str,
        /// The name and what is wrong with it.
        source: NameError,
    },
    /// The driver could not be made available.
    #[error("driver {driver} is not available")]
    DriverUnavailable {
        /// The driver.
        driver: DriverName,
        /// The cause.
        #[source]
        source: Box<DriverError>,
    },
    /// A bind step failed; the devices changed so far were rolled back.
    #[error("{step} failed for {device}; rolled back: {}", rollback_summary(.restored, .not_restored))]
    Failed {
        /// What failed.
        step: String,
        /// On which device.
        device: PciAddress,
        /// Devices verifiably back on their original drivers (or gone).
        restored: Vec<PciAddress>,
        /// Devices that could not be restored (still in the journal).
        not_restored: Vec<PciAddress>,
        /// The cause: a [`DriverError`], or a [`JournalError`] when the journal could not be written
        /// before a device was touched.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A restore step failed for one device; it stays in the journal.
    #[error("{step} failed for {device}")]
    RestoreStep {
        /// What failed.
        step: String,
        /// On which device.
        device: PciAddress,
        /// The cause.
        #[source]
        source: Box<DriverError>,
    },
    /// After probing, the device was not on the expected driver.
    #[error("{device} ended up on {} instead of {}", name_or_none(.got.as_ref()), name_or_none(.expected.as_ref()))]
    Verify {
        /// The device.
        device: PciAddress,
        /// The driver expected (`None`: no driver).
        expected: Option<DriverName>,
        /// The driver found.
        got: Option<DriverName>,
    },
    /// Journal or lock failure.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

fn name_or_none(d: Option<&DriverName>) -> &str {
    d.map_or("no driver", |d| d.as_str())
}

/// An error and every cause below it, joined with `: ` (as `anyhow` prints `{:#}`), so a message kept as
/// text (a restore report) still carries the operating system's error.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
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

/// Plans binding `target`'s whole group to `driver`. Every member's driver and driver_override must be
/// driver names ([`DriverName`]); a member with anything else refuses the plan ([`BindError::BadName`]).
pub fn plan(root: &Path, snap: &Snapshot, target: PciAddress, driver: &DriverName) -> Result<Plan, BindError> {
    snap.device(target).ok_or(BindError::UnknownDevice(target))?;
    let g: &KernelGroup = snap.group_of(target).ok_or(BindError::NoGroup(target))?;
    let name = |device: PciAddress, what: &'static str, v: &Option<String>| {
        v.as_deref().map(DriverName::parse).transpose().map_err(|source| BindError::BadName {
            group: g.id,
            device,
            what,
            source,
        })
    };
    let mut devices = Vec::new();
    let mut changing = Vec::new();
    for &a in &g.devices {
        let Some(d) = snap.device(a) else { continue };
        let current = name(a, "driver", &d.driver)?;
        let driver_override = name(a, "driver_override", &d.driver_override)?;
        let action = if snap.is_bridge(a) {
            Action::SkipBridge
        } else if current.as_ref() == Some(driver) {
            Action::AlreadyBound
        } else {
            changing.push(d);
            Action::Rebind
        };
        devices.push(PlannedDevice { address: a, driver: current, driver_override, action });
    }
    let holders = holders(root, &changing);
    Ok(Plan { target, group: g.id, driver: driver.clone(), devices, holders })
}

/// Whether this build carries the test hooks (the `test-hooks` cargo feature; off in a default or
/// release build).
pub const TEST_HOOKS: bool = cfg!(feature = "test-hooks");

/// Test hooks, for the lab's crash and failure tests: `IOMMUCTL_TEST_HOOK=STEP:N[,STEP:N]` where STEP is
/// `kill-after-device` (the process kills itself after the Nth device, 1-based), `fail-probe` (the Nth
/// device's probe fails) or `pause-after-lock` (sleep N milliseconds once the lock is held).
#[cfg(feature = "test-hooks")]
pub fn test_hook(step: &str) -> Option<u64> {
    let v = std::env::var("IOMMUCTL_TEST_HOOK").ok()?;
    v.split(',').find_map(|p| {
        let (s, n) = p.split_once(':')?;
        (s == step).then(|| n.parse().ok()).flatten()
    })
}

/// Test hooks: compiled only with the `test-hooks` cargo feature. This build has none, so this is always
/// `None`, whatever `IOMMUCTL_TEST_HOOK` says.
#[cfg(not(feature = "test-hooks"))]
pub fn test_hook(_step: &str) -> Option<u64> {
    None
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

/// Carries out a plan. Must be called with the state lock held.
///
/// Each device is journaled (and the journal saved) just before its first sysfs write, never earlier:
/// a run that dies leaves entries for the devices it changed and at most the one it was about to change.
/// On failure every device changed so far is restored, in reverse order, and its entry dropped as soon as
/// it is verifiably back; the journal then holds exactly the devices that could not be restored (and any
/// entries of earlier runs this plan did not touch). The error says what failed and what was restored.
pub fn execute(core: &dyn DriverCore, state: &StateDir, plan: &Plan, out: &mut dyn Progress) -> Result<(), BindError> {
    if !core.driver_registered(&plan.driver) {
        out.say(&format!("loading module for {}", plan.driver));
        core.load_module(&plan.driver)
            .map_err(|source| BindError::DriverUnavailable { driver: plan.driver.clone(), source: Box::new(source) })?;
        if !core.driver_registered(&plan.driver) {
            return Err(BindError::DriverUnavailable {
                driver: plan.driver.clone(),
                source: Box::new(DriverError::ModuleLoad {
                    module: plan.driver.module(),
                    detail: "loaded, but no such PCI driver registered".into(),
                }),
            });
        }
    }
    let mut journal = state.load()?;
    let todo: Vec<&PlannedDevice> = plan.devices.iter().filter(|d| d.action == Action::Rebind).collect();
    let mut changed: Vec<PciAddress> = Vec::new();
    for (i, d) in todo.iter().enumerate() {
        if journal.get(d.address).is_none() {
            journal.record(Entry {
                address: d.address,
                group: Some(plan.group),
                original_driver: d.driver.clone(),
                original_override: d.driver_override.clone(),
                bound_to: plan.driver.clone(),
            });
            if let Err(e) = state.save(&journal) {
                // Nothing was written to this device; the entry may or may not be on disk.
                journal.remove(d.address);
                let step = "writing the journal".to_string();
                return Err(roll_back(core, state, &mut journal, &changed, step, d.address, Box::new(e)));
            }
        }
        changed.push(d.address);
        if let Err((step, source)) = rebind_one(core, d, &plan.driver, i + 1) {
            return Err(roll_back(core, state, &mut journal, &changed, step, d.address, Box::new(source)));
        }
        out.say(&format!("{} -> {}", d.address, plan.driver));
        #[cfg(feature = "test-hooks")]
        if test_hook("kill-after-device") == Some(i as u64 + 1) {
            out.say("test hook: killing the process");
            std::process::abort();
        }
    }
    Ok(())
}

fn rebind_one(
    core: &dyn DriverCore,
    d: &PlannedDevice,
    driver: &DriverName,
    n: usize,
) -> Result<(), (String, DriverError)> {
    core.set_driver_override(d.address, Some(driver)).map_err(|e| ("setting driver_override".to_string(), e))?;
    let cur = core.driver(d.address).map_err(|e| ("reading the driver".to_string(), e))?;
    if let Some(cur) = cur {
        core.unbind(d.address, &cur).map_err(|e| (format!("unbinding from {cur}"), e))?;
    }
    #[cfg(feature = "test-hooks")]
    if test_hook("fail-probe") == Some(n as u64) {
        return Err(("probing".into(), DriverError::Injected { step: format!("fail-probe:{n}") }));
    }
    let _ = n;
    core.probe(d.address).map_err(|e| ("probing".to_string(), e))?;
    let got = core.driver(d.address).map_err(|e| ("reading the driver".to_string(), e))?;
    if got.as_ref() != Some(driver) {
        let detail = format!("probe left it on {}", name_or_none(got.as_ref()));
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

/// Restores the devices in `changed` (newest first), dropping each entry from the journal and saving it
/// as soon as the device is back. A journal that cannot be saved leaves stale entries, which are harmless:
/// `restore` drops an entry whose device is already back.
fn roll_back(
    core: &dyn DriverCore,
    state: &StateDir,
    journal: &mut Journal,
    changed: &[PciAddress],
    step: String,
    device: PciAddress,
    source: Box<dyn std::error::Error + Send + Sync>,
) -> BindError {
    let mut restored = Vec::new();
    let mut not_restored = Vec::new();
    for &a in changed.iter().rev() {
        let Some(e) = journal.get(a).cloned() else { continue };
        if !core.present(a) || restore_one(core, &e).is_ok() {
            journal.remove(a);
            let _ = state.save(journal);
            restored.push(a);
        } else {
            not_restored.push(a);
        }
    }
    restored.reverse();
    not_restored.reverse();
    BindError::Failed { step, device, restored, not_restored, source }
}

/// Puts one device back on its recorded driver and override, and checks that it is there.
pub fn restore_one(core: &dyn DriverCore, e: &Entry) -> Result<(), BindError> {
    let a = e.address;
    let fail = |step: &str| {
        let step = step.to_string();
        move |source| BindError::RestoreStep { step, device: a, source: Box::new(source) }
    };
    core.set_driver_override(a, e.original_override.as_ref()).map_err(fail("restoring driver_override"))?;
    let cur = core.driver(a).map_err(fail("reading the driver"))?;
    if cur != e.original_driver {
        if let Some(c) = &cur {
            core.unbind(a, c).map_err(fail("unbinding"))?;
        }
        if let Some(orig) = &e.original_driver {
            core.probe(a).map_err(fail("probing"))?;
            let now = core.driver(a).map_err(fail("reading the driver"))?;
            if now.as_ref() != Some(orig) {
                if let Some(c) = &now {
                    core.unbind(a, c).map_err(fail("unbinding"))?;
                }
                core.bind(a, orig).map_err(fail("binding"))?;
            }
        }
    }
    let now = core.driver(a).map_err(fail("reading the driver"))?;
    if now != e.original_driver {
        return Err(BindError::Verify { device: a, expected: e.original_driver.clone(), got: now });
    }
    Ok(())
}

/// Result of a restore run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// Devices verifiably back and removed from the journal.
    pub restored: Vec<PciAddress>,
    /// Devices that no longer exist (hot-unplugged): nothing to restore, removed from the journal.
    pub gone: Vec<PciAddress>,
    /// Devices that failed, with the reason (the whole cause chain); they stay in the journal.
    pub failed: Vec<(PciAddress, String)>,
}

/// Restores journaled devices (all, or those in `only`), removing each entry once verified. A device that
/// no longer exists is reported in [`RestoreReport::gone`] and dropped (there is nothing to restore and
/// nothing to lose). Idempotent: devices already back are just dropped from the journal.
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
        if !core.present(e.address) {
            journal.remove(e.address);
            state.save(&journal)?;
            report.gone.push(e.address);
            continue;
        }
        match restore_one(core, &e) {
            Ok(()) => {
                journal.remove(e.address);
                state.save(&journal)?;
                report.restored.push(e.address);
            }
            Err(err) => report.failed.push((e.address, error_chain(&err))),
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
    /// Devices on a VFIO driver (vfio-pci or a variant driver, [`iommu_pci::drivers::is_vfio_driver`]).
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
                if drv.as_deref().is_some_and(iommu_pci::drivers::is_vfio_driver) {
                    on_vfio.push(a);
                }
            }
            GroupStatus { group: g.id, viable: blockers.is_empty(), blockers, on_vfio }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[cfg(not(feature = "test-hooks"))]
    #[test]
    fn a_default_build_ignores_the_test_hook_variable() {
        // Edition 2021: set_var is safe; no other test in this crate reads the variable.
        std::env::set_var("IOMMUCTL_TEST_HOOK", "kill-after-device:1,fail-probe:1,pause-after-lock:5000");
        for step in ["kill-after-device", "fail-probe", "pause-after-lock"] {
            assert_eq!(super::test_hook(step), None, "{step}");
        }
        const { assert!(!super::TEST_HOOKS) };
        std::env::remove_var("IOMMUCTL_TEST_HOOK");
    }

    #[cfg(feature = "test-hooks")]
    #[test]
    fn a_test_hook_build_reads_the_variable() {
        std::env::set_var("IOMMUCTL_TEST_HOOK", "fail-probe:2,pause-after-lock:10");
        assert_eq!(super::test_hook("fail-probe"), Some(2));
        assert_eq!(super::test_hook("pause-after-lock"), Some(10));
        assert_eq!(super::test_hook("kill-after-device"), None);
        std::env::remove_var("IOMMUCTL_TEST_HOOK");
    }
}
