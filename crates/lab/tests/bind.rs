//! Whole-group binding on the real kernel (issue 3): bind, viability through VFIO_GROUP_GET_STATUS,
//! restore, rollback after a failed probe, recovery after a crash, refusals, and serialized runs.
//!
//! Needs `iommuctl` and the `vfio-group-status` example (both built by `scripts/test`).

use iommu_lab::{iommuctl_bin, require_lab, skip_or_fail, topology, GuestRun, GuestSpec, Iommu, Topology};

fn group_status_bin() -> std::path::PathBuf {
    iommuctl_bin().with_file_name("examples").join("vfio-group-status")
}

fn binaries_present() -> bool {
    for b in [iommuctl_bin(), group_status_bin()] {
        if !b.is_file() {
            return !skip_or_fail(&format!(
                "{} not found (run scripts/test or cargo build --release --examples)",
                b.display()
            ));
        }
    }
    true
}

fn out<'a>(run: &'a GuestRun, name: &str) -> &'a str {
    run.section(name)
        .map(|s| s.stdout.as_str())
        .unwrap_or_else(|| panic!("no section {name} in {}", run.run_dir.display()))
}

fn err<'a>(run: &'a GuestRun, name: &str) -> &'a str {
    run.section(&format!("{name}.stderr")).map(|s| s.stdout.as_str()).unwrap_or("")
}

fn rc(run: &GuestRun, name: &str) -> i32 {
    run.section(name).map(|s| s.rc).unwrap_or_else(|| panic!("no section {name} in {}", run.run_dir.display()))
}

/// Shell helpers: `drivers` prints `ADDR DRIVER` for the devices of interest, then the nvme block devices.
fn prelude(devs: &[&str]) -> String {
    format!(
        ". /lab/lib.sh\nB={}\nS={}\n\
         drivers() {{ for d in {}; do l=$(readlink /sys/bus/pci/devices/$d/driver); o=$(cat /sys/bus/pci/devices/$d/driver_override); echo \"$d ${{l##*/}} override=$o\"; done; ls /sys/block | grep nvme || echo no-nvme-block; }}\n\
         waitblk() {{ i=0; while [ $i -lt 50 ] && ! [ -e /sys/block/nvme0n1 ]; do sleep 0.2; i=$((i+1)); done; }}\n",
        iommuctl_bin().display(),
        group_status_bin().display(),
        devs.join(" ")
    )
}

