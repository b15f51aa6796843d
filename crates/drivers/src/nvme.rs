//! A minimal polled NVMe driver: controller reset and enable, admin queues, Identify Controller and
//! Namespace, one I/O queue pair, and a verified write/read round trip with PRP lists.
//!
//! Written from the NVMe base specification's register and command layouts: registers CAP 0x00, VS 0x08,
//! CC 0x14, CSTS 0x1c, AQA 0x24, ASQ 0x28, ACQ 0x30, doorbells from 0x1000 with a stride of
//! `4 << CAP.DSTRD`; 64-byte submission entries (opcode, command ID, NSID, PRP1, PRP2, CDW10-15) and
//! 16-byte completion entries (DW0, SQ head, command ID, phase tag, status). Pages are 4 KiB (CC.MPS 0).

use std::sync::atomic::{fence, Ordering};
use std::time::Duration;

use iommu_backend::{
    BackendError, DeviceAccess, DmaBackend, DmaBuf, DmaDir, DmaMapping, DmaSpace, HugePages, IrqKind, MapOptions, Mmio,
    Result,
};
use serde_json::json;

use crate::{poll, Reporter};

/// Register offsets.
pub mod reg {
    /// Controller capabilities (64-bit).
    pub const CAP: u64 = 0x00;
    /// Version.
    pub const VS: u64 = 0x08;
    /// Controller configuration.
    pub const CC: u64 = 0x14;
    /// Controller status.
    pub const CSTS: u64 = 0x1c;
    /// Admin queue attributes.
    pub const AQA: u64 = 0x24;
    /// Admin submission queue base (64-bit).
    pub const ASQ: u64 = 0x28;
    /// Admin completion queue base (64-bit).
    pub const ACQ: u64 = 0x30;
    /// First doorbell.
    pub const DOORBELLS: u64 = 0x1000;
}

/// Admin opcodes.
pub mod admin {
    /// Delete I/O submission queue.
    pub const DELETE_SQ: u8 = 0x00;
    /// Create I/O submission queue.
    pub const CREATE_SQ: u8 = 0x01;
    /// Delete I/O completion queue.
    pub const DELETE_CQ: u8 = 0x04;
    /// Create I/O completion queue.
    pub const CREATE_CQ: u8 = 0x05;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
}

/// NVM I/O opcodes.
pub mod io {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
}

/// Memory page size this driver configures (CC.MPS = 0).
pub const PAGE: usize = 4096;
/// Where the round trip writes: byte offset 1 MiB of namespace 1.
pub const TEST_OFFSET: u64 = 1 << 20;
/// How much the round trip writes and reads back.
pub const TEST_BYTES: usize = 1 << 20;
/// The largest transfer per command this driver issues (the controller's MDTS may lower it).
pub const MAX_CHUNK: usize = 256 << 10;

/// The data written at `disk_offset..disk_offset+len` (both multiples of 512): each 512-byte sector
/// starts with `iommu-vfio nvme ` and its sector number (u64, little-endian), then bytes
/// `(sector * 7 + i) mod 256`. Recognisable in a hex dump of the backing file.
pub fn pattern(disk_offset: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    for k in 0..len {
        let at = disk_offset + k as u64;
        let sector = at / 512;
        let i = (at % 512) as usize;
        v.push(match i {
            0..=15 => b"iommu-vfio nvme "[i],
            16..=23 => sector.to_le_bytes()[i - 16],
            _ => (sector.wrapping_mul(7) as u8).wrapping_add(i as u8),
        });
    }
    v
}

/// A submission queue entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Command {
    /// Opcode.
    pub opcode: u8,
    /// Namespace ID.
    pub nsid: u32,
    /// PRP entry 1.
    pub prp1: u64,
    /// PRP entry 2 (second page or PRP list pointer).
    pub prp2: u64,
    /// Command dwords 10-15.
    pub cdw: [u32; 6],
}

impl Command {
    /// The 16 dwords of the entry with command ID `cid`.
    pub fn dwords(&self, cid: u16) -> [u32; 16] {
        let mut d = [0u32; 16];
        d[0] = u32::from(self.opcode) | (u32::from(cid) << 16);
        d[1] = self.nsid;
        d[6] = self.prp1 as u32;
        d[7] = (self.prp1 >> 32) as u32;
        d[8] = self.prp2 as u32;
        d[9] = (self.prp2 >> 32) as u32;
        d[10..16].copy_from_slice(&self.cdw);
        d
    }
}

/// A completion queue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Command-specific dword 0.
    pub dw0: u32,
    /// Submission queue head pointer.
    pub sq_head: u16,
    /// Command ID.
    pub cid: u16,
    /// Status field (status code type and code, without the phase tag); 0 is success.
    pub status: u16,
}

/// One submission/completion queue pair in DMA memory (the caller owns and maps the buffers).
#[derive(Debug)]
pub struct QueuePair<'m> {
    qid: u16,
    entries: u16,
    sq: &'m DmaBuf,
    cq: &'m DmaBuf,
    sq_iova: u64,
    cq_iova: u64,
    tail: u16,
    head: u16,
    phase: bool,
}

