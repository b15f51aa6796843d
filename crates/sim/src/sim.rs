//! The simulator core: memory, domains, attachment by requester ID, the IOMMU API (map/unmap into a
//! domain's page table), device-side translation through the IOTLB, faults, and the lazy flush queue.

use std::collections::{BTreeMap, HashMap, VecDeque};

use iommu_groups::Prediction;
use iommu_pci::PciAddress;
use serde::Serialize;

use crate::bounce::{BounceConfig, BouncePool, BounceStats};
use crate::dma::{DmaParams, Record};
use crate::error::SimError;
use crate::fault::{Fault, FaultLog, FaultReason};
use crate::iotlb::{Iotlb, IotlbConfig, IotlbEntry, IotlbStats};
use crate::iova::IovaAllocator;
use crate::memory::PhysMemory;
use crate::pagetable::{Leaf, PageTable, TableStats};
use crate::types::{Access, DomainId, DomainMode, PageSize, Perm, Rid, IOVA_BITS};

/// When the DMA API invalidates the IOTLB after an unmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Invalidation {
    /// Invalidate the unmapped range before the unmap returns (Linux `iommu.strict=1`): a device can
    /// never use a translation after its unmap.
    Strict,
    /// Queue the range in the flush queue and invalidate the whole domain when the queue is full or its
    /// oldest entry has waited for the timeout (Linux's default `DMA-FQ` domains). Until then the IOTLB
    /// may still translate the unmapped pages — the window lazy mode trades for fewer invalidations. The
    /// IOVAs are not reused before the flush, so the window only ever exposes the old buffer.
    Lazy,
}

/// The flush queue of lazy invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FlushQueueConfig {
    /// Entries before a flush is forced (Linux: 256 per CPU).
    pub size: usize,
    /// How long the oldest entry may wait, in simulated nanoseconds (Linux: 10 ms).
    pub timeout_ns: u64,
}

impl Default for FlushQueueConfig {
    fn default() -> Self {
        Self { size: 256, timeout_ns: 10_000_000 }
    }
}

/// Everything configurable about a simulator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimConfig {
    /// Bytes of RAM (a multiple of 4 KiB). Default 64 GiB, sparse.
    pub memory_size: u64,
    /// IOTLB geometry.
    pub iotlb: IotlbConfig,
    /// Faults the log holds before it drops new ones.
    pub fault_log_capacity: usize,
    /// The lazy flush queue.
    pub flush_queue: FlushQueueConfig,
    /// Invalidation mode of new domains.
    pub invalidation: Invalidation,
    /// The bounce buffer pool.
    pub bounce: BounceConfig,
    /// Leaf sizes page tables may use (4 KiB always).
    pub page_sizes: Vec<PageSize>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            memory_size: 64 << 30,
            iotlb: IotlbConfig::default(),
            fault_log_capacity: 256,
            flush_queue: FlushQueueConfig::default(),
            invalidation: Invalidation::Strict,
            bounce: BounceConfig::default(),
            page_sizes: PageSize::ALL.to_vec(),
        }
    }
}

/// One device-side translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Translation {
    /// The physical address.
    pub phys: u64,
    /// Bytes from the address to the end of the page it is in (identity: to the end of the address
    /// space, saturated; always at least 1).
    pub span: u64,
    /// The page size (`None` in identity mode).
    pub size: Option<PageSize>,
    /// Permissions (identity: read and write).
    pub perm: Perm,
    /// Whether the IOTLB answered.
    pub iotlb_hit: bool,
}

/// The domain a predicted IOMMU group was given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupDomain {
    /// The group number from the prediction.
    pub group: u32,
    /// Its domain.
    pub domain: DomainId,
    /// Its devices.
    pub devices: Vec<GroupDevice>,
}

/// A device of a [`GroupDomain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GroupDevice {
    /// Its PCI address.
    pub address: PciAddress,
    /// Its requester ID.
    pub rid: Rid,
}

/// Flush queue counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlushQueueStats {
    /// Unmaps queued instead of invalidated.
    pub queued: u64,
    /// Flushes because the queue was full.
    pub flushes_full: u64,
    /// Flushes because the oldest entry timed out.
    pub flushes_timeout: u64,
    /// Flushes asked for with [`Sim::flush_lazy`].
    pub flushes_explicit: u64,
    /// Entries waiting now.
    pub pending: u64,
}

/// Device-side access counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AccessStats {
    /// Translations asked for (one per page touched).
    pub translations: u64,
    /// IOTLB misses that walked the page table.
    pub page_walks: u64,
    /// Device reads that completed.
    pub reads: u64,
    /// Device writes that completed.
    pub writes: u64,
    /// Bytes moved by completed device accesses.
    pub bytes: u64,
    /// Device accesses blocked by a fault.
    pub blocked: u64,
}

