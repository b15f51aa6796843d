//! # iommu-vfio: a safe user-space driver framework over Linux VFIO
//!
//! Open a PCI device through its IOMMU group, map memory for it at IOVAs the IOMMU will translate, drive
//! its registers and take its interrupts, all without `unsafe` in your code:
//!
//! ```no_run
//! use iommu_vfio::{DeviceAccess, DmaBuffer, DmaDir, Mmio, VfioDevice};
//!
//! let dev = VfioDevice::open("0000:01:00.0")?;        // group viable? container, type1v2, device fd
//! let bar0 = dev.bar(0)?;                              // mmapped; volatile, checked accessors only
//! println!("id {:#x}", bar0.read32(0)?);
//! dev.enable_bus_master()?;
//! let space = dev.dma_space()?.with_dma_mask(28);      // valid IOVA ranges − reserved regions, ≤ 2^28
//! let buf = DmaBuffer::new(4096)?;
//! buf.copy_in(0, b"hello")?;
//! let m = space.map(&buf, DmaDir::ToDevice)?;          // borrows `buf`: cannot outlive it
//! bar0.write64(0x80, m.iova())?;                       // tell the device where to read
//! # Ok::<(), iommu_vfio::VfioError>(())
//! ```
//!
//! ## Layout
//!
//! - [`sys`]: every raw system call (ioctls, mmap, eventfd, poll) and every volatile access — the only
//!   module with `unsafe`, one block per call, each with a `// SAFETY:` argument.
//! - [`backend`]: the traits the logic and the drivers use — [`DmaBackend`] (map/unmap/info),
//!   [`DeviceAccess`] (regions, config space, BARs, interrupts, reset) and [`Mmio`]. A software IOMMU
//!   implements them to run the same drivers (see the module docs).
//! - [`Container`], [`Group`], [`VfioDevice`], [`Bar`]: the kernel implementation over the legacy
//!   container; [`Iommufd`] and [`VfioDevice::open_iommufd`] over iommufd and the device cdev;
//!   [`Backend`] and [`VfioDevice::open_backend`] choose between them at run time.
//! - [`DmaBuffer`], [`DmaSpace`], [`DmaMapping`], [`SgMapping`]: DMA memory and mappings.
//! - [`iova`]: the IOVA allocator (pure; valid ranges, reserved regions, DMA mask, alignment, reuse).
//! - [`fake`]: an in-memory IOMMU for tests, and the reference for simulators.
//! - [`host`]: sysfs reads (group of a device, members and drivers, reserved regions).
//! - [`sim_backend`]: the traits on `iommu-sim`'s software IOMMU and `edu` model, so the drivers run
//!   against the simulator (`edu --sim`).
//! - [`drivers`]: the `edu` and NVMe example drivers, generic over the traits.
#![deny(unsafe_code)]

pub mod backend;
mod container;
mod device;
pub mod dma;
pub mod drivers;
mod error;
pub mod fake;
pub mod host;
pub mod info;
pub mod iommufd;
pub mod iova;
pub mod sim_backend;
pub mod sys;

pub use backend::{DeviceAccess, DmaBackend, EventFd, Mmio};
pub use container::{Container, Group, GroupStatus};
pub use device::{Backend, Bar, VfioDevice};
pub use dma::{DmaBuffer, DmaDir, DmaMapping, DmaMemory, DmaSpace, DmaStats, IovaReservation, MapOptions, SgMapping};
pub use error::{Blocker, Result, VfioError};
pub use host::Host;
pub use info::{DeviceInfo, IommuInfo, IovaRange, IrqInfo, IrqKind, RegionInfo};
pub use iommufd::{BackendKind, Iommufd};

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
