//! What-if predictions: the groups under a changed kernel command line, compared with today's, and the
//! slots (root and downstream ports) where a device would get a group of its own.

use std::collections::BTreeMap;

use iommu_pci::{acs, AcsState, PciAddress, PortType};
use serde::Serialize;

use crate::acs::{contexts, AcsVerdict, Context, REQUIRED};
use crate::model::{AcsOverride, ConfigAcs, Device, DeviceSpec, Pcie, Platform, Topology};
use crate::predict::{acs_verdicts, port_types, predict, Join, Prediction, RuleSet};

/// One hypothetical change to the kernel command line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "change")]
pub enum Change {
    /// `pcie_acs_override=...` (out-of-tree patch).
    AcsOverride(AcsOverride),
    /// `pci=config_acs=...` (Linux 6.11+).
    ConfigAcs {
        /// The entries.
        entries: Vec<ConfigAcs>,
    },
    /// `pci=disable_acs_redir=...`.
    DisableAcsRedir {
        /// The devices.
        devices: Vec<DeviceSpec>,
    },
}

impl Change {
    /// Parses `acs-override=downstream,multifunction,id:VVVV:DDDD` (also spelled `pcie_acs_override=`),
    /// `config_acs=FLAGS@DEV;...` (also `pci=config_acs=`) or `disable_acs_redir=DEV;...`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let s = s.strip_prefix("pci=").unwrap_or(s);
        let (key, value) = s.split_once('=').ok_or_else(|| {
            format!("`{s}`: expected acs-override=..., config_acs=FLAGS@DEVICE or disable_acs_redir=DEVICES")
        })?;
        match key {
            "acs-override" | "acs_override" | "pcie_acs_override" => {
                let o = AcsOverride::parse(value)?;
                if o.is_empty() {
                    return Err(format!("`{s}`: name downstream, multifunction or id:VVVV:DDDD"));
                }
                Ok(Change::AcsOverride(o))
            }
            "config_acs" | "config-acs" => {
                let entries = ConfigAcs::parse_list(value)?;
                if entries.is_empty() {
                    return Err(format!("`{s}`: no FLAGS@DEVICE entries"));
                }
                Ok(Change::ConfigAcs { entries })
            }
            "disable_acs_redir" | "disable-acs-redir" => {
                let (devices, stop) = DeviceSpec::parse_list(value);
                if let Some(d) = stop {
                    return Err(format!("`{d}` is not a PCI address, a path (00:1c.0/00.0) or pci:VVVV:DDDD"));
                }
                if devices.is_empty() {
                    return Err(format!("`{s}`: no devices"));
                }
                Ok(Change::DisableAcsRedir { devices })
            }
            other => Err(format!(
                "`{other}` is not a what-if this tool models (acs-override, config_acs, disable_acs_redir)"
            )),
        }
    }

    /// The change as a kernel parameter.
    pub fn kernel_param(&self) -> String {
        match self {
            Change::AcsOverride(o) => {
                let mut parts = Vec::new();
                if o.downstream {
                    parts.push("downstream".to_string());
                }
                if o.multifunction {
                    parts.push("multifunction".to_string());
                }
                parts.extend(o.ids.iter().map(|(v, d)| format!("id:{v:04x}:{d:04x}")));
                format!("pcie_acs_override={}", parts.join(","))
            }
            Change::ConfigAcs { entries } => {
                let e: Vec<String> = entries.iter().map(config_acs_text).collect();
                format!("pci=config_acs={}", e.join(";"))
            }
            Change::DisableAcsRedir { devices } => {
                let d: Vec<String> = devices.iter().map(spec_text).collect();
                format!("pci=disable_acs_redir={}", d.join(";"))
            }
        }
    }

    /// Applies the change to platform facts, as if the parameter were added at the end of the command
    /// line: the kernel reads only the last `pci=config_acs=` and the last `pci=disable_acs_redir=`
    /// (pci.c, `pci_setup`), so those replace what the host's own command line gave.
    pub fn apply(&self, p: &mut Platform) {
        match self {
            Change::AcsOverride(o) => p.acs_override.merge(o.clone()),
            Change::ConfigAcs { entries } => p.config_acs = entries.clone(),
            Change::DisableAcsRedir { devices } => p.acs_redir_disabled = devices.clone(),
        }
    }
}

