//! The ACPI IVRS table (AMD I/O Virtualization Reporting Structure) and what Linux makes of it for
//! grouping.
//!
//! Layout (AMD I/O Virtualization Technology (IOMMU) Specification, "ACPI Tables"): a 36-byte ACPI header
//! (signature `IVRS`, length, revision, checksum, ...), IVinfo (u32) and 8 reserved bytes, then blocks,
//! each starting with type (u8), flags (u8), length (u16) and a device ID (u16). IVHD blocks (types 10h,
//! 11h, 40h) describe one IOMMU: after a 24-byte (10h) or 40-byte (11h, 40h) header with the IOMMU's own
//! device ID at +4 and its PCI segment at +16 come device entries, whose type's two top bits give their
//! length (4 or 8 bytes; 16 and 32 for types 80h..FFh) except type F0h (ACPI HID), which is 22 bytes plus
//! the UID length at +21. IVMD blocks (20h..22h) describe memory and are not parsed further.
//!
//! Linux 6.12 (drivers/iommu/amd/init.c, iommu.c) uses the IVHD blocks of one type only (the type of the
//! last block, before the first of a type above 40h, whose device ID is the first block's), and from
//! their device entries fills two tables per PCI segment: which device IDs an IOMMU translates (select,
//! range, alias, extended, special and ACPI HID entries) and an alias table (alias select and alias range
//! entries: every ID of the entry or range takes the entry's source ID). Each IOMMU's own device ID is
//! then taken out again. A PCI function whose ID nothing covers, or that lies above the segment's last
//! device ID, is not probed by the AMD IOMMU driver and gets no IOMMU group. When a function is probed,
//! its alias from the table becomes a DMA alias (`pci_add_dma_alias`) if it is on the function's own bus;
//! an alias on another bus is only used to copy device-table entries and does not change groups.
//!
//! [`parse`] never panics: lengths, offsets, counts and types are checked against the bytes, and whatever
//! does not fit ends the walk of its block or of the table with a note in [`Ivrs::problems`].

use iommu_pci::PciAddress;
use serde::{Deserialize, Serialize};

/// The fixed part before the first block: the ACPI header, IVinfo and 8 reserved bytes.
pub const HEADER_LEN: usize = 48;

/// Why bytes are not an IVRS table at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IvrsError {
    /// Fewer bytes than the 48-byte header.
    #[error("IVRS table is {len} bytes, shorter than its {HEADER_LEN}-byte header")]
    Short {
        /// Bytes given.
        len: usize,
    },
    /// The signature is not `IVRS`.
    #[error("not an IVRS table: its signature is {found:?}")]
    Signature {
        /// The four signature bytes, as text (non-ASCII shown escaped).
        found: String,
    },
    /// The header's length is smaller than the header itself.
    #[error("IVRS header gives the table length as {declared} bytes, less than the {HEADER_LEN}-byte header")]
    Length {
        /// The length field.
        declared: u32,
    },
    /// The header's length is more than the bytes given: the table was cut short.
    #[error("IVRS header gives the table length as {declared} bytes but only {have} were read")]
    Truncated {
        /// The length field.
        declared: u32,
        /// Bytes given.
        have: usize,
    },
}

/// One device entry of an IVHD block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum DeviceEntry {
    /// 01h: every device ID of the segment (up to its last device ID).
    All {
        /// DTE setting flags.
        flags: u8,
    },
    /// 02h: one device ID.
    Select {
        /// The device ID (bus << 8 | devfn).
        devid: u16,
        /// DTE setting flags.
        flags: u8,
    },
    /// 03h: start of a range that the next 04h entry ends.
    RangeStart {
        /// First device ID.
        devid: u16,
        /// DTE setting flags.
        flags: u8,
    },
    /// 04h: end of the range started by the last 03h, 43h or 47h entry.
    RangeEnd {
        /// Last device ID.
        devid: u16,
    },
    /// 42h: one device ID whose requests carry another ID (the alias).
    Alias {
        /// The device ID.
        devid: u16,
        /// DTE setting flags.
        flags: u8,
        /// The ID its requests carry.
        alias: u16,
    },
    /// 43h: start of a range whose requests carry one alias ID; the next 04h ends it.
    AliasRangeStart {
        /// First device ID.
        devid: u16,
        /// DTE setting flags.
        flags: u8,
        /// The ID the range's requests carry.
        alias: u16,
    },
    /// 46h: one device ID with extended settings.
    ExtSelect {
        /// The device ID.
        devid: u16,
        /// DTE setting flags.
        flags: u8,
        /// Extended DTE settings.
        ext: u32,
    },
    /// 47h: start of a range with extended settings; the next 04h ends it.
    ExtRangeStart {
        /// First device ID.
        devid: u16,
        /// DTE setting flags.
        flags: u8,
        /// Extended DTE settings.
        ext: u32,
    },
    /// 48h: a special device (I/O APIC, HPET) and the device ID its requests carry.
    Special {
        /// DTE setting flags.
        flags: u8,
        /// The I/O APIC ID or HPET number.
        handle: u8,
        /// The device ID its requests carry.
        devid: u16,
        /// 1: I/O APIC, 2: HPET; Linux refuses the table for any other value.
        variety: u8,
    },
    /// F0h: an ACPI device (by _HID and _UID) and the device ID its requests carry.
    AcpiHid {
        /// The device ID.
        devid: u16,
        /// DTE setting flags.
        flags: u8,
        /// _HID, up to 8 characters.
        hid: String,
        /// _UID as Linux reads it (a number or a string; empty when not present).
        uid: String,
    },
    /// Any other type (00h is padding; the rest are reserved): skipped by its length.
    Other {
        /// Entry type.
        kind: u8,
        /// Its length in bytes.
        length: usize,
    },
}

