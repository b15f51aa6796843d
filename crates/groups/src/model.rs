//! The topology model: PCI functions, their upstream bridges, and the platform facts grouping depends on.

use iommu_pci::{AcsState, ConfigInfo, HeaderKind, PciAddress, PortType};
use serde::{Deserialize, Serialize};

use crate::ivrs::{Ivrs, IvrsFacts};
use crate::vmd::VmdDomain;

/// Whether a function is PCI Express, and of which type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "type")]
pub enum Pcie {
    /// Not readable: only the 64-byte header was visible.
    Unknown,
    /// Conventional PCI.
    No,
    /// PCI Express, with the port type as read from config space.
    Yes(PortType),
}

/// One PCI function as the grouping algorithm sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Its address.
    pub address: PciAddress,
    /// The bridge whose secondary bus this function sits on; `None` on a root bus.
    pub parent: Option<PciAddress>,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Subsystem vendor and device, if the header has them.
    pub subsystem: Option<(u16, u16)>,
    /// Class code (base << 16 | sub << 8 | prog-if).
    pub class: u32,
    /// Header layout.
    pub header: HeaderKind,
    /// Multifunction bit as read from the header.
    pub multifunction: bool,
    /// An SR-IOV virtual function (never treated as multifunction).
    pub is_virtfn: bool,
    /// PCI Express type.
    pub pcie: Pcie,
    /// ACS capability state.
    pub acs: AcsState,
}

impl Device {
    /// Builds a device from decoded config space.
    pub fn from_config(address: PciAddress, parent: Option<PciAddress>, cfg: &ConfigInfo, is_virtfn: bool) -> Self {
        let pcie = match (cfg.pcie, cfg.is_pcie()) {
            (Some(p), _) => Pcie::Yes(p.port_type),
            (None, None) => Pcie::Unknown,
            (None, Some(_)) => Pcie::No,
        };
        Self {
            address,
            parent,
            vendor: cfg.vendor_id,
            device: cfg.device_id,
            subsystem: cfg.subsystem,
            class: cfg.class,
            header: cfg.header,
            multifunction: cfg.multifunction,
            is_virtfn,
            pcie,
            acs: cfg.acs,
        }
    }

    /// Whether this function is a bridge (type 1 or CardBus header).
    pub fn is_bridge(&self) -> bool {
        matches!(self.header, HeaderKind::Bridge | HeaderKind::CardBus)
    }
}

/// Names devices the way the kernel's `pci=` options do (pci.c, `pci_dev_str_match`): an address, a path
/// of `device.function` steps below an address (as `lspci -t` shows it), or `pci:VVVV:DDDD` optionally
/// with `:SSSS:SSSS` subsystem IDs, where a field of 0 matches anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceSpec {
    /// One function by address.
    Address(PciAddress),
    /// Every function with these IDs; a 0 field matches any value, and no subsystem means `0:0`.
    Id {
        /// Vendor ID.
        vendor: u16,
        /// Device ID.
        device: u16,
        /// Subsystem vendor and device, when given.
        subsystem: Option<(u16, u16)>,
    },
    /// `[domain:]bus:dev.fn/dev.fn/...`: the function reached from the bridge at `start` by the steps,
    /// each step a (device, function) on the secondary bus of the one before. Robust against bus
    /// renumbering, which is why the kernel offers it.
    Path {
        /// The function at the top of the path.
        start: PciAddress,
        /// (device, function) steps down from it; the last one is the function named.
        steps: Vec<(u8, u8)>,
    },
}

/// One to four hexadecimal digits.
fn hex16(s: &str) -> Option<u16> {
    (!s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u16::from_str_radix(s, 16).ok())
        .flatten()
}

