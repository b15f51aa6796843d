//! Initramfs builder: an in-memory file tree written as a cpio "newc" archive (uncompressed,
//! which the kernel accepts as is).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{LabError, Result};
use crate::kernel::Kernel;

/// One node of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// A file tree that becomes an initramfs.
///
/// Paths are absolute guest paths ("/bin/sh"); missing parent directories are created.
/// Adding a path twice replaces the earlier node.
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    nodes: BTreeMap<String, Node>,
}

/// How a kernel module is loaded in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// Module name as the kernel spells it in `modinfo -F depends` (e.g. `vfio-pci-core`).
    pub name: String,
    /// The file on the host.
    pub host_path: PathBuf,
    /// The file name used in the guest under `/lib/modules/`.
    pub guest_name: String,
}

fn normalize(path: &str) -> String {
    path.trim_matches('/').split('/').filter(|s| !s.is_empty() && *s != ".").collect::<Vec<_>>().join("/")
}

impl Initramfs {
    /// An empty tree.
    pub fn new() -> Initramfs {
        Initramfs::default()
    }

    fn insert(&mut self, path: &str, node: Node) {
        let path = normalize(path);
        let mut parent = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.nodes.entry(parent.clone()).or_insert(Node::Dir);
        }
        if !path.is_empty() {
            self.nodes.insert(path, node);
        }
    }

    /// Whether `path` exists in the tree.
    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(&normalize(path))
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.insert(path, Node::Dir);
        self
    }

    /// Adds a regular file with permission bits `mode` (e.g. `0o755`).
    pub fn file(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> &mut Self {
        self.insert(path, Node::File { data: data.into(), mode: mode & 0o7777 });
        self
    }

    /// Adds a symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.insert(path, Node::Symlink(target.to_string()));
        self
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        self.insert(path, Node::CharDev { major, minor });
        self
    }

    /// Copies a host file (following symlinks) to `guest_path`.
    pub fn host_file(&mut self, guest_path: &str, host_path: &Path, mode: u32) -> Result<&mut Self> {
        let data = std::fs::read(host_path).map_err(|e| LabError::io("read", host_path, e))?;
        Ok(self.file(guest_path, data, mode))
    }

    /// Copies a host executable to the same path in the guest, together with every shared
    /// library `ldd` lists for it (also at their host paths).
    pub fn host_binary(&mut self, host_path: &Path) -> Result<&mut Self> {
        let guest = host_path
            .to_str()
            .ok_or_else(|| LabError::Unavailable(format!("non-UTF-8 path {}", host_path.display())))?
            .to_string();
        self.host_file(&guest, host_path, 0o755)?;
        for lib in shared_libraries(host_path)? {
            let g = lib.to_string_lossy().into_owned();
            if !self.contains(&g) {
                self.host_file(&g, &lib, 0o755)?;
            }
        }
        Ok(self)
    }

    /// Adds busybox at `/bin/busybox` (with the libraries it needs, if it is not static) and
    /// a symlink for every applet it lists with `--list-full`, unless that path already exists.
    pub fn busybox(&mut self, host_busybox: &Path) -> Result<&mut Self> {
        let data = std::fs::read(host_busybox).map_err(|e| LabError::io("read", host_busybox, e))?;
        self.file("/bin/busybox", data, 0o755);
        for lib in shared_libraries(host_busybox)? {
            let g = lib.to_string_lossy().into_owned();
            if !self.contains(&g) {
                self.host_file(&g, &lib, 0o755)?;
            }
        }
        let out = run_capture(Command::new(host_busybox).arg("--list-full"))?;
        for applet in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let path = format!("/{applet}");
            if applet == "bin/busybox" || self.contains(&path) {
                continue;
            }
            self.symlink(&path, "/bin/busybox");
        }
        Ok(self)
    }

    /// Copies kernel modules (from [`module_load_order`]) to `/lib/modules/<guest_name>`.
    /// `.ko.zst` files are decompressed on the host with `zstd -dc` (busybox cannot read
    /// zstd); other files are copied as they are.
    pub fn kernel_modules(&mut self, modules: &[ModuleFile]) -> Result<&mut Self> {
        for m in modules {
            let guest = format!("/lib/modules/{}", m.guest_name);
            if is_zstd(&m.host_path) {
                let data = run_capture_bytes(Command::new("zstd").arg("-dc").arg(&m.host_path))?;
                self.file(&guest, data, 0o644);
            } else {
                self.host_file(&guest, &m.host_path, 0o644)?;
            }
        }
        Ok(self)
    }

    /// The archive as bytes (cpio newc, trailer included).
    pub fn to_cpio(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, node)) in (1u32..).zip(&self.nodes) {
            let (mode, data, rmaj, rmin): (u32, &[u8], u32, u32) = match node {
                Node::Dir => (0o040755, &[], 0, 0),
                Node::File { data, mode } => (0o100000 | mode, data, 0, 0),
                Node::Symlink(t) => (0o120777, t.as_bytes(), 0, 0),
                Node::CharDev { major, minor } => (0o020600, &[], *major, *minor),
            };
            let nlink = if matches!(node, Node::Dir) { 2 } else { 1 };
            write_entry(&mut out, ino, mode, nlink, rmaj, rmin, path, data);
        }
        write_entry(&mut out, 0, 0, 1, 0, 0, "TRAILER!!!", &[]);
        out
    }

    /// Writes the archive to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_cpio()).map_err(|e| LabError::io("write", path, e))
    }
}

