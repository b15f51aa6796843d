//! Config-space decoding: header, capability list and extended capability list.
//!
//! The parser works on whatever bytes were readable: 64 bytes (what non-root users get from sysfs), 256
//! bytes (conventional PCI, or `lspci -xxx`), or 4096 bytes (PCIe extended space). Anything it could not
//! see is reported as unknown rather than absent.

use serde::{Deserialize, Serialize};

/// Standard capability IDs we decode.
pub mod cap_id {
    /// Power management.
    pub const PM: u8 = 0x01;
    /// MSI.
    pub const MSI: u8 = 0x05;
    /// PCI Express.
    pub const PCIE: u8 = 0x10;
    /// MSI-X.
    pub const MSIX: u8 = 0x11;
}

/// Extended capability IDs we decode.
pub mod ext_cap_id {
    /// Access Control Services.
    pub const ACS: u16 = 0x000d;
    /// Alternative Routing-ID Interpretation.
    pub const ARI: u16 = 0x000e;
    /// Single Root I/O Virtualization.
    pub const SRIOV: u16 = 0x0010;
}

/// ACS capability/control bits.
pub mod acs {
    /// Source validation.
    pub const SV: u16 = 0x01;
    /// Translation blocking.
    pub const TB: u16 = 0x02;
    /// P2P request redirect.
    pub const RR: u16 = 0x04;
    /// P2P completion redirect.
    pub const CR: u16 = 0x08;
    /// Upstream forwarding.
    pub const UF: u16 = 0x10;
    /// P2P egress control.
    pub const EC: u16 = 0x20;
    /// Direct translated P2P.
    pub const DT: u16 = 0x40;
    /// The flags the kernel requires for isolation when forming IOMMU groups.
    pub const REQUIRED_FOR_GROUPS: u16 = SV | RR | CR | UF;

    /// Names the set bits, e.g. `"SV RR"`; `"none"` when empty.
    pub fn names(bits: u16) -> String {
        const ALL: [(u16, &str); 7] =
            [(SV, "SV"), (TB, "TB"), (RR, "RR"), (CR, "CR"), (UF, "UF"), (EC, "EC"), (DT, "DT")];
        let v: Vec<&str> = ALL.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(" ")
        }
    }
}

/// Why config-space bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Fewer than the 64 header bytes.
    #[error("config space is {len} bytes, shorter than the 64-byte header")]
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// Vendor ID 0xffff: no device answered.
    #[error("config space reads all ones (vendor ID ffff): no device")]
    NoDevice,
    /// A capability pointer leads back to a capability already seen.
    #[error("{list} capability list loops back to offset {offset:#x}")]
    CapabilityLoop {
        /// `"standard"` or `"extended"`.
        list: &'static str,
        /// The repeated offset.
        offset: usize,
    },
    /// A capability pointer points into the header or is misaligned.
    #[error("{list} capability pointer {offset:#x} is invalid")]
    BadPointer {
        /// `"standard"` or `"extended"`.
        list: &'static str,
        /// The bad offset.
        offset: usize,
    },
}

/// Header layout, from the low 7 bits of the header-type byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeaderKind {
    /// Type 0: an endpoint.
    Normal,
    /// Type 1: a PCI-to-PCI bridge.
    Bridge,
    /// Type 2: a CardBus bridge.
    CardBus,
    /// Anything else (value kept).
    Other(u8),
}

/// PCIe device/port type (bits 7:4 of the PCIe Capabilities register).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortType {
    /// 0: PCIe endpoint.
    Endpoint,
    /// 1: legacy PCIe endpoint.
    LegacyEndpoint,
    /// 4: root port.
    RootPort,
    /// 5: switch upstream port.
    UpstreamPort,
    /// 6: switch downstream port.
    DownstreamPort,
    /// 7: PCIe-to-PCI/PCI-X bridge.
    PcieToPciBridge,
    /// 8: PCI/PCI-X-to-PCIe bridge.
    PciToPcieBridge,
    /// 9: root-complex integrated endpoint.
    RcIntegratedEndpoint,
    /// 0xA: root-complex event collector.
    RcEventCollector,
    /// Any other value (kept).
    Reserved(u8),
}

impl PortType {
    /// Decodes the 4-bit type field.
    pub fn from_raw(v: u8) -> Self {
        match v & 0xf {
            0 => Self::Endpoint,
            1 => Self::LegacyEndpoint,
            4 => Self::RootPort,
            5 => Self::UpstreamPort,
            6 => Self::DownstreamPort,
            7 => Self::PcieToPciBridge,
            8 => Self::PciToPcieBridge,
            9 => Self::RcIntegratedEndpoint,
            0xa => Self::RcEventCollector,
            other => Self::Reserved(other),
        }
    }

