//! # iommu-lab: a real-kernel test lab
//!
//! Boots a real Debian kernel (6.1 or 6.12, unpacked by `scripts/lab-setup`) or the kernel with
//! iommufd that `scripts/lab-setup` builds from Debian's 6.12 source ([`topology::iommufd`]) in QEMU
//! under software emulation (TCG) with an emulated IOMMU (Intel VT-d or AMD-Vi) and a chosen PCI
//! topology, runs a shell script (and our binaries, [`GuestSpec::binary`]) inside it and returns what
//! the guest reported: the kernel's IOMMU groups and any `section` the script printed.
//!
//! ```no_run
//! use iommu_lab::{require_lab, topology, GuestSpec};
//! if require_lab() {
//!     let t = topology("switch").unwrap();
//!     let run = GuestSpec::new(&t)
//!         .script(". /lab/lib.sh\nsection uname uname -r\n")
//!         .boot()
//!         .unwrap();
//!     println!("{:?} {}", run.kernel_groups, run.stdout("uname").unwrap());
//! }
//! ```
//!
//! Environment:
//! - `IOMMU_LAB_DIR`: lab directory (default `<workspace>/target/lab`): kernels in
//!   `kernels/<release>/`, run work directories in `runs/<name>/`.
//! - `IOMMU_LAB_TIMEOUT`: seconds before a QEMU is killed (default 180).
//! - `IOMMU_LAB_JOBS`: how many QEMUs one process runs at once (default 2).
//! - `IOMMU_LAB_QEMU`: the QEMU binary (default `qemu-system-x86_64` on PATH).
//! - `IOMMUCTL_BIN`: the binary the iommuctl test and `lab-capture` run in the guest
//!   (default `<workspace>/target/release/iommuctl`).
//! - `IOMMU_LAB_ONLY`: comma-separated topology names the tests restrict themselves to.
//! - `CI=true` or `IOMMU_LAB_REQUIRED=1`: a missing lab fails tests instead of skipping them.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
pub mod initramfs;
pub mod kernel;
pub mod run;
pub mod topology;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{LabError, Result};
pub use initramfs::Initramfs;
pub use kernel::Kernel;
pub use run::{parse_kernel_groups, parse_sections, GuestRun, GuestSpec, Section};
pub use topology::{topologies, topology, Iommu, Topology};

/// The workspace root (two levels above this crate).
pub fn workspace_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(|| here.to_path_buf())
}

/// The lab directory: `$IOMMU_LAB_DIR`, else `<workspace>/target/lab`.
pub fn lab_dir() -> PathBuf {
    match std::env::var_os("IOMMU_LAB_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_dir().join("target").join("lab"),
    }
}

/// The QEMU timeout: `$IOMMU_LAB_TIMEOUT` seconds, else 180.
pub fn default_timeout() -> Duration {
    let secs = std::env::var("IOMMU_LAB_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(180);
    Duration::from_secs(secs)
}

/// How many QEMUs may run at once in this process: `$IOMMU_LAB_JOBS`, else 2.
pub fn max_jobs() -> usize {
    std::env::var("IOMMU_LAB_JOBS").ok().and_then(|v| v.trim().parse::<usize>().ok()).filter(|&n| n > 0).unwrap_or(2)
}

/// Whether a missing lab must fail the tests (`CI=true` or `IOMMU_LAB_REQUIRED=1`).
pub fn lab_required() -> bool {
    let ci = std::env::var("CI").map(|v| v.eq_ignore_ascii_case("true") || v == "1").unwrap_or(false);
    let req = std::env::var("IOMMU_LAB_REQUIRED").map(|v| v == "1" || v.eq_ignore_ascii_case("true")).unwrap_or(false);
    ci || req
}

/// Finds `name` on `PATH` or in the sbin directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    for d in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The `iommuctl` binary under test: `$IOMMUCTL_BIN`, else `<workspace>/target/release/iommuctl`.
/// It may not exist; check before use.
pub fn iommuctl_bin() -> PathBuf {
    match std::env::var_os("IOMMUCTL_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_dir().join("target").join("release").join("iommuctl"),
    }
}

/// Example `name` of the workspace, from the same build as [`iommuctl_bin`]
/// (`<dir of iommuctl>/examples/<name>`; `cargo build --release --workspace --examples` makes them).
/// It may not exist: see [`require_binaries`].
pub fn example_bin(name: &str) -> PathBuf {
    iommuctl_bin().with_file_name("examples").join(name)
}

/// The JSON lines (`{"step": …}`) an example driver printed, in order.
pub fn json_steps(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The first step whose name contains `needle`; panics listing every step when there is none.
pub fn json_step<'a>(steps: &'a [serde_json::Value], needle: &str) -> &'a serde_json::Value {
    steps
        .iter()
        .find(|s| s["step"].as_str().is_some_and(|n| n.contains(needle)))
        .unwrap_or_else(|| panic!("no step containing {needle:?} in {steps:#?}"))
}

/// `true` when every path is a file; otherwise fails under CI / `IOMMU_LAB_REQUIRED=1`, or prints
/// `LAB SKIPPED: <path> not found` and returns `false`. For the binaries a test ships into its guest
/// with [`GuestSpec::binary`].
pub fn require_binaries(paths: &[PathBuf]) -> bool {
    match paths.iter().find(|p| !p.is_file()) {
        None => true,
        Some(p) => skip_or_fail(&format!(
            "{} not found (cargo build --release --workspace --bins --examples, as scripts/test does)",
            p.display()
        )),
    }
}

