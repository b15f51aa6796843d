//! A PCI device opened through VFIO, and its BARs.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use vfio_bindings::bindings::vfio as b;

use std::path::{Path, PathBuf};

use iommu_backend::{
    region_name, BackendError, DeviceAccess, DeviceInfo, DmaBackend, DmaBuf, DmaDir, DmaSpace, EventFd, HugePages,
    IommuInfo, IrqInfo, IrqKind, Mmio, RegionInfo,
};

use crate::container::{Container, Group};
use crate::error::{bad_access, Result, VfioError};
use crate::host::Host;
use crate::info::parse_region_info;
use crate::iommufd::{BackendKind, Iommufd};
use crate::sys::{self, MappedArea};

/// Results of the driver contract's methods.
type BResult<T> = std::result::Result<T, BackendError>;

/// A PCI device opened through VFIO: through its group in a type1v2 container, or through its device cdev
/// bound to an iommufd.
#[derive(Debug)]
pub struct VfioDevice {
    address: String,
    file: Arc<File>,
    info: DeviceInfo,
    regions: Vec<RegionInfo>,
    irqs: Vec<IrqInfo>,
    attachment: Attachment,
    host: Host,
}

/// How a device's DMA is set up.
#[derive(Debug)]
enum Attachment {
    /// Its group joined a type1v2 container.
    Container { group: Group, container: Arc<Container> },
    /// Its cdev is bound to an iommufd (device ID `devid`) and attached to the IOAS through the hardware
    /// page table `hwpt`.
    Iommufd { iommufd: Arc<Iommufd>, group: u32, cdev: PathBuf, devid: u32, hwpt: u32 },
}

/// The DMA backend of an opened device, whichever it is: what [`VfioDevice::dma_space`] maps through.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The type1v2 container.
    Container(Arc<Container>),
    /// The iommufd IOAS.
    Iommufd(Arc<Iommufd>),
}

impl Backend {
    /// Which interface this is.
    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Container(_) => BackendKind::Container,
            Backend::Iommufd(_) => BackendKind::Iommufd,
        }
    }
}

impl DmaBackend for Backend {
    fn iommu_info(&self) -> BResult<IommuInfo> {
        match self {
            Backend::Container(c) => c.iommu_info(),
            Backend::Iommufd(i) => i.iommu_info(),
        }
    }
    fn alloc(&self, len: usize, huge: HugePages) -> BResult<DmaBuf> {
        match self {
            Backend::Container(c) => c.alloc(len, huge),
            Backend::Iommufd(i) => i.alloc(len, huge),
        }
    }
    fn map(&self, iova: u64, mem: &DmaBuf, offset: usize, len: usize, dir: DmaDir) -> BResult<()> {
        match self {
            Backend::Container(c) => c.map(iova, mem, offset, len, dir),
            Backend::Iommufd(i) => i.map(iova, mem, offset, len, dir),
        }
    }
    fn unmap(&self, iova: u64, len: u64) -> BResult<()> {
        match self {
            Backend::Container(c) => c.unmap(iova, len),
            Backend::Iommufd(i) => i.unmap(iova, len),
        }
    }
}

impl VfioDevice {
    /// Opens the device at PCI address `address` (`0000:01:00.0` or `01:00.0`) on the live system, in a
    /// container of its own.
    pub fn open(address: &str) -> Result<Self> {
        Self::open_with(&Host::live(), None, address)
    }

