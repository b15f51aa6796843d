//! Boots every lab topology once and checks what the real kernel did with IOMMU groups.
//!
//! Needs the lab (`scripts/lab-setup`). Without it the test prints `LAB SKIPPED: ...`, or
//! fails under `CI=true` / `IOMMU_LAB_REQUIRED=1`. `IOMMU_LAB_ONLY=a,b` restricts the run.

use std::collections::BTreeMap;

use iommu_lab::{
    for_each_parallel, lab_dir, require_lab, selected_topologies, GuestRun, GuestSpec, Iommu, LabError, Topology,
};
use serde_json::{json, Value};

const SCRIPT: &str = ". /lab/lib.sh\nsection uname uname -a\n";

/// Whether `bdf` has PCI class 08 06 (IOMMU) according to the guest's `pci-ids` section.
fn is_iommu_function(run: &GuestRun, bdf: &str) -> bool {
    run.section("pci-ids").is_some_and(|s| {
        s.stdout.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 3 && f[0] == bdf && f[2].starts_with("0x0806")
        })
    })
}

/// Checks one run; returns the problems found.
fn check(t: &Topology, run: &GuestRun) -> Vec<String> {
    let mut problems = Vec::new();
    let groups = &run.kernel_groups;
    let devices = run.pci_devices();
    if devices.is_empty() {
        problems.push("no PCI devices listed in /sys/bus/pci/devices".to_string());
    }
    if run.section("uname").map(|s| s.rc) != Some(0) {
        problems.push("run.sh's `uname` section missing or failed".to_string());
    }
    if t.iommu.makes_groups() {
        if groups.is_empty() {
            problems.push("the kernel made no IOMMU groups".to_string());
        }
        let mut seen: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (n, devs) in groups {
            if devs.is_empty() {
                problems.push(format!("group {n} has no devices"));
            }
            for d in devs {
                seen.entry(d.as_str()).or_default().push(*n);
            }
        }
        for d in &devices {
            match seen.get(d.as_str()).map(Vec::len) {
                Some(1) => {}
                // The AMD IOMMU's own PCI function (class 0806) gets no group: reported, allowed.
                None if t.iommu == Iommu::AmdVi && is_iommu_function(run, d) => {
                    println!("    note: {}: {d} (the AMD IOMMU itself) is in no group", t.name)
                }
                None => problems.push(format!("{d} is in no group")),
                Some(_) => problems.push(format!("{d} is in groups {:?}", seen[d.as_str()])),
            }
        }
        for d in seen.keys() {
            if !devices.iter().any(|x| x == d) {
                problems.push(format!("group member {d} is not in /sys/bus/pci/devices"));
            }
        }
    } else if !groups.is_empty() {
        problems.push(format!("IOMMU off but the kernel made groups: {groups:?}"));
    }
    let failed_modules: Vec<&str> = run
        .section("modules")
        .map(|s| s.stdout.lines().filter(|l| l.starts_with("FAIL")).collect())
        .unwrap_or_default();
    if !failed_modules.is_empty() {
        problems.push(format!("modules failed to load: {failed_modules:?}"));
    }
    problems
}

fn compact(groups: &BTreeMap<u32, Vec<String>>) -> String {
    groups
        .iter()
        .map(|(n, devs)| {
            let short: Vec<&str> = devs.iter().map(|d| d.strip_prefix("0000:").unwrap_or(d)).collect();
            format!("{n}:[{}]", short.join(" "))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes what the kernel did to `$IOMMU_LAB_DIR/kernel-groups.json` (one object per
/// topology: kernel, IOMMU, groups, and the `pci-ids` lines "BDF vendor:device class driver group").
fn record(topologies: &[Topology], results: &[Result<GuestRun, LabError>]) {
    let path = lab_dir().join("kernel-groups.json");
    // Merge into an earlier record, so a run restricted by IOMMU_LAB_ONLY keeps the others.
    let mut all = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    for (t, run) in topologies.iter().zip(results) {
        let v = match run {
            Ok(run) => json!({
                "kernel": run.kernel_version,
                "iommu": t.iommu.to_string(),
                "boot_seconds": run.elapsed.as_secs_f64(),
                "groups_ready_uptime": run.groups_ready_uptime(),
                "groups": run.kernel_groups.iter().map(|(n, d)| (n.to_string(), json!(d))).collect::<serde_json::Map<_, _>>(),
                "pci": run.section("pci-ids").map(|s| s.stdout.lines().map(Value::from).collect::<Vec<_>>()),
            }),
            Err(e) => json!({ "error": e.to_string() }),
        };
        all.insert(t.name.clone(), v);
    }
    match serde_json::to_string_pretty(&Value::Object(all)) {
        Ok(text) => match std::fs::write(&path, text + "\n") {
            Ok(()) => println!("recorded in {}", path.display()),
            Err(e) => println!("could not write {}: {e}", path.display()),
        },
        Err(e) => println!("could not encode the record: {e}"),
    }
}

#[test]
fn kernel_groups_every_topology() {
    if !require_lab() {
        return;
    }
    let topologies = selected_topologies();
    let results = for_each_parallel(&topologies, |t| {
        let run = GuestSpec::new(t).run_name(&format!("groups-{}", t.name)).script(SCRIPT).boot();
        match &run {
            Ok(r) => eprintln!("booted {} ({}) in {:.1} s", t.name, r.kernel_version, r.elapsed.as_secs_f64()),
            Err(e) => eprintln!("boot of {} failed: {e}", t.name),
        }
        run
    });
    let mut failures = Vec::new();
    println!("\n=== kernel IOMMU groups per topology ===");
    for (t, run) in topologies.iter().zip(&results) {
        match run {
            Ok(run) => {
                let problems = check(t, run);
                let status = if problems.is_empty() { "PASS" } else { "FAIL" };
                println!(
                    "{status} {} [{} {}] {} groups, boot {:.1} s, groups ready at {:.2} s uptime: {}",
                    t.name,
                    run.kernel_version,
                    t.iommu,
                    run.kernel_groups.len(),
                    run.elapsed.as_secs_f64(),
                    run.groups_ready_uptime().unwrap_or(f64::NAN),
                    compact(&run.kernel_groups)
                );
                for p in &problems {
                    println!("    problem: {p}");
                }
                if !problems.is_empty() {
                    failures.push(format!("{}: {}", t.name, problems.join("; ")));
                }
            }
            Err(e) => {
                println!("FAIL {}: {e}", t.name);
                failures.push(format!("{}: {e}", t.name));
            }
        }
    }
    record(&topologies, &results);
    assert!(
        failures.is_empty(),
        "{} of {} topologies failed:\n{}",
        failures.len(),
        topologies.len(),
        failures.join("\n")
    );
}
