//! `iommuctl explain ADDR`: why the device's group holds exactly its members, hop by hop, whether the
//! running kernel agrees, and what would split it. `--slots`: where it would be alone.

use std::fmt;

use iommu_groups::{explain, slots as find_slots, Evidence, Explanation, Slot};
use iommu_pci::PciAddress;
use serde::Serialize;

use crate::config::Origin;
use crate::exit::{fail, Exit};
use crate::output::{Outcome, Sorted};
use crate::source::Source;

/// The explanation, the kernel's view of the same device, and the evidence behind it.
#[derive(Serialize)]
pub struct ExplainReport {
    #[serde(flatten)]
    explanation: Explanation,
    kernel_group: Option<u32>,
    kernel_agrees: Option<bool>,
    evidence: Vec<Evidence>,
    /// Sentences about the kernel's view (text only).
    #[serde(skip)]
    notes: Vec<String>,
}

/// `iommuctl explain ADDR`.
pub fn run(src: &Source, a: PciAddress) -> anyhow::Result<Outcome> {
    let snap = &src.snapshot;
    src.device(a)?;
    let predicted = src.predict()?;
    let explanation = explain(&predicted.topology, &predicted.prediction, a)
        .ok_or_else(|| fail(Exit::Negative, format!("no prediction for {a}")))?;
    let kernel = snap.group_of(a);
    let agrees = kernel.map(|g| g.devices == explanation.members);
    let note = match (kernel, agrees) {
        (Some(g), Some(false)) => {
            let members: Vec<String> = g.devices.iter().map(|x| x.to_string()).collect();
            format!(
                "The running kernel put it in group {} with {}; the prediction differs. Please report this with a snapshot.",
                g.id,
                members.join(", ")
            )
        }
        (Some(g), Some(true)) => format!("The running kernel agrees: its group {} has the same members.", g.id),
        _ if src.group_unknown.contains(&a) => {
            "The paste is cut before its `IOMMU group:` line, so the kernel's group is unknown: this is a prediction."
                .into()
        }
        _ if matches!(src.origin, Origin::Lspci(_)) && !src.has_kernel_groups() => {
            "An lspci dump has no kernel groups: this is a prediction.".into()
        }
        _ if matches!(src.origin, Origin::Lspci(_)) => {
            "The dump's kernel put it in no IOMMU group: this is a prediction.".into()
        }
        _ => "The running kernel has no IOMMU group for it (IOMMU off?): this is a prediction.".into(),
    };
    let evidence = predicted.prediction.evidence.iter().filter(|x| x.group == explanation.group).cloned().collect();
    Ok(Outcome::report(Sorted(ExplainReport {
        explanation,
        kernel_group: kernel.map(|g| g.id),
        kernel_agrees: agrees,
        evidence,
        notes: vec![note],
    })))
}

impl fmt::Display for ExplainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in self.explanation.sentences.iter().chain(&self.notes) {
            writeln!(f, "{s}")?;
        }
        if !self.explanation.to_isolate.is_empty() {
            writeln!(f, "To give it a group of its own:")?;
            for x in &self.explanation.to_isolate {
                writeln!(f, "  - {x}")?;
            }
        }
        Ok(())
    }
}

fn set(v: &[PciAddress]) -> String {
    format!("{{{}}}", v.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" "))
}

/// Where the device could go to be alone in its group.
#[derive(Serialize)]
pub struct SlotsReport {
    device: PciAddress,
    group: Vec<PciAddress>,
    current_slot: Option<PciAddress>,
    moves_with: Vec<PciAddress>,
    slots: Vec<Slot>,
}

/// `iommuctl explain ADDR --slots`.
pub fn slots(src: &Source, a: PciAddress) -> anyhow::Result<Outcome> {
    src.device(a)?;
    let predicted = src.predict()?;
    let slots = find_slots(&predicted.topology, &predicted.platform);
    let group: Vec<PciAddress> = predicted.prediction.group_of(a).map(|g| g.devices.clone()).unwrap_or_default();
    let current_slot = predicted.topology.parent_of(a).map(|d| d.address);
    // Functions of the same slot that stay with it wherever the card goes.
    let moves_with: Vec<PciAddress> = group
        .iter()
        .copied()
        .filter(|x| *x != a && x.domain == a.domain && x.bus == a.bus && x.device == a.device)
        .collect();
    Ok(Outcome::report(Sorted(SlotsReport { device: a, group, current_slot, moves_with, slots })))
}

impl fmt::Display for SlotsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let device = self.device;
        let others: Vec<PciAddress> = self.group.iter().copied().filter(|x| *x != device).collect();
        if others.is_empty() {
            writeln!(f, "{device} is alone in its group already.")?;
        } else {
            writeln!(f, "{device} shares its group with {}.", set(&others))?;
        }
        let companions = &self.moves_with;
        if !companions.is_empty() {
            writeln!(
                f,
                "{} {} on the same card without ACS isolation: {} in one group in any slot.",
                set(companions),
                if companions.len() == 1 { "is another function" } else { "are other functions" },
                if companions.len() == 1 { "the two stay" } else { "they all stay" }
            )?;
        }
        if self.slots.is_empty() {
            return writeln!(f, "This host has no PCIe root or downstream ports: no slot can isolate a device.");
        }
        let describe = |s: &Slot| {
            let occ =
                if s.occupied_by.is_empty() { "empty".to_string() } else { format!("holds {}", set(&s.occupied_by)) };
            let here = if Some(s.port) == self.current_slot { "  <- its slot now" } else { "" };
            format!("{} ({}, {occ}){here}", s.port, s.port_type.describe())
        };
        let (good, bad): (Vec<&Slot>, Vec<&Slot>) = self.slots.iter().partition(|s| s.isolates);
        writeln!(f, "Slots where a single-function device gets a group of its own:")?;
        if good.is_empty() {
            writeln!(f, "  none")?;
        }
        for s in &good {
            writeln!(f, "  {}", describe(s))?;
        }
        writeln!(f, "Slots where it would share a group:")?;
        if bad.is_empty() {
            writeln!(f, "  none")?;
        }
        for s in &bad {
            let why = match &s.blocker {
                Some((b, v)) => format!("{b}: {}", v.describe()),
                None => "a DMA alias or requester-ID takeover on the way up".to_string(),
            };
            writeln!(f, "  {}\n      shares with {}; {why}", describe(s), set(&s.shares_with))?;
        }
        Ok(())
    }
}
