//! Emulated machines ("topologies") as data.

use std::fmt;

/// Which IOMMU QEMU emulates, and the kernel argument that turns its driver on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Iommu {
    /// Intel VT-d: `-device intel-iommu,intremap=on,caching-mode=on`, kernel arg `intel_iommu=on`.
    IntelVtd,
    /// AMD-Vi: `-device amd-iommu`, kernel arg `amd_iommu=on`. The IOMMU takes a PCI function.
    AmdVi,
    /// No IOMMU device and no kernel argument: the kernel makes no groups.
    None,
}

impl Iommu {
    /// The QEMU arguments that add the IOMMU (empty for [`Iommu::None`]).
    pub fn qemu_args(self) -> Vec<String> {
        match self {
            Iommu::IntelVtd => vec!["-device".into(), "intel-iommu,intremap=on,caching-mode=on".into()],
            Iommu::AmdVi => vec!["-device".into(), "amd-iommu".into()],
            Iommu::None => Vec::new(),
        }
    }

    /// The kernel command-line argument that enables the IOMMU driver, if any.
    pub fn kernel_arg(self) -> Option<&'static str> {
        match self {
            Iommu::IntelVtd => Some("intel_iommu=on"),
            Iommu::AmdVi => Some("amd_iommu=on"),
            Iommu::None => None,
        }
    }

    /// Whether the kernel is expected to create IOMMU groups.
    pub fn makes_groups(self) -> bool {
        !matches!(self, Iommu::None)
    }
}

impl fmt::Display for Iommu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Iommu::IntelVtd => "intel-vtd",
            Iommu::AmdVi => "amd-vi",
            Iommu::None => "none",
        })
    }
}

/// Text in [`Topology::devices`] replaced by the run's work directory at boot.
pub const RUNDIR: &str = "@RUNDIR@";

/// One emulated machine: a kernel, an IOMMU and the PCI devices added to QEMU's q35 machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Unique name (also the default run directory name).
    pub name: String,
    /// The kernel to boot, a selector of [`crate::Kernel::find_in`]: "6.1" or "6.12" (Debian's), or
    /// "iommufd" (the kernel `scripts/lab-setup` builds).
    pub kernel: String,
    /// The emulated IOMMU.
    pub iommu: Iommu,
    /// Extra QEMU arguments (`-device ...`, `-drive ...`), in order. [`RUNDIR`] is replaced
    /// by the run's work directory.
    pub devices: Vec<String>,
    /// Raw disk images (file names) created, 4 MiB each and sparse, in the run's work
    /// directory before boot, for drives referenced as `file=@RUNDIR@/<name>`.
    pub images: Vec<String>,
    /// One line saying what the topology exercises.
    pub description: String,
}

impl Topology {
    /// A topology without devices.
    pub fn new(name: &str, kernel: &str, iommu: Iommu, description: &str) -> Topology {
        Topology {
            name: name.to_string(),
            kernel: kernel.to_string(),
            iommu,
            devices: Vec::new(),
            images: Vec::new(),
            description: description.to_string(),
        }
    }

    /// Adds `-device SPEC`.
    pub fn device(mut self, spec: &str) -> Topology {
        self.devices.push("-device".into());
        self.devices.push(spec.into());
        self
    }

    /// Adds several `-device SPEC`.
    pub fn devices<'a>(mut self, specs: impl IntoIterator<Item = &'a str>) -> Topology {
        for s in specs {
            self = self.device(s);
        }
        self
    }

    /// Adds an NVMe controller on `bus` (with `,addr=...` if wanted inside `bus`) backed by a
    /// fresh raw image `<id>.img` in the run directory.
    pub fn nvme(mut self, id: &str, bus: &str) -> Topology {
        let image = format!("{id}.img");
        self.devices.push("-drive".into());
        self.devices.push(format!("if=none,id={id},file={RUNDIR}/{image},format=raw"));
        self.images.push(image);
        self.device(&format!("nvme,serial=lab-{id},drive={id},bus={bus}"))
    }

    /// The same topology under another name and kernel.
    pub fn on_kernel(&self, name: &str, kernel: &str) -> Topology {
        let mut t = self.clone();
        t.name = name.to_string();
        t.kernel = kernel.to_string();
        t
    }
}

/// `extra`, with `,bus=pcie.0` added when it names no bus. Every device names its bus:
/// QEMU 7.2 puts a device without `bus=` on the newest bus that takes it (after a
/// `pxb-pcie`, that is the expander's bus, not pcie.0).
fn on_bus(extra: &str) -> String {
    if extra.contains("bus=") {
        extra.to_string()
    } else {
        format!(",bus=pcie.0{extra}")
    }
}

