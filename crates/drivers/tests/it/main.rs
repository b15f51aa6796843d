//! The integration tests of iommu-drivers, one binary: the edu driver on the in-memory IOMMU and on the
//! software IOMMU of iommu-sim.

mod edu_on_fake_iommu;
mod edu_on_sim;
