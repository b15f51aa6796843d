//! The configs iommuctl writes, checked by the tools that consume them: every `libvirt` output shape
//! wrapped in a minimal domain and checked by libvirt's own `virt-xml-validate` (Debian's libvirt-clients),
//! and the `export --format prometheus` output of every lab snapshot checked by `promtool check metrics` (Debian's prometheus).
//! Each validator is first shown to reject a broken input, so a validator that accepts anything fails here.
//! A missing tool fails under CI (`scripts/lab-setup` installs them) and is reported as skipped elsewhere.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::{err, from, lab_snapshots, out};

/// The tool's path, or `None` (and a SKIPPED line) when it is not installed outside CI.
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!ci, "{name} ({package}) is not installed, and CI=true: scripts/lab-setup installs it");
        println!("SKIPPED: {name} ({package}) is not installed");
    }
    found
}

/// `tool ARGS` with `input` on standard input: (success, stdout + stderr).
fn run(tool: &Path, args: &[&str], input: &[u8]) -> (bool, String) {
    let mut c = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A tool that stops reading early (it found an error) closes the pipe: its own message says why.
    let _ = c.stdin.take().unwrap().write_all(input);
    let o = c.wait_with_output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// A minimal domain with `devices` in its `<devices>`.
fn domain(devices: &str) -> String {
    format!(
        "<domain type='kvm'>\n  <name>iommuctl-validate</name>\n  <memory unit='MiB'>256</memory>\n  \
         <os><type arch='x86_64' machine='q35'>hvm</type></os>\n  <devices>\n{devices}\n  </devices>\n</domain>\n"
    )
}

/// libvirt 9.0's schema (Debian 12) predates `<driver iommufd='yes'/>` on a PCI `<hostdev>`: libvirt's
/// newer schema adds that one optional attribute to the hostdev `driver` element (and makes `name`
/// optional). This copy of the installed schema gets exactly that change and nothing else.
fn schema_with_iommufd(dir: &Path) -> PathBuf {
    let src = Path::new("/usr/share/libvirt/schemas");
    for e in std::fs::read_dir(src).unwrap_or_else(|e| panic!("{}: {e} (libvirt-clients' schemas)", src.display())) {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let common = std::fs::read_to_string(dir.join("domaincommon.rng")).unwrap();
    let squeeze = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let old = squeeze(
        "<element name=\"driver\"> <attribute name=\"name\"> <choice> <value>kvm</value> <value>vfio</value> \
         <value>xen</value> </choice> </attribute> <empty/> </element>",
    );
    let new = "<element name=\"driver\"> <optional> <attribute name=\"name\"> <choice> <value>kvm</value> \
               <value>vfio</value> <value>xen</value> </choice> </attribute> </optional> <optional> <attribute \
               name=\"iommufd\"> <choice> <value>yes</value> <value>no</value> </choice> </attribute> </optional> \
               <empty/> </element>";
    // Match the element whatever its indentation: compare with runs of whitespace squeezed.
    let flat = squeeze(&common);
    assert_eq!(flat.matches(&old).count(), 1, "the hostdev driver element of libvirt's schema changed");
    std::fs::write(dir.join("domaincommon.rng"), flat.replace(&old, new)).unwrap();
    dir.join("domain.rng")
}

#[test]
fn every_libvirt_output_shape_validates_against_libvirts_domain_schema() {
    let (Some(validate), Some(xmllint)) =
        (tool("virt-xml-validate", "libvirt-clients"), tool("xmllint", "libxml2-utils"))
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("domain.xml");
    let installed = |xml: &str| -> (bool, String) {
        std::fs::write(&f, xml).unwrap();
        run(&validate, &[f.to_str().unwrap(), "domain"], b"")
    };
    // Does the installed libvirt know <driver iommufd='yes'/> on a PCI hostdev? (12.2 and later do; Debian
    // 12's 9.0 does not, and then the schema gets the one attribute newer libvirt adds.)
    let probe = domain(
        "<hostdev mode='subsystem' type='pci' managed='yes'><driver iommufd='yes'/><source>\
         <address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source></hostdev>",
    );
    let native_iommufd = installed(&probe).0;
    let patched = (!native_iommufd).then(|| {
        let schemas = tmp.path().join("schemas");
        std::fs::create_dir_all(&schemas).unwrap();
        schema_with_iommufd(&schemas)
    });
    let check = |xml: &str, iommufd: bool| -> (bool, String) {
        match (&patched, iommufd) {
            (Some(schema), true) => {
                std::fs::write(&f, xml).unwrap();
                run(&xmllint, &["--noout", "--relaxng", schema.to_str().unwrap(), f.to_str().unwrap()], b"")
            }
            _ => installed(xml),
        }
    };
    // The validators reject what libvirt would: a bad address, and iommufd under libvirt 9.0's own schema.
    let bad = domain("<hostdev mode='subsystem' type='pci'><source><address bus='0x1zz'/></source></hostdev>");
    assert!(!check(&bad, false).0 && !check(&bad, true).0, "a broken hostdev validated");
    let mut validated = 0;
    for snap in lab_snapshots() {
        let listing = from(&snap, &["list", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
        for g in v["groups"].as_array().unwrap() {
            let Some(first) = g["devices"][0]["address"].as_str() else { continue };
            for shape in [&[][..], &["--guest-slot", "8"], &["--iommufd"]] {
                let o = from(&snap, &[&["libvirt", first][..], shape].concat());
                if o.status.code() != Some(0) {
                    continue; // a group with no endpoint to assign (bridges only): nothing to validate
                }
                let xml = domain(&out(&o));
                let iommufd = shape == ["--iommufd"];
                let (ok, msg) = check(&xml, iommufd);
                assert!(ok, "{} libvirt {first} {shape:?} does not validate:\n{msg}\n{xml}", snap.display());
                if iommufd && patched.is_some() {
                    assert!(!check(&xml, false).0, "the installed schema took iommufd after the probe said it did not");
                }
                validated += 1;
            }
        }
    }
    println!("libvirt: {validated} outputs validated");
    assert!(validated >= 30, "only {validated} libvirt outputs to validate");
}

#[test]
fn every_prometheus_export_passes_promtool() {
    let Some(promtool) = tool("promtool", "prometheus") else { return };
    let (ok, _) = run(&promtool, &["check", "metrics"], b"# TYPE x counter\n# TYPE x gauge\nx{a=\"1\" 2\n");
    assert!(!ok, "promtool accepted a broken exposition");
    // Every snapshot export can read: the lab's (lspci pastes have no drivers or settings to export).
    let inputs: Vec<Vec<String>> =
        lab_snapshots().iter().map(|s| vec!["--from".to_string(), s.display().to_string()]).collect();
    for input in &inputs {
        let args: Vec<&str> = input.iter().map(String::as_str).chain(["export", "--format", "prometheus"]).collect();
        let o = crate::util::iommuctl(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", err(&o));
        let (ok, msg) = run(&promtool, &["check", "metrics"], &o.stdout);
        assert!(ok, "{args:?}: promtool check metrics:\n{msg}");
    }
    println!("prometheus: {} exports passed promtool", inputs.len());
    assert!(inputs.len() >= 7, "only {} exports", inputs.len());
}
