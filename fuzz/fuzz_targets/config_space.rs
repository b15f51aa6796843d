//! `ConfigInfo::parse` on arbitrary bytes: must return (Ok or Err), never panic or hang, and what it
//! returns must be consistent with the input's length.
#![no_main]

use iommu_pci::{AcsState, ConfigDepth, ConfigInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(info) = ConfigInfo::parse(data) else { return };
    let depth = match data.len() {
        n if n >= 4096 => ConfigDepth::Extended,
        n if n >= 256 => ConfigDepth::Standard,
        _ => ConfigDepth::Header,
    };
    assert_eq!(info.depth, depth);
    assert!(info.capabilities.iter().all(|c| c.offset >= 0x40));
    assert!(info.extended.iter().all(|c| (0x100..0x1000).contains(&c.offset) && c.offset % 4 == 0));
    if depth != ConfigDepth::Extended {
        assert!(info.extended.is_empty());
        assert!(!matches!(info.acs, AcsState::Present(_)));
    }
    if matches!(info.acs, AcsState::Present(_)) || info.sriov.is_some() || info.ari {
        assert!(info.pcie.is_some());
    }
    let _ = info.is_pcie();
});
