//! A model of QEMU's educational PCI device `edu` (1234:11e8) whose DMA engine goes through the
//! simulated IOMMU with the device's requester ID.
//!
//! The register map is the driver contract's ([`iommu_backend::edu_regs`], re-exported here), so the
//! driver and this model share one hardware description.
//!
//! # Registers (BAR0, 1 MiB)
//!
//! | offset | name | behaviour |
//! |---|---|---|
//! | 0x00 | id | reads `0x010000ed` (major 1, minor 0) |
//! | 0x04 | liveness | reads back the complement of the last value written |
//! | 0x08 | factorial | write n: computes n! (32-bit, wrapping) while status bit 0x01 is set; read the result. Ignored while busy |
//! | 0x20 | status | 0x01 factorial busy (read-only); 0x80 raise interrupt 0x001 when a factorial is done (read/write) |
//! | 0x24 | interrupt status | the bits raised and not yet acknowledged |
//! | 0x60 | raise interrupt | write: ORs the value into interrupt status and raises the interrupt |
//! | 0x64 | acknowledge | write: clears those bits; the line drops when none is left |
//! | 0x80 | DMA source | 64-bit |
//! | 0x88 | DMA destination | 64-bit |
//! | 0x90 | DMA count | 64-bit, bytes |
//! | 0x98 | DMA command | 0x1 start (reads 1 until done), 0x2 direction device → RAM, 0x4 raise interrupt 0x100 when done |
//!
//! Accesses below 0x80 must be 4 bytes wide, at and above 0x80 4 or 8 bytes; other widths and
//! undecoded offsets read as all ones and ignore writes, as on the QEMU device. A 4-byte write to a
//! 64-bit register sets the whole register to the zero-extended value. The DMA registers and the
//! command ignore writes while a DMA is running.
//!
//! # DMA
//!
//! The device side of a transfer is the device's 4 KiB buffer at device address `0x40000`; the RAM
//! side is an address the device sends to the IOMMU as `rid`, cut to the device's 28 address bits
//! (like the QEMU model, which clamps to its 28-bit DMA mask). A transfer that would leave the buffer
//! is not made (QEMU aborts the whole emulator instead; note QEMU 7.2 also rejects a transfer of the
//! full 4096 bytes, which this model accepts). A transfer with bus mastering disabled in config space
//! moves nothing, as a PCI device without bus-master enable cannot issue requests. A faulting transfer
//! moves nothing and leaves its [`Fault`] in the simulator's log; in every case the command completes
//! (bit 0x1 clears) and the completion interrupt is raised if asked for, as the real device does not
//! notice a blocked DMA. [`Edu::last_dma`] tells what happened.
//!
//! # Timing
//!
//! With [`Completion::Immediate`] (the default) a factorial or DMA completes inside the register write
//! that starts it, so status bit 0x01 and command bit 0x1 read as clear right afterwards. With
//! [`Completion::OnStep`] the work waits for [`Edu::step`], so a driver's polling loop can be
//! exercised.
//!
//! # Interrupts
//!
//! Every raise (factorial done with 0x80 set, DMA done with 0x4, a write to 0x60) counts as one
//! interrupt message, as with MSI: [`Edu::take_interrupts`] returns how many arrived since the last call.
//! [`Edu::irq_line`] is the INTx level: interrupt status non-zero and INTx not disabled in config
//! space.
//!
//! # Config space
//!
//! 256 bytes: IDs 1234:11e8, revision 0x10, class 0x00ff00, subsystem 1af4:1100, BAR0 a 1 MiB 32-bit
//! memory BAR, interrupt pin INTA. Writable: the command register's I/O, memory, bus-master and
//! INTx-disable bits, BAR0's address bits, the interrupt line. No capability list (no MSI capability).

use serde::Serialize;

use crate::error::SimError;
use crate::fault::Fault;
use crate::sim::Sim;
use crate::types::{mask_limit, Rid};