impl<'m> QueuePair<'m> {
    /// Queue `qid` with `entries` slots in `sq` (64-byte entries) and `cq` (16-byte entries), which the
    /// device sees at `sq_iova` and `cq_iova`.
    pub fn new(qid: u16, entries: u16, sq: &'m DmaBuf, sq_iova: u64, cq: &'m DmaBuf, cq_iova: u64) -> Result<Self> {
        if entries < 2 || sq.len() < entries as usize * 64 || cq.len() < entries as usize * 16 {
            return Err(BackendError::Invalid(format!("queue {qid}: {entries} entries do not fit its buffers")));
        }
        cq.fill(0, entries as usize * 16, 0)?;
        Ok(Self { qid, entries, sq, cq, sq_iova, cq_iova, tail: 0, head: 0, phase: true })
    }
}

/// The controller, through BAR0.
pub struct Controller<'d, D: DeviceAccess + 'd> {
    dev: &'d D,
    bar: D::Bar<'d>,
    cap: u64,
    timeout: Duration,
    next_cid: u16,
}

impl<'d, D: DeviceAccess + 'd> Controller<'d, D> {
    /// Maps BAR0 and reads CAP.
    pub fn new(dev: &'d D) -> Result<Self> {
        let bar = dev.bar(0)?;
        let cap = u64::from(bar.read32(reg::CAP)?) | (u64::from(bar.read32(reg::CAP + 4)?) << 32);
        let to = Duration::from_millis(500 * ((cap >> 24) & 0xff).max(1));
        Ok(Self { dev, bar, cap, timeout: to.max(Duration::from_secs(10)), next_cid: 0 })
    }

    /// CAP.
    pub fn cap(&self) -> u64 {
        self.cap
    }
    /// CAP.MQES + 1: the largest queue.
    pub fn max_queue_entries(&self) -> u32 {
        (self.cap & 0xffff) as u32 + 1
    }
    /// CAP.DSTRD.
    pub fn doorbell_stride(&self) -> u32 {
        ((self.cap >> 32) & 0xf) as u32
    }
    /// VS as "major.minor.tertiary".
    pub fn version(&self) -> Result<String> {
        let v = self.bar.read32(reg::VS)?;
        Ok(format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff))
    }
    /// CSTS.
    pub fn csts(&self) -> Result<u32> {
        self.bar.read32(reg::CSTS)
    }

    fn doorbell(&self, qid: u16, completion: bool) -> u64 {
        reg::DOORBELLS + (2 * u64::from(qid) + u64::from(completion)) * (4 << self.doorbell_stride())
    }

    fn write64_halves(&self, off: u64, v: u64) -> Result<()> {
        self.bar.write32(off, v as u32)?;
        self.bar.write32(off + 4, (v >> 32) as u32)
    }

    fn wait_ready(&self, ready: bool) -> Result<u32> {
        let what = if ready { "CSTS.RDY to become 1" } else { "CSTS.RDY to become 0" };
        poll(self.dev.name(), what, self.timeout, || {
            let csts = self.csts()?;
            if csts & 0x2 != 0 && ready {
                return Err(BackendError::DeviceReported {
                    device: self.dev.name().into(),
                    what: "controller fatal status (CSTS.CFS)".into(),
                });
            }
            Ok(((csts & 1 == 1) == ready).then_some(csts))
        })
    }

    /// Controller reset: CC.EN = 0, then waits for CSTS.RDY = 0.
    pub fn disable(&self) -> Result<()> {
        let cc = self.bar.read32(reg::CC)?;
        if cc & 1 != 0 {
            self.bar.write32(reg::CC, cc & !1)?;
        }
        self.wait_ready(false).map(|_| ())
    }

    /// Programs the admin queues and enables the controller (4 KiB pages, NVM command set, 64-byte SQ
    /// and 16-byte CQ entries); returns CSTS once ready.
    pub fn enable(&self, admin: &QueuePair<'_>) -> Result<u32> {
        if (self.cap >> 48) & 0xf != 0 {
            return Err(BackendError::DeviceReported {
                device: self.dev.name().into(),
                what: "CAP.MPSMIN is above 4 KiB".into(),
            });
        }
        let n = u32::from(admin.entries) - 1;
        self.bar.write32(reg::AQA, (n << 16) | n)?;
        self.write64_halves(reg::ASQ, admin.sq_iova)?;
        self.write64_halves(reg::ACQ, admin.cq_iova)?;
        self.bar.write32(reg::CC, (4 << 20) | (6 << 16) | 1)?;
        self.wait_ready(true)
    }

    /// Normal shutdown: CC.SHN = 01b, waits for CSTS.SHST = 10b, then disables.
    pub fn shutdown(&self) -> Result<()> {
        let cc = self.bar.read32(reg::CC)?;
        self.bar.write32(reg::CC, (cc & !(3 << 14)) | (1 << 14))?;
        poll(self.dev.name(), "CSTS.SHST to report shutdown complete", self.timeout, || {
            Ok(((self.csts()? >> 2) & 3 == 2).then_some(()))
        })?;
        self.disable()
    }

    /// Puts `cmd` on `q` and rings the doorbell without waiting; returns its command ID. The caller keeps
    /// at most `entries - 1` commands in flight and collects completions with [`Controller::reap`].
    pub fn push(&mut self, q: &mut QueuePair<'_>, cmd: &Command) -> Result<u16> {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        let slot = q.tail as usize * 64;
        for (i, dw) in cmd.dwords(cid).iter().enumerate() {
            q.sq.write_u32(slot + 4 * i, *dw)?;
        }
        q.tail = (q.tail + 1) % q.entries;
        fence(Ordering::SeqCst);
        self.bar.write32(self.doorbell(q.qid, false), u32::from(q.tail))?;
        Ok(cid)
    }

    /// Takes the next completion of `q` if the device has posted one (phase tag flipped), and rings the
    /// completion doorbell; `None` when there is none yet.
    pub fn reap(&mut self, q: &mut QueuePair<'_>) -> Result<Option<Completion>> {
        let at = q.head as usize * 16;
        let dw3 = q.cq.read_u32(at + 12)?;
        if ((dw3 >> 16) & 1 == 1) != q.phase {
            return Ok(None);
        }
        fence(Ordering::SeqCst);
        let c = Completion {
            dw0: q.cq.read_u32(at)?,
            sq_head: q.cq.read_u32(at + 8)? as u16,
            cid: dw3 as u16,
            status: (dw3 >> 17) as u16,
        };
        q.head += 1;
        if q.head == q.entries {
            q.head = 0;
            q.phase = !q.phase;
        }
        self.bar.write32(self.doorbell(q.qid, true), u32::from(q.head))?;
        Ok(Some(c))
    }

    /// Submits `cmd` on `q`, rings the doorbell and polls for its completion.
    pub fn submit(&mut self, q: &mut QueuePair<'_>, cmd: &Command) -> Result<Completion> {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        let slot = q.tail as usize * 64;
        for (i, dw) in cmd.dwords(cid).iter().enumerate() {
            q.sq.write_u32(slot + 4 * i, *dw)?;
        }
        q.tail = (q.tail + 1) % q.entries;
        fence(Ordering::SeqCst);
        self.bar.write32(self.doorbell(q.qid, false), u32::from(q.tail))?;
        let at = q.head as usize * 16;
        let phase = q.phase;
        let what = format!("completion of opcode {:#04x} (cid {cid}) on queue {}", cmd.opcode, q.qid);
        let dw3 = poll(self.dev.name(), &what, self.timeout, || {
            let dw3 = q.cq.read_u32(at + 12)?;
            Ok((((dw3 >> 16) & 1 == 1) == phase).then_some(dw3))
        })?;
        fence(Ordering::SeqCst);
        let c = Completion {
            dw0: q.cq.read_u32(at)?,
            sq_head: q.cq.read_u32(at + 8)? as u16,
            cid: dw3 as u16,
            status: (dw3 >> 17) as u16,
        };
        q.head += 1;
        if q.head == q.entries {
            q.head = 0;
            q.phase = !q.phase;
        }
        self.bar.write32(self.doorbell(q.qid, true), u32::from(q.head))?;
        if c.cid != cid {
            return Err(BackendError::DeviceReported {
                device: self.dev.name().into(),
                what: format!("completion for cid {} while waiting for {cid}", c.cid),
            });
        }
        if c.status != 0 {
            return Err(BackendError::DeviceReported {
                device: self.dev.name().into(),
                what: format!(
                    "opcode {:#04x} on queue {} failed: status type {:#x} code {:#04x} (DW0 {:#x}, SQ head {}, DW3 {dw3:#010x}; entry {:x?})",
                    cmd.opcode,
                    q.qid,
                    (c.status >> 8) & 7,
                    c.status & 0xff,
                    c.dw0,
                    c.sq_head,
                    (0..16).map(|i| q.sq.read_u32(slot + 4 * i).unwrap_or(0)).collect::<Vec<_>>()
                ),
            });
        }
        Ok(c)
    }
}

