//! `iommuctl show ADDR`: one function: group, path to the root with ACS per hop, driver, reset, NUMA,
//! reserved regions.

use std::fmt;

use iommu_groups::{acs_verdict, kind_of, AcsVerdict};
use iommu_host::ReservedRegion;
use iommu_pci::PciAddress;
use serde::Serialize;

use crate::output::{sanitize, Outcome, Sorted};
use crate::render::{names, Names};
use crate::source::Source;

/// One function, as `show` shows it.
#[derive(Serialize)]
pub struct ShowReport {
    address: PciAddress,
    names: Names,
    kind: String,
    driver: Option<String>,
    driver_override: Option<String>,
    iommu_group: Option<u32>,
    group_type: Option<String>,
    group_members: Vec<PciAddress>,
    reserved_regions: Vec<ReservedRegion>,
    path_to_root: Vec<Hop>,
    reset_methods: Option<Vec<String>>,
    boot_vga: Option<bool>,
    numa_node: Option<i32>,
    iommu: Option<String>,
    physfn: Option<PciAddress>,
    sriov_totalvfs: Option<u32>,
    sriov_numvfs: Option<u32>,
    net: Vec<String>,
}

/// One bridge on the way to the root.
#[derive(Serialize)]
struct Hop {
    address: PciAddress,
    kind: String,
    acs_isolated: bool,
    acs: String,
}

/// `iommuctl show ADDR`.
pub fn run(src: &Source, a: PciAddress) -> anyhow::Result<Outcome> {
    let snap = &src.snapshot;
    let device = src.device(a)?;
    let ids = src.ids();
    let cfgs = src.configs();
    let predicted = src.predict()?;
    let platform = &predicted.platform;
    let path_to_root = predicted
        .topology
        .upstream_path(a)
        .into_iter()
        .map(|b| {
            // The same test, corrected port type and command line as the prediction uses.
            let verdict = acs_verdict(&predicted.topology, b.address, platform).unwrap_or(AcsVerdict::Unknown);
            Hop {
                address: b.address,
                kind: kind_of(&predicted.topology, b.address).to_string(),
                acs_isolated: verdict.enabled(),
                acs: verdict.describe(),
            }
        })
        .collect();
    let group = snap.group_of(a);
    Ok(Outcome::report(Sorted(ShowReport {
        address: a,
        names: names(&ids, cfgs.get(&a)),
        kind: kind_of(&predicted.topology, a).to_string(),
        driver: device.driver.clone(),
        driver_override: device.driver_override.clone(),
        iommu_group: group.map(|g| g.id),
        group_type: group.and_then(|g| g.kind.clone()),
        group_members: group.map(|g| g.devices.clone()).unwrap_or_default(),
        reserved_regions: group.map(|g| g.reserved_regions.clone()).unwrap_or_default(),
        path_to_root,
        reset_methods: device.reset_methods.clone(),
        boot_vga: device.boot_vga,
        numa_node: device.numa_node,
        iommu: device.iommu.clone(),
        physfn: device.physfn,
        sriov_totalvfs: device.sriov_totalvfs,
        sriov_numvfs: device.sriov_numvfs,
        net: device.net.clone(),
    })))
}

impl fmt::Display for ShowReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |x: &Option<String>| x.as_deref().map(sanitize).unwrap_or_else(|| "none".into());
        writeln!(f, "{}  {}: {}", self.address, self.names.class_text(), self.names.text())?;
        writeln!(f, "  kind:            {}", self.kind)?;
        writeln!(f, "  driver:          {}", opt(&self.driver))?;
        if self.driver_override.is_some() {
            writeln!(f, "  driver_override: {}", opt(&self.driver_override))?;
        }
        match self.iommu_group {
            Some(id) => {
                let members: Vec<String> = self.group_members.iter().map(|x| x.to_string()).collect();
                let kind = self.group_type.as_deref().map(sanitize).unwrap_or_else(|| "type unknown".into());
                writeln!(f, "  IOMMU group:     {id} ({kind}): {}", members.join(", "))?;
                for r in &self.reserved_regions {
                    writeln!(f, "  reserved region: {:#018x}-{:#018x} {}", r.start, r.end, sanitize(&r.kind))?;
                }
            }
            None => writeln!(f, "  IOMMU group:     none")?,
        }
        writeln!(f, "  path to root:")?;
        if self.path_to_root.is_empty() {
            writeln!(f, "    (on a root bus)")?;
        }
        for h in &self.path_to_root {
            writeln!(f, "    {} {}: {}", h.address, h.kind, h.acs)?;
        }
        let list =
            |x: &Option<Vec<String>>| x.as_ref().map(|v| sanitize(&v.join(" "))).unwrap_or_else(|| "none".into());
        writeln!(f, "  reset methods:   {}", list(&self.reset_methods))?;
        if let Some(b) = self.boot_vga {
            writeln!(f, "  boot VGA:        {}", if b { "yes" } else { "no" })?;
        }
        if let Some(nn) = self.numa_node {
            writeln!(f, "  NUMA node:       {nn}")?;
        }
        if !self.net.is_empty() {
            writeln!(f, "  network:         {}", sanitize(&self.net.join(" ")))?;
        }
        Ok(())
    }
}
