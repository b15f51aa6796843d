//! `PciIds` against the installed system database (skipped when none is installed): every vendor, device,
//! subsystem and class name that a plain line-by-line reading of the file finds must be returned by the
//! look-ups, and loading must be fast enough for `iommuctl list`.

use std::collections::HashMap;
use std::path::Path;

use iommu_pci::PciIds;

const SYSTEM_FILES: [&str; 3] = ["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids"];

fn system_text() -> Option<String> {
    let text = SYSTEM_FILES.iter().find_map(|p| std::fs::read_to_string(p).ok());
    if text.is_none() {
        eprintln!("no system pci.ids installed; skipping");
    }
    text
}

/// The names in a pci.ids text, read the obvious way (first occurrence wins).
#[derive(Default)]
struct Reference {
    vendors: HashMap<u16, String>,
    devices: HashMap<(u16, u16), String>,
    subsystems: HashMap<(u16, u16, u16, u16), String>,
    /// Base classes (`cc0000`), subclasses (`ccss00`) and programming interfaces (`ccsspp`), separately.
    bases: HashMap<u32, String>,
    subclasses: HashMap<u32, String>,
    prog_ifs: HashMap<u32, String>,
}

fn hex(s: &str) -> u16 {
    u16::from_str_radix(s, 16).unwrap()
}

impl Reference {
    fn read(text: &str) -> Self {
        let mut r = Reference::default();
        let (mut vendor, mut device, mut class, mut sub) = (None, None, None, None);
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix("\t\t") {
                let (id, name) = rest.split_once("  ").unwrap();
                if let (Some(v), Some(d)) = (vendor, device) {
                    let (sv, sd) = id.split_once(' ').unwrap();
                    r.subsystems.entry((v, d, hex(sv), hex(sd))).or_insert_with(|| name.to_string());
                } else if let (Some(c), Some(s)) = (class, sub) {
                    r.prog_ifs.entry(c << 16 | s << 8 | u32::from(hex(id))).or_insert_with(|| name.to_string());
                }
            } else if let Some(rest) = line.strip_prefix('\t') {
                let (id, name) = rest.split_once("  ").unwrap();
                if let Some(v) = vendor {
                    device = Some(hex(id));
                    r.devices.entry((v, hex(id))).or_insert_with(|| name.to_string());
                } else if let Some(c) = class {
                    sub = Some(u32::from(hex(id)));
                    r.subclasses.entry(c << 16 | u32::from(hex(id)) << 8).or_insert_with(|| name.to_string());
                }
            } else if let Some(rest) = line.strip_prefix("C ") {
                let (id, name) = rest.split_once("  ").unwrap();
                (vendor, device, class, sub) = (None, None, Some(u32::from(hex(id))), None);
                r.bases.entry(u32::from(hex(id)) << 16).or_insert_with(|| name.to_string());
            } else {
                let (id, name) = line.split_once("  ").unwrap();
                (vendor, device, class, sub) = (Some(hex(id)), None, None, None);
                r.vendors.entry(hex(id)).or_insert_with(|| name.to_string());
            }
        }
        r
    }
}

#[test]
fn every_name_in_the_system_database_is_found() {
    let Some(text) = system_text() else { return };
    let reference = Reference::read(&text);
    assert!(reference.vendors.len() > 1000, "suspiciously small database");
    let ids = PciIds::parse(&text);
    assert_eq!(ids.vendor_count(), reference.vendors.len());
    for (&v, name) in &reference.vendors {
        assert_eq!(ids.vendor(v), Some(name.as_str()), "vendor {v:04x}");
    }
    for (&(v, d), name) in &reference.devices {
        assert_eq!(ids.device(v, d), Some(name.as_str()), "device {v:04x}:{d:04x}");
    }
    for (&(v, d, sv, sd), name) in &reference.subsystems {
        assert_eq!(ids.subsystem(v, d, sv, sd), Some(name.as_str()), "subsystem {v:04x}:{d:04x} {sv:04x}:{sd:04x}");
    }
    let all_classes = reference.bases.keys().chain(reference.subclasses.keys()).chain(reference.prog_ifs.keys());
    for &class in all_classes {
        let want = (reference.prog_ifs.get(&class))
            .or(reference.subclasses.get(&(class & !0xff)))
            .or(reference.bases.get(&(class & !0xffff)));
        assert_eq!(ids.class(class), want.map(String::as_str), "class {class:06x}");
    }
}

#[test]
fn well_known_system_names() {
    let Some(text) = system_text() else { return };
    let ids = PciIds::parse(&text);
    assert_eq!(ids.vendor(0x8086), Some("Intel Corporation"));
    assert_eq!(ids.describe(0x8086, 0x10d3), "Intel Corporation 82574L Gigabit Network Connection [8086:10d3]");
    assert_eq!(ids.describe_class(0x020000), "Ethernet controller [0200]");
    assert_eq!(ids.describe_class(0x0c0330), "USB controller [0c03] (prog-if 30 [XHCI])");
    assert_eq!(ids.class(0x060400), Some("Normal decode"));
    assert_eq!(ids.class(0x060000), Some("Host bridge"));
    assert!(ids.vendor(0x10de).is_some_and(|n| n.starts_with("NVIDIA")));
}

#[test]
fn load_system_reads_the_installed_database() {
    let Some(text) = system_text() else { return };
    let ids = PciIds::load_system(Path::new("/")).expect("installed database loads");
    assert_eq!(ids.vendor_count(), PciIds::parse(&text).vendor_count());
}
