//! `iommuctl diff A B`: what changed between two hosts, and why.
//!
//! A and B are snapshot files (`iommuctl snapshot`), lspci dumps (`lspci -xxxx`; a file whose first
//! non-blank character is `{` is read as a snapshot, anything else as a dump), `-` for standard input (one
//! side at most), or `live` for the host below `--root` (default `/`). A file literally named `live` is
//! `./live`.
//!
//! What is compared:
//! - **outside PCI**: kernel release, command line (parameter by parameter), firmware (DMI BIOS vendor,
//!   version and date, system and board), IOMMU units and ACPI tables;
//! - **devices**, matched by address and vendor:device ID; a function that is gone from one address and
//!   present at another is *moved*: the same place in the tree under a new bus number (renumbered by the
//!   firmware), or the same IDs, unique on both sides, elsewhere; what remains is *added* or *removed*;
//!   drivers that changed;
//! - **groups**: the kernels' own groups when both sides have them, else the groups iommuctl predicts
//!   for both (an lspci dump has no kernel groups). Groups are linked through the devices they share; a
//!   group whose devices went to several groups *split*, several that went to one *merged*, one that kept
//!   its devices under another number was *renumbered*;
//! - **ACS**: every function whose ACS registers or whose kernel verdict (`iommu_groups::acs_verdict`)
//!   changed.
//!
//! Every group change carries its causes as data and as a sentence, found from the predictor's evidence
//! on both sides (`iommu_groups::predict`): the functions whose ACS test decided the members (the hops of
//! the upstream climb, their blockers, multifunction siblings, aliases) and whose verdict changed, with the
//! bits and whether the register, a command-line parameter, a quirk or the platform changed it; devices
//! added or removed; probe order for renumbering. Where the evidence shows none of these, the differences
//! outside PCI (kernel, command line, firmware) are the causes left, and the report says so.
//!
//! Exit 0 when nothing differs, 1 when something does. Config bytes outside ACS (command register, MSI
//! state) change at every boot: they are counted, not treated as a difference.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use anyhow::Context;
use iommu_groups::{acs_verdicts, predict, AcsVerdict, Join, Platform, Prediction, RuleSet, Topology, REQUIRED};
use iommu_host::{Detail, LspciDump, Snapshot};
use iommu_pci::{acs, AcsState, PciAddress};
use serde::Serialize;

use crate::config::Origin;
use crate::exit::{fail, Exit};
use crate::output::{sanitize, warn, Outcome};
use crate::source::Source;

// --- loading ----------------------------------------------------------------------------------------------

/// One side of the comparison, loaded and predicted.
struct Host {
    snap: Snapshot,
    topo: Topology,
    pred: Prediction,
    platform: Platform,
    verdicts: BTreeMap<PciAddress, AcsVerdict>,
}

/// Where a side came from.
#[derive(Serialize)]
pub struct SideInfo {
    /// The operand as given.
    source: String,
    /// `snapshot`, `lspci dump` or `live host`.
    kind: &'static str,
    /// `uname -r`, when known.
    kernel: Option<String>,
}

fn load_side(origin: &Origin, operand: &Path, label: &str) -> anyhow::Result<(Snapshot, &'static str)> {
    if operand == Path::new("live") {
        let root = origin.live_root().unwrap_or(Path::new("/")).to_path_buf();
        let src = Source::load(&Origin::Live { root }, Detail::Full)?;
        return Ok((src.snapshot, "live host"));
    }
    let bytes = iommu_fsio::read_input(operand, iommu_fsio::Limit::INPUT)
        .map_err(|e| fail(Exit::BadInput, format!("{label}: {}", sanitize(&e.to_string()))))?;
    let shown = operand.display().to_string();
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        let snap = Snapshot::from_json_slice(&bytes).with_context(|| format!("{label}: snapshot {shown}"))?;
        Ok((snap, "snapshot"))
    } else {
        let dump = LspciDump::parse_bytes(&bytes).with_context(|| format!("{label}: lspci dump {shown}"))?;
        for w in dump.warnings() {
            warn(&format!("warning: {label}: {}", sanitize(&w)));
        }
        for n in dump.inferences() {
            warn(&format!("note: {label}: {}", sanitize(&n)));
        }
        Ok((dump.snapshot, "lspci dump"))
    }
}

impl Host {
    fn new(snap: Snapshot, label: &str) -> anyhow::Result<Host> {
        let (topo, bad) = snap.topology().with_context(|| format!("{label}: building the PCI tree"))?;
        for (a, e) in bad {
            warn(&format!("warning: {label}: config space of {a} does not decode ({e}); treated as unknown"));
        }
        let platform = snap.platform();
        let pred = predict(&topo, &platform, RuleSet::Linux6);
        if !pred.uncertain.is_empty() {
            let u: Vec<String> = pred.uncertain.iter().map(PciAddress::to_string).collect();
            warn(&format!(
                "warning: {label}: ACS or PCIe type of {} could not be read; the prediction may be wrong there",
                u.join(", ")
            ));
        }
        let verdicts =
            topo.devices().iter().map(|d| d.address).zip(acs_verdicts(&topo, &platform)).collect::<BTreeMap<_, _>>();
        Ok(Host { snap, topo, pred, platform, verdicts })
    }

    fn id(&self, a: PciAddress) -> Option<(u16, u16)> {
        self.topo.get(a).filter(|d| d.vendor != 0xffff).map(|d| (d.vendor, d.device))
    }

    /// Vendor, device, subsystem and class: what makes two functions the same model.
    fn ident(&self, a: PciAddress) -> Option<Ident> {
        self.topo.get(a).filter(|d| d.vendor != 0xffff).map(|d| (d.vendor, d.device, d.subsystem, d.class))
    }

