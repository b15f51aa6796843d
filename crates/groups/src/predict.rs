//! Kernel-equivalent IOMMU group prediction, with the evidence for every decision.

use std::collections::HashMap;

use iommu_pci::{HeaderKind, PciAddress, PortType};
use serde::Serialize;

use crate::acs::{contexts, verdict, AcsVerdict, Context};
use crate::model::{Pcie, Platform, Topology};
use crate::quirks::{alias_quirks_for, AliasKind};

/// Which kernel grouping rules to follow. Versioned so that a changed upstream algorithm can be added
/// beside the current one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RuleSet {
    /// `pci_device_group()` as in Linux v6.1 to v6.18.
    #[default]
    Linux6,
}

impl RuleSet {
    /// A short name.
    pub fn name(&self) -> &'static str {
        match self {
            RuleSet::Linux6 => "linux-6.x",
        }
    }
}

/// How a device came to be in its group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "rule")]
pub enum Join {
    /// No reachable device had a group: a new group was created.
    NewGroup,
    /// A device on the requester-ID walk (a bridge that takes over the requester ID) already had a group.
    RequesterId {
        /// The bridge that forwards with its own or its secondary bus's requester ID.
        via: PciAddress,
    },
    /// An upstream bridge is not ACS-isolated, so the device shares the bridge's group.
    UpstreamBridge {
        /// The bridge.
        bridge: PciAddress,
    },
    /// A DMA alias (a quirk, or the ACPI IVRS table on AMD) ties the device to another function on its bus.
    DmaAlias {
        /// The aliasing function whose group was found.
        with: PciAddress,
        /// The function whose alias search found it (the device itself or its upstream bridge).
        from: PciAddress,
        /// An alias from the ACPI IVRS table (not a quirk) was on the way.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ivrs: bool,
    },
    /// The device sits in an Intel VMD domain: its DMA carries the VMD endpoint's requester ID
    /// (`pci_real_dma_dev`), and the endpoint, or a function already grouped with the VMD domain, had a group.
    Vmd {
        /// The VMD endpoint that does the domain's DMA.
        endpoint: PciAddress,
    },
    /// A multifunction sibling without ACS isolation already had a group.
    Multifunction {
        /// The sibling whose group was found.
        with: PciAddress,
        /// The function whose search found it (the device itself or its upstream bridge).
        from: PciAddress,
    },
}

/// One upstream bridge examined while climbing toward the root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// The bridge.
    pub bridge: PciAddress,
    /// Whether the whole path from this bridge to the root bus is ACS-isolated (the climb stops there).
    pub isolated: bool,
    /// When not isolated: the first function on that path that failed, and why.
    pub blocker: Option<(PciAddress, AcsVerdict)>,
}

/// Why one device is in its group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// The device.
    pub device: PciAddress,
    /// The group it went to.
    pub group: u32,
    /// The rule that placed it.
    pub join: Join,
    /// Devices the requester-ID walk reported after the device itself (bridges that take over its ID).
    pub requester_id_walk: Vec<PciAddress>,
    /// Bridges examined on the upstream climb, nearest first.
    pub hops: Vec<Hop>,
    /// The device's own ACS test, as used for the multifunction rule.
    pub own_acs: AcsVerdict,
    /// DMA-alias quirk that applies to the device, if any.
    pub alias_quirk: Option<&'static str>,
    /// The function whose requester ID the device's DMA carries when it is not the device itself: the
    /// VMD endpoint of an Intel VMD domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dma_device: Option<PciAddress>,
    /// The alias the ACPI IVRS table gives the device, if any (a DMA alias only when on its own bus).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ivrs_alias: Option<PciAddress>,
}

/// One predicted group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PredictedGroup {
    /// Group number the kernel would allocate at boot (lowest free integer in probe order).
    pub id: u32,
    /// Member functions, sorted by address.
    pub devices: Vec<PciAddress>,
}

