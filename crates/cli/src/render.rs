//! Text and JSON rendering.

use iommu_pci::{ConfigInfo, PciIds};
use serde_json::{json, Value};

/// Replaces control characters in strings that came from the system, so they cannot drive the terminal.
pub fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_control() && c != '\n' { '?' } else { c }).collect()
}

/// Name facts for one function.
pub struct Names {
    /// `vvvv`.
    pub vendor_id: String,
    /// `dddd`.
    pub device_id: String,
    /// `cccc` (base class and subclass).
    pub class_id: String,
    /// Vendor name.
    pub vendor: Option<String>,
    /// Device name.
    pub device: Option<String>,
    /// Class name.
    pub class: Option<String>,
}

/// Names a function from its config space.
pub fn names(ids: &PciIds, cfg: Option<&ConfigInfo>) -> Names {
    match cfg {
        None => Names {
            vendor_id: "????".into(),
            device_id: "????".into(),
            class_id: "????".into(),
            vendor: None,
            device: None,
            class: None,
        },
        Some(c) => Names {
            vendor_id: format!("{:04x}", c.vendor_id),
            device_id: format!("{:04x}", c.device_id),
            class_id: format!("{:04x}", c.class >> 8),
            vendor: ids.vendor(c.vendor_id).map(str::to_string),
            device: ids.device(c.vendor_id, c.device_id).map(str::to_string),
            class: ids.subclass(c.class).map(str::to_string),
        },
    }
}

impl Names {
    /// JSON fields.
    pub fn json(&self) -> Value {
        json!({
            "vendor_id": self.vendor_id,
            "device_id": self.device_id,
            "class_id": self.class_id,
            "vendor": self.vendor,
            "device_name": self.device,
            "class": self.class,
        })
    }

    /// `Vendor Device [vvvv:dddd]`.
    pub fn text(&self) -> String {
        let v = self.vendor.clone().unwrap_or_else(|| "Unknown vendor".into());
        let d = self.device.clone().unwrap_or_else(|| "unknown device".into());
        sanitize(&format!("{v} {d} [{}:{}]", self.vendor_id, self.device_id))
    }

    /// `Class name [cccc]`.
    pub fn class_text(&self) -> String {
        sanitize(&format!("{} [{}]", self.class.clone().unwrap_or_else(|| "Unknown class".into()), self.class_id))
    }
}
