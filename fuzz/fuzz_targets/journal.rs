//! `Journal::parse` on arbitrary bytes: a corrupt or hostile journal must be refused with a reason, never
//! panic; what it accepts holds only valid driver names and serializes back to a journal that parses to the
//! same entries.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(j) = iommu_host::journal::Journal::parse(data) {
        for e in &j.entries {
            assert!(iommu_host::driver::DriverName::parse(e.bound_to.as_str()).is_ok());
        }
        let again = serde_json::to_vec(&j).expect("a parsed journal serializes");
        let back = iommu_host::journal::Journal::parse(&again).expect("a serialized journal parses");
        assert_eq!(back.entries, j.entries);
    }
});
