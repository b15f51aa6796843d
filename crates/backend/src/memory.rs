//! DMA memory: what a device reaches through the IOMMU, shared between the driver and the backend.
//!
//! Memory a device can reach is memory that may change under the program at any time (the device writes
//! it while the CPU reads), so it is never handed out as `&[u8]` or `&mut [u8]`: every access copies in
//! or out through the [`DmaMemory`] methods, which a VFIO backend implements with volatile accesses to
//! its mmapped buffers and a software backend with plain copies under a lock.
//!
//! Memory is allocated by the backend ([`crate::DmaBackend::alloc`]), because only the backend knows what
//! it can map: VFIO pins process memory it mmapped itself, a simulator plugs memory it owns into its
//! model. Drivers hold a [`DmaBuf`], a shared handle to `dyn DmaMemory`, and never name a concrete type.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{BackendError, Result};
use crate::types::{HugePages, HUGEPAGE_2M};

/// Memory a device may reach by DMA. See the module documentation.
///
/// Implementors provide [`DmaMemory::len`], [`DmaMemory::host_addr`], [`DmaMemory::read`] and
/// [`DmaMemory::write`]; the typed accessors are provided on top of them and may be overridden (VFIO
/// does, with single volatile loads and stores, so a 32-bit field the device writes is never torn).
/// Accesses outside the memory fail with [`BackendError::OutOfBounds`]; typed accesses that are not
/// naturally aligned fail with [`BackendError::Misaligned`].
pub trait DmaMemory: Any + Send + Sync + fmt::Debug {
    /// Length in bytes (a multiple of the backend's page size).
    fn len(&self) -> usize;
    /// The address the backend maps: for VFIO the process virtual address it pins (not dereferenceable
    /// by safe code); for a software backend an identifier in the shape of an address, unique while the
    /// memory lives.
    fn host_addr(&self) -> u64;
    /// Copies `out.len()` bytes out from `offset`.
    fn read(&self, offset: usize, out: &mut [u8]) -> Result<()>;
    /// Copies `data` in at `offset`.
    fn write(&self, offset: usize, data: &[u8]) -> Result<()>;

    /// Never empty (memory is at least one page).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether the memory is backed by 2 MiB hugepages.
    fn is_huge(&self) -> bool {
        false
    }
    /// Copies `data` in at `offset` (the same as [`DmaMemory::write`]).
    fn copy_in(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.write(offset, data)
    }
    /// Copies `out.len()` bytes out from `offset` (the same as [`DmaMemory::read`]).
    fn copy_out(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.read(offset, out)
    }
    /// `len` bytes from `offset` as a new vector.
    fn to_vec(&self, offset: usize, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0; len];
        self.read(offset, &mut v)?;
        Ok(v)
    }
    /// Sets `len` bytes at `offset` to `byte`.
    fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<()> {
        check(self.len(), offset, len, 1)?;
        let chunk = [byte; 4096];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len());
            self.write(offset + done, &chunk[..n])?;
            done += n;
        }
        Ok(())
    }
    /// 8-bit read.
    fn read_u8(&self, offset: usize) -> Result<u8> {
        Ok(u8::from_ne_bytes(read_array(self, offset)?))
    }
    /// 16-bit read (aligned, native byte order).
    fn read_u16(&self, offset: usize) -> Result<u16> {
        Ok(u16::from_ne_bytes(read_array(self, offset)?))
    }
    /// 32-bit read (aligned, native byte order).
    fn read_u32(&self, offset: usize) -> Result<u32> {
        Ok(u32::from_ne_bytes(read_array(self, offset)?))
    }
    /// 64-bit read (aligned, native byte order).
    fn read_u64(&self, offset: usize) -> Result<u64> {
        Ok(u64::from_ne_bytes(read_array(self, offset)?))
    }
    /// 8-bit write.
    fn write_u8(&self, offset: usize, v: u8) -> Result<()> {
        write_array(self, offset, v.to_ne_bytes())
    }
    /// 16-bit write (aligned, native byte order).
    fn write_u16(&self, offset: usize, v: u16) -> Result<()> {
        write_array(self, offset, v.to_ne_bytes())
    }
    /// 32-bit write (aligned, native byte order).
    fn write_u32(&self, offset: usize, v: u32) -> Result<()> {
        write_array(self, offset, v.to_ne_bytes())
    }
    /// 64-bit write (aligned, native byte order).
    fn write_u64(&self, offset: usize, v: u64) -> Result<()> {
        write_array(self, offset, v.to_ne_bytes())
    }
}

