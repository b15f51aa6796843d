//! `graph`: the PCI tree with the kernel's IOMMU groups drawn as coloured clusters, as SVG (drawn here, no
//! Graphviz needed) or as Graphviz DOT.
//!
//! The SVG is an indented tree, one row per function in depth-first order (each bridge followed by the
//! functions behind it), so a host with thousands of functions stays a readable list instead of a wide
//! graph. Each row is a box labelled `DDDD:BB:DD.F  name  [driver]`; a connector runs from every bridge to
//! its children; each IOMMU group is a coloured, labelled rectangle behind its member rows (one rectangle
//! per contiguous run of members, same colour and label). Widths come from the longest label at a fixed
//! monospace advance, so nothing overlaps.
//!
//! Every rectangle carries a class (`cluster`, `row`) and its group or address as `data-*` attributes, so
//! tests (and scripts) can find what the layout placed where.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use iommu_host::Snapshot;
use iommu_pci::{PciAddress, PciIds};

use crate::config::Origin;
use crate::output::Outcome;
use crate::render::names;
use crate::source::{configs, Source};

/// Output formats of `graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// SVG drawn by iommuctl: an indented PCI tree with IOMMU groups as coloured clusters.
    Svg,
    /// Graphviz DOT: one `cluster_gN` subgraph per group, an edge from each bridge to each child.
    Dot,
}

/// Font size of row text, in pixels.
const FONT: u32 = 12;
/// Font size of the title line.
const TITLE_FONT: u32 = 14;
/// Assumed advance of one monospace column, as a fraction of the font size. Common monospace fonts
/// (DejaVu Sans Mono, Menlo, Consolas, Courier) advance 0.55–0.61 em; a little more leaves slack.
const ADVANCE: f64 = 0.625;
/// Height of one row.
const ROW_H: u32 = 24;
/// Height of a row's box, and its offset from the row's top.
const BOX_H: u32 = 18;
const BOX_DY: u32 = 3;
/// Indentation per tree level.
const INDENT: u32 = 20;
/// Space around the drawing.
const MARGIN: u32 = 16;
/// Padding of a cluster around its rows.
const PAD: u32 = 8;
/// Padding between a box's edge and its text.
const TEXT_PAD: u32 = 6;
/// Gap between the right edge of the boxes and the group labels.
const LABEL_GAP: u32 = 12;
/// Height of the title block above the first row.
const HEADER_H: u32 = 52;
/// The longest name drawn in a row, in columns; longer ones are cut with an ellipsis (the full text is in
/// the row's tooltip and in DOT labels).
const MAX_NAME_COLS: usize = 96;
/// The longest name kept at all (pci.ids names are under 200 columns; this bounds hostile input).
const MAX_FULL_NAME_COLS: usize = 512;
/// Columns of `DDDD:BB:DD.F` plus the two spaces after it (wider domains are measured).
const ADDR_COLS: usize = 14;

/// Cluster colours: (fill, stroke and label), clearly distinct hues, cycled in order of first appearance.
pub const PALETTE: [(&str, &str); 12] = [
    ("#b9d4f0", "#1f5f9e"), // blue
    ("#fcd2a4", "#b35900"), // orange
    ("#bfe6b8", "#2a7a2a"), // green
    ("#f4b8b9", "#b02a2c"), // red
    ("#d5c4ec", "#6a46a0"), // purple
    ("#ade3e3", "#0f7373"), // teal
    ("#f2e29b", "#8a7000"), // yellow
    ("#f5bddd", "#a8337a"), // pink
    ("#dcc5ae", "#7a4e24"), // brown
    ("#d0d0d0", "#555555"), // grey
    ("#d6ec9f", "#5a7a10"), // lime
    ("#bcc3f0", "#3543a8"), // indigo
];
/// Stroke of a function that is in no group.
const LOOSE_STROKE: &str = "#9a9a9a";
/// Text colour.
const INK: &str = "#1a1a1a";
/// Driver text colour.
const DRIVER_INK: &str = "#555555";
/// Connector colour.
const CONNECTOR: &str = "#7a7a7a";