/// DMA API counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DmaStats {
    /// `map_single` calls that succeeded.
    pub map_single: u64,
    /// `map_sg` calls that succeeded.
    pub map_sg: u64,
    /// Unmaps (single and scatter-gather).
    pub unmaps: u64,
    /// Mappings through a page table.
    pub translated: u64,
    /// Identity mappings the device reached directly.
    pub direct: u64,
    /// Identity mappings that bounced.
    pub bounced: u64,
    /// `sync_*_for_cpu` calls.
    pub syncs_for_cpu: u64,
    /// `sync_*_for_device` calls.
    pub syncs_for_device: u64,
    /// Scatter-gather entries mapped.
    pub sg_entries: u64,
    /// Device-visible segments those entries became.
    pub sg_segments: u64,
    /// Mappings live now.
    pub live: u64,
}

/// Fault counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FaultStats {
    /// Faults recorded in the log since creation.
    pub recorded: u64,
    /// Faults dropped because the log was full.
    pub dropped: u64,
    /// Faults in the log now.
    pub held: u64,
}

/// Memory counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemoryStats {
    /// Frames allocated.
    pub resident_frames: u64,
    /// Bytes read from simulated memory (by devices, the DMA API and the CPU side).
    pub bytes_read: u64,
    /// Bytes written to it.
    pub bytes_written: u64,
}

/// Every counter, in one serializable snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// The simulated clock.
    pub clock_ns: u64,
    /// Device accesses and translations.
    pub access: AccessStats,
    /// IOTLB.
    pub iotlb: IotlbStats,
    /// Page tables, summed over live domains.
    pub tables: TableStats,
    /// Faults.
    pub faults: FaultStats,
    /// Lazy flush queue.
    pub flush_queue: FlushQueueStats,
    /// DMA API.
    pub dma: DmaStats,
    /// Bounce buffers.
    pub bounce: BounceStats,
    /// Memory.
    pub memory: MemoryStats,
}

#[derive(Debug)]
pub(crate) struct Domain {
    pub(crate) mode: DomainMode,
    pub(crate) table: PageTable,
    pub(crate) iova: IovaAllocator,
    pub(crate) invalidation: Invalidation,
    pub(crate) devices: usize,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Pending {
    pub(crate) domain: u32,
    pub(crate) iova: u64,
    pub(crate) queued_ns: u64,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct HostMap {
    pub(crate) len: u64,
    pub(crate) phys: u64,
}

/// The simulator: memory, domains, devices, IOTLB, faults and the DMA API. Single-threaded (`&mut self`);
/// share it with [`crate::SharedSim`].
pub struct Sim {
    pub(crate) config: SimConfig,
    pub(crate) memory: PhysMemory,
    /// Requester ID → context entry, like VT-d's root/context tables: 0 when not present, else the
    /// domain index + 1 in the low 30 bits and the domain's mode in the top two (so the fast path of a
    /// translation reads one entry, as hardware does).
    pub(crate) context: Vec<u32>,
    pub(crate) domains: Vec<Option<Domain>>,
    pub(crate) iotlb: Iotlb,
    pub(crate) faults: FaultLog,
    pub(crate) clock_ns: u64,
    pub(crate) fq: VecDeque<Pending>,
    pub(crate) fq_stats: FlushQueueStats,
    pub(crate) access: AccessStats,
    pub(crate) dma_stats: DmaStats,
    pub(crate) dma_params: FastMap<Rid, DmaParams>,
    pub(crate) records: FastMap<u64, Record>,
    pub(crate) next_id: u64,
    pub(crate) bounce: BouncePool,
    pub(crate) host_maps: BTreeMap<(u32, u64), HostMap>,
    pub(crate) host_window: IovaAllocator,
    scratch: Vec<(u64, u64)>,
}

/// A map with small integer keys (mapping IDs, requester IDs): a multiplicative hash instead of SipHash.
pub(crate) type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<crate::memory::FrameHasher>>;

const CTX_DOMAIN: u32 = (1 << 30) - 1;
const CTX_TRANSLATED: u32 = 0;
const CTX_IDENTITY: u32 = 1 << 30;
const CTX_BLOCKED: u32 = 2 << 30;

fn ctx_mode_bits(mode: DomainMode) -> u32 {
    match mode {
        DomainMode::Translated => CTX_TRANSLATED,
        DomainMode::Identity => CTX_IDENTITY,
        DomainMode::Blocked => CTX_BLOCKED,
    }
}

fn ctx_domain(ctx: u32) -> Option<u32> {
    (ctx & CTX_DOMAIN).checked_sub(1)
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("domains", &self.domains().len())
            .field("attached_devices", &self.context.iter().filter(|&&c| c != 0).count())
            .field("memory", &self.memory)
            .field("iotlb", &self.iotlb)
            .field("faults", &self.faults.len())
            .field("clock_ns", &self.clock_ns)
            .finish_non_exhaustive()
    }
}

impl Default for Sim {
    fn default() -> Self {
        Self::new(SimConfig::default()).expect("the default configuration is valid")
    }
}

impl Sim {
    /// A simulator with `config`: no domains, nothing attached, memory all zero.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        if config.flush_queue.size == 0 {
            return Err(SimError::Config("the flush queue needs room for at least one entry"));
        }
        let memory = PhysMemory::new(config.memory_size)?;
        let iotlb = Iotlb::new(config.iotlb)?;
        let bounce = BouncePool::new(config.bounce, config.memory_size)?;
        if config.memory_size >= 1 << 47 {
            return Err(SimError::Config("memory must be smaller than 128 TiB (the top is the host window)"));
        }
        // Host buffers get physical addresses in the upper half of the 48-bit space, far above RAM.
        let mut host_window = IovaAllocator::new();
        host_window.reserve(0, (1 << 47) - 1);
        Ok(Self {
            faults: FaultLog::new(config.fault_log_capacity),
            config,
            memory,
            context: vec![0; 1 << 16],
            domains: Vec::new(),
            iotlb,
            clock_ns: 0,
            fq: VecDeque::new(),
            fq_stats: FlushQueueStats::default(),
            access: AccessStats::default(),
            dma_stats: DmaStats::default(),
            dma_params: FastMap::default(),
            records: FastMap::default(),
            next_id: 1,
            bounce,
            host_maps: BTreeMap::new(),
            host_window,
            scratch: Vec::new(),
        })
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Physical memory, for the CPU side: fill buffers, check results.
    pub fn memory(&mut self) -> &mut PhysMemory {
        &mut self.memory
    }

