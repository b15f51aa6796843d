//! AMD-Vi guests: the ACPI IVRS table QEMU builds, read back by `iommuctl snapshot` and by `od`, parsed
//! by `iommu_groups::ivrs`, and checked against the kernel's own reading of it (`amd_iommu_dump` prints
//! every device entry it parses) and against what QEMU's table is known to hold. `iommuctl predict`
//! must still give the kernel's groups with the table in the snapshot.
//!
//! Needs the lab (`scripts/lab-setup`) and `target/release/iommuctl` (or `IOMMUCTL_BIN`). Without them
//! the test prints `LAB SKIPPED: ...`, or fails under `CI=true` / `IOMMU_LAB_REQUIRED=1`.

use std::collections::BTreeSet;

use iommu_groups::ivrs::{self, DeviceEntry, Ivrs};
use iommu_host::Snapshot;
use iommu_lab::{for_each_parallel, iommuctl_bin, require_binaries, require_lab, topology, GuestRun, GuestSpec};
use iommu_pci::PciAddress;

/// The AMD-Vi topologies, on both kernels.
const TOPOLOGIES: [&str; 2] = ["amd-mixed", "k612-amd-mixed"];

fn script(bin: &str) -> String {
    format!(
        ". /lab/lib.sh\n\
         section ivrs-od od -An -v -tx1 /sys/firmware/acpi/tables/IVRS\n\
         section amdvi sh -c 'dmesg | grep AMD-Vi'\n\
         section snapshot {bin} snapshot -o -\n\
         section predict {bin} predict --json\n"
    )
}

/// The bytes of an `od -An -tx1` listing.
fn od_bytes(text: &str) -> Result<Vec<u8>, String> {
    text.split_whitespace().map(|h| u8::from_str_radix(h, 16).map_err(|e| format!("od printed {h:?}: {e}"))).collect()
}

/// The kernel's name for an entry, as `amd_iommu_dump` prints it, and the device ID it prints (none for
/// DEV_ALL); `None` for entries it does not print.
fn kernel_name(e: &DeviceEntry) -> Option<(&'static str, Option<u16>)> {
    Some(match *e {
        DeviceEntry::All { .. } => ("DEV_ALL", None),
        DeviceEntry::Select { devid, .. } => ("DEV_SELECT", Some(devid)),
        DeviceEntry::RangeStart { devid, .. } => ("DEV_SELECT_RANGE_START", Some(devid)),
        DeviceEntry::RangeEnd { devid } => ("DEV_RANGE_END", Some(devid)),
        DeviceEntry::Alias { devid, .. } => ("DEV_ALIAS", Some(devid)),
        DeviceEntry::AliasRangeStart { devid, .. } => ("DEV_ALIAS_RANGE", Some(devid)),
        DeviceEntry::ExtSelect { devid, .. } => ("DEV_EXT_SELECT", Some(devid)),
        DeviceEntry::ExtRangeStart { devid, .. } => ("DEV_EXT_SELECT_RANGE", Some(devid)),
        DeviceEntry::Special { devid, .. } => ("DEV_SPECIAL", Some(devid)),
        DeviceEntry::AcpiHid { devid, .. } => ("DEV_ACPI_HID", Some(devid)),
        DeviceEntry::Other { .. } => return None,
    })
}

/// The device entries the kernel printed, in order: (name, device ID).
fn kernel_entries(dmesg: &str) -> Vec<(String, Option<u16>)> {
    let mut out = Vec::new();
    for line in dmesg.lines() {
        // 6.1 and 6.12 print the prefix twice ("AMD-Vi: AMD-Vi:   DEV_SELECT ...").
        let Some((_, rest)) = line.rsplit_once("AMD-Vi:") else { continue };
        let rest = rest.trim_start();
        if !rest.starts_with("DEV_") {
            continue;
        }
        let name: String = rest.chars().take_while(|c| c.is_ascii_uppercase() || *c == '_').collect();
        let devid = rest.split("devid:").nth(1).and_then(|d| d.split_whitespace().next()).and_then(|d| {
            let a: PciAddress = d.parse().ok()?;
            Some(u16::from(a.bus) << 8 | u16::from(a.devfn()))
        });
        let devid = if name == "DEV_ALL" { None } else { devid };
        out.push((name, devid));
    }
    out
}

fn bdf(id: u16) -> String {
    format!("{:02x}:{:02x}.{}", id >> 8, id >> 3 & 0x1f, id & 7)
}

