//! The synthetic host: a tree of PCI functions shaped like a large Intel server, generated from a seed.

use iommu_groups::{Device, Pcie, Platform};
use iommu_pci::{acs, AcsCap, AcsState, HeaderKind, PciAddress, PortType};

use crate::rng::Rng;

/// The Intel VMD-style domain: wider than 16 bits, below the VMD endpoint at 0000:00:05.5.
pub const VMD_DOMAIN: u32 = 0x10000;

/// Offset of the ACS extended capability in every generated function that has one (after AER at 0x100).
pub const ACS_OFFSET: u16 = 0x148;

/// At most this many ports are named by address in `pci=disable_acs_redir=` (the x86 command line is
/// limited to 2048 bytes).
const MAX_REDIR_BY_ADDRESS: usize = 24;

/// What a function is in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A root-complex integrated endpoint on a root bus (host bridge registers, CBDMA, VMD, ...).
    Integrated,
    /// A PCIe root port.
    RootPort,
    /// A switch upstream port.
    UpstreamPort,
    /// A switch downstream port.
    DownstreamPort,
    /// A PCIe-to-PCI bridge.
    PcieToPciBridge,
    /// A PCIe endpoint (or SR-IOV physical function).
    Endpoint,
    /// An SR-IOV virtual function.
    VirtualFunction,
    /// A conventional PCI function.
    Conventional,
    /// A conventional PCI-to-PCI bridge.
    ConventionalBridge,
}

/// The ACS capability of a function, as a running kernel shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AcsKind {
    /// Implements SV TB RR CR UF; the kernel enabled SV RR CR UF. Isolates.
    Full,
    /// Implements only SV RR CR (no UF, no TB), all enabled: unimplemented flags count as hard-wired on, so
    /// it isolates.
    Partial,
    /// Implements SV TB RR CR UF, but RR and CR were cleared by `pci=disable_acs_redir=`: does not isolate.
    RedirDisabled,
    /// A multifunction endpoint's capability: implements RR CR, both enabled.
    Endpoint,
}

impl AcsKind {
    /// (capability, control) registers.
    pub fn registers(self) -> (u16, u16) {
        let all = acs::SV | acs::TB | acs::RR | acs::CR | acs::UF;
        match self {
            AcsKind::Full => (all, acs::SV | acs::RR | acs::CR | acs::UF),
            AcsKind::Partial => (acs::SV | acs::RR | acs::CR, acs::SV | acs::RR | acs::CR),
            AcsKind::RedirDisabled => (all, acs::SV | acs::UF),
            AcsKind::Endpoint => (acs::RR | acs::CR, acs::RR | acs::CR),
        }
    }
}

/// SR-IOV capability contents of a physical function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sriov {
    /// TotalVFs.
    pub total: u16,
    /// NumVFs (enabled).
    pub num: u16,
    /// First VF offset.
    pub offset: u16,
    /// VF stride.
    pub stride: u16,
    /// VF device ID.
    pub vf_device: u16,
}

/// One generated PCI function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Address.
    pub address: PciAddress,
    /// Upstream bridge (`None` on a root bus).
    pub parent: Option<PciAddress>,
    /// Vendor ID (the kernel's view: a virtual function's is its physical function's).
    pub vendor: u16,
    /// Device ID (the kernel's view).
    pub device: u16,
    /// Subsystem vendor and device.
    pub subsystem: (u16, u16),
    /// Class code.
    pub class: u32,
    /// Revision.
    pub revision: u8,
    /// What it is.
    pub role: Role,
    /// Multifunction bit in the header.
    pub multifunction: bool,
    /// Bridges: primary, secondary, subordinate bus.
    pub bus_numbers: Option<(u8, u8, u8)>,
    /// ACS capability, if any.
    pub acs: Option<AcsKind>,
    /// SR-IOV capability, if any.
    pub sriov: Option<Sriov>,
    /// For a virtual function: its physical function.
    pub physfn: Option<PciAddress>,
    /// Bound driver.
    pub driver: Option<&'static str>,
    /// NUMA node.
    pub numa_node: i32,
    /// Legacy interrupt line as the kernel reports it.
    pub irq: u16,
    /// MSI-X table size (0: no MSI-X capability).
    pub msix: u16,
    /// Owns a network interface.
    pub net: bool,
    /// Endpoints: a 64-bit prefetchable BAR 0 (start, size) and a 32-bit BAR 2 (start, size).
    pub bars: Option<((u64, u64), (u32, u32))>,
    /// Bridges: 32-bit memory window and 64-bit prefetchable window (start, end inclusive).
    pub windows: Option<((u32, u32), (u64, u64))>,
    /// Device serial number (endpoints with the DSN capability).
    pub serial: u64,
    /// Physical slot number (ports with a slot).
    pub slot: Option<u16>,
}

