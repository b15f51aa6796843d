//! Shared by the test modules: addresses and driver names, one config-space builder, snapshots built in
//! code, the simulated driver core, and the fake sysfs trees (PCI functions; block devices with procfs's
//! tables).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use iommu_host::driver::{DriverCore, DriverError, DriverName};
use iommu_host::safety::{holders, holders_with, BlockDevice, Exclusive, Holder};
use iommu_host::{HostDevice, KernelGroup, KernelInfo, Snapshot, FORMAT, VERSION};
use iommu_pci::PciAddress;

pub fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
}

pub fn n(s: &str) -> DriverName {
    DriverName::parse(s).unwrap()
}

/// A function with nothing but its address.
pub fn dev(addr: &str) -> HostDevice {
    HostDevice::new(a(addr))
}

// --- config space ---------------------------------------------------------------------------------------

/// A config space: vendor and device ID, then what the options add. The 64-byte header unless
/// [`Config::size`] says more.
pub fn config(vendor: u16, device: u16) -> Config {
    let mut c = vec![0u8; 64];
    c[0..2].copy_from_slice(&vendor.to_le_bytes());
    c[2..4].copy_from_slice(&device.to_le_bytes());
    Config(c)
}

pub struct Config(Vec<u8>);

impl Config {
    /// `n` bytes (256 for conventional PCI, 4096 for PCIe's extended space).
    pub fn size(mut self, n: usize) -> Self {
        self.0.resize(n, 0);
        self
    }

    /// Header type (1 for a bridge; bit 7 for a multifunction device).
    pub fn header(mut self, h: u8) -> Self {
        self.0[0x0e] = h;
        self
    }

    /// A PCI Express capability at 0x40 with device/port type `t` (0 endpoint, 4 root port, 5 upstream
    /// and 6 downstream switch port).
    pub fn pcie(mut self, t: u8) -> Self {
        self.0[6] = 0x10; // capability list
        self.0[0x34] = 0x40;
        self.0[0x40] = 0x10;
        self.0[0x42] = t << 4 | 2;
        self
    }

    pub fn bytes(self) -> Vec<u8> {
        self.0
    }
}

// --- snapshots --------------------------------------------------------------------------------------------

/// A snapshot of these devices and kernel groups, with nothing else known about the host.
pub fn snapshot(devices: Vec<HostDevice>, groups: Vec<KernelGroup>) -> Snapshot {
    Snapshot {
        format: FORMAT.into(),
        version: VERSION,
        kernel: KernelInfo::default(),
        iommu_units: vec![],
        acpi_tables: vec![],
        groups,
        devices,
        readiness: None,
        unreadable: Vec::new(),
        firmware: None,
    }
}

/// Kernel group `id` of these devices, without type or reserved regions.
pub fn group(id: u32, devices: Vec<PciAddress>) -> KernelGroup {
    KernelGroup { id, kind: None, reserved_regions: vec![], devices }
}

// --- a simulated driver core ------------------------------------------------------------------------------

/// The panic payload of a simulated kill.
pub struct Killed;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// The Nth write never happens.
    Before,
    /// The Nth write happens, then the process dies.
    After,
}

/// A driver core that behaves like the kernel's where binding depends on it: probe binds the override
/// driver when one is set (and registered), the native driver otherwise; an explicit bind fails on a bound
/// device or against the override; unbind fails unless bound to that driver. Every sysfs write is counted
/// and logged, and can be made to kill the caller (a [`Killed`] panic) just before or just after it.
#[derive(Default)]
pub struct SimKernel {
    pub devices: BTreeSet<PciAddress>,
    pub native: BTreeMap<PciAddress, String>,
    pub registered: RefCell<BTreeSet<String>>,
    /// vfio-pci's probe fails for these (forces a rollback).
    pub refuse_vfio: BTreeSet<PciAddress>,
    /// Clearing driver_override fails with EACCES for these.
    pub refuse_clear: RefCell<BTreeSet<PciAddress>>,
    /// Hot-unplugged: no longer present.
    pub unplugged: RefCell<BTreeSet<PciAddress>>,
    pub bound: RefCell<BTreeMap<PciAddress, String>>,
    pub overrides: RefCell<BTreeMap<PciAddress, String>>,
    /// Every write attempted, in order: `override ADDR Some("d")`, `unbind ADDR`, `probe ADDR`, `bind ADDR`.
    pub log: RefCell<Vec<String>>,
    pub writes: Cell<usize>,
    pub kill: Cell<Option<(usize, When)>>,
}