fn ascii(b: &[u8]) -> String {
    b.iter()
        .map(|&c| if c.is_ascii_graphic() || c == b' ' { c as char } else { '.' })
        .collect::<String>()
        .trim()
        .to_string()
}

/// PRP1 and PRP2 for `len` bytes at `iova` (page-aligned), writing a PRP list into `list` (seen by the
/// device at `list_iova`) when more than two pages are needed. Returns (prp1, prp2, list entries).
pub fn build_prps(iova: u64, len: usize, list: &DmaBuf, list_off: usize, list_iova: u64) -> Result<(u64, u64, usize)> {
    let pages = len.div_ceil(PAGE);
    if !iova.is_multiple_of(PAGE as u64) || pages == 0 || pages - 1 > PAGE / 8 {
        return Err(BackendError::Invalid(format!("PRPs for {len} bytes at IOVA {iova:#x}")));
    }
    match pages {
        1 => Ok((iova, 0, 0)),
        2 => Ok((iova, iova + PAGE as u64, 0)),
        _ => {
            for p in 1..pages {
                list.write_u64(list_off + 8 * (p - 1), iova + (p * PAGE) as u64)?;
            }
            Ok((iova, list_iova + list_off as u64, pages - 1))
        }
    }
}

/// Runs every step against `dev` and `space`, reporting to `r`.
pub fn run<D: DeviceAccess, B: DmaBackend>(dev: &D, space: &DmaSpace<B>, r: &mut Reporter<'_>) -> Result<()> {
    let mut step = "open";
    let res = run_steps(dev, space, r, &mut step);
    if let Err(e) = &res {
        r.error(step, e);
    }
    res
}

