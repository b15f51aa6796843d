//! Writes a generated host as a directory shaped like `/sys` and `/proc` on a running kernel.
//!
//! Layout below the output directory:
//! - `sys/devices/pciDDDD:BB/<BDF>/.../<BDF>/`: one real directory per function, nested under its bridges
//!   (the VMD domain's root bus `pci10000:00` sits inside the VMD endpoint's directory), each with `config`
//!   and the attributes lspci's sysfs backend and iommuctl read;
//! - `sys/bus/pci/devices/<BDF>`: relative symlinks to those directories;
//! - `sys/bus/pci/drivers/<name>/`: one directory per bound driver, with links back to its devices;
//! - `sys/kernel/iommu_groups/N/{devices/<BDF>, type, reserved_regions}`;
//! - `sys/devices/virtual/iommu/dmarK`, `sys/class/iommu/dmarK`;
//! - `proc/cmdline`, `proc/sys/kernel/osrelease`.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::Path;

use iommu_pci::PciAddress;

use crate::config::config_bytes;
use crate::model::{Function, Host, Role, VMD_DOMAIN};

/// What was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// PCI functions.
    pub functions: usize,
    /// IOMMU groups.
    pub groups: usize,
    /// Files, directories and symlinks created.
    pub entries: usize,
}

/// The relative symlink target from directory `from` to `to` (both relative to the output root, with `/`).
pub fn relative(from: &str, to: &str) -> String {
    let f: Vec<&str> = from.split('/').filter(|s| !s.is_empty()).collect();
    let t: Vec<&str> = to.split('/').filter(|s| !s.is_empty()).collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = String::new();
    for _ in common..f.len() {
        out.push_str("../");
    }
    out.push_str(&t[common..].join("/"));
    out
}

struct Writer<'a> {
    root: &'a Path,
    entries: usize,
}

impl Writer<'_> {
    fn dir(&mut self, rel: &str) -> io::Result<()> {
        fs::create_dir_all(self.root.join(rel))?;
        self.entries += 1;
        Ok(())
    }

    fn file(&mut self, rel: &str, contents: impl AsRef<[u8]>) -> io::Result<()> {
        fs::write(self.root.join(rel), contents)?;
        self.entries += 1;
        Ok(())
    }

    /// A symlink at `dir/name` pointing (relatively) to `target`.
    fn link(&mut self, dir: &str, name: &str, target: &str) -> io::Result<()> {
        std::os::unix::fs::symlink(relative(dir, target), self.root.join(dir).join(name))?;
        self.entries += 1;
        Ok(())
    }
}

fn is_net_driver(d: &str) -> bool {
    matches!(
        d,
        "i40e" | "ice" | "ixgbe" | "igb" | "mlx5_core" | "bnxt_en" | "tg3" | "e1000" | "iavf" | "igbvf" | "ixgbevf"
    )
}

/// The predictable interface name of a network function (`enp3s0f1`, `enP1p3s0f1`, `enp3s0f0v2`).
fn ifname(f: &Function, vfs_of: &HashMap<PciAddress, Vec<PciAddress>>) -> String {
    let a = f.address;
    let dom = if a.domain == 0 { String::new() } else { format!("P{}", a.domain) };
    match f.physfn {
        Some(pf) => {
            let k = vfs_of.get(&pf).and_then(|v| v.iter().position(|x| *x == a)).unwrap_or(0);
            format!("en{dom}p{}s{}f{}v{k}", pf.bus, pf.device, pf.function)
        }
        None => format!("en{dom}p{}s{}f{}", a.bus, a.device, a.function),
    }
}

