//! `export`: facts for fleets — Prometheus textfile-collector metrics and a Node Feature Discovery feature
//! file. Both are read from the kernel's groups and the drivers bound now; a host without an IOMMU still
//! exports (iommu enabled 0 / false) and exits 0, so monitoring sees it rather than a missing file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use iommu_host::bind::group_status;
use iommu_host::Snapshot;
use iommu_pci::PciAddress;

use crate::output::Outcome;
use crate::source::{configs, Source};

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Prometheus text exposition format, for node_exporter's textfile collector.
    Prometheus,
    /// Node Feature Discovery feature file (`name=value` lines), for its `features.d` directory.
    Nfd,
}

/// The NFD label prefix.
const NFD: &str = "feature.node.kubernetes.io";

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// Prometheus metrics for a snapshot.
pub fn prometheus(snap: &Snapshot) -> String {
    let status: BTreeMap<u32, _> = group_status(snap).into_iter().map(|s| (s.group, s)).collect();
    let mut o = String::new();
    family(&mut o, "iommuctl_iommu_enabled", "Whether the kernel made IOMMU groups (1) or not (0).");
    let _ = writeln!(o, "iommuctl_iommu_enabled {}", u8::from(!snap.groups.is_empty()));
    family(&mut o, "iommuctl_iommu_groups", "Number of IOMMU groups.");
    let _ = writeln!(o, "iommuctl_iommu_groups {}", snap.groups.len());
    family(&mut o, "iommuctl_group_devices", "Number of PCI functions in the IOMMU group.");
    for g in &snap.groups {
        let _ = writeln!(o, "iommuctl_group_devices{{group=\"{}\"}} {}", g.id, g.devices.len());
    }
    family(
        &mut o,
        "iommuctl_group_viable",
        "Whether VFIO would let user space open the group (1): every member on vfio-pci, pcieport or no driver.",
    );
    for g in &snap.groups {
        let viable = status.get(&g.id).is_some_and(|s| s.viable);
        let _ = writeln!(o, "iommuctl_group_viable{{group=\"{}\"}} {}", g.id, u8::from(viable));
    }
    family(&mut o, "iommuctl_device_bound_vfio", "Whether the PCI function is bound to vfio-pci (1) or not (0).");
    for g in &snap.groups {
        for a in &g.devices {
            let on = status.get(&g.id).is_some_and(|s| s.on_vfio.contains(a));
            let _ = writeln!(
                o,
                "iommuctl_device_bound_vfio{{address=\"{}\",group=\"{}\"}} {}",
                label(&a.to_string()),
                g.id,
                u8::from(on)
            );
        }
    }
    o
}

/// Node Feature Discovery feature lines for a snapshot.
pub fn nfd(snap: &Snapshot) -> String {
    let cfgs = configs(snap);
    let base_class = |a: &PciAddress| cfgs.get(a).map(|c| (c.class >> 16) as u8);
    // A device is isolated when everything else in its group is a bridge.
    let mut gpus = 0;
    let mut nics = 0;
    for g in &snap.groups {
        let endpoints = snap.group_endpoints(g);
        if let [one] = endpoints.as_slice() {
            match base_class(one) {
                Some(0x03) => gpus += 1,
                Some(0x02) => nics += 1,
                _ => {}
            }
        }
    }
    let mut o = String::new();
    let _ = writeln!(o, "{NFD}/iommu-enabled={}", !snap.groups.is_empty());
    let _ = writeln!(o, "{NFD}/iommu-groups={}", snap.groups.len());
    let _ = writeln!(o, "{NFD}/iommu-isolated-gpus={gpus}");
    let _ = writeln!(o, "{NFD}/iommu-isolated-nics={nics}");
    o
}

/// `iommuctl export` (`--json` is refused up front: the formats are the output).
pub fn run(src: &Source, format: Format, output: Option<&Path>) -> anyhow::Result<Outcome> {
    let text = match format {
        Format::Prometheus => prometheus(&src.snapshot),
        Format::Nfd => nfd(&src.snapshot),
    };
    Ok(Outcome::bytes(text.into_bytes(), output.map(Path::to_path_buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
