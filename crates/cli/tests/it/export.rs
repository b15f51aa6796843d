//! Claims about `export`: Prometheus metrics and NFD feature lines from lab snapshots, checked against
//! `list --json`; `-o` writes atomically.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::util::{assert_contains, assert_exit, err, json, mkfifo, ok_out, on_lab};

/// Samples as `name{labels}` -> value; checks every family has HELP and TYPE before its samples.
fn samples(t: &str) -> BTreeMap<String, f64> {
    let mut typed = Vec::new();
    let mut out = BTreeMap::new();
    for l in t.lines() {
        if let Some(r) = l.strip_prefix("# TYPE ") {
            let (name, kind) = r.split_once(' ').unwrap();
            assert_eq!(kind, "gauge");
            typed.push(name.to_string());
        } else if l.starts_with("# HELP ") {
        } else {
            let (k, v) = l.rsplit_once(' ').unwrap();
            let name = k.split('{').next().unwrap();
            assert!(typed.iter().any(|t| t == name), "{name} has no TYPE line before it");
            out.insert(k.to_string(), v.parse().unwrap());
        }
    }
    out
}

#[test]
fn prometheus_metrics_agree_with_the_listing() {
    for snap in ["lab-everything.json", "lab-switch.json", "lab-amd-mixed.json"] {
        let m = samples(&ok_out(&on_lab(snap, &["export", "--format", "prometheus"])));
        let list = json(&on_lab(snap, &["--json", "list"]));
        let groups = list["groups"].as_array().unwrap();
        assert_eq!(m["iommuctl_iommu_enabled"], 1.0);
        assert_eq!(m["iommuctl_iommu_groups"], groups.len() as f64, "{snap}");
        for g in groups {
            let id = g["id"].as_u64().unwrap();
            let devs = g["devices"].as_array().unwrap();
            assert_eq!(m[&format!("iommuctl_group_devices{{group=\"{id}\"}}")], devs.len() as f64);
            let viable =
                devs.iter().all(|d| matches!(d["driver"].as_str(), None | Some("vfio-pci") | Some("pcieport")));
            assert_eq!(
                m[&format!("iommuctl_group_viable{{group=\"{id}\"}}")],
                f64::from(u8::from(viable)),
                "{snap} {id}"
            );
            for d in devs {
                let k = format!(
                    "iommuctl_device_bound_vfio{{address=\"{}\",group=\"{id}\"}}",
                    d["address"].as_str().unwrap()
                );
                assert_eq!(m[&k], f64::from(u8::from(d["driver"] == "vfio-pci")));
            }
        }
    }
}

#[test]
fn a_group_with_a_host_driver_is_not_viable() {
    // lab-everything: the NVMe at 0b:00.0 is on nvme, alone in group 20.
    let m = samples(&ok_out(&on_lab("lab-everything.json", &["export", "--format", "prometheus"])));
    assert_eq!(m["iommuctl_group_viable{group=\"20\"}"], 0.0);
    assert_eq!(m["iommuctl_group_viable{group=\"9\"}"], 1.0);
}

#[test]
fn nfd_counts_gpus_and_nics_alone_in_their_group_or_with_only_bridges() {
    for snap in ["lab-everything.json", "lab-switch.json", "lab-amd-mixed.json", "lab-pxb.json"] {
        let t = ok_out(&on_lab(snap, &["export", "--format", "nfd"]));
        let list = json(&on_lab(snap, &["--json", "list"]));
        let (mut gpus, mut nics) = (0, 0);
        for g in list["groups"].as_array().unwrap() {
            let eps: Vec<&Value> = g["devices"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| !d["class_id"].as_str().unwrap().starts_with("0604"))
                .collect();
            if let [one] = eps.as_slice() {
                let c = one["class_id"].as_str().unwrap();
                gpus += usize::from(c.starts_with("03"));
                nics += usize::from(c.starts_with("02"));
            }
        }
        let groups = list["groups"].as_array().unwrap().len();
        assert_eq!(
            t,
            format!(
                "feature.node.kubernetes.io/iommu-enabled=true\nfeature.node.kubernetes.io/iommu-groups={groups}\n\
                 feature.node.kubernetes.io/iommu-isolated-gpus={gpus}\nfeature.node.kubernetes.io/iommu-isolated-nics={nics}\n"
            ),
            "{snap}"
        );
    }
}

#[test]
fn output_file_is_written_atomically_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("iommu.prom");
    std::fs::write(&f, "old").unwrap();
    let o = on_lab("lab-switch.json", &["export", "--format", "prometheus", "-o", f.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert!(o.stdout.is_empty());
    assert!(std::fs::read_to_string(&f).unwrap().contains("iommuctl_iommu_groups 7\n"));
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(names, ["iommu.prom"], "no temporary file left behind");
}

#[test]
fn unwritable_output_names_the_file_and_exits_4() {
    let o = on_lab("lab-switch.json", &["export", "--format", "nfd", "-o", "/nonexistent-dir/x.features"]);
    assert_exit(&o, 4);
    assert_contains(&err(&o), "/nonexistent-dir/x.features");
}

#[test]
fn bad_format_and_json_are_bad_input() {
    assert_eq!(on_lab("lab-switch.json", &["export", "--format", "csv"]).status.code(), Some(2));
    let o = on_lab("lab-switch.json", &["--json", "export", "--format", "nfd"]);
    assert_exit(&o, 2);
    assert_contains(&err(&o), "--json");
}

#[test]
fn output_to_a_fifo_or_device_is_written_through_not_replaced() {
    // As root, renaming a temporary file over `-o /dev/null` would turn /dev/null into a regular file
    // for the whole machine (it happened once). A FIFO stands in for such special files here.
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("metrics.fifo");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let o = on_lab("lab-everything.json", &["export", "--format", "prometheus", "-o", fifo.to_str().unwrap()]);
    assert_exit(&o, 0);
    // Checked before joining: had the FIFO been replaced, the reader would wait forever.
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");
    let got = reader.join().unwrap();
    assert_contains(&got, "iommuctl_iommu_groups 25");
}
