//! A `--root` tree shaped like Linux 6.1's sysfs for bind, restore and persist: functions under
//! `sys/devices/pci0000:00` linked from `sys/bus/pci/devices`, driver and iommu_group links, and the
//! driver core's attributes (`driver_override`, `drivers/*/bind|unbind`, `drivers_probe`) as plain files.
//! Writes land in those files; nothing moves a device between drivers, so a bind here rolls back.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary directory holding the tree (`root`) and a state directory (`state`, not yet created).
pub struct Tree {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
}

impl Tree {
    /// An empty tree with vfio-pci registered.
    pub fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        fs::write(root.join("sys/bus/pci/drivers_probe"), "").unwrap();
        fs::create_dir_all(root.join("proc/self")).unwrap();
        fs::write(root.join("proc/self/mountinfo"), "").unwrap();
        let t = Tree { _dir: dir, root, state };
        t.driver("vfio-pci");
        t
    }

    /// Registers a driver: `sys/bus/pci/drivers/NAME` with `bind` and `unbind`.
    pub fn driver(&self, name: &str) {
        let d = self.root.join("sys/bus/pci/drivers").join(name);
        fs::create_dir_all(&d).unwrap();
        for f in ["bind", "unbind"] {
            if !d.join(f).exists() {
                fs::write(d.join(f), "").unwrap();
            }
        }
    }

    /// An endpoint `0000:BB:00.0` on the root bus in its own group, on `driver` (registered here).
    pub fn endpoint(&self, bus: u8, group: u32, driver: Option<&str>) -> String {
        let name = format!("0000:{bus:02x}:00.0");
        let canonical = format!("pci0000:00/{name}");
        let dir = self.root.join("sys/devices").join(&canonical);
        fs::create_dir_all(&dir).unwrap();
        let mut config = vec![0u8; 256];
        config[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        config[2..4].copy_from_slice(&(0x0010u16 + u16::from(bus)).to_le_bytes());
        config[0x0b] = 0x01;
        config[0x0a] = 0x08;
        fs::write(dir.join("config"), &config).unwrap();
        fs::write(dir.join("driver_override"), "(null)\n").unwrap();
        if let Some(d) = driver {
            self.driver(d);
            symlink(format!("../../../bus/pci/drivers/{d}"), dir.join("driver")).unwrap();
        }
        let gd = self.root.join(format!("sys/kernel/iommu_groups/{group}/devices"));
        fs::create_dir_all(&gd).unwrap();
        symlink(format!("../../../../devices/{canonical}"), gd.join(&name)).unwrap();
        fs::write(self.root.join(format!("sys/kernel/iommu_groups/{group}/type")), "DMA\n").unwrap();
        symlink(format!("../../../kernel/iommu_groups/{group}"), dir.join("iommu_group")).unwrap();
        symlink(format!("../../../devices/{canonical}"), self.root.join("sys/bus/pci/devices").join(&name)).unwrap();
        name
    }

    /// A file below the root, as text ("" when missing).
    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root.join(rel)).unwrap_or_default()
    }

    /// `iommuctl --root ROOT --state-dir STATE ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// The command, to spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iommuctl"));
        c.arg("--root").arg(&self.root).arg("--state-dir").arg(&self.state).args(args).env("NO_COLOR", "1");
        c.env_remove("IOMMUCTL_TEST_HOOK");
        c
    }

    pub fn journal_path(&self) -> PathBuf {
        self.state.join("journal.json")
    }
}

/// Standard error as text.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Standard output as text.
pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Whether `p` exists (even as a dangling link).
pub fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}
