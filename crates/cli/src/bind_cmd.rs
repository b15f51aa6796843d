//! bind, restore, status and persist.

use std::path::{Path, PathBuf};

use anyhow::Context;
use iommu_host::bind::{self, Action, BindError};
use iommu_host::driver::{DriverName, Sysfs};
use iommu_host::journal::StateDir;
use iommu_host::{persist, read_host, Snapshot};
use iommu_pci::PciAddress;
use serde_json::json;

use crate::commands::print_json;
use crate::exit::{fail, Exit};
use crate::output::{sanitize, warn, Deferred};
use crate::Cli;

fn live_root(cli: &Cli, what: &str) -> anyhow::Result<PathBuf> {
    if cli.from.is_some() {
        return Err(fail(Exit::BadInput, format!("{what} changes a live host; it cannot run --from a snapshot")));
    }
    if cli.from_lspci.is_some() {
        return Err(fail(Exit::BadInput, format!("{what} changes a live host; it cannot run --from-lspci a dump")));
    }
    Ok(cli.root.clone().unwrap_or_else(|| PathBuf::from("/")))
}

/// `--driver`, checked before anything is locked, read or changed (exit 2 when it is not a driver name).
fn driver_arg(driver: &str) -> anyhow::Result<DriverName> {
    DriverName::parse(driver).map_err(|e| fail(Exit::BadInput, format!("--driver: {e}")))
}

fn read(root: &Path) -> anyhow::Result<Snapshot> {
    let snap = read_host(root).with_context(|| format!("reading the host below {}", root.display()))?;
    crate::commands::warn_unreadable(&snap);
    Ok(snap)
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

/// The command's own result first (a refusal or failure keeps its exit code); then the output's verdict.
fn finish(result: anyhow::Result<Exit>, out: Deferred, what: &str) -> anyhow::Result<Exit> {
    let code = result?;
    out.finish(what)?;
    Ok(code)
}

fn waiting(state: &StateDir) -> impl FnOnce() + '_ {
    move || {
        warn(&format!(
            "waiting for another iommuctl to finish (lock {})",
            sanitize(&state.lock_path().display().to_string())
        ))
    }
}

/// `iommuctl bind`: output goes through [`Deferred`], so a failing stdout never stops a bind half way.
pub fn bind(cli: &Cli, target: &str, driver: &str, dry_run: bool, force: bool) -> anyhow::Result<Exit> {
    let mut out = Deferred::new();
    let result = bind_inner(cli, target, driver, dry_run, force, &mut out);
    finish(result, out, "bind")
}

fn bind_inner(
    cli: &Cli,
    target: &str,
    driver: &str,
    dry_run: bool,
    force: bool,
    out: &mut Deferred,
) -> anyhow::Result<Exit> {
    let root = live_root(cli, "bind")?;
    let driver = driver_arg(driver)?;
    let state = StateDir::new(&cli.state_dir);
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
    if cli.json && dry_run {
        out.json(&json!({ "plan": plan, "dry_run": true }));
    } else if !cli.json {
        print_plan(out, &plan);
    }
    if !plan.holders.is_empty() && !force {
        return Err(BindError::Refused { group: plan.group, holders: plan.holders.clone() }.into());
    }
    if dry_run {
        return Ok(Exit::Ok);
    }
    let core = Sysfs::new(&root);
    let quiet = cli.json;
    bind::execute(&core, &state, &plan, &mut |l: &str| {
        if !quiet {
            out.line(&sanitize(l))
        }
    })?;
    let after = read(&root)?;
    let st = bind::group_status(&after).into_iter().find(|g| g.group == plan.group);
    if cli.json {
        out.json(&json!({ "plan": plan, "status": st }));
    } else if let Some(st) = &st {
        if st.viable {
            out.line(&format!("group {} is viable for VFIO: /dev/vfio/{}", st.group, st.group));
        } else {
            for (a, d) in &st.blockers {
                out.line(&format!("group {} is not viable: {a} is on {}", st.group, sanitize(d)));
            }
        }
    }
    Ok(Exit::Ok)
}

/// `iommuctl restore` (output deferred, as for bind).
pub fn restore(cli: &Cli, target: Option<&str>) -> anyhow::Result<Exit> {
    let mut out = Deferred::new();
    let result = restore_inner(cli, target, &mut out);
    finish(result, out, "restore")
}

