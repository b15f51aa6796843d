//! Crash consistency: a bind (with and without a rollback) and a restore are killed at every sysfs write —
//! just before it takes effect and just after — on a simulated driver core, with the journal as it was left
//! on disk; a fresh `restore --all` must then leave every device on its original driver with its original
//! driver_override, and the journal empty.
//!
//! The kill is a panic (`Killed`) raised by the simulated core and caught around the operation: nothing of
//! the operation runs after it, exactly as after SIGKILL, and the journal file is whatever it had written.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use iommu_host::bind::{execute, plan, restore, Action, Plan};
use iommu_host::driver::{DriverCore, DriverError, DriverName};
use iommu_host::journal::StateDir;
use iommu_host::{HostDevice, KernelGroup, KernelInfo, Snapshot, FORMAT, VERSION};
use iommu_pci::PciAddress;

fn n(s: &str) -> DriverName {
    DriverName::parse(s).unwrap()
}

/// The panic payload of a simulated kill.
struct Killed;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    /// The Nth write never happens.
    Before,
    /// The Nth write happens, then the process dies.
    After,
}

/// A driver core that behaves like the kernel's where binding depends on it: probe binds the override
/// driver when one is set (and registered), the native driver otherwise; an explicit bind fails on a bound
/// device or against the override; unbind fails unless bound to that driver.
#[derive(Default)]
struct SimKernel {
    devices: BTreeSet<PciAddress>,
    native: BTreeMap<PciAddress, String>,
    registered: BTreeSet<String>,
    /// vfio-pci's probe fails for these (forces a rollback).
    refuse_vfio: BTreeSet<PciAddress>,
    bound: RefCell<BTreeMap<PciAddress, String>>,
    overrides: RefCell<BTreeMap<PciAddress, String>>,
    writes: Cell<usize>,
    kill: Cell<Option<(usize, When)>>,
}

fn enodev(what: String) -> DriverError {
    DriverError::Write { path: what.into(), value: String::new(), source: std::io::Error::from_raw_os_error(19) }
}