    /// The function's place in the tree: its root-bus ancestor's address and the device.function steps
    /// down from it (the kernel's path notation, which bus renumbering does not change).
    fn place(&self, a: PciAddress) -> String {
        let mut steps = Vec::new();
        let mut cur = a;
        while let Some(p) = self.topo.parent_of(cur) {
            steps.push(format!("{:02x}.{}", cur.device, cur.function));
            cur = p.address;
        }
        steps.reverse();
        std::iter::once(cur.to_string()).chain(steps).collect::<Vec<_>>().join("/")
    }

    fn driver(&self, a: PciAddress) -> Option<&str> {
        self.snap.device(a).and_then(|d| d.driver.as_deref())
    }
}

/// Vendor, device, subsystem (vendor, device) and class of a function.
type Ident = (u16, u16, Option<(u16, u16)>, u32);

fn id_text(id: Option<(u16, u16)>) -> String {
    id.map_or("????:????".into(), |(v, d)| format!("{v:04x}:{d:04x}"))
}

fn set(v: &[PciAddress]) -> String {
    format!("{{{}}}", v.iter().map(PciAddress::to_string).collect::<Vec<_>>().join(" "))
}

fn flags(bits: u16) -> Vec<&'static str> {
    const ALL: [(u16, &str); 7] = [
        (acs::SV, "SV"),
        (acs::TB, "TB"),
        (acs::RR, "RR"),
        (acs::CR, "CR"),
        (acs::UF, "UF"),
        (acs::EC, "EC"),
        (acs::DT, "DT"),
    ];
    ALL.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect()
}

// --- the report -------------------------------------------------------------------------------------------

/// A difference outside PCI.
#[derive(Serialize)]
pub struct EnvChange {
    /// `kernel`, `cmdline`, `firmware.<attribute>`, `iommu_units`, `acpi_tables`.
    item: String,
    before: Option<String>,
    after: Option<String>,
    /// Command-line parameters B has and A lacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    added: Vec<String>,
    /// Command-line parameters A has and B lacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    removed: Vec<String>,
    sentence: String,
}

/// A function on one side only.
#[derive(Serialize)]
pub struct DeviceRef {
    address: PciAddress,
    id: String,
}

/// A function found at another address.
#[derive(Serialize)]
pub struct Moved {
    from: PciAddress,
    to: PciAddress,
    id: String,
    /// The same place in the tree (bus renumbering) rather than another slot.
    same_place: bool,
}

/// A function whose driver changed.
#[derive(Serialize)]
pub struct DriverChange {
    address: PciAddress,
    before: Option<String>,
    after: Option<String>,
}

/// ACS registers as read.
#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
enum Registers {
    Unknown,
    Absent,
    Present { capability: u16, control: u16 },
}

impl Registers {
    fn of(s: &AcsState) -> Self {
        match s {
            AcsState::Unknown => Registers::Unknown,
            AcsState::Absent => Registers::Absent,
            AcsState::Present(c) => Registers::Present { capability: c.capability, control: c.control },
        }
    }
}

/// A function whose ACS registers or verdict changed.
#[derive(Serialize)]
pub struct AcsChange {
    /// The function in A.
    device: PciAddress,
    /// The function in B, when it moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    now_at: Option<PciAddress>,
    registers_before: Registers,
    registers_after: Registers,
    verdict_before: AcsVerdict,
    verdict_after: AcsVerdict,
    isolated_before: bool,
    isolated_after: bool,
    /// ACS capability bits that went away / appeared.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    capability_lost: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    capability_gained: Vec<&'static str>,
    /// ACS control bits cleared / set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    control_cleared: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    control_set: Vec<&'static str>,
    /// Required flags (SV RR CR UF) the verdict found missing after, not before / before, not after.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    now_missing: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    no_longer_missing: Vec<&'static str>,
    /// What differs around the function besides its registers: command-line parameters that name it (the
    /// kernel writes ACS control from them at boot), quirks, platform.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    because: Vec<String>,
    sentence: String,
    /// The sentence in two parts, to compose causes: where, and what.
    #[serde(skip)]
    at: String,
    #[serde(skip)]
    detail: String,
}

/// One group as one side has it.
#[derive(Clone, Serialize)]
pub struct GroupRef {
    id: u32,
    devices: Vec<PciAddress>,
}

/// How a set of linked groups changed.
#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    /// One group's devices went to several.
    Split,
    /// Several groups' devices went to one.
    Merged,
    /// Several groups' devices went to several others.
    Regrouped,
    /// Same devices, another number.
    Renumbered,
    /// The same group, with devices added or removed.
    Members,
    /// A group of devices A does not have.
    Appeared,
    /// A group of devices B does not have.
    Disappeared,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Split => "split",
            Kind::Merged => "merged",
            Kind::Regrouped => "regrouped",
            Kind::Renumbered => "renumbered",
            Kind::Members => "members changed",
            Kind::Appeared => "appeared",
            Kind::Disappeared => "disappeared",
        }
    }
}

