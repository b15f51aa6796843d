//! Intel VMD on real machines: the functions of a VMD domain share the VMD endpoint's IOMMU group.
//! From sysfs (the domain's root bus hangs below the endpoint in the device tree), and from a real
//! machine's `lspci -vvnn` in `tests/fixtures/lspci-vv/vmd/` (see the README there).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use iommu_groups::vmd::VmdDomain;
use iommu_groups::{explain, predict, Device, Join, Pcie, Platform, RuleSet, Topology};
use iommu_host::{read_host, read_host_with, Detail, HostDevice, Snapshot};
use iommu_pci::{acs, AcsCap, AcsState, HeaderKind, PciAddress, PortType};

use crate::util::{a, config, function};

/// A Tiger Lake laptop's sysfs with VMD on: the VMD controller at 00:0e.0, and in domain 10000 the root
/// port 06.0 (ACS on) with an NVMe drive; the kernel put all three in group 5.
fn vmd_host(root: &Path) {
    let acs_port = {
        let mut c = config(0x8086, 0x9a09).size(4096).header(1).pcie(4).bytes();
        // ACS extended capability at 0x100: SV TB RR CR UF implemented, SV RR CR UF enabled.
        c[0x100..0x104].copy_from_slice(&(0x000d_u32 | 1 << 16).to_le_bytes());
        c[0x104..0x106].copy_from_slice(&0x001f_u16.to_le_bytes());
        c[0x106..0x108].copy_from_slice(&0x001d_u16.to_le_bytes());
        c
    };
    function(root, "pci0000:00/0000:00:00.0", &config(0x8086, 0x9a14).size(4096).bytes()).group(0);
    function(root, "pci0000:00/0000:00:0e.0", &config(0x8086, 0x9a0b).size(4096).pcie(9).bytes())
        .driver("vmd")
        .group(5);
    function(root, "pci0000:00/0000:00:0e.0/pci10000:e0/10000:e0:06.0", &acs_port).driver("pcieport").group(5);
    function(
        root,
        "pci0000:00/0000:00:0e.0/pci10000:e0/10000:e0:06.0/10000:e1:00.0",
        &config(0x15b7, 0x5011).size(4096).pcie(0).bytes(),
    )
    .driver("nvme")
    .group(5);
}

#[test]
fn a_function_below_a_vmd_endpoint_records_it_as_its_dma_device() {
    let t = tempfile::tempdir().unwrap();
    vmd_host(t.path());
    for detail in [Detail::Listing, Detail::Full] {
        let s = read_host_with(t.path(), detail).unwrap();
        let dma = |x: &str| s.device(a(x)).unwrap().dma_device;
        assert_eq!(dma("10000:e0:06.0"), Some(a("00:0e.0")));
        assert_eq!(dma("10000:e1:00.0"), Some(a("00:0e.0")));
        assert_eq!(dma("00:0e.0"), None);
        assert_eq!(dma("00:00.0"), None);
        // The VMD root bus is a root bus: the port has no parent bridge.
        assert_eq!(s.device(a("10000:e0:06.0")).unwrap().parent, None);
        assert_eq!(s.device(a("10000:e1:00.0")).unwrap().parent, Some(a("10000:e0:06.0")));
    }
}

#[test]
fn the_snapshot_predicts_the_vmd_group_the_kernel_made() {
    let t = tempfile::tempdir().unwrap();
    vmd_host(t.path());
    let s = read_host(t.path()).unwrap();
    let p = s.platform();
    assert_eq!(p.vmd_domains, vec![VmdDomain { domain: 0x10000, endpoint: a("00:0e.0") }]);
    let (topo, bad) = s.topology().unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let pred = predict(&topo, &p, RuleSet::Linux6);
    let got: BTreeSet<Vec<PciAddress>> = pred.groups.iter().map(|g| g.devices.clone()).collect();
    let kernel: BTreeSet<Vec<PciAddress>> = s.groups.iter().map(|g| g.devices.clone()).collect();
    assert_eq!(got, kernel);
    let e = explain(&topo, &pred, a("10000:e1:00.0")).unwrap();
    assert!(e.sentences.iter().any(|x| x.contains("behind Intel VMD 0000:00:0e.0, which does its DMA")), "{e:?}");
}