/// One function as drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Address.
    pub address: PciAddress,
    /// Index (into [`Model::nodes`]) of the bridge it hangs below in the drawing; `None` at the top level.
    pub parent: Option<usize>,
    /// Tree depth (0 on a root bus).
    pub depth: usize,
    /// Vendor and device name from pci.ids, or `[vvvv:dddd]`; cleaned of control characters. Rows show
    /// at most [`MAX_NAME_COLS`] of it.
    pub name: String,
    /// Class, e.g. `PCI bridge [0604]`; cleaned.
    pub class: String,
    /// Bound driver; cleaned.
    pub driver: Option<String>,
    /// The kernel's IOMMU group, when it has one.
    pub group: Option<u32>,
}

/// What is drawn: the functions in depth-first tree order, and the facts for the title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// Functions in depth-first order: each bridge is followed by the functions behind it.
    pub nodes: Vec<Node>,
    /// `uname -r` of the host, cleaned.
    pub kernel: Option<String>,
    /// Number of kernel groups that have at least one drawn member.
    pub groups: usize,
    /// Default domain type per group (`DMA`, `identity`, ...), cleaned.
    pub group_types: HashMap<u32, String>,
}

/// Removes what must not reach an SVG, a DOT file or a terminal: control characters (newlines and tabs
/// become spaces), bidirectional overrides and the non-characters U+FFFE/U+FFFF (not allowed in XML).
pub fn clean(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            '\n' | '\r' | '\t' => Some(' '),
            c if iommu_pci::text::is_unsafe_char(c) => None,
            c => Some(c),
        })
        .collect()
}

/// Escapes text for XML content and attribute values (after [`clean`]).
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in clean(s).chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// Escapes text for a double-quoted DOT string (after [`clean`]). Backslashes are doubled so that
/// Graphviz's escapes (`\N`, `\l`, `\G`, ...) cannot be smuggled in through a name.
pub fn dot_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in clean(s).chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            c => o.push(c),
        }
    }
    o
}

/// Display columns of a character in a monospace font: 2 for East Asian wide and emoji ranges, else 1.
fn char_cols(c: char) -> usize {
    match u32::from(c) {
        0x1100..=0x115f
        | 0x2e80..=0xa4cf
        | 0xac00..=0xd7a3
        | 0xf900..=0xfaff
        | 0xfe30..=0xfe4f
        | 0xff00..=0xff60
        | 0xffe0..=0xffe6
        | 0x1f300..=0x1faff
        | 0x20000..=0x3fffd => 2,
        _ => 1,
    }
}

/// Display columns of a string.
pub fn cols(s: &str) -> usize {
    s.chars().map(char_cols).sum()
}

/// Cuts `s` to at most `max` columns, ending in `…` when cut.
fn truncate_cols(s: &str, max: usize) -> String {
    if cols(s) <= max {
        return s.to_string();
    }
    let mut o = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = char_cols(c);
        if used + w > max.saturating_sub(1) {
            break;
        }
        used += w;
        o.push(c);
    }
    o.push('…');
    o
}

/// Pixels for `n` columns at font size `font`, rounded up.
fn px(n: usize, font: u32) -> u32 {
    let w = (n as f64 * f64::from(font) * ADVANCE).ceil();
    if w >= f64::from(u32::MAX / 4) {
        u32::MAX / 4
    } else {
        w as u32
    }
}

/// The name shown for a function: `Vendor Device` from pci.ids; `Vendor [vvvv:dddd]` when only the vendor
/// is known; `[vvvv:dddd]` otherwise.
fn display_name(n: &crate::render::Names) -> String {
    let ids = format!("[{}:{}]", n.vendor_id, n.device_id);
    let s = match (&n.vendor, &n.device) {
        (Some(v), Some(d)) => format!("{v} {d}"),
        (Some(v), None) => format!("{v} {ids}"),
        _ => ids,
    };
    clean(&s)
}

