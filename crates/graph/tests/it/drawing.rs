//! Claims about the drawing, checked on models built in code: the SVG is well-formed, has one cluster per
//! group and one label per function, stays free of overlaps on a host with hundreds of functions, and
//! escapes what the system says; the DOT has one cluster per group and one edge per function below a
//! bridge; names come from pci.ids; the title says what the caller told it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::util::*;
use iommu_graph::{Group, Model, Title};
use iommu_host::{HostDevice, KernelGroup, Snapshot};
use iommu_pci::{ConfigInfo, PciIds};

// --- SVG ----------------------------------------------------------------------------------------------------

#[test]
fn svg_of_lab_everything_has_one_cluster_per_group_and_every_address_once() {
    let s = lab("lab-everything.json");
    let ids = system_ids();
    let d = parse_svg(&iommu_graph::svg(&model(&s)));
    assert_eq!(s.groups.len(), 25);
    let drawn: BTreeSet<u32> = d.clusters.iter().map(|c| c.0).collect();
    assert_eq!(drawn, s.groups.iter().map(|g| g.id).collect::<BTreeSet<_>>());
    // Every group of this host is contiguous in tree order: exactly one rectangle each.
    assert_eq!(d.clusters.len(), 25);
    let members: Vec<_> = s.groups.iter().flat_map(|g| &g.devices).collect();
    assert_eq!(d.rows.len(), members.len());
    for dev in &s.devices {
        let addr = dev.address.to_string();
        assert_eq!(d.texts.iter().filter(|t| **t == addr).count(), 1, "{addr} must be labelled exactly once");
        let row = d.rows.iter().find(|r| r.0 == addr).unwrap();
        let cfg = ConfigInfo::parse(&dev.config).ok();
        if let Some(c) = cfg {
            if let (Some(v), Some(n)) = (ids.vendor(c.vendor_id), ids.device(c.vendor_id, c.device_id)) {
                assert!(row.2.contains(&format!("{v} {n}")), "{addr}: {}", row.2);
            }
        }
        if let Some(drv) = &dev.driver {
            assert!(row.2.contains(&format!("[{drv}]")), "{addr}: {}", row.2);
        }
    }
    // A function's row lies inside the cluster of its group.
    for g in &s.groups {
        for m in &g.devices {
            let r = d.rows.iter().find(|r| r.0 == m.to_string()).unwrap().1;
            assert!(
                d.clusters.iter().any(|c| c.0 == g.id
                    && c.1.x <= r.x
                    && r.x + r.w <= c.1.x + c.1.w
                    && c.1.y <= r.y
                    && r.y + r.h <= c.1.y + c.1.h),
                "{m} outside the cluster of group {}",
                g.id
            );
        }
    }
    assert_no_overlap(&d);
    assert!(d.texts[0].contains("kernel 6.1.0-56-amd64") && d.texts[0].contains("38 PCI functions, 25 groups"));
}

#[test]
fn a_host_with_hundreds_of_functions_renders_without_overlaps() {
    let s = big_host();
    assert!(s.devices.len() >= 500);
    let started = Instant::now();
    let text = iommu_graph::svg(&model(&s));
    let d = parse_svg(&text);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(d.rows.len(), s.devices.len());
    assert_no_overlap(&d);
    // Each port pair shares a group split by the first port's subtree: two rectangles of one colour.
    let drawn: BTreeSet<u32> = d.clusters.iter().map(|c| c.0).collect();
    assert_eq!(drawn.len(), s.groups.len());
    let pair: Vec<&(u32, Rect, String)> = d.clusters.iter().filter(|c| c.0 == 1).collect();
    assert_eq!(pair.len(), 2);
    assert_eq!(pair[0].2, pair[1].2);
    // Rows come in tree order: each function below its bridge, indented one level more.
    let pos: BTreeMap<&str, usize> = d.rows.iter().enumerate().map(|(i, r)| (r.0.as_str(), i)).collect();
    for dev in &s.devices {
        if let Some(p) = dev.parent {
            let (pi, ci) = (pos[p.to_string().as_str()], pos[dev.address.to_string().as_str()]);
            assert!(pi < ci);
            assert!(d.rows[ci].1.x > d.rows[pi].1.x);
        }
    }
    for (addr, _, _) in &d.rows {
        assert_eq!(d.texts.iter().filter(|t| *t == addr).count(), 1);
    }
}