pub use iommu_backend::edu_regs::{
    reg, BAR0_SIZE, CMD_IRQ, CMD_START, CMD_TO_RAM, DEVICE_ID, DMA_BUFFER, DMA_BUFFER_SIZE, DMA_IRQ, DMA_MASK_BITS,
    EDU_ID, FACT_IRQ, STATUS_BUSY, STATUS_IRQ_FACT, VENDOR_ID,
};
pub use iommu_backend::{PCI_COMMAND_INTX_DISABLE, PCI_COMMAND_MASTER};

/// When started work completes. See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Completion {
    /// Inside the register write that starts it.
    Immediate,
    /// At the next [`Edu::step`].
    OnStep,
}

/// What the last DMA did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum DmaOutcome {
    /// The bytes moved.
    Done {
        /// RAM-side address sent to the IOMMU.
        addr: u64,
        /// Bytes moved.
        bytes: u64,
    },
    /// The IOMMU blocked it; nothing moved.
    Faulted {
        /// The fault (also in the simulator's log).
        fault: Fault,
    },
    /// Bus mastering is off; nothing moved.
    NoBusMaster,
    /// The device-side range leaves the 4 KiB buffer; nothing moved.
    OutsideBuffer {
        /// Device-side address.
        addr: u64,
        /// Count.
        count: u64,
    },
    /// Memory refused the access (identity mode beyond RAM); nothing moved.
    Failed {
        /// The error, as text.
        error: String,
    },
}

/// Device counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EduStats {
    /// DMAs started.
    pub dmas: u64,
    /// DMAs that moved their bytes.
    pub dmas_done: u64,
    /// DMAs the IOMMU blocked.
    pub dmas_faulted: u64,
    /// DMAs not attempted (no bus master, outside the buffer) or refused by memory.
    pub dmas_refused: u64,
    /// Factorials computed.
    pub factorials: u64,
    /// Interrupts raised.
    pub interrupts: u64,
}

/// The device. See the module documentation.
#[derive(Clone)]
pub struct Edu {
    rid: Rid,
    completion: Completion,
    liveness: u32,
    fact: u32,
    status: u32,
    irq_status: u32,
    dma_src: u64,
    dma_dst: u64,
    dma_cnt: u64,
    dma_cmd: u64,
    fact_pending: bool,
    dma_pending: bool,
    buffer: Box<[u8; DMA_BUFFER_SIZE]>,
    config: [u8; 256],
    wmask: [u8; 256],
    interrupts_pending: u64,
    stats: EduStats,
    last_dma: Option<DmaOutcome>,
}

impl std::fmt::Debug for Edu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edu")
            .field("rid", &self.rid)
            .field("completion", &self.completion)
            .field("status", &self.status)
            .field("irq_status", &self.irq_status)
            .field("dma", &(self.dma_src, self.dma_dst, self.dma_cnt, self.dma_cmd))
            .field("bus_master", &self.bus_master())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn factorial(n: u32) -> u32 {
    // 34! has more than 32 factors of two, so it and every larger factorial is 0 modulo 2^32.
    if n >= 34 {
        return 0;
    }
    (1..=n).fold(1u32, |acc, i| acc.wrapping_mul(i))
}

impl Edu {
    /// A freshly reset device with requester ID `rid`, completing work immediately.
    pub fn new(rid: Rid) -> Self {
        let mut config = [0u8; 256];
        let mut put = |off: usize, bytes: &[u8]| config[off..off + bytes.len()].copy_from_slice(bytes);
        put(0x00, &VENDOR_ID.to_le_bytes());
        put(0x02, &DEVICE_ID.to_le_bytes());
        put(0x08, &[0x10, 0x00, 0xff, 0x00]); // revision, prog-if, subclass, class
        put(0x2c, &0x1af4u16.to_le_bytes());
        put(0x2e, &0x1100u16.to_le_bytes());
        put(0x3d, &[0x01]); // INTA
        let mut wmask = [0u8; 256];
        wmask[0x04] = 0x07; // I/O, memory, bus master
        wmask[0x05] = 0x04; // INTx disable
        wmask[0x12] = 0xf0; // BAR0 address bits 31:20
        wmask[0x13] = 0xff;
        wmask[0x3c] = 0xff; // interrupt line
        Self {
            rid,
            completion: Completion::Immediate,
            liveness: 0,
            fact: 0,
            status: 0,
            irq_status: 0,
            dma_src: 0,
            dma_dst: 0,
            dma_cnt: 0,
            dma_cmd: 0,
            fact_pending: false,
            dma_pending: false,
            buffer: Box::new([0; DMA_BUFFER_SIZE]),
            config,
            wmask,
            interrupts_pending: 0,
            stats: EduStats::default(),
            last_dma: None,
        }
    }

