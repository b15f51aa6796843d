//! `iommuctl list`: the kernel's groups with names, classes and drivers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use iommu_host::ReservedRegion;
use iommu_pci::{ConfigInfo, PciAddress, PciIds};
use serde::Serialize;

use crate::config::Origin;
use crate::exit::Exit;
use crate::output::{sanitize, Outcome, Shown};
use crate::render::{names, paint_header, pcie_kind};
use crate::source::Source;

/// Said when there are no groups: the IOMMU is off or absent, and how to turn it on.
pub const IOMMU_OFF_HINT: &str =
    "no IOMMU groups: the IOMMU is off or absent. Turn it on in the firmware (Intel VT-d / \
AMD-Vi, sometimes called IOMMU or \"SVM\" settings) and on the kernel command line (intel_iommu=on on Intel; \
amd_iommu is on by default on AMD, amd_iommu=on where it was turned off), then reboot. To try iommuctl without \
one: `iommuctl snapshot -o host.json` on a machine that has one, then `iommuctl --from host.json list` here";

/// The groups, as `list` shows them.
#[derive(Serialize)]
pub struct ListReport {
    groups: Vec<ListGroup>,
    /// Functions in no group (text only).
    #[serde(skip)]
    loose: Vec<PciAddress>,
    #[serde(skip)]
    color: bool,
}

#[derive(Serialize)]
struct ListGroup {
    id: u32,
    #[serde(rename = "type")]
    kind: Option<String>,
    reserved_regions: Vec<ReservedRegion>,
    devices: Vec<ListDevice>,
}

#[derive(Serialize)]
struct ListDevice {
    address: PciAddress,
    vendor_id: Option<String>,
    device_id: Option<String>,
    class_id: Option<String>,
    vendor: Option<String>,
    device_name: Option<String>,
    class: Option<String>,
    driver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    /// `Class [cccc]` and `Vendor Device [vvvv:dddd]`, for the text form.
    #[serde(skip)]
    text: (String, String),
}

/// No groups: the JSON says so (`iommu_enabled` false, or null for a dump, which cannot tell).
#[derive(Serialize)]
struct NoGroups {
    groups: [u8; 0],
    iommu_enabled: Option<bool>,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'static str>,
}

fn list_device(src: &Source, ids: &PciIds, cfgs: &BTreeMap<PciAddress, ConfigInfo>, a: PciAddress) -> ListDevice {
    let c = cfgs.get(&a);
    let shown = names(ids, c);
    ListDevice {
        address: a,
        vendor_id: c.map(|c| format!("{:04x}", c.vendor_id)),
        device_id: c.map(|c| format!("{:04x}", c.device_id)),
        class_id: c.map(|c| format!("{:04x}", c.class >> 8)),
        vendor: c.and_then(|c| ids.vendor(c.vendor_id)).map(str::to_string),
        device_name: c.and_then(|c| ids.device(c.vendor_id, c.device_id)).map(str::to_string),
        class: c.and_then(|c| ids.subclass(c.class)).map(str::to_string),
        driver: src.snapshot.device(a).and_then(|d| d.driver.clone()),
        kind: c.filter(|c| c.is_pcie().is_some()).map(pcie_kind),
        text: (shown.class_text(), shown.text()),
    }
}

/// `iommuctl list`.
pub fn run(src: &Source, color: bool) -> anyhow::Result<Outcome> {
    let snap = &src.snapshot;
    if let (Origin::Lspci(f), false) = (&src.origin, src.has_kernel_groups()) {
        let message = format!(
            "this lspci dump holds config space only, no kernel IOMMU groups (no `IOMMU group:` lines: lspci -vv \
             from pciutils 3.6 or later prints them); `iommuctl --from-lspci {} predict` shows the groups Linux would form",
            sanitize(&f.display().to_string())
        );
        let report = NoGroups { groups: [], iommu_enabled: None, message: message.clone(), source: Some("lspci") };
        return Ok(no_groups(report, message));
    }
    if snap.groups.is_empty() {
        let report = NoGroups { groups: [], iommu_enabled: Some(false), message: IOMMU_OFF_HINT.into(), source: None };
        return Ok(no_groups(report, IOMMU_OFF_HINT));
    }
    let ids = src.ids();
    let cfgs = src.configs();
    let groups = snap
        .groups
        .iter()
        .map(|g| ListGroup {
            id: g.id,
            kind: g.kind.clone(),
            reserved_regions: g.reserved_regions.clone(),
            devices: g.devices.iter().map(|&a| list_device(src, &ids, &cfgs, a)).collect(),
        })
        .collect();
    let grouped: BTreeSet<PciAddress> = snap.groups.iter().flat_map(|g| g.devices.iter().copied()).collect();
    let loose = snap.devices.iter().map(|d| d.address).filter(|a| !grouped.contains(a)).collect();
    Ok(Outcome::report(ListReport { groups, loose, color }))
}

fn no_groups(r: NoGroups, message: impl Into<String>) -> Outcome {
    Outcome { shown: Shown::JsonOnly(Box::new(r)), exit: Exit::Negative, message: Some(message.into()) }
}

impl fmt::Display for NoGroups {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

impl fmt::Display for ListReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for g in &self.groups {
            let mut header = format!("IOMMU group {}", g.id);
            if let Some(k) = &g.kind {
                header.push_str(&format!(" ({})", sanitize(k)));
            }
            writeln!(f, "{}", if self.color { paint_header(&header) } else { header })?;
            for d in &g.devices {
                let drv = d.driver.as_deref().map(|x| format!("  [{}]", sanitize(x))).unwrap_or_default();
                writeln!(f, "  {}  {}: {}{drv}", d.address, d.text.0, d.text.1)?;
            }
        }
        if !self.loose.is_empty() {
            let loose: Vec<String> = self.loose.iter().map(|a| a.to_string()).collect();
            writeln!(f, "Not in any IOMMU group: {}", loose.join(", "))?;
        }
        Ok(())
    }
}
