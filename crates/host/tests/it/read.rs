//! Claims about reading a host tree. The tree built here models what Linux 6.1 shows for a q35 machine
//! with a root port and an NVMe controller below it (paths, link targets and file formats as in sysfs).

use std::fs;
use std::path::Path;

use iommu_host::{read_host, HostError, Snapshot, SnapshotError};
use iommu_pci::PciAddress;

use crate::util::{a, config, function};

/// A function with the attributes Linux 6.1 shows for it (no NUMA, no override, FLR and bus reset).
fn func(root: &Path, canonical: &str, cfg: Vec<u8>, driver: Option<&str>, group: Option<u32>) {
    let mut f = function(root, canonical, &cfg)
        .attr("numa_node", "-1\n")
        .attr("driver_override", "(null)\n")
        .attr("reset_method", "flr bus\n");
    if let Some(d) = driver {
        f = f.driver(d);
    }
    if let Some(g) = group {
        f.group(g);
    }
}

fn q35(root: &Path) {
    let host_bridge = config(0x8086, 0x29c0).size(4096).bytes();
    func(root, "pci0000:00/0000:00:00.0", host_bridge, None, Some(0));
    let port = config(0x1b36, 0x000c).size(4096).header(1).pcie(4).bytes();
    func(root, "pci0000:00/0000:00:01.0", port, Some("pcieport"), Some(1));
    let nvme = config(0x1b36, 0x0010).size(4096).pcie(0).bytes();
    func(root, "pci0000:00/0000:00:01.0/0000:01:00.0", nvme, Some("nvme"), Some(2));
    fs::create_dir_all(root.join("sys/class/iommu/dmar0")).unwrap();
    fs::create_dir_all(root.join("proc/sys/kernel")).unwrap();
    fs::write(root.join("proc/cmdline"), "console=ttyS0 intel_iommu=on\n").unwrap();
    fs::write(root.join("proc/sys/kernel/osrelease"), "6.1.0-56-amd64\n").unwrap();
}

#[test]
fn reads_functions_tree_drivers_and_groups() {
    let t = tempfile::tempdir().unwrap();
    q35(t.path());
    let s = read_host(t.path()).unwrap();
    assert_eq!(s.devices.len(), 3);
    let nvme = s.device(a("01:00.0")).unwrap();
    assert_eq!(nvme.parent, Some(a("00:01.0")));
    assert_eq!(nvme.driver.as_deref(), Some("nvme"));
    assert_eq!(nvme.driver_override, None);
    assert_eq!(nvme.reset_methods.as_deref(), Some(&["flr".to_string(), "bus".to_string()][..]));
    assert_eq!(nvme.iommu_group, Some(2));
    assert_eq!(nvme.config.len(), 4096);
    assert_eq!(s.device(a("00:01.0")).unwrap().parent, None);
    assert_eq!(s.groups.len(), 3);
    assert_eq!(s.groups[2].devices, vec![a("01:00.0")]);
    assert_eq!(s.groups[2].kind.as_deref(), Some("DMA"));
    assert_eq!(s.groups[2].reserved_regions[0].start, 0xfee0_0000);
    assert_eq!(s.groups[2].reserved_regions[0].end, 0xfeef_ffff);
    assert_eq!(s.groups[2].reserved_regions[0].kind, "msi");
    assert_eq!(s.iommu_units, vec!["dmar0".to_string()]);
    assert_eq!(s.kernel.release.as_deref(), Some("6.1.0-56-amd64"));
}

#[test]
fn snapshot_round_trips_through_json() {
    let t = tempfile::tempdir().unwrap();
    q35(t.path());
    let s = read_host(t.path()).unwrap();
    let back = Snapshot::from_json_slice(s.to_json().as_bytes()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn snapshot_of_another_version_is_refused_with_both_versions_named() {
    let err = Snapshot::from_json_slice(br#"{"format":"iommuctl-snapshot","version":99,"kernel":{},"iommu_units":[],"acpi_tables":[],"groups":[],"devices":[]}"#)
        .unwrap_err();
    assert!(matches!(err, SnapshotError::Version { version: 99, .. }));
    assert!(err.to_string().contains("99"));
}

#[test]
fn snapshot_with_bad_hex_config_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    q35(t.path());
    let s = read_host(t.path()).unwrap().to_json().replacen("\"config\": \"", "\"config\": \"zz", 1);
    assert!(matches!(Snapshot::from_json_slice(s.as_bytes()), Err(SnapshotError::Json(_))));
}

#[test]
fn missing_sysfs_names_the_path() {
    let t = tempfile::tempdir().unwrap();
    let err = read_host(t.path()).unwrap_err();
    assert!(matches!(err, HostError::Read { .. }));
    assert!(err.to_string().contains("sys/bus/pci/devices"), "{err}");
}

#[test]
fn host_without_iommu_has_no_groups() {
    let t = tempfile::tempdir().unwrap();
    func(t.path(), "pci0000:00/0000:00:00.0", config(0x8086, 0x29c0).size(4096).bytes(), None, None);
    let s = read_host(t.path()).unwrap();
    assert!(s.groups.is_empty());
    assert_eq!(s.devices.len(), 1);
}

#[test]
fn prediction_from_the_tree_matches_its_groups() {
    let t = tempfile::tempdir().unwrap();
    q35(t.path());
    let s = read_host(t.path()).unwrap();
    let (topo, bad) = s.topology().unwrap();
    assert!(bad.is_empty());
    let p = iommu_groups::predict(&topo, &s.platform(), iommu_groups::RuleSet::Linux6);
    let got: Vec<Vec<PciAddress>> = p.groups.iter().map(|g| g.devices.clone()).collect();
    let want: Vec<Vec<PciAddress>> = s.groups.iter().map(|g| g.devices.clone()).collect();
    // The root port has no ACS capability in this tree, so the kernel would group it with the NVMe.
    assert_ne!(got, want);
    assert_eq!(got, vec![vec![a("00:00.0")], vec![a("00:01.0"), a("01:00.0")]]);
}