/// `N` bytes at `offset`, which must be a multiple of `N` (the provided typed reads).
fn read_array<const N: usize, M: DmaMemory + ?Sized>(m: &M, offset: usize) -> Result<[u8; N]> {
    check(m.len(), offset, N, N)?;
    let mut b = [0u8; N];
    m.read(offset, &mut b)?;
    Ok(b)
}

/// Writes `N` bytes at `offset`, which must be a multiple of `N` (the provided typed writes).
fn write_array<const N: usize, M: DmaMemory + ?Sized>(m: &M, offset: usize, b: [u8; N]) -> Result<()> {
    check(m.len(), offset, N, N)?;
    m.write(offset, &b)
}

/// Checks an access of `width` bytes at `offset` of `len`-byte DMA memory: inside it, and a multiple of
/// `align`. What [`DmaMemory`] implementations and its provided methods report.
pub fn check(len: usize, offset: usize, width: usize, align: usize) -> Result<()> {
    if offset.checked_add(width).is_none_or(|end| end > len) {
        return Err(BackendError::OutOfBounds {
            what: "DMA buffer".into(),
            offset: offset as u64,
            width: width as u64,
            size: len as u64,
        });
    }
    if align > 1 && !offset.is_multiple_of(align) {
        return Err(BackendError::Misaligned { what: "DMA buffer".into(), offset: offset as u64, width: width as u64 });
    }
    Ok(())
}

/// A shared handle to DMA memory allocated by a backend. Cloning shares the memory, which stays
/// allocated while any handle lives (a software IOMMU keeps one per mapping). Derefs to
/// [`DmaMemory`] for access.
#[derive(Clone)]
pub struct DmaBuf(Arc<dyn DmaMemory>);

impl DmaBuf {
    /// Shares `mem` (what a backend's [`crate::DmaBackend::alloc`] returns).
    pub fn new(mem: impl DmaMemory) -> Self {
        Self(Arc::new(mem))
    }

    /// Whether two handles share the same memory.
    pub fn same_memory(&self, other: &DmaBuf) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The memory as its concrete type, if it is a `T` (how a backend recognises memory it allocated).
    pub fn downcast_ref<T: DmaMemory>(&self) -> Option<&T> {
        let any: &dyn Any = &*self.0;
        any.downcast_ref::<T>()
    }
}

impl std::ops::Deref for DmaBuf {
    type Target = dyn DmaMemory;
    fn deref(&self) -> &dyn DmaMemory {
        &*self.0
    }
}

impl fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where [`HeapMemory`] identifiers start: an address in the shape of user-space memory.
const HEAP_ADDR_BASE: u64 = 0x7e00_0000_0000;
static NEXT_HEAP_ADDR: AtomicU64 = AtomicU64::new(HEAP_ADDR_BASE);

/// Zero-filled memory on the heap, behind a lock: what software backends (a simulator, the
/// [`crate::fake`] IOMMU) allocate. Safe: the device model reaches it through the same copying methods
/// as the driver.
#[derive(Debug)]
pub struct HeapMemory {
    bytes: Mutex<Vec<u8>>,
    addr: u64,
    huge: bool,
}

