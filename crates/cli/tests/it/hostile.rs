//! Hostile input, run as a user or an attacker would feed it: host files that are FIFOs, links to
//! `/dev/zero`, directories, sparse giants, garbage or text with control characters; snapshot and lspci
//! inputs of the same kinds and ones whose devices do not form a tree; outputs that are closed pipes,
//! full devices, planted symlinks and FIFOs; arguments of 10 KB; state directories and journals that lie.
//!
//! Every case runs the real binary under a per-case timeout and an address-space limit (`prlimit --as`),
//! then asserts: it ended in time, with an exit code of the documented set (never 101 or a signal), no
//! panic, no raw control or bidi character on a text stream, a message that names the input where there
//! is one, and nothing changed outside its temporary directory.
//!
//! One test runs every case, on a few threads of its own, and ends with its count written straight to the
//! process's stderr (which the harness does not capture): `hostile: N passed, M failed`.
//! `IOMMUCTL_HOSTILE_CASES=TEXT` runs only the cases whose name contains TEXT.

use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{config, function as sysfs_function, group_attr, iommuctl, journal, mkfifo, write, BIN};

/// No case may take longer than this.
const TIMEOUT: Duration = Duration::from_secs(20);
/// No case may map more than this (the 1 GiB input cap plus the program).
const ADDRESS_SPACE: u64 = 3 << 30;

/// What one case runs and what it must see.
struct Case {
    name: String,
    args: Vec<String>,
    stdin: Input,
    stdout: Sink,
    stderr: Sink,
    /// Allowed exit codes.
    codes: &'static [i32],
    /// Text that stderr must contain (the input named), if any.
    names: Option<String>,
    /// Whether stdout is JSON that must parse.
    json: bool,
    /// The most lines starting with `IOMMU group` that stdout may hold (forged lines), if checked.
    max_group_lines: Option<usize>,
    /// stderr must be shorter than this many bytes (long inputs are cut).
    max_stderr: usize,
}

#[derive(Clone)]
enum Input {
    Null,
    File(PathBuf),
    /// A stream of this many bytes of `x\n`, written by a thread.
    Stream(u64),
}

#[derive(Clone, Copy, PartialEq)]
enum Sink {
    Capture,
    /// A pipe whose reader is closed before the program writes.
    Closed,
    /// `/dev/full`: every write fails with ENOSPC.
    Full,
}

impl Case {
    fn new(name: impl Into<String>, args: &[&str], codes: &'static [i32]) -> Self {
        Case {
            name: name.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            stdin: Input::Null,
            stdout: Sink::Capture,
            stderr: Sink::Capture,
            codes,
            names: None,
            json: false,
            max_group_lines: None,
            max_stderr: 64 << 10,
        }
    }
}

struct Outcome {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    elapsed: Duration,
}

fn sink(s: Sink) -> Stdio {
    match s {
        Sink::Capture | Sink::Closed => Stdio::piped(),
        Sink::Full => Stdio::from(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap()),
    }
}

fn read_all(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut v);
        }
        v
    })
}

fn wait(child: &mut Child) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run(c: &Case) -> Result<Outcome, String> {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--as={ADDRESS_SPACE}")).arg("--").arg(BIN).args(&c.args);
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("NO_COLOR", "1");
    cmd.stdin(match &c.stdin {
        Input::Null => Stdio::null(),
        Input::File(p) => Stdio::from(std::fs::File::open(p).map_err(|e| format!("stdin {}: {e}", p.display()))?),
        Input::Stream(_) => Stdio::piped(),
    });
    cmd.stdout(sink(c.stdout)).stderr(sink(c.stderr));
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    if let Input::Stream(n) = c.stdin {
        let mut w = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let chunk = b"x\n".repeat(32 << 10);
            let mut left = n;
            while left > 0 {
                let k = left.min(chunk.len() as u64) as usize;
                if w.write_all(&chunk[..k]).is_err() {
                    break;
                }
                left -= k as u64;
            }
        });
    }
    let out = if c.stdout == Sink::Closed {
        drop(child.stdout.take());
        None
    } else {
        Some(read_all(child.stdout.take()))
    };
    let err = if c.stderr == Sink::Closed {
        drop(child.stderr.take());
        None
    } else {
        Some(read_all(child.stderr.take()))
    };
    let status = wait(&mut child);
    let elapsed = start.elapsed();
    let stdout = out.map(|h| h.join().unwrap_or_default()).unwrap_or_default();
    let stderr = err.map(|h| h.join().unwrap_or_default()).unwrap_or_default();
    let Some(status) = status else {
        return Err(format!("did not finish within {TIMEOUT:?} (killed)"));
    };
    Ok(Outcome { code: status.code(), stdout, stderr, elapsed })
}

fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