fn spec_text(s: &DeviceSpec) -> String {
    match s {
        DeviceSpec::Address(a) => a.to_string(),
        DeviceSpec::Path { start, steps } => {
            let steps: String = steps.iter().map(|(d, f)| format!("/{d:02x}.{f}")).collect();
            format!("{start}{steps}")
        }
        DeviceSpec::Id { vendor, device, subsystem: None } => format!("pci:{vendor:04x}:{device:04x}"),
        DeviceSpec::Id { vendor, device, subsystem: Some((sv, sd)) } => {
            format!("pci:{vendor:04x}:{device:04x}:{sv:04x}:{sd:04x}")
        }
    }
}

fn config_acs_text(c: &ConfigAcs) -> String {
    let top = (0..16).rev().find(|b| c.mask & (1 << b) != 0).unwrap_or(0);
    let bits: String = (0..=top)
        .rev()
        .map(|b| {
            if c.mask & (1 << b) == 0 {
                'x'
            } else if c.flags & (1 << b) != 0 {
                '1'
            } else {
                '0'
            }
        })
        .collect();
    format!("{bits}@{}", spec_text(&c.device))
}

/// A function whose ACS answer changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerdictChange {
    /// The function.
    pub device: PciAddress,
    /// Today's answer.
    pub before: AcsVerdict,
    /// The answer under the change.
    pub after: AcsVerdict,
}

/// A group of today whose membership changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupChange {
    /// Today's group (predicted numbering).
    pub today: Vec<PciAddress>,
    /// The groups its members land in under the change, each with all its members.
    pub after: Vec<Vec<PciAddress>>,
}

/// The result of a what-if.
#[derive(Clone, Debug, Serialize)]
pub struct WhatIf {
    /// The changes, as kernel parameters.
    pub params: Vec<String>,
    /// Today's prediction.
    #[serde(skip)]
    pub today: Prediction,
    /// The prediction under the changes.
    #[serde(skip)]
    pub after: Prediction,
    /// Groups that split or merge.
    pub changed: Vec<GroupChange>,
    /// Functions whose ACS answer changes.
    pub verdicts: Vec<VerdictChange>,
    /// What the change gives up, and why it might not do what it says.
    pub warnings: Vec<String>,
}

/// Predicts the groups under `changes` and compares them with today's prediction.
pub fn what_if(t: &Topology, base: &Platform, changes: &[Change]) -> WhatIf {
    let mut platform = base.clone();
    for c in changes {
        c.apply(&mut platform);
    }
    let today = predict(t, base, RuleSet::Linux6);
    let after = predict(t, &platform, RuleSet::Linux6);
    let group_after: BTreeMap<PciAddress, &Vec<PciAddress>> =
        after.groups.iter().flat_map(|g| g.devices.iter().map(move |a| (*a, &g.devices))).collect();
    let mut changed = Vec::new();
    for g in &today.groups {
        let mut targets: Vec<Vec<PciAddress>> = Vec::new();
        for a in &g.devices {
            if let Some(m) = group_after.get(a) {
                if !targets.contains(m) {
                    targets.push((*m).clone());
                }
            }
        }
        if targets.len() != 1 || targets[0] != g.devices {
            changed.push(GroupChange { today: g.devices.clone(), after: targets });
        }
    }
    let before_v = acs_verdicts(t, base);
    let after_v = acs_verdicts(t, &platform);
    let verdicts: Vec<VerdictChange> = t
        .devices
        .iter()
        .zip(before_v.iter().zip(&after_v))
        .filter(|(_, (b, a))| b != a)
        .map(|(d, (b, a))| VerdictChange { device: d.address, before: *b, after: *a })
        .collect();
    // What the host's own command line does not do as written comes first.
    let mut warnings = base.notes.clone();
    let port_type = port_types(t);
    let before_ctx = contexts(t, &port_type, base);
    let after_ctx = contexts(t, &port_type, &platform);
    let boot = Boot { base, before_ctx: &before_ctx, after_ctx: &after_ctx, after_v: &after_v };
    for c in changes {
        warnings.extend(warnings_for(c, t, &verdicts, &boot));
    }
    WhatIf { params: changes.iter().map(Change::kernel_param).collect(), today, after, changed, verdicts, warnings }
}

