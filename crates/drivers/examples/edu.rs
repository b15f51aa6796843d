//! `edu ADDR`: drives QEMU's `edu` device at PCI address ADDR through VFIO and proves DMA isolation.
//! `edu --sim [ADDR]`: runs the same driver against the software IOMMU and edu model of `iommu-sim`
//! (requester ID from ADDR, default `0000:01:00.0`); the blocked DMAs list the recorded faults.
//!
//! Prints one JSON object per line (`"step"`, `"ok"`, details); exits 0 only if every step is ok, 1 if a
//! step failed, 2 on bad usage. On hardware, the device's group must be bound to vfio-pci
//! (`iommuctl bind ADDR`).

use std::process::ExitCode;

use iommu_backend::DmaSpace;
use iommu_drivers::{edu, Reporter};
use iommu_sim::backend as sim_backend;
use iommu_vfio::VfioDevice;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut r = Reporter::stdout();
    match args.as_slice() {
        ["--sim"] => sim(&mut r, "0000:01:00.0"),
        ["--sim", addr] => sim(&mut r, addr),
        [addr] if !addr.starts_with('-') => vfio(&mut r, addr),
        _ => {
            eprintln!("usage: edu PCI_ADDRESS | edu --sim [PCI_ADDRESS]");
            return ExitCode::from(2);
        }
    }
    if r.all_ok() {
        ExitCode::SUCCESS
    } else {
        eprintln!("edu: failed steps: {}", r.failed().join(", "));
        ExitCode::from(1)
    }
}

fn vfio(r: &mut Reporter<'_>, addr: &str) {
    let dev = match VfioDevice::open(addr) {
        Ok(d) => d,
        Err(e) => return r.error("open", &e),
    };
    let space = match dev.dma_space() {
        Ok(s) => s.with_dma_mask(edu::DMA_MASK_BITS),
        Err(e) => return r.error("dma-space", &e),
    };
    let _ = edu::run(&dev, &space, r);
}

fn sim(r: &mut Reporter<'_>, addr: &str) {
    let (dev, backend) = match sim_backend::edu(addr) {
        Ok(x) => x,
        Err(e) => return r.error("open", &e),
    };
    let space = match DmaSpace::new(backend, &[]) {
        Ok(s) => s.with_dma_mask(edu::DMA_MASK_BITS),
        Err(e) => return r.error("dma-space", &e),
    };
    let _ = edu::run(&dev, &space, r);
}
