//! The one way iommuctl touches files: bounded, non-blocking reads that refuse anything but a regular file,
//! and atomic writes that never follow a planted symlink.
//!
//! Every file iommuctl reads may be a FIFO (an open would block forever), a link to `/dev/zero` (a read
//! would never end), a sparse file of gigabytes or plain garbage. Every file it writes as root sits in a
//! directory someone else may have planted a symlink in. This crate is the single place that handles that:
//!
//! - [`read`] opens with `O_RDONLY|O_NONBLOCK|O_CLOEXEC|O_NOCTTY`, asks `fstat` that the result is a regular
//!   file (sysfs and procfs attributes are), and reads at most the [`Limit`] for that kind of file; past it
//!   the read fails naming the file and the limit.
//! - [`write_atomic`] writes a temporary file created with `O_CREAT|O_EXCL|O_NOFOLLOW` under a unique name
//!   in the target's directory, fsyncs it, renames it over the target and fsyncs the directory. A target
//!   that is a character device or FIFO (`/dev/null`, `/dev/stdout`) is written through instead.
//! - [`private_dir`] creates a state directory `0700` and refuses one that is a symlink, is not owned by the
//!   running user or is writable by group or others; [`open_lock`] opens a lock file without following links.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("out.txt");
//! iommu_fsio::write_atomic(&path, b"hello\n", 0o644).unwrap();
//! assert_eq!(iommu_fsio::read(&path, iommu_fsio::Limit::ATTRIBUTE).unwrap(), b"hello\n");
//! ```

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{FileType, Mode, OFlags};

/// How many bytes a kind of file may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The most bytes accepted.
    pub bytes: u64,
    /// What kind of file this is, for messages (`PCI config space`, `sysfs attribute`, ...).
    pub what: &'static str,
}

impl Limit {
    /// A PCI function's config space: 4096 bytes.
    pub const CONFIG: Limit = Limit { bytes: 4096, what: "PCI config space" };
    /// A sysfs or procfs attribute (`driver_override`, `reset_method`, `reserved_regions`, ...): 64 KiB.
    pub const ATTRIBUTE: Limit = Limit { bytes: 64 << 10, what: "sysfs/procfs attribute" };
    /// The kernel command line: 64 KiB.
    pub const CMDLINE: Limit = Limit { bytes: 64 << 10, what: "kernel command line" };
    /// Tables and lists the kernel keeps (`/proc/self/mountinfo`, `/proc/interrupts`, `modules.dep`,
    /// the journal, persisted rules): 16 MiB.
    pub const TABLE: Limit = Limit { bytes: 16 << 20, what: "system table" };
    /// An input file named on the command line (a snapshot, an lspci dump), and standard input: 1 GiB.
    pub const INPUT: Limit = Limit { bytes: 1 << 30, what: "input file" };
    /// A pci.ids database: 64 MiB.
    pub const PCI_IDS: Limit = Limit { bytes: 64 << 20, what: "pci.ids database" };

    /// The same kind with another size (tests use small limits).
    pub const fn with_bytes(self, bytes: u64) -> Limit {
        Limit { bytes, what: self.what }
    }
}

/// Why a file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The open, stat, read or write itself failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted (`open`, `read`, `write`, `rename`, ...).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Where a regular file was expected there is something else (a FIFO, a device, a directory, a socket).
    #[error("{path} is {kind}, not a regular file")]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is, with an article (`a FIFO`, `a character device`, ...).
        kind: &'static str,
    },
    /// The file holds more than its kind may.
    #[error("{path} is larger than {} bytes, the most a {} may hold", .limit.bytes, .limit.what)]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// The limit it broke.
        limit: Limit,
    },
    /// A directory that must be private is not.
    #[error("refusing {path}: {why}")]
    Unsafe {
        /// The directory or file.
        path: PathBuf,
        /// Why it cannot be trusted.
        why: String,
    },
}

impl FsError {
    /// The path the error names.
    pub fn path(&self) -> &Path {
        match self {
            FsError::Io { path, .. }
            | FsError::NotRegular { path, .. }
            | FsError::TooLarge { path, .. }
            | FsError::Unsafe { path, .. } => path,
        }
    }

    /// Whether the file or a directory on its path does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FsError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// The operating system's error, when there is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            FsError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FsError + 'a {
    move |source| FsError::Io { action, path: path.to_path_buf(), source }
}

fn errno<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(rustix::io::Errno) -> FsError + 'a {
    move |e| FsError::Io { action, path: path.to_path_buf(), source: e.into() }
}

/// Names a file type with an article, for messages.
pub fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "a file of unknown type",
    }
}