#[test]
fn multifunction_pair_binds_viable_restores_and_concurrent_binds_serialize() {
    if !require_lab() || !binaries_present() {
        return;
    }
    let t = topology("mf-endpoint-root").expect("topology mf-endpoint-root");
    let mut script = prelude(&["0000:00:10.0", "0000:00:10.1", "0000:00:11.0"]);
    script.push_str(
        "section a-bind $B bind 0000:00:10.0\n\
         section a-drivers drivers\n\
         G=$(basename $(readlink /sys/bus/pci/devices/0000:00:10.0/iommu_group))\n\
         section a-devnode ls /dev/vfio/$G\n\
         section a-viable $S $G\n\
         section a-status $B status --json\n\
         section a-restore $B restore --all\n\
         section a-after drivers\n\
         env IOMMUCTL_TEST_HOOK=pause-after-lock:4000 $B bind 0000:00:10.0 >/tmp/f1.out 2>/tmp/f1.err &\n\
         sleep 1\n\
         section f-second $B bind 0000:00:11.0\n\
         wait\n\
         section f-first-err cat /tmp/f1.err\n\
         section f-drivers drivers\n\
         section f-restore $B restore --all\n\
         section f-after drivers\n",
    );
    let run = GuestSpec::new(&t)
        .run_name("bind-mf")
        .binary(iommuctl_bin())
        .binary(group_status_bin())
        .script(&script)
        .boot()
        .expect("boot");
    // (a) both functions on vfio-pci, the group's node exists, and VFIO calls it viable.
    assert_eq!(rc(&run, "a-bind"), 0, "{}", err(&run, "a-bind"));
    let d = out(&run, "a-drivers");
    assert!(d.contains("0000:00:10.0 vfio-pci") && d.contains("0000:00:10.1 vfio-pci"), "{d}");
    assert!(d.contains("0000:00:11.0  "), "the other group was touched: {d}");
    assert_eq!(rc(&run, "a-devnode"), 0);
    assert_eq!(rc(&run, "a-viable"), 0, "{} {}", out(&run, "a-viable"), err(&run, "a-viable"));
    assert!(out(&run, "a-viable").contains("\"viable\":true"), "{}", out(&run, "a-viable"));
    assert!(out(&run, "a-status").contains("\"viable\": true"));
    assert_eq!(rc(&run, "a-restore"), 0, "{}", err(&run, "a-restore"));
    let d = out(&run, "a-after");
    assert!(!d.contains("vfio-pci"), "{d}");
    // (f) the second bind waited for the first, and both finished.
    assert_eq!(rc(&run, "f-second"), 0, "{}", err(&run, "f-second"));
    assert!(err(&run, "f-second").contains("waiting for another iommuctl"), "{}", err(&run, "f-second"));
    assert!(out(&run, "f-first-err").contains("holding the lock"), "{}", out(&run, "f-first-err"));
    let d = out(&run, "f-drivers");
    assert_eq!(d.matches("vfio-pci").count() - d.matches("override=vfio-pci").count(), 3, "{d}");
    assert_eq!(rc(&run, "f-restore"), 0);
    assert!(!out(&run, "f-after").contains("vfio-pci"), "{}", out(&run, "f-after"));
}

fn nvme_mf() -> Topology {
    let mut t = Topology::new(
        "bind-nvme-mf",
        "6.1",
        Iommu::IntelVtd,
        "multifunction slot on pcie.0: nvme at 10.0 (nvme driver), edu at 10.1",
    );
    t.devices.push("-drive".into());
    t.devices.push(format!("if=none,id=d1,file={}/d1.img,format=raw", iommu_lab::topology::RUNDIR));
    t.images.push("d1.img".into());
    t.devices.push("-device".into());
    t.devices.push("nvme,serial=lab-d1,drive=d1,bus=pcie.0,addr=0x10.0,multifunction=on".into());
    t.devices.push("-device".into());
    t.devices.push("edu,bus=pcie.0,addr=0x10.1".into());
    t
}

