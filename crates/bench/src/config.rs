//! Real config-space bytes for a generated function: header (type 0 or 1), standard capability list (PM,
//! MSI, PCI Express, MSI-X, bridge subsystem ID) and, for PCIe functions, the extended list at 0x100 (AER,
//! ACS, ARI, SR-IOV, device serial number).
//!
//! PCIe functions get 4096 bytes and conventional ones 256, as the kernel's `config` attribute has.
//! A virtual function reads vendor and device ID `ffff`, as the PCIe specification requires (the kernel
//! shows the real IDs in the `vendor` and `device` attributes only).

use iommu_pci::{cap_id, ext_cap_id, PortType};

use crate::model::{Function, Role, ACS_OFFSET};

struct Cfg(Vec<u8>);

impl Cfg {
    fn w8(&mut self, off: usize, v: u8) {
        self.0[off] = v;
    }
    fn w16(&mut self, off: usize, v: u16) {
        self.0[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn w32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn ext_header(&mut self, off: usize, id: u16, version: u32, next: usize) {
        self.w32(off, u32::from(id) | (version << 16) | ((next as u32) << 20));
    }
}

/// Sizes of the standard capabilities we lay out.
const PM_LEN: usize = 0x08;
const MSI_LEN: usize = 0x18;
const PCIE_LEN: usize = 0x3c;
const MSIX_LEN: usize = 0x0c;
const SSVID_LEN: usize = 0x08;
const SSVID_ID: u8 = 0x0d;

const AER_ID: u16 = 0x0001;
const DSN_ID: u16 = 0x0003;

/// The config-space bytes of `f`.
pub fn config_bytes(f: &Function) -> Vec<u8> {
    let pt = f.port_type();
    let mut c = Cfg(vec![0; if pt.is_some() { 4096 } else { 256 }]);
    let vf = f.role == Role::VirtualFunction;
    let (vendor, device) = if vf { (0xffff, 0xffff) } else { (f.vendor, f.device) };
    c.w16(0x00, vendor);
    c.w16(0x02, device);
    let bridge = f.is_bridge();
    // Command: memory space and bus master (VFs: memory space is hard-wired 0); INTx disabled when MSI(-X)
    // is in use; bridges also decode I/O.
    let mut command: u16 = if vf { 0x0004 } else { 0x0006 };
    if bridge {
        command |= 0x0001;
    }
    if f.msix > 0 && !bridge {
        command |= 0x0400;
    }
    c.w16(0x04, command);
    let conventional = pt.is_none();
    let mut status: u16 = 0x0010; // Capability list.
    if conventional {
        status |= 0x0200 | 0x0080; // Medium DEVSEL, fast back-to-back capable.
    }
    c.w16(0x06, status);
    c.w8(0x08, f.revision);
    c.w8(0x09, f.class as u8);
    c.w8(0x0a, (f.class >> 8) as u8);
    c.w8(0x0b, (f.class >> 16) as u8);
    c.w8(0x0c, 0x10);
    c.w8(0x0d, if conventional { 0x40 } else { 0 });
    c.w8(0x0e, u8::from(bridge) | if f.multifunction { 0x80 } else { 0 });
    let pin = if vf || f.role == Role::Integrated { 0 } else { 1 };
    if bridge {
        let (p, s, sub) = f.bus_numbers.unwrap_or_default();
        c.w8(0x18, p);
        c.w8(0x19, s);
        c.w8(0x1a, sub);
        c.w8(0x1b, if conventional { 0x40 } else { 0 });
        // I/O window closed.
        c.w8(0x1c, 0xf0);
        c.w8(0x1d, 0x00);
        let ((b32, l32), (b64, l64)) = f.windows.unwrap_or(((0xfff0_0000, 0), (0xfff0_0000, 0)));
        c.w16(0x20, ((b32 >> 16) & 0xfff0) as u16);
        c.w16(0x22, ((l32 >> 16) & 0xfff0) as u16);
        // 64-bit prefetchable window (type 1 in the low nibble).
        c.w16(0x24, (((b64 >> 16) & 0xfff0) | 1) as u16);
        c.w16(0x26, (((l64 >> 16) & 0xfff0) | 1) as u16);
        c.w32(0x28, (b64 >> 32) as u32);
        c.w32(0x2c, (l64 >> 32) as u32);
        c.w16(0x3e, 0x0002); // SERR# enable.
    } else {
        if let Some(((b0, _), (b2, _))) = f.bars {
            // BAR 0/1: 64-bit prefetchable memory; BAR 2: 32-bit memory. A VF's own BARs read 0 (the PF's
            // SR-IOV capability holds them).
            if !vf {
                c.w32(0x10, (b0 as u32 & 0xffff_fff0) | 0x0c);
                c.w32(0x14, (b0 >> 32) as u32);
                c.w32(0x18, b2 & 0xffff_fff0);
            }
        }
        c.w16(0x2c, f.subsystem.0);
        c.w16(0x2e, f.subsystem.1);
    }
    c.w8(0x3c, if pin == 0 { 0xff } else { f.irq as u8 });
    c.w8(0x3d, pin);

    // Standard capabilities.
    let mut caps: Vec<(u8, usize)> = Vec::new();
    if !vf {
        caps.push((cap_id::PM, PM_LEN));
    }
    if !vf && (bridge || f.msix == 0) {
        caps.push((cap_id::MSI, MSI_LEN));
    }
    if pt.is_some() {
        caps.push((cap_id::PCIE, PCIE_LEN));
    }
    if f.msix > 0 && !bridge {
        caps.push((cap_id::MSIX, MSIX_LEN));
    }
    if bridge && !conventional {
        caps.push((SSVID_ID, SSVID_LEN));
    }
    let mut off = 0x40usize;
    let mut placed = Vec::new();
    for &(_, len) in &caps {
        placed.push(off);
        off = (off + len).div_ceil(0x10) * 0x10;
    }
    c.w8(0x34, placed.first().map_or(0, |&o| o as u8));
    for (i, &(id, _)) in caps.iter().enumerate() {
        let o = placed[i];
        c.w8(o, id);
        c.w8(o + 1, placed.get(i + 1).map_or(0, |&n| n as u8));
        match id {
            cap_id::PM => {
                c.w16(o + 2, 0xc803); // Version 3, PME from D0 and D3hot/cold.
                c.w16(o + 4, 0x0008); // D0, No_Soft_Reset.
            }
            cap_id::MSI => {
                c.w16(o + 2, 0x0180 | if bridge { 0 } else { 0x0001 }); // 64-bit, per-vector mask.
                c.w32(o + 4, 0xfee0_0000);
                c.w16(o + 0xc, 0x4021);
            }
            cap_id::PCIE => write_pcie(&mut c, o, f, pt.unwrap_or(PortType::Endpoint)),
            cap_id::MSIX => {
                c.w16(o + 2, 0x8000 | (f.msix - 1)); // Enabled.
                c.w32(o + 4, 0x0000_0002); // Table at BAR 2 offset 0.
                c.w32(o + 8, 0x0000_2002); // PBA at BAR 2 offset 0x2000.
            }
            SSVID_ID => {
                c.w16(o + 4, f.subsystem.0);
                c.w16(o + 6, f.subsystem.1);
            }
            _ => {}
        }
    }

    if pt.is_some() {
        write_extended(&mut c, f);
    }
    c.0
}

fn write_pcie(c: &mut Cfg, o: usize, f: &Function, pt: PortType) {
    let raw = u16::from(pt.raw());
    let slot = f.slot.is_some();
    c.w16(o + 2, 0x0002 | (raw << 4) | if slot { 0x0100 } else { 0 });
    let ep = matches!(pt, PortType::Endpoint | PortType::RcIntegratedEndpoint);
    // DevCap: MPS 512, extended tags, role-based error reporting, FLR on endpoints.
    let mut devcap: u32 = 0x0000_8022;
    if ep {
        devcap |= 1 << 28;
    }
    c.w32(o + 4, devcap);
    c.w16(o + 8, 0x2936); // DevCtl: MPS 256, MRRS 512, relaxed ordering, ext tags, error reporting.
    if pt != PortType::RcIntegratedEndpoint {
        // Link: 8 GT/s, x8 for endpoints and ports (x16 GPUs are still fine as x8 here).
        let port = u32::from(f.address.device) + 1;
        c.w32(o + 0xc, 0x0000_0083 | (port << 24) | 0x0007_0000 | (1 << 20));
        c.w16(o + 0x10, 0x0040);
        c.w16(o + 0x12, 0x1083 | if matches!(pt, PortType::RootPort | PortType::DownstreamPort) { 0x2000 } else { 0 });
    }
    if let Some(n) = f.slot {
        c.w32(o + 0x14, (u32::from(n) << 19) | 0x0000_0060 | 0x0000_4000);
        c.w16(o + 0x1a, 0x0040); // Presence detect state.
    }
    // DevCap2: completion timeout ranges, ARI forwarding on downstream-facing ports, LTR.
    let mut devcap2: u32 = 0x0000_081f;
    if matches!(pt, PortType::RootPort | PortType::DownstreamPort) {
        devcap2 |= 0x20;
    }
    c.w32(o + 0x24, devcap2);
    c.w16(o + 0x28, if matches!(pt, PortType::RootPort | PortType::DownstreamPort) { 0x0020 } else { 0 });
    c.w32(o + 0x2c, 0x0000_000e); // 2.5, 5, 8 GT/s.
    c.w16(o + 0x30, 0x0003);
}

fn write_extended(c: &mut Cfg, f: &Function) {
    let vf = f.role == Role::VirtualFunction;
    let ari = matches!(f.role, Role::Endpoint | Role::VirtualFunction) && (f.multifunction || f.sriov.is_some() || vf);
    let dsn = f.role == Role::Endpoint && !vf;
    // (id, version, offset, length)
    let mut list: Vec<(u16, u32, usize)> = Vec::new();
    let mut off = 0x100usize;
    if !vf {
        list.push((AER_ID, 2, off));
        off += 0x48;
    }
    if f.acs.is_some() {
        // The grouping model puts ACS at ACS_OFFSET: keep the layout in step.
        debug_assert_eq!(off, usize::from(ACS_OFFSET));
        list.push((ext_cap_id::ACS, 1, off));
        off += 0x08;
    }
    if ari {
        list.push((ext_cap_id::ARI, 1, off));
        off += 0x08;
    }
    if f.sriov.is_some() {
        list.push((ext_cap_id::SRIOV, 1, off));
        off += 0x40;
    }
    if dsn {
        list.push((DSN_ID, 1, off));
    }
    for (i, &(id, version, o)) in list.iter().enumerate() {
        let next = list.get(i + 1).map_or(0, |n| n.2);
        c.ext_header(o, id, version, next);
        match id {
            AER_ID => {
                c.w32(o + 0x08, 0x0040_0000); // Uncorrectable mask: unsupported request... (typical BIOS value).
                c.w32(o + 0x0c, 0x0046_2030); // Severity.
                c.w32(o + 0x14, 0x0000_2000); // Correctable mask: advisory non-fatal.
                c.w32(o + 0x18, 0x0000_00a0); // ECRC generation/check capable.
            }
            ext_cap_id::ACS => {
                let (cap, ctl) = f.acs.map(|k| k.registers()).unwrap_or_default();
                c.w16(o + 4, cap);
                c.w16(o + 6, ctl);
            }
            ext_cap_id::ARI => {
                // Next function number: the next PF in the device (0 ends the list).
                let next_fn = if f.multifunction && !vf { (f.address.function + 1) % 8 } else { 0 };
                c.w16(o + 4, u16::from(next_fn) << 8);
            }
            ext_cap_id::SRIOV => {
                let s = f.sriov.unwrap_or(crate::model::Sriov { total: 0, num: 0, offset: 0, stride: 0, vf_device: 0 });
                c.w32(o + 0x04, 0x0000_0002); // ARI capable hierarchy preserved.
                let ctl: u16 = if s.num > 0 { 0x0001 | 0x0008 | 0x0010 } else { 0x0010 };
                c.w16(o + 0x08, ctl);
                c.w16(o + 0x0c, s.total);
                c.w16(o + 0x0e, s.total);
                c.w16(o + 0x10, s.num);
                c.w16(o + 0x14, s.offset);
                c.w16(o + 0x16, s.stride);
                c.w16(o + 0x1a, s.vf_device);
                c.w32(o + 0x1c, 0x0000_0553); // Supported page sizes.
                c.w32(o + 0x20, 0x0000_0001); // System page size 4 KiB.
                c.w32(o + 0x24, 0x0000_000c); // VF BAR 0: 64-bit prefetchable.
            }
            DSN_ID => {
                c.w32(o + 4, f.serial as u32);
                c.w32(o + 8, (f.serial >> 32) as u32);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu_groups::Device;
    use iommu_pci::{AcsState, ConfigInfo};

    #[test]
    fn config_bytes_decode_to_the_same_model() {
        let h = crate::generate(3000, 11);
        let mut checked = 0;
        for f in &h.functions {
            let bytes = config_bytes(f);
            let info = ConfigInfo::parse(&bytes);
            if f.role == Role::VirtualFunction {
                // A VF reads vendor ffff, as on real hardware.
                assert!(info.is_err());
                continue;
            }
            let info = info.unwrap_or_else(|e| panic!("{}: {e}", f.address));
            let mut d = Device::from_config(f.address, f.parent, &info, false);
            // The dword after ACS Control is the next capability's header; only the Intel SPT quirk reads it.
            if let AcsState::Present(c) = &mut d.acs {
                c.dword8_low = 0;
            }
            assert_eq!(d, f.device(), "{}", f.address);
            assert_eq!(info.bus_numbers, f.bus_numbers);
            assert_eq!(
                info.sriov.map(|s| (s.total_vfs, s.num_vfs, s.vf_device_id)),
                f.sriov.map(|s| (s.total, s.num, s.vf_device))
            );
            assert_eq!(info.msix.map(|m| m.table_size), (f.msix > 0 && !f.is_bridge()).then_some(f.msix));
            if f.port_type().is_some() {
                assert_eq!(bytes.len(), 4096);
                assert!(info.pm);
            } else {
                assert_eq!(bytes.len(), 256);
                assert_eq!(d.acs, AcsState::Absent);
            }
            checked += 1;
        }
        assert!(checked > 1000, "{checked}");
    }
}
