//! The DMA API a driver uses on top of the IOMMU, shaped like Linux's: `map_single`, `map_sg`, unmaps,
//! syncs, a DMA mask and segment limits per device.
//!
//! What a mapping becomes depends on the device's domain:
//!
//! - **Translated**: an IOVA range is allocated below the device's DMA limit ([`crate::iova`]) and
//!   mapped to the buffer's pages, so a device with a narrow mask reaches memory anywhere. The whole
//!   pages are mapped: the device can also reach the rest of the first and last page (as on real
//!   hardware). Unmapping follows the domain's [`Invalidation`] mode.
//! - **Identity**: the DMA address is the physical address when the device can reach it; otherwise the
//!   buffer is **bounced** through the pool ([`crate::bounce`]): copied into low slots on map (always,
//!   in every direction, so a device that writes only part of the buffer cannot leak old pool contents
//!   back into it), copied back on unmap and `sync_*_for_cpu` when the device writes, and refreshed by
//!   `sync_*_for_device` when it reads.
//! - **Blocked**: refused ([`SimError::DomainBlocked`]).
//!
//! A domain should be used either through this API or through the IOMMU API ([`Sim::map`]), not both:
//! the IOVA allocator does not know about IOMMU-API mappings (a clash fails with
//! [`SimError::AlreadyMapped`] rather than corrupting anything).

use serde::Serialize;

use crate::error::SimError;
use crate::sim::{Invalidation, Sim};
use crate::types::{
    mask_limit, page_align_down, page_align_up, DmaDir, DomainId, DomainMode, PageSize, Perm, Rid, PAGE_SIZE,
};

/// A device's DMA parameters (Linux: `dma_mask` and `dma_parms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DmaParams {
    /// Address bits the device drives (12..=64).
    pub mask_bits: u32,
    /// Largest segment the device takes in one descriptor, in bytes (≥ 4 KiB).
    pub max_segment_size: u64,
    /// Segments never cross a multiple of this (a power of two ≥ 4 KiB).
    pub segment_boundary: u64,
}

impl Default for DmaParams {
    /// Linux's defaults for a PCI device: 32-bit mask, 64 KiB segments, 4 GiB boundary.
    fn default() -> Self {
        Self { mask_bits: 32, max_segment_size: 64 << 10, segment_boundary: 1 << 32 }
    }
}

/// How a mapping reaches its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum MappingKind {
    /// Through the domain's page table.
    Translated {
        /// The IOVA range allocated (page-aligned, may be larger than the buffer).
        iova_base: u64,
        /// Its length.
        iova_len: u64,
    },
    /// Identity, reachable: the DMA address is the buffer's physical address.
    Direct,
    /// Identity, out of reach: the DMA address is a bounce slot.
    Bounced {
        /// The buffer's physical address.
        orig: u64,
        /// Slots taken.
        slots: u64,
    },
}

/// A live `map_single` mapping. Give it back to [`Sim::unmap_single`].
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct DmaMapping {
    id: u64,
    rid: Rid,
    addr: u64,
    len: u64,
    dir: DmaDir,
    kind: MappingKind,
}

impl DmaMapping {
    /// The device.
    pub fn rid(&self) -> Rid {
        self.rid
    }
    /// The address to give the device.
    pub fn addr(&self) -> u64 {
        self.addr
    }
    /// The buffer's length.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Whether the length is zero (never, for a live mapping).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The direction.
    pub fn dir(&self) -> DmaDir {
        self.dir
    }
    /// How it reaches the buffer.
    pub fn kind(&self) -> MappingKind {
        self.kind
    }
    /// Its handle ID.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// One buffer of a scatter-gather list: physical address and length (any alignment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SgEntry {
    /// Physical address.
    pub phys: u64,
    /// Length in bytes.
    pub len: u64,
}

/// One device-visible DMA segment: what a descriptor would hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DmaSegment {
    /// DMA address.
    pub addr: u64,
    /// Length.
    pub len: u64,
}

/// A live `map_sg` mapping. Give it back to [`Sim::unmap_sg`].
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct SgMapping {
    id: u64,
    rid: Rid,
    dir: DmaDir,
    iova: Option<(u64, u64)>,
    entry_addrs: Vec<u64>,
    segments: Vec<DmaSegment>,
    #[serde(skip)]
    parts: Vec<DmaMapping>,
}