fn run_steps<D: DeviceAccess, B: DmaBackend>(
    dev: &D,
    space: &DmaSpace<B>,
    r: &mut Reporter<'_>,
    step: &mut &'static str,
) -> Result<()> {
    let (mut ctrl, function_reset) = open(dev)?;

    *step = "controller-reset";
    controller_reset(&ctrl, function_reset, r)?;

    *step = "enable";
    let entries = ctrl.max_queue_entries().min(64) as u16;
    let admin = QueueMemory::new(space)?;
    let admin_maps = admin.map(space)?;
    let mut aq = admin_maps.pair(0, entries.min(32))?;
    enable(&ctrl, &aq, r)?;

    *step = "identify-controller";
    let id = space.alloc(PAGE)?;
    let mid = space.map(&id, DmaDir::FromDevice)?;
    let mdts = identify_controller(&mut ctrl, &mut aq, &id, mid.iova(), r)?;

    *step = "identify-namespace";
    let (block, _) = identify_namespace(&mut ctrl, &mut aq, &id, mid.iova(), r)?;
    drop(mid);

    *step = "io-queues";
    // Completions on the I/O queue also raise MSI-X vector 0 when the device has MSI-X (the driver still
    // polls; the eventfd count shows the interrupts arrived).
    let msix = match dev.irq_info(IrqKind::Msix) {
        Ok(i) if i.count > 0 => Some(dev.enable_irqs(IrqKind::Msix, 1)?.remove(0)),
        _ => None,
    };
    let io = QueueMemory::new(space)?;
    let io_maps = io.map(space)?;
    let mut ioq = io_maps.pair(1, entries.min(64))?;
    create_io_queues(&mut ctrl, &mut aq, &ioq, msix.is_some(), r)?;

    *step = "write-read-verify";
    let max_xfer = if mdts == 0 { MAX_CHUNK } else { (PAGE << mdts).min(MAX_CHUNK) };
    let data = TestData::new(space, TEST_BYTES.div_ceil(max_xfer))?;
    let data_maps = data.map(space)?;
    let commands = write_read_verify(&mut ctrl, &mut ioq, &data, &data_maps, max_xfer, block, r)?;

    if let Some(fd) = &msix {
        *step = "io-completion-irq-msix";
        let n = fd.wait(Duration::from_secs(5))?;
        r.step(step, n.is_some(), json!({ "interrupts": n, "io_commands": commands + 1 }));
        dev.disable_irqs(IrqKind::Msix)?;
    }

    *step = "shutdown";
    shutdown(&mut ctrl, &mut aq, space, r)
}

/// How [`bench_random_read`] runs: the queue depths, how long each runs, and over how many bytes of
/// namespace 1 the 4 KiB reads are spread (at most the namespace's size).
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Queue depths to measure, one step each.
    pub depths: Vec<u16>,
    /// Seconds per depth.
    pub seconds: f64,
    /// Bytes of the namespace the random reads fall in (from LBA 0).
    pub span: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self { depths: vec![1, 32], seconds: 3.0, span: 32 << 20 }
    }
}

/// The NVMe controller's 4 KiB random-read rate at each queue depth of `opts`: reset, enable, identify,
/// one I/O queue pair of 64 entries, then for each depth `d` keeps `d` reads of one page each in flight
/// (each completion is replaced by a new read at a random 4 KiB-aligned offset of the span) for
/// `opts.seconds`, polling the completion queue. One step per depth: `randread-qdD` with `iops`.
pub fn bench_random_read<D: DeviceAccess, B: DmaBackend>(
    dev: &D,
    space: &DmaSpace<B>,
    r: &mut Reporter<'_>,
    opts: &BenchOptions,
) -> Result<()> {
    let mut step = "open";
    let res = bench_steps(dev, space, r, opts, &mut step);
    if let Err(e) = &res {
        r.error(step, e);
    }
    res
}

fn bench_steps<D: DeviceAccess, B: DmaBackend>(
    dev: &D,
    space: &DmaSpace<B>,
    r: &mut Reporter<'_>,
    opts: &BenchOptions,
    step: &mut &'static str,
) -> Result<()> {
    let (mut ctrl, function_reset) = open(dev)?;
    *step = "controller-reset";
    controller_reset(&ctrl, function_reset, r)?;
    *step = "enable";
    let entries = ctrl.max_queue_entries().min(64) as u16;
    let admin = QueueMemory::new(space)?;
    let admin_maps = admin.map(space)?;
    let mut aq = admin_maps.pair(0, entries.min(32))?;
    enable(&ctrl, &aq, r)?;
    *step = "identify-namespace";
    let id = space.alloc(PAGE)?;
    let mid = space.map(&id, DmaDir::FromDevice)?;
    let (block, ns_bytes) = identify_namespace(&mut ctrl, &mut aq, &id, mid.iova(), r)?;
    drop(mid);
    let opts = &BenchOptions { span: opts.span.min(ns_bytes), ..opts.clone() };
    *step = "io-queues";
    let io = QueueMemory::new(space)?;
    let io_maps = io.map(space)?;
    let mut ioq = io_maps.pair(1, entries)?;
    create_io_queues(&mut ctrl, &mut aq, &ioq, false, r)?;
    let max_depth = opts.depths.iter().copied().max().unwrap_or(1).clamp(1, entries - 1);
    let buf = space.alloc(max_depth as usize * PAGE)?;
    let map = space.map(&buf, DmaDir::FromDevice)?;
    for &depth in &opts.depths {
        *step = "randread";
        let depth = depth.clamp(1, max_depth);
        let (ios, secs) = random_reads(&mut ctrl, &mut ioq, map.iova(), depth, block, opts)?;
        r.step(
            &format!("randread-qd{depth}"),
            ios > 0,
            json!({ "qd": depth, "ios": ios, "seconds": (secs * 1000.0).round() / 1000.0,
                    "iops": (ios as f64 / secs).round(), "block_size": block, "span": opts.span }),
        );
    }
    drop(map);
    *step = "shutdown";
    shutdown(&mut ctrl, &mut aq, space, r)
}

