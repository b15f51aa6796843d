//! A 4-level I/O page table in the x86 format: 48-bit IOVAs split 9+9+9+9+12, 512 entries of 64 bits per
//! table, leaves of 4 KiB (level 1), 2 MiB (level 2, PS bit) or 1 GiB (level 3, PS bit).
//!
//! Entry layout (as in VT-d second-level tables): bit 0 R, bit 1 W, bit 7 PS (leaf above level 1), bits
//! 12..=51 the address. A non-leaf entry has R and W set and points to the next table; here that
//! "address" is the next table's index in this table's arena (`index << 12`) rather than a physical
//! address, because the tables do not live in simulated memory (a device can never reach them).
//!
//! Tables are created on demand when a mapping needs them and freed as soon as the last entry in them is
//! cleared; [`TableStats`] counts both, so tests can check that nothing leaks. Because empty tables never
//! survive, a non-zero non-leaf entry always means "something is mapped below", which makes the overlap
//! check of a large page a single entry test. (The memory of up to 32 freed tables is kept for reuse, as
//! a slab cache would; they count as freed.)

use serde::Serialize;

use crate::error::{AddrKind, SimError};
use crate::types::{DomainId, PageSize, Perm, IOVA_BITS, PAGE_SIZE};

const ENTRIES: usize = 512;
const R: u64 = 1;
const W: u64 = 2;
const PS: u64 = 1 << 7;
const ADDR: u64 = 0x000f_ffff_ffff_f000;
const ROOT: u32 = 0;
/// Freed tables kept for reuse.
const SPARE_TABLES: usize = 32;
/// Entries hold 52-bit physical addresses.
const MAX_PHYS: u64 = 1 << 52;

/// Table counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableStats {
    /// Tables in use now, the root included.
    pub live: u64,
    /// Tables created since the page table was made (the root included).
    pub allocated: u64,
    /// Tables freed because they became empty.
    pub freed: u64,
}

/// One leaf: a mapped page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Leaf {
    /// First IOVA of the page.
    pub iova: u64,
    /// First physical address of the page.
    pub phys: u64,
    /// Page size.
    pub size: PageSize,
    /// Permissions.
    pub perm: Perm,
}

impl Leaf {
    /// The physical address `iova` (inside this page) translates to.
    pub fn translate(&self, iova: u64) -> u64 {
        self.phys + (iova - self.iova)
    }
}

struct Table {
    e: [u64; ENTRIES],
    used: u16,
}

impl Table {
    fn boxed() -> Box<Table> {
        Box::new(Table { e: [0; ENTRIES], used: 0 })
    }
}

fn shift(level: u32) -> u32 {
    12 + 9 * (level - 1)
}

fn index(iova: u64, level: u32) -> usize {
    ((iova >> shift(level)) as usize) & (ENTRIES - 1)
}

fn level_of(size: PageSize) -> u32 {
    match size {
        PageSize::Size4K => 1,
        PageSize::Size2M => 2,
        PageSize::Size1G => 3,
    }
}

fn size_of_level(level: u32) -> PageSize {
    match level {
        1 => PageSize::Size4K,
        2 => PageSize::Size2M,
        _ => PageSize::Size1G,
    }
}

fn is_leaf(e: u64, level: u32) -> bool {
    level == 1 || e & PS != 0
}

/// One domain's page table. See the module documentation.
pub struct PageTable {
    domain: DomainId,
    tables: Vec<Option<Box<Table>>>,
    free: Vec<u32>,
    /// Freed tables kept for reuse (all entries zero), like a slab cache.
    spare: Vec<Box<Table>>,
    page_sizes: [bool; 3],
    stats: TableStats,
}

impl std::fmt::Debug for PageTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageTable").field("domain", &self.domain).field("stats", &self.stats).finish()
    }
}

impl PageTable {
    /// An empty table (just the root) for `domain`, using every page size.
    pub fn new(domain: DomainId) -> Self {
        Self::with_page_sizes(domain, &PageSize::ALL)
    }