    /// The 4-bit type field, as [`PortType::from_raw`] reads it back.
    pub fn raw(self) -> u8 {
        match self {
            Self::Endpoint => 0,
            Self::LegacyEndpoint => 1,
            Self::RootPort => 4,
            Self::UpstreamPort => 5,
            Self::DownstreamPort => 6,
            Self::PcieToPciBridge => 7,
            Self::PciToPcieBridge => 8,
            Self::RcIntegratedEndpoint => 9,
            Self::RcEventCollector => 0xa,
            Self::Reserved(r) => r & 0xf,
        }
    }

    /// A short human name.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Endpoint => "PCIe endpoint",
            Self::LegacyEndpoint => "legacy PCIe endpoint",
            Self::RootPort => "root port",
            Self::UpstreamPort => "switch upstream port",
            Self::DownstreamPort => "switch downstream port",
            Self::PcieToPciBridge => "PCIe-to-PCI bridge",
            Self::PciToPcieBridge => "PCI-to-PCIe bridge",
            Self::RcIntegratedEndpoint => "root-complex integrated endpoint",
            Self::RcEventCollector => "root-complex event collector",
            Self::Reserved(_) => "reserved PCIe type",
        }
    }
}

/// The ACS state of a device as far as its config space shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum AcsState {
    /// The extended config space was not readable (usually: not root), so ACS cannot be known.
    Unknown,
    /// The extended capability list was read and has no ACS capability.
    Absent,
    /// An ACS capability is present.
    Present(AcsCap),
}

/// Raw ACS capability contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcsCap {
    /// Offset of the capability header in config space.
    pub offset: u16,
    /// ACS Capability register (+4).
    pub capability: u16,
    /// ACS Control register (+6).
    pub control: u16,
    /// Low 16 bits of the dword at +8 (where some Intel root ports keep their real control bits).
    pub dword8_low: u16,
}

/// A standard capability: ID and offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// Capability ID.
    pub id: u8,
    /// Offset in config space.
    pub offset: u8,
}

/// An extended capability: ID, version and offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtCapability {
    /// Extended capability ID.
    pub id: u16,
    /// Capability version.
    pub version: u8,
    /// Offset in config space.
    pub offset: u16,
}

/// The PCI Express capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcieInfo {
    /// Offset of the capability.
    pub offset: u8,
    /// Device/port type as read (before any kernel correction).
    pub port_type: PortType,
    /// Slot implemented bit (ports).
    pub slot_implemented: bool,
}

/// SR-IOV capability contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SriovInfo {
    /// Offset of the capability.
    pub offset: u16,
    /// TotalVFs.
    pub total_vfs: u16,
    /// NumVFs currently set.
    pub num_vfs: u16,
    /// First VF offset (routing-ID offset).
    pub first_vf_offset: u16,
    /// VF stride.
    pub vf_stride: u16,
    /// VF device ID.
    pub vf_device_id: u16,
}

/// MSI-X capability contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsixInfo {
    /// Offset of the capability.
    pub offset: u8,
    /// Number of table entries.
    pub table_size: u16,
}

/// How much of config space was readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigDepth {
    /// Only the 64-byte header (unprivileged read).
    Header,
    /// The 256-byte conventional space.
    Standard,
    /// The 4096-byte PCIe extended space.
    Extended,
}

/// Everything decoded from a function's config space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigInfo {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Command register.
    pub command: u16,
    /// Status register.
    pub status: u16,
    /// Revision ID.
    pub revision: u8,
    /// Class code: base class << 16 | subclass << 8 | programming interface.
    pub class: u32,
    /// Header layout.
    pub header: HeaderKind,
    /// Multifunction bit (bit 7 of the header-type byte).
    pub multifunction: bool,
    /// Subsystem vendor and device (type 0 and CardBus headers).
    pub subsystem: Option<(u16, u16)>,
    /// Bridges: primary, secondary and subordinate bus numbers.
    pub bus_numbers: Option<(u8, u8, u8)>,
    /// How much config space was readable.
    pub depth: ConfigDepth,
    /// Standard capabilities in list order (empty when only the header was readable).
    pub capabilities: Vec<Capability>,
    /// Extended capabilities in list order (empty unless `depth` is `Extended`).
    pub extended: Vec<ExtCapability>,
    /// The PCI Express capability, if present.
    pub pcie: Option<PcieInfo>,
    /// ACS state.
    pub acs: AcsState,
    /// SR-IOV, if present.
    pub sriov: Option<SriovInfo>,
    /// ARI capability present.
    pub ari: bool,
    /// Power-management capability present.
    pub pm: bool,
    /// MSI capability present.
    pub msi: bool,
    /// MSI-X, if present.
    pub msix: Option<MsixInfo>,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

impl ConfigInfo {
    /// Whether the device is PCI Express. `None` when only the header was readable (the capability list
    /// lies beyond it).
    pub fn is_pcie(&self) -> Option<bool> {
        if self.depth == ConfigDepth::Header && self.status & 0x10 != 0 {
            None
        } else {
            Some(self.pcie.is_some())
        }
    }

    /// Base class byte.
    pub fn base_class(&self) -> u8 {
        (self.class >> 16) as u8
    }

