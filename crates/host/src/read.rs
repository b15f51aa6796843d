//! Reading a live host (or a tree shaped like one) below a root directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use iommu_pci::PciAddress;

use crate::snapshot::{HostDevice, KernelGroup, KernelInfo, ReservedRegion, Snapshot, FORMAT, VERSION};

/// Why the host could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A directory or file that must exist could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A name under sys/bus/pci/devices is not a PCI address.
    #[error("{path} is not named like a PCI function")]
    BadName {
        /// The path.
        path: PathBuf,
    },
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> HostError + '_ {
    move |source| HostError::Read { path: path.to_path_buf(), source }
}

/// Reads a small attribute, trimmed; `None` if it does not exist or cannot be read.
fn attr(dir: &Path, name: &str) -> Option<String> {
    fs::read_to_string(dir.join(name)).ok().map(|s| s.trim().to_string())
}

fn link_name(dir: &Path, name: &str) -> Option<String> {
    let t = fs::read_link(dir.join(name)).ok()?;
    t.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Reads one function's directory.
fn read_device(dir: &Path, address: PciAddress, parent: Option<PciAddress>) -> HostDevice {
    let config = fs::read(dir.join("config")).unwrap_or_default();
    let driver_override = attr(dir, "driver_override").filter(|s| !s.is_empty() && s != "(null)");
    let net = fs::read_dir(dir.join("net"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    HostDevice {
        address,
        parent,
        config,
        driver: link_name(dir, "driver"),
        driver_override,
        reset_methods: attr(dir, "reset_method").map(|s| s.split_whitespace().map(str::to_string).collect()),
        boot_vga: attr(dir, "boot_vga").map(|s| s == "1"),
        numa_node: attr(dir, "numa_node").and_then(|s| s.parse().ok()),
        iommu_group: link_name(dir, "iommu_group").and_then(|s| s.parse().ok()),
        iommu: link_name(dir, "iommu"),
        physfn: link_name(dir, "physfn").and_then(|s| s.parse().ok()),
        sriov_totalvfs: attr(dir, "sriov_totalvfs").and_then(|s| s.parse().ok()),
        sriov_numvfs: attr(dir, "sriov_numvfs").and_then(|s| s.parse().ok()),
        net,
    }
}

/// The parent bridge from the canonical device path: the path component before the function's own, if
/// it is a PCI address (otherwise the function sits on a root bus, below `pciDDDD:BB`).
fn parent_from_link(target: &Path) -> Option<PciAddress> {
    let mut comps = target.components().rev();
    comps.next()?;
    comps.next()?.as_os_str().to_str()?.parse().ok()
}

/// Lists the PCI functions: (address, directory, parent).
fn list_functions(root: &Path) -> Result<Vec<(PciAddress, PathBuf, Option<PciAddress>)>, HostError> {
    let bus = root.join("sys/bus/pci/devices");
    let mut out = Vec::new();
    for e in fs::read_dir(&bus).map_err(read_err(&bus))? {
        let e = e.map_err(read_err(&bus))?;
        let name = e.file_name();
        let path = e.path();
        let address: PciAddress =
            name.to_str().and_then(|n| n.parse().ok()).ok_or_else(|| HostError::BadName { path: path.clone() })?;
        let parent = fs::read_link(&path).ok().as_deref().and_then(parent_from_link);
        out.push((address, path, parent));
    }
    out.sort_by_key(|(a, _, _)| *a);
    Ok(out)
}

fn read_groups(root: &Path) -> Result<Vec<KernelGroup>, HostError> {
    let dir = root.join("sys/kernel/iommu_groups");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HostError::Read { path: dir, source: e }),
    };
    let mut groups = Vec::new();
    for e in rd {
        let e = e.map_err(read_err(&dir))?;
        let Some(id) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let g = e.path();
        let devdir = g.join("devices");
        let mut devices: Vec<PciAddress> = fs::read_dir(&devdir)
            .map_err(read_err(&devdir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        devices.sort_unstable();
        let reserved_regions = attr(&g, "reserved_regions")
            .map(|s| s.lines().filter_map(ReservedRegion::parse_line).collect())
            .unwrap_or_default();
        groups.push(KernelGroup { id, kind: attr(&g, "type"), reserved_regions, devices });
    }
    groups.sort_by_key(|g| g.id);
    Ok(groups)
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Reads the host below `root` (`/` for the live system) into a snapshot.
///
/// Functions are read on up to as many threads as the machine has cores; the result does not depend on it.
pub fn read_host(root: &Path) -> Result<Snapshot, HostError> {
    let funcs = list_functions(root)?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8);
    let chunk = funcs.len().div_ceil(threads).max(64);
    let devices: Vec<HostDevice> = std::thread::scope(|s| {
        let handles: Vec<_> = funcs
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|(a, p, par)| read_device(p, *a, *par)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    let groups = read_groups(root)?;
    let acpi_tables =
        dir_names(&root.join("sys/firmware/acpi/tables")).into_iter().filter(|t| t == "DMAR" || t == "IVRS").collect();
    Ok(Snapshot {
        format: FORMAT.to_string(),
        version: VERSION,
        kernel: KernelInfo { release: attr(root, "proc/sys/kernel/osrelease"), cmdline: attr(root, "proc/cmdline") },
        iommu_units: dir_names(&root.join("sys/class/iommu")),
        acpi_tables,
        groups,
        devices,
    })
}