impl DeviceSpec {
    /// Parses one specifier; `None` for text the kernel would not read as one.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Some(ids) = s.strip_prefix("pci:") {
            let v: Vec<u16> = ids.split(':').map(hex16).collect::<Option<_>>()?;
            return match v.as_slice() {
                [vendor, device] => Some(Self::Id { vendor: *vendor, device: *device, subsystem: None }),
                [vendor, device, sv, sd] => {
                    Some(Self::Id { vendor: *vendor, device: *device, subsystem: Some((*sv, *sd)) })
                }
                _ => None,
            };
        }
        if let Some((top, rest)) = s.split_once('/') {
            let start = top.parse().ok()?;
            let step = |p: &str| {
                let (d, f) = p.split_once('.')?;
                let ok = |x: &str, max: u8| {
                    (!x.is_empty() && x.len() <= 2 && x.bytes().all(|b| b.is_ascii_hexdigit()))
                        .then(|| u8::from_str_radix(x, 16).ok().filter(|v| *v <= max))
                        .flatten()
                };
                Some((ok(d, 0x1f)?, ok(f, 7)?))
            };
            let steps = rest.split('/').map(step).collect::<Option<Vec<_>>>()?;
            return Some(Self::Path { start, steps });
        }
        s.parse().ok().map(Self::Address)
    }

    /// Whether it names the function at `addr` of `t` (a path needs the tree to be followed).
    pub fn names(&self, t: &Topology, addr: PciAddress) -> bool {
        t.index_of(addr).is_some_and(|i| self.names_at(t, i))
    }

    /// Whether it names device `i` of `t`, compared as the kernel compares: a path is checked from its
    /// last step up through the upstream bridges, then its start address.
    pub(crate) fn names_at(&self, t: &Topology, i: usize) -> bool {
        let d = &t.devices[i];
        match self {
            Self::Address(a) => *a == d.address,
            Self::Id { vendor, device, subsystem } => {
                let (sv, sd) = subsystem.unwrap_or((0, 0));
                let (dsv, dsd) = d.subsystem.unwrap_or((0, 0));
                let field = |want: u16, have: u16| want == 0 || want == have;
                field(*vendor, d.vendor) && field(*device, d.device) && field(sv, dsv) && field(sd, dsd)
            }
            Self::Path { start, steps } => {
                let mut cur = i;
                for &(dev, func) in steps.iter().rev() {
                    let a = t.devices[cur].address;
                    if (a.device, a.function) != (dev, func) {
                        return false;
                    }
                    match t.parent[cur] {
                        Some(p) => cur = p as usize,
                        None => return false,
                    }
                }
                t.devices[cur].address == *start
            }
        }
    }

    /// The devices named by the last `pci=disable_acs_redir=...` on a kernel command line, up to the first
    /// entry the kernel cannot read.
    pub fn disable_acs_redir_from_cmdline(cmdline: &str) -> Vec<Self> {
        let mut p = Platform::default();
        p.apply_cmdline(cmdline);
        p.acs_redir_disabled
    }

    /// Parses a `;`-separated device list the way the kernel walks it: entries in order until the first
    /// one it cannot read, which ends the list (the entries before it stay). Returns the entries and,
    /// when the list ended early, the entry that ended it.
    pub fn parse_list(list: &str) -> (Vec<Self>, Option<String>) {
        let mut out = Vec::new();
        for e in list_entries(list) {
            match Self::parse(e) {
                Some(s) => out.push(s),
                None => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }
}

/// The entries of a `;`-separated kernel list: one trailing `;` ends the list quietly, while an empty
/// entry anywhere else is an entry like any other (which no parser accepts, so it ends the list).
fn list_entries(list: &str) -> impl Iterator<Item = &str> {
    list.strip_suffix(';').unwrap_or(list).split(';').filter(move |_| !list.is_empty())
}

/// Platform facts that change how quirks answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// An AMD IOMMU (ACPI IVRS table) is present. Enables the AMD southbridge ACS quirk.
    pub amd_ivrs: bool,
    /// The RCBA enable bit (bit 0 of the dword at config offset 0xF0) of functions at device 1f.0, where
    /// config space was read that far. Intel's PCH root-port ACS quirk reads it from the LPC bridge at
    /// 1f.0 on the root port's bus and counts the ports as isolated only when it is set
    /// (quirks.c, `pci_quirk_enable_intel_lpc_acs`). A 1f.0 function missing here makes the quirk's answer
    /// unknown; a bus with no function at 1f.0 at all reads as all ones, so as set.
    #[serde(default)]
    pub lpc_rcba: Vec<(PciAddress, bool)>,
    /// Model the kernel turning on ACS at boot: an IOMMU driver asked for ACS (`pci_request_acs`), so
    /// Linux sets SV, RR, CR and UF in the control register of every function whose ACS capability
    /// implements them, and runs the Intel PCH and SPT root-port enable quirks. Leave on for prediction;
    /// control registers read from a running kernel already include it.
    pub kernel_enables_acs: bool,
    /// The devices of `pci=disable_acs_redir=`, in order. For a device one of them names, Linux 6.11+
    /// starts from the firmware's control value, not its own enabling, and clears RR, CR and EC
    /// (pci.c, `__pci_config_acs`); on Intel SPT root ports it clears them in the control dword at +8.
    pub acs_redir_disabled: Vec<DeviceSpec>,
    /// The entries of `pci=config_acs=` (Linux 6.11 and later), in order. The first entry naming a
    /// device decides its control: the firmware's value with the entry's bits replaced, the kernel's own
    /// enabling discarded, overriding `disable_acs_redir`. An entry with bits beyond the seven ACS flags
    /// ends the list for every device it is reached for. On Intel SPT root ports any naming entry only
    /// clears RR, CR and EC in the dword at +8, whatever its flags.
    #[serde(default)]
    pub config_acs: Vec<ConfigAcs>,
    /// `pcie_acs_override=`, which only out-of-tree patched kernels accept.
    #[serde(default)]
    pub acs_override: AcsOverride,
    /// The ACS control registers were read from a running kernel that had asked for ACS (an IOMMU was
    /// on): the SV RR CR UF bits it sets itself read as set whatever the firmware left there. The model
    /// takes every register as the firmware's value; with this set, what-if predictions say where that
    /// assumption decides a `config_acs` or `disable_acs_redir` result.
    #[serde(default)]
    pub acs_control_from_running_kernel: bool,
    /// Take every ACS control register as the running kernel left it, without redoing its boot-time
    /// writes: set when the registers come from a kernel that had an IOMMU on (it made groups) but whose
    /// command line is not known (an `lspci` paste). Whatever `pci=disable_acs_redir=` or
    /// `pci=config_acs=` did is already in the registers, and the kernel's own enabling too; redoing
    /// the enabling without the parameters would isolate ports the kernel left open.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acs_control_as_read: bool,
    /// What reading a command line found that changes how it counts: a parameter given more than once
    /// (the kernel reads the last), a list the kernel stops reading early, a parameter this kernel ignores;
    /// and what reading an ACPI IVRS table found ([`Platform::apply_ivrs`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Intel VMD domains and the VMD endpoint each one's functions DMA as ([`crate::vmd`]): every function of
    /// such a domain joins the endpoint's group. From sysfs on a live host, or [`crate::vmd::pair_domains`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vmd_domains: Vec<VmdDomain>,
    /// What the host's ACPI IVRS table says about the topology's functions ([`crate::ivrs`]): DMA aliases
    /// Linux adds before grouping, and functions no AMD IOMMU translates. Empty when the table was not read.
    #[serde(default, skip_serializing_if = "IvrsFacts::is_empty")]
    pub ivrs: IvrsFacts,
}

