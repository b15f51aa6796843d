//! The DMA API: masks, IOVA allocation, bounce buffers, scatter-gather coalescing.

use iommu_sim::{DmaDir, DmaParams, DomainMode, FaultReason, MappingKind, SgEntry, SimError};

use crate::{assert_bytes, domain, fault_of, pattern, rid, sim, sim_with};

#[test]
fn translated_map_single_gives_a_narrow_device_an_iova_below_its_mask() {
    let mut s = sim();
    let dev = rid(1);
    let d = domain(&mut s, DomainMode::Translated, &[dev]);
    s.set_dma_mask(dev, 28).unwrap();
    let buf = 0xa_0000_0123; // 40 GiB, unaligned
    s.memory().write(buf, b"far away").unwrap();
    let m = s.map_single(dev, buf, 8, DmaDir::ToDevice).unwrap();
    assert!(m.addr() < 1 << 28, "{:#x}", m.addr());
    assert_eq!(m.addr() & 0xfff, 0x123, "the offset inside the page is kept");
    assert!(matches!(m.kind(), MappingKind::Translated { iova_len: 0x1000, .. }));
    let mut got = [0u8; 8];
    s.device_read(dev, m.addr(), &mut got).unwrap();
    assert_eq!(&got, b"far away");
    // ToDevice maps read-only: a write faults with reason 5.
    let f = fault_of(s.device_write(dev, m.addr(), b"x"));
    assert_eq!((f.reason, f.vtd_code), (FaultReason::WriteNotPermitted, 5));
    s.unmap_single(m).unwrap();
    assert_eq!(s.mappings(d).unwrap(), []);
    assert_eq!(s.table_stats(d).unwrap().live, 1, "every table freed");
}

#[test]
fn large_aligned_buffers_get_large_pages() {
    let mut s = sim();
    let dev = rid(1);
    let d = domain(&mut s, DomainMode::Translated, &[dev]);
    let m = s.map_single(dev, 0x4000_0000, 0x40_0000, DmaDir::Bidirectional).unwrap();
    let leaves = s.mappings(d).unwrap();
    assert_eq!(leaves.len(), 2, "{leaves:?}");
    assert!(leaves.iter().all(|l| l.size == iommu_sim::PageSize::Size2M));
    s.unmap_single(m).unwrap();
}

#[test]
fn iova_exhaustion_is_reported_with_the_device_and_its_limit() {
    let mut s = sim();
    let dev = rid(1);
    domain(&mut s, DomainMode::Translated, &[dev]);
    s.set_dma_mask(dev, 13).unwrap(); // 8 KiB: page 0 is never handed out, one page is left
    let _m = s.map_single(dev, 0x10_0000, 100, DmaDir::ToDevice).unwrap();
    assert_eq!(
        s.map_single(dev, 0x20_0000, 100, DmaDir::ToDevice),
        Err(SimError::IovaExhausted { rid: dev, len: 0x1000, limit: 0x1fff })
    );
    assert!(s.set_dma_mask(dev, 8).is_err());
}

#[test]
fn the_dma_api_refuses_blocked_and_unattached_devices_and_foreign_handles() {
    let mut s = sim();
    let dev = rid(1);
    let d = domain(&mut s, DomainMode::Blocked, &[dev]);
    assert_eq!(s.map_single(dev, 0x1000, 1, DmaDir::ToDevice), Err(SimError::DomainBlocked { rid: dev, domain: d }));
    assert_eq!(s.map_single(rid(9), 0x1000, 1, DmaDir::ToDevice), Err(SimError::NotAttached { rid: rid(9) }));
    assert_eq!(s.map_single(dev, 0x1000, 0, DmaDir::ToDevice), Err(SimError::ZeroLength { addr: 0x1000 }));
    s.set_domain_mode(d, DomainMode::Translated).unwrap();
    let m = s.map_single(dev, 0x1000, 1, DmaDir::ToDevice).unwrap();
    let id = m.id();
    let mut other = sim();
    assert_eq!(other.unmap_single(m), Err(SimError::UnknownMapping { rid: dev, id }));
}

#[test]
fn identity_devices_reach_low_buffers_directly() {
    let mut s = sim();
    let dev = rid(3);
    domain(&mut s, DomainMode::Identity, &[dev]);
    let m = s.map_single(dev, 0x8000_0000, 4096, DmaDir::FromDevice).unwrap();
    assert_eq!((m.addr(), m.kind()), (0x8000_0000, MappingKind::Direct));
    s.device_write(dev, m.addr(), b"direct").unwrap();
    assert_eq!(s.memory().read_vec(0x8000_0000, 6).unwrap(), b"direct");
    s.unmap_single(m).unwrap();
    assert_eq!(s.stats().bounce.mappings, 0);
}

