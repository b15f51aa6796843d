//! Explanations: sentences built from a prediction's evidence.

use iommu_pci::PciAddress;
use serde::Serialize;

use crate::acs::AcsVerdict;
use crate::model::{Pcie, Topology};
use crate::predict::{Join, Prediction};

/// Why a device's group holds exactly its members, as data and as sentences.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// The device asked about.
    pub device: PciAddress,
    /// Its predicted group number.
    pub group: u32,
    /// All members, sorted.
    pub members: Vec<PciAddress>,
    /// One sentence per fact, the device's own path first, then how each member joined.
    pub sentences: Vec<String>,
    /// What would give the device a group of its own.
    pub to_isolate: Vec<String>,
}

/// A short description of a function's kind, e.g. `root port` or `conventional PCI bridge`.
pub fn kind_of(t: &Topology, addr: PciAddress) -> String {
    match t.get(addr) {
        None => "unknown function".into(),
        Some(d) => match d.pcie {
            Pcie::Yes(pt) => pt.describe().to_string(),
            Pcie::No if d.is_bridge() => "conventional PCI bridge".into(),
            Pcie::No => "conventional PCI function".into(),
            Pcie::Unknown => "function of unknown PCIe type".into(),
        },
    }
}

fn verdict_sentence(t: &Topology, addr: PciAddress, v: &AcsVerdict) -> String {
    format!("{addr} ({}): {}", kind_of(t, addr), v.describe())
}

