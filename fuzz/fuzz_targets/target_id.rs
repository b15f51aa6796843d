//! `bind::resolve_target` on arbitrary text against a small snapshot: a `vvvv:dddd` ID, an address, or
//! garbage. No panic; an answer is always a device of the snapshot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use iommu_host::{HostDevice, Snapshot};
use iommu_pci::PciAddress;

fn device(addr: &str, vendor: u16, dev: u16) -> HostDevice {
    let mut d = HostDevice::new(addr.parse::<PciAddress>().expect("address"));
    let mut c = vec![0u8; 64];
    c[0..2].copy_from_slice(&vendor.to_le_bytes());
    c[2..4].copy_from_slice(&dev.to_le_bytes());
    d.config = c;
    d
}

fuzz_target!(|text: &str| {
    let snap = Snapshot {
        devices: vec![
            device("0000:00:01.0", 0x8086, 0x10d3),
            device("0000:00:02.0", 0x8086, 0x10d3),
            device("0000:01:00.0", 0x1b36, 0x0010),
        ],
        ..Snapshot::default()
    };
    if let Ok(a) = iommu_host::bind::resolve_target(&snap, text) {
        assert!(snap.device(a).is_some());
    }
});
