//! Claims about completions, the man page and `--color`.

use std::process::{Command, Output};

use crate::util::{assert_contains, assert_exit, iommuctl_env, lab, ok_out, out, BIN};

/// `iommuctl ARGS` with `NO_COLOR` set to `no_color`, or unset.
fn iommuctl(args: &[&str], no_color: Option<&str>) -> Output {
    iommuctl_env(args, &[("NO_COLOR", no_color)])
}

fn lab_switch() -> String {
    lab("lab-switch.json").to_string_lossy().into()
}

#[test]
fn completions_cover_every_subcommand_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let s = ok_out(&iommuctl(&["completions", shell], None));
        for sub in ["list", "explain", "predict", "bind", "libvirt", "qemu", "export", "completions", "man"] {
            assert!(s.contains(sub), "{shell} completion lacks {sub}");
        }
        assert!(s.contains("prometheus") && s.contains("nfd"), "{shell}: export formats");
    }
    assert_eq!(iommuctl(&["completions", "tcsh"], None).status.code(), Some(2));
}

#[test]
fn man_page_is_roff_with_the_options_and_subcommands() {
    let s = ok_out(&iommuctl(&["man"], None));
    assert!(s.starts_with(".ie") || s.contains(".TH iommuctl"), "{}", &s[..200.min(s.len())]);
    assert_contains(&s, ".TH iommuctl");
    for w in ["\\-\\-color", "\\-\\-from", "libvirt", "export"] {
        assert!(s.contains(w), "man page lacks {w}");
    }
}

#[test]
fn color_always_paints_only_group_headers_and_never_or_a_pipe_does_not() {
    let f = lab_switch();
    let always = ok_out(&iommuctl(&["--from", &f, "--color", "always", "list"], Some("1")));
    let painted: Vec<&str> = always.lines().filter(|l| l.contains('\x1b')).collect();
    assert!(!painted.is_empty());
    assert!(painted.iter().all(|l| l.starts_with("\x1b[1;36mIOMMU group ") && l.ends_with("\x1b[0m")), "{always}");
    assert_eq!(painted.len(), always.lines().filter(|l| l.contains("IOMMU group")).count());
    let plain = ok_out(&iommuctl(&["--from", &f, "list"], None));
    assert!(!plain.contains('\x1b'), "auto into a pipe is plain");
    assert!(!ok_out(&iommuctl(&["--from", &f, "--color", "never", "list"], None)).contains('\x1b'));
    assert_eq!(always.replace("\x1b[1;36m", "").replace("\x1b[0m", ""), plain);
    assert_eq!(iommuctl(&["--from", &f, "--color", "sometimes", "list"], None).status.code(), Some(2));
}

#[test]
fn man_pages_exist_for_every_subcommand_and_unknown_ones_are_bad_input() {
    let s = ok_out(&iommuctl(&["man", "predict"], None));
    assert!(s.contains(".TH iommuctl-predict 1") && s.contains("what\\-if"), "{}", &s[..300.min(s.len())]);
    let dir = tempfile::tempdir().unwrap();
    let o = iommuctl(&["man", "--dir", dir.path().to_str().unwrap()], None);
    assert_exit(&o, 0);
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for sub in ["bind", "check", "explain", "export", "libvirt", "list", "predict", "qemu", "restore", "snapshot"] {
        let page = format!("iommuctl-{sub}.1");
        assert!(names.contains(&page), "no {page} in {names:?}");
        let text = std::fs::read_to_string(dir.path().join(&page)).unwrap();
        assert!(text.contains(&format!(".TH iommuctl-{sub} 1")), "{page}");
    }
    assert!(names.contains(&"iommuctl.1".to_string()));
    assert_eq!(iommuctl(&["man", "nope"], None).status.code(), Some(2));
}

/// Runs iommuctl on a pseudo-terminal (util-linux `script`), so `--color auto` sees a terminal.
fn on_a_terminal(args: &str, no_color: Option<&str>) -> String {
    let cmd = format!("{BIN} {args}");
    let mut c = Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"]).env_remove("NO_COLOR");
    if let Some(v) = no_color {
        c.env("NO_COLOR", v);
    }
    let o = c.output().expect("util-linux `script` runs a command on a pseudo-terminal");
    assert_exit(&o, 0);
    out(&o)
}

#[test]
fn color_auto_paints_on_a_terminal_unless_no_color_is_set() {
    let f = lab_switch();
    let tty = on_a_terminal(&format!("--from {f} list"), None);
    assert!(tty.contains("\x1b[1;36mIOMMU group "), "auto on a terminal paints: {tty:?}");
    let no = on_a_terminal(&format!("--from {f} list"), Some("1"));
    assert!(!no.contains('\x1b'), "NO_COLOR=1 on a terminal: {no:?}");
    // NO_COLOR counts only when set and not empty (no-color.org).
    assert!(on_a_terminal(&format!("--from {f} list"), Some("")).contains('\x1b'));
    assert!(!on_a_terminal(&format!("--from {f} --color never list"), None).contains('\x1b'));
}
