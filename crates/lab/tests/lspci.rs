//! `iommuctl --from-lspci`: dumps taken with pciutils' `lspci` inside a real kernel must predict exactly
//! the groups that kernel made.
//!
//! For every topology whose kernel makes groups: boot once with the host's `lspci` (and its shared
//! libraries) in the initramfs, run `lspci -xxxx -D`, `lspci -xxxx`, `lspci -xxxx -nnv` and `lspci -x`
//! as root in the guest, then on the host run `iommuctl --from-lspci DUMP predict --json` on each. The
//! `-xxxx` dumps must predict the kernel's partition (group numbers are not compared: a dump has no
//! kernel numbering) with no truncation warning; the 64-byte `-x` dump must parse and place every
//! function, nothing more.
//! The dumps stay in the run directory (`$IOMMU_LAB_DIR/runs/lspci-<topology>/`).
//! A second test boots `lspci-sriov` (defined here), enables NVMe VFs and checks the same with VFs present.
//!
//! Binary: `$IOMMUCTL_BIN`, else `<workspace>/target/release/iommuctl`. A missing binary, `lspci` or lab
//! prints `LAB SKIPPED: ...`, or fails under `CI=true` / `IOMMU_LAB_REQUIRED=1`.
//! `IOMMU_LAB_ONLY=a,b` restricts the run to some topologies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use iommu_lab::{
    find_program, for_each_parallel, iommuctl_bin, parse_kernel_groups, require_binaries, require_lab,
    selected_topologies, skip_or_fail, GuestRun, GuestSpec, Iommu, Topology,
};

type Partition = BTreeSet<Vec<String>>;
/// Group number -> sorted addresses.
type Numbered = BTreeMap<u32, Vec<String>>;

/// The dumps taken in the guest: (section name, lspci arguments, must predict the kernel's groups).
const DUMPS: &[(&str, &str, bool)] = &[
    ("lspci-D", "-xxxx -D", true),
    ("lspci", "-xxxx", true),
    ("lspci-nnv", "-xxxx -nnv", true),
    ("lspci-x", "-x", false),
];

/// The groups in `predict --json` output, by number.
fn predicted(text: &str) -> Result<Numbered, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let groups = v.get("groups").and_then(Value::as_array).ok_or("no \"groups\" array")?;
    let mut out = Numbered::new();
    for g in groups {
        let id = g.get("id").and_then(Value::as_u64).and_then(|i| u32::try_from(i).ok()).ok_or("a group without id")?;
        let mut devs: Vec<String> = g
            .get("devices")
            .and_then(Value::as_array)
            .ok_or("a group without \"devices\"")?
            .iter()
            .map(|d| d.get("address").and_then(Value::as_str).map(str::to_string).ok_or("a device without address"))
            .collect::<Result<_, _>>()?;
        devs.sort();
        out.insert(id, devs);
    }
    Ok(out)
}

fn show(devs: &[String]) -> String {
    devs.join(" ")
}