    /// Opens `address` on `host`, joining `container` (or a new one at `<root>/dev/vfio/vfio`).
    ///
    /// Refuses a group that is not viable with [`VfioError::NotViable`], naming the members bound to
    /// drivers that do their own DMA, and a group whose node is missing with [`VfioError::GroupNotBound`].
    pub fn open_with(host: &Host, container: Option<Arc<Container>>, address: &str) -> Result<Self> {
        let address = iommu_pci::PciAddress::parse(address).map_err(|e| VfioError::Invalid(e.to_string()))?.to_string();
        let gid = host.group_of(&address)?;
        let group = match Group::open_in(&host.dev_vfio(), gid) {
            Ok(g) => g,
            Err(VfioError::Open { path, source }) if source.kind() == std::io::ErrorKind::NotFound => {
                let blockers = host.blockers(gid).unwrap_or_default();
                if !host.driver_of(&address).as_deref().is_some_and(iommu_pci::drivers::is_vfio_driver)
                    && !blockers.is_empty()
                {
                    return Err(VfioError::NotViable { group: gid, blockers });
                }
                return Err(VfioError::GroupNotBound { group: gid, path, device: address });
            }
            Err(e) => return Err(e),
        };
        if !group.status()?.viable {
            return Err(VfioError::NotViable { group: gid, blockers: host.blockers(gid).unwrap_or_default() });
        }
        let container = match container {
            Some(c) => c,
            None => Arc::new(Container::open_at(&host.dev_vfio().join("vfio"))?),
        };
        container.attach(&group)?;
        let file = File::from(group.device_fd(&address)?);
        Self::with_file(host, address, file, Attachment::Container { group, container })
    }

    /// Opens `address` on `host` with the backend asked for, or the one the host offers
    /// ([`BackendKind::detect`]) when `kind` is `None`.
    pub fn open_backend(host: &Host, kind: Option<BackendKind>, address: &str) -> Result<Self> {
        let canonical =
            iommu_pci::PciAddress::parse(address).map_err(|e| VfioError::Invalid(e.to_string()))?.to_string();
        match kind.unwrap_or_else(|| BackendKind::detect(host, &canonical)) {
            BackendKind::Container => Self::open_with(host, None, &canonical),
            BackendKind::Iommufd => {
                let iommufd = Arc::new(Iommufd::open_at(&host.dev_iommu())?);
                Self::open_iommufd(host, iommufd, &canonical)
            }
        }
    }

