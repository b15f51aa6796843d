//! lspci dumps taken inside the lab's real kernels (`tests/fixtures/lspci/`) read back into snapshots that
//! predict exactly the groups those kernels made.

use std::collections::BTreeSet;
use std::path::PathBuf;

use iommu_groups::{predict, RuleSet};
use iommu_host::{LspciDump, LspciError, Snapshot};
use iommu_pci::PciAddress;

use crate::util::a;

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lspci").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The kernel's groups recorded with the dump, as a partition.
fn kernel_partition(name: &str) -> BTreeSet<Vec<PciAddress>> {
    fixture(name)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut v: Vec<PciAddress> = l.split_whitespace().skip(1).map(|a| a.parse().unwrap()).collect();
            v.sort();
            v
        })
        .collect()
}

fn predicted_partition(s: &Snapshot) -> BTreeSet<Vec<PciAddress>> {
    let (t, bad) = s.topology().unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let p = predict(&t, &s.platform(), RuleSet::Linux6);
    assert!(p.uncertain.is_empty(), "{:?}", p.uncertain);
    p.groups.into_iter().map(|g| g.devices).collect()
}

#[test]
fn a_full_dump_from_the_everything_topology_predicts_the_kernels_groups() {
    let d = LspciDump::parse(&fixture("everything-6.1-xxxx-D.txt")).unwrap();
    assert_eq!(d.snapshot.devices.len(), 38);
    assert_eq!((d.short_header, d.short_pcie), (0, 0));
    assert!(d.warnings().is_empty(), "{:?}", d.warnings());
    assert!(d.snapshot.groups.is_empty());
    assert_eq!(predicted_partition(&d.snapshot), kernel_partition("everything-6.1.groups"));
}

#[test]
fn the_tree_follows_secondary_bus_numbers() {
    let s = LspciDump::parse(&fixture("everything-6.1-xxxx-D.txt")).unwrap().snapshot;
    let parent = |x: &str| s.device(a(x)).unwrap().parent.map(|p| p.to_string());
    // Switch below root port 00:05.0: upstream port on bus 04, downstream ports on bus 05.
    assert_eq!(parent("04:00.0").as_deref(), Some("0000:00:05.0"));
    assert_eq!(parent("05:01.0").as_deref(), Some("0000:04:00.0"));
    assert_eq!(parent("07:00.0").as_deref(), Some("0000:05:01.0"));
    // The expander's bus 80 is a root bus; its root port's bus 81 hangs below that port.
    assert_eq!(parent("80:00.0"), None);
    assert_eq!(parent("81:00.0").as_deref(), Some("0000:80:00.0"));
    assert_eq!(parent("00:1f.2"), None);
}

#[test]
fn the_same_dump_without_domains_gives_the_same_snapshot() {
    let with = fixture("everything-6.1-xxxx-D.txt");
    let without: String = with.lines().map(|l| format!("{}\n", l.strip_prefix("0000:").unwrap_or(l))).collect();
    assert_eq!(LspciDump::parse(&with).unwrap(), LspciDump::parse(&without).unwrap());
}

#[test]
fn an_amd_dump_with_nn_and_v_lines_predicts_the_kernels_groups_and_infers_ivrs() {
    let d = LspciDump::parse(&fixture("amd-mixed-6.1-xxxx-nnv.txt")).unwrap();
    assert_eq!(d.amd_iommu, Some(a("00:02.0")));
    assert_eq!(d.snapshot.acpi_tables, vec!["IVRS"]);
    assert_eq!(d.inferences().len(), 1);
    // The AMD IOMMU's own function is in no group, in the kernel and in the prediction.
    assert_eq!(predicted_partition(&d.snapshot), kernel_partition("amd-mixed-6.1.groups"));
}

#[test]
fn crlf_line_ends_change_nothing() {
    let lf = fixture("amd-mixed-6.1-xxxx-nnv.txt");
    let crlf = lf.replace('\n', "\r\n");
    assert_eq!(LspciDump::parse(&lf).unwrap(), LspciDump::parse(&crlf).unwrap());
}

#[test]
fn a_64_byte_dump_parses_and_warns_that_acs_is_unknown() {
    let d = LspciDump::parse(&fixture("everything-6.1-x.txt")).unwrap();
    assert_eq!(d.short_header, d.snapshot.devices.len());
    assert!(d.snapshot.devices.iter().all(|x| x.config.len() == 64));
    assert!(d.warnings()[0].starts_with("config space truncated to 64 bytes; run lspci -xxxx as root"));
    let (t, _) = d.snapshot.topology().unwrap();
    let p = predict(&t, &d.snapshot.platform(), RuleSet::Linux6);
    assert!(!p.uncertain.is_empty());
}

#[test]
fn a_snapshot_from_a_dump_survives_the_json_round_trip() {
    let s = LspciDump::parse(&fixture("amd-mixed-6.1-xxxx-nnv.txt")).unwrap().snapshot;
    assert_eq!(Snapshot::from_json_slice(s.to_json().as_bytes()).unwrap(), s);
}

#[test]
fn a_real_dump_cut_anywhere_gives_a_result_or_an_error_naming_a_line_never_a_panic() {
    let text = fixture("amd-mixed-6.1-xxxx-nnv.txt");
    let mut errors = 0;
    for cut in (0..text.len()).step_by(997) {
        let Some(part) = text.get(..cut) else { continue };
        match LspciDump::parse(part) {
            Ok(_) => {}
            Err(LspciError::NoDevices) => {}
            Err(e) => {
                errors += 1;
                assert!(e.to_string().starts_with("line "), "{e}");
            }
        }
    }
    assert!(errors > 100, "most cuts fall inside a function's bytes: {errors}");
}

#[test]
fn virtual_functions_in_a_real_dump_are_found_from_their_pfs_and_predict_the_kernels_groups() {
    let d = LspciDump::parse(&fixture("sriov-6.1-xxxx-D.txt")).unwrap();
    let vfs: Vec<(String, String)> = d.virtfns.iter().map(|(v, p)| (v.to_string(), p.to_string())).collect();
    assert_eq!(vfs.len(), 6);
    assert!(vfs.contains(&("0000:01:00.3".into(), "0000:01:00.0".into())));
    assert!(vfs.contains(&("0000:02:00.1".into(), "0000:02:00.0".into())));
    let vf = d.snapshot.device(a("01:00.1")).unwrap();
    // The dump says ff ff ff ff; the PF's vendor and its SR-IOV VF device ID are put in.
    assert_eq!(&vf.config[0..4], &[0x36, 0x1b, 0x10, 0x00]);
    assert_eq!(vf.parent, Some(a("00:02.0")));
    assert_eq!(predicted_partition(&d.snapshot), kernel_partition("sriov-6.1.groups"));
}
