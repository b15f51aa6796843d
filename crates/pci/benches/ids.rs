//! Benchmarks for `PciIds`: parsing the system pci.ids (it is loaded on every `iommuctl list`) and
//! look-ups into it.
//!
//! Run with `cargo bench -p iommu-pci --bench ids`. Uses `/usr/share/misc/pci.ids` (or the other system
//! locations); falls back to a generated database of similar size when none is installed.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_main, Criterion};
use iommu_pci::PciIds;

/// The system database text, or a synthetic one of about the same shape (2300 vendors, 17k devices).
fn database() -> String {
    for p in ["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids"] {
        if let Ok(text) = std::fs::read_to_string(p) {
            return text;
        }
    }
    eprintln!("no system pci.ids found; benchmarking a synthetic database");
    let mut s = String::new();
    for v in 0..2300u16 {
        s.push_str(&format!("{:04x}  Vendor number {v}\n", v * 28));
        for d in 0..8u16 {
            s.push_str(&format!("\t{d:04x}  Device number {d} of vendor {v}\n"));
            s.push_str(&format!("\t\t{v:04x} {d:04x}  Subsystem of device {d}\n"));
        }
    }
    s.push_str("C 02  Network controller\n\t00  Ethernet controller\n");
    s
}

fn bench_ids(c: &mut Criterion) {
    let text = database();
    c.bench_function("ids/parse_system_text", |b| b.iter(|| PciIds::parse(black_box(&text))));
    c.bench_function("ids/load_system", |b| b.iter(|| PciIds::load_system(black_box(Path::new("/")))));

    let ids = PciIds::parse(&text);
    // The first device look-up into a vendor builds that vendor's device index (Intel's is the largest).
    c.bench_function("ids/parse_then_first_intel_device", |b| {
        b.iter(|| {
            let ids = PciIds::parse(black_box(&text));
            black_box(ids.device(0x8086, 0x10d3).map(str::len))
        })
    });
    let _ = ids.device(0x8086, 0x10d3);
    c.bench_function("ids/describe_intel_warm", |b| b.iter(|| ids.describe(black_box(0x8086), black_box(0x10d3))));
    c.bench_function("ids/subsystem_intel", |b| {
        b.iter(|| ids.subsystem(black_box(0x8086), black_box(0x10d3), black_box(0x8086), black_box(0xa01f)))
    });
    c.bench_function("ids/describe_class", |b| b.iter(|| ids.describe_class(black_box(0x0c0330))));
}

mod group {
    criterion::criterion_group!(benches, super::bench_ids);
}
criterion_main!(group::benches);
