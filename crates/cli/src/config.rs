//! The validated run: where the host comes from ([`Origin`]), how to print, and the command. Everything
//! that can be refused before touching a host is refused here, in one place.

use std::path::{Path, PathBuf};

use crate::args::{Args, Command};
use crate::exit::{fail, Exit};
use crate::render::use_color;
#[cfg(test)]
use crate::render::ColorWhen;

/// Where the facts come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A live host below a root directory (`/`, or `--root DIR`).
    Live {
        /// The root directory.
        root: PathBuf,
    },
    /// A snapshot file written by `iommuctl snapshot` (`--from FILE`).
    Snapshot(PathBuf),
    /// `lspci -x`/`-xxxx` or `-v`/`-vv` output from another machine (`--from-lspci FILE`, `-` for standard
    /// input). With `IOMMU group:` lines it also carries that machine's kernel groups.
    Lspci(PathBuf),
}

impl Origin {
    /// The root of a live host; `None` for a snapshot or a dump.
    pub fn live_root(&self) -> Option<&Path> {
        match self {
            Origin::Live { root } => Some(root),
            _ => None,
        }
    }

    /// Where pci.ids is looked up: below a live root, else on this machine.
    pub fn ids_root(&self) -> &Path {
        self.live_root().unwrap_or(Path::new("/"))
    }
}

/// What a command needs from the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: it does not read a host (`sim`, `man`, `completions`).
    Nothing,
    /// Config space is enough (`predict`, `show`, `explain`, `graph`, `list` answers for a dump).
    ConfigSpace,
    /// The kernel's groups, drivers and settings (`check`, `status`, `export`, `qemu`, `libvirt`).
    KernelState,
    /// A live host it may change or open (`bind`, `restore`, `persist`, `probe`).
    LiveHost,
    /// The hosts its operands name (`diff A B`): `--root` only says where `live` is.
    Operands,
}

impl Command {
    /// What the command needs from the origin.
    pub fn needs(&self) -> Needs {
        match self {
            Command::Sim | Command::Man { .. } | Command::Completions { .. } => Needs::Nothing,
            Command::List
            | Command::Show { .. }
            | Command::Explain { .. }
            | Command::Predict { .. }
            | Command::Graph { .. }
            | Command::Snapshot { .. } => Needs::ConfigSpace,
            Command::Check
            | Command::Status
            | Command::Export { .. }
            | Command::Qemu { .. }
            | Command::Libvirt { .. }
            | Command::Cdi { .. }
            | Command::Kubevirt { .. } => Needs::KernelState,
            Command::Diff { .. } => Needs::Operands,
            Command::Bind { .. } | Command::Restore { .. } | Command::Persist { .. } | Command::Probe { .. } => {
                Needs::LiveHost
            }
        }
    }

    /// The subcommand's name as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::List => "list",
            Command::Show { .. } => "show",
            Command::Explain { .. } => "explain",
            Command::Predict { .. } => "predict",
            Command::Bind { .. } => "bind",
            Command::Restore { .. } => "restore",
            Command::Status => "status",
            Command::Persist { .. } => "persist",
            Command::Probe { .. } => "probe",
            Command::Sim => "sim",
            Command::Check => "check",
            Command::Libvirt { .. } => "libvirt",
            Command::Qemu { .. } => "qemu",
            Command::Cdi { .. } => "cdi",
            Command::Kubevirt { .. } => "kubevirt",
            Command::Diff { .. } => "diff",
            Command::Export { .. } => "export",
            Command::Graph { .. } => "graph",
            Command::Completions { .. } => "completions",
            Command::Man { .. } => "man",
            Command::Snapshot { .. } => "snapshot",
        }
    }
}

/// A run, validated.
#[derive(Debug)]
pub struct Config {
    /// Where the host comes from.
    pub origin: Origin,
    /// Where bind keeps its journal and lock.
    pub state_dir: PathBuf,
    /// `--json`.
    pub json: bool,
    /// Whether text output is coloured (from `--color`, NO_COLOR and whether stdout is a terminal).
    pub color: bool,
    /// What to do.
    pub command: Command,
}

impl Config {
    /// Validates the arguments: the origin, and whether the command can answer from it.
    pub fn from_args(args: Args) -> anyhow::Result<Config> {
        let origin = match (args.root, args.from, args.from_lspci) {
            (_, _, Some(f)) => Origin::Lspci(f),
            (_, Some(f), None) => Origin::Snapshot(f),
            (root, None, None) => Origin::Live { root: root.unwrap_or_else(|| PathBuf::from("/")) },
        };
        let command = args.command.unwrap_or(Command::List);
        check_origin(&command, &origin)?;
        if args.json && matches!(command, Command::Export { .. }) {
            return Err(fail(Exit::BadInput, "--json does not apply to export: it writes --format prometheus or nfd"));
        }
        if args.json && matches!(command, Command::Graph { .. }) {
            return Err(fail(Exit::BadInput, "--json does not apply to graph: it writes --format svg or dot"));
        }
        let color = {
            use std::io::IsTerminal;
            use_color(args.color, std::env::var_os("NO_COLOR").as_deref(), std::io::stdout().is_terminal())
        };
        Ok(Config { origin, state_dir: args.state_dir, json: args.json, color, command })
    }

    /// Whether `--color` asked for colour whatever the terminal (tests of the flag).
    #[cfg(test)]
    pub fn color_for(when: ColorWhen) -> bool {
        use_color(when, None, false)
    }
}

/// Refuses a command the origin cannot answer, with exit 2 and what to do instead.
fn check_origin(command: &Command, origin: &Origin) -> anyhow::Result<()> {
    let what = command.name();
    match (command.needs(), origin) {
        (Needs::LiveHost, Origin::Snapshot(_)) => Err(fail(Exit::BadInput, live_only(command, "--from a snapshot"))),
        (Needs::LiveHost, Origin::Lspci(_)) => Err(fail(Exit::BadInput, live_only(command, "--from-lspci a dump"))),
        (Needs::KernelState, Origin::Lspci(_)) => Err(fail(
            Exit::BadInput,
            format!(
                "{what} needs the kernel's groups, drivers and settings, and an lspci dump has only config space; \
                 run it on the host itself (or on `iommuctl snapshot` output from it)"
            ),
        )),
        (Needs::Operands, Origin::Snapshot(_) | Origin::Lspci(_)) => Err(fail(
            Exit::BadInput,
            format!("{what} takes both hosts as operands (snapshot files, lspci dumps, `-` or `live`), not --from or --from-lspci"),
        )),
        _ => Ok(()),
    }
}

fn live_only(command: &Command, from: &str) -> String {
    let what = command.name();
    match command {
        Command::Probe { .. } => format!("probe opens a live device; it cannot run {from}"),
        _ => format!("{what} changes a live host; it cannot run {from}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_answers_config_space_questions_only() {
        let dump = Origin::Lspci("x".into());
        assert!(check_origin(&Command::Check, &dump).is_err());
        assert!(check_origin(&Command::List, &dump).is_ok());
        assert!(check_origin(&Command::Status, &Origin::Snapshot("s".into())).is_ok());
        assert!(check_origin(&Command::Sim, &dump).is_ok());
    }

    #[test]
    fn only_a_live_host_can_be_changed() {
        let bind = Command::Bind { target: "x".into(), driver: "vfio-pci".into(), dry_run: true, force: false };
        assert!(check_origin(&bind, &Origin::Snapshot("s".into())).is_err());
        assert!(check_origin(&bind, &Origin::Live { root: "/".into() }).is_ok());
        assert!(Config::color_for(ColorWhen::Always));
    }
}
