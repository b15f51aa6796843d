//! `LspciDump::parse_bytes` on arbitrary bytes: malformed, truncated or hostile dumps must give an error,
//! never a panic or a hang; what parses must be a consistent snapshot that the predictor can use.
#![no_main]

use iommu_host::lspci::DUMP_LENGTHS;
use iommu_host::{LspciDump, LspciError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let d = match LspciDump::parse_bytes(data) {
        Ok(d) => d,
        Err(LspciError::Line { line, .. } | LspciError::Length { line, .. } | LspciError::NoBytes { line, .. }) => {
            assert!(line >= 1);
            return;
        }
        Err(_) => return,
    };
    let s = &d.snapshot;
    assert!(!s.devices.is_empty());
    assert!(s.groups.is_empty());
    assert!(s.devices.windows(2).all(|w| w[0].address < w[1].address));
    for dev in &s.devices {
        assert!(DUMP_LENGTHS.contains(&dev.config.len()));
        if let Some(p) = dev.parent {
            let parent = s.device(p).expect("a parent is one of the dump's functions");
            assert!(p.bus < dev.address.bus || dev.physfn.is_some());
            assert!(matches!(parent.config[0x0e] & 0x7f, 1 | 2));
        }
    }
    assert_eq!(d.short_header, s.devices.iter().filter(|x| x.config.len() < 256).count());
    // Parents always point to a lower bus, so the tree has no cycles and always builds.
    let (t, _) = s.topology().expect("a parsed dump always makes a topology");
    let _ = iommu_groups::predict(&t, &s.platform(), iommu_groups::RuleSet::Linux6);
    let _ = d.warnings();
});
