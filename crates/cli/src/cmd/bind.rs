//! `iommuctl bind TARGET`: every endpoint of TARGET's IOMMU group onto one driver (vfio-pci), planned,
//! refused when the host needs a member, journaled, rolled back on failure. Output goes through
//! [`Deferred`]: a failing stdout never stops a bind half way.

use std::path::Path;

use anyhow::Context;
use iommu_host::bind::{self, Action, BindError, GroupStatus, Plan};
use iommu_host::driver::{DriverName, Sysfs};
use iommu_host::journal::StateDir;
use iommu_host::{read_host, Snapshot};
use iommu_pci::PciAddress;
use serde::Serialize;

use crate::config::Config;
use crate::exit::{fail, Exit};
use crate::output::{sanitize, warn, Deferred, Outcome, Sorted};
use crate::source::warn_unreadable;

/// `bind`'s arguments.
#[derive(Clone, Copy)]
pub struct BindArgs<'a> {
    /// A PCI address or a vendor:device ID matching one device.
    pub target: &'a str,
    /// The driver to bind to.
    pub driver: &'a str,
    /// Print the plan and change nothing.
    pub dry_run: bool,
    /// Bind even when something holds a member.
    pub force: bool,
}

/// `bind --dry-run --json`.
#[derive(Serialize)]
struct DryRun<'a> {
    plan: &'a Plan,
    dry_run: bool,
}

/// `bind --json` after the change.
#[derive(Serialize)]
struct Bound<'a> {
    plan: &'a Plan,
    status: Option<&'a GroupStatus>,
    /// The VFIO device cdevs of the group's members (kernels with `CONFIG_VFIO_DEVICE_CDEV`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cdevs: Vec<(PciAddress, String)>,
}

/// `--driver`, checked before anything is locked, read or changed (exit 2 when it is not a driver name).
pub fn driver_arg(driver: &str) -> anyhow::Result<DriverName> {
    DriverName::parse(driver).map_err(|e| fail(Exit::BadInput, format!("--driver: {e}")))
}

/// Reads the live host in full, warning about files that could not be read.
pub fn read(root: &Path) -> anyhow::Result<Snapshot> {
    let snap = read_host(root).with_context(|| format!("reading the host below {}", root.display()))?;
    warn_unreadable(&snap);
    Ok(snap)
}

/// Says on stderr that the lock is busy.
pub fn waiting(state: &StateDir) -> impl FnOnce() + '_ {
    move || {
        warn(&format!(
            "waiting for another iommuctl to finish (lock {})",
            sanitize(&state.lock_path().display().to_string())
        ))
    }
}

/// The command's own result first (a refusal or failure keeps its exit code); then the output's verdict.
pub fn finish(result: anyhow::Result<Exit>, out: Deferred, what: &str) -> anyhow::Result<Outcome> {
    let code = result?;
    out.finish(what)?;
    Ok(Outcome::done(code))
}

/// `iommuctl bind`.
pub fn run(cfg: &Config, root: &Path, a: BindArgs<'_>) -> anyhow::Result<Outcome> {
    let mut out = Deferred::new();
    let result = bind_inner(cfg, root, &a, &mut out);
    finish(result, out, "bind")
}

fn bind_inner(cfg: &Config, root: &Path, a: &BindArgs<'_>, out: &mut Deferred) -> anyhow::Result<Exit> {
    let BindArgs { target, driver, dry_run, force } = *a;
    let root = root.to_path_buf();
    let driver = driver_arg(driver)?;
    let state = StateDir::new(&cfg.state_dir);
    let _lock = if dry_run { None } else { Some(state.lock(waiting(&state))?) };
    if std::env::var_os("IOMMUCTL_TEST_HOOK").is_some() && !bind::TEST_HOOKS {
        warn("iommuctl: IOMMUCTL_TEST_HOOK ignored: this build has no test hooks (feature iommuctl/test-hooks)");
    }
    #[cfg(feature = "test-hooks")]
    if let Some(ms) = bind::test_hook("pause-after-lock") {
        warn(&format!("test hook: holding the lock for {ms} ms"));
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let snap = read(&root)?;
    let addr = bind::resolve_target(&snap, target)?;
    let plan = bind::plan(&root, &snap, addr, &driver)?;
    if cfg.json && dry_run {
        out.json(&Sorted(DryRun { plan: &plan, dry_run: true }));
    } else if !cfg.json {
        print_plan(out, &plan);
    }
    if !plan.holders.is_empty() && !force {
        return Err(BindError::Refused { group: plan.group, holders: plan.holders.clone() }.into());
    }
    if dry_run {
        return Ok(Exit::Ok);
    }
    let core = Sysfs::new(&root);
    let quiet = cfg.json;
    bind::execute(&core, &state, &plan, &mut |l: &str| {
        if !quiet {
            out.line(&sanitize(l))
        }
    })?;
    let after = read(&root)?;
    let st = bind::group_status(&after).into_iter().find(|g| g.group == plan.group);
    let cdevs: Vec<(PciAddress, String)> = plan
        .devices
        .iter()
        .filter_map(|d| {
            let name = after.device(d.address)?.vfio_cdev.as_ref()?;
            Some((d.address, format!("/dev/vfio/devices/{name}")))
        })
        .collect();
    if cfg.json {
        out.json(&Sorted(Bound { plan: &plan, status: st.as_ref(), cdevs }));
    } else if let Some(st) = &st {
        if st.viable {
            out.line(&format!("group {} is viable for VFIO: /dev/vfio/{}", st.group, st.group));
            for (a, node) in &cdevs {
                out.line(&format!("  {a} device cdev: {}", sanitize(node)));
            }
        } else {
            for (a, d) in &st.blockers {
                out.line(&format!("group {} is not viable: {a} is on {}", st.group, sanitize(d)));
            }
        }
    }
    Ok(Exit::Ok)
}

fn print_plan(out: &mut Deferred, p: &bind::Plan) {
    out.line(&format!("IOMMU group {}: bind to {}", p.group, p.driver));
    for d in &p.devices {
        let cur = d.driver.as_ref().map_or("no driver", |d| d.as_str());
        let what = match d.action {
            Action::Rebind => format!("{cur} -> {}", p.driver),
            Action::AlreadyBound => format!("already on {}", p.driver),
            Action::SkipBridge => format!("bridge, stays on {cur}"),
        };
        out.line(&format!("  {}  {what}", d.address));
    }
    for h in &p.holders {
        out.line(&format!("  ! {}: {}", h.device, sanitize(&h.what)));
    }
}
