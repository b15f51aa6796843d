//! The kernel's driver core, as the bind and restore logic needs it, behind a trait so the logic can be
//! tested against a simulated kernel, and [`DriverName`], the one check every driver name passes before it
//! goes into a sysfs path, the journal, a udev rule or a modprobe file.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use iommu_fsio::{FsError, Limit};
use iommu_pci::PciAddress;
use serde::{Deserialize, Serialize};

/// The longest driver name accepted (the kernel's `MODULE_NAME_LEN` is 64 including the NUL; 64 leaves
/// room for built-in driver names, which are not module names).
pub const MAX_DRIVER_NAME: usize = 64;

/// A driver (or module) name of the kernel's shape: 1 to 64 of `A-Z a-z 0-9 _ -`.
///
/// Every driver name iommuctl writes anywhere passes through [`DriverName::parse`]: the `--driver` option,
/// the name of a sysfs `driver` link, a `driver_override` value, and the journal's `original_driver`,
/// `original_override` and `bound_to` (a journal holding another shape does not load). So no name can
/// carry a quote into a udev rule, a newline into `/etc/modprobe.d`, or a `/` into a sysfs path.
///
/// ```
/// use iommu_host::driver::DriverName;
/// assert_eq!(DriverName::parse("vfio-pci").unwrap().as_str(), "vfio-pci");
/// assert!(DriverName::parse("").is_err());
/// assert!(DriverName::parse("vfio-pci\", RUN+=\"/bin/sh").is_err());
/// assert!(DriverName::parse("../../../tmp").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DriverName(String);

/// A string that is not a driver name, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a kernel driver name ({why}; a driver name is 1 to 64 of A-Z a-z 0-9 _ -)")]
pub struct NameError {
    /// The string refused (at most 80 characters of it).
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

impl DriverName {
    /// Checks `s` and wraps it.
    pub fn parse(s: &str) -> Result<DriverName, NameError> {
        let refuse = |why: String| NameError { value: s.chars().take(80).collect(), why };
        if s.is_empty() {
            return Err(refuse("it is empty".into()));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
            return Err(refuse(format!("it contains {c:?}")));
        }
        if s.len() > MAX_DRIVER_NAME {
            return Err(refuse(format!("it is {} characters long", s.len())));
        }
        Ok(DriverName(s.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The module name modprobe and `softdep` lines use: `-` becomes `_` (modprobe treats them alike).
    pub fn module(&self) -> String {
        self.0.replace('-', "_")
    }
}

impl fmt::Display for DriverName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for DriverName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        DriverName::parse(s)
    }
}

impl TryFrom<String> for DriverName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        DriverName::parse(&s)
    }
}

impl From<DriverName> for String {
    fn from(d: DriverName) -> String {
        d.0
    }
}

impl AsRef<str> for DriverName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for DriverName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for DriverName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A failed driver-core operation, naming the file or command.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A sysfs write failed.
    #[error("cannot write {value:?} to {path}")]
    Write {
        /// The attribute.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The cause.
        source: io::Error,
    },
    /// A sysfs attribute or link could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The attribute or link.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A sysfs `driver` link or `driver_override` holds something that is not a driver name.
    #[error("{path} does not name a driver")]
    BadName {
        /// The link or attribute.
        path: PathBuf,
        /// What is wrong with the name.
        source: NameError,
    },
    /// A kernel module could not be loaded.
    #[error("cannot load kernel module {module}: {detail}")]
    ModuleLoad {
        /// Module name.
        module: String,
        /// What modprobe said, or why it could not run.
        detail: String,
    },
    /// A test hook injected this failure.
    #[error("injected failure at step {step} (IOMMUCTL_TEST_HOOK)")]
    Injected {
        /// The step.
        step: String,
    },
}

