//! Shared by the test modules: the one way to run the binary, the inputs it reads (lab snapshots, lspci
//! dumps), one config-space builder, fake sysfs trees, journals, and readers of its output that say what
//! they expected and what they got.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

// --- running the binary -----------------------------------------------------------------------------------

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_iommuctl");

/// `iommuctl ARGS` as every test runs it: no colour (`NO_COLOR=1`) and no test hook from the environment.
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env("NO_COLOR", "1").env_remove("IOMMUCTL_TEST_HOOK");
    c
}

/// Runs `iommuctl ARGS` to the end.
pub fn iommuctl(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

/// [`iommuctl`] with environment variables set (`Some`) or removed (`None`).
pub fn iommuctl_env(args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
    let mut c = command(args);
    for (k, v) in env {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.output().unwrap()
}

/// [`iommuctl`] with `input` on its standard input, written by a thread while the output is read.
pub fn iommuctl_stdin(args: &[&str], input: Vec<u8>) -> Output {
    let mut child = command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    o
}

/// `iommuctl --from SNAPSHOT ARGS`.
pub fn from(snapshot: &Path, args: &[&str]) -> Output {
    iommuctl(&[&["--from", snapshot.to_str().unwrap()], args].concat())
}

/// `iommuctl --from snapshots/NAME ARGS`.
pub fn on_lab(name: &str, args: &[&str]) -> Output {
    from(&lab(name), args)
}

/// `iommuctl --from-lspci DUMP ARGS`, DUMP one of the lab's lspci dumps.
pub fn on_dump(name: &str, args: &[&str]) -> Output {
    iommuctl(&[&["--from-lspci", lspci_fixture(name).to_str().unwrap()], args].concat())
}

// --- inputs -----------------------------------------------------------------------------------------------

/// A lab snapshot: `snapshots/NAME`, captured inside a real kernel.
pub fn lab(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../snapshots").join(name)
}

/// Every lab snapshot, sorted.
pub fn lab_snapshots() -> Vec<PathBuf> {
    let dir = lab("");
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    assert!(v.len() >= 5, "expected the lab snapshots in {}", dir.display());
    v
}

/// An lspci dump (or the kernel's groups recorded with it) taken in the lab: iommu-host's fixtures.
pub fn lspci_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../host/tests/fixtures/lspci").join(name)
}

// --- reading the output -----------------------------------------------------------------------------------

/// Standard output as text (it must be UTF-8).
pub fn out(o: &Output) -> String {
    String::from_utf8(o.stdout.clone())
        .unwrap_or_else(|e| panic!("stdout is not UTF-8 ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

/// Standard error as text.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Standard output of a run that must have exited 0.
#[track_caller]
pub fn ok_out(o: &Output) -> String {
    assert_exit(o, 0);
    out(o)
}

/// Standard output as JSON.
#[track_caller]
pub fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", out(o), err(o)))
}

/// The run exited with `want`.
#[track_caller]
pub fn assert_exit(o: &Output, want: i32) {
    assert!(
        o.status.code() == Some(want),
        "expected exit {want}, got {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        err(o)
    );
}

/// `text` contains `want`.
#[track_caller]
pub fn assert_contains(text: &str, want: &str) {
    assert!(text.contains(want), "expected to find {want:?} in:\n{text}");
}

/// The addresses of `v["devices"]`, in order (a group, or a libvirt/qemu answer).
pub fn addresses(v: &Value) -> Vec<String> {
    v["devices"].as_array().unwrap().iter().map(|d| d["address"].as_str().unwrap().to_string()).collect()
}

// --- config space -----------------------------------------------------------------------------------------

/// A config space: vendor and device ID, then what the options add. The 64-byte header unless
/// [`Config::size`] says more.
pub fn config(vendor: u16, device: u16) -> Config {
    let mut c = vec![0u8; 64];
    c[0..2].copy_from_slice(&vendor.to_le_bytes());
    c[2..4].copy_from_slice(&device.to_le_bytes());
    Config(c)
}

pub struct Config(Vec<u8>);

impl Config {
    /// `n` bytes (256 for conventional PCI, 4096 for PCIe's extended space).
    pub fn size(mut self, n: usize) -> Self {
        self.0.resize(n, 0);
        self
    }

    /// Class code: base class, subclass, programming interface (`0x060400` a PCI-to-PCI bridge).
    pub fn class(mut self, class: u32) -> Self {
        self.0[9..12].copy_from_slice(&class.to_le_bytes()[0..3]);
        self
    }

    /// Header type (1 for a bridge; bit 7 for a multifunction device).
    pub fn header(mut self, h: u8) -> Self {
        self.0[0x0e] = h;
        self
    }

    /// A bridge's secondary and subordinate bus numbers.
    pub fn buses(mut self, secondary: u8, subordinate: u8) -> Self {
        self.0[0x19] = secondary;
        self.0[0x1a] = subordinate;
        self
    }

    /// A PCI Express capability at 0x40 with device/port type `t` (0 endpoint, 4 root port, 5 upstream
    /// and 6 downstream switch port).
    pub fn pcie(mut self, t: u8) -> Self {
        self.0[6] = 0x10; // capability list
        self.0[0x34] = 0x40;
        self.0[0x40] = 0x10;
        self.0[0x42] = t << 4 | 2;
        self
    }

    /// An ACS extended capability at 0x100 offering SV TB RR CR UF, with SV RR CR UF enabled (extends the
    /// space to 4096 bytes).
    pub fn acs(mut self) -> Self {
        if self.0.len() < 4096 {
            self.0.resize(4096, 0);
        }
        self.0[0x100..0x104].copy_from_slice(&0x0001_000du32.to_le_bytes());
        self.0[0x104] = 0x1f;
        self.0[0x106] = 0x1d;
        self
    }

    pub fn bytes(self) -> Vec<u8> {
        self.0
    }
}

// --- fake sysfs -------------------------------------------------------------------------------------------

/// Writes `bytes` to `root/rel`, making the directories.
pub fn write(root: &Path, rel: &str, bytes: impl AsRef<[u8]>) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

pub fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().unwrap();
    assert!(st.success(), "mkfifo {}", p.display());
}

/// Whether `p` exists (even as a dangling link).
pub fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// A PCI function below `root` as Linux lays it out: its directory `sys/devices/<canonical>`, listed in
/// `sys/bus/pci/devices`; the options add its config space, attributes, driver and IOMMU group. Links are
/// relative, as sysfs makes them, however deep the function sits.
pub fn function(root: &Path, canonical: &str) -> Function {
    let dir = root.join("sys/devices").join(canonical);
    fs::create_dir_all(&dir).unwrap();
    let name = Path::new(canonical).file_name().unwrap().to_str().unwrap().to_string();
    let bus = root.join("sys/bus/pci/devices");
    fs::create_dir_all(&bus).unwrap();
    symlink(format!("../../../devices/{canonical}"), bus.join(&name)).unwrap();
    // From the function's directory up to `sys/`.
    let up = "../".repeat(Path::new(canonical).components().count() + 1);
    Function { root: root.to_path_buf(), canonical: canonical.to_string(), dir, name, up }
}

pub struct Function {
    root: PathBuf,
    canonical: String,
    dir: PathBuf,
    name: String,
    up: String,
}

impl Function {
    pub fn config(self, bytes: &[u8]) -> Self {
        self.attr("config", bytes)
    }

    /// An attribute file of the function.
    pub fn attr(self, file: &str, bytes: impl AsRef<[u8]>) -> Self {
        fs::write(self.dir.join(file), bytes).unwrap();
        self
    }

    /// Bound to `driver`, which is registered ([`register_driver`]).
    pub fn driver(self, driver: &str) -> Self {
        register_driver(&self.root, driver);
        symlink(format!("{}bus/pci/drivers/{driver}", self.up), self.dir.join("driver")).unwrap();
        self
    }

    /// In IOMMU group `g`: `sys/kernel/iommu_groups/<g>/devices/` links to the function, its `iommu_group`
    /// to the group. The group's own files are the caller's ([`group_attr`]).
    pub fn group(self, g: u32) -> Self {
        let gd = self.root.join(format!("sys/kernel/iommu_groups/{g}/devices"));
        fs::create_dir_all(&gd).unwrap();
        symlink(format!("../../../../devices/{}", self.canonical), gd.join(&self.name)).unwrap();
        symlink(format!("{}kernel/iommu_groups/{g}", self.up), self.dir.join("iommu_group")).unwrap();
        self
    }
}

/// A file of IOMMU group `g` (`type`, `reserved_regions`).
pub fn group_attr(root: &Path, g: u32, file: &str, text: &str) {
    write(root, &format!("sys/kernel/iommu_groups/{g}/{file}"), text);
}

/// Registers a driver: `sys/bus/pci/drivers/NAME` with `bind`, `unbind` and `new_id` (kept if there).
pub fn register_driver(root: &Path, name: &str) {
    let d = root.join("sys/bus/pci/drivers").join(name);
    fs::create_dir_all(&d).unwrap();
    for f in ["bind", "unbind", "new_id"] {
        if !d.join(f).exists() {
            fs::write(d.join(f), "").unwrap();
        }
    }
}

/// A `--root` tree shaped like Linux 6.1's sysfs for bind, restore and persist: endpoints on the root bus,
/// driver and iommu_group links, and the driver core's attributes (`driver_override`,
/// `drivers/*/bind|unbind`, `drivers_probe`) as plain files. Writes land in those files; nothing moves a
/// device between drivers, so a bind here rolls back. With it, a state directory (`state`, not yet created).
pub struct Tree {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
}

impl Tree {
    /// An empty tree with vfio-pci registered.
    pub fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        fs::write(root.join("sys/bus/pci/drivers_probe"), "").unwrap();
        fs::create_dir_all(root.join("proc/self")).unwrap();
        fs::write(root.join("proc/self/mountinfo"), "").unwrap();
        register_driver(&root, "vfio-pci");
        Tree { _dir: dir, root, state }
    }

    /// An NVMe-class endpoint `0000:BB:00.0` (1b36:00BB+0x10) on the root bus, alone in group `group` (type
    /// DMA), on `driver`; returns its address.
    pub fn endpoint(&self, bus: u8, group: u32, driver: Option<&str>) -> String {
        let name = format!("0000:{bus:02x}:00.0");
        let cfg = config(0x1b36, 0x0010 + u16::from(bus)).size(256).class(0x010800).bytes();
        let mut f =
            function(&self.root, &format!("pci0000:00/{name}")).config(&cfg).attr("driver_override", "(null)\n");
        if let Some(d) = driver {
            f = f.driver(d);
        }
        f.group(group);
        group_attr(&self.root, group, "type", "DMA\n");
        name
    }

    /// A file below the root, as text ("" when missing).
    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root.join(rel)).unwrap_or_default()
    }

    /// `iommuctl --root ROOT --state-dir STATE ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// The command, to spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        let (root, state) = (self.root.to_str().unwrap(), self.state.to_str().unwrap());
        command(&[&["--root", root, "--state-dir", state], args].concat())
    }

    pub fn journal_path(&self) -> PathBuf {
        self.state.join("journal.json")
    }
}