fn enodev(what: String) -> DriverError {
    DriverError::Write { path: what.into(), value: String::new(), source: std::io::Error::from_raw_os_error(19) }
}

impl SimKernel {
    /// Devices each on its native driver, which is registered, and vfio-pci registered.
    pub fn with_drivers(devs: &[(&str, &str)]) -> Self {
        let mut k = SimKernel::default();
        for (addr, drv) in devs {
            k.add(a(addr), Some(drv), None, Some(drv));
            k.registered.get_mut().insert(drv.to_string());
        }
        k.registered.get_mut().insert("vfio-pci".into());
        k
    }

    /// A device: bound to `bound`, with `driver_override` `over`, and `native` the driver probe picks.
    pub fn add(&mut self, x: PciAddress, bound: Option<&str>, over: Option<&str>, native: Option<&str>) {
        self.devices.insert(x);
        if let Some(d) = native {
            self.native.insert(x, d.into());
        }
        if let Some(d) = bound {
            self.bound.get_mut().insert(x, d.into());
        }
        if let Some(o) = over {
            self.overrides.get_mut().insert(x, o.into());
        }
    }

    /// The driver a device is bound to now.
    pub fn driver_of(&self, x: PciAddress) -> Option<String> {
        self.bound.borrow().get(&x).cloned()
    }

    /// Every device's (bound driver, driver_override).
    pub fn state(&self) -> BTreeMap<PciAddress, (Option<String>, Option<String>)> {
        self.devices
            .iter()
            .map(|a| (*a, (self.bound.borrow().get(a).cloned(), self.overrides.borrow().get(a).cloned())))
            .collect()
    }

    /// One sysfs write: logs and counts it, and dies before or after it when told to.
    fn write<T>(&self, what: String, apply: impl FnOnce() -> T) -> T {
        self.log.borrow_mut().push(what);
        let i = self.writes.get() + 1;
        self.writes.set(i);
        if self.kill.get() == Some((i, When::Before)) {
            std::panic::panic_any(Killed);
        }
        let r = apply();
        if self.kill.get() == Some((i, When::After)) {
            std::panic::panic_any(Killed);
        }
        r
    }
}

