//! The iommufd and VFIO-cdev ioctl numbers and argument layouts in `iommu_vfio::sys::iommufd` against the
//! kernel's own uapi headers: a C program compiled with the 6.12 headers the lab's iommufd kernel was
//! built from prints `sizeof`, `offsetof` and the ioctl numbers, and every one must equal ours.
//!
//! The headers are kept beside the built kernel by `scripts/lab-setup` (`uapi/linux/{iommufd,vfio}.h`
//! under its cache directory, linked into `$IOMMU_LAB_DIR/uapi-6.12`). Missing headers or no C compiler
//! skip, or fail under CI / IOMMU_LAB_REQUIRED=1.

use std::mem::size_of;
use std::path::PathBuf;
use std::process::Command;

use iommu_lab::{lab_dir, skip_or_fail};
use iommu_vfio::sys::iommufd as ours;

fn headers() -> Option<PathBuf> {
    let dir = lab_dir().join("uapi-6.12");
    if dir.join("linux/iommufd.h").is_file() && dir.join("linux/vfio.h").is_file() {
        Some(dir)
    } else {
        skip_or_fail(&format!("no 6.12 uapi headers under {} (run scripts/lab-setup)", dir.display()));
        None
    }
}

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#define P(name, value) printf("%s %lu\n", name, (unsigned long)(value))
int main(void) {
    P("IOMMU_DESTROY", IOMMU_DESTROY);
    P("IOMMU_IOAS_ALLOC", IOMMU_IOAS_ALLOC);
    P("IOMMU_IOAS_IOVA_RANGES", IOMMU_IOAS_IOVA_RANGES);
    P("IOMMU_IOAS_MAP", IOMMU_IOAS_MAP);
    P("IOMMU_IOAS_UNMAP", IOMMU_IOAS_UNMAP);
    P("VFIO_DEVICE_BIND_IOMMUFD", VFIO_DEVICE_BIND_IOMMUFD);
    P("VFIO_DEVICE_ATTACH_IOMMUFD_PT", VFIO_DEVICE_ATTACH_IOMMUFD_PT);
    P("VFIO_DEVICE_DETACH_IOMMUFD_PT", VFIO_DEVICE_DETACH_IOMMUFD_PT);
    P("IOMMU_IOAS_MAP_FIXED_IOVA", IOMMU_IOAS_MAP_FIXED_IOVA);
    P("IOMMU_IOAS_MAP_WRITEABLE", IOMMU_IOAS_MAP_WRITEABLE);
    P("IOMMU_IOAS_MAP_READABLE", IOMMU_IOAS_MAP_READABLE);
    P("sizeof iommu_destroy", sizeof(struct iommu_destroy));
    P("sizeof iommu_ioas_alloc", sizeof(struct iommu_ioas_alloc));
    P("sizeof iommu_iova_range", sizeof(struct iommu_iova_range));
    P("sizeof iommu_ioas_iova_ranges", sizeof(struct iommu_ioas_iova_ranges));
    P("sizeof iommu_ioas_map", sizeof(struct iommu_ioas_map));
    P("sizeof iommu_ioas_unmap", sizeof(struct iommu_ioas_unmap));
    P("sizeof vfio_device_bind_iommufd", sizeof(struct vfio_device_bind_iommufd));
    P("sizeof vfio_device_attach_iommufd_pt", sizeof(struct vfio_device_attach_iommufd_pt));
    P("sizeof vfio_device_detach_iommufd_pt", sizeof(struct vfio_device_detach_iommufd_pt));
    P("offsetof iommu_ioas_map.iova", offsetof(struct iommu_ioas_map, iova));
    P("offsetof iommu_ioas_iova_ranges.allowed_iovas", offsetof(struct iommu_ioas_iova_ranges, allowed_iovas));
    P("offsetof vfio_device_bind_iommufd.out_devid", offsetof(struct vfio_device_bind_iommufd, out_devid));
    return 0;
}
"#;

#[test]
fn iommufd_ioctl_numbers_and_layouts_match_the_6_12_headers() {
    let Some(inc) = headers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("uapi.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let exe = dir.path().join("uapi");
    // The raw uapi headers still carry `__user` (headers_install strips it).
    let cc = Command::new("cc").arg("-D__user=").arg("-I").arg(&inc).arg(&src).arg("-o").arg(&exe).output();
    let cc = match cc {
        Ok(o) => o,
        Err(e) => {
            skip_or_fail(&format!("no C compiler: {e}"));
            return;
        }
    };
    assert!(cc.status.success(), "cc failed: {}", String::from_utf8_lossy(&cc.stderr));
    let out = Command::new(&exe).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let kernel = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    let pairs: [(&str, u64); 23] = [
        ("IOMMU_DESTROY", ours::IOMMU_DESTROY),
        ("IOMMU_IOAS_ALLOC", ours::IOMMU_IOAS_ALLOC),
        ("IOMMU_IOAS_IOVA_RANGES", ours::IOMMU_IOAS_IOVA_RANGES),
        ("IOMMU_IOAS_MAP", ours::IOMMU_IOAS_MAP),
        ("IOMMU_IOAS_UNMAP", ours::IOMMU_IOAS_UNMAP),
        ("VFIO_DEVICE_BIND_IOMMUFD", ours::VFIO_DEVICE_BIND_IOMMUFD),
        ("VFIO_DEVICE_ATTACH_IOMMUFD_PT", ours::VFIO_DEVICE_ATTACH_IOMMUFD_PT),
        ("VFIO_DEVICE_DETACH_IOMMUFD_PT", ours::VFIO_DEVICE_DETACH_IOMMUFD_PT),
        ("IOMMU_IOAS_MAP_FIXED_IOVA", u64::from(ours::MAP_FIXED_IOVA)),
        ("IOMMU_IOAS_MAP_WRITEABLE", u64::from(ours::MAP_WRITEABLE)),
        ("IOMMU_IOAS_MAP_READABLE", u64::from(ours::MAP_READABLE)),
        ("sizeof iommu_destroy", size_of::<ours::IommuDestroy>() as u64),
        ("sizeof iommu_ioas_alloc", size_of::<ours::IommuIoasAlloc>() as u64),
        ("sizeof iommu_iova_range", size_of::<ours::IommuIovaRange>() as u64),
        ("sizeof iommu_ioas_iova_ranges", size_of::<ours::IommuIoasIovaRanges>() as u64),
        ("sizeof iommu_ioas_map", size_of::<ours::IommuIoasMap>() as u64),
        ("sizeof iommu_ioas_unmap", size_of::<ours::IommuIoasUnmap>() as u64),
        ("sizeof vfio_device_bind_iommufd", size_of::<ours::VfioDeviceBindIommufd>() as u64),
        ("sizeof vfio_device_attach_iommufd_pt", size_of::<ours::VfioDeviceAttachIommufdPt>() as u64),
        ("sizeof vfio_device_detach_iommufd_pt", size_of::<ours::VfioDeviceDetachIommufdPt>() as u64),
        ("offsetof iommu_ioas_map.iova", ours::IOAS_MAP_IOVA_OFFSET as u64),
        ("offsetof iommu_ioas_iova_ranges.allowed_iovas", ours::IOVA_RANGES_ALLOWED_OFFSET as u64),
        ("offsetof vfio_device_bind_iommufd.out_devid", ours::BIND_OUT_DEVID_OFFSET as u64),
    ];
    for (name, value) in pairs {
        assert_eq!(kernel(name), value, "{name}: the 6.12 header says {}, iommu-vfio says {value}", kernel(name));
    }
}