/// The prediction for a whole topology.
#[derive(Clone, Debug, Serialize)]
pub struct Prediction {
    /// The rules followed.
    pub rules: RuleSet,
    /// The quirk table version.
    pub quirks: &'static str,
    /// Groups by id.
    pub groups: Vec<PredictedGroup>,
    /// Evidence per device, in probe order.
    pub evidence: Vec<Evidence>,
    /// Devices whose ACS or PCIe type could not be read but mattered: the prediction may be wrong there.
    pub uncertain: Vec<PciAddress>,
    /// Devices with aliases that only a driver sets up at run time: grouping may differ.
    pub runtime_aliases: Vec<PciAddress>,
    /// Functions the IOMMU does not translate and so puts in no group, with the reason.
    pub excluded: Vec<(PciAddress, &'static str)>,
    /// What reading the command line found that changes how it counts ([`Platform::notes`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// (address, evidence index), sorted by address.
    #[serde(skip)]
    index: Vec<(PciAddress, u32)>,
}

impl Prediction {
    /// The evidence for one device.
    pub fn evidence_for(&self, addr: PciAddress) -> Option<&Evidence> {
        let i = self.index.binary_search_by_key(&addr, |&(a, _)| a).ok()?;
        Some(&self.evidence[self.index[i].1 as usize])
    }

    /// The group holding `addr`.
    pub fn group_of(&self, addr: PciAddress) -> Option<&PredictedGroup> {
        let e = self.evidence_for(addr)?;
        self.groups.get(e.group as usize)
    }
}

const NONE: u32 = u32::MAX;
const FLAG_PCIE_BRIDGE_ALIAS: u8 = 1;
const FLAG_XLATE_ROOT: u8 = 2;
const FLAG_RUNTIME_ALIAS: u8 = 4;

struct Engine<'a> {
    t: &'a Topology,
    platform: &'a Platform,
    port_type: Vec<Option<PortType>>,
    ctx: Vec<Context>,
    verdict: Vec<AcsVerdict>,
    /// 0 = not computed, 1 = isolated, 2 = not isolated; with the blocker index.
    path: Vec<(u8, u32)>,
    flags: Vec<u8>,
    alias_mask: HashMap<u32, [u64; 4]>,
    alias_name: HashMap<u32, &'static str>,
    /// DMA aliases from the ACPI IVRS table: the kernel adds them when it probes the function
    /// (`setup_aliases`), so they count only once the function has been placed, or while it is placed.
    ivrs_mask: HashMap<u32, [u64; 4]>,
    bus_has_alias: HashMap<(u32, u8), ()>,
    group: Vec<u32>,
    uncertain: Vec<u32>,
    /// For each device, the index of the function whose requester ID its DMA carries (an Intel VMD
    /// endpoint), or NONE for itself.
    dma_src: Vec<u32>,
    /// For each device of a VMD domain whose endpoint is not in the topology: that domain and endpoint.
    vmd_absent: Vec<Option<(u32, PciAddress)>>,
    /// The device being placed.
    current: usize,
}

/// Predicts the kernel's IOMMU groups for a topology.
pub fn predict(t: &Topology, platform: &Platform, rules: RuleSet) -> Prediction {
    let RuleSet::Linux6 = rules;
    let mut e = Engine::new(t, platform);
    let n = t.devices.len();
    let mut evidence = Vec::with_capacity(n);
    let mut next_id = 0u32;
    let mut members: Vec<Vec<PciAddress>> = Vec::new();
    let mut excluded = Vec::new();
    let mut evidence_of = vec![NONE; n];
    // The group of each VMD domain whose endpoint is not in the topology, once one of its functions has one.
    let mut absent_vmd_group: HashMap<u32, u32> = HashMap::new();
    let igfx_off = intel_igfx_iommu_disabled(t, platform);
    for &d in &t.probe_order {
        let dev = &t.devices[d as usize];
        let why = not_translated(dev, platform).or_else(|| {
            (igfx_off && !platform.amd_ivrs && dev.vendor == 0x8086 && dev.class >> 16 == 0x03 && dev.parent.is_none())
                .then_some("the kernel's quirk_iommu_igfx turns off DMA remapping for graphics on this chipset")
        });
        if let Some(why) = why {
            excluded.push((t.devices[d as usize].address, why));
            continue;
        }
        let absent = e.vmd_absent[d as usize];
        let mut ev = match absent {
            // The kernel would start from the endpoint, whose group is unknown here: the domain's first
            // function starts one, the others join it.
            Some((dom, endpoint)) => {
                let mut ev = e.evidence(d as usize);
                if let Some(&g) = absent_vmd_group.get(&dom) {
                    ev.group = g;
                    ev.join = Join::Vmd { endpoint };
                }
                ev
            }
            None => e.place(d as usize),
        };
        if ev.join == Join::NewGroup {
            ev.group = next_id;
            next_id += 1;
            members.push(Vec::new());
        }
        if let Some((dom, _)) = absent {
            // Every function of the domain DMAs as the same absent endpoint: one group, and a guess.
            absent_vmd_group.entry(dom).or_insert(ev.group);
            e.uncertain.push(d);
        }
        e.group[d as usize] = ev.group;
        evidence_of[d as usize] = evidence.len() as u32;
        members[ev.group as usize].push(ev.device);
        evidence.push(ev);
    }
    let groups = members
        .into_iter()
        .enumerate()
        .map(|(id, mut devices)| {
            devices.sort_unstable();
            PredictedGroup { id: id as u32, devices }
        })
        .collect();
    // Devices are sorted by address, so this index is too.
    let index = (0..n).filter(|&i| evidence_of[i] != NONE).map(|i| (t.devices[i].address, evidence_of[i])).collect();
    let mut uncertain: Vec<PciAddress> = e.uncertain.iter().map(|&i| t.devices[i as usize].address).collect();
    uncertain.sort_unstable();
    uncertain.dedup();
    let runtime_aliases =
        (0..n).filter(|&i| e.flags[i] & FLAG_RUNTIME_ALIAS != 0).map(|i| t.devices[i].address).collect();
    Prediction {
        rules,
        quirks: crate::quirks::QUIRKS_FOLLOW,
        groups,
        evidence,
        uncertain,
        runtime_aliases,
        excluded,
        notes: platform.notes.clone(),
        index,
    }
}

