//! The persisted udev rule, its group comment lines and the modprobe softdep lines read back
//! (`parse_udev_line`, `parse_group_line`, `parse_softdep_line`) on arbitrary lines: no panic; whatever is
//! accepted holds only validated addresses, IDs and names and reads back from the line iommuctl would write
//! for it, a single line, so nothing planted in the file is ever copied into a new one.
#![no_main]

use iommu_host::persist::{
    group_line, parse_group_line, parse_softdep_line, parse_udev_line, softdep_line, udev_line,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    for line in text.lines() {
        if let Some(p) = parse_udev_line(line) {
            let written = udev_line(&p);
            assert!(!written.contains('\n'));
            assert_eq!(parse_udev_line(&written), Some(p));
        }
        if let Some((a, g)) = parse_group_line(line) {
            let written = group_line(a, &g);
            assert!(!written.contains('\n'));
            assert_eq!(parse_group_line(&written), Some((a, g)));
        }
        if let Some((m, p)) = parse_softdep_line(line) {
            assert_eq!(parse_softdep_line(&softdep_line(&m, &p)), Some((m.clone(), p.clone())));
            assert!(!softdep_line(&m, &p).contains('\n'));
        }
    }
});