/// Why a group changed.
#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "cause")]
enum Cause {
    /// A function whose ACS test decides the group's members changed its verdict (see `acs`).
    Acs {
        device: PciAddress,
        /// Its part in the placement, as the evidence shows it (a bridge on the way up from a member, the
        /// bridge whose group a member joined, a multifunction sibling, the member itself).
        role: String,
        verdict_before: AcsVerdict,
        verdict_after: AcsVerdict,
        sentence: String,
    },
    /// A member or a bridge on the way up was added or removed.
    Device { device: PciAddress, change: &'static str, sentence: String },
    /// Group numbers follow probe order; earlier changes shift them.
    ProbeOrder { sentence: String },
    /// The evidence finds nothing in config space: what differs outside PCI is left.
    Outside { item: String, sentence: String },
    /// Nothing found.
    Unexplained { sentence: String },
}

impl Cause {
    fn sentence(&self) -> &str {
        match self {
            Cause::Acs { sentence, .. }
            | Cause::Device { sentence, .. }
            | Cause::ProbeOrder { sentence }
            | Cause::Outside { sentence, .. }
            | Cause::Unexplained { sentence } => sentence,
        }
    }
}

/// One change of the groups, with its causes.
#[derive(Serialize)]
pub struct GroupChange {
    kind: Kind,
    before: Vec<GroupRef>,
    after: Vec<GroupRef>,
    causes: Vec<Cause>,
}

/// Everything that differs between A and B.
#[derive(Serialize)]
pub struct DiffReport {
    a: SideInfo,
    b: SideInfo,
    /// Nothing differs.
    same: bool,
    environment: Vec<EnvChange>,
    devices_compared: usize,
    added: Vec<DeviceRef>,
    removed: Vec<DeviceRef>,
    moved: Vec<Moved>,
    drivers: Vec<DriverChange>,
    /// `kernel` (both sides' own groups) or `predicted` (iommuctl's prediction on both sides).
    groups_from: &'static str,
    groups_before: usize,
    groups_after: usize,
    groups: Vec<GroupChange>,
    acs: Vec<AcsChange>,
    /// Functions present on both sides whose config bytes differ outside ACS (not a difference).
    other_config_changes: Vec<PciAddress>,
    notes: Vec<String>,
}

// --- comparing --------------------------------------------------------------------------------------------

/// Device matching: A address -> B address.
struct Matching {
    a2b: BTreeMap<PciAddress, PciAddress>,
    b2a: BTreeMap<PciAddress, PciAddress>,
    moved: Vec<Moved>,
    added: Vec<PciAddress>,
    removed: Vec<PciAddress>,
}

fn match_devices(a: &Host, b: &Host) -> Matching {
    let mut a2b = BTreeMap::new();
    let a_addrs: Vec<PciAddress> = a.topo.devices().iter().map(|d| d.address).collect();
    let b_addrs: BTreeSet<PciAddress> = b.topo.devices().iter().map(|d| d.address).collect();
    for &x in &a_addrs {
        if b_addrs.contains(&x) && a.id(x) == b.id(x) {
            a2b.insert(x, x);
        }
    }
    let mut moved = Vec::new();
    let taken = |a2b: &BTreeMap<PciAddress, PciAddress>| a2b.values().copied().collect::<BTreeSet<_>>();
    // The same place in the tree with the same IDs: renumbered buses.
    let b_taken = taken(&a2b);
    let mut by_place: BTreeMap<String, PciAddress> = BTreeMap::new();
    for &y in b_addrs.iter().filter(|y| !b_taken.contains(y)) {
        by_place.insert(b.place(y), y);
    }
    let left: Vec<PciAddress> = a_addrs.iter().copied().filter(|x| !a2b.contains_key(x)).collect();
    for x in left {
        if let Some(&y) = by_place.get(&a.place(x)) {
            if a.ident(x).is_some() && a.ident(x) == b.ident(y) {
                a2b.insert(x, y);
                by_place.remove(&a.place(x));
                moved.push(Moved { from: x, to: y, id: id_text(a.id(x)), same_place: true });
            }
        }
    }
    // The same model, unique among what is left on both sides: moved to another slot.
    let b_taken = taken(&a2b);
    let left_a: Vec<PciAddress> = a_addrs.iter().copied().filter(|x| !a2b.contains_key(x)).collect();
    let left_b: Vec<PciAddress> = b_addrs.iter().copied().filter(|y| !b_taken.contains(y)).collect();
    for &x in &left_a {
        let Some(ix) = a.ident(x) else { continue };
        let in_a = left_a.iter().filter(|&&o| a.ident(o) == Some(ix)).count();
        let in_b: Vec<PciAddress> = left_b.iter().copied().filter(|&o| b.ident(o) == Some(ix)).collect();
        if in_a == 1 && in_b.len() == 1 {
            a2b.insert(x, in_b[0]);
            moved.push(Moved { from: x, to: in_b[0], id: id_text(a.id(x)), same_place: false });
        }
    }
    let b2a: BTreeMap<PciAddress, PciAddress> = a2b.iter().map(|(x, y)| (*y, *x)).collect();
    let removed = a_addrs.iter().copied().filter(|x| !a2b.contains_key(x)).collect();
    let added = b_addrs.iter().copied().filter(|y| !b2a.contains_key(y)).collect();
    Matching { a2b, b2a, moved, added, removed }
}

/// What differs outside PCI. Only what both sides know is compared: an lspci dump (`kernel_state`
/// false) knows no kernel, command line, firmware or IOMMU, and a fact missing on one side is unknown
/// there, not different.
fn environment(a: &Snapshot, b: &Snapshot, kernel_state: bool) -> Vec<EnvChange> {
    let mut out = Vec::new();
    if !kernel_state {
        return out;
    }
    let plain = |item: &str, before: Option<String>, after: Option<String>, sentence: String| EnvChange {
        item: item.to_string(),
        before,
        after,
        added: Vec::new(),
        removed: Vec::new(),
        sentence,
    };
    let (ra, rb) = (a.kernel.release.clone(), b.kernel.release.clone());
    if ra.is_some() && rb.is_some() && ra != rb {
        let s = format!(
            "the kernel differs: {} -> {}",
            ra.as_deref().unwrap_or("unknown"),
            rb.as_deref().unwrap_or("unknown")
        );
        out.push(plain("kernel", ra, rb, s));
    }
    let words = |s: &Snapshot| -> Vec<String> {
        s.kernel.cmdline.as_deref().unwrap_or("").split_whitespace().map(str::to_string).collect()
    };
    let (wa, wb) = (words(a), words(b));
    if a.kernel.cmdline != b.kernel.cmdline && (a.kernel.cmdline.is_some() && b.kernel.cmdline.is_some()) {
        let added: Vec<String> = wb.iter().filter(|w| !wa.contains(w)).cloned().collect();
        let removed: Vec<String> = wa.iter().filter(|w| !wb.contains(w)).cloned().collect();
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!("B adds {}", added.join(" ")));
        }
        if !removed.is_empty() {
            parts.push(format!("B drops {}", removed.join(" ")));
        }
        if parts.is_empty() {
            parts.push("the same parameters in another order or number".into());
        }
        let sentence = format!("the kernel command line differs: {}", parts.join("; "));
        out.push(EnvChange {
            item: "cmdline".into(),
            before: a.kernel.cmdline.clone(),
            after: b.kernel.cmdline.clone(),
            added,
            removed,
            sentence,
        });
    }
    if let (Some(fa), Some(fb)) = (&a.firmware, &b.firmware) {
        for ((name, va), (_, vb)) in fa.fields().into_iter().zip(fb.fields()) {
            if va != vb {
                let s =
                    format!("the firmware differs: {name} {} -> {}", va.unwrap_or("unknown"), vb.unwrap_or("unknown"));
                out.push(plain(&format!("firmware.{name}"), va.map(str::to_string), vb.map(str::to_string), s));
            }
        }
    }
    // An lspci dump knows no IOMMU units; compare them only between hosts that do.
    if !a.iommu_units.is_empty() || !b.iommu_units.is_empty() {
        if a.iommu_units != b.iommu_units && !a.groups.is_empty() && !b.groups.is_empty() {
            let s = format!("IOMMU units differ: {:?} -> {:?}", a.iommu_units, b.iommu_units);
            out.push(plain("iommu_units", Some(a.iommu_units.join(" ")), Some(b.iommu_units.join(" ")), s));
        }
        if a.groups.is_empty() != b.groups.is_empty() {
            let on = |s: &Snapshot| if s.groups.is_empty() { "off (no groups)" } else { "on" };
            let s = format!("the IOMMU is {} in A and {} in B", on(a), on(b));
            out.push(plain("iommu", Some(on(a).into()), Some(on(b).into()), s));
        }
    }
    out
}

