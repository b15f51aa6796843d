//! `iommuctl kubevirt TARGET...`: the KubeVirt CR's `permittedHostDevices.pciHostDevices` entries for every
//! endpoint of the targets' IOMMU groups, as YAML to merge into the CR (text) or as a JSON merge patch
//! (`--json`, for `kubectl patch kubevirt kubevirt -n kubevirt --type merge -p ...`).
//!
//! KubeVirt's device plugin selects devices by `pciVendorSelector` (vendor:device, compared
//! case-insensitively), so one entry stands for every function with that ID bound to vfio-pci on the
//! node: endpoints that share an ID share an entry. Because it selects by ID and not by address, two
//! devices with the same ID in different groups are interchangeable to it: a warning names them when the
//! targets, or other functions of the host, share a selector but not a group. Every endpoint of a group
//! gets an entry because VFIO hands out whole groups: a VM should request each of them.
//!
//! A group VFIO would refuse to open (a member on a host driver) is refused (exit 3), as for `cdi`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use iommu_host::Snapshot;
use iommu_pci::{ConfigInfo, PciAddress};
use serde::Serialize;

use crate::output::{warn, Outcome};
use crate::source::{refuse_unviable, target_groups, Source};

/// The resource name prefix when `--resource-prefix` is not given.
pub const DEFAULT_PREFIX: &str = "iommuctl.dev";

/// Checks a resource-name prefix: a DNS subdomain as Kubernetes wants it (lowercase letters, digits, `-`
/// and `.`; labels start and end with a letter or digit; at most 253 characters), outside the reserved
/// `kubernetes.io` domain.
pub fn parse_prefix(s: &str) -> Result<String, String> {
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    if s.is_empty() || s.len() > 253 || !s.split('.').all(label_ok) {
        return Err(format!(
            "`{s}` is not a DNS subdomain (lowercase letters, digits, `-` and `.`, e.g. {DEFAULT_PREFIX})"
        ));
    }
    if s == "kubernetes.io" || s.ends_with(".kubernetes.io") {
        return Err(format!("`{s}`: the kubernetes.io domain is reserved for Kubernetes' own resources"));
    }
    Ok(s.to_string())
}

/// One `pciHostDevices` entry, with the KubeVirt API's field names.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PciHostDevice {
    pci_vendor_selector: String,
    resource_name: String,
    external_resource_provider: bool,
}

/// The entries and what the text form says about them.
pub struct KubevirtReport {
    entries: Vec<PciHostDevice>,
    /// Per entry: (group, endpoints with the ID) for the comments.
    matched: Vec<Vec<(u32, Vec<PciAddress>)>>,
    groups: Vec<u32>,
}

/// The JSON form: a merge patch for the KubeVirt CR.
impl Serialize for KubevirtReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::json!({
            "spec": {"configuration": {"permittedHostDevices": {"pciHostDevices": &self.entries}}}
        })
        .serialize(s)
    }
}

impl fmt::Display for KubevirtReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        writeln!(
            f,
            "# iommuctl kubevirt: every endpoint of IOMMU group{} {}; a VM must request all endpoints of a group.",
            if groups.len() == 1 { "" } else { "s" },
            groups.join(", ")
        )?;
        writeln!(f, "# Merge into the KubeVirt CR: kubectl edit kubevirt kubevirt -n kubevirt")?;
        writeln!(f, "spec:\n  configuration:\n    permittedHostDevices:\n      pciHostDevices:")?;
        for (e, m) in self.entries.iter().zip(&self.matched) {
            for (g, addrs) in m {
                let a: Vec<String> = addrs.iter().map(PciAddress::to_string).collect();
                writeln!(f, "        # group {g}: {}", a.join(" "))?;
            }
            writeln!(f, "        - pciVendorSelector: \"{}\"", e.pci_vendor_selector)?;
            writeln!(f, "          resourceName: \"{}\"", e.resource_name)?;
            writeln!(f, "          externalResourceProvider: {}", e.external_resource_provider)?;
        }
        Ok(())
    }
}

