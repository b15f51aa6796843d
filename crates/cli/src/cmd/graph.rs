//! `iommuctl graph`: the PCI tree with the IOMMU groups drawn as coloured clusters, as SVG or Graphviz DOT.
//! The drawing is `iommu_graph`'s; this module says what the title claims and hands the bytes on.

use std::path::Path;

use iommu_graph::{Group, Model, Title};

use crate::output::Outcome;
use crate::source::Source;

/// Output formats of `graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// SVG drawn by iommuctl: an indented PCI tree with IOMMU groups as coloured clusters.
    Svg,
    /// Graphviz DOT: one `cluster_gN` subgraph per group, an edge from each bridge to each child.
    Dot,
}

/// `iommuctl graph` on a host read at the level `list` reads (`--json` is refused up front).
pub fn run(src: &Source, format: Format, output: Option<&Path>) -> anyhow::Result<Outcome> {
    let ids = src.ids();
    let model = if !src.has_kernel_groups() {
        // A dump without `IOMMU group:` lines has no kernel groups: draw the groups Linux would form, and
        // say so.
        let predicted = src.predict()?;
        let groups: Vec<Group> = predicted
            .prediction
            .groups
            .iter()
            .map(|g| Group { id: g.id, kind: Some("predicted".into()), devices: g.devices.clone() })
            .collect();
        let title = Title { kernel: None, predicted_from: Some("an lspci dump".into()) };
        Model::with_groups(&src.snapshot, &groups, &ids, title)
    } else {
        Model::from_snapshot(&src.snapshot, &ids, Title::of(&src.snapshot))
    };
    let text = match format {
        Format::Svg => iommu_graph::svg(&model),
        Format::Dot => iommu_graph::dot(&model),
    };
    Ok(Outcome::bytes(text.into_bytes(), output.map(Path::to_path_buf)))
}
