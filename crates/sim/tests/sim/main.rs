//! Integration tests of iommu-sim: one binary, modules by topic, helpers here.

mod dma;
mod groups;
mod lazy;
mod props;
mod tour;
mod vfio_style;

use iommu_sim::{DomainId, DomainMode, Fault, Rid, Sim, SimConfig, SimError};

/// Requester ID of `bus:00.0`.
pub fn rid(bus: u8) -> Rid {
    Rid::new(bus, 0, 0).expect("valid")
}

/// A default simulator (64 GiB of sparse RAM).
pub fn sim() -> Sim {
    Sim::new(SimConfig::default()).expect("default config")
}

/// A simulator with `config` changes applied.
pub fn sim_with(f: impl FnOnce(&mut SimConfig)) -> Sim {
    let mut c = SimConfig::default();
    f(&mut c);
    Sim::new(c).expect("valid config")
}

/// A new domain in `mode` with `devices` attached.
pub fn domain(sim: &mut Sim, mode: DomainMode, devices: &[Rid]) -> DomainId {
    let d = sim.create_domain(mode);
    for r in devices {
        sim.attach(*r, d).expect("attach");
    }
    d
}

/// The fault inside `e`, or a panic that shows what came instead.
pub fn fault_of(e: Result<(), SimError>) -> Fault {
    match e {
        Err(SimError::Fault(f)) => f,
        other => panic!("expected a fault, got {other:?}"),
    }
}

/// Asserts equality of byte strings, printing both as hex on failure.
#[track_caller]
pub fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: differ at byte {first} (lengths {} vs {})\n  expected: {:02x?}\n       got: {:02x?}",
            got.len(),
            want.len(),
            &want[first..want.len().min(first + 16)],
            &got[first..got.len().min(first + 16)]
        );
    }
}

/// Deterministic test bytes.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}
