//! The register map of QEMU's educational PCI device `edu` (1234:11e8): the hardware description that
//! both the `edu` driver (iommu-drivers) and the simulator's model of the device (iommu-sim) implement.
//!
//! # Registers (BAR0, 1 MiB)
//!
//! | offset | name | behaviour |
//! |---|---|---|
//! | 0x00 | id | reads `0x010000ed` (major 1, minor 0) |
//! | 0x04 | liveness | reads back the complement of the last value written |
//! | 0x08 | factorial | write n: computes n! (32-bit, wrapping) while status bit 0x01 is set; read the result |
//! | 0x20 | status | 0x01 factorial busy (read-only); 0x80 raise interrupt 0x001 when a factorial is done (read/write) |
//! | 0x24 | interrupt status | the bits raised and not yet acknowledged |
//! | 0x60 | raise interrupt | write: ORs the value into interrupt status and raises the interrupt |
//! | 0x64 | acknowledge | write: clears those bits; the line drops when none is left |
//! | 0x80 | DMA source | 64-bit |
//! | 0x88 | DMA destination | 64-bit |
//! | 0x90 | DMA count | 64-bit, bytes |
//! | 0x98 | DMA command | 0x1 start (reads 1 until done), 0x2 direction device → RAM, 0x4 raise interrupt 0x100 when done |
//!
//! Accesses below 0x80 are 4 bytes wide, at and above 0x80 4 or 8 bytes. The device side of a DMA is
//! its 4 KiB buffer at device address [`DMA_BUFFER`]; the RAM side is an IOVA the device cuts to its
//! [`DMA_MASK_BITS`] address bits.

/// PCI vendor ID.
pub const VENDOR_ID: u16 = 0x1234;
/// PCI device ID.
pub const DEVICE_ID: u16 = 0x11e8;
/// The identification register's value.
pub const EDU_ID: u32 = 0x0100_00ed;
/// Size of BAR0.
pub const BAR0_SIZE: u64 = 1 << 20;
/// Device address of the DMA buffer.
pub const DMA_BUFFER: u64 = 0x40000;
/// Size of the DMA buffer.
pub const DMA_BUFFER_SIZE: usize = 4096;
/// Address bits the DMA engine drives.
pub const DMA_MASK_BITS: u32 = 28;
/// Status bit: factorial busy.
pub const STATUS_BUSY: u32 = 0x01;
/// Status bit: raise an interrupt when a factorial is done.
pub const STATUS_IRQ_FACT: u32 = 0x80;
/// Interrupt status bit raised when a factorial is done.
pub const FACT_IRQ: u32 = 0x001;
/// Interrupt status bit raised when a DMA with [`CMD_IRQ`] is done.
pub const DMA_IRQ: u32 = 0x100;
/// DMA command bit: start (reads 1 while running).
pub const CMD_START: u64 = 0x1;
/// DMA command bit: device → RAM (clear: RAM → device).
pub const CMD_TO_RAM: u64 = 0x2;
/// DMA command bit: raise [`DMA_IRQ`] when done.
pub const CMD_IRQ: u64 = 0x4;

/// Register offsets in BAR0.
pub mod reg {
    /// Identification.
    pub const ID: u64 = 0x00;
    /// Liveness check.
    pub const LIVENESS: u64 = 0x04;
    /// Factorial.
    pub const FACTORIAL: u64 = 0x08;
    /// Status.
    pub const STATUS: u64 = 0x20;
    /// Interrupt status.
    pub const IRQ_STATUS: u64 = 0x24;
    /// Raise interrupt.
    pub const IRQ_RAISE: u64 = 0x60;
    /// Acknowledge interrupt.
    pub const IRQ_ACK: u64 = 0x64;
    /// DMA source address.
    pub const DMA_SRC: u64 = 0x80;
    /// DMA destination address.
    pub const DMA_DST: u64 = 0x88;
    /// DMA byte count.
    pub const DMA_CNT: u64 = 0x90;
    /// DMA command.
    pub const DMA_CMD: u64 = 0x98;
}
