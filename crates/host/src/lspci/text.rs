//! Decoding `lspci -v`/`-vv`/`-vvv` text (with or without `-nn`, `-D`, `-k`, `-q`) into the facts grouping
//! needs, and a config space synthesized from them so that [`iommu_pci::ConfigInfo::parse`] and the whole
//! prediction pipeline run unchanged.
//!
//! Only what the text says is written into the synthesized bytes. What it does not say is left out in a way
//! the decoder reads as *unknown*: a function whose capability list is not shown gets only the 64-byte
//! header (PCIe type and ACS unknown); a PCI Express function whose ACS registers are not shown gets 256
//! bytes (ACS unknown). Each such function is listed with the reason.

use iommu_pci::{acs, cap_id, ext_cap_id, PciIds, PortType};

/// What a function's text block says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Facts {
    /// Vendor and device IDs.
    pub ids: Option<(u16, u16)>,
    /// Several ID pairs share the printed name (no `-nn`): the IDs are not known.
    pub ids_ambiguous: bool,
    /// Class code without the programming interface (`base << 16 | sub << 8`).
    pub class: Option<u32>,
    /// Programming interface.
    pub prog_if: Option<u8>,
    /// Revision.
    pub revision: Option<u8>,
    /// `Subsystem: ... [ssss:dddd]`.
    pub subsystem: Option<(u16, u16)>,
    /// `Bus: primary=, secondary=, subordinate=`.
    pub bus: Option<(u8, u8, u8)>,
    /// `Status: Cap+` / `Cap-`.
    pub status_cap: Option<bool>,
    /// `Capabilities: <access denied>`.
    pub denied: bool,
    /// At least one `Capabilities: [..]` line.
    pub caps_listed: bool,
    /// At least one extended capability (offset 0x100 or above).
    pub ext_listed: bool,
    /// An extended capability list that lspci reports as broken or looped.
    pub ext_broken: bool,
    /// PCI Express capability: port type and the slot-implemented bit.
    pub pcie: Option<(PortType, bool)>,
    /// `Power Management`, `MSI:`, `MSI-X: ... Count=N`.
    pub pm: bool,
    /// MSI capability.
    pub msi: bool,
    /// MSI-X table size.
    pub msix: Option<u16>,
    /// ACS capability seen, with its capability and control registers when their lines were shown.
    pub acs: Option<(Option<u16>, Option<u16>)>,
    /// ARI capability.
    pub ari: bool,
    /// SR-IOV capability.
    pub sriov: Option<Sriov>,
    /// `Kernel driver in use:`.
    pub driver: Option<String>,
    /// `IOMMU group: N` (`-vv`) or `IOMMU group N` in the `Flags:` line (`-v`).
    pub group: Option<u32>,
    /// Detail lines were seen (any `-v` level).
    pub detail: bool,
    /// The block ended as lspci ends one (a blank line, or the `Kernel driver`/`Kernel modules` line).
    pub ended: bool,
}

/// SR-IOV capability fields as lspci prints them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Sriov {
    /// `IOVCtl: Enable+`.
    pub enabled: Option<bool>,
    /// `Initial VFs`.
    pub initial: Option<u16>,
    /// `Total VFs`.
    pub total: Option<u16>,
    /// `Number of VFs`.
    pub num: Option<u16>,
    /// `VF offset` (decimal).
    pub offset: Option<u16>,
    /// `stride` (decimal).
    pub stride: Option<u16>,
    /// `Device ID` (hex).
    pub device: Option<u16>,
}

/// Which capability the following indented lines belong to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Other,
    Acs,
    Sriov,
}

/// Parses exactly four hex digits.
fn hex4(s: &str) -> Option<u16> {
    (s.len() == 4 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u16::from_str_radix(s, 16).ok())?
}

fn hex2(s: &str) -> Option<u8> {
    (s.len() == 2 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u8::from_str_radix(s, 16).ok())?
}