impl SimKernel {
    /// One sysfs write: counts it and dies before or after it when told to.
    fn write<T>(&self, apply: impl FnOnce() -> T) -> T {
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

    fn state(&self) -> BTreeMap<PciAddress, (Option<String>, Option<String>)> {
        self.devices
            .iter()
            .map(|a| (*a, (self.bound.borrow().get(a).cloned(), self.overrides.borrow().get(a).cloned())))
            .collect()
    }
}

impl DriverCore for SimKernel {
    fn present(&self, a: PciAddress) -> bool {
        self.devices.contains(&a)
    }
    fn driver(&self, a: PciAddress) -> Result<Option<DriverName>, DriverError> {
        Ok(self.bound.borrow().get(&a).map(|d| n(d)))
    }
    fn driver_override(&self, a: PciAddress) -> Result<Option<DriverName>, DriverError> {
        Ok(self.overrides.borrow().get(&a).map(|d| n(d)))
    }
    fn set_driver_override(&self, a: PciAddress, d: Option<&DriverName>) -> Result<(), DriverError> {
        self.write(|| {
            match d {
                Some(d) => self.overrides.borrow_mut().insert(a, d.to_string()),
                None => self.overrides.borrow_mut().remove(&a),
            };
            Ok(())
        })
    }
    fn unbind(&self, a: PciAddress, d: &DriverName) -> Result<(), DriverError> {
        self.write(|| {
            if self.bound.borrow().get(&a).map(String::as_str) != Some(d.as_str()) {
                return Err(enodev(format!("drivers/{d}/unbind")));
            }
            self.bound.borrow_mut().remove(&a);
            Ok(())
        })
    }
    fn probe(&self, a: PciAddress) -> Result<(), DriverError> {
        self.write(|| {
            if self.bound.borrow().contains_key(&a) {
                return Ok(());
            }
            let want = self.overrides.borrow().get(&a).cloned().or_else(|| self.native.get(&a).cloned());
            if let Some(w) = want {
                if self.registered.contains(&w) && !(w == "vfio-pci" && self.refuse_vfio.contains(&a)) {
                    self.bound.borrow_mut().insert(a, w);
                }
            }
            Ok(())
        })
    }
    fn bind(&self, a: PciAddress, d: &DriverName) -> Result<(), DriverError> {
        self.write(|| {
            let o = self.overrides.borrow().get(&a).cloned();
            if self.bound.borrow().contains_key(&a) || o.is_some_and(|o| o != d.as_str()) {
                return Err(enodev(format!("drivers/{d}/bind")));
            }
            self.bound.borrow_mut().insert(a, d.to_string());
            Ok(())
        })
    }
    fn driver_registered(&self, d: &DriverName) -> bool {
        self.registered.contains(d.as_str())
    }
    fn load_module(&self, d: &DriverName) -> Result<(), DriverError> {
        Err(DriverError::ModuleLoad { module: d.module(), detail: "simulated".into() })
    }
}

/// How a device starts: (bound driver, driver_override, native driver).
#[derive(Clone, Copy, Debug)]
struct Kind {
    name: &'static str,
    bound: Option<&'static str>,
    over: Option<&'static str>,
    native: Option<&'static str>,
}

const KINDS: [Kind; 7] = [
    Kind { name: "host driver", bound: Some("nvme"), over: None, native: Some("nvme") },
    Kind { name: "no driver", bound: None, over: None, native: None },
    Kind { name: "already vfio-pci", bound: Some("vfio-pci"), over: None, native: Some("e1000e") },
    Kind { name: "host driver + override", bound: Some("xhci_hcd"), over: Some("xhci_hcd"), native: Some("xhci_hcd") },
    Kind { name: "no driver + override", bound: None, over: Some("pci-stub"), native: Some("ahci") },
    Kind { name: "bound by hand", bound: Some("uio_pci_generic"), over: None, native: Some("snd_hda_intel") },
    Kind { name: "vfio-pci + override", bound: Some("vfio-pci"), over: Some("vfio-pci"), native: Some("igb") },
];

fn kernel(kinds: &[Kind]) -> SimKernel {
    let mut k = SimKernel::default();
    for d in ["vfio-pci", "nvme", "xhci_hcd", "ahci", "uio_pci_generic", "snd_hda_intel", "e1000e", "igb"] {
        k.registered.insert(d.into()); // pci-stub is not loaded: its override leaves the device unbound
    }
    for (i, kind) in kinds.iter().enumerate() {
        let a = PciAddress::new(0, 1, 0, i as u8).unwrap();
        k.devices.insert(a);
        if let Some(d) = kind.native {
            k.native.insert(a, d.into());
        }
        if let Some(d) = kind.bound {
            k.bound.borrow_mut().insert(a, d.into());
        }
        if let Some(o) = kind.over {
            k.overrides.borrow_mut().insert(a, o.into());
        }
    }
    k
}

fn snapshot(k: &SimKernel) -> Snapshot {
    let mut config = vec![0u8; 64];
    config[0..2].copy_from_slice(&0x1234u16.to_le_bytes());
    config[0x0e] = 0x80;
    let devices = k
        .devices
        .iter()
        .map(|a| HostDevice {
            config: config.clone(),
            driver: k.bound.borrow().get(a).cloned(),
            driver_override: k.overrides.borrow().get(a).cloned(),
            ..HostDevice::new(*a)
        })
        .collect();
    Snapshot {
        format: FORMAT.into(),
        version: VERSION,
        kernel: KernelInfo::default(),
        iommu_units: vec![],
        acpi_tables: vec![],
        groups: vec![KernelGroup {
            id: 7,
            kind: None,
            reserved_regions: vec![],
            devices: k.devices.iter().copied().collect(),
        }],
        devices,
        readiness: None,
        unreadable: Vec::new(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// A bind that succeeds.
    Bind,
    /// A bind whose last device's vfio-pci probe fails: everything before it is rolled back.
    BindRollback,
    /// A restore of a completed bind.
    Restore,
}

/// A temporary directory, on tmpfs when there is one: the journal is fsynced at every step, and a
/// thousand runs of fsyncs on a disk take half a minute.
fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap()
}

/// Runs `op` on a fresh kernel and state dir with a kill at `kill`; returns the kernel, the state dir, the
/// writes `op` made (when it was not killed) and whether it was killed.
fn run(kinds: &[Kind], op: Op, kill: Option<(usize, When)>) -> (SimKernel, tempfile::TempDir, usize, bool) {
    let mut k = kernel(kinds);
    let dir = tempdir();
    let state = StateDir::new(dir.path());
    let root = tempdir();
    let p: Plan = plan(root.path(), &snapshot(&k), PciAddress::new(0, 1, 0, 0).unwrap(), &n("vfio-pci")).unwrap();
    if op == Op::BindRollback {
        if let Some(last) = p.devices.iter().rev().find(|d| d.action == Action::Rebind) {
            k.refuse_vfio.insert(last.address);
        }
    }
    if op == Op::Restore {
        execute(&k, &state, &p, &mut |_: &str| {}).unwrap();
    }
    let before = k.writes.get();
    k.kill.set(kill.map(|(i, w)| (i + before, w)));
    let r = catch_unwind(AssertUnwindSafe(|| match op {
        Op::Bind => {
            execute(&k, &state, &p, &mut |_: &str| {}).unwrap();
        }
        Op::BindRollback => {
            let rebinds = p.devices.iter().any(|d| d.action == Action::Rebind);
            assert_eq!(execute(&k, &state, &p, &mut |_: &str| {}).is_err(), rebinds);
        }
        Op::Restore => {
            let r = restore(&k, &state, None).unwrap();
            assert!(r.failed.is_empty(), "{:?}", r.failed);
        }
    }));
    let killed = match r {
        Ok(()) => false,
        Err(payload) if payload.is::<Killed>() => true,
        Err(payload) => std::panic::resume_unwind(payload),
    };
    k.kill.set(None);
    let writes = k.writes.get() - before;
    (k, dir, writes, killed)
}

#[test]
fn bind_and_restore_killed_at_every_write_are_recovered_by_restore_all() {
    // Only our kills are silent; anything else still reports.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.payload().is::<Killed>() {
            default_hook(info)
        }
    }));
    let mut groups: Vec<Vec<Kind>> = Vec::new();
    for size in 1..=4 {
        for start in 0..KINDS.len() {
            groups.push((0..size).map(|i| KINDS[(start + i) % KINDS.len()]).collect());
        }
    }
    let mut kill_points = 0;
    for kinds in &groups {
        let original = kernel(kinds).state();
        let names: Vec<&str> = kinds.iter().map(|k| k.name).collect();
        for op in [Op::Bind, Op::BindRollback, Op::Restore] {
            let (k, dir, total, killed) = run(kinds, op, None);
            assert!(!killed);
            // Unkilled: a bind moves every endpoint not already there to vfio-pci, a rollback or restore
            // leaves nothing behind.
            let journal = StateDir::new(dir.path()).load().unwrap();
            if op == Op::Bind {
                assert!(k.state().values().all(|(d, _)| d.as_deref() == Some("vfio-pci")), "{names:?}");
            } else {
                assert_eq!(k.state(), original, "{op:?} {names:?}");
                assert!(journal.entries.is_empty(), "{op:?} {names:?}: {journal:?}");
            }
            for i in 1..=total {
                for when in [When::Before, When::After] {
                    let (k, dir, _, killed) = run(kinds, op, Some((i, when)));
                    assert!(killed, "{op:?} {names:?} write {i} {when:?} was not reached");
                    let state = StateDir::new(dir.path());
                    let r = restore(&k, &state, None).unwrap();
                    let why = format!("{op:?} {names:?} killed {when:?} write {i} of {total}");
                    assert!(r.failed.is_empty(), "{why}: {:?}", r.failed);
                    assert_eq!(k.state(), original, "{why}");
                    assert!(state.load().unwrap().entries.is_empty(), "{why}");
                    assert!(!dir.path().join("journal.json").exists(), "{why}");
                    kill_points += 1;
                }
            }
        }
    }
    let _ = std::panic::take_hook();
    assert!(kill_points > 500, "{kill_points}");
    // Straight to the process's stderr: the harness hides `eprintln!` of passing tests, and the count is
    // the point.
    {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr().lock(),
            "crash-consistency: {kill_points} kill points recovered ({} groups of 1-4 devices)",
            groups.len()
        );
    }
}