/// What the warnings need to know about the boot before and after the change.
struct Boot<'a> {
    base: &'a Platform,
    before_ctx: &'a [Context],
    after_ctx: &'a [Context],
    after_v: &'a [AcsVerdict],
}

impl Boot<'_> {
    /// Control bits of device `i` whose firmware value the snapshot cannot show: it was read from a running
    /// kernel that had set them itself (its own enabling) or written them from a command-line entry.
    fn firmware_unknown(&self, i: usize, cap: u16) -> u16 {
        if !self.base.acs_control_from_running_kernel {
            return 0;
        }
        let c = &self.before_ctx[i];
        match c.config_acs {
            Some((mask, _)) => mask,
            None if c.redir_named => acs::RR | acs::CR | acs::EC,
            None => cap & REQUIRED,
        }
    }

    /// Where the prediction for device `i` rests on taking the register as read for the firmware's value:
    /// required bits the new entry keeps from the firmware that the snapshot cannot show.
    fn firmware_doubt(&self, t: &Topology, i: usize) -> Option<String> {
        let AcsState::Present(cap) = t.devices[i].acs else { return None };
        if !matches!(self.after_v[i], AcsVerdict::Flags { .. }) {
            return None;
        }
        let c = &self.after_ctx[i];
        let kept = match c.config_acs {
            Some((mask, _)) => !mask,
            None if c.redir_named => !(acs::RR | acs::CR | acs::EC),
            None => return None,
        };
        let doubt = kept & REQUIRED & cap.capability & self.firmware_unknown(i, cap.capability);
        (doubt != 0).then(|| {
            let set = doubt & cap.control;
            let it = if doubt.count_ones() == 1 { "it" } else { "them" };
            format!(
                "{}: the kernel keeps {} as the firmware left {it}, but this snapshot was read from a running \
                 kernel that had written {it} itself, so the firmware's setting is unknown; the prediction takes \
                 {it} as read ({})",
                t.devices[i].address,
                acs::names(doubt),
                if set == 0 { "clear".to_string() } else { format!("{} set", acs::names(set)) }
            )
        })
    }
}

