//! `graph`: the PCI tree with the IOMMU groups drawn as coloured clusters, as SVG or Graphviz DOT. The
//! drawing is `iommu_graph`'s; this module loads the host, says what the title claims and writes the file.

use std::path::Path;

use iommu_graph::{Group, Model, Title};
use iommu_host::Detail;

use crate::commands::{load, pci_ids, run_prediction};
use crate::exit::{fail, Exit};
use crate::output::write_output;
use crate::Cli;

/// Output formats of `graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// SVG drawn by iommuctl: an indented PCI tree with IOMMU groups as coloured clusters.
    Svg,
    /// Graphviz DOT: one `cluster_gN` subgraph per group, an edge from each bridge to each child.
    Dot,
}

/// `iommuctl graph`: reads the host at the level `list` does (config header, driver and group links).
pub fn graph(cli: &Cli, format: Format, output: Option<&Path>) -> anyhow::Result<Exit> {
    if cli.json {
        return Err(fail(Exit::BadInput, "--json does not apply to graph: it writes --format svg or dot"));
    }
    let src = load(cli, Detail::Listing)?;
    let ids = pci_ids(&src.root);
    let model = if cli.from_lspci.is_some() {
        // A dump has no kernel groups and no kernel: draw the groups Linux would form, and say so.
        let p = run_prediction(&src.snapshot)?;
        let groups: Vec<Group> = p
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
    write_output(output, text.as_bytes())?;
    Ok(Exit::Ok)
}
