//! What holds a device: mounted file systems, active swap, a framebuffer console on the boot GPU, network
//! interfaces that are up. Binding such a device away from its driver would take the host's disk, console
//! or network with it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use iommu_pci::PciAddress;
use serde::Serialize;

use crate::snapshot::HostDevice;

/// Something that holds a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// The device held.
    pub device: PciAddress,
    /// What holds it, as a sentence fragment (e.g. `mounted file system / on nvme0n1p1`).
    pub what: String,
}

/// PCI addresses named in a canonical sysfs path (every component that parses as one).
fn pci_addresses_in(path: &Path) -> Vec<PciAddress> {
    path.components().filter_map(|c| c.as_os_str().to_str()?.parse().ok()).collect()
}

/// Resolves a sysfs link inside `root` to its canonical path.
fn canonical(path: &Path) -> Option<PathBuf> {
    fs::canonicalize(path).ok()
}

/// The PCI functions under a block device, following device-mapper and md `slaves/`.
fn block_pci(root: &Path, sys_block: PathBuf, depth: usize) -> BTreeSet<PciAddress> {
    let mut out = BTreeSet::new();
    if depth > 8 {
        return out;
    }
    if let Some(c) = canonical(&sys_block) {
        out.extend(pci_addresses_in(&c));
        if let Ok(rd) = fs::read_dir(c.join("slaves")) {
            for e in rd.flatten() {
                out.extend(block_pci(root, root.join("sys/class/block").join(e.file_name()), depth + 1));
            }
        }
        // A partition's slaves live on its disk.
        if c.join("partition").exists() {
            if let Some(disk) = c.parent() {
                if let Ok(rd) = fs::read_dir(disk.join("slaves")) {
                    for e in rd.flatten() {
                        out.extend(block_pci(root, root.join("sys/class/block").join(e.file_name()), depth + 1));
                    }
                }
            }
        }
    }
    out
}

fn unescape_mount(s: &str) -> String {
    // /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Finds what holds any of `devices` on the host below `root`.
pub fn holders(root: &Path, devices: &[&HostDevice]) -> Vec<Holder> {
    let wanted: BTreeSet<PciAddress> = devices.iter().map(|d| d.address).collect();
    let mut out = Vec::new();
    let mut add = |pcis: &BTreeSet<PciAddress>, what: String| {
        for a in pcis.intersection(&wanted) {
            out.push(Holder { device: *a, what: what.clone() });
        }
    };
    // Mounted file systems: mountinfo field 3 is major:minor, field 5 the mount point.
    if let Ok(mi) = fs::read_to_string(root.join("proc/self/mountinfo")) {
        for line in mi.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 5 || f[2].starts_with("0:") {
                continue;
            }
            let pcis = block_pci(root, root.join("sys/dev/block").join(f[2]), 0);
            if !pcis.is_empty() {
                let src = line.split(" - ").nth(1).and_then(|r| r.split(' ').nth(1)).unwrap_or(f[2]);
                add(&pcis, format!("mounted file system {} (from {})", unescape_mount(f[4]), unescape_mount(src)));
            }
        }
    }
    // Active swap: /proc/swaps lists device paths.
    if let Ok(sw) = fs::read_to_string(root.join("proc/swaps")) {
        for line in sw.lines().skip(1) {
            let Some(dev) = line.split_whitespace().next() else { continue };
            let name = Path::new(dev).file_name().map(|n| n.to_os_string()).unwrap_or_default();
            let mut pcis = block_pci(root, root.join("sys/class/block").join(&name), 0);
            if pcis.is_empty() {
                // /dev/mapper/NAME is a link to ../dm-N.
                if let Ok(t) = fs::read_link(root.join(dev.trim_start_matches('/'))) {
                    if let Some(n) = t.file_name() {
                        pcis = block_pci(root, root.join("sys/class/block").join(n), 0);
                    }
                }
            }
            add(&pcis, format!("active swap on {dev}"));
        }
    }
    // The boot GPU while a framebuffer console is bound.
    let fbcon = fs::read_dir(root.join("sys/class/vtconsole")).ok().is_some_and(|rd| {
        rd.flatten().any(|e| {
            let name = fs::read_to_string(e.path().join("name")).unwrap_or_default();
            let bound = fs::read_to_string(e.path().join("bind")).unwrap_or_default();
            bound.trim() == "1" && name.contains("frame buffer")
        })
    });
    for d in devices {
        if fbcon && d.boot_vga == Some(true) {
            out.push(Holder { device: d.address, what: "boot VGA device with a framebuffer console bound".into() });
        }
        for iface in &d.net {
            let dir = root.join("sys/class/net").join(iface);
            let oper = fs::read_to_string(dir.join("operstate")).unwrap_or_default();
            let flags = fs::read_to_string(dir.join("flags")).unwrap_or_default();
            let up_flag = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).is_ok_and(|f| f & 1 != 0);
            if oper.trim() == "up" || up_flag {
                out.push(Holder { device: d.address, what: format!("network interface {iface} is up") });
            }
        }
    }
    out.sort_by(|a, b| (a.device, &a.what).cmp(&(b.device, &b.what)));
    out.dedup();
    out
}
