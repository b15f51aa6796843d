//! `iommuctl predict`: the groups Linux forms from this config space; `--diff` against the kernel's;
//! `--what-if CHANGE`: under a changed kernel command line.

use std::collections::BTreeSet;
use std::fmt;

use iommu_groups::{kind_of, what_if as run_what_if, Change, GroupChange, VerdictChange};
use iommu_pci::PciAddress;
use serde::Serialize;

use crate::cmd::list::IOMMU_OFF_HINT;
use crate::exit::{fail, Exit};
use crate::output::{sanitize, Outcome, Sorted};
use crate::source::{warn_uncertain, Source};

/// The prediction, and with `--diff` how it compares with the kernel's groups.
#[derive(Serialize)]
pub struct PredictReport {
    rules: &'static str,
    quirks: &'static str,
    groups: Vec<Group>,
    uncertain: Vec<PciAddress>,
    runtime_aliases: Vec<PciAddress>,
    /// How this host's command line counts, where it does not as written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    differences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    matches_kernel: Option<bool>,
}

#[derive(Serialize)]
struct Group {
    id: u32,
    devices: Vec<Member>,
}

#[derive(Serialize)]
struct Member {
    address: PciAddress,
    kind: String,
}

/// `iommuctl predict [--diff]`.
pub fn run(src: &Source, diff: bool) -> anyhow::Result<Outcome> {
    let snap = &src.snapshot;
    let predicted = src.predict()?;
    let pred = &predicted.prediction;
    let groups = pred
        .groups
        .iter()
        .map(|g| Group {
            id: g.id,
            devices: g.devices.iter().map(|a| Member { address: *a, kind: kind_of(&predicted.topology, *a) }).collect(),
        })
        .collect();
    let mut differences = Vec::new();
    if diff {
        if !src.has_kernel_groups() {
            return Err(fail(
                Exit::BadInput,
                "predict --diff compares with the kernel's groups, and an lspci dump has none unless it has \
                 `IOMMU group:` lines (lspci -vv, pciutils 3.6 or later); run predict without --diff",
            ));
        }
        if snap.groups.is_empty() {
            return Err(fail(Exit::Negative, format!("cannot compare: {IOMMU_OFF_HINT}")));
        }
        differences = compare(snap, &predicted, &src.group_unknown);
    }
    let exit = if differences.is_empty() { Exit::Ok } else { Exit::Negative };
    let report = PredictReport {
        rules: pred.rules.name(),
        quirks: pred.quirks,
        groups,
        uncertain: pred.uncertain.clone(),
        runtime_aliases: pred.runtime_aliases.clone(),
        notes: pred.notes.clone(),
        matches_kernel: diff.then_some(differences.is_empty()),
        differences: diff.then_some(differences),
    };
    Ok(Outcome::report(Sorted(report)).with_exit(exit))
}

/// The kernel's groups against the predicted ones, each difference with what explains it: the predicted
/// reason for one member of each predicted group that differs, and the functions the kernel put in no group.
/// Functions whose kernel group a cut paste does not show (`unknown`) are left out of both sides.
fn compare(snap: &iommu_host::Snapshot, predicted: &crate::source::Predicted, unknown: &[PciAddress]) -> Vec<String> {
    let pred = &predicted.prediction;
    let kernel: BTreeSet<Vec<PciAddress>> = snap.groups.iter().map(|g| g.devices.clone()).collect();
    let ours: BTreeSet<Vec<PciAddress>> = pred
        .groups
        .iter()
        .map(|g| g.devices.iter().copied().filter(|a| !unknown.contains(a)).collect::<Vec<_>>())
        .filter(|g| !g.is_empty())
        .collect();
    let show = |v: &[PciAddress]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" ");
    let mut out = Vec::new();
    for k in kernel.difference(&ours) {
        out.push(format!("kernel has    {{{}}}", show(k)));
    }
    for k in ours.difference(&kernel) {
        out.push(format!("predicted has {{{}}}", show(k)));
        let ungrouped: Vec<PciAddress> = k.iter().copied().filter(|&a| snap.group_of(a).is_none()).collect();
        if !ungrouped.is_empty() {
            let why = if predicted.platform.amd_ivrs {
                "on AMD the IVRS table decides, which config space does not show"
            } else {
                "on Intel the DMAR table decides which devices each remapping unit covers, and an integrated GPU's \
                 graphics-only unit is ignored with intel_iommu=igfx_off or the kernel's quirk for chipsets whose \
                 graphics remapping is broken; neither shows in config space"
            };
            out.push(format!(
                "  the kernel put {} in no group (not behind the IOMMU as the firmware describes it: {why})",
                show(&ungrouped)
            ));
        }
        let Some(&first) = k.iter().find(|&&a| snap.group_of(a).is_some()) else { continue };
        if let Some(e) = iommu_groups::explain(&predicted.topology, pred, first) {
            out.extend(e.sentences.iter().skip(1).take(3).map(|s| format!("  because {s}")));
        }
    }
    out
}

