//! The snapshot: everything the read-only commands need about a host, in one versioned JSON document.

use std::path::PathBuf;

use iommu_groups::vmd::VmdDomain;
use iommu_groups::{Device, Pcie, Platform, Topology, TopologyError};
use iommu_pci::regions::ReservedRegion;
use iommu_pci::{AcsState, ConfigError, ConfigInfo, HeaderKind, PciAddress};
use serde::{Deserialize, Serialize};

/// The format name written into every snapshot.
pub const FORMAT: &str = "iommuctl-snapshot";
/// The snapshot format version this build writes and reads.
pub const VERSION: u32 = 1;

/// A host as read from sysfs and procfs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] when written by this build.
    pub version: u32,
    /// Kernel facts.
    pub kernel: KernelInfo,
    /// IOMMU hardware units (`/sys/class/iommu`).
    pub iommu_units: Vec<String>,
    /// ACPI tables that announce an IOMMU (`DMAR`, `IVRS`), when the firmware directory was readable.
    pub acpi_tables: Vec<String>,
    /// The kernel's IOMMU groups.
    pub groups: Vec<KernelGroup>,
    /// Every PCI function.
    pub devices: Vec<HostDevice>,
    /// Facts for `iommuctl check` (absent in snapshots written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<crate::readiness::ReadinessFacts>,
    /// Host files that exist but could not be read (a FIFO or device where an attribute should be, a file
    /// over its size limit, an I/O error): what was read around them may be incomplete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
    /// The firmware and board from DMI (`/sys/class/dmi/id`); absent in snapshots written before it
    /// existed, on hosts without DMI and in lspci dumps, so those serialize as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
}

/// The firmware and board as DMI describes them (`/sys/class/dmi/id/*`, world-readable). A BIOS update
/// changes the version and date; the firmware decides ACS control values and bus numbering at boot, so
/// `iommuctl diff` names it when groups change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firmware {
    /// `bios_vendor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_vendor: Option<String>,
    /// `bios_version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_version: Option<String>,
    /// `bios_date` (as DMI writes it, `MM/DD/YYYY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_date: Option<String>,
    /// `sys_vendor`: the system's manufacturer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sys_vendor: Option<String>,
    /// `product_name`: the system's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    /// `board_name`: the mainboard's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_name: Option<String>,
}

impl Firmware {
    /// The attribute names under `/sys/class/dmi/id`, in the order of the fields.
    pub const ATTRIBUTES: [&'static str; 6] =
        ["bios_vendor", "bios_version", "bios_date", "sys_vendor", "product_name", "board_name"];

    /// Each attribute with its value (`None` when it was not read), in [`Firmware::ATTRIBUTES`] order.
    pub fn fields(&self) -> [(&'static str, Option<&str>); 6] {
        [
            ("bios_vendor", self.bios_vendor.as_deref()),
            ("bios_version", self.bios_version.as_deref()),
            ("bios_date", self.bios_date.as_deref()),
            ("sys_vendor", self.sys_vendor.as_deref()),
            ("product_name", self.product_name.as_deref()),
            ("board_name", self.board_name.as_deref()),
        ]
    }
}

/// A host file that exists but could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// The file.
    pub path: PathBuf,
    /// Why, as a sentence.
    pub error: String,
}

/// Kernel facts, and the firmware table the kernel's AMD IOMMU driver reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: Option<String>,
    /// The kernel command line.
    pub cmdline: Option<String>,
    /// The raw ACPI IVRS table (`/sys/firmware/acpi/tables/IVRS`, readable by root only), hex encoded, when
    /// it was read: AMD's description of which functions each IOMMU translates and which requester IDs
    /// alias ([`iommu_groups::ivrs`]). Absent in snapshots taken without it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_table")]
    pub acpi_ivrs: Option<Vec<u8>>,
}

impl KernelInfo {
    /// Major and minor version from the release: `6.1.0-56-amd64` → `(6, 1)`.
    pub fn version(&self) -> Option<(u32, u32)> {
        let mut it = self.release.as_deref()?.split(|c: char| !c.is_ascii_digit());
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }
}

/// One kernel IOMMU group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelGroup {
    /// Group number.
    pub id: u32,
    /// Default domain type (`DMA`, `DMA-FQ`, `identity`, `blocked`, `unmanaged`, `unknown`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Reserved regions.
    pub reserved_regions: Vec<ReservedRegion>,
    /// Member functions, sorted.
    pub devices: Vec<PciAddress>,
}

