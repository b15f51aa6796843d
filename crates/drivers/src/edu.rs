//! A driver for QEMU's educational PCI device `edu` (1234:11e8), and a self-test that proves DMA
//! isolation: a round trip through mapped memory works, while a DMA to an IOVA that was never mapped and a
//! DMA to a buffer after it was unmapped leave memory untouched.
//!
//! Registers (BAR0, 1 MiB; 32-bit accesses below 0x80): 0x00 id (`0x010000ed`), 0x04 liveness (reads back
//! the complement of what was written), 0x08 factorial, 0x20 status (0x01 busy, 0x80 interrupt when the
//! factorial is done), 0x24 interrupt status, 0x60 raise interrupt, 0x64 acknowledge interrupt, 0x80 DMA
//! source, 0x88 DMA destination, 0x90 DMA count, 0x98 DMA command (0x1 start, 0x2 device → RAM, 0x4
//! raise interrupt 0x100 when done). The DMA engine's own buffer is at device address 0x40000, 4 KiB.
//!
//! Quirks of QEMU 7.2's model that this driver respects: the device masks DMA addresses to 28 bits (IOVAs
//! must be below 2^28, so the [`DmaSpace`] must carry that mask), and a transfer of the whole 4096 bytes
//! aborts QEMU (an off-by-one in its range check), so transfers stay at or below [`MAX_TRANSFER`].

use std::cell::RefCell;
use std::time::Duration;

use iommu_backend::edu_regs;
use iommu_backend::{
    mask_limit, BackendError, DeviceAccess, DmaBackend, DmaBuf, DmaDir, DmaSpace, EventFd, FaultRecord, IrqKind, Mmio,
    Result, PCI_COMMAND, PCI_COMMAND_MASTER,
};
use serde_json::json;

use crate::{poll, Reporter};

/// PCI vendor and device ID.
pub const ID: (u16, u16) = (edu_regs::VENDOR_ID, edu_regs::DEVICE_ID);
/// The device's DMA mask.
pub const DMA_MASK_BITS: u32 = edu_regs::DMA_MASK_BITS;
/// Device address of the DMA engine's buffer.
pub const DMA_BUFFER: u64 = edu_regs::DMA_BUFFER;
/// Largest transfer this driver issues (QEMU 7.2 aborts on 4096).
pub const MAX_TRANSFER: usize = 2048;

/// Register offsets: the contract's edu register map, which the simulator's edu model implements too.
pub use iommu_backend::edu_regs::reg;

/// Interrupt status bit the device raises when a DMA with command bit 0x4 is done.
pub const DMA_IRQ: u32 = edu_regs::DMA_IRQ;

/// Which way a DMA goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// RAM (an IOVA) → the device's buffer.
    ToDevice,
    /// The device's buffer → RAM (an IOVA).
    ToRam,
}

/// The device, through its BAR0.
pub struct Edu<'d, D: DeviceAccess + 'd> {
    dev: &'d D,
    bar: D::Bar<'d>,
    timeout: Duration,
    iovas: RefCell<Vec<u64>>,
}

