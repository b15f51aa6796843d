//! Small value types every backend and driver shares: DMA directions, access kinds, DMA masks and
//! hugepage requests.

use std::fmt;

use serde::Serialize;

/// Which way a DMA mapping moves data, as in Linux's `enum dma_data_direction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DmaDir {
    /// Memory → device: the device only reads.
    ToDevice,
    /// Device → memory: the device only writes.
    FromDevice,
    /// Both ways.
    Bidirectional,
}

impl DmaDir {
    /// Whether the device reads the memory (data must reach the device: bounce on map / sync for device).
    pub fn device_reads(self) -> bool {
        self != DmaDir::FromDevice
    }

    /// Whether the device writes the memory (data must reach the CPU: copy back on unmap / sync for CPU).
    pub fn device_writes(self) -> bool {
        self != DmaDir::ToDevice
    }

    /// Whether a mapping in this direction lets the device make `access`.
    pub fn allows(self, access: Access) -> bool {
        match access {
            Access::Read => self.device_reads(),
            Access::Write => self.device_writes(),
        }
    }
}

/// The kind of a device access, seen from memory: the device reads memory or writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// The device reads memory (a DMA read request; data goes to the device).
    Read,
    /// The device writes memory (a DMA write request).
    Write,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// The largest address a DMA mask of `bits` bits allows (`bits` ≥ 64 allows everything).
pub fn mask_limit(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Whether DMA memory should be backed by 2 MiB hugepages ([`crate::DmaBackend::alloc`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HugePages {
    /// Ordinary pages.
    #[default]
    No,
    /// Hugepages when the backend has them free, ordinary pages otherwise.
    Prefer,
    /// Hugepages or an error ([`crate::BackendError::NoHugepages`]).
    Require,
}

/// 2 MiB, the hugepage size [`HugePages`] asks for.
pub const HUGEPAGE_2M: usize = 2 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_limit_covers_edges() {
        assert_eq!(mask_limit(28), 0x0fff_ffff);
        assert_eq!(mask_limit(32), 0xffff_ffff);
        assert_eq!(mask_limit(64), u64::MAX);
    }

    #[test]
    fn directions_allow_the_accesses_the_device_needs() {
        assert!(DmaDir::ToDevice.allows(Access::Read) && !DmaDir::ToDevice.allows(Access::Write));
        assert!(!DmaDir::FromDevice.allows(Access::Read) && DmaDir::FromDevice.allows(Access::Write));
        assert!(DmaDir::Bidirectional.allows(Access::Read) && DmaDir::Bidirectional.allows(Access::Write));
        assert_eq!(Access::Write.to_string(), "write");
    }
}
