//! `PciIds::parse` on arbitrary text, then look-ups: the first 12 bytes choose the IDs to look up, the
//! rest is the database (invalid UTF-8 replaced). IDs that occur in the text are looked up too, so the
//! block scanners are reached.
#![no_main]

use iommu_pci::PciIds;
use libfuzzer_sys::fuzz_target;

fn probe(ids: &PciIds, v: u16, d: u16, sv: u16, sd: u16, class: u32) {
    let _ = ids.vendor(v);
    let _ = ids.device(v, d);
    let _ = ids.subsystem(v, d, sv, sd);
    let _ = ids.class(class);
    let described = ids.describe(v, d);
    assert!(described.ends_with(&format!("[{v:04x}:{d:04x}]")), "{described:?}");
    if let (Some(vn), Some(dn)) = (ids.vendor(v), ids.device(v, d)) {
        assert!(described.starts_with(vn) && described.contains(dn));
    }
    let class_text = ids.describe_class(class);
    assert!(class_text.contains(&format!("[{:04x}]", (class >> 8) & 0xffff)), "{class_text:?}");
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = data.split_at(data.len().min(12));
    let mut h = [0u8; 12];
    h[..head.len()].copy_from_slice(head);
    let word = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
    let text = String::from_utf8_lossy(body);
    let ids = PciIds::parse(&text);
    let class = u32::from_le_bytes([h[8], h[9], h[10], 0]);
    probe(&ids, word(0), word(2), word(4), word(6), class);
    for w in text.split(|c: char| !c.is_ascii_hexdigit()).filter(|w| w.len() == 4).take(16) {
        let id = u16::from_str_radix(w, 16).expect("four hex digits");
        probe(&ids, id, id, id, id, u32::from(id) << 8);
        probe(&ids, word(0), id, id, word(6), u32::from(id));
    }
});
