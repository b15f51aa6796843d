//! The check the project needs: `iommuctl` inside a real kernel must report the kernel's
//! IOMMU groups (`list`) and predict the same partition (`predict`).
//!
//! Binary: `$IOMMUCTL_BIN`, else `<workspace>/target/release/iommuctl`. A missing binary or
//! lab prints `LAB SKIPPED: ...`, or fails under `CI=true` / `IOMMU_LAB_REQUIRED=1`.
//! `IOMMU_LAB_ONLY=a,b` restricts the run to some topologies.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use iommu_lab::{
    for_each_parallel, iommuctl_bin, require_binaries, require_lab, selected_topologies, GuestRun, GuestSpec, Topology,
};

type Groups = BTreeMap<u32, Vec<String>>;
type Partition = BTreeSet<Vec<String>>;
/// (group id if the JSON has one, sorted addresses).
type JsonGroup = (Option<u64>, Vec<String>);

/// The `groups` array of a JSON document: (id if present, sorted addresses) per group.
fn json_groups(text: &str) -> Result<Vec<JsonGroup>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let groups = v.get("groups").and_then(Value::as_array).ok_or("no top-level \"groups\" array")?;
    let mut out = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let id = g.get("id").and_then(Value::as_u64);
        let devices =
            g.get("devices").and_then(Value::as_array).ok_or(format!("groups[{i}] has no \"devices\" array"))?;
        let mut addrs = Vec::new();
        for (j, d) in devices.iter().enumerate() {
            let a = d
                .get("address")
                .and_then(Value::as_str)
                .ok_or(format!("groups[{i}].devices[{j}] has no \"address\" string"))?;
            addrs.push(a.to_string());
        }
        addrs.sort();
        out.push((id, addrs));
    }
    Ok(out)
}

/// The stdout of section `name`; an error if it is missing or the command failed, unless
/// `allow_failure` is given (then a failure is only noted there).
fn section_output<'a>(
    run: &'a GuestRun,
    name: &str,
    allow_failure: Option<&mut Vec<String>>,
) -> Result<&'a str, String> {
    let s = run.section(name).ok_or(format!("no `{name}` section in the guest output"))?;
    if s.rc != 0 {
        if let Some(notes) = allow_failure {
            notes.push(format!("`iommuctl {name}` exited with {} (IOMMU off)", s.rc));
            return Ok(&s.stdout);
        }
        let err = run.section(&format!("{name}.stderr")).map(|e| e.stdout.trim().to_string()).unwrap_or_default();
        return Err(format!("`iommuctl {name}` exited with {} in the guest; stderr: {err}", s.rc));
    }
    Ok(&s.stdout)
}

fn show(devs: &[String]) -> String {
    devs.join(" ")
}

fn check_list(t: &Topology, run: &GuestRun, problems: &mut Vec<String>, notes: &mut Vec<String>) {
    // With the IOMMU off, a non-zero exit is accepted as long as the JSON says "no groups".
    let allow = (!t.iommu.makes_groups()).then_some(notes);
    let text = match section_output(run, "list", allow) {
        Ok(t) => t,
        Err(e) => return problems.push(e),
    };
    let groups = match json_groups(text) {
        Ok(g) => g,
        Err(e) => return problems.push(format!("list --json: {e}")),
    };
    let mut got: Groups = BTreeMap::new();
    for (id, devs) in groups {
        let Some(id) = id else {
            return problems.push(format!("list --json: a group without \"id\": {}", show(&devs)));
        };
        if got.insert(id as u32, devs).is_some() {
            problems.push(format!("list --json: group id {id} appears twice"));
        }
    }
    let expected = &run.kernel_groups;
    if &got != expected {
        let mut diff = String::from("list --json differs from the kernel's groups (id: expected | got):");
        let ids: BTreeSet<u32> = expected.keys().chain(got.keys()).copied().collect();
        for id in ids {
            let e = expected.get(&id);
            let g = got.get(&id);
            if e != g {
                diff.push_str(&format!(
                    "\n      group {id}: expected [{}] | got [{}]",
                    e.map(|d| show(d)).unwrap_or_else(|| "absent".into()),
                    g.map(|d| show(d)).unwrap_or_else(|| "absent".into())
                ));
            }
        }
        problems.push(diff);
    }
}

