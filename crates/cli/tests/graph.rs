//! Claims about the `graph` command itself: it draws what `iommu_graph` draws of the host it loads (a
//! snapshot, a `--root` tree with its own pci.ids and kernel release, or an lspci dump with predicted
//! groups), writes `-o` atomically, and refuses `--json` and unknown formats. The drawing's own claims
//! (layout, escaping, DOT, what Chromium shows) are checked without the binary in `crates/graph/tests/`.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use iommu_graph::{Model, Title};
use iommu_host::{read_host_with, Detail, Snapshot};
use iommu_pci::PciIds;

fn lab(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../snapshots").join(name)
}

fn iommuctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iommuctl")).args(args).env("NO_COLOR", "1").output().unwrap()
}

fn ok_text(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn from(snap: &Path, args: &[&str]) -> String {
    ok_text(&iommuctl(&[&["--from", snap.to_str().unwrap()], args].concat()))
}

fn config(vendor: u16, device: u16, class: [u8; 2], header: u8, pcie_type: Option<u8>) -> Vec<u8> {
    let mut c = vec![0u8; 256];
    c[0..2].copy_from_slice(&vendor.to_le_bytes());
    c[2..4].copy_from_slice(&device.to_le_bytes());
    c[0x0b] = class[0];
    c[0x0a] = class[1];
    c[0x0e] = header;
    if let Some(t) = pcie_type {
        c[6] = 0x10;
        c[0x34] = 0x40;
        c[0x40] = 0x10;
        c[0x42] = t << 4 | 2;
    }
    c
}

#[test]
fn the_command_draws_what_the_library_draws_for_every_lab_snapshot() {
    // `--from` names functions from the system's pci.ids, as here.
    let ids = PciIds::load_system(Path::new("/")).unwrap_or_else(PciIds::empty);
    let mut n = 0;
    for entry in std::fs::read_dir(lab("")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let s = Snapshot::load(&path).unwrap();
        let m = Model::from_snapshot(&s, &ids, Title::of(&s));
        let svg = iommu_graph::svg(&m);
        assert_eq!(from(&path, &["graph"]), svg, "{}: the default is SVG", path.display());
        assert_eq!(from(&path, &["graph", "--format", "svg"]), svg, "{}", path.display());
        assert_eq!(from(&path, &["graph", "--format", "dot"]), iommu_graph::dot(&m), "{}", path.display());
        n += 1;
    }
    assert!(n >= 7, "only {n} lab snapshots");
}

#[test]
fn output_file_is_written_atomically_and_json_is_refused() {
    let snap = lab("lab-switch.json");
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("g.svg");
    let o = iommuctl(&["--from", snap.to_str().unwrap(), "graph", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), from(&snap, &["graph", "--format", "svg"]));
    let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["g.svg"], "no temporary file left behind");
    let o = iommuctl(&["--from", snap.to_str().unwrap(), "--json", "graph"]);
    assert_eq!(o.status.code(), Some(2));
    let o = iommuctl(&["--from", snap.to_str().unwrap(), "graph", "-o", "/nonexistent-dir/g.svg"]);
    assert_eq!(o.status.code(), Some(4));
}

#[test]
fn an_unknown_format_or_a_missing_file_name_is_a_usage_error() {
    let snap = lab("lab-switch.json");
    for args in [&["graph", "--format", "png"][..], &["graph", "-o"], &["graph", "--format"]] {
        let o = iommuctl(&[&["--from", snap.to_str().unwrap()], args].concat());
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
    let w = |p: PathBuf, s: &[u8]| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    w(root.join("usr/share/misc/pci.ids"), format!("f00d  {EVIL_VENDOR}\n\t0bad  {EVIL_DEVICE}\n").as_bytes());
    w(root.join("proc/sys/kernel/osrelease"), b"6.1<b>&\x1b[2J\n");
    let bus = root.join("sys/bus/pci/devices");
    std::fs::create_dir_all(&bus).unwrap();
    let bridge = root.join("sys/devices/pci0000:00/0000:00:01.0");
    let ep = bridge.join("0000:01:00.0");
    for (dir, cfg) in
        [(&bridge, config(0x8086, 0x2030, [6, 4], 1, Some(4))), (&ep, config(0xf00d, 0x0bad, [2, 0], 0, Some(0)))]
    {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config"), cfg).unwrap();
        let name = dir.file_name().unwrap();
        symlink(dir, bus.join(name)).unwrap();
        let g = root.join("sys/kernel/iommu_groups/3");
        std::fs::create_dir_all(g.join("devices")).unwrap();
        std::fs::write(g.join("type"), "DMA<\"&\">\x1b\n").unwrap();
        symlink(&g, dir.join("iommu_group")).unwrap();
        symlink(dir, g.join("devices").join(name)).unwrap();
    }
    let drv = root.join("sys/bus/pci/drivers").join(EVIL_DRIVER);
    std::fs::create_dir_all(&drv).unwrap();
    symlink(&drv, ep.join("driver")).unwrap();
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
    let svg = ok_text(&iommuctl(&["--root", root, "graph"]));
    assert_eq!(svg, iommu_graph::svg(&m));
    let dot = ok_text(&iommuctl(&["--root", root, "graph", "--format", "dot"]));
    assert_eq!(dot, iommu_graph::dot(&m));
    // ... which is the tree's vendor, driver, release and group type, escaped.
    assert!(svg.contains("Evil &lt;Corp&gt; &amp; &quot;Sons&quot; &apos;Ltd&apos; \\N"), "{svg}");
    assert!(svg.contains("kernel 6.1&lt;b&gt;&amp;[2J"), "{svg}");
    assert!(!svg.contains("<script") && !svg.chars().any(|c| c.is_control() && c != '\n'));
    assert!(dot.contains(r#"[drv<&>\"'\\l]"#), "{dot}");
    assert!(dot.contains(r#"label="group 3 (DMA<\"&\">)""#), "{dot}");
}

// --- an lspci dump --------------------------------------------------------------------------------------

#[test]
fn an_lspci_dump_is_drawn_with_predicted_groups_and_claims_no_kernel() {
    let dump = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../host/tests/fixtures/lspci/everything-6.1-xxxx-D.txt");
    let dump = dump.to_str().unwrap();
    let svg = ok_text(&iommuctl(&["--from-lspci", dump, "graph"]));
    assert!(svg.contains("<title>IOMMU groups: kernel unknown (groups predicted from an lspci dump), "), "{svg}");
    assert!(svg.contains("IOMMU group 0 (predicted)</title>"), "tooltips give the groups' type");
    let dot = ok_text(&iommuctl(&["--from-lspci", dump, "graph", "--format", "dot"]));
    let clusters = dot.matches("subgraph cluster_g").count();
    assert!(clusters > 0);
    assert_eq!(dot.matches(" (predicted)\"; style=filled").count(), clusters, "every cluster is a predicted group");
    assert_eq!(svg.matches("<rect class=\"cluster\"").count(), clusters, "this host's groups are contiguous");
}
