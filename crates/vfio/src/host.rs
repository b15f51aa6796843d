//! What VFIO needs from sysfs: a device's IOMMU group, the group's members and their drivers, and the
//! group's reserved regions. Every read takes a root directory, so tests build fake trees.

use std::path::{Path, PathBuf};

use crate::error::{Blocker, Result, VfioError};
use crate::info::IovaRange;

/// Whether a member bound to `driver` leaves its group viable for VFIO (Linux ≥ 5.19): the driver
/// manages its own DMA ([`iommu_pci::drivers::DMA_OWNING_DRIVERS`]:
/// vfio-pci and its variant drivers, pci-stub, pcieport, …). A member with no driver is fine too.
pub fn driver_is_vfio_safe(driver: &str) -> bool {
    iommu_pci::drivers::manages_own_dma(driver)
}

/// One line of a group's `reserved_regions`, as an IOVA range.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReservedRegion {
    /// The addresses.
    pub range: IovaRange,
    /// `direct`, `direct-relaxable`, `reserved` or `msi`.
    pub kind: String,
}

/// Parses `reserved_regions` (`0x00000000fee00000 0x00000000feefffff msi` per line) with
/// [`iommu_pci::regions::parse_reserved_regions`] (which see for a line without a type); lines that do not
/// parse, or whose first address is above the last, are skipped.
pub fn parse_reserved_regions(text: &str) -> Vec<ReservedRegion> {
    iommu_pci::regions::parse_reserved_regions(text)
        .into_iter()
        .filter_map(|r| Some(ReservedRegion { range: IovaRange::new(r.start, r.end)?, kind: r.kind }))
        .collect()
}

/// A group member and its driver.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// PCI address.
    pub address: String,
    /// Bound driver, if any.
    pub driver: Option<String>,
}

/// The host below a root directory (`/` for the live system).
#[derive(Clone, Debug)]
pub struct Host {
    root: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Self::live()
    }
}

fn sysfs_err(path: &Path) -> impl FnOnce(std::io::Error) -> VfioError + '_ {
    move |source| VfioError::Sysfs { path: path.to_path_buf(), source }
}

impl Host {
    /// The live system.
    pub fn live() -> Self {
        Self { root: PathBuf::from("/") }
    }

    /// The host below `root`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/dev/vfio`.
    pub fn dev_vfio(&self) -> PathBuf {
        self.root.join("dev/vfio")
    }

    /// `<root>/dev/iommu`, the iommufd node.
    pub fn dev_iommu(&self) -> PathBuf {
        self.root.join("dev/iommu")
    }