/// Builds the drawing model: functions in depth-first order below their bridges, root buses in address
/// order, children in address order. Duplicate addresses are drawn once; a parent that is not on the host
/// (or a parent loop in a damaged snapshot) puts the function at the top level.
pub fn model(snap: &Snapshot, ids: &PciIds) -> Model {
    let cfgs = configs(snap);
    let mut devs: Vec<&iommu_host::HostDevice> = snap.devices.iter().collect();
    devs.sort_by_key(|d| d.address);
    devs.dedup_by_key(|d| d.address);
    let index: HashMap<PciAddress, usize> = devs.iter().enumerate().map(|(i, d)| (d.address, i)).collect();
    let mut group_of: HashMap<PciAddress, u32> = HashMap::new();
    let mut group_types = HashMap::new();
    for g in &snap.groups {
        for a in &g.devices {
            group_of.entry(*a).or_insert(g.id);
        }
        if let Some(k) = &g.kind {
            group_types.entry(g.id).or_insert_with(|| clean(k));
        }
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); devs.len()];
    let mut roots = Vec::new();
    for (i, d) in devs.iter().enumerate() {
        match d.parent.and_then(|p| index.get(&p)).copied() {
            Some(p) if p != i => children[p].push(i),
            _ => roots.push(i),
        }
    }
    // Depth-first, iteratively (a deep chain of bridges must not overflow the stack). Functions left
    // unvisited sit on a parent loop: each starts a tree of its own at the top level.
    let mut order: Vec<(usize, Option<usize>, usize)> = Vec::with_capacity(devs.len());
    let mut visited = vec![false; devs.len()];
    let mut pending_roots = roots.into_iter();
    let mut next_unvisited = 0;
    loop {
        let start = match pending_roots.next() {
            Some(r) => r,
            None => {
                while next_unvisited < devs.len() && visited[next_unvisited] {
                    next_unvisited += 1;
                }
                if next_unvisited == devs.len() {
                    break;
                }
                next_unvisited
            }
        };
        if visited[start] {
            continue;
        }
        let mut stack = vec![(start, None, 0usize)];
        visited[start] = true;
        while let Some((i, parent_pos, depth)) = stack.pop() {
            let pos = order.len();
            order.push((i, parent_pos, depth));
            for &c in children[i].iter().rev() {
                if !visited[c] {
                    visited[c] = true;
                    stack.push((c, Some(pos), depth + 1));
                }
            }
        }
    }
    let nodes: Vec<Node> = order
        .into_iter()
        .map(|(i, parent, depth)| {
            let d = devs[i];
            let n = names(ids, cfgs.get(&d.address));
            Node {
                address: d.address,
                parent,
                depth,
                name: truncate_cols(&display_name(&n), MAX_FULL_NAME_COLS),
                class: clean(&n.class_text()),
                driver: d.driver.as_deref().map(|s| truncate_cols(&clean(s), 40)),
                group: group_of.get(&d.address).copied(),
            }
        })
        .collect();
    let mut drawn_groups: Vec<u32> = nodes.iter().filter_map(|n| n.group).collect();
    drawn_groups.sort_unstable();
    drawn_groups.dedup();
    Model {
        nodes,
        kernel: snap.kernel.release.as_deref().map(|k| truncate_cols(&clean(k), 80)),
        groups: drawn_groups.len(),
        group_types,
    }
}

/// A rectangle in SVG user units (pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

impl Rect {
    /// Bottom edge (exclusive).
    pub fn bottom(&self) -> u32 {
        self.y + self.h
    }
}

/// One cluster rectangle: a contiguous run of a group's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Group number.
    pub group: u32,
    /// Index into [`PALETTE`].
    pub colour: usize,
    /// First and last node (inclusive) of the run.
    pub first: usize,
    /// Last node of the run.
    pub last: usize,
    /// Where it is drawn.
    pub rect: Rect,
}

/// Where everything goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Total width.
    pub width: u32,
    /// Total height.
    pub height: u32,
    /// One box per node, same order.
    pub rows: Vec<Rect>,
    /// Cluster rectangles, top to bottom.
    pub clusters: Vec<Cluster>,
    /// Left edge of the group labels.
    pub label_x: u32,
}

/// The name as a row shows it.
fn shown_name(n: &Node) -> String {
    truncate_cols(&n.name, MAX_NAME_COLS)
}

/// Columns of a row's label: address, name and `[driver]`.
fn row_cols(n: &Node) -> usize {
    let addr = cols(&n.address.to_string()) + 2;
    let driver = n.driver.as_deref().map_or(0, |d| cols(d) + 4);
    addr.max(ADDR_COLS) + cols(&shown_name(n)) + driver
}