/// One PCI function on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDevice {
    /// Address.
    pub address: PciAddress,
    /// The bridge above it in the sysfs device tree (`None` on a root bus).
    pub parent: Option<PciAddress>,
    /// Raw config-space bytes as read (64 bytes unprivileged, 256 or 4096 as root), hex encoded.
    #[serde(with = "hex_bytes")]
    pub config: Vec<u8>,
    /// Bound driver.
    pub driver: Option<String>,
    /// `driver_override`, when set.
    pub driver_override: Option<String>,
    /// Reset methods the kernel offers (`reset_method`), when the attribute exists.
    pub reset_methods: Option<Vec<String>>,
    /// `boot_vga`, for VGA devices.
    pub boot_vga: Option<bool>,
    /// NUMA node (`-1` when none).
    pub numa_node: Option<i32>,
    /// The kernel's IOMMU group number.
    pub iommu_group: Option<u32>,
    /// The IOMMU unit (e.g. `dmar0`).
    pub iommu: Option<String>,
    /// For an SR-IOV virtual function, its physical function.
    pub physfn: Option<PciAddress>,
    /// `sriov_totalvfs`, for a physical function.
    pub sriov_totalvfs: Option<u32>,
    /// `sriov_numvfs`, for a physical function.
    pub sriov_numvfs: Option<u32>,
    /// The function whose requester ID this function's DMA carries, when not its own: the Intel VMD
    /// endpoint its PCI domain sits behind (its canonical sysfs path runs through the endpoint,
    /// `.../0000:00:0e.0/pci10000:e0/...`). Absent in snapshots taken before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dma_device: Option<PciAddress>,
    /// Network interfaces this function owns (`net/`).
    pub net: Vec<String>,
    /// Its VFIO device cdev (`vfio0`, from `vfio-dev/`): present while it is on a VFIO driver on a kernel
    /// with `CONFIG_VFIO_DEVICE_CDEV`; the node is `/dev/vfio/devices/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vfio_cdev: Option<String>,
    /// Whether `config` was rebuilt from `lspci -v` text rather than read: only what the text states is
    /// real (registers it does not show, such as the LPC bridge's RCBA at 0xF0, are not known).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub config_from_text: bool,
}

impl HostDevice {
    /// A function with only its address set: no config bytes, driver or attributes.
    pub fn new(address: PciAddress) -> Self {
        Self {
            address,
            parent: None,
            config: Vec::new(),
            driver: None,
            driver_override: None,
            reset_methods: None,
            boot_vga: None,
            numa_node: None,
            iommu_group: None,
            iommu: None,
            physfn: None,
            sriov_totalvfs: None,
            sriov_numvfs: None,
            dma_device: None,
            net: Vec::new(),
            vfio_cdev: None,
            config_from_text: false,
        }
    }
}

