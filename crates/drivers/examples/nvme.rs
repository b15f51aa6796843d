//! `nvme ADDR [--backend container|iommufd]`: drives the NVMe controller at PCI address ADDR through VFIO
//! (the legacy container or iommufd; by default whichever the host offers): reset, enable, admin queues,
//! Identify Controller and Namespace, one I/O queue pair, and a verified 1 MiB write/read round trip at
//! byte offset 1 MiB of namespace 1 (THIS OVERWRITES THAT DATA).
//!
//! `nvme ADDR --bench [SECONDS]`: instead of the round trip, 4 KiB random reads over the first 32 MiB of
//! namespace 1 at queue depths 1 and 32 for SECONDS each (default 3); one `randread-qdN` step per depth
//! with its IOPS (compare `nvme-kernel-read` on the kernel's driver).
//!
//! Prints one JSON object per line (`"step"`, `"ok"`, details); exits 0 only if every step is ok, 1 if a
//! step failed, 2 on bad usage. The device's group must be bound to vfio-pci (`iommuctl bind ADDR`).

use std::process::ExitCode;

use iommu_drivers::{nvme, Reporter};
use iommu_vfio::{Host, VfioDevice};

mod common;

fn main() -> ExitCode {
    const USAGE: &str = "usage: nvme PCI_ADDRESS [--backend container|iommufd] [--bench [SECONDS]]";
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let Ok(kind) = common::take_backend(&mut args) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let mut bench: Option<f64> = None;
    if let Some(i) = args.iter().position(|a| a == "--bench") {
        let secs = args.get(i + 1).and_then(|s| s.parse::<f64>().ok()).filter(|s| *s > 0.0);
        args.drain(i..(i + if secs.is_some() { 2 } else { 1 }));
        bench = Some(secs.unwrap_or(3.0));
    }
    let [addr] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let mut r = Reporter::stdout();
    let dev = match VfioDevice::open_backend(&Host::live(), kind, addr) {
        Ok(d) => d,
        Err(e) => {
            r.error("open", &e);
            return ExitCode::from(1);
        }
    };
    common::opened(&mut r, &dev);
    let space = match dev.dma_space() {
        Ok(s) => s,
        Err(e) => {
            r.error("dma-space", &e);
            return ExitCode::from(1);
        }
    };
    let _ = match bench {
        Some(seconds) => {
            let opts = nvme::BenchOptions { seconds, ..Default::default() };
            nvme::bench_random_read(&dev, &space, &mut r, &opts)
        }
        None => nvme::run(&dev, &space, &mut r),
    };
    if r.all_ok() {
        ExitCode::SUCCESS
    } else {
        eprintln!("nvme: failed steps: {}", r.failed().join(", "));
        ExitCode::from(1)
    }
}