    // ----- domains and devices -----

    /// A new, empty domain in `mode`, with the configured invalidation mode.
    ///
    /// # Panics
    ///
    /// After 2^25 domains (the IOTLB tag's domain field is full).
    pub fn create_domain(&mut self, mode: DomainMode) -> DomainId {
        assert!(self.domains.len() < crate::iotlb::MAX_DOMAINS as usize, "out of domain IDs");
        let id = DomainId(self.domains.len() as u32);
        self.domains.push(Some(Domain {
            mode,
            table: PageTable::with_page_sizes(id, &self.config.page_sizes),
            iova: IovaAllocator::new(),
            invalidation: self.config.invalidation,
            devices: 0,
        }));
        id
    }

    pub(crate) fn dom(&self, id: DomainId) -> Result<&Domain, SimError> {
        self.domains.get(id.0 as usize).and_then(Option::as_ref).ok_or(SimError::NoSuchDomain(id))
    }

    pub(crate) fn dom_mut(&mut self, id: DomainId) -> Result<&mut Domain, SimError> {
        self.domains.get_mut(id.0 as usize).and_then(Option::as_mut).ok_or(SimError::NoSuchDomain(id))
    }

    /// Removes a domain with no devices attached; its queued invalidations and IOTLB entries go with it.
    pub fn destroy_domain(&mut self, id: DomainId) -> Result<(), SimError> {
        let devices = self.dom(id)?.devices;
        if devices > 0 {
            return Err(SimError::DomainInUse { domain: id, devices });
        }
        self.fq.retain(|p| p.domain != id.0);
        self.fq_stats.pending = self.fq.len() as u64;
        self.iotlb.invalidate_domain(id.0);
        let keys: Vec<(u32, u64)> = self.host_maps.range((id.0, 0)..=(id.0, u64::MAX)).map(|(k, _)| *k).collect();
        for k in keys {
            if let Some(h) = self.host_maps.remove(&k) {
                self.memory.unplug(h.phys);
                self.host_window.free(h.phys);
            }
        }
        self.domains[id.0 as usize] = None;
        Ok(())
    }

    /// The domain's mode.
    pub fn domain_mode(&self, id: DomainId) -> Result<DomainMode, SimError> {
        Ok(self.dom(id)?.mode)
    }

    /// Changes the domain's mode (its page table is kept) and invalidates its IOTLB entries.
    pub fn set_domain_mode(&mut self, id: DomainId, mode: DomainMode) -> Result<(), SimError> {
        self.dom_mut(id)?.mode = mode;
        for c in self.context.iter_mut().filter(|c| ctx_domain(**c) == Some(id.0)) {
            *c = (*c & CTX_DOMAIN) | ctx_mode_bits(mode);
        }
        self.iotlb.invalidate_domain(id.0);
        Ok(())
    }

    /// The domain's invalidation mode (used by the DMA API's unmaps).
    pub fn invalidation(&self, id: DomainId) -> Result<Invalidation, SimError> {
        Ok(self.dom(id)?.invalidation)
    }

