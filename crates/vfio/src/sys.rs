//! Every raw system call the crate makes: the VFIO ioctls, `mmap`/`munmap`, `sysconf`, and the
//! volatile accesses to mapped memory (eventfds are `iommu-backend`'s, safe through rustix). One
//! `unsafe` block per call, each with its safety argument. Everything exported from here is a safe
//! function or a type with a safe interface.
//!
//! The ioctls are issued through `libc::ioctl` rather than rustix's typed patterns because several VFIO
//! ioctls return a value (a version, a file descriptor, a byte count) that those patterns discard.
//!
//! Memory shared with a device ([`MappedArea`]) is never turned into a Rust reference: every access
//! is a bounds- and alignment-checked volatile read or write of a primitive through a raw pointer.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use vfio_bindings::bindings::vfio as b;

pub mod iommufd;

/// `_IO(VFIO_TYPE, VFIO_BASE + n)`: VFIO ioctls carry no size or direction bits.
const fn vfio_io(n: u32) -> libc::c_ulong {
    ((b::VFIO_TYPE as u32) << 8 | (b::VFIO_BASE + n)) as libc::c_ulong
}

/// `VFIO_GET_API_VERSION`.
pub const GET_API_VERSION: libc::c_ulong = vfio_io(0);
/// `VFIO_CHECK_EXTENSION`.
pub const CHECK_EXTENSION: libc::c_ulong = vfio_io(1);
/// `VFIO_SET_IOMMU`.
pub const SET_IOMMU: libc::c_ulong = vfio_io(2);
/// `VFIO_GROUP_GET_STATUS`.
pub const GROUP_GET_STATUS: libc::c_ulong = vfio_io(3);
/// `VFIO_GROUP_SET_CONTAINER`.
pub const GROUP_SET_CONTAINER: libc::c_ulong = vfio_io(4);
/// `VFIO_GROUP_GET_DEVICE_FD`.
pub const GROUP_GET_DEVICE_FD: libc::c_ulong = vfio_io(6);
/// `VFIO_DEVICE_GET_INFO`.
pub const DEVICE_GET_INFO: libc::c_ulong = vfio_io(7);
/// `VFIO_DEVICE_GET_REGION_INFO`.
pub const DEVICE_GET_REGION_INFO: libc::c_ulong = vfio_io(8);
/// `VFIO_DEVICE_GET_IRQ_INFO`.
pub const DEVICE_GET_IRQ_INFO: libc::c_ulong = vfio_io(9);
/// `VFIO_DEVICE_SET_IRQS`.
pub const DEVICE_SET_IRQS: libc::c_ulong = vfio_io(10);
/// `VFIO_DEVICE_RESET`.
pub const DEVICE_RESET: libc::c_ulong = vfio_io(11);
/// `VFIO_IOMMU_GET_INFO`.
pub const IOMMU_GET_INFO: libc::c_ulong = vfio_io(12);
/// `VFIO_IOMMU_MAP_DMA`.
pub const IOMMU_MAP_DMA: libc::c_ulong = vfio_io(13);
/// `VFIO_IOMMU_UNMAP_DMA`.
pub const IOMMU_UNMAP_DMA: libc::c_ulong = vfio_io(14);

/// Size of the fixed part of `struct vfio_irq_set` (argsz, flags, index, start, count).
pub const IRQ_SET_HEADER: usize = 20;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn size_u32<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// `VFIO_GET_API_VERSION` on a container.
pub fn get_api_version(container: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: the ioctl takes no argument and only returns an integer; the fd is valid for the call.
    check(unsafe { libc::ioctl(container.as_raw_fd(), GET_API_VERSION) })
}

/// `VFIO_CHECK_EXTENSION`: whether the container supports `extension` (e.g. `VFIO_TYPE1v2_IOMMU`).
pub fn check_extension(container: BorrowedFd<'_>, extension: u32) -> io::Result<bool> {
    // SAFETY: the argument is passed by value (an integer); the ioctl only returns an integer.
    let ret = check(unsafe { libc::ioctl(container.as_raw_fd(), CHECK_EXTENSION, extension as libc::c_ulong) })?;
    Ok(ret > 0)
}

