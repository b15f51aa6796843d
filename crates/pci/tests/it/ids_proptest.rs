//! Property tests for `PciIds`: parsing never panics, and look-ups agree with the entries a generated
//! database was rendered from.

use std::collections::HashMap;

use iommu_pci::PciIds;
use proptest::prelude::*;

/// A name as pci.ids writes them: no leading or trailing blanks, no line breaks.
fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9 ()/.,\\[\\]+-]{0,24}[A-Za-z0-9)\\]]"
}

type Subsystems = Vec<(u16, u16, String)>;
type Devices = Vec<(u16, String, Subsystems)>;

fn vendors() -> impl Strategy<Value = Vec<(u16, String, Devices)>> {
    let subsystems = proptest::collection::vec((any::<u16>(), any::<u16>(), name()), 0..4);
    let devices = proptest::collection::vec((any::<u16>(), name(), subsystems), 0..6);
    proptest::collection::vec((any::<u16>(), name(), devices), 0..12)
}

/// Lines that look like pci.ids, plus some noise, for the never-panics property.
fn idsish_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "[0-9a-fA-F]{4}[ \t]{1,2}[^\n]{0,10}",
        "\t[0-9a-fA-F]{4}[ \t]{1,2}[^\n]{0,10}",
        "\t\t[0-9a-f]{4} [0-9a-f]{4}  [^\n]{0,10}",
        "C [0-9a-f]{2}  [^\n]{0,10}",
        "\t[0-9a-f]{2}  [^\n]{0,10}",
        "\t\t[0-9a-f]{2}  [^\n]{0,10}",
        "#[^\n]{0,10}",
        "[^\n]{0,12}",
        Just(String::new()),
        Just("\r".to_string()),
    ];
    proptest::collection::vec(line, 0..40).prop_map(|lines| lines.join("\n"))
}

fn exercise(ids: &PciIds, probes: &[(u16, u16, u16, u16)], class: u32) {
    for &(v, d, sv, sd) in probes {
        let _ = ids.vendor(v);
        let _ = ids.device(v, d);
        let _ = ids.subsystem(v, d, sv, sd);
        let described = ids.describe(v, d);
        assert!(described.ends_with(&format!("[{v:04x}:{d:04x}]")));
    }
    let _ = ids.class(class);
    assert!(ids.describe_class(class).contains(&format!("[{:04x}]", class >> 8 & 0xffff)));
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_text(text in any::<String>(), probes in any::<[(u16, u16, u16, u16); 4]>(), class in 0u32..0x100_0000) {
        exercise(&PciIds::parse(&text), &probes, class);
    }

    #[test]
    fn parse_never_panics_on_idsish_text(text in idsish_text(), probes in any::<[(u16, u16, u16, u16); 4]>(), class in 0u32..0x100_0000) {
        let ids = PciIds::parse(&text);
        exercise(&ids, &probes, class);
        // Look-ups with IDs that occur in the text, which reach the block scanners.
        for word in text.split(|c: char| !c.is_ascii_hexdigit()).filter(|w| w.len() == 4) {
            let id = u16::from_str_radix(word, 16).unwrap();
            exercise(&ids, &[(id, id, id, id)], u32::from(id) << 8);
        }
    }

    #[test]
    fn lookups_return_the_first_rendered_entry(vendors in vendors()) {
        let mut text = String::from("# generated\n\n");
        let mut want_vendor = HashMap::new();
        let mut want_device = HashMap::new();
        let mut want_subsystem = HashMap::new();
        for (v, vname, devices) in &vendors {
            text.push_str(&format!("{v:04x}  {vname}\n"));
            let first_vendor = !want_vendor.contains_key(v);
            want_vendor.entry(*v).or_insert(vname.clone());
            for (d, dname, subs) in devices {
                text.push_str(&format!("\t{d:04x}  {dname}\n"));
                let first_device = first_vendor && !want_device.contains_key(&(*v, *d));
                if first_vendor {
                    want_device.entry((*v, *d)).or_insert(dname.clone());
                }
                for (sv, sd, sname) in subs {
                    text.push_str(&format!("\t\t{sv:04x} {sd:04x}  {sname}\n"));
                    if first_device {
                        want_subsystem.entry((*v, *d, *sv, *sd)).or_insert(sname.clone());
                    }
                }
            }
        }
        let ids = PciIds::parse(&text);
        prop_assert_eq!(ids.vendor_count(), want_vendor.len());
        for (v, name) in &want_vendor {
            prop_assert_eq!(ids.vendor(*v), Some(name.as_str()));
        }
        for ((v, d), name) in &want_device {
            prop_assert_eq!(ids.device(*v, *d), Some(name.as_str()));
            prop_assert_eq!(ids.describe(*v, *d), format!("{} {} [{:04x}:{:04x}]", want_vendor[v], name, v, d));
        }
        for ((v, d, sv, sd), name) in &want_subsystem {
            prop_assert_eq!(ids.subsystem(*v, *d, *sv, *sd), Some(name.as_str()));
        }
    }
}
