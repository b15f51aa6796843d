//! `iommuctl check`: is this host ready for device assignment? Exit 0 ready, 1 not.

use std::fmt;

use iommu_host::readiness::{self, Report, Status};
use serde::{Serialize, Serializer};

use crate::exit::Exit;
use crate::output::{sanitize, Outcome};
use crate::render::paint_header;
use crate::source::Source;

/// The readiness report, with how to colour its text.
pub struct CheckReport {
    report: Report,
    color: bool,
}

impl Serialize for CheckReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.report.serialize(s)
    }
}

/// `iommuctl check`.
pub fn run(src: &Source, color: bool) -> anyhow::Result<Outcome> {
    let report = readiness::check(&src.snapshot);
    let exit = if report.ready { Exit::Ok } else { Exit::Negative };
    Ok(Outcome::report(CheckReport { report, color }).with_exit(exit))
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let report = &self.report;
        let fails = report.items.iter().filter(|i| i.status == Status::Fail).count();
        let warns = report.items.iter().filter(|i| i.status == Status::Warn).count();
        let verdict = if report.ready {
            format!("READY for device assignment ({warns} warning(s))")
        } else {
            format!("NOT READY: {fails} failing, {warns} warning(s)")
        };
        writeln!(f, "{}", if self.color { paint_header(&verdict) } else { verdict })?;
        for item in &report.items {
            let label = item.status.label();
            let label = if self.color {
                let code = match item.status {
                    Status::Pass => "32",
                    Status::Info => "36",
                    Status::Warn => "33",
                    Status::Fail => "1;31",
                };
                format!("\x1b[{code}m{label:<4}\x1b[0m")
            } else {
                format!("{label:<4}")
            };
            writeln!(f, "  {label} {:<20} {}", item.id, sanitize(&item.summary))?;
            if !item.devices.is_empty() {
                let list: Vec<String> = item.devices.iter().map(|a| a.to_string()).collect();
                writeln!(f, "       {:<20} devices: {}", "", list.join(" "))?;
            }
            for x in &item.fix {
                writeln!(f, "       {:<20} fix: {}", "", sanitize(x))?;
            }
        }
        Ok(())
    }
}