/// Root port with ACS: `pcie-root-port,id=<id>,chassis=<n>,slot=<n>` plus `extra`
/// (on pcie.0 unless `extra` names a bus).
fn rp(id: &str, n: u32, extra: &str) -> String {
    format!("pcie-root-port,id={id},chassis={n},slot={n}{}", on_bus(extra))
}

/// Root port without ACS (`disable-acs=on`).
fn rp_noacs(id: &str, n: u32, extra: &str) -> String {
    format!("pcie-root-port,id={id},chassis={n},slot={n},disable-acs=on{}", on_bus(extra))
}

fn rp_acs() -> Topology {
    Topology::new("rp-acs", "6.1", Iommu::IntelVtd, "two pcie-root-ports (ACS) with e1000e and edu below")
        .device(&rp("rp1", 1, ""))
        .device("e1000e,bus=rp1")
        .device(&rp("rp2", 2, ""))
        .device("edu,bus=rp2")
}

fn rp_noacs_t() -> Topology {
    Topology::new(
        "rp-noacs",
        "6.1",
        Iommu::IntelVtd,
        "pcie-root-port disable-acs=on with e1000e, next to an ACS root port with edu",
    )
    .device(&rp_noacs("rp1", 1, ""))
    .device("e1000e,bus=rp1")
    .device(&rp("rp2", 2, ""))
    .device("edu,bus=rp2")
}

fn ioh3420() -> Topology {
    Topology::new("ioh3420", "6.1", Iommu::IntelVtd, "two ioh3420 Intel root ports (no ACS) with e1000e and edu")
        .device("ioh3420,id=rp1,chassis=1,slot=1,bus=pcie.0")
        .device("e1000e,bus=rp1")
        .device("ioh3420,id=rp2,chassis=2,slot=2,bus=pcie.0")
        .device("edu,bus=rp2")
}

fn switch() -> Topology {
    Topology::new(
        "switch",
        "6.1",
        Iommu::IntelVtd,
        "root port -> x3130 upstream -> two xio3130 downstream ports with e1000e / edu",
    )
    .device(&rp("rp1", 1, ""))
    .device("x3130-upstream,id=up1,bus=rp1")
    .device("xio3130-downstream,id=dn1,bus=up1,chassis=2,slot=2")
    .device("e1000e,bus=dn1")
    .device("xio3130-downstream,id=dn2,bus=up1,chassis=3,slot=3")
    .device("edu,bus=dn2")
}

fn mf_endpoint_root() -> Topology {
    Topology::new(
        "mf-endpoint-root",
        "6.1",
        Iommu::IntelVtd,
        "multifunction edu pair on pcie.0 at 10.0/10.1, single edu at 11.0",
    )
    .device("edu,bus=pcie.0,addr=0x10.0,multifunction=on")
    .device("edu,bus=pcie.0,addr=0x10.1")
    .device("edu,bus=pcie.0,addr=0x11.0")
}

fn mf_endpoint_rp() -> Topology {
    Topology::new("mf-endpoint-rp", "6.1", Iommu::IntelVtd, "multifunction edu pair (0.0/0.1) behind an ACS root port")
        .device(&rp("rp1", 1, ""))
        .device("edu,bus=rp1,addr=0x0.0,multifunction=on")
        .device("edu,bus=rp1,addr=0x0.1")
}

fn mf_rp(name: &str, kernel: &str, acs: bool) -> Topology {
    let port = if acs { rp } else { rp_noacs };
    let desc = if acs {
        "four multifunction pcie-root-ports at 1c.0-1c.3 (ACS) with endpoints below"
    } else {
        "four multifunction pcie-root-ports at 1c.0-1c.3 with disable-acs=on, endpoints below"
    };
    Topology::new(name, kernel, Iommu::IntelVtd, desc)
        .device(&port("rp1", 1, ",bus=pcie.0,addr=0x1c.0,multifunction=on"))
        .device(&port("rp2", 2, ",bus=pcie.0,addr=0x1c.1"))
        .device(&port("rp3", 3, ",bus=pcie.0,addr=0x1c.2"))
        .device(&port("rp4", 4, ",bus=pcie.0,addr=0x1c.3"))
        .device("e1000e,bus=rp1")
        .device("edu,bus=rp2")
        .device("e1000e,bus=rp3")
        .device("edu,bus=rp4")
}

fn pcie_pci_bridge() -> Topology {
    Topology::new(
        "pcie-pci-bridge",
        "6.1",
        Iommu::IntelVtd,
        "root port -> pcie-pci-bridge with conventional edu and e1000 behind it",
    )
    .device(&rp("rp1", 1, ""))
    .device("pcie-pci-bridge,id=br1,bus=rp1")
    .device("edu,bus=br1,addr=0x1")
    .device("e1000,bus=br1,addr=0x2")
}