/// Runs `iommuctl --from-lspci FILE predict --json` on the host: (groups, stderr) or a problem.
fn predict_from(bin: &Path, file: &Path) -> Result<(Numbered, String), String> {
    let out = Command::new(bin)
        .arg("--from-lspci")
        .arg(file)
        .args(["predict", "--json"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(format!(
            "`iommuctl --from-lspci {} predict --json` failed ({}): {stderr}",
            file.display(),
            out.status
        ));
    }
    let p = predicted(&String::from_utf8_lossy(&out.stdout)).map_err(|e| format!("predict --json: {e}"))?;
    Ok((p, stderr))
}

/// What one dump predicted.
struct Checked {
    groups: usize,
    /// The group numbers are the kernel's too (not required: a dump has no kernel numbering).
    same_numbers: bool,
}

/// Checks one dump.
fn check_dump(bin: &Path, run: &GuestRun, name: &str, exact: bool, problems: &mut Vec<String>) -> Option<Checked> {
    let Some(s) = run.section(name) else {
        problems.push(format!("no `{name}` section in the guest output"));
        return None;
    };
    if s.rc != 0 {
        problems.push(format!("`{name}` exited with {} in the guest: {}", s.rc, run.err(name).trim()));
        return None;
    }
    let file = run.run_dir.join(format!("{name}.txt"));
    if let Err(e) = std::fs::write(&file, &s.stdout) {
        problems.push(format!("cannot write {}: {e}", file.display()));
        return None;
    }
    let (numbered, stderr) = match predict_from(bin, &file) {
        Ok(r) => r,
        Err(e) => {
            problems.push(e);
            return None;
        }
    };
    let got: Partition = numbered.values().cloned().collect();
    let kernel: Partition = run.kernel_groups.values().cloned().collect();
    if exact {
        if stderr.contains("truncated") {
            problems.push(format!("{name}: iommuctl warned about a truncated dump: {}", stderr.trim()));
        }
        if got != kernel {
            let mut diff = format!("{name}: the predicted partition differs from the kernel's:");
            for e in kernel.difference(&got) {
                diff.push_str(&format!("\n      only in kernel:  [{}]", show(e)));
            }
            for g in got.difference(&kernel) {
                diff.push_str(&format!("\n      only in predict: [{}]", show(g)));
            }
            problems.push(diff);
        }
    } else {
        let placed: BTreeSet<&String> = got.iter().flatten().collect();
        let grouped: BTreeSet<&String> = kernel.iter().flatten().collect();
        if placed != grouped {
            problems.push(format!("{name}: predict placed a different set of functions than the kernel grouped"));
        }
        if !stderr.contains("truncated to 64 bytes") {
            problems.push(format!("{name}: no warning about the 64-byte dump; stderr: {}", stderr.trim()));
        }
    }
    Some(Checked { groups: got.len(), same_numbers: numbered == run.kernel_groups })
}

#[test]
fn lspci_dumps_predict_the_kernels_groups() {
    if !require_lab() {
        return;
    }
    let bin = iommuctl_bin();
    if !require_binaries(std::slice::from_ref(&bin)) {
        return;
    }
    let Some(lspci) = find_program("lspci") else {
        skip_or_fail("lspci not found (package pciutils)");
        return;
    };
    let mut script = String::from(". /lab/lib.sh\n");
    for (name, args, _) in DUMPS {
        script.push_str(&format!("section {name} {} {args}\n", lspci.display()));
    }
    let topologies: Vec<_> = selected_topologies().into_iter().filter(|t| t.iommu.makes_groups()).collect();
    let results = for_each_parallel(&topologies, |t| {
        GuestSpec::new(t).run_name(&format!("lspci-{}", t.name)).binary(&lspci).script(&script).boot()
    });

    let mut failed = Vec::new();
    println!("\n=== iommuctl --from-lspci vs the real kernel ===");
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
        let mut numbers = true;
        let counts: Vec<String> = DUMPS
            .iter()
            .map(|(name, args, exact)| {
                let c = check_dump(&bin, run, name, *exact, &mut problems);
                if *exact {
                    numbers &= c.as_ref().is_some_and(|c| c.same_numbers);
                }
                format!("{args}: {}", c.map(|c| c.groups.to_string()).unwrap_or_else(|| "-".into()))
            })
            .collect();
        let status = if problems.is_empty() { "PASS" } else { "FAIL" };
        println!(
            "{status} {}: kernel {} groups; predicted from lspci {}; group numbers {} ({}, {}, boot {:.1} s)",
            t.name,
            run.kernel_groups.len(),
            counts.join(", "),
            if numbers { "match too" } else { "differ (not required)" },
            run.kernel_version,
            t.iommu,
            run.elapsed.as_secs_f64()
        );
        for p in &problems {
            println!("    {p}");
        }
        if !problems.is_empty() {
            println!("    (dumps and guest output: {})", run.run_dir.display());
            failed.push(t.name.clone());
        }
    }
    println!(
        "lspci lab summary: {} PASS, {} FAIL of {} topologies",
        topologies.len() - failed.len(),
        failed.len(),
        topologies.len()
    );
    assert!(
        failed.is_empty(),
        "predictions from lspci dumps disagreed with the real kernel on {} of {} topologies: {}",
        failed.len(),
        topologies.len(),
        failed.join(", ")
    );
}

/// Name of the SR-IOV machine below; `IOMMU_LAB_ONLY` must name it (or be unset) for it to boot.
const SRIOV: &str = "lspci-sriov";