impl SgMapping {
    /// The device.
    pub fn rid(&self) -> Rid {
        self.rid
    }
    /// The direction.
    pub fn dir(&self) -> DmaDir {
        self.dir
    }
    /// The one contiguous IOVA range allocated for the whole list, `(start, length)` (translated
    /// domains; padding between entries that could not be packed stays unmapped).
    pub fn iova_range(&self) -> Option<(u64, u64)> {
        self.iova
    }
    /// The DMA address of each input entry.
    pub fn entry_addrs(&self) -> &[u64] {
        &self.entry_addrs
    }
    /// The device-visible segments after coalescing (each ≤ the maximum segment size, none crossing
    /// the segment boundary).
    pub fn segments(&self) -> &[DmaSegment] {
        &self.segments
    }
    /// Its handle ID.
    pub fn id(&self) -> u64 {
        self.id
    }
}

#[derive(Debug)]
pub(crate) enum Record {
    Translated { rid: Rid, domain: DomainId, base: u64, len: u64, pieces: Vec<(u64, u64)> },
    Direct { rid: Rid },
    Bounced { rid: Rid, orig: u64, bounce: u64, len: u64, dir: DmaDir, slot: usize, slots: usize },
}

impl Record {
    fn rid(&self) -> Rid {
        match self {
            Record::Translated { rid, .. } | Record::Direct { rid } | Record::Bounced { rid, .. } => *rid,
        }
    }
}

/// Largest page size that `phys` is aligned to and `len` covers at least once (for IOVA alignment, so
/// large buffers can get large pages).
fn natural_align(phys: u64, len: u64) -> u64 {
    [PageSize::Size1G, PageSize::Size2M]
        .into_iter()
        .find(|s| phys.is_multiple_of(s.bytes()) && len >= s.bytes())
        .map_or(PAGE_SIZE, PageSize::bytes)
}

/// Appends the DMA range `addr..addr+len` to `segs`: merged into the last segment when contiguous and
/// within both limits, otherwise as new segments split at `max_seg` and at `boundary` multiples.
fn push_segments(segs: &mut Vec<DmaSegment>, addr: u64, len: u64, max_seg: u64, boundary: u64) {
    if let Some(last) = segs.last_mut() {
        let contiguous = last.addr + last.len == addr;
        let fits = last.len + len <= max_seg;
        let same_window = last.addr / boundary == (addr + len - 1) / boundary;
        if contiguous && fits && same_window {
            last.len += len;
            return;
        }
    }
    let (mut a, mut left) = (addr, len);
    while left > 0 {
        let to_boundary = boundary - a % boundary;
        let n = left.min(max_seg).min(to_boundary);
        segs.push(DmaSegment { addr: a, len: n });
        a += n;
        left -= n;
    }
}

impl Sim {
    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sets the device's DMA parameters.
    pub fn set_dma_params(&mut self, rid: Rid, p: DmaParams) -> Result<(), SimError> {
        let what = if !(12..=64).contains(&p.mask_bits) {
            Some("the DMA mask must have 12 to 64 bits")
        } else if p.max_segment_size < PAGE_SIZE {
            Some("the maximum segment size must be at least 4 KiB")
        } else if !p.segment_boundary.is_power_of_two() || p.segment_boundary < PAGE_SIZE {
            Some("the segment boundary must be a power of two of at least 4 KiB")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(SimError::InvalidDmaParams { rid, what });
        }
        self.dma_params.insert(rid, p);
        Ok(())
    }

    /// Sets only the device's DMA mask.
    pub fn set_dma_mask(&mut self, rid: Rid, bits: u32) -> Result<(), SimError> {
        self.set_dma_params(rid, DmaParams { mask_bits: bits, ..self.dma_params(rid) })
    }

    /// The device's DMA parameters ([`DmaParams::default`] until set).
    pub fn dma_params(&self, rid: Rid) -> DmaParams {
        self.dma_params.get(&rid).copied().unwrap_or_default()
    }

    fn dma_domain(&self, rid: Rid) -> Result<(DomainId, DomainMode), SimError> {
        let d = self.domain_of(rid).ok_or(SimError::NotAttached { rid })?;
        match self.domain_mode(d)? {
            DomainMode::Blocked => Err(SimError::DomainBlocked { rid, domain: d }),
            m => Ok((d, m)),
        }
    }

