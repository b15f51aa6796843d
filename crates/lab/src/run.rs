//! Booting a topology in QEMU and reading what the guest reported.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};
use crate::initramfs::{module_plan, Initramfs};
use crate::kernel::Kernel;
use crate::topology::{Topology, RUNDIR};

const INIT_SH: &str = include_str!("guest/init.sh");
const LIB_SH: &str = include_str!("guest/lib.sh");

/// Modules loaded in every guest, in this order (dependencies are added before each).
/// `true` = required unless built into the kernel.
pub const GUEST_MODULES: &[(&str, bool)] = &[
    ("irqbypass", false),
    ("vfio", true),
    ("vfio_virqfd", false),
    ("vfio_iommu_type1", true),
    ("vfio-pci-core", true),
    ("vfio-pci", true),
    ("nvme-core", false),
    ("nvme", false),
    ("crc32c_generic", false),
    ("ext4", false),
];

/// Size of each raw disk image made for [`Topology::images`].
pub const IMAGE_SIZE: u64 = 4 << 20;

/// Marker printed by /init after /lab/run.sh returned.
const DONE_MARKER: &str = "@@LAB-DONE";

/// What to boot and what to run inside.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// The machine.
    pub topology: Topology,
    /// Name of the work directory under `$IOMMU_LAB_DIR/runs/` (default: the topology's name).
    pub run_name: String,
    /// Contents of `/lab/run.sh`, run by `sh` after the `kernel-groups` report with its
    /// stdout on the output serial port. `/lab/lib.sh` (with `section`) is already sourced
    /// by /init but not by this script: start it with `. /lab/lib.sh`.
    pub script: String,
    /// Host executables copied to the same paths in the guest, with their shared libraries.
    pub binaries: Vec<PathBuf>,
    /// Extra files: (guest path, contents, permission bits).
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// Extra kernel command-line arguments.
    pub kernel_args: Vec<String>,
    /// Modules loaded after [`GUEST_MODULES`] (with their dependencies): name and whether a missing one
    /// is an error (built-in modules are never missing; on a kernel without loadable modules the guest
    /// checks `/sys/module/<name>`, see [`crate::initramfs::module_plan`]).
    pub modules: Vec<(String, bool)>,
    /// How long QEMU may run before it is killed.
    pub timeout: Duration,
}

impl GuestSpec {
    /// A spec for `topology` with an empty script and the default timeout
    /// (`IOMMU_LAB_TIMEOUT` seconds, else 180).
    pub fn new(topology: &Topology) -> GuestSpec {
        GuestSpec {
            topology: topology.clone(),
            run_name: topology.name.clone(),
            script: ". /lab/lib.sh\n".to_string(),
            binaries: Vec::new(),
            files: Vec::new(),
            kernel_args: Vec::new(),
            modules: Vec::new(),
            timeout: crate::default_timeout(),
        }
    }

    /// Sets `/lab/run.sh`.
    pub fn script(mut self, script: &str) -> GuestSpec {
        self.script = script.to_string();
        self
    }

    /// Sets the run directory name.
    pub fn run_name(mut self, name: &str) -> GuestSpec {
        self.run_name = name.to_string();
        self
    }

