//! Whole-group binding on the real kernel (issue 3): bind, viability through VFIO_GROUP_GET_STATUS,
//! restore, rollback after a failed probe, recovery after a crash, refusals, serialized runs, and the
//! persist guard's refusal of a disk that holds /boot (mounted, or in /etc/fstab).
//!
//! Needs `iommuctl` and the `vfio-group-status` example (both built by `scripts/test`).

use iommu_lab::{
    example_bin, iommuctl_bin, require_binaries, require_lab, skip_or_fail, topology, GuestSpec, Iommu, Topology,
};

fn group_status_bin() -> std::path::PathBuf {
    example_bin("vfio-group-status")
}

/// `iommuctl` and the `vfio-group-status` example are built ([`require_binaries`]).
fn binaries_present() -> bool {
    require_binaries(&[iommuctl_bin(), group_status_bin()])
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
         swapoff /dev/nvme0n1\n\
         mke2fs -q /dev/nvme0n1 && mkdir -p /boot /etc && mount -t ext4 /dev/nvme0n1 /boot\n\
         section p-mounted $B persist 0000:00:10.0\n\
         umount /boot\n\
         echo '/dev/nvme0n1 /boot/efi vfat umask=0077 0 1' > /etc/fstab\n\
         section p-fstab $B persist --dry-run 0000:00:10.0\n\
         section p-none sh -c 'ls /etc/udev/rules.d /etc/modprobe.d 2>&1; true'\n\
         rm /etc/fstab\n\
         section p-persist $B persist 0000:00:10.0\n\
         section p-rule cat /etc/udev/rules.d/61-iommuctl-vfio.rules\n\
         section p-check-ok $B persist --check\n\
         echo '/dev/nvme0n1 /boot/efi vfat umask=0077 0 1' > /etc/fstab\n\
         section p-check $B persist --check\n\
         rm /etc/fstab\n\
         section p-remove $B persist --remove\n",
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
    // (p) the persist guard: the NVMe holding /boot now, or /boot/efi per /etc/fstab, is refused with
    // nothing written; without them it persists, with the IDs and group recorded, and --check agrees.
    assert_eq!(run.rc("p-mounted"), 3, "{}", run.err("p-mounted"));
    assert!(!run.err("p-mounted").contains('?'), "a newline became '?': {}", run.err("p-mounted"));
    assert!(
        run.err("p-mounted").contains("persisted 0000:00:10.0 holds /boot, mounted now from /dev/nvme0n1"),
        "{}",
        run.err("p-mounted")
    );
    assert_eq!(run.rc("p-fstab"), 3, "{}", run.err("p-fstab"));
    assert!(
        run.err("p-fstab").contains("persisted 0000:00:10.0 holds /boot/efi per /etc/fstab (/dev/nvme0n1)"),
        "{}",
        run.err("p-fstab")
    );
    assert!(!run.out("p-none").contains("iommuctl"), "a refused persist wrote: {}", run.out("p-none"));
    assert_eq!(run.rc("p-persist"), 0, "{}", run.err("p-persist"));
    let rule = run.out("p-rule");
    assert!(
        rule.contains("KERNEL==\"0000:00:10.0\", ATTR{vendor}==\"0x1b36\", ATTR{device}==\"0x0010\"")
            && rule.contains("was persisted with its IOMMU group: 0000:00:10.0 0000:00:10.1"),
        "{rule}"
    );
    assert_eq!(run.rc("p-check-ok"), 0, "{}{}", run.out("p-check-ok"), run.err("p-check-ok"));
    assert!(run.out("p-check-ok").contains("0000:00:10.0: binds 1b36:0010 to vfio-pci"), "{}", run.out("p-check-ok"));
    assert_eq!(run.rc("p-check"), 3, "{}", run.out("p-check"));
    assert!(
        run.out("p-check").contains("refused: persisted 0000:00:10.0 holds /boot/efi per /etc/fstab"),
        "{}",
        run.out("p-check")
    );
    assert_eq!(run.rc("p-remove"), 0, "{}", run.err("p-remove"));
}

/// Size of the btrfs partition: mkfs.btrfs wants about 110 MiB with its default profiles.
const BTRFS_PART: u64 = 128 << 20;
/// Size of the partition the device-mapper test stacks a linear target on.
const DM_PART: u64 = 16 << 20;