/// The required ACS flags a verdict finds missing (all four for a verdict that is not isolated without a
/// flag check).
fn missing(v: &AcsVerdict) -> u16 {
    match *v {
        AcsVerdict::Flags { missing, .. } => missing,
        _ if v.enabled() => 0,
        _ => REQUIRED,
    }
}

/// What changed a verdict when the registers did not.
fn platform_reasons(a: &Host, b: &Host, x: PciAddress, y: PciAddress) -> Vec<String> {
    let mut out = Vec::new();
    let redir = |h: &Host, d| h.platform.acs_redir_disabled.iter().any(|s| s.names(&h.topo, d));
    let config = |h: &Host, d| h.platform.config_acs.iter().any(|e| e.device.names(&h.topo, d));
    for (name, ia, ib) in
        [("pci=disable_acs_redir=", redir(a, x), redir(b, y)), ("pci=config_acs=", config(a, x), config(b, y))]
    {
        if ia != ib {
            out.push(format!("{name} on the command line names it in {}, not in {}", side(ib), side(ia)));
        }
    }
    if a.platform.acs_override != b.platform.acs_override {
        out.push("pcie_acs_override= differs between the command lines (patched kernels only)".into());
    }
    let quirk = |v: &AcsVerdict| match *v {
        AcsVerdict::Quirk { name, .. } | AcsVerdict::QuirkUnknown { name, .. } => Some(name),
        _ => None,
    };
    let (qa, qb) = (quirk(&a.verdicts[&x]), quirk(&b.verdicts[&y]));
    if qa != qb {
        match (qa, qb) {
            (Some(n), None) => out.push(format!("the kernel's {n} ACS quirk applies in A, not in B")),
            (None, Some(n)) => out.push(format!("the kernel's {n} ACS quirk applies in B, not in A")),
            (Some(n), Some(m)) => out.push(format!("the kernel's {n} ACS quirk in A, its {m} quirk in B")),
            (None, None) => {}
        }
    } else if let Some(n) = qa {
        if a.platform.amd_ivrs != b.platform.amd_ivrs {
            out.push(format!("the {n} quirk depends on an AMD IOMMU (IVRS), present in one side only"));
        }
        if a.platform.lpc_rcba != b.platform.lpc_rcba {
            out.push(format!("the {n} quirk reads the LPC bridge's RCBA register at 1f.0, which differs"));
        }
    }
    out
}

/// `A` when `in_b` is false and `B` when true: the side where something holds.
fn side(in_b: bool) -> &'static str {
    if in_b {
        "B"
    } else {
        "A"
    }
}