    /// Whether the header says this is a bridge (type 1 or CardBus).
    pub fn is_bridge(&self) -> bool {
        matches!(self.header, HeaderKind::Bridge | HeaderKind::CardBus)
    }

    /// Decodes config-space bytes. Needs at least the 64-byte header.
    pub fn parse(b: &[u8]) -> Result<Self, ConfigError> {
        if b.len() < 64 {
            return Err(ConfigError::TooShort { len: b.len() });
        }
        let vendor_id = u16_at(b, 0);
        if vendor_id == 0xffff {
            return Err(ConfigError::NoDevice);
        }
        let depth = if b.len() >= 4096 {
            ConfigDepth::Extended
        } else if b.len() >= 256 {
            ConfigDepth::Standard
        } else {
            ConfigDepth::Header
        };
        let header_byte = b[0x0e];
        let header = match header_byte & 0x7f {
            0 => HeaderKind::Normal,
            1 => HeaderKind::Bridge,
            2 => HeaderKind::CardBus,
            o => HeaderKind::Other(o),
        };
        let status = u16_at(b, 6);
        let mut info = ConfigInfo {
            vendor_id,
            device_id: u16_at(b, 2),
            command: u16_at(b, 4),
            status,
            revision: b[8],
            class: u32_at(b, 8) >> 8,
            header,
            multifunction: header_byte & 0x80 != 0,
            subsystem: match header {
                HeaderKind::Normal => Some((u16_at(b, 0x2c), u16_at(b, 0x2e))),
                HeaderKind::CardBus if b.len() >= 0x44 => Some((u16_at(b, 0x40), u16_at(b, 0x42))),
                _ => None,
            },
            bus_numbers: matches!(header, HeaderKind::Bridge | HeaderKind::CardBus)
                .then(|| (b[0x18], b[0x19], b[0x1a])),
            depth,
            capabilities: Vec::new(),
            extended: Vec::new(),
            pcie: None,
            acs: AcsState::Unknown,
            sriov: None,
            ari: false,
            pm: false,
            msi: false,
            msix: None,
        };
        if depth == ConfigDepth::Header {
            // Without a capability list (status bit 4 clear) the function cannot be PCIe, so it has no ACS.
            if status & 0x10 == 0 {
                info.acs = AcsState::Absent;
            }
            return Ok(info);
        }
        if status & 0x10 != 0 {
            info.capabilities = standard_caps(b, header)?;
        }
        // As in the kernel (pci_find_capability), the first capability of an ID is the one that counts.
        for c in &info.capabilities {
            let o = usize::from(c.offset);
            match c.id {
                cap_id::PM => info.pm = true,
                cap_id::MSI => info.msi = true,
                cap_id::PCIE if o + 4 <= b.len() && info.pcie.is_none() => {
                    let reg = u16_at(b, o + 2);
                    info.pcie = Some(PcieInfo {
                        offset: c.offset,
                        port_type: PortType::from_raw(((reg >> 4) & 0xf) as u8),
                        slot_implemented: reg & 0x0100 != 0,
                    });
                }
                cap_id::MSIX if o + 4 <= b.len() && info.msix.is_none() => {
                    info.msix = Some(MsixInfo { offset: c.offset, table_size: (u16_at(b, o + 2) & 0x7ff) + 1 });
                }
                _ => {}
            }
        }
        // Extended space exists only for PCIe functions; a conventional function has no ACS.
        if info.pcie.is_none() {
            info.acs = AcsState::Absent;
            return Ok(info);
        }
        if depth != ConfigDepth::Extended {
            return Ok(info); // ACS stays Unknown.
        }
        info.extended = extended_caps(b)?;
        info.acs = AcsState::Absent;
        for c in &info.extended {
            let o = usize::from(c.offset);
            match c.id {
                // The ACS capability proper is 8 bytes; the dword at +8 may lie beyond the end of config space.
                ext_cap_id::ACS if o + 8 <= b.len() && !matches!(info.acs, AcsState::Present(_)) => {
                    info.acs = AcsState::Present(AcsCap {
                        offset: c.offset,
                        capability: u16_at(b, o + 4),
                        control: u16_at(b, o + 6),
                        dword8_low: if o + 10 <= b.len() { u16_at(b, o + 8) } else { 0 },
                    });
                }
                ext_cap_id::ARI => info.ari = true,
                ext_cap_id::SRIOV if o + 0x1c <= b.len() && info.sriov.is_none() => {
                    info.sriov = Some(SriovInfo {
                        offset: c.offset,
                        total_vfs: u16_at(b, o + 0x0e),
                        num_vfs: u16_at(b, o + 0x10),
                        first_vf_offset: u16_at(b, o + 0x14),
                        vf_stride: u16_at(b, o + 0x16),
                        vf_device_id: u16_at(b, o + 0x1a),
                    });
                }
                _ => {}
            }
        }
        Ok(info)
    }
}

