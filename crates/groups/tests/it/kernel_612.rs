//! The model against Debian's Linux 6.12.117 source: one test per divergence an audit found, each
//! asserting what that kernel does (the function named in the comment is where it does it).

use iommu_groups::quirks::{alias_quirks_for, QUIRKS_FOLLOW};
use iommu_groups::{
    acs_verdict, predict, what_if, AcsVerdict, Change, Device, DeviceSpec, Pcie, Platform, RuleSet, Topology,
};
use iommu_pci::{acs, AcsCap, AcsState, HeaderKind, PciAddress, PortType};

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

/// A PCIe function with the given IDs and type.
fn dev(a: &str, parent: Option<&str>, vendor: u16, device: u16, pt: PortType, acs: AcsState) -> Device {
    let bridge = matches!(pt, PortType::RootPort | PortType::DownstreamPort | PortType::UpstreamPort);
    Device {
        address: addr(a),
        parent: parent.map(addr),
        vendor,
        device,
        subsystem: None,
        class: if bridge { 0x060400 } else { 0x020000 },
        header: if bridge { HeaderKind::Bridge } else { HeaderKind::Normal },
        multifunction: false,
        is_virtfn: false,
        pcie: Pcie::Yes(pt),
        acs,
    }
}

fn acs_cap(capability: u16, control: u16) -> AcsState {
    AcsState::Present(AcsCap { offset: 0x100, capability, control, dword8_low: 0 })
}

fn group_of(t: &Topology, p: &Platform, a: &str) -> Vec<PciAddress> {
    predict(t, p, RuleSet::Linux6).group_of(addr(a)).unwrap().devices.clone()
}

// ---- Item 7: quirk tables ----

#[test]
fn qualcomm_hamoa_and_glymur_root_ports_are_isolated_by_quirk() {
    // quirks.c, pci_dev_acs_enabled[]: 17cb:0111 and 17cb:0120 use the Qualcomm root-port handler, which
    // vouches for SV RR CR UF although the ports have no ACS capability.
    for id in [0x0111, 0x0120] {
        let t = Topology::new(vec![
            dev("00:00.0", None, 0x17cb, id, PortType::RootPort, AcsState::Absent),
            dev("01:00.0", Some("00:00.0"), 0x15b7, 0x5006, PortType::Endpoint, AcsState::Absent),
        ])
        .unwrap();
        assert_eq!(group_of(&t, &Platform::default(), "01:00.0"), vec![addr("01:00.0")], "17cb:{id:04x}");
    }
}

#[test]
fn switchtec_ntb_rows_name_their_devices_and_require_the_other_bridge_class() {
    // quirks.c, SWITCHTEC_QUIRK / SWITCHTEC_PCI100X_QUIRK: class-matched final fixups (class 0x0680, the
    // programming interface ignored) for listed Microsemi IDs and EFAR 1001-1006 and 1008.
    let runtime = |v, d, class| alias_quirks_for(v, d, class).any(|q| q.name.contains("Switchtec"));
    assert!(runtime(0x11f8, 0x8531, 0x068000));
    assert!(runtime(0x11f8, 0x5528, 0x068001), "the programming interface does not count");
    assert!(!runtime(0x11f8, 0x8531, 0x058000), "a Switchtec management endpoint is class 0x0580");
    assert!(!runtime(0x11f8, 0x7000, 0x068000), "not a listed ID");
    assert!(runtime(0x1055, 0x1008, 0x068000), "PCI1008XG4");
    assert!(!runtime(0x1055, 0x1007, 0x068000));
    // And in a prediction: only the NTB function is flagged as having run-time aliases.
    let mut ntb = dev("01:00.1", Some("00:01.0"), 0x11f8, 0x8531, PortType::Endpoint, AcsState::Absent);
    ntb.class = 0x068000;
    let mut mgmt = dev("01:00.0", Some("00:01.0"), 0x11f8, 0x8531, PortType::Endpoint, AcsState::Absent);
    mgmt.class = 0x058000;
    let t = Topology::new(vec![dev("00:01.0", None, 0x1b36, 0x000c, PortType::RootPort, AcsState::Absent), mgmt, ntb])
        .unwrap();
    assert_eq!(predict(&t, &Platform::default(), RuleSet::Linux6).runtime_aliases, vec![addr("01:00.1")]);
}

