//! What the kernel reports about a container and a device, decoded from the raw ioctl buffers by pure
//! functions (tested on hand-built byte strings). The types are the driver contract's
//! (`iommu_backend::info`), re-exported here.

use vfio_bindings::bindings::vfio as b;

pub use iommu_backend::info::{flags, region_name, DeviceInfo, IommuInfo, IovaRange, IrqInfo, IrqKind, RegionInfo};

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
    fn the_contracts_flag_values_are_the_kernels() {
        assert_eq!(flags::DEVICE_RESET, b::VFIO_DEVICE_FLAGS_RESET);
        assert_eq!(flags::DEVICE_PCI, b::VFIO_DEVICE_FLAGS_PCI);
        assert_eq!(flags::REGION_READ, b::VFIO_REGION_INFO_FLAG_READ);
        assert_eq!(flags::REGION_WRITE, b::VFIO_REGION_INFO_FLAG_WRITE);
        assert_eq!(flags::REGION_MMAP, b::VFIO_REGION_INFO_FLAG_MMAP);
        assert_eq!(flags::REGION_CAPS, b::VFIO_REGION_INFO_FLAG_CAPS);
        assert_eq!(flags::IRQ_EVENTFD, b::VFIO_IRQ_INFO_EVENTFD);
        assert_eq!(flags::IRQ_MASKABLE, b::VFIO_IRQ_INFO_MASKABLE);
        assert_eq!(flags::IRQ_AUTOMASKED, b::VFIO_IRQ_INFO_AUTOMASKED);
        assert_eq!(flags::IRQ_NORESIZE, b::VFIO_IRQ_INFO_NORESIZE);
        assert_eq!(flags::PCI_INTX_IRQ_INDEX, b::VFIO_PCI_INTX_IRQ_INDEX);
        assert_eq!(flags::PCI_MSI_IRQ_INDEX, b::VFIO_PCI_MSI_IRQ_INDEX);
        assert_eq!(flags::PCI_MSIX_IRQ_INDEX, b::VFIO_PCI_MSIX_IRQ_INDEX);
        assert_eq!(flags::PCI_ERR_IRQ_INDEX, b::VFIO_PCI_ERR_IRQ_INDEX);
        assert_eq!(flags::PCI_REQ_IRQ_INDEX, b::VFIO_PCI_REQ_IRQ_INDEX);
        assert_eq!(iommu_backend::CONFIG_REGION, b::VFIO_PCI_CONFIG_REGION_INDEX);
    }
}
