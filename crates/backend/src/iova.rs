//! IOVA allocation: pure Rust, no kernel calls.
//!
//! The free space starts as the container's valid IOVA ranges minus the group's reserved regions (and
//! minus the first page, so that IOVA 0 never looks like a valid address). Allocations are multiples of
//! the granule (the IOMMU page size), aligned as asked and below a limit (the device's DMA mask).
//!
//! Two tiers, after Linux's own IOVA allocator (an rbtree plus per-size caches):
//! - a per-size cache of recently freed blocks: a block of `n` granules goes onto stack `n` and the next
//!   allocation of `n` granules takes it back in O(1) if it satisfies the request's alignment and limit;
//! - behind it, a `BTreeMap` of free extents (start → end, coalesced on insert) searched first-fit from
//!   the lowest address, so allocations stay low (good for narrow DMA masks).
//!
//! The caches are bounded; overflow goes to the tree, and when the tree cannot satisfy a request the
//! caches are flushed into it (coalescing) and the search repeats, so cached blocks never make an
//! allocation fail that the free space could satisfy.
//!
//! ```
//! use iommu_backend::iova::{IovaAllocator, Request};
//! use iommu_backend::IovaRange;
//! let mut a = IovaAllocator::new(4096, &[IovaRange::new(0, 0xfedf_ffff).unwrap()], &[]).unwrap();
//! let b = a.alloc(Request::new(8192).limit_bits(28)).unwrap();
//! assert!(b.start() >= 4096 && b.end() < 1 << 28);
//! a.free(b);
//! ```

use std::collections::BTreeMap;

use crate::info::IovaRange;

/// Blocks of up to this many granules are cached after free.
const CACHE_CLASSES: usize = 512;
/// At most this many blocks per cache class.
const CACHE_DEPTH: usize = 32;

/// Why an allocation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IovaError {
    /// No free range satisfies the request.
    #[error("no free IOVA range of {len:#x} bytes aligned to {align:#x} at or below {limit:#x} ({free:#x} bytes free in total)")]
    Exhausted {
        /// Requested length.
        len: u64,
        /// Requested alignment.
        align: u64,
        /// Highest usable address.
        limit: u64,
        /// Free bytes (anywhere).
        free: u64,
    },
    /// The requested fixed range is not entirely free.
    #[error("IOVA range {0} is not free (in use, reserved or outside the valid ranges)")]
    NotFree(IovaRange),
    /// A bad request (zero length, alignment not a power of two, or a misconfigured allocator).
    #[error("invalid IOVA request: {0}")]
    Invalid(&'static str),
}

/// What to allocate: length, alignment and the highest address the block may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Length in bytes (rounded up to the granule).
    pub len: u64,
    /// Alignment in bytes (a power of two; raised to the granule).
    pub align: u64,
    /// Highest address the block may include (e.g. `(1 << 28) - 1` for a 28-bit DMA mask).
    pub limit: u64,
}

impl Request {
    /// `len` bytes, granule-aligned, anywhere.
    pub fn new(len: u64) -> Self {
        Self { len, align: 1, limit: u64::MAX }
    }
    /// Sets the alignment.
    pub fn align(mut self, align: u64) -> Self {
        self.align = align;
        self
    }
    /// Sets the highest usable address.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }
    /// Limits the block to a DMA mask of `bits` bits (64 or more: no limit).
    pub fn limit_bits(self, bits: u32) -> Self {
        self.limit(mask_limit(bits))
    }
}

pub use crate::types::mask_limit;

/// An allocated IOVA block. Not `Clone`: it is given back exactly once, by [`IovaAllocator::free`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "an IOVA block that is dropped instead of freed is lost until the allocator is dropped"]
pub struct IovaBlock {
    start: u64,
    len: u64,
}