#[test]
fn function_zero_and_one_alias_quirks_add_no_alias_to_the_function_they_name() {
    // quirks.c, quirk_dma_func0_alias / quirk_dma_func1_alias: the alias is added only when the device is
    // not itself function 0 (resp. 1), so that function has no alias quirk to explain.
    let ricoh0 = dev("01:00.0", Some("00:01.0"), 0x1180, 0xe832, PortType::Endpoint, AcsState::Absent);
    let ricoh1 = dev("01:00.1", Some("00:01.0"), 0x1180, 0xe832, PortType::Endpoint, AcsState::Absent);
    let marvell1 = dev("02:00.1", Some("00:02.0"), 0x1b4b, 0x9123, PortType::Endpoint, AcsState::Absent);
    let t = Topology::new(vec![
        dev("00:01.0", None, 0x1b36, 0x000c, PortType::RootPort, acs_cap(0x1d, 0x1d)),
        dev("00:02.0", None, 0x1b36, 0x000c, PortType::RootPort, acs_cap(0x1d, 0x1d)),
        ricoh0,
        ricoh1,
        marvell1,
    ])
    .unwrap();
    let p = predict(&t, &Platform::default(), RuleSet::Linux6);
    assert_eq!(p.evidence_for(addr("01:00.0")).unwrap().alias_quirk, None);
    assert_eq!(p.evidence_for(addr("01:00.1")).unwrap().alias_quirk, Some("Ricoh card reader"));
    assert_eq!(p.evidence_for(addr("02:00.1")).unwrap().alias_quirk, None);
}

// ---- Item 3: pci=config_acs= and pci=disable_acs_redir= ----

/// Root ports 00:01.0 and 00:02.0 with ACS capability SV RR CR UF whose control register holds
/// `firmware`, each with an endpoint below.
fn two_ports(firmware: u16) -> Topology {
    Topology::new(vec![
        dev("00:01.0", None, 0x1b36, 0x000c, PortType::RootPort, acs_cap(0x1d, firmware)),
        dev("00:02.0", None, 0x1b36, 0x000c, PortType::RootPort, acs_cap(0x1d, firmware)),
        dev("01:00.0", Some("00:01.0"), 0x1af4, 0x1041, PortType::Endpoint, AcsState::Absent),
        dev("02:00.0", Some("00:02.0"), 0x1af4, 0x1041, PortType::Endpoint, AcsState::Absent),
    ])
    .unwrap()
}

fn booted(cmdline: &str) -> Platform {
    let mut p = Platform::default();
    p.apply_cmdline(cmdline);
    p
}

fn control(t: &Topology, p: &Platform, a: &str) -> u16 {
    match acs_verdict(t, addr(a), p) {
        Some(AcsVerdict::Flags { control, .. }) => control,
        other => panic!("{a}: {other:?}"),
    }
}

#[test]
fn config_acs_starts_from_the_firmwares_control_value_not_the_kernels_enabling() {
    // pci.c, pci_enable_acs keeps the value read before its own enabling, and __pci_config_acs builds the
    // new control from it: masked bits from the entry, every other bit (x) as the firmware left it.
    let t = two_ports(0);
    // Setting SV alone leaves RR CR UF off: the firmware had them off, the kernel's enabling is gone.
    let p = booted("pci=config_acs=1@0000:00:01.0");
    assert_eq!(control(&t, &p, "00:01.0"), acs::SV);
    assert_eq!(group_of(&t, &p, "01:00.0"), vec![addr("00:01.0"), addr("01:00.0")]);
    // The port not named keeps the kernel's enabling.
    assert_eq!(group_of(&t, &p, "02:00.0"), vec![addr("02:00.0")]);
    // An empty flag string is allowed: the control is the firmware's, unchanged.
    let p = booted("pci=config_acs=@0000:00:01.0");
    assert_eq!(p.config_acs.len(), 1);
    assert_eq!(control(&t, &p, "00:01.0"), 0);
    // With the firmware having enabled everything, x keeps it.
    let t = two_ports(0x1d);
    assert_eq!(control(&t, &booted("pci=config_acs=xx0xx@0000:00:01.0"), "00:01.0"), 0x19);
}

