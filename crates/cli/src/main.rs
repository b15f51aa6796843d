//! `iommuctl`: see, explain and predict Linux IOMMU groups.
//!
//! Thin glue over the libraries: clap parses [`args::Args`]; [`config::Config`] validates them into an
//! [`config::Origin`] and a command (refusing what the origin cannot answer); [`cmd::run`] dispatches once
//! to the command's module, which returns a typed report; [`output::emit`] renders it (text or `--json`,
//! stdout or `-o`) and [`exit`] maps failures to exit codes.

mod args;
mod cmd;
mod config;
mod exit;
mod output;
mod render;
mod source;

use std::process::ExitCode;

use clap::Parser;

use crate::args::Args;
use crate::config::Config;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        // Help and version go to stdout (exit 0); argument errors to stderr (exit 2), each line made safe
        // and cut: clap echoes the offending value whole.
        Err(e) if !e.use_stderr() => {
            let _ = output::stdout(&e.render().to_string());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            for line in e.render().to_string().lines() {
                output::warn(&output::message(line));
            }
            return exit::Exit::BadInput.into();
        }
    };
    let result = Config::from_args(args).and_then(|cfg| {
        let outcome = cmd::run(&cfg)?;
        output::emit(outcome, cfg.json)
    });
    match result {
        Ok(code) => code.into(),
        Err(e) if exit::is_broken_pipe(&e) => ExitCode::SUCCESS, // the reader went away (`| head`)
        Err(e) => {
            let code = exit::code_for(&e);
            output::warn(&format!("iommuctl: {}", output::message(&format!("{e:#}"))));
            code.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Args::command().debug_assert();
    }
}