impl IovaBlock {
    /// First address.
    pub fn start(&self) -> u64 {
        self.start
    }
    /// Length in bytes (a multiple of the granule).
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Whether the block is empty (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Last address (inclusive).
    pub fn end(&self) -> u64 {
        self.start + (self.len - 1)
    }
    /// The block as a range.
    pub fn range(&self) -> IovaRange {
        IovaRange { start: self.start, end: self.end() }
    }
}

/// The allocator. See the module documentation.
#[derive(Debug)]
pub struct IovaAllocator {
    granule: u64,
    shift: u32,
    /// Free extents: start → end (exclusive; `u64::MAX` stands for "to the top", so the last
    /// granule of the 64-bit space is never handed out).
    tree: BTreeMap<u64, u64>,
    cache: Vec<Vec<u64>>,
    cached: u64,
    total: u64,
    in_use: u64,
    retired: u64,
}

impl IovaAllocator {
    /// An allocator over `valid` minus `reserved` minus the first granule. `granule` is the IOMMU page
    /// size (a power of two, at least 4096 in practice). An empty `valid` means the whole 64-bit space.
    pub fn new(granule: u64, valid: &[IovaRange], reserved: &[IovaRange]) -> Result<Self, IovaError> {
        if !granule.is_power_of_two() {
            return Err(IovaError::Invalid("the granule must be a power of two"));
        }
        let all = [IovaRange { start: 0, end: u64::MAX }];
        let valid = if valid.is_empty() { &all[..] } else { valid };
        let mut tree = BTreeMap::new();
        let mut total = 0;
        for r in valid {
            // Shrink to whole granules; the end is exclusive (saturating at u64::MAX).
            let mut pieces = vec![(align_up(r.start.max(granule), granule), align_down_excl(r.end, granule))];
            for rr in reserved {
                let rs = align_down(rr.start, granule);
                let re = if rr.end == u64::MAX { u64::MAX } else { align_up(rr.end + 1, granule) };
                pieces = pieces.into_iter().flat_map(|(s, e)| subtract((s, e), (rs, re))).collect();
            }
            for (s, e) in pieces {
                if s < e {
                    total += e - s;
                    insert_coalesced(&mut tree, s, e);
                }
            }
        }
        Ok(Self {
            granule,
            shift: granule.trailing_zeros(),
            tree,
            cache: (0..CACHE_CLASSES).map(|_| Vec::new()).collect(),
            cached: 0,
            total,
            in_use: 0,
            retired: 0,
        })
    }

    /// The granule (IOMMU page size).
    pub fn granule(&self) -> u64 {
        self.granule
    }

    /// Bytes currently allocated.
    pub fn in_use(&self) -> u64 {
        self.in_use
    }

    /// Bytes free (in the tree and in the caches).
    pub fn free_bytes(&self) -> u64 {
        self.total - self.in_use
    }

    /// The free extents (after flushing nothing: cached blocks are listed separately), for tests and
    /// diagnostics: `(start, end inclusive)`.
    pub fn free_ranges(&self) -> Vec<IovaRange> {
        let mut v: Vec<IovaRange> = self.tree.iter().map(|(&s, &e)| IovaRange { start: s, end: e - 1 }).collect();
        for (class, stack) in self.cache.iter().enumerate() {
            let len = (class as u64 + 1) << self.shift;
            v.extend(stack.iter().map(|&s| IovaRange { start: s, end: s + len - 1 }));
        }
        v.sort();
        v
    }

    fn normalize(&self, req: Request) -> Result<(u64, u64), IovaError> {
        if req.len == 0 {
            return Err(IovaError::Invalid("zero length"));
        }
        if !req.align.is_power_of_two() {
            return Err(IovaError::Invalid("the alignment must be a power of two"));
        }
        let len =
            req.len.checked_add(self.granule - 1).ok_or(IovaError::Invalid("length overflows"))? & !(self.granule - 1);
        Ok((len, req.align.max(self.granule)))
    }

    /// Allocates a block for `req`.
    #[inline]
    pub fn alloc(&mut self, req: Request) -> Result<IovaBlock, IovaError> {
        let (len, align) = self.normalize(req)?;
        let class = (len >> self.shift) as usize - 1;
        if let Some(stack) = self.cache.get_mut(class) {
            if let Some(&start) = stack.last() {
                if start & (align - 1) == 0 && start + (len - 1) <= req.limit {
                    stack.pop();
                    self.cached -= len;
                    self.in_use += len;
                    return Ok(IovaBlock { start, len });
                }
            }
        }
        self.alloc_slow(len, align, req.limit)
    }