#[allow(clippy::too_many_arguments)]
fn write_entry(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev_major: u32,
    rdev_minor: u32,
    name: &str,
    data: &[u8],
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // dev major
        0, // dev minor
        rdev_major,
        rdev_minor,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

fn command_line(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn is_zstd(path: &Path) -> bool {
    path.to_string_lossy().ends_with(".ko.zst")
}

/// Runs a command and returns its stdout; fails with the command line and stderr otherwise.
pub(crate) fn run_capture(cmd: &mut Command) -> Result<String> {
    run_capture_bytes(cmd).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Like [`run_capture`], returning raw bytes.
pub(crate) fn run_capture_bytes(cmd: &mut Command) -> Result<Vec<u8>> {
    let line = command_line(cmd);
    let out = cmd.output().map_err(|e| LabError::Spawn { command: line.clone(), source: e })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// The shared libraries (absolute host paths) that `ldd` lists for `binary`; empty for a
/// static executable.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let mut cmd = Command::new("ldd");
    cmd.arg(binary);
    let line = command_line(&cmd);
    let out = cmd.output().map_err(|e| LabError::Spawn { command: line.clone(), source: e })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stdout.contains("not a dynamic executable") || stderr.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(LabError::Command {
            command: line,
            status: out.status.to_string(),
            stderr: stderr.trim().to_string(),
        });
    }
    let mut libs = Vec::new();
    for l in stdout.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let candidate = match l.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => l.trim(),
        };
        if let Some(path) = candidate.split_whitespace().next() {
            if path.starts_with('/') {
                libs.push(PathBuf::from(path));
            }
        }
    }
    Ok(libs)
}

/// Module name → file, for every `*.ko`, `*.ko.xz`, `*.ko.zst`, `*.ko.gz` under `dir`.
/// Names are keyed with `-` turned into `_` (the kernel treats them alike).
pub fn module_index(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut index = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| LabError::io("read dir", &d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LabError::io("read dir", &d, e))?;
            let path = entry.path();
            let ft = entry.file_type().map_err(|e| LabError::io("stat", &path, e))?;
            if ft.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(stem) = module_stem(name) {
                index.entry(module_key(stem)).or_insert(path);
            }
        }
    }
    Ok(index)
}

fn module_stem(file_name: &str) -> Option<&str> {
    for ext in [".ko", ".ko.xz", ".ko.zst", ".ko.gz"] {
        if let Some(stem) = file_name.strip_suffix(ext) {
            return Some(stem);
        }
    }
    None
}

fn module_key(name: &str) -> String {
    name.replace('-', "_")
}

/// Names (keyed like [`module_index`]) of the modules built into the kernel (`modules.builtin`).
pub fn builtin_modules(kernel: &Kernel) -> BTreeSet<String> {
    let path = kernel.modules_dir.join("modules.builtin");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| l.rsplit('/').next()).filter_map(module_stem).map(module_key).collect()
}

