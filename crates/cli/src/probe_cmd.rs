//! `iommuctl probe ADDR`: open a device through VFIO and report what the kernel says about it: regions,
//! interrupts, reset support, and the container's IOMMU (page sizes, valid IOVA ranges, mapping limit).

use std::path::PathBuf;

use iommu_pci::PciAddress;
use iommu_vfio::info::region_name;
use iommu_vfio::{error_chain, DeviceAccess, DmaBackend, IrqKind, VfioDevice, VfioError};
use serde_json::{json, Value};

use crate::commands::print_json;
use crate::exit::{fail, Exit};
use crate::render::sanitize;
use crate::Cli;

fn exit_for(e: &VfioError) -> Exit {
    match e {
        VfioError::NotViable { .. } | VfioError::GroupNotBound { .. } | VfioError::NoGroup { .. } => Exit::Negative,
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

/// `iommuctl probe`.
pub fn probe(cli: &Cli, address: &str) -> anyhow::Result<Exit> {
    if cli.from.is_some() {
        return Err(fail(Exit::BadInput, "probe opens a live device; it cannot run --from a snapshot"));
    }
    if cli.from_lspci.is_some() {
        return Err(fail(Exit::BadInput, "probe opens a live device; it cannot run --from-lspci a dump"));
    }
    let addr = PciAddress::parse(address)?;
    let host = iommu_vfio::Host::at(cli.root.clone().unwrap_or_else(|| PathBuf::from("/")));
    let dev = VfioDevice::open_with(&host, None, &addr.to_string())
        .map_err(|e| fail(exit_for(&e), sanitize(&error_chain(&e))))?;
    let info = dev.device_info();
    let iommu = dev.container().iommu_info().map_err(|e| fail(Exit::Failed, error_chain(&e)))?;
    let reserved = host.reserved_regions(dev.group_id()).unwrap_or_default();
    let regions: Vec<Value> = dev
        .regions()
        .iter()
        .filter(|r| r.size > 0)
        .map(|r| {
            json!({ "index": r.index, "name": region_name(r.index), "size": r.size, "offset": r.offset, "flags": r.flags,
                    "read": r.read(), "write": r.write(), "mmap": r.mmap(), "sparse_mmap": r.sparse_mmap })
        })
        .collect();
    let irqs: Vec<Value> = dev
        .irqs()
        .iter()
        .map(|i| {
            let name =
                IrqKind::from_index(i.index).map(|k| k.name().to_string()).unwrap_or_else(|| i.index.to_string());
            json!({ "index": i.index, "name": name, "count": i.count, "flags": i.flags, "eventfd": i.eventfd(),
                    "maskable": i.maskable(), "automasked": i.automasked() })
        })
        .collect();
    if cli.json {
        print_json(&json!({
            "address": dev.address(),
            "group": dev.group_id(),
            "flags": info.flags,
            "pci": info.is_pci(),
            "reset_supported": info.reset_supported(),
            "regions": regions,
            "irqs": irqs,
            "iommu": {
                "page_sizes": page_sizes(iommu.page_sizes),
                "iova_ranges": iommu.iova_ranges,
                "dma_avail": iommu.dma_avail,
            },
            "reserved_regions": reserved,
        }))?;
        return Ok(Exit::Ok);
    }
    use std::fmt::Write as _;
    let mut o = String::new();
    writeln!(
        o,
        "{}  IOMMU group {} (viable), VFIO device flags {:#x}{}",
        dev.address(),
        dev.group_id(),
        info.flags,
        if info.is_pci() { " (PCI)" } else { "" }
    )?;
    writeln!(o, "regions:")?;
    for r in dev.regions().iter().filter(|r| r.size > 0) {
        let mut f: Vec<&str> = [(r.read(), "read"), (r.write(), "write"), (r.mmap(), "mmap")]
            .iter()
            .filter_map(|(on, n)| on.then_some(*n))
            .collect();
        if r.sparse_mmap.is_some() {
            f.push("sparse");
        }
        writeln!(
            o,
            "  {:<2} {:<7} {:>8} ({:#x})  {}",
            r.index,
            region_name(r.index),
            size_text(r.size),
            r.size,
            f.join(" ")
        )?;
    }
    writeln!(o, "interrupts:")?;
    for i in dev.irqs() {
        let name = IrqKind::from_index(i.index).map(|k| k.name().to_string()).unwrap_or_else(|| i.index.to_string());
        let f: Vec<&str> = [(i.eventfd(), "eventfd"), (i.maskable(), "maskable"), (i.automasked(), "automasked")]
            .iter()
            .filter_map(|(on, n)| on.then_some(*n))
            .collect();
        writeln!(o, "  {name:<5} {:>4}  {}", i.count, f.join(" "))?;
    }
    writeln!(o, "reset: {}", if info.reset_supported() { "supported (VFIO_DEVICE_RESET)" } else { "NOT supported" })?;
    let ps: Vec<String> = page_sizes(iommu.page_sizes).into_iter().map(size_text).collect();
    let ranges: Vec<String> = iommu.iova_ranges.iter().map(|r| r.to_string()).collect();
    writeln!(
        o,
        "IOMMU: page sizes {}; IOVA ranges {}; {}",
        if ps.is_empty() { "not reported".into() } else { ps.join(", ") },
        if ranges.is_empty() { "not reported".into() } else { ranges.join(", ") },
        iommu
            .dma_avail
            .map(|n| format!("{n} more DMA mappings allowed"))
            .unwrap_or_else(|| "mapping limit not reported".into())
    )?;
    for r in &reserved {
        writeln!(o, "reserved (group {}): {} {}", dev.group_id(), r.range, sanitize(&r.kind))?;
    }
    crate::output::stdout(&o)?;
    Ok(Exit::Ok)
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
