//! `iommuctl libvirt TARGET`: libvirt `<hostdev>` elements for every endpoint of a device's IOMMU group;
//! with `--guest-slot`, pinned to the guest addresses of the QEMU layout (see `qemu`).

use std::fmt;

use iommu_pci::PciAddress;
use serde::Serialize;

use crate::cmd::qemu::qemu_layout;
use crate::output::{Outcome, Sorted};
use crate::source::{endpoints, Source};

#[derive(Serialize)]
struct LibvirtDevice {
    address: PciAddress,
    domain: String,
    bus: String,
    slot: String,
    function: String,
    xml: String,
}

/// `iommuctl libvirt TARGET [--guest-slot SLOT]`. With a guest slot, each `<hostdev>` also gets the guest
/// `<address>` of the QEMU layout (same slots, functions and `multifunction='on'`), on guest bus 0.
///
/// With `iommufd`, each `<hostdev>` carries `<driver iommufd='yes'/>`: libvirt opens `/dev/iommu` and the
/// device cdev and hands them to QEMU's iommufd backend.
pub fn run(src: &Source, target: &str, guest_slot: Option<u8>, iommufd: bool) -> anyhow::Result<Outcome> {
    let (addr, group, eps) = endpoints(&src.snapshot, target)?;
    let layout = match guest_slot {
        Some(first) => Some(qemu_layout(&eps, first)?),
        None => None,
    };
    let devices: Vec<LibvirtDevice> = eps
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let domain = format!("{:#06x}", a.domain);
            let bus = format!("{:#04x}", a.bus);
            let slot = format!("{:#04x}", a.device);
            let function = format!("{:#x}", a.function);
            let guest = layout.as_ref().map(|l| {
                let g = &l[i];
                format!(
                    "  <address type='pci' domain='0x0000' bus='0x00' slot='{:#04x}' function='{:#x}'{}/>\n",
                    g.guest_slot,
                    g.guest_function,
                    if g.multifunction { " multifunction='on'" } else { "" }
                )
            });
            let driver = if iommufd { "  <driver iommufd='yes'/>\n" } else { "" };
            let xml = format!(
                "<hostdev mode='subsystem' type='pci' managed='yes'>\n{driver}  <source>\n    <address domain='{domain}' \
                 bus='{bus}' slot='{slot}' function='{function}'/>\n  </source>\n{}</hostdev>\n",
                guest.unwrap_or_default()
            );
            LibvirtDevice { address: *a, domain, bus, slot, function, xml }
        })
        .collect();
    let xml: String = devices.iter().map(|d| d.xml.as_str()).collect();
    Ok(Outcome::report(Sorted(LibvirtReport { target: addr, group, devices, xml })))
}

/// The `<hostdev>` elements of a group.
#[derive(Serialize)]
pub struct LibvirtReport {
    target: PciAddress,
    group: u32,
    devices: Vec<LibvirtDevice>,
    xml: String,
}

impl fmt::Display for LibvirtReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "<!-- IOMMU group {}: every endpoint; put these in the domain's <devices> -->", self.group)?;
        f.write_str(&self.xml)
    }
}
