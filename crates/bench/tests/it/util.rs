//! What both read-back tests do: find pciutils, run it on a generated tree, read the tree itself, and
//! compare the two snapshots' functions, tree and virtual functions.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use iommu_groups::{predict, RuleSet};
use iommu_host::{read_host, LspciDump, Snapshot};
use iommu_pci::PciAddress;

/// pciutils' `lspci`, when installed. Without it the test is skipped with a message, except under CI
/// (`CI=true`), whose setup installs pciutils, where a missing `lspci` fails the test.
pub fn lspci() -> Option<&'static str> {
    let found =
        ["/usr/bin/lspci", "/usr/sbin/lspci", "/bin/lspci", "/sbin/lspci"].into_iter().find(|p| Path::new(p).is_file());
    if found.is_none() {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "lspci (pciutils) is not installed, and CI=true");
        eprintln!("SKIPPED: lspci (pciutils) is not installed");
    }
    found
}

/// The groups predicted for a snapshot, numbered.
pub fn predicted(s: &Snapshot) -> Vec<(u32, Vec<PciAddress>)> {
    let (t, _) = s.topology().unwrap();
    predict(&t, &s.platform(), RuleSet::Linux6).groups.into_iter().map(|g| (g.id, g.devices)).collect()
}

/// `lspci ARGS` on the tree below `tree`, read back.
pub fn lspci_of(lspci: &str, tree: &Path, args: &[&str]) -> LspciDump {
    let out = Command::new(lspci)
        .arg("-O")
        .arg(format!("sysfs.path={}", tree.join("sys/bus/pci").display()))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    LspciDump::parse_bytes(&out.stdout).unwrap()
}

/// The tree read as a live host, without its command line (`pci=disable_acs_redir=...`), which lspci
/// output does not carry.
pub fn read_without_cmdline(tree: &Path) -> Snapshot {
    let mut live = read_host(tree).unwrap();
    live.kernel.cmdline = None;
    live
}

/// The dump has the tree's functions, parents and virtual functions (and there are some).
pub fn assert_same_functions(dump: &LspciDump, live: &Snapshot) {
    let d = &dump.snapshot;
    assert_eq!(d.devices.len(), live.devices.len());
    for (a, b) in d.devices.iter().zip(&live.devices) {
        assert_eq!((a.address, a.parent, a.physfn), (b.address, b.parent, b.physfn), "{}", a.address);
    }
    let vfs: BTreeSet<PciAddress> = dump.virtfns.iter().map(|(vf, _)| *vf).collect();
    assert_eq!(vfs.len(), live.devices.iter().filter(|x| x.physfn.is_some()).count());
    assert!(!vfs.is_empty());
}
