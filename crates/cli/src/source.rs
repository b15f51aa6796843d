//! The host a read command answers from: loaded once from its [`Origin`], with what the commands derive
//! from it (names, decoded config spaces, the tree, the prediction).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use iommu_groups::{predict, Platform, Prediction, RuleSet, Topology};
use iommu_host::{bind, read_host_with, Detail, HostDevice, LspciDump, Snapshot};
use iommu_pci::{ConfigInfo, PciAddress, PciIds};

use crate::config::Origin;
use crate::exit::{fail, Exit};
use crate::output::{sanitize, warn};

/// A loaded host.
pub struct Source {
    /// Where it came from.
    pub origin: Origin,
    /// What was read.
    pub snapshot: Snapshot,
    /// Functions of an lspci paste whose kernel group the paste does not show (cut before the line).
    pub group_unknown: Vec<PciAddress>,
}

/// The tree and the groups Linux would form on it.
pub struct Predicted {
    /// The PCI tree.
    pub topology: Topology,
    /// The platform facts the prediction used.
    pub platform: Platform,
    /// The prediction.
    pub prediction: Prediction,
}

impl Source {
    /// Loads the host from `origin`, reading a live host at the given level of detail, and tells the user
    /// on stderr what could not be read (host files) or what a dump cannot say.
    pub fn load(origin: &Origin, detail: Detail) -> anyhow::Result<Source> {
        let mut group_unknown = Vec::new();
        let snapshot = match origin {
            Origin::Live { root } => {
                let snap = read_host_with(root, detail)
                    .with_context(|| format!("reading the host below {}", root.display()))?;
                warn_unreadable(&snap);
                snap
            }
            Origin::Snapshot(f) => Snapshot::load(f).map_err(|e| match e {
                // A read error names the file already; a parse error does not.
                iommu_host::SnapshotError::Read { .. } => anyhow::Error::new(e),
                _ => anyhow::Error::new(e).context(format!("snapshot {}", f.display())),
            })?,
            Origin::Lspci(f) => {
                // Text without `-nn` names its functions: this machine's pci.ids gives the IDs back.
                let ids = PciIds::load_system(Path::new("/")).unwrap_or_else(PciIds::empty);
                let dump = LspciDump::load_with_ids(f, &ids).map_err(|e| match e {
                    iommu_host::LspciError::Read { .. } => anyhow::Error::new(e),
                    _ => anyhow::Error::new(e).context(format!("lspci dump {}", f.display())),
                })?;
                for w in dump.warnings() {
                    warn(&format!("warning: {}", sanitize(&w)));
                }
                for n in dump.inferences() {
                    warn(&format!("note: {}", sanitize(&n)));
                }
                group_unknown = dump.group_unknown;
                dump.snapshot
            }
        };
        Ok(Source { origin: origin.clone(), snapshot, group_unknown })
    }

    /// Whether the kernel's IOMMU groups are known: always asked of a live host or a snapshot (which may
    /// have none: IOMMU off); an lspci dump has them only when its text carried `IOMMU group:` lines.
    pub fn has_kernel_groups(&self) -> bool {
        !matches!(self.origin, Origin::Lspci(_)) || !self.snapshot.groups.is_empty()
    }

    /// pci.ids names: the system's database below a live root, else this machine's, else none.
    pub fn ids(&self) -> PciIds {
        let root = self.origin.ids_root();
        PciIds::load_system(root)
            .or_else(|| PciIds::load_system(std::path::Path::new("/")))
            .unwrap_or_else(PciIds::empty)
    }

    /// Every config space that decodes.
    pub fn configs(&self) -> BTreeMap<PciAddress, ConfigInfo> {
        configs(&self.snapshot)
    }

    /// The device, or a negative answer (exit 1) naming it.
    pub fn device(&self, a: PciAddress) -> anyhow::Result<&HostDevice> {
        self.snapshot.device(a).ok_or_else(|| fail(Exit::Negative, format!("no PCI function {a} on this host")))
    }

    /// The PCI tree, warning on stderr about config spaces that do not decode.
    pub fn topology(&self) -> anyhow::Result<Topology> {
        let (topology, bad) = self.snapshot.topology().context("building the PCI tree")?;
        for (a, e) in bad {
            warn(&format!("warning: config space of {a} does not decode ({e}); treated as unknown"));
        }
        Ok(topology)
    }

    /// The tree and the groups Linux would form, warning when they depend on unreadable config space.
    pub fn predict(&self) -> anyhow::Result<Predicted> {
        let topology = self.topology()?;
        let platform = self.snapshot.platform();
        let prediction = predict(&topology, &platform, RuleSet::Linux6);
        warn_uncertain(&prediction, matches!(self.origin, Origin::Lspci(_)));
        for n in &prediction.notes {
            warn(&format!("note: {}", sanitize(n)));
        }
        Ok(Predicted { topology, platform, prediction })
    }
}

