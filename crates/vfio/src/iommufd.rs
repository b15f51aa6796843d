//! The iommufd backend: an I/O address space on `/dev/iommu` that devices opened through their VFIO
//! character devices (`/dev/vfio/devices/vfioN`) attach to — the kernel's successor to the type1
//! container (Linux 6.2+ for iommufd, 6.6+ for device cdevs).
//!
//! [`Iommufd`] holds the `/dev/iommu` file and one IOAS (`IOMMU_IOAS_ALLOC`); it is a
//! [`DmaBackend`] through `IOMMU_IOAS_MAP` (always at the IOVA [`crate::DmaSpace`] chose) and
//! `IOMMU_IOAS_UNMAP`, and reports the IOAS's valid ranges (`IOMMU_IOAS_IOVA_RANGES`, which already
//! leave out every attached device's reserved regions) and alignment. Devices are opened with
//! [`crate::VfioDevice::open_iommufd`], which binds (`VFIO_DEVICE_BIND_IOMMUFD`) and attaches
//! (`VFIO_DEVICE_ATTACH_IOMMUFD_PT`) them; dropping the device detaches and unbinds it.
//!
//! [`Backend`] picks between the two at run time: iommufd when `/dev/iommu` exists and the device has
//! a cdev, the container otherwise.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use iommu_backend::{BackendError, DmaBackend, DmaBuf, DmaDir, HugePages, IommuInfo, IovaRange};

use crate::dma::DmaBuffer;
use crate::error::{Result, VfioError};
use crate::host::Host;
use crate::sys::iommufd as sys;

/// Results of the driver contract's methods.
type BResult<T> = std::result::Result<T, BackendError>;

/// `/dev/iommu` with one I/O address space.
#[derive(Debug)]
pub struct Iommufd {
    file: File,
    path: PathBuf,
    ioas: u32,
}

/// Which kernel interface a device is driven through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The legacy VFIO container and group (`/dev/vfio/vfio`, `/dev/vfio/N`, type1v2).
    Container,
    /// iommufd and the device cdev (`/dev/iommu`, `/dev/vfio/devices/vfioN`).
    Iommufd,
}

impl std::str::FromStr for BackendKind {
    type Err = VfioError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "container" => Ok(BackendKind::Container),
            "iommufd" => Ok(BackendKind::Iommufd),
            other => Err(VfioError::Invalid(format!("backend {other:?}: expected container or iommufd"))),
        }
    }
}

impl BackendKind {
    /// What the host offers for `address`: iommufd when `/dev/iommu` exists and the device has a VFIO
    /// cdev, the container otherwise.
    pub fn detect(host: &Host, address: &str) -> BackendKind {
        if host.dev_iommu().exists() && host.device_cdev(address).is_ok() {
            BackendKind::Iommufd
        } else {
            BackendKind::Container
        }
    }

    /// `container` or `iommufd`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Container => "container",
            BackendKind::Iommufd => "iommufd",
        }
    }
}

impl Iommufd {
    /// Opens `/dev/iommu` on the live system and allocates an IOAS.
    pub fn open() -> Result<Self> {
        Self::open_at(&Host::live().dev_iommu())
    }

    /// Opens the iommufd node at `path` and allocates an IOAS.
    pub fn open_at(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                VfioError::NoIommufd { path: path.to_path_buf() }
            } else {
                VfioError::Open { path: path.to_path_buf(), source }
            }
        })?;
        let ioas = sys::ioas_alloc(file.as_fd()).map_err(|source| VfioError::Ioctl {
            call: "IOMMU_IOAS_ALLOC",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self { file, path: path.to_path_buf(), ioas })
    }

    /// The node's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The IOAS every device of this backend attaches to.
    pub fn ioas_id(&self) -> u32 {
        self.ioas
    }

    /// The IOAS's valid IOVA ranges now and the alignment every mapping needs (`IOMMU_IOAS_IOVA_RANGES`).
    pub fn iova_ranges(&self) -> Result<(Vec<IovaRange>, u64)> {
        let (ranges, align) = sys::ioas_iova_ranges(self.file.as_fd(), self.ioas)
            .map_err(|source| VfioError::Ioctl { call: "IOMMU_IOAS_IOVA_RANGES", path: self.path.clone(), source })?;
        Ok((ranges.into_iter().filter_map(|r| IovaRange::new(r.start, r.last)).collect(), align))
    }

    /// Maps `len` bytes of `mem` from `offset` wherever the kernel chooses; returns the IOVA.
    pub fn map_anywhere(&self, mem: &DmaBuffer, offset: usize, len: usize, dir: DmaDir) -> BResult<u64> {
        sys::ioas_map(self.file.as_fd(), self.ioas, mem.area(), offset, len, None, map_flags(dir))
            .map_err(|source| BackendError::Map { iova: 0, len: len as u64, source })
    }
}