impl fmt::Display for PredictReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.differences {
            Some(d) if d.is_empty() => {
                writeln!(f, "prediction matches the kernel: {} groups ({} rules)", self.groups.len(), self.rules)
            }
            Some(d) => {
                writeln!(f, "prediction differs from the kernel:")?;
                for x in d {
                    writeln!(f, "  {x}")?;
                }
                Ok(())
            }
            None => {
                for g in &self.groups {
                    let members: Vec<String> = g.devices.iter().map(|d| d.address.to_string()).collect();
                    writeln!(f, "group {}: {}", g.id, members.join(" "))?;
                }
                Ok(())
            }
        }
    }
}

fn set(v: &[PciAddress]) -> String {
    format!("{{{}}}", v.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" "))
}

/// Groups under a changed command line, against today's.
#[derive(Serialize)]
pub struct WhatIfReport {
    params: Vec<String>,
    today_groups: usize,
    groups: Vec<WhatIfGroup>,
    changed: Vec<GroupChange>,
    verdicts: Vec<VerdictChange>,
    warnings: Vec<String>,
    today_matches_kernel: Option<bool>,
}

#[derive(Serialize)]
struct WhatIfGroup {
    id: u32,
    devices: Vec<PciAddress>,
}

/// `iommuctl predict --what-if CHANGE...`.
pub fn what_if(src: &Source, raw: &[String]) -> anyhow::Result<Outcome> {
    let changes = raw
        .iter()
        .map(|r| Change::parse(r).map_err(|e| fail(Exit::BadInput, format!("--what-if {}: {e}", sanitize(r)))))
        .collect::<Result<Vec<_>, _>>()?;
    let snap = &src.snapshot;
    // what_if predicts today's groups itself: only the tree is needed here.
    let topology = src.topology()?;
    let mut outcome = run_what_if(&topology, &snap.platform(), &changes);
    warn_uncertain(&outcome.today, matches!(src.origin, crate::config::Origin::Lspci(_)));
    if let Some((major, minor)) = snap.kernel.version() {
        if (major, minor) < (6, 11) && changes.iter().any(|c| matches!(c, Change::ConfigAcs { .. })) {
            outcome.warnings.insert(
                0,
                format!(
                    "This host runs Linux {major}.{minor}, which ignores pci=config_acs=: under this kernel the \
                     groups stay as they are today."
                ),
            );
        }
    }
    let kernel_differs = !snap.groups.is_empty() && {
        let mut kernel: Vec<&Vec<PciAddress>> = snap.groups.iter().map(|g| &g.devices).collect();
        let mut today: Vec<&Vec<PciAddress>> = outcome.today.groups.iter().map(|g| &g.devices).collect();
        kernel.sort();
        today.sort();
        kernel != today
    };
    Ok(Outcome::report(Sorted(WhatIfReport {
        params: outcome.params,
        today_groups: outcome.today.groups.len(),
        groups: outcome.after.groups.iter().map(|g| WhatIfGroup { id: g.id, devices: g.devices.clone() }).collect(),
        changed: outcome.changed,
        verdicts: outcome.verdicts,
        warnings: outcome.warnings,
        today_matches_kernel: (!snap.groups.is_empty()).then_some(!kernel_differs),
    })))
}

impl fmt::Display for WhatIfReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "What if the kernel booted with {}:", self.params.join(" "))?;
        writeln!(
            f,
            "  today {} groups, then {} groups; {} of today's groups change",
            self.today_groups,
            self.groups.len(),
            self.changed.len()
        )?;
        if self.today_matches_kernel == Some(false) {
            writeln!(
                f,
                "  (today's groups are predicted; they differ from the running kernel's: see `predict --diff`)"
            )?;
        }
        for c in &self.changed {
            if c.after.len() == 1 {
                writeln!(f, "  {} merges into {}", set(&c.today), set(&c.after[0]))?;
            } else {
                writeln!(f, "  {} splits into:", set(&c.today))?;
                for g in &c.after {
                    writeln!(f, "      {}", set(g))?;
                }
            }
        }
        if !self.verdicts.is_empty() {
            writeln!(f, "ACS answers that change:")?;
            for v in &self.verdicts {
                writeln!(f, "  {}: {} -> {}", v.device, v.before.describe(), v.after.describe())?;
            }
        }
        if !self.warnings.is_empty() {
            writeln!(f, "Warnings:")?;
            for x in &self.warnings {
                writeln!(f, "  ! {x}")?;
            }
        }
        Ok(())
    }
}
