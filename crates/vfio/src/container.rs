//! VFIO containers (`/dev/vfio/vfio`, one IOMMU address space) and groups (`/dev/vfio/N`).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use vfio_bindings::bindings::vfio as b;

use iommu_backend::{BackendError, DmaBackend, DmaBuf, DmaDir, HugePages, IommuInfo};

use crate::dma::DmaBuffer;
use crate::error::{Result, VfioError};
use crate::info::parse_iommu_info;
use crate::sys;

fn open_rw(path: &Path) -> Result<File> {
    File::options().read(true).write(true).open(path).map_err(|source| VfioError::Open { path: path.into(), source })
}

/// A VFIO container: one IOMMU address space that groups join. Implements [`DmaBackend`] with the
/// type1v2 IOMMU (`VFIO_IOMMU_MAP_DMA` / `VFIO_IOMMU_UNMAP_DMA`); its memory is [`DmaBuffer`]s, the only
/// memory it maps.
#[derive(Debug)]
pub struct Container {
    file: File,
    path: PathBuf,
    iommu_set: Mutex<bool>,
}

impl Container {
    /// Opens `/dev/vfio/vfio`.
    pub fn open() -> Result<Self> {
        Self::open_at(Path::new("/dev/vfio/vfio"))
    }

    /// Opens the container node at `path`, checks the API version and that type1v2 is offered.
    pub fn open_at(path: &Path) -> Result<Self> {
        let file = open_rw(path)?;
        let ioctl = |call, source| VfioError::Ioctl { call, path: path.into(), source };
        let version = sys::get_api_version(file.as_fd()).map_err(|e| ioctl("VFIO_GET_API_VERSION", e))?;
        if version != b::VFIO_API_VERSION as i32 {
            return Err(VfioError::ApiVersion {
                path: path.into(),
                found: version,
                expected: b::VFIO_API_VERSION as i32,
            });
        }
        let v2 =
            sys::check_extension(file.as_fd(), b::VFIO_TYPE1v2_IOMMU).map_err(|e| ioctl("VFIO_CHECK_EXTENSION", e))?;
        if !v2 {
            return Err(VfioError::NoType1v2 { path: path.into() });
        }
        Ok(Self { file, path: path.into(), iommu_set: Mutex::new(false) })
    }

    /// The container node.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Attaches `group` (`VFIO_GROUP_SET_CONTAINER`); the first attach also selects the type1v2 IOMMU.
    pub fn attach(&self, group: &Group) -> Result<()> {
        sys::group_set_container(group.file.as_fd(), self.file.as_fd()).map_err(|source| VfioError::Ioctl {
            call: "VFIO_GROUP_SET_CONTAINER",
            path: group.path.clone(),
            source,
        })?;
        let mut set = self.iommu_set.lock().unwrap_or_else(|e| e.into_inner());
        if !*set {
            sys::set_iommu(self.file.as_fd(), b::VFIO_TYPE1v2_IOMMU).map_err(|source| VfioError::Ioctl {
                call: "VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU)",
                path: self.path.clone(),
                source,
            })?;
            *set = true;
        }
        Ok(())
    }

    fn ioctl_err(&self, call: &'static str) -> impl FnOnce(std::io::Error) -> VfioError + '_ {
        move |source| VfioError::Ioctl { call, path: self.path.clone(), source }
    }
}

impl AsFd for Container {
    /// The container fd, for callers that issue [`crate::sys`] calls themselves (benchmarks).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl DmaBackend for Container {
    fn iommu_info(&self) -> std::result::Result<IommuInfo, BackendError> {
        let raw = sys::iommu_get_info(self.file.as_fd()).map_err(self.ioctl_err("VFIO_IOMMU_GET_INFO"))?;
        parse_iommu_info(&raw).ok_or_else(|| {
            VfioError::Ioctl {
                call: "VFIO_IOMMU_GET_INFO",
                path: self.path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "short reply"),
            }
            .into()
        })
    }

    fn alloc(&self, len: usize, huge: HugePages) -> std::result::Result<DmaBuf, BackendError> {
        Ok(DmaBuf::new(DmaBuffer::with(len, huge)?))
    }

    fn map(
        &self,
        iova: u64,
        mem: &DmaBuf,
        offset: usize,
        len: usize,
        dir: DmaDir,
    ) -> std::result::Result<(), BackendError> {
        // Only memory this process mmapped itself may be pinned: a DmaBuffer's area is a live mapping.
        let buf = mem.downcast_ref::<DmaBuffer>().ok_or(BackendError::ForeignMemory { iova, len: len as u64 })?;
        sys::iommu_map_dma(self.file.as_fd(), buf.area(), offset, len, iova, crate::dma::map_flags(dir))
            .map_err(|source| BackendError::Map { iova, len: len as u64, source })
    }

    fn unmap(&self, iova: u64, len: u64) -> std::result::Result<(), BackendError> {
        let done = sys::iommu_unmap_dma(self.file.as_fd(), iova, len).map_err(|source| BackendError::Unmap {
            iova,
            len,
            source,
        })?;
        crate::dma::check_unmapped(iova, len, done)
    }
}

/// An open VFIO group (`/dev/vfio/N`).
#[derive(Debug)]
pub struct Group {
    file: File,
    path: PathBuf,
    id: u32,
}

/// Group status flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    /// Every device in the group is bound to a VFIO-safe driver or none.
    pub viable: bool,
    /// The group is attached to a container.
    pub container_set: bool,
}

impl Group {
    /// Opens group `n` below `dev` (normally `/dev/vfio`).
    pub fn open_in(dev: &Path, n: u32) -> Result<Self> {
        let path = dev.join(n.to_string());
        let file = open_rw(&path)?;
        Ok(Self { file, path, id: n })
    }

    /// Opens `/dev/vfio/N`.
    pub fn open(n: u32) -> Result<Self> {
        Self::open_in(Path::new("/dev/vfio"), n)
    }

    /// The group number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The group node.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `VFIO_GROUP_GET_STATUS`.
    pub fn status(&self) -> Result<GroupStatus> {
        let flags = sys::group_get_status(self.file.as_fd()).map_err(|source| VfioError::Ioctl {
            call: "VFIO_GROUP_GET_STATUS",
            path: self.path.clone(),
            source,
        })?;
        Ok(GroupStatus {
            viable: flags & b::VFIO_GROUP_FLAGS_VIABLE != 0,
            container_set: flags & b::VFIO_GROUP_FLAGS_CONTAINER_SET != 0,
        })
    }

    /// `VFIO_GROUP_GET_DEVICE_FD` for the device called `name` (its PCI address).
    pub fn device_fd(&self, name: &str) -> Result<OwnedFd> {
        let c = CString::new(name).map_err(|_| VfioError::Invalid(format!("device name {name:?} contains NUL")))?;
        sys::group_get_device_fd(self.file.as_fd(), &c).map_err(|source| VfioError::Ioctl {
            call: "VFIO_GROUP_GET_DEVICE_FD",
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_container_node_names_its_path() {
        let e = Container::open_at(Path::new("/nonexistent/vfio")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vfio"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_a_container_fails_the_version_ioctl_with_its_errno() {
        let t = tempfile::NamedTempFile::new().unwrap();
        let e = Container::open_at(t.path()).unwrap_err();
        match e {
            VfioError::Ioctl { call, source, .. } => {
                assert_eq!(call, "VFIO_GET_API_VERSION");
                assert_eq!(source.raw_os_error(), Some(libc::ENOTTY));
            }
            other => panic!("{other:?}"),
        }
    }
}
