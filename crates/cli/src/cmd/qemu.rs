//! `iommuctl qemu TARGET`: QEMU `-device vfio-pci` arguments for every endpoint of a device's IOMMU group
//! (and the layout `libvirt --guest-slot` shares).
//!
//! Both start from the kernel's group of TARGET (resolved like `bind` does) and leave bridges out: VFIO
//! needs every endpoint of the group assigned (or unbound), bridges stay with the host.
//!
//! QEMU layout: every host slot (domain, bus, device) with endpoints in the group becomes one guest slot,
//! numbered from `--guest-slot` upwards in address order, each with an explicit `addr=` so QEMU's automatic
//! placement cannot collide with it. Functions keep their offsets from the lowest function of their host
//! slot (so the guest always has function 0), and when a slot holds more than one endpoint, its first
//! function carries `multifunction=on`. A guest driver that expects the siblings of a multifunction device
//! (GPU + HDMI audio, a NIC's ports) finds them where it finds them on the host.

use std::collections::BTreeMap;
use std::fmt;

use iommu_host::Snapshot;
use iommu_pci::PciAddress;
use serde::Serialize;

use crate::exit::{fail, Exit};
use crate::output::{sanitize, warn, Outcome, Sorted};
use crate::source::{endpoints, Source};

/// One endpoint's place in the guest and its `-device` argument.
#[derive(Serialize)]
pub struct QemuDevice {
    address: PciAddress,
    /// The guest slot.
    pub guest_slot: u8,
    /// The guest function.
    pub guest_function: u8,
    /// Whether this function carries `multifunction=on`.
    pub multifunction: bool,
    device: String,
}

/// QEMU's vfio-pci takes `host=` only for domains up to 0xffff; a wider domain (Intel VMD's 10000 and up)
/// must be named by its sysfs path.
fn qemu_host_arg(a: &PciAddress) -> String {
    if a.domain > 0xffff {
        format!("vfio-pci,sysfsdev=/sys/bus/pci/devices/{a}")
    } else {
        format!("vfio-pci,host={a}")
    }
}

/// Lays out the endpoints on guest slots: see the module documentation.
pub fn qemu_layout(eps: &[PciAddress], first_slot: u8) -> anyhow::Result<Vec<QemuDevice>> {
    let mut slots: BTreeMap<(u32, u8, u8), Vec<PciAddress>> = BTreeMap::new();
    for a in eps {
        slots.entry((a.domain, a.bus, a.device)).or_default().push(*a);
    }
    let last = usize::from(first_slot) + slots.len() - 1;
    if last > 0x1f {
        return Err(fail(
            Exit::BadInput,
            format!(
                "--guest-slot {first_slot:#x}: {} slots needed, the last would be {last:#x} (> 0x1f); pick a lower one",
                slots.len()
            ),
        ));
    }
    let mut out = Vec::new();
    for (i, funcs) in slots.values().enumerate() {
        let guest_slot = first_slot + i as u8;
        let base = funcs.iter().map(|a| a.function).min().unwrap_or(0);
        let multi = funcs.len() > 1;
        for (j, a) in funcs.iter().enumerate() {
            let guest_function = a.function - base;
            let mut device = qemu_host_arg(a);
            if multi && j == 0 {
                device.push_str(",multifunction=on");
            }
            device.push_str(&format!(",addr={guest_slot:#x}.{guest_function:#x}"));
            out.push(QemuDevice { address: *a, guest_slot, guest_function, multifunction: multi && j == 0, device });
        }
    }
    Ok(out)
}

/// The arguments, and the layout behind them.
#[derive(Serialize)]
pub struct QemuReport {
    target: PciAddress,
    group: u32,
    devices: Vec<QemuDevice>,
    args: Vec<String>,
}

/// The iommufd object every device names with `--iommufd`.
pub const IOMMUFD_OBJECT: &str = "iommufd,id=iommufd0";

