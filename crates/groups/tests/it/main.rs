//! The integration tests of iommu-groups, one binary: the grouping model on hand-built topologies
//! (`predict`) and its agreement with the 6.12.117 sources where an audit found divergences (`kernel_612`).

mod kernel_612;
mod predict;