/// Opens `path` for reading without blocking on a FIFO and checks that it is a regular file.
fn open_regular(path: &Path) -> Result<(File, u64), FsError> {
    let fd: OwnedFd =
        rustix::fs::open(path, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY, Mode::empty())
            .map_err(errno("open", path))?;
    let st = rustix::fs::fstat(&fd).map_err(errno("stat", path))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(FsError::NotRegular { path: path.to_path_buf(), kind: describe(kind) });
    }
    Ok((File::from(fd), u64::try_from(st.st_size).unwrap_or(0)))
}

/// Reads at most `limit.bytes + 1` bytes from `r`; more than `limit.bytes` is an error naming `path`.
pub fn read_limited(mut r: impl Read, path: &Path, limit: Limit) -> Result<Vec<u8>, FsError> {
    // Grown by hand rather than by `read_to_end`, whose doubling could reserve twice the limit on a
    // stream that never ends: the buffer never holds more than `limit + 1` bytes.
    let cap = limit.bytes.saturating_add(1);
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let mut buf: Vec<u8> = Vec::with_capacity(cap.min(64 << 10));
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FsError::Io { action: "read", path: path.to_path_buf(), source: e }),
        };
        if buf.len() + n >= cap {
            return Err(FsError::TooLarge { path: path.to_path_buf(), limit });
        }
        if buf.capacity() - buf.len() < n {
            let more = buf.capacity().max(n).min(cap - buf.len());
            buf.reserve_exact(more);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if buf.len() as u64 > limit.bytes {
        return Err(FsError::TooLarge { path: path.to_path_buf(), limit });
    }
    Ok(buf)
}

/// Reads a whole regular file of at most `limit` bytes. A FIFO, device, directory or socket is refused
/// without blocking; a file whose size is already over the limit is refused before any byte is read.
pub fn read(path: &Path, limit: Limit) -> Result<Vec<u8>, FsError> {
    let (file, size) = open_regular(path)?;
    if size > limit.bytes {
        return Err(FsError::TooLarge { path: path.to_path_buf(), limit });
    }
    read_limited(file, path, limit)
}

/// Reads at most the first `n` bytes of a regular file (a config space header, say); never more.
pub fn read_prefix(path: &Path, n: usize) -> Result<Vec<u8>, FsError> {
    let (file, _) = open_regular(path)?;
    let mut buf = Vec::with_capacity(n.min(1 << 16));
    file.take(n as u64).read_to_end(&mut buf).map_err(io_err("read", path))?;
    Ok(buf)
}

