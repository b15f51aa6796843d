//! The one error type of the crate. Every variant carries the address, requester ID or domain it failed
//! on; messages are sentences that do not repeat their source.

use crate::fault::Fault;
use crate::types::{DomainId, PageSize, Rid};

/// Which kind of address or length was misaligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddrKind {
    /// An I/O virtual address.
    Iova,
    /// A physical address.
    Phys,
    /// A length.
    Length,
}

impl std::fmt::Display for AddrKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddrKind::Iova => "IOVA",
            AddrKind::Phys => "physical address",
            AddrKind::Length => "length",
        })
    }
}

/// Why host memory (a buffer plugged into the physical address space) could not be accessed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HostMemoryError(pub String);

/// Everything that can go wrong in the simulator.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A device access was blocked by the IOMMU; the fault is also in the fault log (unless it overflowed).
    #[error(transparent)]
    Fault(#[from] Fault),
    /// Part of the range is already mapped in the domain.
    #[error("IOVA {iova:#x} in domain {domain} is already mapped")]
    AlreadyMapped {
        /// The domain.
        domain: DomainId,
        /// The first address of the requested range that overlaps an existing mapping.
        iova: u64,
    },
    /// Part of the range to unmap is not mapped.
    #[error("IOVA {iova:#x} in domain {domain} is not mapped")]
    NotMapped {
        /// The domain.
        domain: DomainId,
        /// The first unmapped address.
        iova: u64,
    },
    /// The range to unmap covers only part of a large page.
    #[error("unmapping {iova:#x}..{end:#x} in domain {domain} would split the {size} page at {page:#x}")]
    SplitsPage {
        /// The domain.
        domain: DomainId,
        /// Start of the range.
        iova: u64,
        /// End of the range (exclusive).
        end: u64,
        /// The large page's IOVA.
        page: u64,
        /// Its size.
        size: PageSize,
    },
    /// An address or length is not a multiple of the page size it must be aligned to.
    #[error("{kind} {value:#x} is not aligned to {align:#x}")]
    Misaligned {
        /// What was misaligned.
        kind: AddrKind,
        /// The value.
        value: u64,
        /// The required alignment.
        align: u64,
    },
    /// The IOVA range leaves the 48-bit space a 4-level table translates, or wraps around.
    #[error("IOVA range {iova:#x}+{len:#x} is outside the 48-bit I/O address space")]
    IovaOutOfRange {
        /// Start of the range.
        iova: u64,
        /// Its length.
        len: u64,
    },
    /// The physical range is not backed by simulated RAM or by a plugged host buffer.
    #[error("physical range {addr:#x}+{len:#x} is not backed by memory")]
    PhysOutOfRange {
        /// Start of the range.
        addr: u64,
        /// Its length.
        len: u64,
    },
    /// Host memory refused an access.
    #[error("host memory at physical address {addr:#x} failed")]
    HostMemory {
        /// The physical address in the simulator.
        addr: u64,
        /// What the host memory said.
        #[source]
        source: HostMemoryError,
    },
    /// A length of zero.
    #[error("a DMA or mapping of zero bytes at {addr:#x}")]
    ZeroLength {
        /// The address it was asked for.
        addr: u64,
    },
    /// A mapping without read or write permission (it would be a not-present entry).
    #[error("mapping IOVA {iova:#x} in domain {domain} without read or write permission")]
    NoPermission {
        /// The domain.
        domain: DomainId,
        /// The IOVA.
        iova: u64,
    },
    /// The domain does not exist.
    #[error("domain {0} does not exist")]
    NoSuchDomain(DomainId),
    /// The domain still has devices attached.
    #[error("domain {domain} still has {devices} device(s) attached")]
    DomainInUse {
        /// The domain.
        domain: DomainId,
        /// How many devices.
        devices: usize,
    },
    /// The domain is not in translated mode, so it has no page table to change.
    #[error("domain {domain} is not a translated domain")]
    NotTranslated {
        /// The domain.
        domain: DomainId,
    },
    /// The device is not attached to any domain.
    #[error("device {rid} is not attached to a domain")]
    NotAttached {
        /// The device.
        rid: Rid,
    },
    /// The device's domain blocks all DMA, so the DMA API cannot map for it.
    #[error("device {rid} is in blocked domain {domain}")]
    DomainBlocked {
        /// The device.
        rid: Rid,
        /// Its domain.
        domain: DomainId,
    },
    /// Two devices (from different PCI segments) have the same requester ID.
    #[error("requester ID {rid} is used by both {first} and {second}")]
    RequesterIdConflict {
        /// The requester ID.
        rid: Rid,
        /// The first device.
        first: iommu_pci::PciAddress,
        /// The second device.
        second: iommu_pci::PciAddress,
    },
    /// No free IOVA range below the device's DMA limit.
    #[error("no free IOVA range of {len:#x} bytes below {limit:#x} for device {rid}")]
    IovaExhausted {
        /// The device.
        rid: Rid,
        /// The size asked for.
        len: u64,
        /// The device's DMA limit.
        limit: u64,
    },
    /// The bounce buffer pool has no run of free slots large enough.
    #[error("the bounce buffer pool has no {slots} free consecutive slots for {len} bytes for device {rid}")]
    BounceExhausted {
        /// The device.
        rid: Rid,
        /// Bytes to bounce.
        len: u64,
        /// Slots needed.
        slots: u64,
    },
    /// The buffer needs bouncing but the pool itself lies above the device's DMA limit.
    #[error("device {rid} cannot reach the bounce buffer pool (ends at {pool_end:#x}, DMA limit {limit:#x})")]
    BounceUnreachable {
        /// The device.
        rid: Rid,
        /// Last address of the pool.
        pool_end: u64,
        /// The device's DMA limit.
        limit: u64,
    },
    /// The mapping handle is not (or no longer) live in this simulator.
    #[error("DMA mapping {id} of device {rid} is not live")]
    UnknownMapping {
        /// The device.
        rid: Rid,
        /// The handle's ID.
        id: u64,
    },
    /// A DMA mask or DMA parameter that makes no sense.
    #[error("invalid DMA parameters for device {rid}: {what}")]
    InvalidDmaParams {
        /// The device.
        rid: Rid,
        /// What was wrong.
        what: &'static str,
    },
    /// A configuration value that makes no sense.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// A register access outside the device's BAR or with a width it does not decode.
    #[error("{width}-byte access at BAR offset {offset:#x} of device {rid} is outside the BAR or misaligned")]
    BarAccess {
        /// The device.
        rid: Rid,
        /// The offset.
        offset: u64,
        /// The width in bytes.
        width: u8,
    },
    /// A config space access outside the 256-byte header.
    #[error("config space access of {len} bytes at {offset:#x} of device {rid} is outside the 256-byte space")]
    ConfigAccess {
        /// The device.
        rid: Rid,
        /// The offset.
        offset: u64,
        /// The length.
        len: usize,
    },
}
