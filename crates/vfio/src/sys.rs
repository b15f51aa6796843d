//! Every raw VFIO ioctl the crate makes, one `unsafe` block per call, each with its safety argument.
//!
//! The ioctls are issued through `libc::ioctl` rather than rustix's typed patterns because several VFIO
//! ioctls return a value (a version, a file descriptor, a byte count) that those patterns discard.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use vfio_bindings::bindings::vfio as b;

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

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `VFIO_GET_API_VERSION` on a container.
pub fn get_api_version(container: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: the ioctl takes no argument and only returns an integer; the fd is valid for the call.
    check(unsafe { libc::ioctl(container.as_raw_fd(), GET_API_VERSION) })
}

/// `VFIO_GROUP_GET_STATUS`: the group's flags (`VFIO_GROUP_FLAGS_VIABLE`, `..._CONTAINER_SET`).
pub fn group_get_status(group: BorrowedFd<'_>) -> io::Result<u32> {
    let mut st = b::vfio_group_status { argsz: std::mem::size_of::<b::vfio_group_status>() as u32, flags: 0 };
    // SAFETY: `st` is a live, correctly sized vfio_group_status whose argsz says so; the kernel writes
    // at most argsz bytes into it.
    check(unsafe { libc::ioctl(group.as_raw_fd(), GROUP_GET_STATUS, &mut st as *mut b::vfio_group_status) })?;
    Ok(st.flags)
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
}