    /// Opens `address` through its VFIO device cdev (`/dev/vfio/devices/vfioN`), binds it to `iommufd`
    /// (`VFIO_DEVICE_BIND_IOMMUFD`) and attaches it to the IOAS (`VFIO_DEVICE_ATTACH_IOMMUFD_PT`).
    ///
    /// The kernel refuses the bind while another member of the group is on a driver that does its own
    /// DMA; that is reported as [`VfioError::NotViable`] with the members to unbind.
    pub fn open_iommufd(host: &Host, iommufd: Arc<Iommufd>, address: &str) -> Result<Self> {
        let address = iommu_pci::PciAddress::parse(address).map_err(|e| VfioError::Invalid(e.to_string()))?.to_string();
        let group = host.group_of(&address)?;
        let cdev = host.device_cdev(&address)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&cdev)
            .map_err(|source| VfioError::Open { path: cdev.clone(), source })?;
        let devid = match sys::iommufd::device_bind_iommufd(file.as_fd(), iommufd.as_fd()) {
            Ok(id) => id,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) || e.raw_os_error() == Some(libc::EPERM) => {
                let blockers = host.blockers(group).unwrap_or_default();
                if blockers.is_empty() {
                    return Err(VfioError::Ioctl { call: "VFIO_DEVICE_BIND_IOMMUFD", path: cdev, source: e });
                }
                return Err(VfioError::NotViable { group, blockers });
            }
            Err(source) => return Err(VfioError::Ioctl { call: "VFIO_DEVICE_BIND_IOMMUFD", path: cdev, source }),
        };
        let hwpt = sys::iommufd::device_attach_pt(file.as_fd(), iommufd.ioas_id())
            .map_err(|source| VfioError::Ioctl { call: "VFIO_DEVICE_ATTACH_IOMMUFD_PT", path: cdev.clone(), source })?;
        Self::with_file(host, address, file, Attachment::Iommufd { iommufd, group, cdev, devid, hwpt })
    }

    /// Reads the device's info, regions and interrupts from its open VFIO device file.
    fn with_file(host: &Host, address: String, file: File, attachment: Attachment) -> Result<Self> {
        let dev_err = |call: &str, source| {
            VfioError::Backend(BackendError::Device { call: call.into(), device: address.clone(), source })
        };
        let raw = sys::device_get_info(file.as_fd()).map_err(|e| dev_err("VFIO_DEVICE_GET_INFO", e))?;
        let info = DeviceInfo { flags: raw.flags, num_regions: raw.num_regions, num_irqs: raw.num_irqs };
        let mut regions = Vec::new();
        for index in 0..info.num_regions {
            // VGA and other optional regions fail with EINVAL when absent: record them as empty.
            let r = sys::device_get_region_info(file.as_fd(), index)
                .ok()
                .and_then(|buf| parse_region_info(&buf))
                .unwrap_or(RegionInfo { index, size: 0, offset: 0, flags: 0, sparse_mmap: None });
            regions.push(r);
        }
        let mut irqs = Vec::new();
        for index in 0..info.num_irqs {
            let i = sys::device_get_irq_info(file.as_fd(), index)
                .map(|r| IrqInfo { index, count: r.count, flags: r.flags })
                .unwrap_or(IrqInfo { index, count: 0, flags: 0 });
            irqs.push(i);
        }
        Ok(Self { address, file: Arc::new(file), info, regions, irqs, attachment, host: host.clone() })
    }

    /// The canonical PCI address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The IOMMU group number.
    pub fn group_id(&self) -> u32 {
        match &self.attachment {
            Attachment::Container { group, .. } => group.id(),
            Attachment::Iommufd { group, .. } => *group,
        }
    }

    /// The container the device's group joined (`None` on iommufd).
    pub fn container(&self) -> Option<&Arc<Container>> {
        match &self.attachment {
            Attachment::Container { container, .. } => Some(container),
            Attachment::Iommufd { .. } => None,
        }
    }

    /// The iommufd the device is bound to (`None` in a container).
    pub fn iommufd(&self) -> Option<&Arc<Iommufd>> {
        match &self.attachment {
            Attachment::Iommufd { iommufd, .. } => Some(iommufd),
            Attachment::Container { .. } => None,
        }
    }

    /// The device cdev it was opened through (`None` in a container).
    pub fn cdev(&self) -> Option<&Path> {
        match &self.attachment {
            Attachment::Iommufd { cdev, .. } => Some(cdev),
            Attachment::Container { .. } => None,
        }
    }

    /// On iommufd: the device ID from the bind and the hardware page table it is attached to.
    pub fn iommufd_ids(&self) -> Option<(u32, u32)> {
        match &self.attachment {
            Attachment::Iommufd { devid, hwpt, .. } => Some((*devid, *hwpt)),
            Attachment::Container { .. } => None,
        }
    }

    /// The backend its DMA goes through.
    pub fn backend(&self) -> Backend {
        match &self.attachment {
            Attachment::Container { container, .. } => Backend::Container(container.clone()),
            Attachment::Iommufd { iommufd, .. } => Backend::Iommufd(iommufd.clone()),
        }
    }

    /// Every region (absent ones with size 0).
    pub fn regions(&self) -> &[RegionInfo] {
        &self.regions
    }

    /// Every interrupt index.
    pub fn irqs(&self) -> &[IrqInfo] {
        &self.irqs
    }

    /// A [`DmaSpace`] over this device's backend that avoids the group's reserved regions (on iommufd the
    /// IOAS's ranges leave them out already; they are avoided twice, harmlessly).
    pub fn dma_space(&self) -> Result<DmaSpace<Backend>> {
        let reserved: Vec<_> = self.host.reserved_regions(self.group_id())?.into_iter().map(|r| r.range).collect();
        Ok(DmaSpace::new(self.backend(), &reserved)?)
    }

    fn region(&self, index: u32) -> BResult<&RegionInfo> {
        match self.regions.get(index as usize) {
            Some(r) if r.size > 0 => Ok(r),
            _ => Err(BackendError::Region {
                device: self.address.clone(),
                region: region_name(index),
                why: "the device has no such region",
            }),
        }
    }

    fn check_range(&self, r: &RegionInfo, offset: u64, len: usize) -> BResult<()> {
        if offset.checked_add(len as u64).is_none_or(|e| e > r.size) {
            return Err(BackendError::OutOfBounds {
                what: format!("{} {}", self.address, region_name(r.index)),
                offset,
                width: len as u64,
                size: r.size,
            });
        }
        Ok(())
    }

    fn set_irqs(&self, what: &str, flags: u32, kind: IrqKind, count: u32, data: &[u8]) -> BResult<()> {
        sys::device_set_irqs(self.file.as_fd(), flags, kind.index(), 0, count, data).map_err(|source| {
            BackendError::Device {
                call: format!("VFIO_DEVICE_SET_IRQS ({kind} {what})"),
                device: self.address.clone(),
                source,
            }
        })
    }
}