/// Checks one guest; returns the problems, and prints what the table holds.
fn check(name: &str, run: &GuestRun) -> Vec<String> {
    let mut problems = Vec::new();
    let od = match run.stdout("ivrs-od").map_err(|e| e.to_string()).and_then(od_bytes) {
        Ok(b) => b,
        Err(e) => return vec![format!("reading the table with od: {e}")],
    };
    let snap =
        match run.stdout("snapshot").map_err(|e| e.to_string()).and_then(|t| {
            Snapshot::from_json_slice(t.as_bytes()).map_err(|e| format!("snapshot -o - does not load: {e}"))
        }) {
            Ok(s) => s,
            Err(e) => return vec![e],
        };
    match &snap.kernel.acpi_ivrs {
        Some(b) if *b == od => {}
        Some(b) => {
            problems.push(format!("the snapshot's table ({} bytes) differs from od's ({} bytes)", b.len(), od.len()))
        }
        None => problems.push("the snapshot has no acpi_ivrs although root could read the table".into()),
    }
    let table: Ivrs = match ivrs::parse(&od) {
        Ok(t) => t,
        Err(e) => return vec![format!("the parser refuses QEMU's table: {e}")],
    };
    println!(
        "{name}: IVRS revision {}, {} bytes, checksum {}, IVinfo {:#010x}, {} block(s)",
        table.revision,
        od.len(),
        if table.checksum_ok { "ok" } else { "BAD" },
        table.iv_info,
        table.blocks.len()
    );
    for b in &table.blocks {
        println!(
            "  block type {:#04x} at {:#x}, {} bytes, device {}, segment {:?}, {} entries",
            b.kind,
            b.offset,
            b.length,
            bdf(b.devid),
            b.segment,
            b.entries.len()
        );
        for e in &b.entries {
            println!("    {e:?}");
        }
    }
    if !table.checksum_ok {
        problems.push("QEMU's table does not checksum".into());
    }
    if !table.problems.is_empty() {
        problems.push(format!("parse problems: {:?}", table.problems));
    }
    if !table.blocks.iter().any(|b| b.is_ivhd()) {
        problems.push("no IVHD block".into());
    }
    // The kernel's own reading: the IVHD type it uses and every entry of those blocks, in order.
    let dmesg = run.out("amdvi");
    let kernel_type = dmesg
        .lines()
        .find_map(|l| l.split("Using IVHD type ").nth(1))
        .and_then(|t| u8::from_str_radix(t.trim().trim_start_matches("0x"), 16).ok());
    if kernel_type != table.target_type() {
        problems.push(format!("the kernel uses IVHD type {kernel_type:?}, the parser says {:?}", table.target_type()));
    }
    let ours: Vec<(String, Option<u16>)> = table
        .used_ivhds()
        .flat_map(|b| b.entries.iter().filter_map(kernel_name))
        .map(|(n, d)| (n.to_string(), d))
        .collect();
    let theirs = kernel_entries(dmesg);
    if theirs.is_empty() {
        problems.push("the kernel printed no device entries (amd_iommu_dump)".into());
    } else if ours != theirs {
        problems.push(format!("device entries: parser {ours:?}, kernel {theirs:?}"));
    } else {
        println!("  the kernel printed the same {} device entries", theirs.len());
    }
    // What QEMU 7.2's table holds, as seen in these guests: one IVHD of type 10h for the IOMMU's own
    // function; a select entry per function on the root bus and per bridge, a select-range pair per bus
    // below a PCIe port with nothing further down, an alias range for the conventional bus below a
    // PCIe-to-PCI bridge (every ID of the bus aliased to bus:00.0, the ID such a bridge forwards with), an
    // I/O APIC special entry; no "all" entry. So every function is covered and only the IOMMU is not
    // translated, and the only aliases are those of the conventional bus's functions.
    let ivhds: Vec<_> = table.blocks.iter().filter(|b| b.is_ivhd()).collect();
    let iommu_fn = snap.devices.iter().find(|d| d.config.get(0x0a..0x0c) == Some(&[0x06, 0x08][..])).map(|d| d.address);
    let ivhd_fn = ivhds.first().map(|b| PciAddress {
        domain: 0,
        bus: (b.devid >> 8) as u8,
        device: (b.devid >> 3 & 0x1f) as u8,
        function: (b.devid & 7) as u8,
    });
    if ivhds.len() != 1 || ivhds[0].kind != 0x10 || ivhd_fn != iommu_fn {
        problems.push(format!("expected one IVHD of type 10h for the IOMMU {iommu_fn:?}, found {ivhds:?}"));
    }
    let entries = ivhds.iter().flat_map(|b| b.entries.iter());
    if !entries.clone().any(|e| matches!(e, DeviceEntry::Special { variety: 1, .. }))
        || entries.clone().any(|e| matches!(e, DeviceEntry::All { .. }))
    {
        problems.push("expected an I/O APIC special entry and no all entry".into());
    }
    let functions: Vec<PciAddress> = snap.devices.iter().map(|d| d.address).collect();
    let behind_pcie_to_pci = |d: &iommu_host::HostDevice| {
        let parent = d.parent.and_then(|p| snap.device(p));
        parent.is_some_and(|p| {
            iommu_pci::ConfigInfo::parse(&p.config)
                .is_ok_and(|c| c.pcie.is_some_and(|x| x.port_type == iommu_pci::PortType::PcieToPciBridge))
        })
    };
    let expected_aliases: Vec<(PciAddress, PciAddress)> = snap
        .devices
        .iter()
        .filter(|d| behind_pcie_to_pci(d))
        .map(|d| (d.address, PciAddress { device: 0, function: 0, ..d.address }))
        .filter(|(d, a)| d != a)
        .collect();
    match table.facts(&functions) {
        Ok(facts) => {
            if facts.untranslated != iommu_fn.into_iter().collect::<Vec<_>>() {
                problems.push(format!("untranslated {:?}, expected only the IOMMU {iommu_fn:?}", facts.untranslated));
            }
            let aliases: Vec<(PciAddress, PciAddress)> = facts.aliases.iter().map(|a| (a.device, a.alias)).collect();
            for (d, a) in &aliases {
                println!("  IVRS alias: {d} -> {a}");
            }
            if aliases != expected_aliases || aliases.is_empty() {
                problems.push(format!("IVRS aliases {aliases:?}, expected {expected_aliases:?}"));
            }
        }
        Err(e) => problems.push(format!("the parser says Linux refuses the table: {e}")),
    }
    // The prediction with the table in the snapshot is still the kernel's partition.
    let kernel: BTreeSet<Vec<String>> = run.kernel_groups.values().cloned().collect();
    match run
        .stdout("predict")
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).map_err(|e| format!("predict --json: {e}")))
    {
        Ok(v) => {
            let predicted: BTreeSet<Vec<String>> = v["groups"]
                .as_array()
                .map(|gs| {
                    gs.iter()
                        .map(|g| {
                            let mut d: Vec<String> = g["devices"]
                                .as_array()
                                .map(|ds| ds.iter().filter_map(|d| d["address"].as_str().map(str::to_string)).collect())
                                .unwrap_or_default();
                            d.sort();
                            d
                        })
                        .collect()
                })
                .unwrap_or_default();
            if predicted != kernel {
                problems.push(format!("predicted {predicted:?}, kernel {kernel:?}"));
            }
        }
        Err(e) => problems.push(e),
    }
    problems
}