fn check_predict(t: &Topology, run: &GuestRun, problems: &mut Vec<String>, notes: &mut Vec<String>) {
    let text = match section_output(run, "predict", None) {
        Ok(t) => t,
        Err(e) => return problems.push(e),
    };
    let groups = match json_groups(text) {
        Ok(g) => g,
        Err(e) => return problems.push(format!("predict --json: {e}")),
    };
    let numbered: Groups = groups.iter().filter_map(|(id, d)| Some((u32::try_from((*id)?).ok()?, d.clone()))).collect();
    let got: Partition = groups.into_iter().map(|(_, d)| d).collect();
    if !t.iommu.makes_groups() {
        notes.push(format!(
            "predict not compared (IOMMU off; the kernel made no groups); it predicted {} groups",
            got.len()
        ));
        return;
    }
    let expected: Partition = run.kernel_groups.values().cloned().collect();
    if got != expected {
        let mut diff = String::from("predict --json partition differs from the kernel's:");
        for e in expected.difference(&got) {
            diff.push_str(&format!("\n      only in kernel:  [{}]", show(e)));
        }
        for g in got.difference(&expected) {
            diff.push_str(&format!("\n      only in predict: [{}]", show(g)));
        }
        problems.push(diff);
    } else if numbered != run.kernel_groups {
        // Same partition: the group numbers (probe order) must agree too.
        let wrong: Vec<String> = run
            .kernel_groups
            .iter()
            .filter(|(id, d)| numbered.get(id) != Some(d))
            .map(|(id, d)| format!("kernel group {id} [{}]", show(d)))
            .collect();
        problems.push(format!("predict --json numbers groups differently: {}", wrong.join("; ")));
    }
    if let Some(d) = run.section("predict-diff") {
        if d.rc != 0 {
            problems.push(format!("predict --diff exited {} in the guest: {}", d.rc, d.stdout.trim()));
        }
    }
}

fn check_snapshot(run: &GuestRun, problems: &mut Vec<String>) {
    match section_output(run, "snapshot", None) {
        Ok(text) => {
            if let Err(e) = serde_json::from_str::<Value>(text) {
                problems.push(format!("snapshot -o - is not JSON: {e}"));
            }
        }
        Err(e) => problems.push(e),
    }
}

