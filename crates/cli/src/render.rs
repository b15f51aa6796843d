//! Text and JSON rendering.

use iommu_pci::{ConfigInfo, PciIds};

pub use crate::output::sanitize;

/// When to colour text output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    /// On a terminal, unless NO_COLOR is set (and not empty).
    Auto,
    /// Always, even into a pipe and despite NO_COLOR (an explicit option wins over the environment).
    Always,
    /// Never.
    Never,
}

/// Whether to colour, from the option, the NO_COLOR variable and whether stdout is a terminal.
pub fn use_color(when: ColorWhen, no_color: Option<&std::ffi::OsStr>, terminal: bool) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => terminal && !matches!(no_color, Some(v) if !v.is_empty()),
    }
}

/// A group header in bold cyan.
pub fn paint_header(s: &str) -> String {
    format!("\x1b[1;36m{s}\x1b[0m")
}

/// What kind of PCI function a config space describes (`PCIe root port`, `conventional PCI bridge`, ...).
pub fn pcie_kind(c: &ConfigInfo) -> &'static str {
    match c.pcie {
        Some(p) => p.port_type.describe(),
        None if c.is_bridge() => "conventional PCI bridge",
        None => "conventional PCI function",
    }
}

/// Name facts for one function (the JSON form sorts its keys, as `show` has always printed them).
#[derive(serde::Serialize)]
pub struct Names {
    /// Class name.
    pub class: Option<String>,
    /// `cccc` (base class and subclass).
    pub class_id: String,
    /// `dddd`.
    pub device_id: String,
    /// Device name.
    #[serde(rename = "device_name")]
    pub device: Option<String>,
    /// Vendor name.
    pub vendor: Option<String>,
    /// `vvvv`.
    pub vendor_id: String,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn auto_colours_only_a_terminal_without_no_color() {
        assert!(use_color(ColorWhen::Auto, None, true));
        assert!(!use_color(ColorWhen::Auto, None, false));
        assert!(!use_color(ColorWhen::Auto, Some(OsStr::new("1")), true));
        assert!(use_color(ColorWhen::Auto, Some(OsStr::new("")), true), "an empty NO_COLOR does not count");
        assert!(use_color(ColorWhen::Always, Some(OsStr::new("1")), false));
        assert!(!use_color(ColorWhen::Never, None, true));
    }

    #[test]
    fn sanitize_replaces_control_characters_newlines_included() {
        assert_eq!(sanitize("a\x1b[31mb\tc\nd\u{9b}\u{202e}"), "a?[31mb?c?d??");
    }
}
