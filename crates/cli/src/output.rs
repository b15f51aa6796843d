//! Everything iommuctl prints or writes goes through here: standard output and error without panics, `-o`
//! files through the one safe writer, and text from the system through the one sanitizer.
//!
//! The rules:
//! - Nothing panics on output: no `println!`/`eprintln!` (they panic when stdout is a closed pipe or a
//!   full disk). A closed pipe (`iommuctl list | head -1`) ends the run quietly with exit 0; any other
//!   write failure is an error (exit 4).
//! - A state-changing command prints through [`Deferred`]: a failing write never interrupts a bind or a
//!   restore half way; it is reported once the change has finished or rolled back.
//! - Standard error is best effort ([`warn`]): there is nowhere left to report its own failure.
//! - Text that came from the system, a file or the user goes through [`sanitize`] before a terminal sees
//!   it; JSON is written exactly (serde escapes control characters itself).

use std::io::{self, Write};
use std::path::Path;

pub use iommu_pci::text::{clip, sanitize};

use crate::exit::{fail, Exit};

/// A message for the user: sanitized, every run of over 128 characters without a space cut (a 10 KB
/// argument echoed by a parser must not flood the terminal), and at most 4096 characters in all.
pub fn message(text: &str) -> String {
    let clean = sanitize(text);
    let words: Vec<String> = clean.split(' ').map(|w| clip(w, 128)).collect();
    clip(&words.join(" "), 4096)
}

/// Writes `text` to standard output.
pub fn stdout(text: &str) -> io::Result<()> {
    stdout_bytes(text.as_bytes())
}

/// Writes `bytes` to standard output.
pub fn stdout_bytes(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// Writes one line to standard error, ignoring failure.
pub fn warn(line: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Pretty JSON of `v`, with a trailing newline.
pub fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> anyhow::Result<String> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    Ok(s)
}

/// Writes `v` as pretty JSON to standard output.
pub fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Writes a command's whole output to standard output (no FILE, or `-`) or atomically to FILE through
/// [`iommu_fsio::write_atomic`]; a failed write exits 4 naming the file.
pub fn write_output(output: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match output {
        None => stdout_bytes(bytes)?,
        Some(p) if p == Path::new("-") => stdout_bytes(bytes)?,
        Some(p) => write_file(p, bytes)?,
    }
    Ok(())
}

/// Writes FILE atomically (mode 0644 before the umask); a failure exits 4 with the OS error.
pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    iommu_fsio::write_atomic(path, bytes, 0o644).map_err(|e| fail(Exit::Failed, sanitize(&e.to_string())))
}

/// Output of a state-changing command. Writes go to standard output as they come; the first failure is
/// kept and later writes are skipped, so the command carries on with its change. [`Deferred::finish`]
/// then reports it: nothing for a closed pipe (the reader left), exit 4 for anything else.
#[derive(Debug, Default)]
pub struct Deferred {
    error: Option<io::Error>,
}

impl Deferred {
    /// A new, clean output.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prints one line (already sanitized by the caller where it holds system text).
    pub fn line(&mut self, line: &str) {
        if self.error.is_none() {
            let mut out = io::stdout().lock();
            if let Err(e) = writeln!(out, "{line}").and_then(|_| out.flush()) {
                self.error = Some(e);
            }
        }
    }

    /// Prints `v` as pretty JSON.
    pub fn json<T: serde::Serialize + ?Sized>(&mut self, v: &T) {
        if self.error.is_none() {
            match json_text(v) {
                Ok(t) => {
                    if let Err(e) = stdout(&t) {
                        self.error = Some(e);
                    }
                }
                Err(e) => self.error = Some(io::Error::other(e.to_string())),
            }
        }
    }

    /// The verdict on the output, once the change is done: `Ok` when every write went through or the
    /// reader closed the pipe; exit 4 naming the error otherwise.
    pub fn finish(self, what: &str) -> anyhow::Result<()> {
        match self.error {
            None => Ok(()),
            Some(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            Some(e) => Err(fail(Exit::Failed, format!("{what} finished, but its output could not be written: {e}"))),
        }
    }
}