/// Two NVMe physical functions with SR-IOV (QEMU's nvme needs a subsystem for it), one behind a root port
/// with ACS, one behind a root port without. Not in the shared topology list: only this test enables VFs.
fn sriov_topology() -> Topology {
    let nvme = |n: u32| {
        format!("nvme,id=n{n},serial=lab-n{n},bus=rp{n},subsys=sub{n},sriov_max_vfs=3,sriov_vq_flexible=6,sriov_vi_flexible=3")
    };
    Topology::new(SRIOV, "6.1", Iommu::IntelVtd, "two NVMe PFs with 3 VFs each, behind ACS and non-ACS root ports")
        .device("pcie-root-port,id=rp1,chassis=1,slot=1,bus=pcie.0")
        .device("nvme-subsys,id=sub1,nqn=lab-sub1")
        .device(&nvme(1))
        .device("pcie-root-port,id=rp2,chassis=2,slot=2,disable-acs=on,bus=pcie.0")
        .device("nvme-subsys,id=sub2,nqn=lab-sub2")
        .device(&nvme(2))
}

#[test]
fn sriov_virtual_functions_in_a_dump_predict_the_kernels_groups() {
    if let Ok(only) = std::env::var("IOMMU_LAB_ONLY") {
        if !only.split(',').any(|n| n.trim() == SRIOV) {
            println!("{SRIOV} not in IOMMU_LAB_ONLY; not booted");
            return;
        }
    }
    if !require_lab() {
        return;
    }
    let bin = iommuctl_bin();
    let Some(lspci) = find_program("lspci").filter(|_| bin.is_file()) else {
        skip_or_fail("iommuctl release binary or lspci (pciutils) not found");
        return;
    };
    // VFs without a driver (QEMU's NVMe VFs stay offline until the PF assigns them resources); wait until
    // every function has its group, then record the groups again, now with the VFs.
    let script = format!(
        ". /lab/lib.sh\n\
         for pf in /sys/bus/pci/devices/*; do\n\
         [ \"$(cat $pf/sriov_totalvfs 2>/dev/null || echo 0)\" -gt 0 ] || continue\n\
         echo 0 > $pf/sriov_drivers_autoprobe\n\
         echo 3 > $pf/sriov_numvfs\n\
         done\n\
         i=0; while [ $i -lt 50 ]; do all=1; for d in /sys/bus/pci/devices/*; do [ -e $d/iommu_group ] || all=0; done; \
         [ $all = 1 ] && break; sleep 0.1; i=$((i+1)); done\n\
         section groups-with-vfs kernel_groups\n\
         section lspci-D {l} -xxxx -D\n",
        l = lspci.display()
    );
    let run = match GuestSpec::new(&sriov_topology()).binary(&lspci).script(&script).boot() {
        Ok(r) => r,
        Err(e) => panic!("{SRIOV}: boot failed: {e}"),
    };
    let kernel = parse_kernel_groups(run.out("groups-with-vfs")).unwrap();
    let vfs = run.out("lspci-D").lines().filter(|l| l.contains("Non-Volatile memory controller")).count();
    let file = run.run_dir.join("lspci-D.txt");
    std::fs::write(&file, run.out("lspci-D")).unwrap();
    let (got, stderr) = predict_from(&bin, &file).unwrap_or_else(|e| panic!("{e}"));
    let expected: Partition = kernel.values().cloned().collect();
    let partition: Partition = got.values().cloned().collect();
    let status = if partition == expected && stderr.contains("6 SR-IOV virtual functions") { "PASS" } else { "FAIL" };
    println!(
        "{status} {SRIOV}: {} NVMe functions, kernel {} groups with VFs, predicted {}; group numbers {} ({}, boot {:.1} s)",
        vfs,
        expected.len(),
        partition.len(),
        if got == kernel { "match too" } else { "differ (not required)" },
        run.kernel_version,
        run.elapsed.as_secs_f64()
    );
    assert_eq!(partition, expected, "{SRIOV}: dumps and guest output in {}", run.run_dir.display());
    assert!(stderr.contains("6 SR-IOV virtual functions"), "{stderr}");
}
