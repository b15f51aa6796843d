//! What a backend reports about its IOMMU and a device: IOVA ranges, page sizes, mapping limits,
//! regions and interrupts. The flag words keep VFIO's bit layout (the Linux UAPI values, in [`flags`]),
//! so a VFIO backend passes the kernel's words through and a simulator sets the same bits.

use serde::Serialize;

/// Flag bits of [`DeviceInfo`], [`RegionInfo`] and [`IrqInfo`] and the PCI interrupt indexes: the
/// values of Linux's `include/uapi/linux/vfio.h` (iommu-vfio's tests pin them against the bindings).
pub mod flags {
    /// `VFIO_DEVICE_FLAGS_RESET`: the device can be reset.
    pub const DEVICE_RESET: u32 = 1 << 0;
    /// `VFIO_DEVICE_FLAGS_PCI`: a PCI device.
    pub const DEVICE_PCI: u32 = 1 << 1;
    /// `VFIO_REGION_INFO_FLAG_READ`.
    pub const REGION_READ: u32 = 1 << 0;
    /// `VFIO_REGION_INFO_FLAG_WRITE`.
    pub const REGION_WRITE: u32 = 1 << 1;
    /// `VFIO_REGION_INFO_FLAG_MMAP`.
    pub const REGION_MMAP: u32 = 1 << 2;
    /// `VFIO_REGION_INFO_FLAG_CAPS`.
    pub const REGION_CAPS: u32 = 1 << 3;
    /// `VFIO_IRQ_INFO_EVENTFD`.
    pub const IRQ_EVENTFD: u32 = 1 << 0;
    /// `VFIO_IRQ_INFO_MASKABLE`.
    pub const IRQ_MASKABLE: u32 = 1 << 1;
    /// `VFIO_IRQ_INFO_AUTOMASKED`.
    pub const IRQ_AUTOMASKED: u32 = 1 << 2;
    /// `VFIO_IRQ_INFO_NORESIZE`.
    pub const IRQ_NORESIZE: u32 = 1 << 3;
    /// `VFIO_PCI_INTX_IRQ_INDEX`.
    pub const PCI_INTX_IRQ_INDEX: u32 = 0;
    /// `VFIO_PCI_MSI_IRQ_INDEX`.
    pub const PCI_MSI_IRQ_INDEX: u32 = 1;
    /// `VFIO_PCI_MSIX_IRQ_INDEX`.
    pub const PCI_MSIX_IRQ_INDEX: u32 = 2;
    /// `VFIO_PCI_ERR_IRQ_INDEX`.
    pub const PCI_ERR_IRQ_INDEX: u32 = 3;
    /// `VFIO_PCI_REQ_IRQ_INDEX`.
    pub const PCI_REQ_IRQ_INDEX: u32 = 4;
}

/// An inclusive range of I/O virtual addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct IovaRange {
    /// First address.
    pub start: u64,
    /// Last address (inclusive).
    pub end: u64,
}

impl IovaRange {
    /// `start..=end`; `None` when `end < start`.
    pub fn new(start: u64, end: u64) -> Option<Self> {
        (start <= end).then_some(Self { start, end })
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &IovaRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

impl std::fmt::Display for IovaRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}-{:#x}", self.start, self.end)
    }
}

/// What an IOMMU address space offers (for VFIO: `VFIO_IOMMU_GET_INFO`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IommuInfo {
    /// Bitmap of supported IOMMU page sizes (bit n set: 2^n bytes). 0 when not reported.
    pub page_sizes: u64,
    /// Valid IOVA ranges; empty when not reported (VFIO before Linux 5.4), meaning "anything".
    pub iova_ranges: Vec<IovaRange>,
    /// How many more DMA mappings the address space allows (VFIO: the module parameter
    /// `dma_entry_limit`, 65535 by default, minus the mappings already made). `None` when not reported.
    pub dma_avail: Option<u32>,
}

impl IommuInfo {
    /// The smallest IOMMU page size (4096 when none is reported).
    pub fn min_page_size(&self) -> u64 {
        if self.page_sizes == 0 {
            4096
        } else {
            1 << self.page_sizes.trailing_zeros()
        }
    }
}

/// Flags and counts of a device (for VFIO: `VFIO_DEVICE_GET_INFO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// [`flags`]`::DEVICE_*` bits.
    pub flags: u32,
    /// Number of regions (9 for PCI: BAR0-5, ROM, config, VGA).
    pub num_regions: u32,
    /// Number of interrupt indexes (5 for PCI: INTx, MSI, MSI-X, error, request).
    pub num_irqs: u32,
}

impl DeviceInfo {
    /// [`flags::DEVICE_RESET`]: [`crate::DeviceAccess::reset`] is supported.
    pub fn reset_supported(&self) -> bool {
        self.flags & flags::DEVICE_RESET != 0
    }
    /// [`flags::DEVICE_PCI`].
    pub fn is_pci(&self) -> bool {
        self.flags & flags::DEVICE_PCI != 0
    }
}

