//! Is this host ready for device assignment? The facts (read below a root directory, stored in the
//! snapshot) and the verdict: one [`CheckItem`] per question, each failing one with a concrete fix.

use std::fs;
use std::path::Path;

use iommu_fsio::Limit;

use iommu_pci::{ConfigInfo, PciAddress};
use serde::{Deserialize, Serialize};

use crate::snapshot::Snapshot;

/// Host facts the readiness check needs beyond devices and groups. Every field is `None` when the source
/// could not be read (so "unknown" never reads as "no").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReadinessFacts {
    /// CPU vendor from `/proc/cpuinfo` (`GenuineIntel`, `AuthenticAMD`, ...).
    pub cpu_vendor: Option<String>,
    /// Interrupt remapping is in use: `/proc/interrupts` has `IR-` interrupt chips.
    pub interrupt_remapping: Option<bool>,
    /// Modules loaded or built in (`/sys/module/<name>` exists) among [`WATCHED_MODULES`].
    pub modules_loaded: Option<Vec<String>>,
    /// Modules the running kernel ships (`modules.dep` or `modules.builtin` of its release) among
    /// [`WATCHED_MODULES`].
    pub modules_available: Option<Vec<String>>,
    /// `vfio_iommu_type1.allow_unsafe_interrupts`, when the module is loaded.
    pub allow_unsafe_interrupts: Option<bool>,
    /// `/dev/vfio/vfio` exists.
    pub dev_vfio: Option<bool>,
    /// `/dev/iommu` exists (iommufd).
    pub dev_iommu: Option<bool>,
    /// The kernel has VFIO device cdevs (`CONFIG_VFIO_DEVICE_CDEV`): `/dev/vfio/devices` or a
    /// `vfio-dev/` directory under a PCI function says yes; a function on a VFIO driver without one says
    /// no; else the kernel's `/boot/config-<release>`. `None` when nothing tells.
    #[serde(default)]
    pub vfio_cdev: Option<bool>,
    /// Boot loaders whose configuration files exist: `grub`, `systemd-boot`, `kernelstub`.
    pub boot_loaders: Vec<String>,
}

/// The modules the check looks for, with underscores as in `/sys/module`.
pub const WATCHED_MODULES: &[&str] = &["vfio", "vfio_pci", "vfio_pci_core", "vfio_iommu_type1", "iommufd"];

fn read_trim(path: &Path) -> Option<String> {
    iommu_fsio::attr(path)
}

/// A kernel table (`/proc/cpuinfo`, `/proc/interrupts`, `modules.dep`): bounded, non-blocking, lossy UTF-8.
fn read_table(path: &Path) -> Option<String> {
    iommu_fsio::read_text(path, Limit::TABLE).ok()
}

/// `kernel/drivers/vfio/pci/vfio-pci.ko.zst:` → `vfio_pci`.
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.split(".ko").next()?;
    (stem.len() < file.len()).then(|| stem.replace('-', "_"))
}

fn shipped_modules(root: &Path, release: &str) -> Option<Vec<String>> {
    let dir = root.join("lib/modules").join(release);
    let mut found = Vec::new();
    let mut any = false;
    for file in ["modules.dep", "modules.builtin"] {
        let Some(text) = read_table(&dir.join(file)) else { continue };
        any = true;
        for name in watched_modules_in(&text) {
            if !found.contains(&name) {
                found.push(name);
            }
        }
    }
    any.then(|| {
        found.sort();
        found
    })
}

/// The CPU vendor from `/proc/cpuinfo` text (the first `vendor_id` line).
pub fn cpu_vendor_of(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find(|l| l.starts_with("vendor_id")).and_then(|l| l.split(':').nth(1)).map(|v| v.trim().to_string())
}

/// Whether `/proc/interrupts` text shows interrupt remapping (`IR-` interrupt chips).
pub fn interrupt_remapping_in(interrupts: &str) -> bool {
    interrupts.contains(" IR-") || interrupts.contains("\tIR-")
}

/// The watched modules that a `modules.dep` or `modules.builtin` text lists.
pub fn watched_modules_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let path = line.split(':').next().unwrap_or("");
        if let Some(name) = module_name(path) {
            if WATCHED_MODULES.contains(&name.as_str()) && !found.contains(&name) {
                found.push(name);
            }
        }
    }
    found
}

