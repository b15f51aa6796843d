//! Unit tests of the engine's internals: tree order, runs of clusters, measured widths, escaping.

use super::*;
use crate::layout::{px, row_cols, ADDR_COLS, FONT, MARGIN, PAD, TEXT_PAD};
use crate::text::truncate_cols;
use iommu_host::{HostDevice, KernelGroup, Snapshot};
use iommu_pci::{PciAddress, PciIds};

fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn snap(devs: &[(&str, Option<&str>)], groups: &[(u32, &[&str])]) -> Snapshot {
    Snapshot {
        devices: devs.iter().map(|(d, p)| HostDevice { parent: p.map(a), ..HostDevice::new(a(d)) }).collect(),
        groups: groups
            .iter()
            .map(|(id, m)| KernelGroup {
                id: *id,
                kind: Some("DMA".into()),
                reserved_regions: vec![],
                devices: m.iter().map(|s| a(s)).collect(),
            })
            .collect(),
        ..Snapshot::default()
    }
}

fn model(s: &Snapshot, ids: &PciIds) -> Model {
    Model::from_snapshot(s, ids, Title::of(s))
}

fn order(m: &Model) -> Vec<String> {
    m.nodes.iter().map(|n| format!("{}@{}", n.address, n.depth)).collect()
}

#[test]
fn nodes_come_in_depth_first_order_below_their_bridges() {
    let s = snap(
        &[
            ("00:00.0", None),
            ("00:1c.0", None),
            ("00:1c.1", None),
            ("01:00.0", Some("00:1c.0")),
            ("02:00.0", Some("00:1c.1")),
            ("02:00.1", Some("00:1c.1")),
        ],
        &[],
    );
    let m = model(&s, &PciIds::empty());
    assert_eq!(
        order(&m),
        ["0000:00:00.0@0", "0000:00:1c.0@0", "0000:01:00.0@1", "0000:00:1c.1@0", "0000:02:00.0@1", "0000:02:00.1@1"]
    );
    assert_eq!(m.nodes[2].parent, Some(1));
    assert_eq!(m.nodes[5].parent, Some(3));
}

#[test]
fn parent_loops_and_missing_parents_do_not_hang_or_lose_functions() {
    let s = snap(
        &[
            ("01:00.0", Some("02:00.0")),
            ("02:00.0", Some("01:00.0")),
            ("03:00.0", Some("09:00.0")),
            ("04:00.0", Some("04:00.0")),
        ],
        &[],
    );
    let m = model(&s, &PciIds::empty());
    assert_eq!(m.nodes.len(), 4);
    let mut seen: Vec<PciAddress> = m.nodes.iter().map(|n| n.address).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4);
}

#[test]
fn a_deep_chain_of_bridges_does_not_overflow_the_stack() {
    let mut devs = Vec::new();
    for i in 0..20_000u32 {
        let mut d = HostDevice::new(PciAddress::new(i, 0, 0, 0).unwrap());
        d.parent = i.checked_sub(1).and_then(|p| PciAddress::new(p, 0, 0, 0));
        devs.push(d);
    }
    let s = Snapshot { devices: devs, ..Snapshot::default() };
    let m = model(&s, &PciIds::empty());
    assert_eq!(m.nodes.last().map(|n| n.depth), Some(19_999));
    let out = svg(&m);
    assert!(out.ends_with("</svg>\n"));
}

#[test]
fn a_group_split_by_another_groups_subtree_gets_one_cluster_per_run_with_one_colour() {
    // 00:1c.0 and 00:1c.1 share group 1; the function behind 00:1c.0 is in group 2.
    let s = snap(
        &[("00:1c.0", None), ("00:1c.1", None), ("01:00.0", Some("00:1c.0"))],
        &[(1, &["00:1c.0", "00:1c.1"]), (2, &["01:00.0"])],
    );
    let m = model(&s, &PciIds::empty());
    let l = layout(&m);
    let groups: Vec<u32> = l.clusters.iter().map(|c| c.group).collect();
    assert_eq!(groups, [1, 2, 1]);
    assert_eq!(l.clusters[0].colour, l.clusters[2].colour);
    assert_ne!(l.clusters[0].colour, l.clusters[1].colour);
    assert_eq!(svg(&m).matches(">group 1</text>").count(), 2);
}

#[test]
fn rows_and_clusters_do_not_overlap_and_text_fits() {
    let s = snap(
        &[("00:00.0", None), ("00:01.0", None), ("01:00.0", Some("00:01.0")), ("01:00.1", Some("00:01.0"))],
        &[(0, &["00:00.0"]), (1, &["00:01.0"]), (2, &["01:00.0", "01:00.1"])],
    );
    let m = model(&s, &PciIds::empty());
    let l = layout(&m);
    for w in l.rows.windows(2) {
        assert!(w[0].bottom() <= w[1].y);
    }
    for w in l.clusters.windows(2) {
        assert!(w[0].rect.bottom() <= w[1].rect.y);
    }
    for (n, r) in m.nodes.iter().zip(&l.rows) {
        assert!(px(row_cols(n), FONT) + 2 * TEXT_PAD <= r.w);
        assert!(r.x + r.w < l.label_x);
    }
    for c in &l.clusters {
        assert!(c.rect.x + c.rect.w <= l.width && c.rect.bottom() <= l.height);
    }
}

#[test]
fn long_names_are_cut_in_rows_but_kept_in_tooltips_and_dot() {
    let mut s = snap(&[("00:00.0", None)], &[]);
    s.devices[0].driver = Some("d".repeat(100));
    let mut m = model(&s, &PciIds::empty());
    m.nodes[0].name = format!("{}END", "n".repeat(200));
    let out = svg(&m);
    assert!(out.contains(&format!(
        "<tspan x=\"{}\">{}…</tspan>",
        MARGIN + PAD + TEXT_PAD + px(ADDR_COLS, FONT),
        "n".repeat(95)
    )));
    assert!(out.contains("nEND  Unknown class"), "the tooltip has the whole name");
    assert!(dot(&m).contains("nEND"));
    assert_eq!(m.nodes[0].driver.as_deref().map(cols), Some(40));
}

#[test]
fn text_is_escaped_and_cleaned() {
    assert_eq!(xml_escape("a&b<c>\"d'\u{1b}[31m\n\u{202e}"), "a&amp;b&lt;c&gt;&quot;d&apos;[31m ");
    assert_eq!(dot_escape("a\"b\\Nc\u{7}\nd"), "a\\\"b\\\\Nc d");
    assert_eq!(truncate_cols("abcdef", 4), "abc…");
    assert_eq!(cols("漢字a"), 5);
}