/// One region of a device (for VFIO: `VFIO_DEVICE_GET_REGION_INFO`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegionInfo {
    /// Region index (PCI: 0-5 BARs, 6 ROM, 7 config space, 8 VGA).
    pub index: u32,
    /// Size in bytes (0: the region does not exist, e.g. an unimplemented BAR).
    pub size: u64,
    /// Offset of the region within the device file (VFIO; 0 elsewhere).
    pub offset: u64,
    /// [`flags`]`::REGION_*` bits.
    pub flags: u32,
    /// Areas that may be mmapped (offset, size within the region), from the sparse-mmap capability;
    /// `None` when the whole region may be mapped (if [`RegionInfo::mmap`]).
    pub sparse_mmap: Option<Vec<(u64, u64)>>,
}

impl RegionInfo {
    /// Readable.
    pub fn read(&self) -> bool {
        self.flags & flags::REGION_READ != 0
    }
    /// Writable.
    pub fn write(&self) -> bool {
        self.flags & flags::REGION_WRITE != 0
    }
    /// May be mmapped.
    pub fn mmap(&self) -> bool {
        self.flags & flags::REGION_MMAP != 0
    }
    /// The areas that may be mmapped: all of it, the sparse areas, or none.
    pub fn mappable_areas(&self) -> Vec<(u64, u64)> {
        if !self.mmap() || self.size == 0 {
            return Vec::new();
        }
        match &self.sparse_mmap {
            Some(areas) => areas.iter().copied().filter(|&(o, s)| s > 0 && o.saturating_add(s) <= self.size).collect(),
            None => vec![(0, self.size)],
        }
    }
}

/// One interrupt index of a device (for VFIO: `VFIO_DEVICE_GET_IRQ_INFO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct IrqInfo {
    /// Index (PCI: 0 INTx, 1 MSI, 2 MSI-X, 3 error, 4 request).
    pub index: u32,
    /// How many interrupts the index has (0: none).
    pub count: u32,
    /// [`flags`]`::IRQ_*` bits.
    pub flags: u32,
}

impl IrqInfo {
    /// Can signal an eventfd.
    pub fn eventfd(&self) -> bool {
        self.flags & flags::IRQ_EVENTFD != 0
    }
    /// Can be masked and unmasked.
    pub fn maskable(&self) -> bool {
        self.flags & flags::IRQ_MASKABLE != 0
    }
    /// Masked automatically when it fires (INTx): unmask after handling.
    pub fn automasked(&self) -> bool {
        self.flags & flags::IRQ_AUTOMASKED != 0
    }
}

/// Interrupt kinds of a PCI device, by VFIO index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IrqKind {
    /// Legacy pin interrupt (index 0): level-triggered, automasked, unmask after each.
    Intx,
    /// MSI (index 1).
    Msi,
    /// MSI-X (index 2).
    Msix,
    /// AER error notification (index 3).
    Err,
    /// Device request (unplug) notification (index 4).
    Req,
}

impl IrqKind {
    /// The VFIO irq index.
    pub fn index(self) -> u32 {
        match self {
            IrqKind::Intx => flags::PCI_INTX_IRQ_INDEX,
            IrqKind::Msi => flags::PCI_MSI_IRQ_INDEX,
            IrqKind::Msix => flags::PCI_MSIX_IRQ_INDEX,
            IrqKind::Err => flags::PCI_ERR_IRQ_INDEX,
            IrqKind::Req => flags::PCI_REQ_IRQ_INDEX,
        }
    }

    /// The kind for a PCI irq index.
    pub fn from_index(index: u32) -> Option<IrqKind> {
        [IrqKind::Intx, IrqKind::Msi, IrqKind::Msix, IrqKind::Err, IrqKind::Req]
            .into_iter()
            .find(|k| k.index() == index)
    }

    /// Short name: `intx`, `msi`, `msix`, `err`, `req`.
    pub fn name(self) -> &'static str {
        match self {
            IrqKind::Intx => "intx",
            IrqKind::Msi => "msi",
            IrqKind::Msix => "msix",
            IrqKind::Err => "err",
            IrqKind::Req => "req",
        }
    }
}

impl std::fmt::Display for IrqKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Name of a PCI region index: `BAR0`..`BAR5`, `ROM`, `config`, `VGA`.
pub fn region_name(index: u32) -> String {
    match index {
        0..=5 => format!("BAR{index}"),
        6 => "ROM".into(),
        7 => "config".into(),
        8 => "VGA".into(),
        n => format!("region{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_without_caps_is_mappable_whole_or_not_at_all() {
        let mut r = RegionInfo { index: 0, size: 1 << 20, offset: 0, flags: 7, sparse_mmap: None };
        assert_eq!(r.mappable_areas(), vec![(0, 1 << 20)]);
        r.flags = 3;
        assert!(r.mappable_areas().is_empty());
    }

    #[test]
    fn irq_kinds_round_trip_through_their_indexes() {
        for i in 0..5 {
            assert_eq!(IrqKind::from_index(i).unwrap().index(), i);
        }
        assert_eq!(IrqKind::from_index(5), None);
        assert_eq!(region_name(7), "config");
    }
}
