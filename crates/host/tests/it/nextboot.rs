//! Claims about the persist guard: the next boot simulated from the persisted rules, this boot's groups,
//! `/etc/fstab` (tags through `/dev/disk/by-*` links), the current mounts and swap, and the boot VGA device.
//! The trees model a Linux host as 6.1 lays it out; the snapshots are built in code.

use std::fs;
use std::os::unix::fs::symlink;

use iommu_host::nextboot::{simulate, NextBoot};
use iommu_host::persist::{DeviceIds, Persisted};
use iommu_host::{HostDevice, Snapshot};

use crate::util::{a, config, dev, group, n, snapshot, Tree};

const NVME: DeviceIds = DeviceIds { vendor: 0x144d, device: 0xa808 };
const GPU: DeviceIds = DeviceIds { vendor: 0x10de, device: 0x1b80 };

fn with_ids(addr: &str, ids: DeviceIds, class: u8) -> HostDevice {
    let mut d = dev(addr);
    let mut c = config(ids.vendor, ids.device).bytes();
    c[0x0b] = class;
    d.config = c;
    d
}

/// An NVMe at 01:00.0 (nvme0n1, partitions p1..p3) alone in group 1; a GPU (boot VGA) and its audio
/// function at 02:00.0/.1 in group 2; `/etc/fstab` mounts / and /boot/efi by UUID and swaps on a file.
fn host() -> (Tree, Snapshot) {
    let t = Tree::new();
    t.nvme("01:00.0", "nvme0", "nvme0n1", 0, 3);
    t.write(
        "etc/fstab",
        "# <file system> <mount point> <type> <options> <dump> <pass>\n\
         UUID=abcd / ext4 errors=remount-ro 0 1\n\
         UUID=EF-01 /boot/efi vfat umask=0077 0 1\n\
         /swapfile none swap sw 0 0\n",
    );
    let by = t.root().join("dev/disk/by-uuid");
    fs::create_dir_all(&by).unwrap();
    symlink("../../nvme0n1p2", by.join("abcd")).unwrap();
    symlink("../../nvme0n1p1", by.join("EF-01")).unwrap();
    let mut gpu = with_ids("02:00.0", GPU, 0x03);
    gpu.boot_vga = Some(true);
    gpu.iommu_group = Some(2);
    let mut audio = with_ids("02:00.1", DeviceIds { vendor: 0x10de, device: 0x10f0 }, 0x04);
    audio.iommu_group = Some(2);
    let mut nvme = with_ids("01:00.0", NVME, 0x01);
    nvme.iommu_group = Some(1);
    let snap = snapshot(
        vec![nvme, gpu, audio],
        vec![group(1, vec![a("01:00.0")]), group(2, vec![a("02:00.0"), a("02:00.1")])],
    );
    (t, snap)
}

fn rule(addr: &str, ids: Option<DeviceIds>, g: &[&str]) -> Persisted {
    Persisted {
        ids,
        group: (!g.is_empty()).then(|| g.iter().map(|x| a(x)).collect()),
        ..Persisted::new(a(addr), n("vfio-pci"))
    }
}

/// The NVMe (the boot disk in [`host`]) persisted with its IDs and group.
fn nvme_rule() -> [Persisted; 1] {
    [rule("01:00.0", Some(NVME), &["01:00.0"])]
}

fn gpu_rules() -> Vec<Persisted> {
    vec![
        rule("02:00.0", Some(GPU), &["02:00.0", "02:00.1"]),
        rule("02:00.1", Some(DeviceIds { vendor: 0x10de, device: 0x10f0 }), &["02:00.0", "02:00.1"]),
    ]
}

fn refusals(b: &NextBoot) -> Vec<&str> {
    b.refusals.iter().map(|r| r.what.as_str()).collect()
}

fn warnings(b: &NextBoot) -> Vec<&str> {
    b.entries.iter().flat_map(|e| e.warnings.iter().map(String::as_str)).collect()
}

/// A second display, so the GPU is not the only one.
fn with_igpu(mut s: Snapshot) -> Snapshot {
    s.devices.push(with_ids("00:02.0", DeviceIds { vendor: 0x8086, device: 0x9a49 }, 0x03));
    s
}

