//! The commands: load the host, ask the libraries, print.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use iommu_groups::{acs_verdict, explain, kind_of, predict, Pcie, Prediction, RuleSet, Topology};
use iommu_host::{read_host_with, Detail, ReservedRegion, Snapshot};
use iommu_pci::{ConfigInfo, PciAddress, PciIds};
use serde_json::{json, Value};

use crate::exit::{fail, Exit};
use crate::output::warn;
use crate::render::{names, paint_header, sanitize, use_color};
use crate::{Cli, Command};

const IOMMU_OFF_HINT: &str = "no IOMMU groups: the IOMMU is off or absent. Turn it on in the firmware (Intel VT-d / \
AMD-Vi, sometimes called IOMMU or \"SVM\" settings) and on the kernel command line (intel_iommu=on on Intel; \
amd_iommu is on by default on AMD, amd_iommu=on where it was turned off), then reboot. To try iommuctl without \
one: iommuctl --from snapshots/lab-everything.json list";

/// Where the host comes from.
pub(crate) struct Source {
    pub(crate) root: PathBuf,
    pub(crate) snapshot: Snapshot,
}

pub(crate) fn load(cli: &Cli, detail: Detail) -> anyhow::Result<Source> {
    if let Some(f) = &cli.from_lspci {
        return Ok(Source { root: PathBuf::from("/"), snapshot: crate::from_lspci::load(f)? });
    }
    if let Some(f) = &cli.from {
        let snapshot = Snapshot::load(f).map_err(|e| match e {
            // A read error names the file already; a parse error does not.
            iommu_host::SnapshotError::Read { .. } => anyhow::Error::new(e),
            _ => anyhow::Error::new(e).context(format!("snapshot {}", f.display())),
        })?;
        return Ok(Source { root: PathBuf::from("/"), snapshot });
    }
    let root = cli.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let snapshot =
        read_host_with(&root, detail).with_context(|| format!("reading the host below {}", root.display()))?;
    warn_unreadable(&snapshot);
    Ok(Source { root, snapshot })
}

/// Tells the user on stderr which host files exist but could not be read (at most ten, then a count).
pub(crate) fn warn_unreadable(snap: &Snapshot) {
    for u in snap.unreadable.iter().take(10) {
        warn(&format!("warning: {}: {}", sanitize(&u.path.display().to_string()), sanitize(&u.error)));
    }
    if snap.unreadable.len() > 10 {
        warn(&format!("warning: {} more host files could not be read", snap.unreadable.len() - 10));
    }
}

pub(crate) fn pci_ids(root: &Path) -> PciIds {
    PciIds::load_system(root).or_else(|| PciIds::load_system(Path::new("/"))).unwrap_or_else(PciIds::empty)
}

fn parse_addr(s: &str) -> anyhow::Result<PciAddress> {
    Ok(PciAddress::parse(s)?)
}

