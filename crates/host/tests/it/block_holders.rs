//! Claims about which block devices hold a PCI function, on trees laid out as Linux 6.1 lays out sysfs
//! (`sys/class/block` links into the function's directory, `dev` and `uevent` attributes, `holders/` and
//! `slaves/` between stacked devices, `sys/fs/btrfs/<fsid>/devices/`) and procfs (mountinfo with `0:N` for
//! btrfs and ZFS, swaps). The kernel's exclusive-open answer is played by a closure where a tree cannot
//! have real device nodes.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use iommu_host::safety::{exclusive_open, holders, BlockDevice, Exclusive};

use crate::util::{a, dev, whats, Tree};

/// Two NVMe functions: 01:00.0 (nvme0n1, p1..p3) and 02:00.0 (nvme1n1, p1..p2).
fn two_nvmes() -> Tree {
    let t = Tree::new();
    t.nvme("01:00.0", "nvme0", "nvme0n1", 0, 3);
    t.nvme("02:00.0", "nvme1", "nvme1n1", 10, 2);
    t
}

const BTRFS_ROOT: &str = "\
22 1 0:26 /@ / rw,relatime shared:1 - btrfs /dev/nvme0n1p2 rw,ssd,space_cache=v2,subvolid=256,subvol=/@\n\
23 22 0:26 /@home /home rw,relatime shared:2 - btrfs /dev/nvme0n1p2 rw,ssd,space_cache=v2,subvolid=257,subvol=/@home\n\
24 22 0:5 / /dev rw,nosuid shared:3 - devtmpfs udev rw,size=8000000k\n\
25 22 0:22 / /proc rw,nosuid shared:4 - proc proc rw\n";

#[test]
fn a_btrfs_root_with_an_anonymous_device_number_is_found_by_its_mount_source() {
    let t = two_nvmes();
    t.mountinfo(BTRFS_ROOT);
    let h = t.holders("01:00.0");
    assert_eq!(
        whats(&h),
        ["mounted file system / (from /dev/nvme0n1p2)", "mounted file system /home (from /dev/nvme0n1p2)"]
    );
    assert!(h.iter().all(|h| h.device == a("01:00.0")));
    assert!(t.holders("02:00.0").is_empty(), "{:?}", t.holders("02:00.0"));
}

#[test]
fn a_mount_source_that_is_a_symlink_is_followed_to_its_block_device() {
    let t = two_nvmes();
    fs::create_dir_all(t.root().join("dev/disk/by-uuid")).unwrap();
    symlink("../../nvme1n1p1", t.root().join("dev/disk/by-uuid/0b1f")).unwrap();
    t.mountinfo("30 1 0:40 / /data rw - btrfs /dev/disk/by-uuid/0b1f rw\n");
    assert_eq!(whats(&t.holders("02:00.0")), ["mounted file system /data (from /dev/disk/by-uuid/0b1f) via nvme1n1p1"]);
    assert!(t.holders("01:00.0").is_empty());
}

#[test]
fn every_member_of_a_multi_device_btrfs_is_held() {
    let t = two_nvmes();
    t.mountinfo(BTRFS_ROOT);
    let fsid = "sys/fs/btrfs/5c1e4e8a-3c5e-4b6a-9d0a-8f6f1f2b7c11";
    fs::create_dir_all(t.root().join(fsid).join("devices")).unwrap();
    for m in ["nvme0n1p2", "nvme1n1p1"] {
        let target = fs::canonicalize(t.root().join("sys/class/block").join(m)).unwrap();
        symlink(target, t.root().join(fsid).join("devices").join(m)).unwrap();
    }
    // Another btrfs that does not include nvme0n1p2 holds nothing of interest.
    fs::create_dir_all(t.root().join("sys/fs/btrfs/other/devices/nvme1n1p2")).unwrap();
    let h = t.holders("02:00.0");
    assert_eq!(
        whats(&h),
        [
            "mounted file system / (from /dev/nvme0n1p2), btrfs member nvme1n1p1",
            "mounted file system /home (from /dev/nvme0n1p2), btrfs member nvme1n1p1",
        ]
    );
    assert_eq!(h[0].device, a("02:00.0"));
}

#[test]
fn a_swap_file_holds_the_disk_of_the_file_system_it_lives_on() {
    let t = two_nvmes();
    // / is a btrfs on the other NVMe; /swap is its own btrfs subvolume mount from nvme0n1p3.
    t.mountinfo(
        "22 1 0:26 /@ / rw - btrfs /dev/nvme1n1p1 rw,subvol=/@\n\
         40 22 0:31 /@swap /swap rw - btrfs /dev/nvme0n1p3 rw,subvol=/@swap\n",
    );
    t.swaps("/swap/swapfile                          file\t\t8388604\t\t0\t\t-2\n");
    assert_eq!(
        whats(&t.holders("01:00.0")),
        [
            "active swap file /swap/swapfile on /dev/nvme0n1p3 (btrfs mounted at /swap)",
            "mounted file system /swap (from /dev/nvme0n1p3)"
        ]
    );
    // The other NVMe holds / but not the swap file.
    assert_eq!(whats(&t.holders("02:00.0")), ["mounted file system / (from /dev/nvme1n1p1)"]);
}

