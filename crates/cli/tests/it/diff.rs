//! `diff A B` on lab snapshots: the same topology under Debian's 6.1 and 6.12 kernels, and hand-edited
//! copies (an ACS capability or control bit changed on one port, a kernel parameter added, a device
//! removed), "rebooted" by giving them the groups iommuctl predicts, which match the lab kernels'.

use serde_json::{json as j, Value};

use crate::util::{
    acs_offset, assert_contains, assert_exit, config_bytes, device_mut, err, iommuctl, json, lab, lab_json,
    lspci_fixture, ok_out, out, rebooted, set_config_bytes, temp_json,
};

fn diff(a: &str, b: &str, json_out: bool) -> std::process::Output {
    if json_out {
        iommuctl(&["--json", "diff", a, b])
    } else {
        iommuctl(&["diff", a, b])
    }
}

fn path(name: &str) -> String {
    lab(name).to_str().unwrap().to_string()
}

fn kinds(v: &Value) -> Vec<String> {
    v["groups"].as_array().unwrap().iter().map(|g| g["kind"].as_str().unwrap().to_string()).collect()
}

#[test]
fn the_same_snapshot_is_the_same() {
    let p = path("lab-switch.json");
    let o = diff(&p, &p, false);
    assert_exit(&o, 0);
    assert_contains(&out(&o), "Same.");
    let v = json(&diff(&p, &p, true));
    assert_eq!(v["same"], true);
}

#[test]
fn kernel_6_1_and_6_12_on_the_same_topology_differ_in_the_kernel_only() {
    let (a, b) = (path("lab-everything.json"), path("lab-k612-everything.json"));
    let o = diff(&a, &b, false);
    assert_exit(&o, 1);
    let t = out(&o);
    assert_contains(&t, "the kernel differs: 6.1.0-56-amd64 -> 6.12.117+deb12-amd64");
    assert_contains(&t, "Devices: the same 38 functions, none added, removed or moved.");
    assert_contains(&t, "Groups (the kernels' own): the same 25 groups, with the same members and numbers.");
    assert_contains(&t, "Different: only the kernel.");
    let v = json(&diff(&a, &b, true));
    assert_eq!(v["same"], false);
    assert_eq!(v["groups_from"], "kernel");
    assert_eq!(v["environment"].as_array().unwrap().len(), 1);
    assert_eq!(v["environment"][0]["item"], "kernel");
    assert_eq!(v["environment"][0]["before"], "6.1.0-56-amd64");
    assert!(v["groups"].as_array().unwrap().is_empty());
    assert!(v["acs"].as_array().unwrap().is_empty());
    assert!(v["notes"].as_array().unwrap().is_empty(), "both kernels made the groups iommuctl predicts");
}

/// lab-everything with `edit` applied to 00:1c.0's config space (a multifunction root port with ACS; its
/// group 11 holds it alone, 0c:00.0 below it is alone in group 21).
fn edited_port(edit: impl FnOnce(&mut Vec<u8>, usize)) -> tempfile::NamedTempFile {
    let mut s = lab_json("lab-everything.json");
    let d = device_mut(&mut s, "0000:00:1c.0");
    let mut cfg = config_bytes(d);
    let off = acs_offset(&cfg);
    edit(&mut cfg, off);
    set_config_bytes(d, &cfg);
    temp_json(&rebooted(&s))
}

#[test]
fn an_acs_capability_gone_from_a_port_merges_the_group_below_it_and_says_so() {
    // The ACS capability ID becomes a vendor-specific one (0x000b): the port has no ACS any more.
    let f = edited_port(|cfg, off| cfg[off..off + 2].copy_from_slice(&0x000bu16.to_le_bytes()));
    let a = path("lab-everything.json");
    let o = diff(&a, f.path().to_str().unwrap(), true);
    assert_exit(&o, 1);
    let v = json(&o);
    let merged = &v["groups"].as_array().unwrap().iter().find(|g| g["kind"] == "merged").expect("a merge")["causes"];
    let acs = merged.as_array().unwrap().iter().find(|c| c["cause"] == "acs").expect("an ACS cause");
    assert_eq!(acs["device"], "0000:00:1c.0");
    assert_eq!(acs["verdict_before"]["verdict"], "flags");
    assert_eq!(acs["verdict_after"]["verdict"], "no-capability");
    let change = v["acs"].as_array().unwrap().iter().find(|c| c["device"] == "0000:00:1c.0").unwrap();
    assert_eq!(change["registers_after"]["state"], "absent");
    assert_eq!(change["now_missing"], j!(["SV", "RR", "CR", "UF"]));
    let t = out(&diff(&a, f.path().to_str().unwrap(), false));
    assert_contains(&t, "merged: 11 {0000:00:1c.0} + 21 {0000:0c:00.0} -> 11 {0000:00:1c.0 0000:0c:00.0}");
    assert_contains(
        &t,
        "because 0000:00:1c.0 (the function that stops isolation on the way up from 0000:0c:00.0, in B)",
    );
    assert_contains(&t, "\"ACS enabled (SV RR CR UF)\" -> \"no ACS capability\": its ACS capability is gone");
    // Later groups move down by one: renumbered, because of probe order.
    assert!(kinds(&v).iter().any(|k| k == "renumbered"), "{:?}", kinds(&v));
    assert_contains(&t, "renumbered: 22 {0000:0d:00.0} -> 21 {0000:0d:00.0}");
    assert_contains(&t, "group numbers follow probe order");
}