fn resource_text(f: &Function) -> String {
    const ZERO: &str = "0x0000000000000000 0x0000000000000000 0x0000000000000000\n";
    // Non-bridges: 6 BARs, ROM, 6 SR-IOV BARs; bridges add 4 window lines.
    let lines = if f.is_bridge() { 17 } else { 13 };
    let mut s = String::with_capacity(lines * ZERO.len());
    for i in 0..lines {
        match (i, f.bars, f.windows) {
            (0, Some(((b0, sz0), _)), _) => {
                s.push_str(&format!("0x{:016x} 0x{:016x} 0x{:016x}\n", b0, b0 + sz0 - 1, 0x0014_220cu64))
            }
            (2, Some((_, (b2, sz2))), _) => s.push_str(&format!(
                "0x{:016x} 0x{:016x} 0x{:016x}\n",
                b2,
                u64::from(b2) + u64::from(sz2) - 1,
                0x0004_0200u64
            )),
            (14, _, Some(((b32, l32), _))) if l32 > b32 => {
                s.push_str(&format!("0x{:016x} 0x{:016x} 0x{:016x}\n", b32, l32, 0x0000_0200u64))
            }
            (15, _, Some((_, (b64, l64)))) if l64 > b64 => {
                s.push_str(&format!("0x{:016x} 0x{:016x} 0x{:016x}\n", b64, l64, 0x0010_2201u64))
            }
            _ => s.push_str(ZERO),
        }
    }
    s
}

fn modalias(f: &Function) -> String {
    format!(
        "pci:v{:08X}d{:08X}sv{:08X}sd{:08X}bc{:02X}sc{:02X}i{:02X}\n",
        f.vendor,
        f.device,
        f.subsystem.0,
        f.subsystem.1,
        (f.class >> 16) as u8,
        (f.class >> 8) as u8,
        f.class as u8
    )
}

/// Directory (relative to the output root) of every function.
fn device_dirs(host: &Host) -> HashMap<PciAddress, String> {
    let mut dirs: HashMap<PciAddress, String> = HashMap::with_capacity(host.functions.len());
    for f in &host.functions {
        let a = f.address;
        let base = match f.parent {
            Some(p) => dirs[&p].clone(),
            None if a.domain == VMD_DOMAIN => {
                let vmd = host.vmd.expect("the VMD domain exists only below a VMD endpoint");
                format!("{}/pci{:04x}:{:02x}", dirs[&vmd], a.domain, a.bus)
            }
            None => format!("sys/devices/pci{:04x}:{:02x}", a.domain, a.bus),
        };
        dirs.insert(a, format!("{base}/{a}"));
    }
    dirs
}