#[test]
fn disable_acs_redir_also_starts_from_the_firmwares_value_and_config_acs_overrides_it() {
    // pci.c, pci_enable_acs: __pci_config_acs runs for disable_acs_redir with mask RR CR EC, then for
    // config_acs; both compute from the firmware's value, so SV and UF stay off when the firmware left
    // them off, and a matching config_acs entry replaces the disable_acs_redir result.
    let t = two_ports(0);
    assert_eq!(control(&t, &booted("pci=disable_acs_redir=0000:00:01.0"), "00:01.0"), 0);
    let t = two_ports(0x1d);
    assert_eq!(control(&t, &booted("pci=disable_acs_redir=0000:00:01.0"), "00:01.0"), acs::SV | acs::UF);
    let both = booted("pci=disable_acs_redir=0000:00:01.0,config_acs=xxxxx@0000:00:01.0");
    assert_eq!(control(&t, &both, "00:01.0"), 0x1d);
    assert_eq!(group_of(&t, &both, "01:00.0"), vec![addr("01:00.0")]);
}

#[test]
fn on_intel_spt_ports_any_config_acs_entry_only_clears_redirect_in_the_dword_at_8() {
    // pci.c, __pci_config_acs calls pci_dev_specific_disable_acs_redir for a matched device before its
    // own arithmetic; for SPT root ports (quirks.c, pci_quirk_disable_intel_spt_pch_acs_redir) that
    // clears RR CR EC in the control dword at +8 and returns, whatever the entry's flags.
    let spt = AcsState::Present(AcsCap { offset: 0x100, capability: 0x1d, control: 0, dword8_low: 0 });
    let t = Topology::new(vec![
        dev("00:1c.0", None, 0x8086, 0xa110, PortType::RootPort, spt),
        dev("01:00.0", Some("00:1c.0"), 0x1af4, 0x1041, PortType::Endpoint, AcsState::Absent),
    ])
    .unwrap();
    assert_eq!(group_of(&t, &Platform::default(), "01:00.0"), vec![addr("01:00.0")]);
    let p = booted("pci=config_acs=1111111@0000:00:1c.0");
    assert_eq!(group_of(&t, &p, "01:00.0"), vec![addr("00:1c.0"), addr("01:00.0")]);
    assert!(matches!(acs_verdict(&t, addr("00:1c.0"), &p), Some(AcsVerdict::Quirk { enabled: false, .. })));
}

#[test]
fn device_specs_follow_pci_dev_str_match() {
    // pci.c, pci_dev_str_match: in pci:VVVV:DDDD[:SSSS:SSSS] a field of 0 matches anything; an address may
    // be followed by /dev.fn steps (pci_dev_str_match_path), each checked against the function and then
    // its upstream bridge.
    let t = Topology::new(vec![
        dev("00:1c.0", None, 0x8086, 0x1c10, PortType::RootPort, AcsState::Absent),
        dev("00:1d.0", None, 0x8086, 0x1c12, PortType::RootPort, AcsState::Absent),
        dev("01:00.0", Some("00:1c.0"), 0x1af4, 0x1041, PortType::Endpoint, AcsState::Absent),
        dev("02:00.0", Some("00:1d.0"), 0x1af4, 0x1041, PortType::Endpoint, AcsState::Absent),
    ])
    .unwrap();
    let spec = |s: &str| DeviceSpec::parse(s).unwrap_or_else(|| panic!("{s} does not parse"));
    assert!(spec("pci:8086:0").names(&t, addr("00:1d.0")));
    assert!(spec("pci:0:1041").names(&t, addr("02:00.0")));
    assert!(spec("pci:1af4:1041:0:0").names(&t, addr("01:00.0")));
    assert!(!spec("pci:1af4:1041:1af4:1100").names(&t, addr("01:00.0")), "no subsystem reads as 0000:0000");
    let path = spec("00:1c.0/00.0");
    assert!(path.names(&t, addr("01:00.0")));
    assert!(!path.names(&t, addr("02:00.0")), "same devfn, other bridge");
    assert!(spec("0000:00:1c.0/00.0").names(&t, addr("01:00.0")));
    assert!(!spec("00:1c.0/00.0/00.0").names(&t, addr("01:00.0")), "one step too many");
}