/// The last `[vvvv:dddd]` in `s`, with the text before it.
fn last_id_pair(s: &str) -> Option<((u16, u16), &str)> {
    let mut end = s.len();
    while let Some(open) = s[..end].rfind('[') {
        let inner = s.get(open + 1..).and_then(|r| r.split_once(']')).map(|(i, _)| i);
        if let Some((v, d)) = inner.and_then(|i| i.split_once(':')) {
            if let (Some(v), Some(d)) = (hex4(v), hex4(d)) {
                return Some(((v, d), s[..open].trim_end()));
            }
        }
        end = open;
    }
    None
}

/// Strips a trailing ` (prog-if pp [Name])` / ` (prog-if pp)` and ` (rev rr)` from the address line's
/// device part, recording them.
fn strip_suffixes<'a>(mut s: &'a str, f: &mut Facts) -> &'a str {
    s = s.trim_end();
    if let Some(i) = s.rfind(" (prog-if ") {
        let tail = &s[i + " (prog-if ".len()..];
        if tail.ends_with(')') {
            f.prog_if = tail.get(..2).and_then(hex2);
            s = s[..i].trim_end();
        }
    }
    if let Some(i) = s.rfind(" (rev ") {
        let tail = &s[i + " (rev ".len()..];
        if let Some(r) = tail.strip_suffix(')') {
            f.revision = hex2(r);
            s = s[..i].trim_end();
        }
    }
    s
}

/// Decodes the address line's text after the address: `Class [cccc]: Vendor Device [vvvv:dddd] (rev rr)`,
/// `cccc: vvvv:dddd (rev rr)` (`-n`) or `Class: Vendor Device (rev rr)` (names only, looked up in `ids`).
pub(super) fn address_line(rest: &str, ids: Option<&PciIds>, f: &mut Facts) {
    let rest = rest.trim();
    let Some((class_part, dev_part)) = rest.split_once(": ") else { return };
    let class_part = class_part.trim();
    // `PCI bridge [0604]`, `0604` (-n), or a name.
    f.class = if let Some(c) = hex4(class_part) {
        Some(u32::from(c) << 8)
    } else if let Some(c) = class_part.strip_suffix(']').and_then(|s| s.rsplit_once('[')).and_then(|(_, c)| hex4(c)) {
        Some(u32::from(c) << 8)
    } else {
        ids.and_then(|ids| match ids.classes_for_name(class_part).as_slice() {
            [one] => Some(*one),
            _ => None,
        })
    };
    let dev = strip_suffixes(dev_part, f);
    if let Some((pair, _)) = last_id_pair(dev) {
        f.ids = Some(pair);
    } else if let Some((v, d)) = dev.split_once(':').and_then(|(v, d)| Some((hex4(v)?, hex4(d)?))) {
        f.ids = Some((v, d));
    } else if let Some(ids) = ids {
        match ids.ids_for_name(dev).as_slice() {
            [one] => f.ids = Some(*one),
            [] => {}
            _ => f.ids_ambiguous = true,
        }
    }
}

/// `Name+`/`Name-` flags of an `ACSCap:`/`ACSCtl:` line; `None` unless all seven are there.
fn acs_flags(s: &str) -> Option<u16> {
    const NAMES: [(&str, u16); 7] = [
        ("SrcValid", acs::SV),
        ("TransBlk", acs::TB),
        ("ReqRedir", acs::RR),
        ("CmpltRedir", acs::CR),
        ("UpstreamFwd", acs::UF),
        ("EgressCtrl", acs::EC),
        ("DirectTrans", acs::DT),
    ];
    let mut bits = 0;
    let mut seen = 0;
    for tok in s.split_ascii_whitespace() {
        let (name, on) = match tok.strip_suffix('+') {
            Some(n) => (n, true),
            None => match tok.strip_suffix('-') {
                Some(n) => (n, false),
                None => continue,
            },
        };
        if let Some(&(_, bit)) = NAMES.iter().find(|(n, _)| *n == name) {
            seen |= bit;
            if on {
                bits |= bit;
            }
        }
    }
    (seen == 0x7f).then_some(bits)
}