/// Why a snapshot could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading the file failed (missing, not a regular file, over the size limit).
    #[error("cannot read snapshot {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: iommu_fsio::FsError,
    },
    /// The devices do not form a tree: an address twice, a parent that is not there, or a cycle.
    #[error("snapshot is inconsistent")]
    Inconsistent(#[source] TopologyError),
    /// The JSON did not parse.
    #[error("snapshot is not valid JSON for format {FORMAT} v{VERSION}")]
    Json(#[source] serde_json::Error),
    /// Another format or version.
    #[error("snapshot has format {format:?} version {version}; this build reads {FORMAT:?} version {VERSION}")]
    Version {
        /// Format found.
        format: String,
        /// Version found.
        version: u32,
    },
}

impl Snapshot {
    /// Parses a snapshot from JSON bytes, checking format and version.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut s: Snapshot = serde_json::from_slice(bytes).map_err(SnapshotError::Json)?;
        if s.format != FORMAT || s.version != VERSION {
            return Err(SnapshotError::Version { format: s.format, version: s.version });
        }
        // Lookups binary-search by address.
        s.devices.sort_by_key(|d| d.address);
        s.groups.sort_by_key(|g| g.id);
        for g in &mut s.groups {
            g.devices.sort_unstable();
        }
        s.check_tree().map_err(SnapshotError::Inconsistent)?;
        Ok(s)
    }

    /// Loads a snapshot file (`-` reads standard input), at most [`iommu_fsio::Limit::INPUT`] bytes.
    pub fn load(path: &std::path::Path) -> Result<Self, SnapshotError> {
        let bytes = iommu_fsio::read_input(path, iommu_fsio::Limit::INPUT)
            .map_err(|source| SnapshotError::Read { path: path.to_path_buf(), source })?;
        Self::from_json_slice(&bytes)
    }

    /// Checks that the devices form a tree, as [`Topology::new`] needs: no address twice, every parent
    /// present and not an SR-IOV virtual function, no cycle of parent links. Cheap: no config space is decoded.
    pub fn check_tree(&self) -> Result<(), TopologyError> {
        let mut addrs: Vec<PciAddress> = self.devices.iter().map(|d| d.address).collect();
        addrs.sort_unstable();
        if let Some(w) = addrs.windows(2).find(|w| w[0] == w[1]) {
            return Err(TopologyError::Duplicate(w[0]));
        }
        // Parent index of each device (in address order), then a walk up from each device that stops at a
        // device already known to reach a root: linear in the number of devices whatever the depth.
        let index = |a: &PciAddress| addrs.binary_search(a).ok();
        let mut parent: Vec<Option<usize>> = vec![None; addrs.len()];
        for d in &self.devices {
            let i = index(&d.address).unwrap_or_default();
            if let Some(p) = d.parent {
                let pi = index(&p).ok_or(TopologyError::MissingParent { device: d.address, parent: p })?;
                if self.device(p).is_some_and(|pd| pd.physfn.is_some()) {
                    return Err(TopologyError::ParentIsVirtfn { device: d.address, parent: p });
                }
                parent[i] = Some(pi);
            }
        }
        // 0 = not seen, 1 = on the current walk, 2 = reaches a root.
        let mut state = vec![0u8; addrs.len()];
        let mut path = Vec::new();
        for start in 0..addrs.len() {
            let mut cur = Some(start);
            while let Some(i) = cur {
                match state[i] {
                    2 => break,
                    1 => return Err(TopologyError::Cycle(addrs[i])),
                    _ => {
                        state[i] = 1;
                        path.push(i);
                        cur = parent[i];
                    }
                }
            }
            for i in path.drain(..) {
                state[i] = 2;
            }
        }
        Ok(())
    }

    /// Serializes to pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Looks a device up.
    pub fn device(&self, addr: PciAddress) -> Option<&HostDevice> {
        match self.devices.binary_search_by_key(&addr, |d| d.address) {
            Ok(i) => Some(&self.devices[i]),
            // Not sorted (built by hand): fall back to a scan.
            Err(_) => self.devices.iter().find(|d| d.address == addr),
        }
    }

    /// The kernel group with this number.
    pub fn group(&self, id: u32) -> Option<&KernelGroup> {
        match self.groups.binary_search_by_key(&id, |g| g.id) {
            Ok(i) => Some(&self.groups[i]),
            Err(_) => self.groups.iter().find(|g| g.id == id),
        }
    }

    /// The kernel group that lists `addr` among its devices.
    pub fn group_of(&self, addr: PciAddress) -> Option<&KernelGroup> {
        self.groups.iter().find(|g| g.devices.binary_search(&addr).is_ok())
    }

    /// Whether `addr` is a bridge (its config space decodes to a bridge header). A function missing from
    /// the snapshot, or whose config space does not decode, is not known to be a bridge.
    pub fn is_bridge(&self, addr: PciAddress) -> bool {
        self.device(addr).is_some_and(|d| ConfigInfo::parse(&d.config).is_ok_and(|c| c.is_bridge()))
    }

    /// The endpoints of `group`: its members that are not bridges ([`Snapshot::is_bridge`]), in address
    /// order. These are what VFIO needs assigned (or unbound) together; bridges stay with the host.
    pub fn group_endpoints(&self, group: &KernelGroup) -> Vec<PciAddress> {
        let mut eps: Vec<PciAddress> = group.devices.iter().copied().filter(|&a| !self.is_bridge(a)).collect();
        eps.sort_unstable();
        eps
    }

    /// Platform facts for prediction: an AMD IOMMU means IVRS is present; the RCBA enable bit of each
    /// function at 1f.0 whose config space was read (not rebuilt from text) up to 0xF3 (Intel's PCH ACS
    /// quirk depends on it);
    /// whether the ACS control registers were read from a kernel with an IOMMU on (groups or IOMMU
    /// units); the group-changing kernel parameters (`pci=disable_acs_redir=`, `pci=config_acs=`, and
    /// `pcie_acs_override=` when the release names a patched kernel) come from the command line; the Intel
    /// VMD domains from the functions' [`HostDevice::dma_device`]; and, when the raw IVRS table was read,
    /// its aliases and coverage for these functions ([`Platform::apply_ivrs`]).
    pub fn platform(&self) -> Platform {
        let amd =
            self.acpi_tables.iter().any(|t| t == "IVRS") || self.iommu_units.iter().any(|u| u.starts_with("ivhd"));
        let lpc_rcba = self
            .devices
            .iter()
            .filter(|d| {
                d.address.device == 0x1f && d.address.function == 0 && d.config.len() >= 0xf4 && !d.config_from_text
            })
            .map(|d| (d.address, d.config[0xf0] & 1 != 0))
            .collect();
        // With an IOMMU on, the kernel that wrote the ACS control registers had asked for ACS: they hold its
        // own enabling, not only what the firmware left.
        let from_running_kernel = !self.groups.is_empty() || !self.iommu_units.is_empty();
        let mut p = Platform {
            amd_ivrs: amd,
            lpc_rcba,
            acs_control_from_running_kernel: from_running_kernel,
            // Registers from a kernel that made groups, with its command line unknown (a paste): they hold
            // whatever its parameters did, which cannot be redone without them.
            acs_control_as_read: !self.groups.is_empty() && self.kernel.cmdline.is_none(),
            ..Platform::default()
        };
        if let Some(c) = self.kernel.cmdline.as_deref() {
            // pcie_acs_override= counts only on a kernel whose release shows the out-of-tree patch.
            p.apply_host_cmdline(c, self.kernel.release.as_deref());
        }
        for d in &self.devices {
            let Some(endpoint) = d.dma_device else { continue };
            let domain = d.address.domain;
            match p.vmd_endpoint_of(domain) {
                None => p.vmd_domains.push(VmdDomain { domain, endpoint }),
                Some(e) if e == endpoint => {}
                Some(e) => p.notes.push(format!(
                    "{} names {endpoint} as its DMA device, but another function of domain {domain:04x} names {e}; \
                     {e} is used",
                    d.address
                )),
            }
        }
        p.vmd_domains.sort_unstable();
        if let Some(bytes) = &self.kernel.acpi_ivrs {
            match iommu_groups::ivrs::parse(bytes) {
                Ok(table) => {
                    let functions: Vec<PciAddress> = self.devices.iter().map(|d| d.address).collect();
                    p.apply_ivrs(&table, &functions);
                }
                Err(e) => p.notes.push(format!("{e}; groups are predicted without it")),
            }
        } else if amd {
            let rc = self.amd_root_complexes();
            if !rc.is_empty() {
                let names: Vec<String> = rc.iter().map(|a| a.to_string()).collect();
                p.notes.push(format!(
                    "the ACPI IVRS table was not read: assuming, as AMD firmware does, that its device entries leave \
                     out each root complex beside an AMD IOMMU ({}), so that Linux gives it no group",
                    names.join(", ")
                ));
                p.ivrs.untranslated = rc;
            }
        }
        p
    }

    /// AMD root complexes (host bridge 1022:xxxx, class 0600, at `bus:00.0`) on a bus whose `bus:00.2` is an
    /// AMD IOMMU (1022:xxxx, class 0806). The IVRS tables of every AMD machine in the real-machine fixtures
    /// (Zen 1 to Zen 4, laptops to four-socket-die EPYC servers) leave them out: Linux's `check_device`
    /// finds no IOMMU for them and they get no group. QEMU's amd-iommu sits elsewhere and covers everything.
    fn amd_root_complexes(&self) -> Vec<PciAddress> {
        let host_bridge =
            |c: &[u8]| ConfigInfo::parse(c).is_ok_and(|c| c.vendor_id == 0x1022 && c.class >> 8 == 0x0600);
        let mut v: Vec<PciAddress> = self
            .devices
            .iter()
            .filter(|d| d.address.device == 0 && d.address.function == 0 && host_bridge(&d.config))
            .filter(|d| {
                let iommu = PciAddress { function: 2, ..d.address };
                self.device(iommu).is_some_and(|i| crate::lspci::is_amd_iommu(&i.config))
            })
            .map(|d| d.address)
            .collect();
        v.sort_unstable();
        v
    }

    /// Gives the functions of a listing (an `lspci` dump or paste, which shows no sysfs tree) their Intel VMD
    /// endpoint as [`HostDevice::dma_device`], paired by [`iommu_groups::vmd::pair_domains`]. Does nothing
    /// when some function already has one (the pairing came from sysfs). Returns why domains above 0xffff
    /// could not be paired, when they could not.
    pub fn pair_vmd_domains(&mut self) -> Option<String> {
        if self.devices.iter().any(|d| d.dma_device.is_some()) {
            return None;
        }
        let topology = match self.topology() {
            Ok((t, _)) => t,
            Err(e) => return Some(format!("VMD domains not paired: {e}")),
        };
        let pairing = iommu_groups::vmd::pair_domains(topology.devices());
        for d in &mut self.devices {
            if let Some(v) = pairing.domains.iter().find(|v| v.domain == d.address.domain) {
                d.dma_device = Some(v.endpoint);
            }
        }
        pairing.uncertain
    }

    /// Builds the grouping model. Functions whose config space does not decode are kept with unknown
    /// PCIe type and ACS (so predictions mark them uncertain) and reported alongside.
    pub fn topology(&self) -> Result<(Topology, Vec<(PciAddress, ConfigError)>), TopologyError> {
        let mut bad = Vec::new();
        let mut devs = Vec::with_capacity(self.devices.len());
        for d in &self.devices {
            match ConfigInfo::parse(&d.config) {
                Ok(cfg) => devs.push(Device::from_config(d.address, d.parent, &cfg, d.physfn.is_some())),
                Err(e) => {
                    bad.push((d.address, e));
                    devs.push(Device {
                        address: d.address,
                        parent: d.parent,
                        vendor: 0xffff,
                        device: 0xffff,
                        subsystem: None,
                        class: 0,
                        header: HeaderKind::Normal,
                        multifunction: false,
                        is_virtfn: d.physfn.is_some(),
                        pcie: Pcie::Unknown,
                        acs: AcsState::Unknown,
                    })
                }
            }
        }
        Ok((Topology::new(devs)?, bad))
    }
}