/// `iommuctl qemu TARGET`; the text form adds a note on stderr for endpoints not on vfio-pci yet. With
/// `iommufd`, the devices use `-object iommufd` (QEMU's iommufd backend) instead of the container.
pub fn run(src: &Source, target: &str, first_slot: u8, iommufd: bool, json: bool) -> anyhow::Result<Outcome> {
    let snap = &src.snapshot;
    let (addr, group, eps) = endpoints(snap, target)?;
    let mut devices = qemu_layout(&eps, first_slot)?;
    let mut args: Vec<String> = Vec::new();
    if iommufd {
        for d in &mut devices {
            d.device.push_str(",iommufd=iommufd0");
        }
        args.extend(["-object".to_string(), IOMMUFD_OBJECT.to_string()]);
    }
    args.extend(devices.iter().flat_map(|d| ["-device".to_string(), d.device.clone()]));
    if !json {
        not_on_vfio_note(snap, &eps);
    }
    Ok(Outcome::report(Sorted(QemuReport { target: addr, group, devices, args })))
}

impl fmt::Display for QemuReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.args.chunks(2).map(|pair| pair.join(" ")).collect();
        writeln!(f, "{}", lines.join(" \\\n"))
    }
}

/// A note on stderr for endpoints that are not on vfio-pci yet (QEMU does not bind them itself; libvirt's
/// `managed='yes'` does).
fn not_on_vfio_note(snap: &Snapshot, eps: &[PciAddress]) {
    let off: Vec<String> = eps
        .iter()
        .filter(|a| !snap.device(**a).and_then(|d| d.driver.as_deref()).is_some_and(iommu_pci::drivers::is_vfio_driver))
        .map(|a| {
            let d = snap.device(*a).and_then(|d| d.driver.as_deref()).unwrap_or("no driver");
            format!("{a} ({})", sanitize(d))
        })
        .collect();
    if !off.is_empty() {
        warn(&format!("note: not on vfio-pci yet: {}; run `iommuctl bind {}` first", off.join(", "), eps[0]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu_pci::parse_guest_slot;

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    #[test]
    fn multifunction_slots_keep_their_layout_and_single_functions_get_their_own_slot() {
        let l = qemu_layout(&[a("00:10.0"), a("00:10.1"), a("0e:00.0")], 0x10).unwrap();
        let d: Vec<&str> = l.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(
            d,
            [
                "vfio-pci,host=0000:00:10.0,multifunction=on,addr=0x10.0x0",
                "vfio-pci,host=0000:00:10.1,addr=0x10.0x1",
                "vfio-pci,host=0000:0e:00.0,addr=0x11.0x0",
            ]
        );
    }

    #[test]
    fn functions_are_offset_from_the_lowest_so_the_guest_has_function_0() {
        let l = qemu_layout(&[a("00:1f.2"), a("00:1f.3")], 0x8).unwrap();
        assert_eq!(l[0].device, "vfio-pci,host=0000:00:1f.2,multifunction=on,addr=0x8.0x0");
        assert_eq!(l[1].device, "vfio-pci,host=0000:00:1f.3,addr=0x8.0x1");
    }

    #[test]
    fn guest_slots_beyond_0x1f_are_refused() {
        assert!(qemu_layout(&[a("00:10.0"), a("01:00.0")], 0x1f).is_err());
        assert!(qemu_layout(&[a("00:10.0")], 0x1f).is_ok());
    }

    #[test]
    fn guest_slot_parses_hex_with_or_without_prefix() {
        assert_eq!(parse_guest_slot("0x10"), Ok(0x10));
        assert_eq!(parse_guest_slot("1f"), Ok(0x1f));
        assert!(parse_guest_slot("0").is_err());
        assert!(parse_guest_slot("0x20").is_err());
        assert!(parse_guest_slot("zz").is_err());
        for bad in ["+1", "-1", " 1", "1 ", "0x", "", "0x010", "001", "0x+1", "\u{661}"] {
            assert!(parse_guest_slot(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_vmd_domain_is_passed_to_qemu_by_sysfs_path() {
        let a: PciAddress = "10000:01:00.0".parse().unwrap();
        assert_eq!(qemu_host_arg(&a), "vfio-pci,sysfsdev=/sys/bus/pci/devices/10000:01:00.0");
        let b: PciAddress = "ffff:01:00.0".parse().unwrap();
        assert_eq!(qemu_host_arg(&b), "vfio-pci,host=ffff:01:00.0");
    }
}
