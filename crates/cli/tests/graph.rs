//! Claims about `iommuctl graph`: the SVG is well-formed, has one cluster per kernel group and one label per
//! function, stays free of overlaps on a host with hundreds of functions, and escapes what the system says;
//! the DOT has one cluster per group and one edge per function below a bridge; and headless Chromium draws
//! the SVG with the cluster colours where the layout put them.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use iommu_host::{HostDevice, KernelGroup, KernelInfo, Snapshot, FORMAT, VERSION};
use iommu_pci::PciAddress;
use serde_json::Value;

fn lab(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../snapshots").join(name)
}

fn iommuctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iommuctl")).args(args).env("NO_COLOR", "1").output().unwrap()
}

fn ok_text(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn from(snap: &Path, args: &[&str]) -> String {
    ok_text(&iommuctl(&[&["--from", snap.to_str().unwrap()], args].concat()))
}

/// The target directory (`CARGO_TARGET_DIR` or the workspace's `target/`): two levels above the binary.
fn target_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_iommuctl"));
    bin.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir)
}

// --- reading the SVG back ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

struct Drawing {
    width: f64,
    height: f64,
    font: f64,
    /// (group, rectangle, fill).
    clusters: Vec<(u32, Rect, String)>,
    /// (address, rectangle, the row's text as drawn).
    rows: Vec<(String, Rect, String)>,
    /// Left edge of the group labels.
    label_x: Option<f64>,
    /// Every text node outside `<title>`, in document order.
    texts: Vec<String>,
}

fn num(n: roxmltree::Node, attr: &str) -> f64 {
    n.attribute(attr).unwrap_or_else(|| panic!("<{}> without {attr}", n.tag_name().name())).parse().unwrap()
}

fn rect(n: roxmltree::Node) -> Rect {
    Rect { x: num(n, "x"), y: num(n, "y"), w: num(n, "width"), h: num(n, "height") }
}

fn parse_svg(text: &str) -> Drawing {
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

fn list_groups(snap: &Path) -> BTreeMap<u64, Vec<Value>> {
    let v: Value = serde_json::from_str(&from(snap, &["--json", "list"])).unwrap();
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["id"].as_u64().unwrap(), g["devices"].as_array().unwrap().clone()))
        .collect()
}

