//! VFIO's DMA memory, and the contract's DMA types re-exported.
//!
//! - [`DmaBuffer`]: page-aligned anonymous memory (optionally 2 MiB hugepages), mmapped in [`crate::sys`]
//!   and never exposed as a Rust reference: the contract's [`DmaMemory`] accessors are volatile reads and
//!   writes. [`crate::Container`] allocates it ([`DmaBackend::alloc`]) and maps only memory of this type,
//!   whose process address it pins.
//! - [`DmaSpace`], [`DmaMapping`], [`SgMapping`], [`IovaReservation`], [`MapOptions`], [`DmaStats`]: IOVA
//!   allocation and mapping bookkeeping, from `iommu-backend`, on any [`DmaBackend`] (for VFIO, a
//!   container: [`crate::VfioDevice::dma_space`]).

use iommu_backend::{BackendError, DmaMemory, HugePages};
use vfio_bindings::bindings::vfio as b;

pub use iommu_backend::dma::{DmaMapping, DmaSpace, DmaStats, IovaReservation, MapOptions, SgMapping};
pub use iommu_backend::{DmaBackend, DmaBuf, DmaDir, HUGEPAGE_2M};

use crate::error::bad_access;
use crate::sys::{self, MappedArea};

/// The kernel's answer to an unmap of `len` bytes at `iova` that reported `done` bytes unmapped: anything
/// but the whole range is an error (both the container and iommufd report how much they removed).
pub fn check_unmapped(iova: u64, len: u64, done: u64) -> std::result::Result<(), iommu_backend::BackendError> {
    if done == len {
        return Ok(());
    }
    Err(iommu_backend::BackendError::Unmap {
        iova,
        len,
        source: std::io::Error::other(format!("the kernel unmapped {done:#x} bytes")),
    })
}

/// The `VFIO_DMA_MAP_FLAG_*` bits for a direction: the device reads (`READ`), writes (`WRITE`) or both.
pub fn map_flags(dir: DmaDir) -> u32 {
    match dir {
        DmaDir::ToDevice => b::VFIO_DMA_MAP_FLAG_READ,
        DmaDir::FromDevice => b::VFIO_DMA_MAP_FLAG_WRITE,
        DmaDir::Bidirectional => b::VFIO_DMA_MAP_FLAG_READ | b::VFIO_DMA_MAP_FLAG_WRITE,
    }
}

type Result<T> = std::result::Result<T, BackendError>;

fn bad(e: sys::BadAccess) -> BackendError {
    bad_access("DMA buffer", e)
}

/// Page-aligned, zero-filled anonymous memory for DMA, mmapped by the process. Access it through
/// [`DmaMemory`] (volatile, bounds- and alignment-checked); share it as a [`DmaBuf`].
#[derive(Debug)]
pub struct DmaBuffer {
    area: MappedArea,
    huge: bool,
}

impl DmaBuffer {
    /// `len` bytes (rounded up to the page size) of ordinary anonymous memory.
    pub fn new(len: usize) -> Result<Self> {
        let page = sys::page_size();
        let rounded = len
            .max(1)
            .checked_add(page - 1)
            .map(|l| l & !(page - 1))
            .ok_or_else(|| BackendError::Alloc { len, source: std::io::Error::from_raw_os_error(libc::EOVERFLOW) })?;
        let area = MappedArea::anonymous(rounded, false).map_err(|source| BackendError::Alloc { len, source })?;
        Ok(Self { area, huge: false })
    }

    /// `len` bytes (rounded up to 2 MiB) of 2 MiB hugepages. Fails with [`BackendError::NoHugepages`]
    /// when the kernel has none free (`/proc/sys/vm/nr_hugepages`).
    pub fn hugepages(len: usize) -> Result<Self> {
        let rounded =
            len.max(1).checked_add(HUGEPAGE_2M - 1).map(|l| l & !(HUGEPAGE_2M - 1)).ok_or_else(|| {
                BackendError::Alloc { len, source: std::io::Error::from_raw_os_error(libc::EOVERFLOW) }
            })?;
        let area = MappedArea::anonymous(rounded, true).map_err(|source| {
            if source.raw_os_error() == Some(libc::ENOMEM) || source.raw_os_error() == Some(libc::EINVAL) {
                BackendError::NoHugepages { len, source }
            } else {
                BackendError::Alloc { len, source }
            }
        })?;
        Ok(Self { area, huge: true })
    }