/// Keeps `depth` one-page reads in flight on `ioq` for `opts.seconds`, slot `i` reading into page `i`
/// of the buffer at `buf_iova`; returns the reads completed and the seconds taken.
fn random_reads<D: DeviceAccess>(
    ctrl: &mut Controller<'_, D>,
    ioq: &mut QueuePair<'_>,
    buf_iova: u64,
    depth: u16,
    block: u64,
    opts: &BenchOptions,
) -> Result<(u64, f64)> {
    let pages = (opts.span / PAGE as u64).max(1);
    let nlb = (PAGE as u64 / block).max(1) - 1;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(depth);
    let mut next_read = |slot: u16| {
        // xorshift64*: a page of the span, uniformly enough for a benchmark.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let page = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) % pages;
        let slba = page * PAGE as u64 / block;
        Command {
            opcode: io::READ,
            nsid: 1,
            prp1: buf_iova + u64::from(slot) * PAGE as u64,
            prp2: 0,
            cdw: [slba as u32, (slba >> 32) as u32, nlb as u32, 0, 0, 0],
        }
    };
    let mut slot_of: std::collections::HashMap<u16, u16> = std::collections::HashMap::new();
    for slot in 0..depth {
        let cid = ctrl.push(ioq, &next_read(slot))?;
        slot_of.insert(cid, slot);
    }
    let start = std::time::Instant::now();
    let budget = Duration::from_secs_f64(opts.seconds.max(0.1));
    let mut ios = 0u64;
    let mut idle_since = std::time::Instant::now();
    while !slot_of.is_empty() {
        match ctrl.reap(ioq)? {
            Some(c) => {
                idle_since = std::time::Instant::now();
                let slot = slot_of.remove(&c.cid).ok_or_else(|| BackendError::DeviceReported {
                    device: ctrl.dev.name().into(),
                    what: format!("completion for unknown cid {}", c.cid),
                })?;
                if c.status != 0 {
                    return Err(BackendError::DeviceReported {
                        device: ctrl.dev.name().into(),
                        what: format!("read failed: status {:#x}", c.status),
                    });
                }
                ios += 1;
                if start.elapsed() < budget {
                    let cid = ctrl.push(ioq, &next_read(slot))?;
                    slot_of.insert(cid, slot);
                }
            }
            None if idle_since.elapsed() > ctrl.timeout => {
                return Err(BackendError::Timeout {
                    device: ctrl.dev.name().into(),
                    what: format!("{} outstanding reads", slot_of.len()),
                    ms: ctrl.timeout.as_millis() as u64,
                });
            }
            None => std::hint::spin_loop(),
        }
    }
    Ok((ios, start.elapsed().as_secs_f64()))
}

/// Maps BAR0, resets the function when VFIO can, and turns bus mastering on. Returns whether the
/// function was reset.
fn open<D: DeviceAccess>(dev: &D) -> Result<(Controller<'_, D>, bool)> {
    let ctrl = Controller::new(dev)?;
    let function_reset = if dev.device_info().reset_supported() {
        dev.reset()?;
        true
    } else {
        false
    };
    dev.enable_bus_master()?;
    Ok((ctrl, function_reset))
}

/// Step `controller-reset`: CC.EN = 0 and the controller's identity registers.
fn controller_reset<D: DeviceAccess>(
    ctrl: &Controller<'_, D>,
    function_reset: bool,
    r: &mut Reporter<'_>,
) -> Result<()> {
    ctrl.disable()?;
    r.step(
        "controller-reset",
        true,
        json!({ "device": ctrl.dev.name(), "function_reset": function_reset, "cap": format!("{:#018x}", ctrl.cap()), "version": ctrl.version()?,
                "mqes": ctrl.max_queue_entries(), "dstrd": ctrl.doorbell_stride(), "csts": ctrl.csts()? }),
    );
    Ok(())
}

/// Step `enable`: the admin queue pair programmed, the controller enabled.
fn enable<D: DeviceAccess>(ctrl: &Controller<'_, D>, aq: &QueuePair<'_>, r: &mut Reporter<'_>) -> Result<()> {
    let csts = ctrl.enable(aq)?;
    r.step(
        "enable",
        csts & 1 == 1,
        json!({ "csts": csts, "admin_entries": aq.entries, "asq_iova": aq.sq_iova, "acq_iova": aq.cq_iova }),
    );
    Ok(())
}

/// Step `identify-controller` into `id` (seen at `iova`); returns MDTS.
fn identify_controller<D: DeviceAccess>(
    ctrl: &mut Controller<'_, D>,
    aq: &mut QueuePair<'_>,
    id: &DmaBuf,
    iova: u64,
    r: &mut Reporter<'_>,
) -> Result<u8> {
    ctrl.submit(aq, &Command { opcode: admin::IDENTIFY, prp1: iova, cdw: [1, 0, 0, 0, 0, 0], ..Default::default() })?;
    let idc = id.to_vec(0, PAGE)?;
    let mdts = idc[77];
    let nn = u32::from_le_bytes([idc[516], idc[517], idc[518], idc[519]]);
    let vid = u16::from_le_bytes([idc[0], idc[1]]);
    r.step(
        "identify-controller",
        vid != 0 && nn >= 1,
        json!({ "vid": format!("{vid:#06x}"), "serial": ascii(&idc[4..24]), "model": ascii(&idc[24..64]), "firmware": ascii(&idc[64..72]),
                "mdts": mdts, "namespaces": nn, "iova": iova }),
    );
    Ok(mdts)
}

