//! `cdi` and `kubevirt` on lab snapshots: the CDI spec validates against the CDI project's own JSON schema
//! (vendored in tests/fixtures/cdi, see its README), one device per group with the group's VFIO nodes;
//! unviable groups are refused; KubeVirt entries cover every endpoint and warn about shared selectors.

use std::path::PathBuf;

use serde_json::{json as j, Value};

use crate::util::{
    assert_contains, assert_exit, device_mut, err, from, json, lab_json, ok_out, on_lab, out, temp_json,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cdi")
}

/// Serves `defs.json` (which `schema.json` names by a relative `$ref`) from the vendored copy; nothing
/// else, and never from the network.
struct Vendored;

impl jsonschema::Retrieve for Vendored {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        if uri.as_str().ends_with("/defs.json") {
            Ok(serde_json::from_slice(&std::fs::read(fixtures().join("defs.json"))?)?)
        } else {
            Err(format!("not vendored: {}", uri.as_str()).into())
        }
    }
}

fn cdi_schema() -> jsonschema::Validator {
    let schema: Value = serde_json::from_slice(&std::fs::read(fixtures().join("schema.json")).unwrap()).unwrap();
    jsonschema::options()
        .with_base_uri("file:///cdi/schema.json")
        .with_retriever(Vendored)
        .build(&schema)
        .expect("the vendored CDI schema compiles")
}

#[track_caller]
fn assert_valid(spec: &Value) {
    let v = cdi_schema();
    let errors: Vec<String> = v.iter_errors(spec).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "not a valid CDI spec: {errors:?}\n{spec:#}");
}

/// The CDI parser's name rule (pkg/parser, ValidateDeviceName).
fn valid_device_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_-.:".contains(c))
}

fn nodes(dev: &Value) -> Vec<String> {
    dev["containerEdits"]["deviceNodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["path"].as_str().unwrap().into())
        .collect()
}

#[test]
fn the_schema_is_really_checked() {
    let v = cdi_schema();
    assert!(!v.is_valid(&j!({"cdiVersion": "1.1.0", "devices": []})), "kind is required");
    assert!(!v.is_valid(&j!({"cdiVersion": "1.1.0", "kind": "a/b", "devices": [{"name": "x"}]})), "edits required");
    let bad_node = j!({"cdiVersion": "1.1.0", "kind": "a/b",
        "devices": [{"name": "1", "containerEdits": {"deviceNodes": [{"major": 1}]}}]});
    assert!(!v.is_valid(&bad_node), "a device node needs a path (from defs.json)");
}

#[test]
fn cdi_spec_of_lab_groups_validates_with_one_device_per_group_and_legacy_nodes() {
    // 0e:00.0 and 0f:00.0 share group 13 (root ports 1d.0/1d.1 without ACS); 06:00.0 is alone in 17.
    let o = on_lab("lab-everything.json", &["cdi", "0000:0e:00.0", "0f:00.0", "06:00.0"]);
    let spec: Value = serde_json::from_str(&ok_out(&o)).unwrap();
    assert_valid(&spec);
    assert_eq!(spec["cdiVersion"], "1.1.0");
    assert_eq!(spec["kind"], "iommuctl.dev/vfio");
    let devs = spec["devices"].as_array().unwrap();
    let names: Vec<&str> = devs.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["13", "17"], "one device per group, two targets in group 13 give one");
    assert!(names.iter().all(|n| valid_device_name(n)));
    assert_eq!(nodes(&devs[0]), ["/dev/vfio/vfio", "/dev/vfio/13"]);
    assert_eq!(devs[0]["annotations"]["iommuctl.dev/pci-addresses"], "0000:0e:00.0,0000:0f:00.0");
    // Nothing is on vfio-pci in the lab: the nodes appear once bound, and stderr says so.
    assert_contains(&err(&o), "not on vfio-pci yet");
    // --json changes nothing: the spec is JSON.
    let again = on_lab("lab-everything.json", &["--json", "cdi", "0e:00.0", "0f:00.0", "06:00.0"]);
    assert_eq!(out(&again), out(&o));
}

#[test]
fn cdi_refuses_a_group_vfio_would_not_open_and_names_the_device() {
    // 0b:00.0 is on nvme.
    let o = on_lab("lab-everything.json", &["cdi", "06:00.0", "0b:00.0"]);
    assert_exit(&o, 3);
    assert!(out(&o).is_empty(), "nothing printed: {}", out(&o));
    let e = err(&o);
    assert_contains(&e, "IOMMU group 20 is not viable");
    assert_contains(&e, "0000:0b:00.0 is on nvme");
}

#[test]
fn cdi_kind_is_validated_and_bridges_only_groups_are_a_negative_answer() {
    for bad in ["vfio", "iommuctl.dev/", "iommuctl.dev/a/b", "9x.dev/vfio", "x/vfio-"] {
        let o = on_lab("lab-everything.json", &["cdi", "--kind", bad, "06:00.0"]);
        assert_exit(&o, 2);
    }
    let o = on_lab("lab-everything.json", &["cdi", "--kind", "example.com/gpu", "06:00.0"]);
    let spec: Value = serde_json::from_str(&ok_out(&o)).unwrap();
    assert_valid(&spec);
    assert_eq!(spec["kind"], "example.com/gpu");
    // 00:1c.0 is a root port alone in group 11.
    assert_exit(&on_lab("lab-everything.json", &["cdi", "00:1c.0"]), 1);
    // An lspci dump knows no groups.
    assert_exit(&crate::util::on_dump("everything-xxxx.txt", &["cdi", "06:00.0"]), 2);
}

