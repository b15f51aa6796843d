//! `iommuctl check` on hand-built root trees, one fact changed at a time. Each tree models what the named
//! kernel interfaces show (/proc/interrupts `IR-` chips, /sys/module, /lib/modules/<release>/modules.dep,
//! group reserved_regions); the lab test (crates/lab/tests/iommuctl.rs) runs `check` on real kernels with
//! and without an IOMMU.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn iommuctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iommuctl")).args(args).env("NO_COLOR", "1").output().unwrap()
}

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A VGA endpoint and a NIC on a root bus; with `groups`, each in its own group (the NIC's with an RMRR
/// `direct` region); the VFIO modules shipped by release 6.1.0-test, loaded or not.
struct Host {
    groups: bool,
    cpu: &'static str,
    interrupts_ir: bool,
    loaded: &'static [&'static str],
    shipped: bool,
    unsafe_interrupts: Option<&'static str>,
    cmdline: &'static str,
    grub: bool,
    /// Whether the NIC shows a `reset_method` attribute.
    reset_attr: bool,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            groups: true,
            cpu: "GenuineIntel",
            interrupts_ir: true,
            loaded: &["vfio", "vfio_iommu_type1", "vfio_pci", "vfio_pci_core"],
            shipped: true,
            unsafe_interrupts: None,
            cmdline: "BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on",
            grub: true,
            reset_attr: true,
        }
    }
}

fn config(vendor: u16, device: u16, class: u32) -> Vec<u8> {
    let mut c = vec![0u8; 64];
    c[0..2].copy_from_slice(&vendor.to_le_bytes());
    c[2..4].copy_from_slice(&device.to_le_bytes());
    c[9..12].copy_from_slice(&class.to_le_bytes()[0..3]);
    c
}

fn build(root: &Path, h: &Host) {
    for (i, (addr, cfg, reset)) in [
        ("0000:00:01.0", config(0x1234, 0x1111, 0x030000), ""),
        ("0000:00:02.0", config(0x8086, 0x10d3, 0x020000), "flr bus"),
    ]
    .into_iter()
    .enumerate()
    {
        let d = root.join("sys/devices/pci0000:00").join(addr);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        symlink(&d, root.join("sys/bus/pci/devices").join(addr)).unwrap();
        std::fs::write(d.join("config"), cfg).unwrap();
        if i == 0 {
            std::fs::write(d.join("boot_vga"), "1\n").unwrap();
        } else if h.reset_attr {
            std::fs::write(d.join("reset_method"), format!("{reset}\n")).unwrap();
        }
        if h.groups {
            let g = root.join(format!("sys/kernel/iommu_groups/{i}"));
            std::fs::create_dir_all(g.join("devices")).unwrap();
            symlink(&g, d.join("iommu_group")).unwrap();
            symlink(&d, g.join("devices").join(addr)).unwrap();
            std::fs::write(g.join("type"), "DMA\n").unwrap();
            let mut rr = "0x00000000fee00000 0x00000000feefffff msi\n".to_string();
            if i == 1 {
                rr.push_str("0x000000007b800000 0x000000007fffffff direct\n");
            }
            std::fs::write(g.join("reserved_regions"), rr).unwrap();
        }
    }
    if h.groups {
        std::fs::create_dir_all(root.join("sys/class/iommu/dmar0")).unwrap();
        write(root, "sys/firmware/acpi/tables/DMAR", "");
    }
    write(root, "proc/sys/kernel/osrelease", "6.1.0-test\n");
    write(root, "proc/cmdline", &format!("{}\n", h.cmdline));
    write(root, "proc/cpuinfo", &format!("processor\t: 0\nvendor_id\t: {}\n", h.cpu));
    let chip = if h.interrupts_ir { "IR-PCI-MSI-0000:00:02.0" } else { "PCI-MSI-0000:00:02.0" };
    write(root, "proc/interrupts", &format!("           CPU0\n 24:         10  {chip}    0-edge      eth0\n"));
    std::fs::create_dir_all(root.join("sys/module/kernel")).unwrap();
    for m in h.loaded {
        std::fs::create_dir_all(root.join("sys/module").join(m)).unwrap();
    }
    if let Some(v) = h.unsafe_interrupts {
        write(root, "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", &format!("{v}\n"));
    }
    if h.shipped {
        write(
            root,
            "lib/modules/6.1.0-test/modules.dep",
            "kernel/drivers/vfio/vfio.ko: \nkernel/drivers/vfio/vfio_iommu_type1.ko: kernel/drivers/vfio/vfio.ko\n\
             kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko\n\
             kernel/drivers/vfio/pci/vfio-pci-core.ko: kernel/drivers/vfio/vfio.ko\n",
        );
    }
    std::fs::create_dir_all(root.join("dev/vfio")).unwrap();
    if h.grub {
        write(root, "etc/default/grub", "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n");
    }
}

fn check(h: &Host) -> (i32, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), h);
    let root = dir.path().to_str().unwrap();
    let o = iommuctl(&["--root", root, "check", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("check --json is not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout));
    });
    let text = iommuctl(&["--root", root, "check"]);
    assert_eq!(text.status.code(), o.status.code(), "text and JSON runs disagree on the exit code");
    (o.status.code().unwrap(), v, String::from_utf8_lossy(&text.stdout).into_owned())
}