fn acs_changes(a: &Host, b: &Host, m: &Matching) -> (Vec<AcsChange>, Vec<PciAddress>) {
    let mut out = Vec::new();
    let mut other = Vec::new();
    for (&x, &y) in &m.a2b {
        let (Some(da), Some(db)) = (a.topo.get(x), b.topo.get(y)) else { continue };
        let (ra, rb) = (Registers::of(&da.acs), Registers::of(&db.acs));
        let (va, vb) = (a.verdicts[&x], b.verdicts[&y]);
        if ra == rb && va == vb {
            let (ca, cb) = (a.snap.device(x).map(|d| &d.config), b.snap.device(y).map(|d| &d.config));
            if ca != cb {
                other.push(x);
            }
            continue;
        }
        let (cap_a, ctl_a) = match ra {
            Registers::Present { capability, control } => (capability, control),
            _ => (0, 0),
        };
        let (cap_b, ctl_b) = match rb {
            Registers::Present { capability, control } => (capability, control),
            _ => (0, 0),
        };
        let both_present = matches!((ra, rb), (Registers::Present { .. }, Registers::Present { .. }));
        let mut reg = Vec::new();
        match (ra, rb) {
            (Registers::Present { .. }, Registers::Absent) => {
                reg.push(format!("its ACS capability is gone (it offered {})", acs::names(cap_a)))
            }
            (Registers::Absent, Registers::Present { .. }) => {
                reg.push(format!("it gained an ACS capability (offering {})", acs::names(cap_b)))
            }
            (Registers::Unknown, _) => reg.push("its ACS was unreadable in A (config space read without root)".into()),
            (_, Registers::Unknown) => reg.push("its ACS is unreadable in B (config space read without root)".into()),
            _ => {}
        }
        if both_present {
            if cap_a & !cap_b != 0 {
                reg.push(format!("capability lost {}", acs::names(cap_a & !cap_b)));
            }
            if cap_b & !cap_a != 0 {
                reg.push(format!("capability gained {}", acs::names(cap_b & !cap_a)));
            }
            if ctl_a & !ctl_b != 0 {
                reg.push(format!("control bit{} {} cleared", plural(ctl_a & !ctl_b), acs::names(ctl_a & !ctl_b)));
            }
            if ctl_b & !ctl_a != 0 {
                reg.push(format!("control bit{} {} set", plural(ctl_b & !ctl_a), acs::names(ctl_b & !ctl_a)));
            }
        }
        let because = platform_reasons(a, b, x, y);
        let (ma, mb) = (missing(&va), missing(&vb));
        let at = if x == y { x.to_string() } else { format!("{x} (now {y})") };
        let detail = if va == vb {
            let why = if va.enabled()
                && both_present
                && (ctl_a ^ ctl_b) & REQUIRED & cap_a & cap_b != 0
                && a.platform.kernel_enables_acs
            {
                ", because the kernel sets the SV RR CR UF its capability offers itself at boot when an IOMMU asks \
                 for ACS"
                    .to_string()
            } else {
                String::new()
            };
            let because = if because.is_empty() { String::new() } else { format!("; {}", because.join("; ")) };
            format!(
                ": ACS registers changed ({}), but its verdict stays \"{}\"{why}{because}",
                reg.join(", "),
                va.describe()
            )
        } else {
            let mut s = format!(": \"{}\" -> \"{}\"", va.describe(), vb.describe());
            if !reg.is_empty() {
                s.push_str(&format!(": {}", reg.join(", ")));
                if !because.is_empty() {
                    s.push_str(&format!("; {}", because.join("; ")));
                }
            } else if !because.is_empty() {
                s.push_str(&format!(", with the same ACS registers: {}", because.join("; ")));
            } else {
                s.push_str(", with the same ACS registers");
            }
            s
        };
        let sentence = format!("{at}{detail}");
        out.push(AcsChange {
            device: x,
            now_at: (x != y).then_some(y),
            registers_before: ra,
            registers_after: rb,
            verdict_before: va,
            verdict_after: vb,
            isolated_before: va.enabled(),
            isolated_after: vb.enabled(),
            capability_lost: if both_present { flags(cap_a & !cap_b) } else { Vec::new() },
            capability_gained: if both_present { flags(cap_b & !cap_a) } else { Vec::new() },
            control_cleared: if both_present { flags(ctl_a & !ctl_b) } else { Vec::new() },
            control_set: if both_present { flags(ctl_b & !ctl_a) } else { Vec::new() },
            now_missing: flags(mb & !ma),
            no_longer_missing: flags(ma & !mb),
            because,
            sentence,
            at,
            detail,
        });
    }
    (out, other)
}

fn plural(bits: u16) -> &'static str {
    if bits.count_ones() == 1 {
        ""
    } else {
        "s"
    }
}

/// The groups compared on each side.
fn groups_of(h: &Host, kernel: bool) -> Vec<GroupRef> {
    if kernel {
        h.snap.groups.iter().map(|g| GroupRef { id: g.id, devices: g.devices.clone() }).collect()
    } else {
        h.pred.groups.iter().map(|g| GroupRef { id: g.id, devices: g.devices.clone() }).collect()
    }
}

