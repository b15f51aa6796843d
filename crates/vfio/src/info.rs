//! What the kernel reports about a container and a device, decoded from the raw ioctl buffers by pure
//! functions (tested on hand-built byte strings).

use vfio_bindings::bindings::vfio as b;

/// An inclusive range of I/O virtual addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
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

/// What a container's IOMMU offers (`VFIO_IOMMU_GET_INFO`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IommuInfo {
    /// Bitmap of supported IOMMU page sizes (bit n set: 2^n bytes). 0 when not reported.
    pub page_sizes: u64,
    /// Valid IOVA ranges (capability 1, `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`); empty when the kernel
    /// did not report them (before Linux 5.4), meaning "anything".
    pub iova_ranges: Vec<IovaRange>,
    /// How many more DMA mappings the kernel allows this container (capability 3,
    /// `VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`; the module parameter `dma_entry_limit`, 65535 by default, minus
    /// the mappings already made). `None` when not reported.
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

fn u16_at(buf: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(buf: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(buf: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(buf.get(off..off + 8)?.try_into().ok()?))
}

/// Walks a VFIO capability chain starting at `first` (offsets from the start of `buf`); yields
/// `(id, version, offset)`. Stops at a zero offset, a loop or a truncated header.
fn caps(buf: &[u8], first: u32) -> Vec<(u16, u16, usize)> {
    let mut out = Vec::new();
    let mut off = first as usize;
    while off != 0 && out.len() < 64 {
        let (Some(id), Some(version), Some(next)) = (u16_at(buf, off), u16_at(buf, off + 2), u32_at(buf, off + 4))
        else {
            break;
        };
        out.push((id, version, off));
        if next as usize <= off {
            break;
        }
        off = next as usize;
    }
    out
}

/// Decodes a `VFIO_IOMMU_GET_INFO` buffer (struct `vfio_iommu_type1_info` and its capability chain).
pub fn parse_iommu_info(buf: &[u8]) -> Option<IommuInfo> {
    let flags = u32_at(buf, 4)?;
    let page_sizes = if flags & b::VFIO_IOMMU_INFO_PGSIZES != 0 { u64_at(buf, 8)? } else { 0 };
    let mut info = IommuInfo { page_sizes, iova_ranges: Vec::new(), dma_avail: None };
    if flags & b::VFIO_IOMMU_INFO_CAPS == 0 {
        return Some(info);
    }
    for (id, _version, off) in caps(buf, u32_at(buf, 16)?) {
        match id as u32 {
            b::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE => {
                let n = u32_at(buf, off + 8)? as usize;
                for i in 0..n.min(4096) {
                    let at = off + 16 + i * 16;
                    let (Some(s), Some(e)) = (u64_at(buf, at), u64_at(buf, at + 8)) else { break };
                    if let Some(r) = IovaRange::new(s, e) {
                        info.iova_ranges.push(r);
                    }
                }
            }
            b::VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL => info.dma_avail = u32_at(buf, off + 8),
            _ => {}
        }
    }
    Some(info)
}

/// What `VFIO_DEVICE_GET_INFO` says about a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// Raw `VFIO_DEVICE_FLAGS_*`.
    pub flags: u32,
    /// Number of regions (9 for PCI: BAR0-5, ROM, config, VGA).
    pub num_regions: u32,
    /// Number of interrupt indexes (5 for PCI: INTx, MSI, MSI-X, error, request).
    pub num_irqs: u32,
}

impl DeviceInfo {
    /// `VFIO_DEVICE_FLAGS_RESET`: `VFIO_DEVICE_RESET` is supported.
    pub fn reset_supported(&self) -> bool {
        self.flags & b::VFIO_DEVICE_FLAGS_RESET != 0
    }
    /// `VFIO_DEVICE_FLAGS_PCI`.
    pub fn is_pci(&self) -> bool {
        self.flags & b::VFIO_DEVICE_FLAGS_PCI != 0
    }
}