/// One block of the table (IVHD, IVMD or other).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Block {
    /// Byte offset in the table.
    pub offset: usize,
    /// Block type: 10h, 11h, 40h IVHD; 20h, 21h, 22h IVMD.
    pub kind: u8,
    /// Block flags.
    pub flags: u8,
    /// Block length.
    pub length: u16,
    /// Device ID: for an IVHD, the IOMMU's own PCI function.
    pub devid: u16,
    /// PCI segment (IVHD and IVMD blocks long enough to hold it).
    pub segment: Option<u16>,
    /// Device entries (IVHD blocks only).
    pub entries: Vec<DeviceEntry>,
}

impl Block {
    /// Whether it is an IVHD block of a type Linux 6.12 parses (10h, 11h, 40h).
    pub fn is_ivhd(&self) -> bool {
        ivhd_header_len(self.kind).is_some()
    }
}

/// A parsed IVRS table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ivrs {
    /// Table revision.
    pub revision: u8,
    /// IVinfo: virtual address size, physical address size, guest address size, EFR support.
    pub iv_info: u32,
    /// Whether the bytes of the table sum to zero. Linux refuses a table that does not.
    pub checksum_ok: bool,
    /// The blocks, in table order, up to the first one that does not fit.
    pub blocks: Vec<Block>,
    /// What did not fit, or what Linux would not read the way the specification says, one sentence each.
    pub problems: Vec<String>,
}

/// IVHD header length by block type, as Linux 6.12 knows them.
fn ivhd_header_len(kind: u8) -> Option<usize> {
    match kind {
        0x10 => Some(24),
        0x11 | 0x40 => Some(40),
        _ => None,
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes([*b.get(at)?, *b.get(at + 1)?, *b.get(at + 2)?, *b.get(at + 3)?]))
}

/// Text of NUL-terminated bytes, as Linux copies them (stops at the first NUL; non-ASCII escaped).
fn c_text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b[..end].escape_ascii().to_string()
}

/// Parses an IVRS table. The bytes may be longer than the table (only the header's length is read);
/// see the module documentation for what is checked.
pub fn parse(bytes: &[u8]) -> Result<Ivrs, IvrsError> {
    if bytes.len() < HEADER_LEN {
        return Err(IvrsError::Short { len: bytes.len() });
    }
    if &bytes[0..4] != b"IVRS" {
        return Err(IvrsError::Signature { found: bytes[0..4].escape_ascii().to_string() });
    }
    let declared = u32_at(bytes, 4).unwrap_or(0);
    let len = usize::try_from(declared).unwrap_or(usize::MAX);
    if len < HEADER_LEN {
        return Err(IvrsError::Length { declared });
    }
    if len > bytes.len() {
        return Err(IvrsError::Truncated { declared, have: bytes.len() });
    }
    let table = &bytes[..len];
    let checksum_ok = table.iter().fold(0u8, |s, &b| s.wrapping_add(b)) == 0;
    let mut ivrs = Ivrs {
        revision: table[8],
        iv_info: u32_at(table, 36).unwrap_or(0),
        checksum_ok,
        blocks: Vec::new(),
        problems: Vec::new(),
    };
    let mut p = HEADER_LEN;
    while p < len {
        let (Some(&kind), Some(&flags), Some(length)) = (table.get(p), table.get(p + 1), u16_at(table, p + 2)) else {
            ivrs.problems.push(format!("block at offset {p:#x}: the table ends inside its 4-byte header"));
            break;
        };
        let end = p + usize::from(length);
        if usize::from(length) < 6 {
            ivrs.problems.push(format!(
                "block type {kind:#04x} at offset {p:#x} gives its length as {length} bytes, too short for a block \
                 (Linux would not move past it)"
            ));
            break;
        }
        if end > len {
            ivrs.problems.push(format!(
                "block type {kind:#04x} at offset {p:#x} is {length} bytes long but the table ends {} bytes after \
                 its start",
                len - p
            ));
            break;
        }
        let block_bytes = &table[p..end];
        let devid = u16_at(block_bytes, 4).unwrap_or(0);
        let segment = match kind {
            0x20..=0x22 => u16_at(block_bytes, 8),
            _ if ivhd_header_len(kind).is_some() => u16_at(block_bytes, 16),
            _ => None,
        };
        let mut block = Block { offset: p, kind, flags, length, devid, segment, entries: Vec::new() };
        if let Some(hl) = ivhd_header_len(kind) {
            if usize::from(length) < hl {
                ivrs.problems.push(format!(
                    "IVHD type {kind:#04x} at offset {p:#x} is {length} bytes long, shorter than its {hl}-byte header"
                ));
            } else {
                block.entries = parse_entries(block_bytes, hl, p, &mut ivrs.problems);
            }
        }
        ivrs.blocks.push(block);
        p = end;
    }
    Ok(ivrs)
}

