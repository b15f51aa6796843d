//! `iommuctl status`: devices bound by iommuctl (from this machine's journal) and whether each group is
//! viable for VFIO.
//!
//! With `--from SNAPSHOT` it shows the snapshot's groups only: the journal in the state directory belongs
//! to this machine, the snapshot possibly to another, and mixing them would report this machine's bindings
//! against another host's devices. It says so (text) or sets `bound_by_iommuctl` to null (JSON).

use std::fmt;
use std::path::PathBuf;

use iommu_host::bind::{self, GroupStatus};
use iommu_host::journal::{Entry, StateDir};
use iommu_pci::PciAddress;
use serde::Serialize;

use crate::config::{Config, Origin};
use crate::output::{sanitize, Outcome, Sorted};
use crate::source::Source;

/// Bindings and viability.
#[derive(Serialize)]
pub struct StatusReport {
    /// This machine's journal; `None` (null) when the groups come from a snapshot.
    bound_by_iommuctl: Option<Vec<Entry>>,
    groups: Vec<GroupStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<PathBuf>,
    /// The VFIO device cdev node of each journaled device that has one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cdevs: Vec<(PciAddress, String)>,
    /// The driver each journaled device is on now (text only).
    #[serde(skip)]
    now: Vec<(PciAddress, String)>,
    #[serde(skip)]
    state_dir: PathBuf,
}

/// `iommuctl status`.
pub fn run(cfg: &Config, src: &Source) -> anyhow::Result<Outcome> {
    let snap = &src.snapshot;
    let groups = bind::group_status(snap);
    let (bound, snapshot) = match &src.origin {
        Origin::Snapshot(f) => (None, Some(f.clone())),
        _ => (Some(StateDir::new(&cfg.state_dir).load()?.entries), None),
    };
    let now = bound
        .iter()
        .flatten()
        .map(|e| {
            let d = snap.device(e.address).and_then(|d| d.driver.clone()).unwrap_or_else(|| "no driver".into());
            (e.address, d)
        })
        .collect();
    let cdevs = bound
        .iter()
        .flatten()
        .filter_map(|e| {
            let name = snap.device(e.address)?.vfio_cdev.as_ref()?;
            Some((e.address, format!("/dev/vfio/devices/{name}")))
        })
        .collect();
    Ok(Outcome::report(Sorted(StatusReport {
        cdevs,
        bound_by_iommuctl: bound,
        groups,
        snapshot,
        now,
        state_dir: cfg.state_dir.clone(),
    })))
}

fn group_line(f: &mut fmt::Formatter<'_>, g: &GroupStatus) -> fmt::Result {
    if g.viable {
        writeln!(f, "group {}: viable", g.group)
    } else {
        let b: Vec<String> = g.blockers.iter().map(|(a, d)| format!("{a} on {}", sanitize(d))).collect();
        writeln!(f, "group {}: NOT viable ({})", g.group, b.join(", "))
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(entries) = &self.bound_by_iommuctl else {
            writeln!(
                f,
                "groups of the snapshot {}; devices bound by iommuctl are not shown (the journal in {} is this \
                 machine's, not the snapshot's)",
                sanitize(&self.snapshot.as_deref().unwrap_or(std::path::Path::new("")).display().to_string()),
                sanitize(&self.state_dir.display().to_string())
            )?;
            for g in self.groups.iter().filter(|g| !g.on_vfio.is_empty()) {
                group_line(f, g)?;
            }
            return Ok(());
        };
        if entries.is_empty() {
            writeln!(f, "no devices bound by iommuctl")?;
        }
        for (e, (_, now)) in entries.iter().zip(&self.now) {
            let cdev = self.cdevs.iter().find(|(a, _)| *a == e.address).map(|(_, n)| format!("; {}", sanitize(n)));
            writeln!(
                f,
                "{}  bound to {} (now {}), was {}{}",
                e.address,
                e.bound_to,
                sanitize(now),
                e.original_driver.as_ref().map_or("no driver", |d| d.as_str()),
                cdev.unwrap_or_default()
            )?;
        }
        for g in
            self.groups.iter().filter(|g| !g.on_vfio.is_empty() || entries.iter().any(|e| e.group == Some(g.group)))
        {
            group_line(f, g)?;
        }
        Ok(())
    }
}
