//! IOVA allocator: alloc+free pairs against a plain `BTreeMap` first-fit allocator (the baseline), both
//! starting from the same state (the VT-d ranges of the lab, the MSI window reserved, 1000 live blocks).
//!
//! `cargo bench -p iommu-vfio --bench iova`. The allocator and `DmaSpace` are iommu-backend's now
//! (re-exported here); the bench stays in iommu-vfio so its command and the names of its recorded
//! results in BENCHMARKS.md hold.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use iommu_vfio::iova::{IovaAllocator, IovaBlock, Request};
use iommu_vfio::{BackendError, DmaBackend, DmaBuf, DmaBuffer, DmaDir, DmaSpace, HugePages, IommuInfo, IovaRange};

const G: u64 = 4096;
const MASK28: u64 = (1 << 28) - 1;

/// The baseline: free extents in a BTreeMap (start → exclusive end), first fit from the lowest address,
/// coalescing on free. What one writes without the per-size caches.
struct FirstFit {
    free: BTreeMap<u64, u64>,
}

impl FirstFit {
    fn new() -> Self {
        let mut free = BTreeMap::new();
        free.insert(G, 0xfee0_0000);
        free.insert(0xfef0_0000, 1 << 39);
        Self { free }
    }

    fn alloc(&mut self, len: u64, align: u64, limit: u64) -> Option<u64> {
        let len = (len + G - 1) & !(G - 1);
        let align = align.max(G);
        let (s, e, a) = self.free.iter().find_map(|(&s, &e)| {
            let a = (s + align - 1) & !(align - 1);
            (a + len <= e && a + len - 1 <= limit).then_some((s, e, a))
        })?;
        self.free.remove(&s);
        if a > s {
            self.free.insert(s, a);
        }
        if a + len < e {
            self.free.insert(a + len, e);
        }
        Some(a)
    }

    fn free(&mut self, mut s: u64, len: u64) {
        let mut e = s + ((len + G - 1) & !(G - 1));
        if let Some((&ps, &pe)) = self.free.range(..s).next_back() {
            if pe == s {
                self.free.remove(&ps);
                s = ps;
            }
        }
        if let Some(ne) = self.free.remove(&e) {
            e = ne;
        }
        self.free.insert(s, e);
    }
}

fn ours() -> (IovaAllocator, Vec<IovaBlock>) {
    let mut a = IovaAllocator::new(
        G,
        &[IovaRange::new(0, 0xfedf_ffff).unwrap(), IovaRange::new(0xfef0_0000, (1 << 39) - 1).unwrap()],
        &[IovaRange::new(0xfee0_0000, 0xfeef_ffff).unwrap()],
    )
    .unwrap();
    let live = (0..1000).map(|i| a.alloc(Request::new(G << (i % 5)).limit(MASK28)).unwrap()).collect();
    (a, live)
}

fn baseline() -> FirstFit {
    let mut b = FirstFit::new();
    for i in 0..1000 {
        b.alloc(G << (i % 5), G, MASK28).unwrap();
    }
    b
}

fn pair(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_free_pair");
    for len in [4096u64, 64 << 10, 2 << 20] {
        let (mut a, _live) = ours();
        g.bench_with_input(BenchmarkId::new("iommu-vfio", len), &len, |bch, &len| {
            bch.iter(|| {
                let blk = a.alloc(Request::new(black_box(len)).limit(MASK28)).unwrap();
                a.free(black_box(blk));
            })
        });
        let mut b = baseline();
        g.bench_with_input(BenchmarkId::new("btreemap-first-fit", len), &len, |bch, &len| {
            bch.iter(|| {
                let s = b.alloc(black_box(len), G, MASK28).unwrap();
                b.free(black_box(s), len);
            })
        });
    }
    g.finish();
}

/// A rolling window of 256 live blocks of mixed sizes (1-16 pages): free the oldest, allocate a new one.
fn churn(c: &mut Criterion) {
    let sizes: Vec<u64> = (0..4096u64).map(|i| G * (1 + (i * 2654435761 % 16))).collect();
    let mut g = c.benchmark_group("churn_256_live");
    {
        let (mut a, _live) = ours();
        let mut ring: std::collections::VecDeque<IovaBlock> =
            sizes[..256].iter().map(|&s| a.alloc(Request::new(s).limit(MASK28)).unwrap()).collect();
        let mut i = 256;
        g.bench_function("iommu-vfio", |bch| {
            bch.iter(|| {
                a.free(ring.pop_front().unwrap());
                ring.push_back(a.alloc(Request::new(sizes[i % sizes.len()]).limit(MASK28)).unwrap());
                i += 1;
            })
        });
    }
    {
        let mut b = baseline();
        let mut ring: std::collections::VecDeque<(u64, u64)> =
            sizes[..256].iter().map(|&s| (b.alloc(s, G, MASK28).unwrap(), s)).collect();
        let mut i = 256;
        g.bench_function("btreemap-first-fit", |bch| {
            bch.iter(|| {
                let (s, l) = ring.pop_front().unwrap();
                b.free(s, l);
                let len = sizes[i % sizes.len()];
                ring.push_back((b.alloc(len, G, MASK28).unwrap(), len));
                i += 1;
            })
        });
    }
    g.finish();
}

/// A backend whose map and unmap do nothing: what `DmaSpace::map` + `DmaMapping::unmap` cost on top of
/// the kernel's ioctls (IOVA allocation, the mapping-count check, the mutex, the bookkeeping).
struct NoopBackend(IommuInfo);

impl DmaBackend for NoopBackend {
    fn iommu_info(&self) -> Result<IommuInfo, BackendError> {
        Ok(self.0.clone())
    }
    fn alloc(&self, len: usize, huge: HugePages) -> Result<DmaBuf, BackendError> {
        Ok(DmaBuf::new(DmaBuffer::with(len, huge)?))
    }
    fn map(&self, _: u64, _: &DmaBuf, _: usize, _: usize, _: DmaDir) -> Result<(), BackendError> {
        Ok(())
    }
    fn unmap(&self, _: u64, _: u64) -> Result<(), BackendError> {
        Ok(())
    }
}

fn library_overhead(c: &mut Criterion) {
    let info = IommuInfo {
        page_sizes: 0x4020_1000,
        iova_ranges: vec![IovaRange::new(0, 0xfedf_ffff).unwrap(), IovaRange::new(0xfef0_0000, (1 << 39) - 1).unwrap()],
        dma_avail: Some(65535),
    };
    let space = DmaSpace::new(NoopBackend(info), &[IovaRange::new(0xfee0_0000, 0xfeef_ffff).unwrap()])
        .unwrap()
        .with_dma_mask(28);
    let buf = space.alloc(4096).unwrap();
    c.bench_function("dma_space_map_unmap_noop_backend", |b| {
        b.iter(|| space.map(black_box(&buf), DmaDir::Bidirectional).unwrap().unmap().unwrap())
    });
}

criterion_group!(benches, pair, churn, library_overhead);
criterion_main!(benches);