#[test]
fn bouncing_to_the_device_copies_on_map_and_sync_for_device_refreshes() {
    let mut s = sim();
    let dev = rid(3);
    domain(&mut s, DomainMode::Identity, &[dev]); // default mask: 32 bits
    let buf = 0x1_0000_0800; // just above 4 GiB, mid-page
    let data = pattern(1, 3000);
    s.memory().write(buf, &data).unwrap();
    let m = s.map_single(dev, buf, 3000, DmaDir::ToDevice).unwrap();
    let MappingKind::Bounced { orig, slots } = m.kind() else { panic!("{:?}", m.kind()) };
    assert_eq!((orig, slots), (buf, 2));
    assert!(m.addr() < 1 << 32);
    let mut got = vec![0u8; 3000];
    s.device_read(dev, m.addr(), &mut got).unwrap();
    assert_bytes("device sees the buffer", &got, &data);
    // The CPU changes the buffer: the device sees it only after sync_for_device.
    let newer = pattern(2, 3000);
    s.memory().write(buf, &newer).unwrap();
    s.device_read(dev, m.addr(), &mut got).unwrap();
    assert_bytes("stale before sync", &got, &data);
    s.sync_for_device(&m).unwrap();
    s.device_read(dev, m.addr(), &mut got).unwrap();
    assert_bytes("fresh after sync", &got, &newer);
    s.unmap_single(m).unwrap();
    assert_bytes("ToDevice never copies back", &s.memory().read_vec(buf, 3000).unwrap(), &newer);
    assert_eq!(s.stats().bounce.slots_in_use, 0);
}

#[test]
fn bouncing_from_the_device_copies_back_on_sync_for_cpu_and_on_unmap() {
    let mut s = sim();
    let dev = rid(3);
    domain(&mut s, DomainMode::Identity, &[dev]);
    let buf = 0x3_0000_0000;
    s.memory().fill(buf, 4096, 0x11).unwrap();
    let m = s.map_single(dev, buf, 4096, DmaDir::FromDevice).unwrap();
    // The device writes only the first half: the second half must come back as it was (the map copied
    // the buffer into the slots, so no stale pool bytes leak back).
    s.device_write(dev, m.addr(), &[0x22; 2048]).unwrap();
    assert_eq!(s.memory().read_vec(buf, 1).unwrap(), [0x11], "not visible before sync");
    s.sync_for_cpu(&m).unwrap();
    assert_eq!(s.memory().read_vec(buf, 1).unwrap(), [0x22]);
    s.device_write(dev, m.addr() + 2048, &[0x33; 16]).unwrap();
    s.unmap_single(m).unwrap();
    let back = s.memory().read_vec(buf, 4096).unwrap();
    let mut want = vec![0x22; 2048];
    want.extend_from_slice(&[0x33; 16]);
    want.resize(4096, 0x11);
    assert_bytes("after unmap", &back, &want);
}

#[test]
fn bounce_pool_limits_are_errors_that_name_the_device() {
    let mut s = sim_with(|c| c.bounce.slots = 4);
    let dev = rid(3);
    domain(&mut s, DomainMode::Identity, &[dev]);
    let high = 0x2_0000_0000;
    let _a = s.map_single(dev, high, 4096, DmaDir::ToDevice).unwrap();
    let _b = s.map_single(dev, high, 2048, DmaDir::ToDevice).unwrap();
    assert_eq!(
        s.map_single(dev, high, 4096, DmaDir::ToDevice),
        Err(SimError::BounceExhausted { rid: dev, len: 4096, slots: 2 })
    );
    s.set_dma_mask(dev, 20).unwrap(); // 1 MiB: the pool at 16 MiB is out of reach too
    assert!(matches!(s.map_single(dev, high, 16, DmaDir::ToDevice), Err(SimError::BounceUnreachable { .. })));
}

