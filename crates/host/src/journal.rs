//! The bind journal: what each device was bound to before iommuctl changed it, kept atomically in a state
//! directory and guarded by a lock, so a crashed or interrupted bind can be undone by `restore`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use iommu_pci::PciAddress;
use serde::{Deserialize, Serialize};

/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/run/iommuctl";

/// Journal or lock failures, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// File-system failure.
    #[error("cannot {action} {path}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The journal does not parse.
    #[error("journal {path} is corrupt; move it away to continue (it lists original drivers to restore)")]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// One device iommuctl changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The device.
    pub address: PciAddress,
    /// Its kernel IOMMU group at bind time.
    pub group: Option<u32>,
    /// The driver it had before iommuctl touched it.
    pub original_driver: Option<String>,
    /// Its driver_override before iommuctl touched it.
    pub original_override: Option<String>,
    /// The driver iommuctl bound it to.
    pub bound_to: String,
}

/// The journal file's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Format version.
    pub version: u32,
    /// Devices changed and not yet verifiably restored.
    pub entries: Vec<Entry>,
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
    /// Uses `dir` (created on first use).
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }

    /// The journal file's path.
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("journal.json")
    }

    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> JournalError + 'a {
        move |source| JournalError::Io { action, path: path.to_path_buf(), source }
    }

    /// Takes the exclusive lock, waiting for another iommuctl that holds it; `on_wait` is called once
    /// if the lock is busy.
    pub fn lock(&self, on_wait: impl FnOnce()) -> Result<StateLock, JournalError> {
        fs::create_dir_all(&self.dir).map_err(Self::io("create", &self.dir))?;
        let path = self.dir.join("lock");
        let file =
            File::options().create(true).truncate(false).write(true).open(&path).map_err(Self::io("open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                on_wait();
                file.lock().map_err(Self::io("lock", &path))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(JournalError::Io { action: "lock", path, source: e }),
        }
        Ok(StateLock { _file: file })
    }

    /// Reads the journal (empty when there is none).
    pub fn load(&self) -> Result<Journal, JournalError> {
        let path = self.journal_path();
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| JournalError::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Journal { version: 1, entries: vec![] }),
            Err(e) => Err(JournalError::Io { action: "read", path, source: e }),
        }
    }

    /// Writes the journal atomically: temp file, fsync, rename, fsync of the directory. An empty journal
    /// removes the file.
    pub fn save(&self, j: &Journal) -> Result<(), JournalError> {
        let path = self.journal_path();
        if j.entries.is_empty() {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(JournalError::Io { action: "remove", path, source: e })
                }
                _ => Ok(()),
            };
        }
        fs::create_dir_all(&self.dir).map_err(Self::io("create", &self.dir))?;
        let tmp = self.dir.join("journal.json.tmp");
        let body = serde_json::to_vec_pretty(j).unwrap_or_default();
        let mut f = File::create(&tmp).map_err(Self::io("create", &tmp))?;
        f.write_all(&body).and_then(|_| f.sync_all()).map_err(Self::io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(Self::io("rename into place", &path))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}
