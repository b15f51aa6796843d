//! The lab's own QEMU judges the arguments `iommuctl qemu` prints for a device in a PCI domain above
//! 0xffff (Intel VMD puts its devices in domain 10000 and up): QEMU's `host=` rejects such an address at
//! parse time, `sysfsdev=` takes it and goes on to look the device up. No guest is booted: QEMU is started
//! paused (`-S`) and stops at realize, because this machine has no such device; what matters is which of
//! the two errors it gives.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use iommu_lab::{find_qemu, iommuctl_bin, require_binaries, skip_or_fail};

/// A lab snapshot (the x3130 switch) moved into domain 10000, as a VMD domain would number it.
fn vmd_snapshot(dir: &Path) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../snapshots/lab-switch.json");
    let text = std::fs::read_to_string(&src).expect("snapshots/lab-switch.json");
    let moved = text.replace("\"0000:", "\"10000:");
    let f = dir.join("vmd.json");
    std::fs::write(&f, moved).unwrap();
    f
}

/// Runs QEMU paused with one extra `-device` argument and returns what it printed (it exits at once:
/// either the property does not parse, or the host device does not exist here).
fn qemu_with(qemu: &Path, device: &str) -> String {
    let mut child = Command::new(qemu)
        .args(["-machine", "q35", "-accel", "tcg", "-nographic", "-nodefaults", "-S", "-device", device])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start QEMU");
    for _ in 0..200 {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("QEMU output");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn qemu_accepts_the_sysfsdev_form_iommuctl_prints_for_a_vmd_domain_and_rejects_host() {
    let Some(qemu) = find_qemu() else {
        skip_or_fail("qemu-system-x86_64 not found (run scripts/lab-setup)");
        return;
    };
    let bin = iommuctl_bin();
    if !require_binaries(std::slice::from_ref(&bin)) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let snap = vmd_snapshot(dir.path());
    let o = Command::new(&bin).arg("--from").arg(&snap).args(["qemu", "10000:03:00.0", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let device = v["devices"][0]["device"].as_str().unwrap().to_string();
    assert!(device.starts_with("vfio-pci,sysfsdev=/sys/bus/pci/devices/10000:03:00.0"), "{device}");

    let ours = qemu_with(&qemu, &device);
    assert!(ours.contains("no such host device"), "QEMU did not take {device}: {ours}");
    assert!(!ours.contains("doesn't take value"), "{ours}");

    let host_form = qemu_with(&qemu, "vfio-pci,host=10000:03:00.0,addr=0x10.0x0");
    assert!(host_form.contains("doesn't take value"), "QEMU took host= with a 5-digit domain: {host_form}");
}
