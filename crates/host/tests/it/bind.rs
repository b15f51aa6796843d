//! Claims about planning, binding, rollback and restore, against a simulated driver core that behaves
//! like the kernel's: probe honours driver_override, otherwise picks the device's native driver.

use iommu_host::bind::{error_chain, execute, group_status, plan, resolve_target, restore, Action, BindError, Plan};
use iommu_host::journal::StateDir;
use iommu_host::{HostDevice, Snapshot};
use iommu_pci::PciAddress;

use crate::util::{a, config, group, n, snapshot, SimKernel};

/// The kernel's view as a snapshot: `k`'s devices on their drivers, 1234:11e8 for function 0 and 1234:11e9
/// for the others, `bridges` of header type 1 (the rest multifunction endpoints), in `groups` numbered from 0.
fn host(k: &SimKernel, groups: &[&[&str]], bridges: &[&str]) -> Snapshot {
    let mut devices = Vec::new();
    for addr in k.devices.iter() {
        let bridge = bridges.contains(&&addr.to_string()[5..]);
        devices.push(HostDevice {
            config: config(0x1234, if addr.function == 0 { 0x11e8 } else { 0x11e9 })
                .header(if bridge { 1 } else { 0x80 })
                .bytes(),
            driver: k.driver_of(*addr),
            ..HostDevice::new(*addr)
        });
    }
    let groups = groups.iter().enumerate().map(|(i, g)| group(i as u32, g.iter().map(|s| a(s)).collect())).collect();
    snapshot(devices, groups)
}

fn pair() -> SimKernel {
    SimKernel::with_drivers(&[
        ("00:01.0", "pcieport"),
        ("01:00.0", "snd_hda_intel"),
        ("01:00.1", "xhci_hcd"),
        ("02:00.0", "nvme"),
    ])
}

const GROUPS: &[&[&str]] = &[&["00:01.0", "01:00.0", "01:00.1"], &["02:00.0"]];

fn planned(k: &SimKernel) -> Plan {
    let root = tempfile::tempdir().unwrap();
    plan(root.path(), &host(k, GROUPS, &["00:01.0"]), a("01:00.0"), &n("vfio-pci")).unwrap()
}

#[test]
fn plan_covers_every_endpoint_of_the_group_and_leaves_bridges() {
    let p = planned(&pair());
    let acts: Vec<(String, Action)> = p.devices.iter().map(|d| (d.address.to_string(), d.action)).collect();
    assert_eq!(
        acts,
        vec![
            ("0000:00:01.0".into(), Action::SkipBridge),
            ("0000:01:00.0".into(), Action::Rebind),
            ("0000:01:00.1".into(), Action::Rebind)
        ]
    );
}

#[test]
fn bind_moves_every_endpoint_to_vfio_and_journals_the_originals() {
    let k = pair();
    let st = tempfile::tempdir().unwrap();
    let state = StateDir::new(st.path());
    execute(&k, &state, &planned(&k), &mut |_: &str| {}).unwrap();
    assert_eq!(k.driver_of(a("01:00.0")).as_deref(), Some("vfio-pci"));
    assert_eq!(k.driver_of(a("01:00.1")).as_deref(), Some("vfio-pci"));
    assert_eq!(k.driver_of(a("00:01.0")).as_deref(), Some("pcieport"));
    let j = state.load().unwrap();
    assert_eq!(j.get(a("01:00.1")).unwrap().original_driver, Some(n("xhci_hcd")));
}

