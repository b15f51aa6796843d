//! Claims about `iommuctl probe` that hold without /dev/vfio: refusals and their exit codes, on a fake
//! sysfs tree. (Opening a device for real is checked in the lab: crates/lab/tests/vfio.rs.)

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

fn iommuctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iommuctl")).args(args).env("NO_COLOR", "1").output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Group 4: 00:10.0 on nvme and 00:10.1 driverless; 01:00.0 has no `iommu_group` link (IOMMU off for it).
fn tree(root: &Path) {
    for (addr, group, driver) in
        [("0000:00:10.0", Some(4), Some("nvme")), ("0000:00:10.1", Some(4), None), ("0000:01:00.0", None, None)]
    {
        let d = root.join("sys/devices/pci0000:00").join(addr);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        symlink(&d, root.join("sys/bus/pci/devices").join(addr)).unwrap();
        if let Some(g) = group {
            let g = root.join(format!("sys/kernel/iommu_groups/{g}"));
            std::fs::create_dir_all(g.join("devices")).unwrap();
            symlink(&g, d.join("iommu_group")).unwrap();
            symlink(&d, g.join("devices").join(addr)).unwrap();
        }
        if let Some(drv) = driver {
            let dd = root.join("sys/bus/pci/drivers").join(drv);
            std::fs::create_dir_all(&dd).unwrap();
            symlink(&dd, d.join("driver")).unwrap();
        }
    }
}

#[test]
fn probe_of_a_group_held_by_a_host_driver_exits_1_naming_device_and_driver() {
    let t = tempfile::tempdir().unwrap();
    tree(t.path());
    let o = iommuctl(&["--root", t.path().to_str().unwrap(), "probe", "00:10.1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("IOMMU group 4 is not viable") && e.contains("0000:00:10.0 is bound to nvme"), "{e}");
}

#[test]
fn probe_of_a_device_without_iommu_group_exits_1_and_says_why() {
    let t = tempfile::tempdir().unwrap();
    tree(t.path());
    let o = iommuctl(&["--root", t.path().to_str().unwrap(), "probe", "0000:01:00.0"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("has no IOMMU group"), "{}", stderr(&o));
}

#[test]
fn probe_of_a_bad_address_exits_2_and_of_an_unknown_device_exits_1() {
    let t = tempfile::tempdir().unwrap();
    tree(t.path());
    let root = t.path().to_str().unwrap();
    let o = iommuctl(&["--root", root, "probe", "zz:zz"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("zz:zz"));
    let o = iommuctl(&["--root", root, "probe", "0000:07:00.0"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("0000:07:00.0"), "{}", stderr(&o));
}

#[test]
fn probe_refuses_a_snapshot() {
    let o = iommuctl(&["--from", "/nonexistent.json", "probe", "00:10.0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