    /// An empty table that builds mappings only from `sizes` (4 KiB is always allowed).
    pub fn with_page_sizes(domain: DomainId, sizes: &[PageSize]) -> Self {
        let mut page_sizes = [true, false, false];
        for s in sizes {
            page_sizes[level_of(*s) as usize - 1] = true;
        }
        Self {
            domain,
            tables: vec![Some(Table::boxed())],
            free: Vec::new(),
            spare: Vec::new(),
            page_sizes,
            stats: TableStats { live: 1, allocated: 1, freed: 0 },
        }
    }

    /// The table counters.
    pub fn stats(&self) -> TableStats {
        self.stats
    }

    fn table(&self, t: u32) -> &Table {
        self.tables[t as usize].as_deref().expect("live table index")
    }

    fn table_mut(&mut self, t: u32) -> &mut Table {
        self.tables[t as usize].as_deref_mut().expect("live table index")
    }

    fn alloc_table(&mut self) -> u32 {
        self.stats.live += 1;
        self.stats.allocated += 1;
        let table = self.spare.pop().unwrap_or_else(Table::boxed);
        match self.free.pop() {
            Some(i) => {
                self.tables[i as usize] = Some(table);
                i
            }
            None => {
                self.tables.push(Some(table));
                (self.tables.len() - 1) as u32
            }
        }
    }

    fn free_table(&mut self, t: u32) {
        if let Some(table) = self.tables[t as usize].take() {
            debug_assert!(table.used == 0 && table.e.iter().all(|&e| e == 0));
            if self.spare.len() < SPARE_TABLES {
                self.spare.push(table);
            }
        }
        self.free.push(t);
        self.stats.live -= 1;
        self.stats.freed += 1;
    }

    /// The leaf that maps `iova`, if any (a software walk: no IOTLB, no counters).
    #[inline]
    pub fn walk(&self, iova: u64) -> Option<Leaf> {
        if iova >> IOVA_BITS != 0 {
            return None;
        }
        let mut t = ROOT;
        for level in (1..=4).rev() {
            let e = self.table(t).e[index(iova, level)];
            if e & (R | W) == 0 {
                return None;
            }
            if is_leaf(e, level) {
                let size = size_of_level(level);
                let base = iova & !(size.bytes() - 1);
                return Some(Leaf { iova: base, phys: e & ADDR, size, perm: Perm::from_bits((e & 3) as u8) });
            }
            t = ((e & ADDR) >> 12) as u32;
        }
        None
    }

    fn check_range(&self, iova: u64, len: u64) -> Result<u64, SimError> {
        let out = SimError::IovaOutOfRange { iova, len };
        let end = iova.checked_add(len).ok_or(out.clone())?;
        if end > 1 << IOVA_BITS {
            return Err(out);
        }
        for (kind, value) in [(AddrKind::Iova, iova), (AddrKind::Length, len)] {
            if value % PAGE_SIZE != 0 {
                return Err(SimError::Misaligned { kind, value, align: PAGE_SIZE });
            }
        }
        if len == 0 {
            return Err(SimError::ZeroLength { addr: iova });
        }
        Ok(end)
    }

    /// The pieces `map` builds for `iova..+len` → `phys`: at each step the largest allowed page size
    /// that both addresses are aligned to and that fits in what is left.
    pub fn pieces(&self, iova: u64, phys: u64, len: u64) -> Vec<(u64, u64, PageSize)> {
        let mut out = Vec::new();
        let mut done = 0;
        while done < len {
            let (i, p, left) = (iova + done, phys + done, len - done);
            let size = PageSize::ALL
                .into_iter()
                .rev()
                .find(|s| {
                    self.page_sizes[level_of(*s) as usize - 1]
                        && i % s.bytes() == 0
                        && p % s.bytes() == 0
                        && left >= s.bytes()
                })
                .unwrap_or(PageSize::Size4K);
            out.push((i, p, size));
            done += size.bytes();
        }
        out
    }

    /// Whether a leaf of `size` at `iova` could be installed (nothing mapped anywhere inside it).
    fn is_free(&self, iova: u64, size: PageSize) -> bool {
        let target = level_of(size);
        let mut t = ROOT;
        for level in (target..=4).rev() {
            let e = self.table(t).e[index(iova, level)];
            if e == 0 {
                return true;
            }
            if level == target || is_leaf(e, level) {
                return false;
            }
            t = ((e & ADDR) >> 12) as u32;
        }
        true
    }

