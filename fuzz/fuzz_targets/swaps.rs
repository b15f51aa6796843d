//! `parse_swaps` on arbitrary `/proc/swaps` text: no panic; every entry names a file or partition.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    for s in iommu_host::mounts::parse_swaps(text) {
        let _ = (s.is_file(), s.path().len());
    }
});
