//! Shared by the test modules: lab snapshots, synthetic hosts, and readers that parse the SVG and the DOT
//! back.

use std::path::{Path, PathBuf};

use iommu_graph::{Model, Title};
use iommu_host::{HostDevice, KernelGroup, KernelInfo, Snapshot, FORMAT, VERSION};
use iommu_pci::{PciAddress, PciIds};

/// A lab snapshot from `snapshots/`.
pub fn lab(name: &str) -> Snapshot {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../snapshots").join(name);
    Snapshot::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The system's pci.ids, as `iommuctl --from` uses it (empty when there is none).
pub fn system_ids() -> PciIds {
    PciIds::load_system(Path::new("/")).unwrap_or_else(PciIds::empty)
}

/// The model `iommuctl --from` draws of a snapshot: its kernel groups, its kernel release, system names.
pub fn model(s: &Snapshot) -> Model {
    Model::from_snapshot(s, &system_ids(), Title::of(s))
}

// --- reading the SVG back ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

pub struct Drawing {
    pub width: f64,
    pub height: f64,
    pub font: f64,
    /// (group, rectangle, fill).
    pub clusters: Vec<(u32, Rect, String)>,
    /// (address, rectangle, the row's text as drawn).
    pub rows: Vec<(String, Rect, String)>,
    /// Left edge of the group labels.
    pub label_x: Option<f64>,
    /// Every text node outside `<title>`, in document order.
    pub texts: Vec<String>,
}

fn num(n: roxmltree::Node, attr: &str) -> f64 {
    n.attribute(attr).unwrap_or_else(|| panic!("<{}> without {attr}", n.tag_name().name())).parse().unwrap()
}

fn rect(n: roxmltree::Node) -> Rect {
    Rect { x: num(n, "x"), y: num(n, "y"), w: num(n, "width"), h: num(n, "height") }
}

pub fn parse_svg(text: &str) -> Drawing {
    let doc = roxmltree::Document::parse(text).unwrap_or_else(|e| panic!("SVG is not well-formed XML: {e}"));
    let svg = doc.root_element();
    assert_eq!(svg.tag_name().name(), "svg");
    assert_eq!(svg.tag_name().namespace(), Some("http://www.w3.org/2000/svg"));
    let (width, height) = (num(svg, "width"), num(svg, "height"));
    assert_eq!(svg.attribute("viewBox"), Some(format!("0 0 {width} {height}").as_str()));
    let mut d = Drawing {
        width,
        height,
        font: num(svg, "font-size"),
        clusters: Vec::new(),
        rows: Vec::new(),
        label_x: None,
        texts: Vec::new(),
    };
    for n in doc.descendants() {
        match (n.tag_name().name(), n.attribute("class")) {
            ("rect", Some("cluster")) => d.clusters.push((
                n.attribute("data-group").unwrap().parse().unwrap(),
                rect(n),
                n.attribute("fill").unwrap().to_string(),
            )),
            ("rect", Some("row")) => {
                // The row's text is the next sibling element.
                let t = n.next_sibling_element().filter(|t| t.has_tag_name("text")).expect("row without text");
                let s: String =
                    t.descendants().filter(|x| x.is_text()).filter_map(|x| x.text()).collect::<Vec<_>>().join("  ");
                d.rows.push((n.attribute("data-address").unwrap().to_string(), rect(n), s));
            }
            ("text", Some("group-label")) => d.label_x = Some(num(n, "x")),
            _ => {}
        }
        if n.is_text() && !n.ancestors().any(|a| a.has_tag_name("title")) && !n.text().unwrap().trim().is_empty() {
            d.texts.push(n.text().unwrap().to_string());
        }
    }
    d
}

/// Rows in document order never overlap vertically; every row's text fits in its box at the font's real
/// advance (at most 0.61 em for the fonts named) and the boxes end left of the group labels; clusters are
/// disjoint; everything lies inside width x height.
pub fn assert_no_overlap(d: &Drawing) {
    for w in d.rows.windows(2) {
        assert!(w[0].1.y + w[0].1.h <= w[1].1.y, "rows {} and {} overlap", w[0].0, w[1].0);
    }
    for (a, r, text) in &d.rows {
        let cols = text.chars().count() as f64; // texts joined with two spaces: an upper bound of what is drawn
        assert!(cols * 0.61 * d.font <= r.w + 1.0, "{a}: {cols} columns of text in a {}-pixel box", r.w);
        if let Some(lx) = d.label_x {
            assert!(r.x + r.w < lx, "{a}: box reaches into the group labels");
        }
        assert!(r.x >= 0.0 && r.y >= 0.0 && r.x + r.w <= d.width && r.y + r.h <= d.height, "{a} outside");
    }
    let mut cl: Vec<Rect> = d.clusters.iter().map(|c| c.1).collect();
    cl.sort_by(|a, b| a.y.total_cmp(&b.y));
    for w in cl.windows(2) {
        assert!(w[0].y + w[0].h <= w[1].y, "clusters overlap: {:?} {:?}", w[0], w[1]);
    }
    for c in &cl {
        assert!(c.x >= 0.0 && c.x + c.w <= d.width && c.y + c.h <= d.height);
    }
}

// --- reading the DOT back ----------------------------------------------------------------------------------

/// Clusters (group numbers), nodes and edges of a DOT file, checking its quoting and braces as it goes.
pub fn parse_dot(text: &str) -> (Vec<u32>, Vec<String>, Vec<(String, String)>) {
    assert!(text.starts_with("digraph iommu {\n") && text.ends_with("}\n"));
    let mut depth = 0i32;
    let (mut clusters, mut nodes, mut edges) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        // Split into quoted strings and the rest; an unescaped quote toggles.
        let mut quoted = Vec::new();
        let mut rest = String::new();
        let mut cur: Option<String> = None;
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match (&mut cur, c) {
                (Some(s), '\\') => {
                    let n = chars.next().expect("backslash at end of line");
                    assert!(n == '\\' || n == '"' || n == 'n', "unexpected escape \\{n} in {line}");
                    s.push(c);
                    s.push(n);
                }
                (Some(s), '"') => {
                    quoted.push(std::mem::take(s));
                    cur = None;
                }
                (Some(s), c) => s.push(c),
                (None, '"') => cur = Some(String::new()),
                (None, c) => rest.push(c),
            }
        }
        assert!(cur.is_none(), "unterminated string: {line}");
        depth += rest.matches('{').count() as i32 - rest.matches('}').count() as i32;
        assert!(depth >= 0);
        let r = rest.trim();
        if let Some(g) = r.strip_prefix("subgraph cluster_g") {
            clusters.push(g.trim_end_matches(" {").parse().unwrap());
        } else if r.replace(' ', "") == "->;" {
            edges.push((quoted[0].clone(), quoted[1].clone()));
        } else if r.starts_with("[label=") {
            nodes.push(quoted[0].clone());
        }
    }
    assert_eq!(depth, 0);
    (clusters, nodes, edges)
}

