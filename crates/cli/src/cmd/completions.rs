//! `iommuctl completions SHELL`: a completion script generated from the command-line definition.

use crate::args::Args;
use crate::output::Outcome;

/// `iommuctl completions SHELL`.
pub fn run(shell: clap_complete::Shell) -> Outcome {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut <Args as clap::CommandFactory>::command(), "iommuctl", &mut out);
    Outcome::bytes(out, None)
}