/// The operations binding needs. Names come in and go out as [`DriverName`]s: an implementation that
/// meets anything else (a sysfs link named with a newline) reports [`DriverError::BadName`].
pub trait DriverCore {
    /// Whether the device still exists (`sys/bus/pci/devices/ADDR`); a hot-unplugged device does not.
    fn present(&self, a: PciAddress) -> bool;
    /// The bound driver, `None` when unbound.
    fn driver(&self, a: PciAddress) -> Result<Option<DriverName>, DriverError>;
    /// The `driver_override` value, `None` when clear.
    fn driver_override(&self, a: PciAddress) -> Result<Option<DriverName>, DriverError>;
    /// Sets (`Some`) or clears (`None`) `driver_override`.
    fn set_driver_override(&self, a: PciAddress, driver: Option<&DriverName>) -> Result<(), DriverError>;
    /// Unbinds from `driver`.
    fn unbind(&self, a: PciAddress, driver: &DriverName) -> Result<(), DriverError>;
    /// Asks the kernel to probe drivers for the device (`drivers_probe`).
    fn probe(&self, a: PciAddress) -> Result<(), DriverError>;
    /// Binds explicitly to `driver` (`drivers/<driver>/bind`).
    fn bind(&self, a: PciAddress, driver: &DriverName) -> Result<(), DriverError>;
    /// Whether a driver is registered with the PCI bus.
    fn driver_registered(&self, driver: &DriverName) -> bool;
    /// Loads the module for `driver`.
    fn load_module(&self, driver: &DriverName) -> Result<(), DriverError>;
}

/// The real driver core, through sysfs below a root directory.
///
/// Below a root other than `/` (a test tree, a copy of sysfs) [`DriverCore::load_module`] refuses instead
/// of running the host's `modprobe`: the module would be loaded into the running kernel, not the tree.
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    /// Uses `root/sys/bus/pci`.
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_path_buf() }
    }

    /// Whether the root is the running system's `/`.
    pub fn is_live(&self) -> bool {
        std::fs::canonicalize(&self.root).is_ok_and(|p| p == Path::new("/"))
    }

    fn dev(&self, a: PciAddress) -> PathBuf {
        self.root.join("sys/bus/pci/devices").join(a.to_string())
    }

    fn driver_dir(&self, driver: &DriverName) -> PathBuf {
        self.root.join("sys/bus/pci/drivers").join(driver.as_str())
    }

    fn write(&self, path: PathBuf, value: &str) -> Result<(), DriverError> {
        let r = iommu_fsio::open_attribute_for_write(&path).map_err(fs_to_io).and_then(|mut f| {
            // What `echo value > attr` does: sysfs ignores the truncation, and a plain file (a test tree)
            // ends up holding just the value, as the attribute would read back.
            let _ = f.set_len(0);
            f.write_all(value.as_bytes())
        });
        r.map_err(|source| DriverError::Write { path, value: value.to_string(), source })
    }
}

