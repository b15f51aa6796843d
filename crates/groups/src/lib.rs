//! Kernel-equivalent IOMMU group prediction for PCI topologies, with explanations as data.
//!
//! A [`Topology`] holds PCI functions (built from decoded config space) and their upstream bridges.
//! [`predict`] runs the grouping rules Linux applies when it adds PCI devices to an IOMMU (probe order,
//! requester-ID walk, upstream ACS climb, DMA aliases, multifunction siblings, ACS and alias quirks, the
//! DMA device of Intel VMD domains ([`vmd`]) and the aliases and coverage of AMD's ACPI IVRS table
//! ([`ivrs`])) and returns groups plus the [`Evidence`] behind every placement; [`explain`] turns evidence
//! into sentences.
//!
//! Pure: no file system, no clock.
//!
//! ```
//! use iommu_groups::{predict, Device, Pcie, Platform, RuleSet, Topology};
//! use iommu_pci::{AcsState, HeaderKind, PortType};
//! let dev = |a: &str, parent: Option<&str>, header, pt| Device {
//!     address: a.parse().unwrap(),
//!     parent: parent.map(|p| p.parse().unwrap()),
//!     vendor: 0x1b36, device: 0x000c, subsystem: None, class: 0x060400,
//!     header, multifunction: false, is_virtfn: false,
//!     pcie: Pcie::Yes(pt), acs: AcsState::Absent,
//! };
//! // A root port without ACS and the endpoint below it share a group.
//! let t = Topology::new(vec![
//!     dev("00:1c.0", None, HeaderKind::Bridge, PortType::RootPort),
//!     dev("01:00.0", Some("00:1c.0"), HeaderKind::Normal, PortType::Endpoint),
//! ]).unwrap();
//! let p = predict(&t, &Platform::default(), RuleSet::Linux6);
//! assert_eq!(p.groups.len(), 1);
//! assert_eq!(p.groups[0].devices.len(), 2);
//! ```

mod acs;
mod explain;
pub mod ivrs;
mod model;
mod predict;
pub mod quirks;
pub mod vmd;
mod whatif;

pub use acs::{acs_verdict, AcsVerdict, REQUIRED};
pub use explain::{explain, kind_of, Explanation};
pub use model::{
    acs_override_flavour, AcsOverride, ConfigAcs, Device, DeviceSpec, Pcie, Platform, Topology, TopologyError,
};
pub use predict::{acs_verdicts, predict, Evidence, Hop, Join, PredictedGroup, Prediction, RuleSet};
pub use whatif::{slots, what_if, Change, GroupChange, Slot, VerdictChange, WhatIf};