/// A raw disk with an MBR partition table: partition 1 a btrfs made on the host by `mkfs.btrfs`, partition
/// 2 empty (for a dm-linear device in the guest). Zero blocks are left as holes.
fn btrfs_disk(dir: &std::path::Path, mkfs: &std::path::Path) -> std::path::PathBuf {
    use std::io::{Read, Seek, SeekFrom, Write};
    let part = dir.join("p1.img");
    std::fs::File::create(&part).unwrap().set_len(BTRFS_PART).unwrap();
    let out = std::process::Command::new(mkfs).args(["-q", "-f", "-L", "lab-btrfs"]).arg(&part).output().unwrap();
    assert!(out.status.success(), "mkfs.btrfs: {}", String::from_utf8_lossy(&out.stderr));
    let disk_path = dir.join("disk.img");
    let mut disk = std::fs::File::create(&disk_path).unwrap();
    let start: u64 = 2048;
    let p1_sectors = BTRFS_PART / 512;
    let p2_sectors = DM_PART / 512;
    disk.set_len((start + p1_sectors + p2_sectors) * 512).unwrap();
    let mut mbr = [0u8; 512];
    for (i, (first, sectors)) in [(start, p1_sectors), (start + p1_sectors, p2_sectors)].into_iter().enumerate() {
        let e = &mut mbr[446 + 16 * i..446 + 16 * (i + 1)];
        e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
        e[4] = 0x83;
        e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        e[8..12].copy_from_slice(&(first as u32).to_le_bytes());
        e[12..16].copy_from_slice(&(sectors as u32).to_le_bytes());
    }
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    disk.write_all(&mbr).unwrap();
    let mut src = std::fs::File::open(&part).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut off = start * 512;
    loop {
        let n = src.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            disk.seek(SeekFrom::Start(off)).unwrap();
            disk.write_all(&buf[..n]).unwrap();
        }
        off += n as u64;
    }
    std::fs::remove_file(&part).unwrap();
    disk_path
}

/// The NVMe + edu slot of [`nvme_mf`], its disk a prepared image outside the run directory.
fn nvme_mf_disk(image: &std::path::Path) -> Topology {
    let mut t = Topology::new(
        "bind-nvme-btrfs",
        "6.1",
        Iommu::IntelVtd,
        "multifunction slot on pcie.0: nvme at 10.0 (btrfs + spare partition), edu at 10.1",
    );
    t.devices.push("-drive".into());
    t.devices.push(format!("if=none,id=d1,file={},format=raw", image.display()));
    t.devices.push("-device".into());
    t.devices.push("nvme,serial=lab-d1,drive=d1,bus=pcie.0,addr=0x10.0,multifunction=on".into());
    t.devices.push("-device".into());
    t.devices.push("edu,bus=pcie.0,addr=0x10.1".into());
    t
}