#[test]
fn failed_probe_of_the_second_device_rolls_back_the_first() {
    let mut k = pair();
    k.refuse_vfio.insert(a("01:00.1"));
    let st = tempfile::tempdir().unwrap();
    let state = StateDir::new(st.path());
    let err = execute(&k, &state, &planned(&k), &mut |_: &str| {}).unwrap_err();
    match &err {
        BindError::Failed { device, restored, not_restored, .. } => {
            assert_eq!(*device, a("01:00.1"));
            assert_eq!(restored, &vec![a("01:00.0"), a("01:00.1")]);
            assert!(not_restored.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("back on their original drivers"), "{err}");
    assert_eq!(k.driver_of(a("01:00.0")).as_deref(), Some("snd_hda_intel"));
    assert_eq!(k.driver_of(a("01:00.1")).as_deref(), Some("xhci_hcd"));
    assert!(k.overrides.borrow().is_empty());
    assert!(state.load().unwrap().entries.is_empty());
}

#[test]
fn restore_brings_back_original_drivers_and_is_idempotent() {
    let k = pair();
    let st = tempfile::tempdir().unwrap();
    let state = StateDir::new(st.path());
    execute(&k, &state, &planned(&k), &mut |_: &str| {}).unwrap();
    let r = restore(&k, &state, None).unwrap();
    assert_eq!(r.restored, vec![a("01:00.0"), a("01:00.1")]);
    assert_eq!(k.driver_of(a("01:00.0")).as_deref(), Some("snd_hda_intel"));
    assert!(state.load().unwrap().entries.is_empty());
    let again = restore(&k, &state, None).unwrap();
    assert!(again.restored.is_empty() && again.failed.is_empty());
}

#[test]
fn missing_driver_that_cannot_be_loaded_changes_nothing() {
    let k = pair();
    k.registered.borrow_mut().remove("vfio-pci");
    let st = tempfile::tempdir().unwrap();
    let err = execute(&k, &StateDir::new(st.path()), &planned(&k), &mut |_: &str| {}).unwrap_err();
    assert!(matches!(err, BindError::DriverUnavailable { .. }), "{err:?}");
    assert!(k.log.borrow().is_empty());
}

#[test]
fn vendor_device_id_must_match_exactly_one_device() {
    let k = pair();
    let s = host(&k, GROUPS, &["00:01.0"]);
    match resolve_target(&s, "1234:11e8") {
        Err(BindError::Ambiguous { candidates, .. }) => assert_eq!(candidates.len(), 3),
        other => panic!("{other:?}"),
    }
    assert_eq!(resolve_target(&s, "1234:11e9").unwrap(), a("01:00.1"));
    assert_eq!(resolve_target(&s, "02:00.0").unwrap(), a("02:00.0"));
}

#[test]
fn group_with_a_host_driver_is_not_viable_and_names_it() {
    let k = pair();
    let st = group_status(&host(&k, GROUPS, &["00:01.0"]));
    assert!(!st[0].viable);
    assert_eq!(st[0].blockers.len(), 2);
    assert_eq!(st[0].blockers[0], (a("01:00.0"), "snd_hda_intel".to_string()));
}

#[test]
fn variant_vfio_drivers_make_a_group_viable_and_count_as_on_vfio_look_alikes_do_not() {
    // Variant drivers register their module name with underscores (the kernel's KBUILD_MODNAME).
    let k = SimKernel::with_drivers(&[("00:01.0", "pcieport"), ("01:00.0", "mlx5_vfio_pci"), ("01:00.1", "pci-stub")]);
    let st = group_status(&host(&k, &[&["00:01.0", "01:00.0", "01:00.1"]], &["00:01.0"]));
    assert!(st[0].viable, "{st:?}");
    assert_eq!(st[0].on_vfio, vec![a("01:00.0")]);
    let k = SimKernel::with_drivers(&[("01:00.0", "my-vfio-thing"), ("01:00.1", "mlx5-vfio-pci")]);
    let st = group_status(&host(&k, &[&["01:00.0", "01:00.1"]], &[]));
    assert!(!st[0].viable);
    assert_eq!(st[0].blockers.len(), 2);
    assert!(st[0].on_vfio.is_empty());
}

#[test]
fn group_endpoints_are_the_members_that_are_not_bridges() {
    let s = host(&pair(), GROUPS, &["00:01.0"]);
    assert!(s.is_bridge(a("00:01.0")) && !s.is_bridge(a("01:00.0")) && !s.is_bridge(a("09:00.0")));
    let g = s.group_of(a("01:00.0")).unwrap();
    assert_eq!(s.group_endpoints(g), vec![a("01:00.0"), a("01:00.1")]);
}

#[test]
fn a_second_bind_keeps_the_first_recorded_original() {
    let k = pair();
    let st = tempfile::tempdir().unwrap();
    let state = StateDir::new(st.path());
    execute(&k, &state, &planned(&k), &mut |_: &str| {}).unwrap();
    // Someone moves the device to another driver by hand; a new bind must not record that as original.
    k.bound.borrow_mut().insert(a("01:00.0"), "pci-stub".into());
    k.registered.borrow_mut().insert("pci-stub".into());
    execute(&k, &state, &planned(&k), &mut |_: &str| {}).unwrap();
    assert_eq!(state.load().unwrap().get(a("01:00.0")).unwrap().original_driver, Some(n("snd_hda_intel")));
}

#[test]
fn a_failure_on_the_first_device_never_journals_or_touches_the_second() {
    let mut k = pair();
    k.refuse_vfio.insert(a("01:00.0"));
    let st = tempfile::tempdir().unwrap();
    let state = StateDir::new(st.path());
    let err = execute(&k, &state, &planned(&k), &mut |_: &str| {}).unwrap_err();
    assert!(matches!(&err, BindError::Failed { restored, .. } if restored == &vec![a("01:00.0")]), "{err:?}");
    assert!(!k.log.borrow().iter().any(|l| l.contains("0000:01:00.1")), "{:?}", k.log.borrow());
    assert!(state.load().unwrap().entries.is_empty());
}

#[test]
fn after_a_rollback_the_journal_holds_exactly_the_devices_not_restored() {
    let mut k = pair();
    k.refuse_vfio.insert(a("01:00.1"));
    k.refuse_clear.borrow_mut().insert(a("01:00.0"));
    let st = tempfile::tempdir().unwrap();
    let state = StateDir::new(st.path());
    let err = execute(&k, &state, &planned(&k), &mut |_: &str| {}).unwrap_err();
    match &err {
        BindError::Failed { restored, not_restored, .. } => {
            assert_eq!(restored, &vec![a("01:00.1")]);
            assert_eq!(not_restored, &vec![a("01:00.0")]);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("could not restore 0000:01:00.0 (run `iommuctl restore`)"), "{err}");
    let j = state.load().unwrap();
    let left: Vec<PciAddress> = j.entries.iter().map(|e| e.address).collect();
    assert_eq!(left, vec![a("01:00.0")]);
    assert_eq!(j.get(a("01:00.0")).unwrap().original_driver, Some(n("snd_hda_intel")));
    // Once the override can be cleared again, restore finishes the job.
    k.refuse_clear.borrow_mut().clear();
    assert_eq!(restore(&k, &state, None).unwrap().restored, vec![a("01:00.0")]);
    assert_eq!(k.driver_of(a("01:00.0")).as_deref(), Some("snd_hda_intel"));
}

#[test]
fn restore_failures_carry_the_os_error_and_never_say_run_restore() {
    let k = pair();
    let st = tempfile::tempdir().unwrap();
    let state = StateDir::new(st.path());
    execute(&k, &state, &planned(&k), &mut |_: &str| {}).unwrap();
    k.refuse_clear.borrow_mut().insert(a("01:00.0"));
    let r = restore(&k, &state, None).unwrap();
    assert_eq!(r.restored, vec![a("01:00.1")]);
    let (dev, why) = &r.failed[0];
    assert_eq!(*dev, a("01:00.0"));
    assert!(why.contains("restoring driver_override failed for 0000:01:00.0"), "{why}");
    assert!(why.contains(r#"cannot write "\n" to /sys/bus/pci/devices/0000:01:00.0/driver_override"#), "{why}");
    assert!(why.contains("Permission denied (os error 13)"), "{why}");
    assert!(!why.contains("iommuctl restore"), "{why}");
    assert_eq!(state.load().unwrap().entries.len(), 1);
}

#[test]
fn a_hot_unplugged_device_is_reported_and_dropped_by_restore() {
    let k = pair();
    let st = tempfile::tempdir().unwrap();
    let state = StateDir::new(st.path());
    execute(&k, &state, &planned(&k), &mut |_: &str| {}).unwrap();
    k.unplugged.borrow_mut().insert(a("01:00.1"));
    let r = restore(&k, &state, None).unwrap();
    assert_eq!(r.restored, vec![a("01:00.0")]);
    assert_eq!(r.gone, vec![a("01:00.1")]);
    assert!(r.failed.is_empty());
    assert!(state.load().unwrap().entries.is_empty());
    assert!(!st.path().join("journal.json").exists());
}

#[test]
fn a_member_whose_sysfs_driver_is_not_a_driver_name_refuses_the_plan() {
    let k = pair();
    let mut snap = host(&k, GROUPS, &["00:01.0"]);
    snap.devices.iter_mut().find(|d| d.address == a("01:00.1")).unwrap().driver = Some("xhci_hcd\nx".into());
    let root = tempfile::tempdir().unwrap();
    let err = plan(root.path(), &snap, a("01:00.0"), &n("vfio-pci")).unwrap_err();
    assert!(matches!(err, BindError::BadName { what: "driver", .. }), "{err:?}");
    assert!(error_chain(&err).contains(r#""xhci_hcd\nx" is not a kernel driver name"#), "{}", error_chain(&err));
    snap.devices.iter_mut().find(|d| d.address == a("01:00.1")).unwrap().driver = None;
    snap.devices.iter_mut().find(|d| d.address == a("01:00.1")).unwrap().driver_override = Some("a\"b".into());
    let err = plan(root.path(), &snap, a("01:00.0"), &n("vfio-pci")).unwrap_err();
    assert!(matches!(err, BindError::BadName { what: "driver_override", .. }), "{err:?}");
    assert!(k.log.borrow().is_empty());
}
