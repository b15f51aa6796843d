//! `iommuctl cdi TARGET...`: a Container Device Interface spec (CDI 1.1.0, JSON) with one device per IOMMU
//! group of the targets, for container runtimes (containerd, CRI-O, Podman, Docker) that hand VFIO devices
//! to containers: `--device iommuctl.dev/vfio=17`.
//!
//! The device's `containerEdits.deviceNodes` are what a program in the container needs to open the group,
//! by one of two kernel interfaces:
//! - the legacy container: `/dev/vfio/vfio` and the group node `/dev/vfio/N` (N the kernel's group number);
//! - iommufd: `/dev/iommu` and the VFIO device cdev `/dev/vfio/devices/vfioX` of every endpoint of the group.
//!
//! The rule (`--nodes auto`, the default): the iommufd nodes when the snapshot shows `/dev/iommu` and a cdev
//! for every endpoint (cdevs exist only while the devices are on vfio-pci, on a kernel with
//! `CONFIG_VFIO_DEVICE_CDEV`); the legacy nodes unless the snapshot shows that `/dev/vfio/vfio` is missing;
//! both sets when both hold, so the program in the container chooses. `--nodes container|iommufd|both` asks
//! for one form and fails (exit 1) when the host cannot give it.
//!
//! A group that VFIO would refuse to open (a member on a host driver) is refused (exit 3), naming the
//! device. Endpoints with no driver are allowed (the group is viable) with a note: the nodes appear once
//! the group is bound, and a CDI spec may name nodes that do not exist yet (the runtime resolves them when
//! a container is created).

use std::collections::BTreeMap;
use std::path::Path;

use iommu_host::Snapshot;
use iommu_pci::PciAddress;
use serde::Serialize;

use crate::exit::{fail, Exit};
use crate::output::{json_text, warn, Outcome};
use crate::source::{refuse_unviable, target_groups, Source, TargetGroup};

/// The CDI specification version written (the current one: `specs-go/version.go`, `CurrentVersion`).
pub const CDI_VERSION: &str = "1.1.0";
/// The kind when `--kind` is not given.
pub const DEFAULT_KIND: &str = "iommuctl.dev/vfio";
/// The prefix of the annotations iommuctl adds to each device.
const ANNOTATION: &str = "iommuctl.dev";

/// Which device nodes each CDI device gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Nodes {
    /// iommufd nodes where the host has them, legacy nodes unless the host lacks them, both when both.
    Auto,
    /// `/dev/vfio/vfio` and `/dev/vfio/N`.
    Container,
    /// `/dev/iommu` and each endpoint's `/dev/vfio/devices/vfioX`.
    Iommufd,
    /// Both sets.
    Both,
}

