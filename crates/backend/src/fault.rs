//! Typed records of the device accesses an IOMMU blocked.

use serde::Serialize;

use crate::types::Access;

/// One blocked device access, as a backend that can observe faults records it
/// ([`crate::DmaBackend::recorded_faults`]). The access never touched memory.
///
/// VFIO cannot observe faults (they reach only the kernel log, as `DMAR:` lines); a simulator records
/// each with the requester ID, the exact address and the VT-d fault reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultRecord {
    /// The device that made the access, as the IOMMU saw it (a PCIe requester ID, `bb:dd.f`), when known.
    pub requester: Option<String>,
    /// The I/O virtual address the device used.
    pub iova: u64,
    /// Whether the device read or wrote memory.
    pub access: Access,
    /// Why, as a short kebab-case word (`not-mapped`, `write-not-permitted`, ...).
    pub reason: String,
    /// Why, as a sentence.
    pub description: String,
    /// The hardware's fault reason code (Intel VT-d), when there is one.
    pub code: Option<u8>,
    /// The line the kernel would log for it (`DMAR: [DMA Write] Request device [..] ...`), when known.
    pub log_line: Option<String>,
}

impl std::fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DMA {} ", self.access)?;
        if let Some(r) = &self.requester {
            write!(f, "by {r} ")?;
        }
        write!(f, "at IOVA {:#x} blocked: {}", self.iova, self.description)?;
        if let Some(c) = self.code {
            write!(f, " (fault reason {c:#04x})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_reads_as_one_sentence() {
        let f = FaultRecord {
            requester: Some("03:00.1".into()),
            iova: 0x9000,
            access: Access::Write,
            reason: "not-mapped".into(),
            description: "nothing is mapped here".into(),
            code: Some(5),
            log_line: None,
        };
        assert_eq!(
            f.to_string(),
            "DMA write by 03:00.1 at IOVA 0x9000 blocked: nothing is mapped here (fault reason 0x05)"
        );
    }
}
