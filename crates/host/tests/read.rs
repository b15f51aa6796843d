//! Claims about reading a host tree. The tree built here models what Linux 6.1 shows for a q35 machine
//! with a root port and an NVMe controller below it (paths, link targets and file formats as in sysfs).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use iommu_host::{read_host, HostError, Snapshot, SnapshotError};
use iommu_pci::PciAddress;

fn config(vendor: u16, device: u16, header: u8, pcie_type: Option<u8>) -> Vec<u8> {
    let mut c = vec![0u8; 4096];
    c[0..2].copy_from_slice(&vendor.to_le_bytes());
    c[2..4].copy_from_slice(&device.to_le_bytes());
    c[0x0e] = header;
    if let Some(t) = pcie_type {
        c[6] = 0x10; // capability list
        c[0x34] = 0x40;
        c[0x40] = 0x10;
        c[0x42] = t << 4 | 2;
    }
    c
}

fn func(root: &Path, canonical: &str, cfg: &[u8], driver: Option<&str>, group: Option<u32>) {
    let dir = root.join("sys/devices").join(canonical);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("config"), cfg).unwrap();
    fs::write(dir.join("numa_node"), "-1\n").unwrap();
    fs::write(dir.join("driver_override"), "(null)\n").unwrap();
    fs::write(dir.join("reset_method"), "flr bus\n").unwrap();
    let name = Path::new(canonical).file_name().unwrap().to_str().unwrap().to_string();
    if let Some(d) = driver {
        fs::create_dir_all(root.join("sys/bus/pci/drivers").join(d)).unwrap();
        symlink(format!("../../../../bus/pci/drivers/{d}"), dir.join("driver")).unwrap();
    }
    if let Some(g) = group {
        let gd = root.join(format!("sys/kernel/iommu_groups/{g}/devices"));
        fs::create_dir_all(&gd).unwrap();
        symlink(format!("../../../../devices/{canonical}"), gd.join(&name)).unwrap();
        // As in sysfs: relative from the function's directory, however deep it sits.
        let up = "../".repeat(Path::new(canonical).components().count() + 1);
        symlink(format!("{up}kernel/iommu_groups/{g}"), dir.join("iommu_group")).unwrap();
        fs::write(root.join(format!("sys/kernel/iommu_groups/{g}/type")), "DMA\n").unwrap();
        fs::write(
            root.join(format!("sys/kernel/iommu_groups/{g}/reserved_regions")),
            "0x00000000fee00000 0x00000000feefffff msi\n",
        )
        .unwrap();
    }
    let bus = root.join("sys/bus/pci/devices");
    fs::create_dir_all(&bus).unwrap();
    symlink(format!("../../../devices/{canonical}"), bus.join(&name)).unwrap();
}

fn q35(root: &Path) {
    func(root, "pci0000:00/0000:00:00.0", &config(0x8086, 0x29c0, 0, None), None, Some(0));
    func(root, "pci0000:00/0000:00:01.0", &config(0x1b36, 0x000c, 1, Some(4)), Some("pcieport"), Some(1));
    func(root, "pci0000:00/0000:00:01.0/0000:01:00.0", &config(0x1b36, 0x0010, 0, Some(0)), Some("nvme"), Some(2));
    fs::create_dir_all(root.join("sys/class/iommu/dmar0")).unwrap();
    fs::create_dir_all(root.join("proc/sys/kernel")).unwrap();
    fs::write(root.join("proc/cmdline"), "console=ttyS0 intel_iommu=on\n").unwrap();
    fs::write(root.join("proc/sys/kernel/osrelease"), "6.1.0-56-amd64\n").unwrap();
}

fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
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
    func(t.path(), "pci0000:00/0000:00:00.0", &config(0x8086, 0x29c0, 0, None), None, None);
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
