//! Claims about the command line: exit codes, the JSON contract, and messages that name their input.
//! Snapshots here are built in code: a q35 machine with one root port (ACS or not) and an NVMe below it.

use std::path::Path;
use std::process::Output;

use iommu_host::{HostDevice, KernelGroup, KernelInfo, Snapshot, FORMAT, VERSION};
use iommu_pci::PciAddress;

use crate::util::{addresses, assert_contains, assert_exit, config, err, from, iommuctl, json, out};

fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn dev(addr: &str, parent: Option<&str>, cfg: Vec<u8>, driver: Option<&str>, group: u32) -> HostDevice {
    HostDevice {
        parent: parent.map(a),
        config: cfg,
        driver: driver.map(str::to_string),
        reset_methods: Some(vec!["flr".into()]),
        numa_node: Some(-1),
        iommu_group: Some(group),
        iommu: Some("dmar0".into()),
        ..HostDevice::new(a(addr))
    }
}

fn q35(port_acs: bool, kernel_groups: &[&[&str]]) -> Snapshot {
    let port = config(0x1b36, 0x000c).size(4096).class(0x060400).header(1).pcie(4);
    let devices = vec![
        dev("00:00.0", None, config(0x8086, 0x29c0).size(4096).class(0x010800).bytes(), None, 0),
        dev("00:01.0", None, if port_acs { port.acs() } else { port }.bytes(), Some("pcieport"), 1),
        dev(
            "01:00.0",
            Some("00:01.0"),
            config(0x1b36, 0x0010).size(4096).class(0x010800).pcie(0).bytes(),
            Some("nvme"),
            2,
        ),
    ];
    let groups = kernel_groups
        .iter()
        .enumerate()
        .map(|(i, g)| KernelGroup {
            id: i as u32,
            kind: Some("DMA".into()),
            reserved_regions: vec![],
            devices: g.iter().map(|s| a(s)).collect(),
        })
        .collect();
    Snapshot {
        format: FORMAT.into(),
        version: VERSION,
        kernel: KernelInfo {
            release: Some("6.1.0-56-amd64".into()),
            cmdline: Some("intel_iommu=on".into()),
            ..KernelInfo::default()
        },
        iommu_units: vec!["dmar0".into()],
        acpi_tables: vec!["DMAR".into()],
        groups,
        devices,
        readiness: None,
        unreadable: Vec::new(),
        firmware: None,
    }
}

fn run(snap: &Snapshot, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.json");
    std::fs::write(&f, snap.to_json()).unwrap();
    from(&f, args)
}

const ISOLATED: &[&[&str]] = &[&["00:00.0"], &["00:01.0"], &["01:00.0"]];

#[test]
fn list_json_has_groups_with_ids_and_full_addresses() {
    let o = run(&q35(true, ISOLATED), &["list", "--json"]);
    assert_exit(&o, 0);
    let v = json(&o);
    let g = v["groups"].as_array().unwrap();
    assert_eq!(g.len(), 3);
    assert_eq!(g[2]["id"], 2);
    assert_eq!(g[2]["devices"][0]["address"], "0000:01:00.0");
    assert_eq!(g[2]["devices"][0]["driver"], "nvme");
}

#[test]
fn list_is_the_default_command() {
    let o = run(&q35(true, ISOLATED), &[]);
    assert_exit(&o, 0);
    let text = out(&o);
    assert_contains(&text, "IOMMU group 2 (DMA)");
    assert_contains(&text, "0000:01:00.0");
}

#[test]
fn predict_diff_exits_0_when_the_kernel_agrees_and_1_when_not() {
    let ok = run(&q35(true, ISOLATED), &["predict", "--diff"]);
    assert_exit(&ok, 0);
    // Without ACS on the root port the prediction puts port and NVMe together; the kernel groups say otherwise.
    let bad = run(&q35(false, ISOLATED), &["predict", "--diff", "--json"]);
    assert_exit(&bad, 1);
    let v = json(&bad);
    assert_eq!(v["matches_kernel"], false);
    assert!(!v["differences"].as_array().unwrap().is_empty());
}

