//! Draws a host's PCI tree with the IOMMU groups as coloured clusters: as SVG laid out here (no Graphviz
//! needed), or as Graphviz DOT. This is the engine of `iommuctl graph`.
//!
//! The SVG is an indented tree, one row per function in depth-first order (each bridge followed by the
//! functions behind it), so a host with thousands of functions stays a readable list instead of a wide
//! graph. Each row is a box labelled `DDDD:BB:DD.F  name  [driver]`; a connector runs from every bridge to
//! its children; each IOMMU group is a coloured, labelled rectangle behind its member rows (one rectangle
//! per contiguous run of members, same colour and label). Widths come from the longest label at a fixed
//! monospace advance, so nothing overlaps. Every rectangle carries a class (`cluster`, `row`) and its
//! group or address as `data-*` attributes, so tests (and scripts) can find what the layout placed where.
//!
//! Three steps, all pure: [`Model::from_snapshot`] (or [`Model::with_groups`] for groups that are not the
//! kernel's) names and orders the functions, [`layout()`] places them, [`svg()`] and [`dot()`] write them.
//! Text from the host (names, drivers, group types, the kernel release) goes through [`clean`] and is
//! escaped for the format, so it reads back as the host said it, less the control characters.
//!
//! ```
//! use iommu_graph::{Model, Title};
//! use iommu_host::{HostDevice, KernelGroup, Snapshot};
//! use iommu_pci::PciIds;
//!
//! let bridge = HostDevice::new("00:1c.0".parse().unwrap());
//! let nic = HostDevice { parent: Some(bridge.address), ..HostDevice::new("01:00.0".parse().unwrap()) };
//! let group = KernelGroup { id: 7, kind: Some("DMA".into()), reserved_regions: vec![], devices: vec![nic.address] };
//! let snap = Snapshot { devices: vec![bridge, nic], groups: vec![group], ..Snapshot::default() };
//!
//! let title = Title { kernel: Some("6.12.0".into()), predicted_from: None };
//! let model = Model::from_snapshot(&snap, &PciIds::empty(), title);
//! assert_eq!(model.nodes[1].depth, 1, "the NIC sits below its bridge");
//!
//! let svg = iommu_graph::svg(&model);
//! assert!(svg.contains("IOMMU groups: kernel 6.12.0, 2 PCI functions, 1 group"));
//! assert!(svg.contains(r#"<rect class="cluster" data-group="7""#));
//! let dot = iommu_graph::dot(&model);
//! assert!(dot.contains("subgraph cluster_g7") && dot.contains(r#""0000:00:1c.0" -> "0000:01:00.0";"#));
//! ```

mod layout;
mod model;
mod render;
mod text;

pub use layout::{layout, Cluster, Layout, Rect, PALETTE};
pub use model::{Group, Model, Node, Title, MAX_NAME_COLS};
pub use render::{dot, svg};
pub use text::{clean, cols, dot_escape, xml_escape};

#[cfg(test)]
mod tests;