#[test]
fn a_swap_files_own_device_number_decides_over_its_path() {
    let t = two_nvmes();
    // The file exists in the tree: its st_dev is the temporary directory's file system. A mountinfo line
    // with that number (anonymous, as btrfs shows it) says which device it is; the longest-prefix mount
    // (/ on the other NVMe) must not win.
    t.write("srv/swapfile", "");
    let st = rustix::fs::stat(t.root().join("srv/swapfile")).unwrap();
    let num = format!("{}:{}", rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev));
    assert_ne!(num, "0:26");
    t.mountinfo(&format!(
        "22 1 0:26 / / rw - btrfs /dev/nvme1n1p1 rw\n\
         41 22 {num} / /mnt/elsewhere rw - btrfs /dev/nvme0n1p1 rw\n"
    ));
    t.swaps("/srv/swapfile file 1024 0 -3\n");
    let all = t.holders("01:00.0");
    let h = whats(&all).into_iter().filter(|w| w.starts_with("active swap")).collect::<Vec<_>>();
    assert_eq!(h, ["active swap file /srv/swapfile on /dev/nvme0n1p1 (btrfs mounted at /mnt/elsewhere)"]);
    assert!(!t.holders("02:00.0").iter().any(|h| h.what.starts_with("active swap")));
}

#[test]
fn a_mounted_dm_device_over_a_partition_is_named_once_with_its_name() {
    let t = two_nvmes();
    t.stacked("dm-0", "254:0", &["nvme0n1p3"], ("dm/name", "vg-root"));
    t.mountinfo("22 1 254:0 / / rw,relatime - ext4 /dev/mapper/vg-root rw\n");
    assert_eq!(
        whats(&t.holders("01:00.0")),
        ["mounted file system / (from /dev/mapper/vg-root) via dm-0 (vg-root) over nvme0n1p3"]
    );
    assert!(t.holders("02:00.0").is_empty());
}

#[test]
fn a_dm_device_nothing_mounts_still_holds_the_partition_below_it() {
    let t = two_nvmes();
    t.stacked("dm-0", "254:0", &["nvme0n1p3"], ("dm/name", "luks-7a0c"));
    t.stacked("dm-1", "254:1", &["dm-0"], ("dm/name", "vg-swap"));
    t.mountinfo("");
    t.swaps("/dev/dm-1 partition 1024 0 -2\n");
    // Swap on dm-1 over dm-0 over nvme0n1p3: named through both layers, and no "held by" line besides.
    assert_eq!(
        whats(&t.holders("01:00.0")),
        ["active swap on /dev/dm-1 via dm-1 (vg-swap) over dm-0 (luks-7a0c) over nvme0n1p3"]
    );
    // Without the swap, the stack itself is what holds the partition; the kernel's busy answer for dm-1
    // is carried into the sentence.
    t.swaps("");
    let probe = |b: &BlockDevice| if b.name == "dm-1" { Exclusive::Busy } else { Exclusive::Free };
    assert_eq!(
        whats(&t.holders_with("01:00.0", &probe)),
        [format!(
            "block device nvme0n1p3 is held by dm-0 (luks-7a0c), held by dm-1 (vg-swap), which is in use ({})",
            iommu_host::safety::BUSY_UNNAMED
        )]
    );
    assert_eq!(
        whats(&t.holders("01:00.0")),
        ["block device nvme0n1p3 is held by dm-0 (luks-7a0c), held by dm-1 (vg-swap)"]
    );
}

#[test]
fn an_md_array_holds_each_member_and_its_mount_is_named_through_it() {
    let t = two_nvmes();
    t.stacked("md0", "9:0", &["nvme0n1p1", "nvme1n1p1"], ("md/level", "raid1"));
    t.mountinfo("");
    assert_eq!(whats(&t.holders("01:00.0")), ["block device nvme0n1p1 is held by md0 (raid1)"]);
    assert_eq!(whats(&t.holders("02:00.0")), ["block device nvme1n1p1 is held by md0 (raid1)"]);
    t.mountinfo("30 1 9:0 / /srv rw - xfs /dev/md0 rw\n");
    assert_eq!(
        whats(&t.holders("02:00.0")),
        ["mounted file system /srv (from /dev/md0) via md0 (raid1) over nvme1n1p1"]
    );
    // Both functions at once: one line each.
    let h = holders(t.root(), &[&dev("01:00.0"), &dev("02:00.0")]);
    assert_eq!(h.len(), 2, "{h:?}");
}

