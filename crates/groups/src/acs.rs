//! The kernel's "is ACS enabled on this function" test, answered with the reason.

use iommu_pci::{acs, AcsState, PciAddress, PortType};
use serde::Serialize;

use crate::model::{ConfigAcs, Device, Pcie, Platform, Topology};
use crate::quirks::{acs_quirks_for, AcsQuirkKind};

/// The flags grouping requires: SV, RR, CR, UF.
pub const REQUIRED: u16 = acs::REQUIRED_FOR_GROUPS;

/// The answer to "does this function isolate with ACS", and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum AcsVerdict {
    /// A quirk decided.
    Quirk {
        /// Quirk name.
        name: &'static str,
        /// Its answer.
        enabled: bool,
    },
    /// A quirk applies, but its answer depends on config space that was not read: counted as not
    /// isolated, and the prediction marks the device uncertain.
    QuirkUnknown {
        /// Quirk name.
        name: &'static str,
        /// What it needs that is missing.
        needs: &'static str,
    },
    /// Conventional PCI: never isolated.
    NotPcie,
    /// The config space needed to decide was not readable.
    Unknown,
    /// A bridge type that never counts as isolated (PCIe-to-PCI, PCI-to-PCIe, event collector).
    BridgeType {
        /// The type.
        port_type: PortType,
    },
    /// A single-function endpoint or upstream port: isolated without ACS.
    SingleFunction,
    /// A type the kernel does not test: counts as isolated.
    Untested,
    /// No ACS capability where one is needed.
    NoCapability,
    /// `pcie_acs_override=` (out-of-tree patch) claims isolation for a device without an ACS capability.
    Override {
        /// Which clause: `downstream`, `multifunction` or `id`.
        clause: &'static str,
    },
    /// The flag check ran on the ACS capability.
    Flags {
        /// Required flags the function implements (or EC), which must all be enabled.
        required: u16,
        /// The control register (after the kernel's own enabling at boot, when modelled).
        control: u16,
        /// Required flags not enabled.
        missing: u16,
    },
}

impl AcsVerdict {
    /// Whether the function counts as ACS-isolated. Unknown counts as not isolated.
    pub fn enabled(&self) -> bool {
        match *self {
            AcsVerdict::Quirk { enabled, .. } => enabled,
            AcsVerdict::SingleFunction | AcsVerdict::Untested | AcsVerdict::Override { .. } => true,
            AcsVerdict::Flags { missing, .. } => missing == 0,
            AcsVerdict::NotPcie
            | AcsVerdict::Unknown
            | AcsVerdict::QuirkUnknown { .. }
            | AcsVerdict::BridgeType { .. }
            | AcsVerdict::NoCapability => false,
        }
    }

    /// Whether the answer rests on config space that could not be read.
    pub fn is_unknown(&self) -> bool {
        matches!(self, AcsVerdict::Unknown | AcsVerdict::QuirkUnknown { .. })
    }

    /// A short sentence fragment, e.g. `ACS control lacks RR CR`.
    pub fn describe(&self) -> String {
        match *self {
            AcsVerdict::Quirk { name, enabled: true } => format!("isolated by the kernel's {name} ACS quirk"),
            AcsVerdict::Quirk { name, enabled: false } => {
                format!("not isolated: the kernel's {name} ACS quirk says so")
            }
            AcsVerdict::QuirkUnknown { name, needs } => {
                format!(
                    "unknown: the kernel's {name} ACS quirk depends on {needs}, which was not read (it needs the \
                     bytes as root: a snapshot, or lspci -xxx)"
                )
            }
            AcsVerdict::NotPcie => "conventional PCI, which has no ACS".into(),
            AcsVerdict::Unknown => "ACS unknown: extended config space not readable (run as root)".into(),
            AcsVerdict::BridgeType { port_type } => format!("a {} never isolates", port_type.describe()),
            AcsVerdict::SingleFunction => "single-function, needs no ACS".into(),
            AcsVerdict::Untested => "a type the kernel does not test for ACS".into(),
            AcsVerdict::NoCapability => "no ACS capability".into(),
            AcsVerdict::Override { clause } => {
                format!("no ACS capability, but pcie_acs_override={clause} claims isolation (not enforced)")
            }
            AcsVerdict::Flags { missing: 0, required, .. } => {
                format!("ACS enabled ({})", acs::names(required))
            }
            AcsVerdict::Flags { missing, control, .. } => {
                format!("ACS lacks {} (control has {})", acs::names(missing), acs::names(control))
            }
        }
    }
}