/// One region of a device (`VFIO_DEVICE_GET_REGION_INFO`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RegionInfo {
    /// Region index (PCI: 0-5 BARs, 6 ROM, 7 config space, 8 VGA).
    pub index: u32,
    /// Size in bytes (0: the region does not exist, e.g. an unimplemented BAR).
    pub size: u64,
    /// Offset of the region within the device file.
    pub offset: u64,
    /// Raw `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    /// Areas that may be mmapped (offset, size within the region), from the sparse-mmap capability;
    /// `None` when the whole region may be mapped (if [`RegionInfo::mmap`]).
    pub sparse_mmap: Option<Vec<(u64, u64)>>,
}

impl RegionInfo {
    /// Readable through the device file.
    pub fn read(&self) -> bool {
        self.flags & b::VFIO_REGION_INFO_FLAG_READ != 0
    }
    /// Writable through the device file.
    pub fn write(&self) -> bool {
        self.flags & b::VFIO_REGION_INFO_FLAG_WRITE != 0
    }
    /// May be mmapped.
    pub fn mmap(&self) -> bool {
        self.flags & b::VFIO_REGION_INFO_FLAG_MMAP != 0
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

/// Decodes a `VFIO_DEVICE_GET_REGION_INFO` buffer (struct `vfio_region_info` and its capabilities).
pub fn parse_region_info(buf: &[u8]) -> Option<RegionInfo> {
    let flags = u32_at(buf, 4)?;
    let mut r = RegionInfo {
        index: u32_at(buf, 8)?,
        size: u64_at(buf, 16)?,
        offset: u64_at(buf, 24)?,
        flags,
        sparse_mmap: None,
    };
    if flags & b::VFIO_REGION_INFO_FLAG_CAPS != 0 {
        for (id, _version, off) in caps(buf, u32_at(buf, 12)?) {
            if id as u32 == b::VFIO_REGION_INFO_CAP_SPARSE_MMAP {
                let n = u32_at(buf, off + 8)? as usize;
                let mut areas = Vec::new();
                for i in 0..n.min(1024) {
                    let at = off + 16 + i * 16;
                    let (Some(o), Some(s)) = (u64_at(buf, at), u64_at(buf, at + 8)) else { break };
                    areas.push((o, s));
                }
                r.sparse_mmap = Some(areas);
            }
        }
    }
    Some(r)
}

/// One interrupt index of a device (`VFIO_DEVICE_GET_IRQ_INFO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IrqInfo {
    /// Index (PCI: 0 INTx, 1 MSI, 2 MSI-X, 3 error, 4 request).
    pub index: u32,
    /// How many interrupts the index has (0: none).
    pub count: u32,
    /// Raw `VFIO_IRQ_INFO_*`.
    pub flags: u32,
}

impl IrqInfo {
    /// Can signal an eventfd.
    pub fn eventfd(&self) -> bool {
        self.flags & b::VFIO_IRQ_INFO_EVENTFD != 0
    }
    /// Can be masked and unmasked.
    pub fn maskable(&self) -> bool {
        self.flags & b::VFIO_IRQ_INFO_MASKABLE != 0
    }
    /// Masked automatically when it fires (INTx): unmask after handling.
    pub fn automasked(&self) -> bool {
        self.flags & b::VFIO_IRQ_INFO_AUTOMASKED != 0
    }
}

/// Interrupt kinds of a PCI device, by VFIO index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
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
            IrqKind::Intx => b::VFIO_PCI_INTX_IRQ_INDEX,
            IrqKind::Msi => b::VFIO_PCI_MSI_IRQ_INDEX,
            IrqKind::Msix => b::VFIO_PCI_MSIX_IRQ_INDEX,
            IrqKind::Err => b::VFIO_PCI_ERR_IRQ_INDEX,
            IrqKind::Req => b::VFIO_PCI_REQ_IRQ_INDEX,
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

