//! `predict --what-if` against the real kernel: a snapshot taken in a boot without the parameter, run
//! through `--what-if PARAM`, must predict exactly the groups the kernel makes when booted with PARAM
//! (and differ from the groups without it, so the test shows the change matters).
//!
//! The same boots judge `diff` (issue "Orchestrators and time", deliverable 3): the snapshot of the boot
//! with the parameter against the one without must differ (exit 1), naming the parameter as the cause of
//! each port's new ACS control (once in its merge, once in the ACS section),
//! and the two base boots (the same topology under 6.12 and 6.1) must differ in the kernel.
//!
//! And the `lspci -D -vvnn` text of each boot, read back with `--from-lspci`, must predict that boot's groups:
//! a paste carries no command line, so the ACS control registers the kernel left (the parameter's work
//! included) are taken as they read.
//!
//! `pcie_acs_override=` cannot be checked here: Debian's kernels do not carry the out-of-tree patch.

use std::collections::BTreeSet;

use serde_json::Value;

use iommu_lab::{
    find_program, for_each_parallel, iommuctl_bin, require_binaries, require_lab, skip_or_fail, topology, GuestSpec,
};

type Partition = BTreeSet<Vec<String>>;

struct Case {
    topology: &'static str,
    /// On the kernel command line of the second boot.
    kernel_arg: &'static str,
    /// Given to `predict --what-if`.
    what_if: &'static str,
}

const CASES: &[Case] = &[
    // Linux 6.11+: two entries, one on a single-function root port, one on a function of a multifunction
    // root port pair.
    Case {
        topology: "k612-everything",
        kernel_arg: "pci=config_acs=00x00@0000:00:02.0;00x00@0000:00:1c.0",
        what_if: "config_acs=00x00@0000:00:02.0;00x00@0000:00:1c.0",
    },
    Case {
        topology: "everything",
        kernel_arg: "pci=disable_acs_redir=0000:00:05.0;0000:00:06.0",
        what_if: "disable_acs_redir=0000:00:05.0;0000:00:06.0",
    },
];

fn partition_of(json: &str, key: &str) -> Result<Partition, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let groups = v.get(key).and_then(Value::as_array).ok_or(format!("no `{key}` array"))?;
    let mut out = Partition::new();
    for g in groups {
        let devs = g.get("devices").and_then(Value::as_array).ok_or("a group without devices")?;
        let mut addrs: Vec<String> = devs
            .iter()
            .filter_map(|d| d.as_str().or_else(|| d.get("address").and_then(Value::as_str)))
            .map(str::to_string)
            .collect();
        addrs.sort();
        out.insert(addrs);
    }
    Ok(out)
}

fn kernel_partition(groups: &std::collections::BTreeMap<u32, Vec<String>>) -> Partition {
    groups
        .values()
        .map(|v| {
            let mut v = v.clone();
            v.sort();
            v
        })
        .collect()
}