/// `VFIO_SET_IOMMU`: selects the IOMMU model (once, after the first group joined the container).
pub fn set_iommu(container: BorrowedFd<'_>, model: u32) -> io::Result<()> {
    // SAFETY: the argument is passed by value (an integer); no memory is shared with the kernel.
    check(unsafe { libc::ioctl(container.as_raw_fd(), SET_IOMMU, model as libc::c_ulong) })?;
    Ok(())
}

/// `VFIO_GROUP_GET_STATUS`: the group's flags (`VFIO_GROUP_FLAGS_VIABLE`, `..._CONTAINER_SET`).
pub fn group_get_status(group: BorrowedFd<'_>) -> io::Result<u32> {
    let mut st = b::vfio_group_status { argsz: size_u32::<b::vfio_group_status>(), flags: 0 };
    // SAFETY: `st` is a live, correctly sized vfio_group_status whose argsz says so; the kernel writes
    // at most argsz bytes into it.
    check(unsafe { libc::ioctl(group.as_raw_fd(), GROUP_GET_STATUS, &mut st as *mut b::vfio_group_status) })?;
    Ok(st.flags)
}

/// `VFIO_GROUP_SET_CONTAINER`: attaches the group to the container.
pub fn group_set_container(group: BorrowedFd<'_>, container: BorrowedFd<'_>) -> io::Result<()> {
    let fd: libc::c_int = container.as_raw_fd();
    // SAFETY: the kernel reads one c_int (the container fd) from the pointer, which is live for the call.
    check(unsafe { libc::ioctl(group.as_raw_fd(), GROUP_SET_CONTAINER, &fd as *const libc::c_int) })?;
    Ok(())
}

