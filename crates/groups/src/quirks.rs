//! The kernel's PCI quirks that affect grouping, kept as data.
//!
//! The tables follow `drivers/pci/quirks.c` of Debian's Linux 6.12.117 source (`linux-source-6.12`), row
//! by row, see [`QUIRKS_FOLLOW`]. Each entry names its vendor, its devices and what it does, so that
//! another kernel's table can be diffed against this one.

use serde::Serialize;

/// The kernel version these tables follow: the source they were checked against, row by row.
pub const QUIRKS_FOLLOW: &str = "Linux 6.12.117 (Debian)";

/// Matches device IDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ids {
    /// Any device of the vendor.
    Any,
    /// Exactly these device IDs.
    List(&'static [u16]),
    /// Inclusive ranges of device IDs.
    Ranges(&'static [(u16, u16)]),
}

impl Ids {
    /// Whether `device` matches.
    pub fn matches(&self, device: u16) -> bool {
        match self {
            Ids::Any => true,
            Ids::List(l) => l.contains(&device),
            Ids::Ranges(r) => r.iter().any(|&(a, b)| (a..=b).contains(&device)),
        }
    }
}

/// What an ACS quirk does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcsQuirkKind {
    /// AMD southbridge: only for a multifunction device on a root bus with IVRS present; then it counts
    /// only RR and CR, which it asserts.
    AmdSouthbridge,
    /// The vendor vouches that functions do no peer-to-peer: SV TB RR CR UF DT count as enabled.
    MultifunctionEndpoint,
    /// Only for root-complex integrated endpoints: the four required flags count as enabled.
    RcIntegratedEndpoint,
    /// Intel PCH root ports (root ports only): isolated when the kernel asked for ACS and the LPC bridge
    /// at 1f.0 has RCBA enabled (the PCH enable quirk then succeeds), else not.
    IntelPch,
    /// Intel SPT-style root ports (root ports only): real ACS, but capability and control are dwords,
    /// control at +8.
    IntelSpt,
    /// The four required flags count as enabled.
    Asserts,
    /// Only for root ports: the four required flags are masked out, so they count as enabled.
    RootPortMasks,
    /// Only for root ports (Cavium): the four required flags count as enabled.
    RootPortAsserts,
    /// Root and downstream ports: listed IDs assert the four flags; any other ID is not isolated, even
    /// with a real ACS capability (Zhaoxin).
    PortsListedOrNo(&'static [(u16, u16)]),
    /// Listed IDs assert the four flags; any other ID of the vendor is not isolated (Wangxun).
    ListedOrNo(&'static [(u16, u16)]),
}

/// One row of the ACS quirk table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AcsQuirk {
    /// A short name for explanations.
    pub name: &'static str,
    /// Vendor ID.
    pub vendor: u16,
    /// Device IDs.
    pub devices: Ids,
    /// Behaviour.
    pub kind: AcsQuirkKind,
}

const fn q(name: &'static str, vendor: u16, devices: Ids, kind: AcsQuirkKind) -> AcsQuirk {
    AcsQuirk { name, vendor, devices, kind }
}

use AcsQuirkKind as K;

/// The ACS quirk table, in the kernel's order (the first matching entry that answers decides).
pub static ACS_QUIRKS: &[AcsQuirk] = &[
    q("AMD southbridge", 0x1002, Ids::List(&[0x4385, 0x439c, 0x4383, 0x439d, 0x4384, 0x4399]), K::AmdSouthbridge),
    q("AMD southbridge", 0x1022, Ids::List(&[0x780f, 0x7809]), K::AmdSouthbridge),
    q("Solarflare multifunction", 0x1924, Ids::List(&[0x0903, 0x0923, 0x0a03]), K::MultifunctionEndpoint),
    q(
        "Intel multifunction NIC",
        0x8086,
        Ids::Ranges(&[
            (0x10c6, 0x10c6),
            (0x10db, 0x10db),
            (0x10dd, 0x10dd),
            (0x10e1, 0x10e1),
            (0x10f1, 0x10f1),
            (0x10f7, 0x10fc),
            (0x1507, 0x1507),
            (0x1514, 0x1514),
            (0x151c, 0x151c),
            (0x1529, 0x152a),
            (0x154d, 0x154d),
            (0x154f, 0x154f),
            (0x1551, 0x1551),
            (0x1558, 0x1558),
            (0x1509, 0x1509),
            (0x150e, 0x1511),
            (0x1516, 0x1516),
            (0x1527, 0x1527),
            (0x10c9, 0x10c9),
            (0x10e6, 0x10e8),
            (0x150a, 0x150a),
            (0x150d, 0x150d),
            (0x1518, 0x1518),
            (0x1526, 0x1526),
            (0x10a7, 0x10a7),
            (0x10a9, 0x10a9),
            (0x10d6, 0x10d6),
            (0x1521, 0x1524),
            (0x105e, 0x1060),
            (0x10d9, 0x10d9),
            (0x15b7, 0x15b8),
        ]),
        K::MultifunctionEndpoint,
    ),
    q("Intel root-complex integrated endpoint", 0x8086, Ids::Any, K::RcIntegratedEndpoint),
    q(
        "Intel PCH root port",
        0x8086,
        Ids::Ranges(&[
            (0x3b42, 0x3b51),
            (0x1c10, 0x1c1f),
            (0x1e10, 0x1e1f),
            (0x8c10, 0x8c1f),
            (0x9c10, 0x9c1b),
            (0x9c90, 0x9c9b),
            (0x8d10, 0x8d1e),
        ]),
        K::IntelPch,
    ),
    q(
        "Intel PCH root port",
        0x8086,
        Ids::List(&[
            0x1d10, 0x1d12, 0x1d14, 0x1d16, 0x1d18, 0x1d1a, 0x1d1c, 0x1d1e, 0x8c90, 0x8c92, 0x8c94, 0x8c96, 0x8c98,
            0x8c9a, 0x8c9c, 0x8c9e,
        ]),
        K::IntelPch,
    ),
    q(
        "Intel SPT PCH root port",
        0x8086,
        Ids::Ranges(&[(0xa110, 0xa11f), (0xa167, 0xa16a), (0xa290, 0xa29f), (0xa2e7, 0xa2ee), (0x9d10, 0x9d1b)]),
        K::IntelSpt,
    ),
    // 0111 (Hamoa) and 0120 (Glymur) came to 6.12.y as a stable backport.
    q("Qualcomm", 0x17cb, Ids::List(&[0x0400, 0x0401, 0x0115, 0x0111, 0x0120]), K::Asserts),
    q("HXT", 0x1dbf, Ids::List(&[0x0401]), K::Asserts),
    q("Emulex multifunction", 0x19a2, Ids::List(&[0x0710]), K::MultifunctionEndpoint),
    q("Emulex multifunction", 0x10df, Ids::List(&[0x0720]), K::MultifunctionEndpoint),
    q(
        "Cavium root port",
        0x177d,
        Ids::Ranges(&[(0xa000, 0xa7ff), (0xaf84, 0xaf84), (0xb884, 0xb884)]),
        K::RootPortAsserts,
    ),
    q("Cavium multifunction", 0x177d, Ids::List(&[0xa026, 0xa059, 0xa060]), K::MultifunctionEndpoint),
    q("AMCC", 0x10e8, Ids::List(&[0xe004]), K::Asserts),
    q("Ampere", 0x1def, Ids::Ranges(&[(0xe005, 0xe00c)]), K::Asserts),
    q(
        "Broadcom multifunction",
        0x14e4,
        Ids::List(&[0x16d7, 0x1750, 0x1751, 0x1752, 0x1760, 0x1761, 0x1762, 0x1763]),
        K::MultifunctionEndpoint,
    ),
    q("Broadcom", 0x14e4, Ids::List(&[0xd714]), K::Asserts),
    q(
        "Loongson",
        0x0014,
        Ids::List(&[0x3c09, 0x3c19, 0x3c29, 0x7a09, 0x7a19, 0x7a29, 0x7a39, 0x7a49, 0x7a59, 0x7a69]),
        K::Asserts,
    ),
    q("Amazon Annapurna root port", 0x1c36, Ids::List(&[0x0031]), K::RootPortMasks),
    q("Zhaoxin multifunction", 0x1d17, Ids::List(&[0x3038, 0x3104, 0x9083]), K::MultifunctionEndpoint),
    q(
        "NXP",
        0x1957,
        Ids::Ranges(&[
            (0x8d80, 0x8d83),
            (0x8d88, 0x8d8b),
            (0x8d90, 0x8d93),
            (0x8d98, 0x8d9b),
            (0x8da0, 0x8da1),
            (0x8da8, 0x8da9),
            (0x8db0, 0x8db1),
            (0x8db8, 0x8db9),
        ]),
        K::Asserts,
    ),
    q(
        "Zhaoxin PCIe port",
        0x1d17,
        Ids::Any,
        K::PortsListedOrNo(&[(0x0710, 0x071e), (0x0721, 0x0721), (0x0723, 0x0752)]),
    ),
    q(
        "Wangxun NIC",
        0x8088,
        Ids::Any,
        K::ListedOrNo(&[
            (0x0100, 0x010f),
            (0x1001, 0x1001),
            (0x2001, 0x2001),
            (0x5010, 0x5010),
            (0x5025, 0x5025),
            (0x5040, 0x5040),
            (0x5110, 0x5110),
            (0x5125, 0x5125),
            (0x5140, 0x5140),
        ]),
    ),
];

/// What a DMA-alias quirk adds to a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AliasKind {
    /// Function 0 of the device's own slot; nothing for function 0 itself.
    Function0,
    /// Function 1 of the device's own slot; nothing for function 1 itself.
    Function1,
    /// A fixed devfn, only for the given subsystem IDs.
    FixedDevfn {
        /// The aliased devfn.
        devfn: u8,
        /// Subsystems (vendor, device) the quirk applies to.
        subsystems: &'static [(u16, u16)],
    },
    /// A fixed list of devfns.
    Devfns(&'static [u8]),
    /// Functions 0 to 4 of every slot.
    Functions0To4OfAllSlots,
    /// Every devfn on the bus.
    AllDevfns,
    /// A conventional bridge below a PCIe port that uses (secondary bus, 00.0) as requester ID.
    PcieBridgeAlias,
    /// A bridge that is a translation root: the requester-ID walk stops below it.
    TranslationRoot,
    /// Aliases set up by a driver at run time: cannot be predicted from config space.
    RuntimeOnly,
}

/// One row of the DMA-alias quirk table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AliasQuirk {
    /// A short name for explanations.
    pub name: &'static str,
    /// Vendor ID.
    pub vendor: u16,
    /// Device IDs.
    pub devices: Ids,
    /// The class the row also requires, as base class << 8 | subclass (the kernel's class-matched
    /// fixups compare the class code without its programming interface); `None` for any class.
    pub class: Option<u16>,
    /// Behaviour.
    pub kind: AliasKind,
}

