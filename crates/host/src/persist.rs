//! Making a binding survive a reboot, by address: a udev rule that sets `driver_override` when the device
//! appears, and a modprobe softdep so vfio-pci is loaded before the host driver that would claim it.
//!
//! Each rule also matches the vendor and device ID the address held when it was persisted, so a different
//! card in that slot after a hardware change is left to its own driver; and a comment line before it
//! records the IOMMU group the device had, so that [`crate::nextboot`] can say when the group has grown.
//! Rules written before IDs were recorded (address only) are still read.
//!
//! Both files are iommuctl's own, rebuilt whole on each change from validated values only: addresses are
//! [`PciAddress`]es and drivers [`DriverName`]s, and the existing files are parsed back into those (a line
//! iommuctl would not write is refused, not copied). Read-modify-write is only safe under the state-dir
//! lock ([`crate::journal::StateDir::lock`]): take it before [`plan_persist`] and hold it over [`apply`].

use std::path::{Path, PathBuf};

use iommu_fsio::{FsError, Limit};
use iommu_pci::{ConfigInfo, PciAddress};
use serde::Serialize;

use crate::driver::DriverName;

/// The udev rule file iommuctl owns.
pub const UDEV_RULE: &str = "etc/udev/rules.d/61-iommuctl-vfio.rules";
/// The modprobe configuration file iommuctl owns.
pub const MODPROBE_CONF: &str = "etc/modprobe.d/iommuctl-vfio.conf";

/// A file to write (or remove) with its full new content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// Path below the root.
    pub path: PathBuf,
    /// New content; `None` removes the file.
    pub content: Option<String>,
}

/// Why persistence failed.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// A file could not be read or written. The message names it and the OS error already, so the error
    /// is not chained again as a source (it would print twice).
    #[error("{0}")]
    Fs(FsError),
    /// An existing file holds a line iommuctl does not write.
    #[error("{path} line {line}: {text:?} is not a line iommuctl writes; fix or remove the file")]
    Unrecognized {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line (at most 200 characters).
        text: String,
    },
}

impl From<FsError> for PersistError {
    fn from(e: FsError) -> Self {
        PersistError::Fs(e)
    }
}

const HEADER: &str = "# Written by iommuctl persist; `iommuctl persist --remove` deletes it.\n";
const RULE_PREFIX: &str = "ACTION==\"add\", SUBSYSTEM==\"pci\", KERNEL==\"";
const RULE_MIDDLE: &str = "\", ATTR{driver_override}=\"";
const GROUP_MIDDLE: &str = " was persisted with its IOMMU group:";

/// A vendor and device ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DeviceIds {
    /// The vendor ID.
    pub vendor: u16,
    /// The device ID.
    pub device: u16,
}

impl DeviceIds {
    /// The IDs of a configuration space ([`ConfigInfo::parse`]); `None` when it does not decode or reads all
    /// ones.
    pub fn from_config(config: &[u8]) -> Option<DeviceIds> {
        let c = ConfigInfo::parse(config).ok()?;
        (c.vendor_id != 0xffff).then_some(DeviceIds { vendor: c.vendor_id, device: c.device_id })
    }
}

impl std::fmt::Display for DeviceIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor, self.device)
    }
}

/// One persisted binding, as the udev rule file records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Persisted {
    /// The device's address.
    pub address: PciAddress,
    /// The driver its `driver_override` names.
    pub driver: DriverName,
    /// The IDs the rule requires; `None` for a rule that matches the address alone.
    pub ids: Option<DeviceIds>,
    /// The device's IOMMU group when it was persisted, when recorded.
    pub group: Option<Vec<PciAddress>>,
}

impl Persisted {
    /// A binding of `address` to `driver` with nothing recorded.
    pub fn new(address: PciAddress, driver: DriverName) -> Persisted {
        Persisted { address, driver, ids: None, group: None }
    }
}