fn warnings_for(c: &Change, t: &Topology, verdicts: &[VerdictChange], boot: &Boot) -> Vec<String> {
    let mut w = Vec::new();
    let names = |specs: &mut dyn Iterator<Item = &DeviceSpec>| -> Vec<String> {
        specs.filter(|s| !(0..t.devices.len()).any(|i| s.names_at(t, i))).map(spec_text).collect()
    };
    let named = |pick: &dyn Fn(&Context) -> bool| -> Vec<usize> {
        (0..t.devices.len()).filter(|&i| pick(&boot.after_ctx[i])).collect()
    };
    match c {
        Change::AcsOverride(_) => {
            let claimed: Vec<String> = verdicts
                .iter()
                .filter(|v| matches!(v.after, AcsVerdict::Override { .. }) && !v.before.enabled())
                .map(|v| v.device.to_string())
                .collect();
            w.push(
                "pcie_acs_override is not in mainline Linux: only patched kernels (linux-zen, Liquorix, Proxmox VE, \
                 some distribution kernels) accept it; others ignore it and keep today's groups."
                    .to_string(),
            );
            if claimed.is_empty() {
                w.push("Here it changes nothing: no function lacks an ACS capability in a way it covers.".to_string());
                return w;
            }
            w.push(format!(
                "It isolates nothing: the kernel only pretends that {} isolate{} by ACS. Devices it splits apart can \
                 still reach each other by peer-to-peer DMA that the IOMMU never sees, so a guest given one of them \
                 can read and write the other devices' memory-mapped registers and corrupt their DMA, and through \
                 them the host or another guest. Use it only where every device behind those ports is trusted by \
                 the same owner.",
                claimed.join(", "),
                if claimed.len() == 1 { "s" } else { "" }
            ));
        }
        Change::ConfigAcs { entries } => {
            w.push(
                "pci=config_acs= needs Linux 6.11 or later; older kernels ignore it. For each device the kernel \
                 applies the first entry that names it, starting from the firmware's control value: flags marked x \
                 keep what the firmware set, not what the kernel would have enabled."
                    .to_string(),
            );
            if !boot.base.config_acs.is_empty() {
                w.push(
                    "It replaces this host's own pci=config_acs=: the kernel reads only the last one on the command \
                     line."
                        .to_string(),
                );
            }
            for e in entries {
                if !e.valid() {
                    w.push(format!(
                        "`{}` changes bits beyond the seven ACS control flags (SV TB RR CR UF EC DT): the kernel \
                         rejects it (\"Invalid ACS flags specified\") and stops reading the list there, so it and \
                         the entries after it change nothing",
                        config_acs_text(e)
                    ));
                    break;
                }
            }
            for i in named(&|c| c.config_acs.is_some()) {
                let d = &t.devices[i];
                if d.acs == AcsState::Absent {
                    w.push(format!("{} has no ACS capability: config_acs cannot change it", d.address));
                } else if let AcsVerdict::Quirk { name, .. } = boot.after_v[i] {
                    if name.contains("SPT") {
                        w.push(format!(
                            "{} is an Intel SPT-style root port: for it the kernel only clears RR, CR and EC in the \
                             control dword at +8, whatever the entry's flags",
                            d.address
                        ));
                    }
                }
                w.extend(boot.firmware_doubt(t, i));
            }
            let unmatched = names(&mut entries.iter().map(|e| &e.device));
            if !unmatched.is_empty() {
                w.push(format!("no function here matches {}", unmatched.join(", ")));
            }
            let cleared: Vec<String> = verdicts
                .iter()
                .filter(|v| v.before.enabled() && !v.after.enabled())
                .map(|v| v.device.to_string())
                .collect();
            if !cleared.is_empty() {
                w.push(format!(
                    "Clearing ACS flags on {} lets peer-to-peer traffic below {} bypass the IOMMU: groups merge, \
                     which is the point (peer-to-peer performance), not a way to isolate devices.",
                    cleared.join(", "),
                    if cleared.len() == 1 { "it" } else { "them" }
                ));
            }
        }
        Change::DisableAcsRedir { devices } => {
            let unmatched = names(&mut devices.iter());
            if !unmatched.is_empty() {
                w.push(format!("no function here matches {}", unmatched.join(", ")));
            }
            if !boot.base.acs_redir_disabled.is_empty() {
                w.push(
                    "It replaces this host's own pci=disable_acs_redir=: the kernel reads only the last one on the \
                     command line."
                        .to_string(),
                );
            }
            w.push(
                "disable_acs_redir clears RR, CR and EC: peer-to-peer requests below those ports go straight to \
                 their target, unchecked by the IOMMU; groups merge accordingly. Linux 6.11 and later start from \
                 the firmware's control value, so SV and UF stay only if the firmware set them; older kernels clear \
                 the three after their own enabling."
                    .to_string(),
            );
            for i in named(&|c| c.redir_named && c.config_acs.is_none()) {
                w.extend(boot.firmware_doubt(t, i));
            }
        }
    }
    w
}

/// A root or downstream port, and what a device placed below it would get.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Slot {
    /// The port.
    pub port: PciAddress,
    /// Its (corrected) PCIe type.
    pub port_type: PortType,
    /// Functions on its secondary bus today.
    pub occupied_by: Vec<PciAddress>,
    /// A single-function endpoint below it would be alone in its group.
    pub isolates: bool,
    /// When not: the first function on the way to the root that is not ACS-isolated, and why.
    pub blocker: Option<(PciAddress, AcsVerdict)>,
    /// When not: the devices it would share a group with.
    pub shares_with: Vec<PciAddress>,
}

