//! pciutils' own `lspci -D -xxxx`, run on a generated tree, reads back (`iommu_host::LspciDump`) into the
//! same tree, virtual functions and predicted groups as reading the tree itself. Skipped (with a message)
//! when `lspci` is not installed, failed under CI.

use crate::util::{assert_same_functions, lspci, lspci_of, predicted, read_without_cmdline};

#[test]
fn an_lspci_dump_of_a_generated_tree_reads_back_as_the_tree() {
    let Some(lspci) = lspci() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let host = iommu_bench::generate(650, 1);
    iommu_bench::sysfs::write_tree(&host, &[], &tree).unwrap();
    let dump = lspci_of(lspci, &tree, &["-D", "-xxxx"]);
    let live = read_without_cmdline(&tree);
    assert_same_functions(&dump, &live);
    assert_eq!(predicted(&dump.snapshot), predicted(&live));
}
