//! An in-memory IOMMU: a [`DmaBackend`] that keeps a page table of [`DmaBuf`] handles and lets tests
//! act as the device ([`FakeIommu::dma_write`], [`FakeIommu::dma_read`]). It follows the type1v2 rules
//! the kernel enforces (no overlapping maps, unmaps must not split a mapping, IOVAs inside the valid
//! ranges, a mapping-count limit) and records every fault.
//!
//! It is the reference for implementing [`DmaBackend`] in a software IOMMU (see [`crate::backend`]).
//!
//! ```
//! use iommu_backend::{fake::FakeIommu, DmaDir, DmaSpace};
//! let iommu = FakeIommu::new();
//! let space = DmaSpace::new(&iommu, &[]).unwrap().with_dma_mask(28);
//! let buf = space.alloc(4096).unwrap();
//! let m = space.map(&buf, DmaDir::FromDevice).unwrap();
//! iommu.dma_write(m.iova(), b"hello").unwrap();          // the "device" writes
//! assert_eq!(buf.to_vec(0, 5).unwrap(), b"hello");
//! let iova = m.iova();
//! drop(m);
//! assert!(iommu.dma_write(iova, b"again").is_err());      // blocked once unmapped
//! assert_eq!(buf.to_vec(0, 5).unwrap(), b"hello");
//! ```

use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;

use rustix::io::Errno;

use crate::backend::DmaBackend;
use crate::error::{BackendError, Result};
use crate::info::{IommuInfo, IovaRange};
use crate::memory::{DmaBuf, HeapMemory};
use crate::types::{DmaDir, HugePages};

/// A blocked device access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The IOVA the device used.
    pub iova: u64,
    /// Whether it was a write (device → memory).
    pub write: bool,
    /// Why: `not mapped` or `not writable` / `not readable`.
    pub reason: &'static str,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DMA {} fault at IOVA {:#x}: {}", if self.write { "write" } else { "read" }, self.iova, self.reason)
    }
}

impl std::error::Error for Fault {}

#[derive(Debug)]
struct Entry {
    len: u64,
    mem: DmaBuf,
    offset: usize,
    dir: DmaDir,
}

#[derive(Debug, Default)]
struct State {
    table: BTreeMap<u64, Entry>,
    faults: Vec<Fault>,
    fail_next_map: Option<i32>,
    fail_next_unmap: Option<i32>,
    maps: u64,
    unmaps: u64,
}

/// The in-memory IOMMU. See the module documentation.
#[derive(Debug)]
pub struct FakeIommu {
    info: IommuInfo,
    state: Mutex<State>,
}

impl Default for FakeIommu {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeIommu {
    /// 4 KiB pages, the ranges an emulated VT-d reports (0..0xfedfffff, 0xfef00000..2^39-1) and 65535
    /// mappings.
    pub fn new() -> Self {
        Self::with_info(IommuInfo {
            page_sizes: 0x4020_1000,
            iova_ranges: vec![
                IovaRange { start: 0, end: 0xfedf_ffff },
                IovaRange { start: 0xfef0_0000, end: (1 << 39) - 1 },
            ],
            dma_avail: Some(65535),
        })
    }

