//! `iommu_groups::ivrs::parse` on arbitrary bytes (the fuzzer's input follows a valid 48-byte header, so
//! the blocks and entries get exercised), then `facts` for a few functions: never a panic or a hang, blocks
//! in order inside the table, facts only about the functions asked for.
#![no_main]

use iommu_groups::ivrs;
use iommu_pci::PciAddress;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut t = b"IVRS".to_vec();
    t.resize(48, 0);
    t.extend_from_slice(data);
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    if data.first().is_some_and(|b| b & 1 == 0) {
        // Half the inputs get a correct checksum, so that `facts` goes past it.
        let sum = t.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        t[9] = 0u8.wrapping_sub(sum);
    }
    let _ = ivrs::parse(data);
    let Ok(table) = ivrs::parse(&t) else { return };
    let mut end = ivrs::HEADER_LEN;
    for b in &table.blocks {
        assert!(b.offset >= end && b.offset + usize::from(b.length) <= t.len());
        end = b.offset + usize::from(b.length);
    }
    let asked: Vec<PciAddress> =
        ["00:00.0", "00:00.2", "00:01.0", "01:00.0", "ff:1f.7"].iter().map(|s| s.parse().unwrap()).collect();
    if let Ok(facts) = table.facts(&asked) {
        assert!(facts.aliases.iter().all(|a| asked.contains(&a.device)));
        assert!(facts.untranslated.iter().all(|a| asked.contains(a)));
    }
});