const fn a(name: &'static str, vendor: u16, devices: Ids, kind: AliasKind) -> AliasQuirk {
    AliasQuirk { name, vendor, devices, class: None, kind }
}

/// Class "other bridge" (0x0680), which the Switchtec rows require.
const BRIDGE_OTHER: u16 = 0x0680;

/// Microsemi Switchtec switches whose NTB function gets its proxy-ID aliases at boot (Gen3, Gen4, Gen5).
const SWITCHTEC_IDS: &[u16] = &[
    0x8531, 0x8532, 0x8533, 0x8534, 0x8535, 0x8536, 0x8541, 0x8542, 0x8543, 0x8544, 0x8545, 0x8546, 0x8551, 0x8552,
    0x8553, 0x8554, 0x8555, 0x8556, 0x8561, 0x8562, 0x8563, 0x8564, 0x8565, 0x8566, 0x8571, 0x8572, 0x8573, 0x8574,
    0x8575, 0x8576, 0x4000, 0x4084, 0x4068, 0x4052, 0x4036, 0x4028, 0x4100, 0x4184, 0x4168, 0x4152, 0x4136, 0x4128,
    0x4200, 0x4284, 0x4268, 0x4252, 0x4236, 0x4228, 0x4352, 0x4336, 0x4328, 0x4452, 0x4436, 0x4428, 0x4552, 0x4536,
    0x4528, 0x5000, 0x5084, 0x5068, 0x5052, 0x5036, 0x5028, 0x5100, 0x5184, 0x5168, 0x5152, 0x5136, 0x5128, 0x5200,
    0x5284, 0x5268, 0x5252, 0x5236, 0x5228, 0x5300, 0x5384, 0x5368, 0x5352, 0x5336, 0x5328, 0x5400, 0x5484, 0x5468,
    0x5452, 0x5436, 0x5428, 0x5500, 0x5584, 0x5568, 0x5552, 0x5536, 0x5528,
];

