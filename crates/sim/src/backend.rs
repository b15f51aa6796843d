//! The driver contract (`iommu-backend`) implemented on the simulator, so drivers written against it
//! (iommu-drivers' `edu` and NVMe) run unchanged on a simulated IOMMU and device:
//!
//! - [`SimBackend`]: a [`DmaBackend`] over one domain of the simulator ([`SimIommu`]). Its memory is heap
//!   memory ([`HeapMemory`]); mapped memory is plugged into the simulator as host memory. DMA faults are
//!   recorded by the simulator and reported as typed [`FaultRecord`]s by
//!   [`DmaBackend::recorded_faults`], with the requester ID, the exact address, the VT-d fault reason and
//!   the `DMAR:` line the kernel would log.
//! - [`SimDevice`]: a [`DeviceAccess`] over the simulator's `edu` ([`SharedEdu`]): BAR0 (1 MiB, not
//!   mmappable), config space, INTx and MSI (one vector each), reset. Interrupts are delivered on
//!   eventfds, the one place the simulator touches the operating system.
//!
//! ```
//! use iommu_backend::edu_regs::{reg, CMD_START, CMD_TO_RAM, DMA_BUFFER, DMA_MASK_BITS};
//! use iommu_backend::{Access, DeviceAccess, DmaBackend, DmaDir, DmaSpace, Mmio};
//! use iommu_sim::backend;
//!
//! let (dev, iommu) = backend::edu("0000:01:00.0")?;
//! let space = DmaSpace::new(iommu.clone(), &[])?.with_dma_mask(DMA_MASK_BITS);
//! dev.enable_bus_master()?;
//! let bar = dev.bar(0)?;
//! let dma_to_ram = |iova: u64| -> iommu_backend::Result<()> {
//!     bar.write64(reg::DMA_SRC, DMA_BUFFER)?;
//!     bar.write64(reg::DMA_DST, iova)?;
//!     bar.write64(reg::DMA_CNT, 16)?;
//!     bar.write64(reg::DMA_CMD, CMD_START | CMD_TO_RAM)
//! };
//!
//! let buf = space.alloc(4096)?;
//! buf.fill(0, 4096, 0xee)?;
//! let m = space.map(&buf, DmaDir::FromDevice)?;
//! dma_to_ram(m.iova())?;                          // the device's (zeroed) buffer lands in ours
//! assert_eq!(buf.to_vec(0, 17)?, [&[0u8; 16][..], &[0xee]].concat());
//!
//! let hole = space.reserve(4096)?;                // an IOVA that is never mapped
//! dma_to_ram(hole.iova())?;                       // blocked, recorded, nothing written
//! let f = &iommu.recorded_faults()[0];
//! assert_eq!((f.requester.as_deref(), f.iova, f.access), (Some("01:00.0"), hole.iova(), Access::Write));
//! assert_eq!((f.reason.as_str(), f.code), ("not-mapped", Some(0x05)));
//! # Ok::<(), iommu_backend::BackendError>(())
//! ```

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use iommu_backend::info::flags;
use iommu_backend::{
    region_name, BackendError, DeviceAccess, DeviceInfo, DmaBackend, DmaBuf, DmaDir, EventFd, FaultRecord, HeapMemory,
    HugePages, IommuInfo, IovaRange, IrqInfo, IrqKind, Mmio, RegionInfo, Result, CONFIG_REGION,
};
use iommu_pci::PciAddress;

use crate::error::{HostMemoryError, SimError};
use crate::fault::Fault;
use crate::memory::HostMemory;
use crate::shared::{SharedEdu, SimIommu};
use crate::sim::Sim;
use crate::types::{DomainMode, Perm, Rid, PAGE_SIZE};

/// The mapping limit VFIO's type1 backend applies by default (`dma_entry_limit`), which the simulated
/// domain reports too.
pub const DMA_ENTRY_LIMIT: u32 = 65535;

/// A simulated edu device at `addr` (its requester ID is the address's bus/device/function) in a
/// translated domain of a fresh [`Sim`]: the device and the domain as an IOMMU backend.
pub fn edu(addr: &str) -> Result<(SimDevice, SimBackend)> {
    let pci: PciAddress = addr.parse().map_err(|e| BackendError::Invalid(format!("PCI address {addr:?}: {e}")))?;
    let rid = Rid::from(pci);
    let mut sim = Sim::default();
    let domain = sim.create_domain(DomainMode::Translated);
    sim.attach(rid, domain).map_err(|e| sim_err(&pci.to_string(), e))?;
    let sim = sim.into_shared();
    let iommu = SimIommu::for_device(sim.clone(), rid).map_err(|e| sim_err(&pci.to_string(), e))?;
    let dev = SimDevice::new(pci.to_string(), SharedEdu::new(crate::Edu::new(rid), sim));
    Ok((dev, SimBackend(iommu)))
}