impl Function {
    /// The PCIe port type as written in the capability (`None`: conventional PCI).
    pub fn port_type(&self) -> Option<PortType> {
        Some(match self.role {
            Role::Integrated => PortType::RcIntegratedEndpoint,
            Role::RootPort => PortType::RootPort,
            Role::UpstreamPort => PortType::UpstreamPort,
            Role::DownstreamPort => PortType::DownstreamPort,
            Role::PcieToPciBridge => PortType::PcieToPciBridge,
            Role::Endpoint | Role::VirtualFunction => PortType::Endpoint,
            Role::Conventional | Role::ConventionalBridge => return None,
        })
    }

    /// Whether the header is type 1.
    pub fn is_bridge(&self) -> bool {
        self.bus_numbers.is_some()
    }

    /// The grouping model of this function, as the kernel sees it.
    pub fn device(&self) -> Device {
        let pcie = match self.port_type() {
            Some(p) => Pcie::Yes(p),
            None => Pcie::No,
        };
        let acs = match (pcie, self.acs) {
            (Pcie::Yes(_), Some(k)) => {
                let (capability, control) = k.registers();
                AcsState::Present(AcsCap { offset: ACS_OFFSET, capability, control, dword8_low: 0 })
            }
            _ => AcsState::Absent,
        };
        Device {
            address: self.address,
            parent: self.parent,
            vendor: self.vendor,
            device: self.device,
            subsystem: (!self.is_bridge()).then_some(self.subsystem),
            class: self.class,
            header: if self.is_bridge() { HeaderKind::Bridge } else { HeaderKind::Normal },
            multifunction: self.multifunction,
            is_virtfn: self.role == Role::VirtualFunction,
            pcie,
            acs,
        }
    }
}

/// A generated host.
#[derive(Clone, Debug)]
pub struct Host {
    /// Every function, parents before children (depth-first scan order of generation).
    pub functions: Vec<Function>,
    /// The VMD endpoint whose child domain is [`VMD_DOMAIN`], if the host has one.
    pub vmd: Option<PciAddress>,
    /// PCI domains in use, in generation order.
    pub domains: Vec<u32>,
    /// `pci=disable_acs_redir=` entries (addresses or `pci:vvvv:dddd`), explaining [`AcsKind::RedirDisabled`].
    pub acs_redir_disabled: Vec<String>,
}

impl Host {
    /// The grouping model of every function.
    pub fn devices(&self) -> Vec<Device> {
        self.functions.iter().map(Function::device).collect()
    }

    /// The platform the tree's groups were computed for: control registers as a running kernel shows them
    /// (the kernel's own enabling is already in them, and `pci=disable_acs_redir` already took effect).
    pub fn platform(&self) -> Platform {
        Platform { kernel_enables_acs: false, ..Platform::default() }
    }

    /// The kernel command line such a host would have booted with.
    pub fn cmdline(&self) -> String {
        let mut s = String::from("BOOT_IMAGE=/boot/vmlinuz-6.12.48+deb13-amd64 root=UUID=5e0c1f4a-8d2b-4c7e-9a51-3f6b2d9e0c11 ro quiet intel_iommu=on");
        if !self.acs_redir_disabled.is_empty() {
            s.push_str(" pci=disable_acs_redir=");
            s.push_str(&self.acs_redir_disabled.join(";"));
        }
        s
    }

    /// The IOMMU unit serving a domain (one DMAR unit per segment; the VMD domain uses its endpoint's).
    pub fn iommu_unit(&self, domain: u32) -> String {
        let d = if domain == VMD_DOMAIN { 0 } else { domain };
        let i = self.domains.iter().filter(|&&x| x != VMD_DOMAIN).position(|&x| x == d).unwrap_or(0);
        format!("dmar{i}")
    }
}

/// The grouping model of a generated host of `functions` functions: what item-3 style benchmarks feed to
/// [`iommu_groups::Topology::new`].
pub fn model_devices(functions: usize, seed: u64) -> Vec<Device> {
    generate(functions, seed).devices()
}

/// An endpoint model from pci.ids.
struct Ep {
    vendor: u16,
    /// Per function (cycled): device ID, class, driver.
    fns: &'static [(u16, u32, &'static str)],
    count: (u64, u64),
    subsystem: (u16, u16),
    /// VF device ID, TotalVFs, VF driver.
    vf: Option<(u16, u16, &'static str)>,
    /// Chance (percent) that a multifunction instance has an ACS capability.
    acs: u64,
    msix: u16,
    net: bool,
    bar_mib: u64,
    revision: u8,
}

const NET: u32 = 0x020000;
const NVME: u32 = 0x010802;

