//! AMD's ACPI IVRS table in grouping, as Linux 6.12 uses it: the alias table's entry for a function becomes
//! a DMA alias when the function is probed, if it is on the same bus (amd/iommu.c, `setup_aliases`); a
//! function no IVHD entry covers is not probed and gets no group (`check_device`).

use iommu_groups::ivrs::{self, IvrsAlias, IvrsFacts};
use iommu_groups::{explain, predict, Device, Join, Pcie, Platform, RuleSet, Topology};
use iommu_pci::{acs, AcsCap, AcsState, HeaderKind, PciAddress, PortType};

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

const ACS: AcsState = AcsState::Present(AcsCap {
    offset: 0x2a0,
    capability: acs::SV | acs::TB | acs::RR | acs::CR | acs::UF,
    control: acs::SV | acs::RR | acs::CR | acs::UF,
    dword8_low: 0,
});

fn dev(a: &str, parent: Option<&str>, pt: PortType, acs: AcsState) -> Device {
    let bridge = pt == PortType::RootPort;
    Device {
        address: addr(a),
        parent: parent.map(addr),
        vendor: 0x1022,
        device: 0x1483,
        subsystem: None,
        class: if bridge { 0x060400 } else { 0x130000 },
        header: if bridge { HeaderKind::Bridge } else { HeaderKind::Normal },
        multifunction: false,
        is_virtfn: false,
        pcie: Pcie::Yes(pt),
        acs,
    }
}

fn alias(device: &str, to: &str) -> IvrsAlias {
    IvrsAlias { device: addr(device), alias: addr(to) }
}

fn platform(aliases: Vec<IvrsAlias>, untranslated: &[&str]) -> Platform {
    Platform {
        amd_ivrs: true,
        ivrs: IvrsFacts { aliases, untranslated: untranslated.iter().map(|s| addr(s)).collect() },
        ..Platform::default()
    }
}

fn groups(t: &Topology, p: &Platform) -> Vec<Vec<String>> {
    let mut v: Vec<Vec<String>> = predict(t, p, RuleSet::Linux6)
        .groups
        .iter()
        .map(|g| g.devices.iter().map(|d| d.to_string()[5..].to_string()).collect())
        .collect();
    v.sort();
    v
}

fn parts(s: &[&[&str]]) -> Vec<Vec<String>> {
    let mut v: Vec<Vec<String>> = s.iter().map(|g| g.iter().map(|x| x.to_string()).collect()).collect();
    v.sort();
    v
}

/// Two root ports with ACS on bus 0, an endpoint below each, and two integrated endpoints.
fn board() -> Topology {
    Topology::new(vec![
        dev("00:01.1", None, PortType::RootPort, ACS),
        dev("01:00.0", Some("00:01.1"), PortType::Endpoint, AcsState::Absent),
        dev("00:01.2", None, PortType::RootPort, ACS),
        dev("02:00.0", Some("00:01.2"), PortType::Endpoint, AcsState::Absent),
        dev("00:14.0", None, PortType::RcIntegratedEndpoint, AcsState::Absent),
        dev("00:14.3", None, PortType::RcIntegratedEndpoint, AcsState::Absent),
    ])
    .unwrap()
}

#[test]
fn an_ivrs_alias_on_the_same_bus_joins_functions_acs_would_keep_apart() {
    let t = board();
    let alone = parts(&[&["00:01.1"], &["01:00.0"], &["00:01.2"], &["02:00.0"], &["00:14.0"], &["00:14.3"]]);
    assert_eq!(groups(&t, &platform(vec![], &[])), alone);
    // The firmware says 00:01.2's requests carry 00:01.1's ID: the ports and what is behind them join.
    let p = platform(vec![alias("00:01.2", "00:01.1")], &[]);
    assert_eq!(
        groups(&t, &p),
        parts(&[&["00:01.1", "00:01.2"], &["01:00.0"], &["02:00.0"], &["00:14.0"], &["00:14.3"]])
    );
    let pred = predict(&t, &p, RuleSet::Linux6);
    let ev = pred.evidence_for(addr("00:01.2")).unwrap();
    assert!(matches!(ev.join, Join::DmaAlias { with, ivrs: true, .. } if with == addr("00:01.1")), "{:?}", ev.join);
    let text = explain(&t, &pred, addr("00:01.2")).unwrap().sentences.join("\n");
    assert!(text.contains("ACPI IVRS alias"), "{text}");
    assert!(text.contains("gives it the alias 0000:00:01.1"), "{text}");
}