    /// Sets the domain's invalidation mode. Switching to strict flushes the queue first.
    pub fn set_invalidation(&mut self, id: DomainId, inv: Invalidation) -> Result<(), SimError> {
        self.dom(id)?;
        if inv == Invalidation::Strict {
            self.flush_queue(FlushCause::Explicit);
        }
        self.dom_mut(id)?.invalidation = inv;
        Ok(())
    }

    /// Live domains.
    pub fn domains(&self) -> Vec<DomainId> {
        (0..self.domains.len()).filter(|&i| self.domains[i].is_some()).map(|i| DomainId(i as u32)).collect()
    }

    /// Attaches the device to `domain` (moving it if it was attached elsewhere).
    pub fn attach(&mut self, rid: Rid, domain: DomainId) -> Result<(), SimError> {
        let mode = self.dom(domain)?.mode;
        self.detach(rid);
        self.dom_mut(domain)?.devices += 1;
        self.context[rid.0 as usize] = (domain.0 + 1) | ctx_mode_bits(mode);
        Ok(())
    }

    /// Detaches the device; returns the domain it was in. Its DMA then faults with "context not present".
    pub fn detach(&mut self, rid: Rid) -> Option<DomainId> {
        let id = DomainId(ctx_domain(std::mem::take(&mut self.context[rid.0 as usize]))?);
        if let Ok(dom) = self.dom_mut(id) {
            dom.devices -= 1;
        }
        Some(id)
    }

    /// The device's domain.
    pub fn domain_of(&self, rid: Rid) -> Option<DomainId> {
        ctx_domain(self.context[rid.0 as usize]).map(DomainId)
    }

    /// The devices attached to `domain`.
    pub fn devices_of(&self, domain: DomainId) -> Vec<Rid> {
        (0..self.context.len())
            .filter(|&r| ctx_domain(self.context[r]) == Some(domain.0))
            .map(|r| Rid(r as u16))
            .collect()
    }

    /// Gives every device of `devices` one new domain in `mode` (an IOMMU group shares one domain).
    pub fn attach_group(&mut self, devices: &[PciAddress], mode: DomainMode) -> Result<DomainId, SimError> {
        check_unique(devices.iter().copied())?;
        let d = self.create_domain(mode);
        for a in devices {
            self.attach(Rid::from(*a), d)?;
        }
        Ok(d)
    }

    /// Gives every predicted IOMMU group its own domain in `mode` and attaches its devices, so devices of
    /// one group share an address space and devices of different groups never do. Devices excluded from
    /// grouping (such as host bridges) are left unattached.
    pub fn attach_groups(&mut self, prediction: &Prediction, mode: DomainMode) -> Result<Vec<GroupDomain>, SimError> {
        check_unique(prediction.groups.iter().flat_map(|g| g.devices.iter().copied()))?;
        let mut out = Vec::with_capacity(prediction.groups.len());
        for g in &prediction.groups {
            let domain = self.attach_group(&g.devices, mode)?;
            out.push(GroupDomain {
                group: g.id,
                domain,
                devices: g.devices.iter().map(|&address| GroupDevice { address, rid: Rid::from(address) }).collect(),
            });
        }
        Ok(out)
    }

    // ----- the IOMMU API -----

    /// Maps `iova..iova+len` → `phys..phys+len` in the domain's page table with `perm`, using the
    /// largest pages alignment allows. The physical range must be RAM or one plugged host region.
    /// All or nothing.
    pub fn map(&mut self, domain: DomainId, iova: u64, phys: u64, len: u64, perm: Perm) -> Result<(), SimError> {
        if !self.memory.contains(phys, len) {
            return Err(SimError::PhysOutOfRange { addr: phys, len });
        }
        self.dom_mut(domain)?.table.map(iova, phys, len, perm).map(drop)
    }

    /// Maps exactly one page of `size`.
    pub fn map_page(
        &mut self,
        domain: DomainId,
        iova: u64,
        phys: u64,
        size: PageSize,
        perm: Perm,
    ) -> Result<(), SimError> {
        if !self.memory.contains(phys, size.bytes()) {
            return Err(SimError::PhysOutOfRange { addr: phys, len: size.bytes() });
        }
        self.dom_mut(domain)?.table.map_page(iova, phys, size, perm)
    }

    /// Unmaps `iova..iova+len` (entirely mapped, no large page cut) and invalidates the IOTLB for it at
    /// once: the IOMMU API is always strict. Returns the leaves removed.
    pub fn unmap(&mut self, domain: DomainId, iova: u64, len: u64) -> Result<Vec<Leaf>, SimError> {
        let leaves = self.dom_mut(domain)?.table.unmap(iova, len)?;
        self.iotlb.invalidate_range(domain.0, iova, len);
        Ok(leaves)
    }