#[test]
fn dma_device_is_optional_in_the_snapshot_json() {
    let t = tempfile::tempdir().unwrap();
    vmd_host(t.path());
    let s = read_host(t.path()).unwrap();
    let json = s.to_json();
    // Only the two functions of the VMD domain carry the field.
    assert_eq!(json.matches("\"dma_device\": \"0000:00:0e.0\"").count(), 2, "{json}");
    assert_eq!(Snapshot::from_json_slice(json.as_bytes()).unwrap(), s);
    // A snapshot written before the field existed loads, without it.
    let old = json.replace(",\n      \"dma_device\": \"0000:00:0e.0\"", "");
    assert!(!old.contains("dma_device"));
    let back = Snapshot::from_json_slice(old.as_bytes()).unwrap();
    assert!(back.devices.iter().all(|d| d.dma_device.is_none()));
}

#[test]
fn a_listing_gets_its_vmd_pairing_from_the_rule() {
    let dev = |addr: &str, cfg: Vec<u8>, parent: Option<&str>| HostDevice {
        config: cfg,
        parent: parent.map(a),
        ..HostDevice::new(a(addr))
    };
    let mut s = crate::util::snapshot(
        vec![
            dev("00:0e.0", config(0x8086, 0x467f).size(256).pcie(9).bytes(), None),
            dev("10000:e0:06.0", config(0x8086, 0x464d).size(256).header(1).pcie(4).bytes(), None),
            dev("10000:e1:00.0", config(0x144d, 0xa80a).size(256).pcie(0).bytes(), Some("10000:e0:06.0")),
        ],
        vec![],
    );
    assert_eq!(s.pair_vmd_domains(), None);
    assert_eq!(s.device(a("10000:e1:00.0")).unwrap().dma_device, Some(a("00:0e.0")));
    assert_eq!(s.platform().vmd_domains, vec![VmdDomain { domain: 0x10000, endpoint: a("00:0e.0") }]);
    // Without a controller in the listing: nothing paired, and the reason.
    let mut s = crate::util::snapshot(
        vec![dev("10000:e1:00.0", config(0x144d, 0xa80a).size(256).pcie(0).bytes(), None)],
        vec![],
    );
    assert!(s.pair_vmd_domains().unwrap().contains("0 Intel VMD controllers"));
}

// --- a real machine ---------------------------------------------------------------------------------------

const FIXTURE: &str = "tests/fixtures/lspci-vv/vmd/tgl-h-asus-ux582hs-fedora39.txt";

/// The `IOMMU group:` line of every function in an `lspci -vv` text: address lines start at column 0,
/// the group line is one of the indented lines after it.
fn kernel_groups(text: &str) -> BTreeMap<PciAddress, u32> {
    let mut out = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            current = line.split_whitespace().next().and_then(|w| w.parse::<PciAddress>().ok());
        } else if let (Some(addr), Some(g)) = (current, line.trim().strip_prefix("IOMMU group: ")) {
            out.insert(addr, g.parse().unwrap());
        }
    }
    out
}

const ACS: AcsState = AcsState::Present(AcsCap {
    offset: 0x220,
    capability: acs::SV | acs::TB | acs::RR | acs::CR | acs::UF,
    control: acs::SV | acs::RR | acs::CR | acs::UF,
    dword8_low: 0,
});

