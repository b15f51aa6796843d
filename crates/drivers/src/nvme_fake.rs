//! A small NVMe controller model for the driver's tests: enough of the base specification for the
//! driver's run (CAP/VS/CC/CSTS/AQA/ASQ/ACQ, doorbells, Identify, create/delete I/O queues, read, write,
//! flush with PRP1/PRP2/PRP lists, MSI-X vector 0), doing its DMA through a [`FakeIommu`]. It records
//! every register write and DMA so a test can compare whole runs.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use iommu_backend::fake::{FakeIommu, Fault};
use iommu_backend::{
    BackendError, DeviceAccess, DeviceInfo, EventFd, IrqInfo, IrqKind, Mmio, RegionInfo, Result, CONFIG_REGION,
};

use crate::nvme::{admin, io, reg, PAGE};

/// CAP: MQES 63, CQR, TO 1 (500 ms), DSTRD 0, CSS NVM, MPSMIN 0, MPSMAX 0.
const CAP: u64 = 63 | (1 << 16) | (1 << 24) | (1 << 37);
/// Namespace 1 by default: 8 MiB of 512-byte blocks.
const NS_BLOCKS: u64 = 16384;
const BAR_SIZE: u64 = 0x2000;

#[derive(Clone, Copy, Debug, Default)]
struct Queue {
    base: u64,
    entries: u16,
    head: u16,
    /// For a completion queue: the next slot and its phase.
    tail: u16,
    phase: bool,
    /// For a submission queue: its completion queue.
    cqid: u16,
    irq: bool,
}

#[derive(Debug, Default)]
struct State {
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    sqs: BTreeMap<u16, Queue>,
    cqs: BTreeMap<u16, Queue>,
    disk: Vec<u8>,
    config: Vec<u8>,
    msix: Option<EventFd>,
    log: Vec<String>,
}

/// The controller, as a [`DeviceAccess`].
#[derive(Debug)]
pub(crate) struct FakeNvme<'i> {
    iommu: &'i FakeIommu,
    state: Mutex<State>,
}

impl<'i> FakeNvme<'i> {
    pub(crate) fn new(iommu: &'i FakeIommu) -> Self {
        Self::with_blocks(iommu, NS_BLOCKS)
    }