    /// Adds a host executable (copied to the same path, with its libraries).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> GuestSpec {
        self.binaries.push(path.into());
        self
    }

    /// Adds a file at `guest_path`.
    pub fn file(mut self, guest_path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> GuestSpec {
        self.files.push((guest_path.to_string(), contents.into(), mode));
        self
    }

    /// Adds a kernel command-line argument.
    pub fn kernel_arg(mut self, arg: &str) -> GuestSpec {
        self.kernel_args.push(arg.to_string());
        self
    }

    /// Adds a kernel module to load after [`GUEST_MODULES`] (`btrfs`, `dm-mod`), with its dependencies;
    /// `required`: fail the boot when the kernel has neither the module nor a built-in of that name.
    pub fn module(mut self, name: &str, required: bool) -> GuestSpec {
        self.modules.push((name.to_string(), required));
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> GuestSpec {
        self.timeout = timeout;
        self
    }

    /// The run's work directory.
    pub fn run_dir(&self) -> PathBuf {
        crate::lab_dir().join("runs").join(&self.run_name)
    }

    /// Builds the initramfs for `kernel`.
    pub fn initramfs(&self, kernel: &Kernel) -> Result<Initramfs> {
        let mut fs = Initramfs::new();
        for d in [
            "/bin",
            "/sbin",
            "/usr/bin",
            "/usr/sbin",
            "/proc",
            "/sys",
            "/dev",
            "/tmp",
            "/run",
            "/root",
            "/etc",
            "/var",
            "/lab",
            "/lib/modules",
        ] {
            fs.dir(d);
        }
        fs.char_dev("/dev/console", 5, 1);
        fs.char_dev("/dev/null", 1, 3);
        fs.char_dev("/dev/ttyS0", 4, 64);
        fs.char_dev("/dev/ttyS1", 4, 65);
        for b in &self.binaries {
            fs.host_binary(b)?;
        }
        let busybox = crate::find_busybox().ok_or_else(|| LabError::Unavailable("busybox not found".into()))?;
        fs.busybox(&busybox)?;
        let ids = crate::find_pci_ids().ok_or_else(|| LabError::Unavailable("pci.ids not found".into()))?;
        fs.host_file("/usr/share/misc/pci.ids", &ids, 0o644)?;
        let mut wanted: Vec<(&str, bool)> = GUEST_MODULES.to_vec();
        wanted.extend(self.modules.iter().map(|(n, r)| (n.as_str(), *r)));
        let modules = module_plan(kernel, &wanted)?;
        fs.kernel_modules(&modules.files)?;
        fs.file("/lab/modules.list", modules.guest_list(), 0o644);
        fs.file("/init", INIT_SH, 0o755);
        fs.file("/lab/lib.sh", LIB_SH, 0o644);
        fs.file(
            "/lab/env",
            format!(
                "LAB_TOPOLOGY='{}'\nLAB_IOMMU='{}'\nLAB_KERNEL='{}'\n",
                self.topology.name, self.topology.iommu, kernel.version
            ),
            0o644,
        );
        fs.file("/lab/run.sh", self.script.as_bytes().to_vec(), 0o755);
        for (path, data, mode) in &self.files {
            fs.file(path, data.clone(), *mode);
        }
        Ok(fs)
    }

    /// Boots the topology, runs the script and collects the output.
    ///
    /// At most [`crate::max_jobs`] QEMUs run at once in this process; further calls wait.
    pub fn boot(&self) -> Result<GuestRun> {
        let kernel = Kernel::find(&self.topology.kernel)?;
        let qemu = crate::find_qemu().ok_or_else(|| LabError::Unavailable("qemu-system-x86_64 not found".into()))?;
        let dir = self.run_dir();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| LabError::io("remove dir", &dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| LabError::io("create dir", &dir, e))?;
        let initrd = dir.join("initramfs.cpio");
        self.initramfs(&kernel)?.write(&initrd)?;
        for image in &self.topology.images {
            let p = dir.join(image);
            let f = File::create(&p).map_err(|e| LabError::io("create", &p, e))?;
            f.set_len(IMAGE_SIZE).map_err(|e| LabError::io("resize", &p, e))?;
        }
        let console_path = dir.join("console.log");
        let out_path = dir.join("out.log");

        // no_timer_check: under TCG on a busy host, the boot-time check that the timer
        // interrupt arrives through the interrupt-remapped IO-APIC can time out and panic
        // ("timer doesn't work through Interrupt-remapped IO-APIC"; seen on 6.12 with VT-d).
        let mut append = vec!["console=ttyS0".to_string(), "panic=-1".into(), "quiet".into(), "no_timer_check".into()];
        if let Some(a) = self.topology.iommu.kernel_arg() {
            append.push(a.to_string());
        }
        append.extend(self.kernel_args.iter().cloned());

        let dir_str = dir.to_string_lossy().into_owned();
        let mut args: Vec<String> = [
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-machine",
            "q35,kernel-irqchip=split",
            "-m",
            "512",
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
            "-net",
            "none",
            "-monitor",
            "none",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("-serial".into());
        args.push(format!("file:{}", console_path.display()));
        args.push("-serial".into());
        args.push(format!("file:{}", out_path.display()));
        args.push("-kernel".into());
        args.push(kernel.vmlinuz.to_string_lossy().into_owned());
        args.push("-initrd".into());
        args.push(initrd.to_string_lossy().into_owned());
        args.push("-append".into());
        args.push(append.join(" "));
        args.extend(self.topology.iommu.qemu_args());
        args.extend(self.topology.devices.iter().map(|a| a.replace(RUNDIR, &dir_str)));

        let mut cmdline = qemu.to_string_lossy().into_owned();
        for a in &args {
            cmdline.push(' ');
            cmdline.push_str(&shell_quote(a));
        }
        let cmd_file = dir.join("qemu.cmd");
        std::fs::write(&cmd_file, format!("{cmdline}\n")).map_err(|e| LabError::io("write", &cmd_file, e))?;

        let stdout_path = dir.join("qemu.stdout");
        let stderr_path = dir.join("qemu.stderr");
        let stdout = File::create(&stdout_path).map_err(|e| LabError::io("create", &stdout_path, e))?;
        let stderr = File::create(&stderr_path).map_err(|e| LabError::io("create", &stderr_path, e))?;

        let _slot = Slot::acquire();
        let start = Instant::now();
        let mut child = Command::new(&qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| LabError::Spawn { command: cmdline.clone(), source: e })?;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => return Err(LabError::Spawn { command: cmdline, source: e }),
            }
            if start.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError::Timeout {
                    run: self.run_name.clone(),
                    secs: self.timeout.as_secs(),
                    dir,
                    tail: tail(&read_lossy(&console_path), 40),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let elapsed = start.elapsed();
        drop(_slot);

        let console = read_lossy(&console_path);
        let serial = read_lossy(&out_path);
        let qemu_stderr = read_lossy(&stderr_path);
        if !serial.contains(DONE_MARKER) {
            let mut what = "the guest did not finish /lab/run.sh".to_string();
            if !qemu_stderr.trim().is_empty() {
                what.push_str(&format!("; QEMU stderr: {}", qemu_stderr.trim()));
            }
            return Err(LabError::Incomplete {
                run: self.run_name.clone(),
                what,
                status: status.to_string(),
                dir,
                tail: tail(&console, 40),
            });
        }
        let sections = parse_sections(&serial);
        let kernel_groups = match sections.get("kernel-groups") {
            Some(s) => {
                parse_kernel_groups(&s.stdout).map_err(|what| LabError::Parse { run: self.run_name.clone(), what })?
            }
            None => {
                return Err(LabError::Parse { run: self.run_name.clone(), what: "no kernel-groups section".into() })
            }
        };
        Ok(GuestRun {
            run_name: self.run_name.clone(),
            kernel_version: kernel.version,
            run_dir: dir,
            console,
            serial,
            sections,
            kernel_groups,
            elapsed,
        })
    }
}

fn shell_quote(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || ",._-=/:+@".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One `section` of the guest's output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// What the command printed on stdout (each line ends with `\n`).
    pub stdout: String,
    /// The command's exit code.
    pub rc: i32,
}

/// What one boot produced.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// The run's name.
    pub run_name: String,
    /// The booted kernel's release.
    pub kernel_version: String,
    /// The run's work directory (console.log, out.log, qemu.cmd, initramfs.cpio).
    pub run_dir: PathBuf,
    /// Everything the guest printed on its console (ttyS0).
    pub console: String,
    /// Everything the guest wrote to the output port (ttyS1).
    pub serial: String,
    /// Sections by name (a later section with the same name replaces an earlier one).
    /// The guest always reports `lab-info`, `modules`, `kernel-groups`, `pci-devices`,
    /// `pci-ids` (and their `.stderr` companions) before the script's own sections.
    pub sections: BTreeMap<String, Section>,
    /// The kernel's IOMMU groups: group number → sorted full PCI addresses.
    pub kernel_groups: BTreeMap<u32, Vec<String>>,
    /// Wall-clock time from QEMU start to its exit.
    pub elapsed: Duration,
}

impl GuestRun {
    /// The section called `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.get(name)
    }

    /// The stdout of section `name`, or a parse error naming the run if it is missing.
    pub fn stdout(&self, name: &str) -> Result<&str> {
        self.sections
            .get(name)
            .map(|s| s.stdout.as_str())
            .ok_or_else(|| LabError::Parse { run: self.run_name.clone(), what: format!("no section {name}") })
    }

    /// The stdout of section `name`; panics naming the run directory when the section is missing (for
    /// tests, where a missing section is a failure).
    pub fn out(&self, name: &str) -> &str {
        self.section(name)
            .map(|s| s.stdout.as_str())
            .unwrap_or_else(|| panic!("no section {name} in {}", self.run_dir.display()))
    }

    /// What section `name`'s command printed on stderr (`NAME.stderr`), empty if nothing.
    pub fn err(&self, name: &str) -> &str {
        self.section(&format!("{name}.stderr")).map(|s| s.stdout.as_str()).unwrap_or("")
    }

    /// The exit code of section `name`'s command; panics naming the run directory when it is missing.
    pub fn rc(&self, name: &str) -> i32 {
        self.section(name).map(|s| s.rc).unwrap_or_else(|| panic!("no section {name} in {}", self.run_dir.display()))
    }

    /// Addresses listed by `ls /sys/bus/pci/devices` in the guest (sorted).
    pub fn pci_devices(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .sections
            .get("pci-devices")
            .map(|s| s.stdout.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Guest uptime (seconds) when the IOMMU groups were ready, from the `lab-info` section.
    pub fn groups_ready_uptime(&self) -> Option<f64> {
        self.sections.get("lab-info").and_then(|s| {
            s.stdout.lines().find_map(|l| l.strip_prefix("uptime-groups-ready ").and_then(|v| v.trim().parse().ok()))
        })
    }
}

/// Finds `@@BEGIN NAME@@` … `@@END NAME rc=N@@` blocks. Markers may appear anywhere in a
/// line (text before them, such as terminal escapes, is ignored); `\r` is dropped.
pub fn parse_sections(text: &str) -> BTreeMap<String, Section> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for raw in text.split('\n') {
        let line = raw.trim_end_matches('\r');
        match &mut current {
            None => {
                if let Some(name) = begin_marker(line) {
                    current = Some((name.to_string(), String::new()));
                }
            }
            Some((name, buf)) => {
                if let Some(rc) = end_marker(line, name) {
                    out.insert(name.clone(), Section { stdout: std::mem::take(buf), rc });
                    current = None;
                } else {
                    buf.push_str(line);
                    buf.push('\n');
                }
            }
        }
    }
    out
}

fn begin_marker(line: &str) -> Option<&str> {
    let start = line.find("@@BEGIN ")? + "@@BEGIN ".len();
    let rest = &line[start..];
    let end = rest.find("@@")?;
    let name = &rest[..end];
    (!name.is_empty() && !name.contains(' ')).then_some(name)
}

fn end_marker(line: &str, name: &str) -> Option<i32> {
    let marker = format!("@@END {name} rc=");
    let start = line.find(&marker)? + marker.len();
    let rest = &line[start..];
    let end = rest.find("@@")?;
    rest[..end].trim().parse().ok()
}

/// Parses `N BDF BDF ...` lines into group number → sorted addresses.
pub fn parse_kernel_groups(text: &str) -> std::result::Result<BTreeMap<u32, Vec<String>>, String> {
    let mut groups = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some(n) = parts.next() else { continue };
        let n: u32 = n.parse().map_err(|_| format!("bad kernel-groups line {line:?}"))?;
        let mut devs: Vec<String> = parts.map(str::to_string).collect();
        devs.sort();
        groups.insert(n, devs);
    }
    Ok(groups)
}

