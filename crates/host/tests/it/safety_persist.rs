//! Claims about what holds a device and about persistence files. The trees model sysfs/procfs as Linux
//! 6.1 lays them out (mountinfo fields, /sys/dev/block links, vtconsole, net operstate).

use std::fs;

use iommu_host::persist::{
    apply, persisted, plan_persist, plan_remove, DeviceIds, PersistError, Persisted, MODPROBE_CONF, UDEV_RULE,
};
use iommu_host::safety::holders;

use crate::util::{a, dev, n, Tree};

/// An NVMe at 01:00.0 with a partition nvme0n1p1 (259:1) and a dm device (254:0) on top of it.
fn nvme_tree() -> Tree {
    let t = Tree::new();
    t.nvme("01:00.0", "nvme0", "nvme0n1", 0, 1);
    t.stacked("dm-0", "254:0", &["nvme0n1p1"], ("dm/name", "home"));
    t
}

#[test]
fn a_mounted_partition_holds_its_nvme_function() {
    let t = nvme_tree();
    t.mountinfo(
        "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw\n25 22 0:5 / /dev rw - devtmpfs udev rw\n",
    );
    let h = t.holders("01:00.0");
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0].device, a("01:00.0"));
    assert!(h[0].what.contains("mounted file system / (from /dev/nvme0n1p1)"), "{}", h[0].what);
    // Another device is not held.
    assert!(t.holders("02:00.0").is_empty());
}

#[test]
fn a_mount_on_device_mapper_is_followed_to_the_disk_below() {
    let t = nvme_tree();
    t.mountinfo("30 1 254:0 / /home rw - xfs /dev/mapper/home rw\n");
    let h = t.holders("01:00.0");
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(h[0].what.contains("/home"));
}

#[test]
fn active_swap_holds_its_device() {
    let t = nvme_tree();
    t.swaps("/dev/nvme0n1p1                          partition\t1048572\t\t0\t\t-2\n");
    let h = t.holders("01:00.0");
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].what, "active swap on /dev/nvme0n1p1");
}

#[test]
fn boot_gpu_is_held_only_while_a_framebuffer_console_is_bound() {
    let t = tempfile::tempdir().unwrap();
    let vt = t.path().join("sys/class/vtconsole/vtcon1");
    fs::create_dir_all(&vt).unwrap();
    fs::write(vt.join("name"), "(M) frame buffer device\n").unwrap();
    fs::write(vt.join("bind"), "1\n").unwrap();
    let mut gpu = dev("03:00.0");
    gpu.boot_vga = Some(true);
    assert_eq!(holders(t.path(), &[&gpu]).len(), 1);
    fs::write(vt.join("bind"), "0\n").unwrap();
    assert!(holders(t.path(), &[&gpu]).is_empty());
}

#[test]
fn a_network_interface_that_is_up_holds_its_nic() {
    let t = tempfile::tempdir().unwrap();
    for (i, state) in [("enp4s0", "up"), ("enp5s0", "down")] {
        let d = t.path().join("sys/class/net").join(i);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("operstate"), format!("{state}\n")).unwrap();
        fs::write(d.join("flags"), if state == "up" { "0x1003\n" } else { "0x1002\n" }).unwrap();
    }
    let mut up = dev("04:00.0");
    up.net = vec!["enp4s0".into()];
    let mut down = dev("05:00.0");
    down.net = vec!["enp5s0".into()];
    let h = holders(t.path(), &[&up, &down]);
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].what, "network interface enp4s0 is up");
}

