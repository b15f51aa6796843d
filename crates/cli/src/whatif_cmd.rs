//! `predict --what-if CHANGE` and `explain ADDR --slots`.

use std::io::Write;

use iommu_groups::{slots as find_slots, what_if as run_what_if, Change};
use iommu_pci::PciAddress;
use serde_json::json;

use crate::commands::{device_or_fail, print_json, run_prediction, topology_of, warn_uncertain, Source};
use crate::exit::{fail, Exit};
use crate::render::sanitize;
use crate::Cli;

fn set(v: &[PciAddress]) -> String {
    format!("{{{}}}", v.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" "))
}

/// `predict --what-if ...`: groups under the changes, diffed against today's prediction.
pub(crate) fn what_if(cli: &Cli, src: &Source, raw: &[String]) -> anyhow::Result<Exit> {
    let changes = raw
        .iter()
        .map(|r| Change::parse(r).map_err(|e| fail(Exit::BadInput, format!("--what-if {}: {e}", sanitize(r)))))
        .collect::<Result<Vec<_>, _>>()?;
    let snap = &src.snapshot;
    // what_if predicts today's groups itself: only the tree is needed here.
    let topology = topology_of(snap)?;
    let mut w = run_what_if(&topology, &snap.platform(), &changes);
    warn_uncertain(&w.today);
    if let Some((major, minor)) = snap.kernel.version() {
        if (major, minor) < (6, 11) && changes.iter().any(|c| matches!(c, Change::ConfigAcs { .. })) {
            w.warnings.insert(
                0,
                format!(
                    "This host runs Linux {major}.{minor}, which ignores pci=config_acs=: under this kernel the \
                     groups stay as they are today."
                ),
            );
        }
    }
    let kernel_differs = !snap.groups.is_empty() && {
        let mut k: Vec<&Vec<PciAddress>> = snap.groups.iter().map(|g| &g.devices).collect();
        let mut t: Vec<&Vec<PciAddress>> = w.today.groups.iter().map(|g| &g.devices).collect();
        k.sort();
        t.sort();
        k != t
    };
    if cli.json {
        let groups: Vec<_> = w.after.groups.iter().map(|g| json!({ "id": g.id, "devices": g.devices })).collect();
        print_json(&json!({
            "params": w.params,
            "today_groups": w.today.groups.len(),
            "groups": groups,
            "changed": w.changed,
            "verdicts": w.verdicts,
            "warnings": w.warnings,
            "today_matches_kernel": (!snap.groups.is_empty()).then_some(!kernel_differs),
        }))?;
        return Ok(Exit::Ok);
    }
    let mut o = String::new();
    o.push_str(&format!("What if the kernel booted with {}:\n", w.params.join(" ")));
    o.push_str(&format!(
        "  today {} groups, then {} groups; {} of today's groups change\n",
        w.today.groups.len(),
        w.after.groups.len(),
        w.changed.len()
    ));
    if kernel_differs {
        o.push_str("  (today's groups are predicted; they differ from the running kernel's: see `predict --diff`)\n");
    }
    for c in &w.changed {
        if c.after.len() == 1 {
            o.push_str(&format!("  {} merges into {}\n", set(&c.today), set(&c.after[0])));
        } else {
            o.push_str(&format!("  {} splits into:\n", set(&c.today)));
            for g in &c.after {
                o.push_str(&format!("      {}\n", set(g)));
            }
        }
    }
    if !w.verdicts.is_empty() {
        o.push_str("ACS answers that change:\n");
        for v in &w.verdicts {
            o.push_str(&format!("  {}: {} -> {}\n", v.device, v.before.describe(), v.after.describe()));
        }
    }
    if !w.warnings.is_empty() {
        o.push_str("Warnings:\n");
        for x in &w.warnings {
            o.push_str(&format!("  ! {x}\n"));
        }
    }
    std::io::stdout().lock().write_all(o.as_bytes())?;
    Ok(Exit::Ok)
}

/// `explain ADDR --slots`: where the device would be alone in its group.
pub(crate) fn slots(cli: &Cli, src: &Source, a: PciAddress) -> anyhow::Result<Exit> {
    let snap = &src.snapshot;
    device_or_fail(snap, a)?;
    let p = run_prediction(snap)?;
    let platform = snap.platform();
    let slots = find_slots(&p.topology, &platform);
    let group: Vec<PciAddress> = p.prediction.group_of(a).map(|g| g.devices.clone()).unwrap_or_default();
    let current = p.topology.parent_of(a).map(|d| d.address);
    // Functions of the same slot that stay with it wherever the card goes.
    let companions: Vec<PciAddress> = group
        .iter()
        .copied()
        .filter(|x| *x != a && x.domain == a.domain && x.bus == a.bus && x.device == a.device)
        .collect();
    if cli.json {
        print_json(&json!({
            "device": a,
            "group": group,
            "current_slot": current,
            "moves_with": companions,
            "slots": slots,
        }))?;
        return Ok(Exit::Ok);
    }
    let mut o = String::new();
    let others: Vec<PciAddress> = group.iter().copied().filter(|x| *x != a).collect();
    if others.is_empty() {
        o.push_str(&format!("{a} is alone in its group already.\n"));
    } else {
        o.push_str(&format!("{a} shares its group with {}.\n", set(&others)));
    }
    if !companions.is_empty() {
        o.push_str(&format!(
            "{} {} on the same card without ACS isolation: {} in one group in any slot.\n",
            set(&companions),
            if companions.len() == 1 { "is another function" } else { "are other functions" },
            if companions.len() == 1 { "the two stay" } else { "they all stay" }
        ));
    }
    if slots.is_empty() {
        o.push_str("This host has no PCIe root or downstream ports: no slot can isolate a device.\n");
        std::io::stdout().lock().write_all(o.as_bytes())?;
        return Ok(Exit::Ok);
    }
    let describe = |s: &iommu_groups::Slot| {
        let occ = if s.occupied_by.is_empty() { "empty".to_string() } else { format!("holds {}", set(&s.occupied_by)) };
        let here = if Some(s.port) == current { "  <- its slot now" } else { "" };
        format!("{} ({}, {occ}){here}", s.port, s.port_type.describe())
    };
    let (good, bad): (Vec<_>, Vec<_>) = slots.iter().partition(|s| s.isolates);
    o.push_str("Slots where a single-function device gets a group of its own:\n");
    if good.is_empty() {
        o.push_str("  none\n");
    }
    for s in &good {
        o.push_str(&format!("  {}\n", describe(s)));
    }
    o.push_str("Slots where it would share a group:\n");
    if bad.is_empty() {
        o.push_str("  none\n");
    }
    for s in &bad {
        let why = match &s.blocker {
            Some((b, v)) => format!("{b}: {}", v.describe()),
            None => "a DMA alias or requester-ID takeover on the way up".to_string(),
        };
        o.push_str(&format!("  {}\n      shares with {}; {why}\n", describe(s), set(&s.shares_with)));
    }
    std::io::stdout().lock().write_all(o.as_bytes())?;
    Ok(Exit::Ok)
}