#[test]
fn qemu_ivrs_is_read_parsed_and_agrees_with_the_kernel() {
    if !require_lab() {
        return;
    }
    let bin = iommuctl_bin();
    if !require_binaries(std::slice::from_ref(&bin)) {
        return;
    }
    let topologies: Vec<_> =
        TOPOLOGIES.iter().map(|n| topology(n).unwrap_or_else(|| panic!("no topology {n}"))).collect();
    let s = script(&bin.display().to_string());
    let runs = for_each_parallel(&topologies, |t| {
        GuestSpec::new(t)
            .run_name(&format!("ivrs-{}", t.name))
            .binary(&bin)
            .kernel_arg("amd_iommu_dump")
            .script(&s)
            .boot()
    });
    let mut failed = Vec::new();
    for (t, run) in topologies.iter().zip(&runs) {
        let problems = match run {
            Ok(run) => check(&t.name, run),
            Err(e) => vec![format!("boot failed: {e}")],
        };
        println!("{} {}", if problems.is_empty() { "PASS" } else { "FAIL" }, t.name);
        for p in &problems {
            println!("    {p}");
        }
        if !problems.is_empty() {
            failed.push(t.name.clone());
        }
    }
    assert!(failed.is_empty(), "IVRS checks failed on {}", failed.join(", "));
}
