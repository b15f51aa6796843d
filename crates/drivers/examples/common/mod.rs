//! What the example binaries share: the `--backend` argument and the `open` step they report.
#![allow(dead_code)] // shared by several examples; each uses the part it needs

use iommu_drivers::Reporter;
use iommu_vfio::{BackendKind, VfioDevice};
use serde_json::json;

/// Removes `--backend container|iommufd` from `args`; `Err` with the bad value when it is not one.
pub fn take_backend(args: &mut Vec<String>) -> Result<Option<BackendKind>, String> {
    let Some(i) = args.iter().position(|a| a == "--backend") else { return Ok(None) };
    let value = args.get(i + 1).cloned().unwrap_or_default();
    let kind = value.parse::<BackendKind>().map_err(|_| value.clone())?;
    args.drain(i..(i + 2).min(args.len()));
    Ok(Some(kind))
}

/// Reports the `open` step of a device: address, group, backend, and on iommufd the cdev, device ID,
/// hardware page table and IOAS.
pub fn opened(r: &mut Reporter<'_>, dev: &VfioDevice) {
    let ids = dev.iommufd_ids();
    r.step(
        "open",
        true,
        json!({
            "device": dev.address(),
            "group": dev.group_id(),
            "backend": dev.backend().kind().name(),
            "cdev": dev.cdev().map(|p| p.display().to_string()),
            "devid": ids.map(|i| i.0),
            "hwpt": ids.map(|i| i.1),
            "ioas": dev.iommufd().map(|i| i.ioas_id()),
        }),
    );
}