fn ids(snap: &Snapshot, a: PciAddress) -> Option<(u16, u16)> {
    let c = ConfigInfo::parse(&snap.device(a)?.config).ok()?;
    Some((c.vendor_id, c.device_id))
}

/// The entries for the targets' groups, and the warnings about selectors that reach beyond them.
pub fn report(snap: &Snapshot, targets: &[String], prefix: &str) -> anyhow::Result<(KubevirtReport, Vec<String>)> {
    let groups = target_groups(snap, targets)?;
    refuse_unviable(snap, &groups, "KubeVirt")?;
    // Selector -> (group -> endpoints), over the targets' groups.
    let mut by_id: BTreeMap<(u16, u16), BTreeMap<u32, Vec<PciAddress>>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for g in &groups {
        for &a in &g.endpoints {
            match ids(snap, a) {
                Some(id) => by_id.entry(id).or_default().entry(g.group).or_default().push(a),
                None => unknown.push(a.to_string()),
            }
        }
    }
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        warnings.push(format!(
            "{}: config space does not decode, so no vendor:device selector; left out",
            unknown.join(", ")
        ));
    }
    let in_targets: BTreeSet<u32> = groups.iter().map(|g| g.group).collect();
    let mut entries = Vec::new();
    let mut matched = Vec::new();
    for (&(v, d), m) in &by_id {
        let selector = format!("{v:04X}:{d:04X}");
        if m.len() > 1 {
            let gs: Vec<String> = m.iter().map(|(g, a)| format!("{} (group {g})", join(a))).collect();
            warnings.push(format!(
                "{} share vendor:device {selector} but not a group: KubeVirt selects by ID, so a VM asking for \
                 {prefix}/{v:04x}-{d:04x} may get either",
                gs.join(" and ")
            ));
        }
        // Functions elsewhere on the host with the same ID, outside the targets' groups.
        let others: Vec<String> = snap
            .devices
            .iter()
            .filter(|h| ids(snap, h.address) == Some((v, d)) && !snap.is_bridge(h.address))
            .filter(|h| !matches!(h.iommu_group, Some(g) if in_targets.contains(&g)))
            .map(|h| match h.iommu_group {
                Some(g) => format!("{} (group {g})", h.address),
                None => h.address.to_string(),
            })
            .collect();
        if !others.is_empty() {
            warnings.push(format!(
                "{selector} also matches {}: once on vfio-pci, KubeVirt would offer {} as {prefix}/{v:04x}-{d:04x} too",
                others.join(", "),
                if others.len() == 1 { "it" } else { "them" }
            ));
        }
        entries.push(PciHostDevice {
            pci_vendor_selector: selector,
            resource_name: format!("{prefix}/{v:04x}-{d:04x}"),
            external_resource_provider: false,
        });
        matched.push(m.iter().map(|(g, a)| (*g, a.clone())).collect());
    }
    let groups = groups.iter().map(|g| g.group).collect();
    Ok((KubevirtReport { entries, matched, groups }, warnings))
}

fn join(a: &[PciAddress]) -> String {
    a.iter().map(PciAddress::to_string).collect::<Vec<_>>().join(", ")
}

/// `iommuctl kubevirt TARGET... [--resource-prefix DOMAIN]`; warnings go to stderr in both forms.
pub fn run(src: &Source, targets: &[String], prefix: &str) -> anyhow::Result<Outcome> {
    let (report, warnings) = report(&src.snapshot, targets, prefix)?;
    for w in warnings {
        warn(&format!("warning: {w}"));
    }
    Ok(Outcome::report(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_dns_subdomains_outside_kubernetes_io() {
        for good in ["iommuctl.dev", "example.com", "a", "gpu-1.example.org"] {
            assert!(parse_prefix(good).is_ok(), "{good}");
        }
        for bad in ["", "Example.com", "a..b", "-a.b", "a-.b", "a/b", "kubernetes.io", "x.kubernetes.io", "a b"] {
            assert!(parse_prefix(bad).is_err(), "{bad} accepted");
        }
    }
}