const SRIOV_NICS: &[Ep] = &[
    Ep {
        vendor: 0x8086,
        fns: &[(0x1572, NET, "i40e")],
        count: (2, 4),
        subsystem: (0x8086, 0x0007),
        vf: Some((0x154c, 64, "iavf")),
        acs: 80,
        msix: 129,
        net: true,
        bar_mib: 8,
        revision: 0x02,
    },
    Ep {
        vendor: 0x8086,
        fns: &[(0x1592, NET, "ice")],
        count: (2, 2),
        subsystem: (0x8086, 0x0002),
        vf: Some((0x1889, 128, "iavf")),
        acs: 80,
        msix: 1024,
        net: true,
        bar_mib: 32,
        revision: 0x02,
    },
    Ep {
        vendor: 0x8086,
        fns: &[(0x10fb, NET, "ixgbe")],
        count: (2, 2),
        subsystem: (0x8086, 0x000c),
        vf: Some((0x10ed, 63, "ixgbevf")),
        acs: 0,
        msix: 64,
        net: true,
        bar_mib: 1,
        revision: 0x01,
    },
    Ep {
        vendor: 0x8086,
        fns: &[(0x1521, NET, "igb")],
        count: (2, 4),
        subsystem: (0x8086, 0x0001),
        vf: Some((0x1520, 8, "igbvf")),
        acs: 0,
        msix: 10,
        net: true,
        bar_mib: 1,
        revision: 0x01,
    },
    Ep {
        vendor: 0x15b3,
        fns: &[(0x1017, NET, "mlx5_core")],
        count: (2, 2),
        subsystem: (0x15b3, 0x0007),
        vf: Some((0x1018, 127, "mlx5_core")),
        acs: 100,
        msix: 64,
        net: true,
        bar_mib: 32,
        revision: 0x00,
    },
    Ep {
        vendor: 0x14e4,
        fns: &[(0x16d7, NET, "bnxt_en")],
        count: (2, 8),
        subsystem: (0x14e4, 0x4140),
        vf: Some((0x16dc, 128, "bnxt_en")),
        acs: 0,
        msix: 74,
        net: true,
        bar_mib: 1,
        revision: 0x01,
    },
];

const NVMES: &[Ep] = &[
    Ep {
        vendor: 0x8086,
        fns: &[(0x0a54, NVME, "nvme")],
        count: (1, 1),
        subsystem: (0x8086, 0x4308),
        vf: None,
        acs: 0,
        msix: 129,
        net: false,
        bar_mib: 1,
        revision: 0x00,
    },
    Ep {
        vendor: 0x144d,
        fns: &[(0xa824, NVME, "nvme")],
        count: (1, 1),
        subsystem: (0x144d, 0xa80a),
        vf: None,
        acs: 0,
        msix: 66,
        net: false,
        bar_mib: 1,
        revision: 0x00,
    },
    Ep {
        vendor: 0x144d,
        fns: &[(0xa808, NVME, "nvme")],
        count: (1, 1),
        subsystem: (0x144d, 0xa801),
        vf: None,
        acs: 0,
        msix: 33,
        net: false,
        bar_mib: 1,
        revision: 0x00,
    },
];

const OTHER_EPS: &[Ep] = &[
    Ep {
        vendor: 0x10de,
        fns: &[(0x1eb8, 0x030200, "nvidia")],
        count: (1, 1),
        subsystem: (0x10de, 0x12a2),
        vf: None,
        acs: 0,
        msix: 6,
        net: false,
        bar_mib: 256,
        revision: 0xa1,
    },
    Ep {
        vendor: 0x10de,
        fns: &[(0x2204, 0x030000, "nvidia"), (0x1aef, 0x040300, "snd_hda_intel")],
        count: (2, 2),
        subsystem: (0x10de, 0x147d),
        vf: None,
        acs: 0,
        msix: 0,
        net: false,
        bar_mib: 256,
        revision: 0xa1,
    },
    Ep {
        vendor: 0x1002,
        fns: &[(0x73bf, 0x030000, "amdgpu"), (0xab28, 0x040300, "snd_hda_intel")],
        count: (2, 2),
        subsystem: (0x1002, 0x0e3a),
        vf: None,
        acs: 0,
        msix: 0,
        net: false,
        bar_mib: 256,
        revision: 0xc1,
    },
    Ep {
        vendor: 0x1000,
        fns: &[(0x0097, 0x010700, "mpt3sas")],
        count: (1, 1),
        subsystem: (0x1000, 0x30e0),
        vf: None,
        acs: 0,
        msix: 96,
        net: false,
        bar_mib: 1,
        revision: 0x02,
    },
    Ep {
        vendor: 0x14e4,
        fns: &[(0x1657, NET, "tg3")],
        count: (2, 4),
        subsystem: (0x14e4, 0x1657),
        vf: None,
        acs: 0,
        msix: 17,
        net: true,
        bar_mib: 1,
        revision: 0x01,
    },
    Ep {
        vendor: 0x8086,
        fns: &[(0x1521, NET, "igb")],
        count: (2, 4),
        subsystem: (0x8086, 0x0001),
        vf: None,
        acs: 0,
        msix: 10,
        net: true,
        bar_mib: 1,
        revision: 0x01,
    },
];