fn restore_inner(cli: &Cli, target: Option<&str>, out: &mut Deferred) -> anyhow::Result<Exit> {
    let root = live_root(cli, "restore")?;
    let state = StateDir::new(&cli.state_dir);
    let _lock = state.lock(waiting(&state))?;
    let only: Option<Vec<PciAddress>> = match target {
        None => None,
        Some(t) => {
            let snap = read(&root)?;
            let a = bind::resolve_target(&snap, t)?;
            Some(snap.group_of(a).map(|g| g.devices.clone()).unwrap_or_else(|| vec![a]))
        }
    };
    let report = bind::restore(&Sysfs::new(&root), &state, only.as_deref())?;
    if cli.json {
        out.json(&json!(report));
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

/// `iommuctl status`.
///
/// With `--from SNAPSHOT` it shows the snapshot's groups only: the journal in the state directory belongs
/// to this machine, the snapshot possibly to another, and mixing them would report this machine's bindings
/// against another host's devices. It says so (text) or sets `bound_by_iommuctl` to null (JSON).
pub fn status(cli: &Cli, snap: &Snapshot) -> anyhow::Result<Exit> {
    let groups = bind::group_status(snap);
    if let Some(from) = &cli.from {
        if cli.json {
            print_json(&json!({ "snapshot": from, "bound_by_iommuctl": null, "groups": groups }))?;
            return Ok(Exit::Ok);
        }
        let mut o = format!(
            "groups of the snapshot {}; devices bound by iommuctl are not shown (the journal in {} is this \
             machine's, not the snapshot's)\n",
            sanitize(&from.display().to_string()),
            sanitize(&cli.state_dir.display().to_string())
        );
        for g in groups.iter().filter(|g| !g.on_vfio.is_empty()) {
            print_group(&mut o, g);
        }
        crate::output::stdout(&o)?;
        return Ok(Exit::Ok);
    }
    let state = StateDir::new(&cli.state_dir);
    let journal = state.load()?;
    if cli.json {
        print_json(&json!({ "bound_by_iommuctl": journal.entries, "groups": groups }))?;
        return Ok(Exit::Ok);
    }
    let mut o = String::new();
    if journal.entries.is_empty() {
        o.push_str("no devices bound by iommuctl\n");
    }
    for e in &journal.entries {
        let now = snap.device(e.address).and_then(|d| d.driver.clone()).unwrap_or_else(|| "no driver".into());
        o.push_str(&format!(
            "{}  bound to {} (now {}), was {}\n",
            e.address,
            e.bound_to,
            sanitize(&now),
            e.original_driver.as_ref().map_or("no driver", |d| d.as_str())
        ));
    }
    for g in groups.iter().filter(|g| !g.on_vfio.is_empty() || journal.entries.iter().any(|e| e.group == Some(g.group)))
    {
        print_group(&mut o, g);
    }
    crate::output::stdout(&o)?;
    Ok(Exit::Ok)
}

fn print_group(o: &mut String, g: &bind::GroupStatus) {
    if g.viable {
        o.push_str(&format!("group {}: viable\n", g.group));
    } else {
        let b: Vec<String> = g.blockers.iter().map(|(a, d)| format!("{a} on {}", sanitize(d))).collect();
        o.push_str(&format!("group {}: NOT viable ({})\n", g.group, b.join(", ")));
    }
}

/// `iommuctl persist` (output deferred, as for bind).
pub fn persist(cli: &Cli, target: Option<&str>, remove: bool, dry_run: bool, driver: &str) -> anyhow::Result<Exit> {
    let mut out = Deferred::new();
    let result = persist_inner(cli, target, remove, dry_run, driver, &mut out);
    finish(result, out, "persist")
}

fn persist_inner(
    cli: &Cli,
    target: Option<&str>,
    remove: bool,
    dry_run: bool,
    driver: &str,
    out: &mut Deferred,
) -> anyhow::Result<Exit> {
    let root = live_root(cli, "persist")?;
    let driver = driver_arg(driver)?;
    let state = StateDir::new(&cli.state_dir);
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
    if cli.json {
        out.json(&json!({ "dry_run": dry_run, "files": changes }));
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
        if !cli.json {
            out.line("done; the binding applies from the next boot (or `udevadm trigger` for hot-plugged devices)");
        }
    }
    Ok(Exit::Ok)
}
