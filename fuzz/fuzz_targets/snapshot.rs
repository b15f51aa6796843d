//! `Snapshot::from_json_slice` on arbitrary bytes: malformed, truncated or hostile snapshots must give an
//! error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = iommu_host::Snapshot::from_json_slice(data);
});