#[test]
fn predict_json_follows_the_contract() {
    let v = json(&run(&q35(false, ISOLATED), &["predict", "--json"]));
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(addresses(&groups[1]), ["0000:00:01.0", "0000:01:00.0"]);
}

#[test]
fn bad_address_names_the_input_and_exits_2() {
    let o = run(&q35(true, ISOLATED), &["show", "01:00"]);
    assert_exit(&o, 2);
    assert_contains(&err(&o), "\"01:00\"");
}

#[test]
fn unknown_device_exits_1_with_a_message() {
    let o = run(&q35(true, ISOLATED), &["explain", "05:00.0"]);
    assert_exit(&o, 1);
    assert_contains(&err(&o), "no PCI function 0000:05:00.0");
}

#[test]
fn host_without_groups_says_how_to_turn_the_iommu_on() {
    let o = run(&q35(true, &[]), &["list"]);
    assert_exit(&o, 1);
    let e = err(&o);
    assert!(e.contains("intel_iommu=on") && e.contains("amd_iommu=on"), "{e}");
}

#[test]
fn export_on_a_host_without_groups_says_the_iommu_is_off_and_exits_0() {
    let o = run(&q35(true, &[]), &["export", "--format", "prometheus"]);
    assert_exit(&o, 0);
    let t = out(&o);
    assert!(t.contains("iommuctl_iommu_enabled 0\n") && t.contains("iommuctl_iommu_groups 0\n"), "{t}");
    let o = run(&q35(true, &[]), &["export", "--format", "nfd"]);
    assert_exit(&o, 0);
    assert!(out(&o).starts_with("feature.node.kubernetes.io/iommu-enabled=false\n"));
}

#[test]
fn explain_names_the_bridge_without_acs() {
    let groups: &[&[&str]] = &[&["00:00.0"], &["00:01.0", "01:00.0"]];
    let o = run(&q35(false, groups), &["explain", "01:00.0"]);
    assert_exit(&o, 0);
    let text = out(&o);
    assert_contains(&text, "0000:00:01.0 (root port): no ACS capability");
    assert_contains(&text, "kernel agrees");
}

#[test]
fn show_reports_path_with_acs_per_hop() {
    let v = json(&run(&q35(true, ISOLATED), &["show", "01:00.0", "--json"]));
    assert_eq!(v["iommu_group"], 2);
    assert_eq!(v["path_to_root"][0]["address"], "0000:00:01.0");
    assert_eq!(v["path_to_root"][0]["acs_isolated"], true);
}

#[test]
fn unreadable_snapshot_names_the_file_and_exits_2() {
    let o = iommuctl(&["--from", "/nonexistent/snap.json", "list"]);
    assert_exit(&o, 2);
    assert_contains(&err(&o), "/nonexistent/snap.json");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("junk.json");
    std::fs::write(&f, b"{not json").unwrap();
    assert_eq!(iommuctl(&["--from", f.to_str().unwrap(), "list"]).status.code(), Some(2));
}

#[test]
fn snapshot_written_then_read_gives_the_same_listing() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.json");
    std::fs::write(&f, q35(true, ISOLATED).to_json()).unwrap();
    let out = dir.path().join("again.json");
    let o = iommuctl(&["--from", f.to_str().unwrap(), "snapshot", "-o", out.to_str().unwrap()]);
    assert_exit(&o, 0);
    let l1 = iommuctl(&["--from", f.to_str().unwrap(), "list", "--json"]);
    let l2 = iommuctl(&["--from", out.to_str().unwrap(), "list", "--json"]);
    assert_eq!(l1.stdout, l2.stdout);
    assert!(Path::new(&out).exists());
}

#[test]
fn sim_tour_shows_the_four_mechanisms_and_the_fault_log() {
    let o = iommuctl(&["sim"]);
    assert_exit(&o, 0);
    let text = out(&o);
    for part in
        ["== translation [ok]", "== bounce-buffer [ok]", "== coalescing [ok]", "== isolation [ok]", "fault reason 0x05"]
    {
        assert!(text.contains(part), "missing {part:?} in:\n{text}");
    }
    let v = json(&iommuctl(&["sim", "--json"]));
    assert_eq!(v["ok"], true);
}
