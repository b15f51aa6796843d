//! Benchmarks of [`predict`] (and [`Topology::new`]) on large synthetic hosts: 10,000 and 1,000,000 PCI
//! functions. Target: `predict` on 1,000,000 functions in under 1 s.
//!
//! The model generator lives here because this crate cannot depend on `iommu-bench` (which depends on it);
//! it builds the same mix of shapes as `gen-sysfs`: PCI domains of up to 256 buses, root ports (some in
//! multifunction slots) with full, partial, redirect-disabled or no ACS, switches with 4 to 8 downstream
//! ports, multifunction endpoints with and without ACS, SR-IOV physical functions with virtual functions,
//! PCIe-to-PCI bridges with conventional devices, and Intel integrated endpoints on the root buses.
//!
//! Run: `cargo bench -p iommu-groups --bench predict`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};
use iommu_groups::{predict, Device, Pcie, Platform, RuleSet, Topology};
use iommu_pci::{acs, AcsCap, AcsState, HeaderKind, PciAddress, PortType};

/// SplitMix64, so every run benchmarks the same topology.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pct(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

fn acs_regs(capability: u16, control: u16) -> AcsState {
    AcsState::Present(AcsCap { offset: 0x148, capability, control, dword8_low: 0 })
}

/// Port ACS: 55% full, 10% partial capability (isolates), 10% redirect disabled, 25% absent.
fn port_acs(r: &mut Rng) -> AcsState {
    let all = acs::SV | acs::TB | acs::RR | acs::CR | acs::UF;
    match r.below(100) {
        0..=54 => acs_regs(all, acs::SV | acs::RR | acs::CR | acs::UF),
        55..=64 => acs_regs(acs::SV | acs::RR | acs::CR, acs::SV | acs::RR | acs::CR),
        65..=74 => acs_regs(all, acs::SV | acs::UF),
        _ => AcsState::Absent,
    }
}

struct Gen {
    r: Rng,
    out: Vec<Device>,
    n: usize,
    domain: u32,
    next_bus: u32,
    slot: u8,
}

impl Gen {
    fn room(&self) -> usize {
        self.n - self.out.len()
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        bus: u32,
        dev: u8,
        func: u8,
        parent: Option<PciAddress>,
        ids: (u16, u16),
        class: u32,
        bridge: bool,
        mf: bool,
        vf: bool,
        pcie: Pcie,
        acs: AcsState,
    ) -> PciAddress {
        let address = PciAddress { domain: self.domain, bus: bus as u8, device: dev, function: func };
        self.out.push(Device {
            address,
            parent,
            vendor: ids.0,
            device: ids.1,
            subsystem: (!bridge).then_some((ids.0, 0x0001)),
            class,
            header: if bridge { HeaderKind::Bridge } else { HeaderKind::Normal },
            multifunction: mf,
            is_virtfn: vf,
            pcie,
            acs,
        });
        address
    }

    /// The next free root-bus slot (slot 4 holds CBDMA).
    fn take_slot(&mut self) -> u8 {
        if self.slot == 4 {
            self.slot = 5;
        }
        self.slot += 1;
        self.slot - 1
    }

    fn take_bus(&mut self) -> u32 {
        self.next_bus += 1;
        self.next_bus - 1
    }

    fn new_domain(&mut self) {
        if !self.out.is_empty() {
            self.domain += 1;
        }
        self.next_bus = 1;
        self.slot = 1;
        let rc = Pcie::Yes(PortType::RcIntegratedEndpoint);
        self.add(0, 0, 0, None, (0x8086, 0x2020), 0x060000, false, false, false, rc, AcsState::Absent);
        for f in 0..8u8.min(self.room() as u8) {
            self.add(0, 4, f, None, (0x8086, 0x2021), 0x088000, false, true, false, rc, AcsState::Absent);
        }
    }

    /// An endpoint of `fns` functions at `bus:00`, optionally with `vfs` VFs per function.
    fn endpoint(&mut self, bus: u32, parent: PciAddress, ids: (u16, u16), fns: u8, vfs: u16, with_acs: bool) {
        let fns = fns.min(self.room() as u8).max(1);
        let mf = fns > 1;
        let ep = Pcie::Yes(PortType::Endpoint);
        let acs_state = if with_acs { acs_regs(acs::RR | acs::CR, acs::RR | acs::CR) } else { AcsState::Absent };
        for f in 0..fns {
            if self.room() == 0 {
                return;
            }
            self.add(bus, 0, f, Some(parent), ids, 0x020000, false, mf, false, ep, acs_state);
        }
        let vfs = vfs.min((self.room() / usize::from(fns)) as u16).min(240 / u16::from(fns));
        for f in 0..u16::from(fns) {
            for v in 0..vfs {
                let devfn = (16 + f * vfs + v) as u8;
                self.add(
                    bus,
                    devfn >> 3,
                    devfn & 7,
                    Some(parent),
                    (ids.0, ids.1 + 1),
                    0x020000,
                    false,
                    false,
                    true,
                    ep,
                    AcsState::Absent,
                );
            }
        }
    }