impl Default for Platform {
    fn default() -> Self {
        Self {
            amd_ivrs: false,
            lpc_rcba: Vec::new(),
            kernel_enables_acs: true,
            acs_redir_disabled: Vec::new(),
            config_acs: Vec::new(),
            acs_override: AcsOverride::default(),
            acs_control_from_running_kernel: false,
            acs_control_as_read: false,
            notes: Vec::new(),
            vmd_domains: Vec::new(),
            ivrs: IvrsFacts::default(),
        }
    }
}

impl Platform {
    /// Applies a host's own command line as its kernel, of release `release`, reads it: like
    /// [`Platform::apply_cmdline`], except that `pcie_acs_override=` counts only when the release names a
    /// flavour known to carry the out-of-tree patch ([`acs_override_flavour`]). On any other kernel the
    /// parameter does nothing, and a note says it was ignored.
    pub fn apply_host_cmdline(&mut self, cmdline: &str, release: Option<&str>) {
        let before = self.acs_override.clone();
        self.apply_cmdline(cmdline);
        if self.acs_override == before || release.and_then(acs_override_flavour).is_some() {
            return;
        }
        self.acs_override = before;
        self.notes.push(format!(
            "pcie_acs_override= on the command line is ignored: {} is not a kernel known to carry the out-of-tree \
             ACS override patch (Proxmox VE, linux-zen, Liquorix), and a kernel without it does nothing with the \
             parameter; predict --what-if acs-override=... shows what a patched kernel would do",
            match release {
                Some(r) => format!("release {r}"),
                None => "this kernel (release unknown)".to_string(),
            }
        ));
    }

