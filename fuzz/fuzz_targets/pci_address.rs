//! `PciAddress::parse` on arbitrary UTF-8: never panics, and whatever parses prints back to an address
//! that parses to the same value.
#![no_main]

use iommu_pci::PciAddress;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match PciAddress::parse(text) {
        Ok(addr) => {
            assert!(addr.device < 32 && addr.function < 8);
            let printed = addr.to_string();
            assert_eq!(PciAddress::parse(&printed), Ok(addr), "{text:?} printed as {printed:?}");
        }
        Err(e) => assert_eq!(e.input, text),
    }
});
