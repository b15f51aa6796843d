//! A safe user-space driver framework over Linux VFIO.
//!
//! All raw ioctls live in the `sys` module, the only place in the crate where `unsafe` is allowed.
//! This first part opens VFIO groups and reports their viability; containers, devices, DMA mapping and
//! interrupts build on the same module.
#![deny(unsafe_code)]

pub mod sys;

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// A VFIO failure, naming the file it happened on.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    /// Opening a VFIO node failed.
    #[error("cannot open {path}")]
    Open {
        /// The node.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An ioctl failed.
    #[error("{call} on {path} failed")]
    Ioctl {
        /// The ioctl's name.
        call: &'static str,
        /// The node.
        path: PathBuf,
        /// The cause (errno).
        source: std::io::Error,
    },
}

/// An open VFIO group (`/dev/vfio/N`).
#[derive(Debug)]
pub struct Group {
    file: File,
    path: PathBuf,
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
    pub fn open_in(dev: &Path, n: u32) -> Result<Self, VfioError> {
        let path = dev.join(n.to_string());
        let file = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| VfioError::Open { path: path.clone(), source })?;
        Ok(Self { file, path })
    }

    /// Opens `/dev/vfio/N`.
    pub fn open(n: u32) -> Result<Self, VfioError> {
        Self::open_in(Path::new("/dev/vfio"), n)
    }

    /// `VFIO_GROUP_GET_STATUS`.
    pub fn status(&self) -> Result<GroupStatus, VfioError> {
        let flags = sys::group_get_status(self.file.as_fd()).map_err(|source| VfioError::Ioctl {
            call: "VFIO_GROUP_GET_STATUS",
            path: self.path.clone(),
            source,
        })?;
        Ok(GroupStatus {
            viable: flags & vfio_bindings::bindings::vfio::VFIO_GROUP_FLAGS_VIABLE != 0,
            container_set: flags & vfio_bindings::bindings::vfio::VFIO_GROUP_FLAGS_CONTAINER_SET != 0,
        })
    }
}
