//! The framework's traits implemented on the software IOMMU of `iommu-sim`, so the drivers in
//! [`crate::drivers`] run unchanged against a simulated IOMMU and device:
//!
//! - [`SimBackend`]: a [`DmaBackend`] over one domain of the simulator ([`SimIommu`]). Mapped
//!   [`DmaMemory`] is plugged into the simulator as host memory; DMA faults are recorded by the
//!   simulator and reported by [`DmaBackend::recorded_faults`].
//! - [`SimDevice`]: a [`DeviceAccess`] over the simulator's `edu` ([`SharedEdu`]): BAR0 (1 MiB, not
//!   mmappable), config space, INTx and MSI (one vector each), reset.
//!
//! ```
//! use iommu_vfio::drivers::{edu, Reporter};
//! use iommu_vfio::{sim_backend, DmaSpace};
//!
//! let (dev, backend) = sim_backend::edu("0000:01:00.0").unwrap();
//! let space = DmaSpace::new(backend, &[]).unwrap().with_dma_mask(edu::DMA_MASK_BITS);
//! let mut r = Reporter::new(|_: &str| {});
//! edu::run(&dev, &space, &mut r).unwrap();
//! assert!(r.all_ok(), "{:?}", r.failed());
//! ```

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use iommu_pci::PciAddress;
use iommu_sim::{DomainMode, HostMemory, HostMemoryError, Rid, SharedEdu, Sim, SimError, SimIommu};

use crate::backend::{DeviceAccess, DmaBackend, EventFd, Mmio, CONFIG_REGION};
use crate::dma::{DmaDir, DmaMemory};
use crate::error::{Result, VfioError};
use crate::info::{DeviceInfo, IommuInfo, IovaRange, IrqInfo, IrqKind, RegionInfo};

/// The mapping limit VFIO's type1 backend applies by default (`dma_entry_limit`).
pub const DMA_ENTRY_LIMIT: u32 = 65535;

/// A simulated edu device at `addr` (its requester ID is the address's bus/device/function) in a
/// translated domain of a fresh [`Sim`]: the device and the domain as an IOMMU backend.
pub fn edu(addr: &str) -> Result<(SimDevice, SimBackend)> {
    let pci: PciAddress = addr.parse().map_err(|e| VfioError::Invalid(format!("PCI address {addr:?}: {e}")))?;
    let rid = Rid::from(pci);
    let mut sim = Sim::default();
    let domain = sim.create_domain(DomainMode::Translated);
    sim.attach(rid, domain).map_err(|e| sim_err(&pci.to_string(), e))?;
    let sim = sim.into_shared();
    let iommu = SimIommu::for_device(sim.clone(), rid).map_err(|e| sim_err(&pci.to_string(), e))?;
    let dev = SimDevice::new(pci.to_string(), SharedEdu::new(iommu_sim::Edu::new(rid), sim));
    Ok((dev, SimBackend(iommu)))
}

fn sim_err(device: &str, e: SimError) -> VfioError {
    VfioError::DeviceReported { device: device.to_string(), what: e.to_string() }
}

/// [`DmaMemory`] seen by the simulator as host memory.
#[derive(Debug)]
struct SimMemory(DmaMemory);

impl HostMemory for SimMemory {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn read_at(&self, offset: usize, out: &mut [u8]) -> std::result::Result<(), HostMemoryError> {
        self.0.copy_out(offset, out).map_err(|e| HostMemoryError(e.to_string()))
    }
    fn write_at(&self, offset: usize, data: &[u8]) -> std::result::Result<(), HostMemoryError> {
        self.0.copy_in(offset, data).map_err(|e| HostMemoryError(e.to_string()))
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

    fn map(&self, iova: u64, mem: &DmaMemory, offset: usize, len: usize, dir: DmaDir) -> Result<()> {
        let perm = iommu_sim::Perm::from(dir);
        let host: Arc<dyn HostMemory> = Arc::new(SimMemory(mem.clone()));
        self.0.map(iova, host, offset, len as u64, perm).map_err(|e| VfioError::Map {
            iova,
            len: len as u64,
            source: io::Error::other(e),
        })
    }

    fn unmap(&self, iova: u64, len: u64) -> Result<()> {
        self.0.unmap(iova, len).map_err(|e| VfioError::Unmap { iova, len, source: io::Error::other(e) })
    }

    fn recorded_faults(&self) -> Vec<serde_json::Value> {
        self.0
            .faults()
            .iter()
            .map(|f| {
                serde_json::json!({
                    "rid": f.rid.to_string(), "addr": f.addr, "access": f.access.to_string(),
                    "reason": f.reason, "why": f.reason.describe(), "vtd_code": format!("{:#04x}", f.vtd_code),
                    "dmar": f.dmar_line(),
                })
            })
            .collect()
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

    fn err(&self, e: SimError) -> VfioError {
        sim_err(&self.name, e)
    }

    fn check(&self, what: &str, offset: u64, width: u64, size: u64) -> Result<()> {
        let what = format!("{} {what}", self.name);
        if !matches!(offset.checked_add(width), Some(end) if end <= size) {
            return Err(VfioError::OutOfBounds { what, offset, width, size });
        }
        Ok(())
    }
}

/// BAR0 of a [`SimDevice`]: register accesses go to the emulated edu; the interrupts a write raises
/// are delivered to the enabled eventfds.
#[derive(Debug)]
pub struct SimBar<'a>(&'a SimDevice);

impl SimBar<'_> {
    fn check(&self, offset: u64, width: u64) -> Result<()> {
        if !offset.is_multiple_of(width) {
            return Err(VfioError::Misaligned { what: format!("{} BAR0", self.0.name), offset, width });
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

/// `VFIO_DEVICE_FLAGS_RESET | VFIO_DEVICE_FLAGS_PCI`.
const DEVICE_FLAGS: u32 = 0x3;
/// `VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE`.
const REGION_RW: u32 = 0x3;
/// `VFIO_IRQ_INFO_EVENTFD`, and for INTx also `MASKABLE | AUTOMASKED`.
const IRQ_EVENTFD: u32 = 0x1;
const IRQ_INTX: u32 = 0x7;
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
                    _ => return Err(VfioError::Invalid(format!("BAR0 read of {} bytes", buf.len()))),
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
                    _ => Err(VfioError::Invalid(format!("BAR0 write of {} bytes", data.len()))),
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
            IrqKind::Msi => (1, IRQ_EVENTFD),
            _ => (0, 0),
        };
        Ok(IrqInfo { index: kind.index(), count, flags })
    }

    fn enable_irqs(&self, kind: IrqKind, count: u32) -> Result<Vec<EventFd>> {
        let available = self.irq_info(kind)?.count;
        if count == 0 || count > available {
            return Err(VfioError::NoIrq { device: self.name.clone(), kind, wanted: count });
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

impl SimDevice {
    fn no_region(&self, index: u32) -> VfioError {
        VfioError::Region {
            device: self.name.clone(),
            region: crate::info::region_name(index),
            why: "not present on the simulated edu",
        }
    }
}
