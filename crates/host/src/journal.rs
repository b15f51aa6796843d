//! The bind journal: what each device was bound to before iommuctl changed it, kept atomically in a private
//! state directory and guarded by a lock, so a crashed or interrupted bind can be undone by `restore`.
//!
//! Every file goes through [`iommu_fsio`]: the directory through [`iommu_fsio::private_dir`] (refused when
//! it is a symlink, someone else's, or writable by group or others), the lock through
//! [`iommu_fsio::open_lock`] (never follows a link), the journal read bounded ([`Limit::TABLE`]) and written
//! with [`iommu_fsio::write_atomic`] (`0600`).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use iommu_fsio::{FsError, Limit};
use iommu_pci::PciAddress;
use serde::{Deserialize, Serialize};

use crate::driver::DriverName;

/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/run/iommuctl";

/// The journal format this iommuctl reads and writes.
pub const JOURNAL_VERSION: u32 = 1;

/// Journal or lock failures, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Locking failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A file could not be read or written. The message names the path and the OS error already, so the
    /// error is not chained again as a source (it would print twice).
    #[error("{0}")]
    Fs(FsError),
    /// The state directory or lock cannot be trusted: a symlink, someone else's, or writable by others.
    #[error("refusing state directory {path}: {why}")]
    Unsafe {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The journal does not parse, or holds something no iommuctl writes (a driver name of another shape,
    /// a device listed twice, an unknown version).
    #[error("journal {path} is corrupt ({reason}); move it away to continue (it lists original drivers to restore)")]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl From<FsError> for JournalError {
    fn from(e: FsError) -> Self {
        match e {
            FsError::Unsafe { path, why } => JournalError::Unsafe { path, why },
            other => JournalError::Fs(other),
        }
    }
}

/// One device iommuctl changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The device.
    pub address: PciAddress,
    /// Its kernel IOMMU group at bind time.
    pub group: Option<u32>,
    /// The driver it had before iommuctl touched it.
    pub original_driver: Option<DriverName>,
    /// Its driver_override before iommuctl touched it.
    pub original_override: Option<DriverName>,
    /// The driver iommuctl bound it to.
    pub bound_to: DriverName,
}

/// The journal file's contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Format version ([`JOURNAL_VERSION`]).
    pub version: u32,
    /// Devices changed and not yet verifiably restored.
    pub entries: Vec<Entry>,
}

impl Default for Journal {
    fn default() -> Self {
        Journal { version: JOURNAL_VERSION, entries: Vec::new() }
    }
}

impl Journal {
    /// The entry for a device.
    pub fn get(&self, a: PciAddress) -> Option<&Entry> {
        self.entries.iter().find(|e| e.address == a)
    }

    /// Adds an entry unless the device is already journaled (the first record keeps the true original).
    pub fn record(&mut self, e: Entry) {
        if self.get(e.address).is_none() {
            self.entries.push(e);
        }
    }

    /// Drops a device's entry.
    pub fn remove(&mut self, a: PciAddress) {
        self.entries.retain(|e| e.address != a);
    }

    /// Parses a journal file's bytes, checking what serde cannot: the version and that no device is
    /// listed twice. Driver names are checked as they deserialize ([`DriverName`]).
    pub fn parse(bytes: &[u8]) -> Result<Journal, String> {
        let j: Journal = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if j.version != JOURNAL_VERSION {
            return Err(format!("version {} is not the one this iommuctl knows ({JOURNAL_VERSION})", j.version));
        }
        for (i, e) in j.entries.iter().enumerate() {
            if j.entries[..i].iter().any(|x| x.address == e.address) {
                return Err(format!("{} is listed twice", e.address));
            }
        }
        Ok(j)
    }
}

/// The state directory, holding `journal.json` and `lock`.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