#[test]
fn nvme_group_bind_restore_rollback_crash_recovery_and_refusals() {
    if !require_lab() || !binaries_present() {
        return;
    }
    let mut script = prelude(&["0000:00:10.0", "0000:00:10.1"]);
    script.push_str(
        "waitblk\n\
         section b-before drivers\n\
         section b-bind $B bind 0000:00:10.0\n\
         section b-after-bind drivers\n\
         section b-restore $B restore --all\n\
         waitblk\n\
         section b-after-restore drivers\n\
         section c-bind env IOMMUCTL_TEST_HOOK=fail-probe:2 $B bind 0000:00:10.0\n\
         waitblk\n\
         section c-after drivers\n\
         section c-journal sh -c 'cat /run/iommuctl/journal.json 2>/dev/null || echo no-journal'\n\
         section c2-bind $B bind 0000:00:10.0 --driver pci-stub\n\
         section c2-after drivers\n\
         section d-bind env IOMMUCTL_TEST_HOOK=kill-after-device:1 $B bind 0000:00:10.0\n\
         section d-mid drivers\n\
         section d-journal cat /run/iommuctl/journal.json\n\
         section d-restore $B restore --all\n\
         waitblk\n\
         section d-after drivers\n\
         mke2fs -q /dev/nvme0n1 && mkdir -p /mnt && mount -t ext4 /dev/nvme0n1 /mnt\n\
         section e-mounts cat /proc/mounts\n\
         section e-bind $B bind 0000:00:10.0\n\
         section e-after drivers\n\
         umount /mnt\n\
         mkswap /dev/nvme0n1 >/dev/null && swapon /dev/nvme0n1\n\
         section e-swap-bind $B bind 0000:00:10.0\n\
         swapoff /dev/nvme0n1\n",
    );
    let run = GuestSpec::new(&nvme_mf())
        .binary(iommuctl_bin())
        .binary(group_status_bin())
        .script(&script)
        .boot()
        .expect("boot");
    // (b) the block device goes with the bind and comes back with restore.
    let before = out(&run, "b-before");
    assert!(before.contains("0000:00:10.0 nvme") && before.contains("nvme0n1"), "{before}");
    assert_eq!(rc(&run, "b-bind"), 0, "{}", err(&run, "b-bind"));
    let mid = out(&run, "b-after-bind");
    assert!(mid.contains("0000:00:10.0 vfio-pci") && mid.contains("0000:00:10.1 vfio-pci"), "{mid}");
    assert!(mid.contains("no-nvme-block"), "{mid}");
    assert_eq!(rc(&run, "b-restore"), 0, "{}", err(&run, "b-restore"));
    let after = out(&run, "b-after-restore");
    assert!(after.contains("0000:00:10.0 nvme override=") && after.contains("nvme0n1"), "{after}");
    assert!(after.contains("0000:00:10.1  override="), "{after}");
    // (c) the second device's probe fails: everything goes back, the journal is empty.
    assert_eq!(rc(&run, "c-bind"), 4, "{}", err(&run, "c-bind"));
    assert!(err(&run, "c-bind").contains("rolled back"), "{}", err(&run, "c-bind"));
    let c = out(&run, "c-after");
    assert!(c.contains("0000:00:10.0 nvme override=\n") || c.contains("0000:00:10.0 nvme override=(null)"), "{c}");
    assert!(c.contains("nvme0n1"), "{c}");
    assert!(out(&run, "c-journal").contains("no-journal"), "{}", out(&run, "c-journal"));
    // (c) a driver that cannot be loaded changes nothing.
    assert_eq!(rc(&run, "c2-bind"), 4, "{}", err(&run, "c2-bind"));
    assert!(err(&run, "c2-bind").contains("pci-stub"), "{}", err(&run, "c2-bind"));
    assert!(out(&run, "c2-after").contains("0000:00:10.0 nvme"), "{}", out(&run, "c2-after"));
    // (d) killed after the first device: the journal remembers, restore finishes the job.
    assert_ne!(rc(&run, "d-bind"), 0);
    assert!(out(&run, "d-mid").contains("0000:00:10.0 vfio-pci"), "{}", out(&run, "d-mid"));
    assert!(out(&run, "d-journal").contains("\"original_driver\": \"nvme\""), "{}", out(&run, "d-journal"));
    assert_eq!(rc(&run, "d-restore"), 0, "{}", err(&run, "d-restore"));
    let d = out(&run, "d-after");
    assert!(d.contains("0000:00:10.0 nvme") && d.contains("nvme0n1") && !d.contains("vfio-pci"), "{d}");
    // (e) a mounted file system and active swap are refused with exit 3, naming device and holder.
    assert!(out(&run, "e-mounts").contains("/dev/nvme0n1 /mnt"), "mount failed: {}", out(&run, "e-mounts"));
    assert_eq!(rc(&run, "e-bind"), 3, "{}", err(&run, "e-bind"));
    assert!(err(&run, "e-bind").contains("mounted file system /mnt"), "{}", err(&run, "e-bind"));
    assert!(err(&run, "e-bind").contains("0000:00:10.0"), "{}", err(&run, "e-bind"));
    assert!(out(&run, "e-after").contains("0000:00:10.0 nvme"), "{}", out(&run, "e-after"));
    assert_eq!(rc(&run, "e-swap-bind"), 3, "{}", err(&run, "e-swap-bind"));
    assert!(err(&run, "e-swap-bind").contains("active swap"), "{}", err(&run, "e-swap-bind"));
}