#[test]
fn only_the_last_occurrence_counts_and_a_bad_entry_ends_the_list() {
    // pci.c, pci_setup: each disable_acs_redir= or config_acs= replaces the saved string, so only the last
    // counts. __pci_config_acs then walks the list and stops at the first entry it cannot read (bad flag
    // characters, no @, a device it cannot parse, bits beyond the seven flags); entries before it stay.
    let p = booted("pci=config_acs=1@00:01.0 pci=noats,config_acs=0@00:02.0,disable_acs_redir=00:01.0");
    assert_eq!(p.config_acs.len(), 1);
    assert_eq!(p.config_acs[0].device, DeviceSpec::parse("00:02.0").unwrap());
    assert!(p.notes.iter().any(|n| n.contains("only the last")), "{:?}", p.notes);
    let p = booted("pci=disable_acs_redir=00:01.0 pci=disable_acs_redir=00:02.0");
    assert_eq!(p.acs_redir_disabled, vec![DeviceSpec::parse("00:02.0").unwrap()]);
    let p = booted("pci=disable_acs_redir=00:01.0;bogus;00:02.0");
    assert_eq!(p.acs_redir_disabled, vec![DeviceSpec::parse("00:01.0").unwrap()]);
    assert!(p.notes.iter().any(|n| n.contains("bogus") && n.contains("stops")), "{:?}", p.notes);
    let p = booted("pci=config_acs=1@00:01.0;1q@00:02.0;1@00:03.0");
    assert_eq!(p.config_acs.len(), 1);
    // An entry with undefined bits is met before its device is looked at, and ends the list.
    let t = two_ports(0);
    let p = booted("pci=config_acs=10000000@00:09.0;0@00:01.0");
    assert_eq!(control(&t, &p, "00:01.0"), 0x1d, "not reached: the kernel's enabling stays");
    // Words after `--` are for init, not for the kernel.
    assert!(booted("quiet -- pci=config_acs=0@00:01.0").config_acs.is_empty());
}

#[test]
fn a_what_if_config_acs_replaces_the_hosts_own() {
    // The what-if parameter is added at the end of the command line; pci_setup keeps only the last.
    let t = two_ports(0);
    let host = booted("pci=config_acs=00000@0000:00:01.0");
    assert_eq!(group_of(&t, &host, "01:00.0"), vec![addr("00:01.0"), addr("01:00.0")]);
    let w = what_if(&t, &host, &[Change::parse("config_acs=xxxxx@0000:00:02.0").unwrap()]);
    assert_eq!(w.after.group_of(addr("01:00.0")).unwrap().devices, vec![addr("01:00.0")]);
    assert!(w.warnings.iter().any(|x| x.contains("replaces this host's own")), "{:?}", w.warnings);
}

#[test]
fn a_what_if_on_a_running_kernels_registers_says_where_the_firmware_value_is_assumed() {
    // Read from a kernel with an IOMMU on, SV RR CR UF read as set whether the firmware set them or the
    // kernel did; an entry that keeps one of them (x) gives the firmware's, which the snapshot cannot show.
    let t = two_ports(0x1d);
    let live = Platform { acs_control_from_running_kernel: true, ..Platform::default() };
    let w = what_if(&t, &live, &[Change::parse("config_acs=x1111@0000:00:01.0").unwrap()]);
    assert!(w.warnings.iter().any(|x| x.contains("0000:00:01.0") && x.contains("UF")), "{:?}", w.warnings);
    // Every required bit given: nothing is assumed.
    let w = what_if(&t, &live, &[Change::parse("config_acs=11111@0000:00:01.0").unwrap()]);
    assert!(!w.warnings.iter().any(|x| x.contains("firmware's setting is unknown")), "{:?}", w.warnings);
}