    /// The VMD endpoint whose requester ID the functions of `domain` use, if `domain` is a VMD domain.
    pub fn vmd_endpoint_of(&self, domain: u32) -> Option<PciAddress> {
        self.vmd_domains.iter().find(|v| v.domain == domain).map(|v| v.endpoint)
    }

    /// Applies a host's ACPI IVRS table to `functions` (the topology's addresses): marks an AMD IOMMU as
    /// present, keeps what Linux derives from the table in [`Platform::ivrs`], and notes the table's
    /// problems. When Linux would refuse the whole table, nothing is kept but a note saying why.
    pub fn apply_ivrs(&mut self, ivrs: &Ivrs, functions: &[PciAddress]) {
        self.amd_ivrs = true;
        for p in &ivrs.problems {
            self.notes.push(format!("ACPI IVRS table: {p}"));
        }
        match ivrs.facts(functions) {
            Ok(facts) => self.ivrs = facts,
            Err(why) => {
                self.ivrs = IvrsFacts::default();
                self.notes.push(format!("ACPI IVRS table: {why}; groups are predicted as if the table were not there"));
            }
        }
    }

    /// The RCBA enable bit recorded for the function at `lpc`, if it was read.
    pub fn rcba_of(&self, lpc: PciAddress) -> Option<bool> {
        self.lpc_rcba.iter().find(|(a, _)| *a == lpc).map(|&(_, on)| on)
    }

    /// Applies the group-changing parameters found on a kernel command line: `pci=disable_acs_redir=`,
    /// `pci=config_acs=` and `pcie_acs_override=`, as a kernel that accepts all three reads them (for
    /// `pcie_acs_override=`, a patched one: see [`Platform::apply_host_cmdline`]). Each `pci=` option keeps only
    /// its last occurrence (pci.c, `pci_setup`), which replaces what the platform had; a list ends at its
    /// first entry the kernel cannot read, keeping the entries before it; words after `--` go to init,
    /// not to the kernel. What changed how a parameter counts is added to [`Platform::notes`].
    pub fn apply_cmdline(&mut self, cmdline: &str) {
        let mut redir: Vec<&str> = Vec::new();
        let mut config: Vec<&str> = Vec::new();
        for word in cmdline.split_whitespace() {
            if word == "--" {
                break;
            }
            if let Some(opts) = word.strip_prefix("pci=") {
                for opt in opts.split(',') {
                    if let Some(list) = opt.strip_prefix("disable_acs_redir=") {
                        redir.push(list);
                    } else if let Some(list) = opt.strip_prefix("config_acs=") {
                        config.push(list);
                    }
                }
            } else if let Some(v) = word.strip_prefix("pcie_acs_override=") {
                if let Ok(o) = AcsOverride::parse(v) {
                    self.acs_override.merge(o);
                }
            }
        }
        let once = |name: &str, all: &[&str], notes: &mut Vec<String>| {
            if all.len() > 1 {
                notes.push(format!(
                    "pci={name}= appears {} times on the command line: the kernel uses only the last, `{}`",
                    all.len(),
                    all[all.len() - 1]
                ));
            }
        };
        once("disable_acs_redir", &redir, &mut self.notes);
        once("config_acs", &config, &mut self.notes);
        let stopped = |name: &str, kept: usize, why: &str| {
            format!(
                "pci={name}=: {why}; the kernel stops reading the list there, and the {kept} entr{} before it \
                 still appl{}",
                if kept == 1 { "y" } else { "ies" },
                if kept == 1 { "ies" } else { "y" }
            )
        };
        if let Some(list) = redir.last() {
            let (devices, stop) = DeviceSpec::parse_list(list);
            if let Some(e) = stop {
                let why = format!("`{e}` is not a PCI address, a path or pci:VVVV:DDDD[:SSSS:SSSS]");
                self.notes.push(stopped("disable_acs_redir", devices.len(), &why));
            }
            self.acs_redir_disabled = devices;
        }
        if let Some(list) = config.last() {
            let mut entries = Vec::new();
            for e in list_entries(list) {
                match ConfigAcs::parse(e) {
                    Ok(c) => entries.push(c),
                    Err(why) => {
                        self.notes.push(stopped("config_acs", entries.len(), &why));
                        break;
                    }
                }
            }
            self.config_acs = entries;
        }
    }
}