/// Reads a regular file as text: invalid UTF-8 becomes U+FFFD instead of failing the whole read (one
/// bad byte in `/proc/cmdline` must not hide every other parameter).
pub fn read_text(path: &Path, limit: Limit) -> Result<String, FsError> {
    let bytes = read(path, limit)?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// A small attribute as trimmed text; `None` when it is missing or cannot be read for any reason.
pub fn attr(path: &Path) -> Option<String> {
    read_text(path, Limit::ATTRIBUTE).ok().map(|s| s.trim().to_string())
}

/// Reads standard input (`-` on the command line) up to `limit`. Pipes, FIFOs, sockets and regular files
/// are read; a terminal or other device is refused (reading a terminal would wait for typing, reading
/// `/dev/zero` would never end).
pub fn read_stdin(limit: Limit) -> Result<Vec<u8>, FsError> {
    let path = Path::new("standard input");
    let stdin = io::stdin();
    let st = rustix::fs::fstat(stdin.as_fd()).map_err(errno("stat", path))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    match kind {
        FileType::RegularFile | FileType::Fifo | FileType::Socket => read_limited(stdin.lock(), path, limit),
        _ => Err(FsError::NotRegular { path: path.to_path_buf(), kind: describe(kind) }),
    }
}

/// Reads `path`, or standard input when `path` is `-`.
pub fn read_input(path: &Path, limit: Limit) -> Result<Vec<u8>, FsError> {
    if path == Path::new("-") {
        read_stdin(limit)
    } else {
        read(path, limit)
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary name beside `target` that no other process or thread picks: pid, time, counter.
fn temp_name(target: &Path) -> PathBuf {
    let dir = parent_dir(target);
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name: String = name.chars().take(64).collect();
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}.{nanos:08x}.{n}.tmp", std::process::id()))
}

fn parent_dir(target: &Path) -> &Path {
    target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Opens an existing FIFO or character device for writing (`/dev/null`, `/dev/stdout`): a FIFO with no
/// reader fails at once (ENXIO) instead of blocking.
fn open_device_for_write(path: &Path) -> Result<File, FsError> {
    let fd =
        rustix::fs::open(path, OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY, Mode::empty())
            .map_err(errno("open", path))?;
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(errno("open", path))?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(errno("open", path))?;
    Ok(File::from(fd))
}

/// Writes `bytes` to `target` so that readers see the old file or the new one, never half of one, and so
/// that no symlink planted beside it is followed: a temporary file created `O_EXCL|O_NOFOLLOW` with a
/// unique name in the same directory, written, fsynced, renamed over `target`, then the directory fsynced.
/// `mode` is the new file's permission bits (before the umask). A target that is a FIFO or character
/// device is written to directly (it has no contents to replace); a directory is refused.
pub fn write_atomic(target: &Path, bytes: &[u8], mode: u32) -> Result<(), FsError> {
    match rustix::fs::stat(target) {
        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::Fifo | FileType::CharacterDevice => {
                let mut f = open_device_for_write(target)?;
                return f.write_all(bytes).and_then(|_| f.flush()).map_err(io_err("write", target));
            }
            FileType::Directory => {
                return Err(FsError::NotRegular { path: target.to_path_buf(), kind: "a directory" });
            }
            _ => {}
        },
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) if e == rustix::io::Errno::LOOP => {}
        Err(e) => return Err(errno("stat", target)(e)),
    }
    for _ in 0..16 {
        let tmp = temp_name(target);
        let fd = match rustix::fs::open(
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode & 0o7777),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(errno("create a temporary file beside", target)(e)),
        };
        let mut f = File::from(fd);
        let written = f.write_all(bytes).and_then(|_| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(FsError::Io { action: "write a temporary file beside", path: target.to_path_buf(), source: e });
        }
        drop(f);
        if let Err(e) = std::fs::rename(&tmp, target) {
            let _ = std::fs::remove_file(&tmp);
            return Err(FsError::Io { action: "rename into place", path: target.to_path_buf(), source: e });
        }
        sync_dir(parent_dir(target));
        return Ok(());
    }
    Err(FsError::Io {
        action: "create a temporary file beside",
        path: target.to_path_buf(),
        source: io::Error::from(io::ErrorKind::AlreadyExists),
    })
}

/// Fsyncs a directory so a rename in it survives a crash; best effort (some file systems refuse).
pub fn sync_dir(dir: &Path) {
    if let Ok(fd) = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()) {
        let _ = rustix::fs::fsync(&fd);
    }
}

/// Removes `path` if it exists (a missing file is not an error), then fsyncs its directory.
pub fn remove(path: &Path) -> Result<(), FsError> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            sync_dir(parent_dir(path));
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError::Io { action: "remove", path: path.to_path_buf(), source: e }),
    }
}

/// Makes sure `dir` is a private directory of the running user: creates it `0700` (parents as needed)
/// when missing, then refuses it when it is a symlink, not a directory, not owned by the effective user,
/// or writable by group or others. A state directory anyone else can write into is one where they can
/// plant a journal that makes root write elsewhere.
pub fn private_dir(dir: &Path) -> Result<(), FsError> {
    match rustix::fs::lstat(dir) {
        Err(rustix::io::Errno::NOENT) => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
            }
            match rustix::fs::mkdir(dir, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(errno("create", dir)(e)),
            }
        }
        Err(e) => return Err(errno("stat", dir)(e)),
        Ok(_) => {}
    }
    let st = rustix::fs::lstat(dir).map_err(errno("stat", dir))?;
    let unsafe_dir = |why: String| FsError::Unsafe { path: dir.to_path_buf(), why };
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::Directory {
        return Err(unsafe_dir(format!("it is {}, not a directory", describe(kind))));
    }
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me {
        return Err(unsafe_dir(format!("it is owned by uid {}, not by the running user (uid {me})", st.st_uid)));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "it is writable by {} (mode {:o}); `chmod 700` it",
            if st.st_mode & 0o002 != 0 { "others" } else { "its group" },
            st.st_mode & 0o7777
        )));
    }
    Ok(())
}

/// Opens (creating `0600` if needed) a lock file without following a symlink, and checks that it is a
/// regular file.
pub fn open_lock(path: &Path) -> Result<File, FsError> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| {
        if e == rustix::io::Errno::LOOP {
            FsError::Unsafe { path: path.to_path_buf(), why: "it is a symbolic link".into() }
        } else {
            errno("open", path)(e)
        }
    })?;
    let st = rustix::fs::fstat(&fd).map_err(errno("stat", path))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(FsError::NotRegular { path: path.to_path_buf(), kind: describe(kind) });
    }
    Ok(File::from(fd))
}