    /// A controller whose namespace 1 has `blocks` 512-byte blocks.
    pub(crate) fn with_blocks(iommu: &'i FakeIommu, blocks: u64) -> Self {
        let state = State { disk: vec![0; (blocks * 512) as usize], config: vec![0; 256], ..State::default() };
        Self { iommu, state: Mutex::new(state) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every register write, queue creation, command and interrupt so far.
    pub(crate) fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// The namespace's bytes at `offset`.
    pub(crate) fn disk(&self, offset: usize, len: usize) -> Vec<u8> {
        self.lock().disk[offset..offset + len].to_vec()
    }

    fn write_reg(&self, off: u64, v: u32) -> Result<()> {
        let mut s = self.lock();
        s.log.push(format!("w {off:#x} {v:#x}"));
        match off {
            reg::CC => {
                if v & 1 == 1 && s.cc & 1 == 0 {
                    let n = (s.aqa & 0xfff) as u16 + 1;
                    let (asq, acq) = (s.asq, s.acq);
                    s.sqs.insert(0, Queue { base: asq, entries: n, ..Queue::default() });
                    s.cqs.insert(0, Queue { base: acq, entries: n, phase: true, ..Queue::default() });
                    s.csts = 1;
                } else if v & 1 == 0 {
                    s.csts = 0;
                    s.sqs.clear();
                    s.cqs.clear();
                }
                if (v >> 14) & 3 == 1 {
                    s.csts = (s.csts & !(3 << 2)) | (2 << 2);
                }
                s.cc = v;
            }
            reg::AQA => s.aqa = v,
            o if o == reg::ASQ => s.asq = (s.asq & !0xffff_ffff) | u64::from(v),
            o if o == reg::ASQ + 4 => s.asq = (s.asq & 0xffff_ffff) | (u64::from(v) << 32),
            o if o == reg::ACQ => s.acq = (s.acq & !0xffff_ffff) | u64::from(v),
            o if o == reg::ACQ + 4 => s.acq = (s.acq & 0xffff_ffff) | (u64::from(v) << 32),
            o if o >= reg::DOORBELLS => {
                let qid = ((o - reg::DOORBELLS) / 8) as u16;
                if (o - reg::DOORBELLS).is_multiple_of(8) {
                    self.ring(&mut s, qid, v as u16)?;
                } else if let Some(q) = s.cqs.get_mut(&qid) {
                    q.head = v as u16;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Runs the commands of submission queue `qid` up to `tail`.
    fn ring(&self, s: &mut State, qid: u16, tail: u16) -> Result<()> {
        while let Some(mut sq) = s.sqs.get(&qid).copied().filter(|q| q.head != tail) {
            let mut e = [0u8; 64];
            self.iommu.dma_read(sq.base + u64::from(sq.head) * 64, &mut e).map_err(fault)?;
            let dw = |i: usize| u32::from_le_bytes(e[4 * i..4 * i + 4].try_into().unwrap_or_default());
            sq.head = (sq.head + 1) % sq.entries;
            s.sqs.insert(qid, sq);
            let status = if qid == 0 { self.execute(s, &dw)? } else { self.execute_io(s, &dw)? };
            let cq = s.cqs.get_mut(&sq.cqid).ok_or_else(|| BackendError::Invalid("no completion queue".into()))?;
            let mut c = [0u8; 16];
            c[8..10].copy_from_slice(&sq.head.to_le_bytes());
            c[10..12].copy_from_slice(&qid.to_le_bytes());
            let dw3 = (dw(0) >> 16) | (u32::from(cq.phase) << 16) | (u32::from(status) << 17);
            c[12..16].copy_from_slice(&dw3.to_le_bytes());
            self.iommu.dma_write(cq.base + u64::from(cq.tail) * 16, &c).map_err(fault)?;
            cq.tail += 1;
            if cq.tail == cq.entries {
                cq.tail = 0;
                cq.phase = !cq.phase;
            }
            if cq.irq {
                if let Some(fd) = &s.msix {
                    fd.signal(1)?;
                    s.log.push("msix".into());
                }
            }
        }
        Ok(())
    }

    /// Executes one admin command; returns its status.
    fn execute(&self, s: &mut State, dw: &dyn Fn(usize) -> u32) -> Result<u16> {
        let (opcode, nsid) = ((dw(0) & 0xff) as u8, dw(1));
        let prp1 = u64::from(dw(6)) | (u64::from(dw(7)) << 32);
        let prp2 = u64::from(dw(8)) | (u64::from(dw(9)) << 32);
        s.log.push(format!(
            "cmd {opcode:#x} nsid {nsid} prp {prp1:#x} {prp2:#x} cdw {:x?}",
            (10..16).map(dw).collect::<Vec<_>>()
        ));
        let qsize = (dw(10) >> 16) as u16 + 1;
        let qid = dw(10) as u16;
        match opcode {
            admin::IDENTIFY if dw(10) == 1 => {
                let mut d = vec![0u8; PAGE];
                d[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
                d[4..24].copy_from_slice(b"FAKE0001            ");
                d[24..64].copy_from_slice(&[b'M'; 40]);
                d[64..72].copy_from_slice(b"1.0     ");
                d[77] = 5;
                d[516..520].copy_from_slice(&1u32.to_le_bytes());
                self.iommu.dma_write(prp1, &d).map_err(fault)?;
            }
            admin::IDENTIFY => {
                let mut d = vec![0u8; PAGE];
                d[0..8].copy_from_slice(&(s.disk.len() as u64 / 512).to_le_bytes());
                d[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes());
                self.iommu.dma_write(prp1, &d).map_err(fault)?;
            }
            admin::CREATE_CQ => {
                let irq = dw(11) & 2 != 0;
                s.cqs.insert(qid, Queue { base: prp1, entries: qsize, phase: true, irq, ..Queue::default() });
            }
            admin::CREATE_SQ => {
                let cqid = (dw(11) >> 16) as u16;
                s.sqs.insert(qid, Queue { base: prp1, entries: qsize, cqid, ..Queue::default() });
            }
            admin::DELETE_SQ => {
                s.sqs.remove(&qid);
            }
            admin::DELETE_CQ => {
                s.cqs.remove(&qid);
            }
            // Invalid command opcode.
            _ => return Ok(0x0001),
        }
        Ok(0)
    }

    /// The I/O commands (write, read, flush) on queue `qid` > 0.
    fn execute_io(&self, s: &mut State, dw: &dyn Fn(usize) -> u32) -> Result<u16> {
        let opcode = (dw(0) & 0xff) as u8;
        let prp1 = u64::from(dw(6)) | (u64::from(dw(7)) << 32);
        let prp2 = u64::from(dw(8)) | (u64::from(dw(9)) << 32);
        s.log.push(format!("io {opcode:#x} prp {prp1:#x} {prp2:#x} cdw {:x?}", (10..16).map(dw).collect::<Vec<_>>()));
        if opcode == io::FLUSH {
            return Ok(0);
        }
        let slba = u64::from(dw(10)) | (u64::from(dw(11)) << 32);
        let len = (dw(12) as usize + 1) * 512;
        let pages = len.div_ceil(PAGE);
        let mut addrs = vec![prp1];
        if pages == 2 {
            addrs.push(prp2);
        } else if pages > 2 {
            let mut list = vec![0u8; 8 * (pages - 1)];
            self.iommu.dma_read(prp2, &mut list).map_err(fault)?;
            addrs.extend(list.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())));
        }
        let at = (slba * 512) as usize;
        for (i, a) in addrs.iter().enumerate() {
            let range = at + i * PAGE..at + ((i + 1) * PAGE).min(len);
            match opcode {
                io::WRITE => self.iommu.dma_read(*a, &mut s.disk[range]).map_err(fault)?,
                io::READ => self.iommu.dma_write(*a, &s.disk[range]).map_err(fault)?,
                _ => return Ok(0x0001),
            }
        }
        Ok(0)
    }
}

fn fault(f: Fault) -> BackendError {
    BackendError::DeviceReported { device: "fake nvme".into(), what: f.to_string() }
}

/// BAR0.
#[derive(Debug)]
pub(crate) struct FakeNvmeBar<'a, 'i>(&'a FakeNvme<'i>);

impl Mmio for FakeNvmeBar<'_, '_> {
    fn size(&self) -> u64 {
        BAR_SIZE
    }
    fn read32(&self, offset: u64) -> Result<u32> {
        let s = self.0.lock();
        Ok(match offset {
            reg::CAP => CAP as u32,
            o if o == reg::CAP + 4 => (CAP >> 32) as u32,
            reg::VS => 0x0001_0400,
            reg::CC => s.cc,
            reg::CSTS => s.csts,
            _ => 0,
        })
    }
    fn write32(&self, offset: u64, value: u32) -> Result<()> {
        self.0.write_reg(offset, value)
    }
    fn read64(&self, offset: u64) -> Result<u64> {
        Ok(u64::from(self.read32(offset)?) | (u64::from(self.read32(offset + 4)?) << 32))
    }
    fn write64(&self, offset: u64, value: u64) -> Result<()> {
        self.write32(offset, value as u32)?;
        self.write32(offset + 4, (value >> 32) as u32)
    }
}

impl<'i> DeviceAccess for FakeNvme<'i> {
    type Bar<'a>
        = FakeNvmeBar<'a, 'i>
    where
        Self: 'a;

    fn name(&self) -> &str {
        "0000:00:04.0"
    }
    fn device_info(&self) -> DeviceInfo {
        DeviceInfo { flags: 0x3, num_regions: 9, num_irqs: 5 }
    }
    fn region_info(&self, index: u32) -> Result<RegionInfo> {
        let size = match index {
            0 => BAR_SIZE,
            CONFIG_REGION => 256,
            _ => 0,
        };
        Ok(RegionInfo { index, size, offset: 0, flags: 0x3, sparse_mmap: None })
    }
    fn read_region(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        if index != CONFIG_REGION {
            return Err(BackendError::Invalid(format!("region {index}")));
        }
        let o = offset as usize;
        buf.copy_from_slice(&self.lock().config[o..o + buf.len()]);
        Ok(())
    }
    fn write_region(&self, index: u32, offset: u64, data: &[u8]) -> Result<()> {
        if index != CONFIG_REGION {
            return Err(BackendError::Invalid(format!("region {index}")));
        }
        let o = offset as usize;
        let mut s = self.lock();
        s.log.push(format!("config {offset:#x} {data:x?}"));
        s.config[o..o + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn bar(&self, index: u32) -> Result<FakeNvmeBar<'_, 'i>> {
        if index != 0 {
            return Err(BackendError::Invalid(format!("BAR {index}")));
        }
        Ok(FakeNvmeBar(self))
    }
    fn irq_info(&self, kind: IrqKind) -> Result<IrqInfo> {
        Ok(IrqInfo { index: kind.index(), count: u32::from(kind == IrqKind::Msix), flags: 0x1 })
    }
    fn enable_irqs(&self, kind: IrqKind, count: u32) -> Result<Vec<EventFd>> {
        if kind != IrqKind::Msix || count != 1 {
            return Err(BackendError::NoIrq { device: self.name().into(), kind, wanted: count });
        }
        let fd = EventFd::new()?;
        let mut s = self.lock();
        s.msix = Some(fd.try_clone()?);
        s.log.push("enable msix".into());
        Ok(vec![fd])
    }
    fn unmask_intx(&self) -> Result<()> {
        Ok(())
    }
    fn disable_irqs(&self, kind: IrqKind) -> Result<()> {
        let mut s = self.lock();
        s.msix = None;
        s.log.push(format!("disable {kind:?}"));
        Ok(())
    }
    fn reset(&self) -> Result<()> {
        let mut s = self.lock();
        s.log.push("reset".into());
        s.cc = 0;
        s.csts = 0;
        Ok(())
    }
}
