//! The unchanged `edu` driver (`iommu_drivers::edu::run`) against the software IOMMU and edu model of
//! `iommu-sim` through `iommu_sim::backend`: every step passes, the two blocked DMAs are recorded as
//! faults with the device's requester ID and the IOVA it used, and they are listed under `"faults"`.

use iommu_backend::{DmaBackend, DmaSpace};
use iommu_drivers::{edu, Reporter};
use iommu_sim::backend as sim_backend;
use serde_json::Value;

#[test]
fn the_edu_driver_runs_unchanged_on_the_simulator_and_lists_its_blocked_dmas_faults() {
    let (dev, backend) = sim_backend::edu("0000:03:00.1").unwrap();
    let space = DmaSpace::new(backend.clone(), &[]).unwrap().with_dma_mask(edu::DMA_MASK_BITS);
    let mut lines = Vec::new();
    let ok = {
        let mut r = Reporter::new(|l: &str| lines.push(l.to_string()));
        edu::run(&dev, &space, &mut r).unwrap();
        r.all_ok()
    };
    assert!(ok, "{lines:#?}");
    let steps: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    for want in ["open", "id", "liveness", "factorial", "bus-master", "dma-roundtrip", "dma-done-irq-msi"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for want in ["dma-done-irq-intx", "sg-coalesced-roundtrip", "iovas-below-dma-mask", "reset"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let step = |name: &str| steps.iter().find(|s| s["step"] == name).unwrap();

    for name in ["isolation-unmapped-iova-blocked", "isolation-after-unmap-blocked"] {
        let s = step(name);
        assert_eq!(s["ok"], true, "{s}");
        let iova = s["iova"].as_u64().unwrap();
        let faults = s["faults"].as_array().unwrap_or_else(|| panic!("no faults in {s}"));
        assert!(!faults.is_empty(), "{s}");
        for f in faults {
            assert_eq!(f["rid"], "03:00.1", "{f}");
            assert_eq!(f["addr"].as_u64(), Some(iova), "{f}");
            assert_eq!(f["access"], "write", "{f}");
            assert_eq!(f["reason"], "not-mapped", "{f}");
            assert_eq!(f["vtd_code"], "0x05", "{f}");
        }
    }
    assert_ne!(step("isolation-unmapped-iova-blocked")["iova"], step("isolation-after-unmap-blocked")["iova"]);
    // Only the blocked steps fault, and only they list faults.
    assert_eq!(backend.recorded_faults().len(), 2);
    assert_eq!(steps.iter().filter(|s| s.get("faults").is_some()).count(), 2);
    assert!(backend.0.mappings().is_empty(), "every mapping was undone");
    assert_eq!(space.stats().mappings, 0);
}

#[test]
fn backends_that_cannot_observe_faults_record_none_by_default() {
    let iommu = iommu_backend::fake::FakeIommu::new();
    assert!(iommu.recorded_faults().is_empty());
}

#[test]
fn a_bad_address_is_an_error() {
    assert!(sim_backend::edu("not-an-address").is_err());
}
