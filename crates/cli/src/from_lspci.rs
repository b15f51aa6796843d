//! `--from-lspci FILE`: the read-only commands on `lspci -x`/`-xxx`/`-xxxx` output from another machine.
//! The dump has config space only: no kernel groups, drivers or command line (see `iommu_host::lspci`).

use std::path::Path;

use iommu_host::{LspciDump, Snapshot};
use serde_json::json;

use crate::commands::print_json;
use crate::exit::{fail, Exit};
use crate::output::warn;
use crate::render::sanitize;
use crate::Cli;

/// Reads the dump (`-` for standard input) and tells the user on stderr what it cannot say.
pub(crate) fn load(path: &Path) -> anyhow::Result<Snapshot> {
    let dump = LspciDump::load(path).map_err(|e| match e {
        // A read error names the file already; a parse error does not.
        iommu_host::LspciError::Read { .. } => anyhow::Error::new(e),
        _ => anyhow::Error::new(e).context(format!("lspci dump {}", path.display())),
    })?;
    for w in dump.warnings() {
        warn(&format!("warning: {}", sanitize(&w)));
    }
    for n in dump.inferences() {
        warn(&format!("note: {}", sanitize(&n)));
    }
    Ok(dump.snapshot)
}

fn shown(cli: &Cli) -> String {
    cli.from_lspci.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "FILE".into())
}

/// `list` on a dump: there are no kernel groups to list, and that says nothing about the IOMMU.
pub(crate) fn list(cli: &Cli) -> anyhow::Result<Exit> {
    let msg = format!(
        "an lspci dump holds config space only, no kernel IOMMU groups; `iommuctl --from-lspci {} predict` \
         shows the groups Linux would form",
        sanitize(&shown(cli))
    );
    if cli.json {
        print_json(&json!({ "groups": [], "iommu_enabled": null, "source": "lspci", "message": msg }))?;
    }
    Err(fail(Exit::Negative, msg))
}

/// `predict --diff` on a dump: nothing to compare with.
pub(crate) fn no_diff() -> anyhow::Error {
    fail(
        Exit::BadInput,
        "predict --diff compares with the kernel's groups, and an lspci dump has none; run predict without --diff",
    )
}

/// Commands that answer from kernel state a dump does not have (groups, drivers, modules, the command
/// line): refused with exit 2 instead of an answer that would read as "this host has no IOMMU".
pub(crate) fn needs_kernel_state(command: &str) -> anyhow::Error {
    fail(
        Exit::BadInput,
        format!(
            "{command} needs the kernel's groups, drivers and settings, and an lspci dump has only config space; \
             run it on the host itself (or on `iommuctl snapshot` output from it)"
        ),
    )
}