pub(crate) use crate::output::{print_json, write_output};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    let command = cli.command.as_ref().unwrap_or(&Command::List);
    if let Command::Snapshot { output } = command {
        return snapshot(&cli, output);
    }
    match command {
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut <Cli as clap::CommandFactory>::command(), "iommuctl", &mut out);
            std::io::stdout().lock().write_all(&out)?;
            return Ok(Exit::Ok);
        }
        Command::Man { subcommand, dir } => return man(subcommand.as_deref(), dir.as_deref()),
        Command::Sim => {
            let report = iommu_sim::tour().context("running the software IOMMU tour")?;
            if cli.json {
                print_json(&report)?;
            } else {
                let mut out = std::io::stdout().lock();
                write!(out, "{report}")?;
            }
            return Ok(if report.ok { Exit::Ok } else { Exit::Failed });
        }
        Command::Bind { target, driver, dry_run, force } => {
            return crate::bind_cmd::bind(&cli, target, driver, *dry_run, *force)
        }
        Command::Restore { target, .. } => return crate::bind_cmd::restore(&cli, target.as_deref()),
        Command::Probe { address } => return crate::probe_cmd::probe(&cli, address),
        Command::Graph { format, output } => return crate::graph_cmd::graph(&cli, *format, output.as_deref()),
        Command::Persist { target, remove, dry_run, driver } => {
            return crate::bind_cmd::persist(&cli, target.as_deref(), *remove, *dry_run, driver)
        }
        _ => {}
    }
    if cli.from_lspci.is_some() {
        let what = match command {
            Command::Check => Some("check"),
            Command::Status => Some("status"),
            Command::Export { .. } => Some("export"),
            Command::Libvirt { .. } => Some("libvirt"),
            Command::Qemu { .. } => Some("qemu"),
            _ => None,
        };
        if let Some(what) = what {
            return Err(crate::from_lspci::needs_kernel_state(what));
        }
    }
    let detail = if matches!(command, Command::List | Command::Export { .. }) { Detail::Listing } else { Detail::Full };
    let src = load(&cli, detail)?;
    match command {
        Command::Status => crate::bind_cmd::status(&cli, &src.snapshot),
        Command::Check => check_cmd(&cli, &src.snapshot),
        Command::List => list(&cli, &src),
        Command::Show { address } => show(&cli, &src, parse_addr(address)?),
        Command::Explain { address, slots: true } => crate::whatif_cmd::slots(&cli, &src, parse_addr(address)?),
        Command::Explain { address, slots: false } => explain_cmd(&cli, &src, parse_addr(address)?),
        Command::Predict { what_if, .. } if !what_if.is_empty() => crate::whatif_cmd::what_if(&cli, &src, what_if),
        Command::Predict { diff, .. } => predict_cmd(&cli, &src, *diff),
        Command::Libvirt { target, guest_slot } => {
            crate::config_cmd::libvirt(cli.json, &src.snapshot, target, *guest_slot)
        }
        Command::Export { format, output } => {
            crate::export_cmd::export(&cli, &src.snapshot, *format, output.as_deref())
        }
        Command::Qemu { target, guest_slot } => crate::config_cmd::qemu(cli.json, &src.snapshot, target, *guest_slot),
        Command::Snapshot { .. }
        | Command::Bind { .. }
        | Command::Restore { .. }
        | Command::Persist { .. }
        | Command::Probe { .. }
        | Command::Graph { .. }
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Sim => {
            unreachable!("handled above")
        }
    }
}

/// The man pages: `iommuctl.1` and one `iommuctl-SUB.1` per subcommand (named like git's).
fn man(sub: Option<&str>, dir: Option<&Path>) -> anyhow::Result<Exit> {
    let mut root = <Cli as clap::CommandFactory>::command();
    root.build();
    let page = |cmd: clap::Command| -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        Ok(out)
    };
    let sub_page = |s: &clap::Command| {
        let name = format!("iommuctl-{}", s.get_name());
        s.clone().display_name(name)
    };
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(Exit::Failed, format!("cannot create {}: {e}", dir.display())))?;
        let mut pages = vec![("iommuctl.1".to_string(), page(root.clone())?)];
        for s in root.get_subcommands().filter(|s| s.get_name() != "help") {
            pages.push((format!("iommuctl-{}.1", s.get_name()), page(sub_page(s))?));
        }
        for (name, bytes) in &pages {
            crate::output::write_file(&dir.join(name), bytes)?;
        }
        warn(&format!("wrote {} man pages to {}", pages.len(), sanitize(&dir.display().to_string())));
        return Ok(Exit::Ok);
    }
    let bytes = match sub {
        None => page(root)?,
        Some(name) => {
            let s = root
                .find_subcommand(name)
                .ok_or_else(|| fail(Exit::BadInput, format!("`{}` is not an iommuctl subcommand", sanitize(name))))?;
            page(sub_page(s))?
        }
    };
    std::io::stdout().lock().write_all(&bytes)?;
    Ok(Exit::Ok)
}

