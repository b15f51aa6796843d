//! The kernel's driver core, as the bind and restore logic needs it, behind a trait so the logic can be
//! tested against a simulated kernel.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use iommu_pci::PciAddress;

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

/// The operations binding needs.
pub trait DriverCore {
    /// The bound driver's name.
    fn driver(&self, a: PciAddress) -> Option<String>;
    /// The `driver_override` value.
    fn driver_override(&self, a: PciAddress) -> Option<String>;
    /// Sets (`Some`) or clears (`None`) `driver_override`.
    fn set_driver_override(&self, a: PciAddress, driver: Option<&str>) -> Result<(), DriverError>;
    /// Unbinds from `driver`.
    fn unbind(&self, a: PciAddress, driver: &str) -> Result<(), DriverError>;
    /// Asks the kernel to probe drivers for the device (`drivers_probe`).
    fn probe(&self, a: PciAddress) -> Result<(), DriverError>;
    /// Binds explicitly to `driver` (`drivers/<driver>/bind`).
    fn bind(&self, a: PciAddress, driver: &str) -> Result<(), DriverError>;
    /// Whether a driver is registered with the PCI bus.
    fn driver_registered(&self, driver: &str) -> bool;
    /// Loads the module for `driver`.
    fn load_module(&self, driver: &str) -> Result<(), DriverError>;
}

/// The real driver core, through sysfs below a root directory.
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    /// Uses `root/sys/bus/pci`.
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_path_buf() }
    }

    fn dev(&self, a: PciAddress) -> PathBuf {
        self.root.join("sys/bus/pci/devices").join(a.to_string())
    }

    fn write(&self, path: PathBuf, value: &str) -> Result<(), DriverError> {
        let r = fs::OpenOptions::new().write(true).open(&path).and_then(|mut f| f.write_all(value.as_bytes()));
        r.map_err(|source| DriverError::Write { path, value: value.to_string(), source })
    }
}

impl DriverCore for Sysfs {
    fn driver(&self, a: PciAddress) -> Option<String> {
        let t = fs::read_link(self.dev(a).join("driver")).ok()?;
        t.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    fn driver_override(&self, a: PciAddress) -> Option<String> {
        let s = fs::read_to_string(self.dev(a).join("driver_override")).ok()?;
        let s = s.trim();
        (!s.is_empty() && s != "(null)").then(|| s.to_string())
    }

    fn set_driver_override(&self, a: PciAddress, driver: Option<&str>) -> Result<(), DriverError> {
        // An empty write (a lone newline) clears the override.
        self.write(self.dev(a).join("driver_override"), &format!("{}\n", driver.unwrap_or("")))
    }

    fn unbind(&self, a: PciAddress, driver: &str) -> Result<(), DriverError> {
        self.write(self.root.join("sys/bus/pci/drivers").join(driver).join("unbind"), &a.to_string())
    }

    fn probe(&self, a: PciAddress) -> Result<(), DriverError> {
        self.write(self.root.join("sys/bus/pci/drivers_probe"), &a.to_string())
    }

    fn bind(&self, a: PciAddress, driver: &str) -> Result<(), DriverError> {
        self.write(self.root.join("sys/bus/pci/drivers").join(driver).join("bind"), &a.to_string())
    }

    fn driver_registered(&self, driver: &str) -> bool {
        self.root.join("sys/bus/pci/drivers").join(driver).is_dir()
    }

    fn load_module(&self, driver: &str) -> Result<(), DriverError> {
        let module = driver.replace('-', "_");
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
