//! The kernel-parameter parsers behind `predict --what-if` and a host's own command line: `Change::parse`
//! and `Platform::apply_cmdline` on arbitrary text must never panic, and an accepted change must print
//! back as a parameter that parses to the same change.
#![no_main]

use iommu_groups::{Change, Platform};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut p = Platform::default();
    p.apply_cmdline(text);
    if let Ok(c) = Change::parse(text) {
        let param = c.kernel_param();
        let again = Change::parse(&param).unwrap_or_else(|e| panic!("{param:?} does not parse back: {e}"));
        assert_eq!(again, c, "{param:?}");
        c.apply(&mut p);
    }
});