/// The operating system's error inside an [`FsError`], or the whole error as one.
fn fs_to_io(e: FsError) -> io::Error {
    match e {
        FsError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

impl DriverCore for Sysfs {
    fn present(&self, a: PciAddress) -> bool {
        self.dev(a).exists()
    }

    fn driver(&self, a: PciAddress) -> Result<Option<DriverName>, DriverError> {
        let path = self.dev(a).join("driver");
        let target = match std::fs::read_link(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(DriverError::Read { path, source }),
        };
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        DriverName::parse(&name).map(Some).map_err(|source| DriverError::BadName { path, source })
    }

    fn driver_override(&self, a: PciAddress) -> Result<Option<DriverName>, DriverError> {
        let path = self.dev(a).join("driver_override");
        let text = match iommu_fsio::read_text(&path, Limit::ATTRIBUTE) {
            Ok(t) => t,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(DriverError::Read { path, source: fs_to_io(e) }),
        };
        let s = text.trim();
        if s.is_empty() || s == "(null)" {
            return Ok(None);
        }
        DriverName::parse(s).map(Some).map_err(|source| DriverError::BadName { path, source })
    }

    fn set_driver_override(&self, a: PciAddress, driver: Option<&DriverName>) -> Result<(), DriverError> {
        // An empty write (a lone newline) clears the override.
        self.write(self.dev(a).join("driver_override"), &format!("{}\n", driver.map_or("", |d| d.as_str())))
    }

    fn unbind(&self, a: PciAddress, driver: &DriverName) -> Result<(), DriverError> {
        self.write(self.driver_dir(driver).join("unbind"), &a.to_string())
    }

    fn probe(&self, a: PciAddress) -> Result<(), DriverError> {
        self.write(self.root.join("sys/bus/pci/drivers_probe"), &a.to_string())
    }

    fn bind(&self, a: PciAddress, driver: &DriverName) -> Result<(), DriverError> {
        self.write(self.driver_dir(driver).join("bind"), &a.to_string())
    }

    fn driver_registered(&self, driver: &DriverName) -> bool {
        self.driver_dir(driver).is_dir()
    }

    fn load_module(&self, driver: &DriverName) -> Result<(), DriverError> {
        let module = driver.module();
        if !self.is_live() {
            return Err(DriverError::ModuleLoad {
                detail: format!(
                    "not running modprobe for the tree below {}: it would load {module} into this machine's \
                     kernel, not the tree's (register sys/bus/pci/drivers/{driver} there instead)",
                    self.root.display()
                ),
                module,
            });
        }
        let out = Command::new("modprobe").arg(&module).output().map_err(|e| DriverError::ModuleLoad {
            module: module.clone(),
            detail: format!("cannot run modprobe: {e}"),
        })?;
        if !out.status.success() {
            let detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(DriverError::ModuleLoad {
                module,
                detail: if detail.is_empty() { out.status.to_string() } else { detail },
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names_of_the_kernel_shape_pass_and_nothing_else() {
        for ok in ["vfio-pci", "snd_hda_intel", "nvme", "pci-stub", "a", &"x".repeat(64)] {
            assert_eq!(DriverName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", " ", "vfio-pci\n", "vfio pci", "a/b", "..", "vfio-pci\", RUN+=\"/bin/sh -c id\"", "é", "a\0"] {
            assert!(DriverName::parse(bad).is_err(), "{bad:?}");
        }
        let e = DriverName::parse(&"x".repeat(65)).unwrap_err();
        assert!(e.to_string().contains("65 characters"), "{e}");
        let e = DriverName::parse("nvme\nsoftdep x").unwrap_err();
        assert!(e.to_string().contains(r#""nvme\nsoftdep x""#) && e.to_string().contains("'\\n'"), "{e}");
    }

    #[test]
    fn a_driver_name_deserializes_only_when_valid() {
        assert!(serde_json::from_str::<DriverName>(r#""vfio-pci""#).is_ok());
        let e = serde_json::from_str::<DriverName>(r#""vfio-pci\"x""#).unwrap_err();
        assert!(e.to_string().contains("not a kernel driver name"), "{e}");
    }

    #[test]
    fn no_modprobe_below_a_test_root() {
        let t = tempfile::tempdir().unwrap();
        let e = Sysfs::new(t.path()).load_module(&DriverName::parse("vfio-pci").unwrap()).unwrap_err();
        assert!(e.to_string().contains("not running modprobe"), "{e}");
        assert!(Sysfs::new(Path::new("/")).is_live());
        assert!(Sysfs::new(Path::new("//")).is_live());
    }

    #[test]
    fn a_failed_sysfs_write_carries_the_os_error() {
        let t = tempfile::tempdir().unwrap();
        let a: PciAddress = "01:00.0".parse().unwrap();
        let e = Sysfs::new(t.path()).set_driver_override(a, DriverName::parse("vfio-pci").ok().as_ref()).unwrap_err();
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg = format!("{msg}: {s}");
            src = s.source();
        }
        assert!(msg.contains(r#"cannot write "vfio-pci\n" to "#) && msg.contains("(os error 2)"), "{msg}");
    }
}