/// The ACS control register after boot, as pci.c's `pci_enable_acs` leaves it, from the register as read
/// (taken as the firmware's value). The kernel's own enabling sets the implemented SV RR CR UF when an
/// IOMMU asked for ACS. For a device the command line names, `__pci_config_acs` instead starts again
/// from the firmware's value: `disable_acs_redir` clears RR CR EC there, and a `config_acs` entry
/// (applied after it, from the same starting point) replaces its masked bits; either way the kernel's
/// own enabling is gone. With [`Platform::acs_control_as_read`] a register no parameter names is taken as
/// the kernel left it.
fn control_after_boot(cap: u16, firmware: u16, ctx: &Context, platform: &Platform) -> u16 {
    if let Some((mask, flags)) = ctx.config_acs {
        (firmware & !mask) | (flags & mask)
    } else if ctx.redir_named {
        firmware & !(acs::RR | acs::CR | acs::EC)
    } else if platform.acs_control_as_read {
        // What the kernel left, parameters included; only a parameter named here (a what-if) redoes it.
        firmware
    } else if platform.kernel_enables_acs {
        firmware | (cap & REQUIRED)
    } else {
        firmware
    }
}

/// The flag check (pci.c, `pci_acs_flags_enabled`): required flags the capability implements (or EC)
/// must be enabled in `control`.
fn flag_check(cap: u16, control: u16) -> AcsVerdict {
    let required = REQUIRED & (cap | acs::EC);
    AcsVerdict::Flags { required, control, missing: required & !control }
}

/// What the kernel knows about a function, besides its own config space, when it answers the ACS test.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Context {
    /// The PCIe type after the kernel's corrections (`None` when not PCIe).
    pub port_type: Option<PortType>,
    /// On a root bus.
    pub on_root_bus: bool,
    /// `multifunction` as the kernel's scan set it ([`scanned_multifunction`]).
    pub multifunction: bool,
    /// The RCBA enable bit of the function at 1f.0 on the same bus, as the Intel PCH quirk reads it:
    /// `None` when that function's config space was not read that far.
    pub lpc_rcba: Option<bool>,
    /// Named by the `pci=disable_acs_redir=` list.
    pub redir_named: bool,
    /// (mask, flags) of the `pci=config_acs=` entry that decides for it, if one is reached.
    pub config_acs: Option<(u16, u16)>,
}

/// The `pci=config_acs=` entry the kernel applies to device `i` (pci.c, `__pci_config_acs`): entries
/// are read in order; one with undefined bits stops the reading before its device is looked at; the
/// first that names the device applies.
pub(crate) fn config_acs_for(t: &Topology, i: usize, entries: &[ConfigAcs]) -> Option<(u16, u16)> {
    for e in entries {
        if !e.valid() {
            return None;
        }
        if e.device.names_at(t, i) {
            return Some((e.mask, e.flags));
        }
    }
    None
}

/// Each device's [`Context`], in address order. `port_type` is [`crate::predict::port_types`].
pub(crate) fn contexts(t: &Topology, port_type: &[Option<PortType>], platform: &Platform) -> Vec<Context> {
    (0..t.devices.len())
        .map(|i| {
            let a = t.devices[i].address;
            let lpc = PciAddress { device: 0x1f, function: 0, ..a };
            Context {
                port_type: port_type[i],
                on_root_bus: t.parent[i].is_none(),
                multifunction: scanned_multifunction(t, i, port_type),
                // Nothing at 1f.0: the config read returns all ones, RCBA enable included.
                lpc_rcba: if t.index_of(lpc).is_some() { platform.rcba_of(lpc) } else { Some(true) },
                redir_named: platform.acs_redir_disabled.iter().any(|s| s.names_at(t, i)),
                config_acs: config_acs_for(t, i, &platform.config_acs),
            }
        })
        .collect()
}

