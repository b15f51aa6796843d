//! Reads a Linux host into the iommuctl model: PCI functions from `sys/bus/pci/devices` (config space,
//! driver, driver_override, reset methods, boot VGA, NUMA node, SR-IOV, network interfaces), the device
//! tree from their canonical paths, the kernel's IOMMU groups with type and reserved regions, IOMMU
//! units, ACPI tables and the kernel command line.
//!
//! Every read takes a root directory, so a test can point it at a tree it built, and everything read
//! lands in a [`Snapshot`], which serializes to one versioned JSON file and loads back.
//!
//! ```no_run
//! let snap = iommu_host::read_host(std::path::Path::new("/")).unwrap();
//! for g in &snap.groups {
//!     println!("group {}: {} functions", g.id, g.devices.len());
//! }
//! ```

pub mod bind;
pub mod driver;
pub mod journal;
pub mod lspci;
pub mod mounts;
pub mod nextboot;
pub mod persist;
mod read;
pub mod readiness;
pub mod safety;
mod snapshot;

/// A group's reserved regions, defined once in [`iommu_pci::regions`].
pub use iommu_pci::regions::ReservedRegion;
pub use lspci::{LspciDump, LspciError};
pub use read::{read_host, read_host_with, Detail, HostError};
pub use snapshot::{
    Firmware, HostDevice, KernelGroup, KernelInfo, Snapshot, SnapshotError, Unreadable, FORMAT, VERSION,
};
