//! Claims about the grouping rules, on small topologies shaped like the ones seen on real kernels.

use iommu_groups::{explain, predict, Device, Join, Pcie, Platform, RuleSet, Topology, TopologyError};
use iommu_pci::{acs, AcsCap, AcsState, HeaderKind, PciAddress, PortType};

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

struct B(Vec<Device>);

const FULL_ACS: AcsState = AcsState::Present(AcsCap {
    offset: 0x100,
    capability: acs::SV | acs::TB | acs::RR | acs::CR | acs::UF,
    control: acs::SV | acs::RR | acs::CR | acs::UF,
    dword8_low: 0,
});

impl B {
    fn new() -> Self {
        // Every QEMU q35 machine has a host bridge at 00:00.0.
        let mut b = B(Vec::new());
        b.add("00:00.0", None, 0x8086, 0x29c0, HeaderKind::Normal, Pcie::No, AcsState::Absent, false);
        b
    }
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        a: &str,
        parent: Option<&str>,
        vendor: u16,
        device: u16,
        header: HeaderKind,
        pcie: Pcie,
        acs: AcsState,
        mf: bool,
    ) -> &mut Self {
        self.0.push(Device {
            address: addr(a),
            parent: parent.map(addr),
            vendor,
            device,
            subsystem: None,
            class: 0,
            header,
            multifunction: mf,
            is_virtfn: false,
            pcie,
            acs,
        });
        self
    }
    fn port(&mut self, a: &str, parent: Option<&str>, pt: PortType, acs: AcsState, mf: bool) -> &mut Self {
        self.add(a, parent, 0x1b36, 0x000c, HeaderKind::Bridge, Pcie::Yes(pt), acs, mf)
    }
    fn ep(&mut self, a: &str, parent: Option<&str>, mf: bool) -> &mut Self {
        self.add(a, parent, 0x1b36, 0x0010, HeaderKind::Normal, Pcie::Yes(PortType::Endpoint), AcsState::Absent, mf)
    }
    fn pci(&mut self, a: &str, parent: Option<&str>, bridge: bool) -> &mut Self {
        let h = if bridge { HeaderKind::Bridge } else { HeaderKind::Normal };
        self.add(a, parent, 0x1234, 0x11e8, h, Pcie::No, AcsState::Absent, false)
    }
    fn groups(&self) -> Vec<Vec<String>> {
        let t = Topology::new(self.0.clone()).unwrap();
        let p = predict(&t, &Platform::default(), RuleSet::Linux6);
        let mut g: Vec<Vec<String>> =
            p.groups.iter().map(|g| g.devices.iter().map(|d| d.to_string()[5..].to_string()).collect()).collect();
        g.sort();
        g
    }
}

fn parts(s: &[&[&str]]) -> Vec<Vec<String>> {
    let mut v: Vec<Vec<String>> = s.iter().map(|g| g.iter().map(|x| x.to_string()).collect()).collect();
    v.sort();
    v
}

#[test]
fn root_port_with_acs_isolates_its_endpoint() {
    let mut b = B::new();
    b.port("00:01.0", None, PortType::RootPort, FULL_ACS, false).ep("01:00.0", Some("00:01.0"), false);
    assert_eq!(b.groups(), parts(&[&["00:00.0"], &["00:01.0"], &["01:00.0"]]));
}

#[test]
fn root_port_without_acs_shares_its_group_with_the_endpoint() {
    let mut b = B::new();
    b.port("00:01.0", None, PortType::RootPort, AcsState::Absent, false).ep("01:00.0", Some("00:01.0"), false);
    assert_eq!(b.groups(), parts(&[&["00:00.0"], &["00:01.0", "01:00.0"]]));
}

#[test]
fn acs_with_redirect_disabled_does_not_isolate() {
    let mut b = B::new();
    let partial = AcsState::Present(AcsCap {
        offset: 0x100,
        capability: acs::SV | acs::RR | acs::CR | acs::UF,
        control: acs::SV | acs::UF,
        dword8_low: 0,
    });
    b.port("00:01.0", None, PortType::RootPort, partial, false).ep("01:00.0", Some("00:01.0"), false);
    let t = Topology::new(b.0.clone()).unwrap();
    let plat = Platform { kernel_enables_acs: false, ..Platform::default() };
    let p = predict(&t, &plat, RuleSet::Linux6);
    assert_eq!(p.groups.len(), 2);
    // With the kernel's boot-time enabling modelled, the implemented flags get turned on.
    assert_eq!(b.groups().len(), 3);
}