    /// The leaf that maps `iova` in the domain (a software walk: no IOTLB, no counters, no faults).
    pub fn lookup(&self, domain: DomainId, iova: u64) -> Result<Option<Leaf>, SimError> {
        Ok(self.dom(domain)?.table.walk(iova))
    }

    /// Every leaf of the domain's page table, in IOVA order.
    pub fn mappings(&self, domain: DomainId) -> Result<Vec<Leaf>, SimError> {
        Ok(self.dom(domain)?.table.leaves())
    }

    /// The domain's table counters.
    pub fn table_stats(&self, domain: DomainId) -> Result<TableStats, SimError> {
        Ok(self.dom(domain)?.table.stats())
    }

    // ----- the device side -----

    fn fault(&mut self, rid: Rid, addr: u64, access: Access, reason: FaultReason, domain: Option<u32>) -> Fault {
        let f = Fault::new(rid, addr, access, reason, domain.map(DomainId), self.clock_ns);
        self.faults.record(f);
        f
    }

    /// Translates one device address as the IOMMU does for a DMA request from `rid`: context entry,
    /// domain mode, IOTLB, page walk on a miss (filling the IOTLB), permission check. A failure is
    /// recorded in the fault log and returned.
    pub fn translate(&mut self, rid: Rid, iova: u64, access: Access) -> Result<Translation, Fault> {
        self.access.translations += 1;
        let ctx = self.context[rid.0 as usize];
        // Fast path: a translated domain and an IOTLB hit that allows the access.
        if ctx & !CTX_DOMAIN == CTX_TRANSLATED && ctx != 0 && iova >> IOVA_BITS == 0 {
            let di = (ctx & CTX_DOMAIN) - 1;
            return match self.iotlb.lookup(di, iova) {
                Some(e) if e.perm.allows(access) => Ok(Translation {
                    phys: e.phys + (iova - e.iova),
                    span: e.iova + e.size.bytes() - iova,
                    size: Some(e.size),
                    perm: e.perm,
                    iotlb_hit: true,
                }),
                Some(_) => Err(self.permission_fault(rid, di, iova, access)),
                None => self.walk(rid, di, iova, access),
            };
        }
        self.translate_untranslated(rid, iova, access, ctx)
    }

    #[cold]
    #[inline(never)]
    fn permission_fault(&mut self, rid: Rid, di: u32, iova: u64, access: Access) -> Fault {
        let reason = match access {
            Access::Write => FaultReason::WriteNotPermitted,
            Access::Read => FaultReason::ReadNotPermitted,
        };
        self.fault(rid, iova, access, reason, Some(di))
    }

    /// An IOTLB miss in a translated domain: walk the page table, fill the IOTLB, check permissions.
    #[inline(never)]
    fn walk(&mut self, rid: Rid, di: u32, iova: u64, access: Access) -> Result<Translation, Fault> {
        self.access.page_walks += 1;
        let walked = self.domains[di as usize].as_ref().and_then(|dom| dom.table.walk(iova));
        let Some(leaf) = walked else {
            return Err(self.fault(rid, iova, access, FaultReason::NotMapped, Some(di)));
        };
        self.iotlb.insert(IotlbEntry {
            domain: di,
            iova: leaf.iova,
            phys: leaf.phys,
            size: leaf.size,
            perm: leaf.perm,
        });
        if !leaf.perm.allows(access) {
            return Err(self.permission_fault(rid, di, iova, access));
        }
        Ok(Translation {
            phys: leaf.translate(iova),
            span: leaf.iova + leaf.size.bytes() - iova,
            size: Some(leaf.size),
            perm: leaf.perm,
            iotlb_hit: false,
        })
    }

    /// No context entry, identity, blocked, or an address beyond the table's width.
    #[inline(never)]
    fn translate_untranslated(&mut self, rid: Rid, iova: u64, access: Access, ctx: u32) -> Result<Translation, Fault> {
        let Some(di) = ctx_domain(ctx) else {
            return Err(self.fault(rid, iova, access, FaultReason::ContextNotPresent, None));
        };
        match ctx & !CTX_DOMAIN {
            CTX_IDENTITY => Ok(Translation {
                phys: iova,
                span: (u64::MAX - iova).saturating_add(1),
                size: None,
                perm: Perm::RW,
                iotlb_hit: false,
            }),
            CTX_BLOCKED => Err(self.fault(rid, iova, access, FaultReason::Blocked, Some(di))),
            _ => Err(self.fault(rid, iova, access, FaultReason::BeyondAddressWidth, Some(di))),
        }
    }

