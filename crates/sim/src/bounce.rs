//! A swiotlb-like bounce buffer pool: a fixed range of low physical memory cut into equal slots. A
//! mapping that a device cannot reach takes a run of consecutive slots; data is copied between the
//! original buffer and the slots by the DMA API (see [`crate::Sim::map_single`]).

use serde::Serialize;

use crate::error::SimError;
use crate::types::PAGE_SIZE;

/// Where the pool is and how it is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BounceConfig {
    /// Physical address of the first slot (page-aligned, inside RAM).
    pub base: u64,
    /// Number of slots.
    pub slots: usize,
    /// Bytes per slot (a power of two).
    pub slot_size: u64,
    /// Most slots one mapping may take (Linux: 128 slots of 2 KiB, so 256 KiB).
    pub max_slots_per_mapping: usize,
}

impl Default for BounceConfig {
    /// 2048 slots of 2 KiB (4 MiB) at 16 MiB: below even a 28-bit DMA limit, like the low memory Linux
    /// takes for its swiotlb.
    fn default() -> Self {
        Self { base: 0x0100_0000, slots: 2048, slot_size: 2048, max_slots_per_mapping: 128 }
    }
}

impl BounceConfig {
    /// The last byte of the pool.
    pub fn last_addr(&self) -> u64 {
        self.base + self.slots as u64 * self.slot_size - 1
    }
}

/// Pool counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BounceStats {
    /// Slots in use now.
    pub slots_in_use: u64,
    /// Most slots ever in use at once.
    pub high_water: u64,
    /// Mappings that bounced.
    pub mappings: u64,
    /// Bytes copied into the pool (towards the device).
    pub bytes_to_device: u64,
    /// Bytes copied out of the pool (towards the CPU).
    pub bytes_to_cpu: u64,
    /// Allocations refused because no run of slots was free.
    pub exhausted: u64,
}

/// The pool. See the module documentation.
#[derive(Clone, Debug)]
pub struct BouncePool {
    config: BounceConfig,
    used: Vec<bool>,
    pub(crate) stats: BounceStats,
}

impl BouncePool {
    /// A pool with every slot free; `ram` is the RAM size it must fit in.
    pub fn new(config: BounceConfig, ram: u64) -> Result<Self, SimError> {
        let ok = config.slots > 0
            && config.slot_size.is_power_of_two()
            && config.base.is_multiple_of(PAGE_SIZE)
            && config.max_slots_per_mapping > 0
            && config.base.checked_add(config.slots as u64 * config.slot_size).is_some_and(|end| end <= ram);
        if !ok {
            return Err(SimError::Config("the bounce pool must be page-aligned power-of-two slots inside RAM"));
        }
        Ok(Self { config, used: vec![false; config.slots], stats: BounceStats::default() })
    }

    /// Its configuration.
    pub fn config(&self) -> BounceConfig {
        self.config
    }

    /// The counters.
    pub fn stats(&self) -> BounceStats {
        self.stats
    }

    /// Slots needed for `len` bytes.
    pub fn slots_for(&self, len: u64) -> u64 {
        len.div_ceil(self.config.slot_size)
    }

    /// Takes the first run of `n` free slots; returns the first slot's index.
    pub fn alloc(&mut self, n: usize) -> Option<usize> {
        if n == 0 || n > self.config.max_slots_per_mapping {
            self.stats.exhausted += 1;
            return None;
        }
        let mut run = 0;
        for i in 0..self.used.len() {
            run = if self.used[i] { 0 } else { run + 1 };
            if run == n {
                let first = i + 1 - n;
                self.used[first..=i].fill(true);
                self.stats.slots_in_use += n as u64;
                self.stats.high_water = self.stats.high_water.max(self.stats.slots_in_use);
                self.stats.mappings += 1;
                return Some(first);
            }
        }
        self.stats.exhausted += 1;
        None
    }

    /// Returns `n` slots from `first`.
    pub fn free(&mut self, first: usize, n: usize) {
        for u in &mut self.used[first..first + n] {
            debug_assert!(*u, "double free of bounce slot");
            *u = false;
        }
        self.stats.slots_in_use -= n as u64;
    }

    /// Physical address of slot `i`.
    pub fn addr(&self, i: usize) -> u64 {
        self.config.base + i as u64 * self.config.slot_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_slots_are_taken_first_fit_and_given_back() {
        let cfg = BounceConfig { base: 0x10000, slots: 8, slot_size: 2048, max_slots_per_mapping: 4 };
        let mut p = BouncePool::new(cfg, 1 << 20).unwrap();
        assert_eq!(p.slots_for(4097), 3);
        assert_eq!(p.alloc(3), Some(0));
        assert_eq!(p.alloc(2), Some(3));
        assert_eq!(p.addr(3), 0x10000 + 3 * 2048);
        p.free(0, 3);
        assert_eq!(p.alloc(4), None, "only 3 + 3 free, not consecutive 4");
        assert_eq!(p.alloc(5), None, "above the per-mapping limit");
        assert_eq!(p.alloc(3), Some(0));
        assert_eq!(p.stats().slots_in_use, 5);
        assert_eq!(p.stats().high_water, 5);
        assert_eq!(p.stats().exhausted, 2);
    }

    #[test]
    fn the_pool_must_fit_in_ram() {
        assert!(BouncePool::new(BounceConfig::default(), 1 << 20).is_err());
        assert!(BouncePool::new(BounceConfig { slot_size: 3000, ..BounceConfig::default() }, 1 << 30).is_err());
    }
}