/// `true` when the lab has a kernel answering `selector` ([`Kernel::find`]: "6.12", "iommufd");
/// otherwise fails under CI / `IOMMU_LAB_REQUIRED=1`, or prints `LAB SKIPPED: <reason>` and returns
/// `false`. [`require_lab`] checks only the kernels of [`topologies`]; a test on [`topology::iommufd`]
/// calls this too.
pub fn require_kernel(selector: &str) -> bool {
    match Kernel::find(selector) {
        Ok(_) => true,
        Err(e) => skip_or_fail(&format!("{e}; `sudo scripts/lab-setup` unpacks or builds it")),
    }
}

/// The QEMU binary: `$IOMMU_LAB_QEMU`, else `qemu-system-x86_64` on PATH.
pub fn find_qemu() -> Option<PathBuf> {
    match std::env::var_os("IOMMU_LAB_QEMU") {
        Some(q) if !q.is_empty() => {
            let p = PathBuf::from(q);
            p.is_file().then_some(p)
        }
        _ => find_program("qemu-system-x86_64"),
    }
}

/// The QEMU to run inside a guest (`crates/lab/tests/realize.rs`): bookworm-backports' QEMU 10.0, which has
/// the iommufd backend, unpacked by `scripts/lab-setup` under `<lab dir>/qemu-guest`. It may not exist.
pub fn guest_qemu() -> PathBuf {
    lab_dir().join("qemu-guest/usr/bin/qemu-system-x86_64")
}

/// The host's busybox (Debian's busybox-static installs `/bin/busybox`).
pub fn find_busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| find_program("busybox"))
}

/// The host's PCI ID database.
pub fn find_pci_ids() -> Option<PathBuf> {
    ["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"].iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Checks that everything the lab needs is here; the error says what is missing.
pub fn lab_available() -> std::result::Result<(), String> {
    let mut missing = Vec::new();
    if find_qemu().is_none() {
        missing.push("qemu-system-x86_64 (package qemu-system-x86; or set IOMMU_LAB_QEMU)".to_string());
    }
    if find_busybox().is_none() {
        missing.push("busybox (package busybox-static)".to_string());
    }
    if find_pci_ids().is_none() {
        missing.push("pci.ids (package pci.ids or hwdata)".to_string());
    }
    if find_program("modinfo").is_none() {
        missing.push("modinfo (package kmod)".to_string());
    }
    if find_program("ldd").is_none() {
        missing.push("ldd (package libc-bin)".to_string());
    }
    let kernels_dir = lab_dir().join("kernels");
    let mut wanted: Vec<String> = topologies().into_iter().map(|t| t.kernel).collect();
    wanted.sort();
    wanted.dedup();
    for k in wanted {
        if let Err(e) = Kernel::find_in(&kernels_dir, &k) {
            missing.push(e.to_string());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("{}; `sudo scripts/lab-setup` installs the lab", missing.join("; ")))
    }
}

/// Test policy for a missing lab: if `reason` applies and the lab is required
/// ([`lab_required`]), panics (the test fails); otherwise prints `LAB SKIPPED: <reason>` to
/// stderr and returns `false`.
pub fn skip_or_fail(reason: &str) -> bool {
    if lab_required() {
        panic!("the real-kernel lab is required (CI=true or IOMMU_LAB_REQUIRED=1) but unavailable: {reason}");
    }
    // Written straight to the process's stderr: the test harness captures `eprintln!` of
    // passing tests, which would make the skip silent.
    use std::io::Write;
    let bar = "=".repeat(72);
    let _ = write!(std::io::stderr().lock(), "\n{bar}\nLAB SKIPPED: {reason}\n{bar}\n");
    false
}

/// `true` when the lab is usable; otherwise fails under CI / `IOMMU_LAB_REQUIRED=1`, or
/// prints a loud `LAB SKIPPED: <reason>` line and returns `false`.
pub fn require_lab() -> bool {
    match lab_available() {
        Ok(()) => true,
        Err(reason) => skip_or_fail(&reason),
    }
}

/// The topologies a test run covers: all of them, or those named in `$IOMMU_LAB_ONLY`
/// (comma-separated). An unknown name in the filter panics, so a typo is never a silent skip.
pub fn selected_topologies() -> Vec<Topology> {
    let all = topologies();
    let Ok(only) = std::env::var("IOMMU_LAB_ONLY") else {
        return all;
    };
    let names: Vec<&str> = only.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if names.is_empty() {
        return all;
    }
    for n in &names {
        assert!(all.iter().any(|t| t.name == *n), "IOMMU_LAB_ONLY names unknown topology {n:?}");
    }
    all.into_iter().filter(|t| names.contains(&t.name.as_str())).collect()
}

/// Calls `f` on every item with up to [`max_jobs`] threads; results keep the items' order.
pub fn for_each_parallel<T, R, F>(items: &[T], f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let jobs = max_jobs().min(items.len()).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<R>>> = std::sync::Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= items.len() {
                    break;
                }
                let r = f(&items[i]);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every item was processed"))
        .collect()
}
