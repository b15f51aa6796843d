//! `ReservedRegion::parse_line` on every line of arbitrary text (a group's `reserved_regions`): no panic;
//! what parses prints back, in the kernel's `0x%016llx 0x%016llx %s` layout, to a line that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    for line in text.lines() {
        if let Some(r) = iommu_host::ReservedRegion::parse_line(line) {
            let printed = format!("{:#018x} {:#018x} {}", r.start, r.end, r.kind);
            assert_eq!(iommu_host::ReservedRegion::parse_line(&printed), Some(r));
        }
    }
});
