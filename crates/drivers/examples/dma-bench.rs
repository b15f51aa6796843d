//! `dma-bench ADDR [SCALE]`: map+unmap of 4 KiB, 64 KiB and 2 MiB buffers in the container of the device at
//! ADDR, through the library (`DmaSpace::map` + `DmaMapping::unmap`: IOVA allocation, limit bookkeeping,
//! error mapping) and through the bare ioctl sequence (`sys::iommu_map_dma` + `sys::iommu_unmap_dma` at a
//! fixed IOVA), after one warm-up pass each, in 7 rounds that alternate which path goes first. Prints one
//! JSON line per size with ns/op for both; SCALE multiplies the iteration counts (default 1).

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Instant;

use iommu_drivers::Reporter;
use iommu_vfio::{sys, BackendError, DmaBuf, DmaBuffer, DmaDir, VfioDevice, VfioError};
use serde_json::json;

const ROUNDS: usize = 7;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn bench(dev: &VfioDevice, size: usize, iters: usize, r: &mut Reporter<'_>) -> Result<(), VfioError> {
    let space = dev.dma_space()?;
    let container = dev.container().clone();
    let buf = DmaBuf::new(DmaBuffer::new(size)?);
    let area = buf.downcast_ref::<DmaBuffer>().map(DmaBuffer::area).expect("a DmaBuffer");
    buf.fill(0, size, 1)?; // fault the pages in before timing
    let hole = space.reserve(size as u64)?; // the bare path's IOVA, kept away from the library's
    let flags = iommu_vfio::dma::map_flags(DmaDir::Bidirectional);
    let raw_err = |source| BackendError::Map { iova: hole.iova(), len: size as u64, source };
    let (mut lib, mut raw) = (Vec::new(), Vec::new());
    let run_lib = || -> Result<f64, VfioError> {
        let t = Instant::now();
        for _ in 0..iters {
            space.map(&buf, DmaDir::Bidirectional)?.unmap()?;
        }
        Ok(t.elapsed().as_nanos() as f64 / iters as f64)
    };
    let run_raw = || -> Result<f64, VfioError> {
        let t = Instant::now();
        for _ in 0..iters {
            sys::iommu_map_dma(container.as_fd(), area, 0, size, hole.iova(), flags).map_err(raw_err)?;
            sys::iommu_unmap_dma(container.as_fd(), hole.iova(), size as u64).map_err(raw_err)?;
        }
        Ok(t.elapsed().as_nanos() as f64 / iters as f64)
    };
    run_lib()?; // warm-up: the allocator's first (slow-path) allocation, page tables
    run_raw()?;
    for round in 0..ROUNDS {
        // Alternate which goes first, so neither always runs on a warmer cache.
        if round % 2 == 0 {
            lib.push(run_lib()?);
            raw.push(run_raw()?);
        } else {
            raw.push(run_raw()?);
            lib.push(run_lib()?);
        }
    }
    let (lib_min, raw_min) =
        (lib.iter().copied().fold(f64::MAX, f64::min), raw.iter().copied().fold(f64::MAX, f64::min));
    let (lib_med, raw_med) = (median(&mut lib), median(&mut raw));
    r.step(
        &format!("map-unmap-{size}"),
        true,
        json!({ "size": size, "iters": iters, "rounds": ROUNDS,
                "lib_ns_median": lib_med.round(), "raw_ns_median": raw_med.round(),
                "lib_ns_min": lib_min.round(), "raw_ns_min": raw_min.round(),
                "overhead_pct_median": ((lib_med / raw_med - 1.0) * 1000.0).round() / 10.0,
                "overhead_pct_min": ((lib_min / raw_min - 1.0) * 1000.0).round() / 10.0 }),
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, scale) = match args.as_slice() {
        [a] => (a, 1.0),
        [a, s] => match s.parse::<f64>() {
            Ok(s) if s > 0.0 => (a, s),
            _ => {
                eprintln!("usage: dma-bench PCI_ADDRESS [SCALE]");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: dma-bench PCI_ADDRESS [SCALE]");
            return ExitCode::from(2);
        }
    };
    let mut r = Reporter::stdout();
    let dev = match VfioDevice::open(addr) {
        Ok(d) => d,
        Err(e) => {
            r.error("open", &e);
            return ExitCode::from(1);
        }
    };
    for (size, iters) in [(4096usize, 400.0), (64 << 10, 200.0), (2 << 20, 20.0)] {
        let iters = ((iters * scale) as usize).max(1);
        if let Err(e) = bench(&dev, size, iters, &mut r) {
            r.error(&format!("map-unmap-{size}"), &e);
        }
    }
    if r.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
