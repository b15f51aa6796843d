//! The integration tests of iommu-groups, one binary: the grouping model on hand-built topologies
//! (`predict`), its agreement with the 6.12.117 sources where an audit found divergences (`kernel_612`),
//! Intel VMD domains (`vmd`) and AMD's ACPI IVRS aliases and coverage (`ivrs`).

mod ivrs;
mod kernel_612;
mod predict;
mod vmd;