/// Step `identify-namespace` (namespace 1) into `id` (seen at `iova`); returns its block size and size in
/// bytes, and fails when the namespace cannot hold the test range.
fn identify_namespace<D: DeviceAccess>(
    ctrl: &mut Controller<'_, D>,
    aq: &mut QueuePair<'_>,
    id: &DmaBuf,
    iova: u64,
    r: &mut Reporter<'_>,
) -> Result<(u64, u64)> {
    ctrl.submit(aq, &Command { opcode: admin::IDENTIFY, nsid: 1, prp1: iova, cdw: [0; 6], ..Default::default() })?;
    let ns = id.to_vec(0, PAGE)?;
    let nsze = u64::from_le_bytes(ns[0..8].try_into().unwrap_or_default());
    let flbas = ns[26] & 0xf;
    let lbaf =
        u32::from_le_bytes(ns[128 + 4 * flbas as usize..132 + 4 * flbas as usize].try_into().unwrap_or_default());
    let block = 1u64 << ((lbaf >> 16) & 0xff);
    let fits =
        (TEST_OFFSET + TEST_BYTES as u64) <= nsze * block && block >= 512 && (TEST_BYTES as u64).is_multiple_of(block);
    r.step(
        "identify-namespace",
        nsze > 0 && fits,
        json!({ "nsid": 1, "blocks": nsze, "block_size": block, "bytes": nsze * block }),
    );
    if !fits {
        return Err(BackendError::DeviceReported {
            device: ctrl.dev.name().into(),
            what: format!("namespace 1 ({} bytes) cannot hold the test range", nsze * block),
        });
    }
    Ok((block, nsze * block))
}

/// Step `io-queues`: completion queue 1 (raising MSI-X vector 0 when `msix`), then submission queue 1.
fn create_io_queues<D: DeviceAccess>(
    ctrl: &mut Controller<'_, D>,
    aq: &mut QueuePair<'_>,
    ioq: &QueuePair<'_>,
    msix: bool,
    r: &mut Reporter<'_>,
) -> Result<()> {
    let qsize = u32::from(ioq.entries - 1) << 16;
    let ien = if msix { 0b10 } else { 0 }; // CDW11: IV 0 (bits 31:16), IEN (bit 1), PC (bit 0)
    ctrl.submit(
        aq,
        &Command {
            opcode: admin::CREATE_CQ,
            prp1: ioq.cq_iova,
            cdw: [qsize | 1, ien | 1, 0, 0, 0, 0],
            ..Default::default()
        },
    )?;
    ctrl.submit(
        aq,
        &Command {
            opcode: admin::CREATE_SQ,
            prp1: ioq.sq_iova,
            cdw: [qsize | 1, (1 << 16) | 1, 0, 0, 0, 0],
            ..Default::default()
        },
    )?;
    r.step(
        "io-queues",
        true,
        json!({ "qid": 1, "entries": ioq.entries, "sq_iova": ioq.sq_iova, "cq_iova": ioq.cq_iova, "msix": msix }),
    );
    Ok(())
}

/// Step `write-read-verify`: the test range written in chunks of `max_xfer` (then flushed), read back
/// into another buffer and compared. Returns the number of write and read commands.
fn write_read_verify<D: DeviceAccess, B: DmaBackend>(
    ctrl: &mut Controller<'_, D>,
    ioq: &mut QueuePair<'_>,
    data: &TestData,
    maps: &TestMappings<'_, B>,
    max_xfer: usize,
    block: u64,
    r: &mut Reporter<'_>,
) -> Result<usize> {
    let mut commands = 0;
    let mut list_entries = 0;
    for (opcode, base, list_base) in [(io::WRITE, maps.w.iova(), 0), (io::READ, maps.r.iova(), data.chunks * PAGE)] {
        for c in 0..data.chunks {
            let off = c * max_xfer;
            let len = max_xfer.min(TEST_BYTES - off);
            let (prp1, prp2, n) =
                build_prps(base + off as u64, len, &data.lists, list_base + c * PAGE, maps.lists.iova())?;
            list_entries += n;
            let slba = (TEST_OFFSET + off as u64) / block;
            let nlb = (len as u64 / block - 1) as u32;
            let cmd = Command { opcode, nsid: 1, prp1, prp2, cdw: [slba as u32, (slba >> 32) as u32, nlb, 0, 0, 0] };
            ctrl.submit(ioq, &cmd)?;
            commands += 1;
        }
        if opcode == io::WRITE {
            ctrl.submit(ioq, &Command { opcode: io::FLUSH, nsid: 1, ..Default::default() })?;
        }
    }
    let got = data.r.to_vec(0, TEST_BYTES)?;
    let first_bad = got.iter().zip(&data.want).position(|(a, b)| a != b);
    let verified = first_bad.unwrap_or(TEST_BYTES);
    r.step(
        "write-read-verify",
        first_bad.is_none(),
        json!({ "bytes": verified, "offset": TEST_OFFSET, "lba": TEST_OFFSET / block, "commands": commands, "per_command": max_xfer,
                "prp_list_entries": list_entries, "write_iova": maps.w.iova(), "read_iova": maps.r.iova(), "write_hugepages": data.w.is_huge(),
                "first_mismatch": first_bad }),
    );
    Ok(commands)
}