    /// The same device with another completion mode.
    pub fn with_completion(mut self, completion: Completion) -> Self {
        self.completion = completion;
        self
    }

    /// Its requester ID.
    pub fn rid(&self) -> Rid {
        self.rid
    }

    /// Its completion mode.
    pub fn completion(&self) -> Completion {
        self.completion
    }

    fn check(&self, offset: u64, width: u8) -> Result<(), SimError> {
        let ok = matches!(width, 1 | 2 | 4 | 8)
            && offset.is_multiple_of(u64::from(width))
            && offset.checked_add(u64::from(width)).is_some_and(|e| e <= BAR0_SIZE);
        if ok {
            Ok(())
        } else {
            Err(SimError::BarAccess { rid: self.rid, offset, width })
        }
    }

    fn decodes(offset: u64, width: u8) -> bool {
        if offset < 0x80 {
            width == 4
        } else {
            width == 4 || width == 8
        }
    }

    /// Reads `width` bytes (1, 2, 4 or 8) at BAR0 `offset`.
    pub fn read(&self, offset: u64, width: u8) -> Result<u64, SimError> {
        self.check(offset, width)?;
        let all_ones = if width == 8 { u64::MAX } else { (1u64 << (8 * u32::from(width))) - 1 };
        if !Self::decodes(offset, width) {
            return Ok(all_ones);
        }
        let v = match offset {
            reg::ID => u64::from(EDU_ID),
            reg::LIVENESS => u64::from(!self.liveness),
            reg::FACTORIAL => u64::from(self.fact),
            reg::STATUS => u64::from(self.status),
            reg::IRQ_STATUS => u64::from(self.irq_status),
            reg::DMA_SRC => self.dma_src,
            reg::DMA_DST => self.dma_dst,
            reg::DMA_CNT => self.dma_cnt,
            reg::DMA_CMD => self.dma_cmd,
            _ => u64::MAX,
        };
        Ok(v & all_ones)
    }

    /// Writes `width` bytes (1, 2, 4 or 8) at BAR0 `offset`; a write that starts work runs it now
    /// ([`Completion::Immediate`]) against `sim`.
    pub fn write(&mut self, sim: &mut Sim, offset: u64, width: u8, value: u64) -> Result<(), SimError> {
        self.check(offset, width)?;
        if !Self::decodes(offset, width) {
            return Ok(());
        }
        let v32 = value as u32;
        let dma_running = self.dma_cmd & CMD_START != 0;
        match offset {
            reg::LIVENESS => self.liveness = v32,
            reg::FACTORIAL if self.status & STATUS_BUSY == 0 => {
                self.fact = v32;
                self.status |= STATUS_BUSY;
                self.fact_pending = true;
            }
            reg::STATUS => self.status = (self.status & !STATUS_IRQ_FACT) | (v32 & STATUS_IRQ_FACT),
            reg::IRQ_RAISE => self.raise(v32),
            reg::IRQ_ACK => self.irq_status &= !v32,
            reg::DMA_SRC if !dma_running => self.dma_src = value,
            reg::DMA_DST if !dma_running => self.dma_dst = value,
            reg::DMA_CNT if !dma_running => self.dma_cnt = value,
            reg::DMA_CMD if !dma_running => {
                self.dma_cmd = value;
                if value & CMD_START != 0 {
                    self.dma_pending = true;
                    self.stats.dmas += 1;
                }
            }
            _ => {}
        }
        if self.completion == Completion::Immediate {
            self.step(sim);
        }
        Ok(())
    }

