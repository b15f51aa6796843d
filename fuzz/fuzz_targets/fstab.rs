//! `parse_fstab` on arbitrary `/etc/fstab` text: no panic; a tag's `/dev/disk/by-*` path is always one path
//! component below its directory (udev's encoding leaves no `/`, and never `.` or `..`), so resolving it can
//! never walk elsewhere.
#![no_main]

use iommu_host::mounts::parse_fstab;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    for e in parse_fstab(text) {
        let _ = (e.is_swap(), e.has_option("nofail"));
        let Some(p) = e.dev_path() else { continue };
        if e.spec.starts_with("/dev/") {
            assert_eq!(p, e.spec, "a /dev path is taken as it is");
            continue;
        }
        // A tag (UUID=, LABEL=, ...): /dev/disk/by-*/NAME with NAME one component.
        let rest = p.strip_prefix("/dev/disk/by-").unwrap_or_else(|| panic!("{p}"));
        let (_, name) = rest.split_once('/').unwrap_or_else(|| panic!("{p}"));
        assert!(!name.is_empty() && !name.contains('/') && name != "." && name != "..", "{p}");
    }
});
