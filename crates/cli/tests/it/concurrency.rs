//! Concurrency: four `iommuctl` processes — a bind, a restore and two persists — run at once on a `--root`
//! tree, round after round. They serialize on the state-dir lock (a process lock: `flock` on the lock file),
//! so after every round the journal is valid and holds exactly what it should, and the udev rule and the
//! modprobe conf hold every persisted device and softdep exactly once, with every line parsing.
//!
//! On the fake tree nothing moves a device between drivers, so the bind rolls back every time (its journal
//! entry comes and goes inside the lock), and the restore always fails for one seeded entry (a device that
//! stays on vfio-pci), which must survive every round untouched.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use iommu_host::journal::Journal;
use iommu_host::persist::{parse_softdep_line, persisted, MODPROBE_CONF, UDEV_RULE};
use iommu_pci::PciAddress;

use crate::util::{err, journal, out, Tree};

const ROUNDS: usize = 100;

fn names_in(dir: &std::path::Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn concurrent_bind_restore_and_persist_keep_journal_and_rules_whole() {
    let t = Tree::new();
    let bind_dev = t.endpoint(1, 1, Some("nvme"));
    let persist_devs =
        [t.endpoint(2, 2, Some("nvme")), t.endpoint(3, 3, Some("snd_hda_intel")), t.endpoint(4, 4, Some("xhci_hcd"))];
    let stuck = t.endpoint(5, 5, Some("vfio-pci"));
    // A journal entry restore can never finish on this tree: 05:00.0 stays on vfio-pci.
    fs::create_dir(&t.state).unwrap();
    fs::set_permissions(&t.state, fs::Permissions::from_mode(0o700)).unwrap();
    let seeded = journal(&[(&stuck, 5, "nvme")]);
    fs::write(t.journal_path(), &seeded).unwrap();
    let seeded = Journal::parse(seeded.as_bytes()).unwrap();
    let host_driver = ["nvme", "snd_hda_intel", "xhci_hcd"];

    let started = Instant::now();
    let mut rounds = 0;
    for round in 0..ROUNDS {
        for f in [UDEV_RULE, MODPROBE_CONF] {
            let _ = fs::remove_file(t.root.join(f));
        }
        // Two of the three persistable devices each round, in turn.
        let (p1, p2) = (round % 3, (round + 1) % 3);
        let args: [Vec<&str>; 4] = [
            vec!["bind", &bind_dev],
            vec!["restore", "--all"],
            vec!["persist", &persist_devs[p1]],
            vec!["persist", &persist_devs[p2]],
        ];
        let children: Vec<_> =
            args.iter().map(|a| t.command(a).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()).collect();
        let outs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
        let ctx = |i: usize| format!("round {round} {:?}: {}{}", args[i], out(&outs[i]), err(&outs[i]));

        assert_eq!(outs[0].status.code(), Some(4), "{}", ctx(0));
        assert!(err(&outs[0]).contains("rolled back: 0000:01:00.0 back on their original drivers"), "{}", ctx(0));
        assert_eq!(outs[1].status.code(), Some(4), "{}", ctx(1));
        assert!(out(&outs[1]).contains("0000:05:00.0 NOT restored"), "{}", ctx(1));
        assert!(!out(&outs[1]).contains("0000:01:00.0"), "restore saw the bind's entry: {}", ctx(1));
        assert_eq!(outs[2].status.code(), Some(0), "{}", ctx(2));
        assert_eq!(outs[3].status.code(), Some(0), "{}", ctx(3));

        // The journal: valid, exactly the seeded entry, no temporary files left.
        let j = Journal::parse(&fs::read(t.journal_path()).unwrap()).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(j, seeded, "round {round}");
        assert_eq!(
            names_in(&t.state),
            BTreeSet::from(["journal.json".to_string(), "lock".to_string()]),
            "round {round}"
        );

        // The rule: both devices of this round, once each, every line parsing.
        let rules = persisted(&t.root).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let got: Vec<PciAddress> = rules.iter().map(|p| p.address).collect();
        let mut want: Vec<PciAddress> = [p1, p2].iter().map(|&i| persist_devs[i].parse().unwrap()).collect();
        want.sort();
        assert_eq!(got, want, "round {round}: {}", t.read(UDEV_RULE));
        assert!(rules.iter().all(|p| p.driver.as_str() == "vfio-pci"));
        // The conf: the two host drivers' softdeps, once each, every other line a comment.
        let conf = t.read(MODPROBE_CONF);
        let mut deps = Vec::new();
        for l in conf.lines().filter(|l| !l.starts_with('#')) {
            let (m, pre) = parse_softdep_line(l).unwrap_or_else(|| panic!("round {round}: bad line {l:?} in {conf}"));
            assert_eq!(pre.as_str(), "vfio-pci");
            deps.push(m.to_string());
        }
        let mut want: Vec<String> = [p1, p2].iter().map(|&i| host_driver[i].to_string()).collect();
        want.sort();
        assert_eq!(deps, want, "round {round}: {conf}");
        for f in [UDEV_RULE, MODPROBE_CONF] {
            let dir = t.root.join(f);
            assert_eq!(names_in(dir.parent().unwrap()).len(), 1, "round {round}: temporary files beside {f}");
        }
        // The bound device is back as it was: override cleared, still on nvme.
        assert_eq!(t.read("sys/devices/pci0000:00/0000:01:00.0/driver_override").trim(), "", "round {round}");
        rounds += 1;
        assert!(started.elapsed() < Duration::from_secs(120), "too slow: {rounds} rounds so far");
    }
    // Straight to the process's stderr: the harness hides `eprintln!` of passing tests, and the count is
    // the point.
    {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr().lock(),
            "concurrency: {rounds} rounds of 4 processes in {:.1?}",
            started.elapsed()
        );
    }
}
