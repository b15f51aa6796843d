//! iommu-pci's integration tests, one binary (`cargo test -p iommu-pci --test it`): the `PciIds` parser
//! against generated databases and against the system's installed one.

mod ids_proptest;
mod ids_system;
