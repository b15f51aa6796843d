//! Sharing one simulator between a driver framework and emulated devices: [`SharedSim`], the
//! [`SimIommu`] handle (one domain's address space, mapping host buffers by IOVA — the shape of a VFIO
//! container) and [`SharedEdu`] (an edu whose BAR0 and config space are reached through `&self`).
//!
//! Host buffers: [`Sim::map_host`] plugs a [`HostMemory`] into the physical address space (in a window
//! far above RAM) and maps an IOVA range of the domain to it, strictly; [`Sim::unmap_host`] undoes one
//! or several consecutive such maps in one call, as VFIO's type1 unmap does.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::edu::{DmaOutcome, Edu, EduStats};
use crate::error::SimError;
use crate::fault::Fault;
use crate::iova::MSI_WINDOW;
use crate::memory::HostMemory;
use crate::sim::{HostMap, Sim};
use crate::types::{DomainId, PageSize, Perm, Rid, IOVA_BITS, PAGE_SIZE};

/// A simulator behind a mutex, shared by handles and devices.
pub type SharedSim = Arc<Mutex<Sim>>;

/// Locks a shared simulator (a panic while it was locked does not make it unusable).
pub fn lock(sim: &SharedSim) -> MutexGuard<'_, Sim> {
    sim.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sim {
    /// Wraps the simulator for sharing.
    pub fn into_shared(self) -> SharedSim {
        Arc::new(Mutex::new(self))
    }

    /// Maps `len` bytes of host memory `mem`, from `offset`, at `iova` in `domain` with `perm`.
    /// `iova`, `offset` and `len` must be multiples of 4 KiB. Returns the physical address the memory
    /// was plugged in at.
    pub fn map_host(
        &mut self,
        domain: DomainId,
        iova: u64,
        mem: Arc<dyn HostMemory>,
        offset: usize,
        len: u64,
        perm: Perm,
    ) -> Result<u64, SimError> {
        self.dom(domain)?;
        if !(offset as u64).is_multiple_of(PAGE_SIZE) {
            return Err(SimError::Misaligned {
                kind: crate::error::AddrKind::Phys,
                value: offset as u64,
                align: PAGE_SIZE,
            });
        }
        if len == 0 {
            return Err(SimError::ZeroLength { addr: iova });
        }
        let align = [PageSize::Size1G, PageSize::Size2M]
            .into_iter()
            .find(|s| iova.is_multiple_of(s.bytes()) && len >= s.bytes())
            .map_or(PAGE_SIZE, PageSize::bytes);
        let len_pages = crate::types::page_align_up(len).ok_or(SimError::IovaOutOfRange { iova, len })?;
        let phys = self
            .host_window
            .alloc(len_pages, align, (1 << IOVA_BITS) - 1)
            .ok_or(SimError::PhysOutOfRange { addr: 1 << 47, len })?;
        if let Err(e) = self.memory.plug(phys, mem, offset, len) {
            self.host_window.free(phys);
            return Err(e);
        }
        if let Err(e) = self.dom_mut(domain)?.table.map(iova, phys, len, perm) {
            self.memory.unplug(phys);
            self.host_window.free(phys);
            return Err(e);
        }
        self.host_maps.insert((domain.0, iova), HostMap { len, phys });
        Ok(phys)
    }

    /// Unmaps every host mapping inside `iova..iova+len` of `domain` (there must be at least one, and
    /// none may stick out of the range), invalidates the IOTLB for the range and unplugs the memory.
    pub fn unmap_host(&mut self, domain: DomainId, iova: u64, len: u64) -> Result<(), SimError> {
        self.dom(domain)?;
        let end = iova.checked_add(len).ok_or(SimError::IovaOutOfRange { iova, len })?;
        if let Some((&(_, start), h)) = self.host_maps.range(..(domain.0, iova)).next_back() {
            if start + h.len > iova && start < iova {
                return Err(SimError::NotMapped { domain, iova });
            }
        }
        let inside: Vec<(u64, HostMap)> =
            self.host_maps.range((domain.0, iova)..(domain.0, end)).map(|(&(_, i), h)| (i, *h)).collect();
        if inside.is_empty() {
            return Err(SimError::NotMapped { domain, iova });
        }
        if let Some((i, h)) = inside.iter().find(|(i, h)| i + h.len > end) {
            return Err(SimError::NotMapped { domain, iova: (*i + h.len).min(end) });
        }
        for (i, h) in inside {
            self.dom_mut(domain)?.table.unmap(i, h.len)?;
            self.host_maps.remove(&(domain.0, i));
            self.memory.unplug(h.phys);
            self.host_window.free(h.phys);
        }
        self.iotlb.invalidate_range(domain.0, iova, len);
        Ok(())
    }

    /// The host mappings of `domain` as `(iova, len)`.
    pub fn host_mappings(&self, domain: DomainId) -> Vec<(u64, u64)> {
        self.host_maps.range((domain.0, 0)..=(domain.0, u64::MAX)).map(|(&(_, i), h)| (i, h.len)).collect()
    }
}

