//! What holds a device: block devices in use (mounted, swap, RAID/LVM/dm/btrfs/ZFS members), a framebuffer
//! console on the boot GPU, network interfaces that are up. Binding such a device away from its driver would
//! take the host's disk, console or network with it.
//!
//! Block devices are checked two ways:
//!
//! 1. **The kernel's own answer.** Every block device below a function (its disks and partitions, found by
//!    their canonical `sys/class/block` paths, and the dm/md/bcache devices stacked on them through
//!    `holders/`) is opened `O_RDONLY|O_EXCL|O_NONBLOCK|O_CLOEXEC` at `/dev/<name>` below the root. `EBUSY`
//!    means something holds it: a mount by any file system, a btrfs/ZFS/md/dm/LVM member, active swap. The
//!    node is opened only when it `lstat`s as a block device whose number is the sysfs `dev` attribute, and
//!    never through a final symlink. A test tree (a `--root` with no real nodes) has no such node and skips
//!    this check.
//! 2. **Naming the holder**, where it can be known: mountinfo lines matched by device number and, for the
//!    anonymous `0:N` numbers of btrfs and ZFS, by mount source; the other members of a multi-device btrfs
//!    from `sys/fs/btrfs/<fsid>/devices/`; swap partitions from `/proc/swaps` and swap *files* through the
//!    file system that holds them; dm/md/bcache devices stacked on a disk from `holders/` (`dm-0 (vg-root)`,
//!    `md0 (raid1)`); ZFS pools from `zfs` mounts. A device the kernel calls busy that nothing names is
//!    still refused, and the holder text says so.
//!
//! A mount or swap table that cannot be read is not "nothing holds it": every function with a block device
//! that the exclusive open did not prove free gets a holder saying which table could not be read (so a
//! bind refuses unless `--force`). A table that is simply missing counts as empty only in a test tree:
//! below `/`, or where `proc` below the root is a real procfs, a missing table is unreadable too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use iommu_fsio::Limit;
use iommu_pci::PciAddress;
use rustix::fs::{FileType, Mode, OFlags};
use serde::Serialize;

use crate::mounts::{parse_fstab, parse_mountinfo, parse_swaps, DevNum, FstabEntry, MountEntry, SwapEntry};
use crate::snapshot::HostDevice;

/// Something that holds a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// The device held.
    pub device: PciAddress,
    /// What holds it, as a sentence fragment (e.g. `mounted file system / (from /dev/nvme0n1p1)`).
    pub what: String,
}

/// A block device below the functions checked, as handed to the exclusive-open check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDevice {
    /// The kernel's name (`nvme0n1p2`, `dm-0`, `md0`), as in `sys/class/block`.
    pub name: String,
    /// Its device number from the sysfs `dev` attribute, when there is one.
    pub dev: Option<DevNum>,
    /// Its node below `/dev` (the `DEVNAME` of its `uevent`, else its name with `!` as `/`).
    pub devname: String,
}

/// What an exclusive open of a block device's node said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exclusive {
    /// The kernel granted the exclusive open (or the device has no medium): nothing holds it.
    Free,
    /// `EBUSY`: something holds it.
    Busy,
    /// There is no node to ask (no `dev` attribute, no node, or a node that is not that block device);
    /// the text says which.
    NoNode(String),
    /// The open failed for another reason (`EACCES` when not root, say); the text says which.
    Failed(String),
}

/// What the kernel says about a device the exclusive open found busy while nothing names a holder.
pub const BUSY_UNNAMED: &str = "the kernel refused an exclusive open: mounted, a RAID/LVM/ZFS member or active swap";

/// PCI addresses named in a canonical sysfs path (every component that parses as one).
fn pci_addresses_in(path: &Path) -> Vec<PciAddress> {
    path.components().filter_map(|c| c.as_os_str().to_str()?.parse().ok()).collect()
}

/// Names of the entries of a directory (empty when it cannot be read).
fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A `KEY=value` line of a sysfs `uevent` file.
fn uevent_value(dir: &Path, key: &str) -> Option<String> {
    let text = iommu_fsio::read_text(&dir.join("uevent"), Limit::ATTRIBUTE).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(|v| v.trim().to_string()))
}

/// One block device of the host.
#[derive(Clone, Debug)]
struct Block {
    canon: PathBuf,
    dev: Option<DevNum>,
    /// For a partition: its disk's name.
    disk: Option<String>,
    /// `holders/`: devices stacked on this one (dm, md, bcache).
    holders: Vec<String>,
    /// `slaves/`: devices this one is stacked on.
    slaves: Vec<String>,
    /// `dm-0 (vg-root)`, `md0 (raid1)`, else the name.
    label: String,
    /// `DEVNAME` from `uevent`.
    devname: String,
    /// `PARTNAME` from `uevent` (a GPT partition's name).
    partname: Option<String>,
}