/// A journal of devices bound to vfio-pci: (address, group, original driver), no original override.
pub fn journal(entries: &[(&str, u32, &str)]) -> String {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(address, group, driver)| {
            serde_json::json!({"address": address, "group": group, "original_driver": driver,
                "original_override": null, "bound_to": "vfio-pci"})
        })
        .collect();
    serde_json::json!({"version": 1, "entries": entries}).to_string()
}

// --- edited lab snapshots ---------------------------------------------------------------------------------

/// A lab snapshot as JSON, to edit.
pub fn lab_json(name: &str) -> Value {
    serde_json::from_slice(&fs::read(lab(name)).unwrap()).unwrap()
}

/// Writes `v` into a temporary file (kept while the handle lives).
pub fn temp_json(v: &Value) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(serde_json::to_string_pretty(v).unwrap().as_bytes()).unwrap();
    f
}

/// The device at `address` in a snapshot's JSON.
pub fn device_mut<'a>(snap: &'a mut Value, address: &str) -> &'a mut Value {
    snap["devices"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|d| d["address"] == address)
        .unwrap_or_else(|| panic!("no device {address} in the snapshot"))
}

/// A device's config space, decoded from the snapshot's hex.
pub fn config_bytes(dev: &Value) -> Vec<u8> {
    let h = dev["config"].as_str().unwrap();
    (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect()
}

/// Stores `bytes` as a device's config space.
pub fn set_config_bytes(dev: &mut Value, bytes: &[u8]) {
    dev["config"] = Value::String(bytes.iter().map(|b| format!("{b:02x}")).collect());
}

/// The offset of the ACS extended capability (ID 0x000d) in a config space.
pub fn acs_offset(cfg: &[u8]) -> usize {
    let mut off = 0x100;
    for _ in 0..64 {
        let h = u32::from_le_bytes(cfg[off..off + 4].try_into().unwrap());
        if h & 0xffff == 0x000d {
            return off;
        }
        off = (h >> 20) as usize;
        assert!(off >= 0x100, "no ACS capability");
    }
    panic!("no ACS capability");
}

/// The snapshot as if the host had rebooted with its (edited) config space: the kernel's groups, and
/// each device's group link, replaced by the groups iommuctl predicts (which match the lab kernels').
pub fn rebooted(snap: &Value) -> Value {
    let f = temp_json(snap);
    let p = json(&from(f.path(), &["--json", "predict"]));
    let mut s = snap.clone();
    let mut groups = Vec::new();
    for g in p["groups"].as_array().unwrap() {
        let members = addresses(g);
        for a in &members {
            device_mut(&mut s, a)["iommu_group"] = g["id"].clone();
        }
        groups.push(serde_json::json!({"id": g["id"], "type": "DMA", "reserved_regions": [], "devices": members}));
    }
    s["groups"] = Value::Array(groups);
    s
}
