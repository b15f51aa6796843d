//! Which drivers own their device's DMA, so a group stays viable for VFIO while they are bound.
//!
//! The kernel's rule (drivers/iommu/iommu.c, drivers/vfio/group.c, Linux ≥ 5.19): binding a driver to a
//! device claims the group's default DMA domain for the kernel, unless the driver sets
//! `driver_managed_dma`; VFIO can only take a group whose default domain nobody claims. So a group is
//! viable when every member has no driver or a driver from [`DMA_OWNING_DRIVERS`].
//!
//! The list is data, not a pattern: a driver counts because the kernel source says so, not because its
//! name looks like one (`vfio_iommu_type1` is a module, not a device driver; a third-party `my-vfio-thing`
//! does not set the flag).

/// A driver that sets `driver_managed_dma`: the kernel does not claim the group's DMA while it is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaOwningDriver {
    /// The name it registers (what `/sys/bus/*/devices/*/driver` points at). Drivers named by
    /// `KBUILD_MODNAME` register their module name, with underscores (`mlx5_vfio_pci`).
    pub name: &'static str,
    /// The bus it binds on (`pci`, `platform`, `amba`, `fsl-mc`, `cdx`).
    pub bus: &'static str,
    /// Whether it hands the device to user space through VFIO (vfio-pci and its variant drivers, and the
    /// VFIO drivers of other buses), rather than just keeping the device from the kernel.
    pub vfio: bool,
}

const fn vfio(name: &'static str, bus: &'static str) -> DmaOwningDriver {
    DmaOwningDriver { name, bus, vfio: true }
}

const fn other(name: &'static str, bus: &'static str) -> DmaOwningDriver {
    DmaOwningDriver { name, bus, vfio: false }
}

/// Every driver in Linux 6.12 (Debian's linux-source-6.12, 6.12.117) that sets `driver_managed_dma`,
/// by the name it registers. Each entry names the file it was read from.
pub const DMA_OWNING_DRIVERS: &[DmaOwningDriver] = &[
    // drivers/vfio/pci/vfio_pci.c
    vfio("vfio-pci", "pci"),
    // drivers/vfio/pci/mlx5/main.c (module mlx5-vfio-pci, name KBUILD_MODNAME)
    vfio("mlx5_vfio_pci", "pci"),
    // drivers/vfio/pci/hisilicon/hisi_acc_vfio_pci.c (module hisi-acc-vfio-pci, name KBUILD_MODNAME)
    vfio("hisi_acc_vfio_pci", "pci"),
    // drivers/vfio/pci/nvgrace-gpu/main.c (module nvgrace-gpu-vfio-pci, name KBUILD_MODNAME)
    vfio("nvgrace_gpu_vfio_pci", "pci"),
    // drivers/vfio/pci/virtio/main.c (module virtio-vfio-pci, name KBUILD_MODNAME)
    vfio("virtio_vfio_pci", "pci"),
    // drivers/vfio/pci/pds/pci_drv.c (module pds-vfio-pci, name KBUILD_MODNAME)
    vfio("pds_vfio_pci", "pci"),
    // drivers/vfio/pci/qat/main.c (name given explicitly)
    vfio("qat_vfio_pci", "pci"),
    // drivers/vfio/platform/vfio_platform.c
    vfio("vfio-platform", "platform"),
    // drivers/vfio/platform/vfio_amba.c
    vfio("vfio-amba", "amba"),
    // drivers/vfio/fsl-mc/vfio_fsl_mc.c
    vfio("vfio-fsl-mc", "fsl-mc"),
    // drivers/vfio/cdx/main.c
    vfio("vfio-cdx", "cdx"),
    // drivers/pci/pci-stub.c
    other("pci-stub", "pci"),
    // drivers/pci/pcie/portdrv.c (PCIe ports: root, switch, downstream)
    other("pcieport", "pci"),
    // arch/powerpc/sysdev/fsl_pci.c (Freescale PCI host controllers)
    other("fsl-pci", "platform"),
];

fn find(name: &str) -> Option<&'static DmaOwningDriver> {
    DMA_OWNING_DRIVERS.iter().find(|d| d.name == name)
}

/// Whether a device bound to `name` leaves its IOMMU group viable for VFIO: the driver is in
/// [`DMA_OWNING_DRIVERS`]. The name must match exactly, as the kernel registers it.
pub fn manages_own_dma(name: &str) -> bool {
    find(name).is_some()
}

/// Whether a device bound to the driver `driver` (`None`: no driver) leaves its group viable for VFIO:
/// no driver, or one that [manages its own DMA](manages_own_dma).
pub fn leaves_group_viable(driver: Option<&str>) -> bool {
    driver.is_none_or(manages_own_dma)
}

/// Whether `name` is a VFIO driver (vfio-pci, one of its variant drivers, or another bus's VFIO driver):
/// a device bound to it is open to user space through `/dev/vfio`.
pub fn is_vfio_driver(name: &str) -> bool {
    find(name).is_some_and(|d| d.vfio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_names_count_and_look_alikes_do_not() {
        for d in ["vfio-pci", "mlx5_vfio_pci", "hisi_acc_vfio_pci", "nvgrace_gpu_vfio_pci", "qat_vfio_pci"] {
            assert!(manages_own_dma(d) && is_vfio_driver(d), "{d}");
        }
        for d in ["pci-stub", "pcieport"] {
            assert!(manages_own_dma(d) && !is_vfio_driver(d), "{d}");
        }
        // Module names with dashes are not what the driver registers; modules and look-alikes are not drivers.
        for d in ["mlx5-vfio-pci", "vfio_pci", "vfio_iommu_type1", "my-vfio-thing", "vfio", "VFIO-PCI", "", "e1000e"] {
            assert!(!manages_own_dma(d) && !is_vfio_driver(d), "{d}");
        }
        assert!(leaves_group_viable(None) && leaves_group_viable(Some("pcieport")));
        assert!(!leaves_group_viable(Some("nvme")));
    }

    #[test]
    fn every_name_is_listed_once() {
        let mut names: Vec<&str> = DMA_OWNING_DRIVERS.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DMA_OWNING_DRIVERS.len());
    }
}