impl Drop for VfioDevice {
    /// On iommufd, detaches the device from its page table (DMA is blocked from then on); closing the
    /// device file, when the last handle to it goes, unbinds it from the iommufd.
    fn drop(&mut self) {
        if let Attachment::Iommufd { .. } = self.attachment {
            let _ = sys::iommufd::device_detach_pt(self.file.as_fd());
        }
    }
}

impl DeviceAccess for VfioDevice {
    type Bar<'a> = Bar;

    fn name(&self) -> &str {
        &self.address
    }

    fn device_info(&self) -> DeviceInfo {
        self.info
    }

    fn region_info(&self, index: u32) -> BResult<RegionInfo> {
        self.region(index).cloned()
    }

    fn read_region(&self, index: u32, offset: u64, buf: &mut [u8]) -> BResult<()> {
        let r = self.region(index)?;
        if !r.read() {
            return Err(BackendError::Region {
                device: self.address.clone(),
                region: region_name(index),
                why: "not readable",
            });
        }
        self.check_range(r, offset, buf.len())?;
        self.file.read_exact_at(buf, r.offset + offset).map_err(|source| BackendError::Device {
            call: format!("read of {} bytes of {} at {offset:#x}", buf.len(), region_name(index)),
            device: self.address.clone(),
            source,
        })
    }

    fn write_region(&self, index: u32, offset: u64, data: &[u8]) -> BResult<()> {
        let r = self.region(index)?;
        if !r.write() {
            return Err(BackendError::Region {
                device: self.address.clone(),
                region: region_name(index),
                why: "not writable",
            });
        }
        self.check_range(r, offset, data.len())?;
        self.file.write_all_at(data, r.offset + offset).map_err(|source| BackendError::Device {
            call: format!("write of {} bytes to {} at {offset:#x}", data.len(), region_name(index)),
            device: self.address.clone(),
            source,
        })
    }

    fn bar(&self, index: u32) -> BResult<Bar> {
        if index > 5 {
            return Err(BackendError::Invalid(format!("BAR index {index} (0-5)")));
        }
        let r = self.region(index)?.clone();
        let mut areas = Vec::new();
        for (off, len) in r.mappable_areas() {
            let area =
                MappedArea::device(self.file.as_fd(), r.offset + off, len as usize, r.write()).map_err(|source| {
                    VfioError::Mmap {
                        device: self.address.clone(),
                        region: region_name(index),
                        offset: off,
                        len,
                        source,
                    }
                })?;
            areas.push((off, area));
        }
        Ok(Bar { name: format!("{} {}", self.address, region_name(index)), region: r, file: self.file.clone(), areas })
    }

    fn irq_info(&self, kind: IrqKind) -> BResult<IrqInfo> {
        Ok(self.irqs.get(kind.index() as usize).copied().unwrap_or(IrqInfo { index: kind.index(), count: 0, flags: 0 }))
    }