#[test]
fn the_boot_disks_group_is_refused_naming_each_boot_mount_from_fstab() {
    let (t, snap) = host();
    let b = simulate(t.root(), &snap, &nvme_rule());
    assert!(b.refused());
    let r = refusals(&b);
    assert!(r.contains(&"persisted 0000:01:00.0 holds / per /etc/fstab (UUID=abcd is nvme0n1p2)"), "{r:#?}");
    assert!(r.contains(&"persisted 0000:01:00.0 holds /boot/efi per /etc/fstab (UUID=EF-01 is nvme0n1p1)"), "{r:#?}");
    assert!(
        r.contains(
            &"persisted 0000:01:00.0 holds swap per /etc/fstab (/swapfile, a file on / (UUID=abcd is nvme0n1p2))"
        ),
        "{r:#?}"
    );
    assert!(b.entries[0].binds && b.entries[0].warnings.is_empty(), "{:?}", b.entries);
}

#[test]
fn a_gpu_group_with_another_display_left_passes_without_warnings() {
    let (t, snap) = host();
    let b = simulate(t.root(), &with_igpu(snap), &gpu_rules());
    assert!(!b.refused() && !b.warned(), "{b:#?}");
    assert_eq!(b.entries.len(), 2);
    assert!(b.entries.iter().all(|e| e.binds && e.now == e.recorded));
}

#[test]
fn the_boot_vga_device_is_refused_when_no_other_display_is_left() {
    let (t, snap) = host();
    let b = simulate(t.root(), &snap, &gpu_rules());
    assert_eq!(
        refusals(&b),
        ["persisted 0000:02:00.0 is the boot VGA device, and no other display device is left"],
        "{b:#?}"
    );
}

#[test]
fn a_group_that_grew_to_take_the_boot_disk_warns_and_refuses() {
    let (t, mut snap) = host();
    // After a firmware update the GPU's port lost ACS: the NVMe is in the GPU's group now.
    snap.groups = vec![group(2, vec![a("01:00.0"), a("02:00.0"), a("02:00.1")])];
    snap.devices[0].iommu_group = Some(2);
    let b = simulate(t.root(), &with_igpu(snap), &gpu_rules());
    assert!(
        warnings(&b)
            .iter()
            .any(|w| w.contains("the IOMMU group of 0000:02:00.0 grew since it was persisted: now also 0000:01:00.0")),
        "{b:#?}"
    );
    let r = refusals(&b);
    assert!(
        r.contains(
            &"0000:01:00.0, in the IOMMU group of persisted 0000:02:00.0, holds / per /etc/fstab (UUID=abcd is nvme0n1p2)"
        ),
        "{r:#?}"
    );
}

#[test]
fn a_card_that_moved_is_left_alone_by_the_id_match_and_warned_about() {
    let (t, snap) = host();
    // The GPU was persisted at 01:00.0; the NVMe is in that slot now.
    let b = simulate(t.root(), &snap, &[rule("01:00.0", Some(GPU), &["01:00.0"])]);
    assert!(!b.refused(), "{b:#?}");
    assert!(!b.entries[0].binds);
    assert_eq!(b.entries[0].now, Some(NVME));
    assert!(warnings(&b)[0].contains("0000:01:00.0 now holds 144d:a808, not the 10de:1b80 persisted there"), "{b:#?}");
}

#[test]
fn a_rule_without_ids_binds_whatever_is_there_so_it_is_refused_on_the_boot_disk() {
    let (t, snap) = host();
    let b = simulate(t.root(), &snap, &[rule("01:00.0", None, &[])]);
    assert!(b.entries[0].binds);
    assert!(b.refused(), "{b:#?}");
    let w = warnings(&b);
    assert!(w.iter().any(|w| w.contains("matches the address alone") && w.contains("(now 144d:a808)")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("no group was recorded")), "{w:?}");
}

#[test]
fn an_address_with_no_device_binds_nothing_and_warns() {
    let (t, snap) = host();
    let b = simulate(t.root(), &snap, &[rule("07:00.0", Some(GPU), &["07:00.0"])]);
    assert!(!b.refused() && !b.entries[0].binds);
    assert_eq!(warnings(&b), ["no device at 0000:07:00.0 now: the rule binds nothing"]);
}

