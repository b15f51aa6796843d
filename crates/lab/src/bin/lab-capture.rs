//! `lab-capture TOPOLOGY OUT.json`: boot a lab topology, run `iommuctl snapshot -o -` in it
//! and write that output to OUT.json (test fixtures from a real kernel).
//! `lab-capture --list`: print the topology names (`-v`: with kernel, IOMMU and description).
//! `lab-capture --script TOPOLOGY RUN.sh`: boot TOPOLOGY with RUN.sh as /lab/run.sh and print
//! everything the guest wrote to its output port (for experiments).

use std::path::PathBuf;
use std::process::ExitCode;

use iommu_lab::{iommuctl_bin, lab_available, topologies, topology, GuestSpec};

const USAGE: &str = "usage: lab-capture TOPOLOGY OUT.json | lab-capture --list [-v]
       lab-capture --script TOPOLOGY RUN.sh   (boot, run RUN.sh as /lab/run.sh, print the guest's output)

Boots TOPOLOGY in the real-kernel lab, runs `iommuctl snapshot -o -` inside it and writes
its stdout to OUT.json. The binary is $IOMMUCTL_BIN, else <workspace>/target/release/iommuctl.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["--list"] => {
            for t in topologies() {
                println!("{}", t.name);
            }
            ExitCode::SUCCESS
        }
        ["--list", "-v"] => {
            for t in topologies() {
                println!("{}\t{}\t{}\t{}", t.name, t.kernel, t.iommu, t.description);
            }
            ExitCode::SUCCESS
        }
        ["-h" | "--help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        ["--script", name, file] => match run_script(name, file) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lab-capture: {e}");
                ExitCode::FAILURE
            }
        },
        [name, out] if !name.starts_with('-') => match capture(name, &PathBuf::from(out)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lab-capture: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Boots `name` with `file` as /lab/run.sh and prints what the guest wrote to its output port.
fn run_script(name: &str, file: &str) -> Result<(), String> {
    let t = topology(name).ok_or_else(|| iommu_lab::LabError::UnknownTopology(name.into()).to_string())?;
    lab_available()?;
    let script = std::fs::read_to_string(file).map_err(|e| format!("read {file}: {e}"))?;
    let run =
        GuestSpec::new(&t).run_name(&format!("script-{name}")).script(&script).boot().map_err(|e| e.to_string())?;
    print!("{}", run.serial);
    eprintln!(
        "lab-capture: {name} on {} booted in {:.1} s; work dir {}",
        run.kernel_version,
        run.elapsed.as_secs_f64(),
        run.run_dir.display()
    );
    Ok(())
}

fn capture(name: &str, out: &std::path::Path) -> Result<(), String> {
    let t = topology(name).ok_or_else(|| iommu_lab::LabError::UnknownTopology(name.into()).to_string())?;
    lab_available()?;
    let bin = iommuctl_bin();
    if !bin.is_file() {
        return Err(format!(
            "{} does not exist (build it with `cargo build --release -p iommuctl` or set IOMMUCTL_BIN)",
            bin.display()
        ));
    }
    let script = format!(". /lab/lib.sh\nsection snapshot {} snapshot -o -\n", bin.display());
    let run = GuestSpec::new(&t)
        .run_name(&format!("capture-{name}"))
        .binary(&bin)
        .script(&script)
        .boot()
        .map_err(|e| e.to_string())?;
    let section = run.section("snapshot").ok_or_else(|| format!("run {}: no snapshot section", run.run_name))?;
    let stderr = run.section("snapshot.stderr").map(|s| s.stdout.clone()).unwrap_or_default();
    if section.rc != 0 {
        return Err(format!("`iommuctl snapshot -o -` exited with {} in the guest; stderr:\n{stderr}", section.rc));
    }
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&section.stdout) {
        return Err(format!("the snapshot is not valid JSON ({e}); stderr:\n{stderr}"));
    }
    std::fs::write(out, &section.stdout).map_err(|e| format!("write {}: {e}", out.display()))?;
    eprintln!(
        "lab-capture: {} on {} ({} groups, booted in {:.1} s) -> {}",
        name,
        run.kernel_version,
        run.kernel_groups.len(),
        run.elapsed.as_secs_f64(),
        out.display()
    );
    Ok(())
}