/// Runs the kernel's test for the function at `addr` in `t` (`None` when there is no such function).
pub fn acs_verdict(t: &Topology, addr: PciAddress, platform: &Platform) -> Option<AcsVerdict> {
    let i = t.index_of(addr)?;
    let ctx = contexts(t, &crate::predict::port_types(t), platform);
    Some(verdict(&t.devices[i], &ctx[i], platform))
}

/// The kernel's test for one function in its context.
pub(crate) fn verdict(dev: &Device, ctx: &Context, platform: &Platform) -> AcsVerdict {
    let port_type = ctx.port_type;
    for q in acs_quirks_for(dev.vendor, dev.device) {
        if let Some(v) = quirk_answer(q.kind, q.name, dev, ctx, platform) {
            return v;
        }
    }
    let pt = match dev.pcie {
        Pcie::Unknown => return AcsVerdict::Unknown,
        Pcie::No => return AcsVerdict::NotPcie,
        Pcie::Yes(_) => port_type.unwrap_or(PortType::Endpoint),
    };
    // The override patch adds itself as the last quirk: only PCIe devices without an ACS capability.
    if dev.acs == AcsState::Absent && !platform.acs_override.is_empty() {
        let o = &platform.acs_override;
        if o.ids.contains(&(dev.vendor, dev.device)) {
            return AcsVerdict::Override { clause: "id" };
        }
        match pt {
            PortType::RootPort | PortType::DownstreamPort if o.downstream => {
                return AcsVerdict::Override { clause: "downstream" }
            }
            PortType::Endpoint | PortType::UpstreamPort | PortType::LegacyEndpoint | PortType::RcIntegratedEndpoint
                if o.multifunction && ctx.multifunction =>
            {
                return AcsVerdict::Override { clause: "multifunction" }
            }
            _ => {}
        }
    }
    let check = || match dev.acs {
        AcsState::Unknown => AcsVerdict::Unknown,
        AcsState::Absent => AcsVerdict::NoCapability,
        AcsState::Present(c) => flag_check(c.capability, control_after_boot(c.capability, c.control, ctx, platform)),
    };
    match pt {
        PortType::PcieToPciBridge | PortType::PciToPcieBridge | PortType::RcEventCollector => {
            AcsVerdict::BridgeType { port_type: pt }
        }
        PortType::RootPort | PortType::DownstreamPort => check(),
        PortType::Endpoint | PortType::LegacyEndpoint | PortType::UpstreamPort | PortType::RcIntegratedEndpoint => {
            if ctx.multifunction {
                check()
            } else {
                AcsVerdict::SingleFunction
            }
        }
        PortType::Reserved(_) => AcsVerdict::Untested,
    }
}

/// Whether the kernel's slot scan marks the function multifunction (probe.c, `pci_scan_slot`): the
/// header's multifunction bit, or any function the scan of a slot reaches after the first one.
///
/// Without ARI the scan of a slot walks functions 0-7, so functions 1-7 count whatever their own header
/// says (QEMU, like much real hardware, sets the bit on function 0 only). With ARI the scan of slot 0
/// follows the ARI next-function chain across all 256 devfns, so every function but devfn 0 counts,
/// device numbers 1 and above included. ARI is inferred, not read: below a PCIe root port, switch
/// downstream port or PCI-to-PCIe bridge the kernel scans device 0 only (probe.c, `only_one_child`), so a
/// function at device 1 or above there can only have been reached through ARI. (`pci=pcie_scan_all`, or
/// a system the kernel's DMI table forces to scan all devices, would break that inference: not modelled.)
/// SR-IOV virtual functions are added by the SR-IOV code, not by the scan: never multifunction.
pub(crate) fn scanned_multifunction(t: &Topology, i: usize, port_type: &[Option<PortType>]) -> bool {
    let dev = &t.devices[i];
    if dev.is_virtfn {
        return false;
    }
    let devfn = dev.address.devfn();
    let reached_by_ari = devfn >= 8
        && t.parent[i].is_some_and(|p| {
            let p = p as usize;
            matches!(t.devices[p].pcie, Pcie::Yes(_))
                && matches!(
                    port_type[p],
                    Some(PortType::RootPort | PortType::DownstreamPort | PortType::PciToPcieBridge)
                )
        });
    dev.multifunction || devfn & 7 != 0 || reached_by_ari
}