    /// 32-bit read.
    pub fn read32(&self, offset: u64) -> Result<u32, SimError> {
        self.read(offset, 4).map(|v| v as u32)
    }

    /// 64-bit read.
    pub fn read64(&self, offset: u64) -> Result<u64, SimError> {
        self.read(offset, 8)
    }

    /// 32-bit write.
    pub fn write32(&mut self, sim: &mut Sim, offset: u64, value: u32) -> Result<(), SimError> {
        self.write(sim, offset, 4, u64::from(value))
    }

    /// 64-bit write.
    pub fn write64(&mut self, sim: &mut Sim, offset: u64, value: u64) -> Result<(), SimError> {
        self.write(sim, offset, 8, value)
    }

    /// Completes pending work (a factorial, then a DMA); returns whether there was any.
    pub fn step(&mut self, sim: &mut Sim) -> bool {
        let mut did = false;
        if self.fact_pending {
            self.fact_pending = false;
            self.fact = factorial(self.fact);
            self.status &= !STATUS_BUSY;
            self.stats.factorials += 1;
            if self.status & STATUS_IRQ_FACT != 0 {
                self.raise(FACT_IRQ);
            }
            did = true;
        }
        if self.dma_pending {
            self.dma_pending = false;
            self.run_dma(sim);
            did = true;
        }
        did
    }

    /// Whether a factorial or DMA is waiting for [`Edu::step`].
    pub fn busy(&self) -> bool {
        self.fact_pending || self.dma_pending
    }

    fn raise(&mut self, bits: u32) {
        self.irq_status |= bits;
        self.interrupts_pending += 1;
        self.stats.interrupts += 1;
    }

    fn run_dma(&mut self, sim: &mut Sim) {
        let to_ram = self.dma_cmd & CMD_TO_RAM != 0;
        let (dev, ram) = if to_ram { (self.dma_src, self.dma_dst) } else { (self.dma_dst, self.dma_src) };
        let ram = ram & mask_limit(DMA_MASK_BITS);
        let count = self.dma_cnt;
        let off = dev.wrapping_sub(DMA_BUFFER);
        let inside = dev >= DMA_BUFFER && off.checked_add(count).is_some_and(|e| e <= DMA_BUFFER_SIZE as u64);
        let outcome = if !self.bus_master() {
            DmaOutcome::NoBusMaster
        } else if !inside {
            DmaOutcome::OutsideBuffer { addr: dev, count }
        } else {
            let buf = &mut self.buffer[off as usize..(off + count) as usize];
            let res = if to_ram { sim.device_write(self.rid, ram, buf) } else { sim.device_read(self.rid, ram, buf) };
            match res {
                Ok(()) => DmaOutcome::Done { addr: ram, bytes: count },
                Err(SimError::Fault(fault)) => DmaOutcome::Faulted { fault },
                Err(e) => DmaOutcome::Failed { error: e.to_string() },
            }
        };
        match outcome {
            DmaOutcome::Done { .. } => self.stats.dmas_done += 1,
            DmaOutcome::Faulted { .. } => self.stats.dmas_faulted += 1,
            _ => self.stats.dmas_refused += 1,
        }
        self.last_dma = Some(outcome);
        self.dma_cmd &= !CMD_START;
        if self.dma_cmd & CMD_IRQ != 0 {
            self.raise(DMA_IRQ);
        }
    }

    /// What the last DMA did.
    pub fn last_dma(&self) -> Option<&DmaOutcome> {
        self.last_dma.as_ref()
    }

    /// The counters.
    pub fn stats(&self) -> EduStats {
        self.stats
    }

    /// Interrupt status bits.
    pub fn irq_status(&self) -> u32 {
        self.irq_status
    }

