//! The contract's error type. Every variant names what it failed on (a region, an offset, an IOVA range,
//! a device) and keeps the OS error as its source where there is one; messages are sentences that do not
//! repeat the source, so print the whole chain ([`error_chain`]).
//!
//! A backend's own failures that the contract has no variant for (a VFIO ioctl, a simulator's
//! inconsistency) travel as [`BackendError::Other`], which displays exactly as the error it wraps; the
//! backend can take its own type back out with [`BackendError::downcast`].

use std::io;

use crate::info::IrqKind;

/// A failure of a backend, a device or the DMA bookkeeping on top of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
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
    /// An operation on a device (an ioctl, a read or write of a region) failed.
    #[error("{call} on device {device} failed")]
    Device {
        /// What was done (`VFIO_DEVICE_GET_INFO`, `read of 4 bytes of config at 0x4`, ...).
        call: String,
        /// The device's name (PCI address).
        device: String,
        /// The cause (errno).
        source: io::Error,
    },
    /// DMA memory could not be allocated.
    #[error("cannot allocate a {len}-byte DMA buffer")]
    Alloc {
        /// Requested length.
        len: usize,
        /// The cause.
        source: io::Error,
    },
    /// 2 MiB hugepages were required and none are free.
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
    /// The address space's limit on DMA mappings would be exceeded.
    #[error("the kernel allows {limit} more DMA mappings in this container and {in_use} are in use; unmap some or raise vfio_iommu_type1's dma_entry_limit")]
    DmaLimit {
        /// Mappings available when the space was created.
        limit: u32,
        /// Mappings the space holds.
        in_use: u64,
    },
    /// A DMA map call failed.
    #[error("cannot map {len:#x} bytes at IOVA {iova:#x}")]
    Map {
        /// The IOVA.
        iova: u64,
        /// The length.
        len: u64,
        /// The cause (errno, or the backend's reason).
        source: io::Error,
    },
    /// A DMA unmap call failed or unmapped another amount than asked.
    #[error("cannot unmap {len:#x} bytes at IOVA {iova:#x}")]
    Unmap {
        /// The IOVA.
        iova: u64,
        /// The length.
        len: u64,
        /// The cause (errno, or the backend's reason).
        source: io::Error,
    },
    /// Memory that this backend did not allocate was handed to its `map` (a VFIO container pins only
    /// memory it mmapped itself; allocate with [`crate::DmaBackend::alloc`]).
    #[error("cannot map {len:#x} bytes at IOVA {iova:#x}: the memory was not allocated by this backend")]
    ForeignMemory {
        /// The IOVA.
        iova: u64,
        /// The length.
        len: u64,
    },
    /// The device cannot be reset.
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
        kind: IrqKind,
        /// Vectors asked for.
        wanted: u32,
    },
    /// An eventfd could not be created, read or written.
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
    /// A backend's own error (displayed as itself, its sources kept).
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl BackendError {
    /// Wraps a backend's own error as [`BackendError::Other`].
    pub fn other(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        BackendError::Other(Box::new(e))
    }

    /// The backend's own error of type `E` inside [`BackendError::Other`], or `self` back.
    pub fn downcast<E: std::error::Error + 'static>(self) -> Result<E, Self> {
        match self {
            BackendError::Other(b) if b.is::<E>() => match b.downcast::<E>() {
                Ok(e) => Ok(*e),
                Err(b) => Err(BackendError::Other(b)),
            },
            other => Err(other),
        }
    }
}

/// `Result` with [`BackendError`].
pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// The error and its sources joined by `: `, for one-line reports.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_errors_keep_the_errno() {
        let e = BackendError::Device {
            call: "VFIO_DEVICE_RESET".into(),
            device: "0000:01:00.0".into(),
            source: io::Error::from_raw_os_error(libc::ENOTTY),
        };
        assert!(e.to_string().contains("0000:01:00.0"));
        let src = std::error::Error::source(&e).unwrap().downcast_ref::<io::Error>().unwrap();
        assert_eq!(src.raw_os_error(), Some(libc::ENOTTY));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("backend call on /dev/x failed")]
    struct Mine(#[source] io::Error);

    #[test]
    fn a_backends_own_error_reads_as_itself_and_comes_back_out() {
        let e = BackendError::other(Mine(io::Error::from_raw_os_error(libc::EBUSY)));
        assert!(error_chain(&e).starts_with("backend call on /dev/x failed: "), "{}", error_chain(&e));
        assert!(matches!(e.downcast::<Mine>(), Ok(Mine(_))));
        assert!(BackendError::Invalid("x".into()).downcast::<Mine>().is_err());
    }
}