/// Step `shutdown`: the I/O queues deleted, then a normal shutdown.
fn shutdown<D: DeviceAccess, B: DmaBackend>(
    ctrl: &mut Controller<'_, D>,
    aq: &mut QueuePair<'_>,
    space: &DmaSpace<B>,
    r: &mut Reporter<'_>,
) -> Result<()> {
    ctrl.submit(aq, &Command { opcode: admin::DELETE_SQ, cdw: [1, 0, 0, 0, 0, 0], ..Default::default() })?;
    ctrl.submit(aq, &Command { opcode: admin::DELETE_CQ, cdw: [1, 0, 0, 0, 0, 0], ..Default::default() })?;
    ctrl.shutdown()?;
    r.step("shutdown", true, json!({ "csts": ctrl.csts()?, "dma_mappings": space.stats().mappings }));
    Ok(())
}

/// The memory of one queue pair: a page for the submission queue, a page for the completion queue.
struct QueueMemory {
    sq: DmaBuf,
    cq: DmaBuf,
}

/// A [`QueueMemory`] mapped for the device (dropped completion queue first).
struct QueueMappings<'a, B: DmaBackend> {
    mem: &'a QueueMemory,
    cq: DmaMapping<'a, B>,
    sq: DmaMapping<'a, B>,
}

impl QueueMemory {
    fn new<B: DmaBackend>(space: &DmaSpace<B>) -> Result<Self> {
        Ok(Self { sq: space.alloc(PAGE)?, cq: space.alloc(PAGE)? })
    }

    /// Maps the submission queue (to the device), then the completion queue (from it).
    fn map<'a, B: DmaBackend>(&'a self, space: &'a DmaSpace<B>) -> Result<QueueMappings<'a, B>> {
        let sq = space.map(&self.sq, DmaDir::ToDevice)?;
        let cq = space.map(&self.cq, DmaDir::FromDevice)?;
        Ok(QueueMappings { mem: self, cq, sq })
    }
}

impl<'a, B: DmaBackend> QueueMappings<'a, B> {
    /// Queue `qid` with `entries` slots over this memory.
    fn pair(&self, qid: u16, entries: u16) -> Result<QueuePair<'a>> {
        QueuePair::new(qid, entries, &self.mem.sq, self.sq.iova(), &self.mem.cq, self.cq.iova())
    }
}

/// The round trip's buffers: the pattern to write (huge pages when there are), a buffer to read into
/// (filled with 0xcc), and a page of PRP list per command.
struct TestData {
    w: DmaBuf,
    r: DmaBuf,
    lists: DmaBuf,
    want: Vec<u8>,
    /// Commands per direction.
    chunks: usize,
}

/// [`TestData`] mapped for the device (dropped in the reverse order of mapping).
struct TestMappings<'a, B: DmaBackend> {
    lists: DmaMapping<'a, B>,
    r: DmaMapping<'a, B>,
    w: DmaMapping<'a, B>,
}

impl TestData {
    fn new<B: DmaBackend>(space: &DmaSpace<B>, chunks: usize) -> Result<Self> {
        let w = space.alloc_with(TEST_BYTES, HugePages::Prefer)?;
        let r = space.alloc(TEST_BYTES)?;
        let lists = space.alloc(2 * chunks * PAGE)?;
        let want = pattern(TEST_OFFSET, TEST_BYTES);
        w.copy_in(0, &want)?;
        r.fill(0, TEST_BYTES, 0xcc)?;
        Ok(Self { w, r, lists, want, chunks })
    }