/// Whether the kernel has VFIO device cdevs, from what the host shows (see [`ReadinessFacts::vfio_cdev`]).
fn vfio_cdev(root: &Path, release: Option<&str>) -> Option<bool> {
    if root.join("dev/vfio/devices").is_dir() {
        return Some(true);
    }
    let mut on_vfio_without_cdev = false;
    if let Ok(rd) = fs::read_dir(root.join("sys/bus/pci/devices")) {
        for e in rd.flatten() {
            let dir = e.path();
            if dir.join("vfio-dev").is_dir() {
                return Some(true);
            }
            let driver = fs::read_link(dir.join("driver")).ok();
            let name = driver.as_ref().and_then(|t| t.file_name()).and_then(|n| n.to_str());
            if name.is_some_and(iommu_pci::drivers::is_vfio_driver) {
                on_vfio_without_cdev = true;
            }
        }
    }
    if on_vfio_without_cdev {
        return Some(false);
    }
    let config = read_table(&root.join("boot").join(format!("config-{}", release?)))?;
    if config.lines().any(|l| l.trim() == "CONFIG_VFIO_DEVICE_CDEV=y") {
        Some(true)
    } else if config.lines().any(|l| l.trim() == "# CONFIG_VFIO_DEVICE_CDEV is not set") {
        Some(false)
    } else {
        None
    }
}

/// Reads the readiness facts below `root`.
pub fn read_facts(root: &Path, release: Option<&str>) -> ReadinessFacts {
    let cpu_vendor = read_table(&root.join("proc/cpuinfo")).and_then(|t| cpu_vendor_of(&t));
    let interrupt_remapping = read_table(&root.join("proc/interrupts")).map(|t| interrupt_remapping_in(&t));
    let sys_module = root.join("sys/module");
    let modules_loaded = fs::read_dir(&sys_module).ok().map(|_| {
        WATCHED_MODULES.iter().filter(|m| sys_module.join(m).exists()).map(|m| m.to_string()).collect::<Vec<_>>()
    });
    let modules_available = release.and_then(|r| shipped_modules(root, r));
    let allow_unsafe_interrupts = read_trim(&sys_module.join("vfio_iommu_type1/parameters/allow_unsafe_interrupts"))
        .map(|v| v == "Y" || v == "1");
    let dev = root.join("dev");
    let dev_known = dev.is_dir();
    let dev_vfio = dev_known.then(|| dev.join("vfio/vfio").exists());
    let dev_iommu = dev_known.then(|| dev.join("iommu").exists());
    let vfio_cdev = vfio_cdev(root, release);
    let mut boot_loaders = Vec::new();
    if root.join("etc/default/grub").exists() {
        boot_loaders.push("grub".to_string());
    }
    if root.join("etc/kernel/cmdline").exists()
        || ["boot/loader/entries", "boot/efi/loader/entries", "efi/loader/entries"]
            .iter()
            .any(|p| root.join(p).is_dir())
    {
        boot_loaders.push("systemd-boot".to_string());
    }
    if root.join("etc/kernelstub/configuration").exists() {
        boot_loaders.push("kernelstub".to_string());
    }
    ReadinessFacts {
        cpu_vendor,
        interrupt_remapping,
        modules_loaded,
        modules_available,
        allow_unsafe_interrupts,
        dev_vfio,
        dev_iommu,
        vfio_cdev,
        boot_loaders,
    }
}

/// How one check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Pass,
    /// A fact worth knowing; nothing to do.
    Info,
    /// Assignment works, but some devices or setups will hit this.
    Warn,
    /// Device assignment will not work until this is fixed.
    Fail,
}

impl Status {
    /// `ok`, `info`, `warn`, `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "ok",
            Status::Info => "info",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One answered question.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckItem {
    /// Stable identifier (`iommu`, `interrupt-remapping`, ...).
    pub id: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub summary: String,
    /// What to do about it, when anything.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fix: Vec<String>,
    /// The devices it concerns.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<PciAddress>,
}

impl CheckItem {
    fn new(id: &'static str, status: Status, summary: impl Into<String>) -> Self {
        Self { id, status, summary: summary.into(), fix: Vec::new(), devices: Vec::new() }
    }
    fn fix(mut self, lines: impl IntoIterator<Item = String>) -> Self {
        self.fix.extend(lines);
        self
    }
    fn devices(mut self, d: Vec<PciAddress>) -> Self {
        self.devices = d;
        self
    }
}

/// The whole check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// No item failed.
    pub ready: bool,
    /// The items, in a fixed order.
    pub items: Vec<CheckItem>,
}

