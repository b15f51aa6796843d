//! Kernels laid out by `scripts/lab-setup` under `$IOMMU_LAB_DIR/kernels/<release>/`: the Debian
//! images it unpacks (releases ending in `-amd64`) and the kernel it builds (`<version>-iommufd`).
//!
//! A kernel is chosen by a selector (see [`Kernel::find_in`]): a "major.minor" version picks the newest
//! Debian kernel of that series, a word picks the newest kernel whose release ends in `-<word>`. So the
//! built 6.12 kernel is only ever chosen as `"iommufd"`, never as `"6.12"`.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use crate::error::{LabError, Result};

/// One kernel of the lab: a bootable image and its module tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The kernel release, e.g. `6.1.0-56-amd64`, `6.12.117+deb12-amd64` or `6.12.117-iommufd`.
    pub version: String,
    /// The bootable image (`boot/vmlinuz-<release>`).
    pub vmlinuz: PathBuf,
    /// The module tree (`lib/modules/<release>`). For a kernel without loadable modules it holds only
    /// `modules.builtin`.
    pub modules_dir: PathBuf,
}

impl Kernel {
    /// Reads one kernel directory (`<dir>/boot/vmlinuz-*`, `<dir>/{usr/,}lib/modules/*`).
    /// Returns `None` when the directory does not hold a complete kernel.
    pub fn from_dir(dir: &Path) -> Option<Kernel> {
        let boot = dir.join("boot");
        let mut images: Vec<PathBuf> = std::fs::read_dir(&boot)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
            .collect();
        images.sort();
        for vmlinuz in images {
            let release = vmlinuz.file_name()?.to_str()?.strip_prefix("vmlinuz-")?;
            for base in ["lib/modules", "usr/lib/modules"] {
                let modules_dir = dir.join(base).join(release);
                if modules_dir.is_dir() {
                    return Some(Kernel { version: release.to_string(), vmlinuz: vmlinuz.clone(), modules_dir });
                }
            }
        }
        None
    }

    /// "major.minor" of this kernel, e.g. "6.12".
    pub fn major_minor(&self) -> String {
        major_minor(&self.version)
    }

    /// The flavour: what follows the release's last `-` (`amd64` for Debian's images, `iommufd` for the
    /// kernel `scripts/lab-setup` builds).
    pub fn flavour(&self) -> &str {
        self.version.rsplit_once('-').map(|(_, f)| f).unwrap_or("")
    }

    /// Whether this kernel answers `selector` (see [`Kernel::find_in`]).
    pub fn matches(&self, selector: &str) -> bool {
        if selector.starts_with(|c: char| c.is_ascii_digit()) {
            self.flavour() == DEBIAN_FLAVOUR && self.major_minor() == selector
        } else {
            self.flavour() == selector
        }
    }

    /// Every kernel found under `kernels_dir` (normally `$IOMMU_LAB_DIR/kernels`), newest first.
    pub fn discover(kernels_dir: &Path) -> Vec<Kernel> {
        let Ok(entries) = std::fs::read_dir(kernels_dir) else {
            return Vec::new();
        };
        let mut found: Vec<Kernel> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| Kernel::from_dir(&e.path()))
            .collect();
        found.sort_by(|a, b| compare_versions(&b.version, &a.version));
        found
    }

    /// The newest kernel under `kernels_dir` that answers the selector `want`:
    /// - a version, "6.1" or "6.12": the newest Debian kernel (release ending in `-amd64`) of that
    ///   major.minor;
    /// - a word, "iommufd": the newest kernel whose release ends in `-iommufd` (the one
    ///   `scripts/lab-setup` builds from `linux-source-6.12` with `crates/lab/kernel/iommufd.config`).
    pub fn find_in(kernels_dir: &Path, want: &str) -> Result<Kernel> {
        let all = Kernel::discover(kernels_dir);
        if let Some(k) = all.iter().find(|k| k.matches(want)) {
            return Ok(k.clone());
        }
        Err(LabError::NoKernel {
            want: want.to_string(),
            dir: kernels_dir.to_path_buf(),
            found: if all.is_empty() {
                "none".to_string()
            } else {
                all.iter().map(|k| k.version.as_str()).collect::<Vec<_>>().join(", ")
            },
        })
    }

    /// The newest kernel answering `want` ("6.1", "6.12", "iommufd"; see [`Kernel::find_in`]) in the lab
    /// directory.
    pub fn find(want: &str) -> Result<Kernel> {
        Kernel::find_in(&crate::lab_dir().join("kernels"), want)
    }
}

/// The flavour of the Debian images `scripts/lab-setup` unpacks, the only ones a version selector picks.
pub const DEBIAN_FLAVOUR: &str = "amd64";

/// The selector of the kernel `scripts/lab-setup` builds with iommufd and the VFIO device cdev.
pub const IOMMUFD_KERNEL: &str = "iommufd";

/// "6.12.117+deb12-amd64" → "6.12".
fn major_minor(version: &str) -> String {
    let mut parts = version.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty());
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => format!("{a}.{b}"),
        (Some(a), None) => a.to_string(),
        _ => String::new(),
    }
}

/// Compares kernel releases by their numeric parts.
fn compare_versions(a: &str, b: &str) -> Ordering {
    let nums = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).filter_map(|p| p.parse().ok()).collect()
    };
    nums(a).cmp(&nums(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_minor_of_debian_releases() {
        assert_eq!(major_minor("6.1.0-56-amd64"), "6.1");
        assert_eq!(major_minor("6.12.117+deb12-amd64"), "6.12");
    }

    #[test]
    fn newest_first() {
        assert_eq!(compare_versions("6.12.117+deb12-amd64", "6.12.9+deb12-amd64"), Ordering::Greater);
    }

    #[test]
    fn discovers_unpacked_layout() {
        let dir = std::env::temp_dir().join(format!("iommu-lab-kernel-test-{}", std::process::id()));
        let k = dir.join("6.12.5+deb12-amd64");
        std::fs::create_dir_all(k.join("boot")).unwrap();
        std::fs::create_dir_all(k.join("lib/modules/6.12.5+deb12-amd64")).unwrap();
        std::fs::write(k.join("boot/vmlinuz-6.12.5+deb12-amd64"), b"x").unwrap();
        let found = Kernel::find_in(&dir, "6.12").unwrap();
        assert_eq!(found.version, "6.12.5+deb12-amd64");
        assert!(Kernel::find_in(&dir, "6.1").is_err());
        assert!(Kernel::find_in(&dir, IOMMUFD_KERNEL).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn built_kernel_only_by_its_own_selector() {
        let dir = std::env::temp_dir().join(format!("iommu-lab-kernel-built-{}", std::process::id()));
        // The built kernel sorts newest among the 6.12s here: "6.12" must still not pick it.
        for release in ["6.12.5+deb12-amd64", "6.12.117-iommufd"] {
            let k = dir.join(release);
            std::fs::create_dir_all(k.join("boot")).unwrap();
            std::fs::create_dir_all(k.join("lib/modules").join(release)).unwrap();
            std::fs::write(k.join("boot").join(format!("vmlinuz-{release}")), b"x").unwrap();
        }
        assert_eq!(Kernel::discover(&dir)[0].version, "6.12.117-iommufd");
        assert_eq!(Kernel::find_in(&dir, "6.12").unwrap().version, "6.12.5+deb12-amd64");
        let built = Kernel::find_in(&dir, IOMMUFD_KERNEL).unwrap();
        assert_eq!(built.version, "6.12.117-iommufd");
        assert_eq!(built.flavour(), "iommufd");
        assert_eq!(built.major_minor(), "6.12");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
