//! `--from-lspci`: the read-only commands on lspci dumps captured in the lab
//! (`crates/host/tests/fixtures/lspci/`), and clear refusals where a dump cannot answer.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use crate::util::{
    addresses, assert_contains, assert_exit, err, from, iommuctl, iommuctl_stdin, json, lspci_fixture, on_dump, out,
};

/// The groups of a `list`/`predict` answer, each sorted.
fn partition(v: &Value) -> BTreeSet<Vec<String>> {
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let mut d = addresses(g);
            d.sort();
            d
        })
        .collect()
}

fn kernel_partition(name: &str) -> BTreeSet<Vec<String>> {
    std::fs::read_to_string(lspci_fixture(name))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Vec<String> = l.split_whitespace().skip(1).map(str::to_string).collect();
            v.sort();
            v
        })
        .collect()
}

#[test]
fn predict_from_a_lab_dump_gives_the_kernels_groups() {
    for (dump, groups) in
        [("everything-6.1-xxxx-D.txt", "everything-6.1.groups"), ("amd-mixed-6.1-xxxx-nnv.txt", "amd-mixed-6.1.groups")]
    {
        let o = on_dump(dump, &["predict", "--json"]);
        assert_eq!(o.status.code(), Some(0), "{dump}: {}", err(&o));
        let v = json(&o);
        assert_eq!(partition(&v), kernel_partition(groups), "{dump}");
        assert!(v["uncertain"].as_array().unwrap().is_empty(), "{dump}");
        assert!(!err(&o).contains("warning"), "{dump}: {}", err(&o));
    }
}

#[test]
fn a_dash_reads_the_dump_from_standard_input() {
    let text = std::fs::read(lspci_fixture("everything-6.1-xxxx-D.txt")).unwrap();
    let o = iommuctl_stdin(&["--from-lspci", "-", "predict", "--json"], text);
    assert_exit(&o, 0);
    let v = json(&o);
    assert_eq!(partition(&v), kernel_partition("everything-6.1.groups"));
}

#[test]
fn a_64_byte_dump_warns_on_stderr_and_still_predicts() {
    let o = on_dump("everything-6.1-x.txt", &["predict"]);
    assert_exit(&o, 0);
    assert_contains(&err(&o), "config space truncated to 64 bytes; run lspci -xxxx as root");
    assert_contains(&err(&o), "the prediction may be wrong there");
}

#[test]
fn the_amd_ivrs_inference_is_announced() {
    let o = on_dump("amd-mixed-6.1-xxxx-nnv.txt", &["predict"]);
    assert_contains(&err(&o), "note: 0000:00:02.0 is an AMD IOMMU");
}

#[test]
fn list_says_the_source_is_a_dump_and_points_to_predict_instead_of_claiming_the_iommu_is_off() {
    let o = on_dump("everything-6.1-xxxx-D.txt", &["list"]);
    assert_exit(&o, 1);
    let e = err(&o);
    assert!(e.contains("lspci dump") && e.contains("predict"), "{e}");
    assert!(!e.contains("IOMMU is off"), "{e}");
    let o = on_dump("everything-6.1-xxxx-D.txt", &["list", "--json"]);
    let v = json(&o);
    assert_eq!(v["source"], "lspci");
    assert_eq!(v["iommu_enabled"], Value::Null);
}

#[test]
fn predict_diff_has_nothing_to_compare_with_and_says_so_with_exit_2() {
    let o = on_dump("everything-6.1-xxxx-D.txt", &["predict", "--diff"]);
    assert_exit(&o, 2);
    assert_contains(&err(&o), "an lspci dump has none");
}

#[test]
fn show_and_explain_work_on_a_dump() {
    let o = on_dump("everything-6.1-xxxx-D.txt", &["explain", "0000:07:00.0"]);
    assert_exit(&o, 0);
    let text = out(&o);
    assert!(text.contains("0000:05:01.0") && text.contains("lspci dump"), "{text}");
    let o = on_dump("everything-6.1-xxxx-D.txt", &["show", "0000:07:00.0", "--json"]);
    assert_exit(&o, 0);
}

#[test]
fn commands_that_change_or_open_a_live_host_refuse_a_dump() {
    for args in [
        &["bind", "0000:07:00.0"][..],
        &["restore", "--all"],
        &["persist", "0000:07:00.0", "--dry-run"],
        &["probe", "0000:07:00.0"],
    ] {
        let o = on_dump("everything-6.1-xxxx-D.txt", args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(err(&o).contains("--from-lspci"), "{args:?}: {}", err(&o));
    }
}

#[test]
fn a_malformed_dump_is_bad_input_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.txt");
    std::fs::write(&f, "00:1f.0 ISA bridge\n00: 86 80 18 29 03 01 00 00 02 00 01 06 00 00 80\n").unwrap();
    let o = iommuctl(&["--from-lspci", f.to_str().unwrap(), "predict"]);
    assert_exit(&o, 2);
    assert_contains(&err(&o), "line 2: expected 16 bytes, found 15");
    std::fs::write(&f, "nothing here\n").unwrap();
    let o = iommuctl(&["--from-lspci", f.to_str().unwrap(), "predict"]);
    assert_exit(&o, 2);
    assert_contains(&err(&o), "no PCI functions found");
    let o = iommuctl(&["--from-lspci", "/nonexistent/dump.txt", "predict"]);
    assert_exit(&o, 2);
}