fn item<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["items"].as_array().unwrap().iter().find(|i| i["id"] == id).unwrap_or_else(|| panic!("no item {id} in {v}"))
}

fn fixes(i: &Value) -> String {
    i.get("fix").map(|f| f.to_string()).unwrap_or_default()
}

#[test]
fn a_ready_host_exits_0_with_warnings_for_rmrr_boot_vga_and_reset() {
    let (rc, v, text) = check(&Host::default());
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["ready"], true);
    for (id, status) in [
        ("iommu", "pass"),
        ("interrupt-remapping", "pass"),
        ("vfio-modules", "pass"),
        ("rmrr", "warn"),
        ("boot-vga", "warn"),
        ("reset", "warn"),
    ] {
        assert_eq!(item(&v, id)["status"], status, "{id}: {}", item(&v, id));
    }
    assert_eq!(item(&v, "rmrr")["devices"], serde_json::json!(["0000:00:02.0"]));
    assert_eq!(item(&v, "boot-vga")["devices"], serde_json::json!(["0000:00:01.0"]));
    // 00:01.0 has no reset_method attribute while 00:02.0 has one: it has no reset.
    assert_eq!(item(&v, "reset")["devices"], serde_json::json!(["0000:00:01.0"]));
    assert!(text.starts_with("READY"), "{text}");
}

#[test]
fn no_iommu_on_intel_fails_with_the_parameter_and_where_it_goes() {
    let (rc, v, text) = check(&Host { groups: false, cmdline: "root=/dev/sda1 quiet", ..Host::default() });
    assert_eq!(rc, 1);
    assert_eq!(v["ready"], false);
    let i = item(&v, "iommu");
    assert_eq!(i["status"], "fail");
    let f = fixes(i);
    assert!(
        f.contains("Intel VT-d") && f.contains("intel_iommu=on") && f.contains("GRUB_CMDLINE_LINUX_DEFAULT"),
        "{f}"
    );
    assert!(!f.contains("systemd-boot"), "only the boot loader found (GRUB) is named: {f}");
    assert!(text.starts_with("NOT READY"), "{text}");
}

#[test]
fn iommu_turned_off_on_the_command_line_says_which_parameter_to_remove() {
    let (rc, v, _) = check(&Host {
        groups: false,
        cpu: "AuthenticAMD",
        cmdline: "root=/dev/sda1 amd_iommu=off",
        grub: false,
        ..Host::default()
    });
    assert_eq!(rc, 1);
    let f = fixes(item(&v, "iommu"));
    assert!(f.contains("remove `amd_iommu=off`") && f.contains("amd_iommu=on"), "{f}");
    assert!(
        f.contains("GRUB") && f.contains("systemd-boot") && f.contains("kernelstub"),
        "no loader known: all three: {f}"
    );
}

#[test]
fn missing_interrupt_remapping_fails_unless_unsafe_interrupts_are_allowed() {
    let (rc, v, _) = check(&Host { interrupts_ir: false, ..Host::default() });
    assert_eq!(rc, 1);
    assert_eq!(item(&v, "interrupt-remapping")["status"], "fail");
    assert!(fixes(item(&v, "interrupt-remapping")).contains("allow_unsafe_interrupts"));

    let (rc, v, _) = check(&Host { interrupts_ir: false, unsafe_interrupts: Some("Y"), ..Host::default() });
    assert_eq!(rc, 0, "{v}");
    assert_eq!(item(&v, "interrupt-remapping")["status"], "warn");
}

#[test]
fn vfio_modules_shipped_but_not_loaded_warn_and_missing_ones_fail() {
    let (rc, v, _) = check(&Host { loaded: &[], ..Host::default() });
    assert_eq!(rc, 0);
    let i = item(&v, "vfio-modules");
    assert_eq!(i["status"], "warn");
    assert!(fixes(i).contains("modprobe vfio-pci"), "{i}");

    let (rc, v, _) = check(&Host { loaded: &[], shipped: false, ..Host::default() });
    assert_eq!(rc, 1);
    assert_eq!(item(&v, "vfio-modules")["status"], "fail");
}

#[test]
fn snapshots_without_readiness_facts_say_unknown_instead_of_guessing() {
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../snapshots/lab-everything.json");
    let o = iommuctl(&["--from", lab.to_str().unwrap(), "check", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(0));
    for id in ["interrupt-remapping", "vfio-modules"] {
        let i = item(&v, id);
        assert_eq!(i["status"], "info");
        assert!(i["summary"].as_str().unwrap().contains("not recorded in this snapshot"), "{i}");
    }
}

#[test]
fn on_a_5_15_or_later_kernel_no_reset_method_attribute_anywhere_means_no_reset() {
    let (_, v, _) = check(&Host { reset_attr: false, ..Host::default() });
    let i = item(&v, "reset");
    assert_eq!(i["status"], "warn", "{i}");
    assert_eq!(i["devices"], serde_json::json!(["0000:00:01.0", "0000:00:02.0"]));
}