/// The DMA-alias quirk table.
pub static ALIAS_QUIRKS: &[AliasQuirk] = &[
    a("Ricoh card reader", 0x1180, Ids::List(&[0xe832, 0xe476]), AliasKind::Function0),
    a("Glenfly", 0x6766, Ids::List(&[0x3d40, 0x3d41]), AliasKind::Function0),
    a(
        "Marvell SATA",
        0x1b4b,
        Ids::List(&[
            0x9120, 0x9123, 0x9125, 0x9128, 0x9130, 0x9170, 0x9172, 0x917a, 0x9182, 0x9183, 0x91a0, 0x9215, 0x9220,
            0x9230, 0x9235,
        ]),
        AliasKind::Function1,
    ),
    a("TTI", 0x1103, Ids::List(&[0x0642, 0x0645]), AliasKind::Function1),
    a("JMicron", 0x197b, Ids::List(&[0x2392]), AliasKind::Function1),
    a("Lite-On", 0x1c28, Ids::List(&[0x0122]), AliasKind::Function1),
    a(
        "Adaptec",
        0x9005,
        Ids::List(&[0x0285]),
        AliasKind::FixedDevfn { devfn: 0x08, subsystems: &[(0x9005, 0x02bb), (0x9005, 0x02bc)] },
    ),
    a("ASMedia bridge", 0x1b21, Ids::List(&[0x1080]), AliasKind::PcieBridgeAlias),
    a("Tundra bridge", 0x10e3, Ids::List(&[0x8113]), AliasKind::PcieBridgeAlias),
    a("ITE bridge", 0x1283, Ids::List(&[0x8892, 0x8893]), AliasKind::PcieBridgeAlias),
    a("Intel bridge", 0x8086, Ids::List(&[0x244e]), AliasKind::PcieBridgeAlias),
    a("Intel MIC x200", 0x8086, Ids::List(&[0x2260, 0x2264]), AliasKind::Devfns(&[0x80, 0x88, 0x93])),
    a(
        "Intel VCA",
        0x8086,
        Ids::List(&[0x2954, 0x2955, 0x2956, 0x2958, 0x2959, 0x295a]),
        AliasKind::Functions0To4OfAllSlots,
    ),
    a("PLX NTB", 0x10b5, Ids::List(&[0x87b0, 0x87b1]), AliasKind::AllDevfns),
    a("Broadcom/Cavium translation root", 0x14e4, Ids::List(&[0x9000, 0x9084]), AliasKind::TranslationRoot),
    AliasQuirk {
        name: "Microsemi Switchtec NTB",
        vendor: 0x11f8,
        devices: Ids::List(SWITCHTEC_IDS),
        class: Some(BRIDGE_OTHER),
        kind: AliasKind::RuntimeOnly,
    },
    AliasQuirk {
        name: "Switchtec PCI100x NTB",
        vendor: 0x1055,
        devices: Ids::List(&[0x1001, 0x1002, 0x1003, 0x1004, 0x1005, 0x1006, 0x1008]),
        class: Some(BRIDGE_OTHER),
        kind: AliasKind::RuntimeOnly,
    },
];

/// The first ACS quirk row that matches vendor and device.
pub fn acs_quirks_for(vendor: u16, device: u16) -> impl Iterator<Item = &'static AcsQuirk> {
    ACS_QUIRKS.iter().filter(move |q| q.vendor == vendor && q.devices.matches(device))
}

/// Every DMA-alias quirk row that matches vendor, device and class code (base << 16 | sub << 8 | prog-if).
pub fn alias_quirks_for(vendor: u16, device: u16, class: u32) -> impl Iterator<Item = &'static AliasQuirk> {
    ALIAS_QUIRKS.iter().filter(move |q| {
        q.vendor == vendor && q.devices.matches(device) && q.class.is_none_or(|c| u32::from(c) == class >> 8)
    })
}