/// The title lines.
fn title_lines(m: &Model) -> (String, String) {
    let kernel = m.kernel.as_deref().unwrap_or("unknown");
    let loose = m.nodes.iter().filter(|n| n.group.is_none()).count();
    let first = format!(
        "IOMMU groups: kernel {kernel}, {} PCI function{}, {} group{}",
        m.nodes.len(),
        if m.nodes.len() == 1 { "" } else { "s" },
        m.groups,
        if m.groups == 1 { "" } else { "s" }
    );
    let second = if m.groups == 0 {
        "No IOMMU groups (IOMMU off or absent): functions are drawn without clusters. Indented rows sit behind \
         the bridge above them."
            .to_string()
    } else if loose > 0 {
        format!(
            "Each coloured cluster is one IOMMU group; indented rows sit behind the bridge above them. {loose} \
             function{} in no group (grey).",
            if loose == 1 { "" } else { "s" }
        )
    } else {
        "Each coloured cluster is one IOMMU group; indented rows sit behind the bridge above them.".to_string()
    };
    (first, second)
}

/// Computes the layout of a model.
pub fn layout(m: &Model) -> Layout {
    let top = MARGIN + HEADER_H;
    let box_x = |depth: usize| -> u32 {
        let d = u32::try_from(depth).unwrap_or(u32::MAX).min(u32::MAX / (4 * INDENT));
        MARGIN + PAD + d * INDENT
    };
    let row_top = |i: usize| -> u32 { top + u32::try_from(i).unwrap_or(u32::MAX / 4).min(u32::MAX / 64) * ROW_H };
    let right = m
        .nodes
        .iter()
        .map(|n| box_x(n.depth).saturating_add(px(row_cols(n), FONT) + 2 * TEXT_PAD))
        .max()
        .unwrap_or(MARGIN + PAD);
    let rows: Vec<Rect> = m
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let x = box_x(n.depth);
            Rect { x, y: row_top(i) + BOX_DY, w: right - x, h: BOX_H }
        })
        .collect();
    let label_cols = m.nodes.iter().filter_map(|n| n.group).map(|g| cols(&format!("group {g}"))).max().unwrap_or(0);
    let label_x = right + LABEL_GAP;
    let cluster_right = label_x + px(label_cols, FONT) + PAD;
    // Runs of consecutive rows in the same group; colours in order of each group's first appearance.
    let mut colour_of: HashMap<u32, usize> = HashMap::new();
    let mut clusters: Vec<Cluster> = Vec::new();
    let mut i = 0;
    while i < m.nodes.len() {
        let Some(g) = m.nodes[i].group else {
            i += 1;
            continue;
        };
        let mut j = i;
        while j + 1 < m.nodes.len() && m.nodes[j + 1].group == Some(g) {
            j += 1;
        }
        let next = colour_of.len();
        let colour = *colour_of.entry(g).or_insert(next % PALETTE.len());
        let x = (i..=j).map(|k| rows[k].x).min().unwrap_or(MARGIN + PAD) - PAD;
        let y = row_top(i) + 1;
        let h = row_top(j) + ROW_H - 1 - y;
        clusters.push(Cluster { group: g, colour, first: i, last: j, rect: Rect { x, y, w: cluster_right - x, h } });
        i = j + 1;
    }
    let (t1, t2) = title_lines(m);
    let title_w = px(cols(&t1), TITLE_FONT).max(px(cols(&t2), FONT));
    let content_right = if label_cols > 0 { cluster_right } else { right };
    let width = (content_right.max(MARGIN + title_w) + MARGIN).max(200);
    let height = row_top(m.nodes.len()) + MARGIN;
    Layout { width, height, rows, clusters, label_x }
}

