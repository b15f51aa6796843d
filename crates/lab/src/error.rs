//! Error type of the lab.

use std::path::PathBuf;

/// Everything that can go wrong while preparing or booting a guest.
///
/// Each variant names the file, command or run that failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A file system operation failed on `path`.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("read", "write", "create dir", ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A host command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A host command ran but failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// No kernel answering the selector is in the lab (`scripts/lab-setup` unpacks and builds them).
    #[error("no {want} kernel under {dir} (found: {found})")]
    NoKernel {
        /// The selector: a "major.minor" version ("6.12") or a release suffix ("iommufd").
        want: String,
        /// The directory searched.
        dir: PathBuf,
        /// The kernel versions that were found.
        found: String,
    },
    /// A kernel module needed in the guest is not in the kernel's module tree.
    #[error("kernel module {name} not found under {dir}")]
    NoModule {
        /// The module name.
        name: String,
        /// The module tree searched.
        dir: PathBuf,
    },
    /// No topology has that name.
    #[error("unknown topology {0:?} (see `lab-capture --list`)")]
    UnknownTopology(String),
    /// Something the lab needs is missing on this host.
    #[error("lab unavailable: {0}")]
    Unavailable(String),
    /// QEMU ran longer than the timeout and was killed.
    #[error("run {run}: QEMU killed after {secs} s (timeout; set IOMMU_LAB_TIMEOUT); work dir {dir}\n--- console tail ---\n{tail}")]
    Timeout {
        /// The run's name.
        run: String,
        /// The timeout in seconds.
        secs: u64,
        /// The run's work directory.
        dir: PathBuf,
        /// The last lines of the guest console.
        tail: String,
    },
    /// QEMU exited but the guest did not get to the end of its script.
    #[error("run {run}: {what} (QEMU exit: {status}); work dir {dir}\n--- console tail ---\n{tail}")]
    Incomplete {
        /// The run's name.
        run: String,
        /// What was missing.
        what: String,
        /// QEMU's exit status.
        status: String,
        /// The run's work directory.
        dir: PathBuf,
        /// The last lines of the guest console.
        tail: String,
    },
    /// The guest's output could not be parsed.
    #[error("run {run}: bad guest output: {what}")]
    Parse {
        /// The run's name.
        run: String,
        /// What was wrong.
        what: String,
    },
}

impl LabError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LabError::Io { op, path: path.into(), source }
    }
}

/// Result alias of the lab.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