/// The kernel flavour whose release string shows it carries the out-of-tree `pcie_acs_override=` patch,
/// if any: Proxmox VE (`…-pve`), linux-zen (`…-zen…`) or Liquorix (`…liquorix…`). Mainline and
/// distribution kernels such as Debian's do not carry it and ignore the parameter. A patched kernel this
/// does not recognise (a custom build) reads as unpatched: `predict --what-if acs-override=…` still
/// predicts with the override on any kernel.
pub fn acs_override_flavour(release: &str) -> Option<&'static str> {
    if release.ends_with("-pve") {
        Some("Proxmox VE")
    } else if release.contains("liquorix") {
        Some("Liquorix")
    } else if release.contains("-zen") {
        Some("linux-zen")
    } else {
        None
    }
}

/// One `pci=config_acs=` entry: `<flags>@<device>`, flags written right to left as SV TB RR CR UF EC DT,
/// each `0` (clear), `1` (set) or `x` (keep).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigAcs {
    /// The devices it applies to.
    pub device: DeviceSpec,
    /// Control bits it changes.
    pub mask: u16,
    /// Their new values (only bits in `mask` count).
    pub flags: u16,
}

impl ConfigAcs {
    /// Parses `flags@device`. The flags may be empty (nothing changes but the kernel's own enabling is
    /// discarded) and are read as the kernel reads them: right to left, into a 16-bit mask, so characters
    /// beyond the 16th change nothing. A `0` or `1` beyond the 32nd is refused: the kernel's shift is
    /// undefined there.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        let (bits, dev) = entry.split_once('@').ok_or_else(|| format!("`{entry}`: expected FLAGS@DEVICE"))?;
        let (mut mask, mut flags) = (0u32, 0u32);
        for (shift, c) in bits.chars().rev().enumerate() {
            let bit = match c {
                '0' | '1' if shift >= 32 => {
                    return Err(format!("`{entry}`: more than 32 flag characters"));
                }
                '0' | '1' => 1u32 << shift,
                'x' | 'X' => continue,
                other => return Err(format!("`{entry}`: flag character `{other}` is not 0, 1 or x")),
            };
            mask |= bit;
            if c == '1' {
                flags |= bit;
            }
        }
        let device = DeviceSpec::parse(dev).ok_or_else(|| {
            format!("`{entry}`: `{dev}` is not a PCI address, a path (00:1c.0/00.0) or pci:VVVV:DDDD[:SSSS:SSSS]")
        })?;
        Ok(Self { device, mask: mask as u16, flags: flags as u16 })
    }

    /// Parses a `;`-separated list; any entry the kernel cannot read is an error.
    pub fn parse_list(list: &str) -> Result<Vec<Self>, String> {
        list_entries(list).map(Self::parse).collect()
    }

    /// Whether the kernel accepts the entry: it changes nothing beyond the seven defined ACS control bits.
    /// The kernel meets an entry that fails this before looking at its device, and stops reading the list.
    pub fn valid(&self) -> bool {
        self.mask & !0x7f == 0
    }
}

/// What `pcie_acs_override=` claims: ACS isolation for devices that have no ACS capability.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcsOverride {
    /// `downstream`: every root port and switch downstream port.
    pub downstream: bool,
    /// `multifunction`: every function of a multifunction device.
    pub multifunction: bool,
    /// `id:VVVV:DDDD`: these vendor:device pairs.
    pub ids: Vec<(u16, u16)>,
}