/// Renders the model as SVG.
pub fn svg(m: &Model) -> String {
    let l = layout(m);
    let mut o = String::with_capacity(512 + m.nodes.len() * 420);
    let (t1, t2) = title_lines(m);
    let _ = writeln!(o, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans Mono, Menlo, Consolas, Liberation Mono, monospace" font-size="{FONT}">"#,
        w = l.width,
        h = l.height
    );
    let _ = writeln!(o, "<title>{}</title>", xml_escape(&t1));
    let _ = writeln!(
        o,
        r##"<rect class="background" x="0" y="0" width="{}" height="{}" fill="#ffffff"/>"##,
        l.width, l.height
    );
    let _ = writeln!(
        o,
        r#"<text class="title" x="{MARGIN}" y="{}" font-size="{TITLE_FONT}" font-weight="bold" fill="{INK}">{}</text>"#,
        MARGIN + TITLE_FONT,
        xml_escape(&t1)
    );
    let _ = writeln!(
        o,
        r#"<text class="legend" x="{MARGIN}" y="{}" fill="{DRIVER_INK}">{}</text>"#,
        MARGIN + TITLE_FONT + 22,
        xml_escape(&t2)
    );
    o.push_str("<g class=\"clusters\">\n");
    for c in &l.clusters {
        let (fill, stroke) = PALETTE[c.colour];
        let r = c.rect;
        let _ = writeln!(
            o,
            r#"<rect class="cluster" data-group="{g}" x="{}" y="{}" width="{}" height="{}" rx="6" fill="{fill}" stroke="{stroke}"/><text class="group-label" x="{}" y="{}" font-weight="bold" fill="{stroke}">group {g}</text>"#,
            r.x,
            r.y,
            r.w,
            r.h,
            l.label_x,
            l.rows[c.first].y + 13,
            g = c.group
        );
    }
    o.push_str("</g>\n");
    // Connectors: for every bridge with children, a vertical line from its box down to its last child and
    // a tick into each child's box.
    let mut kids: Vec<Vec<usize>> = vec![Vec::new(); m.nodes.len()];
    for (i, n) in m.nodes.iter().enumerate() {
        if let Some(p) = n.parent.filter(|&p| p < i) {
            kids[p].push(i);
        }
    }
    let _ = writeln!(o, r#"<g class="connectors" fill="none" stroke="{CONNECTOR}" stroke-width="1">"#);
    for (p, ks) in kids.iter().enumerate() {
        let Some(&last) = ks.last() else { continue };
        let x = l.rows[p].x + INDENT / 2;
        let mid = |k: usize| l.rows[k].y + BOX_H / 2;
        let _ = write!(o, r#"<path d="M{x}.5 {}V{}.5"#, l.rows[p].bottom(), mid(last));
        for &k in ks {
            let _ = write!(o, "M{x}.5 {}.5H{}", mid(k), l.rows[k].x);
        }
        o.push_str("\"/>\n");
    }
    o.push_str("</g>\n<g class=\"rows\">\n");
    let mut colour_of: HashMap<u32, usize> = HashMap::new();
    for c in &l.clusters {
        colour_of.entry(c.group).or_insert(c.colour);
    }
    for (n, r) in m.nodes.iter().zip(&l.rows) {
        let stroke = n.group.and_then(|g| colour_of.get(&g)).map_or(LOOSE_STROKE, |&c| PALETTE[c].1);
        let addr = n.address.to_string();
        let tx = r.x + TEXT_PAD;
        let ty = r.y + 13;
        let name_x = tx + px((cols(&addr) + 2).max(ADDR_COLS), FONT);
        let shown = shown_name(n);
        let mut tip = format!("{addr}  {}  {}", n.name, n.class);
        match n.group {
            Some(g) => {
                let _ = write!(tip, "  IOMMU group {g}");
                if let Some(k) = m.group_types.get(&g) {
                    let _ = write!(tip, " ({k})");
                }
            }
            None => tip.push_str("  no IOMMU group"),
        }
        if let Some(d) = &n.driver {
            let _ = write!(tip, "  driver {d}");
        }
        let _ = write!(
            o,
            r##"<g><title>{tip}</title><rect class="row" data-address="{addr}" x="{}" y="{}" width="{}" height="{BOX_H}" rx="4" fill="#ffffff" stroke="{stroke}"/><text x="{tx}" y="{ty}" fill="{INK}"><tspan font-weight="bold">{addr}</tspan><tspan x="{name_x}">{name}</tspan>"##,
            r.x,
            r.y,
            r.w,
            tip = xml_escape(&tip),
            addr = xml_escape(&addr),
            name = xml_escape(&shown),
        );
        if let Some(d) = &n.driver {
            let dx = name_x + px(cols(&shown) + 2, FONT);
            let _ = write!(o, r#"<tspan x="{dx}" fill="{DRIVER_INK}">[{}]</tspan>"#, xml_escape(d));
        }
        o.push_str("</text></g>\n");
    }
    o.push_str("</g>\n</svg>\n");
    o
}

/// Renders the model as Graphviz DOT: a cluster per group (filled with the same colours as the SVG), one
/// node per function labelled with address, name and driver, and an edge from each bridge to each child.
pub fn dot(m: &Model) -> String {
    let mut o = String::with_capacity(256 + m.nodes.len() * 160);
    let (t1, _) = title_lines(m);
    o.push_str("digraph iommu {\n");
    let _ = writeln!(o, "  graph [rankdir=LR, labelloc=t, fontname=\"monospace\", label=\"{}\"];", dot_escape(&t1));
    o.push_str(
        "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#ffffff\", fontname=\"monospace\", fontsize=10];\n",
    );
    let label = |n: &Node| {
        let mut s = format!("{}\\n{}", n.address, dot_escape(&n.name));
        if let Some(d) = &n.driver {
            let _ = write!(s, "\\n[{}]", dot_escape(d));
        }
        s
    };
    let node_line = |o: &mut String, indent: &str, n: &Node| {
        let _ = writeln!(o, "{indent}\"{}\" [label=\"{}\"];", n.address, label(n));
    };
    // Groups in order of first appearance in the tree, members in tree order.
    let mut order: Vec<u32> = Vec::new();
    let mut members: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, n) in m.nodes.iter().enumerate() {
        if let Some(g) = n.group {
            let v = members.entry(g).or_default();
            if v.is_empty() {
                order.push(g);
            }
            v.push(i);
        }
    }
    for (k, g) in order.iter().enumerate() {
        let (fill, stroke) = PALETTE[k % PALETTE.len()];
        let _ = writeln!(o, "  subgraph cluster_g{g} {{");
        let mut label = format!("group {g}");
        if let Some(t) = m.group_types.get(g) {
            let _ = write!(label, " ({t})");
        }
        let _ = writeln!(
            o,
            "    label=\"{}\"; style=filled; fillcolor=\"{fill}\"; color=\"{stroke}\"; fontcolor=\"{stroke}\";",
            dot_escape(&label)
        );
        for &i in &members[g] {
            node_line(&mut o, "    ", &m.nodes[i]);
        }
        o.push_str("  }\n");
    }
    for n in m.nodes.iter().filter(|n| n.group.is_none()) {
        node_line(&mut o, "  ", n);
    }
    for n in &m.nodes {
        if let Some(p) = n.parent {
            let _ = writeln!(o, "  \"{}\" -> \"{}\";", m.nodes[p].address, n.address);
        }
    }
    o.push_str("}\n");
    o
}

/// `iommuctl graph`: reads the host at the level `list` does (config header, driver and group links).
pub fn run(mut src: Source, format: Format, output: Option<&Path>) -> anyhow::Result<Outcome> {
    if matches!(src.origin, Origin::Lspci(_)) {
        // A dump has no kernel groups: draw the ones Linux would form, and say so in the title.
        let p = src.predict()?;
        src.snapshot.groups = p
            .prediction
            .groups
            .iter()
            .map(|g| iommu_host::KernelGroup {
                id: g.id,
                kind: Some("predicted".into()),
                reserved_regions: Vec::new(),
                devices: g.devices.clone(),
            })
            .collect();
        src.snapshot.kernel.release = Some("unknown (groups predicted from an lspci dump)".into());
    }
    let ids = src.ids();
    let m = model(&src.snapshot, &ids);
    let text = match format {
        Format::Svg => svg(&m),
        Format::Dot => dot(&m),
    };
    Ok(Outcome::bytes(text.into_bytes(), output.map(Path::to_path_buf)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu_host::{HostDevice, KernelGroup};

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
            [
                "0000:00:00.0@0",
                "0000:00:1c.0@0",
                "0000:01:00.0@1",
                "0000:00:1c.1@0",
                "0000:02:00.0@1",
                "0000:02:00.1@1"
            ]
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
}