fn nested_bridges() -> Topology {
    Topology::new(
        "nested-bridges",
        "6.1",
        Iommu::IntelVtd,
        "root port -> pcie-pci-bridge (edu) -> pci-bridge (e1000, edu)",
    )
    .device(&rp("rp1", 1, ""))
    .device("pcie-pci-bridge,id=br1,bus=rp1")
    .device("edu,bus=br1,addr=0x1")
    .device("pci-bridge,id=br2,bus=br1,addr=0x2,chassis_nr=5")
    .device("e1000,bus=br2,addr=0x1")
    .device("edu,bus=br2,addr=0x2")
}

fn pxb() -> Topology {
    Topology::new(
        "pxb",
        "6.1",
        Iommu::IntelVtd,
        "pxb-pcie expander (bus_nr=0x80) with a root port and e1000e; edu behind a root port on pcie.0",
    )
    .device("pxb-pcie,id=pxb1,bus_nr=0x80,bus=pcie.0")
    .device(&rp("rp1", 1, ",bus=pxb1"))
    .device("e1000e,bus=rp1")
    .device(&rp("rp2", 2, ""))
    .device("edu,bus=rp2")
}

fn root_bus() -> Topology {
    Topology::new("root-bus", "6.1", Iommu::IntelVtd, "endpoints directly on pcie.0: e1000e (RCiEP), edu, e1000")
        .device("e1000e,bus=pcie.0,addr=0x3")
        .device("edu,bus=pcie.0,addr=0x4")
        .device("e1000,bus=pcie.0,addr=0x5")
}

fn nvme() -> Topology {
    Topology::new("nvme", "6.1", Iommu::IntelVtd, "nvme (raw image) behind an ACS root port, driver loaded")
        .device(&rp("rp1", 1, ""))
        .nvme("d1", "rp1")
}

fn amd_mixed(name: &str, kernel: &str) -> Topology {
    Topology::new(
        name,
        kernel,
        Iommu::AmdVi,
        "AMD-Vi: ACS and non-ACS root ports, switch, pcie-pci-bridge, multifunction edu on pcie.0",
    )
    .device(&rp("rp1", 1, ""))
    .device("e1000e,bus=rp1")
    .device(&rp_noacs("rp2", 2, ""))
    .device("edu,bus=rp2")
    .device(&rp("rp3", 3, ""))
    .device("x3130-upstream,id=up1,bus=rp3")
    .device("xio3130-downstream,id=dn1,bus=up1,chassis=4,slot=4")
    .device("e1000e,bus=dn1")
    .device("xio3130-downstream,id=dn2,bus=up1,chassis=5,slot=5")
    .device("edu,bus=dn2")
    .device(&rp("rp6", 6, ""))
    .device("pcie-pci-bridge,id=br1,bus=rp6")
    .device("e1000,bus=br1,addr=0x1")
    .device("edu,bus=pcie.0,addr=0x10.0,multifunction=on")
    .device("edu,bus=pcie.0,addr=0x10.1")
}

fn everything(name: &str, kernel: &str) -> Topology {
    Topology::new(name, kernel, Iommu::IntelVtd, "VT-d with most building blocks at once")
        // ACS root port.
        .device(&rp("rp1", 1, ""))
        .device("e1000e,bus=rp1")
        // Root port without ACS.
        .device(&rp_noacs("rp2", 2, ""))
        .device("edu,bus=rp2")
        // Intel root port.
        .device("ioh3420,id=rp3,chassis=3,slot=3,bus=pcie.0")
        .device("e1000e,bus=rp3")
        // Switch.
        .device(&rp("rp4", 4, ""))
        .device("x3130-upstream,id=up1,bus=rp4")
        .device("xio3130-downstream,id=dn1,bus=up1,chassis=5,slot=5")
        .device("e1000e,bus=dn1")
        .device("xio3130-downstream,id=dn2,bus=up1,chassis=6,slot=6")
        .device("edu,bus=dn2")
        // Nested conventional bridges.
        .device(&rp("rp7", 7, ""))
        .device("pcie-pci-bridge,id=br1,bus=rp7")
        .device("edu,bus=br1,addr=0x1")
        .device("pci-bridge,id=br2,bus=br1,addr=0x2,chassis_nr=20")
        .device("e1000,bus=br2,addr=0x1")
        // Multifunction root ports, with and without ACS.
        .device(&rp("rp8", 8, ",bus=pcie.0,addr=0x1c.0,multifunction=on"))
        .device(&rp("rp9", 9, ",bus=pcie.0,addr=0x1c.1"))
        .device("edu,bus=rp8")
        .device("e1000e,bus=rp9")
        .device(&rp_noacs("rp10", 10, ",bus=pcie.0,addr=0x1d.0,multifunction=on"))
        .device(&rp_noacs("rp11", 11, ",bus=pcie.0,addr=0x1d.1"))
        .device("edu,bus=rp10")
        .device("e1000e,bus=rp11")
        // Multifunction endpoint and a plain endpoint on the root bus.
        .device("edu,bus=pcie.0,addr=0x10.0,multifunction=on")
        .device("edu,bus=pcie.0,addr=0x10.1")
        .device("e1000,bus=pcie.0,addr=0x11.0")
        // Expander bridge.
        .device("pxb-pcie,id=pxb1,bus_nr=0x80,bus=pcie.0")
        .device(&rp("rp12", 12, ",bus=pxb1"))
        .device("e1000e,bus=rp12")
        // NVMe.
        .device(&rp("rp13", 13, ""))
        .nvme("d1", "rp13")
}