/// The udev rule line for one device: its address, and its IDs when known.
pub fn udev_line(p: &Persisted) -> String {
    let ids = p
        .ids
        .map(|i| format!("\", ATTR{{vendor}}==\"0x{:04x}\", ATTR{{device}}==\"0x{:04x}", i.vendor, i.device))
        .unwrap_or_default();
    format!("{RULE_PREFIX}{}{ids}{RULE_MIDDLE}{}\"", p.address, p.driver)
}

/// Parses one udev rule line iommuctl wrote (with or without the ID match); the group is not on it.
pub fn parse_udev_line(l: &str) -> Option<Persisted> {
    let rest = l.strip_prefix(RULE_PREFIX)?;
    let (head, rest) = rest.split_once(RULE_MIDDLE)?;
    let drv = rest.strip_suffix('"')?;
    let (addr, ids) = match head.split_once("\", ATTR{vendor}==\"0x") {
        None => (head, None),
        Some((addr, ids)) => {
            let (v, d) = ids.split_once("\", ATTR{device}==\"0x")?;
            // Exactly the four lowercase hex digits iommuctl writes (from_str_radix alone takes `+10d`).
            let hex = |s: &str| {
                (s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
                    .then(|| u16::from_str_radix(s, 16).ok())
                    .flatten()
            };
            (addr, Some(DeviceIds { vendor: hex(v)?, device: hex(d)? }))
        }
    };
    // Only the full form iommuctl writes: udev compares KERNEL as text, so `01:00.0` would match nothing
    // today and something once rewritten in full.
    let address: PciAddress = addr.parse().ok()?;
    if address.to_string() != addr {
        return None;
    }
    Some(Persisted { address, driver: DriverName::parse(drv).ok()?, ids, group: None })
}

/// The comment line that records a persisted device's group.
pub fn group_line(address: PciAddress, group: &[PciAddress]) -> String {
    let members: Vec<String> = group.iter().map(|a| a.to_string()).collect();
    format!("# {address}{GROUP_MIDDLE} {}", members.join(" "))
}

/// Parses a group comment line iommuctl wrote.
pub fn parse_group_line(l: &str) -> Option<(PciAddress, Vec<PciAddress>)> {
    let (addr, members) = l.strip_prefix("# ")?.split_once(GROUP_MIDDLE)?;
    let full = |s: &str| s.parse::<PciAddress>().ok().filter(|a| a.to_string() == s);
    let members: Option<Vec<PciAddress>> = members.split_whitespace().map(full).collect();
    Some((full(addr)?, members.filter(|m| !m.is_empty())?))
}

/// The softdep line that loads `pre` before `module`.
pub fn softdep_line(module: &DriverName, pre: &DriverName) -> String {
    format!("softdep {} pre: {}", module.module(), pre.as_str())
}

/// Parses one softdep line iommuctl wrote: (module, pre-dependency).
pub fn parse_softdep_line(l: &str) -> Option<(DriverName, DriverName)> {
    let mut w = l.split(' ');
    let (Some("softdep"), Some(m), Some("pre:"), Some(p), None) = (w.next(), w.next(), w.next(), w.next(), w.next())
    else {
        return None;
    };
    Some((DriverName::parse(m).ok()?, DriverName::parse(p).ok()?))
}

/// Reads one of iommuctl's files below `root` (empty when missing) and parses every line that is not
/// blank with `parse`; `parse` gets comment lines too and may answer `Some(None)` to skip one.
fn read_lines<T>(root: &Path, rel: &str, parse: impl Fn(&str) -> Option<Option<T>>) -> Result<Vec<T>, PersistError> {
    let path = root.join(rel);
    let text = match iommu_fsio::read_text(&path, Limit::TABLE) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let parsed = parse(l).ok_or_else(|| PersistError::Unrecognized {
            path: path.clone(),
            line: i + 1,
            text: l.chars().take(200).collect(),
        })?;
        out.extend(parsed);
    }
    Ok(out)
}

/// A comment, a rule or a group record of the udev file.
enum RuleLine {
    Rule(Persisted),
    Group(PciAddress, Vec<PciAddress>),
}