/// Every root port and downstream port, with whether a single-function endpoint plugged in below it
/// would get a group of its own. Computed by predicting with one such endpoint added below each port.
pub fn slots(t: &Topology, platform: &Platform) -> Vec<Slot> {
    let types = port_types(t);
    let ports: Vec<usize> = (0..t.devices.len())
        .filter(|&i| matches!(types[i], Some(PortType::RootPort | PortType::DownstreamPort)))
        .filter(|&i| !t.devices[i].is_virtfn)
        .collect();
    if ports.is_empty() {
        return Vec::new();
    }
    let probe = |k: usize| PciAddress { domain: 0xffff_0000 | k as u32, bus: 0, device: 0, function: 0 };
    let mut devices: Vec<Device> = t.devices.clone();
    for (k, &p) in ports.iter().enumerate() {
        devices.push(Device {
            address: probe(k),
            parent: Some(t.devices[p].address),
            vendor: 0xfffe,
            device: 0xfffe,
            subsystem: None,
            class: 0xff0000,
            header: iommu_pci::HeaderKind::Normal,
            multifunction: false,
            is_virtfn: false,
            pcie: Pcie::Yes(PortType::Endpoint),
            acs: iommu_pci::AcsState::Absent,
        });
    }
    let Ok(with) = Topology::new(devices) else { return Vec::new() };
    let pred = predict(&with, platform, RuleSet::Linux6);
    ports
        .iter()
        .enumerate()
        .map(|(k, &p)| {
            let port = t.devices[p].address;
            let a = probe(k);
            let members: Vec<PciAddress> = pred
                .group_of(a)
                .map(|g| g.devices.iter().copied().filter(|x| x.domain < 0xffff_0000).collect())
                .unwrap_or_default();
            let ev = pred.evidence_for(a);
            let blocker = ev.and_then(|e| e.hops.iter().find_map(|h| h.blocker));
            let isolated = members.is_empty() && ev.is_some_and(|e| e.join == Join::NewGroup);
            Slot {
                port,
                port_type: types[p].unwrap_or(PortType::RootPort),
                occupied_by: t
                    .devices
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.parent == Some(port))
                    .map(|(_, d)| d.address)
                    .collect(),
                isolates: isolated,
                blocker: if isolated { None } else { blocker },
                shares_with: members,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_acs_flags_read_right_to_left() {
        let c = ConfigAcs::parse("1x0@0000:00:02.0").unwrap();
        // SV (bit 0) cleared, TB (bit 1) kept, RR (bit 2) set.
        assert_eq!((c.mask, c.flags), (0b101, 0b100));
        assert!(c.valid());
        assert!(!ConfigAcs::parse("10000000@00:02.0").unwrap().valid(), "bit 7 is not an ACS control flag");
        assert!(ConfigAcs::parse("1x2@00:02.0").is_err());
        assert!(ConfigAcs::parse("101").is_err());
        assert!(ConfigAcs::parse("101@nonsense").is_err());
    }

    #[test]
    fn changes_print_back_as_the_kernel_parameters_they_came_from() {
        for (given, param) in [
            (
                "acs-override=downstream,multifunction,id:8086:a2ac",
                "pcie_acs_override=downstream,multifunction,id:8086:a2ac",
            ),
            (
                "pci=config_acs=1x0@0000:00:02.0;000x0@pci:1b36:000c",
                "pci=config_acs=1x0@0000:00:02.0;000x0@pci:1b36:000c",
            ),
            ("disable_acs_redir=0000:00:05.0", "pci=disable_acs_redir=0000:00:05.0"),
        ] {
            assert_eq!(Change::parse(given).unwrap().kernel_param(), param);
            assert_eq!(Change::parse(param).unwrap().kernel_param(), param, "round trip of {param}");
        }
        assert!(Change::parse("acs-override=").is_err());
        assert!(Change::parse("iommu=pt").is_err());
    }

    #[test]
    fn a_platform_reads_every_group_changing_parameter_from_the_command_line() {
        let mut p = Platform::default();
        p.apply_cmdline("quiet pci=noats,config_acs=000x0@0000:00:02.0 pcie_acs_override=downstream pci=disable_acs_redir=pci:8086:1234");
        assert_eq!(p.config_acs.len(), 1);
        assert!(p.acs_override.downstream && !p.acs_override.multifunction);
        assert_eq!(p.acs_redir_disabled.len(), 1);
    }
}