/// The functions whose ACS test or presence decided where `d` went, each with its role and a rank (lower
/// is more telling: a hop of the climb before the function itself), from the evidence.
fn deciders(h: &Host, d: PciAddress) -> Vec<(PciAddress, String, u8)> {
    let mut out = vec![(d, "the function itself".to_string(), 9)];
    let Some(e) = h.pred.evidence_for(d) else { return out };
    for hop in &e.hops {
        out.push((hop.bridge, format!("a bridge on the way up from {d}"), 1));
        if let Some((b, _)) = hop.blocker {
            out.push((b, format!("the function that stops isolation on the way up from {d}"), 0));
        }
    }
    out.extend(e.requester_id_walk.iter().map(|&r| (r, format!("a bridge that takes over {d}'s requester ID"), 2)));
    match e.join {
        Join::Multifunction { with, from } | Join::DmaAlias { with, from, .. } => {
            out.push((with, format!("the sibling or alias {d} joined"), 3));
            out.push((from, format!("the function whose siblings {d}'s placement searched"), 3));
        }
        Join::RequesterId { via } => out.push((via, format!("a bridge that takes over {d}'s requester ID"), 2)),
        Join::UpstreamBridge { bridge } => out.push((bridge, format!("the bridge whose group {d} joined"), 0)),
        Join::Vmd { endpoint } => out.push((endpoint, format!("the Intel VMD endpoint {d} does its DMA through"), 0)),
        Join::NewGroup => {}
    }
    // The multifunction siblings of the function and of the bridges on its climb: their own ACS tests
    // decide whether they join.
    let mut tops = vec![d];
    tops.extend(e.hops.iter().map(|h| h.bridge));
    for t in tops {
        for s in h.topo.devices().iter().filter(|s| {
            s.address != t && (s.address.domain, s.address.bus, s.address.device) == (t.domain, t.bus, t.device)
        }) {
            out.push((s.address, format!("a multifunction sibling of {t}"), 4));
        }
    }
    out
}

struct Ctx<'a> {
    a: &'a Host,
    b: &'a Host,
    m: &'a Matching,
    acs: &'a [AcsChange],
    env: &'a [EnvChange],
}

impl Ctx<'_> {
    /// Causes for a change of the groups `before` (A) into `after` (B).
    fn causes(&self, before: &[GroupRef], after: &[GroupRef]) -> Vec<Cause> {
        let mut seen: BTreeSet<PciAddress> = BTreeSet::new();
        let mut causes = Vec::new();
        // Decisions in A, in A's addresses; decisions in B, translated back where the function is in A.
        let mut relevant: BTreeMap<PciAddress, (u8, String)> = BTreeMap::new();
        let mut b_only: BTreeMap<PciAddress, (u8, String)> = BTreeMap::new();
        let keep = |m: &mut BTreeMap<PciAddress, (u8, String)>, x: PciAddress, role: String, rank: u8| {
            let e = m.entry(x).or_insert((rank, role.clone()));
            if rank < e.0 {
                *e = (rank, role);
            }
        };
        for g in before {
            for &d in &g.devices {
                for (x, role, rank) in deciders(self.a, d) {
                    keep(&mut relevant, x, format!("{role}, in A"), rank);
                }
            }
        }
        for g in after {
            for &d in &g.devices {
                for (x, role, rank) in deciders(self.b, d) {
                    match self.m.b2a.get(&x) {
                        Some(&ax) => keep(&mut relevant, ax, format!("{role}, in B"), rank),
                        None => keep(&mut b_only, x, role, rank),
                    }
                }
            }
        }
        let mut order: Vec<(PciAddress, u8, String)> =
            relevant.into_iter().map(|(x, (r, role))| (x, r, role)).collect();
        order.sort_by_key(|(x, r, _)| (*r, *x));
        for (x, _, role) in order {
            if !seen.insert(x) {
                continue;
            }
            if let Some(c) = self.acs.iter().find(|c| c.device == x && c.isolated_before != c.isolated_after) {
                let sentence = format!("{} ({role}){}", c.at, c.detail);
                causes.push(Cause::Acs {
                    device: x,
                    role,
                    verdict_before: c.verdict_before,
                    verdict_after: c.verdict_after,
                    sentence,
                });
            } else if !self.m.a2b.contains_key(&x) {
                causes.push(Cause::Device {
                    device: x,
                    change: "removed",
                    sentence: format!("{x} ({role}) is not in B"),
                });
            }
        }
        for (y, (_, role)) in b_only {
            causes.push(Cause::Device {
                device: y,
                change: "added",
                sentence: format!("{y} ({role}, in B) is not in A"),
            });
        }
        causes
    }

    fn outside(&self, what: &str) -> Vec<Cause> {
        if self.env.is_empty() {
            return vec![Cause::Unexplained {
                sentence: format!(
                    "{what}: config space, kernel, command line and firmware are the same on both sides; compare \
                     each side with `predict --diff`"
                ),
            }];
        }
        self.env
            .iter()
            .map(|e| Cause::Outside {
                item: e.item.clone(),
                sentence: format!("nothing in config space explains it; outside PCI, {}", e.sentence),
            })
            .collect()
    }
}

