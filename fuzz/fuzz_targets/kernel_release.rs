//! `KernelInfo::version` on arbitrary release strings: no panic; a version is read only from a release that
//! starts with its digits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let k = iommu_host::KernelInfo { release: Some(text.to_string()), cmdline: None };
    if let Some((major, minor)) = k.version() {
        assert!(text.starts_with(&major.to_string()), "{text:?} -> {major}.{minor}");
    }
});
