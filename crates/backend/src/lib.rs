//! # iommu-backend: the contract between user-space drivers and the IOMMUs they run on
//!
//! A driver written against this crate runs unchanged on the kernel's VFIO (`iommu-vfio`), on the
//! software IOMMU (`iommu-sim`) and on the in-memory [`fake::FakeIommu`] of its tests. The crate owns
//! everything the two sides must agree on, and depends on none of them:
//!
//! - [`DmaBackend`]: an IOMMU address space: [`IommuInfo`], memory it can map ([`DmaBackend::alloc`]),
//!   map and unmap with a [`DmaDir`], and the faults it observed as typed [`FaultRecord`]s.
//! - [`DeviceAccess`] and [`Mmio`]: a device's regions ([`RegionInfo`]), config space, BARs,
//!   interrupts ([`IrqInfo`], [`IrqKind`], delivered on an [`EventFd`]) and reset.
//! - [`DmaMemory`] and [`DmaBuf`]: memory the device reaches, allocated by the backend and accessed only
//!   by copying (never as a Rust reference: the device may write it at any time).
//! - [`DmaSpace`]: IOVA allocation ([`iova`]: valid ranges, reserved regions, the device's DMA mask
//!   ([`mask_limit`]), alignment) and mapping bookkeeping over any backend; [`DmaMapping`],
//!   [`SgMapping`] and [`IovaReservation`] undo themselves when dropped.
//! - [`BackendError`]: what any of it failed on; a backend's own errors travel inside it.
//! - [`edu_regs`]: the register map of QEMU's `edu` device, shared by its driver and its model.
//!
//! No `unsafe`: eventfds and `poll` go through `rustix`; memory that must be mmapped (VFIO's) is the
//! backend's business.
//!
//! ```
//! use iommu_backend::fake::FakeIommu;
//! use iommu_backend::{DmaBackend, DmaDir, DmaSpace};
//!
//! // A driver step, generic over the backend: hand the device a buffer, get back what it wrote.
//! fn receive<B: DmaBackend>(space: &DmaSpace<B>, device: impl Fn(u64)) -> iommu_backend::Result<Vec<u8>> {
//!     let buf = space.alloc(4096)?;                       // memory this backend can map
//!     let m = space.map(&buf, DmaDir::FromDevice)?;       // an IOVA below the DMA mask
//!     device(m.iova());                                   // "the device writes there"
//!     drop(m);                                            // unmapped: the device cannot reach it
//!     buf.to_vec(0, 5)
//! }
//!
//! let iommu = FakeIommu::new();
//! let space = DmaSpace::new(&iommu, &[])?.with_dma_mask(28);
//! let got = receive(&space, |iova| iommu.dma_write(iova, b"hello").unwrap())?;
//! assert_eq!(got, b"hello");
//! # Ok::<(), iommu_backend::BackendError>(())
//! ```

pub mod backend;
pub mod dma;
pub mod edu_regs;
mod error;
mod eventfd;
pub mod fake;
mod fault;
pub mod info;
pub mod iova;
pub mod memory;
mod types;

pub use backend::{
    DeviceAccess, DmaBackend, Mmio, CONFIG_REGION, PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, PCI_COMMAND_MASTER,
    PCI_COMMAND_MEMORY,
};
pub use dma::{DmaMapping, DmaSpace, DmaStats, IovaReservation, MapOptions, SgMapping};
pub use error::{error_chain, BackendError, Result};
pub use eventfd::EventFd;
pub use fault::FaultRecord;
pub use info::{region_name, DeviceInfo, IommuInfo, IovaRange, IrqInfo, IrqKind, RegionInfo};
pub use memory::{DmaBuf, DmaMemory, HeapMemory};
pub use types::{mask_limit, Access, DmaDir, HugePages, HUGEPAGE_2M};