/// One domain of a shared simulator seen as an address space to map host buffers into — what a VFIO
/// container is to a driver. Cloning shares it.
#[derive(Clone, Debug)]
pub struct SimIommu {
    sim: SharedSim,
    domain: DomainId,
}

impl SimIommu {
    /// The handle of `domain`.
    pub fn new(sim: SharedSim, domain: DomainId) -> Result<Self, SimError> {
        lock(&sim).domain_mode(domain)?;
        Ok(Self { sim, domain })
    }

    /// The handle of the domain device `rid` is attached to.
    pub fn for_device(sim: SharedSim, rid: Rid) -> Result<Self, SimError> {
        let domain = lock(&sim).domain_of(rid).ok_or(SimError::NotAttached { rid })?;
        Ok(Self { sim, domain })
    }

    /// The domain.
    pub fn domain(&self) -> DomainId {
        self.domain
    }

    /// The shared simulator.
    pub fn sim(&self) -> &SharedSim {
        &self.sim
    }

    /// Runs `f` with the simulator locked.
    pub fn with<R>(&self, f: impl FnOnce(&mut Sim) -> R) -> R {
        f(&mut lock(&self.sim))
    }

    /// Bitmap of page sizes (bit n: 2^n bytes), as VFIO reports it.
    pub fn page_sizes(&self) -> u64 {
        self.with(|s| s.config().page_sizes.iter().fold(PAGE_SIZE, |m, p| m | p.bytes()))
    }

    /// Valid IOVA ranges (inclusive): the 48-bit space without the MSI window, as VT-d reports it.
    pub fn iova_ranges(&self) -> Vec<(u64, u64)> {
        vec![(0, MSI_WINDOW.0 - 1), (MSI_WINDOW.1 + 1, (1 << IOVA_BITS) - 1)]
    }

    /// Maps `len` bytes of `mem` from `offset` at `iova` ([`Sim::map_host`]).
    pub fn map(
        &self,
        iova: u64,
        mem: Arc<dyn HostMemory>,
        offset: usize,
        len: u64,
        perm: Perm,
    ) -> Result<(), SimError> {
        self.with(|s| s.map_host(self.domain, iova, mem, offset, len, perm).map(drop))
    }

    /// Unmaps the host mappings inside `iova..iova+len` ([`Sim::unmap_host`]).
    pub fn unmap(&self, iova: u64, len: u64) -> Result<(), SimError> {
        self.with(|s| s.unmap_host(self.domain, iova, len))
    }

    /// Live host mappings as `(iova, len)`.
    pub fn mappings(&self) -> Vec<(u64, u64)> {
        self.with(|s| s.host_mappings(self.domain))
    }

