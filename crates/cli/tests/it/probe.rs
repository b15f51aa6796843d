//! Claims about `iommuctl probe` that hold without /dev/vfio: refusals and their exit codes, on a fake
//! sysfs tree. (Opening a device for real is checked in the lab: crates/lab/tests/vfio.rs.)

use std::path::Path;

use crate::util::{assert_contains, assert_exit, err, function, iommuctl};

/// Group 4: 00:10.0 on nvme and 00:10.1 driverless; 01:00.0 has no `iommu_group` link (IOMMU off for it).
fn tree(root: &Path) {
    for (addr, group, driver) in
        [("0000:00:10.0", Some(4), Some("nvme")), ("0000:00:10.1", Some(4), None), ("0000:01:00.0", None, None)]
    {
        let mut f = function(root, &format!("pci0000:00/{addr}"));
        if let Some(g) = group {
            f = f.group(g);
        }
        if let Some(drv) = driver {
            f.driver(drv);
        }
    }
}

#[test]
fn probe_of_a_group_held_by_a_host_driver_exits_1_naming_device_and_driver() {
    let t = tempfile::tempdir().unwrap();
    tree(t.path());
    let o = iommuctl(&["--root", t.path().to_str().unwrap(), "probe", "00:10.1"]);
    assert_exit(&o, 1);
    let e = err(&o);
    assert!(e.contains("IOMMU group 4 is not viable") && e.contains("0000:00:10.0 is bound to nvme"), "{e}");
}

#[test]
fn probe_of_a_device_without_iommu_group_exits_1_and_says_why() {
    let t = tempfile::tempdir().unwrap();
    tree(t.path());
    let o = iommuctl(&["--root", t.path().to_str().unwrap(), "probe", "0000:01:00.0"]);
    assert_exit(&o, 1);
    assert_contains(&err(&o), "has no IOMMU group");
}

#[test]
fn probe_of_a_bad_address_exits_2_and_of_an_unknown_device_exits_1() {
    let t = tempfile::tempdir().unwrap();
    tree(t.path());
    let root = t.path().to_str().unwrap();
    let o = iommuctl(&["--root", root, "probe", "zz:zz"]);
    assert_exit(&o, 2);
    assert_contains(&err(&o), "zz:zz");
    let o = iommuctl(&["--root", root, "probe", "0000:07:00.0"]);
    assert_exit(&o, 1);
    assert_contains(&err(&o), "0000:07:00.0");
}

#[test]
fn probe_refuses_a_snapshot() {
    let o = iommuctl(&["--from", "/nonexistent.json", "probe", "00:10.0"]);
    assert_exit(&o, 2);
}