/// Lower-case hex text of bytes.
fn hex_encode(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(b.len() * 2);
    for &x in b {
        out.push(HEX[usize::from(x >> 4)] as char);
        out.push(HEX[usize::from(x & 15)] as char);
    }
    out
}

/// Bytes from hex text of at most `max` bytes; `what` names the field in errors.
fn hex_decode(s: &str, max: usize, what: &str) -> Result<Vec<u8>, String> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) || s.len() / 2 > max {
        return Err(format!("{what} must be an even number of hex digits, at most {max} bytes"));
    }
    let val = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    s.chunks(2)
        .map(|p| match (val(p[0]), val(p[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(format!("{what} holds a non-hex character")),
        })
        .collect()
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex_encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::hex_decode(&s, 4096, "config").map_err(serde::de::Error::custom)
    }
}

/// An optional firmware table as hex, at most [`iommu_fsio::Limit::TABLE`] bytes.
mod hex_table {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => s.serialize_str(&super::hex_encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let Some(s) = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)? else { return Ok(None) };
        let max = usize::try_from(iommu_fsio::Limit::TABLE.bytes).unwrap_or(usize::MAX);
        super::hex_decode(&s, max, "acpi_ivrs").map(Some).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_lpc(config_len: usize, rcba: u8) -> Snapshot {
        let mut lpc = HostDevice::new("0000:00:1f.0".parse().unwrap());
        lpc.config = vec![0; config_len];
        lpc.config[..4].copy_from_slice(&[0x86, 0x80, 0x18, 0x29]);
        if config_len > 0xf0 {
            lpc.config[0xf0] = rcba;
        }
        Snapshot { devices: vec![lpc], ..Snapshot::default() }
    }