#[test]
fn an_ivrs_alias_on_another_bus_changes_no_group() {
    // 01:00.0's requests are said to carry 00:14.0's ID: only DTEs are copied, the DMA alias mask is untouched.
    let t = board();
    let p = platform(vec![alias("01:00.0", "00:14.0")], &[]);
    assert_eq!(groups(&t, &p), groups(&t, &platform(vec![], &[])));
    let pred = predict(&t, &p, RuleSet::Linux6);
    let text = explain(&t, &pred, addr("01:00.0")).unwrap().sentences.join("\n");
    assert!(text.contains("on another bus"), "{text}");
}

#[test]
fn an_ivrs_alias_counts_only_from_the_moment_its_function_is_probed() {
    // Z (00:14.0) is probed first, then X (00:14.3, alias Y), then Y (00:15.0, alias Z). When X is placed,
    // Y's alias to Z is not set yet, so X starts a group; Y then finds Z first. X and its own alias end
    // up apart: that is what probing one device at a time makes of these tables.
    let mut devs: Vec<Device> = board().devices().to_vec();
    devs.push(dev("00:15.0", None, PortType::RcIntegratedEndpoint, AcsState::Absent));
    let t = Topology::new(devs).unwrap();
    let p = platform(vec![alias("00:14.3", "00:15.0"), alias("00:15.0", "00:14.0")], &[]);
    let g = groups(&t, &p);
    assert!(g.contains(&vec!["00:14.0".to_string(), "00:15.0".to_string()]), "{g:?}");
    assert!(g.contains(&vec!["00:14.3".to_string()]), "{g:?}");
}

#[test]
fn functions_no_ivhd_entry_covers_get_no_group() {
    let mut devs: Vec<Device> = board().devices().to_vec();
    devs.push(Device {
        vendor: 0x1022,
        device: 0x14d8,
        class: 0x060000,
        ..dev("00:00.0", None, PortType::RcIntegratedEndpoint, AcsState::Absent)
    });
    let t = Topology::new(devs).unwrap();
    let p = predict(&t, &platform(vec![], &["00:00.0"]), RuleSet::Linux6);
    assert!(p.group_of(addr("00:00.0")).is_none());
    assert_eq!(p.excluded, vec![(addr("00:00.0"), "no ACPI IVRS device entry puts it behind an AMD IOMMU")]);
    assert_eq!(p.groups.len(), 6);
}

/// A table with one IVHD of type 10h for the IOMMU at 00:00.2: the devices 00:01.0 to 02:1f.7, and
/// 00:14.3's requests aliased to 00:14.0.
fn table() -> Vec<u8> {
    let e4 = |k: u8, d: u16| vec![k, d as u8, (d >> 8) as u8, 0];
    let mut entries = e4(0x03, 0x0008);
    entries.extend(e4(0x04, 0x02ff));
    entries.extend([0x42, 0xa3, 0x00, 0x00, 0x00, 0xa0, 0x00, 0x00]);
    let mut ivhd = vec![0x10, 0, 0, 0, 0x02, 0x00, 0x40, 0];
    ivhd.resize(24, 0);
    ivhd.extend(entries);
    let l = ivhd.len() as u16;
    ivhd[2..4].copy_from_slice(&l.to_le_bytes());
    let mut t = b"IVRS".to_vec();
    t.resize(48, 0);
    t.extend(ivhd);
    let l = t.len() as u32;
    t[4..8].copy_from_slice(&l.to_le_bytes());
    let sum = t.iter().fold(0u8, |s, &b| s.wrapping_add(b));
    t[9] = 0u8.wrapping_sub(sum);
    t
}

#[test]
fn a_parsed_table_applied_to_the_platform_predicts_end_to_end() {
    let mut devs: Vec<Device> = board().devices().to_vec();
    devs.push(dev("00:00.0", None, PortType::RcIntegratedEndpoint, AcsState::Absent));
    let t = Topology::new(devs).unwrap();
    let table = ivrs::parse(&table()).unwrap();
    let addrs: Vec<PciAddress> = t.devices().iter().map(|d| d.address).collect();
    let mut p = Platform::default();
    p.apply_ivrs(&table, &addrs);
    assert!(p.amd_ivrs && p.notes.is_empty(), "{:?}", p.notes);
    assert_eq!(p.ivrs.untranslated, vec![addr("00:00.0")]);
    assert_eq!(
        groups(&t, &p),
        parts(&[&["00:01.1"], &["01:00.0"], &["00:01.2"], &["02:00.0"], &["00:14.0", "00:14.3"]])
    );
    // A table Linux refuses changes nothing but says so.
    let mut bad = self::table();
    bad[9] ^= 1;
    let mut p = Platform::default();
    p.apply_ivrs(&ivrs::parse(&bad).unwrap(), &addrs);
    assert!(p.ivrs.is_empty() && p.notes[0].contains("checksum"), "{:?}", p.notes);
}