/// Functions the IOMMU leaves out of every group. On AMD the IOMMU is itself a PCI function (class
/// 0806); the kernel does not put it in a group (seen on 6.1 and 6.12 with QEMU's amd-iommu). With the
/// host's IVRS table read, so are the functions no IVHD device entry covers (amd/iommu.c, `check_device`).
fn not_translated(d: &crate::model::Device, platform: &Platform) -> Option<&'static str> {
    if platform.amd_ivrs && d.vendor == 0x1022 && d.class >> 8 == 0x0806 {
        Some("the AMD IOMMU's own PCI function")
    } else if platform.ivrs.is_untranslated(d.address) {
        Some("no ACPI IVRS device entry puts it behind an AMD IOMMU")
    } else {
        None
    }
}

/// Intel devices whose presence makes the kernel ignore the graphics-only remapping unit (intel/iommu.c,
/// `quirk_iommu_igfx`: Q35, G4x/GM45, QM57/QS57 and Broadwell, whose graphics DMA remapping is broken), as
/// in Debian's 6.12.117. 0x0044 (QM57/QS57) joined this list in 2025; older kernels handle it through
/// `quirk_calpella_no_shadow_gtt`, which reads the GGC register instead.
const IGFX_QUIRK_IDS: &[u16] = &[
    0x29b2, 0x2a40, 0x2e00, 0x2e10, 0x2e20, 0x2e30, 0x2e40, 0x2e90, 0x0044, 0x1606, 0x160b, 0x160e, 0x1602, 0x160a,
    0x160d, 0x1616, 0x161b, 0x161e, 0x1612, 0x161a, 0x161d, 0x1626, 0x162b, 0x162e, 0x1622, 0x162a, 0x162d, 0x1636,
    0x163b, 0x163e, 0x1632, 0x163a, 0x163d,
];

/// Whether `quirk_iommu_igfx` fires for a device of the topology: the kernel then ignores the remapping unit
/// that covers only graphics devices, and the integrated GPU (an Intel display function on the root bus)
/// is in no group. Only with an Intel IOMMU (the quirk is intel-iommu's).
fn intel_igfx_iommu_disabled(t: &Topology, platform: &Platform) -> bool {
    !platform.amd_ivrs && t.devices.iter().any(|d| d.vendor == 0x8086 && IGFX_QUIRK_IDS.contains(&d.device))
}

/// Each device's PCIe type after the kernel's corrections, in address order (`None` when not PCIe).
pub(crate) fn port_types(t: &Topology) -> Vec<Option<PortType>> {
    // Corrected in probe order, so that each parent is corrected before its children.
    let mut port_type: Vec<Option<PortType>> = vec![None; t.devices.len()];
    for &i in &t.probe_order {
        port_type[i as usize] = corrected_type(t, i as usize, &port_type);
    }
    port_type
}

/// The kernel's ACS answer for every device, in address order (the order of [`Topology::devices`]).
pub fn acs_verdicts(t: &Topology, platform: &Platform) -> Vec<AcsVerdict> {
    let ctx = contexts(t, &port_types(t), platform);
    (0..t.devices.len()).map(|i| verdict(&t.devices[i], &ctx[i], platform)).collect()
}

