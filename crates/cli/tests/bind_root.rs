//! Claims about bind, restore, persist and status on a `--root` tree: names that are not driver names never
//! reach sysfs, udev or modprobe.d; an unsafe state directory is refused; no host modprobe for a test tree;
//! a hot-unplugged device leaves the journal; `status --from` keeps this machine's journal out.

mod fake_sysfs;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

use fake_sysfs::{err, exists, out, Tree};
use iommu_host::persist::{MODPROBE_CONF, UDEV_RULE};

const EVIL: &str = "vfio-pci\", RUN+=\"/bin/sh -c 'touch /tmp/pwned'";

#[test]
fn a_driver_option_that_is_not_a_driver_name_exits_2_before_anything_changes() {
    let t = Tree::new();
    let dev = t.endpoint(1, 1, Some("nvme"));
    for bad in ["", EVIL, "../../../../tmp/x", "vfio-pci\n"] {
        let o = t.run(&["bind", &dev, "--driver", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", err(&o));
        assert!(err(&o).contains("is not a kernel driver name"), "{}", err(&o));
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
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(err(&o).contains("is not a driver name"), "{}", err(&o));
    assert!(!exists(&t.root.join(MODPROBE_CONF)) && !exists(&t.root.join(UDEV_RULE)));
    let o = t.run(&["bind", &dev]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert_eq!(t.read("sys/devices/pci0000:00/0000:01:00.0/driver_override"), "(null)\n");
}

#[test]
fn persist_writes_only_validated_rules() {
    let t = Tree::new();
    let dev = t.endpoint(1, 1, Some("snd_hda_intel"));
    let o = t.run(&["persist", &dev]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let rule = t.read(UDEV_RULE);
    assert!(rule.contains(r#"KERNEL=="0000:01:00.0", ATTR{driver_override}="vfio-pci""#), "{rule}");
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
        assert!(err(&o).contains("writable by others"), "{}", err(&o));
    }
    fs::set_permissions(&t.state, fs::Permissions::from_mode(0o700)).unwrap();
    let real = t.state.with_file_name("real-state");
    fs::rename(&t.state, &real).unwrap();
    symlink(&real, &t.state).unwrap();
    let o = t.run(&["restore", "--all"]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(err(&o).contains("symbolic link"), "{}", err(&o));
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
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert!(err(&o).contains("not running modprobe for the tree below"), "{}", err(&o));
    assert!(!mark.exists(), "the host's modprobe ran");
    assert_eq!(t.read("sys/devices/pci0000:00/0000:01:00.0/driver_override"), "(null)\n");
}

#[test]
fn bind_on_a_tree_that_does_not_move_the_device_rolls_back_and_leaves_no_journal() {
    let t = Tree::new();
    let dev = t.endpoint(1, 1, Some("nvme"));
    let o = t.run(&["bind", &dev]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert!(
        err(&o).contains(
            "binding to vfio-pci failed for 0000:01:00.0; rolled back: 0000:01:00.0 back on their original drivers"
        ),
        "{}",
        err(&o)
    );
    assert!(err(&o).contains("probe left it on nvme"), "{}", err(&o));
    assert_eq!(t.read("sys/devices/pci0000:00/0000:01:00.0/driver_override"), "\n");
    assert_eq!(t.read("sys/bus/pci/drivers/nvme/unbind"), dev);
    assert!(!exists(&t.journal_path()));
}

fn journal(entries: &str) -> String {
    format!(r#"{{"version": 1, "entries": [{entries}]}}"#)
}

fn entry(addr: &str, orig: &str) -> String {
    format!(
        r#"{{"address": "{addr}", "group": 1, "original_driver": {orig}, "original_override": null, "bound_to": "vfio-pci"}}"#
    )
}

#[test]
fn restore_drops_a_hot_unplugged_device_and_exits_0() {
    let t = Tree::new();
    let dev = t.endpoint(1, 1, Some("nvme"));
    fs::create_dir(&t.state).unwrap();
    fs::set_permissions(&t.state, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(t.journal_path(), journal(&[entry(&dev, "\"nvme\""), entry("0000:09:00.0", "\"nvme\"")].join(",")))
        .unwrap();
    let o = t.run(&["restore", "--all"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("0000:01:00.0 restored"), "{}", out(&o));
    assert!(out(&o).contains("0000:09:00.0 no longer exists"), "{}", out(&o));
    assert!(!exists(&t.journal_path()));
    let o = t.run(&["restore", "--all"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(out(&o).contains("nothing to restore"), "{}", out(&o));
}

#[test]
fn a_journal_naming_a_driver_of_another_shape_is_corrupt_and_nothing_is_written() {
    let t = Tree::new();
    let dev = t.endpoint(1, 1, Some("nvme"));
    fs::create_dir(&t.state).unwrap();
    fs::set_permissions(&t.state, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(t.journal_path(), journal(&entry(&dev, r#""nvme/../../../../tmp""#))).unwrap();
    let o = t.run(&["restore", "--all"]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
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
    fs::write(t.journal_path(), journal(&entry(&dev, "\"nvme\""))).unwrap();
    let o = t.run(&["restore", "--all"]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
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
    fs::write(t.journal_path(), journal(&entry(&dev, "\"nvme\""))).unwrap();
    let live = t.run(&["status"]);
    assert!(out(&live).contains("0000:01:00.0  bound to vfio-pci"), "{}", out(&live));
    let snap = t.state.with_file_name("snap.json");
    assert_eq!(t.run(&["snapshot", "-o", snap.to_str().unwrap()]).status.code(), Some(0));
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_iommuctl"))
            .args(["--from", snap.to_str().unwrap(), "--state-dir", t.state.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(out(&o).contains("devices bound by iommuctl are not shown"), "{}", out(&o));
    assert!(!out(&o).contains("bound to vfio-pci"), "{}", out(&o));
    let v: serde_json::Value = serde_json::from_slice(&run(&["status", "--json"]).stdout).unwrap();
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
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert!(err(&o).contains("etc/udev/rules.d"), "{}", err(&o));
    assert_eq!(err(&o).matches("(os error").count(), 1, "{}", err(&o));
}