/// Explains the group of `addr`. `None` when the device is not in the prediction.
pub fn explain(t: &Topology, p: &Prediction, addr: PciAddress) -> Option<Explanation> {
    let ev = p.evidence_for(addr)?;
    let group = p.group_of(addr)?;
    let mut s = Vec::new();
    let mut fixes = Vec::new();
    let others: Vec<String> = group.devices.iter().filter(|&&a| a != addr).map(|a| a.to_string()).collect();
    if others.is_empty() {
        s.push(format!("{addr} ({}) is alone in group {}: the IOMMU can isolate it.", kind_of(t, addr), group.id));
    } else {
        s.push(format!(
            "{addr} ({}) shares group {} with {}: {}.",
            kind_of(t, addr),
            group.id,
            if others.len() == 1 {
                "1 other function".to_string()
            } else {
                format!("{} other functions", others.len())
            },
            others.join(", ")
        ));
    }
    // The device's own climb.
    for h in &ev.hops {
        if h.isolated {
            s.push(format!(
                "Upstream, every port from {} ({}) to the root bus has ACS isolation, so isolation stops mattering above it.",
                h.bridge,
                kind_of(t, h.bridge)
            ));
        } else if let Some((b, v)) = &h.blocker {
            s.push(format!(
                "Upstream bridge {} is not isolated from the rest of the hierarchy: {}.",
                h.bridge,
                verdict_sentence(t, *b, v)
            ));
        }
    }
    if let Some(vmd) = ev.dma_device {
        s.push(format!(
            "It is behind Intel VMD {vmd}, which does its DMA: every request from its PCI domain reaches the IOMMU \
             with {vmd}'s requester ID, so the whole domain shares {vmd}'s group whatever ACS its ports have."
        ));
    }
    if let Some(alias) = ev.ivrs_alias {
        if alias.bus == addr.bus {
            s.push(format!(
                "The ACPI IVRS table gives it the alias {alias}, so the kernel adds {alias} as one of its DMA aliases \
                 before grouping."
            ));
        } else {
            s.push(format!(
                "The ACPI IVRS table gives it the alias {alias}, on another bus: the kernel does not make that a DMA \
                 alias, so it does not change groups."
            ));
        }
    }
    if !ev.requester_id_walk.is_empty() {
        let w: Vec<String> = ev.requester_id_walk.iter().map(|a| format!("{a} ({})", kind_of(t, *a))).collect();
        s.push(format!(
            "Its DMA reaches the IOMMU under the requester ID of {}: the IOMMU cannot tell it apart from functions behind the same bridge.",
            w.join(", then ")
        ));
    }
    // How every member joined, in probe order.
    for e in p.evidence.iter().filter(|e| e.group == group.id) {
        let who = e.device;
        let line = match &e.join {
            Join::NewGroup => format!("{who} was probed first and started group {}.", group.id),
            Join::RequesterId { via } => format!(
                "{who} joined because {via} ({}) forwards its DMA under a requester ID that belongs to the group.",
                kind_of(t, *via)
            ),
            Join::UpstreamBridge { bridge } => {
                let why = e
                    .hops
                    .iter()
                    .find(|h| h.bridge == *bridge)
                    .and_then(|h| h.blocker.as_ref())
                    .map(|(b, v)| format!(" ({})", verdict_sentence(t, *b, v)))
                    .unwrap_or_default();
                format!("{who} joined the group of its upstream bridge {bridge}, which is not ACS-isolated{why}.")
            }
            Join::DmaAlias { with, from, ivrs } => {
                let q = if *ivrs {
                    " (ACPI IVRS alias: the firmware's IVRS table says the requests carry the other function's ID)"
                        .to_string()
                } else {
                    e.alias_quirk.map(|q| format!(" (quirk: {q})")).unwrap_or_default()
                };
                if from == &who {
                    format!("{who} joined because it is a DMA alias of {with}{q}.")
                } else {
                    format!("{who} joined because its upstream bridge {from} is a DMA alias of {with}{q}.")
                }
            }
            Join::Vmd { endpoint } => {
                format!("{who} joined because it is behind Intel VMD {endpoint}, which does its DMA.")
            }
            Join::Multifunction { with, from } => {
                let own = p.evidence_for(*from).map(|f| f.own_acs.describe()).unwrap_or_default();
                if from == &who {
                    format!(
                        "{who} joined because it and {with} are functions of one multifunction device without ACS isolation ({own})."
                    )
                } else {
                    format!("{who} joined because its upstream bridge {from} and {with} are functions of one multifunction device without ACS isolation ({own}).")
                }
            }
        };
        s.push(line);
    }
    if let (Some(vmd), false) = (ev.dma_device, others.is_empty()) {
        fixes.push(format!(
            "turn Intel VMD off in the firmware (storage mode AHCI/NVMe instead of RAID or Intel RST): only then do \
             the functions behind {vmd} use requester IDs of their own"
        ));
    }
    if !others.is_empty() && ev.dma_device.is_none() {
        for h in &ev.hops {
            if let (false, Some((b, v))) = (h.isolated, &h.blocker) {
                let fix = match v {
                    AcsVerdict::Flags { missing, .. } => format!(
                        "enable ACS {} on {b} (e.g. kernel parameter pci=config_acs=...@{b}) if the hardware really isolates",
                        iommu_pci::acs::names(*missing)
                    ),
                    AcsVerdict::NoCapability => {
                        format!("move the device to a slot whose upstream ports implement ACS ({b} has none)")
                    }
                    _ => format!("move the device below a port that isolates ({b}: {})", v.describe()),
                };
                fixes.push(fix);
                break;
            }
        }
        if ev.own_acs != AcsVerdict::SingleFunction && !ev.own_acs.enabled() && !others.is_empty() {
            let multifunction = t
                .index_of(addr)
                .is_some_and(|i| crate::acs::scanned_multifunction(t, i, &crate::predict::port_types(t)));
            if multifunction {
                fixes.push(format!(
                    "the functions of {}'s slot cannot be split without ACS on the device itself ({})",
                    addr,
                    ev.own_acs.describe()
                ));
            }
        }
        if !ev.requester_id_walk.is_empty() {
            fixes.push(
                "a device behind a PCIe-to-PCI or conventional bridge can only be isolated by moving it to a PCIe slot"
                    .into(),
            );
        }
    }
    Some(Explanation { device: addr, group: group.id, members: group.devices.clone(), sentences: s, to_isolate: fixes })
}
