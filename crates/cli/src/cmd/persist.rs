//! `iommuctl persist TARGET | --remove | --check`: make a group's binding survive reboots (udev rule by
//! address and IDs, and a modprobe softdep), under the state-dir lock (output deferred, as for bind). Every
//! persist first simulates the next boot with all the rules ([`iommu_host::nextboot`]) and refuses what
//! would take the host's boot storage or only display; `--check` runs that simulation alone.

use std::path::Path;

use iommu_host::bind::{self, Action};
use iommu_host::driver::DriverName;
use iommu_host::journal::StateDir;
use iommu_host::nextboot::{self, NextBoot};
use iommu_host::persist::{self, DeviceIds, FileChange, Persisted};
use serde::Serialize;

use crate::cmd::bind::{driver_arg, finish, read, waiting};
use crate::config::Config;
use crate::exit::{fail, Exit};
use crate::output::{sanitize, warn, Deferred, Outcome, Sorted};

/// `persist`'s arguments.
#[derive(Clone, Copy)]
pub struct PersistArgs<'a> {
    /// A PCI address or vendor:device ID.
    pub target: Option<&'a str>,
    /// Remove everything iommuctl persisted.
    pub remove: bool,
    /// Simulate the next boot and change nothing.
    pub check: bool,
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
    next_boot: Option<&'a NextBoot>,
}

/// `persist --check --json`.
#[derive(Serialize)]
struct CheckReport<'a> {
    next_boot: &'a NextBoot,
}

/// `iommuctl persist`.
pub fn run(cfg: &Config, root: &Path, a: PersistArgs<'_>) -> anyhow::Result<Outcome> {
    let mut out = Deferred::new();
    let result = persist_inner(cfg, root, &a, &mut out);
    finish(result, out, "persist")
}

fn persist_inner(cfg: &Config, root: &Path, a: &PersistArgs<'_>, out: &mut Deferred) -> anyhow::Result<Exit> {
    let PersistArgs { target, remove, check, dry_run, driver } = *a;
    let root = root.to_path_buf();
    if check {
        return check_inner(cfg, &root, out);
    }
    let driver = driver_arg(driver)?;
    let state = StateDir::new(&cfg.state_dir);
    // The files are read, merged and rewritten whole: without the lock, concurrent runs lose each other's rules.
    let _lock = if dry_run { None } else { Some(state.lock(waiting(&state))?) };
    let mut boot = None;
    let changes = if remove {
        persist::plan_remove()
    } else {
        let snap = read(&root)?;
        let addr = bind::resolve_target(&snap, target.unwrap_or_default())?;
        let plan = bind::plan(&root, &snap, addr, &driver)?;
        let kept: Vec<_> = plan.devices.iter().filter(|d| d.action != Action::SkipBridge).collect();
        let devs: Vec<Persisted> = kept
            .iter()
            .map(|d| Persisted {
                address: d.address,
                driver: driver.clone(),
                ids: snap.device(d.address).and_then(|h| DeviceIds::from_config(&h.config)),
                group: Some(nextboot::group_now(&snap, d.address)),
            })
            .collect();
        // Host drivers: the current driver, or the original one from the journal when already bound.
        let journal = state.load()?;
        let host: Vec<DriverName> = kept
            .iter()
            .filter_map(|d| journal.get(d.address).and_then(|e| e.original_driver.clone()).or(d.driver.clone()))
            .collect();
        // The next boot with every rule, old and new: refused before anything is written.
        let all = persist::merged(&root, &devs)?;
        let sim = nextboot::simulate(&root, &snap, &all);
        if sim.refused() {
            return Err(refusal(&sim));
        }
        let changes = persist::plan_files(&root, &all, &host)?;
        boot = Some(sim);
        changes
    };
    if cfg.json {
        out.json(&Sorted(PersistReport { dry_run, files: &changes, next_boot: boot.as_ref() }));
    } else {
        if let Some(b) = &boot {
            for w in warnings(b) {
                warn(&sanitize(&format!("warning: {w}")));
            }
        }
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
            out.line(if remove {
                "done; from the next boot nothing is bound by iommuctl's rules"
            } else {
                "done; the binding applies from the next boot (or `udevadm trigger` for hot-plugged devices)"
            });
        }
    }
    Ok(Exit::Ok)
}

/// The refusal: every function that holds what the next boot needs.
fn refusal(sim: &NextBoot) -> anyhow::Error {
    let what: Vec<&str> = sim.refusals.iter().map(|r| r.what.as_str()).collect();
    fail(
        Exit::Refused,
        format!(
            "refusing to persist: at the next boot the rules would take what the host needs: {}; nothing was \
             written (`iommuctl persist --check` shows the whole simulation)",
            what.join("; ")
        ),
    )
}

/// The simulation's warnings, one sentence each.
fn warnings(sim: &NextBoot) -> Vec<String> {
    let mut v: Vec<String> = sim.entries.iter().flat_map(|e| e.warnings.iter().cloned()).collect();
    v.extend(sim.waits.iter().map(|w| w.what.clone()));
    v
}

/// `persist --check`: the next boot with what is persisted, nothing changed.
fn check_inner(cfg: &Config, root: &Path, out: &mut Deferred) -> anyhow::Result<Exit> {
    let persisted = persist::persisted(root)?;
    let snap = read(root)?;
    let sim = nextboot::simulate(root, &snap, &persisted);
    if cfg.json {
        out.json(&Sorted(CheckReport { next_boot: &sim }));
    } else {
        if sim.entries.is_empty() {
            out.line("nothing is persisted");
        }
        for e in &sim.entries {
            let now = e.now.map(|i| i.to_string()).unwrap_or_else(|| "no device".into());
            let what = if e.binds {
                let group: Vec<String> = e.group.iter().map(|a| a.to_string()).collect();
                format!("binds {now} to {} (group: {})", e.driver, group.join(" "))
            } else {
                format!("binds nothing ({now})")
            };
            out.line(&sanitize(&format!("{}: {what}", e.address)));
        }
        for w in warnings(&sim) {
            out.line(&sanitize(&format!("warning: {w}")));
        }
        for r in &sim.refusals {
            out.line(&sanitize(&format!("refused: {}", r.what)));
        }
    }
    Ok(if sim.refused() {
        Exit::Refused
    } else if sim.warned() {
        Exit::Negative
    } else {
        Exit::Ok
    })
}