fn sim_err(device: &str, e: SimError) -> BackendError {
    BackendError::DeviceReported { device: device.to_string(), what: e.to_string() }
}

/// Memory the driver mapped, seen by the simulator as host memory.
#[derive(Debug)]
struct SimMemory(DmaBuf);

impl HostMemory for SimMemory {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn read_at(&self, offset: usize, out: &mut [u8]) -> std::result::Result<(), HostMemoryError> {
        self.0.read(offset, out).map_err(|e| HostMemoryError(e.to_string()))
    }
    fn write_at(&self, offset: usize, data: &[u8]) -> std::result::Result<(), HostMemoryError> {
        self.0.write(offset, data).map_err(|e| HostMemoryError(e.to_string()))
    }
}

impl From<&Fault> for FaultRecord {
    fn from(f: &Fault) -> FaultRecord {
        FaultRecord {
            requester: Some(f.rid.to_string()),
            iova: f.addr,
            access: f.access,
            reason: f.reason.name().to_string(),
            description: f.reason.describe().to_string(),
            code: Some(f.vtd_code),
            log_line: Some(f.dmar_line()),
        }
    }
}

/// One domain of the simulator as a [`DmaBackend`]. See the module documentation.
#[derive(Clone, Debug)]
pub struct SimBackend(pub SimIommu);

impl DmaBackend for SimBackend {
    fn iommu_info(&self) -> Result<IommuInfo> {
        let in_use = u32::try_from(self.0.mappings().len()).unwrap_or(u32::MAX);
        Ok(IommuInfo {
            page_sizes: self.0.page_sizes(),
            iova_ranges: self.0.iova_ranges().into_iter().map(|(start, end)| IovaRange { start, end }).collect(),
            dma_avail: Some(DMA_ENTRY_LIMIT.saturating_sub(in_use)),
        })
    }

    fn alloc(&self, len: usize, huge: HugePages) -> Result<DmaBuf> {
        Ok(DmaBuf::new(HeapMemory::new(len, PAGE_SIZE as usize, huge)?))
    }

    fn map(&self, iova: u64, mem: &DmaBuf, offset: usize, len: usize, dir: DmaDir) -> Result<()> {
        let host: Arc<dyn HostMemory> = Arc::new(SimMemory(mem.clone()));
        self.0.map(iova, host, offset, len as u64, Perm::from(dir)).map_err(|e| BackendError::Map {
            iova,
            len: len as u64,
            source: io::Error::other(e),
        })
    }

    fn unmap(&self, iova: u64, len: u64) -> Result<()> {
        self.0.unmap(iova, len).map_err(|e| BackendError::Unmap { iova, len, source: io::Error::other(e) })
    }

    fn recorded_faults(&self) -> Vec<FaultRecord> {
        self.0.faults().iter().map(FaultRecord::from).collect()
    }
}

#[derive(Debug, Default)]
struct Irqs {
    enabled: Option<(IrqKind, Vec<EventFd>)>,
    intx_masked: bool,
}

/// The simulator's edu as a [`DeviceAccess`]. See the module documentation.
#[derive(Debug)]
pub struct SimDevice {
    name: String,
    edu: SharedEdu,
    irqs: Mutex<Irqs>,
}

impl SimDevice {
    /// The device `edu`, named `name` in messages.
    pub fn new(name: impl Into<String>, edu: SharedEdu) -> Self {
        Self { name: name.into(), edu, irqs: Mutex::new(Irqs::default()) }
    }

    /// The emulated device.
    pub fn edu(&self) -> &SharedEdu {
        &self.edu
    }

    fn irqs(&self) -> MutexGuard<'_, Irqs> {
        self.irqs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers the interrupts the device raised since the last call: one signal per MSI message; for
    /// INTx, one signal, then masked until [`DeviceAccess::unmask_intx`] (VFIO's automasking).
    fn deliver(&self) -> Result<()> {
        let n = self.edu.take_interrupts();
        let mut irqs = self.irqs();
        let masked = irqs.intx_masked;
        match &irqs.enabled {
            Some((IrqKind::Intx, fds)) if n > 0 && !masked => {
                fds[0].signal(1)?;
                irqs.intx_masked = true;
            }
            Some((IrqKind::Msi | IrqKind::Msix, fds)) if n > 0 => fds[0].signal(n)?,
            _ => {}
        }
        Ok(())
    }

    fn err(&self, e: SimError) -> BackendError {
        sim_err(&self.name, e)
    }

    fn check(&self, what: &str, offset: u64, width: u64, size: u64) -> Result<()> {
        let what = format!("{} {what}", self.name);
        if !matches!(offset.checked_add(width), Some(end) if end <= size) {
            return Err(BackendError::OutOfBounds { what, offset, width, size });
        }
        Ok(())
    }

