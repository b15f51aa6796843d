//! Domains built from predicted IOMMU groups, faults, and the fault log.

use iommu_groups::{predict, Device, Pcie, Platform, RuleSet, Topology};
use iommu_pci::{AcsState, HeaderKind, PciAddress, PortType};
use iommu_sim::{Access, DmaDir, DomainMode, FaultReason, GroupDevice, PageSize, Perm, Rid, SimError};

use crate::{domain, fault_of, rid, sim, sim_with};

fn dev(a: &str, parent: Option<&str>, header: HeaderKind, pt: PortType, multifunction: bool) -> Device {
    Device {
        address: a.parse().unwrap(),
        parent: parent.map(|p| p.parse().unwrap()),
        vendor: 0x1234,
        device: 0x11e8,
        subsystem: None,
        class: if header == HeaderKind::Bridge { 0x060400 } else { 0x020000 },
        header,
        multifunction,
        is_virtfn: false,
        pcie: Pcie::Yes(pt),
        acs: AcsState::Absent,
    }
}

/// Root port 00:1c.0 (no ACS) with a two-function NIC at 01:00.{0,1}; root port 00:1d.0 with a disk at
/// 02:00.0. Two groups.
pub fn two_group_topology() -> Topology {
    Topology::new(vec![
        dev("00:1c.0", None, HeaderKind::Bridge, PortType::RootPort, false),
        dev("01:00.0", Some("00:1c.0"), HeaderKind::Normal, PortType::Endpoint, true),
        dev("01:00.1", Some("00:1c.0"), HeaderKind::Normal, PortType::Endpoint, true),
        dev("00:1d.0", None, HeaderKind::Bridge, PortType::RootPort, false),
        dev("02:00.0", Some("00:1d.0"), HeaderKind::Normal, PortType::Endpoint, false),
    ])
    .unwrap()
}

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

#[test]
fn devices_of_one_group_share_a_domain_and_other_groups_do_not() {
    let p = predict(&two_group_topology(), &Platform::default(), RuleSet::Linux6);
    let mut s = sim();
    let groups = s.attach_groups(&p, DomainMode::Translated).unwrap();
    assert_eq!(groups.len(), 2);
    let (f0, f1, disk) = (Rid::from(addr("01:00.0")), Rid::from(addr("01:00.1")), Rid::from(addr("02:00.0")));
    assert_eq!(s.domain_of(f0), s.domain_of(f1));
    assert_ne!(s.domain_of(f0), s.domain_of(disk));
    assert_eq!(s.domain_of(Rid::from(addr("00:1c.0"))), s.domain_of(f0), "the port is in its endpoint's group");
    // A mapping made for function 0 is seen by function 1 (same group) and not by the disk.
    s.memory().write(0x9000_0000, b"shared").unwrap();
    let m = s.map_single(f0, 0x9000_0000, 6, DmaDir::ToDevice).unwrap();
    let mut got = [0u8; 6];
    s.device_read(f1, m.addr(), &mut got).unwrap();
    assert_eq!(&got, b"shared");
    let f = fault_of(s.device_read(disk, m.addr(), &mut got));
    assert_eq!((f.rid, f.reason, f.vtd_code, f.access), (disk, FaultReason::NotMapped, 6, Access::Read));
    assert_eq!(f.domain, s.domain_of(disk));
}

#[test]
fn group_domains_report_their_devices_with_requester_ids() {
    let p = predict(&two_group_topology(), &Platform::default(), RuleSet::Linux6);
    let mut s = sim();
    let groups = s.attach_groups(&p, DomainMode::Identity).unwrap();
    let g = groups.iter().find(|g| g.devices.iter().any(|d| d.address == addr("02:00.0"))).unwrap();
    assert_eq!(
        g.devices,
        [
            GroupDevice { address: addr("00:1d.0"), rid: Rid(0x00e8) },
            GroupDevice { address: addr("02:00.0"), rid: Rid(0x0200) }
        ]
    );
    assert_eq!(s.domain_mode(g.domain).unwrap(), DomainMode::Identity);
    assert_eq!(s.devices_of(g.domain), [Rid(0x00e8), Rid(0x0200)]);
}

#[test]
fn a_full_fault_log_drops_new_faults_and_counts_them() {
    let mut s = sim_with(|c| c.fault_log_capacity = 2);
    for i in 0..5u64 {
        let _ = s.device_write(rid(7), i * 0x1000, b"x");
    }
    assert_eq!(s.faults().len(), 2);
    assert_eq!(s.faults().dropped(), 3);
    assert!(s.faults().overflowed());
    let st = s.stats();
    assert_eq!((st.faults.recorded, st.faults.dropped, st.access.blocked), (2, 3, 5));
    let kept: Vec<u64> = s.take_faults().iter().map(|f| f.addr).collect();
    assert_eq!(kept, [0, 0x1000], "the oldest are kept, as in VT-d's fault recording registers");
}

#[test]
fn a_1g_page_translates_every_offset_and_is_cached_as_one_entry() {
    let mut s = sim();
    let dev = rid(1);
    let d = domain(&mut s, DomainMode::Translated, &[dev]);
    s.map_page(d, 0x40_0000_0000, 0x4000_0000, PageSize::Size1G, Perm::RW).unwrap();
    for off in [0u64, 0x1234_5678, 0x3fff_ffff] {
        let t = s.translate(dev, 0x40_0000_0000 + off, Access::Write).unwrap();
        assert_eq!((t.phys, t.size), (0x4000_0000 + off, Some(PageSize::Size1G)));
    }
    let st = s.stats();
    assert_eq!((st.iotlb.misses, st.iotlb.hits, st.iotlb.fills), (1, 2, 1));
    assert_eq!(
        s.unmap(d, 0x40_0000_0000, 0x20_0000),
        Err(SimError::SplitsPage {
            domain: d,
            iova: 0x40_0000_0000,
            end: 0x40_0020_0000,
            page: 0x40_0000_0000,
            size: PageSize::Size1G
        })
    );
    assert_eq!(s.map(d, 0, 1 << 40, 0x1000, Perm::R), Err(SimError::PhysOutOfRange { addr: 1 << 40, len: 0x1000 }));
}
