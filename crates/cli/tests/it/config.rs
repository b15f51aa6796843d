//! Claims about `libvirt` and `qemu` on lab snapshots: every endpoint of the target's kernel group, no
//! bridges, the multifunction layout kept, errors that name their input.

use crate::util::{addresses, assert_contains, assert_exit, err, json, on_lab, out};

#[test]
fn libvirt_prints_a_hostdev_for_every_endpoint_of_the_group() {
    // group 9 of lab-everything: an NVMe at 00:10.0 and an edu at 00:10.1 share a slot.
    let o = on_lab("lab-everything.json", &["libvirt", "00:10.1"]);
    assert_exit(&o, 0);
    let s = out(&o);
    assert_eq!(s.matches("<hostdev mode='subsystem' type='pci' managed='yes'>").count(), 2, "{s}");
    assert_contains(&s, "<address domain='0x0000' bus='0x00' slot='0x10' function='0x0'/>");
    assert_contains(&s, "<address domain='0x0000' bus='0x00' slot='0x10' function='0x1'/>");
    assert_eq!(s.matches("<source>").count(), 2);
    assert_eq!(s.matches("</hostdev>").count(), 2);
}

#[test]
fn libvirt_with_a_guest_slot_keeps_the_multifunction_layout_in_the_guest() {
    let o = on_lab("lab-everything.json", &["libvirt", "00:10.1", "--guest-slot", "0x9"]);
    assert_exit(&o, 0);
    let s = out(&o);
    let guest: Vec<&str> = s.lines().filter(|l| l.contains("<address type='pci'")).map(str::trim).collect();
    assert_eq!(
        guest,
        [
            "<address type='pci' domain='0x0000' bus='0x00' slot='0x09' function='0x0' multifunction='on'/>",
            "<address type='pci' domain='0x0000' bus='0x00' slot='0x09' function='0x1'/>",
        ],
        "{s}"
    );
    // The guest address sits after </source>, inside its <hostdev>.
    assert_contains(&s, "</source>\n  <address type='pci'");
    let o = on_lab("lab-everything.json", &["libvirt", "00:10.1", "--guest-slot", "0x20"]);
    assert_exit(&o, 2);
}

#[test]
fn libvirt_leaves_bridges_out() {
    // group 13: root ports 00:1d.0 and 00:1d.1 (bridges) with 0e:00.0 and 0f:00.0 below them.
    let o = on_lab("lab-everything.json", &["--json", "libvirt", "0e:00.0"]);
    assert_exit(&o, 0);
    let v = json(&o);
    assert_eq!(v["group"], 13);
    assert_eq!(addresses(&v), ["0000:0e:00.0", "0000:0f:00.0"]);
    assert_eq!(v["devices"][1]["bus"], "0x0f");
    assert_eq!(v["xml"].as_str().unwrap().matches("<hostdev ").count(), 2);
}

#[test]
fn qemu_keeps_the_multifunction_layout() {
    // group 14: ICH9 functions 00:1f.0, 00:1f.2, 00:1f.3.
    let o = on_lab("lab-everything.json", &["qemu", "00:1f.3"]);
    assert_exit(&o, 0);
    assert_eq!(
        out(&o),
        "-device vfio-pci,host=0000:00:1f.0,multifunction=on,addr=0x10.0x0 \\\n\
         -device vfio-pci,host=0000:00:1f.2,addr=0x10.0x2 \\\n\
         -device vfio-pci,host=0000:00:1f.3,addr=0x10.0x3\n"
    );
    assert_contains(&err(&o), "not on vfio-pci yet");
}

#[test]
fn qemu_json_has_the_arguments_and_each_host_slot_gets_a_guest_slot() {
    let o = on_lab("lab-everything.json", &["--json", "qemu", "0e:00.0", "--guest-slot", "5"]);
    assert_exit(&o, 0);
    let v = json(&o);
    assert_eq!(
        v["args"],
        serde_json::json!([
            "-device",
            "vfio-pci,host=0000:0e:00.0,addr=0x5.0x0",
            "-device",
            "vfio-pci,host=0000:0f:00.0,addr=0x6.0x0"
        ])
    );
    assert_eq!(v["devices"][0]["multifunction"], false);
}

