//! `Snapshot::from_json_slice` on arbitrary bytes, then the topology and a prediction: malformed,
//! truncated or hostile snapshots must give an error, never a panic; whatever loads builds a topology
//! (a snapshot whose devices do not form a tree is refused at load).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = iommu_host::Snapshot::from_json_slice(data) {
        let (topology, _bad) = s.topology().expect("a loaded snapshot forms a tree");
        let _ = iommu_groups::predict(&topology, &s.platform(), iommu_groups::RuleSet::Linux6);
    }
});
