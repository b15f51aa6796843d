//! Per-domain IOVA allocation for the DMA API: top-down first fit below the device's DMA limit, like
//! Linux's IOVA allocator, over a sorted map of busy ranges.
//!
//! Like Linux's cached node, the allocator remembers where its last allocation went and first looks for
//! a gap below that, so a run of allocations (for example while a lazy flush queue holds freed ranges)
//! does not rescan every busy range from the top; freeing at or above that point moves it back up, and a
//! search that fails below it falls back to a full top-down search.
//!
//! The page at IOVA 0 is never handed out (a zero DMA address is too easily confused with "none"), and
//! the x86 MSI window `0xfee00000..=0xfeefffff` is reserved in every domain: a device write there is an
//! interrupt, not memory.

use std::collections::BTreeMap;

use crate::types::{IOVA_BITS, PAGE_SIZE};

/// The x86 interrupt (MSI) window, reserved in every domain.
pub const MSI_WINDOW: (u64, u64) = (0xfee0_0000, 0xfeef_ffff);

/// Busy IOVA ranges of one domain.
#[derive(Clone, Debug)]
pub struct IovaAllocator {
    /// start → end (exclusive).
    busy: BTreeMap<u64, u64>,
    reserved: Vec<(u64, u64)>,
    allocated_bytes: u64,
    /// (top the last search started from, start of its result).
    hint: Option<(u64, u64)>,
}

impl Default for IovaAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl IovaAllocator {
    /// An allocator with page 0 and the MSI window reserved.
    pub fn new() -> Self {
        let mut a = Self { busy: BTreeMap::new(), reserved: Vec::new(), allocated_bytes: 0, hint: None };
        a.reserve(0, PAGE_SIZE - 1);
        a.reserve(MSI_WINDOW.0, MSI_WINDOW.1);
        a
    }

    /// Marks `first..=last` as never to be handed out.
    pub fn reserve(&mut self, first: u64, last: u64) {
        self.busy.insert(first, last + 1);
        self.reserved.push((first, last));
    }

    /// The reserved ranges (inclusive).
    pub fn reserved(&self) -> &[(u64, u64)] {
        &self.reserved
    }

    /// Bytes handed out and not yet freed.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated_bytes
    }

    /// Ranges handed out and not yet freed.
    pub fn allocations(&self) -> usize {
        self.busy.len() - self.reserved.len()
    }

    /// Allocates `len` bytes (a multiple of 4 KiB) aligned to `align` (a power of two ≥ 4 KiB), ending
    /// at or below `limit` (inclusive), as high as possible. `None` when no gap fits.
    pub fn alloc(&mut self, len: u64, align: u64, limit: u64) -> Option<u64> {
        debug_assert!(len > 0 && len.is_multiple_of(PAGE_SIZE) && align.is_power_of_two());
        let top = limit.min((1 << IOVA_BITS) - 1).checked_add(1)?;
        let found = match self.hint {
            Some((t, below)) if t == top => self.search(below, len, align).or_else(|| self.search(top, len, align)),
            _ => self.search(top, len, align),
        }?;
        self.busy.insert(found, found + len);
        self.allocated_bytes += len;
        self.hint = Some((top, found));
        Some(found)
    }

    /// The highest aligned gap of `len` bytes ending at or below `top` (exclusive).
    fn search(&self, top: u64, len: u64, align: u64) -> Option<u64> {
        let mut hi = top;
        // Walk busy ranges downwards from the top, trying the gap above each.
        let mut it = self.busy.range(..top).rev().peekable();
        loop {
            let lo = it.peek().map_or(0, |(_, &end)| end);
            if hi >= lo {
                if let Some(start) = hi.checked_sub(len).map(|s| s & !(align - 1)) {
                    if start >= lo && start + len <= hi {
                        return Some(start);
                    }
                }
            }
            let (&start, _) = it.next()?;
            hi = hi.min(start);
        }
    }

    /// Frees the allocation that starts at `start`; returns its length, or `None` if there is none (or
    /// it is a reserved range).
    pub fn free(&mut self, start: u64) -> Option<u64> {
        if self.reserved.iter().any(|&(f, _)| f == start) {
            return None;
        }
        let end = self.busy.remove(&start)?;
        self.allocated_bytes -= end - start;
        if let Some((top, below)) = &mut self.hint {
            if start >= *below {
                *below = end.min(*top);
            }
        }
        Some(end - start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_top_down_below_the_limit_and_reuses_freed_space() {
        let mut a = IovaAllocator::new();
        let limit = (1 << 28) - 1;
        let x = a.alloc(0x2000, 0x1000, limit).unwrap();
        assert_eq!(x, (1 << 28) - 0x2000);
        let y = a.alloc(0x1000, 0x1000, limit).unwrap();
        assert_eq!(y, x - 0x1000);
        assert_eq!(a.free(x), Some(0x2000));
        assert_eq!(a.alloc(0x1000, 0x1000, limit), Some((1 << 28) - 0x1000));
        assert_eq!(a.allocations(), 2);
        assert_eq!(a.allocated_bytes(), 0x2000);
    }

    #[test]
    fn honours_alignment_and_skips_reserved_ranges() {
        let mut a = IovaAllocator::new();
        // Just above the MSI window, a 32-bit limit: the window's top is 0xfeefffff, so the first fit
        // is above it.
        let x = a.alloc(0x20_0000, 0x20_0000, 0xffff_ffff).unwrap();
        assert_eq!(x % 0x20_0000, 0);
        assert_eq!(x, 0xffe0_0000);
        // A limit that ends inside the MSI window allocates below it.
        let y = a.alloc(0x1000, 0x1000, 0xfeef_ffff).unwrap();
        assert_eq!(y, MSI_WINDOW.0 - 0x1000);
        assert_eq!(a.free(MSI_WINDOW.0), None, "reserved ranges cannot be freed");
    }

    #[test]
    fn continues_below_the_last_allocation_and_moves_back_up_on_free() {
        let mut a = IovaAllocator::new();
        let limit = 0xf_ffff;
        let x = a.alloc(0x1000, 0x1000, limit).unwrap();
        let y = a.alloc(0x1000, 0x1000, limit).unwrap();
        let z = a.alloc(0x1000, 0x1000, limit).unwrap();
        assert_eq!((x, y, z), (0xf_f000, 0xf_e000, 0xf_d000));
        a.free(y); // above the last allocation: the search starts above it again
        assert_eq!(a.alloc(0x1000, 0x1000, limit), Some(y));
        assert_eq!(a.alloc(0x1000, 0x1000, limit), Some(0xf_c000));
        // Fill everything (page 0 is reserved), then free one page in the middle and get it back.
        while a.alloc(0x1000, 0x1000, limit).is_some() {}
        assert_eq!(a.allocations(), 0xff);
        a.free(0x8_0000);
        assert_eq!(a.alloc(0x1000, 0x1000, limit), Some(0x8_0000));
        assert_eq!(a.alloc(0x1000, 0x1000, limit), None);
    }

    #[test]
    fn never_hands_out_page_zero_and_reports_exhaustion() {
        let mut a = IovaAllocator::new();
        assert_eq!(a.alloc(0x1000, 0x1000, 0x1fff), Some(0x1000));
        assert_eq!(a.alloc(0x1000, 0x1000, 0x1fff), None);
        assert_eq!(a.alloc(0x1000, 0x1000, 0xfff), None);
    }
}