    /// Maps one buffer of `len` bytes at physical address `phys` for device `rid`, in direction `dir`.
    /// Returns the handle whose [`DmaMapping::addr`] the device should use.
    pub fn map_single(&mut self, rid: Rid, phys: u64, len: u64, dir: DmaDir) -> Result<DmaMapping, SimError> {
        self.poll_flush_queue();
        if len == 0 {
            return Err(SimError::ZeroLength { addr: phys });
        }
        if !self.memory.contains(phys, len) {
            return Err(SimError::PhysOutOfRange { addr: phys, len });
        }
        let (domain, mode) = self.dma_domain(rid)?;
        let limit = mask_limit(self.dma_params(rid).mask_bits);
        let id = self.new_id();
        let (addr, kind, record) = if mode == DomainMode::Translated {
            let base = page_align_down(phys);
            let span = page_align_up(phys - base + len).ok_or(SimError::PhysOutOfRange { addr: phys, len })?;
            let iova = self.alloc_iova(rid, domain, span, natural_align(base, span), limit)?;
            if let Err(e) = self.dom_mut(domain)?.table.map(iova, base, span, Perm::from(dir)) {
                self.dom_mut(domain)?.iova.free(iova);
                return Err(e);
            }
            self.dma_stats.translated += 1;
            (
                iova + (phys - base),
                MappingKind::Translated { iova_base: iova, iova_len: span },
                Record::Translated { rid, domain, base: iova, len: span, pieces: vec![(iova, span)] },
            )
        } else if phys.checked_add(len - 1).is_some_and(|last| last <= limit) {
            self.dma_stats.direct += 1;
            (phys, MappingKind::Direct, Record::Direct { rid })
        } else {
            let (bounce, slot, slots) = self.bounce_in(rid, phys, len, limit)?;
            self.dma_stats.bounced += 1;
            (
                bounce,
                MappingKind::Bounced { orig: phys, slots: slots as u64 },
                Record::Bounced { rid, orig: phys, bounce, len, dir, slot, slots },
            )
        };
        self.records.insert(id, record);
        self.dma_stats.map_single += 1;
        Ok(DmaMapping { id, rid, addr, len, dir, kind })
    }

    fn alloc_iova(&mut self, rid: Rid, domain: DomainId, len: u64, align: u64, limit: u64) -> Result<u64, SimError> {
        if let Some(iova) = self.dom_mut(domain)?.iova.alloc(len, align, limit) {
            return Ok(iova);
        }
        // IOVAs held by the lazy queue may be what is missing: flush and retry once.
        if !self.fq.is_empty() {
            self.flush_lazy();
            if let Some(iova) = self.dom_mut(domain)?.iova.alloc(len, align, limit) {
                return Ok(iova);
            }
        }
        Err(SimError::IovaExhausted { rid, len, limit })
    }

    fn bounce_in(&mut self, rid: Rid, phys: u64, len: u64, limit: u64) -> Result<(u64, usize, usize), SimError> {
        let pool_end = self.bounce.config().last_addr();
        if pool_end > limit {
            return Err(SimError::BounceUnreachable { rid, pool_end, limit });
        }
        let slots = self.bounce.slots_for(len);
        let slot = usize::try_from(slots).ok().and_then(|n| self.bounce.alloc(n)).ok_or(SimError::BounceExhausted {
            rid,
            len,
            slots,
        })?;
        let bounce = self.bounce.addr(slot);
        if let Err(e) = self.memory.copy(phys, bounce, len as usize) {
            self.bounce.free(slot, slots as usize);
            return Err(e);
        }
        self.bounce.stats.bytes_to_device += len;
        Ok((bounce, slot, slots as usize))
    }

    /// Unmaps a `map_single` mapping. Bounced mappings the device may have written are copied back
    /// first; translated ones are invalidated now (strict) or queued (lazy).
    pub fn unmap_single(&mut self, m: DmaMapping) -> Result<(), SimError> {
        self.unmap_id(m.rid, m.id)?;
        self.dma_stats.unmaps += 1;
        self.poll_flush_queue();
        Ok(())
    }

    fn unmap_id(&mut self, rid: Rid, id: u64) -> Result<(), SimError> {
        match self.records.get(&id) {
            Some(r) if r.rid() == rid => {}
            _ => return Err(SimError::UnknownMapping { rid, id }),
        }
        let Some(record) = self.records.remove(&id) else { return Err(SimError::UnknownMapping { rid, id }) };
        match record {
            Record::Direct { .. } => Ok(()),
            Record::Bounced { orig, bounce, len, dir, slot, slots, .. } => {
                let res = if dir.device_writes() { self.bounce_out(bounce, orig, len) } else { Ok(()) };
                self.bounce.free(slot, slots);
                res
            }
            Record::Translated { domain, base, len, pieces, .. } => {
                let inv = self.dom(domain)?.invalidation;
                for (iova, n) in pieces {
                    self.dom_mut(domain)?.table.unmap(iova, n)?;
                }
                match inv {
                    Invalidation::Strict => {
                        self.iotlb.invalidate_range(domain.0, base, len);
                        self.dom_mut(domain)?.iova.free(base);
                    }
                    Invalidation::Lazy => self.queue_lazy(domain.0, base),
                }
                Ok(())
            }
        }
    }