/// Issue "Hardening": a btrfs (mountinfo says `0:N`), a swap file on it, a dm-linear device on the disk's
/// other partition (alone, then mounted) and a mount only another mount namespace sees: each refused with
/// exit 3 naming the holder, the last by the kernel's exclusive-open answer alone. Once all are gone the
/// same dry run passes, so the refusals are not an artefact of the check itself.
#[test]
fn btrfs_swap_file_and_device_mapper_holders_are_refused_by_name() {
    if !require_lab() || !binaries_present() {
        return;
    }
    let mut tools = Vec::new();
    for (prog, pkg) in [("mkfs.btrfs", "btrfs-progs"), ("dmsetup", "dmsetup"), ("chattr", "e2fsprogs")] {
        match iommu_lab::find_program(prog) {
            Some(p) => tools.push(p),
            None => {
                skip_or_fail(&format!("{prog} not found (package {pkg}; scripts/lab-setup installs it)"));
                return;
            }
        }
    }
    let lab = iommu_lab::lab_dir();
    std::fs::create_dir_all(&lab).unwrap();
    let dir = tempfile::tempdir_in(&lab).unwrap();
    let image = btrfs_disk(dir.path(), &tools[0]);
    let mut script = prelude(&["0000:00:10.0", "0000:00:10.1"]);
    script.push_str(&format!(
        "export DM={dmsetup} CHATTR={chattr} DM_DISABLE_UDEV=1\n\
         i=0; while [ $i -lt 50 ] && ! [ -e /sys/class/block/nvme0n1p2 ]; do sleep 0.2; i=$((i+1)); done\n\
         section g-blk ls /sys/class/block\n\
         mkdir -p /mnt /mnt2 /mnt3\n\
         section g-mount mount -t btrfs /dev/nvme0n1p1 /mnt\n\
         section g-mountinfo cat /proc/self/mountinfo\n\
         section g-btrfs-bind $B bind 0000:00:10.0\n\
         section g-swapfile sh -c 'touch /mnt/swapfile && $CHATTR +C /mnt/swapfile && dd if=/dev/zero of=/mnt/swapfile bs=1M count=16 2>/dev/null && chmod 600 /mnt/swapfile && mkswap /mnt/swapfile >/dev/null && swapon /mnt/swapfile && cat /proc/swaps'\n\
         section g-swapfile-bind $B bind 0000:00:10.0\n\
         swapoff /mnt/swapfile\n\
         section g-umount umount /mnt\n\
         section g-dm sh -c 'echo \"0 $(cat /sys/class/block/nvme0n1p2/size) linear /dev/nvme0n1p2 0\" | $DM create labdm --noudevsync && ls /sys/class/block/nvme0n1p2/holders && cat /sys/class/block/dm-0/dm/name'\n\
         section g-dm-bind $B bind 0000:00:10.0\n\
         section g-dm-mount sh -c 'mke2fs -q /dev/mapper/labdm && mount -t ext4 /dev/mapper/labdm /mnt2'\n\
         section g-dm-mount-bind $B bind 0000:00:10.0\n\
         umount /mnt2\n\
         section g-dm-remove $DM remove --noudevsync labdm\n\
         unshare -m sh -c 'mount -t btrfs /dev/nvme0n1p1 /mnt3 && touch /tmp/ns-ready && sleep 600' &\n\
         NS=$!\n\
         i=0; while [ $i -lt 100 ] && ! [ -e /tmp/ns-ready ]; do sleep 0.1; i=$((i+1)); done\n\
         section g-ns-mountinfo cat /proc/self/mountinfo\n\
         section g-ns-bind $B bind 0000:00:10.0\n\
         kill $NS; wait $NS 2>/dev/null; pkill sleep 2>/dev/null\n\
         i=0; while [ $i -lt 50 ] && grep -q ' - btrfs ' /proc/*/mountinfo 2>/dev/null; do sleep 0.1; i=$((i+1)); done\n\
         section g-free-bind $B bind --dry-run 0000:00:10.0\n\
         section g-after drivers\n",
        dmsetup = tools[1].display(),
        chattr = tools[2].display(),
    ));
    let run = GuestSpec::new(&nvme_mf_disk(&image))
        .run_name("bind-nvme-btrfs")
        .binary(iommuctl_bin())
        .binary(&tools[1])
        .binary(&tools[2])
        .module("btrfs", true)
        .module("dm-mod", true)
        .script(&script)
        .boot()
        .expect("boot");
    let show = |s: &str| format!("rc={} stdout:\n{}stderr:\n{}", run.rc(s), run.out(s), run.err(s));
    let refused = |s: &str, holder: &str| {
        assert_eq!(run.rc(s), 3, "{s}: {}", show(s));
        let line = run.err(s).lines().find(|l| l.contains("refusing to bind")).unwrap_or("");
        assert!(line.contains(&format!("0000:00:10.0: {holder}")), "{s}: wanted {holder:?}; {}", show(s));
        eprintln!("{s}: {}", line.trim());
    };
    assert!(run.out("g-blk").contains("nvme0n1p2"), "{}", show("g-blk"));
    // The premise: the kernel reports the btrfs mount with an anonymous 0:N device number.
    assert_eq!(run.rc("g-mount"), 0, "{}", show("g-mount"));
    let mi = run.out("g-mountinfo");
    let btrfs = mi.lines().find(|l| l.contains(" - btrfs /dev/nvme0n1p1 ")).unwrap_or_else(|| panic!("{mi}"));
    assert!(btrfs.split(' ').nth(2).is_some_and(|d| d.starts_with("0:")), "{btrfs}");
    refused("g-btrfs-bind", "mounted file system /mnt (from /dev/nvme0n1p1)");
    assert!(run.out("g-swapfile").contains("/mnt/swapfile"), "swap file not active: {}", show("g-swapfile"));
    refused("g-swapfile-bind", "active swap file /mnt/swapfile on /dev/nvme0n1p1 (btrfs mounted at /mnt)");
    assert_eq!(run.rc("g-umount"), 0, "{}", show("g-umount"));
    assert!(run.out("g-dm").contains("labdm"), "{}", show("g-dm"));
    refused("g-dm-bind", "block device nvme0n1p2 is held by dm-0 (labdm)");
    assert_eq!(run.rc("g-dm-mount"), 0, "{}", show("g-dm-mount"));
    refused("g-dm-mount-bind", "mounted file system /mnt2 (from /dev/mapper/labdm) via dm-0 (labdm) over nvme0n1p2");
    assert_eq!(run.rc("g-dm-remove"), 0, "{}", show("g-dm-remove"));
    // Mounted in another mount namespace: our mountinfo does not show it, the kernel still says busy.
    assert!(!run.out("g-ns-mountinfo").contains("btrfs"), "{}", show("g-ns-mountinfo"));
    refused(
        "g-ns-bind",
        "block device nvme0n1p1 is in use (the kernel refused an exclusive open: mounted, a RAID/LVM/ZFS member or active swap)",
    );
    // Everything released: the same check lets the bind through.
    assert_eq!(run.rc("g-free-bind"), 0, "{}", show("g-free-bind"));
    assert!(!run.out("g-free-bind").contains(" ! "), "{}", show("g-free-bind"));
    assert!(run.out("g-after").contains("0000:00:10.0 nvme"), "a refusal changed a driver: {}", show("g-after"));
}