impl<'a> Engine<'a> {
    fn new(t: &'a Topology, platform: &'a Platform) -> Self {
        let n = t.devices.len();
        let port_type = port_types(t);
        let ctx = contexts(t, &port_type, platform);
        let verdict = (0..n).map(|i| verdict(&t.devices[i], &ctx[i], platform)).collect();
        let (dma_src, vmd_absent) = vmd_sources(t, platform);
        let mut e = Engine {
            t,
            platform,
            port_type,
            ctx,
            verdict,
            path: vec![(0, 0); n],
            flags: vec![0; n],
            alias_mask: HashMap::new(),
            alias_name: HashMap::new(),
            ivrs_mask: HashMap::new(),
            bus_has_alias: HashMap::new(),
            group: vec![NONE; n],
            uncertain: Vec::new(),
            dma_src,
            vmd_absent,
            current: 0,
        };
        for i in 0..n {
            e.apply_alias_quirks(i);
        }
        for a in &platform.ivrs.aliases {
            // setup_aliases: only an alias on the function's own bus becomes a DMA alias.
            let (Some(i), true) = (t.index_of(a.device), a.alias.bus == a.device.bus) else { continue };
            let f = a.alias.devfn();
            e.ivrs_mask.entry(i as u32).or_insert([0; 4])[usize::from(f >> 6)] |= 1 << (f & 63);
            e.bus_has_alias.insert((a.device.domain, a.device.bus), ());
        }
        e
    }

    fn apply_alias_quirks(&mut self, i: usize) {
        let d = &self.t.devices[i];
        for q in alias_quirks_for(d.vendor, d.device, d.class) {
            let devfn = d.address.devfn();
            let slot = devfn & !7;
            let mut mask = [0u64; 4];
            let mut set = |f: u8| mask[usize::from(f >> 6)] |= 1 << (f & 63);
            match q.kind {
                // The kernel's function-0 and function-1 quirks add no alias to the function they name.
                AliasKind::Function0 if devfn != slot => set(slot),
                AliasKind::Function1 if devfn != slot | 1 => set(slot | 1),
                AliasKind::Function0 | AliasKind::Function1 => {}
                AliasKind::FixedDevfn { devfn, subsystems } => {
                    if d.subsystem.is_some_and(|s| subsystems.contains(&s)) {
                        set(devfn)
                    }
                }
                AliasKind::Devfns(l) => l.iter().for_each(|&f| set(f)),
                AliasKind::Functions0To4OfAllSlots => {
                    (0..32u8).flat_map(|s| (0..5u8).map(move |f| s << 3 | f)).for_each(&mut set)
                }
                AliasKind::AllDevfns => (0..=255u8).for_each(&mut set),
                AliasKind::PcieBridgeAlias => {
                    // Only a conventional bridge directly below a PCIe port that is not itself a
                    // PCIe-to-PCI bridge.
                    let parent_ok = self.t.parent[i].is_some_and(|p| {
                        let p = p as usize;
                        matches!(self.t.devices[p].pcie, Pcie::Yes(_))
                            && self.port_type[p] != Some(PortType::PcieToPciBridge)
                    });
                    // A type-1 header only: the kernel's test is on the bridge header type, not CardBus.
                    if d.header == HeaderKind::Bridge && d.pcie == Pcie::No && parent_ok {
                        self.flags[i] |= FLAG_PCIE_BRIDGE_ALIAS;
                    }
                }
                AliasKind::TranslationRoot => self.flags[i] |= FLAG_XLATE_ROOT,
                AliasKind::RuntimeOnly => self.flags[i] |= FLAG_RUNTIME_ALIAS,
            }
            if mask != [0; 4] {
                let m = self.alias_mask.entry(i as u32).or_insert([0; 4]);
                for k in 0..4 {
                    m[k] |= mask[k];
                }
                self.alias_name.insert(i as u32, q.name);
                self.bus_has_alias.insert((d.address.domain, d.address.bus), ());
            }
        }
    }

    fn addr(&self, i: usize) -> PciAddress {
        self.t.devices[i].address
    }

    fn note_verdict(&mut self, i: usize) -> bool {
        let v = self.verdict[i];
        if v.is_unknown() {
            self.uncertain.push(i as u32);
        }
        v.enabled()
    }

    /// "ACS path enabled" from bridge `b` to the root bus, memoized; returns (isolated, blocker).
    fn path_enabled(&mut self, b: usize) -> (bool, usize) {
        if self.path[b].0 == 0 {
            let r = if !self.note_verdict(b) {
                (false, b)
            } else {
                match self.t.parent[b] {
                    None => (true, b),
                    Some(p) => self.path_enabled(p as usize),
                }
            };
            self.path[b] = (if r.0 { 1 } else { 2 }, r.1 as u32);
        }
        (self.path[b].0 == 1, self.path[b].1 as usize)
    }

