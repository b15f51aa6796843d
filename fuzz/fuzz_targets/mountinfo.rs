//! `parse_mountinfo` and `unescape_octal` on arbitrary text (with `\040`-style escapes): no panic; every
//! entry has a device number and a mount point, and unescaping text without a backslash changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use iommu_host::mounts::{parse_mountinfo, unescape_octal};

fuzz_target!(|text: &str| {
    for m in parse_mountinfo(text) {
        let _ = m.dev.is_anonymous();
        let _ = format!("{} {} {} {}", m.dev, m.mount_point, m.fstype, m.source);
    }
    let u = unescape_octal(text);
    if !text.contains('\\') {
        assert_eq!(u, text);
    }
});