#[test]
fn mounts_and_swap_of_this_boot_count_without_fstab() {
    let (t, snap) = host();
    fs::remove_file(t.root().join("etc/fstab")).unwrap();
    t.mountinfo("22 1 0:2 / / rw - rootfs rootfs rw\n30 22 259:1 / /boot rw - ext4 /dev/nvme0n1p1 rw\n");
    t.swaps("/dev/nvme0n1p3                          partition\t1048572\t\t0\t\t-2\n");
    let b = simulate(t.root(), &snap, &nvme_rule());
    assert_eq!(
        refusals(&b),
        [
            "persisted 0000:01:00.0 holds /boot, mounted now from /dev/nvme0n1p1",
            "persisted 0000:01:00.0 holds active swap on /dev/nvme0n1p3"
        ]
    );
    // Another mount point of this boot is bind's business, not the next boot's.
    t.mountinfo("30 1 259:1 / /srv rw - ext4 /dev/nvme0n1p1 rw\n");
    t.swaps("");
    assert!(!simulate(t.root(), &snap, &nvme_rule()).refused());
}

#[test]
fn other_fstab_file_systems_warn_unless_nofail_or_noauto() {
    let (t, snap) = host();
    let by = t.root().join("dev/disk/by-label");
    fs::create_dir_all(&by).unwrap();
    symlink("../../nvme0n1p3", by.join("data")).unwrap();
    let p = nvme_rule();
    for (line, waits) in [
        ("LABEL=data /srv xfs defaults 0 2\n", true),
        ("LABEL=data /srv xfs defaults,nofail 0 2\n", false),
        ("LABEL=data /srv xfs noauto 0 2\n", false),
    ] {
        t.write("etc/fstab", line);
        let b = simulate(t.root(), &snap, &p);
        assert!(!b.refused(), "{line}: {b:#?}");
        assert_eq!(b.waits.len(), usize::from(waits), "{line}: {b:#?}");
        if waits {
            assert_eq!(
                b.waits[0].what,
                "persisted 0000:01:00.0 holds /srv per /etc/fstab (LABEL=data is nvme0n1p3), which the boot waits for \
                 (no nofail)"
            );
            assert!(b.warned());
        }
    }
}

#[test]
fn an_fstab_boot_entry_that_resolves_to_nothing_refuses_functions_with_storage_only() {
    let (t, snap) = host();
    t.write("etc/fstab", "UUID=gone / ext4 defaults 0 1\n");
    let b = simulate(t.root(), &snap, &nvme_rule());
    assert_eq!(
        refusals(&b),
        ["persisted 0000:01:00.0 has block devices, and what the host boots from is not known: /etc/fstab names \
             UUID=gone for /, and no block device here is it"]
    );
    // The tag's value is never taken for a kernel name.
    t.write("etc/fstab", "LABEL=nvme0n1p2 / ext4 defaults 0 1\n");
    assert!(simulate(t.root(), &snap, &nvme_rule()).refused());
    // Functions without block devices are not refused for it.
    assert!(!simulate(t.root(), &with_igpu(snap), &gpu_rules()).refused());
}

#[test]
fn an_unreadable_fstab_refuses_functions_with_storage() {
    let (t, snap) = host();
    let f = t.root().join("etc/fstab");
    fs::remove_file(&f).unwrap();
    rustix::fs::mknodat(rustix::fs::CWD, &f, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o644), 0)
        .unwrap();
    let b = simulate(t.root(), &snap, &nvme_rule());
    assert!(b.refused(), "{b:#?}");
    assert!(refusals(&b)[0].contains("what the host boots from is not known"), "{b:#?}");
    assert!(refusals(&b)[0].contains("fstab"), "{b:#?}");
}

#[test]
fn a_label_with_a_space_resolves_through_the_link_udev_names_with_an_escape() {
    let (t, snap) = host();
    let by = t.root().join("dev/disk/by-label");
    fs::create_dir_all(&by).unwrap();
    symlink("../../nvme0n1p2", by.join("root\\x20disk")).unwrap();
    t.write("etc/fstab", "LABEL=root\\040disk / ext4 defaults 0 1\n");
    let b = simulate(t.root(), &snap, &nvme_rule());
    assert_eq!(refusals(&b), ["persisted 0000:01:00.0 holds / per /etc/fstab (LABEL=root disk is nvme0n1p2)"]);
}

#[test]
fn a_boot_mount_point_with_a_trailing_slash_is_still_a_boot_mount() {
    let (t, snap) = host();
    t.write("etc/fstab", "UUID=EF-01 /boot/efi/ vfat umask=0077 0 1\n");
    let b = simulate(t.root(), &snap, &nvme_rule());
    assert_eq!(refusals(&b), ["persisted 0000:01:00.0 holds /boot/efi per /etc/fstab (UUID=EF-01 is nvme0n1p1)"]);
}

