//! The writers: SVG drawn from the [`layout`](crate::layout()), and Graphviz DOT.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::layout::{
    layout, px, shown_name, title_lines, ADDR_COLS, BOX_H, FONT, INDENT, MARGIN, PALETTE, TEXT_PAD, TITLE_FONT,
};
use crate::model::{Model, Node};
use crate::text::{cols, dot_escape, xml_escape};

/// Stroke of a function that is in no group.
const LOOSE_STROKE: &str = "#9a9a9a";
/// Text colour.
const INK: &str = "#1a1a1a";
/// Driver text colour.
const DRIVER_INK: &str = "#555555";
/// Connector colour.
const CONNECTOR: &str = "#7a7a7a";

/// Renders the model as SVG: a title and legend, the clusters, the connectors from each bridge to its
/// children, and one row per function labelled `DDDD:BB:DD.F  name  [driver]` with a tooltip that has the
/// whole name, class, group and driver. Every rectangle has a class (`cluster`, `row`) and its group or
/// address as a `data-*` attribute.
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