#[test]
fn switch_downstream_ports_without_acs_pair_with_their_devices() {
    let mut b = B::new();
    b.port("00:02.0", None, PortType::RootPort, FULL_ACS, false)
        .port("01:00.0", Some("00:02.0"), PortType::UpstreamPort, AcsState::Absent, false)
        .port("02:00.0", Some("01:00.0"), PortType::DownstreamPort, AcsState::Absent, false)
        .port("02:01.0", Some("01:00.0"), PortType::DownstreamPort, AcsState::Absent, false)
        .ep("03:00.0", Some("02:00.0"), false)
        .ep("04:00.0", Some("02:01.0"), false);
    assert_eq!(
        b.groups(),
        parts(&[&["00:00.0"], &["00:02.0"], &["01:00.0"], &["02:00.0", "03:00.0"], &["02:01.0", "04:00.0"]])
    );
}

#[test]
fn everything_behind_a_pcie_to_pci_bridge_shares_the_bridge_group() {
    let mut b = B::new();
    b.port("00:03.0", None, PortType::PcieToPciBridge, AcsState::Absent, false)
        .pci("01:01.0", Some("00:03.0"), false)
        .pci("01:02.0", Some("00:03.0"), true)
        .pci("02:01.0", Some("01:02.0"), false);
    assert_eq!(b.groups(), parts(&[&["00:00.0"], &["00:03.0", "01:01.0", "01:02.0", "02:01.0"]]));
}

#[test]
fn multifunction_endpoint_without_acs_is_one_group() {
    let mut b = B::new();
    b.ep("00:10.0", None, true).ep("00:10.1", None, true).ep("00:11.0", None, false);
    assert_eq!(b.groups(), parts(&[&["00:00.0"], &["00:10.0", "00:10.1"], &["00:11.0"]]));
}

#[test]
fn multifunction_root_ports_with_acs_stay_apart() {
    let mut b = B::new();
    for f in 0..4 {
        b.port(&format!("00:1c.{f}"), None, PortType::RootPort, FULL_ACS, true);
        b.ep(&format!("0{}:00.0", f + 1), Some(&format!("00:1c.{f}")), false);
    }
    assert_eq!(b.groups().len(), 9);
}

#[test]
fn multifunction_root_ports_without_acs_take_everything_below_into_one_group() {
    let mut b = B::new();
    for f in 0..4 {
        b.port(&format!("00:1c.{f}"), None, PortType::RootPort, AcsState::Absent, true);
        b.ep(&format!("0{}:00.0", f + 1), Some(&format!("00:1c.{f}")), false);
    }
    let g = b.groups();
    assert_eq!(g.len(), 2, "{g:?}");
    assert_eq!(g.iter().map(Vec::len).max(), Some(8));
}

#[test]
fn intel_integrated_endpoints_are_isolated_by_quirk_even_when_multifunction() {
    let mut b = B::new();
    for f in 0..3 {
        b.add(
            &format!("00:1f.{f}"),
            None,
            0x8086,
            0x2918,
            HeaderKind::Normal,
            Pcie::Yes(PortType::RcIntegratedEndpoint),
            AcsState::Absent,
            true,
        );
    }
    assert_eq!(b.groups().len(), 4);
}

#[test]
fn conventional_multifunction_device_on_root_bus_is_one_group() {
    // ICH9 00:1f.0/.2/.3 on QEMU q35 are conventional functions of one slot.
    let mut b = B::new();
    for f in [0, 2, 3] {
        b.add(&format!("00:1f.{f}"), None, 0x8086, 0x2918, HeaderKind::Normal, Pcie::No, AcsState::Absent, true);
    }
    assert_eq!(b.groups(), parts(&[&["00:00.0"], &["00:1f.0", "00:1f.2", "00:1f.3"]]));
}

#[test]
fn dma_alias_quirk_joins_the_aliased_function() {
    // Ricoh e832 at function 3 issues DMA as function 0 of its slot.
    let mut b = B::new();
    b.add("00:05.0", None, 0x1180, 0xe822, HeaderKind::Normal, Pcie::No, AcsState::Absent, false);
    b.add("00:05.3", None, 0x1180, 0xe832, HeaderKind::Normal, Pcie::No, AcsState::Absent, false);
    assert_eq!(b.groups(), parts(&[&["00:00.0"], &["00:05.0", "00:05.3"]]));
    let t = Topology::new(b.0.clone()).unwrap();
    let p = predict(&t, &Platform::default(), RuleSet::Linux6);
    let ev = p.evidence_for(addr("00:05.3")).unwrap();
    assert!(matches!(ev.join, Join::DmaAlias { with, .. } if with == addr("00:05.0")), "{:?}", ev.join);
}