    /// Translates every page of a device access into `self.scratch` and checks the memory behind it;
    /// the first failure (fault or missing memory) stops it before anything is touched.
    fn plan(&mut self, rid: Rid, iova: u64, len: u64, access: Access) -> Result<(), SimError> {
        self.scratch.clear();
        let mut pos = 0;
        while pos < len {
            let Some(a) = iova.checked_add(pos) else {
                let f = self.fault(rid, iova.wrapping_add(pos), access, FaultReason::BeyondAddressWidth, None);
                return Err(f.into());
            };
            let t = self.translate(rid, a, access)?;
            let n = (len - pos).min(t.span);
            match self.scratch.last_mut() {
                Some((p, l)) if p.checked_add(*l) == Some(t.phys) => *l += n,
                _ => self.scratch.push((t.phys, n)),
            }
            pos += n;
        }
        if let Some(&(addr, len)) = self.scratch.iter().find(|(p, n)| !self.memory.contains(*p, *n)) {
            return Err(SimError::PhysOutOfRange { addr, len });
        }
        Ok(())
    }

    /// Calls `f` with the memory, the physical address and the access's byte range for each contiguous
    /// piece [`Sim::plan`] left in `self.scratch`, in order; stops at the first error.
    fn for_each_planned_chunk(
        &mut self,
        mut f: impl FnMut(&mut PhysMemory, u64, std::ops::Range<usize>) -> Result<(), SimError>,
    ) -> Result<(), SimError> {
        let chunks = std::mem::take(&mut self.scratch);
        let mut off = 0;
        let mut res = Ok(());
        for &(p, n) in &chunks {
            let n = n as usize;
            if let Err(e) = f(&mut self.memory, p, off..off + n) {
                res = Err(e);
                break;
            }
            off += n;
        }
        self.scratch = chunks;
        res
    }

    /// The device `rid` reads `out.len()` bytes at device address `iova` (a DMA read: memory → device).
    /// If any page faults, the fault is recorded, `out` is left unchanged and the fault is returned.
    pub fn device_read(&mut self, rid: Rid, iova: u64, out: &mut [u8]) -> Result<(), SimError> {
        if let Err(e) = self.plan(rid, iova, out.len() as u64, Access::Read) {
            self.access.blocked += 1;
            return Err(e);
        }
        let res = self.for_each_planned_chunk(|memory, phys, range| memory.read(phys, &mut out[range]));
        if res.is_ok() {
            self.access.reads += 1;
            self.access.bytes += out.len() as u64;
        }
        res
    }

    /// The device `rid` writes `data` at device address `iova` (a DMA write: device → memory). If any page
    /// faults, the fault is recorded, memory is left untouched and the fault is returned.
    ///
    /// The whole access is checked before any byte moves. Real hardware checks each PCIe transaction
    /// (at most the max payload size, 128–512 bytes) on its own, so a DMA that runs off the end of a
    /// mapping would land partially there; here it lands nowhere, which is the stronger claim tests want.
    pub fn device_write(&mut self, rid: Rid, iova: u64, data: &[u8]) -> Result<(), SimError> {
        if let Err(e) = self.plan(rid, iova, data.len() as u64, Access::Write) {
            self.access.blocked += 1;
            return Err(e);
        }
        let res = self.for_each_planned_chunk(|memory, phys, range| memory.write(phys, &data[range]));
        if res.is_ok() {
            self.access.writes += 1;
            self.access.bytes += data.len() as u64;
        }
        res
    }

    // ----- faults, IOTLB, clock -----

    /// The fault log.
    pub fn faults(&self) -> &FaultLog {
        &self.faults
    }

    /// Empties the fault log and returns what it held.
    pub fn take_faults(&mut self) -> Vec<Fault> {
        self.faults.take()
    }

    /// The IOTLB.
    pub fn iotlb(&self) -> &Iotlb {
        &self.iotlb
    }

    /// Invalidates the whole IOTLB.
    pub fn flush_iotlb(&mut self) {
        self.iotlb.invalidate_all();
    }

    /// The simulated clock, in nanoseconds. Only [`Sim::advance_clock`] moves it.
    pub fn now_ns(&self) -> u64 {
        self.clock_ns
    }

    /// Moves the clock forward and flushes the lazy queue if its oldest entry has timed out.
    pub fn advance_clock(&mut self, ns: u64) {
        self.clock_ns = self.clock_ns.saturating_add(ns);
        self.poll_flush_queue();
    }

    /// Unmaps waiting in the lazy flush queue.
    pub fn flush_queue_len(&self) -> usize {
        self.fq.len()
    }

    /// Flushes the lazy queue now: one domain invalidation per domain with waiting entries, then their
    /// IOVAs become free.
    pub fn flush_lazy(&mut self) {
        if !self.fq.is_empty() {
            self.flush_queue(FlushCause::Explicit);
        }
    }

    pub(crate) fn poll_flush_queue(&mut self) {
        if let Some(p) = self.fq.front() {
            if self.clock_ns - p.queued_ns >= self.config.flush_queue.timeout_ns {
                self.flush_queue(FlushCause::Timeout);
            }
        }
    }

