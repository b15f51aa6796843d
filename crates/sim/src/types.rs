//! Small value types shared by every part of the model: requester IDs, domain IDs, permissions and page
//! sizes. Access kinds, DMA directions and DMA masks are the driver contract's (`iommu-backend`), so a
//! driver and the model speak of them with the same types.

use std::fmt;

use iommu_pci::PciAddress;
use serde::{Serialize, Serializer};

pub use iommu_backend::{mask_limit, Access, DmaDir};

/// A PCIe requester ID: `bus << 8 | device << 3 | function`. It is what the IOMMU sees on every DMA
/// and what it uses to pick the device's domain (the VT-d root and context tables are indexed by it).
///
/// Displayed and serialized as `bb:dd.f`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rid(pub u16);

impl Rid {
    /// The requester ID of bus `bus`, device `device` (0..=31), function `function` (0..=7); `None` when
    /// device or function is out of range.
    pub fn new(bus: u8, device: u8, function: u8) -> Option<Self> {
        PciAddress::new(0, bus, device, function).map(Self::from)
    }

    /// Bus number.
    pub fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// Device (slot) number.
    pub fn device(self) -> u8 {
        ((self.0 >> 3) & 0x1f) as u8
    }

    /// Function number.
    pub fn function(self) -> u8 {
        (self.0 & 7) as u8
    }
}

impl From<PciAddress> for Rid {
    fn from(a: PciAddress) -> Self {
        Self(a.requester_id())
    }
}

impl fmt::Display for Rid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{:x}", self.bus(), self.device(), self.function())
    }
}

impl Serialize for Rid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A domain: one I/O address space (page table and mode) shared by the devices attached to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DomainId(pub u32);

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a domain does with its devices' DMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DomainMode {
    /// Every access is translated through the domain's page table (Linux's `DMA` / `DMA-FQ` domains,
    /// VFIO's `UNMANAGED`).
    Translated,
    /// Device addresses are physical addresses (Linux's `identity` / passthrough): no isolation, and a
    /// device reaches only what its DMA mask allows, so the DMA API bounces the rest.
    Identity,
    /// Every access faults (Linux's blocking domain, used while a group changes owner).
    Blocked,
}

/// Read/write permission of a mapping (the R and W bits of a leaf entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Perm {
    /// The device may read the memory (DMA to the device).
    pub read: bool,
    /// The device may write the memory (DMA from the device).
    pub write: bool,
}

impl Perm {
    /// Read only.
    pub const R: Perm = Perm { read: true, write: false };
    /// Write only.
    pub const W: Perm = Perm { read: false, write: true };
    /// Read and write.
    pub const RW: Perm = Perm { read: true, write: true };

    /// Whether this permission allows `access`.
    pub fn allows(self, access: Access) -> bool {
        match access {
            Access::Read => self.read,
            Access::Write => self.write,
        }
    }

    pub(crate) fn bits(self) -> u8 {
        u8::from(self.read) | (u8::from(self.write) << 1)
    }

    pub(crate) fn from_bits(b: u8) -> Self {
        Self { read: b & 1 != 0, write: b & 2 != 0 }
    }
}

impl From<DmaDir> for Perm {
    /// The page permission a mapping in direction `dir` gets.
    fn from(dir: DmaDir) -> Perm {
        match dir {
            DmaDir::ToDevice => Perm::R,
            DmaDir::FromDevice => Perm::W,
            DmaDir::Bidirectional => Perm::RW,
        }
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.read, self.write) {
            (true, true) => "rw",
            (true, false) => "r-",
            (false, true) => "-w",
            (false, false) => "--",
        })
    }
}

/// The three leaf sizes of an x86-style 4-level I/O page table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum PageSize {
    /// 4 KiB: a leaf in a level-1 table (PTE).
    #[serde(rename = "4K")]
    Size4K,
    /// 2 MiB: a leaf in a level-2 table (PDE with PS set).
    #[serde(rename = "2M")]
    Size2M,
    /// 1 GiB: a leaf in a level-3 table (PDPE with PS set).
    #[serde(rename = "1G")]
    Size1G,
}

impl PageSize {
    /// All sizes, smallest first.
    pub const ALL: [PageSize; 3] = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G];

    /// log2 of the size in bytes: 12, 21 or 30.
    pub fn shift(self) -> u32 {
        match self {
            PageSize::Size4K => 12,
            PageSize::Size2M => 21,
            PageSize::Size1G => 30,
        }
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        1 << self.shift()
    }

    /// The size whose shift is `shift`, if any.
    pub fn from_shift(shift: u32) -> Option<Self> {
        PageSize::ALL.into_iter().find(|s| s.shift() == shift)
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageSize::Size4K => "4 KiB",
            PageSize::Size2M => "2 MiB",
            PageSize::Size1G => "1 GiB",
        })
    }
}

/// 4 KiB: the smallest page and the granule of every mapping.
pub const PAGE_SIZE: u64 = 4096;
/// Bits of I/O virtual address a 4-level table translates (9+9+9+9+12).
pub const IOVA_BITS: u32 = 48;

pub(crate) fn page_align_down(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

pub(crate) fn page_align_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE_SIZE - 1).map(page_align_down)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rid_of_a_pci_address_is_bus_devfn_and_prints_like_lspci() {
        let a: PciAddress = "0000:01:1f.7".parse().unwrap();
        let r = Rid::from(a);
        assert_eq!(r.0, 0x01ff);
        assert_eq!((r.bus(), r.device(), r.function()), (1, 0x1f, 7));
        assert_eq!(r.to_string(), "01:1f.7");
        assert_eq!(Rid::new(1, 0x1f, 7), Some(r));
        assert_eq!(Rid::new(0, 32, 0), None);
    }

    #[test]
    fn dma_directions_give_the_permissions_the_device_needs() {
        assert_eq!(Perm::from(DmaDir::ToDevice), Perm::R);
        assert_eq!(Perm::from(DmaDir::FromDevice), Perm::W);
        assert_eq!(Perm::from(DmaDir::Bidirectional), Perm::RW);
        assert!(Perm::R.allows(Access::Read) && !Perm::R.allows(Access::Write));
        assert_eq!(Perm::from_bits(Perm::RW.bits()), Perm::RW);
    }
}