#[test]
fn a_host_without_groups_is_drawn_without_clusters_and_says_so() {
    let mut s = big_host();
    s.groups.clear();
    let d = parse_svg(&iommu_graph::svg(&model(&s)));
    assert!(d.clusters.is_empty());
    assert_eq!(d.rows.len(), s.devices.len());
    assert!(d.texts.iter().any(|t| t.contains("No IOMMU groups (IOMMU off or absent)")), "{:?}", &d.texts[..2]);
    assert_no_overlap(&d);
}

// --- DOT ----------------------------------------------------------------------------------------------------

#[test]
fn dot_has_one_cluster_per_group_and_one_edge_per_device_below_a_bridge() {
    for (name, s) in [
        ("lab-everything", lab("lab-everything.json")),
        ("lab-amd-mixed", lab("lab-amd-mixed.json")),
        ("big host", big_host()),
    ] {
        let (clusters, nodes, edges) = parse_dot(&iommu_graph::dot(&model(&s)));
        let ids: BTreeSet<u32> = s.groups.iter().map(|g| g.id).collect();
        assert_eq!(clusters.len(), ids.len(), "{name}");
        assert_eq!(clusters.iter().copied().collect::<BTreeSet<_>>(), ids);
        let mut n = nodes.clone();
        n.sort();
        let mut want: Vec<String> = s.devices.iter().map(|d| d.address.to_string()).collect();
        want.sort();
        assert_eq!(n, want, "one node per function");
        let mut want_edges: Vec<(String, String)> = s
            .devices
            .iter()
            .filter_map(|d| Some((d.parent.filter(|p| s.device(*p).is_some())?.to_string(), d.address.to_string())))
            .collect();
        want_edges.sort();
        let mut e = edges.clone();
        e.sort();
        assert_eq!(e, want_edges, "{name}");
    }
}

// --- hostile input ------------------------------------------------------------------------------------------

const EVIL_VENDOR: &str = "Evil <Corp> & \"Sons\" 'Ltd' \\N";
const EVIL_DEVICE: &str = "Dev\x1b[31m]]> <!-- --> \u{202e}</text><script>alert(1)</script>";
const EVIL_DRIVER: &str = "drv<&>\"'\x1b\x07\\l";

/// A bridge 00:01.0 and behind it f00d:0bad with a hostile driver name, named by a hostile pci.ids, in
/// group 3 whose type and the kernel release are hostile too.
fn hostile_host() -> (Snapshot, PciIds, Title) {
    let bridge = HostDevice { config: config(0x8086, 0x2030, [6, 4], 1, Some(4)), ..HostDevice::new(a("00:01.0")) };
    let ep = HostDevice {
        parent: Some(bridge.address),
        config: config(0xf00d, 0x0bad, [2, 0], 0, Some(0)),
        driver: Some(EVIL_DRIVER.into()),
        ..HostDevice::new(a("01:00.0"))
    };
    let group = KernelGroup {
        id: 3,
        kind: Some("DMA<\"&\">\x1b".into()),
        reserved_regions: vec![],
        devices: vec![bridge.address, ep.address],
    };
    let ids = PciIds::parse(&format!("f00d  {EVIL_VENDOR}\n\t0bad  {EVIL_DEVICE}\n"));
    let title = Title { kernel: Some("6.1<b>&\x1b[2J".into()), predicted_from: None };
    (snapshot(vec![bridge, ep], vec![group]), ids, title)
}