/// Every block device in `sys/class/block`, with the links between them.
struct Inventory {
    root: PathBuf,
    blocks: BTreeMap<String, Block>,
    by_dev: BTreeMap<DevNum, String>,
    /// Names listed in some other device's `holders/` → the devices they are stacked on.
    held: BTreeMap<String, BTreeSet<String>>,
}

impl Inventory {
    fn read(root: &Path) -> Inventory {
        let class = root.join("sys/class/block");
        let mut blocks = BTreeMap::new();
        let mut by_dev = BTreeMap::new();
        let mut held: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for name in dir_names(&class) {
            let Ok(canon) = fs::canonicalize(class.join(&name)) else { continue };
            let dev = iommu_fsio::attr(&canon.join("dev")).and_then(|d| DevNum::parse(&d));
            let disk = canon
                .join("partition")
                .exists()
                .then(|| canon.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()))
                .flatten();
            let holders = dir_names(&canon.join("holders"));
            for h in &holders {
                held.entry(h.clone()).or_default().insert(name.clone());
            }
            let slaves = dir_names(&canon.join("slaves"));
            let label = if let Some(dm) = iommu_fsio::attr(&canon.join("dm/name")).filter(|s| !s.is_empty()) {
                format!("{name} ({dm})")
            } else if let Some(level) = iommu_fsio::attr(&canon.join("md/level")).filter(|s| !s.is_empty()) {
                format!("{name} ({level})")
            } else {
                name.clone()
            };
            let devname = uevent_value(&canon, "DEVNAME").unwrap_or_else(|| name.replace('!', "/"));
            let partname = uevent_value(&canon, "PARTNAME");
            if let Some(d) = dev {
                by_dev.insert(d, name.clone());
            }
            blocks.insert(name, Block { canon, dev, disk, holders, slaves, label, devname, partname });
        }
        Inventory { root: root.to_path_buf(), blocks, by_dev, held }
    }

    fn label<'a>(&'a self, name: &'a str) -> &'a str {
        self.blocks.get(name).map(|b| b.label.as_str()).unwrap_or(name)
    }

    /// The device with this number: from the `dev` attributes, else through `sys/dev/block/M:m`.
    fn by_devnum(&self, d: DevNum) -> Option<String> {
        if let Some(n) = self.by_dev.get(&d) {
            return Some(n.clone());
        }
        let c = fs::canonicalize(self.root.join("sys/dev/block").join(d.to_string())).ok()?;
        let name = c.file_name()?.to_str()?.to_string();
        self.blocks.contains_key(&name).then_some(name)
    }

    /// The devices `name` is stacked on: its `slaves/`, those whose `holders/` name it, and for a partition
    /// of a stacked device (`md0p1`) those of its disk.
    fn lower(&self, name: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if let Some(b) = self.blocks.get(name) {
            out.extend(b.slaves.iter().cloned());
            if let Some(disk) = &b.disk {
                if let Some(d) = self.blocks.get(disk) {
                    out.extend(d.slaves.iter().cloned());
                }
                out.extend(self.held.get(disk).into_iter().flatten().cloned());
            }
        }
        out.extend(self.held.get(name).into_iter().flatten().cloned());
        out.remove(name);
        out
    }

    /// The PCI functions a block device sits on, through every device it is stacked on.
    fn pcis(&self, name: &str, depth: usize) -> BTreeSet<PciAddress> {
        let mut out = BTreeSet::new();
        if depth > 8 {
            return out;
        }
        if let Some(b) = self.blocks.get(name) {
            out.extend(pci_addresses_in(&b.canon));
        }
        for l in self.lower(name) {
            out.extend(self.pcis(&l, depth + 1));
        }
        out
    }

    /// The labels from `name` down to a device directly below function `pci` (`dm-0 (home)`, `nvme0n1p1`).
    fn chain(&self, name: &str, pci: PciAddress, depth: usize) -> Option<Vec<String>> {
        if depth > 8 {
            return None;
        }
        let b = self.blocks.get(name)?;
        if pci_addresses_in(&b.canon).contains(&pci) {
            return Some(vec![b.label.clone()]);
        }
        self.lower(name).iter().find_map(|l| {
            let mut rest = self.chain(l, pci, depth + 1)?;
            rest.insert(0, b.label.clone());
            Some(rest)
        })
    }

    /// `name` and everything below it (what a holder of `name` also holds).
    fn with_lower(&self, name: &str, out: &mut BTreeSet<String>, depth: usize) {
        if depth > 8 || !out.insert(name.to_string()) {
            return;
        }
        for l in self.lower(name) {
            self.with_lower(&l, out, depth + 1);
        }
    }

    /// `name`, everything stacked on it and everything below those (what a sentence naming the stack from
    /// `name` up accounts for).
    fn with_upper(&self, name: &str, out: &mut BTreeSet<String>, depth: usize) {
        if depth > 8 {
            return;
        }
        self.with_lower(name, out, 0);
        for h in self.blocks.get(name).map(|b| b.holders.clone()).unwrap_or_default() {
            self.with_upper(&h, out, depth + 1);
        }
    }

    /// Which block device a path such as a mount source or a swap device names: its node's device number,
    /// a `/dev/mapper/NAME` by its dm name, a symlink's target, or the path's last component.
    fn resolve_path(&self, path: &str) -> Option<String> {
        let rel = path.strip_prefix('/')?;
        let p = self.root.join(rel);
        if let Ok(st) = rustix::fs::lstat(&p) {
            match FileType::from_raw_mode(st.st_mode) {
                FileType::BlockDevice => {
                    let d = DevNum { major: rustix::fs::major(st.st_rdev), minor: rustix::fs::minor(st.st_rdev) };
                    if let Some(n) = self.by_devnum(d) {
                        return Some(n);
                    }
                }
                FileType::Symlink => {
                    if let Some(n) = fs::read_link(&p).ok().and_then(|t| Some(t.file_name()?.to_str()?.to_string())) {
                        if self.blocks.contains_key(&n) {
                            return Some(n);
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(dm) = rel.strip_prefix("dev/mapper/") {
            if let Some((n, _)) = self.blocks.iter().find(|(n, b)| b.label == format!("{n} ({dm})")) {
                return Some(n.clone());
            }
        }
        let base = Path::new(rel).file_name()?.to_str()?;
        self.blocks.contains_key(base).then(|| base.to_string())
    }

    /// The other members of the multi-device btrfs that `name` belongs to (`sys/fs/btrfs/<fsid>/devices/`).
    fn btrfs_members(&self, name: &str) -> Vec<String> {
        let base = self.root.join("sys/fs/btrfs");
        for fsid in dir_names(&base) {
            let members = dir_names(&base.join(&fsid).join("devices"));
            if members.iter().any(|m| m == name) {
                return members.into_iter().filter(|m| m != name && self.blocks.contains_key(m)).collect();
            }
        }
        Vec::new()
    }

    /// The block devices a mount sits on: by its device number, else (btrfs and ZFS give `0:N`) by its
    /// source; for btrfs also every other member of the file system. Each comes with a note (`btrfs
    /// member`) when it is not the mount's own device.
    fn mount_devices(&self, m: &MountEntry) -> Vec<(String, Option<&'static str>)> {
        let own = if m.dev.is_anonymous() { None } else { self.by_devnum(m.dev) };
        let Some(own) = own.or_else(|| self.resolve_path(&m.source)) else { return Vec::new() };
        let mut out = vec![(own.clone(), None)];
        if m.fstype == "btrfs" {
            out.extend(self.btrfs_members(&own).into_iter().map(|n| (n, Some("btrfs member"))));
        }
        out
    }
}

/// Reads a kernel table below `root`. `Ok(None)`: missing in a test tree (nothing to learn from it).
fn read_table(root: &Path, rel: &str, live: bool) -> Result<Option<String>, String> {
    match iommu_fsio::read_text(&root.join(rel), Limit::TABLE) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.is_not_found() && !live => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether `root` is the running system (so its kernel tables must be there): it is `/`, or its `proc` is a
/// real procfs.
fn is_live(root: &Path) -> bool {
    fs::canonicalize(root).is_ok_and(|c| c == Path::new("/"))
        || rustix::fs::statfs(root.join("proc")).is_ok_and(|s| s.f_type == rustix::fs::PROC_SUPER_MAGIC)
}

/// Asks the kernel whether a block device is in use: opens `/dev/<devname>` below `root` with
/// `O_RDONLY|O_EXCL|O_NONBLOCK|O_CLOEXEC|O_NOFOLLOW`, but only after `lstat` shows a block device whose
/// number is `dev.dev`, and checks the opened file again with `fstat`. The file is closed at once.
pub fn exclusive_open(root: &Path, dev: &BlockDevice) -> Exclusive {
    let Some(want) = dev.dev else {
        return Exclusive::NoNode(format!("sysfs gives no device number for {}", dev.name));
    };
    if dev.devname.is_empty() || dev.devname.starts_with('/') || dev.devname.split('/').any(|c| c == "..") {
        return Exclusive::NoNode(format!("unusable device name {:?}", dev.devname));
    }
    let dir = root.join("dev");
    match rustix::fs::lstat(&dir) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
        Ok(st) => {
            return Exclusive::NoNode(format!(
                "{} is {}, not a directory",
                dir.display(),
                iommu_fsio::describe(FileType::from_raw_mode(st.st_mode))
            ))
        }
        Err(e) => return Exclusive::NoNode(format!("{}: {}", dir.display(), std::io::Error::from(e))),
    }
    let node = dir.join(&dev.devname);
    let is_it = |st: &rustix::fs::Stat| {
        FileType::from_raw_mode(st.st_mode) == FileType::BlockDevice
            && rustix::fs::major(st.st_rdev) == want.major
            && rustix::fs::minor(st.st_rdev) == want.minor
    };
    match rustix::fs::lstat(&node) {
        Err(rustix::io::Errno::NOENT) => return Exclusive::NoNode(format!("no device node {}", node.display())),
        Err(e) => return Exclusive::Failed(format!("cannot stat {}: {}", node.display(), std::io::Error::from(e))),
        Ok(st) if !is_it(&st) => {
            let kind = FileType::from_raw_mode(st.st_mode);
            return Exclusive::NoNode(if kind == FileType::BlockDevice {
                format!(
                    "{} is block device {}:{}, not {want}",
                    node.display(),
                    rustix::fs::major(st.st_rdev),
                    rustix::fs::minor(st.st_rdev)
                )
            } else {
                format!("{} is {}, not block device {want}", node.display(), iommu_fsio::describe(kind))
            });
        }
        Ok(_) => {}
    }
    let flags = OFlags::RDONLY | OFlags::EXCL | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY;
    match rustix::fs::open(&node, flags, Mode::empty()) {
        Ok(fd) => match rustix::fs::fstat(&fd) {
            Ok(st) if is_it(&st) => Exclusive::Free,
            Ok(_) => Exclusive::NoNode(format!("{} changed while it was checked", node.display())),
            Err(e) => Exclusive::Failed(format!("cannot stat {}: {}", node.display(), std::io::Error::from(e))),
        },
        Err(rustix::io::Errno::BUSY) => Exclusive::Busy,
        // No medium, or the device went away: nothing can be holding it.
        Err(rustix::io::Errno::NOMEDIUM | rustix::io::Errno::NXIO | rustix::io::Errno::NODEV) => Exclusive::Free,
        Err(e) => Exclusive::Failed(format!("cannot open {} exclusively: {}", node.display(), std::io::Error::from(e))),
    }
}

/// Finds what holds any of `devices` on the host below `root`, asking the kernel about their block devices
/// with [`exclusive_open`].
pub fn holders(root: &Path, devices: &[&HostDevice]) -> Vec<Holder> {
    holders_with(root, devices, &|b| exclusive_open(root, b))
}

/// [`holders`] with another exclusive-open check (tests answer for block devices they cannot create).
pub fn holders_with(root: &Path, devices: &[&HostDevice], probe: &dyn Fn(&BlockDevice) -> Exclusive) -> Vec<Holder> {
    let wanted: BTreeSet<PciAddress> = devices.iter().map(|d| d.address).collect();
    let mut out = Vec::new();
    if !wanted.is_empty() {
        block_holders(root, &wanted, probe, &mut out);
    }
    // The boot GPU while a framebuffer console is bound.
    let fbcon = fs::read_dir(root.join("sys/class/vtconsole")).ok().is_some_and(|rd| {
        rd.flatten().any(|e| {
            let name = iommu_fsio::attr(&e.path().join("name")).unwrap_or_default();
            let bound = iommu_fsio::attr(&e.path().join("bind")).unwrap_or_default();
            bound == "1" && name.contains("frame buffer")
        })
    });
    for d in devices {
        if fbcon && d.boot_vga == Some(true) {
            out.push(Holder { device: d.address, what: "boot VGA device with a framebuffer console bound".into() });
        }
        for iface in &d.net {
            let dir = root.join("sys/class/net").join(iface);
            let oper = iommu_fsio::attr(&dir.join("operstate")).unwrap_or_default();
            let flags = iommu_fsio::attr(&dir.join("flags")).unwrap_or_default();
            let up_flag = u32::from_str_radix(flags.trim_start_matches("0x"), 16).is_ok_and(|f| f & 1 != 0);
            if oper == "up" || up_flag {
                out.push(Holder { device: d.address, what: format!("network interface {iface} is up") });
            }
        }
    }
    out.sort_by(|a, b| (a.device, &a.what).cmp(&(b.device, &b.what)));
    out.dedup();
    out
}

/// Block-device holders of the `wanted` functions.
fn block_holders(
    root: &Path,
    wanted: &BTreeSet<PciAddress>,
    probe: &dyn Fn(&BlockDevice) -> Exclusive,
    out: &mut Vec<Holder>,
) {
    let inv = Inventory::read(root);
    // Every block device on a wanted function, directly or stacked, with the functions it sits on.
    let relevant: BTreeMap<String, BTreeSet<PciAddress>> = inv
        .blocks
        .keys()
        .filter_map(|n| {
            let p: BTreeSet<PciAddress> = inv.pcis(n, 0).intersection(wanted).copied().collect();
            (!p.is_empty()).then(|| (n.clone(), p))
        })
        .collect();
    if relevant.is_empty() {
        return;
    }
    let mut add = |name: &str, what: &dyn Fn(PciAddress) -> String| {
        for &a in relevant.get(name).into_iter().flatten() {
            out.push(Holder { device: a, what: what(a) });
        }
    };
    // Named block devices and everything below them: their EBUSY needs no other explanation.
    let mut explained = BTreeSet::new();
    let live = is_live(root);
    let mut unreadable = Vec::new();
    let mounts: Vec<MountEntry> = match read_table(root, "proc/self/mountinfo", live) {
        Ok(t) => t.map(|t| parse_mountinfo(&t)).unwrap_or_default(),
        Err(e) => {
            unreadable.push(e);
            Vec::new()
        }
    };
    let swaps: Vec<SwapEntry> = match read_table(root, "proc/swaps", live) {
        Ok(t) => t.map(|t| parse_swaps(&t)).unwrap_or_default(),
        Err(e) => {
            unreadable.push(e);
            Vec::new()
        }
    };
    // " via dm-0 (home) over nvme0n1p1" unless the source path already names the device below the function.
    let via = |name: &str, note: Option<&str>, source: &str, a: PciAddress| -> String {
        let chain = inv.chain(name, a, 0).unwrap_or_else(|| vec![inv.label(name).to_string()]);
        match note {
            Some(note) => format!(", {note} {}", chain.join(" over ")),
            None if chain.len() == 1 && Path::new(source).file_name().is_some_and(|b| b == name) => String::new(),
            None => format!(" via {}", chain.join(" over ")),
        }
    };

    // Mounted file systems.
    let mut zfs_pools = BTreeSet::new();
    for m in &mounts {
        if m.fstype == "zfs" {
            if let Some(pool) = m.source.split('/').next().filter(|p| !p.is_empty()) {
                zfs_pools.insert(pool.to_string());
            }
        }
        for (name, note) in inv.mount_devices(m) {
            inv.with_lower(&name, &mut explained, 0);
            add(&name, &|a| {
                format!("mounted file system {} (from {}){}", m.mount_point, m.source, via(&name, note, &m.source, a))
            });
        }
    }

    // Active swap: partitions and devices by path, files through the file system that holds them.
    for s in &swaps {
        if s.is_file() {
            let Some(m) = swap_file_mount(root, s.path(), &mounts) else { continue };
            for (name, note) in inv.mount_devices(m) {
                inv.with_lower(&name, &mut explained, 0);
                add(&name, &|a| {
                    format!(
                        "active swap file {} on {} ({} mounted at {}){}",
                        s.path(),
                        m.source,
                        m.fstype,
                        m.mount_point,
                        via(&name, note, &m.source, a)
                    )
                });
            }
        } else if let Some(name) = inv.resolve_path(s.path()) {
            inv.with_lower(&name, &mut explained, 0);
            add(&name, &|a| format!("active swap on {}{}", s.path(), via(&name, None, s.path(), a)));
        }
    }

    // The kernel's answer for every block device on the functions.
    let answers: BTreeMap<&str, Exclusive> = relevant
        .keys()
        .filter_map(|n| {
            let b = inv.blocks.get(n)?;
            let dev = BlockDevice { name: n.clone(), dev: b.dev, devname: b.devname.clone() };
            Some((n.as_str(), probe(&dev)))
        })
        .collect();

    // Devices stacked on them (dm, md, bcache) that nothing above named: their holders hold the disk. The
    // devices at the bottom of a stack first, so that the sentence names the whole stack above them.
    let mut order: Vec<&String> = relevant.keys().collect();
    order.sort_by_key(|n| !inv.lower(n).is_empty());
    for name in order {
        let Some(b) = inv.blocks.get(name) else { continue };
        let uppers: Vec<&String> = b.holders.iter().filter(|h| !explained.contains(*h)).collect();
        if uppers.is_empty() || explained.contains(name) {
            continue;
        }
        let names: Vec<String> = uppers.iter().map(|h| stacked(&inv, h, &explained, &answers, 0)).collect();
        add(name, &|_| format!("block device {name} is held by {}", names.join(" and ")));
        for h in uppers {
            inv.with_upper(h, &mut explained, 0);
        }
    }

    // Busy devices nothing named, and devices that could not be asked.
    let busy_or_named = |n: &str| explained.contains(n) || answers.get(n) == Some(&Exclusive::Busy);
    for (name, answer) in &answers {
        if explained.contains(*name) {
            continue;
        }
        match answer {
            Exclusive::Free => {}
            Exclusive::Busy => {
                // A disk is busy while one of its partitions is: that partition speaks for it.
                let part_busy =
                    inv.blocks.iter().any(|(p, b)| b.disk.as_deref() == Some(*name) && busy_or_named(p.as_str()));
                if part_busy {
                    continue;
                }
                let b = &inv.blocks[*name];
                let mut what = format!("block device {} is in use ({BUSY_UNNAMED})", b.label);
                if b.partname.as_deref().is_some_and(|p| p.starts_with("zfs-")) {
                    what.push_str(&format!(
                        "; its partition name {} marks a ZFS member",
                        b.partname.as_deref().unwrap_or("")
                    ));
                }
                if !zfs_pools.is_empty() {
                    let pools: Vec<&str> = zfs_pools.iter().map(String::as_str).collect();
                    what.push_str(&format!(
                        "; ZFS pool{} {} imported here (sysfs does not show ZFS members)",
                        if pools.len() == 1 { "" } else { "s" },
                        pools.join(", ")
                    ));
                }
                add(name, &|_| what.clone());
            }
            Exclusive::NoNode(why) if live => {
                add(name, &|_| format!("cannot check whether block device {name} is in use: {why}"))
            }
            Exclusive::NoNode(_) => {}
            Exclusive::Failed(why) => {
                add(name, &|_| format!("cannot check whether block device {name} is in use: {why}"))
            }
        }
    }

    // An unreadable table leaves unknown what holds the devices the kernel did not call free.
    if !unreadable.is_empty() {
        let mut unknown: BTreeMap<PciAddress, Vec<&str>> = BTreeMap::new();
        for (name, pcis) in &relevant {
            if answers.get(name.as_str()) != Some(&Exclusive::Free) {
                for &a in pcis {
                    unknown.entry(a).or_default().push(name);
                }
            }
        }
        for (a, names) in unknown {
            for e in &unreadable {
                out.push(Holder {
                    device: a,
                    what: format!("{e} (so what holds its block devices {} is unknown)", names.join(", ")),
                });
            }
        }
    }
}

/// The mount points the host cannot boot without.
pub const BOOT_MOUNTS: [&str; 5] = ["/", "/usr", "/boot", "/boot/efi", "/efi"];

/// What the host boots from, by the PCI functions it sits on: the next boot's needs, for the persist guard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BootStorage {
    /// Functions below a file system of [`BOOT_MOUNTS`] or a swap area, per `/etc/fstab` or mounted now.
    pub needed: Vec<Holder>,
    /// Functions below another `/etc/fstab` file system the boot waits for (no `nofail`, no `noauto`).
    pub waited_for: Vec<Holder>,
    /// What could not be known: an unreadable table, an `/etc/fstab` entry for a boot mount whose device
    /// is not found.
    pub unknown: Vec<String>,
    /// Every function with a block device below it, directly or stacked.
    pub with_storage: BTreeSet<PciAddress>,
}

/// Finds what the host boots from below `root`: `/etc/fstab` (its tags resolved through the
/// `/dev/disk/by-*` links, the next boot's view) and the current mounts and swap areas (this boot's).
///
/// What cannot be placed is `unknown`, never "nothing": a boot mount or swap area whose device is not
/// found, a ZFS root (sysfs does not show pool members), a device on no PCI function that is not RAM- or
/// file-backed (NVMe multipath's `nvme-subsystem` nodes). RAM-backed swap (`/dev/zram*`) and file systems
/// without a block device (tmpfs, overlay, network) need nothing.
pub fn boot_storage(root: &Path) -> BootStorage {
    let inv = Inventory::read(root);
    let live = is_live(root);
    let mut out = BootStorage::default();
    for n in inv.blocks.keys() {
        out.with_storage.extend(inv.pcis(n, 0));
    }
    // Holders for the PCI functions below `name`; a device on none is unknown unless RAM- or file-backed.
    let put = |to: &mut Vec<Holder>, unknown: &mut Vec<String>, name: &str, what: &str| {
        let pcis = inv.pcis(name, 0);
        if pcis.is_empty() {
            let canon = inv.blocks.get(name).map(|b| b.canon.to_string_lossy().into_owned()).unwrap_or_default();
            if canon.contains("/nvme-subsystem/") {
                unknown.push(format!("{what}: {name} is an NVMe multipath device, on no one PCI function sysfs names"));
            }
            return;
        }
        for a in pcis {
            to.push(Holder { device: a, what: what.to_string() });
        }
    };
    let ram_backed = |path: &str| path.starts_with("/dev/zram");

    let mounts: Vec<MountEntry> = match read_table(root, "proc/self/mountinfo", live) {
        Ok(t) => t.map(|t| parse_mountinfo(&t)).unwrap_or_default(),
        Err(e) => {
            out.unknown.push(e);
            Vec::new()
        }
    };

    // The next boot: /etc/fstab.
    match read_table(root, "etc/fstab", false) {
        Ok(Some(text)) => {
            let entries = parse_fstab(&text);
            for e in &entries {
                let file = normalize_mount_point(&e.file);
                let boot_fs = !e.is_swap() && BOOT_MOUNTS.contains(&file.as_str());
                if e.has_option("noauto") && !boot_fs {
                    continue;
                }
                // systemd does not fail the boot for a nofail entry; a boot mount stays needed regardless.
                let waited = !boot_fs && e.has_option("nofail");
                if waited && !e.is_swap() {
                    continue;
                }
                let found = fstab_device(&inv, e, &entries).map(|(n, via)| vec![(n, via)]).or_else(|| {
                    // A swap file no fstab entry covers (a root given by `root=`): the file system holding it now.
                    let m = (e.is_swap() && e.spec.starts_with('/') && !e.spec.starts_with("/dev/"))
                        .then(|| swap_file_mount(root, &e.spec, &mounts))??;
                    let via = format!(", a file on {} ({} mounted now)", m.mount_point, m.source);
                    Some(inv.mount_devices(m).into_iter().map(|(n, _)| (n, via.clone())).collect())
                });
                let Some(found) = found.filter(|f| !f.is_empty()) else {
                    let device_backed = e.dev_path().is_some() || (e.is_swap() && e.spec.starts_with('/'));
                    if (boot_fs || (e.is_swap() && !waited)) && device_backed && !ram_backed(&e.spec) {
                        out.unknown.push(format!(
                            "/etc/fstab names {} for {}, and no block device here is it",
                            e.spec,
                            if e.is_swap() { "swap" } else { file.as_str() }
                        ));
                    }
                    continue;
                };
                for (name, via) in found {
                    let (to, what) = if e.is_swap() && waited {
                        (&mut out.waited_for, format!("swap per /etc/fstab ({}{via}), which has nofail", e.spec))
                    } else if e.is_swap() {
                        (&mut out.needed, format!("swap per /etc/fstab ({}{via})", e.spec))
                    } else if boot_fs {
                        (&mut out.needed, format!("{file} per /etc/fstab ({}{via})", e.spec))
                    } else {
                        (
                            &mut out.waited_for,
                            format!("{file} per /etc/fstab ({}{via}), which the boot waits for (no nofail)", e.spec),
                        )
                    };
                    put(to, &mut out.unknown, &name, &what);
                }
            }
        }
        Ok(None) => {}
        Err(e) => out.unknown.push(e),
    }

    // This boot: what is mounted and swapped on now.
    for m in mounts.iter().filter(|m| BOOT_MOUNTS.contains(&m.mount_point.as_str())) {
        let devices = inv.mount_devices(m);
        if devices.is_empty() && (m.fstype == "zfs" || m.source.starts_with("/dev/")) {
            out.unknown.push(format!(
                "{} is mounted from {} ({}), whose disks sysfs does not show",
                m.mount_point, m.source, m.fstype
            ));
        }
        for (name, _) in devices {
            put(&mut out.needed, &mut out.unknown, &name, &format!("{}, mounted now from {}", m.mount_point, m.source));
        }
    }
    match read_table(root, "proc/swaps", live) {
        Ok(t) => {
            for s in t.map(|t| parse_swaps(&t)).unwrap_or_default() {
                if s.is_file() {
                    let Some(m) = swap_file_mount(root, s.path(), &mounts) else { continue };
                    for (name, _) in inv.mount_devices(m) {
                        let what = format!("active swap file {} on {}", s.path(), m.source);
                        put(&mut out.needed, &mut out.unknown, &name, &what);
                    }
                } else if let Some(name) = inv.resolve_path(s.path()) {
                    put(&mut out.needed, &mut out.unknown, &name, &format!("active swap on {}", s.path()));
                } else if !ram_backed(s.path()) {
                    out.unknown.push(format!("active swap on {}, which no block device here is", s.path()));
                }
            }
        }
        Err(e) => out.unknown.push(e),
    }
    for v in [&mut out.needed, &mut out.waited_for] {
        v.sort_by(|a, b| (a.device, &a.what).cmp(&(b.device, &b.what)));
        v.dedup();
    }
    out.unknown.sort();
    out.unknown.dedup();
    out
}

/// A mount point as the kernel and systemd compare it: repeated `/` collapsed, `.` components and a
/// trailing `/` dropped (`/boot/efi/` is `/boot/efi`).
fn normalize_mount_point(p: &str) -> String {
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if p.starts_with('/') {
        format!("/{}", parts.join("/"))
    } else {
        parts.join("/")
    }
}

/// The block device an `/etc/fstab` entry mounts, and how it was found (`" is nvme0n1p2"`): a tag through
/// its `/dev/disk/by-*` link only (a tag's value is not a kernel name), a `/dev` path as a mount source, a
/// swap file through the `/etc/fstab` file system that holds it.
fn fstab_device(inv: &Inventory, e: &FstabEntry, all: &[FstabEntry]) -> Option<(String, String)> {
    if let Some(path) = e.dev_path() {
        let name = if e.spec.starts_with("/dev/") {
            inv.resolve_path(&path)?
        } else {
            let link = fs::read_link(inv.root.join(path.trim_start_matches('/'))).ok()?;
            let n = link.file_name()?.to_str()?.to_string();
            inv.blocks.contains_key(&n).then_some(n)?
        };
        let via = if Path::new(&e.spec).file_name().is_some_and(|b| b == name.as_str()) {
            String::new()
        } else {
            format!(" is {}", inv.label(&name))
        };
        return Some((name, via));
    }
    if e.is_swap() && e.spec.starts_with('/') {
        let under = |m: &&FstabEntry| {
            let f = normalize_mount_point(&m.file);
            !m.is_swap() && (f == "/" || e.spec.strip_prefix(f.as_str()).is_some_and(|r| r.starts_with('/')))
        };
        let fs = all.iter().filter(under).max_by_key(|m| normalize_mount_point(&m.file).len())?;
        let (name, via) = fstab_device(inv, fs, all)?;
        return Some((name, format!(", a file on {} ({}{via})", normalize_mount_point(&fs.file), fs.spec)));
    }
    None
}

/// `dm-0 (vg-root)`, and what holds it in turn: `, held by dm-1 (x)` or `, which is in use (...)`.
fn stacked(
    inv: &Inventory,
    name: &str,
    explained: &BTreeSet<String>,
    answers: &BTreeMap<&str, Exclusive>,
    depth: usize,
) -> String {
    let mut s = inv.label(name).to_string();
    let ups: Vec<&String> = inv
        .blocks
        .get(name)
        .map(|b| b.holders.iter().filter(|h| !explained.contains(*h)).collect())
        .unwrap_or_default();
    if depth < 8 && !ups.is_empty() {
        let inner: Vec<String> = ups.iter().map(|h| stacked(inv, h, explained, answers, depth + 1)).collect();
        s.push_str(&format!(", held by {}", inner.join(" and ")));
    } else if answers.get(name) == Some(&Exclusive::Busy) {
        s.push_str(&format!(", which is in use ({BUSY_UNNAMED})"));
    }
    s
}

/// The mount a swap file lives on: the mount whose device `stat` gives the file, else the mount whose
/// mount point is the longest prefix of its path.
fn swap_file_mount<'a>(root: &Path, path: &str, mounts: &'a [MountEntry]) -> Option<&'a MountEntry> {
    let under = |m: &&MountEntry| {
        let mp = m.mount_point.trim_end_matches('/');
        path == m.mount_point || path.strip_prefix(mp).is_some_and(|r| r.starts_with('/'))
    };
    if let Some(rel) = path.strip_prefix('/') {
        if let Ok(st) = rustix::fs::stat(root.join(rel)) {
            let d = DevNum { major: rustix::fs::major(st.st_dev), minor: rustix::fs::minor(st.st_dev) };
            let same: Vec<&MountEntry> = mounts.iter().filter(|m| m.dev == d).collect();
            if let Some(m) = same.iter().copied().filter(under).max_by_key(|m| m.mount_point.len()) {
                return Some(m);
            }
            if let Some(m) = same.first() {
                return Some(m);
            }
        }
    }
    mounts.iter().filter(under).max_by_key(|m| m.mount_point.len())
}