    /// The device's VFIO character device (`<root>/dev/vfio/devices/vfioN`), found through
    /// `/sys/bus/pci/devices/ADDR/vfio-dev/vfioN`. Says why there is none: the device is not on a VFIO
    /// driver, or it is and the kernel was built without `CONFIG_VFIO_DEVICE_CDEV`.
    pub fn device_cdev(&self, address: &str) -> Result<PathBuf> {
        let dir = self.device_dir(address).join("vfio-dev");
        let name = std::fs::read_dir(&dir).ok().and_then(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with("vfio") && n[4..].bytes().all(|b| b.is_ascii_digit()) && n.len() > 4)
        });
        match name {
            Some(n) => Ok(self.dev_vfio().join("devices").join(n)),
            None => {
                let driver = self.driver_of(address);
                let why = match driver.as_deref() {
                    Some(d) if iommu_pci::drivers::is_vfio_driver(d) => format!(
                        "it is on {d} but {} does not exist: this kernel has no VFIO device cdevs \
                         (CONFIG_VFIO_DEVICE_CDEV, Linux 6.6+); use the container backend",
                        dir.display()
                    ),
                    Some(d) => format!("it is bound to {d}, not to vfio-pci; `iommuctl bind {address}` first"),
                    None => format!("it has no driver; `iommuctl bind {address}` puts it on vfio-pci"),
                };
                Err(VfioError::NoCdev { device: address.to_string(), why })
            }
        }
    }

    fn device_dir(&self, address: &str) -> PathBuf {
        self.root.join("sys/bus/pci/devices").join(address)
    }

    fn group_dir(&self, group: u32) -> PathBuf {
        self.root.join("sys/kernel/iommu_groups").join(group.to_string())
    }

    /// The IOMMU group of `address` (the target of `/sys/bus/pci/devices/ADDR/iommu_group`).
    pub fn group_of(&self, address: &str) -> Result<u32> {
        let dev = self.device_dir(address);
        if !dev.exists() {
            return Err(VfioError::Sysfs {
                path: dev,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such PCI device"),
            });
        }
        let link = dev.join("iommu_group");
        let target = match std::fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VfioError::NoGroup { device: address.to_string(), path: link })
            }
            Err(e) => return Err(sysfs_err(&link)(e)),
        };
        target.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).ok_or_else(|| VfioError::Sysfs {
            path: link.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("odd target {}", target.display())),
        })
    }

    /// The driver bound to `address`, if any.
    pub fn driver_of(&self, address: &str) -> Option<String> {
        let l = std::fs::read_link(self.device_dir(address).join("driver")).ok()?;
        l.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    /// The members of `group`, sorted, with their drivers.
    pub fn members(&self, group: u32) -> Result<Vec<Member>> {
        let dir = self.group_dir(group).join("devices");
        let mut v = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(sysfs_err(&dir))? {
            let e = e.map_err(sysfs_err(&dir))?;
            let address = e.file_name().to_string_lossy().into_owned();
            let driver = std::fs::read_link(e.path().join("driver"))
                .ok()
                .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()));
            v.push(Member { address, driver });
        }
        v.sort_by(|a, b| a.address.cmp(&b.address));
        Ok(v)
    }

    /// Members of `group` bound to a driver that is not VFIO-safe ([`driver_is_vfio_safe`]).
    pub fn blockers(&self, group: u32) -> Result<Vec<Blocker>> {
        Ok(self
            .members(group)?
            .into_iter()
            .filter_map(|m| match m.driver {
                Some(d) if !driver_is_vfio_safe(&d) => Some(Blocker { address: m.address, driver: d }),
                _ => None,
            })
            .collect())
    }

    /// The group's `reserved_regions`.
    pub fn reserved_regions(&self, group: u32) -> Result<Vec<ReservedRegion>> {
        let p = self.group_dir(group).join("reserved_regions");
        let text = iommu_fsio::read_text(&p, iommu_fsio::Limit::ATTRIBUTE)
            .map_err(|e| VfioError::Sysfs { path: p.clone(), source: std::io::Error::other(e) })?;
        Ok(parse_reserved_regions(&text))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake tree: group 4 holds 00:10.0 (nvme) and 00:10.1 (vfio-pci); group 5 holds 01:00.0 (vfio-pci).
    pub(crate) fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for (addr, group, driver) in
            [("0000:00:10.0", 4, Some("nvme")), ("0000:00:10.1", 4, Some("vfio-pci")), ("0000:01:00.0", 5, None)]
        {
            let g = r.join(format!("sys/kernel/iommu_groups/{group}"));
            std::fs::create_dir_all(g.join("devices")).unwrap();
            std::fs::write(g.join("reserved_regions"), "0x00000000fee00000 0x00000000feefffff msi\n").unwrap();
            let d = r.join("sys/devices/pci0000:00").join(addr);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::create_dir_all(r.join("sys/bus/pci/devices")).unwrap();
            symlink(&d, r.join("sys/bus/pci/devices").join(addr)).unwrap();
            symlink(&g, d.join("iommu_group")).unwrap();
            symlink(&d, g.join("devices").join(addr)).unwrap();
            if let Some(drv) = driver {
                let dd = r.join("sys/bus/pci/drivers").join(drv);
                std::fs::create_dir_all(&dd).unwrap();
                symlink(&dd, d.join("driver")).unwrap();
            }
        }
        t
    }

    #[test]
    fn group_of_follows_the_iommu_group_link() {
        let t = tree();
        let h = Host::at(t.path());
        assert_eq!(h.group_of("0000:00:10.1").unwrap(), 4);
        assert_eq!(h.group_of("0000:01:00.0").unwrap(), 5);
        assert!(matches!(h.group_of("0000:09:00.0"), Err(VfioError::Sysfs { .. })));
    }

    #[test]
    fn a_device_without_iommu_group_link_says_the_iommu_is_off() {
        let t = tree();
        std::fs::remove_file(t.path().join("sys/devices/pci0000:00/0000:01:00.0/iommu_group")).unwrap();
        let e = Host::at(t.path()).group_of("0000:01:00.0").unwrap_err();
        assert!(e.to_string().contains("IOMMU is off"), "{e}");
    }

    #[test]
    fn blockers_are_members_on_drivers_that_do_their_own_dma() {
        let t = tree();
        let h = Host::at(t.path());
        assert_eq!(h.blockers(4).unwrap(), vec![Blocker { address: "0000:00:10.0".into(), driver: "nvme".into() }]);
        assert!(h.blockers(5).unwrap().is_empty());
        assert_eq!(h.members(5).unwrap(), vec![Member { address: "0000:01:00.0".into(), driver: None }]);
        assert!(
            driver_is_vfio_safe("pcieport") && driver_is_vfio_safe("mlx5_vfio_pci") && !driver_is_vfio_safe("e1000e")
        );
        // The kernel registers variant drivers by module name, with underscores; a name that merely
        // contains "vfio" is not one.
        assert!(!driver_is_vfio_safe("mlx5-vfio-pci") && !driver_is_vfio_safe("my-vfio-thing"));
    }

    #[test]
    fn reserved_regions_parse_the_msi_window() {
        let t = tree();
        let r = Host::at(t.path()).reserved_regions(4).unwrap();
        assert_eq!(
            r,
            vec![ReservedRegion { range: IovaRange::new(0xfee0_0000, 0xfeef_ffff).unwrap(), kind: "msi".into() }]
        );
        assert_eq!(parse_reserved_regions("junk\n0x10 0x1f direct\n0x20 0x10 bad\n").len(), 1);
        // A line without a type keeps its range, as `reserved` (see iommu_pci::regions).
        assert_eq!(
            parse_reserved_regions("0x10 0x1f\n"),
            vec![ReservedRegion { range: IovaRange::new(0x10, 0x1f).unwrap(), kind: "reserved".into() }]
        );
    }

    #[test]
    fn a_variant_vfio_driver_does_not_block_and_a_look_alike_does() {
        let t = tree();
        let d = t.path().join("sys/devices/pci0000:00/0000:00:10.0/driver");
        for (drv, blocks) in [("mlx5_vfio_pci", false), ("my-vfio-thing", true), ("vfio_iommu_type1", true)] {
            std::fs::remove_file(&d).unwrap();
            let dd = t.path().join("sys/bus/pci/drivers").join(drv);
            std::fs::create_dir_all(&dd).unwrap();
            symlink(&dd, &d).unwrap();
            assert_eq!(!Host::at(t.path()).blockers(4).unwrap().is_empty(), blocks, "{drv}");
        }
    }
}