/// How to add kernel parameters with each boot loader found (all three when none was recognised).
pub fn kernel_param_fix(params: &str, loaders: &[String]) -> Vec<String> {
    let all = loaders.is_empty();
    let mut out = Vec::new();
    if all || loaders.iter().any(|l| l == "grub") {
        out.push(format!(
            "GRUB: add `{params}` to GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, then run `update-grub` \
             (Fedora/RHEL: `grub2-mkconfig -o /boot/grub2/grub.cfg`) and reboot"
        ));
    }
    if all || loaders.iter().any(|l| l == "systemd-boot") {
        out.push(format!(
            "systemd-boot: append `{params}` to /etc/kernel/cmdline (or the `options` line of your entry in \
             /boot/loader/entries/), run `kernel-install` for the kernel or `proxmox-boot-tool refresh` on \
             Proxmox, and reboot"
        ));
    }
    if all || loaders.iter().any(|l| l == "kernelstub") {
        out.push(format!("kernelstub (Pop!_OS): `sudo kernelstub -a \"{params}\"`, then reboot"));
    }
    out
}

fn has_param(cmdline: &str, name: &str) -> Option<String> {
    cmdline.split_whitespace().find(|w| w.split('=').next() == Some(name)).map(str::to_string)
}

/// What every item reads: the snapshot, its readiness facts, and what follows from them.
struct Ctx<'a> {
    s: &'a Snapshot,
    facts: ReadinessFacts,
    cmdline: String,
    /// The platform's IOMMU is AMD's (else Intel's).
    amd: bool,
    /// The kernel made IOMMU groups (the `iommu` item passes).
    iommu_on: bool,
}

impl<'a> Ctx<'a> {
    fn new(s: &'a Snapshot) -> Self {
        let facts = s.readiness.clone().unwrap_or_default();
        let amd = amd_platform(s, &facts);
        Self { s, facts, cmdline: s.kernel.cmdline.clone().unwrap_or_default(), amd, iommu_on: !s.groups.is_empty() }
    }

    /// The summary of an item whose facts are missing.
    fn unknown(&self, what: &str) -> String {
        if self.s.readiness.is_none() {
            "unknown: not recorded in this snapshot (written before `iommuctl check` existed)".to_string()
        } else {
            format!("unknown: {what}")
        }
    }

    fn on_param(&self) -> &'static str {
        if self.amd {
            "amd_iommu=on"
        } else {
            "intel_iommu=on"
        }
    }

    fn is_loaded(&self, m: &str) -> bool {
        self.facts.modules_loaded.as_ref().is_some_and(|l| l.iter().any(|x| x == m))
    }

    fn is_available(&self, m: &str) -> bool {
        self.is_loaded(m) || self.facts.modules_available.as_ref().is_some_and(|l| l.iter().any(|x| x == m))
    }

    fn unsafe_ok(&self) -> bool {
        self.facts.allow_unsafe_interrupts == Some(true)
    }
}

/// The firmware's table says which IOMMU there is; without one, the CPU vendor says which to ask for.
fn amd_platform(s: &Snapshot, facts: &ReadinessFacts) -> bool {
    if s.acpi_tables.iter().any(|t| t == "DMAR") || s.iommu_units.iter().any(|u| u.starts_with("dmar")) {
        false
    } else if s.acpi_tables.iter().any(|t| t == "IVRS") || s.iommu_units.iter().any(|u| u.starts_with("ivhd")) {
        true
    } else {
        matches!(facts.cpu_vendor.as_deref(), Some("AuthenticAMD") | Some("HygonGenuine"))
    }
}

