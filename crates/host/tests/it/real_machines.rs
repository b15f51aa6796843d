//! Real machines: every `lspci -vvnn` probe in `tests/fixtures/lspci-vv/` (public hw-probe data, kept
//! whole) carries the running kernel's `IOMMU group:` lines. The groups predicted from the same text must
//! be that kernel's groups, as partitions of the functions. Machines where the kernel does something the
//! model does not (yet) know are listed in `KNOWN` with the kernel fact behind it, and in the fixtures'
//! README; a machine that differs and is not listed fails, and so does a listed one that no longer differs.
//! Group numbers are reported, not asserted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use iommu_groups::{predict, RuleSet};
use iommu_host::LspciDump;
use iommu_pci::PciAddress;

/// How a listed machine differs from the model.
enum Known {
    /// Only in functions the kernel put in no group (they are not behind the IOMMU as the firmware describes
    /// it); the groups of every other function must match.
    UngroupedOnly(&'static str),
    /// The groups themselves differ, and only where the prediction is uncertain.
    Groups(&'static str),
}

/// Machines allowed to differ, by file name, with the kernel fact behind the difference.
const KNOWN: &[(&str, Known)] = &[
    ("intel-server-dell-poweredge-r730.txt", Known::Groups(PCH_RCBA)),
    ("intel-workstation-hp-z440.txt", Known::Groups(PCH_RCBA)),
    ("intel-desktop-hp-elitedesk-800-g2-sff.txt", Known::UngroupedOnly(IGFX_UNIT)),
];

/// Intel: the integrated GPU is in no group when the remapping unit that covers only graphics is ignored
/// (`intel_iommu=igfx_off`, or `quirk_iommu_igfx` on chipsets it lists) or not in the firmware's DMAR table.
/// Skylake's HD 530 is not in the quirk's list, and a paste carries neither the command line nor the DMAR.
const IGFX_UNIT: &str =
    "the iGPU's graphics-only DMAR unit was ignored or not listed (igfx_off or firmware), not in a paste";

/// Intel PCH root ports (here C610's, on the R730 and the Z440) count as isolated only when the LPC bridge at 1f.0 has RCBA
/// enabled (config 0xF0 bit 0), a register `lspci -vv` text does not show: the prediction leaves them
/// uncertain and not isolated, where this machine's kernel isolated them (so its RCBA was on).
const PCH_RCBA: &str =
    "Intel PCH ACS quirk: the LPC bridge's RCBA (0xF0) is not in lspci -vv text; predicted uncertain";

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lspci-vv");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    v.sort();
    v
}

type Partition = BTreeSet<Vec<PciAddress>>;

/// What one machine gives.
struct Outcome {
    functions: usize,
    kernel: Partition,
    predicted: Partition,
    /// Functions in no kernel group.
    ungrouped: BTreeSet<PciAddress>,
    /// Predicted groups with the kernel's number for the same set of functions.
    numbers_match: bool,
    uncertain: Vec<PciAddress>,
}

fn run(path: &Path) -> Outcome {
    let dump = LspciDump::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(dump.has_kernel_groups(), "{}: no IOMMU group lines", path.display());
    let snap = &dump.snapshot;
    let (topology, bad) = snap.topology().unwrap();
    assert!(bad.is_empty(), "{}: config spaces that do not decode: {bad:?}", path.display());
    let p = predict(&topology, &snap.platform(), RuleSet::Linux6);
    let kernel: Partition = snap.groups.iter().map(|g| g.devices.clone()).collect();
    let predicted: Partition = p.groups.iter().map(|g| g.devices.clone()).collect();
    let grouped: BTreeSet<PciAddress> = kernel.iter().flatten().copied().collect();
    let ungrouped = snap.devices.iter().map(|d| d.address).filter(|a| !grouped.contains(a)).collect();
    let by_set: BTreeMap<&Vec<PciAddress>, u32> = snap.groups.iter().map(|g| (&g.devices, g.id)).collect();
    let numbers_match = p.groups.iter().all(|g| by_set.get(&g.devices) == Some(&g.id));
    Outcome { functions: snap.devices.len(), kernel, predicted, ungrouped, numbers_match, uncertain: p.uncertain }
}

/// The predicted partition restricted to `keep`, empty groups dropped.
fn restrict(p: &Partition, keep: &BTreeSet<PciAddress>) -> Partition {
    p.iter()
        .map(|g| g.iter().copied().filter(|a| keep.contains(a)).collect::<Vec<_>>())
        .filter(|g| !g.is_empty())
        .collect()
}

fn show(g: &[PciAddress]) -> String {
    g.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" ")
}

#[test]
fn every_real_machine_groups_as_its_kernel_did_or_is_listed_with_the_reason() {
    let files = fixtures();
    assert!(!files.is_empty(), "no fixtures");
    let mut failures = Vec::new();
    let mut number_matches = 0;
    println!("{:<44} {:>5} {:>6} {:>6}  result", "machine", "funcs", "kernel", "pred");
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let o = run(path);
        let exact = o.kernel == o.predicted;
        let keep: BTreeSet<PciAddress> = o.kernel.iter().flatten().copied().collect();
        let on_grouped = restrict(&o.predicted, &keep) == o.kernel;
        number_matches += usize::from(o.numbers_match);
        let known = KNOWN.iter().find(|(f, _)| *f == name).map(|(_, k)| k);
        let verdict = match (exact, on_grouped, known) {
            (true, _, None) => "matches".to_string(),
            (true, _, Some(_)) => {
                failures
                    .push(format!("{name}: listed as differing but now matches: drop it from KNOWN and the README"));
                "matches (stale KNOWN entry)".into()
            }
            (false, true, Some(Known::UngroupedOnly(why))) => format!("differs only in ungrouped functions: {why}"),
            (false, false, Some(Known::Groups(why)))
                if o.predicted.difference(&o.kernel).all(|g| g.iter().any(|a| o.uncertain.contains(a))) =>
            {
                format!("differs where predicted uncertain: {why}")
            }
            (false, _, _) => {
                let mut msg = format!("{name}: prediction differs from the kernel's groups");
                for g in o.kernel.difference(&o.predicted) {
                    msg.push_str(&format!("\n    kernel has    {{{}}}", show(g)));
                }
                for g in o.predicted.difference(&o.kernel) {
                    msg.push_str(&format!("\n    predicted has {{{}}}", show(g)));
                }
                if !o.ungrouped.is_empty() {
                    msg.push_str(&format!(
                        "\n    in no kernel group: {}",
                        show(&o.ungrouped.iter().copied().collect::<Vec<_>>())
                    ));
                }
                if !o.uncertain.is_empty() {
                    msg.push_str(&format!("\n    uncertain: {}", show(&o.uncertain)));
                }
                failures.push(msg);
                "DIFFERS (not listed)".into()
            }
        };
        println!("{name:<44} {:>5} {:>6} {:>6}  {verdict}", o.functions, o.kernel.len(), o.predicted.len());
    }
    for (f, _) in KNOWN {
        if !files.iter().any(|p| p.file_name().is_some_and(|n| n == *f)) {
            failures.push(format!("{f}: listed in KNOWN but not a fixture"));
        }
    }
    println!(
        "group numbers match the kernel's on {number_matches} of {} machines (reported, not asserted)",
        files.len()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_readme_lists_every_fixture_and_every_known_difference() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lspci-vv/README.md"))
            .expect("fixtures README");
    for path in fixtures() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(readme.contains(&name), "README does not list {name}");
    }
    for (f, _) in KNOWN {
        assert!(readme.contains(f), "README does not explain {f}");
    }
}
