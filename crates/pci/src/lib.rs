//! PCI building blocks for iommuctl: addresses, config-space decoding (header, capabilities, PCIe port
//! type, ACS, SR-IOV, ARI, PM, MSI, MSI-X), device names from the system's `pci.ids`, and the kernel facts
//! every crate above shares: which drivers leave a group viable for VFIO ([`drivers`]) and a group's
//! reserved regions ([`regions`]).
//!
//! Everything here is pure: it takes bytes and strings and never touches the file system, except
//! [`PciIds::load_system`], which reads the one database file.
//!
//! ```
//! use iommu_pci::{PciAddress, ConfigInfo};
//! let addr: PciAddress = "00:1c.0".parse().unwrap();
//! assert_eq!(addr.to_string(), "0000:00:1c.0");
//! let mut cfg = vec![0u8; 64];
//! cfg[0..4].copy_from_slice(&[0x86, 0x80, 0x10, 0x15]);
//! let info = ConfigInfo::parse(&cfg).unwrap();
//! assert_eq!((info.vendor_id, info.device_id), (0x8086, 0x1510));
//! ```

mod address;
mod config;
pub mod drivers;
mod ids;
pub mod regions;
pub mod text;

pub use address::{parse_guest_slot, AddressError, PciAddress};
pub use config::{
    acs, cap_id, ext_cap_id, AcsCap, AcsState, Capability, ConfigDepth, ConfigError, ConfigInfo, ExtCapability,
    HeaderKind, MsixInfo, PcieInfo, PortType, SriovInfo,
};
pub use ids::PciIds;