/// Runs every check on a snapshot. Facts the snapshot lacks (an old snapshot, an unreadable file) make
/// an item `info` saying so, never `pass` or `fail`.
pub fn check(s: &Snapshot) -> Report {
    let c = Ctx::new(s);
    let items: Vec<CheckItem> = [
        Some(iommu_item(&c)),
        Some(interrupt_remapping_item(&c)),
        Some(vfio_modules_item(&c)),
        Some(iommufd_item(&c)),
        default_domain_item(&c),
        unsafe_interrupts_item(&c),
        rmrr_item(&c),
        Some(boot_vga_item(s)),
        Some(reset_item(s)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let ready = items.iter().all(|i| i.status != Status::Fail);
    Report { ready, items }
}

/// Item 1: the IOMMU: firmware table, kernel driver, groups.
fn iommu_item(c: &Ctx) -> CheckItem {
    let s = c.s;
    let has_table = s.acpi_tables.iter().any(|t| t == "DMAR" || t == "IVRS");
    if c.iommu_on {
        return CheckItem::new(
            "iommu",
            Status::Pass,
            format!(
                "IOMMU on: {} unit(s) ({}), {} groups{}",
                s.iommu_units.len(),
                s.iommu_units.join(", "),
                s.groups.len(),
                if has_table { format!(", ACPI {}", s.acpi_tables.join("+")) } else { String::new() }
            ),
        );
    }
    let table = if c.amd { "IVRS" } else { "DMAR" };
    let loaders = &c.facts.boot_loaders;
    let off_param = has_param(&c.cmdline, "intel_iommu")
        .filter(|p| p.contains("off"))
        .or_else(|| has_param(&c.cmdline, "amd_iommu").filter(|p| p.contains("off")))
        .or_else(|| has_param(&c.cmdline, "iommu").filter(|p| p == "iommu=off"));
    let mut fix = Vec::new();
    let summary = if let Some(p) = &off_param {
        fix.push(format!("remove `{p}` from the kernel command line"));
        fix.extend(kernel_param_fix(c.on_param(), loaders));
        format!("IOMMU off: the kernel command line has `{p}`")
    } else if !has_table && s.iommu_units.is_empty() {
        fix.push(format!(
            "turn on {} in the firmware setup (often under Advanced / CPU or Chipset configuration; AMD boards \
             may call it IOMMU or AMD-Vi, some need SVM on too); without it there is no ACPI {table} table",
            if c.amd { "AMD-Vi (IOMMU)" } else { "Intel VT-d" }
        ));
        if !c.amd && has_param(&c.cmdline, "intel_iommu").is_none() {
            fix.extend(kernel_param_fix(c.on_param(), loaders));
        }
        format!("no IOMMU: no ACPI {table} table, no IOMMU units in /sys/class/iommu, no groups")
    } else {
        fix.extend(kernel_param_fix(c.on_param(), loaders));
        format!(
            "IOMMU present ({}) but not in use: no groups in /sys/kernel/iommu_groups",
            if has_table { format!("ACPI {}", s.acpi_tables.join("+")) } else { s.iommu_units.join(", ") }
        )
    };
    CheckItem::new("iommu", Status::Fail, summary).fix(fix)
}

/// Item 2: interrupt remapping (VFIO's type1 backend refuses to attach without it, unless told otherwise).
fn interrupt_remapping_item(c: &Ctx) -> CheckItem {
    match c.facts.interrupt_remapping {
        None => CheckItem::new("interrupt-remapping", Status::Info, c.unknown("/proc/interrupts not readable")),
        Some(true) => {
            CheckItem::new("interrupt-remapping", Status::Pass, "interrupt remapping in use (IR- interrupt chips)")
        }
        Some(false) if !c.iommu_on => {
            CheckItem::new("interrupt-remapping", Status::Info, "not in use (it needs the IOMMU on first)")
        }
        Some(false) if c.unsafe_ok() => CheckItem::new(
            "interrupt-remapping",
            Status::Warn,
            "not in use; VFIO runs only because vfio_iommu_type1.allow_unsafe_interrupts=1, so an assigned device can \
             forge MSI writes and inject interrupts into the host",
        )
        .fix([format!(
            "enable interrupt remapping in the firmware (x2APIC / \"Interrupt Remapping\") and remove `intremap=off` \
             or `{}` if set",
            if c.amd { "amd_iommu_intr=legacy" } else { "intremap=off" }
        )]),
        Some(false) => CheckItem::new(
            "interrupt-remapping",
            Status::Fail,
            "not in use: vfio_iommu_type1 will refuse to attach groups (\"No interrupt remapping support\")",
        )
        .fix([
            "enable interrupt remapping in the firmware (x2APIC / \"Interrupt Remapping\"), and remove `intremap=off` \
             from the kernel command line if present"
                .to_string(),
            "last resort, unsafe (a device can inject interrupts into the host): \
             `options vfio_iommu_type1 allow_unsafe_interrupts=1` in /etc/modprobe.d/vfio.conf"
                .to_string(),
        ]),
    }
}

/// Item 3: the VFIO modules.
fn vfio_modules_item(c: &Ctx) -> CheckItem {
    let available = c.facts.modules_available.as_ref();
    let vfio_needed = ["vfio", "vfio_iommu_type1", "vfio_pci"];
    if c.facts.modules_loaded.is_none() && available.is_none() {
        CheckItem::new("vfio-modules", Status::Info, c.unknown("neither /sys/module nor /lib/modules was readable"))
    } else if vfio_needed.iter().all(|m| c.is_loaded(m)) {
        CheckItem::new("vfio-modules", Status::Pass, "vfio, vfio_iommu_type1 and vfio_pci loaded")
    } else if vfio_needed.iter().all(|m| c.is_available(m)) {
        let missing: Vec<&str> = vfio_needed.iter().copied().filter(|m| !c.is_loaded(m)).collect();
        CheckItem::new("vfio-modules", Status::Warn, format!("available but not loaded: {}", missing.join(", "))).fix([
            "now: `modprobe vfio-pci` (iommuctl bind also needs it loaded)".to_string(),
            "at boot: put `vfio-pci` in /etc/modules-load.d/vfio.conf (and in the initramfs to claim a device \
             before its host driver: `iommuctl persist TARGET`)"
                .to_string(),
        ])
    } else {
        let missing: Vec<&str> = vfio_needed.iter().copied().filter(|m| !c.is_available(m)).collect();
        let release = c.s.kernel.release.as_deref().unwrap_or("(unknown release)");
        let summary = if available.is_none() {
            format!(
                "{} not loaded, and /lib/modules/{release} is missing, so they cannot be loaded",
                missing.join(", ")
            )
        } else {
            format!("the running kernel ({release}) ships no {}", missing.join(", "))
        };
        CheckItem::new("vfio-modules", Status::Fail, summary).fix([
            "install the modules of the running kernel, or a kernel built with CONFIG_VFIO, CONFIG_VFIO_IOMMU_TYPE1 \
             and CONFIG_VFIO_PCI (distribution kernels have them; a missing package such as \
             linux-modules-extra-$(uname -r) on Ubuntu is the usual cause)"
                .to_string(),
        ])
    }
}

/// Item 4: iommufd (informational: VFIO's legacy container works without it).
fn iommufd_item(c: &Ctx) -> CheckItem {
    if c.facts.dev_iommu == Some(true) || c.is_loaded("iommufd") {
        let summary = match c.facts.vfio_cdev {
            Some(true) => {
                "iommufd (/dev/iommu) and VFIO device cdevs (/dev/vfio/devices/vfioN): devices can be driven \
                 through iommufd"
            }
            Some(false) => {
                "iommufd present (/dev/iommu), but this kernel has no VFIO device cdevs \
                 (CONFIG_VFIO_DEVICE_CDEV off): VFIO uses the legacy container (/dev/vfio/vfio)"
            }
            None => {
                "iommufd present (/dev/iommu); whether VFIO device cdevs exist shows once a device is on \
                 vfio-pci (/dev/vfio/devices/vfioN)"
            }
        };
        CheckItem::new("iommufd", Status::Info, summary)
    } else if c.is_available("iommufd") {
        CheckItem::new("iommufd", Status::Info, "iommufd shipped but not loaded; the legacy VFIO container is used")
    } else if c.facts.dev_iommu.is_none() && c.facts.modules_loaded.is_none() {
        CheckItem::new("iommufd", Status::Info, c.unknown("neither /dev nor /sys/module was readable"))
    } else {
        CheckItem::new(
            "iommufd",
            Status::Info,
            "no iommufd (Linux < 6.2 or CONFIG_IOMMUFD off); the legacy VFIO container (/dev/vfio/vfio) is used",
        )
    }
}

/// Item 5: default domain type (only with the IOMMU on).
fn default_domain_item(c: &Ctx) -> Option<CheckItem> {
    if !c.iommu_on {
        return None;
    }
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for g in &c.s.groups {
        let k = g.kind.as_deref().unwrap_or("unknown");
        match kinds.iter_mut().find(|(n, _)| *n == k) {
            Some((_, n)) => *n += 1,
            None => kinds.push((k, 1)),
        }
    }
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let desc = kinds.iter().map(|(k, n)| format!("{k} ×{n}")).collect::<Vec<_>>().join(", ");
    let pt = has_param(&c.cmdline, "iommu").is_some_and(|p| p == "iommu=pt")
        || has_param(&c.cmdline, "iommu.passthrough").is_some_and(|p| p.ends_with("=1"));
    let summary = if kinds.first().is_some_and(|(k, _)| *k == "identity") {
        format!(
            "default domain: identity (passthrough{}): host drivers' DMA is not translated; assignment is \
             unaffected ({desc})",
            if pt { ", from iommu=pt" } else { "" }
        )
    } else {
        format!("default domain: DMA translation for host drivers ({desc}); `iommu=pt` would skip it for speed")
    };
    Some(CheckItem::new("default-domain", Status::Info, summary))
}

/// Item 6: unsafe interrupts allowed where remapping is not known to be missing.
fn unsafe_interrupts_item(c: &Ctx) -> Option<CheckItem> {
    (c.unsafe_ok() && c.facts.interrupt_remapping != Some(false)).then(|| {
        CheckItem::new(
            "unsafe-interrupts",
            Status::Warn,
            "vfio_iommu_type1.allow_unsafe_interrupts=1 is set but not needed",
        )
        .fix(["remove `allow_unsafe_interrupts=1` from /etc/modprobe.d and the kernel command line".to_string()])
    })
}

/// Item 7: groups with direct-mapped (RMRR) regions (only with the IOMMU on).
fn rmrr_item(c: &Ctx) -> Option<CheckItem> {
    if !c.iommu_on {
        return None;
    }
    let mut rmrr_groups = Vec::new();
    let mut rmrr_devices = Vec::new();
    for g in &c.s.groups {
        if g.reserved_regions.iter().any(|r| r.kind == "direct") {
            rmrr_groups.push(g.id.to_string());
            rmrr_devices.extend(g.devices.iter().copied());
        }
    }
    if rmrr_groups.is_empty() {
        return Some(CheckItem::new("rmrr", Status::Pass, "no group has a `direct` (RMRR) reserved region"));
    }
    Some(
        CheckItem::new(
            "rmrr",
            Status::Warn,
            format!(
                "group(s) {} have `direct` reserved regions (firmware RMRR): VFIO refuses these devices \
                 (\"Device is ineligible for IOMMU domain attach due to platform RMRR requirement\")",
                rmrr_groups.join(", ")
            ),
        )
        .fix(["look for a firmware update or a BIOS option that drops the RMRR for the device (some HPE/Dell \
               servers have one per slot); USB and graphics RMRRs are `direct-relaxable` and do not block"
            .to_string()])
        .devices(rmrr_devices),
    )
}

/// Item 8: the boot VGA device.
fn boot_vga_item(s: &Snapshot) -> CheckItem {
    let boot_vga: Vec<PciAddress> = s.devices.iter().filter(|d| d.boot_vga == Some(true)).map(|d| d.address).collect();
    if boot_vga.is_empty() {
        return CheckItem::new("boot-vga", Status::Pass, "no boot VGA device to worry about");
    }
    CheckItem::new(
        "boot-vga",
        Status::Warn,
        format!(
            "{} is the boot VGA device: the firmware console (efifb/simpledrm) holds its BAR, so assigning it \
             fails with \"BAR 0: can't reserve\" unless the console lets go",
            boot_vga.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
        ),
    )
    .fix(["use another GPU (or the iGPU) for the host console, or add `video=efifb:off` (kernels ≥ 5.15 with \
           simpledrm: `initcall_blacklist=sysfb_init`) to the kernel command line"
        .to_string()])
    .devices(boot_vga)
}

/// Item 9: endpoints without a usable reset. Since Linux 5.15 `reset_method` is shown only when the device
/// has a method, so once any device has the attribute, an endpoint without it has none.
/// A full read of a 5.15+ kernel that shows the attribute nowhere: no device has a method.
fn reset_item(s: &Snapshot) -> CheckItem {
    let reset_known = s.devices.iter().any(|d| d.reset_methods.is_some())
        || (s.readiness.is_some() && s.kernel.version().is_some_and(|v| v >= (5, 15)));
    let mut no_reset = Vec::new();
    for d in &s.devices {
        let Ok(cfg) = ConfigInfo::parse(&d.config) else { continue };
        // Bridges, host bridges and chipset functions (class 06) are never assigned.
        if cfg.header != iommu_pci::HeaderKind::Normal || cfg.class >> 16 == 0x06 {
            continue;
        }
        if reset_known && d.reset_methods.as_ref().is_none_or(|m| m.is_empty()) {
            no_reset.push(d.address);
        }
    }
    if !reset_known && no_reset.is_empty() {
        CheckItem::new("reset", Status::Info, "reset methods unknown (no reset_method attributes read)")
    } else if no_reset.is_empty() {
        CheckItem::new("reset", Status::Pass, "every endpoint has a reset method")
    } else {
        CheckItem::new(
            "reset",
            Status::Warn,
            format!(
                "{} endpoint(s) have no reset method: a VM gets them in whatever state the last user left",
                no_reset.len()
            ),
        )
        .fix(["prefer devices with FLR; otherwise power-cycle between users, or look for a vendor reset module"
            .to_string()])
        .devices(no_reset)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn vfio_cdevs_are_told_from_the_host_and_unknown_when_nothing_tells() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        assert_eq!(super::vfio_cdev(r, Some("6.12.0")), None);
        // A function on vfio-pci without vfio-dev/: the kernel has no cdevs.
        let dev = r.join("sys/devices/pci0000:00/0000:00:03.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::create_dir_all(r.join("sys/bus/pci/drivers/vfio-pci")).unwrap();
        std::os::unix::fs::symlink(r.join("sys/bus/pci/drivers/vfio-pci"), dev.join("driver")).unwrap();
        std::fs::create_dir_all(r.join("sys/bus/pci/devices")).unwrap();
        std::os::unix::fs::symlink(&dev, r.join("sys/bus/pci/devices/0000:00:03.0")).unwrap();
        assert_eq!(super::vfio_cdev(r, None), Some(false));
        // With vfio-dev/vfio0 it has them.
        std::fs::create_dir_all(dev.join("vfio-dev/vfio0")).unwrap();
        assert_eq!(super::vfio_cdev(r, None), Some(true));
        // The kernel config answers when no device tells.
        let t2 = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t2.path().join("boot")).unwrap();
        std::fs::write(t2.path().join("boot/config-6.12.0"), "# CONFIG_VFIO_DEVICE_CDEV is not set\n").unwrap();
        assert_eq!(super::vfio_cdev(t2.path(), Some("6.12.0")), Some(false));
    }

    use super::*;

    #[test]
    fn module_names_from_modules_dep_paths() {
        assert_eq!(module_name("kernel/drivers/vfio/pci/vfio-pci.ko.zst").as_deref(), Some("vfio_pci"));
        assert_eq!(module_name("kernel/drivers/vfio/vfio.ko").as_deref(), Some("vfio"));
        assert_eq!(module_name("kernel/drivers/iommu/iommufd/iommufd.ko.xz").as_deref(), Some("iommufd"));
        assert_eq!(module_name("not-a-module"), None);
    }

    #[test]
    fn fixes_name_every_loader_when_none_is_known() {
        let f = kernel_param_fix("intel_iommu=on", &[]);
        assert_eq!(f.len(), 3);
        assert!(f[0].contains("GRUB_CMDLINE_LINUX_DEFAULT") && f[0].contains("intel_iommu=on"));
        let f = kernel_param_fix("amd_iommu=on", &["kernelstub".to_string()]);
        assert_eq!(f, vec!["kernelstub (Pop!_OS): `sudo kernelstub -a \"amd_iommu=on\"`, then reboot".to_string()]);
    }
}
