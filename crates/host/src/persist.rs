//! Making a binding survive a reboot, by address: a udev rule that sets `driver_override` when the device
//! appears, and a modprobe softdep so vfio-pci is loaded before the host driver that would claim it.
//!
//! Both files are iommuctl's own, rebuilt whole on each change from validated values only: addresses are
//! [`PciAddress`]es and drivers [`DriverName`]s, and the existing files are parsed back into those (a line
//! iommuctl would not write is refused, not copied). Read-modify-write is only safe under the state-dir
//! lock ([`crate::journal::StateDir::lock`]): take it before [`plan_persist`] and hold it over [`apply`].

use std::path::{Path, PathBuf};

use iommu_fsio::{FsError, Limit};
use iommu_pci::PciAddress;
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

/// The udev rule line for one device.
pub fn udev_line(a: PciAddress, driver: &DriverName) -> String {
    format!("{RULE_PREFIX}{a}{RULE_MIDDLE}{driver}\"")
}

/// Parses one udev rule line iommuctl wrote.
pub fn parse_udev_line(l: &str) -> Option<(PciAddress, DriverName)> {
    let rest = l.strip_prefix(RULE_PREFIX)?;
    let (addr, rest) = rest.split_once(RULE_MIDDLE)?;
    let drv = rest.strip_suffix('"')?;
    Some((addr.parse().ok()?, DriverName::parse(drv).ok()?))
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

/// Reads one of iommuctl's files below `root` (empty when missing) and parses every line that is not a
/// comment or blank with `parse`.
fn read_lines<T>(root: &Path, rel: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, PersistError> {
    let path = root.join(rel);
    let text = match iommu_fsio::read_text(&path, Limit::TABLE) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() || l.starts_with('#') {
            continue;
        }
        out.push(parse(l).ok_or_else(|| PersistError::Unrecognized {
            path: path.clone(),
            line: i + 1,
            text: l.chars().take(200).collect(),
        })?);
    }
    Ok(out)
}

/// Devices already persisted, read back from the udev rule.
pub fn persisted(root: &Path) -> Result<Vec<(PciAddress, DriverName)>, PersistError> {
    read_lines(root, UDEV_RULE, parse_udev_line)
}

/// The files that persist `devices` (address, driver) plus what is already persisted. `host_drivers` are
/// the drivers that would otherwise claim them (for softdeps). Call with the state lock held.
pub fn plan_persist(
    root: &Path,
    devices: &[(PciAddress, DriverName)],
    host_drivers: &[DriverName],
) -> Result<Vec<FileChange>, PersistError> {
    let mut all = persisted(root)?;
    for d in devices {
        all.retain(|(a, _)| *a != d.0);
        all.push(d.clone());
    }
    all.sort();
    all.dedup_by_key(|(a, _)| *a);
    let mut rule = String::from(HEADER);
    for (a, drv) in &all {
        rule.push_str(&udev_line(*a, drv));
        rule.push('\n');
    }
    let vfio = DriverName::parse("vfio-pci").expect("a valid name");
    let mut softdeps: Vec<(DriverName, DriverName)> = read_lines(root, MODPROBE_CONF, parse_softdep_line)?;
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
