//! The persisted udev rule and modprobe softdep lines read back (`parse_udev_line`, `parse_softdep_line`)
//! on arbitrary lines: no panic; whatever is accepted holds only validated names and is exactly the line
//! iommuctl would write for it, so nothing planted in the file is ever copied into a new one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use iommu_host::persist::{parse_softdep_line, parse_udev_line, softdep_line, udev_line};

fuzz_target!(|text: &str| {
    for line in text.lines() {
        if let Some((a, d)) = parse_udev_line(line) {
            assert_eq!(parse_udev_line(&udev_line(a, &d)), Some((a, d.clone())));
            assert!(!udev_line(a, &d).contains('\n'));
        }
        if let Some((m, p)) = parse_softdep_line(line) {
            assert_eq!(parse_softdep_line(&softdep_line(&m, &p)), Some((m.clone(), p.clone())));
            assert!(!softdep_line(&m, &p).contains('\n'));
        }
    }
});
