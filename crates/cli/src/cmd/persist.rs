//! `iommuctl persist TARGET | --remove`: make a group's binding survive reboots (udev rule by address and
//! a modprobe softdep), under the state-dir lock (output deferred, as for bind).

use std::path::Path;

use iommu_host::bind::{self, Action};
use iommu_host::driver::DriverName;
use iommu_host::journal::StateDir;
use iommu_host::persist::{self, FileChange};
use iommu_pci::PciAddress;
use serde::Serialize;

use crate::cmd::bind::{driver_arg, finish, read, waiting};
use crate::config::Config;
use crate::exit::Exit;
use crate::output::{sanitize, Deferred, Outcome, Sorted};

/// `persist`'s arguments.
#[derive(Clone, Copy)]
pub struct PersistArgs<'a> {
    /// A PCI address or vendor:device ID.
    pub target: Option<&'a str>,
    /// Remove everything iommuctl persisted.
    pub remove: bool,
    /// Show the files and change nothing.
    pub dry_run: bool,
    /// The driver to persist.
    pub driver: &'a str,
}

/// `persist --json`.
#[derive(Serialize)]
struct PersistReport<'a> {
    dry_run: bool,
    files: &'a [FileChange],
}

/// `iommuctl persist`.
pub fn run(cfg: &Config, root: &Path, a: PersistArgs<'_>) -> anyhow::Result<Outcome> {
    let mut out = Deferred::new();
    let result = persist_inner(cfg, root, &a, &mut out);
    finish(result, out, "persist")
}

fn persist_inner(cfg: &Config, root: &Path, a: &PersistArgs<'_>, out: &mut Deferred) -> anyhow::Result<Exit> {
    let PersistArgs { target, remove, dry_run, driver } = *a;
    let root = root.to_path_buf();
    let driver = driver_arg(driver)?;
    let state = StateDir::new(&cfg.state_dir);
    // The files are read, merged and rewritten whole: without the lock, concurrent runs lose each other's rules.
    let _lock = if dry_run { None } else { Some(state.lock(waiting(&state))?) };
    let changes = if remove {
        persist::plan_remove()
    } else {
        let snap = read(&root)?;
        let addr = bind::resolve_target(&snap, target.unwrap_or_default())?;
        let plan = bind::plan(&root, &snap, addr, &driver)?;
        let devs: Vec<(PciAddress, DriverName)> = plan
            .devices
            .iter()
            .filter(|d| d.action != Action::SkipBridge)
            .map(|d| (d.address, driver.clone()))
            .collect();
        // Host drivers: the current driver, or the original one from the journal when already bound.
        let journal = state.load()?;
        let host: Vec<DriverName> = plan
            .devices
            .iter()
            .filter(|d| d.action != Action::SkipBridge)
            .filter_map(|d| journal.get(d.address).and_then(|e| e.original_driver.clone()).or(d.driver.clone()))
            .collect();
        persist::plan_persist(&root, &devs, &host)?
    };
    if cfg.json {
        out.json(&Sorted(PersistReport { dry_run, files: &changes }));
    } else {
        for c in &changes {
            let p = sanitize(&root.join(&c.path).display().to_string());
            match &c.content {
                None => out.line(&format!("remove {p}")),
                Some(t) => {
                    out.line(&format!("write {p}:"));
                    for l in t.trim_end().lines() {
                        out.line(&format!("    {}", sanitize(l)));
                    }
                }
            }
        }
    }
    if !dry_run {
        persist::apply(&root, &changes)?;
        if !cfg.json {
            out.line("done; the binding applies from the next boot (or `udevadm trigger` for hot-plugged devices)");
        }
    }
    Ok(Exit::Ok)
}