/// `Name: 123` inside a comma-separated line, as a decimal number.
fn field_dec(line: &str, name: &str) -> Option<u16> {
    line.split(',').find_map(|p| p.trim().strip_prefix(name)?.trim().parse().ok())
}

/// The PCIe type after `Express ` and an optional `(vN) `.
fn express_type(s: &str) -> Option<(PortType, bool)> {
    let s = s.trim_start();
    let s = match s.strip_prefix('(') {
        Some(r) => r.split_once(") ")?.1,
        None => s,
    };
    let slot = s.contains("(Slot+)");
    const TYPES: [(&str, PortType); 9] = [
        ("Legacy Endpoint", PortType::LegacyEndpoint),
        ("Endpoint", PortType::Endpoint),
        ("Root Port", PortType::RootPort),
        ("Upstream Port", PortType::UpstreamPort),
        ("Downstream Port", PortType::DownstreamPort),
        ("PCI-Express to PCI/PCI-X Bridge", PortType::PcieToPciBridge),
        ("PCI/PCI-X to PCI-Express Bridge", PortType::PciToPcieBridge),
        ("Root Complex Integrated Endpoint", PortType::RcIntegratedEndpoint),
        ("Root Complex Event Collector", PortType::RcEventCollector),
    ];
    if let Some(&(_, t)) = TYPES.iter().find(|(name, _)| s.starts_with(name)) {
        return Some((t, slot));
    }
    let n: u8 = s.strip_prefix("Unknown type ")?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    Some((PortType::from_raw(n), slot))
}

/// Decodes one `Capabilities: ...` line (text after `Capabilities:`); returns the section that follows.
fn capability(rest: &str, f: &mut Facts) -> Section {
    let rest = rest.trim();
    if rest.starts_with("<access denied>") {
        f.denied = true;
        return Section::Other;
    }
    let Some((head, name)) = rest.strip_prefix('[').and_then(|r| r.split_once(']')) else { return Section::Other };
    let offset = head.split_whitespace().next().and_then(|o| u16::from_str_radix(o, 16).ok());
    let Some(offset) = offset else { return Section::Other };
    f.caps_listed = true;
    let name = name.trim();
    if offset >= 0x100 || head.contains(" v") {
        f.ext_listed = true;
        if name.starts_with("<chain broken>") || name.starts_with("<chain looped>") {
            f.ext_broken = true;
        } else if name.starts_with("Access Control Services") {
            f.acs.get_or_insert((None, None));
            return Section::Acs;
        } else if name.starts_with("Alternative Routing-ID Interpretation") {
            f.ari = true;
        } else if name.starts_with("Single Root I/O Virtualization") {
            f.sriov.get_or_insert_with(Sriov::default);
            return Section::Sriov;
        }
        return Section::Other;
    }
    if let Some(t) = name.strip_prefix("Express ") {
        if f.pcie.is_none() {
            f.pcie = express_type(t);
        }
    } else if name.starts_with("Power Management") {
        f.pm = true;
    } else if name.starts_with("MSI-X:") {
        f.msix = name.split_once("Count=").and_then(|(_, c)| c.split_whitespace().next()?.parse().ok());
    } else if name.starts_with("MSI:") {
        f.msi = true;
    }
    Section::Other
}

