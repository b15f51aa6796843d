//! Strict and lazy invalidation: the window lazy mode opens, and when it closes.

use iommu_sim::{DmaDir, DomainMode, FaultReason, FlushQueueConfig, Invalidation};

use crate::{domain, fault_of, rid, sim, sim_with};

#[test]
fn lazy_unmap_leaves_a_stale_translation_usable_until_the_flush_queue_times_out() {
    let mut s = sim_with(|c| c.flush_queue = FlushQueueConfig { size: 256, timeout_ns: 10_000_000 });
    let dev = rid(1);
    let d = domain(&mut s, DomainMode::Translated, &[dev]);
    s.set_invalidation(d, Invalidation::Lazy).unwrap();
    let buf = 0x5000_0000;
    let m = s.map_single(dev, buf, 4096, DmaDir::FromDevice).unwrap();
    let iova = m.addr();
    s.device_write(dev, iova, b"while mapped").unwrap(); // fills the IOTLB
    s.unmap_single(m).unwrap();
    assert_eq!(s.lookup(d, iova).unwrap(), None, "the page table no longer maps it");
    assert_eq!(s.flush_queue_len(), 1);

    // The stale IOTLB entry still translates: the device still reaches the old buffer.
    s.advance_clock(9_999_999);
    s.device_write(dev, iova, b"after unmap!").unwrap();
    assert_eq!(s.memory().read_vec(buf, 12).unwrap(), b"after unmap!");

    // The timeout flushes the queue: the next access walks, finds nothing, and faults.
    s.advance_clock(1);
    assert_eq!(s.flush_queue_len(), 0);
    let f = fault_of(s.device_write(dev, iova, b"too late"));
    assert_eq!((f.reason, f.addr), (FaultReason::NotMapped, iova));
    assert_eq!(s.memory().read_vec(buf, 12).unwrap(), b"after unmap!");
    let st = s.stats();
    assert_eq!((st.flush_queue.queued, st.flush_queue.flushes_timeout, st.iotlb.domain_invalidations), (1, 1, 1));
}

#[test]
fn strict_unmap_never_leaves_a_stale_translation() {
    let mut s = sim();
    let dev = rid(1);
    domain(&mut s, DomainMode::Translated, &[dev]);
    let m = s.map_single(dev, 0x5000_0000, 4096, DmaDir::FromDevice).unwrap();
    let iova = m.addr();
    s.device_write(dev, iova, b"while mapped").unwrap();
    s.unmap_single(m).unwrap();
    let f = fault_of(s.device_write(dev, iova, b"after unmap!"));
    assert_eq!(f.reason, FaultReason::NotMapped);
    assert_eq!(s.memory().read_vec(0x5000_0000, 12).unwrap(), b"while mapped");
    assert_eq!(s.stats().iotlb.range_invalidations, 1);
}

#[test]
fn a_full_flush_queue_invalidates_the_domain_once_for_many_unmaps() {
    let mut s = sim_with(|c| c.flush_queue = FlushQueueConfig { size: 4, timeout_ns: u64::MAX });
    let dev = rid(1);
    let d = domain(&mut s, DomainMode::Translated, &[dev]);
    s.set_invalidation(d, Invalidation::Lazy).unwrap();
    for i in 0..9u64 {
        let m = s.map_single(dev, 0x5000_0000 + i * 0x1000, 4096, DmaDir::ToDevice).unwrap();
        s.device_read(dev, m.addr(), &mut [0u8; 8]).unwrap();
        s.unmap_single(m).unwrap();
    }
    let st = s.stats();
    assert_eq!(st.flush_queue.queued, 9);
    assert_eq!(st.flush_queue.flushes_full, 2, "the 5th and the 9th unmap found the queue full");
    assert_eq!(st.flush_queue.pending, 1);
    assert_eq!(st.iotlb.invalidations(), 2, "two domain invalidations instead of nine range ones");
    s.flush_lazy();
    assert_eq!(s.stats().flush_queue.flushes_explicit, 1);
}

#[test]
fn lazy_iovas_are_not_reused_before_the_flush() {
    let mut s = sim();
    let dev = rid(1);
    let d = domain(&mut s, DomainMode::Translated, &[dev]);
    s.set_invalidation(d, Invalidation::Lazy).unwrap();
    let a = s.map_single(dev, 0x5000_0000, 4096, DmaDir::ToDevice).unwrap();
    let first = a.addr();
    s.unmap_single(a).unwrap();
    let b = s.map_single(dev, 0x5000_0000, 4096, DmaDir::ToDevice).unwrap();
    assert_ne!(b.addr(), first, "still held by the flush queue");
    s.unmap_single(b).unwrap();
    s.flush_lazy();
    let c = s.map_single(dev, 0x5000_0000, 4096, DmaDir::ToDevice).unwrap();
    assert_eq!(c.addr(), first, "free again after the flush");
    // Switching to strict flushes whatever is queued.
    s.unmap_single(c).unwrap();
    s.set_invalidation(d, Invalidation::Strict).unwrap();
    assert_eq!(s.flush_queue_len(), 0);
}
