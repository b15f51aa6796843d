//! A guided run of the four things an IOMMU is for, on the model: **translation** (a device with a
//! narrow address range reaches a buffer anywhere), **bounce buffers** (what happens without
//! translation), **coalescing** (scattered pages seen as one contiguous DMA) and **isolation** (another
//! group's device, a blocked domain and an unattached device are all stopped, and each stop is recorded).
//!
//! [`tour()`] returns a [`TourReport`]: every step with what was done, what was observed and whether it
//! matched the claim, the fault records and every counter. It serializes to JSON and prints as text.
//!
//! The machine: three root ports without ACS at 00:1c.0, 00:1d.0 and 00:1e.0, each with an `edu` below
//! it (01:00.0, 02:00.0, 03:00.0), so the groups crate predicts three groups of two; 01 and 02 get
//! translated domains, 03 an identity domain. A fourth edu at 04:00.0 is in no group at all.

use std::fmt;

use iommu_groups::{predict, Device, Pcie, Platform, RuleSet, Topology};
use iommu_pci::{AcsState, HeaderKind, PciAddress, PortType};
use serde::Serialize;

use crate::dma::SgEntry;
use crate::edu::{self, reg, DmaOutcome, Edu, CMD_START, CMD_TO_RAM, DMA_BUFFER};
use crate::error::SimError;
use crate::fault::Fault;
use crate::sim::{GroupDomain, Sim, SimConfig, SimStats};
use crate::types::{DmaDir, DomainId, DomainMode, Rid};

/// One thing done and what came of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// What was done.
    pub action: String,
    /// What was observed.
    pub observed: String,
    /// Whether it is what the mechanism promises.
    pub ok: bool,
}

/// One mechanism and the steps that show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mechanism {
    /// `translation`, `bounce-buffer`, `coalescing` or `isolation`.
    pub name: &'static str,
    /// What the mechanism is for, in a sentence or two.
    pub claim: &'static str,
    /// The steps.
    pub steps: Vec<Step>,
    /// Whether every step was ok.
    pub ok: bool,
}

/// The whole tour.
#[derive(Clone, Debug, Serialize)]
pub struct TourReport {
    /// Whether every mechanism behaved as claimed.
    pub ok: bool,
    /// The predicted groups and the domain each got.
    pub groups: Vec<GroupDomain>,
    /// The mechanisms, in order.
    pub mechanisms: Vec<Mechanism>,
    /// The fault log at the end, oldest first.
    pub faults: Vec<Fault>,
    /// Faults the log dropped.
    pub dropped_faults: u64,
    /// Every counter at the end.
    pub stats: SimStats,
}

impl fmt::Display for TourReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "IOMMU groups and their domains:")?;
        for g in &self.groups {
            let devs: Vec<String> =
                g.devices.iter().map(|d| format!("{} (requester ID {})", d.address, d.rid)).collect();
            writeln!(f, "  group {} -> domain {}: {}", g.group, g.domain, devs.join(", "))?;
        }
        for m in &self.mechanisms {
            writeln!(f)?;
            writeln!(f, "== {} [{}]", m.name, if m.ok { "ok" } else { "FAILED" })?;
            writeln!(f, "   {}", m.claim)?;
            for (i, s) in m.steps.iter().enumerate() {
                writeln!(f, "  {}. {}", i + 1, s.action)?;
                writeln!(f, "     -> {}{}", s.observed, if s.ok { "" } else { "  [NOT AS CLAIMED]" })?;
            }
        }
        writeln!(f)?;
        writeln!(f, "Fault log ({} held, {} dropped):", self.faults.len(), self.dropped_faults)?;
        for x in &self.faults {
            writeln!(f, "  {}", x.dmar_line())?;
        }
        let s = &self.stats;
        writeln!(f)?;
        writeln!(f, "Counters:")?;
        writeln!(
            f,
            "  IOTLB: {} hits, {} misses, {} fills, {} evictions, {} invalidation commands ({} entries)",
            s.iotlb.hits,
            s.iotlb.misses,
            s.iotlb.fills,
            s.iotlb.evictions,
            s.iotlb.invalidations(),
            s.iotlb.entries_invalidated
        )?;
        writeln!(
            f,
            "  device accesses: {} reads, {} writes, {} bytes, {} blocked; {} translations, {} page walks",
            s.access.reads,
            s.access.writes,
            s.access.bytes,
            s.access.blocked,
            s.access.translations,
            s.access.page_walks
        )?;
        writeln!(
            f,
            "  page tables: {} live, {} allocated, {} freed",
            s.tables.live, s.tables.allocated, s.tables.freed
        )?;
        writeln!(
            f,
            "  DMA API: {} map_single, {} map_sg ({} entries -> {} segments), {} unmaps, {} bounced",
            s.dma.map_single, s.dma.map_sg, s.dma.sg_entries, s.dma.sg_segments, s.dma.unmaps, s.dma.bounced
        )?;
        writeln!(
            f,
            "  bounce pool: {} bytes to the device, {} bytes back to the CPU, high water {} slots",
            s.bounce.bytes_to_device, s.bounce.bytes_to_cpu, s.bounce.high_water
        )?;
        writeln!(f, "  faults: {} recorded, {} dropped", s.faults.recorded, s.faults.dropped)?;
        write!(f, "Result: {}", if self.ok { "every mechanism behaved as claimed" } else { "some step FAILED" })
    }
}

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap_or_else(|_| unreachable!("literal PCI address"))
}

