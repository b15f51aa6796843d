//! The traits the framework's logic and drivers are written against, and the eventfd type interrupts
//! arrive on.
//!
//! - [`DmaBackend`]: an IOMMU address space (map, unmap, what it can translate). Implemented by
//!   [`crate::Container`] (the kernel, through VFIO type1v2), by [`crate::fake::FakeIommu`] (in
//!   memory, for tests) and by [`crate::sim_backend::SimBackend`] (the `iommu-sim` software
//!   IOMMU). [`crate::DmaSpace`] adds IOVA allocation and bookkeeping on top of any backend.
//! - [`DeviceAccess`]: a device's regions, config space, BARs, interrupts and reset. Implemented by
//!   [`crate::VfioDevice`] and by [`crate::sim_backend::SimDevice`] (the simulator's `edu`).
//! - [`Mmio`]: register access to a BAR.
//!
//! # Implementing the traits in a software IOMMU (iommu-sim)
//!
//! The drivers in [`crate::drivers`] are generic over `D: DeviceAccess` and `B: DmaBackend`, so a
//! simulator can run them unchanged against emulated devices behind an emulated IOMMU:
//!
//! - `DmaBackend::map` receives the memory as a [`DmaMemory`] handle. Keep a clone (it keeps the memory
//!   alive) in your page table keyed by IOVA. When an emulated device does DMA, translate the IOVA, check
//!   the direction ([`DmaDir::device_reads`] / [`DmaDir::device_writes`]) and use the handle's volatile
//!   accessors (`copy_in`, `copy_out`); an IOVA with no entry is a fault (record it, touch nothing).
//!   [`crate::fake::FakeIommu`] is a complete, small example of exactly this.
//! - `DmaBackend::unmap` is called with the range of one earlier `map` or of several consecutive ones
//!   (a scatter-gather mapping is unmapped in one call); drop your handles for the whole range.
//! - `DeviceAccess::Bar` can be any type implementing [`Mmio`]: an emulated device dispatches
//!   `read32`/`write32` to its register model, which is where it starts DMA or raises interrupts.
//! - Interrupts are [`EventFd`]s: create them in `enable_irqs`, keep them, and call [`EventFd::signal`]
//!   when the emulated device raises the interrupt; `unmask_intx` re-arms a level interrupt.
//! - `read_region`/`write_region` with index 7 are config space: a driver sets bus mastering there
//!   ([`DeviceAccess::enable_bus_master`]); an emulated device should refuse DMA until it is set.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use crate::dma::{DmaDir, DmaMemory};
use crate::error::{Result, VfioError};
use crate::info::{DeviceInfo, IommuInfo, IrqInfo, IrqKind, RegionInfo};
use crate::sys;

/// An IOMMU address space: the kernel calls (or their simulation) behind [`crate::DmaSpace`].
///
/// The caller ([`crate::DmaSpace`]) guarantees that `iova`, `offset` and `len` are multiples of the
/// smallest page size in [`IommuInfo::page_sizes`], that `offset + len <= mem.len()`, and that it never
/// maps over an existing mapping.
pub trait DmaBackend {
    /// Page sizes, valid IOVA ranges and how many mappings may still be made.
    fn iommu_info(&self) -> Result<IommuInfo>;
    /// Lets the device reach `len` bytes of `mem` from `offset` at `iova`, as `dir` allows.
    fn map(&self, iova: u64, mem: &DmaMemory, offset: usize, len: usize, dir: DmaDir) -> Result<()>;
    /// Removes the mapping(s) that exactly cover `iova..iova+len`.
    fn unmap(&self, iova: u64, len: u64) -> Result<()>;
    /// Every blocked device access this address space has recorded so far, oldest first, one JSON object
    /// each (a simulator gives requester ID, address, access, reason and VT-d code). Drivers report the
    /// new entries of a step under `"faults"`. The default, and VFIO (whose faults only reach the kernel
    /// log), records none.
    fn recorded_faults(&self) -> Vec<serde_json::Value> {
        Vec::new()
    }
}

impl<T: DmaBackend + ?Sized> DmaBackend for &T {
    fn iommu_info(&self) -> Result<IommuInfo> {
        (**self).iommu_info()
    }
    fn map(&self, iova: u64, mem: &DmaMemory, offset: usize, len: usize, dir: DmaDir) -> Result<()> {
        (**self).map(iova, mem, offset, len, dir)
    }
    fn unmap(&self, iova: u64, len: u64) -> Result<()> {
        (**self).unmap(iova, len)
    }
    fn recorded_faults(&self) -> Vec<serde_json::Value> {
        (**self).recorded_faults()
    }
}

impl<T: DmaBackend + ?Sized> DmaBackend for std::sync::Arc<T> {
    fn iommu_info(&self) -> Result<IommuInfo> {
        (**self).iommu_info()
    }
    fn map(&self, iova: u64, mem: &DmaMemory, offset: usize, len: usize, dir: DmaDir) -> Result<()> {
        (**self).map(iova, mem, offset, len, dir)
    }
    fn unmap(&self, iova: u64, len: u64) -> Result<()> {
        (**self).unmap(iova, len)
    }
    fn recorded_faults(&self) -> Vec<serde_json::Value> {
        (**self).recorded_faults()
    }
}

/// Register access to a BAR: bounds- and alignment-checked, volatile where the BAR is mmapped.
pub trait Mmio {
    /// Size of the BAR in bytes.
    fn size(&self) -> u64;
    /// 32-bit read at `offset` (4-byte aligned).
    fn read32(&self, offset: u64) -> Result<u32>;
    /// 32-bit write at `offset` (4-byte aligned).
    fn write32(&self, offset: u64, value: u32) -> Result<()>;
    /// 64-bit read at `offset` (8-byte aligned).
    fn read64(&self, offset: u64) -> Result<u64>;
    /// 64-bit write at `offset` (8-byte aligned).
    fn write64(&self, offset: u64, value: u64) -> Result<()>;
}