// ---- Item 4: pcie_acs_override= only on a patched kernel ----

#[test]
fn a_hosts_pcie_acs_override_counts_only_on_a_kernel_that_carries_the_patch() {
    // The parameter is not in mainline: a stock kernel (Debian's 6.12.117 has no handler for it) ignores
    // it, so a root port without ACS still shares its group with the endpoint below.
    let t = Topology::new(vec![
        dev("00:01.0", None, 0x1b36, 0x000c, PortType::RootPort, AcsState::Absent),
        dev("01:00.0", Some("00:01.0"), 0x1af4, 0x1041, PortType::Endpoint, AcsState::Absent),
    ])
    .unwrap();
    let cmdline = "quiet intel_iommu=on pcie_acs_override=downstream";
    let mut stock = Platform::default();
    stock.apply_host_cmdline(cmdline, Some("6.12.117+deb12-amd64"));
    assert_eq!(group_of(&t, &stock, "01:00.0"), vec![addr("00:01.0"), addr("01:00.0")]);
    assert!(stock.notes.iter().any(|n| n.contains("ignored")), "{:?}", stock.notes);
    for release in ["6.8.12-4-pve", "6.12.1-zen1-1-zen", "6.12.3-1-liquorix-amd64"] {
        let mut patched = Platform::default();
        patched.apply_host_cmdline(cmdline, Some(release));
        assert_eq!(group_of(&t, &patched, "01:00.0"), vec![addr("01:00.0")], "{release}");
        assert!(patched.notes.is_empty(), "{release}");
    }
    assert_eq!(iommu_groups::acs_override_flavour("6.1.0-56-amd64"), None);
    // The explicit what-if is unchanged: it predicts the override whatever the host runs.
    let w = what_if(&t, &stock, &[Change::parse("acs-override=downstream").unwrap()]);
    assert_eq!(w.after.group_of(addr("01:00.0")).unwrap().devices, vec![addr("01:00.0")]);
}

// ---- Item 5: Intel PCH root ports ----

/// An Intel Cougar Point root port 00:1c.0 without an ACS capability, an endpoint below it, and the LPC
/// bridge at 00:1f.0; `port` is the port's PCIe type.
fn pch(port: PortType) -> Topology {
    Topology::new(vec![
        dev("00:1c.0", None, 0x8086, 0x1c10, port, AcsState::Absent),
        dev("01:00.0", Some("00:1c.0"), 0x10ec, 0x8168, PortType::Endpoint, AcsState::Absent),
        Device {
            class: 0x060100,
            ..dev("00:1f.0", None, 0x8086, 0x1c44, PortType::RcIntegratedEndpoint, AcsState::Absent)
        },
    ])
    .unwrap()
}

#[test]
fn intel_pch_root_ports_isolate_only_when_rcba_is_enabled_and_acs_was_requested() {
    // quirks.c, pci_quirk_enable_intel_pch_acs (run from pci_enable_acs only when an IOMMU asked for ACS)
    // sets the flag pci_quirk_intel_pch_acs answers from, and fails when the LPC bridge's RCBA enable bit
    // (0xF0 bit 0 of 1f.0) is clear.
    let t = pch(PortType::RootPort);
    let lpc = addr("00:1f.0");
    let alone = vec![addr("01:00.0")];
    let shared = vec![addr("00:1c.0"), addr("01:00.0")];
    let on = Platform { lpc_rcba: vec![(lpc, true)], ..Platform::default() };
    assert_eq!(group_of(&t, &on, "01:00.0"), alone);
    let off = Platform { lpc_rcba: vec![(lpc, false)], ..Platform::default() };
    assert_eq!(group_of(&t, &off, "01:00.0"), shared);
    let no_iommu = Platform { kernel_enables_acs: false, ..on.clone() };
    assert_eq!(group_of(&t, &no_iommu, "01:00.0"), shared);
    // RCBA not read (config space beyond 64 bytes needs root): uncertain, never a silent yes.
    let unread = Platform::default();
    let p = predict(&t, &unread, RuleSet::Linux6);
    assert_eq!(p.group_of(addr("01:00.0")).unwrap().devices, shared);
    assert_eq!(p.uncertain, vec![addr("00:1c.0")]);
    assert!(matches!(acs_verdict(&t, addr("00:1c.0"), &unread), Some(AcsVerdict::QuirkUnknown { .. })));
}