fn topology() -> Result<Topology, String> {
    let dev = |a: &str, parent: Option<&str>, header, class, pt| Device {
        address: addr(a),
        parent: parent.map(addr),
        vendor: if header == HeaderKind::Normal { edu::VENDOR_ID } else { 0x8086 },
        device: if header == HeaderKind::Normal { edu::DEVICE_ID } else { 0x2940 },
        subsystem: None,
        class,
        header,
        multifunction: false,
        is_virtfn: false,
        pcie: Pcie::Yes(pt),
        acs: AcsState::Absent,
    };
    let mut devices = Vec::new();
    for (port, bus) in [("00:1c.0", "01"), ("00:1d.0", "02"), ("00:1e.0", "03")] {
        devices.push(dev(port, None, HeaderKind::Bridge, 0x060400, PortType::RootPort));
        devices.push(dev(&format!("{bus}:00.0"), Some(port), HeaderKind::Normal, 0x00ff00, PortType::Endpoint));
    }
    Topology::new(devices).map_err(|e| e.to_string())
}

/// Programs one edu DMA and reports what the device did.
fn edu_dma(e: &mut Edu, sim: &mut Sim, to_ram: bool, ram: u64, buf_off: u64, len: u64) -> Result<DmaOutcome, SimError> {
    let (src, dst) = if to_ram { (DMA_BUFFER + buf_off, ram) } else { (ram, DMA_BUFFER + buf_off) };
    e.write64(sim, reg::DMA_SRC, src)?;
    e.write64(sim, reg::DMA_DST, dst)?;
    e.write64(sim, reg::DMA_CNT, len)?;
    e.write64(sim, reg::DMA_CMD, CMD_START | if to_ram { CMD_TO_RAM } else { 0 })?;
    Ok(e.last_dma().cloned().unwrap_or(DmaOutcome::NoBusMaster))
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

fn mechanism(name: &'static str, claim: &'static str, steps: Vec<Step>) -> Mechanism {
    let ok = steps.iter().all(|s| s.ok);
    Mechanism { name, claim, steps, ok }
}

fn step(action: String, observed: String, ok: bool) -> Step {
    Step { action, observed, ok }
}

fn outcome_text(o: &DmaOutcome) -> String {
    match o {
        DmaOutcome::Done { addr, bytes } => format!("the device moved {bytes} bytes at device address {addr:#x}"),
        DmaOutcome::Faulted { fault } => format!("the IOMMU blocked it: {fault}"),
        DmaOutcome::NoBusMaster => "nothing moved: bus mastering is off".into(),
        DmaOutcome::OutsideBuffer { addr, count } => {
            format!("nothing moved: {count} bytes at {addr:#x} leave the buffer")
        }
        DmaOutcome::Failed { error } => format!("nothing moved: {error}"),
    }
}

/// The tour's machine once set up: the simulator and the four edus, bus mastering on, 28-bit DMA masks.
struct Lab {
    sim: Sim,
    /// The edus at 01:00.0, 02:00.0, 03:00.0 and 04:00.0 (the last in no group).
    edus: [Edu; 4],
    /// 01:00.0 (translated domain), 02:00.0 (another translated domain), 03:00.0 (identity domain).
    a: PciAddress,
    b: PciAddress,
    c: PciAddress,
    /// The domain of 01:00.0.
    da: DomainId,
}

impl Lab {
    /// Predicts the groups, attaches each to a translated domain, switches 03:00.0's to identity, and
    /// readies every edu.
    fn new() -> Result<(Self, Vec<GroupDomain>), SimError> {
        let mut sim = Sim::new(SimConfig::default())?;
        let topo = topology().map_err(|_| SimError::Config("the tour's topology is inconsistent"))?;
        let prediction = predict(&topo, &Platform::default(), RuleSet::Linux6);
        let groups = sim.attach_groups(&prediction, DomainMode::Translated)?;
        let (a, b, c) = (addr("01:00.0"), addr("02:00.0"), addr("03:00.0"));
        let rids = [Rid::from(a), Rid::from(b), Rid::from(c), Rid::from(addr("04:00.0"))];
        let dom = |x: PciAddress| sim.domain_of(Rid::from(x)).ok_or(SimError::NotAttached { rid: Rid::from(x) });
        let (da, dc) = (dom(a)?, dom(c)?);
        sim.set_domain_mode(dc, DomainMode::Identity)?;
        for r in rids {
            sim.set_dma_mask(r, edu::DMA_MASK_BITS)?;
        }
        let mut edus = rids.map(Edu::new);
        for e in &mut edus {
            e.enable_bus_master();
        }
        Ok((Self { sim, edus, a, b, c, da }, groups))
    }
}

/// Runs the tour on a fresh simulator (deterministic: same report every time). Errors only if the model
/// itself misbehaves.
pub fn tour() -> Result<TourReport, SimError> {
    let (mut lab, groups) = Lab::new()?;
    let mechanisms =
        vec![translation(&mut lab)?, bounce_buffer(&mut lab)?, coalescing(&mut lab)?, isolation(&mut lab)?];
    let sim = &lab.sim;
    Ok(TourReport {
        ok: mechanisms.iter().all(|m| m.ok),
        groups,
        mechanisms,
        faults: sim.faults().entries().copied().collect(),
        dropped_faults: sim.faults().dropped(),
        stats: sim.stats(),
    })
}

/// Mechanism 1, translation: a buffer at 6 GiB reaches a 28-bit device through its domain, the IOTLB
/// misses then hits, and an unmapped IOVA faults.
fn translation(lab: &mut Lab) -> Result<Mechanism, SimError> {
    let Lab { sim, edus, a, da, .. } = lab;
    let (a, da, ra, edu_a) = (*a, *da, Rid::from(*a), &mut edus[0]);
    let mut steps = Vec::new();
    let buf = 0x1_8000_0000u64; // 6 GiB: far beyond 28 address bits
    let msg = pattern(0x11, 256);
    sim.memory().write(buf, &msg)?;
    let m = sim.map_single(ra, buf, msg.len() as u64, DmaDir::ToDevice)?;
    let leaf = sim.lookup(da, m.addr())?;
    steps.push(step(
        format!(
            "dma_map_single: 256 bytes at physical {buf:#x} for {a} (edu: 28-bit DMA mask, so it cannot address the buffer)"
        ),
        format!(
            "IOVA {:#x} in domain {da}, below 2^28; the page table maps it with a {} leaf to physical {:#x} ({})",
            m.addr(),
            leaf.map_or("missing".into(), |l| l.size.to_string()),
            leaf.map_or(0, |l| l.phys),
            leaf.map_or("-".into(), |l| l.perm.to_string()),
        ),
        m.addr() < 1 << 28 && leaf.is_some_and(|l| l.phys == buf & !0xfff),
    ));
    let before = sim.stats();
    let o = edu_dma(edu_a, sim, false, m.addr(), 0, 128)?;
    let mid = sim.stats();
    let o2 = edu_dma(edu_a, sim, false, m.addr() + 128, 128, 128)?;
    let after = sim.stats();
    let got_ok = edu_a.buffer()[..256] == msg[..];
    steps.push(step(
        format!("edu {a} reads the first 128 bytes by DMA from IOVA {:#x}", m.addr()),
        format!(
            "{}; the IOTLB missed ({} miss) and the IOMMU walked the 4-level table ({} walk), then cached the leaf",
            outcome_text(&o),
            mid.iotlb.misses - before.iotlb.misses,
            mid.access.page_walks - before.access.page_walks
        ),
        matches!(o, DmaOutcome::Done { .. }) && mid.access.page_walks - before.access.page_walks == 1,
    ));
    steps.push(step(
        format!("edu {a} reads the next 128 bytes from IOVA {:#x}", m.addr() + 128),
        format!(
            "{}; this time the IOTLB hit ({} hit, {} walks); the device buffer now equals the 256 bytes at {buf:#x}: {got_ok}",
            outcome_text(&o2),
            after.iotlb.hits - mid.iotlb.hits,
            after.access.page_walks - mid.access.page_walks
        ),
        matches!(o2, DmaOutcome::Done { .. }) && after.iotlb.hits - mid.iotlb.hits == 1 && got_ok,
    ));
    let iova = m.addr();
    sim.unmap_single(m)?;
    let o3 = edu_dma(edu_a, sim, false, iova, 0, 16)?;
    steps.push(step(
        format!("dma_unmap_single (strict), then edu {a} reads IOVA {iova:#x} again"),
        outcome_text(&o3),
        matches!(o3, DmaOutcome::Faulted { .. }),
    ));
    Ok(mechanism(
        "translation",
        "The IOMMU translates each device's I/O virtual addresses to physical memory, so a device with a narrow address range reaches any buffer without copying.",
        steps,
    ))
}

/// Mechanism 2, bounce buffers: the identity-mapped 28-bit device gets a copy in the bounce pool, both ways.
fn bounce_buffer(lab: &mut Lab) -> Result<Mechanism, SimError> {
    let Lab { sim, edus, c, .. } = lab;
    let (c, rc, edu_c) = (*c, Rid::from(*c), &mut edus[2]);
    let mut steps = Vec::new();
    let high = 0x1_4000_0000u64; // 5 GiB
    let out = pattern(0x22, 512);
    sim.memory().write(high, &out)?;
    let m = sim.map_single(rc, high, out.len() as u64, DmaDir::ToDevice)?;
    let bounced_to = m.addr();
    steps.push(step(
        format!("dma_map_single: 512 bytes at physical {high:#x} for {c}, whose domain is identity (no translation) and whose DMA mask is 28 bits"),
        format!(
            "the buffer is out of reach, so the DMA API copied it into the bounce pool: DMA address {bounced_to:#x} ({})",
            match m.kind() {
                crate::MappingKind::Bounced { orig, slots } => format!("{slots} slot(s), copied from {orig:#x}"),
                k => format!("{k:?}"),
            }
        ),
        bounced_to < 1 << 28 && bounced_to != high,
    ));
    let o = edu_dma(edu_c, sim, false, bounced_to, 0, 512)?;
    let same = edu_c.buffer()[..512] == out[..];
    steps.push(step(
        format!("edu {c} reads 512 bytes at {bounced_to:#x}"),
        format!("{}; it received the buffer's bytes: {same}", outcome_text(&o)),
        matches!(o, DmaOutcome::Done { .. }) && same,
    ));
    sim.unmap_single(m)?;
    let incoming = pattern(0x33, 512);
    sim.memory().fill(high, 512, 0)?;
    let m = sim.map_single(rc, high, 512, DmaDir::FromDevice)?;
    edu_c.buffer_mut()[..512].copy_from_slice(&incoming);
    let o = edu_dma(edu_c, sim, true, m.addr(), 0, 512)?;
    let before_unmap = sim.memory().read_vec(high, 512)? == incoming;
    let to_cpu_before = sim.stats().bounce.bytes_to_cpu;
    sim.unmap_single(m)?;
    let after_unmap = sim.memory().read_vec(high, 512)? == incoming;
    let copied = sim.stats().bounce.bytes_to_cpu - to_cpu_before;
    steps.push(step(
        format!("dma_map_single FROM_DEVICE for the same buffer; edu {c} writes 512 bytes, then dma_unmap_single"),
        format!(
            "{}; the data reached the buffer only when unmap copied the bounce slot back ({copied} bytes): before unmap {before_unmap}, after {after_unmap}",
            outcome_text(&o)
        ),
        matches!(o, DmaOutcome::Done { .. }) && !before_unmap && after_unmap,
    ));
    Ok(mechanism(
        "bounce-buffer",
        "Without translation a 28- or 32-bit device cannot reach memory above its mask, so the kernel copies through low 'bounce' slots (swiotlb) — in both directions, at a cost the IOMMU avoids.",
        steps,
    ))
}

/// Mechanism 3, coalescing: three scattered pages become one IOVA range and one segment (three with a
/// 4 KiB segment limit), and a read across a seam gets both pages' bytes.
fn coalescing(lab: &mut Lab) -> Result<Mechanism, SimError> {
    let Lab { sim, edus, a, .. } = lab;
    let (a, ra, edu_a) = (*a, Rid::from(*a), &mut edus[0]);
    let mut steps = Vec::new();
    let pages = [0x3000_0000u64, 0x2_0000_0000, 0x7654_3000];
    for (i, p) in pages.iter().enumerate() {
        sim.memory().write(*p, &pattern(0xa0 + i as u8, 4096))?;
    }
    let entries: Vec<SgEntry> = pages.iter().map(|&phys| SgEntry { phys, len: 4096 }).collect();
    let sg = sim.map_sg(ra, &entries, DmaDir::Bidirectional)?;
    let (start, len) = sg.iova_range().unwrap_or((0, 0));
    steps.push(step(
        format!(
            "dma_map_sg: three 4 KiB pages scattered at {:#x}, {:#x} and {:#x}, for {a}",
            pages[0], pages[1], pages[2]
        ),
        format!(
            "one IOVA range {start:#x}..{:#x} ({len} bytes) and {} device-visible segment(s): {:?}",
            start + len,
            sg.segments().len(),
            sg.segments().iter().map(|s| format!("{:#x}+{:#x}", s.addr, s.len)).collect::<Vec<_>>()
        ),
        len == 3 * 4096 && sg.segments().len() == 1,
    ));
    let o = edu_dma(edu_a, sim, false, start + 4096 - 1024, 0, 2048)?;
    let mut want = pattern(0xa0, 4096)[3072..].to_vec();
    want.extend_from_slice(&pattern(0xa1, 4096)[..1024]);
    let seam = edu_a.buffer()[..2048] == want[..];
    steps.push(step(
        format!("edu {a} reads 2048 bytes at IOVA {:#x}, across the seam of the first two pages", start + 4096 - 1024),
        format!("{}; it got the last KiB of page 1 followed by the first KiB of page 2: {seam}", outcome_text(&o)),
        matches!(o, DmaOutcome::Done { .. }) && seam,
    ));
    sim.unmap_sg(sg)?;
    steps.push(segment_limit_step(sim, ra, &entries)?);
    Ok(mechanism(
        "coalescing",
        "Scattered pages can be handed to a device as one contiguous DMA range, because the IOMMU makes them contiguous in I/O virtual address space.",
        steps,
    ))
}

/// The same scatter list for a device with a 4 KiB maximum segment size: one range, three segments.
fn segment_limit_step(sim: &mut Sim, ra: Rid, entries: &[SgEntry]) -> Result<Step, SimError> {
    let p = sim.dma_params(ra);
    sim.set_dma_params(ra, crate::DmaParams { max_segment_size: 4096, ..p })?;
    let sg = sim.map_sg(ra, entries, DmaDir::ToDevice)?;
    let n = sg.segments().len();
    let one_range = sg.iova_range().is_some_and(|(_, l)| l == 3 * 4096);
    sim.unmap_sg(sg)?;
    sim.set_dma_params(ra, p)?;
    Ok(step(
        "the same list for a device whose maximum segment size is 4 KiB".to_string(),
        format!("still one IOVA range ({one_range}), but {n} segments: the limit is honoured"),
        one_range && n == 3,
    ))
}

/// Mechanism 4, isolation: another group's device, a blocked domain and an unattached device are all
/// stopped and recorded; the owner still reaches its buffer.
fn isolation(lab: &mut Lab) -> Result<Mechanism, SimError> {
    let Lab { sim, edus, a, b, da, .. } = lab;
    let (a, b, da, ra, rb) = (*a, *b, *da, Rid::from(*a), Rid::from(*b));
    let [edu_a, edu_b, _, edu_d] = edus;
    let mut steps = Vec::new();
    let secret = 0x2_4000_0000u64;
    sim.memory().write(secret, b"group 01's data, not 02's")?;
    let m = sim.map_single(ra, secret, 4096, DmaDir::Bidirectional)?;
    let target = m.addr();
    edu_b.buffer_mut().fill(0xee);
    let o = edu_dma(edu_b, sim, true, target, 0, 64)?;
    let intact = sim.memory().read_vec(secret, 25)? == b"group 01's data, not 02's";
    steps.push(step(
        format!(
            "edu {b} (another group, its own domain) writes 64 bytes at IOVA {target:#x}, where {a}'s buffer is mapped"
        ),
        format!("{}; {a}'s buffer intact: {intact}", outcome_text(&o)),
        matches!(&o, DmaOutcome::Faulted { fault } if fault.rid == rb) && intact,
    ));
    let o = edu_dma(edu_a, sim, false, target, 0, 25)?;
    steps.push(step(
        format!("edu {a} reads the same IOVA in its own domain"),
        outcome_text(&o),
        matches!(o, DmaOutcome::Done { .. }),
    ));
    sim.set_domain_mode(da, DomainMode::Blocked)?;
    edu_a.buffer_mut().fill(0xbb);
    let o = edu_dma(edu_a, sim, true, target, 0, 64)?;
    let intact = sim.memory().read_vec(secret, 25)? == b"group 01's data, not 02's";
    steps.push(step(
        format!("{a}'s domain is switched to blocked (as while its group changes owner); edu {a} writes its own IOVA {target:#x}"),
        format!("{}; memory intact: {intact}", outcome_text(&o)),
        matches!(&o, DmaOutcome::Faulted { fault } if fault.reason == crate::FaultReason::Blocked) && intact,
    ));
    sim.set_domain_mode(da, DomainMode::Translated)?;
    let o = edu_dma(edu_d, sim, true, target, 0, 64)?;
    let intact = sim.memory().read_vec(secret, 25)? == b"group 01's data, not 02's";
    steps.push(step(
        format!("edu {}, attached to no domain (no context entry), writes the same address", addr("04:00.0")),
        outcome_text(&o),
        matches!(&o, DmaOutcome::Faulted { fault } if fault.vtd_code == 0x02) && intact,
    ));
    sim.unmap_single(m)?;
    let held = sim.faults().len();
    steps.push(step(
        "read the fault log".to_string(),
        format!(
            "{held} faults recorded with requester ID, address, access kind and VT-d reason; none of the blocked accesses touched memory"
        ),
        held >= 4,
    ));
    Ok(mechanism(
        "isolation",
        "With PCIe requester IDs the IOMMU gives every group its own address space: a device reaches only what its own domain maps, and everything else is blocked and recorded.",
        steps,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tour_shows_every_mechanism_working() {
        let r = tour().unwrap();
        for m in &r.mechanisms {
            for s in &m.steps {
                assert!(s.ok, "{}: {} -> {}", m.name, s.action, s.observed);
            }
        }
        assert!(r.ok);
        assert_eq!(r.groups.len(), 3);
        assert!(r.groups.iter().all(|g| g.devices.len() == 2));
        let names: Vec<&str> = r.mechanisms.iter().map(|m| m.name).collect();
        assert_eq!(names, ["translation", "bounce-buffer", "coalescing", "isolation"]);
        assert!(r.faults.iter().any(|f| f.vtd_code == 0x02));
        let text = r.to_string();
        assert!(text.contains("== isolation [ok]"), "{text}");
        assert!(text.contains("fault reason 0x05"), "{text}");
    }
}
