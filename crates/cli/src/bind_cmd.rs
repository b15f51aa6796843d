//! bind, restore, status and persist.

use std::path::{Path, PathBuf};

use anyhow::Context;
use iommu_host::bind::{self, Action, BindError};
use iommu_host::driver::Sysfs;
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

fn read(root: &Path) -> anyhow::Result<Snapshot> {
    read_host(root).with_context(|| format!("reading the host below {}", root.display()))
}

fn print_plan(out: &mut Deferred, p: &bind::Plan) {
    out.line(&format!("IOMMU group {}: bind to {}", p.group, sanitize(&p.driver)));
    for d in &p.devices {
        let cur = d.driver.as_deref().map(sanitize).unwrap_or_else(|| "no driver".into());
        let what = match d.action {
            Action::Rebind => format!("{cur} -> {}", sanitize(&p.driver)),
            Action::AlreadyBound => format!("already on {}", sanitize(&p.driver)),
            Action::SkipBridge => format!("bridge, stays on {cur}"),
        };
        out.line(&format!("  {}  {what}", d.address));
    }
    for h in &p.holders {
        out.line(&format!("  ! {}: {}", h.device, sanitize(&h.what)));
    }
}

/// `iommuctl bind`: output goes through [`Deferred`], so a failing stdout never stops a bind half way.
pub fn bind(cli: &Cli, target: &str, driver: &str, dry_run: bool, force: bool) -> anyhow::Result<Exit> {
    let mut out = Deferred::new();
    let result = bind_inner(cli, target, driver, dry_run, force, &mut out);
    finish(result, out, "bind")
}

/// The command's own result first (a refusal or failure keeps its exit code); then the output's verdict.
fn finish(result: anyhow::Result<Exit>, out: Deferred, what: &str) -> anyhow::Result<Exit> {
    let code = result?;
    out.finish(what)?;
    Ok(code)
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
    let state = StateDir::new(&cli.state_dir);
    let _lock = if dry_run {
        None
    } else {
        Some(state.lock(|| {
            warn(&format!(
                "waiting for another iommuctl to finish (lock {})",
                sanitize(&cli.state_dir.join("lock").display().to_string())
            ))
        })?)
    };
    if let Some(ms) = bind::test_hook("pause-after-lock") {
        warn(&format!("test hook: holding the lock for {ms} ms"));
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let snap = read(&root)?;
    let addr = bind::resolve_target(&snap, target)?;
    let plan = bind::plan(&root, &snap, addr, driver)?;
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
    let _lock = state.lock(|| warn("waiting for another iommuctl to finish"))?;
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
        if report.restored.is_empty() && report.failed.is_empty() {
            out.line("nothing to restore");
        }
        for a in &report.restored {
            out.line(&format!("{a} restored"));
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
pub fn status(cli: &Cli, snap: &Snapshot) -> anyhow::Result<Exit> {
    let state = StateDir::new(&cli.state_dir);
    let journal = state.load()?;
    let groups = bind::group_status(snap);
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
            sanitize(&e.bound_to),
            sanitize(&now),
            e.original_driver.as_deref().map(sanitize).unwrap_or_else(|| "no driver".into())
        ));
    }
    for g in groups.iter().filter(|g| !g.on_vfio.is_empty() || journal.entries.iter().any(|e| e.group == Some(g.group)))
    {
        if g.viable {
            o.push_str(&format!("group {}: viable\n", g.group));
        } else {
            let b: Vec<String> = g.blockers.iter().map(|(a, d)| format!("{a} on {}", sanitize(d))).collect();
            o.push_str(&format!("group {}: NOT viable ({})\n", g.group, b.join(", ")));
        }
    }
    crate::output::stdout(&o)?;
    Ok(Exit::Ok)
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
    let changes = if remove {
        persist::plan_remove()
    } else {
        let snap = read(&root)?;
        let addr = bind::resolve_target(&snap, target.unwrap_or_default())?;
        let plan = bind::plan(&root, &snap, addr, driver)?;
        let devs: Vec<(PciAddress, String)> = plan
            .devices
            .iter()
            .filter(|d| d.action != Action::SkipBridge)
            .map(|d| (d.address, driver.to_string()))
            .collect();
        // Host drivers: the current driver, or the original one from the journal when already bound.
        let journal = StateDir::new(&cli.state_dir).load()?;
        let host: Vec<String> = plan
            .devices
            .iter()
            .filter(|d| d.action != Action::SkipBridge)
            .filter_map(|d| journal.get(d.address).and_then(|e| e.original_driver.clone()).or(d.driver.clone()))
            .collect();
        persist::plan_persist(&root, &devs, &host)
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
