//! Intel Volume Management Device (VMD): PCI domains whose functions DMA as another function.
//!
//! A VMD controller is an endpoint in an ordinary PCI domain (on client chips `00:0e.0`). When the `vmd`
//! driver binds it, it creates a new PCI domain, numbered from `0x10000` up (the first number not in use),
//! and moves the root ports and NVMe drives the firmware put behind it there. Every request from that domain
//! reaches the IOMMU with the VMD endpoint's requester ID: on x86, `pci_real_dma_dev()`
//! (arch/x86/pci/common.c) answers the VMD endpoint for any function on a VMD bus, and
//! `pci_for_each_dma_alias()` starts from it. So every function in the domain joins the VMD endpoint's
//! IOMMU group, whatever ACS its root ports have.
//!
//! On a live host the pairing is in sysfs: the domain's root bus is a child of the endpoint
//! (`/sys/devices/pci0000:00/0000:00:0e.0/pci10000:e0/...`). A listing (`lspci`, a paste) does not show it;
//! [`pair_domains`] infers it.

use iommu_pci::PciAddress;
use serde::{Deserialize, Serialize};

use crate::model::Device;

/// Device IDs (vendor 8086) the kernel's `vmd` driver binds, as listed in Debian's 6.12.117
/// drivers/pci/controller/vmd.c: server VMDs 201d and 28c0, client VMDs 467f, 4c3d, a77f, 7d0b, ad0b,
/// 9a0b, b60b and b06f.
pub const VMD_DEVICE_IDS: [u16; 10] = [0x201d, 0x28c0, 0x467f, 0x4c3d, 0xa77f, 0x7d0b, 0xad0b, 0x9a0b, 0xb60b, 0xb06f];

/// The lowest domain number the `vmd` driver gives a VMD domain; ordinary PCI segments are 16-bit.
pub const FIRST_VMD_DOMAIN: u32 = 0x1_0000;

/// Whether a function with these IDs is a VMD controller the kernel's `vmd` driver binds.
pub fn is_vmd_endpoint(vendor: u16, device: u16) -> bool {
    vendor == 0x8086 && VMD_DEVICE_IDS.contains(&device)
}

/// A VMD domain and the VMD endpoint whose requester ID its functions' DMA carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VmdDomain {
    /// The PCI domain the `vmd` driver created (`0x10000` and up).
    pub domain: u32,
    /// The VMD controller function, in an ordinary domain.
    pub endpoint: PciAddress,
}

/// What [`pair_domains`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VmdPairing {
    /// The domains paired with their VMD endpoint, by domain number.
    pub domains: Vec<VmdDomain>,
    /// Why some domains above 0xffff could not be paired, when they could not: their functions then have
    /// no known DMA device, and predictions for them are guesses.
    pub uncertain: Option<String>,
}