    /// The INTx level: interrupt status non-zero and INTx not disabled.
    pub fn irq_line(&self) -> bool {
        self.irq_status != 0 && self.command() & PCI_COMMAND_INTX_DISABLE == 0
    }

    /// Interrupts raised since the last call (each one an MSI message).
    pub fn take_interrupts(&mut self) -> u64 {
        std::mem::take(&mut self.interrupts_pending)
    }

    /// The device's DMA buffer.
    pub fn buffer(&self) -> &[u8] {
        &self.buffer[..]
    }

    /// The device's DMA buffer, writable (for tests: preload what the device will send).
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        &mut self.buffer[..]
    }

    fn command(&self) -> u16 {
        u16::from_le_bytes([self.config[4], self.config[5]])
    }

    /// Whether bus mastering is enabled in config space.
    pub fn bus_master(&self) -> bool {
        self.command() & PCI_COMMAND_MASTER != 0
    }

    /// Reads config space.
    pub fn config_read(&self, offset: u64, out: &mut [u8]) -> Result<(), SimError> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|o| self.config.get(o..o.checked_add(out.len())?))
            .ok_or(SimError::ConfigAccess { rid: self.rid, offset, len: out.len() })?;
        out.copy_from_slice(src);
        Ok(())
    }

    /// Writes config space (bits that are not writable keep their value).
    pub fn config_write(&mut self, offset: u64, data: &[u8]) -> Result<(), SimError> {
        let o = usize::try_from(offset)
            .ok()
            .filter(|o| o.checked_add(data.len()).is_some_and(|e| e <= 256))
            .ok_or(SimError::ConfigAccess { rid: self.rid, offset, len: data.len() })?;
        for (i, &b) in data.iter().enumerate() {
            let m = self.wmask[o + i];
            self.config[o + i] = (self.config[o + i] & !m) | (b & m);
        }
        Ok(())
    }

    /// Sets memory space and bus master enable, as a driver does before DMA.
    pub fn enable_bus_master(&mut self) {
        self.config[4] |= 0x06;
    }

    /// Resets the device: registers, buffer, pending work, interrupt status, and the config space's
    /// command register, BAR and interrupt line. The completion mode and counters stay.
    pub fn reset(&mut self) {
        let (completion, stats) = (self.completion, self.stats);
        *self = Edu::new(self.rid).with_completion(completion);
        self.stats = stats;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{DomainMode, Perm};

    const RID: Rid = Rid(0x0100);

    fn setup() -> (Sim, Edu) {
        let mut sim = Sim::new(crate::SimConfig { memory_size: 1 << 30, ..crate::SimConfig::default() }).unwrap();
        let d = sim.create_domain(DomainMode::Translated);
        sim.attach(RID, d).unwrap();
        sim.map(d, 0x10000, 0x200_0000, 0x2000, Perm::RW).unwrap();
        let mut edu = Edu::new(RID);
        edu.enable_bus_master();
        (sim, edu)
    }

    #[test]
    fn id_liveness_and_undecoded_widths_behave_like_qemu() {
        let (mut sim, mut edu) = setup();
        assert_eq!(edu.read32(reg::ID).unwrap(), 0x0100_00ed);
        assert_eq!(edu.read32(reg::LIVENESS).unwrap(), 0xffff_ffff);
        edu.write32(&mut sim, reg::LIVENESS, 0x1234_5678).unwrap();
        assert_eq!(edu.read32(reg::LIVENESS).unwrap(), !0x1234_5678);
        assert_eq!(edu.read(reg::ID, 2).unwrap(), 0xffff, "16-bit reads are not decoded");
        assert_eq!(edu.read64(reg::ID).unwrap(), u64::MAX);
        assert_eq!(edu.read32(0x40).unwrap(), 0xffff_ffff, "undecoded offset");
        assert!(edu.read32(BAR0_SIZE).is_err());
        assert!(edu.read32(0x2).is_err(), "misaligned");
    }

    #[test]
    fn factorial_completes_immediately_and_raises_its_interrupt_when_asked() {
        let (mut sim, mut edu) = setup();
        edu.write32(&mut sim, reg::STATUS, STATUS_IRQ_FACT).unwrap();
        edu.write32(&mut sim, reg::FACTORIAL, 10).unwrap();
        assert_eq!(edu.read32(reg::STATUS).unwrap() & STATUS_BUSY, 0);
        assert_eq!(edu.read32(reg::FACTORIAL).unwrap(), 3_628_800);
        assert_eq!(edu.read32(reg::IRQ_STATUS).unwrap(), FACT_IRQ);
        assert_eq!(edu.take_interrupts(), 1);
        edu.write32(&mut sim, reg::FACTORIAL, 12).unwrap();
        assert_eq!(edu.read32(reg::FACTORIAL).unwrap(), 479_001_600);
        edu.write32(&mut sim, reg::FACTORIAL, 40).unwrap();
        assert_eq!(edu.read32(reg::FACTORIAL).unwrap(), 0);
    }

    #[test]
    fn on_step_mode_shows_busy_bits_until_stepped() {
        let (mut sim, edu) = setup();
        let mut edu = edu.with_completion(Completion::OnStep);
        edu.write32(&mut sim, reg::FACTORIAL, 5).unwrap();
        assert_eq!(edu.read32(reg::STATUS).unwrap() & STATUS_BUSY, STATUS_BUSY);
        edu.write32(&mut sim, reg::FACTORIAL, 7).unwrap(); // ignored while busy
        edu.write64(&mut sim, reg::DMA_SRC, 0x10000).unwrap();
        edu.write64(&mut sim, reg::DMA_DST, DMA_BUFFER).unwrap();
        edu.write64(&mut sim, reg::DMA_CNT, 16).unwrap();
        edu.write64(&mut sim, reg::DMA_CMD, CMD_START).unwrap();
        edu.write64(&mut sim, reg::DMA_CNT, 32).unwrap(); // ignored while running
        assert_eq!(edu.read64(reg::DMA_CMD).unwrap() & CMD_START, CMD_START);
        assert!(edu.busy());
        assert!(edu.step(&mut sim));
        assert!(!edu.step(&mut sim));
        assert_eq!(edu.read32(reg::FACTORIAL).unwrap(), 120);
        assert_eq!(edu.read64(reg::DMA_CMD).unwrap(), 0);
        assert_eq!(edu.last_dma(), Some(&DmaOutcome::Done { addr: 0x10000, bytes: 16 }));
    }

    #[test]
    fn dma_round_trip_goes_through_the_iommu() {
        let (mut sim, mut edu) = setup();
        sim.memory().write(0x200_0000, b"through the IOMMU").unwrap();
        edu.write64(&mut sim, reg::DMA_SRC, 0x10000).unwrap();
        edu.write64(&mut sim, reg::DMA_DST, DMA_BUFFER + 0x100).unwrap();
        edu.write64(&mut sim, reg::DMA_CNT, 17).unwrap();
        edu.write64(&mut sim, reg::DMA_CMD, CMD_START).unwrap();
        assert_eq!(&edu.buffer()[0x100..0x111], b"through the IOMMU");
        edu.write64(&mut sim, reg::DMA_SRC, DMA_BUFFER + 0x100).unwrap();
        edu.write64(&mut sim, reg::DMA_DST, 0x11000).unwrap();
        edu.write64(&mut sim, reg::DMA_CMD, CMD_START | CMD_TO_RAM | CMD_IRQ).unwrap();
        assert_eq!(sim.memory().read_vec(0x200_1000, 17).unwrap(), b"through the IOMMU");
        assert_eq!(edu.read32(reg::IRQ_STATUS).unwrap(), DMA_IRQ);
        assert!(edu.irq_line());
        edu.write32(&mut sim, reg::IRQ_ACK, DMA_IRQ).unwrap();
        assert!(!edu.irq_line());
    }

    #[test]
    fn dma_to_an_unmapped_iova_leaves_memory_untouched_and_records_a_fault() {
        let (mut sim, mut edu) = setup();
        edu.buffer_mut().fill(0x5a);
        edu.write64(&mut sim, reg::DMA_SRC, DMA_BUFFER).unwrap();
        edu.write64(&mut sim, reg::DMA_DST, 0x90_0000).unwrap();
        edu.write64(&mut sim, reg::DMA_CNT, 2048).unwrap();
        edu.write64(&mut sim, reg::DMA_CMD, CMD_START | CMD_TO_RAM).unwrap();
        let Some(DmaOutcome::Faulted { fault }) = edu.last_dma() else { panic!("{:?}", edu.last_dma()) };
        assert_eq!((fault.addr, fault.vtd_code, fault.rid), (0x90_0000, 0x05, RID));
        assert_eq!(sim.faults().len(), 1);
        assert_eq!(sim.memory().resident_frames(), 0, "nothing was written anywhere");
        assert_eq!(edu.read64(reg::DMA_CMD).unwrap() & CMD_START, 0, "the command still completes");
    }

    #[test]
    fn dma_without_bus_master_or_outside_the_buffer_moves_nothing() {
        let (mut sim, _) = setup();
        let mut edu = Edu::new(RID);
        edu.write64(&mut sim, reg::DMA_SRC, DMA_BUFFER).unwrap();
        edu.write64(&mut sim, reg::DMA_DST, 0x10000).unwrap();
        edu.write64(&mut sim, reg::DMA_CNT, 8).unwrap();
        edu.write64(&mut sim, reg::DMA_CMD, CMD_START | CMD_TO_RAM).unwrap();
        assert_eq!(edu.last_dma(), Some(&DmaOutcome::NoBusMaster));
        edu.config_write(4, &[0x07, 0x00]).unwrap();
        assert!(edu.bus_master());
        edu.write64(&mut sim, reg::DMA_SRC, DMA_BUFFER + 4090).unwrap();
        edu.write64(&mut sim, reg::DMA_CMD, CMD_START | CMD_TO_RAM).unwrap();
        assert_eq!(edu.last_dma(), Some(&DmaOutcome::OutsideBuffer { addr: DMA_BUFFER + 4090, count: 8 }));
        assert_eq!(edu.stats().dmas_refused, 2);
        assert_eq!(sim.memory().resident_frames(), 0);
    }

    #[test]
    fn ram_addresses_are_cut_to_28_bits() {
        let (mut sim, mut edu) = setup();
        edu.buffer_mut()[..4].copy_from_slice(b"high");
        edu.write64(&mut sim, reg::DMA_SRC, DMA_BUFFER).unwrap();
        edu.write64(&mut sim, reg::DMA_DST, 0xf000_0000_1001_0000).unwrap();
        edu.write64(&mut sim, reg::DMA_CNT, 4).unwrap();
        edu.write64(&mut sim, reg::DMA_CMD, CMD_START | CMD_TO_RAM).unwrap();
        assert_eq!(sim.memory().read_vec(0x200_0000, 4).unwrap(), b"high");
    }

    #[test]
    fn config_space_has_edu_ids_and_only_writable_bits_change() {
        let (_, mut edu) = setup();
        let mut b = [0u8; 4];
        edu.config_read(0, &mut b).unwrap();
        assert_eq!(b, [0x34, 0x12, 0xe8, 0x11]);
        edu.config_write(0, &[0, 0, 0, 0]).unwrap();
        edu.config_read(0, &mut b).unwrap();
        assert_eq!(b, [0x34, 0x12, 0xe8, 0x11]);
        edu.config_write(0x10, &[0xff; 4]).unwrap();
        edu.config_read(0x10, &mut b).unwrap();
        assert_eq!(u32::from_le_bytes(b), 0xfff0_0000, "a 1 MiB memory BAR sizes as 0xfff00000");
        assert!(edu.config_read(0xff, &mut b).is_err());
        edu.reset();
        assert!(!edu.bus_master());
    }
}