#[test]
fn an_acs_control_bit_cleared_on_a_port_is_reported_and_changes_no_group() {
    // RR cleared in the control register (+6): the kernel sets it again at boot (pci_std_enable_acs).
    let f = edited_port(|cfg, off| cfg[off + 6] &= !0x04);
    let o = diff(&path("lab-everything.json"), f.path().to_str().unwrap(), true);
    assert_exit(&o, 1);
    let v = json(&o);
    assert!(v["groups"].as_array().unwrap().is_empty(), "{:#}", v["groups"]);
    let c = &v["acs"][0];
    assert_eq!(c["device"], "0000:00:1c.0");
    assert_eq!(c["control_cleared"], j!(["RR"]));
    assert_eq!(c["isolated_after"], true);
    let t = out(&diff(&path("lab-everything.json"), f.path().to_str().unwrap(), false));
    assert_contains(
        &t,
        "control bit RR cleared), but its verdict stays \"ACS enabled (SV RR CR UF)\", because the kernel sets",
    );
}

#[test]
fn a_kernel_parameter_added_is_the_cause_of_the_merge_it_makes() {
    let mut s = lab_json("lab-everything.json");
    let cmdline = s["kernel"]["cmdline"].as_str().unwrap().to_string();
    s["kernel"]["cmdline"] = Value::String(format!("{cmdline} pci=disable_acs_redir=0000:00:1c.0"));
    let f = temp_json(&rebooted(&s));
    let o = diff(&path("lab-everything.json"), f.path().to_str().unwrap(), true);
    assert_exit(&o, 1);
    let v = json(&o);
    let env = &v["environment"];
    assert_eq!(env[0]["item"], "cmdline");
    assert_eq!(env[0]["added"], j!(["pci=disable_acs_redir=0000:00:1c.0"]));
    let merge = v["groups"].as_array().unwrap().iter().find(|g| g["kind"] == "merged").expect("a merge");
    assert_eq!(merge["after"][0]["devices"], j!(["0000:00:1c.0", "0000:0c:00.0"]));
    let c = &merge["causes"][0];
    assert_eq!(c["cause"], "acs");
    assert_eq!(c["device"], "0000:00:1c.0");
    let change = v["acs"].as_array().unwrap().iter().find(|c| c["device"] == "0000:00:1c.0").unwrap();
    assert_eq!(change["now_missing"], j!(["RR", "CR"]));
    assert_eq!(change["registers_before"], change["registers_after"]);
    assert_contains(
        &change["because"][0].to_string(),
        "pci=disable_acs_redir= on the command line names it in B, not in A",
    );
    let t = out(&diff(&path("lab-everything.json"), f.path().to_str().unwrap(), false));
    assert_contains(&t, "the kernel command line differs: B adds pci=disable_acs_redir=0000:00:1c.0");
    assert_contains(&t, "with the same ACS registers: pci=disable_acs_redir= on the command line names it in B");
}

#[test]
fn a_device_removed_from_a_shared_group_is_the_cause_of_its_change() {
    // Group 13 is {1d.0 1d.1 0e:00.0 0f:00.0}; take 0f:00.0 away.
    let mut s = lab_json("lab-everything.json");
    s["devices"].as_array_mut().unwrap().retain(|d| d["address"] != "0000:0f:00.0");
    let f = temp_json(&rebooted(&s));
    let o = diff(&path("lab-everything.json"), f.path().to_str().unwrap(), true);
    assert_exit(&o, 1);
    let v = json(&o);
    assert_eq!(v["removed"], j!([{"address": "0000:0f:00.0", "id": "8086:10d3"}]));
    let g = &v["groups"][0];
    assert_eq!(g["kind"], "members");
    assert_eq!(g["before"][0]["id"], 13);
    let c = &g["causes"][0];
    assert_eq!(
        (c["cause"].as_str(), c["device"].as_str(), c["change"].as_str()),
        (Some("device"), Some("0000:0f:00.0"), Some("removed"))
    );
    assert_contains(
        &out(&diff(&path("lab-everything.json"), f.path().to_str().unwrap(), false)),
        "removed 0000:0f:00.0 [8086:10d3]",
    );
}

