//! `iommuctl snapshot -o FILE`: everything the read-only commands need, in one JSON file.

use std::path::Path;

use crate::exit::Exit;
use crate::output::{sanitize, warn, write_file, Outcome};
use crate::source::Source;

/// `iommuctl snapshot -o FILE` (`-` for standard output).
pub fn run(src: &Source, output: &Path) -> anyhow::Result<Outcome> {
    let text = format!("{}\n", src.snapshot.to_json());
    if output == Path::new("-") {
        return Ok(Outcome::bytes(text.into_bytes(), None));
    }
    write_file(output, text.as_bytes())?;
    warn(&format!(
        "wrote {} ({} functions, {} groups)",
        sanitize(&output.display().to_string()),
        src.snapshot.devices.len(),
        src.snapshot.groups.len()
    ));
    Ok(Outcome::done(Exit::Ok))
}
