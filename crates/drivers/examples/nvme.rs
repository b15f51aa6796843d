//! `nvme ADDR`: drives the NVMe controller at PCI address ADDR through VFIO: reset, enable, admin queues,
//! Identify Controller and Namespace, one I/O queue pair, and a verified 1 MiB write/read round trip at
//! byte offset 1 MiB of namespace 1 (THIS OVERWRITES THAT DATA).
//!
//! Prints one JSON object per line (`"step"`, `"ok"`, details); exits 0 only if every step is ok, 1 if a
//! step failed, 2 on bad usage. The device's group must be bound to vfio-pci (`iommuctl bind ADDR`).

use std::process::ExitCode;

use iommu_drivers::{nvme, Reporter};
use iommu_vfio::VfioDevice;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr] = args.as_slice() else {
        eprintln!("usage: nvme PCI_ADDRESS");
        return ExitCode::from(2);
    };
    let mut r = Reporter::stdout();
    let dev = match VfioDevice::open(addr) {
        Ok(d) => d,
        Err(e) => {
            r.error("open", &e);
            return ExitCode::from(1);
        }
    };
    let space = match dev.dma_space() {
        Ok(s) => s,
        Err(e) => {
            r.error("dma-space", &e);
            return ExitCode::from(1);
        }
    };
    let _ = nvme::run(&dev, &space, &mut r);
    if r.all_ok() {
        ExitCode::SUCCESS
    } else {
        eprintln!("nvme: failed steps: {}", r.failed().join(", "));
        ExitCode::from(1)
    }
}