    fn enable_irqs(&self, kind: IrqKind, count: u32) -> BResult<Vec<EventFd>> {
        let info = self.irq_info(kind)?;
        if count == 0 || info.count < count || !info.eventfd() {
            return Err(BackendError::NoIrq { device: self.address.clone(), kind, wanted: count });
        }
        let fds = (0..count).map(|_| EventFd::new()).collect::<BResult<Vec<_>>>()?;
        let mut data = Vec::with_capacity(4 * count as usize);
        for f in &fds {
            data.extend_from_slice(&std::os::fd::AsRawFd::as_raw_fd(&f.as_fd()).to_ne_bytes());
        }
        let flags = b::VFIO_IRQ_SET_DATA_EVENTFD | b::VFIO_IRQ_SET_ACTION_TRIGGER;
        self.set_irqs(&format!("{count} eventfd(s)"), flags, kind, count, &data)?;
        Ok(fds)
    }

    fn unmask_intx(&self) -> BResult<()> {
        self.set_irqs("unmask", b::VFIO_IRQ_SET_DATA_NONE | b::VFIO_IRQ_SET_ACTION_UNMASK, IrqKind::Intx, 1, &[])
    }

    fn disable_irqs(&self, kind: IrqKind) -> BResult<()> {
        self.set_irqs("disable", b::VFIO_IRQ_SET_DATA_NONE | b::VFIO_IRQ_SET_ACTION_TRIGGER, kind, 0, &[])
    }

    fn reset(&self) -> BResult<()> {
        if !self.info.reset_supported() {
            return Err(BackendError::ResetUnsupported { device: self.address.clone() });
        }
        sys::device_reset(self.file.as_fd()).map_err(|source| BackendError::Device {
            call: "VFIO_DEVICE_RESET".into(),
            device: self.address.clone(),
            source,
        })
    }
}

/// A BAR: mmapped where VFIO allows (volatile access), read and written through the device file
/// elsewhere (e.g. an MSI-X table VFIO keeps out of the mapping). Unmapped when dropped.
///
/// There is no way to get a reference into the mapping: registers are reached only through
/// [`Mmio::read32`], [`Mmio::write32`], [`Mmio::read64`] and [`Mmio::write64`], which check bounds and
/// natural alignment.
#[derive(Debug)]
pub struct Bar {
    name: String,
    region: RegionInfo,
    file: Arc<File>,
    areas: Vec<(u64, MappedArea)>,
}

impl Bar {
    /// The mmapped parts: `(offset, length)` within the BAR.
    pub fn mapped(&self) -> Vec<(u64, u64)> {
        self.areas.iter().map(|(o, a)| (*o, a.len() as u64)).collect()
    }

    /// Whether every byte is reached through the mapping.
    pub fn fully_mapped(&self) -> bool {
        self.areas.len() == 1 && self.areas[0].0 == 0 && self.areas[0].1.len() as u64 == self.region.size
    }

    /// Bounds and alignment; the mapped area that holds the access, if any.
    fn locate(&self, offset: u64, width: u64) -> BResult<Option<(&MappedArea, usize)>> {
        if offset.checked_add(width).is_none_or(|e| e > self.region.size) {
            return Err(BackendError::OutOfBounds { what: self.name.clone(), offset, width, size: self.region.size });
        }
        if !offset.is_multiple_of(width) {
            return Err(BackendError::Misaligned { what: self.name.clone(), offset, width });
        }
        Ok(self
            .areas
            .iter()
            .find(|(o, a)| *o <= offset && offset + width <= *o + a.len() as u64)
            .map(|(o, a)| (a, (offset - o) as usize)))
    }

    fn pread<const N: usize>(&self, offset: u64) -> BResult<[u8; N]> {
        let mut b = [0u8; N];
        self.file.read_exact_at(&mut b, self.region.offset + offset).map_err(|source| BackendError::Device {
            call: format!("read of {N} bytes of {} at {offset:#x}", self.name),
            device: self.name.clone(),
            source,
        })?;
        Ok(b)
    }

