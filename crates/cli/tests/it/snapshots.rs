//! Every lab snapshot under `snapshots/` (captured inside real kernels) must be predicted exactly:
//! the same partition and the same group numbers as the kernel made.

use std::path::Path;

use serde_json::Value;

use crate::util::{addresses, err, from, lab_snapshots};

fn run_json(snap: &Path, args: &[&str]) -> (Option<i32>, Value) {
    let o = from(snap, args);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{} {args:?}: not JSON ({e}): {}", snap.display(), err(&o)));
    (o.status.code(), v)
}

/// The groups with their numbers, each sorted.
fn id_partition(v: &Value) -> Vec<(u64, Vec<String>)> {
    let mut out: Vec<(u64, Vec<String>)> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let mut d = addresses(g);
            d.sort();
            (g["id"].as_u64().unwrap(), d)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn predictions_from_lab_snapshots_match_the_kernel_groups_and_numbers() {
    for s in lab_snapshots() {
        let (code, diff) = run_json(&s, &["predict", "--diff", "--json"]);
        assert_eq!(code, Some(0), "{}: {}", s.display(), diff["differences"]);
        let (_, list) = run_json(&s, &["list", "--json"]);
        let (_, pred) = run_json(&s, &["predict", "--json"]);
        assert_eq!(id_partition(&pred), id_partition(&list), "{}", s.display());
    }
}

#[test]
fn explain_works_for_every_device_of_every_lab_snapshot() {
    for s in lab_snapshots() {
        let (_, list) = run_json(&s, &["list", "--json"]);
        for g in list["groups"].as_array().unwrap() {
            for d in g["devices"].as_array().unwrap() {
                let a = d["address"].as_str().unwrap();
                let (code, e) = run_json(&s, &["explain", a, "--json"]);
                assert_eq!(code, Some(0), "{} {a}", s.display());
                assert_eq!(e["kernel_agrees"], true, "{} {a}: {e}", s.display());
                assert!(!e["sentences"].as_array().unwrap().is_empty());
            }
        }
    }
}