/// The machine of the fixture as the model sees it. Addresses, parents and IDs are the fixture's. The
/// probe ran unprivileged (`Capabilities: <access denied>`), so capabilities are what Tiger Lake-H
/// parts have: root ports with ACS; the functions of 00:0d, 00:14.0/.2, 00:15 and 00:1f without a PCIe
/// capability (so without ACS: each slot is one group); 00:14.3 (CNVi) a PCIe integrated endpoint, which
/// Intel's RCiEP quirk counts as isolated; the GPU at 01:00 a multifunction endpoint without ACS.
fn machine() -> Topology {
    use PortType::*;
    let f = |addr: &str, parent: Option<&str>, vendor: u16, device: u16, pcie: Pcie, acs: AcsState, mf: bool| {
        let bridge = pcie == Pcie::Yes(RootPort);
        Device {
            address: a(addr),
            parent: parent.map(a),
            vendor,
            device,
            subsystem: None,
            class: if bridge { 0x060400 } else { 0 },
            header: if bridge { HeaderKind::Bridge } else { HeaderKind::Normal },
            multifunction: mf,
            is_virtfn: false,
            pcie,
            acs,
        }
    };
    let rciep = Pcie::Yes(RcIntegratedEndpoint);
    let none = AcsState::Absent;
    Topology::new(vec![
        f("00:00.0", None, 0x8086, 0x9a36, Pcie::No, none, false),
        f("00:01.0", None, 0x8086, 0x9a01, Pcie::Yes(RootPort), ACS, false),
        f("00:02.0", None, 0x8086, 0x9a60, rciep, none, false),
        f("00:04.0", None, 0x8086, 0x9a03, rciep, none, false),
        f("00:06.0", None, 0x8086, 0x09ab, Pcie::No, none, false),
        f("00:07.0", None, 0x8086, 0x9a2b, Pcie::Yes(RootPort), ACS, true),
        f("00:07.1", None, 0x8086, 0x9a2d, Pcie::Yes(RootPort), ACS, true),
        f("00:08.0", None, 0x8086, 0x9a11, rciep, none, false),
        f("00:0a.0", None, 0x8086, 0x9a0d, rciep, none, false),
        f("00:0d.0", None, 0x8086, 0x9a17, Pcie::No, none, true),
        f("00:0d.2", None, 0x8086, 0x9a1f, Pcie::No, none, true),
        f("00:0e.0", None, 0x8086, 0x9a0b, rciep, none, false),
        f("00:12.0", None, 0x8086, 0x43fc, rciep, none, false),
        f("00:14.0", None, 0x8086, 0x43ed, Pcie::No, none, true),
        f("00:14.2", None, 0x8086, 0x43ef, Pcie::No, none, true),
        f("00:14.3", None, 0x8086, 0x43f0, rciep, none, true),
        f("00:15.0", None, 0x8086, 0x43e8, Pcie::No, none, true),
        f("00:15.1", None, 0x8086, 0x43e9, Pcie::No, none, true),
        f("00:15.3", None, 0x8086, 0x43eb, Pcie::No, none, true),
        f("00:16.0", None, 0x8086, 0x43e0, rciep, none, false),
        f("00:1f.0", None, 0x8086, 0x438b, Pcie::No, none, true),
        f("00:1f.3", None, 0x8086, 0x43c8, Pcie::No, none, true),
        f("00:1f.4", None, 0x8086, 0x43a3, Pcie::No, none, true),
        f("00:1f.5", None, 0x8086, 0x43a4, Pcie::No, none, true),
        f("01:00.0", Some("00:01.0"), 0x10de, 0x249c, Pcie::Yes(Endpoint), none, true),
        f("01:00.1", Some("00:01.0"), 0x10de, 0x228b, Pcie::Yes(Endpoint), none, true),
        f("10000:e0:06.0", None, 0x8086, 0x9a0f, Pcie::Yes(RootPort), ACS, false),
        f("10000:e1:00.0", Some("10000:e0:06.0"), 0x15b7, 0x5011, Pcie::Yes(Endpoint), none, false),
    ])
    .unwrap()
}

fn partition(of: impl Iterator<Item = (PciAddress, u32)>) -> BTreeSet<Vec<PciAddress>> {
    let mut by: BTreeMap<u32, Vec<PciAddress>> = BTreeMap::new();
    for (addr, g) in of {
        by.entry(g).or_default().push(addr);
    }
    by.into_values()
        .map(|mut v| {
            v.sort_unstable();
            v
        })
        .collect()
}

#[test]
fn a_real_tiger_lake_laptop_with_vmd_on_predicts_its_kernels_groups() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)).unwrap();
    let kernel = kernel_groups(&text);
    let t = machine();
    // The model mirrors the fixture: the same functions, each in a kernel group.
    let listed: Vec<PciAddress> = t.devices().iter().map(|d| d.address).collect();
    assert_eq!(kernel.keys().copied().collect::<Vec<_>>(), listed);
    // The kernel's group 10 is the VMD controller and the whole of domain 10000.
    let vmd_group = kernel[&a("00:0e.0")];
    assert_eq!(
        kernel.iter().filter(|(_, &g)| g == vmd_group).map(|(x, _)| *x).collect::<Vec<_>>(),
        vec![a("00:0e.0"), a("10000:e0:06.0"), a("10000:e1:00.0")]
    );
    // The listing rule pairs domain 10000 with 00:0e.0, and the prediction is the kernel's partition.
    let pairing = iommu_groups::vmd::pair_domains(t.devices());
    assert_eq!(pairing.uncertain, None);
    let p = Platform { vmd_domains: pairing.domains, ..Platform::default() };
    let pred = predict(&t, &p, RuleSet::Linux6);
    let predicted = partition(pred.evidence.iter().map(|e| (e.device, e.group)));
    assert_eq!(predicted, partition(kernel.iter().map(|(x, g)| (*x, *g))));
    assert_eq!(pred.evidence_for(a("10000:e1:00.0")).unwrap().join, Join::Vmd { endpoint: a("00:0e.0") });
    // Without the VMD rule the domain's ACS root port would isolate the NVMe drive: the rule is what
    // makes this machine right.
    let without = predict(&t, &Platform::default(), RuleSet::Linux6);
    assert_eq!(without.group_of(a("10000:e1:00.0")).unwrap().devices, vec![a("10000:e1:00.0")]);
}
