//! The readiness parsers on arbitrary text: `/proc/cpuinfo` (CPU vendor), `/proc/interrupts` (IR- chips),
//! `modules.dep`/`modules.builtin` (watched modules). No panic; only watched modules are reported, once each.
#![no_main]

use libfuzzer_sys::fuzz_target;
use iommu_host::readiness::{cpu_vendor_of, interrupt_remapping_in, watched_modules_in, WATCHED_MODULES};

fuzz_target!(|text: &str| {
    let _ = cpu_vendor_of(text);
    let _ = interrupt_remapping_in(text);
    let found = watched_modules_in(text);
    for m in &found {
        assert!(WATCHED_MODULES.contains(&m.as_str()));
        assert_eq!(found.iter().filter(|x| *x == m).count(), 1);
    }
});