fn check_cmd(cli: &Cli, snap: &Snapshot) -> anyhow::Result<Exit> {
    use iommu_host::readiness::Status;
    let report = iommu_host::readiness::check(snap);
    if cli.json {
        print_json(&report)?;
    } else {
        let color = use_color(cli.color, std::env::var_os("NO_COLOR").as_deref(), std::io::stdout().is_terminal());
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let fails = report.items.iter().filter(|i| i.status == Status::Fail).count();
        let warns = report.items.iter().filter(|i| i.status == Status::Warn).count();
        let verdict = if report.ready {
            format!("READY for device assignment ({warns} warning(s))")
        } else {
            format!("NOT READY: {fails} failing, {warns} warning(s)")
        };
        writeln!(out, "{}", if color { paint_header(&verdict) } else { verdict })?;
        for item in &report.items {
            let label = item.status.label();
            let label = if color {
                let code = match item.status {
                    Status::Pass => "32",
                    Status::Info => "36",
                    Status::Warn => "33",
                    Status::Fail => "1;31",
                };
                format!("\x1b[{code}m{label:<4}\x1b[0m")
            } else {
                format!("{label:<4}")
            };
            writeln!(out, "  {label} {:<20} {}", item.id, sanitize(&item.summary))?;
            if !item.devices.is_empty() {
                let list: Vec<String> = item.devices.iter().map(|a| a.to_string()).collect();
                writeln!(out, "       {:<20} devices: {}", "", list.join(" "))?;
            }
            for f in &item.fix {
                writeln!(out, "       {:<20} fix: {}", "", sanitize(f))?;
            }
        }
        out.flush()?;
    }
    Ok(if report.ready { Exit::Ok } else { Exit::Negative })
}

fn snapshot(cli: &Cli, output: &Path) -> anyhow::Result<Exit> {
    let src = load(cli, Detail::Full)?;
    let text = src.snapshot.to_json();
    if output == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        writeln!(out)?;
        return Ok(Exit::Ok);
    }
    crate::output::write_file(output, format!("{text}\n").as_bytes())?;
    warn(&format!(
        "wrote {} ({} functions, {} groups)",
        sanitize(&output.display().to_string()),
        src.snapshot.devices.len(),
        src.snapshot.groups.len()
    ));
    Ok(Exit::Ok)
}

pub(crate) fn configs(snap: &Snapshot) -> BTreeMap<PciAddress, ConfigInfo> {
    snap.devices.iter().filter_map(|d| Some((d.address, ConfigInfo::parse(&d.config).ok()?))).collect()
}

#[derive(serde::Serialize)]
struct ListOut<'a> {
    groups: Vec<ListGroup<'a>>,
}

#[derive(serde::Serialize)]
struct ListGroup<'a> {
    id: u32,
    #[serde(rename = "type")]
    kind: Option<&'a str>,
    reserved_regions: &'a [ReservedRegion],
    devices: Vec<ListDevice<'a>>,
}

#[derive(serde::Serialize)]
struct ListDevice<'a> {
    address: PciAddress,
    vendor_id: Option<String>,
    device_id: Option<String>,
    class_id: Option<String>,
    vendor: Option<&'a str>,
    device_name: Option<&'a str>,
    class: Option<&'a str>,
    driver: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
}

fn list_device<'a>(
    snap: &'a Snapshot,
    ids: &'a PciIds,
    cfgs: &BTreeMap<PciAddress, ConfigInfo>,
    a: PciAddress,
) -> ListDevice<'a> {
    let c = cfgs.get(&a);
    ListDevice {
        address: a,
        vendor_id: c.map(|c| format!("{:04x}", c.vendor_id)),
        device_id: c.map(|c| format!("{:04x}", c.device_id)),
        class_id: c.map(|c| format!("{:04x}", c.class >> 8)),
        vendor: c.and_then(|c| ids.vendor(c.vendor_id)),
        device_name: c.and_then(|c| ids.device(c.vendor_id, c.device_id)),
        class: c.and_then(|c| ids.subclass(c.class)),
        driver: snap.device(a).and_then(|d| d.driver.as_deref()),
        kind: c.filter(|c| c.is_pcie().is_some()).map(pcie_kind),
    }
}

fn pcie_kind(c: &ConfigInfo) -> &'static str {
    match c.pcie {
        Some(p) => p.port_type.describe(),
        None if c.is_bridge() => "conventional PCI bridge",
        None => "conventional PCI function",
    }
}

