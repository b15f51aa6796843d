//! `--from-lspci`: the read-only commands on lspci dumps captured in the lab
//! (`crates/host/tests/fixtures/lspci/`), and clear refusals where a dump cannot answer.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../host/tests/fixtures/lspci").join(name)
}

fn iommuctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iommuctl")).args(args).env("NO_COLOR", "1").output().unwrap()
}

fn on(dump: &str, args: &[&str]) -> Output {
    let f = fixture(dump);
    iommuctl(&[&["--from-lspci", f.to_str().unwrap()], args].concat())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn partition(v: &Value) -> BTreeSet<Vec<String>> {
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let mut d: Vec<String> =
                g["devices"].as_array().unwrap().iter().map(|d| d["address"].as_str().unwrap().to_string()).collect();
            d.sort();
            d
        })
        .collect()
}

fn kernel_partition(name: &str) -> BTreeSet<Vec<String>> {
    std::fs::read_to_string(fixture(name))
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
        let o = on(dump, &["predict", "--json"]);
        assert_eq!(o.status.code(), Some(0), "{dump}: {}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(partition(&v), kernel_partition(groups), "{dump}");
        assert!(v["uncertain"].as_array().unwrap().is_empty(), "{dump}");
        assert!(!stderr(&o).contains("warning"), "{dump}: {}", stderr(&o));
    }
}

#[test]
fn a_dash_reads_the_dump_from_standard_input() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iommuctl"))
        .args(["--from-lspci", "-", "predict", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let text = std::fs::read(fixture("everything-6.1-xxxx-D.txt")).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&text));
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(partition(&v), kernel_partition("everything-6.1.groups"));
}

#[test]
fn a_64_byte_dump_warns_on_stderr_and_still_predicts() {
    let o = on("everything-6.1-x.txt", &["predict"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("config space truncated to 64 bytes; run lspci -xxxx as root"), "{}", stderr(&o));
    assert!(stderr(&o).contains("the prediction may be wrong there"), "{}", stderr(&o));
}

#[test]
fn the_amd_ivrs_inference_is_announced() {
    let o = on("amd-mixed-6.1-xxxx-nnv.txt", &["predict"]);
    assert!(stderr(&o).contains("note: 0000:00:02.0 is an AMD IOMMU"), "{}", stderr(&o));
}

#[test]
fn list_says_the_source_is_a_dump_and_points_to_predict_instead_of_claiming_the_iommu_is_off() {
    let o = on("everything-6.1-xxxx-D.txt", &["list"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("lspci dump") && e.contains("predict"), "{e}");
    assert!(!e.contains("IOMMU is off"), "{e}");
    let o = on("everything-6.1-xxxx-D.txt", &["list", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["source"], "lspci");
    assert_eq!(v["iommu_enabled"], Value::Null);
}

#[test]
fn predict_diff_has_nothing_to_compare_with_and_says_so_with_exit_2() {
    let o = on("everything-6.1-xxxx-D.txt", &["predict", "--diff"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("an lspci dump has none"), "{}", stderr(&o));
}

#[test]
fn show_and_explain_work_on_a_dump() {
    let o = on("everything-6.1-xxxx-D.txt", &["explain", "0000:07:00.0"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("0000:05:01.0") && out.contains("lspci dump"), "{out}");
    let o = on("everything-6.1-xxxx-D.txt", &["show", "0000:07:00.0", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn commands_that_change_or_open_a_live_host_refuse_a_dump() {
    for args in [
        &["bind", "0000:07:00.0"][..],
        &["restore", "--all"],
        &["persist", "0000:07:00.0", "--dry-run"],
        &["probe", "0000:07:00.0"],
    ] {
        let o = on("everything-6.1-xxxx-D.txt", args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains("--from-lspci"), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn a_malformed_dump_is_bad_input_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.txt");
    std::fs::write(&f, "00:1f.0 ISA bridge\n00: 86 80 18 29 03 01 00 00 02 00 01 06 00 00 80\n").unwrap();
    let o = iommuctl(&["--from-lspci", f.to_str().unwrap(), "predict"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("line 2: expected 16 bytes, found 15"), "{}", stderr(&o));
    std::fs::write(&f, "nothing here\n").unwrap();
    let o = iommuctl(&["--from-lspci", f.to_str().unwrap(), "predict"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no PCI functions found"), "{}", stderr(&o));
    let o = iommuctl(&["--from-lspci", "/nonexistent/dump.txt", "predict"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn from_lspci_conflicts_with_from_and_root() {
    let f = fixture("everything-6.1-x.txt");
    let f = f.to_str().unwrap();
    assert_eq!(iommuctl(&["--from-lspci", f, "--from", f, "list"]).status.code(), Some(2));
    assert_eq!(iommuctl(&["--from-lspci", f, "--root", "/", "list"]).status.code(), Some(2));
}

#[test]
fn a_dump_converts_to_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.json");
    let o = on("amd-mixed-6.1-xxxx-nnv.txt", &["snapshot", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = iommuctl(&["--from", out.to_str().unwrap(), "predict", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
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
        let o = on("everything-6.1-xxxx-D.txt", args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("an lspci dump has only config space"), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{args:?} printed an answer");
    }
}

#[test]
fn graph_of_a_dump_draws_the_predicted_groups() {
    let o = on("everything-6.1-xxxx-D.txt", &["graph"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let svg = String::from_utf8_lossy(&o.stdout);
    assert!(svg.contains("groups predicted from an lspci dump"), "title says where the groups come from");
    let labels: BTreeSet<&str> = svg.match_indices(">group ").map(|(i, _)| &svg[i + 1..i + 10]).collect();
    assert_eq!(labels.len(), kernel_partition("everything-6.1.groups").len(), "{labels:?}");
}