/// Writes the tree for `host` with kernel groups `groups` (group number, members) below `out`, which must
/// not exist yet or be empty.
pub fn write_tree(host: &Host, groups: &[(u32, Vec<PciAddress>)], out: &Path) -> io::Result<Stats> {
    fs::create_dir_all(out)?;
    if fs::read_dir(out)?.next().is_some() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} is not empty", out.display())));
    }
    let mut w = Writer { root: out, entries: 0 };
    for d in [
        "sys/devices/virtual/iommu",
        "sys/bus/pci/devices",
        "sys/bus/pci/drivers",
        "sys/kernel/iommu_groups",
        "sys/class/iommu",
        "proc/sys/kernel",
    ] {
        w.dir(d)?;
    }
    w.file("proc/cmdline", format!("{}\n", host.cmdline()))?;
    w.file("proc/sys/kernel/osrelease", "6.12.48+deb13-amd64\n")?;

    let units: BTreeSet<String> = host.domains.iter().map(|&d| host.iommu_unit(d)).collect();
    for u in &units {
        let dir = format!("sys/devices/virtual/iommu/{u}");
        w.dir(&dir)?;
        w.file(&format!("{dir}/uevent"), "")?;
        w.link("sys/class/iommu", u, &dir)?;
    }
    let drivers: BTreeSet<&str> = host.functions.iter().filter_map(|f| f.driver).collect();
    for d in &drivers {
        w.dir(&format!("sys/bus/pci/drivers/{d}"))?;
    }

    let group_of: HashMap<PciAddress, u32> =
        groups.iter().flat_map(|(id, m)| m.iter().map(move |a| (*a, *id))).collect();
    let dirs = device_dirs(host);
    let vfs_of: HashMap<PciAddress, Vec<PciAddress>> =
        host.functions.iter().filter_map(|f| Some((f.physfn?, f.address))).fold(HashMap::new(), |mut m, (pf, vf)| {
            m.entry(pf).or_insert_with(Vec::new).push(vf);
            m
        });
    let first_vga = host.functions.iter().find(|x| x.class >> 8 == 0x0300).map(|x| x.address);
    for f in &host.functions {
        let a = f.address;
        let dir = &dirs[&a];
        if f.parent.is_none() {
            let bus_dir = dir.rsplit_once('/').map(|(b, _)| b).unwrap_or(dir);
            if !w.root.join(bus_dir).exists() {
                w.dir(bus_dir)?;
            }
        }
        w.dir(dir)?;
        w.file(&format!("{dir}/config"), config_bytes(f))?;
        let attrs: [(&str, String); 13] = [
            ("vendor", format!("0x{:04x}\n", f.vendor)),
            ("device", format!("0x{:04x}\n", f.device)),
            ("subsystem_vendor", format!("0x{:04x}\n", f.subsystem.0)),
            ("subsystem_device", format!("0x{:04x}\n", f.subsystem.1)),
            ("class", format!("0x{:06x}\n", f.class)),
            ("revision", format!("0x{:02x}\n", f.revision)),
            ("irq", format!("{}\n", f.irq)),
            ("resource", resource_text(f)),
            ("modalias", modalias(f)),
            ("numa_node", format!("{}\n", f.numa_node)),
            ("local_cpulist", if f.numa_node == 1 { "1\n".into() } else { "0\n".into() }),
            ("enable", "1\n".into()),
            ("driver_override", "(null)\n".into()),
        ];
        for (name, text) in &attrs {
            w.file(&format!("{dir}/{name}"), text)?;
        }
        let uevent = format!(
            "{}PCI_CLASS={:X}\nPCI_ID={:04X}:{:04X}\nPCI_SUBSYS_ID={:04X}:{:04X}\nPCI_SLOT_NAME={a}\nMODALIAS={}",
            f.driver.map(|d| format!("DRIVER={d}\n")).unwrap_or_default(),
            f.class,
            f.vendor,
            f.device,
            f.subsystem.0,
            f.subsystem.1,
            modalias(f)
        );
        w.file(&format!("{dir}/uevent"), uevent)?;
        if matches!(f.role, Role::Endpoint | Role::VirtualFunction | Role::Conventional) {
            let methods = match f.role {
                Role::VirtualFunction => "flr\n",
                Role::Conventional => "pm bus\n",
                _ => "flr bus\n",
            };
            w.file(&format!("{dir}/reset_method"), methods)?;
        }
        if f.class >> 8 == 0x0300 {
            w.file(&format!("{dir}/boot_vga"), if first_vga == Some(a) { "1\n" } else { "0\n" })?;
        }
        w.link(dir, "subsystem", "sys/bus/pci")?;
        if let Some(d) = f.driver {
            let ddir = format!("sys/bus/pci/drivers/{d}");
            w.link(dir, "driver", &ddir)?;
            w.link(&ddir, &a.to_string(), dir)?;
            if f.net && is_net_driver(d) {
                let n = ifname(f, &vfs_of);
                w.dir(&format!("{dir}/net/{n}"))?;
                w.file(
                    &format!("{dir}/net/{n}/address"),
                    format!("3c:fd:fe:{:02x}:{:02x}:{:02x}\n", a.bus, a.devfn(), a.domain as u8),
                )?;
            }
        }
        if let Some(g) = group_of.get(&a) {
            w.link(dir, "iommu_group", &format!("sys/kernel/iommu_groups/{g}"))?;
            w.link(dir, "iommu", &format!("sys/devices/virtual/iommu/{}", host.iommu_unit(a.domain)))?;
        }
        if let Some(s) = f.sriov {
            for (name, v) in [
                ("sriov_totalvfs", s.total),
                ("sriov_numvfs", s.num),
                ("sriov_offset", s.offset),
                ("sriov_stride", s.stride),
            ] {
                w.file(&format!("{dir}/{name}"), format!("{v}\n"))?;
            }
            w.file(&format!("{dir}/sriov_vf_device"), format!("{:04x}\n", s.vf_device))?;
            w.file(&format!("{dir}/sriov_drivers_autoprobe"), "1\n")?;
            for (k, vf) in vfs_of.get(&a).into_iter().flatten().enumerate() {
                w.link(dir, &format!("virtfn{k}"), &dirs[vf])?;
            }
        }
        if let Some(pf) = f.physfn {
            w.link(dir, "physfn", &dirs[&pf])?;
        }
        w.link("sys/bus/pci/devices", &a.to_string(), dir)?;
    }

    for (id, members) in groups {
        let g = format!("sys/kernel/iommu_groups/{id}");
        w.dir(&format!("{g}/devices"))?;
        w.file(&format!("{g}/type"), "DMA-FQ\n")?;
        let mut rr = String::new();
        if *id == 0 {
            rr.push_str("0x000000006f800000 0x000000006fffffff direct-relaxable\n");
        }
        rr.push_str("0x00000000fee00000 0x00000000feefffff msi\n");
        w.file(&format!("{g}/reserved_regions"), rr)?;
        for m in members {
            w.link(&format!("{g}/devices"), &m.to_string(), &dirs[m])?;
        }
    }
    Ok(Stats { functions: host.functions.len(), groups: groups.len(), entries: w.entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu_groups::{predict, RuleSet, Topology};

    #[test]
    fn written_tree_resolves_like_sysfs() {
        let host = crate::generate(400, 2);
        let t = Topology::new(host.devices()).unwrap();
        let p = predict(&t, &host.platform(), RuleSet::Linux6);
        let groups: Vec<(u32, Vec<PciAddress>)> = p.groups.iter().map(|g| (g.id, g.devices.clone())).collect();
        let dir = tempfile::tempdir().unwrap();
        let stats = write_tree(&host, &groups, dir.path()).unwrap();
        assert_eq!(stats.functions, 400);
        let bus = dir.path().join("sys/bus/pci/devices");
        assert_eq!(fs::read_dir(&bus).unwrap().count(), 400);
        for f in &host.functions {
            let link = bus.join(f.address.to_string());
            let target = fs::read_link(&link).unwrap();
            assert!(target.to_string_lossy().starts_with("../../../devices/pci"), "{}", target.display());
            // The parent bridge is the path component before the function's own, as iommuctl reads it.
            let parent = target.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()?.parse().ok());
            assert_eq!(parent, f.parent, "{}", f.address);
            let config = fs::read(link.join("config")).unwrap();
            assert_eq!(config.len(), if f.port_type().is_some() { 4096 } else { 256 });
            let group = fs::read_link(link.join("iommu_group")).unwrap();
            let id: u32 = group.file_name().unwrap().to_str().unwrap().parse().unwrap();
            let member = dir.path().join(format!("sys/kernel/iommu_groups/{id}/devices/{}", f.address));
            assert_eq!(fs::canonicalize(member).unwrap(), fs::canonicalize(&link).unwrap());
            assert!(link.join("driver").exists() == f.driver.is_some());
            if let Some(pf) = f.physfn {
                assert_eq!(
                    fs::canonicalize(link.join("physfn")).unwrap(),
                    fs::canonicalize(bus.join(pf.to_string())).unwrap()
                );
            }
        }
        let cmdline = fs::read_to_string(dir.path().join("proc/cmdline")).unwrap();
        assert!(cmdline.contains("intel_iommu=on"));
        assert!(write_tree(&host, &groups, dir.path()).is_err(), "refuses a non-empty directory");
    }

    #[test]
    fn relative_links_climb_to_the_common_ancestor() {
        assert_eq!(
            relative("sys/bus/pci/devices", "sys/devices/pci0000:00/0000:00:01.0"),
            "../../../devices/pci0000:00/0000:00:01.0"
        );
        assert_eq!(
            relative("sys/kernel/iommu_groups/3/devices", "sys/devices/pci0000:00/0000:00:01.0"),
            "../../../../devices/pci0000:00/0000:00:01.0"
        );
        assert_eq!(
            relative(
                "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.1",
                "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0"
            ),
            "../0000:01:00.0"
        );
    }
}