    /// Requester-ID walk: the bridges that report the device's DMA under their own ID.
    fn alias_walk(&self, d: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut cur = d;
        while let Some(b) = self.t.parent[cur] {
            let b = b as usize;
            cur = b;
            if self.flags[b] & FLAG_XLATE_ROOT != 0 {
                break;
            }
            match self.t.devices[b].pcie {
                Pcie::Yes(_) => {
                    if matches!(self.port_type[b], Some(PortType::PcieToPciBridge | PortType::PciToPcieBridge)) {
                        out.push(b);
                    }
                }
                Pcie::No | Pcie::Unknown => out.push(b),
            }
        }
        out
    }

    /// Whether `a` and `b` are DMA aliases of each other (`pci_devs_are_dma_aliases`): `Some(false)` by a
    /// quirk, `Some(true)` only by an IVRS alias, which counts once its function has been probed.
    fn are_dma_aliases(&self, a: usize, b: usize) -> Option<bool> {
        let has = |masks: &HashMap<u32, [u64; 4]>, x: usize, y: usize| {
            masks.get(&(x as u32)).is_some_and(|m| {
                let f = self.t.devices[y].address.devfn();
                m[usize::from(f >> 6)] & (1 << (f & 63)) != 0
            })
        };
        let probed = |x: usize| x == self.current || self.group[x] != NONE;
        if has(&self.alias_mask, a, b) || has(&self.alias_mask, b, a) {
            Some(false)
        } else if (probed(a) && has(&self.ivrs_mask, a, b)) || (probed(b) && has(&self.ivrs_mask, b, a)) {
            Some(true)
        } else {
            None
        }
    }

    /// Closure search over DMA aliases (and their multifunction siblings) on one bus.
    fn alias_search(&mut self, x: usize, visited: &mut [u64; 4], from: usize) -> Option<(usize, Join)> {
        let f = self.addr(x).devfn();
        let (w, bit) = (usize::from(f >> 6), 1u64 << (f & 63));
        if visited[w] & bit != 0 {
            return None;
        }
        visited[w] |= bit;
        if self.group[x] != NONE {
            return Some((x, Join::DmaAlias { with: self.addr(x), from: self.addr(from), ivrs: false }));
        }
        let a = self.addr(x);
        if !self.bus_has_alias.contains_key(&(a.domain, a.bus)) {
            return None;
        }
        for t in self.t.bus_range(x) {
            if t == x {
                continue;
            }
            let Some(by_ivrs) = self.are_dma_aliases(x, t) else { continue };
            let mark = |(g, join): (usize, Join)| match join {
                Join::DmaAlias { with, from, ivrs } => (g, Join::DmaAlias { with, from, ivrs: ivrs || by_ivrs }),
                other => (g, other),
            };
            if let Some(r) = self.alias_search(t, visited, from) {
                return Some(mark(r));
            }
            if let Some(r) = self.function_search(t, visited, from) {
                return Some(mark(r));
            }
        }
        None
    }

    /// Closure search over multifunction siblings without ACS.
    fn function_search(&mut self, x: usize, visited: &mut [u64; 4], from: usize) -> Option<(usize, Join)> {
        if !self.ctx[x].multifunction || self.note_verdict(x) {
            return None;
        }
        let slot = self.addr(x).device;
        for t in self.t.bus_range(x) {
            let ta = self.addr(t);
            if t == x || ta.device != slot || self.note_verdict(t) {
                continue;
            }
            if let Some((g, join)) = self.alias_search(t, visited, from) {
                let join = match join {
                    Join::DmaAlias { with, from, .. } if with == ta => Join::Multifunction { with, from },
                    other => other,
                };
                return Some((g, join));
            }
        }
        None
    }

    /// The evidence for `d` before any rule has placed it.
    fn evidence(&self, d: usize) -> Evidence {
        let src = self.dma_src[d];
        Evidence {
            device: self.addr(d),
            group: NONE,
            join: Join::NewGroup,
            requester_id_walk: Vec::new(),
            hops: Vec::new(),
            own_acs: self.verdict[d],
            alias_quirk: self.alias_name.get(&(d as u32)).copied(),
            dma_device: match (src, self.vmd_absent[d]) {
                (NONE, Some((_, ep))) => Some(ep),
                (NONE, None) => None,
                (s, _) => Some(self.addr(s as usize)),
            },
            ivrs_alias: self.platform.ivrs.alias_of(self.addr(d)),
        }
    }

