//! pciutils' own `lspci -D -vvvnn`, run on a generated tree, reads back (`iommu_host::LspciDump`, config
//! space rebuilt from the decoded text) into the same tree, virtual functions and predicted groups as
//! reading the tree itself, and its `IOMMU group:` lines are the tree's groups. Skipped (with a message)
//! when `lspci` is not installed, failed under CI.

use std::collections::BTreeSet;

use iommu_groups::{predict, RuleSet, Topology};
use iommu_pci::PciAddress;

use crate::util::{assert_same_functions, lspci, lspci_of, predicted, read_without_cmdline};

#[test]
fn lspci_vv_text_of_a_generated_tree_reads_back_as_the_tree() {
    let Some(lspci) = lspci() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let host = iommu_bench::generate(650, 1);
    // The kernel's groups in the tree are the model's, so `IOMMU group:` lines have something to say.
    let t = Topology::new(host.devices()).unwrap();
    let groups: Vec<(u32, Vec<PciAddress>)> =
        predict(&t, &host.platform(), RuleSet::Linux6).groups.into_iter().map(|g| (g.id, g.devices)).collect();
    iommu_bench::sysfs::write_tree(&host, &groups, &tree).unwrap();
    let dump = lspci_of(lspci, &tree, &["-D", "-vvvnn"]);
    let live = read_without_cmdline(&tree);
    let d = &dump.snapshot;
    assert_eq!(dump.from_text, d.devices.len(), "every function decoded from text");
    assert!(dump.incomplete.is_empty(), "{:?}", dump.incomplete.iter().take(5).collect::<Vec<_>>());
    assert_same_functions(&dump, &live);
    for (a, b) in d.devices.iter().zip(&live.devices) {
        assert_eq!(a.iommu_group, b.iommu_group, "{}: the IOMMU group line", a.address);
    }
    assert!(!live.groups.is_empty(), "the generated tree has kernel groups");
    assert!(dump.has_kernel_groups());
    let partition = |g: Vec<(u32, Vec<PciAddress>)>| g.into_iter().map(|(_, m)| m).collect::<BTreeSet<_>>();
    assert_eq!(partition(predicted(d)), partition(predicted(&live)));
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