/// A CDI spec, as the schema names its fields.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    cdi_version: &'static str,
    kind: String,
    devices: Vec<Device>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Device {
    name: String,
    annotations: BTreeMap<String, String>,
    container_edits: Edits,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Edits {
    device_nodes: Vec<Node>,
}

#[derive(Serialize)]
struct Node {
    path: String,
}

/// Checks a CDI kind, `vendor/class`, as the spec and its parser (`pkg/parser`) do: the vendor a DNS
/// subdomain of at most 253 characters, the class at most 63; each starts with a letter, ends with a letter
/// or digit, and holds only letters, digits, `-`, `_` and `.` between.
pub fn parse_kind(s: &str) -> Result<String, String> {
    let (vendor, class) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` is not a CDI kind: expected VENDOR/CLASS, e.g. {DEFAULT_KIND}"))?;
    for (what, name, max) in [("vendor", vendor, 253), ("class", class, 63)] {
        let b = name.as_bytes();
        let inner_ok = b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        let ends_ok = b.first().is_some_and(u8::is_ascii_alphabetic) && b.last().is_some_and(u8::is_ascii_alphanumeric);
        if name.is_empty() || name.len() > max || !inner_ok || !ends_ok {
            return Err(format!(
                "`{s}`: the {what} `{name}` must be 1 to {max} characters, start with a letter, end with a letter or \
                 digit, with only letters, digits, `-`, `_` and `.` between"
            ));
        }
    }
    Ok(s.to_string())
}

/// The device nodes of one group under `nodes`, or why the host cannot give them.
fn device_nodes(snap: &Snapshot, g: &TargetGroup, nodes: Nodes) -> anyhow::Result<Vec<Node>> {
    let facts = snap.readiness.as_ref();
    let dev_iommu = facts.and_then(|f| f.dev_iommu);
    let dev_vfio = facts.and_then(|f| f.dev_vfio);
    // A cdev name becomes a path: only `vfio` and digits, as the kernel names them, count.
    let cdevs: Vec<Option<&str>> = g
        .endpoints
        .iter()
        .map(|a| snap.device(*a).and_then(|d| d.vfio_cdev.as_deref()).filter(|n| is_cdev_name(n)))
        .collect();
    let iommufd_possible = dev_iommu == Some(true) && cdevs.iter().all(Option::is_some);
    let legacy_possible = dev_vfio != Some(false);
    let (legacy, iommufd) = match nodes {
        Nodes::Auto => (legacy_possible || !iommufd_possible, iommufd_possible),
        Nodes::Container => (true, false),
        Nodes::Iommufd => (false, true),
        Nodes::Both => (true, true),
    };
    if legacy && !legacy_possible {
        return Err(fail(
            Exit::Negative,
            "this host has no /dev/vfio/vfio (a kernel without the VFIO container): use --nodes iommufd",
        ));
    }
    if iommufd && !iommufd_possible {
        let missing: Vec<String> =
            g.endpoints.iter().zip(&cdevs).filter(|(_, c)| c.is_none()).map(|(a, _)| a.to_string()).collect();
        let why = if dev_iommu != Some(true) {
            format!("this host {} /dev/iommu", if dev_iommu == Some(false) { "has no" } else { "is not known to have" })
        } else {
            format!(
                "{} {} no VFIO device cdev (cdevs exist while a device is on vfio-pci, on a kernel with \
                 CONFIG_VFIO_DEVICE_CDEV)",
                missing.join(", "),
                if missing.len() == 1 { "has" } else { "have" }
            )
        };
        return Err(fail(Exit::Negative, format!("IOMMU group {}: no iommufd nodes: {why}", g.group)));
    }
    let mut out = Vec::new();
    if iommufd {
        out.push(Node { path: "/dev/iommu".into() });
        out.extend(cdevs.iter().flatten().map(|c| Node { path: format!("/dev/vfio/devices/{c}") }));
    }
    if legacy {
        out.push(Node { path: "/dev/vfio/vfio".into() });
        out.push(Node { path: format!("/dev/vfio/{}", g.group) });
    }
    Ok(out)
}

/// Whether `name` is a VFIO device cdev name as the kernel makes them (`vfio` and a number): anything else
/// from a snapshot (a slash, `..`) must not become a device path.
fn is_cdev_name(name: &str) -> bool {
    name.strip_prefix("vfio").is_some_and(|n| !n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Notes on stderr for endpoints that are not on a VFIO driver yet: their nodes do not exist until then.
fn not_bound_note(snap: &Snapshot, g: &TargetGroup) {
    let off: Vec<String> = g
        .endpoints
        .iter()
        .filter(|a| !snap.device(**a).and_then(|d| d.driver.as_deref()).is_some_and(iommu_pci::drivers::is_vfio_driver))
        .map(PciAddress::to_string)
        .collect();
    if !off.is_empty() {
        warn(&format!(
            "note: IOMMU group {}: {} not on vfio-pci yet; its device nodes appear once the group is bound \
             (`iommuctl bind {}`)",
            g.group,
            off.join(", "),
            g.endpoints[0]
        ));
    }
}

/// Builds the spec for the targets' groups.
pub fn spec(snap: &Snapshot, targets: &[String], kind: &str, nodes: Nodes) -> anyhow::Result<Spec> {
    let groups = target_groups(snap, targets)?;
    refuse_unviable(snap, &groups, "a CDI spec")?;
    let mut devices = Vec::new();
    for g in &groups {
        let device_nodes = device_nodes(snap, g, nodes)?;
        not_bound_note(snap, g);
        let addresses: Vec<String> = g.endpoints.iter().map(PciAddress::to_string).collect();
        let annotations = BTreeMap::from([
            (format!("{ANNOTATION}/iommu-group"), g.group.to_string()),
            (format!("{ANNOTATION}/pci-addresses"), addresses.join(",")),
        ]);
        devices.push(Device { name: g.group.to_string(), annotations, container_edits: Edits { device_nodes } });
    }
    Ok(Spec { cdi_version: CDI_VERSION, kind: kind.to_string(), devices })
}

/// `iommuctl cdi TARGET... [--kind VENDOR/CLASS] [--nodes ...] [-o FILE]`: the spec is JSON either way.
pub fn run(
    src: &Source,
    targets: &[String],
    kind: &str,
    nodes: Nodes,
    output: Option<&Path>,
) -> anyhow::Result<Outcome> {
    let spec = spec(&src.snapshot, targets, kind, nodes)?;
    Ok(Outcome::bytes(json_text(&spec)?.into_bytes(), output.map(Path::to_path_buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_cdi_parser() {
        for good in ["iommuctl.dev/vfio", "vendor.com/foo", "foo.bar.baz/foo-bar123.B_az", "a/b"] {
            assert_eq!(parse_kind(good).as_deref(), Ok(good), "{good}");
        }
        for bad in ["foo", "vendor.com/foo/", "vendor.com/foo/bar", "/vfio", "x/", "1x/vfio", "x/-a", "x/a-", "x y/z"] {
            assert!(parse_kind(bad).is_err(), "{bad} accepted");
        }
        assert!(parse_kind(&format!("x/{}", "a".repeat(64))).is_err());
        assert!(parse_kind(&format!("x/{}", "a".repeat(63))).is_ok());
    }

    #[test]
    fn only_kernel_shaped_cdev_names_become_paths() {
        assert!(is_cdev_name("vfio0") && is_cdev_name("vfio12"));
        for bad in ["vfio", "vfio/../../etc/passwd", "vfio1 ", "noiommu-vfio0", "vfio-1", "../vfio0", "vfio\n1"] {
            assert!(!is_cdev_name(bad), "{bad:?}");
        }
    }
}