#[test]
fn a_bus_renumbering_is_a_move_not_a_removal() {
    // The device below root port 00:1c.1 (secondary bus 0x0d) appears on bus 0x42 instead.
    let mut s = lab_json("lab-everything.json");
    let port = device_mut(&mut s, "0000:00:1c.1");
    let mut cfg = config_bytes(port);
    cfg[0x19] = 0x42;
    cfg[0x1a] = 0x42;
    set_config_bytes(port, &cfg);
    let d = device_mut(&mut s, "0000:0d:00.0");
    d["address"] = j!("0000:42:00.0");
    let f = temp_json(&rebooted(&s));
    let v = json(&diff(&path("lab-everything.json"), f.path().to_str().unwrap(), true));
    assert_eq!(v["moved"], j!([{"from": "0000:0d:00.0", "to": "0000:42:00.0", "id": "8086:10d3", "same_place": true}]));
    assert!(v["added"].as_array().unwrap().is_empty() && v["removed"].as_array().unwrap().is_empty());
}

#[test]
fn an_lspci_dump_and_its_snapshot_compare_on_predicted_groups_and_dev_operands_are_checked() {
    // The 6.1 lab dump of the same topology against the snapshot: no kernel groups in the dump.
    let dump = lspci_fixture("everything-6.1-xxxx-D.txt");
    let o = iommuctl(&["--json", "diff", dump.to_str().unwrap(), &path("lab-everything.json")]);
    let v = json(&o);
    assert_eq!(v["groups_from"], "predicted");
    assert_eq!(v["a"]["kind"], "lspci dump");
    assert!(v["groups"].as_array().unwrap().is_empty(), "{:#}", v["groups"]);
    assert!(v["added"].as_array().unwrap().is_empty() && v["removed"].as_array().unwrap().is_empty(), "{v:#}");
    // Both sides on standard input, --from, and a missing file are bad input.
    assert_exit(&iommuctl(&["diff", "-", "-"]), 2);
    assert_exit(&iommuctl(&["--from", &path("lab-switch.json"), "diff", "a", "b"]), 2);
    let o = iommuctl(&["diff", "/nonexistent/a.json", &path("lab-switch.json")]);
    assert_exit(&o, 2);
    assert_contains(&err(&o), "A:");
    // Garbage is bad input, not a panic.
    let g = temp_json(&j!({"format": "nope"}));
    assert_exit(&iommuctl(&["diff", g.path().to_str().unwrap(), &path("lab-switch.json")]), 2);
}

#[test]
fn live_reads_the_host_below_root() {
    // An empty tree: no PCI functions. Against a lab snapshot everything is removed.
    let t = crate::util::Tree::new();
    let o = t.run(&["diff", &path("lab-switch.json"), "live"]);
    assert_exit(&o, 1);
    let v = json(&t.run(&["--json", "diff", "live", "live"]));
    assert_eq!(v["same"], true);
    assert_eq!(v["b"]["kind"], "live host");
    let _ = ok_out(&t.run(&["diff", "live", "live"]));
}

#[test]
fn a_bios_update_is_named_and_is_the_cause_left_when_config_space_explains_nothing() {
    // B: a BIOS update, and the kernel put 06:00.0 and 07:00.0 (groups 17 and 18) together although
    // their config spaces did not change: nothing in config space explains it.
    let mut a = lab_json("lab-everything.json");
    a["firmware"] = j!({"bios_vendor": "SeaBIOS", "bios_version": "1.16.2-debian-1.16.2-1", "bios_date": "04/01/2014"});
    let mut b = a.clone();
    b["firmware"]["bios_version"] = j!("1.17.0");
    let groups = b["groups"].as_array_mut().unwrap();
    groups.retain(|g| g["id"] != 18);
    let g17 = groups.iter_mut().find(|g| g["id"] == 17).unwrap();
    g17["devices"] = j!(["0000:05:00.0", "0000:05:01.0", "0000:06:00.0", "0000:07:00.0"]);
    for d in ["0000:05:01.0", "0000:07:00.0"] {
        device_mut(&mut b, d)["iommu_group"] = j!(17);
    }
    let (fa, fb) = (temp_json(&a), temp_json(&b));
    let o = diff(fa.path().to_str().unwrap(), fb.path().to_str().unwrap(), true);
    assert_exit(&o, 1);
    let v = json(&o);
    assert_eq!(v["environment"][0]["item"], "firmware.bios_version");
    assert_eq!(v["environment"][0]["after"], "1.17.0");
    let merge = &v["groups"][0];
    assert_eq!(merge["kind"], "merged");
    assert_eq!(merge["causes"][0]["cause"], "outside");
    assert_eq!(merge["causes"][0]["item"], "firmware.bios_version");
    assert_contains(&v["notes"].to_string(), "B: the kernel's groups differ from what iommuctl predicts");
    let t = out(&diff(fa.path().to_str().unwrap(), fb.path().to_str().unwrap(), false));
    assert_contains(&t, "the firmware differs: bios_version 1.16.2-debian-1.16.2-1 -> 1.17.0");
    assert_contains(&t, "because nothing in config space explains it; outside PCI, the firmware differs");
}