fn standard_caps(b: &[u8], header: HeaderKind) -> Result<Vec<Capability>, ConfigError> {
    let list = "standard";
    let ptr_off = if header == HeaderKind::CardBus { 0x14 } else { 0x34 };
    let mut seen = [false; 256];
    let mut out = Vec::new();
    let mut ptr = usize::from(b[ptr_off] & 0xfc);
    while ptr != 0 {
        if ptr < 0x40 || ptr + 2 > b.len().min(256) {
            return Err(ConfigError::BadPointer { list, offset: ptr });
        }
        if std::mem::replace(&mut seen[ptr], true) {
            return Err(ConfigError::CapabilityLoop { list, offset: ptr });
        }
        let id = b[ptr];
        if id == 0xff {
            break; // A list of all ones: the function stopped answering.
        }
        out.push(Capability { id, offset: ptr as u8 });
        ptr = usize::from(b[ptr + 1] & 0xfc);
    }
    Ok(out)
}

fn extended_caps(b: &[u8]) -> Result<Vec<ExtCapability>, ConfigError> {
    let list = "extended";
    let mut seen = vec![false; 4096 / 4];
    let mut out = Vec::new();
    let mut ptr = 0x100usize;
    loop {
        if ptr < 0x100 || ptr + 4 > b.len().min(4096) || ptr & 3 != 0 {
            return Err(ConfigError::BadPointer { list, offset: ptr });
        }
        if std::mem::replace(&mut seen[ptr / 4], true) {
            return Err(ConfigError::CapabilityLoop { list, offset: ptr });
        }
        let hdr = u32_at(b, ptr);
        if hdr == 0 || hdr == 0xffff_ffff {
            break; // No extended capabilities (or nothing answered).
        }
        let id = (hdr & 0xffff) as u16;
        if id != 0 {
            out.push(ExtCapability { id, version: ((hdr >> 16) & 0xf) as u8, offset: ptr as u16 });
        }
        let next = (hdr >> 20) as usize & 0xffc;
        if next == 0 {
            break;
        }
        ptr = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_type_raw_is_from_raws_inverse() {
        for v in 0u8..16 {
            assert_eq!(PortType::from_raw(v).raw(), v);
        }
        assert_eq!(PortType::Reserved(0x1c).raw(), 0xc, "four bits, whatever was kept");
    }
    use proptest::prelude::*;

    /// Builds config-space bytes: a type-0 header for 8086:1234, then whatever the test adds.
    struct Cfg(Vec<u8>);

    impl Cfg {
        /// `len` bytes (64, 256 or 4096 usually) with vendor 8086, device 1234 and class 020000.
        fn new(len: usize) -> Self {
            let mut c = Cfg(vec![0; len]);
            c.put16(0x00, 0x8086).put16(0x02, 0x1234).put32(0x08, 0x0200_0001);
            c.put16(0x2c, 0x8086).put16(0x2e, 0xa01f);
            c
        }

        fn put8(&mut self, off: usize, v: u8) -> &mut Self {
            self.0[off] = v;
            self
        }

        fn put16(&mut self, off: usize, v: u16) -> &mut Self {
            self.0[off..off + 2].copy_from_slice(&v.to_le_bytes());
            self
        }

        fn put32(&mut self, off: usize, v: u32) -> &mut Self {
            self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
            self
        }

        /// Sets the header-type byte (layout in bits 6:0, multifunction in bit 7).
        fn header_type(&mut self, v: u8) -> &mut Self {
            self.put8(0x0e, v)
        }

        /// Links standard capabilities `(offset, id)` in the given order, sets the capability pointer and the
        /// status capability-list bit.
        fn caps(&mut self, caps: &[(u8, u8)]) -> &mut Self {
            let ptr_reg = if self.0[0x0e] & 0x7f == 2 { 0x14 } else { 0x34 };
            self.put8(ptr_reg, caps.first().map_or(0, |c| c.0));
            let status = u16_at(&self.0, 6) | 0x10;
            self.put16(6, status);
            for (i, &(off, id)) in caps.iter().enumerate() {
                let next = caps.get(i + 1).map_or(0, |c| c.0);
                self.put8(usize::from(off), id).put8(usize::from(off) + 1, next);
            }
            self
        }

        /// A PCIe capability of the given device/port type at `off` (to be linked with [`Cfg::caps`]).
        fn pcie_type(&mut self, off: u8, port_type: u8) -> &mut Self {
            self.put16(usize::from(off) + 2, u16::from(port_type) << 4 | 2)
        }

        /// Links extended capabilities `(offset, id)` in the given order, starting at 0x100.
        fn ext_caps(&mut self, caps: &[(u16, u16)]) -> &mut Self {
            for (i, &(off, id)) in caps.iter().enumerate() {
                let next = caps.get(i + 1).map_or(0, |c| u32::from(c.0));
                self.put32(usize::from(off), next << 20 | 1 << 16 | u32::from(id));
            }
            self
        }

        /// A PCIe function of the given port type: PM at 0x40, PCIe at 0x50.
        fn pcie(len: usize, port_type: u8) -> Self {
            let mut c = Cfg::new(len);
            c.caps(&[(0x40, cap_id::PM), (0x50, cap_id::PCIE)]).pcie_type(0x50, port_type);
            c
        }

        fn parse(&self) -> Result<ConfigInfo, ConfigError> {
            ConfigInfo::parse(&self.0)
        }
    }

    const ROOT_PORT: u8 = 4;
    const ENDPOINT: u8 = 0;
    const DOWNSTREAM: u8 = 6;

    #[test]
    fn fewer_than_64_bytes_is_too_short() {
        assert_eq!(ConfigInfo::parse(&[0; 63]), Err(ConfigError::TooShort { len: 63 }));
        assert_eq!(ConfigInfo::parse(&[]), Err(ConfigError::TooShort { len: 0 }));
    }

    #[test]
    fn vendor_ffff_means_no_device() {
        assert_eq!(ConfigInfo::parse(&[0xff; 4096]), Err(ConfigError::NoDevice));
    }

    #[test]
    fn header_fields_decode() {
        let info = Cfg::new(64).put16(4, 0x0406).put8(8, 0x03).put32(8, 0x0c03_3003).parse().unwrap();
        assert_eq!((info.vendor_id, info.device_id), (0x8086, 0x1234));
        assert_eq!(info.command, 0x0406);
        assert_eq!(info.revision, 0x03);
        assert_eq!(info.class, 0x0c0330);
        assert_eq!(info.base_class(), 0x0c);
        assert_eq!(info.header, HeaderKind::Normal);
        assert_eq!(info.subsystem, Some((0x8086, 0xa01f)));
        assert_eq!(info.bus_numbers, None);
        assert_eq!(info.depth, ConfigDepth::Header);
    }

    #[test]
    fn header_only_read_with_capability_list_gives_acs_unknown_and_is_pcie_unknown() {
        let mut full = Cfg::pcie(4096, ENDPOINT);
        full.0.truncate(64);
        let info = full.parse().unwrap();
        assert_eq!(info.depth, ConfigDepth::Header);
        assert_eq!(info.acs, AcsState::Unknown);
        assert_eq!(info.is_pcie(), None);
        assert!(info.capabilities.is_empty());
    }

    #[test]
    fn header_only_read_without_capability_list_is_conventional_with_acs_absent() {
        let info = Cfg::new(64).parse().unwrap();
        assert_eq!(info.is_pcie(), Some(false));
        assert_eq!(info.acs, AcsState::Absent);
    }

    #[test]
    fn root_port_with_acs_at_0x100_decodes_capability_and_control() {
        let mut c = Cfg::pcie(4096, ROOT_PORT);
        c.header_type(1).ext_caps(&[(0x100, ext_cap_id::ACS)]);
        c.put16(0x104, acs::SV | acs::RR | acs::CR | acs::UF | acs::TB).put16(0x106, acs::SV | acs::RR);
        c.put16(0x108, 0x001d);
        let info = c.parse().unwrap();
        assert_eq!(info.pcie.map(|p| p.port_type), Some(PortType::RootPort));
        assert_eq!(info.is_pcie(), Some(true));
        assert_eq!(info.extended, vec![ExtCapability { id: ext_cap_id::ACS, version: 1, offset: 0x100 }]);
        assert_eq!(
            info.acs,
            AcsState::Present(AcsCap {
                offset: 0x100,
                capability: acs::SV | acs::RR | acs::CR | acs::UF | acs::TB,
                control: acs::SV | acs::RR,
                dword8_low: 0x001d,
            })
        );
    }

    #[test]
    fn acs_after_other_extended_capabilities_is_found() {
        let mut c = Cfg::pcie(4096, ENDPOINT);
        c.ext_caps(&[(0x100, 0x0001), (0x140, 0x0003), (0x200, ext_cap_id::ACS)]).put16(0x206, acs::SV);
        let info = c.parse().unwrap();
        assert_eq!(info.extended.iter().map(|e| e.offset).collect::<Vec<_>>(), [0x100, 0x140, 0x200]);
        assert!(matches!(info.acs, AcsState::Present(AcsCap { offset: 0x200, control: acs::SV, .. })));
    }

    #[test]
    fn acs_capability_in_the_last_eight_bytes_is_present() {
        let mut c = Cfg::pcie(4096, DOWNSTREAM);
        c.ext_caps(&[(0x100, 0x0001), (0xff8, ext_cap_id::ACS)]).put16(0xffc, acs::SV).put16(0xffe, acs::RR);
        let info = c.parse().unwrap();
        assert_eq!(
            info.acs,
            AcsState::Present(AcsCap { offset: 0xff8, capability: acs::SV, control: acs::RR, dword8_low: 0 })
        );
    }
    #[test]
    fn first_of_duplicate_capabilities_counts_as_in_the_kernel() {
        let mut c = Cfg::new(4096);
        c.caps(&[(0x40, cap_id::PCIE), (0x60, cap_id::PCIE), (0x70, cap_id::MSIX), (0x80, cap_id::MSIX)]);
        c.pcie_type(0x40, ROOT_PORT).pcie_type(0x60, ENDPOINT).put16(0x72, 7).put16(0x82, 15);
        c.ext_caps(&[(0x100, ext_cap_id::ACS), (0x200, ext_cap_id::ACS)]).put16(0x106, 1).put16(0x206, 2);
        let info = c.parse().unwrap();
        assert_eq!(info.pcie.map(|p| (p.offset, p.port_type)), Some((0x40, PortType::RootPort)));
        assert_eq!(info.msix, Some(MsixInfo { offset: 0x70, table_size: 8 }));
        assert!(matches!(info.acs, AcsState::Present(AcsCap { offset: 0x100, control: 1, .. })));
    }

    #[test]
    fn pcie_device_with_4096_byte_config_and_no_acs_gives_absent() {
        let mut c = Cfg::pcie(4096, ENDPOINT);
        c.ext_caps(&[(0x100, 0x0001), (0x150, ext_cap_id::ARI)]);
        let info = c.parse().unwrap();
        assert_eq!(info.depth, ConfigDepth::Extended);
        assert_eq!(info.acs, AcsState::Absent);
    }

    #[test]
    fn pcie_device_with_empty_extended_list_gives_absent() {
        let info = Cfg::pcie(4096, ENDPOINT).parse().unwrap();
        assert!(info.extended.is_empty());
        assert_eq!(info.acs, AcsState::Absent);
        let mut c = Cfg::pcie(4096, ENDPOINT);
        c.put32(0x100, 0xffff_ffff);
        assert_eq!(c.parse().unwrap().acs, AcsState::Absent, "all-ones extended header");
    }

    #[test]
    fn pcie_device_with_256_byte_config_gives_acs_unknown() {
        let info = Cfg::pcie(256, ROOT_PORT).parse().unwrap();
        assert_eq!(info.depth, ConfigDepth::Standard);
        assert_eq!(info.is_pcie(), Some(true));
        assert_eq!(info.acs, AcsState::Unknown);
        assert!(info.extended.is_empty());
    }

    #[test]
    fn conventional_pci_device_gives_acs_absent() {
        for len in [256, 4096] {
            let mut c = Cfg::new(len);
            c.caps(&[(0x40, cap_id::PM), (0x50, cap_id::MSI)]);
            let info = c.parse().unwrap();
            assert_eq!(info.is_pcie(), Some(false));
            assert_eq!(info.acs, AcsState::Absent, "{len} bytes");
            assert!(info.pm && info.msi);
            assert!(info.extended.is_empty(), "extended space is not read for conventional PCI");
        }
    }

    #[test]
    fn standard_capability_loop_is_an_error_not_a_hang() {
        let mut c = Cfg::new(256);
        c.caps(&[(0x40, cap_id::PM), (0x50, cap_id::MSI)]).put8(0x51, 0x40);
        assert_eq!(c.parse(), Err(ConfigError::CapabilityLoop { list: "standard", offset: 0x40 }));
        let mut c = Cfg::new(256);
        c.caps(&[(0x40, cap_id::PM)]).put8(0x41, 0x40);
        assert_eq!(c.parse(), Err(ConfigError::CapabilityLoop { list: "standard", offset: 0x40 }));
    }

    #[test]
    fn extended_capability_loop_is_an_error_not_a_hang() {
        let mut c = Cfg::pcie(4096, ENDPOINT);
        c.ext_caps(&[(0x100, 0x0001), (0x200, 0x0003)]).put32(0x200, 0x100 << 20 | 0x1_0003);
        assert_eq!(c.parse(), Err(ConfigError::CapabilityLoop { list: "extended", offset: 0x100 }));
        let mut c = Cfg::pcie(4096, ENDPOINT);
        c.put32(0x100, 0x100 << 20 | 0x1_0001);
        assert_eq!(c.parse(), Err(ConfigError::CapabilityLoop { list: "extended", offset: 0x100 }));
    }

    #[test]
    fn standard_pointer_into_the_header_is_a_bad_pointer() {
        let mut c = Cfg::new(256);
        c.caps(&[(0x40, cap_id::PM)]).put8(0x41, 0x3c);
        assert_eq!(c.parse(), Err(ConfigError::BadPointer { list: "standard", offset: 0x3c }));
        let mut c = Cfg::new(256);
        c.caps(&[]).put8(0x34, 0x10);
        assert_eq!(c.parse(), Err(ConfigError::BadPointer { list: "standard", offset: 0x10 }));
    }

    #[test]
    fn extended_pointer_into_standard_space_is_a_bad_pointer() {
        let mut c = Cfg::pcie(4096, ENDPOINT);
        c.put32(0x100, 0x0fc << 20 | 0x1_0001);
        assert_eq!(c.parse(), Err(ConfigError::BadPointer { list: "extended", offset: 0xfc }));
    }

    #[test]
    fn standard_list_stops_at_an_all_ones_capability() {
        let mut c = Cfg::new(256);
        c.caps(&[(0x40, cap_id::PM), (0x50, 0xff)]).put8(0x51, 0x50);
        let info = c.parse().unwrap();
        assert_eq!(info.capabilities, vec![Capability { id: cap_id::PM, offset: 0x40 }]);
    }

    #[test]
    fn capability_pointer_low_bits_are_ignored() {
        let mut c = Cfg::new(256);
        c.caps(&[(0x40, cap_id::PM), (0x50, cap_id::MSI)]).put8(0x34, 0x43).put8(0x41, 0x52);
        let info = c.parse().unwrap();
        assert_eq!(info.capabilities.iter().map(|c| c.offset).collect::<Vec<_>>(), [0x40, 0x50]);
    }

    #[test]
    fn sriov_capability_decodes_vf_fields() {
        let mut c = Cfg::pcie(4096, ENDPOINT);
        c.ext_caps(&[(0x100, ext_cap_id::ARI), (0x160, ext_cap_id::SRIOV)]);
        c.put16(0x160 + 0x0e, 64).put16(0x160 + 0x10, 8).put16(0x160 + 0x14, 0x80).put16(0x160 + 0x16, 2);
        c.put16(0x160 + 0x1a, 0x10ed);
        let info = c.parse().unwrap();
        assert_eq!(
            info.sriov,
            Some(SriovInfo {
                offset: 0x160,
                total_vfs: 64,
                num_vfs: 8,
                first_vf_offset: 0x80,
                vf_stride: 2,
                vf_device_id: 0x10ed
            })
        );
    }

    #[test]
    fn msix_table_size_is_the_field_plus_one() {
        let mut c = Cfg::pcie(256, ENDPOINT);
        c.caps(&[(0x40, cap_id::PCIE), (0x70, cap_id::MSIX)]).pcie_type(0x40, ENDPOINT).put16(0x72, 0xc000 | 0x7ff);
        let info = c.parse().unwrap();
        assert_eq!(info.msix, Some(MsixInfo { offset: 0x70, table_size: 2048 }));
        assert!(!info.msi);
    }

    #[test]
    fn ari_capability_sets_ari() {
        let mut c = Cfg::pcie(4096, ENDPOINT);
        assert!(!c.parse().unwrap().ari);
        c.ext_caps(&[(0x100, 0x0001), (0x140, ext_cap_id::ARI)]);
        let info = c.parse().unwrap();
        assert!(info.ari);
        assert_eq!(info.extended[1], ExtCapability { id: ext_cap_id::ARI, version: 1, offset: 0x140 });
    }

    #[test]
    fn extended_capability_with_id_zero_is_skipped_but_followed() {
        let mut c = Cfg::pcie(4096, ENDPOINT);
        c.ext_caps(&[(0x100, 0x0000), (0x180, ext_cap_id::ARI)]);
        let info = c.parse().unwrap();
        assert_eq!(info.extended, vec![ExtCapability { id: ext_cap_id::ARI, version: 1, offset: 0x180 }]);
        assert!(info.ari);
    }

    #[test]
    fn multifunction_bit_is_separate_from_the_header_layout() {
        let info = Cfg::new(64).header_type(0x80).parse().unwrap();
        assert!(info.multifunction);
        assert_eq!(info.header, HeaderKind::Normal);
        let info = Cfg::new(64).header_type(0x81).parse().unwrap();
        assert!(info.multifunction);
        assert_eq!(info.header, HeaderKind::Bridge);
        let info = Cfg::new(64).header_type(0x00).parse().unwrap();
        assert!(!info.multifunction);
        assert_eq!(Cfg::new(64).header_type(0x7f).parse().unwrap().header, HeaderKind::Other(0x7f));
    }

    #[test]
    fn bridge_header_gives_bus_numbers_and_no_subsystem() {
        let mut c = Cfg::pcie(256, DOWNSTREAM);
        c.header_type(0x01).put8(0x18, 0x00).put8(0x19, 0x03).put8(0x1a, 0x05);
        let info = c.parse().unwrap();
        assert!(info.is_bridge());
        assert_eq!(info.bus_numbers, Some((0x00, 0x03, 0x05)));
        assert_eq!(info.subsystem, None);
        assert_eq!(info.pcie.map(|p| p.port_type), Some(PortType::DownstreamPort));
    }

    #[test]
    fn cardbus_bridge_uses_its_own_capability_pointer_and_subsystem_registers() {
        let mut c = Cfg::new(256);
        c.header_type(0x02).put8(0x34, 0x10).caps(&[(0x80, cap_id::PM)]);
        c.put16(0x40, 0x1180).put16(0x42, 0x0476).put8(0x18, 1).put8(0x19, 2).put8(0x1a, 4);
        let info = c.parse().unwrap();
        assert_eq!(info.header, HeaderKind::CardBus);
        assert!(info.is_bridge());
        assert_eq!(info.capabilities, vec![Capability { id: cap_id::PM, offset: 0x80 }]);
        assert_eq!(info.subsystem, Some((0x1180, 0x0476)));
        assert_eq!(info.bus_numbers, Some((1, 2, 4)));
        let mut header = c.0.clone();
        header.truncate(64);
        assert_eq!(ConfigInfo::parse(&header).unwrap().subsystem, None, "registers beyond a 64-byte read");
    }

    #[test]
    fn port_type_and_slot_bit_decode() {
        let mut c = Cfg::pcie(256, ROOT_PORT);
        c.put16(0x52, 0x0100 | 4 << 4 | 2);
        let p = c.parse().unwrap().pcie.unwrap();
        assert_eq!((p.offset, p.port_type, p.slot_implemented), (0x50, PortType::RootPort, true));
        for (raw, t) in
            [(1, PortType::LegacyEndpoint), (9, PortType::RcIntegratedEndpoint), (0xb, PortType::Reserved(0xb))]
        {
            assert_eq!(Cfg::pcie(256, raw).parse().unwrap().pcie.unwrap().port_type, t);
        }
    }

    #[test]
    fn acs_names_lists_set_bits() {
        assert_eq!(acs::names(0), "none");
        assert_eq!(acs::names(acs::REQUIRED_FOR_GROUPS), "SV RR CR UF");
    }

    /// A 4096-byte PCIe root port using every decoder: PM, MSI, PCIe, MSI-X, ACS, ARI, SR-IOV.
    fn rich_config() -> Vec<u8> {
        let mut c = Cfg::new(4096);
        c.header_type(0x81)
            .caps(&[(0x40, cap_id::PM), (0x50, cap_id::MSI), (0x70, cap_id::PCIE), (0xb0, cap_id::MSIX)])
            .pcie_type(0x70, ROOT_PORT)
            .put16(0xb2, 63)
            .ext_caps(&[
                (0x100, 0x0001),
                (0x148, ext_cap_id::ACS),
                (0x158, ext_cap_id::ARI),
                (0x160, ext_cap_id::SRIOV),
            ])
            .put16(0x14c, 0x5f)
            .put16(0x14e, 0x1d)
            .put16(0x16e, 16);
        c.0
    }

    #[test]
    fn rich_config_decodes_everything() {
        let info = ConfigInfo::parse(&rich_config()).unwrap();
        assert!(info.pm && info.msi && info.ari && info.multifunction);
        assert_eq!(info.msix.map(|m| m.table_size), Some(64));
        assert_eq!(info.sriov.map(|s| s.total_vfs), Some(16));
        assert!(matches!(info.acs, AcsState::Present(AcsCap { capability: 0x5f, control: 0x1d, .. })));
    }

    /// Checks what must hold for any successful parse of `bytes`.
    fn check_invariants(bytes: &[u8], info: &ConfigInfo) {
        let depth = match bytes.len() {
            n if n >= 4096 => ConfigDepth::Extended,
            n if n >= 256 => ConfigDepth::Standard,
            _ => ConfigDepth::Header,
        };
        assert_eq!(info.depth, depth);
        assert!(info.capabilities.iter().all(|c| c.offset >= 0x40));
        assert!(info.extended.iter().all(|c| (0x100..0x1000).contains(&c.offset) && c.offset % 4 == 0));
        if depth != ConfigDepth::Extended {
            assert!(info.extended.is_empty());
            assert!(!matches!(info.acs, AcsState::Present(_)));
        }
        if matches!(info.acs, AcsState::Present(_)) || info.sriov.is_some() || info.ari {
            assert!(info.pcie.is_some());
        }
        if info.acs == AcsState::Unknown {
            assert!(depth == ConfigDepth::Header || info.pcie.is_some());
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..=4096)) {
            if let Ok(info) = ConfigInfo::parse(&bytes) {
                check_invariants(&bytes, &info);
            }
        }

        #[test]
        fn parse_never_panics_on_mutations_of_a_valid_config(
            edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..64),
            truncate in prop_oneof![Just(4096usize), Just(256), Just(64), 0usize..=4096],
        ) {
            let mut bytes = rich_config();
            for (off, v) in edits {
                bytes[off] = v;
            }
            bytes.truncate(truncate);
            if let Ok(info) = ConfigInfo::parse(&bytes) {
                check_invariants(&bytes, &info);
            }
        }

        #[test]
        fn parse_never_panics_when_capability_pointers_are_random(
            ptrs in proptest::collection::vec((0usize..48, any::<u8>()), 1..16),
            ext in proptest::collection::vec((0usize..32, any::<u16>()), 1..16),
        ) {
            // Aim the mutations at pointer bytes, where the list walkers make their decisions.
            let mut bytes = rich_config();
            let ptr_bytes = [0x34usize, 0x41, 0x51, 0x71, 0xb1];
            for (i, v) in ptrs {
                bytes[ptr_bytes[i % ptr_bytes.len()]] = v;
            }
            let ext_next = [0x102usize, 0x14a, 0x15a, 0x162];
            for (i, v) in ext {
                bytes[ext_next[i % ext_next.len()]..][..2].copy_from_slice(&v.to_le_bytes());
            }
            if let Ok(info) = ConfigInfo::parse(&bytes) {
                check_invariants(&bytes, &info);
            }
        }
    }
}