/// PCI config space offset of the command register.
pub const PCI_COMMAND: u64 = 0x04;
/// Command register: memory space enable.
pub const PCI_COMMAND_MEMORY: u16 = 0x2;
/// Command register: bus master enable (the device may do DMA).
pub const PCI_COMMAND_MASTER: u16 = 0x4;
/// Command register: INTx disable.
pub const PCI_COMMAND_INTX_DISABLE: u16 = 0x400;
/// VFIO region index of PCI config space.
pub const CONFIG_REGION: u32 = 7;

/// A device's regions, config space, BARs, interrupts and reset.
pub trait DeviceAccess {
    /// What [`DeviceAccess::bar`] returns.
    type Bar<'a>: Mmio
    where
        Self: 'a;

    /// The device's name (its PCI address), for messages.
    fn name(&self) -> &str;
    /// Flags and counts.
    fn device_info(&self) -> DeviceInfo;
    /// One region's size, offset and flags.
    fn region_info(&self, index: u32) -> Result<RegionInfo>;
    /// Reads `buf.len()` bytes of region `index` at `offset` (bounds-checked).
    fn read_region(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes `data` to region `index` at `offset` (bounds-checked).
    fn write_region(&self, index: u32, offset: u64, data: &[u8]) -> Result<()>;
    /// Register access to BAR `index`.
    fn bar(&self, index: u32) -> Result<Self::Bar<'_>>;
    /// One interrupt index.
    fn irq_info(&self, kind: IrqKind) -> Result<IrqInfo>;
    /// Routes `count` interrupts of `kind` to new eventfds (index `i` of the result is vector `i`).
    fn enable_irqs(&self, kind: IrqKind, count: u32) -> Result<Vec<EventFd>>;
    /// Re-arms INTx after it fired (it is masked automatically when it fires).
    fn unmask_intx(&self) -> Result<()>;
    /// Stops delivering interrupts of `kind`.
    fn disable_irqs(&self, kind: IrqKind) -> Result<()>;
    /// Resets the device ([`VfioError::ResetUnsupported`] when it cannot be).
    fn reset(&self) -> Result<()>;

    /// 8-bit config space read.
    fn config_read_u8(&self, offset: u64) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read_region(CONFIG_REGION, offset, &mut b)?;
        Ok(b[0])
    }
    /// 16-bit config space read (little-endian).
    fn config_read_u16(&self, offset: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read_region(CONFIG_REGION, offset, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    /// 32-bit config space read (little-endian).
    fn config_read_u32(&self, offset: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_region(CONFIG_REGION, offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    /// 16-bit config space write (little-endian).
    fn config_write_u16(&self, offset: u64, value: u16) -> Result<()> {
        self.write_region(CONFIG_REGION, offset, &value.to_le_bytes())
    }
    /// 32-bit config space write (little-endian).
    fn config_write_u32(&self, offset: u64, value: u32) -> Result<()> {
        self.write_region(CONFIG_REGION, offset, &value.to_le_bytes())
    }
    /// Sets memory space and bus master enable in the command register; returns the new value.
    fn enable_bus_master(&self) -> Result<u16> {
        let cmd = self.config_read_u16(PCI_COMMAND)? | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
        self.config_write_u16(PCI_COMMAND, cmd)?;
        self.config_read_u16(PCI_COMMAND)
    }
}

/// An eventfd: where VFIO (or a simulator) signals an interrupt.
#[derive(Debug)]
pub struct EventFd {
    file: std::fs::File,
}

impl EventFd {
    /// A new eventfd with counter 0.
    pub fn new() -> Result<Self> {
        let fd = sys::eventfd().map_err(|source| VfioError::EventFd { source })?;
        Ok(Self { file: std::fs::File::from(fd) })
    }

    /// Waits up to `timeout` for a signal; returns the number of signals since the last read, or `None`
    /// on timeout.
    pub fn wait(&self, timeout: Duration) -> Result<Option<u64>> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        if !sys::poll_readable(self.file.as_fd(), ms).map_err(|source| VfioError::EventFd { source })? {
            return Ok(None);
        }
        let mut b = [0u8; 8];
        std::io::Read::read_exact(&mut &self.file, &mut b).map_err(|source| VfioError::EventFd { source })?;
        Ok(Some(u64::from_ne_bytes(b)))
    }

    /// Returns pending signals without waiting.
    pub fn try_read(&self) -> Result<Option<u64>> {
        self.wait(Duration::ZERO)
    }

    /// Another handle to the same eventfd (what a simulated device keeps to signal the driver's copy).
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Self { file: self.file.try_clone().map_err(|source| VfioError::EventFd { source })? })
    }

    /// Adds `n` to the counter (what the kernel does when the interrupt fires; for simulators and tests).
    pub fn signal(&self, n: u64) -> Result<()> {
        std::io::Write::write_all(&mut &self.file, &n.to_ne_bytes()).map_err(|source| VfioError::EventFd { source })
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_counts_signals_and_times_out_when_quiet() {
        let e = EventFd::new().unwrap();
        assert_eq!(e.try_read().unwrap(), None);
        e.signal(1).unwrap();
        e.signal(2).unwrap();
        assert_eq!(e.wait(Duration::from_millis(100)).unwrap(), Some(3));
        assert_eq!(e.wait(Duration::from_millis(10)).unwrap(), None);
    }
}
