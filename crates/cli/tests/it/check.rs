//! `iommuctl check` on hand-built root trees, one fact changed at a time. Each tree models what the named
//! kernel interfaces show (/proc/interrupts `IR-` chips, /sys/module, /lib/modules/<release>/modules.dep,
//! group reserved_regions); the lab test (crates/lab/tests/iommuctl.rs) runs `check` on real kernels with
//! and without an IOMMU.

use std::path::Path;

use serde_json::Value;

use crate::util::{assert_exit, config, function, group_attr, iommuctl, json, lab, out, write};

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

fn build(root: &Path, h: &Host) {
    for (i, (addr, cfg, reset)) in [
        ("0000:00:01.0", config(0x1234, 0x1111).class(0x030000).bytes(), ""),
        ("0000:00:02.0", config(0x8086, 0x10d3).class(0x020000).bytes(), "flr bus"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut f = function(root, &format!("pci0000:00/{addr}")).config(&cfg);
        if i == 0 {
            f = f.attr("boot_vga", "1\n");
        } else if h.reset_attr {
            f = f.attr("reset_method", format!("{reset}\n"));
        }
        if h.groups {
            let g = i as u32;
            f.group(g);
            group_attr(root, g, "type", "DMA\n");
            let mut rr = "0x00000000fee00000 0x00000000feefffff msi\n".to_string();
            if i == 1 {
                rr.push_str("0x000000007b800000 0x000000007fffffff direct\n");
            }
            group_attr(root, g, "reserved_regions", &rr);
        }
    }
    if h.groups {
        std::fs::create_dir_all(root.join("sys/class/iommu/dmar0")).unwrap();
        write(root, "sys/firmware/acpi/tables/DMAR", "");
    }
    write(root, "proc/sys/kernel/osrelease", "6.1.0-test\n");
    write(root, "proc/cmdline", format!("{}\n", h.cmdline));
    write(root, "proc/cpuinfo", format!("processor\t: 0\nvendor_id\t: {}\n", h.cpu));
    let chip = if h.interrupts_ir { "IR-PCI-MSI-0000:00:02.0" } else { "PCI-MSI-0000:00:02.0" };
    write(root, "proc/interrupts", format!("           CPU0\n 24:         10  {chip}    0-edge      eth0\n"));
    std::fs::create_dir_all(root.join("sys/module/kernel")).unwrap();
    for m in h.loaded {
        std::fs::create_dir_all(root.join("sys/module").join(m)).unwrap();
    }
    if let Some(v) = h.unsafe_interrupts {
        write(root, "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", format!("{v}\n"));
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
    let v = json(&o);
    let text = iommuctl(&["--root", root, "check"]);
    assert_eq!(text.status.code(), o.status.code(), "text and JSON runs disagree on the exit code");
    (o.status.code().unwrap(), v, out(&text))
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
    let o = iommuctl(&["--from", lab("lab-everything.json").to_str().unwrap(), "check", "--json"]);
    let v = json(&o);
    assert_exit(&o, 0);
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
