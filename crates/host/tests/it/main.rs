//! iommu-host's integration tests, one binary (`cargo test -p iommu-host --test it`): reading host trees
//! and lspci dumps, what holds a device, persistence files, and bind, rollback and restore against a
//! simulated driver core (crash consistency included); Intel VMD and AMD IVRS on host trees and a real
//! machine's listing.

mod util;

mod bind;
mod block_holders;
mod crash;
mod ivrs;
mod lspci;
mod nextboot;
mod read;
mod real_machines;
mod safety_persist;
mod vmd;