    /// The faults in the log that belong to this domain (the log keeps them).
    pub fn faults(&self) -> Vec<Fault> {
        self.with(|s| s.faults().entries().filter(|f| f.domain == Some(self.domain)).copied().collect())
    }

    /// Device `rid` writes `data` at `iova` ([`Sim::device_write`]).
    pub fn device_write(&self, rid: Rid, iova: u64, data: &[u8]) -> Result<(), SimError> {
        self.with(|s| s.device_write(rid, iova, data))
    }

    /// Device `rid` reads `out.len()` bytes at `iova` ([`Sim::device_read`]).
    pub fn device_read(&self, rid: Rid, iova: u64, out: &mut [u8]) -> Result<(), SimError> {
        self.with(|s| s.device_read(rid, iova, out))
    }
}

/// An [`Edu`] and the simulator it does DMA through, reachable through `&self` (register accesses lock
/// the device, then the simulator).
#[derive(Debug)]
pub struct SharedEdu {
    edu: Mutex<Edu>,
    sim: SharedSim,
}

impl SharedEdu {
    /// Shares `edu`, doing its DMA through `sim`.
    pub fn new(edu: Edu, sim: SharedSim) -> Self {
        Self { edu: Mutex::new(edu), sim }
    }

    fn edu(&self) -> MutexGuard<'_, Edu> {
        self.edu.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` with the device locked.
    pub fn with<R>(&self, f: impl FnOnce(&mut Edu) -> R) -> R {
        f(&mut self.edu())
    }

    /// The device's requester ID.
    pub fn rid(&self) -> Rid {
        self.edu().rid()
    }

    /// The simulator.
    pub fn sim(&self) -> &SharedSim {
        &self.sim
    }

    /// BAR0 size.
    pub fn bar_size(&self) -> u64 {
        crate::edu::BAR0_SIZE
    }

    /// 32-bit BAR0 read.
    pub fn read32(&self, offset: u64) -> Result<u32, SimError> {
        self.edu().read32(offset)
    }

    /// 64-bit BAR0 read.
    pub fn read64(&self, offset: u64) -> Result<u64, SimError> {
        self.edu().read64(offset)
    }

    /// 32-bit BAR0 write.
    pub fn write32(&self, offset: u64, value: u32) -> Result<(), SimError> {
        let mut e = self.edu();
        e.write32(&mut lock(&self.sim), offset, value)
    }

    /// 64-bit BAR0 write.
    pub fn write64(&self, offset: u64, value: u64) -> Result<(), SimError> {
        let mut e = self.edu();
        e.write64(&mut lock(&self.sim), offset, value)
    }

    /// Config space read.
    pub fn config_read(&self, offset: u64, out: &mut [u8]) -> Result<(), SimError> {
        self.edu().config_read(offset, out)
    }

    /// Config space write.
    pub fn config_write(&self, offset: u64, data: &[u8]) -> Result<(), SimError> {
        self.edu().config_write(offset, data)
    }

    /// Completes pending work ([`Edu::step`]).
    pub fn step(&self) -> bool {
        let mut e = self.edu();
        e.step(&mut lock(&self.sim))
    }

    /// Resets the device.
    pub fn reset(&self) {
        self.edu().reset();
    }

    /// Interrupts raised since the last call.
    pub fn take_interrupts(&self) -> u64 {
        self.edu().take_interrupts()
    }

    /// The INTx level.
    pub fn irq_line(&self) -> bool {
        self.edu().irq_line()
    }

    /// What the last DMA did.
    pub fn last_dma(&self) -> Option<DmaOutcome> {
        self.edu().last_dma().cloned()
    }

    /// The device's counters.
    pub fn stats(&self) -> EduStats {
        self.edu().stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edu::{reg, CMD_START, CMD_TO_RAM, DMA_BUFFER};
    use crate::memory::VecMemory;
    use crate::types::DomainMode;
    use crate::SimConfig;

    const RID: Rid = Rid(0x0100);

    fn shared() -> (SharedSim, SimIommu) {
        let mut sim = Sim::new(SimConfig { memory_size: 1 << 30, ..SimConfig::default() }).unwrap();
        let d = sim.create_domain(DomainMode::Translated);
        sim.attach(RID, d).unwrap();
        let sim = sim.into_shared();
        let iommu = SimIommu::for_device(sim.clone(), RID).unwrap();
        (sim, iommu)
    }

    #[test]
    fn host_buffers_mapped_by_iova_are_reached_by_the_device_until_unmapped() {
        let (_, iommu) = shared();
        let buf = Arc::new(VecMemory::new(0x3000));
        iommu.map(0x10_0000, buf.clone(), 0x1000, 0x2000, Perm::RW).unwrap();
        assert_eq!(iommu.mappings(), [(0x10_0000, 0x2000)]);
        iommu.device_write(RID, 0x10_1ffe, b"seam").unwrap_err(); // runs past the end
        iommu.device_write(RID, 0x10_0ffe, b"seam").unwrap();
        assert_eq!(&buf.to_vec()[0x1ffe..0x2002], b"seam");
        iommu.unmap(0x10_0000, 0x2000).unwrap();
        assert!(iommu.device_write(RID, 0x10_0000, b"gone").is_err());
        assert_eq!(iommu.faults().len(), 2);
        assert!(iommu.with(|s| s.memory().regions().is_empty()));
        assert_eq!(iommu.page_sizes(), 0x4020_1000);
    }

    #[test]
    fn one_unmap_removes_several_consecutive_host_maps_but_not_part_of_one() {
        let (_, iommu) = shared();
        let a = Arc::new(VecMemory::new(0x1000));
        let b = Arc::new(VecMemory::new(0x1000));
        iommu.map(0x20_0000, a, 0, 0x1000, Perm::R).unwrap();
        iommu.map(0x20_1000, b.clone(), 0, 0x1000, Perm::R).unwrap();
        assert!(iommu.unmap(0x20_0000, 0x1800).is_err(), "cuts the second map");
        assert!(iommu.unmap(0x20_0800, 0x1000).is_err(), "starts inside the first");
        assert!(iommu.map(0x20_1000, b, 0, 0x1000, Perm::R).is_err(), "already mapped");
        iommu.unmap(0x20_0000, 0x2000).unwrap();
        assert!(iommu.mappings().is_empty());
        assert_eq!(
            iommu.unmap(0x20_0000, 0x1000),
            Err(SimError::NotMapped { domain: iommu.domain(), iova: 0x20_0000 })
        );
    }

    #[test]
    fn shared_edu_does_dma_through_the_shared_simulator() {
        let (sim, iommu) = shared();
        let buf = Arc::new(VecMemory::new(0x1000));
        iommu.map(0x10000, buf.clone(), 0, 0x1000, Perm::W).unwrap();
        let mut edu = Edu::new(RID);
        edu.enable_bus_master();
        edu.buffer_mut()[..5].copy_from_slice(b"hello");
        let dev = SharedEdu::new(edu, sim);
        dev.write64(reg::DMA_SRC, DMA_BUFFER).unwrap();
        dev.write64(reg::DMA_DST, 0x10000).unwrap();
        dev.write64(reg::DMA_CNT, 5).unwrap();
        dev.write64(reg::DMA_CMD, CMD_START | CMD_TO_RAM).unwrap();
        assert_eq!(&buf.to_vec()[..5], b"hello");
        dev.write64(reg::DMA_DST, 0x90_0000).unwrap();
        dev.write64(reg::DMA_CMD, CMD_START | CMD_TO_RAM).unwrap();
        assert!(matches!(dev.last_dma(), Some(DmaOutcome::Faulted { .. })));
        assert_eq!(iommu.faults()[0].addr, 0x90_0000);
    }
}