/// lab-k612-everything with group 13 bound to vfio-pci and VFIO cdevs, as a 6.12 kernel with iommufd shows
/// it; `dev_vfio` as given.
fn k612_with_cdevs(dev_vfio: bool) -> tempfile::NamedTempFile {
    let mut s = lab_json("lab-k612-everything.json");
    for (a, cdev) in [("0000:0e:00.0", "vfio0"), ("0000:0f:00.0", "vfio1")] {
        let d = device_mut(&mut s, a);
        d["driver"] = j!("vfio-pci");
        d["vfio_cdev"] = j!(cdev);
    }
    s["readiness"] = j!({"dev_iommu": true, "dev_vfio": dev_vfio, "vfio_cdev": true, "boot_loaders": []});
    temp_json(&s)
}

#[test]
fn cdi_uses_iommufd_nodes_where_the_host_has_them() {
    let f = k612_with_cdevs(true);
    let spec: Value = serde_json::from_str(&ok_out(&from(f.path(), &["cdi", "0e:00.0"]))).unwrap();
    assert_valid(&spec);
    assert_eq!(
        nodes(&spec["devices"][0]),
        ["/dev/iommu", "/dev/vfio/devices/vfio0", "/dev/vfio/devices/vfio1", "/dev/vfio/vfio", "/dev/vfio/13"],
        "both forms when both exist"
    );
    let o = from(f.path(), &["cdi", "--nodes", "iommufd", "0e:00.0"]);
    let spec: Value = serde_json::from_str(&ok_out(&o)).unwrap();
    assert_eq!(nodes(&spec["devices"][0]), ["/dev/iommu", "/dev/vfio/devices/vfio0", "/dev/vfio/devices/vfio1"]);
    assert!(!err(&o).contains("not on vfio-pci"), "{}", err(&o));
    // No /dev/vfio/vfio (a kernel without the container): only the cdev form.
    let f = k612_with_cdevs(false);
    let spec: Value = serde_json::from_str(&ok_out(&from(f.path(), &["cdi", "0e:00.0"]))).unwrap();
    assert_eq!(nodes(&spec["devices"][0]), ["/dev/iommu", "/dev/vfio/devices/vfio0", "/dev/vfio/devices/vfio1"]);
    assert_exit(&from(f.path(), &["cdi", "--nodes", "container", "0e:00.0"]), 1);
    // Group 17 has no cdev (not on vfio-pci): iommufd nodes cannot be named.
    let o = from(f.path(), &["cdi", "--nodes", "iommufd", "06:00.0"]);
    assert_exit(&o, 1);
    assert_contains(&err(&o), "0000:06:00.0 has no VFIO device cdev");
}

#[test]
fn cdi_writes_the_spec_atomically_with_o() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iommuctl.json");
    let o = on_lab("lab-everything.json", &["cdi", "06:00.0", "-o", path.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert!(out(&o).is_empty());
    let spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_valid(&spec);
}

// --- kubevirt ---------------------------------------------------------------------------------------------

fn entries(v: &Value) -> &Vec<Value> {
    v["spec"]["configuration"]["permittedHostDevices"]["pciHostDevices"].as_array().unwrap()
}

#[test]
fn kubevirt_lists_every_endpoint_of_the_groups_once_per_selector() {
    let v = json(&on_lab("lab-everything.json", &["--json", "kubevirt", "0e:00.0"]));
    // Group 13: 0e:00.0 (1234:11e8, QEMU edu) and 0f:00.0 (8086:10d3, e1000e).
    assert_eq!(
        entries(&v),
        &vec![
            j!({"pciVendorSelector": "1234:11E8", "resourceName": "iommuctl.dev/1234-11e8", "externalResourceProvider": false}),
            j!({"pciVendorSelector": "8086:10D3", "resourceName": "iommuctl.dev/8086-10d3", "externalResourceProvider": false}),
        ]
    );
    let text = ok_out(&on_lab("lab-everything.json", &["kubevirt", "--resource-prefix", "example.com", "0e:00.0"]));
    for want in [
        "spec:\n  configuration:\n    permittedHostDevices:\n      pciHostDevices:\n",
        "        # group 13: 0000:0e:00.0\n        - pciVendorSelector: \"1234:11E8\"\n          resourceName: \"example.com/1234-11e8\"\n          externalResourceProvider: false\n",
    ] {
        assert_contains(&text, want);
    }
}

#[test]
fn kubevirt_warns_when_targets_share_a_selector_but_not_a_group() {
    // 06:00.0 (group 17) and 0d:00.0 (group 22) are both 8086:10d3.
    let o = on_lab("lab-everything.json", &["kubevirt", "06:00.0", "0d:00.0"]);
    assert_exit(&o, 0);
    let e = err(&o);
    assert_contains(
        &e,
        "0000:06:00.0 (group 17) and 0000:0d:00.0 (group 22) share vendor:device 8086:10D3 but not a group",
    );
    assert_contains(&e, "may get either");
    assert_eq!(out(&o).matches("pciVendorSelector").count(), 1, "one entry for one selector");
    // One target whose ID other groups have too: warned as well.
    assert_contains(
        &err(&on_lab("lab-everything.json", &["kubevirt", "06:00.0"])),
        "8086:10D3 also matches 0000:01:00.0 (group 15)",
    );
}

#[test]
fn kubevirt_refuses_unviable_groups_and_bad_prefixes() {
    assert_exit(&on_lab("lab-everything.json", &["kubevirt", "0b:00.0"]), 3);
    for bad in ["Example.com", "kubernetes.io", "a/b", "-x.io"] {
        assert_exit(&on_lab("lab-everything.json", &["kubevirt", "--resource-prefix", bad, "06:00.0"]), 2);
    }
}