#[test]
fn hostile_names_drivers_and_releases_are_escaped() {
    let (s, ids, title) = hostile_host();
    let m = Model::from_snapshot(&s, &ids, title);
    let svg = iommu_graph::svg(&m);
    assert!(!svg.chars().any(|c| c.is_control() && c != '\n'), "control characters in the SVG");
    assert!(!svg.contains("<script") && !svg.contains("<b>") && !svg.contains('\u{202e}'));
    let d = parse_svg(&svg);
    assert_eq!(d.rows.len(), 2);
    assert_eq!(d.clusters.len(), 1);
    let row = &d.rows[1].2;
    // The text reads back exactly as pci.ids and sysfs said, less the control characters.
    assert!(row.contains(EVIL_VENDOR), "{row}");
    assert!(row.contains("Dev[31m]]> <!-- --> </text><script>alert(1)</script>"), "{row}");
    assert!(row.contains("[drv<&>\"'\\l]"), "{row}");
    assert!(d.texts[0].contains("kernel 6.1<b>&[2J"), "{}", d.texts[0]);

    let dot = iommu_graph::dot(&m);
    assert!(!dot.chars().any(|c| c.is_control() && c != '\n'), "control characters in the DOT");
    let (clusters, nodes, edges) = parse_dot(&dot);
    assert_eq!((clusters, nodes.len(), edges.len()), (vec![3], 2, 1));
    assert!(dot.contains(r#"Evil <Corp> & \"Sons\" 'Ltd' \\N"#), "{dot}");
    assert!(dot.contains(r#"[drv<&>\"'\\l]"#), "{dot}");
    assert!(dot.contains(r#"label="group 3 (DMA<\"&\">)""#), "{dot}");
}

#[test]
fn hostile_snapshot_strings_are_escaped() {
    let mut s = big_host();
    s.devices.truncate(3);
    s.devices[1].driver = Some("a\0b<\u{ffff}>&\"".into());
    s.kernel.release = Some("x\u{1b}]0;title\u{7}'".into());
    s.groups.retain(|g| g.devices.iter().all(|a| s.devices.iter().any(|d| d.address == *a)));
    let m = model(&s);
    let d = parse_svg(&iommu_graph::svg(&m));
    assert!(d.rows[1].2.contains("[ab<>&\"]"), "{}", d.rows[1].2);
    assert!(d.texts[0].contains("kernel x]0;title'"));
    parse_dot(&iommu_graph::dot(&m));
}

// --- what the caller says: names and titles -----------------------------------------------------------------

#[test]
fn names_and_classes_come_from_pci_ids_with_the_ids_when_unknown() {
    let ids = PciIds::parse(
        "8086  Intel Corporation\n\t1572  Ethernet Controller X710\n\
         C 02  Network controller\n\t00  Ethernet controller\n",
    );
    let dev = |addr: &str, vendor: u16, device: u16, class: [u8; 2]| HostDevice {
        config: config(vendor, device, class, 0, None),
        ..HostDevice::new(a(addr))
    };
    let s = snapshot(
        vec![
            dev("00:01.0", 0x8086, 0x1572, [2, 0]),
            dev("00:02.0", 0x8086, 0xbeef, [2, 0x80]),
            dev("00:03.0", 0x1234, 0x5678, [0xff, 0]),
            HostDevice { config: vec![0xff; 3], ..HostDevice::new(a("00:04.0")) },
        ],
        vec![],
    );
    let m = Model::from_snapshot(&s, &ids, Title::of(&s));
    let got: Vec<(&str, &str)> = m.nodes.iter().map(|n| (n.name.as_str(), n.class.as_str())).collect();
    assert_eq!(
        got,
        [
            ("Intel Corporation Ethernet Controller X710", "Ethernet controller [0200]"),
            ("Intel Corporation [8086:beef]", "Network controller [0280]"),
            ("[1234:5678]", "Unknown class [ff00]"),
            ("[????:????]", "Unknown class [????]"),
        ]
    );
}

#[test]
fn given_groups_replace_the_snapshots_and_the_title_says_where_they_came_from() {
    let mut s = big_host();
    s.devices.truncate(3);
    s.kernel.release = Some("6.12.0-test".into());
    // The snapshot's own groups are ignored: only the given ones are drawn.
    let groups = vec![Group { id: 9, kind: Some("predicted".into()), devices: vec![s.devices[0].address] }];
    let title = Title { kernel: None, predicted_from: Some("an lspci dump".into()) };
    let m = Model::with_groups(&s, &groups, &system_ids(), title);
    assert_eq!(m.groups, 1);
    let svg = iommu_graph::svg(&m);
    let d = parse_svg(&svg);
    assert_eq!(
        d.texts[0],
        "IOMMU groups: kernel unknown (groups predicted from an lspci dump), 3 PCI functions, 1 group"
    );
    assert!(d.texts[1].ends_with("2 functions in no group (grey)."), "{}", d.texts[1]);
    assert_eq!(d.clusters.iter().map(|c| c.0).collect::<Vec<_>>(), [9]);
    assert!(svg.contains("IOMMU group 9 (predicted)"), "the tooltip gives the group's type");
    assert!(!svg.contains("6.12.0-test"), "the snapshot's release is not the title's");
    let dot = iommu_graph::dot(&m);
    assert!(dot.contains(r#"label="group 9 (predicted)""#), "{dot}");
    assert_eq!(parse_dot(&dot).0, [9]);
}