    pub(crate) fn queue_lazy(&mut self, domain: u32, iova: u64) {
        if self.fq.len() >= self.config.flush_queue.size {
            self.flush_queue(FlushCause::Full);
        }
        self.fq.push_back(Pending { domain, iova, queued_ns: self.clock_ns });
        self.fq_stats.queued += 1;
        self.fq_stats.pending = self.fq.len() as u64;
    }

    fn flush_queue(&mut self, cause: FlushCause) {
        match cause {
            FlushCause::Full => self.fq_stats.flushes_full += 1,
            FlushCause::Timeout => self.fq_stats.flushes_timeout += 1,
            FlushCause::Explicit => self.fq_stats.flushes_explicit += 1,
        }
        let pending: Vec<Pending> = self.fq.drain(..).collect();
        let mut domains: Vec<u32> = pending.iter().map(|p| p.domain).collect();
        domains.sort_unstable();
        domains.dedup();
        for d in domains {
            self.iotlb.invalidate_domain(d);
        }
        for p in pending {
            if let Some(Some(dom)) = self.domains.get_mut(p.domain as usize) {
                dom.iova.free(p.iova);
            }
        }
        self.fq_stats.pending = 0;
    }

    /// Every counter.
    pub fn stats(&self) -> SimStats {
        let mut tables = TableStats::default();
        for d in self.domains.iter().flatten() {
            let s = d.table.stats();
            tables.live += s.live;
            tables.allocated += s.allocated;
            tables.freed += s.freed;
        }
        let (bytes_read, bytes_written) = self.memory.traffic();
        SimStats {
            clock_ns: self.clock_ns,
            access: self.access,
            iotlb: self.iotlb.stats(),
            tables,
            faults: FaultStats {
                recorded: self.faults.recorded(),
                dropped: self.faults.dropped(),
                held: self.faults.len() as u64,
            },
            flush_queue: FlushQueueStats { pending: self.fq.len() as u64, ..self.fq_stats },
            dma: DmaStats { live: self.records.len() as u64, ..self.dma_stats },
            bounce: self.bounce.stats(),
            memory: MemoryStats { resident_frames: self.memory.resident_frames() as u64, bytes_read, bytes_written },
        }
    }
}

#[derive(Clone, Copy)]
enum FlushCause {
    Full,
    Timeout,
    Explicit,
}

