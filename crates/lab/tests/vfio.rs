//! Issue 4 on the real kernel: the example drivers (iommu-drivers, on iommu-vfio) and `iommuctl probe` inside a Debian 6.1
//! guest with emulated VT-d.
//!
//! One boot of a machine with edu behind an ACS root port (01:00.0), an NVMe behind another (02:00.0,
//! backed by `d1.img` in the run directory) and a multifunction slot on pcie.0 (nvme 00:10.0 on the nvme
//! driver, edu 00:10.1) whose group cannot be viable. Claims:
//! - every `edu` step is ok, including DMAs that must be blocked, and the kernel logged a DMAR fault for
//!   01:00.0 at exactly the IOVAs those DMAs used; no IOVA at or above 2^28 was given to edu;
//! - the `nvme` round trip verified ≥ 1 MiB, and the backing file, read on the host after the boot, holds
//!   the written pattern at the offset the driver reports;
//! - `iommuctl probe` reports BAR0 and config space and the IOVA ranges, and refuses the non-viable group
//!   (exit 1) naming 0000:00:10.0 and its nvme driver;
//! - `dma-bench` ran (its numbers go to BENCHMARKS.md; no threshold is asserted on a shared machine).
//!
//! Needs `iommuctl` and the `edu`, `nvme`, `dma-bench` examples (`cargo build --release --workspace
//! --examples`, which `scripts/test` does). Missing binaries skip, or fail under CI / IOMMU_LAB_REQUIRED=1.

use std::path::PathBuf;

use serde_json::Value;

use iommu_drivers::nvme::{pattern, TEST_BYTES, TEST_OFFSET};
use iommu_lab::{
    example_bin, iommuctl_bin, require_binaries, require_lab, topology::RUNDIR, GuestSpec, Iommu, Topology,
};

const EDU: &str = "0000:01:00.0";
const NVME: &str = "0000:02:00.0";
const MF_EDU: &str = "0000:00:10.1";

fn binaries() -> Option<[PathBuf; 4]> {
    let all = [iommuctl_bin(), example_bin("edu"), example_bin("nvme"), example_bin("dma-bench")];
    require_binaries(&all).then_some(all)
}

fn machine() -> Topology {
    let mut t = Topology::new(
        "vfio-drivers",
        "6.1",
        Iommu::IntelVtd,
        "edu behind an ACS root port, nvme behind another, nvme+edu multifunction slot on pcie.0",
    )
    .device("pcie-root-port,id=rp1,chassis=1,slot=1,bus=pcie.0")
    .device("edu,bus=rp1")
    .device("pcie-root-port,id=rp2,chassis=2,slot=2,bus=pcie.0")
    .nvme("d1", "rp2");
    t.devices.push("-drive".into());
    t.devices.push(format!("if=none,id=d2,file={RUNDIR}/d2.img,format=raw"));
    t.images.push("d2.img".into());
    t.device("nvme,serial=lab-d2,drive=d2,bus=pcie.0,addr=0x10.0,multifunction=on").device("edu,bus=pcie.0,addr=0x10.1")
}

fn steps(text: &str) -> Vec<Value> {
    iommu_lab::json_steps(text)
}

fn step<'a>(steps: &'a [Value], needle: &str) -> &'a Value {
    iommu_lab::json_step(steps, needle)
}

/// Every number found under a key containing "iova" (recursively, arrays included).
fn iovas(v: &Value, under_iova_key: bool, acc: &mut Vec<u64>) {
    match v {
        Value::Number(n) if under_iova_key => acc.extend(n.as_u64()),
        Value::Array(a) => a.iter().for_each(|x| iovas(x, under_iova_key, acc)),
        Value::Object(m) => m.iter().for_each(|(k, x)| iovas(x, under_iova_key || k.contains("iova"), acc)),
        _ => {}
    }
}

