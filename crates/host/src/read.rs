//! Reading a live host (or a tree shaped like one) below a root directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use iommu_fsio::{FsError, Limit};
use iommu_pci::PciAddress;

use crate::snapshot::{Firmware, HostDevice, KernelGroup, KernelInfo, Snapshot, Unreadable, FORMAT, VERSION};

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

/// Host files that exist but could not be read (a FIFO, a device, a file over its size limit, an I/O
/// error), collected from every reading thread. A file that does not exist is not noted: most
/// attributes exist only for some devices.
#[derive(Default)]
struct Notes(Mutex<Vec<Unreadable>>);

impl Notes {
    fn note(&self, e: &FsError) {
        if !e.is_not_found() {
            let u = Unreadable { path: e.path().to_path_buf(), error: e.to_string() };
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(u);
        }
    }

    fn note_text(&self, path: PathBuf, error: String) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(Unreadable { path, error });
    }

    /// Reads a small attribute, trimmed; `None` if it does not exist or cannot be read (noted).
    fn attr(&self, dir: &Path, name: &str) -> Option<String> {
        self.text(&dir.join(name), Limit::ATTRIBUTE).map(|s| s.trim().to_string())
    }

    fn text(&self, path: &Path, limit: Limit) -> Option<String> {
        iommu_fsio::read_text(path, limit).map_err(|e| self.note(&e)).ok()
    }

    fn bytes(&self, path: &Path, limit: Limit) -> Vec<u8> {
        iommu_fsio::read(path, limit).map_err(|e| self.note(&e)).unwrap_or_default()
    }

    fn prefix(&self, path: &Path, n: usize) -> Vec<u8> {
        iommu_fsio::read_prefix(path, n).map_err(|e| self.note(&e)).unwrap_or_default()
    }

    fn into_sorted(self) -> Vec<Unreadable> {
        let mut v = self.0.into_inner().unwrap_or_else(|p| p.into_inner());
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }
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

/// SR-IOV virtual functions read all ones for vendor and device ID (the spec says so); the kernel knows
/// the real IDs and shows them in the `vendor` and `device` attributes. Put those into the stored header,
/// so the function decodes.
fn patch_vf_ids(notes: &Notes, dir: &Path, config: &mut [u8]) {
    if config.len() < 4 || config[0..2] != [0xff, 0xff] {
        return;
    }
    let id = |name: &str| notes.attr(dir, name).and_then(|s| u16::from_str_radix(s.trim_start_matches("0x"), 16).ok());
    if let (Some(v), Some(d)) = (id("vendor"), id("device")) {
        config[0..2].copy_from_slice(&v.to_le_bytes());
        config[2..4].copy_from_slice(&d.to_le_bytes());
    }
}

/// Reads one function's directory.
fn read_device(notes: &Notes, dir: &Path, f: &Listed, detail: Detail) -> HostDevice {
    let (address, parent) = (f.address, f.parent);
    let mut config = match detail {
        Detail::Listing => notes.prefix(&dir.join("config"), 64),
        Detail::Full => notes.bytes(&dir.join("config"), Limit::CONFIG),
    };
    patch_vf_ids(notes, dir, &mut config);
    let mut d = HostDevice {
        address,
        parent,
        config,
        driver: link_name(dir, "driver"),
        driver_override: None,
        reset_methods: None,
        boot_vga: None,
        numa_node: None,
        iommu_group: group_link(notes, dir),
        iommu: None,
        physfn: None,
        sriov_totalvfs: None,
        sriov_numvfs: None,
        dma_device: f.dma_device,
        net: Vec::new(),
        vfio_cdev: None,
        config_from_text: false,
    };
    if detail == Detail::Full {
        d.driver_override = notes.attr(dir, "driver_override").filter(|s| !s.is_empty() && s != "(null)");
        d.net = fs::read_dir(dir.join("net"))
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        d.vfio_cdev = fs::read_dir(dir.join("vfio-dev")).ok().and_then(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with("vfio"))
        });
        d.reset_methods = notes.attr(dir, "reset_method").map(|s| s.split_whitespace().map(str::to_string).collect());
        d.boot_vga = notes.attr(dir, "boot_vga").map(|s| s == "1");
        d.numa_node = notes.attr(dir, "numa_node").and_then(|s| s.parse().ok());
        d.iommu = link_name(dir, "iommu");
        d.physfn = link_name(dir, "physfn").and_then(|s| s.parse().ok());
        d.sriov_totalvfs = notes.attr(dir, "sriov_totalvfs").and_then(|s| s.parse().ok());
        d.sriov_numvfs = notes.attr(dir, "sriov_numvfs").and_then(|s| s.parse().ok());
    }
    d
}