/// The device entries of one IVHD block (`b` is the whole block, entries start at `start`; `base` is the
/// block's offset in the table, for messages).
fn parse_entries(b: &[u8], start: usize, base: usize, problems: &mut Vec<String>) -> Vec<DeviceEntry> {
    let mut out = Vec::new();
    let mut q = start;
    while q < b.len() {
        let kind = b[q];
        let length = match kind {
            0xf0 => match b.get(q + 21) {
                Some(&uid_len) => 22 + usize::from(uid_len),
                None => {
                    problems.push(format!(
                        "ACPI HID entry at offset {:#x}: its block ends before the entry's UID length",
                        base + q
                    ));
                    break;
                }
            },
            k => 4usize << (k >> 6),
        };
        if q + length > b.len() {
            problems.push(format!(
                "device entry type {kind:#04x} at offset {:#x} needs {length} bytes but its block ends {} bytes after \
                 its start",
                base + q,
                b.len() - q
            ));
            break;
        }
        if kind >= 0x80 && kind != 0xf0 {
            problems.push(format!(
                "device entry type {kind:#04x} at offset {:#x}: Linux 6.12 gives entries of this type no length and \
                 would not move past it",
                base + q
            ));
        }
        let e = &b[q..q + length];
        let devid = u16_at(e, 1).unwrap_or(0);
        let flags = e.get(3).copied().unwrap_or(0);
        let ext = u32_at(e, 4).unwrap_or(0);
        // The alias and special entries keep their second device ID at +5 (bits 8..23 of the dword at +4).
        let source = (ext >> 8) as u16;
        out.push(match kind {
            0x01 => DeviceEntry::All { flags },
            0x02 => DeviceEntry::Select { devid, flags },
            0x03 => DeviceEntry::RangeStart { devid, flags },
            0x04 => DeviceEntry::RangeEnd { devid },
            0x42 => DeviceEntry::Alias { devid, flags, alias: source },
            0x43 => DeviceEntry::AliasRangeStart { devid, flags, alias: source },
            0x46 => DeviceEntry::ExtSelect { devid, flags, ext },
            0x47 => DeviceEntry::ExtRangeStart { devid, flags, ext },
            0x48 => DeviceEntry::Special { flags, handle: ext as u8, devid: source, variety: (ext >> 24) as u8 },
            0xf0 => {
                let hid = c_text(&e[4..12]);
                let uid_len = usize::from(e[21]);
                let uid = match e[20] {
                    1 => e.get(22).map(|v| v.to_string()).unwrap_or_default(),
                    2 => c_text(&e[22..22 + uid_len]),
                    _ => String::new(),
                };
                DeviceEntry::AcpiHid { devid, flags, hid, uid }
            }
            kind => DeviceEntry::Other { kind, length },
        });
        q += length;
    }
    out
}

/// An IVRS alias of a PCI function, as Linux reads it from the alias table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IvrsAlias {
    /// The function.
    pub device: PciAddress,
    /// The ID its requests carry according to the table. On the function's own bus Linux adds it as a DMA
    /// alias before grouping; on another bus it does not change groups.
    pub alias: PciAddress,
}

/// What the IVRS table means for grouping, for the PCI functions of one topology.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IvrsFacts {
    /// Functions with an alias other than themselves, sorted.
    #[serde(default)]
    pub aliases: Vec<IvrsAlias>,
    /// Functions no AMD IOMMU translates (no device entry covers their ID, it lies above the segment's last
    /// device ID, or it is an IOMMU's own), sorted: Linux gives them no group.
    #[serde(default)]
    pub untranslated: Vec<PciAddress>,
}

impl IvrsFacts {
    /// Whether the table changes nothing.
    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty() && self.untranslated.is_empty()
    }

    /// The IVRS alias of `device`, if it has one.
    pub fn alias_of(&self, device: PciAddress) -> Option<PciAddress> {
        self.aliases.binary_search_by_key(&device, |a| a.device).ok().map(|i| self.aliases[i].alias)
    }

    /// Whether Linux leaves `device` out of the AMD IOMMU (and so out of every group).
    pub fn is_untranslated(&self, device: PciAddress) -> bool {
        self.untranslated.binary_search(&device).is_ok()
    }
}