#[test]
fn downstream_port_below_a_downstream_port_is_treated_as_upstream_port() {
    let mut b = B::new();
    b.port("00:02.0", None, PortType::RootPort, FULL_ACS, false)
        .port("01:00.0", Some("00:02.0"), PortType::DownstreamPort, AcsState::Absent, false)
        .port("02:00.0", Some("01:00.0"), PortType::DownstreamPort, FULL_ACS, false)
        .ep("03:00.0", Some("02:00.0"), false);
    // 01:00.0 really acts as an upstream port: single-function, so it isolates without ACS.
    assert_eq!(b.groups().len(), 5);
}

#[test]
fn group_ids_follow_probe_order_bus_by_bus() {
    let mut b = B::new();
    b.port("00:01.0", None, PortType::RootPort, FULL_ACS, false)
        .ep("01:00.0", Some("00:01.0"), false)
        .ep("00:02.0", None, false);
    let t = Topology::new(b.0.clone()).unwrap();
    let p = predict(&t, &Platform::default(), RuleSet::Linux6);
    let id = |a: &str| p.group_of(addr(a)).unwrap().id;
    assert_eq!((id("00:00.0"), id("00:01.0"), id("00:02.0"), id("01:00.0")), (0, 1, 2, 3));
}

#[test]
fn unreadable_acs_is_reported_as_uncertain() {
    let mut b = B::new();
    b.port("00:01.0", None, PortType::RootPort, AcsState::Unknown, false).ep("01:00.0", Some("00:01.0"), false);
    let t = Topology::new(b.0.clone()).unwrap();
    let p = predict(&t, &Platform::default(), RuleSet::Linux6);
    assert_eq!(p.uncertain, vec![addr("00:01.0")]);
}

#[test]
fn a_bridge_of_unknown_pcie_type_walked_as_conventional_is_reported_as_uncertain() {
    let mut b = B::new();
    b.add("00:01.0", None, 0x1b36, 0x000c, HeaderKind::Bridge, Pcie::Unknown, AcsState::Unknown, false);
    b.add("01:00.0", Some("00:01.0"), 0x8086, 0x10d3, HeaderKind::Normal, Pcie::Unknown, AcsState::Unknown, false);
    let t = Topology::new(b.0.clone()).unwrap();
    let p = predict(&t, &Platform::default(), RuleSet::Linux6);
    assert_eq!(p.uncertain, vec![addr("00:01.0")]);
}

#[test]
fn virtual_functions_are_never_multifunction() {
    let mut b = B::new();
    b.port("00:01.0", None, PortType::RootPort, FULL_ACS, false).ep("01:00.0", Some("00:01.0"), true);
    b.ep("01:00.1", Some("00:01.0"), true);
    b.0.last_mut().unwrap().is_virtfn = true;
    b.ep("01:00.2", Some("00:01.0"), true);
    b.0.last_mut().unwrap().is_virtfn = true;
    assert_eq!(b.groups().len(), 5);
}

#[test]
fn missing_parent_and_cycles_are_errors_not_hangs() {
    let mut b = B::new();
    b.ep("01:00.0", Some("00:09.0"), false);
    assert!(matches!(Topology::new(b.0.clone()), Err(TopologyError::MissingParent { .. })));
    let mut c = B::new();
    c.port("01:00.0", Some("02:00.0"), PortType::DownstreamPort, AcsState::Absent, false);
    c.port("02:00.0", Some("01:00.0"), PortType::DownstreamPort, AcsState::Absent, false);
    assert!(matches!(Topology::new(c.0.clone()), Err(TopologyError::Cycle(_))));
    let mut d = B::new();
    d.ep("00:05.0", None, false).ep("00:05.0", None, false);
    assert!(matches!(Topology::new(d.0.clone()), Err(TopologyError::Duplicate(_))));
}