    #[test]
    fn the_lpc_bridges_rcba_enable_bit_reaches_the_platform_only_when_it_was_read() {
        // quirks.c, pci_quirk_enable_intel_lpc_acs reads bit 0 of the dword at 0xF0 of 1f.0.
        let a: PciAddress = "0000:00:1f.0".parse().unwrap();
        assert_eq!(with_lpc(256, 0x01).platform().lpc_rcba, vec![(a, true)]);
        assert_eq!(with_lpc(4096, 0xfe).platform().lpc_rcba, vec![(a, false)]);
        // An unprivileged read stops at 64 bytes: unknown, not "disabled" and not "enabled".
        assert_eq!(with_lpc(64, 0).platform().lpc_rcba, vec![]);
        // Bytes rebuilt from `lspci -vv` text are as long as a root read, but 0xF0 was never shown.
        let mut text = with_lpc(4096, 0);
        text.devices[0].config_from_text = true;
        assert_eq!(text.platform().lpc_rcba, vec![]);
    }

    #[test]
    fn without_ivrs_an_amd_root_complex_beside_its_iommu_is_assumed_untranslated() {
        let dev = |a: &str, vendor: u16, class: [u8; 2]| {
            let mut d = HostDevice::new(a.parse().unwrap());
            d.config = vec![0; 64];
            d.config[..2].copy_from_slice(&vendor.to_le_bytes());
            d.config[0x0a] = class[1];
            d.config[0x0b] = class[0];
            d
        };
        let mut s = Snapshot {
            devices: vec![
                dev("0000:00:00.0", 0x1022, [0x06, 0x00]),
                dev("0000:00:00.2", 0x1022, [0x08, 0x06]),
                dev("0000:40:00.0", 0x1022, [0x06, 0x00]),
                dev("0000:40:00.2", 0x1022, [0x08, 0x06]),
                // A root complex without an IOMMU beside it, and a host bridge of another vendor.
                dev("0000:80:00.0", 0x1022, [0x06, 0x00]),
                dev("0000:c0:00.0", 0x8086, [0x06, 0x00]),
                dev("0000:c0:00.2", 0x1022, [0x08, 0x06]),
            ],
            acpi_tables: vec!["IVRS".into()],
            ..Snapshot::default()
        };
        let p = s.platform();
        let want: Vec<PciAddress> = vec!["0000:00:00.0".parse().unwrap(), "0000:40:00.0".parse().unwrap()];
        assert_eq!(p.ivrs.untranslated, want);
        assert!(p.notes.iter().any(|n| n.contains("assuming, as AMD firmware does")), "{:?}", p.notes);
        // Not on Intel, and not when the table itself was read (it says what it covers).
        s.acpi_tables.clear();
        assert!(s.platform().ivrs.untranslated.is_empty());
        s.acpi_tables = vec!["IVRS".into()];
        s.kernel.acpi_ivrs = Some(vec![0; 4]);
        assert!(s.platform().ivrs.untranslated.is_empty());
    }