/// `check` inside the guest: with the IOMMU on, the IOMMU item passes and names the kernel's group count,
/// and the VFIO modules the lab loads are seen; with it off, the host is not ready (exit 1) and the IOMMU
/// item fails with a fix. Every topology's verdict and item statuses are printed as notes.
fn check_readiness(t: &Topology, run: &GuestRun, problems: &mut Vec<String>, notes: &mut Vec<String>) {
    let Some(sec) = run.section("check") else { return problems.push("no `check` section".into()) };
    let v: Value = match serde_json::from_str(&sec.stdout) {
        Ok(v) => v,
        Err(e) => return problems.push(format!("check --json is not JSON ({e}); stderr: {}", run.err("check"))),
    };
    let ready = v.get("ready").and_then(Value::as_bool);
    let items = v.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    let status = |id: &str| {
        items.iter().find(|i| i.get("id").and_then(Value::as_str) == Some(id)).and_then(|i| {
            Some((
                i.get("status")?.as_str()?.to_string(),
                i.get("summary")?.as_str()?.to_string(),
                i.get("fix").cloned(),
            ))
        })
    };
    let line: Vec<String> = items
        .iter()
        .filter_map(|i| Some(format!("{}={}", i.get("id")?.as_str()?, i.get("status")?.as_str()?)))
        .collect();
    notes.push(format!("check: ready={} rc={} [{}]", ready.unwrap_or(false), sec.rc, line.join(" ")));
    let expect_ready_rc = if ready == Some(true) { 0 } else { 1 };
    if sec.rc != expect_ready_rc {
        problems.push(format!("check exited {} but says ready={ready:?}", sec.rc));
    }
    match (t.iommu.makes_groups(), status("iommu")) {
        (true, Some((st, summary, _))) => {
            let want = format!("{} groups", run.kernel_groups.len());
            if st != "pass" || !summary.contains(&want) {
                problems.push(format!("check: iommu item is {st} \"{summary}\", expected pass with \"{want}\""));
            }
        }
        (false, Some((st, summary, fix))) => {
            let fixes = fix.map(|f| f.to_string()).unwrap_or_default();
            if st != "fail" || ready != Some(false) || sec.rc != 1 || fixes.is_empty() {
                problems.push(format!(
                    "check with the IOMMU off: item {st} \"{summary}\", ready {ready:?}, rc {}, fix {fixes}",
                    sec.rc
                ));
            }
        }
        (_, None) => problems.push("check: no `iommu` item".into()),
    }
    match status("vfio-modules") {
        Some((st, _, _)) if st == "pass" => {}
        other => {
            problems.push(format!("check: the lab loads vfio, vfio_iommu_type1 and vfio_pci, check says {other:?}"))
        }
    }
    if matches!(t.iommu, iommu_lab::Iommu::IntelVtd) {
        // QEMU's intel-iommu runs with intremap=on in the lab.
        match status("interrupt-remapping") {
            Some((st, _, _)) if st == "pass" => {}
            other => problems.push(format!("check: VT-d with intremap=on, but interrupt-remapping is {other:?}")),
        }
    }
    if let Some(s) = run.section("check-text") {
        if t.name == "rp-acs" || t.name == "iommu-off" || t.name == "amd-mixed" {
            for l in s.stdout.lines() {
                notes.push(format!("check | {l}"));
            }
        }
    }
}

#[test]
fn iommuctl_matches_kernel_groups() {
    if !require_lab() {
        return;
    }
    let bin = iommuctl_bin();
    if !require_binaries(std::slice::from_ref(&bin)) {
        return;
    }
    let b = bin.display();
    let script = format!(
        ". /lab/lib.sh\n\
         section list {b} list --json\n\
         section predict {b} predict --json\n\
         [ -n \"$(ls /sys/kernel/iommu_groups)\" ] && section predict-diff {b} predict --diff\n\
         section snapshot {b} snapshot -o -\n\
         section check {b} check --json\n\
         section check-text {b} check --color never\n"
    );
    let topologies = selected_topologies();
    let results = for_each_parallel(&topologies, |t| {
        GuestSpec::new(t).run_name(&format!("iommuctl-{}", t.name)).binary(&bin).script(&script).boot()
    });

    let mut failed = Vec::new();
    println!("\n=== iommuctl vs the real kernel ===");
    for (t, run) in topologies.iter().zip(&results) {
        let run = match run {
            Ok(r) => r,
            Err(e) => {
                println!("FAIL {}: boot failed: {e}", t.name);
                failed.push(t.name.clone());
                continue;
            }
        };
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        check_list(t, run, &mut problems, &mut notes);
        check_predict(t, run, &mut problems, &mut notes);
        check_snapshot(run, &mut problems);
        check_readiness(t, run, &mut problems, &mut notes);
        let status = if problems.is_empty() { "PASS" } else { "FAIL" };
        println!(
            "{status} {}: {} groups ({}, {}, boot {:.1} s)",
            t.name,
            run.kernel_groups.len(),
            run.kernel_version,
            t.iommu,
            run.elapsed.as_secs_f64()
        );
        for n in &notes {
            println!("    note: {n}");
        }
        for p in &problems {
            println!("    {p}");
        }
        if !problems.is_empty() {
            println!("    (guest output: {})", run.run_dir.join("out.log").display());
            failed.push(t.name.clone());
        }
    }
    println!(
        "iommuctl lab summary: {} PASS, {} FAIL of {} topologies",
        topologies.len() - failed.len(),
        failed.len(),
        topologies.len()
    );
    assert!(
        failed.is_empty(),
        "iommuctl disagreed with the real kernel on {} of {} topologies: {}",
        failed.len(),
        topologies.len(),
        failed.join(", ")
    );
}
