//! `iommuctl man [SUBCOMMAND] [--dir DIR]`: man pages generated from the command-line definition.

use std::path::Path;

use crate::args::Args;
use crate::exit::{fail, Exit};
use crate::output::{sanitize, warn, Outcome};

/// The man pages: `iommuctl.1` and one `iommuctl-SUB.1` per subcommand (named like git's).
pub fn run(sub: Option<&str>, dir: Option<&Path>) -> anyhow::Result<Outcome> {
    let mut root = <Args as clap::CommandFactory>::command();
    root.build();
    let page = |cmd: clap::Command| -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        Ok(out)
    };
    let sub_page = |s: &clap::Command| {
        let name = format!("iommuctl-{}", s.get_name());
        s.clone().display_name(name)
    };
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(Exit::Failed, format!("cannot create {}: {e}", dir.display())))?;
        let mut pages = vec![("iommuctl.1".to_string(), page(root.clone())?)];
        for s in root.get_subcommands().filter(|s| s.get_name() != "help") {
            pages.push((format!("iommuctl-{}.1", s.get_name()), page(sub_page(s))?));
        }
        for (name, bytes) in &pages {
            crate::output::write_file(&dir.join(name), bytes)?;
        }
        warn(&format!("wrote {} man pages to {}", pages.len(), sanitize(&dir.display().to_string())));
        return Ok(Outcome::done(Exit::Ok));
    }
    let bytes = match sub {
        None => page(root)?,
        Some(name) => {
            let s = root
                .find_subcommand(name)
                .ok_or_else(|| fail(Exit::BadInput, format!("`{}` is not an iommuctl subcommand", sanitize(name))))?;
            page(sub_page(s))?
        }
    };
    Ok(Outcome::bytes(bytes, None))
}
