//! `dma-bench ADDR [SCALE] [--backend container|iommufd]`: map+unmap of 4 KiB, 64 KiB and 2 MiB buffers in
//! the device's address space (its type1 container, or its iommufd IOAS; by default whichever the host
//! offers), through the library (`DmaSpace::map` + `DmaMapping::unmap`: IOVA allocation, limit
//! bookkeeping, error mapping) and through the bare ioctl sequence at a fixed IOVA (`VFIO_IOMMU_MAP_DMA` +
//! `VFIO_IOMMU_UNMAP_DMA`, or `IOMMU_IOAS_MAP` + `IOMMU_IOAS_UNMAP`), after one warm-up pass each, in 7
//! rounds that alternate which path goes first. Prints one JSON line per size with ns/op for both and the
//! backend; SCALE multiplies the iteration counts (default 1).

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Instant;

use iommu_drivers::Reporter;
use iommu_vfio::{sys, Backend, BackendError, DmaBuf, DmaBuffer, DmaDir, Host, VfioDevice, VfioError};

mod common;
use serde_json::json;

const ROUNDS: usize = 7;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn bench(dev: &VfioDevice, size: usize, iters: usize, r: &mut Reporter<'_>) -> Result<(), VfioError> {
    let space = dev.dma_space()?;
    let backend = dev.backend();
    let buf = DmaBuf::new(DmaBuffer::new(size)?);
    let area = buf.downcast_ref::<DmaBuffer>().map(DmaBuffer::area).expect("a DmaBuffer");
    buf.fill(0, size, 1)?; // fault the pages in before timing
    let hole = space.reserve(size as u64)?; // the bare path's IOVA, kept away from the library's
    let raw_err = |source| BackendError::Map { iova: hole.iova(), len: size as u64, source };
    // The bare ioctls of whichever backend the device is on.
    let raw_pair = || -> std::io::Result<()> {
        match &backend {
            Backend::Container(c) => {
                let flags = iommu_vfio::dma::map_flags(DmaDir::Bidirectional);
                sys::iommu_map_dma(c.as_fd(), area, 0, size, hole.iova(), flags)?;
                sys::iommu_unmap_dma(c.as_fd(), hole.iova(), size as u64)?;
            }
            Backend::Iommufd(i) => {
                let flags = iommu_vfio::iommufd::map_flags(DmaDir::Bidirectional);
                let ioas = i.ioas_id();
                sys::iommufd::ioas_map(i.as_fd(), ioas, area, 0, size, Some(hole.iova()), flags)?;
                sys::iommufd::ioas_unmap(i.as_fd(), ioas, hole.iova(), size as u64)?;
            }
        }
        Ok(())
    };
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
            raw_pair().map_err(raw_err)?;
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
        json!({ "size": size, "iters": iters, "rounds": ROUNDS, "backend": backend.kind().name(),
                "lib_ns_median": lib_med.round(), "raw_ns_median": raw_med.round(),
                "lib_ns_min": lib_min.round(), "raw_ns_min": raw_min.round(),
                "overhead_pct_median": ((lib_med / raw_med - 1.0) * 1000.0).round() / 10.0,
                "overhead_pct_min": ((lib_min / raw_min - 1.0) * 1000.0).round() / 10.0 }),
    );
    Ok(())
}

fn main() -> ExitCode {
    const USAGE: &str = "usage: dma-bench PCI_ADDRESS [SCALE] [--backend container|iommufd]";
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let Ok(kind) = common::take_backend(&mut args) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let (addr, scale) = match args.as_slice() {
        [a] => (a, 1.0),
        [a, s] => match s.parse::<f64>() {
            Ok(s) if s > 0.0 => (a, s),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut r = Reporter::stdout();
    let dev = match VfioDevice::open_backend(&Host::live(), kind, addr) {
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