    fn no_region(&self, index: u32) -> BackendError {
        BackendError::Region {
            device: self.name.clone(),
            region: region_name(index),
            why: "not present on the simulated edu",
        }
    }
}

/// BAR0 of a [`SimDevice`]: register accesses go to the emulated edu; the interrupts a write raises
/// are delivered to the enabled eventfds.
#[derive(Debug)]
pub struct SimBar<'a>(&'a SimDevice);

impl SimBar<'_> {
    fn check(&self, offset: u64, width: u64) -> Result<()> {
        if !offset.is_multiple_of(width) {
            return Err(BackendError::Misaligned { what: format!("{} BAR0", self.0.name), offset, width });
        }
        self.0.check("BAR0", offset, width, self.size())
    }
}

impl Mmio for SimBar<'_> {
    fn size(&self) -> u64 {
        self.0.edu.bar_size()
    }
    fn read32(&self, offset: u64) -> Result<u32> {
        self.check(offset, 4)?;
        self.0.edu.read32(offset).map_err(|e| self.0.err(e))
    }
    fn write32(&self, offset: u64, value: u32) -> Result<()> {
        self.check(offset, 4)?;
        self.0.edu.write32(offset, value).map_err(|e| self.0.err(e))?;
        self.0.deliver()
    }
    fn read64(&self, offset: u64) -> Result<u64> {
        self.check(offset, 8)?;
        self.0.edu.read64(offset).map_err(|e| self.0.err(e))
    }
    fn write64(&self, offset: u64, value: u64) -> Result<()> {
        self.check(offset, 8)?;
        self.0.edu.write64(offset, value).map_err(|e| self.0.err(e))?;
        self.0.deliver()
    }
}

const DEVICE_FLAGS: u32 = flags::DEVICE_RESET | flags::DEVICE_PCI;
const REGION_RW: u32 = flags::REGION_READ | flags::REGION_WRITE;
const IRQ_INTX: u32 = flags::IRQ_EVENTFD | flags::IRQ_MASKABLE | flags::IRQ_AUTOMASKED;
const CONFIG_SIZE: u64 = 256;

impl DeviceAccess for SimDevice {
    type Bar<'a> = SimBar<'a>;

    fn name(&self) -> &str {
        &self.name
    }

    fn device_info(&self) -> DeviceInfo {
        DeviceInfo { flags: DEVICE_FLAGS, num_regions: 9, num_irqs: 5 }
    }

    fn region_info(&self, index: u32) -> Result<RegionInfo> {
        let size = match index {
            0 => self.edu.bar_size(),
            CONFIG_REGION => CONFIG_SIZE,
            _ => return Err(self.no_region(index)),
        };
        Ok(RegionInfo { index, size, offset: 0, flags: REGION_RW, sparse_mmap: None })
    }

    fn read_region(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        match index {
            0 => {
                let bar = SimBar(self);
                match buf.len() {
                    4 => buf.copy_from_slice(&bar.read32(offset)?.to_le_bytes()),
                    8 => buf.copy_from_slice(&bar.read64(offset)?.to_le_bytes()),
                    _ => return Err(BackendError::Invalid(format!("BAR0 read of {} bytes", buf.len()))),
                }
                Ok(())
            }
            CONFIG_REGION => {
                self.check("config", offset, buf.len() as u64, CONFIG_SIZE)?;
                self.edu.config_read(offset, buf).map_err(|e| self.err(e))
            }
            _ => Err(self.no_region(index)),
        }
    }

    fn write_region(&self, index: u32, offset: u64, data: &[u8]) -> Result<()> {
        match index {
            0 => {
                let bar = SimBar(self);
                match *data {
                    [a, b, c, d] => bar.write32(offset, u32::from_le_bytes([a, b, c, d])),
                    [a, b, c, d, e, f, g, h] => bar.write64(offset, u64::from_le_bytes([a, b, c, d, e, f, g, h])),
                    _ => Err(BackendError::Invalid(format!("BAR0 write of {} bytes", data.len()))),
                }
            }
            CONFIG_REGION => {
                self.check("config", offset, data.len() as u64, CONFIG_SIZE)?;
                self.edu.config_write(offset, data).map_err(|e| self.err(e))
            }
            _ => Err(self.no_region(index)),
        }
    }

