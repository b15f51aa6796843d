//! Everything iommuctl prints or writes goes through here: standard output and error without panics, `-o`
//! files through the one safe writer, and text from the system through the one sanitizer.
//!
//! Commands return an [`Outcome`]: a typed report (`Serialize + Display`) that [`emit`] renders once, as
//! text or `--json`; or bytes for standard output or a `-o` file (export, graph, snapshot, man pages); and
//! the exit code, with the sentence that goes with a negative answer.
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

use std::fmt::Display;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

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

/// A report a command produced: shown as text (its `Display`) or JSON (its `Serialize`).
pub trait Render {
    /// The text form.
    fn text(&self) -> String;
    /// The JSON form (pretty, with a trailing newline).
    fn json(&self) -> anyhow::Result<String>;
}

impl<T: Serialize + Display> Render for T {
    fn text(&self) -> String {
        self.to_string()
    }

    fn json(&self) -> anyhow::Result<String> {
        json_text(self)
    }
}

/// What a command prints.
pub enum Shown {
    /// A report, in the form `--json` asks for.
    Report(Box<dyn Render>),
    /// A report that exists only as JSON (with `--json`); nothing on stdout otherwise.
    JsonOnly(Box<dyn Render>),
    /// Bytes for standard output, or for FILE through the safe writer.
    Bytes {
        /// What to write.
        bytes: Vec<u8>,
        /// `-o FILE` (`-` or none: standard output).
        to: Option<PathBuf>,
    },
    /// Nothing more: the command printed as it went (state changes print through [`Deferred`]).
    Nothing,
}

/// A command's result: what to show, the exit code, and for a negative answer the sentence on stderr.
pub struct Outcome {
    /// What to print.
    pub shown: Shown,
    /// The exit code.
    pub exit: Exit,
    /// A sentence for stderr (a negative answer's reason).
    pub message: Option<String>,
}

impl Outcome {
    /// A report with exit 0.
    pub fn report(r: impl Render + 'static) -> Outcome {
        Outcome { shown: Shown::Report(Box::new(r)), exit: Exit::Ok, message: None }
    }

    /// Bytes for stdout or `-o FILE`, exit 0.
    pub fn bytes(bytes: Vec<u8>, to: Option<PathBuf>) -> Outcome {
        Outcome { shown: Shown::Bytes { bytes, to }, exit: Exit::Ok, message: None }
    }

    /// Nothing more to print.
    pub fn done(exit: Exit) -> Outcome {
        Outcome { shown: Shown::Nothing, exit, message: None }
    }

    /// The same with another exit code.
    pub fn with_exit(mut self, exit: Exit) -> Outcome {
        self.exit = exit;
        self
    }
}

/// Renders an outcome: the report as text or JSON, or the bytes to their place; then the message on
/// stderr. Returns the exit code.
pub fn emit(outcome: Outcome, json: bool) -> anyhow::Result<Exit> {
    match outcome.shown {
        Shown::Report(r) if json => stdout(&r.json()?)?,
        Shown::Report(r) => stdout(&r.text())?,
        Shown::JsonOnly(r) if json => stdout(&r.json()?)?,
        Shown::JsonOnly(_) | Shown::Nothing => {}
        Shown::Bytes { bytes, to } => write_output(to.as_deref(), &bytes)?,
    }
    if let Some(m) = outcome.message {
        warn(&format!("iommuctl: {}", message(&m)));
    }
    Ok(outcome.exit)
}

/// A report whose JSON keys come out sorted at every level, as `serde_json::Value` orders them. The
/// reports of `show`, `explain`, `predict`, `qemu`, `libvirt`, `status` and `probe` have always printed
/// their keys that way; this keeps their JSON byte for byte while the report itself is a typed struct.
pub struct Sorted<T>(pub T);

impl<T: Serialize> Serialize for Sorted<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::to_value(&self.0).map_err(serde::ser::Error::custom)?.serialize(s)
    }
}

impl<T: Display> Display for Sorted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