/// A conventional PCI device: vendor, device, class, subsystem, driver, functions.
type Conv = (u16, u16, u32, (u16, u16), &'static str, u8);

/// Conventional PCI devices.
const CONVENTIONAL: &[Conv] = &[
    (0x8086, 0x1076, 0x020000, (0x8086, 0x1076), "e1000", 1),
    (0x1000, 0x0030, 0x010000, (0x1000, 0x1000), "mptspi", 2),
    (0x13f6, 0x0111, 0x040100, (0x13f6, 0x0111), "snd_cmipci", 1),
    (0x1106, 0x3044, 0x0c0010, (0x1106, 0x3044), "firewire_ohci", 1),
    (0x102b, 0x0532, 0x030000, (0x15d9, 0x0624), "mgag200", 1),
];

/// Switches: vendor, device, downstream ports (min, max).
const SWITCHES: &[(u16, u16, u64, u64)] = &[(0x10b5, 0x8747, 4, 4), (0x10b5, 0x8724, 4, 5), (0x1000, 0xc010, 4, 8)];

/// A switch model whose downstream ports have redirect disabled by ID on the command line.
const REDIR_DISABLED_SWITCH: (u16, u16) = (0x1000, 0xc010);

/// PCIe-to-PCI bridges: vendor, device.
const PCIE_TO_PCI: &[(u16, u16)] = &[(0x104c, 0x8240), (0x12d8, 0xe111), (0x10b5, 0x8112)];

const BRIDGE_CLASS: u32 = 0x060400;

struct Gen {
    rng: Rng,
    funcs: Vec<Function>,
    /// Functions still to generate for the whole host.
    left: usize,
    /// Functions still allowed in the current domain.
    room: usize,
    domain: u32,
    numa: i32,
    next_bus: u32,
    /// The root bus being filled (Sky Lake-E style: one per IIO stack, all in one domain).
    root_bus: u32,
    /// Next free slot on it.
    root_slot: u8,
    /// Current multifunction root-port slot: (slot, next function, functions it will have).
    rp_slot: Option<(u8, u8, u8)>,
    mmio64: u64,
    mmio32: u32,
    irq: u16,
    serial: u64,
    vmd: Option<PciAddress>,
    redir: Vec<String>,
}

/// Generates a host of exactly `functions` PCI functions, deterministically from `seed`.
pub fn generate(functions: usize, seed: u64) -> Host {
    let mut g = Gen {
        rng: Rng::new(seed),
        funcs: Vec::with_capacity(functions),
        left: functions,
        room: 0,
        domain: 0,
        numa: 0,
        next_bus: 1,
        root_bus: 0,
        root_slot: 1,
        rp_slot: None,
        mmio64: 0,
        mmio32: 0,
        irq: 16,
        serial: 0x0011_2233_4455_0000 ^ seed,
        vmd: None,
        redir: Vec::new(),
    };
    let mut domains = Vec::new();
    // Shares of the first three domains; whatever does not fit (256 buses per domain) spills over.
    let plan = [(0u32, 40usize), (1, 35), (VMD_DOMAIN, 25)];
    let total = functions;
    for (domain, percent) in plan {
        if g.left == 0 {
            break;
        }
        if domain == VMD_DOMAIN && g.vmd.is_none() {
            continue;
        }
        let share = if domain == VMD_DOMAIN { g.left } else { (total * percent / 100).max(1).min(g.left) };
        g.fill_domain(domain, share);
        domains.push(domain);
    }
    let mut next = 2u32;
    while g.left > 0 {
        g.fill_domain(next, g.left);
        domains.push(next);
        next += 1;
    }
    if g.funcs.iter().any(|f| f.role == Role::DownstreamPort && (f.vendor, f.device) == REDIR_DISABLED_SWITCH) {
        g.redir.push(format!("pci:{:04x}:{:04x}", REDIR_DISABLED_SWITCH.0, REDIR_DISABLED_SWITCH.1));
    }
    Host { functions: g.funcs, vmd: g.vmd, domains, acs_redir_disabled: g.redir }
}

fn addr(domain: u32, bus: u32, device: u8, function: u8) -> PciAddress {
    PciAddress { domain, bus: bus as u8, device, function }
}

impl Gen {
    fn push(&mut self, f: Function) -> usize {
        debug_assert!(self.room > 0 && self.left > 0);
        self.room -= 1;
        self.left -= 1;
        self.funcs.push(f);
        self.funcs.len() - 1
    }

    fn base(&mut self, address: PciAddress, parent: Option<PciAddress>, role: Role) -> Function {
        self.irq = if self.irq >= 200 { 16 } else { self.irq + 1 };
        Function {
            address,
            parent,
            vendor: 0x8086,
            device: 0,
            subsystem: (0x8086, 0x0000),
            class: 0,
            revision: 0x04,
            role,
            multifunction: false,
            bus_numbers: None,
            acs: None,
            sriov: None,
            physfn: None,
            driver: None,
            numa_node: self.numa,
            irq: self.irq,
            msix: 0,
            net: false,
            bars: None,
            windows: None,
            serial: 0,
            slot: None,
        }
    }

    /// Allocates endpoint BARs: a 64-bit prefetchable one of `mib` MiB and a 16 KiB 32-bit one.
    fn bars(&mut self, mib: u64) -> ((u64, u64), (u32, u32)) {
        let size = mib << 20;
        self.mmio64 = self.mmio64.div_ceil(size) * size;
        let b0 = (self.mmio64, size);
        self.mmio64 += size;
        let b2 = (self.mmio32, 0x4000);
        self.mmio32 += 0x4000;
        (b0, b2)
    }

    fn fill_domain(&mut self, domain: u32, share: usize) {
        self.domain = domain;
        self.numa = if domain == VMD_DOMAIN { 0 } else { (domain % 2) as i32 };
        self.room = share.min(self.left);
        self.next_bus = 1;
        self.root_bus = 0;
        self.root_slot = 1;
        self.rp_slot = None;
        let index = u64::from(domain.min(0xff));
        self.mmio64 = 0x3800_0000_0000 + (index << 40);
        self.mmio32 = 0x9000_0000u32.wrapping_add((index as u32 & 0xf) << 24);
        if domain == VMD_DOMAIN {
            // VMD domains have only root ports on their root bus, which the VMD endpoint owns.
            self.mmio32 = 0xe000_0000;
            self.root_slot = 0;
        } else {
            self.root_bus_devices();
        }
        while self.room > 0 {
            if !self.unit() {
                break;
            }
        }
    }

    /// Host bridge registers, CBDMA, and (domain 0) the VMD block.
    fn root_bus_devices(&mut self) {
        let d = self.domain;
        let mut hb = self.base(addr(d, 0, 0, 0), None, Role::Integrated);
        hb.device = 0x2020;
        hb.class = 0x060000;
        hb.subsystem = (0x8086, 0x0000);
        self.push(hb);
        if d == 0 && self.room >= 12 {
            // Sky Lake-E: MM/Vt-d 05.0, RAS 05.2, IOAPIC 05.4, VMD 05.5.
            for (f, dev, class, drv) in [
                (0u8, 0x2024u16, 0x088000u32, None),
                (2, 0x2025, 0x088000, None),
                (4, 0x2026, 0x080020, None),
                (5, 0x201d, 0x010400, Some("vmd")),
            ] {
                let mut x = self.base(addr(d, 0, 5, f), None, Role::Integrated);
                x.device = dev;
                x.class = class;
                x.multifunction = true;
                x.driver = drv;
                if dev == 0x201d {
                    x.bars = Some(self.bars(32));
                    x.msix = 32;
                    self.vmd = Some(x.address);
                }
                self.push(x);
            }
        }
        if self.room >= 16 {
            // CBDMA: 8 integrated functions in slot 4.
            for f in 0..8u8 {
                let mut x = self.base(addr(d, 0, 4, f), None, Role::Integrated);
                x.device = 0x2021;
                x.class = 0x088000;
                x.multifunction = true;
                x.driver = Some("ioatdma");
                x.bars = Some(self.bars(1));
                x.msix = 1;
                self.push(x);
            }
        }
    }

    /// Adds one integrated endpoint on the root bus (to use up a last function); false if no slot is free.
    fn integrated_filler(&mut self) -> bool {
        if self.domain == VMD_DOMAIN || self.room == 0 {
            return false;
        }
        let Some(slot) = self.free_root_slot() else { return false };
        let mut x = self.base(addr(self.domain, self.root_bus, slot, 0), None, Role::Integrated);
        x.device = *self.rng.pick(&[0x2014, 0x2015, 0x2016, 0x2018]);
        x.class = 0x088000;
        self.push(x);
        true
    }

    fn free_root_slot(&mut self) -> Option<u8> {
        loop {
            while self.root_slot < 32 {
                let s = self.root_slot;
                self.root_slot += 1;
                // 4 and 5 hold CBDMA and the VT-d/RAS/IOAPIC (and VMD) block.
                if self.domain == VMD_DOMAIN || !(s == 4 || s == 5) {
                    return Some(s);
                }
            }
            // The VMD domain has one root bus; elsewhere open the next stack's root bus.
            if self.domain == VMD_DOMAIN || self.buses_left() < 8 || self.room == 0 {
                return None;
            }
            self.root_bus = self.take_bus();
            self.root_slot = 0;
            self.rp_slot = None;
            self.stack_devices();
        }
    }

    /// VT-d, RAS and IOAPIC registers at 05.0, 05.2 and 05.4 of a stack's root bus.
    fn stack_devices(&mut self) {
        for (f, dev, class) in [(0u8, 0x2024u16, 0x088000u32), (2, 0x2025, 0x088000), (4, 0x2026, 0x080020)] {
            if self.room < 4 {
                return;
            }
            let mut x = self.base(addr(self.domain, self.root_bus, 5, f), None, Role::Integrated);
            x.device = dev;
            x.class = class;
            x.multifunction = true;
            self.push(x);
        }
    }

    /// Address of a new root port, or `None` when the root bus is full.
    fn root_port_address(&mut self) -> Option<(PciAddress, bool)> {
        if let Some((slot, f, n)) = self.rp_slot {
            if f < n {
                self.rp_slot = Some((slot, f + 1, n));
                return Some((addr(self.domain, self.root_bus, slot, f), n > 1));
            }
        }
        let slot = self.free_root_slot()?;
        // Like Sky Lake-E ports A-D: some slots carry a multifunction group of root ports.
        let n = if self.rng.chance(30) { 4 } else { 1 };
        self.rp_slot = Some((slot, 1, n));
        Some((addr(self.domain, self.root_bus, slot, 0), n > 1))
    }

    fn port_acs(&mut self, weights: [u64; 4]) -> Option<AcsKind> {
        match self.rng.weighted(&weights) {
            0 => Some(AcsKind::Full),
            1 => Some(AcsKind::Partial),
            2 => Some(AcsKind::RedirDisabled),
            _ => None,
        }
    }

    fn bridge(&mut self, a: PciAddress, parent: Option<PciAddress>, role: Role, secondary: u32) -> Function {
        let mut b = self.base(a, parent, role);
        b.class = BRIDGE_CLASS;
        b.bus_numbers = Some((a.bus, secondary as u8, secondary as u8));
        b.driver = matches!(role, Role::RootPort | Role::UpstreamPort | Role::DownstreamPort).then_some("pcieport");
        b
    }

    /// Opens a bridge window on the MMIO allocators; `close_bridge` sets subordinate bus and windows.
    fn open(&self) -> (u64, u32) {
        (self.mmio64, self.mmio32)
    }

    fn close_bridge(&mut self, i: usize, (m64, m32): (u64, u32)) {
        // Round the allocators so sibling windows do not overlap.
        self.mmio64 = self.mmio64.div_ceil(1 << 20) << 20;
        self.mmio32 = self.mmio32.div_ceil(1 << 20) << 20;
        let f = &mut self.funcs[i];
        if let Some((p, s, _)) = f.bus_numbers {
            f.bus_numbers = Some((p, s, (self.next_bus - 1) as u8));
        }
        let w32 = if self.mmio32 > m32 { (m32, self.mmio32 - 1) } else { (0xfff0_0000, 0) };
        let w64 = if self.mmio64 > m64 { (m64, self.mmio64 - 1) } else { (0xfff0_0000, 0) };
        f.windows = Some((w32, w64));
    }

    fn take_bus(&mut self) -> u32 {
        let b = self.next_bus;
        self.next_bus += 1;
        b
    }

    fn buses_left(&self) -> u32 {
        256u32.saturating_sub(self.next_bus)
    }

    /// Adds one unit below a new root port. False when the domain is full.
    fn unit(&mut self) -> bool {
        if self.room < 2 || self.buses_left() < 1 {
            return self.integrated_filler();
        }
        let Some((rp_addr, rp_mf)) = self.root_port_address() else { return false };
        let vmd = self.domain == VMD_DOMAIN;
        // Kinds: 0 single endpoint, 1 multifunction endpoint, 2 switch, 3 SR-IOV NIC, 4 PCIe-to-PCI.
        let kind =
            if vmd { [0, 0, 2][self.rng.weighted(&[6, 0, 4])] } else { self.rng.weighted(&[30, 25, 20, 15, 10]) };
        let need_buses = match kind {
            2 => 6,
            4 => 3,
            _ => 1,
        };
        let kind = if self.buses_left() < need_buses || self.room < 4 { 0 } else { kind };
        let mut acs = self.port_acs([55, 10, 10, 25]);
        if acs == Some(AcsKind::RedirDisabled) {
            if self.redir.len() < MAX_REDIR_BY_ADDRESS {
                self.redir.push(rp_addr.to_string());
            } else {
                acs = Some(AcsKind::Full);
            }
        }
        let sec = self.take_bus();
        let mut rp = self.bridge(rp_addr, None, Role::RootPort, sec);
        rp.device = 0x2030 + u16::from(rp_addr.function % 4);
        rp.multifunction = rp_mf;
        rp.acs = acs;
        rp.slot = Some(u16::from(rp_addr.device) * 8 + u16::from(rp_addr.function));
        rp.irq = 0;
        let w = self.open();
        let i = self.push(rp);
        match kind {
            0 => {
                let cat = if vmd || self.rng.chance(60) { NVMES } else { OTHER_EPS };
                let ep = self.rng.pick(cat);
                let ep = Ep { count: (1, 1), ..*ep };
                self.endpoint(&ep, sec, rp_addr);
            }
            1 => {
                let cat = if self.rng.chance(50) { SRIOV_NICS } else { OTHER_EPS };
                let ep = self.rng.pick(cat);
                let ep = Ep { vf: None, ..*ep };
                self.endpoint(&ep, sec, rp_addr);
            }
            2 => self.switch(sec, rp_addr),
            3 => {
                let ep = self.rng.pick(SRIOV_NICS);
                self.endpoint(ep, sec, rp_addr);
            }
            _ => self.pcie_to_pci(sec, rp_addr),
        }
        self.close_bridge(i, w);
        true
    }

    /// An endpoint (1 to 8 functions, maybe with VFs) at `bus:00.x`.
    fn endpoint(&mut self, ep: &Ep, bus: u32, parent: PciAddress) {
        if self.room == 0 {
            return;
        }
        let n = (self.rng.range(ep.count.0, ep.count.1) as usize).min(self.room).max(1) as u8;
        let mf = n > 1;
        let with_acs = mf && self.rng.chance(ep.acs);
        // VFs: a few per PF usually, sometimes many; all on this bus (ARI), devfns 16 and up.
        let mut vfs_per_pf = 0u16;
        if let Some((_, total, _)) = ep.vf {
            let want = *self.rng.pick(&[4u16, 4, 8, 8, 16, 32]);
            let fit = ((240 / u16::from(n)).min(total)).min(want);
            let spare = self.room.saturating_sub(usize::from(n)) / usize::from(n);
            vfs_per_pf = fit.min(spare as u16);
        }
        let mut pfs = Vec::new();
        for f in 0..n {
            let (dev, class, drv) = ep.fns[usize::from(f) % ep.fns.len()];
            let mut x = self.base(addr(self.domain, bus, 0, f), Some(parent), Role::Endpoint);
            x.vendor = ep.vendor;
            x.device = dev;
            x.class = class;
            x.subsystem = ep.subsystem;
            x.revision = ep.revision;
            x.multifunction = mf;
            x.acs = with_acs.then_some(AcsKind::Endpoint);
            x.driver = Some(if self.rng.chance(8) { "vfio-pci" } else { drv });
            x.net = ep.net && x.driver != Some("vfio-pci");
            x.msix = ep.msix;
            x.bars = Some(self.bars(ep.bar_mib));
            self.serial += 1;
            x.serial = self.serial;
            if let Some((vf_device, total, _)) = ep.vf {
                let first = 16 + f as u16 * vfs_per_pf;
                x.sriov = Some(Sriov { total, num: vfs_per_pf, offset: first - f as u16, stride: 1, vf_device });
            }
            pfs.push(x.address);
            self.push(x);
        }
        let Some((vf_device, _, vf_drv)) = ep.vf else { return };
        for (k, pf) in pfs.into_iter().enumerate() {
            for v in 0..vfs_per_pf {
                if self.room == 0 {
                    return;
                }
                let devfn = (16 + k as u16 * vfs_per_pf + v) as u8;
                let mut x = self.base(pf.with_devfn(devfn), Some(parent), Role::VirtualFunction);
                x.vendor = ep.vendor;
                x.device = vf_device;
                x.class = NET;
                x.subsystem = ep.subsystem;
                x.revision = ep.revision;
                x.physfn = Some(pf);
                x.irq = 0;
                x.driver = match self.rng.weighted(&[50, 30, 20]) {
                    0 => Some(vf_drv),
                    1 => Some("vfio-pci"),
                    _ => None,
                };
                x.net = x.driver == Some(vf_drv);
                x.msix = 5;
                x.bars = Some(self.bars(1));
                self.push(x);
            }
        }
    }

    /// Upstream port on `bus`, 4 to 8 downstream ports, devices behind most of them.
    fn switch(&mut self, bus: u32, parent: PciAddress) {
        let &(vendor, device, lo, hi) = self.rng.pick(SWITCHES);
        let inner = self.take_bus();
        let mut up = self.bridge(addr(self.domain, bus, 0, 0), Some(parent), Role::UpstreamPort, inner);
        up.vendor = vendor;
        up.device = device;
        up.revision = 0xca;
        let w = self.open();
        let ui = self.push(up);
        let up_addr = self.funcs[ui].address;
        let ports = self.rng.range(lo, hi) as u8;
        let redir_switch = (vendor, device) == REDIR_DISABLED_SWITCH;
        let acs = if redir_switch { Some(AcsKind::RedirDisabled) } else { self.port_acs([70, 10, 0, 20]) };
        let vmd = self.domain == VMD_DOMAIN;
        for p in 0..ports {
            if self.room == 0 || self.buses_left() == 0 {
                break;
            }
            let sec = self.take_bus();
            let da = addr(self.domain, inner, p, 0);
            let mut dp = self.bridge(da, Some(up_addr), Role::DownstreamPort, sec);
            dp.vendor = vendor;
            dp.device = device;
            dp.revision = 0xca;
            dp.acs = acs;
            dp.slot = Some(u16::from(p) + 1);
            dp.irq = 0;
            let dw = self.open();
            let di = self.push(dp);
            // Most downstream ports have a device; a few hot-plug slots are empty.
            if self.rng.chance(85) {
                let ep = if vmd || self.rng.chance(50) {
                    Ep { count: (1, 1), ..*self.rng.pick(NVMES) }
                } else {
                    Ep { vf: None, ..*self.rng.pick(OTHER_EPS) }
                };
                self.endpoint(&ep, sec, da);
            }
            self.close_bridge(di, dw);
        }
        self.close_bridge(ui, w);
    }

    /// A PCIe-to-PCI bridge with conventional devices (and sometimes a conventional bridge) behind it.
    fn pcie_to_pci(&mut self, bus: u32, parent: PciAddress) {
        let &(vendor, device) = self.rng.pick(PCIE_TO_PCI);
        let conv = self.take_bus();
        let mut br = self.bridge(addr(self.domain, bus, 0, 0), Some(parent), Role::PcieToPciBridge, conv);
        br.vendor = vendor;
        br.device = device;
        br.revision = 0x01;
        br.irq = 0;
        let w = self.open();
        let bi = self.push(br);
        let br_addr = self.funcs[bi].address;
        let devices = self.rng.range(1, 4) as u8;
        for s in 0..devices {
            self.conventional(conv, s + 1, br_addr);
        }
        if self.rng.chance(25) && self.room >= 2 && self.buses_left() >= 1 {
            let sub = self.take_bus();
            let mut cb = self.bridge(addr(self.domain, conv, 8, 0), Some(br_addr), Role::ConventionalBridge, sub);
            cb.vendor = 0x1011;
            cb.device = 0x0026;
            cb.revision = 0x05;
            cb.subsystem = (0x1011, 0x0026);
            let cw = self.open();
            let ci = self.push(cb);
            let cb_addr = self.funcs[ci].address;
            self.conventional(sub, 1, cb_addr);
            self.close_bridge(ci, cw);
        }
        self.close_bridge(bi, w);
    }

    fn conventional(&mut self, bus: u32, slot: u8, parent: PciAddress) {
        let &(vendor, device, class, subsystem, drv, fns) = self.rng.pick(CONVENTIONAL);
        for f in 0..fns {
            if self.room == 0 {
                return;
            }
            let mut x = self.base(addr(self.domain, bus, slot, f), Some(parent), Role::Conventional);
            x.vendor = vendor;
            x.device = device;
            x.class = class;
            x.subsystem = subsystem;
            x.revision = 0x05;
            x.multifunction = fns > 1;
            x.driver = Some(drv);
            x.net = class == NET;
            x.bars = Some(self.bars(1));
            self.push(x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu_groups::{predict, RuleSet, Topology};
    use std::collections::HashSet;

    #[test]
    fn exact_function_counts_and_valid_topologies() {
        for n in [1, 2, 3, 5, 17, 100, 650, 3000] {
            let h = generate(n, 3);
            assert_eq!(h.functions.len(), n, "n={n}");
            let addrs: HashSet<PciAddress> = h.functions.iter().map(|f| f.address).collect();
            assert_eq!(addrs.len(), n, "duplicate addresses for n={n}");
            Topology::new(h.devices()).unwrap();
        }
    }

    #[test]
    fn ten_thousand_functions_have_every_shape() {
        let h = generate(10_000, 1);
        let roles: HashSet<Role> = h.functions.iter().map(|f| f.role).collect();
        for r in [
            Role::RootPort,
            Role::UpstreamPort,
            Role::DownstreamPort,
            Role::PcieToPciBridge,
            Role::Endpoint,
            Role::VirtualFunction,
            Role::Conventional,
            Role::ConventionalBridge,
            Role::Integrated,
        ] {
            assert!(roles.contains(&r), "{r:?} missing");
        }
        assert!(h.domains.starts_with(&[0, 1, VMD_DOMAIN]), "{:?}", h.domains);
        let kinds: HashSet<Option<AcsKind>> =
            h.functions.iter().filter(|f| f.role == Role::RootPort).map(|f| f.acs).collect();
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        let t = Topology::new(h.devices()).unwrap();
        let p = predict(&t, &h.platform(), RuleSet::Linux6);
        assert!(p.groups.len() > 1000 && p.groups.len() < 10_000, "{}", p.groups.len());
        assert!(h.cmdline().len() < 2048);
    }

    #[test]
    fn bridges_cover_their_children() {
        let h = generate(2000, 5);
        let by: std::collections::HashMap<PciAddress, &Function> = h.functions.iter().map(|f| (f.address, f)).collect();
        for f in &h.functions {
            if let Some(p) = f.parent {
                let (_, s, sub) = by[&p].bus_numbers.unwrap();
                if f.role == Role::VirtualFunction || f.address.bus == s {
                    assert_eq!(f.address.bus, s, "{} behind {p}", f.address);
                }
                assert!((s..=sub).contains(&f.address.bus), "{} behind {p}", f.address);
            }
        }
    }
}
