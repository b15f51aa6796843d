//! The raw ACPI IVRS table in the snapshot, and what the prediction makes of it on an AMD host.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use iommu_groups::{predict, RuleSet};
use iommu_host::{read_host, Snapshot};
use iommu_pci::PciAddress;

use crate::util::{a, config, function};

/// An IVRS table with one IVHD (type 11h) for the IOMMU at 00:00.2 in segment 0: 00:00.2 to 00:18.7
/// (not the root complex 00:00.0, as on Zen boards), bus 01 as a range, and 00:14.3's requests aliased to
/// 00:14.0.
fn ivrs_table() -> Vec<u8> {
    let e4 = |k: u8, d: u16| vec![k, d as u8, (d >> 8) as u8, 0];
    let mut entries = e4(0x03, 0x0002);
    entries.extend(e4(0x04, 0x00c7));
    entries.extend(e4(0x03, 0x0100));
    entries.extend(e4(0x04, 0x01ff));
    entries.extend([0x42, 0xa3, 0x00, 0x00, 0x00, 0xa0, 0x00, 0x00]);
    let mut ivhd = vec![0x11, 0, 0, 0, 0x02, 0x00, 0x40, 0];
    ivhd.resize(40, 0);
    ivhd.extend(entries);
    let l = ivhd.len() as u16;
    ivhd[2..4].copy_from_slice(&l.to_le_bytes());
    let mut t = b"IVRS".to_vec();
    t.resize(48, 0);
    t[8] = 2;
    t.extend(ivhd);
    let l = t.len() as u32;
    t[4..8].copy_from_slice(&l.to_le_bytes());
    let sum = t.iter().fold(0u8, |s, &b| s.wrapping_add(b));
    t[9] = 0u8.wrapping_sub(sum);
    t
}

/// An AMD host as 6.12 shows it: the root complex and the IOMMU in no group, a root port with ACS and a
/// NAND controller below it, and two integrated functions the IVRS alias puts in one group.
fn amd_host(root: &Path, with_table: bool) {
    let mut iommu = config(0x1022, 0x1481).size(4096).bytes();
    iommu[0x0a] = 0x06;
    iommu[0x0b] = 0x08;
    function(root, "pci0000:00/0000:00:00.0", &config(0x1022, 0x1480).size(4096).bytes());
    function(root, "pci0000:00/0000:00:00.2", &iommu);
    let mut port = config(0x1022, 0x1483).size(4096).header(1).pcie(4).bytes();
    port[0x100..0x104].copy_from_slice(&(0x000d_u32 | 1 << 16).to_le_bytes());
    port[0x104..0x106].copy_from_slice(&0x001f_u16.to_le_bytes());
    port[0x106..0x108].copy_from_slice(&0x001d_u16.to_le_bytes());
    function(root, "pci0000:00/0000:00:01.1", &port).driver("pcieport").group(0);
    function(root, "pci0000:00/0000:00:01.1/0000:01:00.0", &config(0x1987, 0x5018).size(4096).pcie(0).bytes())
        .driver("nvme")
        .group(1);
    function(root, "pci0000:00/0000:00:14.0", &config(0x1022, 0x790b).size(256).bytes()).group(2);
    function(root, "pci0000:00/0000:00:14.3", &config(0x1022, 0x790e).size(256).bytes()).group(2);
    let tables = root.join("sys/firmware/acpi/tables");
    fs::create_dir_all(&tables).unwrap();
    if with_table {
        fs::write(tables.join("IVRS"), ivrs_table()).unwrap();
    }
    fs::create_dir_all(root.join("sys/class/iommu/ivhd0")).unwrap();
}

fn partition(groups: impl Iterator<Item = Vec<PciAddress>>) -> BTreeSet<Vec<PciAddress>> {
    groups.collect()
}

#[test]
fn the_snapshot_keeps_the_raw_table_as_hex() {
    let t = tempfile::tempdir().unwrap();
    amd_host(t.path(), true);
    let s = read_host(t.path()).unwrap();
    assert_eq!(s.kernel.acpi_ivrs.as_deref(), Some(&ivrs_table()[..]));
    assert!(s.acpi_tables.contains(&"IVRS".to_string()));
    let json = s.to_json();
    assert!(json.contains("\"acpi_ivrs\": \"49565253"), "{json}");
    assert_eq!(Snapshot::from_json_slice(json.as_bytes()).unwrap(), s);
    // Not there (not root, or no AMD IOMMU): no field at all, and older snapshots load.
    let t = tempfile::tempdir().unwrap();
    amd_host(t.path(), false);
    let s = read_host(t.path()).unwrap();
    assert_eq!(s.kernel.acpi_ivrs, None);
    assert!(!s.to_json().contains("acpi_ivrs"));
    assert!(s.unreadable.is_empty(), "{:?}", s.unreadable);
}

#[test]
fn bad_hex_in_the_table_field_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    amd_host(t.path(), true);
    let json = read_host(t.path()).unwrap().to_json().replacen("\"acpi_ivrs\": \"49", "\"acpi_ivrs\": \"4x", 1);
    assert!(Snapshot::from_json_slice(json.as_bytes()).is_err());
}

#[test]
fn with_the_table_the_prediction_is_the_kernels_without_it_it_is_not() {
    let t = tempfile::tempdir().unwrap();
    amd_host(t.path(), true);
    let s = read_host(t.path()).unwrap();
    let (topo, bad) = s.topology().unwrap();
    assert!(bad.is_empty());
    let kernel = partition(s.groups.iter().map(|g| g.devices.clone()));
    let p = s.platform();
    assert!(p.notes.is_empty(), "{:?}", p.notes);
    assert_eq!(p.ivrs.untranslated, vec![a("00:00.0"), a("00:00.2")]);
    let pred = predict(&topo, &p, RuleSet::Linux6);
    assert_eq!(partition(pred.groups.iter().map(|g| g.devices.clone())), kernel);
    assert!(pred.excluded.iter().any(|(x, why)| *x == a("00:00.0") && why.contains("IVRS")), "{:?}", pred.excluded);
    // The same host read without the table (an unprivileged snapshot): the root complex gets a group of
    // its own and the two functions at 00:14 are apart.
    let mut s = s;
    s.kernel.acpi_ivrs = None;
    let pred = predict(&topo, &s.platform(), RuleSet::Linux6);
    assert_ne!(partition(pred.groups.iter().map(|g| g.devices.clone())), kernel);
}

#[test]
fn a_table_that_is_not_ivrs_is_a_note_not_an_error() {
    let t = tempfile::tempdir().unwrap();
    amd_host(t.path(), true);
    let mut s = read_host(t.path()).unwrap();
    let mut dmar = b"DMAR".to_vec();
    dmar.resize(64, 0);
    s.kernel.acpi_ivrs = Some(dmar);
    let p = s.platform();
    assert!(p.amd_ivrs && p.ivrs.is_empty());
    assert!(p.notes.iter().any(|n| n.contains("not an IVRS table")), "{:?}", p.notes);
}