impl<'d, D: DeviceAccess + 'd> Edu<'d, D> {
    /// Maps BAR0 and checks the identification register.
    pub fn new(dev: &'d D) -> Result<Self> {
        let bar = dev.bar(0)?;
        let edu = Self { dev, bar, timeout: Duration::from_secs(10), iovas: RefCell::new(Vec::new()) };
        let id = edu.id()?;
        if id & 0xff != 0xed {
            return Err(BackendError::DeviceReported {
                device: dev.name().into(),
                what: format!("identification register reads {id:#010x}, not an edu device"),
            });
        }
        Ok(edu)
    }

    /// The device.
    pub fn device(&self) -> &'d D {
        self.dev
    }

    /// The identification register.
    pub fn id(&self) -> Result<u32> {
        self.bar.read32(reg::ID)
    }

    /// Writes `v` to the liveness register and reads it back (the device returns `!v`).
    pub fn liveness(&self, v: u32) -> Result<u32> {
        self.bar.write32(reg::LIVENESS, v)?;
        self.bar.read32(reg::LIVENESS)
    }

    /// Computes `n!` on the device (32-bit, wrapping).
    pub fn factorial(&self, n: u32) -> Result<u32> {
        self.bar.write32(reg::FACTORIAL, n)?;
        poll(self.dev.name(), "the factorial", self.timeout, || {
            Ok((self.bar.read32(reg::STATUS)? & 1 == 0).then_some(()))
        })?;
        self.bar.read32(reg::FACTORIAL)
    }

    /// Interrupt status bits.
    pub fn irq_status(&self) -> Result<u32> {
        self.bar.read32(reg::IRQ_STATUS)
    }

    /// Acknowledges interrupt bits.
    pub fn ack_irq(&self, bits: u32) -> Result<()> {
        self.bar.write32(reg::IRQ_ACK, bits)
    }

    /// Raises an interrupt with `bits`.
    pub fn raise_irq(&self, bits: u32) -> Result<()> {
        self.bar.write32(reg::IRQ_RAISE, bits)
    }

    /// Runs one DMA of `len` bytes between `iova` and the device buffer at `offset`, and waits until
    /// the device says it is done. With `irq`, the device raises [`DMA_IRQ`] at the end.
    pub fn dma(&self, dir: Transfer, iova: u64, offset: u64, len: usize, irq: bool) -> Result<()> {
        if len == 0 || len > MAX_TRANSFER || offset + len as u64 > 4096 {
            return Err(BackendError::Invalid(format!("edu DMA of {len} bytes at buffer offset {offset:#x}")));
        }
        self.iovas.borrow_mut().push(iova);
        let (src, dst, mut cmd) = match dir {
            Transfer::ToDevice => (iova, DMA_BUFFER + offset, 0x1),
            Transfer::ToRam => (DMA_BUFFER + offset, iova, 0x3),
        };
        if irq {
            cmd |= 0x4;
        }
        self.bar.write64(reg::DMA_SRC, src)?;
        self.bar.write64(reg::DMA_DST, dst)?;
        self.bar.write64(reg::DMA_CNT, len as u64)?;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.bar.write64(reg::DMA_CMD, cmd)?;
        poll(self.dev.name(), "the DMA to finish", self.timeout, || {
            Ok((self.bar.read64(reg::DMA_CMD)? & 1 == 0).then_some(()))
        })?;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Every IOVA this driver has given the device so far.
    pub fn iovas(&self) -> Vec<u64> {
        self.iovas.borrow().clone()
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

/// Runs every step against `dev` and `space` (whose DMA mask must be [`DMA_MASK_BITS`] or narrower),
/// reporting to `r`. Returns an error only when the device cannot even be opened; failed steps are reported.
pub fn run<D: DeviceAccess, B: DmaBackend>(dev: &D, space: &DmaSpace<B>, r: &mut Reporter<'_>) -> Result<()> {
    let info = dev.device_info();
    let bar0 = dev.region_info(0).map(|x| x.size).unwrap_or(0);
    let irqs: serde_json::Map<String, serde_json::Value> = [IrqKind::Intx, IrqKind::Msi, IrqKind::Msix]
        .iter()
        .filter_map(|k| dev.irq_info(*k).ok().map(|i| (k.name().to_string(), json!(i.count))))
        .collect();
    let edu = match Edu::new(dev) {
        Ok(e) => e,
        Err(e) => {
            r.error("open", &e);
            return Err(e);
        }
    };
    r.step(
        "open",
        true,
        json!({ "device": dev.name(), "bar0_size": bar0, "irqs": irqs, "reset_supported": info.reset_supported(),
                "dma_limit": space.dma_limit(), "iova_ranges": space.info().iova_ranges.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
                "dma_avail": space.info().dma_avail }),
    );
    if space.dma_limit() > mask_limit(DMA_MASK_BITS) {
        r.step("dma-mask", false, json!({ "error": format!("the DMA space allows IOVAs up to {:#x}; edu reaches only 28 bits", space.dma_limit()) }));
    }

    // Registers.
    match edu.id() {
        Ok(id) => r.step("id", id == 0x0100_00ed, json!({ "id": format!("{id:#010x}") })),
        Err(e) => r.error("id", &e),
    }
    let live = [0x1234_5678u32, 0, 0xffff_ffff, 0xdead_beef]
        .iter()
        .map(|&v| edu.liveness(v).map(|got| got == !v))
        .collect::<Result<Vec<_>>>();
    match live {
        Ok(v) => r.step("liveness", v.iter().all(|&b| b), json!({ "checks": v.len() })),
        Err(e) => r.error("liveness", &e),
    }
    match (edu.factorial(10), edu.factorial(12)) {
        (Ok(a), Ok(b)) => r.step("factorial", a == 3_628_800 && b == 479_001_600, json!({ "10!": a, "12!": b })),
        (Err(e), _) | (_, Err(e)) => r.error("factorial", &e),
    }
    match dev.enable_bus_master() {
        Ok(cmd) => r.step("bus-master", cmd & PCI_COMMAND_MASTER != 0, json!({ "command": format!("{cmd:#06x}") })),
        Err(e) => r.error("bus-master", &e),
    }

    if let Err(e) = dma_steps(&edu, space, r) {
        r.error("dma", &e);
    }

    let iovas = edu.iovas();
    let max = iovas.iter().copied().max().unwrap_or(0);
    r.step(
        "iovas-below-dma-mask",
        !iovas.is_empty() && max <= mask_limit(DMA_MASK_BITS),
        json!({ "iovas": iovas, "max_iova": max, "limit": mask_limit(DMA_MASK_BITS) }),
    );

    // Reset last: it clears bus mastering and the device's state.
    if info.reset_supported() {
        let res = dev
            .reset()
            .and_then(|()| edu.liveness(0x0f0f_0f0f))
            .and_then(|l| Ok((l, dev.config_read_u16(PCI_COMMAND)?)));
        match res {
            Ok((l, cmd)) => {
                r.step("reset", l == !0x0f0f_0f0f, json!({ "supported": true, "command_after": format!("{cmd:#06x}") }))
            }
            Err(e) => r.error("reset", &e),
        }
    } else {
        let e = dev.reset().expect_err("reset without VFIO_DEVICE_FLAGS_RESET");
        r.step(
            "reset",
            matches!(e, BackendError::ResetUnsupported { .. }),
            json!({ "supported": false, "error": e.to_string() }),
        );
    }
    Ok(())
}

fn dma_steps<D: DeviceAccess, B: DmaBackend>(
    edu: &Edu<'_, D>,
    space: &DmaSpace<B>,
    r: &mut Reporter<'_>,
) -> Result<()> {
    let n = MAX_TRANSFER;
    let src = space.alloc(4096)?;
    let dst = space.alloc(4096)?;
    let sg_a = space.alloc(4096)?;
    let _spacer = space.alloc(4096)?; // keeps sg_a and sg_b apart in the process's address space
    let sg_b = space.alloc(4096)?;
    let victim = space.alloc(4096)?;
    // Taken before anything is mapped and held to the end: an IOVA that is never mapped, and that the
    // allocator cannot hand to any other mapping meanwhile.
    let hole = space.reserve(4096)?;
    let p = pattern(0x3c, n);
    src.copy_in(0, &p)?;
    dst.fill(0, 4096, 0xee)?;

    // Round trip RAM → device → RAM through two mappings.
    {
        let ms = space.map(&src, DmaDir::ToDevice)?;
        let md = space.map(&dst, DmaDir::FromDevice)?;
        edu.dma(Transfer::ToDevice, ms.iova(), 0, n, false)?;
        edu.dma(Transfer::ToRam, md.iova(), 0, n, false)?;
        let back = dst.to_vec(0, n)?;
        let untouched_tail = dst.to_vec(n, 4096 - n)?.iter().all(|&b| b == 0xee);
        r.step(
            "dma-roundtrip",
            back == p && untouched_tail,
            json!({ "bytes": n, "src_iova": ms.iova(), "dst_iova": md.iova(), "tail_untouched": untouched_tail }),
        );
    }

    // Completion interrupts, MSI first, then INTx.
    for kind in [IrqKind::Msi, IrqKind::Intx] {
        if edu.device().irq_info(kind).map(|i| i.count).unwrap_or(0) == 0 {
            continue;
        }
        let name = format!("dma-done-irq-{kind}");
        match irq_step(edu, space, &dst, kind) {
            Ok(v) => {
                let ok = [&v["fired"], &v["status_had_dma_bit"], &v["rearmed"]].iter().all(|x| **x == json!(true));
                r.step(&name, ok, v)
            }
            Err(e) => r.error(&name, &e),
        }
        let _ = edu.device().disable_irqs(kind);
    }

    // Scatter-gather: two scattered 4 KiB buffers seen as one 8 KiB range; DMAs cross the seam.
    {
        sg_a.copy_in(0, &pattern(0xa0, 4096))?;
        sg_b.copy_in(0, &pattern(0xb0, 4096))?;
        let sg = space.map_sg(&[&sg_a, &sg_b], DmaDir::Bidirectional)?;
        let md = space.map(&dst, DmaDir::FromDevice)?;
        dst.fill(0, 4096, 0)?;
        // Read across the seam: last 1 KiB of a + first 1 KiB of b.
        edu.dma(Transfer::ToDevice, sg.iova() + 4096 - 1024, 0, 2048, false)?;
        edu.dma(Transfer::ToRam, md.iova(), 0, 2048, false)?;
        let mut want = pattern(0xa0, 4096)[3072..].to_vec();
        want.extend_from_slice(&pattern(0xb0, 4096)[..1024]);
        let read_ok = dst.to_vec(0, 2048)? == want;
        // Write across the seam: 512 bytes of the device buffer (now `want`) to each side.
        edu.dma(Transfer::ToRam, sg.iova() + 4096 - 512, 0, 1024, false)?;
        let write_ok = sg_a.to_vec(3584, 512)? == want[..512] && sg_b.to_vec(0, 512)? == want[512..1024];
        let others_ok = sg_a.to_vec(0, 3584)? == pattern(0xa0, 4096)[..3584]
            && sg_b.to_vec(512, 3584)? == pattern(0xb0, 4096)[512..];
        r.step(
            "sg-coalesced-roundtrip",
            read_ok && write_ok && others_ok,
            json!({ "iova": sg.iova(), "len": sg.len(), "pieces": sg.pieces().iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                    "host_addrs": [format!("{:#x}", sg_a.host_addr()), format!("{:#x}", sg_b.host_addr())],
                    "read_across": read_ok, "write_across": write_ok, "rest_untouched": others_ok }),
        );
    }

    // Load the device buffer with a pattern that would show wherever it lands.
    let marker = pattern(0x5a, n);
    src.copy_in(0, &marker)?;
    {
        let ms = space.map(&src, DmaDir::ToDevice)?;
        edu.dma(Transfer::ToDevice, ms.iova(), 0, n, false)?;
    }
    let buffers: [(&str, &DmaBuf); 5] =
        [("src", &src), ("dst", &dst), ("sg_a", &sg_a), ("sg_b", &sg_b), ("victim", &victim)];
    let snapshot =
        |bufs: &[(&str, &DmaBuf)]| -> Result<Vec<Vec<u8>>> { bufs.iter().map(|(_, b)| b.to_vec(0, 4096)).collect() };

    // Isolation 1: a DMA to an IOVA that was never mapped.
    {
        let before = snapshot(&buffers)?;
        let seen = space.backend().recorded_faults().len();
        edu.dma(Transfer::ToRam, hole.iova(), 0, n, false)?;
        let after = snapshot(&buffers)?;
        let changed: Vec<&str> = buffers
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(_, (b, a))| b != a)
            .map(|((name, _), _)| *name)
            .collect();
        let mut v = json!({ "iova": hole.iova(), "bytes": n, "device_completed": true, "changed_buffers": changed });
        add_faults(&mut v, space, seen);
        r.step("isolation-unmapped-iova-blocked", changed.is_empty(), v);
    }

    // Isolation 2: a buffer that was mapped (and reached), then unmapped.
    {
        victim.fill(0, 4096, 0x11)?;
        let m = space.map(&victim, DmaDir::FromDevice)?;
        let iova = m.iova();
        edu.dma(Transfer::ToRam, iova, 0, n, false)?;
        let reached = victim.to_vec(0, n)? == marker;
        victim.fill(0, 4096, 0x11)?;
        m.unmap()?;
        let before = snapshot(&buffers)?;
        let seen = space.backend().recorded_faults().len();
        edu.dma(Transfer::ToRam, iova, 0, n, false)?;
        let after = snapshot(&buffers)?;
        let victim_intact = victim.to_vec(0, 4096)?.iter().all(|&b| b == 0x11);
        let others = before == after;
        let mut v =
            json!({ "iova": iova, "bytes": n, "reached_while_mapped": reached, "buffer_intact": victim_intact });
        add_faults(&mut v, space, seen);
        r.step("isolation-after-unmap-blocked", reached && victim_intact && others && iova != hole.iova(), v);
    }
    drop(hole);
    Ok(())
}

/// One fault as the driver reports it: requester ID (`rid`), `addr`, `access`, `reason`, `why`, the
/// VT-d code as `0x..` (`vtd_code`) and the kernel's log line (`dmar`); fields the backend does not know
/// are left out.
pub fn fault_json(f: &FaultRecord) -> serde_json::Value {
    let mut v = json!({ "addr": f.iova, "access": f.access, "reason": f.reason, "why": f.description });
    if let Some(obj) = v.as_object_mut() {
        if let Some(r) = &f.requester {
            obj.insert("rid".into(), json!(r));
        }
        if let Some(c) = f.code {
            obj.insert("vtd_code".into(), json!(format!("{c:#04x}")));
        }
        if let Some(l) = &f.log_line {
            obj.insert("dmar".into(), json!(l));
        }
    }
    v
}

/// Adds the faults the backend recorded after the first `seen` under `"faults"` (when there are any).
fn add_faults<B: DmaBackend>(v: &mut serde_json::Value, space: &DmaSpace<B>, seen: usize) {
    let new: Vec<serde_json::Value> = space.backend().recorded_faults().iter().skip(seen).map(fault_json).collect();
    if let (false, Some(obj)) = (new.is_empty(), v.as_object_mut()) {
        obj.insert("faults".into(), serde_json::Value::Array(new));
    }
}

fn irq_step<D: DeviceAccess, B: DmaBackend>(
    edu: &Edu<'_, D>,
    space: &DmaSpace<B>,
    dst: &DmaBuf,
    kind: IrqKind,
) -> Result<serde_json::Value> {
    let dev = edu.device();
    let fds: Vec<EventFd> = dev.enable_irqs(kind, 1)?;
    let _ = fds[0].try_read()?; // drop anything stale
    let md = space.map(dst, DmaDir::FromDevice)?;
    edu.dma(Transfer::ToRam, md.iova(), 0, 256, true)?;
    let fired = fds[0].wait(Duration::from_secs(5))?;
    let status = edu.irq_status()?;
    edu.ack_irq(status)?;
    if kind == IrqKind::Intx {
        dev.unmask_intx()?;
    }
    // A second interrupt, raised by hand, proves re-arming (the unmask for INTx).
    edu.raise_irq(0x1)?;
    let again = fds[0].wait(Duration::from_secs(5))?;
    let status2 = edu.irq_status()?;
    edu.ack_irq(status2)?;
    if kind == IrqKind::Intx {
        dev.unmask_intx()?;
    }
    Ok(json!({
        "fired": fired.is_some(), "count": fired, "status_had_dma_bit": status & DMA_IRQ != 0,
        "rearmed": again.is_some(), "iova": md.iova()
    }))
}