impl DriverCore for SimKernel {
    fn present(&self, x: PciAddress) -> bool {
        self.devices.contains(&x) && !self.unplugged.borrow().contains(&x)
    }
    fn driver(&self, x: PciAddress) -> Result<Option<DriverName>, DriverError> {
        Ok(self.bound.borrow().get(&x).map(|d| n(d)))
    }
    fn driver_override(&self, x: PciAddress) -> Result<Option<DriverName>, DriverError> {
        Ok(self.overrides.borrow().get(&x).map(|d| n(d)))
    }
    fn set_driver_override(&self, x: PciAddress, d: Option<&DriverName>) -> Result<(), DriverError> {
        self.write(format!("override {x} {:?}", d.map(|d| d.as_str())), || {
            if d.is_none() && self.refuse_clear.borrow().contains(&x) {
                return Err(DriverError::Write {
                    path: format!("/sys/bus/pci/devices/{x}/driver_override").into(),
                    value: "\n".into(),
                    source: std::io::Error::from_raw_os_error(13),
                });
            }
            match d {
                Some(d) => self.overrides.borrow_mut().insert(x, d.to_string()),
                None => self.overrides.borrow_mut().remove(&x),
            };
            Ok(())
        })
    }
    fn unbind(&self, x: PciAddress, d: &DriverName) -> Result<(), DriverError> {
        self.write(format!("unbind {x}"), || {
            if self.bound.borrow().get(&x).map(String::as_str) != Some(d.as_str()) {
                return Err(enodev(format!("drivers/{d}/unbind")));
            }
            self.bound.borrow_mut().remove(&x);
            Ok(())
        })
    }
    fn probe(&self, x: PciAddress) -> Result<(), DriverError> {
        self.write(format!("probe {x}"), || {
            if self.bound.borrow().contains_key(&x) {
                return Ok(());
            }
            let want = self.overrides.borrow().get(&x).cloned().or_else(|| self.native.get(&x).cloned());
            if let Some(w) = want {
                let refused = w == "vfio-pci" && self.refuse_vfio.contains(&x);
                if self.registered.borrow().contains(&w) && !refused {
                    self.bound.borrow_mut().insert(x, w);
                }
            }
            Ok(())
        })
    }
    fn bind(&self, x: PciAddress, d: &DriverName) -> Result<(), DriverError> {
        self.write(format!("bind {x}"), || {
            let o = self.overrides.borrow().get(&x).cloned();
            if self.bound.borrow().contains_key(&x) || o.is_some_and(|o| o != d.as_str()) {
                return Err(enodev(format!("drivers/{d}/bind")));
            }
            self.bound.borrow_mut().insert(x, d.to_string());
            Ok(())
        })
    }
    fn driver_registered(&self, d: &DriverName) -> bool {
        self.registered.borrow().contains(d.as_str())
    }
    fn load_module(&self, d: &DriverName) -> Result<(), DriverError> {
        Err(DriverError::ModuleLoad { module: d.module(), detail: "not found in modules.dep".into() })
    }
}

// --- a fake sysfs: PCI functions --------------------------------------------------------------------------

/// A PCI function below `root` as Linux lays it out: its directory `sys/devices/<canonical>` holding
/// `config` and whatever attributes are given, listed in `sys/bus/pci/devices`; optionally on a driver and
/// in an IOMMU group. Links are relative, as sysfs makes them, however deep the function sits.
pub fn function(root: &Path, canonical: &str, cfg: &[u8]) -> Function {
    let dir = root.join("sys/devices").join(canonical);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("config"), cfg).unwrap();
    let name = Path::new(canonical).file_name().unwrap().to_str().unwrap().to_string();
    let bus = root.join("sys/bus/pci/devices");
    fs::create_dir_all(&bus).unwrap();
    symlink(format!("../../../devices/{canonical}"), bus.join(&name)).unwrap();
    // From the function's directory up to `sys/`.
    let up = "../".repeat(Path::new(canonical).components().count() + 1);
    Function { root: root.to_path_buf(), canonical: canonical.to_string(), dir, name, up }
}

pub struct Function {
    root: PathBuf,
    canonical: String,
    dir: PathBuf,
    name: String,
    up: String,
}

impl Function {
    /// An attribute file of the function.
    pub fn attr(self, file: &str, text: &str) -> Self {
        fs::write(self.dir.join(file), text).unwrap();
        self
    }

    /// Bound to `driver`: `sys/bus/pci/drivers/<driver>` and the function's `driver` link to it.
    pub fn driver(self, driver: &str) -> Self {
        fs::create_dir_all(self.root.join("sys/bus/pci/drivers").join(driver)).unwrap();
        symlink(format!("{}bus/pci/drivers/{driver}", self.up), self.dir.join("driver")).unwrap();
        self
    }

    /// In IOMMU group `g` (type DMA, the MSI window reserved): `sys/kernel/iommu_groups/<g>/devices/` links
    /// to the function, its `iommu_group` to the group.
    pub fn group(self, g: u32) -> Self {
        let gd = self.root.join(format!("sys/kernel/iommu_groups/{g}"));
        fs::create_dir_all(gd.join("devices")).unwrap();
        symlink(format!("../../../../devices/{}", self.canonical), gd.join("devices").join(&self.name)).unwrap();
        symlink(format!("{}kernel/iommu_groups/{g}", self.up), self.dir.join("iommu_group")).unwrap();
        fs::write(gd.join("type"), "DMA\n").unwrap();
        fs::write(gd.join("reserved_regions"), "0x00000000fee00000 0x00000000feefffff msi\n").unwrap();
        self
    }
}

