//! The IOTLB: a set-associative cache of leaf translations tagged by domain, with true LRU replacement in
//! each set.
//!
//! An entry caches one leaf (4 KiB, 2 MiB or 1 GiB): domain, page number at that size, physical base and
//! permissions. A lookup probes the set of each page size that has at least one valid entry, 4 KiB first;
//! the set index mixes the page number with the domain, so neighbouring pages spread over the sets.
//!
//! Nothing but invalidation removes a valid entry before it is evicted: after a page is unmapped the
//! IOTLB keeps translating it until it is invalidated. That is what strict mode avoids (invalidate on
//! every unmap) and what lazy mode accepts for a bounded time (see [`crate::FlushQueueConfig`]).

use serde::Serialize;

use crate::error::SimError;
use crate::types::{PageSize, Perm};

/// Geometry of the IOTLB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct IotlbConfig {
    /// Number of sets (a power of two).
    pub sets: usize,
    /// Entries per set.
    pub ways: usize,
}

impl Default for IotlbConfig {
    /// 64 sets × 8 ways = 512 entries.
    fn default() -> Self {
        Self { sets: 64, ways: 8 }
    }
}

/// IOTLB counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IotlbStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that needed a page walk.
    pub misses: u64,
    /// Entries inserted.
    pub fills: u64,
    /// Valid entries replaced by a fill (LRU victims).
    pub evictions: u64,
    /// Page-range invalidation commands.
    pub range_invalidations: u64,
    /// Domain-wide invalidation commands.
    pub domain_invalidations: u64,
    /// Global invalidation commands.
    pub global_invalidations: u64,
    /// Valid entries removed by invalidations.
    pub entries_invalidated: u64,
}

impl IotlbStats {
    /// All invalidation commands.
    pub fn invalidations(&self) -> u64 {
        self.range_invalidations + self.domain_invalidations + self.global_invalidations
    }
}

/// A cached translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IotlbEntry {
    /// Domain.
    pub domain: u32,
    /// First IOVA of the page.
    pub iova: u64,
    /// First physical address of the page.
    pub phys: u64,
    /// Page size.
    pub size: PageSize,
    /// Permissions.
    pub perm: Perm,
}

/// Tag of a valid entry: bit 63 set, the domain in bits 38..=62, the page number at its size in bits
/// 2..=37, the size index in bits 0..=1. An invalid entry's tag is 0. One compare checks all of it.
const VALID: u64 = 1 << 63;
/// Domains the tag can hold (25 bits).
pub const MAX_DOMAINS: u32 = 1 << 25;
const DOMAIN_SHIFT: u32 = 38;
const SIZES: [PageSize; 3] = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G];

#[inline(always)]
fn tag(domain: u32, vpn: u64, sidx: usize) -> u64 {
    VALID | (u64::from(domain) << DOMAIN_SHIFT) | (vpn << 2) | sidx as u64
}

fn tag_vpn(t: u64) -> u64 {
    (t & ((1 << DOMAIN_SHIFT) - 1)) >> 2
}

fn tag_domain(t: u64) -> u32 {
    ((t & !VALID) >> DOMAIN_SHIFT) as u32
}

fn tag_sidx(t: u64) -> usize {
    (t & 3) as usize
}

#[derive(Clone, Copy, Default)]
struct Data {
    phys: u64,
    /// LRU age: the value of `hits + fills` when the entry was last used.
    stamp: u64,
    perm: u8,
}

/// The IOTLB. See the module documentation.
///
/// Stored as parallel arrays so that a lookup scans one set's tags (8 × 8 bytes: one cache line with
/// the default geometry) before touching anything else.
pub struct Iotlb {
    config: IotlbConfig,
    set_mask: u64,
    tags: Vec<u64>,
    data: Vec<Data>,
    per_size: [u32; 3],
    stats: IotlbStats,
}

impl std::fmt::Debug for Iotlb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iotlb").field("config", &self.config).field("stats", &self.stats).finish()
    }
}

fn size_index(size: PageSize) -> usize {
    match size {
        PageSize::Size4K => 0,
        PageSize::Size2M => 1,
        PageSize::Size1G => 2,
    }
}

impl Iotlb {
    /// An empty IOTLB. `sets` must be a power of two and both dimensions non-zero.
    pub fn new(config: IotlbConfig) -> Result<Self, SimError> {
        if config.sets == 0 || !config.sets.is_power_of_two() || config.ways == 0 {
            return Err(SimError::Config("IOTLB sets must be a power of two and ways at least 1"));
        }
        let n = config.sets * config.ways;
        Ok(Self {
            config,
            set_mask: config.sets as u64 - 1,
            tags: vec![0; n],
            data: vec![Data::default(); n],
            per_size: [0; 3],
            stats: IotlbStats::default(),
        })
    }