    /// Hugepages if available, ordinary pages otherwise.
    pub fn prefer_hugepages(len: usize) -> Result<Self> {
        Self::hugepages(len).or_else(|_| Self::new(len))
    }

    /// Memory as `huge` asks ([`DmaBuffer::new`], [`DmaBuffer::prefer_hugepages`] or
    /// [`DmaBuffer::hugepages`]).
    pub fn with(len: usize, huge: HugePages) -> Result<Self> {
        match huge {
            HugePages::No => Self::new(len),
            HugePages::Prefer => Self::prefer_hugepages(len),
            HugePages::Require => Self::hugepages(len),
        }
    }

    /// The underlying mapping, for callers of [`crate::sys`] (e.g. a benchmark of the bare ioctls).
    pub fn area(&self) -> &MappedArea {
        &self.area
    }
}

impl DmaMemory for DmaBuffer {
    fn len(&self) -> usize {
        self.area.len()
    }
    /// The process virtual address (what `VFIO_IOMMU_MAP_DMA` takes). Not dereferenceable by safe code.
    fn host_addr(&self) -> u64 {
        self.area.addr() as u64
    }
    fn is_huge(&self) -> bool {
        self.huge
    }
    fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.area.copy_to(offset, out).map_err(bad)
    }
    fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.area.copy_from(offset, data).map_err(bad)
    }
    fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<()> {
        self.area.fill(offset, len, byte).map_err(bad)
    }
    fn read_u8(&self, offset: usize) -> Result<u8> {
        self.area.read_u8(offset).map_err(bad)
    }
    fn read_u16(&self, offset: usize) -> Result<u16> {
        self.area.read_u16(offset).map_err(bad)
    }
    fn read_u32(&self, offset: usize) -> Result<u32> {
        self.area.read_u32(offset).map_err(bad)
    }
    fn read_u64(&self, offset: usize) -> Result<u64> {
        self.area.read_u64(offset).map_err(bad)
    }
    fn write_u8(&self, offset: usize, v: u8) -> Result<()> {
        self.area.write_u8(offset, v).map_err(bad)
    }
    fn write_u16(&self, offset: usize, v: u16) -> Result<()> {
        self.area.write_u16(offset, v).map_err(bad)
    }
    fn write_u32(&self, offset: usize, v: u32) -> Result<()> {
        self.area.write_u32(offset, v).map_err(bad)
    }
    fn write_u64(&self, offset: usize, v: u64) -> Result<()> {
        self.area.write_u64(offset, v).map_err(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugepage_buffers_are_2m_backed_or_refused_with_the_sysctl_to_fix_it() {
        match DmaBuffer::hugepages(4096) {
            Ok(b) => assert!(b.is_huge() && b.len() == HUGEPAGE_2M),
            Err(e @ BackendError::NoHugepages { .. }) => assert!(e.to_string().contains("nr_hugepages"), "{e}"),
            Err(e) => panic!("{e:?}"),
        }
        let b = DmaBuffer::prefer_hugepages(4096).unwrap();
        assert!(b.len() >= 4096);
    }

    #[test]
    fn buffers_are_page_rounded_and_zeroed() {
        let b = DmaBuffer::new(100).unwrap();
        assert_eq!(b.len(), sys::page_size());
        assert_eq!(b.to_vec(0, b.len()).unwrap(), vec![0; b.len()]);
        assert!(matches!(b.read_u32(b.len() - 2), Err(BackendError::OutOfBounds { .. })));
    }
}