    #[cold]
    fn alloc_slow(&mut self, len: u64, align: u64, limit: u64) -> Result<IovaBlock, IovaError> {
        if let Some(b) = self.first_fit(len, align, limit) {
            return Ok(b);
        }
        if self.cached > 0 {
            self.flush_cache();
            if let Some(b) = self.first_fit(len, align, limit) {
                return Ok(b);
            }
        }
        Err(IovaError::Exhausted { len, align, limit, free: self.free_bytes() })
    }

    fn first_fit(&mut self, len: u64, align: u64, limit: u64) -> Option<IovaBlock> {
        let mut found = None;
        for (&s, &e) in &self.tree {
            if s > limit {
                break;
            }
            let a = align_up(s, align);
            let Some(last) = a.checked_add(len - 1) else { break };
            if a >= s && last < e && last <= limit {
                found = Some((s, e, a));
                break;
            }
        }
        let (s, e, a) = found?;
        self.tree.remove(&s);
        if a > s {
            self.tree.insert(s, a);
        }
        if a + len < e {
            self.tree.insert(a + len, e);
        }
        self.in_use += len;
        Some(IovaBlock { start: a, len })
    }

    /// Allocates exactly `start..start+len` (rounded out to granules), if all of it is free.
    pub fn alloc_at(&mut self, start: u64, len: u64) -> Result<IovaBlock, IovaError> {
        let (len, _) = self.normalize(Request::new(len))?;
        let s = align_down(start, self.granule);
        let want = IovaRange { start: s, end: s.saturating_add(len - 1) };
        if s.checked_add(len).is_none() {
            return Err(IovaError::NotFree(want));
        }
        self.flush_cache();
        let Some((&fs, &fe)) = self.tree.range(..=s).next_back() else { return Err(IovaError::NotFree(want)) };
        if s + len > fe {
            return Err(IovaError::NotFree(want));
        }
        self.tree.remove(&fs);
        if fs < s {
            self.tree.insert(fs, s);
        }
        if s + len < fe {
            self.tree.insert(s + len, fe);
        }
        self.in_use += len;
        Ok(IovaBlock { start: s, len })
    }

    /// Gives a block back.
    #[inline]
    pub fn free(&mut self, block: IovaBlock) {
        let IovaBlock { start, len } = block;
        debug_assert!(self.in_use >= len, "freeing more than was allocated");
        self.in_use -= len;
        let class = (len >> self.shift) as usize - 1;
        if let Some(stack) = self.cache.get_mut(class) {
            if stack.len() < CACHE_DEPTH {
                stack.push(start);
                self.cached += len;
                return;
            }
        }
        insert_coalesced(&mut self.tree, start, start + len);
    }

    /// Keeps `block` allocated for good: for IOVAs that may still be mapped because an unmap failed.
    pub fn retire(&mut self, block: IovaBlock) {
        self.retired += block.len;
    }

    /// Bytes retired by [`IovaAllocator::retire`].
    pub fn retired(&self) -> u64 {
        self.retired
    }

    /// Moves every cached block back into the tree (coalescing).
    pub fn flush_cache(&mut self) {
        if self.cached == 0 {
            return;
        }
        for class in 0..self.cache.len() {
            let len = (class as u64 + 1) << self.shift;
            while let Some(s) = self.cache[class].pop() {
                insert_coalesced(&mut self.tree, s, s + len);
            }
        }
        self.cached = 0;
    }
}

fn align_up(x: u64, a: u64) -> u64 {
    x.checked_add(a - 1).map(|v| v & !(a - 1)).unwrap_or(!(a - 1))
}

fn align_down(x: u64, a: u64) -> u64 {
    x & !(a - 1)
}

/// The exclusive end of whole granules ending at or before the inclusive `end`.
fn align_down_excl(end: u64, a: u64) -> u64 {
    match end.checked_add(1) {
        Some(e) => align_down(e, a),
        None => align_down(u64::MAX, a), // the top granule is not used: ends stay representable
    }
}

/// `(s, e)` minus `(rs, re)` (all exclusive ends): up to two pieces.
fn subtract((s, e): (u64, u64), (rs, re): (u64, u64)) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(2);
    if s < e.min(rs) {
        out.push((s, e.min(rs)));
    }
    if s.max(re) < e {
        out.push((s.max(re), e));
    }
    out
}