#[test]
fn from_lspci_conflicts_with_from_and_root() {
    let f = lspci_fixture("everything-6.1-x.txt");
    let f = f.to_str().unwrap();
    assert_eq!(iommuctl(&["--from-lspci", f, "--from", f, "list"]).status.code(), Some(2));
    assert_eq!(iommuctl(&["--from-lspci", f, "--root", "/", "list"]).status.code(), Some(2));
}

#[test]
fn a_dump_converts_to_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("s.json");
    let o = on_dump("amd-mixed-6.1-xxxx-nnv.txt", &["snapshot", "-o", snap.to_str().unwrap()]);
    assert_exit(&o, 0);
    let o = from(&snap, &["predict", "--json"]);
    let v = json(&o);
    assert_eq!(partition(&v), kernel_partition("amd-mixed-6.1.groups"));
}

#[test]
fn commands_that_answer_from_kernel_state_refuse_a_dump_instead_of_reporting_no_iommu() {
    for args in [
        &["check"][..],
        &["status"],
        &["export", "--format", "prometheus"],
        &["libvirt", "00:02.0"],
        &["qemu", "00:02.0"],
    ] {
        let o = on_dump("everything-6.1-xxxx-D.txt", args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
        assert!(err(&o).contains("an lspci dump has only config space"), "{args:?}: {}", err(&o));
        assert!(o.stdout.is_empty(), "{args:?} printed an answer");
    }
}

#[test]
fn graph_of_a_dump_draws_the_predicted_groups() {
    let o = on_dump("everything-6.1-xxxx-D.txt", &["graph"]);
    assert_exit(&o, 0);
    let svg = out(&o);
    assert!(svg.contains("groups predicted from an lspci dump"), "title says where the groups come from");
    let labels: BTreeSet<&str> = svg.match_indices(">group ").map(|(i, _)| &svg[i + 1..i + 10]).collect();
    assert_eq!(labels.len(), kernel_partition("everything-6.1.groups").len(), "{labels:?}");
}

#[test]
fn a_vmd_laptops_paste_puts_the_vmd_domain_in_the_vmd_endpoints_group_as_its_kernel_did() {
    // An unprivileged `lspci -vvnn` of a Tiger Lake-H laptop with VMD on (linuxhw/LsPCI): the kernel put
    // 00:0e.0, 10000:e0:06.0 and 10000:e1:00.0 in one group; the paste has no sysfs tree, so the domain is
    // paired with the one VMD controller by count.
    let f = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../host/tests/fixtures/lspci-vv/vmd/tgl-h-asus-ux582hs-fedora39.txt");
    let o = crate::util::iommuctl(&["--json", "--from-lspci", f.to_str().unwrap(), "predict", "--diff"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("predict --json");
    let vmd_group: Vec<&str> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["devices"].as_array().unwrap().iter().map(|d| d["address"].as_str().unwrap()).collect::<Vec<_>>())
        .find(|g| g.contains(&"0000:00:0e.0"))
        .expect("a group with the VMD controller");
    assert_eq!(vmd_group, ["0000:00:0e.0", "10000:e0:06.0", "10000:e1:00.0"]);
    let diffs = v["differences"].as_array().expect("differences");
    assert!(diffs.iter().all(|d| !d.as_str().unwrap().contains("10000:")), "{diffs:#?}");
}

#[test]
fn what_if_on_a_paste_with_groups_applies_the_parameter_to_the_registers_as_read() {
    // A paste with groups takes ACS control as its kernel left it; a what-if parameter still redoes the
    // port it names (Dell Precision 3640: the NVMe's PCH root port 00:1d.0 has ACS with SV RR CR set).
    let paste = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../host/tests/fixtures/lspci-vv/intel-desktop-dell-precision-3640-tower.txt");
    let p = paste.to_str().unwrap();
    let o = iommuctl(&["--from-lspci", p, "predict", "--what-if", "disable_acs_redir=0000:00:1d.0"]);
    assert_exit(&o, 0);
    assert_contains(&out(&o), "today 12 groups, then 11 groups");
    assert_contains(&out(&o), "{0000:02:00.0} merges into {0000:00:1d.0 0000:02:00.0}");
}
