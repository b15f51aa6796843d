//! # iommu-sim: a software IOMMU
//!
//! A model of what an IOMMU does, complete enough to run drivers against and small enough to read:
//!
//! - **Memory and devices** ([`memory`], [`Rid`]): sparse physical memory; devices identified by the PCIe
//!   requester ID the IOMMU sees on every DMA.
//! - **Domains** ([`Sim::create_domain`], [`Sim::attach_groups`]): one address space per IOMMU group, built
//!   from an [`iommu_groups::Prediction`], in one of three modes ([`DomainMode`]): translated, identity
//!   (passthrough) or blocked.
//! - **Page tables** ([`pagetable`]): 4 levels, 4 KiB / 2 MiB / 1 GiB leaves, read/write permissions,
//!   overlap checks, empty tables freed.
//! - **IOTLB** ([`iotlb`]): set-associative, tagged by domain, LRU; range, domain and global
//!   invalidation; strict or lazy ([`Invalidation`], a flush queue on a simulated clock).
//! - **Faults** ([`fault`]): a blocked access never touches memory; it is recorded with requester ID,
//!   address, access kind and a VT-d fault reason in a bounded log that counts what it drops.
//! - **DMA API** ([`dma`]): `map_single`, `map_sg` (scattered buffers coalesced into one IOVA range),
//!   unmaps, syncs, DMA masks, and swiotlb-style **bounce buffers** ([`bounce`]) for identity domains.
//! - **Devices** ([`edu`]): QEMU's `edu` device, doing DMA through the IOMMU with its requester ID.
//! - **Sharing** ([`shared`]): [`SimIommu`] maps host buffers by IOVA for one domain and [`SharedEdu`]
//!   exposes BAR0 through `&self` — the two shapes a VFIO-style driver framework needs.
//! - **The tour** ([`tour()`]): the four mechanisms (translation, bounce buffers, coalescing,
//!   isolation) run on the model, as a serializable report.
//! - **The driver contract** ([`backend`]): `iommu-backend`'s `DmaBackend` and `DeviceAccess` on a
//!   domain and the edu model, so drivers written for VFIO run here unchanged; faults come out as typed
//!   records.
//!
//! The model is pure: no file system, no wall clock, no threads, no `unsafe`. Only [`backend`] touches
//! the operating system, for the eventfds interrupts are delivered on.
//!
//! ```
//! use iommu_sim::{Access, DmaDir, DomainMode, FaultReason, Rid, Sim};
//!
//! let mut sim = Sim::default();
//! let nic = Rid::new(0x01, 0x00, 0).unwrap();          // 01:00.0
//! let other = Rid::new(0x02, 0x00, 0).unwrap();        // 02:00.0, another group
//! for rid in [nic, other] {
//!     let d = sim.create_domain(DomainMode::Translated);
//!     sim.attach(rid, d)?;
//! }
//!
//! // A buffer above 4 GiB; the NIC has a 32-bit DMA mask, the IOMMU gives it a low IOVA.
//! let buf = 0x1_2345_6000;
//! sim.memory().write(buf, b"packet")?;
//! let m = sim.map_single(nic, buf, 6, DmaDir::ToDevice)?;
//! assert!(m.addr() < 1 << 32);
//! let mut got = [0u8; 6];
//! sim.device_read(nic, m.addr(), &mut got)?;              // the device reads through the IOMMU
//! assert_eq!(&got, b"packet");
//!
//! // The other device uses the same address: its domain maps nothing there.
//! let err = sim.device_read(other, m.addr(), &mut got).unwrap_err();
//! let f = sim.faults().entries().last().unwrap();
//! assert_eq!((f.rid, f.reason, f.vtd_code), (other, FaultReason::NotMapped, 0x06));
//! assert_eq!(f.access, Access::Read);
//! sim.unmap_single(m)?;
//! # let _ = err;
//! # Ok::<(), iommu_sim::SimError>(())
//! ```

pub mod backend;
pub mod bounce;
pub mod dma;
pub mod edu;
mod error;
pub mod fault;
pub mod iotlb;
pub mod iova;
pub mod memory;
pub mod pagetable;
pub mod shared;
mod sim;
pub mod tour;
mod types;

pub use bounce::{BounceConfig, BounceStats};
pub use dma::{DmaMapping, DmaParams, DmaSegment, MappingKind, SgEntry, SgMapping};
pub use edu::{Completion, DmaOutcome, Edu};
pub use error::{AddrKind, HostMemoryError, SimError};
pub use fault::{Fault, FaultLog, FaultReason};
pub use iotlb::{IotlbConfig, IotlbStats};
pub use memory::{HostMemory, PhysMemory, VecMemory};
pub use pagetable::{Leaf, TableStats};
pub use shared::{lock, SharedEdu, SharedSim, SimIommu};
pub use sim::{
    AccessStats, DmaStats, FaultStats, FlushQueueConfig, FlushQueueStats, GroupDevice, GroupDomain, Invalidation,
    MemoryStats, Sim, SimConfig, SimStats, Translation,
};
pub use tour::{tour, TourReport};
pub use types::{mask_limit, Access, DmaDir, DomainId, DomainMode, PageSize, Perm, Rid, IOVA_BITS, PAGE_SIZE};