fn iommu_off() -> Topology {
    Topology::new(
        "iommu-off",
        "6.1",
        Iommu::None,
        "no IOMMU: root port with e1000e, edu on pcie.0; the kernel makes no groups",
    )
    .device(&rp("rp1", 1, ""))
    .device("e1000e,bus=rp1")
    .device("edu,bus=pcie.0,addr=0x10.0")
}

/// The machine of the iommufd tests, on the kernel `scripts/lab-setup` builds (selector "iommufd"):
/// VT-d, edu behind an ACS root port (01:00.0), NVMe behind another (02:00.0, backed by `d1.img`).
///
/// Not in [`topologies`]: the tests that boot every topology run on the Debian kernels only, and the
/// built kernel is required only by the tests that use this machine.
pub fn iommufd() -> Topology {
    Topology::new(
        "iommufd",
        crate::kernel::IOMMUFD_KERNEL,
        Iommu::IntelVtd,
        "built kernel with iommufd: edu behind an ACS root port, nvme behind another",
    )
    .device(&rp("rp1", 1, ""))
    .device("edu,bus=rp1")
    .device(&rp("rp2", 2, ""))
    .nvme("d1", "rp2")
}

/// Every topology of the lab booted on the Debian kernels, each once per test run.
pub fn topologies() -> Vec<Topology> {
    vec![
        rp_acs(),
        rp_noacs_t(),
        ioh3420(),
        switch(),
        mf_endpoint_root(),
        mf_endpoint_rp(),
        mf_rp("mf-rp-acs", "6.1", true),
        mf_rp("mf-rp-noacs", "6.1", false),
        pcie_pci_bridge(),
        nested_bridges(),
        pxb(),
        root_bus(),
        nvme(),
        amd_mixed("amd-mixed", "6.1"),
        everything("everything", "6.1"),
        iommu_off(),
        switch().on_kernel("k612-switch", "6.12"),
        nested_bridges().on_kernel("k612-nested-bridges", "6.12"),
        mf_rp("k612-mf-rp-noacs", "6.12", false),
        amd_mixed("k612-amd-mixed", "6.12"),
        everything("k612-everything", "6.12"),
    ]
}

/// The topology called `name`: one of [`topologies`], or [`iommufd`].
pub fn topology(name: &str) -> Option<Topology> {
    topologies().into_iter().chain([iommufd()]).find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_unique_and_enough() {
        let all = topologies();
        let names: BTreeSet<_> = all.iter().map(|t| t.name.clone()).collect();
        assert_eq!(names.len(), all.len());
        assert!(all.len() >= 14);
        assert!(all.iter().filter(|t| t.kernel == "6.12").count() >= 3);
        assert!(all.iter().any(|t| t.iommu == Iommu::AmdVi && t.kernel == "6.1"));
    }

    #[test]
    fn the_built_kernel_has_its_own_machine() {
        assert!(topologies().iter().all(|t| t.kernel == "6.1" || t.kernel == "6.12"));
        let t = topology("iommufd").expect("the iommufd machine");
        assert_eq!(t.kernel, "iommufd");
        assert_eq!(t.iommu, Iommu::IntelVtd);
        assert_eq!(t.images, vec!["d1.img"]);
    }

    #[test]
    fn every_device_names_its_bus() {
        for t in topologies().into_iter().chain([iommufd()]) {
            for pair in t.devices.windows(2) {
                if pair[0] == "-device" {
                    assert!(pair[1].contains("bus="), "{}: {} has no bus=", t.name, pair[1]);
                }
            }
        }
    }

    #[test]
    fn ids_and_chassis_unique_per_topology() {
        for t in topologies().into_iter().chain([iommufd()]) {
            let mut ids = BTreeSet::new();
            let mut chassis = BTreeSet::new();
            for arg in &t.devices {
                for kv in arg.split(',') {
                    if let Some(v) = kv.strip_prefix("id=") {
                        assert!(ids.insert(v.to_string()), "{}: duplicate id {v}", t.name);
                    }
                    if let Some(v) = kv.strip_prefix("chassis=").or_else(|| kv.strip_prefix("chassis_nr=")) {
                        assert!(chassis.insert(v.to_string()), "{}: duplicate chassis {v}", t.name);
                    }
                }
            }
        }
    }
}
