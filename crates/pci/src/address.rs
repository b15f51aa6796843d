//! PCI addresses: `DDDD:BB:DD.F`, the short `BB:DD.F` and wide domains such as Intel VMD's `10000:e1:00.0`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A PCI function address: domain (segment), bus, device (slot) and function.
///
/// Ordered as the kernel scans: by domain, bus, device, function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// PCI domain (segment). Usually 0000; Intel VMD uses values above 0xffff.
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

/// Why a string is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PCI address {input:?}: {reason} (expected DDDD:BB:DD.F or BB:DD.F, hexadecimal)")]
pub struct AddressError {
    /// The text that failed to parse.
    pub input: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

/// Parses a guest slot (a PCI device number on the guest's root bus, 0x1..=0x1f) as QEMU and libvirt take
/// it: one or two hex digits, with or without `0x`. Nothing else is accepted: no sign, no spaces, no
/// leading zeros beyond two digits.
pub fn parse_guest_slot(s: &str) -> Result<u8, String> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    let ok = !digits.is_empty() && digits.len() <= 2 && digits.bytes().all(|b| b.is_ascii_hexdigit());
    match ok.then(|| u8::from_str_radix(digits, 16).ok()).flatten() {
        Some(n) if (1..=0x1f).contains(&n) => Ok(n),
        _ => Err(format!("{:?} is not a guest slot (hex 0x1..0x1f)", crate::text::clip(s, 32))),
    }
}

impl PciAddress {
    /// Builds an address, checking that device and function are in range.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Option<Self> {
        (device < 32 && function < 8).then_some(Self { domain, bus, device, function })
    }

    /// The device/function byte used by requester IDs: `device << 3 | function`.
    pub fn devfn(&self) -> u8 {
        (self.device << 3) | self.function
    }

    /// The address of another devfn on the same bus.
    pub fn with_devfn(&self, devfn: u8) -> Self {
        Self { domain: self.domain, bus: self.bus, device: devfn >> 3, function: devfn & 7 }
    }

    /// The 16-bit requester ID: `bus << 8 | devfn`.
    pub fn requester_id(&self) -> u16 {
        (u16::from(self.bus) << 8) | u16::from(self.devfn())
    }

    /// Parses `DDDD:BB:DD.F` (any number of domain digits up to 8) or `BB:DD.F` (domain 0).
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let err = |reason| AddressError { input: crate::text::clip(input, 64), reason };
        let s = input.trim();
        let (rest, func) = s.rsplit_once('.').ok_or_else(|| err("missing '.' before the function"))?;
        let mut parts = rest.rsplitn(3, ':');
        let dev = parts.next().ok_or_else(|| err("missing device"))?;
        let bus = parts.next().ok_or_else(|| err("missing bus"))?;
        let domain = parts.next();
        let hex = |t: &str, max_len: usize, what: &'static str| -> Result<u32, AddressError> {
            if t.is_empty() || t.len() > max_len || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err(what));
            }
            u32::from_str_radix(t, 16).map_err(|_| err(what))
        };
        let domain = match domain {
            Some(d) => hex(d, 8, "domain must be 1 to 8 hex digits")?,
            None => 0,
        };
        let bus = hex(bus, 2, "bus must be 1 or 2 hex digits")? as u8;
        let device = hex(dev, 2, "device must be 1 or 2 hex digits")?;
        if device > 0x1f {
            return Err(err("device must be at most 1f"));
        }
        let function = hex(func, 1, "function must be one digit 0-7")?;
        if function > 7 {
            return Err(err("function must be at most 7"));
        }
        Ok(Self { domain, bus, device: device as u8, function: function as u8 })
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.domain, self.bus, self.device, self.function)
    }
}

impl FromStr for PciAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for PciAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn full_address_parses_and_prints_back() {
        let a: PciAddress = "0000:01:1f.7".parse().unwrap();
        assert_eq!(a, PciAddress { domain: 0, bus: 1, device: 0x1f, function: 7 });
        assert_eq!(a.to_string(), "0000:01:1f.7");
    }

    #[test]
    fn short_address_means_domain_zero() {
        assert_eq!("3a:00.1".parse::<PciAddress>().unwrap().to_string(), "0000:3a:00.1");
    }

    #[test]
    fn vmd_wide_domain_is_kept() {
        let a: PciAddress = "10000:e1:00.0".parse().unwrap();
        assert_eq!(a.domain, 0x10000);
        assert_eq!(a.to_string(), "10000:e1:00.0");
    }

    #[test]
    fn bad_addresses_are_rejected_with_the_input_named() {
        for bad in ["", "00:00", "00:20.0", "00:00.8", "000:00:00.0:1", "xx:00.0", "0000:100:00.0", "0:0:0:0.0"] {
            let e = PciAddress::parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn requester_id_packs_bus_and_devfn() {
        let a: PciAddress = "02:03.4".parse().unwrap();
        assert_eq!(a.devfn(), 0x1c);
        assert_eq!(a.requester_id(), 0x021c);
        assert_eq!(a.with_devfn(0x08).to_string(), "0000:02:01.0");
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(domain in 0u32..0x10_0000, bus: u8, device in 0u8..32, function in 0u8..8) {
            let a = PciAddress { domain, bus, device, function };
            prop_assert_eq!(a.to_string().parse::<PciAddress>().unwrap(), a);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,20}") {
            let _ = PciAddress::parse(&s);
        }
    }
}