impl AcsOverride {
    /// Parses `downstream,multifunction,id:VVVV:DDDD,...`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut o = Self::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "downstream" => o.downstream = true,
                "multifunction" => o.multifunction = true,
                _ => {
                    let ids = part
                        .strip_prefix("id:")
                        .ok_or_else(|| format!("`{part}`: expected downstream, multifunction or id:VVVV:DDDD"))?;
                    let (v, d) = ids.split_once(':').ok_or_else(|| format!("`{part}`: expected id:VVVV:DDDD"))?;
                    let hex = |x: &str| {
                        u16::from_str_radix(x, 16).map_err(|_| format!("`{part}`: `{x}` is not a 4-digit hex ID"))
                    };
                    o.ids.push((hex(v)?, hex(d)?));
                }
            }
        }
        Ok(o)
    }

    /// Whether it overrides nothing.
    pub fn is_empty(&self) -> bool {
        !self.downstream && !self.multifunction && self.ids.is_empty()
    }

    /// Adds another override's claims.
    pub fn merge(&mut self, other: AcsOverride) {
        self.downstream |= other.downstream;
        self.multifunction |= other.multifunction;
        for id in other.ids {
            if !self.ids.contains(&id) {
                self.ids.push(id);
            }
        }
    }
}

/// Why a topology is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// Two functions share an address.
    #[error("function {0} appears twice in the topology")]
    Duplicate(PciAddress),
    /// A parent bridge is not in the topology.
    #[error("function {device} names parent bridge {parent}, which is not in the topology")]
    MissingParent {
        /// The child.
        device: PciAddress,
        /// The missing parent.
        parent: PciAddress,
    },
    /// Parent links form a cycle.
    #[error("parent links of {0} form a cycle")]
    Cycle(PciAddress),
    /// A function names an SR-IOV virtual function as its parent bridge; VFs never forward to a bus.
    #[error("function {device} names {parent} as its parent bridge, but {parent} is an SR-IOV virtual function")]
    ParentIsVirtfn {
        /// The child.
        device: PciAddress,
        /// The virtual function named as parent.
        parent: PciAddress,
    },
}

/// A set of PCI functions with their tree, indexed for the grouping algorithm.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Devices sorted by address.
    pub(crate) devices: Vec<Device>,
    /// Index of each device's parent bridge.
    pub(crate) parent: Vec<Option<u32>>,
    /// Device indices in kernel probe order.
    pub(crate) probe_order: Vec<u32>,
}

impl Topology {
    /// Indexes devices, checking that every parent exists and that there are no cycles.
    pub fn new(mut devices: Vec<Device>) -> Result<Self, TopologyError> {
        devices.sort_unstable_by_key(|d| d.address);
        if let Some(w) = devices.windows(2).find(|w| w[0].address == w[1].address) {
            return Err(TopologyError::Duplicate(w[0].address));
        }
        let find = |a: &PciAddress| devices.binary_search_by_key(a, |d| d.address).ok();
        let mut parent = Vec::with_capacity(devices.len());
        for d in &devices {
            parent.push(match d.parent {
                None => None,
                Some(p) => {
                    let i = find(&p).ok_or(TopologyError::MissingParent { device: d.address, parent: p })?;
                    if devices[i].is_virtfn {
                        return Err(TopologyError::ParentIsVirtfn { device: d.address, parent: p });
                    }
                    Some(i as u32)
                }
            });
        }
        let probe_order = probe_order(&devices, &parent)?;
        Ok(Self { devices, parent, probe_order })
    }

    /// All devices, sorted by address.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Looks a device up by address.
    pub fn get(&self, addr: PciAddress) -> Option<&Device> {
        self.index_of(addr).map(|i| &self.devices[i])
    }

    pub(crate) fn index_of(&self, addr: PciAddress) -> Option<usize> {
        self.devices.binary_search_by_key(&addr, |d| d.address).ok()
    }