#[test]
fn what_if_predicts_the_groups_of_a_kernel_booted_with_the_parameter() {
    if !require_lab() {
        return;
    }
    let bin = iommuctl_bin();
    if !require_binaries(std::slice::from_ref(&bin)) {
        return;
    }
    let Some(lspci) = find_program("lspci") else {
        skip_or_fail("lspci not found (package pciutils; scripts/lab-setup installs it)");
        return;
    };
    let script = format!(
        ". /lab/lib.sh\nsection snapshot {} snapshot -o -\nsection vv {} -D -vvnn\n",
        bin.display(),
        lspci.display()
    );
    // Boot i*2: without the parameter; i*2+1: with it.
    let boots: Vec<(usize, bool)> = (0..CASES.len()).flat_map(|i| [(i, false), (i, true)]).collect();
    let runs = for_each_parallel(&boots, |&(i, with)| {
        let c = &CASES[i];
        let t = topology(c.topology).unwrap_or_else(|| panic!("no lab topology {}", c.topology));
        let mut spec = GuestSpec::new(&t)
            .run_name(&format!("whatif-{}-{}", c.topology, if with { "param" } else { "base" }))
            .binary(&bin)
            .binary(&lspci)
            .script(&script);
        if with {
            spec = spec.kernel_arg(c.kernel_arg);
        }
        spec.boot()
    });
    let mut failed = Vec::new();
    println!("\n=== predict --what-if vs a kernel booted with the parameter ===");
    for (i, c) in CASES.iter().enumerate() {
        let (base, with) = (&runs[2 * i], &runs[2 * i + 1]);
        let (base, with) = match (base, with) {
            (Ok(b), Ok(w)) => (b, w),
            (b, w) => {
                println!(
                    "FAIL {} {}: boot failed: {:?} {:?}",
                    c.topology,
                    c.kernel_arg,
                    b.as_ref().err(),
                    w.as_ref().err()
                );
                failed.push(c.kernel_arg);
                continue;
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let snap = dir.path().join("base.json");
        std::fs::write(&snap, base.out("snapshot")).expect("write snapshot");
        let param_snap = dir.path().join("param.json");
        std::fs::write(&param_snap, with.out("snapshot")).expect("write snapshot");
        let out = std::process::Command::new(&bin)
            .args(["--from", snap.to_str().unwrap(), "predict", "--json", "--what-if", c.what_if])
            .output()
            .expect("run iommuctl");
        let predicted = partition_of(&String::from_utf8_lossy(&out.stdout), "groups");
        let today = kernel_partition(&base.kernel_groups);
        let kernel = kernel_partition(&with.kernel_groups);
        let mut problems = Vec::new();
        match &predicted {
            Ok(p) if *p == kernel => {}
            Ok(p) => {
                for g in kernel.difference(p) {
                    problems.push(format!("kernel has    {}", g.join(" ")));
                }
                for g in p.difference(&kernel) {
                    problems.push(format!("what-if has   {}", g.join(" ")));
                }
            }
            Err(e) => problems.push(format!("predict --what-if: {e}; stderr {}", String::from_utf8_lossy(&out.stderr))),
        }
        if today == kernel {
            problems.push(format!("the parameter changed nothing on the kernel ({} groups both times)", kernel.len()));
        }
        // Each boot's lspci -vvnn text predicts that boot's groups.
        for (label, run, want) in [("without", base, &today), ("with", with, &kernel)] {
            let vv = dir.path().join(format!("{label}.txt"));
            std::fs::write(&vv, run.out("vv")).expect("write lspci text");
            let o = std::process::Command::new(&bin)
                .args(["--from-lspci", vv.to_str().unwrap(), "predict", "--json"])
                .output()
                .expect("run iommuctl");
            match partition_of(&String::from_utf8_lossy(&o.stdout), "groups") {
                Ok(p) if p == *want => {}
                Ok(p) => problems.push(format!(
                    "lspci -vvnn {label} the parameter: {} predicted groups, the kernel made {}; only in the \
                     prediction: {:?}",
                    p.len(),
                    want.len(),
                    p.difference(want).collect::<Vec<_>>()
                )),
                Err(e) => problems.push(format!("lspci -vvnn {label}: {e}; {}", String::from_utf8_lossy(&o.stderr))),
            }
        }
        // diff names the parameter as the cause of what the second boot changed.
        let param = c.what_if.split('=').next().unwrap_or_default();
        let d = diff(&bin, &snap, &param_snap);
        let cause = format!("pci={param}= on the command line names it in B, not in A");
        if d.0 != Some(1) || !d.1.contains("B adds pci=") || d.1.matches(&cause).count() < 2 {
            problems.push(format!("diff without/with the parameter: exit {:?}, no pci={param}= cause:\n{}", d.0, d.1));
        }
        println!("diff without/with {}:\n{}", c.kernel_arg, indent(&d.1));
        let status = if problems.is_empty() { "PASS" } else { "FAIL" };
        println!(
            "{status} {} ({}): {} -> kernel {} groups without, {} with; what-if predicted {}",
            c.topology,
            with.kernel_version,
            c.kernel_arg,
            today.len(),
            kernel.len(),
            predicted.as_ref().map(|p| p.len().to_string()).unwrap_or_else(|_| "-".into())
        );
        for p in &problems {
            println!("    {p}");
        }
        if !problems.is_empty() {
            failed.push(c.kernel_arg);
        }
    }
    // The two base boots: the same devices under Debian's 6.12 (case 0) and 6.1 (case 1).
    assert_eq!((CASES[0].topology, CASES[1].topology), ("k612-everything", "everything"), "the 6.1/6.12 diff pair");
    if let (Ok(k612), Ok(k61)) = (&runs[0], &runs[2]) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("6.1.json"), dir.path().join("6.12.json"));
        std::fs::write(&a, k61.out("snapshot")).expect("write snapshot");
        std::fs::write(&b, k612.out("snapshot")).expect("write snapshot");
        let d = diff(&bin, &a, &b);
        println!("diff 6.1 -> 6.12:\n{}", indent(&d.1));
        let want = format!("the kernel differs: {} -> {}", k61.kernel_version, k612.kernel_version);
        if d.0 != Some(1) || !d.1.contains(&want) {
            failed.push("diff 6.1 -> 6.12");
            println!("FAIL diff 6.1 -> 6.12: exit {:?}, expected {want:?}", d.0);
        }
    }
    assert!(failed.is_empty(), "what-if or diff disagreed with the kernel for: {}", failed.join(", "));
}

/// `iommuctl diff A B`: exit code and stdout + stderr.
fn diff(bin: &std::path::Path, a: &std::path::Path, b: &std::path::Path) -> (Option<i32>, String) {
    let o = std::process::Command::new(bin).arg("diff").arg(a).arg(b).output().expect("run iommuctl diff");
    (o.status.code(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

fn indent(t: &str) -> String {
    t.lines().map(|l| format!("    {l}\n")).collect()
}