    fn push32(v: &mut Vec<u8>, x: u32) {
        v.extend_from_slice(&x.to_ne_bytes());
    }
    fn push64(v: &mut Vec<u8>, x: u64) {
        v.extend_from_slice(&x.to_ne_bytes());
    }
    fn push_cap(v: &mut Vec<u8>, id: u16, next: u32) {
        v.extend_from_slice(&id.to_ne_bytes());
        v.extend_from_slice(&1u16.to_ne_bytes());
        push32(v, next);
    }

    /// The buffer a 6.1 kernel returns with emulated VT-d: 4K|2M|1G pages, two IOVA ranges around the
    /// MSI window, a migration cap, and 65535 mappings available.
    fn vtd_info() -> Vec<u8> {
        let mut v = Vec::new();
        push32(&mut v, 120); // argsz
        push32(&mut v, b::VFIO_IOMMU_INFO_PGSIZES | b::VFIO_IOMMU_INFO_CAPS);
        push64(&mut v, 0x4020_1000);
        push32(&mut v, 24); // cap_offset
        push32(&mut v, 0);
        // iova range cap at 24: header, nr_iovas, reserved, 2 ranges → 16 + 32 = 48 bytes
        push_cap(&mut v, 1, 72);
        push32(&mut v, 2);
        push32(&mut v, 0);
        push64(&mut v, 0);
        push64(&mut v, 0xfedf_ffff);
        push64(&mut v, 0xfef0_0000);
        push64(&mut v, (1 << 39) - 1);
        // migration cap at 72 (32 bytes), then dma avail at 104
        push_cap(&mut v, 2, 104);
        push32(&mut v, 0);
        push32(&mut v, 0);
        push64(&mut v, 0x1000);
        push64(&mut v, 0);
        push_cap(&mut v, 3, 0);
        push32(&mut v, 65535);
        push32(&mut v, 0);
        v
    }

    #[test]
    fn iommu_info_yields_page_sizes_iova_ranges_and_dma_avail() {
        let info = parse_iommu_info(&vtd_info()).unwrap();
        assert_eq!(info.min_page_size(), 4096);
        assert_eq!(
            info.iova_ranges,
            vec![IovaRange::new(0, 0xfedf_ffff).unwrap(), IovaRange::new(0xfef0_0000, (1 << 39) - 1).unwrap()]
        );
        assert_eq!(info.dma_avail, Some(65535));
    }

    #[test]
    fn iommu_info_without_caps_has_no_ranges_and_unknown_avail() {
        let mut v = vtd_info();
        v[4..8].copy_from_slice(&b::VFIO_IOMMU_INFO_PGSIZES.to_ne_bytes());
        let info = parse_iommu_info(&v).unwrap();
        assert!(info.iova_ranges.is_empty());
        assert_eq!(info.dma_avail, None);
    }

    #[test]
    fn truncated_or_looping_capability_chains_do_not_hang_or_panic() {
        let mut v = vtd_info();
        v[104 + 4..104 + 8].copy_from_slice(&24u32.to_ne_bytes()); // dma avail points back to the first cap
        assert_eq!(parse_iommu_info(&v).unwrap().dma_avail, Some(65535));
        let v = vtd_info();
        for cut in 0..v.len() {
            let _ = parse_iommu_info(&v[..cut]);
        }
    }

    #[test]
    fn region_info_with_sparse_mmap_lists_only_those_areas() {
        let mut v = Vec::new();
        push32(&mut v, 64);
        push32(&mut v, b::VFIO_REGION_INFO_FLAG_READ | b::VFIO_REGION_INFO_FLAG_MMAP | b::VFIO_REGION_INFO_FLAG_CAPS);
        push32(&mut v, 0);
        push32(&mut v, 32);
        push64(&mut v, 0x4000);
        push64(&mut v, 0);
        push_cap(&mut v, b::VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16, 0);
        push32(&mut v, 1);
        push32(&mut v, 0);
        push64(&mut v, 0);
        push64(&mut v, 0x2000);
        let r = parse_region_info(&v).unwrap();
        assert!(r.read() && !r.write() && r.mmap());
        assert_eq!(r.mappable_areas(), vec![(0, 0x2000)]);
    }

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
