//! The iommufd ioctls (`/dev/iommu`) and the VFIO device-cdev ioctls that bind a device to it. Same rules
//! as the parent module: one `unsafe` block per call, each with its safety argument; every argument
//! struct is a `#[repr(C)]` copy of the 6.12 uapi layout (`include/uapi/linux/iommufd.h`, `vfio.h`),
//! with sizes and ioctl numbers pinned by the tests below.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::MappedArea;

/// `IOMMUFD_TYPE` and `VFIO_TYPE`: both `';'`.
const TYPE: u32 = b';' as u32;

/// `_IO(';', nr)`: these ioctls carry no size or direction bits (the size is the struct's first field).
const fn io(nr: u32) -> libc::c_ulong {
    (TYPE << 8 | nr) as libc::c_ulong
}

/// `IOMMU_DESTROY`.
pub const IOMMU_DESTROY: libc::c_ulong = io(0x80);
/// `IOMMU_IOAS_ALLOC`.
pub const IOMMU_IOAS_ALLOC: libc::c_ulong = io(0x81);
/// `IOMMU_IOAS_IOVA_RANGES`.
pub const IOMMU_IOAS_IOVA_RANGES: libc::c_ulong = io(0x84);
/// `IOMMU_IOAS_MAP`.
pub const IOMMU_IOAS_MAP: libc::c_ulong = io(0x85);
/// `IOMMU_IOAS_UNMAP`.
pub const IOMMU_IOAS_UNMAP: libc::c_ulong = io(0x86);
/// `VFIO_DEVICE_BIND_IOMMUFD` (`VFIO_BASE + 18`).
pub const VFIO_DEVICE_BIND_IOMMUFD: libc::c_ulong = io(100 + 18);
/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` (`VFIO_BASE + 19`).
pub const VFIO_DEVICE_ATTACH_IOMMUFD_PT: libc::c_ulong = io(100 + 19);
/// `VFIO_DEVICE_DETACH_IOMMUFD_PT` (`VFIO_BASE + 20`).
pub const VFIO_DEVICE_DETACH_IOMMUFD_PT: libc::c_ulong = io(100 + 20);

/// `IOMMU_IOAS_MAP_FIXED_IOVA`: map at the IOVA given, instead of one the kernel picks.
pub const MAP_FIXED_IOVA: u32 = 1 << 0;
/// `IOMMU_IOAS_MAP_WRITEABLE`: the device may write.
pub const MAP_WRITEABLE: u32 = 1 << 1;
/// `IOMMU_IOAS_MAP_READABLE`: the device may read.
pub const MAP_READABLE: u32 = 1 << 2;

/// `struct iommu_destroy`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct IommuDestroy {
    size: u32,
    id: u32,
}

/// `struct iommu_ioas_alloc`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct IommuIoasAlloc {
    size: u32,
    flags: u32,
    out_ioas_id: u32,
}

/// `struct iommu_iova_range`: `start..=last`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IommuIovaRange {
    /// First IOVA.
    pub start: u64,
    /// Last IOVA (inclusive).
    pub last: u64,
}

/// `struct iommu_ioas_iova_ranges`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct IommuIoasIovaRanges {
    size: u32,
    ioas_id: u32,
    num_iovas: u32,
    reserved: u32,
    allowed_iovas: u64,
    out_iova_alignment: u64,
}

/// `struct iommu_ioas_map`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct IommuIoasMap {
    size: u32,
    flags: u32,
    ioas_id: u32,
    reserved: u32,
    user_va: u64,
    length: u64,
    iova: u64,
}

/// `struct iommu_ioas_unmap`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct IommuIoasUnmap {
    size: u32,
    ioas_id: u32,
    iova: u64,
    length: u64,
}

/// `struct vfio_device_bind_iommufd`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct VfioDeviceBindIommufd {
    argsz: u32,
    flags: u32,
    iommufd: i32,
    out_devid: u32,
}

/// `struct vfio_device_attach_iommufd_pt`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct VfioDeviceAttachIommufdPt {
    argsz: u32,
    flags: u32,
    pt_id: u32,
}

/// `struct vfio_device_detach_iommufd_pt`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct VfioDeviceDetachIommufdPt {
    argsz: u32,
    flags: u32,
}

/// Where `iova` sits in [`IommuIoasMap`] (for the lab's check against the real header).
pub const IOAS_MAP_IOVA_OFFSET: usize = std::mem::offset_of!(IommuIoasMap, iova);
/// Where `allowed_iovas` sits in [`IommuIoasIovaRanges`].
pub const IOVA_RANGES_ALLOWED_OFFSET: usize = std::mem::offset_of!(IommuIoasIovaRanges, allowed_iovas);
/// Where `out_devid` sits in [`VfioDeviceBindIommufd`].
pub const BIND_OUT_DEVID_OFFSET: usize = std::mem::offset_of!(VfioDeviceBindIommufd, out_devid);

fn size_u32<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `IOMMU_IOAS_ALLOC`: a new, empty I/O address space; returns its ID.
pub fn ioas_alloc(iommufd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut a = IommuIoasAlloc { size: size_u32::<IommuIoasAlloc>(), ..Default::default() };
    // SAFETY: `a` is a live iommu_ioas_alloc whose `size` says how large it is; the kernel writes only
    // `out_ioas_id` within it.
    check(unsafe { libc::ioctl(iommufd.as_raw_fd(), IOMMU_IOAS_ALLOC, &mut a as *mut IommuIoasAlloc) })?;
    Ok(a.out_ioas_id)
}

/// `IOMMU_DESTROY` of an object (an IOAS, a hardware page table) by ID.
pub fn destroy(iommufd: BorrowedFd<'_>, id: u32) -> io::Result<()> {
    let d = IommuDestroy { size: size_u32::<IommuDestroy>(), id };
    // SAFETY: `d` is a live iommu_destroy the kernel only reads.
    check(unsafe { libc::ioctl(iommufd.as_raw_fd(), IOMMU_DESTROY, &d as *const IommuDestroy) })
}

/// `IOMMU_IOAS_IOVA_RANGES`: the IOVA ranges the IOAS can map now (the intersection of every attached
/// device's apertures minus their reserved regions) and the required IOVA alignment. A first call with
/// room for a few ranges; when the kernel answers EMSGSIZE it has written how many there are, and the
/// call is repeated with that much room (a device attached in between can grow the count again, so it
/// retries a few times).
pub fn ioas_iova_ranges(iommufd: BorrowedFd<'_>, ioas: u32) -> io::Result<(Vec<IommuIovaRange>, u64)> {
    let mut room = 4usize;
    for _ in 0..8 {
        let mut ranges = vec![IommuIovaRange::default(); room];
        let mut r = IommuIoasIovaRanges {
            size: size_u32::<IommuIoasIovaRanges>(),
            ioas_id: ioas,
            num_iovas: room as u32,
            allowed_iovas: ranges.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: `r` is a live iommu_ioas_iova_ranges whose `size` says how large it is, and
        // `allowed_iovas` points at `ranges`, a live buffer of exactly `num_iovas` iommu_iova_range
        // entries; the kernel writes at most that many entries, plus `num_iovas` and the alignment in `r`.
        let ret =
            unsafe { libc::ioctl(iommufd.as_raw_fd(), IOMMU_IOAS_IOVA_RANGES, &mut r as *mut IommuIoasIovaRanges) };
        match check(ret) {
            Ok(()) => {
                ranges.truncate((r.num_iovas as usize).min(room));
                return Ok((ranges, r.out_iova_alignment));
            }
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) && r.num_iovas as usize > room => {
                room = r.num_iovas as usize;
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EMSGSIZE))
}

/// `IOMMU_IOAS_MAP`: maps `len` bytes of `area` from `offset` into the IOAS, at `iova` when given
/// (`IOMMU_IOAS_MAP_FIXED_IOVA`) or where the kernel chooses; returns the IOVA used. `flags` are
/// [`MAP_READABLE`] / [`MAP_WRITEABLE`].
///
/// Safe for the same reasons as [`super::iommu_map_dma`]: the device reaches only pages of `area`,
/// which Rust never references, and iommufd pins them for as long as the mapping lives.
pub fn ioas_map(
    iommufd: BorrowedFd<'_>,
    ioas: u32,
    area: &MappedArea,
    offset: usize,
    len: usize,
    iova: Option<u64>,
    flags: u32,
) -> io::Result<u64> {
    if offset.checked_add(len).is_none_or(|end| end > area.len()) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut m = IommuIoasMap {
        size: size_u32::<IommuIoasMap>(),
        flags: flags | if iova.is_some() { MAP_FIXED_IOVA } else { 0 },
        ioas_id: ioas,
        user_va: area.addr() as u64 + offset as u64,
        length: len as u64,
        iova: iova.unwrap_or(0),
        ..Default::default()
    };
    // SAFETY: `m` is a live iommu_ioas_map whose `size` says how large it is; the virtual range it names
    // lies inside `area` (checked above), memory this process owns and accesses only volatilely; the
    // kernel writes back only `iova`.
    check(unsafe { libc::ioctl(iommufd.as_raw_fd(), IOMMU_IOAS_MAP, &mut m as *mut IommuIoasMap) })?;
    Ok(m.iova)
}

/// `IOMMU_IOAS_UNMAP` of `len` bytes at `iova`; returns how many bytes the kernel unmapped.
pub fn ioas_unmap(iommufd: BorrowedFd<'_>, ioas: u32, iova: u64, len: u64) -> io::Result<u64> {
    let mut u = IommuIoasUnmap { size: size_u32::<IommuIoasUnmap>(), ioas_id: ioas, iova, length: len };
    // SAFETY: `u` is a live iommu_ioas_unmap whose `size` says how large it is; the kernel writes back only
    // `length` within it.
    check(unsafe { libc::ioctl(iommufd.as_raw_fd(), IOMMU_IOAS_UNMAP, &mut u as *mut IommuIoasUnmap) })?;
    Ok(u.length)
}

/// `VFIO_DEVICE_BIND_IOMMUFD`: binds an opened device cdev (`/dev/vfio/devices/vfioN`) to an iommufd;
/// returns the device's ID in it. Unbinding is closing the device.
pub fn device_bind_iommufd(device: BorrowedFd<'_>, iommufd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut b = VfioDeviceBindIommufd {
        argsz: size_u32::<VfioDeviceBindIommufd>(),
        iommufd: iommufd.as_raw_fd(),
        ..Default::default()
    };
    // SAFETY: `b` is a live vfio_device_bind_iommufd whose `argsz` says how large it is; it names an open
    // iommufd the caller borrows for the call; the kernel writes back only `out_devid`.
    check(unsafe { libc::ioctl(device.as_raw_fd(), VFIO_DEVICE_BIND_IOMMUFD, &mut b as *mut VfioDeviceBindIommufd) })?;
    Ok(b.out_devid)
}

/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`: attaches a bound device to an IOAS (the kernel then makes or reuses a
/// hardware page table for it); returns the ID of the page table the device is attached to.
pub fn device_attach_pt(device: BorrowedFd<'_>, pt_id: u32) -> io::Result<u32> {
    let mut a = VfioDeviceAttachIommufdPt { argsz: size_u32::<VfioDeviceAttachIommufdPt>(), flags: 0, pt_id };
    // SAFETY: `a` is a live vfio_device_attach_iommufd_pt whose `argsz` says how large it is; the kernel
    // writes back only `pt_id`.
    check(unsafe {
        libc::ioctl(device.as_raw_fd(), VFIO_DEVICE_ATTACH_IOMMUFD_PT, &mut a as *mut VfioDeviceAttachIommufdPt)
    })?;
    Ok(a.pt_id)
}

/// `VFIO_DEVICE_DETACH_IOMMUFD_PT`: detaches a device from its page table (DMA is blocked after it).
pub fn device_detach_pt(device: BorrowedFd<'_>) -> io::Result<()> {
    let d = VfioDeviceDetachIommufdPt { argsz: size_u32::<VfioDeviceDetachIommufdPt>(), flags: 0 };
    // SAFETY: `d` is a live vfio_device_detach_iommufd_pt the kernel only reads.
    check(unsafe {
        libc::ioctl(device.as_raw_fd(), VFIO_DEVICE_DETACH_IOMMUFD_PT, &d as *const VfioDeviceDetachIommufdPt)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The numbers `_IO(';', nr)` gives for the 6.12 uapi's command numbers (iommufd: 0x80 + n; VFIO:
    /// VFIO_BASE 100 + n). The lab compiles the real headers and checks the same numbers.
    #[test]
    fn ioctl_numbers_match_the_6_12_uapi() {
        assert_eq!(IOMMU_DESTROY, 0x3b80);
        assert_eq!(IOMMU_IOAS_ALLOC, 0x3b81);
        assert_eq!(IOMMU_IOAS_IOVA_RANGES, 0x3b84);
        assert_eq!(IOMMU_IOAS_MAP, 0x3b85);
        assert_eq!(IOMMU_IOAS_UNMAP, 0x3b86);
        assert_eq!(VFIO_DEVICE_BIND_IOMMUFD, 0x3b76);
        assert_eq!(VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3b77);
        assert_eq!(VFIO_DEVICE_DETACH_IOMMUFD_PT, 0x3b78);
    }

    #[test]
    fn struct_layouts_match_the_6_12_uapi() {
        assert_eq!(size_of::<IommuDestroy>(), 8);
        assert_eq!(size_of::<IommuIoasAlloc>(), 12);
        assert_eq!(size_of::<IommuIovaRange>(), 16);
        assert_eq!(size_of::<IommuIoasIovaRanges>(), 32);
        assert_eq!(offset_of!(IommuIoasIovaRanges, allowed_iovas), 16);
        assert_eq!(offset_of!(IommuIoasIovaRanges, out_iova_alignment), 24);
        assert_eq!(size_of::<IommuIoasMap>(), 40);
        assert_eq!(offset_of!(IommuIoasMap, user_va), 16);
        assert_eq!(offset_of!(IommuIoasMap, iova), 32);
        assert_eq!(size_of::<IommuIoasUnmap>(), 24);
        assert_eq!(offset_of!(IommuIoasUnmap, iova), 8);
        assert_eq!(size_of::<VfioDeviceBindIommufd>(), 16);
        assert_eq!(offset_of!(VfioDeviceBindIommufd, out_devid), 12);
        assert_eq!(size_of::<VfioDeviceAttachIommufdPt>(), 12);
        assert_eq!(size_of::<VfioDeviceDetachIommufdPt>(), 8);
    }

    #[test]
    fn map_refuses_a_range_outside_the_area_before_any_ioctl() {
        let a = MappedArea::anonymous(4096, false).unwrap();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsFd;
        let e = ioas_map(devnull.as_fd(), 1, &a, 4095, 2, Some(0x1000), MAP_READABLE).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn ioctls_on_a_file_that_is_not_an_iommufd_fail_with_the_os_error() {
        let devnull = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsFd;
        assert!(ioas_alloc(devnull.as_fd()).is_err());
        assert!(ioas_iova_ranges(devnull.as_fd(), 1).is_err());
        assert!(device_detach_pt(devnull.as_fd()).is_err());
    }
}