fn check(c: &Case, before: &[(PathBuf, Option<Vec<u8>>)]) -> Result<(), String> {
    let o = run(c)?;
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    let Some(code) = o.code else {
        return Err(format!("killed by a signal (memory limit?) after {:?}; stderr: {err}", o.elapsed));
    };
    if err.contains("panicked") || code == 101 {
        return Err(format!("panicked (exit {code}): {err}"));
    }
    if !c.codes.contains(&code) {
        return Err(format!("exit {code}, expected one of {:?}; stderr: {}", c.codes, trunc(&err)));
    }
    if let Some(n) = &c.names {
        if !err.contains(n.as_str()) {
            return Err(format!("stderr does not name {n:?}: {}", trunc(&err)));
        }
    }
    if let Some(ch) = err.chars().find(|&ch| unsafe_char(ch)) {
        return Err(format!("stderr holds raw {ch:?}: {}", trunc(&err)));
    }
    if c.json {
        if code == 0 || code == 1 {
            serde_json::from_slice::<serde_json::Value>(&o.stdout)
                .map_err(|e| format!("stdout is not JSON ({e}): {}", trunc(&out)))?;
        }
    } else if let Some(ch) = out.chars().find(|&ch| unsafe_char(ch)) {
        return Err(format!("stdout holds raw {ch:?}: {}", trunc(&out)));
    }
    if let Some(max) = c.max_group_lines {
        let n = out.lines().filter(|l| l.starts_with("IOMMU group")).count();
        if n > max {
            return Err(format!("{n} lines start with `IOMMU group` (at most {max}): {}", trunc(&out)));
        }
    }
    if o.stderr.len() > c.max_stderr {
        return Err(format!("stderr is {} bytes (at most {})", o.stderr.len(), c.max_stderr));
    }
    for (p, was) in before {
        let now = std::fs::read(p).ok();
        if &now != was {
            return Err(format!("{} changed", p.display()));
        }
    }
    Ok(())
}

fn trunc(s: &str) -> String {
    s.chars().take(400).collect()
}

// ---------------------------------------------------------------------------------------------------
// A host tree: a root port with an NVMe below it (group 0), a NIC with an interface that is up (group
// 1), modelled on what Linux 6.1 shows for a q35 guest (formats as in sysfs and procfs).

const NIC: &str = "sys/devices/pci0000:00/0000:00:02.0";
const NVME: &str = "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0";

/// A function with the attributes Linux 6.1 shows (no override, FLR and bus reset, no NUMA node, no VFs), on
/// `driver`, in IOMMU group `group` (type DMA, the MSI window reserved).
fn function(root: &Path, canonical: &str, cfg: &[u8], driver: &str, group: u32) {
    sysfs_function(root, canonical.strip_prefix("sys/devices/").unwrap())
        .config(cfg)
        .attr("driver_override", "(null)\n")
        .attr("reset_method", "flr bus\n")
        .attr("numa_node", "-1\n")
        .attr("sriov_totalvfs", "0\n")
        .attr("sriov_numvfs", "0\n")
        .driver(driver)
        .group(group);
    group_attr(root, group, "type", "DMA\n");
    group_attr(root, group, "reserved_regions", "0x00000000fee00000 0x00000000feefffff msi\n");
}

