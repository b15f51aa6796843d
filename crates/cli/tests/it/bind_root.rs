//! Claims about bind, restore, persist and status on a `--root` tree: names that are not driver names never
//! reach sysfs, udev or modprobe.d; an unsafe state directory is refused; no host modprobe for a test tree;
//! a hot-unplugged device leaves the journal; `status --from` keeps this machine's journal out.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

use iommu_host::persist::{MODPROBE_CONF, UDEV_RULE};

use crate::util::{assert_contains, assert_exit, err, exists, iommuctl, journal, json, out, Tree};

const EVIL: &str = "vfio-pci\", RUN+=\"/bin/sh -c 'touch /tmp/pwned'";

#[test]
fn a_driver_option_that_is_not_a_driver_name_exits_2_before_anything_changes() {
    let t = Tree::new();
    let dev = t.endpoint(1, 1, Some("nvme"));
    for bad in ["", EVIL, "../../../../tmp/x", "vfio-pci\n"] {
        let o = t.run(&["bind", &dev, "--driver", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", err(&o));
        assert_contains(&err(&o), "is not a kernel driver name");
        let o = t.run(&["persist", &dev, "--driver", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", err(&o));
    }
    assert_eq!(t.read("sys/devices/pci0000:00/0000:01:00.0/driver_override"), "(null)\n");
    assert_eq!(t.read("sys/bus/pci/drivers/nvme/unbind"), "");
    assert!(!exists(&t.root.join(UDEV_RULE)) && !exists(&t.root.join(MODPROBE_CONF)));
    assert!(!exists(&t.state), "the state directory was created before the driver was checked");
}

#[test]
fn a_sysfs_driver_named_with_a_newline_never_reaches_modprobe_d() {
    let t = Tree::new();
    let dev = t.endpoint(1, 1, Some("nvme\ninstall vfio-pci touch"));
    let o = t.run(&["persist", &dev]);
    assert_exit(&o, 3);
    assert_contains(&err(&o), "is not a driver name");
    assert!(!exists(&t.root.join(MODPROBE_CONF)) && !exists(&t.root.join(UDEV_RULE)));
    let o = t.run(&["bind", &dev]);
    assert_exit(&o, 3);
    assert_eq!(t.read("sys/devices/pci0000:00/0000:01:00.0/driver_override"), "(null)\n");
}

#[test]
fn persist_writes_only_validated_rules() {
    let t = Tree::new();
    let dev = t.endpoint(1, 1, Some("snd_hda_intel"));
    let o = t.run(&["persist", &dev]);
    assert_exit(&o, 0);
    let rule = t.read(UDEV_RULE);
    assert_contains(&rule, r#"KERNEL=="0000:01:00.0", ATTR{vendor}=="0x"#);
    assert_contains(&rule, r#"ATTR{driver_override}="vfio-pci""#);
    assert!(t.read(MODPROBE_CONF).contains("softdep snd_hda_intel pre: vfio-pci\n"));
    assert_eq!(fs::metadata(t.state.join("lock")).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn an_unsafe_state_directory_is_refused_with_exit_3_saying_why() {
    let t = Tree::new();
    let dev = t.endpoint(1, 1, Some("nvme"));
    fs::create_dir(&t.state).unwrap();
    fs::set_permissions(&t.state, fs::Permissions::from_mode(0o777)).unwrap();
    for args in [&["bind", dev.as_str()][..], &["restore", "--all"], &["persist", dev.as_str()], &["status"]] {
        let o = t.run(args);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", err(&o));
        assert_contains(&err(&o), "writable by others");
    }
    fs::set_permissions(&t.state, fs::Permissions::from_mode(0o700)).unwrap();
    let real = t.state.with_file_name("real-state");
    fs::rename(&t.state, &real).unwrap();
    symlink(&real, &t.state).unwrap();
    let o = t.run(&["restore", "--all"]);
    assert_exit(&o, 3);
    assert_contains(&err(&o), "symbolic link");
    assert_eq!(t.read("sys/devices/pci0000:00/0000:01:00.0/driver_override"), "(null)\n");
}

#[test]
fn bind_below_a_root_never_runs_the_hosts_modprobe() {
    let t = Tree::new();
    let dev = t.endpoint(1, 1, Some("nvme"));
    fs::remove_dir_all(t.root.join("sys/bus/pci/drivers/vfio-pci")).unwrap();
    // A modprobe first on PATH that leaves a mark if anything runs it.
    let bin = t.state.with_file_name("bin");
    fs::create_dir(&bin).unwrap();
    let mark = bin.join("ran");
    fs::write(bin.join("modprobe"), format!("#!/bin/sh\ntouch {}\n", mark.display())).unwrap();
    fs::set_permissions(bin.join("modprobe"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let o = t.command(&["bind", &dev]).env("PATH", path).output().unwrap();
    assert_exit(&o, 4);
    assert_contains(&err(&o), "not running modprobe for the tree below");
    assert!(!mark.exists(), "the host's modprobe ran");
    assert_eq!(t.read("sys/devices/pci0000:00/0000:01:00.0/driver_override"), "(null)\n");
}

#[test]
fn bind_on_a_tree_that_does_not_move_the_device_rolls_back_and_leaves_no_journal() {
    let t = Tree::new();
    let dev = t.endpoint(1, 1, Some("nvme"));
    let o = t.run(&["bind", &dev]);
    assert_exit(&o, 4);
    assert!(
        err(&o).contains(
            "binding to vfio-pci failed for 0000:01:00.0; rolled back: 0000:01:00.0 back on their original drivers"
        ),
        "{}",
        err(&o)
    );
    assert_contains(&err(&o), "probe left it on nvme");
    assert_eq!(t.read("sys/devices/pci0000:00/0000:01:00.0/driver_override"), "\n");
    assert_eq!(t.read("sys/bus/pci/drivers/nvme/unbind"), dev);
    assert!(!exists(&t.journal_path()));
}

#[test]
fn restore_drops_a_hot_unplugged_device_and_exits_0() {
    let t = Tree::new();
    let dev = t.endpoint(1, 1, Some("nvme"));
    fs::create_dir(&t.state).unwrap();
    fs::set_permissions(&t.state, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(t.journal_path(), journal(&[(&dev, 1, "nvme"), ("0000:09:00.0", 1, "nvme")])).unwrap();
    let o = t.run(&["restore", "--all"]);
    assert_exit(&o, 0);
    assert_contains(&out(&o), "0000:01:00.0 restored");
    assert_contains(&out(&o), "0000:09:00.0 no longer exists");
    assert!(!exists(&t.journal_path()));
    let o = t.run(&["restore", "--all"]);
    assert_exit(&o, 0);
    assert_contains(&out(&o), "nothing to restore");
}

#[test]
fn a_journal_naming_a_driver_of_another_shape_is_corrupt_and_nothing_is_written() {
    let t = Tree::new();
    let dev = t.endpoint(1, 1, Some("nvme"));
    fs::create_dir(&t.state).unwrap();
    fs::set_permissions(&t.state, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(t.journal_path(), journal(&[(&dev, 1, "nvme/../../../../tmp")])).unwrap();
    let o = t.run(&["restore", "--all"]);
    assert_exit(&o, 4);
    assert!(err(&o).contains("is corrupt") && err(&o).contains("not a kernel driver name"), "{}", err(&o));
    assert_eq!(t.read("sys/devices/pci0000:00/0000:01:00.0/driver_override"), "(null)\n");
}

#[test]
fn restore_failures_carry_the_os_error_and_do_not_say_run_restore() {
    let t = Tree::new();
    let dev = t.endpoint(1, 1, Some("nvme"));
    fs::create_dir(&t.state).unwrap();
    fs::set_permissions(&t.state, fs::Permissions::from_mode(0o700)).unwrap();
    // The device is on vfio-pci in the tree, but the driver_override attribute is gone (ENOENT).
    fs::remove_file(t.root.join("sys/devices/pci0000:00/0000:01:00.0/driver_override")).unwrap();
    fs::write(t.journal_path(), journal(&[(&dev, 1, "nvme")])).unwrap();
    let o = t.run(&["restore", "--all"]);
    assert_exit(&o, 4);
    let text = out(&o);
    assert!(
        text.contains(r#"cannot write "\n" to "#) && text.contains("No such file or directory (os error 2)"),
        "{text}"
    );
    assert!(!text.contains("iommuctl restore") && !err(&o).contains("iommuctl restore"), "{text}{}", err(&o));
    assert!(exists(&t.journal_path()));
}

#[test]
fn status_from_a_snapshot_leaves_this_machines_journal_out() {
    let t = Tree::new();
    let dev = t.endpoint(1, 1, Some("nvme"));
    fs::create_dir(&t.state).unwrap();
    fs::set_permissions(&t.state, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(t.journal_path(), journal(&[(&dev, 1, "nvme")])).unwrap();
    let live = t.run(&["status"]);
    assert_contains(&out(&live), "0000:01:00.0  bound to vfio-pci");
    let snap = t.state.with_file_name("snap.json");
    assert_eq!(t.run(&["snapshot", "-o", snap.to_str().unwrap()]).status.code(), Some(0));
    let run = |args: &[&str]| {
        iommuctl(&[&["--from", snap.to_str().unwrap(), "--state-dir", t.state.to_str().unwrap()], args].concat())
    };
    let o = run(&["status"]);
    assert_exit(&o, 0);
    assert_contains(&out(&o), "devices bound by iommuctl are not shown");
    assert!(!out(&o).contains("bound to vfio-pci"), "{}", out(&o));
    let v = json(&run(&["status", "--json"]));
    assert!(v["bound_by_iommuctl"].is_null(), "{v}");
    assert!(v["groups"].is_array());
}

#[test]
fn a_persist_that_cannot_write_says_why_once() {
    let t = Tree::new();
    let dev = t.endpoint(1, 1, Some("nvme"));
    // etc/udev/rules.d is a file: the directory cannot be made (root or not).
    let rules = t.root.join(UDEV_RULE);
    fs::create_dir_all(rules.parent().unwrap().parent().unwrap()).unwrap();
    fs::write(rules.parent().unwrap(), "").unwrap();
    let o = t.run(&["persist", &dev]);
    assert_exit(&o, 4);
    assert_contains(&err(&o), "etc/udev/rules.d");
    assert_eq!(err(&o).matches("(os error").count(), 1, "{}", err(&o));
}

/// A disk `nvme0n1` with partition `nvme0n1p1` (259:1) below the function at `pci`, and `/etc/fstab`
/// mounting / from it by UUID.
fn boot_disk_below(t: &Tree, pci: &str) {
    let rel = format!("sys/devices/pci0000:00/{pci}/nvme/nvme0/nvme0n1");
    for (name, num, dir) in [("nvme0n1", "259:0", rel.clone()), ("nvme0n1p1", "259:1", format!("{rel}/nvme0n1p1"))] {
        fs::create_dir_all(t.root.join(&dir)).unwrap();
        fs::write(t.root.join(&dir).join("dev"), format!("{num}\n")).unwrap();
        fs::create_dir_all(t.root.join("sys/class/block")).unwrap();
        symlink(t.root.join(&dir), t.root.join("sys/class/block").join(name)).unwrap();
    }
    fs::write(t.root.join(&rel).join("nvme0n1p1/partition"), "1\n").unwrap();
    fs::create_dir_all(t.root.join("dev/disk/by-uuid")).unwrap();
    symlink("../../nvme0n1p1", t.root.join("dev/disk/by-uuid/0a1b")).unwrap();
    fs::create_dir_all(t.root.join("etc")).unwrap();
    fs::write(t.root.join("etc/fstab"), "UUID=0a1b / ext4 errors=remount-ro 0 1\n").unwrap();
}

#[test]
fn persist_refuses_the_boot_disks_group_and_check_simulates_the_next_boot() {
    let t = Tree::new();
    let disk = t.endpoint(1, 1, Some("nvme"));
    let other = t.endpoint(2, 2, Some("snd_hda_intel"));
    boot_disk_below(&t, &disk);
    for args in [&["persist", disk.as_str()][..], &["persist", disk.as_str(), "--dry-run"]] {
        let o = t.run(args);
        assert_exit(&o, 3);
        assert_contains(&err(&o), "persisted 0000:01:00.0 holds / per /etc/fstab (UUID=0a1b is nvme0n1p1)");
        assert_contains(&err(&o), "nothing was written");
        assert_eq!(err(&o).lines().count(), 1, "one line, nothing turned into '?': {}", err(&o));
    }
    assert!(!exists(&t.root.join(UDEV_RULE)) && !exists(&t.root.join(MODPROBE_CONF)));

    // The other group persists, and the next boot checks out.
    assert_exit(&t.run(&["persist", &other]), 0);
    let rule = t.read(UDEV_RULE);
    assert_contains(&rule, "# 0000:02:00.0 was persisted with its IOMMU group: 0000:02:00.0\n");
    let o = t.run(&["persist", "--check"]);
    assert_exit(&o, 0);
    assert_contains(&out(&o), "0000:02:00.0: binds 1b36:0012 to vfio-pci (group: 0000:02:00.0)");
    let v = json(&t.run(&["--json", "persist", "--check"]));
    assert_eq!(v["next_boot"]["entries"][0]["binds"], true, "{v}");

    // Another card in that slot now: the rule's IDs no longer match; a warning, exit 1.
    fs::write(t.root.join(UDEV_RULE), rule.replace("ATTR{device}==\"0x0012\"", "ATTR{device}==\"0x0099\"")).unwrap();
    let o = t.run(&["persist", "--check"]);
    assert_exit(&o, 1);
    assert_contains(&out(&o), "0000:02:00.0 now holds 1b36:0012, not the 1b36:0099 persisted there");

    // A rule for the boot disk's address written by hand without IDs: --check refuses, and so does the next
    // persist, whatever it adds.
    let hand = format!(
        "{rule}ACTION==\"add\", SUBSYSTEM==\"pci\", KERNEL==\"{disk}\", ATTR{{driver_override}}=\"vfio-pci\"\n"
    );
    fs::write(t.root.join(UDEV_RULE), &hand).unwrap();
    let o = t.run(&["persist", "--check"]);
    assert_exit(&o, 3);
    assert_contains(&out(&o), "refused: persisted 0000:01:00.0 holds / per /etc/fstab");
    assert_contains(&out(&o), "matches the address alone");
    assert_exit(&t.run(&["persist", &other]), 3);
    assert_eq!(t.read(UDEV_RULE), hand, "a refused persist changed the rule file");
    // Arguments that make no sense together exit 2.
    for args in
        [&["persist", "--check", &other][..], &["persist", "--check", "--remove"], &["persist", "--check", "--dry-run"]]
    {
        assert_exit(&t.run(args), 2);
    }
}
