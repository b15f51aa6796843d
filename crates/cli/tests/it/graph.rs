//! Claims about the `graph` command itself: it draws what `iommu_graph` draws of the host it loads (a
//! snapshot, a `--root` tree with its own pci.ids and kernel release, or an lspci dump with predicted
//! groups), writes `-o` atomically, and refuses `--json` and unknown formats. The drawing's own claims
//! (layout, escaping, DOT, what Chromium shows) are checked without the binary in `crates/graph/tests/it/`.

use std::path::Path;

use iommu_graph::{Model, Title};
use iommu_host::{read_host_with, Detail, Snapshot};
use iommu_pci::PciIds;

use crate::util::{
    assert_contains, assert_exit, config, from, function, group_attr, iommuctl, lab, lab_snapshots, lspci_fixture,
    ok_out, write,
};

#[test]
fn the_command_draws_what_the_library_draws_for_every_lab_snapshot() {
    // `--from` names functions from the system's pci.ids, as here.
    let ids = PciIds::load_system(Path::new("/")).unwrap_or_else(PciIds::empty);
    let mut n = 0;
    for path in lab_snapshots() {
        let s = Snapshot::load(&path).unwrap();
        let m = Model::from_snapshot(&s, &ids, Title::of(&s));
        let svg = iommu_graph::svg(&m);
        assert_eq!(ok_out(&from(&path, &["graph"])), svg, "{}: the default is SVG", path.display());
        assert_eq!(ok_out(&from(&path, &["graph", "--format", "svg"])), svg, "{}", path.display());
        assert_eq!(ok_out(&from(&path, &["graph", "--format", "dot"])), iommu_graph::dot(&m), "{}", path.display());
        n += 1;
    }
    assert!(n >= 7, "only {n} lab snapshots");
}

#[test]
fn output_file_is_written_atomically_and_json_is_refused() {
    let snap = lab("lab-switch.json");
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("g.svg");
    let o = from(&snap, &["graph", "-o", out.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert!(o.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), ok_out(&from(&snap, &["graph", "--format", "svg"])));
    let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["g.svg"], "no temporary file left behind");
    let o = from(&snap, &["--json", "graph"]);
    assert_exit(&o, 2);
    let o = from(&snap, &["graph", "-o", "/nonexistent-dir/g.svg"]);
    assert_exit(&o, 4);
}

#[test]
fn an_unknown_format_or_a_missing_file_name_is_a_usage_error() {
    let snap = lab("lab-switch.json");
    for args in [&["graph", "--format", "png"][..], &["graph", "-o"], &["graph", "--format"]] {
        let o = from(&snap, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?} drew something");
    }
}

// --- a live tree ----------------------------------------------------------------------------------------

const EVIL_VENDOR: &str = "Evil <Corp> & \"Sons\" 'Ltd' \\N";
const EVIL_DEVICE: &str = "Dev\x1b[31m]]> <!-- --> \u{202e}</text><script>alert(1)</script>";
const EVIL_DRIVER: &str = "drv<&>\"'\x1b\x07\\l";

/// A sysfs tree: a bridge 00:01.0 and behind it f00d:0bad with a hostile driver name, named by a hostile
/// pci.ids, in group 3 whose type and the kernel release are hostile too.
fn hostile_tree(root: &Path) {
    write(root, "usr/share/misc/pci.ids", format!("f00d  {EVIL_VENDOR}\n\t0bad  {EVIL_DEVICE}\n"));
    write(root, "proc/sys/kernel/osrelease", b"6.1<b>&\x1b[2J\n");
    let bridge = config(0x8086, 0x2030).size(256).class(0x060400).header(1).pcie(4).bytes();
    function(root, "pci0000:00/0000:00:01.0").config(&bridge).group(3);
    let ep = config(0xf00d, 0x0bad).size(256).class(0x020000).pcie(0).bytes();
    function(root, "pci0000:00/0000:00:01.0/0000:01:00.0").config(&ep).driver(EVIL_DRIVER).group(3);
    group_attr(root, 3, "type", "DMA<\"&\">\x1b\n");
}

#[test]
fn a_root_tree_is_drawn_with_its_own_names_release_and_group_types() {
    let t = tempfile::tempdir().unwrap();
    hostile_tree(t.path());
    let root = t.path().to_str().unwrap();
    // What the library draws of the host as iommu-host reads it, named by the tree's own pci.ids.
    let s = read_host_with(t.path(), Detail::Listing).unwrap();
    let ids = PciIds::load_system(t.path()).unwrap();
    let m = Model::from_snapshot(&s, &ids, Title::of(&s));
    let svg = ok_out(&iommuctl(&["--root", root, "graph"]));
    assert_eq!(svg, iommu_graph::svg(&m));
    let dot = ok_out(&iommuctl(&["--root", root, "graph", "--format", "dot"]));
    assert_eq!(dot, iommu_graph::dot(&m));
    // ... which is the tree's vendor, driver, release and group type, escaped.
    assert_contains(&svg, "Evil &lt;Corp&gt; &amp; &quot;Sons&quot; &apos;Ltd&apos; \\N");
    assert_contains(&svg, "kernel 6.1&lt;b&gt;&amp;[2J");
    assert!(!svg.contains("<script") && !svg.chars().any(|c| c.is_control() && c != '\n'));
    assert_contains(&dot, r#"[drv<&>\"'\\l]"#);
    assert_contains(&dot, r#"label="group 3 (DMA<\"&\">)""#);
}

// --- an lspci dump --------------------------------------------------------------------------------------

#[test]
fn an_lspci_dump_is_drawn_with_predicted_groups_and_claims_no_kernel() {
    let dump = lspci_fixture("everything-6.1-xxxx-D.txt");
    let dump = dump.to_str().unwrap();
    let svg = ok_out(&iommuctl(&["--from-lspci", dump, "graph"]));
    assert_contains(&svg, "<title>IOMMU groups: kernel unknown (groups predicted from an lspci dump), ");
    assert!(svg.contains("IOMMU group 0 (predicted)</title>"), "tooltips give the groups' type");
    let dot = ok_out(&iommuctl(&["--from-lspci", dump, "graph", "--format", "dot"]));
    let clusters = dot.matches("subgraph cluster_g").count();
    assert!(clusters > 0);
    assert_eq!(dot.matches(" (predicted)\"; style=filled").count(), clusters, "every cluster is a predicted group");
    assert_eq!(svg.matches("<rect class=\"cluster\"").count(), clusters, "this host's groups are contiguous");
}