/// An exclusive lock on the state directory, released on drop.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateDir {
    /// Uses `dir` (created `0700` on first lock).
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The journal file's path.
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("journal.json")
    }

    /// The lock file's path.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// Takes the exclusive lock, waiting for another iommuctl that holds it; `on_wait` is called once
    /// if the lock is busy. Creates the directory `0700` when missing and refuses one that is a symlink,
    /// not owned by the running user or writable by group or others, and a lock file that is a symlink.
    pub fn lock(&self, on_wait: impl FnOnce()) -> Result<StateLock, JournalError> {
        iommu_fsio::private_dir(&self.dir)?;
        let path = self.lock_path();
        let file = iommu_fsio::open_lock(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                on_wait();
                file.lock().map_err(|source| JournalError::Io { action: "lock", path, source })?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(JournalError::Io { action: "lock", path, source: e }),
        }
        Ok(StateLock { _file: file })
    }

    /// Reads the journal (empty when there is none). The directory, when it exists, must pass the same
    /// checks as for [`StateDir::lock`]; the file is read bounded ([`Limit::TABLE`]).
    pub fn load(&self) -> Result<Journal, JournalError> {
        match fs::symlink_metadata(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Journal::default()),
            _ => iommu_fsio::private_dir(&self.dir)?,
        }
        let path = self.journal_path();
        match iommu_fsio::read(&path, Limit::TABLE) {
            Ok(b) => Journal::parse(&b).map_err(|reason| JournalError::Corrupt { path, reason }),
            Err(e) if e.is_not_found() => Ok(Journal::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the journal atomically (a unique `O_EXCL|O_NOFOLLOW` temporary file, fsync, rename, fsync of
    /// the directory), mode `0600`. An empty journal removes the file.
    pub fn save(&self, j: &Journal) -> Result<(), JournalError> {
        let path = self.journal_path();
        if j.entries.is_empty() {
            return Ok(iommu_fsio::remove(&path)?);
        }
        let body = serde_json::to_vec_pretty(&Journal { version: JOURNAL_VERSION, entries: j.entries.clone() })
            .unwrap_or_default();
        Ok(iommu_fsio::write_atomic(&path, &body, 0o600)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn entry(addr: &str, orig: Option<&str>) -> Entry {
        Entry {
            address: addr.parse().unwrap(),
            group: Some(1),
            original_driver: orig.map(|d| DriverName::parse(d).unwrap()),
            original_override: None,
            bound_to: DriverName::parse("vfio-pci").unwrap(),
        }
    }

    #[test]
    fn saved_journal_is_private_and_loads_back() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(&t.path().join("state"));
        let _l = s.lock(|| {}).unwrap();
        let j = Journal { version: JOURNAL_VERSION, entries: vec![entry("01:00.0", Some("nvme"))] };
        s.save(&j).unwrap();
        assert_eq!(fs::metadata(s.journal_path()).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(s.path()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(s.load().unwrap(), j);
        s.save(&Journal::default()).unwrap();
        assert!(!s.journal_path().exists());
    }

    #[test]
    fn a_bad_driver_name_in_the_journal_is_corrupt_with_the_reason() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(t.path());
        let bad = r#"{"version":1,"entries":[{"address":"0000:01:00.0","group":1,
            "original_driver":"nvme\nsoftdep evil pre: x","original_override":null,"bound_to":"vfio-pci"}]}"#;
        fs::write(s.journal_path(), bad).unwrap();
        let e = s.load().unwrap_err();
        assert!(matches!(e, JournalError::Corrupt { .. }), "{e:?}");
        assert!(e.to_string().contains("not a kernel driver name"), "{e}");
        let bad = r#"{"version":1,"entries":[{"address":"0000:01:00.0","group":1,
            "original_driver":"nvme","original_override":"a\"b","bound_to":"vfio-pci"}]}"#;
        fs::write(s.journal_path(), bad).unwrap();
        assert!(s.load().unwrap_err().to_string().contains("not a kernel driver name"));
        let twice = serde_json::to_string(&Journal {
            version: 1,
            entries: vec![entry("01:00.0", None), entry("01:00.0", Some("nvme"))],
        })
        .unwrap();
        fs::write(s.journal_path(), twice).unwrap();
        assert!(s.load().unwrap_err().to_string().contains("0000:01:00.0 is listed twice"));
    }

    #[test]
    fn an_unsafe_state_dir_is_refused_saying_why() {
        let t = tempfile::tempdir().unwrap();
        let open = t.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = StateDir::new(&open).lock(|| {}).unwrap_err();
        assert!(matches!(e, JournalError::Unsafe { .. }) && e.to_string().contains("writable by others"), "{e}");
        assert!(StateDir::new(&open).load().is_err());
        let link = t.path().join("link");
        let real = t.path().join("real");
        fs::create_dir(&real).unwrap();
        symlink(&real, &link).unwrap();
        let e = StateDir::new(&link).lock(|| {}).unwrap_err();
        assert!(matches!(e, JournalError::Unsafe { .. }) && e.to_string().contains("symbolic link"), "{e}");
        // A lock file planted as a symlink is not followed.
        let victim = t.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        symlink(&victim, real.join("lock")).unwrap();
        let e = StateDir::new(&real).lock(|| {}).unwrap_err();
        assert!(matches!(e, JournalError::Unsafe { .. }), "{e}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn an_oversized_journal_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(t.path());
        File::create(s.journal_path()).unwrap().set_len(Limit::TABLE.bytes + 1).unwrap();
        assert!(s.load().unwrap_err().to_string().contains("larger than"));
    }
}