#[test]
fn a_zfs_member_the_kernel_calls_busy_is_refused_and_the_pool_is_named() {
    let t = two_nvmes();
    t.write(
        "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/nvme/nvme0/nvme0n1/nvme0n1p3/uevent",
        "MAJOR=259\nMINOR=3\nDEVNAME=nvme0n1p3\nDEVTYPE=partition\nPARTN=3\nPARTNAME=zfs-9c1d2e4f6a7b8c0d\n",
    );
    t.mountinfo(
        "22 1 0:26 / / rw,relatime - zfs rpool/ROOT/pve-1 rw,xattr,noacl\n\
         23 22 0:27 / /rpool rw - zfs rpool rw,xattr,noacl\n",
    );
    // No node in the tree: the mount alone cannot be tied to a disk.
    assert!(t.holders("01:00.0").is_empty());
    // The kernel's answer: the partition (and so its disk) are busy.
    let probe = |b: &BlockDevice| match b.name.as_str() {
        "nvme0n1p3" | "nvme0n1" => Exclusive::Busy,
        _ => Exclusive::Free,
    };
    let h = t.holders_with("01:00.0", &probe);
    assert_eq!(h.len(), 1, "{h:?}");
    let w = &h[0].what;
    assert!(w.starts_with("block device nvme0n1p3 is in use (the kernel refused an exclusive open: mounted, a RAID/LVM/ZFS member or active swap)"), "{w}");
    assert!(w.contains("partition name zfs-9c1d2e4f6a7b8c0d marks a ZFS member"), "{w}");
    assert!(w.contains("ZFS pool rpool imported here"), "{w}");
}

#[test]
fn a_busy_device_nothing_names_is_refused_and_said_so_plainly() {
    let t = two_nvmes();
    t.mountinfo(BTRFS_ROOT);
    // nvme1n1 (whole disk, no partition in use) is busy and nothing names it.
    let probe = |b: &BlockDevice| if b.name == "nvme1n1" { Exclusive::Busy } else { Exclusive::Free };
    assert_eq!(
        whats(&t.holders_with("02:00.0", &probe)),
        ["block device nvme1n1 is in use (the kernel refused an exclusive open: mounted, a RAID/LVM/ZFS member or active swap)"]
    );
    // A disk that is busy because a named partition is mounted gets no second line.
    let probe = |b: &BlockDevice| {
        if b.name == "nvme0n1" || b.name == "nvme0n1p2" {
            Exclusive::Busy
        } else {
            Exclusive::Free
        }
    };
    assert_eq!(t.holders_with("01:00.0", &probe).len(), 2);
    // A check that cannot be made refuses too.
    let probe = |b: &BlockDevice| {
        if b.name == "nvme1n1p2" {
            Exclusive::Failed("cannot open /dev/nvme1n1p2 exclusively: Permission denied".into())
        } else {
            Exclusive::Free
        }
    };
    assert_eq!(
        whats(&t.holders_with("02:00.0", &probe)),
        ["cannot check whether block device nvme1n1p2 is in use: cannot open /dev/nvme1n1p2 exclusively: Permission denied"]
    );
}

#[test]
fn an_unreadable_mountinfo_refuses_unless_the_kernel_called_every_device_free() {
    let t = two_nvmes();
    // A directory where the table should be: it cannot be read.
    fs::create_dir_all(t.root().join("proc/self/mountinfo")).unwrap();
    let h = t.holders("01:00.0");
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(h[0].what.contains("proc/self/mountinfo"), "{}", h[0].what);
    assert!(h[0].what.contains("not a regular file"), "{}", h[0].what);
    assert!(
        h[0].what.ends_with("(so what holds its block devices nvme0n1, nvme0n1p1, nvme0n1p2, nvme0n1p3 is unknown)"),
        "{}",
        h[0].what
    );
    // A function without block devices is not concerned.
    let nic = t.root().join("sys/devices/pci0000:00/0000:00:01.3/0000:03:00.0/net/eth0");
    fs::create_dir_all(nic).unwrap();
    assert!(t.holders("03:00.0").is_empty());
    // When the kernel granted an exclusive open of every block device, nothing holds them whatever the
    // table would have said.
    assert!(t.holders_with("01:00.0", &|_| Exclusive::Free).is_empty());
    // Partly free: the rest is still unknown.
    let h = t.holders_with("01:00.0", &|b| {
        if b.name == "nvme0n1p1" {
            Exclusive::NoNode("x".into())
        } else {
            Exclusive::Free
        }
    });
    assert_eq!(whats(&h).len(), 1);
    assert!(h[0].what.ends_with("(so what holds its block devices nvme0n1p1 is unknown)"), "{}", h[0].what);
}