#[test]
fn intel_pch_and_spt_quirks_apply_to_root_ports_only() {
    // quirks.c, pci_quirk_intel_pch_acs_match and pci_quirk_intel_spt_pch_acs_match: a function with a
    // listed ID that is not a root port gets the ordinary test.
    let t = pch(PortType::DownstreamPort);
    let on = Platform { lpc_rcba: vec![(addr("00:1f.0"), true)], ..Platform::default() };
    assert_eq!(acs_verdict(&t, addr("00:1c.0"), &on), Some(AcsVerdict::NoCapability));
    // An SPT ID (8086:a110) as a downstream port: the standard word at +6 counts, not the dword at +8.
    let spt_cap = AcsState::Present(AcsCap { offset: 0x100, capability: 0x1d, control: 0, dword8_low: 0x1d });
    let t = Topology::new(vec![dev("00:1c.0", None, 0x8086, 0xa110, PortType::DownstreamPort, spt_cap)]).unwrap();
    let no_enabling = Platform { kernel_enables_acs: false, ..Platform::default() };
    assert!(matches!(acs_verdict(&t, addr("00:1c.0"), &no_enabling), Some(AcsVerdict::Flags { missing: 0x1d, .. })));
}

// ---- Item 6: ARI and multifunction ----

#[test]
fn with_ari_a_function_at_device_one_counts_as_multifunction() {
    // probe.c, pci_scan_slot: every function after the first that the scan of a slot reaches is marked
    // multifunction; with ARI the scan of slot 0 follows the ARI chain to devfn 8 (01:01.0) and beyond.
    // Below a root port only device 0 is scanned (only_one_child), so 01:01.0 there came through ARI.
    let t = Topology::new(vec![
        dev("00:01.0", None, 0x1b36, 0x000c, PortType::RootPort, acs_cap(0x1d, 0x1d)),
        dev("01:00.0", Some("00:01.0"), 0x8086, 0x1572, PortType::Endpoint, AcsState::Absent),
        dev("01:01.0", Some("00:01.0"), 0x8086, 0x1572, PortType::Endpoint, AcsState::Absent),
        dev("01:01.1", Some("00:01.0"), 0x8086, 0x1572, PortType::Endpoint, AcsState::Absent),
    ])
    .unwrap();
    let p = Platform::default();
    // Multifunction and without an ACS capability: not isolated (pci.c, pci_acs_enabled).
    assert_eq!(acs_verdict(&t, addr("01:01.0"), &p), Some(AcsVerdict::NoCapability));
    // ...so 01:01.1 finds it in its slot (iommu.c, get_pci_function_alias_group) and joins its group.
    assert_eq!(group_of(&t, &p, "01:01.1"), vec![addr("01:01.0"), addr("01:01.1")]);
    // Devfn 0 is the first function: single-function unless its header says otherwise.
    assert_eq!(acs_verdict(&t, addr("01:00.0"), &p), Some(AcsVerdict::SingleFunction));
    // On a root bus there is no ARI: 00:02.0 is function 0 of slot 2, single-function.
    let t = Topology::new(vec![dev("00:02.0", None, 0x8086, 0x1572, PortType::Endpoint, AcsState::Absent)]).unwrap();
    assert_eq!(acs_verdict(&t, addr("00:02.0"), &p), Some(AcsVerdict::SingleFunction));
}

// ---- Item 8: the version the tables follow ----

#[test]
fn predictions_name_the_kernel_source_the_quirk_tables_follow() {
    assert_eq!(QUIRKS_FOLLOW, "Linux 6.12.117 (Debian)");
    let t = Topology::new(vec![dev("00:01.0", None, 0x1b36, 0x000c, PortType::RootPort, AcsState::Absent)]).unwrap();
    assert_eq!(predict(&t, &Platform::default(), RuleSet::Linux6).quirks, QUIRKS_FOLLOW);
}