/// `VFIO_GROUP_GET_DEVICE_FD`: opens the device called `name` (a PCI address such as `0000:01:00.0`).
pub fn group_get_device_fd(group: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: the kernel reads a NUL-terminated string from the pointer, which `CStr` guarantees and
    // which lives for the call.
    let fd = check(unsafe { libc::ioctl(group.as_raw_fd(), GROUP_GET_DEVICE_FD, name.as_ptr()) })?;
    // SAFETY: on success the ioctl returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `VFIO_DEVICE_GET_INFO` (fixed part only).
pub fn device_get_info(device: BorrowedFd<'_>) -> io::Result<b::vfio_device_info> {
    let mut info = b::vfio_device_info { argsz: size_u32::<b::vfio_device_info>(), ..Default::default() };
    // SAFETY: `info` is a live, correctly sized vfio_device_info whose argsz says so; the kernel writes at
    // most argsz bytes.
    check(unsafe { libc::ioctl(device.as_raw_fd(), DEVICE_GET_INFO, &mut info as *mut b::vfio_device_info) })?;
    Ok(info)
}

/// An ioctl whose argument starts with `argsz` and may grow by capability chains: called with a
/// buffer of the fixed size, then again with the size the kernel asked for. Returns the whole buffer.
fn get_info_with_caps(fd: BorrowedFd<'_>, request: libc::c_ulong, fixed: usize, init: &[u8]) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; fixed];
    buf[..init.len()].copy_from_slice(init);
    for _ in 0..4 {
        let argsz = buf.len() as u32;
        buf[0..4].copy_from_slice(&argsz.to_ne_bytes());
        // SAFETY: `buf` is a live, writable buffer of `argsz` bytes starting with the argsz field and
        // the request's fixed fields; the kernel writes at most argsz bytes into it.
        check(unsafe { libc::ioctl(fd.as_raw_fd(), request, buf.as_mut_ptr()) })?;
        let wanted = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if wanted <= buf.len() {
            return Ok(buf);
        }
        let mut bigger = vec![0u8; wanted];
        bigger[..init.len()].copy_from_slice(init);
        buf = bigger;
    }
    Err(io::Error::other("the kernel kept asking for a larger info buffer"))
}

/// `VFIO_DEVICE_GET_REGION_INFO` for `index`: the `vfio_region_info` bytes followed by its capability
/// chain (offsets in the chain are relative to the start of the returned buffer).
pub fn device_get_region_info(device: BorrowedFd<'_>, index: u32) -> io::Result<Vec<u8>> {
    let mut init = [0u8; 12];
    init[8..12].copy_from_slice(&index.to_ne_bytes());
    get_info_with_caps(device, DEVICE_GET_REGION_INFO, std::mem::size_of::<b::vfio_region_info>(), &init)
}

/// `VFIO_DEVICE_GET_IRQ_INFO` for `index`.
pub fn device_get_irq_info(device: BorrowedFd<'_>, index: u32) -> io::Result<b::vfio_irq_info> {
    let mut info = b::vfio_irq_info { argsz: size_u32::<b::vfio_irq_info>(), index, ..Default::default() };
    // SAFETY: `info` is a live, correctly sized vfio_irq_info whose argsz says so; the kernel writes at
    // most argsz bytes.
    check(unsafe { libc::ioctl(device.as_raw_fd(), DEVICE_GET_IRQ_INFO, &mut info as *mut b::vfio_irq_info) })?;
    Ok(info)
}

/// `VFIO_DEVICE_SET_IRQS` with `flags` for interrupts `start..start+count` of `index`; `data` is the
/// payload the flags call for (nothing, one bool byte per interrupt, or one `i32` fd per interrupt).
pub fn device_set_irqs(
    device: BorrowedFd<'_>,
    flags: u32,
    index: u32,
    start: u32,
    count: u32,
    data: &[u8],
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(IRQ_SET_HEADER + data.len());
    let argsz = (IRQ_SET_HEADER + data.len()) as u32;
    for v in [argsz, flags, index, start, count] {
        buf.extend_from_slice(&v.to_ne_bytes());
    }
    buf.extend_from_slice(data);
    // SAFETY: `buf` is a live vfio_irq_set of `argsz` bytes (header plus payload); the kernel only reads
    // it. File descriptors in the payload are borrowed for the call; the kernel takes its own references.
    check(unsafe { libc::ioctl(device.as_raw_fd(), DEVICE_SET_IRQS, buf.as_ptr()) })?;
    Ok(())
}

/// `VFIO_DEVICE_RESET`.
pub fn device_reset(device: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: the ioctl takes no argument.
    check(unsafe { libc::ioctl(device.as_raw_fd(), DEVICE_RESET) })?;
    Ok(())
}

/// `VFIO_IOMMU_GET_INFO`: the `vfio_iommu_type1_info` bytes followed by its capability chain.
pub fn iommu_get_info(container: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    get_info_with_caps(container, IOMMU_GET_INFO, std::mem::size_of::<b::vfio_iommu_type1_info>(), &[])
}

/// `VFIO_IOMMU_MAP_DMA`: maps `size` bytes of `area` starting at `offset` at `iova`, with `flags`
/// (`VFIO_DMA_MAP_FLAG_READ` / `_WRITE`).
///
/// This is safe because the device can only reach the pages of `area`, which Rust never references
/// (every access is volatile), and because type1 pins the pages: if `area` is unmapped from the
/// process while the IOMMU mapping lives, the device writes to pinned pages the process no longer
/// uses, never to memory Rust has handed out again.
pub fn iommu_map_dma(
    container: BorrowedFd<'_>,
    area: &MappedArea,
    offset: usize,
    size: usize,
    iova: u64,
    flags: u32,
) -> io::Result<()> {
    if offset.checked_add(size).is_none_or(|end| end > area.len) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let map = b::vfio_iommu_type1_dma_map {
        argsz: size_u32::<b::vfio_iommu_type1_dma_map>(),
        flags,
        vaddr: area.addr() as u64 + offset as u64,
        iova,
        size: size as u64,
    };
    // SAFETY: `map` is a live vfio_iommu_type1_dma_map the kernel only reads; the virtual range it names
    // lies inside `area` (checked above), memory this process owns and accesses only volatilely.
    check(unsafe { libc::ioctl(container.as_raw_fd(), IOMMU_MAP_DMA, &map as *const b::vfio_iommu_type1_dma_map) })?;
    Ok(())
}

/// `VFIO_IOMMU_UNMAP_DMA` of `size` bytes at `iova`; returns how many bytes the kernel unmapped.
pub fn iommu_unmap_dma(container: BorrowedFd<'_>, iova: u64, size: u64) -> io::Result<u64> {
    let mut unmap = b::vfio_iommu_type1_dma_unmap {
        argsz: size_u32::<b::vfio_iommu_type1_dma_unmap>(),
        flags: 0,
        iova,
        size,
        data: Default::default(),
    };
    // SAFETY: `unmap` is a live, correctly sized vfio_iommu_type1_dma_unmap whose argsz says so; the
    // kernel writes back only its size field.
    check(unsafe {
        libc::ioctl(container.as_raw_fd(), IOMMU_UNMAP_DMA, &mut unmap as *mut b::vfio_iommu_type1_dma_unmap)
    })?;
    Ok(unmap.size)
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf takes an integer and returns an integer.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// A bad access to a [`MappedArea`]: out of bounds or misaligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadAccess {
    /// Offset of the access.
    pub offset: usize,
    /// Bytes accessed.
    pub width: usize,
    /// Size of the area.
    pub len: usize,
    /// Whether the access was in bounds but misaligned for its width.
    pub misaligned: bool,
}

/// An `mmap`ed area (anonymous memory for DMA, or a device region), unmapped on drop.
///
/// The area is never exposed as a Rust reference. All access goes through the checked volatile
/// methods, so memory a device writes concurrently is never observed through `&`/`&mut`.
#[derive(Debug)]
pub struct MappedArea {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the area is a plain memory mapping owned by this value; all access is volatile through a raw
// pointer (as with device memory, concurrent accesses may observe torn values but never create
// references), and munmap happens once, in Drop.
unsafe impl Send for MappedArea {}
// SAFETY: as for Send: `&MappedArea` only allows volatile primitive accesses through the raw pointer.
unsafe impl Sync for MappedArea {}

impl MappedArea {
    /// Private anonymous read-write memory of `len` bytes (zero-filled, page-aligned), populated with
    /// private pages (`MAP_POPULATE`, then every page written once). With `huge`, backed by 2 MiB hugepages
    /// (`MAP_HUGETLB | MAP_HUGE_2MB`); `len` must then be a multiple of 2 MiB.
    ///
    /// The write matters for DMA: an untouched private page is the kernel's shared zero page, and a
    /// read-only (device-reads) VFIO mapping pins it without breaking copy-on-write, so the process's later
    /// writes would land in a fresh copy the device never sees (it would read zeros).
    pub fn anonymous(len: usize, huge: bool) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        if huge {
            flags |= libc::MAP_HUGETLB | libc::MAP_HUGE_2MB;
        }
        // SAFETY: a new anonymous mapping at an address the kernel chooses; no existing memory is affected.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
        let area = Self::from_mmap(p, len)?;
        let step = if huge { 2 << 20 } else { page_size() };
        for off in (0..len).step_by(step) {
            area.write_u8(off, 0).map_err(|_| io::Error::from_raw_os_error(libc::EFAULT))?;
        }
        Ok(area)
    }

    /// A shared mapping of `len` bytes of `fd` at file offset `offset` (a VFIO device region).
    pub fn device(fd: BorrowedFd<'_>, offset: u64, len: usize, writable: bool) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        let off = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a new shared mapping of the device fd at an address the kernel chooses; no existing
        // memory is affected.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd.as_raw_fd(), off) };
        Self::from_mmap(p, len)
    }

    fn from_mmap(p: *mut libc::c_void, len: usize) -> io::Result<Self> {
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Self { ptr, len })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the area is empty (never: mappings have at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The process virtual address of the first byte (for the kernel's DMA map call; not dereferenceable
    /// by safe code).
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    fn check(&self, offset: usize, width: usize, align: usize) -> Result<*mut u8, BadAccess> {
        let bad = |misaligned| BadAccess { offset, width, len: self.len, misaligned };
        if offset.checked_add(width).is_none_or(|end| end > self.len) {
            return Err(bad(false));
        }
        if !(self.addr() + offset).is_multiple_of(align) {
            return Err(bad(true));
        }
        Ok(self.ptr.as_ptr().wrapping_add(offset))
    }

    fn read<T: Copy>(&self, offset: usize) -> Result<T, BadAccess> {
        let size = std::mem::size_of::<T>();
        let p = self.check(offset, size, size)?;
        // SAFETY: `p` lies inside the mapping with `size` bytes to spare and is aligned for T (checked);
        // T is a primitive integer, valid for any bit pattern.
        Ok(unsafe { std::ptr::read_volatile(p.cast::<T>()) })
    }

    fn write<T: Copy>(&self, offset: usize, value: T) -> Result<(), BadAccess> {
        let size = std::mem::size_of::<T>();
        let p = self.check(offset, size, size)?;
        // SAFETY: `p` lies inside the writable mapping with `size` bytes to spare and is aligned for T
        // (checked); no Rust reference to this memory exists.
        unsafe { std::ptr::write_volatile(p.cast::<T>(), value) };
        Ok(())
    }

    /// Volatile 8-bit read.
    pub fn read_u8(&self, offset: usize) -> Result<u8, BadAccess> {
        self.read(offset)
    }
    /// Volatile 16-bit read (2-byte aligned).
    pub fn read_u16(&self, offset: usize) -> Result<u16, BadAccess> {
        self.read(offset)
    }
    /// Volatile 32-bit read (4-byte aligned).
    pub fn read_u32(&self, offset: usize) -> Result<u32, BadAccess> {
        self.read(offset)
    }
    /// Volatile 64-bit read (8-byte aligned).
    pub fn read_u64(&self, offset: usize) -> Result<u64, BadAccess> {
        self.read(offset)
    }
    /// Volatile 8-bit write.
    pub fn write_u8(&self, offset: usize, v: u8) -> Result<(), BadAccess> {
        self.write(offset, v)
    }
    /// Volatile 16-bit write (2-byte aligned).
    pub fn write_u16(&self, offset: usize, v: u16) -> Result<(), BadAccess> {
        self.write(offset, v)
    }
    /// Volatile 32-bit write (4-byte aligned).
    pub fn write_u32(&self, offset: usize, v: u32) -> Result<(), BadAccess> {
        self.write(offset, v)
    }
    /// Volatile 64-bit write (8-byte aligned).
    pub fn write_u64(&self, offset: usize, v: u64) -> Result<(), BadAccess> {
        self.write(offset, v)
    }

    /// Copies `data` into the area at `offset` with volatile writes (8 bytes at a time where aligned).
    pub fn copy_from(&self, offset: usize, data: &[u8]) -> Result<(), BadAccess> {
        self.check(offset, data.len(), 1)?;
        let mut i = 0;
        while i < data.len() {
            let at = offset + i;
            if (self.addr() + at).is_multiple_of(8) && data.len() - i >= 8 {
                let mut w = [0u8; 8];
                w.copy_from_slice(&data[i..i + 8]);
                self.write(at, u64::from_ne_bytes(w))?;
                i += 8;
            } else {
                self.write(at, data[i])?;
                i += 1;
            }
        }
        Ok(())
    }

    /// Copies from the area at `offset` into `out` with volatile reads (8 bytes at a time where aligned).
    pub fn copy_to(&self, offset: usize, out: &mut [u8]) -> Result<(), BadAccess> {
        self.check(offset, out.len(), 1)?;
        let mut i = 0;
        while i < out.len() {
            let at = offset + i;
            if (self.addr() + at).is_multiple_of(8) && out.len() - i >= 8 {
                let v: u64 = self.read(at)?;
                out[i..i + 8].copy_from_slice(&v.to_ne_bytes());
                i += 8;
            } else {
                out[i] = self.read(at)?;
                i += 1;
            }
        }
        Ok(())
    }

    /// Sets `len` bytes at `offset` to `byte` with volatile writes.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), BadAccess> {
        self.check(offset, len, 1)?;
        let word = u64::from_ne_bytes([byte; 8]);
        let mut i = 0;
        while i < len {
            let at = offset + i;
            if (self.addr() + at).is_multiple_of(8) && len - i >= 8 {
                self.write(at, word)?;
                i += 8;
            } else {
                self.write(at, byte)?;
                i += 1;
            }
        }
        Ok(())
    }
}

impl Drop for MappedArea {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and owns; no reference into it exists,
        // and it is unmapped exactly once.
        let ret = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        debug_assert_eq!(ret, 0, "munmap failed: {}", io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_uapi() {
        assert_eq!(GET_API_VERSION, 0x3b64);
        assert_eq!(CHECK_EXTENSION, 0x3b65);
        assert_eq!(SET_IOMMU, 0x3b66);
        assert_eq!(GROUP_GET_STATUS, 0x3b67);
        assert_eq!(GROUP_SET_CONTAINER, 0x3b68);
        assert_eq!(GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(DEVICE_GET_INFO, 0x3b6b);
        assert_eq!(DEVICE_GET_REGION_INFO, 0x3b6c);
        assert_eq!(DEVICE_GET_IRQ_INFO, 0x3b6d);
        assert_eq!(DEVICE_SET_IRQS, 0x3b6e);
        assert_eq!(DEVICE_RESET, 0x3b6f);
        assert_eq!(IOMMU_GET_INFO, 0x3b70);
        assert_eq!(IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(IOMMU_UNMAP_DMA, 0x3b72);
    }

    #[test]
    fn uapi_struct_sizes_match_the_kernel() {
        assert_eq!(std::mem::size_of::<b::vfio_region_info>(), 32);
        assert_eq!(std::mem::size_of::<b::vfio_iommu_type1_info>(), 24);
        assert_eq!(std::mem::size_of::<b::vfio_iommu_type1_dma_map>(), 32);
        assert_eq!(std::mem::size_of::<b::vfio_iommu_type1_dma_unmap>(), 24);
        assert_eq!(std::mem::size_of::<b::vfio_irq_set>(), IRQ_SET_HEADER);
    }

    #[test]
    fn anonymous_area_is_zeroed_and_round_trips_volatile_values() {
        let a = MappedArea::anonymous(8192, false).unwrap();
        assert_eq!(a.addr() % page_size(), 0);
        assert_eq!(a.read_u64(8184).unwrap(), 0);
        a.write_u32(4, 0xdead_beef).unwrap();
        assert_eq!(a.read_u32(4).unwrap(), 0xdead_beef);
        let data: Vec<u8> = (0..100u8).collect();
        a.copy_from(3, &data).unwrap();
        let mut out = vec![0u8; 100];
        a.copy_to(3, &mut out).unwrap();
        assert_eq!(out, data);
        a.fill(10, 20, 0xab).unwrap();
        assert_eq!(a.read_u8(29).unwrap(), 0xab);
        assert_eq!(a.read_u8(30).unwrap(), 30 - 3);
    }

    #[test]
    fn out_of_bounds_and_misaligned_accesses_are_refused() {
        let a = MappedArea::anonymous(4096, false).unwrap();
        assert_eq!(a.read_u32(4094), Err(BadAccess { offset: 4094, width: 4, len: 4096, misaligned: false }));
        assert!(a.read_u64(4).unwrap_err().misaligned);
        assert!(a.write_u16(1, 0).unwrap_err().misaligned);
        assert!(a.copy_from(4000, &[0; 100]).is_err());
        assert!(a.fill(usize::MAX, 2, 0).is_err());
    }

    #[test]
    fn map_dma_refuses_a_range_outside_the_area_before_any_ioctl() {
        let a = MappedArea::anonymous(4096, false).unwrap();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsFd;
        let e = iommu_map_dma(devnull.as_fd(), &a, 4095, 2, 0x1000, 3).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }
}