#[test]
fn an_unreadable_swaps_refuses_too_and_a_missing_table_in_a_test_tree_does_not() {
    let t = two_nvmes();
    t.mountinfo("");
    assert!(t.holders("01:00.0").is_empty(), "a tree without proc/swaps models no swap");
    t.write("proc/swaps", &"x".repeat(17 << 20));
    let h = t.holders("01:00.0");
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(h[0].what.contains("proc/swaps is larger than"), "{}", h[0].what);
}

#[test]
fn escaped_paths_in_mountinfo_and_swaps_are_unescaped() {
    let t = two_nvmes();
    t.mountinfo(
        "31 1 259:1 / /mnt/my\\040disk\\011tab rw - ext4 /dev/nvme0n1p1 rw\n\
         32 1 0:40 / /media/back\\134slash rw - btrfs /dev/nvme1n1p2 rw\n",
    );
    t.swaps("/media/back\\134slash/swap\\040file file 1024 0 -3\n");
    assert_eq!(whats(&t.holders("01:00.0")), ["mounted file system /mnt/my disk\ttab (from /dev/nvme0n1p1)"]);
    assert_eq!(
        whats(&t.holders("02:00.0")),
        [
            "active swap file /media/back\\slash/swap file on /dev/nvme1n1p2 (btrfs mounted at /media/back\\slash)",
            "mounted file system /media/back\\slash (from /dev/nvme1n1p2)",
        ]
    );
}

#[test]
fn exclusive_open_asks_only_a_block_node_of_the_right_number() {
    let t = Tree::new();
    let b = |devname: &str, num: Option<&str>| BlockDevice {
        name: "nvme0n1".into(),
        dev: num.and_then(iommu_host::mounts::DevNum::parse),
        devname: devname.into(),
    };
    let msg = |e: Exclusive| match e {
        Exclusive::NoNode(m) => m,
        other => panic!("{other:?}"),
    };
    assert!(msg(exclusive_open(t.root(), &b("nvme0n1", None))).contains("no device number"));
    assert!(msg(exclusive_open(t.root(), &b("nvme0n1", Some("259:0")))).contains("dev"));
    fs::create_dir_all(t.root().join("dev")).unwrap();
    assert!(msg(exclusive_open(t.root(), &b("nvme0n1", Some("259:0")))).contains("no device node"));
    assert!(msg(exclusive_open(t.root(), &b("../etc/passwd", Some("259:0")))).contains("unusable device name"));
    fs::write(t.root().join("dev/nvme0n1"), "").unwrap();
    assert!(msg(exclusive_open(t.root(), &b("nvme0n1", Some("259:0")))).contains("is a regular file"));
    // A symlink is never followed, even to a real block device.
    if let Some(real) = fs::read_dir("/sys/class/block").ok().and_then(|mut rd| rd.next()).and_then(|e| e.ok()) {
        let name = real.file_name().into_string().unwrap();
        symlink(format!("/dev/{name}"), t.root().join("dev/link")).unwrap();
        let num = fs::read_to_string(real.path().join("dev")).unwrap();
        assert!(msg(exclusive_open(t.root(), &b("link", Some(num.trim())))).contains("is a symbolic link"));
    }
    // A directory where /dev should be is no way around it.
    let t2 = Tree::new();
    symlink("/dev", t2.root().join("dev")).unwrap();
    assert!(
        msg(exclusive_open(t2.root(), &b("nvme0n1", Some("259:0")))).contains("is a symbolic link, not a directory")
    );
}

/// On the machine running the tests: the block device holding the test's own file system is busy, as the
/// kernel sees it. Only where that file system has a block device of its own number and the test may open
/// device nodes (root); elsewhere there is nothing to ask and the test says so.
#[test]
fn the_kernel_calls_the_disk_of_a_mounted_file_system_busy() {
    let st = rustix::fs::stat("/").unwrap();
    let num = format!("{}:{}", rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev));
    let Ok(sys) = fs::canonicalize(format!("/sys/dev/block/{num}")) else {
        eprintln!("/ is on {num}, which is not a block device here: nothing to ask");
        return;
    };
    let name = sys.file_name().unwrap().to_string_lossy().into_owned();
    let b = BlockDevice { name: name.clone(), dev: iommu_host::mounts::DevNum::parse(&num), devname: name };
    match exclusive_open(Path::new("/"), &b) {
        Exclusive::Busy => {}
        // Not root, or a sandbox that forbids opening block devices at all.
        Exclusive::Failed(m) if m.contains("Permission denied") || m.contains("Operation not permitted") => {
            eprintln!("the kernel will not let this test ask: {m}")
        }
        other => panic!("/ is mounted from {}, yet the exclusive open said {other:?}", b.name),
    }
}