/// Decodes the detail lines of one function.
pub(super) fn detail_lines<'a>(lines: impl IntoIterator<Item = &'a str>, f: &mut Facts) {
    let mut section = Section::Other;
    let mut last_nonblank = "";
    for raw in lines {
        let line = raw.trim();
        if line.is_empty() {
            if f.detail {
                f.ended = true;
            }
            continue;
        }
        f.detail = true;
        last_nonblank = line;
        if let Some(rest) = line.strip_prefix("Capabilities:") {
            section = capability(rest, f);
            continue;
        }
        if let Some(rest) = line.strip_prefix("ACSCap:") {
            if section == Section::Acs {
                if let Some(a) = f.acs.as_mut() {
                    a.0 = acs_flags(rest);
                }
            }
        } else if let Some(rest) = line.strip_prefix("ACSCtl:") {
            if section == Section::Acs {
                if let Some(a) = f.acs.as_mut() {
                    a.1 = acs_flags(rest);
                }
            }
        } else if section == Section::Sriov && line.starts_with("IOVCtl:") {
            if let Some(s) = f.sriov.as_mut() {
                s.enabled = if line.contains("Enable+") {
                    Some(true)
                } else if line.contains("Enable-") {
                    Some(false)
                } else {
                    None
                };
            }
        } else if section == Section::Sriov && line.starts_with("Initial VFs:") {
            if let Some(s) = f.sriov.as_mut() {
                s.initial = field_dec(line, "Initial VFs:");
                s.total = field_dec(line, "Total VFs:");
                s.num = field_dec(line, "Number of VFs:");
            }
        } else if section == Section::Sriov && line.starts_with("VF offset:") {
            if let Some(s) = f.sriov.as_mut() {
                s.offset = field_dec(line, "VF offset:");
                s.stride = field_dec(line, "stride:");
                s.device = line.split(',').find_map(|p| hex4(p.trim().strip_prefix("Device ID:")?.trim()));
            }
        } else if let Some(rest) = line.strip_prefix("Subsystem:") {
            if f.subsystem.is_none() {
                f.subsystem = last_id_pair(rest).map(|(p, _)| p);
            }
        } else if let Some(rest) = line.strip_prefix("Status: Cap") {
            f.status_cap = match rest.as_bytes().first() {
                Some(b'+') => Some(true),
                Some(b'-') => Some(false),
                _ => f.status_cap,
            };
        } else if let Some(rest) = line.strip_prefix("Bus: primary=") {
            f.bus = bus_numbers(rest);
        } else if let Some(rest) = line.strip_prefix("IOMMU group:") {
            f.group = rest.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix("Flags:") {
            // `-v`: `Flags: bus master, fast devsel, latency 0, IRQ 16, IOMMU group 7`.
            if let Some(g) = rest.split(',').find_map(|p| p.trim().strip_prefix("IOMMU group ")?.trim().parse().ok()) {
                f.group = Some(g);
            }
        } else if let Some(rest) = line.strip_prefix("Kernel driver in use:") {
            let d = rest.trim();
            if !d.is_empty() {
                f.driver = Some(d.chars().take(64).collect());
            }
        }
    }
    if last_nonblank.starts_with("Kernel driver in use:") || last_nonblank.starts_with("Kernel modules:") {
        f.ended = true;
    }
}

/// `00, secondary=01, subordinate=01, sec-latency=0` after `Bus: primary=`.
fn bus_numbers(rest: &str) -> Option<(u8, u8, u8)> {
    let mut it = rest.split(',').map(str::trim);
    let p = hex2(it.next()?)?;
    let s = hex2(it.next()?.strip_prefix("secondary=")?)?;
    let o = hex2(it.next()?.strip_prefix("subordinate=")?)?;
    Some((p, s, o))
}

/// Whether the text shows the extended capability list to be complete for this machine, so that a missing
/// ACS capability means absent rather than unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Context {
    /// Some function in the paste shows extended capabilities: extended config space was readable.
    pub extended_readable: bool,
    /// Another function of the same slot is in the paste (function 0's multifunction bit).
    pub siblings: bool,
}

/// A config space built from the facts, and why parts of it are unknown.
pub(super) struct Synthesized {
    /// The bytes: 64 (capabilities unknown), 256 (ACS unknown) or 4096.
    pub config: Vec<u8>,
    /// Why facts that grouping depends on are missing, one phrase each.
    pub unknown: Vec<&'static str>,
}