/// What the guest's /init does with the modules a boot wants (see [`module_plan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModulePlan {
    /// Module files to `insmod`, dependencies first.
    pub files: Vec<ModuleFile>,
    /// Wanted modules that `modules.builtin` lists: nothing to load.
    pub builtin: Vec<String>,
    /// Wanted modules of a kernel without loadable modules (no module file in its tree) that
    /// `modules.builtin` does not list, with whether each is required: /init takes `/sys/module/<name>`
    /// as proof that it is built in and fails the boot's `modules` report for a required one without it.
    pub expected: Vec<(String, bool)>,
}

impl ModulePlan {
    /// The guest's `/lab/modules.list`: one `insmod FILE`, `builtin NAME` or `expect NAME required|optional`
    /// line per entry, files first in load order.
    pub fn guest_list(&self) -> String {
        let mut list = String::new();
        for m in &self.files {
            list.push_str(&format!("insmod {}\n", m.guest_name));
        }
        for name in &self.builtin {
            list.push_str(&format!("builtin {name}\n"));
        }
        for (name, required) in &self.expected {
            list.push_str(&format!("expect {name} {}\n", if *required { "required" } else { "optional" }));
        }
        list
    }
}

/// Resolves `wanted` modules of `kernel` and their dependencies (read with
/// `modinfo -F depends FILE`) into load order, dependencies first; see [`module_plan`].
pub fn module_load_order(kernel: &Kernel, wanted: &[(&str, bool)]) -> Result<Vec<ModuleFile>> {
    Ok(module_plan(kernel, wanted)?.files)
}

/// Plans the `wanted` modules of `kernel`: files to load (with their dependencies, read with
/// `modinfo -F depends FILE`, first), and the modules built into the kernel.
///
/// A module that `modules.builtin` lists is built in. A wanted module that is neither a file nor built in
/// is an error when `required`, else skipped; except on a kernel without any module file (built with
/// everything in, like the lab's iommufd kernel), where it is left to the guest to find under
/// `/sys/module` ([`ModulePlan::expected`]). `.ko.xz` and `.ko.gz` files are kept compressed (busybox
/// `insmod` decompresses them itself); `.ko.zst` files get a `.ko` guest name and are decompressed by
/// [`Initramfs::kernel_modules`].
pub fn module_plan(kernel: &Kernel, wanted: &[(&str, bool)]) -> Result<ModulePlan> {
    let index = module_index(&kernel.modules_dir)?;
    let builtin = builtin_modules(kernel);
    let mut plan = ModulePlan::default();
    let mut done = BTreeSet::new();
    for (name, required) in wanted {
        let key = module_key(name);
        if !index.contains_key(&key) {
            if builtin.contains(&key) {
                if !plan.builtin.contains(&key) {
                    plan.builtin.push(key);
                }
            } else if index.is_empty() {
                if !plan.expected.iter().any(|(n, _)| *n == key) {
                    plan.expected.push((key, *required));
                }
            } else if *required {
                return Err(LabError::NoModule { name: name.to_string(), dir: kernel.modules_dir.clone() });
            }
            continue;
        }
        visit(kernel, &index, &builtin, name, &mut done, &mut plan.files, 0)?;
    }
    Ok(plan)
}

fn visit(
    kernel: &Kernel,
    index: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    name: &str,
    done: &mut BTreeSet<String>,
    order: &mut Vec<ModuleFile>,
    depth: usize,
) -> Result<()> {
    let key = module_key(name);
    if done.contains(&key) || depth > 64 {
        return Ok(());
    }
    done.insert(key.clone());
    let Some(path) = index.get(&key) else {
        if builtin.contains(&key) {
            return Ok(());
        }
        return Err(LabError::NoModule { name: name.to_string(), dir: kernel.modules_dir.clone() });
    };
    let deps = run_capture(Command::new(modinfo()).args(["-F", "depends"]).arg(path))?;
    for dep in deps.trim().split(',').map(str::trim).filter(|d| !d.is_empty()) {
        visit(kernel, index, builtin, dep, done, order, depth + 1)?;
    }
    let mut file_name =
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| format!("{name}.ko"));
    if is_zstd(path) {
        file_name.truncate(file_name.len() - ".zst".len());
    }
    order.push(ModuleFile { name: name.to_string(), host_path: path.clone(), guest_name: file_name });
    Ok(())
}