fn host(root: &Path) {
    let port = config(0x1b36, 0x000c).size(4096).class(0x060400).header(1).pcie(4).buses(1, 1).bytes();
    function(root, "sys/devices/pci0000:00/0000:00:01.0", &port, "pcieport", 0);
    function(root, NVME, &config(0x1b36, 0x0010).size(4096).class(0x010802).pcie(0).bytes(), "nvme", 0);
    function(root, NIC, &config(0x8086, 0x10d3).size(4096).class(0x020000).pcie(0).bytes(), "e1000e", 1);
    std::fs::create_dir_all(root.join("sys/bus/pci/drivers/vfio-pci")).unwrap();
    write(root, "sys/bus/pci/drivers_probe", "");
    // The NIC's interface, up; the NVMe's disk, with a partition mounted at /.
    std::fs::create_dir_all(root.join(NIC).join("net/eth0")).unwrap();
    write(root, "sys/class/net/eth0/operstate", "up\n");
    write(root, "sys/class/net/eth0/flags", "0x1003\n");
    let disk = root.join(NVME).join("nvme/nvme0/nvme0n1");
    std::fs::create_dir_all(disk.join("nvme0n1p1")).unwrap();
    std::fs::write(disk.join("dev"), "259:0\n").unwrap();
    std::fs::write(disk.join("nvme0n1p1/dev"), "259:1\n").unwrap();
    std::fs::write(disk.join("nvme0n1p1/partition"), "1\n").unwrap();
    std::fs::create_dir_all(root.join("sys/class/block")).unwrap();
    std::fs::create_dir_all(root.join("sys/dev/block")).unwrap();
    symlink(&disk, root.join("sys/class/block/nvme0n1")).unwrap();
    symlink(disk.join("nvme0n1p1"), root.join("sys/class/block/nvme0n1p1")).unwrap();
    symlink(&disk, root.join("sys/dev/block/259:0")).unwrap();
    symlink(disk.join("nvme0n1p1"), root.join("sys/dev/block/259:1")).unwrap();
    std::fs::create_dir_all(root.join("sys/class/iommu/dmar0")).unwrap();
    std::fs::create_dir_all(root.join("sys/firmware/acpi/tables")).unwrap();
    write(root, "sys/firmware/acpi/tables/DMAR", "DMAR");
    for m in ["vfio", "vfio_pci", "vfio_pci_core"] {
        std::fs::create_dir_all(root.join("sys/module").join(m)).unwrap();
    }
    write(root, "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", "N\n");
    write(root, "proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/nvme0n1p1 intel_iommu=on\n");
    write(root, "proc/sys/kernel/osrelease", "6.1.0-test\n");
    write(root, "proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\n");
    write(root, "proc/interrupts", "           CPU0\n 24:          0  IR-PCI-MSI 512000-edge      nvme0q0\n");
    write(root, "proc/self/mountinfo", "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw\n");
    write(root, "proc/swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
    write(root, "etc/fstab", "/dev/nvme0n1p1 / ext4 errors=remount-ro 0 1\n");
    write(
        root,
        "lib/modules/6.1.0-test/modules.dep",
        "kernel/drivers/vfio/vfio.ko:\nkernel/drivers/vfio/pci/vfio-pci.ko:\n",
    );
    write(root, "usr/share/misc/pci.ids", "8086  Intel Corporation\n\t10d3  82574L Gigabit Network Connection\n");
    std::fs::create_dir_all(root.join("dev")).unwrap();
}

/// The ways a file can lie.
#[derive(Clone, Copy, Debug)]
enum Hostile {
    Fifo,
    DevZero,
    Directory,
    Sparse,
    Huge,
    Garbage,
    Control,
    Dangling,
}

const HOSTILE: [Hostile; 8] = [
    Hostile::Fifo,
    Hostile::DevZero,
    Hostile::Directory,
    Hostile::Sparse,
    Hostile::Huge,
    Hostile::Garbage,
    Hostile::Control,
    Hostile::Dangling,
];

/// Text with a newline that forges a group line, an escape sequence and a bidi override.
const FORGERY: &str = "e1000e\nIOMMU group 7\n  0000:00:1f.0  \u{1b}[31mevil\u{1b}[0m \u{202e}txt.exe\n";

fn plant(p: &Path, how: Hostile) {
    let _ = std::fs::remove_file(p);
    let _ = std::fs::remove_dir_all(p);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    match how {
        Hostile::Fifo => mkfifo(p),
        Hostile::DevZero => symlink("/dev/zero", p).unwrap(),
        Hostile::Directory => std::fs::create_dir(p).unwrap(),
        Hostile::Sparse => std::fs::File::create(p).unwrap().set_len(2 << 30).unwrap(),
        Hostile::Huge => std::fs::write(p, "x".repeat(20 << 20)).unwrap(),
        Hostile::Garbage => {
            let mut v: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
            v[10] = 0;
            v[11] = 0xff;
            std::fs::write(p, v).unwrap();
        }
        Hostile::Control => std::fs::write(p, FORGERY).unwrap(),
        Hostile::Dangling => symlink("/nonexistent/target", p).unwrap(),
    }
}

/// Files of the tree that the read commands open, each with whether a refusal of it must be named on
/// stderr by commands that read full detail (`show`, `check`, `predict`, `snapshot`): host attributes
/// whose loss changes what iommuctl says are noted; tables behind `check`'s own "unknown" answers are not.
const HOST_FILES: &[(&str, bool)] = &[
    ("NIC/config", true),
    ("NIC/driver_override", true),
    ("NIC/reset_method", true),
    ("NIC/numa_node", true),
    ("NIC/sriov_totalvfs", true),
    ("NIC/sriov_numvfs", true),
    ("sys/kernel/iommu_groups/1/type", true),
    ("sys/kernel/iommu_groups/1/reserved_regions", true),
    ("proc/cmdline", true),
    ("proc/sys/kernel/osrelease", true),
    ("proc/cpuinfo", false),
    ("proc/interrupts", false),
    ("proc/self/mountinfo", false),
    ("proc/swaps", false),
    ("etc/fstab", false),
    ("lib/modules/6.1.0-test/modules.dep", false),
    ("sys/class/net/eth0/operstate", false),
    ("sys/class/net/eth0/flags", false),
    ("sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", false),
    ("usr/share/misc/pci.ids", false),
];

fn host_file(rel: &str) -> String {
    rel.replace("NIC/", &format!("{NIC}/"))
}

/// Whether a hostile kind makes the file unreadable (as opposed to readable but wrong).
fn refused(h: Hostile) -> bool {
    matches!(h, Hostile::Fifo | Hostile::DevZero | Hostile::Directory | Hostile::Sparse | Hostile::Huge)
}

/// Regular files of the tree with their bytes, to prove nothing changed.
fn contents(root: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && e.metadata().map(|m| m.len() < 1 << 20).unwrap_or(false) {
                out.push((e.path(), std::fs::read(e.path()).ok()));
            }
        }
    }
    out
}