fn put16(c: &mut [u8], at: usize, v: u16) {
    c[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

/// Builds config space from what the text says (see the module documentation for what is left unknown).
pub(super) fn synthesize(f: &Facts, ctx: Context) -> Synthesized {
    let mut unknown = Vec::new();
    let mut c = vec![0u8; 4096];
    let (vendor, device) = f.ids.unwrap_or_else(|| {
        unknown.push(if f.ids_ambiguous {
            "vendor and device IDs unknown: several pci.ids entries share the printed name (use lspci -nn)"
        } else {
            "vendor and device IDs unknown (use lspci -nn)"
        });
        (0, 0)
    });
    put16(&mut c, 0, vendor);
    put16(&mut c, 2, device);
    c[8] = f.revision.unwrap_or(0);
    let class = f.class.unwrap_or(0) | u32::from(f.prog_if.unwrap_or(0));
    c[9] = class as u8;
    c[10] = (class >> 8) as u8;
    c[11] = (class >> 16) as u8;
    if f.class.is_none() {
        unknown.push("class unknown");
    }
    let bridge_class = matches!(f.class.map(|k| k >> 8), Some(0x0604 | 0x0609 | 0x0607));
    let header = match (f.bus, f.class.map(|k| k >> 8)) {
        (Some(_), Some(0x0607)) => 2,
        (Some(_), _) => 1,
        (None, _) if bridge_class => {
            unknown.push("a bridge without its `Bus:` line: the buses below it are unknown");
            1
        }
        (None, _) => 0,
    };
    c[0x0e] = header | if ctx.siblings { 0x80 } else { 0 };
    if let Some((p, s, o)) = f.bus {
        c[0x18] = p;
        c[0x19] = s;
        c[0x1a] = o;
    }
    if header == 0 {
        if let Some((sv, sd)) = f.subsystem {
            put16(&mut c, 0x2c, sv);
            put16(&mut c, 0x2e, sd);
        }
    }
    // Is the capability list known? Shown, or known to be empty.
    let caps_known = !f.denied && (f.caps_listed || f.status_cap == Some(false) || (f.detail && f.ended));
    if !caps_known {
        if f.denied {
            unknown.push("capabilities not readable (`<access denied>`: lspci was not run as root)");
        } else if !f.detail {
            unknown.push("no detail lines (lspci without -v, or cut from the paste)");
        } else {
            unknown.push("capability list cut from the paste");
        }
        // Capabilities exist but were not seen: the decoder reads PCIe type and ACS as unknown.
        put16(&mut c, 6, 0x10);
        c.truncate(64);
        return Synthesized { config: c, unknown };
    }
    // Standard capabilities, chained from 0x40.
    let mut std_caps: Vec<(u8, usize)> = Vec::new();
    if let Some((t, slot)) = f.pcie {
        std_caps.push((cap_id::PCIE, 0x40));
        let raw = u16::from(t.raw());
        put16(&mut c, 0x42, 2 | raw << 4 | if slot { 0x100 } else { 0 });
    }
    if f.pm {
        std_caps.push((cap_id::PM, 0x50));
    }
    if f.msi {
        std_caps.push((cap_id::MSI, 0x60));
    }
    if let Some(n) = f.msix {
        std_caps.push((cap_id::MSIX, 0x70));
        put16(&mut c, 0x72, n.saturating_sub(1) & 0x7ff);
    }
    if !std_caps.is_empty() {
        put16(&mut c, 6, 0x10);
        let ptr = if header == 2 { 0x14 } else { 0x34 };
        c[ptr] = std_caps[0].1 as u8;
        for (i, &(id, at)) in std_caps.iter().enumerate() {
            c[at] = id;
            c[at + 1] = std_caps.get(i + 1).map_or(0, |n| n.1 as u8);
        }
    }
    if f.pcie.is_none() {
        // Conventional PCI (as far as the shown list goes): no extended space, no ACS.
        c.truncate(256);
        return Synthesized { config: c, unknown };
    }
    let acs_known = match f.acs {
        Some((Some(_), Some(_))) => true,
        Some(_) => {
            unknown.push("ACS capability present but its registers not shown (use lspci -vv as root)");
            false
        }
        None if f.ext_broken => {
            unknown.push("extended capability list broken");
            false
        }
        None if !ctx.extended_readable => {
            unknown.push(
                "no extended capabilities anywhere in the paste: extended config space may not have been readable",
            );
            false
        }
        None if !f.ended => {
            unknown.push("capability list cut from the paste");
            false
        }
        None => true,
    };
    if !acs_known {
        c.truncate(256);
        return Synthesized { config: c, unknown };
    }
    // Extended capabilities from 0x100, in this order: ACS (16 bytes; the dword at +8 is unknown and left 0),
    // ARI (16), SR-IOV (64).
    let mut ext: Vec<(u16, usize)> = Vec::new();
    let mut at = 0x100;
    if let Some((Some(cap), Some(ctl))) = f.acs {
        ext.push((ext_cap_id::ACS, at));
        put16(&mut c, at + 4, cap);
        put16(&mut c, at + 6, ctl);
        at += 0x10;
    }
    if f.ari {
        ext.push((ext_cap_id::ARI, at));
        at += 0x10;
    }
    if let Some(s) = f.sriov {
        ext.push((ext_cap_id::SRIOV, at));
        c[at + 8] = u8::from(s.enabled == Some(true));
        put16(&mut c, at + 0x0c, s.initial.unwrap_or(0));
        put16(&mut c, at + 0x0e, s.total.unwrap_or(0));
        put16(&mut c, at + 0x10, s.num.unwrap_or(0));
        put16(&mut c, at + 0x14, s.offset.unwrap_or(0));
        put16(&mut c, at + 0x16, s.stride.unwrap_or(0));
        put16(&mut c, at + 0x1a, s.device.unwrap_or(0));
        if s.enabled.is_none() || s.num.is_none() || s.offset.is_none() || s.stride.is_none() {
            unknown.push("SR-IOV capability shown without its VF fields: virtual functions cannot be matched to it");
        }
    }
    for (i, &(id, at)) in ext.iter().enumerate() {
        let next = ext.get(i + 1).map_or(0, |n| n.1 as u32);
        let header = u32::from(id) | 1 << 16 | next << 20;
        c[at..at + 4].copy_from_slice(&header.to_le_bytes());
    }
    Synthesized { config: c, unknown }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu_pci::{AcsState, ConfigInfo, HeaderKind};

    fn facts(addr_rest: &str, lines: &str) -> Facts {
        let mut f = Facts::default();
        address_line(addr_rest, None, &mut f);
        detail_lines(lines.lines(), &mut f);
        f
    }

    const CTX: Context = Context { extended_readable: true, siblings: false };

    #[test]
    fn an_nn_address_line_gives_class_ids_revision_and_prog_if() {
        let f = facts(
            "PCI bridge [0604]: Advanced Micro Devices, Inc. [AMD] Family 17h-19h PCIe GPP Bridge [1022:14ba] (rev 02) (prog-if 00 [Normal decode])",
            "",
        );
        assert_eq!((f.ids, f.class, f.revision, f.prog_if), (Some((0x1022, 0x14ba)), Some(0x060400), Some(2), Some(0)));
    }

    #[test]
    fn a_numeric_address_line_gives_class_and_ids() {
        let f = facts("0c03: 8086:a0ed (rev 20) (prog-if 30)", "");
        assert_eq!(
            (f.ids, f.class, f.revision, f.prog_if),
            (Some((0x8086, 0xa0ed)), Some(0x0c0300), Some(0x20), Some(0x30))
        );
    }

    #[test]
    fn names_without_ids_are_looked_up_and_ambiguity_is_kept() {
        let ids = PciIds::parse(
            "1022  Advanced Micro Devices, Inc. [AMD]\n\t14ba  Family 17h-19h PCIe GPP Bridge\n\t14bb  Twin\n\t14bc  Twin\n\
             C 06  Bridge\n\t04  PCI bridge\n",
        );
        let mut f = Facts::default();
        address_line(
            "PCI bridge: Advanced Micro Devices, Inc. [AMD] Family 17h-19h PCIe GPP Bridge (rev 02)",
            Some(&ids),
            &mut f,
        );
        assert_eq!((f.ids, f.class, f.revision), (Some((0x1022, 0x14ba)), Some(0x060400), Some(2)));
        let mut f = Facts::default();
        address_line("PCI bridge: Advanced Micro Devices, Inc. [AMD] Twin", Some(&ids), &mut f);
        assert_eq!((f.ids, f.ids_ambiguous), (None, true));
        assert!(synthesize(&f, CTX).unknown[0].contains("several pci.ids entries"));
    }

    #[test]
    fn a_root_port_with_acs_synthesizes_what_the_decoder_reads_back() {
        let f = facts(
            "PCI bridge [0604]: Intel Corporation Device [8086:7ab8] (rev 11) (prog-if 00 [Normal decode])",
            "\tStatus: Cap+ 66MHz-\n\tIOMMU group: 7\n\tBus: primary=00, secondary=02, subordinate=02, sec-latency=0\n\
             \tCapabilities: [40] Express (v2) Root Port (Slot+), IntMsgNum 0\n\
             \tCapabilities: [220 v1] Access Control Services\n\
             \t\tACSCap:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-\n\
             \t\tACSCtl:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-\n\
             \tKernel driver in use: pcieport\n",
        );
        assert_eq!((f.group, f.driver.as_deref(), f.bus), (Some(7), Some("pcieport"), Some((0, 2, 2))));
        let s = synthesize(&f, CTX);
        assert!(s.unknown.is_empty(), "{:?}", s.unknown);
        let info = ConfigInfo::parse(&s.config).unwrap();
        assert_eq!(info.header, HeaderKind::Bridge);
        assert_eq!(info.bus_numbers, Some((0, 2, 2)));
        let p = info.pcie.unwrap();
        assert_eq!((p.port_type, p.slot_implemented), (PortType::RootPort, true));
        let AcsState::Present(a) = info.acs else { panic!("{:?}", info.acs) };
        assert_eq!((a.capability, a.control), (0x1d, 0x1d));
    }

    #[test]
    fn old_spelling_and_every_port_type_decode() {
        for (text, t) in [
            ("Express (v2) Endpoint, MSI 00", PortType::Endpoint),
            ("Express Legacy Endpoint, MSI 00", PortType::LegacyEndpoint),
            ("Express (v2) Upstream Port, MSI 00", PortType::UpstreamPort),
            ("Express (v2) Downstream Port (Slot-), MSI 00", PortType::DownstreamPort),
            ("Express (v1) PCI-Express to PCI/PCI-X Bridge, MSI 00", PortType::PcieToPciBridge),
            ("Express (v2) Root Complex Integrated Endpoint, IntMsgNum 0", PortType::RcIntegratedEndpoint),
            ("Express (v2) Root Complex Event Collector, MSI 00", PortType::RcEventCollector),
        ] {
            let f = facts("0000: 1234:5678", &format!("\tCapabilities: [40] {text}\n"));
            assert_eq!(f.pcie.map(|p| p.0), Some(t), "{text}");
        }
    }

    #[test]
    fn access_denied_leaves_a_header_only_config_with_acs_unknown() {
        let f = facts(
            "0604: 8086:a110",
            "\tBus: primary=00, secondary=01, subordinate=01, sec-latency=0\n\tCapabilities: <access denied>\n\n",
        );
        let s = synthesize(&f, CTX);
        assert_eq!(s.config.len(), 64);
        assert!(s.unknown[0].contains("access denied"));
        let info = ConfigInfo::parse(&s.config).unwrap();
        assert_eq!((info.acs, info.is_pcie()), (AcsState::Unknown, None));
        assert_eq!(info.bus_numbers, Some((0, 1, 1)));
    }

    #[test]
    fn acs_without_its_registers_is_unknown_not_absent() {
        let f = facts(
            "0604: 8086:a110",
            "\tCapabilities: [40] Express Root Port (Slot+), MSI 00\n\tCapabilities: [140] Access Control Services\n\n",
        );
        let s = synthesize(&f, CTX);
        assert_eq!(ConfigInfo::parse(&s.config).unwrap().acs, AcsState::Unknown);
        assert!(s.unknown.iter().any(|u| u.contains("registers not shown")), "{:?}", s.unknown);
    }

    #[test]
    fn a_complete_block_without_acs_is_absent_but_a_cut_one_is_unknown() {
        let lines = "\tBus: primary=00, secondary=01, subordinate=01, sec-latency=0\n\tCapabilities: [40] Express Root Port (Slot+), MSI 00\n\tCapabilities: [100 v1] Advanced Error Reporting\n";
        let whole = facts("0604: 8086:1234", &format!("{lines}\n"));
        assert_eq!(ConfigInfo::parse(&synthesize(&whole, CTX).config).unwrap().acs, AcsState::Absent);
        let cut = facts("0604: 8086:1234", lines);
        assert_eq!(ConfigInfo::parse(&synthesize(&cut, CTX).config).unwrap().acs, AcsState::Unknown);
        let nowhere = Context { extended_readable: false, siblings: false };
        assert_eq!(ConfigInfo::parse(&synthesize(&whole, nowhere).config).unwrap().acs, AcsState::Unknown);
    }

    #[test]
    fn sriov_fields_land_where_the_decoder_reads_them() {
        let f = facts(
            "0200: 8086:1521 (rev 01)",
            "\tCapabilities: [40] Express (v2) Endpoint, MSI 00\n\
             \tCapabilities: [150 v1] Alternative Routing-ID Interpretation (ARI)\n\
             \tCapabilities: [160 v1] Single Root I/O Virtualization (SR-IOV)\n\
             \t\tIOVCap:\tMigration- 10BitTagReq- Interrupt Message Number: 000\n\
             \t\tIOVCtl:\tEnable+ Migration- Interrupt- MSE+ ARIHierarchy+ 10BitTagReq-\n\
             \t\tInitial VFs: 8, Total VFs: 8, Number of VFs: 2, Function Dependency Link: 00\n\
             \t\tVF offset: 128, stride: 4, Device ID: 1520\n\n",
        );
        let s = synthesize(&f, Context { extended_readable: true, siblings: true });
        let info = ConfigInfo::parse(&s.config).unwrap();
        assert!(info.ari && info.multifunction);
        let v = info.sriov.unwrap();
        assert_eq!((v.total_vfs, v.num_vfs, v.first_vf_offset, v.vf_stride, v.vf_device_id), (8, 2, 128, 4, 0x1520));
        assert_eq!(s.config[usize::from(v.offset) + 8] & 1, 1);
        assert_eq!(info.acs, AcsState::Absent);
    }

    #[test]
    fn the_v_flags_line_carries_the_group() {
        let f = facts("0300: 10de:1c82", "\tFlags: bus master, fast devsel, latency 0, IRQ 130, IOMMU group 12\n");
        assert_eq!(f.group, Some(12));
    }

    #[test]
    fn a_conventional_function_without_capabilities_has_acs_absent() {
        let f = facts("0c05: 1022:790b (rev 71)", "\tStatus: Cap- 66MHz+\n\tIOMMU group: 8\n");
        let info = ConfigInfo::parse(&synthesize(&f, CTX).config).unwrap();
        assert_eq!((info.acs, info.is_pcie()), (AcsState::Absent, Some(false)));
    }

    #[test]
    fn odd_lines_never_panic() {
        for l in [
            "Capabilities: [",
            "Capabilities: [zz] x",
            "Capabilities: []",
            "Bus: primary=",
            "Bus: primary=0g, secondary=1",
            "ACSCap:",
            "VF offset: , stride: , Device ID: 1",
            "Flags: IOMMU group x",
            "Express (",
            "Capabilities: [40] Express (v2",
            "Capabilities: [40] Express Unknown type 99",
            "Subsystem: [",
            "Status: Cap",
        ] {
            let f = facts("x: y", l);
            let _ = synthesize(&f, CTX);
        }
        for a in ["", ":", "[", "PCI bridge [06", ": [1:2]", "a: b (rev ", "a: b (prog-if )", "a: ] [", "é: ü [ééé:ü]"]
        {
            let _ = facts(a, "");
        }
    }
}