    fn place(&mut self, d: usize) -> Evidence {
        self.current = d;
        let mut ev = self.evidence(d);
        // pci_for_each_dma_alias starts from pci_real_dma_dev(): for a function of an Intel VMD domain, the
        // VMD endpoint. Its group, if it has one, is the device's; otherwise the walk goes on from there.
        let src = match self.dma_src[d] {
            NONE => d,
            s => s as usize,
        };
        if src != d && self.group[src] != NONE {
            ev.group = self.group[src];
            ev.join = Join::Vmd { endpoint: self.addr(src) };
            return ev;
        }
        let walk = self.alias_walk(src);
        // A bridge of unknown PCIe type (only its 64-byte header was read) is walked as a conventional
        // bridge, which pulls everything below it into its group: that is a guess, so say so.
        for &r in &walk {
            if self.t.devices[r].pcie == Pcie::Unknown {
                self.uncertain.push(r as u32);
            }
        }
        ev.requester_id_walk = walk.iter().map(|&i| self.addr(i)).collect();
        // A. A device on the requester-ID walk that already has a group.
        for &r in &walk {
            if self.group[r] != NONE {
                ev.group = self.group[r];
                ev.join = Join::RequesterId { via: self.addr(r) };
                return ev;
            }
        }
        let mut p = walk.last().copied().unwrap_or(src);
        // B. Climb while the path to the root is not ACS-isolated.
        let mut cur = p;
        while let Some(b) = self.t.parent[cur] {
            let b = b as usize;
            let (isolated, blocker) = self.path_enabled(b);
            ev.hops.push(Hop {
                bridge: self.addr(b),
                isolated,
                blocker: (!isolated).then(|| (self.addr(blocker), self.verdict[blocker])),
            });
            if isolated {
                break;
            }
            p = b;
            if self.group[b] != NONE {
                ev.group = self.group[b];
                ev.join = Join::UpstreamBridge { bridge: self.addr(b) };
                return ev;
            }
            cur = b;
        }
        // C. Aliases and multifunction siblings of p.
        let mut visited = [0u64; 4];
        let found = match self.alias_search(p, &mut visited, p) {
            Some(r) => Some(r),
            None => self.function_search(p, &mut visited, p),
        };
        if let Some((g, join)) = found {
            ev.group = self.group[g];
            ev.join = join;
        }
        ev
    }
}

/// For each device, the VMD endpoint its DMA carries the requester ID of (NONE: itself), and for devices
/// of a VMD domain whose endpoint is not in the topology, that domain and endpoint. A device's domain is its
/// root's, so that a probe endpoint added below a VMD root port (`explain --slots`) counts as in the domain.
fn vmd_sources(t: &Topology, platform: &Platform) -> (Vec<u32>, Vec<Option<(u32, PciAddress)>>) {
    let n = t.devices.len();
    let mut src = vec![NONE; n];
    let mut absent = vec![None; n];
    if platform.vmd_domains.is_empty() {
        return (src, absent);
    }
    let mut root_domain = vec![0u32; n];
    // Probe order visits every parent before its children.
    for &i in &t.probe_order {
        let i = i as usize;
        root_domain[i] = match t.parent[i] {
            Some(p) => root_domain[p as usize],
            None => t.devices[i].address.domain,
        };
        let Some(ep) = platform.vmd_endpoint_of(root_domain[i]) else { continue };
        match t.index_of(ep) {
            Some(j) if j != i => src[i] = j as u32,
            Some(_) => {}
            None => absent[i] = Some((root_domain[i], ep)),
        }
    }
    (src, absent)
}

/// The PCIe type after the kernel's corrections for mislabelled switch ports.
fn corrected_type(t: &Topology, i: usize, corrected: &[Option<PortType>]) -> Option<PortType> {
    let Pcie::Yes(pt) = t.devices[i].pcie else { return None };
    let Some(p) = t.parent[i] else { return Some(pt) };
    let Some(parent) = corrected[p as usize] else { return Some(pt) };
    Some(match pt {
        PortType::DownstreamPort
            if matches!(parent, PortType::RootPort | PortType::DownstreamPort | PortType::PciToPcieBridge) =>
        {
            PortType::UpstreamPort
        }
        PortType::UpstreamPort if parent == PortType::UpstreamPort => PortType::DownstreamPort,
        other => other,
    })
}
