//! The command line as clap parses it: nothing here is validated beyond what clap checks. `Config`
//! (config.rs) turns it into what the commands run on.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// See, explain and predict Linux IOMMU groups.
#[derive(Parser, Debug)]
#[command(name = "iommuctl", version, about, long_about = None)]
pub struct Args {
    /// Read the host below this directory instead of `/` (a copy of sysfs/procfs, or a test tree).
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "from")]
    pub root: Option<PathBuf>,
    /// Run read-only commands on a snapshot file written by `iommuctl snapshot`.
    #[arg(long, global = true, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Run read-only commands (`predict` above all) on `lspci -xxxx` output saved on another machine
    /// (`-x`/`-xxx` too, with or without `-D`); `-` reads standard input.
    #[arg(long, global = true, value_name = "FILE", conflicts_with_all = ["root", "from"])]
    pub from_lspci: Option<PathBuf>,
    /// Where bind keeps its journal and lock.
    #[arg(long, global = true, value_name = "DIR", default_value = iommu_host::journal::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Colour in text output: auto (only on a terminal, and not when NO_COLOR is set), always, never.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = crate::render::ColorWhen::Auto)]
    pub color: crate::render::ColorWhen,
    /// What to do (default: list).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List IOMMU groups with their devices, names, classes and drivers.
    List,
    /// Show one device: group, path to the root with ACS per hop, driver, reset, NUMA, reserved regions.
    Show {
        /// PCI address (DDDD:BB:DD.F or BB:DD.F).
        address: String,
    },
    /// Explain why a device's group holds exactly its members, and what would split it.
    Explain {
        /// PCI address (DDDD:BB:DD.F or BB:DD.F).
        address: String,
        /// List the root and downstream ports (slots) where the device would get a group of its own.
        #[arg(long)]
        slots: bool,
    },
    /// Predict groups from config space, as the kernel would form them.
    Predict {
        /// Compare with the kernel's groups; exit 1 when they differ.
        #[arg(long, conflicts_with = "what_if")]
        diff: bool,
        /// Predict under a changed kernel command line and compare with today's groups. Repeatable:
        /// `acs-override=downstream,multifunction,id:VVVV:DDDD` (out-of-tree pcie_acs_override),
        /// `config_acs=FLAGS@DEVICE;...` (Linux 6.11+), `disable_acs_redir=DEVICE;...`.
        #[arg(long, value_name = "CHANGE")]
        what_if: Vec<String>,
    },
    /// Bind every endpoint of TARGET's IOMMU group to a driver (vfio-pci), journaled and rolled back on failure.
    Bind {
        /// A PCI address, or a vendor:device ID that matches exactly one device.
        target: String,
        /// The driver to bind to.
        #[arg(long, default_value = "vfio-pci")]
        driver: String,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Bind even when a mounted file system, swap, console or network interface holds a device.
        #[arg(long)]
        force: bool,
    },
    /// Put devices bound by iommuctl back on their original drivers (from the journal).
    Restore {
        /// Only this device's group (address or vendor:device).
        #[arg(conflicts_with = "all", required_unless_present = "all")]
        target: Option<String>,
        /// Every journaled device.
        #[arg(long)]
        all: bool,
    },
    /// Devices bound by iommuctl, and whether each group is viable for VFIO.
    Status,
    /// Make TARGET's group binding survive reboots (udev rule by address and IDs + modprobe softdep).
    /// Refused (exit 3) when a group it binds holds what the host boots from (/, /usr, /boot, /boot/efi,
    /// swap per /etc/fstab or mounted now) or the boot VGA device with no other display.
    Persist {
        /// A PCI address or vendor:device ID.
        #[arg(required_unless_present_any = ["remove", "check"])]
        target: Option<String>,
        /// Remove everything iommuctl persisted.
        #[arg(long, conflicts_with_all = ["target", "check"])]
        remove: bool,
        /// Simulate the next boot with what is persisted and change nothing: exit 0 fine, 1 warnings (a
        /// card moved, a group grew, no device), 3 a group the rules bind holds what the host needs.
        #[arg(long, conflicts_with_all = ["target", "dry_run", "driver"])]
        check: bool,
        /// Show the files and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The driver to persist.
        #[arg(long, default_value = "vfio-pci")]
        driver: String,
    },
    /// Open a device through VFIO: regions, interrupts, reset support and the IOMMU's IOVA ranges.
    Probe {
        /// PCI address (DDDD:BB:DD.F or BB:DD.F); its group must be bound to vfio-pci.
        address: String,
        /// `container` (/dev/vfio/vfio and the group) or `iommufd` (/dev/iommu and the device cdev);
        /// by default iommufd when the host has it and the device has a cdev.
        #[arg(long, value_name = "BACKEND", value_parser = ["container", "iommufd"])]
        backend: Option<String>,
    },
    /// Walk through what an IOMMU does on the software model: translation, bounce buffers, coalescing,
    /// isolation with a blocked access and its fault record.
    Sim,
    /// Is this host ready for device assignment? IOMMU, interrupt remapping, VFIO modules, iommufd, default
    /// domain, RMRR regions, boot VGA, reset methods; each failing item with its fix. Exit 0 ready, 1 not.
    Check,
    /// Print libvirt `<hostdev>` elements for every endpoint of TARGET's IOMMU group.
    Libvirt {
        /// A PCI address, or a vendor:device ID that matches exactly one device.
        target: String,
        /// Also pin guest addresses: each host slot becomes a guest slot on bus 0 from SLOT (hex) upwards,
        /// keeping functions and `multifunction='on'` (as `qemu` does). Without it libvirt places them.
        #[arg(long, value_name = "SLOT", value_parser = iommu_pci::parse_guest_slot)]
        guest_slot: Option<u8>,
        /// Use iommufd and the device cdev instead of the legacy container: `<driver iommufd='yes'/>` in
        /// every `<hostdev>` (libvirt 12.2+, a kernel with iommufd and VFIO device cdevs).
        #[arg(long)]
        iommufd: bool,
    },
    /// Print QEMU `-device vfio-pci` arguments for every endpoint of TARGET's IOMMU group, keeping the
    /// multifunction layout.
    Qemu {
        /// A PCI address, or a vendor:device ID that matches exactly one device.
        target: String,
        /// The first guest slot (hex, 0x1..0x1f) on the default root bus; each host slot takes the next.
        #[arg(long, value_name = "SLOT", default_value = "0x10", value_parser = iommu_pci::parse_guest_slot)]
        guest_slot: u8,
        /// Use iommufd and the device cdev instead of the legacy container: `-object iommufd,id=iommufd0`
        /// and `iommufd=iommufd0` on every device (QEMU 8.2+, a kernel with iommufd and VFIO device cdevs).
        #[arg(long)]
        iommufd: bool,
    },
    /// Print a Container Device Interface (CDI) spec with one device per IOMMU group of the targets, for
    /// container runtimes: `--device iommuctl.dev/vfio=GROUP`. Device nodes: the legacy container
    /// (/dev/vfio/vfio, /dev/vfio/GROUP) and/or iommufd (/dev/iommu, each endpoint's /dev/vfio/devices/vfioN);
    /// see --nodes. A group VFIO would refuse (a member on a host driver) exits 3.
    Cdi {
        /// PCI addresses or vendor:device IDs (each matching one device); their groups become the devices.
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<String>,
        /// The spec's kind, VENDOR/CLASS (a DNS-style vendor, a class name).
        #[arg(long, value_name = "VENDOR/CLASS", default_value = crate::cmd::cdi::DEFAULT_KIND, value_parser = crate::cmd::cdi::parse_kind)]
        kind: String,
        /// Which device nodes: auto (iommufd where the host shows /dev/iommu and every endpoint's cdev, the
        /// legacy container unless the host lacks /dev/vfio/vfio, both when both), container, iommufd, both.
        #[arg(long, value_enum, value_name = "NODES", default_value_t = crate::cmd::cdi::Nodes::Auto)]
        nodes: crate::cmd::cdi::Nodes,
        /// Write to FILE atomically (e.g. /etc/cdi/iommuctl.json) instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print KubeVirt `permittedHostDevices.pciHostDevices` entries (YAML; --json: a merge patch for the
    /// KubeVirt CR) for every endpoint of the targets' IOMMU groups; warns when a selector also matches
    /// devices in another group.
    Kubevirt {
        /// PCI addresses or vendor:device IDs (each matching one device).
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<String>,
        /// Resource names are PREFIX/vvvv-dddd.
        #[arg(long, value_name = "PREFIX", default_value = crate::cmd::kubevirt::DEFAULT_PREFIX, value_parser = crate::cmd::kubevirt::parse_prefix)]
        resource_prefix: String,
    },
    /// Compare two hosts: devices added, removed or moved, IOMMU groups split, merged or renumbered, and the
    /// cause of each change (an ACS verdict and its bits, a quirk, the kernel, its command line, the
    /// firmware). A and B are snapshot files or lspci dumps (told apart by their content), `-` for standard
    /// input, or `live` for the host below --root. Exit 0 same, 1 different.
    Diff {
        /// The host before: a snapshot, an lspci dump, `-` or `live`.
        #[arg(value_name = "A")]
        a: PathBuf,
        /// The host after: a snapshot, an lspci dump, `-` or `live`.
        #[arg(value_name = "B")]
        b: PathBuf,
    },
    /// Export facts for monitoring and scheduling: Prometheus textfile-collector metrics or a Node Feature
    /// Discovery feature file.
    Export {
        /// What to write.
        #[arg(long, value_enum)]
        format: crate::cmd::export::Format,
        /// Write to FILE atomically (temporary file + rename) instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Draw the PCI tree with IOMMU groups as coloured clusters: SVG drawn by iommuctl (no Graphviz needed),
    /// or Graphviz DOT.
    Graph {
        /// What to write.
        #[arg(long, value_enum, default_value_t = crate::cmd::graph::Format::Svg)]
        format: crate::cmd::graph::Format,
        /// Write to FILE atomically (temporary file + rename) instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print a shell completion script (e.g. `iommuctl completions bash > /etc/bash_completion.d/iommuctl`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from the command-line definition: `iommuctl man | man -l -`;
    /// `iommuctl man bind` for one subcommand's page; `--dir DIR` writes iommuctl.1 and every
    /// iommuctl-SUBCOMMAND.1.
    Man {
        /// Only this subcommand's page.
        #[arg(conflicts_with = "dir")]
        subcommand: Option<String>,
        /// Write every page into DIR instead of printing one.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Write a snapshot of everything the read-only commands need.
    Snapshot {
        /// Output file (`-` for standard output).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}