fn check_unique(devices: impl Iterator<Item = PciAddress>) -> Result<(), SimError> {
    let mut seen: HashMap<Rid, PciAddress> = HashMap::new();
    for a in devices {
        if let Some(first) = seen.insert(Rid::from(a), a) {
            if first != a {
                return Err(SimError::RequesterIdConflict { rid: Rid::from(a), first, second: a });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Sim {
        Sim::new(SimConfig { memory_size: 1 << 30, ..SimConfig::default() }).unwrap()
    }

    const DEV: Rid = Rid(0x0100);

    #[test]
    fn unattached_device_faults_with_context_not_present_and_touches_nothing() {
        let mut s = small();
        s.memory().write(0x5000, b"keep").unwrap();
        let e = s.device_write(DEV, 0x5000, b"evil").unwrap_err();
        let SimError::Fault(f) = e else { panic!("{e:?}") };
        assert_eq!(
            (f.reason, f.vtd_code, f.rid, f.addr, f.access),
            (FaultReason::ContextNotPresent, 2, DEV, 0x5000, Access::Write)
        );
        assert_eq!(s.memory().read_vec(0x5000, 4).unwrap(), b"keep");
        assert_eq!(s.faults().len(), 1);
    }

    #[test]
    fn first_access_walks_and_second_hits_the_iotlb() {
        let mut s = small();
        let d = s.create_domain(DomainMode::Translated);
        s.attach(DEV, d).unwrap();
        s.map(d, 0x10000, 0x20_0000, 0x1000, Perm::RW).unwrap();
        let t1 = s.translate(DEV, 0x10123, Access::Read).unwrap();
        let t2 = s.translate(DEV, 0x10456, Access::Write).unwrap();
        assert_eq!((t1.phys, t1.iotlb_hit, t1.span), (0x20_0123, false, 0x1000 - 0x123));
        assert_eq!((t2.phys, t2.iotlb_hit), (0x20_0456, true));
        let st = s.stats();
        assert_eq!((st.iotlb.hits, st.iotlb.misses, st.access.page_walks), (1, 1, 1));
    }

    #[test]
    fn permission_faults_carry_vtd_reasons_5_and_6() {
        let mut s = small();
        let d = s.create_domain(DomainMode::Translated);
        s.attach(DEV, d).unwrap();
        s.map(d, 0x10000, 0x20_0000, 0x1000, Perm::R).unwrap();
        s.map(d, 0x11000, 0x20_1000, 0x1000, Perm::W).unwrap();
        let w = s.translate(DEV, 0x10000, Access::Write).unwrap_err();
        let r = s.translate(DEV, 0x11000, Access::Read).unwrap_err();
        assert_eq!((w.reason, w.vtd_code), (FaultReason::WriteNotPermitted, 5));
        assert_eq!((r.reason, r.vtd_code), (FaultReason::ReadNotPermitted, 6));
        let big = s.translate(DEV, 1 << 48, Access::Read).unwrap_err();
        assert_eq!((big.reason, big.vtd_code), (FaultReason::BeyondAddressWidth, 4));
    }

    #[test]
    fn an_access_that_runs_off_a_mapping_moves_no_byte() {
        let mut s = small();
        let d = s.create_domain(DomainMode::Translated);
        s.attach(DEV, d).unwrap();
        s.map(d, 0x10000, 0x20_0000, 0x1000, Perm::RW).unwrap();
        let e = s.device_write(DEV, 0x10f00, &[0xaa; 0x200]).unwrap_err();
        assert!(matches!(e, SimError::Fault(f) if f.addr == 0x11000 && f.reason == FaultReason::NotMapped));
        assert_eq!(s.memory().read_vec(0x20_0f00, 0x100).unwrap(), vec![0; 0x100]);
        assert_eq!(s.stats().access.blocked, 1);
    }

    #[test]
    fn identity_domains_pass_addresses_through_and_blocked_ones_fault() {
        let mut s = small();
        let d = s.create_domain(DomainMode::Identity);
        s.attach(DEV, d).unwrap();
        s.device_write(DEV, 0x3000, b"direct").unwrap();
        assert_eq!(s.memory().read_vec(0x3000, 6).unwrap(), b"direct");
        s.set_domain_mode(d, DomainMode::Blocked).unwrap();
        let e = s.device_write(DEV, 0x3000, b"blockd").unwrap_err();
        assert!(matches!(e, SimError::Fault(f) if f.reason == FaultReason::Blocked && f.domain == Some(d)));
        assert_eq!(s.memory().read_vec(0x3000, 6).unwrap(), b"direct");
        // Beyond RAM in identity mode: not a fault, an error with the address.
        s.set_domain_mode(d, DomainMode::Identity).unwrap();
        assert_eq!(s.device_write(DEV, 1 << 30, b"x"), Err(SimError::PhysOutOfRange { addr: 1 << 30, len: 1 }));
        // The very top of the address space: no endless loop, a fault for the byte past the end.
        assert!(s.device_write(DEV, u64::MAX, b"xy").is_err());
        assert!(s.device_write(DEV, u64::MAX, b"x").is_err());
    }

    #[test]
    fn strict_unmap_invalidates_the_iotlb_at_once() {
        let mut s = small();
        let d = s.create_domain(DomainMode::Translated);
        s.attach(DEV, d).unwrap();
        s.map(d, 0x10000, 0x20_0000, 0x1000, Perm::RW).unwrap();
        s.device_write(DEV, 0x10000, b"a").unwrap();
        assert!(s.iotlb().contains(d.0, 0x10000));
        s.unmap(d, 0x10000, 0x1000).unwrap();
        assert!(!s.iotlb().contains(d.0, 0x10000));
        assert!(s.device_write(DEV, 0x10000, b"b").is_err());
    }

    #[test]
    fn domains_with_devices_cannot_be_destroyed() {
        let mut s = small();
        let d = s.create_domain(DomainMode::Translated);
        s.attach(DEV, d).unwrap();
        assert_eq!(s.destroy_domain(d), Err(SimError::DomainInUse { domain: d, devices: 1 }));
        assert_eq!(s.detach(DEV), Some(d));
        s.destroy_domain(d).unwrap();
        assert_eq!(s.domain_mode(d), Err(SimError::NoSuchDomain(d)));
        assert!(s.domains().is_empty());
    }

    #[test]
    fn moving_a_device_updates_both_domains() {
        let mut s = small();
        let a = s.create_domain(DomainMode::Translated);
        let b = s.create_domain(DomainMode::Translated);
        s.attach(DEV, a).unwrap();
        s.attach(DEV, b).unwrap();
        assert_eq!(s.domain_of(DEV), Some(b));
        assert_eq!(s.devices_of(a), []);
        assert_eq!(s.devices_of(b), [DEV]);
        s.destroy_domain(a).unwrap();
    }

    #[test]
    fn same_requester_id_in_two_segments_is_refused() {
        let mut s = small();
        let a: PciAddress = "0000:01:00.0".parse().unwrap();
        let b: PciAddress = "0001:01:00.0".parse().unwrap();
        assert_eq!(
            s.attach_group(&[a, b], DomainMode::Translated),
            Err(SimError::RequesterIdConflict { rid: Rid(0x100), first: a, second: b })
        );
    }
}
