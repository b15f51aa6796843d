//! IOVA spaces and mappings over any [`DmaBackend`].
//!
//! - [`DmaSpace`]: one IOMMU address space (a VFIO container, a simulator's domain) seen through a
//!   [`DmaBackend`]. It allocates IOVAs (valid ranges, reserved regions, DMA mask, alignment), keeps count
//!   of the backend's mapping limit, allocates memory through the backend and hands out mappings.
//! - [`DmaMapping`], [`SgMapping`]: borrow the space and the buffer(s), so a mapping cannot outlive its
//!   memory handle; dropping one unmaps it and frees its IOVAs. [`IovaReservation`] holds IOVAs that stay
//!   unmapped.

use std::marker::PhantomData;
use std::sync::{Mutex, MutexGuard};

use crate::backend::DmaBackend;
use crate::error::{error_chain, BackendError, Result};
use crate::info::{IommuInfo, IovaRange};
use crate::iova::{mask_limit, IovaAllocator, IovaBlock, Request};
use crate::memory::DmaBuf;
use crate::types::{DmaDir, HugePages};

/// How to map: direction, part of the buffer, IOVA constraints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapOptions {
    /// Direction (default both).
    pub dir: DmaDir,
    /// Offset into the buffer (a multiple of the IOMMU page size).
    pub offset: usize,
    /// Bytes to map (`None`: to the end of the buffer); rounded up to the IOMMU page size.
    pub len: Option<usize>,
    /// IOVA alignment (a power of two; at least the IOMMU page size).
    pub align: u64,
    /// Highest IOVA the mapping may touch (`None`: the space's DMA mask).
    pub limit: Option<u64>,
    /// A fixed IOVA instead of an allocated one.
    pub at: Option<u64>,
}

impl Default for MapOptions {
    fn default() -> Self {
        Self { dir: DmaDir::Bidirectional, offset: 0, len: None, align: 1, limit: None, at: None }
    }
}

impl MapOptions {
    /// Default options with direction `dir`.
    pub fn dir(dir: DmaDir) -> Self {
        Self { dir, ..Self::default() }
    }
}

/// Counters of a [`DmaSpace`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DmaStats {
    /// Backend mappings this space holds (for VFIO, kernel mappings; a scatter-gather mapping counts
    /// each piece).
    pub mappings: u64,
    /// IOVA bytes allocated (mapped or reserved).
    pub iova_in_use: u64,
    /// Mappings whose unmap failed on drop; their IOVAs are kept out of the allocator.
    pub failed_unmaps: u64,
}

struct State {
    alloc: IovaAllocator,
    stats: DmaStats,
    last_unmap_error: Option<String>,
}

/// One IOMMU address space seen through a [`DmaBackend`] (for VFIO: a container).
///
/// ```
/// use iommu_backend::{fake::FakeIommu, DmaDir, DmaSpace};
/// let space = DmaSpace::new(FakeIommu::new(), &[])?.with_dma_mask(28);
/// let buf = space.alloc(4096)?;
/// let m = space.map(&buf, DmaDir::Bidirectional)?;
/// println!("the device sees the buffer at {:#x}", m.iova());
/// drop(m); // unmapped; `buf` may now be dropped too (not before: the borrow checker says so)
/// # Ok::<(), iommu_backend::BackendError>(())
/// ```
pub struct DmaSpace<B: DmaBackend> {
    backend: B,
    info: IommuInfo,
    reserved: Vec<IovaRange>,
    limit: u64,
    granule: u64,
    state: Mutex<State>,
}

impl<B: DmaBackend> std::fmt::Debug for DmaSpace<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaSpace").field("info", &self.info).field("limit", &self.limit).finish_non_exhaustive()
    }
}

impl<B: DmaBackend> DmaSpace<B> {
    /// A space over `backend`, which is asked for its page sizes, valid IOVA ranges and mapping limit;
    /// `reserved` (e.g. the group's `reserved_regions`) is never allocated.
    pub fn new(backend: B, reserved: &[IovaRange]) -> Result<Self> {
        let info = backend.iommu_info()?;
        let granule = info.min_page_size().max(rustix::param::page_size() as u64);
        let alloc = IovaAllocator::new(granule, &info.iova_ranges, reserved)?;
        Ok(Self {
            backend,
            info,
            reserved: reserved.to_vec(),
            limit: u64::MAX,
            granule,
            state: Mutex::new(State { alloc, stats: DmaStats::default(), last_unmap_error: None }),
        })
    }

