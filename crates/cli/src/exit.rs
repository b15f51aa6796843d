//! Exit codes, one meaning each.

use std::process::ExitCode;

use iommu_host::journal::JournalError;

/// What a run ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: done, and the answer is positive.
    Ok,
    /// 1: done, the answer is negative (no IOMMU groups, unknown device, prediction differs).
    Negative,
    /// 2: bad input (address, snapshot file, arguments).
    BadInput,
    /// 3: refused for safety (a mounted file system, swap, console or network interface holds a device; the
    /// state directory is a symlink, someone else's or writable by others; sysfs names a driver oddly).
    Refused,
    /// 4: the operation failed (the host could not be read, a write failed).
    Failed,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(match e {
            Exit::Ok => 0,
            Exit::Negative => 1,
            Exit::BadInput => 2,
            Exit::Refused => 3,
            Exit::Failed => 4,
        })
    }
}

/// A failure that already knows its exit code.
#[derive(Debug)]
pub struct Coded(pub Exit, pub String);

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Coded {}

/// Builds an error with an exit code.
pub fn fail(code: Exit, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded(code, msg.into()))
}

/// The exit code for an error chain.
pub fn code_for(e: &anyhow::Error) -> Exit {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return c.0;
        }
        if let Some(b) = cause.downcast_ref::<iommu_host::bind::BindError>() {
            use iommu_host::bind::BindError as B;
            return match b {
                B::Refused { .. } | B::BadName { .. } | B::Journal(JournalError::Unsafe { .. }) => Exit::Refused,
                B::Ambiguous { .. } => Exit::BadInput,
                B::UnknownDevice(_) | B::NoGroup(_) => Exit::Negative,
                _ => Exit::Failed,
            };
        }
        if let Some(JournalError::Unsafe { .. }) = cause.downcast_ref::<JournalError>() {
            return Exit::Refused;
        }
        if let Some(f) = cause.downcast_ref::<iommu_fsio::FsError>() {
            // A state directory or lock someone else could have planted is a safety refusal.
            if matches!(f, iommu_fsio::FsError::Unsafe { .. }) {
                return Exit::Refused;
            }
        }
        if cause.is::<iommu_pci::AddressError>()
            || cause.is::<iommu_host::SnapshotError>()
            || cause.is::<iommu_host::LspciError>()
        {
            return Exit::BadInput;
        }
    }
    Exit::Failed
}

/// Whether the failure is only that stdout's reader closed the pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}