    /// Its geometry.
    pub fn config(&self) -> IotlbConfig {
        self.config
    }

    /// The counters.
    pub fn stats(&self) -> IotlbStats {
        self.stats
    }

    /// Valid entries now.
    pub fn len(&self) -> usize {
        self.per_size.iter().map(|&n| n as usize).sum()
    }

    /// Whether no entry is valid.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn set_base(&self, domain: u32, vpn: u64) -> usize {
        let mix = vpn ^ u64::from(domain).wrapping_mul(0x9e37_79b9);
        (mix & self.set_mask) as usize * self.config.ways
    }

    #[inline(always)]
    fn find(&self, domain: u32, iova: u64, sidx: usize) -> Option<usize> {
        let vpn = iova >> (12 + 9 * sidx);
        let t = tag(domain, vpn, sidx);
        let base = self.set_base(domain, vpn);
        self.tags[base..base + self.config.ways].iter().position(|&x| x == t).map(|w| base + w)
    }

    /// Looks `iova` up in `domain` (below [`MAX_DOMAINS`]), counting a hit or a miss and refreshing the
    /// entry's LRU age on a hit.
    #[inline(always)]
    pub fn lookup(&mut self, domain: u32, iova: u64) -> Option<IotlbEntry> {
        for (sidx, size) in SIZES.into_iter().enumerate() {
            if self.per_size[sidx] == 0 {
                continue;
            }
            if let Some(i) = self.find(domain, iova, sidx) {
                self.stats.hits += 1;
                let d = &mut self.data[i];
                d.stamp = self.stats.hits + self.stats.fills;
                let d = *d;
                return Some(IotlbEntry {
                    domain,
                    iova: iova & !(size.bytes() - 1),
                    phys: d.phys,
                    size,
                    perm: Perm::from_bits(d.perm),
                });
            }
        }
        self.stats.misses += 1;
        None
    }

    /// Whether a translation of `iova` in `domain` is cached (no counters, no LRU update).
    pub fn contains(&self, domain: u32, iova: u64) -> bool {
        (0..3).any(|sidx| self.find(domain, iova, sidx).is_some())
    }

    /// Caches a leaf, replacing an invalid entry of its set or else the least recently used one.
    pub fn insert(&mut self, e: IotlbEntry) {
        let sidx = size_index(e.size);
        let vpn = e.iova >> e.size.shift();
        let base = self.set_base(e.domain, vpn);
        let ways = self.config.ways;
        let victim = match self.tags[base..base + ways].iter().position(|&t| t == 0) {
            Some(w) => base + w,
            None => {
                let set = &self.data[base..base + ways];
                base + (0..ways).min_by_key(|&w| set[w].stamp).unwrap_or(0)
            }
        };
        let old = self.tags[victim];
        if old != 0 {
            self.stats.evictions += 1;
            self.per_size[tag_sidx(old)] -= 1;
        }
        self.tags[victim] = tag(e.domain, vpn, sidx);
        self.per_size[sidx] += 1;
        self.stats.fills += 1;
        self.data[victim] = Data { phys: e.phys, stamp: self.stats.hits + self.stats.fills, perm: e.perm.bits() };
    }

    fn kill(&mut self, i: usize) {
        let t = std::mem::take(&mut self.tags[i]);
        if t != 0 {
            self.per_size[tag_sidx(t)] -= 1;
            self.stats.entries_invalidated += 1;
        }
    }

    /// Invalidates every entry of `domain` whose page overlaps `iova..iova+len` (one page-selective
    /// invalidation command). Probes only the sets the range can live in when it is small.
    pub fn invalidate_range(&mut self, domain: u32, iova: u64, len: u64) {
        self.stats.range_invalidations += 1;
        if len == 0 {
            return;
        }
        let last = iova.saturating_add(len - 1);
        for sidx in 0..3 {
            if self.per_size[sidx] == 0 {
                continue;
            }
            let shift = 12 + 9 * sidx;
            let (first_vpn, last_vpn) = (iova >> shift, last >> shift);
            let hit = |t: u64| {
                t != 0 && tag_domain(t) == domain && tag_sidx(t) == sidx && (first_vpn..=last_vpn).contains(&tag_vpn(t))
            };
            if last_vpn - first_vpn < self.config.sets as u64 {
                for vpn in first_vpn..=last_vpn {
                    let base = self.set_base(domain, vpn);
                    for i in base..base + self.config.ways {
                        if hit(self.tags[i]) {
                            self.kill(i);
                        }
                    }
                }
            } else {
                for i in 0..self.tags.len() {
                    if hit(self.tags[i]) {
                        self.kill(i);
                    }
                }
            }
        }
    }

    /// Invalidates every entry of `domain` (one domain-selective invalidation command).
    pub fn invalidate_domain(&mut self, domain: u32) {
        self.stats.domain_invalidations += 1;
        for i in 0..self.tags.len() {
            if self.tags[i] != 0 && tag_domain(self.tags[i]) == domain {
                self.kill(i);
            }
        }
    }

    /// Invalidates everything (one global invalidation command).
    pub fn invalidate_all(&mut self) {
        self.stats.global_invalidations += 1;
        for i in 0..self.tags.len() {
            self.kill(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(domain: u32, iova: u64, size: PageSize) -> IotlbEntry {
        IotlbEntry { domain, iova, phys: iova + 0x1000_0000, size, perm: Perm::RW }
    }

    #[test]
    fn geometry_must_be_a_power_of_two_by_at_least_one() {
        assert!(Iotlb::new(IotlbConfig { sets: 3, ways: 2 }).is_err());
        assert!(Iotlb::new(IotlbConfig { sets: 4, ways: 0 }).is_err());
        assert!(Iotlb::new(IotlbConfig { sets: 1, ways: 1 }).is_ok());
    }

    #[test]
    fn lookup_hits_only_the_same_domain_and_counts() {
        let mut t = Iotlb::new(IotlbConfig::default()).unwrap();
        assert_eq!(t.lookup(1, 0x5000), None);
        t.insert(entry(1, 0x5000, PageSize::Size4K));
        let e = t.lookup(1, 0x5abc).unwrap();
        assert_eq!((e.iova, e.phys), (0x5000, 0x1000_5000));
        assert_eq!(t.lookup(2, 0x5abc), None, "other domain");
        let s = t.stats();
        assert_eq!((s.hits, s.misses, s.fills), (1, 2, 1));
    }

    #[test]
    fn large_pages_hit_anywhere_inside() {
        let mut t = Iotlb::new(IotlbConfig::default()).unwrap();
        t.insert(entry(1, 0x4000_0000, PageSize::Size1G));
        t.insert(entry(1, 0x20_0000, PageSize::Size2M));
        assert_eq!(t.lookup(1, 0x7fff_ffff).unwrap().size, PageSize::Size1G);
        assert_eq!(t.lookup(1, 0x3f_f000).unwrap().size, PageSize::Size2M);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_full_set_evicts_the_least_recently_used_way() {
        let mut t = Iotlb::new(IotlbConfig { sets: 1, ways: 2 }).unwrap();
        t.insert(entry(1, 0x1000, PageSize::Size4K));
        t.insert(entry(1, 0x2000, PageSize::Size4K));
        assert!(t.lookup(1, 0x1000).is_some()); // 0x2000 is now the LRU
        t.insert(entry(1, 0x3000, PageSize::Size4K));
        assert!(t.contains(1, 0x1000) && t.contains(1, 0x3000) && !t.contains(1, 0x2000));
        assert_eq!(t.stats().evictions, 1);
    }

    #[test]
    fn range_invalidation_removes_overlapping_pages_of_one_domain_only() {
        let mut t = Iotlb::new(IotlbConfig::default()).unwrap();
        for i in 0..8 {
            t.insert(entry(1, i * 0x1000, PageSize::Size4K));
            t.insert(entry(2, i * 0x1000, PageSize::Size4K));
        }
        t.insert(entry(1, 0x20_0000, PageSize::Size2M));
        t.invalidate_range(1, 0x2000, 0x3000);
        assert!(t.contains(1, 0x1000) && !t.contains(1, 0x2000) && !t.contains(1, 0x4000) && t.contains(1, 0x5000));
        assert!(t.contains(2, 0x3000));
        // A 4 KiB range inside the 2 MiB page kills the whole 2 MiB entry.
        t.invalidate_range(1, 0x21_0000, 0x1000);
        assert!(!t.contains(1, 0x20_0000));
        // A huge range takes the scanning path.
        t.invalidate_range(2, 0, 1 << 40);
        assert!(!t.contains(2, 0x3000));
        assert_eq!(t.stats().range_invalidations, 3);
        assert_eq!(t.stats().entries_invalidated, 3 + 1 + 8);
    }

    #[test]
    fn domain_and_global_invalidation_empty_what_they_cover() {
        let mut t = Iotlb::new(IotlbConfig::default()).unwrap();
        t.insert(entry(1, 0x1000, PageSize::Size4K));
        t.insert(entry(2, 0x1000, PageSize::Size4K));
        t.invalidate_domain(1);
        assert!(!t.contains(1, 0x1000) && t.contains(2, 0x1000));
        t.invalidate_all();
        assert!(t.is_empty());
        assert_eq!(t.stats().invalidations(), 2);
    }
}