impl HeapMemory {
    /// `len` bytes rounded up to `page` (a power of two): ordinary memory, or with
    /// [`HugePages::Require`] rounded up to 2 MiB and reported as hugepage memory (heap memory has no
    /// page size of its own; it is sized and aligned in [`DmaMemory::host_addr`] as hugepages would
    /// be). [`HugePages::Prefer`] gives ordinary memory, as on a host with no hugepages free.
    pub fn new(len: usize, page: usize, huge: HugePages) -> Result<Self> {
        let huge = huge == HugePages::Require;
        let unit = if huge { HUGEPAGE_2M } else { page.max(1) };
        let overflow = || BackendError::Alloc { len, source: std::io::Error::other("the length overflows") };
        if !unit.is_power_of_two() {
            return Err(BackendError::Invalid(format!("page size {unit:#x} is not a power of two")));
        }
        let rounded = len.max(1).checked_add(unit - 1).map(|l| l & !(unit - 1)).ok_or_else(overflow)?;
        let step = (rounded as u64).checked_add(unit as u64).ok_or_else(overflow)?;
        let addr = NEXT_HEAP_ADDR
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                let aligned = a.checked_add(unit as u64 - 1)? & !(unit as u64 - 1);
                aligned.checked_add(step)
            })
            .map_err(|_| overflow())?;
        let addr = (addr + unit as u64 - 1) & !(unit as u64 - 1);
        Ok(Self { bytes: Mutex::new(vec![0; rounded]), addr, huge })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl DmaMemory for HeapMemory {
    fn len(&self) -> usize {
        self.lock().len()
    }
    fn host_addr(&self) -> u64 {
        self.addr
    }
    fn is_huge(&self) -> bool {
        self.huge
    }
    fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        let b = self.lock();
        check(b.len(), offset, out.len(), 1)?;
        out.copy_from_slice(&b[offset..offset + out.len()]);
        Ok(())
    }
    fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        let mut b = self.lock();
        check(b.len(), offset, data.len(), 1)?;
        b[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<()> {
        let mut b = self.lock();
        check(b.len(), offset, len, 1)?;
        b[offset..offset + len].fill(byte);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_memory_is_page_rounded_zeroed_and_checked() {
        let m = DmaBuf::new(HeapMemory::new(100, 4096, HugePages::No).unwrap());
        assert_eq!(m.len(), 4096);
        assert!(!m.is_huge());
        assert_eq!(m.to_vec(0, m.len()).unwrap(), vec![0; 4096]);
        m.write_u32(8, 0xdead_beef).unwrap();
        assert_eq!(m.read_u32(8).unwrap(), 0xdead_beef);
        assert_eq!(m.read_u8(8).unwrap(), 0xef);
        assert!(matches!(m.read_u32(m.len() - 2), Err(BackendError::OutOfBounds { .. })));
        assert!(matches!(m.read_u32(2), Err(BackendError::Misaligned { offset: 2, width: 4, .. })));
        m.fill(4000, 96, 7).unwrap();
        assert_eq!(m.to_vec(4000, 96).unwrap(), vec![7; 96]);
        assert!(m.fill(4000, 97, 7).is_err());
        assert!(m.downcast_ref::<HeapMemory>().is_some());
        assert!(m.same_memory(&m.clone()));
    }

    #[test]
    fn heap_memory_addresses_are_distinct_and_hugepage_memory_is_2m() {
        let a = HeapMemory::new(4096, 4096, HugePages::No).unwrap();
        let b = HeapMemory::new(4096, 4096, HugePages::Prefer).unwrap();
        let h = HeapMemory::new(4096, 4096, HugePages::Require).unwrap();
        assert!(a.host_addr() + 4096 <= b.host_addr() || b.host_addr() + 4096 <= a.host_addr());
        assert!(!b.is_huge());
        assert!(h.is_huge() && h.len() == HUGEPAGE_2M && h.host_addr().is_multiple_of(HUGEPAGE_2M as u64));
        assert!(HeapMemory::new(usize::MAX, 4096, HugePages::No).is_err());
    }
}