    /// The parent bridge of a device.
    pub fn parent_of(&self, addr: PciAddress) -> Option<&Device> {
        let i = self.index_of(addr)?;
        self.parent[i].map(|p| &self.devices[p as usize])
    }

    /// The chain of bridges from a device's parent up to the bridge on a root bus.
    pub fn upstream_path(&self, addr: PciAddress) -> Vec<&Device> {
        let mut out = Vec::new();
        let Some(mut i) = self.index_of(addr) else { return out };
        while let Some(p) = self.parent[i] {
            i = p as usize;
            out.push(&self.devices[i]);
        }
        out
    }

    /// Device indices in the order the kernel adds them: per bus, every function in devfn order, then
    /// each bridge's subtree in turn (root buses in address order, virtual functions last).
    pub fn probe_order(&self) -> impl Iterator<Item = &Device> + '_ {
        self.probe_order.iter().map(|&i| &self.devices[i as usize])
    }

    /// The same-bus range of device indices containing `i` (devices are sorted by address).
    pub(crate) fn bus_range(&self, i: usize) -> std::ops::Range<usize> {
        let a = self.devices[i].address;
        let key = |d: &Device| (d.address.domain, d.address.bus);
        let k = (a.domain, a.bus);
        let start = self.devices[..i].partition_point(|d| key(d) < k);
        let end = i + self.devices[i..].partition_point(|d| key(d) <= k);
        start..end
    }
}

/// Computes probe order with an explicit stack (no recursion: trees can be deep and large).
fn probe_order(devices: &[Device], parent: &[Option<u32>]) -> Result<Vec<u32>, TopologyError> {
    let n = devices.len();
    // Children of each node, kept in address order because devices are sorted.
    let mut child_count = vec![0u32; n + 1];
    for p in parent.iter().flatten() {
        child_count[*p as usize] += 1;
    }
    let mut start = vec![0u32; n + 1];
    let mut acc = 0u32;
    for i in 0..n {
        start[i] = acc;
        acc += child_count[i];
    }
    start[n] = acc;
    let mut fill = start.clone();
    let mut children = vec![0u32; acc as usize];
    let mut roots = Vec::new();
    let mut vfs = Vec::new();
    for (i, p) in parent.iter().enumerate() {
        if devices[i].is_virtfn {
            vfs.push(i as u32);
            continue;
        }
        match p {
            Some(p) => {
                children[fill[*p as usize] as usize] = i as u32;
                fill[*p as usize] += 1;
            }
            None => roots.push(i as u32),
        }
    }
    let kids = |i: usize| &children[start[i] as usize..fill[i] as usize];
    let mut order = Vec::with_capacity(n);
    // Roots grouped by root bus, each bus: its functions, then the subtrees of its bridges.
    let mut stack: Vec<Vec<u32>> = Vec::new();
    let mut r = 0;
    while r < roots.len() {
        let a = devices[roots[r] as usize].address;
        let mut e = r;
        while e < roots.len() && {
            let b = devices[roots[e] as usize].address;
            (b.domain, b.bus) == (a.domain, a.bus)
        } {
            e += 1;
        }
        stack.push(roots[r..e].to_vec());
        r = e;
        // Depth-first over buses.
        let mut frames: Vec<(Vec<u32>, usize)> = vec![(stack.pop().unwrap_or_default(), 0)];
        for &d in &frames[0].0 {
            order.push(d);
        }
        while let Some((bus, pos)) = frames.last_mut() {
            if *pos >= bus.len() {
                frames.pop();
                continue;
            }
            let d = bus[*pos] as usize;
            *pos += 1;
            let ch = kids(d);
            if !ch.is_empty() {
                order.extend_from_slice(ch);
                if frames.len() > n {
                    return Err(TopologyError::Cycle(devices[d].address));
                }
                frames.push((ch.to_vec(), 0));
            }
        }
    }
    order.extend(vfs);
    if order.len() != n {
        // Some devices were never reached from a root: their parent links form a cycle.
        let mut seen = vec![false; n];
        for &i in &order {
            seen[i as usize] = true;
        }
        let lost = seen.iter().position(|s| !s).unwrap_or(0);
        return Err(TopologyError::Cycle(devices[lost].address));
    }
    Ok(order)
}
