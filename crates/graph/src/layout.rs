//! Where every row, connector and cluster goes: an indented tree, one row per function, at a fixed
//! monospace advance so that nothing overlaps.

use std::collections::HashMap;

use crate::model::{Model, Node, MAX_NAME_COLS};
use crate::text::{cols, truncate_cols};

/// Font size of row text, in pixels.
pub(crate) const FONT: u32 = 12;
/// Font size of the title line.
pub(crate) const TITLE_FONT: u32 = 14;
/// Assumed advance of one monospace column, as a fraction of the font size. Common monospace fonts
/// (DejaVu Sans Mono, Menlo, Consolas, Courier) advance 0.55–0.61 em; a little more leaves slack.
const ADVANCE: f64 = 0.625;
/// Height of one row.
const ROW_H: u32 = 24;
/// Height of a row's box, and its offset from the row's top.
pub(crate) const BOX_H: u32 = 18;
const BOX_DY: u32 = 3;
/// Indentation per tree level.
pub(crate) const INDENT: u32 = 20;
/// Space around the drawing.
pub(crate) const MARGIN: u32 = 16;
/// Padding of a cluster around its rows.
pub(crate) const PAD: u32 = 8;
/// Padding between a box's edge and its text.
pub(crate) const TEXT_PAD: u32 = 6;
/// Gap between the right edge of the boxes and the group labels.
const LABEL_GAP: u32 = 12;
/// Height of the title block above the first row.
const HEADER_H: u32 = 52;
/// Columns of `DDDD:BB:DD.F` plus the two spaces after it (wider domains are measured).
pub(crate) const ADDR_COLS: usize = 14;

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

/// Pixels for `n` columns at font size `font`, rounded up.
pub(crate) fn px(n: usize, font: u32) -> u32 {
    let w = (n as f64 * f64::from(font) * ADVANCE).ceil();
    if w >= f64::from(u32::MAX / 4) {
        u32::MAX / 4
    } else {
        w as u32
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
    /// First node (index into [`Model::nodes`]) of the run.
    pub first: usize,
    /// Last node of the run (inclusive).
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
pub(crate) fn shown_name(n: &Node) -> String {
    truncate_cols(&n.name, MAX_NAME_COLS)
}

/// Columns of a row's label: address, name and `[driver]`.
pub(crate) fn row_cols(n: &Node) -> usize {
    let addr = cols(&n.address.to_string()) + 2;
    let driver = n.driver.as_deref().map_or(0, |d| cols(d) + 4);
    addr.max(ADDR_COLS) + cols(&shown_name(n)) + driver
}

/// The title lines: the facts, and what the picture means.
pub(crate) fn title_lines(m: &Model) -> (String, String) {
    let kernel = m.title.kernel.as_deref().unwrap_or("unknown");
    let source = m.title.predicted_from.as_deref().map(|p| format!(" (groups predicted from {p})")).unwrap_or_default();
    let loose = m.nodes.iter().filter(|n| n.group.is_none()).count();
    let first = format!(
        "IOMMU groups: kernel {kernel}{source}, {} PCI function{}, {} group{}",
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

/// Computes the layout of a model: row boxes as wide as the widest label, clusters behind each run of a
/// group's consecutive rows (a group split by another group's subtree gets one rectangle per run, all in
/// its colour), colours in order of each group's first appearance.
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