    fn bounce_out(&mut self, bounce: u64, orig: u64, len: u64) -> Result<(), SimError> {
        self.memory.copy(bounce, orig, len as usize)?;
        self.bounce.stats.bytes_to_cpu += len;
        Ok(())
    }

    fn sync_id(&mut self, rid: Rid, id: u64, for_cpu: bool) -> Result<(), SimError> {
        let Some(r) = self.records.get(&id).filter(|r| r.rid() == rid) else {
            return Err(SimError::UnknownMapping { rid, id });
        };
        if let Record::Bounced { orig, bounce, len, dir, .. } = *r {
            if for_cpu && dir.device_writes() {
                self.bounce_out(bounce, orig, len)?;
            } else if !for_cpu && dir.device_reads() {
                self.memory.copy(orig, bounce, len as usize)?;
                self.bounce.stats.bytes_to_device += len;
            }
        }
        Ok(())
    }

    /// Makes what the device wrote visible to the CPU (copies a bounced buffer back; nothing to do
    /// otherwise on this cache-coherent model).
    pub fn sync_for_cpu(&mut self, m: &DmaMapping) -> Result<(), SimError> {
        self.sync_id(m.rid, m.id, true)?;
        self.dma_stats.syncs_for_cpu += 1;
        Ok(())
    }

    /// Makes what the CPU wrote visible to the device (refreshes a bounced buffer).
    pub fn sync_for_device(&mut self, m: &DmaMapping) -> Result<(), SimError> {
        self.sync_id(m.rid, m.id, false)?;
        self.dma_stats.syncs_for_device += 1;
        Ok(())
    }

    /// Maps a scatter-gather list for device `rid`.
    ///
    /// In a translated domain the buffers are laid out back to back in **one** IOVA range below the DMA
    /// limit: each keeps its offset inside its first page, and an entry that would cross a segment
    /// boundary starts at the next boundary instead. Contiguous results are merged into device-visible
    /// segments no longer than the maximum segment size and not crossing the boundary — page-aligned
    /// buffers scattered anywhere in memory become one segment. In an identity domain each entry is
    /// mapped (or bounced) on its own and only physically contiguous entries merge.
    pub fn map_sg(&mut self, rid: Rid, entries: &[SgEntry], dir: DmaDir) -> Result<SgMapping, SimError> {
        self.poll_flush_queue();
        if entries.is_empty() {
            return Err(SimError::ZeroLength { addr: 0 });
        }
        for e in entries {
            if e.len == 0 {
                return Err(SimError::ZeroLength { addr: e.phys });
            }
            if !self.memory.contains(e.phys, e.len) {
                return Err(SimError::PhysOutOfRange { addr: e.phys, len: e.len });
            }
        }
        let (domain, mode) = self.dma_domain(rid)?;
        let p = self.dma_params(rid);
        let (max_seg, boundary) = (p.max_segment_size, p.segment_boundary);
        let mut segments = Vec::new();
        let sg = if mode == DomainMode::Translated {
            // Layout relative to the start of the range.
            let mut cursor = 0u64;
            let mut placed = Vec::with_capacity(entries.len());
            for e in entries {
                let base = page_align_down(e.phys);
                let span = page_align_up(e.phys - base + e.len)
                    .ok_or(SimError::PhysOutOfRange { addr: e.phys, len: e.len })?;
                if span <= boundary && cursor / boundary != (cursor + span - 1) / boundary {
                    cursor = cursor.div_ceil(boundary) * boundary;
                }
                placed.push((cursor, base, span, e.phys - base));
                cursor += span;
            }
            let total = cursor;
            let align = if total <= boundary { total.next_power_of_two().max(PAGE_SIZE) } else { boundary };
            let limit = mask_limit(p.mask_bits);
            let iova = self.alloc_iova(rid, domain, total, align.min(boundary), limit)?;
            let mut pieces = Vec::with_capacity(placed.len());
            for &(off, base, span, _) in &placed {
                if let Err(e) = self.dom_mut(domain)?.table.map(iova + off, base, span, Perm::from(dir)) {
                    for &(i, n) in &pieces {
                        self.dom_mut(domain)?.table.unmap(i, n)?;
                    }
                    self.dom_mut(domain)?.iova.free(iova);
                    return Err(e);
                }
                pieces.push((iova + off, span));
            }
            let mut entry_addrs = Vec::with_capacity(entries.len());
            for (e, &(off, _, _, page_off)) in entries.iter().zip(&placed) {
                let addr = iova + off + page_off;
                entry_addrs.push(addr);
                push_segments(&mut segments, addr, e.len, max_seg, boundary);
            }
            let id = self.new_id();
            self.records.insert(id, Record::Translated { rid, domain, base: iova, len: total, pieces });
            self.dma_stats.translated += 1;
            SgMapping { id, rid, dir, iova: Some((iova, total)), entry_addrs, segments, parts: Vec::new() }
        } else {
            let mut parts: Vec<DmaMapping> = Vec::with_capacity(entries.len());
            for e in entries {
                match self.map_single(rid, e.phys, e.len, dir) {
                    Ok(m) => parts.push(m),
                    Err(err) => {
                        self.dma_stats.map_single -= parts.len() as u64;
                        for m in parts {
                            self.unmap_id(m.rid, m.id)?;
                        }
                        return Err(err);
                    }
                }
            }
            // Those were counted as single maps; count them as one sg map instead.
            self.dma_stats.map_single -= parts.len() as u64;
            let entry_addrs: Vec<u64> = parts.iter().map(|m| m.addr).collect();
            for m in &parts {
                push_segments(&mut segments, m.addr, m.len, max_seg, boundary);
            }
            let id = self.new_id();
            SgMapping { id, rid, dir, iova: None, entry_addrs, segments, parts }
        };
        self.dma_stats.map_sg += 1;
        self.dma_stats.sg_entries += entries.len() as u64;
        self.dma_stats.sg_segments += sg.segments.len() as u64;
        Ok(sg)
    }

