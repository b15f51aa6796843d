//! `KernelInfo::version` on arbitrary release strings: no panic; a version is read only from a release that
//! starts with digits, and the major number is those digits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let k = iommu_host::KernelInfo { release: Some(text.to_string()), cmdline: None, ..iommu_host::KernelInfo::default() };
    if let Some((major, minor)) = k.version() {
        let lead: String = text.chars().take_while(char::is_ascii_digit).collect();
        assert_eq!(lead.parse::<u32>().ok(), Some(major), "{text:?} -> {major}.{minor}");
    }
});