    fn bar(&self, index: u32) -> Result<SimBar<'_>> {
        if index != 0 {
            return Err(self.no_region(index));
        }
        Ok(SimBar(self))
    }

    fn irq_info(&self, kind: IrqKind) -> Result<IrqInfo> {
        let (count, flags) = match kind {
            IrqKind::Intx => (1, IRQ_INTX),
            IrqKind::Msi => (1, flags::IRQ_EVENTFD),
            _ => (0, 0),
        };
        Ok(IrqInfo { index: kind.index(), count, flags })
    }

    fn enable_irqs(&self, kind: IrqKind, count: u32) -> Result<Vec<EventFd>> {
        let available = self.irq_info(kind)?.count;
        if count == 0 || count > available {
            return Err(BackendError::NoIrq { device: self.name.clone(), kind, wanted: count });
        }
        let fds = (0..count).map(|_| EventFd::new()).collect::<Result<Vec<_>>>()?;
        let mine = fds.iter().map(EventFd::try_clone).collect::<Result<Vec<_>>>()?;
        self.edu.take_interrupts(); // what was raised before has nowhere to go
        let mut irqs = self.irqs();
        irqs.enabled = Some((kind, mine));
        irqs.intx_masked = false;
        Ok(fds)
    }

    fn unmask_intx(&self) -> Result<()> {
        let mut irqs = self.irqs();
        irqs.intx_masked = false;
        if let Some((IrqKind::Intx, fds)) = &irqs.enabled {
            if self.edu.irq_line() {
                // Level-triggered: still asserted, so it fires again.
                fds[0].signal(1)?;
                irqs.intx_masked = true;
            }
        }
        Ok(())
    }

    fn disable_irqs(&self, kind: IrqKind) -> Result<()> {
        let mut irqs = self.irqs();
        if irqs.enabled.as_ref().is_some_and(|(k, _)| *k == kind) {
            irqs.enabled = None;
        }
        Ok(())
    }

    fn reset(&self) -> Result<()> {
        self.edu.reset();
        self.edu.take_interrupts();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use iommu_backend::edu_regs::{reg, CMD_IRQ, CMD_START, CMD_TO_RAM, DMA_BUFFER, DMA_IRQ};
    use iommu_backend::{Access, DmaSpace};

    use super::*;

    #[test]
    fn a_blocked_dma_is_a_typed_fault_record_with_the_kernels_log_line() {
        let (dev, iommu) = edu("0000:03:00.1").unwrap();
        dev.enable_bus_master().unwrap();
        let bar = dev.bar(0).unwrap();
        bar.write64(reg::DMA_SRC, DMA_BUFFER).unwrap();
        bar.write64(reg::DMA_DST, 0x9000).unwrap();
        bar.write64(reg::DMA_CNT, 8).unwrap();
        bar.write64(reg::DMA_CMD, CMD_START | CMD_TO_RAM).unwrap();
        let f = iommu.recorded_faults();
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].requester.as_deref(), Some("03:00.1"));
        assert_eq!((f[0].iova, f[0].access, f[0].code), (0x9000, Access::Write, Some(5)));
        assert_eq!(f[0].reason, "not-mapped");
        assert!(f[0].log_line.as_deref().unwrap().starts_with("DMAR: [DMA Write] Request device [03:00.1]"));
    }

    #[test]
    fn memory_from_alloc_is_what_the_device_reaches_and_msi_is_signalled() {
        let (dev, iommu) = edu("0000:01:00.0").unwrap();
        let space = DmaSpace::new(iommu.clone(), &[]).unwrap().with_dma_mask(28);
        let buf = space.alloc(4096).unwrap();
        assert!(buf.len() == 4096 && !buf.is_huge());
        buf.copy_in(0, b"to the device").unwrap();
        dev.enable_bus_master().unwrap();
        let fds = dev.enable_irqs(IrqKind::Msi, 1).unwrap();
        let bar = dev.bar(0).unwrap();
        let m = space.map(&buf, DmaDir::ToDevice).unwrap();
        bar.write64(reg::DMA_SRC, m.iova()).unwrap();
        bar.write64(reg::DMA_DST, DMA_BUFFER).unwrap();
        bar.write64(reg::DMA_CNT, 13).unwrap();
        bar.write64(reg::DMA_CMD, CMD_START | CMD_IRQ).unwrap();
        assert_eq!(fds[0].wait(Duration::from_secs(1)).unwrap(), Some(1));
        assert_eq!(bar.read32(reg::IRQ_STATUS).unwrap() & DMA_IRQ, DMA_IRQ);
        assert_eq!(dev.edu().with(|e| e.buffer()[..13].to_vec()), b"to the device");
        assert!(iommu.recorded_faults().is_empty());
        drop(m);
        assert!(iommu.0.mappings().is_empty());
    }

    #[test]
    fn missing_regions_and_bad_accesses_name_the_device() {
        let (dev, _) = edu("0000:01:00.0").unwrap();
        let e = dev.bar(2).unwrap_err();
        assert!(e.to_string().contains("0000:01:00.0 BAR2"), "{e}");
        assert!(matches!(dev.bar(0).unwrap().read32(2), Err(BackendError::Misaligned { offset: 2, .. })));
        assert!(matches!(dev.enable_irqs(IrqKind::Msix, 1), Err(BackendError::NoIrq { .. })));
    }
}