    /// Maps the write buffer, the read buffer and the PRP lists, in that order.
    fn map<'a, B: DmaBackend>(&'a self, space: &'a DmaSpace<B>) -> Result<TestMappings<'a, B>> {
        let w = space
            .map_with(&self.w, MapOptions { dir: DmaDir::ToDevice, len: Some(TEST_BYTES), ..Default::default() })?;
        let r = space.map(&self.r, DmaDir::FromDevice)?;
        let lists = space.map(&self.lists, DmaDir::ToDevice)?;
        Ok(TestMappings { lists, r, w })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu_backend::fake::FakeIommu;

    #[test]
    fn pattern_marks_each_sector_with_its_number() {
        let p = pattern(TEST_OFFSET, 1024);
        assert_eq!(&p[..16], b"iommu-vfio nvme ");
        assert_eq!(u64::from_le_bytes(p[16..24].try_into().unwrap()), 2048);
        assert_eq!(u64::from_le_bytes(p[512 + 16..512 + 24].try_into().unwrap()), 2049);
        assert_eq!(pattern(TEST_OFFSET + 100, 10), p[100..110]);
    }

    #[test]
    fn commands_lay_out_as_the_spec_says() {
        let c = Command { opcode: 0x02, nsid: 1, prp1: 0x1_2345_6000, prp2: 0x7000, cdw: [2048, 0, 7, 0, 0, 0] };
        let d = c.dwords(9);
        assert_eq!(d[0], 0x0009_0002);
        assert_eq!((d[1], d[6], d[7], d[8], d[10], d[12]), (1, 0x2345_6000, 1, 0x7000, 2048, 7));
    }

    #[test]
    fn the_random_read_benchmark_keeps_each_depth_in_flight_on_a_model_controller() {
        let iommu = FakeIommu::new();
        let space = DmaSpace::new(&iommu, &[]).unwrap();
        let dev = crate::nvme_fake::FakeNvme::new(&iommu);
        let mut lines = Vec::new();
        let mut r = Reporter::new(|l: &str| lines.push(l.to_string()));
        let opts = BenchOptions { depths: vec![1, 8], seconds: 0.2, span: 4 << 20 };
        bench_random_read(&dev, &space, &mut r, &opts).unwrap();
        assert!(r.all_ok(), "{:?}", r.failed());
        drop(r);
        let steps: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        for qd in [1u64, 8] {
            let s = steps.iter().find(|s| s["step"] == format!("randread-qd{qd}")).expect("depth step");
            assert!(s["ios"].as_u64() > Some(qd), "{s}");
            assert!(s["iops"].as_f64() > Some(0.0), "{s}");
        }
        assert_eq!(steps.last().unwrap()["step"], "shutdown");
        // At shutdown only the two queue pairs are still mapped: the read buffer went before it.
        assert_eq!(steps.last().unwrap()["dma_mappings"], 4);
    }

    #[test]
    fn a_run_on_a_model_controller_writes_reads_back_and_verifies() {
        let iommu = FakeIommu::new();
        let space = DmaSpace::new(&iommu, &[]).unwrap();
        let dev = crate::nvme_fake::FakeNvme::new(&iommu);
        let mut lines = Vec::new();
        let mut r = Reporter::new(|l: &str| lines.push(l.to_string()));
        run(&dev, &space, &mut r).unwrap();
        assert!(r.all_ok(), "{:?}", r.failed());
        drop(r);
        if let Ok(p) = std::env::var("NVME_TRACE") {
            std::fs::write(p, format!("{}\n{}\n", lines.join("\n"), dev.log().join("\n"))).unwrap();
        }
        let steps: Vec<String> = lines
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            steps,
            [
                "controller-reset",
                "enable",
                "identify-controller",
                "identify-namespace",
                "io-queues",
                "write-read-verify",
                "io-completion-irq-msix",
                "shutdown"
            ]
        );
        let verify: serde_json::Value = serde_json::from_str(&lines[5]).unwrap();
        assert_eq!((verify["bytes"].as_u64(), verify["commands"].as_u64()), (Some(TEST_BYTES as u64), Some(16)));
        assert_eq!(dev.disk(TEST_OFFSET as usize, TEST_BYTES), pattern(TEST_OFFSET, TEST_BYTES));
        // Every mapping is gone once the run returns.
        assert!(iommu.mappings().is_empty());
    }

    #[test]
    fn a_failing_step_is_reported_under_its_name() {
        let run_on = |blocks: u64, fail_map: bool| {
            let iommu = FakeIommu::new();
            let space = DmaSpace::new(&iommu, &[]).unwrap();
            let dev = crate::nvme_fake::FakeNvme::with_blocks(&iommu, blocks);
            if fail_map {
                iommu.fail_next_map(12);
            }
            let mut lines = Vec::new();
            let mut r = Reporter::new(|l: &str| lines.push(l.to_string()));
            assert!(run(&dev, &space, &mut r).is_err());
            drop(r);
            assert!(iommu.mappings().is_empty());
            lines
        };
        // Namespace 1 too small for the test range: the step fails, then its error.
        let l = run_on(1024, false);
        assert_eq!(l.len(), 5, "{l:?}");
        assert!(l[3].starts_with(r#"{"step":"identify-namespace","ok":false,"block_size":512"#), "{}", l[3]);
        assert!(l[4].starts_with(r#"{"step":"identify-namespace","ok":false,"error":"#), "{}", l[4]);
        assert!(l[4].contains("cannot hold the test range"), "{}", l[4]);
        // The first mapping fails: reported under enable.
        let l = run_on(16384, true);
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(l[1].starts_with(r#"{"step":"enable","ok":false,"error":"#), "{}", l[1]);
    }

    #[test]
    fn prps_use_a_list_beyond_two_pages() {
        let iommu = FakeIommu::new();
        let space = DmaSpace::new(&iommu, &[]).unwrap();
        let list = space.alloc(PAGE).unwrap();
        let ml = space.map(&list, DmaDir::ToDevice).unwrap();
        assert_eq!(build_prps(0x10000, 4096, &list, 0, ml.iova()).unwrap(), (0x10000, 0, 0));
        assert_eq!(build_prps(0x10000, 8192, &list, 0, ml.iova()).unwrap(), (0x10000, 0x11000, 0));
        let (p1, p2, n) = build_prps(0x10000, 64 * PAGE, &list, 0, ml.iova()).unwrap();
        assert_eq!((p1, p2, n), (0x10000, ml.iova(), 63));
        assert_eq!(list.read_u64(0).unwrap(), 0x11000);
        assert_eq!(list.read_u64(62 * 8).unwrap(), 0x10000 + 63 * PAGE as u64);
        assert!(build_prps(0x10001, 4096, &list, 0, ml.iova()).is_err());
        assert!(build_prps(0x10000, 600 * PAGE, &list, 0, ml.iova()).is_err());
    }
}
