//! The crate's error type. Every variant names what it failed on (a path, a device address, a region,
//! an IOVA) and keeps the OS error (errno) as its source; messages are sentences that do not repeat the
//! source, so print the whole chain (`{e}: {source}: ...`).
//!
//! Failures of the driver contract (an access out of bounds, a map or unmap, an interrupt or reset a
//! device lacks) are [`BackendError`]s, which the trait implementations return and which
//! [`VfioError::Backend`] carries through `?`; VFIO's own failures (opening nodes, group viability,
//! container ioctls) are the other variants, and travel through the traits as
//! [`BackendError::Other`], from which `From<BackendError> for VfioError` takes them back out.

use std::io;
use std::path::PathBuf;

use iommu_backend::BackendError;

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
    /// A bad argument.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A failure of the driver contract: a device access, DMA memory, a mapping, an interrupt.
    #[error(transparent)]
    Backend(BackendError),
}

impl From<BackendError> for VfioError {
    /// The contract's error; a VFIO error that travelled inside it ([`BackendError::Other`]) comes back
    /// out as itself.
    fn from(e: BackendError) -> Self {
        match e.downcast::<VfioError>() {
            Ok(v) => v,
            Err(e) => VfioError::Backend(e),
        }
    }
}

impl From<VfioError> for BackendError {
    /// A VFIO error as the contract's: [`VfioError::Backend`] unwrapped, the others as
    /// [`BackendError::Other`] (displayed as themselves).
    fn from(e: VfioError) -> Self {
        match e {
            VfioError::Backend(b) => b,
            other => BackendError::other(other),
        }
    }
}

/// The contract's error for a bad access to `what` (a DMA buffer, a BAR) reported by [`crate::sys`].
pub(crate) fn bad_access(what: impl Into<String>, bad: crate::sys::BadAccess) -> BackendError {
    if bad.misaligned {
        BackendError::Misaligned { what: what.into(), offset: bad.offset as u64, width: bad.width as u64 }
    } else {
        BackendError::OutOfBounds {
            what: what.into(),
            offset: bad.offset as u64,
            width: bad.width as u64,
            size: bad.len as u64,
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
    fn vfio_errors_cross_the_contract_and_come_back_as_themselves() {
        let e = VfioError::NoType1v2 { path: "/dev/vfio/vfio".into() };
        let b = BackendError::from(e);
        assert!(b.to_string().contains("/dev/vfio/vfio"), "{b}");
        assert!(matches!(VfioError::from(b), VfioError::NoType1v2 { .. }));
        let v = VfioError::from(BackendError::Invalid("x".into()));
        assert!(matches!(&v, VfioError::Backend(BackendError::Invalid(_))), "{v:?}");
        assert!(matches!(BackendError::from(v), BackendError::Invalid(_)));
    }
}