/// Links A's and B's groups through the devices they share and classifies each linked set.
fn group_changes(ctx: &Ctx, ga: &[GroupRef], gb: &[GroupRef]) -> Vec<GroupChange> {
    let m = ctx.m;
    let b_group: BTreeMap<PciAddress, usize> =
        gb.iter().enumerate().flat_map(|(i, g)| g.devices.iter().map(move |d| (*d, i))).collect();
    // Union-find over A groups (0..na) and B groups (na..na+nb).
    let (na, nb) = (ga.len(), gb.len());
    let mut parent: Vec<usize> = (0..na + nb).collect();
    fn find(p: &mut [usize], x: usize) -> usize {
        let mut r = x;
        while p[r] != r {
            r = p[r];
        }
        let mut c = x;
        while p[c] != r {
            let n = p[c];
            p[c] = r;
            c = n;
        }
        r
    }
    for (i, g) in ga.iter().enumerate() {
        for d in &g.devices {
            if let Some(j) = m.a2b.get(d).and_then(|y| b_group.get(y)) {
                let (r1, r2) = (find(&mut parent, i), find(&mut parent, na + j));
                parent[r1] = r2;
            }
        }
    }
    let mut comps: BTreeMap<usize, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for i in 0..na {
        let r = find(&mut parent, i);
        comps.entry(r).or_default().0.push(i);
    }
    for j in 0..nb {
        let r = find(&mut parent, na + j);
        comps.entry(r).or_default().1.push(j);
    }
    let mut changes = Vec::new();
    let mut renumbered = Vec::new();
    for (ai, bi) in comps.into_values() {
        let before: Vec<GroupRef> = ai.iter().map(|&i| ga[i].clone()).collect();
        let after: Vec<GroupRef> = bi.iter().map(|&j| gb[j].clone()).collect();
        let kind = match (before.len(), after.len()) {
            (0, _) => Kind::Appeared,
            (_, 0) => Kind::Disappeared,
            (1, 1) => {
                let mapped: Vec<PciAddress> = {
                    let mut v: Vec<PciAddress> =
                        before[0].devices.iter().filter_map(|d| m.a2b.get(d).copied()).collect();
                    v.sort_unstable();
                    v
                };
                if mapped != after[0].devices || mapped.len() != before[0].devices.len() {
                    Kind::Members
                } else if before[0].id != after[0].id {
                    Kind::Renumbered
                } else {
                    continue;
                }
            }
            (1, _) => Kind::Split,
            (_, 1) => Kind::Merged,
            _ => Kind::Regrouped,
        };
        if kind == Kind::Renumbered {
            renumbered.push(GroupChange { kind, before, after, causes: Vec::new() });
            continue;
        }
        let mut causes = ctx.causes(&before, &after);
        if causes.is_empty() {
            let what = format!("the groups {}", kind.word());
            causes = ctx.outside(&what);
        }
        changes.push(GroupChange { kind, before, after, causes });
    }
    let structural = !changes.is_empty() || !m.added.is_empty() || !m.removed.is_empty();
    for mut r in renumbered {
        r.causes = if structural {
            vec![Cause::ProbeOrder {
                sentence: "group numbers follow probe order, and the changes above shift the numbers after them".into(),
            }]
        } else {
            ctx.outside("the group was renumbered")
        };
        changes.push(r);
    }
    changes.sort_by_key(|c| (c.before.first().or(c.after.first()).map(|g| g.id), c.after.first().map(|g| g.id)));
    changes
}

/// `iommuctl diff A B`.
pub fn run(origin: &Origin, a_op: &Path, b_op: &Path) -> anyhow::Result<Outcome> {
    if a_op == Path::new("-") && b_op == Path::new("-") {
        return Err(fail(Exit::BadInput, "diff: only one side can be standard input (`-`)"));
    }
    let (sa, kind_a) = load_side(origin, a_op, "A")?;
    let (sb, kind_b) = load_side(origin, b_op, "B")?;
    let report = compare(Host::new(sa, "A")?, Host::new(sb, "B")?, (a_op, kind_a), (b_op, kind_b));
    let exit = if report.same { Exit::Ok } else { Exit::Negative };
    Ok(Outcome::report(report).with_exit(exit))
}

fn info(op: &Path, kind: &'static str, s: &Snapshot) -> SideInfo {
    SideInfo { source: op.display().to_string(), kind, kernel: s.kernel.release.clone() }
}

