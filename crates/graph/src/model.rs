//! What is drawn: the functions in tree order with their names, drivers and groups, and the title.

use std::collections::{BTreeMap, HashMap};

use iommu_host::{HostDevice, Snapshot};
use iommu_pci::{ConfigInfo, PciAddress, PciIds};

use crate::text::{clean, truncate_cols};

/// The longest name drawn in a row, in columns; longer ones are cut with an ellipsis (the full text is in
/// the row's tooltip and in DOT labels).
pub const MAX_NAME_COLS: usize = 96;
/// The longest name kept at all (pci.ids names are under 200 columns; this bounds hostile input).
const MAX_FULL_NAME_COLS: usize = 512;
/// The longest driver name kept, in columns.
const MAX_DRIVER_COLS: usize = 40;
/// The longest kernel release (and group source) kept in the title, in columns.
const MAX_TITLE_PART_COLS: usize = 80;

/// What the title says about the host, given by the caller (nothing in it is read from the snapshot
/// unless the caller does so, e.g. with [`Title::of`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Title {
    /// `uname -r` of the host; the title says `kernel unknown` without it.
    pub kernel: Option<String>,
    /// Set when the groups drawn are not the kernel's: what they were predicted from (e.g.
    /// `an lspci dump`). The title then adds `(groups predicted from …)` after the kernel.
    pub predicted_from: Option<String>,
}

impl Title {
    /// The title of a snapshot whose groups are the kernel's: its kernel release.
    pub fn of(snap: &Snapshot) -> Title {
        Title { kernel: snap.kernel.release.clone(), predicted_from: None }
    }
}

/// One IOMMU group to draw, when the groups are not the snapshot's own (e.g. predicted ones); see
/// [`Model::with_groups`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// Group number.
    pub id: u32,
    /// Type shown next to the group number in tooltips and DOT labels (`DMA`, `identity`, `predicted`).
    pub kind: Option<String>,
    /// Member functions.
    pub devices: Vec<PciAddress>,
}

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
    /// The IOMMU group, when it has one.
    pub group: Option<u32>,
}

/// What is drawn: the functions in depth-first tree order, and the facts for the title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// Functions in depth-first order: each bridge is followed by the functions behind it.
    pub nodes: Vec<Node>,
    /// The title's facts, cleaned and cut to a sane length.
    pub title: Title,
    /// Number of groups that have at least one drawn member.
    pub groups: usize,
    /// Type per group (`DMA`, `identity`, `predicted`, ...), cleaned.
    pub group_types: HashMap<u32, String>,
}

/// The name shown for a function: `Vendor Device` from pci.ids; `Vendor [vvvv:dddd]` when only the vendor
/// is known; `[vvvv:dddd]` otherwise (`[????:????]` when its config space does not decode).
fn display_name(ids: &PciIds, cfg: Option<&ConfigInfo>) -> String {
    let Some(c) = cfg else { return "[????:????]".to_string() };
    let id = || format!("[{:04x}:{:04x}]", c.vendor_id, c.device_id);
    let s = match (ids.vendor(c.vendor_id), ids.device(c.vendor_id, c.device_id)) {
        (Some(v), Some(d)) => format!("{v} {d}"),
        (Some(v), None) => format!("{v} {}", id()),
        _ => id(),
    };
    clean(&s)
}

/// The class shown for a function: `Class name [cccc]` (base class and subclass), `Unknown class [cccc]`
/// when pci.ids does not name it. Unsafe characters become `?`, as on the terminal.
fn class_text(ids: &PciIds, cfg: Option<&ConfigInfo>) -> String {
    let (name, id) = match cfg {
        Some(c) => (ids.subclass(c.class), format!("{:04x}", c.class >> 8)),
        None => (None, "????".to_string()),
    };
    iommu_pci::text::sanitize(&format!("{} [{id}]", name.unwrap_or("Unknown class")))
}

impl Model {
    /// The drawing model of a snapshot with the kernel's groups (`snap.groups`). See
    /// [`Model::with_groups`] for the order of the functions.
    pub fn from_snapshot(snap: &Snapshot, ids: &PciIds, title: Title) -> Model {
        let groups = snap.groups.iter().map(|g| (g.id, g.kind.as_deref(), g.devices.as_slice()));
        build(snap, groups, ids, title)
    }

    /// The drawing model of a snapshot with other groups than its own (e.g. predicted ones): functions in
    /// depth-first order below their bridges, root buses in address order, children in address order.
    /// Duplicate addresses are drawn once; a parent that is not on the host (or a parent loop in a damaged
    /// snapshot) puts the function at the top level. A function in two groups is drawn in the first.
    pub fn with_groups(snap: &Snapshot, groups: &[Group], ids: &PciIds, title: Title) -> Model {
        let groups = groups.iter().map(|g| (g.id, g.kind.as_deref(), g.devices.as_slice()));
        build(snap, groups, ids, title)
    }
}

fn build<'a>(
    snap: &Snapshot,
    groups: impl Iterator<Item = (u32, Option<&'a str>, &'a [PciAddress])>,
    ids: &PciIds,
    title: Title,
) -> Model {
    let cfgs: BTreeMap<PciAddress, ConfigInfo> =
        snap.devices.iter().filter_map(|d| Some((d.address, ConfigInfo::parse(&d.config).ok()?))).collect();
    let mut devs: Vec<&HostDevice> = snap.devices.iter().collect();
    devs.sort_by_key(|d| d.address);
    devs.dedup_by_key(|d| d.address);
    let index: HashMap<PciAddress, usize> = devs.iter().enumerate().map(|(i, d)| (d.address, i)).collect();
    let mut group_of: HashMap<PciAddress, u32> = HashMap::new();
    let mut group_types = HashMap::new();
    for (id, kind, members) in groups {
        for a in members {
            group_of.entry(*a).or_insert(id);
        }
        if let Some(k) = kind {
            group_types.entry(id).or_insert_with(|| clean(k));
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
            let cfg = cfgs.get(&d.address);
            Node {
                address: d.address,
                parent,
                depth,
                name: truncate_cols(&display_name(ids, cfg), MAX_FULL_NAME_COLS),
                class: clean(&class_text(ids, cfg)),
                driver: d.driver.as_deref().map(|s| truncate_cols(&clean(s), MAX_DRIVER_COLS)),
                group: group_of.get(&d.address).copied(),
            }
        })
        .collect();
    let mut drawn_groups: Vec<u32> = nodes.iter().filter_map(|n| n.group).collect();
    drawn_groups.sort_unstable();
    drawn_groups.dedup();
    let part = |s: Option<String>| s.map(|s| truncate_cols(&clean(&s), MAX_TITLE_PART_COLS));
    Model {
        nodes,
        title: Title { kernel: part(title.kernel), predicted_from: part(title.predicted_from) },
        groups: drawn_groups.len(),
        group_types,
    }
}
