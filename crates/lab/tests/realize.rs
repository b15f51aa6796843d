//! QEMU accepts and realizes what `iommuctl qemu` prints (issue "Orchestrators and time", deliverable 5):
//! inside a lab guest, a group is bound with `iommuctl bind`, then a QEMU binary (bookworm-backports' QEMU
//! 10.0, which `scripts/lab-setup` unpacks: Debian 12's own 7.2 predates the iommufd backend; copied into
//! the guest with its libraries and SeaBIOS) is started paused (`-S`) with the printed `-device vfio-pci,...`
//! arguments, taken as a shell takes them (`eval`: the output is meant to be pasted, line continuations and
//! all), and QMP on standard input: `qmp_capabilities`, `query-pci`, `quit`. A device QEMU cannot
//! realize (a bad host address, a group that is not viable, a bad option) makes QEMU exit before QMP
//! answers; `query-pci` shows each assigned function on the guest bus with the host device's IDs.
//!
//! Two runs: the legacy container on Debian 6.1, and iommufd with the device cdev (`--iommufd`) on the lab's
//! iommufd kernel. Needs the guest QEMU, `iommuctl` and the kernels; a missing one skips, or
//! fails under CI / IOMMU_LAB_REQUIRED=1.

use std::time::Duration;

use serde_json::Value;

use iommu_lab::kernel::IOMMUFD_KERNEL;
use iommu_lab::{guest_qemu, iommuctl_bin, require_binaries, require_kernel, require_lab, skip_or_fail, topology};
use iommu_lab::{GuestRun, GuestSpec, Topology};

const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";

/// Boots `t`, binds `target`'s group, prints `iommuctl qemu target EXTRA` and runs QEMU with it.
fn realize(t: &Topology, target: &str, extra: &str) -> Option<GuestRun> {
    let qemu = guest_qemu();
    if !qemu.is_file() {
        skip_or_fail(&format!("{} not found (scripts/lab-setup unpacks it)", qemu.display()));
        return None;
    }
    let bios = match std::fs::read(SEABIOS) {
        Ok(b) => b,
        Err(e) => {
            skip_or_fail(&format!("{SEABIOS}: {e} (package seabios, a dependency of qemu-system-x86)"));
            return None;
        }
    };
    let b = iommuctl_bin();
    let q = qemu.display();
    let script = format!(
        ". /lab/lib.sh\nB={b}\n\
         printf '%s\\n' '{{\"execute\":\"qmp_capabilities\"}}' '{{\"execute\":\"query-pci\"}}' '{{\"execute\":\"quit\"}}' > /tmp/qmp\n\
         section unbound sh -c 'eval \"{q} -L /usr/share/seabios -machine q35 -accel tcg,tb-size=16 -m 64 -nodefaults -display none -S -qmp stdio -device vfio-pci,host={target}\" < /tmp/qmp'\n\
         section bind $B bind {target}\n\
         section args $B qemu {target} {extra}\n\
         $B qemu {target} {extra} > /tmp/args\n\
         section qemu sh -c 'eval \"{q} -L /usr/share/seabios -machine q35 -accel tcg,tb-size=16 -m 64 -nodefaults -display none -S -qmp stdio $(cat /tmp/args)\" < /tmp/qmp'\n\
         section restore $B restore --all\n",
        b = b.display()
    );
    Some(
        GuestSpec::new(t)
            .run_name(&format!("realize-{}", t.name))
            .binary(b)
            .binary(qemu)
            .file(SEABIOS, bios, 0o644)
            .timeout(Duration::from_secs(900))
            .script(&script)
            .boot()
            .expect("boot"),
    )
}

/// The QMP replies, one JSON value per line.
fn replies(out: &str) -> Vec<Value> {
    out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// `(slot, function, vendor, device)` of every device `query-pci` shows on bus 0.
fn guest_functions(replies: &[Value]) -> Vec<(u64, u64, u64, u64)> {
    let pci = replies
        .iter()
        .find_map(|r| r["return"].as_array().filter(|a| a.first().is_some_and(|b| b["devices"].is_array())));
    let mut v = Vec::new();
    for bus in pci.into_iter().flatten() {
        for d in bus["devices"].as_array().into_iter().flatten() {
            let n = |x: &Value| x.as_u64().unwrap_or(u64::MAX);
            v.push((n(&d["slot"]), n(&d["function"]), n(&d["id"]["vendor"]), n(&d["id"]["device"])));
        }
    }
    v
}

fn check(run: &GuestRun, want: &[(u64, u64)], extra: &str) {
    // The premise: QEMU does realize the device now, so a device not on vfio-pci stops it.
    assert_ne!(run.rc("unbound"), 0, "QEMU started with a device not bound to vfio-pci: {}", run.out("unbound"));
    assert!(run.err("unbound").contains("vfio"), "{}", run.err("unbound"));
    assert_eq!(run.rc("bind"), 0, "{}", run.err("bind"));
    assert_eq!(run.rc("args"), 0, "{}", run.err("args"));
    let args = run.out("args");
    assert!(args.contains("-device vfio-pci,"), "{args}");
    if extra == "--iommufd" {
        assert!(args.contains("-object iommufd,id=iommufd0") && args.contains("iommufd=iommufd0"), "{args}");
    }
    let r = replies(run.out("qemu"));
    assert_eq!(run.rc("qemu"), 0, "QEMU refused {args}\nstdout: {}\nstderr: {}", run.out("qemu"), run.err("qemu"));
    assert!(r.first().is_some_and(|g| g["QMP"].is_object()), "no QMP greeting: {}", run.out("qemu"));
    let f = guest_functions(&r);
    for &(slot, func) in want {
        // edu: vendor 0x1234, device 0x11e8, as the host device has them.
        assert!(f.contains(&(slot, func, 0x1234, 0x11e8)), "{slot:x}.{func} not realized: {f:x?}\n{args}");
    }
    assert!(r.iter().any(|x| x["event"] == "SHUTDOWN"), "QEMU did not quit over QMP: {}", run.out("qemu"));
    assert_eq!(run.rc("restore"), 0, "{}", run.err("restore"));
    println!("realized {args:?}: guest functions {f:x?}");
}

#[test]
fn qemu_realizes_the_printed_vfio_pci_devices_of_a_bound_multifunction_group() {
    if !require_lab() || !require_binaries(&[iommuctl_bin()]) {
        return;
    }
    let t = topology("mf-endpoint-root").expect("topology mf-endpoint-root");
    let Some(run) = realize(&t, "0000:00:10.0", "") else { return };
    check(&run, &[(0x10, 0), (0x10, 1)], "");
}

#[test]
fn qemu_realizes_the_printed_iommufd_arguments_on_the_iommufd_kernel() {
    if !require_lab() || !require_kernel(IOMMUFD_KERNEL) || !require_binaries(&[iommuctl_bin()]) {
        return;
    }
    let Some(run) = realize(&topology::iommufd(), "0000:01:00.0", "--iommufd") else { return };
    check(&run, &[(0x10, 0)], "--iommufd");
}
