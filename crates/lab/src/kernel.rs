//! Kernels unpacked by `scripts/lab-setup` under `$IOMMU_LAB_DIR/kernels/<release>/`.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use crate::error::{LabError, Result};

/// One unpacked Debian kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The kernel release, e.g. `6.1.0-56-amd64` or `6.12.117+deb12-amd64`.
    pub version: String,
    /// The bootable image (`boot/vmlinuz-<release>`).
    pub vmlinuz: PathBuf,
    /// The module tree (`lib/modules/<release>`).
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

    /// The newest kernel whose version is `want` ("6.1", "6.12") under `kernels_dir`.
    pub fn find_in(kernels_dir: &Path, want: &str) -> Result<Kernel> {
        let all = Kernel::discover(kernels_dir);
        if let Some(k) = all.iter().find(|k| k.major_minor() == want) {
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

    /// The newest kernel whose version is `want` ("6.1", "6.12") in the lab directory.
    pub fn find(want: &str) -> Result<Kernel> {
        Kernel::find_in(&crate::lab_dir().join("kernels"), want)
    }
}

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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