/// iommufd's map flags for a direction: the device reads (`READABLE`), writes (`WRITEABLE`) or both.
pub fn map_flags(dir: DmaDir) -> u32 {
    match dir {
        DmaDir::ToDevice => sys::MAP_READABLE,
        DmaDir::FromDevice => sys::MAP_WRITEABLE,
        DmaDir::Bidirectional => sys::MAP_READABLE | sys::MAP_WRITEABLE,
    }
}

impl AsFd for Iommufd {
    /// The iommufd, for callers that issue [`crate::sys::iommufd`] calls themselves (benchmarks).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl DmaBackend for Iommufd {
    /// iommufd reports no page-size bitmap: the IOAS's IOVA alignment is given as the one page size (a
    /// mapping must be aligned to it; the kernel picks larger IOMMU pages itself). No mapping limit.
    fn iommu_info(&self) -> BResult<IommuInfo> {
        let (iova_ranges, align) = self.iova_ranges()?;
        let align = if align.is_power_of_two() { align } else { 4096 };
        Ok(IommuInfo { page_sizes: align, iova_ranges, dma_avail: None })
    }

    fn alloc(&self, len: usize, huge: HugePages) -> BResult<DmaBuf> {
        Ok(DmaBuf::new(DmaBuffer::with(len, huge)?))
    }

    fn map(&self, iova: u64, mem: &DmaBuf, offset: usize, len: usize, dir: DmaDir) -> BResult<()> {
        // Only memory this process mmapped itself may be pinned: a DmaBuffer's area is a live mapping.
        let buf = mem.downcast_ref::<DmaBuffer>().ok_or(BackendError::ForeignMemory { iova, len: len as u64 })?;
        let got = sys::ioas_map(self.file.as_fd(), self.ioas, buf.area(), offset, len, Some(iova), map_flags(dir))
            .map_err(|source| BackendError::Map { iova, len: len as u64, source })?;
        if got != iova {
            return Err(BackendError::Map {
                iova,
                len: len as u64,
                source: std::io::Error::other(format!("the kernel mapped at {got:#x}")),
            });
        }
        Ok(())
    }

    fn unmap(&self, iova: u64, len: u64) -> BResult<()> {
        let done = sys::ioas_unmap(self.file.as_fd(), self.ioas, iova, len).map_err(|source| BackendError::Unmap {
            iova,
            len,
            source,
        })?;
        crate::dma::check_unmapped(iova, len, done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_dev_iommu_says_what_is_missing_and_what_to_use() {
        let t = tempfile::tempdir().unwrap();
        let e = Iommufd::open_at(&t.path().join("dev/iommu")).unwrap_err();
        assert!(matches!(e, VfioError::NoIommufd { .. }), "{e}");
        assert!(e.to_string().contains("container backend"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_an_iommufd_fails_at_ioas_alloc_naming_the_call() {
        let e = Iommufd::open_at(Path::new("/dev/null")).unwrap_err();
        assert!(e.to_string().contains("IOMMU_IOAS_ALLOC"), "{e}");
    }

    #[test]
    fn directions_map_to_iommufd_flags() {
        assert_eq!(map_flags(DmaDir::ToDevice), sys::MAP_READABLE);
        assert_eq!(map_flags(DmaDir::FromDevice), sys::MAP_WRITEABLE);
        assert_eq!(map_flags(DmaDir::Bidirectional), sys::MAP_READABLE | sys::MAP_WRITEABLE);
    }

    #[test]
    fn backend_names_parse_and_unknown_ones_are_refused() {
        assert_eq!("iommufd".parse::<BackendKind>().unwrap(), BackendKind::Iommufd);
        assert_eq!("container".parse::<BackendKind>().unwrap(), BackendKind::Container);
        assert!("type1".parse::<BackendKind>().is_err());
    }
}
