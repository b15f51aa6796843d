//! DMA remapping faults and the bounded log they are recorded in.
//!
//! # Fault reasons and their VT-d codes
//!
//! Every fault carries a [`FaultReason`] and the fault reason code Intel VT-d hardware would put in its
//! fault recording register (legacy translation mode), so a log line reads like the kernel's `DMAR:`
//! message:
//!
//! | [`FaultReason`] | VT-d code | VT-d meaning | when |
//! |---|---|---|---|
//! | `ContextNotPresent` | `0x02` | present bit in the context entry is clear | the requester ID is attached to no domain |
//! | `Blocked` | `0x02` | (same) | the device's domain is [`DomainMode::Blocked`](crate::DomainMode::Blocked): Linux blocks a device by clearing its context entry, so real hardware reports 0x02 too; the simulator keeps the two apart |
//! | `BeyondAddressWidth` | `0x04` | access beyond MGAW | the IOVA has bits set above bit 47 |
//! | `NotMapped` | `0x05` (write) / `0x06` (read) | PTE write / read access is not set | no leaf maps the IOVA: hardware sees an entry with R = W = 0 and cannot tell "absent" from "not permitted" |
//! | `WriteNotPermitted` | `0x05` | PTE write access is not set | a write to a read-only mapping |
//! | `ReadNotPermitted` | `0x06` | PTE read access is not set | a read of a write-only mapping |
//!
//! # Overflow
//!
//! Like the primary fault log of VT-d (a fixed number of fault recording registers and a "primary fault
//! overflow" flag), the log holds at most its capacity; faults that arrive while it is full are dropped
//! and only counted ([`FaultLog::dropped`]). [`FaultLog::take`] empties it, as software clearing the
//! recording registers does.

use std::collections::VecDeque;

use serde::Serialize;

use crate::types::{Access, DomainId, Rid};

/// Why the IOMMU blocked an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultReason {
    /// The requester ID is not attached to any domain (no context entry).
    ContextNotPresent,
    /// The device's domain is blocked.
    Blocked,
    /// The IOVA is beyond the 48-bit address width of the page table.
    BeyondAddressWidth,
    /// No mapping covers the IOVA.
    NotMapped,
    /// The mapping does not allow writes.
    WriteNotPermitted,
    /// The mapping does not allow reads.
    ReadNotPermitted,
}

impl FaultReason {
    /// The VT-d fault reason code for this reason and access (see the module documentation).
    pub fn vtd_code(self, access: Access) -> u8 {
        match self {
            FaultReason::ContextNotPresent | FaultReason::Blocked => 0x02,
            FaultReason::BeyondAddressWidth => 0x04,
            FaultReason::WriteNotPermitted => 0x05,
            FaultReason::ReadNotPermitted => 0x06,
            FaultReason::NotMapped => match access {
                Access::Write => 0x05,
                Access::Read => 0x06,
            },
        }
    }

    /// The text VT-d documentation gives for [`FaultReason::vtd_code`].
    pub fn vtd_text(self, access: Access) -> &'static str {
        match self.vtd_code(access) {
            0x02 => "Present bit in context entry is clear",
            0x04 => "Access beyond MGAW",
            0x05 => "PTE Write access is not set",
            _ => "PTE Read access is not set",
        }
    }

    /// The reason as one kebab-case word, as it serializes (`not-mapped`, `write-not-permitted`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FaultReason::ContextNotPresent => "context-not-present",
            FaultReason::Blocked => "blocked",
            FaultReason::BeyondAddressWidth => "beyond-address-width",
            FaultReason::NotMapped => "not-mapped",
            FaultReason::WriteNotPermitted => "write-not-permitted",
            FaultReason::ReadNotPermitted => "read-not-permitted",
        }
    }

    /// What happened, in words.
    pub fn describe(self) -> &'static str {
        match self {
            FaultReason::ContextNotPresent => "the device is not attached to any domain",
            FaultReason::Blocked => "the device's domain blocks all DMA",
            FaultReason::BeyondAddressWidth => "the address is beyond the 48-bit I/O address width",
            FaultReason::NotMapped => "nothing is mapped at this address in the device's domain",
            FaultReason::WriteNotPermitted => "the mapping is read-only",
            FaultReason::ReadNotPermitted => "the mapping is write-only",
        }
    }
}

/// One blocked device access. It never touched memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error(
    "DMA {access} by {rid} at {addr:#x} blocked: {} (VT-d fault reason {vtd_code:#04x})",
    reason.describe()
)]
pub struct Fault {
    /// The device's requester ID (VT-d: source identifier).
    pub rid: Rid,
    /// The exact address the device used (VT-d records it 4 KiB-aligned; the simulator keeps all bits).
    pub addr: u64,
    /// Read or write.
    pub access: Access,
    /// Why.
    pub reason: FaultReason,
    /// The VT-d fault reason code ([`FaultReason::vtd_code`]).
    pub vtd_code: u8,
    /// The device's domain, if it has one.
    pub domain: Option<DomainId>,
    /// The simulated clock when it happened, in nanoseconds.
    pub time_ns: u64,
}