    fn install(&mut self, iova: u64, phys: u64, size: PageSize, perm: Perm) {
        let target = level_of(size);
        let mut t = ROOT;
        for level in ((target + 1)..=4).rev() {
            let i = index(iova, level);
            let e = self.table(t).e[i];
            t = if e == 0 {
                let n = self.alloc_table();
                let tab = self.table_mut(t);
                tab.e[i] = (u64::from(n) << 12) | R | W;
                tab.used += 1;
                n
            } else {
                ((e & ADDR) >> 12) as u32
            };
        }
        let ps = if target > 1 { PS } else { 0 };
        let tab = self.table_mut(t);
        tab.e[index(iova, target)] = (phys & ADDR) | ps | u64::from(perm.bits());
        tab.used += 1;
    }

    /// Maps `iova..iova+len` to `phys..phys+len` with `perm`, using the largest pages alignment allows
    /// ([`PageTable::pieces`]). All or nothing: on error the table is unchanged. Returns the number of
    /// leaves installed.
    ///
    /// Errors: [`SimError::Misaligned`] (IOVA, physical address or length not a multiple of 4 KiB),
    /// [`SimError::IovaOutOfRange`], [`SimError::ZeroLength`], [`SimError::NoPermission`],
    /// [`SimError::AlreadyMapped`] with the first piece that overlaps.
    pub fn map(&mut self, iova: u64, phys: u64, len: u64, perm: Perm) -> Result<usize, SimError> {
        self.check_range(iova, len)?;
        if !phys.is_multiple_of(PAGE_SIZE) {
            return Err(SimError::Misaligned { kind: AddrKind::Phys, value: phys, align: PAGE_SIZE });
        }
        if !matches!(phys.checked_add(len), Some(end) if end <= MAX_PHYS) {
            return Err(SimError::PhysOutOfRange { addr: phys, len });
        }
        if !perm.read && !perm.write {
            return Err(SimError::NoPermission { domain: self.domain, iova });
        }
        let pieces = self.pieces(iova, phys, len);
        if let Some(&(i, _, _)) = pieces.iter().find(|(i, _, s)| !self.is_free(*i, *s)) {
            return Err(SimError::AlreadyMapped { domain: self.domain, iova: i });
        }
        for &(i, p, s) in &pieces {
            self.install(i, p, s, perm);
        }
        Ok(pieces.len())
    }

    /// Maps exactly one page of `size` (both addresses must be aligned to it).
    pub fn map_page(&mut self, iova: u64, phys: u64, size: PageSize, perm: Perm) -> Result<(), SimError> {
        for (kind, value) in [(AddrKind::Iova, iova), (AddrKind::Phys, phys)] {
            if value % size.bytes() != 0 {
                return Err(SimError::Misaligned { kind, value, align: size.bytes() });
            }
        }
        self.check_range(iova, size.bytes())?;
        if !perm.read && !perm.write {
            return Err(SimError::NoPermission { domain: self.domain, iova });
        }
        if !self.is_free(iova, size) {
            return Err(SimError::AlreadyMapped { domain: self.domain, iova });
        }
        self.install(iova, phys, size, perm);
        Ok(())
    }

    /// Unmaps `iova..iova+len`, which must be entirely mapped and must not cut a large page. All or
    /// nothing. Frees every table that becomes empty. Returns the leaves removed.
    ///
    /// Errors: [`SimError::Misaligned`], [`SimError::IovaOutOfRange`], [`SimError::ZeroLength`],
    /// [`SimError::NotMapped`] with the first unmapped address, [`SimError::SplitsPage`].
    pub fn unmap(&mut self, iova: u64, len: u64) -> Result<Vec<Leaf>, SimError> {
        let end = self.check_range(iova, len)?;
        let mut leaves = Vec::new();
        let mut pos = iova;
        while pos < end {
            let leaf = self.walk(pos).ok_or(SimError::NotMapped { domain: self.domain, iova: pos })?;
            let leaf_end = leaf.iova + leaf.size.bytes();
            if leaf.iova < iova || leaf_end > end {
                return Err(SimError::SplitsPage { domain: self.domain, iova, end, page: leaf.iova, size: leaf.size });
            }
            leaves.push(leaf);
            pos = leaf_end;
        }
        for l in &leaves {
            self.remove(l.iova, level_of(l.size));
        }
        Ok(leaves)
    }