/// Every config space of a snapshot that decodes.
pub fn configs(snap: &Snapshot) -> BTreeMap<PciAddress, ConfigInfo> {
    snap.devices.iter().filter_map(|d| Some((d.address, ConfigInfo::parse(&d.config).ok()?))).collect()
}

/// Warns on stderr when a prediction depended on config space that could not be read (from a host) or is
/// not in an lspci paste (`from_paste`: the dump's own warnings said why).
pub fn warn_uncertain(prediction: &Prediction, from_paste: bool) {
    if !prediction.uncertain.is_empty() {
        let uncertain: Vec<String> = prediction.uncertain.iter().map(|a| a.to_string()).collect();
        let why = if from_paste {
            "is not in the lspci output (see the warnings above)"
        } else {
            "could not be read (config space beyond 64 bytes needs root)"
        };
        warn(&format!(
            "warning: ACS, PCIe type or a register an ACS quirk reads of {} {why}; the prediction may be wrong there",
            uncertain.join(", ")
        ));
    }
}

/// Tells the user on stderr which host files exist but could not be read (at most ten, then a count).
pub fn warn_unreadable(snap: &Snapshot) {
    for u in snap.unreadable.iter().take(10) {
        warn(&format!("warning: {}: {}", sanitize(&u.path.display().to_string()), sanitize(&u.error)));
    }
    if snap.unreadable.len() > 10 {
        warn(&format!("warning: {} more host files could not be read", snap.unreadable.len() - 10));
    }
}

/// The endpoints of TARGET's kernel group, in address order, with TARGET's address and the group number.
/// TARGET is resolved as `bind` resolves it (an address, or a vendor:device ID that matches one device); a
/// group of bridges only is a negative answer (exit 1): there is nothing to assign. `qemu`, `libvirt`,
/// `cdi` and `kubevirt` start here.
pub fn endpoints(snap: &Snapshot, target: &str) -> anyhow::Result<(PciAddress, u32, Vec<PciAddress>)> {
    let addr = bind::resolve_target(snap, target)?;
    let g = snap.group_of(addr).ok_or(bind::BindError::NoGroup(addr))?;
    let eps = snap.group_endpoints(g);
    if eps.is_empty() {
        return Err(fail(
            Exit::Negative,
            format!("IOMMU group {} of {target} holds only bridges: nothing to assign to a VM", g.id),
        ));
    }
    Ok((addr, g.id, eps))
}

/// One IOMMU group reached from the command line's targets.
pub struct TargetGroup {
    /// The kernel's group number.
    pub group: u32,
    /// The targets that resolved into it, as addresses.
    pub targets: Vec<PciAddress>,
    /// Its endpoints, in address order.
    pub endpoints: Vec<PciAddress>,
}

/// The groups of several targets ([`endpoints`] for each), one entry per group in group order: two
/// targets in one group give one entry.
pub fn target_groups(snap: &Snapshot, targets: &[String]) -> anyhow::Result<Vec<TargetGroup>> {
    let mut out: BTreeMap<u32, TargetGroup> = BTreeMap::new();
    for t in targets {
        let (addr, group, endpoints) = endpoints(snap, t)?;
        let e = out.entry(group).or_insert(TargetGroup { group, targets: Vec::new(), endpoints });
        if !e.targets.contains(&addr) {
            e.targets.push(addr);
        }
    }
    Ok(out.into_values().collect())
}

/// Refuses (exit 3) when a group is not viable for VFIO: a member is on a driver VFIO cannot share the
/// group with (`iommu_host::bind::group_status`). The message names each blocking device and its driver.
pub fn refuse_unviable(snap: &Snapshot, groups: &[TargetGroup], what: &str) -> anyhow::Result<()> {
    let status = bind::group_status(snap);
    let mut refusals = Vec::new();
    for g in groups {
        let Some(s) = status.iter().find(|s| s.group == g.group) else { continue };
        if !s.viable {
            let b: Vec<String> = s.blockers.iter().map(|(a, d)| format!("{a} is on {}", sanitize(d))).collect();
            refusals.push(format!("IOMMU group {} is not viable for VFIO: {}", g.group, b.join(", ")));
        }
    }
    if refusals.is_empty() {
        return Ok(());
    }
    let first = groups.iter().find(|g| status.iter().any(|s| s.group == g.group && !s.viable));
    Err(fail(
        Exit::Refused,
        format!(
            "{}; {what} would hand out a group that VFIO refuses to open. Bind the whole group first (`iommuctl bind {}`)",
            refusals.join("; "),
            first.map(|g| g.endpoints[0].to_string()).unwrap_or_default()
        ),
    ))
}