type Built = (String, Box<dyn Fn(&Path) -> (Case, Vec<PathBuf>) + Send + Sync>);
/// A job that builds a tree and the cases run on it.
type Job = (String, Box<dyn Fn(&Path) -> Vec<Case> + Send + Sync>);
/// (label, arguments, allowed exit codes, reads full detail, JSON output).
type Command_ = (&'static str, Vec<&'static str>, &'static [i32], bool, bool);

/// Host-file cases: every file of [`HOST_FILES`] made each [`Hostile`] kind, under the read commands.
fn host_cases() -> Vec<Job> {
    let mut out: Vec<Job> = Vec::new();
    for &(rel, noted) in HOST_FILES {
        for h in HOSTILE {
            let name = format!("host {rel} {h:?}");
            out.push((
                name.clone(),
                Box::new(move |dir: &Path| {
                    let root = dir.join("root");
                    host(&root);
                    let file = host_file(rel);
                    plant(&root.join(&file), h);
                    let r = root.to_str().unwrap().to_string();
                    let basename = Path::new(&file).file_name().unwrap().to_string_lossy().into_owned();
                    let state = dir.join("state").to_str().unwrap().to_string();
                    let cmds: Vec<Command_> = vec![
                        // (label, args, codes, full detail, json)
                        ("list", vec!["list"], &[0], false, false),
                        ("list-json", vec!["list", "--json"], &[0], false, true),
                        ("show", vec!["show", "0000:00:02.0"], &[0], true, false),
                        ("check", vec!["check"], &[0, 1], true, false),
                        ("predict", vec!["predict", "--diff"], &[0, 1], true, false),
                        ("explain", vec!["explain", "0000:00:02.0"], &[0], true, false),
                        ("bind-dry-run", vec!["bind", "--dry-run", "0000:00:02.0"], &[3], true, false),
                        ("status", vec!["status"], &[0], true, false),
                        ("export", vec!["export", "--format", "prometheus"], &[0], false, false),
                        ("snapshot", vec!["snapshot", "-o", "-"], &[0], true, true),
                        // The boot disk's group: refused whether fstab, mountinfo or both say so, or
                        // neither can be read.
                        ("persist-dry-run", vec!["persist", "--dry-run", "0000:01:00.0"], &[3], true, false),
                    ];
                    cmds.into_iter()
                        .map(|(label, args, codes, full, json)| {
                            let mut a = vec!["--root", r.as_str(), "--state-dir", state.as_str()];
                            a.extend(args);
                            let mut c = Case::new(format!("host {rel} {h:?} {label}"), &a, codes);
                            c.json = json;
                            c.max_group_lines = (label == "list").then_some(2);
                            if noted && full && refused(h) {
                                c.names = Some(basename.clone());
                            }
                            c
                        })
                        .collect()
                }),
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Inputs named on the command line: --from SNAPSHOT and --from-lspci DUMP.

fn good_snapshot(root_dir: &Path) -> String {
    let root = root_dir.join("snaproot");
    host(&root);
    let o = iommuctl(&["--root", root.to_str().unwrap(), "snapshot", "-o", "-"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// Snapshot texts that are bad input, each with a label.
fn bad_snapshots(good: &str) -> Vec<(&'static str, Vec<u8>)> {
    let v: serde_json::Value = serde_json::from_str(good).unwrap();
    let mut dup = v.clone();
    let first = dup["devices"][0].clone();
    dup["devices"].as_array_mut().unwrap().push(first);
    let mut cycle = v.clone();
    for d in cycle["devices"].as_array_mut().unwrap() {
        if d["address"] == "0000:00:01.0" {
            d["parent"] = "0000:01:00.0".into();
        }
    }
    let mut missing = v.clone();
    missing["devices"][0]["parent"] = "0000:7f:00.0".into();
    // The root port marked as a VF of the NIC while the NVMe still hangs below it: VFs never forward to
    // a bus.
    let mut vf_parent = v.clone();
    for d in vf_parent["devices"].as_array_mut().unwrap() {
        if d["address"] == "0000:00:01.0" {
            d["physfn"] = "0000:00:02.0".into();
        }
    }
    let mut version = v.clone();
    version["version"] = 99.into();
    let mut hexbad = v.clone();
    hexbad["devices"][0]["config"] = "zz".into();
    let mut bignum = v.clone();
    bignum["groups"][0]["id"] = serde_json::json!(1e300);
    vec![
        ("duplicate-device", serde_json::to_vec(&dup).unwrap()),
        ("parent-cycle", serde_json::to_vec(&cycle).unwrap()),
        ("missing-parent", serde_json::to_vec(&missing).unwrap()),
        ("parent-is-vf", serde_json::to_vec(&vf_parent).unwrap()),
        ("other-version", serde_json::to_vec(&version).unwrap()),
        ("bad-hex", serde_json::to_vec(&hexbad).unwrap()),
        ("huge-number", serde_json::to_vec(&bignum).unwrap()),
        ("truncated", good.as_bytes()[..good.len() / 2].to_vec()),
        ("deep-nesting", "[".repeat(200_000).into_bytes()),
        ("not-json", b"\x00\xff\xfe garbage \x1b[31m".to_vec()),
        ("empty", Vec::new()),
    ]
}

/// A snapshot whose system text carries forged lines and escapes: valid input, sanitized output.
fn forged_snapshot(good: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_str(good).unwrap();
    for d in v["devices"].as_array_mut().unwrap() {
        d["driver"] = FORGERY.into();
        d["net"] = serde_json::json!([FORGERY]);
    }
    v["groups"][0]["type"] = FORGERY.into();
    v["kernel"]["release"] = FORGERY.into();
    serde_json::to_vec(&v).unwrap()
}

const READ_COMMANDS: &[&[&str]] = &[
    &["list"],
    &["show", "0000:00:02.0"],
    &["explain", "0000:00:02.0"],
    &["predict"],
    &["check"],
    &["export", "--format", "nfd"],
    &["graph", "--format", "dot"],
    &["qemu", "0000:00:02.0"],
    &["libvirt", "0000:00:02.0"],
    &["cdi", "0000:00:02.0"],
    &["kubevirt", "0000:00:02.0"],
    &["status"],
];

fn input_cases() -> Vec<Built> {
    let mut out: Vec<Built> = Vec::new();
    for flag in ["--from", "--from-lspci"] {
        for h in HOSTILE {
            for cmd in READ_COMMANDS {
                let name = format!("input {flag} {h:?} {}", cmd[0]);
                out.push((
                    name.clone(),
                    Box::new(move |dir: &Path| {
                        let f = dir.join("input");
                        plant(&f, h);
                        let mut a = vec![flag, f.to_str().unwrap()];
                        a.extend_from_slice(cmd);
                        // Everything here is bad input; a refused kind must name the file.
                        let mut c = Case::new(name.clone(), &a, &[2]);
                        // A dump is refused up front by the commands that need kernel state, before it is
                        // read; every other command reads it and must name it.
                        let refused_up_front = flag == "--from-lspci"
                            && ["check", "export", "qemu", "libvirt", "cdi", "kubevirt", "status"].contains(&cmd[0]);
                        if !refused_up_front {
                            c.names = Some(f.display().to_string());
                        }
                        (c, vec![])
                    }),
                ));
            }
        }
    }
    // diff reads both operands itself: each hostile kind as A, a good snapshot as B.
    for h in HOSTILE {
        let name = format!("input diff {h:?}");
        out.push((
            name.clone(),
            Box::new(move |dir: &Path| {
                let f = dir.join("input");
                plant(&f, h);
                let good = dir.join("good.json");
                std::fs::write(&good, good_snapshot(dir)).unwrap();
                let mut c = Case::new(name.clone(), &["diff", f.to_str().unwrap(), good.to_str().unwrap()], &[2]);
                c.names = Some(f.display().to_string());
                (c, vec![])
            }),
        ));
    }
    for (label, _) in bad_snapshots("{\"devices\":[{}],\"groups\":[{}]}").iter().map(|(l, b)| (*l, b.len())) {
        for cmd in READ_COMMANDS {
            let name = format!("snapshot {label} {}", cmd[0]);
            out.push((
                name.clone(),
                Box::new(move |dir: &Path| {
                    let good = good_snapshot(dir);
                    let bytes = bad_snapshots(&good).into_iter().find(|(l, _)| *l == label).unwrap().1;
                    let f = dir.join("bad.json");
                    std::fs::write(&f, bytes).unwrap();
                    let mut a = vec!["--from", f.to_str().unwrap()];
                    a.extend_from_slice(cmd);
                    let mut c = Case::new(name.clone(), &a, &[2]);
                    c.names = Some("snapshot".into());
                    (c, vec![])
                }),
            ));
        }
    }
    for cmd in READ_COMMANDS {
        for json in [false, true] {
            let name = format!("snapshot forged-text {}{}", cmd[0], if json { " --json" } else { "" });
            out.push((
                name.clone(),
                Box::new(move |dir: &Path| {
                    let good = good_snapshot(dir);
                    let f = dir.join("forged.json");
                    std::fs::write(&f, forged_snapshot(&good)).unwrap();
                    let mut a = vec!["--from", f.to_str().unwrap()];
                    a.extend_from_slice(cmd);
                    if json {
                        a.push("--json");
                    }
                    // cdi and kubevirt refuse (3) the group the forged driver blocks, naming it.
                    let codes: &[i32] = if ["cdi", "kubevirt"].contains(&cmd[0]) { &[0, 1, 2, 3] } else { &[0, 1, 2] };
                    let mut c = Case::new(name.clone(), &a, codes);
                    c.json = json;
                    c.max_group_lines = (cmd[0] == "list").then_some(2);
                    (c, vec![])
                }),
            ));
        }
    }
    // Standard input: /dev/zero (a device: refused at once), a 1.2 GiB stream (past the 1 GiB cap), and
    // garbage.
    for flag in ["--from", "--from-lspci"] {
        for (label, input) in [
            ("dev-zero", Input::File("/dev/zero".into())),
            ("stream-past-cap", Input::Stream(1_200 << 20)),
            ("empty", Input::Null),
        ] {
            let name = format!("stdin {flag} {label}");
            out.push((
                name.clone(),
                Box::new(move |_dir: &Path| {
                    let mut c = Case::new(name.clone(), &[flag, "-", "predict"], &[2]);
                    c.stdin = input.clone();
                    c.names = Some("standard input".into()).filter(|_| label != "empty");
                    (c, vec![])
                }),
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Outputs: closed pipes, full devices, planted symlinks, FIFOs and directories at `-o`.

fn output_cases() -> Vec<Built> {
    let mut out: Vec<Built> = Vec::new();
    let read_cmds: &[&[&str]] = &[
        &["list"],
        &["list", "--json"],
        &["show", "0000:00:02.0"],
        &["predict"],
        &["check"],
        &["explain", "0000:00:02.0"],
        &["export", "--format", "prometheus"],
        &["graph"],
        &["snapshot", "-o", "-"],
        &["status"],
        &["man"],
        &["completions", "bash"],
        &["sim"],
    ];
    for cmd in read_cmds {
        for (label, stdout, stderr, codes) in [
            ("stdout-closed", Sink::Closed, Sink::Capture, &[0, 1][..]),
            ("stdout-full", Sink::Full, Sink::Capture, &[4][..]),
            ("stdout-closed-stderr-closed", Sink::Closed, Sink::Closed, &[0, 1][..]),
            ("stdout-full-stderr-full", Sink::Full, Sink::Full, &[4][..]),
        ] {
            let name = format!("output {label} {}", cmd.join(" "));
            let codes: &'static [i32] = match codes {
                [0, 1] => &[0, 1],
                _ => &[4],
            };
            out.push((
                name.clone(),
                Box::new(move |dir: &Path| {
                    let root = dir.join("root");
                    host(&root);
                    let mut a = vec!["--root".to_string(), root.to_str().unwrap().to_string()];
                    a.extend(cmd.iter().map(|s| s.to_string()));
                    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
                    // `check` is 0 or 1 by verdict; a full stdout is 4 whatever the verdict.
                    let mut c = Case::new(name.clone(), &a, codes);
                    c.stdout = stdout;
                    c.stderr = stderr;
                    if stdout == Sink::Full && stderr == Sink::Capture {
                        c.names = Some("No space left on device".into());
                    }
                    (c, vec![])
                }),
            ));
        }
    }
    // `-o` targets: a planted symlink to a victim, a FIFO nobody reads, a directory, a missing directory,
    // a planted link at every old fixed temporary name.
    let o_cmds: &[&[&str]] = &[
        &["export", "--format", "prometheus", "-o"],
        &["export", "--format", "nfd", "-o"],
        &["graph", "-o"],
        &["graph", "--format", "dot", "-o"],
        &["snapshot", "-o"],
    ];
    for cmd in o_cmds {
        for label in ["symlink-to-victim", "fifo-no-reader", "directory", "missing-dir", "planted-temp-links"] {
            let name = format!("output -o {label} {}", cmd.join(" "));
            out.push((
                name.clone(),
                Box::new(move |dir: &Path| {
                    let root = dir.join("root");
                    host(&root);
                    let victim = dir.join("victim");
                    std::fs::write(&victim, "precious").unwrap();
                    let target = dir.join("out.file");
                    let (codes, names): (&'static [i32], Option<String>) = match label {
                        "symlink-to-victim" => {
                            symlink(&victim, &target).unwrap();
                            (&[0], None)
                        }
                        "fifo-no-reader" => {
                            mkfifo(&target);
                            (&[4], Some("out.file".into()))
                        }
                        "directory" => {
                            std::fs::create_dir(&target).unwrap();
                            (&[4], Some("out.file".into()))
                        }
                        "missing-dir" => {
                            let t = dir.join("no/such/dir/out.file");
                            let mut a = vec!["--root", root.to_str().unwrap()];
                            a.extend_from_slice(cmd);
                            let t = t.to_str().unwrap().to_string();
                            let mut a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
                            a.push(t);
                            let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
                            let mut c = Case::new(name.clone(), &a, &[4]);
                            c.names = Some("no/such/dir/out.file".into());
                            return (c, vec![victim]);
                        }
                        _ => {
                            for t in [".out.file.tmp", "out.iommuctl-tmp", "out.file.tmp", ".out.file.iommuctl-tmp"] {
                                symlink(&victim, dir.join(t)).unwrap();
                            }
                            (&[0], None)
                        }
                    };
                    let mut a = vec!["--root", root.to_str().unwrap()];
                    a.extend_from_slice(cmd);
                    a.push(target.to_str().unwrap());
                    let mut c = Case::new(name.clone(), &a, codes);
                    c.names = names;
                    (c, vec![victim])
                }),
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Arguments: 10 KB addresses and targets, control characters, strict guest slots, bad what-ifs.

fn argument_cases() -> Vec<Built> {
    let mut out: Vec<Built> = Vec::new();
    let long = "0".repeat(10_000);
    let escape = "00:\u{1b}[31m02.0\n\u{202e}".to_string();
    let bads: Vec<(&str, String)> = vec![("long", long.clone()), ("escape", escape.clone()), ("empty", String::new())];
    let cmds: &[&[&str]] = &[&["show"], &["explain"], &["bind", "--dry-run"], &["qemu"], &["libvirt"], &["restore"]];
    for cmd in cmds {
        for (label, arg) in &bads {
            let name = format!("argument {label} {}", cmd.join(" "));
            let arg = arg.clone();
            out.push((
                name.clone(),
                Box::new(move |dir: &Path| {
                    let root = dir.join("root");
                    host(&root);
                    let state = dir.join("state");
                    let mut a = vec!["--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
                    a.extend_from_slice(cmd);
                    a.push(&arg);
                    // An unknown device is a negative answer (1) for show/explain; bad input (2) elsewhere.
                    let mut c = Case::new(name.clone(), &a, &[1, 2]);
                    c.max_stderr = 1024;
                    (c, vec![])
                }),
            ));
        }
    }
    for slot in ["+1", "-1", " 1", "0x", "0x20", "0", "001", "1f1", "\u{661}", &long] {
        for cmd in ["qemu", "libvirt"] {
            let name = format!("argument guest-slot {:?} {cmd}", iommu_pci::text::clip(slot, 8));
            let slot = slot.to_string();
            out.push((
                name.clone(),
                Box::new(move |dir: &Path| {
                    let root = dir.join("root");
                    host(&root);
                    let a = ["--root", root.to_str().unwrap(), cmd, "0000:00:02.0", "--guest-slot", slot.as_str()];
                    let mut c = Case::new(name.clone(), &a, &[2]);
                    c.max_stderr = 1024;
                    (c, vec![])
                }),
            ));
        }
    }
    for w in ["config_acs=", "config_acs=zz@0000:00:01.0", "disable_acs_redir=;;;", "acs-override=", "nonsense", &long]
    {
        let name = format!("argument what-if {:?}", iommu_pci::text::clip(w, 16));
        let w = w.to_string();
        out.push((
            name.clone(),
            Box::new(move |dir: &Path| {
                let root = dir.join("root");
                host(&root);
                let a = ["--root", root.to_str().unwrap(), "predict", "--what-if", w.as_str()];
                let mut c = Case::new(name.clone(), &a, &[0, 1, 2]);
                c.max_stderr = 2048;
                (c, vec![])
            }),
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// State directories and journals that lie, under the state-changing commands on a --root tree.

fn state_cases() -> Vec<Built> {
    let mut out: Vec<Built> = Vec::new();
    let traps = [
        "state-dir-symlink",
        "state-dir-world-writable",
        "state-dir-group-writable",
        "lock-symlink-to-victim",
        "lock-fifo",
        "journal-fifo",
        "journal-dev-zero",
        "journal-garbage",
        "journal-huge",
        "journal-bad-driver-name",
        "journal-driver-with-newline",
        "journal-path-escape",
        "journal-unknown-device",
    ];
    let cmds: &[&[&str]] = &[
        &["bind", "--force", "0000:00:02.0"],
        &["restore", "--all"],
        &["status"],
        &["persist", "--dry-run", "0000:00:02.0"],
        &["persist", "0000:00:02.0"],
    ];
    for trap in traps {
        for cmd in cmds {
            let name = format!("state {trap} {}", cmd.join(" "));
            out.push((
                name.clone(),
                Box::new(move |dir: &Path| {
                    let root = dir.join("root");
                    host(&root);
                    let victim = dir.join("victim");
                    std::fs::write(&victim, "precious").unwrap();
                    let state = dir.join("state");
                    std::fs::create_dir(&state).unwrap();
                    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
                    let entry = |driver: &str, addr: &str| journal(&[(addr, 1, driver)]);
                    // (allowed codes, text stderr must hold)
                    let (codes, names): (&'static [i32], Option<&str>) = match trap {
                        "state-dir-symlink" => {
                            std::fs::remove_dir(&state).unwrap();
                            let elsewhere = dir.join("elsewhere");
                            std::fs::create_dir(&elsewhere).unwrap();
                            symlink(&elsewhere, &state).unwrap();
                            (&[3], Some("symbolic link"))
                        }
                        "state-dir-world-writable" => {
                            std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
                            (&[3], Some("writable"))
                        }
                        "state-dir-group-writable" => {
                            std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o770)).unwrap();
                            (&[3], Some("writable"))
                        }
                        "lock-symlink-to-victim" => {
                            symlink(&victim, state.join("lock")).unwrap();
                            (&[3], Some("lock"))
                        }
                        "lock-fifo" => {
                            mkfifo(&state.join("lock"));
                            (&[3, 4], Some("lock"))
                        }
                        "journal-fifo" => {
                            mkfifo(&state.join("journal.json"));
                            (&[2, 3, 4], Some("journal.json"))
                        }
                        "journal-dev-zero" => {
                            symlink("/dev/zero", state.join("journal.json")).unwrap();
                            (&[2, 3, 4], Some("journal.json"))
                        }
                        "journal-garbage" => {
                            std::fs::write(state.join("journal.json"), b"\x00\xff{{{").unwrap();
                            (&[2, 3, 4], Some("journal.json"))
                        }
                        "journal-huge" => {
                            std::fs::File::create(state.join("journal.json")).unwrap().set_len(1 << 30).unwrap();
                            (&[2, 3, 4], Some("journal.json"))
                        }
                        "journal-bad-driver-name" => {
                            std::fs::write(
                                state.join("journal.json"),
                                entry("vfio-pci\", RUN+=\"/bin/sh", "0000:00:02.0"),
                            )
                            .unwrap();
                            (&[2, 3, 4], Some("journal.json"))
                        }
                        "journal-driver-with-newline" => {
                            std::fs::write(
                                state.join("journal.json"),
                                entry("e1000e\nsoftdep x pre: y", "0000:00:02.0"),
                            )
                            .unwrap();
                            (&[2, 3, 4], Some("journal.json"))
                        }
                        "journal-path-escape" => {
                            std::fs::write(state.join("journal.json"), entry("../../../../victim", "0000:00:02.0"))
                                .unwrap();
                            (&[2, 3, 4], Some("journal.json"))
                        }
                        _ => {
                            // A device that was hot-unplugged since: nothing to restore, nothing to keep.
                            std::fs::write(state.join("journal.json"), entry("e1000e", "0000:00:09.0")).unwrap();
                            (&[0, 1, 3, 4], None)
                        }
                    };
                    let mut a = vec!["--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
                    a.extend_from_slice(cmd);
                    let label = cmd[0];
                    // A dry run of persist reads no journal and takes no lock: it must not fail on them.
                    let (codes, names): (&'static [i32], Option<&str>) = if cmd.contains(&"--dry-run") {
                        (&[0, 2, 3, 4], None)
                    } else if label == "status" && (trap.starts_with("lock") || trap.starts_with("state-dir")) {
                        // status takes no lock; it may refuse an unsafe state dir or read it.
                        (&[0, 3], None)
                    } else if label == "restore" && trap == "journal-unknown-device" {
                        (&[0], None)
                    } else {
                        (codes, names)
                    };
                    let mut c = Case::new(name.clone(), &a, codes);
                    c.names = names.map(str::to_string);
                    let outside = vec![victim, dir.join("elsewhere/journal.json"), dir.join("elsewhere/lock")];
                    (c, outside)
                }),
            ));
        }
    }
    out
}

#[test]
fn every_hostile_case_exits_as_documented_names_its_input_and_changes_nothing_outside() {
    let filter = std::env::var("IOMMUCTL_HOSTILE_CASES").ok();
    let mut jobs: Vec<Job> = host_cases();
    for (name, f) in input_cases().into_iter().chain(output_cases()).chain(argument_cases()).chain(state_cases()) {
        jobs.push((name, Box::new(move |d: &Path| vec![f(d).0])));
    }
    // The outside-files of a built case are returned with it: rebuild the pairs.
    let jobs: Vec<_> =
        jobs.into_iter().filter(|(n, _)| filter.as_ref().is_none_or(|f| n.contains(f.as_str()))).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 4);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((_, build)) = jobs.get(i) else { break };
                let dir = tempfile::tempdir().unwrap();
                let cases = build(dir.path());
                let mut outside: Vec<PathBuf> = Vec::new();
                for p in ["victim", "elsewhere/journal.json", "elsewhere/lock"] {
                    outside.push(dir.path().join(p));
                }
                let before: Vec<(PathBuf, Option<Vec<u8>>)> =
                    outside.iter().map(|p| (p.clone(), std::fs::read(p).ok())).collect();
                let tree_before = contents(&dir.path().join("root"));
                for c in cases {
                    let mut r = check(&c, &before);
                    // Read commands and dry runs must leave the tree as it was.
                    let changes_state = ["bind", "restore", "persist"].iter().any(|w| c.args.iter().any(|a| a == w))
                        && !c.args.iter().any(|a| a == "--dry-run");
                    if r.is_ok() && !changes_state {
                        let after = contents(&dir.path().join("root"));
                        if after != tree_before {
                            r = Err("the host tree changed under a read-only command".into());
                        }
                    }
                    results.lock().unwrap().push((c.name.clone(), r));
                }
            });
        }
    });
    let results = results.into_inner().unwrap();
    let failed: Vec<&(String, Result<(), String>)> = results.iter().filter(|(_, r)| r.is_err()).collect();
    let mut report = String::new();
    for (name, r) in &failed {
        let _ = writeln!(report, "FAILED {name}: {}", r.as_ref().err().map(|s| s.as_str()).unwrap_or(""));
    }
    // Straight to the process's stderr: the harness hides the output of passing tests, and the count is the
    // point.
    {
        use std::io::Write as _;
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "{report}");
        let _ = writeln!(e, "hostile input cases run in {:.1} s", start.elapsed().as_secs_f64());
        let _ = writeln!(e, "hostile: {} passed, {} failed", results.len() - failed.len(), failed.len());
    }
    assert!(!results.is_empty(), "no case ran (IOMMUCTL_HOSTILE_CASES={filter:?})");
    assert!(failed.is_empty(), "{} of {} hostile cases failed:\n{report}", failed.len(), results.len());
}
