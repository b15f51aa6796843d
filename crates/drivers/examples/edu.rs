//! `edu ADDR [--backend container|iommufd]`: drives QEMU's `edu` device at PCI address ADDR through VFIO
//! (the legacy container or iommufd with the device cdev; by default whichever the host offers) and
//! proves DMA isolation.
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
use iommu_vfio::{BackendKind, Host, VfioDevice};

mod common;

fn main() -> ExitCode {
    const USAGE: &str = "usage: edu PCI_ADDRESS [--backend container|iommufd] | edu --sim [PCI_ADDRESS]";
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let Ok(kind) = common::take_backend(&mut args) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut r = Reporter::stdout();
    match args.as_slice() {
        ["--sim"] if kind.is_none() => sim(&mut r, "0000:01:00.0"),
        ["--sim", addr] if kind.is_none() => sim(&mut r, addr),
        [addr] if !addr.starts_with('-') => vfio(&mut r, addr, kind),
        _ => {
            eprintln!("{USAGE}");
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

fn vfio(r: &mut Reporter<'_>, addr: &str, kind: Option<BackendKind>) {
    let dev = match VfioDevice::open_backend(&Host::live(), kind, addr) {
        Ok(d) => d,
        Err(e) => return r.error("open", &e),
    };
    common::opened(r, &dev);
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