    /// An IOMMU that reports `info`.
    pub fn with_info(info: IommuInfo) -> Self {
        Self { info, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next `map` fail with `errno`.
    pub fn fail_next_map(&self, errno: i32) {
        self.lock().fail_next_map = Some(errno);
    }

    /// Makes the next `unmap` fail with `errno`.
    pub fn fail_next_unmap(&self, errno: i32) {
        self.lock().fail_next_unmap = Some(errno);
    }

    /// Live mappings: `(iova, len)`.
    pub fn mappings(&self) -> Vec<(u64, u64)> {
        self.lock().table.iter().map(|(&i, e)| (i, e.len)).collect()
    }

    /// `(map calls, unmap calls)` that succeeded.
    pub fn calls(&self) -> (u64, u64) {
        let s = self.lock();
        (s.maps, s.unmaps)
    }

    /// Every fault so far.
    pub fn faults(&self) -> Vec<Fault> {
        self.lock().faults.clone()
    }

    /// Translates `iova`: the memory, the offset in it and the bytes left in that mapping.
    pub fn translate(&self, iova: u64) -> Option<(DmaBuf, usize, u64, DmaDir)> {
        let s = self.lock();
        let (&start, e) = s.table.range(..=iova).next_back()?;
        (iova - start < e.len)
            .then(|| (e.mem.clone(), e.offset + (iova - start) as usize, e.len - (iova - start), e.dir))
    }

    fn access(
        &self,
        iova: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(&DmaBuf, usize, usize, usize) -> Result<()>,
    ) -> Result<(), Fault> {
        // Check the whole range first: a blocked DMA touches nothing.
        let mut plan = Vec::new();
        let mut done = 0usize;
        while done < len {
            let at = iova + done as u64;
            let fault = |reason| Fault { iova: at, write, reason };
            let Some((mem, off, left, dir)) = self.translate(at) else {
                let e = fault("not mapped");
                self.lock().faults.push(e.clone());
                return Err(e);
            };
            if (write && !dir.device_writes()) || (!write && !dir.device_reads()) {
                let e = fault(if write { "not writable" } else { "not readable" });
                self.lock().faults.push(e.clone());
                return Err(e);
            }
            let n = (len - done).min(left as usize);
            plan.push((mem, off, done, n));
            done += n;
        }
        for (mem, off, from, n) in plan {
            f(&mem, off, from, n).map_err(|_| Fault { iova, write, reason: "bad memory access" })?;
        }
        Ok(())
    }

    /// The device writes `data` at `iova`. A fault (unmapped or read-only IOVA anywhere in the range) is
    /// recorded and nothing is written.
    pub fn dma_write(&self, iova: u64, data: &[u8]) -> Result<(), Fault> {
        self.access(iova, data.len(), true, |mem, off, from, n| mem.copy_in(off, &data[from..from + n]))
    }

    /// The device reads `out.len()` bytes at `iova`.
    pub fn dma_read(&self, iova: u64, out: &mut [u8]) -> Result<(), Fault> {
        let len = out.len();
        self.access(iova, len, false, |mem, off, from, n| mem.copy_out(off, &mut out[from..from + n]))
    }
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

const EINVAL: i32 = Errno::INVAL.raw_os_error();
const EEXIST: i32 = Errno::EXIST.raw_os_error();
const ENOSPC: i32 = Errno::NOSPC.raw_os_error();

impl DmaBackend for FakeIommu {
    fn iommu_info(&self) -> Result<IommuInfo> {
        let mut info = self.info.clone();
        if let Some(a) = info.dma_avail.as_mut() {
            *a = a.saturating_sub(self.lock().table.len() as u32);
        }
        Ok(info)
    }

    fn alloc(&self, len: usize, huge: HugePages) -> Result<DmaBuf> {
        Ok(DmaBuf::new(HeapMemory::new(len, self.info.min_page_size() as usize, huge)?))
    }

    fn map(&self, iova: u64, mem: &DmaBuf, offset: usize, len: usize, dir: DmaDir) -> Result<()> {
        let fail = |e| Err(BackendError::Map { iova, len: len as u64, source: errno(e) });
        let mut s = self.lock();
        if let Some(e) = s.fail_next_map.take() {
            return fail(e);
        }
        let page = self.info.min_page_size();
        let end = iova.checked_add(len as u64);
        if len == 0
            || !iova.is_multiple_of(page)
            || !(len as u64).is_multiple_of(page)
            || end.is_none()
            || offset + len > mem.len()
        {
            return fail(EINVAL);
        }
        let last = iova + len as u64 - 1;
        if !self.info.iova_ranges.is_empty() && !self.info.iova_ranges.iter().any(|r| r.start <= iova && last <= r.end)
        {
            return fail(EINVAL);
        }
        if s.table.range(..=last).next_back().is_some_and(|(&st, e)| st + e.len > iova) {
            return fail(EEXIST);
        }
        if self.info.dma_avail.is_some_and(|a| s.table.len() as u64 >= u64::from(a)) {
            return fail(ENOSPC);
        }
        s.table.insert(iova, Entry { len: len as u64, mem: mem.clone(), offset, dir });
        s.maps += 1;
        Ok(())
    }

    fn unmap(&self, iova: u64, len: u64) -> Result<()> {
        let fail = |e| Err(BackendError::Unmap { iova, len, source: errno(e) });
        let mut s = self.lock();
        if let Some(e) = s.fail_next_unmap.take() {
            return fail(e);
        }
        let Some(end) = iova.checked_add(len) else { return fail(EINVAL) };
        // type1v2: the range must not cut a mapping in two.
        if let Some((&st, e)) = s.table.range(..iova).next_back() {
            if st + e.len > iova {
                return fail(EINVAL);
            }
        }
        let inside: Vec<u64> = s.table.range(iova..end).map(|(&k, _)| k).collect();
        if let Some(&k) = inside.last() {
            if k + s.table[&k].len > end {
                return fail(EINVAL);
            }
        }
        for k in inside {
            s.table.remove(&k);
        }
        s.unmaps += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::{DmaSpace, MapOptions};

    fn space(iommu: &FakeIommu) -> DmaSpace<&FakeIommu> {
        DmaSpace::new(iommu, &[IovaRange { start: 0xfee0_0000, end: 0xfeef_ffff }]).unwrap()
    }

    #[test]
    fn a_mapping_is_visible_to_the_device_until_it_is_dropped() {
        let iommu = FakeIommu::new();
        let space = space(&iommu).with_dma_mask(28);
        let buf = space.alloc(8192).unwrap();
        let m = space.map(&buf, DmaDir::Bidirectional).unwrap();
        assert!(m.iova() >= 4096 && m.range().end < 1 << 28);
        iommu.dma_write(m.iova() + 4000, &[7u8; 200]).unwrap();
        assert_eq!(buf.to_vec(4000, 200).unwrap(), vec![7u8; 200]);
        let iova = m.iova();
        drop(m);
        assert!(iommu.mappings().is_empty());
        assert_eq!(iommu.dma_write(iova, &[1]).unwrap_err().reason, "not mapped");
        assert_eq!(buf.read_u8(0).unwrap(), 0);
        assert_eq!(space.stats().mappings, 0);
        assert_eq!(space.stats().iova_in_use, 0);
    }

    #[test]
    fn a_dma_to_a_reserved_iova_faults_and_touches_nothing() {
        let iommu = FakeIommu::new();
        let space = space(&iommu);
        let buf = space.alloc(4096).unwrap();
        buf.fill(0, 4096, 0x5a).unwrap();
        let _m = space.map(&buf, DmaDir::Bidirectional).unwrap();
        let hole = space.reserve(4096).unwrap();
        let f = iommu.dma_write(hole.iova(), &[0; 64]).unwrap_err();
        assert_eq!(f, Fault { iova: hole.iova(), write: true, reason: "not mapped" });
        assert_eq!(buf.to_vec(0, 4096).unwrap(), vec![0x5a; 4096]);
        assert_eq!(iommu.faults().len(), 1);
    }

    #[test]
    fn direction_is_enforced() {
        let iommu = FakeIommu::new();
        let space = space(&iommu);
        let buf = space.alloc(4096).unwrap();
        let m = space.map(&buf, DmaDir::ToDevice).unwrap();
        assert_eq!(iommu.dma_write(m.iova(), &[1]).unwrap_err().reason, "not writable");
        let mut out = [9u8; 4];
        iommu.dma_read(m.iova(), &mut out).unwrap();
        assert_eq!(out, [0; 4]);
    }

    #[test]
    fn two_scattered_pages_are_one_contiguous_8k_range_for_the_device() {
        let iommu = FakeIommu::new();
        let space = space(&iommu).with_dma_mask(28);
        let a = space.alloc(4096).unwrap();
        let _gap = space.alloc(4096).unwrap();
        let b = space.alloc(4096).unwrap();
        a.fill(0, 4096, b'A').unwrap();
        b.fill(0, 4096, b'B').unwrap();
        let sg = space.map_sg(&[&a, &b], DmaDir::Bidirectional).unwrap();
        assert_eq!(sg.len(), 8192);
        assert_eq!(sg.pieces()[1].start, sg.iova() + 4096);
        let mut across = vec![0u8; 2048];
        iommu.dma_read(sg.iova() + 3072, &mut across).unwrap();
        assert_eq!(&across[..1024], &[b'A'; 1024][..]);
        assert_eq!(&across[1024..], &[b'B'; 1024][..]);
        iommu.dma_write(sg.iova() + 4090, b"0123456789ab").unwrap();
        assert_eq!(a.to_vec(4090, 6).unwrap(), b"012345");
        assert_eq!(b.to_vec(0, 6).unwrap(), b"6789ab");
        assert_eq!(space.stats().mappings, 2);
        sg.unmap().unwrap();
        assert!(iommu.mappings().is_empty());
        assert_eq!(iommu.calls(), (2, 1), "one unmap call for the whole range");
    }

    #[test]
    fn a_failed_map_returns_the_iova_and_the_slot() {
        let iommu = FakeIommu::new();
        let space = space(&iommu);
        let buf = space.alloc(4096).unwrap();
        iommu.fail_next_map(libc::EFAULT);
        let e = space.map(&buf, DmaDir::Bidirectional).unwrap_err();
        assert!(matches!(&e, BackendError::Map { source, .. } if source.raw_os_error() == Some(libc::EFAULT)), "{e:?}");
        assert_eq!(space.stats(), Default::default());
        let m = space.map(&buf, DmaDir::Bidirectional).unwrap();
        assert_eq!(m.iova(), 4096, "the failed attempt's IOVA was reused");
    }

    #[test]
    fn a_failed_sg_piece_unmaps_the_pieces_already_mapped() {
        let iommu = FakeIommu::new();
        let space = space(&iommu);
        let bufs: Vec<DmaBuf> = (0..3).map(|_| space.alloc(4096).unwrap()).collect();
        let refs: Vec<&DmaBuf> = bufs.iter().collect();
        // Occupy the IOVA the third piece would take, behind the space's back.
        iommu.map(3 * 4096, &bufs[0], 0, 4096, DmaDir::Bidirectional).unwrap();
        let e = space.map_sg(&refs, DmaDir::Bidirectional).unwrap_err();
        assert!(matches!(&e, BackendError::Map { source, .. } if source.raw_os_error() == Some(libc::EEXIST)), "{e}");
        assert_eq!(iommu.mappings(), vec![(3 * 4096, 4096)]);
        assert_eq!(space.stats().mappings, 0);
    }

    #[test]
    fn the_kernel_mapping_limit_gives_a_clear_error_before_the_kernel_does() {
        let iommu = FakeIommu::with_info(IommuInfo { dma_avail: Some(2), ..FakeIommu::new().info });
        let space = space(&iommu);
        let bufs: Vec<DmaBuf> = (0..3).map(|_| space.alloc(4096).unwrap()).collect();
        let _a = space.map(&bufs[0], DmaDir::Bidirectional).unwrap();
        let _b = space.map(&bufs[1], DmaDir::Bidirectional).unwrap();
        let e = space.map(&bufs[2], DmaDir::Bidirectional).unwrap_err();
        assert!(matches!(e, BackendError::DmaLimit { limit: 2, in_use: 2 }), "{e:?}");
        assert!(e.to_string().contains("dma_entry_limit"));
        drop(_b);
        let _c = space.map(&bufs[2], DmaDir::Bidirectional).unwrap();
    }

    #[test]
    fn enospc_from_the_kernel_becomes_the_mapping_limit_error() {
        let iommu = FakeIommu::new();
        let space = space(&iommu);
        let buf = space.alloc(4096).unwrap();
        iommu.fail_next_map(libc::ENOSPC);
        assert!(matches!(space.map(&buf, DmaDir::Bidirectional).unwrap_err(), BackendError::DmaLimit { .. }));
    }

    #[test]
    fn an_unmap_that_fails_on_drop_is_recorded_and_its_iovas_never_reused() {
        let iommu = FakeIommu::new();
        let space = space(&iommu);
        let buf = space.alloc(4096).unwrap();
        let m = space.map(&buf, DmaDir::Bidirectional).unwrap();
        let iova = m.iova();
        iommu.fail_next_unmap(libc::EBUSY);
        drop(m);
        assert_eq!(space.stats().failed_unmaps, 1);
        assert!(space.last_unmap_error().unwrap().contains(&format!("{iova:#x}")));
        let again = space.map(&buf, DmaDir::Bidirectional);
        assert_ne!(again.unwrap().iova(), iova);
    }

    #[test]
    fn explicit_unmap_reports_the_error() {
        let iommu = FakeIommu::new();
        let space = space(&iommu);
        let buf = space.alloc(4096).unwrap();
        let m = space.map(&buf, DmaDir::Bidirectional).unwrap();
        iommu.fail_next_unmap(libc::EINVAL);
        assert!(matches!(m.unmap().unwrap_err(), BackendError::Unmap { .. }));
    }

    #[test]
    fn partial_and_fixed_mappings_are_checked() {
        let iommu = FakeIommu::new();
        let space = space(&iommu);
        let buf = space.alloc(3 * 4096).unwrap();
        let m = space
            .map_with(&buf, MapOptions { offset: 4096, len: Some(100), at: Some(0x90_0000), ..Default::default() })
            .unwrap();
        assert_eq!((m.iova(), m.len()), (0x90_0000, 4096));
        iommu.dma_write(0x90_0000, b"x").unwrap();
        assert_eq!(buf.read_u8(4096).unwrap(), b'x');
        assert!(space.map_with(&buf, MapOptions { offset: 100, ..Default::default() }).is_err());
        assert!(space.map_with(&buf, MapOptions { offset: 8192, len: Some(8192), ..Default::default() }).is_err());
        assert!(
            space.map_with(&buf, MapOptions { at: Some(0xfee0_0000), ..Default::default() }).is_err(),
            "MSI window"
        );
    }
}
