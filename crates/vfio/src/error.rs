//! The crate's error type. Every variant names what it failed on (a path, a device address, a region,
//! an IOVA) and keeps the OS error (errno) as its source; messages are sentences that do not repeat the
//! source, so print the whole chain (`{e}: {source}: ...`).

use std::io;
use std::path::PathBuf;

/// A device that keeps a group from being viable, and the driver it is bound to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Blocker {
    /// PCI address.
    pub address: String,
    /// The driver it is bound to.
    pub driver: String,
}

fn blockers_text(b: &[Blocker]) -> String {
    if b.is_empty() {
        return "the kernel did not say which device blocks it".into();
    }
    b.iter().map(|b| format!("{} is bound to {}", b.address, b.driver)).collect::<Vec<_>>().join(", ")
}

/// A VFIO failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VfioError {
    /// Opening a VFIO node failed.
    #[error("cannot open {path}")]
    Open {
        /// The node.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// An ioctl on a container or group failed.
    #[error("{call} on {path} failed")]
    Ioctl {
        /// The ioctl's name.
        call: &'static str,
        /// The node.
        path: PathBuf,
        /// The cause (errno).
        source: io::Error,
    },
    /// An ioctl or read/write on a device failed.
    #[error("{call} on device {device} failed")]
    Device {
        /// What was done (`VFIO_DEVICE_GET_INFO`, `read of region 7 at 0x4`, ...).
        call: String,
        /// The device's PCI address.
        device: String,
        /// The cause (errno).
        source: io::Error,
    },
    /// The kernel offers no iommufd here.
    #[error("{path} does not exist: this kernel has no iommufd (CONFIG_IOMMUFD, Linux 6.2+, or the iommufd module is not loaded); use the container backend (/dev/vfio/vfio)")]
    NoIommufd {
        /// The node looked for.
        path: PathBuf,
    },
    /// The device has no VFIO character device to open.
    #[error("{device} has no VFIO device cdev: {why}")]
    NoCdev {
        /// The device's PCI address.
        device: String,
        /// Why, with what to do.
        why: String,
    },
    /// A sysfs file or link could not be read.
    #[error("cannot read {path}")]
    Sysfs {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The device has no IOMMU group.
    #[error("{device} has no IOMMU group ({path} is missing): the IOMMU is off or does not cover it")]
    NoGroup {
        /// The device.
        device: String,
        /// The missing `iommu_group` link.
        path: PathBuf,
    },
    /// The group's node does not exist: nothing in it is bound to vfio-pci.
    #[error(
        "{path} does not exist: no device of IOMMU group {group} is bound to vfio-pci (run `iommuctl bind {device}`)"
    )]
    GroupNotBound {
        /// The group.
        group: u32,
        /// The missing node.
        path: PathBuf,
        /// The device that was asked for.
        device: String,
    },
    /// The group is not viable: a member is bound to a driver that does DMA on its own.
    #[error("IOMMU group {group} is not viable for VFIO: {}; unbind those devices or bind the whole group with `iommuctl bind`", blockers_text(.blockers))]
    NotViable {
        /// The group.
        group: u32,
        /// The devices that block it.
        blockers: Vec<Blocker>,
    },
    /// The container speaks another VFIO API version.
    #[error("{path} speaks VFIO API version {found}, this library speaks {expected}")]
    ApiVersion {
        /// The container node.
        path: PathBuf,
        /// What the kernel said.
        found: i32,
        /// `VFIO_API_VERSION`.
        expected: i32,
    },
    /// The kernel lacks the type1v2 IOMMU backend.
    #[error("{path} does not offer the type1v2 IOMMU (is vfio_iommu_type1 loaded?)")]
    NoType1v2 {
        /// The container node.
        path: PathBuf,
    },
    /// An access outside a region or buffer.
    #[error("{what}: access of {width} bytes at offset {offset:#x} is outside its {size:#x} bytes")]
    OutOfBounds {
        /// The region or buffer (`0000:01:00.0 BAR0`, `DMA buffer`).
        what: String,
        /// Offset of the access.
        offset: u64,
        /// Bytes accessed.
        width: u64,
        /// Size of the region or buffer.
        size: u64,
    },
    /// A misaligned register or memory access.
    #[error("{what}: access of {width} bytes at offset {offset:#x} is not aligned to {width}")]
    Misaligned {
        /// The region or buffer.
        what: String,
        /// Offset of the access.
        offset: u64,
        /// Bytes accessed (and the required alignment).
        width: u64,
    },
    /// The region cannot be used that way (absent, not readable, not writable).
    #[error("{device} {region}: {why}")]
    Region {
        /// The device.
        device: String,
        /// The region's name (`BAR0`, `config`).
        region: String,
        /// What is missing.
        why: &'static str,
    },
    /// mmap of a device region failed.
    #[error("cannot mmap {device} {region} (offset {offset:#x}, {len:#x} bytes)")]
    Mmap {
        /// The device.
        device: String,
        /// The region's name.
        region: String,
        /// Offset within the region.
        offset: u64,
        /// Length.
        len: u64,
        /// The cause.
        source: io::Error,
    },
    /// A DMA buffer could not be allocated.
    #[error("cannot allocate a {len}-byte DMA buffer")]
    Alloc {
        /// Requested length.
        len: usize,
        /// The cause.
        source: io::Error,
    },
    /// 2 MiB hugepages were asked for and none are free.
    #[error("cannot allocate {len} bytes of 2 MiB hugepages: none free (reserve some with `echo N > /proc/sys/vm/nr_hugepages`)")]
    NoHugepages {
        /// Requested length.
        len: usize,
        /// The cause.
        source: io::Error,
    },
    /// No IOVA space left for a request.
    #[error("cannot allocate IOVA space")]
    Iova(#[from] crate::iova::IovaError),
    /// The kernel's limit on DMA mappings per container would be exceeded.
    #[error("the kernel allows {limit} more DMA mappings in this container and {in_use} are in use; unmap some or raise vfio_iommu_type1's dma_entry_limit")]
    DmaLimit {
        /// Mappings available when the space was created.
        limit: u32,
        /// Mappings this space holds.
        in_use: u64,
    },
    /// A DMA map call failed.
    #[error("cannot map {len:#x} bytes at IOVA {iova:#x}")]
    Map {
        /// The IOVA.
        iova: u64,
        /// The length.
        len: u64,
        /// The cause (errno).
        source: io::Error,
    },
    /// A DMA unmap call failed or unmapped another amount than asked.
    #[error("cannot unmap {len:#x} bytes at IOVA {iova:#x}")]
    Unmap {
        /// The IOVA.
        iova: u64,
        /// The length.
        len: u64,
        /// The cause (errno).
        source: io::Error,
    },
    /// The device cannot be reset through VFIO.
    #[error("{device} does not support VFIO_DEVICE_RESET (VFIO_DEVICE_FLAGS_RESET is not set)")]
    ResetUnsupported {
        /// The device.
        device: String,
    },
    /// The device has no interrupt of that kind.
    #[error("{device} has no {kind} interrupt{}", if *.wanted > 1 { format!(" with {} vectors", .wanted) } else { String::new() })]
    NoIrq {
        /// The device.
        device: String,
        /// The kind.
        kind: crate::IrqKind,
        /// Vectors asked for.
        wanted: u32,
    },
    /// An eventfd could not be created or read.
    #[error("eventfd failed")]
    EventFd {
        /// The cause.
        source: io::Error,
    },
    /// A device did not do something in time.
    #[error("{device}: timed out after {ms} ms waiting for {what}")]
    Timeout {
        /// The device.
        device: String,
        /// What was awaited.
        what: String,
        /// How long.
        ms: u64,
    },
    /// A device reported an error.
    #[error("{device}: {what}")]
    DeviceReported {
        /// The device.
        device: String,
        /// What it said.
        what: String,
    },
    /// A bad argument.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl VfioError {
    /// The bad-access error for `what`.
    pub(crate) fn access(what: impl Into<String>, bad: crate::sys::BadAccess) -> Self {
        if bad.misaligned {
            VfioError::Misaligned { what: what.into(), offset: bad.offset as u64, width: bad.width as u64 }
        } else {
            VfioError::OutOfBounds {
                what: what.into(),
                offset: bad.offset as u64,
                width: bad.width as u64,
                size: bad.len as u64,
            }
        }
    }
}

/// `Result` with [`VfioError`].
pub type Result<T, E = VfioError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_viable_names_each_blocking_device_and_driver() {
        let e = VfioError::NotViable {
            group: 4,
            blockers: vec![Blocker { address: "0000:00:10.0".into(), driver: "nvme".into() }],
        };
        let s = e.to_string();
        assert!(s.contains("IOMMU group 4") && s.contains("0000:00:10.0 is bound to nvme"), "{s}");
    }

    #[test]
    fn ioctl_errors_keep_the_errno() {
        let e = VfioError::Device {
            call: "VFIO_DEVICE_RESET".into(),
            device: "0000:01:00.0".into(),
            source: io::Error::from_raw_os_error(libc::ENOTTY),
        };
        assert!(e.to_string().contains("0000:01:00.0"));
        let src = std::error::Error::source(&e).unwrap().downcast_ref::<io::Error>().unwrap();
        assert_eq!(src.raw_os_error(), Some(libc::ENOTTY));
    }
}