    /// Unmaps a scatter-gather mapping (one invalidation command for its whole IOVA range in strict
    /// mode).
    pub fn unmap_sg(&mut self, sg: SgMapping) -> Result<(), SimError> {
        if sg.parts.is_empty() {
            self.unmap_id(sg.rid, sg.id)?;
        } else {
            for m in sg.parts {
                self.unmap_id(m.rid, m.id)?;
            }
        }
        self.dma_stats.unmaps += 1;
        self.poll_flush_queue();
        Ok(())
    }

    /// [`Sim::sync_for_cpu`] for every entry.
    pub fn sync_sg_for_cpu(&mut self, sg: &SgMapping) -> Result<(), SimError> {
        for m in &sg.parts {
            self.sync_id(m.rid, m.id, true)?;
        }
        if sg.parts.is_empty() {
            self.sync_id(sg.rid, sg.id, true)?;
        }
        self.dma_stats.syncs_for_cpu += 1;
        Ok(())
    }

    /// [`Sim::sync_for_device`] for every entry.
    pub fn sync_sg_for_device(&mut self, sg: &SgMapping) -> Result<(), SimError> {
        for m in &sg.parts {
            self.sync_id(m.rid, m.id, false)?;
        }
        if sg.parts.is_empty() {
            self.sync_id(sg.rid, sg.id, false)?;
        }
        self.dma_stats.syncs_for_device += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_merge_when_contiguous_and_split_at_limits() {
        let mut s = Vec::new();
        push_segments(&mut s, 0x1000, 0x1000, 0x10000, 1 << 32);
        push_segments(&mut s, 0x2000, 0x1000, 0x10000, 1 << 32);
        assert_eq!(s, [DmaSegment { addr: 0x1000, len: 0x2000 }]);
        // Too long to merge: a new segment.
        let mut s = vec![DmaSegment { addr: 0, len: 0x3000 }];
        push_segments(&mut s, 0x3000, 0x2000, 0x4000, 1 << 32);
        assert_eq!(s.len(), 2);
        // One long entry is split at the maximum size and at the boundary.
        let mut s = Vec::new();
        push_segments(&mut s, 0xe000, 0x5000, 0x2000, 0x10000);
        assert_eq!(
            s,
            [
                DmaSegment { addr: 0xe000, len: 0x2000 },
                DmaSegment { addr: 0x10000, len: 0x2000 },
                DmaSegment { addr: 0x12000, len: 0x1000 }
            ]
        );
    }

    #[test]
    fn natural_alignment_follows_the_buffer() {
        assert_eq!(natural_align(0x20_0000, 0x20_0000), 0x20_0000);
        assert_eq!(natural_align(0x20_0000, 0x1000), 0x1000);
        assert_eq!(natural_align(0x4000_0000, 0x4000_0000), 0x4000_0000);
        assert_eq!(natural_align(0x1000, 0x40_0000), 0x1000);
    }
}