    fn pwrite(&self, offset: u64, data: &[u8]) -> BResult<()> {
        self.file.write_all_at(data, self.region.offset + offset).map_err(|source| BackendError::Device {
            call: format!("write of {} bytes to {} at {offset:#x}", data.len(), self.name),
            device: self.name.clone(),
            source,
        })
    }
}

impl Mmio for Bar {
    fn size(&self) -> u64 {
        self.region.size
    }

    fn read32(&self, offset: u64) -> BResult<u32> {
        match self.locate(offset, 4)? {
            Some((a, o)) => a.read_u32(o).map_err(|e| bad_access(self.name.clone(), e)),
            None => Ok(u32::from_le_bytes(self.pread::<4>(offset)?)),
        }
    }

    fn write32(&self, offset: u64, value: u32) -> BResult<()> {
        match self.locate(offset, 4)? {
            Some((a, o)) => a.write_u32(o, value).map_err(|e| bad_access(self.name.clone(), e)),
            None => self.pwrite(offset, &value.to_le_bytes()),
        }
    }

    fn read64(&self, offset: u64) -> BResult<u64> {
        match self.locate(offset, 8)? {
            Some((a, o)) => a.read_u64(o).map_err(|e| bad_access(self.name.clone(), e)),
            None => Ok(u64::from_le_bytes(self.pread::<8>(offset)?)),
        }
    }

    fn write64(&self, offset: u64, value: u64) -> BResult<()> {
        match self.locate(offset, 8)? {
            Some((a, o)) => a.write_u64(o, value).map_err(|e| bad_access(self.name.clone(), e)),
            None => self.pwrite(offset, &value.to_le_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bar(size: u64, mapped: Option<(u64, usize)>) -> (tempfile::NamedTempFile, Bar) {
        let t = tempfile::NamedTempFile::new().unwrap();
        t.as_file().set_len(size).unwrap();
        let file = Arc::new(t.reopen().unwrap());
        let areas = mapped
            .map(|(o, len)| vec![(o, MappedArea::device(file.as_fd(), o, len, true).unwrap())])
            .unwrap_or_default();
        let region = RegionInfo { index: 0, size, offset: 0, flags: 7, sparse_mmap: None };
        (t, Bar { name: "0000:01:00.0 BAR0".into(), region, file, areas })
    }

    #[test]
    fn bar_registers_reach_the_file_through_the_mapping_and_through_pread() {
        // A regular file stands in for the device fd: the first page is mmapped, the second is not.
        let (t, bar) = fake_bar(8192, Some((0, 4096)));
        bar.write32(0x10, 0x1234_5678).unwrap();
        bar.write64(0x1008, 0xaabb_ccdd_eeff_0011).unwrap();
        assert_eq!(bar.read32(0x10).unwrap(), 0x1234_5678);
        assert_eq!(bar.read64(0x1008).unwrap(), 0xaabb_ccdd_eeff_0011);
        let bytes = std::fs::read(t.path()).unwrap();
        assert_eq!(&bytes[0x10..0x14], &0x1234_5678u32.to_le_bytes());
        assert_eq!(&bytes[0x1008..0x1010], &0xaabb_ccdd_eeff_0011u64.to_le_bytes());
        assert!(!bar.fully_mapped());
    }

    #[test]
    fn bar_accesses_out_of_bounds_or_misaligned_are_errors_naming_the_bar() {
        let (_t, bar) = fake_bar(4096, Some((0, 4096)));
        let e = bar.read32(4096).unwrap_err();
        assert!(matches!(e, BackendError::OutOfBounds { offset: 4096, width: 4, size: 4096, .. }), "{e:?}");
        assert!(e.to_string().contains("0000:01:00.0 BAR0"));
        assert!(matches!(bar.write64(4, 0).unwrap_err(), BackendError::Misaligned { offset: 4, width: 8, .. }));
        assert!(bar.read64(u64::MAX - 3).is_err());
        assert!(bar.fully_mapped());
    }
}