/// Path of `modinfo` (it lives in /sbin, which is not always on a user's PATH).
pub(crate) fn modinfo() -> PathBuf {
    crate::find_program("modinfo").unwrap_or_else(|| PathBuf::from("modinfo"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(entry: &[u8], i: usize) -> u32 {
        let s = std::str::from_utf8(&entry[6 + 8 * i..6 + 8 * (i + 1)]).unwrap();
        u32::from_str_radix(s, 16).unwrap()
    }

    #[test]
    fn cpio_layout() {
        let mut fs = Initramfs::new();
        fs.file("/a/b", b"hello".to_vec(), 0o644);
        fs.symlink("/c", "/a/b");
        let bytes = fs.to_cpio();
        // First entry: directory "a".
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(field(&bytes, 1), 0o040755);
        assert_eq!(field(&bytes, 11), 2); // "a\0"
        assert_eq!(&bytes[110..111], b"a");
        assert!(bytes.len() % 4 == 0);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("a/b\0"));
        assert!(text.contains("hello"));
        assert!(text.ends_with("TRAILER!!!\0\0\0\0") || text.contains("TRAILER!!!"));
    }

    #[test]
    fn parents_are_created_before_children() {
        let mut fs = Initramfs::new();
        fs.file("/usr/share/misc/pci.ids", b"x".to_vec(), 0o644);
        let names: Vec<_> = fs.nodes.keys().cloned().collect();
        assert_eq!(names, vec!["usr", "usr/share", "usr/share/misc", "usr/share/misc/pci.ids"]);
    }

    fn kernel_dir(name: &str, builtin: &str) -> (PathBuf, Kernel) {
        let dir = std::env::temp_dir().join(format!("iommu-lab-modules-{name}-{}", std::process::id()));
        let modules_dir = dir.join("lib/modules/6.12.117-iommufd");
        std::fs::create_dir_all(&modules_dir).unwrap();
        std::fs::write(modules_dir.join("modules.builtin"), builtin).unwrap();
        let k = Kernel { version: "6.12.117-iommufd".into(), vmlinuz: dir.join("boot/vmlinuz"), modules_dir };
        (dir, k)
    }

    #[test]
    fn kernel_without_modules_loads_nothing_and_leaves_unknowns_to_the_guest() {
        let (dir, k) = kernel_dir(
            "builtin",
            "kernel/drivers/vfio/vfio.ko\nkernel/drivers/vfio/pci/vfio-pci-core.ko\nkernel/drivers/vfio/pci/vfio-pci.ko\n",
        );
        let plan = module_plan(
            &k,
            &[("vfio", true), ("vfio-pci", true), ("vfio-pci", true), ("btrfs", true), ("nvme", false)],
        )
        .unwrap();
        assert!(plan.files.is_empty());
        assert_eq!(plan.builtin, vec!["vfio", "vfio_pci"]);
        assert_eq!(plan.expected, vec![("btrfs".to_string(), true), ("nvme".to_string(), false)]);
        assert_eq!(plan.guest_list(), "builtin vfio\nbuiltin vfio_pci\nexpect btrfs required\nexpect nvme optional\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kernel_with_modules_still_refuses_a_missing_required_one() {
        let (dir, k) = kernel_dir("loadable", "");
        std::fs::write(k.modules_dir.join("irqbypass.ko"), b"not really a module").unwrap();
        assert!(matches!(module_plan(&k, &[("btrfs", true)]), Err(LabError::NoModule { .. })));
        assert_eq!(module_plan(&k, &[("btrfs", false)]).unwrap(), ModulePlan::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn module_names() {
        assert_eq!(module_stem("vfio-pci.ko.xz"), Some("vfio-pci"));
        assert_eq!(module_stem("irqbypass.ko"), Some("irqbypass"));
        assert_eq!(module_stem("modules.dep"), None);
        assert_eq!(module_key("vfio-pci-core"), "vfio_pci_core");
    }
}