    /// Limits every allocated IOVA to a `bits`-bit DMA mask (edu: 28).
    pub fn with_dma_mask(mut self, bits: u32) -> Self {
        self.limit = mask_limit(bits);
        self
    }

    /// The highest IOVA allocations may touch.
    pub fn dma_limit(&self) -> u64 {
        self.limit
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// What the backend reported when the space was made.
    pub fn info(&self) -> &IommuInfo {
        &self.info
    }

    /// The reserved ranges the space avoids.
    pub fn reserved(&self) -> &[IovaRange] {
        &self.reserved
    }

    /// The allocation granule (IOMMU page size).
    pub fn granule(&self) -> u64 {
        self.granule
    }

    /// Zero-filled memory of at least `len` bytes (whole pages) that the backend can map.
    pub fn alloc(&self, len: usize) -> Result<DmaBuf> {
        self.backend.alloc(len, HugePages::No)
    }

    /// Like [`DmaSpace::alloc`], backed by 2 MiB hugepages as `huge` asks.
    pub fn alloc_with(&self, len: usize, huge: HugePages) -> Result<DmaBuf> {
        self.backend.alloc(len, huge)
    }

    /// Counters.
    pub fn stats(&self) -> DmaStats {
        let s = self.lock();
        DmaStats { iova_in_use: s.alloc.in_use(), ..s.stats }
    }

    /// The error of the last unmap that failed on drop, if any.
    pub fn last_unmap_error(&self) -> Option<String> {
        self.lock().last_unmap_error.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `n` mapping slots against the kernel's limit.
    fn take_slots(st: &mut State, avail: Option<u32>, n: u64) -> Result<()> {
        if let Some(limit) = avail {
            if st.stats.mappings + n > u64::from(limit) {
                return Err(BackendError::DmaLimit { limit, in_use: st.stats.mappings });
            }
        }
        st.stats.mappings += n;
        Ok(())
    }

    fn alloc_block(&self, st: &mut State, len: u64, opts: &MapOptions) -> Result<IovaBlock> {
        Ok(match opts.at {
            Some(at) => {
                if !at.is_multiple_of(self.granule) {
                    return Err(BackendError::Invalid(format!("IOVA {at:#x} is not page-aligned")));
                }
                st.alloc.alloc_at(at, len)?
            }
            None => st.alloc.alloc(Request::new(len).align(opts.align).limit(opts.limit.unwrap_or(self.limit)))?,
        })
    }

    fn map_error(&self, e: BackendError, st: &State) -> BackendError {
        match (&e, self.info.dma_avail) {
            (BackendError::Map { source, .. }, Some(limit))
                if source.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) =>
            {
                BackendError::DmaLimit { limit, in_use: st.stats.mappings }
            }
            _ => e,
        }
    }

    /// Maps the whole buffer at an allocated IOVA.
    pub fn map<'a>(&'a self, buf: &'a DmaBuf, dir: DmaDir) -> Result<DmaMapping<'a, B>> {
        self.map_with(buf, MapOptions::dir(dir))
    }

    /// Maps (part of) the buffer as `opts` says.
    pub fn map_with<'a>(&'a self, buf: &'a DmaBuf, opts: MapOptions) -> Result<DmaMapping<'a, B>> {
        let granule = self.granule() as usize;
        let want = opts.len.unwrap_or(buf.len().saturating_sub(opts.offset));
        let len = want.checked_add(granule - 1).map(|l| l & !(granule - 1)).unwrap_or(usize::MAX);
        if !opts.offset.is_multiple_of(granule)
            || want == 0
            || opts.offset.checked_add(len).is_none_or(|e| e > buf.len())
        {
            return Err(BackendError::Invalid(format!(
                "cannot map {want:#x} bytes at offset {:#x} of a {:#x}-byte buffer with {granule:#x}-byte IOMMU pages",
                opts.offset,
                buf.len()
            )));
        }
        let block = {
            let mut st = self.lock();
            Self::take_slots(&mut st, self.info.dma_avail, 1)?;
            match self.alloc_block(&mut st, len as u64, &opts) {
                Ok(b) => b,
                Err(e) => {
                    st.stats.mappings -= 1;
                    return Err(e);
                }
            }
        };
        if let Err(e) = self.backend.map(block.start(), buf, opts.offset, len, opts.dir) {
            let mut st = self.lock();
            let e = self.map_error(e, &st);
            st.stats.mappings -= 1;
            st.alloc.free(block);
            return Err(e);
        }
        Ok(DmaMapping { space: self, block: Some(block), len, dir: opts.dir, _buf: PhantomData })
    }

    /// Maps several buffers back to back into ONE contiguous IOVA range (scatter-gather): the device sees
    /// `bufs[0]` at `iova()`, `bufs[1]` right after it, and so on. Every buffer but the last must be a
    /// whole number of IOMMU pages long (buffers always are).
    pub fn map_sg<'a>(&'a self, bufs: &[&'a DmaBuf], dir: DmaDir) -> Result<SgMapping<'a, B>> {
        if bufs.is_empty() {
            return Err(BackendError::Invalid("scatter-gather mapping of no buffers".into()));
        }
        let granule = self.granule() as usize;
        if let Some(b) = bufs.iter().find(|b| !b.len().is_multiple_of(granule)) {
            return Err(BackendError::Invalid(format!(
                "a {:#x}-byte buffer is not a whole number of {granule:#x}-byte IOMMU pages",
                b.len()
            )));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let n = bufs.len() as u64;
        let block = {
            let mut st = self.lock();
            Self::take_slots(&mut st, self.info.dma_avail, n)?;
            match self.alloc_block(&mut st, total as u64, &MapOptions::dir(dir)) {
                Ok(b) => b,
                Err(e) => {
                    st.stats.mappings -= n;
                    return Err(e);
                }
            }
        };
        let mut pieces = Vec::with_capacity(bufs.len());
        let mut iova = block.start();
        for b in bufs {
            if let Err(e) = self.backend.map(iova, b, 0, b.len(), dir) {
                let mapped = iova - block.start();
                let undo = if mapped > 0 { self.backend.unmap(block.start(), mapped) } else { Ok(()) };
                let mut st = self.lock();
                let e = self.map_error(e, &st);
                st.stats.mappings -= n;
                if undo.is_ok() {
                    st.alloc.free(block);
                } else {
                    st.stats.failed_unmaps += 1;
                    st.alloc.retire(block); // partly still mapped: never hand these IOVAs out again
                }
                return Err(e);
            }
            pieces.push(IovaRange { start: iova, end: iova + b.len() as u64 - 1 });
            iova += b.len() as u64;
        }
        Ok(SgMapping { space: self, block: Some(block), pieces, len: total, _bufs: PhantomData })
    }

    /// Allocates `len` bytes of IOVA space that stays unmapped while the reservation lives: an address the
    /// device can be pointed at to prove it cannot reach memory there.
    pub fn reserve(&self, len: u64) -> Result<IovaReservation<'_, B>> {
        let mut st = self.lock();
        let block = self.alloc_block(&mut st, len, &MapOptions::default())?;
        Ok(IovaReservation { space: self, block: Some(block) })
    }

    /// Unmaps `block` (`pieces` kernel mappings) and frees it; on failure the block stays allocated.
    fn release(&self, block: IovaBlock, pieces: u64) -> Result<()> {
        let r = self.backend.unmap(block.start(), block.len());
        let mut st = self.lock();
        match r {
            Ok(()) => {
                st.stats.mappings -= pieces;
                st.alloc.free(block);
                Ok(())
            }
            Err(e) => {
                st.stats.failed_unmaps += 1;
                st.last_unmap_error = Some(error_chain(&e));
                st.alloc.retire(block); // still mapped: never hand these IOVAs out again
                Err(e)
            }
        }
    }
}

/// A buffer (or part of it) mapped for the device. Unmapped when dropped or by [`DmaMapping::unmap`].
///
/// It borrows the buffer, so the buffer cannot be dropped while the device may still reach it:
///
/// ```compile_fail
/// use iommu_backend::{fake::FakeIommu, DmaDir, DmaSpace};
/// let space = DmaSpace::new(FakeIommu::new(), &[]).unwrap();
/// let mapping = {
///     let buf = space.alloc(4096).unwrap();
///     space.map(&buf, DmaDir::ToDevice).unwrap() // error: `buf` does not live long enough
/// };
/// ```
#[must_use = "dropping a mapping unmaps it at once"]
pub struct DmaMapping<'a, B: DmaBackend> {
    space: &'a DmaSpace<B>,
    block: Option<IovaBlock>,
    len: usize,
    dir: DmaDir,
    _buf: PhantomData<&'a DmaBuf>,
}

impl<B: DmaBackend> std::fmt::Debug for DmaMapping<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DmaMapping({:#x}+{:#x} {:?})", self.iova(), self.len, self.dir)
    }
}

impl<B: DmaBackend> DmaMapping<'_, B> {
    /// The IOVA the device uses.
    pub fn iova(&self) -> u64 {
        self.block.as_ref().map_or(0, IovaBlock::start)
    }
    /// Mapped length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The direction.
    pub fn dir(&self) -> DmaDir {
        self.dir
    }
    /// The IOVA range.
    pub fn range(&self) -> IovaRange {
        IovaRange { start: self.iova(), end: self.iova() + self.len as u64 - 1 }
    }
    /// Unmaps now and reports failure (dropping unmaps too, but can only record a failure in
    /// [`DmaSpace::last_unmap_error`]).
    pub fn unmap(mut self) -> Result<()> {
        match self.block.take() {
            Some(b) => self.space.release(b, 1),
            None => Ok(()),
        }
    }
}

