//! iommu-graph's integration tests, one binary (`cargo test -p iommu-graph --test it`): the drawing checked
//! on models built in code, and what headless Chromium shows of it.

mod util;

mod drawing;
mod screenshot;