fn list(cli: &Cli, src: &Source) -> anyhow::Result<Exit> {
    let snap = &src.snapshot;
    if cli.from_lspci.is_some() {
        return crate::from_lspci::list(cli);
    }
    if snap.groups.is_empty() {
        if cli.json {
            print_json(&json!({ "groups": [], "iommu_enabled": false, "message": IOMMU_OFF_HINT }))?;
        }
        return Err(fail(Exit::Negative, IOMMU_OFF_HINT));
    }
    let ids = pci_ids(&src.root);
    let cfgs = configs(snap);
    if cli.json {
        let groups: Vec<ListGroup> = snap
            .groups
            .iter()
            .map(|g| ListGroup {
                id: g.id,
                kind: g.kind.as_deref(),
                reserved_regions: &g.reserved_regions,
                devices: g.devices.iter().map(|&a| list_device(snap, &ids, &cfgs, a)).collect(),
            })
            .collect();
        print_json(&ListOut { groups })?;
        return Ok(Exit::Ok);
    }
    let color = use_color(cli.color, std::env::var_os("NO_COLOR").as_deref(), std::io::stdout().is_terminal());
    let mut out = String::new();
    for g in &snap.groups {
        let mut header = format!("IOMMU group {}", g.id);
        if let Some(k) = &g.kind {
            header.push_str(&format!(" ({})", sanitize(k)));
        }
        out.push_str(&if color { paint_header(&header) } else { header });
        out.push('\n');
        for &a in &g.devices {
            let n = names(&ids, cfgs.get(&a));
            let drv = snap.device(a).and_then(|d| d.driver.clone()).map(|d| format!("  [{}]", sanitize(&d)));
            out.push_str(&format!("  {a}  {}: {}{}\n", n.class_text(), n.text(), drv.unwrap_or_default()));
        }
    }
    let grouped: BTreeSet<PciAddress> = snap.groups.iter().flat_map(|g| g.devices.iter().copied()).collect();
    let loose: Vec<String> =
        snap.devices.iter().filter(|d| !grouped.contains(&d.address)).map(|d| d.address.to_string()).collect();
    if !loose.is_empty() {
        out.push_str(&format!("Not in any IOMMU group: {}\n", loose.join(", ")));
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(Exit::Ok)
}

pub(crate) struct Predicted {
    pub(crate) topology: Topology,
    pub(crate) prediction: Prediction,
}

pub(crate) fn run_prediction(snap: &Snapshot) -> anyhow::Result<Predicted> {
    let topology = topology_of(snap)?;
    let prediction = predict(&topology, &snap.platform(), RuleSet::Linux6);
    warn_uncertain(&prediction);
    Ok(Predicted { topology, prediction })
}

/// The snapshot's PCI tree, warning on stderr about config spaces that do not decode.
pub(crate) fn topology_of(snap: &Snapshot) -> anyhow::Result<Topology> {
    let (topology, bad) = snap.topology().context("building the PCI tree")?;
    for (a, e) in bad {
        warn(&format!("warning: config space of {a} does not decode ({e}); treated as unknown"));
    }
    Ok(topology)
}

/// Warns on stderr when the prediction depended on config space that could not be read.
pub(crate) fn warn_uncertain(prediction: &Prediction) {
    if !prediction.uncertain.is_empty() {
        let l: Vec<String> = prediction.uncertain.iter().map(|a| a.to_string()).collect();
        warn(&format!(
            "warning: ACS or PCIe type of {} could not be read (extended config space needs root); the prediction may be wrong there",
            l.join(", ")
        ));
    }
}

pub(crate) fn device_or_fail(snap: &Snapshot, a: PciAddress) -> anyhow::Result<&iommu_host::HostDevice> {
    snap.device(a).ok_or_else(|| fail(Exit::Negative, format!("no PCI function {a} on this host")))
}

fn show(cli: &Cli, src: &Source, a: PciAddress) -> anyhow::Result<Exit> {
    let snap = &src.snapshot;
    let d = device_or_fail(snap, a)?;
    let ids = pci_ids(&src.root);
    let cfgs = configs(snap);
    let p = run_prediction(snap)?;
    let platform = snap.platform();
    let path: Vec<Value> = p
        .topology
        .upstream_path(a)
        .into_iter()
        .map(|b| {
            let pt = match b.pcie {
                Pcie::Yes(pt) => Some(pt),
                _ => None,
            };
            let on_root = p.topology.parent_of(b.address).is_none();
            let v = acs_verdict(b, pt, on_root, &platform);
            json!({
                "address": b.address,
                "kind": kind_of(&p.topology, b.address),
                "acs_isolated": v.enabled(),
                "acs": v.describe(),
            })
        })
        .collect();
    let group = snap.group_of(a);
    let v = json!({
        "address": a,
        "names": names(&ids, cfgs.get(&a)).json(),
        "kind": kind_of(&p.topology, a),
        "driver": d.driver,
        "driver_override": d.driver_override,
        "iommu_group": group.map(|g| g.id),
        "group_type": group.and_then(|g| g.kind.clone()),
        "group_members": group.map(|g| g.devices.clone()).unwrap_or_default(),
        "reserved_regions": group.map(|g| g.reserved_regions.clone()).unwrap_or_default(),
        "path_to_root": path,
        "reset_methods": d.reset_methods,
        "boot_vga": d.boot_vga,
        "numa_node": d.numa_node,
        "iommu": d.iommu,
        "physfn": d.physfn,
        "sriov_totalvfs": d.sriov_totalvfs,
        "sriov_numvfs": d.sriov_numvfs,
        "net": d.net,
    });
    if cli.json {
        print_json(&v)?;
        return Ok(Exit::Ok);
    }
    let n = names(&ids, cfgs.get(&a));
    let mut o = String::new();
    o.push_str(&format!("{a}  {}: {}\n", n.class_text(), n.text()));
    o.push_str(&format!("  kind:            {}\n", kind_of(&p.topology, a)));
    let opt = |x: &Option<String>| x.as_deref().map(sanitize).unwrap_or_else(|| "none".into());
    o.push_str(&format!("  driver:          {}\n", opt(&d.driver)));
    if d.driver_override.is_some() {
        o.push_str(&format!("  driver_override: {}\n", opt(&d.driver_override)));
    }
    match group {
        Some(g) => {
            let m: Vec<String> = g.devices.iter().map(|x| x.to_string()).collect();
            o.push_str(&format!(
                "  IOMMU group:     {} ({}): {}\n",
                g.id,
                g.kind.as_deref().map(sanitize).unwrap_or_else(|| "type unknown".into()),
                m.join(", ")
            ));
            for r in &g.reserved_regions {
                o.push_str(&format!("  reserved region: {:#018x}-{:#018x} {}\n", r.start, r.end, sanitize(&r.kind)));
            }
        }
        None => o.push_str("  IOMMU group:     none\n"),
    }
    o.push_str("  path to root:\n");
    if path.is_empty() {
        o.push_str("    (on a root bus)\n");
    }
    for h in &path {
        o.push_str(&format!(
            "    {} {}: {}\n",
            h["address"].as_str().unwrap_or_default(),
            h["kind"].as_str().unwrap_or_default(),
            h["acs"].as_str().unwrap_or_default()
        ));
    }
    let list = |x: &Option<Vec<String>>| x.as_ref().map(|v| sanitize(&v.join(" "))).unwrap_or_else(|| "none".into());
    o.push_str(&format!("  reset methods:   {}\n", list(&d.reset_methods)));
    if let Some(b) = d.boot_vga {
        o.push_str(&format!("  boot VGA:        {}\n", if b { "yes" } else { "no" }));
    }
    if let Some(nn) = d.numa_node {
        o.push_str(&format!("  NUMA node:       {nn}\n"));
    }
    if !d.net.is_empty() {
        o.push_str(&format!("  network:         {}\n", sanitize(&d.net.join(" "))));
    }
    std::io::stdout().lock().write_all(o.as_bytes())?;
    Ok(Exit::Ok)
}

fn explain_cmd(cli: &Cli, src: &Source, a: PciAddress) -> anyhow::Result<Exit> {
    let snap = &src.snapshot;
    device_or_fail(snap, a)?;
    let p = run_prediction(snap)?;
    let e =
        explain(&p.topology, &p.prediction, a).ok_or_else(|| fail(Exit::Negative, format!("no prediction for {a}")))?;
    let kernel = snap.group_of(a);
    let agrees = kernel.map(|g| g.devices == e.members);
    let mut notes = Vec::new();
    match (kernel, agrees) {
        (Some(g), Some(false)) => {
            let m: Vec<String> = g.devices.iter().map(|x| x.to_string()).collect();
            notes.push(format!(
                "The running kernel put it in group {} with {}; the prediction differs. Please report this with a snapshot.",
                g.id,
                m.join(", ")
            ));
        }
        (Some(g), Some(true)) => {
            notes.push(format!("The running kernel agrees: its group {} has the same members.", g.id))
        }
        _ if cli.from_lspci.is_some() => notes.push("An lspci dump has no kernel groups: this is a prediction.".into()),
        _ => notes.push("The running kernel has no IOMMU group for it (IOMMU off?): this is a prediction.".into()),
    }
    if cli.json {
        let mut v = serde_json::to_value(&e)?;
        v["kernel_group"] = json!(kernel.map(|g| g.id));
        v["kernel_agrees"] = json!(agrees);
        v["evidence"] =
            serde_json::to_value(p.prediction.evidence.iter().filter(|x| x.group == e.group).collect::<Vec<_>>())?;
        print_json(&v)?;
        return Ok(Exit::Ok);
    }
    let mut o = String::new();
    for s in e.sentences.iter().chain(&notes) {
        o.push_str(s);
        o.push('\n');
    }
    if !e.to_isolate.is_empty() {
        o.push_str("To give it a group of its own:\n");
        for f in &e.to_isolate {
            o.push_str(&format!("  - {f}\n"));
        }
    }
    std::io::stdout().lock().write_all(o.as_bytes())?;
    Ok(Exit::Ok)
}

fn predict_cmd(cli: &Cli, src: &Source, diff: bool) -> anyhow::Result<Exit> {
    let snap = &src.snapshot;
    let p = run_prediction(snap)?;
    let pred = &p.prediction;
    let groups: Vec<Value> = pred
        .groups
        .iter()
        .map(|g| {
            json!({
                "id": g.id,
                "devices": g.devices.iter().map(|a| json!({ "address": a, "kind": kind_of(&p.topology, *a) })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut differences = Vec::new();
    if diff {
        if cli.from_lspci.is_some() {
            return Err(crate::from_lspci::no_diff());
        }
        if snap.groups.is_empty() {
            return Err(fail(Exit::Negative, format!("cannot compare: {IOMMU_OFF_HINT}")));
        }
        let kernel: BTreeSet<Vec<PciAddress>> = snap.groups.iter().map(|g| g.devices.clone()).collect();
        let predicted: BTreeSet<Vec<PciAddress>> = pred.groups.iter().map(|g| g.devices.clone()).collect();
        let show = |v: &Vec<PciAddress>| v.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" ");
        for k in kernel.difference(&predicted) {
            differences.push(format!("kernel has    {{{}}}", show(k)));
        }
        for k in predicted.difference(&kernel) {
            differences.push(format!("predicted has {{{}}}", show(k)));
        }
    }
    if cli.json {
        let mut v = json!({
            "rules": pred.rules.name(),
            "quirks": pred.quirks,
            "groups": groups,
            "uncertain": pred.uncertain,
            "runtime_aliases": pred.runtime_aliases,
        });
        if diff {
            v["differences"] = json!(differences);
            v["matches_kernel"] = json!(differences.is_empty());
        }
        print_json(&v)?;
    } else {
        let mut o = String::new();
        if diff {
            if differences.is_empty() {
                o.push_str(&format!(
                    "prediction matches the kernel: {} groups ({} rules)\n",
                    pred.groups.len(),
                    pred.rules.name()
                ));
            } else {
                o.push_str("prediction differs from the kernel:\n");
                for d in &differences {
                    o.push_str(&format!("  {d}\n"));
                }
            }
        } else {
            for g in &pred.groups {
                let m: Vec<String> = g.devices.iter().map(|a| a.to_string()).collect();
                o.push_str(&format!("group {}: {}\n", g.id, m.join(" ")));
            }
        }
        std::io::stdout().lock().write_all(o.as_bytes())?;
    }
    Ok(if differences.is_empty() { Exit::Ok } else { Exit::Negative })
}
