//! The tour as the CLI will print it: JSON with the steps, the fault records and the counters.

#[test]
fn the_tour_report_serializes_with_steps_faults_and_counters() {
    let r = iommu_sim::tour().unwrap();
    assert!(r.ok, "{r}");
    let v = serde_json::to_value(&r).unwrap();
    let names: Vec<&str> = v["mechanisms"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["translation", "bounce-buffer", "coalescing", "isolation"]);
    let f = &v["faults"][0];
    for key in ["rid", "addr", "access", "reason", "vtd_code", "domain", "time_ns"] {
        assert!(f.get(key).is_some(), "fault record lacks {key}: {f}");
    }
    assert_eq!(f["rid"], "01:00.0");
    assert!(v["stats"]["iotlb"]["hits"].as_u64().unwrap() >= 1);
    assert!(v["stats"]["bounce"]["bytes_to_cpu"].as_u64().unwrap() >= 512);
    assert_eq!(v["groups"].as_array().unwrap().len(), 3);
    // Deterministic: the same report every time.
    assert_eq!(serde_json::to_value(iommu_sim::tour().unwrap()).unwrap(), v);
}