#[test]
fn every_endpoint_of_every_lab_group_appears_exactly_once() {
    for snap in ["lab-everything.json", "lab-switch.json", "lab-amd-mixed.json", "lab-mf-rp-noacs.json"] {
        let list = json(&on_lab(snap, &["--json", "list"]));
        for g in list["groups"].as_array().unwrap() {
            let eps: Vec<&str> = g["devices"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["class_id"].as_str().is_some_and(|c| !c.starts_with("0604")))
                .map(|d| d["address"].as_str().unwrap())
                .collect();
            let first = g["devices"][0]["address"].as_str().unwrap();
            let o = on_lab(snap, &["--json", "qemu", first]);
            if eps.is_empty() {
                assert_eq!(o.status.code(), Some(1), "{snap} group {}", g["id"]);
                assert_contains(&err(&o), "holds only bridges");
                continue;
            }
            assert_eq!(o.status.code(), Some(0), "{snap} {first}: {}", err(&o));
            let v = json(&o);
            assert_eq!(addresses(&v), eps, "{snap} group {}", g["id"]);
            let multi = v["devices"].as_array().unwrap().iter().filter(|d| d["multifunction"] == true).count();
            let mut slots: Vec<&str> = eps.iter().map(|a| &a[..10]).collect();
            let n = slots.len();
            slots.dedup();
            assert!(multi <= slots.len() && (n == slots.len()) == (multi == 0), "{snap}: {v}");
        }
    }
}

#[test]
fn errors_name_their_input() {
    let o = on_lab("lab-everything.json", &["qemu", "77:00.0"]);
    assert_exit(&o, 1);
    assert_contains(&err(&o), "0000:77:00.0");
    let o = on_lab("lab-everything.json", &["libvirt", "zz"]);
    assert_exit(&o, 2);
    assert_contains(&err(&o), "zz");
    let o = on_lab("lab-everything.json", &["qemu", "00:10.0", "--guest-slot", "0x20"]);
    assert_exit(&o, 2);
    assert_contains(&err(&o), "0x20");
    let o = on_lab("lab-everything.json", &["qemu", "00:02.0"]);
    assert_exit(&o, 1);
    assert_contains(&err(&o), "00:02.0");
}

#[test]
fn qemu_with_iommufd_adds_the_object_once_and_names_it_on_every_device() {
    let o = on_lab("lab-everything.json", &["qemu", "00:1f.3", "--iommufd"]);
    assert_exit(&o, 0);
    assert_eq!(
        out(&o),
        "-object iommufd,id=iommufd0 \\\n\
         -device vfio-pci,host=0000:00:1f.0,multifunction=on,addr=0x10.0x0,iommufd=iommufd0 \\\n\
         -device vfio-pci,host=0000:00:1f.2,addr=0x10.0x2,iommufd=iommufd0 \\\n\
         -device vfio-pci,host=0000:00:1f.3,addr=0x10.0x3,iommufd=iommufd0\n"
    );
    let v = json(&on_lab("lab-everything.json", &["--json", "qemu", "00:1f.3", "--iommufd"]));
    assert_eq!(v["args"][0], "-object");
    assert_eq!(v["args"][1], "iommufd,id=iommufd0");
    assert_eq!(v["args"].as_array().unwrap().len(), 8);
}

#[test]
fn libvirt_with_iommufd_puts_the_driver_element_in_every_hostdev() {
    let o = on_lab("lab-everything.json", &["libvirt", "00:10.1", "--iommufd"]);
    assert_exit(&o, 0);
    let s = out(&o);
    assert_eq!(
        s.matches("<hostdev mode='subsystem' type='pci' managed='yes'>\n  <driver iommufd='yes'/>\n").count(),
        2,
        "{s}"
    );
    let plain = out(&on_lab("lab-everything.json", &["libvirt", "00:10.1"]));
    assert!(!plain.contains("iommufd"), "{plain}");
}