impl<B: DmaBackend> Drop for DmaMapping<'_, B> {
    fn drop(&mut self) {
        if let Some(b) = self.block.take() {
            let _ = self.space.release(b, 1); // recorded in the space's stats
        }
    }
}

/// Several buffers mapped into one contiguous IOVA range. Unmapped when dropped or by [`SgMapping::unmap`].
#[must_use = "dropping a mapping unmaps it at once"]
pub struct SgMapping<'a, B: DmaBackend> {
    space: &'a DmaSpace<B>,
    block: Option<IovaBlock>,
    pieces: Vec<IovaRange>,
    len: usize,
    _bufs: PhantomData<&'a DmaBuf>,
}

impl<B: DmaBackend> std::fmt::Debug for SgMapping<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SgMapping({:#x}+{:#x}, {} pieces)", self.iova(), self.len, self.pieces.len())
    }
}

impl<B: DmaBackend> SgMapping<'_, B> {
    /// The first IOVA of the contiguous range.
    pub fn iova(&self) -> u64 {
        self.block.as_ref().map_or(0, IovaBlock::start)
    }
    /// Total length.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Where each buffer landed, in order.
    pub fn pieces(&self) -> &[IovaRange] {
        &self.pieces
    }
    /// Unmaps now and reports failure.
    pub fn unmap(mut self) -> Result<()> {
        let n = self.pieces.len() as u64;
        match self.block.take() {
            Some(b) => self.space.release(b, n),
            None => Ok(()),
        }
    }
}

impl<B: DmaBackend> Drop for SgMapping<'_, B> {
    fn drop(&mut self) {
        if let Some(b) = self.block.take() {
            let _ = self.space.release(b, self.pieces.len() as u64);
        }
    }
}

/// IOVAs held unmapped. Freed on drop.
#[derive(Debug)]
pub struct IovaReservation<'a, B: DmaBackend> {
    space: &'a DmaSpace<B>,
    block: Option<IovaBlock>,
}

impl<B: DmaBackend> IovaReservation<'_, B> {
    /// The first reserved IOVA.
    pub fn iova(&self) -> u64 {
        self.block.as_ref().map_or(0, IovaBlock::start)
    }
    /// The reserved range.
    pub fn range(&self) -> IovaRange {
        self.block.as_ref().map(IovaBlock::range).unwrap_or(IovaRange { start: 0, end: 0 })
    }
}

impl<B: DmaBackend> Drop for IovaReservation<'_, B> {
    fn drop(&mut self) {
        if let Some(b) = self.block.take() {
            self.space.lock().alloc.free(b);
        }
    }
}