    fn remove(&mut self, iova: u64, target: u32) {
        let mut path = [(ROOT, 0usize); 4];
        let mut t = ROOT;
        for level in (target..=4).rev() {
            let i = index(iova, level);
            path[level as usize - 1] = (t, i);
            if level > target {
                t = ((self.table(t).e[i] & ADDR) >> 12) as u32;
            }
        }
        for level in target..=4 {
            let (t, i) = path[level as usize - 1];
            let tab = self.table_mut(t);
            tab.e[i] = 0;
            tab.used -= 1;
            if tab.used > 0 || t == ROOT {
                break;
            }
            self.free_table(t);
        }
    }

    /// Every leaf, in IOVA order.
    pub fn leaves(&self) -> Vec<Leaf> {
        let mut out = Vec::new();
        self.collect(ROOT, 4, 0, &mut out);
        out
    }

    fn collect(&self, t: u32, level: u32, base: u64, out: &mut Vec<Leaf>) {
        for (i, &e) in self.table(t).e.iter().enumerate() {
            if e & (R | W) == 0 {
                continue;
            }
            let iova = base | ((i as u64) << shift(level));
            if is_leaf(e, level) {
                let size = size_of_level(level);
                out.push(Leaf { iova, phys: e & ADDR, size, perm: Perm::from_bits((e & 3) as u8) });
            } else {
                self.collect(((e & ADDR) >> 12) as u32, level - 1, iova, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: DomainId = DomainId(7);
    const M2: u64 = 2 << 20;
    const G1: u64 = 1 << 30;

    #[test]
    fn a_4k_mapping_translates_every_byte_and_builds_three_tables() {
        let mut pt = PageTable::new(D);
        pt.map(0x1000, 0x5_0000, 0x1000, Perm::R).unwrap();
        let l = pt.walk(0x1fff).unwrap();
        assert_eq!((l.iova, l.phys, l.size, l.perm), (0x1000, 0x5_0000, PageSize::Size4K, Perm::R));
        assert_eq!(l.translate(0x1abc), 0x5_0abc);
        assert_eq!(pt.walk(0x2000), None);
        assert_eq!(pt.stats(), TableStats { live: 4, allocated: 4, freed: 0 });
    }

    #[test]
    fn aligned_ranges_use_large_pages_and_misaligned_ones_fall_back() {
        let mut pt = PageTable::new(D);
        // 1 GiB + 2 MiB + 4 KiB, all aligned: three leaves.
        assert_eq!(pt.map(G1, 2 * G1, G1 + M2 + 0x1000, Perm::RW).unwrap(), 3);
        let sizes: Vec<PageSize> = pt.leaves().iter().map(|l| l.size).collect();
        assert_eq!(sizes, [PageSize::Size1G, PageSize::Size2M, PageSize::Size4K]);
        // Physical address only 4 KiB aligned: 512 small pages.
        let mut pt = PageTable::new(D);
        assert_eq!(pt.map(0, 0x1000, M2, Perm::RW).unwrap(), 512);
        // Restricted page sizes.
        let mut pt = PageTable::with_page_sizes(D, &[PageSize::Size4K]);
        assert_eq!(pt.map(0, 0, M2, Perm::RW).unwrap(), 512);
    }

    #[test]
    fn overlaps_are_refused_without_changing_anything() {
        let mut pt = PageTable::new(D);
        pt.map(M2 + 0x3000, 0x3000, 0x1000, Perm::R).unwrap();
        let before = pt.leaves();
        // A 2 MiB page over a table that holds a 4 KiB page.
        assert_eq!(
            pt.map_page(M2, M2, PageSize::Size2M, Perm::R),
            Err(SimError::AlreadyMapped { domain: D, iova: M2 })
        );
        // A range whose middle overlaps.
        assert_eq!(
            pt.map(M2, 0x10_0000, 0x5000, Perm::R),
            Err(SimError::AlreadyMapped { domain: D, iova: M2 + 0x3000 })
        );
        // A 4 KiB page inside an existing 2 MiB page.
        pt.map_page(4 * M2, 0, PageSize::Size2M, Perm::R).unwrap();
        assert_eq!(
            pt.map(4 * M2 + 0x1000, 0, 0x1000, Perm::R),
            Err(SimError::AlreadyMapped { domain: D, iova: 4 * M2 + 0x1000 })
        );
        assert_eq!(pt.leaves().len(), before.len() + 1);
    }

    #[test]
    fn bad_arguments_get_structured_errors() {
        let mut pt = PageTable::new(D);
        let mis = |kind, value, align| Err(SimError::Misaligned { kind, value, align });
        assert_eq!(pt.map(0x1001, 0, 0x1000, Perm::R), mis(AddrKind::Iova, 0x1001, 0x1000));
        assert_eq!(pt.map(0x1000, 0x10, 0x1000, Perm::R), mis(AddrKind::Phys, 0x10, 0x1000));
        assert_eq!(pt.map(0x1000, 0, 0x10, Perm::R), mis(AddrKind::Length, 0x10, 0x1000));
        assert_eq!(
            pt.map(0xffff_ffff_f000, 0, 0x2000, Perm::R),
            Err(SimError::IovaOutOfRange { iova: 0xffff_ffff_f000, len: 0x2000 })
        );
        assert_eq!(
            pt.map(0, 0, 0x1000, Perm { read: false, write: false }),
            Err(SimError::NoPermission { domain: D, iova: 0 })
        );
        assert_eq!(pt.map_page(0x1000, 0, PageSize::Size2M, Perm::R).map(|()| 0), mis(AddrKind::Iova, 0x1000, M2));
        assert_eq!(pt.unmap(0x5000, 0x1000), Err(SimError::NotMapped { domain: D, iova: 0x5000 }));
        assert_eq!(pt.map(0, 0, 0, Perm::R), Err(SimError::ZeroLength { addr: 0 }));
    }

    #[test]
    fn unmap_must_cover_whole_pages_and_reports_the_first_hole() {
        let mut pt = PageTable::new(D);
        pt.map(0, 0, M2, Perm::RW).unwrap();
        assert_eq!(
            pt.unmap(0x1000, 0x1000),
            Err(SimError::SplitsPage { domain: D, iova: 0x1000, end: 0x2000, page: 0, size: PageSize::Size2M })
        );
        pt.map(M2, 0, 0x1000, Perm::RW).unwrap();
        assert_eq!(pt.unmap(0, M2 + 0x2000), Err(SimError::NotMapped { domain: D, iova: M2 + 0x1000 }));
        assert_eq!(pt.unmap(0, M2 + 0x1000).unwrap().len(), 2);
        assert!(pt.leaves().is_empty());
    }

    #[test]
    fn emptied_tables_are_freed_down_to_the_root() {
        let mut pt = PageTable::new(D);
        pt.map(0x1000, 0, 0x1000, Perm::R).unwrap();
        pt.map(0x2000, 0, 0x1000, Perm::R).unwrap();
        pt.map(1 << 40, 0, 0x1000, Perm::R).unwrap();
        assert_eq!(pt.stats().live, 7);
        pt.unmap(0x1000, 0x1000).unwrap();
        assert_eq!(pt.stats().live, 7, "the level-1 table still holds 0x2000");
        pt.unmap(0x2000, 0x1000).unwrap();
        assert_eq!(pt.stats(), TableStats { live: 4, allocated: 7, freed: 3 });
        pt.unmap(1 << 40, 0x1000).unwrap();
        assert_eq!(pt.stats(), TableStats { live: 1, allocated: 7, freed: 6 });
        // Freed slots are reused.
        pt.map(0x1000, 0, 0x1000, Perm::R).unwrap();
        assert_eq!(pt.stats().live, 4);
        assert_eq!(pt.tables.len(), 7);
    }
}
