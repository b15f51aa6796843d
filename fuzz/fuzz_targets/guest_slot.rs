//! `parse_guest_slot` (`--guest-slot`) on arbitrary text: no panic; what is accepted is a slot 1..=0x1f
//! written as one or two hex digits with an optional `0x`, and parses back from its own hex form.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(n) = iommu_pci::parse_guest_slot(text) {
        assert!((1..=0x1f).contains(&n));
        assert!(text.len() <= 4);
        assert_eq!(iommu_pci::parse_guest_slot(&format!("{n:#x}")), Ok(n));
    }
});
