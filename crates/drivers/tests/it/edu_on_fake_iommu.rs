//! The unchanged `edu` driver (`iommu_drivers::edu::run`) against a small emulated edu behind the
//! in-memory IOMMU (`iommu_backend::fake::FakeIommu`): what a software IOMMU simulator has to provide, and
//! proof that the contract's traits suffice. The emulated device follows QEMU's model: 28-bit DMA addresses, a 4 KiB buffer at 0x40000,
//! DMA only with bus mastering on, interrupt 0x100 when a DMA with command bit 0x4 is done, INTx
//! automasked until unmasked.

use std::sync::{Arc, Mutex};

use iommu_backend::fake::FakeIommu;
use iommu_backend::{
    BackendError, DeviceAccess, DeviceInfo, DmaSpace, EventFd, IrqInfo, IrqKind, Mmio, RegionInfo, Result,
    CONFIG_REGION, PCI_COMMAND_MASTER,
};
use iommu_drivers::{edu, Reporter};
use serde_json::Value;

#[derive(Default)]
struct Regs {
    liveness: u32,
    fact: u32,
    status: u32,
    irq_status: u32,
    dma: [u64; 4],
    buffer: Vec<u8>,
    config: Vec<u8>,
    intx_masked: bool,
}

struct FakeEdu {
    iommu: Arc<FakeIommu>,
    regs: Mutex<Regs>,
    irq: Mutex<Option<(IrqKind, EventFd)>>,
}

impl FakeEdu {
    fn new(iommu: Arc<FakeIommu>) -> Self {
        let r = Regs { buffer: vec![0; 4096], config: vec![0; 256], ..Default::default() };
        Self { iommu, regs: Mutex::new(r), irq: Mutex::new(None) }
    }

    fn raise(&self, r: &mut Regs, bits: u32) {
        r.irq_status |= bits;
        if let Some((kind, fd)) = self.irq.lock().unwrap().as_ref() {
            if *kind == IrqKind::Intx {
                if r.intx_masked {
                    return;
                }
                r.intx_masked = true;
            }
            fd.signal(1).unwrap();
        }
    }

    fn start_dma(&self, r: &mut Regs, cmd: u64) {
        let mask = (1u64 << 28) - 1;
        let (src, dst, cnt) = (r.dma[0] & mask, r.dma[1] & mask, r.dma[2] as usize);
        let master = u16::from_le_bytes([r.config[4], r.config[5]]) & PCI_COMMAND_MASTER != 0;
        if master {
            if cmd & 2 == 0 {
                let off = (dst - 0x40000) as usize;
                let mut tmp = vec![0; cnt];
                if self.iommu.dma_read(src, &mut tmp).is_ok() {
                    r.buffer[off..off + cnt].copy_from_slice(&tmp);
                }
            } else {
                let off = (src - 0x40000) as usize;
                let _ = self.iommu.dma_write(dst, &r.buffer[off..off + cnt]); // a fault is recorded, nothing written
            }
        }
        r.dma[3] = cmd & !1;
        if cmd & 4 != 0 {
            self.raise(r, 0x100);
        }
    }
}

struct Bar0<'a>(&'a FakeEdu);

impl Mmio for Bar0<'_> {
    fn size(&self) -> u64 {
        1 << 20
    }
    fn read32(&self, offset: u64) -> Result<u32> {
        let r = self.0.regs.lock().unwrap();
        Ok(match offset {
            0x00 => 0x0100_00ed,
            0x04 => !r.liveness,
            0x08 => r.fact,
            0x20 => r.status,
            0x24 => r.irq_status,
            _ => 0,
        })
    }
    fn write32(&self, offset: u64, v: u32) -> Result<()> {
        let mut r = self.0.regs.lock().unwrap();
        match offset {
            0x04 => r.liveness = v,
            0x08 => {
                r.fact = (1..=v).fold(1u32, |a, b| a.wrapping_mul(b));
                if r.status & 0x80 != 0 {
                    self.0.raise(&mut r, 1);
                }
            }
            0x20 => r.status = v & 0x80,
            0x60 => self.0.raise(&mut r, v),
            0x64 => r.irq_status &= !v,
            _ => {}
        }
        Ok(())
    }
    fn read64(&self, offset: u64) -> Result<u64> {
        let r = self.0.regs.lock().unwrap();
        Ok(match offset {
            0x80..=0x98 => r.dma[((offset - 0x80) / 8) as usize],
            _ => 0,
        })
    }
    fn write64(&self, offset: u64, v: u64) -> Result<()> {
        let mut r = self.0.regs.lock().unwrap();
        match offset {
            0x98 if v & 1 != 0 => self.0.start_dma(&mut r, v),
            0x80..=0x98 => r.dma[((offset - 0x80) / 8) as usize] = v,
            _ => {}
        }
        Ok(())
    }
}