/// One segment's alias writes and covered ranges, in the kernel's order.
#[derive(Default)]
struct Segment {
    last_bdf: u16,
    covered: Vec<(u16, u16)>,
    /// (first, last, alias), in the order the kernel writes them.
    aliases: Vec<(u16, u16, u16)>,
    own: Vec<u16>,
}

impl Ivrs {
    /// The IVHD type Linux 6.12 uses (`get_highest_supported_ivhd_type`): starting from the first block, the
    /// type of the last block whose device ID equals the first block's, looking no further than the first
    /// block of a type above 40h. `None` when the table has no blocks.
    pub fn target_type(&self) -> Option<u8> {
        let first = self.blocks.first()?;
        let mut last = first.kind;
        for b in self.blocks.iter().take_while(|b| b.kind <= 0x40) {
            if b.devid == first.devid {
                last = b.kind;
            }
        }
        Some(last)
    }

    /// The IVHD blocks Linux uses: those of [`Ivrs::target_type`].
    pub fn used_ivhds(&self) -> impl Iterator<Item = &Block> + '_ {
        let t = self.target_type();
        self.blocks.iter().filter(move |b| Some(b.kind) == t)
    }

    /// What Linux 6.12 derives for `functions` (others are ignored; so are functions in domains above
    /// 0xffff, which no IVRS segment describes): their aliases and which of them no IOMMU translates.
    /// An error says why Linux refuses the whole table (and runs without an AMD IOMMU).
    pub fn facts(&self, functions: &[PciAddress]) -> Result<IvrsFacts, String> {
        if !self.checksum_ok {
            return Err("the IVRS table's bytes do not sum to zero: Linux refuses it (\"IVRS invalid checksum\") and \
                        runs without the AMD IOMMU"
                .into());
        }
        let Some(target) = self.target_type() else {
            return Err("the IVRS table has no blocks: Linux finds no AMD IOMMU in it".into());
        };
        if ivhd_header_len(target).is_none() {
            return Err(format!(
                "Linux would use blocks of type {target:#04x}, which is not an IVHD type it parses (10h, 11h, 40h): \
                 it refuses the table"
            ));
        }
        let segments = self.segments(target)?;
        let mut facts = IvrsFacts::default();
        let mut by_segment: std::collections::BTreeMap<u16, Vec<PciAddress>> = Default::default();
        for &f in functions {
            if let Ok(seg) = u16::try_from(f.domain) {
                by_segment.entry(seg).or_default().push(f);
            }
        }
        for (seg, mut funcs) in by_segment {
            funcs.sort_unstable();
            funcs.dedup();
            let Some(s) = segments.iter().find(|(id, _)| *id == seg).map(|(_, s)| s) else {
                // No IOMMU in this segment.
                facts.untranslated.extend(funcs);
                continue;
            };
            let devid = |f: &PciAddress| u16::from(f.bus) << 8 | u16::from(f.devfn());
            let ids: Vec<u16> = funcs.iter().map(devid).collect();
            let alias = last_write_wins(&ids, &s.aliases);
            for (i, f) in funcs.iter().enumerate() {
                let id = ids[i];
                let covered = s.covered.binary_search_by(|&(a, b)| {
                    if b < id {
                        std::cmp::Ordering::Less
                    } else if a > id {
                        std::cmp::Ordering::Greater
                    } else {
                        std::cmp::Ordering::Equal
                    }
                });
                if id > s.last_bdf || covered.is_err() || s.own.contains(&id) {
                    facts.untranslated.push(*f);
                    continue;
                }
                if let Some(to) = alias[i].filter(|&to| to != id) {
                    let a = PciAddress {
                        domain: f.domain,
                        bus: (to >> 8) as u8,
                        device: (to >> 3 & 0x1f) as u8,
                        function: (to & 7) as u8,
                    };
                    facts.aliases.push(IvrsAlias { device: *f, alias: a });
                }
            }
        }
        facts.aliases.sort_unstable();
        facts.untranslated.sort_unstable();
        Ok(facts)
    }

    /// Replays the used IVHD blocks the way init.c does: per segment, the last device ID, the covered
    /// ranges (merged), the alias writes in order, and the IOMMUs' own IDs.
    fn segments(&self, target: u8) -> Result<Vec<(u16, Segment)>, String> {
        let used: Vec<&Block> = self.blocks.iter().filter(|b| b.kind == target).collect();
        let mut segs: Vec<(u16, Segment)> = Vec::new();
        // Pass 1 (find_last_devid_acpi): the last device ID of each segment.
        for b in &used {
            let seg = b.segment.unwrap_or(0);
            let mut last: Option<u16> = None;
            for e in &b.entries {
                match *e {
                    DeviceEntry::All { .. } => {
                        last = Some(0xffff);
                        break;
                    }
                    DeviceEntry::Select { devid, .. }
                    | DeviceEntry::RangeEnd { devid }
                    | DeviceEntry::Alias { devid, .. }
                    | DeviceEntry::ExtSelect { devid, .. } => last = Some(last.map_or(devid, |l| l.max(devid))),
                    _ => {}
                }
            }
            let Some(last) = last else {
                return Err(format!(
                    "the IVHD block at offset {:#x} names no device (no select, range end, alias or all entry): Linux \
                     refuses the table",
                    b.offset
                ));
            };
            match segs.iter_mut().find(|(id, _)| *id == seg) {
                Some((_, s)) => s.last_bdf = s.last_bdf.max(last),
                None => segs.push((seg, Segment { last_bdf: last, ..Segment::default() })),
            }
        }
        // Pass 2 (init_iommu_from_acpi), block by block; the range state is per block.
        for b in &used {
            let seg = b.segment.unwrap_or(0);
            let Some((_, s)) = segs.iter_mut().find(|(id, _)| *id == seg) else { continue };
            let (mut start, mut to, mut alias) = (0u16, 0u16, false);
            for e in &b.entries {
                match *e {
                    DeviceEntry::All { .. } => s.covered.push((0, s.last_bdf)),
                    DeviceEntry::Select { devid, .. } | DeviceEntry::ExtSelect { devid, .. } => {
                        s.covered.push((devid, devid))
                    }
                    DeviceEntry::RangeStart { devid, .. } | DeviceEntry::ExtRangeStart { devid, .. } => {
                        (start, alias) = (devid, false)
                    }
                    DeviceEntry::AliasRangeStart { devid, alias: a, .. } => (start, to, alias) = (devid, a, true),
                    DeviceEntry::Alias { devid, alias: a, .. } => {
                        s.covered.push((devid, devid));
                        s.covered.push((a, a));
                        s.aliases.push((devid, devid, a));
                    }
                    DeviceEntry::RangeEnd { devid } => {
                        if start <= devid {
                            s.covered.push((start, devid));
                            if alias {
                                s.covered.push((to, to));
                                s.aliases.push((start, devid, to));
                            }
                        }
                    }
                    DeviceEntry::Special { devid, variety, .. } => {
                        if !matches!(variety, 1 | 2) {
                            return Err(format!(
                                "the IVHD block at offset {:#x} has a special device entry of variety {variety} (only 1, \
                                 I/O APIC, and 2, HPET, exist): Linux refuses the table",
                                b.offset
                            ));
                        }
                        s.covered.push((devid, devid));
                    }
                    DeviceEntry::AcpiHid { devid, ref hid, .. } => {
                        // Only IVHD type 40h may carry them, and only with a _HID.
                        if b.kind == 0x40 && !hid.is_empty() {
                            s.covered.push((devid, devid));
                        }
                    }
                    DeviceEntry::Other { .. } => {}
                }
            }
            // Phase 3 (init_iommu_one_late): an IOMMU does not translate itself.
            s.own.push(b.devid);
        }
        for (_, s) in &mut segs {
            s.covered.sort_unstable();
            let mut merged: Vec<(u16, u16)> = Vec::with_capacity(s.covered.len());
            for &(a, b) in &s.covered {
                match merged.last_mut() {
                    Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
                    _ => merged.push((a, b)),
                }
            }
            s.covered = merged;
        }
        Ok(segs)
    }
}