#[test]
fn a_zfs_root_or_a_multipath_nvme_root_is_unknown_and_refuses_functions_with_storage() {
    let (t, snap) = host();
    fs::remove_file(t.root().join("etc/fstab")).unwrap();
    t.mountinfo("22 1 0:25 / / rw - zfs rpool/ROOT/debian rw,xattr\n");
    let b = simulate(t.root(), &snap, &nvme_rule());
    assert!(
        refusals(&b)[0].contains("/ is mounted from rpool/ROOT/debian (zfs), whose disks sysfs does not show"),
        "{b:#?}"
    );
    assert!(!simulate(t.root(), &with_igpu(snap.clone()), &gpu_rules()).refused(), "a GPU has no storage");
    // NVMe native multipath: the namespace node sits below nvme-subsystem, on no PCI function.
    t.block("devices/virtual/nvme-subsystem/nvme-subsys1/nvme1n1", "nvme1n1", "259:9");
    t.mountinfo("22 1 259:9 / / rw - ext4 /dev/nvme1n1 rw\n");
    let b = simulate(t.root(), &snap, &nvme_rule());
    assert!(refusals(&b)[0].contains("nvme1n1 is an NVMe multipath device"), "{b:#?}");
}

#[test]
fn swap_on_zram_needs_nothing_and_nofail_swap_only_warns() {
    let (t, snap) = host();
    t.write("etc/fstab", "/dev/zram0 none swap defaults,pri=100 0 0\n/dev/nvme0n1p3 none swap sw,nofail 0 0\n");
    t.swaps("/dev/zram0                              partition\t8388604\t\t0\t\t100\n");
    let b = simulate(t.root(), &snap, &nvme_rule());
    assert!(!b.refused(), "{b:#?}");
    assert_eq!(b.waits.len(), 1, "{b:#?}");
    assert!(b.waits[0].what.contains("swap per /etc/fstab (/dev/nvme0n1p3), which has nofail"), "{b:#?}");
}

#[test]
fn a_swap_file_with_no_fstab_root_entry_is_placed_through_the_mounts_of_this_boot() {
    let (t, snap) = host();
    // The root comes from root= on the command line: fstab only has the swap file.
    t.write("etc/fstab", "/swapfile none swap sw 0 0\n");
    t.mountinfo("22 1 259:2 / / rw - ext4 /dev/nvme0n1p2 rw\n");
    let b = simulate(t.root(), &snap, &nvme_rule());
    assert!(
        refusals(&b).contains(
            &"persisted 0000:01:00.0 holds swap per /etc/fstab (/swapfile, a file on / (/dev/nvme0n1p2 mounted now))"
        ),
        "{b:#?}"
    );
    // A second disk is not the host's: it persists.
    t.nvme("02:00.0", "nvme1", "nvme1n1", 10, 1);
    let mut snap2 = snap.clone();
    let mut d = with_ids("02:00.0", NVME, 0x01);
    d.iommu_group = Some(3);
    snap2.devices.push(d);
    snap2.groups.push(group(3, vec![a("02:00.0")]));
    assert!(!simulate(t.root(), &snap2, &[rule("02:00.0", Some(NVME), &["02:00.0"])]).refused());
}

#[test]
fn a_compute_card_is_not_a_display_left_for_the_console() {
    let (t, snap) = host();
    let mut s = snap.clone();
    s.devices.push(with_ids("04:00.0", DeviceIds { vendor: 0x10de, device: 0x20b0 }, 0x03));
    s.devices.last_mut().unwrap().config[0x0a] = 0x02; // 3D controller
    assert!(simulate(t.root(), &s, &gpu_rules()).refused(), "a 3D controller left the boot VGA persistable");
    s.devices.last_mut().unwrap().config[0x0a] = 0x80; // other display controller
    assert!(!simulate(t.root(), &s, &gpu_rules()).refused());
}

#[test]
fn a_bridge_above_the_boot_disk_in_a_persisted_group_takes_nothing() {
    let (t, mut snap) = host();
    // The NVMe's root port 00:01.0 shares the GPU's group; the port stays on pcieport, the disk below it
    // in a group of its own.
    let mut port = with_ids("00:01.0", DeviceIds { vendor: 0x8086, device: 0x1901 }, 0x06);
    port.config[0x0a] = 0x04;
    port.config[0x0e] = 0x01; // a type 1 (bridge) header
    port.iommu_group = Some(2);
    snap.devices.push(port);
    snap.groups[1].devices.insert(0, a("00:01.0"));
    let b = simulate(t.root(), &with_igpu(snap), &gpu_rules());
    assert!(!b.refused(), "{b:#?}");
}
