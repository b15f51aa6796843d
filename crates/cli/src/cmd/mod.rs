//! One module per subcommand. Each takes what it needs (a loaded [`Source`], the [`Config`], its own
//! arguments) and returns an [`Outcome`]: a typed report that `output::emit` renders once, bytes for
//! stdout or `-o`, or nothing more (state changes print as they go). [`run`] is the one dispatch.

pub mod bind;
pub mod cdi;
pub mod check;
pub mod completions;
pub mod diff;
pub mod explain;
pub mod export;
pub mod graph;
pub mod kubevirt;
pub mod libvirt;
pub mod list;
pub mod man;
pub mod persist;
pub mod predict;
pub mod probe;
pub mod qemu;
pub mod restore;
pub mod show;
pub mod sim;
pub mod snapshot;
pub mod status;

use std::path::Path;

use iommu_host::Detail;
use iommu_pci::PciAddress;

use crate::args::Command;
use crate::config::Config;
use crate::exit::{fail, Exit};
use crate::output::Outcome;
use crate::source::Source;

/// Runs the command of a validated configuration.
pub fn run(cfg: &Config) -> anyhow::Result<Outcome> {
    let load = |detail| Source::load(&cfg.origin, detail);
    match &cfg.command {
        Command::Sim => sim::run(),
        Command::Man { subcommand, dir } => man::run(subcommand.as_deref(), dir.as_deref()),
        Command::Completions { shell } => Ok(completions::run(*shell)),
        Command::Bind { target, driver, dry_run, force } => {
            let args = bind::BindArgs { target, driver, dry_run: *dry_run, force: *force };
            bind::run(cfg, live_root(cfg)?, args)
        }
        Command::Restore { target, .. } => restore::run(cfg, live_root(cfg)?, target.as_deref()),
        Command::Persist { target, remove, check, dry_run, driver } => {
            let args = persist::PersistArgs {
                target: target.as_deref(),
                remove: *remove,
                check: *check,
                dry_run: *dry_run,
                driver,
            };
            persist::run(cfg, live_root(cfg)?, args)
        }
        Command::Probe { address, backend } => probe::run(live_root(cfg)?, address, backend.as_deref()),
        Command::List => list::run(&load(Detail::Listing)?, cfg.color),
        Command::Export { format, output } => export::run(&load(Detail::Listing)?, *format, output.as_deref()),
        Command::Graph { format, output } => graph::run(&load(Detail::Listing)?, *format, output.as_deref()),
        Command::Snapshot { output } => snapshot::run(&load(Detail::Full)?, output),
        Command::Status => status::run(cfg, &load(Detail::Full)?),
        Command::Check => check::run(&load(Detail::Full)?, cfg.color),
        Command::Show { address } => {
            let src = load(Detail::Full)?;
            show::run(&src, address_arg(address)?)
        }
        Command::Explain { address, slots } => {
            let src = load(Detail::Full)?;
            let address = address_arg(address)?;
            if *slots {
                explain::slots(&src, address)
            } else {
                explain::run(&src, address)
            }
        }
        Command::Predict { what_if, diff } => {
            let src = load(Detail::Full)?;
            if what_if.is_empty() {
                predict::run(&src, *diff)
            } else {
                predict::what_if(&src, what_if)
            }
        }
        Command::Libvirt { target, guest_slot, iommufd } => {
            libvirt::run(&load(Detail::Full)?, target, *guest_slot, *iommufd)
        }
        Command::Cdi { targets, kind, nodes, output } => {
            cdi::run(&load(Detail::Full)?, targets, kind, *nodes, output.as_deref())
        }
        Command::Kubevirt { targets, resource_prefix } => kubevirt::run(&load(Detail::Full)?, targets, resource_prefix),
        Command::Diff { a, b } => diff::run(&cfg.origin, a, b),
        Command::Qemu { target, guest_slot, iommufd } => {
            qemu::run(&load(Detail::Full)?, target, *guest_slot, *iommufd, cfg.json)
        }
    }
}

/// The live root for a command that changes or opens the host. `Config::from_args` has refused every
/// other origin for these commands; this says so again rather than assume it.
fn live_root(cfg: &Config) -> anyhow::Result<&Path> {
    cfg.origin.live_root().ok_or_else(|| fail(Exit::BadInput, format!("{} needs a live host", cfg.command.name())))
}

fn address_arg(s: &str) -> anyhow::Result<PciAddress> {
    Ok(PciAddress::parse(s)?)
}