/// Pairs every domain above 0xffff in a listing with the VMD endpoint that created it.
///
/// The rule, for listings that do not show the sysfs tree:
/// - VMD endpoints are the functions in domains 0 to 0xffff whose IDs the kernel's `vmd` driver binds
///   ([`is_vmd_endpoint`]; SR-IOV virtual functions excluded). VMD domains are the domain numbers above
///   0xffff that any function of the listing has.
/// - No VMD domain: nothing to pair, nothing uncertain (a VMD controller without a domain has no driver
///   or nothing behind it).
/// - As many endpoints as domains: the n-th endpoint in address order gets the n-th domain in number
///   order. The driver numbers each new domain with the lowest free number as it binds controllers, and it
///   binds them in device order, so this is exact for one controller and the usual case for several
///   (it is wrong only if a controller was bound again later, e.g. after a driver reload).
/// - Otherwise (domains but no endpoint, or counts that differ, as when a VMD controller is left without a
///   driver): nothing is paired, and `uncertain` says which endpoints and domains were seen.
pub fn pair_domains(devices: &[Device]) -> VmdPairing {
    let mut endpoints: Vec<PciAddress> = devices
        .iter()
        .filter(|d| d.address.domain < FIRST_VMD_DOMAIN && !d.is_virtfn && is_vmd_endpoint(d.vendor, d.device))
        .map(|d| d.address)
        .collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    let mut domains: Vec<u32> =
        devices.iter().map(|d| d.address.domain).filter(|&dom| dom >= FIRST_VMD_DOMAIN).collect();
    domains.sort_unstable();
    domains.dedup();
    if domains.is_empty() {
        return VmdPairing::default();
    }
    if endpoints.len() == domains.len() {
        let domains =
            domains.iter().zip(&endpoints).map(|(&domain, &endpoint)| VmdDomain { domain, endpoint }).collect();
        return VmdPairing { domains, uncertain: None };
    }
    let list = |v: Vec<String>| if v.is_empty() { "none".to_string() } else { v.join(", ") };
    let reason = format!(
        "{} VMD domain{} ({}) but {} Intel VMD controller{} ({}): which controller's requester ID the functions of \
         each domain use cannot be told from a listing; on the host, /sys/bus/pci/devices/<function> shows it",
        domains.len(),
        if domains.len() == 1 { "" } else { "s" },
        list(domains.iter().map(|d| format!("{d:04x}")).collect()),
        endpoints.len(),
        if endpoints.len() == 1 { "" } else { "s" },
        list(endpoints.iter().map(|e| e.to_string()).collect()),
    );
    VmdPairing { domains: Vec::new(), uncertain: Some(reason) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Pcie;
    use iommu_pci::{AcsState, HeaderKind, PortType};

    fn dev(a: &str, vendor: u16, device: u16) -> Device {
        Device {
            address: a.parse().unwrap(),
            parent: None,
            vendor,
            device,
            subsystem: None,
            class: 0x010400,
            header: HeaderKind::Normal,
            multifunction: false,
            is_virtfn: false,
            pcie: Pcie::Yes(PortType::RcIntegratedEndpoint),
            acs: AcsState::Absent,
        }
    }

    #[test]
    fn one_controller_and_one_domain_pair() {
        let p = pair_domains(&[
            dev("00:0e.0", 0x8086, 0x9a0b),
            dev("10000:e0:06.0", 0x8086, 0x9a09),
            dev("10000:e1:00.0", 0x15b7, 0x5011),
        ]);
        assert_eq!(p.domains, vec![VmdDomain { domain: 0x10000, endpoint: "00:0e.0".parse().unwrap() }]);
        assert_eq!(p.uncertain, None);
    }

    #[test]
    fn several_pair_in_order_when_the_counts_match() {
        let p = pair_domains(&[
            dev("0000:17:05.5", 0x8086, 0x201d),
            dev("0000:85:05.5", 0x8086, 0x201d),
            dev("10001:00:00.0", 0x8086, 0x2030),
            dev("10000:00:00.0", 0x8086, 0x2030),
        ]);
        let e = |s: &str| s.parse().unwrap();
        assert_eq!(
            p.domains,
            vec![
                VmdDomain { domain: 0x10000, endpoint: e("0000:17:05.5") },
                VmdDomain { domain: 0x10001, endpoint: e("0000:85:05.5") }
            ]
        );
    }

    #[test]
    fn counts_that_differ_pair_nothing_and_say_why() {
        let p = pair_domains(&[
            dev("0000:17:05.5", 0x8086, 0x201d),
            dev("0000:85:05.5", 0x8086, 0x201d),
            dev("10000:00:00.0", 0x8086, 0x2030),
        ]);
        assert!(p.domains.is_empty());
        let why = p.uncertain.unwrap();
        assert!(why.contains("1 VMD domain (10000)") && why.contains("2 Intel VMD controllers"), "{why}");
        let p = pair_domains(&[dev("10000:e1:00.0", 0x15b7, 0x5011)]);
        assert!(p.uncertain.unwrap().contains("0 Intel VMD controllers (none)"));
    }

    #[test]
    fn a_controller_without_a_domain_is_not_uncertain() {
        assert_eq!(pair_domains(&[dev("00:0e.0", 0x8086, 0x467f)]), VmdPairing::default());
        assert!(!is_vmd_endpoint(0x8086, 0x9a09));
    }
}