/// The group a function's `iommu_group` link names, when the link resolves to a group directory. A
/// dangling link (the group directory is gone) means no group, and is noted: every command then gives
/// the same answer for the function.
fn group_link(notes: &Notes, dir: &Path) -> Option<u32> {
    let link = dir.join("iommu_group");
    let id: u32 = link_name(dir, "iommu_group")?.parse().ok()?;
    if !link.is_dir() {
        notes.note_text(link, format!("the link names IOMMU group {id}, which does not exist"));
        return None;
    }
    Some(id)
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

/// The Intel VMD endpoint a function's DMA goes through, from its canonical device path: the last PCI
/// function in the path that a PCI root bus (`pciDDDD:BB`) hangs below. Only VMD puts a PCI domain below a
/// PCI function (`/sys/devices/pci0000:00/0000:00:0e.0/pci10000:e0/10000:e0:06.0/...`).
fn vmd_endpoint_from_link(target: &Path) -> Option<PciAddress> {
    let mut last_function: Option<PciAddress> = None;
    let mut endpoint = None;
    for c in target.components() {
        let Some(name) = c.as_os_str().to_str() else { continue };
        if let Ok(a) = name.parse::<PciAddress>() {
            last_function = Some(a);
        } else if is_root_bus_name(name) {
            if let Some(a) = last_function {
                endpoint = Some(a);
            }
        }
    }
    endpoint
}

/// Whether a sysfs directory name is a PCI root bus's: `pci` then a hex domain (4 digits or more), `:`, a
/// 2-digit hex bus.
fn is_root_bus_name(name: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    name.strip_prefix("pci")
        .and_then(|r| r.split_once(':'))
        .is_some_and(|(dom, bus)| dom.len() >= 4 && dom.len() <= 8 && hex(dom) && bus.len() == 2 && hex(bus))
}

/// A PCI function as listed in `sys/bus/pci/devices`, with what its canonical path says.
struct Listed {
    address: PciAddress,
    path: PathBuf,
    parent: Option<PciAddress>,
    dma_device: Option<PciAddress>,
}

/// Lists the PCI functions.
fn list_functions(root: &Path) -> Result<Vec<Listed>, HostError> {
    let bus = root.join("sys/bus/pci/devices");
    let mut out = Vec::new();
    for e in fs::read_dir(&bus).map_err(read_err(&bus))? {
        let e = e.map_err(read_err(&bus))?;
        let name = e.file_name();
        let path = e.path();
        let address: PciAddress =
            name.to_str().and_then(|n| n.parse().ok()).ok_or_else(|| HostError::BadName { path: path.clone() })?;
        let link = fs::read_link(&path).ok();
        let parent = link.as_deref().and_then(parent_from_link);
        let dma_device = link.as_deref().and_then(vmd_endpoint_from_link).filter(|&e| e != address);
        out.push(Listed { address, path, parent, dma_device });
    }
    out.sort_by_key(|f| f.address);
    Ok(out)
}

/// The raw ACPI IVRS table, when the host has one and the caller may read it (root only; an unprivileged
/// read is refused by the kernel and is not a problem worth a warning).
fn read_ivrs(notes: &Notes, root: &Path) -> Option<Vec<u8>> {
    let path = root.join("sys/firmware/acpi/tables/IVRS");
    match iommu_fsio::read(&path, Limit::TABLE) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.io_error().is_some_and(|io| io.kind() == io::ErrorKind::PermissionDenied) => None,
        Err(e) => {
            notes.note(&e);
            None
        }
    }
}