#[test]
fn explanation_names_the_bridge_and_the_missing_acs_flags() {
    let mut b = B::new();
    let weak =
        AcsState::Present(AcsCap { offset: 0x100, capability: acs::SV | acs::UF, control: acs::SV, dword8_low: 0 });
    b.port("00:01.0", None, PortType::RootPort, weak, false).ep("01:00.0", Some("00:01.0"), false);
    let t = Topology::new(b.0.clone()).unwrap();
    let plat = Platform { kernel_enables_acs: false, ..Platform::default() };
    let p = predict(&t, &plat, RuleSet::Linux6);
    let e = explain(&t, &p, addr("01:00.0")).unwrap();
    let text = e.sentences.join("\n");
    assert!(text.contains("0000:00:01.0"), "{text}");
    assert!(text.contains("lacks UF"), "{text}");
    assert!(!e.to_isolate.is_empty());
}

#[test]
fn functions_above_zero_count_as_multifunction_even_without_the_header_bit() {
    // QEMU sets the multifunction bit on function 0 only; Linux marks every function the slot scan finds.
    let mut b = B::new();
    b.add("00:10.0", None, 0x1234, 0x11e8, HeaderKind::Normal, Pcie::No, AcsState::Absent, true);
    b.add("00:10.1", None, 0x1234, 0x11e8, HeaderKind::Normal, Pcie::No, AcsState::Absent, false);
    assert_eq!(b.groups(), parts(&[&["00:00.0"], &["00:10.0", "00:10.1"]]));
}

#[test]
fn amd_iommu_function_gets_no_group() {
    let mut b = B::new();
    b.add("00:02.0", None, 0x1022, 0x0010, HeaderKind::Normal, Pcie::No, AcsState::Absent, false);
    b.0.last_mut().unwrap().class = 0x080600;
    let t = Topology::new(b.0.clone()).unwrap();
    let amd = Platform { amd_ivrs: true, ..Platform::default() };
    let p = predict(&t, &amd, RuleSet::Linux6);
    assert_eq!(p.groups.len(), 1);
    assert_eq!(p.excluded[0].0, addr("00:02.0"));
    // Without IVRS the same function is an ordinary device.
    assert_eq!(predict(&t, &Platform::default(), RuleSet::Linux6).groups.len(), 2);
}

#[test]
fn broadwell_graphics_gets_no_group_by_the_igfx_quirk_and_skylake_does() {
    // intel/iommu.c, quirk_iommu_igfx: Broadwell's 8086:1616 (among others) makes the kernel ignore the
    // graphics-only remapping unit, so the integrated GPU on the root bus is in no group.
    let with_gpu = |device: u16| {
        let mut b = B::new();
        b.add("00:02.0", None, 0x8086, device, HeaderKind::Normal, Pcie::No, AcsState::Absent, false);
        b.0.last_mut().unwrap().class = 0x030000;
        Topology::new(b.0.clone()).unwrap()
    };
    let p = predict(&with_gpu(0x1616), &Platform::default(), RuleSet::Linux6);
    assert_eq!(p.groups.len(), 1, "the host bridge only");
    assert_eq!(
        p.excluded,
        vec![(addr("00:02.0"), "the kernel's quirk_iommu_igfx turns off DMA remapping for graphics on this chipset")]
    );
    // Skylake's HD 530 is not in the list; on AMD the quirk is not there at all.
    assert_eq!(predict(&with_gpu(0x1912), &Platform::default(), RuleSet::Linux6).groups.len(), 2);
    let amd = Platform { amd_ivrs: true, ..Platform::default() };
    assert!(predict(&with_gpu(0x1616), &amd, RuleSet::Linux6).excluded.is_empty());
}

#[test]
fn disable_acs_redir_on_the_command_line_unisolates_the_named_port() {
    let specs = iommu_groups::DeviceSpec::disable_acs_redir_from_cmdline(
        "ro quiet pci=noats,disable_acs_redir=0000:00:01.0;pci:1b36:000d intel_iommu=on",
    );
    assert_eq!(specs.len(), 2);
    let mut b = B::new();
    b.port("00:01.0", None, PortType::RootPort, FULL_ACS, false).ep("01:00.0", Some("00:01.0"), false);
    b.port("00:02.0", None, PortType::RootPort, FULL_ACS, false).ep("02:00.0", Some("00:02.0"), false);
    let t = Topology::new(b.0.clone()).unwrap();
    let plat = Platform { acs_redir_disabled: specs, ..Platform::default() };
    let p = predict(&t, &plat, RuleSet::Linux6);
    assert_eq!(p.group_of(addr("01:00.0")).unwrap().devices, vec![addr("00:01.0"), addr("01:00.0")]);
    assert_eq!(p.group_of(addr("02:00.0")).unwrap().devices, vec![addr("02:00.0")]);
}