/// Devices already persisted, read back from the udev rule, with their recorded groups.
pub fn persisted(root: &Path) -> Result<Vec<Persisted>, PersistError> {
    let lines = read_lines(root, UDEV_RULE, |l| {
        if let Some((a, g)) = parse_group_line(l) {
            Some(Some(RuleLine::Group(a, g)))
        } else if l.starts_with('#') {
            Some(None)
        } else {
            parse_udev_line(l).map(|p| Some(RuleLine::Rule(p)))
        }
    })?;
    let mut groups = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for l in lines {
        match l {
            RuleLine::Group(a, g) => {
                groups.insert(a, g);
            }
            RuleLine::Rule(p) => out.push(p),
        }
    }
    for p in &mut out {
        p.group = groups.remove(&p.address);
    }
    Ok(out)
}

/// Everything persisted after adding `devices` to what is already there (a device persisted again replaces
/// its old entry), in address order.
pub fn merged(root: &Path, devices: &[Persisted]) -> Result<Vec<Persisted>, PersistError> {
    let mut all = persisted(root)?;
    all.retain(|p| !devices.iter().any(|d| d.address == p.address));
    all.extend(devices.iter().cloned());
    all.sort_by_key(|p| p.address);
    all.dedup_by_key(|p| p.address);
    Ok(all)
}

/// The files that persist `devices` plus what is already persisted. `host_drivers` are the drivers that
/// would otherwise claim them (for softdeps). Call with the state lock held.
pub fn plan_persist(
    root: &Path,
    devices: &[Persisted],
    host_drivers: &[DriverName],
) -> Result<Vec<FileChange>, PersistError> {
    plan_files(root, &merged(root, devices)?, host_drivers)
}

/// The files for `all`, everything persisted once the change is made ([`merged`]); the softdeps already
/// there are kept and `host_drivers`' added. Call with the state lock held.
pub fn plan_files(
    root: &Path,
    all: &[Persisted],
    host_drivers: &[DriverName],
) -> Result<Vec<FileChange>, PersistError> {
    let mut rule = String::from(HEADER);
    for p in all {
        if let Some(g) = &p.group {
            rule.push_str(&group_line(p.address, g));
            rule.push('\n');
        }
        rule.push_str(&udev_line(p));
        rule.push('\n');
    }
    let vfio = DriverName::parse("vfio-pci").expect("a valid name");
    let mut softdeps: Vec<(DriverName, DriverName)> =
        read_lines(
            root,
            MODPROBE_CONF,
            |l| {
                if l.starts_with('#') {
                    Some(None)
                } else {
                    parse_softdep_line(l).map(Some)
                }
            },
        )?;
    for h in host_drivers {
        if h.as_str() != "vfio-pci" && h.as_str() != "pcieport" {
            softdeps.push((h.clone(), vfio.clone()));
        }
    }
    let mut lines: Vec<String> = softdeps.iter().map(|(m, p)| softdep_line(m, p)).collect();
    lines.sort();
    lines.dedup();
    let mut conf = String::from(HEADER);
    for s in lines {
        conf.push_str(&s);
        conf.push('\n');
    }
    Ok(vec![
        FileChange { path: PathBuf::from(UDEV_RULE), content: Some(rule) },
        FileChange { path: PathBuf::from(MODPROBE_CONF), content: Some(conf) },
    ])
}

/// The changes that remove everything iommuctl persisted.
pub fn plan_remove() -> Vec<FileChange> {
    vec![
        FileChange { path: PathBuf::from(UDEV_RULE), content: None },
        FileChange { path: PathBuf::from(MODPROBE_CONF), content: None },
    ]
}

/// Applies changes below `root`, each file written atomically (mode `0644`, through a unique
/// `O_EXCL|O_NOFOLLOW` temporary file). Call with the state lock held.
pub fn apply(root: &Path, changes: &[FileChange]) -> Result<(), PersistError> {
    for c in changes {
        let path = root.join(&c.path);
        match &c.content {
            None => iommu_fsio::remove(&path)?,
            Some(text) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|source| FsError::Io {
                        action: "create",
                        path: dir.to_path_buf(),
                        source,
                    })?;
                }
                iommu_fsio::write_atomic(&path, text.as_bytes(), 0o644)?;
            }
        }
    }
    Ok(())
}