fn read_groups(notes: &Notes, root: &Path, devices: &[HostDevice]) -> Result<Vec<KernelGroup>, HostError> {
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
    // Membership from each function's iommu_group link (already read, and checked to resolve), at every
    // level of detail: one rule, so `list` and `show` cannot disagree about a function.
    let mut members: std::collections::HashMap<u32, Vec<PciAddress>> = std::collections::HashMap::new();
    for d in devices {
        if let Some(g) = d.iommu_group {
            members.entry(g).or_default().push(d.address);
        }
    }
    let groups = par_map(&ids, |&id| -> KernelGroup {
        let g = dir.join(id.to_string());
        let mut devices: Vec<PciAddress> = members.get(&id).cloned().unwrap_or_default();
        devices.sort_unstable();
        let reserved_regions = notes
            .attr(&g, "reserved_regions")
            .map(|s| iommu_pci::regions::parse_reserved_regions(&s))
            .unwrap_or_default();
        KernelGroup { id, kind: notes.attr(&g, "type"), reserved_regions, devices }
    });
    Ok(groups)
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
    let notes = Notes::default();
    let funcs = list_functions(root)?;
    let devices: Vec<HostDevice> = par_map(&funcs, |f| read_device(&notes, &f.path, f, detail));
    let groups = read_groups(&notes, root, &devices)?;
    let acpi_tables =
        dir_names(&root.join("sys/firmware/acpi/tables")).into_iter().filter(|t| t == "DMAR" || t == "IVRS").collect();
    let release = notes.attr(root, "proc/sys/kernel/osrelease");
    let cmdline = notes.text(&root.join("proc/cmdline"), Limit::CMDLINE).map(|s| s.trim().to_string());
    let acpi_ivrs = read_ivrs(&notes, root);
    let readiness = (detail == Detail::Full).then(|| crate::readiness::read_facts(root, release.as_deref()));
    let firmware = if detail == Detail::Full { read_firmware(root) } else { None };
    Ok(Snapshot {
        format: FORMAT.to_string(),
        version: VERSION,
        kernel: KernelInfo { release, cmdline, acpi_ivrs },
        iommu_units: dir_names(&root.join("sys/class/iommu")),
        acpi_tables,
        groups,
        devices,
        readiness,
        unreadable: notes.into_sorted(),
        firmware,
    })
}

/// The DMI firmware and board facts below `root` (`sys/class/dmi/id`); `None` when none could be read
/// (no DMI: most non-x86 hosts, containers without the directory, test trees). Each attribute is read
/// through [`iommu_fsio::attr`] (bounded, non-blocking, regular files only) and an empty value counts as
/// missing.
fn read_firmware(root: &Path) -> Option<Firmware> {
    let dir = root.join("sys/class/dmi/id");
    let read = |name: &str| iommu_fsio::attr(&dir.join(name)).filter(|s| !s.is_empty());
    let f = Firmware {
        bios_vendor: read("bios_vendor"),
        bios_version: read("bios_version"),
        bios_date: read("bios_date"),
        sys_vendor: read("sys_vendor"),
        product_name: read("product_name"),
        board_name: read("board_name"),
    };
    (f != Firmware::default()).then_some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dmi_firmware_is_read_when_present_and_absent_otherwise() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(read_firmware(t.path()), None, "no DMI directory: no firmware field");
        let dmi = t.path().join("sys/class/dmi/id");
        fs::create_dir_all(&dmi).unwrap();
        fs::write(dmi.join("bios_version"), "1.16.2-debian-1.16.2-1\n").unwrap();
        fs::write(dmi.join("bios_date"), "04/01/2014\n").unwrap();
        fs::write(dmi.join("board_name"), "\n").unwrap();
        let f = read_firmware(t.path()).unwrap();
        assert_eq!(f.bios_version.as_deref(), Some("1.16.2-debian-1.16.2-1"));
        assert_eq!(f.bios_date.as_deref(), Some("04/01/2014"));
        assert_eq!(f.board_name, None, "an empty attribute counts as missing");
        assert_eq!(f.bios_vendor, None);
        // A FIFO where an attribute should be is skipped, not waited on.
        let fifo = dmi.join("sys_vendor");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert_eq!(read_firmware(t.path()).unwrap().sys_vendor, None);
    }

    #[test]
    fn a_snapshot_without_firmware_serializes_as_before() {
        let s = Snapshot::default();
        assert!(!s.to_json().contains("firmware"));
        let back = Snapshot::from_json_slice(
            br#"{"format":"iommuctl-snapshot","version":1,"kernel":{"release":null,"cmdline":null},
                "iommu_units":[],"acpi_tables":[],"groups":[],"devices":[]}"#,
        )
        .unwrap();
        assert_eq!(back.firmware, None);
    }
}
