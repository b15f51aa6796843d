//! `iommuctl restore [TARGET | --all]`: journaled devices back on their original drivers (output
//! deferred, as for bind).

use std::path::Path;

use iommu_host::bind;
use iommu_host::driver::Sysfs;
use iommu_host::journal::StateDir;
use iommu_pci::PciAddress;

use crate::cmd::bind::{finish, read, waiting};
use crate::config::Config;
use crate::exit::{fail, Exit};
use crate::output::{sanitize, Deferred, Outcome};

/// `iommuctl restore`.
pub fn run(cfg: &Config, root: &Path, target: Option<&str>) -> anyhow::Result<Outcome> {
    let mut out = Deferred::new();
    let result = restore_inner(cfg, root, target, &mut out);
    finish(result, out, "restore")
}

fn restore_inner(cfg: &Config, root: &Path, target: Option<&str>, out: &mut Deferred) -> anyhow::Result<Exit> {
    let state = StateDir::new(&cfg.state_dir);
    let _lock = state.lock(waiting(&state))?;
    let only: Option<Vec<PciAddress>> = match target {
        None => None,
        Some(t) => {
            let snap = read(root)?;
            let a = bind::resolve_target(&snap, t)?;
            Some(snap.group_of(a).map(|g| g.devices.clone()).unwrap_or_else(|| vec![a]))
        }
    };
    let report = bind::restore(&Sysfs::new(root), &state, only.as_deref())?;
    if cfg.json {
        out.json(&report);
    } else {
        if report.restored.is_empty() && report.gone.is_empty() && report.failed.is_empty() {
            out.line("nothing to restore");
        }
        for a in &report.restored {
            out.line(&format!("{a} restored"));
        }
        for a in &report.gone {
            out.line(&format!("{a} no longer exists (hot-unplugged?); nothing to restore, dropped from the journal"));
        }
        for (a, e) in &report.failed {
            out.line(&format!("{a} NOT restored: {}", sanitize(e)));
        }
    }
    if report.failed.is_empty() {
        Ok(Exit::Ok)
    } else {
        Err(fail(
            Exit::Failed,
            format!("{} device(s) could not be restored; they stay in the journal", report.failed.len()),
        ))
    }
}
