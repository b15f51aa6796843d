//! `predict --what-if` and `explain --slots` on lab snapshots (real kernels' config space; see
//! snapshots/README.md). crates/lab/tests/whatif.rs checks what-if predictions against kernels booted
//! with the parameter.

use serde_json::Value;

use crate::util::{assert_contains, assert_exit, err, json, on_lab, out};

fn changed(v: &Value) -> Vec<Vec<String>> {
    v["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["today"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect())
        .collect()
}

#[test]
fn acs_override_downstream_splits_every_port_without_acs_and_warns() {
    let o = on_lab("lab-everything.json", &["predict", "--json", "--what-if", "acs-override=downstream"]);
    assert_exit(&o, 0);
    let v = json(&o);
    assert_eq!(v["today_groups"], 25);
    // Root ports 00:03.0, 00:04.0, the 00:1d.x pair and the switch's downstream ports have no ACS.
    assert_eq!(
        changed(&v),
        vec![
            vec!["0000:00:03.0", "0000:02:00.0"],
            vec!["0000:00:04.0", "0000:03:00.0"],
            vec!["0000:00:1d.0", "0000:00:1d.1", "0000:0e:00.0", "0000:0f:00.0"],
            vec!["0000:05:00.0", "0000:06:00.0"],
            vec!["0000:05:01.0", "0000:07:00.0"],
        ]
    );
    assert_eq!(v["groups"].as_array().unwrap().len(), 32);
    let warnings = v["warnings"].to_string();
    assert!(warnings.contains("not in mainline") && warnings.contains("peer-to-peer"), "{warnings}");
    assert_eq!(v["params"], serde_json::json!(["pcie_acs_override=downstream"]));
}

#[test]
fn override_never_touches_functions_with_an_acs_capability() {
    // 00:1c.0/1 are multifunction root ports WITH ACS; the override ignores them even by ID.
    let o = on_lab("lab-everything.json", &["predict", "--json", "--what-if", "acs-override=id:1b36:000c"]);
    let v = json(&o);
    let c = changed(&v);
    assert!(c.iter().all(|g| !g.contains(&"0000:00:1c.0".to_string())), "{c:?}");
    // ...but it claims the ones without (00:03.0, 00:1d.0, 00:1d.1 are 1b36:000c without ACS).
    assert!(c.contains(&vec!["0000:00:03.0".to_string(), "0000:02:00.0".to_string()]), "{c:?}");
}

#[test]
fn multifunction_override_leaves_root_ports_alone() {
    let o = on_lab("lab-mf-rp-noacs.json", &["predict", "--json", "--what-if", "acs-override=multifunction"]);
    let v = json(&o);
    assert!(changed(&v).is_empty(), "{v}");
    assert!(v["warnings"].to_string().contains("changes nothing"), "{}", v["warnings"]);
    let o = on_lab("lab-mf-rp-noacs.json", &["predict", "--json", "--what-if", "acs-override=downstream"]);
    assert_eq!(json(&o)["groups"].as_array().unwrap().len(), 11);
}

#[test]
fn config_acs_clearing_flags_merges_and_warns_about_old_kernels() {
    let o = on_lab("lab-everything.json", &["predict", "--what-if", "config_acs=000x0@0000:00:02.0"]);
    let text = out(&o);
    assert_contains(&text, "{0000:00:02.0} merges into {0000:00:02.0 0000:01:00.0}");
    assert_contains(&text, "Linux 6.1, which ignores pci=config_acs=");
    // The same change on the 6.12 capture: no old-kernel warning.
    let o = on_lab("lab-k612-everything.json", &["predict", "--what-if", "config_acs=000x0@0000:00:02.0"]);
    assert!(!out(&o).contains("ignores pci=config_acs="));
    // Setting flags the kernel enables anyway changes nothing.
    let o = on_lab("lab-everything.json", &["predict", "--json", "--what-if", "config_acs=11x11@0000:00:02.0"]);
    assert!(changed(&json(&o)).is_empty());
    // Undefined bits: the kernel rejects the entry, and so does the model.
    let o = on_lab("lab-everything.json", &["predict", "--json", "--what-if", "config_acs=100000000@0000:00:02.0"]);
    let v = json(&o);
    assert!(changed(&v).is_empty());
    assert!(v["warnings"].to_string().contains("Invalid ACS flags"), "{}", v["warnings"]);
}

#[test]
fn bad_what_if_values_exit_2_naming_the_value() {
    for bad in
        ["foo=1", "acs-override=bogus", "acs-override=id:zzzz:0001", "config_acs=00x00", "config_acs=0q0@00:02.0"]
    {
        let o = on_lab("lab-everything.json", &["predict", "--what-if", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", err(&o));
        assert!(err(&o).contains(bad.split('=').next().unwrap()), "{bad}: {}", err(&o));
    }
    let o = on_lab("lab-everything.json", &["predict", "--diff", "--what-if", "acs-override=downstream"]);
    assert_exit(&o, 2);
}

#[test]
fn slots_name_the_ports_that_isolate_and_why_the_others_do_not() {
    let o = on_lab("lab-everything.json", &["explain", "0000:0e:00.0", "--slots", "--json"]);
    assert_exit(&o, 0);
    let v = json(&o);
    assert_eq!(v["current_slot"], "0000:00:1d.0");
    let slots = v["slots"].as_array().unwrap();
    let get = |p: &str| slots.iter().find(|s| s["port"] == p).unwrap_or_else(|| panic!("no slot {p}"));
    let isolating: Vec<&str> =
        slots.iter().filter(|s| s["isolates"] == true).map(|s| s["port"].as_str().unwrap()).collect();
    assert_eq!(
        isolating,
        [
            "0000:00:02.0",
            "0000:00:05.0",
            "0000:00:06.0",
            "0000:00:08.0",
            "0000:00:1c.0",
            "0000:00:1c.1",
            "0000:80:00.0"
        ]
    );
    let here = get("0000:00:1d.0");
    assert_eq!(here["isolates"], false);
    assert_eq!(here["blocker"][0], "0000:00:1d.0");
    assert_eq!(here["blocker"][1]["verdict"], "no-capability");
    // A downstream port behind an ACS-less switch port shares with that port.
    assert_eq!(get("0000:05:00.0")["shares_with"], serde_json::json!(["0000:05:00.0", "0000:06:00.0"]));
    let text = on_lab("lab-everything.json", &["explain", "0000:0e:00.0", "--slots"]);
    let t = out(&text);
    assert_contains(&t, "0000:00:1d.0 (root port, holds {0000:0e:00.0})  <- its slot now");
}

#[test]
fn slots_of_a_multifunction_card_say_its_functions_move_together() {
    let o = on_lab("lab-everything.json", &["explain", "0000:00:10.0", "--slots"]);
    let t = out(&o);
    assert_contains(&t, "{0000:00:10.1} is another function on the same card");
}