#[test]
fn persist_writes_a_rule_per_address_and_a_softdep_and_remove_deletes_them() {
    let t = tempfile::tempdir().unwrap();
    let gpu = Persisted {
        ids: Some(DeviceIds { vendor: 0x10de, device: 0x1b80 }),
        group: Some(vec![a("01:00.0"), a("01:00.1")]),
        ..Persisted::new(a("01:00.0"), n("vfio-pci"))
    };
    let changes = plan_persist(
        t.path(),
        &[gpu.clone(), Persisted::new(a("01:00.1"), n("vfio-pci"))],
        &[n("nvidia"), n("snd_hda_intel")],
    )
    .unwrap();
    apply(t.path(), &changes).unwrap();
    let rule = fs::read_to_string(t.path().join(UDEV_RULE)).unwrap();
    assert!(
        rule.contains(
            "# 0000:01:00.0 was persisted with its IOMMU group: 0000:01:00.0 0000:01:00.1\n\
             ACTION==\"add\", SUBSYSTEM==\"pci\", KERNEL==\"0000:01:00.0\", ATTR{vendor}==\"0x10de\", \
             ATTR{device}==\"0x1b80\", ATTR{driver_override}=\"vfio-pci\"\n"
        ),
        "{rule}"
    );
    // A rule without IDs (as written before they were recorded) still reads back.
    assert!(rule.contains(r#"KERNEL=="0000:01:00.1", ATTR{driver_override}="vfio-pci""#), "{rule}");
    let back = persisted(t.path()).unwrap();
    assert_eq!(back[0], gpu, "what was recorded reads back");
    assert_eq!(back[1], Persisted::new(a("01:00.1"), n("vfio-pci")));
    let conf = fs::read_to_string(t.path().join(MODPROBE_CONF)).unwrap();
    assert!(conf.contains("softdep snd_hda_intel pre: vfio-pci"), "{conf}");
    assert_eq!(persisted(t.path()).unwrap().len(), 2);
    // A second persist keeps the first devices.
    let more = plan_persist(t.path(), &[Persisted::new(a("02:00.0"), n("vfio-pci"))], &[]).unwrap();
    apply(t.path(), &more).unwrap();
    assert_eq!(persisted(t.path()).unwrap().len(), 3);
    apply(t.path(), &plan_remove()).unwrap();
    assert!(!t.path().join(UDEV_RULE).exists() && !t.path().join(MODPROBE_CONF).exists());
}

#[test]
fn persisted_files_are_0644_and_leave_no_temporary_file() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let p = [Persisted::new(a("01:00.0"), n("vfio-pci"))];
    apply(t.path(), &plan_persist(t.path(), &p, &[n("nvme")]).unwrap()).unwrap();
    for f in [UDEV_RULE, MODPROBE_CONF] {
        let p = t.path().join(f);
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644, "{f}");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}

#[test]
fn a_planted_line_in_the_rule_is_refused_not_copied() {
    let t = tempfile::tempdir().unwrap();
    let rule = t.path().join(UDEV_RULE);
    fs::create_dir_all(rule.parent().unwrap()).unwrap();
    fs::write(
        &rule,
        "# Written by iommuctl\nACTION==\"add\", SUBSYSTEM==\"pci\", KERNEL==\"0000:01:00.0\", \
         ATTR{driver_override}=\"vfio-pci\", RUN+=\"/bin/sh -c id\"\n",
    )
    .unwrap();
    let e = plan_persist(t.path(), &[Persisted::new(a("02:00.0"), n("vfio-pci"))], &[]).unwrap_err();
    assert!(matches!(e, PersistError::Unrecognized { line: 2, .. }), "{e:?}");
    assert!(e.to_string().contains("fix or remove the file"), "{e}");
    let conf = t.path().join(MODPROBE_CONF);
    fs::create_dir_all(conf.parent().unwrap()).unwrap();
    fs::write(&rule, "").unwrap();
    fs::write(&conf, "softdep nvme pre: vfio-pci\ninstall nvme /bin/sh\n").unwrap();
    let e = plan_persist(t.path(), &[Persisted::new(a("02:00.0"), n("vfio-pci"))], &[]).unwrap_err();
    assert!(matches!(e, PersistError::Unrecognized { line: 2, .. }), "{e:?}");
}

#[test]
fn rule_lines_iommuctl_would_not_write_byte_for_byte_are_refused() {
    use iommu_host::persist::{parse_group_line, parse_udev_line};
    let ok = r#"ACTION=="add", SUBSYSTEM=="pci", KERNEL=="0000:01:00.0", ATTR{vendor}=="0x10de", ATTR{device}=="0x1b80", ATTR{driver_override}="vfio-pci""#;
    assert!(parse_udev_line(ok).is_some());
    for bad in [
        ok.replace("0000:01:00.0", "01:00.0"),
        ok.replace("0x10de", "0x10DE"),
        ok.replace("0x10de", "0x+10d"),
        ok.replace("0x1b80", "0x1b8"),
    ] {
        assert_eq!(parse_udev_line(&bad), None, "{bad}");
    }
    assert!(parse_group_line("# 0000:01:00.0 was persisted with its IOMMU group: 0000:01:00.0 0000:01:00.1").is_some());
    assert_eq!(parse_group_line("# 0000:01:00.0 was persisted with its IOMMU group: 01:00.1"), None);
}