#[test]
fn scattered_pages_become_one_iova_range_and_one_segment() {
    let mut s = sim();
    let dev = rid(1);
    domain(&mut s, DomainMode::Translated, &[dev]);
    let pages = [0x7000_0000u64, 0x1_2000_0000, 0x5000];
    for (i, p) in pages.iter().enumerate() {
        s.memory().write(*p, &pattern(i as u8, 4096)).unwrap();
    }
    let sg = s.map_sg(dev, &pages.map(|phys| SgEntry { phys, len: 4096 }), DmaDir::Bidirectional).unwrap();
    let (start, len) = sg.iova_range().unwrap();
    assert_eq!(len, 3 * 4096);
    assert_eq!(sg.segments().len(), 1);
    assert_eq!(sg.entry_addrs(), [start, start + 4096, start + 8192]);
    let mut all = vec![0u8; 3 * 4096];
    s.device_read(dev, start, &mut all).unwrap();
    let want: Vec<u8> = (0..3).flat_map(|i| pattern(i, 4096)).collect();
    assert_bytes("one read across all three pages", &all, &want);
    s.unmap_sg(sg).unwrap();
    assert!(s.device_read(dev, start, &mut all).is_err());
}

#[test]
fn sg_keeps_page_offsets_and_never_lets_a_segment_cross_the_boundary() {
    let mut s = sim();
    let dev = rid(1);
    domain(&mut s, DomainMode::Translated, &[dev]);
    s.set_dma_params(dev, DmaParams { mask_bits: 32, max_segment_size: 0x8000, segment_boundary: 0x10000 }).unwrap();
    // An unaligned start, two whole pages, a 40 KiB run that would straddle a 64 KiB boundary.
    let entries = [
        SgEntry { phys: 0x10_0f00, len: 0x100 },
        SgEntry { phys: 0x20_0000, len: 0x1000 },
        SgEntry { phys: 0x30_0000, len: 0x1000 },
        SgEntry { phys: 0x40_0000, len: 0xa000 },
        SgEntry { phys: 0x50_0000, len: 0xa000 },
    ];
    let sg = s.map_sg(dev, &entries, DmaDir::ToDevice).unwrap();
    for (e, a) in entries.iter().zip(sg.entry_addrs()) {
        assert_eq!(a & 0xfff, e.phys & 0xfff, "page offset kept for {e:?}");
    }
    for seg in sg.segments() {
        assert!(seg.len <= 0x8000, "{seg:?} longer than the maximum");
        assert_eq!(seg.addr / 0x10000, (seg.addr + seg.len - 1) / 0x10000, "{seg:?} crosses a 64 KiB boundary");
    }
    let covered: u64 = sg.segments().iter().map(|x| x.len).sum();
    assert_eq!(covered, entries.iter().map(|e| e.len).sum::<u64>());
    // Every byte of every entry is reachable at its DMA address.
    for (i, (e, a)) in entries.iter().zip(sg.entry_addrs()).enumerate() {
        s.memory().write(e.phys, &pattern(i as u8, e.len as usize)).unwrap();
        let mut got = vec![0u8; e.len as usize];
        s.device_read(dev, *a, &mut got).unwrap();
        assert_bytes("entry through its DMA address", &got, &pattern(i as u8, e.len as usize));
    }
    s.unmap_sg(sg).unwrap();
}

#[test]
fn sg_in_identity_mode_merges_only_physically_contiguous_entries() {
    let mut s = sim();
    let dev = rid(3);
    domain(&mut s, DomainMode::Identity, &[dev]);
    let entries = [
        SgEntry { phys: 0x1000, len: 0x1000 },
        SgEntry { phys: 0x2000, len: 0x1000 },
        SgEntry { phys: 0x9000, len: 0x1000 },
        SgEntry { phys: 0x2_0000_0000, len: 0x800 }, // bounced
    ];
    let sg = s.map_sg(dev, &entries, DmaDir::Bidirectional).unwrap();
    assert_eq!(sg.iova_range(), None);
    assert_eq!(sg.segments().len(), 3, "{:?}", sg.segments());
    assert_eq!(sg.segments()[0].len, 0x2000);
    let bounced = sg.entry_addrs()[3];
    assert!(bounced < 1 << 32);
    s.device_write(dev, bounced, b"late").unwrap();
    s.sync_sg_for_cpu(&sg).unwrap();
    assert_eq!(s.memory().read_vec(0x2_0000_0000, 4).unwrap(), b"late");
    s.unmap_sg(sg).unwrap();
    let st = s.stats();
    assert_eq!((st.dma.map_sg, st.dma.map_single, st.dma.live, st.bounce.slots_in_use), (1, 0, 0, 0));
}
