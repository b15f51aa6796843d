//! pciutils' own `lspci -D -vvvnn`, run on a generated tree, reads back (`iommu_host::LspciDump`, config
//! space rebuilt from the decoded text) into the same tree, virtual functions and predicted groups as
//! reading the tree itself, and its `IOMMU group:` lines are the tree's groups. Skipped (with a message)
//! when `lspci` is not installed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use iommu_groups::{predict, RuleSet, Topology};
use iommu_host::{read_host, LspciDump, Snapshot};
use iommu_pci::PciAddress;

fn lspci() -> Option<&'static str> {
    ["/usr/bin/lspci", "/usr/sbin/lspci", "/bin/lspci", "/sbin/lspci"].into_iter().find(|p| Path::new(p).is_file())
}

/// The predicted groups as a partition (numbers aside).
fn partition(s: &Snapshot) -> BTreeSet<Vec<PciAddress>> {
    let (t, _) = s.topology().unwrap();
    predict(&t, &s.platform(), RuleSet::Linux6).groups.into_iter().map(|g| g.devices).collect()
}

#[test]
fn lspci_vv_text_of_a_generated_tree_reads_back_as_the_tree() {
    let Some(lspci) = lspci() else {
        eprintln!("SKIPPED: lspci (pciutils) is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let host = iommu_bench::generate(650, 1);
    // The kernel's groups in the tree are the model's, so `IOMMU group:` lines have something to say.
    let t = Topology::new(host.devices()).unwrap();
    let groups: Vec<(u32, Vec<PciAddress>)> =
        predict(&t, &host.platform(), RuleSet::Linux6).groups.into_iter().map(|g| (g.id, g.devices)).collect();
    iommu_bench::sysfs::write_tree(&host, &groups, &tree).unwrap();
    let out = Command::new(lspci)
        .arg("-O")
        .arg(format!("sysfs.path={}", tree.join("sys/bus/pci").display()))
        .args(["-D", "-vvvnn"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dump = LspciDump::parse_bytes(&out.stdout).unwrap();
    let mut live = read_host(&tree).unwrap();
    // The command line (pci=disable_acs_redir=...) is not in a paste.
    live.kernel.cmdline = None;

    let d = &dump.snapshot;
    assert_eq!(dump.from_text, d.devices.len(), "every function decoded from text");
    assert!(dump.incomplete.is_empty(), "{:?}", dump.incomplete.iter().take(5).collect::<Vec<_>>());
    assert_eq!(d.devices.len(), live.devices.len());
    for (a, b) in d.devices.iter().zip(&live.devices) {
        assert_eq!((a.address, a.parent, a.physfn), (b.address, b.parent, b.physfn), "{}", a.address);
        assert_eq!(a.iommu_group, b.iommu_group, "{}: the IOMMU group line", a.address);
    }
    let vfs: BTreeSet<PciAddress> = dump.virtfns.iter().map(|(vf, _)| *vf).collect();
    assert_eq!(vfs.len(), live.devices.iter().filter(|x| x.physfn.is_some()).count());
    assert!(!vfs.is_empty());
    assert!(!live.groups.is_empty(), "the generated tree has kernel groups");
    assert!(dump.has_kernel_groups());
    assert_eq!(partition(d), partition(&live));
    // The IOMMU group lines are the groups written into the tree, numbers included.
    let kernel: BTreeSet<(u32, Vec<PciAddress>)> = d.groups.iter().map(|g| (g.id, g.devices.clone())).collect();
    let written: BTreeSet<(u32, Vec<PciAddress>)> = groups.into_iter().collect();
    let differ = kernel.symmetric_difference(&written).count();
    assert!(
        differ == 0,
        "{differ} groups differ between the IOMMU group lines and the tree ({} vs {})",
        kernel.len(),
        written.len()
    );
}