fn quirk_answer(
    kind: AcsQuirkKind,
    name: &'static str,
    dev: &Device,
    ctx: &Context,
    platform: &Platform,
) -> Option<AcsVerdict> {
    let port_type = ctx.port_type;
    let yes = Some(AcsVerdict::Quirk { name, enabled: true });
    let no = Some(AcsVerdict::Quirk { name, enabled: false });
    let in_ranges = |r: &[(u16, u16)]| r.iter().any(|&(a, b)| (a..=b).contains(&dev.device));
    match kind {
        AcsQuirkKind::AmdSouthbridge => {
            if ctx.multifunction && ctx.on_root_bus && platform.amd_ivrs {
                yes
            } else {
                None
            }
        }
        AcsQuirkKind::MultifunctionEndpoint | AcsQuirkKind::Asserts => yes,
        AcsQuirkKind::RcIntegratedEndpoint => (port_type == Some(PortType::RcIntegratedEndpoint)).then_some(yes)?,
        // quirks.c, pci_quirk_intel_pch_acs_match: root ports only; the answer is the flag that
        // pci_quirk_enable_intel_pch_acs sets when ACS was requested and the LPC bridge's RCBA is enabled.
        AcsQuirkKind::IntelPch if port_type != Some(PortType::RootPort) => None,
        AcsQuirkKind::IntelPch if !platform.kernel_enables_acs => no,
        AcsQuirkKind::IntelPch => match ctx.lpc_rcba {
            Some(true) => yes,
            Some(false) => no,
            None => {
                Some(AcsVerdict::QuirkUnknown { name, needs: "the RCBA register of the LPC bridge at 1f.0 (0xF0)" })
            }
        },
        // quirks.c, pci_quirk_intel_spt_pch_acs_match: root ports only.
        AcsQuirkKind::IntelSpt if port_type != Some(PortType::RootPort) => None,
        // quirks.c: the SPT enable quirk sets SV RR CR UF in the control dword at +8 when ACS was
        // requested; a device named by disable_acs_redir or by any config_acs entry goes through the SPT
        // redirect-disable instead of __pci_config_acs's own arithmetic: RR CR EC cleared in that dword,
        // whatever the entry's flags.
        AcsQuirkKind::IntelSpt => match dev.acs {
            AcsState::Present(c) => {
                let mut control = c.dword8_low;
                if platform.kernel_enables_acs {
                    control |= c.capability & REQUIRED;
                }
                if ctx.redir_named || ctx.config_acs.is_some() {
                    control &= !(acs::RR | acs::CR | acs::EC);
                }
                let v = flag_check(c.capability, control);
                Some(match v {
                    AcsVerdict::Flags { missing, .. } => AcsVerdict::Quirk { name, enabled: missing == 0 },
                    other => other,
                })
            }
            AcsState::Unknown => Some(AcsVerdict::Unknown),
            AcsState::Absent => None,
        },
        AcsQuirkKind::RootPortMasks | AcsQuirkKind::RootPortAsserts => {
            (port_type == Some(PortType::RootPort)).then_some(yes)?
        }
        AcsQuirkKind::PortsListedOrNo(r) => match port_type {
            Some(PortType::RootPort | PortType::DownstreamPort) => {
                if in_ranges(r) {
                    yes
                } else {
                    no
                }
            }
            _ => None,
        },
        AcsQuirkKind::ListedOrNo(r) => {
            if in_ranges(r) {
                yes
            } else {
                no
            }
        }
    }
}