    fn unit(&mut self) {
        if self.slot >= 32 || self.next_bus > 245 || self.room() < 4 {
            if self.room() < 4 && self.slot < 32 {
                // Use up the last functions as integrated endpoints.
                let rc = Pcie::Yes(PortType::RcIntegratedEndpoint);
                let s = self.take_slot();
                self.add(0, s, 0, None, (0x8086, 0x2014), 0x088000, false, false, false, rc, AcsState::Absent);
                return;
            }
            self.new_domain();
            return;
        }
        // Some slots hold four multifunction root ports, like Sky Lake-E ports A-D.
        let slot = self.take_slot();
        let ports = if self.r.pct(30) { 4 } else { 1 };
        for f in 0..ports {
            if self.room() < 4 || self.next_bus > 245 {
                return;
            }
            let sec = self.take_bus();
            let rp_ids = (0x8086, 0x2030 + u16::from(f));
            let rp_acs = port_acs(&mut self.r);
            let rp_pcie = Pcie::Yes(PortType::RootPort);
            let rp = self.add(0, slot, f, None, rp_ids, 0x060400, true, ports > 1, false, rp_pcie, rp_acs);
            match self.r.below(100) {
                0..=34 => self.endpoint(sec, rp, (0x144d, 0xa824), 1, 0, false),
                35..=54 => {
                    let fns = 2 + self.r.below(3) as u8;
                    let with_acs = self.r.pct(50);
                    self.endpoint(sec, rp, (0x15b3, 0x1017), fns, 0, with_acs)
                }
                55..=69 => {
                    let vfs = [4u16, 8, 16, 32][self.r.below(4) as usize];
                    self.endpoint(sec, rp, (0x8086, 0x1572), 2, vfs, true)
                }
                70..=89 => {
                    let inner = self.take_bus();
                    let up = self.add(
                        sec,
                        0,
                        0,
                        Some(rp),
                        (0x10b5, 0x8747),
                        0x060400,
                        true,
                        false,
                        false,
                        Pcie::Yes(PortType::UpstreamPort),
                        AcsState::Absent,
                    );
                    let acs_state = port_acs(&mut self.r);
                    for p in 0..(4 + self.r.below(5) as u8) {
                        if self.room() < 2 {
                            break;
                        }
                        let b = self.take_bus();
                        let dp = self.add(
                            inner,
                            p,
                            0,
                            Some(up),
                            (0x10b5, 0x8747),
                            0x060400,
                            true,
                            false,
                            false,
                            Pcie::Yes(PortType::DownstreamPort),
                            acs_state,
                        );
                        if self.r.pct(85) {
                            let fns = if self.r.pct(70) { 1 } else { 2 };
                            self.endpoint(b, dp, (0x8086, 0x0a54), fns, 0, false);
                        }
                    }
                }
                _ => {
                    let conv = self.take_bus();
                    let br = self.add(
                        sec,
                        0,
                        0,
                        Some(rp),
                        (0x104c, 0x8240),
                        0x060400,
                        true,
                        false,
                        false,
                        Pcie::Yes(PortType::PcieToPciBridge),
                        AcsState::Absent,
                    );
                    for s in 1..=(1 + self.r.below(4) as u8) {
                        if self.room() == 0 {
                            break;
                        }
                        self.add(
                            conv,
                            s,
                            0,
                            Some(br),
                            (0x8086, 0x1076),
                            0x020000,
                            false,
                            false,
                            false,
                            Pcie::No,
                            AcsState::Absent,
                        );
                    }
                }
            }
        }
    }
}

/// `n` functions of a synthetic host (exactly `n`).
fn synthetic(n: usize) -> Vec<Device> {
    let mut g = Gen { r: Rng(0x5eed), out: Vec::with_capacity(n), n, domain: 0, next_bus: 1, slot: 1 };
    g.new_domain();
    while g.room() > 0 {
        g.unit();
    }
    g.out.truncate(n);
    g.out
}

fn bench(c: &mut Criterion) {
    let platform = Platform::default();
    // `cargo test --all-targets` runs benches once each, unoptimized and without `--bench`: keep that quick.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let sizes: &[(usize, &str)] = if bench_mode { &[(10_000, "10k"), (1_000_000, "1M")] } else { &[(10_000, "10k")] };
    for &(n, label) in sizes {
        let devices = synthetic(n);
        assert_eq!(devices.len(), n);
        let topology = Topology::new(devices.clone()).expect("synthetic topology is consistent");
        let groups = predict(&topology, &platform, RuleSet::Linux6).groups.len();
        let domains = devices.last().map_or(0, |d| d.address.domain + 1);
        eprintln!("synthetic host: {n} functions, {groups} groups, {domains} domains");

        let mut g = c.benchmark_group("predict");
        g.sample_size(10).throughput(Throughput::Elements(n as u64));
        if n >= 1_000_000 {
            g.sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(20));
        }
        // The Topology is built once, outside the timed loop; dropping the Prediction is not timed either.
        g.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_with_large_drop(|| predict(black_box(&topology), &platform, RuleSet::Linux6))
        });
        g.finish();

        let mut g = c.benchmark_group("topology_new");
        g.sample_size(10).throughput(Throughput::Elements(n as u64));
        if n >= 1_000_000 {
            g.sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(10));
        }
        g.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_batched(|| devices.clone(), |d| Topology::new(d).expect("consistent"), BatchSize::LargeInput)
        });
        g.finish();
    }
}

/// The criterion harness (in a private module: the macro's public function has no documentation).
mod harness {
    criterion::criterion_group!(benches, super::bench);
}

criterion_main!(harness::benches);
