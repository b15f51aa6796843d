//! The shapes a VFIO-style driver framework uses: a `SimIommu` mapping host buffers by IOVA and a
//! `SharedEdu` driven through BAR0 offsets — the same steps the VFIO `edu` driver runs.

use std::sync::Arc;

use iommu_sim::edu::{reg, CMD_IRQ, CMD_START, CMD_TO_RAM, DMA_BUFFER, DMA_IRQ};
use iommu_sim::{DmaOutcome, DomainMode, Edu, FaultReason, Perm, SharedEdu, SimIommu, VecMemory};

use crate::{assert_bytes, domain, pattern, rid, sim};

fn dma(edu: &SharedEdu, to_ram: bool, iova: u64, off: u64, len: u64) {
    let (src, dst, cmd) =
        if to_ram { (DMA_BUFFER + off, iova, CMD_START | CMD_TO_RAM) } else { (iova, DMA_BUFFER + off, CMD_START) };
    edu.write64(reg::DMA_SRC, src).unwrap();
    edu.write64(reg::DMA_DST, dst).unwrap();
    edu.write64(reg::DMA_CNT, len).unwrap();
    edu.write64(reg::DMA_CMD, cmd).unwrap();
    assert_eq!(edu.read64(reg::DMA_CMD).unwrap() & CMD_START, 0, "done at once");
}

#[test]
fn the_edu_driver_steps_pass_against_host_buffers() {
    let dev = rid(1);
    let mut s = sim();
    let d = domain(&mut s, DomainMode::Translated, &[dev]);
    let shared = s.into_shared();
    let iommu = SimIommu::new(shared.clone(), d).unwrap();
    let mut e = Edu::new(dev);
    e.config_write(4, &[0x06, 0]).unwrap();
    let edu = SharedEdu::new(e, shared);
    assert_eq!(edu.read32(reg::ID).unwrap(), 0x0100_00ed);

    let src = Arc::new(VecMemory::new(4096));
    let dst = Arc::new(VecMemory::new(4096));
    let (sg_a, sg_b) = (Arc::new(VecMemory::new(4096)), Arc::new(VecMemory::new(4096)));
    let victim = Arc::new(VecMemory::new(4096));
    use iommu_sim::HostMemory;
    src.write_at(0, &pattern(0x3c, 2048)).unwrap();

    // Round trip through two mappings.
    iommu.map(0xfff_e000, src.clone(), 0, 4096, Perm::R).unwrap();
    iommu.map(0xfff_d000, dst.clone(), 0, 4096, Perm::W).unwrap();
    dma(&edu, false, 0xfff_e000, 0, 2048);
    dma(&edu, true, 0xfff_d000, 0, 2048);
    assert_bytes("round trip", &dst.to_vec()[..2048], &pattern(0x3c, 2048));
    iommu.unmap(0xfff_d000, 0x2000).unwrap(); // both at once, as one type1 unmap

    // Completion interrupt.
    iommu.map(0xfff_d000, dst.clone(), 0, 4096, Perm::W).unwrap();
    edu.write64(reg::DMA_SRC, DMA_BUFFER).unwrap();
    edu.write64(reg::DMA_DST, 0xfff_d000).unwrap();
    edu.write64(reg::DMA_CNT, 256).unwrap();
    edu.write64(reg::DMA_CMD, CMD_START | CMD_TO_RAM | CMD_IRQ).unwrap();
    assert_eq!(edu.take_interrupts(), 1);
    assert_eq!(edu.read32(reg::IRQ_STATUS).unwrap() & DMA_IRQ, DMA_IRQ);
    edu.write32(reg::IRQ_ACK, DMA_IRQ).unwrap();
    assert!(!edu.irq_line());
    iommu.unmap(0xfff_d000, 0x1000).unwrap();

    // Scatter-gather: two host buffers at consecutive IOVAs, DMAs across the seam.
    sg_a.write_at(0, &pattern(0xa0, 4096)).unwrap();
    sg_b.write_at(0, &pattern(0xb0, 4096)).unwrap();
    iommu.map(0x100_0000, sg_a.clone(), 0, 4096, Perm::RW).unwrap();
    iommu.map(0x100_1000, sg_b.clone(), 0, 4096, Perm::RW).unwrap();
    dma(&edu, false, 0x100_0000 + 4096 - 1024, 0, 2048);
    let mut want = pattern(0xa0, 4096)[3072..].to_vec();
    want.extend_from_slice(&pattern(0xb0, 4096)[..1024]);
    assert_bytes("read across the seam", &edu.with(|e| e.buffer()[..2048].to_vec()), &want);
    dma(&edu, true, 0x100_0000 + 4096 - 512, 0, 1024);
    assert_bytes("write across: a", &sg_a.to_vec()[3584..], &want[..512]);
    assert_bytes("write across: b", &sg_b.to_vec()[..512], &want[512..1024]);
    iommu.unmap(0x100_0000, 0x2000).unwrap();

    // Isolation 1: an IOVA never mapped.
    let snapshot = || [&src, &dst, &sg_a, &sg_b, &victim].map(|b| b.to_vec());
    let before = snapshot();
    dma(&edu, true, 0x90_0000, 0, 2048);
    assert_eq!(snapshot(), before);
    let Some(DmaOutcome::Faulted { fault }) = edu.last_dma() else { panic!("{:?}", edu.last_dma()) };
    assert_eq!((fault.addr, fault.vtd_code, fault.reason), (0x90_0000, 5, FaultReason::NotMapped));

    // Isolation 2: mapped, reached, unmapped, blocked.
    victim.write_at(0, &[0x11; 4096]).unwrap();
    iommu.map(0xfff_c000, victim.clone(), 0, 4096, Perm::W).unwrap();
    dma(&edu, true, 0xfff_c000, 0, 2048);
    assert_ne!(victim.to_vec()[..16], [0x11; 16]);
    victim.write_at(0, &[0x11; 4096]).unwrap();
    iommu.unmap(0xfff_c000, 0x1000).unwrap();
    dma(&edu, true, 0xfff_c000, 0, 2048);
    assert_eq!(victim.to_vec(), vec![0x11; 4096]);

    let faults = iommu.faults();
    assert_eq!(faults.len(), 2, "{faults:?}");
    assert!(faults.iter().all(|f| f.rid == dev && f.vtd_code == 5));
    assert!(iommu.mappings().is_empty());
    assert!(iommu.with(|s| s.memory().regions().is_empty()), "every host buffer unplugged");
}

#[test]
fn a_reset_clears_bus_mastering_so_dma_stops() {
    let dev = rid(1);
    let mut s = sim();
    domain(&mut s, DomainMode::Identity, &[dev]);
    let shared = s.into_shared();
    let mut e = Edu::new(dev);
    e.enable_bus_master();
    let edu = SharedEdu::new(e, shared.clone());
    edu.write32(reg::LIVENESS, 0x0f0f_0f0f).unwrap();
    edu.reset();
    assert_eq!(edu.read32(reg::LIVENESS).unwrap(), 0xffff_ffff);
    let mut cmd = [0u8; 2];
    edu.config_read(4, &mut cmd).unwrap();
    assert_eq!(cmd, [0, 0]);
    dma(&edu, true, 0x1000, 0, 16);
    assert_eq!(edu.last_dma(), Some(DmaOutcome::NoBusMaster));
    assert_eq!(iommu_sim::lock(&shared).memory().resident_frames(), 0);
}