#[test]
fn edu_and_nvme_drivers_work_through_vfio_and_the_iommu_blocks_what_was_not_mapped() {
    if !require_lab() {
        return;
    }
    let Some([b, edu, nvme, bench]) = binaries() else { return };
    let script = format!(
        ". /lab/lib.sh\n\
         B={b}\nEDU={edu}\nNVME={nvme}\nBENCH={bench}\n\
         echo 8 > /proc/sys/vm/nr_hugepages\n\
         section hugepages cat /proc/sys/vm/nr_hugepages\n\
         section bind-edu $B bind {EDU}\n\
         section bind-nvme $B bind {NVME}\n\
         section reserved sh -c 'cat /sys/bus/pci/devices/{EDU}/iommu_group/reserved_regions'\n\
         section probe-edu $B probe {EDU} --json\n\
         section probe-edu-text $B probe {EDU}\n\
         section edu $EDU {EDU}\n\
         section nvme $NVME {NVME}\n\
         section bench $BENCH {EDU}\n\
         echo vfio-pci > /sys/bus/pci/devices/{MF_EDU}/driver_override\n\
         echo {MF_EDU} > /sys/bus/pci/drivers_probe\n\
         section mf-drivers sh -c 'for d in /sys/bus/pci/devices/0000:00:10.*; do echo $d $(readlink $d/driver); done; ls /dev/vfio'\n\
         section probe-nonviable $B probe {MF_EDU}\n\
         section probe-bad $B probe 00:1g.0\n\
         section dmesg dmesg\n",
        b = b.display(),
        edu = edu.display(),
        nvme = nvme.display(),
        bench = bench.display(),
    );
    let spec = GuestSpec::new(&machine())
        .run_name("vfio-drivers")
        .binary(&b)
        .binary(&edu)
        .binary(&nvme)
        .binary(&bench)
        .script(&script)
        .timeout(std::time::Duration::from_secs(iommu_lab::default_timeout().as_secs().max(300)));
    let run = spec.boot().expect("boot");
    for name in ["probe-edu-text", "edu", "nvme", "bench", "probe-nonviable"] {
        eprintln!("--- {name} (rc {}) ---\n{}{}", run.rc(name), run.out(name), run.err(name));
    }

    // The machine is what the test thinks it is.
    let ids = run.out("pci-ids");
    assert!(ids.contains(&format!("{EDU} 0x1234:0x11e8")), "{ids}");
    assert!(ids.contains(&format!("{NVME} 0x1b36:0x0010")), "{ids}");
    assert_eq!(run.rc("bind-edu"), 0, "{}", run.err("bind-edu"));
    assert_eq!(run.rc("bind-nvme"), 0, "{}", run.err("bind-nvme"));

    // probe: regions with index and size, interrupts, reset, the IOVA ranges.
    assert_eq!(run.rc("probe-edu"), 0, "{}", run.err("probe-edu"));
    let p: Value = serde_json::from_str(run.out("probe-edu")).expect("probe --json is JSON");
    let regions = p["regions"].as_array().expect("regions array");
    assert!(regions.iter().any(|r| r["index"] == 0 && r["size"] == 1 << 20 && r["mmap"] == true), "{p:#}");
    assert!(regions.iter().any(|r| r["index"] == 7 && r["size"].as_u64() >= Some(256)), "{p:#}");
    assert!(p["irqs"].as_array().is_some_and(|a| a.iter().any(|i| i["name"] == "intx" && i["count"] == 1)), "{p:#}");
    assert!(p["reset_supported"].is_boolean(), "{p:#}");
    let ranges = p["iommu"]["iova_ranges"].as_array().expect("iova ranges");
    assert!(!ranges.is_empty(), "{p:#}");
    assert!(
        ranges.iter().all(|r| r["end"].as_u64() < Some(0xfee0_0000) || r["start"].as_u64() > Some(0xfeef_ffff)),
        "the kernel's IOVA ranges should exclude the MSI window: {p:#}"
    );

    // edu: every step ok, including the blocked DMAs.
    let edu_steps = steps(run.out("edu"));
    assert_eq!(run.rc("edu"), 0, "edu failed: {}\n{}", run.out("edu"), run.err("edu"));
    assert!(edu_steps.iter().all(|s| s["ok"] == true), "{edu_steps:#?}");
    for needle in ["liveness", "factorial", "roundtrip", "sg-coalesced", "unmapped", "after-unmap"] {
        assert_eq!(step(&edu_steps, needle)["ok"], true, "{needle}");
    }
    let sg = step(&edu_steps, "sg-coalesced");
    assert_eq!(sg["len"], 8192, "{sg}");
    // No IOVA at or above the 28-bit mask, in any step.
    let mut all = Vec::new();
    for s in &edu_steps {
        iovas(s, false, &mut all);
    }
    assert!(all.len() >= 8, "too few IOVAs reported: {all:?}");
    assert!(all.iter().all(|&i| i < 1 << 28), "an IOVA above edu's 28-bit mask: {all:x?}");
    // The kernel logged a DMAR fault naming 01:00.0 at each blocked IOVA.
    let dmesg = run.out("dmesg");
    let faults: Vec<&str> = dmesg.lines().filter(|l| l.contains("DMAR") && l.contains("[01:00.0]")).collect();
    for needle in ["unmapped", "after-unmap"] {
        let iova = step(&edu_steps, needle)["iova"].as_u64().expect("iova");
        let want = format!("fault addr {iova:#x}");
        assert!(
            faults.iter().any(|l| l.contains(&want)),
            "no DMAR fault for {needle} at {iova:#x}; faults: {faults:#?}"
        );
    }

    // nvme: identify, ≥ 1 MiB verified, and the bytes are on the backing file.
    let nvme_steps = steps(run.out("nvme"));
    assert_eq!(run.rc("nvme"), 0, "nvme failed: {}\n{}", run.out("nvme"), run.err("nvme"));
    assert!(nvme_steps.iter().all(|s| s["ok"] == true), "{nvme_steps:#?}");
    assert_eq!(step(&nvme_steps, "identify-controller")["ok"], true);
    assert_eq!(step(&nvme_steps, "identify-namespace")["ok"], true);
    let rt = step(&nvme_steps, "write-read-verify");
    assert!(rt["bytes"].as_u64() >= Some(1 << 20), "{rt}");
    assert!(rt["prp_list_entries"].as_u64() > Some(0), "{rt}");
    assert_eq!(rt["offset"].as_u64(), Some(TEST_OFFSET), "{rt}");
    let img = std::fs::read(run.run_dir.join("d1.img")).expect("read d1.img");
    let on_disk = &img[TEST_OFFSET as usize..TEST_OFFSET as usize + TEST_BYTES];
    assert_eq!(&on_disk[..16], b"iommu-vfio nvme ", "the sector header is not in the backing file");
    assert_eq!(u64::from_le_bytes(on_disk[16..24].try_into().unwrap()), TEST_OFFSET / 512);
    let want = pattern(TEST_OFFSET, TEST_BYTES);
    let bad = on_disk.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(bad, None, "backing file differs from the written pattern at byte {bad:?} of the test range");
    assert!(img[..TEST_OFFSET as usize].iter().all(|&b| b == 0), "bytes before the test range were written");

    // The benchmark ran for all three sizes.
    assert_eq!(run.rc("bench"), 0, "{}", run.err("bench"));
    assert_eq!(steps(run.out("bench")).len(), 3, "{}", run.out("bench"));

    // A non-viable group is refused, naming the blocking device and its driver.
    assert!(
        run.out("mf-drivers").contains("0000:00:10.1 ../../../bus/pci/drivers/vfio-pci"),
        "{}",
        run.out("mf-drivers")
    );
    assert_eq!(run.rc("probe-nonviable"), 1, "{}", run.err("probe-nonviable"));
    let e = run.err("probe-nonviable");
    assert!(e.contains("not viable") && e.contains("0000:00:10.0 is bound to nvme"), "{e}");
    assert_eq!(run.rc("probe-bad"), 2, "{}", run.err("probe-bad"));
}