fn insert_coalesced(tree: &mut BTreeMap<u64, u64>, mut s: u64, mut e: u64) {
    if let Some((&ps, &pe)) = tree.range(..=s).next_back() {
        debug_assert!(pe <= s, "double free or overlap: [{s:#x},{e:#x}) inside [{ps:#x},{pe:#x})");
        if pe == s {
            tree.remove(&ps);
            s = ps;
        }
    }
    if let Some(ne) = tree.remove(&e) {
        e = ne;
    }
    tree.insert(s, e);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const G: u64 = 4096;

    fn r(s: u64, e: u64) -> IovaRange {
        IovaRange::new(s, e).unwrap()
    }

    /// What the lab's VT-d container reported: two ranges around the MSI window.
    fn vtd() -> IovaAllocator {
        IovaAllocator::new(G, &[r(0, 0xfedf_ffff), r(0xfef0_0000, (1 << 39) - 1)], &[r(0xfee0_0000, 0xfeef_ffff)])
            .unwrap()
    }

    #[test]
    fn first_page_is_never_handed_out() {
        let mut a = vtd();
        let b = a.alloc(Request::new(1)).unwrap();
        assert_eq!(b.start(), G);
        assert_eq!(b.len(), G);
        a.free(b);
    }

    #[test]
    fn reserved_msi_window_is_never_allocated() {
        let mut a = IovaAllocator::new(G, &[], &[r(0xfee0_0000, 0xfeef_ffff)]).unwrap();
        assert!(a.free_ranges().iter().all(|f| !f.overlaps(&r(0xfee0_0000, 0xfeef_ffff))));
        assert!(matches!(a.alloc_at(0xfee0_0000, G), Err(IovaError::NotFree(_))));
        // Fill everything below the window, then the next block must land above it.
        let below = a.alloc(Request::new(0xfee0_0000 - G)).unwrap();
        assert_eq!(below.start(), G);
        let next = a.alloc(Request::new(G)).unwrap();
        assert_eq!(next.start(), 0xfef0_0000);
        a.free(below);
        a.free(next);
    }

    #[test]
    fn dma_mask_limits_every_block() {
        let mut a = vtd();
        let limit = mask_limit(28);
        let mut blocks = Vec::new();
        while let Ok(b) = a.alloc(Request::new(1 << 20).limit(limit)) {
            assert!(b.end() <= limit);
            blocks.push(b);
        }
        // 256 MiB minus the first page holds 255 whole MiB blocks.
        assert_eq!(blocks.len(), 255);
        let e = a.alloc(Request::new(1 << 20).limit(limit)).unwrap_err();
        assert!(matches!(e, IovaError::Exhausted { limit: l, .. } if l == limit), "{e}");
        // Without the mask there is plenty of room.
        blocks.push(a.alloc(Request::new(1 << 20)).unwrap());
        for b in blocks {
            a.free(b);
        }
        assert_eq!(a.in_use(), 0);
    }

    #[test]
    fn alignment_is_honoured() {
        let mut a = vtd();
        let small = a.alloc(Request::new(G)).unwrap();
        let big = a.alloc(Request::new(G).align(2 << 20)).unwrap();
        assert_eq!(big.start() % (2 << 20), 0);
        assert!(a.alloc(Request::new(G).align(3)).is_err());
        a.free(small);
        a.free(big);
    }

    #[test]
    fn freed_space_is_reused() {
        let mut a = vtd();
        let x = a.alloc(Request::new(3 * G)).unwrap();
        let start = x.start();
        a.free(x);
        assert_eq!(a.alloc(Request::new(3 * G)).unwrap().start(), start, "the cache hands the block back");
    }

    #[test]
    fn cached_blocks_coalesce_when_a_larger_request_needs_them() {
        // Space for exactly four pages; free them one by one (into the cache), then ask for all four.
        let mut a = IovaAllocator::new(G, &[r(G, 5 * G - 1)], &[]).unwrap();
        let blocks: Vec<_> = (0..4).map(|_| a.alloc(Request::new(G)).unwrap()).collect();
        assert!(a.alloc(Request::new(G)).is_err());
        for b in blocks {
            a.free(b);
        }
        let all = a.alloc(Request::new(4 * G)).unwrap();
        assert_eq!((all.start(), all.len()), (G, 4 * G));
    }

    #[test]
    fn alloc_at_takes_an_exact_free_range_and_refuses_a_used_one() {
        let mut a = vtd();
        let b = a.alloc_at(0x90_0000, 2 * G).unwrap();
        assert_eq!(b.start(), 0x90_0000);
        assert!(a.alloc_at(0x90_1000, G).is_err());
        a.free(b);
        let again = a.alloc_at(0x90_1000, G).unwrap();
        a.free(again);
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut a = vtd();
        assert_eq!(a.alloc(Request::new(0)), Err(IovaError::Invalid("zero length")));
        assert!(IovaAllocator::new(3000, &[], &[]).is_err());
        assert!(a.alloc(Request::new(u64::MAX)).is_err());
    }

    #[test]
    fn a_whole_64_bit_space_works_at_the_top() {
        let mut a = IovaAllocator::new(G, &[], &[]).unwrap();
        assert_eq!(a.free_bytes(), u64::MAX - (G - 1) - G);
        let b = a.alloc_at(u64::MAX - 2 * G + 1, G).unwrap();
        assert_eq!(b.end(), u64::MAX - G);
        a.free(b);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc { pages: u64, align_shift: u32, limit_bits: u32 },
        Free(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u64..40, 0u32..6, prop_oneof![Just(28u32), Just(32), Just(64)])
                .prop_map(|(pages, align_shift, limit_bits)| Op::Alloc { pages, align_shift, limit_bits }),
            any::<usize>().prop_map(Op::Free),
        ]
    }

    proptest! {
        #[test]
        fn live_blocks_never_overlap_and_stay_inside_the_rules(ops in proptest::collection::vec(op(), 1..300)) {
            // A small space so that exhaustion, cache flushes and coalescing all happen.
            let valid = [r(0, 0x3f_ffff), r(0x100_0000, 0x10f_ffff)];
            let reserved = [r(0x20_0000, 0x20_ffff)];
            let mut a = IovaAllocator::new(G, &valid, &reserved).unwrap();
            let initial = a.free_bytes();
            let mut live: Vec<IovaBlock> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc { pages, align_shift, limit_bits } => {
                        let req = Request::new(pages * G).align(G << align_shift).limit_bits(limit_bits);
                        if let Ok(b) = a.alloc(req) {
                            prop_assert!(b.start() >= G);
                            prop_assert_eq!(b.start() % (G << align_shift), 0);
                            prop_assert!(b.end() <= mask_limit(limit_bits));
                            prop_assert!(valid.iter().any(|v| v.start <= b.start() && b.end() <= v.end));
                            prop_assert!(!reserved.iter().any(|x| x.overlaps(&b.range())));
                            for l in &live {
                                prop_assert!(!l.range().overlaps(&b.range()), "{:?} overlaps {:?}", b, l);
                            }
                            live.push(b);
                        }
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let b = live.swap_remove(i % live.len());
                        a.free(b);
                    }
                    Op::Free(_) => {}
                }
                let used: u64 = live.iter().map(|b| b.len()).sum();
                prop_assert_eq!(a.in_use(), used);
            }
            for b in live.drain(..) {
                a.free(b);
            }
            prop_assert_eq!(a.free_bytes(), initial);
            a.flush_cache();
            // Everything coalesced back: the free ranges are what we started with.
            let fresh = IovaAllocator::new(G, &valid, &reserved).unwrap();
            prop_assert_eq!(a.free_ranges(), fresh.free_ranges());
        }
    }
}