// --- synthetic hosts ----------------------------------------------------------------------------------------

pub fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
}

/// A config space: IDs, class (base, sub), header type, and a PCIe capability of type `pcie_type`.
pub fn config(vendor: u16, device: u16, class: [u8; 2], header: u8, pcie_type: Option<u8>) -> Vec<u8> {
    let mut c = vec![0u8; 256];
    c[0..2].copy_from_slice(&vendor.to_le_bytes());
    c[2..4].copy_from_slice(&device.to_le_bytes());
    c[0x0b] = class[0];
    c[0x0a] = class[1];
    c[0x0e] = header;
    if let Some(t) = pcie_type {
        c[6] = 0x10;
        c[0x34] = 0x40;
        c[0x40] = 0x10;
        c[0x42] = t << 4 | 2;
    }
    c
}

pub fn snapshot(devices: Vec<HostDevice>, groups: Vec<KernelGroup>) -> Snapshot {
    Snapshot {
        format: FORMAT.into(),
        version: VERSION,
        kernel: KernelInfo { release: Some("6.12.0-test".into()), cmdline: None, ..KernelInfo::default() },
        iommu_units: vec!["dmar0".into()],
        acpi_tables: vec!["DMAR".into()],
        groups,
        devices,
        readiness: None,
        unreadable: Vec::new(),
        firmware: None,
    }
}
/// 40 root ports (two functions per slot, the pair sharing one group, so each group is split by the
/// subtree of its first port), each with a switch (upstream port, four downstream ports) and a two-function
/// NIC below every downstream port: 1 + 40 x 14 = 561 functions.
pub fn big_host() -> Snapshot {
    let mut devs =
        vec![HostDevice { config: config(0x8086, 0x2020, [6, 0], 0, None), ..HostDevice::new(a("00:00.0")) }];
    let mut groups: Vec<Vec<PciAddress>> = vec![vec![a("00:00.0")]];
    let mut bus = 1u8;
    let mut pair = 0;
    for port in 0..40u8 {
        let rp = PciAddress::new(0, 0, 1 + port / 2, port % 2).unwrap();
        let drv = |d: &str| Some(d.to_string());
        devs.push(HostDevice {
            config: config(0x8086, 0x2030, [6, 4], 0x81, Some(4)),
            driver: drv("pcieport"),
            ..HostDevice::new(rp)
        });
        if port % 2 == 0 {
            pair = groups.len();
            groups.push(vec![rp]);
        } else {
            groups[pair].push(rp);
        }
        let up = PciAddress::new(0, bus, 0, 0).unwrap();
        devs.push(HostDevice {
            parent: Some(rp),
            config: config(0x10b5, 0x8747, [6, 4], 1, Some(5)),
            driver: drv("pcieport"),
            ..HostDevice::new(up)
        });
        let mut up_group = vec![up];
        for dp in 0..4u8 {
            let down = PciAddress::new(0, bus + 1, dp, 0).unwrap();
            devs.push(HostDevice {
                parent: Some(up),
                config: config(0x10b5, 0x8747, [6, 4], 1, Some(6)),
                driver: drv("pcieport"),
                ..HostDevice::new(down)
            });
            up_group.push(down);
            let nic_bus = bus + 2 + dp;
            let mut g = Vec::new();
            for f in 0..2 {
                let nic = PciAddress::new(0, nic_bus, 0, f).unwrap();
                devs.push(HostDevice {
                    parent: Some(down),
                    config: config(0x8086, 0x1572, [2, 0], 0x80, Some(0)),
                    driver: if f == 0 { drv("i40e") } else { drv("vfio-pci") },
                    ..HostDevice::new(nic)
                });
                g.push(nic);
            }
            groups.push(g);
        }
        groups.push(up_group);
        bus += 6;
    }
    let groups = groups
        .into_iter()
        .enumerate()
        .map(|(i, mut m)| {
            m.sort();
            KernelGroup { id: i as u32, kind: Some("DMA".into()), reserved_regions: vec![], devices: m }
        })
        .collect();
    snapshot(devs, groups)
}
