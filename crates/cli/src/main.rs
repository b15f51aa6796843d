//! `iommuctl`: see, explain and predict Linux IOMMU groups.
//!
//! Thin glue over the iommu-pci, iommu-groups and iommu-host libraries: parse arguments, load the host
//! (live root or snapshot), call the library, print, and map failures to exit codes.

mod commands;
mod exit;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// See, explain and predict Linux IOMMU groups.
#[derive(Parser, Debug)]
#[command(name = "iommuctl", version, about, long_about = None)]
pub struct Cli {
    /// Read the host below this directory instead of `/` (a copy of sysfs/procfs, or a test tree).
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "from")]
    pub root: Option<PathBuf>,
    /// Run read-only commands on a snapshot file written by `iommuctl snapshot`.
    #[arg(long, global = true, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do (default: list).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List IOMMU groups with their devices, names, classes and drivers.
    List,
    /// Show one device: group, path to the root with ACS per hop, driver, reset, NUMA, reserved regions.
    Show {
        /// PCI address (DDDD:BB:DD.F or BB:DD.F).
        address: String,
    },
    /// Explain why a device's group holds exactly its members, and what would split it.
    Explain {
        /// PCI address (DDDD:BB:DD.F or BB:DD.F).
        address: String,
    },
    /// Predict groups from config space, as the kernel would form them.
    Predict {
        /// Compare with the kernel's groups; exit 1 when they differ.
        #[arg(long)]
        diff: bool,
    },
    /// Write a snapshot of everything the read-only commands need.
    Snapshot {
        /// Output file (`-` for standard output).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            let code = exit::code_for(&e);
            eprintln!("iommuctl: {}", render::sanitize(&format!("{e:#}")));
            code.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
