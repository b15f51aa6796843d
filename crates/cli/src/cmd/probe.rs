//! `iommuctl probe ADDR`: open a device through VFIO and report what the kernel says about it: regions,
//! interrupts, reset support, and the container's IOMMU (page sizes, valid IOVA ranges, mapping limit).

use std::fmt;
use std::path::Path;

use iommu_pci::PciAddress;
use iommu_vfio::host::ReservedRegion;
use iommu_vfio::info::region_name;
use iommu_vfio::{error_chain, BackendKind, DeviceAccess, DmaBackend, IovaRange, IrqKind, VfioDevice, VfioError};
use serde::Serialize;

use crate::exit::{fail, Exit};
use crate::output::{sanitize, Outcome, Sorted};

fn exit_for(e: &VfioError) -> Exit {
    match e {
        VfioError::NotViable { .. }
        | VfioError::GroupNotBound { .. }
        | VfioError::NoGroup { .. }
        | VfioError::NoCdev { .. }
        | VfioError::NoIommufd { .. } => Exit::Negative,
        VfioError::Sysfs { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Exit::Negative,
        VfioError::Invalid(_) => Exit::BadInput,
        _ => Exit::Failed,
    }
}

fn size_text(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

fn page_sizes(bitmap: u64) -> Vec<u64> {
    (0..64).filter(|b| bitmap & (1u64 << b) != 0).map(|b| 1u64 << b).collect()
}

/// What VFIO says about one device.
#[derive(Serialize)]
pub struct ProbeReport {
    address: String,
    group: u32,
    backend: &'static str,
    /// The device cdev on iommufd.
    cdev: Option<String>,
    /// On iommufd: the device ID, the IOAS and the hardware page table it is attached to.
    iommufd: Option<IommufdIds>,
    flags: u32,
    pci: bool,
    reset_supported: bool,
    regions: Vec<Region>,
    irqs: Vec<Irq>,
    iommu: Iommu,
    reserved_regions: Vec<ReservedRegion>,
}

#[derive(Serialize)]
struct Region {
    index: u32,
    name: String,
    size: u64,
    offset: u64,
    flags: u32,
    read: bool,
    write: bool,
    mmap: bool,
    sparse_mmap: Option<Vec<(u64, u64)>>,
}

#[derive(Serialize)]
struct Irq {
    index: u32,
    name: String,
    count: u32,
    flags: u32,
    eventfd: bool,
    maskable: bool,
    automasked: bool,
}

#[derive(Serialize)]
struct IommufdIds {
    devid: u32,
    ioas: u32,
    hwpt: u32,
}

#[derive(Serialize)]
struct Iommu {
    page_sizes: Vec<u64>,
    iova_ranges: Vec<IovaRange>,
    dma_avail: Option<u32>,
}

/// `iommuctl probe ADDR [--backend container|iommufd]` on the live host below `root`.
pub fn run(root: &Path, address: &str, backend: Option<&str>) -> anyhow::Result<Outcome> {
    let addr = PciAddress::parse(address)?;
    let kind = backend.map(str::parse::<BackendKind>).transpose().map_err(|e| fail(Exit::BadInput, e.to_string()))?;
    let host = iommu_vfio::Host::at(root.to_path_buf());
    let dev = VfioDevice::open_backend(&host, kind, &addr.to_string())
        .map_err(|e| fail(exit_for(&e), sanitize(&error_chain(&e))))?;
    let info = dev.device_info();
    let iommu = dev.backend().iommu_info().map_err(|e| fail(Exit::Failed, error_chain(&e)))?;
    let reserved_regions = host.reserved_regions(dev.group_id()).unwrap_or_default();
    let regions = dev
        .regions()
        .iter()
        .filter(|r| r.size > 0)
        .map(|r| Region {
            index: r.index,
            name: region_name(r.index),
            size: r.size,
            offset: r.offset,
            flags: r.flags,
            read: r.read(),
            write: r.write(),
            mmap: r.mmap(),
            sparse_mmap: r.sparse_mmap.clone(),
        })
        .collect();
    let irqs = dev
        .irqs()
        .iter()
        .map(|i| Irq {
            index: i.index,
            name: IrqKind::from_index(i.index).map(|k| k.name().to_string()).unwrap_or_else(|| i.index.to_string()),
            count: i.count,
            flags: i.flags,
            eventfd: i.eventfd(),
            maskable: i.maskable(),
            automasked: i.automasked(),
        })
        .collect();
    let iommufd =
        dev.iommufd_ids().zip(dev.iommufd()).map(|((devid, hwpt), fd)| IommufdIds { devid, ioas: fd.ioas_id(), hwpt });
    Ok(Outcome::report(Sorted(ProbeReport {
        address: dev.address().to_string(),
        group: dev.group_id(),
        backend: dev.backend().kind().name(),
        cdev: dev.cdev().map(|p| p.display().to_string()),
        iommufd,
        flags: info.flags,
        pci: info.is_pci(),
        reset_supported: info.reset_supported(),
        regions,
        irqs,
        iommu: Iommu {
            page_sizes: page_sizes(iommu.page_sizes),
            iova_ranges: iommu.iova_ranges.clone(),
            dma_avail: iommu.dma_avail,
        },
        reserved_regions,
    })))
}

fn flag_words<'a>(flags: &[(bool, &'a str)]) -> Vec<&'a str> {
    flags.iter().filter_map(|(on, n)| on.then_some(*n)).collect()
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}  IOMMU group {} (viable), VFIO device flags {:#x}{}",
            self.address,
            self.group,
            self.flags,
            if self.pci { " (PCI)" } else { "" }
        )?;
        match (&self.cdev, &self.iommufd) {
            (Some(cdev), Some(ids)) => writeln!(
                f,
                "backend: iommufd (/dev/iommu): cdev {}, device ID {}, IOAS {}, page table {}",
                sanitize(cdev),
                ids.devid,
                ids.ioas,
                ids.hwpt
            )?,
            _ => writeln!(f, "backend: container (/dev/vfio/vfio, group /dev/vfio/{})", self.group)?,
        }
        writeln!(f, "regions:")?;
        for r in &self.regions {
            let mut w = flag_words(&[(r.read, "read"), (r.write, "write"), (r.mmap, "mmap")]);
            if r.sparse_mmap.is_some() {
                w.push("sparse");
            }
            writeln!(f, "  {:<2} {:<7} {:>8} ({:#x})  {}", r.index, r.name, size_text(r.size), r.size, w.join(" "))?;
        }
        writeln!(f, "interrupts:")?;
        for i in &self.irqs {
            let w = flag_words(&[(i.eventfd, "eventfd"), (i.maskable, "maskable"), (i.automasked, "automasked")]);
            writeln!(f, "  {:<5} {:>4}  {}", i.name, i.count, w.join(" "))?;
        }
        writeln!(f, "reset: {}", if self.reset_supported { "supported (VFIO_DEVICE_RESET)" } else { "NOT supported" })?;
        let ps: Vec<String> = self.iommu.page_sizes.iter().copied().map(size_text).collect();
        let ranges: Vec<String> = self.iommu.iova_ranges.iter().map(|r| r.to_string()).collect();
        writeln!(
            f,
            "IOMMU: page sizes {}; IOVA ranges {}; {}",
            if ps.is_empty() { "not reported".into() } else { ps.join(", ") },
            if ranges.is_empty() { "not reported".into() } else { ranges.join(", ") },
            self.iommu
                .dma_avail
                .map(|n| format!("{n} more DMA mappings allowed"))
                .unwrap_or_else(|| "mapping limit not reported".into())
        )?;
        for r in &self.reserved_regions {
            writeln!(f, "reserved (group {}): {} {}", self.group, r.range, sanitize(&r.kind))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_exit_codes() {
        let nv = VfioError::NotViable { group: 1, blockers: vec![] };
        assert_eq!(exit_for(&nv), Exit::Negative);
        assert_eq!(exit_for(&VfioError::Invalid("x".into())), Exit::BadInput);
        let io = VfioError::Open { path: "/dev/vfio/vfio".into(), source: std::io::Error::from_raw_os_error(13) };
        assert_eq!(exit_for(&io), Exit::Failed);
    }

    #[test]
    fn sizes_and_page_sizes_read_naturally() {
        assert_eq!(size_text(1 << 20), "1 MiB");
        assert_eq!(size_text(256), "256 B");
        assert_eq!(page_sizes(0x4020_1000), vec![4096, 2 << 20, 1 << 30]);
    }
}
