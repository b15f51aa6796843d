//! The traits drivers are written against.
//!
//! - [`DmaBackend`]: an IOMMU address space: what it can translate, memory it can map, map, unmap, and
//!   the faults it observed. [`crate::DmaSpace`] adds IOVA allocation and bookkeeping on top of any
//!   backend.
//! - [`DeviceAccess`]: a device's regions, config space, BARs, interrupts and reset.
//! - [`Mmio`]: register access to a BAR.
//!
//! # Implementing the traits in a software IOMMU
//!
//! Drivers are generic over `D: DeviceAccess` and `B: DmaBackend`, so a simulator runs them unchanged
//! against emulated devices behind an emulated IOMMU:
//!
//! - `DmaBackend::alloc` returns memory the backend can map: heap memory ([`crate::HeapMemory`]) is
//!   enough for a simulator.
//! - `DmaBackend::map` receives the memory as a [`DmaBuf`]. Keep a clone (it keeps the memory alive) in
//!   your page table keyed by IOVA. When an emulated device does DMA, translate the IOVA, check the
//!   direction ([`DmaDir::device_reads`] / [`DmaDir::device_writes`]) and use the handle's accessors
//!   (`copy_in`, `copy_out`); an IOVA with no entry is a fault (record it, touch nothing, and report it
//!   from `recorded_faults` as a [`FaultRecord`]). [`crate::fake::FakeIommu`] is a complete, small
//!   example of exactly this.
//! - `DmaBackend::unmap` is called with the range of one earlier `map` or of several consecutive ones
//!   (a scatter-gather mapping is unmapped in one call); drop your handles for the whole range.
//! - `DeviceAccess::Bar` can be any type implementing [`Mmio`]: an emulated device dispatches
//!   `read32`/`write32` to its register model, which is where it starts DMA or raises interrupts.
//! - Interrupts are [`EventFd`]s: create them in `enable_irqs`, keep them, and call [`EventFd::signal`]
//!   when the emulated device raises the interrupt; `unmask_intx` re-arms a level interrupt.
//! - `read_region`/`write_region` with index [`CONFIG_REGION`] are config space: a driver sets bus
//!   mastering there ([`DeviceAccess::enable_bus_master`]); an emulated device should refuse DMA until
//!   it is set.

use crate::error::Result;
use crate::eventfd::EventFd;
use crate::fault::FaultRecord;
use crate::info::{DeviceInfo, IommuInfo, IrqInfo, IrqKind, RegionInfo};
use crate::memory::DmaBuf;
use crate::types::{DmaDir, HugePages};

/// An IOMMU address space: the kernel calls (or their simulation) behind [`crate::DmaSpace`].
///
/// The caller ([`crate::DmaSpace`]) guarantees that `iova`, `offset` and `len` are multiples of the
/// smallest page size in [`IommuInfo::page_sizes`], that `offset + len <= mem.len()`, and that it never
/// maps over an existing mapping.
pub trait DmaBackend {
    /// Page sizes, valid IOVA ranges and how many mappings may still be made.
    fn iommu_info(&self) -> Result<IommuInfo>;
    /// Zero-filled memory of at least `len` bytes (rounded up to the page size, or to 2 MiB for
    /// hugepages) that this backend can map.
    fn alloc(&self, len: usize, huge: HugePages) -> Result<DmaBuf>;
    /// Lets the device reach `len` bytes of `mem` from `offset` at `iova`, as `dir` allows.
    fn map(&self, iova: u64, mem: &DmaBuf, offset: usize, len: usize, dir: DmaDir) -> Result<()>;
    /// Removes the mapping(s) that exactly cover `iova..iova+len`.
    fn unmap(&self, iova: u64, len: u64) -> Result<()>;
    /// Every blocked device access this address space has recorded so far, oldest first. The default,
    /// and VFIO (whose faults only reach the kernel log), records none.
    fn recorded_faults(&self) -> Vec<FaultRecord> {
        Vec::new()
    }
}

impl<T: DmaBackend + ?Sized> DmaBackend for &T {
    fn iommu_info(&self) -> Result<IommuInfo> {
        (**self).iommu_info()
    }
    fn alloc(&self, len: usize, huge: HugePages) -> Result<DmaBuf> {
        (**self).alloc(len, huge)
    }
    fn map(&self, iova: u64, mem: &DmaBuf, offset: usize, len: usize, dir: DmaDir) -> Result<()> {
        (**self).map(iova, mem, offset, len, dir)
    }
    fn unmap(&self, iova: u64, len: u64) -> Result<()> {
        (**self).unmap(iova, len)
    }
    fn recorded_faults(&self) -> Vec<FaultRecord> {
        (**self).recorded_faults()
    }
}

impl<T: DmaBackend + ?Sized> DmaBackend for std::sync::Arc<T> {
    fn iommu_info(&self) -> Result<IommuInfo> {
        (**self).iommu_info()
    }
    fn alloc(&self, len: usize, huge: HugePages) -> Result<DmaBuf> {
        (**self).alloc(len, huge)
    }
    fn map(&self, iova: u64, mem: &DmaBuf, offset: usize, len: usize, dir: DmaDir) -> Result<()> {
        (**self).map(iova, mem, offset, len, dir)
    }
    fn unmap(&self, iova: u64, len: u64) -> Result<()> {
        (**self).unmap(iova, len)
    }
    fn recorded_faults(&self) -> Vec<FaultRecord> {
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
/// Region index of PCI config space (VFIO's `VFIO_PCI_CONFIG_REGION_INDEX`).
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
    /// Resets the device ([`crate::BackendError::ResetUnsupported`] when it cannot be).
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