impl Fault {
    /// A fault; `vtd_code` is derived from `reason` and `access`.
    pub fn new(
        rid: Rid,
        addr: u64,
        access: Access,
        reason: FaultReason,
        domain: Option<DomainId>,
        time_ns: u64,
    ) -> Self {
        Self { rid, addr, access, reason, vtd_code: reason.vtd_code(access), domain, time_ns }
    }

    /// The line Linux's DMAR driver would log for this fault.
    pub fn dmar_line(&self) -> String {
        format!(
            "DMAR: [DMA {}] Request device [{}] fault addr {:#x} [fault reason {:#04x}] {}",
            match self.access {
                Access::Read => "Read",
                Access::Write => "Write",
            },
            self.rid,
            self.addr & !0xfff,
            self.vtd_code,
            self.reason.vtd_text(self.access)
        )
    }
}

/// A bounded fault log. See the module documentation.
#[derive(Clone, Debug)]
pub struct FaultLog {
    entries: VecDeque<Fault>,
    capacity: usize,
    recorded: u64,
    dropped: u64,
}

impl FaultLog {
    /// An empty log that keeps at most `capacity` faults.
    pub fn new(capacity: usize) -> Self {
        Self { entries: VecDeque::with_capacity(capacity.min(4096)), capacity, recorded: 0, dropped: 0 }
    }

    /// Records `f`, or counts it as dropped when the log is full. Returns whether it was kept.
    pub fn record(&mut self, f: Fault) -> bool {
        if self.entries.len() >= self.capacity {
            self.dropped += 1;
            false
        } else {
            self.entries.push_back(f);
            self.recorded += 1;
            true
        }
    }

    /// The faults held, oldest first.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &Fault> + '_ {
        self.entries.iter()
    }

    /// Removes and returns the faults held (the dropped count stays).
    pub fn take(&mut self) -> Vec<Fault> {
        self.entries.drain(..).collect()
    }

    /// How many faults are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no fault is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many faults it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Faults recorded since creation (including ones already taken).
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// Faults dropped because the log was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether any fault was dropped (VT-d's primary fault overflow flag).
    pub fn overflowed(&self) -> bool {
        self.dropped > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(addr: u64) -> Fault {
        Fault::new(Rid(0x100), addr, Access::Write, FaultReason::NotMapped, Some(DomainId(1)), 0)
    }

    #[test]
    fn unmapped_write_reports_vtd_reason_5_like_the_kernel_log() {
        let f = fault(0x90_0123);
        assert_eq!(f.vtd_code, 0x05);
        assert_eq!(
            f.dmar_line(),
            "DMAR: [DMA Write] Request device [01:00.0] fault addr 0x900000 [fault reason 0x05] PTE Write access is not set"
        );
        let r = Fault::new(Rid(0x100), 0, Access::Read, FaultReason::NotMapped, None, 0);
        assert_eq!(r.vtd_code, 0x06);
        assert_eq!(FaultReason::ContextNotPresent.vtd_code(Access::Read), 0x02);
        assert_eq!(FaultReason::Blocked.vtd_code(Access::Write), 0x02);
        assert_eq!(FaultReason::BeyondAddressWidth.vtd_code(Access::Write), 0x04);
    }

    #[test]
    fn full_log_drops_new_faults_and_counts_them() {
        let mut log = FaultLog::new(2);
        assert!(log.record(fault(1)));
        assert!(log.record(fault(2)));
        assert!(!log.record(fault(3)));
        assert_eq!((log.len(), log.recorded(), log.dropped()), (2, 2, 1));
        assert!(log.overflowed());
        let got: Vec<u64> = log.take().iter().map(|f| f.addr).collect();
        assert_eq!(got, [1, 2]);
        assert!(log.record(fault(4)));
        assert_eq!((log.len(), log.dropped()), (1, 1));
    }

    #[test]
    fn fault_message_is_one_sentence_with_the_code() {
        let s = fault(0x1000).to_string();
        assert_eq!(
            s,
            "DMA write by 01:00.0 at 0x1000 blocked: nothing is mapped at this address in the device's domain (VT-d fault reason 0x05)"
        );
    }

    #[test]
    fn reason_names_are_what_the_reasons_serialize_as() {
        use FaultReason::*;
        for r in [ContextNotPresent, Blocked, BeyondAddressWidth, NotMapped, WriteNotPermitted, ReadNotPermitted] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.name(), "{r:?}");
        }
    }
}