/// Limits how many QEMUs this process runs at once.
struct Slot;

static SLOTS_USED: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

impl Slot {
    fn acquire() -> Slot {
        let max = crate::max_jobs();
        let mut used = SLOTS_USED.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= max {
            used = SLOT_FREED.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut used = SLOTS_USED.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        SLOT_FREED.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_with_escapes_and_cr() {
        let text = "junk\r\n\x1b[0m@@BEGIN kernel-groups@@\r\n0 0000:00:01.0\r\n1 0000:01:00.0 0000:00:02.0\r\n@@END kernel-groups rc=0@@\r\n@@BEGIN x@@\n@@BEGIN y@@\n@@END x rc=3@@\n";
        let s = parse_sections(text);
        assert_eq!(s["x"].rc, 3);
        assert_eq!(s["x"].stdout, "@@BEGIN y@@\n");
        let g = parse_kernel_groups(&s["kernel-groups"].stdout).unwrap();
        assert_eq!(g[&1], vec!["0000:00:02.0", "0000:01:00.0"]);
        assert_eq!(g[&0], vec!["0000:00:01.0"]);
    }

    #[test]
    fn unterminated_section_is_dropped() {
        let s = parse_sections("@@BEGIN a@@\nxx\n");
        assert!(s.is_empty());
    }

    #[test]
    fn empty_groups() {
        assert!(parse_kernel_groups("").unwrap().is_empty());
        assert!(parse_kernel_groups("x y").is_err());
    }
}
