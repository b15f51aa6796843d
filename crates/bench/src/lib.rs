//! Synthetic hosts for benchmarking iommuctl.
//!
//! [`generate`] builds a kernel-shaped PCI host of any size: several PCI domains (0000, 0001, an Intel
//! VMD-style domain 10000 and, for large hosts, more segments), root ports with and without ACS, switches,
//! multifunction endpoints, SR-IOV physical functions with virtual functions, and PCIe-to-PCI bridges with
//! conventional devices behind them, all with vendor and device IDs that exist in `pci.ids`.
//!
//! [`Host::devices`] turns it into the grouping model ([`iommu_groups::Device`]), [`config::config_bytes`]
//! into real config-space bytes, and [`sysfs::write_tree`] into a directory shaped like `/sys` and `/proc`
//! on a running kernel, with the IOMMU groups [`iommu_groups::predict`] assigns.
//!
//! ```
//! let host = iommu_bench::generate(200, 1);
//! assert_eq!(host.functions.len(), 200);
//! let devices = iommu_bench::model_devices(200, 1);
//! assert_eq!(devices.len(), 200);
//! ```

pub mod config;
mod model;
mod rng;
pub mod sysfs;

pub use model::{generate, model_devices, AcsKind, Function, Host, Role, Sriov, VMD_DOMAIN};
pub use rng::Rng;
