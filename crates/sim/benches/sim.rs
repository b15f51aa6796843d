//! Criterion benchmarks of the simulator's hot paths (see BENCHMARKS.md for targets and results):
//! translation on an IOTLB hit and on a miss, map+unmap pairs, 4 KiB DMA through translation next to a
//! plain memcpy, and strict vs lazy invalidation.
//!
//! `cargo bench -p iommu-sim` runs in about a minute (small sample sizes).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use iommu_sim::{Access, DmaDir, DomainId, DomainMode, Invalidation, Perm, Rid, Sim, SimConfig};

const RID: Rid = Rid(0x0100);
const PAGES: u64 = 64;

fn sim_with_domain() -> (Sim, DomainId) {
    let mut sim = Sim::new(SimConfig::default()).unwrap();
    let d = sim.create_domain(DomainMode::Translated);
    sim.attach(RID, d).unwrap();
    (sim, d)
}

fn translate(c: &mut Criterion) {
    let mut g = c.benchmark_group("translate");
    g.sample_size(30).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));

    let (mut sim, d) = sim_with_domain();
    sim.map(d, 0x10_0000, 0x4000_0000, 0x1000, Perm::RW).unwrap();
    sim.translate(RID, 0x10_0000, Access::Read).unwrap();
    g.bench_function("iotlb_hit", |b| b.iter(|| sim.translate(RID, black_box(0x10_0123), Access::Read).unwrap().phys));

    // 16,384 scattered 4 KiB pages visited in a pseudo-random order: far more than the 512-entry IOTLB
    // holds, so every translation misses and walks 4 levels.
    let (mut sim, d) = sim_with_domain();
    let n = 16_384u64;
    for i in 0..n {
        sim.map(d, 0x1000_0000 + i * 0x1000, 0x8000_0000 + ((i * 7919) % n) * 0x1000, 0x1000, Perm::RW).unwrap();
    }
    let mut i = 0u64;
    g.bench_function("iotlb_miss_page_walk", |b| {
        b.iter(|| {
            i = (i + 4099) % n;
            sim.translate(RID, black_box(0x1000_0000 + i * 0x1000), Access::Read).unwrap().phys
        })
    });
    let misses = sim.iotlb().stats().misses;
    let hits = sim.iotlb().stats().hits;
    eprintln!("iotlb_miss_page_walk: {misses} misses, {hits} hits");
    let mut i = 0u64;
    g.bench_function("software_walk_only", |b| {
        b.iter(|| {
            i = (i + 4099) % n;
            sim.lookup(d, black_box(0x1000_0000 + i * 0x1000)).unwrap().map(|l| l.phys)
        })
    });
    g.finish();
}

fn map_unmap(c: &mut Criterion) {
    let mut g = c.benchmark_group("map_unmap_pair");
    g.sample_size(30).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(1));

    // A neighbour keeps the tables alive, as in a domain in use.
    let (mut sim, d) = sim_with_domain();
    sim.map(d, 0x10_0000, 0x4000_0000, 0x1000, Perm::RW).unwrap();
    g.bench_function("iommu_api_4k", |b| {
        b.iter(|| {
            sim.map(d, black_box(0x10_1000), 0x4000_1000, 0x1000, Perm::RW).unwrap();
            sim.unmap(d, black_box(0x10_1000), 0x1000).unwrap();
        })
    });
    g.bench_function("iommu_api_2m", |b| {
        b.iter(|| {
            sim.map(d, black_box(0x20_0000), 0x4020_0000, 0x20_0000, Perm::RW).unwrap();
            sim.unmap(d, black_box(0x20_0000), 0x20_0000).unwrap();
        })
    });
    let (mut sim, _) = sim_with_domain();
    g.bench_function("iommu_api_4k_empty_domain", |b| {
        b.iter(|| {
            sim.map(DomainId(0), black_box(0x10_1000), 0x4000_1000, 0x1000, Perm::RW).unwrap();
            sim.unmap(DomainId(0), black_box(0x10_1000), 0x1000).unwrap();
        })
    });
    let (mut sim, _) = sim_with_domain();
    g.bench_function("dma_api_map_single_4k", |b| {
        b.iter(|| {
            let m = sim.map_single(RID, black_box(0x4000_0000), 4096, DmaDir::Bidirectional).unwrap();
            sim.unmap_single(m).unwrap();
        })
    });
    g.finish();
}

fn dma(c: &mut Criterion) {
    let mut g = c.benchmark_group("dma_4k");
    g.sample_size(30).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Bytes(4096));

    // 64 pages (256 KiB) on each side, visited in turn.
    let src = vec![0x5au8; 4096];
    let mut dst: Vec<Vec<u8>> = (0..PAGES).map(|_| vec![0u8; 4096]).collect();
    let mut i = 0usize;
    g.bench_function("memcpy", |b| {
        b.iter(|| {
            i = (i + 1) % PAGES as usize;
            dst[i].copy_from_slice(black_box(&src));
        })
    });

    let (mut sim, d) = sim_with_domain();
    for p in 0..PAGES {
        // Scattered physical pages; touch them so the frames exist, as RAM does.
        let phys = 0x1_0000_0000 + p * 0x10_3000;
        sim.memory().write(phys, &[1; 4096]).unwrap();
        sim.map(d, 0x100_0000 + p * 0x1000, phys, 0x1000, Perm::RW).unwrap();
    }
    let mut i = 0u64;
    g.bench_function("device_write_translated", |b| {
        b.iter(|| {
            i = (i + 1) % PAGES;
            sim.device_write(RID, black_box(0x100_0000 + i * 0x1000), &src).unwrap();
        })
    });
    let mut out = vec![0u8; 4096];
    g.bench_function("device_read_translated", |b| {
        b.iter(|| {
            i = (i + 1) % PAGES;
            sim.device_read(RID, black_box(0x100_0000 + i * 0x1000), &mut out).unwrap();
        })
    });
    g.finish();
}

fn invalidation(c: &mut Criterion) {
    let mut g = c.benchmark_group("invalidation");
    g.sample_size(30).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(1));
    for inv in [Invalidation::Strict, Invalidation::Lazy] {
        let (mut sim, d) = sim_with_domain();
        sim.set_invalidation(d, inv).unwrap();
        // Keep the IOTLB populated, as on a busy device.
        for p in 0..256u64 {
            sim.map(d, 0x4000_0000 + p * 0x1000, 0x8000_0000 + p * 0x1000, 0x1000, Perm::RW).unwrap();
            sim.translate(RID, 0x4000_0000 + p * 0x1000, Access::Read).unwrap();
        }
        let name = format!("{inv:?}").to_lowercase();
        g.bench_function(BenchmarkId::new("map_dma_unmap", &name), |b| {
            b.iter(|| {
                let m = sim.map_single(RID, black_box(0x1_0000_0000), 4096, DmaDir::ToDevice).unwrap();
                sim.translate(RID, m.addr(), Access::Read).unwrap();
                sim.unmap_single(m).unwrap();
            })
        });
        let s = sim.stats();
        eprintln!(
            "invalidation/{name}: {} unmaps, {} invalidation commands, {} entries invalidated, {} misses, {} flushes (full)",
            s.dma.unmaps,
            s.iotlb.invalidations(),
            s.iotlb.entries_invalidated,
            s.iotlb.misses,
            s.flush_queue.flushes_full
        );
    }
    g.finish();
}

/// The criterion harness (in a private module: the macro's public function has no documentation).
mod harness {
    criterion::criterion_group!(benches, super::translate, super::map_unmap, super::dma, super::invalidation);
}

criterion_main!(harness::benches);