/// Rows in document order never overlap vertically; every row's text fits in its box at the font's real
/// advance (at most 0.61 em for the fonts named) and the boxes end left of the group labels; clusters are
/// disjoint; everything lies inside width x height.
fn assert_no_overlap(d: &Drawing) {
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

// --- synthetic hosts ----------------------------------------------------------------------------------------

fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn config(vendor: u16, device: u16, class: [u8; 2], header: u8, pcie_type: Option<u8>) -> Vec<u8> {
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

fn snapshot(devices: Vec<HostDevice>, groups: Vec<KernelGroup>) -> Snapshot {
    Snapshot {
        format: FORMAT.into(),
        version: VERSION,
        kernel: KernelInfo { release: Some("6.12.0-test".into()), cmdline: None },
        iommu_units: vec!["dmar0".into()],
        acpi_tables: vec!["DMAR".into()],
        groups,
        devices,
        readiness: None,
        unreadable: Vec::new(),
    }
}

/// 40 root ports (two functions per slot, the pair sharing one group, so each group is split by the
/// subtree of its first port), each with a switch (upstream port, four downstream ports) and a two-function
/// NIC below every downstream port: 1 + 40 x 14 = 561 functions.
fn big_host() -> Snapshot {
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

fn write_snapshot(dir: &Path, s: &Snapshot) -> PathBuf {
    let f = dir.join("host.json");
    std::fs::write(&f, s.to_json()).unwrap();
    f
}

// --- SVG ----------------------------------------------------------------------------------------------------

#[test]
fn svg_of_lab_everything_has_one_cluster_per_group_and_every_address_once() {
    let snap = lab("lab-everything.json");
    let d = parse_svg(&from(&snap, &["graph"]));
    let groups = list_groups(&snap);
    assert_eq!(groups.len(), 25);
    let drawn: BTreeSet<u64> = d.clusters.iter().map(|c| u64::from(c.0)).collect();
    assert_eq!(drawn, groups.keys().copied().collect::<BTreeSet<_>>());
    // Every group of this host is contiguous in tree order: exactly one rectangle each.
    assert_eq!(d.clusters.len(), 25);
    let devices: Vec<&Value> = groups.values().flatten().collect();
    assert_eq!(d.rows.len(), devices.len());
    for dev in devices {
        let addr = dev["address"].as_str().unwrap();
        assert_eq!(d.texts.iter().filter(|t| *t == addr).count(), 1, "{addr} must be labelled exactly once");
        let row = d.rows.iter().find(|r| r.0 == addr).unwrap();
        if let (Some(v), Some(n)) = (dev["vendor"].as_str(), dev["device_name"].as_str()) {
            assert!(row.2.contains(&format!("{v} {n}")), "{addr}: {}", row.2);
        }
        if let Some(drv) = dev["driver"].as_str() {
            assert!(row.2.contains(&format!("[{drv}]")), "{addr}: {}", row.2);
        }
    }
    // A function's row lies inside the cluster of its group.
    for (g, members) in &groups {
        for m in members {
            let r = d.rows.iter().find(|r| r.0 == m["address"].as_str().unwrap()).unwrap().1;
            assert!(
                d.clusters.iter().any(|c| u64::from(c.0) == *g
                    && c.1.x <= r.x
                    && r.x + r.w <= c.1.x + c.1.w
                    && c.1.y <= r.y
                    && r.y + r.h <= c.1.y + c.1.h),
                "{} outside the cluster of group {g}",
                m["address"]
            );
        }
    }
    assert_no_overlap(&d);
    assert!(d.texts[0].contains("kernel 6.1.0-56-amd64") && d.texts[0].contains("38 PCI functions, 25 groups"));
}

#[test]
fn a_host_with_hundreds_of_functions_renders_without_overlaps() {
    let t = tempfile::tempdir().unwrap();
    let s = big_host();
    assert!(s.devices.len() >= 500);
    let f = write_snapshot(t.path(), &s);
    let started = Instant::now();
    let text = from(&f, &["graph"]);
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
    let t = tempfile::tempdir().unwrap();
    let mut s = big_host();
    s.groups.clear();
    let d = parse_svg(&from(&write_snapshot(t.path(), &s), &["graph"]));
    assert!(d.clusters.is_empty());
    assert_eq!(d.rows.len(), s.devices.len());
    assert!(d.texts.iter().any(|t| t.contains("No IOMMU groups (IOMMU off or absent)")), "{:?}", &d.texts[..2]);
    assert_no_overlap(&d);
}

#[test]
fn output_file_is_written_atomically_and_json_is_refused() {
    let snap = lab("lab-switch.json");
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("g.svg");
    let o = iommuctl(&["--from", snap.to_str().unwrap(), "graph", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), from(&snap, &["graph", "--format", "svg"]));
    let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["g.svg"], "no temporary file left behind");
    let o = iommuctl(&["--from", snap.to_str().unwrap(), "--json", "graph"]);
    assert_eq!(o.status.code(), Some(2));
    let o = iommuctl(&["--from", snap.to_str().unwrap(), "graph", "-o", "/nonexistent-dir/g.svg"]);
    assert_eq!(o.status.code(), Some(4));
}

// --- DOT ----------------------------------------------------------------------------------------------------

/// (clusters, node ids, edges) of a DOT file, checking that braces balance and quotes close on each line.
fn parse_dot(text: &str) -> (Vec<u32>, Vec<String>, Vec<(String, String)>) {
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

#[test]
fn dot_has_one_cluster_per_group_and_one_edge_per_device_below_a_bridge() {
    let t = tempfile::tempdir().unwrap();
    let big = write_snapshot(t.path(), &big_host());
    for snap in [lab("lab-everything.json"), lab("lab-amd-mixed.json"), big] {
        let (clusters, nodes, edges) = parse_dot(&from(&snap, &["graph", "--format", "dot"]));
        let s = Snapshot::load(&snap).unwrap();
        let ids: BTreeSet<u32> = s.groups.iter().map(|g| g.id).collect();
        assert_eq!(clusters.len(), ids.len(), "{}", snap.display());
        assert_eq!(clusters.iter().copied().collect::<BTreeSet<_>>(), ids);
        let mut n = nodes.clone();
        n.sort();
        let want: Vec<String> = s.devices.iter().map(|d| d.address.to_string()).collect();
        assert_eq!(n, want, "one node per function");
        let mut want_edges: Vec<(String, String)> = s
            .devices
            .iter()
            .filter_map(|d| Some((d.parent.filter(|p| s.device(*p).is_some())?.to_string(), d.address.to_string())))
            .collect();
        want_edges.sort();
        let mut e = edges.clone();
        e.sort();
        assert_eq!(e, want_edges, "{}", snap.display());
    }
}

// --- hostile input ------------------------------------------------------------------------------------------

const EVIL_VENDOR: &str = "Evil <Corp> & \"Sons\" 'Ltd' \\N";
const EVIL_DEVICE: &str = "Dev\x1b[31m]]> <!-- --> \u{202e}</text><script>alert(1)</script>";
const EVIL_DRIVER: &str = "drv<&>\"'\x1b\x07\\l";

/// A sysfs tree: a bridge 00:01.0 and behind it f00d:0bad with a hostile driver name, named by a hostile
/// pci.ids, in group 3 whose type and the kernel release are hostile too.
fn hostile_tree(root: &Path) {
    let w = |p: PathBuf, s: &[u8]| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    w(root.join("usr/share/misc/pci.ids"), format!("f00d  {EVIL_VENDOR}\n\t0bad  {EVIL_DEVICE}\n").as_bytes());
    w(root.join("proc/sys/kernel/osrelease"), b"6.1<b>&\x1b[2J\n");
    let bus = root.join("sys/bus/pci/devices");
    std::fs::create_dir_all(&bus).unwrap();
    let bridge = root.join("sys/devices/pci0000:00/0000:00:01.0");
    let ep = bridge.join("0000:01:00.0");
    for (dir, cfg) in
        [(&bridge, config(0x8086, 0x2030, [6, 4], 1, Some(4))), (&ep, config(0xf00d, 0x0bad, [2, 0], 0, Some(0)))]
    {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config"), cfg).unwrap();
        let name = dir.file_name().unwrap();
        symlink(dir, bus.join(name)).unwrap();
        let g = root.join("sys/kernel/iommu_groups/3");
        std::fs::create_dir_all(g.join("devices")).unwrap();
        std::fs::write(g.join("type"), "DMA<\"&\">\x1b\n").unwrap();
        symlink(&g, dir.join("iommu_group")).unwrap();
        symlink(dir, g.join("devices").join(name)).unwrap();
    }
    let drv = root.join("sys/bus/pci/drivers").join(EVIL_DRIVER);
    std::fs::create_dir_all(&drv).unwrap();
    symlink(&drv, ep.join("driver")).unwrap();
}

#[test]
fn hostile_names_drivers_and_releases_are_escaped() {
    let t = tempfile::tempdir().unwrap();
    hostile_tree(t.path());
    let root = t.path().to_str().unwrap();
    let svg = ok_text(&iommuctl(&["--root", root, "graph"]));
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

    let dot = ok_text(&iommuctl(&["--root", root, "graph", "--format", "dot"]));
    assert!(!dot.chars().any(|c| c.is_control() && c != '\n'), "control characters in the DOT");
    let (clusters, nodes, edges) = parse_dot(&dot);
    assert_eq!((clusters, nodes.len(), edges.len()), (vec![3], 2, 1));
    assert!(dot.contains(r#"Evil <Corp> & \"Sons\" 'Ltd' \\N"#), "{dot}");
    assert!(dot.contains(r#"[drv<&>\"'\\l]"#), "{dot}");
    assert!(dot.contains(r#"label="group 3 (DMA<\"&\">)""#), "{dot}");
}

#[test]
fn hostile_snapshot_strings_are_escaped() {
    let t = tempfile::tempdir().unwrap();
    let mut s = big_host();
    s.devices.truncate(3);
    s.devices[1].driver = Some("a\0b<\u{ffff}>&\"".into());
    s.kernel.release = Some("x\u{1b}]0;title\u{7}'".into());
    s.groups.retain(|g| g.devices.iter().all(|a| s.devices.iter().any(|d| d.address == *a)));
    let f = write_snapshot(t.path(), &s);
    let svg = from(&f, &["graph"]);
    let d = parse_svg(&svg);
    assert!(d.rows[1].2.contains("[ab<>&\"]"), "{}", d.rows[1].2);
    assert!(d.texts[0].contains("kernel x]0;title'"));
    parse_dot(&from(&f, &["graph", "--format", "dot"]));
}

// --- what a person sees: headless Chromium -------------------------------------------------------------------

fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IOMMUCTL_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// Runs `cmd` with a time limit; true when it exited 0 in time.
fn run_with_timeout(cmd: &mut Command, limit: Duration) -> bool {
    let Ok(mut child) = cmd.spawn() else { return false };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// Screenshots `svg` (its width x height) into `png`; tries `--headless`, then `--headless=new`.
fn screenshot(chromium: &Path, svg: &Path, png: &Path, w: u32, h: u32, work: &Path) -> Result<(), String> {
    let mut log = String::new();
    for headless in ["--headless", "--headless=new"] {
        let profile = tempfile::tempdir_in(work).unwrap();
        let err_path = work.join("chromium.stderr");
        let _ = std::fs::remove_file(png);
        let mut cmd = Command::new(chromium);
        cmd.args([
            headless,
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={w},{h}"))
        .arg(format!("file://{}", svg.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap());
        let ok = run_with_timeout(&mut cmd, Duration::from_secs(120));
        if ok && png.is_file() {
            return Ok(());
        }
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        log.push_str(&format!("{headless}: exited ok={ok}, png={}; stderr tail: {tail:?}\n", png.is_file()));
    }
    Err(log)
}

struct Image {
    w: u32,
    h: u32,
    rgb: Vec<[u8; 3]>,
}

impl Image {
    fn load(p: &Path) -> Image {
        let mut dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(p).unwrap()));
        dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        let bytes = &buf[..info.buffer_size()];
        let rgb = match info.color_type {
            png::ColorType::Rgb => bytes.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect(),
            png::ColorType::Rgba => bytes.chunks_exact(4).map(|p| [p[0], p[1], p[2]]).collect(),
            png::ColorType::Grayscale => bytes.iter().map(|&g| [g, g, g]).collect(),
            png::ColorType::GrayscaleAlpha => bytes.chunks_exact(2).map(|p| [p[0], p[0], p[0]]).collect(),
            other => panic!("unexpected PNG colour type {other:?}"),
        };
        Image { w: info.width, h: info.height, rgb }
    }

    fn at(&self, x: f64, y: f64) -> [u8; 3] {
        let (x, y) = (x as u32, y as u32);
        assert!(x < self.w && y < self.h, "({x},{y}) outside the {}x{} screenshot", self.w, self.h);
        self.rgb[(y * self.w + x) as usize]
    }

    /// Pixels in [x0, x1) x [y0, y1) for which `f` holds.
    fn count(&self, x0: f64, x1: f64, y0: f64, y1: f64, f: impl Fn([u8; 3]) -> bool) -> usize {
        let mut n = 0;
        for y in y0 as u32..y1 as u32 {
            for x in x0 as u32..x1 as u32 {
                n += usize::from(f(self.at(f64::from(x), f64::from(y))));
            }
        }
        n
    }
}

fn hex(c: &str) -> [u8; 3] {
    let v = u32::from_str_radix(c.trim_start_matches('#'), 16).unwrap();
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

fn near(a: [u8; 3], b: [u8; 3], tol: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tol)
}

const WHITE: [u8; 3] = [255, 255, 255];

fn dark(p: [u8; 3]) -> bool {
    p.iter().all(|&c| c < 110)
}

#[test]
fn chromium_draws_the_clusters_where_the_layout_put_them() {
    let Some(chromium) = find_chromium() else {
        let required = std::env::var("CI").is_ok_and(|v| v == "true")
            || std::env::var("IOMMU_LAB_REQUIRED").is_ok_and(|v| v == "1");
        assert!(!required, "chromium not found on PATH (set IOMMUCTL_CHROMIUM, or run scripts/lab-setup)");
        println!("SKIPPED: chromium not found on PATH; install it (scripts/lab-setup does) to check the drawing");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let svg = work.path().join("graph.svg");
    let out = work.path().join("graph.png");
    let snap = lab("lab-everything.json");
    ok_text(&iommuctl(&["--from", snap.to_str().unwrap(), "graph", "-o", svg.to_str().unwrap()]));
    let d = parse_svg(&std::fs::read_to_string(&svg).unwrap());
    let (w, h) = (d.width as u32, d.height as u32);
    screenshot(&chromium, &svg, &out, w, h, work.path()).unwrap_or_else(|e| panic!("chromium failed:\n{e}"));
    let saved = target_dir().join("graph-screenshot.png");
    let _ = std::fs::copy(&out, &saved);
    println!("screenshot: {}", saved.display());
    let img = Image::load(&out);
    assert_eq!((img.w, img.h), (w, h), "screenshot size");

    // White background in the corners and below the last row.
    for (x, y) in [(1.0, 1.0), (d.width - 2.0, 1.0), (1.0, d.height - 2.0), (d.width - 2.0, d.height - 2.0)] {
        assert_eq!(img.at(x, y), WHITE, "background at ({x},{y})");
    }
    // Each cluster's colour fills its right end (beside its label, away from rows and connectors), and
    // the cluster reads as a region of that colour: most of a strip down its right edge has it.
    let mut colours = BTreeSet::new();
    for (g, r, fill) in &d.clusters {
        let want = hex(fill);
        let (x, y) = (r.x + r.w - 4.0, r.y + r.h / 2.0);
        assert!(near(img.at(x, y), want, 6), "group {g}: {:?} at ({x},{y}), want {fill}", img.at(x, y));
        let strip = img.count(r.x + r.w - 6.0, r.x + r.w - 2.0, r.y + 6.0, r.y + r.h - 6.0, |p| near(p, want, 6));
        let area = (4.0 * (r.h - 12.0)) as usize;
        assert!(strip * 10 >= area * 9, "group {g}: {strip} of {area} pixels in its colour");
        colours.insert(want);
        // Between the rows' right edge and the cluster's label column there is only the cluster colour.
        let lx = d.label_x.unwrap();
        let row_right = d.rows.iter().map(|r| r.1.x + r.1.w).fold(0.0, f64::max);
        assert_eq!(img.count(row_right + 2.0, lx - 2.0, r.y + 4.0, r.y + r.h - 4.0, |p| !near(p, want, 6)), 0);
    }
    assert!(colours.len() >= 10, "clusters should come in clearly different colours: {colours:?}");
    // Rows: white boxes with dark text, and no text spilling past the box's right padding.
    for (a, r, _) in &d.rows {
        let inside = img.count(r.x + 2.0, r.x + r.w - 2.0, r.y + 2.0, r.y + r.h - 2.0, dark);
        assert!(inside >= 60, "{a}: only {inside} dark pixels in its box (text not drawn?)");
        assert!(near(img.at(r.x + r.w - 3.0, r.y + r.h / 2.0), WHITE, 3), "{a}: box not white at its right end");
        let spill = img.count(r.x + r.w - 4.0, r.x + r.w - 1.0, r.y + 2.0, r.y + r.h - 2.0, dark);
        assert_eq!(spill, 0, "{a}: text reaches the right edge of its box");
    }
}