/// For each of the sorted `ids`, the alias of the last write (first, last, alias) covering it. Writes are
/// applied from the last, each one only to ids no later write took, so the cost is linear in writes plus ids
/// whatever the ranges (a hostile table may hold millions of entries).
fn last_write_wins(ids: &[u16], writes: &[(u16, u16, u16)]) -> Vec<Option<u16>> {
    let n = ids.len();
    let mut out = vec![None; n];
    // next[i]: the first index >= i not yet assigned (path-compressed); n means none.
    let mut next: Vec<usize> = (0..=n).collect();
    fn find(next: &mut [usize], mut i: usize) -> usize {
        let mut root = i;
        while next[root] != root {
            root = next[root];
        }
        while next[i] != root {
            let up = next[i];
            next[i] = root;
            i = up;
        }
        root
    }
    for &(first, last, alias) in writes.iter().rev() {
        let mut i = find(&mut next, ids.partition_point(|&x| x < first));
        while i < n && ids[i] <= last {
            out[i] = Some(alias);
            next[i] = i + 1;
            i = find(&mut next, i + 1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A table with these blocks and a correct checksum.
    fn table(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut t = b"IVRS".to_vec();
        t.extend([0; 4]); // length, below
        t.push(2); // revision
        t.push(0); // checksum, below
        t.extend(b"AMD   AmdTable");
        t.resize(36, 0);
        t.extend(0x0020_3043u32.to_le_bytes()); // IVinfo
        t.extend([0; 8]);
        for b in blocks {
            t.extend(b);
        }
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        let sum = t.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        t[9] = 0u8.wrapping_sub(sum);
        t
    }

    /// An IVHD block of `kind` for the IOMMU at `devid` in `segment`.
    fn ivhd(kind: u8, devid: u16, segment: u16, entries: &[Vec<u8>]) -> Vec<u8> {
        let hl = ivhd_header_len(kind).unwrap_or(24);
        let mut b = vec![kind, 0xb0, 0, 0];
        b.extend(devid.to_le_bytes());
        b.extend(0x40u16.to_le_bytes()); // capability offset
        b.extend(0xfd20_0000u64.to_le_bytes()); // MMIO base
        b.extend(segment.to_le_bytes());
        b.resize(hl, 0);
        for e in entries {
            b.extend(e);
        }
        let len = b.len() as u16;
        b[2..4].copy_from_slice(&len.to_le_bytes());
        b
    }

    fn e4(kind: u8, devid: u16) -> Vec<u8> {
        let d = devid.to_le_bytes();
        vec![kind, d[0], d[1], 0]
    }

    fn e8(kind: u8, devid: u16, ext: u32) -> Vec<u8> {
        let mut e = e4(kind, devid);
        e.extend(ext.to_le_bytes());
        e
    }

    fn bdf(s: &str) -> u16 {
        let a: PciAddress = s.parse().unwrap();
        u16::from(a.bus) << 8 | u16::from(a.devfn())
    }

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    /// What a Zen-era board's table looks like: the root complex left out, ranges for the ports' buses, an
    /// alias range for a conventional PCI bus behind a bridge, an I/O APIC.
    fn board() -> Vec<u8> {
        let entries = [
            e4(0x02, bdf("00:01.0")),
            e4(0x03, bdf("00:02.0")),
            e4(0x04, bdf("00:08.7")),
            e4(0x03, bdf("01:00.0")),
            e4(0x04, bdf("01:1f.7")),
            e8(0x43, bdf("02:00.0"), u32::from(bdf("00:14.4")) << 8),
            e4(0x04, bdf("02:1f.7")),
            e8(0x42, bdf("00:14.5"), u32::from(bdf("00:14.6")) << 8),
            e8(0x48, 0, 0x21 | u32::from(bdf("00:14.0")) << 8 | 1 << 24),
        ];
        table(&[ivhd(0x10, bdf("00:00.2"), 0, &entries), ivhd(0x11, bdf("00:00.2"), 0, &entries)])
    }

    #[test]
    fn a_boards_table_parses_entry_by_entry() {
        let t = parse(&board()).unwrap();
        assert!(t.checksum_ok);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        assert_eq!(t.revision, 2);
        assert_eq!(t.blocks.len(), 2);
        assert_eq!((t.blocks[0].kind, t.blocks[0].devid, t.blocks[0].segment), (0x10, 2, Some(0)));
        let e = &t.blocks[1].entries;
        assert_eq!(e.len(), 9);
        assert_eq!(e[0], DeviceEntry::Select { devid: 0x0008, flags: 0 });
        assert_eq!(e[5], DeviceEntry::AliasRangeStart { devid: 0x0200, flags: 0, alias: bdf("00:14.4") });
        assert_eq!(e[7], DeviceEntry::Alias { devid: bdf("00:14.5"), flags: 0, alias: bdf("00:14.6") });
        assert_eq!(e[8], DeviceEntry::Special { flags: 0, handle: 0x21, devid: bdf("00:14.0"), variety: 1 });
        // Both IVHDs describe the IOMMU at 00:00.2: Linux uses the later type.
        assert_eq!(t.target_type(), Some(0x11));
        assert_eq!(t.used_ivhds().count(), 1);
    }

    #[test]
    fn facts_follow_the_kernels_tables() {
        let t = parse(&board()).unwrap();
        let fs: Vec<PciAddress> = [
            "00:00.0",
            "00:00.2",
            "00:01.0",
            "00:02.0",
            "00:08.1",
            "00:14.0",
            "00:14.4",
            "00:14.5",
            "00:14.6",
            "01:00.0",
            "02:05.0",
            "03:00.0",
            "0001:00:00.0",
            "10000:e0:06.0",
        ]
        .iter()
        .map(|s| addr(s))
        .collect();
        let f = t.facts(&fs).unwrap();
        assert_eq!(
            f.aliases,
            vec![
                IvrsAlias { device: addr("00:14.5"), alias: addr("00:14.6") },
                IvrsAlias { device: addr("02:05.0"), alias: addr("00:14.4") },
            ]
        );
        // The root complex is in no entry; the IOMMU does not translate itself; bus 3 is above the last ID
        // (02:1f.7); segment 1 has no IOMMU. Domain 10000 is no IVRS segment and is left alone.
        assert_eq!(f.untranslated, vec![addr("00:00.0"), addr("00:00.2"), addr("03:00.0"), addr("0001:00:00.0")]);
        // The alias target and the special entry's ID are covered too.
        assert!(!f.is_untranslated(addr("00:14.6")) && !f.is_untranslated(addr("00:14.0")));
        assert_eq!(f.alias_of(addr("00:14.5")), Some(addr("00:14.6")));
    }

    #[test]
    fn all_entry_covers_the_whole_segment_and_later_aliases_win() {
        let entries = [
            e4(0x01, 0),
            e8(0x43, bdf("00:10.0"), u32::from(bdf("00:1f.0")) << 8),
            e4(0x04, bdf("00:10.7")),
            e8(0x42, bdf("00:10.3"), u32::from(bdf("00:1e.0")) << 8),
            // A range end without a new start reuses the last start and alias.
            e4(0x04, bdf("00:10.1")),
        ];
        let t = parse(&table(&[ivhd(0x40, bdf("00:00.2"), 0, &entries)])).unwrap();
        let f = t.facts(&[addr("00:10.1"), addr("00:10.3"), addr("ff:1f.7")]).unwrap();
        assert_eq!(f.alias_of(addr("00:10.1")), Some(addr("00:1f.0")));
        assert_eq!(f.alias_of(addr("00:10.3")), Some(addr("00:1e.0")));
        assert!(f.untranslated.is_empty());
    }

    #[test]
    fn acpi_hid_entries_count_only_in_type_40h_blocks() {
        let mut hid = vec![0xf0];
        hid.extend(bdf("00:14.5").to_le_bytes());
        hid.push(0);
        hid.extend(b"AMDI0020");
        hid.extend([0; 8]); // CID
        hid.extend([2, 4]); // UID: a string of 4 bytes
        hid.extend(b"ID00");
        // The segment's last device ID comes from select, range end and alias entries only: without one at or
        // above 00:14.5, Linux would not translate it even with the HID entry.
        let select = e4(0x02, bdf("00:18.0"));
        let t = parse(&table(&[ivhd(0x40, bdf("00:00.2"), 0, &[e4(0x02, bdf("00:01.0")), hid.clone()])])).unwrap();
        assert_eq!(t.facts(&[addr("00:14.5")]).unwrap().untranslated, vec![addr("00:14.5")]);
        let t = parse(&table(&[ivhd(0x40, bdf("00:00.2"), 0, &[select.clone(), hid.clone()])])).unwrap();
        assert_eq!(
            t.blocks[0].entries[1],
            DeviceEntry::AcpiHid { devid: bdf("00:14.5"), flags: 0, hid: "AMDI0020".into(), uid: "ID00".into() }
        );
        assert!(t.facts(&[addr("00:14.5")]).unwrap().untranslated.is_empty());
        let t = parse(&table(&[ivhd(0x10, bdf("00:00.2"), 0, &[select, hid])])).unwrap();
        assert_eq!(t.facts(&[addr("00:14.5")]).unwrap().untranslated, vec![addr("00:14.5")]);
    }

    #[test]
    fn tables_linux_refuses_give_the_reason() {
        let mut bad = board();
        bad[9] = bad[9].wrapping_add(1);
        let t = parse(&bad).unwrap();
        assert!(!t.checksum_ok);
        assert!(t.facts(&[]).unwrap_err().contains("checksum"));
        let special = e8(0x48, 0, 1 | 3 << 24);
        let t = parse(&table(&[ivhd(0x10, 2, 0, &[e4(0x02, 8), special])])).unwrap();
        assert!(t.facts(&[]).unwrap_err().contains("variety 3"));
        let t = parse(&table(&[ivhd(0x10, 2, 0, &[e4(0x03, 8)])])).unwrap();
        assert!(t.facts(&[]).unwrap_err().contains("names no device"));
        let t = parse(&table(&[])).unwrap();
        assert!(t.facts(&[]).unwrap_err().contains("no blocks"));
        // An IVMD block first: Linux would look for IVHDs of its type.
        let ivmd =
            vec![0x21, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let t = parse(&table(&[ivmd, ivhd(0x10, 2, 0, &[e4(0x01, 0)])])).unwrap();
        assert_eq!(t.target_type(), Some(0x21));
        assert!(t.facts(&[]).unwrap_err().contains("0x21"));
    }

    #[test]
    fn cut_and_malformed_tables_are_errors_or_problems_never_panics() {
        let good = board();
        assert_eq!(parse(&good[..40]), Err(IvrsError::Short { len: 40 }));
        assert!(matches!(parse(&good[..good.len() - 1]), Err(IvrsError::Truncated { .. })));
        let mut sig = good.clone();
        sig[0] = b'D';
        assert!(matches!(parse(&sig), Err(IvrsError::Signature { .. })));
        let mut short = good.clone();
        short[4..8].copy_from_slice(&20u32.to_le_bytes());
        assert_eq!(parse(&short), Err(IvrsError::Length { declared: 20 }));
        // Trailing bytes beyond the declared length are not read.
        let mut longer = good.clone();
        longer.extend([0xff; 9]);
        assert_eq!(parse(&longer).unwrap(), parse(&good).unwrap());
        // A block of length 0, a block running past the table, an entry running past its block.
        let zero = table(&[vec![0x10, 0, 0, 0, 0, 0]]);
        assert!(parse(&zero).unwrap().problems[0].contains("too short"));
        let mut past = ivhd(0x10, 2, 0, &[e4(0x01, 0)]);
        past[2] = 200;
        assert!(parse(&table(&[past])).unwrap().problems[0].contains("table ends"));
        let cut_entry = ivhd(0x10, 2, 0, &[e4(0x02, 8), vec![0x42, 0, 0, 0]]);
        let t = parse(&table(&[cut_entry])).unwrap();
        assert_eq!(t.blocks[0].entries.len(), 1);
        assert!(t.problems[0].contains("needs 8 bytes"), "{:?}", t.problems);
        // A header shorter than its type's, an entry type Linux gives no length, an ACPI HID cut before its
        // UID length.
        let t = parse(&table(&[vec![
            0x11, 0, 30, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]]))
        .unwrap();
        assert!(t.problems[0].contains("shorter than its 40-byte header"));
        let t = parse(&table(&[ivhd(0x10, 2, 0, &[e4(0x01, 0), vec![0x80; 16]])])).unwrap();
        assert!(t.problems[0].contains("no length"));
        assert_eq!(t.blocks[0].entries[1], DeviceEntry::Other { kind: 0x80, length: 16 });
        let t = parse(&table(&[ivhd(0x40, 2, 0, &[e4(0x01, 0), vec![0xf0, 0, 0, 0, b'A']])])).unwrap();
        assert!(t.problems[0].contains("UID length"));
    }

    #[test]
    fn a_table_with_many_overlapping_ranges_stays_linear() {
        let mut entries = vec![e4(0x02, 0xffff)];
        // As many as one block's 16-bit length holds.
        for i in 0..5_000u32 {
            entries.push(e8(0x43, 0, i << 8));
            entries.push(e4(0x04, 0xffff));
        }
        let t = parse(&table(&[ivhd(0x10, 2, 0, &entries)])).unwrap();
        let all: Vec<PciAddress> = (0..=0xffffu32)
            .map(|id| PciAddress {
                domain: 0,
                bus: (id >> 8) as u8,
                device: (id >> 3 & 0x1f) as u8,
                function: (id & 7) as u8,
            })
            .collect();
        let start = std::time::Instant::now();
        let f = t.facts(&all).unwrap();
        assert!(start.elapsed().as_secs() < 10);
        // The last range wins everywhere: alias 4999 = 13:10.7.
        assert_eq!(f.alias_of(addr("ff:1f.7")), Some(addr("13:10.7")));
        // Every ID but the alias itself and the IOMMU's own (00:00.2, not translated).
        assert_eq!(f.aliases.len(), 0x10000 - 2);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_after_a_valid_header_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..700) {
            let mut t = table(&[]);
            t.extend(&body);
            let len = t.len() as u32;
            t[4..8].copy_from_slice(&len.to_le_bytes());
            let fs = [addr("00:00.0"), addr("00:01.0"), addr("01:00.0"), addr("ff:1f.7")];
            if let Ok(ivrs) = parse(&t) {
                let _ = ivrs.facts(&fs);
            }
            let _ = parse(&t[..cut.min(t.len())]);
        }

        #[test]
        fn mutated_board_tables_never_panic(flips in proptest::collection::vec((0usize..400, any::<u8>()), 1..8)) {
            let mut t = board();
            for (at, v) in flips {
                let n = t.len();
                t[at % n] = v;
            }
            if let Ok(ivrs) = parse(&t) {
                let _ = ivrs.facts(&[addr("00:14.5"), addr("02:00.0")]);
            }
        }
    }

    #[test]
    fn later_writes_win_and_every_id_is_assigned_once() {
        let ids = [0x0100, 0x0108, 0x0200, 0x0300];
        let writes = [(0x0000, 0xffff, 0x0001), (0x0100, 0x0200, 0x0002), (0x0108, 0x0108, 0x0003)];
        assert_eq!(last_write_wins(&ids, &writes), vec![Some(2), Some(3), Some(2), Some(1)]);
        assert_eq!(last_write_wins(&ids, &[]), vec![None; 4]);
        assert_eq!(last_write_wins(&[], &writes), Vec::<Option<u16>>::new());
    }
}
