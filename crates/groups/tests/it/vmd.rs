//! Intel VMD: every function of a VMD domain DMAs as the VMD endpoint (x86 `pci_real_dma_dev`, used by
//! `pci_for_each_dma_alias` in drivers/pci/search.c), so it joins the endpoint's group whatever ACS its
//! ports have. The topology is a Tiger Lake laptop's with VMD on, as real machines show it.

use iommu_groups::vmd::{pair_domains, VmdDomain};
use iommu_groups::{explain, predict, slots, Device, Join, Pcie, Platform, RuleSet, Topology};
use iommu_pci::{acs, AcsCap, AcsState, HeaderKind, PciAddress, PortType};

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

const ACS: AcsState = AcsState::Present(AcsCap {
    offset: 0x220,
    capability: acs::SV | acs::TB | acs::RR | acs::CR | acs::UF,
    control: acs::SV | acs::RR | acs::CR | acs::UF,
    dword8_low: 0,
});

fn dev(a: &str, parent: Option<&str>, device: u16, pt: PortType, acs: AcsState) -> Device {
    let bridge = pt == PortType::RootPort;
    Device {
        address: addr(a),
        parent: parent.map(addr),
        vendor: if a.starts_with("10000:e1") { 0x15b7 } else { 0x8086 },
        device,
        subsystem: None,
        class: if bridge { 0x060400 } else { 0x010802 },
        header: if bridge { HeaderKind::Bridge } else { HeaderKind::Normal },
        multifunction: false,
        is_virtfn: false,
        pcie: Pcie::Yes(pt),
        acs,
    }
}

/// Host bridge, a root port with an NVMe drive in domain 0, the VMD controller at 00:0e.0, and in domain
/// 10000 two root ports with ACS, each with an NVMe drive.
fn laptop() -> Topology {
    Topology::new(vec![
        dev("00:00.0", None, 0x9a14, PortType::RcIntegratedEndpoint, AcsState::Absent),
        dev("00:1d.0", None, 0xa0b3, PortType::RootPort, ACS),
        dev("01:00.0", Some("00:1d.0"), 0x5011, PortType::Endpoint, AcsState::Absent),
        dev("00:0e.0", None, 0x9a0b, PortType::RcIntegratedEndpoint, AcsState::Absent),
        dev("10000:e0:06.0", None, 0x9a09, PortType::RootPort, ACS),
        dev("10000:e1:00.0", Some("10000:e0:06.0"), 0x5011, PortType::Endpoint, AcsState::Absent),
        dev("10000:e0:1d.0", None, 0xa0b3, PortType::RootPort, ACS),
        dev("10000:e2:00.0", Some("10000:e0:1d.0"), 0x5011, PortType::Endpoint, AcsState::Absent),
    ])
    .unwrap()
}

fn vmd_on() -> Platform {
    Platform { vmd_domains: vec![VmdDomain { domain: 0x10000, endpoint: addr("00:0e.0") }], ..Platform::default() }
}

fn partition(t: &Topology, p: &Platform) -> Vec<Vec<String>> {
    let mut v: Vec<Vec<String>> = predict(t, p, RuleSet::Linux6)
        .groups
        .iter()
        .map(|g| g.devices.iter().map(|d| d.to_string()).collect())
        .collect();
    v.sort();
    v
}

#[test]
fn every_function_of_a_vmd_domain_joins_the_vmd_endpoints_group() {
    let t = laptop();
    let p = predict(&t, &vmd_on(), RuleSet::Linux6);
    let g = p.group_of(addr("00:0e.0")).unwrap();
    assert_eq!(
        g.devices,
        ["00:0e.0", "10000:e0:06.0", "10000:e0:1d.0", "10000:e1:00.0", "10000:e2:00.0"].map(addr).to_vec()
    );
    // The ports' ACS does not matter: the IOMMU never sees the domain's own requester IDs.
    let ev = p.evidence_for(addr("10000:e1:00.0")).unwrap();
    assert_eq!(ev.join, Join::Vmd { endpoint: addr("00:0e.0") });
    assert_eq!(ev.dma_device, Some(addr("00:0e.0")));
    // No group is allocated for the domain: group numbers are those of domain 0 alone.
    assert_eq!(p.groups.len(), 4);
    assert!(p.uncertain.is_empty());
}

#[test]
fn without_the_vmd_pairing_the_domain_would_look_isolated() {
    let t = laptop();
    let without = partition(&t, &Platform::default());
    assert!(without.contains(&vec!["10000:e1:00.0".to_string()]), "{without:?}");
    assert_ne!(without, partition(&t, &vmd_on()));
}

#[test]
fn explain_names_the_vmd_rule_and_the_way_out() {
    let t = laptop();
    let p = predict(&t, &vmd_on(), RuleSet::Linux6);
    let e = explain(&t, &p, addr("10000:e1:00.0")).unwrap();
    let text = e.sentences.join("\n");
    assert!(text.contains("joined because it is behind Intel VMD 0000:00:0e.0, which does its DMA"), "{text}");
    assert!(text.contains("It is behind Intel VMD 0000:00:0e.0, which does its DMA"), "{text}");
    assert!(e.to_isolate.iter().any(|f| f.contains("turn Intel VMD off")), "{:?}", e.to_isolate);
    // The endpoint's own explanation lists the functions that joined it.
    let e = explain(&t, &p, addr("00:0e.0")).unwrap();
    assert!(e.sentences.iter().any(|s| s.starts_with("10000:e2:00.0 joined because it is behind Intel VMD")));
}

#[test]
fn a_vmd_domain_whose_endpoint_is_not_listed_is_one_group_and_uncertain() {
    let t =
        Topology::new(laptop().devices().iter().filter(|d| d.address != addr("00:0e.0")).cloned().collect()).unwrap();
    let p = predict(&t, &vmd_on(), RuleSet::Linux6);
    let g = p.group_of(addr("10000:e2:00.0")).unwrap();
    assert_eq!(g.devices.len(), 4, "{g:?}");
    assert!(p.uncertain.contains(&addr("10000:e0:06.0")) && p.uncertain.contains(&addr("10000:e2:00.0")));
    assert_eq!(p.evidence_for(addr("10000:e2:00.0")).unwrap().join, Join::Vmd { endpoint: addr("00:0e.0") });
}

#[test]
fn a_slot_behind_a_vmd_root_port_never_isolates() {
    let t = laptop();
    let s = slots(&t, &vmd_on());
    let vmd_port = s.iter().find(|s| s.port == addr("10000:e0:06.0")).unwrap();
    assert!(!vmd_port.isolates);
    assert!(vmd_port.shares_with.contains(&addr("00:0e.0")), "{vmd_port:?}");
    let plain = s.iter().find(|s| s.port == addr("00:1d.0")).unwrap();
    assert!(plain.isolates, "{plain:?}");
}

#[test]
fn the_listing_pairing_feeds_the_platform() {
    let t = laptop();
    let pairing = pair_domains(t.devices());
    assert_eq!(pairing.uncertain, None);
    let p = Platform { vmd_domains: pairing.domains, ..Platform::default() };
    assert_eq!(partition(&t, &p), partition(&t, &vmd_on()));
}
