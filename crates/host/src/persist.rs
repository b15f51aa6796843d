//! Making a binding survive a reboot, by address: a udev rule that sets `driver_override` when the device
//! appears, and a modprobe softdep so vfio-pci is loaded before the host driver that would claim it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use iommu_pci::PciAddress;
use serde::Serialize;

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
#[error("cannot write {path}")]
pub struct PersistError {
    /// The file.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

const HEADER: &str = "# Written by iommuctl persist; `iommuctl persist --remove` deletes it.\n";

/// Devices already persisted, read back from the udev rule.
pub fn persisted(root: &Path) -> Vec<(PciAddress, String)> {
    let text = fs::read_to_string(root.join(UDEV_RULE)).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let k = l.split("KERNEL==\"").nth(1)?.split('"').next()?;
            let d = l.split("ATTR{driver_override}=\"").nth(1)?.split('"').next()?;
            Some((k.parse().ok()?, d.to_string()))
        })
        .collect()
}

/// The files that persist `devices` (address, driver) plus what is already persisted. `host_drivers` are
/// the drivers that would otherwise claim them (for softdeps).
pub fn plan_persist(root: &Path, devices: &[(PciAddress, String)], host_drivers: &[String]) -> Vec<FileChange> {
    let mut all = persisted(root);
    for d in devices {
        all.retain(|(a, _)| *a != d.0);
        all.push(d.clone());
    }
    all.sort();
    let mut rule = String::from(HEADER);
    for (a, drv) in &all {
        rule.push_str(&format!(
            "ACTION==\"add\", SUBSYSTEM==\"pci\", KERNEL==\"{a}\", ATTR{{driver_override}}=\"{drv}\"\n"
        ));
    }
    let mut conf = String::from(HEADER);
    let existing = fs::read_to_string(root.join(MODPROBE_CONF)).unwrap_or_default();
    let mut softdeps: Vec<String> =
        existing.lines().filter(|l| l.starts_with("softdep ")).map(str::to_string).collect();
    for h in host_drivers {
        let module = h.replace('-', "_");
        let line = format!("softdep {module} pre: vfio-pci");
        if !softdeps.contains(&line) && h != "vfio-pci" && h != "pcieport" {
            softdeps.push(line);
        }
    }
    softdeps.sort();
    for s in softdeps {
        conf.push_str(&s);
        conf.push('\n');
    }
    vec![
        FileChange { path: PathBuf::from(UDEV_RULE), content: Some(rule) },
        FileChange { path: PathBuf::from(MODPROBE_CONF), content: Some(conf) },
    ]
}

/// The changes that remove everything iommuctl persisted.
pub fn plan_remove() -> Vec<FileChange> {
    vec![
        FileChange { path: PathBuf::from(UDEV_RULE), content: None },
        FileChange { path: PathBuf::from(MODPROBE_CONF), content: None },
    ]
}

/// Applies changes below `root`, each file written atomically.
pub fn apply(root: &Path, changes: &[FileChange]) -> Result<(), PersistError> {
    for c in changes {
        let path = root.join(&c.path);
        let err = |source| PersistError { path: path.clone(), source };
        match &c.content {
            None => match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
                _ => {}
            },
            Some(text) => {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(err)?;
                }
                let tmp = path.with_extension("iommuctl-tmp");
                let mut f = fs::File::create(&tmp).map_err(err)?;
                f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(err)?;
                fs::rename(&tmp, &path).map_err(err)?;
            }
        }
    }
    Ok(())
}