impl DeviceAccess for FakeEdu {
    type Bar<'a> = Bar0<'a>;

    fn name(&self) -> &str {
        "0000:01:00.0"
    }
    fn device_info(&self) -> DeviceInfo {
        DeviceInfo { flags: 3, num_regions: 9, num_irqs: 5 }
    }
    fn region_info(&self, index: u32) -> Result<RegionInfo> {
        match index {
            0 => Ok(RegionInfo { index, size: 1 << 20, offset: 0, flags: 7, sparse_mmap: None }),
            CONFIG_REGION => Ok(RegionInfo { index, size: 256, offset: 0, flags: 3, sparse_mmap: None }),
            _ => Err(BackendError::Invalid(format!("no region {index}"))),
        }
    }
    fn read_region(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        assert_eq!(index, CONFIG_REGION);
        let r = self.regs.lock().unwrap();
        buf.copy_from_slice(&r.config[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn write_region(&self, index: u32, offset: u64, data: &[u8]) -> Result<()> {
        assert_eq!(index, CONFIG_REGION);
        let mut r = self.regs.lock().unwrap();
        r.config[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn bar(&self, index: u32) -> Result<Bar0<'_>> {
        assert_eq!(index, 0);
        Ok(Bar0(self))
    }
    fn irq_info(&self, kind: IrqKind) -> Result<IrqInfo> {
        let (count, flags) = match kind {
            IrqKind::Intx => (1, 7),
            IrqKind::Msi => (1, 1),
            _ => (0, 0),
        };
        Ok(IrqInfo { index: kind.index(), count, flags })
    }
    fn enable_irqs(&self, kind: IrqKind, count: u32) -> Result<Vec<EventFd>> {
        assert_eq!(count, 1);
        let fd = EventFd::new()?;
        *self.irq.lock().unwrap() = Some((kind, fd.try_clone()?));
        self.regs.lock().unwrap().intx_masked = false;
        Ok(vec![fd])
    }
    fn unmask_intx(&self) -> Result<()> {
        let mut r = self.regs.lock().unwrap();
        r.intx_masked = false;
        if r.irq_status != 0 {
            self.raise(&mut r, 0); // level-triggered: still asserted, fires again
        }
        Ok(())
    }
    fn disable_irqs(&self, _kind: IrqKind) -> Result<()> {
        *self.irq.lock().unwrap() = None;
        Ok(())
    }
    fn reset(&self) -> Result<()> {
        let mut r = self.regs.lock().unwrap();
        let config = std::mem::take(&mut r.config);
        *r = Regs { buffer: vec![0; 4096], config, ..Default::default() };
        Ok(())
    }
}

#[test]
fn the_edu_driver_runs_unchanged_on_the_in_memory_iommu_and_its_blocked_dmas_fault() {
    let iommu = Arc::new(FakeIommu::new());
    let dev = FakeEdu::new(iommu.clone());
    let space = DmaSpace::new(iommu.clone(), &[]).unwrap().with_dma_mask(edu::DMA_MASK_BITS);
    let mut lines = Vec::new();
    let ok = {
        let mut r = Reporter::new(|l: &str| lines.push(l.to_string()));
        edu::run(&dev, &space, &mut r).unwrap();
        r.all_ok()
    };
    let steps: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(ok, "{lines:#?}");
    let iova_of = |needle: &str| {
        steps.iter().find(|s| s["step"].as_str().unwrap().contains(needle)).unwrap()["iova"].as_u64().unwrap()
    };
    let (hole, after) = (iova_of("unmapped"), iova_of("after-unmap"));
    assert_ne!(hole, after);
    let faults: Vec<u64> = iommu.faults().iter().map(|f| f.iova).collect();
    assert_eq!(faults, vec![hole, after], "exactly the two blocked DMAs fault");
    for s in &steps {
        if let Some(list) = s["iovas"].as_array() {
            assert!(list.iter().all(|i| i.as_u64().unwrap() < 1 << 28), "{s}");
        }
    }
    assert!(iommu.mappings().is_empty(), "every mapping was undone");
    assert_eq!(space.stats().mappings, 0);
}
