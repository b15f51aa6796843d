//! pciutils' own `lspci -D -xxxx`, run on a generated tree, reads back (`iommu_host::LspciDump`) into the
//! same tree, virtual functions and predicted groups as reading the tree itself. Skipped (with a message)
//! when `lspci` is not installed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use iommu_groups::{predict, RuleSet};
use iommu_host::{read_host, LspciDump, Snapshot};
use iommu_pci::PciAddress;

fn lspci() -> Option<&'static str> {
    ["/usr/bin/lspci", "/usr/sbin/lspci", "/bin/lspci", "/sbin/lspci"].into_iter().find(|p| Path::new(p).is_file())
}

fn groups(s: &Snapshot) -> Vec<(u32, Vec<PciAddress>)> {
    let (t, _) = s.topology().unwrap();
    predict(&t, &s.platform(), RuleSet::Linux6).groups.into_iter().map(|g| (g.id, g.devices)).collect()
}

#[test]
fn an_lspci_dump_of_a_generated_tree_reads_back_as_the_tree() {
    let Some(lspci) = lspci() else {
        eprintln!("SKIPPED: lspci (pciutils) is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let host = iommu_bench::generate(650, 1);
    iommu_bench::sysfs::write_tree(&host, &[], &tree).unwrap();
    let out = Command::new(lspci)
        .arg("-O")
        .arg(format!("sysfs.path={}", tree.join("sys/bus/pci").display()))
        .args(["-D", "-xxxx"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dump = LspciDump::parse_bytes(&out.stdout).unwrap();
    let mut live = read_host(&tree).unwrap();
    // The command line (pci=disable_acs_redir=...) is not in a dump.
    live.kernel.cmdline = None;

    let d = &dump.snapshot;
    assert_eq!(d.devices.len(), live.devices.len());
    for (a, b) in d.devices.iter().zip(&live.devices) {
        assert_eq!((a.address, a.parent, a.physfn), (b.address, b.parent, b.physfn), "{}", a.address);
    }
    let vfs: BTreeSet<PciAddress> = dump.virtfns.iter().map(|(vf, _)| *vf).collect();
    assert_eq!(vfs.len(), live.devices.iter().filter(|x| x.physfn.is_some()).count());
    assert!(!vfs.is_empty());
    assert_eq!(groups(d), groups(&live));
}