/// Opens an existing file for writing without creating it and without following a final symlink: the
/// way to write sysfs attributes (`driver_override`, `bind`, `unbind`, `drivers_probe`).
pub fn open_attribute_for_write(path: &Path) -> Result<File, FsError> {
    let fd =
        rustix::fs::open(path, OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK, Mode::empty())
            .map_err(errno("open", path))?;
    let st = rustix::fs::fstat(&fd).map_err(errno("stat", path))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(FsError::NotRegular { path: path.to_path_buf(), kind: describe(kind) });
    }
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::time::{Duration, Instant};

    fn mkfifo(p: &Path) {
        rustix::fs::mknodat(rustix::fs::CWD, p, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config");
        mkfifo(&p);
        let t = Instant::now();
        let e = read(&p, Limit::CONFIG).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(matches!(e, FsError::NotRegular { kind: "a FIFO", .. }), "{e}");
        assert!(e.to_string().contains("config"), "{e}");
    }

    #[test]
    fn a_link_to_dev_zero_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cmdline");
        symlink("/dev/zero", &p).unwrap();
        let e = read(&p, Limit::CMDLINE).unwrap_err();
        assert!(matches!(e, FsError::NotRegular { kind: "a character device", .. }), "{e}");
    }

    #[test]
    fn a_sparse_file_over_the_limit_is_refused_before_reading() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.json");
        let f = File::create(&p).unwrap();
        f.set_len(3 << 30).unwrap();
        let t = Instant::now();
        let e = read(&p, Limit::INPUT).unwrap_err();
        assert!(t.elapsed() < Duration::from_millis(500));
        assert!(matches!(e, FsError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn a_stream_past_the_limit_stops_at_limit_plus_one() {
        let src = io::repeat(b'x');
        let e = read_limited(src, Path::new("stdin"), Limit::INPUT.with_bytes(1000)).unwrap_err();
        assert!(e.to_string().contains("larger than 1000 bytes"), "{e}");
        let ok = read_limited(&b"abc"[..], Path::new("x"), Limit::INPUT.with_bytes(3)).unwrap();
        assert_eq!(ok, b"abc");
    }

    #[test]
    fn text_keeps_every_parameter_around_a_bad_byte() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cmdline");
        std::fs::write(&p, b"quiet x=\xff pci=disable_acs_redir=0000:00:01.0\n").unwrap();
        let s = read_text(&p, Limit::CMDLINE).unwrap();
        assert!(s.contains("pci=disable_acs_redir=0000:00:01.0"), "{s}");
    }

    #[test]
    fn write_atomic_replaces_a_symlink_instead_of_following_it() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let out = d.path().join("out");
        symlink(&victim, &out).unwrap();
        write_atomic(&out, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "new");
        assert!(!std::fs::symlink_metadata(&out).unwrap().file_type().is_symlink());
    }

    #[test]
    fn write_atomic_leaves_no_temporary_file_and_ignores_planted_temp_links() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        // The old fixed temporary names, planted as links.
        symlink(&victim, d.path().join(".out.tmp")).unwrap();
        symlink(&victim, d.path().join("out.iommuctl-tmp")).unwrap();
        let out = d.path().join("out");
        write_atomic(&out, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let names: Vec<String> =
            std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }

    #[test]
    fn write_atomic_writes_through_dev_null_and_refuses_a_directory() {
        write_atomic(Path::new("/dev/null"), b"x", 0o644).unwrap();
        assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device_like());
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(write_atomic(d.path(), b"x", 0o644), Err(FsError::NotRegular { .. })));
    }

    #[test]
    fn a_fifo_target_without_a_reader_fails_at_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fifo");
        mkfifo(&p);
        let t = Instant::now();
        let e = write_atomic(&p, b"x", 0o644).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2), "{e}");
    }

    #[test]
    fn private_dir_is_created_0700_and_refused_when_open_or_a_link() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("run/iommuctl");
        private_dir(&state).unwrap();
        assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir(&state).unwrap_err();
        assert!(e.to_string().contains("writable by others"), "{e}");
        let link = d.path().join("link");
        symlink(d.path(), &link).unwrap();
        let e = private_dir(&link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn open_lock_refuses_a_planted_symlink() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let lock = d.path().join("lock");
        symlink(&victim, &lock).unwrap();
        let e = open_lock(&lock).unwrap_err();
        assert!(matches!(e, FsError::Unsafe { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    trait CharLike {
        fn is_char_device_like(&self) -> bool;
    }
    impl CharLike for std::fs::FileType {
        fn is_char_device_like(&self) -> bool {
            use std::os::unix::fs::FileTypeExt;
            self.is_char_device()
        }
    }
}
