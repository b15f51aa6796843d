//! Reading a live host (or a tree shaped like one) below a root directory.

use std::fs;
use std::io::{self, Read};
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

/// How much to read per function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// What `list` shows: the 64-byte config header (IDs, class, header type), driver and group links,
    /// group type and reserved regions. About a third of the file operations of [`Detail::Full`].
    Listing,
    /// Everything: full config space (as much as the kernel lets the caller read), driver_override, reset
    /// methods, boot VGA, NUMA node, IOMMU unit, SR-IOV, network interfaces.
    Full,
}

/// Reads at most `limit` bytes of a file.
fn read_prefix(path: &Path, limit: usize) -> Vec<u8> {
    let Ok(mut f) = fs::File::open(path) else { return Vec::new() };
    let mut buf = vec![0u8; limit];
    let mut n = 0;
    while n < limit {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    buf.truncate(n);
    buf
}

/// SR-IOV virtual functions read all ones for vendor and device ID (the spec says so); the kernel knows
/// the real IDs and shows them in the `vendor` and `device` attributes. Put those into the stored header,
/// so the function decodes.
fn patch_vf_ids(dir: &Path, config: &mut [u8]) {
    if config.len() < 4 || config[0..2] != [0xff, 0xff] {
        return;
    }
    let id = |name: &str| attr(dir, name).and_then(|s| u16::from_str_radix(s.trim_start_matches("0x"), 16).ok());
    if let (Some(v), Some(d)) = (id("vendor"), id("device")) {
        config[0..2].copy_from_slice(&v.to_le_bytes());
        config[2..4].copy_from_slice(&d.to_le_bytes());
    }
}

/// Reads one function's directory.
fn read_device(dir: &Path, address: PciAddress, parent: Option<PciAddress>, detail: Detail) -> HostDevice {
    let mut config = match detail {
        Detail::Listing => read_prefix(&dir.join("config"), 64),
        Detail::Full => fs::read(dir.join("config")).unwrap_or_default(),
    };
    patch_vf_ids(dir, &mut config);
    let mut d = HostDevice {
        address,
        parent,
        config,
        driver: link_name(dir, "driver"),
        driver_override: None,
        reset_methods: None,
        boot_vga: None,
        numa_node: None,
        iommu_group: link_name(dir, "iommu_group").and_then(|s| s.parse().ok()),
        iommu: None,
        physfn: None,
        sriov_totalvfs: None,
        sriov_numvfs: None,
        net: Vec::new(),
    };
    if detail == Detail::Full {
        d.driver_override = attr(dir, "driver_override").filter(|s| !s.is_empty() && s != "(null)");
        d.net = fs::read_dir(dir.join("net"))
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        d.reset_methods = attr(dir, "reset_method").map(|s| s.split_whitespace().map(str::to_string).collect());
        d.boot_vga = attr(dir, "boot_vga").map(|s| s == "1");
        d.numa_node = attr(dir, "numa_node").and_then(|s| s.parse().ok());
        d.iommu = link_name(dir, "iommu");
        d.physfn = link_name(dir, "physfn").and_then(|s| s.parse().ok());
        d.sriov_totalvfs = attr(dir, "sriov_totalvfs").and_then(|s| s.parse().ok());
        d.sriov_numvfs = attr(dir, "sriov_numvfs").and_then(|s| s.parse().ok());
    }
    d
}

/// Maps `f` over `items` on up to as many threads as the machine has cores, keeping order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8);
    if threads < 2 || items.len() < 256 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> =
            items.chunks(chunk).map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<R>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
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

fn read_groups(root: &Path, devices: &[HostDevice], detail: Detail) -> Result<Vec<KernelGroup>, HostError> {
    let dir = root.join("sys/kernel/iommu_groups");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HostError::Read { path: dir, source: e }),
    };
    let mut ids = Vec::new();
    for e in rd {
        let e = e.map_err(read_err(&dir))?;
        if let Some(id) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    // Listing: membership from each function's iommu_group link (already read) instead of one directory
    // listing per group.
    let mut members: std::collections::HashMap<u32, Vec<PciAddress>> = std::collections::HashMap::new();
    if detail == Detail::Listing {
        for d in devices {
            if let Some(g) = d.iommu_group {
                members.entry(g).or_default().push(d.address);
            }
        }
    }
    let groups = par_map(&ids, |&id| -> Result<KernelGroup, HostError> {
        let g = dir.join(id.to_string());
        let mut devices: Vec<PciAddress> = match detail {
            Detail::Listing => members.get(&id).cloned().unwrap_or_default(),
            Detail::Full => {
                let devdir = g.join("devices");
                fs::read_dir(&devdir)
                    .map_err(read_err(&devdir))?
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                    .collect()
            }
        };
        devices.sort_unstable();
        let reserved_regions = attr(&g, "reserved_regions")
            .map(|s| s.lines().filter_map(ReservedRegion::parse_line).collect())
            .unwrap_or_default();
        Ok(KernelGroup { id, kind: attr(&g, "type"), reserved_regions, devices })
    });
    groups.into_iter().collect()
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Reads everything about the host below `root` (`/` for the live system) into a snapshot.
pub fn read_host(root: &Path) -> Result<Snapshot, HostError> {
    read_host_with(root, Detail::Full)
}

/// Reads the host below `root` at the given level of detail. Functions and groups are read on up to as
/// many threads as the machine has cores; the result does not depend on it.
pub fn read_host_with(root: &Path, detail: Detail) -> Result<Snapshot, HostError> {
    let funcs = list_functions(root)?;
    let devices: Vec<HostDevice> = par_map(&funcs, |(a, p, par)| read_device(p, *a, *par, detail));
    let groups = read_groups(root, &devices, detail)?;
    let acpi_tables =
        dir_names(&root.join("sys/firmware/acpi/tables")).into_iter().filter(|t| t == "DMAR" || t == "IVRS").collect();
    let release = attr(root, "proc/sys/kernel/osrelease");
    let readiness = (detail == Detail::Full).then(|| crate::readiness::read_facts(root, release.as_deref()));
    Ok(Snapshot {
        format: FORMAT.to_string(),
        version: VERSION,
        kernel: KernelInfo { release, cmdline: attr(root, "proc/cmdline") },
        iommu_units: dir_names(&root.join("sys/class/iommu")),
        acpi_tables,
        groups,
        devices,
        readiness,
    })
}
