//! Whole-group binding on the real kernel (issue 3): bind, viability through VFIO_GROUP_GET_STATUS,
//! restore, rollback after a failed probe, recovery after a crash, refusals, and serialized runs.
//!
//! Needs `iommuctl` and the `vfio-group-status` example (both built by `scripts/test`).

use iommu_lab::{iommuctl_bin, require_lab, skip_or_fail, topology, GuestSpec, Iommu, Topology};

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
    assert_eq!(run.rc("a-bind"), 0, "{}", run.err("a-bind"));
    let d = run.out("a-drivers");
    assert!(d.contains("0000:00:10.0 vfio-pci") && d.contains("0000:00:10.1 vfio-pci"), "{d}");
    assert!(d.contains("0000:00:11.0  "), "the other group was touched: {d}");
    assert_eq!(run.rc("a-devnode"), 0);
    assert_eq!(run.rc("a-viable"), 0, "{} {}", run.out("a-viable"), run.err("a-viable"));
    assert!(run.out("a-viable").contains("\"viable\":true"), "{}", run.out("a-viable"));
    assert!(run.out("a-status").contains("\"viable\": true"));
    assert_eq!(run.rc("a-restore"), 0, "{}", run.err("a-restore"));
    let d = run.out("a-after");
    assert!(!d.contains("vfio-pci"), "{d}");
    // (f) the second bind waited for the first, and both finished.
    assert_eq!(run.rc("f-second"), 0, "{}", run.err("f-second"));
    assert!(run.err("f-second").contains("waiting for another iommuctl"), "{}", run.err("f-second"));
    assert!(run.out("f-first-err").contains("holding the lock"), "{}", run.out("f-first-err"));
    let d = run.out("f-drivers");
    assert_eq!(d.matches("vfio-pci").count() - d.matches("override=vfio-pci").count(), 3, "{d}");
    assert_eq!(run.rc("f-restore"), 0);
    assert!(!run.out("f-after").contains("vfio-pci"), "{}", run.out("f-after"));
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
    let before = run.out("b-before");
    assert!(before.contains("0000:00:10.0 nvme") && before.contains("nvme0n1"), "{before}");
    assert_eq!(run.rc("b-bind"), 0, "{}", run.err("b-bind"));
    let mid = run.out("b-after-bind");
    assert!(mid.contains("0000:00:10.0 vfio-pci") && mid.contains("0000:00:10.1 vfio-pci"), "{mid}");
    assert!(mid.contains("no-nvme-block"), "{mid}");
    assert_eq!(run.rc("b-restore"), 0, "{}", run.err("b-restore"));
    let after = run.out("b-after-restore");
    assert!(after.contains("0000:00:10.0 nvme override=") && after.contains("nvme0n1"), "{after}");
    assert!(after.contains("0000:00:10.1  override="), "{after}");
    // (c) the second device's probe fails: everything goes back, the journal is empty.
    assert_eq!(run.rc("c-bind"), 4, "{}", run.err("c-bind"));
    assert!(run.err("c-bind").contains("rolled back"), "{}", run.err("c-bind"));
    let c = run.out("c-after");
    assert!(c.contains("0000:00:10.0 nvme override=\n") || c.contains("0000:00:10.0 nvme override=(null)"), "{c}");
    assert!(c.contains("nvme0n1"), "{c}");
    assert!(run.out("c-journal").contains("no-journal"), "{}", run.out("c-journal"));
    // (c) a driver that cannot be loaded changes nothing.
    assert_eq!(run.rc("c2-bind"), 4, "{}", run.err("c2-bind"));
    assert!(run.err("c2-bind").contains("pci-stub"), "{}", run.err("c2-bind"));
    assert!(run.out("c2-after").contains("0000:00:10.0 nvme"), "{}", run.out("c2-after"));
    // (d) killed after the first device: the journal remembers, restore finishes the job.
    assert_ne!(run.rc("d-bind"), 0);
    assert!(run.out("d-mid").contains("0000:00:10.0 vfio-pci"), "{}", run.out("d-mid"));
    assert!(run.out("d-journal").contains("\"original_driver\": \"nvme\""), "{}", run.out("d-journal"));
    assert_eq!(run.rc("d-restore"), 0, "{}", run.err("d-restore"));
    let d = run.out("d-after");
    assert!(d.contains("0000:00:10.0 nvme") && d.contains("nvme0n1") && !d.contains("vfio-pci"), "{d}");
    // (e) a mounted file system and active swap are refused with exit 3, naming device and holder.
    assert!(run.out("e-mounts").contains("/dev/nvme0n1 /mnt"), "mount failed: {}", run.out("e-mounts"));
    assert_eq!(run.rc("e-bind"), 3, "{}", run.err("e-bind"));
    assert!(run.err("e-bind").contains("mounted file system /mnt"), "{}", run.err("e-bind"));
    assert!(run.err("e-bind").contains("0000:00:10.0"), "{}", run.err("e-bind"));
    assert!(run.out("e-after").contains("0000:00:10.0 nvme"), "{}", run.out("e-after"));
    assert_eq!(run.rc("e-swap-bind"), 3, "{}", run.err("e-swap-bind"));
    assert!(run.err("e-swap-bind").contains("active swap"), "{}", run.err("e-swap-bind"));
}
