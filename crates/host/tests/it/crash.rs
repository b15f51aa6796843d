//! Crash consistency: a bind (with and without a rollback) and a restore are killed at every sysfs write —
//! just before it takes effect and just after — on a simulated driver core, with the journal as it was left
//! on disk; a fresh `restore --all` must then leave every device on its original driver with its original
//! driver_override, and the journal empty.
//!
//! The kill is a panic (`Killed`) raised by the simulated core and caught around the operation: nothing of
//! the operation runs after it, exactly as after SIGKILL, and the journal file is whatever it had written.

use std::panic::{catch_unwind, AssertUnwindSafe};

use iommu_host::bind::{execute, plan, restore, Action, Plan};
use iommu_host::journal::StateDir;
use iommu_host::{HostDevice, Snapshot};
use iommu_pci::PciAddress;

use crate::util::{config, group, n, snapshot, Killed, SimKernel, When};

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
        k.registered.get_mut().insert(d.into()); // pci-stub is not loaded: its override leaves the device unbound
    }
    for (i, kind) in kinds.iter().enumerate() {
        k.add(PciAddress::new(0, 1, 0, i as u8).unwrap(), kind.bound, kind.over, kind.native);
    }
    k
}

/// The kernel's view: every device a multifunction endpoint 1234:0000, all in group 7.
fn snapshot_of(k: &SimKernel) -> Snapshot {
    let config = config(0x1234, 0).header(0x80).bytes();
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
    snapshot(devices, vec![group(7, k.devices.iter().copied().collect())])
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
    let p: Plan = plan(root.path(), &snapshot_of(&k), PciAddress::new(0, 1, 0, 0).unwrap(), &n("vfio-pci")).unwrap();
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