    #[test]
    fn acs_control_is_taken_as_read_only_from_a_kernel_with_groups_and_an_unknown_command_line() {
        let g = KernelGroup { id: 0, kind: None, reserved_regions: vec![], devices: vec![] };
        let mut s = Snapshot { groups: vec![g], ..Snapshot::default() };
        assert!(s.platform().acs_control_as_read, "a paste: groups, no command line");
        s.kernel.cmdline = Some("root=/dev/sda1".into());
        assert!(!s.platform().acs_control_as_read, "the command line is known: its parameters are redone");
        s.kernel.cmdline = None;
        s.groups.clear();
        assert!(!s.platform().acs_control_as_read, "no groups: no IOMMU asked for ACS, firmware values");
    }

    #[test]
    fn acs_registers_count_as_written_by_the_kernel_when_an_iommu_was_on() {
        // pci.c, pci_enable_acs: with an IOMMU driver's request the kernel sets SV RR CR UF itself, so a
        // snapshot with groups holds its enabling, not only the firmware's value.
        let mut s = with_lpc(64, 0);
        assert!(!s.platform().acs_control_from_running_kernel);
        s.iommu_units = vec!["dmar0".into()];
        assert!(s.platform().acs_control_from_running_kernel);
    }

    #[test]
    fn pcie_acs_override_on_the_command_line_counts_only_on_a_patched_kernel() {
        // Debian's kernels, like mainline, have no pcie_acs_override= handler: the parameter does nothing.
        let mut s = with_lpc(64, 0);
        s.kernel.cmdline = Some("quiet intel_iommu=on pcie_acs_override=downstream,multifunction".into());
        s.kernel.release = Some("6.12.117+deb12-amd64".into());
        let p = s.platform();
        assert!(p.acs_override.is_empty());
        assert!(p.notes.iter().any(|n| n.contains("ignored") && n.contains("6.12.117+deb12-amd64")), "{:?}", p.notes);
        s.kernel.release = None;
        assert!(s.platform().acs_override.is_empty());
        s.kernel.release = Some("6.8.12-4-pve".into());
        let p = s.platform();
        assert!(p.acs_override.downstream && p.acs_override.multifunction);
        assert!(p.notes.is_empty());
    }
}