// --- a fake sysfs and procfs: block devices ---------------------------------------------------------------

/// A fake host for what holds a function's block devices: NVMe functions with disks and partitions,
/// stacked devices, and the tables (`proc/self/mountinfo`, `proc/swaps`).
pub struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Tree {
        let t = Tree { dir: tempfile::tempdir().unwrap() };
        for d in ["sys/class/block", "sys/dev/block", "proc/self"] {
            fs::create_dir_all(t.root().join(d)).unwrap();
        }
        t
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Registers a block device directory `rel` (below `sys/`) named `name` with number `num`.
    pub fn block(&self, rel: &str, name: &str, num: &str) -> PathBuf {
        let d = self.root().join("sys").join(rel);
        fs::create_dir_all(d.join("holders")).unwrap();
        fs::create_dir_all(d.join("slaves")).unwrap();
        fs::write(d.join("dev"), format!("{num}\n")).unwrap();
        let (maj, min) = num.split_once(':').unwrap();
        fs::write(d.join("uevent"), format!("MAJOR={maj}\nMINOR={min}\nDEVNAME={name}\nDEVTYPE=disk\n")).unwrap();
        symlink(format!("../../{rel}"), self.root().join("sys/class/block").join(name)).unwrap();
        symlink(format!("../../{rel}"), self.root().join("sys/dev/block").join(num)).unwrap();
        d
    }

    /// An NVMe function at `pci` (on root port 00:01.N) with disk `disk` (259:M) and partitions
    /// `disk` + `p1`, `p2`, ... numbered from M+1.
    pub fn nvme(&self, pci: &str, ctrl: &str, disk: &str, first_minor: u32, parts: usize) {
        let port = format!("0000:00:01.{}", &pci[6..7]);
        let rel = format!("devices/pci0000:00/{port}/0000:{pci}/nvme/{ctrl}/{disk}");
        self.block(&rel, disk, &format!("259:{first_minor}"));
        for i in 1..=parts {
            let p = format!("{disk}p{i}");
            let d = self.block(&format!("{rel}/{p}"), &p, &format!("259:{}", first_minor + i as u32));
            fs::write(d.join("partition"), format!("{i}\n")).unwrap();
        }
    }

    /// A virtual block device (`dm-N`, `mdN`) stacked on `lower` devices, with `holders/` links on them.
    pub fn stacked(&self, name: &str, num: &str, lower: &[&str], attr: (&str, &str)) {
        let rel = format!("devices/virtual/block/{name}");
        let d = self.block(&rel, name, num);
        let (file, value) = attr;
        fs::create_dir_all(d.join(file).parent().unwrap()).unwrap();
        fs::write(d.join(file), format!("{value}\n")).unwrap();
        for l in lower {
            let ld = fs::canonicalize(self.root().join("sys/class/block").join(l)).unwrap();
            symlink(&ld, d.join("slaves").join(l)).unwrap();
            symlink(&d, ld.join("holders").join(name)).unwrap();
        }
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.root().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    pub fn mountinfo(&self, text: &str) {
        self.write("proc/self/mountinfo", text);
    }

    /// `proc/swaps`: its header line, then `lines`.
    pub fn swaps(&self, lines: &str) {
        self.write("proc/swaps", &format!("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n{lines}"));
    }

    pub fn holders(&self, addr: &str) -> Vec<Holder> {
        holders(self.root(), &[&dev(addr)])
    }

    pub fn holders_with(&self, addr: &str, probe: &dyn Fn(&BlockDevice) -> Exclusive) -> Vec<Holder> {
        holders_with(self.root(), &[&dev(addr)], probe)
    }
}

/// What each holder says, in order.
pub fn whats(h: &[Holder]) -> Vec<&str> {
    h.iter().map(|h| h.what.as_str()).collect()
}