fn compare(
    a: Host,
    b: Host,
    (a_op, kind_a): (&Path, &'static str),
    (b_op, kind_b): (&Path, &'static str),
) -> DiffReport {
    let env = environment(&a.snap, &b.snap, kind_a != "lspci dump" && kind_b != "lspci dump");
    let m = match_devices(&a, &b);
    let (acs, other_config_changes) = acs_changes(&a, &b, &m);
    let kernel_groups = !a.snap.groups.is_empty() && !b.snap.groups.is_empty();
    let (ga, gb) = (groups_of(&a, kernel_groups), groups_of(&b, kernel_groups));
    let mut notes = Vec::new();
    if kernel_groups {
        for (name, h) in [("A", &a), ("B", &b)] {
            let kernel: BTreeSet<&Vec<PciAddress>> = h.snap.groups.iter().map(|g| &g.devices).collect();
            let predicted: BTreeSet<&Vec<PciAddress>> = h.pred.groups.iter().map(|g| &g.devices).collect();
            if kernel != predicted {
                notes.push(format!(
                    "{name}: the kernel's groups differ from what iommuctl predicts from its config space \
                     (`predict --diff`); the causes below rest on the prediction"
                ));
            }
        }
    } else {
        notes.push(format!(
            "groups compared are iommuctl's predictions ({} has no kernel groups)",
            match (a.snap.groups.is_empty(), b.snap.groups.is_empty()) {
                (true, true) => "neither side",
                (true, false) => "A",
                _ => "B",
            }
        ));
    }
    let ctx = Ctx { a: &a, b: &b, m: &m, acs: &acs, env: &env };
    let groups = group_changes(&ctx, &ga, &gb);
    let drivers: Vec<DriverChange> = if kind_a == "lspci dump" || kind_b == "lspci dump" {
        Vec::new() // a dump knows no drivers
    } else {
        m.a2b
            .iter()
            .filter(|(x, y)| a.driver(**x) != b.driver(**y))
            .map(|(x, y)| DriverChange {
                address: *y,
                before: a.driver(*x).map(str::to_string),
                after: b.driver(*y).map(str::to_string),
            })
            .collect()
    };
    let added: Vec<DeviceRef> = m.added.iter().map(|&y| DeviceRef { address: y, id: id_text(b.id(y)) }).collect();
    let removed: Vec<DeviceRef> = m.removed.iter().map(|&x| DeviceRef { address: x, id: id_text(a.id(x)) }).collect();
    let same = env.is_empty()
        && added.is_empty()
        && removed.is_empty()
        && m.moved.is_empty()
        && drivers.is_empty()
        && groups.is_empty()
        && acs.is_empty();
    DiffReport {
        a: info(a_op, kind_a, &a.snap),
        b: info(b_op, kind_b, &b.snap),
        same,
        environment: env,
        devices_compared: m.a2b.len(),
        added,
        removed,
        moved: m.moved,
        drivers,
        groups_from: if kernel_groups { "kernel" } else { "predicted" },
        groups_before: ga.len(),
        groups_after: gb.len(),
        groups,
        acs,
        other_config_changes,
        notes,
    }
}

// --- text -------------------------------------------------------------------------------------------------

fn group_text(g: &GroupRef) -> String {
    format!("{} {}", g.id, set(&g.devices))
}

impl fmt::Display for DiffReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, s) in [("A", &self.a), ("B", &self.b)] {
            writeln!(
                f,
                "{name}: {} ({}{})",
                sanitize(&s.source),
                s.kind,
                s.kernel.as_deref().map(|k| format!(", Linux {}", sanitize(k))).unwrap_or_default()
            )?;
        }
        if self.environment.is_empty() {
            writeln!(f, "Outside PCI: the same kernel, command line and firmware (as far as both sides tell).")?;
        } else {
            writeln!(f, "Outside PCI:")?;
            for e in &self.environment {
                writeln!(f, "  {}", sanitize(&e.sentence))?;
            }
        }
        if self.added.is_empty() && self.removed.is_empty() && self.moved.is_empty() {
            writeln!(f, "Devices: the same {} functions, none added, removed or moved.", self.devices_compared)?;
        } else {
            writeln!(f, "Devices ({} on both sides):", self.devices_compared)?;
            for d in &self.removed {
                writeln!(f, "  removed {} [{}]", d.address, d.id)?;
            }
            for d in &self.added {
                writeln!(f, "  added   {} [{}]", d.address, d.id)?;
            }
            for d in &self.moved {
                let how = if d.same_place { "same place in the tree, bus renumbered" } else { "another slot" };
                writeln!(f, "  moved   {} -> {} [{}] ({how})", d.from, d.to, d.id)?;
            }
        }
        for d in &self.drivers {
            let n = |x: &Option<String>| x.as_deref().map_or("no driver".to_string(), sanitize);
            writeln!(f, "  driver  {}: {} -> {}", d.address, n(&d.before), n(&d.after))?;
        }
        let whose = if self.groups_from == "kernel" { "the kernels' own" } else { "predicted by iommuctl" };
        if self.groups.is_empty() {
            writeln!(
                f,
                "Groups ({whose}): the same {} groups, with the same members and numbers.",
                self.groups_before
            )?;
        } else {
            writeln!(f, "Groups ({whose}; {} before, {} after):", self.groups_before, self.groups_after)?;
            for c in &self.groups {
                let b: Vec<String> = c.before.iter().map(group_text).collect();
                let a: Vec<String> = c.after.iter().map(group_text).collect();
                let arrow = match (b.is_empty(), a.is_empty()) {
                    (true, _) => a.join(" + "),
                    (_, true) => b.join(" + "),
                    _ => format!("{} -> {}", b.join(" + "), a.join(" + ")),
                };
                writeln!(f, "  {}: {arrow}", c.kind.word())?;
                for cause in &c.causes {
                    writeln!(f, "    because {}", sanitize(cause.sentence()))?;
                }
            }
        }
        if !self.acs.is_empty() {
            writeln!(f, "ACS:")?;
            for c in &self.acs {
                writeln!(f, "  {}", sanitize(&c.sentence))?;
            }
        }
        if !self.other_config_changes.is_empty() {
            writeln!(
                f,
                "Config space outside ACS differs on {} function{} ({}): command and status bits, interrupt \
                 state; not counted as a difference.",
                self.other_config_changes.len(),
                if self.other_config_changes.len() == 1 { "" } else { "s" },
                self.other_config_changes.iter().map(PciAddress::to_string).collect::<Vec<_>>().join(", ")
            )?;
        }
        for n in &self.notes {
            writeln!(f, "Note: {}", sanitize(n))?;
        }
        if self.same {
            return writeln!(f, "Same.");
        }
        if self.environment.len() == 1
            && self.environment[0].item == "kernel"
            && self.groups.is_empty()
            && self.acs.is_empty()
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.moved.is_empty()
            && self.drivers.is_empty()
        {
            return writeln!(
                f,
                "Different: only the kernel. Devices, ACS and groups are the same under both (the grouping rules \
                 iommuctl models, {}, are the same for Linux 6.1 to 6.18).",
                RuleSet::Linux6.name()
            );
        }
        let mut parts: Vec<String> = self.environment.iter().map(|e| e.item.clone()).collect();
        let count = |n: usize, what: &str| (n > 0).then(|| format!("{n} {what}"));
        parts.extend(count(self.added.len(), "added"));
        parts.extend(count(self.removed.len(), "removed"));
        parts.extend(count(self.moved.len(), "moved"));
        parts.extend(count(self.drivers.len(), "driver changes"));
        for k in [
            Kind::Split,
            Kind::Merged,
            Kind::Regrouped,
            Kind::Members,
            Kind::Appeared,
            Kind::Disappeared,
            Kind::Renumbered,
        ] {
            parts.extend(count(self.groups.iter().filter(|g| g.kind == k).count(), &format!("group(s) {}", k.word())));
        }
        parts
            .extend(count(self.acs.iter().filter(|c| c.isolated_before != c.isolated_after).count(), "ACS verdict(s)"));
        parts.extend(count(
            self.acs.iter().filter(|c| c.isolated_before == c.isolated_after).count(),
            "ACS register change(s)",
        ));
        writeln!(f, "Different: {}.", parts.join(", "))
    }
}
