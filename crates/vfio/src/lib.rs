//! # iommu-vfio: a safe user-space driver framework over Linux VFIO
//!
//! Open a PCI device through its IOMMU group, map memory for it at IOVAs the IOMMU will translate, drive
//! its registers and take its interrupts, all without `unsafe` in your code:
//!
//! ```no_run
//! use iommu_vfio::{DeviceAccess, DmaDir, Mmio, VfioDevice};
//!
//! let dev = VfioDevice::open("0000:01:00.0")?;        // group viable? container, type1v2, device fd
//! let bar0 = dev.bar(0)?;                              // mmapped; volatile, checked accessors only
//! println!("id {:#x}", bar0.read32(0)?);
//! dev.enable_bus_master()?;
//! let space = dev.dma_space()?.with_dma_mask(28);      // valid IOVA ranges − reserved regions, ≤ 2^28
//! let buf = space.alloc(4096)?;                        // a DmaBuffer: memory the container can pin
//! buf.copy_in(0, b"hello")?;
//! let m = space.map(&buf, DmaDir::ToDevice)?;          // borrows `buf`: cannot outlive it
//! bar0.write64(0x80, m.iova())?;                       // tell the device where to read
//! # Ok::<(), iommu_vfio::VfioError>(())
//! ```
//!
//! The kernel side of the driver contract of `iommu-backend`: [`Container`] is a [`DmaBackend`],
//! [`VfioDevice`] a [`DeviceAccess`] with [`Bar`]s as [`Mmio`], [`DmaBuffer`] the [`DmaMemory`] it maps.
//! Drivers written against that contract (`iommu-drivers`) run here and on the simulator alike; this
//! crate depends on neither of them.
//!
//! ## Layout
//!
//! - [`sys`]: every raw system call (ioctls, mmap, sysconf) and every volatile access — the only module
//!   with `unsafe`, one block per call, each with a `// SAFETY:` argument.
//! - [`Container`], [`Group`], [`VfioDevice`], [`Bar`]: the kernel implementation of the contract over
//!   the legacy container; [`Iommufd`] and [`VfioDevice::open_iommufd`] over iommufd and the device cdev;
//!   [`Backend`] and [`VfioDevice::open_backend`] choose between them at run time.
//! - [`dma`]: [`DmaBuffer`], mmapped DMA memory, and the contract's [`DmaSpace`], [`DmaMapping`],
//!   [`SgMapping`] re-exported.
//! - [`info`]: decoding the kernel's info buffers into the contract's types.
//! - [`host`]: sysfs reads (group of a device, members and drivers, reserved regions).
//! - [`backend`], [`iova`], [`fake`]: the contract's traits, IOVA allocator and in-memory IOMMU,
//!   re-exported from `iommu-backend` so code written against this crate keeps working.
//!
//! Errors: [`VfioError`] for opening and VFIO's own calls; the contract's methods return
//! [`BackendError`], and the two convert into each other (`?` works both ways).
#![deny(unsafe_code)]

mod container;
mod device;
pub mod dma;
mod error;
pub mod host;
pub mod info;
pub mod iommufd;
pub mod sys;

pub use container::{Container, Group, GroupStatus};
pub use device::{Backend, Bar, VfioDevice};
pub use dma::{DmaBuffer, DmaMapping, DmaSpace, DmaStats, IovaReservation, MapOptions, SgMapping};
pub use error::{Blocker, Result, VfioError};
pub use host::Host;
pub use info::{DeviceInfo, IommuInfo, IovaRange, IrqInfo, IrqKind, RegionInfo};
pub use iommu_backend::{backend, fake, iova};
pub use iommu_backend::{
    error_chain, BackendError, DeviceAccess, DmaBackend, DmaBuf, DmaDir, DmaMemory, EventFd, FaultRecord, HugePages,
    Mmio,
};
pub use iommufd::{BackendKind, Iommufd};
